//! Reading one line of Ollama's native stream (`/api/chat`, `/api/generate`)
//! into the same [`Chunk`] an OpenAI-compatible chunk becomes, so that one
//! set of measurement rules applies to both.
//!
//! A chat line carries `message.content` (output), `message.thinking`
//! (reasoning) or `message.tool_calls`; a generate line carries `response`
//! and `thinking`. The last line has `done: true`, a `done_reason` and the
//! server's counters (`eval_count` output tokens, `prompt_eval_count` prompt
//! tokens, and durations in nanoseconds). An error arrives as a line with an
//! `error` string. Like `payload`, strings are borrowed and content is only
//! checked for emptiness.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::Value;

use super::payload::{Choices, Chunk, Counters, Presence, Text};

/// The counters of the final line that are kept with each request record.
const COUNTERS: &[&str] = &[
    "prompt_eval_count",
    "prompt_eval_duration",
    "eval_count",
    "eval_duration",
    "load_duration",
    "total_duration",
];

#[derive(Debug, Default, Deserialize)]
struct Line<'a> {
    #[serde(borrow, default)]
    model: Text<'a>,
    #[serde(default)]
    message: Option<Message>,
    #[serde(default)]
    response: Presence,
    #[serde(default)]
    thinking: Presence,
    #[serde(default)]
    done: bool,
    #[serde(borrow, default)]
    done_reason: Text<'a>,
    #[serde(default)]
    eval_count: Option<u64>,
    #[serde(default)]
    prompt_eval_count: Option<u64>,
    #[serde(default)]
    error: Option<Value>,
}

/// The token-bearing fields of a chat `message`; `role` is deliberately not read.
#[derive(Debug, Default, Deserialize)]
struct Message {
    #[serde(default)]
    content: Presence,
    #[serde(default)]
    thinking: Presence,
    #[serde(default)]
    tool_calls: Presence,
}

/// Reads one line. The final line's `done_reason` is its finish reason
/// (`stop` when the server gives none) and its counters are the engine's.
pub(crate) fn parse_line(data: &[u8]) -> Result<Chunk<'_>, serde_json::Error> {
    let line: Line<'_> = serde_json::from_slice(data)?;
    let message = line.message.unwrap_or_default();
    let output = message.content.0 || message.tool_calls.0 || line.response.0;
    let reasoning = message.thinking.0 || line.thinking.0;
    let finish_reason = line.done.then(|| line.done_reason.0.unwrap_or(Cow::Borrowed("stop")));
    let counted = line.eval_count.is_some() || line.prompt_eval_count.is_some();
    let timings = (line.done && counted).then_some(Counters {
        predicted_n: line.eval_count,
        prompt_n: line.prompt_eval_count,
        cache_n: None,
    });
    Ok(Chunk {
        model: line.model,
        choices: Choices { token: output || reasoning, output, finish_reason },
        usage: None,
        timings,
        error: line.error,
        done: line.done,
    })
}

/// Appends the output text of a line (`message.content` or `response`) to
/// `out`, for callers that keep replies.
pub(crate) fn append_output(data: &[u8], out: &mut String) {
    #[derive(Deserialize)]
    struct Texts {
        #[serde(default)]
        message: Option<TextMessage>,
        #[serde(default)]
        response: Option<String>,
    }
    #[derive(Deserialize)]
    struct TextMessage {
        #[serde(default)]
        content: Option<String>,
    }
    let Ok(line) = serde_json::from_slice::<Texts>(data) else { return };
    let content = line.message.and_then(|message| message.content);
    for piece in [content, line.response].into_iter().flatten() {
        out.push_str(&piece);
    }
}

