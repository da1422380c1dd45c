//! The streaming client against a scripted loopback server: every metric
//! definition of DESIGN §6 and every failure class, over real HTTP; and once
//! against the real llama-server, to keep the scripted shapes honest.

mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::{Duration, Instant};

use kitt::gguf::TinyModel;
use kitt::measure::{
    ChatMessage, FailureClass, Flow, RequestRecord, StreamClient, StreamEnd, StreamIngest,
    StreamRequest, TokenSource,
};
use serde_json::json;
use support::engine::{Engine, LlamaServer, make_model};
use support::stream::llama::{self, MODEL};
use support::stream::{Script, ScriptedStream};

const MS: u64 = 1_000_000;
const ZERO: Duration = Duration::ZERO;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn chat_request() -> StreamRequest {
    StreamRequest::chat("tiny", vec![ChatMessage::user("Say hi")], 8)
}

/// Serves `script` once to a chat request and returns the record.
async fn measure(script: Script) -> RequestRecord {
    measure_request(script, &chat_request()).await
}

async fn measure_request(script: Script, request: &StreamRequest) -> RequestRecord {
    let server = ScriptedStream::start(script);
    let client = StreamClient::new(server.url()).expect("loopback URL");
    client.send(request).await
}

fn class(record: &RequestRecord) -> Option<FailureClass> {
    record.failure.as_ref().map(|failure| failure.class)
}

fn message(record: &RequestRecord) -> &str {
    record.failure.as_ref().map_or("", |failure| failure.message.as_str())
}

#[tokio::test]
async fn full_llama_server_stream_is_a_success_with_usage_counts() {
    let record = measure(Script::chat(MODEL, &["#", "_", "h", "a", "t"], ZERO)).await;

    assert_eq!(record.failure, None);
    assert_eq!(record.chunks, 5);
    assert_eq!(record.itl_ns.len(), 4);
    assert_eq!(record.output_tokens, Some(5));
    assert_eq!(record.output_tokens_source, Some(TokenSource::Usage));
    assert_eq!(record.prompt_tokens, Some(58));
    assert_eq!(record.finish_reason.as_deref(), Some("length"));
    assert_eq!(record.served_model.as_deref(), Some(MODEL));
    let timings = record.server_timings.as_ref().expect("llama.cpp timings kept");
    assert_eq!(timings["predicted_per_second"], json!(849.2569002123142));
    assert!(record.started_at_unix_ns > 0);
}

#[tokio::test]
async fn role_only_first_chunk_is_not_the_first_token() {
    let script = Script::sse()
        .event(ZERO, &llama::role(MODEL))
        .event(ms(60), &llama::content(MODEL, "Hi"))
        .event(ZERO, &llama::finish(MODEL, "stop"))
        .done();
    let record = measure(script).await;

    assert_eq!(class(&record), None);
    assert!(record.ttft_ns >= Some(60 * MS), "ttft {:?} must wait for content", record.ttft_ns);
    assert_eq!(record.chunks, 1);
}

#[tokio::test]
async fn reasoning_deltas_give_ttft_but_not_ttfo() {
    let script = Script::sse()
        .event(ZERO, &llama::role(MODEL))
        .event(ms(20), &llama::reasoning(MODEL, "Let me think"))
        .event(ms(20), &llama::reasoning(MODEL, "."))
        .event(ms(60), &llama::content(MODEL, "42"))
        .event(ZERO, &llama::finish(MODEL, "stop"))
        .done();
    let record = measure(script).await;

    let (ttft, ttfo) = (record.ttft_ns.expect("ttft"), record.ttfo_ns.expect("ttfo"));
    assert!(ttft >= 20 * MS, "ttft {ttft}");
    assert!(ttfo >= ttft + 60 * MS, "ttfo {ttfo} must wait for the first content");
    assert_eq!(record.chunks, 3);
}

