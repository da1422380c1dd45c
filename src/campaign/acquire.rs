//! A run's model download inside a campaign, and the cleanup after the run.
//!
//! Before the first byte, [`Downloads::prepare`] lists the repository (sizes
//! and SHA-256), finds which files are missing under the storage root and
//! checks the real missing bytes plus `disk.reserve_gb` against the free
//! space. [`Downloads::fetch`] then records every missing file in the store,
//! runs [`variant::download`] as a task and turns its events into store rows,
//! the run's phase and the progress view; the task only sends events, so the
//! same loop can later watch a download that runs beside a benchmark.
//!
//! Decisions:
//! - A 401/403 on a download is permanent for its repository: the other runs
//!   using the repository in this session end the same way without asking
//!   again. They fail, or are skipped with `skip_gated: true`.
//! - A permanent failure (refusal, hash mismatch, retries exhausted) removes
//!   the file's partial download; an interrupted one (Ctrl-C) keeps it, so
//!   `--resume` continues where it stopped.
//! - A file at a download's final path with the wrong size that kitt did not
//!   download fails the run rather than being overwritten.
//! - With `disk.cleanup_after_run`, [`Downloads::cleanup`] deletes after a
//!   run only the files the store says this campaign downloaded, and only
//!   when no later run of the session loads them; then it prunes the empty
//!   directories those downloads created, never the storage root.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::coordinator::{RunContext, Unavailable};
use super::progress::{Progress, clock};
use crate::acquire::download::{self, DownloadError};
use crate::acquire::hub::HubClient;
use crate::acquire::local::free_space;
use crate::acquire::variant::{self, Variant, VariantEvent, VariantFile};
use crate::error::{KittError, with_causes};
use crate::plan::PlannedRun;
use crate::plan::matrix::{disk_shortfall_message, human_bytes};
use crate::run::Cancel;
use crate::store::{DownloadRow, NewDownload, Store, StoreError};

/// The download side of a campaign session.
pub(super) struct Downloads {
    hub: Result<HubClient, String>,
    /// Repositories that refused a download in this session, with the reason.
    refused: HashMap<String, String>,
}

/// A run's variant, checked and ready to download.
pub(super) struct Pending {
    variant: Variant,
    missing: Vec<VariantFile>,
}

/// How a run's download ended.
pub(super) enum Acquired {
    /// Every file is under the storage root; the variant's directory.
    Ready(PathBuf),
    /// The user stopped it; partial files are kept.
    Interrupted,
    /// Not downloaded, for this reason; the run is skipped.
    Skip(String),
    /// Not downloaded, for this reason; the run failed.
    Fail(String),
}

/// The Hub repository a run downloads from, when its source is the Hub.
pub(super) fn hub_repo(planned: &PlannedRun) -> Option<&str> {
    planned.source.strip_prefix("hf:")
}

impl Downloads {
    /// Downloads through `hub` (an error to report on every download when the
    /// client could not be built).
    pub(super) fn new(hub: Result<HubClient, String>) -> Self {
        Downloads { hub, refused: HashMap::new() }
    }

    /// Checks before the first byte: a refusal earlier in the session, the
    /// listing, files in the way, and free space for the real missing bytes.
    pub(super) async fn prepare(
        &self,
        context: &RunContext<'_>,
        store: &Store,
        planned: &PlannedRun,
        repo: &str,
    ) -> Result<Pending, Unavailable> {
        if let Some(reason) = self.refused.get(repo) {
            tracing::debug!(key = %planned.key, repo, "not asking the Hub again: {reason}");
            return Err(refusal(context, reason.clone()));
        }
        let hub = self.hub.as_ref().map_err(|error| Unavailable::Fail(error.clone()))?;
        let listing = hub
            .repo(repo)
            .await
            .map_err(|error| Unavailable::Fail(format!("cannot download `{repo}`: {error}")))?;
        let root = context.storage_root;
        let mut files = planned.files.clone();
        if is_checkpoint(planned) {
            files.extend(variant::checkpoint_support(&listing, &planned.files));
        }
        let variant =
            Variant::from_listing(hub, &listing, &files, root).map_err(Unavailable::Fail)?;
        for file in &variant.files {
            in_the_way(store, repo, file).map_err(Unavailable::Fail)?;
        }

        let missing: Vec<VariantFile> = variant.missing().into_iter().cloned().collect();
        if let Some(free) = free_space(root) {
            let bytes = variant.missing_bytes();
            let reserve = context.campaign.disk.reserve_bytes;
            if free < reserve.saturating_add(bytes) {
                let message = disk_shortfall_message(root, bytes, 0, reserve, free);
                return Err(Unavailable::Skip(message));
            }
        }
        Ok(Pending { variant, missing })
    }

