//! Downloading one listed file of a Hub repository into place, through the
//! shared resumable [`Downloader`]: the file is written beside its
//! destination as a `.kitt-part`, resumed after an interruption, and renamed
//! into place only when its size is the one the listing gave and, for LFS
//! files, its SHA-256 is the listed `lfs.oid`. A file already in place with
//! the listed size (and SHA-256) is not fetched again. Non-LFS files are
//! checked by size only: the listing's `oid` for them is a git blob id, not a
//! content hash kitt computes.

use std::path::Path;

use super::{HubClient, HubError, HubFile, RepoKind};
use crate::acquire::download::{self, FileSpec};

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
    /// The Hub could not be asked (offline, no client).
    #[error(transparent)]
    Hub(#[from] HubError),
    /// The file itself could not be fetched or verified.
    #[error(transparent)]
    File(#[from] download::DownloadError),
    /// The destination could not be read.
    #[error("cannot read {}", path.display())]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
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
        // A copy that fails verification is replaced, never resumed from.
        if dest.exists() {
            tokio::fs::remove_file(dest)
                .await
                .map_err(|source| DownloadError::Io { path: dest.to_owned(), source })?;
        }
        let spec = FileSpec {
            url: self.resolve_url(kind, repo, revision, &file.path),
            dest: dest.to_owned(),
            size: Some(file.size),
            sha256: file.sha256.clone(),
            label: format!("{label}/{}", file.path),
        };
        self.downloader()?.fetch(&spec, &|_| {}).await?;
        Ok(Fetched::Downloaded)
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
    let digest = tokio::task::spawn_blocking(move || crate::acquire::digest::sha256_file(&path))
        .await
        .map_err(|error| DownloadError::Io { path: dest.to_owned(), source: error.into() })?
        .map_err(|source| DownloadError::Io { path: dest.to_owned(), source })?;
    if !digest.eq_ignore_ascii_case(&expected) {
        tracing::info!(file = %dest.display(), "the local copy differs from the Hub's; refetching");
    }
    Ok(digest.eq_ignore_ascii_case(&expected))
}
