//! Campaign state: campaigns, the runs of their matrix, every attempt at a
//! run, and every invocation that drove them (sessions).
//!
//! Each state transition is one committed transaction, so a `kill -9` at any
//! instant leaves a store from which `--resume` finishes the campaign. Reads
//! aggregate in SQL and never load result JSON, so `campaign status` on a
//! campaign of ten thousand runs stays fast while another process writes.

use rusqlite::{OptionalExtension, Row, TransactionBehavior, params};
use serde::Serialize;

use super::connection::Store;
use super::error::{Context, StoreError};

/// A campaign's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CampaignStatus {
    /// Created or interrupted; resumable.
    Pending,
    /// A process is driving it (or was, until it died: see the owner).
    Running,
    /// Finished with every run a success or skipped.
    Completed,
    /// Finished with some run failed.
    Failed,
}

/// A run's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    /// Not run yet, or interrupted and to be redone.
    Pending,
    /// Being run (or its process died: see the campaign's owner).
    Running,
    /// Its suite produced valid measurements.
    Success,
    /// It failed; `reason` says why.
    Failed,
    /// A check kept it from running; `reason` says which.
    Skipped,
}

macro_rules! text_enum {
    ($name:ident { $($variant:ident = $text:literal),+ $(,)? }) => {
        impl $name {
            /// The name stored and printed.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            /// Parses a stored name.
            pub fn parse(text: &str) -> Option<Self> {
                match text { $($text => Some($name::$variant),)+ _ => None }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

text_enum!(CampaignStatus {
    Pending = "pending",
    Running = "running",
    Completed = "completed",
    Failed = "failed",
});
text_enum!(RunStatus {
    Pending = "pending",
    Running = "running",
    Success = "success",
    Failed = "failed",
    Skipped = "skipped",
});

impl RunStatus {
    /// Every status, in display order.
    pub const ALL: [RunStatus; 5] = [
        RunStatus::Success,
        RunStatus::Failed,
        RunStatus::Skipped,
        RunStatus::Running,
        RunStatus::Pending,
    ];
}

/// What a new campaign records.
#[derive(Debug, Clone)]
pub struct NewCampaign<'a> {
    /// Its id (slug of the name plus a UTC timestamp).
    pub id: &'a str,
    /// `campaign_name`.
    pub name: &'a str,
    /// The config file, absolute.
    pub config_path: &'a str,
    /// SHA-256 of the config file's bytes.
    pub config_hash: &'a str,
    /// The config with credentials redacted.
    pub config_yaml: &'a str,
    /// The storage root models live under.
    pub storage_root: &'a str,
}

/// One campaign as stored.
#[derive(Debug, Clone, Serialize)]
pub struct CampaignRow {
    /// Its id.
    pub id: String,
    /// `campaign_name`.
    pub name: String,
    /// Its state.
    pub status: CampaignStatus,
    /// The config file of the latest session.
    pub config_path: String,
    /// SHA-256 of that config.
    pub config_hash: String,
    /// The storage root.
    pub storage_root: String,
    /// When it was created (RFC 3339, UTC).
    pub created_at: String,
    /// When its state last changed.
    pub updated_at: String,
    /// When it last finished.
    pub finished_at: Option<String>,
    /// The process driving it (while `running`).
    pub owner_pid: Option<i64>,
    /// The host of that process.
    pub owner_host: Option<String>,
    /// The run being executed.
    pub current_run: Option<i64>,
}

/// A campaign with its run counts, for listings.
#[derive(Debug, Clone, Serialize)]
pub struct CampaignSummary {
    /// The campaign.
    #[serde(flatten)]
    pub campaign: CampaignRow,
    /// Runs in the current config.
    pub total: u64,
    /// Runs per status (runs the config lost are not counted).
    pub counts: RunCounts,
}

/// Runs per status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RunCounts {
    /// `pending`.
    pub pending: u64,
    /// `running`.
    pub running: u64,
    /// `success`.
    pub success: u64,
    /// `failed`.
    pub failed: u64,
    /// `skipped`.
    pub skipped: u64,
}

impl RunCounts {
    /// The count for one status.
    pub fn get(&self, status: RunStatus) -> u64 {
        let mut counts = *self;
        *counts.slot(status)
    }

    fn slot(&mut self, status: RunStatus) -> &mut u64 {
        match status {
            RunStatus::Pending => &mut self.pending,
            RunStatus::Running => &mut self.running,
            RunStatus::Success => &mut self.success,
            RunStatus::Failed => &mut self.failed,
            RunStatus::Skipped => &mut self.skipped,
        }
    }

    /// Every run counted.
    pub fn total(&self) -> u64 {
        self.pending + self.running + self.success + self.failed + self.skipped
    }
}

/// What the current config says about one run.
#[derive(Debug, Clone)]
pub struct RunSpec<'a> {
    /// `model|engine|quant`.
    pub key: &'a str,
    /// Model name.
    pub model: &'a str,
    /// Engine name.
    pub engine: &'a str,
    /// Quantization label.
    pub quant: &'a str,
    /// Suite name.
    pub suite: &'a str,
    /// Where the model comes from.
    pub source: &'a str,
    /// Its size, when known.
    pub size_bytes: Option<u64>,
    /// Bytes the plan says it downloads (0 when its files are local).
    pub download_bytes: u64,
    /// The files it loads, relative to the repository.
    pub files: &'a [String],
}

/// The headline numbers of a successful run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Headline {
    /// Best output tokens per second of the suite.
    pub output_tokens_per_second: Option<f64>,
    /// Median time to first token of the first benchmark that measured it.
    pub ttft_ms_p50: Option<f64>,
    /// Failed requests / requests over the whole suite.
    pub error_rate: Option<f64>,
}