    /// Downloads what `pending` misses, recording each file before its first byte.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn fetch(
        &mut self,
        context: &RunContext<'_>,
        store: &Store,
        session_id: i64,
        run_id: i64,
        pending: Pending,
        cancel: &Cancel,
        progress: &mut Progress,
    ) -> Result<Acquired, KittError> {
        let Pending { variant, missing } = pending;
        if missing.is_empty() {
            return Ok(Acquired::Ready(variant.dir));
        }
        let downloader = match self.hub.as_ref().map(HubClient::downloader) {
            Ok(Ok(downloader)) => downloader,
            Ok(Err(error)) => return Ok(Acquired::Fail(with_causes(&error))),
            Err(error) => return Ok(Acquired::Fail(error.clone())),
        };
        let mut rows = HashMap::new();
        for file in &missing {
            let recorded = record_start(context, store, session_id, run_id, &variant.repo, file)
                .map_err(environment)?;
            rows.insert(file.path.clone(), recorded);
        }

        let (events, mut received) = tokio::sync::mpsc::unbounded_channel();
        let mut task = tokio::spawn(variant::download(downloader, missing.clone(), events));
        let mut view = View::new(&variant.repo, &missing);
        let mut ticker = tokio::time::interval(Duration::from_secs(1));
        let joined = loop {
            tokio::select! {
                biased;
                () = cancel.cancelled() => {
                    task.abort();
                    let _ = (&mut task).await;
                    while let Ok(event) = received.try_recv() {
                        view.see(store, run_id, &rows, event, progress);
                    }
                    view.flush(store, run_id, &rows);
                    return Ok(Acquired::Interrupted);
                }
                Some(event) = received.recv() => view.see(store, run_id, &rows, event, progress),
                joined = &mut task => break joined,
                _ = ticker.tick() => {
                    view.flush(store, run_id, &rows);
                    progress.tick();
                }
            }
        };
        while let Ok(event) = received.try_recv() {
            view.see(store, run_id, &rows, event, progress);
        }
        view.flush(store, run_id, &rows);

        let failure = match joined {
            Ok(Ok(())) => {
                let done = view.finished_text();
                record_phase(store, run_id, &done);
                progress.phase(&done);
                return Ok(Acquired::Ready(variant.dir));
            }
            Ok(Err(failed)) => failed,
            Err(error) => {
                let reason = format!("the download of `{}` stopped: {error}", variant.repo);
                abandon(store, &rows, None, &reason);
                prune_created(store, context, &rows);
                return Ok(Acquired::Fail(reason));
            }
        };
        let error = with_causes(&failure.error);
        abandon(store, &rows, Some(&failure.path), &error);
        prune_created(store, context, &rows);
        let repo = &variant.repo;
        Ok(match &failure.error {
            DownloadError::Refused { status, hint, .. } => {
                let reason = format!(
                    "`{repo}` refused the download of `{}` (HTTP {status}); {hint}",
                    failure.path
                );
                self.refused.insert(repo.clone(), reason.clone());
                match refusal(context, reason) {
                    Unavailable::Skip(reason) => Acquired::Skip(reason),
                    Unavailable::Fail(reason) => Acquired::Fail(reason),
                }
            }
            error => Acquired::Fail(format!("cannot download `{repo}`: {}", with_causes(error))),
        })
    }

    /// With `disk.cleanup_after_run`, deletes the files of `planned` that
    /// this campaign downloaded and no run of `later` loads, then prunes the
    /// empty directories their downloads created.
    pub(super) fn cleanup(
        &self,
        context: &RunContext<'_>,
        store: &Store,
        run_id: i64,
        planned: &PlannedRun,
        later: &[&PlannedRun],
        progress: &mut Progress,
    ) {
        if !context.campaign.disk.cleanup_after_run {
            return;
        }
        let root = context.storage_root;
        // The run's files, and what its own downloads added (a checkpoint's
        // configuration and tokenizer files).
        let mut candidates: Vec<PathBuf> = storage_paths(root, planned);
        let own = campaign_downloads(store, context.campaign_id);
        for row in own.iter().filter(|row| row.run_id == run_id && row.status == "present") {
            let path = PathBuf::from(&row.path);
            if !candidates.contains(&path) {
                candidates.push(path);
            }
        }
        let mut removed = Vec::new();
        for path in candidates {
            if later.iter().any(|run| loads(root, run, &path)) {
                tracing::debug!(path = %path.display(), "kept: a later run loads it");
                continue;
            }
            match remove_own(store, context.campaign_id, &path) {
                Ok(Some(bytes)) => removed.push((path, bytes)),
                Ok(None) => {}
                Err(error) => tracing::warn!("cannot clean up {}: {error}", path.display()),
            }
        }
        if removed.is_empty() {
            return;
        }
        let bytes: u64 = removed.iter().map(|(_, bytes)| bytes).sum();
        let files: Vec<PathBuf> = removed.iter().map(|(path, _)| path.clone()).collect();
        prune(root, &files, &created_dirs(&own));
        progress.note(&format!(
            "{}: removed {} downloaded file(s), {}",
            planned.key,
            removed.len(),
            human_bytes(bytes)
        ));
    }
}

