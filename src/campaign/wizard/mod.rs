//! `kitt campaign wizard`: a campaign file built by answering questions.
//!
//! [`ask`] walks the sections of a campaign file in order — name and
//! description, models, engines, quantization filter, resource limits, disk,
//! notifications — and returns a [`Draft`], the file as typed data. Each
//! answer is checked by the config loader itself ([`Draft::problems_at`]) and
//! the same question is asked again, with the loader's message, until it
//! passes. Showing the YAML, loading it, planning it and saving it are the
//! command handler's (`cli::wizard`), which reuses `campaign run`'s loader,
//! planner and plan table.
//!
//! Decisions:
//! - Every model needs a source (`safetensors_repo`, `gguf_repo` or
//!   `ollama_tag`): the original wizard wrote models with a name only, and
//!   such a campaign plans zero runs. The three sources are asked again
//!   until at least one is given.
//! - Models under the storage root (`KITT_MODELS_DIR`, else `~/models`) are
//!   offered first; a chosen one becomes a model whose `gguf_repo` (when it
//!   holds `.gguf` files) or `safetensors_repo` is that repository, so the plan
//!   finds it locally and downloads nothing.
//! - The storage path is written only when it differs from the root kitt
//!   would use anyway, so the file keeps following `KITT_MODELS_DIR`.
//! - An engine's `formats` is written only when it differs from the engine's
//!   defaults. Of an engine's `config`, only `base_url` (needed by `openai`)
//!   is asked; the rest is for editing the file afterwards.
//! - Engines are offered as `kitt engines list` shows them, with the formats
//!   they load and whether they are usable on this machine; an unusable one
//!   may still be chosen (the file may be meant for another machine).
//! - The SMTP password is never asked nor written: kitt reads it from
//!   `KITT_SMTP_PASSWORD`.
//! - Ctrl-C or Esc at any question stops the wizard (exit 130); nothing is
//!   written before the last question, and the file is then written through
//!   a temporary file in the same directory renamed into place.

mod draft;
mod prompts;

use std::path::PathBuf;

pub use draft::{
    Draft, DraftDisk, DraftEngine, DraftEngineConfig, DraftLimits, DraftModel, DraftNotifications,
    DraftQuantFilter,
};
pub use prompts::{ask, ask_save_path, confirm};

use crate::acquire::local::LocalRepo;
use crate::engine::EngineKind;

/// What the wizard offers: the models already stored and the engines.
#[derive(Debug, Clone)]
pub struct Offer {
    /// The storage root the local models were found under.
    pub storage_root: PathBuf,
    /// Repositories under the storage root.
    pub local: Vec<LocalRepo>,
    /// Every engine, as `kitt engines list` shows it.
    pub engines: Vec<EngineChoice>,
}

/// One engine as `kitt engines list` reports it.
#[derive(Debug, Clone)]
pub struct EngineChoice {
    /// Which engine.
    pub kind: EngineKind,
    /// Whether it can run here.
    pub usable: bool,
    /// Where it was found, or why it is not usable.
    pub detail: String,
}

/// Why the wizard stopped before the end.
#[derive(Debug, thiserror::Error)]
pub enum Stopped {
    /// Ctrl-C or Esc.
    #[error("interrupted")]
    Interrupted,
    /// The terminal failed.
    #[error("the terminal failed: {0}")]
    Terminal(String),
}

impl From<inquire::InquireError> for Stopped {
    fn from(error: inquire::InquireError) -> Self {
        match error {
            inquire::InquireError::OperationInterrupted
            | inquire::InquireError::OperationCanceled => Stopped::Interrupted,
            other => Stopped::Terminal(other.to_string()),
        }
    }
}
