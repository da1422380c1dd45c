//! Docker mode end to end: the real `kitt` drives a fake `docker` program
//! (`tests/fakes/docker`) that speaks the real CLI's arguments and output and
//! runs the real llama-server as its llama.cpp "containers". Covered: a
//! `kitt run` with the image pulled (progress shown), the exact `docker run`
//! command, what the result records, GPU requests, a container that exits
//! while loading, a failed pull, Ctrl-C, `kill -9` followed by reaping that
//! spares foreign containers and those of a live kitt, campaign container
//! names, and `kitt engines list`. After every run no container is left.
//! One llama-server at a time (`ServerLock`).

mod common;
mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Outcome, Scratch, processes_mentioning};
use kitt::gguf::{TensorType, TinyModel};
use nix::sys::signal::Signal;
use serde_json::Value;
use support::docker::FakeDocker;
use support::engine::{Engine, ServerLock, make_model};

const IMAGE: &str = "ghcr.io/ggml-org/llama.cpp:server";
const CUDA_IMAGE: &str = "ghcr.io/ggml-org/llama.cpp:server-cuda";

/// A model in its own folder under the scratch directory (the folder is mounted).
fn model_in_folder(scratch: &Scratch, model: &TinyModel) -> PathBuf {
    let dir = scratch.path().join("models-docker");
    std::fs::create_dir_all(&dir).unwrap();
    make_model(&dir.canonicalize().unwrap(), model)
}

/// `kitt --json run -m MODEL -e llama_cpp --engine-config mode=docker EXTRA…`.
fn docker_run(scratch: &Scratch, docker: &FakeDocker, engine: Option<&Engine>) -> Command {
    let mut command = scratch.kitt();
    docker.configure(&mut command, engine);
    command.args(["--json", "run", "-e", "llama_cpp", "--engine-config", "mode=docker"]);
    command
}

fn outcome(command: &mut Command) -> (Outcome, u32) {
    let child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let pid = child.id();
    let output = child.wait_with_output().unwrap();
    let outcome = Outcome {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    };
    (outcome, pid)
}

fn result_of(outcome: &Outcome) -> Value {
    assert_eq!(outcome.code, 0, "stderr: {}\nstdout: {}", outcome.stderr, outcome.stdout);
    serde_json::from_str(&outcome.stdout).expect("one JSON object")
}

/// Start time of a process in clock ticks, as kitt's owner tag records it.
fn start_time(pid: u32) -> String {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    stat[stat.rfind(')').unwrap() + 1..].split_whitespace().nth(19).unwrap().to_owned()
}

fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < timeout, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn kitt_run_in_docker_mode_pulls_the_image_runs_the_container_and_removes_it() {
    let Some(engine) = Engine::find() else { return };
    let _lock = ServerLock::acquire();
    let scratch = Scratch::new();
    let docker = FakeDocker::new();
    let model = model_in_folder(&scratch, &TinyModel::default());
    let folder = model.parent().unwrap().canonicalize().unwrap();
    let file = model.file_name().unwrap().to_str().unwrap();

    let mut command = docker_run(&scratch, &docker, Some(&engine));
    command.args(["-m", model.to_str().unwrap()]);
    let (outcome, kitt_pid) = outcome(&mut command);
    let result = result_of(&outcome);

    assert_eq!(result["passed"], true);
    for expected in [
        format!("pulling image {IMAGE}: 3 of 3 layers done"),
        format!("pulling image {IMAGE}: Downloaded newer image for {IMAGE}"),
    ] {
        assert!(outcome.stderr.contains(&expected), "{expected} in {}", outcome.stderr);
    }
    let run_id = result["id"].as_str().unwrap();
    let name = format!("kitt-run-{run_id}");
    let runs = docker.calls_of("run");
    assert_eq!(runs.len(), 1, "{runs:?}");
    let publish = &runs[0][runs[0].iter().position(|arg| arg == "--publish").unwrap() + 1];
    let host_port: u16 =
        publish.strip_prefix("127.0.0.1:").unwrap().strip_suffix(":8080").unwrap().parse().unwrap();
    let parameters = &result["engine"]["parameters"];
    let expected: Vec<String> = [
        "run",
        "--detach",
        "--name",
        &name,
        "--label",
        &format!("kitt.owner={kitt_pid}:{}", owner_start_of(&runs[0])),
        "--label",
        &format!("kitt.run={run_id}"),
        "--publish",
        &format!("127.0.0.1:{host_port}:8080"),
        "--volume",
        &format!("{}:/models:ro", folder.display()),
        IMAGE,
        "--model",
        &format!("/models/{file}"),
        "--alias",
        result["model"]["name"].as_str().unwrap(),
        "--host",
        "0.0.0.0",
        "--port",
        "8080",
        "--ctx-size",
        parameters["ctx-size"].as_str().unwrap(),
        "--parallel",
        parameters["parallel"].as_str().unwrap(),
        "--no-webui",
        "--metrics",
    ]
    .map(str::to_owned)
    .into();
    assert_eq!(runs[0], expected);
    assert_eq!(docker.calls_of("pull"), [["pull", IMAGE]]);
    assert_eq!(docker.calls_of("logs"), [["logs", "--follow", name.as_str()]]);
    assert_eq!(docker.calls_of("stop"), [["stop", "-t", "10", name.as_str()]]);
    assert!(docker.calls_of("rm").contains(&vec!["rm".into(), "--force".into(), name.clone()]));

    assert_eq!(parameters["mode"], "docker");
    assert_eq!(parameters["image"], IMAGE);
    assert_eq!(parameters["gpus"], "none", "no GPU on this machine");
    assert_eq!(parameters["mounts"], format!("{}:/models:ro", folder.display()));
    let digest = parameters["image_digest"].as_str().unwrap();
    assert!(digest.starts_with("ghcr.io/ggml-org/llama.cpp@sha256:"), "{digest}");
    assert!(result["engine"]["version"].as_str().unwrap().contains(digest), "{}", result["engine"]);
    assert!(result["engine"]["comparability"]["engine_mode"].as_str().unwrap().contains(digest));
    let log =
        std::fs::read_to_string(Path::new(result["run_dir"].as_str().unwrap()).join("engine.log"))
            .unwrap();
    assert!(log.contains("model loaded"), "the container's output is the engine log: {log}");

    assert!(docker.containers().is_empty(), "left: {:?}", docker.container_names());
    assert!(processes_mentioning(&model).is_empty(), "the container's server outlived the run");
    assert!(
        std::net::TcpListener::bind(("127.0.0.1", host_port)).is_ok(),
        "the host port was released"
    );
}

/// The start time and home in a `kitt.owner=<pid>:<start>:<home>` label of a
/// `docker run` (the home a 12-digit hash).
fn owner_start_of(run: &[String]) -> String {
    let label = run.iter().find_map(|arg| arg.strip_prefix("kitt.owner=")).unwrap();
    let (_, rest) = label.split_once(':').unwrap();
    let home = rest.split(':').nth(1).unwrap_or_default();
    assert!(home.len() == 12 && home.chars().all(|c| c.is_ascii_hexdigit()), "{label}");
    rest.to_owned()
}

#[test]
fn gpus_choose_the_cuda_image_and_reach_docker_run_without_a_pull_when_present() {
    let Some(engine) = Engine::find() else { return };
    let _lock = ServerLock::acquire();
    let scratch = Scratch::new();
    let docker = FakeDocker::new();
    let model = model_in_folder(&scratch, &TinyModel::default());

    let mut command = docker_run(&scratch, &docker, Some(&engine));
    command
        .args(["-m", model.to_str().unwrap(), "--engine-config", "gpus=0,1"])
        .env("FAKE_DOCKER_NVIDIA", "1")
        .env("FAKE_DOCKER_IMAGES", CUDA_IMAGE);
    let (outcome, _) = outcome(&mut command);
    let result = result_of(&outcome);

    let run = &docker.calls_of("run")[0];
    let gpus = run.iter().position(|arg| arg == "--gpus").expect("a --gpus flag");
    assert_eq!(run[gpus + 1], "\"device=0,1\"", "several devices are one quoted CSV field");
    assert_eq!(run[gpus + 2], CUDA_IMAGE);
    assert!(docker.calls_of("pull").is_empty(), "the image was already here");
    assert!(!outcome.stderr.contains("pulling image"), "{}", outcome.stderr);
    assert_eq!(result["engine"]["parameters"]["gpus"], "0,1");
    assert!(docker.containers().is_empty());
}

