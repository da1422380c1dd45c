//! `kitt campaign run --limit N`, a smoke run: every quality benchmark of
//! every run scores only its first N items, the limit is recorded on the
//! results, the session and the runs, the summary and `campaign status` mark
//! limited successes, and resuming without the limit (or with another) redoes
//! them on whole datasets while resuming with the same limit does not. The
//! engine is a scripted OpenAI-compatible server reached through `openai`.

mod common;
mod support;

use std::time::Duration;

use common::{Outcome, Scratch};
use kitt::store::{ResultFilter, Store};
use serde_json::{Value, json};
use support::datasets::write_datasets;
use support::stream::{Script, ScriptedStream};

/// Answers every chat prompt "Answer: B"; refuses prompt log-probabilities,
/// so quality benchmarks are scored generatively.
fn server() -> ScriptedStream {
    let server = ScriptedStream::start(Script::error(400, "{\"error\":\"echo is not supported\"}"));
    server.serve_models(&["m"]);
    server.respond_with(|body| match body.get("messages") {
        Some(_) => Script::chat("m", &["Answer: ", "B"], Duration::ZERO),
        None => Script::error(400, "{\"error\":\"echo is not supported\"}"),
    });
    server
}

fn setup(scratch: &Scratch, server: &ScriptedStream) -> String {
    write_datasets(&scratch.home());
    // Campaigns name shipped suites; one in the home overrides it.
    let suite = "name: quick\nversion: 1\ntests: [mmlu, hellaswag]\n";
    scratch.write("kitt-home/suites/quick.yaml", suite);
    let config = format!(
        "campaign_name: lim\nmodels:\n  - name: Served\nengines:\n  - name: openai\n    \
         suite: quick\n    config:\n      base_url: {}/v1\n      model: m\n",
        server.url()
    );
    scratch.write("lim.yaml", &config).display().to_string()
}

fn campaign(scratch: &Scratch, args: &[&str]) -> Outcome {
    scratch.run(scratch.kitt().arg("campaign").args(args))
}

fn json_of(outcome: &Outcome) -> Value {
    assert_eq!(outcome.code, 0, "stdout: {}\nstderr: {}", outcome.stdout, outcome.stderr);
    serde_json::from_str(&outcome.stdout).unwrap_or_else(|e| panic!("{e}: {}", outcome.stdout))
}

fn chats(server: &ScriptedStream) -> usize {
    server.requests("/v1/chat/completions")
}

#[test]
fn a_limited_campaign_is_marked_and_redone_without_the_limit() {
    let scratch = Scratch::new();
    let server = server();
    let config = setup(&scratch, &server);

    let smoke = campaign(&scratch, &["run", &config, "--limit", "2"]);

    assert_eq!(smoke.code, 0, "stdout: {}\nstderr: {}", smoke.stdout, smoke.stderr);
    assert!(smoke.stdout.contains("success (first 2 items)"), "{}", smoke.stdout);
    assert!(
        smoke.stdout.contains("1 smoke result (quality benchmarks scored only their first items)"),
        "{}",
        smoke.stdout
    );
    assert_eq!(chats(&server), 2 + 2, "two items of each benchmark");
    let store = Store::open(&scratch.home()).unwrap();
    let results = store.results(&ResultFilter::default()).unwrap();
    let limited = store.result(&results[0].id).unwrap().unwrap();
    for benchmark in &limited.benchmarks {
        let quality = benchmark.quality.as_ref().unwrap();
        assert_eq!(quality.limit, Some(2), "{}", benchmark.name);
        assert_eq!(benchmark.metrics["items"], 2.0, "{}", benchmark.name);
    }
    let mmlu = &limited.benchmarks[0].quality.as_ref().unwrap();
    assert_eq!(mmlu.dataset_items, 5);

    let status = scratch.run(scratch.kitt().args(["campaign", "status"]));
    assert!(status.stdout.contains("Limit:    --limit 2"), "{}", status.stdout);
    assert!(status.stdout.contains("Limited:  1 smoke result"), "{}", status.stdout);
    let status = json_of(&scratch.run(scratch.kitt().args(["--json", "campaign", "status"])));
    assert_eq!((&status["item_limit"], &status["limited_runs"]), (&json!(2), &json!(1)));

    // The same limit again: the smoke result stands.
    let again =
        json_of(&campaign(&scratch, &["--json", "run", &config, "--resume", "--limit", "2"]));
    assert_eq!(again["item_limit"], 2);
    assert_eq!(again["runs"][0]["item_limit"], 2);
    assert_eq!(chats(&server), 4, "nothing was run again");

    // Without the limit the campaign is not done: the run is redone in full.
    let full = json_of(&campaign(&scratch, &["--json", "run", &config, "--resume"]));
    assert_eq!(full["item_limit"], Value::Null);
    let run = &full["runs"][0];
    assert_eq!(
        (&run["status"], &run["item_limit"], &run["attempts"]),
        (&json!("success"), &Value::Null, &json!(2))
    );
    assert_eq!(chats(&server), 4 + 5 + 2);
    let results = store.results(&ResultFilter::default()).unwrap();
    assert_eq!(results.len(), 2, "the smoke result is kept");
    let whole = store.result(&results[0].id).unwrap().unwrap();
    assert_eq!(whole.benchmarks[0].quality.as_ref().unwrap().limit, None);
    assert_ne!(whole.config_hash, limited.config_hash, "a limited run hashes differently");
    let status = json_of(&scratch.run(scratch.kitt().args(["--json", "campaign", "status"])));
    assert_eq!((&status["item_limit"], &status["limited_runs"]), (&Value::Null, &json!(0)));

    // A full success stands for any smoke run.
    let after =
        json_of(&campaign(&scratch, &["--json", "run", &config, "--resume", "--limit", "2"]));
    assert_eq!(after["runs"][0]["item_limit"], Value::Null);
    assert_eq!(chats(&server), 11);

    let zero = campaign(&scratch, &["run", &config, "--limit", "0"]);
    assert_eq!(zero.code, 2, "{}", zero.stderr);
}
