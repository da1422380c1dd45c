//! Named engine profiles (`configs/engines/*.yaml`): reusable sets of engine
//! parameters, selected with `profile: NAME` in an engine's `config` or
//! `--engine-config profile=NAME`. Keys given explicitly beside the profile
//! win over the profile's. The shipped profiles are embedded; a file of the
//! same name in `<kitt home>/engines/` overrides one.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::EngineKind;
use crate::config::EngineConfig;

const SHIPPED: &[(&str, &str)] = &[
    ("llama_cpp-cpu", include_str!("../../configs/engines/llama_cpp-cpu.yaml")),
    ("llama_cpp-gpu", include_str!("../../configs/engines/llama_cpp-gpu.yaml")),
    ("llama_cpp-long-context", include_str!("../../configs/engines/llama_cpp-long-context.yaml")),
];

/// Why a profile cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// No profile by that name.
    #[error("unknown engine profile `{name}`; known: {known}")]
    Unknown {
        /// The name asked for.
        name: String,
        /// The shipped profiles.
        known: String,
    },
    /// The file could not be read.
    #[error("cannot read engine profile `{}`", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a valid profile.
    #[error("invalid engine profile `{name}`: {message}")]
    Invalid {
        /// Its name.
        name: String,
        /// What is wrong.
        message: String,
    },
    /// The profile is for another engine.
    #[error("engine profile `{name}` is for `{profile_engine}`, not `{engine}`")]
    WrongEngine {
        /// Its name.
        name: String,
        /// The engine it is for.
        profile_engine: String,
        /// The engine it was applied to.
        engine: EngineKind,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProfile {
    name: String,
    engine: String,
    #[serde(default)]
    description: String,
    config: ProfileConfig,
}

/// The parameters a profile sets.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileConfig {
    binary: Option<String>,
    context_size: Option<u32>,
    gpu_layers: Option<i32>,
    parallel: Option<u32>,
    threads: Option<u32>,
    gpu_memory_utilization: Option<f64>,
    tensor_parallel_size: Option<u32>,
    #[serde(default)]
    extra_args: Vec<String>,
}

/// A loaded profile.
#[derive(Debug, Clone)]
pub struct Profile {
    /// Its name.
    pub name: String,
    /// The engine it is for.
    pub engine: EngineKind,
    /// One line on what it is for.
    pub description: String,
    config: ProfileConfig,
}

impl Profile {
    /// Fills the parameters `config` does not set from the profile.
    pub fn apply(&self, config: &mut EngineConfig) {
        let own = &self.config;
        if config.binary.is_none() {
            config.binary = own.binary.as_deref().map(crate::config::expand_home);
        }
        config.context_size = config.context_size.or(own.context_size);
        config.gpu_layers = config.gpu_layers.or(own.gpu_layers);
        config.parallel = config.parallel.or(own.parallel);
        config.threads = config.threads.or(own.threads);
        config.gpu_memory_utilization =
            config.gpu_memory_utilization.or(own.gpu_memory_utilization);
        config.tensor_parallel_size = config.tensor_parallel_size.or(own.tensor_parallel_size);
        let mut args = own.extra_args.clone();
        args.append(&mut config.extra_args);
        config.extra_args = args;
    }
}

/// Loads profile `name` for `engine` (home override first, then shipped).
pub fn load(name: &str, engine: EngineKind, home: Option<&Path>) -> Result<Profile, ProfileError> {
    let text = match home.map(|home| home.join("engines").join(format!("{name}.yaml"))) {
        Some(path) if path.is_file() => {
            std::fs::read_to_string(&path).map_err(|source| ProfileError::Read { path, source })?
        }
        _ => SHIPPED
            .iter()
            .find(|(shipped, _)| *shipped == name)
            .map(|(_, text)| (*text).to_owned())
            .ok_or_else(|| ProfileError::Unknown {
                name: name.to_owned(),
                known: names().join(", "),
            })?,
    };
    let raw: RawProfile = serde_saphyr::from_str(&text).map_err(|error| ProfileError::Invalid {
        name: name.to_owned(),
        message: error.without_snippet().to_string(),
    })?;
    let share = raw.config.gpu_memory_utilization;
    if share.is_some_and(|share| !crate::config::engine_limits::gpu_memory_utilization(share)) {
        return Err(ProfileError::Invalid {
            name: name.to_owned(),
            message: "`gpu_memory_utilization` must be above 0 and at most 1".to_owned(),
        });
    }
    let kind = EngineKind::parse(&raw.engine).ok_or_else(|| ProfileError::Invalid {
        name: name.to_owned(),
        message: format!("unknown engine `{}`", raw.engine),
    })?;
    if kind != engine {
        return Err(ProfileError::WrongEngine {
            name: name.to_owned(),
            profile_engine: raw.engine,
            engine,
        });
    }
    Ok(Profile { name: raw.name, engine: kind, description: raw.description, config: raw.config })
}

/// The shipped profile names.
pub fn names() -> Vec<&'static str> {
    SHIPPED.iter().map(|(name, _)| *name).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shipped_profile_loads_for_its_engine() {
        for name in names() {
            let profile = load(name, EngineKind::LlamaCpp, None).unwrap();
            assert_eq!(profile.name, name);
        }
    }

    #[test]
    fn explicit_parameters_win_over_the_profile() {
        let profile = load("llama_cpp-long-context", EngineKind::LlamaCpp, None).unwrap();
        let mut config = EngineConfig { gpu_layers: Some(0), ..EngineConfig::default() };
        profile.apply(&mut config);
        assert_eq!((config.gpu_layers, config.context_size), (Some(0), Some(32768)));
    }

    #[test]
    fn unknown_and_mismatched_profiles_are_errors() {
        let unknown = load("fast", EngineKind::LlamaCpp, None).unwrap_err();
        assert!(unknown.to_string().contains("known: llama_cpp-cpu"), "{unknown}");
        let wrong = load("llama_cpp-cpu", EngineKind::Vllm, None).unwrap_err();
        assert!(matches!(wrong, ProfileError::WrongEngine { .. }), "{wrong}");
    }

    #[test]
    fn a_profile_in_the_home_overrides_the_shipped_one() {
        let home = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(home.path().join("engines")).unwrap();
        let text = "name: llama_cpp-cpu\nengine: llama_cpp\nconfig:\n  threads: 3\n";
        std::fs::write(home.path().join("engines/llama_cpp-cpu.yaml"), text).unwrap();
        let profile = load("llama_cpp-cpu", EngineKind::LlamaCpp, Some(home.path())).unwrap();
        let mut config = EngineConfig::default();
        profile.apply(&mut config);
        assert_eq!((config.threads, config.gpu_layers), (Some(3), None));
    }
}
