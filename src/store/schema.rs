//! The store's schema as an ordered list of migration steps.
//!
//! Each step is embedded SQL with a version number. Opening a store applies the
//! steps it has not seen yet, each in its own transaction together with its row
//! in `schema_migrations(version, applied_at)`, so a crash leaves the database
//! either before or after a step, never halfway. Steps are only ever appended;
//! an applied step is never edited. A database that records a version this kitt
//! does not know was written by a newer kitt and is refused.

use std::collections::BTreeSet;
use std::path::Path;

use rusqlite::{Connection, TransactionBehavior};

use super::error::{Context, StoreError};

/// One schema step.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Migration {
    /// Position in the history, from 1, without gaps.
    pub version: u32,
    /// A short name for messages.
    pub name: &'static str,
    /// The statements.
    pub sql: &'static str,
}

/// Every step, oldest first. Append new steps; never edit applied ones.
pub(crate) const MIGRATIONS: &[Migration] = &[
    Migration { version: 1, name: "results", sql: include_str!("migrations/0001_results.sql") },
    Migration { version: 2, name: "campaigns", sql: include_str!("migrations/0002_campaigns.sql") },
    Migration {
        version: 3,
        name: "quality items",
        sql: include_str!("migrations/0003_quality_items.sql"),
    },
    Migration {
        version: 4,
        name: "item limits",
        sql: include_str!("migrations/0004_item_limit.sql"),
    },
    Migration { version: 5, name: "downloads", sql: include_str!("migrations/0005_downloads.sql") },
    Migration { version: 6, name: "pulls", sql: include_str!("migrations/0006_pulls.sql") },
    Migration { version: 7, name: "schedules", sql: include_str!("migrations/0007_schedules.sql") },
    Migration { version: 8, name: "devon", sql: include_str!("migrations/0008_devon.sql") },
    Migration {
        version: 9,
        name: "comparisons",
        sql: include_str!("migrations/0009_comparisons.sql"),
    },
    Migration {
        version: 10,
        name: "run devices",
        sql: include_str!("migrations/0010_run_devices.sql"),
    },
];

/// The first schema version that records the devices of parallel runs.
pub const RUN_DEVICES_VERSION: i64 = 10;

/// The first schema version that stores `auto_compare`'s comparisons.
pub const COMPARISONS_VERSION: i64 = 9;

/// The first schema version with schedules.
pub const SCHEDULES_VERSION: i64 = 7;

/// The first schema version that records downloads.
pub const DOWNLOADS_VERSION: i64 = 5;

/// The first schema version that records Ollama pulls.
pub const PULLS_VERSION: i64 = 6;

/// The first schema version that records Devon's downloads.
pub const DEVON_VERSION: i64 = 8;

/// The first schema version with campaign state.
pub const CAMPAIGN_STATE_VERSION: i64 = 2;

/// The schema version this kitt writes.
pub const SCHEMA_VERSION: u32 = MIGRATIONS[MIGRATIONS.len() - 1].version;

const CREATE_HISTORY: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (
    version    INTEGER PRIMARY KEY,
    applied_at TEXT NOT NULL
) STRICT";

/// Brings the database at `path` up to the last of `migrations`; returns the
/// versions applied now (empty when it was already current).
pub(crate) fn migrate(
    conn: &mut Connection,
    path: &Path,
    migrations: &[Migration],
) -> Result<Vec<u32>, StoreError> {
    if !history_exists(conn, path)? {
        conn.execute_batch(CREATE_HISTORY).doing(path, "create the migration history")?;
    }
    let applied = applied_versions(conn, path)?;
    refuse_unknown_versions(&applied, path, migrations)?;

    // A current store is opened without taking the write lock, so a reader can
    // open it while a campaign is writing.
    let pending = migrations.iter().filter(|m| !applied.contains(&i64::from(m.version)));
    let mut newly_applied = Vec::new();
    for migration in pending {
        if apply(conn, path, migration)? {
            tracing::info!(
                version = migration.version,
                name = migration.name,
                store = %path.display(),
                "applied store migration"
            );
            newly_applied.push(migration.version);
        }
    }
    Ok(newly_applied)
}

/// The highest version recorded in the database (0 for an empty one).
pub(crate) fn current_version(conn: &Connection, path: &Path) -> Result<i64, StoreError> {
    if !history_exists(conn, path)? {
        return Ok(0);
    }
    Ok(applied_versions(conn, path)?.last().copied().unwrap_or(0))
}

fn history_exists(conn: &Connection, path: &Path) -> Result<bool, StoreError> {
    conn.query_row(
        "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = 'schema_migrations'",
        [],
        |row| row.get::<_, i64>(0),
    )
    .map(|count| count > 0)
    .doing(path, "read the migration history")
}

