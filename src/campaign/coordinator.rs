//! The campaign coordinator: the one task that owns a campaign's state.
//!
//! It picks or creates the campaign, takes its lock, brings the stored runs
//! in line with the plan, then executes the runs that need it in plan order:
//! re-check, find the model, start the run's attempt, download the model when
//! it comes from the Hub ([`super::acquire`]), run the suite in-process while
//! phase events update the store and the progress view, record the end, clean
//! up what the run downloaded ([`super::cleanup`]). A run's failure is recorded and the campaign
//! goes on.
//!
//! Prefetch (`disk.prefetch`, on by default): once a run's model is on disk,
//! the next run's download starts beside it when that run's model comes from
//! the Hub and the free space holds its missing bytes plus the reserve (the
//! current model already being on disk, the reserve then holds for both).
//! Its progress shows as `next …`; its outcome is read when its run starts,
//! so a failed prefetch fails that run, not the current one. When it was
//! still downloading while a benchmark measured, the current result records
//! it (`concurrent_activity`). Not prefetched: a next run whose model an
//! engine pulls itself (Ollama tags), and anything while the current run's
//! engine pulls one, whose size kitt cannot hold back.
//!
//! With `parallel: true` the same per-run steps ([`run_one`]) run for
//! several runs at once on devices of their own: [`super::parallel`] places
//! them and drives them from this task.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::acquire::{Acquired, Download, Downloads, Started, hub_repo};
use super::cleanup;
use super::lock::{CampaignLock, LockError, host_name};
use super::progress::{Display, Progress};
use super::pulls;
use crate::acquire::hub::HubClient;
use crate::acquire::local::{LocalIndex, free_space, hf_cache_dir};
use crate::config::{Campaign, NotifyEvent};
use crate::engine::EngineKind;
use crate::engine::pulls::PullLedger;
use crate::error::{KittError, with_causes};
use crate::notify::{Message, Notifier};
use crate::plan::matrix::disk_shortfall_message;
use crate::plan::{Plan, PlannedRun, RunPlan};
use crate::results::CampaignContext;
use crate::results::compare::Compared;
use crate::results::model::{BenchmarkStatus, RunResult};
use crate::run::{
    Beside, Cancel, ModelFile, Phase, RunError, RunRequest, STORING_PHASE, resolve_model,
};
use crate::store::{
    CampaignStatus, Headline, NewCampaign, RunCounts, RunEnd, RunRow, RunSpec, RunStatus, Session,
    Store, StoreError,
};
use crate::suite::Suite;

/// What `kitt campaign run` asked for.
pub struct Options<'a> {
    /// The validated campaign.
    pub campaign: &'a Campaign,
    /// Its plan.
    pub plan: &'a Plan,
    /// The config file's text, for the snapshot and hash.
    pub config_text: &'a str,
    /// The kitt home.
    pub home: &'a Path,
    /// `--resume`.
    pub resume: bool,
    /// `--campaign-id`.
    pub campaign_id: Option<&'a str>,
    /// Progress as plain lines on stderr (stdout carries JSON).
    pub json: bool,
    /// `--limit`: every quality benchmark scores only its first N items.
    pub limit: Option<u32>,
}

/// How the session ended.
#[derive(Debug)]
pub struct Outcome {
    /// The campaign.
    pub campaign_id: String,
    /// Its status now.
    pub status: CampaignStatus,
    /// Whether the user stopped it.
    pub interrupted: bool,
    /// Runs per status (current config).
    pub counts: RunCounts,
    /// Every run of the current config, in order.
    pub runs: Vec<RunRow>,
    /// How long this session took.
    pub elapsed: Duration,
    /// This session's `--limit`.
    pub limit: Option<u32>,
    /// `auto_compare`'s comparison with the previous finished campaign of the
    /// same name (`None`: not asked for, or the campaign did not finish).
    pub comparison: Option<Compared>,
    /// Notifications still being sent; await them after printing the summary
    /// (each channel is bounded by its own timeout).
    pub notifications: Vec<tokio::task::JoinHandle<()>>,
}

