//! Test support shared by integration tests: loopback fakes of the remote
//! services kitt talks to (the Hugging Face Hub, the Ollama library and
//! registry), built from their documented API shapes.
//!
//! Use it with `mod support;` in a test file. Each fake runs on its own
//! thread and runtime, so synchronous tests (for example `assert_cmd` runs of
//! the `kitt` binary) can use it too; point a child process at it with
//! `.envs(fake.env())`.
//!
//! ```ignore
//! let hub = support::FakeHub::start();
//! hub.add_repo("org/model-GGUF", &[("model-Q4_K_M.gguf", 4_920_000_000)]);
//! let ollama = support::FakeOllama::start();
//! let digest = support::FakeOllama::digest("llama3.1-8b");
//! ollama.add_model("llama3.1", &[("8b", &digest, 4_920_000_000)]);
//! Command::cargo_bin("kitt")?.envs(hub.env()).envs(ollama.env()).env_remove("HF_TOKEN");
//! ```

// Every test binary compiles this module but uses only part of it.
#![allow(dead_code, unused_imports)]

pub mod cron;
pub mod datasets;
pub mod devon;
pub mod docker;
pub mod engine;
pub mod files;
pub mod hub;
pub mod nvml;
pub mod ollama;
pub mod parquet;
mod server;
pub mod smtp;
pub mod stream;
pub mod webhook;

pub use hub::{FakeHub, GateMode};
pub use ollama::FakeOllama;
pub use server::digest;
