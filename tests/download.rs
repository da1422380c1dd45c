//! The resumable downloader against a loopback file server that drops
//! connections, stalls, changes files and rate-limits on request.

mod support;

use std::sync::Mutex;
use std::time::Duration;

use kitt::acquire::download::{DownloadError, Downloader, Event, FileSpec, part_path};
use kitt::acquire::http::RetryPolicy;
use support::files::{Fault, FileServer, Gate, content, sha256_hex};

const SIZE: usize = 3 * 1024 * 1024 + 17;

fn downloader() -> Downloader {
    let policy = RetryPolicy {
        attempts: 3,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_secs(5),
    };
    Downloader::new(None, None).unwrap().with_policy(policy).with_stall(Duration::from_millis(500))
}

fn spec(server: &FileServer, dir: &std::path::Path, body: &[u8]) -> FileSpec {
    FileSpec {
        url: server.url("org/repo/model.gguf"),
        dest: dir.join("org/repo/model.gguf"),
        size: Some(body.len() as u64),
        sha256: Some(sha256_hex(body)),
        label: "org/repo/model.gguf".into(),
    }
}

async fn fetch(
    downloader: &Downloader,
    spec: &FileSpec,
) -> (Result<kitt::acquire::download::Fetched, DownloadError>, Vec<Event>) {
    let events = Mutex::new(Vec::new());
    let report = |event: Event| events.lock().unwrap().push(event);
    let outcome = downloader.fetch(spec, &report).await;
    (outcome, events.into_inner().unwrap())
}

#[tokio::test]
async fn a_dropped_connection_resumes_from_the_partial_file() {
    let dir = tempfile::tempdir().unwrap();
    let server = FileServer::start();
    let body = content(1, SIZE);
    server
        .put("org/repo/model.gguf", body.clone())
        .fault("org/repo/model.gguf", Fault::DropAfter(1_000_000));
    let spec = spec(&server, dir.path(), &body);

    let (outcome, events) = fetch(&downloader(), &spec).await;
    let fetched = outcome.unwrap();
    assert_eq!(std::fs::read(&spec.dest).unwrap(), body);
    assert!(!part_path(&spec.dest).exists());
    let log = server.log();
    assert_eq!(log.len(), 2, "{log:?}");
    assert_eq!((log[0].range.as_deref(), log[0].sent), (None, 1_000_000));
    // The second request asks only for the rest, and gets only the rest.
    assert_eq!(log[1].range.as_deref(), Some("bytes=1000000-"));
    assert_eq!((log[1].status, log[1].sent), (206, SIZE as u64 - 1_000_000));
    assert_eq!(fetched.received, SIZE as u64);
    assert!(events.iter().any(|event| matches!(event, Event::Retrying { .. })), "{events:?}");
}

#[tokio::test]
async fn a_partial_file_left_by_an_earlier_process_is_resumed() {
    let dir = tempfile::tempdir().unwrap();
    let server = FileServer::start();
    let body = content(2, SIZE);
    server
        .put("org/repo/model.gguf", body.clone())
        .fault("org/repo/model.gguf", Fault::DropAfter(500_000));
    let spec = spec(&server, dir.path(), &body);
    let impatient = downloader().with_policy(RetryPolicy {
        attempts: 1,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_secs(1),
    });
    let (first, _) = fetch(&impatient, &spec).await;
    assert!(matches!(first, Err(DownloadError::GaveUp { .. })), "{first:?}");
    assert_eq!(std::fs::metadata(part_path(&spec.dest)).unwrap().len(), 500_000);
    assert!(!spec.dest.exists());

    let (second, _) = fetch(&downloader(), &spec).await;
    let fetched = second.unwrap();
    assert_eq!(fetched.resumed_from, 500_000);
    assert_eq!(fetched.received, SIZE as u64 - 500_000);
    assert_eq!(std::fs::read(&spec.dest).unwrap(), body);
}

#[tokio::test]
async fn a_changed_file_discards_the_partial_and_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let server = FileServer::start();
    let old = content(3, SIZE);
    let new = content(4, SIZE);
    server.put("org/repo/model.gguf", old).fault("org/repo/model.gguf", Fault::DropAfter(700_000));
    let spec = spec(&server, dir.path(), &new);
    let impatient = downloader().with_policy(RetryPolicy {
        attempts: 1,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_secs(1),
    });
    let _ = fetch(&impatient, &spec).await;
    server.put("org/repo/model.gguf", new.clone());

    let (outcome, _) = fetch(&downloader(), &spec).await;
    outcome.unwrap();
    let log = server.log();
    // The resume was asked for, but the ETag no longer matched: the whole new file came.
    assert_eq!(log[1].range.as_deref(), Some("bytes=700000-"));
    assert_eq!((log[1].status, log[1].sent), (200, SIZE as u64));
    assert_eq!(std::fs::read(&spec.dest).unwrap(), new);
}

#[tokio::test]
async fn a_416_discards_the_partial_and_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let server = FileServer::start();
    let body = content(5, SIZE);
    server
        .put("org/repo/model.gguf", body.clone())
        .fault("org/repo/model.gguf", Fault::DropAfter(100_000))
        .fault("org/repo/model.gguf", Fault::RangeNotSatisfiable);
    let spec = spec(&server, dir.path(), &body);
    let (outcome, _) = fetch(&downloader(), &spec).await;
    outcome.unwrap();
    let log = server.log();
    let statuses: Vec<u16> = log.iter().map(|entry| entry.status).collect();
    assert_eq!(statuses, [200, 416, 200], "{log:?}");
    assert_eq!(log[2].range, None);
    assert_eq!(std::fs::read(&spec.dest).unwrap(), body);
}

