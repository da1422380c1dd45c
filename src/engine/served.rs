//! Engines kitt starts as OpenAI-compatible HTTP servers: vLLM, SGLang,
//! ExLlamaV2 through TabbyAPI, and `mlx_lm.server`.
//!
//! Each engine module says what differs as a [`ServerPlan`], built for a
//! [`Site`] (where the server listens and how it sees the model's path): its
//! command line, the path that answers once it is up, how the served model
//! is checked, the request fields that make numbers comparable, and the log
//! lines that mean it ran out of memory. This module does the rest the same
//! way for all of them: start the server — a native process with its log
//! captured ([`launch`]), or in Docker mode a container of the engine's image
//! ([`launch_in_docker`]) — wait until it is up and actually serves (a
//! one-token chat request succeeds), check that it serves the model asked for
//! (and that a native process owns its port), and read a failed start-up from
//! the log. Measuring is not done here.

mod container;
mod ready;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

pub use container::{ImageLayout, launch as launch_in_docker};
pub use ready::{check_served_model, json_field, out_of_memory};

use super::docker::Mount;
use super::process::EngineProcess;
use super::{EngineError, EngineHandle, EngineKind, Format, Launch, Running};

/// A program with its arguments, environment and working directory, not yet started.
#[derive(Debug, Clone, PartialEq)]
pub struct StartCommand {
    /// The executable.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// Variables added to kitt's environment.
    pub env: Vec<(String, String)>,
    /// The working directory (kitt's own when `None`).
    pub dir: Option<PathBuf>,
}

/// Where an engine's program is looked for: the engine config's `binary`,
/// then an environment variable, then `PATH`.
#[derive(Debug, Clone, Copy)]
pub struct Lookup {
    /// The engine's config name.
    pub engine: &'static str,
    /// The environment variable that names the program (`KITT_VLLM`).
    pub env: &'static str,
    /// The program's name on `PATH` (`None`: not looked for there).
    pub on_path: Option<&'static str>,
    /// How to install it.
    pub hint: &'static str,
    /// The program a given path stands for, if it is usable (by default: an executable file).
    pub accept: fn(&Path) -> Option<PathBuf>,
}

/// Finds an engine's program, or says where kitt looked and how to install it.
pub fn find_program(lookup: &Lookup, configured: Option<&Path>) -> Result<PathBuf, EngineError> {
    let missing = |searched: String| EngineError::BinaryMissing {
        engine: lookup.engine,
        searched,
        hint: lookup.hint.to_owned(),
    };
    if let Some(path) = configured {
        let found = (lookup.accept)(path);
        return found.ok_or_else(|| missing(format!("`binary` {}", path.display())));
    }
    if let Some(path) = std::env::var_os(lookup.env).filter(|value| !value.is_empty()) {
        let path = PathBuf::from(path);
        let found = (lookup.accept)(&path);
        return found.ok_or_else(|| missing(format!("{}={}", lookup.env, path.display())));
    }
    let searched = match lookup.on_path {
        Some(name) => match super::llama_cpp::on_path(name).and_then(|path| (lookup.accept)(&path))
        {
            Some(path) => return Ok(path),
            None => format!("{} and `{name}` on PATH", lookup.env),
        },
        None => lookup.env.to_owned(),
    };
    Err(missing(searched))
}

/// How the served model is checked once the server is up.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelCheck {
    /// `GET /v1/models` lists this id.
    Listed(String),
    /// `GET /v1/model` (TabbyAPI's loaded model) has this id.
    Loaded(String),
    /// The server serves exactly what it was started with under a fixed id;
    /// the one-token request that follows proves it.
    StartedWith,
}

/// A log line that says start-up ran out of memory, and what to change.
#[derive(Debug, Clone, Copy)]
pub struct MemorySign {
    /// Text the line contains.
    pub needle: &'static str,
    /// What ran out, in the engine's terms.
    pub cause: &'static str,
    /// What to change, naming kitt's config keys.
    pub hint: &'static str,
}

