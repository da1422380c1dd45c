//! Campaigns with `devon_managed: true`, end to end: the real `kitt` with the
//! loopback Hub (listings, sizes, SHA-256) and a Devon fake, benchmarking what
//! Devon downloaded on the real llama-server. Covered: Devon's HTTP API (the
//! bearer key, include patterns of exactly one variant, `force` when Devon
//! answers without the files, removal of what kitt had it download and not
//! of a repository Devon held before, a path not on this machine, a refused
//! key); the `devon` command (its argument vectors, its absolute path, a
//! failure with its error output, Ctrl-C killing it); no Devon at all (kitt
//! downloads itself and says so once). One llama-server at a time
//! (`ServerLock`).

mod common;
mod support;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Outcome, Scratch, processes_mentioning};
use kitt::gguf::TinyModel;
use kitt::store::{DevonRow, Store};
use serde_json::{Value, json};
use support::FakeHub;
use support::devon::{FakeDevon, FakeDevonCli, holds_file};
use support::engine::{Engine, ServerLock};
use support::files::FileServer;

/// The `quick` suite made quicker in the test's home: one short throughput pass.
const SUITE: &str = "name: quick\nversion: 1\ndescription: One short pass.\nruns: 1\n\
     sampling:\n  temperature: 0.0\n  max_tokens: 16\ntests: [throughput]\n\
     test_overrides:\n  throughput:\n    concurrency: [1]\n    iterations: 2\n    warmup: false\n";

/// What kitt prints once when Devon is asked for but not there.
const NO_DEVON: &str = "devon_managed is set but neither devon_url nor a devon command is \
                        available; kitt downloads itself";

/// The files of one generated repository: a Q8_0 file and an F32 model split in two shards.
struct Repo {
    name: &'static str,
    files: Vec<(String, Vec<u8>)>,
}

impl Repo {
    fn generate(engine: &Engine, name: &'static str, seed: u64) -> Repo {
        let dir = tempfile::tempdir().unwrap();
        let stem = name.trim_start_matches("test/").trim_end_matches("-GGUF");
        let f32 = dir.path().join("m-F32.gguf");
        TinyModel { seed, ..TinyModel::default() }.write(&f32).unwrap();
        let q8 = dir.path().join("m-Q8_0.gguf");
        engine.quantize(&f32, &q8, "Q8_0");
        let shards = engine.split(&f32, &dir.path().join("split/m-F32"), 20);
        assert_eq!(shards.len(), 2, "{shards:?}");
        let mut files = vec![(format!("{stem}-Q8_0.gguf"), std::fs::read(&q8).unwrap())];
        for (n, shard) in shards.iter().enumerate() {
            let path = format!("F32/{stem}-F32-0000{}-of-00002.gguf", n + 1);
            files.push((path, std::fs::read(shard).unwrap()));
        }
        Repo { name, files }
    }

    /// Only the Q8_0 file (the plan then has one run for it).
    fn q8_only(mut self) -> Repo {
        self.files.truncate(1);
        self
    }

    fn q8(&self) -> &str {
        &self.files[0].0
    }

    fn shards(&self) -> Vec<String> {
        self.files[1..].iter().map(|(path, _)| path.clone()).collect()
    }

    fn listed(&self) -> Vec<(&str, &[u8])> {
        self.files.iter().map(|(path, bytes)| (path.as_str(), bytes.as_slice())).collect()
    }

    fn bytes(&self) -> u64 {
        self.files.iter().map(|(_, bytes)| bytes.len() as u64).sum()
    }
}

/// The loopback Hub kitt lists repositories on, and the storage behind it.
struct Hub {
    hub: FakeHub,
    cdn: FileServer,
}

impl Hub {
    fn serving(repos: &[&Repo]) -> Hub {
        let hub = Hub { hub: FakeHub::start(), cdn: FileServer::start() };
        for repo in repos {
            let mut files = vec![("README.md", b"# model\n".to_vec())];
            files.extend(repo.files.iter().map(|(path, bytes)| (path.as_str(), bytes.clone())));
            hub.hub.serve_repo(repo.name, &files, &hub.cdn);
        }
        hub
    }
}

fn config(name: &str, repos: &[&Repo], devon: &str) -> String {
    let mut text = format!("campaign_name: {name}\nmodels:\n");
    for repo in repos {
        let model = repo.name.trim_start_matches("test/").trim_end_matches("-GGUF");
        text.push_str(&format!(
            "  - name: {model}\n    params: \"2.5M\"\n    gguf_repo: {}\n",
            repo.name
        ));
    }
    text.push_str("engines:\n  - name: llama_cpp\n    suite: quick\n");
    text.push_str("disk:\n  reserve_gb: 0\n  cleanup_after_run: true\ndevon_managed: true\n");
    text.push_str(devon);
    text
}

