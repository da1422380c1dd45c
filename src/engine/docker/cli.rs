//! The `docker` command line behind a trait, and the implementation that runs
//! the real program.
//!
//! Every call is one `docker` invocation with an argument vector (never a
//! shell), a timeout, and its standard error kept for the error message. The
//! calls made while a run is under way are async and cancelled by dropping
//! them (the child is killed); the few made where no runtime is at hand — a
//! `Drop`, an immediate exit, reaping at start-up, `kitt engines list` — block,
//! with a timeout of their own.

use std::fmt;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Output, Stdio};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

use super::container::ContainerRun;
use crate::engine::process::EngineProcess;

/// A pending Docker call.
pub type Pending<'a, T> = Pin<Box<dyn Future<Output = Result<T, DockerError>> + Send + 'a>>;

/// How long quick calls (inspect, rm) may take.
const QUICK: Duration = Duration::from_secs(30);
/// How long the calls made before any run (version, listing orphans) may
/// take: a daemon that hangs must not hold up a native run for long.
const PROBE: Duration = Duration::from_secs(10);
/// How long `docker run -d` may take to create and start a container.
const CREATE: Duration = Duration::from_secs(120);
/// How long an image pull may take: engine images run to several GB.
const PULL: Duration = Duration::from_secs(2 * 3600);

/// What kitt asks of Docker.
pub trait DockerCli: fmt::Debug + Send + Sync {
    /// The daemon's version; an error says why Docker cannot be used.
    fn version(&self) -> Result<String, DockerError>;
    /// A local image's id and digests; `None` when the image is not present.
    fn image<'a>(&'a self, image: &'a str) -> Pending<'a, Option<ImageInfo>>;
    /// Pulls `image`, handing each line Docker prints to `progress`.
    fn pull<'a>(
        &'a self,
        image: &'a str,
        progress: &'a (dyn Fn(&str) + Send + Sync),
    ) -> Pending<'a, ()>;
    /// Creates and starts a detached container; returns its id.
    fn run<'a>(&'a self, run: &'a ContainerRun<'a>) -> Pending<'a, String>;
    /// A container's state; `None` when no such container exists.
    fn state<'a>(&'a self, name: &'a str) -> Pending<'a, Option<ContainerState>>;
    /// Starts following a container's output into `log` (`docker logs --follow`).
    fn follow_logs(&self, name: &str, log: &Path) -> io::Result<EngineProcess>;
    /// Stops a container: SIGTERM, `grace`, then SIGKILL (by the daemon).
    fn stop<'a>(&'a self, name: &'a str, grace: Duration) -> Pending<'a, ()>;
    /// Removes containers, running or not; an absent one is not an error.
    fn remove<'a>(&'a self, names: &'a [String]) -> Pending<'a, ()>;
    /// [`DockerCli::remove`], blocking.
    fn remove_blocking(&self, names: &[String]) -> Result<(), DockerError>;
    /// Every container, running or not, with label `key`, and that label's value.
    fn labelled(&self, key: &str) -> Result<Vec<Labelled>, DockerError>;
}

/// A local image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    /// The image id (`sha256:…`).
    pub id: String,
    /// `repository@sha256:…` for each registry it came from (none for a local build).
    pub repo_digests: Vec<String>,
}

impl ImageInfo {
    /// The most exact name of the image: its first repository digest, else its id.
    pub fn reference(&self) -> &str {
        self.repo_digests.first().unwrap_or(&self.id)
    }
}

/// A container's state as `docker inspect` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerState {
    /// `created`, `running`, `paused`, `restarting`, `removing`, `exited` or `dead`.
    pub status: String,
    /// The exit code of its main process (0 while running).
    pub exit_code: i64,
    /// Its main process on the host (0 when not running).
    pub pid: u32,
}

impl ContainerState {
    /// Whether it has stopped for good.
    pub fn has_ended(&self) -> bool {
        matches!(self.status.as_str(), "exited" | "dead" | "removing")
    }
}

/// A container carrying a label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Labelled {
    /// Its name.
    pub name: String,
    /// The label's value.
    pub value: String,
}

