//! Shell globs for `quant_filter` patterns.
//!
//! Patterns follow Python's `fnmatch`, which campaign files were first written against: `*`
//! matches any run of characters, `?` one character, `[seq]` one character of a set and
//! `[!seq]` one character outside it. There are no escapes and no braces, and a `[` without a
//! closing `]` is a literal. Unlike `fnmatch` on Linux, matching ignores case: pattern and
//! text are both lower-cased first, so `iq1_*` and `IQ1_*` select the same labels. This module
//! compiles and matches patterns; which labels a filter keeps is decided by the config.

use regex::Regex;

use crate::plan::quant::QuantLabel;

/// A shell glob (fnmatch semantics: `*`, `?`, `[seq]`, `[!seq]`, no escapes, no braces, an
/// unclosed `[` is a literal) matched without regard to case.
#[derive(Debug, Clone)]
pub struct QuantGlob {
    pattern: String,
    regex: Regex,
}

/// Why a glob pattern was rejected.
///
/// Only patterns that cannot be what the user meant are errors. `fnmatch` silently turns a
/// reversed range such as `[z-a]` into a set that matches nothing, which would quietly drop
/// or keep every variant; kitt reports it instead.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum GlobError {
    /// The pattern is the empty string.
    #[error("the glob pattern is empty; write a quant label or a glob such as `IQ1_*`")]
    Empty,
    /// The pattern holds nothing but whitespace.
    #[error("glob pattern `{pattern}` holds only whitespace")]
    Blank {
        /// The pattern as written.
        pattern: String,
    },
    /// A character range runs backwards, like `[z-a]`.
    #[error("glob pattern `{pattern}` has a reversed character range `{range}`; write `{fixed}`")]
    ReversedRange {
        /// The pattern as written.
        pattern: String,
        /// The offending range, as lower-cased for matching.
        range: String,
        /// The same range in the right order.
        fixed: String,
    },
    /// The pattern compiles to a matcher above the regex size limit.
    #[error("glob pattern `{pattern}` is too long to match")]
    TooLong {
        /// The pattern as written.
        pattern: String,
    },
}

impl QuantGlob {
    /// Compiles a pattern; see [`GlobError`] for the inputs that are rejected.
    pub fn new(pattern: &str) -> Result<Self, GlobError> {
        if pattern.is_empty() {
            return Err(GlobError::Empty);
        }
        if pattern.trim().is_empty() {
            return Err(GlobError::Blank { pattern: pattern.to_owned() });
        }

        let lowered: Vec<char> = pattern.to_lowercase().chars().collect();
        let source = translate(&lowered).map_err(|(low, high)| GlobError::ReversedRange {
            pattern: pattern.to_owned(),
            range: format!("{low}-{high}"),
            fixed: format!("{high}-{low}"),
        })?;

        let regex =
            Regex::new(&source).map_err(|_| GlobError::TooLong { pattern: pattern.to_owned() })?;
        Ok(QuantGlob { pattern: pattern.to_owned(), regex })
    }

    /// The pattern as written.
    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    /// True when the glob matches the label, or the label's base without a vendor prefix
    /// (`IQ1_*` matches `UD-IQ1_S`).
    pub fn matches(&self, label: &QuantLabel) -> bool {
        self.matches_text(&label.label) || self.matches_text(&label.base)
    }

    /// Plain text match (case-insensitive) used by the above.
    pub fn matches_text(&self, text: &str) -> bool {
        self.regex.is_match(&text.to_lowercase())
    }
}

/// One member of a `[...]` set: a single character or an inclusive range.
#[derive(Debug, Clone, Copy)]
enum Member {
    Char(char),
    Range(char, char),
}

/// Translates a lower-cased glob into an anchored regex; Err carries a reversed range.
fn translate(pattern: &[char]) -> Result<String, (char, char)> {
    let mut source = String::from(r"\A(?s:");
    let mut at = 0;

    while let Some(&current) = pattern.get(at) {
        at += 1;
        match current {
            '*' => {
                // Runs of stars match the same as one; collapsing them keeps the regex small.
                while pattern.get(at) == Some(&'*') {
                    at += 1;
                }
                source.push_str(".*");
            }
            '?' => source.push('.'),
            '[' => match set_end(pattern, at) {
                Some(end) => {
                    push_set(&mut source, &pattern[at..end])?;
                    at = end + 1;
                }
                None => source.push_str(r"\["),
            },
            other => source.push_str(&regex::escape(other.encode_utf8(&mut [0; 4]))),
        }
    }

    source.push_str(r")\z");
    Ok(source)
}

/// Index of the `]` closing a set whose body starts at `start`; None leaves `[` a literal.
///
/// As in `fnmatch`, a `]` first in the body (after an optional `!`) is a member, not the end.
fn set_end(pattern: &[char], start: usize) -> Option<usize> {
    let mut at = start;
    if pattern.get(at) == Some(&'!') {
        at += 1;
    }
    if pattern.get(at) == Some(&']') {
        at += 1;
    }
    (at..pattern.len()).find(|&index| pattern[index] == ']')
}

