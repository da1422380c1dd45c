//! The loopback HTTP server under every fake: an axum router on
//! `127.0.0.1:0`, served from its own thread and tokio runtime so that both
//! async tests and synchronous binary-level tests can use it, with a count of
//! requests per path. Dropping the handle stops the server.

use std::collections::HashMap;
use std::future::IntoFuture;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::TcpListener;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use tokio::sync::oneshot;

/// A running fake server; stops when dropped.
pub struct Server {
    url: String,
    log: RequestLog,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// Binds a loopback port, builds the router for that base URL, and serves it.
    pub fn start(router_for: impl FnOnce(&str) -> Router) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        listener.set_nonblocking(true).expect("make the listener non-blocking");
        let address = listener.local_addr().expect("read the bound address");
        let url = format!("http://{address}");

        let log = RequestLog::default();
        let router = router_for(&url).layer(middleware::from_fn_with_state(log.clone(), record));
        let (shutdown, stop) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name(format!("fake-server-{}", address.port()))
            .spawn(move || serve(listener, router, stop))
            .expect("spawn the fake server thread");

        Self { url, log, shutdown: Some(shutdown), thread: Some(thread) }
    }

    /// The base URL, `http://127.0.0.1:<port>`, without a trailing `/`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// How many requests reached exactly `path` (no query string), any method.
    pub fn requests(&self, path: &str) -> usize {
        self.log.counts().get(path).copied().unwrap_or(0)
    }

    /// How many requests reached any path starting with `prefix`.
    pub fn requests_under(&self, prefix: &str) -> usize {
        self.log.counts().iter().filter(|(path, _)| path.starts_with(prefix)).map(|(_, n)| n).sum()
    }

    /// How many requests reached the server in total.
    pub fn total_requests(&self) -> usize {
        self.log.counts().values().sum()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Runs the router until `stop` fires; dropping the runtime ends open connections.
fn serve(listener: TcpListener, router: Router, stop: oneshot::Receiver<()>) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("build the fake server runtime");
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(listener).expect("adopt the listener");
        tokio::select! {
            served = axum::serve(listener, router).into_future() => {
                served.expect("fake server stopped with an error");
            }
            _ = stop => {}
        }
    });
}

/// Request counts per path, shared between the handle and the middleware.
#[derive(Clone, Default)]
struct RequestLog(Arc<Mutex<HashMap<String, usize>>>);

impl RequestLog {
    fn counts(&self) -> MutexGuard<'_, HashMap<String, usize>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Middleware counting every request before routing, so 404s count too.
async fn record(State(log): State<RequestLog>, request: Request, next: Next) -> Response {
    *log.counts().entry(request.uri().path().to_owned()).or_default() += 1;
    next.run(request).await
}

/// Locks fake state, ignoring poisoning (a panicking test must not hide the next failure).
pub fn lock<T>(state: &Mutex<T>) -> MutexGuard<'_, T> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

/// `len` lower-case hex digits derived from `seed`: stable fake SHAs and digests.
pub fn fake_hex(seed: &str, len: usize) -> String {
    let mut hex = String::with_capacity(len + 16);
    let mut round = 0u64;
    while hex.len() < len {
        let mut hasher = DefaultHasher::new();
        (seed, round).hash(&mut hasher);
        hex.push_str(&format!("{:016x}", hasher.finish()));
        round += 1;
    }
    hex.truncate(len);
    hex
}

/// A fake `sha256:` digest derived from `seed`.
pub fn digest(seed: &str) -> String {
    format!("sha256:{}", fake_hex(seed, 64))
}
