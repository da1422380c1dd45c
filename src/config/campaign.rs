//! The validated campaign: what the rest of kitt reads instead of the YAML.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::engine::{EngineKind, Format};
use crate::plan::glob::QuantGlob;
use crate::plan::quant::QuantLabel;

use super::secret::Secret;

/// Bytes in one `_gb` unit of the config. Sizes and the disk reserve are
/// binary gigabytes (GiB), as free space has always been measured.
pub const GB: f64 = 1024.0 * 1024.0 * 1024.0;

/// A validated campaign config.
#[derive(Debug, Clone)]
pub struct Campaign {
    /// `campaign_name`.
    pub name: String,
    /// `description`.
    pub description: String,
    /// The file it was loaded from.
    pub path: PathBuf,
    /// The models, in file order.
    pub models: Vec<ModelSpec>,
    /// The engines, in file order.
    pub engines: Vec<EngineSpec>,
    /// `disk`.
    pub disk: DiskPolicy,
    /// `notifications`.
    pub notifications: Notifications,
    /// The top-level `quant_filter`.
    pub quant_filter: QuantFilter,
    /// `resource_limits.max_model_size_gb` in bytes; `None` when 0 or absent.
    pub max_model_size_bytes: Option<u64>,
    /// `parallel`: runs on different devices at once.
    pub parallel: bool,
    /// `max_parallel`: at most this many runs at once (`None`: one per
    /// device group that is free).
    pub max_parallel: Option<u32>,
    /// Devon settings.
    pub devon: Devon,
    /// `hf_token`, else `HF_TOKEN`.
    pub hf_token: Option<Secret>,
    /// `skip_gated`: skip gated repositories we cannot access instead of failing them.
    pub skip_gated: bool,
    /// `schedule`: a cron expression this file is meant to run on.
    pub schedule: Option<String>,
    /// `auto_compare`: compare each result with the previous result of the same run key.
    pub auto_compare: bool,
    /// `regression_thresholds`: how much worse than the previous campaign a
    /// metric may get before `auto_compare` calls it a regression.
    pub thresholds: Thresholds,
    /// Things that are allowed but probably not what the user wants.
    pub warnings: Vec<String>,
}

/// One model of the matrix.
#[derive(Debug, Clone)]
pub struct ModelSpec {
    /// Display name; part of every run key.
    pub name: String,
    /// Parameter count parsed from `params`.
    pub params: Option<u64>,
    /// `params` as written.
    pub params_text: String,
    /// `safetensors_repo`.
    pub safetensors_repo: Option<String>,
    /// `gguf_repo`.
    pub gguf_repo: Option<String>,
    /// `ollama_tag`.
    pub ollama_tag: Option<String>,
    /// `estimated_size_gb` in bytes.
    pub estimated_size_bytes: Option<u64>,
    /// `quants`: when set, the engines this model runs on and, for each, the
    /// only variant labels it runs (matched exactly, without regard to case).
    pub quants: Option<Vec<(EngineKind, Vec<String>)>>,
}

/// What a model's `quants` allows on one engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuantRestriction<'a> {
    /// No `quants`: every variant discovery finds.
    Any,
    /// `quants` is set and does not name this engine: no run.
    NotListed,
    /// Only these labels.
    Only(&'a [String]),
}

impl ModelSpec {
    /// What this model's `quants` allows on `engine`.
    pub fn quants_on(&self, engine: EngineKind) -> QuantRestriction<'_> {
        let Some(quants) = &self.quants else { return QuantRestriction::Any };
        match quants.iter().find(|(kind, _)| *kind == engine) {
            Some((_, labels)) => QuantRestriction::Only(labels),
            None => QuantRestriction::NotListed,
        }
    }
}

/// One engine of the matrix.
#[derive(Debug, Clone)]
pub struct EngineSpec {
    /// Which engine.
    pub kind: EngineKind,
    /// The benchmark suite to run.
    pub suite: String,
    /// The formats this engine entry may load, in preference order.
    pub formats: Vec<Format>,
    /// Engine parameters from `config`.
    pub config: EngineConfig,
    /// The engine's own `quant_filter`, applied after the top-level one.
    pub quant_filter: QuantFilter,
}

/// How an engine runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EngineMode {
    /// A process on this machine.
    #[default]
    Native,
    /// A container through the `docker` CLI.
    Docker,
}

