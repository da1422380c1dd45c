//! Python-based engines: which interpreter runs them, and the version of an
//! installed package, read from its metadata without importing it (importing
//! vLLM or SGLang loads PyTorch and takes seconds).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// How long a version query may take before it is abandoned.
const VERSION_TIMEOUT: Duration = Duration::from_secs(60);

/// `python3` on `PATH`.
pub fn python3() -> Option<PathBuf> {
    super::llama_cpp::on_path("python3")
}

/// The interpreter a Python console script (`mlx_lm.server`, `vllm`) runs
/// with, from its `#!` line: `#!/usr/bin/env python3` means `python3` on
/// `PATH`. `None` when the file is not a Python script.
pub fn script_interpreter(script: &Path) -> Option<PathBuf> {
    let text = std::fs::read(script).ok()?;
    let first = text.split(|byte| *byte == b'\n').next()?;
    let line = std::str::from_utf8(first).ok()?.strip_prefix("#!")?.trim();
    let mut words = line.split_whitespace();
    let program = words.next()?;
    let interpreter = if Path::new(program).file_name().is_some_and(|name| name == "env") {
        let name = words.find(|word| !word.starts_with('-'))?;
        super::llama_cpp::on_path(name)?
    } else {
        PathBuf::from(program)
    };
    let name = interpreter.file_name()?.to_string_lossy().into_owned();
    name.starts_with("python").then_some(interpreter)
}

/// The installed version of `package` as `interpreter` sees it.
pub fn package_version(interpreter: &Path, package: &str) -> Option<String> {
    let code = format!("import importlib.metadata as m; print(m.version({package:?}))");
    let mut command = Command::new(interpreter);
    command.args(["-c", &code]);
    first_line_within(command, VERSION_TIMEOUT)
}

/// The first non-empty line a command prints on stdout when it succeeds
/// within `limit`; the command is killed when it takes longer.
pub fn first_line_within(mut command: Command, limit: Duration) -> Option<String> {
    command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::null());
    let child = command.spawn().ok()?;
    let pid = child.id();
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = sender.send(child.wait_with_output());
    });
    match receiver.recv_timeout(limit) {
        Ok(Ok(output)) if output.status.success() => {
            let text = String::from_utf8_lossy(&output.stdout).into_owned();
            text.lines().map(str::trim).find(|line| !line.is_empty()).map(str::to_owned)
        }
        Ok(_) => None,
        Err(_) => {
            if let Ok(pid) = i32::try_from(pid) {
                let pid = nix::unistd::Pid::from_raw(pid);
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            }
            None
        }
    }
}

/// Runs a blocking version query off the async runtime's worker threads.
pub async fn off_runtime<T: Send + 'static>(
    query: impl FnOnce() -> Option<T> + Send + 'static,
) -> Option<T> {
    tokio::task::spawn_blocking(query).await.ok().flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_interpreter_comes_from_the_shebang() {
        let dir = tempfile::tempdir().unwrap();
        let direct = dir.path().join("direct");
        std::fs::write(&direct, "#!/opt/venv/bin/python3.12\nprint(1)\n").unwrap();
        assert_eq!(script_interpreter(&direct), Some(PathBuf::from("/opt/venv/bin/python3.12")));
        let shell = dir.path().join("shell");
        std::fs::write(&shell, "#!/bin/sh\nexec foo\n").unwrap();
        assert_eq!(script_interpreter(&shell), None);
        let through_env = dir.path().join("env");
        std::fs::write(&through_env, "#!/usr/bin/env python3\n").unwrap();
        assert_eq!(script_interpreter(&through_env), python3());
    }

    #[test]
    fn a_missing_package_has_no_version() {
        let python = python3().expect("python3 on PATH");
        assert_eq!(package_version(&python, "kitt-no-such-package"), None);
    }
}