#[test]
fn gpus_without_the_nvidia_runtime_fail_with_dockers_reason_and_leave_nothing() {
    let scratch = Scratch::new();
    let docker = FakeDocker::new();
    let model = model_in_folder(&scratch, &TinyModel::default());

    let mut command = docker_run(&scratch, &docker, None);
    command.args(["-m", model.to_str().unwrap(), "--engine-config", "gpus=all"]);
    command.env("FAKE_DOCKER_IMAGES", CUDA_IMAGE);
    let (outcome, _) = outcome(&mut command);

    assert_eq!(outcome.code, 3, "{}", outcome.stderr);
    assert!(outcome.stderr.contains("could not select device driver"), "{}", outcome.stderr);
    assert_eq!(docker.calls_of("run")[0].iter().filter(|a| *a == "--gpus").count(), 1);
    assert!(docker.containers().is_empty());
}

#[test]
fn a_container_that_exits_while_loading_fails_the_run_with_its_log_tail() {
    let scratch = Scratch::new();
    let docker = FakeDocker::new();
    let model = model_in_folder(&scratch, &TinyModel::default());

    let mut command = docker_run(&scratch, &docker, None);
    command
        .args(["-m", model.to_str().unwrap()])
        .env("FAKE_DOCKER_IMAGES", IMAGE)
        .env("FAKE_DOCKER_CONTAINER_EXIT", "3");
    let (outcome, _) = outcome(&mut command);

    assert_eq!(outcome.code, 1, "{}", outcome.stderr);
    assert!(
        outcome.stderr.contains("the engine exited while loading (container exited, exit code 3)"),
        "{}",
        outcome.stderr
    );
    assert!(
        outcome.stderr.contains("exiting with code 3 as FAKE_DOCKER_CONTAINER_EXIT asks"),
        "{}",
        outcome.stderr
    );
    assert!(docker.containers().is_empty(), "left: {:?}", docker.container_names());
}

#[test]
fn a_failed_pull_is_an_environment_error_and_creates_no_container() {
    let scratch = Scratch::new();
    let docker = FakeDocker::new();
    let model = model_in_folder(&scratch, &TinyModel::default());

    let mut command = docker_run(&scratch, &docker, None);
    command.args(["-m", model.to_str().unwrap()]).env("FAKE_DOCKER_PULL_FAIL", "1");
    let (outcome, _) = outcome(&mut command);

    assert_eq!(outcome.code, 3, "{}", outcome.stderr);
    assert!(
        outcome.stderr.contains(&format!("`docker pull {IMAGE}` failed")),
        "{}",
        outcome.stderr
    );
    assert!(outcome.stderr.contains("manifest unknown"), "{}", outcome.stderr);
    assert!(docker.calls_of("run").is_empty());
}

#[test]
fn an_image_override_is_used_and_a_missing_docker_is_explained() {
    let scratch = Scratch::new();
    let docker = FakeDocker::new();
    let model = model_in_folder(&scratch, &TinyModel::default());

    let mut command = docker_run(&scratch, &docker, None);
    command
        .args([
            "-m",
            model.to_str().unwrap(),
            "--engine-config",
            "image=registry.example/llama.cpp:b1",
        ])
        .env("FAKE_DOCKER_REGISTRY", "registry.example/llama.cpp:b1")
        .env("FAKE_DOCKER_CONTAINER_EXIT", "1");
    let (overridden, _) = outcome(&mut command);
    assert_eq!(overridden.code, 1, "{}", overridden.stderr);
    assert_eq!(docker.calls_of("pull"), [["pull", "registry.example/llama.cpp:b1"]]);

    let mut command = scratch.kitt();
    command.env("KITT_DOCKER", scratch.path().join("no-docker")).args([
        "run",
        "-m",
        model.to_str().unwrap(),
        "-e",
        "llama_cpp",
        "--engine-config",
        "mode=docker",
    ]);
    let missing = scratch.run(&mut command);
    assert_eq!(missing.code, 3, "{}", missing.stderr);
    assert!(missing.stderr.contains("cannot find the `docker` program"), "{}", missing.stderr);
    assert!(missing.stderr.contains("KITT_DOCKER="), "{}", missing.stderr);
}

