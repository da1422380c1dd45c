//! `kitt campaign run --dry-run` against loopback servers that answer like the
//! Hugging Face Hub and the Ollama library and registry.

mod common;
mod support;

use std::process::Command;

use common::{Outcome, Scratch};
use serde_json::Value;
use support::{FakeHub, FakeOllama, GateMode};

const GB: u64 = 1_000_000_000;

/// A repository listed like a real bartowski GGUF repository.
fn bartowski_like(hub: &FakeHub, repo: &str) {
    hub.add_repo(
        repo,
        &[
            (".gitattributes", 2_000),
            ("README.md", 12_000),
            ("Meta-Llama-3.1-8B-Instruct-IQ2_M.gguf", 2_948_000_000),
            ("Meta-Llama-3.1-8B-Instruct-Q4_K_M.gguf", 4_920_734_272),
            ("Meta-Llama-3.1-8B-Instruct-Q8_0.gguf", 8_540_770_880),
            ("Meta-Llama-3.1-8B-Instruct-f32.gguf", 32_130_000_000),
            ("Meta-Llama-3.1-8B-Instruct.imatrix", 4_990_000),
        ],
    );
}

fn campaign(models: &str, extra: &str) -> String {
    format!(
        "campaign_name: hub-test\nmodels:\n{models}engines:\n  - name: llama_cpp\n    suite: quick\n\
         disk:\n  reserve_gb: 0\n{extra}"
    )
}

fn online(
    scratch: &Scratch,
    hub: &FakeHub,
    ollama: Option<&FakeOllama>,
    token: Option<&str>,
) -> Command {
    let mut command = scratch.kitt();
    command.env_remove("HF_HUB_OFFLINE").env_remove("KITT_OFFLINE").envs(hub.env());
    if let Some(ollama) = ollama {
        command.envs(ollama.env());
    }
    if let Some(token) = token {
        command.env("HF_TOKEN", token);
    }
    command
}

fn dry_run_json(scratch: &Scratch, mut command: Command) -> (Value, Outcome) {
    command.args(["campaign", "run", "campaign.yaml", "--dry-run", "--json"]);
    let outcome = scratch.run(&mut command);
    assert_eq!(outcome.code, 0, "{}", outcome.stderr);
    let plan = serde_json::from_str(&outcome.stdout).expect("one JSON object");
    (plan, outcome)
}

fn find<'a>(plan: &'a Value, key: &str) -> &'a Value {
    let runs = plan["runs"].as_array().unwrap();
    runs.iter().find(|run| run["key"] == key).unwrap_or_else(|| panic!("no {key} in {plan:#}"))
}

const LLAMA: &str =
    "  - name: Llama\n    params: 8B\n    gguf_repo: bartowski/Meta-Llama-3.1-8B-Instruct-GGUF\n";

#[test]
fn hub_listing_gives_every_variant_with_real_sizes() {
    let hub = FakeHub::start();
    bartowski_like(&hub, "bartowski/Meta-Llama-3.1-8B-Instruct-GGUF");
    let scratch = Scratch::new();
    scratch.write("campaign.yaml", &campaign(LLAMA, "resource_limits:\n  max_model_size_gb: 20\n"));

    let (plan, _) = dry_run_json(&scratch, online(&scratch, &hub, None, None));

    insta::assert_json_snapshot!(plan);
    let q4 = find(&plan, "Llama|llama_cpp|Q4_K_M");
    assert_eq!(q4["source"], "hf:bartowski/Meta-Llama-3.1-8B-Instruct-GGUF");
    assert_eq!(q4["size_bytes"], 4_920_734_272u64);
    assert_eq!(q4["size_source"], "files");
    assert_eq!(find(&plan, "Llama|llama_cpp|F32")["status"], "skipped");
}

#[test]
fn a_variant_already_local_is_marked_local_and_the_rest_come_from_the_hub() {
    let hub = FakeHub::start();
    bartowski_like(&hub, "bartowski/Meta-Llama-3.1-8B-Instruct-GGUF");
    let scratch = Scratch::new();
    scratch.model_file(
        "bartowski/Meta-Llama-3.1-8B-Instruct-GGUF",
        "Meta-Llama-3.1-8B-Instruct-Q4_K_M.gguf",
        4_920_734_272,
    );
    scratch.write("campaign.yaml", &campaign(LLAMA, ""));

    let (plan, outcome) = dry_run_json(&scratch, online(&scratch, &hub, None, None));

    assert_eq!(
        find(&plan, "Llama|llama_cpp|Q4_K_M")["source"],
        "local:bartowski/Meta-Llama-3.1-8B-Instruct-GGUF"
    );
    assert_eq!(
        find(&plan, "Llama|llama_cpp|Q8_0")["source"],
        "hf:bartowski/Meta-Llama-3.1-8B-Instruct-GGUF"
    );
    assert!(outcome.stderr.is_empty(), "no warnings expected: {}", outcome.stderr);
}

