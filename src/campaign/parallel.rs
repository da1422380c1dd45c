//! Parallel campaigns (`parallel: true`): runs on different devices at once.
//!
//! The coordinator task still owns the campaign: it reads the machine's
//! devices ([`crate::hardware::inventory`]), places runs on free devices in
//! plan order ([`super::placement`]), and drives every run in flight as a
//! future of its own task (each with its own store connection and progress
//! lines), so no run state is shared between runs except through the
//! coordinator. When a run ends, the coordinator frees its devices, cleans
//! up after it and starts what fits next.
//!
//! Decisions:
//! - What a run needs and where it goes are [`super::placement`]'s: its
//!   model's size plus headroom, memory other processes use at the start
//!   taken from their devices, unified-memory devices sharing one RAM
//!   budget. A run the machine can never hold is skipped with the sizes in
//!   its reason.
//! - Placement is in plan order: a run waits until enough devices are free
//!   and runs after it wait too, so a big run is never starved by small
//!   ones and the order stays predictable. It takes the lowest free indices
//!   that hold it.
//! - Devices are never shared: two runs that overlap in time have disjoint
//!   devices. A CPU-only machine is one device, so a parallel campaign there
//!   runs one run at a time.
//! - `max_parallel` caps the runs in flight whatever the devices allow.
//! - Engines are pinned: native ones get `CUDA_VISIBLE_DEVICES` (and
//!   `HIP_VISIBLE_DEVICES`) listing their devices, containers get them as
//!   `--gpus device=…`. Ports are distinct ([`crate::engine::port`]).
//! - Each result records its devices (`devices` comparability note) and
//!   every run that was in flight at the same time, with its devices
//!   (`concurrent_activity`), so a reader can judge interference on shared
//!   buses, CPU and disk. The store keeps each run's devices too, for
//!   `campaign status`.
//! - Engines share the CPU: when several runs can be in flight, a llama.cpp
//!   engine without `threads` in its config gets the machine's threads
//!   divided by the runs that can be in flight (at least one), recorded as a
//!   `threads` comparability note. Without it each llama-server starts a
//!   thread per core and the engines, busy-waiting, slow each other down
//!   many times over.
//! - No prefetch in parallel: the runs in flight download their own models
//!   side by side. Each download's disk check also counts the bytes the
//!   other downloads in flight still need, and one that does not fit beside
//!   them waits for them rather than being skipped ([`super::reserve`]).
//! - Progress on a terminal is a board ([`super::board`]): the campaign's
//!   line and one live line per run in flight; finished runs and notes are
//!   printed above it. Elsewhere it is plain lines, one per phase change of
//!   each run, prefixed by `[i/N]` and the run's key. `i` numbers the runs
//!   in the order they start (a run skipped at placement takes its number
//!   too), counting on from the runs done before this session, so two runs
//!   started together have different numbers and a run's last line has the
//!   number of its first. `campaign status` lists every run in flight with
//!   its devices.
//! - A run that stops the campaign (the store fails) lets the others end
//!   before the error is returned; Ctrl-C reaches every run in flight
//!   through the shared cancel, and each stops its engine.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;

use super::acquire::Downloads;
use super::coordinator::{Acquiring, Attempt, Ended, RunContext, environment, run_one};
use super::placement::{Placed, Placer, Seat};
use super::progress::{Display, Progress};
use super::reserve::InFlight;
use crate::acquire::hub::HubClient;
use crate::error::KittError;
use crate::hardware::inventory::Inventory;
use crate::plan::PlannedRun;
use crate::run::{Beside, Cancel};
use crate::store::Store;

/// What every parallel run of a session shares.
pub(super) struct Session<'a, 'c> {
    pub(super) context: &'a RunContext<'c>,
    pub(super) session_id: i64,
    /// Progress lines go to stderr (stdout carries JSON).
    pub(super) json: bool,
    /// Runs of the campaign done or skipped before this session: the runs
    /// of this one are numbered after them.
    pub(super) done_before: u64,
}

/// Where a run was placed.
pub(super) struct Placement {
    /// GPU indices (empty on a CPU-only machine).
    pub(super) devices: Vec<u32>,
    /// What ran beside it, filled in while it runs.
    pub(super) beside: Arc<Beside>,
    /// CPU threads for an engine that takes a thread count and has none set:
    /// the machine's threads divided among the runs that may be in flight.
    pub(super) cpu_threads: Option<u32>,
}

impl Placement {
    /// The devices as the result records them.
    pub(super) fn described(&self) -> String {
        format!("{} (placed by `parallel: true`)", devices_text(&self.devices))
    }

    /// The devices as `campaign status` shows them: `GPU 0,1`, or `CPU`.
    pub(super) fn short(&self) -> String {
        if self.devices.is_empty() {
            return "CPU".to_owned();
        }
        let list: Vec<String> = self.devices.iter().map(u32::to_string).collect();
        format!("GPU {}", list.join(","))
    }
}

