//! The benchmarks of a suite, each a composition of request phases over one
//! [`Target`]: throughput over concurrency levels, latency, memory by prompt
//! and output length, and warm-up behaviour; quality benchmarks are handed to
//! [`super::quality`]. Statistics come only from successful requests;
//! failures are counted in the error rate.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::stream;

use crate::measure::{ChatMessage, Protocol, RequestRecord, StreamClient, StreamRequest, Summary};
use crate::results::model::{BenchmarkResult, BenchmarkStatus};
use crate::suite::{Suite, TestKind, TestPlan};

use super::memory::MemorySampler;

/// The served model and how to ask it.
pub struct Target {
    /// Client for the engine's base URL.
    pub client: StreamClient,
    /// Model id for requests.
    pub model: String,
    /// Engine-specific request fields (cache defeat, output pinning).
    pub extras: serde_json::Map<String, serde_json::Value>,
    /// The streaming API the engine speaks.
    pub protocol: Protocol,
    /// Prefix requests with a unique marker, for engines whose prompt cache kitt cannot switch off.
    pub unique_prefix: bool,
    /// What to sample memory from.
    pub memory: MemorySampler,
    /// Sampling temperature.
    pub temperature: f64,
    counter: AtomicU64,
    /// Whether the engine returns prompt log-probabilities, asked once per run.
    pub(super) prompt_logprobs: tokio::sync::OnceCell<Result<(), String>>,
}

impl Target {
    /// A target for a running engine.
    pub fn new(
        client: StreamClient,
        model: String,
        memory: MemorySampler,
        temperature: f64,
    ) -> Self {
        Target {
            client,
            model,
            extras: serde_json::Map::new(),
            protocol: Protocol::OpenAi,
            unique_prefix: false,
            memory,
            temperature,
            counter: AtomicU64::new(0),
            prompt_logprobs: tokio::sync::OnceCell::new(),
        }
    }

    fn request(&self, prompt: &str, max_tokens: u32) -> StreamRequest {
        let text = if self.unique_prefix {
            let n = self.counter.fetch_add(1, Ordering::Relaxed);
            format!("[request {n}] {prompt}")
        } else {
            prompt.to_owned()
        };
        let mut request =
            StreamRequest::chat(&self.model, vec![ChatMessage::user(text)], max_tokens);
        request.temperature = Some(self.temperature);
        request.extra = self.extras.clone();
        request.protocol = self.protocol;
        // The engine asked for `min_tokens`: it pins output to this request's own length.
        if let Some(min_tokens) = request.extra.get_mut("min_tokens") {
            *min_tokens = max_tokens.into();
        }
        request.expected_model = Some(self.model.clone());
        request
    }

    async fn send(&self, prompt: &str, max_tokens: u32) -> RequestRecord {
        self.client.send(&self.request(prompt, max_tokens)).await
    }
}

/// Warm-up requests; their latencies in milliseconds (failures left out).
pub async fn warm_up(target: &Target, suite: &Suite) -> Vec<f64> {
    let mut latencies = Vec::new();
    for _ in 0..suite.warmup_requests {
        let started = Instant::now();
        let record = target.send("Say hello.", suite.warmup_max_tokens).await;
        if record.is_success() {
            latencies.push(started.elapsed().as_secs_f64() * 1000.0);
        }
    }
    latencies
}

/// Runs one repetition of a benchmark.
pub async fn run(target: &Target, test: &TestPlan, run_number: u32) -> BenchmarkResult {
    let (metrics, requests) = match test.kind {
        TestKind::Throughput => throughput(target, test).await,
        TestKind::Latency => latency(target, test).await,
        TestKind::MemoryUsage => memory_usage(target, test).await,
        TestKind::WarmupAnalysis => warmup_analysis(target, test).await,
        TestKind::Quality => return super::quality::run(target, test, run_number).await,
    };
    let status = status_of(&requests);
    BenchmarkResult {
        name: test.name.clone(),
        run_number,
        status,
        metrics,
        warmup_ms: Vec::new(),
        requests,
        items: Vec::new(),
        quality: None,
    }
}

/// Passed when at least one request succeeded; failed with the first reason otherwise.
pub(super) fn status_of(requests: &[RequestRecord]) -> BenchmarkStatus {
    if requests.iter().any(RequestRecord::is_success) {
        return BenchmarkStatus::Passed;
    }
    let first = requests.iter().find_map(|record| record.failure.as_ref());
    let reason = first.map_or_else(
        || "no request was sent".to_owned(),
        |failure| {
            format!("every request failed; first: {} ({})", failure.message, failure.class.as_str())
        },
    );
    BenchmarkStatus::Failed(reason)
}

