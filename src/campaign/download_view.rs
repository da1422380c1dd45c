//! What a running download shows: the run's phase (file, percentage, bytes
//! of the variant, rate and ETA) in the progress view and in the store,
//! written to the store at most once a tick, and the rows of files that
//! complete.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use tokio::sync::mpsc::UnboundedSender;

use super::progress::{Progress, clock};
use crate::acquire::variant::{VariantEvent, VariantFile};
use crate::plan::matrix::human_bytes;
use crate::store::Store;

/// What a download task sends to the progress view.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Shown {
    /// A new phase: a file starts, the download ends.
    Phase(String),
    /// New numbers for the phase: bytes, rate, ETA.
    Update(String),
    /// A note beside the phase: a retry.
    Note(String),
}

impl Shown {
    /// Shows it as the current run's.
    pub(super) fn apply(self, progress: &mut Progress) {
        match self {
            Shown::Phase(text) => progress.phase(&text),
            Shown::Update(text) => progress.update(&text),
            Shown::Note(text) => progress.note(&text),
        }
    }

    /// Shows it as the prefetch of the next run, `key`.
    pub(super) fn apply_next(self, key: &str, progress: &mut Progress) {
        match self {
            Shown::Phase(text) => progress.next_run(key, &text, false),
            Shown::Update(text) => progress.next_run(key, &text, true),
            Shown::Note(text) => progress.note(&format!("next {key}: {text}")),
        }
    }
}

/// What the progress view and the store show of a running download.
pub(super) struct View {
    repo: String,
    /// The store row of each file, by path in the repository.
    rows: HashMap<String, i64>,
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
    /// A view of downloading `files` of `repo`, recorded in the store as `rows`.
    pub(super) fn new(repo: &str, files: &[VariantFile], rows: HashMap<String, i64>) -> View {
        let sizes: HashMap<String, u64> =
            files.iter().map(|file| (file.path.clone(), file.spec.size.unwrap_or(0))).collect();
        View {
            repo: repo.to_owned(),
            rows,
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

    /// Takes in one event of the download.
    pub(super) fn see(
        &mut self,
        store: &Store,
        run_id: i64,
        event: VariantEvent,
        shown: &UnboundedSender<Shown>,
    ) {
        // A closed channel (nobody watching any more) does not stop the download.
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
                let _ = shown.send(Shown::Phase(text));
            }
            VariantEvent::Progress { path, done } => {
                if let Some(current) = self.current.as_mut().filter(|current| current.0 == path) {
                    current.1 = done;
                }
                self.dirty = true;
                self.meter.sample(self.received());
                let _ = shown.send(Shown::Update(self.text()));
            }
            VariantEvent::Retrying { path, why, wait } => {
                tracing::warn!(repo = %self.repo, path, "download attempt failed: {why}");
                let note = format!("{}/{path}: {why}; retrying in {}", self.repo, clock(wait));
                let _ = shown.send(Shown::Note(note));
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
                if let Some(row) = self.rows.get(&path)
                    && let Err(error) = store.download_present(*row)
                {
                    tracing::warn!(%error, "cannot record a finished download");
                }
            }
        }
    }

    /// Writes the current file's bytes and the phase to the store, at most
    /// once a tick.
    pub(super) fn flush(&mut self, store: &Store, run_id: i64) {
        if !self.dirty {
            return;
        }
        self.dirty = false;
        if let Some((path, done, ..)) = &self.current
            && let Some(row) = self.rows.get(path)
        {
            if let Err(error) = store.download_progress(*row, *done) {
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
    pub(super) fn finished_text(&self) -> String {
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

/// Records what a run is doing now; a store that cannot take it is only
/// worth a warning.
pub(super) fn record_phase(store: &Store, run_id: i64, text: &str) {
    if let Err(error) = store.run_phase(run_id, text) {
        tracing::warn!(%error, "cannot record the run's phase");
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
    use std::path::PathBuf;

    use super::*;
    use crate::acquire::download;

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
        let mut view = View::new("org/a", &files, HashMap::new());
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
}
