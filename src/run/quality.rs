//! Running a quality benchmark: read its dataset, choose the scoring method,
//! ask the engine about every item, and score. A missing dataset makes the
//! benchmark "not run" with the folder to put it in; a malformed one fails it
//! with the file and line.
//!
//! **Choosing the method.** `scoring: generative` sends one chat prompt per
//! item and reads the answer out of the reply. `loglikelihood` sends one
//! completions request per option (see [`crate::quality::loglikelihood`]);
//! `auto` (the default) does so when the engine returns prompt
//! log-probabilities and the dataset has options, else falls back to
//! generative. Whether the engine can is asked once per run, with a short
//! probe prompt whose log-probabilities must come back: an engine that cannot
//! (llama-server ignores `echo`) makes a `loglikelihood` benchmark "not run"
//! with the engine's answer as the reason. The method used and why are
//! recorded on the benchmark's result.
//!
//! Quality requests differ from measured ones on purpose: temperature 0, no
//! output pinning (`ignore_eos`, `min_tokens`: the model must be free to
//! stop), and no unique prefix (it would change the prompt being scored).

use futures_util::StreamExt;
use futures_util::stream;

use crate::measure::{ChatMessage, LogprobRequest, RequestRecord, StreamRequest, Tail};
use crate::quality::loglikelihood::{self, Options};
use crate::quality::{Dataset, DatasetError, Method, Question, Scores, Scoring, load};
use crate::results::model::{BenchmarkResult, BenchmarkStatus, QualityItem, QualityRun};
use crate::suite::TestPlan;

use super::bench::{Target, error_rate, status_of};

/// Request fields that pin output length; left out of quality requests.
const PINNING: &[&str] = &["ignore_eos", "min_tokens"];

/// The probe prompt and the option at its end whose log-likelihood must come back.
const PROBE: (&str, &str) = ("The capital of France is", " Paris.");

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
        quality: None,
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
    let dataset_items = loaded.questions.len();
    if let Some(limit) = test.limit {
        loaded.questions.truncate(limit as usize);
    }
    let (method, reason) = choose_method(target, test.scoring, dataset).await;
    tracing::info!(
        test = %test.name,
        items = loaded.questions.len(),
        files = ?loaded.files,
        scoring = method.map_or_else(|| "none".to_owned(), |m| m.to_string()),
        "quality dataset read; {reason}"
    );
    result.quality = Some(QualityRun {
        scoring: method,
        scoring_reason: reason.clone(),
        dataset_items,
        limit: test.limit,
    });

    let level = test.concurrency.iter().copied().max().unwrap_or(1).max(1) as usize;
    let (items, requests) = match method {
        None => {
            result.status = BenchmarkStatus::NotRun(reason);
            return result;
        }
        Some(Method::Generative) => generative(target, test, &loaded.questions, level).await,
        Some(Method::Loglikelihood) => {
            by_likelihood(target, dataset, &loaded.questions, level).await
        }
    };
    result.status = status_of(&requests);
    result.metrics = metrics(&items, &requests, method);
    result.items = items;
    result.requests = requests;
    result
}

fn status_for(error: &DatasetError) -> BenchmarkStatus {
    if error.is_not_run() {
        BenchmarkStatus::NotRun(error.to_string())
    } else {
        BenchmarkStatus::Failed(crate::error::with_causes(error))
    }
}

/// The method to score with (`None`: not run) and why.
async fn choose_method(
    target: &Target,
    scoring: Scoring,
    dataset: Dataset,
) -> (Option<Method>, String) {
    if scoring == Scoring::Generative {
        return (Some(Method::Generative), "`scoring: generative`".into());
    }
    if !loglikelihood::applies_to(dataset) {
        let reason =
            format!("{} has no options to compare, so answers are generated", dataset.name());
        return (Some(Method::Generative), reason);
    }
    let support = target.prompt_logprobs.get_or_init(|| probe(target)).await;
    match (scoring, support) {
        (Scoring::Auto, Ok(())) => (
            Some(Method::Loglikelihood),
            "`scoring: auto` and the engine returns prompt log-probabilities".into(),
        ),
        (Scoring::Auto, Err(why)) => (Some(Method::Generative), format!("`scoring: auto`; {why}")),
        (_, Ok(())) => (Some(Method::Loglikelihood), "`scoring: loglikelihood`".into()),
        (_, Err(why)) => (None, format!("`scoring: loglikelihood` but {why}")),
    }
}

