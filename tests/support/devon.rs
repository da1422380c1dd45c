//! Fakes of Devon, the model manager, in both forms kitt uses.
//!
//! [`FakeDevon`] is a loopback server speaking Devon's HTTP API as its
//! documentation and code describe it: `GET /api/v1/models`,
//! `POST /api/v1/downloads` (`model_id`, `source`, `force`,
//! `include_patterns`; answers `path`, `files`, `size_bytes`) and
//! `DELETE /api/v1/models/{source}/{model_id}`, errors as `{"detail": …}`,
//! and a bearer key checked on every `/api/v1` route when one is set. It
//! "downloads" by copying the bytes a test gave it ([`FakeDevon::source`])
//! into its storage directory, `<storage>/huggingface/<org>/<name>/`; like
//! the real Devon it answers a download of a repository it already holds
//! without fetching anything unless `force` is set, and removes whole
//! repositories. Every request is recorded with its `Authorization` header and
//! body.
//!
//! [`FakeDevonCli`] puts the fake `devon` program (`tests/fakes/devon`) on a
//! `PATH` directory of its own, behind a wrapper naming its state directory,
//! and reads the record of every argument vector.
//!
//! ```ignore
//! let devon = support::devon::FakeDevon::start(Some("dk-key"));
//! devon.source("org/m-GGUF", &[("m-Q8_0.gguf", &bytes)]);
//! command.env("DEVON_API_KEY", "dk-key"); // devon_url: devon.url() in the campaign
//! assert!(devon.calls().iter().any(|call| call.method == "DELETE"));
//! ```

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use serde_json::{Value, json};

use super::server::{Server, lock};

/// One request the fake received.
#[derive(Debug, Clone, PartialEq)]
pub struct DevonCall {
    /// `GET`, `POST` or `DELETE`.
    pub method: String,
    /// Path and query, e.g. `/api/v1/models?source=huggingface`.
    pub path: String,
    /// The `Authorization` header.
    pub authorization: Option<String>,
    /// The JSON body (`null` without one).
    pub body: Value,
}

/// Handle to a running fake Devon server.
pub struct FakeDevon {
    server: Server,
    state: Arc<Mutex<DevonState>>,
    storage: tempfile::TempDir,
}

struct DevonState {
    storage: PathBuf,
    key: Option<String>,
    /// What Devon can download, by repository: path → bytes.
    sources: HashMap<String, BTreeMap<String, Vec<u8>>>,
    /// Devon's index: repository → files it fetched.
    index: BTreeMap<String, Vec<String>>,
    /// Paths to answer instead of the real directory.
    reported: HashMap<String, String>,
    calls: Vec<DevonCall>,
}

type Shared = Arc<Mutex<DevonState>>;

impl FakeDevon {
    /// Starts an empty Devon that requires `key` as a bearer token (none: open).
    pub fn start(key: Option<&str>) -> FakeDevon {
        let storage = tempfile::tempdir().expect("temp dir for the fake Devon");
        let state = Arc::new(Mutex::new(DevonState {
            storage: storage.path().to_owned(),
            key: key.map(str::to_owned),
            sources: HashMap::new(),
            index: BTreeMap::new(),
            reported: HashMap::new(),
            calls: Vec::new(),
        }));
        let shared = Arc::clone(&state);
        let server = Server::start(move |_| {
            Router::new()
                .route("/health", get(|| async { axum::Json(json!({"status": "ok"})) }))
                .route("/api/v1/models", get(models))
                .route("/api/v1/downloads", post(download))
                .route("/api/v1/models/{source}/{*model_id}", delete(remove))
                .with_state(shared)
        });
        FakeDevon { server, state, storage }
    }

    /// The base URL, for `devon_url`.
    pub fn url(&self) -> &str {
        self.server.url()
    }

    /// The directory Devon keeps `repo` in.
    pub fn repo_dir(&self, repo: &str) -> PathBuf {
        self.storage.path().join("huggingface").join(repo)
    }

    /// Gives Devon `files` (path, bytes) of `repo` to download.
    pub fn source(&self, repo: &str, files: &[(&str, &[u8])]) -> &Self {
        let files = files.iter().map(|(path, bytes)| ((*path).to_owned(), bytes.to_vec()));
        lock(&self.state).sources.insert(repo.to_owned(), files.collect());
        self
    }