/// `kitt --json campaign run FILE`, online against the fake Hub.
fn run_campaign(scratch: &Scratch, engine: &Engine, hub: &Hub, file: &PathBuf) -> Command {
    scratch.write("kitt-home/suites/quick.yaml", SUITE);
    let mut command = scratch.kitt();
    command
        .env_remove("HF_HUB_OFFLINE")
        .env_remove("KITT_OFFLINE")
        .envs(hub.hub.env())
        .env("KITT_LLAMA_SERVER", &engine.server)
        .args(["--json", "campaign", "run"])
        .arg(file);
    command
}

fn summary(outcome: &Outcome, code: i32) -> Value {
    assert_eq!(outcome.code, code, "stdout: {}\nstderr: {}", outcome.stdout, outcome.stderr);
    serde_json::from_str(&outcome.stdout).unwrap_or_else(|e| panic!("{e}: {}", outcome.stdout))
}

/// `(key, status, reason)` of every run.
fn runs(summary: &Value) -> Vec<(String, String, String)> {
    let runs = summary["runs"].as_array().unwrap();
    runs.iter()
        .map(|run| {
            let text = |field: &str| run[field].as_str().unwrap_or_default().to_owned();
            (text("key"), text("status"), text("reason"))
        })
        .collect()
}

/// `(key, status)` of every run.
fn statuses(runs: &[(String, String, String)]) -> Vec<(&str, &str)> {
    runs.iter().map(|(key, status, _)| (key.as_str(), status.as_str())).collect()
}

/// `(repository, whether Devon held it before, status)` of every Devon record.
fn devon_states(rows: &[DevonRow]) -> Vec<(&str, Option<bool>, &str)> {
    rows.iter().map(|row| (row.repo.as_str(), row.preexisting, row.status.as_str())).collect()
}

fn devon_rows(scratch: &Scratch, summary: &Value) -> Vec<DevonRow> {
    let id = summary["campaign_id"].as_str().unwrap();
    Store::open(&scratch.home()).unwrap().devon_downloads(id).unwrap()
}

fn status(scratch: &Scratch) -> Value {
    let outcome = scratch.run(scratch.kitt().args(["--json", "campaign", "status"]));
    assert_eq!(outcome.code, 0, "{outcome:?}");
    serde_json::from_str(&outcome.stdout).unwrap_or_else(|e| panic!("{e}: {}", outcome.stdout))
}

