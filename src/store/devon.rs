//! The repositories kitt had Devon download for a campaign.
//!
//! One row per campaign and repository, written before Devon is asked
//! (`downloading`) and following the request to `present` or `failed`, then
//! to `removed` once cleanup had Devon remove it. Whether Devon held the
//! repository before the campaign (`preexisting`) is decided before the first
//! request and never changed afterwards: asked again later, Devon would hold
//! it because kitt had it downloaded. Cleanup asks Devon to remove only a
//! repository that Devon did not hold before, so a model the user had in
//! Devon is never touched.

use rusqlite::{OptionalExtension, Row, params};
use serde::Serialize;

use super::connection::Store;
use super::error::{Context, StoreError};

/// A Devon download about to be asked for.
#[derive(Debug, Clone)]
pub struct NewDevonDownload<'a> {
    /// The campaign.
    pub campaign_id: &'a str,
    /// The run that needs it.
    pub run_id: i64,
    /// The session asking.
    pub session_id: i64,
    /// `org/name`.
    pub repo: &'a str,
    /// How Devon is reached: `http URL` or `cli PATH`.
    pub backend: &'a str,
    /// Whether Devon held the repository before (`None`: kitt cannot tell);
    /// kept from an earlier row of the campaign when there is one.
    pub preexisting: Option<bool>,
    /// Every file of the repository kitt asked Devon for in this campaign.
    pub files: &'a [String],
    /// Their bytes, as the Hub lists them.
    pub bytes: u64,
}

/// A repository kitt had Devon download, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DevonRow {
    /// `org/name`.
    pub repo: String,
    /// The run that first asked for it.
    pub run_id: i64,
    /// The session that last asked for it.
    pub session_id: i64,
    /// How Devon was reached: `http URL` or `cli PATH`.
    pub backend: String,
    /// Whether Devon held it before the campaign (`None`: unknown).
    pub preexisting: Option<bool>,
    /// Where Devon said it is.
    pub path: Option<String>,
    /// The files kitt asked for.
    pub files: Vec<String>,
    /// Their bytes.
    pub bytes: u64,
    /// `downloading`, `present`, `failed` or `removed`.
    pub status: String,
    /// Why it failed, or why Devon could not remove it.
    pub error: Option<String>,
    /// When the last request started.
    pub started_at: String,
    /// When Devon answered it.
    pub finished_at: Option<String>,
    /// When Devon removed it.
    pub removed_at: Option<String>,
}

const DEVON_COLUMNS: &str = "repo, run_id, session_id, backend, preexisting, path, files, bytes, \
     status, error, started_at, finished_at, removed_at";

impl Store {
    /// Records that Devon is asked for `new.files` of a repository. A row the
    /// campaign already has for it keeps its `preexisting` and its first run.
    pub fn devon_started(&self, new: &NewDevonDownload<'_>) -> Result<(), StoreError> {
        let now = jiff::Timestamp::now().to_string();
        let files = serde_json::to_string(new.files).unwrap_or_else(|_| "[]".to_owned());
        self.conn
            .execute(
                "INSERT INTO campaign_devon (campaign_id, repo, run_id, session_id, backend, \
                 preexisting, files, bytes, status, created_at, started_at, updated_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'downloading', ?9, ?9, ?9) \
                 ON CONFLICT (campaign_id, repo) DO UPDATE SET \
                 session_id = excluded.session_id, backend = excluded.backend, \
                 files = excluded.files, bytes = excluded.bytes, status = 'downloading', \
                 error = NULL, started_at = excluded.started_at, \
                 updated_at = excluded.updated_at, finished_at = NULL, removed_at = NULL",
                params![
                    new.campaign_id,
                    new.repo,
                    new.run_id,
                    new.session_id,
                    new.backend,
                    new.preexisting,
                    files,
                    to_sql(new.bytes),
                    now,
                ],
            )
            .doing(&self.path, "record a Devon download")
            .map(drop)
    }

    /// Devon answered the download; the repository is at `path` (as Devon said).
    pub fn devon_present(
        &self,
        campaign_id: &str,
        repo: &str,
        path: &str,
    ) -> Result<(), StoreError> {
        let now = jiff::Timestamp::now().to_string();
        self.conn
            .execute(
                "UPDATE campaign_devon SET status = 'present', path = ?3, error = NULL, \
                 finished_at = ?4, updated_at = ?4 WHERE campaign_id = ?1 AND repo = ?2",
                params![campaign_id, repo, path, now],
            )
            .doing(&self.path, "record a Devon download")
            .map(drop)
    }

    /// Devon could not download the repository.
    pub fn devon_failed(
        &self,
        campaign_id: &str,
        repo: &str,
        error: &str,
    ) -> Result<(), StoreError> {
        let now = jiff::Timestamp::now().to_string();
        self.conn
            .execute(
                "UPDATE campaign_devon SET status = 'failed', error = ?3, finished_at = ?4, \
                 updated_at = ?4 WHERE campaign_id = ?1 AND repo = ?2",
                params![campaign_id, repo, error, now],
            )
            .doing(&self.path, "record a failed Devon download")
            .map(drop)
    }

    /// Devon removed the repository.
    pub fn devon_removed(&self, campaign_id: &str, repo: &str) -> Result<(), StoreError> {
        let now = jiff::Timestamp::now().to_string();
        self.conn
            .execute(
                "UPDATE campaign_devon SET status = 'removed', error = NULL, removed_at = ?3, \
                 updated_at = ?3 WHERE campaign_id = ?1 AND repo = ?2",
                params![campaign_id, repo, now],
            )
            .doing(&self.path, "record a Devon removal")
            .map(drop)
    }