/// The outcome of a run whose repository refused a download.
fn refusal(context: &RunContext<'_>, reason: String) -> Unavailable {
    if context.campaign.skip_gated {
        Unavailable::Skip(format!("gated: {reason}"))
    } else {
        Unavailable::Fail(reason)
    }
}

/// An error when a file kitt did not download sits, with the wrong size,
/// where `file` would be written.
fn in_the_way(store: &Store, repo: &str, file: &VariantFile) -> Result<(), String> {
    let dest = &file.spec.dest;
    let Ok(meta) = std::fs::metadata(dest) else { return Ok(()) };
    let expected = file.spec.size.unwrap_or(meta.len());
    if meta.is_file() && meta.len() == expected {
        return Ok(());
    }
    let ours = store.downloaded_by_kitt(&dest.display().to_string()).unwrap_or(false);
    if meta.is_file() && ours {
        return Ok(());
    }
    Err(format!(
        "{} is in the way: `{repo}` lists {} for it, and kitt did not put it there; move it \
         away and resume",
        dest.display(),
        human_bytes(expected)
    ))
}

/// A file recorded as downloading.
struct Recorded {
    /// Its row in the store.
    row: i64,
    /// Its final path.
    dest: PathBuf,
}

/// Records `file` as downloading before its first byte.
fn record_start(
    context: &RunContext<'_>,
    store: &Store,
    session_id: i64,
    run_id: i64,
    repo: &str,
    file: &VariantFile,
) -> Result<Recorded, StoreError> {
    let dest = &file.spec.dest;
    let created = dest.parent().and_then(|dir| highest_missing(dir, context.storage_root));
    let path = dest.display().to_string();
    let created_text = created.as_ref().map(|dir| dir.display().to_string());
    let row = store.download_started(&NewDownload {
        campaign_id: context.campaign_id,
        run_id,
        session_id,
        repo,
        file: &file.path,
        path: &path,
        created_dir: created_text.as_deref(),
        bytes: file.spec.size.unwrap_or(0),
        bytes_done: download::resumable_bytes(&file.spec),
    })?;
    Ok(Recorded { row, dest: dest.clone() })
}