/// Runs (or resumes) a campaign to the end or until interrupted.
pub async fn drive(options: &Options<'_>, cancel: &Cancel) -> Result<Outcome, KittError> {
    let began = Instant::now();
    let home = options.home;
    let mut store = Store::open(home).map_err(environment)?;
    let campaign = options.campaign;
    let storage_root = options.plan.storage_root.display().to_string();
    let snapshot = super::config_snapshot(options.config_text);
    let hash = super::config_hash(options.config_text);
    let config_path = std::path::absolute(&campaign.path).unwrap_or_else(|_| campaign.path.clone());
    let config_path = config_path.display().to_string();
    // Another process may create the same generated id between the choice
    // and the insert; a generated id then moves on to the next suffix.
    let (id, _lock) = loop {
        let (id, is_new) = choose_campaign(&store, options)?;
        let lock = CampaignLock::acquire(home, &id).map_err(|error| match error {
            LockError::Held { .. } => KittError::Environment(error.to_string()),
            LockError::Io { .. } => KittError::Environment(with_causes(&error)),
        })?;
        if !is_new {
            break (id, lock);
        }
        let created = store
            .create_campaign(&NewCampaign {
                id: &id,
                name: &campaign.name,
                config_path: &config_path,
                config_hash: &hash,
                config_yaml: &snapshot,
                storage_root: &storage_root,
            })
            .map_err(environment)?;
        if created {
            break (id, lock);
        }
        if options.campaign_id.is_some() {
            return Err(KittError::Usage(format!(
                "campaign `{id}` already exists; add --resume to continue it"
            )));
        }
    };
    reap_orphan_engines();

    let runs = unique_runs(options.plan);
    let specs: Vec<RunSpec<'_>> = runs
        .iter()
        .map(|run| RunSpec {
            key: &run.key,
            model: &run.model,
            engine: run.engine.name(),
            quant: &run.quant,
            suite: &run.suite,
            source: &run.source,
            size_bytes: run.size_bytes,
            download_bytes: run.download_bytes,
            files: &run.files,
        })
        .collect();
    let host = host_name();
    let finished_before =
        store.campaign(&id).map_err(environment)?.is_some_and(|row| row.finished_at.is_some());
    let session_id = store
        .begin_session(
            &Session {
                campaign_id: &id,
                config_path: &config_path,
                config_hash: &hash,
                config_yaml: &snapshot,
                storage_root: &storage_root,
                pid: std::process::id(),
                host: &host,
                item_limit: options.limit,
            },
            &specs,
        )
        .map_err(environment)?;
    let stored = store.campaign_runs(&id, None, None).map_err(environment)?;
    let by_key: HashMap<&str, &PlannedRun> =
        runs.iter().map(|run| (run.key.as_str(), *run)).collect();

    let mut todo = Vec::new();
    let mut kept_failed = Vec::new();
    let mut total = 0u64;
    for row in stored.iter().filter(|row| row.in_config) {
        total += 1;
        let Some(planned) = by_key.get(row.key.as_str()) else { continue };
        // A smoke run's success does not stand for a full one (nor for one
        // with another limit): it is redone.
        if row.done_for(options.limit) {
            continue;
        }
        // A skip never overwrites an outcome: a failed run the config now
        // filters out stays failed (and is not executed).
        if planned.status == RunPlan::Skipped && row.status == RunStatus::Failed {
            continue;
        }
        if planned.status == RunPlan::Skipped {
            let reason = planned.reason.as_deref().unwrap_or("skipped by the plan");
            store.run_skipped(row.id, reason).map_err(environment)?;
            continue;
        }
        if out_of_memory_again(&store, row, &hash)? {
            kept_failed.push(row.key.clone());
            continue;
        }
        todo.push((row.id, *planned));
    }

    // Runs are redone: the comparison made when the campaign last finished
    // no longer describes it (a new one is made when it finishes again).
    if !todo.is_empty() {
        store.forget_comparison(&id).map_err(environment)?;
    }
    // A session with nothing left to do changes no result: it neither
    // compares again nor notifies again.
    let compares = campaign.auto_compare && (!todo.is_empty() || !finished_before);

    let mean = store.mean_run_seconds(&id).map_err(environment)?;
    let display = if options.json {
        Display::Lines(Box::new(std::io::stderr()))
    } else if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        Display::Live(Box::new(std::io::stdout()))
    } else {
        Display::Lines(Box::new(std::io::stdout()))
    };
    let mut progress = Progress::new(display, total, total - todo.len() as u64, mean);
    progress.note(&format!(
        "campaign {id}: {} to run, {} already done or skipped",
        todo.len(),
        total - todo.len() as u64
    ));
    for key in &kept_failed {
        progress.note(&format!(
            "{key}: not retried: it ran out of memory at start-up with this same config; \
             change its engine settings as its reason says, then resume"
        ));
    }
    if let Some(limit) = options.limit {
        progress.note(&format!(
            "smoke run: quality benchmarks score only their first {limit} items; \
             results are marked as limited"
        ));
    }

    let notifier = Arc::new(Notifier::new(&campaign.notifications));
    let mut notes = Vec::new();
    let context = RunContext {
        campaign,
        campaign_id: &id,
        limit: options.limit,
        home,
        storage_root: &options.plan.storage_root,
        local: LocalIndex::new(options.plan.storage_root.clone(), hf_cache_dir()),
    };
    let token = campaign.hf_token.as_ref().map(|token| token.expose().to_owned());
    let hub = HubClient::from_env(token).map_err(|e| e.to_string());
    let mut downloads = Downloads::new(hub, &campaign.devon);
    let mut interrupted = false;
    let mut prefetch: Option<Prefetch> = None;
    if campaign.parallel {
        let mut failed = |key: &str, error: String| {
            notify_failure(&notifier, (&campaign.name, &id), key, &error, &mut notes);
        };
        let sessions = super::parallel::Session {
            context: &context,
            session_id,
            json: options.json,
            done_before: total - todo.len() as u64,
        };
        interrupted = super::parallel::run_all(
            &sessions,
            &mut store,
            &todo,
            (&mut downloads, &mut progress),
            cancel,
            &mut failed,
        )
        .await?;
    }
    let sequential = if campaign.parallel { &todo[..0] } else { &todo[..] };
    for (position, &(run_id, planned)) in sequential.iter().enumerate() {
        if cancel.is_cancelled() {
            interrupted = true;
            break;
        }
        progress.run_started(&planned.key);
        let session = Attempt { session_id, run_id };
        let next = todo.get(position + 1).map(|&(id, run)| (id, run));
        let later: Vec<&PlannedRun> =
            todo[position + 1..].iter().map(|(_, later)| *later).collect();
        let mut acquiring = Acquiring { downloads: &mut downloads, prefetch: &mut prefetch, next };
        let ended = run_one(
            &context,
            &mut store,
            &mut acquiring,
            (session, None),
            (planned, &later),
            cancel,
            &mut progress,
        )
        .await?;
        match ended {
            Ended::Interrupted => {
                progress.run_finished(&planned.key, "interrupted; redone on resume", None);
                interrupted = true;
                break;
            }
            Ended::Done { outcome, seconds, failure } => {
                cleanup::after_run(&context, &store, run_id, planned, &later, &mut progress);
                downloads.after_run(&context, &store, planned, &later, &mut progress).await;
                progress.run_finished(&planned.key, &outcome, seconds);
                if let Some(error) = failure {
                    notify_failure(
                        &notifier,
                        (&campaign.name, &id),
                        &planned.key,
                        &error,
                        &mut notes,
                    );
                }
            }
        }
    }
    // Stopped with a prefetch running: it ends itself (keeping its partial
    // files for the resume) once it sees the stop.
    if let Some(Prefetch { download, .. }) = prefetch.take() {
        downloads.finish(download, &mut progress).await?;
        progress.next_run_done();
    }
    progress.finish();

    let counts = store.run_counts(&id).map_err(environment)?;
    let status = if interrupted {
        CampaignStatus::Pending
    } else if counts.failed > 0 {
        CampaignStatus::Failed
    } else {
        CampaignStatus::Completed
    };
    let session_outcome = if interrupted { "interrupted" } else { status.as_str() };
    store.end_session(session_id, &id, status, session_outcome).map_err(environment)?;
    let runs: Vec<RunRow> = store
        .campaign_runs(&id, None, None)
        .map_err(environment)?
        .into_iter()
        .filter(|row| row.in_config)
        .collect();
    let comparison =
        if compares && !interrupted { compare_finished(&mut store, &id, campaign) } else { None };
    let outcome = Outcome {
        campaign_id: id,
        status,
        interrupted,
        counts,
        runs,
        elapsed: began.elapsed(),
        limit: options.limit,
        comparison,
        notifications: Vec::new(),
    };

    if !interrupted && notifier.wants(NotifyEvent::Complete) {
        let message = Message {
            title: format!("kitt: campaign {} {}", campaign.name, status),
            body: completion_body(campaign, &outcome),
        };
        notes.push(tokio::spawn({
            let notifier = Arc::clone(&notifier);
            async move {
                notifier.send(NotifyEvent::Complete, &message).await;
            }
        }));
    }
    if let Some(Compared::Done(comparison)) = &outcome.comparison
        && comparison.regression_count() > 0
        && notifier.wants(NotifyEvent::Regression)
    {
        let message = crate::report::compare::regression_message(&campaign.name, comparison);
        notes.push(tokio::spawn({
            let notifier = Arc::clone(&notifier);
            async move {
                notifier.send(NotifyEvent::Regression, &message).await;
            }
        }));
    }
    Ok(Outcome { notifications: notes, ..outcome })
}

