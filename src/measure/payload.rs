//! Reading one streamed JSON chunk of an OpenAI-compatible response.
//!
//! Only what the measurement needs is read: whether any choice carries a token
//! (and whether it is output or reasoning), the `finish_reason`, the served
//! `model`, `usage`, the engine counters inside llama.cpp's `timings`, and an
//! `error` object. Everything else is skipped by the deserializer without
//! being built. Strings are borrowed from the chunk, and content is only
//! checked for emptiness, so a typical chunk is read without allocating.
//!
//! This module knows nothing about time; `ingest` stamps events.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

/// What one chunk says, as far as measurement is concerned.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct Chunk<'a> {
    /// The served model name.
    #[serde(borrow, default)]
    pub model: Text<'a>,
    /// What the choices carry, folded over all choices.
    #[serde(borrow, default)]
    pub choices: Choices<'a>,
    /// Token counts; `null` in the chunks before the last on some servers.
    #[serde(default)]
    pub usage: Option<Usage>,
    /// llama.cpp's `timings`, reduced to the counters kitt uses.
    #[serde(default)]
    pub timings: Option<Counters>,
    /// An error the server reports inside the stream.
    #[serde(default)]
    pub error: Option<Value>,
    /// The chunk ends the stream (Ollama's `done: true`; OpenAI streams end with `[DONE]`).
    #[serde(skip)]
    pub done: bool,
}

/// The `usage` object.
#[derive(Debug, Default, Clone, Copy, Deserialize)]
pub(crate) struct Usage {
    #[serde(default)]
    pub completion_tokens: Option<u64>,
    #[serde(default)]
    pub prompt_tokens: Option<u64>,
}

/// Token counters from llama.cpp's `timings` object.
#[derive(Debug, Default, Clone, Copy, Deserialize)]
pub(crate) struct Counters {
    #[serde(default)]
    pub predicted_n: Option<u64>,
    #[serde(default)]
    pub prompt_n: Option<u64>,
    #[serde(default)]
    pub cache_n: Option<u64>,
}

/// A string field that may be absent or `null`, borrowed unless it had escapes.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Text<'a>(pub Option<Cow<'a, str>>);

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(TextVisitor(PhantomData))
    }
}

struct TextVisitor<'a>(PhantomData<Text<'a>>);

impl<'de: 'a, 'a> Visitor<'de> for TextVisitor<'a> {
    type Value = Text<'a>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string or null")
    }

    fn visit_borrowed_str<E: de::Error>(self, value: &'de str) -> Result<Self::Value, E> {
        Ok(Text(Some(Cow::Borrowed(value))))
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<Self::Value, E> {
        Ok(Text(Some(Cow::Owned(value.to_owned()))))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Text(None))
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Text(None))
    }
}

/// Whether a field carries anything: a non-empty string, array or object, or
/// any number or boolean. Absent, `null`, `""`, `[]` and `{}` carry nothing.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Presence(pub bool);

impl<'de> Deserialize<'de> for Presence {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(PresenceVisitor)
    }
}

struct PresenceVisitor;

impl<'de> Visitor<'de> for PresenceVisitor {
    type Value = Presence;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<Presence, E> {
        Ok(Presence(!value.is_empty()))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Presence, E> {
        Ok(Presence(false))
    }

    fn visit_none<E: de::Error>(self) -> Result<Presence, E> {
        Ok(Presence(false))
    }

    fn visit_some<D: Deserializer<'de>>(self, inner: D) -> Result<Presence, D::Error> {
        inner.deserialize_any(self)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Presence, E> {
        Ok(Presence(true))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Presence, E> {
        Ok(Presence(true))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Presence, E> {
        Ok(Presence(true))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Presence, E> {
        Ok(Presence(true))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Presence, A::Error> {
        let mut any = false;
        while seq.next_element::<IgnoredAny>()?.is_some() {
            any = true;
        }
        Ok(Presence(any))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Presence, A::Error> {
        let mut any = false;
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {
            any = true;
        }
        Ok(Presence(any))
    }
}

/// The `choices` array folded into what measurement needs, without a `Vec`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Choices<'a> {
    /// Some choice carries a token of any kind.
    pub token: bool,
    /// Some choice carries output (content, text or a tool call), not only reasoning.
    pub output: bool,
    /// The last non-null `finish_reason` among the choices.
    pub finish_reason: Option<Cow<'a, str>>,
}

impl<'de: 'a, 'a> Deserialize<'de> for Choices<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ChoicesVisitor(PhantomData))
    }
}

struct ChoicesVisitor<'a>(PhantomData<Choices<'a>>);

impl<'de: 'a, 'a> Visitor<'de> for ChoicesVisitor<'a> {
    type Value = Choices<'a>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of choices or null")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Choices::default())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut folded = Choices::default();
        while let Some(choice) = seq.next_element::<Choice<'a>>()? {
            let delta = choice.delta.unwrap_or_default();
            let output = delta.content.0 || delta.tool_calls.0 || choice.text.0;
            let reasoning = delta.reasoning_content.0 || delta.reasoning.0;
            folded.output |= output;
            folded.token |= output || reasoning;
            if choice.finish_reason.0.is_some() {
                folded.finish_reason = choice.finish_reason.0;
            }
        }
        Ok(folded)
    }
}

/// One element of `choices`: a chat `delta` or a completion `text`.
#[derive(Debug, Default, Deserialize)]
struct Choice<'a> {
    #[serde(default)]
    delta: Option<Delta>,
    #[serde(default)]
    text: Presence,
    #[serde(borrow, default)]
    finish_reason: Text<'a>,
}

