//! One engine container's life: the image checked (pulled when missing, with
//! progress), the container created on a free loopback port, its output
//! followed into the run's engine log, its state watched, and at the end
//! stopped and removed — by [`Container::stop`], or, when the run leaves any
//! other way, by dropping the handle.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::cli::{DockerCli, DockerError, ImageInfo};
use super::mounts::Mount;
use super::owners;
use super::pull::PullProgress;
use crate::config::Gpus;
use crate::engine::process::{EngineProcess, STOP_GRACE};
use crate::engine::{EngineError, Launch, port};

/// What an engine asks Docker to run.
#[derive(Debug, Clone)]
pub struct ContainerSpec {
    /// The image, `repository[:tag]`.
    pub image: String,
    /// The port the server listens on inside the container.
    pub container_port: u16,
    /// The command's arguments after the image's entry point.
    pub args: Vec<String>,
    /// Environment variables.
    pub env: Vec<(String, String)>,
    /// Bind mounts (the model, read-only).
    pub mounts: Vec<Mount>,
    /// Named volumes, `(name, path inside)`, which Docker creates on first use
    /// and keeps after the container is gone (Ollama's model store).
    pub volumes: Vec<(String, String)>,
    /// The size of `/dev/shm`, for servers whose processes share tensors
    /// through it (Docker's default is 64 MB).
    pub shm_size: Option<&'static str>,
    /// The GPUs the container gets.
    pub gpus: Gpus,
}

impl ContainerSpec {
    /// A spec of `image` serving on `container_port`, with no arguments,
    /// environment, mounts or GPUs yet.
    pub fn new(image: String, container_port: u16) -> Self {
        ContainerSpec {
            image,
            container_port,
            args: Vec::new(),
            env: Vec::new(),
            mounts: Vec::new(),
            volumes: Vec::new(),
            shm_size: None,
            gpus: Gpus::None,
        }
    }

    /// `--volume` values: the bind mounts, then the named volumes.
    fn volume_flags(&self) -> Vec<String> {
        let named = self.volumes.iter().map(|(name, inside)| format!("{name}:{inside}"));
        self.mounts.iter().map(Mount::volume).chain(named).collect()
    }
}

/// One `docker run -d`, as [`DockerCli::run`] takes it.
#[derive(Debug)]
pub struct ContainerRun<'a> {
    /// The container's name.
    pub name: &'a str,
    /// Its labels.
    pub labels: &'a [(String, String)],
    /// The loopback port on the host that reaches the container's port.
    pub host_port: u16,
    /// The rest.
    pub spec: &'a ContainerSpec,
}

impl ContainerRun<'_> {
    /// The arguments of `docker`: `run --detach --name … IMAGE ARGS…`.
    pub fn arguments(&self) -> Vec<String> {
        let spec = self.spec;
        let mut args: Vec<String> =
            ["run", "--detach", "--name", self.name].map(str::to_owned).into();
        for (key, value) in self.labels {
            args.extend(["--label".to_owned(), format!("{key}={value}")]);
        }
        let publish = format!("127.0.0.1:{}:{}", self.host_port, spec.container_port);
        args.extend(["--publish".to_owned(), publish]);
        for volume in spec.volume_flags() {
            args.extend(["--volume".to_owned(), volume]);
        }
        if let Some(size) = spec.shm_size {
            args.extend(["--shm-size".to_owned(), size.to_owned()]);
        }
        for (key, value) in &spec.env {
            args.extend(["--env".to_owned(), format!("{key}={value}")]);
        }
        if let Some(gpus) = gpus_flag(&spec.gpus) {
            args.extend(["--gpus".to_owned(), gpus]);
        }
        args.push(spec.image.clone());
        args.extend(spec.args.iter().cloned());
        args
    }
}

/// The value of `docker run --gpus`, or `None` for no GPU.
pub fn gpus_flag(gpus: &Gpus) -> Option<String> {
    match gpus {
        Gpus::None => None,
        Gpus::All => Some("all".to_owned()),
        Gpus::Count(count) => Some(count.to_string()),
        Gpus::Devices(devices) if devices.len() == 1 => Some(format!("device={}", devices[0])),
        // Docker reads the value as CSV, so a list of devices must be one quoted field.
        Gpus::Devices(devices) => Some(format!("\"device={}\"", devices.join(","))),
    }
}

