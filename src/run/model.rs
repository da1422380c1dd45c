//! Which model file `kitt run -m MODEL` means: a GGUF file, a directory of
//! GGUF variants, or a repository id already in local storage, with
//! `--quant` picking a variant when there are several.

use std::path::{Path, PathBuf};

use crate::acquire::local::{LocalIndex, list_files};
use crate::engine::EngineKind;
use crate::plan::quant::{quant_from_file_name, shard_index};
use crate::plan::variants::{GgufVariant, SizedFile, gguf_variants};

/// A model ready to serve.
#[derive(Debug, Clone)]
pub struct ModelFile {
    /// The file to load (first shard), or the served id for `openai`.
    pub path: PathBuf,
    /// Display name and the id the engine serves it as.
    pub name: String,
    /// Quantization label.
    pub quant: String,
    /// Total bytes of its files.
    pub size_bytes: u64,
    /// `general.architecture`, when the header says.
    pub architecture: Option<String>,
    /// Parameter count, when the header says.
    pub parameters: Option<u64>,
}

/// Why MODEL does not name a usable model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// Nothing by that name.
    #[error(
        "`{0}` is neither a GGUF file, a directory of GGUF files, nor a repository in local storage"
    )]
    NotFound(String),
    /// The directory or repository holds no GGUF model.
    #[error("`{0}` holds no GGUF model files")]
    NoVariants(String),
    /// Several variants and no (matching) `--quant`.
    #[error("`{model}` has several variants; choose one with --quant: {variants}")]
    Ambiguous {
        /// MODEL as given.
        model: String,
        /// The labels found.
        variants: String,
    },
    /// A shard set with a member missing.
    #[error("variant `{quant}` of `{model}` is missing shard(s) {missing}")]
    Incomplete {
        /// MODEL as given.
        model: String,
        /// The label.
        quant: String,
        /// Missing shard numbers.
        missing: String,
    },
}

/// Resolves MODEL for `engine`.
pub fn resolve_model(
    model: &str,
    quant: Option<&str>,
    engine: EngineKind,
    local: &LocalIndex,
) -> Result<ModelFile, ModelError> {
    if engine == EngineKind::Openai {
        let label = quant.unwrap_or("served").to_owned();
        let path = PathBuf::from(model);
        return Ok(ModelFile {
            path,
            name: model.to_owned(),
            quant: label,
            size_bytes: 0,
            architecture: None,
            parameters: None,
        });
    }
    let path = Path::new(model);
    let (dir, files, name) = if path.is_file() {
        let dir = path.parent().unwrap_or(Path::new(".")).to_owned();
        let files = siblings_of(path, &dir);
        let stem = file_stem(path);
        (dir, files, stem)
    } else if path.is_dir() {
        let files = sized(&list_files(path));
        (path.to_owned(), files, dir_name(path))
    } else if let Some(repo) = local.find(model) {
        let files = sized(&repo.files);
        (repo.dir, files, model.rsplit('/').next().unwrap_or(model).to_owned())
    } else {
        return Err(ModelError::NotFound(model.to_owned()));
    };
    let variants = gguf_variants(&files);
    let variant = choose(model, quant, variants)?;
    let first = dir.join(&variant.files[0]);
    let header = crate::gguf::reader::read_info(&first).ok();
    Ok(ModelFile {
        name: format!("{name}-{}", variant.label.label).trim_start_matches('-').to_owned(),
        quant: variant.label.label.clone(),
        size_bytes: variant.size,
        path: first,
        architecture: header.as_ref().and_then(|info| info.architecture.clone()),
        parameters: header.map(|info| info.parameter_count).filter(|count| *count > 0),
    })
}

fn choose(
    model: &str,
    quant: Option<&str>,
    variants: Vec<GgufVariant>,
) -> Result<GgufVariant, ModelError> {
    if variants.is_empty() {
        return Err(ModelError::NoVariants(model.to_owned()));
    }
    let labels = || variants.iter().map(|v| v.label.label.clone()).collect::<Vec<_>>().join(", ");
    let chosen = match quant {
        Some(wanted) => variants.iter().find(|v| {
            v.label.label.eq_ignore_ascii_case(wanted) || v.label.base.eq_ignore_ascii_case(wanted)
        }),
        None if variants.len() == 1 => variants.first(),
        None => None,
    };
    let Some(variant) = chosen.cloned() else {
        return Err(ModelError::Ambiguous { model: model.to_owned(), variants: labels() });
    };
    if !variant.is_complete() {
        let missing =
            variant.missing_shards.iter().map(u32::to_string).collect::<Vec<_>>().join(", ");
        return Err(ModelError::Incomplete {
            model: model.to_owned(),
            quant: variant.label.label,
            missing,
        });
    }
    Ok(variant)
}

/// The file itself, or every shard of its set when it is a shard.
fn siblings_of(path: &Path, dir: &Path) -> Vec<SizedFile> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    if shard_index(&name).is_none() {
        return vec![SizedFile { path: name, size }];
    }
    let label = quant_from_file_name(&name).label;
    sized(&list_files(dir))
        .into_iter()
        .filter(|file| !file.path.contains('/') && shard_index(&file.path).is_some())
        .filter(|file| quant_from_file_name(&file.path).label == label)
        .collect()
}

fn sized(files: &[crate::acquire::local::LocalFile]) -> Vec<SizedFile> {
    files.iter().map(|file| SizedFile { path: file.path.clone(), size: file.size }).collect()
}

fn file_stem(path: &Path) -> String {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let label = quant_from_file_name(&name).label;
    let stem = name.trim_end_matches(".gguf");
    let stem = stem.split("-0000").next().unwrap_or(stem);
    // The variant label is appended again by the caller.
    stem.strip_suffix(&format!("-{label}"))
        .or_else(|| stem.strip_suffix(&label))
        .unwrap_or(stem)
        .trim_end_matches(['-', '.', '_'])
        .to_owned()
}

fn dir_name(path: &Path) -> String {
    path.canonicalize()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_default()
}
