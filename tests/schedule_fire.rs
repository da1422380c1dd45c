//! Fires of a schedule and the foreground scheduler, end to end: the real
//! `kitt` runs a tiny campaign on an `openai` engine pointed at a scripted
//! loopback server. A gate in the server holds the first benchmark request
//! for as long as a test needs a fire to stay in the middle of its campaign.
//!
//! - The scheduler, on a clock started a few seconds before 02:00, fires a
//!   one-minute schedule once for 02:00, the fire records its campaign, and
//!   SIGTERM stops the scheduler (exit 0).
//! - SIGTERM to the scheduler while a fire runs stops that campaign cleanly
//!   (resumable); the next fire resumes it.
//! - A fire finding an earlier one running waits for it, then starts its
//!   own campaign; a third is skipped; a fire for a minute already fired
//!   does nothing.
//! - A fire whose earlier fire was killed resumes that fire's campaign, after
//!   waiting for a process driving that campaign by hand.
//!
//! No crontab is involved: `PATH` has no `crontab`, so `schedule` only stores.

mod common;
mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use common::{Outcome, Scratch, processes_mentioning};
use kitt::store::{CampaignStatus, FireRow, FireStatus, Store};
use nix::sys::signal::Signal;
use support::stream::{Script, ScriptedStream};

/// Holds chat requests until opened.
#[derive(Clone, Default)]
struct Gate {
    open: Arc<(Mutex<bool>, Condvar)>,
    arrived: Arc<AtomicUsize>,
}

impl Gate {
    fn pass(&self) {
        self.arrived.fetch_add(1, Ordering::SeqCst);
        let (lock, opened) = &*self.open;
        let mut open = lock.lock().unwrap();
        while !*open {
            open = opened.wait(open).unwrap();
        }
    }

    fn open(&self) {
        let (lock, opened) = &*self.open;
        *lock.lock().unwrap() = true;
        opened.notify_all();
    }

    fn reached(&self) -> bool {
        self.arrived.load(Ordering::SeqCst) > 0
    }
}

/// The scripted server behind its gate; the gate opens before the server
/// stops, so a blocked request never keeps it from stopping.
struct Gated {
    gate: Gate,
    server: ScriptedStream,
}

impl Gated {
    fn start(open: bool) -> Gated {
        let gate = Gate::default();
        if open {
            gate.open();
        }
        let server = ScriptedStream::start(Script::chat("m", &["Hi"], Duration::ZERO));
        server.serve_models(&["m"]);
        let held = gate.clone();
        server.respond_with(move |_| {
            held.pass();
            Script::chat("m", &["Hello", " there"], Duration::ZERO)
        });
        Gated { gate, server }
    }
}

impl Drop for Gated {
    fn drop(&mut self) {
        self.gate.open();
    }
}

/// A scratch home with schedule `nightly` of a campaign on `server`.
fn scheduled(scratch: &Scratch, server: &ScriptedStream, cron: &str) {
    let config = format!(
        "campaign_name: nightly\nmodels:\n  - name: Served\nengines:\n  - name: openai\n    \
         suite: quick\n    config:\n      base_url: {}/v1\n      model: m\n",
        server.url()
    );
    scratch.write("nightly.yaml", &config);
    let outcome =
        scratch.run(kitt(scratch).args(["campaign", "schedule", "nightly.yaml", "--cron", cron]));
    assert_eq!(outcome.code, 0, "{outcome:?}");
    assert!(outcome.stdout.contains("the crontab is unavailable"), "{}", outcome.stdout);
}

/// `kitt` with no `crontab` on `PATH` and times in UTC.
fn kitt(scratch: &Scratch) -> Command {
    let bin = scratch.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let mut command = scratch.kitt();
    command.env("PATH", &bin).env("TZ", "UTC").env("KITT_CRONTAB_USER", "kitt-no-such-user");
    command
}

fn spawn(mut command: Command) -> Child {
    command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
}

fn spawn_fire(scratch: &Scratch, due: &str) -> Child {
    let mut command = kitt(scratch);
    command.args(["campaign", "fire", "nightly", "--due", due]);
    spawn(command)
}

