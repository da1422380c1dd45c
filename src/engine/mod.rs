//! The engines kitt knows, the model formats each accepts, and starting,
//! probing and stopping them.
//!
//! Measurement never sees an engine: it gets a [`Running`] with a base URL,
//! the protocol to speak, the model id to ask for and the request fields that
//! make numbers comparable. Adding an engine means a module here and an arm in
//! [`start`]; its Docker mode uses [`docker`] (see that module's documentation).

pub mod docker;
pub mod handle;
pub mod keys;
pub mod llama_cpp;
pub mod mlx;
pub mod ollama;
pub mod openai;
pub mod port;
pub mod process;
pub mod profile;
pub mod pulls;
pub mod python;
pub mod served;
pub mod sglang;
pub mod tabby;
pub mod vllm;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::config::EngineConfig;
use crate::measure::Protocol;
pub use handle::EngineHandle;

/// A model format, as named in an engine's `formats` list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Format {
    /// GGUF files from `gguf_repo` (for Ollama also its library tags, which are GGUF).
    Gguf,
    /// Safetensors checkpoints from `safetensors_repo`.
    Safetensors,
    /// Ollama library tags from `ollama_tag`.
    Ollama,
}

impl Format {
    /// Every format name a config may use.
    pub const NAMES: &'static [&'static str] = &["gguf", "safetensors", "ollama"];

    /// Parses a format name as written in a config (any case).
    pub fn parse(name: &str) -> Option<Format> {
        match name.to_ascii_lowercase().as_str() {
            "gguf" => Some(Format::Gguf),
            "safetensors" => Some(Format::Safetensors),
            "ollama" => Some(Format::Ollama),
            _ => None,
        }
    }

    /// The config spelling.
    pub fn name(self) -> &'static str {
        match self {
            Format::Gguf => "gguf",
            Format::Safetensors => "safetensors",
            Format::Ollama => "ollama",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An inference engine kitt can benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EngineKind {
    /// llama.cpp's `llama-server`.
    LlamaCpp,
    /// Ollama.
    Ollama,
    /// vLLM's OpenAI-compatible server.
    Vllm,
    /// SGLang's OpenAI-compatible server.
    Sglang,
    /// ExLlamaV2 through TabbyAPI.
    Exllamav2,
    /// Apple MLX through `mlx_lm.server`.
    Mlx,
    /// An OpenAI-compatible server that is already running; never started or stopped.
    Openai,
}

impl EngineKind {
    /// Every engine, in the order `kitt engines list` shows them.
    pub const ALL: &'static [EngineKind] = &[
        EngineKind::LlamaCpp,
        EngineKind::Ollama,
        EngineKind::Vllm,
        EngineKind::Sglang,
        EngineKind::Exllamav2,
        EngineKind::Mlx,
        EngineKind::Openai,
    ];

    /// Every engine name a config may use.
    pub const NAMES: &'static [&'static str] =
        &["llama_cpp", "ollama", "vllm", "sglang", "exllamav2", "mlx", "openai"];

    /// Parses an engine name as written in a config.
    pub fn parse(name: &str) -> Option<EngineKind> {
        let index = Self::NAMES.iter().position(|known| *known == name)?;
        Some(Self::ALL[index])
    }

    /// The config spelling.
    pub fn name(self) -> &'static str {
        let index = Self::ALL.iter().position(|kind| *kind == self).unwrap_or_default();
        Self::NAMES[index]
    }

    /// The formats the engine can load, in order of preference. `openai` loads
    /// nothing itself: it benchmarks whatever its server already serves.
    pub fn formats(self) -> &'static [Format] {
        match self {
            EngineKind::LlamaCpp => &[Format::Gguf],
            // Library tags are GGUF blobs; a `gguf_repo` is imported through a Modelfile
            // only when the model has no tag.
            EngineKind::Ollama => &[Format::Ollama, Format::Gguf],
            // A single-file GGUF runs with the tokenizer of the model's safetensors repo.
            EngineKind::Vllm => &[Format::Safetensors, Format::Gguf],
            EngineKind::Sglang | EngineKind::Exllamav2 | EngineKind::Mlx => &[Format::Safetensors],
            EngineKind::Openai => &[],
        }
    }

    /// The formats used when the config gives no `formats` list.
    pub fn default_formats(self) -> &'static [Format] {
        match self {
            EngineKind::Vllm => &[Format::Safetensors],
            other => other.formats(),
        }
    }

    /// Whether kitt starts and stops this engine itself.
    pub fn is_managed(self) -> bool {
        self != EngineKind::Openai
    }

    /// Whether kitt can run this engine in a container (`mode: docker`):
    /// whether it has an official image.
    pub fn has_docker_mode(self) -> bool {
        docker::default_image(self, &crate::config::Gpus::None).is_some()
    }
}