/// The highest directory of `dir`'s ancestors, below `root`, that does not
/// exist yet: what a download into `dir` creates.
fn highest_missing(dir: &Path, root: &Path) -> Option<PathBuf> {
    dir.ancestors()
        .take_while(|ancestor| ancestor.starts_with(root) && *ancestor != root)
        .take_while(|ancestor| !ancestor.exists())
        .last()
        .map(Path::to_owned)
}

/// The directory of a run's repository under the storage root (its own
/// downloads or a local copy there); none for other sources.
fn repo_dir(root: &Path, run: &PlannedRun) -> Option<PathBuf> {
    let repo = run.source.strip_prefix("hf:").or_else(|| run.source.strip_prefix("local:"))?;
    Some(root.join("huggingface").join(repo))
}

/// Where a run's files live under the storage root; nothing for other sources.
fn storage_paths(root: &Path, run: &PlannedRun) -> Vec<PathBuf> {
    let Some(dir) = repo_dir(root, run) else { return Vec::new() };
    run.files.iter().map(|file| dir.join(file)).collect()
}

/// Whether `run` loads `path`: one of its files, or for a checkpoint any
/// file of its repository's directory (configuration and tokenizer included).
fn loads(root: &Path, run: &PlannedRun, path: &Path) -> bool {
    let Some(dir) = repo_dir(root, run) else { return false };
    if is_checkpoint(run) {
        path.starts_with(&dir)
    } else {
        run.files.iter().any(|file| dir.join(file) == path)
    }
}

/// Whether a run loads a checkpoint (a directory of safetensors) rather than a GGUF file.
fn is_checkpoint(run: &PlannedRun) -> bool {
    run.files.first().is_some_and(|first| !first.to_ascii_lowercase().ends_with(".gguf"))
}

/// Deletes `path` when this campaign downloaded it: its size, or `None`
/// when it is not ours.
fn remove_own(store: &Store, campaign_id: &str, path: &Path) -> Result<Option<u64>, String> {
    let text = path.display().to_string();
    let rows = store.downloads_present(campaign_id, &text).map_err(|e| with_causes(&e))?;
    let Some(first) = rows.first() else { return Ok(None) };
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(error.to_string()),
    }
    store.download_removed(campaign_id, &text).map_err(|e| with_causes(&e))?;
    tracing::info!(path = %path.display(), "removed a downloaded file");
    Ok(Some(first.bytes))
}

/// Every download of the campaign (none, with a warning, when the store cannot be read).
fn campaign_downloads(store: &Store, campaign_id: &str) -> Vec<DownloadRow> {
    store.campaign_downloads(campaign_id).unwrap_or_else(|error| {
        tracing::warn!("cannot read the campaign's downloads: {}", with_causes(&error));
        Vec::new()
    })
}

/// The directories the downloads `rows` created.
fn created_dirs(rows: &[DownloadRow]) -> Vec<PathBuf> {
    rows.iter().filter_map(|row| row.created_dir.as_deref().map(PathBuf::from)).collect()
}

/// After a permanent failure: the partial files of every file not complete
/// are removed and their rows marked failed, with `error` for `failed` (the
/// file that failed) and a pointer to it for the others.
fn abandon(store: &Store, rows: &HashMap<String, Recorded>, failed: Option<&str>, error: &str) {
    for (path, recorded) in rows {
        if download::is_complete(&recorded.dest, None) {
            continue;
        }
        download::remove_partial(&recorded.dest);
        let reason = match failed {
            Some(failed) if failed != path => format!("not downloaded: `{failed}` failed: {error}"),
            _ => error.to_owned(),
        };
        if let Err(error) = store.download_failed(recorded.row, &reason) {
            tracing::warn!(%error, "cannot record a failed download");
        }
    }
}