/// `auto_compare` once the campaign has finished; a store failure here is a
/// warning, since every run is already recorded.
fn compare_finished(store: &mut Store, id: &str, campaign: &Campaign) -> Option<Compared> {
    match super::compare::after_campaign(store, id, &campaign.thresholds) {
        Ok(compared) => compared,
        Err(error) => {
            eprintln!("warning: auto_compare: {}", with_causes(&error));
            None
        }
    }
}

/// Sends the failure notification of run `key` when the campaign wants it.
fn notify_failure(
    notifier: &Arc<Notifier>,
    (name, id): (&str, &str),
    key: &str,
    error: &str,
    notes: &mut Vec<tokio::task::JoinHandle<()>>,
) {
    if !notifier.wants(NotifyEvent::Failure) {
        return;
    }
    let message = Message {
        title: format!("kitt: run failed: {key}"),
        body: failure_body(name, id, key, error),
    };
    let notifier = Arc::clone(notifier);
    notes.push(tokio::spawn(async move {
        notifier.send(NotifyEvent::Failure, &message).await;
    }));
}

/// Whether a failed run ran out of memory at start-up under the config it
/// would run with now: the same settings fail the same way, so it is kept
/// failed instead of being started again.
fn out_of_memory_again(store: &Store, row: &RunRow, hash: &str) -> Result<bool, KittError> {
    let out_of_memory = row.status == RunStatus::Failed
        && row
            .reason
            .as_deref()
            .is_some_and(|reason| reason.starts_with(crate::engine::OUT_OF_MEMORY));
    if !out_of_memory {
        return Ok(false);
    }
    let tried_with = store.last_attempt_config_hash(row.id).map_err(environment)?;
    Ok(tried_with.as_deref() == Some(hash))
}

