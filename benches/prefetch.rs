//! Campaign wall time with and without prefetch: four runs whose models come
//! from the loopback fake Hub, each download paced to take about as long as
//! its benchmark, run once with `disk.prefetch: true` and once with `false`
//! on the setup's real llama-server. Prints both wall times, the sum of the
//! runs' own durations and the sum of the download times, so the ratio shows
//! how much of the downloading the benchmarks hide.
//!
//! Run with `cargo bench --bench prefetch` (`KITT_BENCH_PREFETCH_RATE_KIB`
//! sets the pace, default 4096 KiB/s).

// The fakes of the tests, included alone: their parent `tests/support/mod.rs`
// brings fakes this benchmark does not need.
#[allow(dead_code)]
#[path = "../tests/support/files.rs"]
mod files;
#[allow(dead_code)]
#[path = "../tests/support/hub.rs"]
mod hub;
#[allow(dead_code)]
#[path = "../tests/support/server.rs"]
mod server;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use files::FileServer;
use hub::FakeHub;
use kitt::gguf::TinyModel;
use kitt::store::Store;

/// Runs in the campaign.
const RUNS: u64 = 4;

/// The suite: 24 throughput requests, about as long as a paced download.
const SUITE: &str = "name: quick\nversion: 1\ndescription: Short.\nruns: 1\n\
     sampling:\n  temperature: 0.0\n  max_tokens: 64\ntests: [throughput]\n\
     test_overrides:\n  throughput:\n    concurrency: [1]\n    iterations: 24\n    warmup: false\n";

fn main() {
    let Some(server) = llama_server() else {
        println!("llama-server not installed (scripts/setup.sh): nothing to measure");
        return;
    };
    let rate_kib: u64 = std::env::var("KITT_BENCH_PREFETCH_RATE_KIB")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(4096);
    let dir = tempfile::tempdir().expect("temp dir");
    let hub = FakeHub::start();
    let cdn = FileServer::start();
    let mut yaml = String::from("campaign_name: ahead\nmodels:\n");
    let mut bytes = 0;
    for seed in 1..=RUNS {
        let file = dir.path().join(format!("m{seed}-F32.gguf"));
        TinyModel { seed, ..TinyModel::default() }.write(&file).expect("write model");
        let body = std::fs::read(&file).expect("read model");
        bytes += body.len();
        let repo = format!("bench/m{seed}-GGUF");
        hub.serve_repo(&repo, &[(&format!("m{seed}-F32.gguf"), body)], &cdn);
        yaml.push_str(&format!("  - name: M{seed}\n    params: \"2.5M\"\n    gguf_repo: {repo}\n"));
    }
    cdn.throttle(rate_kib * 1024);
    yaml.push_str("engines:\n  - name: llama_cpp\n    suite: quick\n");
    println!(
        "{RUNS} runs, {:.1} MiB to download at {rate_kib} KiB/s ({:.1} s per model)",
        bytes as f64 / 1048576.0,
        bytes as f64 / RUNS as f64 / (rate_kib * 1024) as f64
    );
    for prefetch in [false, true] {
        let case = dir.path().join(format!("prefetch-{prefetch}"));
        std::fs::create_dir_all(case.join("home/suites")).expect("home");
        std::fs::write(case.join("home/suites/quick.yaml"), SUITE).expect("suite");
        let config = case.join("c.yaml");
        let disk =
            format!("disk:\n  reserve_gb: 0\n  cleanup_after_run: true\n  prefetch: {prefetch}\n");
        std::fs::write(&config, format!("{yaml}{disk}")).expect("config");
        let started = Instant::now();
        let output = Command::new(env!("CARGO_BIN_EXE_kitt"))
            .args(["--json", "--home"])
            .arg(case.join("home"))
            .args(["campaign", "run", "--campaign-id", "ahead"])
            .arg(&config)
            .env("KITT_MODELS_DIR", case.join("models"))
            .env_remove("KITT_OFFLINE")
            .env_remove("HF_HUB_OFFLINE")
            .envs(hub.env())
            .env("KITT_LLAMA_SERVER", &server)
            .env("KITT_LOG", "kitt=debug")
            .output()
            .expect("run the campaign");
        let wall = started.elapsed();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        let stderr = String::from_utf8_lossy(&output.stderr);
        let engines: f64 = stderr
            .lines()
            .filter(|line| line.contains("run timing"))
            .filter_map(|line| field(line, "engine_ms"))
            .sum();
        let downloads = download_time(&case.join("home"));
        println!(
            "prefetch {prefetch:5}: wall {:.1} s; engines (start + suite + stop) {:.1} s; \
             downloads {:.1} s; wall / engines {:.2}",
            wall.as_secs_f64(),
            engines / 1000.0,
            downloads.as_secs_f64(),
            wall.as_secs_f64() * 1000.0 / engines
        );
    }
}

/// The downloads' durations, summed.
fn download_time(home: &Path) -> Duration {
    let store = Store::open(home).expect("store");
    let at = |text: &str| text.parse::<jiff::Timestamp>().expect("timestamp");
    let downloads: f64 = store
        .campaign_downloads("ahead")
        .expect("downloads")
        .iter()
        .filter_map(|row| {
            let end = row.finished_at.as_deref()?;
            Some(at(end).duration_since(at(&row.started_at)).as_secs_f64())
        })
        .sum();
    Duration::from_secs_f64(downloads)
}

/// `name=value` from a tracing line.
fn field(line: &str, name: &str) -> Option<f64> {
    let start = line.find(&format!("{name}="))? + name.len() + 1;
    line[start..].split_whitespace().next()?.parse().ok()
}

fn llama_server() -> Option<PathBuf> {
    let recorded = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv-engine/llama-server-path");
    let path = PathBuf::from(std::fs::read_to_string(recorded).ok()?.trim());
    path.is_file().then_some(path)
}
