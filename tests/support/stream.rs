//! A scripted OpenAI-compatible streaming server for the measurement client.
//!
//! A test writes a [`Script`]: the status, the headers, and the raw body as a
//! list of pieces, each sent after its own delay, optionally ending with the
//! connection cut mid-stream. Every `POST /v1/chat/completions` or
//! `/v1/completions` is answered with the current script (or with the script a
//! responder builds from the request body), and the JSON bodies received are
//! kept for inspection. The chunk builders in [`llama`] produce
//! the shapes a real llama-server streams (engine-notes §5).
//!
//! Unlike the other fakes (see `server.rs`), this one sets `TCP_NODELAY` on
//! every connection: without it, a piece written while the previous one is
//! still unacknowledged waits for the client's delayed ACK (about 40 ms on
//! Linux loopback), which would be measured as server latency.
//!
//! A piece marked with [`Script::stamped`] makes the server read the monotonic
//! clock just before handing it to the HTTP stack; the client benchmark, which
//! runs the server in its own process, compares that with kitt's stamps.

use std::future::IntoFuture;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{OriginalUri, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::Response;
use axum::routing::post;
use axum::serve::ListenerExt;
use futures_util::stream;
use serde_json::Value;
use tokio::sync::oneshot;

/// Handle to a running scripted server; stops when dropped.
pub struct ScriptedStream {
    url: String,
    state: Arc<Mutex<StreamState>>,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

struct StreamState {
    script: Arc<Script>,
    /// Path and JSON body of every request received.
    requests: Vec<(String, Value)>,
    stamps: Vec<Instant>,
    /// Model ids `GET /v1/models` lists.
    models: Vec<String>,
    /// Chooses each answer from the request body, instead of `script`.
    responder: Option<Responder>,
}

/// Picks the script for one request from its JSON body.
type Responder = Arc<dyn Fn(&Value) -> Script + Send + Sync>;

/// One scripted response.
#[derive(Clone, Debug)]
pub struct Script {
    status: StatusCode,
    headers: Vec<(HeaderName, HeaderValue)>,
    pieces: Vec<Piece>,
    cut: bool,
}

#[derive(Clone, Debug)]
struct Piece {
    delay: Duration,
    bytes: Bytes,
    stamp: bool,
}

impl ScriptedStream {
    /// Starts a server on a loopback port, answering every request with `script`.
    pub fn start(script: Script) -> Self {
        let state = Arc::new(Mutex::new(StreamState {
            script: Arc::new(script),
            requests: Vec::new(),
            stamps: Vec::new(),
            models: Vec::new(),
            responder: None,
        }));
        let router = Router::new()
            .route("/v1/chat/completions", post(respond))
            .route("/v1/completions", post(respond))
            .route("/v1/models", axum::routing::get(list_models))
            .with_state(Arc::clone(&state));

        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        listener.set_nonblocking(true).expect("make the listener non-blocking");
        let address = listener.local_addr().expect("read the bound address");
        let (shutdown, stop) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name(format!("scripted-stream-{}", address.port()))
            .spawn(move || serve(listener, router, stop))
            .expect("spawn the scripted server thread");

        let url = format!("http://{address}");
        Self { url, state, shutdown: Some(shutdown), thread: Some(thread) }
    }

    /// The base URL, `http://127.0.0.1:<port>`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Sets the model ids `GET /v1/models` lists (none by default).
    pub fn serve_models(&self, models: &[&str]) {
        lock(&self.state).models = models.iter().map(|model| (*model).to_owned()).collect();
    }

    /// Replaces the script for the requests that follow.
    pub fn set_script(&self, script: Script) {
        lock(&self.state).script = Arc::new(script);
    }

    /// Answers each request with the script `responder` builds from its JSON
    /// body (a server that answers some questions right and others wrong).
    pub fn respond_with(&self, responder: impl Fn(&Value) -> Script + Send + Sync + 'static) {
        lock(&self.state).responder = Some(Arc::new(responder));
    }

    /// The JSON bodies received so far (`null` for a body that was not JSON).
    pub fn bodies(&self) -> Vec<Value> {
        lock(&self.state).requests.iter().map(|(_, body)| body.clone()).collect()
    }

    /// How many requests reached `path`.
    pub fn requests(&self, path: &str) -> usize {
        lock(&self.state).requests.iter().filter(|(seen, _)| seen == path).count()
    }

    /// Takes the instants at which stamped pieces were handed to the HTTP stack.
    pub fn take_stamps(&self) -> Vec<Instant> {
        std::mem::take(&mut lock(&self.state).stamps)
    }
}

/// `GET /v1/models`, shaped like an OpenAI-compatible server's answer.
async fn list_models(State(state): State<Arc<Mutex<StreamState>>>) -> axum::Json<Value> {
    let models = lock(&state).models.clone();
    let data: Vec<Value> = models
        .iter()
        .map(|id| serde_json::json!({"id": id, "object": "model", "owned_by": "kitt-tests"}))
        .collect();
    axum::Json(serde_json::json!({"object": "list", "data": data}))
}

impl Drop for ScriptedStream {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Serves `router` with `TCP_NODELAY` until `stop` fires; dropping the runtime
/// ends open connections.
fn serve(listener: std::net::TcpListener, router: Router, stop: oneshot::Receiver<()>) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("build the scripted server runtime");
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(listener)
            .expect("adopt the listener")
            .tap_io(|connection| {
                let _ = connection.set_nodelay(true);
            });
        tokio::select! {
            served = axum::serve(listener, router).into_future() => {
                served.expect("scripted server stopped with an error");
            }
            _ = stop => {}
        }
    });
}