fn finish(child: Child) -> Outcome {
    let output = child.wait_with_output().unwrap();
    Outcome {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn signal(child: &Child, signal: Signal) {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
    nix::sys::signal::kill(pid, signal).unwrap();
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn fires(home: &Path) -> Vec<FireRow> {
    let store = Store::open(home).unwrap();
    let mut fires = store.fires("nightly", 100).unwrap();
    fires.reverse();
    fires
}

fn fire_due(home: &Path, due: &str) -> Option<FireRow> {
    fires(home).into_iter().find(|fire| fire.due_at == due)
}

fn campaign_status(home: &Path, id: &str) -> CampaignStatus {
    Store::open(home).unwrap().campaign(id).unwrap().expect("the campaign exists").status
}

fn no_kitt_left(home: &Path) {
    wait_for("kitt processes of this home to end", || processes_mentioning(home).is_empty());
}

#[test]
fn the_scheduler_fires_a_one_minute_schedule_and_stops_on_sigterm() {
    let scratch = Scratch::new();
    let gated = Gated::start(true);
    scheduled(&scratch, &gated.server, "* * * * *");
    let home = scratch.home();

    let mut command = kitt(&scratch);
    command.env("KITT_SCHEDULER_START", "2026-12-05T01:59:57Z").args(["campaign", "scheduler"]);
    let scheduler = spawn(command);
    wait_for("the 02:00 fire to end", || {
        fire_due(&home, "2026-12-05T02:00:00Z").is_some_and(|fire| fire.status.is_final())
    });
    signal(&scheduler, Signal::SIGTERM);
    let outcome = finish(scheduler);

    assert_eq!(outcome.code, 0, "{outcome:?}");
    for said in [
        "scheduler started for",
        "schedule `nightly`: `* * * * *` for ",
        "next fire 2026-12-05 02:00 UTC",
        "schedule `nightly`: firing for 2026-12-05 02:00 UTC",
        "the fire for 2026-12-05 02:00 UTC ended: completed (exit 0)",
        "SIGTERM: scheduler stopped",
    ] {
        assert!(outcome.stdout.contains(said), "`{said}` missing from:\n{}", outcome.stdout);
    }
    let fires = fires(&home);
    assert_eq!(fires.len(), 1, "one fire: {fires:?}");
    let fire = &fires[0];
    assert_eq!(
        (fire.status, fire.exit_code, fire.action.as_deref()),
        (FireStatus::Completed, Some(0), Some("new"))
    );
    let campaign = fire.campaign_id.as_deref().expect("the fire names its campaign");
    assert_eq!(campaign_status(&home, campaign), CampaignStatus::Completed);
    let store = Store::open(&home).unwrap();
    let runs = store.campaign_runs(campaign, None, None).unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].key, "Served|openai|served");
    let messages = std::fs::read_to_string(home.join("logs/schedules/nightly.log")).unwrap();
    assert!(messages.contains(&format!("starting campaign {campaign}")), "{messages}");
    no_kitt_left(&home);
}

#[test]
fn sigterm_stops_a_running_fire_cleanly_and_the_next_fire_resumes_it() {
    let scratch = Scratch::new();
    let gated = Gated::start(false);
    scheduled(&scratch, &gated.server, "* * * * *");
    let home = scratch.home();

    let mut command = kitt(&scratch);
    command.env("KITT_SCHEDULER_START", "2026-12-05T01:59:58Z").args(["campaign", "scheduler"]);
    let scheduler = spawn(command);
    wait_for("the campaign's first request", || gated.gate.reached());
    signal(&scheduler, Signal::SIGTERM);
    let outcome = finish(scheduler);

    assert_eq!(outcome.code, 0, "{outcome:?}");
    assert!(outcome.stdout.contains("SIGTERM: stopping 1 running fire(s)"), "{}", outcome.stdout);
    assert!(
        outcome.stdout.contains("ended: interrupted, resumable (exit 130)"),
        "{}",
        outcome.stdout
    );
    let fire = fire_due(&home, "2026-12-05T02:00:00Z").unwrap();
    assert_eq!((fire.status, fire.exit_code), (FireStatus::Interrupted, Some(130)), "{fire:?}");
    let campaign = fire.campaign_id.clone().unwrap();
    assert_eq!(campaign_status(&home, &campaign), CampaignStatus::Pending);
    no_kitt_left(&home);
    let log = std::fs::read_to_string(&fire.log_path).unwrap();
    assert!(log.contains("SIGTERM: stopping campaign"), "{log}");

    gated.gate.open();
    let next = finish(spawn_fire(&scratch, "2026-12-05T02:01:00Z"));
    assert_eq!(next.code, 0, "{next:?}");
    assert!(
        next.stderr.contains(&format!(
            "resuming campaign {campaign}, left unfinished by fire #{}",
            fire.id
        )),
        "{}",
        next.stderr
    );
    let resumed = fire_due(&home, "2026-12-05T02:01:00Z").unwrap();
    assert_eq!(resumed.action.as_deref(), Some("resume"));
    assert_eq!(resumed.campaign_id.as_deref(), Some(campaign.as_str()));
    assert_eq!(campaign_status(&home, &campaign), CampaignStatus::Completed);
}

#[test]
fn a_second_fire_waits_for_the_first_and_a_third_is_skipped() {
    let scratch = Scratch::new();
    let gated = Gated::start(false);
    scheduled(&scratch, &gated.server, "*/15 * * * *");
    let home = scratch.home();

    let first = spawn_fire(&scratch, "2026-12-05T02:00:00Z");
    wait_for("the first fire's campaign to be mid-request", || gated.gate.reached());
    let second = spawn_fire(&scratch, "2026-12-05T02:15:00Z");
    wait_for("the second fire to wait", || {
        fire_due(&home, "2026-12-05T02:15:00Z")
            .is_some_and(|fire| fire.status == FireStatus::Waiting)
    });
    let third = finish(spawn_fire(&scratch, "2026-12-05T02:30:00Z"));
    assert_eq!(third.code, 0, "{third:?}");
    assert!(
        third.stderr.contains("skipped: fire #1 (due 2026-12-05 02:00 UTC, pid "),
        "{}",
        third.stderr
    );
    assert!(third.stderr.contains("another fire already waits for it"), "{}", third.stderr);

    gated.gate.open();
    let first = finish(first);
    let second = finish(second);
    assert_eq!(first.code, 0, "{first:?}");
    assert_eq!(second.code, 0, "{second:?}");
    assert!(
        second.stderr.contains("waiting: fire #1 (due 2026-12-05 02:00 UTC, pid ")
            && second.stderr.contains("is still running; this fire runs when it ends"),
        "{}",
        second.stderr
    );
    assert!(
        second.stderr.contains("the earlier fire has ended; this fire goes on"),
        "{}",
        second.stderr
    );

    let [a, b, c] = <[FireRow; 3]>::try_from(fires(&home)).expect("three fires");
    assert_eq!(
        (a.status, b.status, c.status),
        (FireStatus::Completed, FireStatus::Completed, FireStatus::Skipped)
    );
    assert_eq!(
        (a.action.as_deref(), b.action.as_deref(), c.action.as_deref()),
        (Some("new"), Some("new"), None)
    );
    let (one, two) = (a.campaign_id.unwrap(), b.campaign_id.unwrap());
    assert_ne!(one, two, "the waiting fire ran a campaign of its own");
    assert!(c.campaign_id.is_none());
    let store = Store::open(&home).unwrap();
    let first_campaign = store.campaign(&one).unwrap().unwrap();
    let second_campaign = store.campaign(&two).unwrap().unwrap();
    let ended: jiff::Timestamp = first_campaign.finished_at.unwrap().parse().unwrap();
    let began: jiff::Timestamp = second_campaign.created_at.parse().unwrap();
    assert!(ended <= began, "the campaigns did not overlap: {ended} then {began}");

    // The 02:00 fire again (another scheduler firing the same minute) does nothing.
    let again = finish(spawn_fire(&scratch, "2026-12-05T02:00:00Z"));
    assert_eq!(again.code, 0, "{again:?}");
    assert!(
        again.stderr.contains("has already run or is running; nothing to do"),
        "{}",
        again.stderr
    );
    assert_eq!(fires(&home).len(), 3);
}

#[test]
fn a_fire_resumes_the_campaign_a_killed_fire_left_once_its_driver_lets_go() {
    let scratch = Scratch::new();
    let gated = Gated::start(false);
    scheduled(&scratch, &gated.server, "@hourly");
    let home = scratch.home();

    let first = spawn_fire(&scratch, "2026-12-05T02:00:00Z");
    wait_for("the first fire's campaign to be mid-request", || gated.gate.reached());
    signal(&first, Signal::SIGKILL);
    finish(first);
    // The campaign got SIGTERM when its fire died, and stopped cleanly.
    no_kitt_left(&home);
    let killed = fire_due(&home, "2026-12-05T02:00:00Z").unwrap();
    assert_eq!(killed.status, FireStatus::Running, "nobody recorded the killed fire's end");
    let campaign = killed.campaign_id.clone().unwrap();
    assert_eq!(campaign_status(&home, &campaign), CampaignStatus::Pending);
    let status = scratch.run(kitt(&scratch).args(["--json", "campaign", "cron-status"]));
    let status: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
    assert_eq!(status[0]["last_fire"]["status"], "lost", "{status}");

    // Someone resumes the campaign by hand: the next fire waits for them.
    gated.gate.open();
    let by_hand = kitt::campaign::lock::CampaignLock::acquire(&home, &campaign).unwrap();
    let second = spawn_fire(&scratch, "2026-12-05T03:00:00Z");
    wait_for("the second fire to wait for the campaign", || {
        fire_due(&home, "2026-12-05T03:00:00Z")
            .is_some_and(|fire| fire.status == FireStatus::Waiting)
    });
    drop(by_hand);
    let second = finish(second);

    assert_eq!(second.code, 0, "{second:?}");
    assert!(
        second.stderr.contains(&format!(
            "waiting: campaign {campaign} is being run by another kitt process"
        )),
        "{}",
        second.stderr
    );
    assert!(
        second.stderr.contains(&format!(
            "resuming campaign {campaign}, left unfinished by fire #{}",
            killed.id
        )),
        "{}",
        second.stderr
    );
    let resumed = fire_due(&home, "2026-12-05T03:00:00Z").unwrap();
    assert_eq!(
        (resumed.status, resumed.action.as_deref()),
        (FireStatus::Completed, Some("resume"))
    );
    assert_eq!(campaign_status(&home, &campaign), CampaignStatus::Completed);
    let log: PathBuf = resumed.log_path.into();
    let log = std::fs::read_to_string(log).unwrap();
    assert!(log.contains("--resume --campaign-id"), "the fire's log shows the command: {log}");
}
