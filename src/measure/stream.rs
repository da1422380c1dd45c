//! The streaming OpenAI-compatible client: one request in, one
//! [`RequestRecord`] out.
//!
//! [`StreamClient`] sends `POST {base}/v1/chat/completions` or
//! `/v1/completions` with `stream: true` and `stream_options.include_usage:
//! true` (or, for [`Protocol::Ollama`], Ollama's native `/api/chat` or
//! `/api/generate` with `stream: true` and the length in `options.num_predict`),
//! reads the body piece by piece, and stamps each piece on the
//! monotonic clock the moment it is handed over by the HTTP stack, before any
//! parsing. The measurement rules themselves live in [`super::ingest`].
//! "Request sent" is read just before the request is handed to reqwest, so
//! TTFT includes connecting and writing the request.
//!
//! Every request opens its own connection. llama-server answers a streamed
//! request with `Keep-Alive` yet closes the connection once the stream ends;
//! a pooled connection then races its own close, and the next request may be
//! written to a dead socket ("connection closed before message completed").
//! Without a pool every request pays the same, small, loopback connect.
//!
//! `send` never returns an error: every failure (connection, status, deadline,
//! protocol) is data in the record, because a failed request is a result to
//! count, not a reason to stop a benchmark. The client does not retry, does
//! not pace requests and does not go through proxies (a proxy would be part
//! of what is measured); those choices belong to the benchmark driving it.

use std::error::Error as _;
use std::time::{Duration, Instant};

use reqwest::header::{ACCEPT, CONTENT_TYPE};
use reqwest::{Response, StatusCode};
use serde::Serialize;
use serde_json::{Map, Value, json};
use tracing::debug;

use super::ingest::{Flow, Protocol, StreamEnd, StreamIngest, excerpt};
use super::record::{Failure, FailureClass, RequestRecord};
use crate::acquire::http::{base_url, user_agent};

/// How long to wait for a TCP connection before the request fails.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Deadline of a request when the caller sets none.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

/// How much of an error response body is read for the failure message.
const ERROR_BODY_BYTES: usize = 2048;

/// A client that cannot be created.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The base URL is not an `http`/`https` URL with a host.
    #[error("invalid server URL `{value}`: expected http://host:port")]
    BaseUrl {
        /// The URL given.
        value: String,
    },
    /// The HTTP client could not be built (TLS backend initialisation).
    #[error("could not build the HTTP client")]
    Build(#[source] reqwest::Error),
}

/// What is being asked: a chat conversation or a plain-text prompt.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// `POST /v1/chat/completions` with these messages.
    Chat(Vec<ChatMessage>),
    /// `POST /v1/completions` with this prompt.
    Completion(String),
}

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The message text.
    pub content: String,
}

impl ChatMessage {
    /// A `user` message.
    pub fn user(content: impl Into<String>) -> Self {
        Self { role: "user".to_owned(), content: content.into() }
    }
}

/// One streamed request, as the benchmark wants it sent.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamRequest {
    /// Endpoint and its input.
    pub input: Input,
    /// The `model` field of the request.
    pub model: String,
    /// `max_tokens`.
    pub max_tokens: u32,
    /// `temperature`, omitted when `None`.
    pub temperature: Option<f64>,
    /// Engine-specific fields merged into the body (`cache_prompt`,
    /// `ignore_eos`, `min_tokens`, ...); they override kitt's own fields
    /// except `stream` and `stream_options.include_usage`, which are forced.
    pub extra: Map<String, Value>,
    /// When set, a stream naming another model fails as `model_mismatch`.
    pub expected_model: Option<String>,
    /// Deadline for the whole request, from sending to the end of the stream.
    pub timeout: Duration,
    /// The API spoken: OpenAI-compatible (the default) or Ollama's native one.
    pub protocol: Protocol,
}

impl StreamRequest {
    /// A chat request with default settings.
    pub fn chat(model: impl Into<String>, messages: Vec<ChatMessage>, max_tokens: u32) -> Self {
        Self::with_input(Input::Chat(messages), model.into(), max_tokens)
    }

    /// A text-completion request with default settings.
    pub fn completion(
        model: impl Into<String>,
        prompt: impl Into<String>,
        max_tokens: u32,
    ) -> Self {
        Self::with_input(Input::Completion(prompt.into()), model.into(), max_tokens)
    }

