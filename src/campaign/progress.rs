//! The live view of a running campaign: runs done of total, the current run
//! and its phase, elapsed time and an ETA from the runs that finished.
//!
//! On a terminal it is one status line redrawn in place, with a line printed
//! above it for every finished run. Elsewhere (a pipe, a log file, `--json`)
//! it degrades to plain lines: one per phase change and per finished run,
//! and a heartbeat line when a phase lasts longer than the heartbeat
//! interval (`KITT_HEARTBEAT_SECS`, default 60), so a log shows the campaign
//! is alive.
//!
//! A download for the next run that runs beside the current one (a
//! prefetch) is shown after the current run on the live line (`· next …`)
//! and as its own `next <key>:` lines in plain output.
//!
//! A parallel campaign on a terminal turns the live line into a
//! [`Board`](super::board::Board): the campaign's line and one line per run
//! in flight, each run's `Progress` drawing its own.

use std::io::Write;
use std::time::{Duration, Instant};

use super::board::{Board, Slot};

/// How often plain lines repeat a phase's changing numbers.
pub const UPDATE_LINES: Duration = Duration::from_secs(10);

/// How progress is shown.
pub enum Display {
    /// A status line redrawn in place on a terminal.
    Live(Box<dyn Write + Send>),
    /// Plain lines.
    Lines(Box<dyn Write + Send>),
    /// One line of a board shared by the runs of a parallel campaign.
    Board(Slot),
}

/// The state of the view.
pub struct Progress {
    display: Display,
    total: u64,
    done: u64,
    started: Instant,
    durations: (f64, u64),
    current: Option<Current>,
    /// The next run's key and what its prefetch shows.
    next: Option<Next>,
    heartbeat: Duration,
    drawn: bool,
}

struct Next {
    key: String,
    text: String,
    last_line: Instant,
}

struct Current {
    key: String,
    phase: String,
    run_started: Instant,
    phase_started: Instant,
    last_line: Instant,
}

impl Progress {
    /// A view of `total` runs of which `done` are finished; `mean_seconds`
    /// seeds the ETA with earlier sessions' runs.
    pub fn new(display: Display, total: u64, done: u64, mean_seconds: Option<f64>) -> Progress {
        let heartbeat = std::env::var("KITT_HEARTBEAT_SECS")
            .ok()
            .and_then(|value| value.parse::<u64>().ok())
            .filter(|seconds| *seconds > 0)
            .map_or(Duration::from_secs(60), Duration::from_secs);
        Progress {
            display,
            total,
            done,
            started: Instant::now(),
            durations: mean_seconds.map_or((0.0, 0), |mean| (mean, 1)),
            current: None,
            next: None,
            heartbeat,
            drawn: false,
        }
    }

    /// A run starts.
    pub fn run_started(&mut self, key: &str) {
        let now = Instant::now();
        self.current = Some(Current {
            key: key.to_owned(),
            phase: "checking".to_owned(),
            run_started: now,
            phase_started: now,
            last_line: now,
        });
        self.redraw();
    }

    /// The current run enters a new phase.
    pub fn phase(&mut self, phase: &str) {
        let position = self.position();
        let Some(current) = &mut self.current else { return };
        current.phase = phase.to_owned();
        current.phase_started = Instant::now();
        current.last_line = current.phase_started;
        let line = format!("{position} {}: {phase}", current.key);
        match self.display {
            Display::Live(_) | Display::Board(_) => self.redraw(),
            Display::Lines(_) => self.line(&line),
        }
    }

    /// New numbers for the current phase (a download's bytes and rate): the
    /// live line is redrawn; plain lines print them at most every
    /// [`UPDATE_LINES`] (or heartbeat, if shorter), so a log shows a long
    /// download moving without a line per chunk.
    pub fn update(&mut self, text: &str) {
        let position = self.position();
        let every = self.heartbeat.min(UPDATE_LINES);
        let Some(current) = &mut self.current else { return };
        current.phase = text.to_owned();
        let line = match self.display {
            Display::Live(_) | Display::Board(_) => None,
            Display::Lines(_) if current.last_line.elapsed() >= every => {
                current.last_line = Instant::now();
                Some(format!("{position} {}: {text}", current.key))
            }
            Display::Lines(_) => return,
        };
        match line {
            Some(line) => self.line(&line),
            None => self.redraw(),
        }
    }

    /// The current run ended; `outcome` is e.g. `success in 41.2 s`.
    pub fn run_finished(&mut self, key: &str, outcome: &str, seconds: Option<f64>) {
        let position = self.position();
        self.done += 1;
        if let Some(seconds) = seconds {
            self.durations.0 += seconds;
            self.durations.1 += 1;
        }
        self.current = None;
        let line = format!("{position} {key}: {outcome}");
        match &self.display {
            // A run's line of a board goes with it.
            Display::Board(slot) if slot.is_run() => slot.leave(&line),
            _ => self.line(&line),
        }
    }

