//! Running a quality benchmark: read its dataset, send one prompt per item
//! through the streaming client, read the answer out of each reply, and
//! score. A missing dataset makes the benchmark "not run" with the folder to
//! put it in; a malformed one fails it with the file and line.
//!
//! Quality requests differ from measured ones on purpose: temperature 0, no
//! output pinning (`ignore_eos`, `min_tokens`: the model must be free to
//! stop), and no unique prefix (it would change the prompt being scored).

use futures_util::StreamExt;
use futures_util::stream;

use crate::measure::{ChatMessage, RequestRecord, StreamRequest};
use crate::quality::{DatasetError, Question, Scores, load};
use crate::results::model::{BenchmarkResult, BenchmarkStatus, QualityItem};
use crate::suite::TestPlan;

use super::bench::{Target, error_rate, status_of};

/// Request fields that pin output length; left out of quality requests.
const PINNING: &[&str] = &["ignore_eos", "min_tokens"];

/// Runs one repetition of a quality benchmark.
pub async fn run(target: &Target, test: &TestPlan, run_number: u32) -> BenchmarkResult {
    let mut result = BenchmarkResult {
        name: test.name.clone(),
        run_number,
        status: BenchmarkStatus::Passed,
        metrics: Default::default(),
        warmup_ms: Vec::new(),
        requests: Vec::new(),
        items: Vec::new(),
    };
    let (Some(dataset), Some(location)) = (test.dataset, test.dataset_path.as_deref()) else {
        result.status = BenchmarkStatus::NotRun(format!("`{}` names no dataset", test.name));
        return result;
    };
    let mut loaded = match load(dataset, location) {
        Ok(loaded) => loaded,
        Err(error) => {
            result.status = status_for(&error);
            return result;
        }
    };
    if let Some(limit) = test.limit {
        loaded.questions.truncate(limit as usize);
    }
    tracing::info!(
        test = %test.name,
        items = loaded.questions.len(),
        files = ?loaded.files,
        "quality dataset read"
    );

    let level = test.concurrency.iter().copied().max().unwrap_or(1).max(1) as usize;
    let answers: Vec<(RequestRecord, String)> = stream::iter(&loaded.questions)
        .map(|question| ask(target, question, test.max_tokens))
        .buffered(level)
        .collect()
        .await;

    for (index, (question, (record, reply))) in loaded.questions.iter().zip(answers).enumerate() {
        let reply = record.is_success().then_some(reply.as_str());
        result.items.push(question.score(index, reply));
        result.requests.push(record);
    }
    result.status = status_of(&result.requests);
    result.metrics = metrics(&result.items, &result.requests);
    result
}

fn status_for(error: &DatasetError) -> BenchmarkStatus {
    if error.is_not_run() {
        BenchmarkStatus::NotRun(error.to_string())
    } else {
        BenchmarkStatus::Failed(crate::error::with_causes(error))
    }
}

async fn ask(target: &Target, question: &Question, max_tokens: u32) -> (RequestRecord, String) {
    let messages = vec![ChatMessage::user(question.prompt())];
    let mut request = StreamRequest::chat(&target.model, messages, max_tokens);
    request.temperature = Some(0.0);
    request.extra = target.extras.clone();
    request.protocol = target.protocol;
    for key in PINNING {
        request.extra.remove(*key);
    }
    request.expected_model = Some(target.model.clone());
    target.client.send_keeping_text(&request).await
}

/// The scores, plus the error rate like every benchmark.
fn metrics(
    items: &[QualityItem],
    requests: &[RequestRecord],
) -> std::collections::BTreeMap<String, f64> {
    let mut metrics = Scores::of(items).metrics();
    metrics.insert("error_rate".into(), error_rate(requests));
    metrics
}
