//! A fake Hugging Face Hub speaking the parts of the real API kitt uses:
//! model info (`/api/models/{org}/{name}`), the recursive file tree with
//! `Link` pagination (`/api/models/{org}/{name}/tree/{rev}`), and the
//! `resolve` URL whose status tells whether a gated repository is open to the
//! caller's token. Dataset repositories have the same routes under
//! `/api/datasets/…` and `/datasets/{org}/{name}/resolve/…`, and are known to
//! the fake (and to its configuration methods) as `datasets/org/name`.
//!
//! Model files have sizes only and no bodies. Dataset files have contents:
//! `resolve` serves a small file itself and redirects an LFS file (every
//! Parquet file, as the Hub's default `.gitattributes` stores them) to
//! `/cdn/{sha256}`, which serves the bytes; the listing gives their real
//! SHA-256 as `lfs.oid`.
//!
//! Model repositories added with sizes only serve no bodies; those added with
//! [`FakeHub::serve_repo`] serve real bytes the way the Hub does (see there).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::files::{FileServer, sha256_hex};
use super::server::{Server, fake_hex, lock};

/// Files at least this large are stored with LFS and listed with an `lfs` object.
pub const LFS_THRESHOLD: u64 = 10 * 1024 * 1024;

/// How a gated repository grants access (`gated` in the model info).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GateMode {
    /// Access is granted automatically once the licence is accepted.
    Auto,
    /// The authors approve each request.
    Manual,
}

/// Handle to a running fake Hub; configure it through `&self`, in any order.
pub struct FakeHub {
    server: Server,
    state: Arc<Mutex<HubState>>,
}

#[derive(Default)]
struct HubState {
    base: String,
    repos: HashMap<String, FakeRepo>,
    tokens: HashSet<String>,
    page_size: usize,
}

#[derive(Default)]
struct FakeRepo {
    files: Vec<(String, u64)>,
    /// File bodies, for repositories that serve them.
    contents: HashMap<String, Vec<u8>>,
    /// Files whose served bytes differ from the listed ones.
    tampered: HashSet<String>,
    gate: Option<GateMode>,
    missing: bool,
    unauthorized: bool,
    rate_limited: usize,
    /// Bodies of a repository added with `serve_repo`, by path.
    bodies: HashMap<String, Body>,
}

/// A file the fake serves: LFS files through the CDN, others itself.
struct Body {
    content: Bytes,
    sha256: String,
    /// Where `resolve` redirects an LFS file; `None` for a file served directly.
    cdn_url: Option<String>,
}

impl FakeHub {
    /// Starts an empty fake Hub on a loopback port (1000 tree entries per page).
    pub fn start() -> Self {
        let state = Arc::new(Mutex::new(HubState { page_size: 1000, ..HubState::default() }));
        let shared = Arc::clone(&state);
        let server = Server::start(move |url| {
            lock(&shared).base = url.to_owned();
            Router::new()
                .route("/api/models/{org}/{name}", get(model_info))
                .route("/api/models/{org}/{name}/tree/{rev}", get(tree))
                .route("/{org}/{name}/resolve/{rev}/{*path}", get(resolve))
                .route("/api/datasets/{org}/{name}", get(dataset_info))
                .route("/api/datasets/{org}/{name}/tree/{rev}", get(dataset_tree))
                .route("/datasets/{org}/{name}/resolve/{rev}/{*path}", get(dataset_resolve))
                .route("/cdn/{oid}", get(cdn))
                .with_state(shared)
        });
        Self { server, state }
    }

    /// The base URL, for `HF_ENDPOINT` or `HubClient::with_endpoint`.
    pub fn url(&self) -> &str {
        self.server.url()
    }