/// One run as stored.
#[derive(Debug, Clone, Serialize)]
pub struct RunRow {
    /// Row id.
    pub id: i64,
    /// Position in the campaign (execution order).
    pub position: i64,
    /// `model|engine|quant`.
    pub key: String,
    /// Model name.
    pub model: String,
    /// Engine name.
    pub engine: String,
    /// Quantization label.
    pub quant: String,
    /// Suite name.
    pub suite: String,
    /// Where the model comes from.
    pub source: String,
    /// Size in bytes, when known.
    pub size_bytes: Option<u64>,
    /// Whether the latest config still names this run.
    pub in_config: bool,
    /// Its state.
    pub status: RunStatus,
    /// What it is doing (while running).
    pub phase: Option<String>,
    /// Times it was started.
    pub attempts: i64,
    /// Why it was skipped or failed.
    pub reason: Option<String>,
    /// When its last attempt started.
    pub started_at: Option<String>,
    /// When its last attempt ended.
    pub finished_at: Option<String>,
    /// How long its last attempt took.
    pub duration_s: Option<f64>,
    /// Its stored result.
    pub result_id: Option<String>,
    /// Its run directory.
    pub run_dir: Option<String>,
    /// Headline metrics of a success.
    #[serde(flatten)]
    pub headline: Headline,
    /// The item limit of its latest attempt (`--limit`): its quality
    /// benchmarks scored only their first N items. `None`: whole datasets.
    pub item_limit: Option<u32>,
    /// The devices its latest attempt was placed on in a parallel campaign
    /// (`GPU 0,1`, `CPU`); absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub devices: Option<String>,
}

impl RunRow {
    /// Whether a success of this run stands for a session run with `limit`:
    /// a full success always does, a limited one only for the same limit.
    pub fn done_for(&self, limit: Option<u32>) -> bool {
        self.status == RunStatus::Success && (self.item_limit.is_none() || self.item_limit == limit)
    }
}

/// How an attempt ended.
#[derive(Debug, Clone)]
pub enum RunEnd<'a> {
    /// Valid measurements, stored.
    Success {
        /// The result.
        result_id: &'a str,
        /// Its run directory.
        run_dir: &'a str,
        /// Headline numbers.
        headline: Headline,
    },
    /// Failed with this error; a result is linked when the suite ran and
    /// was stored but produced no valid measurements.
    Failed {
        /// Why.
        error: &'a str,
        /// The stored result, if any.
        result_id: Option<&'a str>,
    },
    /// A run-time check kept it from running.
    Skipped(&'a str),
    /// Stopped by the user; back to pending.
    Interrupted,
}

