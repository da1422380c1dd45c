//! The IO-free half of the streaming client: bytes in, a [`RequestRecord`] out.
//!
//! [`StreamIngest`] is fed the response body exactly as it arrives, each piece
//! with the monotonic instant its bytes were received, and applies the
//! measurement definitions (DESIGN §6): which chunks are token events, what is
//! timestamped, where token counts come from, and which endings are failures.
//! Keeping it free of sockets lets unit tests drive it with exact instants and
//! lets the client benchmark measure its cost alone.
//!
//! All events completed by one piece of bytes share that piece's arrival
//! instant: the client cannot know when the server produced them, only when it
//! received them, so two token events delivered together are a gap of zero.
//!
//! Two wire protocols are read: OpenAI-compatible Server-Sent Events, and
//! Ollama's native newline-delimited JSON (see [`Protocol`]); both become the
//! same chunks, so the definitions are applied once.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::lines::LineParser;
use super::ollama;
use super::payload::{self, Chunk, Counters, Usage};
use super::record::{Failure, FailureClass, RequestRecord, TokenSource};
use super::sse::{SseError, SseEvent, SseParser};

/// The streaming API a request speaks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Protocol {
    /// OpenAI-compatible `/v1/chat/completions` and `/v1/completions`, streamed as SSE.
    #[default]
    OpenAi,
    /// Ollama's native `/api/chat` and `/api/generate`, streamed as JSON lines
    /// ending with a `done: true` line that carries the server's counters.
    Ollama,
}

impl Protocol {
    /// What a complete stream ends with, for failure messages.
    fn end_marker(self) -> &'static str {
        match self {
            Protocol::OpenAi => "`[DONE]` or a `finish_reason`",
            Protocol::Ollama => "the `done: true` line",
        }
    }
}

/// Most gaps reserved up front; longer streams grow the vector as usual.
const MAX_RESERVED_GAPS: usize = 4096;

/// Longest excerpt of server text kept in a failure message, in characters.
pub(crate) const EXCERPT_CHARS: usize = 200;

/// The moment a request was sent, on both clocks.
#[derive(Debug, Clone, Copy)]
pub struct Origin {
    /// Wall clock, nanoseconds since the Unix epoch (for ordering only).
    pub unix_ns: i64,
    /// Monotonic clock; every duration in the record starts here.
    pub instant: Instant,
}

impl Origin {
    /// Reads both clocks now.
    pub fn now() -> Self {
        let unix_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| i64::try_from(since.as_nanos()).unwrap_or(i64::MAX));
        Self { unix_ns, instant: Instant::now() }
    }
}

/// What the caller should do after feeding bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Keep reading.
    More,
    /// `[DONE]` arrived: the measurement is complete.
    Done,
    /// The request has failed; stop reading.
    Failed,
}

/// How the response body ended, as seen by the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEnd {
    /// The body ended normally (or the caller stopped after [`Flow::Done`]).
    Eof,
    /// Reading the body failed; the connection's reason.
    Cut(String),
    /// The request's deadline passed; the limit that applied.
    TimedOut(Duration),
}

/// Turns one streamed response into a [`RequestRecord`].
#[derive(Debug)]
pub struct StreamIngest<'r> {
    framing: Framing,
    tally: Tally<'r>,
}

/// How the body is cut into chunks.
#[derive(Debug)]
enum Framing {
    Sse(SseParser),
    Lines(LineParser),
}

impl<'r> StreamIngest<'r> {
    /// A fresh ingest of an OpenAI-compatible stream; see [`for_protocol`](Self::for_protocol).
    pub fn new(expected_model: Option<&'r str>, max_tokens: u32) -> Self {
        Self::for_protocol(Protocol::OpenAi, expected_model, max_tokens)
    }

