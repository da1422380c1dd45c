//! Engine processes: started in their own process group with output captured
//! to a log file, stopped with SIGTERM, a grace period, then SIGKILL of the
//! whole group. Dropping a [`EngineProcess`] kills the group, so no engine
//! outlives the run that started it, whatever path the run leaves by.

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

/// Process groups of engines currently running, so that an immediate exit
/// (a second Ctrl-C) can still kill them.
static LIVE_GROUPS: Mutex<BTreeSet<u32>> = Mutex::new(BTreeSet::new());

/// Kills every engine process group still registered and removes this
/// process's containers; for immediate exits.
pub fn kill_all_engines() {
    let groups = LIVE_GROUPS.lock().map(|groups| groups.clone()).unwrap_or_default();
    for pgid in groups {
        if let Ok(pgid) = i32::try_from(pgid) {
            let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
        }
    }
    let mine = format!("{}:", owner_tag());
    kill_tagged(|tag| tag.starts_with(&mine));
    super::docker::remove_own_containers();
}

/// Numbers the engines this process starts, for their tags.
static NEXT_ENGINE: AtomicU64 = AtomicU64::new(1);

/// Registers (or forgets) the process group of another program kitt runs
/// (a `devon` command), so that an immediate exit kills it with the engines.
pub(crate) fn track_group(pgid: u32, live: bool) {
    register(pgid, live);
}

fn register(pgid: u32, live: bool) {
    if let Ok(mut groups) = LIVE_GROUPS.lock() {
        if live {
            groups.insert(pgid);
        } else {
            groups.remove(&pgid);
        }
    }
}

/// How long an engine gets to exit after SIGTERM before SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(10);

/// A running engine process and its process group.
#[derive(Debug)]
pub struct EngineProcess {
    child: Child,
    pid: u32,
    log_path: PathBuf,
    stopped: bool,
    /// This engine's [`OWNER_ENV`] value.
    tag: String,
}

impl EngineProcess {
    /// Starts `program` with `args` in a new process group, stdout and stderr
    /// appended to `log_path`.
    pub fn spawn(
        program: &Path,
        args: &[String],
        env: &[(String, String)],
        log_path: &Path,
    ) -> io::Result<Self> {
        Self::spawn_in(program, args, env, None, log_path)
    }

    /// [`Self::spawn`] in the working directory `dir` (kitt's own when `None`).
    pub fn spawn_in(
        program: &Path,
        args: &[String],
        env: &[(String, String)],
        dir: Option<&Path>,
        log_path: &Path,
    ) -> io::Result<Self> {
        let log = OpenOptions::new().create(true).append(true).open(log_path)?;
        let tag = format!("{}:{}", owner_tag(), NEXT_ENGINE.fetch_add(1, Ordering::Relaxed));
        let mut command = Command::new(program);
        if let Some(dir) = dir {
            command.current_dir(dir);
        }
        command
            .args(args)
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env(OWNER_ENV, &tag)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .kill_on_drop(false);
        let parent = std::process::id();
        // SAFETY: the closure runs in the forked child before exec and only
        // makes async-signal-safe system calls (prctl, getppid, _exit).
        unsafe {
            command.pre_exec(move || die_with_parent(parent));
        }
        let child = command.spawn()?;
        let pid = child.id().ok_or_else(|| io::Error::other("the engine exited at once"))?;
        register(pid, true);
        Ok(EngineProcess { child, pid, log_path: log_path.to_owned(), stopped: false, tag })
    }

    /// The leader's process id (also the process group id).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The log file.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The exit status if the process has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// SIGTERM to the group, wait up to `grace`, then SIGKILL; reaps the leader.
    pub async fn stop(&mut self, grace: Duration) -> io::Result<()> {
        if self.stopped {
            return Ok(());
        }
        self.signal_group(Signal::SIGTERM);
        let exited = tokio::time::timeout(grace, self.child.wait()).await;
        if exited.is_err() {
            tracing::warn!(pid = self.pid, "engine ignored SIGTERM for {grace:?}; killing it");
            self.signal_group(Signal::SIGKILL);
            self.child.wait().await?;
        }
        // Children the engine forked may still be in the group; wait until the
        // kernel has delivered the kill to every one of them.
        self.signal_group(Signal::SIGKILL);
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while !group_members(self.pid).is_empty() && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Processes the engine moved out of its group (a wrapper that
        // daemonizes the server) still carry its tag.
        kill_tagged(|tag| tag == self.tag);
        self.stopped = true;
        register(self.pid, false);
        Ok(())
    }

    fn signal_group(&self, signal: Signal) {
        let Ok(pgid) = i32::try_from(self.pid) else { return };
        // ESRCH (the group is gone) is the expected outcome after a clean exit.
        let _ = killpg(Pid::from_raw(pgid), signal);
    }

    /// The last `lines` lines of the log, for error messages.
    pub fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.log_path, lines)
    }
}

