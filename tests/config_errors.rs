//! Rendered config errors: what a user sees for a broken campaign file.
//! Every case must exit 2 and name the file, line, column and field.

mod common;

use common::Scratch;

/// Runs a dry run on `yaml` and returns stderr, asserting exit code 2.
fn rejected(yaml: &str) -> String {
    let scratch = Scratch::new();
    scratch.write("campaign.yaml", yaml);
    let outcome = scratch.dry_run("campaign.yaml", &[]);
    assert_eq!(outcome.code, 2, "stderr: {}", outcome.stderr);
    assert!(outcome.stdout.is_empty(), "nothing on stdout: {}", outcome.stdout);
    assert!(!scratch.home().exists(), "a rejected config must not create the kitt home");
    outcome.stderr
}

const VALID_TAIL: &str = "
models:
  - name: M
    gguf_repo: org/M-GGUF
engines:
  - name: llama_cpp
";

#[test]
fn misspelt_key_suggests_the_right_one() {
    let yaml = format!("campaign_name: c\ndisk:\n  reserve: 10\n{VALID_TAIL}");
    insta::assert_snapshot!(rejected(&yaml));
}

#[test]
fn key_in_the_wrong_section_says_where_it_belongs() {
    let yaml = format!("campaign_name: c\nstorage_path: /data\n{VALID_TAIL}");
    insta::assert_snapshot!(rejected(&yaml));
}

#[test]
fn wrong_type_names_the_value() {
    let yaml = format!("campaign_name: c\ndisk:\n  reserve_gb: lots\n{VALID_TAIL}");
    insta::assert_snapshot!(rejected(&yaml));
}

#[test]
fn empty_file_is_an_error() {
    insta::assert_snapshot!(rejected("# nothing here\n\n"));
}

#[test]
fn top_level_list_is_an_error() {
    insta::assert_snapshot!(rejected("- campaign_name: c\n- models: []\n"));
}

#[test]
fn missing_campaign_name_is_an_error() {
    insta::assert_snapshot!(rejected(VALID_TAIL));
}

#[test]
fn duplicate_model_names_point_at_both() {
    let yaml = "campaign_name: c
models:
  - name: Llama
    gguf_repo: org/a
  - name: llama
    gguf_repo: org/b
engines:
  - name: llama_cpp
";
    insta::assert_snapshot!(rejected(yaml));
}

#[test]
fn unknown_engine_suggests_a_known_one() {
    let yaml = "campaign_name: c
models:
  - name: M
    gguf_repo: org/M-GGUF
engines:
  - name: llama.cpp
";
    insta::assert_snapshot!(rejected(yaml));
}

#[test]
fn bad_glob_names_the_pattern() {
    let yaml =
        format!("campaign_name: c\nquant_filter:\n  skip_patterns: [\"[z-a]*\"]\n{VALID_TAIL}");
    insta::assert_snapshot!(rejected(&yaml));
}

#[test]
fn negative_sizes_are_rejected() {
    let yaml = "campaign_name: c
models:
  - name: M
    gguf_repo: org/M-GGUF
    estimated_size_gb: -4
engines:
  - name: llama_cpp
resource_limits:
  max_model_size_gb: -1
";
    insta::assert_snapshot!(rejected(yaml));
}

#[test]
fn empty_names_are_rejected() {
    let yaml = "campaign_name: c
models:
  - name: \"  \"
    gguf_repo: org/M-GGUF
engines:
  - name: llama_cpp
";
    insta::assert_snapshot!(rejected(yaml));
}

#[test]
fn duplicate_mapping_key_is_an_error() {
    let yaml = format!("campaign_name: c\ncampaign_name: d\n{VALID_TAIL}");
    insta::assert_snapshot!(rejected(&yaml));
}

#[test]
fn matching_rules_is_rejected_with_guidance() {
    let yaml = format!("campaign_name: c\nmatching_rules: [\"llama*\"]\n{VALID_TAIL}");
    insta::assert_snapshot!(rejected(&yaml));
}

