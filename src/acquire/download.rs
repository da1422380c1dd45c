//! Resumable, verified file downloads.
//!
//! A file is written to `<name>.kitt-part` beside its final name, with a small
//! sidecar (`<name>.kitt-part.json`) holding the `ETag` of the response the
//! bytes came from. An interrupted download resumes with
//! `Range: bytes=N-` guarded by `If-Range: <etag>`: a server whose file has
//! changed answers with the whole file (or a different `ETag`), which
//! discards the partial bytes, and a 416 discards them too. Once every byte is
//! there, size and SHA-256 are checked against what the listing promised, and
//! only then is the file renamed to its final name, so a file under its final
//! name is always complete and verified.
//!
//! Transient trouble (a dropped connection, a stall longer than the stall
//! timeout, 429 and 5xx answers) is retried with backoff or the server's
//! `Retry-After`, each retry resuming where the last one stopped; a bounded
//! number of attempts *without progress* ends the download. 401, 403 and 404
//! are permanent. Partial files and their sidecars are `partial`'s
//! business, the running SHA-256 `digest`'s.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_RANGE, ETAG, IF_RANGE, RANGE};

use super::digest::{HashWorker, PrefixHash};
use super::http::{self, RetryPolicy};
use super::partial::{
    PartMeta, discard, file_len, lock_path, meta_path, read_meta, usable_partial, write_meta,
};

pub use super::digest::sha256_file;
pub use super::partial::{PART_SUFFIX, is_complete, part_path, remove_partial, resumable_bytes};

/// How long a download may receive nothing before the attempt is abandoned.
pub const DEFAULT_STALL: Duration = Duration::from_secs(60);

/// How often progress is reported while bytes arrive.
const REPORT_EVERY: Duration = Duration::from_millis(200);

/// Bytes gathered before a write to the partial file.
const WRITE_BUFFER: usize = 1 << 20;

/// One file to fetch.
#[derive(Debug, Clone)]
pub struct FileSpec {
    /// Where it is downloaded from.
    pub url: String,
    /// Its final path.
    pub dest: PathBuf,
    /// Its size, when the listing gives one.
    pub size: Option<u64>,
    /// Its SHA-256 (lower-case hex), when the listing gives one.
    pub sha256: Option<String>,
    /// How progress names it, e.g. `org/repo/model-Q4_K_M.gguf`.
    pub label: String,
}

/// What a download reports while it runs.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Bytes arrive: `done` of `total` (when known) for the file.
    Progress {
        /// The file's label.
        label: String,
        /// Bytes on disk so far.
        done: u64,
        /// The expected size.
        total: Option<u64>,
    },
    /// An attempt failed and another follows after `wait`.
    Retrying {
        /// The file's label.
        label: String,
        /// What went wrong.
        why: String,
        /// The pause before the next attempt.
        wait: Duration,
    },
}

/// An exclusive lock on `<name>.kitt-lock`, held while this process writes
/// the file's partial; the lock file is removed (before the lock is let go)
/// when it is dropped.
struct FileLock {
    path: PathBuf,
    _file: std::fs::File,
}

/// How often a download waiting for another process's lock looks again.
const LOCK_POLL: Duration = Duration::from_millis(250);