    /// Devon already holds these files of `repo` (from its source), as if
    /// the user had downloaded them before.
    pub fn hold(&self, repo: &str, files: &[&str]) -> &Self {
        let mut state = lock(&self.state);
        let files: Vec<String> = files.iter().map(|file| (*file).to_owned()).collect();
        copy_in(&state, repo, &files);
        state.index.insert(repo.to_owned(), files);
        self
    }

    /// Answers downloads of `repo` with `path` instead of its real directory.
    pub fn report_path(&self, repo: &str, path: &str) -> &Self {
        lock(&self.state).reported.insert(repo.to_owned(), path.to_owned());
        self
    }

    /// Whether Devon holds `repo`.
    pub fn holds(&self, repo: &str) -> bool {
        lock(&self.state).index.contains_key(repo)
    }

    /// Every request, in order.
    pub fn calls(&self) -> Vec<DevonCall> {
        lock(&self.state).calls.clone()
    }

    /// The requests with this method.
    pub fn calls_of(&self, method: &str) -> Vec<DevonCall> {
        self.calls().into_iter().filter(|call| call.method == method).collect()
    }
}

/// Copies `files` of `repo` from its source into the storage.
fn copy_in(state: &DevonState, repo: &str, files: &[String]) {
    let source = &state.sources[repo];
    let dir = state.storage.join("huggingface").join(repo);
    for file in files {
        let path = dir.join(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &source[file]).unwrap();
    }
}

/// Records the request; the answer to a caller without the key, if it lacks it.
fn enter(
    state: &mut DevonState,
    method: Method,
    path: String,
    headers: &HeaderMap,
    body: Value,
) -> Option<Response> {
    let authorization =
        headers.get(header::AUTHORIZATION).and_then(|value| value.to_str().ok()).map(str::to_owned);
    state.calls.push(DevonCall {
        method: method.to_string(),
        path,
        authorization: authorization.clone(),
        body,
    });
    let key = state.key.as_ref()?;
    if authorization.as_deref() == Some(format!("Bearer {key}").as_str()) {
        return None;
    }
    Some(error(StatusCode::UNAUTHORIZED, "Invalid or missing API key"))
}

fn error(status: StatusCode, detail: &str) -> Response {
    (status, axum::Json(json!({ "detail": detail }))).into_response()
}

fn entry(state: &DevonState, repo: &str) -> Value {
    let dir = state.storage.join("huggingface").join(repo);
    let files = &state.index[repo];
    let size: u64 = files.iter().map(|file| state.sources[repo][file].len() as u64).sum();
    json!({
        "source": "huggingface",
        "model_id": repo,
        "path": dir.display().to_string(),
        "files": files,
        "size_bytes": size,
        "downloaded_at": "2026-01-01T00:00:00.000000",
        "last_used": null,
        "metadata": {},
    })
}

async fn models(
    State(shared): State<Shared>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let mut state = lock(&shared);
    let path = match query.get("source") {
        Some(source) => format!("/api/v1/models?source={source}"),
        None => "/api/v1/models".to_owned(),
    };
    if let Some(refused) = enter(&mut state, Method::GET, path, &headers, Value::Null) {
        return refused;
    }
    let wanted = query.get("source").is_none_or(|source| source == "huggingface");
    let models: Vec<Value> = if wanted {
        state.index.keys().map(|repo| entry(&state, repo)).collect()
    } else {
        Vec::new()
    };
    axum::Json(json!({ "count": models.len(), "models": models })).into_response()
}

