//! Campaigns whose models come from the Hub, end to end: the real `kitt`
//! against the loopback fake Hub (listing, `resolve` with the LFS redirect)
//! and its CDN (ranges, `ETag`, injected faults), benchmarking what it
//! downloaded on the real llama-server. Covered: sharded and single-file
//! variants downloaded, benchmarked and cleaned up while a model that was
//! already there stays; a dropped connection resumed; a 416 restarting; a 429
//! waited out; a hash mismatch, exhausted retries and a gated repository
//! failing only their own model; Ctrl-C during a download and `--resume`
//! continuing the partial file, or restarting it when its `ETag` changed;
//! `campaign status` showing the bytes; the next run's model downloading
//! while the current run measures (prefetch). One llama-server at a time
//! (`ServerLock`).

mod common;
mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Outcome, Scratch};
use kitt::gguf::TinyModel;
use kitt::store::{DownloadRow, Store};
use nix::sys::signal::Signal;
use serde_json::Value;
use support::engine::{Engine, ServerLock};
use support::files::{Fault, FileServer, Gate, Logged};
use support::{FakeHub, GateMode};

/// The `quick` suite made quicker in the test's home: one short throughput pass.
const SUITE: &str = "name: quick\nversion: 1\ndescription: One short pass.\nruns: 1\n\
     sampling:\n  temperature: 0.0\n  max_tokens: 16\ntests: [throughput]\n\
     test_overrides:\n  throughput:\n    concurrency: [1]\n    iterations: 2\n    warmup: false\n";

/// The fake Hub and the CDN its `resolve` redirects LFS files to.
struct Remote {
    hub: FakeHub,
    cdn: FileServer,
}

impl Remote {
    fn start() -> Remote {
        Remote { hub: FakeHub::start(), cdn: FileServer::start() }
    }

    /// Serves `files` (path, bytes) as `repo`.
    fn serve(&self, repo: &str, files: &[(&str, &[u8])]) {
        let files: Vec<(&str, Vec<u8>)> =
            files.iter().map(|(path, bytes)| (*path, bytes.to_vec())).collect();
        self.hub.serve_repo(repo, &files, &self.cdn);
    }

    /// Queues faults for the next requests of a file of `repo` on the CDN.
    fn faults(&self, repo: &str, path: &str, faults: &[Fault]) {
        for fault in faults {
            self.cdn.fault(&FakeHub::cdn_path(repo, path), fault.clone());
        }
    }

    /// The CDN's requests for a file of `repo`.
    fn log(&self, repo: &str, path: &str) -> Vec<Logged> {
        let path = FakeHub::cdn_path(repo, path);
        self.cdn.log().into_iter().filter(|entry| entry.path == path).collect()
    }
}

/// GGUF files of one generated model: F32, and Q8_0 made with llama-quantize.
struct Model {
    f32: Vec<u8>,
    q8: Vec<u8>,
    /// The F32 file split in two with llama-gguf-split.
    shards: Vec<Vec<u8>>,
}

fn model(engine: &Engine, seed: u64) -> Model {
    let dir = tempfile::tempdir().unwrap();
    let f32 = dir.path().join("m-F32.gguf");
    TinyModel { seed, ..TinyModel::default() }.write(&f32).unwrap();
    let q8 = dir.path().join("m-Q8_0.gguf");
    engine.quantize(&f32, &q8, "Q8_0");
    let shards = engine.split(&f32, &dir.path().join("split/m-F32"), 20);
    assert_eq!(shards.len(), 2, "{shards:?}");
    Model {
        f32: std::fs::read(&f32).unwrap(),
        q8: std::fs::read(&q8).unwrap(),
        shards: shards.iter().map(|shard| std::fs::read(shard).unwrap()).collect(),
    }
}

fn config(name: &str, models: &[(&str, &str)], disk: &str) -> String {
    let mut text = format!("campaign_name: {name}\nmodels:\n");
    for (model, repo) in models {
        text.push_str(&format!("  - name: {model}\n    params: \"2.5M\"\n    gguf_repo: {repo}\n"));
    }
    text.push_str("engines:\n  - name: llama_cpp\n    suite: quick\n");
    text.push_str(disk);
    text
}

