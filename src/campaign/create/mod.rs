//! `kitt campaign create`: campaign files generated from what already ran —
//! a directory of result files ([`results`]) or a stored campaign's failed
//! runs ([`failed`]) — so that a dry run of the file plans exactly those runs.
//!
//! This module renders, checks and writes the file; it never runs anything.
//!
//! Decisions:
//! - Exactness comes from a model's `quants` (engine → labels): each model
//!   lists the engines it ran on and exactly the variants that ran, so a model
//!   run as Q4_K_M on one engine and Q8_0 on another replays as just that.
//! - The file is built from typed values and serialised as YAML, so quoting is
//!   always right; comments (where it came from, what could not be replayed,
//!   where results disagreed) are YAML comments above it. Before anything is
//!   written, the text goes through the same loader and validation as
//!   `kitt campaign run`, so a generated file never fails to load.
//! - `-o FILE` writes a temporary file beside FILE and renames it over, so a
//!   reader never sees half a file; an existing FILE is refused (exit 2)
//!   unless `--force`. Without `-o` the file goes to stdout and warnings to
//!   stderr.
//! - Inputs that give nothing to replay (no usable result, no failed run of a
//!   campaign that exists) are different cases: no usable result is an error
//!   (exit 2, nothing written); a campaign without failed runs prints a note
//!   on stderr, writes nothing and exits 0, since nothing is wrong.

pub mod failed;
mod infer;
pub mod results;

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::config::{self, Campaign, ConfigError};
use crate::results::context::{DiskEntry, EngineEntry, ModelEntry};

/// Why no campaign file was produced.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    /// The results directory cannot be read.
    #[error("cannot read the results directory {}", path.display())]
    ReadDir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Not one result could be replayed.
    #[error("{0}")]
    Nothing(String),
    /// No campaign with that id.
    #[error("no campaign `{0}`; `kitt campaign list` shows the campaigns")]
    UnknownCampaign(String),
    /// The store could not be read.
    #[error("cannot read the store: {0}")]
    Store(String),
    /// The output file exists and `--force` was not given.
    #[error("{} exists; give --force to replace it, or another -o", .0.display())]
    Exists(PathBuf),
    /// The generated text does not load (a bug, or a source that names an invalid value).
    #[error("the generated campaign does not load")]
    Invalid(#[source] ConfigError),
    /// The output could not be written.
    #[error("cannot write {}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

impl CreateError {
    /// Whether the input was at fault (exit 2) rather than the environment (exit 3).
    pub fn is_input(&self) -> bool {
        matches!(
            self,
            CreateError::Nothing(_)
                | CreateError::UnknownCampaign(_)
                | CreateError::Exists(_)
                | CreateError::Invalid(_)
        )
    }
}

/// A generated campaign: the file's text and what the user should know.
#[derive(Debug)]
pub struct Generated {
    /// The YAML text, comments first.
    pub text: String,
    /// Warnings for stderr.
    pub warnings: Vec<String>,
    /// The run keys the file plans, in plan order.
    pub keys: Vec<String>,
}

/// The campaign file `--from-results` writes.
#[derive(Debug, Serialize)]
pub(crate) struct CampaignFile {
    pub(crate) campaign_name: String,
    pub(crate) description: String,
    pub(crate) models: Vec<ModelEntry>,
    pub(crate) engines: Vec<EngineEntry>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) disk: Option<DiskEntry>,
}

/// YAML for `value` with `comments` as `#` lines above it.
pub(crate) fn render(comments: &[String], value: &impl Serialize) -> String {
    let mut text = String::new();
    for comment in comments {
        for line in comment.lines() {
            text.push_str(format!("# {line}").trim_end());
            text.push('\n');
        }
    }
    // Typed values and JSON values always serialise.
    text.push_str(&serde_saphyr::to_string(value).unwrap_or_default());
    if !text.ends_with('\n') {
        text.push('\n');
    }
    text
}

/// Loads `text` as `kitt campaign run` would; `name` stands for the file in messages.
pub(crate) fn check(text: &str, name: &Path) -> Result<Campaign, CreateError> {
    config::parse(text, name).map_err(CreateError::Invalid)
}

/// Writes `text` to `path` (temporary file, then rename), refusing to replace
/// an existing file unless `force`.
pub fn write_file(path: &Path, text: &str, force: bool) -> Result<(), CreateError> {
    if !force && std::fs::symlink_metadata(path).is_ok() {
        return Err(CreateError::Exists(path.to_owned()));
    }
    let write = |source| CreateError::Write { path: path.to_owned(), source };
    let name = path.file_name().map(|name| name.to_string_lossy().into_owned());
    let temp = path.with_file_name(format!(
        ".{}.{}.tmp",
        name.unwrap_or_else(|| "campaign.yaml".into()),
        std::process::id()
    ));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&temp)
        .and_then(|mut file| file.write_all(text.as_bytes()).and_then(|()| file.sync_all()));
    if let Err(error) = written {
        let _ = std::fs::remove_file(&temp);
        return Err(write(error));
    }
    // A hard link never replaces an existing file, so a file that appeared
    // since the check above is still refused.
    let placed = if force { std::fs::rename(&temp, path) } else { std::fs::hard_link(&temp, path) };
    let _ = std::fs::remove_file(&temp);
    match placed {
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
            Err(CreateError::Exists(path.to_owned()))
        }
        placed => placed.map_err(write),
    }
}

/// Run keys a dry run of `campaign` would plan, given its model `quants`:
/// every listed (model, engine, label). Used for the summary line only; the
/// tests compare against a real dry run.
pub(crate) fn listed_keys(models: &[ModelEntry]) -> Vec<String> {
    let mut keys = Vec::new();
    for model in models {
        for (engine, labels) in model.quants.iter().flatten() {
            keys.extend(labels.iter().map(|label| format!("{}|{engine}|{label}", model.name)));
        }
    }
    keys
}
