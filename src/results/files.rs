//! The run directory: the files one run leaves for people and scripts.
//!
//! [`write_run_dir`] creates `results/<model>/<engine>/<quant>/<timestamp>/`
//! under a root (the kitt home, or `kitt run -o DIR`) and writes:
//!
//! - `metrics.json`: the [`RunResult`] with each benchmark's `requests` array
//!   left out; the top-level `requests_omitted` and `requests_file` fields say so;
//! - `requests.jsonl`: one request record per line, each with its `benchmark`,
//!   `run_number` and 0-based `index` within that benchmark;
//! - `quality_items.jsonl`, when a quality benchmark ran: one scored item per
//!   line (expected and extracted answer, whether it is correct, the reply),
//!   each with its `benchmark` and `run_number`;
//! - `hardware.json`: the machine, fingerprint included;
//! - `summary.md`: a human summary with the provenance of the numbers;
//! - `engine.log`: a copy of the engine's log, when there is one.
//!
//! Path components are sanitised (no separators, no `..`, no hidden names) and
//! the timestamp is the run's start in UTC (`YYYYmmddTHHMMSSZ`). An existing
//! directory is never reused: a `-2`, `-3`… suffix is added instead. Every file
//! is written to a temporary name and renamed, so a reader never sees half a file.
//! This module does not touch the store.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::measure::record::RequestRecord;
use crate::results::model::{BenchmarkResult, BenchmarkStatus, QualityItem, RunResult};

/// The folder under the root that holds run directories.
pub const RESULTS_DIR: &str = "results";

/// The run directory's file of scored quality items.
pub const QUALITY_ITEMS_FILE: &str = "quality_items.jsonl";

/// Longest sanitised path component, in characters; file systems allow 255 bytes.
const MAX_COMPONENT_CHARS: usize = 96;

/// How many `-N` suffixes to try before giving up on a timestamp.
const MAX_SUFFIX: u32 = 1000;

/// Writes the run directory for `result` under `root` and returns its path.
pub fn write_run_dir(
    root: &Path,
    result: &RunResult,
    engine_log: Option<&Path>,
) -> io::Result<PathBuf> {
    let dir = claim_run_dir(root, result)?;

    write_atomic(&dir, "metrics.json", |out| write_metrics(out, result))?;
    write_atomic(&dir, "requests.jsonl", |out| write_requests(out, result))?;
    if result.benchmarks.iter().any(|benchmark| !benchmark.items.is_empty()) {
        write_atomic(&dir, QUALITY_ITEMS_FILE, |out| write_items(out, result))?;
    }
    write_atomic(&dir, "hardware.json", |out| write_json(out, &result.hardware))?;
    write_atomic(&dir, "summary.md", |out| out.write_all(render_summary(result).as_bytes()))?;
    if let Some(log) = engine_log {
        copy_atomic(log, &dir, "engine.log")?;
    }

    // Make the new directory entries themselves durable.
    File::open(&dir).and_then(|handle| handle.sync_all()).map_err(|e| at(&dir, e))?;
    Ok(dir)
}

/// Turns arbitrary text into one safe path component: path segments are joined
/// with `_` after dropping `.` and `..`; letters, digits, `-`, `_`, `.`, `+` and
/// `@` are kept, anything else becomes `_`; no `..` and no leading or trailing
/// dot remain; empty text becomes `unknown`.
pub fn sanitize_component(text: &str) -> String {
    let joined = text
        .split(['/', '\\'])
        .filter(|segment| !matches!(*segment, "" | "." | ".."))
        .collect::<Vec<_>>()
        .join("_");
    let mut kept: String = joined
        .chars()
        .map(|c| if c.is_alphanumeric() || "-_.+@".contains(c) { c } else { '_' })
        .collect();
    while kept.contains("..") {
        kept = kept.replace("..", "_");
    }

    let short: String = kept.trim_matches('.').chars().take(MAX_COMPONENT_CHARS).collect();
    let short = short.trim_end_matches('.');
    if short.is_empty() { "unknown".to_owned() } else { short.to_owned() }
}

