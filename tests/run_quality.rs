//! Quality benchmarks through `kitt run`: datasets written in each public
//! layout, a scripted OpenAI-compatible server that answers some items right,
//! some wrong, some without a readable answer and one with an HTTP error (so
//! the accuracy arithmetic is checked exactly, in the JSON output, the store
//! and the run directory), `--limit`, a missing dataset, and a run against the
//! real llama-server on a generated model.

mod common;
mod support;

use std::path::Path;
use std::time::Duration;

use common::{Outcome, Scratch};
use kitt::gguf::TinyModel;
use kitt::store::Store;
use serde_json::{Value, json};
use support::datasets::{write, write_datasets};
use support::engine::{Engine, ServerLock, make_model};
use support::parquet;
use support::stream::{Script, ScriptedStream};

/// How the scripted server treats an item, found by its tag in the prompt.
#[derive(Clone, Copy)]
enum Reply {
    Right,
    Wrong,
    Silent,
    Fail,
}

/// Every item's tag, how it is answered, and its right answer (option text or number).
const PLAN: &[(&str, Reply, &str)] = &[
    ("[m1]", Reply::Right, "Paris"),
    ("[m2]", Reply::Wrong, "4"),
    ("[m3]", Reply::Right, "oxygen"),
    ("[m4]", Reply::Silent, "blue"),
    ("[m5]", Reply::Fail, "seven"),
    ("[g1]", Reply::Right, "1200"),
    ("[g2]", Reply::Wrong, "18"),
    ("[g3]", Reply::Silent, "5"),
    ("[t1]", Reply::Right, "Nothing happens"),
    ("[t2]", Reply::Right, "No"),
    ("[t3]", Reply::Wrong, "It depends"),
    ("[h1]", Reply::Right, "picks up the ball."),
    ("[h2]", Reply::Wrong, "rinses the plate."),
];

/// The scripted answer to one quality prompt, following [`PLAN`].
fn answer(body: &Value) -> Script {
    let prompt = body["messages"][0]["content"].as_str().unwrap_or_default();
    let Some((_, reply, right)) = PLAN.iter().find(|(tag, _, _)| prompt.contains(tag)) else {
        return Script::error(400, "{\"error\":\"unknown item\"}");
    };
    let options: Vec<(char, &str)> = prompt
        .lines()
        .filter_map(|line| {
            let (letter, text) = line.split_once(". ")?;
            let letter = letter.chars().next().filter(|_| letter.len() == 1)?;
            letter.is_ascii_uppercase().then_some((letter, text))
        })
        .collect();
    let letter = |want_right: bool| {
        options.iter().find(|(_, text)| (text == right) == want_right).map(|(l, _)| *l).unwrap()
    };
    let text = match (reply, options.is_empty()) {
        (Reply::Fail, _) => return Script::error(500, "{\"error\":\"boom\"}"),
        (Reply::Silent, _) => "not sure, sorry.".to_owned(),
        (Reply::Right, false) => format!("Let me think.\nAnswer: {}", letter(true)),
        (Reply::Wrong, false) => format!("The answer is ({}).", letter(false)),
        (Reply::Right, true) => format!("Step by step: it is {right}.\n#### {right}"),
        (Reply::Wrong, true) => "Probably 7.\n#### 7".to_owned(),
    };
    let pieces: Vec<String> =
        text.chars().collect::<Vec<_>>().chunks(5).map(String::from_iter).collect();
    let pieces: Vec<&str> = pieces.iter().map(String::as_str).collect();
    Script::chat("m", &pieces, Duration::ZERO)
}

fn quality_suite(scratch: &Scratch, tests: &str) -> String {
    let suite = format!("name: quality\nversion: 1\ntests: [{tests}]\n");
    scratch.write("quality.yaml", &suite).display().to_string()
}

fn run_scripted(
    scratch: &Scratch,
    server: &ScriptedStream,
    suite: &str,
    extra: &[&str],
) -> Outcome {
    let base_url = format!("base_url={}/v1", server.url());
    let mut command = scratch.kitt();
    command
        .args(["--json", "run", "-m", "m", "-e", "openai", "--engine-config", &base_url, "-s"])
        .arg(suite)
        .args(extra);
    scratch.run(&mut command)
}

fn scripted_server() -> ScriptedStream {
    let server = ScriptedStream::start(Script::error(500, "{}"));
    server.serve_models(&["m"]);
    server.respond_with(answer);
    server
}