    /// Environment for a child `kitt` process: `HF_ENDPOINT` pointing here.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![("HF_ENDPOINT", self.url().to_owned())]
    }

    /// Adds (or replaces the files of) a public repository.
    pub fn add_repo(&self, repo: &str, files: &[(&str, u64)]) -> &Self {
        let files = files.iter().map(|(path, size)| (path.to_string(), *size)).collect();
        self.edit(repo, |fake| {
            fake.files = files;
            fake.missing = false;
        })
    }

    /// Adds (or replaces) a public dataset repository, known as `datasets/{repo}`, whose
    /// files have these bodies.
    pub fn add_dataset(&self, repo: &str, files: &[(&str, Vec<u8>)]) -> &Self {
        let listed = files.iter().map(|(path, body)| (path.to_string(), body.len() as u64));
        let listed = listed.collect();
        let contents = files.iter().map(|(path, body)| (path.to_string(), body.clone()));
        let contents = contents.collect();
        self.edit(&format!("datasets/{repo}"), |fake| {
            fake.files = listed;
            fake.contents = contents;
        })
    }

    /// Adds (or replaces) a repository that serves real bytes, as the Hub does:
    /// model files (`.gguf`, `.safetensors`, `.bin`) and anything of
    /// `LFS_THRESHOLD` or more are LFS files, listed with their real SHA-256 as
    /// `lfs.oid`, and `resolve` answers them with a 302 to `cdn`, which serves
    /// them at [`FakeHub::cdn_path`] (where a test queues faults), plus
    /// `X-Linked-Size` and `X-Linked-Etag`; other files `resolve` serves itself
    /// with their `ETag`.
    pub fn serve_repo(&self, repo: &str, files: &[(&str, Vec<u8>)], cdn: &FileServer) -> &Self {
        let mut bodies = HashMap::new();
        let mut listed = Vec::new();
        for (path, content) in files {
            let content = Bytes::from(content.clone());
            let lfs = is_lfs(path, content.len() as u64);
            let cdn_url = lfs.then(|| {
                cdn.put(&Self::cdn_path(repo, path), content.clone());
                cdn.url(&Self::cdn_path(repo, path))
            });
            let body = Body { sha256: sha256_hex(&content), content, cdn_url };
            listed.push((path.to_string(), body.content.len() as u64));
            bodies.insert(path.to_string(), body);
        }
        self.edit(repo, |fake| {
            fake.files = listed;
            fake.bodies = bodies;
            fake.missing = false;
        })
    }

    /// Serves other bytes (of the same length) for `path` than the listing describes.
    pub fn tamper(&self, repo: &str, path: &str) -> &Self {
        self.edit(repo, |fake| {
            fake.tampered.insert(path.to_owned());
        })
    }

    /// The SHA-256 the fake lists for a dataset file, the real hash of its body.
    pub fn sha256_of(body: &[u8]) -> String {
        Sha256::digest(body).iter().map(|byte| format!("{byte:02x}")).collect()
    }

    /// Requests for file bodies under `/cdn/`.
    pub fn cdn_requests(&self) -> usize {
        self.server.requests_under("/cdn/")
    }

    /// Where the CDN of [`FakeHub::serve_repo`] serves an LFS file of `repo`.
    pub fn cdn_path(repo: &str, path: &str) -> String {
        format!("{repo}/{path}")
    }

    /// `resolve` requests for files of `repo`.
    pub fn resolve_requests(&self, repo: &str) -> usize {
        self.server.requests_under(&format!("/{repo}/resolve/"))
    }

    /// Gates a repository: model info says `gated`, `resolve` needs an accepted token.
    pub fn gated(&self, repo: &str, mode: GateMode) -> &Self {
        self.edit(repo, |fake| fake.gate = Some(mode))
    }

    /// Grants `token` access to every gated repository; other tokens are valid but denied.
    pub fn accept_token(&self, token: &str) -> &Self {
        lock(&self.state).tokens.insert(token.to_owned());
        self
    }

    /// Makes every request about `repo` answer 404, as for a repository that does not exist.
    pub fn missing(&self, repo: &str) -> &Self {
        self.edit(repo, |fake| fake.missing = true)
    }

    /// Answers the next `count` requests about `repo` with 429 and `Retry-After: 1`.
    pub fn rate_limit(&self, repo: &str, count: usize) -> &Self {
        self.edit(repo, |fake| fake.rate_limited = count)
    }

    /// Answers the listing calls for `repo` with 401.
    pub fn unauthorized(&self, repo: &str) -> &Self {
        self.edit(repo, |fake| fake.unauthorized = true)
    }

    /// Sets how many tree entries one page holds before a `Link` to the next page.
    pub fn page_size(&self, entries: usize) -> &Self {
        lock(&self.state).page_size = entries.max(1);
        self
    }

    /// The commit SHA the fake reports for `repo`.
    pub fn sha(&self, repo: &str) -> String {
        fake_hex(repo, 40)
    }

    /// The SHA-256 the fake lists for an LFS file.
    pub fn lfs_oid(&self, repo: &str, path: &str) -> String {
        fake_hex(&format!("{repo}/{path}:lfs"), 64)
    }

    /// Requests that reached exactly `path`, e.g. `/api/models/org/name`.
    pub fn requests(&self, path: &str) -> usize {
        self.server.requests(path)
    }

    /// Requests about `repo` on any endpoint (info, tree, resolve); a dataset
    /// repository is named `datasets/org/name`.
    pub fn repo_requests(&self, repo: &str) -> usize {
        let (api, plain) = match repo.strip_prefix("datasets/") {
            Some(plain) => ("datasets", plain),
            None => ("models", repo),
        };
        self.server.requests_under(&format!("/api/{api}/{plain}"))
            + self.server.requests_under(&format!("/{repo}/resolve/"))
    }

    /// Requests that reached the fake at all.
    pub fn total_requests(&self) -> usize {
        self.server.total_requests()
    }

    fn edit(&self, repo: &str, change: impl FnOnce(&mut FakeRepo)) -> &Self {
        change(lock(&self.state).repos.entry(repo.to_owned()).or_default());
        self
    }
}