type Measured = (BTreeMap<String, f64>, Vec<RequestRecord>);

async fn throughput(target: &Target, test: &TestPlan) -> Measured {
    let mut metrics = BTreeMap::new();
    let mut all = Vec::new();
    let mut best = (0.0_f64, 0u32);
    for &level in &test.concurrency {
        let started = Instant::now();
        let prompts = (0..test.iterations).map(|i| prompt(test, i));
        let records: Vec<RequestRecord> = stream::iter(prompts)
            .map(|prompt| target.send(prompt, test.max_tokens))
            .buffered(level.max(1) as usize)
            .collect()
            .await;
        let wall = started.elapsed().as_secs_f64();
        let tokens: u64 = successes(&records).filter_map(|r| r.output_tokens).sum();
        let rate = if wall > 0.0 { tokens as f64 / wall } else { 0.0 };
        let prefix = format!("c{level}_");
        metrics.insert(format!("{prefix}output_tokens_per_second"), rate);
        metrics.insert(
            format!("{prefix}requests_per_second"),
            successes(&records).count() as f64 / wall,
        );
        metrics.insert(format!("{prefix}error_rate"), error_rate(&records));
        if rate > best.0 {
            best = (rate, level);
        }
        all.extend(records);
    }
    metrics.insert("peak_output_tokens_per_second".into(), best.0);
    metrics.insert("best_concurrency".into(), f64::from(best.1));
    latency_metrics(&all, &mut metrics);
    (metrics, all)
}

async fn latency(target: &Target, test: &TestPlan) -> Measured {
    let mut records = Vec::new();
    for i in 0..test.iterations {
        records.push(target.send(prompt(test, i), test.max_tokens).await);
    }
    let mut metrics = BTreeMap::new();
    latency_metrics(&records, &mut metrics);
    (metrics, records)
}

async fn memory_usage(target: &Target, test: &TestPlan) -> Measured {
    let mut metrics = BTreeMap::new();
    let mut records = Vec::new();
    let mut peaks = Vec::new();
    let interval = Duration::from_millis(test.sample_interval_ms.max(10));
    let lengths = if test.output_lengths.is_empty() {
        vec![test.max_tokens]
    } else {
        test.output_lengths.clone()
    };
    for (index, prompt) in test.prompts.iter().enumerate() {
        for &length in &lengths {
            let (record, samples) =
                target.memory.during(interval, target.send(prompt, length)).await;
            if let Some(peak) = samples.iter().copied().max().filter(|_| record.is_success()) {
                peaks.push(peak);
                let key = format!("prompt{}_out{length}_peak_bytes", index + 1);
                metrics.insert(key, peak as f64);
            }
            records.push(record);
        }
    }
    if let Some(summary) = Summary::of_u64(&peaks) {
        metrics.insert("peak_memory_bytes".into(), summary.max);
        metrics.insert("mean_peak_memory_bytes".into(), summary.mean);
        metrics.insert("memory_range_bytes".into(), summary.max - summary.min);
    }
    metrics.insert("error_rate".into(), error_rate(&records));
    (metrics, records)
}

async fn warmup_analysis(target: &Target, test: &TestPlan) -> Measured {
    let mut records = Vec::new();
    for i in 0..test.iterations {
        records.push(target.send(prompt(test, i), test.max_tokens).await);
    }
    // A failed request has no latency: it stays in place (NaN) so positions keep their meaning.
    let latencies: Vec<f64> = records
        .iter()
        .map(|r| if r.is_success() { r.e2e_ns.map_or(f64::NAN, ms) } else { f64::NAN })
        .collect();
    let mut metrics = BTreeMap::new();
    if let Some((first, rest)) = latencies.split_first().filter(|(first, _)| first.is_finite()) {
        metrics.insert("first_latency_ms".into(), *first);
        if let Some(rest) = Summary::of(rest) {
            metrics.insert("subsequent_mean_latency_ms".into(), rest.mean);
            metrics
                .insert("first_request_penalty_percent".into(), (first / rest.mean - 1.0) * 100.0);
        }
    }
    if let Some(stable) = stabilization(&latencies) {
        metrics.insert("stabilization_request".into(), stable as f64);
    }
    metrics.insert("error_rate".into(), error_rate(&records));
    (metrics, records)
}