impl fmt::Display for EngineKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Everything needed to start an engine for one run.
#[derive(Debug)]
pub struct Launch<'a> {
    /// Which engine.
    pub kind: EngineKind,
    /// Its parameters from the campaign or `--engine-config`.
    pub config: &'a EngineConfig,
    /// The model to load: a GGUF file (first shard of a split model), a
    /// safetensors directory, or an Ollama tag, as `format` says.
    pub model_path: Option<&'a Path>,
    /// What `model_path` is (`None` for an `openai` server's own model).
    pub format: Option<Format>,
    /// Tokenizer directory or repository id for a GGUF served by vLLM.
    pub tokenizer: Option<&'a str>,
    /// The run's id; with `campaign` it names containers `kitt-<campaign>-<run>`.
    pub run_id: &'a str,
    /// The campaign the run belongs to, if any.
    pub campaign: Option<&'a str>,
    /// The id the server must report for the model.
    pub model_name: &'a str,
    /// Total size of the model files, which sets the start-up deadline.
    pub model_bytes: u64,
    /// Context size in tokens.
    pub context_size: u32,
    /// Parallel request slots.
    pub slots: u32,
    /// Where the engine's output goes.
    pub log_path: PathBuf,
    /// Receives what the engine does while it starts (pulling, importing,
    /// loading), for progress displays.
    pub progress: StartProgress,
    /// Whether the engine may pull a missing model, what becomes of a pulled
    /// one after the run, and where the campaign records pulls (Ollama).
    pub pulls: pulls::PullRules,
    /// The GPUs a parallel campaign placed the run on (indices); `None`:
    /// whatever the engine's config says (all, by default).
    pub devices: Option<&'a [u32]>,
    /// CPU threads to use when the config sets none (a parallel campaign's
    /// share of the machine); `None`: the engine's own default.
    pub cpu_threads: Option<u32>,
}

impl Launch<'_> {
    /// The environment that pins a native engine to its devices:
    /// `CUDA_VISIBLE_DEVICES` (and `HIP_VISIBLE_DEVICES`, read by ROCm
    /// builds) listing the placed GPUs, with `CUDA_DEVICE_ORDER=PCI_BUS_ID`
    /// so CUDA numbers them as NVML and `nvidia-smi` do (its own default
    /// puts the fastest first); nothing when the run was not placed.
    pub fn device_env(&self) -> Vec<(String, String)> {
        let Some(devices) = self.devices.filter(|devices| !devices.is_empty()) else {
            return Vec::new();
        };
        let list: Vec<String> = devices.iter().map(u32::to_string).collect();
        let list = list.join(",");
        vec![
            ("CUDA_DEVICE_ORDER".to_owned(), "PCI_BUS_ID".to_owned()),
            ("CUDA_VISIBLE_DEVICES".to_owned(), list.clone()),
            ("HIP_VISIBLE_DEVICES".to_owned(), list),
        ]
    }

    /// The GPUs a container gets: the placed devices, else the config's
    /// `gpus` ([`docker::resolve_gpus`]).
    pub fn container_gpus(&self) -> crate::config::Gpus {
        match self.devices {
            Some(devices) if !devices.is_empty() => {
                crate::config::Gpus::Devices(devices.iter().map(u32::to_string).collect())
            }
            _ => docker::resolve_gpus(self.config.gpus.as_ref()),
        }
    }
}