#[test]
fn devon_over_http_downloads_each_variant_and_removes_only_what_kitt_had_it_fetch() {
    let Some(engine) = Engine::find() else { return };
    let _lock = ServerLock::acquire();
    let scratch = Scratch::new();
    let alpha = Repo::generate(&engine, "test/alpha-GGUF", 21);
    let beta = Repo::generate(&engine, "test/beta-GGUF", 22).q8_only();
    let gamma = Repo::generate(&engine, "test/gamma-GGUF", 23).q8_only();
    let hub = Hub::serving(&[&alpha, &beta, &gamma]);
    let devon = FakeDevon::start(Some("dk-campaign"));
    for repo in [&alpha, &beta, &gamma] {
        devon.source(repo.name, &repo.listed());
    }
    // The user had Beta in Devon already; Devon keeps Gamma on a disk this machine lacks.
    devon.hold(beta.name, &[beta.q8()]);
    let elsewhere = "/srv/devon/models/huggingface/test/gamma-GGUF";
    devon.report_path(gamma.name, elsewhere);
    let devon_url = format!("devon_url: {}\n", devon.url());
    let file = scratch.write("c.yaml", &config("devon-http", &[&alpha, &beta, &gamma], &devon_url));

    let mut command = run_campaign(&scratch, &engine, &hub, &file);
    let outcome = scratch.run(command.env("DEVON_API_KEY", "dk-campaign"));
    let done = summary(&outcome, 1);
    let ran = runs(&done);
    assert_eq!(
        statuses(&ran),
        [
            ("alpha|llama_cpp|Q8_0", "success"),
            ("alpha|llama_cpp|F32", "success"),
            ("beta|llama_cpp|Q8_0", "success"),
            ("gamma|llama_cpp|Q8_0", "failed"),
        ],
        "{ran:?}\n{}",
        outcome.stderr
    );
    for run in &done["runs"].as_array().unwrap()[..3] {
        assert!(run["output_tokens_per_second"].as_f64().unwrap() > 0.0, "{run}");
    }
    let reason = &ran[3].2;
    assert!(
        reason.contains(&format!(
            "Devon returned {elsewhere} for `test/gamma-GGUF`, which is not on this machine; kitt \
             needs Devon's storage shared with it"
        )),
        "{reason}"
    );

    // Every request carried the key; each download named exactly its variant's files.
    let calls = devon.calls();
    assert!(calls.iter().all(|call| call.authorization.as_deref() == Some("Bearer dk-campaign")));
    let posts: Vec<Value> = devon.calls_of("POST").into_iter().map(|call| call.body).collect();
    let asked = |repo: &Repo, files: Vec<String>, force: bool| {
        json!({"model_id": repo.name, "source": "huggingface", "force": force,
               "include_patterns": files})
    };
    assert_eq!(
        posts,
        [
            asked(&alpha, vec![alpha.q8().to_owned()], false),
            // Devon holds Alpha now and answers without the shards: asked again with force.
            asked(&alpha, alpha.shards(), false),
            asked(&alpha, alpha.shards(), true),
            asked(&beta, vec![beta.q8().to_owned()], false),
            asked(&gamma, vec![gamma.q8().to_owned()], false),
        ]
    );
    // Asked once per repository whether Devon held it before.
    assert_eq!(devon.calls_of("GET").len(), 3);
    // Alpha and Gamma were kitt's downloads and are removed after their last
    // run; Beta was the user's and stays.
    let deletes: Vec<String> = devon.calls_of("DELETE").into_iter().map(|call| call.path).collect();
    assert_eq!(
        deletes,
        [
            "/api/v1/models/huggingface/test/alpha-GGUF",
            "/api/v1/models/huggingface/test/gamma-GGUF"
        ]
    );
    assert!(!devon.holds(alpha.name) && !devon.repo_dir(alpha.name).exists());
    assert!(devon.holds(beta.name));
    assert!(holds_file(&devon.repo_dir(beta.name), beta.q8(), &beta.files[0].1));
    let stderr = &outcome.stderr;
    assert!(stderr.contains("alpha|llama_cpp|F32: Devon removed `test/alpha-GGUF`"), "{stderr}");
    assert!(!stderr.contains("alpha|llama_cpp|Q8_0: Devon removed"), "{stderr}");
    let notice = format!("downloads go through Devon's HTTP API at {}", devon.url());
    assert_eq!(stderr.matches(&notice).count(), 1, "{stderr}");

    // kitt downloaded nothing itself.
    assert!(hub.cdn.log().is_empty(), "{:?}", hub.cdn.log());
    assert!(!scratch.models().join("huggingface/test").exists());

    let rows = devon_rows(&scratch, &done);
    assert_eq!(
        devon_states(&rows),
        [
            ("test/alpha-GGUF", Some(false), "removed"),
            ("test/beta-GGUF", Some(true), "present"),
            ("test/gamma-GGUF", Some(false), "removed"),
        ]
    );
    let mut alpha_files = vec![alpha.q8().to_owned()];
    alpha_files.extend(alpha.shards());
    assert_eq!(rows[0].files, alpha_files);
    assert_eq!(rows[0].backend, format!("http {}", devon.url()));
    let view = status(&scratch);
    assert_eq!(view["downloads"]["downloaded_bytes"], alpha.bytes() + gamma.bytes(), "{view}");
    assert_eq!(view["downloads"]["to_download_bytes"], 0, "{view}");
}

#[test]
fn a_refused_devon_key_fails_each_run_naming_the_setting() {
    let Some(engine) = Engine::find() else { return };
    let scratch = Scratch::new();
    let small = Repo {
        name: "test/small-GGUF",
        files: vec![("small-Q8_0.gguf".to_owned(), b"GGUF not really".to_vec())],
    };
    let hub = Hub::serving(&[&small]);
    let devon = FakeDevon::start(Some("dk-right"));
    devon.source(small.name, &small.listed());
    let devon_url = format!("devon_url: {}\ndevon_api_key: dk-wrong\n", devon.url());
    let file = scratch.write("c.yaml", &config("devon-key", &[&small], &devon_url));

    let outcome = scratch.run(&mut run_campaign(&scratch, &engine, &hub, &file));
    let done = summary(&outcome, 1);
    let (key, status, reason) = &runs(&done)[0];
    assert_eq!((key.as_str(), status.as_str()), ("small|llama_cpp|Q8_0", "failed"));
    assert!(reason.contains("Devon could not download `test/small-GGUF`"), "{reason}");
    assert!(reason.contains("refused kitt's API key (HTTP 401"), "{reason}");
    assert!(reason.contains("`devon_api_key`") && reason.contains("DEVON_API_KEY"), "{reason}");
    assert!(!outcome.stdout.contains("dk-wrong") && !outcome.stderr.contains("dk-wrong"));
    // Whether Devon held it could not be asked either: it would be kept, and says so.
    assert!(
        outcome.stderr.contains("cannot tell whether Devon already holds"),
        "{}",
        outcome.stderr
    );
    assert!(devon.calls_of("DELETE").is_empty());
}