/// The UTC start time of a run as `YYYYmmddTHHMMSSZ`.
pub fn run_timestamp(started_at: &str) -> io::Result<String> {
    let timestamp: jiff::Timestamp = started_at.parse().map_err(|error| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("`started_at` is not an RFC 3339 time: `{started_at}` ({error})"),
        )
    })?;
    Ok(timestamp.strftime("%Y%m%dT%H%M%SZ").to_string())
}

/// Creates a fresh directory for the run, adding a suffix rather than reusing one.
fn claim_run_dir(root: &Path, result: &RunResult) -> io::Result<PathBuf> {
    let parent = root
        .join(RESULTS_DIR)
        .join(sanitize_component(&result.model.name))
        .join(sanitize_component(&result.engine.name))
        .join(sanitize_component(&result.model.quant));
    fs::create_dir_all(&parent).map_err(|e| at(&parent, e))?;

    let stamp = run_timestamp(&result.started_at)?;
    for attempt in 1..=MAX_SUFFIX {
        let name = if attempt == 1 { stamp.clone() } else { format!("{stamp}-{attempt}") };
        let dir = parent.join(name);
        match fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(error) => return Err(at(&dir, error)),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        format!("{} already holds {MAX_SUFFIX} runs started at {stamp}", parent.display()),
    ))
}

/// Writes `dir/name` through a temporary file renamed into place.
fn write_atomic(
    dir: &Path,
    name: &str,
    fill: impl FnOnce(&mut BufWriter<File>) -> io::Result<()>,
) -> io::Result<()> {
    let temp = dir.join(format!(".{name}.tmp"));
    let target = dir.join(name);

    let file = File::create_new(&temp).map_err(|e| at(&temp, e))?;
    let mut out = BufWriter::new(file);
    fill(&mut out).map_err(|e| at(&target, e))?;
    let file = out.into_inner().map_err(|e| at(&target, e.into_error()))?;
    file.sync_all().map_err(|e| at(&target, e))?;

    fs::rename(&temp, &target).map_err(|e| at(&target, e))
}

/// Copies `source` to `dir/name` through a temporary file renamed into place.
fn copy_atomic(source: &Path, dir: &Path, name: &str) -> io::Result<()> {
    let temp = dir.join(format!(".{name}.tmp"));
    let target = dir.join(name);

    fs::copy(source, &temp).map_err(|error| {
        io::Error::new(
            error.kind(),
            format!("cannot copy the engine log {}: {error}", source.display()),
        )
    })?;
    File::open(&temp).and_then(|file| file.sync_all()).map_err(|e| at(&target, e))?;
    fs::rename(&temp, &target).map_err(|e| at(&target, e))
}

/// Adds the path to an I/O error's message.
fn at(path: &Path, error: io::Error) -> io::Error {
    io::Error::new(error.kind(), format!("{}: {error}", path.display()))
}

fn write_json(out: &mut impl Write, value: &impl Serialize) -> io::Result<()> {
    serde_json::to_writer_pretty(&mut *out, value)?;
    out.write_all(b"\n")
}

/// `metrics.json`: the result without requests, and where the requests went.
#[derive(Serialize)]
struct MetricsFile<'a> {
    requests_omitted: bool,
    requests_file: &'static str,
    #[serde(flatten)]
    result: &'a RunResult,
}

fn write_metrics(out: &mut impl Write, result: &RunResult) -> io::Result<()> {
    let result = result.without_requests();
    let file =
        MetricsFile { requests_omitted: true, requests_file: "requests.jsonl", result: &result };
    write_json(out, &file)
}

/// One line of `requests.jsonl`.
#[derive(Serialize)]
struct RequestLine<'a> {
    benchmark: &'a str,
    run_number: u32,
    index: usize,
    #[serde(flatten)]
    record: &'a RequestRecord,
}

fn write_requests(out: &mut impl Write, result: &RunResult) -> io::Result<()> {
    for benchmark in &result.benchmarks {
        for (index, record) in benchmark.requests.iter().enumerate() {
            let line = RequestLine {
                benchmark: &benchmark.name,
                run_number: benchmark.run_number,
                index,
                record,
            };
            serde_json::to_writer(&mut *out, &line)?;
            out.write_all(b"\n")?;
        }
    }
    Ok(())
}

