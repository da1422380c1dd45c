//! Ollama's server, `ollama serve`, as a native process or in a container.
//!
//! The binary is found through the engine config's `binary`, then
//! `KITT_OLLAMA`, then `PATH`. kitt starts `ollama serve` in its own process
//! group with `OLLAMA_HOST=127.0.0.1:<free port>` and the environment
//! [`settings::environment`] lists (slots, keep-alive, one loaded model, the
//! context length, no pruning of the user's store; `OLLAMA_MODELS` stays the
//! user's), and waits until `GET /api/version` answers. Then the model is
//! made ready ([`model::prepare`]: a tag found or pulled, a GGUF imported),
//! loaded and warmed up with the options every request carries, and
//! measurement speaks Ollama's native `/api/chat`, which honours
//! `options.num_ctx` and `keep_alive` and ends each stream with the
//! server's counters.
//!
//! In Docker mode the official image runs `ollama serve` with the same
//! environment, `OLLAMA_HOST=0.0.0.0:11434` inside the container (published
//! on a free loopback port), and the named volume [`VOLUME`] as its store at
//! `/root/.ollama`: pulls persist across runs without writing root-owned
//! files into the user's native store, and the native and container stores
//! never mix versions. Everything after the start is the same in both modes:
//! a GGUF is imported by upload through the API, tags are pulled through it.
//!
//! Only [`start`] knows whether a process or a container runs the server:
//! [`api`], [`model`] and [`settings`] work against a base URL. The server
//! ending at any step is [`EngineError::Died`] with its log tail.

pub mod api;
pub mod model;
pub mod pull;
pub mod settings;
pub mod store;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::docker::{self, Container, ContainerSpec};
use super::llama_cpp::{executable, on_path};
use super::process::EngineProcess;
use super::{
    Cleanup, EngineError, EngineHandle, EngineKind, Launch, Running, port, ready_deadline_for,
};
use crate::config::EngineMode;
use crate::measure::Protocol;
use api::Api;
pub use model::{OwnedModel, check_tag, normalise_tag};
use model::{Prepared, Reporter};

/// Finds the `ollama` binary, or explains where kitt looked.
pub fn find_binary(configured: Option<&Path>) -> Result<PathBuf, EngineError> {
    if let Some(path) = configured {
        return executable(path).ok_or_else(|| missing(&format!("`binary` {}", path.display())));
    }
    if let Some(path) = std::env::var_os("KITT_OLLAMA").filter(|value| !value.is_empty()) {
        let path = PathBuf::from(path);
        return executable(&path)
            .ok_or_else(|| missing(&format!("KITT_OLLAMA={}", path.display())));
    }
    on_path("ollama").ok_or_else(|| missing("PATH"))
}

fn missing(searched: &str) -> EngineError {
    EngineError::BinaryMissing {
        engine: "ollama",
        searched: searched.to_owned(),
        hint: "install Ollama, or set KITT_OLLAMA or the engine config's `binary` to its \
               `ollama` executable"
            .to_owned(),
    }
}

/// The binary's own version from `ollama --version` (which prints
/// `ollama version is 0.5.7`, or warnings and `client version is 0.5.7`
/// when no server answers).
pub fn version(binary: &Path) -> Option<String> {
    let output = std::process::Command::new(binary)
        .arg("--version")
        // Ask no server of the user's: only the client's version is wanted.
        .env("OLLAMA_HOST", "127.0.0.1:1")
        .stdin(std::process::Stdio::null())
        .output()
        .ok()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    parse_version(&text)
}

fn parse_version(text: &str) -> Option<String> {
    let after = |marker: &str| {
        text.lines().find_map(|line| {
            let (_, version) = line.split_once(marker)?;
            Some(version.trim().to_owned()).filter(|version| !version.is_empty())
        })
    };
    after("client version is ").or_else(|| after("version is "))
}

/// The port `ollama serve` listens on inside its container.
const CONTAINER_PORT: u16 = 11434;

/// The named volume that holds the models of Ollama's containers.
pub const VOLUME: &str = "kitt-ollama";

/// Where the official image keeps Ollama's data (the store is `models` in it).
const VOLUME_PATH: &str = "/root/.ollama";

