//! Ollama pulls end to end: the real `kitt` binary starts
//! `tests/fakes/fake_ollama.py` as `ollama serve` (Ollama cannot run here);
//! the fake speaks Ollama's pull, progress, tags and delete API over
//! loopback, records every request, and injects faults into pulls (a stall
//! that keeps repeating the same numbers, silence, a dropped connection, an
//! HTTP 500, error lines). Sizes come from a loopback Ollama registry.
//! Covered: a stalled pull dropped and resumed; other transient failures
//! retried; pull progress as campaign phases; cleanup deleting only the tag
//! the campaign pulled, only after the last run using it, even across a
//! `kill -9`; the disk reserve checked against the store before any pull;
//! `KITT_OFFLINE`; and the tags Ollama cannot pull, skipped in the dry run.

mod common;
mod support;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::Outcome;
use common::ollama::{OllamaSetup, to};
use kitt::plan::matrix::human_bytes;
use kitt::store::Store;
use serde_json::Value;
use support::FakeOllama;

/// What the fake pulls for a tag, and the registry's model layer for it.
const MODEL_BYTES: u64 = 131_072;

/// A registry knowing `llama3.2:1b` and `qwen2.5:0.5b`.
fn registry() -> FakeOllama {
    let registry = FakeOllama::start();
    registry.add_model("llama3.2", &[("1b", &FakeOllama::digest("llama3.2-1b"), MODEL_BYTES)]);
    registry.add_model("qwen2.5", &[("0.5b", &FakeOllama::digest("qwen2.5-0.5b"), MODEL_BYTES)]);
    registry
}

/// Writes a campaign running each `(model, tag)` on one `ollama` engine.
fn campaign(setup: &OllamaSetup, models: &[(&str, &str)], disk: &str) -> PathBuf {
    let mut yaml = "campaign_name: pulls\nmodels:\n".to_owned();
    for (name, tag) in models {
        yaml.push_str(&format!("  - name: {name}\n    ollama_tag: \"{tag}\"\n"));
    }
    yaml.push_str(&format!(
        "engines:\n  - name: ollama\n    suite: quick\n    config:\n      binary: {}\n      \
         context_size: 1024\ndisk:\n{disk}",
        setup.ollama.display()
    ));
    setup.scratch.write("campaign.yaml", &yaml)
}

/// `kitt --json campaign run FILE` against `registry`, the fake's requests in `log`.
fn campaign_command(setup: &OllamaSetup, registry: &FakeOllama, log: &str) -> Command {
    let mut command = setup.kitt(log);
    command
        .envs(registry.env())
        .env("FAKE_OLLAMA_PULL_STEP_MS", "400")
        .args(["--json", "campaign", "run"])
        .arg(setup.scratch.path().join("campaign.yaml"));
    command
}

fn summary(outcome: &Outcome) -> Value {
    serde_json::from_str(&outcome.stdout)
        .unwrap_or_else(|_| panic!("no summary: {}\n{}", outcome.stdout, outcome.stderr))
}

/// The run of `summary` with `key`.
fn run<'a>(summary: &'a Value, key: &str) -> &'a Value {
    let runs = summary["runs"].as_array().unwrap();
    runs.iter().find(|run| run["key"] == key).unwrap_or_else(|| panic!("no {key}: {summary}"))
}

/// The recorded requests split at each server start, one slice per run.
fn per_server(requests: &[Value]) -> Vec<&[Value]> {
    let starts: Vec<usize> =
        (0..requests.len()).filter(|i| requests[*i]["event"] == "serve").collect();
    let ends = starts.iter().skip(1).copied().chain([requests.len()]);
    starts.iter().zip(ends).map(|(start, end)| &requests[*start..end]).collect()
}

fn deleted(requests: &[Value]) -> Vec<String> {
    let deletes = to(requests, "DELETE", "/api/delete");
    deletes.iter().map(|r| r["body"]["model"].as_str().unwrap().to_owned()).collect()
}

#[test]
fn a_stalled_pull_is_dropped_and_the_next_attempt_resumes_it() {
    let setup = OllamaSetup::new();
    let env = [
        ("FAKE_OLLAMA_PULL_FAULTS", "stall"),
        ("FAKE_OLLAMA_PULL_STEP_MS", "50"),
        ("KITT_DOWNLOAD_STALL_SECS", "1"),
    ];

    let outcome = setup.run("stall.jsonl", &["-m", "llama3.2:1b"], &env);

    assert_eq!(outcome.code, 0, "{}", outcome.stderr);
    let requests = setup.requests("stall.jsonl");
    assert_eq!(to(&requests, "POST", "/api/pull").len(), 2, "the stalled pull and its retry");
    assert!(
        outcome.stderr.contains(
            "pulling llama3.2:1b: attempt 1 failed (no progress for 1 s); retrying in 1 s"
        ),
        "{}",
        outcome.stderr
    );
    assert!(setup.manifest("llama3.2", "1b").is_file(), "the model is in the store");
    assert!(to(&requests, "POST", "/api/chat").len() > 2, "and was measured");
}

