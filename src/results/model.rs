//! What one benchmark run produced: the record stored in SQLite and written
//! to the run directory. Times are nanoseconds or RFC 3339 strings; sizes are
//! bytes. A result is only ever appended, never edited.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::measure::record::RequestRecord;

/// One run of one suite on one model and engine.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunResult {
    /// Unique id (hex).
    pub id: String,
    /// kitt's version.
    pub kitt_version: String,
    /// [`crate::measure::METRICS_VERSION`] at measurement time.
    pub metric_version: u32,
    /// When the run started and finished (RFC 3339, UTC).
    pub started_at: String,
    /// When the run finished.
    pub finished_at: String,
    /// The suite's name.
    pub suite: String,
    /// SHA-256 of the resolved run configuration (engine parameters, suite, model file).
    pub config_hash: String,
    /// The model that was served.
    pub model: ModelIdentity,
    /// The engine that served it.
    pub engine: EngineIdentity,
    /// The machine.
    pub hardware: Hardware,
    /// One entry per benchmark per repetition, in execution order.
    pub benchmarks: Vec<BenchmarkResult>,
    /// True when every benchmark that ran produced valid measurements.
    pub passed: bool,
    /// The campaign, run key, and model and engine entries of a campaign run;
    /// absent for `kitt run` and for results written before kitt recorded it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub campaign: Option<super::CampaignContext>,
}

impl RunResult {
    /// A copy with every benchmark's `requests` and `items` left empty (and thus
    /// out of its JSON), for the places that keep those records separately.
    pub fn without_requests(&self) -> RunResult {
        let benchmarks = self
            .benchmarks
            .iter()
            .map(|benchmark| BenchmarkResult {
                name: benchmark.name.clone(),
                run_number: benchmark.run_number,
                status: benchmark.status.clone(),
                metrics: benchmark.metrics.clone(),
                warmup_ms: benchmark.warmup_ms.clone(),
                requests: Vec::new(),
                items: Vec::new(),
                quality: benchmark.quality.clone(),
            })
            .collect();
        RunResult {
            id: self.id.clone(),
            kitt_version: self.kitt_version.clone(),
            metric_version: self.metric_version,
            started_at: self.started_at.clone(),
            finished_at: self.finished_at.clone(),
            suite: self.suite.clone(),
            config_hash: self.config_hash.clone(),
            model: self.model.clone(),
            engine: self.engine.clone(),
            hardware: self.hardware.clone(),
            benchmarks,
            passed: self.passed,
            campaign: self.campaign.clone(),
        }
    }
}

/// Which model file a run loaded.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelIdentity {
    /// A short display name (repo or file stem).
    pub name: String,
    /// The file the engine loaded (first shard for split models).
    pub path: String,
    /// Quantization label.
    pub quant: String,
    /// Total bytes of the model files.
    pub size_bytes: u64,
    /// `general.architecture` from the GGUF header, when known.
    pub architecture: Option<String>,
    /// Parameter count, when known.
    pub parameters: Option<u64>,
}

/// Which engine served, and how.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EngineIdentity {
    /// `llama_cpp`, `openai`, …
    pub name: String,
    /// The engine's own version string (or the package version it was built from).
    pub version: String,
    /// The executable started, when kitt started one.
    pub binary: Option<String>,
    /// The parameters passed (context size, slots, threads, extra args…), as text.
    pub parameters: BTreeMap<String, String>,
    /// What was done to make numbers comparable, and what the engine refused.
    pub comparability: BTreeMap<String, String>,
}

/// The machine a run measured.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Hardware {
    /// CPU model name.
    pub cpu_model: String,
    /// Logical CPUs.
    pub cpu_threads: u32,
    /// Physical cores, when known.
    pub cpu_cores: Option<u32>,
    /// Total RAM in bytes.
    pub ram_bytes: u64,
    /// GPUs, empty on a CPU-only machine.
    pub gpus: Vec<Gpu>,
    /// GPU driver version, when any.
    pub driver_version: Option<String>,
    /// Operating system name and version.
    pub os: String,
    /// Kernel release.
    pub kernel: String,
    /// A stable one-line identity built from the above.
    pub fingerprint: String,
}

