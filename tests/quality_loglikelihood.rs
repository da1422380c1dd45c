//! Log-likelihood scoring through `kitt run -e openai`: a scripted server
//! answers `/v1/completions` with `echo` as vLLM does (the prompt's tokens,
//! their log-probabilities, a `null` for the first, one generated token, the
//! usage), favouring one option of each item. Which option wins under the sum
//! and under the per-character mean is worked out below by hand, so the
//! accuracy arithmetic is checked exactly; options whose requests fail or are
//! answered without echo leave their item unanswered. A server without prompt
//! log-probabilities makes `loglikelihood` benchmarks "not run" and `auto`
//! ones generative.

mod common;
mod support;

use std::time::Duration;

use common::{Outcome, Scratch};
use kitt::store::Store;
use serde_json::{Value, json};
use support::datasets::write_datasets;
use support::stream::{Script, ScriptedStream};

/// How the server treats the options of an item, found by its tag.
#[derive(Clone, Copy)]
enum Likely {
    /// This option's tokens cost 0.2 nats per character, every other option's 0.5.
    Favour(&'static str),
    /// Answered as llama-server does: the generated token only, no echo.
    NoEcho,
    /// HTTP 500.
    Fail,
}

const PLAN: &[(&str, Likely)] = &[
    ("[m1]", Likely::Favour("B")), // right
    ("[m2]", Likely::Favour("B")), // right is A
    ("[m3]", Likely::Favour("D")), // right
    ("[m4]", Likely::NoEcho),
    ("[m5]", Likely::Fail),
    ("[t1]", Likely::Favour("Nothing happens")), // right, but " Rain" has the higher sum
    ("[t2]", Likely::Favour("No")),              // right
    ("[t3]", Likely::Favour("Never")),           // wrong
    ("[h1]", Likely::Favour("picks up the ball.")), // right by mean, " sings." by sum
    ("[h2]", Likely::Favour("eats it.")),        // wrong either way
];

/// Splits text into tokens the way a word-level tokenizer might: each token
/// is a word with the white space before it.
fn tokens(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut previous_space = false;
    for c in text.chars() {
        let space = c.is_whitespace();
        if out.is_empty() || (space && !previous_space) {
            out.push(String::new());
        }
        out.last_mut().unwrap().push(c);
        previous_space = space;
    }
    out
}

/// The option at the end of a scored prompt, if the prompt is an item's.
fn option_of(prompt: &str, tag: &str) -> String {
    let line = prompt.lines().last().unwrap_or_default();
    if tag.starts_with("[m") {
        return line.trim_start_matches("Answer:").trim().to_owned();
    }
    if tag.starts_with("[t") {
        return line.trim_start_matches("A:").trim().to_owned();
    }
    let endings = ["picks up the ball.", "flies away.", "sings.", "reads a book.", "eats it."];
    let more = ["rinses the plate.", "paints it.", "throws it."];
    let found = endings.iter().chain(&more).find(|ending| prompt.ends_with(*ending));
    found.map(|ending| (*ending).to_owned()).unwrap_or_default()
}

/// A vLLM-shaped answer to `echo: true, logprobs: 1, max_tokens: 1`.
fn likelihoods(body: &Value) -> Script {
    let prompt = body["prompt"].as_str().unwrap_or_default();
    assert_eq!(
        (&body["echo"], &body["max_tokens"], &body["stream"]),
        (&json!(true), &json!(1), &json!(false))
    );
    let planned = PLAN.iter().find(|(tag, _)| prompt.contains(tag));
    let mut option = None;
    match planned {
        Some((_, Likely::Fail)) => return Script::error(500, "{\"error\":\"boom\"}"),
        Some((_, Likely::NoEcho)) => {
            let answer = json!({
                "choices": [{"text": ",", "index": 0, "finish_reason": "length",
                    "logprobs": {"content": [{"id": 11, "token": ",", "bytes": [44],
                        "logprob": -1.0, "top_logprobs": []}]}}],
                "model": "m", "object": "text_completion",
                "usage": {"completion_tokens": 1, "prompt_tokens": 9, "total_tokens": 10}
            });
            return Script::error(200, &answer.to_string());
        }
        Some((tag, Likely::Favour(favoured))) => option = Some((option_of(prompt, tag), *favoured)),
        None => {}
    }

    // "<s>" first, as a Llama tokenizer's BOS; its log-probability is null.
    let mut texts = vec!["<s>".to_owned()];
    texts.extend(tokens(prompt));
    let option_chars = option.as_ref().map_or(0, |(text, _)| text.chars().count() + 1);
    let rate = match &option {
        Some((text, favoured)) if text == favoured => 0.2,
        _ => 0.5,
    };
    let mut logprobs = vec![Value::Null];
    let mut from_end = texts[1..].iter().map(|t| t.chars().count()).sum::<usize>();
    for text in &texts[1..] {
        let chars = text.chars().count();
        let in_option = from_end <= option_chars;
        from_end -= chars;
        logprobs.push(json!(if in_option { -rate * chars as f64 } else { -1.0 }));
    }
    let prompt_tokens = texts.len();
    texts.push(" the".to_owned());
    logprobs.push(json!(-0.5));
    let mut offsets = Vec::new();
    let mut offset = 0;
    for text in &texts {
        offsets.push(offset);
        offset += text.chars().count();
    }
    let answer = json!({
        "id": "cmpl-5f1e", "object": "text_completion", "created": 1796421163, "model": "m",
        "choices": [{
            "index": 0, "text": format!("{prompt} the"), "finish_reason": "length",
            "stop_reason": null, "prompt_logprobs": null,
            "logprobs": {"text_offset": offsets, "token_logprobs": logprobs, "tokens": texts,
                         "top_logprobs": Value::Null}
        }],
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens + 1,
                  "completion_tokens": 1}
    });
    Script::error(200, &answer.to_string())
}

