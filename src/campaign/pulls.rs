//! The campaign's side of the models Ollama pulls for its runs: the disk
//! check before a pull, the rules a run's engine gets, and the records of
//! what the engine pulled and removed.
//!
//! Decisions:
//! - **Disk.** Before an Ollama run starts, the free space of the store its
//!   server pulls into (`OLLAMA_MODELS` of the engine's `extra_args`, else
//!   of the environment, else `~/.ollama/models`) must hold `disk.reserve_gb`
//!   plus the tag's size from the registry manifest the plan read (layers
//!   shared with tags already in the store are counted again, a slight
//!   overestimate); a tag the store has needs nothing. When the registry
//!   could not be reached the plan's estimate stands in; the layer sizes a
//!   pull reports come one layer at a time, after the transfer began, so
//!   they are not used. A Docker-mode store is a volume kitt cannot measure:
//!   no check (the plan warns).
//! - **Cleanup.** With `disk.cleanup_after_run`, the engine of the last run
//!   of the session that uses a tag (same store) deletes it with
//!   `/api/delete` before it stops, when this campaign pulled it: in this
//!   run, or in an earlier one whose record says so. The engine stops after
//!   every run, so this is decided at launch ([`rules`]). A model the store
//!   already had has no record and is never deleted; a failed deletion is a
//!   warning, not a failed run. An interrupted run keeps the model: it is
//!   redone on resume. So does a last run whose server never got going (a
//!   missing binary): the model waits for that run to be redone.
//! - **Records.** Every note of the engine ([`PullNote`]) is written to the
//!   store before the engine may go on, so a pull is the campaign's from
//!   before its first byte.

use super::coordinator::RunContext;
use super::progress::Progress;
use crate::acquire::local::free_space;
use crate::engine::EngineKind;
use crate::engine::ollama::normalise_tag;
use crate::engine::ollama::store::{self, Location};
use crate::engine::pulls::{AfterRun, PullEvent, PullLedger, PullNote, PullRules};
use crate::error::with_causes;
use crate::plan::PlannedRun;
use crate::plan::matrix::disk_shortfall_message;
use crate::store::{NewPull, Store};

/// The library tag a run's Ollama engine pulls when its store lacks it.
pub(super) fn ollama_tag(planned: &PlannedRun) -> Option<&str> {
    let tag = planned.source.strip_prefix("ollama:")?;
    (planned.engine == EngineKind::Ollama).then_some(tag)
}

/// Where the run's engine keeps its models.
fn store_of(context: &RunContext<'_>, planned: &PlannedRun) -> Location {
    store::location_from_env(&context.campaign.engines[planned.engine_index].config)
}

/// Why the run's pull of `tag` would break the disk reserve, if it would.
pub(super) fn disk_shortfall(
    context: &RunContext<'_>,
    planned: &PlannedRun,
    tag: &str,
) -> Option<String> {
    let Location::Dir(dir) = store_of(context, planned) else { return None };
    let present = store::has_tag(&dir, tag);
    shortfall(
        &dir,
        present,
        planned.download_bytes,
        context.campaign.disk.reserve_bytes,
        free_space,
    )
}

/// The check itself: `download` bytes (none when the store has the tag) and
/// the reserve against the free space of the store at `dir`.
fn shortfall(
    dir: &std::path::Path,
    present: bool,
    download: u64,
    reserve: u64,
    free_space: impl Fn(&std::path::Path) -> Option<u64>,
) -> Option<String> {
    let bytes = if present { 0 } else { download };
    let free = free_space(dir)?;
    let needed = reserve.saturating_add(bytes);
    (free < needed).then(|| {
        let message = disk_shortfall_message(dir, bytes, 0, reserve, free);
        if present || download > 0 {
            message
        } else {
            // Counted as nothing: neither the registry nor the plan knew it.
            format!("{message}; the tag's size is unknown (the registry could not be reached)")
        }
    })
}

