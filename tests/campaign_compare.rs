//! `auto_compare`: three campaigns of one name measure a loopback
//! OpenAI-compatible server (the `openai` engine) whose token pace the test
//! sets, so their results differ by a known amount: 10 ms between tokens,
//! then 20 ms (throughput halves, latency doubles: regressions), then 10 ms
//! again (improvements). Each comparison is printed, stored (shown by
//! `campaign status`), and the regressions reach a webhook once.

mod common;
mod support;

use std::time::Duration;

use common::Scratch;
use serde_json::Value;
use support::stream::{Script, ScriptedStream};
use support::webhook::FakeWebhook;

const KEY: &str = "Served|openai|served";

fn config(server: &ScriptedStream, webhook: &FakeWebhook, thresholds: &str) -> String {
    format!(
        "campaign_name: nightly-compare\n\
         models:\n  - name: Served\n\
         engines:\n  - name: openai\n    suite: quick\n    config:\n      base_url: {}/v1\n      \
         model: served-model\n\
         auto_compare: true\n{thresholds}\
         notifications:\n  webhook_url: {}\n  notify_on: [regression]\n",
        server.url(),
        webhook.url()
    )
}

fn paced(gap_ms: u64) -> Script {
    Script::chat("served-model", &["tok"; 16], Duration::from_millis(gap_ms))
}

fn run_json(scratch: &Scratch, file: &str) -> Value {
    let outcome = scratch.run(scratch.kitt().args(["--json", "campaign", "run", file]));
    assert_eq!(outcome.code, 0, "{outcome:?}");
    serde_json::from_str(&outcome.stdout).unwrap()
}

fn change<'a>(comparison: &'a Value, metric: &str) -> &'a Value {
    comparison["changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|change| change["metric"] == metric && change["run_key"] == KEY)
        .unwrap_or_else(|| panic!("no {metric} in {comparison:#}"))
}

#[test]
fn a_slower_campaign_is_a_regression_and_a_faster_one_an_improvement() {
    let scratch = Scratch::new();
    let server = ScriptedStream::start(paced(10));
    server.serve_models(&["served-model"]);
    let webhook = FakeWebhook::start();
    let file = scratch.write("c.yaml", &config(&server, &webhook, ""));
    let file = file.to_str().unwrap();

    // The first campaign has nothing to compare with.
    let first = run_json(&scratch, file);
    assert_eq!(first["comparison"]["baseline_id"], Value::Null, "{first:#}");
    let first_id = first["campaign_id"].as_str().unwrap().to_owned();
    let status = scratch.run(scratch.kitt().args(["campaign", "status", &first_id]));
    assert!(
        status.stdout.contains("Compare:  nothing to compare with (no earlier finished campaign"),
        "{}",
        status.stdout
    );

    // Twice as slow: throughput -50 %, latency +100 %.
    server.set_script(paced(20));
    let second = run_json(&scratch, file);
    let second_id = second["campaign_id"].as_str().unwrap().to_owned();
    let comparison = &second["comparison"];
    assert_eq!(comparison["baseline_id"], first_id.as_str(), "{comparison:#}");
    assert_eq!(comparison["compared_runs"], 1);
    assert_eq!(comparison["thresholds"]["throughput_pct"], 5.0);
    assert_eq!(comparison["thresholds"]["latency_pct"], 10.0);
    let rate = change(comparison, "c1_output_tokens_per_second");
    let pct = rate["change_pct"].as_f64().unwrap();
    assert!((-75.0..=-30.0).contains(&pct), "throughput should about halve: {rate}");
    assert_eq!(rate["verdict"], "regression");
    assert_eq!(rate["class"], "throughput");
    let tpot = change(comparison, "tpot_ms_p50");
    let pct = tpot["change_pct"].as_f64().unwrap();
    assert!((50.0..=200.0).contains(&pct), "time per token should about double: {tpot}");
    assert_eq!(tpot["verdict"], "regression");
    assert_eq!(tpot["class"], "latency");
    assert!(
        comparison["changes"].as_array().unwrap().iter().all(|c| {
            let metric = c["metric"].as_str().unwrap();
            [
                "c1_output_tokens_per_second",
                "decode_tokens_per_second_p50",
                "ttft_ms_p50",
                "tpot_ms_p50",
                "e2e_ms_p50",
            ]
            .contains(&metric)
        }),
        "only rates and medians are compared: {comparison:#}"
    );
    let regressions = comparison["regressions"].as_u64().unwrap();
    assert!(regressions >= 2, "{comparison:#}");

    // Stored: `campaign status` shows the same comparison.
    let status = status_json(&scratch, &second_id);
    assert_eq!(&status["comparison"], comparison, "the stored comparison is the printed one");
    let text = scratch.run(scratch.kitt().args(["campaign", "status", &second_id]));
    assert!(
        text.stdout.contains(&format!("Compare:  Compared with campaign {first_id}")),
        "{}",
        text.stdout
    );
    assert!(text.stdout.contains("c1_output_tokens_per_second"), "{}", text.stdout);

    // The regression notification, once.
    let deliveries = webhook.deliveries();
    assert_eq!(deliveries.len(), 1, "{deliveries:?}");
    let title = deliveries[0].json["title"].as_str().unwrap();
    assert_eq!(title, format!("kitt: {regressions} regression(s) in campaign nightly-compare"));
    let body = deliveries[0].json["body"].as_str().unwrap();
    assert!(body.contains(&second_id) && body.contains(&first_id), "{body}");
    assert!(body.contains(&format!("{KEY} throughput.c1_output_tokens_per_second")), "{body}");

    // Back to the first pace: improvements against the second campaign (the
    // newest finished one), no regression, no notification; printed as text.
    server.set_script(paced(10));
    let third = scratch.run(scratch.kitt().args(["campaign", "run", file]));
    assert_eq!(third.code, 0, "{third:?}");
    assert!(
        third.stdout.contains(&format!("Compared with campaign {second_id}")),
        "{}",
        third.stdout
    );
    assert!(third.stdout.contains("0 regression(s)"), "{}", third.stdout);
    assert!(third.stdout.contains("improvement"), "{}", third.stdout);
    assert_eq!(webhook.deliveries().len(), 1, "no notification without a regression");
}

