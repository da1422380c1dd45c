//! vLLM's OpenAI-compatible server, `vllm serve`.
//!
//! kitt runs `vllm serve MODEL` on 127.0.0.1 and a port it chose, under the
//! run's model name, with `--max-model-len` the context one request of the
//! suite needs, `--max-num-seqs` the requests it has in flight, and automatic
//! prefix caching off. A single-file GGUF is served with `--tokenizer` (the
//! model's safetensors checkpoint). vLLM's `/health` can answer before the
//! engine serves, so ready means `/health` 200 and then a one-token chat
//! request that succeeds. Requests carry `ignore_eos` and `min_tokens`.
//!
//! In Docker mode the same flags follow the image's entry point (`vllm
//! serve`), with the model under `/models`, a tokenizer directory under
//! `/tokenizer` (a repository id is passed as given), and the server on
//! 0.0.0.0:8000 inside the container.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::served::{self, ImageLayout, Lookup, MemorySign, ModelCheck, ServerPlan, Site};
use super::{EngineError, EngineKind, Format, Launch, Running, port, python};
use crate::config::EngineMode;

const LOOKUP: Lookup = Lookup {
    engine: "vllm",
    env: "KITT_VLLM",
    on_path: Some("vllm"),
    hint: "install vLLM (`pip install vllm`, CUDA or ROCm GPU), or set KITT_VLLM or the engine \
           config's `binary` to the `vllm` program",
    accept: super::llama_cpp::executable,
};

/// Start-up memory errors, most specific first.
const MEMORY_SIGNS: &[MemorySign] = &[
    MemorySign {
        needle: "larger than the maximum number of tokens that can be stored in KV cache",
        cause: "the KV cache cannot hold max-model-len tokens",
        hint: "lower `context_size`, raise `gpu_memory_utilization` or use a smaller quant",
    },
    MemorySign {
        needle: "larger than the available KV cache memory",
        cause: "the KV cache cannot hold max-model-len tokens",
        hint: "lower `context_size`, raise `gpu_memory_utilization` or use a smaller quant",
    },
    MemorySign {
        needle: "No available memory for the cache blocks",
        cause: "no GPU memory is left for the KV cache after loading the weights",
        hint: "raise `gpu_memory_utilization`, use a smaller quant, or more GPUs \
               (`tensor_parallel_size`)",
    },
    MemorySign {
        needle: "less than desired GPU memory utilization",
        cause: "other processes hold GPU memory vLLM was asked to take",
        hint: "lower `gpu_memory_utilization` or free the GPU",
    },
    MemorySign {
        needle: "CUDA out of memory",
        cause: "the GPU ran out of memory",
        hint: "use a smaller quant, lower `context_size` or `gpu_memory_utilization`, or more \
               GPUs (`tensor_parallel_size`)",
    },
    MemorySign {
        needle: "OutOfMemoryError",
        cause: "the GPU ran out of memory",
        hint: "use a smaller quant, lower `context_size` or `gpu_memory_utilization`, or more \
               GPUs (`tensor_parallel_size`)",
    },
];

/// The official image runs `vllm serve`, listening on 8000.
const IMAGE: ImageLayout = ImageLayout { entry: &["vllm", "serve"], port: 8000 };

/// Finds the `vllm` program.
pub fn find_binary(configured: Option<&Path>) -> Result<PathBuf, EngineError> {
    served::find_program(&LOOKUP, configured)
}

/// `vllm --version`, which prints the version alone.
pub fn version(binary: &Path) -> Option<String> {
    let mut command = std::process::Command::new(binary);
    command.arg("--version");
    python::first_line_within(command, Duration::from_secs(60))
}

/// For `kitt engines list`: the program and its version, or why it is not usable.
pub fn availability() -> Result<String, String> {
    let binary = find_binary(None).map_err(|error| error.to_string())?;
    let version = version(&binary).unwrap_or_else(|| "version unknown".into());
    Ok(format!("{} ({version})", binary.display()))
}

/// Starts `vllm serve` (natively, or in a container in Docker mode) and
/// waits until it serves the model.
pub async fn start(launch: &Launch<'_>) -> Result<Running, EngineError> {
    let (plan, started) = match launch.config.mode {
        EngineMode::Native => {
            let binary = find_binary(launch.config.binary.as_deref())?;
            let site = Site::native(port::free_port().map_err(EngineError::Io)?);
            let plan = plan(launch, binary, &site)?;
            let started = served::launch(&plan, launch).await?;
            (plan, started)
        }
        EngineMode::Docker => {
            let build = |site: &Site| plan(launch, "vllm".into(), site);
            served::launch_in_docker(launch, &IMAGE, served_tokenizer(launch), build).await?
        }
    };
    let reported = served::json_field(&format!("{}/version", started.base_url()), "version").await;
    let version = match reported {
        Some(version) => Some(version),
        None if started.in_container() => None,
        None => {
            let binary = plan.program.clone();
            python::off_runtime(move || version(&binary)).await
        }
    };
    Ok(started.into_running(plan, version))
}