/// Stops engines (processes and containers) a kitt that died left running,
/// and says so.
pub fn reap_orphan_engines() {
    let orphans = crate::engine::process::reap_orphans();
    if !orphans.is_empty() {
        eprintln!(
            "warning: stopped {} engine process(es) left running by a kitt that died: {orphans:?}",
            orphans.len()
        );
    }
    let containers = crate::engine::docker::reap_orphan_containers();
    if !containers.is_empty() {
        eprintln!(
            "warning: removed {} container(s) left running by a kitt that died: {}",
            containers.len(),
            containers.join(", ")
        );
    }
}

/// The campaign to drive and whether it must be created.
fn choose_campaign(store: &Store, options: &Options<'_>) -> Result<(String, bool), KittError> {
    let name = &options.campaign.name;
    match (options.resume, options.campaign_id) {
        (true, Some(id)) => match store.campaign(id).map_err(environment)? {
            Some(found) => {
                if &found.name != name {
                    eprintln!(
                        "note: campaign `{id}` was created as `{}`; resuming it with `{name}`",
                        found.name
                    );
                }
                Ok((found.id, false))
            }
            None => Err(KittError::Usage(format!(
                "no campaign `{id}` in {}; `kitt campaign list` shows the campaigns",
                store.path().display()
            ))),
        },
        (true, None) => match store.latest_campaign(Some(name)).map_err(environment)? {
            Some(found) => Ok((found.id, false)),
            None => {
                eprintln!("note: no earlier campaign named `{name}`; starting a new one");
                Ok((fresh_id(store, name)?, true))
            }
        },
        (false, Some(id)) => {
            if !super::valid_campaign_id(id) {
                return Err(KittError::Usage(format!(
                    "--campaign-id `{id}` is not a valid id: use 1 to 100 letters, digits, `.`, `_` or `-`"
                )));
            }
            if store.campaign(id).map_err(environment)?.is_some() {
                return Err(KittError::Usage(format!(
                    "campaign `{id}` already exists; add --resume to continue it"
                )));
            }
            Ok((id.to_owned(), true))
        }
        (false, None) => Ok((fresh_id(store, name)?, true)),
    }
}

/// A new id; a suffix keeps ids started within the same second apart.
pub(crate) fn fresh_id(store: &Store, name: &str) -> Result<String, KittError> {
    let base = super::new_campaign_id(name, jiff::Timestamp::now());
    let mut id = base.clone();
    let mut n = 2;
    while store.campaign(&id).map_err(environment)?.is_some() {
        id = format!("{base}-{n}");
        n += 1;
    }
    Ok(id)
}

/// The plan's runs, each key once (the first wins).
fn unique_runs(plan: &Plan) -> Vec<&PlannedRun> {
    let mut seen = HashSet::new();
    plan.runs.iter().filter(|run| seen.insert(run.key.as_str())).collect()
}

/// What every run of a session shares.
pub(super) struct RunContext<'a> {
    pub(super) campaign: &'a Campaign,
    pub(super) campaign_id: &'a str,
    pub(super) limit: Option<u32>,
    pub(super) home: &'a Path,
    pub(super) storage_root: &'a PathBuf,
    pub(super) local: LocalIndex,
}

/// The next run's download, running beside the current run.
pub(super) struct Prefetch {
    /// The next run's key.
    key: String,
    /// Its repository.
    repo: String,
    download: Download,
}

