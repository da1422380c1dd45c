//! Models already on this machine: the local storage root and the Hugging Face cache.
//!
//! The storage root is `disk.storage_path`, else `KITT_MODELS_DIR`, else
//! `~/models`; repositories live under `<root>/huggingface/<org>/<repo>/`. The
//! Hugging Face cache is `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else
//! `~/.cache/huggingface/hub`, with repositories as
//! `models--<org>--<repo>/snapshots/<revision>/`. Partial downloads (`*.part`,
//! kitt's `*.kitt-part`, `*.incomplete`) and dangling cache links are not
//! files of the repository.

use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Where the storage root came from, for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootSource {
    /// `disk.storage_path` in the campaign.
    Config,
    /// The `KITT_MODELS_DIR` environment variable.
    Env,
    /// The default, `~/models`.
    Default,
}

/// Resolves the local storage root.
pub fn storage_root(configured: Option<&Path>) -> (PathBuf, RootSource) {
    let absolute = |path: &Path| std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
    if let Some(path) = configured {
        return (absolute(path), RootSource::Config);
    }
    if let Some(dir) = std::env::var_os("KITT_MODELS_DIR").filter(|dir| !dir.is_empty()) {
        return (absolute(Path::new(&dir)), RootSource::Env);
    }
    let home = std::env::home_dir().unwrap_or_else(|| PathBuf::from("."));
    (home.join("models"), RootSource::Default)
}

/// Resolves the Hugging Face hub cache directory.
pub fn hf_cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("HF_HUB_CACHE").filter(|dir| !dir.is_empty()) {
        return PathBuf::from(dir);
    }
    if let Some(home) = std::env::var_os("HF_HOME").filter(|dir| !dir.is_empty()) {
        return PathBuf::from(home).join("hub");
    }
    let home = std::env::home_dir().unwrap_or_else(|| PathBuf::from("."));
    home.join(".cache").join("huggingface").join("hub")
}

/// Ollama's model store: `OLLAMA_MODELS`, else `~/.ollama/models`.
pub fn ollama_models_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("OLLAMA_MODELS").filter(|dir| !dir.is_empty()) {
        return PathBuf::from(dir);
    }
    let home = std::env::home_dir().unwrap_or_else(|| PathBuf::from("."));
    home.join(".ollama").join("models")
}

/// Free bytes on the file system that holds `path`, measured at its nearest
/// existing ancestor (the directory may not exist before the first download).
pub fn free_space(path: &Path) -> Option<u64> {
    let path = std::path::absolute(path).ok()?;
    let existing = path.ancestors().find(|ancestor| ancestor.exists())?;
    fs4::available_space(existing).ok()
}

/// Where a local copy of a repository lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalOrigin {
    /// Under the storage root.
    StorageRoot,
    /// In the Hugging Face cache, at this snapshot revision.
    HfCache {
        /// The snapshot's commit.
        revision: String,
    },
}

/// One file of a local repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalFile {
    /// Path relative to the repository root, with `/` separators.
    pub path: String,
    /// Size in bytes (logical size: sparse files count in full).
    pub size: u64,
}

/// A repository found on this machine.
#[derive(Debug, Clone)]
pub struct LocalRepo {
    /// `org/name`.
    pub repo: String,
    /// The directory holding the repository's files.
    pub dir: PathBuf,
    /// Storage root or cache.
    pub origin: LocalOrigin,
    /// Every complete file, sorted by path.
    pub files: Vec<LocalFile>,
}

/// Looks up repositories in the storage root, then in the Hugging Face cache.
#[derive(Debug, Clone)]
pub struct LocalIndex {
    root: PathBuf,
    hf_cache: PathBuf,
}

impl LocalIndex {
    /// An index over a storage root and a Hugging Face cache directory.
    pub fn new(root: PathBuf, hf_cache: PathBuf) -> Self {
        LocalIndex { root, hf_cache }
    }

    /// The storage root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where a repository would live under the storage root.
    pub fn repo_dir(&self, repo: &str) -> PathBuf {
        self.root.join("huggingface").join(repo)
    }

    /// The local copy of `repo` with the most files, storage root first.
    pub fn find(&self, repo: &str) -> Option<LocalRepo> {
        let in_root = self.in_storage_root(repo);
        let in_cache = self.in_hf_cache(repo);
        match (in_root, in_cache) {
            (Some(root), Some(cache)) if cache.files.len() > root.files.len() => Some(cache),
            (Some(root), _) => Some(root),
            (None, cache) => cache,
        }
    }