/// Who is driving a campaign now.
#[derive(Debug, Clone)]
pub struct Session<'a> {
    /// The campaign.
    pub campaign_id: &'a str,
    /// The config file.
    pub config_path: &'a str,
    /// SHA-256 of its bytes.
    pub config_hash: &'a str,
    /// Its text with credentials redacted.
    pub config_yaml: &'a str,
    /// The storage root.
    pub storage_root: &'a str,
    /// This process.
    pub pid: u32,
    /// This host.
    pub host: &'a str,
    /// `--limit`: quality benchmarks score only their first N items.
    pub item_limit: Option<u32>,
}

const CAMPAIGN_COLUMNS: &str = "id, name, status, config_path, config_hash, storage_root, \
     created_at, updated_at, finished_at, owner_pid, owner_host, current_run";

const RUN_COLUMNS: &str = "id, position, key, model, engine, quant, suite, source, size_bytes, \
     in_config, status, phase, attempts, reason, started_at, finished_at, duration_s, result_id, \
     run_dir, output_tokens_per_second, ttft_ms_p50, error_rate";

/// The schema version that added item limits.
const ITEM_LIMIT_VERSION: i64 = 4;

impl Store {
    /// Records a new campaign as `pending`; `false` when the id is taken.
    pub fn create_campaign(&self, new: &NewCampaign<'_>) -> Result<bool, StoreError> {
        let now = jiff::Timestamp::now();
        let inserted = self
            .conn
            .execute(
                "INSERT INTO campaigns (id, name, status, config_path, config_hash, config_yaml, \
                 storage_root, created_at, created_unix_ms, updated_at) \
                 VALUES (?1, ?2, 'pending', ?3, ?4, ?5, ?6, ?7, ?8, ?7) ON CONFLICT (id) DO NOTHING",
                params![
                    new.id,
                    new.name,
                    new.config_path,
                    new.config_hash,
                    new.config_yaml,
                    new.storage_root,
                    now.to_string(),
                    now.as_millisecond(),
                ],
            )
            .doing(&self.path, "record a new campaign")?;
        Ok(inserted == 1)
    }

    /// One campaign.
    pub fn campaign(&self, id: &str) -> Result<Option<CampaignRow>, StoreError> {
        self.conn
            .query_row(
                &format!("SELECT {CAMPAIGN_COLUMNS} FROM campaigns WHERE id = ?1"),
                [id],
                campaign_row,
            )
            .optional()
            .doing(&self.path, "read a campaign")
    }

    /// The config snapshot a campaign last ran with (credentials redacted, see
    /// [`crate::campaign::config_snapshot`]); `None` for an unknown id.
    pub fn campaign_config(&self, id: &str) -> Result<Option<String>, StoreError> {
        self.conn
            .query_row("SELECT config_yaml FROM campaigns WHERE id = ?1", [id], |row| row.get(0))
            .optional()
            .doing(&self.path, "read a campaign's config")
    }

    /// The newest campaign, or the newest of that name.
    pub fn latest_campaign(&self, name: Option<&str>) -> Result<Option<CampaignRow>, StoreError> {
        self.conn
            .query_row(
                &format!(
                    "SELECT {CAMPAIGN_COLUMNS} FROM campaigns WHERE ?1 IS NULL OR name = ?1 \
                     ORDER BY created_unix_ms DESC, rowid DESC LIMIT 1"
                ),
                [name],
                campaign_row,
            )
            .optional()
            .doing(&self.path, "find the latest campaign")
    }

    /// Every campaign of that name, newest first.
    pub fn campaigns_named(&self, name: &str) -> Result<Vec<CampaignRow>, StoreError> {
        let mut statement = self
            .conn
            .prepare(&format!(
                "SELECT {CAMPAIGN_COLUMNS} FROM campaigns WHERE name = ?1 \
                 ORDER BY created_unix_ms DESC, rowid DESC"
            ))
            .doing(&self.path, "list campaigns by name")?;
        statement
            .query_map([name], campaign_row)
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .doing(&self.path, "list campaigns by name")
    }