#[test]
fn thresholds_are_configurable_and_a_failed_run_is_a_regression() {
    let scratch = Scratch::new();
    let server = ScriptedStream::start(paced(10));
    server.serve_models(&["served-model"]);
    let webhook = FakeWebhook::start();
    // Thresholds so wide that halving the speed stays within them.
    let wide = "regression_thresholds:\n  throughput_pct: 90\n  latency_pct: 500\n";
    let file = scratch.write("c.yaml", &config(&server, &webhook, wide));
    let file = file.to_str().unwrap();

    let dry = scratch.run(scratch.kitt().args(["campaign", "run", file, "--dry-run"]));
    assert!(
        dry.stdout.contains("Auto-compare: on (regression beyond 90 % throughput, 500 % latency)"),
        "{}",
        dry.stdout
    );
    run_json(&scratch, file);
    server.set_script(paced(20));
    let second = run_json(&scratch, file);
    let second_id = second["campaign_id"].as_str().unwrap().to_owned();
    let comparison = &second["comparison"];
    assert_eq!(comparison["thresholds"]["throughput_pct"], 90.0);
    assert_eq!(comparison["regressions"], 0, "{comparison:#}");
    assert_eq!(change(comparison, "c1_output_tokens_per_second")["verdict"], "unchanged");
    assert!(webhook.deliveries().is_empty());

    // The server now fails every request: the run fails, which is a
    // regression against the baseline where it succeeded.
    server.set_script(Script::error(500, "{\"error\":\"boom\"}"));
    let outcome = scratch.run(scratch.kitt().args(["--json", "campaign", "run", file]));
    assert_eq!(outcome.code, 1, "{outcome:?}");
    let third: Value = serde_json::from_str(&outcome.stdout).unwrap();
    assert_eq!(third["comparison"]["failed_now"], serde_json::json!([KEY]));
    assert_eq!(third["comparison"]["regressions"], 1);
    let deliveries = webhook.deliveries();
    assert_eq!(deliveries.len(), 1, "{deliveries:?}");
    let body = deliveries[0].json["body"].as_str().unwrap();
    assert!(body.contains(&format!("{KEY}: failed now, succeeded in the baseline")), "{body}");

    // The failed campaign is the newest finished one, but holds no success of
    // the key: the next campaign is compared with the earlier success.
    server.set_script(paced(20));
    let fourth = run_json(&scratch, file);
    let comparison = &fourth["comparison"];
    assert_eq!(comparison["baseline_id"], third["campaign_id"], "{comparison:#}");
    assert_eq!(comparison["compared_runs"], 1, "{comparison:#}");
    assert_eq!(comparison["not_in_baseline"], serde_json::json!([]));
    let note = format!("compared with campaign {second_id}: no success in the baseline");
    assert_eq!(comparison["notes"][0]["note"], note.as_str(), "{comparison:#}");

    // Resuming the second campaign, which has nothing left to do, neither
    // compares it again (with a newer campaign) nor notifies again.
    let before = status_json(&scratch, &second_id);
    let resumed = scratch.run(scratch.kitt().args([
        "--json",
        "campaign",
        "run",
        file,
        "--resume",
        "--campaign-id",
        &second_id,
    ]));
    assert_eq!(resumed.code, 0, "{resumed:?}");
    let resumed: Value = serde_json::from_str(&resumed.stdout).unwrap();
    assert_eq!(resumed["comparison"], Value::Null, "{resumed:#}");
    assert_eq!(status_json(&scratch, &second_id)["comparison"], before["comparison"]);
    assert_eq!(webhook.deliveries().len(), 1);
}

