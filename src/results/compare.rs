//! Comparing two campaigns' results run key by run key, for `auto_compare`
//! ([`crate::campaign::compare`] picks the baseline and stores the outcome).
//!
//! For every run key that succeeded in both, each benchmark that passed in
//! both is compared metric by metric ([`classify`]): a throughput rate lower
//! than the baseline by more than the throughput threshold is a regression,
//! higher by more an improvement; a latency median higher by more than the
//! latency threshold is a regression, lower by more an improvement. A benchmark repeated (`runs: N`)
//! is compared through the mean of its passed repetitions. A run that
//! succeeded in the baseline and failed now is a regression too.
//!
//! Decisions:
//! - Only medians and rates are compared: minima, maxima, tails (p90–p99) and
//!   standard deviations swing by more than 10 % between identical runs at the
//!   request counts suites use, and would bury real regressions in noise.
//!   Memory, quality accuracy and counters are not compared.
//! - A change is computed against `|baseline|`; a baseline of 0 has no
//!   percentage and is left out with a note.
//! - Differences that make numbers less comparable are reported beside the
//!   key, not used to suppress it: another engine version or configuration,
//!   another machine, other metric definitions. A regression after an engine
//!   upgrade is exactly what users look for.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::config::Thresholds;
use crate::results::model::{BenchmarkStatus, RunResult};
use crate::store::RunStatus;

/// Which way a metric is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MetricClass {
    /// Higher is better (tokens or requests per second).
    Throughput,
    /// Lower is better (milliseconds).
    Latency,
}

impl MetricClass {
    /// As stored.
    pub fn as_str(self) -> &'static str {
        match self {
            MetricClass::Throughput => "throughput",
            MetricClass::Latency => "latency",
        }
    }

    /// Parses what [`MetricClass::as_str`] wrote.
    pub fn parse(text: &str) -> Option<MetricClass> {
        match text {
            "throughput" => Some(MetricClass::Throughput),
            "latency" => Some(MetricClass::Latency),
            _ => None,
        }
    }
}

/// What a change amounts to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Worse than the baseline beyond the threshold.
    Regression,
    /// Better than the baseline beyond the threshold.
    Improvement,
    /// Within the threshold.
    Unchanged,
}

impl Verdict {
    /// As stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Regression => "regression",
            Verdict::Improvement => "improvement",
            Verdict::Unchanged => "unchanged",
        }
    }

    /// Parses what [`Verdict::as_str`] wrote.
    pub fn parse(text: &str) -> Option<Verdict> {
        match text {
            "regression" => Some(Verdict::Regression),
            "improvement" => Some(Verdict::Improvement),
            "unchanged" => Some(Verdict::Unchanged),
            _ => None,
        }
    }
}

/// One metric of one run key, then and now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricChange {
    /// `model|engine|quant`.
    pub run_key: String,
    /// The benchmark (`throughput`, `latency`, …).
    pub benchmark: String,
    /// The metric's name.
    pub metric: String,
    /// Which way is better.
    pub class: MetricClass,
    /// The baseline's value.
    pub baseline: f64,
    /// This campaign's value.
    pub current: f64,
    /// `(current − baseline) / |baseline| × 100`.
    pub change_pct: f64,
    /// Beyond the threshold or not.
    pub verdict: Verdict,
}

/// Something about one run key a reader of the comparison should know.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyNote {
    /// `model|engine|quant`.
    pub run_key: String,
    /// What differs.
    pub note: String,
}

/// A campaign compared with its baseline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    /// The campaign compared.
    pub campaign_id: String,
    /// The campaign it was compared with.
    pub baseline_id: String,
    /// When the baseline finished.
    pub baseline_finished_at: Option<String>,
    /// When the comparison was made.
    pub created_at: String,
    /// The thresholds applied.
    pub thresholds: Thresholds,
    /// Run keys that succeeded in both.
    pub compared_runs: usize,
    /// Every compared metric, regressions first, then improvements, then the rest.
    pub changes: Vec<MetricChange>,
    /// Run keys that succeeded in the baseline and failed now.
    pub failed_now: Vec<String>,
    /// Run keys that succeeded now without a success in any earlier campaign.
    pub not_in_baseline: Vec<String>,
    /// Run keys that succeeded in the baseline and were not measured now
    /// (skipped, or no longer in the config), with why.
    #[serde(default)]
    pub not_measured_now: Vec<KeyNote>,
    /// Differences that make a key's numbers less comparable.
    pub notes: Vec<KeyNote>,
}