    /// Every campaign with its counts, newest first.
    pub fn campaigns(&self) -> Result<Vec<CampaignSummary>, StoreError> {
        let mut statement = self
            .conn
            .prepare(&format!(
                "SELECT {CAMPAIGN_COLUMNS} FROM campaigns ORDER BY created_unix_ms DESC, rowid DESC"
            ))
            .doing(&self.path, "list campaigns")?;
        let campaigns = statement
            .query_map([], campaign_row)
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .doing(&self.path, "list campaigns")?;
        let mut counts = self.counts_by_campaign()?;
        Ok(campaigns
            .into_iter()
            .map(|campaign| {
                let counts = counts.remove(&campaign.id).unwrap_or_default();
                CampaignSummary { total: counts.total(), counts, campaign }
            })
            .collect())
    }

    fn counts_by_campaign(
        &self,
    ) -> Result<std::collections::HashMap<String, RunCounts>, StoreError> {
        let mut statement = self
            .conn
            .prepare(
                "SELECT campaign_id, status, count(*) FROM campaign_runs WHERE in_config = 1 \
                 GROUP BY campaign_id, status",
            )
            .doing(&self.path, "count runs")?;
        let rows = statement
            .query_map([], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?, row.get::<_, i64>(2)?))
            })
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .doing(&self.path, "count runs")?;
        let mut counts: std::collections::HashMap<String, RunCounts> = Default::default();
        for (campaign, status, count) in rows {
            if let Some(status) = RunStatus::parse(&status) {
                *counts.entry(campaign).or_default().slot(status) += count.unsigned_abs();
            }
        }
        Ok(counts)
    }

    /// Runs per status of one campaign (runs the config lost are not counted).
    pub fn run_counts(&self, campaign_id: &str) -> Result<RunCounts, StoreError> {
        let mut statement = self
            .conn
            .prepare_cached(
                "SELECT status, count(*) FROM campaign_runs WHERE campaign_id = ?1 \
                 AND in_config = 1 GROUP BY status",
            )
            .doing(&self.path, "count runs")?;
        let rows = statement
            .query_map([campaign_id], |row| Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?)))
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .doing(&self.path, "count runs")?;
        let mut counts = RunCounts::default();
        for (status, count) in rows {
            if let Some(status) = RunStatus::parse(&status) {
                *counts.slot(status) += count.unsigned_abs();
            }
        }
        Ok(counts)
    }

    /// Mean duration of the finished attempts (success or failed) of a campaign.
    pub fn mean_run_seconds(&self, campaign_id: &str) -> Result<Option<f64>, StoreError> {
        self.conn
            .query_row(
                "SELECT avg(duration_s) FROM campaign_runs WHERE campaign_id = ?1 \
                 AND status IN ('success', 'failed') AND duration_s IS NOT NULL",
                [campaign_id],
                |row| row.get(0),
            )
            .doing(&self.path, "average run durations")
    }

    /// Runs of a campaign, in position order; `status` narrows to one state,
    /// `limit` caps the count. Runs the config lost are included only when
    /// `status` is `None`.
    pub fn campaign_runs(
        &self,
        campaign_id: &str,
        status: Option<RunStatus>,
        limit: Option<usize>,
    ) -> Result<Vec<RunRow>, StoreError> {
        let limit = limit.map_or(-1, |limit| i64::try_from(limit).unwrap_or(i64::MAX));
        let mut statement = self
            .conn
            .prepare_cached(&format!(
                "SELECT {RUN_COLUMNS}, {}, {} FROM campaign_runs WHERE campaign_id = ?1 \
                 AND (?2 IS NULL OR (status = ?2 AND in_config = 1)) ORDER BY position LIMIT ?3",
                self.item_limit_column()?,
                self.devices_column()?
            ))
            .doing(&self.path, "read runs")?;
        statement
            .query_map(params![campaign_id, status.map(RunStatus::as_str), limit], run_row)
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .doing(&self.path, "read runs")
    }

    /// One run.
    pub fn campaign_run(&self, run_id: i64) -> Result<Option<RunRow>, StoreError> {
        self.conn
            .query_row(
                &format!(
                    "SELECT {RUN_COLUMNS}, {}, {} FROM campaign_runs WHERE id = ?1",
                    self.item_limit_column()?,
                    self.devices_column()?
                ),
                [run_id],
                run_row,
            )
            .optional()
            .doing(&self.path, "read a run")
    }

    /// The config hash of the session that made a run's latest attempt.
    pub fn last_attempt_config_hash(&self, run_id: i64) -> Result<Option<String>, StoreError> {
        self.conn
            .query_row(
                "SELECT s.config_hash FROM campaign_attempts a \
                 JOIN campaign_sessions s ON s.id = a.session_id \
                 WHERE a.run_id = ?1 ORDER BY a.attempt DESC LIMIT 1",
                [run_id],
                |row| row.get(0),
            )
            .optional()
            .doing(&self.path, "read a run's last attempt")
    }

    /// The item limit of the latest session of a campaign (`None`: whole datasets).
    pub fn session_item_limit(&self, campaign_id: &str) -> Result<Option<u32>, StoreError> {
        if self.schema_version()? < ITEM_LIMIT_VERSION {
            return Ok(None);
        }
        self.conn
            .query_row(
                "SELECT item_limit FROM campaign_sessions WHERE campaign_id = ?1 \
                 ORDER BY id DESC LIMIT 1",
                [campaign_id],
                |row| row.get(0),
            )
            .optional()
            .map(Option::flatten)
            .doing(&self.path, "read the latest session")
    }

    /// The run column with the item limit; a store opened read-only from
    /// before limits existed has none.
    fn item_limit_column(&self) -> Result<&'static str, StoreError> {
        Ok(if self.schema_version()? >= ITEM_LIMIT_VERSION {
            "item_limit"
        } else {
            "NULL AS item_limit"
        })
    }

    /// The run column with the devices of parallel runs; a store opened
    /// read-only from before they were recorded has none.
    fn devices_column(&self) -> Result<&'static str, StoreError> {
        Ok(if self.schema_version()? >= super::schema::RUN_DEVICES_VERSION {
            "devices"
        } else {
            "NULL AS devices"
        })
    }

    /// Starts a session: the campaign becomes `running`, owned by this
    /// process, with the config it now uses; runs left `running` by a dead
    /// owner go back to `pending` (their attempt `interrupted`); the runs are
    /// brought in line with `runs` (new keys appended as `pending`, lost keys
    /// kept but out of the config). Returns the session id. One transaction.
    pub fn begin_session(
        &mut self,
        session: &Session<'_>,
        runs: &[RunSpec<'_>],
    ) -> Result<i64, StoreError> {
        let now = jiff::Timestamp::now().to_string();
        let path = self.path.clone();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .doing(&path, "start a campaign session")?;
        // Sessions whose process died never closed themselves.
        tx.execute(
            "UPDATE campaign_sessions SET outcome = 'interrupted' \
             WHERE campaign_id = ?1 AND outcome IS NULL",
            [session.campaign_id],
        )
        .doing(&path, "close sessions of processes that died")?;
        tx.execute(
            "INSERT INTO campaign_sessions (campaign_id, started_at, pid, host, kitt_version, \
             config_path, config_hash, config_yaml, item_limit) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                session.campaign_id,
                now,
                session.pid,
                session.host,
                env!("CARGO_PKG_VERSION"),
                session.config_path,
                session.config_hash,
                session.config_yaml,
                session.item_limit,
            ],
        )
        .doing(&path, "start a campaign session")?;
        let session_id = tx.last_insert_rowid();
        tx.execute(
            "UPDATE campaigns SET status = 'running', config_path = ?2, config_hash = ?3, \
             config_yaml = ?4, storage_root = ?5, owner_pid = ?6, owner_host = ?7, \
             updated_at = ?8, finished_at = NULL, current_run = NULL WHERE id = ?1",
            params![
                session.campaign_id,
                session.config_path,
                session.config_hash,
                session.config_yaml,
                session.storage_root,
                session.pid,
                session.host,
                now,
            ],
        )
        .doing(&path, "start a campaign session")?;
        tx.execute(
            "UPDATE campaign_attempts SET outcome = 'interrupted', finished_at = ?2 \
             WHERE outcome IS NULL AND run_id IN \
             (SELECT id FROM campaign_runs WHERE campaign_id = ?1)",
            params![session.campaign_id, now],
        )
        .doing(&path, "recover interrupted runs")?;
        tx.execute(
            "UPDATE campaign_runs SET status = 'pending', phase = NULL, \
             reason = 'interrupted; redone on resume' WHERE campaign_id = ?1 AND status = 'running'",
            [session.campaign_id],
        )
        .doing(&path, "recover interrupted runs")?;
        // A pending run's phase is that of a prefetch, which ended with its session.
        tx.execute(
            "UPDATE campaign_runs SET phase = NULL, devices = NULL \
             WHERE campaign_id = ?1 AND status = 'pending'",
            [session.campaign_id],
        )
        .doing(&path, "recover interrupted runs")?;
        tx.execute(
            "UPDATE campaign_runs SET in_config = 0 WHERE campaign_id = ?1",
            [session.campaign_id],
        )
        .doing(&path, "update the run list")?;
        let mut next: i64 = tx
            .query_row(
                "SELECT coalesce(max(position), -1) + 1 FROM campaign_runs WHERE campaign_id = ?1",
                [session.campaign_id],
                |row| row.get(0),
            )
            .doing(&path, "update the run list")?;
        {
            let mut update = tx
                .prepare(
                    "UPDATE campaign_runs SET in_config = 1, suite = ?3, source = ?4, \
                     size_bytes = ?5, download_bytes = ?6, files = ?7 \
                     WHERE campaign_id = ?1 AND key = ?2",
                )
                .doing(&path, "update the run list")?;
            let mut insert = tx
                .prepare(
                    "INSERT INTO campaign_runs (campaign_id, position, key, model, engine, quant, \
                     suite, source, size_bytes, download_bytes, files, status) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, 'pending')",
                )
                .doing(&path, "update the run list")?;
            for run in runs {
                let size = run.size_bytes.map(|size| i64::try_from(size).unwrap_or(i64::MAX));
                let download = i64::try_from(run.download_bytes).unwrap_or(i64::MAX);
                let files = serde_json::to_string(run.files).unwrap_or_else(|_| "[]".into());
                let updated = update
                    .execute(params![
                        session.campaign_id,
                        run.key,
                        run.suite,
                        run.source,
                        size,
                        download,
                        files
                    ])
                    .doing(&path, "update the run list")?;
                if updated == 0 {
                    insert
                        .execute(params![
                            session.campaign_id,
                            next,
                            run.key,
                            run.model,
                            run.engine,
                            run.quant,
                            run.suite,
                            run.source,
                            size,
                            download,
                            files,
                        ])
                        .doing(&path, "update the run list")?;
                    next += 1;
                }
            }
        }
        tx.commit().doing(&path, "start a campaign session")?;
        Ok(session_id)
    }

    /// Ends a session: the campaign's status, no owner, no current run.
    pub fn end_session(
        &self,
        session_id: i64,
        campaign_id: &str,
        status: CampaignStatus,
        outcome: &str,
    ) -> Result<(), StoreError> {
        let now = jiff::Timestamp::now().to_string();
        let finished = matches!(status, CampaignStatus::Completed | CampaignStatus::Failed);
        let tx = self.conn.unchecked_transaction().doing(&self.path, "end a campaign session")?;
        tx.execute(
            "UPDATE campaign_sessions SET finished_at = ?2, outcome = ?3 WHERE id = ?1",
            params![session_id, now, outcome],
        )
        .doing(&self.path, "end a campaign session")?;
        tx.execute(
            "UPDATE campaigns SET status = ?2, updated_at = ?3, owner_pid = NULL, \
             owner_host = NULL, current_run = NULL, \
             finished_at = CASE WHEN ?4 THEN ?3 ELSE finished_at END WHERE id = ?1",
            params![campaign_id, status.as_str(), now, finished],
        )
        .doing(&self.path, "end a campaign session")?;
        tx.commit().doing(&self.path, "end a campaign session")
    }

    /// A run starts its next attempt: `running`, attempts + 1, the campaign's
    /// current run, the session's item limit, the `devices` a parallel
    /// campaign placed it on (`None`: one run at a time). Returns the
    /// attempt id.
    pub fn run_started(
        &self,
        session_id: i64,
        run_id: i64,
        devices: Option<&str>,
    ) -> Result<i64, StoreError> {
        let now = jiff::Timestamp::now().to_string();
        let tx = self.conn.unchecked_transaction().doing(&self.path, "start a run")?;
        tx.execute(
            "UPDATE campaign_runs SET status = 'running', attempts = attempts + 1, \
             phase = 'starting', reason = NULL, started_at = ?2, finished_at = NULL, \
             duration_s = NULL, devices = ?4, \
             item_limit = (SELECT item_limit FROM campaign_sessions WHERE id = ?3) WHERE id = ?1",
            params![run_id, now, session_id, devices],
        )
        .doing(&self.path, "start a run")?;
        tx.execute(
            "INSERT INTO campaign_attempts (run_id, session_id, attempt, started_at) \
             SELECT id, ?2, attempts, ?3 FROM campaign_runs WHERE id = ?1",
            params![run_id, session_id, now],
        )
        .doing(&self.path, "start a run")?;
        let attempt_id = tx.last_insert_rowid();
        tx.execute(
            "UPDATE campaigns SET current_run = ?1, updated_at = ?2 \
             WHERE id = (SELECT campaign_id FROM campaign_runs WHERE id = ?1)",
            params![run_id, now],
        )
        .doing(&self.path, "start a run")?;
        tx.commit().doing(&self.path, "start a run")?;
        Ok(attempt_id)
    }

    /// A pending run of a parallel campaign holds `devices` and waits
    /// (for disk space) before it starts: `phase` says for what.
    pub fn run_waiting(&self, run_id: i64, phase: &str, devices: &str) -> Result<(), StoreError> {
        self.conn
            .execute(
                "UPDATE campaign_runs SET phase = ?2, devices = ?3 \
                 WHERE id = ?1 AND status = 'pending'",
                params![run_id, phase, devices],
            )
            .doing(&self.path, "record that a run waits")
            .map(drop)
    }

    /// What a running run is doing now.
    pub fn run_phase(&self, run_id: i64, phase: &str) -> Result<(), StoreError> {
        self.conn
            .execute("UPDATE campaign_runs SET phase = ?2 WHERE id = ?1", params![run_id, phase])
            .doing(&self.path, "record a run's phase")
            .map(drop)
    }

    /// A run's attempt ended. One transaction.
    pub fn run_finished(
        &self,
        run_id: i64,
        attempt_id: i64,
        duration_s: f64,
        end: &RunEnd<'_>,
    ) -> Result<(), StoreError> {
        let tx = self.conn.unchecked_transaction().doing(&self.path, "finish a run")?;
        finish_run(&tx, &self.path, run_id, attempt_id, duration_s, end)?;
        tx.commit().doing(&self.path, "finish a run")
    }

    /// A run succeeded: its result is stored and the run finished in one
    /// transaction, so a crash can never leave a stored result whose run is
    /// still to be redone.
    pub fn run_succeeded(
        &self,
        result: &crate::results::model::RunResult,
        run_id: i64,
        attempt_id: i64,
        duration_s: f64,
        run_dir: &str,
        headline: Headline,
    ) -> Result<(), StoreError> {
        let end = RunEnd::Success { result_id: &result.id, run_dir, headline };
        self.insert_result_then(result, |tx| {
            finish_run(tx, &self.path, run_id, attempt_id, duration_s, &end)
        })
    }

    /// A check before the run (no attempt started) keeps it from running.
    pub fn run_skipped(&self, run_id: i64, reason: &str) -> Result<(), StoreError> {
        let now = jiff::Timestamp::now().to_string();
        self.conn
            .execute(
                "UPDATE campaign_runs SET status = 'skipped', phase = NULL, reason = ?2, \
                 finished_at = ?3, duration_s = NULL WHERE id = ?1",
                params![run_id, reason, now],
            )
            .doing(&self.path, "skip a run")
            .map(drop)
    }
}