type Shared = State<Arc<Mutex<HubState>>>;

#[derive(Deserialize)]
struct TreeQuery {
    recursive: Option<String>,
    cursor: Option<String>,
}

/// `GET /api/models/{org}/{name}`.
async fn model_info(state: Shared, Path((org, name)): Path<(String, String)>) -> Response {
    info(state, &org, format!("{org}/{name}"))
}

/// `GET /api/datasets/{org}/{name}`.
async fn dataset_info(state: Shared, Path((org, name)): Path<(String, String)>) -> Response {
    info(state, &org, format!("datasets/{org}/{name}"))
}

/// The repository info of `repo` (a model id, or `datasets/org/name`).
fn info(State(state): Shared, org: &str, repo: String) -> Response {
    let mut state = lock(&state);
    if let Some(refused) = refusal(&mut state, &repo, true) {
        return refused;
    }
    let fake = &state.repos[&repo];
    let gated = match fake.gate {
        None => Value::Bool(false),
        Some(GateMode::Auto) => json!("auto"),
        Some(GateMode::Manual) => json!("manual"),
    };
    let siblings: Vec<Value> =
        fake.files.iter().map(|(path, _)| json!({"rfilename": path})).collect();
    let used = fake.files.iter().fold(0u64, |sum, (_, size)| sum.saturating_add(*size));
    let id = repo.trim_start_matches("datasets/");
    Json(json!({
        "_id": fake_hex(&repo, 24),
        "id": id,
        "modelId": id,
        "author": org,
        "sha": fake_hex(&repo, 40),
        "lastModified": "2024-09-25T14:03:12.000Z",
        "createdAt": "2024-07-23T09:12:44.000Z",
        "private": false,
        "disabled": false,
        "gated": gated,
        "downloads": 1234,
        "likes": 56,
        "tags": ["gguf", "text-generation"],
        "pipeline_tag": "text-generation",
        "siblings": siblings,
        "usedStorage": used,
    }))
    .into_response()
}

/// `GET /api/models/{org}/{name}/tree/{rev}?recursive=true&cursor=...`.
async fn tree(
    state: Shared,
    Path((org, name, rev)): Path<(String, String, String)>,
    query: Query<TreeQuery>,
) -> Response {
    tree_of(state, format!("{org}/{name}"), &rev, query)
}

/// `GET /api/datasets/{org}/{name}/tree/{rev}?recursive=true&cursor=...`.
async fn dataset_tree(
    state: Shared,
    Path((org, name, rev)): Path<(String, String, String)>,
    query: Query<TreeQuery>,
) -> Response {
    tree_of(state, format!("datasets/{org}/{name}"), &rev, query)
}

fn tree_of(
    State(state): Shared,
    repo: String,
    rev: &str,
    Query(query): Query<TreeQuery>,
) -> Response {
    let mut state = lock(&state);
    if let Some(refused) = refusal(&mut state, &repo, true) {
        return refused;
    }
    if rev != "main" && rev != fake_hex(&repo, 40) {
        return error(StatusCode::NOT_FOUND, "RevisionNotFound", &format!("Invalid rev id: {rev}"));
    }

    let recursive = matches!(query.recursive.as_deref(), Some("true" | "1"));
    let entries = tree_entries(&repo, &state.repos[&repo], recursive);
    let start = query.cursor.as_deref().and_then(|c| usize::from_str_radix(c, 16).ok());
    let start = start.unwrap_or(0).min(entries.len());
    let end = (start + state.page_size).min(entries.len());

    let mut response = Json(entries[start..end].to_vec()).into_response();
    if end < entries.len() {
        let flag = if recursive { "recursive=true&" } else { "" };
        let api = match repo.strip_prefix("datasets/") {
            Some(plain) => format!("datasets/{plain}"),
            None => format!("models/{repo}"),
        };
        let next =
            format!("<{}/api/{api}/tree/{rev}?{flag}cursor={end:x}>; rel=\"next\"", state.base);
        insert(response.headers_mut(), header::LINK, &next);
    }
    response
}