/// The first request (1-based) from which three consecutive latencies lie
/// within 10 % of their mean.
fn stabilization(latencies: &[f64]) -> Option<usize> {
    latencies
        .windows(3)
        .position(|window| {
            let mean = window.iter().sum::<f64>() / 3.0;
            window.iter().all(|value| value.is_finite() && (value - mean).abs() <= 0.1 * mean)
        })
        .map(|index| index + 1)
}

/// TTFT, TTFO, TPOT, ITL and E2E distributions, output rates and the error rate.
fn latency_metrics(records: &[RequestRecord], metrics: &mut BTreeMap<String, f64>) {
    let ok: Vec<&RequestRecord> = successes(records).collect();
    let gather = |pick: fn(&RequestRecord) -> Option<f64>| {
        ok.iter().filter_map(|r| pick(r)).collect::<Vec<_>>()
    };
    let series: [(&str, Vec<f64>); 4] = [
        ("ttft_ms", gather(|r| r.ttft_ns.map(ms))),
        ("ttfo_ms", gather(|r| r.ttfo_ns.map(ms))),
        ("tpot_ms", gather(|r| r.tpot_ns.map(|ns| ns / 1e6))),
        ("e2e_ms", gather(|r| r.e2e_ns.map(ms))),
    ];
    for (name, samples) in series {
        insert_summary(metrics, name, &samples);
    }
    let gaps: Vec<f64> = ok.iter().flat_map(|r| r.itl_ns.iter().map(|&ns| ms(ns))).collect();
    insert_summary(metrics, "itl_ms", &gaps);
    let decode: Vec<f64> =
        ok.iter().filter_map(|r| r.tpot_ns.filter(|ns| *ns > 0.0).map(|ns| 1e9 / ns)).collect();
    insert_summary(metrics, "decode_tokens_per_second", &decode);
    let tokens: u64 = ok.iter().filter_map(|r| r.output_tokens).sum();
    metrics.insert("output_tokens_total".into(), tokens as f64);
    metrics.insert("requests".into(), records.len() as f64);
    metrics.insert("error_rate".into(), error_rate(records));
}

fn insert_summary(metrics: &mut BTreeMap<String, f64>, name: &str, samples: &[f64]) {
    let Some(summary) = Summary::of(samples) else { return };
    for (stat, value) in [
        ("mean", summary.mean),
        ("stddev", summary.stddev),
        ("min", summary.min),
        ("max", summary.max),
        ("p50", summary.p50),
        ("p90", summary.p90),
        ("p95", summary.p95),
        ("p99", summary.p99),
    ] {
        metrics.insert(format!("{name}_{stat}"), value);
    }
}

fn successes(records: &[RequestRecord]) -> impl Iterator<Item = &RequestRecord> {
    records.iter().filter(|record| record.is_success())
}

pub(super) fn error_rate(records: &[RequestRecord]) -> f64 {
    if records.is_empty() {
        return 0.0;
    }
    records.iter().filter(|r| !r.is_success()).count() as f64 / records.len() as f64
}

fn prompt(test: &TestPlan, index: u32) -> &str {
    let prompts = &test.prompts;
    if prompts.is_empty() {
        return "Write a paragraph about the sea.";
    }
    &prompts[index as usize % prompts.len()]
}

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stabilization_finds_the_first_steady_window() {
        assert_eq!(stabilization(&[300.0, 101.0, 100.0, 99.0, 100.0]), Some(2));
        assert_eq!(stabilization(&[300.0, 200.0, 100.0, 100.0, 100.0]), Some(3));
        assert_eq!(stabilization(&[1.0, 9.0, 1.0]), None);
    }

    #[test]
    fn all_failed_requests_fail_the_benchmark_with_the_first_reason() {
        use crate::measure::{Failure, FailureClass};
        let mut record = RequestRecord::new(0);
        record.failure = Some(Failure::new(FailureClass::Http, "HTTP 500: boom"));
        let status = status_of(&[record.clone(), record]);
        assert_eq!(
            status,
            BenchmarkStatus::Failed("every request failed; first: HTTP 500: boom (http)".into())
        );
        assert_eq!(status_of(&[]), BenchmarkStatus::Failed("no request was sent".into()));
    }
}
