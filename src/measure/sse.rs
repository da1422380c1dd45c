//! An incremental Server-Sent-Events parser for streamed completions.
//!
//! The parser is fed byte chunks exactly as the network delivers them: a line
//! may be split anywhere, even between the `\r` and `\n` of a line ending.
//! Lines end with `\n`, `\r\n` or `\r`; lines starting with `:` are comments
//! (keep-alives), counted and otherwise ignored; `data:` lines of one event are
//! joined with `\n`; every other field (`event:`, `id:`, `retry:`) is ignored;
//! a blank line ends the event. An event whose data is `[DONE]` is reported as
//! [`SseEvent::Done`].
//!
//! The parser owns two buffers that keep their capacity across events, so a
//! long stream costs no allocation once they have grown to the largest event.
//! It neither parses JSON nor looks at timestamps; that is the caller's job.

/// Default cap on one event (its data plus any unfinished line), in bytes.
pub const DEFAULT_MAX_EVENT_BYTES: usize = 4 * 1024 * 1024;

/// One dispatched event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SseEvent<'a> {
    /// The joined `data:` lines of an event.
    Data(&'a [u8]),
    /// The `data: [DONE]` sentinel that ends an OpenAI-style stream.
    Done,
}

/// A stream the parser refuses to follow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SseError {
    /// An event grew past the cap without a blank line ending it.
    #[error("an event grew past {limit} bytes without ending")]
    EventTooLong {
        /// The cap in bytes.
        limit: usize,
    },
}

/// Incremental SSE parser; see the module documentation for the rules.
#[derive(Debug)]
pub struct SseParser {
    /// The unfinished line carried over from the previous chunk.
    line: Vec<u8>,
    /// The data of the event being assembled.
    data: Vec<u8>,
    /// Whether the current event has had a `data` field (possibly empty).
    has_data: bool,
    /// The previous chunk ended with `\r`; a leading `\n` belongs to that line end.
    skip_lf: bool,
    comments: u64,
    limit: usize,
}

impl Default for SseParser {
    fn default() -> Self {
        Self::with_limit(DEFAULT_MAX_EVENT_BYTES)
    }
}

impl SseParser {
    /// A parser with the default event size cap.
    pub fn new() -> Self {
        Self::default()
    }

    /// A parser refusing events larger than `limit` bytes.
    pub fn with_limit(limit: usize) -> Self {
        Self {
            line: Vec::new(),
            data: Vec::new(),
            has_data: false,
            skip_lf: false,
            comments: 0,
            limit,
        }
    }

    /// How many comment (keep-alive) lines have been seen.
    pub fn comments(&self) -> u64 {
        self.comments
    }

    /// Whether bytes of an unfinished event are pending (meaningful at end of stream).
    pub fn has_partial_event(&self) -> bool {
        self.has_data || !self.line.is_empty()
    }

    /// Consumes `chunk`, calling `on_event` for every event it completes.
    pub fn feed(
        &mut self,
        mut chunk: &[u8],
        mut on_event: impl FnMut(SseEvent<'_>),
    ) -> Result<(), SseError> {
        if self.skip_lf && !chunk.is_empty() {
            self.skip_lf = false;
            if chunk[0] == b'\n' {
                chunk = &chunk[1..];
            }
        }

        while let Some(end) = chunk.iter().position(|&b| b == b'\n' || b == b'\r') {
            let next = self.after_line_end(chunk, end);
            if self.line.is_empty() {
                self.on_line(&chunk[..end], &mut on_event)?;
            } else {
                self.line.extend_from_slice(&chunk[..end]);
                let line = std::mem::take(&mut self.line);
                let handled = self.on_line(&line, &mut on_event);
                self.line = line;
                self.line.clear();
                handled?;
            }
            chunk = &chunk[next..];
        }

        self.line.extend_from_slice(chunk);
        self.check_size()
    }

    /// Where the next line starts after the terminator at `end`, noting a
    /// trailing `\r` whose `\n` may arrive in the next chunk.
    fn after_line_end(&mut self, chunk: &[u8], end: usize) -> usize {
        if chunk[end] == b'\n' {
            return end + 1;
        }
        match chunk.get(end + 1) {
            Some(b'\n') => end + 2,
            Some(_) => end + 1,
            None => {
                self.skip_lf = true;
                end + 1
            }
        }
    }

    /// Applies one complete line (without its terminator).
    fn on_line(
        &mut self,
        line: &[u8],
        on_event: &mut impl FnMut(SseEvent<'_>),
    ) -> Result<(), SseError> {
        if line.is_empty() {
            self.dispatch(on_event);
            return Ok(());
        }
        if line[0] == b':' {
            self.comments += 1;
            return Ok(());
        }

        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &line[line.len()..]),
        };
        if field == b"data" {
            if self.has_data {
                self.data.push(b'\n');
            }
            self.data.extend_from_slice(value);
            self.has_data = true;
            return self.check_size();
        }
        Ok(())
    }

