//! A loopback webhook receiver: records every POST to its hook URL (JSON body
//! and `Content-Type`) and answers 200, or fails the first N requests with a
//! chosen status and optional `Retry-After`.
//!
//! The hook URL has a secret token in its path, as Slack and Discord URLs do,
//! so tests can check that it never shows up in kitt's messages.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::Value;

use super::server::{Server, lock};

/// The secret part of the hook URL.
pub const TOKEN: &str = "T000-hook-secret-9f8e7d";

/// The path the receiver listens on.
fn hook_path() -> String {
    format!("/services/{TOKEN}")
}

/// A running webhook receiver; stops when dropped.
pub struct FakeWebhook {
    server: Server,
    state: Arc<Mutex<HookState>>,
}

#[derive(Default)]
struct HookState {
    failures_left: usize,
    failure: Option<(StatusCode, Option<String>)>,
    received: Vec<Delivery>,
}

/// One request the receiver got, whatever it answered.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The `Content-Type` header as sent.
    pub content_type: Option<String>,
    /// The body parsed as JSON (`Value::Null` when it was not JSON).
    pub json: Value,
    /// The status the receiver answered.
    pub answered: StatusCode,
}

impl FakeWebhook {
    /// A receiver answering 200 to every request.
    pub fn start() -> Self {
        Self::failing(0, StatusCode::OK, None)
    }

    /// A receiver answering `status` (with `Retry-After: retry_after` when given)
    /// to the first `times` requests, and 200 afterwards. A failure's body echoes
    /// the request path, as many error pages do.
    pub fn failing(times: usize, status: StatusCode, retry_after: Option<&str>) -> Self {
        let state = Arc::new(Mutex::new(HookState {
            failures_left: times,
            failure: Some((status, retry_after.map(str::to_owned))),
            received: Vec::new(),
        }));
        let shared = Arc::clone(&state);
        let server = Server::start(move |_| {
            Router::new().route(&hook_path(), post(receive)).with_state(shared)
        });
        Self { server, state }
    }

    /// The hook URL, secret token included.
    pub fn url(&self) -> String {
        format!("{}{}", self.server.url(), hook_path())
    }

    /// `http://127.0.0.1:<port>`: all of the URL kitt may show.
    pub fn origin(&self) -> &str {
        self.server.url()
    }

    /// Every request received, in order.
    pub fn deliveries(&self) -> Vec<Delivery> {
        lock(&self.state).received.clone()
    }

    /// How many requests reached the hook path.
    pub fn attempts(&self) -> usize {
        self.server.requests(&hook_path())
    }
}

async fn receive(
    State(state): State<Arc<Mutex<HookState>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut state = lock(&state);
    let failure = match state.failure.clone() {
        Some(failure) if state.failures_left > 0 => {
            state.failures_left -= 1;
            Some(failure)
        }
        _ => None,
    };

    let answered = failure.as_ref().map_or(StatusCode::OK, |(status, _)| *status);
    let content_type =
        headers.get(header::CONTENT_TYPE).and_then(|value| value.to_str().ok()).map(str::to_owned);
    let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
    state.received.push(Delivery { content_type, json, answered });

    // Like many error pages, the failure echoes the path, secret included.
    let explanation = format!("no service at {}", hook_path());
    match failure {
        Some((status, Some(retry_after))) => {
            (status, [(header::RETRY_AFTER, retry_after)], explanation).into_response()
        }
        Some((status, None)) => (status, explanation).into_response(),
        None => (StatusCode::OK, "ok").into_response(),
    }
}
