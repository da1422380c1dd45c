//! One fire of a schedule (`kitt campaign fire ID`, what a crontab line and
//! the foreground scheduler run): record it, take the schedule's turn, pick
//! the campaign, run it, record how it ended.
//!
//! The campaign runs as a child `kitt campaign run CONFIG --campaign-id ID
//! [--resume]`, the command a user would type, with its output in the fire's
//! own log; the fire supervises it. The child runs in a process group of its
//! own and gets SIGTERM when the fire dies, so one signal to the fire stops
//! the campaign cleanly (resumable) and a killed fire leaves no campaign
//! running unsupervised.
//!
//! Turns: a running fire holds `<home>/locks/schedule-<id>.lock`. A fire
//! that finds it held takes `schedule-<id>.wait.lock` and waits for the
//! first to end; a fire that finds both held is skipped. Once it has its
//! turn, a fire resumes the campaign of the schedule's last fire when that
//! campaign is unfinished (`pending` after an interruption, `running` after a
//! kill), and starts a new campaign otherwise. When that campaign is being
//! driven by another process (a `kitt campaign run --resume` by hand), the
//! fire waits for it too, then decides again.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use jiff::Timestamp;

use super::{Signals, is_locked, local_minute, run_lock_path, try_lock, wait_lock_path};
use crate::campaign::lock;
use crate::config::Campaign;
use crate::error::{Exit, KittError, with_causes};
use crate::store::{CampaignStatus, DB_FILE, FireRow, FireStatus, NewFire, ScheduleRow, Store};

/// How often a waiting fire looks whether its turn has come.
const POLL: Duration = Duration::from_millis(500);

/// Fires schedule `id` for the minute `due` (default: this minute) and
/// returns the campaign run's exit status.
pub fn fire(home: &Path, id: &str, due: Option<Timestamp>) -> Result<Exit, KittError> {
    let home = super::absolute(home);
    let store_error = |error: crate::store::StoreError| KittError::Environment(with_causes(&error));
    let unknown = || {
        KittError::Usage(format!(
            "no schedule `{id}`; `kitt campaign cron-status` lists the schedules"
        ))
    };
    if !home.join(DB_FILE).exists() {
        return Err(unknown());
    }
    let store = Store::open(&home).map_err(store_error)?;
    let schedule = store.schedule(id).map_err(store_error)?.ok_or_else(unknown)?;

    let started = Timestamp::now();
    let due = due.unwrap_or_else(|| floor_to_minute(started));
    let dir = super::log_dir(&home, id);
    let log_path =
        dir.join(format!("{}-{}.log", started.strftime("%Y%m%d-%H%M%S"), std::process::id()));
    let host = lock::host_name();
    let new = NewFire {
        schedule_id: id,
        due,
        pid: std::process::id(),
        host: &host,
        log_path: &log_path.display().to_string(),
    };
    let Some(fire_id) = store.insert_fire(&new).map_err(store_error)? else {
        eprintln!(
            "schedule `{id}`: the fire due {} has already run or is running; nothing to do",
            local_minute(due)
        );
        return Ok(Exit::Success);
    };
    let log = std::fs::create_dir_all(&dir)
        .and_then(|()| File::options().create(true).append(true).open(&log_path));
    let log = match log {
        Ok(log) => log,
        Err(error) => {
            let message = format!("cannot write the fire's log {}: {error}", log_path.display());
            let _ = store.finish_fire(fire_id, FireStatus::Error, Some(3), Some(&message));
            return Err(KittError::Environment(message));
        }
    };

    let mut fire = Fire { home, store, schedule, fire_id, log, log_path };
    fire.say(&format!(
        "fire #{fire_id} of schedule `{id}` (`{}`, due {}): {}",
        fire.schedule.cron,
        local_minute(due),
        fire.schedule.config_path
    ));
    eprintln!("schedule `{id}`: the campaign's output goes to {}", fire.log_path.display());
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|error| {
            KittError::Environment(format!("cannot start the async runtime: {error}"))
        })?;
    runtime.block_on(fire.run())
}

/// Whether to go on, or stop with an exit status (already recorded).
enum Step<T> {
    Go(T),
    Stop(Exit),
}

/// What a fire runs.
struct Target {
    campaign_id: String,
    resume: bool,
    left_by: Option<FireRow>,
}

struct Fire {
    home: PathBuf,
    store: Store,
    schedule: ScheduleRow,
    fire_id: i64,
    log: File,
    log_path: PathBuf,
}

