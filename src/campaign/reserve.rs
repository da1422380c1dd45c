//! The disk reserve shared by the runs of a parallel campaign: the bytes
//! the downloads in flight still need, which every other download's disk
//! check counts, and the runs in flight, which may free room.
//!
//! Decisions:
//! - A download fits when the free space holds the reserve, its own missing
//!   bytes and the bytes the other downloads in flight still need.
//! - One that does not fit waits, without holding up the other runs, while
//!   another run of the campaign is in flight and not itself waiting: that
//!   run's download ending (its bytes are then on disk, not promised) or its
//!   run ending (its cleanup may remove its model) changes the answer, and
//!   the check is made again, with the missing bytes counted again (another
//!   run may have downloaded the same files).
//! - It is skipped only when it does not fit and no other run could change
//!   that: it cannot fit even alone. Runs that all wait for room therefore
//!   never wait for each other forever: when the last run that could free
//!   room stops, they check once more and go on or are skipped.
//! - The sequential coordinator has none of this: its one download at a
//!   time (and a prefetch) is checked once, with the same [`shortfall`].

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::Notify;

use crate::acquire::local::free_space;
use crate::plan::matrix::{disk_shortfall_message, human_bytes};
use crate::run::Cancel;

/// The downloads and runs in flight of a parallel campaign.
#[derive(Debug, Default)]
pub(super) struct InFlight {
    state: Mutex<State>,
    /// Told whenever room may have appeared.
    changed: Notify,
}

#[derive(Debug, Default)]
struct State {
    /// Bytes the downloads in flight still need.
    bytes: u64,
    /// Runs in flight.
    runs: usize,
    /// Runs among them waiting for room.
    waiting: usize,
    /// Counts the changes, so a waiter sees one that came before it slept.
    changes: u64,
}

/// How a download's claim for room ended.
#[derive(Debug)]
pub(super) enum Claim {
    /// It fits; its bytes are counted until the guard is dropped.
    Held(Held),
    /// It cannot fit even alone: the shortfall.
    Skip(String),
    /// The user stopped the campaign while it waited.
    Interrupted,
}

impl InFlight {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A run of the campaign starts; until [`InFlight::run_ended`] a
    /// download short of room waits for it.
    pub(super) fn run_started(&self) {
        self.state().runs += 1;
    }

    /// A run ended and was cleaned up after: waiting downloads check again.
    pub(super) fn run_ended(&self) {
        let mut state = self.state();
        state.runs = state.runs.saturating_sub(1);
        self.changed(&mut state);
    }

    /// Room for a download: `check` is given the bytes other downloads in
    /// flight still need and answers the bytes to hold when it fits, else
    /// the shortfall. While it does not fit and another run could free room,
    /// `waiting` hears the shortfall and the claim waits for a change.
    pub(super) async fn claim(
        self: &Arc<Self>,
        mut check: impl FnMut(u64) -> Result<u64, String>,
        cancel: &Cancel,
        mut waiting: impl FnMut(&str),
    ) -> Claim {
        loop {
            let (shortfall, seen) = match self.try_claim(&mut check) {
                Ok(claim) => return claim,
                Err(waits) => waits,
            };
            let _waiting = Waiting(self);
            waiting(&shortfall);
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.state().changes != seen {
                continue;
            }
            tokio::select! {
                () = changed => {}
                () = cancel.cancelled() => return Claim::Interrupted,
            }
        }
    }

    /// One check of [`InFlight::claim`]: how it ended, or the shortfall and
    /// the change seen when it must wait (then counted as waiting).
    fn try_claim(
        self: &Arc<Self>,
        check: &mut impl FnMut(u64) -> Result<u64, String>,
    ) -> Result<Claim, (String, u64)> {
        let mut state = self.state();
        let shortfall = match check(state.bytes) {
            Ok(bytes) => {
                state.bytes += bytes;
                return Ok(Claim::Held(Held { in_flight: Arc::clone(self), bytes }));
            }
            Err(shortfall) => shortfall,
        };
        // This run is one of `runs`; the others that are not waiting may
        // still free room.
        if state.runs <= state.waiting + 1 {
            return Ok(Claim::Skip(shortfall));
        }
        state.waiting += 1;
        Err((shortfall, state.changes))
    }

    /// Something that may make room happened.
    fn changed(&self, state: &mut State) {
        state.changes += 1;
        self.changed.notify_waiters();
    }
}

/// A run counted as waiting for room until dropped. A run only starts
/// waiting while another that does not wait is in flight, so the runs that
/// could free room only become fewer when one ends ([`InFlight::run_ended`]).
struct Waiting<'a>(&'a InFlight);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let mut state = self.0.state();
        state.waiting = state.waiting.saturating_sub(1);
    }
}

/// Bytes counted in [`InFlight`] while a download runs.
#[derive(Debug)]
pub(super) struct Held {
    in_flight: Arc<InFlight>,
    bytes: u64,
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut state = self.in_flight.state();
        state.bytes = state.bytes.saturating_sub(self.bytes);
        self.in_flight.changed(&mut state);
    }
}

