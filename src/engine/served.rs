//! Engines kitt starts as OpenAI-compatible HTTP servers: vLLM, SGLang,
//! ExLlamaV2 through TabbyAPI, and `mlx_lm.server`.
//!
//! Each engine module says what differs as a [`ServerPlan`]: its command line,
//! the path that answers once it is up, how the served model is checked, the
//! request fields that make numbers comparable, and the log lines that mean
//! it ran out of memory. This module does the rest the same way for all of
//! them: spawn the program with its log captured, wait until it is up and
//! actually serves (a one-token chat request succeeds), check that the
//! process kitt started owns the port and serves the model asked for, and
//! read a failed start-up from the log. Measuring is not done here.
//!
//! The start command is data ([`StartCommand`]), and the readiness steps take
//! a base URL and a [`Liveness`], so a container runner can reuse them.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};

use super::process::{EngineProcess, STOP_GRACE};
use super::{EngineError, EngineKind, Format, Launch, Running};

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
    /// The loopback port kitt chose.
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
    pub fn new(kind: EngineKind, program: PathBuf, port: u16) -> Self {
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

    /// Where the server answers.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// A server kitt started that is up, owns its port and serves the model asked for.
#[derive(Debug)]
pub struct Started {
    process: EngineProcess,
    base_url: String,
}

impl Started {
    /// Its base URL.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The [`Running`] engine, with `version` and everything `plan` records.
    pub fn into_running(self, plan: ServerPlan, version: String) -> Running {
        Running {
            kind: plan.kind,
            base_url: self.base_url,
            served_model: plan.served_model.clone(),
            version,
            binary: Some(plan.program.clone()),
            parameters: plan.parameters(),
            request_extras: plan.request_extras,
            comparability: plan.comparability,
            protocol: crate::measure::Protocol::OpenAi,
            handle: Some(self.process.into()),
            port: Some(plan.port),
            cleanup: None,
        }
    }
}

/// Starts the server of `plan` and waits until it serves; stops it again
/// when any step fails.
pub async fn launch(plan: &ServerPlan, launch: &Launch<'_>) -> Result<Started, EngineError> {
    let command = plan.command();
    tracing::info!(engine = %plan.kind, port = plan.port, "starting {}", plan.kind);
    let mut process = EngineProcess::spawn_in(
        &command.program,
        &command.args,
        &command.env,
        command.dir.as_deref(),
        &launch.log_path,
    )
    .map_err(EngineError::Io)?;
    let base_url = plan.base_url();
    let readied = ready(plan, &mut process, &base_url, launch.ready_deadline()).await;
    if let Err(error) = readied {
        let _ = process.stop(STOP_GRACE).await;
        return Err(error);
    }
    tracing::info!(engine = %plan.kind, port = plan.port, "{} is serving", plan.kind);
    Ok(Started { process, base_url })
}

async fn ready(
    plan: &ServerPlan,
    process: &mut EngineProcess,
    base_url: &str,
    waited: Duration,
) -> Result<(), EngineError> {
    let deadline = Instant::now() + waited;
    let mut alive = Native { process, signs: plan.memory_signs, settings: &plan.memory_settings };
    wait_until_up(base_url, plan.ready_path, &mut alive, deadline, waited).await?;
    super::llama_cpp::check_port_owner(alive.process, plan.port)?;
    check_served_model(base_url, &plan.model_check).await?;
    wait_until_serving(base_url, &plan.served_model, &mut alive, deadline, waited).await
}

/// What readiness polling needs from whatever runs the server.
pub trait Liveness {
    /// `Err` with the reason (read from its log) when the server has stopped.
    fn check(&mut self) -> Result<(), EngineError>;
    /// The error for a server still not ready after `waited`.
    fn not_ready(&self, waited: Duration) -> EngineError;
}

/// A native process and the memory errors its log may show.
struct Native<'a> {
    process: &'a mut EngineProcess,
    signs: &'static [MemorySign],
    settings: &'a str,
}

impl Liveness for Native<'_> {
    fn check(&mut self) -> Result<(), EngineError> {
        let Some(status) = self.process.exited() else { return Ok(()) };
        let log = self.process.log_tail(LOG_SEARCH_LINES);
        Err(out_of_memory(self.signs, self.settings, &log).unwrap_or_else(|| EngineError::Died {
            status: status.to_string(),
            log_tail: last_lines(&log, 20),
        }))
    }

    fn not_ready(&self, waited: Duration) -> EngineError {
        let log = self.process.log_tail(LOG_SEARCH_LINES);
        out_of_memory(self.signs, self.settings, &log)
            .unwrap_or_else(|| EngineError::NotReady { waited, log_tail: last_lines(&log, 20) })
    }
}

/// How far back in the log a memory error is looked for.
const LOG_SEARCH_LINES: usize = 400;

/// Polls `GET {base_url}{path}` until it answers 2xx.
pub async fn wait_until_up(
    base_url: &str,
    path: &str,
    alive: &mut impl Liveness,
    deadline: Instant,
    waited: Duration,
) -> Result<(), EngineError> {
    let client = http_client(Duration::from_secs(5))?;
    let url = format!("{base_url}{path}");
    poll(alive, deadline, waited, || get_ok(&client, &url)).await
}

