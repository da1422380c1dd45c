//! Desktop notifications through the platform's notifier: `notify-send` on
//! Linux and the other freedesktop systems, `osascript` on macOS.
//!
//! The title and body are passed as separate program arguments and never
//! through a shell, so quotes, `$(...)` and newlines in them are shown, not
//! interpreted. A machine without a notifier, a display or a session bus is
//! common (servers, CI); that is a failure the caller logs and tolerates.

use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::process::{Child, Command};

use super::{Message, truncated};

/// How long the notifier may take before it is killed.
const TIMEOUT: Duration = Duration::from_secs(5);

/// Longest body shown; notification bubbles cut long text anyway, and unevenly.
const BODY_CHARS: usize = 200;

/// Longest piece of the notifier's error output quoted in a failure.
const STDERR_CHARS: usize = 200;

/// The desktop channel.
pub(super) struct Desktop {
    /// A program run as `program TITLE BODY` instead of the platform's notifier.
    program_override: Option<PathBuf>,
    timeout: Duration,
}

impl Desktop {
    /// The platform's notifier, or `program_override` when given.
    pub(super) fn new(program_override: Option<PathBuf>) -> Self {
        Self { program_override, timeout: TIMEOUT }
    }

    /// Shows `message`; an error names the program and what went wrong.
    pub(super) async fn send(&self, message: &Message) -> Result<(), String> {
        let title = argument(&message.title);
        let body = argument(&truncated(&message.body, BODY_CHARS));
        let mut command = self.command(&title, &body);
        let program = command.as_std().get_program().to_string_lossy().into_owned();

        // Nothing is read from stdout; stderr explains a failure.
        command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
        // A caller that stops waiting must not leave the notifier running.
        command.kill_on_drop(true);
        // "Text file busy": the program was just written and another thread's
        // fork still holds it open for an instant; try again briefly.
        let mut attempts = 0;
        let child = loop {
            match command.spawn() {
                Err(error) if error.raw_os_error() == Some(TEXT_FILE_BUSY) && attempts < 20 => {
                    attempts += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
                spawned => break spawned.map_err(|error| spawn_failure(&program, &error))?,
            }
        };
        self.wait(child, &program).await
    }

    /// The command showing `title` and `body`, not yet started.
    fn command(&self, title: &str, body: &str) -> Command {
        if let Some(program) = &self.program_override {
            return with_text(Command::new(program), title, body);
        }
        platform_command(title, body)
    }

    /// Waits for the notifier within the timeout, killing it when the time is up.
    async fn wait(&self, mut child: Child, program: &str) -> Result<(), String> {
        let mut stderr_pipe = child.stderr.take();
        let finished = tokio::time::timeout(self.timeout, async {
            let mut stderr = Vec::new();
            if let Some(pipe) = stderr_pipe.as_mut() {
                // An unreadable pipe only costs the explanation, not the outcome.
                let _ = pipe.read_to_end(&mut stderr).await;
            }
            (child.wait().await, stderr)
        })
        .await;

        match finished {
            Ok((Ok(status), _)) if status.success() => Ok(()),
            Ok((Ok(status), stderr)) => Err(exit_failure(program, status, &stderr)),
            Ok((Err(error), _)) => Err(format!("could not wait for `{program}`: {error}")),
            Err(_) => {
                // The process may have exited in the meantime; then there is nothing to kill.
                let _ = child.kill().await;
                let limit = self.timeout.as_secs_f64();
                Err(format!("`{program}` did not finish within {limit:.0} s and was killed"))
            }
        }
    }
}

/// `notify-send TITLE BODY`.
#[cfg(not(target_os = "macos"))]
fn platform_command(title: &str, body: &str) -> Command {
    with_text(Command::new("notify-send"), title, body)
}

/// `osascript` with a script that reads the title and body from its arguments,
/// so neither is ever part of the AppleScript source.
#[cfg(target_os = "macos")]
fn platform_command(title: &str, body: &str) -> Command {
    let mut command = Command::new("osascript");
    for line in [
        "on run argv",
        "display notification (item 2 of argv) with title (item 1 of argv)",
        "end run",
    ] {
        command.arg("-e").arg(line);
    }
    with_text(command, title, body)
}

/// Appends the title and body as the last two arguments.
fn with_text(mut command: Command, title: &str, body: &str) -> Command {
    command.arg(title).arg(body);
    command
}

/// Text made safe to pass as a positional argument.
///
/// Both notifiers parse options anywhere on the command line, so a text that
/// starts with `-` would be read as an option (and usually rejected). A
/// leading space keeps it text and is invisible in a notification bubble.
fn argument(text: &str) -> String {
    if text.starts_with('-') { format!(" {text}") } else { text.to_owned() }
}

/// Why the notifier could not be started.
/// `ETXTBSY` on Linux and macOS.
const TEXT_FILE_BUSY: i32 = 26;

fn spawn_failure(program: &str, error: &std::io::Error) -> String {
    let hint = if error.kind() == std::io::ErrorKind::NotFound {
        "; install it (`notify-send` comes with libnotify) or set `notifications.desktop: false`"
    } else {
        ""
    };
    format!("could not run `{program}`: {error}{hint}")
}

/// Why the notifier's exit counts as a failure, with the start of what it printed.
fn exit_failure(program: &str, status: ExitStatus, stderr: &[u8]) -> String {
    let how = match status.code() {
        Some(code) => format!("exited with code {code}"),
        None => "was killed by a signal".to_owned(),
    };
    let text = String::from_utf8_lossy(stderr);
    let first_line = text.lines().map(str::trim).find(|line| !line.is_empty());
    match first_line {
        Some(line) => format!("`{program}` {how}: {}", truncated(line, STDERR_CHARS)),
        None => format!("`{program}` {how}"),
    }
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::time::Instant;

    use super::*;

    fn script(dir: &tempfile::TempDir, body: &str) -> PathBuf {
        let path = dir.path().join("notifier");
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write the script");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
            .expect("make the script executable");
        path
    }

    #[test]
    fn only_a_leading_dash_is_guarded() {
        assert_eq!(argument("-u critical"), " -u critical");
        assert_eq!(argument("a - b"), "a - b");
    }

    #[tokio::test]
    async fn a_notifier_that_hangs_is_killed_at_the_timeout() {
        let dir = tempfile::tempdir().expect("temp dir");
        let program = script(&dir, "exec sleep 30");
        let desktop =
            Desktop { program_override: Some(program), timeout: Duration::from_millis(300) };

        let started = Instant::now();
        let reason = desktop.send(&Message::new("t", "b")).await.expect_err("it hangs");

        assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
        assert!(reason.contains("did not finish") && reason.contains("killed"), "{reason}");
    }

    #[tokio::test]
    async fn a_failing_notifier_is_explained_by_its_first_error_line() {
        let dir = tempfile::tempdir().expect("temp dir");
        let program =
            script(&dir, "echo 'Cannot autolaunch D-Bus without X11 $DISPLAY' >&2\nexit 1");

        let reason = Desktop::new(Some(program)).send(&Message::new("t", "b")).await.unwrap_err();

        assert!(
            reason.ends_with("exited with code 1: Cannot autolaunch D-Bus without X11 $DISPLAY")
        );
    }
}
