//! `parallel: true` end to end: the real llama-server on generated models,
//! on a machine whose GPUs a fake `nvidia-smi` (tests/fakes/gpu) describes.
//! Two runs go at once, each pinned to its own device (read from the live
//! engines' /proc environ) on its own port, numbered apart in the progress
//! lines and listed with their devices by `campaign status`, and their
//! results overlap in time and name each other; a model bigger than one
//! device gets two, one bigger than the machine is skipped with the sizes;
//! memory another process uses keeps a run off its device; `kill -9` or
//! Ctrl-C during two runs then `--resume` finishes both with one result each
//! and no engine left; a unified-memory device (`[N/A]`) holds what the RAM
//! holds; without any GPU (no NVML, no `nvidia-smi`) the machine is one
//! device and runs never overlap. On a terminal each run in flight has a
//! live line of its own under the campaign's. The dry run shows the devices and what
//! each run needs, and `max_parallel` without `parallel` warns on every
//! path (neither needs an engine). Every test points `KITT_NVML_LIBRARY`
//! at a library that does not exist, so a machine with a real NVML still
//! runs on the fake `nvidia-smi`, and every test also shows the fallback to
//! it; one runs on a fake NVML (tests/hardware_nvml.rs covers NVML itself).
//! The servers run together under one `ServerLock`.

mod common;
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Scratch, finish, no_engine_left, processes_mentioning, signal, summary};
use kitt::gguf::TinyModel;
use kitt::results::model::RunResult;
use kitt::store::{ResultFilter, Store};
use nix::sys::signal::Signal;
use serde_json::Value;
use support::engine::{Engine, ServerLock};
use support::nvml::FakeNvml;

/// The directory of the fake `nvidia-smi`.
fn fake_gpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fakes/gpu")
}

/// Puts the fake `nvidia-smi` first on the PATH of `command`, reporting
/// `count` devices of `memory` MiB (or `[N/A]`), and no NVML.
fn on_fake_gpus<'c>(command: &'c mut Command, (count, memory): (u32, &str)) -> &'c mut Command {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs = vec![fake_gpus()];
    dirs.extend(std::env::split_paths(&path));
    command
        .env("PATH", std::env::join_paths(dirs).unwrap())
        .env("KITT_NVML_LIBRARY", "/nonexistent/kitt-test/libnvidia-ml.so.1")
        .env("FAKE_GPU_COUNT", count.to_string())
        .env("FAKE_GPU_MEMORY_MIB", memory)
}

/// `kitt campaign ARGS` on the fake GPUs ([`on_fake_gpus`]) with the real
/// llama-server.
fn campaign(scratch: &Scratch, engine: &Engine, gpus: (u32, &str), args: &[&str]) -> Command {
    let mut command = scratch.kitt();
    on_fake_gpus(&mut command, gpus)
        .env("KITT_LLAMA_SERVER", &engine.server)
        .arg("campaign")
        .args(args);
    command
}

/// Writes a generated model as `<root>/huggingface/<repo>/<stem>.gguf`;
/// returns its size.
fn install(scratch: &Scratch, repo: &str, file: &str, model: &TinyModel) -> u64 {
    let dir = scratch.models().join("huggingface").join(repo);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(file);
    model.write(&path).unwrap();
    std::fs::metadata(&path).unwrap().len()
}

fn config(name: &str, models: &[(&str, &str)], extra: &str) -> String {
    let mut text = format!("campaign_name: {name}\nparallel: true\n{extra}models:\n");
    for (model, repo) in models {
        text.push_str(&format!("  - name: {model}\n    params: \"2.5M\"\n    gguf_repo: {repo}\n"));
    }
    text.push_str("engines:\n  - name: llama_cpp\n    suite: quick\n");
    text.push_str("disk:\n  reserve_gb: 0\n  cleanup_after_run: false\n");
    text
}

/// Every stored result, by the first word of its model file's name
/// (`one` for `one-F16.gguf`).
fn results(scratch: &Scratch) -> BTreeMap<String, RunResult> {
    let store = Store::open(&scratch.home()).unwrap();
    store
        .results(&ResultFilter::default())
        .unwrap()
        .into_iter()
        .map(|summary| {
            let result = store.result(&summary.id).unwrap().unwrap();
            let file = Path::new(&result.model.path).file_name().unwrap().to_string_lossy();
            let word = file.split('-').next().unwrap().to_owned();
            (word, result)
        })
        .collect()
}

