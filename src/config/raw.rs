//! Raw campaign types: the YAML file exactly as written.
//!
//! Nothing here is validated beyond YAML types; `validate` turns these into the
//! typed [`super::Campaign`]. Every struct denies unknown keys, and fields whose
//! values are checked later carry their location (`Spanned`) so that a semantic
//! error can still name the line and column.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

/// The top level of a campaign file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCampaign {
    pub campaign_name: Spanned<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub models: Option<Spanned<Vec<RawModel>>>,
    #[serde(default)]
    pub engines: Option<Spanned<Vec<RawEngine>>>,
    #[serde(default)]
    pub disk: RawDisk,
    #[serde(default)]
    pub notifications: RawNotifications,
    #[serde(default)]
    pub quant_filter: RawQuantFilter,
    #[serde(default)]
    pub resource_limits: RawResourceLimits,
    #[serde(default)]
    pub parallel: bool,
    #[serde(default)]
    pub max_parallel: Option<Spanned<i64>>,
    #[serde(default)]
    pub devon_managed: bool,
    #[serde(default)]
    pub devon_url: Option<Spanned<String>>,
    #[serde(default)]
    pub devon_api_key: Option<Spanned<String>>,
    #[serde(default)]
    pub hf_token: Option<Spanned<String>>,
    #[serde(default = "yes")]
    pub skip_gated: bool,
    #[serde(default)]
    pub schedule: Option<Spanned<String>>,
    #[serde(default)]
    pub auto_compare: bool,
    #[serde(default)]
    pub regression_thresholds: Option<Spanned<RawThresholds>>,
    /// Accepted only to be rejected with guidance (the original ignored it).
    #[serde(default)]
    pub matching_rules: Option<Spanned<serde::de::IgnoredAny>>,
}

fn yes() -> bool {
    true
}

/// One entry of `models`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawModel {
    pub name: Spanned<String>,
    #[serde(default)]
    pub params: Option<Spanned<String>>,
    #[serde(default)]
    pub safetensors_repo: Option<Spanned<String>>,
    #[serde(default)]
    pub gguf_repo: Option<Spanned<String>>,
    #[serde(default)]
    pub ollama_tag: Option<Spanned<String>>,
    #[serde(default)]
    pub estimated_size_gb: Option<Spanned<f64>>,
    /// Engine name → the only variants this model runs on that engine.
    #[serde(default)]
    pub quants: Option<Spanned<BTreeMap<String, Spanned<Vec<String>>>>>,
}

/// One entry of `engines`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEngine {
    pub name: Spanned<String>,
    #[serde(default)]
    pub suite: Option<Spanned<String>>,
    #[serde(default)]
    pub formats: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    pub config: RawEngineConfig,
    #[serde(default)]
    pub quant_filter: Option<Spanned<RawEngineQuantFilter>>,
}

/// An engine's `config` map. Which keys an engine honours is checked in
/// `validate`; keys no engine knows are rejected here.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEngineConfig {
    pub binary: Option<Spanned<String>>,
    pub mode: Option<Spanned<String>>,
    pub image: Option<Spanned<String>>,
    pub gpus: Option<Spanned<RawGpus>>,
    pub base_url: Option<Spanned<String>>,
    pub model: Option<Spanned<String>>,
    pub context_size: Option<Spanned<i64>>,
    pub gpu_layers: Option<Spanned<i64>>,
    pub parallel: Option<Spanned<i64>>,
    pub threads: Option<Spanned<i64>>,
    pub keep_alive: Option<Spanned<String>>,
    pub gpu_memory_utilization: Option<Spanned<f64>>,
    pub tensor_parallel_size: Option<Spanned<i64>>,
    pub tokenizer: Option<Spanned<String>>,
    #[serde(default)]
    pub extra_args: Vec<String>,
    pub profile: Option<Spanned<String>>,
}

/// `regression_thresholds`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawThresholds {
    pub throughput_pct: Option<Spanned<f64>>,
    pub latency_pct: Option<Spanned<f64>>,
}

/// `disk`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDisk {
    pub reserve_gb: Option<Spanned<f64>>,
    pub storage_path: Option<Spanned<String>>,
    pub cleanup_after_run: Option<bool>,
    pub prefetch: Option<bool>,
}

/// `notifications`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNotifications {
    pub webhook_url: Option<Spanned<String>>,
    pub email: Option<Spanned<String>>,
    pub smtp_host: Option<Spanned<String>>,
    pub smtp_port: Option<Spanned<i64>>,
    pub smtp_user: Option<String>,
    pub smtp_password: Option<Spanned<String>>,
    pub desktop: Option<bool>,
    pub on_complete: Option<Spanned<bool>>,
    pub on_failure: Option<Spanned<bool>>,
    pub notify_on: Option<Spanned<Vec<Spanned<String>>>>,
}