fn finish_run(
    tx: &rusqlite::Transaction<'_>,
    path: &std::path::Path,
    run_id: i64,
    attempt_id: i64,
    duration_s: f64,
    end: &RunEnd<'_>,
) -> Result<(), StoreError> {
    let now = jiff::Timestamp::now().to_string();
    let (status, outcome, reason, result_id, run_dir, headline) = match end {
        RunEnd::Success { result_id, run_dir, headline } => {
            ("success", "success", None, Some(*result_id), Some(*run_dir), *headline)
        }
        RunEnd::Failed { error, result_id } => {
            ("failed", "failed", Some(*error), *result_id, None, Headline::default())
        }
        RunEnd::Skipped(reason) => {
            ("skipped", "skipped", Some(*reason), None, None, Headline::default())
        }
        RunEnd::Interrupted => (
            "pending",
            "interrupted",
            Some("interrupted; redone on resume"),
            None,
            None,
            Headline::default(),
        ),
    };
    tx.execute(
        "UPDATE campaign_runs SET status = ?2, phase = NULL, reason = ?3, finished_at = ?4, \
         duration_s = ?5, result_id = ?6, run_dir = ?7, output_tokens_per_second = ?8, \
         ttft_ms_p50 = ?9, error_rate = ?10 WHERE id = ?1",
        params![
            run_id,
            status,
            reason,
            now,
            duration_s,
            result_id,
            run_dir,
            headline.output_tokens_per_second,
            headline.ttft_ms_p50,
            headline.error_rate,
        ],
    )
    .doing(path, "finish a run")?;
    tx.execute(
        "UPDATE campaign_attempts SET finished_at = ?2, outcome = ?3, error = ?4, \
         result_id = ?5 WHERE id = ?1",
        params![attempt_id, now, outcome, reason, result_id],
    )
    .doing(path, "finish a run")?;
    tx.execute(
        "UPDATE campaigns SET current_run = NULL, updated_at = ?2 \
         WHERE id = (SELECT campaign_id FROM campaign_runs WHERE id = ?1)",
        params![run_id, now],
    )
    .doing(path, "finish a run")?;
    Ok(())
}