#[tokio::test]
async fn usage_only_final_chunk_counts_tokens_and_is_never_a_timestamp() {
    let script = Script::sse()
        .event(ZERO, &llama::content(MODEL, "a"))
        .event(ZERO, &llama::content(MODEL, "b"))
        .event(ZERO, &llama::finish(MODEL, "length"))
        .event(ms(300), &llama::usage(MODEL, 11, 7))
        .done();
    let started = Instant::now();
    let record = measure(script).await;
    let wall = started.elapsed();

    assert_eq!((record.output_tokens, record.chunks), (Some(11), 2));
    assert_eq!(record.output_tokens_source, Some(TokenSource::Usage));
    let e2e = Duration::from_nanos(record.e2e_ns.expect("e2e"));
    assert!(wall >= ms(300) && e2e + ms(250) < wall, "e2e {e2e:?} ran to the usage chunk");
}

#[tokio::test]
async fn multi_token_chunk_is_one_event() {
    let script = Script::sse()
        .event(ZERO, &llama::content(MODEL, "Hello, wor"))
        .event(ms(5), &llama::content(MODEL, "ld!"))
        .event(ZERO, &llama::finish(MODEL, "stop"))
        .event(ZERO, &llama::usage(MODEL, 6, 7))
        .done();
    let record = measure(script).await;

    assert_eq!((record.chunks, record.itl_ns.len()), (2, 1));
    assert_eq!(record.output_tokens, Some(6));
    let tpot = record.tpot_ns.expect("tpot");
    let span = (record.e2e_ns.expect("e2e") - record.ttft_ns.expect("ttft")) as f64;
    assert!((tpot - span / 5.0).abs() < 1.0, "tpot {tpot} spreads the span over 5 gaps");
}

#[tokio::test]
async fn keep_alive_comments_between_tokens_are_not_events() {
    let script = Script::sse()
        .keep_alive(ZERO)
        .event(ZERO, &llama::content(MODEL, "a"))
        .keep_alive(ms(5))
        .keep_alive(ms(5))
        .event(ms(5), &llama::content(MODEL, "b"))
        .event(ZERO, &llama::finish(MODEL, "stop"))
        .done();
    let record = measure(script).await;

    assert_eq!(class(&record), None);
    assert_eq!((record.chunks, record.itl_ns.len()), (2, 1));
    assert!(record.itl_ns[0] >= 10 * MS, "the gap spans the keep-alives: {:?}", record.itl_ns);
}

#[tokio::test]
async fn stream_with_only_done_fails_as_empty() {
    let record = measure(Script::sse().event(ZERO, &llama::role(MODEL)).done()).await;
    assert_eq!(class(&record), Some(FailureClass::EmptyStream));
}

#[tokio::test]
async fn stream_cut_midway_fails_as_truncated() {
    let script = Script::sse()
        .event(ZERO, &llama::content(MODEL, "a"))
        .raw(ms(5), "data: {\"choices\":[{\"delta\":{\"con")
        .cut();
    let record = measure(script).await;

    assert_eq!(class(&record), Some(FailureClass::Truncated), "{}", message(&record));
    assert_eq!(record.chunks, 1, "what arrived before the cut is kept");
}

#[tokio::test]
async fn stream_closed_cleanly_before_done_fails_as_truncated() {
    let record = measure(Script::sse().event(ZERO, &llama::content(MODEL, "a"))).await;
    assert_eq!(class(&record), Some(FailureClass::Truncated));
}

#[tokio::test]
async fn finish_reason_without_done_completes_the_stream() {
    let script = Script::sse()
        .event(ZERO, &llama::content(MODEL, "a"))
        .event(ZERO, &llama::finish(MODEL, "stop"));
    assert_eq!(class(&measure(script).await), None);
}

#[tokio::test]
async fn http_500_fails_as_http_with_a_body_excerpt() {
    let body = r#"{"error":{"code":500,"message":"slot unavailable","type":"server_error"}}"#;
    let record = measure(Script::error(500, body)).await;

    assert_eq!(class(&record), Some(FailureClass::Http));
    assert!(message(&record).contains("HTTP 500"), "{}", message(&record));
    assert!(message(&record).contains("slot unavailable"), "{}", message(&record));
}

