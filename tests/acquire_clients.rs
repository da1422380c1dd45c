//! The Hub and Ollama clients against the loopback fakes: listings, gating,
//! pagination, retries, caching, offline mode and input validation.

mod support;

use std::time::Duration;

use kitt::acquire::http::RetryPolicy;
use kitt::acquire::hub::{Gate, HubClient, HubError};
use kitt::acquire::ollama::{OllamaClient, OllamaError, split_tag};
use support::ollama::EXTRA_LAYER_BYTES;
use support::{FakeHub, FakeOllama, GateMode};

const GGUF: &str = "bartowski/Meta-Llama-3.1-8B-Instruct-GGUF";
const GATED: &str = "meta-llama/Llama-3.1-8B-Instruct";

fn hub_client(hub: &FakeHub, token: Option<&str>) -> HubClient {
    HubClient::with_endpoint(hub.url(), token.map(str::to_owned)).expect("client for the fake")
}

fn gated_hub() -> FakeHub {
    let hub = FakeHub::start();
    let files = [
        (".gitattributes", 1_519),
        ("config.json", 855),
        ("model-00001-of-00004.safetensors", 4_976_698_672),
        ("model-00002-of-00004.safetensors", 4_999_802_720),
    ];
    hub.add_repo(GATED, &files).gated(GATED, GateMode::Manual).accept_token("hf_granted");
    hub
}

fn info_path(repo: &str) -> String {
    format!("/api/models/{repo}")
}

#[tokio::test]
async fn hub_lists_every_file_with_its_size_and_lfs_hash() {
    let hub = FakeHub::start();
    hub.add_repo(
        GGUF,
        &[
            ("README.md", 3_012),
            ("Meta-Llama-3.1-8B-Instruct-Q4_K_M.gguf", 4_920_734_016),
            ("Q8_0/model-Q8_0-00001-of-00002.gguf", 5_000_000_000),
            ("Q8_0/model-Q8_0-00002-of-00002.gguf", 3_540_000_000),
        ],
    );

    let repo = hub_client(&hub, None).repo(GGUF).await.expect("listing");

    assert_eq!(repo.repo, GGUF);
    assert_eq!(repo.revision.as_deref(), Some(hub.sha(GGUF).as_str()));
    assert_eq!(repo.gate, Gate::Open);
    let listed: Vec<(&str, u64)> = repo.files.iter().map(|f| (f.path.as_str(), f.size)).collect();
    assert_eq!(
        listed,
        [
            ("Meta-Llama-3.1-8B-Instruct-Q4_K_M.gguf", 4_920_734_016),
            ("Q8_0/model-Q8_0-00001-of-00002.gguf", 5_000_000_000),
            ("Q8_0/model-Q8_0-00002-of-00002.gguf", 3_540_000_000),
            ("README.md", 3_012),
        ]
    );
    let quant = &repo.files[0];
    assert_eq!(quant.sha256.as_deref(), Some(hub.lfs_oid(GGUF, &quant.path).as_str()));
    assert_eq!(repo.files[3].sha256, None, "small files are not LFS");
}

#[tokio::test]
async fn hub_follows_link_pagination() {
    let hub = FakeHub::start();
    let files = [("a.gguf", 1), ("b.gguf", 2), ("e.json", 3), ("sub/c.gguf", 4), ("sub/d.gguf", 5)];
    hub.add_repo("org/paged", &files).page_size(2);

    let repo = hub_client(&hub, None).repo("org/paged").await.expect("listing");

    let sizes: Vec<u64> = repo.files.iter().map(|f| f.size).collect();
    assert_eq!(sizes, [1, 2, 3, 4, 5], "directories are not files");
    let tree = format!("/api/models/org/paged/tree/{}", hub.sha("org/paged"));
    assert_eq!(hub.requests(&tree), 3, "six entries in pages of two");
}

#[tokio::test]
async fn gated_repo_without_token_is_denied_naming_hf_token() {
    let hub = gated_hub();

    let repo = hub_client(&hub, None).repo(GATED).await.expect("listing is public");

    let Gate::Denied { reason } = &repo.gate else {
        panic!("expected a denial, got {:?}", repo.gate);
    };
    assert!(reason.contains(&format!("`{GATED}`")), "{reason}");
    assert!(reason.contains("`HF_TOKEN`"), "{reason}");
    assert!(reason.contains(&format!("{}/{GATED}", hub.url())), "{reason}");
    assert_eq!(hub.requests(&info_path(GATED)), 1);
    assert_eq!(hub.repo_requests(GATED), 2, "no access probe without a token");
    assert_eq!(repo.files.len(), 4, "files are listed even when gated");
}

