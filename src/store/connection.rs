//! Opening the store: the home folder, the database file, its settings and
//! its schema.
//!
//! The database runs in WAL mode so that readers (`kitt campaign status` in
//! another terminal) never wait for the writer and the writer never waits for
//! them; only two writers wait for each other, up to a busy timeout, after
//! which the caller gets [`StoreError::Locked`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

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

    /// Opens `<home>/kitt.db` for reading only, as `campaign status` and
    /// `list` do: nothing is created, migrated or written, so they work on a
    /// home the user cannot write. `None` when there is no store. A store
    /// whose WAL files cannot be created is read as an immutable file.
    pub fn open_read_only(home: &Path) -> Result<Option<Store>, StoreError> {
        let path = home.join(DB_FILE);
        if !path.exists() {
            return Ok(None);
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI;
        let readable = |conn: Connection| -> rusqlite::Result<Connection> {
            conn.busy_timeout(DEFAULT_BUSY_TIMEOUT)?;
            conn.query_row("SELECT count(*) FROM sqlite_schema", [], |_| Ok(()))?;
            Ok(conn)
        };
        let conn = match Connection::open_with_flags(&path, flags).and_then(readable) {
            Ok(conn) => conn,
            Err(error) => {
                // Read as an immutable file only when no write-ahead log
                // holds changes the file itself lacks.
                let wal = path.with_file_name(format!("{DB_FILE}-wal"));
                if std::fs::metadata(&wal).is_ok_and(|meta| meta.len() > 0) {
                    return Err(StoreError::Unwritable {
                        path,
                        action: "read the store: its write-ahead log holds changes and the \
                                 home is read-only; run any kitt command once with write access \
                                 to fold them in",
                        source: Some(error),
                    });
                }
                let uri = format!("file:{}?immutable=1", uri_path(&path));
                Connection::open_with_flags(uri, flags)
                    .and_then(readable)
                    .doing(&path, "open the database for reading")?
            }
        };
        let store = Store { conn, path };
        let version = store.schema_version()?;
        let supported = schema::SCHEMA_VERSION;
        if version > i64::from(supported) {
            return Err(StoreError::NewerSchema { path: store.path, found: version, supported });
        }
        Ok(Some(store))
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

    // Switching a new database to WAL takes an exclusive lock that the busy
    // timeout does not cover; two kitt processes creating the store at once
    // retry for a while instead of failing.
    let deadline = std::time::Instant::now() + DEFAULT_BUSY_TIMEOUT;
    let mode: String = loop {
        match conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
            .doing(path, "switch to WAL mode")
        {
            Err(StoreError::Locked { .. }) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            result => break result?,
        }
    };
    if !mode.eq_ignore_ascii_case("wal") {
        // Some file systems (network mounts) cannot share memory for WAL; the
        // store still works, but readers then wait for writers.
        tracing::warn!(store = %path.display(), mode, "the store could not use WAL mode");
    }
    Ok(())
}

/// A file path as the path part of an SQLite URI.
fn uri_path(path: &Path) -> String {
    let mut out = String::new();
    for c in path.display().to_string().chars() {
        match c {
            '%' | '?' | '#' => out.push_str(&format!("%{:02X}", c as u32)),
            _ => out.push(c),
        }
    }
    out
}
