//! The engines kitt starts as OpenAI-compatible servers — vLLM, SGLang,
//! ExLlamaV2 through TabbyAPI, and `mlx_lm.server` — run by the real `kitt`
//! against `tests/fakes/fake_openai_server.py`, which plays each server as its
//! real command line invokes it and records that command line and every
//! request. Asserted: the exact command lines, the readiness sequence, the
//! request bodies, the comparability settings stored with each result,
//! start-up failures (memory errors classified and not retried with the same
//! settings), and that no engine process outlives its run.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Outcome, Scratch};
use serde_json::Value;

const FAKE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fakes/fake_openai_server.py");
/// The checkpoint every test serves, and the name kitt gives it.
const CHECKPOINT: &str = "models/org/Tiny-Instruct";
const SERVED: &str = "Tiny-Instruct-BF16";

/// A scratch directory with the fake installed under each engine's program
/// name, a safetensors checkpoint, and the fake's record file.
struct Fake {
    scratch: Scratch,
}

impl Fake {
    fn new() -> Self {
        let scratch = Scratch::new();
        for link in ["bin/vllm", "bin/python-sglang", "bin/mlx_lm.server", "tabby/main.py"] {
            let path = scratch.path().join(link);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::os::unix::fs::symlink(FAKE, &path).unwrap();
        }
        checkpoint(&scratch.path().join(CHECKPOINT));
        Fake { scratch }
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.scratch.path().join(relative)
    }

    /// What the engine config's `binary` is for each engine.
    fn program(&self, engine: &str) -> PathBuf {
        let link = match engine {
            "vllm" => "bin/vllm",
            "sglang" => "bin/python-sglang",
            "exllamav2" => "tabby/main.py",
            "mlx" => "bin/mlx_lm.server",
            other => panic!("no fake for {other}"),
        };
        self.path(link)
    }

    fn kitt(&self, env: &[(&str, &str)]) -> Command {
        let mut command = self.scratch.kitt();
        command.env("FAKE_SERVER_LOG", self.path("fake.jsonl")).envs(env.iter().copied());
        command
    }

    /// `kitt --json run -m CHECKPOINT -e ENGINE` with the fake as `binary`.
    fn run(&self, engine: &str, extra: &[&str], env: &[(&str, &str)]) -> Outcome {
        self.run_as(engine, &self.program(engine).display().to_string(), extra, env)
    }

    /// [`Self::run`] with `binary` as given.
    fn run_as(&self, engine: &str, binary: &str, extra: &[&str], env: &[(&str, &str)]) -> Outcome {
        let binary = format!("binary={binary}");
        let mut command = self.kitt(env);
        command
            .args(["--json", "run", "-m", CHECKPOINT, "-e", engine, "--engine-config", &binary])
            .args(extra);
        let outcome = self.scratch.run(&mut command);
        self.assert_nothing_left();
        outcome
    }

    fn events(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(self.path("fake.jsonl")).unwrap_or_default();
        text.lines().map(|line| serde_json::from_str(line).unwrap()).collect()
    }

    /// The argument lists the fake was started with, in order.
    fn starts(&self) -> Vec<Vec<String>> {
        self.events()
            .iter()
            .filter(|event| event["event"] == "start")
            .map(|event| serde_json::from_value(event["argv"].clone()).unwrap())
            .collect()
    }

    fn requests(&self) -> Vec<Value> {
        self.events().into_iter().filter(|event| event["event"] == "request").collect()
    }

    /// Fails when a process started from this scratch directory still runs.
    fn assert_nothing_left(&self) {
        let needle = self.scratch.path().display().to_string();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = processes_mentioning(&needle);
            if left.is_empty() {
                return;
            }
            assert!(Instant::now() < deadline, "engine processes left: {left:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// A safetensors checkpoint directory: `config.json` and one weights file.
fn checkpoint(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("config.json"), r#"{"architectures": ["LlamaForCausalLM"]}"#).unwrap();
    std::fs::File::create(dir.join("model.safetensors")).unwrap().set_len(4096).unwrap();
}

/// Live processes whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            (cmdline.contains(needle) && !stat.contains(") Z ")).then(|| format!("{pid} {cmdline}"))
        })
        .collect()
}

