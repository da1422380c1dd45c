//! One benchmark run: start the engine, run the suite's benchmarks against
//! it, stop the engine whatever happens, and store the result with its
//! provenance. The campaign runner calls [`execute`] in-process.

pub mod bench;
pub mod memory;
pub mod model;
pub mod quality;
pub mod signals;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use sha2::{Digest, Sha256};
use tokio::sync::Notify;

use crate::config::EngineConfig;
use crate::engine::{self, EngineError, EngineKind, Launch, Running, StartProgress};
use crate::measure::{METRICS_VERSION, StreamClient};
use crate::results::model::{
    BenchmarkResult, BenchmarkStatus, EngineIdentity, ModelIdentity, RunResult,
};
use crate::suite::Suite;
use bench::Target;
use memory::MemorySampler;
pub use model::{ModelError, ModelFile, resolve_model};

/// The phase after the engine has stopped, while the result is written.
pub const STORING_PHASE: &str = "storing the result";

/// Set when the user asked to stop: the run abandons its current request,
/// stops the engine cleanly and returns [`RunError::Interrupted`].
#[derive(Debug, Clone, Default)]
pub struct Cancel(Arc<(AtomicBool, Notify)>);

impl Cancel {
    /// Asks the run to stop.
    pub fn cancel(&self) {
        self.0.0.store(true, Ordering::SeqCst);
        self.0.1.notify_waiters();
    }

    /// Whether stopping was asked for.
    pub fn is_cancelled(&self) -> bool {
        self.0.0.load(Ordering::SeqCst)
    }

    /// Completes once stopping is asked for.
    pub async fn cancelled(&self) {
        while !self.is_cancelled() {
            let notified = self.0.1.notified();
            if self.is_cancelled() {
                return;
            }
            notified.await;
        }
    }
}

/// What to run.
pub struct RunRequest<'a> {
    /// The run's id (see [`new_id`]): names its result and its engine log.
    pub id: String,
    /// The campaign the run belongs to (names its containers).
    pub campaign: Option<String>,
    /// The model to serve.
    pub model: &'a ModelFile,
    /// The engine.
    pub engine: EngineKind,
    /// Its parameters.
    pub config: &'a EngineConfig,
    /// The suite.
    pub suite: &'a Suite,
    /// The kitt home (store and logs).
    pub home: &'a Path,
    /// Where run directories go.
    pub output_root: PathBuf,
    /// Receives a line each time the run enters a new phase (engine start,
    /// each benchmark, storing), for progress displays.
    pub phases: Option<tokio::sync::mpsc::UnboundedSender<Phase>>,
    /// Leave storing the result to the caller (who stores it together with
    /// its own state in one transaction); the run directory is still written.
    pub defer_store: bool,
    /// What else ran on the machine while the suite measured, filled in by
    /// the caller during the run and recorded with the result.
    pub beside: Option<&'a Beside>,
    /// What the engine may do with models it pulls (Ollama).
    pub pulls: crate::engine::pulls::PullRules,
    /// The campaign run this is, recorded with the result (`None` for `kitt run`).
    pub context: Option<crate::results::CampaignContext>,
    /// The GPUs a parallel campaign placed the run on, and how they are
    /// described in the result (`None`: not placed, the engine's own
    /// choice).
    pub devices: Option<(&'a [u32], String)>,
    /// CPU threads for an engine without a `threads` setting, when a
    /// parallel campaign shares the CPU among several engines.
    pub cpu_threads: Option<u32>,
}

/// What ran beside a run's measurements (a download for the next run of a
/// campaign), recorded in the result's comparability notes as
/// `concurrent_activity` so a reader can judge interference.
#[derive(Debug, Default)]
pub struct Beside(std::sync::Mutex<Vec<String>>);

impl Beside {
    /// Notes an activity (once, however often it is added).
    pub fn add(&self, activity: &str) {
        let mut seen = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if !seen.iter().any(|known| known == activity) {
            seen.push(activity.to_owned());
        }
    }

    /// Every activity noted, `; `-separated; `None` when there was none.
    pub fn text(&self) -> Option<String> {
        let seen = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        (!seen.is_empty()).then(|| seen.join("; "))
    }
}

/// A run entering a phase.
#[derive(Debug, Clone)]
pub struct Phase {
    /// When.
    pub at: std::time::Instant,
    /// What it does now, e.g. `starting llama_cpp`, `throughput (run 1 of 3)`.
    pub text: String,
    /// Whether the suite measures in this phase (a benchmark runs).
    pub measuring: bool,
}

