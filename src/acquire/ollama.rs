//! Ollama sources: the tags a model has in the Ollama library, and the
//! registry manifest of one `model:tag` (its byte size and the config digest
//! that identifies aliases).
//!
//! The library offers no tag API, so tags come from its HTML tags page; only
//! `href` attributes pointing at `/{namespace}/{model}:{tag}` are read, and a
//! page without any is an error rather than an empty list, so a change of the
//! page's format is reported instead of silently planning nothing. Which
//! tags a campaign keeps is decided by the planner, not here. `KITT_OFFLINE`
//! turns every request into [`OllamaError::Offline`].

use std::sync::Arc;

use regex::Regex;
use reqwest::header::ACCEPT;
use reqwest::{RequestBuilder, Response, StatusCode};
use serde::Deserialize;

use super::http::{self, FetchOnce, RetryPolicy};

/// The public Ollama website, whose library pages list tags.
pub const DEFAULT_LIBRARY_URL: &str = "https://ollama.com";

/// The public Ollama registry, which serves manifests.
pub const DEFAULT_REGISTRY_URL: &str = "https://registry.ollama.ai";

/// The manifest format the registry is asked for.
const MANIFEST_MEDIA_TYPE: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// The media type of the layer holding the model weights.
const MODEL_LAYER_MEDIA_TYPE: &str = "application/vnd.ollama.image.model";

/// Client for the Ollama library and registry, with a per-command cache.
#[derive(Debug)]
pub struct OllamaClient {
    library: String,
    registry: String,
    offline: bool,
    client: reqwest::Client,
    policy: RetryPolicy,
    tags: FetchOnce<Result<Arc<Vec<String>>, OllamaError>>,
    manifests: FetchOnce<Result<OllamaManifest, OllamaError>>,
}

/// What the registry says about one `model:tag`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OllamaManifest {
    /// Sum of all layer sizes: what a pull downloads.
    pub total_size: u64,
    /// Size of the model weights layer(s), when the manifest has one.
    pub model_size: Option<u64>,
    /// Digest of the config blob; tags sharing it are aliases of one model.
    pub config_digest: String,
}

/// Why a tag list or a manifest could not be fetched.
#[derive(Debug, Clone, thiserror::Error)]
pub enum OllamaError {
    /// A base URL setting is not an http(s) URL.
    #[error("`{var}` must be an http(s) URL without query or credentials, got `{value}`")]
    InvalidEndpoint { var: String, value: String },
    /// The HTTP client could not be set up.
    #[error("cannot set up the HTTP client for Ollama")]
    Client {
        #[source]
        source: Arc<reqwest::Error>,
    },
    /// The model or tag name is malformed; nothing was sent.
    #[error("invalid Ollama model `{value}`: {reason}")]
    InvalidTag { value: String, reason: String },
    /// Offline mode is on; nothing was sent.
    #[error("cannot look up Ollama model `{name}`: offline mode is on (`KITT_OFFLINE`)")]
    Offline { name: String },
    /// The library or registry does not know the model or tag.
    #[error("Ollama model `{name}` not found")]
    NotFound { name: String },
    /// Any other unexpected HTTP status, after retries.
    #[error("Ollama answered HTTP {status} for `{name}`")]
    Status { name: String, status: u16 },
    /// The library or registry could not be reached.
    #[error("cannot reach Ollama while looking up `{name}`")]
    Network {
        name: String,
        #[source]
        source: Arc<reqwest::Error>,
    },
    /// The answer could not be read.
    #[error("unexpected answer from Ollama for `{name}`: {detail}")]
    BadResponse { name: String, detail: String },
}

