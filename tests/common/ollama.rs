//! The fake `ollama` program (`tests/fakes/fake_ollama.py`) in a scratch
//! directory: its own copy as `bin/ollama`, so that "no server left" looks
//! only at one test's processes; its request logs; its store (the scratch's
//! `OLLAMA_MODELS`).

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{Outcome, Scratch, processes_mentioning};

/// The fake's source.
pub const FAKE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fakes/fake_ollama.py");

/// A scratch home with its own copy of the fake.
pub struct OllamaSetup {
    pub scratch: Scratch,
    /// The copy of the fake, `bin/ollama`.
    pub ollama: PathBuf,
}

impl OllamaSetup {
    pub fn new() -> Self {
        let scratch = Scratch::new();
        let bin = scratch.path().join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        let ollama = bin.join("ollama");
        std::fs::copy(FAKE, &ollama).unwrap();
        OllamaSetup { scratch, ollama }
    }

    /// A `kitt` command that may pull (no `KITT_OFFLINE`), finds the fake
    /// through `KITT_OLLAMA` and has it record its requests to `log`.
    pub fn kitt(&self, log: &str) -> Command {
        let mut command = self.scratch.kitt();
        command
            .env_remove("KITT_OFFLINE")
            .env("KITT_OLLAMA", &self.ollama)
            .env("FAKE_OLLAMA_REQUESTS", self.scratch.path().join(log));
        command
    }

    /// `kitt --json run … -e ollama`, pulls slow enough to show progress.
    pub fn run(&self, log: &str, args: &[&str], env: &[(&str, &str)]) -> Outcome {
        let mut command = self.kitt(log);
        command
            .env("FAKE_OLLAMA_PULL_STEP_MS", "800")
            .envs(env.iter().copied())
            .args(["--json", "run", "-e", "ollama"])
            .args(args);
        self.finish(&mut command)
    }

    /// Runs `command` to its end and checks that no fake server is left.
    pub fn finish(&self, command: &mut Command) -> Outcome {
        let outcome = self.scratch.run(command);
        self.no_server_left();
        outcome
    }

    /// The requests the fake recorded in `log`.
    pub fn requests(&self, log: &str) -> Vec<Value> {
        let text = std::fs::read_to_string(self.scratch.path().join(log)).unwrap_or_default();
        text.lines().map(|line| serde_json::from_str(line).unwrap()).collect()
    }

    /// The fake's store.
    pub fn store(&self) -> PathBuf {
        self.scratch.path().join("ollama")
    }

    /// The manifest of `model:tag` (an official model) in the store.
    pub fn manifest(&self, model: &str, tag: &str) -> PathBuf {
        self.store().join("manifests/registry.ollama.ai/library").join(model).join(tag)
    }

    /// Waits until no copy of the fake runs any more.
    pub fn no_server_left(&self) {
        let needle = self.ollama.display().to_string();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = processes_mentioning(&needle);
            if left.is_empty() {
                return;
            }
            assert!(Instant::now() < deadline, "fake Ollama servers left: {left:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The recorded requests to `path`, in order.
pub fn to<'a>(requests: &'a [Value], method: &str, path: &str) -> Vec<&'a Value> {
    requests.iter().filter(|r| r["method"] == method && r["path"] == path).collect()
}
