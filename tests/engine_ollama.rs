//! The Ollama engine end to end: the real `kitt` binary starts
//! `tests/fakes/fake_ollama.py` as `ollama serve` (Ollama itself cannot run
//! here), which speaks Ollama's documented HTTP API over loopback, keeps its
//! models in `OLLAMA_MODELS` like the real store and records every request.
//! Covered: a library tag pulled once and measured through the native
//! `/api/chat` with the server's counters; a second run without a pull; an
//! unknown tag and a pull failing midway; a local GGUF uploaded, imported,
//! measured and removed; the server dying while loading; a campaign with an
//! `ollama` engine; `kitt engines list`; and settings checked where they
//! are written. After every run no fake server is left.

mod common;
mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::Outcome;
use common::ollama::{OllamaSetup as Setup, to};
use kitt::gguf::TinyModel;
use kitt::store::{ResultFilter, Store};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use support::FakeOllama;

fn result_of(outcome: &Outcome) -> Value {
    assert_eq!(outcome.code, 0, "stderr: {}\nstdout: {}", outcome.stderr, outcome.stdout);
    serde_json::from_str(&outcome.stdout).expect("one JSON object")
}

fn run_file(result: &Value, name: &str) -> String {
    let dir = Path::new(result["run_dir"].as_str().unwrap());
    std::fs::read_to_string(dir.join(name)).unwrap()
}