/// The tokenizer vLLM is given: the config's, else the model's; only a GGUF needs one.
fn served_tokenizer<'a>(launch: &'a Launch<'_>) -> Option<&'a str> {
    let tokenizer = launch.config.tokenizer.as_deref().or(launch.tokenizer);
    tokenizer.filter(|_| launch.format == Some(Format::Gguf))
}

/// The command line, checks and request fields for one launch at `site`.
pub fn plan(launch: &Launch<'_>, binary: PathBuf, site: &Site) -> Result<ServerPlan, EngineError> {
    let config = launch.config;
    let tokenizer = served_tokenizer(launch);
    let model = served::check_model(launch, tokenizer)?;
    let context = launch.context_per_request();

    let mut plan = ServerPlan::new(EngineKind::Vllm, binary, site);
    plan.leading = vec!["serve".into(), site.path(model)];
    plan.flag("--host", site.host);
    plan.flag("--port", site.port);
    plan.flag("--served-model-name", launch.model_name);
    plan.flag("--max-model-len", context);
    plan.flag("--max-num-seqs", launch.slots);
    // Repeated prompts must be computed again, or prefill is measured from cache.
    plan.switch("--no-enable-prefix-caching");
    if let Some(tokenizer) = tokenizer {
        plan.flag("--tokenizer", site.path_or_id(tokenizer));
    }
    if let Some(share) = config.gpu_memory_utilization {
        plan.flag("--gpu-memory-utilization", share);
    }
    if let Some(gpus) = config.tensor_parallel_size {
        plan.flag("--tensor-parallel-size", gpus);
    }
    plan.extra_args = config.extra_args.clone();

    plan.model_check = ModelCheck::Listed(launch.model_name.to_owned());
    plan.served_model = launch.model_name.to_owned();
    plan.pin_output_length();
    let share =
        config.gpu_memory_utilization.map_or("vLLM's default (0.9)".into(), |s| s.to_string());
    plan.comparability.extend([
        ("prompt_cache".into(), "defeated: started with --no-enable-prefix-caching".into()),
        ("context_size".into(), format!("{context} (--max-model-len)")),
        ("gpu_memory_utilization".into(), share.clone()),
    ]);
    plan.memory_signs = MEMORY_SIGNS;
    plan.memory_settings = format!("context_size {context}, gpu_memory_utilization {share}");
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::EngineConfig;

    fn launch<'a>(config: &'a EngineConfig, model: &'a Path, format: Format) -> Launch<'a> {
        Launch {
            kind: EngineKind::Vllm,
            config,
            model_path: Some(model),
            format: Some(format),
            tokenizer: Some("org/model"),
            run_id: "r",
            campaign: None,
            model_name: "model-BF16",
            model_bytes: 0,
            context_size: 4 * 1000,
            slots: 4,
            log_path: PathBuf::from("/dev/null"),
            progress: crate::engine::StartProgress::default(),
            pulls: crate::engine::pulls::PullRules::default(),
            devices: None,
            cpu_threads: None,
        }
    }

    #[test]
    fn the_context_is_one_requests_need_and_the_gguf_gets_its_tokenizer() {
        let config = EngineConfig { gpu_memory_utilization: Some(0.8), ..EngineConfig::default() };
        let gguf = Path::new("/m/model-Q4_K_M.gguf");
        let site = Site::native(9000);
        let plan = plan(&launch(&config, gguf, Format::Gguf), "vllm".into(), &site).unwrap();
        let args = plan.command().args.join(" ");
        assert!(args.starts_with("serve /m/model-Q4_K_M.gguf --host 127.0.0.1 --port 9000"));
        assert!(args.contains("--max-model-len 1000 --max-num-seqs 4"), "{args}");
        assert!(args.contains("--tokenizer org/model"), "{args}");
        assert!(args.contains("--gpu-memory-utilization 0.8"), "{args}");
        assert!(!args.contains("--tensor-parallel-size"), "{args}");
    }

    #[test]
    fn a_file_is_not_a_checkpoint() {
        let config = EngineConfig::default();
        let file = Path::new("/etc/hostname");
        let site = Site::native(1);
        let refused = plan(&launch(&config, file, Format::Safetensors), "vllm".into(), &site);
        assert!(matches!(refused, Err(EngineError::Model { .. })), "{refused:?}");
    }
}