#[test]
fn silence_a_dropped_connection_and_a_server_error_are_retried_until_the_pull_succeeds() {
    let setup = OllamaSetup::new();
    let env = [
        ("FAKE_OLLAMA_PULL_FAULTS", "silent,drop,500"),
        ("FAKE_OLLAMA_PULL_STEP_MS", "50"),
        ("KITT_DOWNLOAD_STALL_SECS", "1"),
    ];

    let outcome = setup.run("faults.jsonl", &["-m", "qwen2.5:0.5b"], &env);

    assert_eq!(outcome.code, 0, "{}", outcome.stderr);
    let requests = setup.requests("faults.jsonl");
    assert_eq!(to(&requests, "POST", "/api/pull").len(), 4);
    let retries: Vec<&str> = outcome
        .stderr
        .lines()
        .filter(|line| line.starts_with("pulling qwen2.5:0.5b: attempt"))
        .collect();
    assert_eq!(retries.len(), 3, "{}", outcome.stderr);
    assert!(retries[0].contains("attempt 1 failed (no progress for 1 s)"), "{retries:?}");
    assert!(retries[2].contains("HTTP 500: registry answered 502 Bad Gateway"), "{retries:?}");
    assert!(setup.manifest("qwen2.5", "0.5b").is_file());
}

