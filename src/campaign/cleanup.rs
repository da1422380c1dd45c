//! Cleanup after a campaign run (`disk.cleanup_after_run: true`): deletes
//! only the files the store says this campaign downloaded, and only once no
//! later run of the session loads them (the same GGUF benchmarked by another
//! engine, a checkpoint's directory), then prunes the empty directories
//! those downloads created, never the storage root. A model that was already
//! on the machine has no download row, so it is never touched.

use std::path::{Path, PathBuf};

use super::coordinator::RunContext;
use super::progress::Progress;
use crate::error::with_causes;
use crate::plan::PlannedRun;
use crate::plan::matrix::human_bytes;
use crate::store::{DownloadRow, Store};

/// With `disk.cleanup_after_run`, deletes the files of `planned` that
/// this campaign downloaded and no run of `later` loads, then prunes the
/// empty directories their downloads created.
pub(super) fn after_run(
    context: &RunContext<'_>,
    store: &Store,
    run_id: i64,
    planned: &PlannedRun,
    later: &[&PlannedRun],
    progress: &mut Progress,
) {
    if !context.campaign.disk.cleanup_after_run {
        return;
    }
    let root = context.storage_root;
    // The run's files, and what its own downloads added (a checkpoint's
    // configuration and tokenizer files).
    let mut candidates: Vec<PathBuf> = storage_paths(root, planned);
    let own = campaign_downloads(store, context.campaign_id);
    for row in own.iter().filter(|row| row.run_id == run_id && row.status == "present") {
        let path = PathBuf::from(&row.path);
        if !candidates.contains(&path) {
            candidates.push(path);
        }
    }
    let mut removed = Vec::new();
    for path in candidates {
        if later.iter().any(|run| loads(root, run, &path)) {
            tracing::debug!(path = %path.display(), "kept: a later run loads it");
            continue;
        }
        match remove_own(store, context.campaign_id, &path) {
            Ok(Some(bytes)) => removed.push((path, bytes)),
            Ok(None) => {}
            Err(error) => tracing::warn!("cannot clean up {}: {error}", path.display()),
        }
    }
    if removed.is_empty() {
        return;
    }
    let bytes: u64 = removed.iter().map(|(_, bytes)| bytes).sum();
    let files: Vec<PathBuf> = removed.iter().map(|(path, _)| path.clone()).collect();
    // A later run's directory stays: its download may be running beside
    // this run (a prefetch) and is about to put files there.
    let needed: Vec<PathBuf> = later.iter().flat_map(|run| storage_paths(root, run)).collect();
    prune(root, &files, &created_dirs(&own), &needed);
    progress.note(&format!(
        "{}: removed {} downloaded file(s), {}",
        planned.key,
        removed.len(),
        human_bytes(bytes)
    ));
}

/// The directory of a run's repository under the storage root (its own
/// downloads or a local copy there); none for other sources.
fn repo_dir(root: &Path, run: &PlannedRun) -> Option<PathBuf> {
    let repo = run.source.strip_prefix("hf:").or_else(|| run.source.strip_prefix("local:"))?;
    Some(root.join("huggingface").join(repo))
}

/// Where a run's files live under the storage root; nothing for other sources.
fn storage_paths(root: &Path, run: &PlannedRun) -> Vec<PathBuf> {
    let Some(dir) = repo_dir(root, run) else { return Vec::new() };
    run.files.iter().map(|file| dir.join(file)).collect()
}

/// Whether `run` loads `path`: one of its files, or for a checkpoint any
/// file of its repository's directory (configuration and tokenizer included).
fn loads(root: &Path, run: &PlannedRun, path: &Path) -> bool {
    let Some(dir) = repo_dir(root, run) else { return false };
    if is_checkpoint(run) {
        path.starts_with(&dir)
    } else {
        run.files.iter().any(|file| dir.join(file) == path)
    }
}

/// Whether a run loads a checkpoint (a directory of safetensors) rather than a GGUF file.
pub(super) fn is_checkpoint(run: &PlannedRun) -> bool {
    run.files.first().is_some_and(|first| !first.to_ascii_lowercase().ends_with(".gguf"))
}

/// Deletes `path` when this campaign downloaded it: its size, or `None`
/// when it is not ours.
fn remove_own(store: &Store, campaign_id: &str, path: &Path) -> Result<Option<u64>, String> {
    let text = path.display().to_string();
    let rows = store.downloads_present(campaign_id, &text).map_err(|e| with_causes(&e))?;
    let Some(first) = rows.first() else { return Ok(None) };
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(error.to_string()),
    }
    store.download_removed(campaign_id, &text).map_err(|e| with_causes(&e))?;
    tracing::info!(path = %path.display(), "removed a downloaded file");
    Ok(Some(first.bytes))
}