/// Appends the regex class for a set body (the text between `[` and `]`).
fn push_set(source: &mut String, body: &[char]) -> Result<(), (char, char)> {
    let negated = body.first() == Some(&'!');
    let members = set_members(body, negated);
    let reversed = members.iter().find_map(|member| match *member {
        Member::Range(low, high) if low > high => Some((low, high)),
        _ => None,
    });
    if let Some(range) = reversed {
        return Err(range);
    }

    source.push_str(if negated { "[^" } else { "[" });
    for member in members {
        match member {
            Member::Char(single) => push_class_char(source, single),
            Member::Range(low, high) => {
                push_class_char(source, low);
                source.push('-');
                push_class_char(source, high);
            }
        }
    }
    source.push(']');
    Ok(())
}

/// Splits a set body into members the way `fnmatch` does.
///
/// A `-` between two characters makes a range from the one before it to the one after it,
/// unless the one before it already ended a range. Any other `-` (first in the set, last in
/// it, or right after a range) is a literal.
fn set_members(body: &[char], negated: bool) -> Vec<Member> {
    let first = usize::from(negated);
    let mut members = Vec::new();
    let mut at = first;

    while at < body.len() {
        let is_range = at + 2 < body.len() && body[at + 1] == '-';
        if is_range {
            members.push(Member::Range(body[at], body[at + 2]));
            at += 3;
        } else {
            members.push(Member::Char(body[at]));
            at += 1;
        }
    }
    members
}

