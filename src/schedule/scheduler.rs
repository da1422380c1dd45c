//! `kitt campaign scheduler`: fires the home's schedules from the
//! foreground, for machines without cron (containers, systemd units).
//!
//! Each due schedule is fired exactly as its crontab line would fire it: a
//! child `kitt campaign fire ID --due T` with the schedule's recorded
//! environment and its messages appended to the schedule's log. Fires are
//! separate processes in process groups of their own, so overlapping fires
//! follow the same rules as under cron, and a Ctrl-C at the terminal reaches
//! only the scheduler, which then stops each running fire once (its
//! campaign stays resumable) and waits for them. A second signal asks the
//! fires again, which makes their campaigns stop their engines at once.
//!
//! Decisions:
//! - The store is read again at every wake-up (at least every 30 s), so
//!   `schedule` and `unschedule` take effect without a restart.
//! - Fires missed while the scheduler was not running (or the machine
//!   slept) are not caught up; when several due times of one schedule pass
//!   at once, it fires once, for the latest.
//! - Stopping by signal is the scheduler's normal end: exit 0.
//! - `KITT_SCHEDULER_START` (RFC 3339) starts the scheduler's clock at that
//!   instant, running at real speed from there, to see what it would do at
//!   a given time; the tests use it.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};

use super::cron::CronExpr;
use super::{Signals, fire_messages_log, local_minute, terminate};
use crate::error::{Exit, KittError, with_causes};
use crate::store::{ScheduleRow, Store};

/// The variable that starts the scheduler's clock at another instant.
pub const CLOCK_ENV: &str = "KITT_SCHEDULER_START";

/// The longest the scheduler sleeps before reading the schedules again.
const RELOAD: Duration = Duration::from_secs(30);

/// Real time, possibly shifted.
#[derive(Debug, Clone, Copy)]
struct Clock {
    offset: SignedDuration,
}

impl Clock {
    fn from_env() -> Result<Clock, KittError> {
        let Some(start) = std::env::var(CLOCK_ENV).ok().filter(|text| !text.is_empty()) else {
            return Ok(Clock { offset: SignedDuration::ZERO });
        };
        let start: Timestamp = start.parse().map_err(|error| {
            KittError::Usage(format!("{CLOCK_ENV}=`{start}` is not an RFC 3339 time: {error}"))
        })?;
        Ok(Clock { offset: start.duration_since(Timestamp::now()) })
    }

    fn now(self) -> Timestamp {
        Timestamp::now().checked_add(self.offset).unwrap_or_else(|_| Timestamp::now())
    }
}

/// A fire the scheduler started.
struct Running {
    id: String,
    due: Timestamp,
    pid: u32,
    child: tokio::process::Child,
}

/// Runs until SIGINT, SIGTERM or SIGHUP.
pub fn run(home: &Path) -> Result<Exit, KittError> {
    let home = super::absolute(home);
    let clock = Clock::from_env()?;
    let store = Store::open(&home).map_err(|error| KittError::Environment(with_causes(&error)))?;
    let kitt = std::env::current_exe()
        .map_err(|error| KittError::Environment(format!("cannot find kitt's binary: {error}")))?;
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|error| {
            KittError::Environment(format!("cannot start the async runtime: {error}"))
        })?;
    runtime.block_on(Scheduler { home, clock, store, kitt, known: Vec::new() }.run())
}

struct Scheduler {
    home: PathBuf,
    clock: Clock,
    store: Store,
    kitt: PathBuf,
    /// The schedules last seen (id and expression), to report changes.
    known: Vec<(String, String)>,
}