/// Why a Docker call failed.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    /// The `docker` program is not installed.
    #[error(
        "cannot find the `docker` program (looked at {searched}); install Docker or set KITT_DOCKER"
    )]
    NotFound {
        /// Where kitt looked.
        searched: String,
    },
    /// The program could not be started.
    #[error("cannot run `{command}`")]
    Spawn {
        /// The command line.
        command: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The command exited with an error.
    #[error("`{command}` failed ({status}): {stderr}")]
    Failed {
        /// The command line.
        command: String,
        /// Its exit status.
        status: String,
        /// What it printed on standard error.
        stderr: String,
    },
    /// The command took too long and was killed.
    #[error("`{command}` did not finish within {after:?}")]
    TimedOut {
        /// The command line.
        command: String,
        /// The timeout.
        after: Duration,
    },
    /// The command answered something kitt cannot read.
    #[error("`{command}` printed {output:?}, which kitt cannot read")]
    Unreadable {
        /// The command line.
        command: String,
        /// What it printed.
        output: String,
    },
}

/// The real `docker` program.
#[derive(Debug, Clone)]
pub struct DockerProgram {
    program: PathBuf,
}

impl DockerProgram {
    /// `KITT_DOCKER` when set, else `docker` on `PATH`.
    pub fn find() -> Result<DockerProgram, DockerError> {
        if let Some(path) = std::env::var_os("KITT_DOCKER").filter(|value| !value.is_empty()) {
            let path = PathBuf::from(path);
            return crate::engine::llama_cpp::executable(&path)
                .map(|program| DockerProgram { program })
                .ok_or(DockerError::NotFound {
                    searched: format!("KITT_DOCKER={}", path.display()),
                });
        }
        crate::engine::llama_cpp::on_path("docker")
            .map(|program| DockerProgram { program })
            .ok_or(DockerError::NotFound { searched: "PATH".to_owned() })
    }

    /// The program's path.
    pub fn path(&self) -> &Path {
        &self.program
    }

    fn command_line(&self, args: &[String]) -> String {
        std::iter::once("docker".to_owned())
            .chain(args.iter().cloned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Runs `docker ARGS` and returns its standard output.
    async fn output(&self, args: Vec<String>, timeout: Duration) -> Result<String, DockerError> {
        let command = self.command_line(&args);
        let child = tokio::process::Command::new(&self.program)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| DockerError::Spawn { command: command.clone(), source })?;
        let output = tokio::time::timeout(timeout, child.wait_with_output())
            .await
            .map_err(|_| DockerError::TimedOut { command: command.clone(), after: timeout })?
            .map_err(|source| DockerError::Spawn { command: command.clone(), source })?;
        checked(command, output)
    }

    /// Runs `docker ARGS`, blocking, and returns its standard output.
    fn output_blocking(&self, args: Vec<String>, timeout: Duration) -> Result<String, DockerError> {
        let command = self.command_line(&args);
        let spawn_error = |source| DockerError::Spawn { command: command.clone(), source };
        let child = std::process::Command::new(&self.program)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(spawn_error)?;
        let pid = child.id();
        let (sender, receiver) = std::sync::mpsc::channel();
        // The pipes are drained by the waiting thread, so a chatty command
        // never blocks on a full pipe while this thread keeps the clock.
        std::thread::spawn(move || {
            let _ = sender.send(child.wait_with_output());
        });
        match receiver.recv_timeout(timeout) {
            Ok(output) => checked(command.clone(), output.map_err(spawn_error)?),
            Err(_) => {
                if let Ok(pid) = i32::try_from(pid) {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
                Err(DockerError::TimedOut { command, after: timeout })
            }
        }
    }

    async fn pull_image(
        &self,
        image: &str,
        progress: &(dyn Fn(&str) + Send + Sync),
    ) -> Result<(), DockerError> {
        let args = vec!["pull".to_owned(), image.to_owned()];
        let command = self.command_line(&args);
        let mut child = tokio::process::Command::new(&self.program)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| DockerError::Spawn { command: command.clone(), source })?;
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let pulled = async {
            let mut errors = String::new();
            let read_errors = async {
                if let Some(mut stderr) = stderr {
                    let _ = stderr.read_to_string(&mut errors).await;
                }
            };
            let read_progress = async {
                let Some(stdout) = stdout else { return };
                let mut lines = BufReader::new(stdout).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    progress(&line);
                }
            };
            tokio::join!(read_errors, read_progress);
            let status = child.wait().await;
            (status, errors)
        };
        let (status, stderr) = tokio::time::timeout(PULL, pulled)
            .await
            .map_err(|_| DockerError::TimedOut { command: command.clone(), after: PULL })?;
        let status =
            status.map_err(|source| DockerError::Spawn { command: command.clone(), source })?;
        if status.success() {
            Ok(())
        } else {
            Err(DockerError::Failed {
                command,
                status: status.to_string(),
                stderr: trimmed(&stderr),
            })
        }
    }
}

