//! Campaign state costs and kitt's own overhead per run.
//!
//! 1. A store holding a campaign of 10,000 runs (mixed statuses, as after a
//!    long campaign): the cost of each state transition of a run, and the
//!    wall time of `kitt campaign status`, `status --json` and `list` run as
//!    the real binary (process start included).
//! 2. When the setup's llama-server is installed: a real campaign of four
//!    runs on generated models; kitt's overhead per run is the campaign's
//!    wall time less the engines' own time (start, suite, stop), as the
//!    coordinator's `run timing` debug lines report it.
//!
//! Run with `cargo bench --bench campaign`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use kitt::gguf::TinyModel;
use kitt::results::model::{EngineIdentity, ModelIdentity, RunResult};
use kitt::store::{Headline, NewCampaign, RunEnd, RunSpec, Session, Store};

const RUNS: usize = 10_000;
const RESULT: &str = "bench-result";
const HEADLINE: Headline = Headline {
    output_tokens_per_second: Some(50.0),
    ttft_ms_p50: Some(120.0),
    error_rate: Some(0.0),
};

fn result() -> RunResult {
    RunResult {
        id: RESULT.to_owned(),
        kitt_version: env!("CARGO_PKG_VERSION").to_owned(),
        metric_version: kitt::measure::METRICS_VERSION,
        started_at: "2026-12-04T00:00:00Z".to_owned(),
        finished_at: "2026-12-04T00:00:01Z".to_owned(),
        suite: "quick".to_owned(),
        config_hash: "0".to_owned(),
        model: ModelIdentity {
            name: "m".to_owned(),
            path: "/m.gguf".to_owned(),
            quant: "Q4_K_M".to_owned(),
            size_bytes: 1,
            architecture: None,
            parameters: None,
        },
        engine: EngineIdentity {
            name: "llama_cpp".to_owned(),
            version: "bench".to_owned(),
            binary: None,
            parameters: Default::default(),
            comparability: Default::default(),
        },
        hardware: kitt::hardware::detect(),
        benchmarks: Vec::new(),
        passed: true,
        campaign: None,
    }
}

fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    let home = dir.path().join("home");
    state_costs(&home);
    if let Some(server) = llama_server() {
        overhead(dir.path(), &server);
    } else {
        println!(
            "llama-server not installed (scripts/setup.sh): skipping the overhead measurement"
        );
    }
}

fn state_costs(home: &Path) {
    let mut store = Store::open(home).expect("store");
    let id = "bench-20261204-000000";
    let campaign = NewCampaign {
        id,
        name: "bench",
        config_path: "/bench.yaml",
        config_hash: "0",
        config_yaml: "campaign_name: bench\n",
        storage_root: "/",
    };
    assert!(store.create_campaign(&campaign).expect("create"));
    let keys: Vec<String> =
        (0..RUNS).map(|i| format!("Model-{}|llama_cpp|Q{}_K_M", i / 20, i % 20)).collect();
    let specs: Vec<RunSpec<'_>> = keys
        .iter()
        .map(|key| RunSpec {
            key,
            model: "Model",
            engine: "llama_cpp",
            quant: "Q4_K_M",
            suite: "standard",
            source: "hf:org/model",
            size_bytes: Some(4 << 30),
            download_bytes: 4 << 30,
            files: &[],
        })
        .collect();
    let session = Session {
        campaign_id: id,
        config_path: "/bench.yaml",
        config_hash: "0",
        config_yaml: "campaign_name: bench\n",
        storage_root: "/",
        pid: std::process::id(),
        host: "bench",
        item_limit: None,
    };
    let started = Instant::now();
    let session_id = store.begin_session(&session, &specs).expect("session");
    println!("begin_session with {RUNS} new runs: {:?}", started.elapsed());

    // Every success links to one stored result (the link is what is timed).
    store.insert_result(&result()).expect("store a result");
    let rows = store.campaign_runs(id, None, None).expect("runs");
    let started = Instant::now();
    for (index, row) in rows.iter().enumerate() {
        let attempt = store.run_started(session_id, row.id, None).expect("start");
        store.run_phase(row.id, "throughput (run 1 of 1)").expect("phase");
        let end = match index % 10 {
            0 => RunEnd::Failed { error: "the engine exited while loading", result_id: None },
            1 => RunEnd::Skipped("not enough disk"),
            _ => RunEnd::Success { result_id: RESULT, run_dir: "/results/x", headline: HEADLINE },
        };
        store.run_finished(row.id, attempt, 1.0, &end).expect("finish");
    }
    let per_run = started.elapsed() / u32::try_from(RUNS).expect("fits");
    println!("start + phase + finish per run (each its own transaction): {per_run:?}");
    // A re-plan of the same 10,000 runs, as every resume does.
    let started = Instant::now();
    store.begin_session(&session, &specs).expect("resume session");
    println!("begin_session over {RUNS} existing runs (resume): {:?}", started.elapsed());
    drop(store);

    for args in
        [&["campaign", "status"][..], &["--json", "campaign", "status"], &["campaign", "list"]]
    {
        let times = (0..15).map(|_| time_kitt(home, args)).collect::<Vec<_>>();
        println!("kitt {}: {}", args.join(" "), spread(times));
    }
}