#[test]
fn gated_repo_without_token_is_skipped_naming_hf_token() {
    let hub = FakeHub::start();
    bartowski_like(&hub, "meta-llama/Gated-GGUF");
    hub.gated("meta-llama/Gated-GGUF", GateMode::Manual).accept_token("hf_good");
    let scratch = Scratch::new();
    scratch.write(
        "campaign.yaml",
        &campaign("  - name: G\n    gguf_repo: meta-llama/Gated-GGUF\n", ""),
    );

    let (plan, _) = dry_run_json(&scratch, online(&scratch, &hub, None, None));

    let run = find(&plan, "G|llama_cpp|Q4_K_M");
    assert_eq!(run["status"], "skipped");
    let reason = run["reason"].as_str().unwrap();
    assert!(reason.starts_with("gated:") && reason.contains("HF_TOKEN"), "{reason}");
}

#[test]
fn gated_repo_with_an_accepted_token_is_planned() {
    let hub = FakeHub::start();
    bartowski_like(&hub, "meta-llama/Gated-GGUF");
    hub.gated("meta-llama/Gated-GGUF", GateMode::Auto).accept_token("hf_good");
    let scratch = Scratch::new();
    scratch.write(
        "campaign.yaml",
        &campaign("  - name: G\n    gguf_repo: meta-llama/Gated-GGUF\n", ""),
    );

    let (plan, outcome) = dry_run_json(&scratch, online(&scratch, &hub, None, Some("hf_good")));

    assert_eq!(find(&plan, "G|llama_cpp|Q4_K_M")["status"], "planned");
    assert!(!outcome.stderr.contains("hf_good") && !outcome.stdout.contains("hf_good"));
}

#[test]
fn gated_repo_with_a_refused_token_and_skip_gated_off_is_planned_with_a_note() {
    let hub = FakeHub::start();
    bartowski_like(&hub, "meta-llama/Gated-GGUF");
    hub.gated("meta-llama/Gated-GGUF", GateMode::Manual).accept_token("hf_good");
    let scratch = Scratch::new();
    let models = "  - name: G\n    gguf_repo: meta-llama/Gated-GGUF\n";
    scratch.write("campaign.yaml", &campaign(models, "skip_gated: false\n"));

    let (plan, _) = dry_run_json(&scratch, online(&scratch, &hub, None, Some("hf_wrong")));

    let run = find(&plan, "G|llama_cpp|Q4_K_M");
    assert_eq!(run["status"], "planned");
    assert!(run["reason"].as_str().unwrap().contains("gated"), "{run}");
}

#[test]
fn missing_and_refused_repositories_are_skipped_with_the_hub_reason() {
    let hub = FakeHub::start();
    hub.missing("org/Gone-GGUF").unauthorized("org/Private-GGUF");
    let scratch = Scratch::new();
    let models = "  - name: Gone\n    gguf_repo: org/Gone-GGUF\n  - name: Private\n    gguf_repo: org/Private-GGUF\n";
    scratch.write("campaign.yaml", &campaign(models, ""));

    let (plan, _) = dry_run_json(&scratch, online(&scratch, &hub, None, None));

    let gone = find(&plan, "Gone|llama_cpp|-")["reason"].as_str().unwrap().to_owned();
    assert!(gone.contains("not found"), "{gone}");
    let private = find(&plan, "Private|llama_cpp|-")["reason"].as_str().unwrap().to_owned();
    assert!(private.contains("HTTP 401") && private.contains("HF_TOKEN"), "{private}");
}

