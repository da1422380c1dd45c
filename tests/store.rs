//! The result store and the run directory, against real SQLite and real files
//! in temporary directories.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use kitt::measure::record::RequestRecord;
use kitt::results::files::write_run_dir;
use kitt::results::model::{
    BenchmarkResult, BenchmarkStatus, EngineIdentity, Gpu, Hardware, ModelIdentity, RunResult,
};
use kitt::store::{ResultFilter, SCHEMA_VERSION, Store, StoreError};
use rusqlite::Connection;
use serde_json::{Value, json};

fn record(value: Value) -> RequestRecord {
    serde_json::from_value(value).expect("a request record from JSON")
}

fn ok_request(start: i64, ttft_ms: u64, tokens: u64) -> RequestRecord {
    record(json!({
        "started_at_unix_ns": start,
        "ttft_ns": ttft_ms * 1_000_000,
        "ttfo_ns": ttft_ms * 1_000_000,
        "e2e_ns": (ttft_ms + tokens * 10) * 1_000_000,
        "tpot_ns": 10_000_000.0,
        "itl_ns": [10_000_000, 9_000_000, 11_000_000],
        "chunks": tokens,
        "output_tokens": tokens,
        "output_tokens_source": "usage",
        "prompt_tokens": 32,
        "server_timings": { "predicted_n": tokens, "predicted_ms": 41.5 },
        "served_model": "gemma-3-270m",
        "finish_reason": "length",
        "failure": null
    }))
}

fn failed_request(start: i64) -> RequestRecord {
    record(json!({
        "started_at_unix_ns": start,
        "ttft_ns": 15_000_000,
        "itl_ns": [],
        "chunks": 1,
        "failure": { "class": "truncated", "message": "stream ended before [DONE]" }
    }))
}

fn hardware() -> Hardware {
    Hardware {
        cpu_model: "AMD EPYC 7B13 64-Core Processor".to_owned(),
        cpu_threads: 128,
        cpu_cores: Some(64),
        ram_bytes: 540_959_297_536,
        gpus: vec![Gpu { name: "NVIDIA GB10".to_owned(), memory_bytes: None }],
        driver_version: Some("580.95.05".to_owned()),
        os: "Ubuntu 24.04.1 LTS".to_owned(),
        kernel: "6.8.0-45-generic".to_owned(),
        fingerprint: concat!(
            "NVIDIA-GB10_AMD-EPYC-7B13-64-Core-Processor-64c_504GB_",
            "Ubuntu-24.04.1-LTS-6.8.0-45-generic"
        )
        .to_owned(),
    }
}

/// A result with a passed throughput benchmark (one failed request among
/// three) and a failed latency benchmark.
fn sample(id: &str, model: &str, started_at: &str) -> RunResult {
    let throughput = BenchmarkResult {
        name: "throughput".to_owned(),
        run_number: 1,
        status: BenchmarkStatus::Passed,
        metrics: BTreeMap::from([
            ("output_tokens_per_second".to_owned(), 62.4137),
            ("ttft_ms_p50".to_owned(), 120.5),
            ("total_output_tokens".to_owned(), 256.0),
            ("error_rate".to_owned(), 1.0 / 3.0),
        ]),
        warmup_ms: vec![512.0, 110.0],
        requests: vec![
            ok_request(1_736_906_471_000_000_000, 120, 128),
            failed_request(1_736_906_472_000_000_000),
            ok_request(1_736_906_473_000_000_000, 121, 128),
        ],
        items: Vec::new(),
        quality: None,
    };
    let latency = BenchmarkResult {
        name: "latency".to_owned(),
        run_number: 2,
        status: BenchmarkStatus::Failed("every request failed".to_owned()),
        metrics: BTreeMap::from([("error_rate".to_owned(), 1.0)]),
        warmup_ms: Vec::new(),
        requests: vec![failed_request(1_736_906_480_000_000_000)],
        items: Vec::new(),
        quality: None,
    };

    RunResult {
        id: id.to_owned(),
        kitt_version: "0.1.0".to_owned(),
        metric_version: 1,
        started_at: started_at.to_owned(),
        finished_at: "2025-01-15T02:01:41.870Z".to_owned(),
        suite: "quick".to_owned(),
        config_hash: "9f2c4e0d".to_owned(),
        model: ModelIdentity {
            name: model.to_owned(),
            path: "/models/gemma-3-270m-it-Q4_K_M.gguf".to_owned(),
            quant: "Q4_K_M".to_owned(),
            size_bytes: 253_000_000,
            architecture: Some("gemma3".to_owned()),
            parameters: Some(268_000_000),
        },
        engine: EngineIdentity {
            name: "llama_cpp".to_owned(),
            version: "b6000".to_owned(),
            binary: Some("/opt/llama.cpp/llama-server".to_owned()),
            parameters: BTreeMap::from([("ctx_size".to_owned(), "4096".to_owned())]),
            comparability: BTreeMap::from([("ignore_eos".to_owned(), "applied".to_owned())]),
        },
        hardware: hardware(),
        benchmarks: vec![throughput, latency],
        passed: false,
        campaign: None,
    }
}

