//! Measurement: one streaming client (OpenAI-compatible SSE, or Ollama's
//! native JSON lines) that records raw per-request timestamps, and the
//! statistics computed from them.
//!
//! - `sse`: incremental Server-Sent-Events parsing of the response body.
//! - `lines`: incremental newline-delimited JSON framing (Ollama's native API).
//! - `payload` (private): reading one JSON chunk without building a tree.
//! - `ollama` (private): reading one line of Ollama's native stream as a chunk.
//! - `ingest`: the metric definitions (DESIGN §6) applied to arriving bytes.
//! - `stream`: the HTTP client that sends a request and feeds `ingest`.
//! - `logprobs`: the one non-streaming exchange, prompt log-probabilities
//!   for log-likelihood scoring of quality benchmarks.
//! - `record`: the per-request record that is stored.
//! - `stats`: the percentile function and summaries.
//!
//! Benchmarks, suites and the store are built on top of this module; it does
//! not pace requests, aggregate runs or write anything.

pub mod ingest;
pub mod lines;
pub mod logprobs;
mod ollama;
mod payload;
pub mod record;
pub mod sse;
pub mod stats;
pub mod stream;

pub use ingest::{Flow, Origin, Protocol, StreamEnd, StreamIngest};
pub use logprobs::{LogprobRequest, PromptLogprobs, Tail};
pub use record::{Failure, FailureClass, METRICS_VERSION, RequestRecord, TokenSource};
pub use stats::{Summary, percentile};
pub use stream::{ChatMessage, ClientError, Input, StreamClient, StreamRequest};