/// After a failed download: prunes the empty directories the downloads created.
fn prune_created(store: &Store, context: &RunContext<'_>, rows: &HashMap<String, Recorded>) {
    let files: Vec<PathBuf> = rows.values().map(|recorded| recorded.dest.clone()).collect();
    let created = created_dirs(&campaign_downloads(store, context.campaign_id));
    prune(context.storage_root, &files, &created);
}

/// Removes the empty directories above each of `files` that lie within a
/// directory the campaign's downloads created (`created`), deepest first;
/// never the storage root, never a directory that holds anything.
fn prune(root: &Path, files: &[PathBuf], created: &[PathBuf]) {
    let mut files = files.to_vec();
    files.sort_by_key(|file| std::cmp::Reverse(file.components().count()));
    let ours = |dir: &Path| {
        dir != root
            && dir.starts_with(root)
            && created.iter().any(|top| top.starts_with(root) && dir.starts_with(top))
    };
    for file in &files {
        for dir in file.ancestors().skip(1) {
            if !ours(dir) || std::fs::remove_dir(dir).is_err() {
                break;
            }
        }
    }
}

fn record_phase(store: &Store, run_id: i64, text: &str) {
    if let Err(error) = store.run_phase(run_id, text) {
        tracing::warn!(%error, "cannot record the run's phase");
    }
}

fn environment(error: StoreError) -> KittError {
    KittError::Environment(with_causes(&error))
}

/// What the progress view and the store show of a running download.
struct View {
    repo: String,
    sizes: HashMap<String, u64>,
    total: u64,
    /// Bytes of the files already complete.
    completed: u64,
    /// The current file: path, bytes on disk, position, count.
    current: Option<(String, u64, usize, usize)>,
    /// Bytes that were on disk before this session's requests.
    resumed: u64,
    meter: Meter,
    started: Instant,
    /// Progress not yet written to the store.
    dirty: bool,
}

impl View {
    fn new(repo: &str, files: &[VariantFile]) -> View {
        let sizes: HashMap<String, u64> =
            files.iter().map(|file| (file.path.clone(), file.spec.size.unwrap_or(0))).collect();
        View {
            repo: repo.to_owned(),
            total: sizes.values().fold(0u64, |sum, size| sum.saturating_add(*size)),
            sizes,
            completed: 0,
            current: None,
            resumed: 0,
            meter: Meter::default(),
            started: Instant::now(),
            dirty: false,
        }
    }

    fn see(
        &mut self,
        store: &Store,
        run_id: i64,
        rows: &HashMap<String, Recorded>,
        event: VariantEvent,
        progress: &mut Progress,
    ) {
        match event {
            VariantEvent::FileStarted { index, count, path, size, resumed } => {
                self.resumed += resumed;
                let from = if resumed > 0 {
                    format!(", resuming at {}", human_bytes(resumed))
                } else {
                    String::new()
                };
                let text = format!(
                    "downloading {} [{}/{count}] {} ({}{from})",
                    self.repo,
                    index + 1,
                    file_name(&path),
                    human_bytes(size)
                );
                self.current = Some((path, resumed, index, count));
                record_phase(store, run_id, &text);
                progress.phase(&text);
            }
            VariantEvent::Progress { path, done } => {
                if let Some(current) = self.current.as_mut().filter(|current| current.0 == path) {
                    current.1 = done;
                }
                self.dirty = true;
                self.meter.sample(self.received());
                progress.update(&self.text());
            }
            VariantEvent::Retrying { path, why, wait } => {
                tracing::warn!(repo = %self.repo, path, "download attempt failed: {why}");
                progress.note(&format!("{}/{path}: {why}; retrying in {}", self.repo, clock(wait)));
            }
            VariantEvent::FileDone { path, fetched } => {
                self.completed += self.sizes.get(&path).copied().unwrap_or(0);
                self.current = None;
                self.dirty = true;
                tracing::info!(
                    repo = %self.repo,
                    path,
                    received = fetched.received,
                    resumed_from = fetched.resumed_from,
                    requests = fetched.requests,
                    "downloaded and verified"
                );
                if let Some(recorded) = rows.get(&path)
                    && let Err(error) = store.download_present(recorded.row)
                {
                    tracing::warn!(%error, "cannot record a finished download");
                }
            }
        }
    }

