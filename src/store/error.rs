//! What can go wrong with the store, worded for the person who has to fix it.
//!
//! SQLite's own codes are translated here, once: a busy or locked database
//! becomes [`StoreError::Locked`], a read-only or unopenable one
//! [`StoreError::Unwritable`]. Both are environment problems (exit 3).

use std::path::{Path, PathBuf};

use rusqlite::ErrorCode;

/// A failure of the result and campaign store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The kitt home could not be created.
    #[error("cannot create the kitt home `{}`", path.display())]
    CreateHome {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },

    /// Another process holds the database's write lock longer than kitt waits.
    #[error(
        "the store `{}` is locked by another process (while trying to {action}); \
         wait for it to finish and try again",
        path.display()
    )]
    Locked {
        /// The database file.
        path: PathBuf,
        /// What kitt was doing.
        action: &'static str,
        /// SQLite's report.
        #[source]
        source: rusqlite::Error,
    },

    /// The database or its folder cannot be written.
    #[error(
        "the store `{}` cannot be written (while trying to {action}); check the permissions \
         of the file and its folder",
        path.display()
    )]
    Unwritable {
        /// The database file.
        path: PathBuf,
        /// What kitt was doing.
        action: &'static str,
        /// SQLite's report, when it gave one.
        #[source]
        source: Option<rusqlite::Error>,
    },

    /// The file exists but is not an SQLite database.
    #[error("`{}` is not a kitt store (not an SQLite database, or damaged)", path.display())]
    NotADatabase {
        /// The database file.
        path: PathBuf,
        /// SQLite's report.
        #[source]
        source: rusqlite::Error,
    },

    /// The database was migrated by a newer kitt.
    #[error(
        "the store `{}` has schema version {found}, but this kitt knows versions up to \
         {supported}; it was written by a newer kitt, so upgrade kitt or use another --home",
        path.display()
    )]
    NewerSchema {
        /// The database file.
        path: PathBuf,
        /// Highest version recorded in the database.
        found: i64,
        /// Highest version this kitt knows.
        supported: u32,
    },

    /// A migration step failed; it was rolled back.
    #[error("cannot apply store migration {version} (`{name}`) to `{}`", path.display())]
    Migration {
        /// The database file.
        path: PathBuf,
        /// The step's version.
        version: u32,
        /// The step's name.
        name: &'static str,
        /// SQLite's report.
        #[source]
        source: rusqlite::Error,
    },

    /// A result with this id is already stored; nothing was written.
    #[error("result `{id}` is already stored; results are never stored twice")]
    DuplicateResult {
        /// The result id.
        id: String,
    },

    /// The result cannot be stored as it is; nothing was written.
    #[error("result `{id}` cannot be stored: {reason}")]
    InvalidResult {
        /// The result id.
        id: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A stored result cannot be read back.
    #[error("stored result `{id}` cannot be read back: {reason}")]
    Corrupt {
        /// The result id.
        id: String,
        /// What is wrong with it.
        reason: String,
    },

    /// Any other SQLite failure.
    #[error("store `{}`: cannot {action}", path.display())]
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// What kitt was doing.
        action: &'static str,
        /// SQLite's report.
        #[source]
        source: rusqlite::Error,
    },
}

impl StoreError {
    /// Classifies an SQLite error raised while doing `action` on the database at `path`.
    pub(crate) fn sqlite(path: &Path, action: &'static str, source: rusqlite::Error) -> Self {
        let path = path.to_owned();
        match source.sqlite_error_code() {
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
                StoreError::Locked { path, action, source }
            }
            Some(ErrorCode::ReadOnly | ErrorCode::CannotOpen | ErrorCode::PermissionDenied) => {
                StoreError::Unwritable { path, action, source: Some(source) }
            }
            Some(ErrorCode::NotADatabase) => StoreError::NotADatabase { path, source },
            _ => StoreError::Sqlite { path, action, source },
        }
    }
}

/// Adds the database path and the action to SQLite results.
pub(crate) trait Context<T> {
    /// Classifies the error as [`StoreError::sqlite`] does.
    fn doing(self, path: &Path, action: &'static str) -> Result<T, StoreError>;
}

impl<T> Context<T> for Result<T, rusqlite::Error> {
    fn doing(self, path: &Path, action: &'static str) -> Result<T, StoreError> {
        self.map_err(|error| StoreError::sqlite(path, action, error))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(code: i32) -> rusqlite::Error {
        rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), None)
    }

    #[test]
    fn busy_and_locked_mean_locked() {
        let path = Path::new("/tmp/kitt.db");
        for code in [rusqlite::ffi::SQLITE_BUSY, rusqlite::ffi::SQLITE_LOCKED] {
            let error = StoreError::sqlite(path, "store a result", failure(code));
            assert!(matches!(error, StoreError::Locked { .. }), "{error}");
            assert!(error.to_string().contains("locked by another process"));
        }
    }

    #[test]
    fn read_only_means_unwritable() {
        let error = StoreError::sqlite(
            Path::new("/tmp/kitt.db"),
            "store a result",
            failure(rusqlite::ffi::SQLITE_READONLY),
        );
        assert!(matches!(error, StoreError::Unwritable { .. }), "{error}");
        assert!(error.to_string().contains("cannot be written"));
    }
}
