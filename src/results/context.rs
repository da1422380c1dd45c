//! The campaign a result came from, recorded with the result so that a
//! campaign can be rebuilt from result files alone (`kitt campaign create
//! --from-results`).
//!
//! The model and engine entries mirror the campaign file's keys, so the same
//! types serialise back into a campaign file. Credentials are never recorded:
//! no engine key carries one, and a `base_url`'s user and password are
//! dropped.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::config::{Campaign, DiskPolicy, EngineConfig, EngineMode, EngineSpec, GB, ModelSpec};
use crate::engine::EngineKind;

/// Where a campaign run came from: its campaign, run key, and the model and
/// engine entries as configured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CampaignContext {
    /// The campaign's id.
    pub campaign_id: String,
    /// Its `campaign_name`.
    pub campaign_name: String,
    /// `model|engine|quant`.
    pub run_key: String,
    /// The quant part of the run key (the planned variant).
    pub quant: String,
    /// The model entry as configured.
    pub model: ModelEntry,
    /// The engine entry as configured (a profile's values resolved).
    pub engine: EngineEntry,
    /// The format the engine loaded (`gguf`, `safetensors`, `ollama`), when it loaded one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// Where the model came from, as the plan says (`local:org/repo`, `hf:org/repo`, …).
    pub source: String,
    /// The campaign's `disk` settings.
    #[serde(default)]
    pub disk: DiskEntry,
}

/// One `models` entry, in the campaign file's keys.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelEntry {
    /// `name`.
    pub name: String,
    /// `params` as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<String>,
    /// `gguf_repo`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gguf_repo: Option<String>,
    /// `safetensors_repo`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub safetensors_repo: Option<String>,
    /// `ollama_tag`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ollama_tag: Option<String>,
    /// `estimated_size_gb`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimated_size_gb: Option<f64>,
    /// `quants`: engine name → variant labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quants: Option<BTreeMap<String, Vec<String>>>,
}

/// One `engines` entry, in the campaign file's keys.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EngineEntry {
    /// `name`.
    pub name: String,
    /// `suite`.
    pub suite: String,
    /// `formats` (absent for `openai`, which takes none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub formats: Option<Vec<String>>,
    /// `config`.
    #[serde(default, skip_serializing_if = "EngineConfigEntry::is_empty")]
    pub config: EngineConfigEntry,
}

/// An engine's `config` map, in the campaign file's keys.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EngineConfigEntry {
    /// `binary`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binary: Option<String>,
    /// `mode` (written only for `docker`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// `image`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// `gpus`, as text (`all`, `none`, a count, or `0,1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpus: Option<String>,
    /// `base_url`, without user or password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    /// `model`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// `context_size`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_size: Option<u32>,
    /// `gpu_layers`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_layers: Option<i32>,
    /// `parallel`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallel: Option<u32>,
    /// `threads`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threads: Option<u32>,
    /// `keep_alive`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_alive: Option<String>,
    /// `gpu_memory_utilization`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_memory_utilization: Option<f64>,
    /// `tensor_parallel_size`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tensor_parallel_size: Option<u32>,
    /// `tokenizer`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokenizer: Option<String>,
    /// `extra_args`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_args: Vec<String>,
}

impl EngineConfigEntry {
    /// Whether no key is set.
    pub fn is_empty(&self) -> bool {
        *self == EngineConfigEntry::default()
    }
}

/// The campaign's `disk` section.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DiskEntry {
    /// `reserve_gb`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reserve_gb: Option<f64>,
    /// `storage_path`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_path: Option<String>,
    /// `cleanup_after_run`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cleanup_after_run: Option<bool>,
    /// `prefetch`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefetch: Option<bool>,
}

