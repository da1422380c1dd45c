//! Docker mode for Ollama, vLLM, SGLang and ExLlamaV2 (TabbyAPI), end to end:
//! the real `kitt` drives the fake `docker` program (`tests/fakes/docker`),
//! whose engine images run the engine fakes (`fake_ollama.py`,
//! `fake_openai_server.py`) as the images' entry points would run the real
//! servers, with the container's arguments, mounts and published port.
//! Asserted: the exact `docker run` command of each engine (image, name,
//! labels, loopback port, read-only mounts, GPUs, the engine's own flags
//! inside the container), what the result records (mode, image, digest),
//! a GGUF's tokenizer mounted or passed as a repository id, vLLM's memory
//! error read from the container's log, an Ollama pull inside the container
//! with its progress and its store in a named volume, and that no container
//! or engine process is left after any run.

mod common;
mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{Outcome, Scratch};
use serde_json::{Value, json};
use support::docker::FakeDocker;

const CHECKPOINT: &str = "models/org/Tiny-Instruct";
const SERVED: &str = "Tiny-Instruct-BF16";
const VLLM: &str = "vllm/vllm-openai:latest";
const SGLANG: &str = "lmsysorg/sglang:latest";
const TABBY: &str = "ghcr.io/theroyallab/tabbyapi:latest";
const OLLAMA: &str = "ollama/ollama:latest";

/// A scratch directory with a checkpoint, a fake Docker, and the engine
/// fakes' record files.
struct Setup {
    scratch: Scratch,
    docker: FakeDocker,
}

impl Setup {
    fn new() -> Self {
        let scratch = Scratch::new();
        let dir = scratch.path().join(CHECKPOINT);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("config.json"), r#"{"architectures": ["LlamaForCausalLM"]}"#)
            .unwrap();
        std::fs::File::create(dir.join("model.safetensors")).unwrap().set_len(4096).unwrap();
        Setup { scratch, docker: FakeDocker::new() }
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.scratch.path().join(relative).canonicalize().unwrap()
    }

    /// `kitt --json run -e ENGINE --engine-config mode=docker ARGS…` with
    /// every engine image present unless `pull` names one.
    fn run(&self, engine: &str, args: &[&str], env: &[(&str, &str)]) -> Outcome {
        let mut command = self.scratch.kitt();
        self.docker.configure(&mut command, None);
        if engine == "ollama" {
            // Ollama pulls the tags the tests name (from the fake, over loopback).
            command.env_remove("KITT_OFFLINE");
        }
        command
            .env("FAKE_DOCKER_IMAGES", [VLLM, SGLANG, TABBY, OLLAMA].join(","))
            .env("FAKE_SERVER_LOG", self.scratch.path().join("server.jsonl"))
            .env("FAKE_OLLAMA_REQUESTS", self.scratch.path().join("ollama.jsonl"))
            .envs(env.iter().copied())
            .args(["--json", "run", "-e", engine, "--engine-config", "mode=docker"])
            .args(args);
        let outcome = self.scratch.run(&mut command);
        self.assert_nothing_left();
        outcome
    }