/// What a run needs to get its model and start the next one's.
pub(super) struct Acquiring<'a, 'p> {
    pub(super) downloads: &'a mut Downloads,
    /// A download running beside the runs: for this run (started by the
    /// previous one), or for the next (started by this one).
    pub(super) prefetch: &'a mut Option<Prefetch>,
    /// The next run, to prefetch for.
    pub(super) next: Option<(i64, &'p PlannedRun)>,
}

/// The session and the stored run an attempt belongs to.
#[derive(Clone, Copy)]
pub(super) struct Attempt {
    pub(super) session_id: i64,
    pub(super) run_id: i64,
}

pub(super) enum Ended {
    Done {
        /// e.g. `success in 41.2 s, 52.3 tok/s`.
        outcome: String,
        /// Attempt duration (none for a skip).
        seconds: Option<f64>,
        /// The error of a failed run.
        failure: Option<String>,
    },
    Interrupted,
}

/// Runs `planned` (`later` are the session's runs after it), on the devices
/// of `placement` in a parallel campaign.
pub(super) async fn run_one(
    context: &RunContext<'_>,
    store: &mut Store,
    acquiring: &mut Acquiring<'_, '_>,
    (session, placement): (Attempt, Option<&super::parallel::Placement>),
    (planned, later): (&PlannedRun, &[&PlannedRun]),
    cancel: &Cancel,
    progress: &mut Progress,
) -> Result<Ended, KittError> {
    let Attempt { session_id, run_id } = session;
    let skipped = |store: &Store, reason: String| -> Result<Ended, KittError> {
        store.run_skipped(run_id, &reason).map_err(environment)?;
        Ok(Ended::Done { outcome: format!("skipped: {reason}"), seconds: None, failure: None })
    };
    // This run's download, when the previous run started it; anything else
    // (never expected) is dropped, which stops it.
    let prefetched = acquiring.prefetch.take().filter(|p| p.download.run_id == run_id);
    let downloads = &mut *acquiring.downloads;
    if let Some(reason) = disk_shortfall(context, planned) {
        return skipped(store, reason);
    }
    // A Hub model is checked now (listing, free space for what is really
    // missing) and downloaded once the attempt has started.
    let model = match (prefetched, hub_repo(planned)) {
        (Some(prefetched), _) => Ok(Source::Fetch(Fetch::Prefetched(Box::new(prefetched)))),
        (None, Some(repo)) => {
            // A run that waits for disk space holds its devices: status
            // shows it among the current runs, with what it waits for.
            let held = placement.map(super::parallel::Placement::short);
            let waiting = &mut |text: &str| {
                if let Some(devices) = &held
                    && let Err(error) = store.run_waiting(run_id, text, devices)
                {
                    tracing::warn!(%error, "cannot record that a run waits for disk space");
                }
                progress.phase(text);
            };
            match downloads.prepare(context, store, (planned, repo), cancel, waiting).await {
                Ok(Some(pending)) => Ok(Source::Fetch(Fetch::Pending(Box::new(pending)))),
                // Stopped while it waited for disk space: never started.
                Ok(None) => return Ok(Ended::Interrupted),
                Err(Unavailable::Skip(reason)) => return skipped(store, reason),
                Err(Unavailable::Fail(error)) => Err(error),
            }
        }
        (None, None) => match local_model(context, planned, None) {
            Ok(model) => Ok(Source::Local(model)),
            Err(Unavailable::Skip(reason)) => return skipped(store, reason),
            Err(Unavailable::Fail(error)) => Err(error),
        },
    };
    let suite = Suite::load(&planned.suite, context.home)
        .map(|mut suite| {
            if let Some(limit) = context.limit {
                suite.limit_quality(limit);
            }
            suite
        })
        .map_err(|error| error.to_string());

    let devices = placement.map(super::parallel::Placement::short);
    let attempt = store.run_started(session_id, run_id, devices.as_deref()).map_err(environment)?;
    let started = Instant::now();
    let failed = |store: &Store, error: String| -> Result<Ended, KittError> {
        let seconds = started.elapsed().as_secs_f64();
        let end = RunEnd::Failed { error: &error, result_id: None };
        store.run_finished(run_id, attempt, seconds, &end).map_err(environment)?;
        Ok(Ended::Done {
            outcome: format!("failed: {}", super::brief(&error)),
            seconds: Some(seconds),
            failure: Some(error),
        })
    };
    let (model, suite) = match (model, suite) {
        (Ok(model), Ok(suite)) => (model, suite),
        (Err(error), _) | (_, Err(error)) => return failed(store, error),
    };
    let model = match model {
        Source::Local(model) => model,
        Source::Fetch(fetch) => {
            let acquired = match fetch {
                Fetch::Pending(pending) => {
                    let fetched = downloads
                        .fetch(context, store, session_id, run_id, *pending, cancel, progress);
                    fetched.await?
                }
                Fetch::Prefetched(prefetched) => {
                    let Prefetch { repo, download, .. } = *prefetched;
                    progress.phase(&format!("the download of {repo} began beside the last run"));
                    let acquired = downloads.finish(download, progress).await?;
                    progress.next_run_done();
                    acquired
                }
            };
            let dir = match acquired {
                Acquired::Ready(dir) => dir,
                Acquired::Interrupted => {
                    let seconds = started.elapsed().as_secs_f64();
                    store
                        .run_finished(run_id, attempt, seconds, &RunEnd::Interrupted)
                        .map_err(environment)?;
                    return Ok(Ended::Interrupted);
                }
                Acquired::Skip(reason) => {
                    let seconds = started.elapsed().as_secs_f64();
                    let end = RunEnd::Skipped(&reason);
                    store.run_finished(run_id, attempt, seconds, &end).map_err(environment)?;
                    let outcome = format!("skipped: {reason}");
                    return Ok(Ended::Done { outcome, seconds: None, failure: None });
                }
                Acquired::Fail(error) => return failed(store, error),
            };
            match local_model(context, planned, Some(&dir)) {
                Ok(model) => model,
                Err(Unavailable::Skip(error) | Unavailable::Fail(error)) => {
                    return failed(store, error);
                }
            }
        }
    };
    *acquiring.prefetch = start_prefetch(context, store, acquiring, session_id, planned, cancel)
        .await
        .inspect(|started| progress.next_run(&started.key, "downloading beside this run", false));
    let prefetch = &mut *acquiring.prefetch;
    let own_beside = Beside::default();
    let beside = placement.map_or(&own_beside, |placement| &*placement.beside);
    let engine = &context.campaign.engines[planned.engine_index];
    let (phases, mut phase_events) = tokio::sync::mpsc::unbounded_channel();
    let (ledger, mut pull_notes) = PullLedger::channel();
    let pull_rules = pulls::rules(context, store, planned, later, ledger);
    let run_id_text = crate::run::new_id();
    let request = RunRequest {
        id: run_id_text.clone(),
        campaign: Some(context.campaign_id.to_owned()),
        model: &model,
        engine: planned.engine,
        config: &engine.config,
        suite: &suite,
        home: context.home,
        output_root: context.home.to_owned(),
        phases: Some(phases),
        defer_store: true,
        beside: Some(beside),
        pulls: pull_rules,
        context: Some(CampaignContext::new(
            context.campaign,
            context.campaign_id,
            planned,
            model.format,
        )),
        devices: placement.map(|placement| (placement.devices.as_slice(), placement.described())),
        cpu_threads: placement.and_then(|placement| placement.cpu_threads),
    };
    let execution = crate::run::execute(&request, cancel);
    tokio::pin!(execution);
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    let mut timing = EngineTiming::default();
    let executed = loop {
        tokio::select! {
            biased;
            executed = &mut execution => break executed,
            Some(note) = pull_notes.recv() => {
                pulls::record(context, store, (session_id, run_id), planned, note, progress);
            }
            Some(phase) = phase_events.recv() => {
                timing.see(&phase);
                if let Err(error) = store.run_phase(run_id, &phase.text) {
                    tracing::warn!(%error, "cannot record the run's phase");
                }
                if phase.measuring
                    && let Some(next) = prefetch.as_ref().filter(|p| p.download.is_open())
                {
                    beside.add(&format!(
                        "the download of {} for the next run ({}) ran while it measured",
                        next.repo, next.key
                    ));
                }
                progress.phase(&phase.text);
            }
            shown = next_shown(prefetch), if prefetch.as_ref().is_some_and(|p| p.download.is_open()) => {
                let key = prefetch.as_ref().map(|p| p.key.clone()).unwrap_or_default();
                match shown {
                    Some(shown) => shown.apply_next(&key, progress),
                    None => progress.next_run_done(),
                }
            }
            _ = ticker.tick() => progress.tick(),
        }
    };
    // Phases and notes sent just before the run returned (a note whose sender
    // stopped waiting is still recorded).
    while let Ok(phase) = phase_events.try_recv() {
        timing.see(&phase);
    }
    while let Ok(note) = pull_notes.try_recv() {
        pulls::record(context, store, (session_id, run_id), planned, note, progress);
    }
    let seconds = started.elapsed().as_secs_f64();
    if let Some(engine) = timing.engine() {
        // Engine start + suite + engine stop; everything else in `seconds`
        // (model lookup, result store, run directory) is kitt's own cost.
        let engine_ms = engine.as_secs_f64() * 1000.0;
        let overhead_ms = seconds * 1000.0 - engine_ms;
        tracing::debug!(key = %planned.key, engine_ms, overhead_ms, "run timing");
    }
    let (end_error, ended) = match executed {
        Ok(outcome) if outcome.result.passed => {
            let headline = headline(&outcome.result);
            let run_dir = outcome.run_dir.display().to_string();
            store
                .run_succeeded(&outcome.result, run_id, attempt, seconds, &run_dir, headline)
                .map_err(environment)?;
            let rate = headline
                .output_tokens_per_second
                .map(|rate| format!(", {rate:.1} tok/s"))
                .unwrap_or_default();
            let outcome = format!("success in {seconds:.1} s{rate}");
            return Ok(Ended::Done { outcome, seconds: Some(seconds), failure: None });
        }
        Ok(outcome) => {
            // Stored too: the failed measurements are evidence.
            store.insert_result(&outcome.result).map_err(environment)?;
            let error = benchmark_failures(&outcome.result);
            let end = RunEnd::Failed { error: &error, result_id: Some(&outcome.result.id) };
            store.run_finished(run_id, attempt, seconds, &end).map_err(environment)?;
            (None, error)
        }
        Err(RunError::Interrupted) => {
            store
                .run_finished(run_id, attempt, seconds, &RunEnd::Interrupted)
                .map_err(environment)?;
            return Ok(Ended::Interrupted);
        }
        Err(error @ (RunError::Store(_) | RunError::Output { .. })) => {
            // Nothing later could be stored either: stop the campaign.
            let text = with_causes(&error);
            let end = RunEnd::Failed { error: &text, result_id: None };
            let _ = store.run_finished(run_id, attempt, seconds, &end);
            (Some(KittError::Environment(text.clone())), text)
        }
        Err(error) => {
            let mut text = with_causes(&error);
            let home = std::path::absolute(context.home).unwrap_or_else(|_| context.home.into());
            let log = crate::run::engine_log_path(&home, &run_id_text);
            if log.is_file() {
                text.push_str(&format!("\n{}{}", super::ENGINE_LOG_NOTE, log.display()));
            }
            let end = RunEnd::Failed { error: &text, result_id: None };
            store.run_finished(run_id, attempt, seconds, &end).map_err(environment)?;
            (None, text)
        }
    };
    if let Some(error) = end_error {
        return Err(error);
    }
    Ok(Ended::Done {
        outcome: format!("failed after {seconds:.1} s: {}", super::brief(&ended)),
        seconds: Some(seconds),
        failure: Some(ended),
    })
}

/// Starts the next run's download beside this run when it may: prefetch on,
/// the next model from the Hub with bytes missing, room for them plus the
/// reserve now, and this run's engine not pulling a model of its own.
async fn start_prefetch(
    context: &RunContext<'_>,
    store: &Store,
    acquiring: &mut Acquiring<'_, '_>,
    session_id: i64,
    current: &PlannedRun,
    cancel: &Cancel,
) -> Option<Prefetch> {
    let (next_id, next) = acquiring.next?;
    let pulls = pulls::ollama_tag(current).is_some();
    let prefetch = context.campaign.disk.prefetch && acquiring.downloads.can_prefetch();
    if !prefetch || pulls || cancel.is_cancelled() {
        return None;
    }
    let repo = hub_repo(next)?;
    // A sequential session shares no reserve: the check never waits.
    let quiet = &mut |_: &str| {};
    let prepared = acquiring.downloads.prepare(context, store, (next, repo), cancel, quiet);
    let pending = match prepared.await {
        Ok(Some(pending)) => pending,
        Ok(None) => return None,
        Err(Unavailable::Skip(why) | Unavailable::Fail(why)) => {
            tracing::debug!(key = %next.key, "not prefetched: {why}");
            return None;
        }
    };
    let repo = pending.repo().to_owned();
    match acquiring.downloads.start(context, session_id, next_id, pending, cancel) {
        Started::Running(download) => Some(Prefetch { key: next.key.clone(), repo, download }),
        Started::Ended(_) => None,
    }
}

/// What the prefetch shows next (never, without one).
async fn next_shown(prefetch: &mut Option<Prefetch>) -> Option<super::download_view::Shown> {
    match prefetch {
        Some(prefetch) => prefetch.download.next_shown().await,
        None => std::future::pending().await,
    }
}

/// When the engine started and when it had stopped, from the run's phases.
#[derive(Default)]
struct EngineTiming {
    started: Option<Instant>,
    stopped: Option<Instant>,
}

impl EngineTiming {
    fn see(&mut self, phase: &Phase) {
        if phase.text.starts_with("starting ") {
            self.started = Some(phase.at);
        } else if phase.text == STORING_PHASE {
            self.stopped = Some(phase.at);
        }
    }

