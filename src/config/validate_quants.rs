//! Validation of a model's `quants`: engine names → exact variant labels.

use std::collections::BTreeMap;

use serde_saphyr::Spanned;

use super::suggest::did_you_mean;
use super::validate::Checker;
use crate::engine::EngineKind;

impl Checker {
    /// A model's `quants`: each key an engine of the campaign, each list a
    /// non-empty set of labels (kept as written, compared without case).
    pub(super) fn model_quants(
        &mut self,
        raw: Spanned<BTreeMap<String, Spanned<Vec<String>>>>,
        field: &str,
        engines: &[EngineKind],
    ) -> Vec<(EngineKind, Vec<String>)> {
        let field = format!("{field}.quants");
        if raw.value.is_empty() {
            self.report(&raw, &field, "`quants` is empty: this model would plan nothing".into())
                .hint("name an engine and its variants, e.g. `llama_cpp: [Q4_K_M]`");
        }
        let mut quants = Vec::new();
        for (name, labels) in raw.value {
            let key = format!("{field}.{name}");
            let Some(kind) = EngineKind::parse(name.trim()) else {
                let problem = self.report(&labels, &key, format!("unknown engine `{name}`"));
                match did_you_mean(&name, EngineKind::NAMES.iter().copied()) {
                    Some(near) => problem.hint(format!("did you mean `{near}`?")),
                    None => {
                        problem.hint(format!("known engines: {}", EngineKind::NAMES.join(", ")))
                    }
                };
                continue;
            };
            if !engines.contains(&kind) {
                let message = format!("engine `{kind}` is not listed under `engines`");
                self.report(&labels, &key, message)
                    .hint("add it to `engines`, or remove it from this model's `quants`");
                continue;
            }
            let mut kept: Vec<String> = Vec::new();
            for label in labels.value.iter().map(|label| label.trim()) {
                if label.is_empty() {
                    self.report(&labels, &key, "a quant label is empty".into());
                } else if !kept.iter().any(|known| known.eq_ignore_ascii_case(label)) {
                    kept.push(label.to_owned());
                }
            }
            if labels.value.is_empty() {
                let message =
                    format!("no variant listed: this model would plan nothing on `{kind}`");
                self.report(&labels, &key, message)
                    .hint(format!("list labels such as `[Q4_K_M]`, or remove `{name}`"));
            }
            quants.push((kind, kept));
        }
        // Keep the engines in the campaign's order whatever order the map has.
        quants.sort_by_key(|(kind, _)| engines.iter().position(|known| known == kind));
        quants
    }
}
