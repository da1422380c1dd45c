//! `kitt campaign run` end to end against the real llama-server on models the
//! project generates: a 2 × 2 campaign completes and is visible to `status`
//! and `list`; a corrupt model and a missing engine binary fail in isolation;
//! `kill -9` and Ctrl-C leave a campaign that `--resume` finishes with one
//! result per run and no engine left; a second driver is refused; the disk
//! reserve skips runs until a resume with a smaller reserve runs them; a
//! rerun config resumed against a campaign runs just its runs. One
//! llama-server at a time (`ServerLock`).

mod common;
mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Outcome, Scratch, finish, no_engine_left, processes_mentioning, signal, summary};
use kitt::gguf::TinyModel;
use kitt::store::{ResultFilter, Store};
use nix::sys::signal::Signal;
use serde_json::Value;
use support::engine::{Engine, LlamaServer, ServerLock};

/// Writes a generated model as `<root>/huggingface/<repo>/<stem>-<QUANT>.gguf`
/// for F32 and each of `quants` (made with llama-quantize).
fn install(scratch: &Scratch, engine: &Engine, repo: &str, model: &TinyModel, quants: &[&str]) {
    let dir = scratch.models().join("huggingface").join(repo);
    std::fs::create_dir_all(&dir).unwrap();
    let stem = repo.rsplit('/').next().unwrap().trim_end_matches("-GGUF");
    let f32 = dir.join(format!("{stem}-F32.gguf"));
    model.write(&f32).unwrap();
    for quant in quants {
        engine.quantize(&f32, &dir.join(format!("{stem}-{quant}.gguf")), quant);
    }
}

/// The measurably slow model (F16) as `test/slow-GGUF`: its quick suite
/// lasts several seconds, long enough to interrupt.
fn install_slow(scratch: &Scratch) {
    let dir = scratch.models().join("huggingface/test/slow-GGUF");
    std::fs::create_dir_all(&dir).unwrap();
    TinyModel::measurably_slow().write(&dir.join("slow-F16.gguf")).unwrap();
}

fn config(name: &str, models: &[(&str, &str)], extra: &str) -> String {
    let mut text = format!("campaign_name: {name}\nmodels:\n");
    for (model, repo) in models {
        text.push_str(&format!("  - name: {model}\n    params: \"2.5M\"\n    gguf_repo: {repo}\n"));
    }
    if !extra.contains("engines:") {
        text.push_str("engines:\n  - name: llama_cpp\n    suite: quick\n");
    }
    if !extra.contains("disk:") {
        text.push_str("disk:\n  reserve_gb: 0\n  cleanup_after_run: false\n");
    }
    text.push_str(extra);
    text
}

fn campaign(scratch: &Scratch, engine: &Engine, args: &[&str]) -> Command {
    let mut command = scratch.kitt();
    command.env("KITT_LLAMA_SERVER", &engine.server).arg("campaign").args(args);
    command
}

fn run(scratch: &Scratch, engine: &Engine, args: &[&str]) -> Outcome {
    scratch.run(&mut campaign(scratch, engine, args))
}

fn json(scratch: &Scratch, args: &[&str]) -> Value {
    let outcome = scratch.run(scratch.kitt().arg("--json").arg("campaign").args(args));
    assert_eq!(outcome.code, 0, "{outcome:?}");
    serde_json::from_str(&outcome.stdout).unwrap_or_else(|e| panic!("{e}: {}", outcome.stdout))
}

fn run_status(summary: &Value) -> Vec<(String, String)> {
    summary["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|run| {
            (run["key"].as_str().unwrap().to_owned(), run["status"].as_str().unwrap().to_owned())
        })
        .collect()
}

fn result_count(scratch: &Scratch) -> usize {
    let store = Store::open(&scratch.home()).unwrap();
    store.results(&ResultFilter::default()).unwrap().len()
}

