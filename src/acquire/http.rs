//! HTTP plumbing shared by the remote model sources (the Hugging Face Hub and
//! the Ollama library and registry): a client preset naming kitt, a bounded
//! retry loop for rate limits, server errors and dropped connections, and a
//! per-key fetch-once memo so one command asks a server each question once.
//!
//! This module does not classify answers: callers receive the final response,
//! even a 429 after the last attempt, and turn it into their own typed error.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use jiff::Timestamp;
use reqwest::header::RETRY_AFTER;
use reqwest::{RequestBuilder, Response, StatusCode};
use tokio::sync::OnceCell;

/// How long to wait for a TCP (and TLS) connection before giving up on an attempt.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Upper bound for one whole request, body included; listings are small JSON documents.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

/// How often, and how patiently, a request is retried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Total number of attempts, the first one included (at least one is always made).
    pub attempts: u32,
    /// Wait before the first retry when the server gives no `Retry-After`; doubles each time.
    pub base_delay: Duration,
    /// Longest single wait; a server asking for more is not retried.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 4,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// Exponential backoff before retry number `retry` (1-based), capped at `max_delay`.
    pub fn backoff(&self, retry: u32) -> Duration {
        let factor = 2u32.saturating_pow(retry.saturating_sub(1));
        self.base_delay.saturating_mul(factor).min(self.max_delay)
    }
}

/// Whether an environment flag's value switches it on (`1`, `true`, `yes`, `on`, any case).
pub fn is_truthy(value: &str) -> bool {
    matches!(value.trim().to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on")
}

/// Whether `KITT_OFFLINE` is on: kitt then asks no remote source for anything.
pub fn kitt_offline() -> bool {
    std::env::var("KITT_OFFLINE").is_ok_and(|value| is_truthy(&value))
}

/// The `User-Agent` kitt sends: `kitt/<version>`.
pub fn user_agent() -> String {
    format!("kitt/{}", env!("CARGO_PKG_VERSION"))
}

/// A client builder with kitt's `User-Agent` and its connect and request timeouts.
pub fn client_builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .user_agent(user_agent())
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT)
}

/// Normalises a server base URL (`http` or `https`, with a host) without its trailing `/`.
pub fn base_url(value: &str) -> Option<String> {
    let url = reqwest::Url::parse(value.trim()).ok()?;
    let scheme_ok = matches!(url.scheme(), "http" | "https");
    // Credentials in the URL would end up in messages; tokens have their own settings.
    let plain = url.query().is_none()
        && url.fragment().is_none()
        && url.username().is_empty()
        && url.password().is_none();
    if !scheme_ok || url.host_str().is_none() || !plain {
        return None;
    }
    Some(url.as_str().trim_end_matches('/').to_owned())
}

/// A URL as it may be shown: any `user:password@` part replaced.
pub fn redact_userinfo(value: &str) -> String {
    match reqwest::Url::parse(value.trim()) {
        Ok(mut url) if !url.username().is_empty() || url.password().is_some() => {
            let _ = url.set_username("<redacted>");
            let _ = url.set_password(None);
            url.to_string()
        }
        _ => value.to_owned(),
    }
}

/// Sends the request made by `build`, retrying 429, 5xx and connection failures.
///
/// `build` is called once per attempt because a sent request cannot be reused.
/// A `Retry-After` header (seconds or HTTP date) decides the wait when present,
/// exponential backoff otherwise. Returns the last response whatever its
/// status, or the last transport error.
pub async fn send_with_retry(
    build: impl Fn() -> RequestBuilder,
    policy: &RetryPolicy,
) -> Result<Response, reqwest::Error> {
    let attempts = policy.attempts.max(1);
    let mut attempt = 1;
    loop {
        let (client, request) = build().build_split();
        let request = request?;
        let url = request.url().clone();
        let outcome = client.execute(request).await;

        let (why, wait) = match &outcome {
            Ok(response) if is_retryable_status(response.status()) => {
                let wait = server_wait(response, Timestamp::now())
                    .unwrap_or_else(|| policy.backoff(attempt));
                (format!("answered HTTP {}", response.status().as_u16()), wait)
            }
            Err(error) if is_transient(error) => {
                let why = if error.is_timeout() { "timed out" } else { "could not be reached" };
                (why.to_owned(), policy.backoff(attempt))
            }
            _ => return outcome,
        };
        if attempt >= attempts {
            return outcome;
        }
        if wait > policy.max_delay {
            tracing::warn!(
                "`{url}` {why} and asks to wait {}, more than the {} cap; not retrying",
                seconds(wait),
                seconds(policy.max_delay),
            );
            return outcome;
        }

        // Retries are routine; the caller warns once if the source stays unavailable.
        tracing::info!(
            "`{url}` {why}; retrying in {} (attempt {} of {attempts})",
            seconds(wait),
            attempt + 1,
        );
        // Release the connection before sleeping rather than holding it idle.
        drop(outcome);
        tokio::time::sleep(wait).await;
        attempt += 1;
    }
}

