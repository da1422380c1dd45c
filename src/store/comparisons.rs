//! `auto_compare`'s comparisons: one per campaign, with a row per compared
//! metric, or a row saying there was nothing to compare with. Saving
//! replaces the campaign's earlier comparison in one transaction.

use rusqlite::{OptionalExtension, params};

use super::connection::Store;
use super::error::{Context, StoreError};
use crate::config::Thresholds;
use crate::results::compare::{Compared, Comparison, KeyNote, MetricChange, MetricClass, Verdict};

impl Store {
    /// Stores `comparison` as its campaign's comparison, replacing any earlier one.
    pub fn save_comparison(&mut self, comparison: &Comparison) -> Result<(), StoreError> {
        let doing = "store a campaign comparison";
        let tx = self.conn.transaction().doing(&self.path, doing)?;
        tx.execute(
            "DELETE FROM campaign_comparisons WHERE campaign_id = ?1",
            [&comparison.campaign_id],
        )
        .doing(&self.path, doing)?;
        tx.execute(
            "INSERT INTO campaign_comparisons (campaign_id, baseline_id, baseline_finished_at, \
             created_at, throughput_pct, latency_pct, compared_runs, regressions, improvements, \
             failed_now, not_in_baseline, not_measured_now, notes) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
            params![
                comparison.campaign_id,
                comparison.baseline_id,
                comparison.baseline_finished_at,
                comparison.created_at,
                comparison.thresholds.throughput_pct,
                comparison.thresholds.latency_pct,
                comparison.compared_runs as i64,
                comparison.regression_count() as i64,
                comparison.improvements().count() as i64,
                to_json(&comparison.failed_now),
                to_json(&comparison.not_in_baseline),
                to_json(&comparison.not_measured_now),
                to_json(&comparison.notes),
            ],
        )
        .doing(&self.path, doing)?;
        {
            let mut insert = tx
                .prepare(
                    "INSERT INTO campaign_comparison_metrics (campaign_id, position, run_key, \
                     benchmark, metric, class, baseline, current, change_pct, verdict) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                )
                .doing(&self.path, doing)?;
            for (position, change) in comparison.changes.iter().enumerate() {
                insert
                    .execute(params![
                        comparison.campaign_id,
                        position as i64,
                        change.run_key,
                        change.benchmark,
                        change.metric,
                        change.class.as_str(),
                        change.baseline,
                        change.current,
                        change.change_pct,
                        change.verdict.as_str(),
                    ])
                    .doing(&self.path, doing)?;
            }
        }
        tx.commit().doing(&self.path, doing)
    }

    /// Records that the campaign had no earlier finished campaign of its name
    /// to compare with, replacing any earlier comparison.
    pub fn save_no_baseline(&mut self, campaign_id: &str) -> Result<(), StoreError> {
        let doing = "store a campaign comparison";
        let tx = self.conn.transaction().doing(&self.path, doing)?;
        tx.execute("DELETE FROM campaign_comparisons WHERE campaign_id = ?1", [campaign_id])
            .doing(&self.path, doing)?;
        let defaults = crate::config::Thresholds::default();
        tx.execute(
            "INSERT INTO campaign_comparisons (campaign_id, created_at, throughput_pct, \
             latency_pct, compared_runs, regressions, improvements) \
             VALUES (?1, ?2, ?3, ?4, 0, 0, 0)",
            params![
                campaign_id,
                jiff::Timestamp::now().to_string(),
                defaults.throughput_pct,
                defaults.latency_pct
            ],
        )
        .doing(&self.path, doing)?;
        tx.commit().doing(&self.path, doing)
    }

    /// Forgets the campaign's comparison (its runs are being redone).
    pub fn forget_comparison(&self, campaign_id: &str) -> Result<(), StoreError> {
        if self.schema_version()? < super::schema::COMPARISONS_VERSION {
            return Ok(());
        }
        self.conn
            .execute("DELETE FROM campaign_comparisons WHERE campaign_id = ?1", [campaign_id])
            .doing(&self.path, "forget a campaign comparison")
            .map(drop)
    }

    /// The stored comparison of a campaign, if any. A store older than
    /// comparisons has none.
    pub fn comparison(&self, campaign_id: &str) -> Result<Option<Compared>, StoreError> {
        if self.schema_version()? < super::schema::COMPARISONS_VERSION {
            return Ok(None);
        }
        let doing = "read a campaign comparison";
        let head = self
            .conn
            .query_row(
                "SELECT c.baseline_id, c.baseline_finished_at, c.created_at, c.throughput_pct, \
                 c.latency_pct, c.compared_runs, c.failed_now, c.not_in_baseline, c.notes, \
                 c.not_measured_now, campaigns.name \
                 FROM campaign_comparisons AS c JOIN campaigns ON campaigns.id = c.campaign_id \
                 WHERE c.campaign_id = ?1",
                [campaign_id],
                |row| {
                    let Some(baseline_id) = row.get::<_, Option<String>>(0)? else {
                        return Ok(Err(row.get::<_, String>(10)?));
                    };
                    Ok(Ok(Comparison {
                        campaign_id: campaign_id.to_owned(),
                        baseline_id,
                        baseline_finished_at: row.get(1)?,
                        created_at: row.get(2)?,
                        thresholds: Thresholds {
                            throughput_pct: row.get(3)?,
                            latency_pct: row.get(4)?,
                        },
                        compared_runs: usize::try_from(row.get::<_, i64>(5)?).unwrap_or(0),
                        changes: Vec::new(),
                        failed_now: from_json(&row.get::<_, String>(6)?),
                        not_in_baseline: from_json(&row.get::<_, String>(7)?),
                        notes: from_json::<KeyNote>(&row.get::<_, String>(8)?),
                        not_measured_now: from_json::<KeyNote>(&row.get::<_, String>(9)?),
                    }))
                },
            )
            .optional()
            .doing(&self.path, doing)?;
        let mut comparison = match head {
            None => return Ok(None),
            Some(Err(name)) => return Ok(Some(Compared::NoBaseline { name })),
            Some(Ok(comparison)) => comparison,
        };
        let mut statement = self
            .conn
            .prepare(
                "SELECT run_key, benchmark, metric, class, baseline, current, change_pct, verdict \
                 FROM campaign_comparison_metrics WHERE campaign_id = ?1 ORDER BY position",
            )
            .doing(&self.path, doing)?;
        comparison.changes = statement
            .query_map([campaign_id], |row| {
                let class: String = row.get(3)?;
                let verdict: String = row.get(7)?;
                Ok(MetricChange {
                    run_key: row.get(0)?,
                    benchmark: row.get(1)?,
                    metric: row.get(2)?,
                    class: MetricClass::parse(&class).unwrap_or(MetricClass::Throughput),
                    baseline: row.get(4)?,
                    current: row.get(5)?,
                    change_pct: row.get(6)?,
                    verdict: Verdict::parse(&verdict).unwrap_or(Verdict::Unchanged),
                })
            })
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .doing(&self.path, doing)?;
        Ok(Some(Compared::Done(Box::new(comparison))))
    }
}

/// A list as its JSON column.
fn to_json<T: serde::Serialize>(list: &[T]) -> String {
    serde_json::to_string(list).unwrap_or_else(|_| "[]".to_owned())
}

/// A JSON list column; the schema's CHECKs and kitt's own writes keep it valid.
fn from_json<T: serde::de::DeserializeOwned>(text: &str) -> Vec<T> {
    serde_json::from_str(text).unwrap_or_default()
}
