//! What a run allows an engine to do with models it pulls into its own
//! store (Ollama's library tags), and how the engine tells a campaign about
//! those pulls.
//!
//! The campaign decides before the engine starts ([`PullRules`]): whether
//! pulling is allowed at all (`KITT_OFFLINE` forbids it), and whether the
//! model is deleted from the server's store before the engine stops
//! ([`AfterRun`]: only with `disk.cleanup_after_run`, only after the last run
//! of the session that uses the tag, and only when kitt pulled it). The
//! engine tells the campaign of each pull *before* its first byte and of its
//! end and removal through a [`PullLedger`]; the engine waits until the
//! campaign has recorded each note, so a crash at any instant leaves a store
//! that knows which models are kitt's. Nothing here talks to a server.
//!
//! Decisions:
//! - A model the store already had when the run started is never deleted,
//!   unless the campaign's own records say an earlier run of the campaign
//!   pulled it ([`AfterRun::RemoveCampaignPull`]).
//! - The ledger is a channel with an acknowledgement, not shared state: the
//!   campaign's coordinator stays the only writer of its store.

use std::fmt;

use tokio::sync::{mpsc, oneshot};

/// What happens to a pulled model once the run is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AfterRun {
    /// It stays in the server's store (no cleanup asked, a later run uses it,
    /// or a single `kitt run`).
    #[default]
    Keep,
    /// It is deleted when this run pulled it; a model the store already had stays.
    RemoveIfPulled,
    /// It is deleted: an earlier run of the campaign pulled it (or this one does).
    RemoveCampaignPull,
}

/// How a run's engine treats models it would pull.
#[derive(Debug, Clone, Default)]
pub struct PullRules {
    /// Pulling is refused (`KITT_OFFLINE`): a missing model fails the start.
    pub offline: bool,
    /// What happens to the model after the run.
    pub after_run: AfterRun,
    /// Where the campaign records pulls; `None` outside a campaign.
    pub ledger: Option<PullLedger>,
}

impl PullRules {
    /// The rules of a run outside a campaign: offline from `KITT_OFFLINE`,
    /// pulled models kept, nothing recorded.
    pub fn from_env() -> Self {
        PullRules { offline: crate::acquire::http::kitt_offline(), ..PullRules::default() }
    }
}

/// What happened to a pull, as the engine tells the campaign.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PullEvent {
    /// The store does not have the model and a pull starts now.
    Pulling,
    /// The pull completed; the model takes `bytes` in the store.
    Pulled {
        /// Its size in the store.
        bytes: u64,
    },
    /// The pull failed for good.
    Failed {
        /// Why.
        error: String,
    },
    /// kitt deleted the model from the store.
    Removed,
    /// Deleting it failed; it stays.
    RemoveFailed {
        /// Why.
        error: String,
    },
}

/// One note to the campaign: the model (`name:tag`), the store it is in, what happened.
#[derive(Debug)]
pub struct PullNote {
    /// `name:tag`.
    pub model: String,
    /// The store the server keeps models in (a directory, or a Docker volume).
    pub store: String,
    /// What happened.
    pub event: PullEvent,
    recorded: oneshot::Sender<()>,
}

impl PullNote {
    /// Tells the engine the note is recorded, so it may go on.
    pub fn recorded(self) {
        let _ = self.recorded.send(());
    }
}

/// The engine's end of the channel to the campaign's coordinator.
#[derive(Clone)]
pub struct PullLedger(mpsc::UnboundedSender<PullNote>);

impl PullLedger {
    /// A ledger and the receiver the coordinator reads notes from.
    pub fn channel() -> (PullLedger, mpsc::UnboundedReceiver<PullNote>) {
        let (sender, receiver) = mpsc::unbounded_channel();
        (PullLedger(sender), receiver)
    }

    /// Sends a note and waits until the coordinator has recorded it; `false`
    /// when nobody is listening any more.
    pub async fn note(&self, model: &str, store: &str, event: PullEvent) -> bool {
        let (recorded, done) = oneshot::channel();
        let note = PullNote { model: model.to_owned(), store: store.to_owned(), event, recorded };
        if self.0.send(note).is_err() {
            return false;
        }
        done.await.is_ok()
    }
}

impl fmt::Debug for PullLedger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PullLedger")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_note_returns_once_it_is_recorded() {
        let (ledger, mut notes) = PullLedger::channel();
        let listener = tokio::spawn(async move {
            let note = notes.recv().await.expect("a note");
            let seen = (note.model.clone(), note.store.clone(), note.event.clone());
            note.recorded();
            seen
        });

        assert!(ledger.note("m:1b", "/store", PullEvent::Pulling).await);
        let seen = listener.await.unwrap();
        assert_eq!(seen, ("m:1b".to_owned(), "/store".to_owned(), PullEvent::Pulling));
        assert!(!ledger.note("m:1b", "/store", PullEvent::Removed).await, "nobody listens");
    }
}