#[tokio::test]
async fn http_503_while_loading_fails_as_loading() {
    let body = r#"{"error":{"message":"Loading model","type":"unavailable_error","code":503}}"#;
    let record = measure(Script::error(503, body)).await;

    assert_eq!(class(&record), Some(FailureClass::Loading));
    assert!(message(&record).contains("Loading model"), "{}", message(&record));
}

#[tokio::test]
async fn other_served_model_fails_as_model_mismatch() {
    let mut request = chat_request();
    request.expected_model = Some("tiny".to_owned());
    let record = measure_request(Script::chat(MODEL, &["a"], ZERO), &request).await;

    assert_eq!(class(&record), Some(FailureClass::ModelMismatch));
    assert!(message(&record).contains(MODEL), "{}", message(&record));

    request.expected_model = Some(MODEL.to_owned());
    let record = measure_request(Script::chat(MODEL, &["a"], ZERO), &request).await;
    assert_eq!(class(&record), None);
}

#[tokio::test]
async fn without_usage_counts_come_from_engine_timings() {
    let mut finish = llama::finish(MODEL, "length");
    finish["timings"] = llama::timings(9, 13);
    let script = Script::sse()
        .event(ZERO, &llama::content(MODEL, "ab"))
        .event(ZERO, &llama::content(MODEL, "cd"))
        .event(ZERO, &finish)
        .done();
    let record = measure(script).await;

    assert_eq!(record.output_tokens, Some(9));
    assert_eq!(record.output_tokens_source, Some(TokenSource::Engine));
    assert_eq!(record.prompt_tokens, Some(13));
    assert!(record.server_timings.is_some());
}

#[tokio::test]
async fn without_usage_or_timings_counts_are_chunks() {
    let script = Script::sse()
        .event(ZERO, &llama::content(MODEL, "ab"))
        .event(ZERO, &llama::content(MODEL, "cd"))
        .event(ZERO, &llama::content(MODEL, "ef"))
        .event(ZERO, &llama::finish(MODEL, "length"))
        .done();
    let record = measure(script).await;

    assert_eq!(record.output_tokens, Some(3));
    assert_eq!(record.output_tokens_source, Some(TokenSource::Chunks));
    assert_eq!(record.server_timings, None);
}

#[tokio::test]
async fn scripted_delays_bound_ttft_itl_and_e2e() {
    let record = measure(Script::chat(MODEL, &["a", "b", "c", "d"], ms(40))).await;

    let ttft = record.ttft_ns.expect("ttft");
    let e2e = record.e2e_ns.expect("e2e");
    assert!(ttft >= 40 * MS, "ttft {ttft}");
    assert!(e2e >= 160 * MS && e2e > ttft, "e2e {e2e}");
    assert_eq!(record.itl_ns.len(), 3);
    for gap in &record.itl_ns {
        assert!(*gap >= 20 * MS, "gap {gap} far below the scripted 40 ms");
    }
    assert_eq!(record.itl_ns.iter().sum::<u64>(), e2e - ttft);
    assert!(record.tpot_ns.expect("tpot") >= 20.0 * MS as f64);
}

#[tokio::test]
async fn request_body_carries_streaming_usage_and_extra_fields() {
    let server = ScriptedStream::start(Script::chat(MODEL, &["a"], ZERO));
    let client = StreamClient::new(server.url()).expect("loopback URL");
    let mut request = chat_request();
    request.temperature = Some(0.0);
    request.extra.insert("cache_prompt".into(), json!(false));
    request.extra.insert("ignore_eos".into(), json!(true));
    request.extra.insert("min_tokens".into(), json!(8));
    client.send(&request).await;

    let bodies = server.bodies();
    assert_eq!(bodies.len(), 1);
    let body = &bodies[0];
    assert_eq!(body["stream"], json!(true));
    assert_eq!(body["stream_options"]["include_usage"], json!(true));
    assert_eq!(body["cache_prompt"], json!(false));
    assert_eq!(body["ignore_eos"], json!(true));
    assert_eq!(body["min_tokens"], json!(8));
    assert_eq!(body["max_tokens"], json!(8));
    assert_eq!(body["messages"][0]["content"], json!("Say hi"));
    assert_eq!(server.requests("/v1/chat/completions"), 1);
}

