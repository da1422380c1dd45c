//! `kitt campaign create` end to end with the real binary: a campaign run
//! against the real llama-server replays from its result directories as a
//! file whose dry run plans exactly the runs that succeeded; the original
//! tool's `metrics.json` files (written here, pointing into a scratch storage
//! root) replay as runs with their repositories and variants; bad inputs exit
//! 2; `--from-campaign ID --failed` writes a config whose dry run plans just
//! the failed run and whose resume reruns only it. Also the model-level
//! `quants` key: exact planning and its errors. One llama-server at a time
//! (`ServerLock`).

mod common;
mod support;

use std::collections::BTreeSet;
use std::path::Path;

use common::{Outcome, Scratch};
use kitt::gguf::TinyModel;
use kitt::store::{ResultFilter, Store};
use serde_json::{Value, json};
use support::engine::{Engine, ServerLock};

/// Writes a generated model as `<root>/huggingface/<repo>/<stem>-<QUANT>.gguf`
/// for F32 and each of `quants` (made with llama-quantize).
fn install(scratch: &Scratch, engine: &Engine, repo: &str, model: &TinyModel, quants: &[&str]) {
    let dir = scratch.models().join("huggingface").join(repo);
    std::fs::create_dir_all(&dir).unwrap();
    let stem = repo.rsplit('/').next().unwrap().trim_end_matches("-GGUF");
    let f32 = dir.join(format!("{stem}-F32.gguf"));
    model.write(&f32).unwrap();
    for quant in quants {
        engine.quantize(&f32, &dir.join(format!("{stem}-{quant}.gguf")), quant);
    }
}

fn kitt(scratch: &Scratch, engine: Option<&Engine>, args: &[&str]) -> Outcome {
    let mut command = scratch.kitt();
    if let Some(engine) = engine {
        command.env("KITT_LLAMA_SERVER", &engine.server);
    }
    scratch.run(command.args(args))
}

fn parse(outcome: &Outcome, code: i32) -> Value {
    assert_eq!(outcome.code, code, "stdout: {}\nstderr: {}", outcome.stdout, outcome.stderr);
    serde_json::from_str(&outcome.stdout).unwrap_or_else(|e| panic!("{e}: {}", outcome.stdout))
}