impl DockerCli for DockerProgram {
    fn version(&self) -> Result<String, DockerError> {
        let args = strings(&["version", "--format", "{{.Server.Version}}"]);
        let command = self.command_line(&args);
        let version = self.output_blocking(args, PROBE)?.trim().to_owned();
        if version.is_empty() {
            return Err(DockerError::Unreadable { command, output: version });
        }
        Ok(version)
    }

    fn image<'a>(&'a self, image: &'a str) -> Pending<'a, Option<ImageInfo>> {
        Box::pin(async move {
            let format = "{{.Id}}|{{join .RepoDigests \",\"}}";
            let args = strings(&["image", "inspect", "--format", format, image]);
            let command = self.command_line(&args);
            match self.output(args, QUICK).await {
                Ok(text) => parse_image(&text)
                    .map(Some)
                    .ok_or(DockerError::Unreadable { command, output: text }),
                Err(error) if is_absent(&error) => Ok(None),
                Err(error) => Err(error),
            }
        })
    }

    fn pull<'a>(
        &'a self,
        image: &'a str,
        progress: &'a (dyn Fn(&str) + Send + Sync),
    ) -> Pending<'a, ()> {
        Box::pin(self.pull_image(image, progress))
    }

    fn run<'a>(&'a self, run: &'a ContainerRun<'a>) -> Pending<'a, String> {
        Box::pin(async move {
            let args = run.arguments();
            let command = self.command_line(&args);
            let output = self.output(args, CREATE).await?;
            // `docker run -d` prints the new container's id, after any pull notes.
            let id = output.lines().last().unwrap_or_default().trim().to_owned();
            if id.len() < 12 || !id.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(DockerError::Unreadable { command, output });
            }
            Ok(id)
        })
    }

    fn state<'a>(&'a self, name: &'a str) -> Pending<'a, Option<ContainerState>> {
        Box::pin(async move {
            let format = "{{.State.Status}} {{.State.ExitCode}} {{.State.Pid}}";
            let args = strings(&["inspect", "--type", "container", "--format", format, name]);
            let command = self.command_line(&args);
            match self.output(args, QUICK).await {
                Ok(text) => parse_state(&text)
                    .map(Some)
                    .ok_or(DockerError::Unreadable { command, output: text }),
                Err(error) if is_absent(&error) => Ok(None),
                Err(error) => Err(error),
            }
        })
    }

    fn follow_logs(&self, name: &str, log: &Path) -> io::Result<EngineProcess> {
        let args = strings(&["logs", "--follow", name]);
        EngineProcess::spawn(&self.program, &args, &[], log)
    }

    fn stop<'a>(&'a self, name: &'a str, grace: Duration) -> Pending<'a, ()> {
        Box::pin(async move {
            let args = strings(&["stop", "-t", &grace.as_secs().to_string(), name]);
            match self.output(args, grace + QUICK).await {
                Err(error) if !is_absent(&error) => Err(error),
                _ => Ok(()),
            }
        })
    }

    fn remove<'a>(&'a self, names: &'a [String]) -> Pending<'a, ()> {
        Box::pin(async move {
            if names.is_empty() {
                return Ok(());
            }
            match self.output(remove_args(names), QUICK).await {
                Err(error) if !is_absent(&error) => Err(error),
                _ => Ok(()),
            }
        })
    }

    fn remove_blocking(&self, names: &[String]) -> Result<(), DockerError> {
        if names.is_empty() {
            return Ok(());
        }
        match self.output_blocking(remove_args(names), QUICK) {
            Err(error) if !is_absent(&error) => Err(error),
            _ => Ok(()),
        }
    }

    fn labelled(&self, key: &str) -> Result<Vec<Labelled>, DockerError> {
        let filter = format!("label={key}");
        let format = format!("{{{{.Names}}}}\t{{{{.Label \"{key}\"}}}}");
        let args = strings(&["ps", "--all", "--filter", &filter, "--format", &format]);
        let text = self.output_blocking(args, PROBE)?;
        Ok(text
            .lines()
            .filter_map(|line| {
                let (name, value) = line.split_once('\t')?;
                Some(Labelled { name: name.trim().to_owned(), value: value.trim().to_owned() })
            })
            .filter(|labelled| !labelled.name.is_empty())
            .collect())
    }
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|arg| (*arg).to_owned()).collect()
}

fn remove_args(names: &[String]) -> Vec<String> {
    let mut args = strings(&["rm", "--force"]);
    args.extend(names.iter().cloned());
    args
}

