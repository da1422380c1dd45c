//! Partial downloads: `<name>.kitt-part` beside the final name, and its
//! sidecar `<name>.kitt-part.json` naming the URL and the `ETag` the bytes
//! came from. A partial file is resumed only while its sidecar matches.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::download::FileSpec;

/// Suffix of a file being downloaded.
pub const PART_SUFFIX: &str = ".kitt-part";

/// The sidecar of a partial file.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub(super) struct PartMeta {
    pub(super) url: String,
    pub(super) etag: String,
}

/// Whether `dest` is already there, with the expected size when one is known.
pub fn is_complete(dest: &Path, size: Option<u64>) -> bool {
    std::fs::metadata(dest)
        .is_ok_and(|meta| meta.is_file() && size.is_none_or(|size| meta.len() == size))
}

/// Where `dest` is written while it downloads.
pub fn part_path(dest: &Path) -> PathBuf {
    let mut name = dest.file_name().unwrap_or_default().to_os_string();
    name.push(PART_SUFFIX);
    dest.with_file_name(name)
}

/// The lock file a process holds while it writes `dest`'s partial file.
pub(super) fn lock_path(dest: &Path) -> PathBuf {
    let mut name = dest.file_name().unwrap_or_default().to_os_string();
    name.push(".kitt-lock");
    dest.with_file_name(name)
}

pub(super) fn meta_path(dest: &Path) -> PathBuf {
    let mut name = dest.file_name().unwrap_or_default().to_os_string();
    name.push(PART_SUFFIX);
    name.push(".json");
    dest.with_file_name(name)
}

/// Bytes of `spec`'s partial file that a download would resume from (0 when
/// there is none or it cannot be resumed); changes nothing on disk.
pub fn resumable_bytes(spec: &FileSpec) -> u64 {
    let part = part_path(&spec.dest);
    match read_meta(&meta_path(&spec.dest)) {
        Some(meta) if meta.url == spec.url && !meta.etag.is_empty() => file_len(&part),
        _ => 0,
    }
}

/// Removes the partial file of `dest` and its sidecar, if any.
pub fn remove_partial(dest: &Path) {
    discard(&part_path(dest), &meta_path(dest));
}

pub(super) fn discard(part: &Path, meta_path: &Path) {
    let _ = std::fs::remove_file(part);
    let _ = std::fs::remove_file(meta_path);
}

/// Bytes of a partial file that may be resumed; anything unusable is removed.
pub(super) fn usable_partial(part: &Path, meta_path: &Path, url: &str) -> u64 {
    match read_meta(meta_path) {
        Some(meta) if meta.url == url && !meta.etag.is_empty() => file_len(part),
        _ => {
            discard(part, meta_path);
            0
        }
    }
}

pub(super) fn read_meta(path: &Path) -> Option<PartMeta> {
    let text = std::fs::read_to_string(path).ok()?;
    serde_json::from_str(&text).ok()
}

pub(super) fn write_meta(path: &Path, meta: &PartMeta) -> std::io::Result<()> {
    let text = serde_json::to_vec(meta).map_err(std::io::Error::other)?;
    std::fs::write(path, text)
}

pub(super) fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|meta| meta.len()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_files_sit_beside_the_final_name() {
        let dest = Path::new("/m/org/repo/model-Q4_K_M.gguf");
        assert_eq!(part_path(dest), Path::new("/m/org/repo/model-Q4_K_M.gguf.kitt-part"));
        assert_eq!(meta_path(dest), Path::new("/m/org/repo/model-Q4_K_M.gguf.kitt-part.json"));
    }

    #[test]
    fn a_partial_file_without_its_sidecar_is_not_resumed() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("a.gguf");
        std::fs::write(part_path(&dest), b"12345").unwrap();
        assert_eq!(usable_partial(&part_path(&dest), &meta_path(&dest), "http://x/a"), 0);
        assert!(!part_path(&dest).exists());
        std::fs::write(part_path(&dest), b"12345").unwrap();
        let meta = PartMeta { url: "http://x/a".into(), etag: "\"e1\"".into() };
        write_meta(&meta_path(&dest), &meta).unwrap();
        assert_eq!(usable_partial(&part_path(&dest), &meta_path(&dest), "http://x/a"), 5);
        assert_eq!(usable_partial(&part_path(&dest), &meta_path(&dest), "http://x/b"), 0);
    }
}