    /// A run that another view showed (a parallel campaign's run) ended:
    /// counts it for the campaign's line and ETA without a line of its own.
    pub fn count_finished(&mut self, seconds: Option<f64>) {
        self.done += 1;
        if let Some(seconds) = seconds {
            self.durations.0 += seconds;
            self.durations.1 += 1;
        }
        self.redraw();
    }

    /// What the prefetch for the run `key` (the next one) shows: a new
    /// phase (`update` false) or new numbers for it (`update` true, printed
    /// as plain lines at most every [`UPDATE_LINES`]).
    pub fn next_run(&mut self, key: &str, text: &str, update: bool) {
        let every = self.heartbeat.min(UPDATE_LINES);
        let now = Instant::now();
        let print = match &mut self.next {
            Some(next) if next.key == key => {
                let print = !update || next.last_line.elapsed() >= every;
                next.text = text.to_owned();
                if print {
                    next.last_line = now;
                }
                print
            }
            _ => {
                self.next =
                    Some(Next { key: key.to_owned(), text: text.to_owned(), last_line: now });
                true
            }
        };
        match self.display {
            Display::Live(_) | Display::Board(_) if update => self.redraw(),
            _ if print => self.line(&format!("next {key}: {text}")),
            _ => {}
        }
    }

    /// The prefetch for the next run ended (its run shows the rest).
    pub fn next_run_done(&mut self) {
        self.next = None;
        self.redraw();
    }

    /// A note that is not about the current phase (a warning, a skip).
    pub fn note(&mut self, text: &str) {
        self.line(text);
    }

    /// Called about once a second: redraws the live line, or prints a
    /// heartbeat when a phase has been quiet for the heartbeat interval.
    pub fn tick(&mut self) {
        match self.display {
            Display::Live(_) | Display::Board(_) => self.redraw(),
            Display::Lines(_) => {
                let heartbeat = self.heartbeat;
                let elapsed = clock(self.started.elapsed());
                let eta = self.eta_text();
                let position = self.position();
                let Some(current) = &mut self.current else { return };
                if current.last_line.elapsed() < heartbeat {
                    return;
                }
                current.last_line = Instant::now();
                let line = format!(
                    "{position} {}: still {} after {} (campaign {elapsed}{eta})",
                    current.key,
                    current.phase,
                    clock(current.phase_started.elapsed()),
                );
                self.line(&line);
            }
        }
    }

    /// Clears the live line (or this view's line of a board) before the
    /// summary is printed.
    pub fn finish(&mut self) {
        match &mut self.display {
            Display::Live(out) if self.drawn => {
                let _ = write!(out, "\r\x1b[2K");
                let _ = out.flush();
                self.drawn = false;
            }
            Display::Board(slot) => slot.remove(),
            _ => {}
        }
    }

    /// Turns a live line into a board the runs of a parallel campaign share
    /// (this view keeps the board's first line, for the campaign); plain
    /// lines stay plain.
    pub fn share_live(&mut self) {
        let plain = Display::Lines(Box::new(std::io::sink()));
        match std::mem::replace(&mut self.display, plain) {
            Display::Live(mut out) => {
                if self.drawn {
                    let _ = write!(out, "\r\x1b[2K");
                    self.drawn = false;
                }
                self.display = Display::Board(Board::open(out, terminal_width));
                self.redraw();
            }
            other => self.display = other,
        }
    }

    /// A new line of this view's board, for a run in flight; `None` when
    /// progress is plain lines.
    pub fn board_line(&self) -> Option<Slot> {
        match &self.display {
            Display::Board(slot) => Some(slot.another()),
            _ => None,
        }
    }

    /// Estimated time left: mean run time × runs left, less what the
    /// current run has used.
    pub fn eta(&self) -> Option<Duration> {
        let (sum, count) = self.durations;
        if count == 0 {
            return None;
        }
        let mean = sum / count as f64;
        let left = self.total.saturating_sub(self.done) as f64 * mean;
        let used = self.current.as_ref().map_or(0.0, |c| c.run_started.elapsed().as_secs_f64());
        Some(Duration::from_secs_f64((left - used.min(mean)).max(0.0)))
    }

    fn eta_text(&self) -> String {
        self.eta().map(|eta| format!(", ETA {}", clock(eta))).unwrap_or_default()
    }

    fn position(&self) -> String {
        format!("[{}/{}]", (self.done + 1).min(self.total.max(1)), self.total)
    }