/// Starts `campaign run` in the background and waits until `key` is in a
/// benchmark phase.
fn start_until_benchmarking(scratch: &Scratch, engine: &Engine, args: &[&str], key: &str) -> Child {
    let mut child = campaign(scratch, engine, args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the campaign ended ({status}) before `{key}` was benchmarking");
        }
        let outcome = scratch.run(scratch.kitt().args(["--json", "campaign", "status"]));
        if let Ok(view) = serde_json::from_str::<Value>(&outcome.stdout) {
            let current = &view["current_run"];
            let phase = current["phase"].as_str().unwrap_or_default();
            if current["key"] == key && phase.starts_with("throughput") {
                return child;
            }
        }
        assert!(Instant::now() < deadline, "`{key}` never started benchmarking");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn two_models_by_two_quants_complete_and_show_in_status_and_list() {
    let Some(engine) = Engine::find() else { return };
    let _lock = ServerLock::acquire();
    let scratch = Scratch::new();
    install(&scratch, &engine, "test/alpha-GGUF", &TinyModel::default(), &["Q8_0"]);
    let beta = TinyModel { seed: 7, ..TinyModel::default() };
    install(&scratch, &engine, "test/beta-GGUF", &beta, &["Q8_0"]);
    let file = scratch.write(
        "c.yaml",
        &config("pair", &[("Alpha", "test/alpha-GGUF"), ("Beta", "test/beta-GGUF")], ""),
    );

    let done = summary(&run(&scratch, &engine, &["--json", "run", file.to_str().unwrap()]), 0);
    assert_eq!(done["status"], "completed");
    assert_eq!(
        run_status(&done),
        [
            ("Alpha|llama_cpp|Q8_0".to_owned(), "success".to_owned()),
            ("Alpha|llama_cpp|F32".to_owned(), "success".to_owned()),
            ("Beta|llama_cpp|Q8_0".to_owned(), "success".to_owned()),
            ("Beta|llama_cpp|F32".to_owned(), "success".to_owned()),
        ]
    );
    for run in done["runs"].as_array().unwrap() {
        assert!(run["output_tokens_per_second"].as_f64().unwrap() > 0.0, "{run}");
        assert!(run["ttft_ms_p50"].as_f64().unwrap() > 0.0, "{run}");
        assert_eq!(run["error_rate"], 0.0, "{run}");
        assert_eq!(run["attempts"], 1, "{run}");
        let run_dir = Path::new(run["run_dir"].as_str().unwrap());
        assert!(run_dir.join("metrics.json").is_file(), "{run}");
    }
    assert_eq!(result_count(&scratch), 4);
    no_engine_left(&scratch);

    let id = done["campaign_id"].as_str().unwrap();
    assert!(id.starts_with("pair-"), "{id}");
    let status = json(&scratch, &["status"]);
    assert_eq!(status["campaign"]["id"], id);
    assert_eq!(status["state"], "completed");
    assert_eq!(status["counts"]["success"], 4);
    assert_eq!(status["live"], false);
    assert!(status["disk_free_bytes"].as_u64().unwrap() > 0);
    let by_id = json(&scratch, &["status", id]);
    assert_eq!(by_id["campaign"]["id"], id);
    let list = json(&scratch, &["list"]);
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["id"], id);
    assert_eq!(list[0]["counts"]["success"], 4);

    // Human forms, and a resume that finds nothing to do repeats nothing.
    let text = scratch.run(scratch.kitt().args(["campaign", "status"]));
    assert!(text.stdout.contains("4 total | 4 success | 0 failed"), "{}", text.stdout);
    let again =
        summary(&run(&scratch, &engine, &["--json", "run", file.to_str().unwrap(), "--resume"]), 0);
    assert_eq!(again["campaign_id"], id);
    assert_eq!(result_count(&scratch), 4);
    let unknown = scratch.run(scratch.kitt().args(["campaign", "status", "no-such-id"]));
    assert_eq!(unknown.code, 2, "{unknown:?}");
    assert!(unknown.stderr.contains("no campaign `no-such-id`"), "{}", unknown.stderr);
    let taken = run(&scratch, &engine, &["run", file.to_str().unwrap(), "--campaign-id", id]);
    assert_eq!(taken.code, 2, "{taken:?}");
    assert!(taken.stderr.contains("already exists; add --resume"), "{}", taken.stderr);

    // A model the config lost leaves execution and the counts, not the
    // history: put back, its runs are successes again without a rerun.
    let alpha_only = scratch.write("a.yaml", &config("pair", &[("Alpha", "test/alpha-GGUF")], ""));
    let narrowed = summary(
        &run(&scratch, &engine, &["--json", "run", alpha_only.to_str().unwrap(), "--resume"]),
        0,
    );
    assert_eq!(narrowed["campaign_id"], id);
    assert_eq!(narrowed["counts"]["success"], 2);
    assert_eq!(narrowed["runs"].as_array().unwrap().len(), 2);
    let restored =
        summary(&run(&scratch, &engine, &["--json", "run", file.to_str().unwrap(), "--resume"]), 0);
    assert_eq!(restored["counts"]["success"], 4);
    assert!(
        restored["runs"].as_array().unwrap().iter().all(|run| run["attempts"] == 1),
        "{restored}"
    );
    assert_eq!(result_count(&scratch), 4);
}

