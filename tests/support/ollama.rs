//! A fake Ollama library website and registry on one loopback server: the
//! library's HTML tags page (`/library/{model}/tags`, `/{user}/{model}/tags`)
//! and registry manifests (`/v2/{namespace}/{model}/manifests/{tag}`).
//!
//! The tags page imitates the real one: each tag is linked twice (narrow and
//! wide layouts), and the page also links navigation, a blob of each tag and
//! other models, which a client must ignore.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use super::server::{Server, digest, lock};

/// The registry's manifest media type.
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// Bytes of the template, licence and params layers every fake manifest adds to the model.
pub const EXTRA_LAYER_BYTES: u64 = TEMPLATE_BYTES + LICENSE_BYTES + PARAMS_BYTES;

const TEMPLATE_BYTES: u64 = 1_481;
const LICENSE_BYTES: u64 = 12_321;
const PARAMS_BYTES: u64 = 96;

/// Handle to a running fake Ollama library and registry.
pub struct FakeOllama {
    server: Server,
    models: Arc<Mutex<HashMap<String, Vec<FakeTag>>>>,
}

#[derive(Clone)]
struct FakeTag {
    tag: String,
    config_digest: String,
    model_size: u64,
}

impl FakeOllama {
    /// Starts an empty fake on a loopback port.
    pub fn start() -> Self {
        let models = Arc::new(Mutex::new(HashMap::new()));
        let shared = Arc::clone(&models);
        let server = Server::start(move |_| {
            Router::new()
                .route("/{namespace}/{model}/tags", get(tags_page))
                .route("/v2/{namespace}/{model}/manifests/{tag}", get(manifest))
                .with_state(shared)
        });
        Self { server, models }
    }

    /// The base URL of both the library and the registry.
    pub fn url(&self) -> &str {
        self.server.url()
    }

    /// Environment for a child `kitt` process: both Ollama URLs pointing here.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("KITT_OLLAMA_LIBRARY_URL", self.url().to_owned()),
            ("KITT_OLLAMA_REGISTRY_URL", self.url().to_owned()),
        ]
    }

    /// Adds a model (`llama3.1` or `user/model`) with `(tag, config digest, model layer
    /// bytes)` entries in page order; tags sharing a config digest are aliases.
    pub fn add_model(&self, model: &str, tags: &[(&str, &str, u64)]) -> &Self {
        let tags = tags
            .iter()
            .map(|(tag, digest, size)| FakeTag {
                tag: tag.to_string(),
                config_digest: digest.to_string(),
                model_size: *size,
            })
            .collect();
        lock(&self.models).insert(model.to_owned(), tags);
        self
    }

    /// A stable fake `sha256:` digest for `seed`, handy as a config digest.
    pub fn digest(seed: &str) -> String {
        digest(seed)
    }

    /// Requests that reached exactly `path`, e.g. `/library/llama3.1/tags`.
    pub fn requests(&self, path: &str) -> usize {
        self.server.requests(path)
    }

    /// Requests that reached the fake at all.
    pub fn total_requests(&self) -> usize {
        self.server.total_requests()
    }
}

type Models = State<Arc<Mutex<HashMap<String, Vec<FakeTag>>>>>;

/// The key a model is stored under: official models without their `library/` namespace.
fn key(namespace: &str, model: &str) -> String {
    if namespace == "library" { model.to_owned() } else { format!("{namespace}/{model}") }
}

/// `GET /{namespace}/{model}/tags`: the HTML page listing every tag.
async fn tags_page(
    State(models): Models,
    Path((namespace, model)): Path<(String, String)>,
) -> Response {
    let Some(tags) = lock(&models).get(&key(&namespace, &model)).cloned() else {
        return (StatusCode::NOT_FOUND, Html("<html><body>Not found</body></html>"))
            .into_response();
    };
    let base = format!("/{namespace}/{model}");
    let mut page = format!(
        "<!DOCTYPE html><html lang=\"en\"><head><title>Tags · {model}</title></head><body>\n\
         <header><a href=\"/\">Ollama</a> <a href=\"/search\">Models</a> \
         <a href=\"/download\">Download</a> <a href=\"/signin\">Sign in</a></header>\n\
         <main><h1><a href=\"{base}\">{model}</a></h1>\n<section>\n"
    );
    for tag in &tags {
        let short: String =
            tag.config_digest.trim_start_matches("sha256:").chars().take(12).collect();
        let gigabytes = tag.model_size as f64 / 1e9;
        let blob = digest(&format!("{}:model", tag.config_digest));
        let _ = write!(
            page,
            "<div class=\"group\">\n\
             <a href=\"{base}:{t}\" class=\"md:hidden\"><span>{model}:{t}</span></a>\n\
             <div class=\"hidden md:flex\"><a href='{base}:{t}' class=\"hover:underline\">\
             {model}:{t}</a><p>{short} · {gigabytes:.1}GB · 128K context window</p>\n\
             <a href=\"{base}:{t}/blobs/{blob}\">model</a></div></div>\n",
            t = tag.tag
        );
    }
    page.push_str(
        "</section>\n<aside>Related: <a href=\"/library/llama3.2:1b\">llama3.2:1b</a> \
         <a href=\"/library/llama3.10:7b\">llama3.10:7b</a> \
         <a href=\"/library/mistral\">mistral</a></aside></main></body></html>\n",
    );
    Html(page).into_response()
}

/// `GET /v2/{namespace}/{model}/manifests/{tag}`: an image manifest whose layers are the
/// model weights, a template, a licence and parameters.
async fn manifest(
    State(models): Models,
    Path((namespace, model, tag)): Path<(String, String, String)>,
) -> Response {
    let models = lock(&models);
    let found =
        models.get(&key(&namespace, &model)).and_then(|tags| tags.iter().find(|t| t.tag == tag));
    let Some(found) = found else {
        let body = json!({"errors": [{"code": "MANIFEST_UNKNOWN", "message": "manifest unknown"}]});
        return (StatusCode::NOT_FOUND, axum::Json(body)).into_response();
    };
    let seed = &found.config_digest;
    let layer = |kind: &str, size: u64| {
        json!({
            "mediaType": format!("application/vnd.ollama.image.{kind}"),
            "digest": digest(&format!("{seed}:{kind}")),
            "size": size,
        })
    };
    let body = json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "config": {
            "mediaType": "application/vnd.docker.container.image.v1+json",
            "digest": found.config_digest,
            "size": 487,
        },
        "layers": [
            layer("model", found.model_size),
            layer("template", TEMPLATE_BYTES),
            layer("license", LICENSE_BYTES),
            layer("params", PARAMS_BYTES),
        ],
    });
    ([(header::CONTENT_TYPE, MANIFEST_MEDIA_TYPE)], body.to_string()).into_response()
}