/// The token-bearing fields of a chat `delta`; `role` is deliberately not read.
#[derive(Debug, Default, Deserialize)]
struct Delta {
    #[serde(default)]
    content: Presence,
    #[serde(default)]
    reasoning_content: Presence,
    #[serde(default)]
    reasoning: Presence,
    #[serde(default)]
    tool_calls: Presence,
}

/// Reads one chunk.
pub(crate) fn parse_chunk(data: &[u8]) -> Result<Chunk<'_>, serde_json::Error> {
    serde_json::from_slice(data)
}

/// Appends the output text a chunk carries (chat `delta.content` or completion
/// `text`, every choice) to `out`. Only callers that keep replies use it: it
/// builds strings, unlike [`parse_chunk`].
pub(crate) fn append_output(data: &[u8], out: &mut String) {
    #[derive(Deserialize)]
    struct Texts {
        #[serde(default)]
        choices: Option<Vec<TextChoice>>,
    }
    #[derive(Deserialize)]
    struct TextChoice {
        #[serde(default)]
        delta: Option<TextDelta>,
        #[serde(default)]
        text: Option<String>,
    }
    #[derive(Deserialize)]
    struct TextDelta {
        #[serde(default)]
        content: Option<String>,
    }
    let Ok(chunk) = serde_json::from_slice::<Texts>(data) else { return };
    for choice in chunk.choices.unwrap_or_default() {
        let content = choice.delta.and_then(|delta| delta.content);
        for piece in [content, choice.text].into_iter().flatten() {
            out.push_str(&piece);
        }
    }
}

/// Extracts the `timings` object of a chunk as sent, for storage.
pub(crate) fn timings_value(data: &[u8]) -> Option<Value> {
    #[derive(Deserialize)]
    struct WithTimings {
        timings: Value,
    }
    serde_json::from_slice::<WithTimings>(data).ok().map(|chunk| chunk.timings)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(json: &str) -> Chunk<'_> {
        parse_chunk(json.as_bytes()).expect("a valid chunk")
    }

    #[test]
    fn role_only_and_empty_deltas_carry_no_token() {
        let role = r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":null}}]}"#;
        assert!(!chunk(role).choices.token);
        let empty = r#"{"choices":[{"delta":{"content":"","tool_calls":[]}}]}"#;
        assert!(!chunk(empty).choices.token);
        assert!(!chunk(r#"{"choices":[{"delta":{}}]}"#).choices.token);
    }

    #[test]
    fn content_text_and_tool_calls_are_output() {
        for json in [
            r#"{"choices":[{"delta":{"content":"\n"}}]}"#,
            r#"{"choices":[{"text":"Hi","index":0}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"id":"c"}]}}]}"#,
        ] {
            let choices = chunk(json).choices;
            assert!(choices.token && choices.output, "{json}");
        }
    }

    #[test]
    fn reasoning_is_a_token_but_not_output() {
        for json in [
            r#"{"choices":[{"delta":{"reasoning_content":"Let me"}}]}"#,
            r#"{"choices":[{"delta":{"reasoning":"think","content":null}}]}"#,
        ] {
            let choices = chunk(json).choices;
            assert!(choices.token && !choices.output, "{json}");
        }
    }

    #[test]
    fn usage_chunk_with_no_choices_has_counts_and_no_token() {
        let json = r#"{"choices":[],"model":"m","usage":{"completion_tokens":5,
            "prompt_tokens":58,"total_tokens":63},"timings":{"predicted_n":5,"prompt_n":58,
            "cache_n":0,"predicted_ms":4.71}}"#;
        let parsed = chunk(json);
        assert!(!parsed.choices.token);
        assert_eq!(parsed.usage.and_then(|u| u.completion_tokens), Some(5));
        assert_eq!(parsed.timings.and_then(|t| t.predicted_n), Some(5));
        assert_eq!(parsed.model.0.as_deref(), Some("m"));
        assert_eq!(
            timings_value(json.as_bytes()).and_then(|t| t["predicted_ms"].as_f64()),
            Some(4.71)
        );
    }

    #[test]
    fn finish_reason_and_model_are_read_even_with_escapes() {
        let parsed = chunk(
            r#"{"model":"models\/tiny.gguf","choices":[{"finish_reason":"length","delta":{}}]}"#,
        );
        assert_eq!(parsed.model.0.as_deref(), Some("models/tiny.gguf"));
        assert_eq!(parsed.choices.finish_reason.as_deref(), Some("length"));
    }

    #[test]
    fn output_text_is_appended_from_content_and_text() {
        let mut out = String::new();
        append_output(br#"{"choices":[{"delta":{"content":"Answer: \"B\""}}]}"#, &mut out);
        append_output(br#"{"choices":[{"delta":{"reasoning_content":"hmm"}}]}"#, &mut out);
        append_output(br#"{"choices":[{"text":" ok","index":0}]}"#, &mut out);
        append_output(br#"{"choices":null}"#, &mut out);
        assert_eq!(out, "Answer: \"B\" ok");
    }

    #[test]
    fn null_usage_and_choices_are_accepted() {
        let parsed = chunk(r#"{"choices":null,"usage":null,"model":null}"#);
        assert!(!parsed.choices.token);
        assert!(parsed.usage.is_none() && parsed.model.0.is_none());
    }

    #[test]
    fn error_object_is_kept() {
        let parsed = chunk(r#"{"error":{"code":500,"message":"boom"}}"#);
        assert_eq!(parsed.error.as_ref().and_then(|e| e["message"].as_str()), Some("boom"));
    }

    #[test]
    fn plain_content_is_borrowed_without_allocation_of_the_model() {
        let parsed = chunk(r#"{"model":"tiny","choices":[{"delta":{"content":"a"}}]}"#);
        assert!(matches!(parsed.model.0, Some(Cow::Borrowed("tiny"))));
    }
}
