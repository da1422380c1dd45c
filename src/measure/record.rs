//! The raw per-request record kitt stores for every streamed request.
//!
//! A record holds what the client observed, as integers of nanoseconds
//! measured on the monotonic clock from the instant the request was sent, plus
//! the counts and metadata the server reported. It is the unit the store keeps
//! and the input of every statistic; nothing here aggregates across requests.
//!
//! A failed request keeps whatever was measured before it failed (useful when
//! diagnosing), but [`RequestRecord::is_success`] is false and callers must
//! leave it out of latency statistics: it only counts toward the error rate.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Version of the metric definitions below; stored with every result so that
/// numbers computed under different definitions are never compared silently.
pub const METRICS_VERSION: u32 = 1;

/// Everything kitt keeps about one streamed request.
///
/// A *token event* is a chunk whose choice carries non-empty `content`,
/// `text`, `reasoning_content`, `reasoning` or `tool_calls`; all the timings
/// below are taken from token events only, stamped when their bytes arrived.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestRecord {
    /// Wall-clock time the request was sent, in nanoseconds since the Unix
    /// epoch; only for ordering requests, never for durations.
    pub started_at_unix_ns: i64,
    /// First token event (reasoning included) minus request sent.
    pub ttft_ns: Option<u64>,
    /// First *output* token event (content, text or tool call; not reasoning)
    /// minus request sent.
    pub ttfo_ns: Option<u64>,
    /// Last token event minus request sent.
    pub e2e_ns: Option<u64>,
    /// (last − first token event) / (output tokens − 1); absent with fewer
    /// than two token events or two output tokens.
    pub tpot_ns: Option<f64>,
    /// Gaps between consecutive token events, in arrival order.
    pub itl_ns: Vec<u64>,
    /// Number of token events seen.
    pub chunks: u32,
    /// Output tokens generated, from the source named next to it.
    pub output_tokens: Option<u64>,
    /// Where `output_tokens` came from.
    pub output_tokens_source: Option<TokenSource>,
    /// Prompt tokens, from usage or else the engine's counters.
    pub prompt_tokens: Option<u64>,
    /// The engine's own counters as last sent: llama.cpp's `timings` object,
    /// or the counters of Ollama's final line (`prompt_eval_count`,
    /// `eval_count`, and `*_duration` in nanoseconds).
    pub server_timings: Option<serde_json::Value>,
    /// The `model` the server named in its chunks.
    pub served_model: Option<String>,
    /// The `finish_reason` the server gave (`stop`, `length`, ...).
    pub finish_reason: Option<String>,
    /// Why the request failed; `None` for a successful request.
    pub failure: Option<Failure>,
}

impl RequestRecord {
    /// An empty record for a request sent at `started_at_unix_ns`.
    pub fn new(started_at_unix_ns: i64) -> Self {
        Self {
            started_at_unix_ns,
            ttft_ns: None,
            ttfo_ns: None,
            e2e_ns: None,
            tpot_ns: None,
            itl_ns: Vec::new(),
            chunks: 0,
            output_tokens: None,
            output_tokens_source: None,
            prompt_tokens: None,
            server_timings: None,
            served_model: None,
            finish_reason: None,
            failure: None,
        }
    }

    /// Whether the request succeeded and may enter latency statistics.
    pub fn is_success(&self) -> bool {
        self.failure.is_none()
    }
}

/// Where an output token count came from, best first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenSource {
    /// The server's `usage.completion_tokens`.
    Usage,
    /// The engine's own counters (llama.cpp `timings.predicted_n`, Ollama `eval_count`).
    Engine,
    /// The number of token events, a lower bound when chunks carry several tokens.
    Chunks,
}

/// Why a request failed: a class for counting and a message for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// The kind of failure.
    pub class: FailureClass,
    /// What happened, in one line (with a short excerpt of what the server sent).
    pub message: String,
}

impl Failure {
    /// A failure of `class` described by `message`.
    pub fn new(class: FailureClass, message: impl Into<String>) -> Self {
        Self { class, message: message.into() }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.class, self.message)
    }
}

/// The kinds of failed request kitt distinguishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureClass {
    /// No response: the connection was refused, reset or closed before headers.
    Connect,
    /// The request's deadline passed before the stream ended.
    Timeout,
    /// The server answered with an error status other than 503.
    Http,
    /// The server answered 503, which llama-server sends while loading a model.
    Loading,
    /// The stream ended properly but carried no token event.
    EmptyStream,
    /// The stream stopped before `[DONE]` or a `finish_reason`.
    Truncated,
    /// The server sent something that is not the streaming protocol.
    BadPayload,
    /// The server reported an error inside the stream (an `error` chunk).
    ServerError,
    /// The server streamed from a model other than the one expected.
    ModelMismatch,
}

impl FailureClass {
    /// The stable snake_case name used in storage and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureClass::Connect => "connect",
            FailureClass::Timeout => "timeout",
            FailureClass::Http => "http",
            FailureClass::Loading => "loading",
            FailureClass::EmptyStream => "empty_stream",
            FailureClass::Truncated => "truncated",
            FailureClass::BadPayload => "bad_payload",
            FailureClass::ServerError => "server_error",
            FailureClass::ModelMismatch => "model_mismatch",
        }
    }
}

impl fmt::Display for FailureClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_class_names_match_their_serde_form() {
        let classes = [
            FailureClass::Connect,
            FailureClass::Timeout,
            FailureClass::Http,
            FailureClass::Loading,
            FailureClass::EmptyStream,
            FailureClass::Truncated,
            FailureClass::BadPayload,
            FailureClass::ServerError,
            FailureClass::ModelMismatch,
        ];
        for class in classes {
            let json = serde_json::to_value(class).expect("serialize a class");
            assert_eq!(json, serde_json::Value::from(class.as_str()));
        }
    }

    #[test]
    fn record_round_trips_through_json() {
        let mut record = RequestRecord::new(1_700_000_000_000_000_000);
        record.ttft_ns = Some(12_000_000);
        record.itl_ns = vec![1_000_000, 2_000_000];
        record.chunks = 3;
        record.output_tokens = Some(3);
        record.output_tokens_source = Some(TokenSource::Usage);
        record.server_timings = Some(serde_json::json!({ "predicted_n": 3 }));
        record.failure = Some(Failure::new(FailureClass::Truncated, "cut"));

        let json = serde_json::to_string(&record).expect("serialize a record");
        let back: RequestRecord = serde_json::from_str(&json).expect("parse a record");
        assert_eq!(back, record);
        assert!(!back.is_success());
    }
}
