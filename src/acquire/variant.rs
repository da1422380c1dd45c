//! Downloading one variant of a Hub repository: every file an engine needs
//! (all shards) into the storage root's layout,
//! `<root>/huggingface/<org>/<name>/<path>`, which is where
//! [`LocalIndex`](super::local::LocalIndex) finds them afterwards.
//!
//! [`Variant::from_listing`] pairs the files a run needs (for a safetensors
//! checkpoint also [`checkpoint_support`]) with the Hub's
//! listing (sizes and LFS SHA-256) and their final paths; [`download`] fetches
//! the missing ones one after another and reports through a channel, so it can
//! run as a task beside other work (a benchmark in progress) while its owner
//! shows and records progress. What to record, when to clean up and how to
//! show progress are the caller's business, not this module's.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::mpsc::UnboundedSender;

use super::download::{self, DownloadError, Downloader, Event, Fetched, FileSpec};
use super::hub::{HubClient, HubRepo};

/// One file of a variant.
#[derive(Debug, Clone)]
pub struct VariantFile {
    /// Its path in the repository.
    pub path: String,
    /// Where it comes from and goes, with the size and hash to verify.
    pub spec: FileSpec,
}

/// The files of one variant, resolved against the Hub's listing.
#[derive(Debug, Clone)]
pub struct Variant {
    /// `org/name`.
    pub repo: String,
    /// `<root>/huggingface/<org>/<name>`.
    pub dir: PathBuf,
    /// Every file, the one an engine loads first.
    pub files: Vec<VariantFile>,
}

impl Variant {
    /// The files `paths` of `listing`, to be downloaded under `root`; an error
    /// names a file the listing does not have.
    pub fn from_listing(
        hub: &HubClient,
        listing: &HubRepo,
        paths: &[String],
        root: &Path,
    ) -> Result<Variant, String> {
        let dir = root.join("huggingface").join(&listing.repo);
        let mut files = Vec::with_capacity(paths.len());
        for path in paths {
            let Some(listed) = listing.files.iter().find(|file| &file.path == path) else {
                return Err(format!(
                    "`{}` no longer lists `{path}`; plan the campaign again",
                    listing.repo
                ));
            };
            let spec = FileSpec {
                url: hub.file_url(listing, path),
                dest: dir.join(path),
                size: Some(listed.size),
                sha256: listed.sha256.clone(),
                label: format!("{}/{path}", listing.repo),
            };
            files.push(VariantFile { path: path.clone(), spec });
        }
        Ok(Variant { repo: listing.repo.clone(), dir, files })
    }

    /// Files not yet complete under their final name.
    pub fn missing(&self) -> Vec<&VariantFile> {
        self.files
            .iter()
            .filter(|file| !download::is_complete(&file.spec.dest, file.spec.size))
            .collect()
    }

    /// Bytes still to fetch: the missing files less what their partial files hold.
    pub fn missing_bytes(&self) -> u64 {
        self.missing()
            .iter()
            .map(|file| {
                let size = file.spec.size.unwrap_or(0);
                size.saturating_sub(download::resumable_bytes(&file.spec))
            })
            .fold(0u64, u64::saturating_add)
    }
}

/// The files a safetensors checkpoint needs beside its weights: the
/// configuration, tokenizer and chat template files at the repository's root
/// (not already in `weights`).
pub fn checkpoint_support(listing: &HubRepo, weights: &[String]) -> Vec<String> {
    const SUPPORT: [&str; 5] = [".json", ".model", ".txt", ".jinja", ".tiktoken"];
    listing
        .files
        .iter()
        .map(|file| &file.path)
        .filter(|path| !path.contains('/') && !weights.contains(path))
        .filter(|path| SUPPORT.iter().any(|ext| path.to_ascii_lowercase().ends_with(ext)))
        .cloned()
        .collect()
}

