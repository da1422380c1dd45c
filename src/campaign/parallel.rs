//! Parallel campaigns (`parallel: true`): runs on different devices at once.
//!
//! The coordinator task still owns the campaign: it reads the machine's
//! devices ([`crate::hardware::inventory`]), places runs on free devices in
//! plan order, and drives every run in flight as a future of its own task
//! (each with its own store connection and progress lines), so no run state
//! is shared between runs except through the coordinator. When a run ends,
//! the coordinator frees its devices, cleans up after it and starts what
//! fits next.
//!
//! Decisions:
//! - A run needs its model's size plus [`HEADROOM_PERCENT`] (KV cache,
//!   activations, the engine's own buffers) of device memory. When one
//!   device cannot hold that, it gets as many devices as the memory needs
//!   (the smallest device counts for all); when the whole machine cannot,
//!   the run is skipped with the sizes in its reason. A model of unknown
//!   size needs one device.
//! - Placement is in plan order: a run waits until enough devices are free
//!   and runs after it wait too, so a big run is never starved by small
//!   ones and the order stays predictable. It takes the lowest free indices.
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
//!   buses, CPU and disk.
//! - Engines share the CPU: when several runs can be in flight, a llama.cpp
//!   engine without `threads` in its config gets the machine's threads
//!   divided by the runs that can be in flight (at least one), recorded as a
//!   `threads` comparability note. Without it each llama-server starts a
//!   thread per core and the engines, busy-waiting, slow each other down
//!   many times over.
//! - No prefetch in parallel: the runs in flight download their own models
//!   side by side. Each download's disk check also counts the bytes the
//!   other downloads in flight still need ([`InFlight`]), so the reserve
//!   holds for all of them together.
//! - Progress on a terminal is a board ([`super::board`]): the campaign's
//!   line and one live line per run in flight; finished runs and notes are
//!   printed above it. Elsewhere it is plain lines, one per phase change of
//!   each run, prefixed by the run's key. `campaign status` lists every run
//!   in flight.
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
use super::progress::{Display, Progress};
use crate::acquire::hub::HubClient;
use crate::error::KittError;
use crate::hardware::inventory::{Inventory, gib};
use crate::plan::PlannedRun;
use crate::run::{Beside, Cancel};
use crate::store::Store;

/// Device memory a run needs beyond its model's size, in percent.
pub const HEADROOM_PERCENT: u64 = 20;

/// What every parallel run of a session shares.
pub(super) struct Session<'a, 'c> {
    pub(super) context: &'a RunContext<'c>,
    pub(super) session_id: i64,
    /// Progress lines go to stderr (stdout carries JSON).
    pub(super) json: bool,
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
}

/// `GPU 0,1 (CUDA_VISIBLE_DEVICES=0,1)`, or `the CPU` without GPUs.
fn devices_text(devices: &[u32]) -> String {
    if devices.is_empty() {
        return "the CPU (no GPU found)".to_owned();
    }
    let list: Vec<String> = devices.iter().map(u32::to_string).collect();
    let list = list.join(",");
    format!("GPU {list} (CUDA_VISIBLE_DEVICES={list})")
}

/// How many devices a model of `model_bytes` needs on `inventory`, or why
/// the machine cannot hold it.
pub fn devices_needed(model_bytes: Option<u64>, inventory: &Inventory) -> Result<usize, String> {
    let Some(model) = model_bytes.filter(|bytes| *bytes > 0) else { return Ok(1) };
    let needed = model.saturating_add(model / 100 * HEADROOM_PERCENT);
    let count = inventory.device_count();
    let smallest = (0..count).map(|slot| inventory.usable_bytes(slot)).min().unwrap_or(0);
    if smallest == 0 {
        // Memory unknown: one device, as without placement.
        return Ok(1);
    }
    let devices = needed.div_ceil(smallest) as usize;
    if devices <= count {
        return Ok(devices.max(1));
    }
    let what = if inventory.has_gpus() {
        format!("{count} device(s) of {} each", gib(smallest))
    } else {
        format!("no GPU and {} of RAM", gib(smallest))
    };
    Err(format!(
        "the model needs {} of device memory ({} plus {HEADROOM_PERCENT}% headroom) and this \
         machine has {what}",
        gib(needed),
        gib(model)
    ))
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

/// The bytes the downloads in flight still need, counted by every other
/// download's disk check.
#[derive(Debug, Default)]
pub(super) struct InFlight(std::sync::Mutex<u64>);

impl InFlight {
    /// Bytes counted now.
    pub(super) fn bytes(&self) -> u64 {
        *self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Counts `bytes` until the guard is dropped.
    pub(super) fn hold(self: &Arc<Self>, bytes: u64) -> Held {
        *self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner) += bytes;
        Held { in_flight: Arc::clone(self), bytes }
    }
}

/// Bytes counted in [`InFlight`] while a download runs.
pub(super) struct Held {
    in_flight: Arc<InFlight>,
    bytes: u64,
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut bytes = self.in_flight.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        *bytes = bytes.saturating_sub(self.bytes);
    }
}

