//! `kitt run -e openai` against a scripted loopback server that streams like
//! an OpenAI-compatible engine: kitt measures what the script dictates,
//! counts failures in the error rate, and refuses a server without the model.

mod common;
mod support;

use std::time::Duration;

use common::Scratch;
use serde_json::Value;
use support::stream::{Script, ScriptedStream, llama};

fn run_against(server: &ScriptedStream, model: &str) -> common::Outcome {
    let scratch = Scratch::new();
    let base_url = format!("base_url={}/v1", server.url());
    let mut command = scratch.kitt();
    command.args(["--json", "run", "-m", model, "-e", "openai", "--engine-config", &base_url]);
    scratch.run(&mut command)
}

#[test]
fn scripted_timing_reaches_the_stored_metrics() {
    let tokens = ["a"; 16];
    let server =
        ScriptedStream::start(Script::chat("served-model", &tokens, Duration::from_millis(20)));
    server.serve_models(&["served-model"]);

    let outcome = run_against(&server, "served-model");

    assert_eq!(outcome.code, 0, "{}", outcome.stderr);
    let result: Value = serde_json::from_str(&outcome.stdout).unwrap();
    let metrics = &result["benchmarks"][0]["metrics"];
    assert_eq!(metrics["error_rate"], 0.0);
    let tpot = metrics["tpot_ms_p50"].as_f64().unwrap();
    assert!(tpot >= 19.0, "scripted 20 ms between tokens, measured {tpot}");
    assert!(metrics["ttft_ms_p50"].as_f64().unwrap() < metrics["e2e_ms_p50"].as_f64().unwrap());
    let body = server.bodies().pop().unwrap();
    assert_eq!(body["stream"], true);
    assert_eq!(body["stream_options"]["include_usage"], true);
    let prompt = body["messages"][0]["content"].as_str().unwrap();
    assert!(prompt.starts_with("[request "), "a unique prefix defeats the cache: {prompt}");
    assert_eq!(result["engine"]["name"], "openai");
}

#[test]
fn a_server_failing_every_request_fails_the_run_with_exit_1() {
    let server = ScriptedStream::start(Script::error(500, "{\"error\":\"boom\"}"));
    server.serve_models(&["m"]);

    let outcome = run_against(&server, "m");

    assert_eq!(outcome.code, 1, "{}", outcome.stderr);
    let result: Value = serde_json::from_str(&outcome.stdout).unwrap();
    assert_eq!(result["passed"], false);
    let reason = result["benchmarks"][0]["status"]["reason"].as_str().unwrap();
    assert!(reason.contains("every request failed") && reason.contains("http"), "{reason}");
}

#[test]
fn a_server_that_does_not_serve_the_model_is_refused() {
    let server = ScriptedStream::start(Script::chat("other", &["a"], Duration::ZERO));
    server.serve_models(&["other"]);

    let outcome = run_against(&server, "wanted");

    assert_eq!(outcome.code, 1, "{}", outcome.stderr);
    assert!(outcome.stderr.contains("not `wanted`"), "{}", outcome.stderr);
    assert_eq!(server.requests("/v1/chat/completions"), 0, "nothing was measured");
}

#[test]
fn a_stream_that_ends_with_usage_but_holds_the_connection_is_complete() {
    let model = "m";
    let script = Script::sse()
        .event(Duration::ZERO, &llama::role(model))
        .event(Duration::from_millis(5), &llama::content(model, "a"))
        .event(Duration::from_millis(5), &llama::content(model, "b"))
        .event(Duration::ZERO, &llama::finish(model, "length"))
        .event(Duration::ZERO, &serde_json::json!({"choices": [], "model": model, "usage": {"completion_tokens": 2, "prompt_tokens": 5}}))
        .keep_alive(Duration::from_secs(120));
    let server = ScriptedStream::start(script);
    server.serve_models(&[model]);
    let started = std::time::Instant::now();

    let outcome = run_against(&server, model);

    assert_eq!(outcome.code, 0, "{}", outcome.stderr);
    assert!(started.elapsed() < Duration::from_secs(60), "kitt waited for the connection to close");
    let result: Value = serde_json::from_str(&outcome.stdout).unwrap();
    assert_eq!(result["benchmarks"][0]["metrics"]["error_rate"], 0.0);
}