impl OllamaClient {
    /// Library from `KITT_OLLAMA_LIBRARY_URL` (default the public Ollama website), registry
    /// from `KITT_OLLAMA_REGISTRY_URL` (default the public registry); `KITT_OFFLINE` (`1`,
    /// `true`, `yes`, `on`) means offline.
    pub fn from_env() -> Result<Self, OllamaError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// A client for the given library and registry base URLs, online.
    pub fn with_endpoints(library: &str, registry: &str) -> Result<Self, OllamaError> {
        let library = endpoint("KITT_OLLAMA_LIBRARY_URL", library)?;
        let registry = endpoint("KITT_OLLAMA_REGISTRY_URL", registry)?;
        let client = http::client_builder()
            .build()
            .map_err(|source| OllamaError::Client { source: Arc::new(source) })?;
        Ok(Self {
            library,
            registry,
            offline: false,
            client,
            policy: RetryPolicy::default(),
            tags: FetchOnce::default(),
            manifests: FetchOnce::default(),
        })
    }

    /// Same as [`OllamaClient::from_env`], reading variables through `lookup`.
    fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, OllamaError> {
        let setting = |name: &str, default: &str| {
            lookup(name).filter(|value| !value.trim().is_empty()).unwrap_or(default.to_owned())
        };
        let library = setting("KITT_OLLAMA_LIBRARY_URL", DEFAULT_LIBRARY_URL);
        let registry = setting("KITT_OLLAMA_REGISTRY_URL", DEFAULT_REGISTRY_URL);
        let offline = lookup("KITT_OFFLINE").is_some_and(|value| http::is_truthy(&value));
        Ok(Self::with_endpoints(&library, &registry)?.with_offline(offline))
    }

    /// Turns offline mode on or off.
    pub fn with_offline(mut self, offline: bool) -> Self {
        self.offline = offline;
        self
    }

    /// Replaces the retry policy (tests use short waits).
    pub fn with_retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Whether offline mode is on.
    pub fn is_offline(&self) -> bool {
        self.offline
    }

    /// The library's base URL, without a trailing `/`.
    pub fn library_url(&self) -> &str {
        &self.library
    }

    /// The registry's base URL, without a trailing `/`.
    pub fn registry_url(&self) -> &str {
        &self.registry
    }

    /// Every tag of `model` (`llama3.1` or `user/model`) listed on the library's tags page,
    /// de-duplicated, in page order. Cached, errors included.
    pub async fn tags(&self, model: &str) -> Result<Vec<String>, OllamaError> {
        validate_model(model, model)?;
        if self.offline {
            return Err(OllamaError::Offline { name: model.to_owned() });
        }
        let tags =
            self.tags.get_or_fetch(model, || async { self.fetch_tags(model).await.map(Arc::new) });
        tags.await.map(|tags| tags.to_vec())
    }

    /// The registry manifest of `model:tag`. Cached, errors included.
    pub async fn manifest(&self, model: &str, tag: &str) -> Result<OllamaManifest, OllamaError> {
        let name = format!("{model}:{tag}");
        validate_model(model, &name)?;
        validate_tag(tag, &name)?;
        if self.offline {
            return Err(OllamaError::Offline { name });
        }
        let model_path = path(model);
        let fetch = || self.fetch_manifest(&model_path, tag, &name);
        self.manifests.get_or_fetch(&name, fetch).await
    }

    /// Downloads and scrapes the tags page.
    async fn fetch_tags(&self, model: &str) -> Result<Vec<String>, OllamaError> {
        let model_path = path(model);
        let url = format!("{}/{model_path}/tags", self.library);
        let response = self.send(model, || self.client.get(&url)).await?;
        let page = classify(model, response)?
            .text()
            .await
            .map_err(|error| bad(model, format!("tags page: {error}")))?;

        let tags = tags_in_page(&page, &model_path);
        if tags.is_empty() {
            let detail = format!(
                "the tags page `{url}` links no `/{model_path}:<tag>`; its format may have changed"
            );
            return Err(bad(model, detail));
        }
        Ok(tags)
    }