#[test]
fn rate_limited_listing_is_retried_after_the_servers_delay() {
    let hub = FakeHub::start();
    bartowski_like(&hub, "bartowski/Meta-Llama-3.1-8B-Instruct-GGUF");
    hub.rate_limit("bartowski/Meta-Llama-3.1-8B-Instruct-GGUF", 2);
    let scratch = Scratch::new();
    scratch.write("campaign.yaml", &campaign(LLAMA, ""));

    let (plan, outcome) = dry_run_json(&scratch, online(&scratch, &hub, None, None));

    assert_eq!(find(&plan, "Llama|llama_cpp|Q4_K_M")["status"], "planned");
    assert!(outcome.stderr.is_empty(), "{}", outcome.stderr);
    assert!(hub.repo_requests("bartowski/Meta-Llama-3.1-8B-Instruct-GGUF") >= 4);
}

#[test]
fn hub_that_keeps_rate_limiting_degrades_to_local_with_one_warning() {
    let hub = FakeHub::start();
    bartowski_like(&hub, "bartowski/Meta-Llama-3.1-8B-Instruct-GGUF");
    hub.rate_limit("bartowski/Meta-Llama-3.1-8B-Instruct-GGUF", 1000);
    let scratch = Scratch::new();
    scratch.model_file(
        "bartowski/Meta-Llama-3.1-8B-Instruct-GGUF",
        "Meta-Llama-3.1-8B-Instruct-Q8_0.gguf",
        8 * GB,
    );
    scratch.write("campaign.yaml", &campaign(LLAMA, ""));

    let (plan, outcome) = dry_run_json(&scratch, online(&scratch, &hub, None, None));

    let runs = plan["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 1, "only the local variant is known: {plan:#}");
    assert_eq!(runs[0]["source"], "local:bartowski/Meta-Llama-3.1-8B-Instruct-GGUF");
    assert_eq!(outcome.stderr.matches("warning:").count(), 1, "{}", outcome.stderr);
    assert!(outcome.stderr.contains("rate-limiting"), "{}", outcome.stderr);
}

#[test]
fn one_listing_per_repository_for_the_whole_command() {
    let hub = FakeHub::start();
    bartowski_like(&hub, "bartowski/Meta-Llama-3.1-8B-Instruct-GGUF");
    let scratch = Scratch::new();
    let yaml = format!(
        "campaign_name: c\nmodels:\n{LLAMA}engines:\n  - name: llama_cpp\n  - name: ollama\n    formats: [gguf]\n\
         disk:\n  reserve_gb: 0\n"
    );
    scratch.write("campaign.yaml", &yaml);

    let (plan, _) = dry_run_json(&scratch, online(&scratch, &hub, None, None));

    assert_eq!(find(&plan, "Llama|ollama|Q4_K_M")["status"], "planned");
    // One model-info request and one tree request, although two engines use the repo.
    let requests = hub.repo_requests("bartowski/Meta-Llama-3.1-8B-Instruct-GGUF");
    assert_eq!(requests, 2, "the listing must be fetched once");
}

#[test]
fn ollama_size_tag_expands_to_quant_tags_with_manifest_sizes() {
    let hub = FakeHub::start();
    let ollama = FakeOllama::start();
    let q4 = FakeOllama::digest("llama3.1-8b-q4");
    let q8 = FakeOllama::digest("llama3.1-8b-q8");
    let text = FakeOllama::digest("llama3.1-8b-text");
    ollama.add_model(
        "llama3.1",
        &[
            ("latest", &q4, 4_920_000_000),
            ("8b", &q4, 4_920_000_000),
            ("8b-instruct-q4_K_M", &q4, 4_920_000_000),
            ("8b-instruct-q8_0", &q8, 8_540_000_000),
            ("8b-text-q4_0", &text, 4_660_000_000),
            ("70b", &FakeOllama::digest("70b"), 42_000_000_000),
        ],
    );
    let scratch = Scratch::new();
    let yaml = "campaign_name: c\nmodels:\n  - name: L\n    params: 8B\n    ollama_tag: \"llama3.1:8b\"\n\
                engines:\n  - name: ollama\nquant_filter:\n  skip_patterns: [\"q8*\"]\ndisk:\n  reserve_gb: 0\n";
    scratch.write("campaign.yaml", yaml);

    let (plan, _) = dry_run_json(&scratch, online(&scratch, &hub, Some(&ollama), None));

    let keys: Vec<&str> =
        plan["runs"].as_array().unwrap().iter().map(|r| r["key"].as_str().unwrap()).collect();
    assert_eq!(keys, ["L|ollama|Q4_K_M", "L|ollama|Q8_0"]);
    let q4_run = find(&plan, "L|ollama|Q4_K_M");
    assert_eq!(q4_run["source"], "ollama:llama3.1:8b-instruct-q4_K_M");
    assert_eq!(q4_run["size_source"], "files");
    assert!(q4_run["size_bytes"].as_u64().unwrap() >= 4_920_000_000);
    assert_eq!(find(&plan, "L|ollama|Q8_0")["reason"], "quant_filter: skip pattern `q8*`");
}

#[test]
fn shipped_example_plans_against_a_hub_and_an_ollama_library() {
    let hub = FakeHub::start();
    bartowski_like(&hub, "bartowski/Meta-Llama-3.1-8B-Instruct-GGUF");
    hub.add_repo(
        "Qwen/Qwen2.5-7B-Instruct-GGUF",
        &[
            ("qwen2.5-7b-instruct-q4_k_m-00001-of-00002.gguf", 3_990_000_000),
            ("qwen2.5-7b-instruct-q4_k_m-00002-of-00002.gguf", 689_000_000),
            ("qwen2.5-7b-instruct-iq2_xs.gguf", 2_470_000_000),
        ],
    );
    hub.add_repo(
        "meta-llama/Llama-3.1-8B-Instruct",
        &[("model-00001-of-00004.safetensors", 4_976_698_672)],
    );
    let ollama = FakeOllama::start();
    let llama = FakeOllama::digest("llama");
    ollama.add_model(
        "llama3.1",
        &[("8b", &llama, 4_920_000_000), ("8b-instruct-q4_K_M", &llama, 4_920_000_000)],
    );
    ollama
        .add_model("qwen2.5", &[("7b-instruct-q8_0", &FakeOllama::digest("qwen"), 8_100_000_000)]);
    let scratch = Scratch::new();
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/configs/campaigns/example.yaml");
    std::fs::copy(example, scratch.path().join("campaign.yaml")).unwrap();

    let (plan, _) = dry_run_json(&scratch, online(&scratch, &hub, Some(&ollama), None));

    let keys: Vec<&str> =
        plan["runs"].as_array().unwrap().iter().map(|r| r["key"].as_str().unwrap()).collect();
    assert_eq!(
        keys,
        [
            "Llama-3.1-8B-Instruct|llama_cpp|IQ2_M",
            "Llama-3.1-8B-Instruct|llama_cpp|Q4_K_M",
            "Llama-3.1-8B-Instruct|llama_cpp|Q8_0",
            "Llama-3.1-8B-Instruct|llama_cpp|F32",
            "Llama-3.1-8B-Instruct|ollama|Q4_K_M",
            "Qwen2.5-7B-Instruct|llama_cpp|IQ2_XS",
            "Qwen2.5-7B-Instruct|llama_cpp|Q4_K_M",
            "Qwen2.5-7B-Instruct|ollama|Q8_0",
        ]
    );
    assert_eq!(
        find(&plan, "Llama-3.1-8B-Instruct|llama_cpp|IQ2_M")["reason"],
        "quant_filter: skip pattern `IQ2_*`"
    );
    let qwen = find(&plan, "Qwen2.5-7B-Instruct|llama_cpp|Q4_K_M");
    assert_eq!(qwen["size_bytes"], 4_679_000_000u64);
    assert_eq!(qwen["files"].as_array().unwrap().len(), 2);
}

#[test]
fn ollama_tags_the_library_or_registry_do_not_know_are_skipped() {
    let hub = FakeHub::start();
    let ollama = FakeOllama::start();
    ollama
        .add_model("llama3.1", &[("8b-instruct-q4_K_M", &FakeOllama::digest("a"), 4_920_000_000)]);
    let scratch = Scratch::new();
    let yaml = "campaign_name: c\nmodels:\n  - name: A\n    ollama_tag: \"llama3.1:8b-instruct-q5_K_M\"\n\
                \x20 - name: B\n    ollama_tag: \"nope:3b\"\nengines:\n  - name: ollama\ndisk:\n  reserve_gb: 0\n";
    scratch.write("campaign.yaml", yaml);

    let (plan, _) = dry_run_json(&scratch, online(&scratch, &hub, Some(&ollama), None));

    let a = find(&plan, "A|ollama|Q5_K_M");
    assert_eq!(a["status"], "skipped");
    assert!(a["reason"].as_str().unwrap().contains("not in the Ollama registry"), "{a}");
    let b = find(&plan, "B|ollama|3b");
    assert_eq!(b["reason"], "`nope` is not in the Ollama library");
}

#[test]
fn absurd_sizes_saturate_instead_of_wrapping() {
    let hub = FakeHub::start();
    hub.add_repo(
        "org/Huge-GGUF",
        &[("x-Q8_0-00001-of-00002.gguf", u64::MAX), ("x-Q8_0-00002-of-00002.gguf", u64::MAX)],
    );
    let scratch = Scratch::new();
    scratch.write("campaign.yaml", &campaign("  - name: H\n    gguf_repo: org/Huge-GGUF\n", ""));

    let (plan, _) = dry_run_json(&scratch, online(&scratch, &hub, None, None));

    let run = find(&plan, "H|llama_cpp|Q8_0");
    assert_eq!(run["size_bytes"], u64::MAX);
    assert!(run["reason"].as_str().unwrap().starts_with("not enough disk"), "{run}");
}

#[test]
fn listed_files_with_unsafe_names_are_ignored() {
    let hub = FakeHub::start();
    hub.add_repo(
        "org/Odd-GGUF",
        &[
            ("../../etc/x-Q4_0.gguf", 1),
            ("/abs/y-Q8_0.gguf", 1),
            ("esc\u{1b}[31m-Q2_K.gguf", 1),
            ("ok-Q5_0.gguf", 1),
        ],
    );
    let scratch = Scratch::new();
    scratch.write("campaign.yaml", &campaign("  - name: O\n    gguf_repo: org/Odd-GGUF\n", ""));

    let (plan, _) = dry_run_json(&scratch, online(&scratch, &hub, None, None));

    let keys: Vec<&str> =
        plan["runs"].as_array().unwrap().iter().map(|r| r["key"].as_str().unwrap()).collect();
    assert_eq!(keys, ["O|llama_cpp|Q5_0"]);
}

#[test]
fn one_variant_on_two_engines_is_downloaded_once_when_kept() {
    let hub = FakeHub::start();
    bartowski_like(&hub, "bartowski/Meta-Llama-3.1-8B-Instruct-GGUF");
    let scratch = Scratch::new();
    let yaml = format!(
        "campaign_name: c\nmodels:\n{LLAMA}engines:\n  - name: llama_cpp\n  - name: ollama\n    formats: [gguf]\n\
         quant_filter:\n  include_only: [Q4_K_M]\ndisk:\n  reserve_gb: 0\n  cleanup_after_run: false\n"
    );
    scratch.write("campaign.yaml", &yaml);
    let mut command = online(&scratch, &hub, None, None);
    command.args(["campaign", "run", "campaign.yaml", "--dry-run"]);

    let outcome = scratch.run(&mut command);

    assert!(outcome.stdout.contains("Download: 4.6 GiB at most"), "{}", outcome.stdout);
}

#[test]
fn bytes_a_partial_file_holds_need_no_more_room() {
    let hub = FakeHub::start();
    let scratch = Scratch::new();
    std::fs::create_dir_all(scratch.models()).unwrap();
    let free = kitt::acquire::local::free_space(&scratch.models()).unwrap();
    // More than the disk holds.
    hub.add_repo("org/Big-GGUF", &[("Big-Q8_0.gguf", free + 10 * GB)]);
    let models = "  - name: Big\n    params: 8B\n    gguf_repo: org/Big-GGUF\n";
    scratch.write("campaign.yaml", &campaign(models, ""));
    let (plan, _) = dry_run_json(&scratch, online(&scratch, &hub, None, None));
    let run = find(&plan, "Big|llama_cpp|Q8_0");
    assert_eq!(run["status"], "skipped", "{run}");
    assert!(run["reason"].as_str().unwrap().contains("not enough disk"), "{run}");

    // An interrupted download left 20 GB in its partial file (sparse here):
    // what is still missing fits.
    let part = scratch.models().join("huggingface/org/Big-GGUF/Big-Q8_0.gguf.kitt-part");
    std::fs::create_dir_all(part.parent().unwrap()).unwrap();
    std::fs::File::create(&part).unwrap().set_len(20 * GB).unwrap();
    let (plan, _) = dry_run_json(&scratch, online(&scratch, &hub, None, None));
    let run = find(&plan, "Big|llama_cpp|Q8_0");
    assert_eq!(run["status"], "planned", "{run}");
}
