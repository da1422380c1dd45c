//! `kitt campaign run --dry-run` against storage roots of sparse files, offline.

mod common;

use common::Scratch;
use serde_json::Value;

const GIB: u64 = 1024 * 1024 * 1024;

/// A repository shaped like a real GGUF repo, with every grouping case.
fn realistic_repo(scratch: &Scratch) {
    let repo = "org/Llama-3.1-8B-Instruct-GGUF";
    for (file, size) in [
        ("Llama-3.1-8B-Instruct-IQ1_S.gguf", 2 * GIB),
        ("Llama-3.1-8B-Instruct-Q2_K.gguf", 3 * GIB),
        ("Llama-3.1-8B-Instruct-Q4_K_M.gguf", 4_920_734_272),
        ("Llama-3.1-8B-Instruct-UD-Q4_K_XL.gguf", 5 * GIB),
        ("Q8_0/Llama-3.1-8B-Instruct-Q8_0-00001-of-00002.gguf", 4 * GIB),
        ("Q8_0/Llama-3.1-8B-Instruct-Q8_0-00002-of-00002.gguf", 4 * GIB),
        ("Llama-3.1-8B-Instruct-f16-00001-of-00002.gguf", 8 * GIB),
        ("mmproj-Llama-3.1-8B-Instruct-f16.gguf", GIB / 2),
        ("Llama-3.1-8B-Instruct.imatrix.gguf", GIB / 100),
        ("README.md", 10_000),
    ] {
        scratch.model_file(repo, file, size);
    }
}

const CAMPAIGN: &str = "campaign_name: local-test
models:
  - name: Llama-3.1-8B
    params: 8B
    gguf_repo: org/Llama-3.1-8B-Instruct-GGUF
  - name: Ghost
    params: 7B
    gguf_repo: org/Not-Downloaded-GGUF
engines:
  - name: llama_cpp
    suite: quick
  - name: ollama
    formats: [gguf]