impl Fire {
    async fn run(mut self) -> Result<Exit, KittError> {
        let mut signals = Signals::new()?;
        let _turn = match self.take_turn(&mut signals).await? {
            Step::Go(lock) => lock,
            Step::Stop(exit) => return Ok(exit),
        };
        let campaign = match crate::config::load(Path::new(&self.schedule.config_path)) {
            Ok(campaign) => campaign,
            Err(error) => {
                let message =
                    format!("the campaign file is no longer valid: {}", with_causes(&error));
                self.end(FireStatus::Error, Some(2), &message);
                return Ok(Exit::InvalidInput);
            }
        };
        let target = match self.choose(&campaign, &mut signals).await? {
            Step::Go(target) => target,
            Step::Stop(exit) => return Ok(exit),
        };
        self.store
            .fire_campaign(self.fire_id, &target.campaign_id, target.resume)
            .map_err(|error| KittError::Environment(with_causes(&error)))?;
        match &target.left_by {
            Some(previous) => self.say(&format!(
                "resuming campaign {}, left unfinished by fire #{} (due {})",
                target.campaign_id,
                previous.id,
                local_due(previous)
            )),
            None => self.say(&format!("starting campaign {}", target.campaign_id)),
        }
        self.run_campaign(&target, &mut signals).await
    }

    /// Takes the schedule's turn, waiting for an earlier fire when needed.
    async fn take_turn(&mut self, signals: &mut Signals) -> Result<Step<File>, KittError> {
        let id = self.schedule.id.clone();
        let run_path = run_lock_path(&self.home, &id);
        if let Some(lock) = try_lock(&run_path).map_err(|e| self.lock_error(&run_path, e))? {
            return Ok(Step::Go(lock));
        }
        let holder = self
            .store
            .last_open_fire(&id, self.fire_id)
            .ok()
            .flatten()
            .map(|fire| describe(&fire))
            .unwrap_or_else(|| "an earlier fire".to_owned());
        let wait_path = wait_lock_path(&self.home, &id);
        let Some(wait) = try_lock(&wait_path).map_err(|e| self.lock_error(&wait_path, e))? else {
            let note =
                format!("skipped: {holder} is still running and another fire already waits for it");
            self.end(FireStatus::Skipped, None, &note);
            return Ok(Step::Stop(Exit::Success));
        };
        let note = format!("waiting: {holder} is still running; this fire runs when it ends");
        self.mark(FireStatus::Waiting, &note);
        loop {
            tokio::select! {
                () = tokio::time::sleep(POLL) => {}
                signal = signals.recv() => {
                    let note = format!("interrupted by {signal} while waiting for its turn");
                    self.end(FireStatus::Interrupted, None, &note);
                    return Ok(Step::Stop(Exit::Interrupted));
                }
            }
            if let Some(lock) = try_lock(&run_path).map_err(|e| self.lock_error(&run_path, e))? {
                drop(wait);
                self.mark(FireStatus::Running, "the earlier fire has ended; this fire goes on");
                return Ok(Step::Go(lock));
            }
        }
    }

    /// Resumes the last fire's campaign when it is unfinished, else starts one.
    async fn choose(
        &mut self,
        campaign: &Campaign,
        signals: &mut Signals,
    ) -> Result<Step<Target>, KittError> {
        let store_error =
            |error: crate::store::StoreError| KittError::Environment(with_causes(&error));
        let mut waited = false;
        loop {
            let previous = self
                .store
                .last_campaign_fire(&self.schedule.id, self.fire_id)
                .map_err(store_error)?;
            let unfinished = match &previous {
                Some(fire) => {
                    let id = fire.campaign_id.as_deref().unwrap_or_default();
                    self.store.campaign(id).map_err(store_error)?.filter(|row| {
                        matches!(row.status, CampaignStatus::Pending | CampaignStatus::Running)
                    })
                }
                None => None,
            };
            let Some(row) = unfinished else {
                let id = crate::campaign::coordinator::fresh_id(&self.store, &campaign.name)?;
                return Ok(Step::Go(Target { campaign_id: id, resume: false, left_by: None }));
            };
            let lock_file = lock::lock_path(&self.home, &row.id);
            if !is_locked(&lock_file) {
                let target = Target { campaign_id: row.id, resume: true, left_by: previous };
                return Ok(Step::Go(target));
            }
            if !waited {
                let owner = std::fs::read_to_string(&lock_file).unwrap_or_default();
                let note = format!(
                    "waiting: campaign {} is being run by another kitt process ({}); this fire \
                     resumes it when that process ends",
                    row.id,
                    owner.trim()
                );
                self.mark(FireStatus::Waiting, &note);
                waited = true;
            }
            tokio::select! {
                () = tokio::time::sleep(POLL) => {}
                signal = signals.recv() => {
                    let note =
                        format!("interrupted by {signal} while waiting for campaign {}", row.id);
                    self.end(FireStatus::Interrupted, None, &note);
                    return Ok(Step::Stop(Exit::Interrupted));
                }
            }
        }
    }