    /// A fresh ingest of a `protocol` stream expecting `expected_model` when
    /// given, sized for about `max_tokens` token events. Its clock starts now;
    /// call [`start`](Self::start) to restart it at the moment of sending.
    pub fn for_protocol(
        protocol: Protocol,
        expected_model: Option<&'r str>,
        max_tokens: u32,
    ) -> Self {
        let reserve = usize::try_from(max_tokens)
            .map_or(MAX_RESERVED_GAPS, |n| n.saturating_sub(1).min(MAX_RESERVED_GAPS));
        let origin = Origin::now();
        let mut record = RequestRecord::new(origin.unix_ns);
        record.itl_ns.reserve(reserve);
        let tally = Tally {
            protocol,
            sent: origin.instant,
            expected_model,
            record,
            first: None,
            last: None,
            usage: Usage::default(),
            counters: Counters::default(),
            timings_event: Vec::new(),
            done: false,
            text: None,
        };
        let framing = match protocol {
            Protocol::OpenAi => Framing::Sse(SseParser::new()),
            Protocol::Ollama => Framing::Lines(LineParser::default()),
        };
        Self { framing, tally }
    }

    /// Restarts the clock: the request is being sent now. Allocation happens
    /// in [`new`](Self::new), so nothing but reading the clocks happens here.
    pub fn start(&mut self) -> Origin {
        let origin = Origin::now();
        self.tally.sent = origin.instant;
        self.tally.record.started_at_unix_ns = origin.unix_ns;
        origin
    }

    /// Consumes body bytes received at `at`.
    pub fn on_bytes(&mut self, at: Instant, bytes: &[u8]) -> Flow {
        let tally = &mut self.tally;
        let fed: Result<(), SseError> = match &mut self.framing {
            Framing::Sse(parser) => parser.feed(bytes, |event| tally.on_event(at, event)),
            Framing::Lines(parser) => parser.feed(bytes, |line| tally.on_data(at, line)),
        };
        if let Err(error) = fed {
            tally.fail(Failure::new(FailureClass::BadPayload, error.to_string()));
        }

        if tally.record.failure.is_some() {
            Flow::Failed
        } else if tally.done {
            Flow::Done
        } else {
            Flow::More
        }
    }

    /// Keeps the output text of the reply, for [`finish_with_text`](Self::finish_with_text).
    /// Quality benchmarks need it; measuring never does, so it is off by default.
    pub fn keep_text(&mut self) {
        self.tally.text = Some(String::new());
    }

    /// Marks the request failed; the first failure recorded is the one kept.
    pub fn fail(&mut self, failure: Failure) {
        self.tally.fail(failure);
    }

    /// Closes the measurement and produces the record.
    pub fn finish(self, end: StreamEnd) -> RequestRecord {
        self.finish_with_text(end).0
    }

    /// Closes the measurement and produces the record and the output text
    /// kept since [`keep_text`](Self::keep_text) (empty when it was not called).
    pub fn finish_with_text(mut self, end: StreamEnd) -> (RequestRecord, String) {
        if self.tally.record.failure.is_none() {
            let partial = match &self.framing {
                Framing::Sse(parser) => parser.has_partial_event(),
                Framing::Lines(parser) => parser.has_partial_line(),
            };
            if let Some(failure) = self.tally.end_failure(end, partial) {
                self.tally.fail(failure);
            }
        }
        let text = self.tally.text.take().unwrap_or_default();
        (self.tally.into_record(), text)
    }
}

/// Running measurement state, kept apart from the parser so both can be
/// borrowed at once while bytes are fed.
#[derive(Debug)]
struct Tally<'r> {
    protocol: Protocol,
    sent: Instant,
    expected_model: Option<&'r str>,
    /// The record under construction; its `itl_ns` and `chunks` grow live.
    record: RequestRecord,
    first: Option<Instant>,
    last: Option<Instant>,
    /// Latest `usage` values (servers send cumulative counts).
    usage: Usage,
    /// Latest engine counters (llama.cpp `timings`, Ollama's final line).
    counters: Counters,
    /// The last chunk that carried counters, copied into a reused buffer; it
    /// is parsed into a JSON value once, when the record is produced.
    timings_event: Vec<u8>,
    done: bool,
    /// The reply's output text, when the caller asked to keep it.
    text: Option<String>,
}

