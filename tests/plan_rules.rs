//! Planning rules through the library: a parsed campaign, listings made by
//! hand, and a chosen amount of free space.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use kitt::acquire::hub::Gate;
use kitt::config;
use kitt::plan::discover::{Discovery, RepoInfo, RepoLookup, TagVariant};
use kitt::plan::matrix::{PlanEnv, plan};
use kitt::plan::variants::SizedFile;
use kitt::plan::{Plan, PlannedRun, RunPlan, SizeSource};

const GIB: u64 = 1 << 30;

fn repo(name: &str, files: &[(&str, u64)]) -> (String, RepoLookup) {
    let files =
        files.iter().map(|(path, size)| SizedFile { path: (*path).into(), size: *size }).collect();
    let info = RepoInfo { repo: name.into(), files, local: None, from_hub: true, gate: Gate::Open };
    (name.to_owned(), RepoLookup::Found(info))
}

fn plan_of(yaml: &str, repos: Vec<(String, RepoLookup)>, free: u64) -> Plan {
    let campaign = config::parse(yaml, "test.yaml".as_ref()).expect("valid campaign");
    let discovery =
        Discovery { repos: repos.into_iter().collect::<HashMap<_, _>>(), ..Discovery::default() };
    let env = PlanEnv {
        storage_root: PathBuf::from("/models"),
        ollama_dir: PathBuf::from("/ollama"),
        free_space: Box::new(move |_| Some(free)),
        has_ollama_tag: Box::new(|_, _| false),
    };
    plan(&campaign, &discovery, &env)
}

fn run<'a>(plan: &'a Plan, key: &str) -> &'a PlannedRun {
    plan.runs.iter().find(|run| run.key == key).unwrap_or_else(|| panic!("no {key}: {plan:#?}"))
}

fn three_quants() -> Vec<(String, RepoLookup)> {
    vec![repo(
        "org/M-GGUF",
        &[("M-Q4_K_M.gguf", 4 * GIB), ("M-Q5_K_M.gguf", 4 * GIB), ("M-Q8_0.gguf", 4 * GIB)],
    )]
}

fn yaml(disk: &str, extra: &str) -> String {
    format!(
        "campaign_name: t\nmodels:\n  - name: M\n    params: 8B\n    gguf_repo: org/M-GGUF\n\
         engines:\n  - name: llama_cpp\ndisk:\n{disk}{extra}"
    )
}

#[test]
fn kept_downloads_accumulate_against_free_space_without_cleanup() {
    let plan = plan_of(
        &yaml("  reserve_gb: 1\n  cleanup_after_run: false\n", ""),
        three_quants(),
        10 * GIB,
    );

    assert_eq!(run(&plan, "M|llama_cpp|Q4_K_M").status, RunPlan::Planned);
    assert_eq!(run(&plan, "M|llama_cpp|Q5_K_M").status, RunPlan::Planned);
    let third = run(&plan, "M|llama_cpp|Q8_0");
    assert_eq!(third.status, RunPlan::Skipped);
    assert!(third.reason.as_ref().unwrap().contains("8.0 GiB kept from earlier runs"), "{third:?}");
}

#[test]
fn with_cleanup_each_run_only_needs_its_own_download() {
    let plan = plan_of(
        &yaml("  reserve_gb: 1\n  cleanup_after_run: true\n", ""),
        three_quants(),
        10 * GIB,
    );

    assert!(plan.runs.iter().all(|run| run.status == RunPlan::Planned), "{plan:#?}");
}

#[test]
fn variants_run_from_fewest_bits_to_most_and_the_plan_is_deterministic() {
    let listing = vec![repo(
        "org/M-GGUF",
        &[
            ("M-Q8_0.gguf", 1),
            ("M-F16.gguf", 1),
            ("M-IQ2_M.gguf", 1),
            ("M-Q4_K_M.gguf", 1),
            ("M-Q9_Z.gguf", 1),
        ],
    )];
    let first = plan_of(&yaml("  reserve_gb: 0\n", ""), listing.clone(), u64::MAX);
    let second = plan_of(&yaml("  reserve_gb: 0\n", ""), listing, u64::MAX);

    let quants: Vec<&str> = first.runs.iter().map(|run| run.quant.as_str()).collect();
    assert_eq!(quants, ["IQ2_M", "Q4_K_M", "Q8_0", "F16", "Q9_Z"]);
    let keys = |plan: &Plan| plan.runs.iter().map(|run| run.key.clone()).collect::<Vec<_>>();
    assert_eq!(keys(&first), keys(&second));
}