/// Tree entries as the Hub lists them: directories and files, sorted by path.
fn tree_entries(repo: &str, fake: &FakeRepo, recursive: bool) -> Vec<Value> {
    let files = &fake.files;
    let mut dirs = BTreeSet::new();
    for (path, _) in files {
        let mut parts: Vec<&str> = path.split('/').collect();
        parts.pop();
        for depth in 1..=parts.len() {
            dirs.insert(parts[..depth].join("/"));
        }
    }
    let dir_entries = dirs.into_iter().map(|path| {
        let entry =
            json!({"type": "directory", "oid": fake_hex(&path, 40), "size": 0, "path": path});
        (path, entry)
    });
    let file_entries = files.iter().map(|(path, size)| {
        let entry = match fake.bodies.get(path) {
            Some(body) => served_entry(repo, path, body),
            None => file_entry(repo, fake, path, *size),
        };
        (path.clone(), entry)
    });

    let mut entries: Vec<(String, Value)> = dir_entries.chain(file_entries).collect();
    entries.retain(|(path, _)| recursive || !path.contains('/'));
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    entries.into_iter().map(|(_, entry)| entry).collect()
}

/// One file entry; LFS files carry the real size both at the top and in `lfs`.
fn file_entry(repo: &str, fake: &FakeRepo, path: &str, size: u64) -> Value {
    let mut entry = json!({
        "type": "file",
        "oid": fake_hex(&format!("{repo}/{path}:blob"), 40),
        "size": size,
        "path": path,
    });
    if let Some(oid) = lfs_oid(repo, fake, path, size) {
        entry["lfs"] = json!({"oid": oid, "size": size, "pointerSize": 135});
    }
    entry
}

/// The LFS oid of a file stored with LFS: large files, and Parquet files with
/// a body (their real SHA-256).
fn lfs_oid(repo: &str, fake: &FakeRepo, path: &str, size: u64) -> Option<String> {
    match fake.contents.get(path) {
        Some(body) if path.ends_with(".parquet") => Some(FakeHub::sha256_of(body)),
        Some(_) => None,
        None => (size >= LFS_THRESHOLD).then(|| fake_hex(&format!("{repo}/{path}:lfs"), 64)),
    }
}

/// The entry of a served file: LFS files list their real SHA-256 and size.
fn served_entry(repo: &str, path: &str, body: &Body) -> Value {
    let size = body.content.len() as u64;
    let mut entry = json!({
        "type": "file",
        "oid": fake_hex(&format!("{repo}/{path}:blob"), 40),
        "size": size,
        "path": path,
    });
    if body.cdn_url.is_some() {
        entry["lfs"] = json!({"oid": body.sha256, "size": size, "pointerSize": 134});
    }
    entry
}

/// Whether the Hub stores a file with LFS: model weights always (repositories
/// track them in `.gitattributes`), anything else from the size limit on.
fn is_lfs(path: &str, size: u64) -> bool {
    let lower = path.to_ascii_lowercase();
    [".gguf", ".safetensors", ".bin"].iter().any(|ext| lower.ends_with(ext))
        || size >= LFS_THRESHOLD
}

/// The answer to `resolve` for a served file: a redirect to the CDN for an
/// LFS file, the bytes themselves otherwise.
fn served_body(repo: &str, path: &str, body: &Body) -> Response {
    let size = body.content.len().to_string();
    let mut response = match &body.cdn_url {
        Some(url) => {
            let mut redirect = StatusCode::FOUND.into_response();
            insert(redirect.headers_mut(), header::LOCATION, url);
            insert(redirect.headers_mut(), "x-linked-size", &size);
            insert(redirect.headers_mut(), "x-linked-etag", &format!("\"{}\"", body.sha256));
            redirect
        }
        None => {
            let mut direct = body.content.clone().into_response();
            let blob = fake_hex(&format!("{repo}/{path}:blob"), 40);
            insert(direct.headers_mut(), header::ETAG, &format!("\"{blob}\""));
            insert(direct.headers_mut(), header::CONTENT_LENGTH, &size);
            direct
        }
    };
    insert(response.headers_mut(), "x-repo-commit", &fake_hex(repo, 40));
    response
}

/// `GET`/`HEAD /{org}/{name}/resolve/{rev}/{path}`: 401/403 for gated repositories
/// without an accepted token, a redirect to the CDN for LFS files, 200 otherwise.
async fn resolve(
    state: Shared,
    Path((org, name, rev, path)): Path<(String, String, String, String)>,
    headers: HeaderMap,
) -> Response {
    resolve_in(state, format!("{org}/{name}"), &rev, &path, &headers)
}