/// Everything an engine module decides for one launch.
#[derive(Debug, Clone)]
pub struct ServerPlan {
    /// Which engine.
    pub kind: EngineKind,
    /// The executable (or interpreter) to start.
    pub program: PathBuf,
    /// Arguments before the flags (`serve MODEL`, `-m sglang.launch_server`, `main.py`).
    pub leading: Vec<String>,
    /// Flags and their values, in order; a switch has an empty value.
    pub flags: Vec<(String, String)>,
    /// The engine config's `extra_args`, passed last and as given.
    pub extra_args: Vec<String>,
    /// The working directory.
    pub dir: Option<PathBuf>,
    /// The port the server listens on (inside its container in Docker mode).
    pub port: u16,
    /// The path that answers 2xx once the server is up.
    pub ready_path: &'static str,
    /// How the served model is checked.
    pub model_check: ModelCheck,
    /// The model id requests carry.
    pub served_model: String,
    /// Fields added to every request.
    pub request_extras: Map<String, Value>,
    /// What was done for comparability, and what the engine cannot do.
    pub comparability: BTreeMap<String, String>,
    /// Log lines that mean start-up ran out of memory.
    pub memory_signs: &'static [MemorySign],
    /// The settings an out-of-memory hint should name, with their values.
    pub memory_settings: String,
}

impl ServerPlan {
    /// A plan with no flags, checks or request fields yet.
    pub fn new(kind: EngineKind, program: PathBuf, site: &Site) -> Self {
        let port = site.port;
        ServerPlan {
            kind,
            program,
            leading: Vec::new(),
            flags: Vec::new(),
            extra_args: Vec::new(),
            dir: None,
            port,
            ready_path: "/health",
            model_check: ModelCheck::StartedWith,
            served_model: String::new(),
            request_extras: Map::new(),
            comparability: BTreeMap::new(),
            memory_signs: &[],
            memory_settings: String::new(),
        }
    }

    /// Adds `--flag value`.
    pub fn flag(&mut self, flag: &str, value: impl ToString) {
        self.flags.push((flag.to_owned(), value.to_string()));
    }

    /// Adds a flag without a value.
    pub fn switch(&mut self, flag: &str) {
        self.flags.push((flag.to_owned(), String::new()));
    }

    /// Pins every request's output length: `ignore_eos`, and `min_tokens`
    /// equal to the request's `max_tokens`, both recorded.
    pub fn pin_output_length(&mut self) {
        self.request_extras.insert("ignore_eos".into(), Value::Bool(true));
        self.request_extras.insert("min_tokens".into(), Value::from("max_tokens"));
        self.comparability
            .insert("ignore_eos".into(), "true (output length pinned to max_tokens)".into());
        self.comparability.insert("min_tokens".into(), "= max_tokens of each request".into());
    }

    /// The command line that starts the server.
    pub fn command(&self) -> StartCommand {
        let flags = self
            .flags
            .iter()
            .flat_map(|(flag, value)| [flag.clone(), value.clone()])
            .filter(|arg| !arg.is_empty());
        let args = self.leading.iter().cloned().chain(flags).chain(self.extra_args.clone());
        StartCommand {
            program: self.program.clone(),
            args: args.collect(),
            env: Vec::new(),
            dir: self.dir.clone(),
        }
    }

    /// The parameters recorded with the result: flags without their dashes
    /// (a switch as `true`), `extra_args` as one string, and the program with
    /// the arguments before the flags as `command`.
    pub fn parameters(&self) -> BTreeMap<String, String> {
        let mut recorded: BTreeMap<String, String> = self
            .flags
            .iter()
            .map(|(flag, value)| {
                let value = if value.is_empty() { "true".to_owned() } else { value.clone() };
                (flag.trim_start_matches('-').to_owned(), value)
            })
            .collect();
        if !self.extra_args.is_empty() {
            recorded.insert("extra_args".into(), self.extra_args.join(" "));
        }
        if !self.leading.is_empty() {
            let command = format!("{} {}", self.program.display(), self.leading.join(" "));
            recorded.insert("command".into(), command);
        }
        recorded
    }
}