/// Asks for the log-likelihood of a short prompt's last word.
async fn probe(target: &Target) -> Result<(), String> {
    let (context, option) = PROBE;
    let request = logprob_request(target, format!("{context}{option}"));
    let (record, logprobs) = target.client.prompt_logprobs(&request).await;
    let unsupported =
        |why: String| format!("the engine returned no prompt log-probabilities ({why})");
    match (record.failure, logprobs) {
        (Some(failure), _) => Err(unsupported(failure.to_string())),
        (None, Some(logprobs)) => {
            logprobs.tail(option.chars().count()).map(drop).map_err(unsupported)
        }
        (None, None) => Err(unsupported("no answer".into())),
    }
}

fn logprob_request(target: &Target, prompt: String) -> LogprobRequest {
    let mut request = LogprobRequest::new(&target.model, prompt);
    request.extra = target.extras.clone();
    for key in PINNING {
        request.extra.remove(*key);
    }
    request.expected_model = Some(target.model.clone());
    request
}

/// One chat request per item; the answer is read out of the reply.
async fn generative(
    target: &Target,
    test: &TestPlan,
    questions: &[Question],
    level: usize,
) -> (Vec<QualityItem>, Vec<RequestRecord>) {
    let answers: Vec<(RequestRecord, String)> = stream::iter(questions)
        .map(|question| ask(target, question, test.max_tokens))
        .buffered(level)
        .collect()
        .await;
    let mut items = Vec::new();
    let mut requests = Vec::new();
    for (index, (question, (record, reply))) in questions.iter().zip(answers).enumerate() {
        let reply = record.is_success().then_some(reply.as_str());
        items.push(question.score(index, reply));
        requests.push(record);
    }
    (items, requests)
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

/// One completions request per option of every item, in item order.
async fn by_likelihood(
    target: &Target,
    dataset: Dataset,
    questions: &[Question],
    level: usize,
) -> (Vec<QualityItem>, Vec<RequestRecord>) {
    let items: Vec<Options> =
        questions.iter().filter_map(|question| loglikelihood::options(dataset, question)).collect();
    let prompts = items.iter().flat_map(|item| {
        (0..item.continuations.len()).map(move |index| (item.prompt(index), item, index))
    });
    let answers: Vec<(RequestRecord, Option<Tail>)> = stream::iter(prompts)
        .map(|(prompt, item, index)| likelihood(target, prompt, item.continuations[index].clone()))
        .buffered(level)
        .collect()
        .await;

    let mut answers = answers.into_iter();
    let mut scored = Vec::new();
    let mut requests = Vec::new();
    for (index, item) in items.iter().enumerate() {
        let (records, tails): (Vec<_>, Vec<_>) =
            answers.by_ref().take(item.continuations.len()).unzip();
        scored.push(loglikelihood::score(index, item, &tails));
        requests.extend(records);
    }
    (scored, requests)
}

/// The log-likelihood of `option` at the end of `prompt`; an answer whose
/// tokens cannot be read fails the request.
async fn likelihood(
    target: &Target,
    prompt: String,
    option: String,
) -> (RequestRecord, Option<Tail>) {
    let (mut record, logprobs) =
        target.client.prompt_logprobs(&logprob_request(target, prompt)).await;
    let Some(logprobs) = logprobs else { return (record, None) };
    match logprobs.tail(option.chars().count()) {
        Ok(tail) => (record, Some(tail)),
        Err(why) => {
            record.failure =
                Some(crate::measure::Failure::new(crate::measure::FailureClass::BadPayload, why));
            (record, None)
        }
    }
}

/// The scores, plus the error rate like every benchmark, plus both choices
/// under log-likelihood scoring.
fn metrics(
    items: &[QualityItem],
    requests: &[RequestRecord],
    method: Option<Method>,
) -> std::collections::BTreeMap<String, f64> {
    let mut metrics = Scores::of(items).metrics();
    if method == Some(Method::Loglikelihood) {
        metrics.extend(loglikelihood::metrics(items));
    }
    metrics.insert("error_rate".into(), error_rate(requests));
    metrics
}
