//! Hugging Face Hub listing: which files a model or dataset repository holds,
//! how large each one is, and whether our token may download them (gating);
//! and downloading one listed file (`download`).
//!
//! Model repositories live under `/api/models/{repo}` and `/{repo}/resolve/`,
//! dataset repositories under `/api/datasets/{repo}` and
//! `/datasets/{repo}/resolve/` ([`RepoKind`]); messages name a dataset
//! repository `datasets/org/name`, as its web address does.
//!
//! One [`HubClient`] lives for one command and remembers every answer,
//! failures included, so a campaign naming the same repository for several
//! engines asks the Hub once. The token is sent only as a bearer header and
//! is never printed or logged. This module does not download files (it builds
//! their `resolve` URLs and hands its token to a [`Downloader`]) and does not
//! read the local Hugging Face cache; `HF_HUB_OFFLINE` (or
//! `KITT_OFFLINE`) turns every listing into [`HubError::Offline`] so callers
//! fall back to local sources.

use std::fmt;
use std::sync::Arc;

use reqwest::header::{AUTHORIZATION, LINK};
use reqwest::{RequestBuilder, Response, StatusCode};

use super::download::{self as file_download, Downloader};
use super::http::{self, FetchOnce, RetryPolicy};
use wire::{
    RepoInfo, TreeEntry, encode_path, is_gated, is_safe_path, next_link_target, same_origin,
};

mod download;
mod wire;

pub use download::{DownloadError, Fetched};

/// The public Hub, used when `HF_ENDPOINT` is not set.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// A guard against a server whose `Link` headers never end.
const MAX_TREE_PAGES: usize = 1_000;

/// Which kind of repository: models and datasets have their own routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RepoKind {
    /// A model repository.
    Model,
    /// A dataset repository.
    Dataset,
}

impl RepoKind {
    /// The API collection: `models` or `datasets`.
    fn api(self) -> &'static str {
        match self {
            RepoKind::Model => "models",
            RepoKind::Dataset => "datasets",
        }
    }

    /// The prefix of its web page and `resolve` URLs: none, or `datasets/`.
    fn prefix(self) -> &'static str {
        match self {
            RepoKind::Model => "",
            RepoKind::Dataset => "datasets/",
        }
    }

    /// How messages name `repo`: `org/name`, or `datasets/org/name`.
    pub fn label(self, repo: &str) -> String {
        format!("{}{repo}", self.prefix())
    }
}

/// Client for the Hub's model and dataset API, with a per-command cache of listings.
pub struct HubClient {
    endpoint: String,
    token: Option<Token>,
    offline: bool,
    api: reqwest::Client,
    /// Sends the gating probe; it must see the Hub's redirect, not follow it to the CDN.
    probe: reqwest::Client,
    policy: RetryPolicy,
    cache: FetchOnce<Result<Arc<HubRepo>, HubError>>,
}

/// A Hub token whose `Debug` form does not reveal it.
#[derive(Clone)]
struct Token(String);

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl fmt::Debug for HubClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HubClient")
            .field("endpoint", &self.endpoint)
            .field("token", &self.token)
            .field("offline", &self.offline)
            .finish_non_exhaustive()
    }
}

/// One model repository as listed by the Hub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubRepo {
    /// The repository id, `org/name`.
    pub repo: String,
    /// The commit the listing describes, when the Hub reports it.
    pub revision: Option<String>,
    /// Every file, sorted by path.
    pub files: Vec<HubFile>,
    /// Whether we may download the files.
    pub gate: Gate,
}

/// One file of a repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubFile {
    /// Path relative to the repository root, `/`-separated.
    pub path: String,
    /// Size in bytes (for LFS files the real size, not the pointer's).
    pub size: u64,
    /// SHA-256 of the content, known for LFS files.
    pub sha256: Option<String>,
}

/// Whether a repository's files are gated behind a licence, and whether we passed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gate {
    /// Not gated.
    Open,
    /// Gated, and our token has access.
    Granted,
    /// Gated and no access: no token, or the token lacks access.
    Denied {
        /// Why, and what the user can do about it.
        reason: String,
    },
}

