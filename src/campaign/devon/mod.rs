//! A run's model through Devon (`devon_managed: true`), and its removal.
//!
//! [`choose`] picks, once per session, how Hub models are downloaded:
//! Devon's HTTP API when `devon_url` is set, else the first `devon` command
//! on the `PATH` (its absolute path is kept for the session), else kitt's own
//! downloader, which then says once that Devon is not available. With
//! `devon_managed: false` kitt downloads itself and says nothing.
//!
//! [`DevonSide::fetch`] asks Devon for exactly the variant's files, then
//! checks them where Devon says they are, on this machine: the directory must
//! exist here, each planned file must be there with the size (and, where the
//! Hub lists one, the SHA-256) of the Hub's listing, and the run loads that
//! very file, never "the first GGUF of the directory" (the checks are
//! [`check`]'s). [`DevonSide::after_run`] has Devon remove a repository, the same way it
//! was downloaded, once no later run of the session loads it.
//!
//! Decisions:
//! - Whether Devon held a repository before the campaign is asked once,
//!   before kitt's first request for it, and stored (`campaign_devon`), so a
//!   resumed campaign still knows which repositories are its own. A
//!   repository Devon held before is never removed; one kitt cannot tell
//!   about (Devon's model list could not be read) is kept, with a note.
//! - Devon answers a download of a repository it already holds without
//!   fetching anything, even when the variant asked for is not among its
//!   files. When the files are missing from a directory that exists, kitt
//!   asks once more with `force`, which fetches only the included files.
//! - SHA-256 is checked once per file and session (one read of the file,
//!   far less than the download): Devon's downloads are not known to verify
//!   hashes, and a stale copy from another revision must not be benchmarked
//!   under this one's name.
//! - Devon removes whole repositories, so a repository stays while any later
//!   run of the session loads any file of it (from the Hub or from the
//!   storage root, which may be Devon's storage too).
//! - `disk.reserve_gb` is still checked on the storage root before Devon is
//!   asked: kitt cannot see Devon's disk, which usually is the same one when
//!   Devon's storage is shared with kitt; Devon checks its own free space.
//! - A Devon request interrupted by Ctrl-C is dropped (the `devon` command
//!   is killed; Devon's server may finish the download on its own); the run
//!   is redone on resume.

mod check;

use crate::campaign::coordinator::environment;
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::acquire::Acquired;
use super::coordinator::RunContext;
use super::download_view::record_phase;
use super::progress::{Progress, clock};
use crate::acquire::devon::{Devon, DevonError, DevonModel, DevonRequest, Removal};
use crate::acquire::variant::Variant;
use crate::error::{KittError, with_causes};
use crate::plan::PlannedRun;
use crate::plan::matrix::human_bytes;
use crate::run::Cancel;
use crate::store::{NewDevonDownload, Store};
use check::{Found, check_files, check_hashes, local_dir};

/// The notice of a session that has `devon_managed` but no Devon.
pub(super) const NO_DEVON_NOTICE: &str = "devon_managed is set but neither devon_url nor a devon \
     command is available; kitt downloads itself";

/// How a session downloads Hub models.
pub(super) enum Via {
    /// kitt's own downloader; `notice` is said at the first download.
    Own {
        /// Said once, then taken.
        notice: Option<String>,
    },
    /// Devon.
    Devon(Box<DevonSide>),
    /// `devon_url` cannot be used: every Hub download fails with this reason.
    Broken(String),
}

/// Chooses how this session downloads, from the campaign's Devon settings.
pub(super) fn choose(settings: &crate::config::Devon) -> Via {
    if !settings.managed {
        return Via::Own { notice: None };
    }
    let devon = match &settings.url {
        Some(url) => {
            let key = settings.api_key.as_ref().map(|key| key.expose().to_owned());
            match Devon::http(url, key) {
                Ok(devon) => devon,
                Err(error) => return Via::Broken(with_causes(&error)),
            }
        }
        None => match Devon::find_program() {
            Some(program) => Devon::cli(program),
            None => return Via::Own { notice: Some(NO_DEVON_NOTICE.to_owned()) },
        },
    };
    tracing::info!("downloads go through {}", devon.describe());
    Via::Devon(Box::new(DevonSide { devon, announced: false, verified: HashMap::new() }))
}