/// The GPUs a container gets (`gpus` in an engine's config).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gpus {
    /// No GPU (`none`).
    None,
    /// Every GPU (`all`).
    All,
    /// Any this many GPUs.
    Count(u32),
    /// These devices, by index or UUID.
    Devices(Vec<String>),
}

impl Gpus {
    /// Parses `all`, `none`, a count, or a comma-separated list of devices
    /// (`0,1`, or UUIDs such as `GPU-3a1f…`); a lone number is a count.
    pub fn parse(text: &str) -> Result<Gpus, String> {
        let text = text.trim();
        match text {
            "all" => return Ok(Gpus::All),
            "none" => return Ok(Gpus::None),
            _ => {}
        }
        if let Ok(count) = text.parse::<i64>() {
            return Gpus::count(count);
        }
        Gpus::devices(text.split(',').map(str::trim))
    }

    /// A count of 1 or more.
    pub fn count(count: i64) -> Result<Gpus, String> {
        match u32::try_from(count) {
            Ok(count) if count > 0 => Ok(Gpus::Count(count)),
            _ => Err(format!("a GPU count must be 1 or more, got {count} (`none` for no GPU)")),
        }
    }

    /// A device list: indexes (`0`) or NVIDIA UUIDs (`GPU-…`, `MIG-…`).
    pub fn devices<'a>(devices: impl IntoIterator<Item = &'a str>) -> Result<Gpus, String> {
        let devices: Vec<String> = devices.into_iter().map(str::to_owned).collect();
        let valid = |device: &String| {
            let index = !device.is_empty() && device.chars().all(|c| c.is_ascii_digit());
            let uuid = ["GPU-", "MIG-"].iter().any(|prefix| {
                device.strip_prefix(prefix).is_some_and(|rest| {
                    !rest.is_empty() && rest.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                })
            });
            index || uuid
        };
        match devices.iter().find(|device| !valid(device)) {
            _ if devices.is_empty() => Err("the GPU device list is empty".to_owned()),
            Some(bad) => Err(format!(
                "`{bad}` is not a GPU index or UUID; write `all`, `none`, a count, or devices \
                 such as `0,1`"
            )),
            None => Ok(Gpus::Devices(devices)),
        }
    }
}

impl std::fmt::Display for Gpus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Gpus::None => f.write_str("none"),
            Gpus::All => f.write_str("all"),
            Gpus::Count(count) => write!(f, "{count}"),
            Gpus::Devices(devices) => f.write_str(&devices.join(",")),
        }
    }
}

/// Allowed ranges of the numeric engine parameters, shared by campaign files
/// and `kitt run --engine-config`.
pub mod engine_limits {
    /// `context_size` in tokens.
    pub const CONTEXT_SIZE: (i64, i64) = (1, 10_000_000);
    /// `gpu_layers` (-1: all).
    pub const GPU_LAYERS: (i64, i64) = (-1, 100_000);
    /// `parallel` slots.
    pub const PARALLEL: (i64, i64) = (1, 1024);
    /// `threads`.
    pub const THREADS: (i64, i64) = (1, 4096);
    /// `tensor_parallel_size` (GPUs).
    pub const TENSOR_PARALLEL_SIZE: (i64, i64) = (1, 1024);

    /// Whether `value` is an allowed `gpu_memory_utilization`: above 0, at most 1.
    pub fn gpu_memory_utilization(value: f64) -> bool {
        value > 0.0 && value <= 1.0
    }
}