/// A run in flight, as the coordinator sees it.
struct Active<'p> {
    token: u64,
    run_id: i64,
    planned: &'p PlannedRun,
    /// Device slots it holds.
    slots: Vec<usize>,
    devices: Vec<u32>,
    beside: Arc<Beside>,
}

type RunFuture<'f> = Pin<Box<dyn Future<Output = (u64, Result<Ended, KittError>)> + 'f>>;

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
    let cpu_share = cpu_threads_per_run(inventory.device_count().min(cap));
    let total = todo.len() as u64;
    let mut free = vec![true; inventory.device_count()];
    let mut queue: VecDeque<(i64, &PlannedRun)> = todo.iter().copied().collect();
    let mut active: Vec<Active<'_>> = Vec::new();
    let mut running: FuturesUnordered<RunFuture<'_>> = FuturesUnordered::new();
    let mut next_token = 0u64;
    let mut interrupted = false;
    let mut fatal: Option<KittError> = None;
    let in_flight = Arc::new(InFlight::default());
    let mut done = 0u64;
    let mut ticker = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        while !cancel.is_cancelled() && fatal.is_none() && active.len() < cap {
            let Some(&(run_id, planned)) = queue.front() else { break };
            let need = match devices_needed(planned.size_bytes, &inventory) {
                Ok(need) => need,
                Err(reason) => {
                    queue.pop_front();
                    store.run_skipped(run_id, &reason).map_err(environment)?;
                    progress.run_finished(&planned.key, &format!("skipped: {reason}"), None);
                    done += 1;
                    continue;
                }
            };
            let slots: Vec<usize> = (0..free.len()).filter(|slot| free[*slot]).take(need).collect();
            if slots.len() < need {
                break;
            }
            queue.pop_front();
            for slot in &slots {
                free[*slot] = false;
            }
            let devices: Vec<u32> = slots
                .iter()
                .filter_map(|slot| inventory.gpus.get(*slot))
                .map(|d| d.index)
                .collect();
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
                    devices_text(&other.devices)
                ));
            }
            progress.note(&format!("{}: starts on {}", planned.key, devices_text(&devices)));
            let later: Vec<&PlannedRun> = queue
                .iter()
                .map(|(_, run)| *run)
                .chain(active.iter().map(|other| other.planned))
                .collect();
            let placement = Placement {
                devices: devices.clone(),
                beside: Arc::clone(&beside),
                cpu_threads: cpu_share,
            };
            let token = next_token;
            next_token += 1;
            let run = One {
                session,
                attempt: Attempt { session_id: session.session_id, run_id },
                planned,
                later,
                placement,
                position: (done + 1, total),
                in_flight: Arc::clone(&in_flight),
                line: progress.board_line(),
            };
            running.push(Box::pin(run.drive(token, cancel)));
            active.push(Active { token, run_id, planned, slots, devices, beside });
        }
        if running.is_empty() {
            break;
        }
        let (token, ended) = tokio::select! {
            Some(ended) = running.next() => ended,
            _ = ticker.tick() => {
                progress.tick();
                continue;
            }
        };
        let Some(at) = active.iter().position(|run| run.token == token) else { continue };
        let finished = active.swap_remove(at);
        for slot in &finished.slots {
            free[*slot] = true;
        }
        let planned = finished.planned;
        done += 1;
        match ended {
            Err(error) => {
                progress.run_finished(&planned.key, "stopped the campaign", None);
                fatal.get_or_insert(error);
            }
            Ok(Ended::Interrupted) => {
                progress.run_finished(&planned.key, "interrupted; redone on resume", None);
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
                progress.run_finished(&planned.key, &outcome, seconds);
                if let Some(error) = failure {
                    failed(&planned.key, error);
                }
            }
        }
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
    /// Its position among the session's runs, for its progress lines.
    position: (u64, u64),
    in_flight: Arc<InFlight>,
    /// Its line of the campaign's board on a terminal, else plain lines.
    line: Option<super::board::Slot>,
}

