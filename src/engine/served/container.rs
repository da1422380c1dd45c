//! Served engines in Docker mode: the same [`ServerPlan`] an engine builds
//! for a native start, built for a container [`Site`] and run in a container
//! of the engine's image.
//!
//! An engine names its image's [`ImageLayout`]: the words of its command line
//! that the image's entry point already supplies, and the port its server
//! listens on inside. The container's arguments are the plan's command line
//! without those words, so the flags are the native ones except for the
//! model's path (under `/models`), the host (`0.0.0.0`) and the port. The
//! model, and a GGUF's tokenizer when it is a local directory, are mounted
//! read-only; `/dev/shm` is enlarged for servers whose processes share
//! tensors through it.

use std::collections::BTreeMap;
use std::path::Path;

use super::{ServerPlan, Site, Started};
use crate::engine::docker::{self, Container, ContainerSpec, TOKENIZER_DIR};
use crate::engine::{EngineError, Launch};

/// How an engine's official image runs its server.
#[derive(Debug, Clone, Copy)]
pub struct ImageLayout {
    /// The leading words of the server's command line that the image's
    /// entry point supplies (`["vllm", "serve"]`; none when it has no entry point).
    pub entry: &'static [&'static str],
    /// The port the server listens on inside the container.
    pub port: u16,
}

/// The size of the container's `/dev/shm`: vLLM and SGLang pass tensors
/// between their processes through it, and Docker's default is 64 MB. It is
/// a limit, not a reservation.
const SHM_SIZE: &str = "16g";

/// What a container adds to the result.
#[derive(Debug)]
pub(super) struct Record {
    /// Mode, image, digest, GPUs and mounts.
    pub parameters: BTreeMap<String, String>,
    /// The digest reference of the image that ran.
    pub image: String,
}

/// Checks the model, builds the plan with `build` for a container site,
/// starts the container and waits until its server serves. `tokenizer` is
/// the tokenizer the server is given, if any (mounted when it is a directory).
pub async fn launch(
    launch: &Launch<'_>,
    layout: &ImageLayout,
    tokenizer: Option<&str>,
    build: impl FnOnce(&Site) -> Result<ServerPlan, EngineError>,
) -> Result<(ServerPlan, Started), EngineError> {
    let model = super::check_model(launch, tokenizer)?;
    let docker = docker::cli()?;
    let gpus = launch.container_gpus();
    let image = docker::image_for(launch.kind, launch.config.image.as_deref(), &gpus)?;
    let mut mounts = vec![docker::model_mount(model)?.0];
    if let Some(dir) = tokenizer.map(Path::new).filter(|path| path.is_dir()) {
        mounts.push(docker::mount_under(dir, TOKENIZER_DIR)?.0);
    }
    let site = Site::container(layout.port, mounts);
    let plan = build(&site)?;
    let mut spec = ContainerSpec::new(image, layout.port);
    spec.args = arguments(&plan, layout.entry);
    spec.mounts = site.mounts().to_vec();
    spec.shm_size = Some(SHM_SIZE);
    spec.gpus = gpus;

    let container = Container::start(docker, &spec, launch).await?;
    let base_url = container.base_url();
    let port = container.host_port();
    let record = Record {
        parameters: container.parameters(&spec),
        image: container.image().reference().to_owned(),
    };
    let handle = super::until_ready(&plan, container.into(), &base_url, port, launch).await?;
    Ok((plan, Started { handle, base_url, port, container: Some(record) }))
}

/// The container's arguments: the plan's command line without the words
/// the image's entry point supplies.
fn arguments(plan: &ServerPlan, entry: &[&str]) -> Vec<String> {
    let command = plan.command();
    let words = std::iter::once(command.program.display().to_string()).chain(command.args);
    words.skip(entry.len()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::EngineKind;

    #[test]
    fn the_entry_point_supplies_the_leading_words() {
        let site = Site::container(8000, Vec::new());
        let mut plan = ServerPlan::new(EngineKind::Vllm, "vllm".into(), &site);
        plan.leading = vec!["serve".into(), "/models/m".into()];
        plan.flag("--port", site.port);
        assert_eq!(arguments(&plan, &["vllm", "serve"]), ["/models/m", "--port", "8000"]);

        let mut plan = ServerPlan::new(EngineKind::Sglang, "python3".into(), &site);
        plan.leading = vec!["-m".into(), "sglang.launch_server".into()];
        let expected = ["python3", "-m", "sglang.launch_server"];
        assert_eq!(arguments(&plan, &[]), expected, "no entry point: the whole command");
    }
}
