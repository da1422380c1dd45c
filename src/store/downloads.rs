//! The files kitt downloads for a campaign.
//!
//! A row is written before a file's first byte (`downloading`) and follows it
//! to `present`, `failed` or, once cleanup deletes the file, `removed`. The
//! rows are how a campaign knows which files are its own: cleanup never
//! deletes a file without a `present` row of the same campaign, so a model
//! the user already had is never touched. They also keep each download's
//! start and end, and the bytes received so far, which `campaign status`
//! reads while the campaign runs.

use rusqlite::{OptionalExtension, Row, params};
use serde::Serialize;

use super::connection::Store;
use super::error::{Context, StoreError};

/// A download about to start.
#[derive(Debug, Clone)]
pub struct NewDownload<'a> {
    /// The campaign.
    pub campaign_id: &'a str,
    /// The run that needs the file.
    pub run_id: i64,
    /// The session downloading it.
    pub session_id: i64,
    /// `org/name`.
    pub repo: &'a str,
    /// The file's path in the repository.
    pub file: &'a str,
    /// Its final path on disk.
    pub path: &'a str,
    /// The highest directory the download creates, pruned when the file is deleted.
    pub created_dir: Option<&'a str>,
    /// Its size.
    pub bytes: u64,
    /// Bytes already on disk from an earlier attempt.
    pub bytes_done: u64,
}

/// One download as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DownloadRow {
    /// Row id.
    pub id: i64,
    /// The run that downloaded it.
    pub run_id: i64,
    /// `org/name`.
    pub repo: String,
    /// Path in the repository.
    pub file: String,
    /// Final path on disk.
    pub path: String,
    /// The highest directory the download created.
    pub created_dir: Option<String>,
    /// Size.
    pub bytes: u64,
    /// Bytes on disk.
    pub bytes_done: u64,
    /// `downloading`, `present`, `failed` or `removed`.
    pub status: String,
    /// Why it failed.
    pub error: Option<String>,
    /// When the current (or last) attempt started.
    pub started_at: String,
    /// When it completed.
    pub finished_at: Option<String>,
    /// When cleanup deleted it.
    pub removed_at: Option<String>,
}

/// How much a campaign has downloaded and still has to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DownloadTotals {
    /// Bytes kitt has written for the campaign's downloads, partial files
    /// included, and the sizes of the Ollama models its pulls completed.
    pub downloaded_bytes: u64,
    /// Bytes the pending and running runs still have to download (runs
    /// loading the same files count once).
    pub to_download_bytes: u64,
}

const DOWNLOAD_COLUMNS: &str = "id, run_id, repo, file, path, created_dir, bytes, bytes_done, \
     status, error, started_at, finished_at, removed_at";

impl Store {
    /// Records that a file starts downloading; an earlier row of the same run
    /// and file (an interrupted attempt) is taken over. Returns the row id.
    pub fn download_started(&self, new: &NewDownload<'_>) -> Result<i64, StoreError> {
        let now = jiff::Timestamp::now().to_string();
        self.conn
            .query_row(
                "INSERT INTO campaign_downloads (campaign_id, run_id, session_id, repo, file, \
                 path, created_dir, bytes, bytes_done, status, created_at, started_at, updated_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 'downloading', ?10, ?10, ?10) \
                 ON CONFLICT (campaign_id, run_id, path) DO UPDATE SET \
                 session_id = excluded.session_id, bytes = excluded.bytes, \
                 bytes_done = excluded.bytes_done, status = 'downloading', error = NULL, \
                 created_dir = coalesce(created_dir, excluded.created_dir), \
                 started_at = excluded.started_at, updated_at = excluded.updated_at, \
                 finished_at = NULL, removed_at = NULL \
                 RETURNING id",
                params![
                    new.campaign_id,
                    new.run_id,
                    new.session_id,
                    new.repo,
                    new.file,
                    new.path,
                    new.created_dir,
                    to_sql(new.bytes),
                    to_sql(new.bytes_done),
                    now,
                ],
                |row| row.get(0),
            )
            .doing(&self.path, "record a download")
    }

