//! The live view of a parallel campaign on a terminal: a block of lines at
//! the bottom of the screen, one for the campaign (runs done, elapsed, ETA)
//! and one per run in flight, redrawn in place. Lines about finished runs,
//! warnings and notes are printed above the block, so the scrollback keeps
//! them.
//!
//! Every run's [`super::progress::Progress`] and the coordinator's own hold
//! a [`Slot`] of one shared [`Board`]; whoever changes its line redraws the
//! whole block, so the lines never interleave.
//!
//! Decisions:
//! - The block is redrawn by moving the cursor to its first line and
//!   clearing to the end of the screen (`ESC [ n A`, `ESC [ J`); the cursor
//!   rests at the end of the block's last line, so a line printed by
//!   anything else would land on it — everything the campaign prints goes
//!   through the board while it is shown.
//! - Lines are cut to the terminal's width less one column, so none wraps
//!   and the cursor arithmetic stays exact.
//! - Slots are ordered by number: the coordinator's line (slot 0) first,
//!   then runs in the order they started.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Arc, Mutex, PoisonError};

/// The block of live lines and where it is drawn.
pub struct Board {
    out: Box<dyn Write + Send>,
    lines: BTreeMap<u64, String>,
    /// Lines of the block on the screen now (the cursor ends the last one).
    drawn: usize,
    next_slot: u64,
    width: fn() -> usize,
}

/// One line of a shared board.
pub struct Slot {
    board: Arc<Mutex<Board>>,
    id: u64,
}

impl Board {
    /// A board drawing on `out`; its first slot (the coordinator's line) is
    /// returned with it.
    pub fn open(out: Box<dyn Write + Send>, width: fn() -> usize) -> Slot {
        let board = Board { out, lines: BTreeMap::new(), drawn: 0, next_slot: 1, width };
        Slot { board: Arc::new(Mutex::new(board)), id: 0 }
    }

    fn clear(&mut self) {
        if self.drawn == 0 {
            return;
        }
        let _ = write!(self.out, "\r");
        if self.drawn > 1 {
            let _ = write!(self.out, "\x1b[{}A", self.drawn - 1);
        }
        let _ = write!(self.out, "\x1b[J");
        self.drawn = 0;
    }

    fn draw(&mut self) {
        self.clear();
        let width = (self.width)().saturating_sub(1).max(1);
        let lines: Vec<String> = self.lines.values().map(|line| one_line(line, width)).collect();
        let _ = write!(self.out, "{}", lines.join("\n"));
        let _ = self.out.flush();
        self.drawn = lines.len();
    }
}

/// `text` on one line of at most `width` characters (a line break inside
/// it would move the cursor where the board does not expect it).
fn one_line(text: &str, width: usize) -> String {
    text.chars().map(|c| if c.is_control() { ' ' } else { c }).take(width).collect()
}

impl Slot {
    /// A new line on the same board, below the existing ones.
    pub fn another(&self) -> Slot {
        let mut board = self.lock();
        let id = board.next_slot;
        board.next_slot += 1;
        Slot { board: Arc::clone(&self.board), id }
    }

    /// Sets this slot's line and redraws the block.
    pub fn set(&self, text: &str) {
        let mut board = self.lock();
        board.lines.insert(self.id, text.to_owned());
        board.draw();
    }

    /// Prints `text` above the block, which is redrawn below it with this
    /// slot's line set to `own`.
    pub fn print_above(&self, text: &str, own: &str) {
        let mut board = self.lock();
        board.lines.insert(self.id, own.to_owned());
        board.clear();
        let _ = writeln!(board.out, "{text}");
        board.draw();
    }

    /// Whether this is a run's line (not the campaign's, the first).
    pub fn is_run(&self) -> bool {
        self.id != 0
    }

    /// Removes this slot's line and prints `text` above the block.
    pub fn leave(&self, text: &str) {
        let mut board = self.lock();
        board.lines.remove(&self.id);
        board.clear();
        let _ = writeln!(board.out, "{text}");
        board.draw();
    }

    /// Removes this slot's line; when no line is left the block is gone
    /// and the cursor is at the start of an empty line.
    pub fn remove(&self) {
        let mut board = self.lock();
        if board.lines.remove(&self.id).is_some() {
            board.draw();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Board> {
        self.board.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.remove();
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A writer tests read back.
    #[derive(Clone, Default)]
    pub(crate) struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("sink").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Sink {
        /// Everything written so far.
        pub(crate) fn text(&self) -> String {
            String::from_utf8(self.0.lock().expect("sink").clone()).expect("utf-8")
        }

        /// Everything written since the last call.
        fn take(&self) -> String {
            let bytes = std::mem::take(&mut *self.0.lock().expect("sink"));
            String::from_utf8(bytes).expect("utf-8")
        }
    }

    fn narrow() -> usize {
        12
    }

    #[test]
    fn one_line_per_slot_redrawn_in_place() {
        let sink = Sink::default();
        let campaign = Board::open(Box::new(sink.clone()), narrow);
        campaign.set("done 0/2");
        assert_eq!(sink.take(), "done 0/2");
        let first = campaign.another();
        first.set("a: loading");
        // One line drawn: back to its start, clear, draw both.
        assert_eq!(sink.take(), "\r\x1b[Jdone 0/2\na: loading");
        let second = campaign.another();
        second.set("b: starting the engine");
        // Two lines drawn: up one, clear, draw three (cut to 11 columns).
        assert_eq!(sink.take(), "\r\x1b[1A\x1b[Jdone 0/2\na: loading\nb: starting");
        first.set("a: latency");
        assert_eq!(sink.take(), "\r\x1b[2A\x1b[Jdone 0/2\na: latency\nb: starting");
    }

    #[test]
    fn printed_lines_go_above_and_removed_slots_disappear() {
        let sink = Sink::default();
        let campaign = Board::open(Box::new(sink.clone()), narrow);
        campaign.set("done 0/1");
        let run = campaign.another();
        run.set("a: loading");
        sink.take();
        run.print_above("a: success", "a: cleaning up");
        assert_eq!(sink.take(), "\r\x1b[1A\x1b[Ja: success\ndone 0/1\na: cleaning");
        run.leave("a: done");
        assert_eq!(sink.take(), "\r\x1b[1A\x1b[Ja: done\ndone 0/1");
        drop(run);
        assert_eq!(sink.take(), "");
        campaign.remove();
        assert_eq!(sink.take(), "\r\x1b[J");
        // Nothing left: printing adds a plain line.
        let other = campaign.another();
        other.print_above("bye", "gone");
        other.remove();
        assert_eq!(sink.take(), "bye\ngone\r\x1b[J");
    }
}
