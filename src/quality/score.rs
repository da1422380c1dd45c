//! What each item asks, the prompt it becomes, and how replies are scored.
//!
//! Prompts are zero-shot and ask for an answer kitt can read back:
//! multiple-choice items list their options as `A.`, `B.`… and ask for
//! `Answer: <letter>`; GSM8K asks for step-by-step working ending in
//! `#### <number>`. Accuracy is correct items over all items (an item with
//! no readable answer, or whose request failed, counts as wrong), and its
//! standard error is that of a binomial proportion, `sqrt(p (1 − p) / n)`.

use std::collections::BTreeMap;

use super::extract;
use crate::results::model::QualityItem;

/// Longest reply kept with an item, in characters.
pub const RESPONSE_CHARS: usize = 2000;

/// One dataset item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Question {
    /// A question with lettered options (MMLU, TruthfulQA).
    Choice {
        /// The question.
        question: String,
        /// The MMLU subject, when known.
        subject: Option<String>,
        /// The options, in the order shown.
        choices: Vec<String>,
        /// Index of the right option.
        answer: usize,
    },
    /// A context to continue with one of several endings (HellaSwag).
    Continuation {
        /// The context.
        context: String,
        /// The endings, in the order shown.
        endings: Vec<String>,
        /// Index of the right ending.
        answer: usize,
    },
    /// A word problem with a numeric answer (GSM8K).
    Arithmetic {
        /// The problem.
        question: String,
        /// The answer, normalised (see [`extract::normalize_number`]).
        answer: String,
    },
}

impl Question {
    /// The question or context text.
    pub fn text(&self) -> &str {
        match self {
            Question::Choice { question, .. } | Question::Arithmetic { question, .. } => question,
            Question::Continuation { context, .. } => context,
        }
    }

    /// The prompt sent for this item.
    pub fn prompt(&self) -> String {
        match self {
            Question::Choice { .. } => self.lettered_prompt(
                "Reply with the letter of the correct option, as \"Answer: <letter>\".",
            ),
            Question::Continuation { context, endings, .. } => format!(
                "Which ending continues the text most plausibly?\n\n{context}\n{}\n\
                 Reply with the letter of the best ending, as \"Answer: <letter>\".",
                options(endings)
            ),
            Question::Arithmetic { question, .. } => format!(
                "Solve the following problem step by step. End your reply with the final \
                 answer as a number on its own line, written as \"#### <number>\".\n\n\
                 Question: {question}"
            ),
        }
    }

    /// A multiple-choice item's question and lettered options, then
    /// `last_line` (other items: their [`prompt`](Self::prompt)).
    pub(super) fn lettered_prompt(&self, last_line: &str) -> String {
        let Question::Choice { question, subject, choices, .. } = self else {
            return self.prompt();
        };
        let about = subject
            .as_deref()
            .map(|s| format!(" about {}", s.replace('_', " ")))
            .unwrap_or_default();
        format!(
            "The following is a multiple choice question{about}.\n\n{question}\n{}\n{last_line}",
            options(choices)
        )
    }

    /// The expected answer, as extraction would read it.
    pub fn expected(&self) -> String {
        match self {
            Question::Choice { answer, .. } | Question::Continuation { answer, .. } => {
                extract::letter(*answer).to_string()
            }
            Question::Arithmetic { answer, .. } => answer.clone(),
        }
    }

    /// The answer read out of `reply`, if any.
    pub fn extract(&self, reply: &str) -> Option<String> {
        match self {
            Question::Choice { choices: options, .. }
            | Question::Continuation { endings: options, .. } => {
                extract::option_letter(reply, options.len()).map(String::from)
            }
            Question::Arithmetic { .. } => extract::final_number(reply),
        }
    }

    /// Scores `reply` (`None` when the request failed) as item `index`.
    pub fn score(&self, index: usize, reply: Option<&str>) -> QualityItem {
        let expected = self.expected();
        let extracted = reply.and_then(|reply| self.extract(reply));
        QualityItem {
            index,
            correct: extracted.as_deref() == Some(expected.as_str()),
            expected,
            extracted,
            response: reply.map(cut).unwrap_or_default(),
            choices: Vec::new(),
        }
    }
}

fn options(choices: &[String]) -> String {
    let lines: Vec<String> = choices
        .iter()
        .enumerate()
        .map(|(index, choice)| format!("{}. {choice}", extract::letter(index)))
        .collect();
    lines.join("\n")
}