/// Starts `ollama serve` (natively, or in a container in Docker mode), makes
/// the model ready, loads and warms it up.
pub async fn start(launch: &Launch<'_>) -> Result<Running, EngineError> {
    let keep_alive = settings::keep_alive(
        launch.config.keep_alive.as_deref().unwrap_or(settings::DEFAULT_KEEP_ALIVE),
    )
    .map_err(|reason| EngineError::InvalidSetting { key: "keep_alive", reason })?;
    let extra = settings::extra_environment(&launch.config.extra_args)
        .map_err(|reason| EngineError::InvalidSetting { key: "extra_args", reason })?;
    let env = settings::environment(launch, &keep_alive, extra);
    let server = match launch.config.mode {
        EngineMode::Native => start_native(launch, env).await?,
        EngineMode::Docker => start_in_docker(launch, env).await?,
    };
    let Server { mut handle, base_url, port, mut recorded, docker, binary } = server;
    let api = Api::new(&base_url).map_err(|error| EngineError::Unreachable {
        url: base_url.clone(),
        reason: error.to_string(),
    })?;

    let prepared = match serve(&mut handle, &api, launch, &keep_alive, port).await {
        Ok(prepared) => prepared,
        Err(error) => {
            handle.discard().await;
            return Err(error);
        }
    };
    let options = settings::options(launch);
    recorded.extend(settings::recorded(&options, &keep_alive));
    recorded.insert("port".into(), port.to_string());
    recorded.insert("model_bytes".into(), prepared.size_bytes.to_string());
    recorded.extend(prepared.recorded);
    let mut comparability = settings::comparability(launch, &keep_alive);
    let version = match docker {
        None => prepared.version,
        Some(image) => {
            comparability.insert("engine_mode".into(), format!("docker, image {image}"));
            format!("{} ({image})", prepared.version)
        }
    };
    Ok(Running {
        kind: EngineKind::Ollama,
        base_url,
        served_model: prepared.served,
        version,
        binary,
        parameters: recorded,
        request_extras: settings::request_extras(&options, &keep_alive),
        comparability,
        protocol: Protocol::Ollama,
        handle: Some(handle),
        port: Some(port),
        cleanup: prepared.owned.map(Cleanup::OllamaModel),
    })
}

/// A started `ollama serve`, not yet known to answer.
struct Server {
    handle: EngineHandle,
    base_url: String,
    /// The loopback port that reaches it.
    port: u16,
    /// Its environment and where its store is, for the result.
    recorded: BTreeMap<String, String>,
    /// The digest reference of its image, in Docker mode.
    docker: Option<String>,
    binary: Option<PathBuf>,
}

/// Runs `ollama serve` with `env` on a free loopback port.
async fn start_native(
    launch: &Launch<'_>,
    env: Vec<(String, String)>,
) -> Result<Server, EngineError> {
    let binary = find_binary(launch.config.binary.as_deref())?;
    let port = port::free_port().map_err(EngineError::Io)?;
    let host = format!("127.0.0.1:{port}");
    let mut spawn_env = env.clone();
    spawn_env.push(("OLLAMA_HOST".to_owned(), host.clone()));
    spawn_env.extend(launch.device_env());

    tracing::info!(port, model = ?launch.model_path, "starting ollama serve");
    let process =
        EngineProcess::spawn(&binary, &["serve".to_owned()], &spawn_env, &launch.log_path)
            .map_err(EngineError::Io)?;
    let mut recorded: BTreeMap<String, String> = inherited().collect();
    recorded.extend(env);
    if !recorded.contains_key("OLLAMA_MODELS") {
        let store = crate::acquire::local::ollama_models_dir();
        recorded.insert("models_dir".into(), store.display().to_string());
    }
    let base_url = format!("http://{host}");
    let handle = process.into();
    Ok(Server { handle, base_url, port, recorded, docker: None, binary: Some(binary) })
}

/// Runs the official image, whose entry point is `ollama`, with `env`, the
/// other `OLLAMA_*` settings kitt's own environment has (except the host and
/// the store, which are the container's), `OLLAMA_HOST` on every interface
/// of the container, and the [`VOLUME`] as its store.
async fn start_in_docker(
    launch: &Launch<'_>,
    env: Vec<(String, String)>,
) -> Result<Server, EngineError> {
    let docker = docker::cli()?;
    let gpus = launch.container_gpus();
    let image = docker::image_for(EngineKind::Ollama, launch.config.image.as_deref(), &gpus)?;
    let mut spec = ContainerSpec::new(image, CONTAINER_PORT);
    spec.args = vec!["serve".to_owned()];
    let set_by_kitt = |name: &str| name == "OLLAMA_MODELS" || env.iter().any(|(n, _)| n == name);
    spec.env = inherited().filter(|(name, _)| !set_by_kitt(name)).collect();
    spec.env.extend(env);
    spec.env.push(("OLLAMA_HOST".to_owned(), format!("0.0.0.0:{CONTAINER_PORT}")));
    spec.volumes = vec![(VOLUME.to_owned(), VOLUME_PATH.to_owned())];
    spec.gpus = gpus;

    let container = Container::start(docker, &spec, launch).await?;
    let mut recorded: BTreeMap<String, String> = spec.env.iter().cloned().collect();
    recorded.remove("OLLAMA_HOST");
    recorded.insert("models_dir".into(), format!("docker volume {VOLUME} ({VOLUME_PATH}/models)"));
    recorded.extend(container.parameters(&spec));
    let image = container.image().reference().to_owned();
    let (base_url, port) = (container.base_url(), container.host_port());
    let handle = container.into();
    Ok(Server { handle, base_url, port, recorded, docker: Some(image), binary: None })
}