fn status_json(scratch: &Scratch, id: &str) -> Value {
    let status = scratch.run(scratch.kitt().args(["--json", "campaign", "status", id]));
    assert_eq!(status.code, 0, "{status:?}");
    serde_json::from_str(&status.stdout).unwrap()
}

#[test]
fn a_threshold_that_is_not_a_percentage_is_a_config_error() {
    let scratch = Scratch::new();
    let yaml = "campaign_name: c\nmodels:\n  - name: M\n    gguf_repo: org/M-GGUF\n\
                engines:\n  - name: llama_cpp\nauto_compare: true\n\
                regression_thresholds:\n  throughput_pct: 0\n  latency_pct: 10\n";
    scratch.write("bad.yaml", yaml);
    let outcome = scratch.dry_run("bad.yaml", &[]);
    assert_eq!(outcome.code, 2, "{outcome:?}");
    assert!(outcome.stderr.contains("bad.yaml:9"), "{}", outcome.stderr);
    assert!(outcome.stderr.contains("regression_thresholds.throughput_pct"), "{}", outcome.stderr);
    assert!(outcome.stderr.contains("above 0 and below 100, got 0"), "{}", outcome.stderr);

    // A rate cannot fall by 100 %: such a threshold would switch regressions off.
    let hundred = yaml.replace("throughput_pct: 0", "throughput_pct: 100");
    scratch.write("hundred.yaml", &hundred);
    let outcome = scratch.dry_run("hundred.yaml", &[]);
    assert_eq!(outcome.code, 2, "{outcome:?}");
    assert!(outcome.stderr.contains("below 100, got 100"), "{}", outcome.stderr);
    let latency = yaml
        .replace("throughput_pct: 0", "throughput_pct: 5")
        .replace("latency_pct: 10", "latency_pct: -5");
    scratch.write("latency.yaml", &latency);
    let outcome = scratch.dry_run("latency.yaml", &[]);
    assert_eq!(outcome.code, 2, "{outcome:?}");
    assert!(outcome.stderr.contains("regression_thresholds.latency_pct"), "{}", outcome.stderr);
    assert!(
        outcome.stderr.contains("`latency_pct: 10`"),
        "the hint names the key: {}",
        outcome.stderr
    );

    let unknown = "campaign_name: c\nmodels:\n  - name: M\n    gguf_repo: org/M-GGUF\n\
                   engines:\n  - name: llama_cpp\nregression_thresholds:\n  throughput: 5\n";
    scratch.write("unknown.yaml", unknown);
    let outcome = scratch.dry_run("unknown.yaml", &[]);
    assert_eq!(outcome.code, 2, "{outcome:?}");
    assert!(outcome.stderr.contains("throughput"), "{}", outcome.stderr);
}