#[tokio::test]
async fn gated_repo_with_an_accepted_token_is_granted() {
    let hub = gated_hub();

    let repo = hub_client(&hub, Some("hf_granted")).repo(GATED).await.expect("listing");

    assert_eq!(repo.gate, Gate::Granted);
    let probe = format!("/{GATED}/resolve/{}/model-00001-of-00004.safetensors", hub.sha(GATED));
    assert_eq!(hub.requests(&probe), 1, "the probe asks for a weights file");
    assert_eq!(hub.total_requests(), 3, "the CDN redirect is not followed");
}

#[tokio::test]
async fn gated_repo_with_a_token_lacking_access_is_denied() {
    let hub = gated_hub();

    let repo = hub_client(&hub, Some("hf_someone_else")).repo(GATED).await.expect("listing");

    let Gate::Denied { reason } = &repo.gate else {
        panic!("expected a denial, got {:?}", repo.gate);
    };
    assert!(reason.contains("HTTP 403"), "{reason}");
    assert!(!reason.contains("hf_someone_else"), "the token never appears: {reason}");
}

#[tokio::test]
async fn missing_repo_is_not_found() {
    let hub = FakeHub::start();
    hub.missing("org/gone");

    let error = hub_client(&hub, None).repo("org/gone").await.expect_err("404");

    assert!(matches!(&error, HubError::NotFound { repo } if repo == "org/gone"), "{error}");
    assert_eq!(error.to_string(), "Hub repository `org/gone` not found; check the name");
}

#[tokio::test]
async fn rate_limited_twice_then_succeeds_after_retry_after() {
    let hub = FakeHub::start();
    hub.add_repo("org/busy", &[("model.gguf", 42)]).rate_limit("org/busy", 2);

    let repo = hub_client(&hub, None).repo("org/busy").await.expect("third attempt succeeds");

    assert_eq!(repo.files[0].size, 42);
    assert_eq!(hub.requests(&info_path("org/busy")), 3);
}

#[tokio::test]
async fn permanently_rate_limited_repo_gives_up_after_the_policy_attempts() {
    let hub = FakeHub::start();
    hub.add_repo("org/busy", &[("model.gguf", 42)]).rate_limit("org/busy", 100);

    let error = hub_client(&hub, None).repo("org/busy").await.expect_err("429 forever");

    assert!(matches!(&error, HubError::RateLimited { repo } if repo == "org/busy"), "{error}");
    assert_eq!(hub.requests(&info_path("org/busy")), RetryPolicy::default().attempts as usize);
}

#[tokio::test]
async fn retry_after_beyond_the_cap_is_not_waited_for() {
    let hub = FakeHub::start();
    hub.add_repo("org/busy", &[("model.gguf", 42)]).rate_limit("org/busy", 100);
    let policy = RetryPolicy { max_delay: Duration::from_millis(100), ..RetryPolicy::default() };
    let client = hub_client(&hub, None).with_retry_policy(policy);

    let error = client.repo("org/busy").await.expect_err("429");

    assert!(matches!(error, HubError::RateLimited { .. }), "{error}");
    assert_eq!(hub.requests(&info_path("org/busy")), 1, "Retry-After: 1 exceeds the cap");
}

#[tokio::test]
async fn listing_refused_with_401_is_unauthorized_and_says_whether_a_token_is_set() {
    let hub = FakeHub::start();
    hub.add_repo("org/private", &[("model.gguf", 1)]).unauthorized("org/private");

    let error = hub_client(&hub, None).repo("org/private").await.expect_err("401");
    assert!(
        matches!(&error, HubError::Unauthorized { status: 401, token_set: false, .. }),
        "{error}"
    );
    assert!(error.to_string().contains("`org/private`"), "{error}");
    assert!(error.to_string().contains("`HF_TOKEN` is not set"), "{error}");

    let error = hub_client(&hub, Some("hf_x")).repo("org/private").await.expect_err("401");
    assert!(matches!(&error, HubError::Unauthorized { token_set: true, .. }), "{error}");
    assert!(!error.to_string().contains("hf_x"), "{error}");
}