/// Every download of the campaign (none, with a warning, when the store cannot be read).
pub(super) fn campaign_downloads(store: &Store, campaign_id: &str) -> Vec<DownloadRow> {
    store.campaign_downloads(campaign_id).unwrap_or_else(|error| {
        tracing::warn!("cannot read the campaign's downloads: {}", with_causes(&error));
        Vec::new()
    })
}

/// The directories the downloads `rows` created.
pub(super) fn created_dirs(rows: &[DownloadRow]) -> Vec<PathBuf> {
    rows.iter().filter_map(|row| row.created_dir.as_deref().map(PathBuf::from)).collect()
}

/// Removes the empty directories above each of `files` that lie within a
/// directory the campaign's downloads created (`created`), deepest first;
/// never the storage root, never a directory that holds anything, never
/// one that holds (or will hold) a path of `needed`.
pub(super) fn prune(root: &Path, files: &[PathBuf], created: &[PathBuf], needed: &[PathBuf]) {
    let mut files = files.to_vec();
    files.sort_by_key(|file| std::cmp::Reverse(file.components().count()));
    let ours = |dir: &Path| {
        dir != root
            && dir.starts_with(root)
            && created.iter().any(|top| top.starts_with(root) && dir.starts_with(top))
            && !needed.iter().any(|path| path.starts_with(dir))
    };
    for file in &files {
        for dir in file.ancestors().skip(1) {
            if !ours(dir) || std::fs::remove_dir(dir).is_err() {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(source: &str, files: &[&str]) -> PlannedRun {
        PlannedRun {
            key: "m|llama_cpp|Q8_0".into(),
            model: "m".into(),
            engine: crate::engine::EngineKind::LlamaCpp,
            engine_index: 0,
            suite: "quick".into(),
            quant: "Q8_0".into(),
            source: source.into(),
            files: files.iter().map(|file| (*file).to_owned()).collect(),
            size_bytes: None,
            size_source: None,
            download_bytes: 0,
            status: crate::plan::RunPlan::Planned,
            reason: None,
        }
    }

    #[test]
    fn a_later_run_loads_its_own_files_or_its_whole_checkpoint() {
        let root = Path::new("/models");
        let repo = root.join("huggingface/org/Model-GGUF");
        let gguf = run("hf:org/Model-GGUF", &["m-Q8_0.gguf"]);
        assert!(loads(root, &gguf, &repo.join("m-Q8_0.gguf")));
        assert!(!loads(root, &gguf, &repo.join("m-Q4_0.gguf")));
        let local = run("local:org/Model-GGUF", &["m-Q8_0.gguf"]);
        assert!(loads(root, &local, &repo.join("m-Q8_0.gguf")));
        let ollama = run("ollama:m:8b", &["m:8b"]);
        assert!(!loads(root, &ollama, &repo.join("m-Q8_0.gguf")));

        let checkpoint = run("hf:org/Model", &["model.safetensors"]);
        assert!(loads(root, &checkpoint, &root.join("huggingface/org/Model/tokenizer.json")));
        assert!(!loads(root, &checkpoint, &repo.join("m-Q8_0.gguf")));
    }

    #[test]
    fn pruning_removes_only_empty_directories_a_download_created() {
        let root = tempfile::tempdir().unwrap();
        let root = root.path();
        let repo = root.join("huggingface/org/repo");
        std::fs::create_dir_all(repo.join("Q8_0")).unwrap();
        std::fs::create_dir_all(root.join("huggingface/org/other")).unwrap();
        // The repository's directory came with the first file, `Q8_0` with the second.
        let created = [repo.clone(), repo.join("Q8_0")];
        prune(root, &[repo.join("a.gguf"), repo.join("Q8_0/b.gguf")], &created, &[]);
        assert!(!repo.exists());
        assert!(root.join("huggingface/org/other").is_dir());

        // A directory that holds something else stays, and so does one kitt did not create.
        std::fs::create_dir_all(&repo).unwrap();
        std::fs::write(repo.join("user.txt"), b"mine").unwrap();
        prune(root, &[repo.join("a.gguf")], &created, &[]);
        assert!(repo.join("user.txt").is_file());
        let theirs = root.join("huggingface/org/other");
        prune(root, &[theirs.join("c.gguf")], &created, &[]);
        assert!(theirs.is_dir());

        // An empty directory a later run's file goes into stays, and its parents.
        std::fs::remove_file(repo.join("user.txt")).unwrap();
        std::fs::create_dir_all(repo.join("Q8_0")).unwrap();
        let later = [repo.join("b.gguf")];
        prune(root, &[repo.join("Q8_0/a.gguf")], &created, &later);
        assert!(!repo.join("Q8_0").exists());
        assert!(repo.is_dir());
    }
}