    /// Bytes on disk so far.
    pub fn download_progress(&self, id: i64, bytes_done: u64) -> Result<(), StoreError> {
        let now = jiff::Timestamp::now().to_string();
        self.conn
            .execute(
                "UPDATE campaign_downloads SET bytes_done = ?2, updated_at = ?3 WHERE id = ?1",
                params![id, to_sql(bytes_done), now],
            )
            .doing(&self.path, "record download progress")
            .map(drop)
    }

    /// The file is complete and verified under its final name.
    pub fn download_present(&self, id: i64) -> Result<(), StoreError> {
        let now = jiff::Timestamp::now().to_string();
        self.conn
            .execute(
                "UPDATE campaign_downloads SET status = 'present', bytes_done = bytes, \
                 finished_at = ?2, updated_at = ?2 WHERE id = ?1",
                params![id, now],
            )
            .doing(&self.path, "record a finished download")
            .map(drop)
    }

    /// The download failed for good; its partial file is gone.
    pub fn download_failed(&self, id: i64, error: &str) -> Result<(), StoreError> {
        let now = jiff::Timestamp::now().to_string();
        self.conn
            .execute(
                "UPDATE campaign_downloads SET status = 'failed', bytes_done = 0, error = ?2, \
                 finished_at = ?3, updated_at = ?3 WHERE id = ?1",
                params![id, error, now],
            )
            .doing(&self.path, "record a failed download")
            .map(drop)
    }

    /// The campaign's completed downloads of `path` that are still on disk:
    /// empty when the campaign did not download the file.
    pub fn downloads_present(
        &self,
        campaign_id: &str,
        path: &str,
    ) -> Result<Vec<DownloadRow>, StoreError> {
        let mut statement = self
            .conn
            .prepare_cached(&format!(
                "SELECT {DOWNLOAD_COLUMNS} FROM campaign_downloads \
                 WHERE campaign_id = ?1 AND path = ?2 AND status = 'present' ORDER BY id"
            ))
            .doing(&self.path, "read downloads")?;
        statement
            .query_map(params![campaign_id, path], download_row)
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .doing(&self.path, "read downloads")
    }

    /// Whether any campaign's download put `path` there (and it was not deleted since).
    pub fn downloaded_by_kitt(&self, path: &str) -> Result<bool, StoreError> {
        self.conn
            .query_row(
                "SELECT 1 FROM campaign_downloads WHERE path = ?1 AND status = 'present' LIMIT 1",
                [path],
                |_| Ok(()),
            )
            .optional()
            .map(|found| found.is_some())
            .doing(&self.path, "read downloads")
    }

    /// Cleanup deleted the campaign's copy of `path`.
    pub fn download_removed(&self, campaign_id: &str, path: &str) -> Result<(), StoreError> {
        let now = jiff::Timestamp::now().to_string();
        self.conn
            .execute(
                "UPDATE campaign_downloads SET status = 'removed', removed_at = ?3, \
                 updated_at = ?3 WHERE campaign_id = ?1 AND path = ?2 AND status = 'present'",
                params![campaign_id, path, now],
            )
            .doing(&self.path, "record a removed download")
            .map(drop)
    }

    /// Every download of a campaign, oldest first.
    pub fn campaign_downloads(&self, campaign_id: &str) -> Result<Vec<DownloadRow>, StoreError> {
        let mut statement = self
            .conn
            .prepare_cached(&format!(
                "SELECT {DOWNLOAD_COLUMNS} FROM campaign_downloads WHERE campaign_id = ?1 \
                 ORDER BY id"
            ))
            .doing(&self.path, "read downloads")?;
        statement
            .query_map([campaign_id], download_row)
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .doing(&self.path, "read downloads")
    }

