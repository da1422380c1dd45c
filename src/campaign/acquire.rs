//! A run's model download inside a campaign.
//!
//! Before the first byte, [`Downloads::prepare`] lists the repository (sizes
//! and SHA-256), finds which files are missing under the storage root and
//! checks the real missing bytes plus `disk.reserve_gb` against the free
//! space. [`Downloads::start`] then runs the download as a task of its own,
//! with its own store connection: it records every missing file before its
//! first byte, runs [`variant::download`] and turns its events into store
//! rows, the run's phase and texts it sends to the progress view. The same
//! task serves a download in the foreground ([`Downloads::finish`] right
//! away) and a prefetch: the next run's download started while the current
//! run benchmarks, shown beside it and finished when its run comes.
//!
//! Decisions:
//! - A 401/403 on a download is permanent for its repository: the other runs
//!   using the repository in this session end the same way without asking
//!   again. They fail, or are skipped with `skip_gated: true`.
//! - A permanent failure (refusal, hash mismatch, retries exhausted) removes
//!   the partial files of the variant; an interrupted one (Ctrl-C) keeps
//!   them, so `--resume` continues where it stopped.
//! - A file at a download's final path with the wrong size that kitt did not
//!   download fails the run rather than being overwritten.
//! - A prefetch's failure is its run's: the task's outcome waits, unread,
//!   until that run starts, and ends it the way a foreground download would.
//! - In a parallel campaign the disk check counts the other downloads in
//!   flight too, and a download that does not fit beside them waits for
//!   room rather than being skipped ([`super::reserve`]).
//!
//! What the download shows is [`super::download_view`]'s; what is deleted
//! after the run, [`super::cleanup`]'s. With `devon_managed`, the download
//! and its removal go through Devon when it is available
//! ([`super::devon`]); `fetch` still ends in an [`Acquired`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use tokio::task::JoinHandle;

use super::cleanup::{campaign_downloads, created_dirs, is_checkpoint, prune};
use super::coordinator::{RunContext, Unavailable, environment};
use super::devon::{self, Via};
use super::download_view::{Shown, View, record_phase};
use super::progress::Progress;
use super::reserve::{Claim, shortfall};
use crate::acquire::download::{self, DownloadError, Downloader};
use crate::acquire::hub::HubClient;
use crate::acquire::variant::{self, Variant, VariantFile};
use crate::error::{KittError, with_causes};
use crate::plan::PlannedRun;
use crate::plan::matrix::human_bytes;
use crate::run::Cancel;
use crate::store::{NewDownload, Store, StoreError};

/// The download side of a campaign session.
pub(super) struct Downloads {
    hub: Result<HubClient, String>,
    /// Repositories that refused a download in this session, with the reason.
    refused: HashMap<String, String>,
    /// Who downloads: kitt itself or Devon.
    via: Via,
    /// The downloads in flight of a parallel campaign, whose missing bytes
    /// the disk check counts too.
    in_flight: Option<std::sync::Arc<super::reserve::InFlight>>,
}

/// A run's variant, checked and ready to download.
pub(super) struct Pending {
    variant: Variant,
    missing: Vec<VariantFile>,
    /// Its missing bytes, counted by the other downloads of a parallel
    /// campaign until the download ends.
    _held: Option<super::reserve::Held>,
}

impl Pending {
    /// The repository.
    pub(super) fn repo(&self) -> &str {
        &self.variant.repo
    }
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

/// What [`Downloads::start`] did.
pub(super) enum Started {
    /// The download runs.
    Running(Download),
    /// There was nothing to start: the outcome.
    Ended(Acquired),
}

/// A download running as a task of its own.
pub(super) struct Download {
    /// The run it is for.
    pub(super) run_id: i64,
    task: JoinHandle<Result<Ended, KittError>>,
    shown: UnboundedReceiver<Shown>,
    /// Whether the task may still send something to show.
    open: bool,
}

impl Download {
    /// The next text to show; `None` once the task can send nothing more
    /// (and from then on, without waiting). Use with `if download.is_open()`.
    pub(super) async fn next_shown(&mut self) -> Option<Shown> {
        let shown = self.shown.recv().await;
        self.open = shown.is_some();
        shown
    }