quant_filter:
  skip_patterns: [\"iq1_*\"]
resource_limits:
  max_model_size_gb: 7.5
disk:
  reserve_gb: 0
";

#[test]
fn plan_table_lists_every_variant_with_reasons() {
    let scratch = Scratch::new();
    realistic_repo(&scratch);
    scratch.write("campaign.yaml", CAMPAIGN);

    let outcome = scratch.dry_run("campaign.yaml", &[]);

    assert_eq!(outcome.code, 0, "{}", outcome.stderr);
    insta::assert_snapshot!(scratch.redact(&outcome.stdout));
    assert!(outcome.stderr.contains("offline mode"), "{}", outcome.stderr);
}

#[test]
fn plan_json_has_the_documented_shape() {
    let scratch = Scratch::new();
    realistic_repo(&scratch);
    scratch.write("campaign.yaml", CAMPAIGN);

    let outcome = scratch.dry_run("campaign.yaml", &["--json"]);

    assert_eq!(outcome.code, 0, "{}", outcome.stderr);
    let plan: Value = serde_json::from_str(&outcome.stdout).expect("one JSON object");
    insta::assert_json_snapshot!(plan);
    let keys = [
        "key",
        "model",
        "engine",
        "quant",
        "source",
        "files",
        "size_bytes",
        "size_source",
        "status",
        "reason",
    ];
    for run in plan["runs"].as_array().unwrap() {
        let object = run.as_object().unwrap();
        assert_eq!(object.len(), keys.len(), "{run}");
        for key in keys {
            assert!(object.contains_key(key), "{key} missing in {run}");
        }
    }
}

#[test]
fn shards_are_summed_and_the_first_shard_comes_first() {
    let scratch = Scratch::new();
    realistic_repo(&scratch);
    scratch.write("campaign.yaml", CAMPAIGN);

    let plan: Value =
        serde_json::from_str(&scratch.dry_run("campaign.yaml", &["--json"]).stdout).unwrap();
    let q8 = find(&plan, "Llama-3.1-8B|llama_cpp|Q8_0");

    assert_eq!(q8["size_bytes"], 8 * GIB);
    assert_eq!(q8["size_source"], "files");
    assert_eq!(q8["files"][0], "Q8_0/Llama-3.1-8B-Instruct-Q8_0-00001-of-00002.gguf");
    assert_eq!(q8["status"], "skipped");
    assert!(q8["reason"].as_str().unwrap().contains("max_model_size_gb"), "{q8}");
}

#[test]
fn missing_shard_and_ollama_shards_are_explained() {
    let scratch = Scratch::new();
    realistic_repo(&scratch);
    scratch.write("campaign.yaml", CAMPAIGN);

    let plan: Value =
        serde_json::from_str(&scratch.dry_run("campaign.yaml", &["--json"]).stdout).unwrap();

    let f16 = find(&plan, "Llama-3.1-8B|llama_cpp|F16");
    assert_eq!(f16["reason"], "incomplete shard set: 1 of 2 shards, missing shard 2");
    let reasons: Vec<&str> =
        plan["runs"].as_array().unwrap().iter().filter_map(|r| r["reason"].as_str()).collect();
    assert!(
        reasons.iter().any(|r| r.contains("Ollama cannot import a sharded GGUF")),
        "{reasons:?}"
    );
    let labels: Vec<&str> =
        plan["runs"].as_array().unwrap().iter().map(|r| r["quant"].as_str().unwrap()).collect();
    assert!(
        !labels.iter().any(|l| l.to_lowercase().contains("mmproj") || l.contains("IMATRIX")),
        "{labels:?}"
    );
}

#[test]
fn skip_pattern_matches_without_case_and_through_vendor_prefix() {
    let scratch = Scratch::new();
    scratch.model_file("org/M-GGUF", "M-UD-IQ1_S.gguf", GIB);
    scratch.model_file("org/M-GGUF", "M-iq2_xs.gguf", GIB);
    scratch.model_file("org/M-GGUF", "M-Q4_K_M.gguf", GIB);
    scratch.write(
        "campaign.yaml",
        "campaign_name: c\nmodels:\n  - name: M\n    gguf_repo: org/M-GGUF\nengines:\n  - name: llama_cpp\n\
         quant_filter:\n  skip_patterns: [\"IQ1_*\", \"IQ2_*\"]\ndisk:\n  reserve_gb: 0\n",
    );

    let plan: Value =
        serde_json::from_str(&scratch.dry_run("campaign.yaml", &["--json"]).stdout).unwrap();

    assert_eq!(find(&plan, "M|llama_cpp|UD-IQ1_S")["reason"], "quant_filter: skip pattern `IQ1_*`");
    assert_eq!(find(&plan, "M|llama_cpp|IQ2_XS")["status"], "skipped");
    assert_eq!(find(&plan, "M|llama_cpp|Q4_K_M")["status"], "planned");
}

#[test]
fn disk_reserve_above_free_space_skips_with_the_numbers() {
    let scratch = Scratch::new();
    scratch.write(
        "campaign.yaml",
        "campaign_name: c\nmodels:\n  - name: M\n    params: 8B\n    ollama_tag: \"llama3.1:8b\"\n\
         engines:\n  - name: ollama\ndisk:\n  reserve_gb: 999999\n",
    );
    // Offline (as every test is), only a tag Ollama already has can run; it
    // downloads nothing, and the reserve still holds.
    scratch.write("ollama/manifests/registry.ollama.ai/library/llama3.1/8b", "{}");

    let plan: Value =
        serde_json::from_str(&scratch.dry_run("campaign.yaml", &["--json"]).stdout).unwrap();
    let run = find(&plan, "M|ollama|8b");

    assert_eq!(run["status"], "skipped");
    let reason = run["reason"].as_str().unwrap();
    let store = scratch.path().join("ollama");
    assert!(reason.starts_with(&format!("not enough disk under {}", store.display())), "{reason}");
    assert!(reason.contains("(download 0.0 GiB + reserve 999999.0 GiB)"), "{reason}");
}

#[test]
fn models_in_the_hugging_face_cache_are_found() {
    let scratch = Scratch::new();
    let snapshot = scratch.path().join("hf/hub/models--org--Cached-GGUF/snapshots/abc123");
    std::fs::create_dir_all(&snapshot).unwrap();
    std::fs::File::create(snapshot.join("Cached-Q5_K_M.gguf")).unwrap().set_len(GIB).unwrap();
    scratch.write("hf/hub/models--org--Cached-GGUF/refs/main", "abc123");
    scratch.write(
        "campaign.yaml",
        "campaign_name: c\nmodels:\n  - name: C\n    gguf_repo: org/Cached-GGUF\nengines:\n  - name: llama_cpp\n\
         disk:\n  reserve_gb: 0\n",
    );

    let plan: Value =
        serde_json::from_str(&scratch.dry_run("campaign.yaml", &["--json"]).stdout).unwrap();
    let run = find(&plan, "C|llama_cpp|Q5_K_M");

    assert_eq!(run["source"], "hf-cache:org/Cached-GGUF");
    assert_eq!(run["status"], "planned");
    assert_eq!(run["size_bytes"], GIB);
}

#[test]
fn dry_run_writes_nothing_to_the_kitt_home() {
    let scratch = Scratch::new();
    realistic_repo(&scratch);
    scratch.write("campaign.yaml", CAMPAIGN);
    let before = tree(scratch.path());

    let outcome = scratch.dry_run("campaign.yaml", &[]);

    assert_eq!(outcome.code, 0);
    assert!(!scratch.home().exists(), "the dry run created the kitt home");
    assert_eq!(tree(scratch.path()), before, "the dry run changed files");
}

#[test]
fn every_shipped_campaign_plans_offline() {
    let configs =
        std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/configs/campaigns")).unwrap();
    let mut count = 0;
    for entry in configs {
        let path = entry.unwrap().path();
        let scratch = Scratch::new();
        let outcome = scratch.dry_run(path.to_str().unwrap(), &["--json"]);
        assert_eq!(outcome.code, 0, "{}: {}", path.display(), outcome.stderr);
        let plan: Value = serde_json::from_str(&outcome.stdout).unwrap();
        assert!(!plan["runs"].as_array().unwrap().is_empty(), "{}", path.display());
        count += 1;
    }
    assert!(count >= 4, "expected the four shipped campaigns, found {count}");
}

fn find<'a>(plan: &'a Value, key: &str) -> &'a Value {
    plan["runs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|run| run["key"] == key)
        .unwrap_or_else(|| panic!("no run {key} in {plan:#}"))
}

