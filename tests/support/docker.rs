//! The fake `docker` program (`tests/fakes/docker`) for tests: a `PATH`
//! directory holding it, its state directory, and the record of every
//! argument vector kitt passed it.
//!
//! ```ignore
//! let docker = support::docker::FakeDocker::new();
//! docker.configure(&mut command, Some(&engine)); // PATH, state, log, llama-server
//! let runs = docker.calls_of("run");
//! assert!(docker.containers().is_empty());
//! ```

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

use super::engine::Engine;

/// The fake program in the source tree.
const FAKE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fakes/docker");

/// A fake Docker installation in a temporary directory.
pub struct FakeDocker {
    dir: tempfile::TempDir,
}

impl FakeDocker {
    /// A fresh installation: no images, no containers.
    pub fn new() -> FakeDocker {
        let dir = tempfile::tempdir().expect("temp dir for the fake docker");
        std::fs::create_dir_all(dir.path().join("bin")).unwrap();
        std::os::unix::fs::symlink(FAKE, dir.path().join("bin/docker")).unwrap();
        FakeDocker { dir }
    }

    /// The directory to put first on `PATH`.
    pub fn bin(&self) -> PathBuf {
        self.dir.path().join("bin")
    }

    /// The program, as found on `PATH`.
    pub fn program(&self) -> PathBuf {
        self.bin().join("docker")
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("calls.jsonl")
    }

    /// Points `command` at the fake: `PATH`, its state and record, and the
    /// llama-server its llama.cpp images run.
    pub fn configure(&self, command: &mut Command, engine: Option<&Engine>) {
        let path = std::env::var_os("PATH").unwrap_or_default();
        let mut dirs = vec![self.bin()];
        dirs.extend(std::env::split_paths(&path));
        command
            .env("PATH", std::env::join_paths(dirs).unwrap())
            .env("FAKE_DOCKER_STATE", self.state())
            .env("FAKE_DOCKER_LOG", self.log());
        if let Some(engine) = engine {
            command.env("FAKE_DOCKER_LLAMA_SERVER", &engine.server);
        }
    }

    /// Runs the fake directly (as another user of the same daemon would).
    pub fn docker(&self, args: &[&str]) -> String {
        let mut command = Command::new(FAKE);
        command.args(args).env("FAKE_DOCKER_STATE", self.state());
        let output = command.output().expect("run the fake docker");
        assert!(
            output.status.success(),
            "docker {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Every argument vector kitt passed, in order.
    pub fn calls(&self) -> Vec<Vec<String>> {
        let text = std::fs::read_to_string(self.log()).unwrap_or_default();
        text.lines()
            .map(|line| {
                let record: Value = serde_json::from_str(line).unwrap();
                record["argv"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|a| a.as_str().unwrap().to_owned())
                    .collect()
            })
            .collect()
    }

    /// The calls of one subcommand (`run`, `pull`, …).
    pub fn calls_of(&self, subcommand: &str) -> Vec<Vec<String>> {
        self.calls()
            .into_iter()
            .filter(|argv| argv.first().is_some_and(|s| s == subcommand))
            .collect()
    }

    /// The containers the fake daemon knows, running or not.
    pub fn containers(&self) -> Vec<Value> {
        let dir = self.state().join("containers");
        let Ok(entries) = std::fs::read_dir(&dir) else { return Vec::new() };
        let mut containers: Vec<Value> = entries
            .flatten()
            .map(|entry| entry.path())
            .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
            .filter_map(|path| serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok())
            .collect();
        containers.sort_by_key(|c| c["name"].as_str().unwrap_or_default().to_owned());
        containers
    }

    /// Names of the containers the fake daemon knows.
    pub fn container_names(&self) -> Vec<String> {
        self.containers().iter().map(|c| c["name"].as_str().unwrap().to_owned()).collect()
    }

    /// The state directory, for tests that inspect it.
    pub fn state_dir(&self) -> PathBuf {
        self.state()
    }
}

impl Drop for FakeDocker {
    fn drop(&mut self) {
        // Containers a failing test left behind must not outlive it.
        let names = self.container_names();
        if !names.is_empty() {
            let mut command = Command::new(FAKE);
            command.arg("rm").arg("--force").args(&names).env("FAKE_DOCKER_STATE", self.state());
            let _ = command.output();
        }
    }
}
