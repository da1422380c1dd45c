//! The wall time of a four-run campaign with `parallel: false` and `true`
//! on a fake two-GPU machine (tests/fakes/gpu/nvidia-smi first on the PATH),
//! with the setup's real llama-server on generated models.
//!
//! On this project's 2-core build machine both engines share the same two
//! cores, so the gain shown is the overlap of engine start-up, model loading
//! and kitt's own work, not of compute; on a machine with real GPUs each run
//! has its device to itself.
//!
//! Run with `cargo bench --bench parallel`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use kitt::gguf::TinyModel;

const ROUNDS: usize = 3;

fn main() {
    let Some(server) = llama_server() else {
        eprintln!("llama-server not installed (scripts/setup.sh): nothing to measure");
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let models = dir.path().join("models");
    let mut list = String::from("models:\n");
    for seed in 1..=4u64 {
        let repo = format!("bench/m{seed}-GGUF");
        let folder = models.join("huggingface").join(&repo);
        std::fs::create_dir_all(&folder).expect("model folder");
        TinyModel { seed, ..TinyModel::default() }
            .write(&folder.join(format!("m{seed}-F32.gguf")))
            .expect("write model");
        list.push_str(&format!("  - name: M{seed}\n    params: \"2.5M\"\n    gguf_repo: {repo}\n"));
    }
    list.push_str("engines:\n  - name: llama_cpp\n    suite: quick\n");
    list.push_str("disk:\n  reserve_gb: 0\n  cleanup_after_run: false\n");
    let mut times: [Vec<Duration>; 2] = [Vec::new(), Vec::new()];
    for round in 0..ROUNDS {
        for (slot, parallel) in [false, true].into_iter().enumerate() {
            let name = format!("bench-{parallel}-{round}");
            let config = dir.path().join(format!("{name}.yaml"));
            let yaml = format!("campaign_name: {name}\nparallel: {parallel}\n{list}");
            std::fs::write(&config, yaml).expect("config");
            times[slot].push(campaign(dir.path(), &models, &config, &server));
        }
    }
    for (slot, parallel) in [false, true].into_iter().enumerate() {
        println!("four runs, parallel: {parallel}: {}", spread(times[slot].clone()));
    }
    let median = |slot: usize| {
        let mut sorted = times[slot].clone();
        sorted.sort();
        sorted[sorted.len() / 2].as_secs_f64()
    };
    println!("parallel / serial wall time: {:.2}", median(1) / median(0));
}

fn campaign(dir: &Path, models: &Path, config: &Path, server: &Path) -> Duration {
    let fake = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fakes/gpu");
    let mut path = vec![fake];
    path.extend(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()));
    let started = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_kitt"))
        .args(["--json", "--home"])
        .arg(dir.join("home"))
        .args(["campaign", "run"])
        .arg(config)
        .env("PATH", std::env::join_paths(path).expect("PATH"))
        .env("FAKE_GPU_COUNT", "2")
        .env("KITT_MODELS_DIR", models)
        .env("KITT_OFFLINE", "1")
        .env("KITT_LLAMA_SERVER", server)
        .output()
        .expect("run the campaign");
    let wall = started.elapsed();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).expect("summary");
    assert_eq!(summary["status"], "completed", "{summary}");
    wall
}

fn spread(mut times: Vec<Duration>) -> String {
    times.sort();
    format!(
        "median {:.2} s, min {:.2} s, max {:.2} s",
        times[times.len() / 2].as_secs_f64(),
        times[0].as_secs_f64(),
        times[times.len() - 1].as_secs_f64()
    )
}

fn llama_server() -> Option<PathBuf> {
    let recorded = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv-engine/llama-server-path");
    let path = PathBuf::from(std::fs::read_to_string(recorded).ok()?.trim());
    path.is_file().then_some(path)
}