/// Why a repository could not be listed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum HubError {
    /// The endpoint setting is not an http(s) URL.
    #[error("`HF_ENDPOINT` must be an http(s) URL without query or credentials, got `{value}`")]
    InvalidEndpoint { value: String },
    /// The HTTP client could not be set up.
    #[error("cannot set up the HTTP client for the Hugging Face Hub")]
    Client {
        #[source]
        source: Arc<reqwest::Error>,
    },
    /// The repository id is malformed; nothing was sent.
    #[error("invalid Hub repository id `{repo}`: {reason} (expected `org/name`)")]
    InvalidRepoId { repo: String, reason: String },
    /// Offline mode is on; nothing was sent.
    #[error(
        "cannot list `{repo}`: offline mode is on (`HF_HUB_OFFLINE` or `KITT_OFFLINE`), \
         so only local files are used"
    )]
    Offline { repo: String },
    /// The Hub does not know the repository.
    #[error("Hub repository `{repo}` not found; check the name")]
    NotFound { repo: String },
    /// The Hub refused to list the repository.
    #[error("the Hub refused to list `{repo}` (HTTP {status}); {}", token_hint(*.token_set))]
    Unauthorized { repo: String, status: u16, token_set: bool },
    /// Still rate-limited after every retry.
    #[error("the Hub is rate-limiting requests for `{repo}`; try again later")]
    RateLimited { repo: String },
    /// Any other unexpected HTTP status.
    #[error("the Hub answered HTTP {status} while listing `{repo}`")]
    Status { repo: String, status: u16 },
    /// The Hub could not be reached.
    #[error("cannot reach the Hub while listing `{repo}`")]
    Network {
        repo: String,
        #[source]
        source: Arc<reqwest::Error>,
    },
    /// The Hub answered something kitt cannot read.
    #[error("unexpected answer from the Hub for `{repo}`: {detail}")]
    BadResponse { repo: String, detail: String },
}

/// The advice attached to a refused listing.
fn token_hint(token_set: bool) -> &'static str {
    if token_set {
        "the Hub token in use has no access to it; it may be private or misspelled"
    } else {
        "`HF_TOKEN` is not set; it may be private or misspelled"
    }
}

impl HubClient {
    /// Endpoint from `HF_ENDPOINT` (default the public Hub), token from the argument or else
    /// `HF_TOKEN`; `HF_HUB_OFFLINE` or `KITT_OFFLINE` (`1`, `true`, `yes`, `on`) means local only.
    pub fn from_env(token: Option<String>) -> Result<Self, HubError> {
        Self::from_lookup(token, |name| std::env::var(name).ok())
    }

    /// A client for `endpoint`, online, with the given token; used by tests and mirrors.
    pub fn with_endpoint(endpoint: &str, token: Option<String>) -> Result<Self, HubError> {
        let endpoint = http::base_url(endpoint)
            .ok_or_else(|| HubError::InvalidEndpoint { value: http::redact_userinfo(endpoint) })?;
        let client_error = |source| HubError::Client { source: Arc::new(source) };
        let api = http::client_builder().build().map_err(client_error)?;
        let probe = http::client_builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(client_error)?;
        Ok(Self {
            endpoint,
            token: token.filter(|token| !token.trim().is_empty()).map(Token),
            offline: false,
            api,
            probe,
            policy: RetryPolicy::default(),
            cache: FetchOnce::default(),
        })
    }