#[test]
fn gpus_need_docker_mode_on_the_command_line_and_in_campaign_files() {
    let scratch = Scratch::new();
    let model = model_in_folder(&scratch, &TinyModel::default());
    let mut command = scratch.kitt();
    command.args([
        "run",
        "-m",
        model.to_str().unwrap(),
        "-e",
        "llama_cpp",
        "--engine-config",
        "gpus=all",
    ]);
    let native = scratch.run(&mut command);
    assert_eq!(native.code, 2, "{}", native.stderr);
    assert!(native.stderr.contains("gpus applies to Docker mode only"), "{}", native.stderr);
    let mut command = scratch.kitt();
    let args = ["run", "-m", model.to_str().unwrap(), "-e", "llama_cpp"];
    command.args(args).args(["--engine-config", "image=my/llama:b1"]);
    let image = scratch.run(&mut command);
    assert_eq!(image.code, 2, "{}", image.stderr);
    assert!(image.stderr.contains("image applies to Docker mode only"), "{}", image.stderr);

    let config = "campaign_name: c\nmodels:\n  - name: M\n    gguf_repo: o/m\nengines:\n  - name: llama_cpp\n    config:\n      mode: docker\n      gpus: [0, x_y]\n  - name: ollama\n    config:\n      gpus: 2\n";
    scratch.write("c.yaml", config);
    let checked = scratch.dry_run("c.yaml", &[]);
    assert_eq!(checked.code, 2, "{}", checked.stderr);
    assert!(checked.stderr.contains("`x_y` is not a GPU index or UUID"), "{}", checked.stderr);
    assert!(checked.stderr.contains("`gpus` applies to Docker mode only"), "{}", checked.stderr);
    assert!(checked.stderr.contains("c.yaml:9"), "located: {}", checked.stderr);
}

/// Starts a docker-mode `performance` run of `model` and waits until its container serves.
fn start_long_run(
    scratch: &Scratch,
    docker: &FakeDocker,
    engine: &Engine,
    model: &Path,
) -> std::process::Child {
    let mut command = docker_run(scratch, docker, Some(engine));
    command
        .args(["-m", model.to_str().unwrap(), "-s", "performance"])
        .env("FAKE_DOCKER_IMAGES", IMAGE)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = command.spawn().unwrap();
    wait_until("the container's server runs", Duration::from_secs(120), || {
        let running = docker.containers().iter().any(|c| c["status"] == "running");
        running && !processes_mentioning(model).is_empty()
    });
    let run = &docker.calls_of("run")[0];
    let publish = &run[run.iter().position(|arg| arg == "--publish").unwrap() + 1];
    let port: u16 = publish.split(':').nth(1).unwrap().parse().unwrap();
    wait_until("the suite is under way", Duration::from_secs(120), || serving_requests(port));
    child
}

/// Whether the llama-server published on `port` has begun serving requests:
/// its `/metrics` count a request in flight or a token generated.
fn serving_requests(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else { return false };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let request = "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    let mut answer = String::new();
    if stream.write_all(request.as_bytes()).is_err() || stream.read_to_string(&mut answer).is_err()
    {
        return false;
    }
    answer.lines().any(|line| {
        let mut fields = line.split_whitespace();
        let counted = matches!(
            fields.next(),
            Some("llamacpp:requests_processing" | "llamacpp:tokens_predicted_total")
        );
        counted
            && fields.next().and_then(|value| value.parse::<f64>().ok()).is_some_and(|v| v > 0.0)
    })
}