/// `kitt campaign ARGS` online against the fake Hub.
fn campaign(scratch: &Scratch, engine: &Engine, remote: &Remote, args: &[&str]) -> Command {
    let mut command = scratch.kitt();
    command
        .env_remove("HF_HUB_OFFLINE")
        .env_remove("KITT_OFFLINE")
        .envs(remote.hub.env())
        .env("KITT_LLAMA_SERVER", &engine.server)
        .arg("campaign")
        .args(args);
    command
}

fn setup(scratch: &Scratch) {
    scratch.write("kitt-home/suites/quick.yaml", SUITE);
}

fn summary(outcome: &Outcome, code: i32) -> Value {
    assert_eq!(outcome.code, code, "stdout: {}\nstderr: {}", outcome.stdout, outcome.stderr);
    serde_json::from_str(&outcome.stdout).unwrap_or_else(|e| panic!("{e}: {}", outcome.stdout))
}

fn status(scratch: &Scratch) -> Value {
    let outcome = scratch.run(scratch.kitt().args(["--json", "campaign", "status"]));
    assert_eq!(outcome.code, 0, "{outcome:?}");
    serde_json::from_str(&outcome.stdout).unwrap_or_else(|e| panic!("{e}: {}", outcome.stdout))
}

fn runs(summary: &Value) -> Vec<(String, String, String)> {
    summary["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|run| {
            let text = |field: &str| run[field].as_str().unwrap_or_default().to_owned();
            (text("key"), text("status"), text("reason"))
        })
        .collect()
}

fn downloads(scratch: &Scratch, campaign: &str) -> Vec<DownloadRow> {
    Store::open(&scratch.home()).unwrap().campaign_downloads(campaign).unwrap()
}

fn repo_dir(scratch: &Scratch, repo: &str) -> PathBuf {
    scratch.models().join("huggingface").join(repo)
}

/// Every file under `dir` whose name ends with `suffix`.
fn files_ending(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else if path.to_string_lossy().ends_with(suffix) {
                found.push(path);
            }
        }
    }
    found
}

