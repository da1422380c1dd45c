//! kitt's Devon clients against the fakes: the HTTP API against the loopback
//! Devon server, the command line against the fake `devon` program. Covered:
//! the bearer key and the include patterns of a download, Devon's "already
//! downloaded" answer and `force`, where the files are, removal and a
//! removal of what Devon does not hold, a refused key naming the settings,
//! Devon's error detail with its status, and a failing or silent `devon`.

mod support;

use kitt::acquire::devon::{Devon, DevonError, DevonRequest, Removal, include_patterns};
use support::devon::{FakeDevon, FakeDevonCli, fnmatch, holds_file};

const REPO: &str = "test/m-GGUF";
const Q8: &[u8] = b"q8 weights";
const SHARD1: &[u8] = b"first shard";
const SHARD2: &[u8] = b"second shard";

fn files() -> [(&'static str, &'static [u8]); 3] {
    [
        ("m-Q8_0.gguf", Q8),
        ("F32/m-F32-00001-of-00002.gguf", SHARD1),
        ("F32/m-F32-00002-of-00002.gguf", SHARD2),
    ]
}

fn request(files: &[&str], force: bool) -> DevonRequest {
    DevonRequest {
        repo: REPO.to_owned(),
        files: files.iter().map(|file| (*file).to_owned()).collect(),
        force,
    }
}

fn quiet() -> tokio::sync::mpsc::UnboundedSender<String> {
    tokio::sync::mpsc::unbounded_channel().0
}

#[test]
fn the_fakes_filter_like_pythons_fnmatch() {
    assert!(fnmatch("*Q4_K_M*", "m-Q4_K_M.gguf"));
    assert!(fnmatch("*.gguf", "Q8_0/m-00001-of-00002.gguf"));
    assert!(!fnmatch("m-Q8_0.gguf", "m-Q8_0.gguf.bak"));
    assert!(fnmatch("m-?.gguf", "m-a.gguf") && fnmatch("[!a]", "b") && !fnmatch("[!a]", "a"));
    // kitt's escaped patterns match their own file and nothing else.
    let odd = "odd[1]*?.gguf".to_owned();
    let pattern = &include_patterns(std::slice::from_ref(&odd))[0];
    assert!(fnmatch(pattern, &odd));
    assert!(!fnmatch(pattern, "odd[1]xy.gguf") && !fnmatch(pattern, "odd1.gguf"));
}

#[tokio::test]
async fn http_downloads_exactly_the_variant_with_the_bearer_key() {
    let fake = FakeDevon::start(Some("dk-test"));
    fake.source(REPO, &files());
    let devon = Devon::http(fake.url(), Some("dk-test".into())).unwrap();

    assert_eq!(devon.stored(REPO).await.unwrap(), None);
    let model = devon.download(&request(&["m-Q8_0.gguf"], false), quiet()).await.unwrap();
    assert_eq!(model.path, fake.repo_dir(REPO));
    assert_eq!(model.files, ["m-Q8_0.gguf"]);
    assert!(holds_file(&model.path, "m-Q8_0.gguf", Q8));
    assert!(!model.path.join("F32").exists(), "only the variant's file was fetched");

    // Devon holds the repository now: it answers without fetching the shards...
    let shards = ["F32/m-F32-00001-of-00002.gguf", "F32/m-F32-00002-of-00002.gguf"];
    let again = devon.download(&request(&shards, false), quiet()).await.unwrap();
    assert_eq!(again.files, ["m-Q8_0.gguf"]);
    // ...until asked with force.
    let forced = devon.download(&request(&shards, true), quiet()).await.unwrap();
    assert_eq!(forced.files, shards);
    assert!(holds_file(&forced.path, shards[1], SHARD2));
    assert_eq!(devon.stored(REPO).await.unwrap().unwrap().path, fake.repo_dir(REPO));

    assert_eq!(devon.remove(REPO).await.unwrap(), Removal::Removed);
    assert!(!fake.holds(REPO) && !fake.repo_dir(REPO).exists());
    assert_eq!(devon.remove(REPO).await.unwrap(), Removal::NotHeld);

    let calls = fake.calls();
    assert!(calls.iter().all(|call| call.authorization.as_deref() == Some("Bearer dk-test")));
    let posts = fake.calls_of("POST");
    assert_eq!(posts.len(), 3);
    assert_eq!(
        posts[0].body,
        serde_json::json!({
            "model_id": REPO,
            "source": "huggingface",
            "force": false,
            "include_patterns": ["m-Q8_0.gguf"],
        })
    );
    assert_eq!(posts[2].body["force"], true);
    let deletes: Vec<String> = fake.calls_of("DELETE").into_iter().map(|call| call.path).collect();
    let delete = format!("/api/v1/models/huggingface/{REPO}");
    assert_eq!(deletes, [delete.clone(), delete]);
    let gets: Vec<String> = fake.calls_of("GET").into_iter().map(|call| call.path).collect();
    assert_eq!(gets, ["/api/v1/models?source=huggingface"; 2]);
}

