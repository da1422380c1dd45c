//! The project's own random llama model against the real llama-server: it loads,
//! every request runs to exactly its token limit in printable single-byte tokens,
//! its chat template works, llama-quantize and llama-gguf-split accept it, and the
//! slow preset is slower than the instant one. Also the `kitt-make-model` CLI.
//!
//! Tests that need the engine return early with a notice when it is not
//! installed (see `support/engine.rs`); `KITT_REQUIRE_ENGINE=1` makes that fatal.

#[path = "support/engine.rs"]
mod engine;

use std::path::Path;
use std::process::Command;

use engine::{Engine, LlamaServer, make_model};
use kitt::gguf::{TensorType, TinyModel, read_info};
use serde_json::{Value, json};

/// llama.cpp's `general.file_type` for Q4_K_M.
const FILE_TYPE_Q4_K_M: u32 = 15;

fn is_printable(text: &str) -> bool {
    text.bytes().all(|byte| (0x20..=0x7e).contains(&byte))
}

async fn post(server: &LlamaServer, path: &str, body: Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{}{path}", server.url()))
        .json(&body)
        .send()
        .await
        .unwrap_or_else(|error| panic!("POST {path}: {error}"))
        .error_for_status()
        .unwrap_or_else(|error| panic!("POST {path}: {error}\n{}", server.log()))
}

/// Runs `/completion` and checks it produced exactly `n` printable tokens; returns tok/s.
async fn complete_exactly(server: &LlamaServer, n: u64, sampling: Value) -> f64 {
    let mut body = json!({ "prompt": "Hello world", "n_predict": n, "cache_prompt": false });
    if let (Some(body), Some(sampling)) = (body.as_object_mut(), sampling.as_object()) {
        body.extend(sampling.clone());
    }
    let answer: Value = post(server, "/completion", body).await.json().await.expect("JSON");

    let content = answer["content"].as_str().expect("content");
    assert_eq!(answer["tokens_predicted"], n, "{answer}");
    assert_eq!(answer["timings"]["predicted_n"], n, "{answer}");
    assert_eq!(answer["stop_type"], "limit", "{answer}");
    // One byte per token: the model emits only printable single-byte tokens.
    assert_eq!(content.len() as u64, n, "{content:?}");
    assert!(is_printable(content), "{content:?}");
    answer["timings"]["predicted_per_second"].as_f64().expect("a generation rate")
}

/// Streams a chat completion and returns the content of every chunk that has some.
async fn stream_chat(server: &LlamaServer, max_tokens: u64) -> (Vec<String>, Value) {
    let body = json!({
        "messages": [{ "role": "user", "content": "Say something." }],
        "max_tokens": max_tokens,
        "stream": true,
        "stream_options": { "include_usage": true },
    });
    let text = post(server, "/v1/chat/completions", body).await.text().await.expect("body");

    let events: Vec<Value> = text
        .lines()
        .filter_map(|line| line.strip_prefix("data: "))
        .filter(|data| *data != "[DONE]")
        .map(|data| serde_json::from_str(data).expect("each event is JSON"))
        .collect();
    let contents = events
        .iter()
        .filter_map(|event| event["choices"][0]["delta"]["content"].as_str())
        .filter(|content| !content.is_empty())
        .map(str::to_owned)
        .collect();
    let last_with_choice = events.iter().rev().find(|e| e["choices"][0].is_object());
    let finish = last_with_choice.map(|e| e["choices"][0]["finish_reason"].clone());
    let usage = events.iter().find(|e| e["usage"].is_object()).map(|e| e["usage"].clone());
    (contents, json!({ "finish_reason": finish, "usage": usage }))
}

#[tokio::test]
async fn every_request_runs_to_its_limit_in_printable_single_bytes() {
    let Some(engine) = Engine::find() else { return };
    let dir = tempfile::tempdir().expect("temp dir");
    let model = make_model(dir.path(), &TinyModel::default());
    let server = LlamaServer::start(&engine, &model, &[]);

    let rate = complete_exactly(&server, 32, json!({})).await;
    println!("instant F32: {rate:.0} tok/s");
    // Even unfiltered sampling at a high temperature never leaves the printable rows.
    let raw = json!({ "temperature": 2.0, "top_k": 0, "top_p": 1.0, "min_p": 0.0, "seed": 1 });
    complete_exactly(&server, 32, raw).await;

    let (chunks, end) = stream_chat(&server, 16).await;
    assert_eq!(chunks.len(), 16, "{chunks:?}");
    assert!(chunks.iter().all(|c| c.len() == 1 && is_printable(c)), "{chunks:?}");
    assert_eq!(end["finish_reason"], "length", "{end}");
    assert_eq!(end["usage"]["completion_tokens"], 16, "{end}");
}

