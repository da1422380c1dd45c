//! Devon's command line: the `devon` program found on the `PATH` once per
//! session and then always called by that absolute path (a scheduled
//! campaign's `PATH` is not the shell's).
//!
//! Each call runs in a process group of its own, with standard input closed
//! (`-y` answers Devon's questions), `PYTHONUNBUFFERED=1` so its lines arrive
//! as it prints them, and `COLUMNS=4096` so Devon's console does not wrap a
//! long path across lines. The whole group is killed when the call's future
//! is dropped (Ctrl-C), when the time limit passes, and by kitt's immediate
//! exit on a second Ctrl-C. A failure carries the end of the program's error
//! output (else of its output).

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;
use tokio::sync::mpsc::UnboundedSender;

use super::{
    DOWNLOAD_TIMEOUT, DevonError, DevonModel, DevonRequest, ListedModel, QUICK_TIMEOUT, Removal,
    find_model, include_patterns, tail,
};

/// Characters of output a failure message keeps.
const TAIL_CHARS: usize = 800;

/// Bytes of each output stream kept in memory (the end of it).
const KEEP_BYTES: usize = 64 * 1024;

/// The `devon` program.
#[derive(Debug, Clone)]
pub struct CliDevon {
    program: PathBuf,
}

/// What one call printed, and how it ended.
struct Ran {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Ran {
    /// The end of the error output, else of the output.
    fn tail(&self) -> String {
        let stderr = tail(&self.stderr, TAIL_CHARS);
        if stderr.is_empty() { tail(&self.stdout, TAIL_CHARS) } else { stderr }
    }
}

impl CliDevon {
    pub(super) fn new(program: PathBuf) -> CliDevon {
        CliDevon { program }
    }

    /// The program's absolute path.
    pub fn program(&self) -> &Path {
        &self.program
    }

    pub(super) async fn stored(&self, repo: &str) -> Result<Option<DevonModel>, DevonError> {
        // A directory of our own (created new, owner-only), so no file another
        // user put in the temporary directory can stand in for Devon's answer.
        let dir = private_dir().map_err(|error| DevonError::Spawn {
            program: format!(
                "{} (no private temporary directory for its export)",
                self.program.display()
            ),
            source: std::sync::Arc::new(error),
        })?;
        let file = dir.join("export.json");
        let args = ["export", "--format", "json", "-o"].map(str::to_owned);
        let mut args = args.to_vec();
        args.push(file.display().to_string());
        let ran = self.run(&args, QUICK_TIMEOUT, None).await;
        let text = std::fs::read_to_string(&file);
        let _ = std::fs::remove_dir_all(&dir);
        let ran = ran?;
        if !ran.status.success() {
            return Err(failed(&args, &ran));
        }
        // Devon writes no file when it holds no model.
        let Ok(text) = text else { return Ok(None) };
        let models: Vec<ListedModel> =
            serde_json::from_str(&text).map_err(|error| DevonError::BadResponse {
                request: command_line(&args),
                detail: format!("{error}: {}", crate::measure::ingest::excerpt(text.as_bytes())),
            })?;
        Ok(find_model(&models, repo))
    }

    pub(super) async fn download(
        &self,
        asked: &DevonRequest,
        lines: UnboundedSender<String>,
    ) -> Result<DevonModel, DevonError> {
        let mut args = vec!["download".to_owned(), asked.repo.clone(), "-y".to_owned()];
        if asked.force {
            args.push("--force".to_owned());
        }
        for pattern in include_patterns(&asked.files) {
            args.push("--include".to_owned());
            args.push(pattern);
        }
        let ran = self.run(&args, DOWNLOAD_TIMEOUT, Some(&lines)).await?;
        if !ran.status.success() {
            return Err(failed(&args, &ran));
        }
        match self.stored(&asked.repo).await {
            Ok(Some(model)) => return Ok(model),
            Ok(None) => {}
            Err(error) => tracing::warn!("cannot read Devon's model list: {error}"),
        }
        match printed_path(&ran.stdout) {
            Some(path) => Ok(DevonModel { path, files: Vec::new() }),
            None => Err(DevonError::Unlocated {
                command: command_line(&args),
                repo: asked.repo.clone(),
                tail: ran.tail(),
            }),
        }
    }

    pub(super) async fn remove(&self, repo: &str) -> Result<Removal, DevonError> {
        let args = ["remove", repo, "-y"].map(str::to_owned);
        let ran = self.run(&args, QUICK_TIMEOUT, None).await?;
        if ran.status.success() {
            return Ok(Removal::Removed);
        }
        let said = format!("{}\n{}", ran.stdout, ran.stderr).to_ascii_lowercase();
        if said.contains("not found") {
            return Ok(Removal::NotHeld);
        }
        Err(failed(&args, &ran))
    }

