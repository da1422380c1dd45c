//! SGLang's OpenAI-compatible server, `python3 -m sglang.launch_server`.
//!
//! The engine config's `binary` is the Python interpreter that has SGLang
//! installed (default: `KITT_SGLANG`, then `python3` on `PATH`). kitt starts
//! the server on 127.0.0.1 and a port it chose, under the run's model name,
//! with `--context-length` the context one request of the suite needs,
//! `--max-running-requests` the requests it has in flight, and the radix
//! (prefix) cache off. SGLang answers `/health` 503 while it starts; ready
//! means `/health` 200, the model listed, and a one-token chat request served.
//!
//! In Docker mode the image (which has no entry point) runs `python3 -m
//! sglang.launch_server` with the same flags, the model under `/models` and
//! the server on 0.0.0.0:30000 inside the container.

use std::path::{Path, PathBuf};

use super::served::{self, ImageLayout, Lookup, MemorySign, ModelCheck, ServerPlan, Site};
use super::{EngineError, EngineKind, Launch, Running, port, python};
use crate::config::EngineMode;

const LOOKUP: Lookup = Lookup {
    engine: "sglang",
    env: "KITT_SGLANG",
    on_path: Some("python3"),
    hint: "install SGLang (`pip install sglang`) and set the engine config's `binary` (or \
           KITT_SGLANG) to the Python interpreter that has it",
    accept: super::llama_cpp::executable,
};

/// Start-up memory errors, most specific first.
const MEMORY_SIGNS: &[MemorySign] = &[
    MemorySign {
        needle: "Not enough memory. Please try to increase --mem-fraction-static",
        cause: "no GPU memory is left for the KV cache pool after loading the weights",
        hint: "raise `gpu_memory_utilization` (--mem-fraction-static), use a smaller quant, or \
               more GPUs (`tensor_parallel_size`)",
    },
    MemorySign {
        needle: "CUDA out of memory",
        cause: "the GPU ran out of memory",
        hint: "lower `gpu_memory_utilization` or `context_size`, use a smaller quant, or more \
               GPUs (`tensor_parallel_size`)",
    },
    MemorySign {
        needle: "OutOfMemoryError",
        cause: "the GPU ran out of memory",
        hint: "lower `gpu_memory_utilization` or `context_size`, use a smaller quant, or more \
               GPUs (`tensor_parallel_size`)",
    },
];

/// The official image has no entry point; SGLang's default port is 30000.
const IMAGE: ImageLayout = ImageLayout { entry: &[], port: 30000 };

/// Finds the Python interpreter that runs SGLang.
pub fn find_interpreter(configured: Option<&Path>) -> Result<PathBuf, EngineError> {
    served::find_program(&LOOKUP, configured)
}

/// For `kitt engines list`: the interpreter and SGLang's version, or why it is not usable.
pub fn availability() -> Result<String, String> {
    let python = find_interpreter(None).map_err(|error| error.to_string())?;
    match python::package_version(&python, "sglang") {
        Some(version) => Ok(format!("{} (sglang {version})", python.display())),
        None => Err(format!("{} has no `sglang` package; {}", python.display(), LOOKUP.hint)),
    }
}

/// Starts the SGLang server (natively, or in a container in Docker mode)
/// and waits until it serves the model.
pub async fn start(launch: &Launch<'_>) -> Result<Running, EngineError> {
    let (plan, started) = match launch.config.mode {
        EngineMode::Native => {
            let python = find_interpreter(launch.config.binary.as_deref())?;
            let site = Site::native(port::free_port().map_err(EngineError::Io)?);
            let plan = plan(launch, python, &site)?;
            let started = served::launch(&plan, launch).await.map_err(|error| match error {
                // The interpreter runs, but SGLang is not installed in it: a
                // missing engine (exit 3), not a failed run.
                EngineError::Died { log_tail, .. }
                    if log_tail.contains("No module named 'sglang'") =>
                {
                    EngineError::BinaryMissing {
                        engine: "sglang",
                        searched: format!("{} (has no `sglang` package)", plan.program.display()),
                        hint: LOOKUP.hint.to_owned(),
                    }
                }
                other => other,
            })?;
            (plan, started)
        }
        EngineMode::Docker => {
            let build = |site: &Site| plan(launch, "python3".into(), site);
            served::launch_in_docker(launch, &IMAGE, None, build).await?
        }
    };
    let mut version = reported_version(started.base_url()).await;
    if version.is_none() && !started.in_container() {
        let python = plan.program.clone();
        version = python::off_runtime(move || python::package_version(&python, "sglang")).await;
    }
    Ok(started.into_running(plan, version))
}

/// The version the server reports (`/server_info`, or `/get_server_info` of
/// older releases).
async fn reported_version(base_url: &str) -> Option<String> {
    for path in ["/server_info", "/get_server_info"] {
        if let Some(version) = served::json_field(&format!("{base_url}{path}"), "version").await {
            return Some(version);
        }
    }
    None
}

/// The command line, checks and request fields for one launch at `site`.
pub fn plan(launch: &Launch<'_>, python: PathBuf, site: &Site) -> Result<ServerPlan, EngineError> {
    let config = launch.config;
    let model = served::check_model(launch, None)?;
    let context = launch.context_per_request();

    let mut plan = ServerPlan::new(EngineKind::Sglang, python, site);
    plan.leading = vec!["-m".into(), "sglang.launch_server".into()];
    plan.flag("--model-path", site.path(model));
    plan.flag("--host", site.host);
    plan.flag("--port", site.port);
    plan.flag("--served-model-name", launch.model_name);
    plan.flag("--context-length", context);
    plan.flag("--max-running-requests", launch.slots);
    // Repeated prompts must be computed again, or prefill is measured from cache.
    plan.switch("--disable-radix-cache");
    if let Some(share) = config.gpu_memory_utilization {
        plan.flag("--mem-fraction-static", share);
    }
    if let Some(gpus) = config.tensor_parallel_size {
        plan.flag("--tp-size", gpus);
    }
    plan.extra_args = config.extra_args.clone();

    plan.model_check = ModelCheck::Listed(launch.model_name.to_owned());
    plan.served_model = launch.model_name.to_owned();
    plan.pin_output_length();
    let share = config.gpu_memory_utilization.map_or("SGLang's default".into(), |s| s.to_string());
    plan.comparability.extend([
        ("prompt_cache".into(), "defeated: started with --disable-radix-cache".into()),
        ("context_size".into(), format!("{context} (--context-length)")),
        ("gpu_memory_utilization".into(), format!("{share} (--mem-fraction-static)")),
    ]);
    plan.memory_signs = MEMORY_SIGNS;
    plan.memory_settings = format!("context_size {context}, gpu_memory_utilization {share}");
    Ok(plan)
}
