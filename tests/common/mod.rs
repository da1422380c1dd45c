//! Running the real `kitt` binary in a scratch directory.

#![allow(dead_code)]

pub mod ollama;

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use serde_json::Value;

/// What a kitt invocation produced.
#[derive(Debug)]
pub struct Outcome {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// A scratch directory with a kitt home, a storage root and an empty Hugging Face cache.
pub struct Scratch {
    pub dir: tempfile::TempDir,
}

impl Scratch {
    pub fn new() -> Self {
        Scratch { dir: tempfile::tempdir().expect("temp dir") }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn home(&self) -> PathBuf {
        self.path().join("kitt-home")
    }

    pub fn models(&self) -> PathBuf {
        self.path().join("models")
    }

    /// Writes a file relative to the scratch directory.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Creates a sparse file of `size` bytes under the storage root's repo directory.
    pub fn model_file(&self, repo: &str, file: &str, size: u64) {
        let path = self.models().join("huggingface").join(repo).join(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::File::create(&path).unwrap().set_len(size).unwrap();
    }

    /// A `kitt` command run in the scratch directory, offline, with isolated paths.
    pub fn kitt(&self) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_kitt"));
        command
            .current_dir(self.path())
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.path())
            .env("KITT_HOME", self.home())
            .env("KITT_MODELS_DIR", self.models())
            .env("HF_HOME", self.path().join("hf"))
            .env("OLLAMA_MODELS", self.path().join("ollama"))
            .env("HF_HUB_OFFLINE", "1")
            .env("KITT_OFFLINE", "1");
        command
    }

    pub fn run(&self, command: &mut Command) -> Outcome {
        let output = command.output().expect("run kitt");
        Outcome {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// `kitt campaign run <file> --dry-run` with extra arguments.
    pub fn dry_run(&self, file: &str, extra: &[&str]) -> Outcome {
        let mut command = self.kitt();
        command.args(["campaign", "run", file, "--dry-run"]).args(extra);
        self.run(&mut command)
    }

    /// Replaces the scratch path in text so snapshots are stable.
    pub fn redact(&self, text: &str) -> String {
        text.replace(&self.path().display().to_string(), "[SCRATCH]")
    }
}

/// Live processes (not zombies) whose command line mentions `needle`.
pub fn processes_mentioning(needle: impl AsRef<Path>) -> Vec<u32> {
    let needle = needle.as_ref().display().to_string();
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            String::from_utf8_lossy(&cmdline).contains(&needle) && !stat.contains(") Z ")
        })
        .collect()
}

/// The JSON summary of a `--json campaign run` that exited with `code`.
pub fn summary(outcome: &Outcome, code: i32) -> Value {
    assert_eq!(outcome.code, code, "stdout: {}\nstderr: {}", outcome.stdout, outcome.stderr);
    serde_json::from_str(&outcome.stdout).unwrap_or_else(|e| panic!("{e}: {}", outcome.stdout))
}

/// Waits for a spawned kitt and collects what it printed.
pub fn finish(child: Child) -> Outcome {
    let output = child.wait_with_output().unwrap();
    Outcome {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Sends `signal` to a spawned kitt.
pub fn signal(child: &Child, signal: nix::sys::signal::Signal) {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
    nix::sys::signal::kill(pid, signal).unwrap();
}

/// Waits (up to 10 s) until no process serves a model of the scratch
/// directory's storage root.
pub fn no_engine_left(scratch: &Scratch) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = processes_mentioning(scratch.models());
        if left.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "engine processes left: {left:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
