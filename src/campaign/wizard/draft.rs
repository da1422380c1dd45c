//! The campaign the wizard is building, as the YAML it will write.
//!
//! The draft mirrors the campaign file's keys and is serialized with serde, so
//! quoting is never hand-made. Every answer is checked by serializing the
//! draft with the answer in it and loading that text with the real config
//! loader ([`crate::config::parse`]): the wizard has no validation rules of its
//! own, only the loader's problems for the field it is asking about.

use std::path::Path;

use serde::Serialize;

use crate::config::{self, Campaign, ConfigError, Problem};

/// The whole campaign file.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Draft {
    /// `campaign_name`.
    pub campaign_name: String,
    /// `description`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// `models`.
    pub models: Vec<DraftModel>,
    /// `engines`.
    pub engines: Vec<DraftEngine>,
    /// `quant_filter`.
    #[serde(skip_serializing_if = "DraftQuantFilter::is_empty")]
    pub quant_filter: DraftQuantFilter,
    /// `resource_limits`.
    #[serde(skip_serializing_if = "DraftLimits::is_empty")]
    pub resource_limits: DraftLimits,
    /// `disk`.
    pub disk: DraftDisk,
    /// `notifications`.
    pub notifications: DraftNotifications,
}

/// One entry of `models`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DraftModel {
    /// `name`.
    pub name: String,
    /// `params`, as written (`8B`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub params: Option<String>,
    /// `safetensors_repo`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub safetensors_repo: Option<String>,
    /// `gguf_repo`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gguf_repo: Option<String>,
    /// `ollama_tag`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ollama_tag: Option<String>,
}

/// One entry of `engines`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DraftEngine {
    /// `name`.
    pub name: String,
    /// `suite`.
    pub suite: String,
    /// `formats`; empty means the engine's defaults (and is left out).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub formats: Vec<String>,
    /// `config` (only `base_url`, for `openai`).
    #[serde(skip_serializing_if = "DraftEngineConfig::is_empty")]
    pub config: DraftEngineConfig,
}

/// An engine's `config`: the wizard asks only what an engine cannot do without.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DraftEngineConfig {
    /// `base_url` of a running OpenAI-compatible server.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
}

impl DraftEngineConfig {
    fn is_empty(&self) -> bool {
        self.base_url.is_none()
    }
}

/// `quant_filter`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DraftQuantFilter {
    /// `skip_patterns`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub skip_patterns: Vec<String>,
    /// `include_only`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub include_only: Vec<String>,
}

impl DraftQuantFilter {
    fn is_empty(&self) -> bool {
        self.skip_patterns.is_empty() && self.include_only.is_empty()
    }
}

/// `resource_limits`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DraftLimits {
    /// `max_model_size_gb`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_model_size_gb: Option<f64>,
}

impl DraftLimits {
    fn is_empty(&self) -> bool {
        self.max_model_size_gb.is_none()
    }
}

/// `disk`.
#[derive(Debug, Clone, Serialize)]
pub struct DraftDisk {
    /// `reserve_gb`.
    pub reserve_gb: f64,
    /// `storage_path`; left out when it is the root kitt would use anyway.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage_path: Option<String>,
    /// `cleanup_after_run`.
    pub cleanup_after_run: bool,
}

impl Default for DraftDisk {
    fn default() -> Self {
        DraftDisk { reserve_gb: 100.0, storage_path: None, cleanup_after_run: true }
    }
}

/// `notifications`.
#[derive(Debug, Clone, Serialize)]
pub struct DraftNotifications {
    /// `desktop`.
    pub desktop: bool,
    /// `on_complete`.
    pub on_complete: bool,
    /// `on_failure`.
    pub on_failure: bool,
    /// `webhook_url`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook_url: Option<String>,
    /// `email`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// `smtp_host`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub smtp_host: Option<String>,
    /// `smtp_port`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub smtp_port: Option<i64>,
    /// `smtp_user`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub smtp_user: Option<String>,
}

impl Default for DraftNotifications {
    fn default() -> Self {
        DraftNotifications {
            desktop: false,
            on_complete: true,
            on_failure: true,
            webhook_url: None,
            email: None,
            smtp_host: None,
            smtp_port: None,
            smtp_user: None,
        }
    }
}

