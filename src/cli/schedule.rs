//! `kitt campaign schedule`, `cron-status`, `unschedule`, `scheduler` and
//! the hidden `fire`: argument handling and output; the work is in
//! [`crate::schedule`].

use std::io::Write;
use std::path::Path;

use serde_json::json;

use super::{FireArgs, ScheduleArgs, UnscheduleArgs};
use crate::error::{Exit, KittError, with_causes};
use crate::report;
use crate::schedule::install::{self, Installed, Request};
use crate::schedule::{fire as firing, local_minute, scheduler as foreground};
use crate::store::{SCHEDULES_VERSION, Store};

/// `kitt campaign schedule CONFIG [--cron EXPR] [--id ID]`.
pub fn schedule(args: &ScheduleArgs, home: &Path, json: bool) -> Result<Exit, KittError> {
    let request =
        Request { config: &args.config, cron: args.cron.as_deref(), id: args.id.as_deref() };
    let done = install::schedule(home, &request)?;
    for warning in &done.warnings {
        eprintln!("warning: {warning}");
    }
    for note in &done.notes {
        eprintln!("note: {note}");
    }
    let row = &done.row;
    let mut out = std::io::stdout().lock();
    let written = if json {
        let installed = match &done.installed {
            Installed::Crontab { user } => json!({"crontab": true, "user": user}),
            Installed::NoCrontab => json!({"crontab": false, "user": null}),
        };
        let value = json!({
            "id": row.id,
            "config": row.config_path,
            "cron": row.cron,
            "source": row.source.as_str(),
            "replaced": done.replaced.is_some(),
            "installed": installed,
            "cron_line": row.cron_line,
            "next_fires": done.next.iter().map(ToString::to_string).collect::<Vec<_>>(),
        });
        serde_json::to_writer_pretty(&mut out, &value)
            .map_err(std::io::Error::from)
            .and_then(|()| writeln!(out))
    } else {
        write_scheduled(&mut out, &done)
    };
    written.and_then(|()| out.flush()).map_err(KittError::Output)?;
    Ok(Exit::Success)
}

fn write_scheduled(out: &mut impl Write, done: &install::Scheduled) -> std::io::Result<()> {
    let row = &done.row;
    let verb = if done.replaced.is_some() { "rescheduled" } else { "scheduled" };
    writeln!(out, "{verb} `{}`: {} at `{}`", row.id, row.config_path, row.cron)?;
    let next: Vec<String> = done.next.iter().map(|next| local_minute(next.timestamp())).collect();
    writeln!(
        out,
        "next fires: {}",
        if next.is_empty() { "never".to_owned() } else { next.join(", ") }
    )?;
    match &done.installed {
        Installed::Crontab { user } => {
            let whose = user.as_ref().map(|user| format!(" of user `{user}`")).unwrap_or_default();
            writeln!(out, "installed in the crontab{whose}:\n  {}", row.cron_line)?;
        }
        Installed::NoCrontab => writeln!(
            out,
            "the crontab is unavailable (no `crontab` command here): the schedule is stored but \
             not installed; run `kitt campaign scheduler` to fire it (for example as a service)"
        )?,
    }
    Ok(())
}

/// `kitt campaign cron-status`.
pub fn status(home: &Path, json: bool) -> Result<Exit, KittError> {
    let environment = |error: crate::store::StoreError| KittError::Environment(with_causes(&error));
    let views = match Store::open_read_only(home).map_err(environment)? {
        Some(store) if store.schema_version().map_err(environment)? >= SCHEDULES_VERSION => {
            report::schedule::views(&store, home).map_err(environment)?
        }
        _ => Vec::new(),
    };
    let mut out = std::io::stdout().lock();
    let written = if json {
        serde_json::to_writer_pretty(&mut out, &views)
            .map_err(std::io::Error::from)
            .and_then(|()| writeln!(out))
    } else {
        report::schedule::write_table(&mut out, &views)
    };
    written.and_then(|()| out.flush()).map_err(KittError::Output)?;
    Ok(Exit::Success)
}

/// `kitt campaign unschedule ID`.
pub fn unschedule(args: &UnscheduleArgs, home: &Path, json: bool) -> Result<Exit, KittError> {
    let done = install::unschedule(home, &args.id)?;
    let mut out = std::io::stdout().lock();
    let written = if json {
        let value = json!({
            "id": args.id,
            "stored": done.row.is_some(),
            "crontab_line_removed": done.line_removed,
        });
        serde_json::to_writer_pretty(&mut out, &value)
            .map_err(std::io::Error::from)
            .and_then(|()| writeln!(out))
    } else {
        let from = match (done.row.is_some(), done.line_removed) {
            (true, true) => "the store and the crontab",
            (true, false) if done.crontab => "the store (the crontab had no line for it)",
            (true, false) => "the store",
            (false, _) => "the crontab (the store had no row for it)",
        };
        writeln!(out, "unscheduled `{}`: removed from {from}", args.id)
    };
    written.and_then(|()| out.flush()).map_err(KittError::Output)?;
    Ok(Exit::Success)
}

/// `kitt campaign scheduler`.
pub fn scheduler(home: &Path) -> Result<Exit, KittError> {
    foreground::run(home)
}

/// `kitt campaign fire ID [--due TIME]`.
pub fn fire(args: &FireArgs, home: &Path) -> Result<Exit, KittError> {
    let due = match &args.due {
        Some(text) => Some(text.parse::<jiff::Timestamp>().map_err(|error| {
            KittError::Usage(format!("--due `{text}` is not an RFC 3339 time: {error}"))
        })?),
        None => None,
    };
    firing::fire(home, &args.id, due)
}