    /// Devon could not remove the repository; it stays `present`.
    pub fn devon_kept(&self, campaign_id: &str, repo: &str, why: &str) -> Result<(), StoreError> {
        let now = jiff::Timestamp::now().to_string();
        self.conn
            .execute(
                "UPDATE campaign_devon SET error = ?3, updated_at = ?4 \
                 WHERE campaign_id = ?1 AND repo = ?2",
                params![campaign_id, repo, why, now],
            )
            .doing(&self.path, "record a Devon removal")
            .map(drop)
    }

    /// The campaign's row for `repo`, if kitt ever asked Devon for it.
    pub fn devon_download(
        &self,
        campaign_id: &str,
        repo: &str,
    ) -> Result<Option<DevonRow>, StoreError> {
        self.conn
            .query_row(
                &format!(
                    "SELECT {DEVON_COLUMNS} FROM campaign_devon \
                     WHERE campaign_id = ?1 AND repo = ?2"
                ),
                params![campaign_id, repo],
                devon_row,
            )
            .optional()
            .doing(&self.path, "read Devon downloads")
    }

    /// The repositories Devon has answered for the campaign (present, or
    /// removed since); none in a store older than the Devon records.
    pub(super) fn devon_answered(&self, campaign_id: &str) -> Result<Vec<DevonRow>, StoreError> {
        if self.schema_version()? < super::schema::DEVON_VERSION {
            return Ok(Vec::new());
        }
        let rows = self.devon_downloads(campaign_id)?;
        let answered = |row: &DevonRow| matches!(row.status.as_str(), "present" | "removed");
        Ok(rows.into_iter().filter(answered).collect())
    }

    /// Every repository kitt asked Devon for in a campaign, oldest first.
    pub fn devon_downloads(&self, campaign_id: &str) -> Result<Vec<DevonRow>, StoreError> {
        let mut statement = self
            .conn
            .prepare_cached(&format!(
                "SELECT {DEVON_COLUMNS} FROM campaign_devon WHERE campaign_id = ?1 \
                 ORDER BY created_at, repo"
            ))
            .doing(&self.path, "read Devon downloads")?;
        statement
            .query_map([campaign_id], devon_row)
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .doing(&self.path, "read Devon downloads")
    }
}

fn to_sql(bytes: u64) -> i64 {
    i64::try_from(bytes).unwrap_or(i64::MAX)
}

fn devon_row(row: &Row<'_>) -> rusqlite::Result<DevonRow> {
    let files: String = row.get(6)?;
    Ok(DevonRow {
        repo: row.get(0)?,
        run_id: row.get(1)?,
        session_id: row.get(2)?,
        backend: row.get(3)?,
        preexisting: row.get(4)?,
        path: row.get(5)?,
        files: serde_json::from_str(&files).unwrap_or_default(),
        bytes: row.get::<_, i64>(7)?.unsigned_abs(),
        status: row.get(8)?,
        error: row.get(9)?,
        started_at: row.get(10)?,
        finished_at: row.get(11)?,
        removed_at: row.get(12)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing;

    fn campaign(store: &mut Store) -> i64 {
        let files = vec!["m-Q8_0.gguf".to_owned()];
        testing::session(
            store,
            &[testing::run(("a", "llama_cpp", "Q8_0"), "hf:org/m", &files, 100)],
        )
    }

    #[test]
    fn whether_devon_held_a_repository_before_is_decided_once() {
        let home = tempfile::tempdir().unwrap();
        let mut store = Store::open(home.path()).unwrap();
        let session = campaign(&mut store);
        let run = store.campaign_runs("c", None, None).unwrap()[0].id;
        let files = vec!["m-Q8_0.gguf".to_owned()];
        let new = NewDevonDownload {
            campaign_id: "c",
            run_id: run,
            session_id: session,
            repo: "org/m",
            backend: "http http://127.0.0.1:9",
            preexisting: Some(false),
            files: &files,
            bytes: 100,
        };
        store.devon_started(&new).unwrap();
        store.devon_present("c", "org/m", "/devon/huggingface/org/m").unwrap();
        // A later request (another variant) says Devon holds it: it still is kitt's.
        let more = vec!["m-Q8_0.gguf".to_owned(), "m-F16.gguf".to_owned()];
        store
            .devon_started(&NewDevonDownload {
                preexisting: Some(true),
                files: &more,
                bytes: 300,
                ..new.clone()
            })
            .unwrap();
        let row = store.devon_download("c", "org/m").unwrap().unwrap();
        assert_eq!(row.preexisting, Some(false));
        assert_eq!((row.status.as_str(), row.bytes), ("downloading", 300));
        assert_eq!(row.files, more);
        assert_eq!(row.path.as_deref(), Some("/devon/huggingface/org/m"));
        store.devon_present("c", "org/m", "/devon/huggingface/org/m").unwrap();
        store.devon_kept("c", "org/m", "Devon answered HTTP 500").unwrap();
        store.devon_removed("c", "org/m").unwrap();
        let rows = store.devon_downloads("c").unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].status, "removed");
        assert!(rows[0].removed_at.is_some() && rows[0].error.is_none());
        assert!(store.devon_download("c", "org/other").unwrap().is_none());
    }
}
