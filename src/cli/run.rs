//! `kitt run`: one suite against one model on one engine, and `kitt engines list`.

use std::io::Write;
use std::path::Path;

use comfy_table::Table;
use comfy_table::presets::UTF8_FULL_CONDENSED;

use super::{EngineArgs, RunCmd};
use crate::acquire::local::{LocalIndex, hf_cache_dir, storage_root};
use crate::config::{
    EngineConfig, EngineMode, Gpus, did_you_mean, engine_limits as limits, expand_home,
};
use crate::engine::{EngineError, EngineKind, docker};
use crate::error::with_causes;
use crate::error::{Exit, KittError};
use crate::results::model::{BenchmarkStatus, RunResult};
use crate::run::signals::block_on_interruptible;
use crate::run::{RunError, RunRequest, execute, resolve_model};
use crate::suite::Suite;

/// `--engine-config` keys for engines kitt starts.
const STARTED_KEYS: &[&str] = &[
    "binary",
    "context_size",
    "gpu_layers",
    "parallel",
    "threads",
    "gpu_memory_utilization",
    "tensor_parallel_size",
    "tokenizer",
    "extra_args",
    "profile",
    "mode",
    "image",
    "keep_alive",
    "gpus",
];

/// `--engine-config` keys for a server kitt connects to.
const EXTERNAL_KEYS: &[&str] = &["base_url", "model"];

/// `kitt run -m MODEL -e ENGINE …`.
pub fn run(args: &RunCmd, home: &Path, json: bool) -> Result<Exit, KittError> {
    let engine = EngineKind::parse(&args.engine)
        .ok_or_else(|| unknown("engine", &args.engine, EngineKind::NAMES))?;
    let config = engine_config(engine, &args.engine_config, home)?;
    let mut suite =
        Suite::load(&args.suite, home).map_err(|error| KittError::Usage(error.to_string()))?;
    if let Some(limit) = args.limit {
        suite.limit_quality(limit);
    }
    let (root, _) = storage_root(None);
    let local = LocalIndex::new(root, hf_cache_dir());
    let model = resolve_model(&args.model, args.quant.as_deref(), engine, &local)
        .map_err(|error| KittError::Usage(error.to_string()))?;
    let tokenizer = config.tokenizer.as_deref().or(model.tokenizer.as_deref());
    if let Some(reason) =
        crate::engine::served::model_refusal(engine, model.format, &model.path, tokenizer)
    {
        return Err(KittError::Usage(format!(
            "engine `{engine}` cannot load `{}`: {reason}",
            model.path.display()
        )));
    }
    let output_root = args.output.clone().unwrap_or_else(|| home.to_owned());

    let (phases, mut phase_lines) = tokio::sync::mpsc::unbounded_channel();
    let request = RunRequest {
        id: crate::run::new_id(),
        campaign: None,
        model: &model,
        engine,
        config: &config,
        suite: &suite,
        home,
        output_root,
        phases: Some(phases),
        beside: None,
        defer_store: false,
        pulls: crate::engine::pulls::PullRules::from_env(),
        context: None,
        devices: None,
        cpu_threads: None,
    };
    crate::campaign::coordinator::reap_orphan_engines();
    let outcome = block_on_interruptible(|cancel| async move {
        // Phases (engine start, image pull, each benchmark) as plain lines on
        // stderr; stdout carries only the result.
        let printer = tokio::spawn(async move {
            while let Some(phase) = phase_lines.recv().await {
                eprintln!("{}", phase.text);
            }
        });
        let outcome = execute(&request, &cancel).await;
        drop(request);
        let _ = printer.await;
        outcome
    })?;

    match outcome {
        Ok(outcome) => {
            let mut out = std::io::stdout().lock();
            let written = if json {
                write_json(&mut out, &outcome.result, &outcome.run_dir)
            } else {
                write_table(&mut out, &outcome.result, &outcome.run_dir)
            };
            written.and_then(|()| out.flush()).map_err(KittError::Output)?;
            Ok(if outcome.result.passed { Exit::Success } else { Exit::RunsFailed })
        }
        Err(RunError::Interrupted) => Err(KittError::Interrupted),
        Err(RunError::Engine(error @ EngineError::BinaryMissing { .. })) => {
            Err(KittError::Environment(error.to_string()))
        }
        Err(RunError::Engine(
            error @ (EngineError::Io(_) | EngineError::Docker(_) | EngineError::NoImage { .. }),
        )) => Err(KittError::Environment(with_causes(&error))),
        Err(error @ (RunError::Store(_) | RunError::Output { .. })) => {
            Err(KittError::Environment(with_causes(&error)))
        }
        Err(error) => Err(KittError::RunFailed(with_causes(&error))),
    }
}