/// `GPU 0,1 (CUDA_VISIBLE_DEVICES=0,1)`, or `the CPU` without GPUs.
fn devices_text(devices: &[u32]) -> String {
    if devices.is_empty() {
        return "the CPU (no GPU found or visible)".to_owned();
    }
    let list: Vec<String> = devices.iter().map(u32::to_string).collect();
    let list = list.join(",");
    format!("GPU {list} (CUDA_VISIBLE_DEVICES={list})")
}

/// The CPU threads each of `runs` engines in flight at once gets (`None`
/// when only one runs at a time): the machine's threads divided among them,
/// at least one. Without it every llama-server starts a thread per core and
/// the engines of a parallel campaign fight over the same cores.
fn cpu_threads_per_run(runs: usize) -> Option<u32> {
    if runs < 2 {
        return None;
    }
    let threads = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    Some(u32::try_from((threads / runs).max(1)).unwrap_or(1))
}

/// A run in flight, as the coordinator sees it.
struct Active<'p> {
    token: u64,
    run_id: i64,
    planned: &'p PlannedRun,
    seat: Seat,
    beside: Arc<Beside>,
}

/// How a run in flight ended, with its own progress lines for the last one.
type RunEnded = (u64, Result<Ended, KittError>, Progress);

type RunFuture<'f> = Pin<Box<dyn Future<Output = RunEnded> + 'f>>;

/// The runs of a session numbered in the order they start.
struct Numbers {
    next: u64,
    total: u64,
}

impl Numbers {
    /// The next run's number and the total.
    fn take(&mut self) -> (u64, u64) {
        self.next += 1;
        (self.next, self.total)
    }
}

/// Runs `todo` on the machine's devices, several at once; returns whether
/// the user stopped the campaign. `failed` hears every failed run.
pub(super) async fn run_all(
    session: &Session<'_, '_>,
    store: &mut Store,
    todo: &[(i64, &PlannedRun)],
    (downloads, progress): (&mut Downloads, &mut Progress),
    cancel: &Cancel,
    failed: &mut dyn FnMut(&str, String),
) -> Result<bool, KittError> {
    let context = session.context;
    let inventory = tokio::task::spawn_blocking(crate::hardware::inventory::inventory)
        .await
        .unwrap_or_else(|_| Inventory::new(Vec::new(), 0));
    let cap = context.campaign.max_parallel.map_or(usize::MAX, |cap| cap as usize).max(1);
    let limit = match context.campaign.max_parallel {
        Some(cap) => format!(", at most {cap} at once"),
        None => String::new(),
    };
    progress.note(&format!("parallel: runs placed on {}{limit}", inventory.describe()));
    progress.share_live();
    let mut placer = Placer::new(&inventory);
    let at_once = placer.most_at_once(todo.iter().map(|(_, run)| run.size_bytes));
    let cpu_share = cpu_threads_per_run(at_once.min(cap));
    let mut numbers =
        Numbers { next: session.done_before, total: session.done_before + todo.len() as u64 };
    let mut queue: VecDeque<(i64, &PlannedRun)> = todo.iter().copied().collect();
    let mut active: Vec<Active<'_>> = Vec::new();
    let mut running: FuturesUnordered<RunFuture<'_>> = FuturesUnordered::new();
    let mut next_token = 0u64;
    let mut interrupted = false;
    let mut fatal: Option<KittError> = None;
    let in_flight = Arc::new(InFlight::default());
    let mut ticker = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        while !cancel.is_cancelled() && fatal.is_none() && active.len() < cap {
            let Some(&(run_id, planned)) = queue.front() else { break };
            let seat = match placer.place(planned.size_bytes) {
                Placed::Seat(seat) => seat,
                Placed::Wait => break,
                Placed::TooBig(reason) => {
                    queue.pop_front();
                    store.run_skipped(run_id, &reason).map_err(environment)?;
                    // Numbered like the lines of the runs that start.
                    let (number, total) = numbers.take();
                    progress
                        .note(&format!("[{number}/{total}] {}: skipped: {reason}", planned.key));
                    progress.count_finished(None);
                    continue;
                }
            };
            queue.pop_front();
            let devices = seat.devices.clone();
            let beside = Arc::new(Beside::default());
            for other in &active {
                other.beside.add(&format!(
                    "run {} ran at the same time on {}",
                    planned.key,
                    devices_text(&devices)
                ));
                beside.add(&format!(
                    "run {} ran at the same time on {}",
                    other.planned.key,
                    devices_text(&other.seat.devices)
                ));
            }
            progress.note(&format!("{}: starts on {}", planned.key, devices_text(&devices)));
            let later: Vec<&PlannedRun> = queue
                .iter()
                .map(|(_, run)| *run)
                .chain(active.iter().map(|other| other.planned))
                .collect();
            let placement =
                Placement { devices, beside: Arc::clone(&beside), cpu_threads: cpu_share };
            let token = next_token;
            next_token += 1;
            in_flight.run_started();
            let run = One {
                session,
                attempt: Attempt { session_id: session.session_id, run_id },
                planned,
                later,
                placement,
                position: numbers.take(),
                in_flight: Arc::clone(&in_flight),
                line: progress.board_line(),
            };
            running.push(Box::pin(run.drive(token, cancel)));
            active.push(Active { token, run_id, planned, seat, beside });
        }
        if running.is_empty() {
            break;
        }
        let (token, ended, mut lines) = tokio::select! {
            Some(ended) = running.next() => ended,
            _ = ticker.tick() => {
                progress.tick();
                continue;
            }
        };
        let Some(at) = active.iter().position(|run| run.token == token) else {
            in_flight.run_ended();
            continue;
        };
        let finished = active.swap_remove(at);
        placer.release(&finished.seat);
        let planned = finished.planned;
        match ended {
            Err(error) => {
                lines.run_finished(&planned.key, "stopped the campaign", None);
                fatal.get_or_insert(error);
            }
            Ok(Ended::Interrupted) => {
                lines.run_finished(&planned.key, "interrupted; redone on resume", None);
                interrupted = true;
            }
            Ok(Ended::Done { outcome, seconds, failure }) => {
                let later: Vec<&PlannedRun> = queue
                    .iter()
                    .map(|(_, run)| *run)
                    .chain(active.iter().map(|other| other.planned))
                    .collect();
                super::cleanup::after_run(
                    context,
                    store,
                    finished.run_id,
                    planned,
                    &later,
                    progress,
                );
                downloads.after_run(context, store, planned, &later, progress).await;
                lines.run_finished(&planned.key, &outcome, seconds);
                progress.count_finished(seconds);
                if let Some(error) = failure {
                    failed(&planned.key, error);
                }
            }
        }
        // After its cleanup: a download waiting for room checks again.
        in_flight.run_ended();
    }
    if let Some(error) = fatal {
        return Err(error);
    }
    Ok(interrupted || cancel.is_cancelled() && !queue.is_empty())
}

