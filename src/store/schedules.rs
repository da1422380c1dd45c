//! Schedules and their fires in the store.
//!
//! A schedule row is written whole (a reschedule replaces it); a fire row is
//! inserted when a fire starts — at most one per schedule and due minute —
//! and updated as it waits, runs and ends, each step one statement.
//! Removing a schedule removes its fires.

use rusqlite::{OptionalExtension, params};

use super::Store;
use super::error::{Context, StoreError};

/// How a schedule's expression was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScheduleSource {
    /// `--cron`.
    Option,
    /// The campaign file's `schedule` key.
    Config,
}

impl ScheduleSource {
    /// The stored word.
    pub fn as_str(self) -> &'static str {
        match self {
            ScheduleSource::Option => "option",
            ScheduleSource::Config => "config",
        }
    }

    fn parse(text: &str) -> ScheduleSource {
        if text == "config" { ScheduleSource::Config } else { ScheduleSource::Option }
    }
}

/// A schedule as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleRow {
    /// The schedule's id (also its crontab marker).
    pub id: String,
    /// The campaign file, absolute.
    pub config_path: String,
    /// Its `campaign_name` when scheduled.
    pub campaign_name: String,
    /// The cron expression.
    pub cron: String,
    /// Where the expression came from.
    pub source: ScheduleSource,
    /// The kitt binary the crontab line runs.
    pub kitt_path: String,
    /// Variables the fires run with, in order.
    pub environment: Vec<(String, String)>,
    /// The crontab line, without its newline.
    pub cron_line: String,
    /// When first scheduled (RFC 3339).
    pub created_at: String,
    /// When last (re)scheduled.
    pub updated_at: String,
}

/// Where a fire is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FireStatus {
    /// An earlier fire of the schedule still runs; this one waits for it.
    Waiting,
    /// The campaign runs.
    Running,
    /// The campaign ended with every run a success or skipped.
    Completed,
    /// The campaign ended with some run failed.
    Failed,
    /// Stopped by a signal; the campaign is resumable.
    Interrupted,
    /// The campaign could not run (a config or environment problem).
    Error,
    /// Not run: an earlier fire runs and another already waits.
    Skipped,
}

impl FireStatus {
    /// The stored word.
    pub fn as_str(self) -> &'static str {
        match self {
            FireStatus::Waiting => "waiting",
            FireStatus::Running => "running",
            FireStatus::Completed => "completed",
            FireStatus::Failed => "failed",
            FireStatus::Interrupted => "interrupted",
            FireStatus::Error => "error",
            FireStatus::Skipped => "skipped",
        }
    }

    fn parse(text: &str) -> FireStatus {
        match text {
            "waiting" => FireStatus::Waiting,
            "running" => FireStatus::Running,
            "completed" => FireStatus::Completed,
            "failed" => FireStatus::Failed,
            "interrupted" => FireStatus::Interrupted,
            "skipped" => FireStatus::Skipped,
            _ => FireStatus::Error,
        }
    }

    /// Whether the fire has ended.
    pub fn is_final(self) -> bool {
        !matches!(self, FireStatus::Waiting | FireStatus::Running)
    }
}

impl std::fmt::Display for FireStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One fire as stored.
#[derive(Debug, Clone)]
pub struct FireRow {
    /// Its number.
    pub id: i64,
    /// The schedule.
    pub schedule_id: String,
    /// The minute it fired for (RFC 3339).
    pub due_at: String,
    /// When the process started.
    pub started_at: String,
    /// When it ended.
    pub finished_at: Option<String>,
    /// The fire's process.
    pub pid: u32,
    /// Its host.
    pub host: String,
    /// Where it is.
    pub status: FireStatus,
    /// `new` or `resume`, once decided.
    pub action: Option<String>,
    /// The campaign it ran or runs.
    pub campaign_id: Option<String>,
    /// The campaign run's exit status.
    pub exit_code: Option<i32>,
    /// Why it waited, was skipped or failed.
    pub note: Option<String>,
    /// Its log file.
    pub log_path: String,
}

/// A fire about to start.
#[derive(Debug, Clone)]
pub struct NewFire<'a> {
    /// The schedule.
    pub schedule_id: &'a str,
    /// The minute it fires for.
    pub due: jiff::Timestamp,
    /// This process.
    pub pid: u32,
    /// This host.
    pub host: &'a str,
    /// Its log file.
    pub log_path: &'a str,
}