#[test]
fn skip_patterns_apply_before_include_only() {
    let filter =
        "quant_filter:\n  skip_patterns: [\"Q4_*\"]\n  include_only: [\"q4_k_m\", \"Q8_0\"]\n";
    let plan = plan_of(&yaml("  reserve_gb: 0\n", filter), three_quants(), u64::MAX);

    assert_eq!(
        run(&plan, "M|llama_cpp|Q4_K_M").reason.as_deref(),
        Some("quant_filter: skip pattern `Q4_*`")
    );
    assert!(
        run(&plan, "M|llama_cpp|Q5_K_M").reason.as_ref().unwrap().contains("not in include_only")
    );
    assert_eq!(run(&plan, "M|llama_cpp|Q8_0").status, RunPlan::Planned);
}

#[test]
fn an_engines_own_quant_filter_narrows_only_that_engine() {
    let yaml = "campaign_name: t\nmodels:\n  - name: M\n    gguf_repo: org/M-GGUF\n\
                engines:\n  - name: llama_cpp\n    quant_filter: \"Q5_K_M\"\n  - name: ollama\n\
                disk:\n  reserve_gb: 0\n";
    let plan = plan_of(yaml, three_quants(), u64::MAX);

    let planned: Vec<&str> = plan.planned().map(|run| run.key.as_str()).collect();
    assert_eq!(
        planned,
        ["M|llama_cpp|Q5_K_M", "M|ollama|Q4_K_M", "M|ollama|Q5_K_M", "M|ollama|Q8_0"]
    );
}

#[test]
fn vllm_serves_single_file_gguf_only_with_a_tokenizer_repo() {
    let yaml = "campaign_name: t\nmodels:\n  - name: With\n    safetensors_repo: org/With\n    gguf_repo: org/W-GGUF\n\
                \x20 - name: Without\n    gguf_repo: org/W-GGUF\n\
                engines:\n  - name: vllm\n    formats: [gguf, safetensors]\ndisk:\n  reserve_gb: 0\n";
    let repos = vec![
        repo(
            "org/With",
            &[
                ("model-00001-of-00002.safetensors", 5 * GIB),
                ("model-00002-of-00002.safetensors", 3 * GIB),
            ],
        ),
        repo(
            "org/W-GGUF",
            &[
                ("W-Q4_K_M.gguf", GIB),
                ("W-Q8_0-00001-of-00002.gguf", GIB),
                ("W-Q8_0-00002-of-00002.gguf", GIB),
            ],
        ),
    ];
    let plan = plan_of(yaml, repos, u64::MAX);

    let bf16 = run(&plan, "With|vllm|BF16");
    assert_eq!((bf16.status, bf16.size_bytes), (RunPlan::Planned, Some(8 * GIB)));
    assert_eq!(run(&plan, "With|vllm|Q4_K_M").status, RunPlan::Planned);
    let sharded = run(&plan, "With|vllm|Q8_0");
    assert_eq!(sharded.reason.as_deref(), Some("vLLM loads only single-file GGUF models"));
    let no_tokenizer = run(&plan, "Without|vllm|Q4_K_M");
    assert!(no_tokenizer.reason.as_ref().unwrap().contains("safetensors_repo"), "{no_tokenizer:?}");
}

#[test]
fn model_without_a_source_for_an_engine_gets_one_row_saying_why() {
    let yaml = "campaign_name: t\nmodels:\n  - name: M\n    gguf_repo: org/M-GGUF\n\
                engines:\n  - name: vllm\ndisk:\n  reserve_gb: 0\n";
    let plan = plan_of(yaml, three_quants(), u64::MAX);

    assert_eq!(plan.runs.len(), 1);
    let row = run(&plan, "M|vllm|-");
    assert_eq!(row.status, RunPlan::Skipped);
    assert_eq!(
        row.reason.as_deref(),
        Some("no compatible source: `vllm` loads safetensors here; set `safetensors_repo`")
    );
}