fn benchmark<'a>(result: &'a Value, name: &str) -> &'a Value {
    let benchmarks = result["benchmarks"].as_array().unwrap();
    benchmarks.iter().find(|b| b["name"] == name).unwrap_or_else(|| panic!("no {name}"))
}

#[test]
fn scripted_answers_give_exact_accuracy_in_output_store_and_run_directory() {
    let scratch = Scratch::new();
    write_datasets(&scratch.home());
    let server = scripted_server();
    let suite = quality_suite(&scratch, "mmlu, gsm8k, truthfulqa, hellaswag");

    let outcome = run_scripted(&scratch, &server, &suite, &[]);

    assert_eq!(outcome.code, 0, "{}\n{}", outcome.stderr, outcome.stdout);
    let result: Value = serde_json::from_str(&outcome.stdout).unwrap();
    // (name, items, correct, unanswered, error rate)
    let expected = [
        ("mmlu", 5, 2, 2, 0.2),
        ("gsm8k", 3, 1, 1, 0.0),
        ("truthfulqa", 3, 2, 0, 0.0),
        ("hellaswag", 2, 1, 0, 0.0),
    ];
    for (name, items, correct, unanswered, error_rate) in expected {
        let bench = benchmark(&result, name);
        assert_eq!(bench["status"]["state"], "passed", "{name}: {bench}");
        let metrics = &bench["metrics"];
        let p = f64::from(correct) / f64::from(items);
        assert_eq!(metrics["items"], f64::from(items), "{name}");
        assert_eq!(metrics["correct"], f64::from(correct), "{name}");
        assert_eq!(metrics["unanswered"], f64::from(unanswered), "{name}");
        assert_eq!(metrics["accuracy"], p, "{name}");
        assert_eq!(metrics["accuracy_stderr"], (p * (1.0 - p) / f64::from(items)).sqrt(), "{name}");
        assert_eq!(metrics["error_rate"], error_rate, "{name}");
    }

    for body in server.bodies().iter().filter(|body| body.get("messages").is_some()) {
        assert_eq!(body["temperature"], 0.0);
        assert!(body.get("ignore_eos").is_none(), "{body}");
        let prompt = body["messages"][0]["content"].as_str().unwrap();
        assert!(!prompt.starts_with("[request "), "no unique prefix on scored prompts: {prompt}");
    }
    assert_eq!(server.requests("/v1/chat/completions"), 13, "one request per item");
    // `scoring: auto` asked once whether the server returns prompt
    // log-probabilities; it answered 400, so every benchmark was generative.
    assert_eq!(server.requests("/v1/completions"), 1, "one probe per run");
    let probe = server.bodies().into_iter().find(|body| body.get("prompt").is_some()).unwrap();
    assert_eq!((&probe["echo"], &probe["logprobs"]), (&json!(true), &json!(1)));
    for name in ["mmlu", "gsm8k", "truthfulqa", "hellaswag"] {
        let quality = &benchmark(&result, name)["quality"];
        assert_eq!(quality["scoring"], "generative", "{name}");
        let reason = quality["scoring_reason"].as_str().unwrap();
        let why = if name == "gsm8k" { "no options" } else { "no prompt log-probabilities" };
        assert!(reason.contains(why), "{name}: {reason}");
        assert_eq!(quality["limit"], Value::Null);
    }

    let store = Store::open(&scratch.home()).unwrap();
    let stored = store.result(result["id"].as_str().unwrap()).unwrap().unwrap();
    let mmlu = stored.benchmarks.iter().find(|b| b.name == "mmlu").unwrap();
    let summary: Vec<(usize, &str, Option<&str>, bool)> = mmlu
        .items
        .iter()
        .map(|i| (i.index, i.expected.as_str(), i.extracted.as_deref(), i.correct))
        .collect();
    assert_eq!(
        summary,
        [
            (0, "B", Some("B"), true),
            (1, "A", Some("B"), false),
            (2, "D", Some("D"), true),
            (3, "B", None, false),
            (4, "C", None, false),
        ]
    );
    assert_eq!(mmlu.items[0].response, "Let me think.\nAnswer: B");
    assert_eq!(mmlu.items[4].response, "", "a failed request has no reply");
    assert_eq!(mmlu.requests.len(), 5);
    let gsm8k = stored.benchmarks.iter().find(|b| b.name == "gsm8k").unwrap();
    assert_eq!(gsm8k.items[0].extracted.as_deref(), Some("1200"));
    assert_eq!(gsm8k.items[1].extracted.as_deref(), Some("7"));

    let run_dir = Path::new(result["run_dir"].as_str().unwrap());
    let lines = std::fs::read_to_string(run_dir.join("quality_items.jsonl")).unwrap();
    let lines: Vec<Value> = lines.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 13);
    let correct = lines.iter().filter(|line| line["correct"] == true).count();
    assert_eq!(correct, 2 + 1 + 2 + 1);
    assert_eq!(lines[5]["benchmark"], "gsm8k");
    assert_eq!(lines[5]["expected"], "1200");
    let metrics = std::fs::read_to_string(run_dir.join("metrics.json")).unwrap();
    assert!(!metrics.contains("\"items\": ["), "items live in their own file");
}