fn time_kitt(home: &Path, args: &[&str]) -> Duration {
    let started = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_kitt"))
        .arg("--home")
        .arg(home)
        .args(args)
        .output()
        .expect("run kitt");
    let elapsed = started.elapsed();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    elapsed
}

fn spread(mut times: Vec<Duration>) -> String {
    times.sort();
    format!(
        "median {:?}, min {:?}, max {:?}",
        times[times.len() / 2],
        times[0],
        times[times.len() - 1]
    )
}

fn llama_server() -> Option<PathBuf> {
    let recorded = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv-engine/llama-server-path");
    let path = PathBuf::from(std::fs::read_to_string(recorded).ok()?.trim());
    path.is_file().then_some(path)
}

fn overhead(dir: &Path, server: &Path) {
    let models = dir.join("models");
    let mut yaml = String::from("campaign_name: overhead\nmodels:\n");
    for seed in 1..=4u64 {
        let repo = format!("bench/m{seed}-GGUF");
        let folder = models.join("huggingface").join(&repo);
        std::fs::create_dir_all(&folder).expect("model folder");
        TinyModel { seed, ..TinyModel::default() }
            .write(&folder.join(format!("m{seed}-F32.gguf")))
            .expect("write model");
        yaml.push_str(&format!("  - name: M{seed}\n    params: \"2.5M\"\n    gguf_repo: {repo}\n"));
    }
    yaml.push_str("engines:\n  - name: llama_cpp\n    suite: quick\n");
    yaml.push_str("disk:\n  reserve_gb: 0\n  cleanup_after_run: false\n");
    let config = dir.join("overhead.yaml");
    std::fs::write(&config, yaml).expect("config");

    let started = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_kitt"))
        .args(["--json", "--home"])
        .arg(dir.join("overhead-home"))
        .args(["campaign", "run"])
        .arg(&config)
        .env("KITT_MODELS_DIR", &models)
        .env("KITT_OFFLINE", "1")
        .env("KITT_LLAMA_SERVER", server)
        .env("KITT_LOG", "kitt=debug")
        .output()
        .expect("run the campaign");
    let wall = started.elapsed();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).expect("summary");
    let session_ms = summary["elapsed_s"].as_f64().expect("elapsed") * 1000.0;
    let stderr = String::from_utf8_lossy(&output.stderr);
    let engine_ms: Vec<f64> = stderr
        .lines()
        .filter(|line| line.contains("run timing"))
        .filter_map(|line| field(line, "engine_ms"))
        .collect();
    let inside: Vec<f64> = stderr
        .lines()
        .filter(|line| line.contains("run timing"))
        .filter_map(|line| field(line, "overhead_ms"))
        .collect();
    assert_eq!(engine_ms.len(), 4, "{stderr}");
    let engines: f64 = engine_ms.iter().sum();
    println!(
        "campaign of 4 runs: process wall {wall:?}, session {session_ms:.0} ms, engines (start + suite + stop) {engines:.0} ms"
    );
    println!(
        "kitt's overhead per run: {:.1} ms (session less engine time, / 4); inside an attempt (model lookup, result store, run directory): {:.1} ms mean",
        (session_ms - engines) / 4.0,
        inside.iter().sum::<f64>() / inside.len() as f64
    );
}

/// `name=value` from a tracing line.
fn field(line: &str, name: &str) -> Option<f64> {
    let start = line.find(&format!("{name}="))? + name.len() + 1;
    line[start..].split_whitespace().next()?.parse().ok()
}
