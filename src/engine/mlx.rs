//! Apple MLX through `mlx_lm.server`.
//!
//! kitt runs `mlx_lm.server --model DIR --host 127.0.0.1 --port P`. The server
//! loads its `--model` before it listens, so ready means `/v1/models` answers
//! (older releases have no `/health`) and a one-token chat request is served.
//! Requests name the model `default_model`, the id `mlx_lm.server` gives the
//! model it was started with (asking for a local path would make it load the
//! path again, and older releases refuse paths outside their working
//! directory). `mlx_lm.server` has no `ignore_eos`, `min_tokens` or context
//! size, so output length is not pinned; that is recorded. MLX runs only on
//! Apple silicon; kitt still starts a `binary` it is given anywhere.

use std::path::{Path, PathBuf};

use super::served::{self, Lookup, MemorySign, ModelCheck, ServerPlan, Site};
use super::{EngineError, EngineKind, Launch, Running, port, python};

const LOOKUP: Lookup = Lookup {
    engine: "mlx",
    env: "KITT_MLX",
    on_path: Some("mlx_lm.server"),
    hint: "install mlx-lm (`pip install mlx-lm`, Apple silicon only), or set KITT_MLX or the \
           engine config's `binary` to `mlx_lm.server`",
    accept: super::llama_cpp::executable,
};

/// The model id `mlx_lm.server` serves its `--model` under.
const SERVED_ID: &str = "default_model";

/// Start-up memory errors (Metal's wording).
const MEMORY_SIGNS: &[MemorySign] = &[
    MemorySign {
        needle: "kIOGPUCommandBufferCallbackErrorOutOfMemory",
        cause: "the GPU ran out of unified memory",
        hint: "use a smaller quant or close other programs",
    },
    MemorySign {
        needle: "Insufficient Memory",
        cause: "the GPU ran out of unified memory",
        hint: "use a smaller quant or close other programs",
    },
];

/// Whether this machine can run MLX at all.
pub const PLATFORM_SUPPORTED: bool = cfg!(all(target_os = "macos", target_arch = "aarch64"));

/// Finds `mlx_lm.server`.
pub fn find_binary(configured: Option<&Path>) -> Result<PathBuf, EngineError> {
    served::find_program(&LOOKUP, configured)
}

/// The `mlx-lm` package version, asked of the interpreter in the server's `#!` line.
pub fn version(binary: &Path) -> Option<String> {
    let python = python::script_interpreter(binary).or_else(python::python3)?;
    python::package_version(&python, "mlx-lm")
}

/// For `kitt engines list`: the server and its version, or why it is not usable.
pub fn availability() -> Result<String, String> {
    if !PLATFORM_SUPPORTED {
        return Err("MLX runs only on Apple silicon (macOS on arm64); kitt still starts an \
                    `mlx_lm.server` given as `binary`"
            .into());
    }
    let binary = find_binary(None).map_err(|error| error.to_string())?;
    let version = version(&binary).unwrap_or_else(|| "version unknown".into());
    Ok(format!("{} (mlx-lm {version})", binary.display()))
}

/// Starts `mlx_lm.server` and waits until it serves the model.
pub async fn start(launch: &Launch<'_>) -> Result<Running, EngineError> {
    let binary = find_binary(launch.config.binary.as_deref())?;
    let site = Site::native(port::free_port().map_err(EngineError::Io)?);
    let plan = plan(launch, binary.clone(), &site)?;
    let started = served::launch(&plan, launch).await?;
    let version = python::off_runtime(move || version(&binary)).await;
    Ok(started.into_running(plan, version.map(|version| format!("mlx-lm {version}"))))
}

/// The command line, checks and request fields for one launch at `site`.
pub fn plan(launch: &Launch<'_>, binary: PathBuf, site: &Site) -> Result<ServerPlan, EngineError> {
    let model = served::check_model(launch, None)?;
    let mut plan = ServerPlan::new(EngineKind::Mlx, binary, site);
    plan.flag("--model", site.path(model));
    plan.flag("--host", site.host);
    plan.flag("--port", site.port);
    plan.extra_args = launch.config.extra_args.clone();

    plan.ready_path = "/v1/models";
    plan.model_check = ModelCheck::StartedWith;
    plan.served_model = SERVED_ID.to_owned();
    plan.comparability.extend([
        (
            "output_length".into(),
            "not pinned: mlx_lm.server has no ignore_eos or min_tokens".into(),
        ),
        (
            "context_size".into(),
            "not set: mlx_lm.server takes none (the model's own limit applies)".into(),
        ),
    ]);
    plan.memory_signs = MEMORY_SIGNS;
    Ok(plan)
}
