//! Client overhead of kitt's streaming measurement, against the scripted
//! loopback server of the tests. Run with `cargo bench --bench client`.
//!
//! Three figures:
//! - ingest rate in memory: token events per second that the parsing and
//!   accounting sustain on one core, one event per read (the worst case);
//! - ingest rate over loopback HTTP: the same through reqwest, with the client
//!   on one core (a current-thread runtime) and the server on another thread,
//!   plus the client thread's own CPU time per event (the rate may be bounded
//!   by the server; the CPU time is not);
//! - first-token stamp lag: how long after the server hands the first token to
//!   its HTTP stack kitt stamps it. Server and client share this process and
//!   so the same monotonic clock; the lag includes the server's write, the
//!   loopback hop and the client's HTTP stack, so it bounds kitt's share from
//!   above.

// The scripted server of the tests, included alone: its parent
// `tests/support/mod.rs` brings fakes the benchmark does not need.
#[allow(dead_code)]
#[path = "../tests/support/stream.rs"]
mod stream;

use std::time::{Duration, Instant};

use kitt::measure::{
    ChatMessage, Flow, StreamClient, StreamEnd, StreamIngest, StreamRequest, Summary,
};
use stream::llama::{self, MODEL};
use stream::{Script, ScriptedStream};

/// Token events per streamed request in the throughput figures.
const EVENTS: usize = 2000;
/// How long each throughput figure is measured.
const MEASURE: Duration = Duration::from_secs(3);
/// Requests sampled for each stamp-lag figure.
const LAG_SAMPLES: usize = 400;

fn main() {
    println!("kitt client benchmark ({EVENTS} token events per request)");
    in_memory_ingest();

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("build the client runtime");
    runtime.block_on(loopback_ingest());
    runtime.block_on(stamp_lag("token written right after the role chunk", Duration::ZERO));
    runtime.block_on(stamp_lag("client idle when the token is written", Duration::from_millis(1)));
}

/// The `data:` events of one llama-server chat stream of `EVENTS` tokens.
fn stream_events() -> Vec<Vec<u8>> {
    let mut chunks = vec![llama::role(MODEL)];
    chunks.extend((0..EVENTS).map(|i| llama::content(MODEL, if i % 2 == 0 { "ab" } else { " c" })));
    chunks.push(llama::finish(MODEL, "length"));
    chunks.push(llama::usage(MODEL, EVENTS as u64, 58));
    let mut events: Vec<Vec<u8>> =
        chunks.iter().map(|chunk| format!("data: {chunk}\n\n").into_bytes()).collect();
    events.push(b"data: [DONE]\n\n".to_vec());
    events
}

fn in_memory_ingest() {
    let events = stream_events();
    let run = || {
        let mut ingest = StreamIngest::new(Some(MODEL), EVENTS as u32);
        ingest.start();
        for event in &events {
            if ingest.on_bytes(Instant::now(), event) != Flow::More {
                break;
            }
        }
        ingest.finish(StreamEnd::Eof)
    };
    assert_eq!(run().chunks as usize, EVENTS, "the scripted stream parses");

    let (requests, elapsed) = repeat_for(MEASURE, || {
        std::hint::black_box(run());
    });
    report_rate("ingest, in memory, one event per read", requests, elapsed);
}

async fn loopback_ingest() {
    let tokens: Vec<&str> = (0..EVENTS).map(|i| if i % 2 == 0 { "ab" } else { " c" }).collect();
    let server = ScriptedStream::start(Script::chat(MODEL, &tokens, Duration::ZERO));
    let client = StreamClient::new(server.url()).expect("loopback URL");
    let request = request(EVENTS as u32);

    let warm = client.send(&request).await;
    assert!(warm.is_success(), "warm-up request failed: {:?}", warm.failure);

    let started = Instant::now();
    let cpu_before = thread_cpu_ns();
    let mut requests = 0;
    while started.elapsed() < MEASURE {
        let record = client.send(&request).await;
        assert_eq!(record.chunks as usize, EVENTS);
        requests += 1;
    }
    let elapsed = started.elapsed();
    report_rate("ingest, loopback HTTP, client on one core", requests, elapsed);

    // The current-thread runtime runs every client task on this thread, so its
    // CPU time is the client's whole cost, whatever the server's speed.
    if let (Some(before), Some(after)) = (cpu_before, thread_cpu_ns()) {
        let events = requests as f64 * EVENTS as f64;
        let busy = (after - before) as f64;
        println!(
            "  client thread CPU: {:.0} ns per event, busy {:.0} % of the wall time",
            busy / events,
            100.0 * busy / elapsed.as_nanos() as f64
        );
    }
}

/// CPU time of the calling thread in nanoseconds (Linux `schedstat`), if readable.
fn thread_cpu_ns() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    stat.split_whitespace().next()?.parse().ok()
}

async fn stamp_lag(label: &str, before_token: Duration) {
    let script = Script::sse()
        .event(Duration::ZERO, &llama::role(MODEL))
        .event(before_token, &llama::content(MODEL, "Hello"))
        .stamped();
    let script = (0..7)
        .fold(script, |script, _| script.event(Duration::ZERO, &llama::content(MODEL, " there")));
    let script = script
        .event(Duration::ZERO, &llama::finish(MODEL, "length"))
        .event(Duration::ZERO, &llama::usage(MODEL, 8, 58))
        .done();
    let server = ScriptedStream::start(script);
    let client = StreamClient::new(server.url()).expect("loopback URL");
    let request = request(8);

    let mut lags = Vec::with_capacity(LAG_SAMPLES);
    for round in 0..LAG_SAMPLES + 20 {
        let (record, sent) = client.send_timed(&request).await;
        let written = server.take_stamps();
        let (Some(ttft), Some(&written)) = (record.ttft_ns, written.first()) else {
            panic!("request failed: {:?}", record.failure);
        };
        let stamped = sent + Duration::from_nanos(ttft);
        // The first rounds warm the connection and the allocator.
        if round >= 20 {
            lags.push(stamped.saturating_duration_since(written).as_nanos() as u64);
        }
    }
    let lag = Summary::of_u64(&lags).expect("samples");
    println!(
        "first-token stamp lag ({label}): p50 {:.1} µs, p90 {:.1} µs, p99 {:.1} µs, \
         mean {:.1} µs (n={})",
        lag.p50 / 1e3,
        lag.p90 / 1e3,
        lag.p99 / 1e3,
        lag.mean / 1e3,
        lag.count
    );
}

fn request(max_tokens: u32) -> StreamRequest {
    let mut request = StreamRequest::chat("tiny", vec![ChatMessage::user("Hi")], max_tokens);
    request.expected_model = Some(MODEL.to_owned());
    request
}

/// Runs `work` after a short warm-up until `budget` has passed; returns the
/// number of runs measured and the time they took.
fn repeat_for(budget: Duration, mut work: impl FnMut()) -> (u64, Duration) {
    let warm_up = Instant::now();
    while warm_up.elapsed() < budget / 10 {
        work();
    }
    let started = Instant::now();
    let mut runs = 0;
    while started.elapsed() < budget {
        work();
        runs += 1;
    }
    (runs, started.elapsed())
}

fn report_rate(label: &str, requests: u64, elapsed: Duration) {
    let events = requests as f64 * EVENTS as f64;
    let per_second = events / elapsed.as_secs_f64();
    println!(
        "{label}: {:.2} M token events/s ({:.0} ns per event, {requests} requests in {:.1} s)",
        per_second / 1e6,
        1e9 / per_second,
        elapsed.as_secs_f64()
    );
}