impl Tally<'_> {
    fn on_event(&mut self, at: Instant, event: SseEvent<'_>) {
        if self.record.failure.is_some() || self.done {
            return;
        }
        match event {
            SseEvent::Done => self.done = true,
            SseEvent::Data(data) => self.on_data(at, data),
        }
    }

    /// One chunk of JSON: an SSE event's data or an NDJSON line.
    fn on_data(&mut self, at: Instant, data: &[u8]) {
        if self.record.failure.is_some() || self.done {
            return;
        }
        let parsed = match self.protocol {
            Protocol::OpenAi => payload::parse_chunk(data),
            Protocol::Ollama => ollama::parse_line(data),
        };
        match parsed {
            Ok(chunk) => {
                let done = chunk.done;
                self.apply(at, chunk, data);
                self.done |= done;
            }
            Err(error) => {
                let message = format!("a chunk is not valid JSON ({error}): {}", excerpt(data));
                self.fail(Failure::new(FailureClass::BadPayload, message));
            }
        }
    }

    fn apply(&mut self, at: Instant, chunk: Chunk<'_>, data: &[u8]) {
        if let Some(error) = &chunk.error {
            self.fail(Failure::new(FailureClass::ServerError, server_error_message(error)));
            return;
        }
        if let Some(model) = chunk.model.0.as_deref() {
            self.check_model(model);
            if self.record.failure.is_some() {
                return;
            }
        }

        if chunk.choices.token {
            self.stamp(at, chunk.choices.output);
        }
        if chunk.choices.output
            && let Some(text) = self.text.as_mut()
        {
            match self.protocol {
                Protocol::OpenAi => payload::append_output(data, text),
                Protocol::Ollama => ollama::append_output(data, text),
            }
        }
        if let Some(reason) = chunk.choices.finish_reason.as_deref()
            && self.record.finish_reason.as_deref() != Some(reason)
        {
            self.record.finish_reason = Some(reason.to_owned());
        }
        if let Some(usage) = chunk.usage {
            self.usage.completion_tokens = usage.completion_tokens.or(self.usage.completion_tokens);
            self.usage.prompt_tokens = usage.prompt_tokens.or(self.usage.prompt_tokens);
            // Usage after the finish is the protocol's last chunk before `[DONE]`:
            // a server that then holds the connection open must not cost a timeout.
            if self.record.finish_reason.is_some() {
                self.done = true;
            }
        }
        if let Some(counters) = chunk.timings {
            self.counters = counters;
            self.timings_event.clear();
            self.timings_event.extend_from_slice(data);
        }
    }

    /// Records the served model the first time one is named, and checks it.
    fn check_model(&mut self, model: &str) {
        if self.record.served_model.is_some() {
            return;
        }
        self.record.served_model = Some(model.to_owned());
        if let Some(expected) = self.expected_model.filter(|expected| *expected != model) {
            let message = format!("expected model `{expected}`, the server streams `{model}`");
            self.fail(Failure::new(FailureClass::ModelMismatch, message));
        }
    }

    /// Timestamps one token event.
    fn stamp(&mut self, at: Instant, output: bool) {
        match self.last {
            Some(last) => self.record.itl_ns.push(nanos(at.saturating_duration_since(last))),
            None => {
                self.first = Some(at);
                self.record.ttft_ns = Some(self.since_sent(at));
            }
        }
        if output && self.record.ttfo_ns.is_none() {
            self.record.ttfo_ns = Some(self.since_sent(at));
        }
        self.last = Some(at);
        self.record.chunks = self.record.chunks.saturating_add(1);
    }

    fn since_sent(&self, at: Instant) -> u64 {
        nanos(at.saturating_duration_since(self.sent))
    }

    fn fail(&mut self, failure: Failure) {
        if self.record.failure.is_none() {
            self.record.failure = Some(failure);
        }
    }

    /// The failure implied by how the stream ended, if any.
    fn end_failure(&self, end: StreamEnd, partial: bool) -> Option<Failure> {
        let events = self.record.chunks;
        let complete = self.done || self.record.finish_reason.is_some();
        if let StreamEnd::TimedOut(limit) = end {
            let message = format!(
                "no complete response within {:.1} s ({events} token events received)",
                limit.as_secs_f64()
            );
            return Some(Failure::new(FailureClass::Timeout, message));
        }
        if !complete {
            let how = match end {
                StreamEnd::Cut(reason) => format!("the connection failed ({reason})"),
                _ if partial => "the server closed the stream mid-event".to_owned(),
                _ => "the server closed the stream".to_owned(),
            };
            let marker = self.protocol.end_marker();
            let message = format!("{how} before {marker}, after {events} token events");
            return Some(Failure::new(FailureClass::Truncated, message));
        }
        if events == 0 {
            let message = "the stream finished without any token event";
            return Some(Failure::new(FailureClass::EmptyStream, message));
        }
        None
    }

    fn into_record(mut self) -> RequestRecord {
        let events = u64::from(self.record.chunks);
        let counted = match (self.usage.completion_tokens, self.counters.predicted_n) {
            (Some(tokens), _) => Some((tokens, TokenSource::Usage)),
            (None, Some(tokens)) => Some((tokens, TokenSource::Engine)),
            (None, None) => (events > 0).then_some((events, TokenSource::Chunks)),
        };
        self.record.output_tokens = counted.map(|(tokens, _)| tokens);
        self.record.output_tokens_source = counted.map(|(_, source)| source);
        self.record.prompt_tokens = self.usage.prompt_tokens.or_else(|| {
            let cached = self.counters.cache_n.unwrap_or(0);
            self.counters.prompt_n.map(|evaluated| evaluated.saturating_add(cached))
        });

        if let (Some(first), Some(last)) = (self.first, self.last) {
            self.record.e2e_ns = Some(self.since_sent(last));
            let tokens = self.record.output_tokens.unwrap_or(0);
            if events >= 2 && tokens >= 2 {
                let span = nanos(last.saturating_duration_since(first));
                self.record.tpot_ns = Some(span as f64 / (tokens - 1) as f64);
            }
        }
        if !self.timings_event.is_empty() {
            self.record.server_timings = match self.protocol {
                Protocol::OpenAi => payload::timings_value(&self.timings_event),
                Protocol::Ollama => ollama::counters_value(&self.timings_event),
            };
        }
        self.record
    }
}