    /// Whether [`Download::next_shown`] may still return something.
    pub(super) fn is_open(&self) -> bool {
        self.open
    }
}

/// A dropped download stops (its partial files stay for a resume).
impl Drop for Download {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Aborts a spawned task when dropped, so a stopped download task stops
/// the transfer it runs too.
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What a download task ends with: the outcome, and a repository's refusal
/// for the session to remember.
struct Ended {
    acquired: Acquired,
    refused: Option<(String, String)>,
}

/// Everything a download task owns.
struct Job {
    home: PathBuf,
    campaign_id: String,
    storage_root: PathBuf,
    skip_gated: bool,
    session_id: i64,
    run_id: i64,
    pending: Pending,
    downloader: Downloader,
    cancel: Cancel,
    shown: UnboundedSender<Shown>,
}

/// The Hub repository a run downloads from, when its source is the Hub.
pub(super) fn hub_repo(planned: &PlannedRun) -> Option<&str> {
    planned.source.strip_prefix("hf:")
}

impl Downloads {
    /// Downloads through `hub` (an error to report on every download when the
    /// client could not be built), or through Devon as `devon` says.
    pub(super) fn new(hub: Result<HubClient, String>, devon: &crate::config::Devon) -> Self {
        Downloads { hub, refused: HashMap::new(), via: devon::choose(devon), in_flight: None }
    }

    /// Counts the bytes other downloads in flight still need in every disk
    /// check, and this one's in theirs (a parallel campaign).
    pub(super) fn share_reserve(&mut self, in_flight: std::sync::Arc<super::reserve::InFlight>) {
        self.in_flight = Some(in_flight);
    }

    /// After a run: has Devon remove what it downloaded for the campaign
    /// when no later run needs it (kitt's own downloads are
    /// [`super::cleanup`]'s).
    pub(super) async fn after_run(
        &mut self,
        context: &RunContext<'_>,
        store: &Store,
        planned: &PlannedRun,
        later: &[&PlannedRun],
        progress: &mut Progress,
    ) {
        match &mut self.via {
            Via::Devon(side) => side.after_run(context, store, planned, later, progress).await,
            Via::Own { .. } | Via::Broken(_) => {
                // Downloaded through Devon in an earlier session: without
                // Devon now, it can only stay.
                if let Some(row) = devon::removable(context, store, planned, later, progress) {
                    progress.note(&format!(
                        "{}: kept `{}` in Devon: this session has no Devon to remove it",
                        planned.key, row.repo
                    ));
                }
            }
        }
    }

