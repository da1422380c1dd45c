//! Ollama's HTTP API as kitt uses it, against a base URL: version, local
//! models, pull, blobs, create, delete, and a non-streamed chat for loading
//! and warming up. It knows nothing about processes or containers, so the
//! native and Docker modes share it.
//!
//! Pull and create answer with a stream of JSON lines (`status`, `digest`,
//! `total`, `completed`) ending with `{"status":"success"}`; an `{"error":…}`
//! line or an error status is a failure carrying the server's message.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE};
use reqwest::{Method, RequestBuilder, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::measure::lines::LineParser;

/// How long a short request (version, tags, blob check, delete) may take.
const SHORT: Duration = Duration::from_secs(30);

/// How long a create may go without a progress line before it is abandoned
/// (a pull's caller watches its progress itself).
pub const STALL: Duration = Duration::from_secs(300);

/// A failed call.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The server could not be reached or the connection failed.
    #[error("{0}")]
    Transport(String),
    /// The server answered with an error status.
    #[error("HTTP {status}: {message}")]
    Status {
        /// The status code.
        status: u16,
        /// The server's `error` text, or the start of its body.
        message: String,
    },
    /// The server reported an error inside a progress stream.
    #[error("{0}")]
    Stream(String),
    /// The answer was not what the API documents.
    #[error("unexpected answer: {0}")]
    BadAnswer(String),
    /// A progress stream went without progress for this long.
    #[error("no progress for {}", seconds(*.0))]
    Stalled(Duration),
}

/// One model in the local store (`GET /api/tags`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct LocalModel {
    /// `model:tag`, as listed.
    pub name: String,
    /// The same name in newer servers' `model` field.
    #[serde(default)]
    pub model: Option<String>,
    /// Bytes on disk.
    #[serde(default)]
    pub size: u64,
}

/// One line of a pull or create stream.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ProgressLine {
    /// What the server is doing (`pulling manifest`, `pulling <digest>`, `success`).
    #[serde(default)]
    pub status: Option<String>,
    /// The layer being transferred.
    #[serde(default)]
    pub digest: Option<String>,
    /// Its size in bytes.
    #[serde(default)]
    pub total: Option<u64>,
    /// Bytes done so far.
    #[serde(default)]
    pub completed: Option<u64>,
    /// A failure.
    #[serde(default)]
    pub error: Option<String>,
}

