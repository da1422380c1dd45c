//! `kitt campaign cron-status`: every schedule with its next fires, its last
//! fire and whether its line is really in the crontab, as a table or JSON.
//!
//! The crontab is read each time (never trusted from the store): a line is
//! `present` when it is exactly the line kitt installed, `differs` when a
//! line with the schedule's marker says something else, `missing` when
//! there is none; `unavailable` when there is no `crontab` command and
//! `unreadable` when `crontab -l` fails. A fire recorded as waiting or
//! running whose process no longer exists shows as `lost`.

use std::io::{self, Write};

use comfy_table::Table;
use comfy_table::presets::UTF8_FULL_CONDENSED;
use serde::Serialize;

use crate::schedule::cron::CronExpr;
use crate::schedule::crontab::{self, Crontab};
use crate::schedule::{local_minute, log_dir};
use crate::store::{FireRow, ScheduleRow, Store, StoreError};

/// How many next fires are listed.
const NEXT_FIRES: usize = 3;

/// One schedule as `cron-status` shows it.
#[derive(Debug, Serialize)]
pub struct ScheduleView {
    /// The schedule's id.
    pub id: String,
    /// The campaign file.
    pub config: String,
    /// Its `campaign_name` when scheduled.
    pub campaign_name: String,
    /// The cron expression.
    pub cron: String,
    /// `option` (`--cron`) or `config` (the file's `schedule`).
    pub source: &'static str,
    /// The next fires in local time (RFC 3339 with the zone).
    pub next_fires: Vec<String>,
    /// The newest fire.
    pub last_fire: Option<FireView>,
    /// The crontab line's state.
    pub crontab: CrontabView,
    /// Variables the fires run with.
    pub environment: serde_json::Map<String, serde_json::Value>,
    /// Where the fires' logs are.
    pub log_dir: String,
}

/// A fire as `cron-status` shows it.
#[derive(Debug, Serialize)]
pub struct FireView {
    /// Its number.
    pub id: i64,
    /// The minute it fired for.
    pub due_at: String,
    /// When it started and ended.
    pub started_at: String,
    /// When it ended.
    pub finished_at: Option<String>,
    /// waiting, running, completed, failed, interrupted, error, skipped, or
    /// lost (recorded as waiting or running, but its process is gone).
    pub status: String,
    /// `new` or `resume`.
    pub action: Option<String>,
    /// The campaign it ran.
    pub campaign_id: Option<String>,
    /// The campaign run's exit status.
    pub exit_code: Option<i32>,
    /// Why it waited, was skipped, or how it ended.
    pub note: Option<String>,
    /// Its log file.
    pub log: String,
}

/// Whether a schedule's line is in the crontab.
#[derive(Debug, Serialize)]
pub struct CrontabView {
    /// present, missing, differs, unavailable or unreadable.
    pub state: &'static str,
    /// The user whose crontab was read, when not the current one.
    pub user: Option<String>,
    /// The line found, when one has the schedule's marker.
    pub line: Option<String>,
    /// The line kitt installed.
    pub expected: String,
    /// Why the crontab could not be read.
    pub error: Option<String>,
}

/// Every schedule of the store, by id.
pub fn views(store: &Store, home: &std::path::Path) -> Result<Vec<ScheduleView>, StoreError> {
    let crontab = Crontab::find();
    let text = crontab.as_ref().map(Crontab::read);
    let tz = jiff::tz::TimeZone::system();
    let now = jiff::Timestamp::now();
    let mut views = Vec::new();
    for row in store.schedules()? {
        let last_fire = store.fires(&row.id, 1)?.into_iter().next().map(fire_view);
        let next_fires = CronExpr::parse(&row.cron)
            .map(|expr| expr.next_fires(now, &tz, NEXT_FIRES))
            .unwrap_or_default()
            .iter()
            .map(ToString::to_string)
            .collect();
        let crontab = crontab_view(&row, crontab.as_ref(), text.as_ref());
        let environment = row
            .environment
            .iter()
            .map(|(name, value)| (name.clone(), serde_json::Value::String(value.clone())))
            .collect();
        views.push(ScheduleView {
            log_dir: log_dir(home, &row.id).display().to_string(),
            id: row.id,
            config: row.config_path,
            campaign_name: row.campaign_name,
            cron: row.cron,
            source: row.source.as_str(),
            next_fires,
            last_fire,
            crontab,
            environment,
        });
    }
    Ok(views)
}