impl Comparison {
    /// The metric regressions.
    pub fn regressions(&self) -> impl Iterator<Item = &MetricChange> {
        self.changes.iter().filter(|change| change.verdict == Verdict::Regression)
    }

    /// The metric improvements.
    pub fn improvements(&self) -> impl Iterator<Item = &MetricChange> {
        self.changes.iter().filter(|change| change.verdict == Verdict::Improvement)
    }

    /// Metric regressions plus runs that failed now but not then.
    pub fn regression_count(&self) -> usize {
        self.regressions().count() + self.failed_now.len()
    }
}

/// The outcome of `auto_compare` for one finished campaign.
#[derive(Debug, Clone)]
pub enum Compared {
    /// No earlier finished campaign of the same name.
    NoBaseline {
        /// The campaign's name.
        name: String,
    },
    /// The comparison.
    Done(Box<Comparison>),
}

/// One side's run, as compared.
#[derive(Debug, Clone)]
pub struct Side {
    /// `model|engine|quant`.
    pub key: String,
    /// Its state.
    pub status: RunStatus,
    /// Why it was skipped or failed.
    pub reason: Option<String>,
    /// Its result when it succeeded.
    pub result: Option<RunResult>,
    /// On the baseline side: the earlier campaign the result comes from when
    /// it is not the baseline itself (the key failed or was skipped there).
    pub from: Option<String>,
}

/// The class of a metric by its name, or `None` when it is not compared:
/// output tokens per second (overall and per concurrency level `cN_`), the
/// median decode rate, and the medians of TTFT, time per output token and
/// end-to-end latency. Quantities that move with one of these (requests per
/// second at pinned output lengths, the peak over concurrency levels, the
/// first output token, the inter-token gap) are left out so one slowdown is
/// counted once per measure.
pub fn classify(metric: &str) -> Option<MetricClass> {
    let base = match metric.split_once('_') {
        Some((level, rest))
            if level.len() > 1
                && level.starts_with('c')
                && level[1..].bytes().all(|b| b.is_ascii_digit()) =>
        {
            rest
        }
        _ => metric,
    };
    match base {
        "output_tokens_per_second" | "decode_tokens_per_second_p50" => {
            Some(MetricClass::Throughput)
        }
        "ttft_ms_p50" | "tpot_ms_p50" | "e2e_ms_p50" => Some(MetricClass::Latency),
        _ => None,
    }
}

/// The verdict on a change of `change_pct` percent in a metric of `class`.
pub fn verdict(class: MetricClass, change_pct: f64, thresholds: &Thresholds) -> Verdict {
    let (worse, limit) = match class {
        MetricClass::Throughput => (-change_pct, thresholds.throughput_pct),
        MetricClass::Latency => (change_pct, thresholds.latency_pct),
    };
    if worse > limit {
        Verdict::Regression
    } else if -worse > limit {
        Verdict::Improvement
    } else {
        Verdict::Unchanged
    }
}

/// The comparison of `current` with `baseline` (ids and times left for the
/// caller). `baseline` holds, per run key, the baseline campaign's run, or
/// an earlier campaign's success of that key (`from`).
pub fn compare(baseline: &[Side], current: &[Side], thresholds: &Thresholds) -> Comparison {
    let then: BTreeMap<&str, &Side> =
        baseline.iter().map(|side| (side.key.as_str(), side)).collect();
    let mut comparison = Comparison {
        campaign_id: String::new(),
        baseline_id: String::new(),
        baseline_finished_at: None,
        created_at: String::new(),
        thresholds: *thresholds,
        compared_runs: 0,
        changes: Vec::new(),
        failed_now: Vec::new(),
        not_in_baseline: Vec::new(),
        not_measured_now: Vec::new(),
        notes: Vec::new(),
    };
    for now in current {
        let before = then.get(now.key.as_str()).filter(|side| side.result.is_some());
        match (now.status, &now.result, before) {
            (RunStatus::Success, Some(result), Some(before)) => {
                comparison.compared_runs += 1;
                if let Some(from) = &before.from {
                    comparison.notes.push(KeyNote {
                        run_key: now.key.clone(),
                        note: format!("compared with campaign {from}: no success in the baseline"),
                    });
                }
                let earlier = before.result.as_ref().expect("filtered on a result");
                compare_results(&now.key, earlier, result, thresholds, &mut comparison);
            }
            (RunStatus::Success, Some(_), None) => comparison.not_in_baseline.push(now.key.clone()),
            (RunStatus::Failed, _, Some(_)) => comparison.failed_now.push(now.key.clone()),
            (RunStatus::Skipped, _, Some(_)) => comparison.not_measured_now.push(KeyNote {
                run_key: now.key.clone(),
                note: format!("skipped now: {}", now.reason.as_deref().unwrap_or("no reason")),
            }),
            _ => {}
        }
    }
    let measured: BTreeSet<&str> = current.iter().map(|side| side.key.as_str()).collect();
    for side in baseline {
        if side.result.is_some() && !measured.contains(side.key.as_str()) {
            comparison.not_measured_now.push(KeyNote {
                run_key: side.key.clone(),
                note: "not in this campaign's config".to_owned(),
            });
        }
    }
    comparison.changes.sort_by_key(|change| match change.verdict {
        Verdict::Regression => 0,
        Verdict::Improvement => 1,
        Verdict::Unchanged => 2,
    });
    comparison
}

