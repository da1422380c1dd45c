//! Opening the store: the home folder, the database file, its settings and
//! its schema.
//!
//! The database runs in WAL mode so that readers (`kitt campaign status` in
//! another terminal) never wait for the writer and the writer never waits for
//! them; only two writers wait for each other, up to a busy timeout, after
//! which the caller gets [`StoreError::Locked`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::Connection;

use super::error::{Context, StoreError};
use super::schema;

/// The database file's name inside the kitt home.
pub const DB_FILE: &str = "kitt.db";

/// How long a write waits for another process's write to finish.
pub const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// An open kitt store: results now, campaign state later.
#[derive(Debug)]
pub struct Store {
    pub(super) conn: Connection,
    pub(super) path: PathBuf,
}

impl Store {
    /// Opens or creates `<home>/kitt.db` (creating `home` with mode 0700) and
    /// applies any migration it lacks.
    pub fn open(home: &Path) -> Result<Store, StoreError> {
        create_home(home)?;
        let path = home.join(DB_FILE);

        let conn = Connection::open(&path).doing(&path, "open the database")?;
        conn.busy_timeout(DEFAULT_BUSY_TIMEOUT).doing(&path, "set the busy timeout")?;
        // SQLite silently falls back to read-only for a write-protected file;
        // refuse now rather than at the first write, hours into a campaign.
        if conn.is_readonly("main").doing(&path, "open the database")? {
            return Err(StoreError::Unwritable { path, action: "open the database", source: None });
        }
        configure(&conn, &path)?;

        let mut store = Store { conn, path };
        let applied = schema::migrate(&mut store.conn, &store.path, schema::MIGRATIONS)?;
        if !applied.is_empty() {
            tracing::debug!(store = %store.path.display(), ?applied, "store schema updated");
        }
        Ok(store)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The schema version recorded in the database.
    pub fn schema_version(&self) -> Result<i64, StoreError> {
        schema::current_version(&self.conn, &self.path)
    }

    /// Takes and releases the write lock, so that a store another process holds
    /// locked is found before work whose result could not be stored.
    pub fn check_writable(&self) -> Result<(), StoreError> {
        self.conn
            .execute_batch("BEGIN IMMEDIATE; ROLLBACK;")
            .doing(&self.path, "take the write lock")
    }

    /// Sets how long a write waits for another process's lock.
    pub fn set_busy_timeout(&self, timeout: Duration) -> Result<(), StoreError> {
        self.conn.busy_timeout(timeout).doing(&self.path, "set the busy timeout")
    }
}

/// Creates the kitt home, private to the user, when it does not exist.
fn create_home(home: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::DirBuilderExt;

    if home.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(home)
        .map_err(|source| StoreError::CreateHome { path: home.to_owned(), source })
}

/// WAL journal and enforced foreign keys, on every connection.
fn configure(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    conn.pragma_update(None, "foreign_keys", true).doing(path, "enable foreign keys")?;

    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
        .doing(path, "switch to WAL mode")?;
    if !mode.eq_ignore_ascii_case("wal") {
        // Some file systems (network mounts) cannot share memory for WAL; the
        // store still works, but readers then wait for writers.
        tracing::warn!(store = %path.display(), mode, "the store could not use WAL mode");
    }
    Ok(())
}