#[test]
fn limit_scores_only_the_first_items() {
    let scratch = Scratch::new();
    write_datasets(&scratch.home());
    let server = scripted_server();
    let suite = quality_suite(&scratch, "mmlu, gsm8k");

    let outcome = run_scripted(&scratch, &server, &suite, &["--limit", "2"]);

    assert_eq!(outcome.code, 0, "{}", outcome.stderr);
    let result: Value = serde_json::from_str(&outcome.stdout).unwrap();
    let mmlu = &benchmark(&result, "mmlu")["metrics"];
    assert_eq!((mmlu["items"].clone(), mmlu["correct"].clone()), (json!(2.0), json!(1.0)));
    assert_eq!(mmlu["accuracy"], 0.5);
    assert_eq!(benchmark(&result, "gsm8k")["metrics"]["items"], 2.0);
    let quality = &benchmark(&result, "mmlu")["quality"];
    assert_eq!((&quality["limit"], &quality["dataset_items"]), (&json!(2), &json!(5)));
    assert_eq!(server.requests("/v1/chat/completions"), 4);

    let zero = run_scripted(&scratch, &server, &suite, &["--limit", "0"]);
    assert_eq!(zero.code, 2, "{}", zero.stderr);
}

#[test]
fn a_missing_dataset_is_not_run_with_the_folder_to_fill() {
    let scratch = Scratch::new();
    write_datasets(&scratch.home());
    std::fs::remove_dir_all(scratch.home().join("datasets/gsm8k")).unwrap();
    let server = scripted_server();
    let suite = quality_suite(&scratch, "mmlu, gsm8k");

    let outcome = run_scripted(&scratch, &server, &suite, &[]);

    assert_eq!(outcome.code, 0, "{}", outcome.stderr);
    let result: Value = serde_json::from_str(&outcome.stdout).unwrap();
    let gsm8k = benchmark(&result, "gsm8k");
    assert_eq!(gsm8k["status"]["state"], "not_run");
    let reason = gsm8k["status"]["reason"].as_str().unwrap();
    let folder = scratch.home().join("datasets/gsm8k").display().to_string();
    assert!(reason.contains(&folder) && reason.contains("dataset_path"), "{reason}");
    assert_eq!(server.requests("/v1/chat/completions"), 5, "only MMLU was asked");
}

#[test]
fn a_malformed_dataset_fails_the_benchmark_naming_file_and_line() {
    let scratch = Scratch::new();
    write_datasets(&scratch.home());
    let file = scratch.home().join("datasets/gsm8k/main/test.csv");
    write(&file, "question,answer\n\"ok\",\"#### 3\"\n\"no marker\",\"just 4\"\n");
    let server = scripted_server();
    let suite = quality_suite(&scratch, "gsm8k");

    let outcome = run_scripted(&scratch, &server, &suite, &[]);

    assert_eq!(outcome.code, 1, "{}", outcome.stderr);
    let result: Value = serde_json::from_str(&outcome.stdout).unwrap();
    let reason = benchmark(&result, "gsm8k")["status"]["reason"].as_str().unwrap().to_owned();
    assert!(reason.contains(&format!("{} line 3", file.display())), "{reason}");
    assert!(reason.contains("#### <number>"), "{reason}");
    assert_eq!(server.requests("/v1/chat/completions"), 0);
}

