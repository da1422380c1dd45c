//! Download throughput over loopback: kitt's downloader against `curl -o` of
//! the same file from the same server. Run with `cargo bench --bench download`.
//!
//! The file (200 MiB of incompressible bytes, `KITT_BENCH_DOWNLOAD_MIB` to
//! change it) is served from memory by the fault-injecting file server of the
//! tests, on its own thread in this process. Each side downloads it
//! `ROUNDS` times into a temporary directory (on the same file system) and the
//! median wall time counts. kitt is measured as a campaign uses it: writing a
//! partial file, hashing while writing, checking size and SHA-256, syncing and
//! renaming; and once more without a hash to verify. curl writes the bytes and
//! nothing else, so the ratio is kitt's whole cost of safety.

// The file server of the tests and the server it runs on, included alone:
// their parent `tests/support/mod.rs` brings fakes this benchmark does not need.
#[allow(dead_code)]
#[path = "../tests/support/files.rs"]
mod files;
#[allow(dead_code)]
#[path = "../tests/support/server.rs"]
mod server;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use files::{FileServer, content, sha256_hex};
use kitt::acquire::download::{Downloader, FileSpec};

/// Downloads per side; the median counts.
const ROUNDS: usize = 9;

fn main() {
    let mib: usize = std::env::var("KITT_BENCH_DOWNLOAD_MIB")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(200);
    let body = content(42, mib << 20);
    let sha256 = sha256_hex(&body);
    let server = FileServer::start();
    server.put("org/repo/model.gguf", body);
    let url = server.url("org/repo/model.gguf");
    let dir = tempfile::tempdir().expect("a temporary directory");
    println!("kitt download benchmark: {mib} MiB over loopback, median of {ROUNDS}");

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("build the runtime");
    let bytes = (mib << 20) as u64;
    let kitt = |sha256: Option<String>| {
        median(|| {
            let spec = FileSpec {
                url: url.clone(),
                dest: dir.path().join("kitt.gguf"),
                size: Some(bytes),
                sha256: sha256.clone(),
                label: "org/repo/model.gguf".into(),
            };
            let _ = std::fs::remove_file(&spec.dest);
            let downloader = Downloader::new(None, None).expect("a downloader");
            let started = Instant::now();
            let fetched = runtime.block_on(downloader.fetch(&spec, &|_| {})).expect("download");
            let elapsed = started.elapsed();
            assert_eq!(fetched.received, bytes);
            elapsed
        })
    };
    let verified = kitt(Some(sha256));
    let size_only = kitt(None);
    let curl = median(|| curl_download(&url, &dir.path().join("curl.gguf"), bytes));

    let rate = |elapsed: Duration| bytes as f64 / (1 << 20) as f64 / elapsed.as_secs_f64();
    println!("  curl -o:                        {:>7.0} MiB/s ({curl:.2?})", rate(curl));
    println!(
        "  kitt, size + SHA-256 verified:  {:>7.0} MiB/s ({verified:.2?}), {:.2} × curl's time",
        rate(verified),
        verified.as_secs_f64() / curl.as_secs_f64()
    );
    println!(
        "  kitt, size only:                {:>7.0} MiB/s ({size_only:.2?}), {:.2} × curl's time",
        rate(size_only),
        size_only.as_secs_f64() / curl.as_secs_f64()
    );
}

/// The median of `ROUNDS` timings.
fn median(mut time: impl FnMut() -> Duration) -> Duration {
    let mut times: Vec<Duration> = (0..ROUNDS).map(|_| time()).collect();
    times.sort();
    times[ROUNDS / 2]
}

fn curl_download(url: &str, dest: &Path, bytes: u64) -> Duration {
    let _ = std::fs::remove_file(dest);
    let started = Instant::now();
    let status = Command::new("curl")
        .args(["--silent", "--fail", "--output"])
        .arg(dest)
        .arg(url)
        .status()
        .expect("run curl (is it installed?)");
    let elapsed = started.elapsed();
    assert!(status.success(), "curl failed: {status}");
    assert_eq!(std::fs::metadata(dest).map(|meta| meta.len()).ok(), Some(bytes));
    elapsed
}