/// A client of one Ollama server.
#[derive(Debug, Clone)]
pub struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    /// A client for the server at `base` (`http://127.0.0.1:11434`).
    pub fn new(base: &str) -> Result<Self, ApiError> {
        let http = reqwest::Client::builder()
            .user_agent(crate::acquire::http::user_agent())
            .connect_timeout(Duration::from_secs(10))
            .no_proxy()
            .build()
            .map_err(|error| ApiError::Transport(error.to_string()))?;
        Ok(Self { base: base.trim_end_matches('/').to_owned(), http })
    }

    /// The base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http.request(method, format!("{}{path}", self.base))
    }

    /// `GET /api/version`: the server's version.
    pub async fn version(&self) -> Result<String, ApiError> {
        let answer: Value =
            json_of(self.request(Method::GET, "/api/version").timeout(SHORT)).await?;
        answer["version"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| ApiError::BadAnswer(format!("no `version` in {answer}")))
    }

    /// `GET /api/tags`: the models in the local store.
    pub async fn tags(&self) -> Result<Vec<LocalModel>, ApiError> {
        #[derive(Deserialize)]
        struct Tags {
            #[serde(default)]
            models: Option<Vec<LocalModel>>,
        }
        let answer: Tags = json_of(self.request(Method::GET, "/api/tags").timeout(SHORT)).await?;
        Ok(answer.models.unwrap_or_default())
    }

    /// `POST /api/pull` with a progress stream, watched: the answer must
    /// begin within `stall`, and `on_line`, which sees every line, answers how
    /// long the pull may go on from that line without progress (`None`: the
    /// line shows none, so the deadline stays). A missed deadline is
    /// [`ApiError::Stalled`] and drops the connection, which ends the pull on
    /// the server; its partial layers stay for the next pull to resume.
    pub async fn pull(
        &self,
        model: &str,
        stall: Duration,
        on_line: impl FnMut(&ProgressLine) -> Option<Duration>,
    ) -> Result<(), ApiError> {
        let body = json!({ "model": model, "stream": true });
        let deadline = Instant::now() + stall;
        let request = send(self.request(Method::POST, "/api/pull").json(&body));
        let response = tokio::time::timeout_at(deadline, request)
            .await
            .map_err(|_| ApiError::Stalled(stall))?;
        progress_stream(response?, (deadline, stall), on_line).await
    }

    /// `POST /api/create` with a progress stream; `on_line` sees every line.
    pub async fn create(
        &self,
        body: &Value,
        mut on_line: impl FnMut(&ProgressLine),
    ) -> Result<(), ApiError> {
        let response = send(self.request(Method::POST, "/api/create").json(body)).await?;
        let every_line = |line: &ProgressLine| {
            on_line(line);
            Some(STALL)
        };
        progress_stream(response, (Instant::now() + STALL, STALL), every_line).await
    }

    /// `HEAD /api/blobs/<digest>`: whether the server has the blob.
    pub async fn has_blob(&self, digest: &str) -> Result<bool, ApiError> {
        let path = format!("/api/blobs/{digest}");
        let response =
            self.request(Method::HEAD, &path).timeout(SHORT).send().await.map_err(transport)?;
        match response.status().as_u16() {
            200 => Ok(true),
            404 => Ok(false),
            status => Err(ApiError::Status { status, message: "blob check".into() }),
        }
    }

    /// `POST /api/blobs/<digest>` with the file's bytes; `sent` counts them as they go.
    pub async fn upload_blob(
        &self,
        digest: &str,
        file: &Path,
        sent: Arc<AtomicU64>,
    ) -> Result<(), ApiError> {
        let opened = tokio::fs::File::open(file).await.map_err(|error| io_error(file, &error))?;
        let size = opened.metadata().await.map_err(|error| io_error(file, &error))?.len();
        let chunks = futures_util::stream::unfold(opened, move |mut opened| {
            let sent = Arc::clone(&sent);
            async move {
                use tokio::io::AsyncReadExt;
                let mut buffer = vec![0u8; 1 << 20];
                match opened.read(&mut buffer).await {
                    Ok(0) => None,
                    Ok(read) => {
                        buffer.truncate(read);
                        sent.fetch_add(read as u64, Ordering::Relaxed);
                        Some((Ok(bytes::Bytes::from(buffer)), opened))
                    }
                    Err(error) => Some((Err(error), opened)),
                }
            }
        });
        let request = self
            .request(Method::POST, &format!("/api/blobs/{digest}"))
            .header(CONTENT_TYPE, "application/octet-stream")
            .header(CONTENT_LENGTH, size)
            .body(reqwest::Body::wrap_stream(chunks));
        send(request).await.map(drop)
    }

    /// `DELETE /api/delete`.
    pub async fn delete(&self, model: &str) -> Result<(), ApiError> {
        let body = json!({ "model": model });
        send(self.request(Method::DELETE, "/api/delete").json(&body).timeout(SHORT)).await.map(drop)
    }

    /// `POST /api/chat` without streaming, within `timeout`; the answer.
    pub async fn chat(&self, body: &Value, timeout: Duration) -> Result<Value, ApiError> {
        json_of(self.request(Method::POST, "/api/chat").json(body).timeout(timeout)).await
    }
}

/// Sends a request and turns error statuses into [`ApiError::Status`].
async fn send(request: RequestBuilder) -> Result<Response, ApiError> {
    let response = request.send().await.map_err(transport)?;
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let text = response.text().await.unwrap_or_default();
    Err(ApiError::Status { status: status.as_u16(), message: error_text(&text) })
}