    /// Runs `kitt campaign run` for the target and records how it ended.
    async fn run_campaign(
        &mut self,
        target: &Target,
        signals: &mut Signals,
    ) -> Result<Exit, KittError> {
        let kitt = std::env::current_exe().map_err(|error| {
            KittError::Environment(format!("cannot find kitt's binary: {error}"))
        })?;
        let mut args = vec![
            "--home".to_owned(),
            self.home.display().to_string(),
            "campaign".to_owned(),
            "run".to_owned(),
            self.schedule.config_path.clone(),
        ];
        if target.resume {
            args.push("--resume".to_owned());
        }
        args.extend(["--campaign-id".to_owned(), target.campaign_id.clone()]);
        let shown: Vec<String> = std::iter::once(kitt.display().to_string())
            .chain(args.iter().cloned())
            .map(|word| crate::campaign::shell_word(&word))
            .collect();
        self.say(&format!("running: {}", shown.join(" ")));

        let outputs = self.log.try_clone().and_then(|out| Ok((out, self.log.try_clone()?)));
        let spawned = outputs.and_then(|(out, err)| {
            let parent = std::process::id();
            let mut command = tokio::process::Command::new(&kitt);
            command
                .args(&args)
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err)
                .process_group(0)
                .kill_on_drop(false);
            // SAFETY: the closure runs in the forked child before exec and
            // only makes async-signal-safe system calls (prctl, getppid).
            unsafe {
                command.pre_exec(move || stop_with_parent(parent));
            }
            command.spawn()
        });
        let mut child = match spawned {
            Ok(child) => child,
            Err(error) => {
                let message = format!("cannot start `kitt campaign run`: {error}");
                self.end(FireStatus::Error, Some(3), &message);
                return Ok(Exit::Environment);
            }
        };
        let pid = child.id().unwrap_or_default();
        let mut signalled = false;
        let status = loop {
            tokio::select! {
                status = child.wait() => break status,
                signal = signals.recv() => {
                    if !signalled {
                        self.say(&format!(
                            "{signal}: stopping campaign {}; it stays resumable, and the next \
                             fire resumes it",
                            target.campaign_id
                        ));
                        signalled = true;
                    }
                    super::terminate(pid);
                }
            }
        };
        let code = status.ok().and_then(|status| status.code());
        let (fire_status, exit) = match code {
            Some(0) => (FireStatus::Completed, Exit::Success),
            Some(1) => (FireStatus::Failed, Exit::RunsFailed),
            Some(2) => (FireStatus::Error, Exit::InvalidInput),
            Some(130) => (FireStatus::Interrupted, Exit::Interrupted),
            _ => (FireStatus::Error, Exit::Environment),
        };
        let ended = match code {
            Some(code) => format!("exit {code}"),
            None => "killed by a signal".to_owned(),
        };
        let note = format!("campaign {} ended: {fire_status} ({ended})", target.campaign_id);
        self.end(fire_status, code, &note);
        Ok(exit)
    }

    /// Records a waiting or running state with why, and says it.
    fn mark(&mut self, status: FireStatus, note: &str) {
        if let Err(error) = self.store.fire_state(self.fire_id, status, Some(note)) {
            self.say(&format!("cannot record this fire's state: {}", with_causes(&error)));
        }
        self.say(note);
    }

    /// Records the end of the fire and says why.
    fn end(&mut self, status: FireStatus, exit_code: Option<i32>, note: &str) {
        if let Err(error) = self.store.finish_fire(self.fire_id, status, exit_code, Some(note)) {
            self.say(&format!("cannot record the end of this fire: {}", with_causes(&error)));
        }
        self.say(note);
    }

    /// One line in the fire's log and on stderr.
    fn say(&mut self, message: &str) {
        let now = Timestamp::now().to_zoned(jiff::tz::TimeZone::system());
        let _ =
            writeln!(self.log, "[{}] kitt fire: {message}", now.strftime("%Y-%m-%d %H:%M:%S %Z"));
        eprintln!("schedule `{}`: {message}", self.schedule.id);
    }

    fn lock_error(&self, path: &Path, error: std::io::Error) -> KittError {
        KittError::Environment(format!("cannot lock {}: {error}", path.display()))
    }
}

/// "fire #N (due T, pid P on HOST, campaign C)".
fn describe(fire: &FireRow) -> String {
    let campaign =
        fire.campaign_id.as_ref().map(|id| format!(", campaign {id}")).unwrap_or_default();
    format!(
        "fire #{} (due {}, pid {} on {}{campaign})",
        fire.id,
        local_due(fire),
        fire.pid,
        fire.host
    )
}

fn local_due(fire: &FireRow) -> String {
    fire.due_at.parse::<Timestamp>().map(local_minute).unwrap_or_else(|_| fire.due_at.clone())
}

/// The start of the minute holding `at`.
pub fn floor_to_minute(at: Timestamp) -> Timestamp {
    let second = at.as_second();
    Timestamp::from_second(second - second.rem_euclid(60)).unwrap_or(at)
}

/// In the child, before exec: asks the kernel for SIGTERM when the fire
/// dies, so the campaign stops cleanly instead of running unsupervised; if
/// the fire is already gone, the child does not start.
fn stop_with_parent(parent: u32) -> std::io::Result<()> {
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM)
        .map_err(std::io::Error::from)?;
    if nix::unistd::getppid().as_raw().unsigned_abs() != parent {
        return Err(std::io::Error::other("the fire ended before its campaign started"));
    }
    Ok(())
}
