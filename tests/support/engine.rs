//! The real llama.cpp tools for tests: finding them, running one `llama-server`
//! at a time, and making models with the project's own generator.
//!
//! The engine is `KITT_LLAMA_SERVER`, else the path `scripts/setup.sh` writes to
//! `.venv-engine/llama-server-path`; `llama-quantize` and `llama-gguf-split` sit
//! beside it. When it is missing, [`Engine::find`] prints a notice and returns
//! `None` so the test can return early, unless `KITT_REQUIRE_ENGINE=1`, when it
//! panics instead.
//!
//! Two llama.cpp servers on a two-core machine slow each other to a crawl, so
//! [`LlamaServer::start`] first takes an exclusive `flock` on one lock file in the
//! system temp directory ([`ServerLock`]). That serialises servers across test
//! threads, test binaries and concurrent `cargo test` runs alike, and because the
//! kernel drops the lock when its holder exits, a crashed test leaves no stale
//! lock behind. The server is killed when its handle drops, also on panic.
//!
//! ```ignore
//! let Some(engine) = support::engine::Engine::find() else { return };
//! let model = support::engine::make_model(dir.path(), &TinyModel::default());
//! let server = support::engine::LlamaServer::start(&engine, &model, &[]);
//! let url = server.url(); // http://127.0.0.1:<port>
//! ```

#![allow(dead_code)]

use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kitt::gguf::TinyModel;

/// How long a server may take to listen and then to load its model.
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// The log line llama-server prints once it has bound its port.
const LISTENING: &str = "listening on http://127.0.0.1:";

/// The llama.cpp binaries this machine has.
#[derive(Debug, Clone)]
pub struct Engine {
    /// `llama-server`.
    pub server: PathBuf,
    /// The directory holding it and its sibling tools.
    pub dir: PathBuf,
}

impl Engine {
    /// Finds llama-server, or prints a notice and returns `None` (panics if it is required).
    pub fn find() -> Option<Engine> {
        let found = locate().filter(|path| path.is_file());
        let Some(server) = found else {
            let message = "the real llama-server is not installed; run scripts/setup.sh \
                           (or set KITT_LLAMA_SERVER to its path)";
            if std::env::var("KITT_REQUIRE_ENGINE").is_ok_and(|value| value == "1") {
                panic!("KITT_REQUIRE_ENGINE=1 but {message}");
            }
            eprintln!("notice: skipping: {message}");
            return None;
        };
        let dir = server.parent().map(Path::to_path_buf).unwrap_or_default();
        Some(Engine { server, dir })
    }

    /// A sibling tool such as `llama-quantize`.
    pub fn tool(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Quantizes `src` into `dst` as `kind` (e.g. `Q4_K_M`) with llama-quantize.
    pub fn quantize(&self, src: &Path, dst: &Path, kind: &str) {
        let mut command = Command::new(self.tool("llama-quantize"));
        command.arg(src).arg(dst).arg(kind).arg("1");
        run(command, "llama-quantize");
    }

    /// Splits `src` into shards of at most `max_tensors` tensors; returns them in order.
    pub fn split(&self, src: &Path, prefix: &Path, max_tensors: usize) -> Vec<PathBuf> {
        // llama-gguf-split does not create the directory it writes into.
        let dir = prefix.parent().expect("the prefix has a directory");
        fs::create_dir_all(dir).unwrap_or_else(|error| panic!("create {}: {error}", dir.display()));
        let mut command = Command::new(self.tool("llama-gguf-split"));
        command.args(["--split", "--split-max-tensors", &max_tensors.to_string()]);
        command.arg(src).arg(prefix);
        run(command, "llama-gguf-split");

        let stem = prefix.file_name().expect("the prefix has a name").to_string_lossy();
        let mut shards: Vec<PathBuf> = fs::read_dir(dir)
            .expect("list the split directory")
            .map(|entry| entry.expect("a directory entry").path())
            .filter(|path| {
                let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
                name.is_some_and(|n| n.starts_with(&*stem) && n.contains("-of-"))
            })
            .collect();
        shards.sort();
        shards
    }
}

/// Where the setup script or the environment says llama-server is.
fn locate() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("KITT_LLAMA_SERVER").filter(|path| !path.is_empty()) {
        return Some(PathBuf::from(path));
    }
    let recorded = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv-engine/llama-server-path");
    let text = fs::read_to_string(recorded).ok()?;
    Some(PathBuf::from(text.trim())).filter(|path| !path.as_os_str().is_empty())
}