/// Refuses keys that mean nothing for `kind`: kitt never starts an `openai`
/// server, and starts every other engine on a port it chooses.
fn check_applicable(kind: EngineKind, pairs: &[String]) -> Result<(), KittError> {
    for key in pairs.iter().filter_map(|pair| pair.split_once('=').map(|(key, _)| key)) {
        let refused = if kind == EngineKind::Openai {
            STARTED_KEYS.contains(&key).then_some("kitt does not start an `openai` server")
        } else if EXTERNAL_KEYS.contains(&key) {
            Some("kitt starts this engine itself")
        } else {
            crate::engine::keys::refusal(kind, key)
        };
        if let Some(why) = refused {
            return Err(KittError::Usage(format!(
                "--engine-config `{key}` does not apply to `{kind}`: {why}"
            )));
        }
    }
    Ok(())
}

/// "unknown WHAT `given`; did you mean …? (known: …)", exit 2.
fn unknown(what: &str, given: &str, known: &[&str]) -> KittError {
    let near = did_you_mean(given, known.iter().copied());
    let hint = near.map(|n| format!("; did you mean `{n}`?")).unwrap_or_default();
    KittError::Usage(format!("unknown {what} `{given}`{hint} (known: {})", known.join(", ")))
}

/// Builds the engine config from `KEY=VALUE` pairs, with the campaign file's rules.
fn engine_config(
    kind: EngineKind,
    pairs: &[String],
    home: &Path,
) -> Result<EngineConfig, KittError> {
    let mut config = EngineConfig::default();
    let mut profile = None;
    for pair in pairs {
        let (key, value) = pair.split_once('=').ok_or_else(|| {
            KittError::Usage(format!("--engine-config `{pair}` is not KEY=VALUE"))
        })?;
        let number = |(min, max): (i64, i64)| -> Result<i64, KittError> {
            let parsed: i64 = value.parse().map_err(|_| {
                KittError::Usage(format!(
                    "--engine-config `{key}` must be a whole number, got `{value}`"
                ))
            })?;
            if parsed < min || parsed > max {
                return Err(KittError::Usage(format!(
                    "--engine-config `{key}` must be between {min} and {max}, got {parsed}"
                )));
            }
            Ok(parsed)
        };
        match key {
            "binary" => config.binary = Some(expand_home(value)),
            "mode" if value == "native" => config.mode = EngineMode::Native,
            "mode" if value == "docker" && kind.has_docker_mode() => {
                config.mode = EngineMode::Docker;
            }
            "mode" if value == "docker" => {
                return Err(KittError::Usage(format!("engine `{kind}` has no Docker mode")));
            }
            "mode" => {
                return Err(KittError::Usage(format!(
                    "--engine-config mode `{value}` is unknown: use `native` or `docker`"
                )));
            }
            "image" => {
                if let Some(problem) = crate::engine::docker::image_problem(value.trim()) {
                    return Err(KittError::Usage(format!(
                        "--engine-config image `{value}` is not a container image reference: \
                         {problem}"
                    )));
                }
                config.image = Some(value.trim().to_owned());
            }
            "gpus" => {
                let gpus = Gpus::parse(value).map_err(|message| {
                    KittError::Usage(format!("--engine-config gpus `{value}`: {message}"))
                })?;
                config.gpus = Some(gpus);
            }
            "base_url" => config.base_url = Some(value.to_owned()),
            "model" => config.model = Some(value.to_owned()),
            "context_size" => config.context_size = Some(number(limits::CONTEXT_SIZE)? as u32),
            "gpu_layers" => config.gpu_layers = Some(number(limits::GPU_LAYERS)? as i32),
            "parallel" => config.parallel = Some(number(limits::PARALLEL)? as u32),
            "threads" => config.threads = Some(number(limits::THREADS)? as u32),
            "keep_alive" if kind == EngineKind::Ollama => {
                crate::engine::ollama::settings::keep_alive(value).map_err(|reason| {
                    KittError::Usage(format!("--engine-config `keep_alive` {reason}"))
                })?;
                config.keep_alive = Some(value.trim().to_owned());
            }
            "keep_alive" => {
                return Err(KittError::Usage(format!(
                    "--engine-config `keep_alive` does not apply to `{kind}`: only `ollama` has it"
                )));
            }
            "tensor_parallel_size" => {
                config.tensor_parallel_size = Some(number(limits::TENSOR_PARALLEL_SIZE)? as u32);
            }
            "gpu_memory_utilization" => {
                let share = value
                    .parse::<f64>()
                    .ok()
                    .filter(|share| limits::gpu_memory_utilization(*share));
                config.gpu_memory_utilization = Some(share.ok_or_else(|| {
                    KittError::Usage(format!(
                        "--engine-config `gpu_memory_utilization` must be a number above 0 \
                         and at most 1, got `{value}`"
                    ))
                })?);
            }
            "tokenizer" if !value.trim().is_empty() => {
                config.tokenizer = Some(value.trim().to_owned());
            }
            "tokenizer" => {
                return Err(KittError::Usage(
                    "--engine-config `tokenizer` is empty; give a directory or a repository id"
                        .into(),
                ));
            }
            "extra_args" => config.extra_args.extend(value.split_whitespace().map(str::to_owned)),
            "profile" => {
                let loaded = crate::engine::profile::load(value, kind, Some(home))
                    .map_err(|error| KittError::Usage(error.to_string()))?;
                profile = Some(loaded);
            }
            other => {
                let known: Vec<&str> = STARTED_KEYS.iter().chain(EXTERNAL_KEYS).copied().collect();
                return Err(unknown("--engine-config key", other, &known));
            }
        }
    }
    if let Some(profile) = profile {
        profile.apply(&mut config);
    }
    check_applicable(kind, pairs)?;
    if kind == EngineKind::Ollama {
        crate::engine::ollama::settings::extra_environment(&config.extra_args)
            .map_err(|reason| KittError::Usage(format!("--engine-config `extra_args` {reason}")))?;
    }
    let docker_only = [("gpus", config.gpus.is_some()), ("image", config.image.is_some())];
    let misplaced = docker_only.iter().find(|(_, set)| *set).map(|(key, _)| key);
    if let Some(key) = misplaced.filter(|_| config.mode != EngineMode::Docker) {
        return Err(KittError::Usage(format!(
            "--engine-config {key} applies to Docker mode only; add --engine-config mode=docker"
        )));
    }
    if let Some(url) = &config.base_url {
        let normalised = crate::acquire::http::base_url(url).ok_or_else(|| {
            let shown = crate::acquire::http::redact_userinfo(url);
            KittError::Usage(format!(
                "--engine-config base_url `{shown}` must be an http(s) URL without query or credentials"
            ))
        })?;
        config.base_url = Some(normalised);
    }
    if kind == EngineKind::Openai && config.base_url.is_none() {
        return Err(KittError::Usage(
            "the `openai` engine needs --engine-config base_url=URL".into(),
        ));
    }
    Ok(config)
}