    /// Checks before the first byte: a refusal earlier in the session, the
    /// listing, files in the way, and free space for the real missing bytes.
    /// In a parallel campaign a download that does not fit beside the others
    /// in flight waits for room ([`super::reserve`]), telling `waiting` why;
    /// `None` when the user stopped the campaign meanwhile.
    pub(super) async fn prepare(
        &self,
        context: &RunContext<'_>,
        store: &Store,
        (planned, repo): (&PlannedRun, &str),
        cancel: &Cancel,
        waiting: &mut dyn FnMut(&str),
    ) -> Result<Option<Pending>, Unavailable> {
        if let Some(reason) = self.refused.get(repo) {
            tracing::debug!(key = %planned.key, repo, "not asking the Hub again: {reason}");
            return Err(refusal(context.campaign.skip_gated, reason.clone()));
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
        // Devon writes elsewhere; only kitt's own downloads land in the storage root.
        if matches!(self.via, Via::Own { .. }) {
            for file in &variant.files {
                in_the_way(store, repo, file).map_err(Unavailable::Fail)?;
            }
        }

        let reserve = context.campaign.disk.reserve_bytes;
        // Counted again on every check: another run may have downloaded
        // some of the files meanwhile.
        let check = |others: u64| {
            let bytes = variant.missing_bytes();
            match shortfall(root, reserve, bytes, others) {
                Some(message) => Err(message),
                None => Ok(bytes),
            }
        };
        let _held = match &self.in_flight {
            None => {
                check(0).map_err(Unavailable::Skip)?;
                None
            }
            Some(in_flight) => {
                let wait = |shortfall: &str| {
                    waiting(&format!(
                        "waiting for disk space: {shortfall}; checks again when a run in \
                         flight ends its download or its run"
                    ));
                };
                match in_flight.claim(check, cancel, wait).await {
                    Claim::Held(held) => Some(held),
                    Claim::Skip(message) => return Err(Unavailable::Skip(message)),
                    Claim::Interrupted => return Ok(None),
                }
            }
        };
        let missing: Vec<VariantFile> = variant.missing().into_iter().cloned().collect();
        Ok(Some(Pending { variant, missing, _held }))
    }

    /// Starts downloading what `pending` misses with kitt's own downloader,
    /// as a task of its own, unless nothing is missing or the downloader
    /// cannot be built. With `devon_managed` and no Devon, its first call
    /// says once that kitt downloads itself.
    pub(super) fn start(
        &mut self,
        context: &RunContext<'_>,
        session_id: i64,
        run_id: i64,
        pending: Pending,
        cancel: &Cancel,
    ) -> Started {
        if pending.missing.is_empty() {
            return Started::Ended(Acquired::Ready(pending.variant.dir));
        }
        let downloader = match self.hub.as_ref().map(HubClient::downloader) {
            Ok(Ok(downloader)) => downloader,
            Ok(Err(error)) => return Started::Ended(Acquired::Fail(with_causes(&error))),
            Err(error) => return Started::Ended(Acquired::Fail(error.clone())),
        };
        let (shown, receiver) = tokio::sync::mpsc::unbounded_channel();
        if let Via::Own { notice } = &mut self.via
            && let Some(notice) = notice.take()
        {
            let _ = shown.send(Shown::Note(format!("note: {notice}")));
        }
        let job = Job {
            home: context.home.to_owned(),
            campaign_id: context.campaign_id.to_owned(),
            storage_root: context.storage_root.clone(),
            skip_gated: context.campaign.skip_gated,
            session_id,
            run_id,
            pending,
            downloader,
            cancel: cancel.clone(),
            shown,
        };
        let task = tokio::spawn(job.run());
        Started::Running(Download { run_id, task, shown: receiver, open: true })
    }

    /// Waits for `download` to end, showing what it reports as the current
    /// run's phase.
    pub(super) async fn finish(
        &mut self,
        mut download: Download,
        progress: &mut Progress,
    ) -> Result<Acquired, KittError> {
        let mut ticker = tokio::time::interval(Duration::from_secs(1));
        let Download { task, shown: received, open, .. } = &mut download;
        let joined = loop {
            tokio::select! {
                biased;
                shown = received.recv(), if *open => match shown {
                    Some(shown) => shown.apply(progress),
                    None => *open = false,
                },
                joined = &mut *task => break joined,
                _ = ticker.tick() => progress.tick(),
            }
        };
        while let Ok(shown) = download.shown.try_recv() {
            shown.apply(progress);
        }
        let ended = match joined {
            Ok(ended) => ended?,
            Err(error) => {
                return Ok(Acquired::Fail(format!("the download task stopped: {error}")));
            }
        };
        if let Some((repo, reason)) = ended.refused {
            self.refused.insert(repo, reason);
        }
        Ok(ended.acquired)
    }

    /// Downloads what `pending` misses in the foreground: through Devon when
    /// the session uses it, else with kitt's own downloader.
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
        if pending.missing.is_empty() {
            return Ok(Acquired::Ready(pending.variant.dir));
        }
        match &mut self.via {
            Via::Devon(side) => {
                let variant = &pending.variant;
                let fetched =
                    side.fetch(context, store, session_id, run_id, variant, cancel, progress);
                return fetched.await;
            }
            Via::Broken(reason) => return Ok(Acquired::Fail(reason.clone())),
            Via::Own { .. } => {}
        }
        match self.start(context, session_id, run_id, pending, cancel) {
            Started::Running(download) => self.finish(download, progress).await,
            Started::Ended(acquired) => Ok(acquired),
        }
    }