#[test]
fn a_corrupt_model_and_a_missing_binary_fail_alone() {
    let Some(engine) = Engine::find() else { return };
    let scratch = Scratch::new();
    install(&scratch, &engine, "test/good-GGUF", &TinyModel::default(), &[]);
    let broken = scratch.models().join("huggingface/test/broken-GGUF/broken-Q4_K_M.gguf");
    std::fs::create_dir_all(broken.parent().unwrap()).unwrap();
    let mut bytes = b"GGUF\x03\x00\x00\x00".to_vec();
    bytes.extend(std::iter::repeat_n(0xA5u8, 4096));
    std::fs::write(&broken, bytes).unwrap();
    let file = scratch.write(
        "c.yaml",
        &config("mixed", &[("Broken", "test/broken-GGUF"), ("Good", "test/good-GGUF")], ""),
    );
    let done = {
        let _lock = ServerLock::acquire();
        summary(&run(&scratch, &engine, &["--json", "run", file.to_str().unwrap()]), 1)
    };
    assert_eq!(done["status"], "failed");
    let runs = done["runs"].as_array().unwrap();
    assert_eq!(runs[0]["key"], "Broken|llama_cpp|Q4_K_M");
    assert_eq!(runs[0]["status"], "failed");
    let reason = runs[0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("exited while loading") && reason.contains("last log lines"),
        "{reason}"
    );
    assert_eq!(runs[1]["status"], "success", "{}", runs[1]);
    let status = json(&scratch, &["status"]);
    assert_eq!(status["state"], "failed");
    assert_eq!(status["failed_runs"][0]["key"], "Broken|llama_cpp|Q4_K_M");

    // A missing llama-server fails its runs; a server kitt did not start,
    // reached through `openai`, still measures.
    let server = LlamaServer::start(
        &engine,
        &scratch.models().join("huggingface/test/good-GGUF/good-F32.gguf"),
        &["--alias", "good"],
    );
    let engines = format!(
        "engines:\n  - name: llama_cpp\n    suite: quick\n    config:\n      binary: {}\n  - name: openai\n    suite: quick\n    config:\n      base_url: {}\n      model: good\n",
        scratch.path().join("no-such-llama-server").display(),
        server.url()
    );
    let file = scratch.write("m.yaml", &config("missing", &[("Good", "test/good-GGUF")], &engines));
    let done = summary(&run(&scratch, &engine, &["--json", "run", file.to_str().unwrap()]), 1);
    let runs = done["runs"].as_array().unwrap();
    assert_eq!(runs[0]["key"], "Good|llama_cpp|F32");
    assert_eq!(runs[0]["status"], "failed");
    assert!(
        runs[0]["reason"].as_str().unwrap().contains("cannot find the `llama_cpp` server"),
        "{}",
        runs[0]
    );
    assert_eq!(runs[1]["key"], "Good|openai|served");
    assert_eq!(runs[1]["status"], "success", "{}", runs[1]);
    drop(server);
}

#[test]
fn kill_9_mid_run_then_resume_redoes_only_the_interrupted_run() {
    let Some(engine) = Engine::find() else { return };
    let _lock = ServerLock::acquire();
    let scratch = Scratch::new();
    install(&scratch, &engine, "test/fast-GGUF", &TinyModel::default(), &[]);
    install_slow(&scratch);
    let file = scratch.write(
        "c.yaml",
        &config("crash", &[("Fast", "test/fast-GGUF"), ("Slow", "test/slow-GGUF")], ""),
    );
    let path = file.to_str().unwrap();

    let child = start_until_benchmarking(&scratch, &engine, &["run", path], "Slow|llama_cpp|F16");
    assert!(!processes_mentioning(scratch.models()).is_empty(), "the engine runs");
    // A second driver of the same campaign is refused while the first runs.
    let second = run(&scratch, &engine, &["run", path, "--resume"]);
    assert_eq!(second.code, 3, "{second:?}");
    assert!(second.stderr.contains("is being run by another kitt process"), "{}", second.stderr);

    signal(&child, Signal::SIGKILL);
    let _ = finish(child);
    no_engine_left(&scratch);
    let status = json(&scratch, &["status"]);
    assert_eq!(status["state"], "interrupted", "{status}");
    assert_eq!(status["counts"]["running"], 1);

    let done = summary(&run(&scratch, &engine, &["--json", "run", path, "--resume"]), 0);
    assert_eq!(done["status"], "completed");
    let runs = done["runs"].as_array().unwrap();
    assert_eq!(runs[0]["key"], "Fast|llama_cpp|F32");
    assert_eq!(runs[0]["attempts"], 1, "a success is never repeated");
    assert_eq!(runs[1]["attempts"], 2, "the interrupted run is redone");
    assert!(runs.iter().all(|run| run["status"] == "success"), "{done}");
    assert_eq!(result_count(&scratch), 2, "one result per run");
    no_engine_left(&scratch);
}

