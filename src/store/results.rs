//! Storing and reading run results.
//!
//! A result is stored in one transaction: its row in `results` (the full
//! [`RunResult`] as JSON without per-request arrays, plus queryable columns),
//! its machine in `hardware` (once per fingerprint), one row per benchmark,
//! every metric, every request record and every scored quality item. Results
//! are append-only: storing an id twice is refused and leaves the store as it
//! was. Reading a result back puts the request records and items where they
//! came from.

use std::path::Path;

use rusqlite::{OptionalExtension, Row, Transaction, TransactionBehavior};
use serde::Serialize;

use super::connection::Store;
use super::error::{Context, StoreError};
use crate::hardware;
use crate::results::model::{BenchmarkResult, BenchmarkStatus, QualityItem, RunResult};

/// Which results to list; `None` fields match everything.
#[derive(Debug, Clone, Default)]
pub struct ResultFilter {
    /// Exact model name.
    pub model: Option<String>,
    /// Exact engine name.
    pub engine: Option<String>,
    /// Exact suite name.
    pub suite: Option<String>,
    /// Exact quantization label.
    pub quant: Option<String>,
    /// At most this many results (newest first).
    pub limit: Option<usize>,
}

/// One line of a result listing.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResultSummary {
    /// The result id.
    pub id: String,
    /// When the run started (RFC 3339).
    pub started_at: String,
    /// When it finished.
    pub finished_at: String,
    /// The suite's name.
    pub suite: String,
    /// The model's display name.
    pub model: String,
    /// The quantization label.
    pub quant: String,
    /// The engine's name.
    pub engine: String,
    /// The engine's version.
    pub engine_version: String,
    /// Whether every benchmark produced valid measurements.
    pub passed: bool,
    /// Benchmarks in the result.
    pub benchmarks: u32,
    /// Benchmarks that passed.
    pub benchmarks_passed: u32,
    /// The machine's fingerprint.
    pub hardware_fingerprint: String,
    /// kitt's version when measured.
    pub kitt_version: String,
    /// The metric-definition version.
    pub metric_version: u32,
}

impl Store {
    /// Stores a result and all its records in one transaction; an id already
    /// stored is refused with [`StoreError::DuplicateResult`].
    pub fn insert_result(&self, result: &RunResult) -> Result<(), StoreError> {
        self.insert_result_then(result, |_| Ok(()))
    }

