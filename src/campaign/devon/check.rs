//! Checking what Devon reports, on this machine: its directory must exist
//! here, and every planned file must be under it with the Hub's size and
//! SHA-256.

use std::path::{Path, PathBuf};

use super::super::download_view::record_phase;
use super::super::progress::Progress;
use crate::acquire::download::sha256_file;
use crate::acquire::variant::Variant;
use crate::plan::matrix::human_bytes;
use crate::run::Cancel;
use crate::store::Store;

/// What the files at Devon's directory look like.
pub(super) enum Found {
    /// Every file, with the listed size.
    Complete,
    /// These files are not there.
    Missing(Vec<String>),
}

/// The directory on this machine for the path Devon reported: the path
/// itself when it is a directory here, the directory above the variant's
/// file when Devon named a file.
pub(super) fn local_dir(reported: &Path, variant: &Variant) -> Result<PathBuf, String> {
    let repo = &variant.repo;
    if reported.is_dir() {
        return Ok(reported.to_owned());
    }
    if reported.is_file() {
        let above = variant.files.iter().find_map(|file| {
            let mut dir = reported.to_owned();
            for _ in Path::new(&file.path).components() {
                dir.pop();
            }
            (dir.join(&file.path) == reported).then_some(dir)
        });
        return above.ok_or_else(|| {
            format!(
                "Devon returned {} for `{repo}`, a file that is not one the run needs",
                reported.display()
            )
        });
    }
    Err(format!(
        "Devon returned {} for `{repo}`, which is not on this machine; kitt needs Devon's storage \
         shared with it, at the same path",
        reported.display()
    ))
}

/// Whether every file of `variant` is under `dir` with its listed size; an
/// error for a file of the wrong size or that is not a file.
pub(super) fn check_files(dir: &Path, variant: &Variant) -> Result<Found, String> {
    let mut missing = Vec::new();
    for file in &variant.files {
        let path = dir.join(&file.path);
        let Ok(meta) = std::fs::metadata(&path) else {
            missing.push(file.path.clone());
            continue;
        };
        if !meta.is_file() {
            return Err(format!(
                "Devon's copy of `{}` has {} but it is not a file",
                variant.repo,
                path.display()
            ));
        }
        if let Some(size) = file.spec.size
            && meta.len() != size
        {
            return Err(format!(
                "Devon's copy {} is {} bytes, but the Hub lists {size} for `{}`; have Devon \
                 download `{}` again, then resume",
                path.display(),
                meta.len(),
                file.path,
                variant.repo
            ));
        }
    }
    Ok(if missing.is_empty() { Found::Complete } else { Found::Missing(missing) })
}

/// Checks the SHA-256 of each file the Hub lists one for; `None` when the
/// user stopped it.
pub(super) async fn check_hashes(
    dir: &Path,
    variant: &Variant,
    store: &Store,
    run_id: i64,
    cancel: &Cancel,
    progress: &mut Progress,
) -> Option<Result<(), String>> {
    for file in &variant.files {
        let Some(expected) = file.spec.sha256.clone() else { continue };
        let path = dir.join(&file.path);
        let phase = format!(
            "checking the SHA-256 of Devon's {} ({})",
            file.path,
            human_bytes(file.spec.size.unwrap_or(0))
        );
        record_phase(store, run_id, &phase);
        progress.phase(&phase);
        let hashing = tokio::task::spawn_blocking({
            let path = path.clone();
            move || sha256_file(&path)
        });
        let hashed = tokio::select! {
            biased;
            () = cancel.cancelled() => return None,
            hashed = hashing => hashed,
        };
        let reason = match hashed {
            Ok(Ok(actual)) if actual.eq_ignore_ascii_case(&expected) => continue,
            Ok(Ok(actual)) => format!(
                "Devon's copy {} has SHA-256 {actual}, but the Hub lists {expected} for `{}`; \
                 have Devon download `{}` again, then resume",
                path.display(),
                file.path,
                variant.repo
            ),
            Ok(Err(error)) => format!("cannot read Devon's copy {}: {error}", path.display()),
            Err(error) => format!("cannot check Devon's copy {}: {error}", path.display()),
        };
        return Some(Err(reason));
    }
    Some(Ok(()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acquire::download::FileSpec;
    use crate::acquire::variant::VariantFile;

    fn variant(files: &[(&str, u64)]) -> Variant {
        let files = files
            .iter()
            .map(|(path, size)| VariantFile {
                path: (*path).to_owned(),
                spec: FileSpec {
                    url: String::new(),
                    dest: PathBuf::from("/unused").join(path),
                    size: Some(*size),
                    sha256: None,
                    label: (*path).to_owned(),
                },
            })
            .collect();
        Variant { repo: "org/m".into(), dir: PathBuf::from("/unused"), files }
    }

    #[test]
    fn devons_path_must_be_on_this_machine() {
        let dir = tempfile::tempdir().unwrap();
        let shard = "Q8_0/m-00001-of-00002.gguf";
        std::fs::create_dir_all(dir.path().join("Q8_0")).unwrap();
        std::fs::write(dir.path().join(shard), b"abc").unwrap();
        let variant = variant(&[(shard, 3)]);

        assert_eq!(local_dir(dir.path(), &variant).unwrap(), dir.path());
        // A file of the variant stands for the directory above its path in the repository.
        assert_eq!(local_dir(&dir.path().join(shard), &variant).unwrap(), dir.path());
        std::fs::write(dir.path().join("other.gguf"), b"x").unwrap();
        let error = local_dir(&dir.path().join("other.gguf"), &variant).unwrap_err();
        assert!(error.contains("not one the run needs"), "{error}");
        let error = local_dir(Path::new("/srv/devon/org/m"), &variant).unwrap_err();
        assert_eq!(
            error,
            "Devon returned /srv/devon/org/m for `org/m`, which is not on this machine; kitt \
             needs Devon's storage shared with it, at the same path"
        );
    }

    #[test]
    fn the_planned_files_must_be_there_with_their_listed_size() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.gguf"), b"abc").unwrap();
        let complete = variant(&[("a.gguf", 3)]);
        assert!(matches!(check_files(dir.path(), &complete), Ok(Found::Complete)));
        let more = variant(&[("a.gguf", 3), ("b.gguf", 5)]);
        let Ok(Found::Missing(missing)) = check_files(dir.path(), &more) else {
            panic!("b.gguf is missing")
        };
        assert_eq!(missing, ["b.gguf"]);
        let wrong = variant(&[("a.gguf", 4)]);
        let error = check_files(dir.path(), &wrong).err().unwrap();
        assert!(error.contains("is 3 bytes, but the Hub lists 4 for `a.gguf`"), "{error}");
    }
}