/// The server's counters of the final line, as an object, for storage.
pub(crate) fn counters_value(data: &[u8]) -> Option<Value> {
    let Ok(Value::Object(line)) = serde_json::from_slice::<Value>(data) else { return None };
    let kept: serde_json::Map<String, Value> = COUNTERS
        .iter()
        .filter_map(|key| line.get(*key).map(|value| ((*key).to_owned(), value.clone())))
        .collect();
    (!kept.is_empty()).then_some(Value::Object(kept))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::measure::{
        FailureClass, Flow, Protocol, RequestRecord, StreamEnd, StreamIngest, TokenSource,
    };

    fn line(json: &str) -> Chunk<'_> {
        parse_line(json.as_bytes()).expect("a valid line")
    }

    #[test]
    fn content_is_output_and_thinking_is_reasoning() {
        let content =
            line(r#"{"model":"m","message":{"role":"assistant","content":"The"},"done":false}"#);
        assert!(content.choices.token && content.choices.output && !content.done);
        assert_eq!(content.model.0.as_deref(), Some("m"));

        let thinking = line(r#"{"message":{"role":"assistant","content":"","thinking":"hm"}}"#);
        assert!(thinking.choices.token && !thinking.choices.output);

        let generate = line(r#"{"response":" sky","done":false}"#);
        assert!(generate.choices.output);

        let empty = line(r#"{"message":{"role":"assistant","content":""},"done":false}"#);
        assert!(!empty.choices.token);
    }

    #[test]
    fn the_final_line_finishes_and_carries_the_counters() {
        let json = r#"{"model":"m","message":{"role":"assistant","content":""},"done":true,
            "done_reason":"length","total_duration":4883583458,"load_duration":1334875,
            "prompt_eval_count":26,"prompt_eval_duration":342546000,"eval_count":282,
            "eval_duration":4535599000}"#;
        let last = line(json);
        assert!(last.done && !last.choices.token);
        assert_eq!(last.choices.finish_reason.as_deref(), Some("length"));
        let counters = last.timings.expect("counters");
        assert_eq!((counters.predicted_n, counters.prompt_n), (Some(282), Some(26)));

        let value = counters_value(json.as_bytes()).expect("counters kept");
        assert_eq!(value["eval_duration"], 4535599000u64);
        assert_eq!(value["load_duration"], 1334875);
        assert_eq!(value.get("model"), None);

        let bare = line(r#"{"done":true}"#);
        assert_eq!(bare.choices.finish_reason.as_deref(), Some("stop"));
        assert!(bare.timings.is_none());
    }

    #[test]
    fn an_error_line_is_kept() {
        let error = line(r#"{"error":"model runner has unexpectedly stopped"}"#);
        assert_eq!(error.error, Some(Value::from("model runner has unexpectedly stopped")));
    }

    /// Feeds `(milliseconds after sending, line)` pieces through a whole ingest.
    fn ingest(pieces: &[(u64, String)], end: StreamEnd) -> RequestRecord {
        let mut ingest = StreamIngest::for_protocol(Protocol::Ollama, Some("llama3.2:1b"), 8);
        let origin = ingest.start();
        for (ms, text) in pieces {
            let at = origin.instant + Duration::from_millis(*ms);
            if ingest.on_bytes(at, text.as_bytes()) != Flow::More {
                break;
            }
        }
        ingest.finish(end)
    }

    fn token(text: &str) -> String {
        let message = serde_json::json!({ "role": "assistant", "content": text });
        let line = serde_json::json!({ "model": "llama3.2:1b", "message": message, "done": false });
        format!("{line}\n")
    }

    const LAST: &str = "{\"model\":\"llama3.2:1b\",\"message\":{\"role\":\"assistant\",\
        \"content\":\"\"},\"done\":true,\"done_reason\":\"length\",\"total_duration\":90,\
        \"load_duration\":5,\"prompt_eval_count\":12,\"prompt_eval_duration\":20,\
        \"eval_count\":3,\"eval_duration\":60}\n";

    #[test]
    fn an_ollama_stream_follows_the_metric_definitions() {
        const MS: u64 = 1_000_000;
        let pieces = [
            (10, token("The")),
            (15, token("")),
            (20, token(" sky")),
            (35, token(" is")),
            (40, LAST.to_owned()),
        ];
        let record = ingest(&pieces, StreamEnd::Eof);
        assert_eq!(record.failure, None);
        assert_eq!((record.ttft_ns, record.e2e_ns), (Some(10 * MS), Some(35 * MS)));
        assert_eq!(record.itl_ns, [10 * MS, 15 * MS], "the empty line is no token event");
        assert_eq!(record.tpot_ns, Some(12.5 * MS as f64));
        assert_eq!(record.output_tokens, Some(3));
        assert_eq!(record.output_tokens_source, Some(TokenSource::Engine));
        assert_eq!(record.prompt_tokens, Some(12));
        assert_eq!(record.finish_reason.as_deref(), Some("length"));
        let counters = record.server_timings.expect("counters stored");
        assert_eq!(
            (counters["eval_duration"].clone(), counters["load_duration"].clone()),
            (60.into(), 5.into())
        );
    }

    #[test]
    fn an_ollama_stream_without_its_last_line_is_truncated() {
        let record = ingest(&[(1, token("a"))], StreamEnd::Eof);
        let failure = record.failure.expect("truncated");
        assert_eq!(failure.class, FailureClass::Truncated);
        assert!(failure.message.contains("`done: true`"), "{failure}");

        let error = "{\"error\":\"model runner has unexpectedly stopped\"}\n".to_owned();
        let record = ingest(&[(1, token("a")), (2, error)], StreamEnd::Eof);
        let failure = record.failure.expect("an error line fails");
        assert_eq!(failure.class, FailureClass::ServerError);
        assert!(failure.message.ends_with(": model runner has unexpectedly stopped"), "{failure}");
    }

    #[test]
    fn output_text_comes_from_content_or_response() {
        let mut out = String::new();
        append_output(br#"{"message":{"content":"Answer: "}}"#, &mut out);
        append_output(br#"{"message":{"thinking":"hmm","content":""}}"#, &mut out);
        append_output(br#"{"response":"B"}"#, &mut out);
        assert_eq!(out, "Answer: B");
    }
}