    /// Stores a result and, in the same transaction, whatever `then` writes
    /// (a campaign run's success), so neither is ever stored without the other.
    pub(crate) fn insert_result_then(
        &self,
        result: &RunResult,
        then: impl FnOnce(&Transaction<'_>) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let row = ResultRow::new(result)?;
        let path = &self.path;

        // Immediate: take the write lock now, so a busy store fails before any work.
        let tx = Transaction::new_unchecked(&self.conn, TransactionBehavior::Immediate)
            .doing(path, "start storing a result")?;
        let exists: Option<i64> = tx
            .query_row("SELECT 1 FROM results WHERE id = ?1", [&result.id], |row| row.get(0))
            .optional()
            .doing(path, "look up a result")?;
        if exists.is_some() {
            return Err(StoreError::DuplicateResult { id: result.id.clone() });
        }

        row.insert(&tx, path)?;
        for (position, benchmark) in result.benchmarks.iter().enumerate() {
            insert_benchmark(&tx, path, &result.id, position, benchmark)?;
        }
        then(&tx)?;
        tx.commit().doing(path, "commit a result")
    }

    /// The stored result with this id, requests included.
    pub fn result(&self, id: &str) -> Result<Option<RunResult>, StoreError> {
        let json: Option<String> = self
            .conn
            .query_row("SELECT json FROM results WHERE id = ?1", [id], |row| row.get(0))
            .optional()
            .doing(&self.path, "read a result")?;
        let Some(json) = json else {
            return Ok(None);
        };
        let corrupt = |reason: String| StoreError::Corrupt { id: id.to_owned(), reason };
        let mut result: RunResult =
            serde_json::from_str(&json).map_err(|error| corrupt(error.to_string()))?;

        let benchmarks = self.benchmark_ids(id)?;
        if benchmarks.len() != result.benchmarks.len() {
            return Err(corrupt(format!(
                "{} benchmarks in the result but {} benchmark rows",
                result.benchmarks.len(),
                benchmarks.len()
            )));
        }
        for (benchmark, row_id) in result.benchmarks.iter_mut().zip(benchmarks) {
            benchmark.requests = self.records(id, row_id, REQUESTS)?;
            benchmark.items = self.records(id, row_id, ITEMS)?;
        }
        Ok(Some(result))
    }

    /// Stored results matching `filter`, newest first.
    pub fn results(&self, filter: &ResultFilter) -> Result<Vec<ResultSummary>, StoreError> {
        let limit = filter.limit.map_or(-1, |n| i64::try_from(n).unwrap_or(i64::MAX));
        let mut statement = self
            .conn
            .prepare_cached(
                "SELECT r.id, r.started_at, r.finished_at, r.suite, r.model_name, r.model_quant,
                     r.engine_name, r.engine_version, r.passed, r.hardware_fingerprint,
                     r.kitt_version, r.metric_version,
                     (SELECT count(*) FROM benchmarks b WHERE b.result_id = r.id),
                     (SELECT count(*) FROM benchmarks b
                         WHERE b.result_id = r.id AND b.status = 'passed')
                 FROM results r
                 WHERE (?1 IS NULL OR r.model_name = ?1)
                   AND (?2 IS NULL OR r.engine_name = ?2)
                   AND (?3 IS NULL OR r.suite = ?3)
                   AND (?4 IS NULL OR r.model_quant = ?4)
                 ORDER BY r.started_unix_ms DESC, r.rowid DESC
                 LIMIT ?5",
            )
            .doing(&self.path, "list results")?;
        let params = (&filter.model, &filter.engine, &filter.suite, &filter.quant, limit);
        statement
            .query_map(params, summary_from_row)
            .and_then(|rows| rows.collect())
            .doing(&self.path, "list results")
    }

    /// Row ids of a result's benchmarks, in execution order.
    fn benchmark_ids(&self, id: &str) -> Result<Vec<i64>, StoreError> {
        let mut statement = self
            .conn
            .prepare_cached("SELECT id FROM benchmarks WHERE result_id = ?1 ORDER BY position")
            .doing(&self.path, "read benchmarks")?;
        statement
            .query_map([id], |row| row.get(0))
            .and_then(|rows| rows.collect())
            .doing(&self.path, "read benchmarks")
    }

    /// A benchmark's request records or quality items, in order.
    fn records<T: serde::de::DeserializeOwned>(
        &self,
        id: &str,
        benchmark: i64,
        table: &RecordTable,
    ) -> Result<Vec<T>, StoreError> {
        let mut statement =
            self.conn.prepare_cached(table.select).doing(&self.path, table.reading)?;
        let texts: Vec<String> = statement
            .query_map([benchmark], |row| row.get(0))
            .and_then(|rows| rows.collect())
            .doing(&self.path, table.reading)?;
        texts
            .iter()
            .map(|text| {
                serde_json::from_str(text).map_err(|error| StoreError::Corrupt {
                    id: id.to_owned(),
                    reason: format!("{}: {error}", table.what),
                })
            })
            .collect()
    }
}

/// Where a benchmark's per-record rows live.
struct RecordTable {
    select: &'static str,
    reading: &'static str,
    what: &'static str,
}

const REQUESTS: &RecordTable = &RecordTable {
    select: "SELECT record FROM requests WHERE benchmark_id = ?1 ORDER BY position",
    reading: "read requests",
    what: "a request record",
};

const ITEMS: &RecordTable = &RecordTable {
    select: "SELECT record FROM quality_items WHERE benchmark_id = ?1 ORDER BY position",
    reading: "read quality items",
    what: "a quality item",
};

/// A result prepared for its `results` and `hardware` rows.
struct ResultRow<'a> {
    result: &'a RunResult,
    started_unix_ms: i64,
    size_bytes: i64,
    fingerprint: String,
    result_json: String,
    hardware_json: String,
}

impl<'a> ResultRow<'a> {
    /// Checks and encodes everything before the transaction starts.
    fn new(result: &'a RunResult) -> Result<Self, StoreError> {
        let started: jiff::Timestamp =
            result.started_at.parse().map_err(|error| StoreError::InvalidResult {
                id: result.id.clone(),
                reason: format!(
                    "`started_at` is not an RFC 3339 time: `{}` ({error})",
                    result.started_at
                ),
            })?;

        let mut stored = result.without_requests();
        // The fingerprint is a function of the other hardware fields; filling it
        // in beats losing a run's numbers over a missing label.
        if stored.hardware.fingerprint.is_empty() {
            stored.hardware.fingerprint = hardware::fingerprint(&stored.hardware);
        }

        Ok(ResultRow {
            result,
            started_unix_ms: started.as_millisecond(),
            size_bytes: to_i64(&result.id, "model.size_bytes", result.model.size_bytes)?,
            result_json: to_json(&result.id, &stored)?,
            hardware_json: to_json(&result.id, &stored.hardware)?,
            fingerprint: stored.hardware.fingerprint,
        })
    }

    /// Writes the machine (once per fingerprint) and the result row.
    fn insert(&self, tx: &Transaction<'_>, path: &Path) -> Result<(), StoreError> {
        let result = self.result;
        let now = jiff::Timestamp::now().to_string();
        tx.execute(
            "INSERT INTO hardware (fingerprint, json, first_seen_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (fingerprint) DO NOTHING",
            (&self.fingerprint, &self.hardware_json, &now),
        )
        .doing(path, "store the hardware")?;

        tx.execute(
            "INSERT INTO results (id, started_at, started_unix_ms, finished_at, kitt_version,
                 metric_version, suite, config_hash, model_name, model_path, model_quant,
                 model_size_bytes, engine_name, engine_version, passed, hardware_fingerprint,
                 json, stored_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16,
                 ?17, ?18)",
            rusqlite::params![
                result.id,
                result.started_at,
                self.started_unix_ms,
                result.finished_at,
                result.kitt_version,
                result.metric_version,
                result.suite,
                result.config_hash,
                result.model.name,
                result.model.path,
                result.model.quant,
                self.size_bytes,
                result.engine.name,
                result.engine.version,
                result.passed,
                self.fingerprint,
                self.result_json,
                now,
            ],
        )
        .doing(path, "store a result")?;
        Ok(())
    }
}