/// Chat answers for GSM8K, which is always generative: `#### 18` to all.
fn chat(_body: &Value) -> Script {
    Script::chat("m", &["9 + 9 = 18\n", "#### 18"], Duration::ZERO)
}

fn server(echo: bool) -> ScriptedStream {
    let server = ScriptedStream::start(Script::error(500, "{}"));
    server.serve_models(&["m"]);
    server.respond_with(move |body| match (body.get("messages"), echo) {
        (Some(_), _) => chat(body),
        (None, true) => likelihoods(body),
        (None, false) => Script::error(400, "{\"error\":\"echo is not supported\"}"),
    });
    server
}

fn run(scratch: &Scratch, server: &ScriptedStream, suite: &str) -> (Outcome, Value) {
    let suite = scratch.write("ll.yaml", suite).display().to_string();
    let base_url = format!("base_url={}/v1", server.url());
    let mut command = scratch.kitt();
    command.args(["--json", "run", "-m", "m", "-e", "openai", "--engine-config", &base_url, "-s"]);
    command.arg(&suite);
    let outcome = scratch.run(&mut command);
    let result = serde_json::from_str(&outcome.stdout).unwrap_or(Value::Null);
    (outcome, result)
}

fn benchmark<'a>(result: &'a Value, name: &str) -> &'a Value {
    let benchmarks = result["benchmarks"].as_array().unwrap();
    benchmarks.iter().find(|b| b["name"] == name).unwrap_or_else(|| panic!("no {name}"))
}

