//! A library tag made ready on an Ollama server: found in its store, or
//! pulled with `POST /api/pull` under a stall watchdog and bounded retries.
//!
//! Decisions:
//! - **Progress** is what the watchdog watches, not lines: the real server
//!   repeats its numbers several times a second while a download stalls. A
//!   line shows progress when the completed bytes of the pull grow or the
//!   status changes (a new layer, `verifying sha256 digest`, …). No progress
//!   for `KITT_DOWNLOAD_STALL_SECS` (default 60 s, the Hub downloads' knob;
//!   the wait for the answer's headers included) ends the attempt. The server
//!   verifies every layer silently after the last byte, so after `verifying`
//!   the window grows by 10 s per GiB of the pull.
//! - **Retries** follow the Hub downloads' policy: 1 s doubling up to 60 s
//!   between attempts, and the pull is given up after five attempts in a row
//!   that got no further than the best before (Ollama keeps partial layers
//!   and resumes them, so an attempt after a dropped connection usually gets
//!   further). Stalls, dropped connections, 5xx answers and error lines are
//!   retried; an answer saying the model or tag does not exist, 4xx answers,
//!   a refused authorisation, a full disk and a sharded GGUF are permanent
//!   and end the pull at once. The final error names the tag, the attempts
//!   and the last cause.
//! - **Offline** (`KITT_OFFLINE`): a tag the store lacks is not pulled; the
//!   start fails saying so.
//! - **Ownership**: with a campaign's ledger, the pull is recorded before it
//!   starts and its end after; the model is deleted after the run only as the
//!   run's [`AfterRun`] says, so a model the store already had stays.

use std::collections::BTreeMap;
use std::time::Duration;

use super::api::{Api, ApiError, ProgressLine};
use super::model::{OwnedModel, Prepared, Reporter, find, normalise_tag, unreachable};
use super::store::Location;
use crate::acquire::http::RetryPolicy;
use crate::engine::EngineError;
use crate::engine::pulls::{AfterRun, PullEvent, PullRules};

/// How long verifying a pulled model may take per GiB (hashing at 100 MiB/s).
const VERIFY_PER_GIB: Duration = Duration::from_secs(10);

/// How a pull is watched and retried.
#[derive(Debug, Clone)]
pub struct PullPolicy {
    /// Attempts in a row without new bytes, and the waits between attempts.
    pub retry: RetryPolicy,
    /// How long an attempt may go without progress.
    pub stall: Duration,
}

impl PullPolicy {
    /// The model downloads' policy: `KITT_DOWNLOAD_STALL_SECS`, five attempts, 1 s doubling.
    pub fn from_env() -> Self {
        PullPolicy {
            retry: crate::acquire::download::retry_policy(),
            stall: crate::acquire::download::stall_timeout(),
        }
    }
}

/// Finds `tag` in the server's store at `store` or pulls it, as `rules` allow.
pub(super) async fn from_library(
    api: &Api,
    tag: &str,
    rules: &PullRules,
    store: &Location,
    reporter: &mut Reporter,
) -> Result<Prepared, EngineError> {
    let wanted = normalise_tag(tag);
    let unavailable =
        |reason: String| EngineError::ModelUnavailable { model: wanted.clone(), reason };
    let store_key = store.to_string();
    let owned = || OwnedModel::pulled(api, &wanted, &store_key, rules.ledger.clone());
    let recorded = BTreeMap::from([("model".to_owned(), wanted.clone())]);

    let local = api.tags().await.map_err(|error| unreachable(api, "/api/tags", error))?;
    if let Some(found) = find(&local, &wanted) {
        reporter.step(format!("{wanted} is in the Ollama store"));
        // Only a model an earlier run of the campaign pulled is removed; the user's stays.
        let owned = (rules.after_run == AfterRun::RemoveCampaignPull).then(owned);
        return Ok(Prepared { served: wanted, size_bytes: found.size, owned, recorded });
    }
    if rules.offline {
        return Err(unavailable(format!(
            "it is not in the Ollama store ({store}) and KITT_OFFLINE is on, so kitt does not \
             ask Ollama to pull it; pull it with `ollama pull {wanted}` or unset KITT_OFFLINE"
        )));
    }

    note(rules, &wanted, &store_key, PullEvent::Pulling).await;
    reporter.step(format!("pulling {wanted}"));
    if let Err(reason) = pull(api, &wanted, &PullPolicy::from_env(), reporter).await {
        note(rules, &wanted, &store_key, PullEvent::Failed { error: reason.clone() }).await;
        return Err(unavailable(reason));
    }
    reporter.step(format!("pulled {wanted}"));

    let local = api.tags().await.map_err(|error| unreachable(api, "/api/tags", error))?;
    let Some(found) = find(&local, &wanted) else {
        let reason = "the pull succeeded but the server does not list it".to_owned();
        note(rules, &wanted, &store_key, PullEvent::Failed { error: reason.clone() }).await;
        return Err(unavailable(reason));
    };
    note(rules, &wanted, &store_key, PullEvent::Pulled { bytes: found.size }).await;
    let owned = (rules.after_run != AfterRun::Keep).then(owned);
    Ok(Prepared { served: wanted, size_bytes: found.size, owned, recorded })
}

