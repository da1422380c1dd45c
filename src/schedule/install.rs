//! `kitt campaign schedule` and `unschedule`: the store row and the crontab
//! line of a schedule, written and removed together.
//!
//! The crontab is edited first and the store second; when the store write
//! fails, the crontab is put back as it was read, so the two never
//! disagree because of kitt. Edits of one home's crontab lines take a lock
//! (`<home>/locks/crontab.lock`) so that two kitt commands never interleave
//! their read-edit-install.

use std::fs::File;
use std::path::Path;

use jiff::Zoned;

use super::cron::CronExpr;
use super::crontab::{self, Crontab, LineSpec};
use crate::config;
use crate::error::{KittError, with_causes};
use crate::store::{DB_FILE, ScheduleRow, ScheduleSource, Store};

/// What `kitt campaign schedule` was asked.
#[derive(Debug)]
pub struct Request<'a> {
    /// The campaign file.
    pub config: &'a Path,
    /// `--cron`.
    pub cron: Option<&'a str>,
    /// `--id`.
    pub id: Option<&'a str>,
}

/// Where a schedule went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Installed {
    /// Into the crontab (of this user, when named).
    Crontab {
        /// `KITT_CRONTAB_USER`, when set.
        user: Option<String>,
    },
    /// Nowhere: there is no `crontab` command here.
    NoCrontab,
}

/// A schedule stored (and installed).
#[derive(Debug)]
pub struct Scheduled {
    /// The stored schedule.
    pub row: ScheduleRow,
    /// The schedule it replaced.
    pub replaced: Option<ScheduleRow>,
    /// Where it was installed.
    pub installed: Installed,
    /// The campaign file's warnings.
    pub warnings: Vec<String>,
    /// Things worth saying (an override, secrets left out).
    pub notes: Vec<String>,
    /// The next fires, local time.
    pub next: Vec<Zoned>,
}

/// Validates, stores and installs a schedule.
pub fn schedule(home: &Path, request: &Request<'_>) -> Result<Scheduled, KittError> {
    let campaign = config::load(request.config)?;
    let mut notes = Vec::new();
    let (expr, source) = expression(request, &campaign, &mut notes)?;
    let id = schedule_id(request)?;

    let config_path = std::fs::canonicalize(request.config).map_err(|error| {
        KittError::Environment(format!("cannot resolve {}: {error}", request.config.display()))
    })?;
    let kitt = std::env::current_exe()
        .and_then(std::fs::canonicalize)
        .map_err(|error| KittError::Environment(format!("cannot find kitt's binary: {error}")))?;
    let home = super::absolute(home);
    let environment = super::environment_snapshot();
    for secret in super::SECRET_ENV.iter().filter(|name| std::env::var_os(name).is_some()) {
        notes.push(format!(
            "{secret} is set here but is not written to the crontab; fires get it from the \
             campaign file, or from a `{secret}=…` line you add above kitt's in the crontab"
        ));
    }
    let log = super::fire_messages_log(&home, &id);
    let line = crontab::render(&LineSpec {
        expr: expr.as_str(),
        kitt: &kitt,
        home: &home,
        id: &id,
        env: &environment,
        log: &log,
    })
    .map_err(|error| KittError::Environment(error.to_string()))?;

    let store = Store::open(&home).map_err(|error| KittError::Environment(with_causes(&error)))?;
    let logs = super::log_dir(&home, &id);
    std::fs::create_dir_all(&logs).map_err(|error| {
        KittError::Environment(format!("cannot create {}: {error}", logs.display()))
    })?;
    let row = ScheduleRow {
        id: id.clone(),
        config_path: config_path.display().to_string(),
        campaign_name: campaign.name.clone(),
        cron: expr.as_str().to_owned(),
        source,
        kitt_path: kitt.display().to_string(),
        environment,
        cron_line: line.clone(),
        created_at: String::new(),
        updated_at: String::new(),
    };
    let (replaced, installed) = match Crontab::find() {
        Some(crontab) => {
            let replaced = edit_crontab(
                &home,
                &crontab,
                |text| crontab::with_line(text, &id, &line),
                || store.put_schedule(&row),
            )?;
            (replaced, Installed::Crontab { user: crontab.user().map(str::to_owned) })
        }
        None => {
            let replaced = store
                .put_schedule(&row)
                .map_err(|error| KittError::Environment(with_causes(&error)))?;
            (replaced, Installed::NoCrontab)
        }
    };
    let row = store
        .schedule(&id)
        .map_err(|error| KittError::Environment(with_causes(&error)))?
        .unwrap_or(row);
    let next = expr.next_fires(jiff::Timestamp::now(), &jiff::tz::TimeZone::system(), 3);
    Ok(Scheduled { row, replaced, installed, warnings: campaign.warnings, notes, next })
}