/// Locks the shared state, ignoring poisoning (a failed test must not hide the next).
fn lock(state: &Mutex<StreamState>) -> MutexGuard<'_, StreamState> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Script {
    /// A `200` event stream with llama-server's headers and no pieces yet.
    pub fn sse() -> Self {
        Self {
            status: StatusCode::OK,
            headers: vec![
                (header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream")),
                (HeaderName::from_static("x-accel-buffering"), HeaderValue::from_static("no")),
            ],
            pieces: Vec::new(),
            cut: false,
        }
    }

    /// An error answer: `status` with a JSON `body`.
    pub fn error(status: u16, body: &str) -> Self {
        let content_type = HeaderValue::from_static("application/json; charset=utf-8");
        Self {
            status: StatusCode::from_u16(status).expect("a valid status code"),
            headers: vec![(header::CONTENT_TYPE, content_type)],
            pieces: Vec::new(),
            cut: false,
        }
        .raw(Duration::ZERO, body)
    }

    /// A full llama-server chat stream: role chunk, one chunk per token after
    /// `gap` each, finish chunk, usage chunk with timings, `[DONE]`.
    pub fn chat(model: &str, tokens: &[&str], gap: Duration) -> Self {
        let mut script = Self::sse().event(Duration::ZERO, &llama::role(model));
        for token in tokens {
            script = script.event(gap, &llama::content(model, token));
        }
        let count = tokens.len() as u64;
        script
            .event(Duration::ZERO, &llama::finish(model, "length"))
            .event(Duration::ZERO, &llama::usage(model, count, 58))
            .done()
    }

    /// Replaces the status code.
    pub fn status(mut self, status: u16) -> Self {
        self.status = StatusCode::from_u16(status).expect("a valid status code");
        self
    }

    /// Replaces the `Content-Type` header.
    pub fn content_type(mut self, value: &'static str) -> Self {
        self.headers.retain(|(name, _)| name != header::CONTENT_TYPE);
        self.headers.push((header::CONTENT_TYPE, HeaderValue::from_static(value)));
        self
    }

    /// Appends raw body bytes, sent `delay` after the previous piece.
    pub fn raw(mut self, delay: Duration, text: &str) -> Self {
        let bytes = Bytes::copy_from_slice(text.as_bytes());
        self.pieces.push(Piece { delay, bytes, stamp: false });
        self
    }

    /// Appends one `data:` event carrying `chunk`.
    pub fn event(self, delay: Duration, chunk: &Value) -> Self {
        self.raw(delay, &format!("data: {chunk}\n\n"))
    }

    /// Appends a keep-alive comment.
    pub fn keep_alive(self, delay: Duration) -> Self {
        self.raw(delay, ": keep-alive\n\n")
    }

    /// Appends `data: [DONE]`.
    pub fn done(self) -> Self {
        self.raw(Duration::ZERO, "data: [DONE]\n\n")
    }

    /// Marks the last piece so the server records when it hands it over.
    pub fn stamped(mut self) -> Self {
        if let Some(piece) = self.pieces.last_mut() {
            piece.stamp = true;
        }
        self
    }

    /// Ends the response by breaking the connection after the last piece.
    pub fn cut(mut self) -> Self {
        self.cut = true;
        self
    }
}

