//! The models kitt pulls into an Ollama server's store for a campaign.
//!
//! A row is written before the pull's first byte (`pulling`) and follows it
//! to `present` or `failed` and, once cleanup deletes the model, `removed`.
//! It is written only when the server did not have the model, so the rows
//! are how a campaign knows which models are its own: a model with a
//! `pulling` or `present` row of the campaign (a crash may have kept a
//! completed pull at `pulling`) may be deleted by its cleanup; any other
//! model never is.

use rusqlite::{Row, params};
use serde::Serialize;

use super::connection::Store;
use super::error::{Context, StoreError};

/// A pull about to start.
#[derive(Debug, Clone, Copy)]
pub struct NewPull<'a> {
    /// The campaign.
    pub campaign_id: &'a str,
    /// The run whose engine pulls.
    pub run_id: i64,
    /// The session running it.
    pub session_id: i64,
    /// `name:tag`.
    pub model: &'a str,
    /// The server's store (a directory, or `docker volume <name>`).
    pub store: &'a str,
}

/// One pull as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PullRow {
    /// The run that pulled it.
    pub run_id: i64,
    /// `name:tag`.
    pub model: String,
    /// The server's store.
    pub store: String,
    /// Size in the store once pulled.
    pub bytes: u64,
    /// `pulling`, `present`, `failed` or `removed`.
    pub status: String,
    /// Why it failed.
    pub error: Option<String>,
    /// When the pull started.
    pub started_at: String,
    /// When it ended.
    pub finished_at: Option<String>,
    /// When cleanup deleted the model.
    pub removed_at: Option<String>,
}

impl Store {
    /// Records that a pull starts; an earlier row of the same run, model and
    /// store (an interrupted attempt) is taken over.
    pub fn pull_started(&self, new: &NewPull<'_>) -> Result<(), StoreError> {
        let now = jiff::Timestamp::now().to_string();
        self.conn
            .execute(
                "INSERT INTO campaign_pulls (campaign_id, run_id, session_id, model, store, \
                 status, created_at, started_at, updated_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, 'pulling', ?6, ?6, ?6) \
                 ON CONFLICT (campaign_id, run_id, model, store) DO UPDATE SET \
                 session_id = excluded.session_id, status = 'pulling', error = NULL, \
                 started_at = excluded.started_at, updated_at = excluded.updated_at, \
                 finished_at = NULL, removed_at = NULL",
                params![new.campaign_id, new.run_id, new.session_id, new.model, new.store, now],
            )
            .doing(&self.path, "record a pull")
            .map(drop)
    }

    /// The run's pull completed; the model takes `bytes` in the store.
    pub fn pull_present(
        &self,
        campaign_id: &str,
        run_id: i64,
        model: &str,
        store: &str,
        bytes: u64,
    ) -> Result<(), StoreError> {
        let now = jiff::Timestamp::now().to_string();
        self.conn
            .execute(
                "UPDATE campaign_pulls SET status = 'present', bytes = ?5, finished_at = ?6, \
                 updated_at = ?6 WHERE campaign_id = ?1 AND run_id = ?2 AND model = ?3 \
                 AND store = ?4",
                params![campaign_id, run_id, model, store, to_sql(bytes), now],
            )
            .doing(&self.path, "record a finished pull")
            .map(drop)
    }

    /// The run's pull failed for good.
    pub fn pull_failed(
        &self,
        campaign_id: &str,
        run_id: i64,
        model: &str,
        store: &str,
        error: &str,
    ) -> Result<(), StoreError> {
        let now = jiff::Timestamp::now().to_string();
        self.conn
            .execute(
                "UPDATE campaign_pulls SET status = 'failed', error = ?5, finished_at = ?6, \
                 updated_at = ?6 WHERE campaign_id = ?1 AND run_id = ?2 AND model = ?3 \
                 AND store = ?4",
                params![campaign_id, run_id, model, store, error, now],
            )
            .doing(&self.path, "record a failed pull")
            .map(drop)
    }

