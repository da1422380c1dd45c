//! Measurement: one streaming OpenAI-compatible client that records raw
//! per-request timestamps, and the statistics computed from them.
//!
//! - `sse`: incremental Server-Sent-Events parsing of the response body.
//! - `payload` (private): reading one JSON chunk without building a tree.
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
pub mod logprobs;
mod payload;
pub mod record;
pub mod sse;
pub mod stats;
pub mod stream;

pub use ingest::{Flow, Origin, StreamEnd, StreamIngest};
pub use logprobs::{LogprobRequest, PromptLogprobs, Tail};
pub use record::{Failure, FailureClass, METRICS_VERSION, RequestRecord, TokenSource};
pub use stats::{Summary, percentile};
pub use stream::{ChatMessage, ClientError, Input, StreamClient, StreamRequest};