/// One GPU.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Gpu {
    /// Model name.
    pub name: String,
    /// Memory in bytes, when the device reports it.
    pub memory_bytes: Option<u64>,
}

impl QualityRun {
    /// One line for tables: the method and, for a smoke run, the share scored,
    /// e.g. `loglikelihood, first 50 of 14042 items`.
    pub fn describe(&self) -> String {
        let method = self.scoring.map_or_else(|| "not scored".to_owned(), |m| m.to_string());
        match self.limit {
            Some(limit) if (limit as usize) < self.dataset_items => {
                format!("{method}, first {limit} of {} items", self.dataset_items)
            }
            _ => method,
        }
    }
}

/// Outcome of a benchmark.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state", content = "reason")]
pub enum BenchmarkStatus {
    /// Produced valid measurements.
    Passed,
    /// Ran and failed; the reason says why.
    Failed(String),
    /// Did not run (for example, a quality benchmark without its dataset).
    NotRun(String),
}

/// One benchmark of a suite, one repetition.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BenchmarkResult {
    /// `throughput`, `latency`, `memory_usage`, `warmup_analysis`, …
    pub name: String,
    /// 1-based repetition.
    pub run_number: u32,
    /// Passed, failed or not run.
    pub status: BenchmarkStatus,
    /// Named numeric results (`output_tokens_per_second`, `ttft_ms_p50`, …).
    pub metrics: BTreeMap<String, f64>,
    /// Warm-up request latencies in milliseconds (not part of the metrics).
    pub warmup_ms: Vec<f64>,
    /// Every measured request, in order; failed requests included with their failure.
    /// Left out of the JSON when empty, so a result stored or written without its
    /// requests (`metrics.json`, the store's result row) still reads back.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub requests: Vec<RequestRecord>,
    /// A quality benchmark's scored items, in dataset order (empty for other
    /// benchmarks); left out of the JSON when empty, like `requests`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub items: Vec<QualityItem>,
    /// A quality benchmark's scoring method and item limit (absent for others).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quality: Option<QualityRun>,
}

/// One scored item of a quality benchmark.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QualityItem {
    /// 0-based position of the item in the dataset as read.
    pub index: usize,
    /// The right answer (an option letter, or a normalised number).
    pub expected: String,
    /// The answer read out of the reply; `None` when none could be read or the request failed.
    pub extracted: Option<String>,
    /// Whether `extracted` is `expected`.
    pub correct: bool,
    /// The reply's text, cut to a few thousand characters (empty when the
    /// request failed, and under log-likelihood scoring, which generates none).
    pub response: String,
    /// Under log-likelihood scoring, each option's score, in the order shown;
    /// empty (and left out of the JSON) for generative scoring.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub choices: Vec<ChoiceScore>,
}

/// One option of an item scored by log-likelihood.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ChoiceScore {
    /// Sum of the log-probabilities of the option's tokens given the context;
    /// `None` when its request failed or gave none.
    pub loglikelihood: Option<f64>,
    /// How many tokens the sum covers.
    pub tokens: Option<u32>,
    /// The option's length in characters (leading space included), the
    /// divisor of the normalised choice.
    pub chars: usize,
}

/// How a quality benchmark ran: the scoring method and how much of its
/// dataset it scored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QualityRun {
    /// The method used; `None` when the benchmark did not run.
    pub scoring: Option<crate::quality::Method>,
    /// Why that method (the `scoring` setting, and for `auto` what the engine
    /// answered when asked for prompt log-probabilities).
    pub scoring_reason: String,
    /// Items in the dataset as read, before any limit.
    pub dataset_items: usize,
    /// Only the first this many items were scored (a smoke run); `None`: all.
    pub limit: Option<u32>,
}