/// Whether an answer is worth asking again: rate limiting or a server-side failure.
fn is_retryable_status(status: StatusCode) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error()
}

/// Whether a transport error may go away by itself; all kitt's requests are idempotent.
fn is_transient(error: &reqwest::Error) -> bool {
    error.is_connect() || error.is_timeout()
}

/// The wait a response asks for through `Retry-After`, if it carries a readable one.
fn server_wait(response: &Response, now: Timestamp) -> Option<Duration> {
    let value = response.headers().get(RETRY_AFTER)?.to_str().ok()?;
    parse_retry_after(value, now)
}

/// Parses a `Retry-After` value: delay seconds, or an HTTP date (a past date means no wait).
pub fn parse_retry_after(value: &str, now: Timestamp) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }

    // RFC 9110 dates are a subset of RFC 2822, which jiff parses (`GMT` included).
    // TODO: the obsolete RFC 850 and asctime date forms are not read; no known
    // server sends them in `Retry-After`, and the backoff covers them anyway.
    let at = jiff::fmt::rfc2822::DateTimeParser::new().parse_timestamp(value).ok()?;
    let millis = at.as_millisecond().saturating_sub(now.as_millisecond());
    Some(Duration::from_millis(u64::try_from(millis).unwrap_or(0)))
}

/// A duration as seconds with one decimal, for log lines.
fn seconds(duration: Duration) -> String {
    format!("{:.1} s", duration.as_secs_f64())
}

/// Remembers one answer per key; concurrent callers for the same key share one fetch.
///
/// Answers are kept for the life of the map, failures included, so a command
/// never asks a server the same question twice.
pub struct FetchOnce<V> {
    cells: Mutex<HashMap<String, Arc<OnceCell<V>>>>,
}

impl<V> Default for FetchOnce<V> {
    fn default() -> Self {
        Self { cells: Mutex::new(HashMap::new()) }
    }
}

impl<V> std::fmt::Debug for FetchOnce<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys = self.cells.lock().map_or(0, |cells| cells.len());
        f.debug_struct("FetchOnce").field("keys", &keys).finish()
    }
}

impl<V: Clone> FetchOnce<V> {
    /// Returns the answer stored under `key`, running `fetch` if nobody has yet.
    pub async fn get_or_fetch<F, Fut>(&self, key: &str, fetch: F) -> V
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = V>,
    {
        let cell = {
            // A panic while holding this lock cannot leave the map inconsistent.
            let mut cells = self.cells.lock().unwrap_or_else(PoisonError::into_inner);
            Arc::clone(cells.entry(key.to_owned()).or_default())
        };
        cell.get_or_init(fetch).await.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Timestamp {
        "2015-10-21T07:28:00Z".parse().expect("valid timestamp literal")
    }

    #[test]
    fn retry_after_reads_delay_seconds() {
        assert_eq!(parse_retry_after("1", now()), Some(Duration::from_secs(1)));
        assert_eq!(parse_retry_after(" 120 ", now()), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after("0", now()), Some(Duration::ZERO));
    }

    #[test]
    fn retry_after_reads_http_dates_relative_to_now() {
        let later = parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now());
        assert_eq!(later, Some(Duration::from_secs(30)));
    }

    #[test]
    fn retry_after_in_the_past_means_no_wait() {
        let past = parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now());
        assert_eq!(past, Some(Duration::ZERO));
    }

    #[test]
    fn retry_after_rejects_garbage() {
        for value in ["", "-1", "1.5", "soon", "21 Oct 2015"] {
            assert_eq!(parse_retry_after(value, now()), None, "value {value:?}");
        }
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let policy = RetryPolicy::default();
        let waits: Vec<_> = (1..=8).map(|retry| policy.backoff(retry)).collect();
        assert_eq!(waits[0], Duration::from_millis(500));
        assert_eq!(waits[1], Duration::from_secs(1));
        assert_eq!(waits[2], Duration::from_secs(2));
        assert_eq!(waits[7], Duration::from_secs(30));
    }

    #[test]
    fn base_url_accepts_http_and_strips_the_trailing_slash() {
        assert_eq!(base_url("https://huggingface.co/").as_deref(), Some("https://huggingface.co"));
        assert_eq!(base_url("http://127.0.0.1:9/hf").as_deref(), Some("http://127.0.0.1:9/hf"));
        assert_eq!(base_url("ftp://example.org"), None);
        assert_eq!(base_url("huggingface.co"), None);
        assert_eq!(base_url("https://h.co/?x=1"), None);
    }

    #[tokio::test]
    async fn fetch_once_runs_one_fetch_per_key() {
        let memo = FetchOnce::<u32>::default();
        let calls = std::sync::atomic::AtomicU32::new(0);
        let fetch = || async {
            calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            7
        };
        let (a, b) = tokio::join!(memo.get_or_fetch("k", fetch), memo.get_or_fetch("k", fetch));
        assert_eq!((a, b), (7, 7));
        assert_eq!(memo.get_or_fetch("other", fetch).await, 7);
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 2);
    }
}
