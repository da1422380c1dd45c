//! Ollama as a native process (`ollama serve`).
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
//! Only [`start`] knows about the process: [`api`], [`model`] and
//! [`settings`] work against a base URL, so a Docker mode can reuse them.
//! The process dying at any step is [`EngineError::Died`] with its log tail.

pub mod api;
pub mod model;
pub mod settings;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::llama_cpp::{executable, on_path};
use super::process::{EngineProcess, STOP_GRACE};
use super::{Cleanup, EngineError, EngineKind, Launch, Running, port, ready_deadline_for};
use crate::measure::Protocol;
use api::Api;
pub use model::{Imported, check_tag, normalise_tag};
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

/// Starts `ollama serve`, makes the model ready, loads and warms it up.
pub async fn start(launch: &Launch<'_>) -> Result<Running, EngineError> {
    let binary = find_binary(launch.config.binary.as_deref())?;
    let keep_alive = settings::keep_alive(
        launch.config.keep_alive.as_deref().unwrap_or(settings::DEFAULT_KEEP_ALIVE),
    )
    .map_err(|reason| EngineError::InvalidSetting { key: "keep_alive", reason })?;
    let extra = settings::extra_environment(&launch.config.extra_args)
        .map_err(|reason| EngineError::InvalidSetting { key: "extra_args", reason })?;
    let env = settings::environment(launch, &keep_alive, extra);
    let port = port::free_port().map_err(EngineError::Io)?;
    let host = format!("127.0.0.1:{port}");
    let mut spawn_env = env.clone();
    spawn_env.push(("OLLAMA_HOST".to_owned(), host.clone()));

    tracing::info!(port, model = ?launch.model_path, "starting ollama serve");
    let mut process =
        EngineProcess::spawn(&binary, &["serve".to_owned()], &spawn_env, &launch.log_path)
            .map_err(EngineError::Io)?;
    let base_url = format!("http://{host}");
    let api = Api::new(&base_url).map_err(|error| EngineError::Unreachable {
        url: base_url.clone(),
        reason: error.to_string(),
    })?;
    let version = wait_until_ready(&mut process, &api, launch.ready_deadline()).await?;
    check_port_owner(&process, port)?;

    let mut reporter = Reporter::new(launch.progress.clone(), &launch.log_path);
    let prepared = while_alive(&mut process, model::prepare(&api, launch, &mut reporter)).await?;
    let options = settings::options(launch);
    let deadline = launch.ready_deadline().max(ready_deadline_for(prepared.size_bytes));
    let served = prepared.served.clone();
    let warm =
        model::load_and_warm_up(&api, &served, &options, &keep_alive, deadline, &mut reporter);
    if let Err(error) = while_alive(&mut process, warm).await {
        if let Some(imported) = prepared.imported {
            imported.remove().await;
        }
        return Err(error);
    }

    let parameters = recorded(&options, &keep_alive, &env, port, &prepared);
    Ok(Running {
        kind: EngineKind::Ollama,
        base_url,
        served_model: served,
        version,
        binary: Some(binary),
        parameters,
        request_extras: settings::request_extras(&options, &keep_alive),
        comparability: settings::comparability(launch, &keep_alive),
        protocol: Protocol::Ollama,
        handle: Some(process.into()),
        port: Some(port),
        cleanup: prepared.imported.map(Cleanup::OllamaModel),
    })
}

/// The result's parameters: request options, the server's environment
/// (inherited `OLLAMA_*` variables included; `OLLAMA_HOST` is the port), the
/// model store when `OLLAMA_MODELS` does not name it, the model's size in the
/// store, and what `prepare` recorded.
fn recorded(
    options: &serde_json::Map<String, Value>,
    keep_alive: &Value,
    env: &[(String, String)],
    port: u16,
    prepared: &Prepared,
) -> BTreeMap<String, String> {
    let mut recorded = settings::recorded(options, keep_alive);
    let inherited = std::env::vars_os().filter_map(|(name, value)| {
        let name = name.into_string().ok().filter(|name| name.starts_with("OLLAMA_"))?;
        Some((name, value.to_string_lossy().into_owned()))
    });
    recorded.extend(inherited.filter(|(name, _)| name != "OLLAMA_HOST"));
    recorded.extend(env.iter().cloned());
    if !recorded.contains_key("OLLAMA_MODELS") {
        let store = crate::acquire::local::ollama_models_dir();
        recorded.insert("models_dir".into(), store.display().to_string());
    }
    recorded.insert("port".into(), port.to_string());
    recorded.insert("model_bytes".into(), prepared.size_bytes.to_string());
    recorded.extend(prepared.recorded.clone());
    recorded
}

/// Waits until `GET /api/version` answers; its version.
async fn wait_until_ready(
    process: &mut EngineProcess,
    api: &Api,
    deadline: Duration,
) -> Result<String, EngineError> {
    let started = Instant::now();
    let mut delay = Duration::from_millis(20);
    loop {
        if let Some(status) = process.exited() {
            return Err(died(process, status));
        }
        match api.version().await {
            Ok(version) => return Ok(version),
            Err(error) => tracing::debug!("ollama not answering yet: {error}"),
        }
        if started.elapsed() > deadline {
            let _ = process.stop(STOP_GRACE).await;
            return Err(EngineError::NotReady { waited: deadline, log_tail: process.log_tail(20) });
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(500));
    }
}

/// Runs one start-up step, turning the process's death during it into
/// [`EngineError::Died`] whatever error the step itself saw.
async fn while_alive<T>(
    process: &mut EngineProcess,
    step: impl Future<Output = Result<T, EngineError>>,
) -> Result<T, EngineError> {
    tokio::pin!(step);
    let mut ticker = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            result = &mut step => {
                if result.is_err() {
                    // A request cut by the death may fail a moment before the exit is seen.
                    for _ in 0..10 {
                        if let Some(status) = process.exited() {
                            return Err(died(process, status));
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
                return result;
            }
            _ = ticker.tick() => {
                if let Some(status) = process.exited() {
                    return Err(died(process, status));
                }
            }
        }
    }
}

fn died(process: &EngineProcess, status: std::process::ExitStatus) -> EngineError {
    EngineError::Died { status: status.to_string(), log_tail: process.log_tail(20) }
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