/// A sink for one-line progress texts sent while an engine starts, such as
/// `pulling llama3.2:1b: 45% of 1.2 GiB`. Senders throttle themselves; the
/// default sink discards everything.
#[derive(Clone, Default)]
pub struct StartProgress(Option<Arc<dyn Fn(String) + Send + Sync>>);

impl StartProgress {
    /// A sink that hands every text to `sink`.
    pub fn new(sink: impl Fn(String) + Send + Sync + 'static) -> Self {
        StartProgress(Some(Arc::new(sink)))
    }

    /// Reports `text`.
    pub fn report(&self, text: String) {
        if let Some(sink) = &self.0 {
            sink(text);
        }
    }
}

impl fmt::Debug for StartProgress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() { "StartProgress(on)" } else { "StartProgress(off)" })
    }
}

impl Launch<'_> {
    /// How long loading may take: 30 s plus 10 s per GiB of model.
    pub fn ready_deadline(&self) -> Duration {
        ready_deadline_for(self.model_bytes)
    }

    /// The longest sequence one request may need: the configured
    /// `context_size`, else the suite's per-request need (`context_size` is
    /// that times the slots when nothing is configured). Engines that size
    /// their context per sequence (vLLM, SGLang, TabbyAPI) take this.
    pub fn context_per_request(&self) -> u32 {
        self.config.context_size.unwrap_or(self.context_size / self.slots.max(1))
    }
}

/// How long loading a model of `bytes` may take: 30 s plus 10 s per GiB.
pub fn ready_deadline_for(bytes: u64) -> Duration {
    Duration::from_secs(30 + 10 * bytes.div_ceil(1 << 30))
}

/// A started (or connected) engine.
#[derive(Debug)]
pub struct Running {
    /// Which engine.
    pub kind: EngineKind,
    /// Base URL without `/v1`.
    pub base_url: String,
    /// Model id to send in requests.
    pub served_model: String,
    /// The engine's version.
    pub version: String,
    /// The executable kitt started, if it started one.
    pub binary: Option<PathBuf>,
    /// Parameters passed to the engine, as text.
    pub parameters: BTreeMap<String, String>,
    /// Fields added to every request (cache defeat, output pinning); a
    /// `min_tokens` field is set to each request's own `max_tokens`.
    pub request_extras: serde_json::Map<String, serde_json::Value>,
    /// What was done for comparability, and what was refused.
    pub comparability: BTreeMap<String, String>,
    /// The streaming API measurement speaks to this engine.
    pub protocol: Protocol,
    /// The process or container kitt started (`None` for external servers).
    handle: Option<EngineHandle>,
    /// The port kitt chose for an engine it started.
    port: Option<u16>,
    /// What to undo on the engine before it is stopped.
    cleanup: Option<Cleanup>,
}

/// Something kitt created on an engine for a run and removes before stopping it.
#[derive(Debug)]
enum Cleanup {
    /// A model kitt imported into Ollama, or pulled and may let go.
    OllamaModel(ollama::OwnedModel),
}

impl Running {
    /// The engine's process group, when kitt started it and can see it.
    pub fn process_group(&self) -> Option<u32> {
        self.handle.as_ref().and_then(EngineHandle::process_group)
    }

    /// Whether the engine has exited (never for external servers).
    pub async fn has_exited(&mut self) -> bool {
        match self.handle.as_mut() {
            Some(handle) => handle.exited().await.is_some(),
            None => false,
        }
    }

    /// The tail of the engine's log.
    pub fn log_tail(&self, lines: usize) -> String {
        self.handle.as_ref().map(|handle| handle.log_tail(lines)).unwrap_or_default()
    }

    /// Keeps a model the engine pulled in its store when the engine stops:
    /// an interrupted run is redone and needs it again. Imports are still removed.
    pub fn keep_pulled_model(&mut self) {
        if matches!(&self.cleanup, Some(Cleanup::OllamaModel(owned)) if owned.is_pulled()) {
            self.cleanup = None;
        }
    }