fn tree(dir: &std::path::Path) -> Vec<(String, u64)> {
    let mut entries = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(current) = pending.pop() {
        for entry in std::fs::read_dir(&current).unwrap().flatten() {
            let meta = entry.metadata().unwrap();
            if meta.is_dir() {
                pending.push(entry.path());
            }
            entries.push((entry.path().display().to_string(), meta.len()));
        }
    }
    entries.sort();
    entries
}

#[test]
fn a_relative_storage_root_is_still_checked_for_free_space() {
    let scratch = Scratch::new();
    scratch.write(
        "campaign.yaml",
        "campaign_name: c\nmodels:\n  - name: M\n    params: 8B\n    ollama_tag: \"llama3.1:8b-instruct-q4_K_M\"\n\
         engines:\n  - name: ollama\ndisk:\n  reserve_gb: 999999\n",
    );
    scratch.write(
        "relative/ollama/manifests/registry.ollama.ai/library/llama3.1/8b-instruct-q4_K_M",
        "{}",
    );
    let mut command = scratch.kitt();
    command.env("KITT_MODELS_DIR", "not/there/models").env("OLLAMA_MODELS", "relative/ollama");
    command.args(["campaign", "run", "campaign.yaml", "--dry-run", "--json"]);

    let outcome = scratch.run(&mut command);

    let plan: Value = serde_json::from_str(&outcome.stdout).unwrap();
    let reason = plan["runs"][0]["reason"].as_str().unwrap_or_default().to_owned();
    assert!(reason.starts_with("not enough disk under"), "{reason}");
}

#[test]
fn a_storage_root_that_is_a_file_is_reported() {
    let scratch = Scratch::new();
    let file = scratch.write("models-file", "not a directory");
    scratch.write("campaign.yaml", "campaign_name: c\nmodels:\n  - name: M\n    gguf_repo: o/m\nengines:\n  - name: llama_cpp\n");
    let mut command = scratch.kitt();
    command.env("KITT_MODELS_DIR", &file).args(["campaign", "run", "campaign.yaml", "--dry-run"]);

    let outcome = scratch.run(&mut command);

    assert_eq!(outcome.code, 0);
    assert!(outcome.stderr.contains("is not a directory"), "{}", outcome.stderr);
}