fn write_json(out: &mut impl Write, result: &RunResult, run_dir: &Path) -> std::io::Result<()> {
    let mut value =
        serde_json::to_value(result.without_requests()).map_err(std::io::Error::other)?;
    value["run_dir"] = serde_json::Value::String(run_dir.display().to_string());
    serde_json::to_writer_pretty(&mut *out, &value)?;
    writeln!(out)
}

/// The metrics worth a glance, in order, with their display names.
const KEY_METRICS: &[(&str, &str)] = &[
    ("peak_output_tokens_per_second", "tok/s (peak)"),
    ("decode_tokens_per_second_p50", "decode tok/s p50"),
    ("ttft_ms_p50", "TTFT p50 ms"),
    ("tpot_ms_p50", "TPOT p50 ms"),
    ("e2e_ms_p50", "E2E p50 ms"),
    ("peak_memory_bytes", "peak memory MiB"),
    ("first_latency_ms", "first request ms"),
    ("accuracy", "accuracy"),
    ("accuracy_stderr", "± stderr"),
    ("accuracy_norm", "accuracy (norm)"),
    ("items", "items"),
    ("correct", "correct"),
    ("error_rate", "error rate"),
];

fn write_table(out: &mut impl Write, result: &RunResult, run_dir: &Path) -> std::io::Result<()> {
    writeln!(out, "Model:  {} ({}, {})", result.model.name, result.model.quant, result.model.path)?;
    writeln!(out, "Engine: {} {}", result.engine.name, result.engine.version)?;
    writeln!(out, "Suite:  {}", result.suite)?;
    let mut table = Table::new();
    table.load_style(UTF8_FULL_CONDENSED);
    table.set_header(["benchmark", "run", "status", "key metrics"]);
    for benchmark in &result.benchmarks {
        let mut status = match &benchmark.status {
            BenchmarkStatus::Passed => "passed".to_owned(),
            BenchmarkStatus::Failed(reason) => format!("failed: {reason}"),
            BenchmarkStatus::NotRun(reason) => format!("not run: {reason}"),
        };
        if let Some(quality) = benchmark.quality.as_ref().filter(|q| q.scoring.is_some()) {
            status.push_str(&format!(" ({})", quality.describe()));
        }
        let metrics: Vec<String> = KEY_METRICS
            .iter()
            .filter_map(|(key, label)| {
                let value = benchmark.metrics.get(*key)?;
                let value = if key.ends_with("_bytes") { value / 1048576.0 } else { *value };
                // Counts read as counts; measurements keep two decimals.
                let whole = matches!(*key, "items" | "correct") && value.fract() == 0.0;
                Some(if whole {
                    format!("{label} {value:.0}")
                } else {
                    format!("{label} {value:.2}")
                })
            })
            .collect();
        table.add_row([
            benchmark.name.clone(),
            benchmark.run_number.to_string(),
            status,
            metrics.join(", "),
        ]);
    }
    writeln!(out, "{table}")?;
    writeln!(out, "Status: {}", if result.passed { "passed" } else { "failed" })?;
    writeln!(out, "Results: {}", run_dir.display())
}