/// Tells the campaign (if any) and waits until it has recorded the note.
async fn note(rules: &PullRules, model: &str, store: &str, event: PullEvent) {
    if let Some(ledger) = &rules.ledger
        && !ledger.note(model, store, event).await
    {
        tracing::warn!(model, "the campaign did not record the pull");
    }
}

/// Pulls `tag` with retries; the reason when it cannot.
pub async fn pull(
    api: &Api,
    tag: &str,
    policy: &PullPolicy,
    reporter: &mut Reporter,
) -> Result<(), String> {
    let mut watch = Watch::new(tag, policy.stall);
    let (mut attempts, mut without_progress) = (0u32, 0u32);
    loop {
        attempts += 1;
        let before = watch.best;
        watch.attempt_starts();
        let result = api.pull(tag, policy.stall, |line| watch.see(line, reporter)).await;
        let Err(error) = result else { return Ok(()) };
        if let Some(why) = permanent(&error) {
            return Err(format!("the pull failed: {error} ({why})"));
        }
        without_progress = if watch.best > before { 0 } else { without_progress + 1 };
        if without_progress >= policy.retry.attempts.max(1) {
            let tail = if without_progress == attempts {
                format!("{attempts} attempts without new bytes")
            } else {
                format!("{attempts} attempts, the last {without_progress} without new bytes")
            };
            return Err(format!("gave up on the pull of `{tag}` after {tail}; last: {error}"));
        }
        let wait = policy.retry.backoff(without_progress.max(1));
        let text = format!(
            "pulling {tag}: attempt {attempts} failed ({error}); retrying in {:.0} s",
            wait.as_secs_f64().ceil()
        );
        tracing::warn!("{text}");
        reporter.step(text);
        tokio::time::sleep(wait).await;
    }
}

/// Why an error ends the pull at once, or `None` when another attempt may help.
fn permanent(error: &ApiError) -> Option<&'static str> {
    let text = error.to_string().to_ascii_lowercase();
    let says = |phrases: &[&str]| phrases.iter().any(|phrase| text.contains(phrase));
    if says(&["file does not exist", "not found", "manifest unknown"]) {
        return Some("the Ollama library has no such model or tag");
    }
    if says(&["no space left on device"]) {
        return Some("the disk holding the Ollama store is full; free space there");
    }
    if says(&["sharded gguf"]) {
        return Some("Ollama cannot pull a sharded GGUF; merge it with llama-gguf-split first");
    }
    if says(&["unauthorized", "forbidden", "401:", "403:"]) {
        return Some("the registry refuses access to this model");
    }
    match error {
        ApiError::Status { status, .. }
            if (400..500).contains(status) && ![408, 429].contains(status) =>
        {
            Some("the server refuses the request")
        }
        _ => None,
    }
}

/// Follows a pull's progress across attempts: reports it and tells the
/// stream how long it may now go without progress.
struct Watch<'a> {
    tag: &'a str,
    stall: Duration,
    /// Each layer's completed and total bytes, as last reported.
    layers: BTreeMap<String, (u64, u64)>,
    /// The status of the last line of this attempt.
    status: String,
    /// The completed bytes this attempt has reported.
    attempt_done: u64,
    /// The most completed bytes any attempt reached.
    best: u64,
}