    /// Bytes downloaded and still to download. What is left comes from the
    /// download sizes the plan gave the pending and running runs when the
    /// latest session began, once per set of files, less what that session
    /// has downloaded of them since (partial files included). What Devon
    /// downloaded for the campaign counts once Devon has answered, as whole
    /// files (kitt does not see Devon's progress).
    pub fn download_totals(&self, campaign_id: &str) -> Result<DownloadTotals, StoreError> {
        let mut downloaded: i64 = self
            .conn
            .query_row(
                "SELECT coalesce(sum(bytes_done), 0) FROM campaign_downloads \
                 WHERE campaign_id = ?1",
                [campaign_id],
                |row| row.get(0),
            )
            .doing(&self.path, "sum downloads")?;
        let devon = self.devon_answered(campaign_id)?;
        let devon_bytes = devon
            .iter()
            .filter(|row| row.preexisting == Some(false))
            .fold(0u64, |sum, row| sum.saturating_add(row.bytes));
        downloaded = downloaded.saturating_add(to_sql(devon_bytes));
        let mut statement = self
            .conn
            .prepare_cached(
                "SELECT DISTINCT source, files, download_bytes FROM campaign_runs \
                 WHERE campaign_id = ?1 AND in_config = 1 AND download_bytes > 0 \
                 AND status IN ('pending', 'running')",
            )
            .doing(&self.path, "sum downloads")?;
        let wanted = statement
            .query_map([campaign_id], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?, row.get::<_, i64>(2)?))
            })
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .doing(&self.path, "sum downloads")?;
        let mut done = self
            .conn
            .prepare_cached(
                "SELECT coalesce(max(CASE WHEN status = 'downloading' THEN bytes_done \
                 WHEN status = 'present' THEN bytes ELSE 0 END), 0) \
                 FROM campaign_downloads WHERE campaign_id = ?1 AND repo = ?2 AND file = ?3 \
                 AND session_id = (SELECT max(id) FROM campaign_sessions WHERE campaign_id = ?1)",
            )
            .doing(&self.path, "sum downloads")?;
        let pulls = self.schema_version()? >= super::schema::PULLS_VERSION;
        let latest: Option<i64> = self
            .conn
            .query_row(
                "SELECT max(id) FROM campaign_sessions WHERE campaign_id = ?1",
                [campaign_id],
                |row| row.get(0),
            )
            .doing(&self.path, "sum downloads")?;
        let mut left = 0u64;
        for (source, files, bytes) in wanted {
            if let Some(tag) = source.strip_prefix("ollama:") {
                // An Ollama pull reports no partial bytes here: it is left until it completes.
                if !(pulls && self.pulled_this_session(campaign_id, tag)?) {
                    left = left.saturating_add(bytes.unsigned_abs());
                }
                continue;
            }
            let repo = source.split_once(':').map_or(source.as_str(), |(_, repo)| repo);
            let files: Vec<String> = serde_json::from_str(&files).unwrap_or_default();
            let from_devon = devon.iter().any(|row| {
                source.starts_with("hf:")
                    && row.repo == repo
                    && Some(row.session_id) == latest
                    && files.iter().all(|file| row.files.contains(file))
            });
            if from_devon {
                continue;
            }
            let mut fetched = 0u64;
            for file in &files {
                let bytes: i64 = done
                    .query_row(params![campaign_id, repo, file], |row| row.get(0))
                    .doing(&self.path, "sum downloads")?;
                fetched = fetched.saturating_add(bytes.unsigned_abs());
            }
            left = left.saturating_add(bytes.unsigned_abs().saturating_sub(fetched));
        }
        let pulled = if pulls { self.pulled_bytes(campaign_id)? } else { 0 };
        let downloaded = downloaded.unsigned_abs().saturating_add(pulled);
        Ok(DownloadTotals { downloaded_bytes: downloaded, to_download_bytes: left })
    }

    /// Whether the latest session of the campaign completed a pull of `tag`
    /// (`name` alone meaning `name:latest`).
    fn pulled_this_session(&self, campaign_id: &str, tag: &str) -> Result<bool, StoreError> {
        let latest = if tag.rsplit('/').next().is_some_and(|last| last.contains(':')) {
            tag.to_owned()
        } else {
            format!("{tag}:latest")
        };
        self.conn
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM campaign_pulls WHERE campaign_id = ?1 \
                 AND model = ?2 AND status IN ('present', 'removed') \
                 AND session_id = (SELECT max(id) FROM campaign_sessions WHERE campaign_id = ?1))",
                params![campaign_id, latest],
                |row| row.get(0),
            )
            .doing(&self.path, "sum downloads")
    }
}

