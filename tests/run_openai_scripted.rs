//! `kitt run -e openai` against a scripted loopback server that streams like
//! an OpenAI-compatible engine: kitt measures what the script dictates,
//! counts failures in the error rate, and refuses a server without the model.

mod common;
mod support;

use std::time::Duration;

use common::Scratch;
use serde_json::Value;
use support::stream::{Script, ScriptedStream};

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