#[test]
fn a_campaign_downloads_benchmarks_and_cleans_up_only_what_it_downloaded() {
    let Some(engine) = Engine::find() else { return };
    let _lock = ServerLock::acquire();
    let scratch = Scratch::new();
    setup(&scratch);
    let alpha = model(&engine, 1);
    let beta = model(&engine, 2);
    let remote = Remote::start();
    let shard = |n: usize| format!("F32/alpha-F32-0000{n}-of-00002.gguf");
    remote.serve(
        "test/alpha-GGUF",
        &[
            ("README.md", &b"# alpha\n"[..]),
            ("alpha-Q8_0.gguf", &alpha.q8),
            (&shard(1), &alpha.shards[0]),
            (&shard(2), &alpha.shards[1]),
        ],
    );
    remote.serve("test/beta-GGUF", &[("beta-Q8_0.gguf", &beta.q8)]);
    // Beta is already in the storage root, as the Hub lists it.
    let beta_file = repo_dir(&scratch, "test/beta-GGUF").join("beta-Q8_0.gguf");
    std::fs::create_dir_all(beta_file.parent().unwrap()).unwrap();
    std::fs::write(&beta_file, &beta.q8).unwrap();
    // AlphaAgain loads the same files as Alpha: they are downloaded once and
    // kept until its runs are done.
    let models = [
        ("Alpha", "test/alpha-GGUF"),
        ("AlphaAgain", "test/alpha-GGUF"),
        ("Beta", "test/beta-GGUF"),
    ];
    let disk = "disk:\n  reserve_gb: 0\n  cleanup_after_run: true\n";
    let file = scratch.write("c.yaml", &config("fetch", &models, disk));
    let path = file.to_str().unwrap();

    let outcome = scratch.run(&mut campaign(&scratch, &engine, &remote, &["--json", "run", path]));
    let done = summary(&outcome, 0);
    let keys: Vec<(String, String)> =
        runs(&done).into_iter().map(|(key, status, _)| (key, status)).collect();
    let success = |key: &str| (key.to_owned(), "success".to_owned());
    assert_eq!(
        keys,
        [
            success("Alpha|llama_cpp|Q8_0"),
            success("Alpha|llama_cpp|F32"),
            success("AlphaAgain|llama_cpp|Q8_0"),
            success("AlphaAgain|llama_cpp|F32"),
            success("Beta|llama_cpp|Q8_0"),
        ],
        "{:?}",
        runs(&done)
    );
    for run in done["runs"].as_array().unwrap() {
        assert!(run["output_tokens_per_second"].as_f64().unwrap() > 0.0, "{run}");
    }

    // Each file crossed the network once, never with a token, and whole.
    for (path, bytes) in [
        ("alpha-Q8_0.gguf", &alpha.q8),
        (&shard(1), &alpha.shards[0]),
        (&shard(2), &alpha.shards[1]),
    ] {
        let log = remote.log("test/alpha-GGUF", path);
        assert_eq!(log.len(), 1, "{path}: {log:?}");
        assert_eq!((log[0].status, log[0].sent), (200, bytes.len() as u64), "{path}");
        assert!(!log[0].authorized, "{path}");
    }
    assert!(remote.log("test/beta-GGUF", "beta-Q8_0.gguf").is_empty(), "Beta was local");
    assert_eq!(remote.hub.resolve_requests("test/alpha-GGUF"), 3, "README.md is not fetched");

    // What kitt downloaded is gone, with the directories it created; what
    // was there stays.
    let left = files_ending(&repo_dir(&scratch, "test/alpha-GGUF"), "");
    assert!(!repo_dir(&scratch, "test/alpha-GGUF").exists(), "{left:?}\n{}", outcome.stderr);
    assert_eq!(std::fs::read(&beta_file).unwrap(), beta.q8);
    let id = done["campaign_id"].as_str().unwrap();
    let rows = downloads(&scratch, id);
    let files: Vec<(&str, &str, u64)> =
        rows.iter().map(|row| (row.file.as_str(), row.status.as_str(), row.bytes)).collect();
    assert_eq!(
        files,
        [
            ("alpha-Q8_0.gguf", "removed", alpha.q8.len() as u64),
            (shard(1).as_str(), "removed", alpha.shards[0].len() as u64),
            (shard(2).as_str(), "removed", alpha.shards[1].len() as u64),
        ]
    );
    assert!(rows.iter().all(|row| row.finished_at.is_some() && row.removed_at.is_some()));
    // The file stayed while AlphaAgain still needed it: one removal note per
    // file, after AlphaAgain's runs.
    let stderr = &outcome.stderr;
    assert!(
        stderr.contains("downloading test/alpha-GGUF [1/2] alpha-F32-00001-of-00002.gguf"),
        "{stderr}"
    );
    assert!(stderr.contains("downloaded test/alpha-GGUF: 2 file(s)"), "{stderr}");
    assert!(!stderr.contains("Alpha|llama_cpp|Q8_0: removed"), "{stderr}");
    assert!(stderr.contains("AlphaAgain|llama_cpp|Q8_0: removed 1 downloaded file(s)"), "{stderr}");
    assert!(stderr.contains("AlphaAgain|llama_cpp|F32: removed 2 downloaded file(s)"), "{stderr}");

    let view = status(&scratch);
    let total = (alpha.q8.len() + alpha.shards[0].len() + alpha.shards[1].len()) as u64;
    assert_eq!(view["downloads"]["downloaded_bytes"], total, "{view}");
    assert_eq!(view["downloads"]["to_download_bytes"], 0, "{view}");
    let text = scratch.run(scratch.kitt().args(["campaign", "status"]));
    assert!(text.stdout.contains("Download: "), "{}", text.stdout);
    assert!(text.stdout.contains("0.0 GiB to download"), "{}", text.stdout);
}