fn span(result: &RunResult) -> (jiff::Timestamp, jiff::Timestamp) {
    (result.started_at.parse().unwrap(), result.finished_at.parse().unwrap())
}

fn overlap(a: &RunResult, b: &RunResult) -> bool {
    let ((a_start, a_end), (b_start, b_end)) = (span(a), span(b));
    a_start < b_end && b_start < a_end
}

/// A running engine as /proc shows it: its pin and its port.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Pinned {
    visible: Option<String>,
    /// `CUDA_DEVICE_ORDER`, which makes the indices mean nvidia-smi's.
    order: Option<String>,
    port: String,
}

/// The engines serving models under `models` now (a wrapper and the server
/// it starts count once: same port).
fn engines(models: &Path) -> BTreeSet<Pinned> {
    processes_mentioning(models)
        .into_iter()
        .filter_map(|pid| {
            let environ = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let variable = |name: &str| {
                environ
                    .split(|byte| *byte == 0)
                    .filter_map(|entry| std::str::from_utf8(entry).ok())
                    .find_map(|entry| entry.strip_prefix(name)?.strip_prefix('='))
                    .map(str::to_owned)
            };
            let (visible, order) =
                (variable("CUDA_VISIBLE_DEVICES"), variable("CUDA_DEVICE_ORDER"));
            let args: Vec<String> = cmdline
                .split(|byte| *byte == 0)
                .map(|arg| String::from_utf8_lossy(arg).into_owned())
                .collect();
            let port =
                args.iter().position(|arg| arg == "--port").map(|at| args[at + 1].clone())?;
            Some(Pinned { visible, order, port })
        })
        .collect()
}

/// Waits until two engines run at once; returns them.
fn two_engines(child: &mut Child, models: &Path) -> BTreeSet<Pinned> {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the campaign ended ({status}) before two engines ran at once");
        }
        let seen = engines(models);
        if seen.len() == 2 {
            return seen;
        }
        assert!(Instant::now() < deadline, "two engines never ran at once: {seen:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn two_slow_models(scratch: &Scratch) -> PathBuf {
    install(scratch, "test/one-GGUF", "one-F16.gguf", &TinyModel::measurably_slow());
    install(scratch, "test/two-GGUF", "two-F16.gguf", &TinyModel::measurably_slow());
    scratch
        .write("p.yaml", &config("par", &[("One", "test/one-GGUF"), ("Two", "test/two-GGUF")], ""))
}

/// Campaign `name` of one small model, A (file `a-F32.gguf`).
fn one_small_model(scratch: &Scratch, name: &str) -> PathBuf {
    install(scratch, "test/a-GGUF", "a-F32.gguf", &TinyModel::default());
    scratch.write("p.yaml", &config(name, &[("A", "test/a-GGUF")], ""))
}