fn compare_results(
    key: &str,
    before: &RunResult,
    now: &RunResult,
    thresholds: &Thresholds,
    comparison: &mut Comparison,
) {
    let notes = differences(before, now);
    let then = benchmark_means(before);
    let current = benchmark_means(now);
    for (benchmark, metrics) in &then {
        let Some(now_metrics) = current.get(benchmark) else {
            comparison.notes.push(KeyNote {
                run_key: key.to_owned(),
                note: format!("benchmark `{benchmark}` has no valid measurement now"),
            });
            continue;
        };
        for (metric, &baseline) in metrics {
            let (Some(class), Some(&value)) = (classify(metric), now_metrics.get(metric)) else {
                continue;
            };
            if !baseline.is_finite() || !value.is_finite() {
                continue;
            }
            if baseline == 0.0 {
                comparison.notes.push(KeyNote {
                    run_key: key.to_owned(),
                    note: format!("{benchmark}.{metric} was 0 in the baseline: no percentage"),
                });
                continue;
            }
            let change_pct = (value - baseline) / baseline.abs() * 100.0;
            comparison.changes.push(MetricChange {
                run_key: key.to_owned(),
                benchmark: benchmark.clone(),
                metric: metric.clone(),
                class,
                baseline,
                current: value,
                change_pct,
                verdict: verdict(class, change_pct, thresholds),
            });
        }
    }
    comparison
        .notes
        .extend(notes.into_iter().map(|note| KeyNote { run_key: key.to_owned(), note }));
}

/// Each passed benchmark's metrics, averaged over its passed repetitions.
fn benchmark_means(result: &RunResult) -> BTreeMap<String, BTreeMap<String, f64>> {
    let mut sums: BTreeMap<String, BTreeMap<String, (f64, u32)>> = BTreeMap::new();
    for benchmark in &result.benchmarks {
        if benchmark.status != BenchmarkStatus::Passed {
            continue;
        }
        let metrics = sums.entry(benchmark.name.clone()).or_default();
        for (name, value) in &benchmark.metrics {
            let (sum, count) = metrics.entry(name.clone()).or_insert((0.0, 0));
            *sum += value;
            *count += 1;
        }
    }
    sums.into_iter()
        .map(|(benchmark, metrics)| {
            let means = metrics
                .into_iter()
                .map(|(name, (sum, count))| (name, sum / f64::from(count)))
                .collect();
            (benchmark, means)
        })
        .collect()
}