/// A container kitt created for a run.
#[derive(Debug)]
pub struct Container {
    docker: Arc<dyn DockerCli>,
    name: String,
    image: ImageInfo,
    host_port: u16,
    log_path: PathBuf,
    logs: Option<EngineProcess>,
    pid: Option<u32>,
    inspected: Option<Instant>,
    removed: bool,
}

/// How often a running container's state is asked of Docker while its
/// output is still being followed: `docker logs --follow` ends when the
/// container does, so its end is noticed at once without asking.
const INSPECT_EVERY: Duration = Duration::from_secs(1);

impl Container {
    /// Makes sure the image is here, then creates and starts the container
    /// for `launch` and follows its output into `launch.log_path`. The server
    /// inside may still be loading.
    pub async fn start(
        docker: Arc<dyn DockerCli>,
        spec: &ContainerSpec,
        launch: &Launch<'_>,
    ) -> Result<Container, EngineError> {
        let image = ensure_image(docker.as_ref(), &spec.image, launch).await?;
        let name = owners::container_name(launch.campaign, launch.run_id);
        let host_port = port::free_port().map_err(EngineError::Io)?;
        owners::register(&docker, &name);
        // From here on, dropping `container` removes whatever Docker created.
        let mut container = Container {
            docker,
            name,
            image,
            host_port,
            log_path: launch.log_path.clone(),
            logs: None,
            pid: None,
            inspected: None,
            removed: false,
        };
        let labels = owners::labels(launch.campaign, launch.run_id);
        let run = ContainerRun { name: &container.name, labels: &labels, host_port, spec };
        tracing::info!(name = %container.name, image = %spec.image, host_port, "starting container");
        container.docker.run(&run).await?;
        let logs = container.docker.follow_logs(&container.name, &container.log_path);
        container.logs = Some(logs.map_err(EngineError::Io)?);
        if let Ok(Some(state)) = container.docker.state(&container.name).await {
            container.pid = Some(state.pid).filter(|pid| *pid > 0);
        }
        Ok(container)
    }

    /// `http://127.0.0.1:<host port>`.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.host_port)
    }

    /// The host port.
    pub fn host_port(&self) -> u16 {
        self.host_port
    }

    /// The container's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The image it runs.
    pub fn image(&self) -> &ImageInfo {
        &self.image
    }

    /// What to record about the container on the result: image and digest,
    /// GPUs and mounts.
    pub fn parameters(&self, spec: &ContainerSpec) -> BTreeMap<String, String> {
        let mounts = spec.volume_flags();
        BTreeMap::from([
            ("mode".to_owned(), "docker".to_owned()),
            ("image".to_owned(), spec.image.clone()),
            ("image_digest".to_owned(), self.image.reference().to_owned()),
            ("gpus".to_owned(), spec.gpus.to_string()),
            ("mounts".to_owned(), mounts.join(" ")),
        ])
    }

    /// The host process group of the container's main process, when this
    /// machine can see it (not with a remote daemon).
    pub fn process_group(&self) -> Option<u32> {
        self.pid.filter(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists())
    }

    /// How the container ended, if it has; `None` while it runs (or while
    /// Docker does not answer: the caller's deadline covers that).
    pub async fn exited(&mut self) -> Option<String> {
        let following = self.logs.as_mut().is_some_and(|logs| logs.exited().is_none());
        if following && self.inspected.is_some_and(|at| at.elapsed() < INSPECT_EVERY) {
            return None;
        }
        self.inspected = Some(Instant::now());
        let ended = match self.docker.state(&self.name).await {
            Ok(Some(state)) if !state.has_ended() => return None,
            Ok(Some(state)) => format!("container {}, exit code {}", state.status, state.exit_code),
            Ok(None) => "the container is gone".to_owned(),
            Err(error) => {
                tracing::warn!(container = %self.name, "cannot read the container's state: {error}");
                return None;
            }
        };
        self.settle_logs().await;
        Some(ended)
    }

    /// Waits (briefly) until `docker logs --follow` has copied the last
    /// lines of a container that ended, so the log tail is complete.
    async fn settle_logs(&mut self) {
        let Some(logs) = self.logs.as_mut() else { return };
        let deadline = std::time::Instant::now() + Duration::from_secs(3);
        while logs.exited().is_none() && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The last `lines` lines of the container's output.
    pub fn log_tail(&self, lines: usize) -> String {
        crate::engine::process::log_tail(&self.log_path, lines)
    }

    /// `docker stop` (SIGTERM, 10 s, SIGKILL; Docker returns as soon as the
    /// server has exited), then `docker rm --force`.
    pub async fn stop(&mut self) -> Result<(), EngineError> {
        if self.removed {
            return Ok(());
        }
        if let Err(error) = self.docker.stop(&self.name, STOP_GRACE).await {
            tracing::warn!(container = %self.name, "cannot stop the container, removing it: {error}");
        }
        self.docker.remove(std::slice::from_ref(&self.name)).await?;
        self.removed = true;
        owners::unregister(&self.name);
        if let Some(logs) = self.logs.as_mut() {
            logs.stop(Duration::from_secs(2)).await.map_err(EngineError::Io)?;
        }
        Ok(())
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        if self.removed {
            return;
        }
        // Blocking, and best effort: there is no runtime to wait on in a drop.
        if let Err(error) = self.docker.remove_blocking(std::slice::from_ref(&self.name)) {
            eprintln!("warning: cannot remove container {}: {error}", self.name);
        }
        owners::unregister(&self.name);
    }
}