/// An engine's `config` map, typed.
#[derive(Debug, Clone, Default)]
pub struct EngineConfig {
    /// Path of the engine's server binary.
    pub binary: Option<PathBuf>,
    /// Native or Docker.
    pub mode: EngineMode,
    /// Container image overriding the engine's default.
    pub image: Option<String>,
    /// GPUs handed to the engine's container (Docker mode; default: every
    /// GPU when NVML or `nvidia-smi` finds one, else none).
    pub gpus: Option<Gpus>,
    /// Base URL of an already-running OpenAI-compatible server (`openai` only).
    pub base_url: Option<String>,
    /// The model id to ask the server for (`openai` only; default: the model's name).
    pub model: Option<String>,
    /// Context size in tokens.
    pub context_size: Option<u32>,
    /// Layers to offload to GPUs (-1: all).
    pub gpu_layers: Option<i32>,
    /// Parallel request slots.
    pub parallel: Option<u32>,
    /// CPU threads.
    pub threads: Option<u32>,
    /// How long Ollama keeps the model loaded (`30m`, `-1` for never unloading; `ollama` only).
    pub keep_alive: Option<String>,
    /// Fraction of GPU memory the engine may take (vLLM `--gpu-memory-utilization`,
    /// SGLang `--mem-fraction-static`); above 0, at most 1.
    pub gpu_memory_utilization: Option<f64>,
    /// GPUs the model is split over (vLLM and SGLang tensor parallelism).
    pub tensor_parallel_size: Option<u32>,
    /// The tokenizer vLLM serves a GGUF with: a local directory or a repository id.
    pub tokenizer: Option<String>,
    /// Extra command-line arguments passed to the engine as given (for
    /// `ollama`: `OLLAMA_NAME=value` entries of its environment).
    pub extra_args: Vec<String>,
}

/// `disk`.
#[derive(Debug, Clone)]
pub struct DiskPolicy {
    /// Free space to keep, in bytes.
    pub reserve_bytes: u64,
    /// `disk.storage_path`, `~` expanded.
    pub storage_path: Option<PathBuf>,
    /// Delete what kitt downloaded for a run once the run is over.
    pub cleanup_after_run: bool,
    /// `disk.prefetch`: download the next run's model while the current run
    /// benchmarks, when the reserve allows both (default on).
    pub prefetch: bool,
}

/// Percentages beyond which `auto_compare` reports a change.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Thresholds {
    /// A throughput metric lower than the baseline by more than this
    /// percentage is a regression (default 5).
    pub throughput_pct: f64,
    /// A latency metric higher than the baseline by more than this
    /// percentage is a regression (default 10).
    pub latency_pct: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds { throughput_pct: 5.0, latency_pct: 10.0 }
    }
}

/// Events a notification can be sent for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotifyEvent {
    /// The campaign finished.
    Complete,
    /// A run failed.
    Failure,
    /// A result is worse than the previous one of the same key (needs `auto_compare`).
    Regression,
}

/// `notifications`.
#[derive(Debug, Clone)]
pub struct Notifications {
    /// Webhook to POST events to.
    pub webhook_url: Option<String>,
    /// Address to mail events to (needs `smtp_host`).
    pub email: Option<String>,
    /// SMTP relay host.
    pub smtp_host: Option<String>,
    /// SMTP relay port.
    pub smtp_port: u16,
    /// SMTP user.
    pub smtp_user: Option<String>,
    /// `smtp_password`, else `KITT_SMTP_PASSWORD`.
    pub smtp_password: Option<Secret>,
    /// Desktop notifications.
    pub desktop: bool,
    /// Which events are sent.
    pub events: Vec<NotifyEvent>,
}

/// Devon settings (`devon_managed`, `devon_url`, `devon_api_key`).
#[derive(Debug, Clone)]
pub struct Devon {
    /// Manage model downloads through Devon.
    pub managed: bool,
    /// Devon's HTTP API.
    pub url: Option<String>,
    /// `devon_api_key`, else `DEVON_API_KEY`.
    pub api_key: Option<Secret>,
}

/// Skip and include globs over quantization labels.
#[derive(Debug, Clone, Default)]
pub struct QuantFilter {
    /// Labels matching any of these are skipped.
    pub skip: Vec<QuantGlob>,
    /// When not empty, only labels matching one of these are kept.
    pub include_only: Vec<QuantGlob>,
}

impl QuantFilter {
    /// Why the filter leaves `label` out, or `None` when it keeps it. Skip
    /// patterns apply before include patterns.
    pub fn exclusion(&self, label: &QuantLabel) -> Option<String> {
        if let Some(glob) = self.skip.iter().find(|glob| glob.matches(label)) {
            return Some(format!("quant_filter: skip pattern `{}`", glob.pattern()));
        }
        let included = self.include_only.iter().any(|glob| glob.matches(label));
        if !self.include_only.is_empty() && !included {
            let patterns: Vec<&str> = self.include_only.iter().map(QuantGlob::pattern).collect();
            return Some(format!("quant_filter: not in include_only ({})", patterns.join(", ")));
        }
        None
    }
}