/// Two runs use `llama3.2:1b`, which the store lacks; one uses
/// `qwen2.5:0.5b`, which the user already has.
#[test]
fn cleanup_deletes_only_the_tag_the_campaign_pulled_after_the_last_run_using_it() {
    let setup = OllamaSetup::new();
    let registry = registry();
    let user_model = setup.manifest("qwen2.5", "0.5b");
    std::fs::create_dir_all(user_model.parent().unwrap()).unwrap();
    std::fs::write(&user_model, r#"{"schemaVersion":2,"layers":[]}"#).unwrap();
    let models = [("First", "llama3.2:1b"), ("Second", "llama3.2:1b"), ("Mine", "qwen2.5:0.5b")];
    campaign(&setup, &models, "  reserve_gb: 0\n  cleanup_after_run: true\n");

    let outcome = setup.finish(&mut campaign_command(&setup, &registry, "cleanup.jsonl"));

    assert_eq!(outcome.code, 0, "{}\n{}", outcome.stdout, outcome.stderr);
    let summary = summary(&outcome);
    for key in ["First|ollama|1b", "Second|ollama|1b", "Mine|ollama|0.5b"] {
        assert_eq!(run(&summary, key)["status"], "success", "{summary}");
    }
    let requests = setup.requests("cleanup.jsonl");
    let servers = per_server(&requests);
    assert_eq!(servers.len(), 3, "one server per run");
    let pulls = |requests: &[Value]| to(requests, "POST", "/api/pull").len();
    assert_eq!((pulls(servers[0]), pulls(servers[1]), pulls(servers[2])), (1, 0, 0));
    assert!(deleted(servers[0]).is_empty(), "the second run still uses it");
    assert_eq!(deleted(servers[1]), ["llama3.2:1b"], "deleted after the last run using it");
    let last_chat = servers[1].iter().rposition(|r| r["path"] == "/api/chat").unwrap();
    let delete = servers[1].iter().position(|r| r["path"] == "/api/delete").unwrap();
    assert!(delete > last_chat, "after the measurements");
    assert!(deleted(servers[2]).is_empty(), "the user's model is never deleted");
    assert!(!setup.manifest("llama3.2", "1b").exists());
    assert!(user_model.is_file());

    // Pull progress shows as the run's phases.
    let progress: Vec<u64> = outcome
        .stderr
        .lines()
        .filter_map(|line| {
            line.split_once("First|ollama|1b: pulling llama3.2:1b: ")?
                .1
                .split('%')
                .next()?
                .parse()
                .ok()
        })
        .collect();
    assert!(progress.iter().any(|p| (1..100).contains(p)), "{}", outcome.stderr);
    assert!(
        outcome
            .stderr
            .contains("Second|ollama|1b: removed `llama3.2:1b`, which the campaign pulled"),
        "{}",
        outcome.stderr
    );

    let store = Store::open(&setup.scratch.home()).unwrap();
    let rows = store.campaign_pulls(summary["campaign_id"].as_str().unwrap()).unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!((rows[0].model.as_str(), rows[0].status.as_str()), ("llama3.2:1b", "removed"));
    assert_eq!(rows[0].store, setup.store().display().to_string());
    assert_eq!(rows[0].bytes, MODEL_BYTES + 13, "the size the server lists");
}

#[test]
fn without_cleanup_a_pulled_tag_stays() {
    let setup = OllamaSetup::new();
    let registry = registry();
    campaign(&setup, &[("First", "llama3.2:1b")], "  reserve_gb: 0\n  cleanup_after_run: false\n");

    let outcome = setup.finish(&mut campaign_command(&setup, &registry, "kept.jsonl"));

    assert_eq!(outcome.code, 0, "{}", outcome.stderr);
    assert!(deleted(&setup.requests("kept.jsonl")).is_empty());
    assert!(setup.manifest("llama3.2", "1b").is_file());
}

#[test]
fn a_pull_that_would_break_the_disk_reserve_is_skipped_before_any_server_starts() {
    let setup = OllamaSetup::new();
    let registry = registry();
    campaign(&setup, &[("First", "llama3.2:1b")], "  reserve_gb: 1000000\n");

    let outcome = setup.finish(&mut campaign_command(&setup, &registry, "disk.jsonl"));

    assert_eq!(outcome.code, 0, "a skip is not a failure: {}", outcome.stderr);
    let first = run(&summary(&outcome), "First|ollama|1b").clone();
    assert_eq!(first["status"], "skipped");
    let reason = first["reason"].as_str().unwrap();
    let expected = format!("not enough disk under {}: needs ", setup.store().display());
    assert!(reason.starts_with(&expected), "{reason}");
    let pull = human_bytes(MODEL_BYTES + support::ollama::EXTRA_LAYER_BYTES);
    let sizes = format!("(download {pull} + reserve 1000000.0 GiB)");
    assert!(reason.contains(&sizes), "the manifest's layers: {reason}");
    assert!(setup.requests("disk.jsonl").is_empty(), "no server, no pull");
}

/// kitt dies in the middle of a pull; Ollama finishes it anyway (here: the
/// model appears in the store). The resumed campaign knows the model is its
/// own from the record written before the pull, and deletes it.
#[test]
fn a_pull_cut_short_by_kill_9_is_still_the_campaigns_on_resume() {
    let setup = OllamaSetup::new();
    let registry = registry();
    campaign(&setup, &[("First", "llama3.2:1b")], "  reserve_gb: 0\n  cleanup_after_run: true\n");
    let mut command = campaign_command(&setup, &registry, "killed.jsonl");
    command.env("FAKE_OLLAMA_PULL_FAULTS", "silent").stdout(Stdio::null()).stderr(Stdio::null());
    let mut child = command.spawn().unwrap();
    wait_for_pull(&setup, "killed.jsonl", &mut child);
    child.kill().unwrap();
    child.wait().unwrap();

    let manifest = setup.manifest("llama3.2", "1b");
    std::fs::create_dir_all(manifest.parent().unwrap()).unwrap();
    std::fs::write(&manifest, r#"{"schemaVersion":2,"layers":[]}"#).unwrap();
    let mut resume = campaign_command(&setup, &registry, "resumed.jsonl");
    resume.arg("--resume");
    let outcome = setup.finish(&mut resume);

    assert_eq!(outcome.code, 0, "{}\n{}", outcome.stdout, outcome.stderr);
    assert_eq!(run(&summary(&outcome), "First|ollama|1b")["status"], "success");
    let requests = setup.requests("resumed.jsonl");
    assert!(to(&requests, "POST", "/api/pull").is_empty(), "the store has it now");
    assert_eq!(deleted(&requests), ["llama3.2:1b"]);
    assert!(!manifest.exists());
}

/// Waits until the fake has received a pull request (kitt recorded the pull before sending it).
fn wait_for_pull(setup: &OllamaSetup, log: &str, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while to(&setup.requests(log), "POST", "/api/pull").is_empty() {
        assert!(child.try_wait().unwrap().is_none(), "kitt ended before pulling");
        assert!(Instant::now() < deadline, "no pull within a minute");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn offline_a_tag_the_store_lacks_is_never_pulled() {
    let setup = OllamaSetup::new();
    let mut command = setup.kitt("offline.jsonl");
    command.env("KITT_OFFLINE", "1").args(["--json", "run", "-e", "ollama", "-m", "llama3.2:1b"]);

    let outcome = setup.finish(&mut command);

    assert_eq!(outcome.code, 1, "{outcome:?}");
    let expected = format!(
        "cannot make `llama3.2:1b` available: it is not in the Ollama store ({}) and \
         KITT_OFFLINE is on, so kitt does not ask Ollama to pull it",
        setup.store().display()
    );
    assert!(outcome.stderr.contains(&expected), "{}", outcome.stderr);
    assert!(to(&setup.requests("offline.jsonl"), "POST", "/api/pull").is_empty());
}

/// Offline (as every test's kitt is unless told otherwise), with a local
/// copy of a Hugging Face repository whose Q8_0 is sharded.
#[test]
fn tags_ollama_cannot_pull_are_skipped_in_the_dry_run_with_the_reason() {
    let setup = OllamaSetup::new();
    let scratch = &setup.scratch;
    scratch.model_file("org/Big-GGUF", "Q8_0/Big-Q8_0-00001-of-00002.gguf", 1 << 20);
    scratch.model_file("org/Big-GGUF", "Q8_0/Big-Q8_0-00002-of-00002.gguf", 1 << 20);
    scratch.model_file("org/Big-GGUF", "Big-Q4_K_M.gguf", 1 << 20);
    let hub_pull = setup.store().join("manifests/hf.co/org/Big-GGUF/Q4_K_M");
    for have in [setup.manifest("qwen2.5", "0.5b"), hub_pull] {
        std::fs::create_dir_all(have.parent().unwrap()).unwrap();
        std::fs::write(&have, "{}").unwrap();
    }
    let models = [
        ("Split", "hf.co/org/Big-GGUF:Q8_0"),
        ("Whole", "hf.co/org/Big-GGUF:Q4_K_M"),
        ("Cloud", "gpt-oss:120b-cloud"),
        ("Missing", "llama3.2:1b"),
        ("Have", "qwen2.5:0.5b"),
    ];
    campaign(&setup, &models, "  reserve_gb: 0\n");

    let outcome = scratch.dry_run("campaign.yaml", &["--json"]);

    assert_eq!(outcome.code, 0, "{}", outcome.stderr);
    let plan: Value = serde_json::from_str(&outcome.stdout).unwrap();
    let reason = |key: &str| run(&plan, key)["reason"].as_str().unwrap_or_default().to_owned();
    assert_eq!(
        reason("Split|ollama|Q8_0"),
        "Ollama cannot pull a sharded GGUF: `Q8_0` of `org/Big-GGUF` is split into 2 files; \
         merge them with `llama-gguf-split --merge`, or choose a quant in one file"
    );
    // Pulled earlier: it runs, its size from the repository's listing.
    let whole = run(&plan, "Whole|ollama|Q4_K_M");
    assert_eq!((&whole["status"], &whole["size_bytes"]), (&"planned".into(), &(1 << 20).into()));
    assert_eq!(whole["size_source"], "files");
    assert!(reason("Cloud|ollama|120b-cloud").contains("is a cloud model"), "{plan}");
    assert_eq!(
        reason("Missing|ollama|1b"),
        format!(
            "`llama3.2:1b` is not in the Ollama store {} and KITT_OFFLINE is on: kitt does not \
             ask Ollama to pull it",
            setup.store().display()
        )
    );
    assert_eq!(run(&plan, "Have|ollama|0.5b")["status"], "planned");

    let table = scratch.dry_run("campaign.yaml", &[]);
    assert!(table.stdout.contains("Ollama cannot pull a sharded GGUF"), "{}", table.stdout);
}

#[test]
fn the_free_space_of_a_docker_volume_is_not_measured_and_the_plan_says_so() {
    let setup = OllamaSetup::new();
    let yaml = "campaign_name: c\nmodels:\n  - name: M\n    ollama_tag: \"llama3.2:1b\"\n\
                engines:\n  - name: ollama\n    config:\n      mode: docker\n\
                disk:\n  reserve_gb: 1000000\n";
    setup.scratch.write("campaign.yaml", yaml);

    let outcome = setup.scratch.dry_run("campaign.yaml", &["--json"]);

    assert_eq!(outcome.code, 0, "{}", outcome.stderr);
    let plan: Value = serde_json::from_str(&outcome.stdout).unwrap();
    assert_eq!(run(&plan, "M|ollama|1b")["status"], "planned", "{plan}");
    assert!(
        outcome.stderr.contains(
            "warning: cannot measure free space in the docker volume kitt-ollama of Ollama in \
             Docker mode; the disk reserve was not checked for its pulls"
        ),
        "{}",
        outcome.stderr
    );
}