/// Standard output of a successful command, else the error with its stderr.
fn checked(command: String, output: Output) -> Result<String, DockerError> {
    if output.status.success() {
        return Ok(String::from_utf8_lossy(&output.stdout).into_owned());
    }
    Err(DockerError::Failed {
        command,
        status: output.status.to_string(),
        stderr: trimmed(&String::from_utf8_lossy(&output.stderr)),
    })
}

/// The last few non-empty lines of an error stream.
fn trimmed(stderr: &str) -> String {
    let lines: Vec<&str> = stderr.lines().map(str::trim).filter(|line| !line.is_empty()).collect();
    lines[lines.len().saturating_sub(5)..].join("\n")
}

/// Whether every error line says the object does not exist, which for
/// inspect, stop and remove means there is nothing to do.
fn is_absent(error: &DockerError) -> bool {
    let DockerError::Failed { stderr, .. } = error else { return false };
    let lines: Vec<String> = stderr.lines().map(str::to_ascii_lowercase).collect();
    !lines.is_empty()
        && lines.iter().all(|line| {
            line.contains("no such container")
                || line.contains("no such object")
                || line.contains("no such image")
        })
}

/// `ID|DIGEST,DIGEST` as printed by kitt's `docker image inspect` template.
fn parse_image(text: &str) -> Option<ImageInfo> {
    let (id, digests) = text.trim().split_once('|')?;
    if !id.starts_with("sha256:") {
        return None;
    }
    let repo_digests =
        digests.split(',').map(str::trim).filter(|d| !d.is_empty()).map(str::to_owned).collect();
    Some(ImageInfo { id: id.to_owned(), repo_digests })
}

/// `STATUS EXIT_CODE PID` as printed by kitt's `docker inspect` template.
fn parse_state(text: &str) -> Option<ContainerState> {
    let mut fields = text.split_whitespace();
    let status = fields.next()?.to_owned();
    let exit_code = fields.next()?.parse().ok()?;
    let pid = fields.next()?.parse().ok()?;
    Some(ContainerState { status, exit_code, pid })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_inspect_templates() {
        let image = parse_image("sha256:ab12|ghcr.io/x/y@sha256:cd34,y@sha256:ef56\n").unwrap();
        assert_eq!(image.reference(), "ghcr.io/x/y@sha256:cd34");
        let local = parse_image("sha256:ab12|\n").unwrap();
        assert_eq!(local.reference(), "sha256:ab12", "a local build has only its id");
        assert_eq!(parse_image("[]"), None);

        let state = parse_state("exited 137 0\n").unwrap();
        assert!(state.has_ended());
        assert_eq!(state.exit_code, 137);
        assert!(!parse_state("running 0 4242").unwrap().has_ended());
        assert_eq!(parse_state("running"), None);
    }

    #[test]
    fn slow_commands_time_out_and_failures_keep_their_stderr() {
        let shell = DockerProgram { program: PathBuf::from("/bin/sh") };
        let slow = shell.output_blocking(strings(&["-c", "sleep 5"]), Duration::from_millis(100));
        assert!(matches!(slow, Err(DockerError::TimedOut { .. })), "{slow:?}");

        let failing = strings(&["-c", "echo out; echo 'Error: no luck' >&2; exit 3"]);
        let error = shell.output_blocking(failing, QUICK).unwrap_err();
        assert_eq!(
            error.to_string(),
            "`docker -c echo out; echo 'Error: no luck' >&2; exit 3` failed (exit status: 3): Error: no luck"
        );
    }

    #[tokio::test]
    async fn dropping_an_async_call_kills_the_command() {
        let shell = DockerProgram { program: PathBuf::from("/bin/sh") };
        let marker = tempfile::tempdir().unwrap();
        let pid_file = marker.path().join("pid");
        let script = format!("echo $$ > {}; exec sleep 30", pid_file.display());
        let call = shell.output(strings(&["-c", &script]), QUICK);
        let _ = tokio::time::timeout(Duration::from_secs(1), call).await;
        let pid = std::fs::read_to_string(&pid_file).unwrap().trim().to_owned();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        assert!(stat.is_empty() || stat.contains(") Z "), "still running: {stat}");
    }

    #[test]
    fn only_no_such_errors_count_as_absent() {
        let failed = |stderr: &str| DockerError::Failed {
            command: "docker rm --force a b".into(),
            status: "exit status: 1".into(),
            stderr: stderr.into(),
        };
        assert!(is_absent(&failed("Error response from daemon: No such container: a")));
        assert!(is_absent(&failed("Error: No such object: a")));
        assert!(!is_absent(&failed("Error: No such container: a\npermission denied")));
        assert!(!is_absent(&failed("")));
    }
}
