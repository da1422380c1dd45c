//! Which model `kitt run -m MODEL` means: a GGUF file, a directory of GGUF
//! variants, or a repository id already in local storage, with `--quant`
//! picking a variant when there are several; for engines that load
//! safetensors, a checkpoint directory (`config.json` and `*.safetensors`),
//! whose quant label comes from its name as in campaign plans. For Ollama,
//! anything else is a library tag (`llama3.2:1b`) that the engine pulls if
//! needed.

use std::path::{Path, PathBuf};

use crate::acquire::local::{LocalIndex, list_files};
use crate::engine::{EngineKind, Format};
use crate::plan::quant::{quant_from_file_name, shard_index};
use crate::plan::variants::{GgufVariant, SizedFile, gguf_variants, safetensors_files};

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
    /// What `path` is: a GGUF file, a safetensors directory or an Ollama tag
    /// (`None` for a model an external server already serves).
    pub format: Option<Format>,
    /// The tokenizer to serve a GGUF with (vLLM): a local directory or a
    /// repository id, from the model's `safetensors_repo`.
    pub tokenizer: Option<String>,
}

/// Why MODEL does not name a usable model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// Nothing by that name.
    #[error("`{0}` is neither a GGUF file, a model directory, nor a repository in local storage")]
    NotFound(String),
    /// The directory or repository holds no GGUF model.
    #[error("`{0}` holds no GGUF model files")]
    NoVariants(String),
    /// MODEL is empty.
    #[error("the model is empty; give a GGUF file, a directory or a repository id")]
    Empty,
    /// MODEL is neither local nor a valid Ollama tag.
    #[error("`{model}` is not a local GGUF file, directory or repository, and {reason}")]
    BadTag {
        /// MODEL as given.
        model: String,
        /// Why it is no tag.
        reason: String,
    },
    /// `--quant` with an Ollama tag, which names its quantization itself.
    #[error(
        "--quant does not apply to the Ollama tag `{0}`: a tag names its quantization; \
         give the full tag, e.g. `qwen2.5:7b-instruct-q4_K_M`"
    )]
    QuantWithTag(String),
    /// `--quant` names no variant of MODEL.
    #[error("`{model}` has no variant `{quant}`; it has: {variants}")]
    NoSuchQuant {
        /// MODEL as given.
        model: String,
        /// The label asked for.
        quant: String,
        /// The labels found.
        variants: String,
    },
    /// Several files share the chosen label: the directory holds several models.
    #[error("`{model}` holds several `{quant}` files: {files}; give the file itself")]
    SeveralModels {
        /// MODEL as given.
        model: String,
        /// The label.
        quant: String,
        /// The files.
        files: String,
    },
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
            format: None,
            tokenizer: None,
        });
    }
    if model.trim().is_empty() {
        return Err(ModelError::Empty);
    }
    let path = Path::new(model);
    let (dir, files) = if path.is_file() {
        let dir = path.parent().unwrap_or(Path::new(".")).to_owned();
        let files = siblings_of(path, &dir);
        (dir, files)
    } else if path.is_dir() {
        (path.to_owned(), sized(&list_files(path)))
    } else if let Some(repo) = local.find(model) {
        (repo.dir, sized(&repo.files))
    } else if engine == EngineKind::Ollama {
        return ollama_tag(model, quant);
    } else {
        return Err(ModelError::NotFound(model.to_owned()));
    };
    if engine.formats().contains(&Format::Safetensors) && is_checkpoint(&dir, &files) {
        return checkpoint(model, quant, &dir, &files);
    }
    let variants = gguf_variants(&files);
    let variant = choose(model, quant, variants)?;
    let first = dir.join(&variant.files[0]);
    let first = std::path::absolute(&first).unwrap_or(first);
    // Named after the file it loads, however MODEL was given, so results of
    // one file always land in one `results/<model>` folder.
    let name = file_stem(&first);
    let header = crate::gguf::reader::read_info(&first).ok();
    // A split model's parameters are spread over its shards.
    let parameters: u64 = variant
        .files
        .iter()
        .filter_map(|file| crate::gguf::reader::read_info(&dir.join(file)).ok())
        .map(|info| info.parameter_count)
        .fold(0, u64::saturating_add);
    // A file name without a quant token: the header's file type says what it is.
    let quant = match header.as_ref().and_then(|info| info.file_type).and_then(file_type_label) {
        Some(from_header) if !variant.label.known => from_header.to_owned(),
        _ => variant.label.label.clone(),
    };
    Ok(ModelFile {
        name: format!("{name}-{quant}").trim_start_matches('-').to_owned(),
        quant,
        size_bytes: variant.size,
        path: first,
        architecture: header.as_ref().and_then(|info| info.architecture.clone()),
        parameters: Some(parameters).filter(|count| *count > 0),
        format: Some(Format::Gguf),
        tokenizer: None,
    })
}

