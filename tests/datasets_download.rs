//! `kitt datasets download` and `kitt datasets list` against the loopback Hub
//! fake, which publishes the four dataset repositories in their real layouts
//! (the config and split a benchmark reads beside others that must not be
//! fetched; Parquet files through the CDN redirect, with their SHA-256): a
//! download lands where benchmarks look and a quality run reads it; a second
//! download fetches nothing; a body that does not match its SHA-256 is not
//! kept; gated, missing and offline repositories fail with the reason.

mod common;
mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{Outcome, Scratch};
use serde_json::Value;
use support::parquet;
use support::stream::{Script, ScriptedStream};
use support::{FakeHub, GateMode};

/// Every dataset's files as the Hub lays them out, each with its body.
fn publish(hub: &FakeHub, dir: &Path) {
    let file = |name: &str| std::fs::read(dir.join(name)).unwrap();
    let mmlu = [
        ("[m1] Capital?", "geo", ["Rome", "Paris", "Madrid", "Oslo"], 1),
        ("[m2] Even?", "math", ["1", "2", "3", "5"], 1),
        ("[m3] Gas?", "chem", ["iron", "neon", "gold", "salt"], 1),
        ("[m4] Blue?", "art", ["red", "blue", "green", "black"], 1),
        ("[m5] Seven?", "math", ["five", "seven", "six", "eight"], 1),
    ];
    parquet::write_mmlu(&dir.join("mmlu.parquet"), &mmlu);
    hub.add_dataset(
        "cais/mmlu",
        &[
            ("README.md", b"# MMLU\n".to_vec()),
            ("all/test-00000-of-00001.parquet", file("mmlu.parquet")),
            ("all/dev-00000-of-00001.parquet", b"PAR1 dev".to_vec()),
            ("abstract_algebra/test-00000-of-00001.parquet", b"PAR1 other config".to_vec()),
        ],
    );
    let gsm8k = [
        ("[g1] 2 and 2?", "2 + 2 = 4\n#### 4"),
        ("[g2] 3 and 3?", "#### 6"),
        ("[g3] 1?", "#### 1"),
    ];
    parquet::write_gsm8k(&dir.join("gsm8k.parquet"), &gsm8k);
    hub.add_dataset(
        "openai/gsm8k",
        &[
            ("main/test-00000-of-00001.parquet", file("gsm8k.parquet")),
            ("main/train-00000-of-00001.parquet", b"PAR1 train".to_vec()),
            ("socratic/test-00000-of-00001.parquet", b"PAR1 socratic".to_vec()),
        ],
    );
    parquet::write_truthfulqa(&dir.join("tqa.parquet"), &support::datasets::truthfulqa_rows());
    hub.add_dataset(
        "truthfulqa/truthful_qa",
        &[
            ("generation/validation-00000-of-00001.parquet", b"PAR1 generation".to_vec()),
            ("multiple_choice/validation-00000-of-00001.parquet", file("tqa.parquet")),
        ],
    );
    let hellaswag = [
        ("[h1] A dog runs and", ["jumps.", "sings.", "reads.", "flies."], "0"),
        ("[h2] She cooks and", ["eats.", "flies.", "sings.", "reads."], "0"),
    ];
    parquet::write_hellaswag(&dir.join("hs.parquet"), &hellaswag);
    hub.add_dataset(
        "Rowan/hellaswag",
        &[
            ("data/test-00000-of-00001.parquet", b"PAR1 unlabelled".to_vec()),
            ("data/train-00000-of-00001.parquet", b"PAR1 train".to_vec()),
            ("data/validation-00000-of-00001.parquet", file("hs.parquet")),
        ],
    );
}

fn hub_with_datasets(scratch: &Scratch) -> FakeHub {
    let hub = FakeHub::start();
    let published = scratch.path().join("published");
    std::fs::create_dir_all(&published).unwrap();
    publish(&hub, &published);
    hub
}

/// `kitt datasets …` online against `hub`.
fn datasets(scratch: &Scratch, hub: &FakeHub, args: &[&str]) -> Outcome {
    let mut command = scratch.kitt();
    command.env_remove("HF_HUB_OFFLINE").env_remove("KITT_OFFLINE").envs(hub.env());
    command.arg("datasets").args(args);
    scratch.run(&mut command)
}

