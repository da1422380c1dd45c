//! Webhook notifications: one JSON POST that Slack (which reads `text`),
//! Discord (which reads `content`) and custom receivers (which read `title`
//! and `body`) all understand.
//!
//! A webhook URL usually carries its secret token in the path, so nothing
//! here ever shows more of it than `scheme://host[:port]`.

use std::time::Duration;

use jiff::Timestamp;
use reqwest::header::RETRY_AFTER;
use reqwest::redirect::Policy;
use reqwest::{Client, Response, StatusCode, Url};
use serde_json::{Value, json};

use super::{Message, truncated};
use crate::acquire::http::{parse_retry_after, user_agent};
use crate::error::with_causes;

/// Upper bound for one attempt, connecting included.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Wait before the one retry when the receiver does not say how long to wait.
const RETRY_WAIT: Duration = Duration::from_secs(1);

/// Longest `Retry-After` honoured; a receiver asking for more is not retried.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(10);

/// Discord rejects a `content` longer than this many characters.
const DISCORD_CONTENT_CHARS: usize = 2000;

/// Longest piece of a receiver's error answer quoted in a failure.
const ANSWER_CHARS: usize = 200;

/// The webhook channel.
pub(super) struct Webhook {
    url: String,
}

impl Webhook {
    /// Posts to `url`.
    pub(super) fn new(url: String) -> Self {
        Self { url }
    }

    /// Posts `message`, retrying once when the receiver is unreachable,
    /// overloaded or failing; an error names the receiver's origin and status.
    pub(super) async fn send(&self, message: &Message) -> Result<(), String> {
        // The URL is not quoted: its path is usually the secret.
        let url = Url::parse(self.url.trim())
            .ok()
            .filter(|url| matches!(url.scheme(), "http" | "https") && url.has_host())
            .ok_or_else(|| "`notifications.webhook_url` is not an http(s) URL".to_owned())?;
        let origin = url.origin().ascii_serialization();
        let client = client().map_err(|error| format!("could not set up HTTP: {error}"))?;
        let payload = payload(message);
        let post = || client.post(url.clone()).json(&payload).send();

        let first = post().await;
        let response = match retry_wait(&first) {
            Some(wait) => {
                tracing::info!(
                    "webhook at {origin} {}; retrying once in {:.1} s",
                    outcome_summary(&first),
                    wait.as_secs_f64(),
                );
                // Release the connection before sleeping rather than holding it idle.
                drop(first);
                tokio::time::sleep(wait).await;
                post().await
            }
            None => first,
        };

        let response = response
            .map_err(|error| format!("{origin} {}", transport_failure(&error.without_url())))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let answer = answer_excerpt(response, &url).await;
        Err(format!("{origin} answered HTTP {status}{answer}"))
    }
}

/// A client with kitt's `User-Agent` that reports redirects instead of following them.
///
/// Following one would turn the POST into a GET (301, 302) or resend the
/// message somewhere the user did not configure.
fn client() -> reqwest::Result<Client> {
    Client::builder()
        .user_agent(user_agent())
        .connect_timeout(TIMEOUT)
        .timeout(TIMEOUT)
        .redirect(Policy::none())
        .build()
}

/// The JSON body: `title` and `body` as given, `text` for Slack, `content` for Discord.
fn payload(message: &Message) -> Value {
    let text = format!("{}\n{}", message.title, message.body);
    let content = truncated(&text, DISCORD_CONTENT_CHARS);
    json!({ "title": message.title, "body": message.body, "text": text, "content": content })
}

/// How long to wait before retrying, or `None` when the outcome is final.
///
/// A request that timed out is not retried: the receiver may have taken the
/// message, and a second attempt would double both the wait and the message.
fn retry_wait(outcome: &reqwest::Result<Response>) -> Option<Duration> {
    match outcome {
        Ok(response) if is_retryable(response.status()) => {
            match response.headers().get(RETRY_AFTER).and_then(|value| value.to_str().ok()) {
                Some(value) => parse_retry_after(value, Timestamp::now())
                    .filter(|wait| *wait <= MAX_RETRY_AFTER),
                None => Some(RETRY_WAIT),
            }
        }
        Err(error) if error.is_connect() => Some(RETRY_WAIT),
        _ => None,
    }
}

/// Rate limiting or a server-side failure.
fn is_retryable(status: StatusCode) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error()
}

/// A short description of a retryable outcome, for the retry log line.
fn outcome_summary(outcome: &reqwest::Result<Response>) -> String {
    match outcome {
        Ok(response) => format!("answered HTTP {}", response.status().as_u16()),
        Err(_) => "could not be reached".to_owned(),
    }
}

/// Why a request got no answer; `error` must no longer carry the URL.
fn transport_failure(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        let limit = TIMEOUT.as_secs_f64();
        return format!("did not answer within {limit:.0} s");
    }
    format!("could not be reached: {}", with_causes(error))
}

/// `: <first line of the answer>` when the receiver explained its refusal.
///
/// Slack and Discord answer with short reasons (`invalid_token`, `Unknown
/// Webhook`). An answer that echoes the request path is redacted, since the
/// path is the secret.
async fn answer_excerpt(response: Response, url: &Url) -> String {
    let Ok(text) = response.text().await else {
        return String::new();
    };
    let Some(line) = text.lines().map(str::trim).find(|line| !line.is_empty()) else {
        return String::new();
    };
    let mut line = truncated(line, ANSWER_CHARS);
    for secret in [url.path(), url.query().unwrap_or_default()] {
        if secret.len() > 1 {
            line = line.replace(secret, "<redacted>");
        }
    }
    format!(": {line}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discord_content_is_cut_at_its_limit_on_a_character_boundary() {
        let message = Message::new("título", "é".repeat(3000));

        let payload = payload(&message);

        let content = payload["content"].as_str().unwrap();
        assert_eq!(content.chars().count(), DISCORD_CONTENT_CHARS);
        assert!(content.starts_with("título\né") && content.ends_with('…'));
        assert_eq!(payload["body"].as_str().unwrap().chars().count(), 3000, "body stays whole");
        assert_eq!(payload["text"].as_str().unwrap().chars().count(), 3007);
    }
}