/// Where a server runs: the address and port it listens on, and how it sees
/// the host's paths (through the bind mounts of its container, if any).
#[derive(Debug, Clone)]
pub struct Site {
    /// The address to listen on.
    pub host: &'static str,
    /// The port to listen on.
    pub port: u16,
    mounts: Vec<Mount>,
}

impl Site {
    /// A native process on 127.0.0.1 and `port`.
    pub fn native(port: u16) -> Self {
        Site { host: "127.0.0.1", port, mounts: Vec::new() }
    }

    /// A container whose server listens on every interface of its own
    /// network namespace (so the published port reaches it) on `port`, and
    /// sees `mounts`.
    pub fn container(port: u16, mounts: Vec<Mount>) -> Self {
        Site { host: "0.0.0.0", port, mounts }
    }

    /// The bind mounts.
    pub fn mounts(&self) -> &[Mount] {
        &self.mounts
    }

    /// Host path `path` as the server sees it.
    pub fn path(&self, path: &Path) -> String {
        self.mounts
            .iter()
            .find_map(|mount| mount.inside(path))
            .unwrap_or_else(|| path.display().to_string())
    }

    /// A local directory as the server sees it; anything else (a Hugging
    /// Face repository id) as given.
    pub fn path_or_id(&self, text: &str) -> String {
        let path = Path::new(text);
        if path.is_dir() { self.path(path) } else { text.to_owned() }
    }
}

/// A server kitt started that is up and serves the model asked for.
#[derive(Debug)]
pub struct Started {
    handle: EngineHandle,
    base_url: String,
    port: u16,
    container: Option<container::Record>,
}

impl Started {
    /// Its base URL.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Whether it runs in a container.
    pub fn in_container(&self) -> bool {
        self.container.is_some()
    }

    /// The [`Running`] engine, with everything `plan` records. `version` is
    /// the engine's own (`None`: unknown); in a container the image's digest
    /// is added to it, and the container's parameters to the plan's.
    pub fn into_running(self, plan: ServerPlan, version: Option<String>) -> Running {
        let mut parameters = plan.parameters();
        let mut comparability = plan.comparability;
        let (binary, version) = match self.container {
            None => (Some(plan.program.clone()), version.unwrap_or_else(|| "unknown".into())),
            Some(record) => {
                parameters.extend(record.parameters);
                let image = record.image;
                comparability.insert("engine_mode".into(), format!("docker, image {image}"));
                (None, version.map_or_else(|| image.clone(), |v| format!("{v} ({image})")))
            }
        };
        Running {
            kind: plan.kind,
            base_url: self.base_url,
            served_model: plan.served_model,
            version,
            binary,
            parameters,
            request_extras: plan.request_extras,
            comparability,
            protocol: crate::measure::Protocol::OpenAi,
            handle: Some(self.handle),
            port: Some(self.port),
            cleanup: None,
        }
    }
}

/// Starts the server of `plan` as a native process and waits until it
/// serves; stops it again when any step fails.
pub async fn launch(plan: &ServerPlan, launch: &Launch<'_>) -> Result<Started, EngineError> {
    let mut command = plan.command();
    command.env.extend(launch.device_env());
    tracing::info!(engine = %plan.kind, port = plan.port, "starting {}", plan.kind);
    let process = EngineProcess::spawn_in(
        &command.program,
        &command.args,
        &command.env,
        command.dir.as_deref(),
        &launch.log_path,
    )
    .map_err(EngineError::Io)?;
    let base_url = format!("http://127.0.0.1:{}", plan.port);
    let handle = until_ready(plan, process.into(), &base_url, plan.port, launch).await?;
    Ok(Started { handle, base_url, port: plan.port, container: None })
}

