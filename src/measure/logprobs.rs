//! Prompt log-probabilities: one non-streaming `POST /v1/completions` with
//! `echo: true`, `logprobs: 1` and `max_tokens: 1`, the legacy completions
//! shape that vLLM and SGLang answer with the log-probability of every prompt
//! token: `choices[0].logprobs.tokens`, `token_logprobs` (`null` for the first
//! token, which has no context) and `text_offset`, plus the generated token
//! after them. Quality benchmarks score multiple-choice options with it.
//!
//! A server that ignores `echo` is recognised rather than trusted: llama-server
//! answers with the generated token's log-probability only (in the chat-style
//! `logprobs.content` list) and without the prompt in `text`. Such an answer
//! fails the request as `bad_payload` with that reason; scoring it would make
//! every option look equally likely.
//!
//! The request is timed from sending to the end of the body (`e2e_ns`); it
//! has no token events, so TTFT and the other stream timings stay empty.

use std::time::{Duration, Instant};

use reqwest::header::CONTENT_TYPE;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::ingest::excerpt;
use super::record::{Failure, FailureClass, RequestRecord};
use super::stream::{DEFAULT_TIMEOUT, StreamClient, read_excerpt, send_failure, status_failure};

/// Request fields kitt sets itself; engine extras never override them.
const FORCED: &[&str] = &["echo", "logprobs", "max_tokens", "stream", "stream_options", "n"];

/// One prompt whose token log-probabilities are wanted.
#[derive(Debug, Clone, PartialEq)]
pub struct LogprobRequest {
    /// The `model` field.
    pub model: String,
    /// The prompt, sent as a plain string (no chat template).
    pub prompt: String,
    /// Engine-specific fields merged into the body (never `echo`, `logprobs`,
    /// `max_tokens` or `stream`).
    pub extra: Map<String, Value>,
    /// When set, an answer naming another model fails as `model_mismatch`.
    pub expected_model: Option<String>,
    /// Deadline for the whole exchange.
    pub timeout: Duration,
}