/// `kitt --json campaign run PATH` on two fake GPUs, started in the
/// background with its output piped.
fn two_runs_started(scratch: &Scratch, engine: &Engine, path: &str) -> Child {
    campaign(scratch, engine, (2, "24576"), &["--json", "run", path])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn two_runs_go_at_once_each_pinned_to_its_own_gpu_and_port() {
    let Some(engine) = Engine::find() else { return };
    let _lock = ServerLock::acquire();
    let scratch = Scratch::new();
    let file = two_slow_models(&scratch);
    let path = file.to_str().unwrap();
    let mut child = two_runs_started(&scratch, &engine, path);
    let seen = two_engines(&mut child, &scratch.models());
    let pins: BTreeSet<Option<String>> = seen.iter().map(|e| e.visible.clone()).collect();
    assert_eq!(pins, BTreeSet::from([Some("0".to_owned()), Some("1".to_owned())]), "{seen:?}");
    assert!(seen.iter().all(|e| e.order.as_deref() == Some("PCI_BUS_ID")), "{seen:?}");
    let ports: BTreeSet<&String> = seen.iter().map(|e| &e.port).collect();
    assert_eq!(ports.len(), 2, "distinct ports: {seen:?}");
    // `campaign status` lists both runs in flight (the slow models' suites
    // last seconds; the engines were both up a moment ago).
    let status = scratch.run(scratch.kitt().args(["--json", "campaign", "status"]));
    let view: Value = serde_json::from_str(&status.stdout).unwrap();
    let current: BTreeSet<&str> = view["current_runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|run| run["key"].as_str().unwrap())
        .collect();
    assert_eq!(current, BTreeSet::from(["One|llama_cpp|F16", "Two|llama_cpp|F16"]), "{view}");
    // Each with the devices it runs on.
    let devices: BTreeSet<&str> = view["current_runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|run| run["devices"].as_str().unwrap_or("none"))
        .collect();
    assert_eq!(devices, BTreeSet::from(["GPU 0", "GPU 1"]), "{view}");
    let text = scratch.run(scratch.kitt().args(["campaign", "status"])).stdout;
    assert_eq!(text.matches("Current:").count(), 2, "{text}");
    for gpu in ["GPU 0", "GPU 1"] {
        assert!(text.contains(&format!("_cpp|F16 on {gpu} — ")), "{text}");
    }

    let outcome = finish(child);
    let done = summary(&outcome, 0);
    assert_eq!(done["status"], "completed", "{done}");
    assert!(
        outcome.stderr.contains("parallel: runs placed on GPU 0 Fake GPU 24GB")
            && outcome.stderr.contains("(from nvidia-smi)"),
        "{}",
        outcome.stderr
    );
    // Runs started together have numbers of their own, kept to their last line.
    let numbers: BTreeSet<(String, &str)> = outcome
        .stderr
        .lines()
        .filter_map(|line| {
            let (number, rest) = line.strip_prefix('[')?.split_once("/2] ")?;
            Some((number.to_owned(), rest.split(':').next()?))
        })
        .collect();
    let expected = [("1", "One|llama_cpp|F16"), ("2", "Two|llama_cpp|F16")];
    let expected: BTreeSet<(String, &str)> =
        expected.into_iter().map(|(number, key)| (number.to_owned(), key)).collect();
    assert_eq!(numbers, expected, "{}", outcome.stderr);
    let results = results(&scratch);
    let (one, two) = (&results["one"], &results["two"]);
    assert!(overlap(one, two), "the runs overlap in time: {:?} {:?}", span(one), span(two));
    let devices: BTreeSet<&str> =
        [one, two].iter().map(|r| r.engine.comparability["devices"].as_str()).collect();
    assert_eq!(
        devices,
        BTreeSet::from([
            "GPU 0 (CUDA_VISIBLE_DEVICES=0) (placed by `parallel: true`)",
            "GPU 1 (CUDA_VISIBLE_DEVICES=1) (placed by `parallel: true`)",
        ])
    );
    // Two engines share the CPU: each gets its share of the machine's threads.
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let share = (cores / 2).max(1).to_string();
    for result in [one, two] {
        assert_eq!(result.engine.parameters["threads"], share, "{:?}", result.engine.parameters);
        let note = &result.engine.comparability["threads"];
        assert!(note.starts_with(&format!("{share} (the CPU shared")), "{note}");
    }
    for (result, other) in [(one, "Two|llama_cpp|F16"), (two, "One|llama_cpp|F16")] {
        let beside = &result.engine.comparability["concurrent_activity"];
        assert!(beside.contains(&format!("run {other} ran at the same time on GPU")), "{beside}");
    }
    no_engine_left(&scratch);
}

#[test]
fn a_model_bigger_than_one_gpu_gets_two_and_one_bigger_than_the_machine_is_skipped() {
    let Some(engine) = Engine::find() else { return };
    let _lock = ServerLock::acquire();
    let scratch = Scratch::new();
    let big = install(&scratch, "test/big-GGUF", "big-F32.gguf", &TinyModel::default());
    let huge = install(&scratch, "test/huge-GGUF", "huge-F16.gguf", &TinyModel::measurably_slow());
    // Two devices that each hold a little more than half of Big with its
    // headroom: Big needs both; Huge needs more than the machine has.
    let mib = 1u64 << 20;
    let per_device = (big + big / 5).div_ceil(2).div_ceil(mib) + 1;
    assert!((huge + huge / 5) > 2 * per_device * mib, "Huge must exceed the machine");
    let file = scratch.write(
        "p.yaml",
        &config("sizes", &[("Big", "test/big-GGUF"), ("Huge", "test/huge-GGUF")], ""),
    );
    let memory = per_device.to_string();
    let mut command =
        campaign(&scratch, &engine, (2, &memory), &["--json", "run", file.to_str().unwrap()]);
    let done = summary(&scratch.run(&mut command), 0);
    let runs = done["runs"].as_array().unwrap();
    let by_key: BTreeMap<&str, &Value> =
        runs.iter().map(|run| (run["key"].as_str().unwrap(), run)).collect();
    assert_eq!(by_key["Big|llama_cpp|F32"]["status"], "success", "{done}");
    let huge_run = by_key["Huge|llama_cpp|F16"];
    assert_eq!(huge_run["status"], "skipped", "{done}");
    let reason = huge_run["reason"].as_str().unwrap();
    assert!(reason.contains("headroom") && reason.contains("2 device(s) of"), "{reason}");
    let results = results(&scratch);
    assert_eq!(
        results["big"].engine.comparability["devices"],
        "GPU 0,1 (CUDA_VISIBLE_DEVICES=0,1) (placed by `parallel: true`)"
    );
    assert_eq!(results.len(), 1, "a skipped run has no result");
    // Big needs both devices, so no run ever overlaps it: its engine keeps
    // every CPU thread.
    let big = &results["big"].engine;
    assert!(!big.parameters.contains_key("threads"), "{:?}", big.parameters);
    assert!(!big.comparability.contains_key("threads"), "{:?}", big.comparability);
}

#[test]
fn kill_9_during_two_runs_then_resume_finishes_both_once() {
    let Some(engine) = Engine::find() else { return };
    let _lock = ServerLock::acquire();
    let scratch = Scratch::new();
    let file = two_slow_models(&scratch);
    let path = file.to_str().unwrap();
    let mut child = two_runs_started(&scratch, &engine, path);
    two_engines(&mut child, &scratch.models());
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    no_engine_left(&scratch);
    let status = scratch.run(scratch.kitt().args(["--json", "campaign", "status"]));
    let view: Value = serde_json::from_str(&status.stdout).unwrap();
    assert_eq!(view["state"], "interrupted", "{view}");
    assert_eq!(view["counts"]["running"], 2, "{view}");

    resume_finishes_both_once(&scratch, &engine, path);
}

/// `--resume` after two runs in flight were stopped: both run again and
/// succeed, each with one result, and no engine is left.
fn resume_finishes_both_once(scratch: &Scratch, engine: &Engine, path: &str) {
    let resumed = scratch.run(&mut campaign(
        scratch,
        engine,
        (2, "24576"),
        &["--json", "run", path, "--resume"],
    ));
    let done = summary(&resumed, 0);
    assert_eq!(done["status"], "completed", "{done}");
    for run in done["runs"].as_array().unwrap() {
        assert_eq!(run["status"], "success", "{done}");
        assert_eq!(run["attempts"], 2, "{done}");
    }
    assert_eq!(results(scratch).len(), 2, "one result per run");
    no_engine_left(scratch);
}

#[test]
fn ctrl_c_during_two_runs_stops_both_engines_and_resume_finishes_both_once() {
    let Some(engine) = Engine::find() else { return };
    let _lock = ServerLock::acquire();
    let scratch = Scratch::new();
    let file = two_slow_models(&scratch);
    let path = file.to_str().unwrap();
    let mut child = two_runs_started(&scratch, &engine, path);
    two_engines(&mut child, &scratch.models());
    signal(&child, Signal::SIGINT);
    let outcome = finish(child);
    // README: an interrupted campaign prints its summary and exits 130.
    let stopped = summary(&outcome, 130);
    assert_eq!(stopped["interrupted"], true, "{stopped}");
    assert_eq!(stopped["status"], "pending", "{stopped}");
    for run in stopped["runs"].as_array().unwrap() {
        assert_eq!(run["status"], "pending", "{stopped}");
        assert_eq!(run["attempts"], 1, "{stopped}");
    }
    let stderr = &outcome.stderr;
    assert_eq!(stderr.matches("interrupted; redone on resume").count(), 2, "{stderr}");
    assert!(stderr.contains("--resume"), "{stderr}");
    no_engine_left(&scratch);
    let status = scratch.run(scratch.kitt().args(["--json", "campaign", "status"]));
    let view: Value = serde_json::from_str(&status.stdout).unwrap();
    assert_eq!(view["state"], "pending", "{view}");
    assert_eq!(view["live"], false, "{view}");
    assert_eq!(view["counts"]["pending"], 2, "{view}");
    assert_eq!(view["counts"]["running"], 0, "{view}");

    resume_finishes_both_once(&scratch, &engine, path);
}

#[test]
fn a_unified_memory_gpu_holds_what_the_ram_holds() {
    let Some(engine) = Engine::find() else { return };
    let _lock = ServerLock::acquire();
    let scratch = Scratch::new();
    let file = one_small_model(&scratch, "unified");
    let mut command =
        campaign(&scratch, &engine, (1, "[N/A]"), &["--json", "run", file.to_str().unwrap()]);
    let outcome = scratch.run(&mut command);
    let done = summary(&outcome, 0);
    assert_eq!(done["status"], "completed", "{done}");
    assert!(outcome.stderr.contains("unified memory"), "{}", outcome.stderr);
    assert_eq!(
        results(&scratch)["a"].engine.comparability["devices"],
        "GPU 0 (CUDA_VISIBLE_DEVICES=0) (placed by `parallel: true`)"
    );
}

#[test]
fn without_any_gpu_the_machine_is_one_device_and_runs_never_overlap() {
    let Some(engine) = Engine::find() else { return };
    let _lock = ServerLock::acquire();
    let scratch = Scratch::new();
    install(&scratch, "test/a-GGUF", "a-F32.gguf", &TinyModel::default());
    install(&scratch, "test/b-GGUF", "b-F32.gguf", &TinyModel::default());
    let file = scratch.write(
        "p.yaml",
        &config("cpu", &[("A", "test/a-GGUF"), ("B", "test/b-GGUF")], "max_parallel: 4\n"),
    );
    // No NVML (`campaign` points at none) and no nvidia-smi: `KITT_NVIDIA_SMI` set empty.
    let mut command = campaign(&scratch, &engine, (2, "24576"), &["--json", "run"]);
    command.arg(file.to_str().unwrap()).env("KITT_NVIDIA_SMI", "");
    let outcome = scratch.run(&mut command);
    let done = summary(&outcome, 0);
    assert_eq!(done["status"], "completed", "{done}");
    assert!(outcome.stderr.contains("no GPU: one CPU device"), "{}", outcome.stderr);
    let results = results(&scratch);
    let (a, b) = (&results["a"], &results["b"]);
    assert!(!overlap(a, b), "one device: one run at a time");
    assert!(a.engine.comparability["devices"].starts_with("the CPU"));
    assert!(!a.engine.comparability.contains_key("concurrent_activity"));
    assert!(!a.engine.parameters.contains_key("threads"), "one at a time: the engine's default");
}

#[test]
fn memory_in_use_at_the_start_keeps_a_run_off_the_device_that_cannot_hold_it() {
    let Some(engine) = Engine::find() else { return };
    let _lock = ServerLock::acquire();
    let scratch = Scratch::new();
    let file = one_small_model(&scratch, "in-use");
    // Another process fills GPU 0: the run goes to GPU 1.
    let mut command =
        campaign(&scratch, &engine, (2, "24576"), &["--json", "run", file.to_str().unwrap()]);
    command.env("FAKE_GPU_USED_MIB", "24576,0");
    let done = summary(&scratch.run(&mut command), 0);
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(
        results(&scratch)["a"].engine.comparability["devices"],
        "GPU 1 (CUDA_VISIBLE_DEVICES=1) (placed by `parallel: true`)"
    );
}

/// Three local models of 10, 100 and 300 MiB (sparse files: only the plan
/// reads them).
fn three_sizes(scratch: &Scratch) -> PathBuf {
    let mib = 1 << 20;
    scratch.model_file("test/small-GGUF", "small-Q4_K_M.gguf", 10 * mib);
    scratch.model_file("test/big-GGUF", "big-Q4_K_M.gguf", 100 * mib);
    scratch.model_file("test/huge-GGUF", "huge-Q4_K_M.gguf", 300 * mib);
    let models =
        [("Small", "test/small-GGUF"), ("Big", "test/big-GGUF"), ("Huge", "test/huge-GGUF")];
    scratch.write("p.yaml", &config("sizes", &models, "max_parallel: 2\n"))
}

/// `kitt campaign run FILE --dry-run ARGS` on two fake GPUs of 100 MiB with
/// `used` MiB in use on each.
fn dry_run(scratch: &Scratch, file: &Path, used: &str, json: bool) -> String {
    let mut command = scratch.kitt();
    on_fake_gpus(&mut command, (2, "100")).env("FAKE_GPU_USED_MIB", used);
    if json {
        command.arg("--json");
    }
    command.args(["campaign", "run"]).arg(file).arg("--dry-run");
    let outcome = scratch.run(&mut command);
    assert_eq!(outcome.code, 0, "{outcome:?}");
    outcome.stdout
}

#[test]
fn the_dry_run_shows_the_devices_and_what_each_run_needs() {
    let scratch = Scratch::new();
    let file = three_sizes(&scratch);

    let text = dry_run(&scratch, &file, "0,0", false);
    assert!(text.contains("Parallel:     on, at most 2 at once"), "{text}");
    assert!(text.contains("Devices:      GPU 0 Fake GPU 24GB"), "{text}");
    assert!(text.contains("1 of GPU 0,1"), "{text}");
    assert!(text.contains("2 of GPU 0,1"), "{text}");
    // The run the machine cannot hold is a skip of the plan, counted so.
    assert!(
        text.contains(
            "skip: the model needs 360.0 MiB of device memory (300.0 MiB plus 20% headroom) \
             and this machine has 2 device(s) of 100.0 MiB each"
        ),
        "{text}"
    );
    assert!(text.contains("Runs:     3 (2 planned, 1 skipped)"), "{text}");

    let plan: Value = serde_json::from_str(&dry_run(&scratch, &file, "0,0", true)).unwrap();
    assert!(plan["parallel"]["devices"].as_str().unwrap().starts_with("GPU 0 Fake GPU"), "{plan}");
    assert_eq!(plan["parallel"]["max_parallel"], 2, "{plan}");
    let placement: BTreeMap<&str, &Value> = plan["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|run| (run["model"].as_str().unwrap(), &run["placement"]))
        .collect();
    assert_eq!(placement["Small"]["devices_needed"], 1, "{plan}");
    assert_eq!(placement["Big"]["devices_needed"], 2, "{plan}");
    assert_eq!(placement["Big"]["devices"], "2 of GPU 0,1", "{plan}");
    let huge = plan["runs"].as_array().unwrap().iter().find(|run| run["model"] == "Huge").unwrap();
    assert_eq!(huge["status"], "skipped", "{plan}");
    assert!(huge["reason"].as_str().unwrap().contains("360.0 MiB"), "{plan}");
    assert!(placement["Huge"].is_null(), "{plan}");

    // 60 MiB in use on GPU 0 at the start: Big no longer fits, and the
    // reason names the device's total and what is in use.
    let plan: Value = serde_json::from_str(&dry_run(&scratch, &file, "60,0", true)).unwrap();
    let big = plan["runs"].as_array().unwrap().iter().find(|run| run["model"] == "Big").unwrap();
    assert_eq!(big["status"], "skipped", "{plan}");
    let reason = big["reason"].as_str().unwrap();
    assert!(
        reason.contains(
            "2 device(s): GPU 0 of 100.0 MiB with 60.0 MiB in use by other processes at the \
             start, GPU 1 of 100.0 MiB"
        ),
        "{reason}"
    );
}

#[test]
fn max_parallel_without_parallel_warns_on_every_path() {
    let scratch = Scratch::new();
    // The model is not on the machine: the plan skips it and the run ends
    // without an engine.
    let file = scratch.write(
        "p.yaml",
        "campaign_name: serial\nparallel: false\nmax_parallel: 2\nmodels:\n  - name: M\n    \
         params: \"2.5M\"\n    gguf_repo: test/absent-GGUF\nengines:\n  - name: llama_cpp\n\
         disk:\n  reserve_gb: 0\n",
    );
    let path = file.to_str().unwrap();
    let warning = "warning: max_parallel: 2 has no effect without `parallel: true`";
    for args in [
        vec!["campaign", "run", path, "--dry-run"],
        vec!["--json", "campaign", "run", path, "--dry-run"],
        vec!["campaign", "run", path],
        vec!["--json", "campaign", "run", path],
    ] {
        let outcome = scratch.run(scratch.kitt().args(&args));
        assert_eq!(outcome.code, 0, "{args:?}: {outcome:?}");
        assert_eq!(outcome.stderr.matches(warning).count(), 1, "{args:?}: {}", outcome.stderr);
        assert!(!outcome.stdout.contains(warning), "{args:?}: {}", outcome.stdout);
    }
}

/// On a terminal a parallel campaign draws a board: the campaign's line and
/// one live line per run in flight, redrawn in place, with each run's last
/// line printed above it.
#[test]
fn on_a_terminal_each_run_in_flight_has_a_live_line() {
    use expectrl::process::unix::WaitStatus;
    use expectrl::{Eof, Expect, Session};

    let Some(engine) = Engine::find() else { return };
    let _lock = ServerLock::acquire();
    let scratch = Scratch::new();
    let file = two_slow_models(&scratch);
    let mut command = campaign(&scratch, &engine, (2, "24576"), &["run", file.to_str().unwrap()]);
    command.env("TERM", "xterm");
    let mut session = Session::spawn(command).expect("spawn kitt in a pty");
    session.get_process_mut().set_window_size(120, 40).expect("window size");
    session.set_expect_timeout(Some(Duration::from_secs(600)));
    let captured = session.expect(Eof).expect("the campaign ends");
    // The terminal ends lines with CR LF; a lone CR starts a redraw.
    let text = String::from_utf8_lossy(captured.as_bytes()).replace("\r\n", "\n");
    let status = session.get_process().wait().expect("wait");
    assert!(matches!(status, WaitStatus::Exited(_, 0)), "{status:?}\n{text}");

    // A frame is what is drawn after the board clears to the end of the
    // screen, up to the next redraw.
    let frames: Vec<Vec<&str>> = text
        .split("\x1b[J")
        .map(|frame| frame.split('\r').next().unwrap_or_default())
        .map(|frame| frame.split('\n').collect())
        .collect();
    let both = frames.iter().find(|lines| {
        lines.len() == 3
            && lines[0].contains("done 0/2 · elapsed")
            && lines[1].contains("] One|llama_cpp|F16 · ")
            && lines[2].contains("] Two|llama_cpp|F16 · ")
    });
    assert!(both.is_some(), "no frame shows both runs in flight under the campaign:\n{text:?}");
    for lines in &frames {
        for line in lines {
            assert!(line.chars().count() < 120, "a board line wider than the terminal: {line:?}");
        }
    }
    assert!(text.contains("[1/2] One|llama_cpp|F16: success"), "{text:?}");
    assert!(text.contains("[2/2] Two|llama_cpp|F16: success"), "{text:?}");
    no_engine_left(&scratch);
}

#[test]
fn an_nvml_machine_places_runs_on_the_gpus_cuda_visible_devices_leaves() {
    let Some(engine) = Engine::find() else { return };
    let nvml = FakeNvml::build();
    let _lock = ServerLock::acquire();
    let scratch = Scratch::new();
    let file = one_small_model(&scratch, "nvml");
    // NVML describes two GPUs; the fake nvidia-smi (four) must not be asked.
    let mut command = campaign(&scratch, &engine, (4, "24576"), &["--json", "run"]);
    command
        .arg(file.to_str().unwrap())
        .env("KITT_NVML_LIBRARY", &nvml.library)
        .env("FAKE_NVML_COUNT", "2")
        .env("CUDA_VISIBLE_DEVICES", "GPU-8a3f0001");
    let outcome = scratch.run(&mut command);
    let done = summary(&outcome, 0);
    assert_eq!(done["status"], "completed", "{done}");
    assert!(
        outcome.stderr.contains(
            "runs placed on GPU 1 Fake NVML GPU 24.0 GiB (from NVML; GPU 0 hidden by \
             CUDA_VISIBLE_DEVICES)"
        ),
        "{}",
        outcome.stderr
    );
    let result = &results(&scratch)["a"];
    assert_eq!(
        result.engine.comparability["devices"],
        "GPU 1 (CUDA_VISIBLE_DEVICES=1) (placed by `parallel: true`)"
    );
    assert_eq!(result.engine.comparability["memory"], "GPU memory used on GPU 1 (NVML)");
    assert!(result.hardware.fingerprint.starts_with("Fake-NVML-GPU-24GB-2x_"));
}