impl Drop for EngineProcess {
    fn drop(&mut self) {
        if !self.stopped {
            self.signal_group(Signal::SIGKILL);
            kill_tagged(|tag| tag == self.tag);
            register(self.pid, false);
            // Reap the leader so it does not linger as a zombie.
            let _ = self.child.start_kill();
            let _ = self.child.try_wait();
        }
    }
}

/// The last `lines` lines of a log file (reads at most the last 64 KiB).
pub fn log_tail(path: &Path, lines: usize) -> String {
    const WINDOW: u64 = 64 * 1024;
    let Ok(mut file) = File::open(path) else { return String::new() };
    let length = file.metadata().map(|meta| meta.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(length.saturating_sub(WINDOW)));
    let mut bytes = Vec::new();
    let _ = file.read_to_end(&mut bytes);
    let text = String::from_utf8_lossy(&bytes);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Resident memory in bytes of every process in a process group, read from /proc.
pub fn group_resident_bytes(pgid: u32) -> u64 {
    let Ok(entries) = std::fs::read_dir("/proc") else { return 0 };
    let page = 4096u64;
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| process_group_of(*pid) == Some(pgid))
        .filter_map(|pid| {
            let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
            let resident: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
            Some(resident * page)
        })
        .sum()
}

/// Live (not zombie) process ids whose process group is `pgid`.
pub fn group_members(pgid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| process_group_of(*pid) == Some(pgid))
        .collect()
}

/// The process group of a live process; `None` for zombies and vanished pids.
fn process_group_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses; fields follow the last `)`.
    let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace();
    let state = fields.next()?;
    if state == "Z" || state == "X" {
        return None;
    }
    fields.nth(1)?.parse().ok()
}

/// In the child, before exec: asks the kernel to SIGKILL the engine when
/// kitt dies, even by `kill -9`, so no engine outlives it. If kitt is
/// already gone (it died between fork and here), the child exits.
fn die_with_parent(parent: u32) -> io::Result<()> {
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL).map_err(io::Error::from)?;
    if nix::unistd::getppid().as_raw().unsigned_abs() != parent {
        // SAFETY: _exit ends the forked child without running the parent's
        // exit handlers, as a child between fork and exec must.
        unsafe { nix::libc::_exit(1) }
    }
    Ok(())
}

/// Set on every engine kitt starts (and inherited by anything it starts):
/// `<kitt pid>:<kitt start time>:<home>:<engine number>`, so an engine's
/// strays are stopped with it, and engines orphaned by a kitt that died can
/// be found and stopped later by a kitt of the same home.
pub const OWNER_ENV: &str = "KITT_ENGINE_OWNER";

/// A short hash of the kitt home this process works in (`-` until set).
static HOME_SCOPE: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Names the kitt home this process works in, before it starts any engine:
/// orphans are reaped only among engines started from the same home, so
/// kitts of other homes (another user's, a test's) are left alone.
pub fn set_home(home: &Path) {
    let absolute = std::path::absolute(home).unwrap_or_else(|_| home.to_owned());
    let _ = HOME_SCOPE.set(home_scope(&absolute));
}

/// The scope text of `home`: 12 hex digits of its path's SHA-256.
fn home_scope(home: &Path) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(home.as_os_str().as_encoded_bytes());
    digest.iter().take(6).map(|byte| format!("{byte:02x}")).collect()
}

/// This process's owner tag, `<pid>:<start time>:<home>`.
pub fn owner_tag() -> String {
    let pid = std::process::id();
    let home = HOME_SCOPE.get().map_or("-", String::as_str);
    format!("{pid}:{}:{home}", start_time(pid).unwrap_or(0))
}