#[test]
fn format_the_engine_cannot_load_is_rejected() {
    let yaml = "campaign_name: c
models:
  - name: M
    safetensors_repo: org/M
engines:
  - name: vllm
    formats: [safetensors, ollama]
";
    insta::assert_snapshot!(rejected(yaml));
}

#[test]
fn engine_keys_the_engine_does_not_take_or_out_of_range_are_rejected() {
    let yaml = "campaign_name: c
models:
  - name: M
    safetensors_repo: org/M
engines:
  - name: vllm
    config:
      gpu_layers: 10
      gpu_memory_utilization: 1.5
  - name: mlx
    config:
      context_size: 4096
      tokenizer: org/M
";
    insta::assert_snapshot!(rejected(yaml));
}

#[test]
fn regression_events_need_auto_compare() {
    let yaml = format!(
        "campaign_name: c\nnotifications:\n  notify_on: [failure, regression]\n{VALID_TAIL}"
    );
    insta::assert_snapshot!(rejected(&yaml));
}

#[test]
fn every_problem_is_reported_at_once() {
    let yaml = "campaign_name: c
models:
  - name: M
    params: seven
    gguf_repo: not-a-repo
    ollama_tag: \"Llama3:8B\"
engines:
  - name: llama_cpp
    suite: quik
  - name: openai
schedule: \"every night\"
";
    insta::assert_snapshot!(rejected(yaml));
}

#[test]
fn unreadable_file_exits_2() {
    let scratch = Scratch::new();
    let outcome = scratch.dry_run("absent.yaml", &[]);
    assert_eq!(outcome.code, 2);
    assert!(
        outcome.stderr.contains("cannot read campaign config `absent.yaml`"),
        "{}",
        outcome.stderr
    );
}

#[test]
fn secrets_from_the_file_are_never_printed() {
    let scratch = Scratch::new();
    let yaml = format!(
        "campaign_name: c\nhf_token: hf_supersecret123\ndevon_api_key: dk_secret\n{VALID_TAIL}"
    );
    scratch.write("campaign.yaml", &yaml);
    let outcome = scratch.dry_run("campaign.yaml", &["--json"]);
    assert_eq!(outcome.code, 0, "{}", outcome.stderr);
    let all = format!("{}{}", outcome.stdout, outcome.stderr);
    assert!(!all.contains("hf_supersecret123") && !all.contains("dk_secret"), "{all}");
    assert!(
        outcome.stderr.contains("prefer the environment variable HF_TOKEN"),
        "{}",
        outcome.stderr
    );
}

#[test]
fn secrets_on_an_error_line_are_redacted() {
    for yaml in [
        format!("campaign_name: c\nhf_token: hf_SECRET1\nhf_token: hf_SECRET2\n{VALID_TAIL}"),
        format!("campaign_name: c\nhf_tokn: hf_SECRET1\n{VALID_TAIL}"),
        format!("campaign_name: c\nhf_token: [hf_SECRET1]\n{VALID_TAIL}"),
        format!("campaign_name: c\nnotifications:\n  smtp_pasword: SECRET2\n{VALID_TAIL}"),
        // Flow mappings, lists and block values under a credential key.
        format!(
            "campaign_name: c\nnotifications: {{webhook_url: \"http://127.0.0.1:1/T/SECRET3\", on_complete: maybe}}\n{VALID_TAIL}"
        ),
        format!("campaign_name: c\nhf_token:\n  - hf_SECRET4\n{VALID_TAIL}"),
        format!("campaign_name: c\n\"hf_token\": [hf_SECRET5]\n{VALID_TAIL}"),
        // A quoted secret running onto the next line inside a flow mapping,
        // a plain one continued below its key, and one echoed through an alias.
        format!(
            "campaign_name: c\nnotifications: {{webhook_url: \"https://h/T000/\n  B000/SECRET6\", on_complete: maybe}}\n{VALID_TAIL}"
        ),
        format!("campaign_name: c\nhf_token: hf_A\n  hf_SECRET7: x\n{VALID_TAIL}"),
        format!("campaign_name: c\nhf_token: &tok hf_SECRET8\nschedule: *tok\n{VALID_TAIL}"),
    ] {
        let stderr = rejected(&yaml);
        assert!(!stderr.contains("SECRET"), "{stderr}");
        assert!(stderr.contains("<redacted>"), "{stderr}");
    }
}