/// Sends one-token chat requests until one succeeds: some servers answer
/// their health check before the engine behind them serves.
pub async fn wait_until_serving(
    base_url: &str,
    model: &str,
    alive: &mut impl Liveness,
    deadline: Instant,
    waited: Duration,
) -> Result<(), EngineError> {
    let client = http_client(Duration::from_secs(60))?;
    let url = format!("{base_url}/v1/chat/completions");
    let body = json!({
        "model": model,
        "messages": [{"role": "user", "content": "Hello"}],
        "max_tokens": 1,
        "temperature": 0,
        "stream": false,
    });
    poll(alive, deadline, waited, || one_token(&client, &url, &body)).await
}

async fn poll<F, Fut>(
    alive: &mut impl Liveness,
    deadline: Instant,
    waited: Duration,
    mut attempt: F,
) -> Result<(), EngineError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let mut delay = Duration::from_millis(50);
    loop {
        alive.check()?;
        match attempt().await {
            Ok(()) => return Ok(()),
            Err(reason) => tracing::debug!("engine not ready yet: {reason}"),
        }
        // The attempt may have failed because the server just died.
        alive.check()?;
        if Instant::now() > deadline {
            return Err(alive.not_ready(waited));
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(500));
    }
}

fn http_client(timeout: Duration) -> Result<reqwest::Client, EngineError> {
    reqwest::Client::builder()
        .timeout(timeout)
        .build()
        .map_err(|error| EngineError::Io(std::io::Error::other(error)))
}

async fn get_ok(client: &reqwest::Client, url: &str) -> Result<(), String> {
    let response = client.get(url).send().await.map_err(|error| error.to_string())?;
    let status = response.status();
    if status.is_success() { Ok(()) } else { Err(format!("{url}: HTTP {}", status.as_u16())) }
}

async fn one_token(client: &reqwest::Client, url: &str, body: &Value) -> Result<(), String> {
    let response = client.post(url).json(body).send().await.map_err(|error| error.to_string())?;
    let status = response.status();
    let text = response.text().await.map_err(|error| error.to_string())?;
    let answered = serde_json::from_str::<Value>(&text)
        .is_ok_and(|reply| reply["choices"].as_array().is_some_and(|c| !c.is_empty()));
    if status.is_success() && answered {
        return Ok(());
    }
    let excerpt: String = text.chars().take(200).collect();
    Err(format!("one-token request: HTTP {}: {excerpt}", status.as_u16()))
}

/// Checks that the server serves the model asked for.
pub async fn check_served_model(base_url: &str, check: &ModelCheck) -> Result<(), EngineError> {
    match check {
        ModelCheck::StartedWith => Ok(()),
        ModelCheck::Listed(expected) => {
            let served = super::served_models(base_url).await?;
            if served.contains(expected) {
                Ok(())
            } else {
                Err(EngineError::WrongModel { expected: expected.clone(), served })
            }
        }
        ModelCheck::Loaded(expected) => {
            let url = format!("{base_url}/v1/model");
            let loaded = json_field(&url, "id").await.ok_or_else(|| EngineError::Unreachable {
                url: url.clone(),
                reason: "no loaded model id in the answer".into(),
            })?;
            if &loaded == expected {
                Ok(())
            } else {
                Err(EngineError::WrongModel { expected: expected.clone(), served: vec![loaded] })
            }
        }
    }
}

/// A text field of the JSON object `GET url` answers, if any.
pub async fn json_field(url: &str, field: &str) -> Option<String> {
    let client = http_client(Duration::from_secs(10)).ok()?;
    let response = client.get(url).send().await.ok()?;
    if !response.status().is_success() {
        return None;
    }
    let body: Value = response.json().await.ok()?;
    body[field].as_str().map(str::to_owned).filter(|text| !text.is_empty())
}

/// The out-of-memory error `log` shows, from its last line that matches a sign.
pub fn out_of_memory(signs: &[MemorySign], settings: &str, log: &str) -> Option<EngineError> {
    let lines: Vec<&str> = log.lines().collect();
    let (at, sign) = lines.iter().enumerate().rev().find_map(|(at, line)| {
        signs.iter().find(|sign| line.contains(sign.needle)).map(|sign| (at, sign))
    })?;
    let hint = if settings.is_empty() {
        sign.hint.to_owned()
    } else {
        format!("{} (this run: {settings})", sign.hint)
    };
    Some(EngineError::OutOfMemory {
        cause: sign.cause.to_owned(),
        hint,
        log_tail: lines[at.saturating_sub(19)..=at].join("\n"),
    })
}

fn last_lines(log: &str, count: usize) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(count)..].join("\n")
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

    const SIGNS: &[MemorySign] = &[
        MemorySign { needle: "KV cache", cause: "kv", hint: "lower `context_size`" },
        MemorySign { needle: "out of memory", cause: "oom", hint: "use a smaller quant" },
    ];

    #[test]
    fn the_last_matching_line_decides_and_ends_the_tail() {
        let log = "loading\nCUDA out of memory\nmore\n\
                   ValueError: max seq len larger than KV cache\n\
                   RuntimeError: Engine core initialization failed\n";
        let Some(EngineError::OutOfMemory { cause, hint, log_tail }) =
            out_of_memory(SIGNS, "max-model-len 4096", log)
        else {
            panic!("not classified");
        };
        assert_eq!(cause, "kv");
        assert_eq!(hint, "lower `context_size` (this run: max-model-len 4096)");
        assert!(log_tail.ends_with("larger than KV cache"), "{log_tail}");
        assert!(out_of_memory(SIGNS, "", "Segmentation fault\n").is_none());
    }

    #[test]
    fn the_command_line_is_leading_flags_then_extra_args() {
        let mut plan = ServerPlan::new(EngineKind::Vllm, "vllm".into(), 8000);
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