/// Why `bytes` to download do not fit under `root` beside the `reserve` and
/// the `others` bytes other downloads in flight still need; `None` when
/// they fit or the free space is unknown.
pub(super) fn shortfall(root: &Path, reserve: u64, bytes: u64, others: u64) -> Option<String> {
    let free = free_space(root)?;
    if free >= reserve.saturating_add(bytes).saturating_add(others) {
        return None;
    }
    let mut message = disk_shortfall_message(root, bytes, 0, reserve, free);
    if others > 0 {
        message.push_str(&format!(
            ", and the downloads of other runs in flight need {} more",
            human_bytes(others)
        ));
    }
    Some(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    impl InFlight {
        fn bytes(&self) -> u64 {
            self.state().bytes
        }

        /// Another download of `bytes` in flight.
        fn hold(self: &Arc<Self>, bytes: u64) -> Held {
            self.state().bytes += bytes;
            Held { in_flight: Arc::clone(self), bytes }
        }
    }

    /// A disk of `free` bytes with no reserve.
    fn disk(free: u64, own: u64) -> impl FnMut(u64) -> Result<u64, String> {
        move |others| {
            if free >= own + others { Ok(own) } else { Err(format!("{own} + {others} > {free}")) }
        }
    }

    /// An `InFlight` with `runs` runs in flight.
    fn runs(runs: usize) -> Arc<InFlight> {
        let in_flight = Arc::new(InFlight::default());
        for _ in 0..runs {
            in_flight.run_started();
        }
        in_flight
    }

    #[tokio::test]
    async fn bytes_are_counted_while_held_and_a_download_that_fits_beside_goes_at_once() {
        let in_flight = runs(2);
        let other = in_flight.hold(40);
        let claim = in_flight.claim(disk(100, 50), &Cancel::default(), |_| {}).await;
        assert!(matches!(claim, Claim::Held(_)), "{claim:?}");
        assert_eq!(in_flight.bytes(), 90);
        drop(other);
        assert_eq!(in_flight.bytes(), 50);
        drop(claim);
        assert_eq!(in_flight.bytes(), 0);
    }

    #[tokio::test]
    async fn a_download_short_of_room_waits_for_the_other_download_and_then_goes() {
        let in_flight = runs(2);
        let other = in_flight.hold(60);
        let cancel = Cancel::default();
        let heard = std::cell::RefCell::new(Vec::<String>::new());
        let claim = in_flight.claim(disk(100, 50), &cancel, |s| heard.borrow_mut().push(s.into()));
        tokio::pin!(claim);
        // It does not fit beside the other's 60 bytes: it waits.
        assert!(futures_util::poll!(claim.as_mut()).is_pending());
        assert_eq!(*heard.borrow(), ["50 + 60 > 100".to_owned()]);
        drop(other);
        let claim = claim.await;
        assert!(matches!(claim, Claim::Held(_)), "{claim:?}");
    }

    #[tokio::test]
    async fn a_download_that_cannot_fit_alone_is_skipped_once_no_other_run_can_free_room() {
        let in_flight = runs(1);
        let cancel = Cancel::default();
        // Alone: skipped at once.
        let claim = in_flight.claim(disk(40, 50), &cancel, |_| {}).await;
        assert!(matches!(claim, Claim::Skip(ref why) if why == "50 + 0 > 40"), "{claim:?}");
        // Beside a running run: it waits for that run to end, then is skipped.
        in_flight.run_started();
        let claim = in_flight.claim(disk(40, 50), &cancel, |_| {});
        tokio::pin!(claim);
        assert!(futures_util::poll!(claim.as_mut()).is_pending());
        in_flight.run_ended();
        assert!(matches!(claim.await, Claim::Skip(_)));
    }

    #[tokio::test]
    async fn runs_that_all_wait_for_room_do_not_wait_for_each_other() {
        let in_flight = runs(3);
        let cancel = Cancel::default();
        let first = in_flight.claim(disk(40, 50), &cancel, |_| {});
        let second = in_flight.claim(disk(40, 50), &cancel, |_| {});
        tokio::pin!(first, second);
        assert!(futures_util::poll!(first.as_mut()).is_pending());
        assert!(futures_util::poll!(second.as_mut()).is_pending());
        // The third run ends: nothing can free room any more. The first is
        // skipped; once its run has ended too, so is the second.
        in_flight.run_ended();
        let first = first.await;
        assert!(matches!(first, Claim::Skip(_)), "{first:?}");
        assert!(futures_util::poll!(second.as_mut()).is_pending());
        in_flight.run_ended();
        let second = second.await;
        assert!(matches!(second, Claim::Skip(_)), "{second:?}");
    }

    #[tokio::test]
    async fn a_waiting_download_stops_with_the_campaign() {
        let in_flight = runs(2);
        let _other = in_flight.hold(60);
        let cancel = Cancel::default();
        let claim = in_flight.claim(disk(100, 50), &cancel, |_| {});
        tokio::pin!(claim);
        assert!(futures_util::poll!(claim.as_mut()).is_pending());
        cancel.cancel();
        assert!(matches!(claim.await, Claim::Interrupted));
    }
}