/// Waits until the server behind `handle` serves; stops it when it does not.
async fn until_ready(
    plan: &ServerPlan,
    mut handle: EngineHandle,
    base_url: &str,
    port: u16,
    launch: &Launch<'_>,
) -> Result<EngineHandle, EngineError> {
    let waited = launch.ready_deadline();
    if let Err(error) = ready::ready(plan, &mut handle, base_url, port, waited).await {
        if let Err(stop) = handle.stop().await {
            tracing::warn!("cannot stop the engine that failed to start: {stop}");
        }
        return Err(error);
    }
    tracing::info!(engine = %plan.kind, base_url, "{} is serving", plan.kind);
    Ok(handle)
}

/// Why engine `kind` cannot load the model at `path`, or `None` when it can.
/// vLLM also loads a single-file GGUF, with a tokenizer.
pub fn model_refusal(
    kind: EngineKind,
    format: Option<Format>,
    path: &Path,
    tokenizer: Option<&str>,
) -> Option<String> {
    let checkpoint = "a safetensors checkpoint: a directory with config.json and *.safetensors";
    match (kind, format) {
        (EngineKind::Vllm, Some(Format::Gguf)) => {
            let name = path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default();
            if crate::plan::quant::shard_index(&name).is_some() {
                Some(
                    "vLLM loads only single-file GGUF models; merge the shards or use the \
                     safetensors checkpoint"
                        .into(),
                )
            } else if tokenizer.is_none() {
                Some(
                    "vLLM serves a GGUF only with the tokenizer of the original model; give it \
                     with `--engine-config tokenizer=DIR_OR_REPO` (a campaign takes it from the \
                     model's `safetensors_repo`)"
                        .into(),
                )
            } else {
                None
            }
        }
        (EngineKind::Vllm | EngineKind::Sglang | EngineKind::Exllamav2 | EngineKind::Mlx, _) => {
            let is_checkpoint = format == Some(Format::Safetensors) && path.is_dir();
            (!is_checkpoint).then(|| format!("`{kind}` loads {checkpoint}"))
        }
        _ => None,
    }
}

/// Refuses a model the engine cannot load, as an engine error.
pub fn check_model<'a>(
    launch: &'a Launch<'_>,
    tokenizer: Option<&str>,
) -> Result<&'a Path, EngineError> {
    let engine = launch.kind.name();
    let path = launch.model_path.ok_or(EngineError::NoModelFile { engine })?;
    match model_refusal(launch.kind, launch.format, path, tokenizer) {
        Some(reason) => {
            Err(EngineError::Model { engine, model: path.display().to_string(), reason })
        }
        None => Ok(path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_leading_flags_then_extra_args() {
        let mut plan = ServerPlan::new(EngineKind::Vllm, "vllm".into(), &Site::native(8000));
        plan.leading = vec!["serve".into(), "/m".into()];
        plan.flag("--port", 8000);
        plan.switch("--no-enable-prefix-caching");
        plan.extra_args = vec!["--seed".into(), "1".into()];
        let command = plan.command();
        assert_eq!(
            command.args,
            ["serve", "/m", "--port", "8000", "--no-enable-prefix-caching", "--seed", "1"]
        );
        let recorded = plan.parameters();
        assert_eq!(recorded["no-enable-prefix-caching"], "true");
        assert_eq!(recorded["extra_args"], "--seed 1");
        assert_eq!(recorded["command"], "vllm serve /m");
    }

    #[test]
    fn only_vllm_takes_a_gguf_and_only_with_a_tokenizer() {
        let gguf = Path::new("/models/m-Q4_K_M.gguf");
        let vllm = EngineKind::Vllm;
        assert!(model_refusal(vllm, Some(Format::Gguf), gguf, None).unwrap().contains("tokenizer"));
        assert_eq!(model_refusal(vllm, Some(Format::Gguf), gguf, Some("org/m")), None);
        let shard = Path::new("/models/m-Q4_K_M-00001-of-00002.gguf");
        assert!(model_refusal(vllm, Some(Format::Gguf), shard, Some("org/m")).is_some());
        let refused = model_refusal(EngineKind::Sglang, Some(Format::Gguf), gguf, None);
        assert!(refused.unwrap().contains("safetensors checkpoint"));
        assert_eq!(model_refusal(EngineKind::LlamaCpp, Some(Format::Gguf), gguf, None), None);
    }
}