#[test]
fn openai_engine_plans_one_served_run_per_model() {
    let yaml = "campaign_name: t\nmodels:\n  - name: Served\n\
                engines:\n  - name: openai\n    config:\n      base_url: http://127.0.0.1:8000/v1\n      model: qwen\n";
    let plan = plan_of(yaml, Vec::new(), 0);

    let served = run(&plan, "Served|openai|served");
    assert_eq!(served.status, RunPlan::Planned);
    assert_eq!(served.source, "openai:http://127.0.0.1:8000/v1");
    assert_eq!(served.files, ["qwen"]);
}

#[test]
fn unknown_sizes_fall_back_to_estimate_then_config() {
    let yaml = "campaign_name: t\nmodels:\n  - name: P\n    params: 8B\n    ollama_tag: \"m:8b-instruct-q4_K_M\"\n\
                \x20 - name: C\n    ollama_tag: \"n:7b\"\n    estimated_size_gb: 3\n\
                engines:\n  - name: ollama\ndisk:\n  reserve_gb: 0\n";
    let campaign = config::parse(yaml, "t.yaml".as_ref()).unwrap();
    let tag = |full: &str| vec![TagVariant::new(full)];
    let tags = HashMap::from([
        ("m:8b-instruct-q4_K_M".to_owned(), tag("m:8b-instruct-q4_K_M")),
        ("n:7b".to_owned(), tag("n:7b")),
    ]);
    let discovery = Discovery { tags, ..Discovery::default() };
    let env = PlanEnv {
        storage_root: PathBuf::from("/m"),
        ollama_dir: PathBuf::from("/o"),
        free_space: Box::new(|_| Some(u64::MAX)),
        has_ollama_tag: Box::new(|_, _| false),
    };
    let plan = plan(&campaign, &discovery, &env);

    let estimated = run(&plan, "P|ollama|Q4_K_M");
    assert_eq!(estimated.size_source, Some(SizeSource::Estimate));
    let bytes = estimated.size_bytes.unwrap();
    assert!((4_500_000_000..5_200_000_000).contains(&bytes), "{bytes}");
    let configured = run(&plan, "C|ollama|7b");
    assert_eq!(
        (configured.size_source, configured.size_bytes),
        (Some(SizeSource::Config), Some(3 * GIB))
    );
}

#[test]
fn gated_repository_without_access_is_skipped_and_kept_when_skip_gated_is_off() {
    let gated = || {
        let (name, lookup) = repo("org/M-GGUF", &[("M-Q4_K_M.gguf", GIB)]);
        let RepoLookup::Found(mut info) = lookup else { unreachable!() };
        info.gate = Gate::Denied { reason: "accept the licence and set `HF_TOKEN`".into() };
        vec![(name, RepoLookup::Found(info))]
    };

    let skipped = plan_of(&yaml("  reserve_gb: 0\n", ""), gated(), u64::MAX);
    let kept = plan_of(&yaml("  reserve_gb: 0\n", "skip_gated: false\n"), gated(), u64::MAX);

    let run_skipped = run(&skipped, "M|llama_cpp|Q4_K_M");
    assert_eq!(run_skipped.reason.as_deref(), Some("gated: accept the licence and set `HF_TOKEN`"));
    assert_eq!(run(&kept, "M|llama_cpp|Q4_K_M").status, RunPlan::Planned);
}

#[test]
fn size_limit_is_checked_before_disk_space() {
    let limit = "resource_limits:\n  max_model_size_gb: 2\n";
    let plan = plan_of(&yaml("  reserve_gb: 1000\n", limit), three_quants(), GIB);

    let reason = run(&plan, "M|llama_cpp|Q8_0").reason.clone().unwrap();
    assert!(reason.starts_with("size 4.0 GiB exceeds"), "{reason}");
}