/// The context one request of the `quick` suite needs, and its concurrency.
fn quick_needs() -> (String, String) {
    let home = tempfile::tempdir().unwrap();
    let suite = kitt::suite::Suite::load("quick", home.path()).unwrap();
    (suite.context_per_slot().to_string(), suite.max_concurrency().to_string())
}

fn result(outcome: &Outcome) -> Value {
    assert_eq!(outcome.code, 0, "stdout: {}\nstderr: {}", outcome.stdout, outcome.stderr);
    serde_json::from_str(&outcome.stdout).unwrap()
}

/// The `--port` value of a command line.
fn port_of(argv: &[String]) -> String {
    let at = argv.iter().position(|arg| arg == "--port").expect("a --port flag");
    argv[at + 1].clone()
}

fn owned(args: &[&str]) -> Vec<String> {
    args.iter().map(|arg| (*arg).to_owned()).collect()
}

fn is_one_token(request: &Value) -> bool {
    request["method"] == "POST" && request["body"]["max_tokens"] == 1
}

fn is_measured(request: &Value) -> bool {
    request["method"] == "POST" && request["body"]["stream"] == true
}

/// Every measured request streams, asks for usage and carries `model`.
fn measured_bodies(fake: &Fake, model: &str) -> Vec<Value> {
    let bodies: Vec<Value> = fake
        .requests()
        .into_iter()
        .filter(is_measured)
        .map(|request| request["body"].clone())
        .collect();
    assert!(!bodies.is_empty(), "nothing was measured");
    for body in &bodies {
        assert_eq!(body["stream_options"]["include_usage"], true, "{body}");
        assert_eq!(body["model"], model, "{body}");
    }
    bodies
}

fn assert_pinned(bodies: &[Value]) {
    for body in bodies {
        assert_eq!(body["ignore_eos"], true, "{body}");
        assert_eq!(body["min_tokens"], body["max_tokens"], "{body}");
    }
}

#[test]
fn vllm_serves_a_checkpoint_with_the_suites_context_and_pinned_output() {
    let fake = Fake::new();

    let outcome = fake.run("vllm", &["--engine-config", "gpu_memory_utilization=0.85"], &[]);

    let result = result(&outcome);
    let (context, slots) = quick_needs();
    let starts = fake.starts();
    assert_eq!(starts.len(), 1);
    let checkpoint = fake.path(CHECKPOINT).display().to_string();
    let port = port_of(&starts[0]);
    let expected = owned(&[
        "serve",
        &checkpoint,
        "--host",
        "127.0.0.1",
        "--port",
        &port,
        "--served-model-name",
        SERVED,
        "--max-model-len",
        &context,
        "--max-num-seqs",
        &slots,
        "--no-enable-prefix-caching",
        "--gpu-memory-utilization",
        "0.85",
    ]);
    assert_eq!(starts[0], expected);
    let bodies = measured_bodies(&fake, SERVED);
    assert_pinned(&bodies);
    for body in &bodies {
        let prompt = body["messages"][0]["content"].as_str().unwrap();
        assert!(!prompt.starts_with("[request"), "vLLM's cache is off, no prefix: {prompt}");
    }
    let engine = &result["engine"];
    assert_eq!(engine["name"], "vllm");
    assert_eq!(engine["version"], "0.8.5", "the version the server reports");
    assert_eq!(engine["parameters"]["max-model-len"], context.as_str());
    let comparability = &engine["comparability"];
    assert!(comparability["prompt_cache"].as_str().unwrap().contains("--no-enable-prefix-caching"));
    assert!(comparability["context_size"].as_str().unwrap().starts_with(&context));
    assert_eq!(comparability["gpu_memory_utilization"], "0.85");
    assert!(comparability["ignore_eos"].as_str().unwrap().starts_with("true"));

    let store = kitt::store::Store::open(&fake.scratch.home()).unwrap();
    let stored = store.result(result["id"].as_str().unwrap()).unwrap().expect("stored");
    assert_eq!(stored.engine.comparability["min_tokens"], "= max_tokens of each request");
}