const SCHEDULE_COLUMNS: &str = "id, config_path, campaign_name, cron, source, kitt_path, \
     environment, cron_line, created_at, updated_at";

const FIRE_COLUMNS: &str = "id, schedule_id, due_at, started_at, finished_at, pid, host, status, \
     action, campaign_id, exit_code, note, log_path";

impl Store {
    /// Stores a schedule, replacing one with the same id (its fires stay);
    /// returns the one replaced.
    pub fn put_schedule(&self, row: &ScheduleRow) -> Result<Option<ScheduleRow>, StoreError> {
        let previous = self.schedule(&row.id)?;
        let environment = serde_json::to_string(&row.environment).unwrap_or_else(|_| "[]".into());
        self.conn
            .execute(
                "INSERT INTO schedules (id, config_path, campaign_name, cron, source, kitt_path, \
                 environment, cron_line, created_at, updated_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9) \
                 ON CONFLICT (id) DO UPDATE SET config_path = excluded.config_path, \
                 campaign_name = excluded.campaign_name, cron = excluded.cron, \
                 source = excluded.source, kitt_path = excluded.kitt_path, \
                 environment = excluded.environment, cron_line = excluded.cron_line, \
                 updated_at = excluded.updated_at",
                params![
                    row.id,
                    row.config_path,
                    row.campaign_name,
                    row.cron,
                    row.source.as_str(),
                    row.kitt_path,
                    environment,
                    row.cron_line,
                    jiff::Timestamp::now().to_string(),
                ],
            )
            .doing(&self.path, "store a schedule")?;
        Ok(previous)
    }

    /// One schedule.
    pub fn schedule(&self, id: &str) -> Result<Option<ScheduleRow>, StoreError> {
        self.conn
            .query_row(
                &format!("SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE id = ?1"),
                [id],
                schedule_row,
            )
            .optional()
            .doing(&self.path, "read a schedule")
    }

    /// Every schedule, by id.
    pub fn schedules(&self) -> Result<Vec<ScheduleRow>, StoreError> {
        let mut statement = self
            .conn
            .prepare(&format!("SELECT {SCHEDULE_COLUMNS} FROM schedules ORDER BY id"))
            .doing(&self.path, "list schedules")?;
        statement
            .query_map([], schedule_row)
            .and_then(|rows| rows.collect())
            .doing(&self.path, "list schedules")
    }

    /// Removes a schedule and its fires; `false` when there was none.
    pub fn delete_schedule(&self, id: &str) -> Result<bool, StoreError> {
        let deleted = self
            .conn
            .execute("DELETE FROM schedules WHERE id = ?1", [id])
            .doing(&self.path, "remove a schedule")?;
        Ok(deleted > 0)
    }

    /// Records a fire as `running`; `None` when this schedule already has a
    /// fire for that minute (another scheduler fired it).
    pub fn insert_fire(&self, new: &NewFire<'_>) -> Result<Option<i64>, StoreError> {
        let inserted = self
            .conn
            .execute(
                "INSERT INTO schedule_fires (schedule_id, due_at, due_unix, started_at, pid, \
                 host, status, log_path) VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'running', ?7) \
                 ON CONFLICT (schedule_id, due_unix) DO NOTHING",
                params![
                    new.schedule_id,
                    new.due.to_string(),
                    new.due.as_second(),
                    jiff::Timestamp::now().to_string(),
                    new.pid,
                    new.host,
                    new.log_path,
                ],
            )
            .doing(&self.path, "record a fire")?;
        Ok((inserted == 1).then(|| self.conn.last_insert_rowid()))
    }

    /// Marks a fire waiting (or running again), with why.
    pub fn fire_state(
        &self,
        fire_id: i64,
        status: FireStatus,
        note: Option<&str>,
    ) -> Result<(), StoreError> {
        self.conn
            .execute(
                "UPDATE schedule_fires SET status = ?2, note = coalesce(?3, note) WHERE id = ?1",
                params![fire_id, status.as_str(), note],
            )
            .doing(&self.path, "update a fire")?;
        Ok(())
    }