/// Keys of a dry run's runs with `status`.
fn keys_with(plan: &Value, status: &str) -> BTreeSet<String> {
    plan["runs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|run| run["status"] == status)
        .map(|run| run["key"].as_str().unwrap().to_owned())
        .collect()
}

fn dry_run(scratch: &Scratch, file: &Path) -> Value {
    let outcome =
        kitt(scratch, None, &["--json", "campaign", "run", file.to_str().unwrap(), "--dry-run"]);
    parse(&outcome, 0)
}

fn yaml(text: &str) -> Value {
    serde_saphyr::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

fn result_count(scratch: &Scratch) -> usize {
    let store = Store::open(&scratch.home()).unwrap();
    store.results(&ResultFilter::default()).unwrap().len()
}

#[test]
fn a_campaigns_results_replay_as_exactly_its_successful_runs() {
    let Some(engine) = Engine::find() else { return };
    let _lock = ServerLock::acquire();
    let scratch = Scratch::new();
    install(&scratch, &engine, "test/alpha-GGUF", &TinyModel::default(), &["Q8_0", "Q4_0"]);
    let beta = TinyModel { seed: 7, ..TinyModel::default() };
    install(&scratch, &engine, "test/beta-GGUF", &beta, &["Q8_0"]);
    // Alpha: every variant but F32 (a filter); Beta: only Q8_0 (its own `quants`).
    let config = "campaign_name: original\n\
                  models:\n\
                  \x20 - name: Alpha\n    params: \"2.5M\"\n    gguf_repo: test/alpha-GGUF\n\
                  \x20 - name: Beta\n    gguf_repo: test/beta-GGUF\n    quants:\n      llama_cpp: [q8_0]\n\
                  engines:\n  - name: llama_cpp\n    suite: quick\n    config:\n      threads: 2\n\
                  quant_filter:\n  skip_patterns: [\"F32\"]\n\
                  disk:\n  reserve_gb: 0\n  cleanup_after_run: false\n";
    let file = scratch.write("original.yaml", config);
    let done = parse(
        &kitt(&scratch, Some(&engine), &["--json", "campaign", "run", file.to_str().unwrap()]),
        0,
    );
    let succeeded: BTreeSet<String> = done["runs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|run| run["status"] == "success")
        .map(|run| run["key"].as_str().unwrap().to_owned())
        .collect();
    let expected = ["Alpha|llama_cpp|Q4_0", "Alpha|llama_cpp|Q8_0", "Beta|llama_cpp|Q8_0"];
    assert_eq!(succeeded, expected.iter().map(|key| (*key).to_owned()).collect());

    // Each result records its campaign.
    let results = scratch.home().join("results");
    let store = Store::open(&scratch.home()).unwrap();
    let stored = store.results(&ResultFilter::default()).unwrap();
    assert_eq!(stored.len(), 3);
    for summary in &stored {
        let result = store.result(&summary.id).unwrap().unwrap();
        let context = result.campaign.as_ref().expect("a campaign result records its campaign");
        assert_eq!(context.campaign_name, "original");
        assert!(succeeded.contains(&context.run_key), "{}", context.run_key);
        assert_eq!(context.engine.config.threads, Some(2));
        assert_eq!(context.format.as_deref(), Some("gguf"));
    }
    drop(store);

    let replay = scratch.path().join("replay.yaml");
    let created = kitt(
        &scratch,
        None,
        &["campaign", "create", "--from-results", results.to_str().unwrap(), "-o"],
    );
    assert_eq!(created.code, 2, "-o needs a value: {created:?}");
    let created = kitt(
        &scratch,
        None,
        &[
            "campaign",
            "create",
            "--from-results",
            results.to_str().unwrap(),
            "-o",
            replay.to_str().unwrap(),
        ],
    );
    assert_eq!(created.code, 0, "{created:?}");
    let text = std::fs::read_to_string(&replay).unwrap();
    let generated = yaml(&text);
    assert_eq!(generated["campaign_name"], "replay-results", "{text}");
    assert_eq!(generated["models"][0]["gguf_repo"], "test/alpha-GGUF", "{text}");
    assert_eq!(generated["models"][0]["params"], "2.5M", "{text}");
    assert_eq!(generated["models"][0]["quants"], json!({"llama_cpp": ["Q4_0", "Q8_0"]}));
    assert_eq!(generated["models"][1]["quants"], json!({"llama_cpp": ["Q8_0"]}));
    assert_eq!(generated["engines"][0]["config"]["threads"], 2, "{text}");
    assert_eq!(generated["disk"]["reserve_gb"], 0.0, "{text}");

    // The round trip: the replay plans exactly the runs that succeeded, and
    // the F32 files it finds stay unplanned.
    let plan = dry_run(&scratch, &replay);
    assert_eq!(keys_with(&plan, "planned"), succeeded, "{plan}");
    let skipped = keys_with(&plan, "skipped");
    assert!(skipped.contains("Alpha|llama_cpp|F32"), "{skipped:?}");

    // Printing instead of writing gives the same text; an existing file is
    // refused unless --force.
    let printed =
        kitt(&scratch, None, &["campaign", "create", "--from-results", results.to_str().unwrap()]);
    assert_eq!(printed.code, 0, "{printed:?}");
    assert_eq!(printed.stdout, text);
    let again = kitt(
        &scratch,
        None,
        &[
            "campaign",
            "create",
            "--from-results",
            results.to_str().unwrap(),
            "-o",
            replay.to_str().unwrap(),
        ],
    );
    assert_eq!(again.code, 2, "{again:?}");
    assert!(again.stderr.contains("exists; give --force"), "{}", again.stderr);
    std::fs::write(&replay, "old").unwrap();
    let forced = kitt(
        &scratch,
        None,
        &[
            "campaign",
            "create",
            "--from-results",
            results.to_str().unwrap(),
            "-o",
            replay.to_str().unwrap(),
            "--force",
        ],
    );
    assert_eq!(forced.code, 0, "{forced:?}");
    assert_eq!(std::fs::read_to_string(&replay).unwrap(), text);
}

#[test]
fn failed_runs_become_a_rerun_config_that_resume_runs_alone() {
    let Some(engine) = Engine::find() else { return };
    let _lock = ServerLock::acquire();
    let scratch = Scratch::new();
    install(&scratch, &engine, "test/alpha-GGUF", &TinyModel::default(), &["Q8_0"]);
    let broken = scratch.models().join("huggingface/test/alpha-GGUF/alpha-Q4_0.gguf");
    std::fs::write(&broken, b"GGUF\x03\x00\x00\x00 not a model").unwrap();
    install(
        &scratch,
        &engine,
        "test/beta-GGUF",
        &TinyModel { seed: 3, ..TinyModel::default() },
        &[],
    );
    let config = "campaign_name: flaky\n\
                  hf_token: \"hf_do_not_copy_me\"\n\
                  models:\n\
                  \x20 - name: Alpha\n    gguf_repo: test/alpha-GGUF\n\
                  \x20 - name: Beta\n    gguf_repo: test/beta-GGUF\n\
                  engines:\n  - name: llama_cpp\n    suite: quick\n    quant_filter: [\"*\"]\n\
                  disk:\n  reserve_gb: 0\n  cleanup_after_run: false\n";
    let file = scratch.write("flaky.yaml", config);
    let first = parse(
        &kitt(&scratch, Some(&engine), &["--json", "campaign", "run", file.to_str().unwrap()]),
        1,
    );
    let id = first["campaign_id"].as_str().unwrap().to_owned();
    let failed: Vec<&str> = first["runs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|run| run["status"] == "failed")
        .map(|run| run["key"].as_str().unwrap())
        .collect();
    assert_eq!(failed, ["Alpha|llama_cpp|Q4_0"], "{first}");

    let rerun = scratch.path().join("rerun.yaml");
    let created = kitt(
        &scratch,
        None,
        &["campaign", "create", "--from-campaign", &id, "--failed", "-o", rerun.to_str().unwrap()],
    );
    assert_eq!(created.code, 0, "{created:?}");
    let text = std::fs::read_to_string(&rerun).unwrap();
    assert!(!text.contains("redacted") && !text.contains("hf_do_not_copy_me"), "{text}");
    assert!(text.contains("# Credentials are not copied") && text.contains("hf_token"), "{text}");
    assert!(created.stderr.contains("hf_token"), "{}", created.stderr);
    let generated = yaml(&text);
    assert_eq!(generated["campaign_name"], "flaky");
    assert_eq!(generated["models"].as_array().unwrap().len(), 1, "{text}");
    assert_eq!(generated["models"][0]["name"], "Alpha");
    assert_eq!(generated["models"][0]["quants"], json!({"llama_cpp": ["Q4_0"]}));
    assert!(generated["engines"][0].get("quant_filter").is_none(), "{text}");
    let plan = dry_run(&scratch, &rerun);
    assert_eq!(keys_with(&plan, "planned"), BTreeSet::from(["Alpha|llama_cpp|Q4_0".to_owned()]));

    // The variant is repaired; the rerun config resumed against the campaign
    // runs just it.
    engine.quantize(&broken.with_file_name("alpha-F32.gguf"), &broken, "Q4_0");
    let done = parse(
        &kitt(
            &scratch,
            Some(&engine),
            &[
                "--json",
                "campaign",
                "run",
                rerun.to_str().unwrap(),
                "--resume",
                "--campaign-id",
                &id,
            ],
        ),
        0,
    );
    assert_eq!(done["campaign_id"], id.as_str());
    let attempts: BTreeSet<(String, i64)> = done["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|run| (run["key"].as_str().unwrap().to_owned(), run["attempts"].as_i64().unwrap()))
        .collect();
    assert!(attempts.contains(&("Alpha|llama_cpp|Q4_0".to_owned(), 2)), "{done}");
    assert!(attempts.contains(&("Alpha|llama_cpp|Q8_0".to_owned(), 1)), "{done}");
    assert_eq!(result_count(&scratch), 4, "only the failed run ran again");

    // Nothing failed any more: no file, exit 0. An unknown id exits 2.
    let none = scratch.path().join("none.yaml");
    let nothing = kitt(
        &scratch,
        None,
        &["campaign", "create", "--from-campaign", &id, "--failed", "-o", none.to_str().unwrap()],
    );
    assert_eq!(nothing.code, 0, "{nothing:?}");
    assert!(nothing.stderr.contains("no failed run"), "{}", nothing.stderr);
    assert!(!none.exists());
    let unknown =
        kitt(&scratch, None, &["campaign", "create", "--from-campaign", "no-such", "--failed"]);
    assert_eq!(unknown.code, 2, "{unknown:?}");
    assert!(unknown.stderr.contains("no campaign `no-such`"), "{}", unknown.stderr);
}

/// A `metrics.json` as the original tool wrote it.
fn python_metrics(model: &str, engine: &str, suite: &str, timestamp: &str) -> String {
    json!({
        "kitt_version": "1.7.0",
        "suite_name": suite,
        "timestamp": timestamp,
        "engine": engine,
        "model": model,
        "passed": true,
        "total_benchmarks": 1,
        "passed_count": 1,
        "failed_count": 0,
        "total_time_seconds": 31.87,
        "results": [],
        "system_info": {"gpu": null, "ram_gb": 16}
    })
    .to_string()
}

#[test]
fn the_original_tools_results_replay_with_repositories_and_variants() {
    let scratch = Scratch::new();
    let size = 20_000_000;
    for quant in ["Q4_K_M", "Q8_0"] {
        scratch.model_file("org/Tiny-GGUF", &format!("tiny-{quant}.gguf"), size);
    }
    scratch.model_file("org/Other-GGUF", "other-Q5_K_M.gguf", size);
    let models = scratch.models().join("huggingface");
    let tiny = models.join("org/Tiny-GGUF/tiny-Q4_K_M.gguf");
    let other = models.join("org/Other-GGUF/other-Q5_K_M.gguf");
    let tiny_text =
        python_metrics(tiny.to_str().unwrap(), "llama_cpp", "quick", "2025-01-15T02:01:10");
    scratch.write("py/a/metrics.json", &tiny_text);
    // kitt's own result shape, from before results recorded their campaign.
    let old_kitt = json!({
        "id": "abc", "suite": "standard", "finished_at": "2025-02-01T00:00:00Z",
        "model": {"name": "other", "path": other.to_str().unwrap(), "quant": "Q5_K_M"},
        "engine": {"name": "llama_cpp", "version": "b1"},
    });
    scratch.write("py/b/nested/metrics.json", &old_kitt.to_string());
    scratch.write(
        "py/c/metrics.json",
        &python_metrics("/srv/elsewhere/model.gguf", "llama_cpp", "quick", "2025-01-16T00:00:00"),
    );
    scratch.write("py/d/metrics.json", "{ not json");
    // A link to an endless device is no result: named and skipped, never read.
    std::fs::create_dir_all(scratch.path().join("py/e")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", scratch.path().join("py/e/metrics.json")).unwrap();

    let dir = scratch.path().join("py");
    let outcome =
        kitt(&scratch, None, &["campaign", "create", "--from-results", dir.to_str().unwrap()]);
    assert_eq!(outcome.code, 0, "{outcome:?}");
    let c = dir.join("c/metrics.json");
    let d = dir.join("d/metrics.json");
    assert!(outcome.stderr.contains(&format!("skipped {}", d.display())), "{}", outcome.stderr);
    let endless = dir.join("e/metrics.json");
    assert!(
        outcome.stderr.contains(&format!("skipped {}: not a regular file", endless.display())),
        "{}",
        outcome.stderr
    );
    assert!(
        outcome.stderr.contains(&format!("not replayed: {}", c.display())),
        "{}",
        outcome.stderr
    );
    assert!(outcome.stdout.contains(&format!("#   {}: `/srv/elsewhere/model.gguf`", c.display())));
    assert!(outcome.stdout.contains("disagree on engine `llama_cpp`"), "{}", outcome.stdout);
    let generated = yaml(&outcome.stdout);
    assert_eq!(generated["campaign_name"], "replay-py");
    assert_eq!(generated["models"][0]["name"], "Other");
    assert_eq!(generated["models"][0]["gguf_repo"], "org/Other-GGUF");
    assert_eq!(generated["models"][0]["quants"], json!({"llama_cpp": ["Q5_K_M"]}));
    assert_eq!(generated["models"][1]["name"], "Tiny");
    assert_eq!(generated["models"][1]["quants"], json!({"llama_cpp": ["Q4_K_M"]}));
    // The newest result's suite wins when they disagree.
    assert_eq!(generated["engines"][0]["suite"], "standard");
    assert_eq!(generated["disk"]["storage_path"], scratch.models().to_str().unwrap());
    assert!(generated["disk"].get("reserve_gb").is_none(), "not recorded, so not invented");

    // Its dry run plans those runs (with a reserve this machine can meet).
    let mut adjusted = generated.clone();
    adjusted["disk"]["reserve_gb"] = json!(0);
    let file = scratch.write("replay.yaml", &adjusted.to_string());
    let plan = dry_run(&scratch, &file);
    assert_eq!(
        keys_with(&plan, "planned"),
        BTreeSet::from(["Other|llama_cpp|Q5_K_M".to_owned(), "Tiny|llama_cpp|Q4_K_M".to_owned()])
    );
    assert!(keys_with(&plan, "skipped").contains("Tiny|llama_cpp|Q8_0"), "{plan}");
}

#[test]
fn nothing_to_replay_and_wrong_arguments_exit_2() {
    let scratch = Scratch::new();
    let empty = scratch.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let outcome =
        kitt(&scratch, None, &["campaign", "create", "--from-results", empty.to_str().unwrap()]);
    assert_eq!(outcome.code, 2, "{outcome:?}");
    assert!(outcome.stderr.contains("nothing to replay"), "{}", outcome.stderr);
    assert!(outcome.stdout.is_empty());

    scratch.write("bad/metrics.json", "[1, 2");
    let bad = scratch.path().join("bad");
    let outcome =
        kitt(&scratch, None, &["campaign", "create", "--from-results", bad.to_str().unwrap()]);
    assert_eq!(outcome.code, 2, "{outcome:?}");
    assert!(outcome.stderr.contains("none readable"), "{}", outcome.stderr);
    let named = format!("skipped {}", bad.join("metrics.json").display());
    assert!(outcome.stderr.contains(&named), "{}", outcome.stderr);

    let missing = scratch.path().join("missing");
    let outcome =
        kitt(&scratch, None, &["campaign", "create", "--from-results", missing.to_str().unwrap()]);
    assert_eq!(outcome.code, 2, "{outcome:?}");
    assert!(outcome.stderr.contains("is not a directory"), "{}", outcome.stderr);

    for args in [
        &["campaign", "create"][..],
        &["campaign", "create", "--failed"],
        &["campaign", "create", "--from-campaign", "x"],
        &["campaign", "create", "--from-results", "d", "--from-campaign", "x", "--failed"],
        &["campaign", "create", "--from-results", "d", "--force"],
    ] {
        let outcome = kitt(&scratch, None, args);
        assert_eq!(outcome.code, 2, "{args:?}: {outcome:?}");
        assert!(outcome.stderr.contains("error"), "{args:?}: {}", outcome.stderr);
    }
    let none = kitt(&scratch, None, &["campaign", "create", "--from-campaign", "x", "--failed"]);
    assert_eq!(none.code, 2, "{none:?}");
    assert!(none.stderr.contains("no campaign `x`"), "{}", none.stderr);
}

const QUANTS_MODELS: &str = "campaign_name: q\n\
    models:\n  - name: M\n    gguf_repo: org/M-GGUF\n    quants:\n";

fn quants_config(quants: &str, engines: &str) -> String {
    format!("{QUANTS_MODELS}{quants}engines:\n{engines}disk:\n  reserve_gb: 0\n")
}

#[test]
fn a_models_quants_plan_exactly_its_variants_and_name_the_rest() {
    let scratch = Scratch::new();
    for quant in ["Q4_K_M", "Q8_0", "F16"] {
        scratch.model_file("org/M-GGUF", &format!("m-{quant}.gguf"), 10_000_000);
    }
    let engines = "  - name: llama_cpp\n  - name: openai\n    config:\n      base_url: http://127.0.0.1:9/v1\n";
    scratch.write("q.yaml", &quants_config("      llama_cpp: [q4_k_m, Q6_K]\n", engines));
    let plan = dry_run(&scratch, &scratch.path().join("q.yaml"));
    let runs: Vec<(String, String, String)> = plan["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|run| {
            (
                run["key"].as_str().unwrap().to_owned(),
                run["status"].as_str().unwrap().to_owned(),
                run["reason"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let find = |key: &str| {
        runs.iter().find(|run| run.0 == key).unwrap_or_else(|| panic!("{key}: {runs:?}"))
    };
    assert_eq!(find("M|llama_cpp|Q4_K_M").1, "planned");
    assert_eq!(keys_with(&plan, "planned").len(), 1, "{runs:?}");
    for key in ["M|llama_cpp|Q8_0", "M|llama_cpp|F16"] {
        assert!(find(key).2.contains("does not list"), "{runs:?}");
    }
    assert!(find("M|llama_cpp|Q6_K").2.contains("listed in the model's `quants` but not found"));
    assert!(find("M|openai|-").2.contains("does not list `openai`"), "{runs:?}");
}

#[test]
fn bad_model_quants_are_errors_naming_the_field() {
    let scratch = Scratch::new();
    let llama = "  - name: llama_cpp\n";
    let cases = [
        ("      lama_cpp: [Q4_K_M]\n", "`models[0].quants.lama_cpp`", "did you mean `llama_cpp`?"),
        ("      vllm: [Q4_K_M]\n", "`models[0].quants.vllm`", "not listed under `engines`"),
        ("      llama_cpp: []\n", "`models[0].quants.llama_cpp`", "would plan nothing"),
        ("      {}\n", "`models[0].quants`", "`quants` is empty"),
        ("      llama_cpp: Q4_K_M\n", "`models[0].quants.llama_cpp`", "expected a list"),
    ];
    for (quants, field, message) in cases {
        scratch.write("bad.yaml", &quants_config(quants, llama));
        let outcome = scratch.dry_run("bad.yaml", &[]);
        assert_eq!(outcome.code, 2, "{quants}: {outcome:?}");
        assert!(outcome.stderr.contains(field), "{quants}: {}", outcome.stderr);
        assert!(outcome.stderr.contains(message), "{quants}: {}", outcome.stderr);
        assert!(outcome.stderr.contains("bad.yaml:"), "{quants}: {}", outcome.stderr);
    }
}