impl RunRequest<'_> {
    fn phase(&self, phase: impl FnOnce() -> String) {
        self.send_phase(phase, false);
    }

    /// A phase in which a benchmark measures.
    fn measuring_phase(&self, phase: impl FnOnce() -> String) {
        self.send_phase(phase, true);
    }

    fn send_phase(&self, phase: impl FnOnce() -> String, measuring: bool) {
        if let Some(phases) = &self.phases {
            let at = std::time::Instant::now();
            let _ = phases.send(Phase { at, text: phase(), measuring });
        }
    }

    /// What the engine reports while it starts (a pull, an import) becomes phases too.
    fn start_progress(&self) -> StartProgress {
        match self.phases.clone() {
            Some(phases) => StartProgress::new(move |text| {
                let at = std::time::Instant::now();
                let _ = phases.send(Phase { at, text, measuring: false });
            }),
            None => StartProgress::default(),
        }
    }
}

/// A finished run.
#[derive(Debug)]
pub struct RunOutcome {
    /// The stored result.
    pub result: RunResult,
    /// Its run directory.
    pub run_dir: PathBuf,
}

/// Why a run produced no result.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The engine could not be started or died.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The result could not be stored.
    #[error("cannot store the result")]
    Store(#[source] crate::store::StoreError),
    /// A directory kitt writes to cannot be written.
    #[error("cannot write to {}", path.display())]
    Output {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The user stopped the run; the engine was stopped.
    #[error("interrupted")]
    Interrupted,
}

/// Runs a suite against a model on an engine and stores the result.
pub async fn execute(request: &RunRequest<'_>, cancel: &Cancel) -> Result<RunOutcome, RunError> {
    let id = request.id.clone();
    let started_at = now();
    // Everything that can refuse to store the result is checked before the
    // engine starts, so a finished suite is never thrown away.
    let store = crate::store::Store::open(request.home).map_err(RunError::Store)?;
    store.check_writable().map_err(RunError::Store)?;
    let results_root = request.output_root.join(crate::results::files::RESULTS_DIR);
    writable_dir(&results_root)?;
    let logs = request.home.join("logs");
    writable_dir(&logs)?;
    let log_path = engine_log_path(request.home, &id);
    // NVML or nvidia-smi may take a moment: off the async threads, where
    // other runs of a parallel campaign may be measuring.
    let hardware = tokio::task::spawn_blocking(crate::hardware::detect)
        .await
        .unwrap_or_else(|_| crate::results::model::Hardware::default());

    let slots = request.config.parallel.unwrap_or_else(|| request.suite.max_concurrency());
    let context_size =
        request.config.context_size.unwrap_or(request.suite.context_per_slot() * slots);
    let launch = Launch {
        kind: request.engine,
        config: request.config,
        model_path: Some(&request.model.path),
        format: request.model.format,
        tokenizer: request.model.tokenizer.as_deref(),
        run_id: &request.id,
        campaign: request.campaign.as_deref(),
        model_name: &request.model.name,
        model_bytes: request.model.size_bytes,
        context_size,
        slots,
        log_path: log_path.clone(),
        progress: request.start_progress(),
        pulls: request.pulls.clone(),
        devices: request.devices.as_ref().map(|(devices, _)| *devices),
        cpu_threads: request.cpu_threads,
    };
    request.phase(|| format!("starting {}", request.engine));
    let mut running = start_engine(launch, cancel).await?;
    let measured = tokio::select! {
        biased;
        () = cancel.cancelled() => Err(RunError::Interrupted),
        measured = measure(&mut running, request, cancel) => measured.map_err(|e| stopped(e, cancel)),
    };
    request.phase(|| format!("stopping {}", request.engine));
    if cancel.is_cancelled() {
        running.keep_pulled_model();
    }
    let stopped = running.stop().await;
    let benchmarks = measured?;
    stopped?;
    if let Some(observed) = output_length_observed(&benchmarks) {
        running.comparability.insert("output_length_observed".into(), observed);
    }
    if let Some((_, described)) = &request.devices {
        running.comparability.insert("devices".into(), described.clone());
    }
    if let Some(threads) = request.cpu_threads
        && request.engine == crate::engine::EngineKind::LlamaCpp
        && request.config.threads.is_none()
    {
        let note = format!("{threads} (the CPU shared among the runs of a parallel campaign)");
        running.comparability.insert("threads".into(), note);
    }
    if let Some(beside) = request.beside.and_then(Beside::text) {
        running.comparability.insert("concurrent_activity".into(), beside);
    }

    let result = RunResult {
        id,
        kitt_version: env!("CARGO_PKG_VERSION").to_owned(),
        metric_version: METRICS_VERSION,
        started_at,
        finished_at: now(),
        suite: request.suite.name.clone(),
        config_hash: config_hash(request, &running),
        model: ModelIdentity {
            name: request.model.name.clone(),
            path: request.model.path.display().to_string(),
            quant: request.model.quant.clone(),
            size_bytes: request.model.size_bytes,
            architecture: request.model.architecture.clone(),
            parameters: request.model.parameters,
        },
        engine: identity(&running),
        hardware,
        passed: passed(&benchmarks),
        benchmarks,
        campaign: request.context.clone(),
    };
    request.phase(|| STORING_PHASE.to_owned());
    // The run directory first: it is derived output, and a crash between the
    // two leaves at worst a directory without a stored result, never a
    // stored result whose run is redone.
    let engine_log = request.engine.is_managed().then_some(log_path.as_path());
    let run_dir = crate::results::files::write_run_dir(&request.output_root, &result, engine_log)
        .map_err(|source| RunError::Output { path: results_root.clone(), source })?;
    if !request.defer_store {
        store.insert_result(&result).map_err(RunError::Store)?;
    }
    Ok(RunOutcome { result, run_dir })
}

async fn measure(
    running: &mut Running,
    request: &RunRequest<'_>,
    cancel: &Cancel,
) -> Result<Vec<BenchmarkResult>, RunError> {
    let suite = request.suite;
    let client = StreamClient::new(&running.base_url).map_err(|error| {
        EngineError::Unreachable { url: running.base_url.clone(), reason: error.to_string() }
    })?;
    let placed = request.devices.as_ref().map(|(devices, _)| *devices);
    let sampler = MemorySampler::for_engine(running.process_group(), placed).await;
    running.comparability.insert("memory".into(), sampler.describe());
    let mut target = Target::new(client, running.served_model.clone(), sampler, suite.temperature);
    target.extras = running.request_extras.clone();
    target.protocol = running.protocol;
    // Engines that switch their prompt cache off record how; the others get a unique prefix.
    target.unique_prefix = !target.extras.contains_key("cache_prompt")
        && !running.comparability.contains_key("prompt_cache");
    if target.unique_prefix {
        running
            .comparability
            .insert("prompt_cache".into(), "defeated with a unique prefix per request".into());
    }
    if suite.tests.iter().any(|test| test.kind == crate::suite::TestKind::Quality) {
        // The pinning fields above apply to performance requests only.
        running.comparability.insert(
            "quality_requests".into(),
            "sent without ignore_eos/min_tokens: answers end where the model ends them".into(),
        );
    }

    let mut benchmarks = Vec::new();
    for test in &suite.tests {
        for run_number in 1..=test.runs {
            if cancel.is_cancelled() {
                return Err(RunError::Interrupted);
            }
            request
                .measuring_phase(|| format!("{} (run {run_number} of {})", test.name, test.runs));
            let measures = test.kind != crate::suite::TestKind::Quality;
            let warmup = if test.warmup && measures {
                bench::warm_up(&target, suite).await
            } else {
                Vec::new()
            };
            let mut result = bench::run(&target, test, run_number).await;
            result.warmup_ms = warmup;
            tracing::info!(test = %test.name, run_number, status = ?result.status, "benchmark finished");
            benchmarks.push(result);
            if running.has_exited().await {
                let tail = running.log_tail(20);
                return Err(EngineError::Crashed { log_tail: tail }.into());
            }
        }
    }
    Ok(benchmarks)
}

/// Whether the performance requests really ran to `max_tokens`, from the
/// finish reasons the engine gave: an engine that ignores the pinning field
/// shows up here even when it accepted the request. Quality benchmarks end
/// where the answer ends and are left out.
fn output_length_observed(benchmarks: &[BenchmarkResult]) -> Option<String> {
    let finished: Vec<&crate::measure::RequestRecord> = benchmarks
        .iter()
        .filter(|benchmark| benchmark.quality.is_none() && benchmark.items.is_empty())
        .flat_map(|benchmark| benchmark.requests.iter())
        .filter(|request| request.is_success())
        .collect();
    if finished.is_empty() {
        return None;
    }
    let total = finished.len();
    let reason = |wanted: &str| {
        finished.iter().filter(|r| r.finish_reason.as_deref() == Some(wanted)).count()
    };
    let (at_limit, stopped) = (reason("length"), reason("stop"));
    let unknown = total - at_limit - stopped;
    Some(if at_limit == total {
        format!("all {total} requests ran to max_tokens")
    } else if stopped > 0 {
        format!(
            "{stopped} of {total} requests stopped before max_tokens (finish_reason `stop`): \
             output lengths differ between requests"
        )
    } else {
        format!("{unknown} of {total} requests gave no finish_reason; length not confirmed")
    })
}

/// Starts the engine; an interruption kills whatever it started.
async fn start_engine(launch: Launch<'_>, cancel: &Cancel) -> Result<Running, RunError> {
    tokio::select! {
        biased;
        () = cancel.cancelled() => {
            engine::process::kill_all_engines();
            Err(RunError::Interrupted)
        }
        started = engine::start(&launch) => started.map_err(|e| stopped(e.into(), cancel)),
    }
}

/// A run's error once the user stopped the run: an interruption. Stopping
/// kills every engine this process started (one run's interruption in a
/// parallel campaign stops the others' engines too), so an engine that
/// died or stopped answering then was stopped, not broken.
fn stopped(error: RunError, cancel: &Cancel) -> RunError {
    if cancel.is_cancelled() { RunError::Interrupted } else { error }
}

/// Creates `dir` if needed and checks that files can be created in it.
fn writable_dir(dir: &Path) -> Result<(), RunError> {
    let output = |source| RunError::Output { path: dir.to_owned(), source };
    std::fs::create_dir_all(dir).map_err(output)?;
    let probe = dir.join(format!(".kitt-write-test-{}", std::process::id()));
    std::fs::write(&probe, b"").map_err(output)?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// A run passes when some benchmark ran and every benchmark that ran passed.
fn passed(benchmarks: &[BenchmarkResult]) -> bool {
    let ran: Vec<&BenchmarkResult> =
        benchmarks.iter().filter(|b| !matches!(b.status, BenchmarkStatus::NotRun(_))).collect();
    !ran.is_empty() && ran.iter().all(|b| b.status == BenchmarkStatus::Passed)
}

fn identity(running: &Running) -> EngineIdentity {
    EngineIdentity {
        name: running.kind.name().to_owned(),
        version: running.version.clone(),
        binary: running.binary.as_ref().map(|path| path.display().to_string()),
        parameters: running.parameters.clone(),
        comparability: running.comparability.clone(),
    }
}

/// SHA-256 over what decides the numbers: engine and its parameters, the
/// suite's resolved settings, the model file, and the metric definitions.
fn config_hash(request: &RunRequest<'_>, running: &Running) -> String {
    let mut parameters: BTreeMap<&str, String> = BTreeMap::new();
    parameters.insert("engine", running.kind.name().to_owned());
    parameters.insert("engine_version", running.version.clone());
    // The port changes every run and says nothing about the numbers.
    let mut engine_parameters = running.parameters.clone();
    engine_parameters.remove("port");
    parameters.insert("engine_parameters", format!("{engine_parameters:?}"));
    parameters.insert(
        "request_extras",
        serde_json::Value::Object(running.request_extras.clone()).to_string(),
    );
    parameters.insert("suite", format!("{:?}", request.suite.tests));
    parameters
        .insert("model", format!("{}:{}", request.model.path.display(), request.model.size_bytes));
    parameters.insert("metrics_version", METRICS_VERSION.to_string());
    let digest = Sha256::digest(format!("{parameters:?}").as_bytes());
    digest.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Where a run's engine log is written.
pub fn engine_log_path(home: &Path, id: &str) -> PathBuf {
    home.join("logs").join(format!("{id}.engine.log"))
}

/// A new run id: 16 hex digits from the time and the process.
pub fn new_id() -> String {
    let nanos = jiff::Timestamp::now().as_nanosecond();
    let digest = Sha256::digest(format!("{nanos}-{}", std::process::id()).as_bytes());
    digest.iter().take(8).map(|byte| format!("{byte:02x}")).collect()
}

fn now() -> String {
    jiff::Timestamp::now().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::measure::RequestRecord;

    fn benchmark(reasons: &[Option<&str>]) -> BenchmarkResult {
        let requests = reasons
            .iter()
            .map(|reason| RequestRecord {
                finish_reason: reason.map(str::to_owned),
                ..RequestRecord::new(0)
            })
            .collect();
        BenchmarkResult {
            name: "throughput".into(),
            run_number: 1,
            status: BenchmarkStatus::Passed,
            metrics: BTreeMap::new(),
            warmup_ms: Vec::new(),
            requests,
            items: Vec::new(),
            quality: None,
        }
    }

    #[test]
    fn output_length_is_confirmed_only_when_every_request_hit_the_limit() {
        let all = output_length_observed(&[benchmark(&[Some("length"), Some("length")])]);
        assert_eq!(all.as_deref(), Some("all 2 requests ran to max_tokens"));
        let early = output_length_observed(&[benchmark(&[Some("length"), Some("stop")])]).unwrap();
        assert!(early.starts_with("1 of 2 requests stopped before max_tokens"), "{early}");
        let silent = output_length_observed(&[benchmark(&[None, Some("length")])]).unwrap();
        assert!(silent.starts_with("1 of 2 requests gave no finish_reason"), "{silent}");
        assert_eq!(output_length_observed(&[benchmark(&[])]), None);
    }
}