/// The Devon side of a session.
pub(super) struct DevonSide {
    devon: Devon,
    /// Whether the session said which Devon it uses.
    announced: bool,
    /// Repositories whose files this session has checked: the directory and
    /// the files found complete there.
    verified: HashMap<String, (PathBuf, HashSet<String>)>,
}

/// How one request to Devon ended.
enum Asked {
    Done(DevonModel),
    Failed(DevonError),
    Interrupted,
}

impl DevonSide {
    /// Has Devon download the files of `variant` and checks them on this machine.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn fetch(
        &mut self,
        context: &RunContext<'_>,
        store: &Store,
        session_id: i64,
        run_id: i64,
        variant: &Variant,
        cancel: &Cancel,
        progress: &mut Progress,
    ) -> Result<Acquired, KittError> {
        if !self.announced {
            self.announced = true;
            progress.note(&format!("downloads go through {}", self.devon.describe()));
        }
        let repo = variant.repo.as_str();
        if let Some(dir) = self.checked_before(variant) {
            tracing::debug!(repo, dir = %dir.display(), "Devon's copy was checked earlier");
            return Ok(Acquired::Ready(dir));
        }
        self.record_request(context, store, session_id, run_id, variant, progress).await?;

        let files: Vec<String> = variant.files.iter().map(|file| file.path.clone()).collect();
        let bytes = variant.files.iter().filter_map(|file| file.spec.size).sum::<u64>();
        let mut force = false;
        loop {
            let phase = format!(
                "Devon downloading {repo}{}: {} file(s), {}",
                if force { " again (force)" } else { "" },
                files.len(),
                human_bytes(bytes)
            );
            record_phase(store, run_id, &phase);
            progress.phase(&phase);
            let request = DevonRequest { repo: repo.to_owned(), files: files.clone(), force };
            let model = match self.ask(&request, &phase, store, run_id, cancel, progress).await {
                Asked::Done(model) => model,
                Asked::Interrupted => return Ok(Acquired::Interrupted),
                Asked::Failed(error) => {
                    let reason =
                        format!("Devon could not download `{repo}`: {}", with_causes(&error));
                    store.devon_failed(context.campaign_id, repo, &reason).map_err(environment)?;
                    return Ok(Acquired::Fail(reason));
                }
            };
            let reported = model.path.display().to_string();
            store.devon_present(context.campaign_id, repo, &reported).map_err(environment)?;
            let dir = match local_dir(&model.path, variant) {
                Ok(dir) => dir,
                Err(reason) => return Ok(Acquired::Fail(reason)),
            };
            match check_files(&dir, variant) {
                Ok(Found::Complete) => {}
                Ok(Found::Missing(_)) if !force => {
                    tracing::info!(
                        repo,
                        "Devon's copy lacks files of the variant; asking with force"
                    );
                    force = true;
                    continue;
                }
                Ok(Found::Missing(missing)) => {
                    return Ok(Acquired::Fail(format!(
                        "Devon reported `{repo}` at {}, but {} not there: {}",
                        dir.display(),
                        if missing.len() == 1 { "this file is" } else { "these files are" },
                        missing.join(", ")
                    )));
                }
                Err(reason) => return Ok(Acquired::Fail(reason)),
            }
            return match check_hashes(&dir, variant, store, run_id, cancel, progress).await {
                Some(Ok(())) => {
                    let present = files.iter().cloned().collect();
                    self.verified.insert(repo.to_owned(), (dir.clone(), present));
                    let done = format!("Devon has {repo} at {}", dir.display());
                    record_phase(store, run_id, &done);
                    progress.phase(&done);
                    Ok(Acquired::Ready(dir))
                }
                Some(Err(reason)) => Ok(Acquired::Fail(reason)),
                None => Ok(Acquired::Interrupted),
            };
        }
    }

    /// The directory of a repository whose files this session already
    /// checked, when they are all still there.
    fn checked_before(&self, variant: &Variant) -> Option<PathBuf> {
        let (dir, present) = self.verified.get(&variant.repo)?;
        let complete = variant.files.iter().all(|file| {
            present.contains(&file.path)
                && std::fs::metadata(dir.join(&file.path))
                    .is_ok_and(|meta| meta.is_file() && Some(meta.len()) == file.spec.size)
        });
        complete.then(|| dir.clone())
    }

    /// Records the request before it is made; the first time for a
    /// repository in this campaign, asks Devon whether it holds it already.
    async fn record_request(
        &self,
        context: &RunContext<'_>,
        store: &Store,
        session_id: i64,
        run_id: i64,
        variant: &Variant,
        progress: &mut Progress,
    ) -> Result<(), KittError> {
        let repo = variant.repo.as_str();
        let earlier = store.devon_download(context.campaign_id, repo).map_err(environment)?;
        let (preexisting, mut files, mut bytes) = match earlier {
            Some(row) => (row.preexisting, row.files, row.bytes),
            None => (self.held_before(repo, progress).await, Vec::new(), 0),
        };
        for file in &variant.files {
            if !files.contains(&file.path) {
                files.push(file.path.clone());
                bytes = bytes.saturating_add(file.spec.size.unwrap_or(0));
            }
        }
        let backend = self.devon.identity();
        store
            .devon_started(&NewDevonDownload {
                campaign_id: context.campaign_id,
                run_id,
                session_id,
                repo,
                backend: &backend,
                preexisting,
                files: &files,
                bytes,
            })
            .map_err(environment)
    }

    /// Whether Devon holds `repo` now; `None`, with a note, when it cannot tell.
    async fn held_before(&self, repo: &str, progress: &mut Progress) -> Option<bool> {
        match self.devon.stored(repo).await {
            Ok(held) => {
                tracing::debug!(repo, held = held.is_some(), "asked Devon before downloading");
                Some(held.is_some())
            }
            Err(error) => {
                progress.note(&format!(
                    "warning: cannot tell whether Devon already holds `{repo}` ({}); kitt will \
                     keep it in Devon after the campaign",
                    with_causes(&error)
                ));
                None
            }
        }
    }

    /// Sends one request, showing its progress, until Devon answers or the user stops.
    async fn ask(
        &self,
        request: &DevonRequest,
        phase: &str,
        store: &Store,
        run_id: i64,
        cancel: &Cancel,
        progress: &mut Progress,
    ) -> Asked {
        let (lines, mut printed) = tokio::sync::mpsc::unbounded_channel();
        let download = self.devon.download(request, lines);
        tokio::pin!(download);
        let started = Instant::now();
        let mut last_line = String::new();
        let mut recorded = Instant::now();
        let mut ticker = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                biased;
                () = cancel.cancelled() => return Asked::Interrupted,
                answered = &mut download => {
                    return match answered {
                        Ok(model) => Asked::Done(model),
                        Err(error) => Asked::Failed(error),
                    };
                }
                Some(line) = printed.recv() => last_line = line,
                _ = ticker.tick() => {
                    let mut text = format!("{phase}, {}", clock(started.elapsed()));
                    if !last_line.is_empty() {
                        text.push_str(&format!(": {}", crate::measure::ingest::excerpt(last_line.as_bytes())));
                    }
                    progress.update(&text);
                    if recorded.elapsed() >= RECORD_EVERY {
                        recorded = Instant::now();
                        record_phase(store, run_id, &text);
                    }
                    progress.tick();
                }
            }
        }
    }

    /// With `disk.cleanup_after_run`, has Devon remove the repository of
    /// `planned` when kitt had Devon download it in this campaign, Devon did
    /// not hold it before, and no run of `later` loads it.
    pub(super) async fn after_run(
        &mut self,
        context: &RunContext<'_>,
        store: &Store,
        planned: &PlannedRun,
        later: &[&PlannedRun],
        progress: &mut Progress,
    ) {
        let Some(row) = removable(context, store, planned, later, progress) else { return };
        let repo = row.repo.as_str();
        let backend = self.devon.identity();
        if row.backend != backend {
            progress.note(&format!(
                "{}: kept `{repo}` in Devon: it was downloaded through `{}`, and this session \
                 reaches Devon through `{backend}`",
                planned.key, row.backend
            ));
            return;
        }
        match self.devon.remove(repo).await {
            Ok(removal) => {
                self.verified.remove(repo);
                if let Err(error) = store.devon_removed(context.campaign_id, repo) {
                    tracing::warn!("cannot record a Devon removal: {}", with_causes(&error));
                }
                let how = match removal {
                    Removal::Removed => "Devon removed",
                    Removal::NotHeld => "Devon no longer held",
                };
                progress.note(&format!(
                    "{}: {how} `{repo}` ({}, downloaded for this campaign)",
                    planned.key,
                    human_bytes(row.bytes)
                ));
            }
            Err(error) => {
                let why = format!("Devon could not remove it: {}", with_causes(&error));
                if let Err(error) = store.devon_kept(context.campaign_id, repo, &why) {
                    tracing::warn!("cannot record a Devon removal: {}", with_causes(&error));
                }
                progress.note(&format!("warning: {}: kept `{repo}`: {why}", planned.key));
            }
        }
    }
}