#[test]
fn download_faults_fail_only_their_own_model() {
    let Some(engine) = Engine::find() else { return };
    let _lock = ServerLock::acquire();
    let scratch = Scratch::new();
    setup(&scratch);
    let good = model(&engine, 3);
    let other = model(&engine, 4);
    let remote = Remote::start();
    let shard = |n: usize| format!("good-F32-0000{n}-of-00002.gguf");
    remote.serve("test/good-GGUF", &[(&shard(1), &good.shards[0]), (&shard(2), &good.shards[1])]);
    // Shard 1 loses its connection; shard 2 too, then cannot be resumed, then is rate-limited.
    remote.faults("test/good-GGUF", &shard(1), &[Fault::DropAfter(300_000)]);
    remote.faults(
        "test/good-GGUF",
        &shard(2),
        &[Fault::DropAfter(200_000), Fault::RangeNotSatisfiable, Fault::Status(429, Some(1))],
    );
    // Bad's storage serves other bytes of the same length than the Hub lists.
    remote.serve("test/bad-GGUF", &[("bad-Q8_0.gguf", &good.q8)]);
    let mut corrupt = good.q8.clone();
    corrupt[1000] ^= 0xFF;
    remote.cdn.put(&FakeHub::cdn_path("test/bad-GGUF", "bad-Q8_0.gguf"), corrupt);
    // Flaky breaks off and then answers 503 until kitt gives up.
    remote.serve("test/flaky-GGUF", &[("flaky-Q8_0.gguf", &other.q8)]);
    let unavailable = Fault::Status(503, Some(0));
    remote.faults(
        "test/flaky-GGUF",
        "flaky-Q8_0.gguf",
        &[
            Fault::DropAfter(100_000),
            unavailable.clone(),
            unavailable.clone(),
            unavailable.clone(),
            unavailable,
        ],
    );
    // Gated refuses a caller without a token.
    remote.serve(
        "test/gated-GGUF",
        &[("gated-Q8_0.gguf", &other.q8), ("gated-F32.gguf", &other.f32)],
    );
    remote.hub.gated("test/gated-GGUF", GateMode::Auto);
    let models = [
        ("Gated", "test/gated-GGUF"),
        ("Good", "test/good-GGUF"),
        ("Bad", "test/bad-GGUF"),
        ("Flaky", "test/flaky-GGUF"),
    ];
    // Not skipped by the plan: the download's own refusal is what is tested.
    let disk = "disk:\n  reserve_gb: 0\n  cleanup_after_run: false\nskip_gated: false\n";
    let file = scratch.write("c.yaml", &config("faults", &models, disk));
    let path = file.to_str().unwrap();

    let outcome = scratch.run(&mut campaign(&scratch, &engine, &remote, &["--json", "run", path]));
    let done = summary(&outcome, 1);
    let ran = runs(&done);
    let outcome_of =
        |key: &str| ran.iter().find(|run| run.0 == key).unwrap_or_else(|| panic!("{key}: {ran:?}"));
    assert_eq!(outcome_of("Good|llama_cpp|F32").1, "success", "{ran:?}");

    // Gated: both runs fail naming the repository and the token; the second asked nothing.
    for key in ["Gated|llama_cpp|Q8_0", "Gated|llama_cpp|F32"] {
        let (_, status, reason) = outcome_of(key);
        assert_eq!(status, "failed", "{key}");
        assert!(reason.contains("`test/gated-GGUF` refused the download"), "{reason}");
        assert!(reason.contains("HTTP 401") && reason.contains("HF_TOKEN"), "{reason}");
    }
    assert_eq!(remote.hub.resolve_requests("test/gated-GGUF"), 1);
    assert!(!repo_dir(&scratch, "test/gated-GGUF").exists(), "nothing left of the gated model");

    // A dropped connection resumes where it stopped.
    let first = remote.log("test/good-GGUF", &shard(1));
    let size = good.shards[0].len() as u64;
    assert_eq!(first.len(), 2, "{first:?}");
    assert_eq!((first[0].range.as_deref(), first[0].sent), (None, 300_000));
    assert_eq!(first[1].range.as_deref(), Some("bytes=300000-"), "{first:?}\n{}", outcome.stderr);
    assert_eq!((first[1].status, first[1].sent), (206, size - 300_000));
    // A 416 starts over; a 429 is waited out as asked.
    let second = remote.log("test/good-GGUF", &shard(2));
    let statuses: Vec<(u16, Option<&str>)> =
        second.iter().map(|entry| (entry.status, entry.range.as_deref())).collect();
    assert_eq!(
        statuses,
        [(200, None), (416, Some("bytes=200000-")), (429, None), (200, None)],
        "{second:?}"
    );
    assert_eq!(second[3].sent, good.shards[1].len() as u64);
    assert!(outcome.stderr.contains("HTTP 429; retrying in 1s"), "{}", outcome.stderr);
    for (n, bytes) in [(1, &good.shards[0]), (2, &good.shards[1])] {
        let kept = std::fs::read(repo_dir(&scratch, "test/good-GGUF").join(shard(n))).unwrap();
        assert!(kept == *bytes, "shard {n} is kept whole (cleanup_after_run: false)");
    }

    // A hash mismatch fails the run with the reason and leaves no file.
    let (_, status, reason) = outcome_of("Bad|llama_cpp|Q8_0");
    assert_eq!(status, "failed");
    assert!(reason.contains("SHA-256 mismatch"), "{reason}");
    assert!(!repo_dir(&scratch, "test/bad-GGUF").join("bad-Q8_0.gguf").exists());
    // Exhausted retries fail the run; the partial file is removed.
    let (_, status, reason) = outcome_of("Flaky|llama_cpp|Q8_0");
    assert_eq!(status, "failed");
    assert!(reason.contains("gave up after 5 attempts") && reason.contains("HTTP 503"), "{reason}");
    assert_eq!(remote.log("test/flaky-GGUF", "flaky-Q8_0.gguf").len(), 5);
    assert!(files_ending(&scratch.models(), ".kitt-part").is_empty());
    assert!(files_ending(&scratch.models(), ".kitt-part.json").is_empty());
    assert!(!repo_dir(&scratch, "test/bad-GGUF").exists());
    assert!(!repo_dir(&scratch, "test/flaky-GGUF").exists());

    let id = done["campaign_id"].as_str().unwrap();
    let rows: Vec<(String, String)> = downloads(&scratch, id)
        .into_iter()
        .map(|row| (format!("{}/{}", row.repo, row.file), row.status))
        .collect();
    let row = |file: &str, status: &str| (file.to_owned(), status.to_owned());
    assert_eq!(
        rows,
        [
            row("test/gated-GGUF/gated-Q8_0.gguf", "failed"),
            row(&format!("test/good-GGUF/{}", shard(1)), "present"),
            row(&format!("test/good-GGUF/{}", shard(2)), "present"),
            row("test/bad-GGUF/bad-Q8_0.gguf", "failed"),
            row("test/flaky-GGUF/flaky-Q8_0.gguf", "failed"),
        ]
    );
}