/// One run in flight, with what it owns.
struct One<'s, 'a, 'c, 'p> {
    session: &'s Session<'a, 'c>,
    attempt: Attempt,
    planned: &'p PlannedRun,
    later: Vec<&'p PlannedRun>,
    placement: Placement,
    /// Its number among the campaign's runs and their total, for its lines.
    position: (u64, u64),
    in_flight: Arc<InFlight>,
    /// Its line of the campaign's board on a terminal, else plain lines.
    line: Option<super::board::Slot>,
}

impl One<'_, '_, '_, '_> {
    /// Runs it with its own store connection, downloads and progress lines
    /// (returned for its last line, which the coordinator writes after
    /// cleaning up).
    async fn drive(self, token: u64, cancel: &Cancel) -> RunEnded {
        let context = self.session.context;
        let display = if let Some(line) = self.line {
            Display::Board(line)
        } else if self.session.json {
            Display::Lines(Box::new(std::io::stderr()))
        } else {
            Display::Lines(Box::new(std::io::stdout()))
        };
        let (position, total) = self.position;
        let mut progress = Progress::new(display, total, position - 1, None);
        let mut store = match Store::open(context.home) {
            Ok(store) => store,
            Err(error) => return (token, Err(environment(error)), progress),
        };
        let campaign = context.campaign;
        let token_text = campaign.hf_token.as_ref().map(|token| token.expose().to_owned());
        let hub = HubClient::from_env(token_text).map_err(|e| e.to_string());
        let mut downloads = Downloads::new(hub, &campaign.devon);
        downloads.share_reserve(Arc::clone(&self.in_flight));
        let mut prefetch = None;
        let mut acquiring =
            Acquiring { downloads: &mut downloads, prefetch: &mut prefetch, next: None };
        progress.run_started(&self.planned.key);
        let ended = run_one(
            context,
            &mut store,
            &mut acquiring,
            (self.attempt, Some(&self.placement)),
            (self.planned, &self.later),
            cancel,
            &mut progress,
        )
        .await;
        (token, ended, progress)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placed_devices_are_described_with_their_pin() {
        assert_eq!(devices_text(&[0, 1]), "GPU 0,1 (CUDA_VISIBLE_DEVICES=0,1)");
        assert_eq!(devices_text(&[]), "the CPU (no GPU found or visible)");
        let placement =
            Placement { devices: vec![2, 3], beside: Arc::default(), cpu_threads: None };
        assert_eq!(placement.short(), "GPU 2,3");
    }

    #[test]
    fn runs_are_numbered_in_the_order_they_start_after_the_earlier_ones() {
        let mut numbers = Numbers { next: 2, total: 5 };
        assert_eq!(numbers.take(), (3, 5));
        assert_eq!(numbers.take(), (4, 5));
    }
}