/// What differs between two results of one key besides the numbers.
fn differences(before: &RunResult, now: &RunResult) -> Vec<String> {
    let mut notes = Vec::new();
    if before.engine.version != now.engine.version {
        notes.push(format!(
            "engine version changed: {} → {}",
            before.engine.version, now.engine.version
        ));
    }
    if before.config_hash != now.config_hash {
        notes.push("run configuration changed (engine parameters, suite or model file)".into());
    }
    if before.hardware.fingerprint != now.hardware.fingerprint {
        notes.push(format!(
            "different machine: {} → {}",
            before.hardware.fingerprint, now.hardware.fingerprint
        ));
    }
    if before.metric_version != now.metric_version {
        notes.push(format!(
            "metric definitions changed: version {} → {}",
            before.metric_version, now.metric_version
        ));
    }
    notes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::model::{BenchmarkResult, EngineIdentity, Hardware, ModelIdentity};

    fn result(metrics: &[(&str, f64)], status: BenchmarkStatus) -> RunResult {
        let benchmark = BenchmarkResult {
            name: "throughput".into(),
            run_number: 1,
            status,
            metrics: metrics.iter().map(|(name, value)| ((*name).to_owned(), *value)).collect(),
            warmup_ms: Vec::new(),
            requests: Vec::new(),
            items: Vec::new(),
            quality: None,
        };
        RunResult {
            id: "r".into(),
            kitt_version: "0".into(),
            metric_version: 1,
            started_at: String::new(),
            finished_at: String::new(),
            suite: "quick".into(),
            config_hash: "h".into(),
            model: ModelIdentity {
                name: "m".into(),
                path: "/m.gguf".into(),
                quant: "Q4_K_M".into(),
                size_bytes: 1,
                architecture: None,
                parameters: None,
            },
            engine: EngineIdentity {
                name: "llama_cpp".into(),
                version: "b1".into(),
                binary: None,
                parameters: BTreeMap::new(),
                comparability: BTreeMap::new(),
            },
            hardware: Hardware { fingerprint: "box".into(), ..Hardware::default() },
            benchmarks: vec![benchmark],
            passed: true,
            campaign: None,
        }
    }

    fn success(key: &str, result: RunResult) -> Side {
        Side {
            key: key.into(),
            status: RunStatus::Success,
            reason: None,
            result: Some(result),
            from: None,
        }
    }

    fn not_run(key: &str, status: RunStatus, reason: &str) -> Side {
        Side { key: key.into(), status, reason: Some(reason.into()), result: None, from: None }
    }

    #[test]
    fn metrics_are_classified_by_name() {
        assert_eq!(classify("c1_output_tokens_per_second"), Some(MetricClass::Throughput));
        assert_eq!(classify("decode_tokens_per_second_p50"), Some(MetricClass::Throughput));
        assert_eq!(classify("c16_output_tokens_per_second"), Some(MetricClass::Throughput));
        assert_eq!(classify("ttft_ms_p50"), Some(MetricClass::Latency));
        assert_eq!(classify("e2e_ms_p50"), Some(MetricClass::Latency));
        for ignored in [
            "ttft_ms_p99",
            "decode_tokens_per_second_max",
            "e2e_ms_stddev",
            "requests",
            "peak_output_tokens_per_second",
            "c1_requests_per_second",
            "ttfo_ms_p50",
            "itl_ms_p50",
            "cx_output_tokens_per_second",
        ] {
            assert_eq!(classify(ignored), None, "{ignored}");
        }
    }

    #[test]
    fn thresholds_are_exclusive_and_directional() {
        let thresholds = Thresholds::default();
        assert_eq!(verdict(MetricClass::Throughput, -5.0, &thresholds), Verdict::Unchanged);
        assert_eq!(verdict(MetricClass::Throughput, -5.01, &thresholds), Verdict::Regression);
        assert_eq!(verdict(MetricClass::Throughput, 5.01, &thresholds), Verdict::Improvement);
        assert_eq!(verdict(MetricClass::Latency, 10.0, &thresholds), Verdict::Unchanged);
        assert_eq!(verdict(MetricClass::Latency, 10.01, &thresholds), Verdict::Regression);
        assert_eq!(verdict(MetricClass::Latency, -12.0, &thresholds), Verdict::Improvement);
        let strict = Thresholds { throughput_pct: 1.0, latency_pct: 2.0 };
        assert_eq!(verdict(MetricClass::Throughput, -3.0, &strict), Verdict::Regression);
        assert_eq!(verdict(MetricClass::Latency, 3.0, &strict), Verdict::Regression);
    }

    #[test]
    fn known_changes_give_known_percentages_and_verdicts() {
        let passed = || BenchmarkStatus::Passed;
        let then = [
            success(
                "a|llama_cpp|Q4_K_M",
                result(
                    &[
                        ("c1_output_tokens_per_second", 100.0),
                        ("ttft_ms_p50", 50.0),
                        ("ttft_ms_p99", 10.0),
                    ],
                    passed(),
                ),
            ),
            success("b|llama_cpp|Q8_0", result(&[("c1_output_tokens_per_second", 80.0)], passed())),
            success("c|llama_cpp|F16", result(&[("c1_output_tokens_per_second", 10.0)], passed())),
        ];
        let mut upgraded = result(
            &[("c1_output_tokens_per_second", 96.0), ("ttft_ms_p50", 60.0), ("ttft_ms_p99", 99.0)],
            passed(),
        );
        upgraded.engine.version = "b2".into();
        let now = [
            success("a|llama_cpp|Q4_K_M", upgraded),
            success(
                "b|llama_cpp|Q8_0",
                result(&[("c1_output_tokens_per_second", 100.0)], passed()),
            ),
            not_run("c|llama_cpp|F16", RunStatus::Failed, "boom"),
            success("d|llama_cpp|Q2_K", result(&[("c1_output_tokens_per_second", 1.0)], passed())),
        ];

        let comparison = compare(&then, &now, &Thresholds::default());

        assert_eq!(comparison.compared_runs, 2);
        let found: Vec<(&str, &str, f64, Verdict)> = comparison
            .changes
            .iter()
            .map(|c| {
                (
                    c.run_key.as_str(),
                    c.metric.as_str(),
                    (c.change_pct * 100.0).round() / 100.0,
                    c.verdict,
                )
            })
            .collect();
        assert_eq!(
            found,
            [
                ("a|llama_cpp|Q4_K_M", "ttft_ms_p50", 20.0, Verdict::Regression),
                ("b|llama_cpp|Q8_0", "c1_output_tokens_per_second", 25.0, Verdict::Improvement),
                ("a|llama_cpp|Q4_K_M", "c1_output_tokens_per_second", -4.0, Verdict::Unchanged),
            ]
        );
        assert_eq!(comparison.failed_now, ["c|llama_cpp|F16"]);
        assert_eq!(comparison.not_in_baseline, ["d|llama_cpp|Q2_K"]);
        assert_eq!(comparison.regression_count(), 2);
        assert_eq!(comparison.notes.len(), 1);
        assert_eq!(comparison.notes[0].note, "engine version changed: b1 → b2");
        assert!(comparison.not_measured_now.is_empty());
    }

    #[test]
    fn lost_coverage_and_earlier_baselines_are_reported() {
        let rate =
            |value| result(&[("c1_output_tokens_per_second", value)], BenchmarkStatus::Passed);
        let mut older = success("old|e|Q", rate(100.0));
        older.from = Some("c-older".into());
        let then = [
            older,
            success("skip|e|Q", rate(10.0)),
            success("gone|e|Q", rate(10.0)),
            success("zero|e|Q", rate(0.0)),
        ];
        let now = [
            success("old|e|Q", rate(50.0)),
            not_run("skip|e|Q", RunStatus::Skipped, "resource_limits: too big"),
            success("zero|e|Q", rate(5.0)),
        ];

        let comparison = compare(&then, &now, &Thresholds::default());

        assert_eq!(comparison.compared_runs, 2);
        assert_eq!(comparison.changes.len(), 1);
        assert_eq!(comparison.changes[0].verdict, Verdict::Regression);
        let notes: Vec<(&str, &str)> = comparison
            .notes
            .iter()
            .map(|note| (note.run_key.as_str(), note.note.as_str()))
            .collect();
        assert_eq!(
            notes,
            [
                ("old|e|Q", "compared with campaign c-older: no success in the baseline"),
                (
                    "zero|e|Q",
                    "throughput.c1_output_tokens_per_second was 0 in the baseline: no percentage"
                ),
            ]
        );
        let lost: Vec<(&str, &str)> = comparison
            .not_measured_now
            .iter()
            .map(|note| (note.run_key.as_str(), note.note.as_str()))
            .collect();
        assert_eq!(
            lost,
            [
                ("skip|e|Q", "skipped now: resource_limits: too big"),
                ("gone|e|Q", "not in this campaign's config"),
            ]
        );
    }

    #[test]
    fn repetitions_are_averaged_and_failed_benchmarks_are_noted() {
        let mut twice = result(&[("c1_output_tokens_per_second", 100.0)], BenchmarkStatus::Passed);
        let mut second = twice.benchmarks[0].clone();
        second.run_number = 2;
        second.metrics.insert("c1_output_tokens_per_second".into(), 80.0);
        twice.benchmarks.push(second);
        let failed = result(&[], BenchmarkStatus::Failed("every request failed".into()));
        let then = [success("k", twice.clone()), success("f", twice)];
        let now = [
            success("k", result(&[("c1_output_tokens_per_second", 81.0)], BenchmarkStatus::Passed)),
            success("f", failed),
        ];

        let comparison = compare(&then, &now, &Thresholds::default());

        assert_eq!(comparison.changes.len(), 1);
        assert_eq!(comparison.changes[0].baseline, 90.0);
        assert_eq!(comparison.changes[0].verdict, Verdict::Regression);
        assert_eq!(comparison.notes[0].note, "benchmark `throughput` has no valid measurement now");
    }
}