    /// Downloads a manifest and sums its layers.
    async fn fetch_manifest(
        &self,
        model_path: &str,
        tag: &str,
        name: &str,
    ) -> Result<OllamaManifest, OllamaError> {
        let url = format!("{}/v2/{model_path}/manifests/{tag}", self.registry);
        let request = || self.client.get(&url).header(ACCEPT, MANIFEST_MEDIA_TYPE);
        let response = self.send(name, request).await?;
        let manifest: Manifest = classify(name, response)?
            .json()
            .await
            .map_err(|error| bad(name, format!("manifest: {error}")))?;

        if manifest.schema_version != 2 {
            let detail = format!("manifest schema version {} is not 2", manifest.schema_version);
            return Err(bad(name, detail));
        }
        let total_size =
            manifest.layers.iter().fold(0u64, |sum, layer| sum.saturating_add(layer.size));
        let model_layers: Vec<u64> = manifest
            .layers
            .iter()
            .filter(|layer| layer.media_type == MODEL_LAYER_MEDIA_TYPE)
            .map(|layer| layer.size)
            .collect();
        let model_size = (!model_layers.is_empty())
            .then(|| model_layers.iter().fold(0u64, |sum, size| sum.saturating_add(*size)));
        Ok(OllamaManifest { total_size, model_size, config_digest: manifest.config.digest })
    }

    /// Sends one request with the retry policy.
    async fn send(
        &self,
        name: &str,
        build: impl Fn() -> RequestBuilder,
    ) -> Result<Response, OllamaError> {
        http::send_with_retry(build, &self.policy).await.map_err(|source| OllamaError::Network {
            name: name.to_owned(),
            source: Arc::new(source),
        })
    }
}

/// A registry manifest, as much as kitt reads of it.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Manifest {
    schema_version: u32,
    config: Descriptor,
    layers: Vec<Descriptor>,
}

/// A blob reference inside a manifest.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    #[serde(default)]
    media_type: String,
    digest: String,
    size: u64,
}

/// Passes a 2xx response through and turns any other status into an error.
fn classify(name: &str, response: Response) -> Result<Response, OllamaError> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let name = name.to_owned();
    match status {
        StatusCode::NOT_FOUND => Err(OllamaError::NotFound { name }),
        _ => Err(OllamaError::Status { name, status: status.as_u16() }),
    }
}

/// The tags linked as `/{model_path}:{tag}` in `page`, de-duplicated, in order.
fn tags_in_page(page: &str, model_path: &str) -> Vec<String> {
    // The closing quote anchors the tag, so deeper links (`...:8b/blobs/...`) and
    // longer model names (`llama3.10`) never count.
    let pattern = format!(
        r#"href\s*=\s*["']/{}:([A-Za-z0-9_][A-Za-z0-9_.\-]{{0,127}})["']"#,
        regex::escape(model_path)
    );
    let Ok(links) = Regex::new(&pattern) else {
        return Vec::new();
    };
    let mut tags: Vec<String> = Vec::new();
    for capture in links.captures_iter(page) {
        let tag = &capture[1];
        if !tags.iter().any(|seen| seen == tag) {
            tags.push(tag.to_owned());
        }
    }
    tags
}

/// The URL path of a model: `library/{model}` for official models, `{user}/{model}` else.
fn path(model: &str) -> String {
    if model.contains('/') { model.to_owned() } else { format!("library/{model}") }
}

/// A [`OllamaError::BadResponse`] for `name`.
fn bad(name: &str, detail: String) -> OllamaError {
    OllamaError::BadResponse { name: name.to_owned(), detail }
}

/// Validates and normalises one base URL setting.
fn endpoint(var: &str, value: &str) -> Result<String, OllamaError> {
    http::base_url(value).ok_or_else(|| OllamaError::InvalidEndpoint {
        var: var.to_owned(),
        value: http::redact_userinfo(value),
    })
}

/// Splits `name[:tag]` into `(model, tag)`, the tag defaulting to `latest`, after checking
/// the syntax: an optional lower-case `namespace/`, a lower-case model name, a tag of
/// letters, digits, `_`, `.` and `-`.
pub fn split_tag(full: &str) -> Result<(String, String), OllamaError> {
    let (model, tag) = match full.split_once(':') {
        Some((model, tag)) => (model, tag),
        None => (full, "latest"),
    };
    validate_model(model, full)?;
    validate_tag(tag, full)?;
    Ok((model.to_owned(), tag.to_owned()))
}