#[test]
fn ctrl_c_in_docker_mode_removes_the_container() {
    let Some(engine) = Engine::find() else { return };
    let scratch = Scratch::new();
    let docker = FakeDocker::new();
    let slow = TinyModel { dtype: TensorType::F16, ..TinyModel::measurably_slow() };
    // Written before the lock: it takes seconds, and needs no server.
    let model = model_in_folder(&scratch, &slow);
    let _lock = ServerLock::acquire();

    let child = start_long_run(&scratch, &docker, &engine, &model);
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), Signal::SIGINT).unwrap();
    let output = child.wait_with_output().unwrap();

    assert_eq!(output.status.code(), Some(130), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(docker.containers().is_empty(), "left: {:?}", docker.container_names());
    assert!(processes_mentioning(&model).is_empty(), "the container's server outlived Ctrl-C");
}

#[test]
fn after_kill_9_the_next_run_reaps_the_orphaned_container_and_spares_the_others() {
    let Some(engine) = Engine::find() else { return };
    let scratch = Scratch::new();
    let docker = FakeDocker::new();
    let slow = TinyModel { dtype: TensorType::F16, ..TinyModel::measurably_slow() };
    // Written before the lock: it takes seconds, and needs no server.
    let model = model_in_folder(&scratch, &slow);
    let _lock = ServerLock::acquire();

    let mut child = start_long_run(&scratch, &docker, &engine, &model);
    child.kill().unwrap();
    child.wait().unwrap();
    let orphan = docker.container_names();
    assert_eq!(orphan.len(), 1, "{orphan:?}");
    assert!(!processes_mentioning(&model).is_empty(), "a container outlives a kitt killed with -9");

    docker.docker(&["run", "--detach", "--name", "stranger", "busybox", "sleep", "300"]);
    let me = std::process::id();
    let live_owner = format!("kitt.owner={me}:{}", start_time(me));
    docker.docker(&[
        "run",
        "--detach",
        "--name",
        "kitt-live",
        "--label",
        &live_owner,
        "busybox",
        "sleep",
        "300",
    ]);

    // A run that fails fast still reaps first.
    let mut command = docker_run(&scratch, &docker, None);
    command
        .args(["-m", model.to_str().unwrap()])
        .env("FAKE_DOCKER_IMAGES", IMAGE)
        .env("FAKE_DOCKER_CONTAINER_EXIT", "1");
    let (next, _) = outcome(&mut command);

    assert!(
        next.stderr.contains(&format!(
            "removed 1 container(s) left running by a kitt that died: {}",
            orphan[0]
        )),
        "{}",
        next.stderr
    );
    assert_eq!(docker.container_names(), ["kitt-live", "stranger"]);
    wait_until("the orphan's server is gone", Duration::from_secs(5), || {
        processes_mentioning(&model).is_empty()
    });
    docker.docker(&["rm", "--force", "kitt-live", "stranger"]);
}

#[test]
fn a_campaign_names_its_containers_after_the_campaign_and_the_run() {
    let Some(engine) = Engine::find() else { return };
    let _lock = ServerLock::acquire();
    let scratch = Scratch::new();
    let docker = FakeDocker::new();
    let dir = scratch.models().join("huggingface/test/tiny-GGUF");
    std::fs::create_dir_all(&dir).unwrap();
    TinyModel::default().write(&dir.join("tiny-F32.gguf")).unwrap();
    let config = "campaign_name: dock\nmodels:\n  - name: Tiny\n    gguf_repo: test/tiny-GGUF\nengines:\n  - name: llama_cpp\n    suite: quick\n    config:\n      mode: docker\ndisk:\n  reserve_gb: 0\n  cleanup_after_run: false\n";
    scratch.write("dock.yaml", config);

    let mut command = scratch.kitt();
    docker.configure(&mut command, Some(&engine));
    command.env("FAKE_DOCKER_IMAGES", IMAGE).args([
        "--json",
        "campaign",
        "run",
        "dock.yaml",
        "--campaign-id",
        "dock-1",
    ]);
    let outcome = scratch.run(&mut command);

    assert_eq!(outcome.code, 0, "stdout: {}\nstderr: {}", outcome.stdout, outcome.stderr);
    let run = &docker.calls_of("run")[0];
    let name = &run[3];
    let run_id = name.strip_prefix("kitt-dock-1-").expect("kitt-<campaign>-<run>");
    assert_eq!(run_id.len(), 16, "{name}");
    assert!(run.contains(&"kitt.campaign=dock-1".to_owned()), "{run:?}");
    assert!(run.contains(&format!("kitt.run={run_id}")), "{run:?}");
    assert!(docker.containers().is_empty(), "left: {:?}", docker.container_names());
}