impl Scheduler {
    async fn run(mut self) -> Result<Exit, KittError> {
        let mut signals = Signals::new()?;
        let tz = TimeZone::system();
        let mut running: Vec<Running> = Vec::new();
        let mut last = self.clock.now();
        self.say(&format!(
            "scheduler started for {} (stop it with Ctrl-C or SIGTERM)",
            self.home.display()
        ));
        let signal = loop {
            let now = self.clock.now();
            let schedules = self
                .store
                .schedules()
                .map_err(|error| KittError::Environment(with_causes(&error)))?;
            self.report_changes(&schedules, now, &tz);
            let mut wake = now.checked_add(RELOAD).unwrap_or(now);
            for schedule in &schedules {
                let Ok(expr) = CronExpr::parse(&schedule.cron) else { continue };
                if let Some((due, missed)) = latest_due(&expr, last, now, &tz) {
                    if missed > 0 {
                        self.say(&format!(
                            "schedule `{}`: {missed} earlier fire(s) passed unseen; firing once",
                            schedule.id
                        ));
                    }
                    match self.spawn(schedule, due) {
                        Ok(fire) => running.push(fire),
                        Err(error) => self.say(&format!(
                            "schedule `{}`: cannot start its fire: {error}",
                            schedule.id
                        )),
                    }
                }
                if let Some(next) = expr.next_fire(now, &tz) {
                    wake = wake.min(next.timestamp());
                }
            }
            last = now;
            self.reap(&mut running);
            let pause = wake.duration_since(self.clock.now()).max(SignedDuration::ZERO);
            let pause = Duration::try_from(pause).unwrap_or(RELOAD);
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                signal = signals.recv() => break signal,
            }
        };
        self.stop(running, signals, signal).await
    }

    /// Starts `kitt campaign fire` for one due time, as cron would.
    fn spawn(&self, schedule: &ScheduleRow, due: Timestamp) -> std::io::Result<Running> {
        let log_path = fire_messages_log(&self.home, &schedule.id);
        if let Some(dir) = log_path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let log = std::fs::File::options().create(true).append(true).open(&log_path)?;
        let child = tokio::process::Command::new(&self.kitt)
            .arg("--home")
            .arg(&self.home)
            .args(["campaign", "fire", &schedule.id, "--due", &due.to_string()])
            .envs(schedule.environment.iter().map(|(name, value)| (name, value)))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .kill_on_drop(false)
            .spawn()?;
        let pid = child.id().unwrap_or_default();
        self.say(&format!(
            "schedule `{}`: firing for {} (pid {pid}); messages in {}",
            schedule.id,
            local_minute(due),
            log_path.display()
        ));
        Ok(Running { id: schedule.id.clone(), due, pid, child })
    }

    /// Reports and forgets fires that have ended.
    fn reap(&self, running: &mut Vec<Running>) {
        running.retain_mut(|fire| match fire.child.try_wait() {
            Ok(None) => true,
            Ok(Some(status)) => {
                self.say(&ended(fire, status.code()));
                false
            }
            Err(error) => {
                self.say(&format!("schedule `{}`: cannot watch its fire: {error}", fire.id));
                false
            }
        });
    }

    /// Stops every running fire once (twice on a second signal) and waits.
    async fn stop(
        &self,
        mut running: Vec<Running>,
        mut signals: Signals,
        signal: &str,
    ) -> Result<Exit, KittError> {
        self.reap(&mut running);
        if !running.is_empty() {
            self.say(&format!(
                "{signal}: stopping {} running fire(s); their campaigns stay resumable and \
                 the next fire resumes them",
                running.len()
            ));
            running.iter().for_each(|fire| terminate(fire.pid));
        }
        while let Some(fire) = running.first_mut() {
            tokio::select! {
                status = fire.child.wait() => {
                    let code = status.ok().and_then(|status| status.code());
                    self.say(&ended(fire, code));
                    running.remove(0);
                }
                again = signals.recv() => {
                    self.say(&format!("{again} again: the campaigns stop their engines at once"));
                    running.iter().for_each(|fire| terminate(fire.pid));
                }
            }
        }
        self.say(&format!("{signal}: scheduler stopped"));
        Ok(Exit::Success)
    }

    /// Says which schedules appeared, changed or went away, with their next fire.
    fn report_changes(&mut self, schedules: &[ScheduleRow], now: Timestamp, tz: &TimeZone) {
        let current: Vec<(String, String)> =
            schedules.iter().map(|row| (row.id.clone(), row.cron.clone())).collect();
        if current == self.known {
            return;
        }
        for schedule in schedules {
            if self.known.iter().any(|(id, cron)| *id == schedule.id && *cron == schedule.cron) {
                continue;
            }
            let next = CronExpr::parse(&schedule.cron)
                .ok()
                .and_then(|expr| expr.next_fire(now, tz))
                .map(|next| local_minute(next.timestamp()))
                .unwrap_or_else(|| "never".to_owned());
            self.say(&format!(
                "schedule `{}`: `{}` for {}; next fire {next}",
                schedule.id, schedule.cron, schedule.config_path
            ));
        }
        for (id, _) in &self.known {
            if !current.iter().any(|(current_id, _)| current_id == id) {
                self.say(&format!("schedule `{id}` was removed"));
            }
        }
        if current.is_empty() {
            self.say("no schedules yet; waiting for `kitt campaign schedule`");
        }
        self.known = current;
    }

    fn say(&self, message: &str) {
        let now = self.clock.now().to_zoned(TimeZone::system());
        println!("[{}] {message}", now.strftime("%Y-%m-%d %H:%M:%S %Z"));
    }
}

/// "schedule `x`: the fire for T ended: completed (exit 0)".
fn ended(fire: &Running, code: Option<i32>) -> String {
    let outcome = match code {
        Some(0) => "completed (exit 0)".to_owned(),
        Some(1) => "some run failed (exit 1)".to_owned(),
        Some(130) => "interrupted, resumable (exit 130)".to_owned(),
        Some(code) => format!("could not run the campaign (exit {code}; see its log)"),
        None => "killed by a signal".to_owned(),
    };
    format!("schedule `{}`: the fire for {} ended: {outcome}", fire.id, local_minute(fire.due))
}

/// The latest time `expr` fires in `(after, until]`, and how many earlier
/// ones that interval also held.
pub fn latest_due(
    expr: &CronExpr,
    after: Timestamp,
    until: Timestamp,
    tz: &TimeZone,
) -> Option<(Timestamp, usize)> {
    let mut latest = None;
    let mut count = 0usize;
    let mut from = after;
    while let Some(next) = expr.next_fire(from, tz) {
        let at = next.timestamp();
        if at > until || count > 100_000 {
            break;
        }
        latest = Some(at);
        count += 1;
        from = at;
    }
    latest.map(|at| (at, count - 1))
}
