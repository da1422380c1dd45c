//! Devon, the model manager the original tool delegated downloads to, in its
//! two forms: its HTTP API ([`http`], `devon serve`) and its command line
//! ([`cli`], a `devon` program on the `PATH`). Both answer the same three
//! questions for one Hugging Face repository: does Devon already hold it
//! ([`Devon::stored`]), download these files of it ([`Devon::download`]), and
//! remove it ([`Devon::remove`]).
//!
//! Every call is described in README.md ("Devon"). In short:
//!
//! | question | HTTP API | command line |
//! | --- | --- | --- |
//! | held? | `GET /api/v1/models?source=huggingface` | `devon export --format json -o FILE` |
//! | download | `POST /api/v1/downloads` | `devon download REPO -y [--force] --include FILE…` |
//! | remove | `DELETE /api/v1/models/huggingface/REPO` | `devon remove REPO -y` |
//!
//! Decisions:
//! - Devon is asked for exactly the files of one variant: each file's path in
//!   the repository becomes one include pattern, with the glob characters
//!   `*`, `?` and `[` escaped, so a pattern matches that file alone.
//! - Where the files are is what Devon says: the `path` of the HTTP answer,
//!   or for the command line the `path` that `devon export` lists for the
//!   repository (machine-readable), else the last `Path: ` line the download
//!   printed. Checking that the files are really there, on this machine, is
//!   the caller's business.
//! - Devon treats a repository as downloaded once any of its files are, and
//!   then answers a download without fetching anything; asking again with
//!   `force` is the caller's decision.
//! - Nothing here retries: a Devon download is long and Devon resumes it
//!   itself when it is asked again (a resumed campaign asks again).

mod cli;
mod http;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc::UnboundedSender;

pub use cli::CliDevon;
pub use http::HttpDevon;

/// The source name Devon files Hugging Face repositories under.
pub const SOURCE: &str = "huggingface";

/// How long one download may take, as the original tool allowed.
pub const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(2 * 60 * 60);

/// How long a removal or a listing may take.
pub const QUICK_TIMEOUT: Duration = Duration::from_secs(60);

/// A Devon to download through.
#[derive(Debug, Clone)]
pub enum Devon {
    /// Its HTTP API.
    Http(HttpDevon),
    /// Its command line.
    Cli(CliDevon),
}

/// A download to ask Devon for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevonRequest {
    /// `org/name`.
    pub repo: String,
    /// The files of the variant, as paths in the repository.
    pub files: Vec<String>,
    /// Download again even when Devon holds the repository.
    pub force: bool,
}

/// A repository as Devon holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevonModel {
    /// Its directory, as Devon gives it (a path on Devon's machine).
    pub path: PathBuf,
    /// The files Devon lists for it.
    pub files: Vec<String>,
}

/// How a removal ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    /// Devon removed the repository.
    Removed,
    /// Devon did not hold it (any more).
    NotHeld,
}