    /// No container, and no process started from the fake Docker's state.
    fn assert_nothing_left(&self) {
        assert!(self.docker.containers().is_empty(), "left: {:?}", self.docker.container_names());
        let needle = self.docker.state_dir().display().to_string();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = processes_mentioning(&needle);
            if left.is_empty() {
                return;
            }
            assert!(Instant::now() < deadline, "container processes left: {left:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The one `docker run` of the last runs.
    fn docker_run(&self) -> Vec<String> {
        let runs = self.docker.calls_of("run");
        runs.last().expect("a docker run").clone()
    }

    fn events(&self, file: &str) -> Vec<Value> {
        let text = std::fs::read_to_string(self.scratch.path().join(file)).unwrap_or_default();
        text.lines().map(|line| serde_json::from_str(line).unwrap()).collect()
    }
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

fn result_of(outcome: &Outcome) -> Value {
    assert_eq!(outcome.code, 0, "stderr: {}\nstdout: {}", outcome.stderr, outcome.stdout);
    serde_json::from_str(&outcome.stdout).expect("one JSON object")
}

fn owned(args: &[&str]) -> Vec<String> {
    args.iter().map(|arg| (*arg).to_owned()).collect()
}

/// The context one request of the `quick` suite needs, and its concurrency.
fn quick_needs() -> (String, String) {
    let home = tempfile::tempdir().unwrap();
    let suite = kitt::suite::Suite::load("quick", home.path()).unwrap();
    (suite.context_per_slot().to_string(), suite.max_concurrency().to_string())
}

/// `docker run --detach --name … --label … --publish 127.0.0.1:H:PORT`, as
/// kitt starts every container of a `kitt run`, and the host port H.
fn run_prefix(run: &[String], result: &Value, port: u16) -> (Vec<String>, u16) {
    let run_id = result["id"].as_str().unwrap();
    let owner = run.iter().find(|arg| arg.starts_with("kitt.owner=")).expect("an owner label");
    let publish = &run[run.iter().position(|arg| arg == "--publish").unwrap() + 1];
    let host_port: u16 = publish
        .strip_prefix("127.0.0.1:")
        .and_then(|rest| rest.strip_suffix(&format!(":{port}")))
        .unwrap_or_else(|| panic!("published on loopback to {port}: {publish}"))
        .parse()
        .unwrap();
    let prefix = owned(&[
        "run",
        "--detach",
        "--name",
        &format!("kitt-run-{run_id}"),
        "--label",
        owner,
        "--label",
        &format!("kitt.run={run_id}"),
        "--publish",
        publish,
    ]);
    (prefix, host_port)
}

/// The result records the mode, the image and the digest of the image that ran.
fn assert_recorded_image(result: &Value, image: &str) {
    let engine = &result["engine"];
    let parameters = &engine["parameters"];
    assert_eq!(parameters["mode"], "docker", "{parameters}");
    assert_eq!(parameters["image"], image);
    let repository = image.rsplit_once(':').unwrap().0;
    let digest = parameters["image_digest"].as_str().unwrap();
    assert!(digest.starts_with(&format!("{repository}@sha256:")), "{digest}");
    assert!(engine["version"].as_str().unwrap().contains(digest), "{engine}");
    let mode = engine["comparability"]["engine_mode"].as_str().unwrap();
    assert_eq!(mode, format!("docker, image {digest}"));
}

fn is_measured(event: &Value) -> bool {
    event["event"] == "request" && event["method"] == "POST" && event["body"]["stream"] == true
}

#[test]
fn vllm_in_docker_runs_the_image_with_the_native_flags_and_its_gpus() {
    let setup = Setup::new();
    let args = ["-m", CHECKPOINT, "--engine-config", "gpus=all"];
    let args = [&args[..], &["--engine-config", "gpu_memory_utilization=0.85"]].concat();

    let outcome =
        setup.run("vllm", &args, &[("FAKE_DOCKER_IMAGES", ""), ("FAKE_DOCKER_NVIDIA", "1")]);

    let result = result_of(&outcome);
    for expected in [
        format!("pulling image {VLLM}: 3 of 3 layers done"),
        format!("pulling image {VLLM}: Downloaded newer image for {VLLM}"),
    ] {
        assert!(outcome.stderr.contains(&expected), "{expected} in {}", outcome.stderr);
    }
    let run = setup.docker_run();
    let (mut expected, host_port) = run_prefix(&run, &result, 8000);
    let (context, slots) = quick_needs();
    let checkpoint = setup.path(CHECKPOINT);
    expected.extend(owned(&[
        "--volume",
        &format!("{}:/models/Tiny-Instruct:ro", checkpoint.display()),
        "--shm-size",
        "16g",
        "--gpus",
        "all",
        VLLM,
        "/models/Tiny-Instruct",
        "--host",
        "0.0.0.0",
        "--port",
        "8000",
        "--served-model-name",
        SERVED,
        "--max-model-len",
        &context,
        "--max-num-seqs",
        &slots,
        "--no-enable-prefix-caching",
        "--gpu-memory-utilization",
        "0.85",
    ]));
    assert_eq!(run, expected);

    let events = setup.events("server.jsonl");
    let start = events.iter().find(|event| event["event"] == "start").unwrap();
    assert_eq!(start["persona"], "vllm", "the image's entry point is `vllm serve`");
    assert_eq!(start["argv"][1], checkpoint.display().to_string(), "the mount reaches the model");
    let measured: Vec<&Value> = events.iter().filter(|event| is_measured(event)).collect();
    assert!(!measured.is_empty());
    for request in measured {
        assert_eq!(request["body"]["model"], SERVED);
        assert_eq!(request["body"]["ignore_eos"], true, "pinned as natively");
    }
    assert_recorded_image(&result, VLLM);
    let parameters = &result["engine"]["parameters"];
    assert_eq!(parameters["gpus"], "all");
    assert_eq!(parameters["mounts"], format!("{}:/models/Tiny-Instruct:ro", checkpoint.display()));
    assert_eq!(parameters["max-model-len"], context.as_str());
    assert!(result["engine"]["version"].as_str().unwrap().starts_with("0.8.5 ("), "{result}");
    assert_eq!(setup.docker.calls_of("stop").len(), 1);
    assert!(
        std::net::TcpListener::bind(("127.0.0.1", host_port)).is_ok(),
        "the host port was released"
    );
}

#[test]
fn a_gguf_in_docker_gets_its_tokenizer_directory_mounted_or_its_repository_id_as_given() {
    let setup = Setup::new();
    let gguf = setup.scratch.path().join("models/gguf/tiny-Q4_K_M.gguf");
    std::fs::create_dir_all(gguf.parent().unwrap()).unwrap();
    kitt::gguf::TinyModel::default().write(&gguf).unwrap();
    let gguf_arg = gguf.to_str().unwrap();
    let folder = setup.path("models/gguf");
    let tokenizer = setup.path(CHECKPOINT);

    let local = format!("tokenizer={}", tokenizer.display());
    result_of(&setup.run("vllm", &["-m", gguf_arg, "--engine-config", &local], &[]));

    let run = setup.docker_run();
    let image = run.iter().position(|arg| arg == VLLM).unwrap();
    assert_eq!(
        run[image - 6..image + 2],
        owned(&[
            "--volume",
            &format!("{}:/models:ro", folder.display()),
            "--volume",
            &format!("{}:/tokenizer/Tiny-Instruct:ro", tokenizer.display()),
            "--shm-size",
            "16g",
            VLLM,
            "/models/tiny-Q4_K_M.gguf",
        ])
    );
    let at = run.iter().position(|arg| arg == "--tokenizer").unwrap();
    assert_eq!(run[at + 1], "/tokenizer/Tiny-Instruct");

    result_of(&setup.run("vllm", &["-m", gguf_arg, "--engine-config", "tokenizer=org/Tiny"], &[]));
    let run = setup.docker_run();
    assert_eq!(run.iter().filter(|arg| *arg == "--volume").count(), 1, "{run:?}");
    let at = run.iter().position(|arg| arg == "--tokenizer").unwrap();
    assert_eq!(run[at + 1], "org/Tiny", "a repository id is passed as given");
}

#[test]
fn vllm_running_out_of_memory_in_its_container_is_classified_as_natively() {
    let setup = Setup::new();

    let outcome = setup.run("vllm", &["-m", CHECKPOINT], &[("FAKE_FAIL", "oom_kv")]);

    assert_eq!(outcome.code, 1, "{}", outcome.stderr);
    let (context, _) = quick_needs();
    let error = &outcome.stderr;
    assert!(error.contains("error: out of memory at start-up"), "{error}");
    assert!(error.contains("lower `context_size`, raise `gpu_memory_utilization`"), "{error}");
    assert!(error.contains(&format!("this run: context_size {context}")), "{error}");
    assert!(error.contains("stored in KV cache"), "the container's log line: {error}");
    let name = &setup.docker_run()[3];
    let inspected = setup.docker.calls_of("inspect");
    assert!(inspected.iter().all(|call| call.last() == Some(name)), "{inspected:?}");
    assert!(setup.docker.calls_of("rm").iter().any(|call| call.contains(name)));
}

#[test]
fn sglang_in_docker_runs_python3_launch_server_in_the_image() {
    let setup = Setup::new();

    let result = result_of(&setup.run("sglang", &["-m", CHECKPOINT], &[]));

    let run = setup.docker_run();
    let (mut expected, _) = run_prefix(&run, &result, 30000);
    let (context, slots) = quick_needs();
    expected.extend(owned(&[
        "--volume",
        &format!("{}:/models/Tiny-Instruct:ro", setup.path(CHECKPOINT).display()),
        "--shm-size",
        "16g",
        SGLANG,
        "python3",
        "-m",
        "sglang.launch_server",
        "--model-path",
        "/models/Tiny-Instruct",
        "--host",
        "0.0.0.0",
        "--port",
        "30000",
        "--served-model-name",
        SERVED,
        "--context-length",
        &context,
        "--max-running-requests",
        &slots,
        "--disable-radix-cache",
    ]));
    assert_eq!(run, expected);
    assert_recorded_image(&result, SGLANG);
    let version = result["engine"]["version"].as_str().unwrap();
    assert!(version.starts_with("0.4.6.post1 ("), "the version the server reports: {version}");
    assert_eq!(result["engine"]["parameters"]["command"], "python3 -m sglang.launch_server");
    assert_eq!(result["engine"]["parameters"]["gpus"], "none", "no GPU on this machine");
}

#[test]
fn tabby_in_docker_runs_main_py_in_the_image_with_the_model_directory_mounted() {
    let setup = Setup::new();

    let result = result_of(&setup.run("exllamav2", &["-m", CHECKPOINT], &[]));

    let run = setup.docker_run();
    let (mut expected, _) = run_prefix(&run, &result, 5000);
    let (context, slots) = quick_needs();
    let cache = context.parse::<u32>().unwrap() * slots.parse::<u32>().unwrap();
    expected.extend(owned(&[
        "--volume",
        &format!("{}:/models/Tiny-Instruct:ro", setup.path(CHECKPOINT).display()),
        "--shm-size",
        "16g",
        TABBY,
        "main.py",
        "--host",
        "0.0.0.0",
        "--port",
        "5000",
        "--disable-auth",
        "true",
        "--model-dir",
        "/models",
        "--model-name",
        "Tiny-Instruct",
        "--max-seq-len",
        &context,
        "--cache-size",
        &(cache.div_ceil(256) * 256).to_string(),
        "--max-batch-size",
        &slots,
    ]));
    assert_eq!(run, expected);
    let events = setup.events("server.jsonl");
    let start = events.iter().find(|event| event["event"] == "start").unwrap();
    assert_eq!(start["persona"], "tabby");
    assert!(start["cwd"].as_str().unwrap().ends_with("/app"), "runs in the image's /app");
    assert!(events.iter().any(|event| event["path"] == "/v1/model"), "the loaded model");
    assert_recorded_image(&result, TABBY);
    let digest = result["engine"]["parameters"]["image_digest"].clone();
    assert_eq!(result["engine"]["version"], digest, "TabbyAPI reports no version");
    assert_eq!(result["model"]["name"], SERVED);
}

#[test]
fn ollama_in_docker_pulls_inside_the_container_with_progress_into_its_volume() {
    let setup = Setup::new();
    // Ollama settings of kitt's environment reach the container; kitt's own win.
    let env = [
        ("FAKE_OLLAMA_PULL_STEP_MS", "400"),
        ("OLLAMA_FLASH_ATTENTION", "1"),
        ("OLLAMA_KEEP_ALIVE", "5m"),
    ];
    let args = ["-m", "llama3.2:1b", "--engine-config", "context_size=4096"];

    let outcome = setup.run("ollama", &args, &env);

    let result = result_of(&outcome);
    let run = setup.docker_run();
    let (mut expected, _) = run_prefix(&run, &result, 11434);
    expected.extend(owned(&[
        "--volume",
        "kitt-ollama:/root/.ollama",
        "--env",
        "OLLAMA_FLASH_ATTENTION=1",
        "--env",
        "OLLAMA_NUM_PARALLEL=1",
        "--env",
        "OLLAMA_KEEP_ALIVE=-1",
        "--env",
        "OLLAMA_MAX_LOADED_MODELS=1",
        "--env",
        "OLLAMA_CONTEXT_LENGTH=4096",
        "--env",
        "OLLAMA_NOPRUNE=1",
        "--env",
        "OLLAMA_HOST=0.0.0.0:11434",
        OLLAMA,
        "serve",
    ]));
    assert_eq!(run, expected);
    assert!(outcome.stderr.contains("pulling llama3.2:1b"), "{}", outcome.stderr);
    let log =
        std::fs::read_to_string(Path::new(result["run_dir"].as_str().unwrap()).join("engine.log"))
            .unwrap();
    assert!(log.contains("Listening on 127.0.0.1:"), "the container's output: {log}");
    let percents: Vec<u64> = log
        .lines()
        .filter_map(|line| line.strip_prefix("kitt: pulling llama3.2:1b: "))
        .filter_map(|rest| rest.split('%').next()?.parse().ok())
        .collect();
    assert!(percents.iter().any(|p| (1..100).contains(p)), "pull progress: {log}");
    assert_eq!(percents.last(), Some(&100), "{log}");

    let requests = setup.events("ollama.jsonl");
    assert_eq!(requests[0]["env"]["OLLAMA_FLASH_ATTENTION"], "1");
    assert_eq!(requests[0]["env"]["OLLAMA_KEEP_ALIVE"], "-1");
    let volume = setup.docker.state_dir().join("volumes/kitt-ollama");
    assert_eq!(
        requests[0]["env"]["OLLAMA_MODELS"],
        volume.join("models").display().to_string(),
        "the store is the volume's, not the host's OLLAMA_MODELS"
    );
    let pulls: Vec<&Value> = requests.iter().filter(|r| r["path"] == "/api/pull").collect();
    assert_eq!(pulls.len(), 1);
    assert_eq!(pulls[0]["body"], json!({ "model": "llama3.2:1b", "stream": true }));
    let manifest = volume.join("models/manifests/registry.ollama.ai/library/llama3.2/1b");
    assert!(manifest.is_file(), "the pulled model outlives its container in the volume");

    assert_recorded_image(&result, OLLAMA);
    let parameters = &result["engine"]["parameters"];
    assert!(result["engine"]["version"].as_str().unwrap().starts_with("0.6.8 ("));
    assert_eq!(parameters["models_dir"], "docker volume kitt-ollama (/root/.ollama/models)");
    assert_eq!(parameters["mounts"], "kitt-ollama:/root/.ollama");
    assert_eq!(parameters["OLLAMA_NUM_PARALLEL"], "1");
    assert_eq!(parameters["OLLAMA_FLASH_ATTENTION"], "1");
    assert_eq!(parameters["num_ctx"], "4096");
}

#[test]
fn ollama_in_docker_imports_a_local_gguf_by_upload_and_removes_it() {
    let setup = Setup::new();
    let model = setup.scratch.path().join("models/tiny-Q8_0.gguf");
    std::fs::create_dir_all(model.parent().unwrap()).unwrap();
    kitt::gguf::TinyModel::default().write(&model).unwrap();

    let result = result_of(&setup.run("ollama", &["-m", model.to_str().unwrap()], &[]));

    let run = setup.docker_run();
    assert_eq!(run.iter().filter(|arg| *arg == "--volume").count(), 1, "no model mount: {run:?}");
    let requests = setup.events("ollama.jsonl");
    let uploads = requests.iter().filter(|r| {
        r["method"] == "POST" && r["path"].as_str().unwrap_or("").starts_with("/api/blobs/")
    });
    assert_eq!(uploads.count(), 1, "uploaded through the API");
    let last = requests.last().unwrap();
    assert_eq!(
        (&last["method"], &last["body"]),
        (&json!("DELETE"), &json!({"model": "kitt-tiny:q8_0"}))
    );
    assert_eq!(result["engine"]["parameters"]["model"], "kitt-tiny:q8_0");
}

#[test]
fn mlx_has_no_docker_mode_and_every_other_engine_lists_its_image() {
    let setup = Setup::new();
    let mut command = setup.scratch.kitt();
    command.args(["run", "-m", CHECKPOINT, "-e", "mlx", "--engine-config", "mode=docker"]);
    let refused = setup.scratch.run(&mut command);
    assert_eq!(refused.code, 2, "{}", refused.stderr);
    assert!(refused.stderr.contains("engine `mlx` has no Docker mode"), "{}", refused.stderr);

    let mut command = setup.scratch.kitt();
    setup.docker.configure(&mut command, None);
    command.args(["--json", "engines", "list"]);
    let listed = setup.scratch.run(&mut command);
    let rows: Vec<Value> = serde_json::from_str(&listed.stdout).unwrap();
    for (engine, image) in
        [("ollama", OLLAMA), ("vllm", VLLM), ("sglang", SGLANG), ("exllamav2", TABBY)]
    {
        let row = rows.iter().find(|row| row["engine"] == engine).unwrap();
        assert_eq!(row["docker"]["usable"], true, "{row}");
        assert_eq!(row["docker"]["image"], image, "{row}");
    }
}

#[test]
fn an_ollama_container_that_dies_while_loading_fails_the_run_with_its_log() {
    let setup = Setup::new();

    let outcome = setup.run("ollama", &["-m", "llama3.2:1b"], &[("FAKE_OLLAMA_DIE_ON_LOAD", "1")]);

    assert_eq!(outcome.code, 1, "{}", outcome.stderr);
    let expected = "the engine exited while loading (container exited, exit code 2)";
    assert!(outcome.stderr.contains(expected), "{}", outcome.stderr);
    assert!(outcome.stderr.contains("error loading llama server"), "{}", outcome.stderr);
}
