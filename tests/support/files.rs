//! A loopback file server that behaves like the storage behind the Hub's
//! `resolve` URLs: `GET /files/{path}` with `ETag`, `Content-Length`, single
//! byte ranges (`Range: bytes=N-`) honoured only while `If-Range` matches,
//! 416 for a range past the end, and faults a test queues per file: a
//! connection dropped after some bytes, a stall, an error status with
//! `Retry-After`, a changed file, an answer held until the test releases it.
//! A rate limit paces every body (for measurements of overlap). Every request
//! is logged with its range and the bytes sent, so tests can prove a resume.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use sha2::{Digest, Sha256};

use super::server::{Server, lock};

/// Something to go wrong on the next request for a file.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Send this many bytes of the body, then drop the connection.
    DropAfter(u64),
    /// Send this many bytes, then go silent for the duration before dropping.
    StallAfter(u64, Duration),
    /// Answer with this status (and `Retry-After` seconds, if given).
    Status(u16, Option<u64>),
    /// Answer 416 whatever the range.
    RangeNotSatisfiable,
    /// Answer nothing until the flag is set (see [`Gate`]), then normally.
    Hold(Gate),
}

/// A flag a test sets to release a held request.
#[derive(Debug, Clone, Default)]
pub struct Gate(Arc<AtomicBool>);