    fn with_input(input: Input, model: String, max_tokens: u32) -> Self {
        Self {
            input,
            model,
            max_tokens,
            temperature: None,
            extra: Map::new(),
            expected_model: None,
            timeout: DEFAULT_TIMEOUT,
            protocol: Protocol::OpenAi,
        }
    }

    /// The path of the endpoint, below the base URL.
    pub fn path(&self) -> &'static str {
        match (self.protocol, &self.input) {
            (Protocol::OpenAi, Input::Chat(_)) => "/v1/chat/completions",
            (Protocol::OpenAi, Input::Completion(_)) => "/v1/completions",
            (Protocol::Ollama, Input::Chat(_)) => "/api/chat",
            (Protocol::Ollama, Input::Completion(_)) => "/api/generate",
        }
    }

    /// The JSON body sent.
    pub fn body(&self) -> Value {
        match self.protocol {
            Protocol::OpenAi => self.openai_body(),
            Protocol::Ollama => self.ollama_body(),
        }
    }

    /// The content type the stream must have, and the `Accept` header asking for it.
    fn stream_type(&self) -> &'static str {
        match self.protocol {
            Protocol::OpenAi => "text/event-stream",
            Protocol::Ollama => "application/x-ndjson",
        }
    }

    fn openai_body(&self) -> Value {
        let mut body = Map::new();
        body.insert("model".to_owned(), Value::from(self.model.as_str()));
        match &self.input {
            Input::Chat(messages) => body.insert("messages".to_owned(), json!(messages)),
            Input::Completion(prompt) => body.insert("prompt".to_owned(), json!(prompt)),
        };
        body.insert("max_tokens".to_owned(), Value::from(self.max_tokens));
        if let Some(temperature) = self.temperature {
            body.insert("temperature".to_owned(), Value::from(temperature));
        }
        body.extend(self.extra.iter().map(|(key, value)| (key.clone(), value.clone())));

        body.insert("stream".to_owned(), Value::Bool(true));
        let options = body.entry("stream_options").or_insert_with(|| json!({}));
        if !options.is_object() {
            *options = json!({});
        }
        if let Some(options) = options.as_object_mut() {
            options.insert("include_usage".to_owned(), Value::Bool(true));
        }
        Value::Object(body)
    }

    /// Ollama's native body: sampling settings live in `options`. An `options`
    /// object among the extra fields is merged into kitt's own (its keys win),
    /// every other extra field is set at the top level.
    fn ollama_body(&self) -> Value {
        let mut body = Map::new();
        body.insert("model".to_owned(), Value::from(self.model.as_str()));
        match &self.input {
            Input::Chat(messages) => body.insert("messages".to_owned(), json!(messages)),
            Input::Completion(prompt) => body.insert("prompt".to_owned(), json!(prompt)),
        };
        let mut options = Map::new();
        options.insert("num_predict".to_owned(), Value::from(self.max_tokens));
        if let Some(temperature) = self.temperature {
            options.insert("temperature".to_owned(), Value::from(temperature));
        }
        for (key, value) in &self.extra {
            match (key.as_str(), value.as_object()) {
                ("options", Some(extra)) => options.extend(extra.clone()),
                _ => {
                    body.insert(key.clone(), value.clone());
                }
            }
        }
        body.insert("options".to_owned(), Value::Object(options));
        body.insert("stream".to_owned(), Value::Bool(true));
        Value::Object(body)
    }
}

/// The streaming client; cheap to clone (clones share one HTTP client).
#[derive(Debug, Clone)]
pub struct StreamClient {
    http: reqwest::Client,
    base: String,
}

impl StreamClient {
    /// A client for the server at `base` (`http://127.0.0.1:8080`).
    pub fn new(base: &str) -> Result<Self, ClientError> {
        let base = base_url(base).ok_or_else(|| ClientError::BaseUrl { value: base.to_owned() })?;
        let http = reqwest::Client::builder()
            .user_agent(user_agent())
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            // TODO: a remote `openai` server over TLS pays a handshake per request;
            // pool connections for servers known to keep streamed connections open.
            .pool_max_idle_per_host(0)
            .no_proxy()
            .build()
            .map_err(ClientError::Build)?;
        Ok(Self { http, base })
    }