/// A duration in whole nanoseconds, saturating (u64 nanoseconds last 584 years).
fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// The message of an in-stream `error` object, or the object itself, shortened.
fn server_error_message(error: &serde_json::Value) -> String {
    // OpenAI-style servers send an object with a `message`, Ollama a plain string.
    let text = match error.get("message").and_then(|message| message.as_str()) {
        Some(message) => message.to_owned(),
        None => error.as_str().map_or_else(|| error.to_string(), str::to_owned),
    };
    format!("the server reported an error in the stream: {}", excerpt(text.as_bytes()))
}

/// A one-line excerpt of server bytes for a failure message (failure path only).
pub(crate) fn excerpt(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match flat.char_indices().nth(EXCERPT_CHARS) {
        Some((end, _)) => format!("{}…", &flat[..end]),
        None => flat,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    const MODEL: &str = "models/tiny-f32.gguf";
    const DONE: &[u8] = b"data: [DONE]\n\n";

    fn event(value: &Value) -> Vec<u8> {
        format!("data: {value}\n\n").into_bytes()
    }

    fn delta(delta: Value) -> Vec<u8> {
        let choice = json!({ "finish_reason": null, "index": 0, "delta": delta });
        event(&json!({ "choices": [choice], "model": MODEL, "object": "chat.completion.chunk" }))
    }

    fn content(text: &str) -> Vec<u8> {
        delta(json!({ "content": text }))
    }

    fn finish() -> Vec<u8> {
        let choice = json!({ "finish_reason": "length", "index": 0, "delta": {} });
        event(&json!({ "choices": [choice], "model": MODEL }))
    }

    fn usage(completion: u64) -> Vec<u8> {
        event(&json!({
            "choices": [], "model": MODEL,
            "usage": { "completion_tokens": completion, "prompt_tokens": 58 },
            "timings": { "prompt_n": 58, "cache_n": 0, "predicted_n": completion }
        }))
    }

    /// Feeds `(milliseconds after sending, bytes)` pieces and ends with `end`.
    fn run(pieces: &[(u64, Vec<u8>)], end: StreamEnd) -> RequestRecord {
        run_expecting(pieces, end, None)
    }

    fn run_expecting(
        pieces: &[(u64, Vec<u8>)],
        end: StreamEnd,
        expected: Option<&str>,
    ) -> RequestRecord {
        let mut ingest = StreamIngest::new(expected, 16);
        let origin = ingest.start();
        for (ms, bytes) in pieces {
            let at = origin.instant + Duration::from_millis(*ms);
            if ingest.on_bytes(at, bytes) != Flow::More {
                break;
            }
        }
        ingest.finish(end)
    }

    const MS: u64 = 1_000_000;

    fn class(record: &RequestRecord) -> Option<FailureClass> {
        record.failure.as_ref().map(|failure| failure.class)
    }

    #[test]
    fn timings_follow_the_metric_definitions() {
        let record = run(
            &[
                (5, delta(json!({ "role": "assistant", "content": null }))),
                (10, content("#")),
                (15, content("_")),
                (30, content("h")),
                (31, finish()),
                (40, usage(3)),
                (41, DONE.to_vec()),
            ],
            StreamEnd::Eof,
        );

        assert_eq!(record.failure, None);
        assert_eq!((record.ttft_ns, record.ttfo_ns), (Some(10 * MS), Some(10 * MS)));
        assert_eq!(record.e2e_ns, Some(30 * MS));
        assert_eq!(record.itl_ns, [5 * MS, 15 * MS]);
        assert_eq!(record.chunks, 3);
        assert_eq!(record.tpot_ns, Some(10.0 * MS as f64));
        assert_eq!(record.output_tokens, Some(3));
        assert_eq!(record.output_tokens_source, Some(TokenSource::Usage));
        assert_eq!(record.prompt_tokens, Some(58));
        assert_eq!(record.finish_reason.as_deref(), Some("length"));
        assert_eq!(record.served_model.as_deref(), Some(MODEL));
        let timings = record.server_timings.expect("timings kept");
        assert_eq!(timings["predicted_n"], json!(3));
    }

    #[test]
    fn reasoning_starts_ttft_and_content_starts_ttfo() {
        let pieces = [
            (10, delta(json!({ "reasoning_content": "Let" }))),
            (20, delta(json!({ "reasoning": " me" }))),
            (30, content("Yes")),
            (31, finish()),
            (32, DONE.to_vec()),
        ];
        let record = run(&pieces, StreamEnd::Eof);
        assert_eq!((record.ttft_ns, record.ttfo_ns), (Some(10 * MS), Some(30 * MS)));
        assert_eq!(record.chunks, 3);
    }

    #[test]
    fn events_arriving_together_share_their_arrival_instant() {
        let both = [content("a"), content("b")].concat();
        let record = run(&[(10, both), (11, finish()), (12, DONE.to_vec())], StreamEnd::Eof);
        assert_eq!(record.itl_ns, [0]);
        assert_eq!(record.e2e_ns, Some(10 * MS));
    }

    #[test]
    fn usage_chunk_counts_tokens_but_is_never_a_timestamp() {
        let pieces = [(10, content("Hello world")), (20, content("!")), (500, usage(7))];
        let record = run(&[&pieces[..], &[(501, DONE.to_vec())]].concat(), StreamEnd::Eof);
        assert_eq!(record.e2e_ns, Some(20 * MS));
        assert_eq!((record.chunks, record.output_tokens), (2, Some(7)));
        assert_eq!(record.tpot_ns, Some(10.0 * MS as f64 / 6.0));
    }

    #[test]
    fn counts_fall_back_to_engine_counters_then_to_chunks() {
        let timings = event(&json!({
            "choices": [{ "finish_reason": "stop", "index": 0, "delta": {} }],
            "timings": { "predicted_n": 9, "prompt_n": 4, "cache_n": 6 }
        }));
        let record = run(&[(1, content("a")), (2, timings), (3, DONE.to_vec())], StreamEnd::Eof);
        assert_eq!(record.output_tokens, Some(9));
        assert_eq!(record.output_tokens_source, Some(TokenSource::Engine));
        assert_eq!(record.prompt_tokens, Some(10));

        let pieces = [(1, content("a")), (2, content("b")), (3, finish()), (4, DONE.to_vec())];
        let record = run(&pieces, StreamEnd::Eof);
        assert_eq!(record.output_tokens, Some(2));
        assert_eq!(record.output_tokens_source, Some(TokenSource::Chunks));
        assert_eq!(record.server_timings, None);
    }

    #[test]
    fn one_token_has_no_tpot() {
        let record = run(&[(1, content("a")), (2, usage(1)), (3, DONE.to_vec())], StreamEnd::Eof);
        assert_eq!(record.tpot_ns, None);
        assert_eq!(record.e2e_ns, Some(MS));
    }

    #[test]
    fn endings_are_classified() {
        let record = run(&[(1, DONE.to_vec())], StreamEnd::Eof);
        assert_eq!(class(&record), Some(FailureClass::EmptyStream));

        let record = run(&[(1, content("a"))], StreamEnd::Eof);
        assert_eq!(class(&record), Some(FailureClass::Truncated));
        assert_eq!(record.chunks, 1, "a failed request keeps what was measured");

        let record = run(&[(1, content("a"))], StreamEnd::Cut("connection reset".into()));
        let failure = record.failure.expect("a cut stream fails");
        assert_eq!(failure.class, FailureClass::Truncated);
        assert!(failure.message.contains("connection reset"), "{failure}");

        let record = run(&[(1, content("a"))], StreamEnd::TimedOut(Duration::from_secs(2)));
        assert_eq!(class(&record), Some(FailureClass::Timeout));

        let record = run(&[(1, content("a")), (2, finish())], StreamEnd::Eof);
        assert_eq!(class(&record), None, "a finish_reason completes a stream without [DONE]");
    }

    #[test]
    fn invalid_chunks_fail_as_bad_payload() {
        let record = run(&[(1, b"data: {not json\n\n".to_vec())], StreamEnd::Eof);
        let failure = record.failure.expect("bad JSON fails");
        assert_eq!(failure.class, FailureClass::BadPayload);
        assert!(failure.message.contains("{not json"), "{failure}");
    }

    #[test]
    fn another_served_model_fails_and_stops_reading() {
        let mut ingest = StreamIngest::new(Some("tiny"), 4);
        let origin = ingest.start();
        assert_eq!(ingest.on_bytes(origin.instant, &content("a")), Flow::Failed);
        let record = ingest.finish(StreamEnd::Eof);
        assert_eq!(class(&record), Some(FailureClass::ModelMismatch));
        assert_eq!(record.served_model.as_deref(), Some(MODEL));
        assert_eq!(record.chunks, 0);

        let pieces = [(1, content("a")), (2, finish()), (3, DONE.to_vec())];
        let record = run_expecting(&pieces, StreamEnd::Eof, Some(MODEL));
        assert_eq!(class(&record), None);
    }

    #[test]
    fn error_chunk_fails_as_server_error() {
        let error = event(&json!({ "error": { "code": 500, "message": "context full" } }));
        let record = run(&[(1, content("a")), (2, error)], StreamEnd::Eof);
        let failure = record.failure.expect("an error chunk fails");
        assert_eq!(failure.class, FailureClass::ServerError);
        assert!(failure.message.contains("context full"), "{failure}");
    }

    #[test]
    fn nothing_after_done_is_read() {
        let mut ingest = StreamIngest::new(None, 4);
        let origin = ingest.start();
        let bytes = [content("a"), DONE.to_vec(), content("b")].concat();
        assert_eq!(ingest.on_bytes(origin.instant, &bytes), Flow::Done);
        assert_eq!(ingest.finish(StreamEnd::Eof).chunks, 1);
    }

    #[test]
    fn excerpts_are_single_line_and_short() {
        assert_eq!(excerpt(b" a\n  b\tc "), "a b c");
        let long = "x".repeat(EXCERPT_CHARS + 10);
        assert_eq!(excerpt(long.as_bytes()).chars().count(), EXCERPT_CHARS + 1);
    }
}