    /// Records the campaign a fire runs and whether it resumes it.
    pub fn fire_campaign(
        &self,
        fire_id: i64,
        campaign_id: &str,
        resume: bool,
    ) -> Result<(), StoreError> {
        self.conn
            .execute(
                "UPDATE schedule_fires SET status = 'running', campaign_id = ?2, action = ?3 \
                 WHERE id = ?1",
                params![fire_id, campaign_id, if resume { "resume" } else { "new" }],
            )
            .doing(&self.path, "update a fire")?;
        Ok(())
    }

    /// Records how a fire ended.
    pub fn finish_fire(
        &self,
        fire_id: i64,
        status: FireStatus,
        exit_code: Option<i32>,
        note: Option<&str>,
    ) -> Result<(), StoreError> {
        self.conn
            .execute(
                "UPDATE schedule_fires SET status = ?2, exit_code = ?3, \
                 note = coalesce(?4, note), finished_at = ?5 WHERE id = ?1",
                params![
                    fire_id,
                    status.as_str(),
                    exit_code,
                    note,
                    jiff::Timestamp::now().to_string()
                ],
            )
            .doing(&self.path, "record the end of a fire")?;
        Ok(())
    }

    /// A schedule's fires, newest first, at most `limit`.
    pub fn fires(&self, schedule_id: &str, limit: u32) -> Result<Vec<FireRow>, StoreError> {
        let mut statement = self
            .conn
            .prepare(&format!(
                "SELECT {FIRE_COLUMNS} FROM schedule_fires WHERE schedule_id = ?1 \
                 ORDER BY id DESC LIMIT ?2"
            ))
            .doing(&self.path, "list fires")?;
        statement
            .query_map(params![schedule_id, limit], fire_row)
            .and_then(|rows| rows.collect())
            .doing(&self.path, "list fires")
    }

    /// One fire.
    pub fn fire(&self, fire_id: i64) -> Result<Option<FireRow>, StoreError> {
        self.conn
            .query_row(
                &format!("SELECT {FIRE_COLUMNS} FROM schedule_fires WHERE id = ?1"),
                [fire_id],
                fire_row,
            )
            .optional()
            .doing(&self.path, "read a fire")
    }

    /// The newest fire before `before` that named a campaign.
    pub fn last_campaign_fire(
        &self,
        schedule_id: &str,
        before: i64,
    ) -> Result<Option<FireRow>, StoreError> {
        self.conn
            .query_row(
                &format!(
                    "SELECT {FIRE_COLUMNS} FROM schedule_fires WHERE schedule_id = ?1 \
                     AND id < ?2 AND campaign_id IS NOT NULL ORDER BY id DESC LIMIT 1"
                ),
                params![schedule_id, before],
                fire_row,
            )
            .optional()
            .doing(&self.path, "find the last fire")
    }

    /// The newest fire before `before` that is still running, else the
    /// newest still waiting.
    pub fn last_open_fire(
        &self,
        schedule_id: &str,
        before: i64,
    ) -> Result<Option<FireRow>, StoreError> {
        self.conn
            .query_row(
                &format!(
                    "SELECT {FIRE_COLUMNS} FROM schedule_fires WHERE schedule_id = ?1 \
                     AND id < ?2 AND status IN ('waiting', 'running') \
                     ORDER BY status = 'running' DESC, id DESC LIMIT 1"
                ),
                params![schedule_id, before],
                fire_row,
            )
            .optional()
            .doing(&self.path, "find a running fire")
    }
}

fn schedule_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<ScheduleRow> {
    let environment: String = row.get(6)?;
    Ok(ScheduleRow {
        id: row.get(0)?,
        config_path: row.get(1)?,
        campaign_name: row.get(2)?,
        cron: row.get(3)?,
        source: ScheduleSource::parse(&row.get::<_, String>(4)?),
        kitt_path: row.get(5)?,
        environment: serde_json::from_str(&environment).unwrap_or_default(),
        cron_line: row.get(7)?,
        created_at: row.get(8)?,
        updated_at: row.get(9)?,
    })
}

fn fire_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<FireRow> {
    Ok(FireRow {
        id: row.get(0)?,
        schedule_id: row.get(1)?,
        due_at: row.get(2)?,
        started_at: row.get(3)?,
        finished_at: row.get(4)?,
        pid: row.get(5)?,
        host: row.get(6)?,
        status: FireStatus::parse(&row.get::<_, String>(7)?),
        action: row.get(8)?,
        campaign_id: row.get(9)?,
        exit_code: row.get(10)?,
        note: row.get(11)?,
        log_path: row.get(12)?,
    })
}