#[test]
fn ctrl_c_stops_cleanly_and_resume_completes() {
    let Some(engine) = Engine::find() else { return };
    let _lock = ServerLock::acquire();
    let scratch = Scratch::new();
    install_slow(&scratch);
    install(&scratch, &engine, "test/fast-GGUF", &TinyModel::default(), &[]);
    let file = scratch.write(
        "c.yaml",
        &config("stop", &[("Slow", "test/slow-GGUF"), ("Fast", "test/fast-GGUF")], ""),
    );
    let path = file.to_str().unwrap();

    let child = start_until_benchmarking(&scratch, &engine, &["run", path], "Slow|llama_cpp|F16");
    signal(&child, Signal::SIGINT);
    let stopped = finish(child);
    assert_eq!(stopped.code, 130, "{stopped:?}");
    assert!(stopped.stderr.contains("--resume --campaign-id"), "{}", stopped.stderr);
    no_engine_left(&scratch);
    let status = json(&scratch, &["status"]);
    assert_eq!(status["state"], "pending");
    assert_eq!(status["counts"]["pending"], 2);
    assert_eq!(result_count(&scratch), 0);

    let done = summary(&run(&scratch, &engine, &["--json", "run", path, "--resume"]), 0);
    assert!(
        done["runs"].as_array().unwrap().iter().all(|run| run["status"] == "success"),
        "{done}"
    );
    assert_eq!(result_count(&scratch), 2);
}

#[test]
fn the_disk_reserve_skips_runs_until_a_resume_with_a_smaller_reserve() {
    let Some(engine) = Engine::find() else { return };
    let _lock = ServerLock::acquire();
    let scratch = Scratch::new();
    install(&scratch, &engine, "test/alpha-GGUF", &TinyModel::default(), &[]);
    let huge = "disk:\n  reserve_gb: 1000000000\n  cleanup_after_run: false\n";
    let file = scratch.write("c.yaml", &config("disk", &[("Alpha", "test/alpha-GGUF")], huge));
    let path = file.to_str().unwrap();
    let skipped = summary(&run(&scratch, &engine, &["--json", "run", path]), 0);
    let first = &skipped["runs"][0];
    assert_eq!(first["status"], "skipped");
    assert!(first["reason"].as_str().unwrap().contains("not enough disk"), "{first}");
    assert_eq!(result_count(&scratch), 0);

    scratch.write("c.yaml", &config("disk", &[("Alpha", "test/alpha-GGUF")], ""));
    let done = summary(&run(&scratch, &engine, &["--json", "run", path, "--resume"]), 0);
    assert_eq!(done["campaign_id"], skipped["campaign_id"]);
    assert_eq!(done["runs"][0]["status"], "success", "{done}");
}