/// One row of `kitt engines list`.
struct Availability {
    kind: EngineKind,
    usable: bool,
    detail: String,
    docker: DockerColumn,
}

/// Whether an engine runs in Docker mode here.
enum DockerColumn {
    /// The engine has no Docker mode.
    None,
    /// Its image, and whether Docker answers.
    Image { image: &'static str, usable: bool },
}

/// Every engine, whether it runs here (natively, else in Docker) and how or
/// why not, as `kitt engines list` shows it; the wizard offers these.
pub(super) fn engine_availability() -> Vec<(EngineKind, bool, String)> {
    let docker_usable = docker::availability().is_ok();
    EngineKind::ALL
        .iter()
        .map(|kind| {
            let row = availability(*kind, docker_usable);
            match row.docker {
                DockerColumn::Image { image, usable: true } if !row.usable => {
                    (row.kind, true, format!("in Docker ({image}); natively: {}", row.detail))
                }
                _ => (row.kind, row.usable, row.detail),
            }
        })
        .collect()
}

/// `kitt engines list`.
pub fn engines_list(_args: &EngineArgs, json: bool) -> Result<Exit, KittError> {
    let docker = docker::availability();
    let docker_usable = docker.is_ok();
    let rows: Vec<Availability> =
        EngineKind::ALL.iter().map(|kind| availability(*kind, docker_usable)).collect();
    let docker_detail = match &docker {
        Ok((program, version)) => format!("server {version} through {}", program.path().display()),
        Err(error) => format!("not usable: {error}"),
    };
    let mut out = std::io::stdout().lock();
    let written = if json {
        write_engines_json(&mut out, &rows, &docker_detail)
    } else {
        write_engines_table(&mut out, &rows, &docker_detail)
    };
    written.map_err(KittError::Output)?;
    Ok(Exit::Success)
}

fn write_engines_json(
    out: &mut impl Write,
    rows: &[Availability],
    docker_detail: &str,
) -> std::io::Result<()> {
    let list: Vec<serde_json::Value> = rows
        .iter()
        .map(|row| {
            let formats: Vec<&str> = row.kind.formats().iter().map(|f| f.name()).collect();
            let docker = match &row.docker {
                DockerColumn::None => serde_json::Value::Null,
                DockerColumn::Image { image, usable } => serde_json::json!({
                    "usable": usable, "image": image, "detail": docker_detail
                }),
            };
            serde_json::json!({
                "engine": row.kind.name(),
                "formats": formats,
                "usable": row.usable,
                "detail": row.detail,
                "docker": docker,
            })
        })
        .collect();
    serde_json::to_writer_pretty(&mut *out, &list).map_err(std::io::Error::other)?;
    writeln!(out)
}

fn write_engines_table(
    out: &mut impl Write,
    rows: &[Availability],
    docker_detail: &str,
) -> std::io::Result<()> {
    let mut table = Table::new();
    table.load_style(UTF8_FULL_CONDENSED);
    table.set_header(["engine", "formats", "native", "docker", "detail"]);
    for row in rows {
        let formats: Vec<&str> = row.kind.formats().iter().map(|f| f.name()).collect();
        let formats = if formats.is_empty() {
            "whatever its server serves".to_owned()
        } else {
            formats.join(", ")
        };
        let docker = match &row.docker {
            DockerColumn::None => "-".to_owned(),
            DockerColumn::Image { image, usable: true } => format!("yes: {image}"),
            DockerColumn::Image { image, usable: false } => format!("no ({image})"),
        };
        let native = if row.usable { "yes" } else { "no" };
        table.add_row([row.kind.name(), &formats, native, &docker, &row.detail]);
    }
    writeln!(out, "{table}")?;
    writeln!(out, "Docker: {docker_detail}")
}

fn availability(kind: EngineKind, docker_usable: bool) -> Availability {
    let docker = match docker::default_image(kind, &Gpus::None) {
        None => DockerColumn::None,
        Some(image) => DockerColumn::Image { image, usable: docker_usable },
    };
    let (usable, detail) = match kind {
        EngineKind::LlamaCpp => match crate::engine::llama_cpp::find_binary(None) {
            Ok(path) => {
                (true, format!("{} ({})", path.display(), crate::engine::llama_cpp::version(&path)))
            }
            Err(error) => (false, error.to_string()),
        },
        EngineKind::Ollama => match crate::engine::ollama::find_binary(None) {
            Ok(path) => {
                let version = crate::engine::ollama::version(&path)
                    .map_or_else(|| "version unknown".to_owned(), |v| format!("version {v}"));
                (true, format!("{} ({version})", path.display()))
            }
            Err(error) => (false, error.to_string()),
        },
        EngineKind::Vllm => served_row(crate::engine::vllm::availability()),
        EngineKind::Sglang => served_row(crate::engine::sglang::availability()),
        EngineKind::Exllamav2 => served_row(crate::engine::tabby::availability()),
        EngineKind::Mlx => served_row(crate::engine::mlx::availability()),
        EngineKind::Openai => {
            (true, "connects to a running server: --engine-config base_url=URL".into())
        }
    };
    Availability { kind, usable, detail, docker }
}

fn served_row(found: Result<String, String>) -> (bool, String) {
    match found {
        Ok(detail) => (true, detail),
        Err(why) => (false, why),
    }
}
