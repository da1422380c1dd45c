//! Bind mounts: the model enters a container read-only under `/models`.
//!
//! Hugging Face caches keep a snapshot's files as relative symbolic links
//! into a `blobs` folder beside `snapshots`, so mounting the folder that
//! holds the model would leave the links dangling inside the container. kitt
//! therefore mounts the nearest folder that holds both the model's folder
//! and every file its entries link to, and keeps the layout below it, so
//! relative links still resolve.

use std::path::{Component, Path, PathBuf};

/// Where models appear inside containers.
pub const MODELS_DIR: &str = "/models";

/// A bind mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// The directory on the host.
    pub host: PathBuf,
    /// Where it appears in the container.
    pub container: String,
    /// Whether the container may only read it.
    pub read_only: bool,
}

impl Mount {
    /// `HOST:CONTAINER[:ro]`, as `docker run --volume` takes it.
    pub fn volume(&self) -> String {
        let mode = if self.read_only { ":ro" } else { "" };
        format!("{}:{}{mode}", self.host.display(), self.container)
    }
}

/// Why a model cannot be mounted.
#[derive(Debug, thiserror::Error)]
#[error("cannot mount {} into the container: {reason}", model.display())]
pub struct MountError {
    /// The model.
    pub model: PathBuf,
    /// What is wrong.
    pub reason: String,
}

/// The read-only mount that shows `model` (a file, or a directory of files)
/// under [`MODELS_DIR`], and the model's path inside the container.
pub fn model_mount(model: &Path) -> Result<(Mount, String), MountError> {
    let error = |reason: String| MountError { model: model.to_owned(), reason };
    let folder = if model.is_dir() { model } else { model.parent().unwrap_or(Path::new(".")) };
    let folder = folder.canonicalize().map_err(|e| error(e.to_string()))?;
    let mut root = folder.clone();
    let name = model.file_name().map(|name| name.to_string_lossy().into_owned());
    for entry in std::fs::read_dir(&folder).map_err(|e| error(e.to_string()))?.flatten() {
        let entry_name = entry.file_name().to_string_lossy().into_owned();
        if !model.is_dir() && !name.as_deref().is_some_and(|name| same_model(name, &entry_name)) {
            continue;
        }
        // A dangling link is the engine's problem to report, not the mount's.
        let Ok(target) = entry.path().canonicalize() else { continue };
        root = common_ancestor(&root, target.parent().unwrap_or(&target));
    }
    if root.parent().is_none() {
        return Err(error(
            "its files are linked from all over the file system; put them in one folder".into(),
        ));
    }
    let mut inside = PathBuf::from(MODELS_DIR);
    let below = folder.strip_prefix(&root).unwrap_or(Path::new(""));
    if !below.as_os_str().is_empty() {
        inside.push(below);
    }
    if !model.is_dir() {
        inside.push(model.file_name().ok_or_else(|| error("it has no file name".into()))?);
    }
    let mount = Mount { host: root, container: MODELS_DIR.to_owned(), read_only: true };
    Ok((mount, inside.display().to_string()))
}

/// Whether `entry` is the model file `model` or another shard of it
/// (`name-00002-of-00003.gguf` beside `name-00001-of-00003.gguf`).
fn same_model(model: &str, entry: &str) -> bool {
    model == entry || split_stem(model).is_some_and(|stem| split_stem(entry) == Some(stem))
}

/// `name-of-00003` for a shard `name-00001-of-00003.gguf`.
fn split_stem(name: &str) -> Option<String> {
    let base = name.strip_suffix(".gguf")?;
    let (rest, total) = base.rsplit_once("-of-")?;
    let (prefix, index) = rest.rsplit_once('-')?;
    let digits = |s: &str| s.len() == 5 && s.chars().all(|c| c.is_ascii_digit());
    (digits(total) && digits(index)).then(|| format!("{prefix}-of-{total}"))
}

fn common_ancestor(a: &Path, b: &Path) -> PathBuf {
    a.components()
        .zip(b.components())
        .take_while(|(x, y)| x == y)
        .map(|(x, _)| x)
        .collect::<Vec<Component<'_>>>()
        .iter()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_file_mounts_its_folder() {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("m-Q4_K_M.gguf");
        std::fs::write(&model, b"GGUF").unwrap();

        let (mount, inside) = model_mount(&model).unwrap();

        assert_eq!(mount.host, dir.path().canonicalize().unwrap());
        assert_eq!(mount.volume(), format!("{}:/models:ro", mount.host.display()));
        assert_eq!(inside, "/models/m-Q4_K_M.gguf");
    }

    #[test]
    fn a_hub_cache_snapshot_mounts_the_repository_so_links_resolve() {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("models--org--m-GGUF");
        std::fs::create_dir_all(repo.join("blobs")).unwrap();
        std::fs::create_dir_all(repo.join("snapshots/abc")).unwrap();
        std::fs::write(repo.join("blobs/1234"), b"GGUF").unwrap();
        let model = repo.join("snapshots/abc/m-Q8_0.gguf");
        std::os::unix::fs::symlink("../../blobs/1234", &model).unwrap();

        let (mount, inside) = model_mount(&model).unwrap();

        assert_eq!(mount.host, repo.canonicalize().unwrap());
        assert_eq!(inside, "/models/snapshots/abc/m-Q8_0.gguf");
    }

    #[test]
    fn shards_count_and_unrelated_links_do_not() {
        assert!(same_model("m-00001-of-00002.gguf", "m-00002-of-00002.gguf"));
        assert!(!same_model("m-00001-of-00002.gguf", "n-00002-of-00002.gguf"));
        assert!(!same_model("m.gguf", "other.gguf"));

        let dir = tempfile::tempdir().unwrap();
        let models = dir.path().join("models");
        std::fs::create_dir_all(&models).unwrap();
        std::fs::write(models.join("m.gguf"), b"GGUF").unwrap();
        std::os::unix::fs::symlink("/usr/bin", models.join("elsewhere")).unwrap();
        let (mount, _) = model_mount(&models.join("m.gguf")).unwrap();
        assert_eq!(mount.host, models.canonicalize().unwrap());
    }

    #[test]
    fn a_directory_model_is_the_mount_itself() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("model.safetensors"), b"{}").unwrap();

        let (mount, inside) = model_mount(dir.path()).unwrap();

        assert_eq!(mount.host, dir.path().canonicalize().unwrap());
        assert_eq!(inside, "/models");
    }
}