/// Starts `campaign run` in the background and waits until `campaign status`
/// reports `bytes` downloaded while a run is downloading.
fn start_until_downloaded(command: &mut Command, scratch: &Scratch, bytes: u64) -> Child {
    let mut child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let outcome = finish(child);
            panic!("the campaign ended ({status}) before {bytes} bytes were down: {outcome:?}");
        }
        let view = scratch.run(scratch.kitt().args(["--json", "campaign", "status"]));
        let view = serde_json::from_str::<Value>(&view.stdout).unwrap_or_default();
        let phase = view["current_run"]["phase"].as_str().unwrap_or_default();
        if phase.starts_with("downloading") && view["downloads"]["downloaded_bytes"] == bytes {
            return child;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{bytes} bytes never showed as downloaded: {view}\n{:?}", finish(child));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn interrupt(child: Child) -> Outcome {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
    nix::sys::signal::kill(pid, Signal::SIGINT).unwrap();
    finish(child)
}

fn finish(child: Child) -> Outcome {
    let output = child.wait_with_output().unwrap();
    Outcome {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

#[test]
fn an_interrupted_download_resumes_from_its_partial_file() {
    let Some(engine) = Engine::find() else { return };
    let _lock = ServerLock::acquire();
    let scratch = Scratch::new();
    setup(&scratch);
    let slow = model(&engine, 5);
    let remote = Remote::start();
    let repo = "test/slow-GGUF";
    let shard = |n: usize| format!("slow-F32-0000{n}-of-00002.gguf");
    let sizes = [slow.shards[0].len() as u64, slow.shards[1].len() as u64];
    remote.serve(repo, &[(&shard(1), &slow.shards[0]), (&shard(2), &slow.shards[1])]);
    remote.faults(repo, &shard(1), &[Fault::StallAfter(400_000, Duration::from_secs(60))]);
    let disk = "disk:\n  reserve_gb: 0\n  cleanup_after_run: false\n";
    let file = scratch.write("c.yaml", &config("stop", &[("Slow", repo)], disk));
    let path = file.to_str().unwrap();
    let run = |args: &[&str]| {
        let mut command = campaign(&scratch, &engine, &remote, args);
        command.env("KITT_DOWNLOAD_STALL_SECS", "120");
        command
    };

    // Ctrl-C while shard 1 is stalled at 400 kB: the partial file stays.
    let child = start_until_downloaded(&mut run(&["run", path]), &scratch, 400_000);
    let stopped = interrupt(child);
    assert_eq!(stopped.code, 130, "{stopped:?}");
    let dir = repo_dir(&scratch, repo);
    let part = dir.join(format!("{}.kitt-part", shard(1)));
    assert_eq!(std::fs::metadata(&part).unwrap().len(), 400_000);
    assert!(!dir.join(shard(1)).exists());
    let view = status(&scratch);
    assert_eq!(view["state"], "pending", "{view}");
    assert_eq!(view["downloads"]["downloaded_bytes"], 400_000, "{view}");
    assert_eq!(view["downloads"]["to_download_bytes"], sizes[0] + sizes[1] - 400_000, "{view}");

    // Resumed: shard 1 continues from its partial file; Ctrl-C again while shard 2 stalls.
    remote.faults(repo, &shard(2), &[Fault::StallAfter(300_000, Duration::from_secs(60))]);
    let child =
        start_until_downloaded(&mut run(&["run", path, "--resume"]), &scratch, sizes[0] + 300_000);
    assert_eq!(interrupt(child).code, 130);
    let first = remote.log(repo, &shard(1));
    assert_eq!(first.len(), 2, "{first:?}");
    assert_eq!(first[1].range.as_deref(), Some("bytes=400000-"));
    assert_eq!((first[1].status, first[1].sent), (206, sizes[0] - 400_000));
    assert_eq!(std::fs::read(dir.join(shard(1))).unwrap(), slow.shards[0]);

    // The storage now names shard 2 with another ETag: the partial is discarded.
    remote.cdn.retag(&FakeHub::cdn_path(repo, &shard(2)));
    let outcome = scratch.run(&mut run(&["--json", "run", path, "--resume"]));
    let done = summary(&outcome, 0);
    assert_eq!(runs(&done)[0].1, "success", "{done}");
    let second = remote.log(repo, &shard(2));
    assert_eq!(second.len(), 2, "{second:?}");
    assert_eq!(second[1].range.as_deref(), Some("bytes=300000-"));
    assert_eq!((second[1].status, second[1].sent), (200, sizes[1]));
    assert_eq!(std::fs::read(dir.join(shard(2))).unwrap(), slow.shards[1]);
    assert!(files_ending(&scratch.models(), ".kitt-part").is_empty());

    let view = status(&scratch);
    assert_eq!(view["downloads"]["downloaded_bytes"], sizes[0] + sizes[1], "{view}");
    assert_eq!(view["downloads"]["to_download_bytes"], 0, "{view}");
    let id = done["campaign_id"].as_str().unwrap();
    let rows = downloads(&scratch, id);
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(rows.iter().all(|row| row.status == "present"), "{rows:?}");
}

/// The store's view of the run `key` of `campaign`.
fn run_row(scratch: &Scratch, campaign: &str, key: &str) -> Option<kitt::store::RunRow> {
    let store = Store::open(&scratch.home()).ok()?;
    store.campaign_runs(campaign, None, None).ok()?.into_iter().find(|run| run.key == key)
}

fn at(text: &str) -> jiff::Timestamp {
    text.parse().unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[test]
fn the_next_model_downloads_while_the_current_run_measures() {
    let Some(engine) = Engine::find() else { return };
    let _lock = ServerLock::acquire();
    let scratch = Scratch::new();
    setup(&scratch);
    let alpha = model(&engine, 7);
    let beta = model(&engine, 8);
    let remote = Remote::start();
    remote.serve("test/alpha-GGUF", &[("alpha-Q8_0.gguf", &alpha.q8)]);
    remote.serve("test/beta-GGUF", &[("beta-Q8_0.gguf", &beta.q8)]);
    // Beta's file is held back until Alpha's run is seen measuring, so its
    // download certainly spans Alpha's measurements.
    let gate = Gate::default();
    remote.faults("test/beta-GGUF", "beta-Q8_0.gguf", &[Fault::Hold(gate.clone())]);
    let models = [("Alpha", "test/alpha-GGUF"), ("Beta", "test/beta-GGUF")];
    let disk = "disk:\n  reserve_gb: 0\n  cleanup_after_run: true\n";
    let file = scratch.write("c.yaml", &config("ahead", &models, disk));
    let path = file.to_str().unwrap();
    let (alpha_key, beta_key) = ("Alpha|llama_cpp|Q8_0", "Beta|llama_cpp|Q8_0");

    let args = ["--json", "run", path, "--campaign-id", "ahead"];
    let mut command = campaign(&scratch, &engine, &remote, &args);
    let mut child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        // Measuring, or past it (a quick machine measures between two looks):
        // either way Beta's file was held back while Alpha measured.
        let alpha = run_row(&scratch, "ahead", alpha_key);
        let phase = alpha.as_ref().and_then(|run| run.phase.as_deref()).unwrap_or_default();
        let past = ["throughput", "stopping", "storing"].iter().any(|p| phase.starts_with(p));
        if past || alpha.is_some_and(|run| run.finished_at.is_some()) {
            break;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the campaign ended ({status}) before Alpha measured: {:?}", finish(child));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("Alpha never measured: {:?}", finish(child));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // Beta's download is already under way (recorded before its first byte).
    let beta_id = run_row(&scratch, "ahead", beta_key).unwrap().id;
    let early = downloads(&scratch, "ahead");
    assert!(early.iter().any(|row| row.run_id == beta_id), "{early:?}");
    gate.open();
    let outcome = finish(child);
    let done = summary(&outcome, 0);
    let statuses: Vec<(String, String)> =
        runs(&done).into_iter().map(|(key, status, _)| (key, status)).collect();
    assert_eq!(
        statuses,
        [(alpha_key.into(), "success".into()), (beta_key.into(), "success".into())],
        "{}",
        outcome.stderr
    );

    // The store's timestamps: Beta's download began after Alpha's attempt
    // started and before it finished, and ended before Beta's own attempt.
    let alpha_run = run_row(&scratch, "ahead", alpha_key).unwrap();
    let beta_run = run_row(&scratch, "ahead", beta_key).unwrap();
    let rows = downloads(&scratch, "ahead");
    let beta_row = rows.iter().find(|row| row.run_id == beta_run.id).unwrap();
    let began = at(&beta_row.started_at);
    assert!(at(alpha_run.started_at.as_deref().unwrap()) <= began, "{alpha_run:?} {beta_row:?}");
    assert!(began < at(alpha_run.finished_at.as_deref().unwrap()), "{alpha_run:?} {beta_row:?}");
    let fetched = at(beta_row.finished_at.as_deref().unwrap());
    assert!(fetched <= at(beta_run.finished_at.as_deref().unwrap()), "{beta_run:?} {beta_row:?}");
    assert_eq!(remote.log("test/beta-GGUF", "beta-Q8_0.gguf").len(), 1, "downloaded once");

    // Alpha's result says a download ran beside its measurements; Beta's does not.
    let store = Store::open(&scratch.home()).unwrap();
    let result = |run: &kitt::store::RunRow| {
        store.result(run.result_id.as_deref().unwrap()).unwrap().unwrap()
    };
    let beside = result(&alpha_run).engine.comparability.get("concurrent_activity").cloned();
    let beside = beside.unwrap_or_else(|| panic!("{:?}", result(&alpha_run).engine));
    assert!(beside.contains("test/beta-GGUF") && beside.contains(beta_key), "{beside}");
    assert!(!result(&beta_run).engine.comparability.contains_key("concurrent_activity"));
    assert!(
        outcome.stderr.contains(&format!("next {beta_key}: downloading test/beta-GGUF")),
        "{}",
        outcome.stderr
    );
    // Both downloads were removed after their runs.
    assert!(rows.iter().all(|row| row.status == "removed"), "{rows:?}");
}

#[test]
fn a_failed_prefetch_fails_its_own_run_and_prefetch_can_be_switched_off() {
    let Some(engine) = Engine::find() else { return };
    let _lock = ServerLock::acquire();
    let scratch = Scratch::new();
    setup(&scratch);
    let alpha = model(&engine, 9);
    let remote = Remote::start();
    remote.serve("test/alpha-GGUF", &[("alpha-Q8_0.gguf", &alpha.q8)]);
    // Beta's storage serves bytes whose hash is not the one the Hub lists.
    remote.serve("test/beta-GGUF", &[("beta-Q8_0.gguf", &alpha.q8)]);
    let mut corrupt = alpha.q8.clone();
    corrupt[2000] ^= 0xFF;
    remote.cdn.put(&FakeHub::cdn_path("test/beta-GGUF", "beta-Q8_0.gguf"), corrupt);
    let models = [("Alpha", "test/alpha-GGUF"), ("Beta", "test/beta-GGUF")];
    let disk = "disk:\n  reserve_gb: 0\n  cleanup_after_run: false\n";
    let file = scratch.write("c.yaml", &config("sour", &models, disk));
    let path = file.to_str().unwrap();
    let outcome = scratch.run(&mut campaign(&scratch, &engine, &remote, &["--json", "run", path]));
    let done = summary(&outcome, 1);
    let ran = runs(&done);
    assert_eq!((ran[0].0.as_str(), ran[0].1.as_str()), ("Alpha|llama_cpp|Q8_0", "success"));
    assert_eq!((ran[1].0.as_str(), ran[1].1.as_str()), ("Beta|llama_cpp|Q8_0", "failed"));
    assert!(ran[1].2.contains("SHA-256") || ran[1].2.contains("hash"), "{:?}", ran[1]);
    assert!(outcome.stderr.contains("next Beta|llama_cpp|Q8_0: downloading"), "{}", outcome.stderr);
    assert!(!repo_dir(&scratch, "test/beta-GGUF").join("beta-Q8_0.gguf").exists());

    // With `disk.prefetch: false` nothing downloads beside a run.
    let scratch = Scratch::new();
    setup(&scratch);
    remote.serve("test/beta-GGUF", &[("beta-Q8_0.gguf", &alpha.q8)]);
    let disk = "disk:\n  reserve_gb: 0\n  cleanup_after_run: false\n  prefetch: false\n";
    let file = scratch.write("c.yaml", &config("plain", &models, disk));
    let path = file.to_str().unwrap();
    let args = ["--json", "run", path, "--campaign-id", "plain"];
    let outcome = scratch.run(&mut campaign(&scratch, &engine, &remote, &args));
    summary(&outcome, 0);
    assert!(!outcome.stderr.contains("next "), "{}", outcome.stderr);
    let alpha_run = run_row(&scratch, "plain", "Alpha|llama_cpp|Q8_0").unwrap();
    let rows = downloads(&scratch, "plain");
    let beta_row = rows.iter().find(|row| row.repo == "test/beta-GGUF").unwrap();
    assert!(at(alpha_run.finished_at.as_deref().unwrap()) <= at(&beta_row.started_at));
}
