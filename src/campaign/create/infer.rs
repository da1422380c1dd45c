//! Where a model came from, read from the path or tag a result names, for
//! results that do not record their campaign (kitt's older results and the
//! original tool's `metrics.json`).
//!
//! Two layouts are understood: kitt's storage root
//! (`<root>/huggingface/<org>/<repo>/<file>`, the original tool's too) and the
//! Hugging Face cache (`…/models--<org>--<repo>/snapshots/<rev>/<file>`). A
//! GGUF file gives a `gguf_repo` and the label its name (or quant-named
//! sub-folder) carries, read exactly as discovery reads it; a safetensors
//! checkpoint (the repository folder, or a `.safetensors` file in it) gives a
//! `safetensors_repo` and the label its repository name announces. On
//! `ollama`, a model that is no path but a tag gives an `ollama_tag`.

use std::path::{Component, Path, PathBuf};

use crate::acquire::hub::validate_repo_id;
use crate::engine::{EngineKind, Format};
use crate::plan::matrix::safetensors_label;
use crate::plan::variants::label_for;

/// A model source read from a result.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Inferred {
    /// A repository in local storage or the Hugging Face cache.
    Repo {
        /// `org/name`.
        repo: String,
        /// GGUF or safetensors.
        format: Format,
        /// The variant's label, as the plan will name it.
        quant: String,
        /// The storage root the file was under (`None` for the Hugging Face cache).
        storage_root: Option<PathBuf>,
    },
    /// An Ollama tag.
    Tag(String),
}

/// Reads the source of `model` (a path or a tag) run on `engine`, or says why
/// it cannot be read.
pub(super) fn infer(model: &str, engine: EngineKind) -> Result<Inferred, String> {
    let model = model.trim();
    if model.is_empty() {
        return Err("the result names no model".into());
    }
    let path = Path::new(model);
    if engine == EngineKind::Ollama && !path.is_absolute() && !model.starts_with(['.', '~']) {
        return if crate::config::is_ollama_tag(model) {
            Ok(Inferred::Tag(model.to_owned()))
        } else {
            Err(format!("`{model}` is neither a model path nor an Ollama tag"))
        };
    }
    if !path.is_absolute() {
        return Err(format!(
            "`{model}` is not an absolute path under a storage root (`<root>/huggingface/<org>/\
             <repo>/…`) or the Hugging Face cache (`models--<org>--<repo>/snapshots/…`)"
        ));
    }
    let parts: Vec<&str> = path
        .components()
        .filter_map(|part| match part {
            Component::Normal(name) => name.to_str(),
            _ => None,
        })
        .collect();
    let (repo, rest, storage_root) =
        // The cache first: its usual home, `~/.cache/huggingface/hub/`, has a
        // `huggingface` folder that is no storage root.
        cache_layout(&parts).or_else(|| storage_layout(path, &parts)).ok_or_else(|| {
            format!(
                "`{model}` is under neither a storage root (`<root>/huggingface/<org>/<repo>/…`) \
                 nor the Hugging Face cache (`models--<org>--<repo>/snapshots/<rev>/…`)"
            )
        })?;
    validate_repo_id(&repo).map_err(|error| format!("`{repo}` read from `{model}`: {error}"))?;
    source_in_repo(repo, &rest, storage_root, engine, model)
}

/// `<root>/huggingface/<org>/<repo>/<rest…>`; the last `huggingface` wins.
fn storage_layout(path: &Path, parts: &[&str]) -> Option<(String, Vec<String>, Option<PathBuf>)> {
    let at = parts.iter().rposition(|part| *part == "huggingface")?;
    let (org, name) = (parts.get(at + 1)?, parts.get(at + 2)?);
    let rest = parts[at + 3..].iter().map(|part| (*part).to_owned()).collect();
    // The root keeps the path's own prefix (`/`), which components dropped.
    let root = path.ancestors().nth(parts.len() - at)?.to_owned();
    Some((format!("{org}/{name}"), rest, Some(root)))
}

/// `…/models--<org>--<repo>/snapshots/<rev>/<rest…>`.
fn cache_layout(parts: &[&str]) -> Option<(String, Vec<String>, Option<PathBuf>)> {
    let at = parts.iter().rposition(|part| part.starts_with("models--"))?;
    let (org, name) = parts[at].strip_prefix("models--")?.split_once("--")?;
    if parts.get(at + 1) != Some(&"snapshots") || parts.len() < at + 3 {
        return None;
    }
    let rest = parts[at + 3..].iter().map(|part| (*part).to_owned()).collect();
    Some((format!("{org}/{name}"), rest, None))
}