/// Whether an owner tag was set by a kitt of this process's home. A tag
/// without a home (written by an older kitt) counts as this home's.
pub fn same_home(tag: &str) -> bool {
    let home = HOME_SCOPE.get().map_or("-", String::as_str);
    match tag.split(':').nth(2) {
        Some(scope) if scope.len() == 12 || scope == "-" => scope == home,
        _ => true,
    }
}

/// A process's start time in clock ticks since boot (`/proc/PID/stat` field 22).
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 1..].split_whitespace().nth(19)?.parse().ok()
}

/// Stops engine processes whose kitt died without stopping them (the
/// kernel kills an engine kitt started directly when kitt dies, but not
/// processes that engine started, such as a server behind a wrapper
/// script). Only processes carrying [`OWNER_ENV`] of a kitt of the same
/// home that is no longer running are touched; their whole process group is
/// killed. Returns the process ids found.
pub fn reap_orphans() -> Vec<u32> {
    kill_tagged(|tag| same_home(tag) && !owner_is_alive(tag))
}

/// Whether the kitt named by an owner tag (`<pid>:<start time>[:…]`) still
/// runs. A tag kitt cannot read counts as alive, so it is never acted on.
pub fn owner_is_alive(tag: &str) -> bool {
    let mut parts = tag.split(':');
    let owner = parts.next().and_then(|pid| pid.parse::<u32>().ok());
    let started = parts.next().and_then(|ticks| ticks.parse::<u64>().ok());
    match (owner, started) {
        (Some(owner), Some(started)) => start_time(owner) == Some(started),
        _ => true,
    }
}

/// SIGKILLs the process group of every process (other than this one) whose
/// [`OWNER_ENV`] value satisfies `matches`; returns their ids.
fn kill_tagged(matches: impl Fn(&str) -> bool) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    let me = std::process::id();
    let mut killed = Vec::new();
    for pid in entries.flatten().filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
    {
        if pid == me {
            continue;
        }
        let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else { continue };
        let tag = environ
            .split(|byte| *byte == 0)
            .filter_map(|entry| std::str::from_utf8(entry).ok())
            .find_map(|entry| entry.strip_prefix(OWNER_ENV)?.strip_prefix('='));
        if !tag.is_some_and(&matches) {
            continue;
        }
        if let Some(pgid) = process_group_of(pid).and_then(|pgid| i32::try_from(pgid).ok()) {
            let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
            killed.push(pid);
        }
    }
    killed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_scoped_to_their_home() {
        // No home is set in unit tests: this process's scope is `-`.
        assert!(same_home("1:2:-:3"));
        assert!(!same_home("1:2:0123456789ab:3"));
        // An older kitt's tag (`pid:start:engine`) has no home: it counts as ours.
        assert!(same_home("1:2:3"));
        assert!(same_home("1:2"));
        assert_eq!(home_scope(Path::new("/a")).len(), 12);
        assert_ne!(home_scope(Path::new("/a")), home_scope(Path::new("/b")));
    }

    #[tokio::test]
    async fn stop_ends_the_whole_group_and_logs_are_captured() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("engine.log");
        let script = "echo started; sleep 30 & sleep 30";
        let mut process =
            EngineProcess::spawn(Path::new("/bin/sh"), &["-c".into(), script.into()], &[], &log)
                .unwrap();
        let pgid = process.pid();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(group_members(pgid).len() >= 2, "the shell and its children share a group");

        process.stop(Duration::from_secs(2)).await.unwrap();

        assert!(group_members(pgid).is_empty(), "every member of the group is gone");
        assert_eq!(process.log_tail(5), "started");
    }

    #[tokio::test]
    async fn dropping_kills_the_group() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("engine.log");
        let process =
            EngineProcess::spawn(Path::new("/bin/sleep"), &["30".into()], &[], &log).unwrap();
        let pgid = process.pid();
        drop(process);
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while !group_members(pgid).is_empty() && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(group_members(pgid).is_empty(), "still running: {:?}", group_members(pgid));
    }

    #[test]
    fn log_tail_keeps_the_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        std::fs::write(&path, "a\nb\nc\nd\n").unwrap();
        assert_eq!(log_tail(&path, 2), "c\nd");
        assert_eq!(log_tail(&dir.path().join("absent"), 2), "");
    }
}