#[test]
fn vllm_is_ready_only_once_a_one_token_request_succeeds() {
    let fake = Fake::new();

    let outcome = fake.run("vllm", &[], &[("FAKE_NOT_SERVING_REQUESTS", "2")]);

    result(&outcome);
    let requests = fake.requests();
    let first_health = requests.iter().position(|r| r["path"] == "/health").unwrap();
    let one_token: Vec<usize> =
        (0..requests.len()).filter(|at| is_one_token(&requests[*at])).collect();
    assert_eq!(one_token.len(), 3, "the one-token request is retried: {requests:?}");
    assert!(first_health < one_token[0], "/health first");
    assert_eq!(requests[one_token[0]]["status"], 500, "health answered before serving");
    let served = *one_token.last().unwrap();
    assert_eq!(requests[served]["status"], 200);
    let first_measured = requests.iter().position(is_measured).unwrap();
    assert!(served < first_measured, "nothing is measured before the engine serves");
}

#[test]
fn vllm_serves_a_single_file_gguf_only_with_a_tokenizer() {
    let fake = Fake::new();
    let gguf = fake.path("models/gguf/tiny-Q4_K_M.gguf");
    std::fs::create_dir_all(gguf.parent().unwrap()).unwrap();
    kitt::gguf::TinyModel::default().write(&gguf).unwrap();
    let binary = format!("binary={}", fake.program("vllm").display());
    let run = |extra: &[&str]| {
        let mut command = fake.kitt(&[]);
        command.args(["--json", "run", "-m"]).arg(&gguf).args(["-e", "vllm", "--engine-config"]);
        command.arg(&binary).args(extra);
        fake.scratch.run(&mut command)
    };

    let refused = run(&[]);
    assert_eq!(refused.code, 2, "{}", refused.stderr);
    assert!(refused.stderr.contains("tokenizer=DIR_OR_REPO"), "{}", refused.stderr);
    assert!(fake.starts().is_empty(), "nothing is started for a refused model");

    let outcome = run(&["--engine-config", "tokenizer=org/Tiny-Instruct"]);
    result(&outcome);
    let argv = &fake.starts()[0];
    assert_eq!(argv[..2], owned(&["serve", &gguf.display().to_string()]));
    let at = argv.iter().position(|arg| arg == "--tokenizer").expect("--tokenizer");
    assert_eq!(argv[at + 1], "org/Tiny-Instruct");
    fake.assert_nothing_left();
}

#[test]
fn vllm_out_of_memory_at_start_up_says_what_to_change() {
    let fake = Fake::new();

    let outcome = fake.run("vllm", &[], &[("FAKE_FAIL", "oom_kv")]);

    assert_eq!(outcome.code, 1, "{}", outcome.stderr);
    let (context, _) = quick_needs();
    let error = &outcome.stderr;
    assert!(error.contains("error: out of memory at start-up"), "{error}");
    assert!(error.contains("lower `context_size`, raise `gpu_memory_utilization`"), "{error}");
    assert!(error.contains(&format!("this run: context_size {context}")), "{error}");
    assert!(error.contains("stored in KV cache"), "the log line that says so: {error}");
    assert_eq!(fake.starts().len(), 1);
}