/// The format and label of the file (or folder) `rest` inside `repo`.
fn source_in_repo(
    repo: String,
    rest: &[String],
    storage_root: Option<PathBuf>,
    engine: EngineKind,
    model: &str,
) -> Result<Inferred, String> {
    let file = rest.last().map(String::as_str).unwrap_or_default();
    let lower = file.to_ascii_lowercase();
    let format = if lower.ends_with(".gguf") {
        Format::Gguf
    } else if rest.is_empty() || lower.ends_with(".safetensors") {
        Format::Safetensors
    } else {
        return Err(format!("`{model}` is neither a GGUF file nor a safetensors checkpoint"));
    };
    if !engine.formats().contains(&format) {
        return Err(format!("engine `{engine}` does not load `{format}` models like `{model}`"));
    }
    let quant = match format {
        Format::Gguf => label_for(&rest.join("/"), file).label,
        _ => safetensors_label(&repo).label,
    };
    Ok(Inferred::Repo { repo, format, quant, storage_root })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo(repo: &str, format: Format, quant: &str, root: Option<&str>) -> Inferred {
        Inferred::Repo {
            repo: repo.into(),
            format,
            quant: quant.into(),
            storage_root: root.map(PathBuf::from),
        }
    }

    #[test]
    fn storage_root_paths_give_repo_quant_and_root() {
        let path = "/home/u/models/huggingface/bartowski/Llama-GGUF/Llama-Q4_K_M.gguf";
        assert_eq!(
            infer(path, EngineKind::LlamaCpp),
            Ok(repo("bartowski/Llama-GGUF", Format::Gguf, "Q4_K_M", Some("/home/u/models")))
        );
        let sharded = "/m/huggingface/org/Big-GGUF/UD-Q4_K_XL/Big-UD-Q4_K_XL-00001-of-00002.gguf";
        assert_eq!(
            infer(sharded, EngineKind::LlamaCpp),
            Ok(repo("org/Big-GGUF", Format::Gguf, "UD-Q4_K_XL", Some("/m")))
        );
        assert_eq!(
            infer("/m/huggingface/Qwen/Qwen2.5-7B-Instruct-AWQ", EngineKind::Vllm),
            Ok(repo("Qwen/Qwen2.5-7B-Instruct-AWQ", Format::Safetensors, "AWQ", Some("/m")))
        );
    }

    #[test]
    fn hub_cache_paths_give_the_repo_without_a_root() {
        let path = "/h/hub/models--org--Tiny-GGUF/snapshots/abc123/tiny-q8_0.gguf";
        assert_eq!(
            infer(path, EngineKind::LlamaCpp),
            Ok(repo("org/Tiny-GGUF", Format::Gguf, "Q8_0", None))
        );
        // The cache's usual home has a `huggingface` folder that is no storage root.
        let home =
            "/root/.cache/huggingface/hub/models--org--Tiny-GGUF/snapshots/r/tiny-Q4_K_M.gguf";
        assert_eq!(
            infer(home, EngineKind::LlamaCpp),
            Ok(repo("org/Tiny-GGUF", Format::Gguf, "Q4_K_M", None))
        );
    }

    #[test]
    fn ollama_tags_are_read_only_on_ollama() {
        assert_eq!(
            infer("qwen2.5:7b-instruct-q4_0", EngineKind::Ollama),
            Ok(Inferred::Tag("qwen2.5:7b-instruct-q4_0".into()))
        );
        assert!(infer("qwen2.5:7b", EngineKind::LlamaCpp).unwrap_err().contains("absolute"));
        assert!(infer("Not A Tag!", EngineKind::Ollama).is_err());
    }

    #[test]
    fn paths_outside_the_layouts_and_wrong_formats_say_why() {
        let outside = infer("/tmp/tiny.gguf", EngineKind::LlamaCpp).unwrap_err();
        assert!(outside.contains("neither a storage root"), "{outside}");
        let format = infer("/m/huggingface/org/r/x.gguf", EngineKind::Vllm);
        assert!(format.is_ok(), "vLLM loads GGUF: {format:?}");
        let wrong = infer("/m/huggingface/org/r", EngineKind::LlamaCpp).unwrap_err();
        assert!(wrong.contains("does not load `safetensors`"), "{wrong}");
        assert!(infer("", EngineKind::LlamaCpp).is_err());
    }
}