    /// Same as [`HubClient::from_env`], reading variables through `lookup`.
    fn from_lookup(
        token: Option<String>,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, HubError> {
        let endpoint = lookup("HF_ENDPOINT").filter(|value| !value.trim().is_empty());
        let given = |token: &String| !token.trim().is_empty();
        let token = token.filter(given).or_else(|| lookup("HF_TOKEN").filter(given));
        let offline = ["HF_HUB_OFFLINE", "KITT_OFFLINE"]
            .iter()
            .any(|name| lookup(name).is_some_and(|value| http::is_truthy(&value)));
        let client = Self::with_endpoint(endpoint.as_deref().unwrap_or(DEFAULT_ENDPOINT), token)?;
        Ok(client.with_offline(offline))
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

    /// The Hub's base URL, without a trailing `/`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Whether a token will be sent.
    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }

    /// Where a listed file of `repo` downloads from:
    /// `{endpoint}/{repo}/resolve/{revision}/{path}`, each path segment
    /// percent-encoded. The revision is the commit the listing described, so
    /// every file of a variant comes from the same commit; `main` when the Hub
    /// reported none.
    pub fn file_url(&self, repo: &HubRepo, path: &str) -> String {
        let revision = repo.revision.as_deref().unwrap_or("main");
        self.resolve_url(RepoKind::Model, &repo.repo, revision, path)
    }

    /// A downloader that sends this client's token to the Hub and nowhere else
    /// (not to the storage a `resolve` URL redirects to).
    pub fn downloader(&self) -> Result<Downloader, file_download::DownloadError> {
        let token = self.token.as_ref().map(|Token(token)| token.clone());
        Downloader::new(token, Some(&self.endpoint))
    }

    /// Lists a model repository: every file with its byte size, and whether it is gated for
    /// us. Cached for the life of the client, errors included; concurrent calls for the same
    /// repository share one fetch.
    pub async fn repo(&self, repo: &str) -> Result<Arc<HubRepo>, HubError> {
        self.listing(RepoKind::Model, repo).await
    }

    /// Lists a dataset repository, like [`repo`](Self::repo) does a model repository.
    pub async fn dataset(&self, repo: &str) -> Result<Arc<HubRepo>, HubError> {
        self.listing(RepoKind::Dataset, repo).await
    }

    async fn listing(&self, kind: RepoKind, repo: &str) -> Result<Arc<HubRepo>, HubError> {
        validate_repo_id(repo)?;
        let label = kind.label(repo);
        if self.offline {
            return Err(HubError::Offline { repo: label });
        }
        self.cache
            .get_or_fetch(&label, || async { self.fetch(kind, repo).await.map(Arc::new) })
            .await
    }

    /// Asks the Hub for the repository info, the file tree and, when gated, our access.
    async fn fetch(&self, kind: RepoKind, repo: &str) -> Result<HubRepo, HubError> {
        let label = kind.label(repo);
        let info = self.info(kind, repo).await?;
        let gated = is_gated(&info.gated)
            .ok_or_else(|| bad(&label, format!("`gated` has an unknown value `{}`", info.gated)))?;
        let revision = info.sha;

        let mut files = self.tree(kind, repo, revision.as_deref().unwrap_or("main")).await?;
        files.sort_by(|a, b| a.path.cmp(&b.path));
        let gate = if gated {
            self.check_access(kind, repo, revision.as_deref(), &files).await?
        } else {
            Gate::Open
        };
        Ok(HubRepo { repo: repo.to_owned(), revision, files, gate })
    }

    /// `GET /api/models/{repo}` (or `/api/datasets/{repo}`).
    async fn info(&self, kind: RepoKind, repo: &str) -> Result<RepoInfo, HubError> {
        let label = kind.label(repo);
        let url = format!("{}/api/{}/{repo}", self.endpoint, kind.api());
        let response = self.send(&label, || self.api.get(&url)).await?;
        let response = self.classify(&label, response)?;
        response.json().await.map_err(|error| bad(&label, format!("repository info: {error}")))
    }

    /// `GET /api/models/{repo}/tree/{revision}?recursive=true` (or `/api/datasets/…`),
    /// following `Link` pages.
    async fn tree(
        &self,
        kind: RepoKind,
        repo: &str,
        revision: &str,
    ) -> Result<Vec<HubFile>, HubError> {
        let first =
            format!("{}/api/{}/{repo}/tree/{revision}?recursive=true", self.endpoint, kind.api());
        let repo = kind.label(repo);
        let repo = repo.as_str();
        let mut next = Some(first);
        let mut files = Vec::new();
        let mut seen_pages = std::collections::HashSet::new();
        for _ in 0..MAX_TREE_PAGES {
            let Some(url) = next.take() else {
                return Ok(files);
            };
            if !seen_pages.insert(url.clone()) {
                return Err(bad(
                    repo,
                    "the file tree's pages link back to a page already read".into(),
                ));
            }
            let response = self.send(repo, || self.api.get(&url)).await?;
            let response = self.classify(repo, response)?;
            next = self.next_page(repo, &response)?;
            let entries: Vec<TreeEntry> =
                response.json().await.map_err(|error| bad(repo, format!("file tree: {error}")))?;
            for file in entries.into_iter().filter_map(TreeEntry::into_file) {
                if is_safe_path(&file.path) {
                    files.push(file);
                } else {
                    tracing::warn!(repo, "ignoring a file with an unsafe name in the Hub listing");
                }
            }
        }
        match next {
            None => Ok(files),
            Some(_) => Err(bad(repo, format!("file tree has more than {MAX_TREE_PAGES} pages"))),
        }
    }

    /// The `rel="next"` page of a tree listing, which must stay on the Hub's host.
    fn next_page(&self, repo: &str, response: &Response) -> Result<Option<String>, HubError> {
        let Some(target) = response
            .headers()
            .get_all(LINK)
            .iter()
            .find_map(|value| value.to_str().ok().and_then(next_link_target))
        else {
            return Ok(None);
        };
        let url = response
            .url()
            .join(&target)
            .map_err(|_| bad(repo, format!("unreadable pagination link `{target}`")))?;

        // The token travels with every page, so never follow a link to another server.
        if !same_origin(&url, response.url()) {
            return Err(bad(repo, format!("pagination link `{url}` leaves the Hub's host")));
        }
        Ok(Some(url.into()))
    }

    /// Probes a file of a gated repository with `HEAD .../resolve/...` to see if we may
    /// download it.
    async fn check_access(
        &self,
        kind: RepoKind,
        repo: &str,
        revision: Option<&str>,
        files: &[HubFile],
    ) -> Result<Gate, HubError> {
        let url_of = |path: &str| self.resolve_url(kind, repo, revision.unwrap_or("main"), path);
        let page = format!("{}/{}{repo}", self.endpoint, kind.prefix());
        let repo = kind.label(repo);
        let repo = repo.as_str();
        if self.token.is_none() {
            let reason = format!(
                "`{repo}` is gated: accept its licence at {page} and set `HF_TOKEN` to a \
                 token of that account"
            );
            return Ok(Gate::Denied { reason });
        }

        // Weights (LFS files) are what a run downloads, so they are the ones worth probing.
        let Some(file) = files.iter().find(|file| file.sha256.is_some()).or(files.first()) else {
            let reason = format!("`{repo}` is gated and lists no file to check access with");
            return Ok(Gate::Denied { reason });
        };
        let url = url_of(&file.path);
        let response = self.send(repo, || self.probe.head(&url)).await?;

        let status = response.status();
        if status.is_success() || status.is_redirection() {
            return Ok(Gate::Granted);
        }
        if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
            let reason = format!(
                "`{repo}` is gated and the Hub token in use has no access (HTTP {}): accept \
                 its licence at {page} with the token's account, or wait for approval",
                status.as_u16()
            );
            return Ok(Gate::Denied { reason });
        }
        Err(self.status_error(repo, status))
    }