    /// Whether a download may run beside a benchmark: kitt's own downloads
    /// may; Devon's go in the foreground, where their progress is the run's.
    pub(super) fn can_prefetch(&self) -> bool {
        matches!(self.via, Via::Own { .. })
    }
}

impl Job {
    /// The download: store rows first, then the files, then the outcome.
    async fn run(self) -> Result<Ended, KittError> {
        let store = Store::open(&self.home).map_err(environment)?;
        let Pending { variant, missing, .. } = &self.pending;
        let mut rows = HashMap::new();
        for file in missing {
            let recorded = self.record_start(&store, &variant.repo, file).map_err(environment)?;
            rows.insert(file.path.clone(), recorded);
        }
        let run_id = self.run_id;
        let (events, mut received) = tokio::sync::mpsc::unbounded_channel();
        let downloader = self.downloader.clone();
        let mut task =
            AbortOnDrop(tokio::spawn(variant::download(downloader, missing.clone(), events)));
        let task = &mut task.0;
        let ids = rows.iter().map(|(path, recorded)| (path.clone(), recorded.row)).collect();
        let mut view = View::new(&variant.repo, missing, ids);
        let shown = &self.shown;
        let mut ticker = tokio::time::interval(Duration::from_secs(1));
        let joined = loop {
            tokio::select! {
                biased;
                () = self.cancel.cancelled() => {
                    task.abort();
                    let _ = task.await;
                    while let Ok(event) = received.try_recv() {
                        view.see(&store, run_id, event, shown);
                    }
                    view.flush(&store, run_id);
                    return Ok(Ended { acquired: Acquired::Interrupted, refused: None });
                }
                Some(event) = received.recv() => view.see(&store, run_id, event, shown),
                joined = &mut *task => break joined,
                _ = ticker.tick() => view.flush(&store, run_id),
            }
        };
        while let Ok(event) = received.try_recv() {
            view.see(&store, run_id, event, shown);
        }
        view.flush(&store, run_id);

        let failure = match joined {
            Ok(Ok(())) => {
                let done = view.finished_text();
                record_phase(&store, run_id, &done);
                let _ = shown.send(Shown::Phase(done));
                let acquired = Acquired::Ready(variant.dir.clone());
                return Ok(Ended { acquired, refused: None });
            }
            Ok(Err(failed)) => failed,
            Err(error) => {
                let reason = format!("the download of `{}` stopped: {error}", variant.repo);
                abandon(&store, &rows, None, &reason);
                self.prune_created(&store, &rows);
                return Ok(Ended { acquired: Acquired::Fail(reason), refused: None });
            }
        };
        let error = with_causes(&failure.error);
        abandon(&store, &rows, Some(&failure.path), &error);
        self.prune_created(&store, &rows);
        let repo = &variant.repo;
        Ok(match &failure.error {
            DownloadError::Refused { status, hint, .. } => {
                let reason = format!(
                    "`{repo}` refused the download of `{}` (HTTP {status}); {hint}",
                    failure.path
                );
                let acquired = match refusal(self.skip_gated, reason.clone()) {
                    Unavailable::Skip(reason) => Acquired::Skip(reason),
                    Unavailable::Fail(reason) => Acquired::Fail(reason),
                };
                Ended { acquired, refused: Some((repo.clone(), reason)) }
            }
            error => {
                let reason = format!("cannot download `{repo}`: {}", with_causes(error));
                Ended { acquired: Acquired::Fail(reason), refused: None }
            }
        })
    }

    /// Records `file` as downloading before its first byte.
    fn record_start(
        &self,
        store: &Store,
        repo: &str,
        file: &VariantFile,
    ) -> Result<Recorded, StoreError> {
        let dest = &file.spec.dest;
        let created = dest.parent().and_then(|dir| highest_missing(dir, &self.storage_root));
        let path = dest.display().to_string();
        let created_text = created.as_ref().map(|dir| dir.display().to_string());
        let row = store.download_started(&NewDownload {
            campaign_id: &self.campaign_id,
            run_id: self.run_id,
            session_id: self.session_id,
            repo,
            file: &file.path,
            path: &path,
            created_dir: created_text.as_deref(),
            bytes: file.spec.size.unwrap_or(0),
            bytes_done: download::resumable_bytes(&file.spec),
        })?;
        Ok(Recorded { row, dest: dest.clone() })
    }

    /// After a failed download: prunes the empty directories the downloads created.
    fn prune_created(&self, store: &Store, rows: &HashMap<String, Recorded>) {
        let files: Vec<PathBuf> = rows.values().map(|recorded| recorded.dest.clone()).collect();
        let created = created_dirs(&campaign_downloads(store, &self.campaign_id));
        prune(&self.storage_root, &files, &created, &[]);
    }
}

/// The outcome of a run whose repository refused a download.
fn refusal(skip_gated: bool, reason: String) -> Unavailable {
    if skip_gated {
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

/// The highest directory of `dir`'s ancestors, below `root`, that does not
/// exist yet: what a download into `dir` creates.
fn highest_missing(dir: &Path, root: &Path) -> Option<PathBuf> {
    dir.ancestors()
        .take_while(|ancestor| ancestor.starts_with(root) && *ancestor != root)
        .take_while(|ancestor| !ancestor.exists())
        .last()
        .map(Path::to_owned)
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
