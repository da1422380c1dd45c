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
//! - sees the model read-only under `/models` ([`mounts`]), and for vLLM a
//!   GGUF's tokenizer directory under `/tokenizer`; Ollama's store is the
//!   named volume `kitt-ollama`;
//! - gets the GPUs of the config's `gpus` (default: all when NVML or `nvidia-smi`
//!   finds a GPU, none otherwise) ([`resolve_gpus`]);
//! - has its output followed into the run's `engine.log`.
//!
//! It is stopped (`docker stop -t 10`) and removed (`docker rm --force`) at
//! the end of the run; dropping the handle removes it too (error, panic,
//! interrupted start), an immediate exit removes every container of this
//! process, and a later kitt removes containers whose owning kitt died.
//!
//! Every engine with an official image ([`default_image`]) is wired:
//! `llama_cpp::start_in_docker` and `ollama::start_in_docker` build their
//! [`ContainerSpec`] themselves; vLLM, SGLang and TabbyAPI go through
//! `served::launch_in_docker`, which builds the engine's native plan for the
//! container (model path under `/models`, `0.0.0.0` and the image's port)
//! and passes it after the image's entry point. Each then waits for the
//! engine's own readiness probe on [`Container::base_url`] while checking
//! [`EngineHandle::exited`](super::handle::EngineHandle::exited);
//! [`Container::parameters`] says what to record on the result.
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
pub use mounts::{MODELS_DIR, Mount, MountError, TOKENIZER_DIR, model_mount, mount_under};
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
            assert_eq!(kind.has_docker_mode(), has_mode, "{kind}");
        }
        assert_eq!(
            default_image(EngineKind::LlamaCpp, &Gpus::Count(1)),
            Some("ghcr.io/ggml-org/llama.cpp:server-cuda")
        );
        let image = image_for(EngineKind::LlamaCpp, Some("my/llama:b1"), &Gpus::All).unwrap();
        assert_eq!(image, "my/llama:b1", "the config's image wins");
    }
}