/// The pull rules of a run: `KITT_OFFLINE`, what becomes of its tag after
/// the run (`later` are the runs of the session still to come), and the
/// ledger its notes come through.
pub(super) fn rules(
    context: &RunContext<'_>,
    store: &Store,
    planned: &PlannedRun,
    later: &[&PlannedRun],
    ledger: PullLedger,
) -> PullRules {
    let offline = crate::acquire::http::kitt_offline();
    let Some(tag) = ollama_tag(planned) else {
        return PullRules { offline, ..PullRules::default() };
    };
    let model = normalise_tag(tag);
    let location = store_of(context, planned);
    let same = |run: &&PlannedRun| {
        ollama_tag(run).is_some_and(|other| normalise_tag(other) == model)
            && store_of(context, run) == location
    };
    let after_run = if !context.campaign.disk.cleanup_after_run {
        AfterRun::Keep
    } else if later.iter().any(same) {
        tracing::debug!(model, "kept after the run: a later run uses it");
        AfterRun::Keep
    } else if pulled_earlier(context, store, &model, &location.to_string()) {
        AfterRun::RemoveCampaignPull
    } else {
        AfterRun::RemoveIfPulled
    };
    PullRules { offline, after_run, ledger: Some(ledger) }
}

fn pulled_earlier(context: &RunContext<'_>, store: &Store, model: &str, location: &str) -> bool {
    store.pulled_by_campaign(context.campaign_id, model, location).unwrap_or_else(|error| {
        // Not knowing means not ours: a model the user had must never be deleted.
        tracing::warn!("cannot read the campaign's pulls: {}", with_causes(&error));
        false
    })
}

/// Records what the run's engine says about a pull, then lets it go on.
pub(super) fn record(
    context: &RunContext<'_>,
    store: &Store,
    (session_id, run_id): (i64, i64),
    planned: &PlannedRun,
    note: PullNote,
    progress: &mut Progress,
) {
    let campaign_id = context.campaign_id;
    let (model, location) = (note.model.as_str(), note.store.as_str());
    let written = match &note.event {
        PullEvent::Pulling => {
            let new = NewPull { campaign_id, run_id, session_id, model, store: location };
            store.pull_started(&new)
        }
        PullEvent::Pulled { bytes } => {
            store.pull_present(campaign_id, run_id, model, location, *bytes)
        }
        PullEvent::Failed { error } => {
            store.pull_failed(campaign_id, run_id, model, location, error)
        }
        PullEvent::Removed => {
            progress.note(&format!(
                "{}: removed `{model}`, which the campaign pulled, from the Ollama store \
                 ({location})",
                planned.key
            ));
            store.pull_removed(campaign_id, model, location)
        }
        PullEvent::RemoveFailed { error } => {
            progress.note(&format!(
                "{}: warning: cannot remove `{model}` from the Ollama store: {error}",
                planned.key
            ));
            Ok(())
        }
    };
    if let Err(error) = written {
        tracing::warn!(model, "cannot record the pull: {}", with_causes(&error));
    }
    note.recorded();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn a_tag_in_the_store_needs_only_the_reserve() {
        let dir = Path::new("/store");
        let free = |_: &Path| Some(10);
        assert_eq!(shortfall(dir, true, 100, 5, free), None);
        let message = shortfall(dir, false, 100, 5, free).expect("short");
        assert!(message.starts_with("not enough disk under /store: needs "), "{message}");
        assert!(shortfall(dir, true, 0, 50, free).is_some(), "the reserve always holds");
        assert_eq!(shortfall(dir, false, 100, 5, |_: &Path| None), None, "not measurable");
        let unknown = shortfall(dir, false, 0, 50, free).expect("short");
        assert!(unknown.ends_with("the tag's size is unknown (the registry could not be reached)"));
        assert!(!message.contains("unknown"), "{message}");
    }
}