#[tokio::test]
async fn a_hash_mismatch_fails_and_leaves_no_file_under_the_final_name() {
    let dir = tempfile::tempdir().unwrap();
    let server = FileServer::start();
    let body = content(6, 100_000);
    server.put("org/repo/model.gguf", body.clone());
    let mut spec = spec(&server, dir.path(), &body);
    spec.sha256 = Some(sha256_hex(b"something else"));
    let (outcome, _) = fetch(&downloader(), &spec).await;
    let error = outcome.unwrap_err();
    assert!(matches!(error, DownloadError::Corrupt { what: "SHA-256", .. }), "{error:?}");
    assert!(error.to_string().contains("discarded"), "{error}");
    assert!(!spec.dest.exists());
    assert!(!part_path(&spec.dest).exists());
}

#[tokio::test]
async fn a_rate_limit_waits_as_asked_and_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let server = FileServer::start();
    let body = content(7, 50_000);
    server
        .put("org/repo/model.gguf", body.clone())
        .fault("org/repo/model.gguf", Fault::Status(429, Some(1)));
    let spec = spec(&server, dir.path(), &body);
    let (outcome, events) = fetch(&downloader(), &spec).await;
    outcome.unwrap();
    let waited = events.iter().find_map(|event| match event {
        Event::Retrying { wait, why, .. } => Some((*wait, why.clone())),
        _ => None,
    });
    assert_eq!(waited, Some((Duration::from_secs(1), "the server answered HTTP 429".into())));
}

#[tokio::test]
async fn refusals_and_missing_files_are_permanent() {
    let dir = tempfile::tempdir().unwrap();
    let server = FileServer::start();
    let body = content(8, 1000);
    server
        .put("org/repo/model.gguf", body.clone())
        .fault("org/repo/model.gguf", Fault::Status(403, None));
    let spec = spec(&server, dir.path(), &body);
    let (outcome, _) = fetch(&downloader(), &spec).await;
    let error = outcome.unwrap_err();
    assert!(matches!(error, DownloadError::Refused { status: 403, .. }), "{error:?}");
    assert!(error.to_string().contains("HF_TOKEN"), "{error}");
    assert_eq!(server.log().len(), 1);

    let mut missing = spec.clone();
    missing.url = server.url("org/repo/absent.gguf");
    let (outcome, _) = fetch(&downloader(), &missing).await;
    assert!(matches!(outcome, Err(DownloadError::NotFound { .. })), "{outcome:?}");
}

#[tokio::test]
async fn a_stalled_connection_is_abandoned_and_resumed() {
    let dir = tempfile::tempdir().unwrap();
    let server = FileServer::start();
    let body = content(9, SIZE);
    server
        .put("org/repo/model.gguf", body.clone())
        .fault("org/repo/model.gguf", Fault::StallAfter(300_000, Duration::from_secs(30)));
    let spec = spec(&server, dir.path(), &body);
    let (outcome, events) = fetch(&downloader(), &spec).await;
    outcome.unwrap();
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::Retrying { why, .. } if why.starts_with("no data for"))),
        "{events:?}"
    );
    assert_eq!(server.log()[1].range.as_deref(), Some("bytes=300000-"));
    assert_eq!(std::fs::read(&spec.dest).unwrap(), body);
}

#[tokio::test]
async fn the_token_is_sent_only_to_its_own_origin() {
    let dir = tempfile::tempdir().unwrap();
    let server = FileServer::start();
    let other = FileServer::start();
    let body = content(10, 1000);
    server.put("org/repo/model.gguf", body.clone());
    other.put("org/repo/model.gguf", body.clone());
    let origin = server.url("");
    let origin = origin.trim_end_matches("/files/");
    let downloader = Downloader::new(Some("hf_secret".into()), Some(origin)).unwrap();
    let (outcome, _) = fetch(&downloader, &spec(&server, dir.path(), &body)).await;
    outcome.unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let (outcome, _) = fetch(&downloader, &spec(&other, elsewhere.path(), &body)).await;
    outcome.unwrap();
    assert!(server.log()[0].authorized);
    assert!(!other.log()[0].authorized);
}

#[tokio::test]
async fn two_downloads_of_one_file_never_write_it_together() {
    let dir = tempfile::tempdir().unwrap();
    let server = FileServer::start();
    let body = content(9, SIZE);
    let gate = Gate::default();
    server
        .put("org/repo/model.gguf", body.clone())
        .fault("org/repo/model.gguf", Fault::Hold(gate.clone()));
    let spec = spec(&server, dir.path(), &body);

    // The first holds the file's lock while its request is held back.
    let first = tokio::spawn({
        let spec = spec.clone();
        async move { fetch(&downloader().with_stall(Duration::from_secs(60)), &spec).await }
    });
    let lock = spec.dest.with_file_name("model.gguf.kitt-lock");
    while !lock.exists() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The second (another campaign on the same storage root) waits for it.
    let second = tokio::spawn({
        let spec = spec.clone();
        async move { fetch(&downloader().with_stall(Duration::from_secs(60)), &spec).await }
    });
    tokio::time::sleep(Duration::from_millis(600)).await;
    // Only the first's request (held, so not yet logged) was made.
    assert!(server.log().is_empty(), "{:?}", server.log());
    gate.open();
    let (first, _) = first.await.unwrap();
    let (second, events) = second.await.unwrap();
    assert_eq!(first.unwrap().received, SIZE as u64);
    assert_eq!(second.unwrap().requests, 0, "the second found the file complete");
    assert!(
        events.iter().any(|event| matches!(event, Event::Retrying { why, .. } if why.contains("another kitt process"))),
        "{events:?}"
    );
    assert_eq!(std::fs::read(&spec.dest).unwrap(), body);
    assert_eq!(server.log().len(), 1);
    assert!(!lock.exists() && !part_path(&spec.dest).exists());
}