/// Why Devon could not do what kitt asked.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DevonError {
    /// `devon_url` cannot be used.
    #[error(
        "`devon_url` must be an http(s) URL without query or credentials (the key goes in \
         `devon_api_key` or DEVON_API_KEY), got `{value}`"
    )]
    InvalidUrl {
        /// The value, with any credentials redacted.
        value: String,
    },
    /// The HTTP client could not be set up.
    #[error("cannot set up the HTTP client for Devon")]
    Client {
        #[source]
        source: Arc<reqwest::Error>,
    },
    /// Devon refused kitt's API key.
    #[error(
        "Devon at {url} refused {} (HTTP {status}{}); set `devon_api_key` in the campaign file \
         or DEVON_API_KEY to Devon's key",
        who_asked(.sent_key),
        detail_suffix(.detail)
    )]
    Unauthorized {
        /// Devon's base URL.
        url: String,
        /// 401 or 403.
        status: u16,
        /// Whether kitt sent a key.
        sent_key: bool,
        /// Devon's `detail`, or an excerpt of its answer.
        detail: String,
    },
    /// Devon answered with an error status.
    #[error("Devon answered HTTP {status} to {request}{}", detail_suffix(.detail))]
    Status {
        /// e.g. `POST http://h:8000/api/v1/downloads`.
        request: String,
        /// The status.
        status: u16,
        /// Devon's `detail`, or an excerpt of its answer.
        detail: String,
    },
    /// Devon could not be reached, or the connection broke.
    #[error("cannot reach Devon for {request}")]
    Network {
        /// e.g. `POST http://h:8000/api/v1/downloads`.
        request: String,
        #[source]
        source: Arc<reqwest::Error>,
    },
    /// Devon's answer could not be read.
    #[error("unexpected answer from Devon to {request}: {detail}")]
    BadResponse {
        /// What was asked.
        request: String,
        /// What is wrong with the answer.
        detail: String,
    },
    /// The `devon` program could not be started.
    #[error("cannot start {program}")]
    Spawn {
        /// Its absolute path.
        program: String,
        #[source]
        source: Arc<std::io::Error>,
    },
    /// The `devon` program failed.
    #[error("`{command}` {how}{}", tail_suffix(.tail))]
    Failed {
        /// The command line, shortened to the program's name and its arguments.
        command: String,
        /// e.g. `exited with code 1`.
        how: String,
        /// The end of its error output (else of its output).
        tail: String,
    },
    /// A request or the program took longer than allowed.
    #[error("{request} did not finish within {} s; kitt stopped waiting", .after.as_secs())]
    TimedOut {
        /// What was asked.
        request: String,
        /// The limit.
        after: Duration,
    },
    /// The download ended but Devon did not tell where the files are.
    #[error(
        "`{command}` finished, but neither `devon export` lists `{repo}` nor did it print a \
         `Path:` line, so kitt cannot tell where the files are{}",
        tail_suffix(.tail)
    )]
    Unlocated {
        /// The download's command line.
        command: String,
        /// `org/name`.
        repo: String,
        /// The end of its output.
        tail: String,
    },
}

fn who_asked(sent_key: &bool) -> &'static str {
    if *sent_key { "kitt's API key" } else { "kitt, which sent no API key" }
}

fn detail_suffix(detail: &str) -> String {
    if detail.is_empty() { String::new() } else { format!(": {detail}") }
}

/// The end of a program's output after its message. Written as an engine
/// failure's log tail is, so a one-line summary of the reason shows the last
/// line (where Devon's error is).
fn tail_suffix(tail: &str) -> String {
    if tail.is_empty() {
        "; it printed nothing".to_owned()
    } else {
        format!("; last log lines:\n{tail}")
    }
}

impl Devon {
    /// Devon's HTTP API at `url`, sending `api_key` as a bearer token.
    pub fn http(url: &str, api_key: Option<String>) -> Result<Devon, DevonError> {
        HttpDevon::new(url, api_key).map(Devon::Http)
    }

    /// The `devon` program at `program` (an absolute path).
    pub fn cli(program: PathBuf) -> Devon {
        Devon::Cli(CliDevon::new(program))
    }

    /// The absolute path of the first `devon` on the `PATH`, if there is one.
    pub fn find_program() -> Option<PathBuf> {
        let found = crate::engine::llama_cpp::on_path("devon")?;
        Some(std::path::absolute(&found).unwrap_or(found))
    }

    /// How messages name it: `Devon's HTTP API at URL` or `the devon command at PATH`.
    pub fn describe(&self) -> String {
        match self {
            Devon::Http(devon) => format!("Devon's HTTP API at {}", devon.url()),
            Devon::Cli(devon) => format!("the devon command at {}", devon.program().display()),
        }
    }

    /// What the store records as the way a download went: `http URL` or `cli PATH`.
    pub fn identity(&self) -> String {
        match self {
            Devon::Http(devon) => format!("http {}", devon.url()),
            Devon::Cli(devon) => format!("cli {}", devon.program().display()),
        }
    }

    /// The repository as Devon holds it, or `None` when it does not.
    pub async fn stored(&self, repo: &str) -> Result<Option<DevonModel>, DevonError> {
        match self {
            Devon::Http(devon) => devon.stored(repo).await,
            Devon::Cli(devon) => devon.stored(repo).await,
        }
    }