/// `quant_filter` at the top level.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawQuantFilter {
    #[serde(default)]
    pub skip_patterns: Vec<Spanned<String>>,
    #[serde(default)]
    pub include_only: Vec<Spanned<String>>,
}

/// `resource_limits`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawResourceLimits {
    pub max_model_size_gb: Option<Spanned<f64>>,
}

/// An engine's own `quant_filter`: the original documentation wrote it as one
/// quant name (`quant_filter: "Q4_K_M"`); kitt also takes a list of names or the
/// same mapping as the top-level filter.
#[derive(Debug, Default)]
pub struct RawEngineQuantFilter {
    pub skip_patterns: Vec<String>,
    pub include_only: Vec<String>,
}

impl<'de> Deserialize<'de> for RawEngineQuantFilter {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(EngineQuantFilterVisitor)
    }
}

struct EngineQuantFilterVisitor;

impl<'de> Visitor<'de> for EngineQuantFilterVisitor {
    type Value = RawEngineQuantFilter;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a quant pattern, a list of patterns, or `skip_patterns`/`include_only`")
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<Self::Value, E> {
        Ok(RawEngineQuantFilter { include_only: vec![value.to_owned()], ..Default::default() })
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut include_only = Vec::new();
        while let Some(pattern) = seq.next_element::<String>()? {
            include_only.push(pattern);
        }
        Ok(RawEngineQuantFilter { include_only, ..Default::default() })
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut filter = RawEngineQuantFilter::default();
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "skip_patterns" => filter.skip_patterns = map.next_value()?,
                "include_only" => filter.include_only = map.next_value()?,
                other => {
                    return Err(de::Error::unknown_field(
                        other,
                        &["skip_patterns", "include_only"],
                    ));
                }
            }
        }
        Ok(filter)
    }
}

/// An engine's `gpus`: a count, a word (`all`, `none`) or device list as
/// text, or a list of device indexes or UUIDs.
#[derive(Debug)]
pub enum RawGpus {
    Count(i64),
    Text(String),
    List(Vec<String>),
}

impl<'de> Deserialize<'de> for RawGpus {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(GpusVisitor)
    }
}

struct GpusVisitor;

impl<'de> Visitor<'de> for GpusVisitor {
    type Value = RawGpus;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("`all`, `none`, a number of GPUs, or a list of GPU indexes or UUIDs")
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<Self::Value, E> {
        Ok(RawGpus::Count(value))
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<Self::Value, E> {
        Ok(RawGpus::Count(i64::try_from(value).unwrap_or(i64::MAX)))
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<Self::Value, E> {
        Ok(RawGpus::Text(value.to_owned()))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut devices = Vec::new();
        while let Some(device) = seq.next_element::<DeviceId>()? {
            devices.push(device.0);
        }
        Ok(RawGpus::List(devices))
    }
}

/// One entry of a `gpus` list: an index (a YAML number) or a UUID.
struct DeviceId(String);

impl<'de> Deserialize<'de> for DeviceId {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(DeviceIdVisitor)
    }
}

struct DeviceIdVisitor;

impl<'de> Visitor<'de> for DeviceIdVisitor {
    type Value = DeviceId;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a GPU index or UUID")
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<Self::Value, E> {
        Ok(DeviceId(value.to_string()))
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<Self::Value, E> {
        Ok(DeviceId(value.to_string()))
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<Self::Value, E> {
        Ok(DeviceId(value.to_owned()))
    }
}

/// Keys that live in one section but are often written in another; used to
/// point a user at the right place (`storage_path` → `disk.storage_path`).
pub const KEYS_ELSEWHERE: &[(&str, &str)] = &[
    ("reserve_gb", "disk.reserve_gb"),
    ("storage_path", "disk.storage_path"),
    ("cleanup_after_run", "disk.cleanup_after_run"),
    ("max_model_size_gb", "resource_limits.max_model_size_gb"),
    ("skip_patterns", "quant_filter.skip_patterns"),
    ("include_only", "quant_filter.include_only"),
    ("webhook_url", "notifications.webhook_url"),
    ("email", "notifications.email"),
    ("desktop", "notifications.desktop"),
    ("suite", "engines[].suite"),
    ("formats", "engines[].formats"),
    ("gguf_repo", "models[].gguf_repo"),
    ("ollama_tag", "models[].ollama_tag"),
    ("safetensors_repo", "models[].safetensors_repo"),
    ("context_size", "engines[].config.context_size"),
    ("threads", "engines[].config.threads"),
    ("keep_alive", "engines[].config.keep_alive"),
    ("name", "campaign_name"),
];