    /// The `resolve` URL of a file: `{endpoint}/[datasets/]{repo}/resolve/{revision}/{path}`.
    pub fn resolve_url(&self, kind: RepoKind, repo: &str, revision: &str, path: &str) -> String {
        format!(
            "{}/{}{repo}/resolve/{}/{}",
            self.endpoint,
            kind.prefix(),
            encode_path(revision),
            encode_path(path)
        )
    }

    /// Sends one request with the bearer token and the retry policy.
    async fn send(
        &self,
        repo: &str,
        build: impl Fn() -> RequestBuilder,
    ) -> Result<Response, HubError> {
        let authorised = || match &self.token {
            Some(Token(token)) => build().header(AUTHORIZATION, format!("Bearer {token}")),
            None => build(),
        };
        http::send_with_retry(authorised, &self.policy)
            .await
            .map_err(|source| HubError::Network { repo: repo.to_owned(), source: Arc::new(source) })
    }

    /// Passes a 2xx response through and turns any other status into an error.
    fn classify(&self, repo: &str, response: Response) -> Result<Response, HubError> {
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        Err(self.status_error(repo, status))
    }

    /// The error for a final non-success status.
    fn status_error(&self, repo: &str, status: StatusCode) -> HubError {
        let repo = repo.to_owned();
        match status {
            StatusCode::NOT_FOUND => HubError::NotFound { repo },
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => HubError::Unauthorized {
                repo,
                status: status.as_u16(),
                token_set: self.token.is_some(),
            },
            StatusCode::TOO_MANY_REQUESTS => HubError::RateLimited { repo },
            _ => HubError::Status { repo, status: status.as_u16() },
        }
    }
}

/// A [`HubError::BadResponse`] for `repo`.
fn bad(repo: &str, detail: String) -> HubError {
    HubError::BadResponse { repo: repo.to_owned(), detail }
}