    /// Has Devon download `request`; `lines` receives what the download
    /// prints (the command line's output; nothing over HTTP).
    pub async fn download(
        &self,
        request: &DevonRequest,
        lines: UnboundedSender<String>,
    ) -> Result<DevonModel, DevonError> {
        match self {
            Devon::Http(devon) => devon.download(request).await,
            Devon::Cli(devon) => devon.download(request, lines).await,
        }
    }

    /// Has Devon remove the whole repository.
    pub async fn remove(&self, repo: &str) -> Result<Removal, DevonError> {
        match self {
            Devon::Http(devon) => devon.remove(repo).await,
            Devon::Cli(devon) => devon.remove(repo).await,
        }
    }
}

/// One include pattern per file: its path with the glob characters escaped,
/// so that each pattern matches exactly that file.
pub fn include_patterns(files: &[String]) -> Vec<String> {
    files.iter().map(|file| escape_glob(file)).collect()
}

/// `path` as a glob matching only itself: `*`, `?` and `[` become `[*]`, `[?]`, `[[]`.
fn escape_glob(path: &str) -> String {
    let mut pattern = String::with_capacity(path.len());
    for c in path.chars() {
        match c {
            '*' | '?' | '[' => {
                pattern.push('[');
                pattern.push(c);
                pattern.push(']');
            }
            _ => pattern.push(c),
        }
    }
    pattern
}

/// The directory Devon reported for `repo`, from a listing of Devon's models
/// (`model_id`, `source`, `path` and `files` per entry).
fn find_model(models: &[ListedModel], repo: &str) -> Option<DevonModel> {
    models
        .iter()
        .find(|model| model.model_id == repo && model.source == SOURCE)
        .map(|model| DevonModel { path: PathBuf::from(&model.path), files: model.files.clone() })
}

/// One entry of Devon's model index, as its API and `devon export` give it.
#[derive(Debug, Clone, serde::Deserialize)]
struct ListedModel {
    model_id: String,
    #[serde(default = "default_source")]
    source: String,
    path: String,
    #[serde(default)]
    files: Vec<String>,
}

fn default_source() -> String {
    SOURCE.to_owned()
}

/// The last `limit` characters of `text`, from a line start when one is
/// near, without blank lines: the end of a program's output for a message.
fn tail(text: &str, limit: usize) -> String {
    let lines: Vec<&str> =
        text.lines().map(str::trim_end).filter(|line| !line.trim().is_empty()).collect();
    let joined = lines.join("\n");
    if joined.chars().count() <= limit {
        return joined;
    }
    let skip = joined.chars().count() - limit;
    let cut: String = joined.chars().skip(skip).collect();
    match cut.find('\n') {
        Some(newline) if newline < limit / 2 => cut[newline + 1..].to_owned(),
        _ => format!("…{cut}"),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn include_patterns_match_each_file_alone() {
        let files = vec![
            "model-Q4_K_M.gguf".to_owned(),
            "Q8_0/m-Q8_0-00001-of-00002.gguf".to_owned(),
            "odd[1]*?.gguf".to_owned(),
        ];
        assert_eq!(
            include_patterns(&files),
            ["model-Q4_K_M.gguf", "Q8_0/m-Q8_0-00001-of-00002.gguf", "odd[[]1][*][?].gguf"]
        );
    }

    #[test]
    fn a_tail_keeps_the_last_lines_without_blanks() {
        assert_eq!(tail("a\n\nb\n  \nc\n", 100), "a\nb\nc");
        let long = format!("{}\nlast line", "x".repeat(50));
        assert_eq!(tail(&long, 12), "last line");
        assert_eq!(tail(&"y".repeat(20), 5), "…yyyyy");
    }

    #[test]
    fn the_listing_finds_the_repository_of_the_huggingface_source() {
        let models = vec![
            ListedModel {
                model_id: "org/m".into(),
                source: "other".into(),
                path: "/x".into(),
                files: vec![],
            },
            ListedModel {
                model_id: "org/m".into(),
                source: SOURCE.into(),
                path: "/data/models/huggingface/org/m".into(),
                files: vec!["m.gguf".into()],
            },
        ];
        let found = find_model(&models, "org/m").unwrap();
        assert_eq!(found.path, Path::new("/data/models/huggingface/org/m"));
        assert_eq!(found.files, ["m.gguf"]);
        assert!(find_model(&models, "org/other").is_none());
    }
}