/// Appends one character inside a regex class, escaped so that no character is special.
fn push_class_char(source: &mut String, single: char) {
    source.push_str(&format!(r"\x{{{:X}}}", u32::from(single)));
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::process::{Command, Stdio};

    use proptest::prelude::*;

    use super::*;
    use crate::plan::quant::{quant_from_dir_name, quant_from_file_name};

    fn glob(pattern: &str) -> QuantGlob {
        QuantGlob::new(pattern).expect("test patterns are valid")
    }

    #[test]
    fn wildcards_match_like_fnmatch() {
        let cases = [
            ("Q4_*", "Q4_K_M", true),
            ("Q4_*", "Q5_K_M", false),
            ("*_K_?", "Q4_K_M", true),
            ("*_K_?", "Q4_K_XL", false),
            ("Q[45]_K_M", "Q5_K_M", true),
            ("Q[!45]_K_M", "Q5_K_M", false),
            ("Q[!45]_K_M", "Q6_K_M", true),
            ("Q[2-4]_K", "Q3_K", true),
            ("Q[2-4]_K", "Q6_K", false),
            ("*", "", true),
            ("?", "", false),
            ("Q4_0_[48]_[48]", "Q4_0_4_8", true),
        ];
        for (pattern, text, expected) in cases {
            assert_eq!(glob(pattern).matches_text(text), expected, "{pattern} vs {text}");
        }
    }

    #[test]
    fn quant_filter_ignores_case() {
        // The Python tool used POSIX fnmatch, so `f32` and `F32` had to be listed twice.
        assert!(glob("f32").matches_text("F32"));
        assert!(glob("F32").matches_text("f32"));
        assert!(glob("iq1_*").matches_text("IQ1_S"));
        assert!(glob("[a-z]16").matches_text("F16"));
    }

    #[test]
    fn pattern_matches_base_without_vendor_prefix() {
        let label = quant_from_file_name("DeepSeek-R1-UD-IQ1_S-00001-of-00003.gguf");
        assert!(glob("IQ1_*").matches(&label));
        assert!(glob("UD-*").matches(&label));
        assert!(!glob("Q4_*").matches(&label));
        let plain = quant_from_dir_name("Q4_K_M").expect("a quant folder");
        assert!(!glob("UD-*").matches(&plain));
    }

    #[test]
    fn brackets_follow_fnmatch_edge_cases() {
        assert!(glob("[").matches_text("["));
        assert!(glob("Q4[").matches_text("q4["));
        assert!(glob("[*").matches_text("[anything"));
        assert!(glob("[]]").matches_text("]"));
        assert!(glob("[]").matches_text("[]"));
        assert!(glob("[!]]").matches_text("a"));
        assert!(!glob("[!]]").matches_text("]"));
        assert!(glob("[a-]").matches_text("-"));
        assert!(glob("[-a]").matches_text("-"));
        assert!(glob("[a-c-e]").matches_text("-"));
        assert!(!glob("[a-c-e]").matches_text("d"));
        assert!(glob("[^x]").matches_text("^"));
        assert!(glob("a.b+c(d)").matches_text("A.B+C(D)"));
        assert!(!glob("a.b").matches_text("axb"));
        assert!(glob("\\").matches_text("\\"));
    }

    #[test]
    fn bad_patterns_are_errors_naming_the_problem() {
        assert_eq!(QuantGlob::new("").unwrap_err(), GlobError::Empty);
        assert_eq!(QuantGlob::new("  ").unwrap_err(), GlobError::Blank { pattern: "  ".into() });
        let reversed = QuantGlob::new("Q[8-2]_K").unwrap_err();
        assert_eq!(
            reversed.to_string(),
            "glob pattern `Q[8-2]_K` has a reversed character range `8-2`; write `2-8`"
        );
    }

    #[test]
    fn pattern_is_kept_as_written() {
        assert_eq!(glob("IQ1_*").pattern(), "IQ1_*");
        assert_eq!(glob(" Q4_K_M").pattern(), " Q4_K_M");
        assert!(!glob(" Q4_K_M").matches_text("Q4_K_M"));
    }

    proptest! {
        #[test]
        fn literal_pattern_matches_itself_in_any_case(
            text in "[A-Za-z0-9_.+-]{1,16}",
            flips in proptest::collection::vec(any::<bool>(), 16),
        ) {
            let mixed: String = text
                .chars()
                .zip(flips.iter().cycle())
                .map(|(c, &up)| if up { c.to_ascii_uppercase() } else { c.to_ascii_lowercase() })
                .collect();
            let compiled = glob(&text);
            prop_assert!(compiled.matches_text(&mixed));
            prop_assert!(compiled.matches_text(&text.to_uppercase()));
            let longer = format!("{text}x");
            prop_assert!(!compiled.matches_text(&longer));
        }

        #[test]
        fn star_matches_everything(text in ".*") {
            prop_assert!(glob("*").matches_text(&text));
        }

        #[test]
        fn match_ignores_upper_casing_the_text(
            pattern in "[a-zA-Z0-9_*?!\\[\\]-]{1,10}",
            text in "[a-zA-Z0-9_!\\[\\]-]{0,10}",
        ) {
            let Ok(compiled) = QuantGlob::new(&pattern) else {
                return Ok(());
            };
            let upper = text.to_uppercase();
            prop_assert_eq!(compiled.matches_text(&text), compiled.matches_text(&upper));
        }
    }

    /// A small deterministic generator, so the differential cases are the same on every run.
    struct Lcg(u64);

    impl Lcg {
        fn below(&mut self, bound: usize) -> usize {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((self.0 >> 33) as usize) % bound
        }

        fn string(&mut self, alphabet: &[char], max_len: usize) -> String {
            let len = self.below(max_len + 1);
            (0..len).map(|_| alphabet[self.below(alphabet.len())]).collect()
        }
    }

    fn differential_cases() -> Vec<(String, String)> {
        let pattern_chars: Vec<char> = "qQkK_04-*?[]!aÉé\\^&|.".chars().collect();
        let text_chars: Vec<char> = "qQkK_04-[]!aÉé\\^&|.".chars().collect();
        let mut lcg = Lcg(0x6b69_7474);
        let mut cases = Vec::new();
        while cases.len() < 600 {
            let pattern = lcg.string(&pattern_chars, 8);
            if pattern.trim().is_empty() {
                continue;
            }
            // Half the texts are the pattern with its wildcards filled in, so matches are common.
            let text = if lcg.below(2) == 0 {
                pattern.replace(['*', '?'], "q")
            } else {
                lcg.string(&text_chars, 8)
            };
            cases.push((pattern, text));
        }
        cases
    }

    fn python_fnmatch(cases: &[(String, String)]) -> Option<Vec<bool>> {
        let script = "import fnmatch, json, sys\n\
            cases = json.load(sys.stdin)\n\
            print(json.dumps([fnmatch.fnmatchcase(t.lower(), p.lower()) for p, t in cases]))";
        let mut child = Command::new("python3")
            .args(["-c", script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .ok()?;
        let input = serde_json::to_vec(cases).expect("cases serialise");
        child.stdin.take().expect("stdin is piped").write_all(&input).expect("python reads");
        let output = child.wait_with_output().expect("python finishes");
        assert!(output.status.success(), "python3 failed: {output:?}");
        Some(serde_json::from_slice(&output.stdout).expect("python prints a JSON list"))
    }

    #[test]
    fn agrees_with_python_fnmatch_on_lowercased_input() {
        let cases = differential_cases();
        let Some(expected) = python_fnmatch(&cases) else {
            println!("notice: python3 not found; skipping the fnmatch differential test");
            return;
        };

        let mut compared = 0;
        for ((pattern, text), python) in cases.iter().zip(expected) {
            match QuantGlob::new(pattern) {
                Ok(compiled) => {
                    assert_eq!(compiled.matches_text(text), python, "{pattern:?} vs {text:?}");
                    compared += 1;
                }
                Err(error) => {
                    assert!(
                        matches!(error, GlobError::ReversedRange { .. }),
                        "{pattern:?}: {error}"
                    );
                }
            }
        }
        assert!(compared >= 400, "only {compared} cases compared");
    }
}