#[test]
fn options_are_scored_by_log_likelihood_with_exact_accuracy() {
    let scratch = Scratch::new();
    write_datasets(&scratch.home());
    let server = server(true);

    let suite = "name: ll\nversion: 1\ntests: [mmlu, gsm8k, truthfulqa, hellaswag]\n";
    let (outcome, result) = run(&scratch, &server, suite);

    assert_eq!(outcome.code, 0, "{}\n{}", outcome.stderr, outcome.stdout);
    // (name, items, correct, unanswered, accuracy_sum, accuracy_norm, error rate)
    let expected = [
        ("mmlu", 5, 2, 2, 2.0 / 5.0, 2.0 / 5.0, 8.0 / 20.0),
        ("truthfulqa", 3, 1, 0, 1.0 / 3.0, 2.0 / 3.0, 0.0),
        ("hellaswag", 2, 1, 0, 0.0, 1.0 / 2.0, 0.0),
    ];
    for (name, items, correct, unanswered, by_sum, by_mean, error_rate) in expected {
        let bench = benchmark(&result, name);
        assert_eq!(bench["status"]["state"], "passed", "{name}: {bench}");
        assert_eq!(bench["quality"]["scoring"], "loglikelihood", "{name}");
        let metrics = &bench["metrics"];
        let p = f64::from(correct) / f64::from(items);
        assert_eq!(metrics["items"], f64::from(items), "{name}");
        assert_eq!(metrics["correct"], f64::from(correct), "{name}");
        assert_eq!(metrics["unanswered"], f64::from(unanswered), "{name}");
        assert_eq!(metrics["accuracy"], p, "{name}");
        assert_eq!(metrics["accuracy_stderr"], (p * (1.0 - p) / f64::from(items)).sqrt(), "{name}");
        assert_eq!(
            (metrics["accuracy_sum"].as_f64(), metrics["accuracy_norm"].as_f64()),
            (Some(by_sum), Some(by_mean)),
            "{name}"
        );
        assert_eq!(metrics["error_rate"], error_rate, "{name}");
    }
    let gsm8k = benchmark(&result, "gsm8k");
    assert_eq!(gsm8k["quality"]["scoring"], "generative");
    assert_eq!(gsm8k["metrics"]["correct"], 1.0, "only [g2]'s answer is 18");

    // One probe, then one request per option: 5×4 + 3 + 4 + 5 + 3 + 2×4.
    assert_eq!(server.requests("/v1/completions"), 1 + 20 + 12 + 8);
    assert_eq!(server.requests("/v1/chat/completions"), 3);

    let store = Store::open(&scratch.home()).unwrap();
    let stored = store.result(result["id"].as_str().unwrap()).unwrap().unwrap();
    let hellaswag = stored.benchmarks.iter().find(|b| b.name == "hellaswag").unwrap();
    let first = &hellaswag.items[0];
    assert_eq!(
        (first.expected.as_str(), first.extracted.as_deref(), first.correct),
        ("A", Some("A"), true)
    );
    let sums: Vec<f64> = first.choices.iter().map(|c| c.loglikelihood.unwrap()).collect();
    let wanted = [-0.2 * 19.0, -0.5 * 12.0, -0.5 * 7.0, -0.5 * 14.0];
    for (sum, wanted) in sums.iter().zip(wanted) {
        assert!((sum - wanted).abs() < 1e-9, "{sums:?}");
    }
    let lengths: Vec<(Option<u32>, usize)> =
        first.choices.iter().map(|c| (c.tokens, c.chars)).collect();
    assert_eq!(lengths, [(Some(4), 19), (Some(2), 12), (Some(1), 7), (Some(3), 14)]);
    let mmlu = stored.benchmarks.iter().find(|b| b.name == "mmlu").unwrap();
    let unanswered: Vec<(usize, Option<&str>)> =
        mmlu.items.iter().map(|i| (i.index, i.extracted.as_deref())).collect();
    assert_eq!(unanswered, [(0, Some("B")), (1, Some("B")), (2, Some("D")), (3, None), (4, None)]);
    assert!(mmlu.items[3].choices.iter().all(|c| c.loglikelihood.is_none()));
    let failure = mmlu.requests[12].failure.as_ref().unwrap();
    assert!(failure.message.contains("did not echo the prompt"), "{}", failure.message);

    let run_dir = std::path::Path::new(result["run_dir"].as_str().unwrap());
    let lines = std::fs::read_to_string(run_dir.join("quality_items.jsonl")).unwrap();
    let line: Value = serde_json::from_str(lines.lines().next().unwrap()).unwrap();
    assert_eq!(line["choices"].as_array().map(Vec::len), Some(4), "{line}");
    let summary = std::fs::read_to_string(run_dir.join("summary.md")).unwrap();
    assert!(
        summary.contains("Scoring: loglikelihood (`scoring: auto` and the engine"),
        "{summary}"
    );
}

#[test]
fn without_prompt_logprobs_loglikelihood_is_not_run_and_auto_generates() {
    let scratch = Scratch::new();
    write_datasets(&scratch.home());
    let server = server(false);

    let suite = "name: ll\nversion: 1\ntests: [mmlu, hellaswag]\n\
                 test_overrides:\n  mmlu:\n    scoring: loglikelihood\n";
    let (outcome, result) = run(&scratch, &server, suite);

    assert_eq!(outcome.code, 0, "{}\n{}", outcome.stderr, outcome.stdout);
    let mmlu = benchmark(&result, "mmlu");
    assert_eq!(mmlu["status"]["state"], "not_run", "{mmlu}");
    let reason = mmlu["status"]["reason"].as_str().unwrap();
    let expected = "`scoring: loglikelihood` but the engine returned no prompt log-probabilities \
                    (http: HTTP 400 Bad Request: {\"error\":\"echo is not supported\"})";
    assert_eq!(reason, expected);
    let hellaswag = benchmark(&result, "hellaswag");
    assert_eq!(hellaswag["status"]["state"], "passed");
    assert_eq!(hellaswag["quality"]["scoring"], "generative");
    assert_eq!(server.requests("/v1/completions"), 1, "the engine is asked once per run");
    assert_eq!(server.requests("/v1/chat/completions"), 2);
}