/// Records the request and streams the current script.
async fn respond(
    State(state): State<Arc<Mutex<StreamState>>>,
    OriginalUri(uri): OriginalUri,
    body: Bytes,
) -> Response {
    let script = {
        let mut shared = lock(&state);
        let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let script = match &shared.responder {
            Some(responder) => Arc::new(responder(&body)),
            None => Arc::clone(&shared.script),
        };
        shared.requests.push((uri.path().to_owned(), body));
        script
    };

    let (status, headers) = (script.status, script.headers.clone());
    let pieces = stream::unfold(0usize, move |index| {
        let (script, state) = (Arc::clone(&script), Arc::clone(&state));
        async move { next_piece(&script, &state, index).await.map(|item| (item, index + 1)) }
    });

    let mut response = Response::new(Body::from_stream(pieces));
    *response.status_mut() = status;
    response.headers_mut().extend(headers);
    response
}

/// Piece `index` after its delay, then the scripted cut (an error aborts the connection).
async fn next_piece(
    script: &Script,
    state: &Mutex<StreamState>,
    index: usize,
) -> Option<Result<Bytes, std::io::Error>> {
    let Some(piece) = script.pieces.get(index) else {
        let cut = script.cut && index == script.pieces.len();
        return cut.then(|| Err(std::io::Error::other("scripted cut")));
    };
    if !piece.delay.is_zero() {
        tokio::time::sleep(piece.delay).await;
    }
    if piece.stamp {
        lock(state).stamps.push(Instant::now());
    }
    Some(Ok(piece.bytes.clone()))
}

/// Chunks shaped like llama-server's (engine-notes §5).
pub mod llama {
    use serde_json::{Value, json};

    /// The model name llama-server echoes when started without an alias.
    pub const MODEL: &str = "models/tiny-f32.gguf";

    /// A chat chunk with one choice whose delta is `delta`.
    pub fn chat_chunk(model: &str, delta: Value, finish_reason: Option<&str>) -> Value {
        json!({
            "choices": [{ "finish_reason": finish_reason, "index": 0, "delta": delta }],
            "created": 1796398238,
            "id": "chatcmpl-YBjC7ssXeADYtR9VWfOwJR2GzoewZtmK",
            "model": model,
            "system_fingerprint": "b0-unknown",
            "object": "chat.completion.chunk"
        })
    }

    /// The first chunk: role only, `content: null`.
    pub fn role(model: &str) -> Value {
        chat_chunk(model, json!({ "role": "assistant", "content": null }), None)
    }

    /// A content delta.
    pub fn content(model: &str, text: &str) -> Value {
        chat_chunk(model, json!({ "content": text }), None)
    }

    /// A reasoning delta (`reasoning_content`, as llama-server sends it).
    pub fn reasoning(model: &str, text: &str) -> Value {
        chat_chunk(model, json!({ "reasoning_content": text }), None)
    }

    /// The chunk with the `finish_reason` and an empty delta.
    pub fn finish(model: &str, reason: &str) -> Value {
        chat_chunk(model, json!({}), Some(reason))
    }

    /// llama.cpp's `timings` object for `predicted` generated and `prompt` evaluated tokens.
    pub fn timings(predicted: u64, prompt: u64) -> Value {
        json!({
            "cache_n": 0, "prompt_n": prompt, "prompt_ms": 121.538,
            "prompt_per_token_ms": 2.0954827586206894, "prompt_per_second": 477.21700208988136,
            "predicted_n": predicted, "predicted_ms": 4.71, "predicted_per_token_ms": 1.1775,
            "predicted_per_second": 849.2569002123142
        })
    }

    /// The usage-only chunk (`choices: []`) with `usage` and `timings`.
    pub fn usage(model: &str, completion: u64, prompt: u64) -> Value {
        json!({
            "choices": [],
            "created": 1796398238,
            "id": "chatcmpl-YBjC7ssXeADYtR9VWfOwJR2GzoewZtmK",
            "model": model,
            "system_fingerprint": "b0-unknown",
            "object": "chat.completion.chunk",
            "usage": {
                "completion_tokens": completion, "prompt_tokens": prompt,
                "total_tokens": completion + prompt, "prompt_tokens_details": { "cached_tokens": 0 }
            },
            "timings": timings(completion, prompt)
        })
    }

    /// A `/v1/completions` chunk carrying `text`.
    pub fn text(model: &str, text: &str, finish_reason: Option<&str>) -> Value {
        json!({
            "choices": [{ "text": text, "index": 0, "logprobs": null,
                          "finish_reason": finish_reason }],
            "created": 1796398238,
            "id": "chatcmpl-ZQp2mB0cd9PpM1c7rVZtSx1d2Iu1Abcd",
            "model": model,
            "system_fingerprint": "b0-unknown",
            "object": "text_completion"
        })
    }
}
