//! Reading an answer out of a model's free-form reply.
//!
//! Multiple choice: the first standalone option letter after an "answer"
//! marker (`Answer: B`, `the answer is (C)`, `**Answer:** D`), else the first
//! standalone option letter anywhere. *Standalone* means not inside a word:
//! the characters on both sides are not letters or digits. Only upper-case
//! letters of the item's options count (A–D for four options), so the article
//! "a" is never read as an answer; a capital "A" opening a sentence is, which
//! is the price of accepting bare letters.
//!
//! GSM8K: the first number after the last `####`, else the last number in the
//! reply. Numbers are compared after normalising: thousands separators and a
//! leading `$` are dropped, a fractional part of zeros is dropped (`18.00` is
//! `18`), trailing zeros of a fraction are dropped (`2.50` is `2.5`).

/// The option letter of the reply, among the first `options` letters.
pub fn option_letter(reply: &str, options: usize) -> Option<char> {
    after_answer_marker(reply, options).or_else(|| first_standalone(reply, options))
}

/// The final number of a GSM8K-style reply, normalised.
pub fn final_number(reply: &str) -> Option<String> {
    if let Some(position) = reply.rfind("####")
        && let Some(number) = numbers(&reply[position + 4..]).next()
    {
        return Some(number);
    }
    numbers(reply).last()
}

/// A number as written (`1,234.50`, `$18`, `-3`) in canonical form, or `None`.
pub fn normalize_number(text: &str) -> Option<String> {
    let text = text.trim().trim_start_matches('$').replace(',', "");
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.as_str()),
    };
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    let valid = |part: &str| part.chars().all(|c| c.is_ascii_digit());
    if whole.is_empty() || !valid(whole) || !valid(fraction) {
        return None;
    }
    let whole = whole.trim_start_matches('0');
    let whole = if whole.is_empty() { "0" } else { whole };
    let fraction = fraction.trim_end_matches('0');
    let magnitude =
        if fraction.is_empty() { whole.to_owned() } else { format!("{whole}.{fraction}") };
    let sign = if negative && magnitude != "0" { "-" } else { "" };
    Some(format!("{sign}{magnitude}"))
}

/// The letter for option `index` (0 → `A`).
pub fn letter(index: usize) -> char {
    char::from(b'A' + u8::try_from(index % 26).unwrap_or(0))
}

fn is_option(c: char, options: usize) -> bool {
    c.is_ascii_uppercase() && ((c as usize) - ('A' as usize)) < options
}

/// Characters that may sit between "answer" and its letter: `is`, colons,
/// emphasis, brackets, quotes and spaces.
fn after_answer_marker(reply: &str, options: usize) -> Option<char> {
    let lower = reply.to_ascii_lowercase();
    for (start, _) in lower.match_indices("answer") {
        let rest = &reply[start + "answer".len()..];
        let rest = rest.trim_start_matches(|c: char| c.is_ascii_alphabetic() && c.is_lowercase());
        let rest = rest.trim_start();
        let rest = rest.strip_prefix("is").unwrap_or(rest);
        let rest = rest.trim_start_matches(|c: char| {
            c.is_whitespace() || matches!(c, ':' | '*' | '(' | '[' | '"' | '\'' | '=' | '-')
        });
        let mut chars = rest.chars();
        if let Some(candidate) = chars.next()
            && is_option(candidate, options)
            && !chars.next().is_some_and(char::is_alphanumeric)
        {
            return Some(candidate);
        }
    }
    None
}

fn first_standalone(reply: &str, options: usize) -> Option<char> {
    let chars: Vec<char> = reply.chars().collect();
    chars.iter().enumerate().find_map(|(index, &c)| {
        let before = index.checked_sub(1).map(|i| chars[i]);
        let after = chars.get(index + 1).copied();
        let alone =
            !before.is_some_and(char::is_alphanumeric) && !after.is_some_and(char::is_alphanumeric);
        (is_option(c, options) && alone).then_some(c)
    })
}

/// Every number in `text`, in order, normalised.
fn numbers(text: &str) -> impl Iterator<Item = String> + '_ {
    let bytes = text.as_bytes();
    let mut position = 0;
    std::iter::from_fn(move || {
        while position < bytes.len() {
            let start = position;
            if !bytes[start].is_ascii_digit() {
                position += 1;
                continue;
            }
            let mut end = start;
            while end < bytes.len()
                && (bytes[end].is_ascii_digit()
                    || (matches!(bytes[end], b',' | b'.')
                        && bytes.get(end + 1).is_some_and(u8::is_ascii_digit)))
            {
                end += 1;
            }
            position = end;
            let negative = start > 0 && bytes[start - 1] == b'-';
            let begin = if negative { start - 1 } else { start };
            return normalize_number(&text[begin..end]);
        }
        None
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn option_letters_follow_the_documented_rules() {
        let cases: &[(&str, usize, Option<char>)] = &[
            ("B", 4, Some('B')),
            ("Answer: C", 4, Some('C')),
            ("The answer is (D).", 4, Some('D')),
            ("**Answer:** B", 4, Some('B')),
            ("I think A is tempting, but the answer is C", 4, Some('C')),
            ("answer: c", 4, None),
            ("(B) because it is larger", 4, Some('B')),
            ("a cat sat on the mat", 4, None),
            ("BAD idea", 4, None),
            ("E", 4, None),
            ("E", 5, Some('E')),
            ("Answers vary; pick B.", 4, Some('B')),
            ("Answer: E, no wait, B", 4, Some('B')),
            ("", 4, None),
            ("The correct option: Answer:A", 4, Some('A')),
        ];
        for (reply, options, expected) in cases {
            assert_eq!(option_letter(reply, *options), *expected, "{reply:?}");
        }
    }

    #[test]
    fn final_numbers_follow_the_documented_rules() {
        let cases: &[(&str, Option<&str>)] = &[
            ("So she has 5 + 3 = 8 apples.\n#### 8", Some("8")),
            ("#### 1,234", Some("1234")),
            ("It costs $18.00 in total.", Some("18")),
            ("First 3, then 4, so 12", Some("12")),
            ("#### 7\nwait, #### 9 is right", Some("9")),
            ("#### -4", Some("-4")),
            ("The result is 2.50.", Some("2.5")),
            ("#### none", None),
            ("no numbers here", None),
            ("10 apples\n####", Some("10")),
        ];
        for (reply, expected) in cases {
            assert_eq!(final_number(reply).as_deref(), *expected, "{reply:?}");
        }
    }

    #[test]
    fn numbers_normalise_to_one_form() {
        assert_eq!(normalize_number("1,000").as_deref(), Some("1000"));
        assert_eq!(normalize_number(" 007 ").as_deref(), Some("7"));
        assert_eq!(normalize_number("-0.0").as_deref(), Some("0"));
        assert_eq!(normalize_number("3.140").as_deref(), Some("3.14"));
        assert_eq!(normalize_number("$5").as_deref(), Some("5"));
        assert_eq!(normalize_number("5x"), None);
        assert_eq!(normalize_number(""), None);
    }

    #[test]
    fn letters_count_from_a() {
        assert_eq!((letter(0), letter(3), letter(12)), ('A', 'D', 'M'));
    }
}