#[test]
fn sglang_runs_under_the_interpreter_given_as_binary() {
    let fake = Fake::new();
    let settings = ["gpu_memory_utilization=0.7", "tensor_parallel_size=2"];
    let extra = ["--engine-config", settings[0], "--engine-config", settings[1]];

    let outcome = fake.run("sglang", &extra, &[]);

    let result = result(&outcome);
    let (context, slots) = quick_needs();
    let argv = &fake.starts()[0];
    let checkpoint = fake.path(CHECKPOINT).display().to_string();
    let expected = owned(&[
        "-m",
        "sglang.launch_server",
        "--model-path",
        &checkpoint,
        "--host",
        "127.0.0.1",
        "--port",
        &port_of(argv),
        "--served-model-name",
        SERVED,
        "--context-length",
        &context,
        "--max-running-requests",
        &slots,
        "--disable-radix-cache",
        "--mem-fraction-static",
        "0.7",
        "--tp-size",
        "2",
    ]);
    assert_eq!(argv, &expected);
    let requests = fake.requests();
    let while_loading: Vec<&Value> = requests.iter().filter(|r| r["loading"] == true).collect();
    assert!(
        while_loading.iter().all(|r| r["path"] == "/health"),
        "only /health is asked while SGLang loads: {while_loading:?}"
    );
    let models = requests.iter().position(|r| r["path"] == "/v1/models").unwrap();
    let one_token = requests.iter().position(is_one_token).unwrap();
    assert!(models < one_token, "the served model is checked before the one-token request");
    assert_pinned(&measured_bodies(&fake, SERVED));
    assert_eq!(result["engine"]["version"], "0.4.6.post1", "from /get_server_info");
    let cache = &result["engine"]["comparability"]["prompt_cache"];
    assert!(cache.as_str().unwrap().contains("--disable-radix-cache"), "{cache}");
}

#[test]
fn an_engine_that_exits_while_loading_is_reported_with_its_log_and_its_workers_stop() {
    let fake = Fake::new();

    let outcome = fake.run("sglang", &[], &[("FAKE_FAIL", "exit")]);

    assert_eq!(outcome.code, 1, "{}", outcome.stderr);
    assert!(outcome.stderr.contains("exited while loading (exit status: 3)"), "{}", outcome.stderr);
    assert!(outcome.stderr.contains("weights file is truncated"), "{}", outcome.stderr);
}

#[test]
fn tabby_loads_the_checkpoint_by_name_from_its_parent_directory() {
    let fake = Fake::new();

    // The checkout, relative to where kitt runs: TabbyAPI runs in it.
    let outcome = fake.run_as("exllamav2", "tabby", &[], &[]);

    let result = result(&outcome);
    let (context, slots) = quick_needs();
    let cache = context.parse::<u32>().unwrap() * slots.parse::<u32>().unwrap();
    let cache = cache.div_ceil(256) * 256;
    let start = fake.events().into_iter().find(|event| event["event"] == "start").unwrap();
    let argv: Vec<String> = serde_json::from_value(start["argv"].clone()).unwrap();
    let expected = owned(&[
        "--host",
        "127.0.0.1",
        "--port",
        &port_of(&argv),
        "--disable-auth",
        "true",
        "--model-dir",
        &fake.path("models/org").display().to_string(),
        "--model-name",
        "Tiny-Instruct",
        "--max-seq-len",
        &context,
        "--cache-size",
        &cache.to_string(),
        "--max-batch-size",
        &slots,
    ]);
    assert_eq!(argv, expected);
    assert_eq!(start["program"], fake.path("tabby/main.py").display().to_string());
    assert_eq!(start["cwd"], fake.path("tabby").display().to_string(), "runs in its checkout");
    assert!(fake.requests().iter().any(|r| r["path"] == "/v1/model"), "the loaded model");
    let bodies = measured_bodies(&fake, "Tiny-Instruct");
    assert_pinned(&bodies);
    for body in &bodies {
        let prompt = body["messages"][0]["content"].as_str().unwrap();
        assert!(prompt.starts_with("[request "), "TabbyAPI's cache stays on: {prompt}");
    }
    assert_eq!(result["engine"]["version"], "unknown", "no exllamav2 package here");
}

#[test]
fn mlx_serves_its_model_as_default_model_and_records_that_output_is_not_pinned() {
    let fake = Fake::new();

    let outcome = fake.run("mlx", &[], &[]);

    let result = result(&outcome);
    let argv = &fake.starts()[0];
    let checkpoint = fake.path(CHECKPOINT).display().to_string();
    let port = port_of(argv);
    assert_eq!(argv, &owned(&["--model", &checkpoint, "--host", "127.0.0.1", "--port", &port]));
    let requests = fake.requests();
    assert_eq!(requests[0]["path"], "/v1/models", "ready when the model list answers");
    for body in measured_bodies(&fake, "default_model") {
        assert!(body.get("ignore_eos").is_none() && body.get("min_tokens").is_none(), "{body}");
    }
    let comparability = &result["engine"]["comparability"];
    assert!(comparability["output_length"].as_str().unwrap().starts_with("not pinned"));
    assert!(comparability["context_size"].as_str().unwrap().starts_with("not set"));
}