    /// The server's base URL, without a trailing `/`.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The HTTP client, for the non-streaming exchanges of [`super::logprobs`].
    pub(super) fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Sends `request` and measures its stream.
    pub async fn send(&self, request: &StreamRequest) -> RequestRecord {
        self.send_timed(request).await.0
    }

    /// Like [`send`](Self::send), also returning the reply's output text
    /// (content or completion text, without reasoning), for scoring answers.
    pub async fn send_keeping_text(&self, request: &StreamRequest) -> (RequestRecord, String) {
        let (record, text, _) = self.exchange(request, true).await;
        (record, text)
    }

    /// Like [`send`](Self::send), also returning the monotonic instant the
    /// request was sent, so a caller in the same process can line kitt's
    /// stamps up with its own (the client benchmark does).
    pub async fn send_timed(&self, request: &StreamRequest) -> (RequestRecord, Instant) {
        let (record, _, sent) = self.exchange(request, false).await;
        (record, sent)
    }

    async fn exchange(
        &self,
        request: &StreamRequest,
        keep_text: bool,
    ) -> (RequestRecord, String, Instant) {
        let url = format!("{}{}", self.base, request.path());
        let body = request.body().to_string();
        let builder = self
            .http
            .post(url)
            .header(CONTENT_TYPE, "application/json")
            .header(ACCEPT, request.stream_type())
            .body(body);

        let expected = request.expected_model.as_deref();
        let mut ingest = StreamIngest::for_protocol(request.protocol, expected, request.max_tokens);
        if keep_text {
            ingest.keep_text();
        }
        let origin = ingest.start();
        let deadline = tokio::time::Instant::from_std(origin.instant + request.timeout);

        let end = match tokio::time::timeout_at(deadline, builder.send()).await {
            Err(_) => StreamEnd::TimedOut(request.timeout),
            Ok(Err(error)) => {
                ingest.fail(send_failure(&error, request.timeout));
                StreamEnd::Eof
            }
            Ok(Ok(response)) => read_response(response, &mut ingest, deadline, request).await,
        };

        let (record, text) = ingest.finish_with_text(end);
        if let Some(failure) = &record.failure {
            debug!(class = %failure.class, "request failed: {}", failure.message);
        }
        (record, text, origin.instant)
    }
}

/// Checks the status and content type, then streams the body into `ingest`.
async fn read_response(
    mut response: Response,
    ingest: &mut StreamIngest<'_>,
    deadline: tokio::time::Instant,
    request: &StreamRequest,
) -> StreamEnd {
    let status = response.status();
    if !status.is_success() {
        let body = read_excerpt(&mut response, deadline).await;
        ingest.fail(status_failure(status, &body));
        return StreamEnd::Eof;
    }
    if let Some(kind) = response.headers().get(CONTENT_TYPE) {
        let kind = String::from_utf8_lossy(kind.as_bytes());
        let expected = request.stream_type();
        if !kind.trim_start().starts_with(expected) {
            let message = format!("expected `{expected}`, the server sent `{kind}`");
            ingest.fail(Failure::new(FailureClass::BadPayload, message));
            return StreamEnd::Eof;
        }
    }

    let sleep = tokio::time::sleep_until(deadline);
    tokio::pin!(sleep);
    loop {
        // Biased: a piece that is ready wins over a deadline that is also due,
        // and the instant is read before anything else touches the bytes.
        let piece = tokio::select! {
            biased;
            piece = response.chunk() => piece,
            () = &mut sleep => return StreamEnd::TimedOut(request.timeout),
        };
        let at = Instant::now();
        match piece {
            Ok(Some(bytes)) => match ingest.on_bytes(at, &bytes) {
                Flow::More => {}
                Flow::Done | Flow::Failed => return StreamEnd::Eof,
            },
            Ok(None) => return StreamEnd::Eof,
            Err(error) => return StreamEnd::Cut(error_chain(&error)),
        }
    }
}

/// The first bytes of an error body, as a one-line excerpt.
pub(super) async fn read_excerpt(
    response: &mut Response,
    deadline: tokio::time::Instant,
) -> String {
    let mut body = Vec::new();
    while body.len() < ERROR_BODY_BYTES {
        match tokio::time::timeout_at(deadline, response.chunk()).await {
            Ok(Ok(Some(bytes))) => body.extend_from_slice(&bytes),
            _ => break,
        }
    }
    body.truncate(ERROR_BODY_BYTES);
    excerpt(&body)
}