impl Gate {
    /// Lets the held request go on.
    pub fn open(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    fn is_open(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// One logged request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logged {
    /// The file path asked for.
    pub path: String,
    /// The `Range` header, if any.
    pub range: Option<String>,
    /// The status answered.
    pub status: u16,
    /// Body bytes actually sent.
    pub sent: u64,
    /// Whether an `Authorization` header came with it.
    pub authorized: bool,
}

/// How long a connection to be dropped pauses first, so its head is sent.
const FLUSH_PAUSE: Duration = Duration::from_millis(50);

#[derive(Default)]
struct FilesState {
    files: HashMap<String, (Bytes, String)>,
    faults: HashMap<String, VecDeque<Fault>>,
    log: Vec<Logged>,
    /// Bytes per second every body is paced to, when set.
    rate: Option<u64>,
}

type Shared = Arc<Mutex<FilesState>>;

/// Handle to the running file server.
pub struct FileServer {
    server: Server,
    state: Shared,
}

impl FileServer {
    /// Starts an empty file server on a loopback port.
    pub fn start() -> Self {
        let state: Shared = Arc::default();
        let shared = Arc::clone(&state);
        let server = Server::start(move |_| {
            Router::new().route("/files/{*path}", get(serve)).with_state(shared)
        });
        Self { server, state }
    }

    /// The URL of `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}/files/{path}", self.server.url())
    }

    /// Serves `content` at `path`; a new content gets a new `ETag`.
    pub fn put(&self, path: &str, content: impl Into<Bytes>) -> &Self {
        let content = content.into();
        let etag = format!("\"{}\"", &sha256_hex(&content)[..16]);
        lock(&self.state).files.insert(path.to_owned(), (content, etag));
        self
    }

    /// Gives `path` a new `ETag` without changing its bytes, as a storage
    /// server that re-uploads or re-encodes a file may.
    pub fn retag(&self, path: &str) -> &Self {
        let mut state = lock(&self.state);
        if let Some((_, etag)) = state.files.get_mut(path) {
            *etag = format!("\"{}-retagged\"", etag.trim_matches('"'));
        }
        self
    }

    /// Queues a fault for the next request of `path` (faults run in order).
    pub fn fault(&self, path: &str, fault: Fault) -> &Self {
        lock(&self.state).faults.entry(path.to_owned()).or_default().push_back(fault);
        self
    }

    /// Paces every body to `bytes_per_second` from now on.
    pub fn throttle(&self, bytes_per_second: u64) -> &Self {
        lock(&self.state).rate = Some(bytes_per_second.max(1));
        self
    }

    /// Every request so far.
    pub fn log(&self) -> Vec<Logged> {
        lock(&self.state).log.clone()
    }
}

/// Lower-case hex SHA-256.
pub fn sha256_hex(content: &[u8]) -> String {
    Sha256::digest(content).iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Deterministic pseudo-random bytes, so files are not trivially compressible.
pub fn content(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

async fn serve(
    State(state): State<Shared>,
    Path(path): Path<String>,
    headers: HeaderMap,
) -> Response {
    let range = headers.get(header::RANGE).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let if_range = headers.get(header::IF_RANGE).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let authorized = headers.contains_key(header::AUTHORIZATION);
    let (file, mut fault, rate) = {
        let mut state = lock(&state);
        let fault = state.faults.get_mut(&path).and_then(VecDeque::pop_front);
        (state.files.get(&path).cloned(), fault, state.rate)
    };
    if let Some(Fault::Hold(gate)) = &fault {
        while !gate.is_open() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        fault = None;
    }
    let log = |status: u16, sent: u64| {
        lock(&state).log.push(Logged {
            path: path.clone(),
            range: range.clone(),
            status,
            sent,
            authorized,
        });
    };
    let Some((content, etag)) = file else {
        log(404, 0);
        return StatusCode::NOT_FOUND.into_response();
    };
    match fault {
        Some(Fault::Status(status, retry_after)) => {
            log(status, 0);
            let mut response = StatusCode::from_u16(status).unwrap().into_response();
            if let Some(seconds) = retry_after {
                response.headers_mut().insert(header::RETRY_AFTER, seconds.into());
            }
            return response;
        }
        Some(Fault::RangeNotSatisfiable) => {
            log(416, 0);
            return StatusCode::RANGE_NOT_SATISFIABLE.into_response();
        }
        _ => {}
    }
    let total = content.len() as u64;
    // A range counts only while the client's copy is the current one.
    let start = match (&range, &if_range) {
        (Some(range), Some(tag)) if *tag == etag => parse_start(range),
        (Some(range), None) => parse_start(range),
        _ => None,
    };
    if start.is_some_and(|start| start >= total) {
        log(416, 0);
        let mut response = StatusCode::RANGE_NOT_SATISFIABLE.into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_RANGE, format!("bytes */{total}").parse().unwrap());
        return response;
    }
    let offset = start.unwrap_or(0);
    let body = content.slice(offset as usize..);
    let status = if start.is_some() { StatusCode::PARTIAL_CONTENT } else { StatusCode::OK };
    let length = body.len() as u64;
    let (cut, stall) = match fault {
        Some(Fault::DropAfter(bytes)) => (Some(bytes.min(length)), None),
        Some(Fault::StallAfter(bytes, wait)) => (Some(bytes.min(length)), Some(wait)),
        _ => (None, None),
    };
    log(status.as_u16(), cut.unwrap_or(length));
    let stream_body = match (cut, rate) {
        (None, None) => Body::from(body),
        (None, Some(rate)) => {
            // Tenths of a second's worth of bytes, a tenth of a second apart.
            let step = (rate / 10).max(1) as usize;
            let chunks = futures_util::stream::unfold(0usize, move |at| {
                let body = body.clone();
                async move {
                    if at >= body.len() {
                        return None;
                    }
                    if at > 0 {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    let end = (at + step).min(body.len());
                    Some((Ok::<Bytes, std::io::Error>(body.slice(at..end)), end))
                }
            });
            Body::from_stream(chunks)
        }
        (Some(cut), _) => {
            let head = body.slice(..cut as usize);
            let chunks = futures_util::stream::unfold(0u8, move |step| {
                let head = head.clone();
                async move {
                    match step {
                        0 => Some((Ok::<Bytes, std::io::Error>(head), 1)),
                        1 => {
                            // A pause lets the server flush what it has
                            // buffered: failing at once would drop a short head
                            // (under hyper's ~400 kB write buffer) unsent.
                            tokio::time::sleep(stall.unwrap_or(FLUSH_PAUSE)).await;
                            Some((Err(std::io::Error::other("connection dropped by the test")), 2))
                        }
                        _ => None,
                    }
                }
            });
            Body::from_stream(chunks)
        }
    };
    let mut response = Response::new(stream_body);
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::ETAG, etag.parse().unwrap());
    headers.insert(header::CONTENT_LENGTH, length.into());
    headers.insert(header::ACCEPT_RANGES, "bytes".parse().unwrap());
    if start.is_some() {
        let range = format!("bytes {offset}-{}/{total}", total - 1);
        headers.insert(header::CONTENT_RANGE, range.parse().unwrap());
    }
    response
}

/// The first byte of `bytes=N-`.
fn parse_start(range: &str) -> Option<u64> {
    range.trim().strip_prefix("bytes=")?.strip_suffix('-')?.parse().ok()
}