/// An Ollama library tag: the engine finds it in its store or pulls it.
fn ollama_tag(model: &str, quant: Option<&str>) -> Result<ModelFile, ModelError> {
    let tag = model.trim();
    if tag.to_ascii_lowercase().ends_with(".gguf") {
        return Err(ModelError::NotFound(model.to_owned()));
    }
    crate::engine::ollama::check_tag(tag)
        .map_err(|reason| ModelError::BadTag { model: model.to_owned(), reason })?;
    if quant.is_some() {
        return Err(ModelError::QuantWithTag(tag.to_owned()));
    }
    let name = crate::engine::ollama::normalise_tag(tag);
    Ok(ModelFile {
        path: PathBuf::from(tag),
        quant: crate::plan::discover::tag_label(&name).label,
        name,
        size_bytes: 0,
        architecture: None,
        parameters: None,
        format: Some(Format::Ollama),
        tokenizer: None,
    })
}

/// Whether `dir` is a safetensors checkpoint: `config.json` and weights at its top.
fn is_checkpoint(dir: &Path, files: &[SizedFile]) -> bool {
    let weights = files.iter().any(|file| {
        !file.path.contains('/') && file.path.to_ascii_lowercase().ends_with(".safetensors")
    });
    weights && dir.join("config.json").is_file()
}

/// A safetensors checkpoint, named after its directory; `--quant` may only
/// repeat the label its name announces.
fn checkpoint(
    model: &str,
    quant: Option<&str>,
    dir: &Path,
    files: &[SizedFile],
) -> Result<ModelFile, ModelError> {
    let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_owned());
    let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let label = crate::plan::matrix::safetensors_label(&name).label;
    if let Some(wanted) = quant.filter(|wanted| !wanted.eq_ignore_ascii_case(&label)) {
        return Err(ModelError::NoSuchQuant {
            model: model.to_owned(),
            quant: wanted.to_owned(),
            variants: label,
        });
    }
    let (_, size_bytes) = safetensors_files(files);
    let config = std::fs::read_to_string(dir.join("config.json")).ok();
    let config: Option<serde_json::Value> =
        config.and_then(|text| serde_json::from_str(&text).ok());
    let architecture = config.as_ref().and_then(|config| {
        let named = config["architectures"][0].as_str().or(config["model_type"].as_str());
        named.map(str::to_owned)
    });
    // A name that announces its quantization (`…-AWQ`) is not given the label twice.
    let announced = name.to_ascii_uppercase().contains(&label.to_ascii_uppercase());
    let name = if announced { name } else { format!("{name}-{label}") };
    Ok(ModelFile {
        name,
        quant: label,
        size_bytes,
        path: dir,
        architecture,
        parameters: None,
        format: Some(Format::Safetensors),
        tokenizer: None,
    })
}

/// llama.cpp's `general.file_type` codes and their labels.
fn file_type_label(code: u32) -> Option<&'static str> {
    Some(match code {
        0 => "F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        7 => "Q8_0",
        8 => "Q5_0",
        9 => "Q5_1",
        10 => "Q2_K",
        11 => "Q3_K_S",
        12 => "Q3_K_M",
        13 => "Q3_K_L",
        14 => "Q4_K_S",
        15 => "Q4_K_M",
        16 => "Q5_K_S",
        17 => "Q5_K_M",
        18 => "Q6_K",
        19 => "IQ2_XXS",
        20 => "IQ2_XS",
        21 => "Q2_K_S",
        22 => "IQ3_XS",
        23 => "IQ3_XXS",
        24 => "IQ1_S",
        25 => "IQ4_NL",
        26 => "IQ3_S",
        27 => "IQ3_M",
        28 => "IQ2_S",
        29 => "IQ2_M",
        30 => "IQ4_XS",
        31 => "IQ1_M",
        32 => "BF16",
        36 => "TQ1_0",
        37 => "TQ2_0",
        38 => "MXFP4_MOE",
        _ => return None,
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
        Some(wanted) => {
            let found = variants.iter().find(|v| {
                v.label.label.eq_ignore_ascii_case(wanted)
                    || v.label.base.eq_ignore_ascii_case(wanted)
            });
            let quant = wanted.to_owned();
            Some(found.ok_or_else(|| ModelError::NoSuchQuant {
                model: model.to_owned(),
                quant,
                variants: labels(),
            })?)
        }
        None if variants.len() == 1 => variants.first(),
        None => None,
    };
    let Some(variant) = chosen.cloned() else {
        return Err(ModelError::Ambiguous { model: model.to_owned(), variants: labels() });
    };
    if !variant.others.is_empty() {
        let files =
            variant.files.iter().chain(&variant.others).cloned().collect::<Vec<_>>().join(", ");
        return Err(ModelError::SeveralModels {
            model: model.to_owned(),
            quant: variant.label.label,
            files,
        });
    }
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