/// Checks a repository id before it goes into a URL: `org/name`, each part made of ASCII
/// letters, digits, `-`, `_` and `.`, not starting or ending with `-` or `.`, without `--`
/// or `..`, the name at most 96 characters.
pub fn validate_repo_id(repo: &str) -> Result<(), HubError> {
    let invalid =
        |reason: &str| HubError::InvalidRepoId { repo: repo.to_owned(), reason: reason.to_owned() };
    let Some((org, name)) = repo.split_once('/') else {
        return Err(invalid("it has no `/` between organisation and name"));
    };
    for part in [org, name] {
        if part.is_empty() {
            return Err(invalid("the organisation and the name must not be empty"));
        }
        if !part.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) {
            return Err(invalid(
                "only ASCII letters, digits, `-`, `_`, `.` and one `/` are allowed",
            ));
        }
        if part.starts_with(['-', '.']) || part.ends_with(['-', '.']) {
            return Err(invalid("a part must not start or end with `-` or `.`"));
        }
        if part.contains("--") || part.contains("..") {
            return Err(invalid("`--` and `..` are not allowed"));
        }
    }
    if name.len() > 96 {
        return Err(invalid("the name is longer than 96 characters"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn client(vars: &[(&str, &str)], token: Option<&str>) -> Result<HubClient, HubError> {
        let vars: HashMap<String, String> =
            vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        HubClient::from_lookup(token.map(str::to_owned), |name| vars.get(name).cloned())
    }

    #[test]
    fn env_defaults_to_the_public_hub_online_without_token() {
        let hub = client(&[], None).expect("default client");
        assert_eq!(hub.endpoint(), DEFAULT_ENDPOINT);
        assert!(!hub.is_offline());
        assert!(!hub.has_token());
    }

    #[test]
    fn env_reads_endpoint_token_and_offline_flags() {
        let vars = [("HF_ENDPOINT", "http://127.0.0.1:9/"), ("HF_TOKEN", "hf_env")];
        let hub = client(&vars, None).expect("client");
        assert_eq!(hub.endpoint(), "http://127.0.0.1:9");
        assert!(hub.has_token());
        for flag in ["1", "true", "YES", "on"] {
            assert!(client(&[("HF_HUB_OFFLINE", flag)], None).expect("client").is_offline());
        }
        assert!(client(&[("KITT_OFFLINE", "1")], None).expect("client").is_offline());
        assert!(!client(&[("HF_HUB_OFFLINE", "0")], None).expect("client").is_offline());
    }

    #[test]
    fn token_never_shows_in_debug_output() {
        let hub = client(&[], Some("hf_secret")).expect("client");
        assert!(!format!("{hub:?}").contains("hf_secret"));
    }

    #[test]
    fn bad_endpoint_is_named() {
        let error = client(&[("HF_ENDPOINT", "huggingface.co")], None).expect_err("bad URL");
        assert_eq!(
            error.to_string(),
            "`HF_ENDPOINT` must be an http(s) URL without query or credentials, got `huggingface.co`"
        );
    }

    #[test]
    fn repo_ids_are_validated() {
        for good in ["meta-llama/Llama-3.1-8B-Instruct", "Qwen/Qwen2.5-7B-Instruct-GGUF", "a/b"] {
            assert!(validate_repo_id(good).is_ok(), "{good}");
        }
        for bad in ["gpt2", "a/b/c", "/b", "a/", "a b/c", "org/na..me", "-org/x", "o/x.", "o/é"] {
            assert!(validate_repo_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn resolve_urls_pin_the_listed_commit_and_encode_each_segment() {
        let hub = client(&[("HF_ENDPOINT", "http://127.0.0.1:9/")], None).expect("client");
        let mut repo = HubRepo {
            repo: "org/Model-GGUF".into(),
            revision: Some("0123abcd".into()),
            files: Vec::new(),
            gate: Gate::Open,
        };
        assert_eq!(
            hub.file_url(&repo, "Q4_K_M/model Q4#1.gguf"),
            "http://127.0.0.1:9/org/Model-GGUF/resolve/0123abcd/Q4_K_M/model%20Q4%231.gguf"
        );
        repo.revision = None;
        assert_eq!(
            hub.file_url(&repo, "m.gguf"),
            "http://127.0.0.1:9/org/Model-GGUF/resolve/main/m.gguf"
        );
    }
}