#[tokio::test]
async fn http_errors_name_the_key_settings_or_carry_devons_detail() {
    let fake = FakeDevon::start(Some("dk-right"));
    fake.source(REPO, &files());

    let wrong = Devon::http(fake.url(), Some("dk-wrong".into())).unwrap();
    let error = wrong.download(&request(&["m-Q8_0.gguf"], false), quiet()).await.unwrap_err();
    assert!(matches!(error, DevonError::Unauthorized { status: 401, sent_key: true, .. }));
    let text = error.to_string();
    assert!(
        text.contains("refused kitt's API key (HTTP 401: Invalid or missing API key)"),
        "{text}"
    );
    assert!(text.contains("`devon_api_key`") && text.contains("DEVON_API_KEY"), "{text}");
    assert!(!text.contains("dk-wrong"), "{text}");

    let keyless = Devon::http(fake.url(), None).unwrap();
    let text = keyless.stored(REPO).await.unwrap_err().to_string();
    assert!(text.contains("kitt, which sent no API key"), "{text}");
    assert_eq!(fake.calls()[1].authorization, None);

    let right = Devon::http(fake.url(), Some("dk-right".into())).unwrap();
    let missing =
        DevonRequest { repo: "test/absent".into(), files: vec!["a.gguf".into()], force: false };
    let text = right.download(&missing, quiet()).await.unwrap_err().to_string();
    assert_eq!(
        text,
        format!(
            "Devon answered HTTP 404 to POST {}/api/v1/downloads: Model not found: test/absent",
            fake.url()
        )
    );

    let closed = Devon::http("http://127.0.0.1:9", None).unwrap();
    let error = closed.stored(REPO).await.unwrap_err();
    assert!(matches!(error, DevonError::Network { .. }), "{error:?}");
}

#[tokio::test]
async fn the_command_line_downloads_locates_and_removes() {
    let fake = FakeDevonCli::new();
    fake.source(REPO, &files());
    let devon = Devon::cli(fake.program());

    assert_eq!(devon.stored(REPO).await.unwrap(), None);
    let (lines, mut printed) = tokio::sync::mpsc::unbounded_channel();
    let model = devon.download(&request(&["m-Q8_0.gguf"], false), lines).await.unwrap();
    assert_eq!(model.path, fake.repo_dir(REPO));
    assert_eq!(model.files, ["m-Q8_0.gguf"]);
    assert!(holds_file(&model.path, "m-Q8_0.gguf", Q8));
    let mut seen = Vec::new();
    while let Ok(line) = printed.try_recv() {
        seen.push(line);
    }
    assert!(seen.iter().any(|line| line == "Download complete!"), "{seen:?}");
    assert!(seen.iter().any(|line| line.starts_with("Fetching 1 files")), "{seen:?}");

    let shards = ["F32/m-F32-00001-of-00002.gguf", "F32/m-F32-00002-of-00002.gguf"];
    let again = devon.download(&request(&shards, false), quiet()).await.unwrap();
    assert!(!again.path.join(shards[0]).exists(), "already downloaded: nothing fetched");
    let forced = devon.download(&request(&shards, true), quiet()).await.unwrap();
    assert!(holds_file(&forced.path, shards[0], SHARD1));

    assert_eq!(devon.remove(REPO).await.unwrap(), Removal::Removed);
    assert!(!fake.holds(REPO));
    assert_eq!(devon.remove(REPO).await.unwrap(), Removal::NotHeld);

    let downloads = fake.calls_of("download");
    assert_eq!(downloads[0], ["download", REPO, "-y", "--include", "m-Q8_0.gguf"]);
    assert_eq!(
        downloads[2],
        ["download", REPO, "-y", "--force", "--include", shards[0], "--include", shards[1]]
    );
    assert_eq!(fake.calls_of("remove"), [["remove", REPO, "-y"]; 2]);
    let export = &fake.calls_of("export")[0];
    assert_eq!(&export[..4], ["export", "--format", "json", "-o"]);
}

#[tokio::test]
async fn a_failing_or_silent_devon_command_says_what_it_printed() {
    let fake = FakeDevonCli::new();
    fake.source(REPO, &files());
    fake.fail(REPO, 1, "Traceback (most recent call last):\n  ...\nOSError: disk quota exceeded\n");
    let devon = Devon::cli(fake.program());
    let error = devon.download(&request(&["m-Q8_0.gguf"], false), quiet()).await.unwrap_err();
    let text = error.to_string();
    assert!(
        text.starts_with(
            "`devon download test/m-GGUF -y --include m-Q8_0.gguf` exited with code 1; last log \
             lines:\nTraceback"
        ),
        "{text}"
    );
    assert!(text.ends_with("OSError: disk quota exceeded"), "{text}");

    // Devon prints its errors and exits 0; kitt then cannot tell where the files are.
    let unknown =
        DevonRequest { repo: "test/absent".into(), files: vec!["a.gguf".into()], force: false };
    let error = devon.download(&unknown, quiet()).await.unwrap_err();
    assert!(matches!(error, DevonError::Unlocated { .. }), "{error:?}");
    assert!(error.to_string().contains("Repository Not Found"), "{error}");
}