#[test]
fn the_devon_command_downloads_and_removes_and_its_failure_stays_with_its_run() {
    let Some(engine) = Engine::find() else { return };
    let _lock = ServerLock::acquire();
    let scratch = Scratch::new();
    let alpha = Repo::generate(&engine, "test/alpha-GGUF", 31);
    let beta = Repo::generate(&engine, "test/beta-GGUF", 32).q8_only();
    let broken = Repo {
        name: "test/broken-GGUF",
        files: vec![("broken-Q8_0.gguf".to_owned(), beta.files[0].1.clone())],
    };
    let hub = Hub::serving(&[&alpha, &beta, &broken]);
    let devon = FakeDevonCli::new();
    for repo in [&alpha, &beta, &broken] {
        devon.source(repo.name, &repo.listed());
    }
    devon.hold(beta.name, &[beta.q8()]);
    devon.fail(
        broken.name,
        1,
        "Traceback (most recent call last):\n  File \"devon\", line 1\n\
         huggingface_hub.errors.HfHubHTTPError: 500 Server Error for url: test/broken-GGUF\n",
    );
    let file = scratch.write("c.yaml", &config("devon-cli", &[&alpha, &beta, &broken], ""));

    let mut command = run_campaign(&scratch, &engine, &hub, &file);
    devon.configure(&mut command);
    let outcome = scratch.run(&mut command);
    let done = summary(&outcome, 1);
    let ran = runs(&done);
    assert_eq!(
        statuses(&ran),
        [
            ("alpha|llama_cpp|Q8_0", "success"),
            ("alpha|llama_cpp|F32", "success"),
            ("beta|llama_cpp|Q8_0", "success"),
            ("broken|llama_cpp|Q8_0", "failed"),
        ],
        "{ran:?}\n{}",
        outcome.stderr
    );
    let reason = &ran[3].2;
    assert!(
        reason.contains(
            "`devon download test/broken-GGUF -y --include broken-Q8_0.gguf` exited with code 1; \
             last log lines:\nTraceback"
        ),
        "{reason}"
    );
    assert!(reason.ends_with("500 Server Error for url: test/broken-GGUF"), "{reason}");
    // The one-line outcome shows Devon's error, not the start of its traceback.
    assert!(
        outcome.stderr.contains(
            "broken|llama_cpp|Q8_0: failed: Devon could not download `test/broken-GGUF`: `devon \
             download test/broken-GGUF -y --include broken-Q8_0.gguf` exited with code 1: \
             huggingface_hub.errors.HfHubHTTPError: 500 Server Error"
        ),
        "{}",
        outcome.stderr
    );

    let downloads = devon.calls_of("download");
    let download = |repo: &Repo, force: bool, files: Vec<String>| {
        let mut argv = vec!["download".to_owned(), repo.name.to_owned(), "-y".to_owned()];
        if force {
            argv.push("--force".to_owned());
        }
        for file in files {
            argv.extend(["--include".to_owned(), file]);
        }
        argv
    };
    assert_eq!(
        downloads,
        [
            download(&alpha, false, vec![alpha.q8().to_owned()]),
            download(&alpha, false, alpha.shards()),
            download(&alpha, true, alpha.shards()),
            download(&beta, false, vec![beta.q8().to_owned()]),
            download(&broken, false, vec![broken.q8().to_owned()]),
        ]
    );
    // Removed: only Alpha, after its last run. Beta was the user's; Broken never arrived.
    assert_eq!(devon.calls_of("remove"), [["remove", "test/alpha-GGUF", "-y"]]);
    assert!(!devon.holds(alpha.name) && !devon.repo_dir(alpha.name).exists());
    assert!(devon.holds(beta.name));
    // Asked once per repository before its first download, and after each to find the files.
    assert_eq!(devon.calls_of("export").len(), 3 + 4);

    let stderr = &outcome.stderr;
    let notice = format!("downloads go through the devon command at {}", devon.program().display());
    assert_eq!(stderr.matches(&notice).count(), 1, "{stderr}");
    assert!(stderr.contains("alpha|llama_cpp|F32: Devon removed `test/alpha-GGUF`"), "{stderr}");
    assert!(hub.cdn.log().is_empty(), "kitt downloaded nothing itself");
    let rows = devon_rows(&scratch, &done);
    assert_eq!(
        devon_states(&rows),
        [
            ("test/alpha-GGUF", Some(false), "removed"),
            ("test/beta-GGUF", Some(true), "present"),
            ("test/broken-GGUF", Some(false), "failed"),
        ]
    );
    assert_eq!(rows[0].backend, format!("cli {}", devon.program().display()));
}