#[tokio::test]
async fn listings_are_cached_for_the_life_of_the_client() {
    let hub = FakeHub::start();
    hub.add_repo(GGUF, &[("model.gguf", 7)]);
    let client = hub_client(&hub, None);

    let (first, second) = tokio::join!(client.repo(GGUF), client.repo(GGUF));
    let third = client.repo(GGUF).await;

    assert!(first.is_ok() && second.is_ok() && third.is_ok());
    assert_eq!(hub.requests(&info_path(GGUF)), 1);
    assert_eq!(hub.total_requests(), 2, "one model info and one tree page");
}

#[tokio::test]
async fn failures_are_cached_too() {
    let hub = FakeHub::start();
    let client = hub_client(&hub, None);

    for _ in 0..3 {
        let error = client.repo("org/unknown").await.expect_err("404");
        assert!(matches!(error, HubError::NotFound { .. }), "{error}");
    }
    assert_eq!(hub.total_requests(), 1);
}

#[tokio::test]
async fn offline_hub_sends_nothing() {
    let hub = FakeHub::start();
    hub.add_repo(GGUF, &[("model.gguf", 7)]);
    let client = hub_client(&hub, None).with_offline(true);

    let error = client.repo(GGUF).await.expect_err("offline");

    assert!(client.is_offline());
    assert!(matches!(&error, HubError::Offline { repo } if repo == GGUF), "{error}");
    assert!(error.to_string().contains("`HF_HUB_OFFLINE`"), "{error}");
    assert_eq!(hub.total_requests(), 0);
}

#[tokio::test]
async fn bad_repo_ids_are_rejected_before_any_request() {
    let hub = FakeHub::start();
    let client = hub_client(&hub, None);

    for bad in ["no-slash", "org/na me", "../etc/passwd", "org/x?y=1", "org/"] {
        let error = client.repo(bad).await.expect_err(bad);
        assert!(matches!(&error, HubError::InvalidRepoId { repo, .. } if repo == bad), "{error}");
        assert!(error.to_string().contains(&format!("`{bad}`")), "{error}");
    }
    assert_eq!(hub.total_requests(), 0);
}

#[tokio::test]
async fn unreachable_hub_is_a_network_error_after_retries() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", closed.local_addr().expect("address"));
    drop(closed);
    let policy =
        RetryPolicy { attempts: 2, base_delay: Duration::from_millis(1), ..RetryPolicy::default() };
    let client = HubClient::with_endpoint(&url, None).expect("client").with_retry_policy(policy);

    let error = client.repo("org/model").await.expect_err("connection refused");

    assert!(matches!(&error, HubError::Network { repo, .. } if repo == "org/model"), "{error}");
    assert!(std::error::Error::source(&error).is_some(), "the cause is kept");
}

fn ollama_client(fake: &FakeOllama) -> OllamaClient {
    OllamaClient::with_endpoints(fake.url(), fake.url()).expect("client for the fake")
}

fn llama_fake() -> FakeOllama {
    let fake = FakeOllama::start();
    let small = FakeOllama::digest("llama3.1-8b-q4_K_M");
    let big = FakeOllama::digest("llama3.1-70b-q4_K_M");
    fake.add_model(
        "llama3.1",
        &[
            ("latest", &small, 4_920_738_944),
            ("8b", &small, 4_920_738_944),
            ("8b-instruct-q4_K_M", &small, 4_920_738_944),
            ("8b-instruct-fp16", &FakeOllama::digest("llama3.1-8b-fp16"), 16_068_890_752),
            ("70b", &big, 42_520_397_824),
        ],
    );
    fake
}

#[tokio::test]
async fn ollama_tags_come_in_page_order_without_duplicates_or_unrelated_links() {
    let fake = llama_fake();
    let client = ollama_client(&fake);

    let tags = client.tags("llama3.1").await.expect("tags");
    let again = client.tags("llama3.1").await.expect("cached tags");

    assert_eq!(tags, ["latest", "8b", "8b-instruct-q4_K_M", "8b-instruct-fp16", "70b"]);
    assert_eq!(again, tags);
    assert_eq!(fake.requests("/library/llama3.1/tags"), 1);
}