    /// Runs the program with `args`, sending each line it prints to `lines`.
    async fn run(
        &self,
        args: &[String],
        timeout: Duration,
        lines: Option<&UnboundedSender<String>>,
    ) -> Result<Ran, DevonError> {
        let mut command = Command::new(&self.program);
        command
            .args(args)
            .env("PYTHONUNBUFFERED", "1")
            .env("COLUMNS", "4096")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let mut child = command.spawn().map_err(|source| DevonError::Spawn {
            program: self.program.display().to_string(),
            source: Arc::new(source),
        })?;
        let group = child.id().map(Group::track);
        let stdout = child.stdout.take().map(|out| tokio::spawn(collect(out, lines.cloned())));
        let stderr = child.stderr.take().map(|err| tokio::spawn(collect(err, lines.cloned())));

        let waited = tokio::time::timeout(timeout, child.wait()).await;
        // Whatever the program left running goes with it.
        drop(group);
        let status = match waited {
            Ok(Ok(status)) => status,
            Ok(Err(source)) => {
                return Err(DevonError::Spawn {
                    program: self.program.display().to_string(),
                    source: Arc::new(source),
                });
            }
            Err(_) => {
                return Err(DevonError::TimedOut { request: command_line(args), after: timeout });
            }
        };
        let joined = |task: Option<tokio::task::JoinHandle<String>>| async move {
            match task {
                Some(task) => task.await.unwrap_or_default(),
                None => String::new(),
            }
        };
        Ok(Ran { status, stdout: joined(stdout).await, stderr: joined(stderr).await })
    }
}

/// A program's process group, killed when dropped and known to kitt's
/// immediate exit meanwhile.
struct Group(u32);

impl Group {
    fn track(pgid: u32) -> Group {
        crate::engine::process::track_group(pgid, true);
        Group(pgid)
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        if let Ok(pgid) = i32::try_from(self.0) {
            let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
        }
        crate::engine::process::track_group(self.0, false);
    }
}

/// Reads a stream to its end, sending each line (split at `\n` or `\r`, as
/// progress bars redraw) to `lines`; returns the last [`KEEP_BYTES`] of it.
async fn collect(
    mut stream: impl AsyncRead + Unpin,
    lines: Option<UnboundedSender<String>>,
) -> String {
    let mut kept: Vec<u8> = Vec::new();
    let mut line: Vec<u8> = Vec::new();
    let mut buffer = [0u8; 8192];
    loop {
        let read = match stream.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(read) => read,
        };
        let chunk = &buffer[..read];
        kept.extend_from_slice(chunk);
        if kept.len() > 2 * KEEP_BYTES {
            kept.drain(..kept.len() - KEEP_BYTES);
        }
        for &byte in chunk {
            if byte == b'\n' || byte == b'\r' {
                send_line(&mut line, lines.as_ref());
            } else {
                line.push(byte);
            }
        }
    }
    send_line(&mut line, lines.as_ref());
    if kept.len() > KEEP_BYTES {
        kept.drain(..kept.len() - KEEP_BYTES);
    }
    String::from_utf8_lossy(&kept).into_owned()
}

fn send_line(line: &mut Vec<u8>, lines: Option<&UnboundedSender<String>>) {
    let text = String::from_utf8_lossy(line).trim().to_owned();
    line.clear();
    if let Some(lines) = lines
        && !text.is_empty()
    {
        let _ = lines.send(text);
    }
}

/// The directory of the last `Path: …` line Devon printed.
fn printed_path(stdout: &str) -> Option<PathBuf> {
    stdout
        .lines()
        .rev()
        .find_map(|line| line.trim().strip_prefix("Path:"))
        .map(str::trim)
        .filter(|path| !path.is_empty())
        .map(PathBuf::from)
}

/// `devon ARGS` as a message shows it.
fn command_line(args: &[String]) -> String {
    let mut text = "devon".to_owned();
    for arg in args {
        text.push(' ');
        text.push_str(arg);
    }
    text
}

fn failed(args: &[String], ran: &Ran) -> DevonError {
    let how = match ran.status.code() {
        Some(code) => format!("exited with code {code}"),
        None => {
            use std::os::unix::process::ExitStatusExt;
            match ran.status.signal() {
                Some(signal) => format!("was killed by signal {signal}"),
                None => "failed".to_owned(),
            }
        }
    };
    DevonError::Failed { command: command_line(args), how, tail: ran.tail() }
}

/// A new directory under the temporary directory, readable by this user only.
fn private_dir() -> std::io::Result<std::path::PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    static NEXT: AtomicU64 = AtomicU64::new(1);
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.subsec_nanos());
        let name = format!("kitt-devon-{}-{n}-{nanos}", std::process::id());
        let dir = std::env::temp_dir().join(name);
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return Ok(dir),
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(error) => return Err(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_printed_path_is_the_last_one() {
        let out = "Using source: huggingface\nAlready downloaded: a/b\nPath: /old\n\
                   Download complete!\nPath: /data/models/huggingface/a/b\n";
        assert_eq!(printed_path(out), Some(PathBuf::from("/data/models/huggingface/a/b")));
        assert_eq!(printed_path("Download failed: boom\n"), None);
    }

    #[tokio::test]
    async fn lines_split_at_carriage_returns_and_the_end_is_kept() {
        let (send, mut received) = tokio::sync::mpsc::unbounded_channel();
        let input: &[u8] = b"one\r 10%\r 20%\ntwo\n\nlast";
        let kept = collect(input, Some(send)).await;
        let mut lines = Vec::new();
        while let Ok(line) = received.try_recv() {
            lines.push(line);
        }
        assert_eq!(lines, ["one", "10%", "20%", "two", "last"]);
        assert_eq!(kept, "one\r 10%\r 20%\ntwo\n\nlast");
    }

    #[tokio::test]
    async fn a_failing_program_reports_its_error_output() {
        let dir = std::env::temp_dir().join(format!("kitt-devon-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let program = dir.join("devon");
        std::fs::write(
            &program,
            "#!/bin/sh\necho working\necho 'Error: no such repo' >&2\nexit 3\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
        let devon = CliDevon::new(program);
        let error = devon.remove("org/m").await.unwrap_err();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(
            error.to_string(),
            "`devon remove org/m -y` exited with code 3; last log lines:\nError: no such repo"
        );
    }
}