#[test]
fn ollama_tags_are_checked_against_the_store_their_server_pulls_into() {
    let yaml = "campaign_name: t\nmodels:\n  - name: Have\n    ollama_tag: \"m:1b\"\n\
                \x20 - name: Lack\n    ollama_tag: \"n:1b\"\n\
                engines:\n  - name: ollama\n    config:\n      extra_args: [OLLAMA_MODELS=/big]\n\
                disk:\n  reserve_gb: 1\n";
    let campaign = config::parse(yaml, "t.yaml".as_ref()).unwrap();
    let sized = |full: &str| vec![TagVariant { size: Some(2 * GIB), ..TagVariant::new(full) }];
    let tags =
        HashMap::from([("m:1b".to_owned(), sized("m:1b")), ("n:1b".to_owned(), sized("n:1b"))]);
    let discovery = Discovery { tags, ..Discovery::default() };
    let env = PlanEnv {
        storage_root: PathBuf::from("/models"),
        ollama_dir: PathBuf::from("/home/u/.ollama/models"),
        free_space: Box::new(|dir| Some(if dir == Path::new("/big") { 5 * GIB / 2 } else { 0 })),
        has_ollama_tag: Box::new(|dir, tag| dir == Path::new("/big") && tag == "m:1b"),
    };

    let plan = plan(&campaign, &discovery, &env);

    let have = run(&plan, "Have|ollama|1b");
    assert_eq!((have.status, have.download_bytes), (RunPlan::Planned, 0), "{have:?}");
    assert_eq!(have.size_bytes, Some(2 * GIB));
    let lack = run(&plan, "Lack|ollama|1b");
    assert_eq!(
        lack.reason.as_deref(),
        Some(
            "not enough disk under /big: needs 3.0 GiB (download 2.0 GiB + reserve 1.0 GiB), \
             2.5 GiB free"
        )
    );
    assert_eq!(plan.download_bytes, 0);
}

#[test]
fn ollama_cannot_pull_cloud_models_sharded_hub_quants_or_anything_offline() {
    let yaml = "campaign_name: t\nmodels:\n  - name: Cloud\n    ollama_tag: \"m:120b-cloud\"\n\
                \x20 - name: Split\n    ollama_tag: \"hf.co/org/M-GGUF:Q8_0\"\n\
                \x20 - name: Absent\n    ollama_tag: \"hf.co/org/M-GGUF:Q2_K\"\n\
                \x20 - name: Whole\n    ollama_tag: \"hf.co/org/M-GGUF:Q4_K_M\"\n\
                engines:\n  - name: ollama\ndisk:\n  reserve_gb: 0\n";
    let campaign = config::parse(yaml, "t.yaml".as_ref()).unwrap();
    let cloud = TagVariant {
        missing: Some("`m:120b-cloud` is a cloud model".into()),
        ..TagVariant::new("m:120b-cloud")
    };
    let as_written = |full: &str| (full.to_owned(), vec![TagVariant::new(full)]);
    let mut tags = HashMap::from([
        as_written("hf.co/org/M-GGUF:Q8_0"),
        as_written("hf.co/org/M-GGUF:Q2_K"),
        as_written("hf.co/org/M-GGUF:Q4_K_M"),
    ]);
    tags.insert("m:120b-cloud".into(), vec![cloud]);
    let repos = vec![repo(
        "org/M-GGUF",
        &[
            ("M-Q4_K_M.gguf", GIB),
            ("M-Q8_0-00001-of-00002.gguf", GIB),
            ("M-Q8_0-00002-of-00002.gguf", GIB),
        ],
    )];
    let discovery = |offline| Discovery {
        tags: tags.clone(),
        repos: repos.clone().into_iter().collect(),
        ollama_offline: offline,
        ..Discovery::default()
    };
    let env = PlanEnv {
        storage_root: PathBuf::from("/models"),
        ollama_dir: PathBuf::from("/ollama"),
        free_space: Box::new(|_| Some(u64::MAX)),
        has_ollama_tag: Box::new(|_, _| false),
    };

    let online = plan(&campaign, &discovery(false), &env);
    let offline = plan(&campaign, &discovery(true), &env);

    assert_eq!(run(&online, "Cloud|ollama|120b-cloud").status, RunPlan::Skipped);
    let split = run(&online, "Split|ollama|Q8_0").reason.clone().unwrap_or_default();
    assert!(
        split.starts_with("Ollama cannot pull a sharded GGUF: `Q8_0` of `org/M-GGUF`"),
        "{split}"
    );
    let absent = run(&online, "Absent|ollama|Q2_K").reason.clone();
    assert_eq!(absent.as_deref(), Some("`org/M-GGUF` has no `Q2_K` GGUF for Ollama to pull"));
    let whole = run(&online, "Whole|ollama|Q4_K_M");
    assert_eq!((whole.status, whole.download_bytes), (RunPlan::Planned, GIB));
    let whole = run(&offline, "Whole|ollama|Q4_K_M");
    assert_eq!(whole.status, RunPlan::Skipped);
    assert!(whole.reason.as_ref().unwrap().contains("KITT_OFFLINE is on"), "{whole:?}");
}