fn summary_from_row(row: &Row<'_>) -> rusqlite::Result<ResultSummary> {
    Ok(ResultSummary {
        id: row.get(0)?,
        started_at: row.get(1)?,
        finished_at: row.get(2)?,
        suite: row.get(3)?,
        model: row.get(4)?,
        quant: row.get(5)?,
        engine: row.get(6)?,
        engine_version: row.get(7)?,
        passed: row.get(8)?,
        hardware_fingerprint: row.get(9)?,
        kitt_version: row.get(10)?,
        metric_version: row.get(11)?,
        benchmarks: row.get(12)?,
        benchmarks_passed: row.get(13)?,
    })
}

/// Stores one benchmark with its metrics and requests.
fn insert_benchmark(
    tx: &Transaction<'_>,
    path: &Path,
    result_id: &str,
    position: usize,
    benchmark: &BenchmarkResult,
) -> Result<(), StoreError> {
    let (status, reason) = match &benchmark.status {
        BenchmarkStatus::Passed => ("passed", None),
        BenchmarkStatus::Failed(reason) => ("failed", Some(reason)),
        BenchmarkStatus::NotRun(reason) => ("not_run", Some(reason)),
    };
    tx.prepare_cached(
        "INSERT INTO benchmarks (result_id, position, name, run_number, status, reason)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )
    .and_then(|mut insert| {
        let position = position as i64;
        insert.execute((result_id, position, &benchmark.name, benchmark.run_number, status, reason))
    })
    .doing(path, "store a benchmark")?;
    let benchmark_id = tx.last_insert_rowid();

    let mut insert_metric = tx
        .prepare_cached("INSERT INTO metrics (benchmark_id, name, value) VALUES (?1, ?2, ?3)")
        .doing(path, "store a metric")?;
    for (name, value) in &benchmark.metrics {
        // JSON has no NaN or infinity: such a value would make the stored result unreadable.
        if !value.is_finite() {
            return Err(StoreError::InvalidResult {
                id: result_id.to_owned(),
                reason: format!(
                    "metric `{name}` of benchmark `{}` (run {}) is {value}, not a number",
                    benchmark.name, benchmark.run_number
                ),
            });
        }
        insert_metric.execute((benchmark_id, name, value)).doing(path, "store a metric")?;
    }

    let mut insert_request = tx
        .prepare_cached(
            "INSERT INTO requests (benchmark_id, position, ttft_ns, e2e_ns, output_tokens,
                 failure_class, record)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )
        .doing(path, "store a request")?;
    for (position, record) in benchmark.requests.iter().enumerate() {
        let optional = |field: &str, value: Option<u64>| {
            value.map(|value| to_i64(result_id, field, value)).transpose()
        };
        insert_request
            .execute((
                benchmark_id,
                position as i64,
                optional("ttft_ns", record.ttft_ns)?,
                optional("e2e_ns", record.e2e_ns)?,
                optional("output_tokens", record.output_tokens)?,
                record.failure.as_ref().map(|failure| failure.class.as_str()),
                to_json(result_id, record)?,
            ))
            .doing(path, "store a request")?;
    }
    insert_items(tx, path, result_id, benchmark_id, &benchmark.items)
}

/// Stores a benchmark's scored quality items.
fn insert_items(
    tx: &Transaction<'_>,
    path: &Path,
    result_id: &str,
    benchmark_id: i64,
    items: &[QualityItem],
) -> Result<(), StoreError> {
    let mut insert_item = tx
        .prepare_cached(
            "INSERT INTO quality_items (benchmark_id, position, item_index, correct, answered,
                 record)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )
        .doing(path, "store a quality item")?;
    for (position, item) in items.iter().enumerate() {
        let index = to_i64(result_id, "items.index", item.index as u64)?;
        insert_item
            .execute((
                benchmark_id,
                position as i64,
                index,
                item.correct,
                item.extracted.is_some(),
                to_json(result_id, item)?,
            ))
            .doing(path, "store a quality item")?;
    }
    Ok(())
}

fn to_json(id: &str, value: &impl Serialize) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|error| StoreError::InvalidResult {
        id: id.to_owned(),
        reason: format!("cannot encode it as JSON: {error}"),
    })
}

/// SQLite integers are signed; a larger value is a measurement bug, not data.
fn to_i64(id: &str, field: &str, value: u64) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| StoreError::InvalidResult {
        id: id.to_owned(),
        reason: format!("`{field}` is {value}, beyond what the store can hold"),
    })
}