#[tokio::test]
async fn quantized_and_split_models_load_and_generate() {
    let Some(engine) = Engine::find() else { return };
    let dir = tempfile::tempdir().expect("temp dir");
    let model = make_model(dir.path(), &TinyModel::default());
    let quantized = dir.path().join("tiny-Q4_K_M.gguf");
    engine.quantize(&model, &quantized, "Q4_K_M");

    let info = read_info(&quantized).expect("read the quantized file");
    assert_eq!(info.file_type, Some(FILE_TYPE_Q4_K_M));
    assert_eq!(info.parameter_count, TinyModel::default().parameter_count());
    let half = (info.tensor_count as usize).div_ceil(2);
    let shards = engine.split(&quantized, &dir.path().join("split/tiny-Q4_K_M"), half);
    assert_eq!(shards.len(), 2, "{shards:?}");
    let first = read_info(&shards[0]).expect("read the first shard");
    assert_eq!(first.split_count, Some(2));
    println!("sizes: F32 {} B, Q4_K_M {} B, shards {:?}", size(&model), size(&quantized), {
        shards.iter().map(|shard| size(shard)).collect::<Vec<_>>()
    });

    for (label, path) in [("Q4_K_M", &quantized), ("Q4_K_M split", &shards[0])] {
        let server = LlamaServer::start(&engine, path, &[]);
        let rate = complete_exactly(&server, 32, json!({})).await;
        println!("instant {label}: {rate:.0} tok/s");
        let (chunks, _) = stream_chat(&server, 16).await;
        assert_eq!(chunks.len(), 16, "{label}: {chunks:?}");
    }
}

#[tokio::test]
async fn the_slow_preset_generates_slower_than_the_instant_one() {
    let Some(engine) = Engine::find() else { return };
    let dir = tempfile::tempdir().expect("temp dir");
    let mut rates = Vec::new();
    for model in [TinyModel::instant(), TinyModel::measurably_slow()] {
        let path = make_model(dir.path(), &model);
        let server = LlamaServer::start(&engine, &path, &[]);
        let rate = complete_exactly(&server, 64, json!({})).await;
        println!("{}: {} B, {rate:.1} tok/s", model.name(), size(&path));
        rates.push(rate);
    }
    assert!(rates[1] < rates[0], "slow {} tok/s vs instant {} tok/s", rates[1], rates[0]);
}

fn size(path: &Path) -> u64 {
    std::fs::metadata(path).map(|meta| meta.len()).unwrap_or(0)
}

fn make_model_cli() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kitt-make-model"))
}

#[test]
fn the_cli_writes_the_same_bytes_for_the_same_seed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let write = |name: &str, seed: &str| {
        let path = dir.path().join(name);
        let output = make_model_cli()
            .arg(&path)
            .args(["--layers", "2", "--type", "f16", "--seed", seed])
            .output()
            .expect("run kitt-make-model");
        assert!(output.status.success(), "{output:?}");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(stdout.contains(&path.display().to_string()) && stdout.contains(" bytes"));
        std::fs::read(&path).expect("read the model")
    };
    let (first, again, other) = (write("a.gguf", "5"), write("b.gguf", "5"), write("c.gguf", "6"));
    assert_eq!(first, again);
    assert_ne!(first, other);

    let expected = TinyModel { layers: 2, seed: 5, dtype: TensorType::F16, ..TinyModel::default() };
    let reference = dir.path().join("reference.gguf");
    expected.write(&reference).expect("write through the library");
    assert_eq!(std::fs::read(&reference).expect("read"), first);
}

#[test]
fn the_cli_refuses_bad_shapes_with_status_2() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("bad.gguf");
    let cases: [&[&str]; 4] =
        [&["--width", "300"], &["--heads", "0"], &["--kv-heads", "3"], &["--type", "q4_0"]];
    for args in cases {
        let output = make_model_cli().arg(&out).args(args).output().expect("run");
        assert_eq!(output.status.code(), Some(2), "{args:?}: {output:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("error"), "{args:?}: {stderr}");
        assert!(!out.exists(), "{args:?} wrote a file");
    }
}