#[test]
fn a_parquet_row_out_of_layout_fails_naming_file_and_row() {
    let scratch = Scratch::new();
    let file = scratch.home().join("datasets/mmlu/all/test-00000-of-00001.parquet");
    let rows = [
        ("[m1] Pick one.", "trivia", ["Rome", "Paris", "Madrid", "Oslo"], 1),
        ("[m2] Pick one.", "trivia", ["4", "5", "6", "3"], 9),
    ];
    parquet::write_mmlu(&file, &rows);
    let server = scripted_server();
    let suite = quality_suite(&scratch, "mmlu");

    let limited = run_scripted(&scratch, &server, &suite, &["--limit", "1"]);
    let outcome = run_scripted(&scratch, &server, &suite, &[]);

    assert_eq!(outcome.code, 1, "{}", outcome.stderr);
    let result: Value = serde_json::from_str(&outcome.stdout).unwrap();
    let reason = benchmark(&result, "mmlu")["status"]["reason"].as_str().unwrap().to_owned();
    let expected =
        format!("{} row 2: `answer` must be an option index from 0 to 3", file.display());
    assert!(reason.contains(&expected), "{reason}");
    assert_eq!(limited.code, 1, "the whole file is checked even with --limit");
}

#[test]
fn every_quality_benchmark_runs_on_the_real_llama_server() {
    let Some(engine) = Engine::find() else { return };
    let _lock = ServerLock::acquire();
    let scratch = Scratch::new();
    write_datasets(&scratch.home());
    let model = make_model(scratch.path(), &TinyModel::default());
    // llama-server returns no prompt log-probabilities: `auto` falls back to
    // generative, and HellaSwag, forced to log-likelihood, is not run.
    let suite = "name: quality\nversion: 1\ntests: [mmlu, gsm8k, truthfulqa, hellaswag]\n\
                 test_overrides:\n  hellaswag:\n    scoring: loglikelihood\n";
    let suite = scratch.write("quality.yaml", suite).display().to_string();

    let mut command = scratch.kitt();
    command
        .env("KITT_LLAMA_SERVER", &engine.server)
        .args(["--json", "run", "-m", model.to_str().unwrap(), "-e", "llama_cpp", "-s"])
        .arg(&suite);
    let outcome = scratch.run(&mut command);

    assert_eq!(outcome.code, 0, "{}\n{}", outcome.stderr, outcome.stdout);
    let result: Value = serde_json::from_str(&outcome.stdout).unwrap();
    assert_eq!(result["engine"]["name"], "llama_cpp");
    let comparability = &result["engine"]["comparability"];
    assert!(
        comparability["quality_requests"].as_str().unwrap().contains("without ignore_eos"),
        "{comparability}"
    );
    let hellaswag = benchmark(&result, "hellaswag");
    assert_eq!(hellaswag["status"]["state"], "not_run", "{hellaswag}");
    let reason = hellaswag["status"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("`scoring: loglikelihood` but the engine returned no prompt"),
        "{reason}"
    );
    assert!(reason.contains("did not echo the prompt"), "{reason}");
    assert_eq!(hellaswag["quality"]["scoring"], Value::Null);
    for (name, size) in [("mmlu", 5.0), ("gsm8k", 3.0), ("truthfulqa", 3.0)] {
        let bench = benchmark(&result, name);
        assert_eq!(bench["status"]["state"], "passed", "{name}: {bench}");
        assert_eq!(bench["quality"]["scoring"], "generative", "{name}");
        let metrics = &bench["metrics"];
        assert_eq!(metrics["items"], size, "{name}");
        assert_eq!(metrics["error_rate"], 0.0, "{name}: {metrics}");
        let accuracy = metrics["accuracy"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&accuracy), "{name}: {accuracy}");
    }
    let store = Store::open(&scratch.home()).unwrap();
    let stored = store.result(result["id"].as_str().unwrap()).unwrap().unwrap();
    let items: usize = stored.benchmarks.iter().map(|b| b.items.len()).sum();
    assert_eq!(items, 11);
    let replies = stored.benchmarks.iter().flat_map(|b| &b.items);
    assert!(replies.clone().all(|item| !item.response.is_empty()), "every reply is kept");
    // The generated model never stops by itself: each reply runs to the
    // benchmark's own max_tokens, so the setting reached the engine.
    for (name, tokens) in [("mmlu", 32), ("gsm8k", 384)] {
        let bench = stored.benchmarks.iter().find(|b| b.name == name).unwrap();
        assert!(bench.requests.iter().all(|r| r.output_tokens == Some(tokens)), "{name}");
    }
}
