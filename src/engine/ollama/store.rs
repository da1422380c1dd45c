//! Ollama's model store as kitt sees it without a server: where the server
//! an engine config starts keeps its models, and whether a tag is there.
//! Planning and the campaign's disk checks use it before any server runs.
//!
//! Natively the store is `OLLAMA_MODELS` from the engine's `extra_args`, else
//! from kitt's environment, else Ollama's default `~/.ollama/models`. A tag is
//! in it when its manifest is: `manifests/<host>/<namespace>/<model>/<tag>`,
//! the host `registry.ollama.ai` and the namespace `library` when the name
//! gives none (`hf.co/org/repo:Q4_K_M` names both). In Docker mode the store
//! is the named volume [`super::VOLUME`]: kitt can neither look into it nor
//! measure its free space.

use std::fmt;
use std::path::{Path, PathBuf};

use super::model::normalise_tag;
use crate::config::{EngineConfig, EngineMode};

/// The registry host of names that give none.
const DEFAULT_HOST: &str = "registry.ollama.ai";

/// Where an engine's server keeps its models.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Location {
    /// A directory on this machine.
    Dir(PathBuf),
    /// A Docker volume, out of kitt's sight.
    Volume(&'static str),
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Dir(dir) => write!(f, "{}", dir.display()),
            Location::Volume(name) => write!(f, "docker volume {name}"),
        }
    }
}

/// The store of the server `config` starts; `default_dir` is the native
/// store when `extra_args` names none (`OLLAMA_MODELS` or `~/.ollama/models`).
pub fn location(config: &EngineConfig, default_dir: &Path) -> Location {
    if config.mode == EngineMode::Docker {
        return Location::Volume(super::VOLUME);
    }
    let configured = config.extra_args.iter().rev().find_map(|arg| {
        let dir = arg.strip_prefix("OLLAMA_MODELS=")?;
        (!dir.is_empty()).then(|| PathBuf::from(dir))
    });
    Location::Dir(configured.unwrap_or_else(|| default_dir.to_owned()))
}

/// The native store of `config` with the default from the environment.
pub fn location_from_env(config: &EngineConfig) -> Location {
    location(config, &crate::acquire::local::ollama_models_dir())
}

/// Where the manifest of `tag` lives in the store at `dir`.
pub fn manifest_path(dir: &Path, tag: &str) -> PathBuf {
    let full = normalise_tag(tag);
    let (name, tag) = full.rsplit_once(':').unwrap_or((&full, "latest"));
    let parts: Vec<&str> = name.split('/').collect();
    let mut path = dir.join("manifests");
    match parts.as_slice() {
        [model] => path.extend([DEFAULT_HOST, "library", model]),
        [namespace, model] => path.extend([DEFAULT_HOST, namespace, model]),
        _ => path.extend(&parts),
    }
    path.join(tag)
}

/// Whether the store at `dir` has `tag` (its manifest, as written or in lower case).
pub fn has_tag(dir: &Path, tag: &str) -> bool {
    let path = manifest_path(dir, tag);
    path.is_file() || manifest_path(dir, &tag.to_ascii_lowercase()).is_file()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifests_follow_the_stores_layout() {
        let dir = Path::new("/s");
        let path = |tag| manifest_path(dir, tag).display().to_string();
        assert_eq!(path("llama3.2"), "/s/manifests/registry.ollama.ai/library/llama3.2/latest");
        assert_eq!(path("llama3.2:1b"), "/s/manifests/registry.ollama.ai/library/llama3.2/1b");
        assert_eq!(path("user/m:v1"), "/s/manifests/registry.ollama.ai/user/m/v1");
        assert_eq!(path("hf.co/org/Repo-GGUF:Q8_0"), "/s/manifests/hf.co/org/Repo-GGUF/Q8_0");
    }

    #[test]
    fn the_store_is_the_configs_then_the_default_and_a_volume_in_docker() {
        let mut config = EngineConfig::default();
        let default = Path::new("/home/u/.ollama/models");
        assert_eq!(location(&config, default), Location::Dir(default.to_owned()));
        config.extra_args = vec!["OLLAMA_MODELS=/big/ollama".into()];
        assert_eq!(location(&config, default), Location::Dir("/big/ollama".into()));
        config.mode = EngineMode::Docker;
        let volume = location(&config, default);
        assert_eq!(volume.to_string(), "docker volume kitt-ollama");
    }

    #[test]
    fn a_tag_is_present_when_its_manifest_is() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!has_tag(dir.path(), "llama3.2:1b"));
        let manifest = manifest_path(dir.path(), "llama3.2:1b");
        std::fs::create_dir_all(manifest.parent().unwrap()).unwrap();
        std::fs::write(&manifest, "{}").unwrap();
        assert!(has_tag(dir.path(), "llama3.2:1b"));
        assert!(!has_tag(dir.path(), "llama3.2"), "`latest` is another tag");
    }
}
