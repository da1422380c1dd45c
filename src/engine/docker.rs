//! Docker mode (`mode: docker` in an engine's config): the engine's server
//! runs in a container of its official image instead of a native process.
//!
//! kitt drives the `docker` command line (`KITT_DOCKER`, else `docker` on
//! `PATH`) through the [`DockerCli`] trait. A run's container:
//! - runs the engine's image ([`default_image`], or the config's `image`);
//!   a missing image is pulled first, its progress sent to the run's phases;
//! - is named `kitt-<campaign>-<run>` (`kitt-run-<run>` for `kitt run`) and
//!   labelled `kitt.owner`, `kitt.campaign`, `kitt.run` ([`owners`]);
//! - publishes the server's port on `127.0.0.1:<free port>` only;
//! - sees the model read-only under `/models` ([`mounts`]);
//! - gets the GPUs of the config's `gpus` (default: all when `nvidia-smi`
//!   finds a GPU, none otherwise) ([`resolve_gpus`]);
//! - has its output followed into the run's `engine.log`.
//!
//! It is stopped (`docker stop -t 10`) and removed (`docker rm --force`) at
//! the end of the run; dropping the handle removes it too (error, panic,
//! interrupted start), an immediate exit removes every container of this
//! process, and a later kitt removes containers whose owning kitt died.
//!
//! Wiring an engine takes a few lines in its `start`: build a
//! [`ContainerSpec`] (image, the port the server listens on inside,
//! arguments with the model path from [`model_mount`] and `0.0.0.0` as
//! host, environment, mounts, GPUs), call [`Container::start`], wrap it in
//! [`EngineHandle::Container`](super::handle::EngineHandle) and wait for the
//! engine's readiness probe on [`Container::base_url`] while checking
//! [`EngineHandle::exited`](super::handle::EngineHandle::exited);
//! [`Container::parameters`] says what to record on the result. See
//! `llama_cpp::start_in_docker`.
//!
//! This module does not build images, log in to registries, or talk to a
//! remote daemon specially (with `DOCKER_HOST` the loopback port mapping
//! would not reach the server).

mod cli;
mod container;
pub mod mounts;
pub mod owners;
mod pull;

use std::sync::Arc;

pub use cli::{
    ContainerState, DockerCli, DockerError, DockerProgram, ImageInfo, Labelled, Pending,
};
pub use container::{Container, ContainerRun, ContainerSpec, gpus_flag};
pub use mounts::{Mount, MountError, model_mount};
pub use owners::{reap_orphan_containers, remove_own_containers};

use super::{EngineError, EngineKind};
use crate::config::Gpus;

/// The official image of an engine, `None` when it has none. Tags float
/// (`server`, `latest`): the digest of the image that ran is recorded on
/// every result, and the config's `image` pins another tag or a digest.
/// llama.cpp's CUDA build is chosen when the container gets GPUs.
pub fn default_image(kind: EngineKind, gpus: &Gpus) -> Option<&'static str> {
    match kind {
        EngineKind::LlamaCpp if *gpus == Gpus::None => Some("ghcr.io/ggml-org/llama.cpp:server"),
        EngineKind::LlamaCpp => Some("ghcr.io/ggml-org/llama.cpp:server-cuda"),
        EngineKind::Ollama => Some("ollama/ollama:latest"),
        EngineKind::Vllm => Some("vllm/vllm-openai:latest"),
        EngineKind::Sglang => Some("lmsysorg/sglang:latest"),
        EngineKind::Exllamav2 => Some("ghcr.io/theroyallab/tabbyapi:latest"),
        EngineKind::Mlx | EngineKind::Openai => None,
    }
}

/// Why `text` cannot be an image reference, if it cannot: empty, with
/// whitespace or control characters, or starting with `-` (the docker CLI
/// would read it as an option).
pub fn image_problem(text: &str) -> Option<&'static str> {
    if text.is_empty() {
        Some("it is empty")
    } else if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Some("it contains whitespace")
    } else if text.starts_with('-') {
        Some("it starts with `-`")
    } else {
        None
    }
}

/// Why `kind` cannot run in Docker mode, when it cannot.
pub fn docker_refusal(kind: EngineKind) -> Option<String> {
    if is_wired(kind) {
        None
    } else if default_image(kind, &Gpus::None).is_none() {
        Some(format!("engine `{kind}` has no Docker mode"))
    } else {
        Some(format!("engine `{kind}` cannot run in Docker mode in this version of kitt yet"))
    }
}

/// Whether kitt can start `kind` in Docker mode yet.
pub fn is_wired(kind: EngineKind) -> bool {
    kind == EngineKind::LlamaCpp
}

/// The image a run uses: the config's `image`, else the engine's default.
pub fn image_for(
    kind: EngineKind,
    configured: Option<&str>,
    gpus: &Gpus,
) -> Result<String, EngineError> {
    configured
        .or_else(|| default_image(kind, gpus))
        .map(str::to_owned)
        .ok_or(EngineError::NoImage { engine: kind.name() })
}

/// The GPUs a container gets: the config's `gpus`, else every GPU when this
/// machine has an NVIDIA GPU, else none.
pub fn resolve_gpus(configured: Option<&Gpus>) -> Gpus {
    configured.cloned().unwrap_or_else(|| {
        if crate::hardware::detect().gpus.is_empty() { Gpus::None } else { Gpus::All }
    })
}

/// The `docker` program, as the trait kitt drives.
pub fn cli() -> Result<Arc<dyn DockerCli>, EngineError> {
    Ok(Arc::new(DockerProgram::find()?))
}

/// Whether Docker mode can run here: the daemon's version, or why not.
pub fn availability() -> Result<(DockerProgram, String), DockerError> {
    let docker = DockerProgram::find()?;
    let version = docker.version()?;
    Ok((docker, version))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_engine_with_docker_mode_has_an_image() {
        for kind in EngineKind::ALL {
            let has_mode = kind.is_managed() && *kind != EngineKind::Mlx;
            assert_eq!(default_image(*kind, &Gpus::None).is_some(), has_mode, "{kind}");
        }
        assert_eq!(
            default_image(EngineKind::LlamaCpp, &Gpus::Count(1)),
            Some("ghcr.io/ggml-org/llama.cpp:server-cuda")
        );
        let image = image_for(EngineKind::LlamaCpp, Some("my/llama:b1"), &Gpus::All).unwrap();
        assert_eq!(image, "my/llama:b1", "the config's image wins");
    }
}