    /// Writes the current file's bytes and the phase to the store, at most
    /// once a tick.
    fn flush(&mut self, store: &Store, run_id: i64, rows: &HashMap<String, Recorded>) {
        if !self.dirty {
            return;
        }
        self.dirty = false;
        if let Some((path, done, ..)) = &self.current
            && let Some(recorded) = rows.get(path)
        {
            if let Err(error) = store.download_progress(recorded.row, *done) {
                tracing::warn!(%error, "cannot record download progress");
            }
            record_phase(store, run_id, &self.text());
        }
    }

    fn done(&self) -> u64 {
        self.completed + self.current.as_ref().map_or(0, |current| current.1)
    }

    fn received(&self) -> u64 {
        self.done().saturating_sub(self.resumed)
    }

    /// `downloading org/repo [1/2] m-00001-of-00002.gguf 45% · 12.0 of 40.0 MiB · 85.3 MiB/s · ETA 0s`.
    fn text(&self) -> String {
        let Some((path, done, index, count)) = &self.current else {
            return format!("downloading {}", self.repo);
        };
        let size = self.sizes.get(path).copied().unwrap_or(0);
        let percent = done.saturating_mul(100).checked_div(size).unwrap_or(100);
        let mut text = format!(
            "downloading {} [{}/{count}] {} {percent}% · {} of {}",
            self.repo,
            index + 1,
            file_name(path),
            human_bytes(self.done()),
            human_bytes(self.total)
        );
        if let Some(rate) = self.meter.rate() {
            let left = self.total.saturating_sub(self.done()) as f64 / rate.max(1.0);
            text.push_str(&format!(
                " · {}/s · ETA {}",
                human_bytes(rate as u64),
                clock(Duration::from_secs_f64(left.min(1e9)))
            ));
        }
        text
    }

    /// `downloaded org/repo: 2 files, 40.0 MiB in 3s (13.3 MiB/s)`.
    fn finished_text(&self) -> String {
        let seconds = self.started.elapsed().as_secs_f64();
        let received = self.received();
        format!(
            "downloaded {}: {} file(s), {} in {:.1} s ({}/s)",
            self.repo,
            self.sizes.len(),
            human_bytes(received),
            seconds,
            human_bytes((received as f64 / seconds.max(0.001)) as u64)
        )
    }
}

/// The recent download rate, from samples of the bytes received so far.
#[derive(Default)]
struct Meter {
    samples: VecDeque<(Instant, u64)>,
}

/// How far back the rate looks.
const RATE_WINDOW: Duration = Duration::from_secs(10);

impl Meter {
    fn sample(&mut self, received: u64) {
        let now = Instant::now();
        self.samples.push_back((now, received));
        while self.samples.len() > 2
            && self.samples.front().is_some_and(|(at, _)| now.duration_since(*at) > RATE_WINDOW)
        {
            self.samples.pop_front();
        }
    }

    /// Bytes per second, once two samples are far enough apart to mean something.
    fn rate(&self) -> Option<f64> {
        let (first_at, first) = self.samples.front()?;
        let (last_at, last) = self.samples.back()?;
        let seconds = last_at.duration_since(*first_at).as_secs_f64();
        (seconds >= 0.1).then(|| last.saturating_sub(*first) as f64 / seconds)
    }
}

fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(source: &str, files: &[&str]) -> PlannedRun {
        PlannedRun {
            key: "m|llama_cpp|Q8_0".into(),
            model: "m".into(),
            engine: crate::engine::EngineKind::LlamaCpp,
            engine_index: 0,
            suite: "quick".into(),
            quant: "Q8_0".into(),
            source: source.into(),
            files: files.iter().map(|file| (*file).to_owned()).collect(),
            size_bytes: None,
            size_source: None,
            download_bytes: 0,
            status: crate::plan::RunPlan::Planned,
            reason: None,
        }
    }

    #[test]
    fn a_later_run_loads_its_own_files_or_its_whole_checkpoint() {
        let root = Path::new("/models");
        let repo = root.join("huggingface/org/Model-GGUF");
        let gguf = run("hf:org/Model-GGUF", &["m-Q8_0.gguf"]);
        assert!(loads(root, &gguf, &repo.join("m-Q8_0.gguf")));
        assert!(!loads(root, &gguf, &repo.join("m-Q4_0.gguf")));
        let local = run("local:org/Model-GGUF", &["m-Q8_0.gguf"]);
        assert!(loads(root, &local, &repo.join("m-Q8_0.gguf")));
        let ollama = run("ollama:m:8b", &["m:8b"]);
        assert!(!loads(root, &ollama, &repo.join("m-Q8_0.gguf")));

        let checkpoint = run("hf:org/Model", &["model.safetensors"]);
        assert!(loads(root, &checkpoint, &root.join("huggingface/org/Model/tokenizer.json")));
        assert!(!loads(root, &checkpoint, &repo.join("m-Q8_0.gguf")));
    }

    #[test]
    fn the_progress_text_names_the_file_the_bytes_and_the_rate() {
        let spec = |path: &str, size| VariantFile {
            path: path.into(),
            spec: download::FileSpec {
                url: String::new(),
                dest: PathBuf::from(path),
                size: Some(size),
                sha256: None,
                label: path.into(),
            },
        };
        let files =
            [spec("a-00001-of-00002.gguf", 4 << 20), spec("a-00002-of-00002.gguf", 4 << 20)];
        let mut view = View::new("org/a", &files);
        view.completed = 4 << 20;
        view.current = Some(("a-00002-of-00002.gguf".into(), 1 << 20, 1, 2));
        assert_eq!(
            view.text(),
            "downloading org/a [2/2] a-00002-of-00002.gguf 25% · 5.0 MiB of 8.0 MiB"
        );
        let now = Instant::now();
        view.meter.samples.push_back((now - Duration::from_secs(2), 1 << 20));
        view.meter.samples.push_back((now, 5 << 20));
        assert!(view.text().ends_with(" · 2.0 MiB/s · ETA 1s"), "{}", view.text());
    }

    #[test]
    fn the_highest_missing_directory_stays_below_the_root() {
        let root = tempfile::tempdir().unwrap();
        let root = root.path();
        std::fs::create_dir_all(root.join("huggingface/org")).unwrap();
        let dir = root.join("huggingface/org/repo/Q8_0");
        assert_eq!(highest_missing(&dir, root), Some(root.join("huggingface/org/repo")));
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(highest_missing(&dir, root), None);
        let elsewhere = tempfile::tempdir().unwrap();
        assert_eq!(highest_missing(&elsewhere.path().join("x/y"), root), None);
    }

    #[test]
    fn pruning_removes_only_empty_directories_a_download_created() {
        let root = tempfile::tempdir().unwrap();
        let root = root.path();
        let repo = root.join("huggingface/org/repo");
        std::fs::create_dir_all(repo.join("Q8_0")).unwrap();
        std::fs::create_dir_all(root.join("huggingface/org/other")).unwrap();
        // The repository's directory came with the first file, `Q8_0` with the second.
        let created = [repo.clone(), repo.join("Q8_0")];
        prune(root, &[repo.join("a.gguf"), repo.join("Q8_0/b.gguf")], &created);
        assert!(!repo.exists());
        assert!(root.join("huggingface/org/other").is_dir());

        // A directory that holds something else stays, and so does one kitt did not create.
        std::fs::create_dir_all(&repo).unwrap();
        std::fs::write(repo.join("user.txt"), b"mine").unwrap();
        prune(root, &[repo.join("a.gguf")], &created);
        assert!(repo.join("user.txt").is_file());
        let theirs = root.join("huggingface/org/other");
        prune(root, &[theirs.join("c.gguf")], &created);
        assert!(theirs.is_dir());
    }
}