#[test]
fn ctrl_c_kills_a_running_devon_command_and_resume_asks_again() {
    let Some(engine) = Engine::find() else { return };
    let _lock = ServerLock::acquire();
    let scratch = Scratch::new();
    let slow = Repo::generate(&engine, "test/stalled-GGUF", 41).q8_only();
    let hub = Hub::serving(&[&slow]);
    let devon = FakeDevonCli::new();
    devon.source(slow.name, &slow.listed()).stall(slow.name, 600);
    let file = scratch.write("c.yaml", &config("devon-stop", &[&slow], ""));

    let mut command = run_campaign(&scratch, &engine, &hub, &file);
    devon.configure(&mut command);
    let child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    // The fake records its call first thing, then stalls; its command line
    // names the repository, kitt's does not.
    while devon.calls_of("download").is_empty() || processes_mentioning(slow.name).is_empty() {
        assert!(Instant::now() < deadline, "the devon command never started");
        std::thread::sleep(Duration::from_millis(100));
    }
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(130), "{output:?}");
    // Killed, not waited for: gone once the kernel has delivered the kill.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !processes_mentioning(slow.name).is_empty() {
        assert!(Instant::now() < deadline, "the devon command outlived kitt's Ctrl-C");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!devon.holds(slow.name));

    // Resumed without the stall: asked again, and the repository is still kitt's own.
    devon.stall(slow.name, 0);
    let mut command = run_campaign(&scratch, &engine, &hub, &file);
    devon.configure(&mut command);
    let outcome = scratch.run(command.args(["--resume"]));
    let done = summary(&outcome, 0);
    assert_eq!(runs(&done)[0].1, "success", "{}", outcome.stderr);
    assert_eq!(devon.calls_of("download").len(), 2, "{:?}\n{}", devon.calls(), outcome.stderr);
    assert_eq!(devon.calls_of("remove"), [["remove", "test/stalled-GGUF", "-y"]]);
    let rows = devon_rows(&scratch, &done);
    assert_eq!((rows[0].preexisting, rows[0].status.as_str()), (Some(false), "removed"));
}

#[test]
fn without_devon_kitt_downloads_itself_and_says_so_once() {
    let Some(engine) = Engine::find() else { return };
    let _lock = ServerLock::acquire();
    let path = std::env::var_os("PATH").unwrap_or_default();
    let devon_on_path = std::env::split_paths(&path).any(|dir| dir.join("devon").exists());
    assert!(!devon_on_path, "this test needs a PATH without a devon command");
    let scratch = Scratch::new();
    let alpha = Repo::generate(&engine, "test/alpha-GGUF", 51);
    let hub = Hub::serving(&[&alpha]);
    let file = scratch.write("c.yaml", &config("no-devon", &[&alpha], ""));

    let outcome = scratch.run(&mut run_campaign(&scratch, &engine, &hub, &file));
    let done = summary(&outcome, 0);
    let ran = runs(&done);
    assert_eq!(
        statuses(&ran),
        [("alpha|llama_cpp|Q8_0", "success"), ("alpha|llama_cpp|F32", "success")],
        "{}",
        outcome.stderr
    );
    assert_eq!(outcome.stderr.matches(NO_DEVON).count(), 1, "{}", outcome.stderr);
    // kitt's own downloader fetched every file of both runs.
    let fetched: Vec<String> = hub.cdn.log().into_iter().map(|entry| entry.path).collect();
    let expected: Vec<String> =
        alpha.files.iter().map(|(path, _)| FakeHub::cdn_path(alpha.name, path)).collect();
    assert_eq!(fetched, expected);
    assert!(devon_rows(&scratch, &done).is_empty());
}