    /// Ends the current event, reporting it when it had data.
    fn dispatch(&mut self, on_event: &mut impl FnMut(SseEvent<'_>)) {
        if !self.has_data {
            return;
        }
        if self.data.trim_ascii() == b"[DONE]" {
            on_event(SseEvent::Done);
        } else {
            on_event(SseEvent::Data(&self.data));
        }
        self.data.clear();
        self.has_data = false;
    }

    fn check_size(&self) -> Result<(), SseError> {
        if self.data.len() + self.line.len() > self.limit {
            return Err(SseError::EventTooLong { limit: self.limit });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Owned copy of an event, for comparing whole runs.
    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Owned {
        Data(String),
        Done,
    }

    fn feed_all(parser: &mut SseParser, chunks: &[&[u8]]) -> Vec<Owned> {
        let mut events = Vec::new();
        for chunk in chunks {
            parser
                .feed(chunk, |event| {
                    events.push(match event {
                        SseEvent::Data(data) => Owned::Data(String::from_utf8_lossy(data).into()),
                        SseEvent::Done => Owned::Done,
                    })
                })
                .expect("within the size cap");
        }
        events
    }

    fn parse(chunks: &[&[u8]]) -> Vec<Owned> {
        feed_all(&mut SseParser::new(), chunks)
    }

    fn data(text: &str) -> Owned {
        Owned::Data(text.to_owned())
    }

    #[test]
    fn events_end_at_blank_lines_and_done_is_recognised() {
        let events = parse(&[b"data: {\"a\":1}\n\ndata: {\"b\":2}\n\ndata: [DONE]\n\n"]);
        assert_eq!(events, [data("{\"a\":1}"), data("{\"b\":2}"), Owned::Done]);
    }

    #[test]
    fn all_three_line_endings_are_accepted() {
        assert_eq!(parse(&[b"data: x\r\n\r\n"]), [data("x")]);
        assert_eq!(parse(&[b"data: x\r\r"]), [data("x")]);
        assert_eq!(parse(&[b"data: x\n\r\ndata: y\r\n\n"]), [data("x"), data("y")]);
    }

    #[test]
    fn crlf_split_between_chunks_is_one_line_end() {
        let events = parse(&[b"data: x\r", b"\n", b"\r", b"\ndata: y\r", b"\n\n"]);
        assert_eq!(events, [data("x"), data("y")]);
    }

    #[test]
    fn data_line_split_across_chunks_is_joined() {
        let events = parse(&[b"da", b"ta: {\"con", b"tent\":\"hi\"}", b"\n", b"\n"]);
        assert_eq!(events, [data("{\"content\":\"hi\"}")]);
    }

    #[test]
    fn comments_are_counted_and_produce_no_event() {
        let mut parser = SseParser::new();
        let events = feed_all(&mut parser, &[b": keep-alive\n\n:ping\ndata: a\n\n: x\n\n"]);
        assert_eq!(events, [data("a")]);
        assert_eq!(parser.comments(), 3);
    }

    #[test]
    fn multi_line_data_is_joined_with_newlines() {
        assert_eq!(parse(&[b"data: one\ndata:two\ndata\n\n"]), [data("one\ntwo\n")]);
    }

    #[test]
    fn other_fields_are_ignored() {
        let events = parse(&[b"event: message\nid: 7\nretry: 10\ndata: a\n\nevent: x\n\n"]);
        assert_eq!(events, [data("a")]);
    }

    #[test]
    fn empty_data_field_still_dispatches() {
        assert_eq!(parse(&[b"data:\n\n"]), [data("")]);
    }

    #[test]
    fn unfinished_event_is_reported_pending_and_not_dispatched() {
        let mut parser = SseParser::new();
        assert!(feed_all(&mut parser, &[b"data: {\"a\":"]).is_empty());
        assert!(parser.has_partial_event());

        let mut parser = SseParser::new();
        assert_eq!(feed_all(&mut parser, &[b"data: a\n\n"]), [data("a")]);
        assert!(!parser.has_partial_event());
    }

    #[test]
    fn oversized_event_is_refused() {
        let mut parser = SseParser::with_limit(8);
        let result = parser.feed(b"data: 0123456789", |_| {});
        assert_eq!(result, Err(SseError::EventTooLong { limit: 8 }));
    }

    #[test]
    fn buffers_keep_their_capacity_across_events() {
        let mut parser = SseParser::new();
        let event = b"data: {\"choices\":[{\"delta\":{\"content\":\"x\"}}]}\n\n";
        parser.feed(&event[..10], |_| {}).expect("within the cap");
        parser.feed(&event[10..], |_| {}).expect("within the cap");
        let (line, data) = (parser.line.capacity(), parser.data.capacity());
        for _ in 0..100 {
            parser.feed(&event[..10], |_| {}).expect("within the cap");
            parser.feed(&event[10..], |_| {}).expect("within the cap");
        }
        assert_eq!((parser.line.capacity(), parser.data.capacity()), (line, data));
    }

    proptest! {
        #[test]
        fn any_split_of_the_stream_gives_the_same_events(
            cuts in proptest::collection::vec(0usize..200, 0..12),
            crlf in any::<bool>(),
        ) {
            let text = "data: {\"a\":1}\n\n: keep-alive\n\ndata: one\ndata: two\n\n\
                        event: x\nid: 3\ndata: {\"b\":\"\\n\"}\n\ndata: [DONE]\n\n";
            let text = if crlf { text.replace('\n', "\r\n") } else { text.to_owned() };
            let bytes = text.as_bytes();

            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (bytes.len() + 1)).collect();
            cuts.sort_unstable();
            let mut pieces = Vec::new();
            let mut start = 0;
            for cut in cuts {
                pieces.push(&bytes[start..cut]);
                start = cut;
            }
            pieces.push(&bytes[start..]);

            prop_assert_eq!(parse(&pieces), parse(&[bytes]));
            prop_assert_eq!(parse(&[bytes]).len(), 4);
        }
    }
}