#[test]
fn a_rerun_config_resumed_against_a_campaign_runs_just_its_runs_and_new_runs_are_appended() {
    let Some(engine) = Engine::find() else { return };
    let _lock = ServerLock::acquire();
    let scratch = Scratch::new();
    install(&scratch, &engine, "test/alpha-GGUF", &TinyModel::default(), &["Q8_0"]);
    let broken = scratch.models().join("huggingface/test/alpha-GGUF/alpha-Q4_0.gguf");
    std::fs::write(&broken, b"GGUF\x03\x00\x00\x00 not a model").unwrap();
    let file = scratch.write("c.yaml", &config("rerun", &[("Alpha", "test/alpha-GGUF")], ""));
    let first = summary(&run(&scratch, &engine, &["--json", "run", file.to_str().unwrap()]), 1);
    let id = first["campaign_id"].as_str().unwrap().to_owned();
    let statuses = run_status(&first);
    assert_eq!(
        statuses.iter().filter(|(_, status)| status == "success").count(),
        2,
        "{statuses:?}"
    );
    assert!(statuses.contains(&("Alpha|llama_cpp|Q4_0".to_owned(), "failed".to_owned())));

    // The failed variant is repaired; the rerun config names only it.
    engine.quantize(&broken.with_file_name("alpha-F32.gguf"), &broken, "Q4_0");
    let rerun = scratch.write(
        "rerun.yaml",
        &config(
            "rerun",
            &[("Alpha", "test/alpha-GGUF")],
            "quant_filter:\n  include_only: [\"q4_0\"]\n",
        ),
    );
    let done = summary(
        &run(
            &scratch,
            &engine,
            &["--json", "run", rerun.to_str().unwrap(), "--resume", "--campaign-id", &id],
        ),
        0,
    );
    let runs = done["runs"].as_array().unwrap();
    assert!(runs.iter().all(|run| run["status"] == "success"), "{done}");
    let attempts: Vec<(&str, i64)> = runs
        .iter()
        .map(|run| (run["key"].as_str().unwrap(), run["attempts"].as_i64().unwrap()))
        .collect();
    assert_eq!(
        attempts,
        [("Alpha|llama_cpp|Q4_0", 2), ("Alpha|llama_cpp|Q8_0", 1), ("Alpha|llama_cpp|F32", 1)]
    );
    assert_eq!(result_count(&scratch), 3, "the two successes were not repeated");

    // The full config again: a variant that appeared since is appended and run.
    engine.quantize(
        &broken.with_file_name("alpha-F32.gguf"),
        &broken.with_file_name("alpha-Q4_K_M.gguf"),
        "Q4_K_M",
    );
    let done =
        summary(&run(&scratch, &engine, &["--json", "run", file.to_str().unwrap(), "--resume"]), 0);
    let statuses = run_status(&done);
    assert_eq!(statuses.len(), 4, "{statuses:?}");
    assert!(statuses.iter().all(|(_, status)| status == "success"), "{statuses:?}");
    assert_eq!(result_count(&scratch), 4);
    let status = json(&scratch, &["status", &id]);
    assert_eq!(status["counts"]["success"], 4);
}

/// The reading commands work without a store and never create one.
#[test]
fn status_and_list_without_campaigns() {
    let scratch = Scratch::new();
    let list = scratch.run(scratch.kitt().args(["campaign", "list"]));
    assert_eq!((list.code, list.stdout.trim()), (0, "No campaigns yet."));
    let status = scratch.run(scratch.kitt().args(["campaign", "status"]));
    assert_eq!((status.code, status.stdout.trim()), (0, "No campaigns yet."));
    let unknown = scratch.run(scratch.kitt().args(["campaign", "status", "x-1"]));
    assert_eq!(unknown.code, 2);
    assert!(!scratch.home().exists());
}