fn to_sql(bytes: u64) -> i64 {
    i64::try_from(bytes).unwrap_or(i64::MAX)
}

fn download_row(row: &Row<'_>) -> rusqlite::Result<DownloadRow> {
    Ok(DownloadRow {
        id: row.get(0)?,
        run_id: row.get(1)?,
        repo: row.get(2)?,
        file: row.get(3)?,
        path: row.get(4)?,
        created_dir: row.get(5)?,
        bytes: row.get::<_, i64>(6)?.unsigned_abs(),
        bytes_done: row.get::<_, i64>(7)?.unsigned_abs(),
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
    use crate::store::RunSpec;
    use crate::store::testing::{self, session};

    fn spec<'a>(key: &'a str, source: &'a str, files: &'a [String], bytes: u64) -> RunSpec<'a> {
        testing::run((key, "llama_cpp", key), source, files, bytes)
    }

    #[test]
    fn totals_count_shared_files_once_and_follow_the_latest_session() {
        let home = tempfile::tempdir().unwrap();
        let mut store = Store::open(home.path()).unwrap();
        let shared = vec!["m-Q8_0.gguf".to_owned()];
        let other = vec!["m-F16.gguf".to_owned()];
        // Two engines load the same Q8_0 file; F16 is another file.
        let runs = [
            spec("a", "hf:org/m", &shared, 100),
            spec("b", "hf:org/m", &shared, 100),
            spec("c", "hf:org/m", &other, 50),
        ];
        let first = session(&mut store, &runs);
        let totals = store.download_totals("c").unwrap();
        assert_eq!(totals, DownloadTotals { downloaded_bytes: 0, to_download_bytes: 150 });

        let row = store
            .download_started(&NewDownload {
                campaign_id: "c",
                run_id: 1,
                session_id: first,
                repo: "org/m",
                file: "m-Q8_0.gguf",
                path: "/models/huggingface/org/m/m-Q8_0.gguf",
                created_dir: Some("/models/huggingface/org/m"),
                bytes: 100,
                bytes_done: 0,
            })
            .unwrap();
        store.download_progress(row, 30).unwrap();
        let totals = store.download_totals("c").unwrap();
        assert_eq!(totals, DownloadTotals { downloaded_bytes: 30, to_download_bytes: 120 });
        store.download_present(row).unwrap();
        let totals = store.download_totals("c").unwrap();
        assert_eq!(totals, DownloadTotals { downloaded_bytes: 100, to_download_bytes: 50 });
        assert!(store.downloaded_by_kitt("/models/huggingface/org/m/m-Q8_0.gguf").unwrap());

        // A later session plans the Q8_0 file as local: nothing to subtract twice.
        let runs = [
            spec("a", "local:org/m", &shared, 0),
            spec("b", "local:org/m", &shared, 0),
            spec("c", "hf:org/m", &other, 50),
        ];
        session(&mut store, &runs);
        let totals = store.download_totals("c").unwrap();
        assert_eq!(totals, DownloadTotals { downloaded_bytes: 100, to_download_bytes: 50 });

        store.download_removed("c", "/models/huggingface/org/m/m-Q8_0.gguf").unwrap();
        let rows = store.campaign_downloads("c").unwrap();
        assert_eq!(rows[0].status, "removed");
        assert!(rows[0].removed_at.is_some());
        assert!(!store.downloaded_by_kitt("/models/huggingface/org/m/m-Q8_0.gguf").unwrap());
        assert!(
            store
                .downloads_present("c", "/models/huggingface/org/m/m-Q8_0.gguf")
                .unwrap()
                .is_empty()
        );
    }
}