#[test]
fn engines_list_shows_whether_docker_answers() {
    let scratch = Scratch::new();
    let docker = FakeDocker::new();

    let mut command = scratch.kitt();
    docker.configure(&mut command, None);
    command.args(["engines", "list"]);
    let up = scratch.run(&mut command);
    assert_eq!(up.code, 0, "{}", up.stderr);
    assert!(up.stdout.contains(&format!("yes: {IMAGE}")), "{}", up.stdout);
    let expected = format!("Docker: server 27.5.1 through {}", docker.program().display());
    assert!(up.stdout.contains(&expected), "{}", up.stdout);

    let mut command = scratch.kitt();
    docker.configure(&mut command, None);
    command.env("FAKE_DOCKER_DAEMON_DOWN", "1").args(["--json", "engines", "list"]);
    let down = scratch.run(&mut command);
    let list: Value = serde_json::from_str(&down.stdout).unwrap();
    let llama = &list[0]["docker"];
    assert_eq!(llama["usable"], false);
    assert_eq!(llama["image"], IMAGE);
    assert!(
        llama["detail"].as_str().unwrap().contains("Cannot connect to the Docker daemon"),
        "{llama}"
    );
    assert_eq!(list[5]["docker"], Value::Null, "mlx has no Docker mode");
}

#[test]
fn docker_mode_is_refused_where_the_engine_has_none_and_odd_images_or_gpus_are_refused() {
    let scratch = Scratch::new();
    let model = scratch.path().join("m.gguf");
    std::fs::write(&model, b"GGUF").unwrap();
    let run = |engine: &str, config: &[&str]| {
        let mut command = scratch.kitt();
        command.args(["run", "-m", model.to_str().unwrap(), "-e", engine, "-s", "quick"]);
        for pair in config {
            command.args(["--engine-config", pair]);
        }
        scratch.run(&mut command)
    };
    let mlx = run("mlx", &["mode=docker"]);
    assert_eq!(mlx.code, 2, "{}", mlx.stderr);
    assert!(mlx.stderr.contains("engine `mlx` has no Docker mode"), "{}", mlx.stderr);
    let option = run("llama_cpp", &["mode=docker", "image=--privileged"]);
    assert_eq!(option.code, 2, "{}", option.stderr);
    assert!(option.stderr.contains("starts with `-`"), "{}", option.stderr);
    let gpus = run("llama_cpp", &["mode=docker", "gpus=banana"]);
    assert_eq!(gpus.code, 2, "{}", gpus.stderr);
    assert!(gpus.stderr.contains("`banana` is not a GPU index or UUID"), "{}", gpus.stderr);

    let config = scratch.write(
        "c.yaml",
        "campaign_name: d\nmodels:\n  - name: m\n    gguf_repo: org/m-GGUF\nengines:\n  - name: mlx\n    config:\n      mode: docker\n  - name: llama_cpp\n    config:\n      mode: docker\n      image: \"-v\"\n      gpus: banana\n",
    );
    let dry = scratch.run(scratch.kitt().args([
        "campaign",
        "run",
        config.to_str().unwrap(),
        "--dry-run",
    ]));
    assert_eq!(dry.code, 2, "{}", dry.stderr);
    for wanted in ["engine `mlx` has no Docker mode", "starts with `-`", "`banana` is not a GPU"] {
        assert!(dry.stderr.contains(wanted), "{wanted}: {}", dry.stderr);
    }
}
