//! A model's `quants`: narrowing its candidates on one engine to the labels
//! listed, exactly and without regard to case.
//!
//! Decisions: a variant found but not listed stays in the plan as skipped
//! with the reason (as a filtered variant does); a listed label that
//! discovery did not find becomes a skipped run of its own, so a rerun target
//! that vanished shows in the dry run instead of disappearing; an engine the
//! model's `quants` does not name plans one skipped row saying so.

use super::matrix::{Candidate, placeholder};
use super::quant::QuantLabel;
use crate::config::EngineSpec;
use crate::engine::EngineKind;

/// The row of a model whose `quants` does not name this engine.
pub(super) fn not_listed(engine: &EngineSpec) -> Candidate {
    let mut candidate = Candidate::new(placeholder(), "-".into());
    candidate.blocked =
        Some(format!("the model's `quants` does not list `{}`: no run on it", engine.kind));
    candidate
}

/// Narrows a model's candidates on one engine to the labels its `quants`
/// lists (exact, without regard to case). A variant not listed stays in the
/// plan as skipped, with the reason; a listed label discovery did not find
/// becomes a skipped run of its own, so a vanished rerun target is visible.
pub(super) fn restrict(
    found: Vec<Candidate>,
    labels: &[String],
    engine: EngineKind,
) -> Vec<Candidate> {
    let listed = |label: &QuantLabel| labels.iter().any(|l| l.eq_ignore_ascii_case(&label.label));
    let (placeholders, mut kept): (Vec<Candidate>, Vec<Candidate>) =
        found.into_iter().partition(|candidate| candidate.label.label == "-");
    let available: Vec<String> = kept.iter().map(|c| c.label.label.clone()).collect();
    for candidate in &mut kept {
        if !listed(&candidate.label) {
            candidate.blocked = Some(format!(
                "the model's `quants` does not list `{}` for `{}`",
                candidate.label, engine
            ));
        }
    }
    let why_missing = placeholders.iter().find_map(|c| c.blocked.clone()).unwrap_or_else(|| {
        if available.is_empty() {
            "discovery found no variant".to_owned()
        } else {
            format!("discovery found only {}", available.join(", "))
        }
    });
    for label in labels {
        if available.iter().any(|found| found.eq_ignore_ascii_case(label)) {
            continue;
        }
        let mut missing = Candidate::new(listed_label(label), "-".into());
        missing.blocked = Some(format!(
            "`{label}` is listed in the model's `quants` but not found: {why_missing}"
        ));
        kept.push(missing);
    }
    kept
}

/// A label as a model's `quants` writes it, kept verbatim for the run key.
fn listed_label(text: &str) -> QuantLabel {
    let parsed = super::quant::quant_from_dir_name(text);
    let base = parsed.as_ref().map_or_else(|| text.to_owned(), |label| label.base.clone());
    let known = parsed.is_some_and(|label| label.known);
    QuantLabel { label: text.to_owned(), base, known }
}