async fn download(State(shared): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let mut state = lock(&shared);
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let path = "/api/v1/downloads".to_owned();
    if let Some(refused) = enter(&mut state, Method::POST, path, &headers, body.clone()) {
        return refused;
    }
    let Some(repo) = body["model_id"].as_str().map(str::to_owned) else {
        return error(StatusCode::UNPROCESSABLE_ENTITY, "field required: model_id");
    };
    let force = body["force"].as_bool().unwrap_or(false);
    if force || !state.index.contains_key(&repo) {
        let Some(source) = state.sources.get(&repo) else {
            return error(StatusCode::NOT_FOUND, &format!("Model not found: {repo}"));
        };
        let patterns: Option<Vec<String>> = body["include_patterns"]
            .as_array()
            .map(|list| list.iter().filter_map(|p| p.as_str().map(str::to_owned)).collect());
        let files: Vec<String> = source
            .keys()
            .filter(|file| match &patterns {
                Some(patterns) => patterns.iter().any(|pattern| fnmatch(pattern, file)),
                None => true,
            })
            .cloned()
            .collect();
        copy_in(&state, &repo, &files);
        state.index.insert(repo.clone(), files);
    }
    let mut answer = entry(&state, &repo);
    if let Some(path) = state.reported.get(&repo) {
        answer["path"] = json!(path);
    }
    let keep = ["model_id", "source", "path", "files", "size_bytes"];
    let answer: serde_json::Map<String, Value> =
        keep.iter().map(|key| ((*key).to_owned(), answer[key].clone())).collect();
    axum::Json(Value::Object(answer)).into_response()
}

async fn remove(
    State(shared): State<Shared>,
    UrlPath((source, model_id)): UrlPath<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let mut state = lock(&shared);
    let path = format!("/api/v1/models/{source}/{model_id}");
    if let Some(refused) = enter(&mut state, Method::DELETE, path, &headers, Value::Null) {
        return refused;
    }
    if source != "huggingface" || state.index.remove(&model_id).is_none() {
        return error(StatusCode::NOT_FOUND, &format!("Model not found: {source}/{model_id}"));
    }
    let _ = std::fs::remove_dir_all(state.storage.join(&source).join(&model_id));
    axum::Json(json!({ "deleted": true, "model_id": model_id, "source": source })).into_response()
}

/// Python's `fnmatch` (as Devon's downloads filter with it): `*` matches
/// anything (`/` included), `?` one character, `[…]` a set (`[!…]` its
/// complement).
pub fn fnmatch(pattern: &str, name: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let name: Vec<char> = name.chars().collect();
    matches_from(&pattern, &name)
}

fn matches_from(pattern: &[char], name: &[char]) -> bool {
    let Some((&first, rest)) = pattern.split_first() else { return name.is_empty() };
    match first {
        '*' => (0..=name.len()).any(|skip| matches_from(rest, &name[skip..])),
        '?' => !name.is_empty() && matches_from(rest, &name[1..]),
        '[' => match rest.iter().skip(1).position(|&c| c == ']').map(|at| at + 1) {
            Some(close) => {
                let Some((&c, after)) = name.split_first() else { return false };
                let (negated, set) = match rest[..close].split_first() {
                    Some((&'!', set)) => (true, set),
                    _ => (false, &rest[..close]),
                };
                in_set(set, c) != negated && matches_from(&rest[close + 1..], after)
            }
            None => name.first() == Some(&'[') && matches_from(rest, &name[1..]),
        },
        literal => name.first() == Some(&literal) && matches_from(rest, &name[1..]),
    }
}

fn in_set(set: &[char], c: char) -> bool {
    let mut i = 0;
    while i < set.len() {
        if i + 2 < set.len() && set[i + 1] == '-' {
            if set[i] <= c && c <= set[i + 2] {
                return true;
            }
            i += 3;
        } else {
            if set[i] == c {
                return true;
            }
            i += 1;
        }
    }
    false
}

/// The fake `devon` program in the source tree.
const FAKE_CLI: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fakes/devon");

/// The fake `devon` command on a `PATH` directory of its own.
pub struct FakeDevonCli {
    dir: tempfile::TempDir,
}

impl FakeDevonCli {
    /// A fresh installation: nothing downloaded, nothing to download.
    pub fn new() -> FakeDevonCli {
        let dir = tempfile::tempdir().expect("temp dir for the fake devon");
        std::fs::create_dir_all(dir.path().join("bin")).unwrap();
        std::fs::create_dir_all(dir.path().join("home")).unwrap();
        // A wrapper carries the state directory, so kitt needs no variable of the fake's.
        let wrapper = dir.path().join("bin/devon");
        let home = dir.path().join("home");
        let script =
            format!("#!/bin/sh\nFAKE_DEVON_HOME='{}' exec '{FAKE_CLI}' \"$@\"\n", home.display());
        std::fs::write(&wrapper, script).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
        FakeDevonCli { dir }
    }