/// One line of `quality_items.jsonl`.
#[derive(Serialize)]
struct ItemLine<'a> {
    benchmark: &'a str,
    run_number: u32,
    #[serde(flatten)]
    item: &'a QualityItem,
}

fn write_items(out: &mut impl Write, result: &RunResult) -> io::Result<()> {
    for benchmark in &result.benchmarks {
        for item in &benchmark.items {
            let line =
                ItemLine { benchmark: &benchmark.name, run_number: benchmark.run_number, item };
            serde_json::to_writer(&mut *out, &line)?;
            out.write_all(b"\n")?;
        }
    }
    Ok(())
}

/// Renders `summary.md`.
pub fn render_summary(result: &RunResult) -> String {
    let mut md = String::new();
    let model = &result.model;
    let engine = &result.engine;

    // Writing into a String cannot fail; the results are ignored on purpose.
    let _ = writeln!(md, "# kitt result: {} {} on {}\n", model.name, model.quant, engine.name);
    let passed = result.benchmarks.iter().filter(|b| b.status == BenchmarkStatus::Passed).count();
    let status = if result.passed { "PASSED" } else { "FAILED" };
    let rows = [
        ("Model", code(&model.name)),
        ("Model file", code(&model.path)),
        ("Quantization", cell(&model.quant)),
        ("Model size", human_size(model.size_bytes)),
        ("Engine", cell(&format!("{} {}", engine.name, engine.version))),
        ("Suite", cell(&result.suite)),
        ("Status", format!("{status} ({passed} of {} benchmarks passed)", result.benchmarks.len())),
        ("Started", cell(&result.started_at)),
        ("Finished", finished(result)),
        ("Result id", code(&result.id)),
    ];
    push_table(&mut md, &rows);

    push_engine_settings(&mut md, result);
    push_benchmarks(&mut md, &result.benchmarks);
    push_failures(&mut md, &result.benchmarks);
    push_provenance(&mut md, result);
    md
}

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

/// Bytes in MiB below one GiB, in GiB above.
fn human_size(bytes: u64) -> String {
    let gib = bytes as f64 / GIB;
    if gib < 1.0 { format!("{:.0} MiB", gib * 1024.0) } else { format!("{gib:.1} GiB") }
}

fn finished(result: &RunResult) -> String {
    let parse = |text: &str| text.parse::<jiff::Timestamp>().ok();
    match (parse(&result.started_at), parse(&result.finished_at)) {
        (Some(start), Some(end)) => {
            let seconds = end.as_millisecond().saturating_sub(start.as_millisecond()) as f64 / 1e3;
            format!("{} ({seconds:.1} s)", cell(&result.finished_at))
        }
        _ => cell(&result.finished_at),
    }
}

fn push_table(md: &mut String, rows: &[(&str, String)]) {
    md.push_str("| | |\n|---|---|\n");
    for (label, value) in rows {
        let _ = writeln!(md, "| {label} | {value} |");
    }
    md.push('\n');
}

fn push_engine_settings(md: &mut String, result: &RunResult) {
    let engine = &result.engine;
    if engine.parameters.is_empty() && engine.comparability.is_empty() {
        return;
    }
    md.push_str("## Engine settings\n\n| Setting | Value |\n|---|---|\n");
    for (key, value) in engine.parameters.iter().chain(&engine.comparability) {
        let _ = writeln!(md, "| {} | {} |", cell(key), cell(value));
    }
    md.push('\n');
}

fn push_benchmarks(md: &mut String, benchmarks: &[BenchmarkResult]) {
    md.push_str("## Benchmarks\n");
    for benchmark in benchmarks {
        let _ = writeln!(
            md,
            "\n### {} (run {}): {}\n",
            benchmark.name,
            benchmark.run_number,
            status_word(&benchmark.status)
        );

        let failed = benchmark.requests.iter().filter(|r| !r.is_success()).count();
        let _ = write!(md, "Requests: {} ({failed} failed)", benchmark.requests.len());
        if !benchmark.warmup_ms.is_empty() {
            let mean = benchmark.warmup_ms.iter().sum::<f64>() / benchmark.warmup_ms.len() as f64;
            let _ =
                write!(md, "; warm-up: {} requests, mean {mean:.1} ms", benchmark.warmup_ms.len());
        }
        md.push_str(".\n\n");
        if let Some(quality) = &benchmark.quality {
            let _ = writeln!(
                md,
                "Scoring: {} ({}).\n",
                line(&quality.describe()),
                line(&quality.scoring_reason)
            );
        }

        if benchmark.metrics.is_empty() {
            md.push_str("No metrics.\n");
            continue;
        }
        md.push_str("| Metric | Value | Unit |\n|---|---:|---|\n");
        for (name, value) in &benchmark.metrics {
            let _ = writeln!(
                md,
                "| {} | {} | {} |",
                cell(name),
                format_value(*value),
                metric_unit(name)
            );
        }
    }
    md.push('\n');
}