const STARTED: &str = "2025-01-15T02:01:10.512Z";

fn count(home: &Path, table: &str) -> i64 {
    let conn = Connection::open(home.join("kitt.db")).expect("open the database directly");
    conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |row| row.get(0))
        .expect("count rows")
}

#[test]
fn a_result_round_trips_with_every_request() {
    let home = tempfile::tempdir().expect("temp dir");
    let store = Store::open(home.path()).expect("open the store");
    let result = sample("r1", "gemma-3-270m", STARTED);

    store.insert_result(&result).expect("store the result");
    let back = store.result("r1").expect("read the result").expect("the result exists");

    let expected = serde_json::to_value(&result).expect("encode");
    assert_eq!(serde_json::to_value(&back).expect("encode"), expected);
    assert_eq!(back.benchmarks[0].requests.len(), 3);
    assert_eq!(back.benchmarks[1].requests[0], result.benchmarks[1].requests[0]);
    assert!(store.result("missing").expect("read").is_none());
}

#[test]
fn every_metric_and_request_is_queryable() {
    let home = tempfile::tempdir().expect("temp dir");
    let store = Store::open(home.path()).expect("open the store");
    store.insert_result(&sample("r1", "gemma", STARTED)).expect("store");

    assert_eq!(count(home.path(), "metrics"), 5);
    assert_eq!(count(home.path(), "requests"), 4);
    assert_eq!(count(home.path(), "hardware"), 1);

    let conn = Connection::open(home.path().join("kitt.db")).expect("open directly");
    let failures: i64 = conn
        .query_row("SELECT count(*) FROM requests WHERE failure_class = 'truncated'", [], |row| {
            row.get(0)
        })
        .expect("query failures");
    assert_eq!(failures, 2);
    let (fingerprint, reason): (String, String) = conn
        .query_row(
            "SELECT r.hardware_fingerprint, b.reason FROM results r
             JOIN benchmarks b ON b.result_id = r.id WHERE b.status = 'failed'",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .expect("query the failed benchmark");
    assert_eq!(fingerprint, hardware().fingerprint);
    assert_eq!(reason, "every request failed");
}

#[test]
fn hardware_is_stored_once_per_fingerprint() {
    let home = tempfile::tempdir().expect("temp dir");
    let store = Store::open(home.path()).expect("open the store");
    store.insert_result(&sample("r1", "a", STARTED)).expect("store r1");
    store.insert_result(&sample("r2", "b", STARTED)).expect("store r2");
    assert_eq!(count(home.path(), "hardware"), 1);
    assert_eq!(count(home.path(), "results"), 2);
}

#[test]
fn a_missing_fingerprint_is_computed_not_dropped() {
    let home = tempfile::tempdir().expect("temp dir");
    let store = Store::open(home.path()).expect("open the store");
    let mut result = sample("r1", "a", STARTED);
    result.hardware.fingerprint.clear();
    store.insert_result(&result).expect("store");

    let back = store.result("r1").expect("read").expect("exists");
    assert_eq!(back.hardware.fingerprint, kitt::hardware::fingerprint(&result.hardware));
}

#[test]
fn listing_filters_and_puts_the_newest_first() {
    let home = tempfile::tempdir().expect("temp dir");
    let store = Store::open(home.path()).expect("open the store");
    store.insert_result(&sample("old", "gemma", "2025-01-15T02:01:10Z")).expect("store");
    // Sub-second precision must not confuse the order (text would sort `.5Z` first).
    store.insert_result(&sample("new", "gemma", "2025-01-15T02:01:10.5Z")).expect("store");
    store.insert_result(&sample("other", "qwen", "2025-01-16T00:00:00Z")).expect("store");

    let all = store.results(&ResultFilter::default()).expect("list");
    let ids: Vec<&str> = all.iter().map(|summary| summary.id.as_str()).collect();
    assert_eq!(ids, ["other", "new", "old"]);
    assert_eq!((all[0].benchmarks, all[0].benchmarks_passed), (2, 1));

    let filter = ResultFilter { model: Some("gemma".to_owned()), ..ResultFilter::default() };
    let gemma = store.results(&filter).expect("list gemma");
    assert_eq!(gemma.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(), ["new", "old"]);

    let filter = ResultFilter {
        engine: Some("vllm".to_owned()),
        suite: Some("quick".to_owned()),
        ..ResultFilter::default()
    };
    assert!(store.results(&filter).expect("list vllm").is_empty());

    let filter = ResultFilter { limit: Some(1), ..ResultFilter::default() };
    assert_eq!(store.results(&filter).expect("list one").len(), 1);
}

#[test]
fn the_home_is_created_private() {
    use std::os::unix::fs::PermissionsExt;

    let root = tempfile::tempdir().expect("temp dir");
    let home = root.path().join("nested").join("home");
    let store = Store::open(&home).expect("open the store");
    let mode = fs::metadata(&home).expect("home metadata").permissions().mode();
    assert_eq!(mode & 0o777, 0o700);
    assert_eq!(store.path(), home.join("kitt.db"));
}

#[test]
fn reopening_applies_no_migration_twice() {
    let home = tempfile::tempdir().expect("temp dir");
    let history = |home: &Path| -> Vec<(i64, String)> {
        let conn = Connection::open(home.join("kitt.db")).expect("open directly");
        let mut statement = conn
            .prepare("SELECT version, applied_at FROM schema_migrations ORDER BY version")
            .expect("prepare");
        statement
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
            .and_then(|rows| rows.collect())
            .expect("read the history")
    };

    drop(Store::open(home.path()).expect("first open"));
    let first = history(home.path());
    assert_eq!(first.len(), SCHEMA_VERSION as usize);

    let store = Store::open(home.path()).expect("second open");
    assert_eq!(store.schema_version().expect("version"), i64::from(SCHEMA_VERSION));
    assert_eq!(history(home.path()), first);
}

#[test]
fn a_store_from_a_newer_kitt_is_refused() {
    let home = tempfile::tempdir().expect("temp dir");
    drop(Store::open(home.path()).expect("create"));
    let conn = Connection::open(home.path().join("kitt.db")).expect("open directly");
    conn.execute("INSERT INTO schema_migrations VALUES (?1, 'later')", [SCHEMA_VERSION + 40])
        .expect("pretend a newer kitt migrated");
    drop(conn);

    let error = Store::open(home.path()).expect_err("a newer store is refused");
    assert!(matches!(error, StoreError::NewerSchema { .. }), "{error}");
    let message = error.to_string();
    assert!(message.contains("newer kitt"), "{message}");
    assert!(message.contains(&format!("schema version {}", SCHEMA_VERSION + 40)), "{message}");
}

#[test]
fn storing_an_id_twice_is_refused_without_partial_rows() {
    let home = tempfile::tempdir().expect("temp dir");
    let store = Store::open(home.path()).expect("open the store");
    store.insert_result(&sample("r1", "gemma", STARTED)).expect("store once");
    let tables = ["results", "benchmarks", "metrics", "requests", "hardware"];
    let before: Vec<i64> = tables.iter().map(|table| count(home.path(), table)).collect();

    let mut again = sample("r1", "something else", STARTED);
    again.benchmarks.push(again.benchmarks[0].clone());
    let error = store.insert_result(&again).expect_err("a second insert is refused");
    assert!(matches!(error, StoreError::DuplicateResult { .. }), "{error}");

    let after: Vec<i64> = tables.iter().map(|table| count(home.path(), table)).collect();
    assert_eq!(after, before);
    let stored = store.result("r1").expect("read").expect("exists");
    assert_eq!(stored.model.name, "gemma");
}

#[test]
fn a_failure_halfway_through_storing_leaves_nothing() {
    let home = tempfile::tempdir().expect("temp dir");
    let store = Store::open(home.path()).expect("open the store");

    // The bad value sits in the last request, after the result row and the
    // first benchmark were written inside the transaction.
    let mut result = sample("r1", "gemma", STARTED);
    result.benchmarks[1].requests[0].output_tokens = Some(u64::MAX);
    let error = store.insert_result(&result).expect_err("an unstorable value is refused");
    assert!(matches!(error, StoreError::InvalidResult { .. }), "{error}");

    let mut result = sample("r2", "gemma", STARTED);
    result.benchmarks[1].metrics.insert("ttft_ms_p99".to_owned(), f64::NAN);
    let error = store.insert_result(&result).expect_err("NaN is refused");
    assert!(error.to_string().contains("ttft_ms_p99"), "{error}");

    for table in ["results", "benchmarks", "metrics", "requests", "hardware"] {
        assert_eq!(count(home.path(), table), 0, "{table}");
    }
}

#[test]
fn readers_work_while_another_process_writes() {
    let home = tempfile::tempdir().expect("temp dir");
    let writer = Store::open(home.path()).expect("open the writer");
    writer.insert_result(&sample("r1", "gemma", STARTED)).expect("store r1");

    // Another connection holds the write lock with uncommitted work.
    let other = Connection::open(home.path().join("kitt.db")).expect("open directly");
    other.execute_batch("BEGIN IMMEDIATE").expect("take the write lock");
    other
        .execute("INSERT INTO hardware VALUES ('pending', '{}', 'now')", [])
        .expect("write inside the transaction");

    let reader = Store::open(home.path()).expect("open while a write is in progress");
    let started = Instant::now();
    assert_eq!(reader.results(&ResultFilter::default()).expect("list").len(), 1);
    assert!(reader.result("r1").expect("read").is_some());
    assert!(started.elapsed() < Duration::from_secs(1), "the reader waited for the writer");

    reader.set_busy_timeout(Duration::from_millis(100)).expect("shorten the wait");
    let error = reader.insert_result(&sample("r2", "gemma", STARTED)).expect_err("locked");
    assert!(matches!(error, StoreError::Locked { .. }), "{error}");
    assert!(error.to_string().contains("locked by another process"), "{error}");

    other.execute_batch("COMMIT").expect("release the lock");
    reader.insert_result(&sample("r2", "gemma", STARTED)).expect("store after the lock");
    assert_eq!(count(home.path(), "results"), 2);
}

/// Whether this process ignores file permissions (root, or a capability).
fn permissions_are_bypassed(dir: &Path) -> bool {
    fs::write(dir.join("probe"), b"x").is_ok()
}

#[test]
fn an_unwritable_store_says_so() {
    use std::os::unix::fs::PermissionsExt;

    let home = tempfile::tempdir().expect("temp dir");
    drop(Store::open(home.path()).expect("create"));
    let db = home.path().join("kitt.db");
    fs::set_permissions(&db, fs::Permissions::from_mode(0o444)).expect("chmod the database");
    fs::set_permissions(home.path(), fs::Permissions::from_mode(0o555)).expect("chmod the home");

    let bypassed = permissions_are_bypassed(home.path());
    let outcome = Store::open(home.path());
    fs::set_permissions(home.path(), fs::Permissions::from_mode(0o700)).expect("restore");
    if bypassed {
        eprintln!("skipped: this process ignores file permissions");
        return;
    }

    let error = outcome.expect_err("a read-only store is refused");
    assert!(matches!(error, StoreError::Unwritable { .. }), "{error}");
    assert!(error.to_string().contains("cannot be written"), "{error}");
}

#[test]
fn a_home_that_is_a_file_is_an_error() {
    let root = tempfile::tempdir().expect("temp dir");
    let home = root.path().join("home");
    fs::write(&home, b"not a folder").expect("write a file");
    let error = Store::open(&home).expect_err("a file is not a home");
    assert!(matches!(error, StoreError::CreateHome { .. }), "{error}");
}

#[test]
fn a_file_that_is_not_a_database_is_named() {
    let home = tempfile::tempdir().expect("temp dir");
    fs::write(home.path().join("kitt.db"), vec![b'x'; 4096]).expect("write garbage");
    let error = Store::open(home.path()).expect_err("garbage is refused");
    assert!(matches!(error, StoreError::NotADatabase { .. }), "{error}");
}

#[test]
fn the_run_directory_holds_every_file() {
    let root = tempfile::tempdir().expect("temp dir");
    let log = root.path().join("server.log");
    fs::write(&log, "llama server listening\n").expect("write a log");
    let result = sample("r1", "gemma-3-270m", STARTED);

    let dir = write_run_dir(root.path(), &result, Some(&log)).expect("write the run dir");
    let expected = root.path().join("results/gemma-3-270m/llama_cpp/Q4_K_M/20250115T020110Z");
    assert_eq!(dir, expected);

    let mut names: Vec<String> = fs::read_dir(&dir)
        .expect("list the run dir")
        .map(|entry| entry.expect("an entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let expected_names =
        ["engine.log", "hardware.json", "metrics.json", "requests.jsonl", "summary.md"];
    assert_eq!(names, expected_names);

    let metrics: Value =
        serde_json::from_str(&fs::read_to_string(dir.join("metrics.json")).expect("read"))
            .expect("metrics.json is JSON");
    assert_eq!(metrics["requests_omitted"], json!(true));
    assert_eq!(metrics["requests_file"], json!("requests.jsonl"));
    assert_eq!(metrics["hardware"]["fingerprint"], json!(hardware().fingerprint));
    assert!(metrics["benchmarks"][0].get("requests").is_none());
    assert_eq!(metrics["benchmarks"][0]["metrics"]["ttft_ms_p50"], json!(120.5));
    let reread: RunResult = serde_json::from_value(metrics).expect("metrics.json reads back");
    assert_eq!(reread.benchmarks.len(), 2);

    let lines: Vec<Value> = fs::read_to_string(dir.join("requests.jsonl"))
        .expect("read requests")
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .collect();
    assert_eq!(lines.len(), 4);
    assert_eq!(lines[1]["benchmark"], json!("throughput"));
    assert_eq!(lines[1]["index"], json!(1));
    assert_eq!(lines[1]["failure"]["class"], json!("truncated"));
    assert_eq!(lines[3]["benchmark"], json!("latency"));
    assert_eq!(lines[3]["run_number"], json!(2));

    let hardware_file: Hardware =
        serde_json::from_str(&fs::read_to_string(dir.join("hardware.json")).expect("read"))
            .expect("hardware.json reads back");
    assert_eq!(hardware_file.cpu_threads, 128);
    assert_eq!(
        fs::read_to_string(dir.join("engine.log")).expect("read the log"),
        "llama server listening\n"
    );
}

#[test]
fn an_existing_run_directory_is_never_overwritten() {
    let root = tempfile::tempdir().expect("temp dir");
    let result = sample("r1", "gemma", STARTED);
    let first = write_run_dir(root.path(), &result, None).expect("first");
    fs::write(first.join("summary.md"), "edited by hand").expect("edit");

    let second = write_run_dir(root.path(), &result, None).expect("second");
    let third = write_run_dir(root.path(), &result, None).expect("third");
    assert_eq!(second.file_name(), Some("20250115T020110Z-2".as_ref()));
    assert_eq!(third.file_name(), Some("20250115T020110Z-3".as_ref()));
    assert_eq!(fs::read_to_string(first.join("summary.md")).expect("read"), "edited by hand");
    assert!(!second.join("engine.log").exists());
}

#[test]
fn hostile_names_stay_inside_the_results_folder() {
    let root = tempfile::tempdir().expect("temp dir");
    let results = root.path().join("results");
    let names =
        [("../../etc", "llama_cpp", "Q4_K_M"), ("org/model", "../..", ".."), ("/", "a\\b", "")];
    for (model, engine, quant) in names {
        let mut result = sample("r1", model, STARTED);
        result.engine.name = engine.to_owned();
        result.model.quant = quant.to_owned();

        let dir = write_run_dir(root.path(), &result, None).expect("write the run dir");
        let relative = dir.strip_prefix(&results).expect("inside results/");
        assert_eq!(relative.components().count(), 4, "{}", relative.display());
        for component in relative.components() {
            let text = component.as_os_str().to_string_lossy();
            assert!(!text.contains("..") && !text.starts_with('.'), "{text}");
        }
        let canonical = dir.canonicalize().expect("canonical path");
        assert!(canonical.starts_with(results.canonicalize().expect("results")), "{model}");
    }
    let org = results.join("org_model").join("unknown").join("unknown");
    assert!(org.is_dir(), "`org/model` with `..` engine and quant");
}

#[test]
fn summary_reads_well() {
    let root = tempfile::tempdir().expect("temp dir");
    let dir = write_run_dir(root.path(), &sample("r1", "gemma-3-270m", STARTED), None)
        .expect("write the run dir");
    let summary = fs::read_to_string(dir.join("summary.md")).expect("read the summary");

    insta::with_settings!({
        filters => vec![(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z", "[TIME]")],
    }, {
        insta::assert_snapshot!(summary);
    });
}