impl Draft {
    /// The campaign file's text.
    pub fn to_yaml(&self) -> Result<String, String> {
        serde_saphyr::to_string(self).map_err(|error| format!("cannot write the YAML: {error}"))
    }

    /// Loads the draft's YAML with the real config loader, as `campaign run`
    /// would load the saved file; `path` names the file in messages.
    pub fn load(&self, path: &Path) -> Result<(String, Campaign), String> {
        let text = self.to_yaml()?;
        let campaign = config::parse(&text, path).map_err(|error| error.to_string())?;
        Ok((text, campaign))
    }

    /// What the loader says about `field` (and the keys below it) in this
    /// draft, one line per problem with its hint; empty when the field is fine.
    /// Problems of other fields, such as sections not asked yet, are ignored.
    pub fn problems_at(&self, field: &str) -> Vec<String> {
        let text = match self.to_yaml() {
            Ok(text) => text,
            Err(error) => return vec![error],
        };
        let Err(ConfigError::Invalid { problems, .. }) = config::parse(&text, Path::new("wizard"))
        else {
            return Vec::new();
        };
        problems.iter().filter(|problem| concerns(problem, field)).map(describe).collect()
    }
}

/// Whether a problem is about `field` or a key inside it.
fn concerns(problem: &Problem, field: &str) -> bool {
    match problem.field.strip_prefix(field) {
        Some(rest) => rest.is_empty() || rest.starts_with('.') || rest.starts_with('['),
        None => false,
    }
}

fn describe(problem: &Problem) -> String {
    match &problem.help {
        Some(help) => format!("{} ({help})", problem.message),
        None => problem.message.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draft() -> Draft {
        Draft {
            campaign_name: "wizard-test".into(),
            models: vec![DraftModel {
                name: "Tiny".into(),
                params: Some("1B".into()),
                gguf_repo: Some("org/Tiny-GGUF".into()),
                ..Default::default()
            }],
            engines: vec![DraftEngine {
                name: "llama_cpp".into(),
                suite: "quick".into(),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn a_complete_draft_loads() {
        let (text, campaign) = draft().load(Path::new("x.yaml")).expect("valid");
        assert_eq!(campaign.models[0].gguf_repo.as_deref(), Some("org/Tiny-GGUF"));
        assert_eq!(campaign.engines[0].suite, "quick");
        assert!(text.contains("campaign_name: wizard-test"), "{text}");
    }

    #[test]
    fn values_yaml_would_misread_are_quoted() {
        let mut draft = draft();
        draft.campaign_name = "yes".into();
        draft.description = "a: b # not a comment".into();
        draft.models[0].name = "1.0".into();
        draft.models[0].ollama_tag = Some("llama3.1:8b".into());
        draft.quant_filter.skip_patterns = vec!["*".into(), "IQ1_*".into()];
        let (_, campaign) = draft.load(Path::new("x.yaml")).expect("valid");
        assert_eq!(campaign.name, "yes");
        assert_eq!(campaign.description, "a: b # not a comment");
        assert_eq!(campaign.models[0].name, "1.0");
        assert_eq!(campaign.models[0].ollama_tag.as_deref(), Some("llama3.1:8b"));
        assert_eq!(campaign.quant_filter.skip.len(), 2);
    }

    #[test]
    fn problems_are_those_of_the_field_asked() {
        let mut draft = draft();
        draft.engines.clear();
        draft.models[0].gguf_repo = Some("not a repo".into());
        let problems = draft.problems_at("models[0].gguf_repo");
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("is not a repository id"), "{problems:?}");
        assert!(draft.problems_at("models[0].name").is_empty());
        assert!(draft.problems_at("models[0].params").is_empty());
        assert!(!draft.problems_at("engines").is_empty());
    }

    #[test]
    fn a_model_without_a_source_is_a_problem_of_its_name() {
        let mut draft = draft();
        draft.models[0].gguf_repo = None;
        let problems = draft.problems_at("models[0]");
        assert!(problems.iter().any(|p| p.contains("names no source")), "{problems:?}");
    }
}