impl FileLock {
    /// Takes the lock of `spec`'s file, waiting while another process holds
    /// it (reported once as a retry).
    async fn acquire(
        spec: &FileSpec,
        report: &(dyn Fn(Event) + Send + Sync),
    ) -> Result<FileLock, DownloadError> {
        use std::os::unix::fs::MetadataExt;
        let path = lock_path(&spec.dest);
        let io =
            |source| DownloadError::Io { label: spec.label.clone(), path: path.clone(), source };
        let mut waiting = false;
        loop {
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(io)?;
            match file.try_lock() {
                Ok(()) => {
                    // The holder before us removes the lock file as it
                    // finishes: a lock on a file no longer at the path
                    // guards nothing, so it is taken again.
                    let held = file.metadata().map_err(io)?;
                    let current = std::fs::metadata(&path).ok();
                    if current.is_some_and(|now| (now.dev(), now.ino()) == (held.dev(), held.ino()))
                    {
                        return Ok(FileLock { path, _file: file });
                    }
                }
                Err(std::fs::TryLockError::WouldBlock) => {
                    if !waiting {
                        waiting = true;
                        report(Event::Retrying {
                            label: spec.label.clone(),
                            why: "another kitt process is downloading this file; waiting for it"
                                .to_owned(),
                            wait: LOCK_POLL,
                        });
                    }
                }
                Err(std::fs::TryLockError::Error(error)) => return Err(io(error)),
            }
            tokio::time::sleep(LOCK_POLL).await;
        }
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// How one file's download went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// The final path.
    pub path: PathBuf,
    /// Bytes already on disk from an earlier attempt when this call began.
    pub resumed_from: u64,
    /// Bytes received over the network by this call.
    pub received: u64,
    /// HTTP requests made.
    pub requests: u32,
}

/// Why a file could not be downloaded.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    /// 401/403: the server refuses us this file.
    #[error("{label}: access refused (HTTP {status}); {hint}")]
    Refused {
        /// The file.
        label: String,
        /// 401 or 403.
        status: u16,
        /// What the user can do.
        hint: String,
    },
    /// 404.
    #[error("{label}: not found on the server (HTTP 404)")]
    NotFound {
        /// The file.
        label: String,
    },
    /// Another status that retrying does not fix.
    #[error("{label}: the server answered HTTP {status}")]
    Status {
        /// The file.
        label: String,
        /// The status.
        status: u16,
    },
    /// The bytes are not what the listing promised; nothing kept.
    #[error(
        "{label}: {what} mismatch (expected {expected}, got {got}); the download was discarded"
    )]
    Corrupt {
        /// The file.
        label: String,
        /// `size` or `SHA-256`.
        what: &'static str,
        /// What the listing said.
        expected: String,
        /// What arrived.
        got: String,
    },
    /// Every attempt failed without progress.
    #[error("{label}: gave up after {attempts} attempts without progress; last: {last}")]
    GaveUp {
        /// The file.
        label: String,
        /// Attempts made in a row without a new byte.
        attempts: u32,
        /// The last failure.
        last: String,
    },
    /// The local file system failed.
    #[error("{label}: cannot write {}", path.display())]
    Io {
        /// The file.
        label: String,
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The HTTP client could not be built.
    #[error("cannot set up the HTTP client for downloads")]
    Client(#[source] reqwest::Error),
}

/// Downloads files; share one per command.
#[derive(Debug, Clone)]
pub struct Downloader {
    client: reqwest::Client,
    token: Option<String>,
    /// Sent the token: only URLs under this origin get it.
    token_origin: Option<String>,
    policy: RetryPolicy,
    stall: Duration,
}

/// The outcome of one attempt that did not finish the file.
enum Attempt {
    /// Try again after `wait` (already including the server's `Retry-After`).
    Retry { why: String, wait: Option<Duration> },
    /// Throw the partial bytes away and start over at once.
    Restart { why: String },
}

impl Downloader {
    /// A downloader sending `token` (as a bearer) to URLs under `token_origin`.
    pub fn new(token: Option<String>, token_origin: Option<&str>) -> Result<Self, DownloadError> {
        // No overall timeout: a large file takes as long as it takes; the stall
        // watchdog catches a connection that stops delivering.
        let client = reqwest::Client::builder()
            .user_agent(http::user_agent())
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(DownloadError::Client)?;
        Ok(Self {
            client,
            token,
            token_origin: token_origin.map(|origin| origin.trim_end_matches('/').to_owned()),
            policy: retry_policy(),
            stall: stall_timeout(),
        })
    }

    /// Sets the retry policy (attempts count those in a row without progress).
    pub fn with_policy(mut self, policy: RetryPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Sets the stall timeout.
    pub fn with_stall(mut self, stall: Duration) -> Self {
        self.stall = stall;
        self
    }

    /// Downloads `spec` unless its final file is already there, reporting
    /// through `report`.
    pub async fn fetch(
        &self,
        spec: &FileSpec,
        report: &(dyn Fn(Event) + Send + Sync),
    ) -> Result<Fetched, DownloadError> {
        let io = |path: &Path, source| DownloadError::Io {
            label: spec.label.clone(),
            path: path.to_owned(),
            source,
        };
        if let Some(parent) = spec.dest.parent() {
            std::fs::create_dir_all(parent).map_err(|error| io(parent, error))?;
        }
        let already =
            || Fetched { path: spec.dest.clone(), resumed_from: 0, received: 0, requests: 0 };
        if is_complete(&spec.dest, spec.size) {
            return Ok(already());
        }
        // One writer per file, whichever kitt process (another campaign on
        // the same storage root) it is; the one that waited usually finds the
        // file complete.
        let _lock = FileLock::acquire(spec, report).await?;
        if is_complete(&spec.dest, spec.size) {
            return Ok(already());
        }
        let part = part_path(&spec.dest);
        let meta_path = meta_path(&spec.dest);
        let resumed_from = usable_partial(&part, &meta_path, &spec.url);
        let mut fetched =
            Fetched { path: spec.dest.clone(), resumed_from, received: 0, requests: 0 };
        let mut hasher = spec.sha256.as_ref().map(|_| PrefixHash::default());
        let mut failures_in_a_row = 0;
        loop {
            let before = file_len(&part);
            fetched.requests += 1;
            let outcome =
                self.attempt(spec, &part, &meta_path, &mut fetched, &mut hasher, report).await;
            let (why, wait) = match outcome {
                Ok(()) => break,
                Err(Ok(Attempt::Restart { why })) => {
                    tracing::info!("{}: {why}; starting over", spec.label);
                    discard(&part, &meta_path);
                    (why, Some(Duration::ZERO))
                }
                Err(Ok(Attempt::Retry { why, wait })) => (why, wait),
                Err(Err(error)) => return Err(error),
            };
            let progressed = file_len(&part) > before;
            failures_in_a_row = if progressed { 1 } else { failures_in_a_row + 1 };
            if failures_in_a_row >= self.policy.attempts.max(1) {
                return Err(DownloadError::GaveUp {
                    label: spec.label.clone(),
                    attempts: failures_in_a_row,
                    last: why,
                });
            }
            let backoff = self.backoff(failures_in_a_row);
            let wait = wait.unwrap_or(backoff).min(self.policy.max_delay);
            report(Event::Retrying { label: spec.label.clone(), why, wait });
            tokio::time::sleep(wait).await;
        }
        self.finish(spec, &part, &meta_path, hasher).await?;
        Ok(fetched)
    }

    fn backoff(&self, failures: u32) -> Duration {
        let factor = 2u32.saturating_pow(failures.saturating_sub(1));
        self.policy.base_delay.saturating_mul(factor).min(self.policy.max_delay)
    }

    /// One request: appends what arrives to the partial file. `Ok` once the
    /// body is complete.
    async fn attempt(
        &self,
        spec: &FileSpec,
        part: &Path,
        meta_path: &Path,
        fetched: &mut Fetched,
        hasher: &mut Option<PrefixHash>,
        report: &(dyn Fn(Event) + Send + Sync),
    ) -> Result<(), Result<Attempt, DownloadError>> {
        let io = |path: &Path, source| -> Result<(), Result<Attempt, DownloadError>> {
            Err(Err(DownloadError::Io { label: spec.label.clone(), path: path.to_owned(), source }))
        };
        let have = file_len(part);
        // Without an ETag there is nothing to guard a resume with: start over.
        let meta = read_meta(meta_path).filter(|meta| !meta.etag.is_empty());
        if spec.size.is_some_and(|size| have == size && have > 0) && meta.is_some() {
            // Complete from an earlier attempt; only verification is left.
            return Ok(());
        }
        let mut request = self.client.get(&spec.url);
        if let Some(token) = self.token_for(&spec.url) {
            request = request.bearer_auth(token);
        }
        if let (true, Some(meta)) = (have > 0, &meta) {
            request = request.header(RANGE, format!("bytes={have}-")).header(IF_RANGE, &meta.etag);
        }
        // The watchdog also covers the wait for the response's head: a server
        // that accepts the connection and then says nothing is a stall too.
        let response = match tokio::time::timeout(self.stall, request.send()).await {
            Ok(Ok(response)) => response,
            Ok(Err(error)) => return Err(Ok(transport(&error))),
            Err(_) => return Err(Ok(self.stalled("no answer"))),
        };
        let status = response.status();
        let etag =
            response.headers().get(ETAG).and_then(|value| value.to_str().ok()).map(str::to_owned);
        let append = match status {
            StatusCode::PARTIAL_CONTENT => {
                let start = response
                    .headers()
                    .get(CONTENT_RANGE)
                    .and_then(|value| value.to_str().ok())
                    .and_then(content_range_start);
                if start != Some(have) {
                    return Err(Ok(Attempt::Restart {
                        why: format!("the server resumed at an unexpected offset ({start:?})"),
                    }));
                }
                if etag.is_some() && etag != meta.as_ref().map(|m| m.etag.clone()) {
                    return Err(Ok(Attempt::Restart {
                        why: "the file changed on the server (new ETag)".into(),
                    }));
                }
                true
            }
            StatusCode::OK => false,
            StatusCode::RANGE_NOT_SATISFIABLE => {
                return Err(Ok(Attempt::Restart {
                    why: "the server cannot resume the partial file (HTTP 416)".into(),
                }));
            }
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                return Err(Err(DownloadError::Refused {
                    label: spec.label.clone(),
                    status: status.as_u16(),
                    hint: if self.token.is_some() {
                        "the token in use has no access; accept the model's licence on its Hub \
                         page with the account of `HF_TOKEN`"
                            .into()
                    } else {
                        "the repository may be gated: accept its licence on its Hub page and \
                         set `HF_TOKEN`"
                            .into()
                    },
                }));
            }
            StatusCode::NOT_FOUND => {
                return Err(Err(DownloadError::NotFound { label: spec.label.clone() }));
            }
            status if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() => {
                let wait = response
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|value| value.to_str().ok())
                    .and_then(|value| http::parse_retry_after(value, jiff::Timestamp::now()));
                return Err(Ok(Attempt::Retry {
                    why: format!("the server answered HTTP {}", status.as_u16()),
                    wait,
                }));
            }
            status => {
                return Err(Err(DownloadError::Status {
                    label: spec.label.clone(),
                    status: status.as_u16(),
                }));
            }
        };
        if !append {
            // A full body: whatever was there before is replaced.
            let meta = PartMeta { url: spec.url.clone(), etag: etag.clone().unwrap_or_default() };
            if let Err(error) = write_meta(meta_path, &meta) {
                return io(meta_path, error);
            }
        }
        let opened = if append {
            std::fs::OpenOptions::new().append(true).open(part)
        } else {
            std::fs::File::create(part)
        };
        let file = match opened {
            Ok(file) => file,
            Err(error) => return io(part, error),
        };
        let done = file_len(part);
        if let Some(hash) = hasher.as_mut()
            && let Err(error) = hash.catch_up(part, done).await
        {
            return io(part, error);
        }
        let worker = hasher.take().map(HashWorker::start);
        let received = self
            .receive(spec, part, meta_path, response, file, done, fetched, &worker, report)
            .await;
        if let Some(worker) = worker {
            *hasher = Some(worker.finish().await);
        }
        received
    }

    /// Appends the body of `response` to `file` (the partial file, holding
    /// `done` bytes), handing each chunk to the hash `worker`. `Ok` once every
    /// expected byte is there and synced.
    #[allow(clippy::too_many_arguments)]
    async fn receive(
        &self,
        spec: &FileSpec,
        part: &Path,
        meta_path: &Path,
        response: reqwest::Response,
        file: std::fs::File,
        mut done: u64,
        fetched: &mut Fetched,
        worker: &Option<HashWorker>,
        report: &(dyn Fn(Event) + Send + Sync),
    ) -> Result<(), Result<Attempt, DownloadError>> {
        let io = |path: &Path, source| -> Result<(), Result<Attempt, DownloadError>> {
            Err(Err(DownloadError::Io { label: spec.label.clone(), path: path.to_owned(), source }))
        };
        let mut file = std::io::BufWriter::with_capacity(WRITE_BUFFER, file);
        let mut body = response.bytes_stream();
        let mut last_report = Instant::now();
        let mut reported = done;
        let mut heard = Instant::now();
        loop {
            // Waits in short slices: a quiet connection still reports (and
            // flushes) what arrived before it went quiet, and the stall timeout
            // counts from the last byte.
            let next = match tokio::time::timeout(REPORT_EVERY, body.next()).await {
                Ok(next) => next,
                Err(_) => {
                    if done != reported {
                        if let Err(error) = file.flush() {
                            return io(part, error);
                        }
                        reported = done;
                        report(Event::Progress {
                            label: spec.label.clone(),
                            done,
                            total: spec.size,
                        });
                    }
                    if heard.elapsed() >= self.stall {
                        return Err(Ok(self.stalled("no data")));
                    }
                    continue;
                }
            };
            heard = Instant::now();
            let Some(chunk) = next else { break };
            let chunk = match chunk {
                Ok(chunk) => chunk,
                Err(error) => return Err(Ok(transport(&error))),
            };
            if let Err(error) = file.write_all(&chunk) {
                return io(part, error);
            }
            done += chunk.len() as u64;
            fetched.received += chunk.len() as u64;
            if let Some(worker) = worker {
                worker.hash(chunk).await;
            }
            if spec.size.is_some_and(|size| done > size) {
                drop(file);
                return Err(Err(self.corrupt(spec, part, meta_path, "size", done)));
            }
            if last_report.elapsed() >= REPORT_EVERY {
                last_report = Instant::now();
                reported = done;
                report(Event::Progress { label: spec.label.clone(), done, total: spec.size });
            }
        }
        report(Event::Progress { label: spec.label.clone(), done, total: spec.size });
        let synced = file.into_inner().map_err(|error| error.into_error()).and_then(|file| {
            file.sync_all()?;
            Ok(())
        });
        if let Err(error) = synced {
            return io(part, error);
        }
        match spec.size {
            Some(size) if done < size => Err(Ok(Attempt::Retry {
                why: format!("the connection ended after {done} of {size} bytes"),
                wait: None,
            })),
            _ => Ok(()),
        }
    }

    /// A stalled attempt: retried at once, resuming where it stopped.
    fn stalled(&self, what: &str) -> Attempt {
        Attempt::Retry {
            why: format!("{what} for {} s", self.stall.as_secs_f64()),
            wait: Some(Duration::ZERO),
        }
    }

    /// Verifies the complete partial file and renames it to its final name.
    async fn finish(
        &self,
        spec: &FileSpec,
        part: &Path,
        meta_path: &Path,
        hasher: Option<PrefixHash>,
    ) -> Result<(), DownloadError> {
        let io = |path: &Path, source| DownloadError::Io {
            label: spec.label.clone(),
            path: path.to_owned(),
            source,
        };
        let size = file_len(part);
        if spec.size.is_some_and(|expected| expected != size) {
            return Err(self.corrupt(spec, part, meta_path, "size", size));
        }
        if let (Some(expected), Some(mut hash)) = (&spec.sha256, hasher) {
            hash.catch_up(part, size).await.map_err(|error| io(part, error))?;
            let got = hash.hex();
            if !got.eq_ignore_ascii_case(expected) {
                discard(part, meta_path);
                return Err(DownloadError::Corrupt {
                    label: spec.label.clone(),
                    what: "SHA-256",
                    expected: expected.clone(),
                    got,
                });
            }
        }
        std::fs::rename(part, &spec.dest).map_err(|error| io(&spec.dest, error))?;
        let _ = std::fs::remove_file(meta_path);
        if let Some(parent) = spec.dest.parent()
            && let Ok(dir) = std::fs::File::open(parent)
        {
            let _ = dir.sync_all();
        }
        Ok(())
    }

    fn corrupt(
        &self,
        spec: &FileSpec,
        part: &Path,
        meta_path: &Path,
        what: &'static str,
        got: u64,
    ) -> DownloadError {
        discard(part, meta_path);
        DownloadError::Corrupt {
            label: spec.label.clone(),
            what,
            expected: spec.size.map(|size| format!("{size} bytes")).unwrap_or_default(),
            got: format!("{got} bytes"),
        }
    }

    fn token_for(&self, url: &str) -> Option<&str> {
        let origin = self.token_origin.as_deref()?;
        let under = url.strip_prefix(origin).is_some_and(|rest| rest.starts_with('/'));
        under.then_some(self.token.as_deref()).flatten()
    }
}