impl One<'_, '_, '_, '_> {
    /// Runs it with its own store connection, downloads and progress lines.
    async fn drive(self, token: u64, cancel: &Cancel) -> (u64, Result<Ended, KittError>) {
        let context = self.session.context;
        let mut store = match Store::open(context.home) {
            Ok(store) => store,
            Err(error) => return (token, Err(environment(error))),
        };
        let display = if let Some(line) = self.line {
            Display::Board(line)
        } else if self.session.json {
            Display::Lines(Box::new(std::io::stderr()))
        } else {
            Display::Lines(Box::new(std::io::stdout()))
        };
        let (position, total) = self.position;
        let mut progress = Progress::new(display, total, position - 1, None);
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
        (token, ended)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hardware::inventory::Device;

    const GIB: u64 = 1 << 30;

    fn gpus(count: u32, memory: Option<u64>) -> Inventory {
        let devices = (0..count)
            .map(|index| Device {
                index,
                uuid: None,
                name: "Test GPU".into(),
                memory_bytes: memory,
                used_bytes: None,
                utilization_percent: None,
            })
            .collect();
        Inventory::new(devices, 64 * GIB)
    }

    #[test]
    fn a_model_that_fits_one_device_needs_one() {
        assert_eq!(devices_needed(Some(10 * GIB), &gpus(2, Some(24 * GIB))), Ok(1));
        assert_eq!(devices_needed(None, &gpus(2, Some(24 * GIB))), Ok(1));
    }

    #[test]
    fn headroom_counts_and_a_bigger_model_gets_more_devices() {
        // 20 GiB + 20% = 24 GiB: one 24 GiB device holds it exactly.
        assert_eq!(devices_needed(Some(20 * GIB), &gpus(2, Some(24 * GIB))), Ok(1));
        assert_eq!(devices_needed(Some(21 * GIB), &gpus(2, Some(24 * GIB))), Ok(2));
        assert_eq!(devices_needed(Some(50 * GIB), &gpus(4, Some(24 * GIB))), Ok(3));
    }

    #[test]
    fn a_model_bigger_than_the_machine_says_why() {
        let reason = devices_needed(Some(100 * GIB), &gpus(2, Some(24 * GIB))).unwrap_err();
        assert!(reason.contains("120.0 GiB"), "{reason}");
        assert!(reason.contains("2 device(s) of 24.0 GiB each"), "{reason}");
        let cpu = Inventory::new(Vec::new(), 8 * GIB);
        let reason = devices_needed(Some(10 * GIB), &cpu).unwrap_err();
        assert!(reason.contains("no GPU and 8.0 GiB of RAM"), "{reason}");
    }

    #[test]
    fn unified_memory_devices_hold_what_the_ram_holds() {
        assert_eq!(devices_needed(Some(40 * GIB), &gpus(1, None)), Ok(1));
        assert!(devices_needed(Some(60 * GIB), &gpus(1, None)).is_err());
    }

    #[test]
    fn placed_devices_are_described_with_their_pin() {
        assert_eq!(devices_text(&[0, 1]), "GPU 0,1 (CUDA_VISIBLE_DEVICES=0,1)");
        assert_eq!(devices_text(&[]), "the CPU (no GPU found)");
    }

    #[test]
    fn in_flight_bytes_are_counted_while_held() {
        let in_flight = Arc::new(InFlight::default());
        let first = in_flight.hold(10);
        let second = in_flight.hold(5);
        assert_eq!(in_flight.bytes(), 15);
        drop(first);
        assert_eq!(in_flight.bytes(), 5);
        drop(second);
        assert_eq!(in_flight.bytes(), 0);
    }
}