    /// Removes what kitt created on the engine, stops what kitt started and
    /// waits until it is gone; external servers are left alone.
    pub async fn stop(&mut self) -> Result<(), EngineError> {
        match self.cleanup.take() {
            Some(Cleanup::OllamaModel(imported)) => imported.remove().await,
            None => {}
        }
        if let Some(handle) = self.handle.as_mut() {
            handle.stop().await?;
        }
        if let Some(port) = self.port.take() {
            wait_for_port_release(port).await;
        }
        Ok(())
    }
}

/// Why an engine could not be used.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The engine's executable is not installed.
    #[error("cannot find the `{engine}` server (looked at {searched}); {hint}")]
    BinaryMissing {
        /// Engine name.
        engine: &'static str,
        /// Where kitt looked.
        searched: String,
        /// How to install it.
        hint: String,
    },
    /// Docker mode was asked for an engine that has none (yet).
    #[error("{0}; use `mode: native`")]
    NoDockerMode(String),
    /// No model file was given to an engine that loads one.
    #[error("engine `{engine}` needs a model file")]
    NoModelFile {
        /// Engine name.
        engine: &'static str,
    },
    /// The engine could not get the model ready to serve (pull, import).
    #[error("cannot make `{model}` available: {reason}")]
    ModelUnavailable {
        /// The model or tag.
        model: String,
        /// What went wrong.
        reason: String,
    },
    /// An engine setting cannot be used.
    #[error("engine setting `{key}`: {reason}")]
    InvalidSetting {
        /// The key.
        key: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// An `openai` engine without `base_url`.
    #[error("an `openai` engine needs `base_url` in its config")]
    NoBaseUrl,
    /// The process exited before it was ready.
    #[error("the engine exited while loading ({status}); last log lines:\n{log_tail}")]
    Died {
        /// Exit status.
        status: String,
        /// The end of its log.
        log_tail: String,
    },
    /// The process exited while the suite was running.
    #[error("the engine exited during the suite; last log lines:\n{log_tail}")]
    Crashed {
        /// The end of its log.
        log_tail: String,
    },
    /// The engine ran out of memory while starting: the same settings fail
    /// the same way, so the run is not retried until they change.
    #[error("{OUT_OF_MEMORY}: {cause}; {hint}; last log lines:\n{log_tail}")]
    OutOfMemory {
        /// What ran out, in the engine's terms.
        cause: String,
        /// What to change, with the values used.
        hint: String,
        /// The end of its log, ending with the line that says so.
        log_tail: String,
    },
    /// The engine cannot load this model as given.
    #[error("engine `{engine}` cannot load `{model}`: {reason}")]
    Model {
        /// Engine name.
        engine: &'static str,
        /// The model path.
        model: String,
        /// Why, and what to give instead.
        reason: String,
    },
    /// The engine did not become ready in time.
    #[error("the engine was not ready after {waited:?}; last log lines:\n{log_tail}")]
    NotReady {
        /// The deadline.
        waited: Duration,
        /// The end of its log.
        log_tail: String,
    },
    /// Another process answers on the port kitt chose.
    #[error("port {port} answers, but not from the engine kitt started")]
    PortNotOwned {
        /// The port.
        port: u16,
    },
    /// The server serves a different model.
    #[error("the server serves {served:?}, not `{expected}`")]
    WrongModel {
        /// The model asked for.
        expected: String,
        /// What `/v1/models` listed.
        served: Vec<String>,
    },
    /// The server could not be reached or answered nonsense.
    #[error("cannot query {url}: {reason}")]
    Unreachable {
        /// The URL.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// Starting or stopping failed at the OS level.
    #[error("engine process error")]
    Io(#[source] std::io::Error),
    /// A Docker command failed.
    #[error(transparent)]
    Docker(#[from] docker::DockerError),
    /// The model cannot be mounted into a container.
    #[error(transparent)]
    Mount(#[from] docker::MountError),
    /// Docker mode for an engine without an official image, and no `image`.
    #[error("engine `{engine}` has no official image; set `image` in its config")]
    NoImage {
        /// Engine name.
        engine: &'static str,
    },
}

/// How every out-of-memory start-up failure begins, in messages and in the
/// campaign store (where resume looks for it).
pub const OUT_OF_MEMORY: &str = "out of memory at start-up";

/// Starts (or connects to) the engine of `launch`.
pub async fn start(launch: &Launch<'_>) -> Result<Running, EngineError> {
    if launch.config.mode == crate::config::EngineMode::Docker && !launch.kind.has_docker_mode() {
        return Err(EngineError::NoDockerMode(format!(
            "engine `{}` has no Docker mode",
            launch.kind
        )));
    }
    match launch.kind {
        EngineKind::LlamaCpp => llama_cpp::start(launch).await,
        EngineKind::Ollama => ollama::start(launch).await,
        EngineKind::Vllm => vllm::start(launch).await,
        EngineKind::Sglang => sglang::start(launch).await,
        EngineKind::Exllamav2 => tabby::start(launch).await,
        EngineKind::Mlx => mlx::start(launch).await,
        EngineKind::Openai => openai::connect(launch).await,
    }
}

/// Waits (up to 5 s) until nothing listens on `port` any more, so the next
/// run never finds the previous engine's socket.
async fn wait_for_port_release(port: u16) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
        if std::time::Instant::now() > deadline {
            tracing::warn!(port, "the engine's port is still in use after it stopped");
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Model ids listed by `GET {base_url}/v1/models`.
pub async fn served_models(base_url: &str) -> Result<Vec<String>, EngineError> {
    let url = format!("{base_url}/v1/models");
    let unreachable = |reason: String| EngineError::Unreachable { url: url.clone(), reason };
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|error| unreachable(error.to_string()))?;
    let response = client.get(&url).send().await.map_err(|error| unreachable(error.to_string()))?;
    if !response.status().is_success() {
        return Err(unreachable(format!("HTTP {}", response.status().as_u16())));
    }
    let body: serde_json::Value =
        response.json().await.map_err(|error| unreachable(error.to_string()))?;
    let ids = body["data"]
        .as_array()
        .map(|models| models.iter().filter_map(|m| m["id"].as_str().map(str::to_owned)).collect())
        .unwrap_or_default();
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_engine_name_parses_back_to_itself() {
        for kind in EngineKind::ALL {
            assert_eq!(EngineKind::parse(kind.name()), Some(*kind));
        }
        assert_eq!(EngineKind::NAMES.len(), EngineKind::ALL.len());
    }

    #[test]
    fn a_placed_engine_is_pinned_with_indices_in_pci_bus_order() {
        let config = EngineConfig::default();
        let devices = [0, 2];
        let mut launch = Launch {
            kind: EngineKind::LlamaCpp,
            config: &config,
            model_path: None,
            format: None,
            tokenizer: None,
            run_id: "r",
            campaign: None,
            model_name: "m",
            model_bytes: 0,
            context_size: 1,
            slots: 1,
            log_path: PathBuf::from("/dev/null"),
            progress: StartProgress::default(),
            pulls: pulls::PullRules::default(),
            devices: Some(&devices),
            cpu_threads: None,
        };
        let env: BTreeMap<String, String> = launch.device_env().into_iter().collect();
        assert_eq!(env["CUDA_VISIBLE_DEVICES"], "0,2");
        assert_eq!(env["CUDA_DEVICE_ORDER"], "PCI_BUS_ID");
        assert_eq!(env["HIP_VISIBLE_DEVICES"], "0,2");
        launch.devices = None;
        assert!(launch.device_env().is_empty(), "not placed: the user's own environment");
    }

    #[test]
    fn default_formats_are_a_subset_of_accepted_formats() {
        for kind in EngineKind::ALL {
            for format in kind.default_formats() {
                assert!(kind.formats().contains(format), "{kind} {format}");
            }
        }
    }
}