fn status_word(status: &BenchmarkStatus) -> &'static str {
    match status {
        BenchmarkStatus::Passed => "passed",
        BenchmarkStatus::Failed(_) => "failed",
        BenchmarkStatus::NotRun(_) => "not run",
    }
}

/// Lists failed or skipped benchmarks with their reasons, and failed requests by class.
fn push_failures(md: &mut String, benchmarks: &[BenchmarkResult]) {
    md.push_str("## Failures\n\n");
    let mut any = false;
    for benchmark in benchmarks {
        let label = format!("{} (run {})", benchmark.name, benchmark.run_number);
        if let BenchmarkStatus::Failed(reason) | BenchmarkStatus::NotRun(reason) = &benchmark.status
        {
            let _ = writeln!(md, "- {label}: {}: {}", status_word(&benchmark.status), line(reason));
            any = true;
        }

        // Class → (count, first message), in a stable order.
        let mut classes: BTreeMap<&str, (usize, &str)> = BTreeMap::new();
        for failure in benchmark.requests.iter().filter_map(|r| r.failure.as_ref()) {
            classes.entry(failure.class.as_str()).or_insert((0, &failure.message)).0 += 1;
        }
        for (class, (count, first)) in classes {
            let _ = writeln!(
                md,
                "- {label}: {count} request(s) failed with `{class}`: {}",
                line(first)
            );
            any = true;
        }
    }
    if !any {
        md.push_str("None.\n");
    }
    md.push('\n');
}

fn push_provenance(md: &mut String, result: &RunResult) {
    md.push_str("## Provenance\n\n");
    let hardware = &result.hardware;
    let cores = hardware.cpu_cores.map_or_else(|| "?".to_owned(), |n| n.to_string());
    let gpus = if hardware.gpus.is_empty() {
        "none".to_owned()
    } else {
        let mut names: Vec<String> = hardware
            .gpus
            .iter()
            .map(|gpu| match gpu.memory_bytes {
                Some(bytes) => format!("{} ({})", gpu.name, human_size(bytes)),
                None => format!("{} (memory not reported)", gpu.name),
            })
            .collect();
        if let Some(driver) = &hardware.driver_version {
            names.push(format!("driver {driver}"));
        }
        cell(&names.join(", "))
    };
    let rows = [
        ("kitt version", cell(&result.kitt_version)),
        ("Metric definitions", format!("v{}", result.metric_version)),
        ("Config hash", code(&result.config_hash)),
        ("Hardware fingerprint", code(&hardware.fingerprint)),
        (
            "CPU",
            cell(&format!(
                "{} ({cores} cores, {} threads)",
                hardware.cpu_model, hardware.cpu_threads
            )),
        ),
        ("RAM", format!("{:.0} GiB", hardware.ram_bytes as f64 / GIB)),
        ("GPUs", gpus),
        ("OS", cell(&format!("{}, kernel {}", hardware.os, hardware.kernel))),
    ];
    push_table(md, &rows);
}

/// Text on one line, safe inside a Markdown table cell.
fn cell(text: &str) -> String {
    line(text).replace('|', "\\|")
}

/// Text as inline code in a table cell.
fn code(text: &str) -> String {
    if text.is_empty() { "-".to_owned() } else { format!("`{}`", cell(text).replace('`', "'")) }
}