#[tokio::test]
async fn completions_endpoint_reads_text_chunks() {
    let script = Script::sse()
        .event(ZERO, &llama::text(MODEL, "Once", None))
        .event(ms(5), &llama::text(MODEL, " upon", None))
        .event(ZERO, &llama::text(MODEL, "", Some("length")))
        .event(ZERO, &llama::usage(MODEL, 2, 3))
        .done();
    let server = ScriptedStream::start(script);
    let client = StreamClient::new(server.url()).expect("loopback URL");
    let record = client.send(&StreamRequest::completion("tiny", "Tell me", 2)).await;

    assert_eq!(class(&record), None);
    assert_eq!((record.chunks, record.output_tokens), (2, Some(2)));
    assert_eq!(record.ttft_ns, record.ttfo_ns);
    assert_eq!(server.requests("/v1/completions"), 1);
    assert_eq!(server.bodies()[0]["prompt"], json!("Tell me"));
}

#[tokio::test]
async fn events_split_across_pieces_with_crlf_are_parsed() {
    let event = format!("data: {}\r\n\r\n", llama::content(MODEL, "x"));
    let (head, tail) = event.split_at(17);
    let script = Script::sse()
        .raw(ZERO, head)
        .raw(ms(5), tail)
        .raw(ZERO, &format!("data: {}\r\n\r\n", llama::finish(MODEL, "stop")))
        .raw(ZERO, "data: [DONE]\r\n\r\n");
    let record = measure(script).await;

    assert_eq!(class(&record), None);
    assert_eq!(record.chunks, 1);
}

#[tokio::test]
async fn in_stream_error_chunk_fails_as_server_error() {
    let error = json!({ "error": { "code": 500, "message": "context shift disabled" } });
    let script = Script::sse().event(ZERO, &llama::content(MODEL, "a")).event(ZERO, &error);
    let record = measure(script).await;

    assert_eq!(class(&record), Some(FailureClass::ServerError));
    assert!(message(&record).contains("context shift disabled"), "{}", message(&record));
}

#[tokio::test]
async fn non_event_stream_answer_fails_as_bad_payload() {
    let script = Script::sse().content_type("application/json").raw(ZERO, r#"{"choices":[]}"#);
    let record = measure(script).await;

    assert_eq!(class(&record), Some(FailureClass::BadPayload));
    assert!(message(&record).contains("application/json"), "{}", message(&record));
}

#[tokio::test]
async fn slow_stream_fails_as_timeout() {
    let mut request = chat_request();
    request.timeout = ms(150);
    let record = measure_request(Script::chat(MODEL, &["a", "b"], ms(100)), &request).await;

    assert_eq!(class(&record), Some(FailureClass::Timeout), "{}", message(&record));
    assert_eq!(record.chunks, 1, "the token before the deadline is kept");
}

#[tokio::test]
async fn refused_connection_fails_as_connect() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        listener.local_addr().expect("bound address").port()
    };
    let client = StreamClient::new(&format!("http://127.0.0.1:{port}")).expect("loopback URL");
    let record = client.send(&chat_request()).await;

    assert_eq!(class(&record), Some(FailureClass::Connect), "{}", message(&record));
}

#[tokio::test]
async fn one_client_serves_consecutive_requests() {
    let server = ScriptedStream::start(Script::chat(MODEL, &["a", "b"], ZERO));
    let client = StreamClient::new(server.url()).expect("loopback URL");
    for _ in 0..3 {
        let record = client.send(&chat_request()).await;
        assert_eq!(class(&record), None, "{}", message(&record));
    }
    assert_eq!(server.bodies().len(), 3);
}