impl LogprobRequest {
    /// A request for `prompt` with default settings.
    pub fn new(model: impl Into<String>, prompt: impl Into<String>) -> Self {
        Self {
            model: model.into(),
            prompt: prompt.into(),
            extra: Map::new(),
            expected_model: None,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// The JSON body sent: greedy, one generated token, the prompt echoed with
    /// the log-probability of each of its tokens.
    pub fn body(&self) -> Value {
        let mut body = Map::new();
        body.insert("model".to_owned(), Value::from(self.model.as_str()));
        body.insert("prompt".to_owned(), Value::from(self.prompt.as_str()));
        body.insert("temperature".to_owned(), Value::from(0.0));
        let extras = self.extra.iter().filter(|(key, _)| !FORCED.contains(&key.as_str()));
        body.extend(extras.map(|(key, value)| (key.clone(), value.clone())));
        body.insert("max_tokens".to_owned(), Value::from(1));
        body.insert("echo".to_owned(), Value::Bool(true));
        body.insert("logprobs".to_owned(), Value::from(1));
        body.insert("stream".to_owned(), Value::Bool(false));
        Value::Object(body)
    }
}

/// The prompt's tokens with their log-probabilities, as the server split it.
#[derive(Debug, Clone, PartialEq)]
pub struct PromptLogprobs {
    /// Token texts of the prompt (the generated token is left out).
    pub tokens: Vec<String>,
    /// Their log-probabilities; `None` where the server gives none (the first).
    pub logprobs: Vec<Option<f64>>,
}

/// The log-likelihood of the end of a prompt.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tail {
    /// Sum of the log-probabilities of the tokens that spell it.
    pub logprob: f64,
    /// How many tokens that is.
    pub tokens: u32,
}

impl PromptLogprobs {
    /// The log-likelihood of the prompt's last `chars` characters: the sum over
    /// the last tokens whose texts reach back that far. A token that straddles
    /// the boundary counts whole (prompts put a space before each option, so
    /// tokenizers rarely join the two). Character counts come from the token
    /// texts the server returns; a token without a log-probability among them
    /// is an error.
    pub fn tail(&self, chars: usize) -> Result<Tail, String> {
        if chars == 0 {
            return Err("an empty option has no log-likelihood".into());
        }
        let mut covered = 0;
        let mut sum = 0.0;
        let mut tokens = 0u32;
        for (text, logprob) in self.tokens.iter().zip(&self.logprobs).rev() {
            if covered >= chars {
                break;
            }
            let Some(logprob) = logprob else {
                return Err(format!(
                    "the server gave no log-probability for the prompt token `{}`",
                    excerpt(text.as_bytes())
                ));
            };
            sum += logprob;
            tokens += 1;
            covered += text.chars().count();
        }
        if covered < chars {
            return Err(format!(
                "the prompt's tokens spell {covered} characters, fewer than the option's {chars}"
            ));
        }
        Ok(Tail { logprob: sum, tokens })
    }
}

impl StreamClient {
    /// Asks for the log-probabilities of `request.prompt`'s tokens. Never
    /// fails: a failed exchange is a record with its failure and no logprobs.
    pub async fn prompt_logprobs(
        &self,
        request: &LogprobRequest,
    ) -> (RequestRecord, Option<PromptLogprobs>) {
        let started_at = jiff::Timestamp::now().as_nanosecond() as i64;
        let mut record = RequestRecord::new(started_at);
        let sent = Instant::now();
        let deadline = tokio::time::Instant::from_std(sent + request.timeout);
        let url = format!("{}/v1/completions", self.base());
        let builder = self
            .http()
            .post(url)
            .header(CONTENT_TYPE, "application/json")
            .body(request.body().to_string());

        let outcome = match tokio::time::timeout_at(deadline, builder.send()).await {
            Err(_) => Err(timed_out(request.timeout)),
            Ok(Err(error)) => Err(send_failure(&error, request.timeout)),
            Ok(Ok(mut response)) if !response.status().is_success() => {
                let body = read_excerpt(&mut response, deadline).await;
                Err(status_failure(response.status(), &body))
            }
            Ok(Ok(response)) => match tokio::time::timeout_at(deadline, response.bytes()).await {
                Err(_) => Err(timed_out(request.timeout)),
                Ok(Err(error)) => Err(Failure::new(
                    FailureClass::Truncated,
                    format!("the answer was cut: {error}"),
                )),
                Ok(Ok(bytes)) => read_answer(&bytes, request, &mut record),
            },
        };
        record.e2e_ns = Some(u64::try_from(sent.elapsed().as_nanos()).unwrap_or(u64::MAX));
        match outcome {
            Ok(logprobs) => (record, Some(logprobs)),
            Err(failure) => {
                let message = &failure.message;
                tracing::debug!(class = %failure.class, "logprob request failed: {message}");
                record.failure = Some(failure);
                (record, None)
            }
        }
    }
}

fn timed_out(timeout: Duration) -> Failure {
    let message = format!("no complete answer within {:.1} s", timeout.as_secs_f64());
    Failure::new(FailureClass::Timeout, message)
}

/// The parts of a completions answer that carry prompt log-probabilities.
#[derive(Deserialize)]
struct Answer {
    model: Option<String>,
    #[serde(default)]
    choices: Vec<Choice>,
    usage: Option<Usage>,
}

#[derive(Deserialize)]
struct Choice {
    #[serde(default)]
    text: String,
    logprobs: Option<Value>,
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct Usage {
    prompt_tokens: Option<u64>,
}

/// The echoed token arrays of `choices[0].logprobs`.
#[derive(Deserialize)]
struct EchoLogprobs {
    tokens: Vec<String>,
    token_logprobs: Vec<Option<f64>>,
}

/// Checks an answer and takes the prompt's tokens out of it.
fn read_answer(
    bytes: &[u8],
    request: &LogprobRequest,
    record: &mut RequestRecord,
) -> Result<PromptLogprobs, Failure> {
    let bad = |message: String| Failure::new(FailureClass::BadPayload, message);
    let answer: Answer = serde_json::from_slice(bytes)
        .map_err(|error| bad(format!("not a completions answer ({error}): {}", excerpt(bytes))))?;
    record.served_model = answer.model.clone();
    record.prompt_tokens = answer.usage.as_ref().and_then(|usage| usage.prompt_tokens);
    if let (Some(expected), Some(served)) = (&request.expected_model, &answer.model)
        && expected != served
    {
        let message = format!("asked for `{expected}`, the server answered as `{served}`");
        return Err(Failure::new(FailureClass::ModelMismatch, message));
    }
    let Some(choice) = answer.choices.into_iter().next() else {
        return Err(bad("the answer has no choices".into()));
    };
    record.finish_reason = choice.finish_reason.clone();
    if !choice.text.starts_with(&request.prompt) {
        return Err(bad("the server did not echo the prompt (`echo` is not supported)".into()));
    }
    let echoed = choice
        .logprobs
        .and_then(|value| serde_json::from_value::<EchoLogprobs>(value).ok())
        .filter(|echo| echo.tokens.len() == echo.token_logprobs.len() && !echo.tokens.is_empty())
        .ok_or_else(|| {
            bad("the answer carries no prompt log-probabilities (`logprobs.tokens` and \
                 `logprobs.token_logprobs` of the echoed prompt)"
                .into())
        })?;
    let count = echoed.tokens.len();
    // The prompt's tokens come first; the usage names how many there are,
    // else one generated token follows them (`max_tokens: 1`).
    let prompt_tokens = match record.prompt_tokens.map(|n| usize::try_from(n).unwrap_or(count)) {
        Some(n) if (1..=count).contains(&n) => n,
        _ => count.saturating_sub(1).max(1),
    };
    let mut tokens = echoed.tokens;
    let mut logprobs = echoed.token_logprobs;
    tokens.truncate(prompt_tokens);
    logprobs.truncate(prompt_tokens);
    if logprobs.iter().all(Option::is_none) {
        return Err(bad("every prompt token's log-probability is null".into()));
    }
    Ok(PromptLogprobs { tokens, logprobs })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn read(answer: &Value, prompt: &str) -> Result<PromptLogprobs, Failure> {
        let mut request = LogprobRequest::new("m", prompt);
        request.expected_model = Some("m".into());
        let mut record = RequestRecord::new(0);
        read_answer(answer.to_string().as_bytes(), &request, &mut record)
    }

    /// A vLLM-shaped echo answer for "The sky is blue" and one generated token.
    fn vllm_answer() -> Value {
        json!({
            "id": "cmpl-1", "object": "text_completion", "model": "m",
            "choices": [{
                "index": 0, "text": "The sky is blue.", "finish_reason": "length",
                "logprobs": {
                    "tokens": ["The", " sky", " is", " blue", "."],
                    "token_logprobs": [null, -2.5, -0.5, -1.25, -0.75],
                    "text_offset": [0, 3, 7, 10, 15],
                    "top_logprobs": [null, {" sky": -2.5}, {" is": -0.5}, {" blue": -1.25},
                                     {".": -0.75}]
                }
            }],
            "usage": {"prompt_tokens": 4, "completion_tokens": 1, "total_tokens": 5}
        })
    }

    #[test]
    fn the_body_asks_for_echoed_logprobs_and_keeps_extras_out_of_the_forced_fields() {
        let mut request = LogprobRequest::new("m", "Hi");
        request.extra.insert("echo".into(), json!(false));
        request.extra.insert("cache_prompt".into(), json!(false));
        let body = request.body();
        assert_eq!(
            (&body["echo"], &body["logprobs"], &body["max_tokens"], &body["stream"]),
            (&json!(true), &json!(1), &json!(1), &json!(false))
        );
        assert_eq!((&body["prompt"], &body["cache_prompt"]), (&json!("Hi"), &json!(false)));
        assert_eq!(body["temperature"], json!(0.0));
    }

    #[test]
    fn prompt_tokens_are_taken_and_tails_sum_their_tokens() {
        let logprobs = read(&vllm_answer(), "The sky is blue").unwrap();
        assert_eq!(logprobs.tokens, ["The", " sky", " is", " blue"]);
        assert_eq!(logprobs.tail(" blue".len()).unwrap(), Tail { logprob: -1.25, tokens: 1 });
        assert_eq!(logprobs.tail(" is blue".len()).unwrap(), Tail { logprob: -1.75, tokens: 2 });
        // " s blue" reaches into " is": the straddling token counts whole.
        assert_eq!(logprobs.tail(7).unwrap().tokens, 2);
        let error = logprobs.tail("The sky is blue".len()).unwrap_err();
        assert!(error.contains("no log-probability for the prompt token `The`"), "{error}");
        assert!(logprobs.tail(99).is_err());
    }

    #[test]
    fn without_usage_one_generated_token_is_dropped() {
        let mut answer = vllm_answer();
        answer.as_object_mut().unwrap().remove("usage");
        assert_eq!(read(&answer, "The sky is blue").unwrap().tokens.len(), 4);
    }

    #[test]
    fn a_server_ignoring_echo_is_a_bad_payload() {
        // What llama-server answers to the same request.
        let llama = json!({
            "choices": [{"text": ",", "index": 0, "finish_reason": "length",
                "logprobs": {"content": [{"id": 236764, "token": ",", "bytes": [44],
                    "logprob": -1.01, "top_logprobs": []}]}}],
            "model": "m", "object": "text_completion",
            "usage": {"completion_tokens": 1, "prompt_tokens": 7, "total_tokens": 8}
        });
        let failure = read(&llama, "The capital of France is Paris").unwrap_err();
        assert_eq!(failure.class, FailureClass::BadPayload);
        assert!(failure.message.contains("did not echo the prompt"), "{}", failure.message);

        let mut echoed_text_only = llama.clone();
        echoed_text_only["choices"][0]["text"] = json!("The capital of France is Paris,");
        let failure = read(&echoed_text_only, "The capital of France is Paris").unwrap_err();
        assert!(failure.message.contains("no prompt log-probabilities"), "{}", failure.message);
    }

    #[test]
    fn another_model_is_a_mismatch() {
        let mut answer = vllm_answer();
        answer["model"] = json!("other");
        assert_eq!(
            read(&answer, "The sky is blue").unwrap_err().class,
            FailureClass::ModelMismatch
        );
    }
}