/// How often a long Devon download's phase is written to the store.
const RECORD_EVERY: Duration = Duration::from_secs(5);

/// The campaign's Devon row for the repository of `planned`, when cleanup
/// should have Devon remove it now; notes why a repository of ours stays.
pub(super) fn removable(
    context: &RunContext<'_>,
    store: &Store,
    planned: &PlannedRun,
    later: &[&PlannedRun],
    progress: &mut Progress,
) -> Option<crate::store::DevonRow> {
    if !context.campaign.disk.cleanup_after_run {
        return None;
    }
    // Only Hub repositories go through Devon: never an Ollama tag.
    let repo = planned.source.strip_prefix("hf:")?;
    if later.iter().any(|run| repository(run) == Some(repo)) {
        tracing::debug!(repo, "kept in Devon: a later run loads it");
        return None;
    }
    let row = match store.devon_download(context.campaign_id, repo) {
        Ok(Some(row)) if row.status == "present" => row,
        Ok(_) => return None,
        Err(error) => {
            tracing::warn!("cannot read the campaign's Devon downloads: {}", with_causes(&error));
            return None;
        }
    };
    match row.preexisting {
        Some(false) => Some(row),
        Some(true) => {
            tracing::debug!(repo, "kept in Devon: it held the repository before the campaign");
            None
        }
        None => {
            progress.note(&format!(
                "{}: kept `{repo}` in Devon: kitt could not tell whether Devon held it before \
                 this campaign",
                planned.key
            ));
            None
        }
    }
}

/// The repository a run loads from the Hub or the storage root.
fn repository(run: &PlannedRun) -> Option<&str> {
    run.source.strip_prefix("hf:").or_else(|| run.source.strip_prefix("local:"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleanup_follows_the_repository_of_hub_and_local_runs_only() {
        let run = |source: &str| PlannedRun {
            key: "m|llama_cpp|Q8_0".into(),
            model: "m".into(),
            engine: crate::engine::EngineKind::LlamaCpp,
            engine_index: 0,
            suite: "quick".into(),
            quant: "Q8_0".into(),
            source: source.into(),
            files: vec!["m-Q8_0.gguf".into()],
            size_bytes: None,
            size_source: None,
            download_bytes: 0,
            status: crate::plan::RunPlan::Planned,
            reason: None,
        };
        assert_eq!(repository(&run("hf:org/m")), Some("org/m"));
        assert_eq!(repository(&run("local:org/m")), Some("org/m"));
        assert_eq!(repository(&run("ollama:m:8b")), None);
    }
}