    /// Every repository under the storage root (`huggingface/<org>/<repo>/`
    /// holding at least one complete file), sorted by id.
    pub fn stored_repos(&self) -> Vec<LocalRepo> {
        let base = self.root.join("huggingface");
        let mut repos = Vec::new();
        for org in visible_dirs(&base) {
            for name in visible_dirs(&base.join(&org)) {
                repos.extend(self.in_storage_root(&format!("{org}/{name}")));
            }
        }
        repos.sort_by(|a, b| a.repo.cmp(&b.repo));
        repos
    }

    fn in_storage_root(&self, repo: &str) -> Option<LocalRepo> {
        let dir = self.repo_dir(repo);
        let files = list_files(&dir);
        if files.is_empty() {
            return None;
        }
        Some(LocalRepo { repo: repo.to_owned(), dir, origin: LocalOrigin::StorageRoot, files })
    }

    fn in_hf_cache(&self, repo: &str) -> Option<LocalRepo> {
        let cache_repo = self.hf_cache.join(format!("models--{}", repo.replace('/', "--")));
        let revision = main_revision(&cache_repo).or_else(|| newest_snapshot(&cache_repo))?;
        let dir = cache_repo.join("snapshots").join(&revision);
        let files = list_files(&dir);
        if files.is_empty() {
            return None;
        }
        let origin = LocalOrigin::HfCache { revision };
        Some(LocalRepo { repo: repo.to_owned(), dir, origin, files })
    }
}

fn main_revision(cache_repo: &Path) -> Option<String> {
    let revision = fs::read_to_string(cache_repo.join("refs").join("main")).ok()?;
    let revision = revision.trim().to_owned();
    cache_repo.join("snapshots").join(&revision).is_dir().then_some(revision)
}

fn newest_snapshot(cache_repo: &Path) -> Option<String> {
    let entries = fs::read_dir(cache_repo.join("snapshots")).ok()?;
    let mut snapshots: Vec<(std::time::SystemTime, String)> = entries
        .flatten()
        .filter_map(|entry| {
            let modified = entry.metadata().ok()?.modified().ok()?;
            Some((modified, entry.file_name().to_string_lossy().into_owned()))
        })
        .collect();
    snapshots.sort();
    snapshots.pop().map(|(_, name)| name)
}

/// Every complete file below `dir`, relative paths sorted. Hidden entries
/// (`.git`, `.cache`) and partial downloads are left out; links to files are
/// followed (a dangling one, a cache blob still downloading, is not a file),
/// links to directories are not.
pub fn list_files(dir: &Path) -> Vec<LocalFile> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_owned()];
    // Directories already walked, by device and inode: links may form loops.
    let mut seen = HashSet::new();
    while let Some(current) = pending.pop() {
        let Ok(meta) = fs::metadata(&current) else { continue };
        if !seen.insert((meta.dev(), meta.ino())) {
            continue;
        }
        let Ok(entries) = fs::read_dir(&current) else { continue };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || is_partial(&name) {
                continue;
            }
            let path = entry.path();
            let Ok(metadata) = fs::metadata(&path) else { continue };
            let is_link = entry.file_type().is_ok_and(|kind| kind.is_symlink());
            if metadata.is_dir() {
                // Linked directories inside a repository are not its own files
                // (and may loop); linked files are, as in the Hugging Face cache.
                if !is_link {
                    pending.push(path);
                }
            } else if metadata.is_file() {
                let relative = path.strip_prefix(dir).unwrap_or(&path);
                let relative = relative.to_string_lossy().replace('\\', "/");
                files.push(LocalFile { path: relative, size: metadata.len() });
            }
        }
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    files
}

/// Names of the non-hidden directories directly inside `dir`, sorted.
fn visible_dirs(dir: &Path) -> Vec<String> {
    let Ok(entries) = fs::read_dir(dir) else { return Vec::new() };
    let mut names: Vec<String> = entries
        .flatten()
        .filter(|entry| fs::metadata(entry.path()).is_ok_and(|meta| meta.is_dir()))
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| !name.starts_with('.'))
        .collect();
    names.sort();
    names
}