/// A failed run and the end of the campaign reach a loopback webhook and a
/// loopback SMTP server (STARTTLS, password from the environment); a missing
/// desktop notifier is tolerated. No engine starts: the binary is missing.
#[test]
fn notifications_reach_the_webhook_and_the_mail_server() {
    use support::smtp::{FakeSmtp, SmtpOptions};
    use support::webhook::FakeWebhook;

    let scratch = Scratch::new();
    scratch.model_file("test/alpha-GGUF", "alpha-Q4_K_M.gguf", 1 << 20);
    let webhook = FakeWebhook::start();
    let smtp = FakeSmtp::start(
        SmtpOptions::submission("kitt@lab.test", "s3cret-pw"),
        &scratch.path().join("ca.pem"),
    );
    let extra = format!(
        "engines:\n  - name: llama_cpp\n    suite: quick\n    config:\n      binary: {}\n\
         notifications:\n  desktop: true\n  webhook_url: {}\n  email: ops@lab.test\n  \
         smtp_host: 127.0.0.1\n  smtp_port: {}\n  smtp_user: kitt@lab.test\n  \
         on_complete: true\n  on_failure: true\n",
        scratch.path().join("no-such-server").display(),
        webhook.url(),
        smtp.port()
    );
    let file = scratch.write("n.yaml", &config("notify", &[("Alpha", "test/alpha-GGUF")], &extra));
    let mut command = scratch.kitt();
    command
        .args(["campaign", "run", file.to_str().unwrap()])
        .env("KITT_SMTP_PASSWORD", "s3cret-pw")
        .env("KITT_SMTP_CA_FILE", smtp.ca_file())
        .env("KITT_NOTIFY_SEND", scratch.path().join("no-notify-send"));
    let outcome = scratch.run(&mut command);
    assert_eq!(outcome.code, 1, "{outcome:?}");
    assert!(outcome.stdout.contains("0 succeeded, 1 failed"), "{}", outcome.stdout);
    assert!(
        outcome.stderr.contains("desktop"),
        "the tolerated failure is logged: {}",
        outcome.stderr
    );
    assert!(!format!("{outcome:?}").contains("s3cret-pw"));

    // The failure is sent while the campaign goes on, so the two may arrive
    // in either order.
    let mut deliveries = webhook.deliveries();
    deliveries.sort_by_key(|delivery| delivery.json["title"].as_str().map(str::to_owned));
    let titles: Vec<&str> =
        deliveries.iter().map(|delivery| delivery.json["title"].as_str().unwrap()).collect();
    assert_eq!(
        titles,
        ["kitt: campaign notify failed", "kitt: run failed: Alpha|llama_cpp|Q4_K_M"]
    );
    let failure = &deliveries[1].json;
    assert!(failure["body"].as_str().unwrap().contains("cannot find the `llama_cpp` server"));
    assert_eq!(
        failure["text"],
        format!("{}\n{}", failure["title"].as_str().unwrap(), failure["body"].as_str().unwrap())
    );
    assert_eq!(failure["content"], failure["text"]);
    assert!(deliveries[0].json["body"].as_str().unwrap().contains("1 failed"));

    let mails = smtp.mails();
    assert_eq!(mails.len(), 2, "{mails:?}");
    assert!(mails.iter().all(|mail| mail.tls && mail.to == ["ops@lab.test"]));
    let logins = smtp.logins();
    assert!(logins.iter().all(|login| login.tls && login.accepted), "{logins:?}");
    let mut subjects: Vec<&str> = mails.iter().filter_map(|mail| mail.header("Subject")).collect();
    subjects.sort_unstable();
    assert_eq!(
        subjects,
        ["kitt: campaign notify failed", "kitt: run failed: Alpha|llama_cpp|Q4_K_M"]
    );
}

/// An engine behind a wrapper script outlives a `kill -9` of kitt (the
/// kernel only kills kitt's direct child); the next `campaign run` finds it
/// by its owner tag and stops it before resuming.
#[test]
fn an_engine_orphaned_behind_a_wrapper_is_stopped_by_the_next_run() {
    let Some(engine) = Engine::find() else { return };
    let _lock = ServerLock::acquire();
    let scratch = Scratch::new();
    install_slow(&scratch);
    let wrapper =
        scratch.write("wrap.sh", &format!("#!/bin/sh\n\"{}\" \"$@\"\n", engine.server.display()));
    std::fs::set_permissions(&wrapper, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .unwrap();
    let engines = format!(
        "engines:\n  - name: llama_cpp\n    suite: quick\n    config:\n      binary: {}\n",
        wrapper.display()
    );
    let file = scratch.write("c.yaml", &config("orphan", &[("Slow", "test/slow-GGUF")], &engines));
    let path = file.to_str().unwrap();

    let child = start_until_benchmarking(&scratch, &engine, &["run", path], "Slow|llama_cpp|F16");
    signal(&child, Signal::SIGKILL);
    let _ = finish(child);
    std::thread::sleep(Duration::from_millis(500));
    let orphans = processes_mentioning(scratch.models());
    assert!(!orphans.is_empty(), "the server behind the wrapper outlived kitt");

    // A kitt of another home leaves them alone: they are not its engines.
    let elsewhere =
        scratch.write("gone.yaml", &config("gone", &[("Gone", "test/gone-GGUF")], &engines));
    let other_home = scratch.path().join("other-home");
    let mut command = scratch.kitt();
    command.arg("--home").arg(&other_home).args(["campaign", "run"]).arg(&elsewhere);
    let other = scratch.run(&mut command);
    assert!(!other.stderr.contains("left running by a kitt that died"), "{other:?}");
    let survivors = processes_mentioning(scratch.models());
    assert!(orphans.iter().all(|pid| survivors.contains(pid)), "{orphans:?} {survivors:?}");

    let resumed = run(&scratch, &engine, &["--json", "run", path, "--resume"]);
    assert!(resumed.stderr.contains("left running by a kitt that died"), "{}", resumed.stderr);
    for pid in &orphans {
        assert!(!processes_mentioning(scratch.models()).contains(pid), "orphan {pid} still runs");
    }
    let done = summary(&resumed, 0);
    assert_eq!(done["runs"][0]["status"], "success", "{done}");
    no_engine_left(&scratch);
}