    /// The directory to put first on `PATH`.
    pub fn bin(&self) -> PathBuf {
        self.dir.path().join("bin")
    }

    /// The program, as found on `PATH`.
    pub fn program(&self) -> PathBuf {
        self.bin().join("devon")
    }

    fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    /// The directory Devon keeps `repo` in.
    pub fn repo_dir(&self, repo: &str) -> PathBuf {
        self.home().join("models/huggingface").join(repo)
    }

    /// Puts the fake first on the `PATH` of `command`.
    pub fn configure(&self, command: &mut Command) {
        let path = std::env::var_os("PATH").unwrap_or_default();
        let mut dirs = vec![self.bin()];
        dirs.extend(std::env::split_paths(&path));
        command.env("PATH", std::env::join_paths(dirs).unwrap());
    }

    /// Gives Devon `files` (path, bytes) of `repo` to download.
    pub fn source(&self, repo: &str, files: &[(&str, &[u8])]) -> &Self {
        let dir = self.home().join("remote").join(repo);
        for (path, bytes) in files {
            let path = dir.join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, bytes).unwrap();
        }
        self
    }

    /// Devon already holds these files of `repo`: downloaded through the fake itself.
    pub fn hold(&self, repo: &str, files: &[&str]) -> &Self {
        let mut args = vec!["download", repo, "-y"];
        for file in files {
            args.extend(["--include", file]);
        }
        self.devon(&args);
        // The user's own download is not one of kitt's calls.
        std::fs::remove_file(self.home().join("calls.jsonl")).unwrap();
        self
    }

    /// Downloads of `repo` print `stderr` and exit with `code`.
    pub fn fail(&self, repo: &str, code: i32, stderr: &str) -> &Self {
        let path = self.home().join("fail.json");
        let mut failures: Value = std::fs::read_to_string(&path)
            .ok()
            .and_then(|text| serde_json::from_str(&text).ok())
            .unwrap_or_else(|| json!({}));
        failures[repo] = json!({ "code": code, "stderr": stderr });
        std::fs::write(path, failures.to_string()).unwrap();
        self
    }

    /// Downloads of `repo` wait `seconds` before fetching anything.
    pub fn stall(&self, repo: &str, seconds: u64) -> &Self {
        std::fs::write(self.home().join("stall.json"), json!({ repo: seconds }).to_string())
            .unwrap();
        self
    }

    /// Whether Devon holds `repo` (its index lists it).
    pub fn holds(&self, repo: &str) -> bool {
        let index = std::fs::read_to_string(self.home().join("index.json")).unwrap_or_default();
        let index: Value = serde_json::from_str(&index).unwrap_or(Value::Null);
        index.get(format!("huggingface::{repo}")).is_some()
    }

    /// Runs the fake directly, as the user would.
    fn devon(&self, args: &[&str]) -> String {
        let output = Command::new(self.program()).args(args).output().expect("run the fake devon");
        assert!(output.status.success(), "devon {args:?}: {output:?}");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Every argument vector kitt passed, in order.
    pub fn calls(&self) -> Vec<Vec<String>> {
        let text = std::fs::read_to_string(self.home().join("calls.jsonl")).unwrap_or_default();
        text.lines()
            .map(|line| {
                let record: Value = serde_json::from_str(line).unwrap();
                let argv = record["argv"].as_array().unwrap();
                argv.iter().map(|arg| arg.as_str().unwrap().to_owned()).collect()
            })
            .collect()
    }

    /// The calls of one subcommand (`download`, `remove`, `export`).
    pub fn calls_of(&self, subcommand: &str) -> Vec<Vec<String>> {
        let calls = self.calls().into_iter();
        calls.filter(|argv| argv.first().is_some_and(|first| first == subcommand)).collect()
    }
}

/// Whether `dir` holds a file at `path` with exactly `bytes`.
pub fn holds_file(dir: &Path, path: &str, bytes: &[u8]) -> bool {
    std::fs::read(dir.join(path)).is_ok_and(|found| found == bytes)
}