fn is_partial(name: &str) -> bool {
    let suffixes = [".part", ".incomplete", ".partial", ".tmp", ".kitt-part", ".kitt-part.json"];
    suffixes.iter().any(|suffix| name.ends_with(suffix))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sparse(path: &Path, size: u64) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::File::create(path).unwrap().set_len(size).unwrap();
    }

    #[test]
    fn stored_repos_lists_every_repository_with_files() {
        let root = tempfile::tempdir().unwrap();
        sparse(&root.path().join("huggingface/org/B-GGUF/b-Q4_0.gguf"), 10);
        sparse(&root.path().join("huggingface/org/A/model.safetensors"), 10);
        sparse(&root.path().join("huggingface/other/Partial/x.gguf.part"), 10);
        fs::create_dir_all(root.path().join("huggingface/.locks/org")).unwrap();

        let index = LocalIndex::new(root.path().to_owned(), root.path().join("nocache"));
        let repos: Vec<String> = index.stored_repos().into_iter().map(|r| r.repo).collect();

        assert_eq!(repos, ["org/A", "org/B-GGUF"]);
    }

    #[test]
    fn finds_repo_under_storage_root_with_sizes() {
        let root = tempfile::tempdir().unwrap();
        let repo = root.path().join("huggingface/org/Model-GGUF");
        sparse(&repo.join("Model-Q4_K_M.gguf"), 5_000_000_000);
        sparse(&repo.join("Q8_0/Model-Q8_0-00001-of-00002.gguf"), 4_000_000_000);
        sparse(&repo.join("Model-Q8_0.gguf.part"), 10);
        sparse(&repo.join("Model-Q6_K.gguf.kitt-part"), 10);
        sparse(&repo.join("Model-Q6_K.gguf.kitt-part.json"), 10);
        sparse(&repo.join(".cache/huggingface/x.lock"), 0);

        let index = LocalIndex::new(root.path().to_owned(), root.path().join("nocache"));
        let found = index.find("org/Model-GGUF").unwrap();

        assert_eq!(found.origin, LocalOrigin::StorageRoot);
        let paths: Vec<_> = found.files.iter().map(|f| (f.path.as_str(), f.size)).collect();
        assert_eq!(
            paths,
            [
                ("Model-Q4_K_M.gguf", 5_000_000_000),
                ("Q8_0/Model-Q8_0-00001-of-00002.gguf", 4_000_000_000)
            ]
        );
    }

    #[test]
    fn finds_repo_in_hf_cache_at_main_revision_and_skips_dangling_links() {
        let cache = tempfile::tempdir().unwrap();
        let repo = cache.path().join("models--org--Model-GGUF");
        sparse(&repo.join("blobs/abc"), 1234);
        let snapshot = repo.join("snapshots/rev1");
        fs::create_dir_all(&snapshot).unwrap();
        std::os::unix::fs::symlink(repo.join("blobs/abc"), snapshot.join("m-Q4_0.gguf")).unwrap();
        std::os::unix::fs::symlink(repo.join("blobs/missing"), snapshot.join("m-Q8_0.gguf"))
            .unwrap();
        fs::create_dir_all(repo.join("refs")).unwrap();
        fs::write(repo.join("refs/main"), "rev1\n").unwrap();

        let index = LocalIndex::new(cache.path().join("noroot"), cache.path().to_owned());
        let found = index.find("org/Model-GGUF").unwrap();

        assert_eq!(found.origin, LocalOrigin::HfCache { revision: "rev1".into() });
        assert_eq!(found.files, [LocalFile { path: "m-Q4_0.gguf".into(), size: 1234 }]);
    }

    #[test]
    fn link_loops_are_walked_once() {
        let root = tempfile::tempdir().unwrap();
        let repo = root.path().join("huggingface/org/Loop-GGUF");
        sparse(&repo.join("M-Q4_0.gguf"), 10);
        std::os::unix::fs::symlink("..", repo.join("up")).unwrap();
        std::os::unix::fs::symlink("..", repo.join("up2")).unwrap();
        std::os::unix::fs::symlink(".", repo.join("self")).unwrap();

        let files = list_files(&repo);

        assert_eq!(files, [LocalFile { path: "M-Q4_0.gguf".into(), size: 10 }]);
    }

    #[test]
    fn missing_repo_is_none() {
        let root = tempfile::tempdir().unwrap();
        let index = LocalIndex::new(root.path().to_owned(), root.path().to_owned());
        assert!(index.find("org/absent").is_none());
    }
}