    /// Whether the campaign pulled `model` into `store` and has not deleted it
    /// since (a pull a crash cut short counts: it may have completed).
    pub fn pulled_by_campaign(
        &self,
        campaign_id: &str,
        model: &str,
        store: &str,
    ) -> Result<bool, StoreError> {
        self.conn
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM campaign_pulls WHERE campaign_id = ?1 \
                 AND model = ?2 AND store = ?3 AND status IN ('pulling', 'present'))",
                params![campaign_id, model, store],
                |row| row.get(0),
            )
            .doing(&self.path, "read pulls")
    }

    /// Cleanup deleted the campaign's `model` from `store`.
    pub fn pull_removed(
        &self,
        campaign_id: &str,
        model: &str,
        store: &str,
    ) -> Result<(), StoreError> {
        let now = jiff::Timestamp::now().to_string();
        self.conn
            .execute(
                "UPDATE campaign_pulls SET status = 'removed', removed_at = ?4, updated_at = ?4 \
                 WHERE campaign_id = ?1 AND model = ?2 AND store = ?3 \
                 AND status IN ('pulling', 'present')",
                params![campaign_id, model, store, now],
            )
            .doing(&self.path, "record a removed pull")
            .map(drop)
    }

    /// Every pull of a campaign, oldest first.
    pub fn campaign_pulls(&self, campaign_id: &str) -> Result<Vec<PullRow>, StoreError> {
        let mut statement = self
            .conn
            .prepare_cached(
                "SELECT run_id, model, store, bytes, status, error, started_at, finished_at, \
                 removed_at FROM campaign_pulls WHERE campaign_id = ?1 ORDER BY id",
            )
            .doing(&self.path, "read pulls")?;
        statement
            .query_map([campaign_id], pull_row)
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .doing(&self.path, "read pulls")
    }

    /// Bytes of the campaign's completed pulls (deleted ones included).
    pub fn pulled_bytes(&self, campaign_id: &str) -> Result<u64, StoreError> {
        self.conn
            .query_row(
                "SELECT coalesce(sum(bytes), 0) FROM campaign_pulls WHERE campaign_id = ?1 \
                 AND status IN ('present', 'removed')",
                [campaign_id],
                |row| row.get::<_, i64>(0),
            )
            .map(i64::unsigned_abs)
            .doing(&self.path, "sum pulls")
    }
}

fn to_sql(bytes: u64) -> i64 {
    i64::try_from(bytes).unwrap_or(i64::MAX)
}

fn pull_row(row: &Row<'_>) -> rusqlite::Result<PullRow> {
    Ok(PullRow {
        run_id: row.get(0)?,
        model: row.get(1)?,
        store: row.get(2)?,
        bytes: row.get::<_, i64>(3)?.unsigned_abs(),
        status: row.get(4)?,
        error: row.get(5)?,
        started_at: row.get(6)?,
        finished_at: row.get(7)?,
        removed_at: row.get(8)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing;

    #[test]
    fn a_pull_is_the_campaigns_from_its_start_until_it_is_removed() {
        let home = tempfile::tempdir().unwrap();
        let mut store = Store::open(home.path()).unwrap();
        let files = Vec::new();
        let run = testing::run(("m|ollama|1b", "ollama", "1b"), "ollama:m:1b", &files, 10);
        let session_id = testing::session(&mut store, &[run]);
        let run_id = store.campaign_runs("c", None, None).unwrap()[0].id;
        let owned = |store: &Store| store.pulled_by_campaign("c", "m:1b", "/s").unwrap();
        assert!(!owned(&store));

        let new = NewPull { campaign_id: "c", run_id, session_id, model: "m:1b", store: "/s" };
        store.pull_started(&new).unwrap();
        assert!(owned(&store), "a pull cut short by a crash may have completed");
        assert!(!store.pulled_by_campaign("c", "m:1b", "docker volume v").unwrap());
        store.pull_failed("c", run_id, "m:1b", "/s", "HTTP 500").unwrap();
        assert!(!owned(&store), "a failed pull left nothing");
        store.pull_started(&new).unwrap();
        store.pull_present("c", run_id, "m:1b", "/s", 10).unwrap();
        assert!(owned(&store));
        assert_eq!(store.pulled_bytes("c").unwrap(), 10);

        store.pull_removed("c", "m:1b", "/s").unwrap();
        assert!(!owned(&store));
        let rows = store.campaign_pulls("c").unwrap();
        assert_eq!(rows.len(), 1, "the retried pull took its row over");
        assert_eq!((rows[0].status.as_str(), rows[0].bytes), ("removed", 10));
        assert!(rows[0].removed_at.is_some() && rows[0].error.is_none());
    }
}