fn downloaded(scratch: &Scratch) -> [PathBuf; 4] {
    let root = scratch.home().join("datasets");
    [
        root.join("mmlu/all/test-00000-of-00001.parquet"),
        root.join("gsm8k/main/test-00000-of-00001.parquet"),
        root.join("truthfulqa/multiple_choice/validation-00000-of-00001.parquet"),
        root.join("hellaswag/data/validation-00000-of-00001.parquet"),
    ]
}

/// Every file below `dir`, relative to it, sorted.
fn files_below(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(next) = stack.pop() {
        for entry in std::fs::read_dir(&next).into_iter().flatten().flatten() {
            if entry.path().is_dir() {
                stack.push(entry.path());
            } else {
                found.push(entry.path().strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    found.sort();
    found
}

#[test]
fn every_dataset_downloads_where_benchmarks_read_it_once() {
    let scratch = Scratch::new();
    let hub = hub_with_datasets(&scratch);

    let before = datasets(&scratch, &hub, &["list"]);
    assert_eq!(before.code, 0, "{}", before.stderr);
    assert!(before.stdout.contains("datasets/cais/mmlu"), "{}", before.stdout);
    assert_eq!(before.stdout.matches("┆ no ").count(), 4, "{}", before.stdout);

    let first = datasets(&scratch, &hub, &["download", "all"]);

    assert_eq!(first.code, 0, "{}\n{}", first.stdout, first.stderr);
    let published = scratch.path().join("published");
    for (path, source) in downloaded(&scratch).iter().zip(["mmlu", "gsm8k", "tqa", "hs"]) {
        let want = std::fs::read(published.join(format!("{source}.parquet"))).unwrap();
        assert_eq!(std::fs::read(path).unwrap(), want, "{}", path.display());
    }
    let root = scratch.home().join("datasets");
    let landed = files_below(&root);
    assert_eq!(landed.len(), 4, "only the config and split read, no temporary file: {landed:?}");
    assert_eq!(hub.cdn_requests(), 4, "one body per file, through the CDN redirect");
    assert!(first.stdout.contains("mmlu: downloaded: "), "{}", first.stdout);
    assert!(
        first.stdout.contains("config `multiple_choice`, split `validation`"),
        "{}",
        first.stdout
    );

    let again = datasets(&scratch, &hub, &["--json", "download", "mmlu", "hellaswag", "mmlu"]);
    assert_eq!(again.code, 0, "{}", again.stderr);
    let report: Value = serde_json::from_str(&again.stdout).unwrap();
    assert_eq!(report.as_array().unwrap().len(), 2, "each name once");
    assert_eq!(report[0]["files"][0]["downloaded"], false);
    let sha = FakeHub::sha256_of(&std::fs::read(&downloaded(&scratch)[0]).unwrap());
    assert_eq!(report[0]["files"][0]["sha256"], sha.as_str());
    assert_eq!(hub.cdn_requests(), 4, "present and verified files are not fetched again");

    let listed = datasets(&scratch, &hub, &["--json", "list"]);
    let listed: Value = serde_json::from_str(&listed.stdout).unwrap();
    assert!(listed.as_array().unwrap().iter().all(|row| row["present"] == true), "{listed}");
    assert_eq!(listed[3]["repo"], "Rowan/hellaswag");
    assert_eq!(listed[3]["split"], "validation");

    // A quality run reads what was downloaded.
    let server = ScriptedStream::start(Script::error(400, "{}"));
    server.serve_models(&["m"]);
    server.respond_with(|body| match body.get("messages") {
        Some(_) => Script::chat("m", &["Answer: B\n#### 4"], Duration::ZERO),
        None => Script::error(400, "{\"error\":\"no echo\"}"),
    });
    let suite = scratch
        .write("q.yaml", "name: q\nversion: 1\ntests: [mmlu, gsm8k, truthfulqa, hellaswag]\n");
    let base_url = format!("base_url={}/v1", server.url());
    let mut run = scratch.kitt();
    run.args(["--json", "run", "-m", "m", "-e", "openai", "--engine-config", &base_url, "-s"])
        .arg(&suite);
    let run = scratch.run(&mut run);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let result: Value = serde_json::from_str(&run.stdout).unwrap();
    let metric = |i: usize, name: &str| result["benchmarks"][i]["metrics"][name].as_f64();
    let items: Vec<Option<f64>> = (0..4).map(|i| metric(i, "items")).collect();
    assert_eq!(items, [Some(5.0), Some(3.0), Some(3.0), Some(2.0)]);
    assert_eq!((metric(0, "correct"), metric(1, "correct")), (Some(5.0), Some(1.0)));
}

#[test]
fn a_body_that_does_not_match_its_sha256_is_not_kept() {
    let scratch = Scratch::new();
    let hub = hub_with_datasets(&scratch);
    hub.tamper("datasets/cais/mmlu", "all/test-00000-of-00001.parquet");

    let outcome = datasets(&scratch, &hub, &["download", "gsm8k", "mmlu"]);

    assert_eq!(outcome.code, 1, "{}", outcome.stdout);
    assert!(
        outcome.stderr.contains(
            "error: mmlu: datasets/cais/mmlu/all/test-00000-of-00001.parquet: SHA-256 mismatch"
        ) && outcome.stderr.contains("the download was discarded"),
        "{}",
        outcome.stderr
    );
    assert!(outcome.stdout.contains("gsm8k: ready in"), "the other dataset still downloads");
    assert_eq!(files_below(&scratch.home().join("datasets/mmlu")), Vec::<String>::new());
}

#[test]
fn gated_missing_and_offline_datasets_fail_with_the_reason() {
    let scratch = Scratch::new();
    let hub = hub_with_datasets(&scratch);
    hub.gated("datasets/cais/mmlu", GateMode::Manual).missing("datasets/openai/gsm8k");
    hub.unauthorized("datasets/Rowan/hellaswag").accept_token("hf_granted");

    let names = ["download", "mmlu", "gsm8k", "truthfulqa", "hellaswag"];
    let outcome = datasets(&scratch, &hub, &names);

    assert_eq!(outcome.code, 1, "{}", outcome.stdout);
    let errors: Vec<&str> = outcome.stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 3, "{}", outcome.stderr);
    assert!(errors[0].starts_with("error: mmlu: `datasets/cais/mmlu` is gated"), "{}", errors[0]);
    assert!(errors[0].contains("set `HF_TOKEN`"), "{}", errors[0]);
    let missing = "Hub repository `datasets/openai/gsm8k` not found";
    assert!(errors[1].contains(missing), "{}", errors[1]);
    let refused = "error: hellaswag: the Hub refused to list `datasets/Rowan/hellaswag` \
                   (HTTP 401); `HF_TOKEN` is not set";
    assert!(errors[2].starts_with(refused), "{}", errors[2]);
    assert!(outcome.stdout.contains("truthfulqa: ready in"), "{}", outcome.stdout);

    let mut granted = scratch.kitt();
    granted.env_remove("HF_HUB_OFFLINE").env_remove("KITT_OFFLINE").envs(hub.env());
    granted.env("HF_TOKEN", "hf_granted").args(["datasets", "download", "mmlu"]);
    let granted = scratch.run(&mut granted);
    assert_eq!(granted.code, 0, "{}", granted.stderr);
    assert!(!granted.stdout.contains("hf_granted") && !granted.stderr.contains("hf_granted"));

    // Offline: a dataset on disk is reported unchecked, a missing one is an error.
    let offline = scratch.run(scratch.kitt().args(["datasets", "download", "mmlu", "hellaswag"]));
    assert_eq!(offline.code, 1, "{}", offline.stdout);
    assert!(
        offline.stdout.contains("mmlu: present (offline: not checked against the Hub)"),
        "{}",
        offline.stdout
    );
    assert!(
        offline.stderr.contains(
            "error: hellaswag: cannot list `datasets/Rowan/hellaswag`: offline mode is on"
        ),
        "{}",
        offline.stderr
    );

    let unknown = datasets(&scratch, &hub, &["download", "arc"]);
    assert_eq!(unknown.code, 2);
    assert!(
        unknown
            .stderr
            .contains("unknown dataset `arc` (known: mmlu, gsm8k, truthfulqa, hellaswag, or all)"),
        "{}",
        unknown.stderr
    );
}

#[test]
fn dest_puts_datasets_elsewhere() {
    let scratch = Scratch::new();
    let hub = hub_with_datasets(&scratch);
    let dest = scratch.path().join("shared-datasets");

    let outcome =
        datasets(&scratch, &hub, &["download", "hellaswag", "--dest", dest.to_str().unwrap()]);

    assert_eq!(outcome.code, 0, "{}", outcome.stderr);
    assert_eq!(files_below(&dest), ["hellaswag/data/validation-00000-of-00001.parquet"]);
    assert!(!scratch.home().join("datasets").exists());
    let listed = datasets(&scratch, &hub, &["list", "--dest", dest.to_str().unwrap()]);
    assert_eq!(listed.stdout.matches("┆ yes (").count(), 1, "{}", listed.stdout);
}
