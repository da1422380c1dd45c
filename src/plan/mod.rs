//! Planning: turns a validated campaign and what discovery found into the
//! ordered list of runs, each planned or skipped with a reason.
//!
//! Order (deterministic): models in file order; for each model, engines in file
//! order; for each engine, variants from the fewest bits per weight to the most,
//! labels kitt does not know last, ties by label. A run's key is
//! `model|engine|quant`.

pub mod discover;
pub mod glob;
pub mod matrix;
mod ollama;
pub mod quant;
mod restrict;
pub mod size;
pub mod variants;

use std::path::PathBuf;

use serde::Serialize;

use crate::engine::EngineKind;

/// The resolved run matrix of a campaign.
#[derive(Debug, Clone)]
pub struct Plan {
    /// `campaign_name`.
    pub campaign: String,
    /// Every run, planned or skipped, in execution order.
    pub runs: Vec<PlannedRun>,
    /// Sources that could not be reached and other degraded conditions.
    pub warnings: Vec<String>,
    /// The local storage root downloads go to.
    pub storage_root: PathBuf,
    /// Bytes the planned runs download at most (a file kept between runs counts once).
    pub download_bytes: u64,
}

impl Plan {
    /// Runs that will execute.
    pub fn planned(&self) -> impl Iterator<Item = &PlannedRun> {
        self.runs.iter().filter(|run| run.status == RunPlan::Planned)
    }
}

/// Whether a run will execute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RunPlan {
    /// It will run.
    Planned,
    /// It will not run; `reason` says why.
    Skipped,
}

/// Where a run's size came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SizeSource {
    /// Real byte sizes: local files, the Hub's listing, an Ollama manifest.
    Files,
    /// Parameter count × the quantization's bits per weight.
    Estimate,
    /// The model's `estimated_size_gb`.
    Config,
}

/// One run of the matrix.
#[derive(Debug, Clone)]
pub struct PlannedRun {
    /// `model|engine|quant`.
    pub key: String,
    /// The model's name.
    pub model: String,
    /// The engine.
    pub engine: EngineKind,
    /// Index of the engine entry in the campaign.
    pub engine_index: usize,
    /// The suite to run.
    pub suite: String,
    /// The quantization label (`-` when the model has no source for the engine).
    pub quant: String,
    /// Where the model comes from, e.g. `hf:org/repo`, `local:org/repo`, `ollama:name:tag`.
    pub source: String,
    /// Files relative to the repository, the one to load first.
    pub files: Vec<String>,
    /// Size in bytes, when known or estimated.
    pub size_bytes: Option<u64>,
    /// Where `size_bytes` came from.
    pub size_source: Option<SizeSource>,
    /// Bytes that would have to be downloaded (0 when already local).
    pub download_bytes: u64,
    /// Planned or skipped.
    pub status: RunPlan,
    /// Why it is skipped, or a note on a planned run.
    pub reason: Option<String>,
}