fn records(result: &Value) -> Vec<Value> {
    run_file(result, "requests.jsonl").lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// The `content` of a chat request's first message, `None` for a load (no messages).
fn prompt(chat: &Value) -> Option<&str> {
    chat["body"]["messages"][0]["content"].as_str()
}

#[test]
fn a_library_tag_is_pulled_once_and_measured_through_the_native_api() {
    let setup = Setup::new();
    let args = ["-m", "llama3.2:1b", "--engine-config", "context_size=4096"];

    let result = result_of(&setup.run("first.jsonl", &args, &[]));

    assert_eq!(result["passed"], true);
    assert_eq!(
        (&result["engine"]["name"], &result["engine"]["version"]),
        (&json!("ollama"), &json!("0.6.8"))
    );
    assert_eq!(result["model"]["name"], "llama3.2:1b");
    let comparability = &result["engine"]["comparability"];
    assert!(comparability["output_length"].as_str().unwrap().starts_with("not pinned"));
    assert!(comparability["num_ctx"].as_str().unwrap().starts_with("4096 in every request"));
    assert!(comparability["keep_alive"].as_str().unwrap().starts_with("-1"));
    assert_eq!(comparability["prompt_cache"], "defeated with a unique prefix per request");
    assert_eq!(result["engine"]["parameters"]["num_ctx"], "4096");
    assert_eq!(result["engine"]["parameters"]["model_bytes"], "131085", "the pulled layers");
    for record in records(&result) {
        let counters = &record["server_timings"];
        assert_eq!(record["output_tokens"], counters["eval_count"], "{record}");
        assert_eq!(record["output_tokens"], 128, "quick asks for 128 tokens: num_predict");
        assert_eq!(record["output_tokens_source"], "engine");
        assert_eq!(record["prompt_tokens"], counters["prompt_eval_count"]);
        for key in ["eval_duration", "prompt_eval_duration", "load_duration", "total_duration"] {
            assert!(counters[key].as_u64().unwrap() > 0, "{key} in {record}");
        }
        assert_eq!(record["finish_reason"], "length");
    }

    let requests = setup.requests("first.jsonl");
    let serve = &requests[0];
    assert_eq!(serve["argv"], json!(["serve"]));
    let env = &serve["env"];
    let port = result["engine"]["parameters"]["port"].as_str().unwrap();
    assert_eq!(env["OLLAMA_HOST"], format!("127.0.0.1:{port}"));
    assert_eq!(env["OLLAMA_MODELS"], setup.store().display().to_string());
    assert_eq!(
        (&env["OLLAMA_NUM_PARALLEL"], &env["OLLAMA_KEEP_ALIVE"]),
        (&json!("1"), &json!("-1"))
    );
    assert_eq!(env["OLLAMA_MAX_LOADED_MODELS"], "1");
    let pulls = to(&requests, "POST", "/api/pull");
    assert_eq!(pulls.len(), 1);
    assert_eq!(pulls[0]["body"], json!({ "model": "llama3.2:1b", "stream": true }));

    let chats = to(&requests, "POST", "/api/chat");
    assert_eq!(prompt(chats[0]), None, "the model is loaded first");
    assert_eq!(chats[0]["body"]["stream"], false);
    assert_eq!(prompt(chats[1]), Some("Say hello."), "then warmed up");
    assert_eq!(chats[1]["body"]["stream"], false);
    for chat in &chats {
        assert_eq!(chat["body"]["options"]["num_ctx"], 4096, "{chat}");
        assert_eq!(chat["body"]["keep_alive"], -1, "{chat}");
    }
    let measured: Vec<&&Value> =
        chats.iter().filter(|c| prompt(c).is_some_and(|p| p.starts_with("[request "))).collect();
    assert_eq!(measured.len(), 3 + 5, "three suite warm-ups and five measured requests");
    for chat in &measured[3..] {
        let body = &chat["body"];
        assert_eq!(body["stream"], true);
        assert_eq!(body["model"], "llama3.2:1b");
        assert_eq!(
            body["options"],
            json!({ "num_ctx": 4096, "num_predict": 128, "temperature": 0.0 })
        );
    }
    let loads = requests.iter().filter(|r| r["event"] == "load").count();
    assert_eq!(loads, 1, "every request carries the load's options, so nothing reloads");

    let log = run_file(&result, "engine.log");
    assert!(log.contains("kitt: pulling llama3.2:1b\n"), "{log}");
    assert!(log.contains("kitt: pulling llama3.2:1b: 100% of "), "{log}");
    let partial = log.lines().filter_map(|line| line.strip_prefix("kitt: pulling llama3.2:1b: "));
    let percents: Vec<u64> =
        partial.filter_map(|rest| rest.split('%').next()?.parse().ok()).collect();
    assert!(percents.iter().any(|p| (1..100).contains(p)), "pull progress in the log: {log}");
    let port: u16 = port.parse().unwrap();
    assert!(std::net::TcpListener::bind(("127.0.0.1", port)).is_ok(), "the port was released");

    let args = [
        "-m",
        "llama3.2:1b",
        "--engine-config",
        "parallel=2",
        "--engine-config",
        "context_size=4096",
        "--engine-config",
        "keep_alive=30m",
        "--engine-config",
        "threads=2",
        "--engine-config",
        "gpu_layers=-1",
        "--engine-config",
        "extra_args=OLLAMA_FLASH_ATTENTION=1",
    ];
    let again = result_of(&setup.run("second.jsonl", &args, &[]));
    assert_eq!(again["passed"], true);
    let requests = setup.requests("second.jsonl");
    assert!(to(&requests, "POST", "/api/pull").is_empty(), "the model is in the store already");
    assert_eq!(requests[0]["env"]["OLLAMA_NUM_PARALLEL"], "2");
    assert_eq!(requests[0]["env"]["OLLAMA_KEEP_ALIVE"], "30m");
    assert_eq!(requests[0]["env"]["OLLAMA_FLASH_ATTENTION"], "1");
    assert_eq!(again["engine"]["parameters"]["OLLAMA_FLASH_ATTENTION"], "1");
    for chat in to(&requests, "POST", "/api/chat") {
        let options = &chat["body"]["options"];
        assert_eq!(options["num_ctx"], 2048, "4096 over two slots: {chat}");
        assert_eq!((&options["num_thread"], &options["num_gpu"]), (&json!(2), &json!(999)));
        assert_eq!(chat["body"]["keep_alive"], "30m");
    }
    assert!(run_file(&again, "engine.log").contains("kitt: llama3.2:1b is in the Ollama store"));
}

#[test]
fn an_unknown_tag_or_a_full_disk_fails_the_pull_at_once_with_the_servers_reason() {
    let setup = Setup::new();

    let outcome =
        setup.run("unknown.jsonl", &["-m", "nosuch:1b"], &[("FAKE_OLLAMA_UNKNOWN", "nosuch:1b")]);

    assert_eq!(outcome.code, 1, "{outcome:?}");
    assert!(outcome.stderr.contains("cannot make `nosuch:1b` available"), "{}", outcome.stderr);
    assert!(
        outcome.stderr.contains("pull model manifest: file does not exist"),
        "{}",
        outcome.stderr
    );
    let requests = setup.requests("unknown.jsonl");
    assert_eq!(to(&requests, "POST", "/api/pull").len(), 1, "a missing tag is not retried");
    assert!(to(&requests, "POST", "/api/chat").is_empty(), "nothing is measured");

    let env = [("FAKE_OLLAMA_PULL_FAULTS", "nospace"), ("FAKE_OLLAMA_PULL_STEP_MS", "10")];
    let outcome = setup.run("full.jsonl", &["-m", "qwen2.5:0.5b"], &env);
    assert_eq!(outcome.code, 1, "{outcome:?}");
    assert!(outcome.stderr.contains("no space left on device"), "{}", outcome.stderr);
    assert!(outcome.stderr.contains("free space there"), "{}", outcome.stderr);
    assert_eq!(to(&setup.requests("full.jsonl"), "POST", "/api/pull").len(), 1);
}

/// Every attempt fails at the same point of the same layer, which Ollama
/// resumes: after the first, no attempt gets further, and after five such
/// attempts in a row kitt gives up (waiting 1, 1, 2, 4 and 8 s between them).
#[test]
fn a_pull_that_keeps_failing_is_given_up_naming_the_attempts_and_the_last_cause() {
    let setup = Setup::new();
    let env = [("FAKE_OLLAMA_PULL_FAIL", "qwen2.5:0.5b"), ("FAKE_OLLAMA_PULL_STEP_MS", "10")];

    let outcome = setup.run("midway.jsonl", &["-m", "qwen2.5:0.5b"], &env);

    assert_eq!(outcome.code, 1, "{outcome:?}");
    let expected = "cannot make `qwen2.5:0.5b` available: gave up on the pull of \
                    `qwen2.5:0.5b` after 6 attempts, the last 5 without new bytes; last: \
                    max retries exceeded: unexpected EOF";
    assert!(outcome.stderr.contains(expected), "{}", outcome.stderr);
    let requests = setup.requests("midway.jsonl");
    assert_eq!(to(&requests, "POST", "/api/pull").len(), 6);
    assert!(to(&requests, "POST", "/api/chat").is_empty(), "nothing is measured");
    let phases: Vec<&str> = outcome
        .stderr
        .lines()
        .filter(|line| line.starts_with("pulling qwen2.5:0.5b: attempt"))
        .collect();
    assert_eq!(phases.len(), 5, "a phase for each retry: {}", outcome.stderr);
    assert_eq!(
        phases[0],
        "pulling qwen2.5:0.5b: attempt 1 failed (max retries exceeded: unexpected EOF); \
         retrying in 1 s"
    );
}

#[test]
fn a_local_gguf_is_uploaded_imported_measured_and_removed_afterwards() {
    let setup = Setup::new();
    let dir = setup.scratch.path().join("models");
    std::fs::create_dir_all(&dir).unwrap();
    let model = dir.join("tiny-Q8_0.gguf");
    TinyModel::default().write(&model).unwrap();
    let bytes = std::fs::read(&model).unwrap();
    let digest = format!("sha256:{:x}", Sha256::digest(&bytes));
    let args = ["-m", model.to_str().unwrap(), "--engine-config", "context_size=1024"];

    let result = result_of(&setup.run("import.jsonl", &args, &[]));

    assert_eq!(result["passed"], true);
    let name = "kitt-tiny:q8_0";
    assert_eq!(result["engine"]["parameters"]["model"], name);
    let modelfile = format!("FROM {}\nPARAMETER num_ctx 1024\n", model.display());
    assert_eq!(result["engine"]["parameters"]["modelfile"], modelfile);
    let requests = setup.requests("import.jsonl");
    let blob = format!("/api/blobs/{digest}");
    assert_eq!(to(&requests, "HEAD", &blob).len(), 1);
    let uploads = to(&requests, "POST", &blob);
    assert_eq!(uploads.len(), 1, "uploaded once, with the digest the server checks");
    assert_eq!(uploads[0]["bytes"], bytes.len());
    let creates = to(&requests, "POST", "/api/create");
    assert_eq!(
        creates[0]["body"],
        json!({
            "model": name,
            "files": { "tiny-Q8_0.gguf": digest },
            "parameters": { "num_ctx": 1024 },
            "stream": true,
        })
    );
    let chats = to(&requests, "POST", "/api/chat");
    assert!(chats.iter().all(|chat| chat["body"]["model"] == name));
    let last = requests.last().unwrap();
    assert_eq!((&last["method"], &last["path"]), (&json!("DELETE"), &json!("/api/delete")));
    assert_eq!(last["body"], json!({ "model": name }), "the import is removed after the run");
    let manifest = setup.store().join("manifests/registry.ollama.ai/library/kitt-tiny/q8_0");
    assert!(!manifest.exists(), "the store no longer lists {name}");
    let log = run_file(&result, "engine.log");
    assert!(log.contains(&format!("kitt: FROM {}\n", model.display())), "{log}");
    assert!(log.contains("kitt: PARAMETER num_ctx 1024\n"), "{log}");

    // A blob the server already has is not sent again.
    std::fs::write(setup.store().join("blobs").join(digest.replace(':', "-")), &bytes).unwrap();
    let again = result_of(&setup.run("again.jsonl", &args, &[]));
    assert_eq!(again["passed"], true);
    let requests = setup.requests("again.jsonl");
    assert_eq!(to(&requests, "HEAD", &blob).len(), 1);
    assert!(to(&requests, "POST", &blob).is_empty(), "no second upload");
    assert_eq!(to(&requests, "DELETE", "/api/delete").len(), 1);
}

#[test]
fn a_sharded_gguf_is_refused_before_anything_is_uploaded() {
    let setup = Setup::new();
    let dir = setup.scratch.path().join("split");
    std::fs::create_dir_all(&dir).unwrap();
    let first = dir.join("tiny-Q8_0-00001-of-00002.gguf");
    TinyModel::default().write(&first).unwrap();
    TinyModel::default().write(&dir.join("tiny-Q8_0-00002-of-00002.gguf")).unwrap();

    let outcome = setup.run("split.jsonl", &["-m", first.to_str().unwrap()], &[]);

    assert_eq!(outcome.code, 1, "{outcome:?}");
    assert!(outcome.stderr.contains("cannot import a sharded GGUF"), "{}", outcome.stderr);
    let requests = setup.requests("split.jsonl");
    assert!(requests.iter().all(|r| !r["path"].as_str().unwrap_or("").starts_with("/api/blobs")));
}

#[test]
fn the_server_dying_while_loading_is_reported_with_its_log() {
    let setup = Setup::new();

    let outcome =
        setup.run("dies.jsonl", &["-m", "llama3.2:1b"], &[("FAKE_OLLAMA_DIE_ON_LOAD", "1")]);

    assert_eq!(outcome.code, 1, "{outcome:?}");
    assert!(outcome.stderr.contains("the engine exited while loading"), "{}", outcome.stderr);
    assert!(outcome.stderr.contains("error loading llama server"), "{}", outcome.stderr);
}

#[test]
fn a_campaign_runs_an_ollama_tag_end_to_end() {
    let setup = Setup::new();
    let registry = FakeOllama::start();
    registry.add_model("llama3.2", &[("1b", &FakeOllama::digest("llama3.2-1b"), 1_300_000_000)]);
    let yaml = format!(
        "campaign_name: tags\nmodels:\n  - name: Llama\n    params: 1B\n    ollama_tag: \"llama3.2:1b\"\n\
         engines:\n  - name: ollama\n    suite: quick\n    config:\n      binary: {}\n      \
         keep_alive: -1\n      context_size: 2048\ndisk:\n  reserve_gb: 0\n",
        setup.ollama.display()
    );
    let file = setup.scratch.write("campaign.yaml", &yaml);
    let requests = setup.scratch.path().join("campaign.jsonl");

    let mut command = setup.scratch.kitt();
    command
        .env_remove("KITT_OFFLINE")
        .envs(registry.env())
        .env("FAKE_OLLAMA_REQUESTS", &requests)
        .env("FAKE_OLLAMA_PULL_STEP_MS", "10")
        .args(["--json", "campaign", "run", file.to_str().unwrap()]);
    let outcome = setup.scratch.run(&mut command);
    setup.no_server_left();

    assert_eq!(outcome.code, 0, "stdout: {}\nstderr: {}", outcome.stdout, outcome.stderr);
    let summary: Value = serde_json::from_str(&outcome.stdout).unwrap();
    let runs = summary["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 1, "{summary}");
    assert_eq!(
        (&runs[0]["key"], &runs[0]["status"]),
        (&json!("Llama|ollama|1b"), &json!("success"))
    );
    let store = Store::open(&setup.scratch.home()).unwrap();
    let results = store.results(&ResultFilter::default()).unwrap();
    assert_eq!(results.len(), 1);
    let stored = store.result(&results[0].id).unwrap().expect("the result is stored");
    assert_eq!(stored.engine.name, "ollama");
    assert_eq!(stored.engine.parameters["num_ctx"], "2048");
    assert_eq!(stored.model.name, "llama3.2:1b");
    let recorded = setup.requests("campaign.jsonl");
    assert_eq!(to(&recorded, "POST", "/api/pull")[0]["body"]["model"], "llama3.2:1b");
}

#[test]
fn engines_list_shows_the_ollama_binary_on_path_and_its_version() {
    let setup = Setup::new();
    let bin = setup.ollama.parent().unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());

    let listed = |path: &str| {
        let mut command = setup.scratch.kitt();
        command.env("PATH", path).args(["--json", "engines", "list"]);
        let outcome = setup.scratch.run(&mut command);
        assert_eq!(outcome.code, 0, "{outcome:?}");
        let rows: Value = serde_json::from_str(&outcome.stdout).unwrap();
        rows.as_array().unwrap().iter().find(|row| row["engine"] == "ollama").unwrap().clone()
    };

    let row = listed(&path);
    assert_eq!(row["usable"], true);
    assert_eq!(row["detail"], format!("{} (version 0.6.8)", setup.ollama.display()));
    assert_eq!(row["formats"], json!(["ollama", "gguf"]));

    let row = listed("/nonexistent");
    assert_eq!(row["usable"], false);
    assert!(row["detail"].as_str().unwrap().contains("cannot find the `ollama` server"), "{row}");
}

#[test]
fn ollama_settings_are_checked_where_they_are_written() {
    let setup = Setup::new();
    let yaml = "campaign_name: c\nmodels:\n  - name: M\n    ollama_tag: \"llama3.2:1b\"\n\
                engines:\n  - name: ollama\n    config:\n      keep_alive: 0\n      \
                extra_args: [--verbose]\n  - name: llama_cpp\n    config:\n      keep_alive: 30m\n";
    setup.scratch.write("bad.yaml", yaml);
    let outcome = setup.scratch.dry_run("bad.yaml", &[]);
    assert_eq!(outcome.code, 2, "{outcome:?}");
    for expected in [
        "bad.yaml:8:19",
        "`engines[0].config.keep_alive`: `0` would unload the model after every request",
        "`engines[0].config.extra_args`: `--verbose`: `ollama serve` takes no flags",
        "bad.yaml:12:19",
        "`engines[1].config.keep_alive`: engine `llama_cpp` has no `keep_alive`",
    ] {
        assert!(outcome.stderr.contains(expected), "{expected}: {}", outcome.stderr);
    }

    let refused = |args: &[&str], expected: &str| {
        let mut command = setup.scratch.kitt();
        command.env("KITT_OLLAMA", &setup.ollama).arg("run").args(args);
        let outcome = setup.scratch.run(&mut command);
        assert_eq!(outcome.code, 2, "{args:?}: {outcome:?}");
        assert!(outcome.stderr.contains(expected), "{args:?}: {}", outcome.stderr);
    };
    refused(&["-m", "x:1b", "-e", "ollama", "--engine-config", "keep_alive=never"], "`keep_alive`");
    refused(
        &["-m", "x.gguf", "-e", "llama_cpp", "--engine-config", "keep_alive=5m"],
        "only `ollama`",
    );
    refused(
        &["-m", "llama3.2:1b", "-e", "ollama", "--quant", "Q8_0"],
        "a tag names its quantization",
    );
    refused(&["-m", "missing/model.gguf", "-e", "ollama"], "is neither a GGUF file");
    refused(&["-m", "bad tag", "-e", "ollama"], "is not an Ollama model name");
    refused(&["-m", "x:1b", "-e", "ollama", "--engine-config", "extra_args=-v"], "takes no flags");
}

/// One HTTP/1.1 exchange over a fresh connection: the status and the body.
fn http(port: u16, method: &str, path: &str, body: &[u8]) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let status = answer.split(' ').nth(1).and_then(|code| code.parse().ok()).unwrap_or(0);
    (status, answer.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned())
}

/// The fake refuses an upload whose bytes do not match the digest in its
/// path, as the real server does, so the import test above can trust it.
#[test]
fn the_fake_refuses_a_blob_whose_digest_does_not_match() {
    let setup = Setup::new();
    let port = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap().local_addr().unwrap().port();
    let mut server = Command::new(&setup.ollama)
        .arg("serve")
        .env("OLLAMA_HOST", format!("127.0.0.1:{port}"))
        .env("OLLAMA_MODELS", setup.store())
        .env("FAKE_OLLAMA_STARTUP_MS", "0")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the fake never listened");
        std::thread::sleep(Duration::from_millis(20));
    }

    let wrong = format!("sha256:{:x}", Sha256::digest(b"other"));
    let (status, body) = http(port, "POST", &format!("/api/blobs/{wrong}"), b"GGUF data");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("digest mismatch"), "{body}");
    let right = format!("sha256:{:x}", Sha256::digest(b"GGUF data"));
    assert_eq!(http(port, "POST", &format!("/api/blobs/{right}"), b"GGUF data").0, 201);
    assert_eq!(http(port, "HEAD", &format!("/api/blobs/{right}"), b"").0, 200);

    server.kill().unwrap();
    server.wait().unwrap();
}