/// The first byte of `bytes START-END/TOTAL`.
fn content_range_start(value: &str) -> Option<u64> {
    let range = value.trim().strip_prefix("bytes ")?;
    range.split('-').next()?.trim().parse().ok()
}

fn transport(error: &reqwest::Error) -> Attempt {
    let why = if error.is_timeout() {
        "the request timed out".to_owned()
    } else if error.is_connect() {
        "the server could not be reached".to_owned()
    } else {
        format!("the connection failed: {}", crate::error::with_causes(error))
    };
    Attempt::Retry { why, wait: None }
}

/// How model downloads retry (Hub files and Ollama pulls alike): five
/// attempts in a row without a new byte, waiting 1 s doubling up to 60 s.
pub fn retry_policy() -> RetryPolicy {
    RetryPolicy {
        attempts: 5,
        base_delay: Duration::from_secs(1),
        max_delay: Duration::from_secs(60),
    }
}

/// How long a model download may go without progress: `KITT_DOWNLOAD_STALL_SECS`
/// (fractions allowed), else [`DEFAULT_STALL`].
pub fn stall_timeout() -> Duration {
    stall_from_env().unwrap_or(DEFAULT_STALL)
}

fn stall_from_env() -> Option<Duration> {
    let secs: f64 = std::env::var("KITT_DOWNLOAD_STALL_SECS").ok()?.trim().parse().ok()?;
    (secs > 0.0 && secs.is_finite()).then(|| Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_gives_the_first_byte() {
        assert_eq!(content_range_start("bytes 100-199/200"), Some(100));
        assert_eq!(content_range_start("bytes */200"), None);
        assert_eq!(content_range_start("items 1-2/3"), None);
    }

    #[test]
    fn the_token_goes_only_to_its_origin() {
        let downloader =
            Downloader::new(Some("secret".into()), Some("http://127.0.0.1:9/")).unwrap();
        assert_eq!(
            downloader.token_for("http://127.0.0.1:9/org/repo/resolve/main/a"),
            Some("secret")
        );
        assert_eq!(downloader.token_for("http://127.0.0.1:99/org/repo"), None);
        assert_eq!(downloader.token_for("http://127.0.0.1:9"), None);
    }
}