impl CampaignContext {
    /// The context of one planned run of `campaign`.
    pub fn new(
        campaign: &Campaign,
        campaign_id: &str,
        planned: &crate::plan::PlannedRun,
        format: Option<crate::engine::Format>,
    ) -> CampaignContext {
        let model = campaign.models.iter().find(|model| model.name == planned.model);
        let engine = &campaign.engines[planned.engine_index];
        CampaignContext {
            campaign_id: campaign_id.to_owned(),
            campaign_name: campaign.name.clone(),
            run_key: planned.key.clone(),
            quant: planned.quant.clone(),
            model: model.map_or_else(
                || ModelEntry { name: planned.model.clone(), ..ModelEntry::default() },
                ModelEntry::from_spec,
            ),
            engine: EngineEntry::from_spec(engine),
            format: format.map(|format| format.name().to_owned()),
            source: planned.source.clone(),
            disk: DiskEntry::from_policy(&campaign.disk),
        }
    }
}

impl ModelEntry {
    /// The entry a validated model was read from.
    pub fn from_spec(spec: &ModelSpec) -> ModelEntry {
        let quants = spec.quants.as_ref().map(|quants| {
            quants.iter().map(|(kind, labels)| (kind.name().to_owned(), labels.clone())).collect()
        });
        ModelEntry {
            name: spec.name.clone(),
            params: Some(spec.params_text.clone()).filter(|text| !text.is_empty()),
            gguf_repo: spec.gguf_repo.clone(),
            safetensors_repo: spec.safetensors_repo.clone(),
            ollama_tag: spec.ollama_tag.clone(),
            estimated_size_gb: spec.estimated_size_bytes.map(gb),
            quants,
        }
    }
}

impl EngineEntry {
    /// The entry a validated engine was read from, a profile's values resolved.
    pub fn from_spec(spec: &EngineSpec) -> EngineEntry {
        let formats = (spec.kind != EngineKind::Openai)
            .then(|| spec.formats.iter().map(|format| format.name().to_owned()).collect());
        EngineEntry {
            name: spec.kind.name().to_owned(),
            suite: spec.suite.clone(),
            formats,
            config: EngineConfigEntry::from_config(&spec.config),
        }
    }
}

impl EngineConfigEntry {
    /// The keys a typed engine config came from.
    pub fn from_config(config: &EngineConfig) -> EngineConfigEntry {
        let docker = config.mode == EngineMode::Docker;
        EngineConfigEntry {
            binary: config.binary.as_ref().map(|path| path.display().to_string()),
            mode: docker.then(|| "docker".to_owned()),
            image: config.image.clone(),
            gpus: config.gpus.as_ref().map(ToString::to_string),
            base_url: config.base_url.as_deref().map(without_userinfo),
            model: config.model.clone(),
            context_size: config.context_size,
            gpu_layers: config.gpu_layers,
            parallel: config.parallel,
            threads: config.threads,
            keep_alive: config.keep_alive.clone(),
            gpu_memory_utilization: config.gpu_memory_utilization,
            tensor_parallel_size: config.tensor_parallel_size,
            tokenizer: config.tokenizer.clone(),
            extra_args: config.extra_args.clone(),
        }
    }
}

impl DiskEntry {
    /// The settings a validated `disk` section holds.
    pub fn from_policy(disk: &DiskPolicy) -> DiskEntry {
        DiskEntry {
            reserve_gb: Some(gb(disk.reserve_bytes)),
            storage_path: disk.storage_path.as_ref().map(|path| path.display().to_string()),
            cleanup_after_run: Some(disk.cleanup_after_run),
            prefetch: Some(disk.prefetch),
        }
    }
}

/// Bytes as the config's `_gb` unit, rounded to a millionth so the text reads well.
fn gb(bytes: u64) -> f64 {
    (bytes as f64 / GB * 1e6).round() / 1e6
}

/// A URL without its `user:password@`.
fn without_userinfo(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut parsed) if !parsed.username().is_empty() || parsed.password().is_some() => {
            let _ = parsed.set_username("");
            let _ = parsed.set_password(None);
            parsed.to_string()
        }
        _ => url.to_owned(),
    }
}