async fn json_of<T: serde::de::DeserializeOwned>(request: RequestBuilder) -> Result<T, ApiError> {
    let response = send(request).await?;
    let text = response.text().await.map_err(transport)?;
    serde_json::from_str(&text)
        .map_err(|error| ApiError::BadAnswer(format!("{error}: {}", excerpt(&text))))
}

/// Reads a progress stream to its end: `success` completes it, an `error`
/// line fails it, and reaching the deadline without progress stalls it.
/// `deadline` is the first deadline and the window it was set with; each
/// line `on_line` calls progress moves it to now plus the window it returns.
async fn progress_stream(
    mut response: Response,
    deadline: (Instant, Duration),
    mut on_line: impl FnMut(&ProgressLine) -> Option<Duration>,
) -> Result<(), ApiError> {
    let (mut deadline, mut window) = deadline;
    let mut framing = LineParser::default();
    let mut outcome: Option<Result<(), ApiError>> = None;
    while outcome.is_none() {
        let piece = tokio::time::timeout_at(deadline, response.chunk())
            .await
            .map_err(|_| ApiError::Stalled(window))?
            .map_err(transport)?;
        let Some(bytes) = piece else { break };
        let fed = framing.feed(&bytes, |line| {
            if outcome.is_some() {
                return;
            }
            match serde_json::from_slice::<ProgressLine>(line) {
                Ok(parsed) => {
                    if let Some(next) = on_line(&parsed) {
                        (deadline, window) = (Instant::now() + next, next);
                    }
                    if let Some(error) = parsed.error {
                        outcome = Some(Err(ApiError::Stream(error)));
                    } else if parsed.status.as_deref() == Some("success") {
                        outcome = Some(Ok(()));
                    }
                }
                Err(error) => {
                    let text = String::from_utf8_lossy(line);
                    let detail = format!("{error}: {}", excerpt(&text));
                    outcome = Some(Err(ApiError::BadAnswer(detail)));
                }
            }
        });
        if let Err(error) = fed {
            return Err(ApiError::BadAnswer(error.to_string()));
        }
    }
    outcome
        .unwrap_or_else(|| Err(ApiError::Transport("the stream ended before `success`".to_owned())))
}

/// The `error` of an Ollama error body, else the body's start.
fn error_text(body: &str) -> String {
    let parsed = serde_json::from_str::<Value>(body).ok();
    match parsed.as_ref().and_then(|value| value["error"].as_str()) {
        Some(message) => message.to_owned(),
        None if body.trim().is_empty() => "no message".to_owned(),
        None => excerpt(body),
    }
}

/// A duration as people read it: `60 s`, `0.5 s`.
fn seconds(duration: Duration) -> String {
    let secs = duration.as_secs_f64();
    if secs.fract() == 0.0 { format!("{secs:.0} s") } else { format!("{secs:.1} s") }
}

fn excerpt(text: &str) -> String {
    crate::measure::ingest::excerpt(text.as_bytes())
}

fn transport(error: reqwest::Error) -> ApiError {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    ApiError::Transport(text)
}

fn io_error(path: &Path, error: &std::io::Error) -> ApiError {
    ApiError::Transport(format!("cannot read {}: {error}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_give_the_server_message() {
        let body = r#"{"error":"pull model manifest: file does not exist"}"#;
        assert_eq!(error_text(body), "pull model manifest: file does not exist");
        assert_eq!(error_text("  "), "no message");
        assert_eq!(error_text("Bad\n gateway"), "Bad gateway");
    }

    #[test]
    fn a_stall_names_its_window() {
        assert_eq!(ApiError::Stalled(Duration::from_secs(60)).to_string(), "no progress for 60 s");
        assert_eq!(
            ApiError::Stalled(Duration::from_millis(500)).to_string(),
            "no progress for 0.5 s"
        );
    }
}
