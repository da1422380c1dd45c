//! An incremental newline-delimited JSON (NDJSON) framer, for engines whose
//! native API streams one JSON object per line (Ollama's `/api/chat`).
//!
//! Like [`super::sse`], the framer is fed byte chunks exactly as the network
//! delivers them: a line may be split anywhere. Lines end with `\n` (a `\r`
//! before it is dropped); blank lines are skipped. The unfinished line is kept
//! in one buffer that keeps its capacity, so a long stream costs no
//! allocation once the buffer has grown to the longest line. The framer does
//! not parse JSON.

use super::sse::SseError;

/// Incremental line framer; see the module documentation for the rules.
#[derive(Debug)]
pub struct LineParser {
    /// The unfinished line carried over from the previous chunk.
    line: Vec<u8>,
    limit: usize,
}

impl Default for LineParser {
    fn default() -> Self {
        Self::with_limit(super::sse::DEFAULT_MAX_EVENT_BYTES)
    }
}

impl LineParser {
    /// A framer refusing lines longer than `limit` bytes.
    pub fn with_limit(limit: usize) -> Self {
        Self { line: Vec::new(), limit }
    }

    /// Whether an unfinished line is pending (meaningful at end of stream).
    pub fn has_partial_line(&self) -> bool {
        !self.line.trim_ascii().is_empty()
    }

    /// Consumes `chunk`, calling `on_line` for every non-blank line it completes.
    pub fn feed(
        &mut self,
        mut chunk: &[u8],
        mut on_line: impl FnMut(&[u8]),
    ) -> Result<(), SseError> {
        while let Some(end) = chunk.iter().position(|&byte| byte == b'\n') {
            if self.line.is_empty() {
                emit(&chunk[..end], &mut on_line);
            } else {
                self.line.extend_from_slice(&chunk[..end]);
                emit(&self.line, &mut on_line);
                self.line.clear();
            }
            chunk = &chunk[end + 1..];
        }
        self.line.extend_from_slice(chunk);
        if self.line.len() > self.limit {
            return Err(SseError::EventTooLong { limit: self.limit });
        }
        Ok(())
    }
}

fn emit(line: &[u8], on_line: &mut impl FnMut(&[u8])) {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if !line.trim_ascii().is_empty() {
        on_line(line);
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn lines(parser: &mut LineParser, chunks: &[&[u8]]) -> Vec<String> {
        let mut out = Vec::new();
        for chunk in chunks {
            parser
                .feed(chunk, |line| out.push(String::from_utf8_lossy(line).into_owned()))
                .expect("within the cap");
        }
        out
    }

    #[test]
    fn lines_split_anywhere_are_joined_and_blank_lines_skipped() {
        let mut parser = LineParser::default();
        let out = lines(&mut parser, &[b"{\"a\"", b":1}\r\n\n  \n{\"b\":2}\n{\"c\""]);
        assert_eq!(out, ["{\"a\":1}", "{\"b\":2}"]);
        assert!(parser.has_partial_line());
        assert_eq!(lines(&mut parser, &[b":3}\n"]), ["{\"c\":3}"]);
        assert!(!parser.has_partial_line());
    }

    #[test]
    fn an_overlong_line_is_refused() {
        let mut parser = LineParser::with_limit(4);
        assert!(parser.feed(b"0123456789", |_| {}).is_err());
    }

    proptest! {
        #[test]
        fn any_split_gives_the_same_lines(cuts in proptest::collection::vec(0usize..60, 0..8)) {
            let text = b"{\"a\":1}\n{\"message\":{\"content\":\"x\"}}\r\n\n{\"done\":true}\n";
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (text.len() + 1)).collect();
            cuts.sort_unstable();
            let mut pieces = Vec::new();
            let mut start = 0;
            for cut in cuts {
                pieces.push(&text[start..cut]);
                start = cut;
            }
            pieces.push(&text[start..]);
            let whole = lines(&mut LineParser::default(), &[text]);
            prop_assert_eq!(lines(&mut LineParser::default(), &pieces), whole.clone());
            prop_assert_eq!(whole.len(), 3);
        }
    }
}