fn crontab_view(
    row: &ScheduleRow,
    crontab: Option<&Crontab>,
    text: Option<&Result<String, crontab::CrontabError>>,
) -> CrontabView {
    let mut view = CrontabView {
        state: "unavailable",
        user: crontab.and_then(|crontab| crontab.user().map(str::to_owned)),
        line: None,
        expected: row.cron_line.clone(),
        error: None,
    };
    match text {
        None => {}
        Some(Err(error)) => {
            view.state = "unreadable";
            view.error = Some(crate::error::with_causes(error));
        }
        Some(Ok(text)) => {
            view.line = crontab::find_line(text, &row.id).map(str::to_owned);
            view.state = match &view.line {
                Some(line) if line.trim_end() == row.cron_line => "present",
                Some(_) => "differs",
                None => "missing",
            };
        }
    }
    view
}

fn fire_view(fire: FireRow) -> FireView {
    let lost = !fire.status.is_final() && !alive(&fire);
    FireView {
        id: fire.id,
        status: if lost { "lost".to_owned() } else { fire.status.to_string() },
        due_at: fire.due_at,
        started_at: fire.started_at,
        finished_at: fire.finished_at,
        action: fire.action,
        campaign_id: fire.campaign_id,
        exit_code: fire.exit_code,
        note: fire.note,
        log: fire.log_path,
    }
}

/// Whether the fire's process still runs (always true for another host's).
fn alive(fire: &FireRow) -> bool {
    if fire.host != crate::campaign::lock::host_name() {
        return true;
    }
    let Ok(pid) = i32::try_from(fire.pid) else { return false };
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) {
        Ok(()) => true,
        Err(errno) => errno == nix::errno::Errno::EPERM,
    }
}

/// The schedules as a table, then what needs the user's attention.
pub fn write_table(out: &mut impl Write, views: &[ScheduleView]) -> io::Result<()> {
    if views.is_empty() {
        return writeln!(
            out,
            "No schedules. Add one with `kitt campaign schedule CONFIG --cron EXPR`."
        );
    }
    let mut table = Table::new();
    table.load_style(UTF8_FULL_CONDENSED);
    super::fit_to_terminal(&mut table);
    table.set_header(["schedule", "cron", "next fire", "last fire", "campaign", "crontab"]);
    for view in views {
        let next = view
            .next_fires
            .first()
            .and_then(|next| next.parse::<jiff::Zoned>().ok())
            .map(|next| local_minute(next.timestamp()))
            .unwrap_or_else(|| "never".to_owned());
        let (last, campaign) = match &view.last_fire {
            Some(fire) => {
                let due = fire
                    .due_at
                    .parse::<jiff::Timestamp>()
                    .map(local_minute)
                    .unwrap_or_else(|_| fire.due_at.clone());
                let exit = fire.exit_code.map(|code| format!(", exit {code}")).unwrap_or_default();
                (
                    format!("{due} {}{exit}", fire.status),
                    fire.campaign_id.clone().unwrap_or_default(),
                )
            }
            None => ("never".to_owned(), String::new()),
        };
        table.add_row(vec![
            view.id.clone(),
            view.cron.clone(),
            next,
            last,
            campaign,
            view.crontab.state.to_owned(),
        ]);
    }
    writeln!(out, "{table}")?;
    for view in views {
        writeln!(out, "{}: {} (logs in {})", view.id, view.config, view.log_dir)?;
        if let Some(note) = view.last_fire.as_ref().and_then(|fire| fire.note.as_deref()) {
            writeln!(out, "  last fire: {note}")?;
        }
        match view.crontab.state {
            "missing" => writeln!(
                out,
                "  its crontab line is missing; `kitt campaign schedule {} --id {}` installs it \
                 again",
                crate::campaign::shell_word(&view.config),
                view.id
            )?,
            "differs" => writeln!(
                out,
                "  its crontab line was changed by hand: {}",
                view.crontab.line.as_deref().unwrap_or_default()
            )?,
            "unreadable" => writeln!(
                out,
                "  cannot read the crontab: {}",
                view.crontab.error.as_deref().unwrap_or_default()
            )?,
            _ => {}
        }
    }
    if views.iter().any(|view| view.crontab.state == "unavailable") {
        writeln!(
            out,
            "There is no `crontab` command here: run `kitt campaign scheduler` to fire these \
             schedules."
        )?;
    }
    Ok(())
}
