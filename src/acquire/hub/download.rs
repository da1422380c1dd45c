//! Downloading one listed file of a Hub repository into place.
//!
//! The body is streamed into a hidden temporary file beside the destination
//! (`.<name>.kitt-part-<pid>`; ones an interrupted download left are removed
//! first), hashed on the way, and renamed over the
//! destination only when its size is the one the listing gave and, for LFS
//! files, its SHA-256 is the listed `lfs.oid`; otherwise the temporary file is
//! removed and nothing changes. A file already in place with the listed size
//! (and SHA-256) is not fetched again. Non-LFS files are checked by size only:
//! the listing's `oid` for them is a git blob id, not a content hash kitt
//! computes. Redirects (LFS files are served from a CDN) are followed; reqwest
//! drops the `Authorization` header when a redirect leaves the Hub's host.

use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::{HubClient, HubError, HubFile, RepoKind};

/// What a download did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fetched {
    /// The file was fetched and verified.
    Downloaded,
    /// The file in place already had the listed size and hash; nothing was fetched.
    Present,
}

/// Why a file could not be downloaded.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    /// The Hub refused or could not be reached (offline, 401/403, 404, …).
    #[error(transparent)]
    Hub(#[from] HubError),
    /// The destination could not be written or read.
    #[error("cannot write {}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The connection broke before the whole body arrived.
    #[error("the download of `{file}` from `{repo}` was cut off: {reason}")]
    Cut {
        /// The repository, as messages name it.
        repo: String,
        /// The file's path in it.
        file: String,
        /// What happened.
        reason: String,
    },
    /// The body is not as long as the listing says.
    #[error(
        "`{file}` from `{repo}` arrived with {got} bytes, the Hub lists {expected}; it was not kept"
    )]
    Size {
        /// The repository.
        repo: String,
        /// The file.
        file: String,
        /// Listed size.
        expected: u64,
        /// Bytes received.
        got: u64,
    },
    /// The body's SHA-256 is not the listed one.
    #[error("`{file}` from `{repo}` has SHA-256 {got}, the Hub lists {expected}; it was not kept")]
    Checksum {
        /// The repository.
        repo: String,
        /// The file.
        file: String,
        /// Listed `lfs.oid`.
        expected: String,
        /// What arrived.
        got: String,
    },
}

impl HubClient {
    /// Downloads `file` of `repo` at `revision` to `dest`, unless a verified
    /// copy is already there.
    pub async fn download(
        &self,
        kind: RepoKind,
        repo: &str,
        revision: &str,
        file: &HubFile,
        dest: &Path,
    ) -> Result<Fetched, DownloadError> {
        if is_verified(dest, file).await? {
            return Ok(Fetched::Present);
        }
        let label = kind.label(repo);
        if self.offline {
            return Err(HubError::Offline { repo: label }.into());
        }
        let dir = dest.parent().unwrap_or(Path::new("."));
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| DownloadError::Io { path, source }
        };
        tokio::fs::create_dir_all(dir).await.map_err(io(dir))?;

        let url = self.resolve_url(kind, repo, revision, &file.path);
        let response = self.send(&label, || self.files.get(&url)).await?;
        let response = self.classify(&label, response)?;
        let name = dest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        remove_stale_parts(dir, &name);
        let part = dir.join(format!(".{name}.kitt-part-{}", std::process::id()));
        let written = receive(response, &part, &label, file).await;
        let placed = match written {
            Ok(()) => tokio::fs::rename(&part, dest).await.map_err(io(dest)),
            Err(error) => Err(error),
        };
        if placed.is_err() {
            let _ = tokio::fs::remove_file(&part).await;
        }
        placed.map(|()| Fetched::Downloaded)
    }
}

/// Removes temporary files an interrupted download of `name` left in `dir`.
fn remove_stale_parts(dir: &Path, name: &str) {
    let prefix = format!(".{name}.kitt-part-");
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Streams the body into `part`, then checks its size and hash.
async fn receive(
    mut response: reqwest::Response,
    part: &Path,
    repo: &str,
    file: &HubFile,
) -> Result<(), DownloadError> {
    let io = |source| DownloadError::Io { path: part.to_owned(), source };
    let mut out = tokio::fs::File::create(part).await.map_err(io)?;
    let mut hasher = Sha256::new();
    let mut got = 0u64;
    loop {
        let chunk = response.chunk().await.map_err(|error| DownloadError::Cut {
            repo: repo.to_owned(),
            file: file.path.clone(),
            reason: crate::error::with_causes(&error),
        })?;
        let Some(bytes) = chunk else { break };
        hasher.update(&bytes);
        got += bytes.len() as u64;
        // A server sending more than listed is not worth waiting out.
        if got > file.size {
            break;
        }
        out.write_all(&bytes).await.map_err(io)?;
    }
    out.flush().await.map_err(io)?;
    out.sync_all().await.map_err(io)?;

    let (repo, path) = (repo.to_owned(), file.path.clone());
    if got != file.size {
        return Err(DownloadError::Size { repo, file: path, expected: file.size, got });
    }
    let digest = hex(&hasher.finalize());
    match &file.sha256 {
        Some(expected) if !expected.eq_ignore_ascii_case(&digest) => Err(DownloadError::Checksum {
            repo,
            file: path,
            expected: expected.clone(),
            got: digest,
        }),
        _ => Ok(()),
    }
}

/// Whether `dest` already holds the listed file (size, and SHA-256 when listed).
async fn is_verified(dest: &Path, file: &HubFile) -> Result<bool, DownloadError> {
    let Ok(meta) = tokio::fs::metadata(dest).await else { return Ok(false) };
    if !meta.is_file() || meta.len() != file.size {
        return Ok(false);
    }
    let Some(expected) = file.sha256.clone() else { return Ok(true) };
    let path = dest.to_owned();
    let digest = tokio::task::spawn_blocking(move || sha256_of(&path))
        .await
        .map_err(|error| DownloadError::Io { path: dest.to_owned(), source: error.into() })?
        .map_err(|source| DownloadError::Io { path: dest.to_owned(), source })?;
    if !digest.eq_ignore_ascii_case(&expected) {
        tracing::info!(file = %dest.display(), "the local copy differs from the Hub's; refetching");
    }
    Ok(digest.eq_ignore_ascii_case(&expected))
}

fn sha256_of(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 16];
    loop {
        let read = file.read(&mut buffer)?;
        if read == 0 {
            return Ok(hex(&hasher.finalize()));
        }
        hasher.update(&buffer[..read]);
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}
