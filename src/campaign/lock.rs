//! One process at a time drives a campaign: an exclusive lock on
//! `<home>/locks/campaign-<id>.lock`, held for as long as the process runs.
//! The operating system releases it when the process dies, even by
//! `kill -9`, so a lock never outlives its owner and a run found `running`
//! while nobody holds the lock was interrupted.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A held campaign lock; released when dropped or when the process ends.
#[derive(Debug)]
pub struct CampaignLock {
    _file: File,
}

/// Why a campaign could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds it.
    #[error(
        "campaign `{id}` is being run by another kitt process{owner}; wait for it to finish \
         or stop it, then resume"
    )]
    Held {
        /// The campaign.
        id: String,
        /// " (pid N on HOST)" when known.
        owner: String,
    },
    /// The lock file cannot be created or locked.
    #[error("cannot lock campaign `{id}` at {}", path.display())]
    Io {
        /// The campaign.
        id: String,
        /// The lock file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// The lock file of a campaign.
pub fn lock_path(home: &Path, id: &str) -> PathBuf {
    home.join("locks").join(format!("campaign-{id}.lock"))
}

impl CampaignLock {
    /// Takes the campaign's lock, or says who holds it.
    pub fn acquire(home: &Path, id: &str) -> Result<CampaignLock, LockError> {
        let path = lock_path(home, id);
        let io = |source| LockError::Io { id: id.to_owned(), path: path.clone(), source };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        // A reader checking for a live owner holds a shared lock for an
        // instant; a few retries tell that apart from a real owner.
        let mut attempts = 0;
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(TryLockError::WouldBlock) if attempts < 5 => {
                    attempts += 1;
                    std::thread::sleep(Duration::from_millis(40));
                }
                Err(TryLockError::WouldBlock) => {
                    let owner = std::fs::read_to_string(&path)
                        .ok()
                        .map(|text| text.trim().to_owned())
                        .filter(|text| !text.is_empty())
                        .map(|text| format!(" ({text})"))
                        .unwrap_or_default();
                    return Err(LockError::Held { id: id.to_owned(), owner });
                }
                Err(TryLockError::Error(source)) => return Err(io(source)),
            }
        }
        file.set_len(0).map_err(io)?;
        write!(file, "pid {} on {}", std::process::id(), host_name()).map_err(io)?;
        Ok(CampaignLock { _file: file })
    }
}

/// Whether some process holds the campaign's lock now.
pub fn is_held(home: &Path, id: &str) -> bool {
    let Ok(file) = File::open(lock_path(home, id)) else { return false };
    match file.try_lock_shared() {
        Ok(()) => false,
        Err(TryLockError::WouldBlock) => true,
        Err(TryLockError::Error(_)) => false,
    }
}

/// This machine's host name.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_and_the_lock_frees_on_drop() {
        let home = tempfile::tempdir().expect("temp dir");
        let first = CampaignLock::acquire(home.path(), "c-1").expect("first lock");
        assert!(is_held(home.path(), "c-1"));
        let second = CampaignLock::acquire(home.path(), "c-1").expect_err("second refused");
        let message = second.to_string();
        assert!(
            message.contains("c-1") && message.contains(&format!("pid {}", std::process::id())),
            "{message}"
        );
        drop(first);
        assert!(!is_held(home.path(), "c-1"));
        CampaignLock::acquire(home.path(), "c-1").expect("free again");
        assert!(!is_held(home.path(), "other"));
    }
}