#[test]
fn extra_args_pass_through_and_a_flag_the_server_does_not_know_fails_its_start() {
    let fake = Fake::new();

    let outcome = fake.run("vllm", &["--engine-config", "extra_args=--seed 7"], &[]);
    let result = result(&outcome);
    assert_eq!(fake.starts()[0][fake.starts()[0].len() - 2..], owned(&["--seed", "7"]));
    assert_eq!(result["engine"]["parameters"]["extra_args"], "--seed 7");

    let outcome = fake.run("vllm", &["--engine-config", "extra_args=--bogus"], &[]);
    assert_eq!(outcome.code, 1, "{}", outcome.stderr);
    assert!(outcome.stderr.contains("exited while loading"), "{}", outcome.stderr);
    assert!(outcome.stderr.contains("unrecognized arguments: --bogus"), "{}", outcome.stderr);
}

#[test]
fn keys_an_engine_would_ignore_are_refused_before_it_starts() {
    let fake = Fake::new();
    for (engine, setting, says) in [
        ("mlx", "context_size=4096", "`mlx_lm.server` has no option for it"),
        ("vllm", "gpu_layers=10", "no such option"),
        ("sglang", "tokenizer=org/x", "only `vllm` takes a tokenizer"),
        ("vllm", "gpu_memory_utilization=1.5", "above 0 and at most 1"),
    ] {
        let outcome = fake.run(engine, &["--engine-config", setting], &[]);
        assert_eq!(outcome.code, 2, "{engine} {setting}: {}", outcome.stderr);
        assert!(outcome.stderr.contains(says), "{engine} {setting}: {}", outcome.stderr);
    }
    assert!(fake.starts().is_empty());
}

#[test]
fn engines_list_shows_every_engine_with_its_version_or_why_not() {
    let fake = Fake::new();
    let mut command = fake.kitt(&[]);
    command
        .env("KITT_VLLM", fake.program("vllm"))
        .env("KITT_SGLANG", fake.program("sglang"))
        .env("KITT_EXLLAMAV2", fake.path("tabby"))
        .args(["--json", "engines", "list"]);

    let outcome = fake.scratch.run(&mut command);

    assert_eq!(outcome.code, 0, "{}", outcome.stderr);
    let rows: Vec<Value> = serde_json::from_str(&outcome.stdout).unwrap();
    let row = |name: &str| rows.iter().find(|row| row["engine"] == name).unwrap().clone();
    assert_eq!(rows.len(), 7);
    let vllm = row("vllm");
    assert_eq!(vllm["usable"], true);
    assert!(vllm["detail"].as_str().unwrap().ends_with("(0.8.5)"), "{vllm}");
    let sglang = row("sglang");
    assert!(sglang["detail"].as_str().unwrap().contains("sglang 0.4.6.post1"), "{sglang}");
    let tabby = row("exllamav2");
    assert_eq!(tabby["usable"], true, "{tabby}");
    assert!(tabby["detail"].as_str().unwrap().contains("tabby/main.py"), "{tabby}");
    let mlx = row("mlx");
    if cfg!(not(all(target_os = "macos", target_arch = "aarch64"))) {
        assert_eq!(mlx["usable"], false);
        assert!(mlx["detail"].as_str().unwrap().contains("Apple silicon"), "{mlx}");
    }
}

/// Two models on the fake vLLM; `Huge` runs out of memory when `FAKE_FAIL` says so.
const CAMPAIGN: &str = "campaign_name: servers
models:
  - name: Small
    params: \"1B\"
    safetensors_repo: org/Small-Instruct
  - name: Huge
    params: \"70B\"
    safetensors_repo: org/Huge-Instruct
engines:
  - name: vllm
    suite: quick
    config:
      binary: BINARY
      gpu_memory_utilization: SHARE
