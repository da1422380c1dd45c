//! Downloading the quality benchmarks' datasets from the Hugging Face Hub into
//! the layout the dataset reader expects.
//!
//! For each benchmark the dataset repository is listed (`/api/datasets/…`),
//! the Parquet files of its config and split are picked (`all/test-*.parquet`
//! for MMLU, `main/test-*` for GSM8K, `multiple_choice/validation-*` for
//! TruthfulQA, `data/validation-*` for HellaSwag; a split may also be a
//! folder of shards), and each is downloaded to `<root>/<name>/<path in the
//! repository>`, verified by size and LFS SHA-256 (see [`HubClient::download`]).
//! Files already there and verified are not fetched again. Offline, a dataset
//! already on disk is reported present without being checked; one that is
//! not is an error.

use std::path::{Path, PathBuf};

use crate::acquire::hub::{DownloadError, Fetched, Gate, HubClient, HubError, HubFile, RepoKind};
use crate::quality::{Dataset, HubSource, present};

/// One dataset made local.
#[derive(Debug, Clone)]
pub struct Downloaded {
    /// Which.
    pub dataset: Dataset,
    /// Its folder, `<root>/<name>`.
    pub location: PathBuf,
    /// The commit the files come from (`None` offline).
    pub revision: Option<String>,
    /// Each file, in repository order.
    pub files: Vec<LocalFile>,
    /// Whether the files were checked against the Hub's listing (not offline).
    pub checked: bool,
}

/// One file of a downloaded dataset.
#[derive(Debug, Clone)]
pub struct LocalFile {
    /// Where it is.
    pub path: PathBuf,
    /// Its size in bytes.
    pub size: u64,
    /// Its SHA-256, when the Hub lists one.
    pub sha256: Option<String>,
    /// Fetched now, or already in place.
    pub fetched: Fetched,
}

/// Why a dataset could not be made local.
#[derive(Debug, thiserror::Error)]
pub enum DatasetDownloadError {
    /// The repository could not be listed.
    #[error(transparent)]
    Hub(#[from] HubError),
    /// The repository is gated and our token has no access.
    #[error("{0}")]
    Gated(String),
    /// The listing has no file of the config and split read.
    #[error(
        "`datasets/{repo}` lists no Parquet file of config `{config}`, split `{split}` \
         (looked for `{folder}/{split}-*.parquet`)"
    )]
    NoFiles {
        /// The repository.
        repo: &'static str,
        /// The config.
        config: &'static str,
        /// Its folder.
        folder: &'static str,
        /// The split.
        split: &'static str,
    },
    /// A file could not be downloaded.
    #[error(transparent)]
    Download(#[from] DownloadError),
}

/// The files of `source`'s config and split in a listing: Parquet files in
/// its folder named `<split>-…` or `<split>.parquet`, or inside a `<split>/`
/// folder there.
pub fn select<'a>(files: &'a [HubFile], source: &HubSource) -> Vec<&'a HubFile> {
    let prefix = format!("{}/", source.folder);
    files
        .iter()
        .filter(|file| file.path.to_ascii_lowercase().ends_with(".parquet"))
        .filter(|file| {
            let Some(rest) = file.path.strip_prefix(&prefix) else { return false };
            let first = rest.split('/').next().unwrap_or_default();
            let stem = first.strip_suffix(".parquet").unwrap_or(first);
            stem == source.split || stem.starts_with(&format!("{}-", source.split))
        })
        .collect()
}

/// Makes `dataset` local under `root` (normally `<kitt home>/datasets`).
pub async fn download(
    hub: &HubClient,
    dataset: Dataset,
    root: &Path,
) -> Result<Downloaded, DatasetDownloadError> {
    let source = dataset.hub_source();
    let location = root.join(dataset.name());
    if hub.is_offline() {
        return offline(dataset, location, source);
    }
    let listing = hub.dataset(source.repo).await?;
    if let Gate::Denied { reason } = &listing.gate {
        return Err(DatasetDownloadError::Gated(reason.clone()));
    }
    let chosen = select(&listing.files, &source);
    if chosen.is_empty() {
        let HubSource { repo, config, folder, split } = source;
        return Err(DatasetDownloadError::NoFiles { repo, config, folder, split });
    }

    let revision = listing.revision.clone().unwrap_or_else(|| "main".to_owned());
    let mut files = Vec::new();
    for file in chosen {
        let path = location.join(&file.path);
        let fetched = hub.download(RepoKind::Dataset, source.repo, &revision, file, &path).await?;
        tracing::info!(file = %path.display(), ?fetched, "dataset file in place");
        files.push(LocalFile { path, size: file.size, sha256: file.sha256.clone(), fetched });
    }
    Ok(Downloaded { dataset, location, revision: Some(revision), files, checked: true })
}

/// Offline: what is on disk counts, unchecked; nothing on disk is an error.
fn offline(
    dataset: Dataset,
    location: PathBuf,
    source: HubSource,
) -> Result<Downloaded, DatasetDownloadError> {
    let found = present(dataset, &location);
    if found.is_empty() {
        return Err(HubError::Offline { repo: RepoKind::Dataset.label(source.repo) }.into());
    }
    let files = found
        .into_iter()
        .map(|path| {
            let size = std::fs::metadata(&path).map_or(0, |meta| meta.len());
            LocalFile { path, size, sha256: None, fetched: Fetched::Present }
        })
        .collect();
    Ok(Downloaded { dataset, location, revision: None, files, checked: false })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str) -> HubFile {
        HubFile { path: path.into(), size: 1, sha256: None }
    }

    #[test]
    fn the_config_and_split_files_are_selected() {
        let listing = [
            file("README.md"),
            file("all/auxiliary_train-00000-of-00001.parquet"),
            file("all/dev-00000-of-00001.parquet"),
            file("all/test-00000-of-00001.parquet"),
            file("all/validation-00000-of-00001.parquet"),
            file("anatomy/test-00000-of-00001.parquet"),
            file("all/testing-notes.parquet"),
        ];
        let paths = |dataset: Dataset| -> Vec<String> {
            select(&listing, &dataset.hub_source()).iter().map(|f| f.path.clone()).collect()
        };
        assert_eq!(paths(Dataset::Mmlu), ["all/test-00000-of-00001.parquet"]);

        let converted = [
            file("data/validation/0000.parquet"),
            file("data/validation/0001.parquet"),
            file("data/train/0000.parquet"),
            file("data/validation.parquet"),
        ];
        let chosen = select(&converted, &Dataset::HellaSwag.hub_source());
        assert_eq!(chosen.len(), 3);
        assert!(select(&converted, &Dataset::Gsm8k.hub_source()).is_empty());
    }
}