#[test]
fn empty_formats_list_points_at_its_line() {
    let yaml = "campaign_name: c\nmodels:\n  - name: M\n    gguf_repo: o/m\nengines:\n  - name: llama_cpp\n    formats: []\n";
    let stderr = rejected(yaml);
    assert!(stderr.contains("campaign.yaml:7:14"), "{stderr}");
}

#[test]
fn repository_ids_the_hub_would_refuse_are_config_errors() {
    let yaml = "campaign_name: c\nmodels:\n  - name: M\n    gguf_repo: org/na..me\nengines:\n  - name: llama_cpp\n";
    let stderr = rejected(yaml);
    assert!(stderr.contains("campaign.yaml:4:16") && stderr.contains("`..`"), "{stderr}");
}

#[test]
fn a_section_left_empty_says_what_it_expected() {
    let stderr = rejected(&format!("campaign_name: c\ndisk:\n{VALID_TAIL}"));
    assert!(stderr.contains("`disk`: expected a mapping of keys to values"), "{stderr}");
}

#[test]
fn several_documents_are_explained() {
    let stderr = rejected(&format!("campaign_name: c\n{VALID_TAIL}---\ncampaign_name: d\n"));
    assert!(stderr.contains("more than one YAML document"), "{stderr}");
}

#[test]
fn a_devon_url_with_credentials_is_refused_before_any_run() {
    let yaml = format!(
        "campaign_name: c\ndevon_managed: true\ndevon_url: \"http://user:hunter2@127.0.0.1:9/\"\n{VALID_TAIL}"
    );
    let stderr = rejected(&yaml);
    assert!(stderr.contains("campaign.yaml:3") && stderr.contains("devon_url"), "{stderr}");
    assert!(stderr.contains("devon_api_key"), "{stderr}");
    assert!(!stderr.contains("hunter2"), "{stderr}");
    let query = format!("campaign_name: c\ndevon_url: \"http://127.0.0.1:9/?key=k\"\n{VALID_TAIL}");
    assert!(rejected(&query).contains("devon_url"));
}

#[test]
fn max_parallel_must_be_a_positive_whole_number() {
    for value in ["0", "-2"] {
        let yaml = format!("campaign_name: c\nparallel: true\nmax_parallel: {value}\n{VALID_TAIL}");
        let stderr = rejected(&yaml);
        assert!(stderr.contains("max_parallel"), "{stderr}");
        assert!(
            stderr.contains(&format!("must be a positive whole number, got {value}")),
            "{stderr}"
        );
        assert!(stderr.contains("campaign.yaml:3"), "names the line: {stderr}");
    }
}

#[test]
fn max_parallel_without_parallel_is_a_warning() {
    let scratch = Scratch::new();
    scratch.write("campaign.yaml", &format!("campaign_name: c\nmax_parallel: 2\n{VALID_TAIL}"));
    let outcome = scratch.dry_run("campaign.yaml", &[]);
    assert_eq!(outcome.code, 0, "stderr: {}", outcome.stderr);
    assert!(
        outcome.stderr.contains("max_parallel: 2 has no effect without `parallel: true`"),
        "{}",
        outcome.stderr
    );
}

#[test]
fn a_negative_parameter_count_is_an_error() {
    let yaml = "campaign_name: c\nmodels:\n  - name: M\n    params: \"-8B\"\n    \
                gguf_repo: org/M-GGUF\nengines:\n  - name: llama_cpp\n";
    let stderr = rejected(yaml);
    assert!(stderr.contains("models[0].params"), "{stderr}");
    assert!(stderr.contains("cannot read a parameter count from `-8B`"), "{stderr}");
}