fn line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A metric value with as many decimals as its size calls for.
fn format_value(value: f64) -> String {
    match value.abs() {
        v if !v.is_finite() => "n/a".to_owned(),
        v if v.fract() == 0.0 && v < 1e15 => format!("{value:.0}"),
        v if v >= 100.0 => format!("{value:.1}"),
        v if v >= 1.0 => format!("{value:.2}"),
        _ => format!("{value:.4}"),
    }
}

/// The unit a metric's name implies (`ttft_ms_p50` → `ms`), or empty when unitless.
pub fn metric_unit(name: &str) -> &'static str {
    let words: Vec<&str> = name.split('_').collect();
    let has = |word: &str| words.contains(&word);

    if name.contains("per_second") || has("tps") {
        return if has("tokens") || has("token") || has("tps") {
            "tok/s"
        } else if has("requests") || has("request") {
            "req/s"
        } else {
            "/s"
        };
    }
    for (word, unit) in [
        ("ms", "ms"),
        ("us", "µs"),
        ("ns", "ns"),
        ("seconds", "s"),
        ("s", "s"),
        ("bytes", "B"),
        ("mib", "MiB"),
        ("mb", "MB"),
        ("gib", "GiB"),
        ("gb", "GB"),
        ("percent", "%"),
        ("pct", "%"),
        ("tokens", "tokens"),
    ] {
        if has(word) {
            return unit;
        }
    }
    ""
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_names_become_one_harmless_component() {
        assert_eq!(sanitize_component("../../etc"), "etc");
        assert_eq!(sanitize_component("a/../../b"), "a_b");
        assert_eq!(sanitize_component(".."), "unknown");
        assert_eq!(sanitize_component("..."), "_");
        assert_eq!(sanitize_component("."), "unknown");
        assert_eq!(sanitize_component(""), "unknown");
        assert_eq!(sanitize_component("bartowski/Llama-3.1-8B"), "bartowski_Llama-3.1-8B");
        assert_eq!(sanitize_component(".hidden"), "hidden");
        assert_eq!(sanitize_component("a\\b\0c"), "a_b_c");
        assert_eq!(sanitize_component("gemma3:270m"), "gemma3_270m");
        for hostile in ["../../etc", "/abs/path", "a/../../b", "...", "x/..", "a..b", "....//x"] {
            let clean = sanitize_component(hostile);
            assert!(!clean.contains('/') && !clean.contains(".."), "{hostile} → {clean}");
            assert!(!clean.starts_with('.'), "{hostile} → {clean}");
        }
    }

    #[test]
    fn long_names_are_shortened() {
        let long = "x".repeat(500);
        assert_eq!(sanitize_component(&long).chars().count(), MAX_COMPONENT_CHARS);
    }

    #[test]
    fn timestamps_are_utc_and_compact() {
        assert_eq!(
            run_timestamp("2025-01-15T02:01:10.512Z").ok().as_deref(),
            Some("20250115T020110Z")
        );
        assert_eq!(
            run_timestamp("2025-01-15T03:01:10+01:00").ok().as_deref(),
            Some("20250115T020110Z")
        );
        let error = run_timestamp("yesterday").err().map(|e| e.kind());
        assert_eq!(error, Some(io::ErrorKind::InvalidInput));
    }

    #[test]
    fn units_follow_metric_names() {
        assert_eq!(metric_unit("output_tokens_per_second"), "tok/s");
        assert_eq!(metric_unit("requests_per_second"), "req/s");
        assert_eq!(metric_unit("ttft_ms_p50"), "ms");
        assert_eq!(metric_unit("e2e_ns_max"), "ns");
        assert_eq!(metric_unit("total_time_seconds"), "s");
        assert_eq!(metric_unit("peak_rss_bytes"), "B");
        assert_eq!(metric_unit("error_rate"), "");
        assert_eq!(metric_unit("total_output_tokens"), "tokens");
    }

    #[test]
    fn values_keep_sensible_precision() {
        assert_eq!(format_value(128.0), "128");
        assert_eq!(format_value(4102.84), "4102.8");
        assert_eq!(format_value(62.4137), "62.41");
        assert_eq!(format_value(0.012345), "0.0123");
        assert_eq!(format_value(f64::NAN), "n/a");
    }

    #[test]
    fn table_cells_cannot_break_the_table() {
        assert_eq!(cell("a|b\nc"), "a\\|b c");
    }
}