/// The image's details, pulling it first when it is not here; progress goes
/// to the launch's progress channel.
async fn ensure_image(
    docker: &dyn DockerCli,
    image: &str,
    launch: &Launch<'_>,
) -> Result<ImageInfo, EngineError> {
    if let Some(found) = docker.image(image).await? {
        return Ok(found);
    }
    let report = |text: String| {
        tracing::info!("{text}");
        {
            launch.progress.report(text);
        }
    };
    let tracker = Mutex::new(PullProgress::new(image));
    if let Ok(tracker) = tracker.lock() {
        report(tracker.started());
    }
    let on_line = |line: &str| {
        let news = tracker.lock().ok().and_then(|mut tracker| tracker.line(line));
        if let Some(text) = news {
            report(text);
        }
    };
    docker.pull(image, &on_line).await?;
    let pulled = docker.image(image).await?;
    pulled.ok_or_else(|| {
        EngineError::Docker(DockerError::Unreadable {
            command: format!("docker image inspect {image}"),
            output: "nothing, right after a successful pull".to_owned(),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(gpus: Gpus) -> ContainerSpec {
        ContainerSpec {
            image: "ghcr.io/ggml-org/llama.cpp:server".into(),
            container_port: 8080,
            args: vec!["--model".into(), "/models/m.gguf".into()],
            env: vec![("A".into(), "1".into())],
            mounts: vec![Mount {
                host: "/data/m".into(),
                container: "/models".into(),
                read_only: true,
            }],
            volumes: vec![("kitt-store".into(), "/store".into())],
            shm_size: Some("16g"),
            gpus,
        }
    }

    #[test]
    fn docker_run_arguments_name_label_publish_mount_and_pass_the_command() {
        let labels = [("kitt.run".to_owned(), "r1".to_owned())];
        let spec = spec(Gpus::Devices(vec!["0".into(), "1".into()]));
        let run =
            ContainerRun { name: "kitt-run-r1", labels: &labels, host_port: 40001, spec: &spec };
        assert_eq!(
            run.arguments(),
            [
                "run",
                "--detach",
                "--name",
                "kitt-run-r1",
                "--label",
                "kitt.run=r1",
                "--publish",
                "127.0.0.1:40001:8080",
                "--volume",
                "/data/m:/models:ro",
                "--volume",
                "kitt-store:/store",
                "--shm-size",
                "16g",
                "--env",
                "A=1",
                "--gpus",
                "\"device=0,1\"",
                "ghcr.io/ggml-org/llama.cpp:server",
                "--model",
                "/models/m.gguf",
            ]
        );
    }

    #[test]
    fn gpu_requests_become_docker_values() {
        assert_eq!(gpus_flag(&Gpus::None), None);
        assert_eq!(gpus_flag(&Gpus::All).as_deref(), Some("all"));
        assert_eq!(gpus_flag(&Gpus::Count(2)).as_deref(), Some("2"));
        assert_eq!(
            gpus_flag(&Gpus::Devices(vec!["GPU-ab".into()])).as_deref(),
            Some("device=GPU-ab")
        );
    }
}