fn cut(reply: &str) -> String {
    match reply.char_indices().nth(RESPONSE_CHARS) {
        Some((end, _)) => format!("{}…", &reply[..end]),
        None => reply.to_owned(),
    }
}

/// The scores of a set of items.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scores {
    /// Items scored.
    pub items: usize,
    /// Items answered correctly.
    pub correct: usize,
    /// Items with no readable answer (failed requests included).
    pub unanswered: usize,
}

impl Scores {
    /// Tallies scored items.
    pub fn of(items: &[QualityItem]) -> Scores {
        Scores {
            items: items.len(),
            correct: items.iter().filter(|item| item.correct).count(),
            unanswered: items.iter().filter(|item| item.extracted.is_none()).count(),
        }
    }

    /// Correct items over all items (0 when there are none).
    pub fn accuracy(&self) -> f64 {
        if self.items == 0 { 0.0 } else { self.correct as f64 / self.items as f64 }
    }

    /// The standard error of the accuracy, `sqrt(p (1 − p) / n)`.
    pub fn accuracy_stderr(&self) -> f64 {
        if self.items == 0 {
            return 0.0;
        }
        let p = self.accuracy();
        (p * (1.0 - p) / self.items as f64).sqrt()
    }

    /// `accuracy`, `accuracy_stderr`, `items`, `correct` and `unanswered`.
    pub fn metrics(&self) -> BTreeMap<String, f64> {
        BTreeMap::from([
            ("accuracy".to_owned(), self.accuracy()),
            ("accuracy_stderr".to_owned(), self.accuracy_stderr()),
            ("items".to_owned(), self.items as f64),
            ("correct".to_owned(), self.correct as f64),
            ("unanswered".to_owned(), self.unanswered as f64),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn choice(answer: usize) -> Question {
        Question::Choice {
            question: "Which is even?".into(),
            subject: Some("elementary_mathematics".into()),
            choices: vec!["1".into(), "2".into(), "3".into(), "5".into()],
            answer,
        }
    }

    #[test]
    fn multiple_choice_prompts_letter_the_options() {
        let prompt = choice(1).prompt();
        assert!(prompt.contains("question about elementary mathematics."), "{prompt}");
        assert!(prompt.contains("Which is even?\nA. 1\nB. 2\nC. 3\nD. 5\n"), "{prompt}");
        assert!(prompt.ends_with("as \"Answer: <letter>\"."), "{prompt}");
    }

    #[test]
    fn scoring_compares_the_extracted_answer_with_the_expected_one() {
        let item = choice(1).score(7, Some("Answer: B"));
        assert_eq!((item.index, item.correct, item.extracted.as_deref()), (7, true, Some("B")));
        let wrong = choice(1).score(0, Some("Answer: C"));
        assert!(!wrong.correct);
        let failed = choice(1).score(0, None);
        assert_eq!((failed.correct, failed.extracted, failed.response.as_str()), (false, None, ""));

        let sum = Question::Arithmetic { question: "1+1".into(), answer: "2".into() };
        assert!(sum.score(0, Some("1 + 1 = 2\n#### 2.0")).correct);
        assert!(sum.prompt().contains("#### <number>"));
    }

    #[test]
    fn long_replies_are_cut() {
        let reply = "é".repeat(RESPONSE_CHARS + 10);
        let item = choice(0).score(0, Some(&reply));
        assert_eq!(item.response.chars().count(), RESPONSE_CHARS + 1);
        assert!(item.response.ends_with('…'));
    }

    #[test]
    fn accuracy_and_its_standard_error() {
        let scores = Scores { items: 8, correct: 6, unanswered: 1 };
        assert_eq!(scores.accuracy(), 0.75);
        assert!((scores.accuracy_stderr() - (0.75_f64 * 0.25 / 8.0).sqrt()).abs() < 1e-15);
        assert!((scores.accuracy_stderr() - 0.153_093_108_923_949_1).abs() < 1e-12);

        let perfect = Scores { items: 4, correct: 4, unanswered: 0 };
        assert_eq!((perfect.accuracy(), perfect.accuracy_stderr()), (1.0, 0.0));
        let none = Scores { items: 0, correct: 0, unanswered: 0 };
        assert_eq!((none.accuracy(), none.accuracy_stderr()), (0.0, 0.0));

        let metrics = scores.metrics();
        assert_eq!(metrics["items"], 8.0);
        assert_eq!(metrics["unanswered"], 1.0);
    }
}