fn applied_versions(conn: &Connection, path: &Path) -> Result<BTreeSet<i64>, StoreError> {
    let mut statement = conn
        .prepare("SELECT version FROM schema_migrations")
        .doing(path, "read the migration history")?;
    let versions = statement
        .query_map([], |row| row.get::<_, i64>(0))
        .and_then(|rows| rows.collect::<Result<BTreeSet<i64>, _>>())
        .doing(path, "read the migration history")?;
    Ok(versions)
}

fn refuse_unknown_versions(
    applied: &BTreeSet<i64>,
    path: &Path,
    migrations: &[Migration],
) -> Result<(), StoreError> {
    let known: BTreeSet<i64> = migrations.iter().map(|m| i64::from(m.version)).collect();
    let supported = migrations.last().map_or(0, |m| m.version);
    match applied.iter().find(|version| !known.contains(version)) {
        Some(_) => Err(StoreError::NewerSchema {
            path: path.to_owned(),
            found: applied.last().copied().unwrap_or(0),
            supported,
        }),
        None => Ok(()),
    }
}

/// Applies one step unless it is recorded; returns whether it was applied now.
fn apply(conn: &mut Connection, path: &Path, migration: &Migration) -> Result<bool, StoreError> {
    // Immediate: take the write lock first, so two kitt processes opening a new
    // store at once apply each step exactly once.
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .doing(path, "start a migration")?;

    let recorded: i64 = tx
        .query_row(
            "SELECT count(*) FROM schema_migrations WHERE version = ?1",
            [migration.version],
            |row| row.get(0),
        )
        .doing(path, "read the migration history")?;
    if recorded > 0 {
        return Ok(false);
    }

    tx.execute_batch(migration.sql).map_err(|source| StoreError::Migration {
        path: path.to_owned(),
        version: migration.version,
        name: migration.name,
        source,
    })?;
    tx.execute(
        "INSERT INTO schema_migrations (version, applied_at) VALUES (?1, ?2)",
        (migration.version, jiff::Timestamp::now().to_string()),
    )
    .doing(path, "record a migration")?;
    tx.commit().doing(path, "commit a migration")?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: Migration =
        Migration { version: 1, name: "good", sql: "CREATE TABLE a (x INTEGER) STRICT;" };
    const BAD: Migration = Migration {
        version: 2,
        name: "bad",
        sql: "CREATE TABLE b (x INTEGER) STRICT; INSERT INTO no_such_table VALUES (1);",
    };

    fn table_exists(conn: &Connection, name: &str) -> bool {
        conn.query_row("SELECT count(*) FROM sqlite_schema WHERE name = ?1", [name], |row| {
            row.get::<_, i64>(0)
        })
        .map(|count| count > 0)
        .unwrap_or(false)
    }

    #[test]
    fn a_failing_step_is_rolled_back_entirely() -> Result<(), Box<dyn std::error::Error>> {
        let mut conn = Connection::open_in_memory()?;
        let path = Path::new(":memory:");

        let error = migrate(&mut conn, path, &[GOOD, BAD]).err();
        assert!(matches!(error, Some(StoreError::Migration { version: 2, .. })), "{error:?}");

        assert!(table_exists(&conn, "a"));
        assert!(!table_exists(&conn, "b"), "the failed step's first statement was kept");
        assert_eq!(current_version(&conn, path)?, 1);
        Ok(())
    }

    #[test]
    fn applying_twice_applies_nothing_the_second_time() -> Result<(), Box<dyn std::error::Error>> {
        let mut conn = Connection::open_in_memory()?;
        let path = Path::new(":memory:");
        assert_eq!(migrate(&mut conn, path, &[GOOD])?, vec![1]);
        assert_eq!(migrate(&mut conn, path, &[GOOD])?, Vec::<u32>::new());
        Ok(())
    }

    #[test]
    fn unknown_versions_are_refused() -> Result<(), Box<dyn std::error::Error>> {
        let mut conn = Connection::open_in_memory()?;
        let path = Path::new(":memory:");
        migrate(&mut conn, path, &[GOOD])?;
        conn.execute("INSERT INTO schema_migrations VALUES (7, 'later')", [])?;

        let error = migrate(&mut conn, path, &[GOOD]).err();
        assert!(
            matches!(error, Some(StoreError::NewerSchema { found: 7, supported: 1, .. })),
            "{error:?}"
        );
        Ok(())
    }

    #[test]
    fn versions_are_consecutive_from_one() {
        for (position, migration) in MIGRATIONS.iter().enumerate() {
            assert_eq!(migration.version as usize, position + 1, "{}", migration.name);
        }
    }
}