disk:
  reserve_gb: 0
  cleanup_after_run: false
";

#[test]
fn a_campaign_stores_comparability_and_does_not_retry_out_of_memory_with_the_same_config() {
    let fake = Fake::new();
    for repo in ["org/Small-Instruct", "org/Huge-Instruct"] {
        checkpoint(&fake.scratch.models().join("huggingface").join(repo));
    }
    let config = |share: &str| {
        CAMPAIGN
            .replace("BINARY", &fake.program("vllm").display().to_string())
            .replace("SHARE", share)
    };
    let file = fake.scratch.write("servers.yaml", &config("0.9"));
    let oom = [("FAKE_FAIL", "oom"), ("FAKE_FAIL_MATCH", "Huge-Instruct")];
    let campaign = |args: &[&str]| {
        let mut command = fake.kitt(&oom);
        command.arg("campaign").args(args);
        let outcome = fake.scratch.run(&mut command);
        fake.assert_nothing_left();
        outcome
    };
    let huge_starts =
        || fake.starts().iter().filter(|argv| argv.join(" ").contains("Huge-Instruct")).count();
    let status = || {
        let outcome = campaign(&["--json", "status"]);
        serde_json::from_str::<Value>(&outcome.stdout).unwrap()
    };
    let path = file.to_str().unwrap();

    let done = campaign(&["--json", "run", path]);
    assert_eq!(done.code, 1, "{}", done.stderr);
    let view = status();
    assert_eq!(view["counts"]["success"], 1, "{view}");
    let failed = &view["failed_runs"][0];
    assert_eq!(failed["key"], "Huge|vllm|BF16");
    assert_eq!(failed["attempts"], 1);
    let reason = failed["reason"].as_str().unwrap();
    assert!(reason.starts_with("out of memory at start-up"), "{reason}");
    assert!(reason.contains("raise `gpu_memory_utilization`"), "{reason}");
    let table = campaign(&["status"]);
    assert!(table.stdout.contains("Huge|vllm|BF16: out of memory at start-up"), "{}", table.stdout);
    let store = kitt::store::Store::open(&fake.scratch.home()).unwrap();
    let results = store.results(&kitt::store::ResultFilter::default()).unwrap();
    assert_eq!(results.len(), 1);
    let stored = store.result(&results[0].id).unwrap().unwrap();
    assert!(stored.engine.comparability.contains_key("prompt_cache"));
    assert_eq!(stored.engine.parameters["gpu-memory-utilization"], "0.9");

    let resumed = campaign(&["run", path, "--resume"]);
    assert!(resumed.stdout.contains("Huge|vllm|BF16: not retried"), "{}", resumed.stdout);
    assert_eq!(huge_starts(), 1, "the same settings are not tried again");
    assert_eq!(status()["failed_runs"][0]["attempts"], 1);

    std::fs::write(&file, config("0.95")).unwrap();
    let changed = campaign(&["run", path, "--resume"]);
    assert_eq!(changed.code, 1, "{}", changed.stderr);
    assert_eq!(huge_starts(), 2, "a changed config is tried");
    assert_eq!(status()["failed_runs"][0]["attempts"], 2);
}

#[test]
fn an_interpreter_without_sglang_is_a_missing_engine_not_a_failed_run() {
    let fake = Fake::new();
    // A real Python without the package, as a user's `binary` might name
    // (the setup script needs python3, so every test machine has one).
    let python = which_python().expect("python3 on PATH");

    let outcome = fake.run_as("sglang", &python, &[], &[]);

    assert_eq!(outcome.code, 3, "{}", outcome.stderr);
    assert!(outcome.stderr.contains("has no `sglang` package"), "{}", outcome.stderr);
}

/// The first `python3` on `PATH`.
fn which_python() -> Result<String, ()> {
    let paths = std::env::var_os("PATH").ok_or(())?;
    std::env::split_paths(&paths)
        .map(|dir| dir.join("python3"))
        .find(|candidate| candidate.is_file())
        .map(|path| path.display().to_string())
        .ok_or(())
}