/// The `OLLAMA_*` variables of kitt's environment but `OLLAMA_HOST`, which is kitt's choice.
fn inherited() -> impl Iterator<Item = (String, String)> {
    std::env::vars_os().filter_map(|(name, value)| {
        let name = name.into_string().ok().filter(|name| name.starts_with("OLLAMA_"))?;
        let value = value.to_string_lossy().into_owned();
        (name != "OLLAMA_HOST").then_some((name, value))
    })
}

/// The model kitt will ask for, ready and warm, and the server's version.
struct Served {
    version: String,
    served: String,
    size_bytes: u64,
    owned: Option<OwnedModel>,
    recorded: BTreeMap<String, String>,
}

/// Waits until the server answers, makes the model ready, loads and warms
/// it up; the server ending at any step is [`EngineError::Died`].
async fn serve(
    handle: &mut EngineHandle,
    api: &Api,
    launch: &Launch<'_>,
    keep_alive: &Value,
    port: u16,
) -> Result<Served, EngineError> {
    let version = wait_until_ready(handle, api, launch.ready_deadline()).await?;
    if let Some(process) = handle.process() {
        check_port_owner(process, port)?;
    }

    let mut reporter = Reporter::new(launch.progress.clone(), &launch.log_path);
    let prepared = while_alive(handle, api, model::prepare(api, launch, &mut reporter)).await?;
    let options = settings::options(launch);
    let deadline = launch.ready_deadline().max(ready_deadline_for(prepared.size_bytes));
    let warm = model::load_and_warm_up(
        api,
        &prepared.served,
        &options,
        keep_alive,
        deadline,
        &mut reporter,
    );
    if let Err(error) = while_alive(handle, api, warm).await {
        if let Some(owned) = prepared.owned {
            owned.remove().await;
        }
        return Err(error);
    }
    let Prepared { served, size_bytes, owned, recorded } = prepared;
    Ok(Served { version, served, size_bytes, owned, recorded })
}

/// Waits until `GET /api/version` answers; its version.
async fn wait_until_ready(
    handle: &mut EngineHandle,
    api: &Api,
    deadline: Duration,
) -> Result<String, EngineError> {
    let started = Instant::now();
    let mut delay = Duration::from_millis(20);
    loop {
        if let Some(status) = handle.exited().await {
            return Err(died(handle, status));
        }
        match api.version().await {
            Ok(version) => return Ok(version),
            Err(error) => tracing::debug!("ollama not answering yet: {error}"),
        }
        if started.elapsed() > deadline {
            return Err(EngineError::NotReady { waited: deadline, log_tail: handle.log_tail(20) });
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(500));
    }
}

/// How long a server that stopped answering may take to be seen ending: a
/// container's end reaches kitt through Docker.
const ENDING: Duration = Duration::from_secs(5);

/// Runs one start-up step, turning the server's end during it into
/// [`EngineError::Died`] whatever error the step itself saw.
async fn while_alive<T>(
    handle: &mut EngineHandle,
    api: &Api,
    step: impl Future<Output = Result<T, EngineError>>,
) -> Result<T, EngineError> {
    tokio::pin!(step);
    let mut ticker = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            result = &mut step => {
                // A request cut by the server's death fails before its end is
                // seen; a server that still answers made the step fail itself.
                if result.is_err() && api.version().await.is_err() {
                    let deadline = Instant::now() + ENDING;
                    while Instant::now() < deadline {
                        if let Some(status) = handle.exited().await {
                            return Err(died(handle, status));
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
                return result;
            }
            _ = ticker.tick() => {
                if let Some(status) = handle.exited().await {
                    return Err(died(handle, status));
                }
            }
        }
    }
}

fn died(handle: &EngineHandle, status: String) -> EngineError {
    EngineError::Died { status, log_tail: handle.log_tail(20) }
}

fn check_port_owner(process: &EngineProcess, port: u16) -> Result<(), EngineError> {
    let members = super::process::group_members(process.pid());
    match port::port_owned_by(port, &members) {
        Some(false) => Err(EngineError::PortNotOwned { port }),
        Some(true) | None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_output_with_and_without_a_server() {
        assert_eq!(parse_version("ollama version is 0.5.7\n").as_deref(), Some("0.5.7"));
        let no_server = "Warning: could not connect to a running Ollama instance\n\
                         Warning: client version is 0.6.8\n";
        assert_eq!(parse_version(no_server).as_deref(), Some("0.6.8"));
        assert_eq!(parse_version("command not found"), None);
    }
}
