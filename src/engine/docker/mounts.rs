//! Bind mounts: models (and a GGUF's tokenizer) enter a container read-only.
//!
//! A model file's folder appears as [`MODELS_DIR`]; a model directory keeps
//! its name, as `/models/<name>` (TabbyAPI serves a model under its
//! directory's name). Hugging Face caches keep a snapshot's files as relative
//! symbolic links into a `blobs` folder beside `snapshots`, so mounting the
//! folder that holds the model would leave the links dangling inside the
//! container. kitt therefore mounts the nearest folder that holds both the
//! model's folder and every file its entries link to, and keeps the layout
//! below it, so relative links still resolve.

use std::path::{Component, Path, PathBuf};

/// Where models appear inside containers.
pub const MODELS_DIR: &str = "/models";

/// Where a GGUF's tokenizer directory appears inside containers.
pub const TOKENIZER_DIR: &str = "/tokenizer";

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

    /// Where the container sees host path `path`, if this mount shows it.
    pub fn inside(&self, path: &Path) -> Option<String> {
        let below = canonical(path)?.strip_prefix(&self.host).ok()?.to_owned();
        let mut inside = PathBuf::from(&self.container);
        if !below.as_os_str().is_empty() {
            inside.push(below);
        }
        Some(inside.display().to_string())
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
    mount_under(model, MODELS_DIR)
}

/// The read-only mount that shows `path` (a file, or a directory of files)
/// under the container directory `dir`, and the path inside the container:
/// a file's folder becomes `dir`, a directory `dir/<its name>`.
pub fn mount_under(path: &Path, dir: &str) -> Result<(Mount, String), MountError> {
    let error = |reason: String| MountError { model: path.to_owned(), reason };
    let folder = if path.is_dir() { path } else { path.parent().unwrap_or(Path::new(".")) };
    let folder = folder.canonicalize().map_err(|e| error(e.to_string()))?;
    let mut root = folder.clone();
    let name = path.file_name().map(|name| name.to_string_lossy().into_owned());
    for entry in std::fs::read_dir(&folder).map_err(|e| error(e.to_string()))?.flatten() {
        let entry_name = entry.file_name().to_string_lossy().into_owned();
        if !path.is_dir() && !name.as_deref().is_some_and(|name| same_model(name, &entry_name)) {
            continue;
        }
        // A dangling link is the engine's problem to report, not the mount's.
        let Ok(target) = entry.path().canonicalize() else { continue };
        root = common_ancestor(&root, target.parent().unwrap_or(&target));
    }
    let Some(root_name) = root.file_name().map(|name| name.to_string_lossy().into_owned()) else {
        return Err(error(
            "its files are linked from all over the file system; put them in one folder".into(),
        ));
    };
    let container = if path.is_dir() { format!("{dir}/{root_name}") } else { dir.to_owned() };
    let mount = Mount { host: root, container, read_only: true };
    let inside = mount.inside(path).ok_or_else(|| error("it is outside its own folder".into()))?;
    Ok((mount, inside))
}

/// A path with its folders resolved but its last component kept, so a
/// linked model file keeps the name the engine is told.
fn canonical(path: &Path) -> Option<PathBuf> {
    if path.is_dir() {
        return path.canonicalize().ok();
    }
    let folder = path.parent().filter(|folder| !folder.as_os_str().is_empty());
    let folder = folder.unwrap_or(Path::new(".")).canonicalize().ok()?;
    Some(folder.join(path.file_name()?))
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
    fn a_directory_model_is_mounted_under_its_own_name() {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("Tiny-Instruct");
        std::fs::create_dir_all(&model).unwrap();
        std::fs::write(model.join("model.safetensors"), b"{}").unwrap();

        let (mount, inside) = model_mount(&model).unwrap();

        assert_eq!(mount.host, model.canonicalize().unwrap());
        assert_eq!(mount.volume(), format!("{}:/models/Tiny-Instruct:ro", mount.host.display()));
        assert_eq!(inside, "/models/Tiny-Instruct");
        assert_eq!(mount.inside(&model.join("config.json")).unwrap(), inside + "/config.json");
        assert_eq!(mount.inside(dir.path()), None, "its parent is not in the container");
    }

    #[test]
    fn a_tokenizer_directory_goes_under_its_own_folder() {
        let dir = tempfile::tempdir().unwrap();
        let (mount, inside) = mount_under(dir.path(), TOKENIZER_DIR).unwrap();
        let name = dir.path().canonicalize().unwrap();
        let name = name.file_name().unwrap().to_string_lossy();
        assert_eq!(inside, format!("/tokenizer/{name}"));
        assert_eq!(mount.container, inside);
    }
}