#[test]
fn credentials_in_base_url_are_refused_without_being_shown() {
    let scratch = Scratch::new();
    let mut command = scratch.kitt();
    command.args([
        "run",
        "-m",
        "m",
        "-e",
        "openai",
        "--engine-config",
        "base_url=http://alice:SEKRIT@127.0.0.1:9/v1",
    ]);
    let outcome = scratch.run(&mut command);
    assert_eq!(outcome.code, 2, "{}", outcome.stderr);
    assert!(!outcome.stderr.contains("SEKRIT"), "{}", outcome.stderr);
}

#[test]
fn engine_parameters_that_do_not_apply_are_refused() {
    let scratch = Scratch::new();
    let mut command = scratch.kitt();
    command.args([
        "run",
        "-m",
        "m",
        "-e",
        "openai",
        "--engine-config",
        "base_url=http://127.0.0.1:9",
    ]);
    command.args(["--engine-config", "threads=3"]);
    let outcome = scratch.run(&mut command);
    assert_eq!(outcome.code, 2, "{}", outcome.stderr);
    assert!(outcome.stderr.contains("`threads` does not apply to `openai`"), "{}", outcome.stderr);
}

#[test]
fn a_model_that_is_not_there_is_refused_before_anything_is_written() {
    let scratch = Scratch::new();
    let mut command = scratch.kitt();
    command.args(["run", "-m", "m", "-e", "vllm"]);
    let outcome = scratch.run(&mut command);
    assert_eq!(outcome.code, 2, "{}", outcome.stderr);
    assert!(outcome.stderr.contains("`m` is neither a GGUF file"), "{}", outcome.stderr);
    assert!(!scratch.home().exists(), "nothing may be created for a refused run");
}

#[test]
fn a_locked_store_is_found_before_any_request_is_sent() {
    let server = ScriptedStream::start(Script::chat("m", &["a"], Duration::ZERO));
    server.serve_models(&["m"]);
    let scratch = Scratch::new();
    std::fs::create_dir_all(scratch.home()).unwrap();
    kitt::store::Store::open(&scratch.home()).unwrap();
    let holder = rusqlite_lock(&scratch.home().join("kitt.db"));

    let base_url = format!("base_url={}/v1", server.url());
    let mut command = scratch.kitt();
    command.args(["run", "-m", "m", "-e", "openai", "--engine-config", &base_url]);
    let outcome = scratch.run(&mut command);

    drop(holder);
    assert_eq!(outcome.code, 3, "{}", outcome.stderr);
    assert!(outcome.stderr.contains("locked"), "{}", outcome.stderr);
    assert_eq!(
        server.requests("/v1/chat/completions"),
        0,
        "no measurement before the store is known good"
    );
}

#[test]
fn an_unwritable_output_directory_is_found_before_any_request_is_sent() {
    let server = ScriptedStream::start(Script::chat("m", &["a"], Duration::ZERO));
    server.serve_models(&["m"]);
    let scratch = Scratch::new();
    let not_a_dir = scratch.write("plain-file", "x");
    let base_url = format!("base_url={}/v1", server.url());
    let mut command = scratch.kitt();
    command
        .args(["run", "-m", "m", "-e", "openai", "--engine-config", &base_url, "-o"])
        .arg(&not_a_dir);

    let outcome = scratch.run(&mut command);

    assert_eq!(outcome.code, 3, "{}", outcome.stderr);
    assert!(
        outcome.stderr.contains("plain-file"),
        "the message names the path: {}",
        outcome.stderr
    );
    assert_eq!(server.requests("/v1/chat/completions"), 0);
}

/// Holds an exclusive lock on a SQLite database until dropped.
fn rusqlite_lock(path: &std::path::Path) -> std::process::Child {
    let script = format!(
        "import sqlite3, time\nc = sqlite3.connect({path:?}, isolation_level=None)\nc.execute('BEGIN EXCLUSIVE')\nprint('locked', flush=True)\ntime.sleep(60)\n",
        path = path.display().to_string()
    );
    let mut child = std::process::Command::new("python3")
        .args(["-c", &script])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "locked");
    child
}