/// What a variant's download reports.
#[derive(Debug, Clone, PartialEq)]
pub enum VariantEvent {
    /// A file starts (or resumes from `resumed` bytes).
    FileStarted {
        /// Position among the files to download, from 0.
        index: usize,
        /// Files to download.
        count: usize,
        /// Path in the repository.
        path: String,
        /// Its size.
        size: u64,
        /// Bytes a partial file already holds.
        resumed: u64,
    },
    /// Bytes on disk for the current file.
    Progress {
        /// Path in the repository.
        path: String,
        /// Bytes on disk.
        done: u64,
    },
    /// An attempt failed; the next follows after `wait`.
    Retrying {
        /// Path in the repository.
        path: String,
        /// What went wrong.
        why: String,
        /// The pause.
        wait: Duration,
    },
    /// A file is complete and verified under its final name.
    FileDone {
        /// Path in the repository.
        path: String,
        /// How it went.
        fetched: Fetched,
    },
}

/// A file of the variant could not be downloaded.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct VariantError {
    /// Path in the repository.
    pub path: String,
    /// Why.
    #[source]
    pub error: DownloadError,
}

/// Downloads `files` in order, reporting through `events` (a closed channel
/// does not stop the download). Stops at the first file that fails.
pub async fn download(
    downloader: Downloader,
    files: Vec<VariantFile>,
    events: UnboundedSender<VariantEvent>,
) -> Result<(), VariantError> {
    let count = files.len();
    for (index, file) in files.into_iter().enumerate() {
        let path = file.path.clone();
        let _ = events.send(VariantEvent::FileStarted {
            index,
            count,
            path: path.clone(),
            size: file.spec.size.unwrap_or(0),
            resumed: download::resumable_bytes(&file.spec),
        });
        let report = |event: Event| {
            let event = match event {
                Event::Progress { done, .. } => VariantEvent::Progress { path: path.clone(), done },
                Event::Retrying { why, wait, .. } => {
                    VariantEvent::Retrying { path: path.clone(), why, wait }
                }
            };
            let _ = events.send(event);
        };
        let fetched = downloader
            .fetch(&file.spec, &report)
            .await
            .map_err(|error| VariantError { path: path.clone(), error })?;
        let _ = events.send(VariantEvent::FileDone { path, fetched });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acquire::hub::{Gate, HubFile};

    fn listing(paths: &[(&str, u64)]) -> HubRepo {
        let files = paths
            .iter()
            .map(|(path, size)| HubFile { path: (*path).into(), size: *size, sha256: None })
            .collect();
        HubRepo { repo: "org/Model".into(), revision: Some("abc".into()), files, gate: Gate::Open }
    }

    #[test]
    fn a_checkpoint_brings_its_configuration_and_tokenizer() {
        let listing = listing(&[
            ("config.json", 1),
            ("model-00001-of-00002.safetensors", 9),
            ("model.safetensors.index.json", 1),
            ("original/params.json", 1),
            ("README.md", 1),
            ("tokenizer.model", 1),
            ("chat_template.jinja", 1),
        ]);
        let weights = vec!["model-00001-of-00002.safetensors".to_owned()];
        assert_eq!(
            checkpoint_support(&listing, &weights),
            [
                "config.json",
                "model.safetensors.index.json",
                "tokenizer.model",
                "chat_template.jinja"
            ]
        );
    }

    #[test]
    fn variant_files_go_under_the_storage_root_layout() {
        let hub = HubClient::with_endpoint("http://127.0.0.1:9", None).unwrap();
        let listing = listing(&[("Q8_0/m-Q8_0-00001-of-00002.gguf", 5)]);
        let root = Path::new("/models");
        let paths = vec!["Q8_0/m-Q8_0-00001-of-00002.gguf".to_owned()];
        let variant = Variant::from_listing(&hub, &listing, &paths, root).unwrap();
        let spec = &variant.files[0].spec;
        assert_eq!(
            spec.dest,
            Path::new("/models/huggingface/org/Model/Q8_0/m-Q8_0-00001-of-00002.gguf")
        );
        assert_eq!(
            spec.url,
            "http://127.0.0.1:9/org/Model/resolve/abc/Q8_0/m-Q8_0-00001-of-00002.gguf"
        );
        assert_eq!(spec.size, Some(5));
        let error = Variant::from_listing(&hub, &listing, &["gone.gguf".into()], root).unwrap_err();
        assert!(error.contains("no longer lists `gone.gguf`"), "{error}");
    }
}