/// Runs a tool to completion, panicking with its output if it fails.
fn run(mut command: Command, what: &str) {
    let output = command.output().unwrap_or_else(|error| panic!("cannot run {what}: {error}"));
    if !output.status.success() {
        panic!(
            "{what} failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// Writes `model` into `dir` under a name derived from its shape and seed.
pub fn make_model(dir: &Path, model: &TinyModel) -> PathBuf {
    let name = format!(
        "kitt-tiny-{}x{}-ff{}-h{}-kv{}-{}-seed{}.gguf",
        model.layers,
        model.embedding,
        model.feed_forward,
        model.heads,
        model.kv_heads,
        model.dtype.name(),
        model.seed
    );
    let path = dir.join(name);
    model.write(&path).unwrap_or_else(|error| panic!("write {}: {error}", path.display()));
    path
}

/// The machine-wide right to run a llama.cpp server; released on drop or exit.
pub struct ServerLock {
    _file: File,
}

impl ServerLock {
    /// Blocks until no other holder (thread or process) runs a server.
    pub fn acquire() -> ServerLock {
        let path = std::env::temp_dir().join("kitt-llama-server.lock");
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .unwrap_or_else(|error| panic!("open {}: {error}", path.display()));
        file.lock().unwrap_or_else(|error| panic!("lock {}: {error}", path.display()));
        ServerLock { _file: file }
    }
}

/// A running llama-server on a loopback port; killed when dropped.
pub struct LlamaServer {
    child: Child,
    port: u16,
    log: PathBuf,
    _log_dir: tempfile::TempDir,
    // Declared last so the lock is released only after the child is gone.
    _lock: ServerLock,
}

impl LlamaServer {
    /// Starts `llama-server -m MODEL --host 127.0.0.1 --port 0 -t 1 -c 512 --no-webui`
    /// plus `extra`, and waits until `/health` answers 200.
    pub fn start(engine: &Engine, model: &Path, extra: &[&str]) -> LlamaServer {
        let lock = ServerLock::acquire();
        let log_dir = tempfile::tempdir().expect("temp dir for the server log");
        let log = log_dir.path().join("llama-server.log");
        let log_file = File::create(&log).expect("create the server log");
        let child = Command::new(&engine.server)
            .arg("-m")
            .arg(model)
            .args(["--host", "127.0.0.1", "--port", "0", "-t", "1", "-c", "512", "--no-webui"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("clone the log handle"))
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|error| panic!("spawn {}: {error}", engine.server.display()));

        let mut server = LlamaServer { child, port: 0, log, _log_dir: log_dir, _lock: lock };
        server.port = server.wait_for_port();
        server.wait_for_health();
        server
    }

    /// The base URL, `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Everything the server has logged so far.
    pub fn log(&self) -> String {
        fs::read(&self.log)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default()
    }

    /// Reads the port from the log line llama-server prints once it listens.
    fn wait_for_port(&mut self) -> u16 {
        let started = Instant::now();
        loop {
            let log = self.log();
            if let Some(at) = log.find(LISTENING) {
                let digits: String =
                    log[at + LISTENING.len()..].chars().take_while(char::is_ascii_digit).collect();
                if let Ok(port) = digits.parse() {
                    return port;
                }
            }
            self.check_alive_within(started, "to listen");
        }
    }

    /// Polls `/health` until it answers 200 (it answers 503 while loading).
    fn wait_for_health(&mut self) {
        let started = Instant::now();
        while health_status(self.port) != Some(200) {
            self.check_alive_within(started, "to load the model");
        }
    }

    /// Panics with the log if the server exited or `START_TIMEOUT` passed; else waits a bit.
    fn check_alive_within(&mut self, started: Instant, what: &str) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("llama-server exited ({status}) before {what}:\n{}", self.log());
        }
        if started.elapsed() > START_TIMEOUT {
            panic!("llama-server took over {START_TIMEOUT:?} {what}:\n{}", self.log());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for LlamaServer {
    fn drop(&mut self) {
        // Errors mean the process is already gone, which is what we want.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The status code of `GET /health`, or `None` if the server does not answer yet.
fn health_status(port: u16) -> Option<u16> {
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let request =
        format!("GET /health HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;

    let mut head = [0u8; 12];
    stream.read_exact(&mut head).ok()?;
    // "HTTP/1.1 200" is exactly twelve bytes.
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}