/// The same client against the real llama-server (skipped, with a notice, when
/// `scripts/setup.sh` has not installed it): the shapes scripted above are the
/// ones a real server streams.
#[tokio::test]
async fn real_llama_server_streams_are_measured_by_the_same_rules() {
    let Some(engine) = Engine::find() else { return };
    let dir = tempfile::tempdir().expect("a temp dir for the model");
    let model = make_model(dir.path(), &TinyModel::default());
    let server = LlamaServer::start(&engine, &model, &["-a", "tiny"]);
    let client = StreamClient::new(&server.url()).expect("loopback URL");

    // Back to back, twice: llama-server closes every streamed connection,
    // which a pooled client would race on the next request.
    let chat = chat_request();
    let completion = StreamRequest::completion("tiny", "Once upon a time", 8);
    for mut request in [chat.clone(), completion.clone(), chat, completion] {
        request.max_tokens = 24;
        request.expected_model = Some("tiny".to_owned());
        request.extra.insert("cache_prompt".into(), json!(false));
        let record = client.send(&request).await;

        assert_eq!(class(&record), None, "{}", message(&record));
        assert_eq!(record.output_tokens, Some(24), "the tiny model never samples EOS");
        assert_eq!(record.output_tokens_source, Some(TokenSource::Usage));
        assert_eq!(record.finish_reason.as_deref(), Some("length"));
        assert!((1..=24).contains(&record.chunks), "{} token events", record.chunks);
        assert_eq!(record.itl_ns.len() + 1, record.chunks as usize);
        assert!(record.ttft_ns <= record.e2e_ns && record.ttft_ns == record.ttfo_ns);
        let timings = record.server_timings.as_ref().expect("llama.cpp sends timings");
        assert_eq!(timings["predicted_n"], json!(24));
        assert!(record.prompt_tokens.is_some_and(|tokens| tokens > 0));
    }
}

/// Counts the allocations each thread makes, so that a test can prove the
/// per-event path allocates nothing (DESIGN §8).
struct CountingAllocator;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn allocations() -> u64 {
    ALLOCATIONS.try_with(Cell::get).unwrap_or(0)
}

fn count_allocation() {
    let _ = ALLOCATIONS.try_with(|count| count.set(count.get() + 1));
}

// SAFETY: every call is forwarded unchanged to the system allocator; the
// counter is a const-initialised thread-local without a destructor.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count_allocation();
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count_allocation();
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

#[test]
fn token_events_are_ingested_without_allocating() {
    const EVENTS: usize = 1000;
    let event = |chunk: &serde_json::Value| format!("data: {chunk}\n\n").into_bytes();
    let first = event(&llama::content(MODEL, "Hello"));
    let tokens: Vec<Vec<u8>> =
        (0..EVENTS).map(|i| event(&llama::content(MODEL, &format!("{i:04}")))).collect();
    // Warm-up: the parser's buffers grow to the size of a split event once.
    let (head, tail) = tokens[0].split_at(tokens[0].len() / 2);

    let mut ingest = StreamIngest::new(Some(MODEL), EVENTS as u32 + 1);
    ingest.start();
    assert_eq!(ingest.on_bytes(Instant::now(), &first), Flow::More);
    ingest.on_bytes(Instant::now(), head);
    ingest.on_bytes(Instant::now(), tail);

    let before = allocations();
    for token in &tokens[1..] {
        let (head, tail) = token.split_at(token.len() / 2);
        ingest.on_bytes(Instant::now(), head);
        assert_eq!(ingest.on_bytes(Instant::now(), tail), Flow::More);
    }
    let allocated = allocations() - before;

    let record = ingest.finish(StreamEnd::Cut("end of test".to_owned()));
    assert_eq!(record.chunks as usize, EVENTS + 1);
    assert_eq!(allocated, 0, "allocations while ingesting {} token events", EVENTS - 1);
}