/// Checks `model` (`name` or `namespace/name`); errors name the whole value `full`.
fn validate_model(model: &str, full: &str) -> Result<(), OllamaError> {
    let invalid = |reason: &str| OllamaError::InvalidTag {
        value: full.to_owned(),
        reason: reason.to_owned(),
    };
    let parts: Vec<&str> = model.split('/').collect();
    if parts.len() > 2 {
        return Err(invalid("expected `model`, `model:tag` or `namespace/model:tag`"));
    }
    for part in parts {
        let Some(first) = part.bytes().next() else {
            return Err(invalid("the model name and namespace must not be empty"));
        };
        let allowed = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b);
        if !part.bytes().all(allowed) {
            return Err(invalid(
                "model names and namespaces use lower-case letters, digits, `.`, `_` and `-`",
            ));
        }
        if !first.is_ascii_alphanumeric() {
            return Err(invalid("a model name or namespace starts with a letter or digit"));
        }
    }
    Ok(())
}

/// Checks a tag; errors name the whole value `full`.
fn validate_tag(tag: &str, full: &str) -> Result<(), OllamaError> {
    let invalid = |reason: &str| OllamaError::InvalidTag {
        value: full.to_owned(),
        reason: reason.to_owned(),
    };
    let Some(first) = tag.bytes().next() else {
        return Err(invalid("the tag after `:` is empty"));
    };
    if tag.len() > 128 {
        return Err(invalid("the tag is longer than 128 characters"));
    }
    if !(first.is_ascii_alphanumeric() || first == b'_') {
        return Err(invalid("a tag starts with a letter, digit or `_`"));
    }
    if !tag.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)) {
        return Err(invalid("tags use letters, digits, `.`, `_` and `-`"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_tag_defaults_to_latest() {
        let split = |full| split_tag(full).expect("valid tag");
        assert_eq!(split("llama3.1"), ("llama3.1".into(), "latest".into()));
        assert_eq!(split("llama3.1:8b"), ("llama3.1".into(), "8b".into()));
        assert_eq!(
            split("qwen2.5:7b-instruct-q4_K_M"),
            ("qwen2.5".into(), "7b-instruct-q4_K_M".into())
        );
        assert_eq!(split("user/model:v1"), ("user/model".into(), "v1".into()));
    }

    #[test]
    fn split_tag_rejects_bad_syntax_naming_the_value() {
        for bad in ["", "Llama3", "llama3.1:", "a:b:c", "hf.co/x/y:q4", "llama 3", ":8b", "m:-x"] {
            let error = split_tag(bad).expect_err(bad);
            assert!(error.to_string().contains(&format!("`{bad}`")), "{error}");
        }
    }

    #[test]
    fn env_defaults_and_overrides() {
        let client = OllamaClient::from_lookup(|_| None).expect("default client");
        assert_eq!(client.library_url(), DEFAULT_LIBRARY_URL);
        assert_eq!(client.registry_url(), DEFAULT_REGISTRY_URL);
        assert!(!client.is_offline());

        let client = OllamaClient::from_lookup(|name| match name {
            "KITT_OLLAMA_LIBRARY_URL" => Some("http://127.0.0.1:1/".into()),
            "KITT_OFFLINE" => Some("1".into()),
            _ => None,
        })
        .expect("client");
        assert_eq!(client.library_url(), "http://127.0.0.1:1");
        assert!(client.is_offline());
    }

    #[test]
    fn tags_page_links_are_anchored() {
        let page = r#"<a href="/library/llama3.1:8b">x</a><a href='/library/llama3.1:8b'>
            <a href="/library/llama3.10:1b"><a href="/library/llama3.1:70b/blobs/abc">
            <a href="/library/llama3.1:latest">"#;
        assert_eq!(tags_in_page(page, "library/llama3.1"), ["8b", "latest"]);
    }
}