/// `GET`/`HEAD /datasets/{org}/{name}/resolve/{rev}/{path}`.
async fn dataset_resolve(
    state: Shared,
    Path((org, name, rev, path)): Path<(String, String, String, String)>,
    headers: HeaderMap,
) -> Response {
    resolve_in(state, format!("datasets/{org}/{name}"), &rev, &path, &headers)
}

fn resolve_in(
    State(state): Shared,
    repo: String,
    rev: &str,
    path: &str,
    headers: &HeaderMap,
) -> Response {
    let mut state = lock(&state);
    if let Some(refused) = refusal(&mut state, &repo, false) {
        return refused;
    }
    let token = bearer(headers);
    if state.repos[&repo].gate.is_some() && !token.is_some_and(|t| state.tokens.contains(t)) {
        let status = if token.is_some() { StatusCode::FORBIDDEN } else { StatusCode::UNAUTHORIZED };
        let message = format!("Access to `{repo}` is restricted to users who accepted its terms");
        return error(status, "GatedRepo", &message);
    }
    let sha = fake_hex(&repo, 40);
    if rev != "main" && rev != sha {
        return error(StatusCode::NOT_FOUND, "RevisionNotFound", &format!("Invalid rev id: {rev}"));
    }
    if let Some(body) = state.repos[&repo].bodies.get(path) {
        return served_body(&repo, path, body);
    }
    let fake = &state.repos[&repo];
    let Some(size) = fake.files.iter().find(|(p, _)| *p == path).map(|(_, s)| *s) else {
        return error(StatusCode::NOT_FOUND, "EntryNotFound", &format!("{path} does not exist"));
    };

    let mut response = if let Some(oid) = lfs_oid(&repo, fake, path, size) {
        let mut redirect = StatusCode::FOUND.into_response();
        insert(redirect.headers_mut(), header::LOCATION, &format!("{}/cdn/{oid}", state.base));
        insert(redirect.headers_mut(), "x-linked-size", &size.to_string());
        redirect
    } else {
        let body = served(fake, path).unwrap_or_default();
        (StatusCode::OK, body).into_response()
    };
    insert(response.headers_mut(), "x-repo-commit", &sha);
    response
}

/// The bytes served for a file with a body: the listed ones, or changed ones.
fn served(fake: &FakeRepo, path: &str) -> Option<Vec<u8>> {
    let mut body = fake.contents.get(path)?.clone();
    if fake.tampered.contains(path)
        && let Some(first) = body.first_mut()
    {
        *first ^= 0xff;
    }
    Some(body)
}

/// `GET /cdn/{oid}`: the body of the LFS file with that oid, as the Hub's CDN serves it.
async fn cdn(State(state): Shared, Path(oid): Path<String>) -> Response {
    let state = lock(&state);
    for (repo, fake) in &state.repos {
        for (path, size) in &fake.files {
            if lfs_oid(repo, fake, path, *size).as_deref() == Some(oid.as_str())
                && let Some(body) = served(fake, path)
            {
                return (StatusCode::OK, body).into_response();
            }
        }
    }
    error(StatusCode::NOT_FOUND, "EntryNotFound", "no such object")
}

/// The checks every repository endpoint makes first: rate limit, existence, and (for the
/// listing endpoints) the configured 401. `Some` is the refusal to send instead.
fn refusal(state: &mut HubState, repo: &str, listing: bool) -> Option<Response> {
    let Some(fake) = state.repos.get_mut(repo) else {
        return Some(not_found());
    };
    if fake.rate_limited > 0 {
        fake.rate_limited -= 1;
        let mut response = error(StatusCode::TOO_MANY_REQUESTS, "RateLimited", "Slow down");
        insert(response.headers_mut(), header::RETRY_AFTER, "1");
        return Some(response);
    }
    if fake.missing {
        return Some(not_found());
    }
    if listing && fake.unauthorized {
        return Some(error(StatusCode::UNAUTHORIZED, "Unauthorized", "Invalid credentials"));
    }
    None
}

fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "RepoNotFound", "Repository not found")
}

/// A Hub-style error: JSON `{"error": ...}` plus the `X-Error-Code` header.
fn error(status: StatusCode, code: &str, message: &str) -> Response {
    let mut response = (status, Json(json!({"error": message}))).into_response();
    insert(response.headers_mut(), "x-error-code", code);
    response
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::AUTHORIZATION)?.to_str().ok()?.strip_prefix("Bearer ")
}

fn insert<K: axum::http::header::IntoHeaderName>(headers: &mut HeaderMap, name: K, value: &str) {
    headers.insert(name, HeaderValue::from_str(value).expect("header value is ASCII"));
}