impl<'a> Watch<'a> {
    fn new(tag: &'a str, stall: Duration) -> Self {
        let layers = BTreeMap::new();
        Watch { tag, stall, layers, status: String::new(), attempt_done: 0, best: 0 }
    }

    fn attempt_starts(&mut self) {
        self.status.clear();
        self.attempt_done = 0;
    }

    /// Reports `line`; the window until the next deadline when it shows progress.
    fn see(&mut self, line: &ProgressLine, reporter: &mut Reporter) -> Option<Duration> {
        let mut progressed = false;
        if let (Some(digest), Some(total)) = (&line.digest, line.total) {
            self.layers.insert(digest.clone(), (line.completed.unwrap_or(0), total));
            let (done, total) = self.totals();
            reporter.fraction(&format!("pulling {}", self.tag), done, total);
            progressed = done > self.attempt_done;
            self.attempt_done = self.attempt_done.max(done);
            self.best = self.best.max(done);
        } else {
            reporter.status(line);
        }
        let status = line.status.as_deref().unwrap_or_default();
        if status != self.status {
            self.status = status.to_owned();
            progressed = true;
        }
        progressed.then(|| self.window())
    }

    /// Completed and total bytes over every layer seen.
    fn totals(&self) -> (u64, u64) {
        self.layers.values().fold((0, 0), |(d, t), (ld, lt)| (d + ld, t + lt))
    }

    /// The stall window, grown while the server verifies what it pulled.
    fn window(&self) -> Duration {
        if !self.status.starts_with("verifying") {
            return self.stall;
        }
        let gib = self.totals().1.div_ceil(1 << 30);
        self.stall + VERIFY_PER_GIB * u32::try_from(gib).unwrap_or(u32::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::StartProgress;

    fn line(status: &str, digest: Option<&str>, completed: u64, total: u64) -> ProgressLine {
        ProgressLine {
            status: Some(status.to_owned()),
            digest: digest.map(str::to_owned),
            total: digest.map(|_| total),
            completed: digest.map(|_| completed),
            error: None,
        }
    }

    #[test]
    fn only_new_bytes_or_a_new_status_count_as_progress() {
        let log = tempfile::NamedTempFile::new().unwrap();
        let mut reporter = Reporter::new(StartProgress::default(), log.path());
        let stall = Duration::from_secs(5);
        let mut watch = Watch::new("m:1b", stall);
        watch.attempt_starts();

        assert_eq!(watch.see(&line("pulling manifest", None, 0, 0), &mut reporter), Some(stall));
        let layer = |done| line("pulling abc", Some("sha256:abc"), done, 4 << 30);
        assert_eq!(watch.see(&layer(1), &mut reporter), Some(stall));
        assert_eq!(watch.see(&layer(1), &mut reporter), None, "the same numbers again");
        assert_eq!(watch.see(&layer(2), &mut reporter), Some(stall));
        let verifying = line("verifying sha256 digest", None, 0, 0);
        assert_eq!(watch.see(&verifying, &mut reporter), Some(stall + 4 * VERIFY_PER_GIB));

        // A resumed attempt starts from what the server kept: alive, but no further.
        watch.attempt_starts();
        assert_eq!(watch.see(&layer(2), &mut reporter), Some(stall));
        assert_eq!(watch.best, 2);
    }

    #[test]
    fn missing_models_full_disks_and_refusals_are_not_retried() {
        let stream = |text: &str| ApiError::Stream(text.to_owned());
        assert!(permanent(&stream("pull model manifest: file does not exist")).is_some());
        assert!(permanent(&stream("write /s/blobs/x-partial: no space left on device")).is_some());
        assert!(
            permanent(&stream(
                "pull model manifest: 400: The specified repository contains sharded GGUF"
            ))
            .is_some()
        );
        let status = |status| ApiError::Status { status, message: "x".into() };
        assert!(permanent(&status(400)).is_some());
        for transient in [status(500), status(503), status(429), status(408)] {
            assert!(permanent(&transient).is_none(), "{transient}");
        }
        assert!(permanent(&stream("max retries exceeded: unexpected EOF")).is_none());
        assert!(permanent(&ApiError::Stalled(Duration::from_secs(1))).is_none());
        assert!(permanent(&ApiError::Transport("connection reset".into())).is_none());
    }
}