#[tokio::test]
async fn ollama_manifest_sums_layers_and_reports_the_model_layer() {
    let fake = llama_fake();

    let manifest = ollama_client(&fake).manifest("llama3.1", "70b").await.expect("manifest");

    assert_eq!(manifest.model_size, Some(42_520_397_824));
    assert_eq!(manifest.total_size, 42_520_397_824 + EXTRA_LAYER_BYTES);
    assert_eq!(manifest.config_digest, FakeOllama::digest("llama3.1-70b-q4_K_M"));
}

#[tokio::test]
async fn ollama_aliases_share_a_config_digest_and_manifests_are_cached() {
    let fake = llama_fake();
    let client = ollama_client(&fake);

    let latest = client.manifest("llama3.1", "latest").await.expect("latest");
    let eight = client.manifest("llama3.1", "8b").await.expect("8b");
    let fp16 = client.manifest("llama3.1", "8b-instruct-fp16").await.expect("fp16");
    client.manifest("llama3.1", "8b").await.expect("cached");

    assert_eq!(latest.config_digest, eight.config_digest);
    assert_ne!(latest.config_digest, fp16.config_digest);
    assert_eq!(fake.requests("/v2/library/llama3.1/manifests/8b"), 1);
}

#[tokio::test]
async fn ollama_unknown_model_or_tag_is_not_found() {
    let fake = llama_fake();
    let client = ollama_client(&fake);

    let error = client.tags("nosuchmodel").await.expect_err("404 page");
    assert!(matches!(&error, OllamaError::NotFound { name } if name == "nosuchmodel"), "{error}");

    let error = client.manifest("llama3.1", "405b").await.expect_err("404 manifest");
    assert!(matches!(&error, OllamaError::NotFound { name } if name == "llama3.1:405b"), "{error}");
    assert_eq!(error.to_string(), "Ollama model `llama3.1:405b` not found");
}

#[tokio::test]
async fn ollama_user_namespaces_use_their_own_paths() {
    let fake = FakeOllama::start();
    let digest = FakeOllama::digest("someone-tiny");
    fake.add_model("someone/tiny", &[("q4", &digest, 1_000), ("q4-alias", &digest, 1_000)]);
    let client = ollama_client(&fake);

    let tags = client.tags("someone/tiny").await.expect("tags");
    let manifest = client.manifest("someone/tiny", "q4-alias").await.expect("manifest");

    assert_eq!(tags, ["q4", "q4-alias"]);
    assert_eq!(manifest.config_digest, digest);
    assert_eq!(fake.requests("/someone/tiny/tags"), 1);
    assert_eq!(fake.requests("/v2/someone/tiny/manifests/q4-alias"), 1);
}

#[tokio::test]
async fn ollama_offline_and_invalid_names_send_nothing() {
    let fake = llama_fake();
    let offline = ollama_client(&fake).with_offline(true);

    let error = offline.tags("llama3.1").await.expect_err("offline");
    assert!(matches!(error, OllamaError::Offline { .. }), "{error}");
    let error = offline.manifest("llama3.1", "8b").await.expect_err("offline");
    assert!(matches!(error, OllamaError::Offline { .. }), "{error}");

    let online = ollama_client(&fake);
    let error = online.tags("Llama3.1").await.expect_err("upper case");
    assert!(matches!(&error, OllamaError::InvalidTag { value, .. } if value == "Llama3.1"));
    let error = online.manifest("llama3.1", "8b/../x").await.expect_err("bad tag");
    assert!(error.to_string().contains("`llama3.1:8b/../x`"), "{error}");
    assert_eq!(fake.total_requests(), 0);
}

#[test]
fn split_tag_defaults_validates_and_keeps_namespaces() {
    let split = |full: &str| split_tag(full).expect(full);
    assert_eq!(split("phi4"), ("phi4".to_owned(), "latest".to_owned()));
    assert_eq!(split("llama3.1:8b-instruct-q4_K_M").1, "8b-instruct-q4_K_M");
    assert_eq!(split("someone/tiny:q4").0, "someone/tiny");

    for bad in ["Phi4", "phi4:", "phi4:a:b", "a/b/c:d", "phi4:-x", " phi4"] {
        let error = split_tag(bad).expect_err(bad);
        assert!(matches!(&error, OllamaError::InvalidTag { value, .. } if value == bad), "{error}");
    }
}
