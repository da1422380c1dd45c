//! Campaigns on a clock: cron schedules of campaign files.
//!
//! `kitt campaign schedule` checks a cron expression ([`cron`]) and the
//! campaign file, stores the schedule, and installs one line for it in the
//! user's crontab ([`crontab`], [`install`]). The line runs the hidden
//! `kitt campaign fire ID`, which records the fire and runs the campaign as
//! `kitt campaign run` would ([`fire`]). Where there is no `crontab` command,
//! `kitt campaign scheduler` fires the schedules itself, through the same
//! fire ([`scheduler`]). `cron-status` reads the store and the real crontab
//! (see `report::schedule`).
//!
//! Decisions:
//! - A campaign file's `schedule` key is what `--cron` would say; `--cron`
//!   wins when both are given (with a note), so a file can be scheduled at
//!   another time without editing it.
//! - The schedule id defaults to the file's stem and follows the rules of
//!   campaign ids. Scheduling an id again replaces its store row and its
//!   crontab line.
//! - The crontab line carries what cron's bare environment lacks: absolute
//!   paths to kitt, its home and the log, `PATH` (so the engines are found)
//!   and kitt's location settings as they were when scheduling
//!   ([`CARRIED_ENV`]). Secrets are never written there: a fire gets them
//!   from the campaign file or from variables set in the crontab by hand.
//! - Cron appends a fire's own messages to `<home>/logs/schedules/<id>.log`;
//!   each fire's campaign output goes to a file of its own,
//!   `<home>/logs/schedules/<id>/<time>-<pid>.log`.
//! - One fire per schedule and due minute: cron and a foreground scheduler
//!   firing the same minute run it once.
//! - Fires of one schedule never overlap. A fire that finds an earlier one
//!   still running waits for it and then runs (one waiter at most; a third
//!   fire is skipped). A fire whose schedule's last campaign was left
//!   unfinished (interrupted, or its fire killed) resumes that campaign
//!   instead of starting a new one. Each says which in its log and in
//!   `cron-status`.

pub mod cron;
pub mod crontab;
pub mod fire;
pub mod install;
pub mod scheduler;

use std::fs::{File, OpenOptions, TryLockError};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::KittError;

/// Variables a fire runs with as they were when scheduling: where engines,
/// models and caches are, and how kitt reaches services. Cron starts jobs
/// with almost no environment.
pub const CARRIED_ENV: &[&str] = &[
    "PATH",
    "KITT_MODELS_DIR",
    "KITT_LLAMA_SERVER",
    "KITT_OLLAMA",
    "KITT_VLLM",
    "KITT_SGLANG",
    "KITT_MLX",
    "KITT_DOCKER",
    "KITT_LOG",
    "KITT_OFFLINE",
    "KITT_DOWNLOAD_STALL_SECS",
    "KITT_OLLAMA_LIBRARY_URL",
    "KITT_OLLAMA_REGISTRY_URL",
    "HF_HOME",
    "HF_HUB_CACHE",
    "HF_ENDPOINT",
    "HF_HUB_OFFLINE",
    "OLLAMA_HOST",
    "OLLAMA_MODELS",
];

/// Secrets kitt reads from the environment; never written to a crontab.
pub const SECRET_ENV: &[&str] = &["HF_TOKEN", "KITT_SMTP_PASSWORD", "DEVON_API_KEY"];

/// The carried variables set now, in [`CARRIED_ENV`] order.
pub fn environment_snapshot() -> Vec<(String, String)> {
    CARRIED_ENV
        .iter()
        .filter_map(|name| {
            let value = std::env::var(name).ok()?;
            Some(((*name).to_owned(), value))
        })
        .collect()
}

/// The folder of a schedule's fire logs.
pub fn log_dir(home: &Path, id: &str) -> PathBuf {
    home.join("logs").join("schedules").join(id)
}

/// Where cron (or the foreground scheduler) appends a schedule's fires' own messages.
pub fn fire_messages_log(home: &Path, id: &str) -> PathBuf {
    home.join("logs").join("schedules").join(format!("{id}.log"))
}

/// The lock an running fire of schedule `id` holds.
fn run_lock_path(home: &Path, id: &str) -> PathBuf {
    home.join("locks").join(format!("schedule-{id}.lock"))
}

/// The lock the one fire waiting for schedule `id` holds.
fn wait_lock_path(home: &Path, id: &str) -> PathBuf {
    home.join("locks").join(format!("schedule-{id}.wait.lock"))
}

/// Takes an exclusive lock on `path` without waiting, writing this
/// process's pid and host into it; `None` when another process holds it.
/// The kernel releases it when the file is dropped or the process dies.
fn try_lock(path: &Path) -> std::io::Result<Option<File>> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut file =
        OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => return Ok(None),
        Err(TryLockError::Error(error)) => return Err(error),
    }
    file.set_len(0)?;
    write!(file, "pid {} on {}", std::process::id(), crate::campaign::lock::host_name())?;
    Ok(Some(file))
}

/// Whether some process holds the lock at `path`.
fn is_locked(path: &Path) -> bool {
    let Ok(file) = File::open(path) else { return false };
    matches!(file.try_lock_shared(), Err(TryLockError::WouldBlock))
}

/// SIGINT, SIGTERM and SIGHUP as one stream.
pub(crate) struct Signals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
    hangup: tokio::signal::unix::Signal,
}

impl Signals {
    /// Starts listening; must be called inside a runtime.
    pub(crate) fn new() -> Result<Signals, KittError> {
        use tokio::signal::unix::{SignalKind, signal};
        let listen = |kind| {
            signal(kind).map_err(|error| {
                KittError::Environment(format!("cannot listen for signals: {error}"))
            })
        };
        Ok(Signals {
            interrupt: listen(SignalKind::interrupt())?,
            terminate: listen(SignalKind::terminate())?,
            hangup: listen(SignalKind::hangup())?,
        })
    }

    /// Completes at the next signal, naming it.
    pub(crate) async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.interrupt.recv() => "SIGINT",
            _ = self.terminate.recv() => "SIGTERM",
            _ = self.hangup.recv() => "SIGHUP",
        }
    }
}

/// Sends SIGTERM to a process.
fn terminate(pid: u32) {
    if let Ok(pid) = i32::try_from(pid) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
}

/// A time in the local zone, to the minute, for messages.
pub fn local_minute(timestamp: jiff::Timestamp) -> String {
    timestamp.to_zoned(jiff::tz::TimeZone::system()).strftime("%Y-%m-%d %H:%M %Z").to_string()
}

/// The absolute form of a path (without resolving links), or the path as given.
fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_owned())
}