    fn line(&mut self, text: &str) {
        if let Display::Board(slot) = &self.display {
            slot.print_above(text, &self.board_text());
            return;
        }
        match &mut self.display {
            Display::Live(out) => {
                let _ = write!(out, "\r\x1b[2K{text}\n");
                let _ = out.flush();
                self.drawn = false;
                self.redraw();
            }
            Display::Lines(out) => {
                let _ = writeln!(out, "{text}");
                let _ = out.flush();
            }
            Display::Board(_) => {}
        }
    }

    fn redraw(&mut self) {
        if let Display::Board(slot) = &self.display {
            slot.set(&self.board_text());
            return;
        }
        let status = self.status_line();
        if let (Display::Live(out), Some(status)) = (&mut self.display, status) {
            let width = terminal_width();
            let status: String = status.chars().take(width.saturating_sub(1)).collect();
            let _ = write!(out, "\r\x1b[2K{status}");
            let _ = out.flush();
            self.drawn = true;
        }
    }

    /// This view's line of a board: its run, or (the campaign's view, with
    /// no run of its own) the campaign's counts.
    fn board_text(&self) -> String {
        let spinner = spinner(self.started.elapsed());
        match &self.current {
            Some(current) => format!(
                "{spinner} {} {} · {} {} · run {}",
                self.position(),
                current.key,
                current.phase,
                clock(current.phase_started.elapsed()),
                clock(current.run_started.elapsed()),
            ),
            None => format!(
                "{spinner} done {}/{} · elapsed {}{}",
                self.done,
                self.total,
                clock(self.started.elapsed()),
                self.eta_text(),
            ),
        }
    }

    fn status_line(&self) -> Option<String> {
        let current = self.current.as_ref()?;
        let next = self
            .next
            .as_ref()
            .map(|next| format!(" · next {}: {}", next.key, next.text))
            .unwrap_or_default();
        Some(format!(
            "{} done {}/{} · {} · {} {} · elapsed {}{}{next}",
            spinner(self.started.elapsed()),
            self.done,
            self.total,
            current.key,
            current.phase,
            clock(current.phase_started.elapsed()),
            clock(self.started.elapsed()),
            self.eta_text(),
        ))
    }
}

fn spinner(elapsed: Duration) -> char {
    ['|', '/', '-', '\\'][(elapsed.as_secs() % 4) as usize]
}

/// The terminal's width (asked of the terminal each redraw, so a resized
/// window is followed), else `COLUMNS`, else 80.
fn terminal_width() -> usize {
    comfy_table::Table::new()
        .width()
        .map(usize::from)
        .filter(|width| *width >= 20)
        .or_else(|| std::env::var("COLUMNS").ok().and_then(|c| c.parse().ok()))
        .filter(|width| *width >= 20)
        .unwrap_or(80)
}