/// What `unschedule` removed.
#[derive(Debug)]
pub struct Unscheduled {
    /// The store row, when there was one.
    pub row: Option<ScheduleRow>,
    /// Whether a crontab line was removed.
    pub line_removed: bool,
    /// Whether there is a crontab to look in.
    pub crontab: bool,
}

/// Removes a schedule's store row and crontab line; an id found in neither
/// is an error.
pub fn unschedule(home: &Path, id: &str) -> Result<Unscheduled, KittError> {
    let home = super::absolute(home);
    let environment = |error: crate::store::StoreError| KittError::Environment(with_causes(&error));
    let store = if home.join(DB_FILE).exists() {
        Some(Store::open(&home).map_err(environment)?)
    } else {
        None
    };
    let row = match &store {
        Some(store) => store.schedule(id).map_err(environment)?,
        None => None,
    };
    let crontab = Crontab::find();
    let mut line_removed = false;
    let delete = || -> Result<(), crate::store::StoreError> {
        if let Some(store) = &store {
            store.delete_schedule(id)?;
        }
        Ok(())
    };
    match &crontab {
        Some(crontab) => {
            edit_crontab(
                &home,
                crontab,
                |text| {
                    let (rest, removed) = crontab::without_line(text, id);
                    line_removed = removed;
                    rest
                },
                delete,
            )?;
        }
        None => delete().map_err(environment)?,
    }
    if row.is_none() && !line_removed {
        return Err(KittError::Usage(format!(
            "no schedule `{id}`; `kitt campaign cron-status` lists the schedules"
        )));
    }
    Ok(Unscheduled { row, line_removed, crontab: crontab.is_some() })
}

/// Reads the crontab, installs `edit`'s version of it when different, then
/// runs `store`; puts the crontab back when `store` fails.
fn edit_crontab<T>(
    home: &Path,
    crontab: &Crontab,
    edit: impl FnOnce(&str) -> String,
    store: impl FnOnce() -> Result<T, crate::store::StoreError>,
) -> Result<T, KittError> {
    let _lock = lock_edits(home)?;
    let crontab_error = |error: crontab::CrontabError| KittError::Environment(with_causes(&error));
    let before = crontab.read().map_err(crontab_error)?;
    let after = edit(&before);
    let changed = after != before;
    if changed {
        crontab.install(&after).map_err(crontab_error)?;
    }
    match store() {
        Ok(value) => Ok(value),
        Err(error) => {
            if changed && let Err(restore) = crontab.install(&before) {
                tracing::warn!(error = %with_causes(&restore), "could not restore the crontab");
            }
            Err(KittError::Environment(with_causes(&error)))
        }
    }
}

/// Holds `<home>/locks/crontab.lock` while one command edits the crontab.
fn lock_edits(home: &Path) -> Result<File, KittError> {
    let path = home.join("locks").join("crontab.lock");
    let fail = |error: std::io::Error| {
        KittError::Environment(format!("cannot lock {}: {error}", path.display()))
    };
    std::fs::create_dir_all(home.join("locks")).map_err(fail)?;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(fail)?;
    file.lock().map_err(fail)?;
    Ok(file)
}

/// The expression: `--cron`, else the file's `schedule`.
fn expression(
    request: &Request<'_>,
    campaign: &config::Campaign,
    notes: &mut Vec<String>,
) -> Result<(CronExpr, ScheduleSource), KittError> {
    match (request.cron, &campaign.schedule) {
        (Some(text), file) => {
            let expr = CronExpr::parse(text)
                .map_err(|error| KittError::Usage(format!("invalid --cron: {error}")))?;
            if let Some(file) = file.as_deref().filter(|file| *file != expr.as_str()) {
                notes.push(format!("--cron `{expr}` overrides the file's `schedule: \"{file}\"`"));
            }
            Ok((expr, ScheduleSource::Option))
        }
        (None, Some(file)) => {
            let expr = CronExpr::parse(file).map_err(|error| {
                KittError::Usage(format!("`schedule` in {}: {error}", request.config.display()))
            })?;
            Ok((expr, ScheduleSource::Config))
        }
        (None, None) => Err(KittError::Usage(format!(
            "no cron expression: give --cron EXPR, or set `schedule` in {}",
            request.config.display()
        ))),
    }
}

/// `--id`, else the file's stem.
fn schedule_id(request: &Request<'_>) -> Result<String, KittError> {
    let (id, origin) = match request.id {
        Some(id) => (id.to_owned(), "--id"),
        None => {
            let stem = request.config.file_stem().map(|stem| stem.to_string_lossy().into_owned());
            (stem.unwrap_or_default(), "the file name")
        }
    };
    if crate::campaign::valid_campaign_id(&id) {
        return Ok(id);
    }
    let hint = if request.id.is_none() { "; give one with --id" } else { "" };
    Err(KittError::Usage(format!(
        "schedule id `{id}` (from {origin}) is not valid: use 1 to 100 letters, digits, `.`, \
         `_` or `-`, starting with a letter or digit{hint}"
    )))
}