    fn engine(&self) -> Option<Duration> {
        Some(self.stopped?.duration_since(self.started?))
    }
}

/// Where a run's model comes from once its checks passed.
enum Source {
    /// On this machine (or pulled by the engine itself).
    Local(ModelFile),
    /// To download from the Hub first.
    Fetch(Fetch),
}

/// A Hub model's download.
enum Fetch {
    /// Checked, to start now.
    Pending(Box<super::acquire::Pending>),
    /// Running since the previous run started it.
    Prefetched(Box<Prefetch>),
}

/// The reserve re-checked with the real free space now. A Hub download is
/// checked against the bytes it really misses when it is prepared instead,
/// an Ollama pull against the free space of the server's store.
fn disk_shortfall(context: &RunContext<'_>, planned: &PlannedRun) -> Option<String> {
    if planned.engine == EngineKind::Openai || hub_repo(planned).is_some() {
        return None;
    }
    if let Some(tag) = pulls::ollama_tag(planned) {
        return pulls::disk_shortfall(context, planned, tag);
    }
    let root = context.storage_root;
    let free = free_space(root)?;
    let reserve = context.campaign.disk.reserve_bytes;
    let needed = reserve.saturating_add(planned.download_bytes);
    (free < needed).then(|| disk_shortfall_message(root, planned.download_bytes, 0, reserve, free))
}

/// Why a run cannot have its model.
pub(super) enum Unavailable {
    /// A check keeps it from running.
    Skip(String),
    /// It fails with this error.
    Fail(String),
}

/// The model of a run, when it is on this machine: in `downloaded` (the
/// variant's directory under the storage root) for a Hub download.
fn local_model(
    context: &RunContext<'_>,
    planned: &PlannedRun,
    downloaded: Option<&Path>,
) -> Result<ModelFile, Unavailable> {
    let fail = |error: crate::run::ModelError| Unavailable::Fail(error.to_string());
    let (local, root) = (&context.local, context.storage_root);
    let (kind, repo) = planned.source.split_once(':').unwrap_or(("", planned.source.as_str()));
    match (planned.engine, kind) {
        (EngineKind::Openai, _) => {
            let id = planned.files.first().map_or(planned.model.as_str(), String::as_str);
            return resolve_model(id, Some(&planned.quant), EngineKind::Openai, local)
                .map_err(fail);
        }
        // The engine pulls a library tag itself.
        (EngineKind::Ollama, "ollama") => return Ok(ollama_tag_model(planned, repo)),
        _ => {}
    }
    let dir = match (kind, downloaded) {
        ("hf", Some(dir)) => dir.to_owned(),
        ("local" | "hf-cache", _) => match local.find(repo) {
            Some(found) => found.dir,
            None => {
                return Err(Unavailable::Fail(format!("`{repo}` is no longer on this machine")));
            }
        },
        _ => {
            return Err(Unavailable::Skip(format!(
                "the model's source `{}` is not on this machine; put its files under {} and \
                 resume",
                planned.source,
                root.join("huggingface").join(repo).display()
            )));
        }
    };
    let Some(first) = planned.files.first() else {
        return Err(Unavailable::Fail(format!("the plan lists no file for `{}`", planned.key)));
    };
    let path = dir.join(first);
    if !path.is_file() {
        return Err(Unavailable::Fail(format!("{} is no longer there", path.display())));
    }
    if !first.to_ascii_lowercase().ends_with(".gguf") {
        return Ok(safetensors_model(planned, &dir));
    }
    let mut model = resolve_model(&path.display().to_string(), None, EngineKind::LlamaCpp, local)
        .map_err(fail)?;
    if planned.engine == EngineKind::Vllm {
        model.tokenizer = tokenizer_for(context, planned);
    }
    Ok(model)
}

/// An Ollama library tag, pulled by the engine when it is missing.
fn ollama_tag_model(planned: &PlannedRun, tag: &str) -> ModelFile {
    ModelFile {
        path: PathBuf::from(tag),
        name: tag.to_owned(),
        quant: planned.quant.clone(),
        size_bytes: planned.size_bytes.unwrap_or(0),
        architecture: None,
        parameters: None,
        format: Some(crate::engine::Format::Ollama),
        tokenizer: None,
    }
}

/// A safetensors checkpoint: the repository's directory.
fn safetensors_model(planned: &PlannedRun, dir: &Path) -> ModelFile {
    ModelFile {
        path: dir.to_owned(),
        name: planned.model.clone(),
        quant: planned.quant.clone(),
        size_bytes: planned.size_bytes.unwrap_or(0),
        architecture: None,
        parameters: None,
        format: Some(crate::engine::Format::Safetensors),
        tokenizer: None,
    }
}

/// The tokenizer for a GGUF served by vLLM: the local copy of the model's
/// `safetensors_repo` when there is one, else the repository id.
fn tokenizer_for(context: &RunContext<'_>, planned: &PlannedRun) -> Option<String> {
    let spec = context.campaign.models.iter().find(|model| model.name == planned.model)?;
    let repo = spec.safetensors_repo.as_deref()?;
    Some(match context.local.find(repo) {
        Some(found) => found.dir.display().to_string(),
        None => repo.to_owned(),
    })
}

/// Output tokens per second (the suite's best), TTFT p50 (first benchmark
/// that has it) and the error rate over every request of the suite.
pub fn headline(result: &RunResult) -> Headline {
    let rate = result
        .benchmarks
        .iter()
        .flat_map(|benchmark| benchmark.metrics.iter())
        .filter(|(name, _)| name.ends_with("output_tokens_per_second"))
        .map(|(_, value)| *value)
        .reduce(f64::max);
    let ttft = result.benchmarks.iter().find_map(|b| b.metrics.get("ttft_ms_p50").copied());
    let requests: Vec<bool> = result
        .benchmarks
        .iter()
        .flat_map(|benchmark| benchmark.requests.iter().map(|request| request.is_success()))
        .collect();
    let error_rate = (!requests.is_empty())
        .then(|| requests.iter().filter(|ok| !**ok).count() as f64 / requests.len() as f64);
    Headline { output_tokens_per_second: rate, ttft_ms_p50: ttft, error_rate }
}

fn benchmark_failures(result: &RunResult) -> String {
    let failures: Vec<String> = result
        .benchmarks
        .iter()
        .filter_map(|benchmark| match &benchmark.status {
            BenchmarkStatus::Failed(reason) => {
                Some(format!("{} run {}: {reason}", benchmark.name, benchmark.run_number))
            }
            _ => None,
        })
        .collect();
    if failures.is_empty() {
        "no benchmark produced measurements".to_owned()
    } else {
        format!("no valid measurements: {}", failures.join("; "))
    }
}

/// A failed run's notification: the reason on one line (with the log's
/// cause) and where the full engine log is.
fn failure_body(campaign: &str, id: &str, key: &str, error: &str) -> String {
    let mut body =
        format!("Campaign: {campaign} ({id})\nRun: {key}\nError: {}", super::brief(error));
    if let Some(log) = error.lines().find_map(|line| line.strip_prefix(super::ENGINE_LOG_NOTE)) {
        body.push_str(&format!("\nEngine log: {log}"));
    }
    body
}

fn completion_body(campaign: &Campaign, outcome: &Outcome) -> String {
    let counts = &outcome.counts;
    let mut body = format!(
        "Campaign: {} ({})\nStatus: {}\nRuns: {} total, {} succeeded, {} failed, {} skipped\nDuration: {}",
        campaign.name,
        outcome.campaign_id,
        outcome.status,
        counts.total(),
        counts.success,
        counts.failed,
        counts.skipped,
        super::progress::clock(outcome.elapsed),
    );
    for run in outcome.runs.iter().filter(|run| run.status == RunStatus::Failed).take(20) {
        let reason = run.reason.as_deref().map(super::brief).unwrap_or_default();
        body.push_str(&format!("\nFailed: {}: {reason}", run.key));
    }
    body
}

/// A store failure: the environment kitt runs in, not the run.
pub(in crate::campaign) fn environment(error: StoreError) -> KittError {
    KittError::Environment(with_causes(&error))
}