/// `1h02m`, `4m05s`, `12s`.
pub fn clock(duration: Duration) -> String {
    let seconds = duration.as_secs();
    match seconds {
        0..60 => format!("{seconds}s"),
        60..3600 => format!("{}m{:02}s", seconds / 60, seconds % 60),
        _ => format!("{}h{:02}m", seconds / 3600, seconds % 3600 / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::super::board::tests::Sink;
    use super::*;

    #[test]
    fn lines_name_each_phase_and_outcome_and_the_eta_follows_finished_runs() {
        let sink = Sink::default();
        let mut progress = Progress::new(Display::Lines(Box::new(sink.clone())), 3, 0, None);
        assert_eq!(progress.eta(), None);
        progress.run_started("m|llama_cpp|Q4_K_M");
        progress.phase("starting llama_cpp");
        progress.run_finished("m|llama_cpp|Q4_K_M", "success in 10.0 s", Some(10.0));
        assert_eq!(progress.eta().map(|eta| eta.as_secs()), Some(20));
        progress.run_started("m|llama_cpp|Q8_0");
        progress.phase("throughput (run 1 of 1)");
        progress.tick();
        let text = sink.text();
        assert_eq!(
            text,
            "[1/3] m|llama_cpp|Q4_K_M: starting llama_cpp\n\
             [1/3] m|llama_cpp|Q4_K_M: success in 10.0 s\n\
             [2/3] m|llama_cpp|Q8_0: throughput (run 1 of 1)\n"
        );
    }

    #[test]
    fn heartbeats_come_only_after_a_quiet_interval() {
        let sink = Sink::default();
        let mut progress = Progress::new(Display::Lines(Box::new(sink.clone())), 1, 0, Some(5.0));
        progress.heartbeat = Duration::ZERO;
        progress.run_started("k");
        progress.tick();
        assert!(
            sink.text().contains("[1/1] k: still checking after 0s (campaign 0s, ETA"),
            "{}",
            sink.text()
        );
    }

    #[test]
    fn the_live_line_is_redrawn_in_place_and_cleared() {
        let sink = Sink::default();
        let mut progress = Progress::new(Display::Live(Box::new(sink.clone())), 2, 1, None);
        progress.run_started("k");
        progress.phase("latency (run 1 of 3)");
        progress.finish();
        let text = sink.text();
        assert!(
            text.contains("\r\x1b[2K| done 1/2 · k · latency (run 1 of 3) 0s · elapsed 0s"),
            "{text:?}"
        );
        assert!(text.ends_with("\r\x1b[2K"), "{text:?}");
        assert!(!text.contains('\n'), "{text:?}");
    }

    #[test]
    fn updates_redraw_live_and_are_throttled_in_lines() {
        let sink = Sink::default();
        let mut progress = Progress::new(Display::Lines(Box::new(sink.clone())), 1, 0, None);
        progress.run_started("k");
        progress.phase("downloading org/repo [1/1] m.gguf (1.0 MiB)");
        progress.update("downloading org/repo [1/1] m.gguf 50%");
        assert_eq!(sink.text(), "[1/1] k: downloading org/repo [1/1] m.gguf (1.0 MiB)\n");
        progress.heartbeat = Duration::ZERO;
        progress.update("downloading org/repo [1/1] m.gguf 90%");
        assert!(sink.text().ends_with("[1/1] k: downloading org/repo [1/1] m.gguf 90%\n"));

        let live = Sink::default();
        let mut progress = Progress::new(Display::Live(Box::new(live.clone())), 1, 0, None);
        progress.run_started("k");
        progress.update("downloading org/repo [1/1] m.gguf 50%");
        assert!(
            live.text().contains("k · downloading org/repo [1/1] m.gguf 50% 0s"),
            "{:?}",
            live.text()
        );
    }

    #[test]
    fn a_prefetch_shows_beside_the_current_run() {
        let sink = Sink::default();
        let mut progress = Progress::new(Display::Lines(Box::new(sink.clone())), 2, 0, None);
        progress.run_started("a");
        progress.phase("throughput (run 1 of 1)");
        progress.next_run("b", "downloading org/b [1/1] b.gguf (1.0 MiB)", false);
        progress.next_run("b", "downloading org/b [1/1] b.gguf 50%", true);
        assert_eq!(
            sink.text(),
            "[1/2] a: throughput (run 1 of 1)\n\
             next b: downloading org/b [1/1] b.gguf (1.0 MiB)\n"
        );
        progress.heartbeat = Duration::ZERO;
        progress.next_run("b", "downloading org/b [1/1] b.gguf 90%", true);
        assert!(sink.text().ends_with("next b: downloading org/b [1/1] b.gguf 90%\n"));

        let live = Sink::default();
        let mut progress = Progress::new(Display::Live(Box::new(live.clone())), 2, 0, None);
        progress.run_started("a");
        progress.next_run("b", "downloading org/b 50%", true);
        assert!(live.text().ends_with("· next b: downloading org/b 50%"), "{:?}", live.text());
        progress.next_run_done();
        assert!(!live.text().ends_with("50%"), "{:?}", live.text());
    }

    #[test]
    fn a_parallel_campaign_shares_a_board_with_a_line_per_run() {
        let sink = Sink::default();
        let mut campaign = Progress::new(Display::Live(Box::new(sink.clone())), 3, 0, None);
        campaign.share_live();
        let mut runs: Vec<Progress> = ["a", "b"]
            .iter()
            .enumerate()
            .map(|(at, key)| {
                let line = campaign.board_line().expect("a board");
                let mut run = Progress::new(Display::Board(line), 3, at as u64, None);
                run.run_started(key);
                run
            })
            .collect();
        runs[1].phase("latency (run 1 of 3)");
        let text = sink.text();
        let frame = text.rsplit("\x1b[J").next().expect("a frame");
        assert_eq!(
            frame,
            "| done 0/3 · elapsed 0s\n\
             | [1/3] a · checking 0s · run 0s\n\
             | [2/3] b · latency (run 1 of 3) 0s · run 0s",
        );
        // A finished run's line goes above; its own line goes with it.
        let mut first = runs.remove(0);
        first.run_finished("a", "success in 1.0 s", Some(1.0));
        campaign.count_finished(Some(1.0));
        drop(first);
        let text = sink.text();
        let frame = text.rsplit("\x1b[J").next().expect("a frame");
        assert_eq!(
            frame,
            "| done 1/3 · elapsed 0s, ETA 2s\n| [2/3] b · latency (run 1 of 3) 0s · run 0s"
        );
        assert!(text.contains("\x1b[J[1/3] a: success in 1.0 s\n"), "{text:?}");
        assert!(!text.contains("\n\n"), "{text:?}");
    }

    #[test]
    fn clocks_read_naturally() {
        assert_eq!(clock(Duration::from_secs(12)), "12s");
        assert_eq!(clock(Duration::from_secs(245)), "4m05s");
        assert_eq!(clock(Duration::from_secs(3720)), "1h02m");
    }
}