/// The failure for an error status; 503 is what llama-server answers while loading.
pub(super) fn status_failure(status: StatusCode, body: &str) -> Failure {
    let class = match status {
        StatusCode::SERVICE_UNAVAILABLE => FailureClass::Loading,
        _ => FailureClass::Http,
    };
    let message =
        if body.is_empty() { format!("HTTP {status}") } else { format!("HTTP {status}: {body}") };
    Failure::new(class, message)
}

/// The failure for a request that got no response at all.
pub(super) fn send_failure(error: &reqwest::Error, timeout: Duration) -> Failure {
    // A connect timeout is also a timeout to reqwest, but it is the connection
    // that failed, not the request's deadline that passed.
    if error.is_timeout() && !error.is_connect() {
        let message = format!("no response within {:.1} s", timeout.as_secs_f64());
        return Failure::new(FailureClass::Timeout, message);
    }
    Failure::new(FailureClass::Connect, format!("no response: {}", error_chain(error)))
}

/// An error and its causes on one line, `outer: inner: root`.
fn error_chain(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_forces_streaming_with_usage_and_keeps_extra_fields() {
        let mut request = StreamRequest::chat("tiny", vec![ChatMessage::user("Hi")], 16);
        request.temperature = Some(0.0);
        request.extra.insert("cache_prompt".into(), json!(false));
        request.extra.insert("stream".into(), json!(false));
        request.extra.insert("stream_options".into(), json!({ "continuous_usage_stats": true }));

        let body = request.body();
        assert_eq!(body["stream"], json!(true));
        assert_eq!(body["stream_options"]["include_usage"], json!(true));
        assert_eq!(body["stream_options"]["continuous_usage_stats"], json!(true));
        assert_eq!(body["cache_prompt"], json!(false));
        assert_eq!(body["messages"], json!([{ "role": "user", "content": "Hi" }]));
        assert_eq!(
            (body["max_tokens"].clone(), body["temperature"].clone()),
            (json!(16), json!(0.0))
        );
        assert_eq!(request.path(), "/v1/chat/completions");
    }

    #[test]
    fn completion_body_carries_the_prompt() {
        let request = StreamRequest::completion("tiny", "Once", 8);
        let body = request.body();
        assert_eq!((body["prompt"].clone(), body.get("messages")), (json!("Once"), None));
        assert_eq!(body.get("temperature"), None);
        assert_eq!(request.path(), "/v1/completions");
    }

    #[test]
    fn ollama_body_puts_sampling_in_options_and_merges_extra_options() {
        let mut request = StreamRequest::chat("llama3.2:1b", vec![ChatMessage::user("Hi")], 16);
        request.protocol = Protocol::Ollama;
        request.temperature = Some(0.0);
        request.extra.insert("options".into(), json!({ "num_ctx": 4096, "num_thread": 2 }));
        request.extra.insert("keep_alive".into(), json!(-1));
        request.extra.insert("stream".into(), json!(false));

        assert_eq!(
            request.body(),
            json!({
                "model": "llama3.2:1b",
                "messages": [{ "role": "user", "content": "Hi" }],
                "options": { "num_predict": 16, "temperature": 0.0, "num_ctx": 4096, "num_thread": 2 },
                "keep_alive": -1,
                "stream": true,
            })
        );
        assert_eq!(request.path(), "/api/chat");
        assert_eq!(request.stream_type(), "application/x-ndjson");
        request.input = Input::Completion("Once".into());
        assert_eq!((request.path(), &request.body()["prompt"]), ("/api/generate", &json!("Once")));
    }

    #[test]
    fn invalid_base_urls_are_refused() {
        assert!(matches!(StreamClient::new("not a url"), Err(ClientError::BaseUrl { .. })));
        let client = StreamClient::new("http://127.0.0.1:8080/").expect("valid URL");
        assert_eq!(client.base(), "http://127.0.0.1:8080");
    }

    #[test]
    fn status_503_is_loading_and_others_are_http() {
        let failure = status_failure(StatusCode::SERVICE_UNAVAILABLE, "Loading model");
        assert_eq!(failure.class, FailureClass::Loading);
        assert_eq!(failure.message, "HTTP 503 Service Unavailable: Loading model");
        assert_eq!(status_failure(StatusCode::NOT_FOUND, "").class, FailureClass::Http);
    }
}
