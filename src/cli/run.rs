//! `kitt run`: one suite against one model on one engine, and `kitt engines list`.

use std::io::Write;
use std::path::Path;

use comfy_table::Table;
use comfy_table::presets::UTF8_FULL_CONDENSED;

use super::{EngineArgs, RunCmd};
use crate::acquire::local::{LocalIndex, hf_cache_dir, storage_root};
use crate::config::{EngineConfig, EngineMode, did_you_mean, engine_limits as limits, expand_home};
use crate::engine::{EngineError, EngineKind};
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
    "extra_args",
    "profile",
    "mode",
    "image",
];

/// `--engine-config` keys for a server kitt connects to.
const EXTERNAL_KEYS: &[&str] = &["base_url", "model"];

/// `kitt run -m MODEL -e ENGINE …`.
pub fn run(args: &RunCmd, home: &Path, json: bool) -> Result<Exit, KittError> {
    let engine = EngineKind::parse(&args.engine)
        .ok_or_else(|| unknown("engine", &args.engine, EngineKind::NAMES))?;
    if !matches!(engine, EngineKind::LlamaCpp | EngineKind::Openai) {
        return Err(KittError::Usage(format!(
            "engine `{engine}` cannot be started by this version of kitt yet (usable: llama_cpp, openai)"
        )));
    }
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
    let output_root = args.output.clone().unwrap_or_else(|| home.to_owned());

    let request = RunRequest {
        id: crate::run::new_id(),
        campaign: None,
        model: &model,
        engine,
        config: &config,
        suite: &suite,
        home,
        output_root,
        phases: None,
        defer_store: false,
    };
    crate::campaign::coordinator::reap_orphan_engines();
    let outcome = block_on_interruptible(|cancel| async move { execute(&request, &cancel).await })?;

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
        Err(RunError::Engine(error @ EngineError::Io(_))) => {
            Err(KittError::Environment(with_causes(&error)))
        }
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
        } else {
            EXTERNAL_KEYS.contains(&key).then_some("kitt starts this engine itself")
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
            "mode" => {
                return Err(KittError::Usage(format!(
                    "--engine-config mode `{value}`: only `native` is available"
                )));
            }
            "image" => config.image = Some(value.to_owned()),
            "base_url" => config.base_url = Some(value.to_owned()),
            "model" => config.model = Some(value.to_owned()),
            "context_size" => config.context_size = Some(number(limits::CONTEXT_SIZE)? as u32),
            "gpu_layers" => config.gpu_layers = Some(number(limits::GPU_LAYERS)? as i32),
            "parallel" => config.parallel = Some(number(limits::PARALLEL)? as u32),
            "threads" => config.threads = Some(number(limits::THREADS)? as u32),
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

/// `kitt engines list`.
pub fn engines_list(_args: &EngineArgs, json: bool) -> Result<Exit, KittError> {
    let rows: Vec<(EngineKind, bool, String)> =
        EngineKind::ALL.iter().map(|kind| availability(*kind)).collect();
    let mut out = std::io::stdout().lock();
    let written = if json {
        let list: Vec<serde_json::Value> = rows
            .iter()
            .map(|(kind, usable, why)| {
                let formats: Vec<&str> = kind.formats().iter().map(|f| f.name()).collect();
                serde_json::json!({"engine": kind.name(), "formats": formats, "usable": usable, "detail": why})
            })
            .collect();
        serde_json::to_writer_pretty(&mut out, &list)
            .map_err(std::io::Error::other)
            .and_then(|()| writeln!(out))
    } else {
        let mut table = Table::new();
        table.load_style(UTF8_FULL_CONDENSED);
        table.set_header(["engine", "formats", "usable here", "detail"]);
        for (kind, usable, why) in &rows {
            let formats: Vec<&str> = kind.formats().iter().map(|f| f.name()).collect();
            let formats = if formats.is_empty() {
                "whatever its server serves".to_owned()
            } else {
                formats.join(", ")
            };
            table.add_row([kind.name(), &formats, if *usable { "yes" } else { "no" }, why]);
        }
        writeln!(out, "{table}")
    };
    written.map_err(KittError::Output)?;
    Ok(Exit::Success)
}

fn availability(kind: EngineKind) -> (EngineKind, bool, String) {
    match kind {
        EngineKind::LlamaCpp => match crate::engine::llama_cpp::find_binary(None) {
            Ok(path) => (
                kind,
                true,
                format!("{} ({})", path.display(), crate::engine::llama_cpp::version(&path)),
            ),
            Err(error) => (kind, false, error.to_string()),
        },
        EngineKind::Openai => {
            (kind, true, "connects to a running server: --engine-config base_url=URL".into())
        }
        other => (other, false, "not supported by this version of kitt yet".into()),
    }
}