fn campaign_row(row: &Row<'_>) -> rusqlite::Result<CampaignRow> {
    let status: String = row.get(2)?;
    Ok(CampaignRow {
        id: row.get(0)?,
        name: row.get(1)?,
        status: CampaignStatus::parse(&status).ok_or_else(|| bad_text(2, &status))?,
        config_path: row.get(3)?,
        config_hash: row.get(4)?,
        storage_root: row.get(5)?,
        created_at: row.get(6)?,
        updated_at: row.get(7)?,
        finished_at: row.get(8)?,
        owner_pid: row.get(9)?,
        owner_host: row.get(10)?,
        current_run: row.get(11)?,
    })
}

fn run_row(row: &Row<'_>) -> rusqlite::Result<RunRow> {
    let status: String = row.get(10)?;
    Ok(RunRow {
        id: row.get(0)?,
        position: row.get(1)?,
        key: row.get(2)?,
        model: row.get(3)?,
        engine: row.get(4)?,
        quant: row.get(5)?,
        suite: row.get(6)?,
        source: row.get(7)?,
        size_bytes: row.get::<_, Option<i64>>(8)?.map(i64::unsigned_abs),
        in_config: row.get(9)?,
        status: RunStatus::parse(&status).ok_or_else(|| bad_text(10, &status))?,
        phase: row.get(11)?,
        attempts: row.get(12)?,
        reason: row.get(13)?,
        started_at: row.get(14)?,
        finished_at: row.get(15)?,
        duration_s: row.get(16)?,
        result_id: row.get(17)?,
        run_dir: row.get(18)?,
        headline: Headline {
            output_tokens_per_second: row.get(19)?,
            ttft_ms_p50: row.get(20)?,
            error_rate: row.get(21)?,
        },
        item_limit: row.get(22)?,
        devices: row.get(23)?,
    })
}

fn bad_text(column: usize, text: &str) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        column,
        rusqlite::types::Type::Text,
        format!("unknown state `{text}`").into(),
    )
}
