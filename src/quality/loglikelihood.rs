//! Log-likelihood scoring of multiple-choice items: each option is appended to
//! a context, the engine returns the log-probability of every prompt token,
//! and the option whose own tokens are most likely wins. Nothing is generated,
//! so no answer has to be read out of a reply.
//!
//! What is scored, per dataset (zero-shot):
//!
//! - **MMLU**: the question with its lettered options, then `Answer:`; the
//!   options are the letters ` A`… ` D`.
//! - **TruthfulQA** (MC1): `Q: <question>\nA:`, then each answer's text.
//! - **HellaSwag**: the context, then each ending's text.
//!
//! Each option starts with a space, so a tokenizer splits it from the
//! context. Two choices are computed for every item: by the summed
//! log-probability (`accuracy_sum`) and by that sum divided by the option's
//! length in characters, its leading space included (`accuracy_norm`, the
//! convention HellaSwag reports as `acc_norm`: long endings are not punished
//! for their length). The headline `accuracy` and each item's `correct` use
//! the normalised choice for HellaSwag and the sum for MMLU and TruthfulQA;
//! MMLU's options are all one letter long, so both agree there. Ties go to the
//! first option. GSM8K has no options and is always scored generatively.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::dataset::Dataset;
use super::extract;
use super::score::Question;
use crate::measure::Tail;
use crate::results::model::{ChoiceScore, QualityItem};

/// How a quality benchmark asks to be scored (its `scoring` setting).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Scoring {
    /// Generate an answer and read it out of the reply.
    Generative,
    /// Compare the options' log-likelihoods; "not run" when the engine cannot.
    Loglikelihood,
    /// Log-likelihood when the engine returns prompt log-probabilities and the
    /// dataset has options, else generative.
    #[default]
    Auto,
}

impl Scoring {
    /// Every setting, as written in a benchmark file.
    pub const NAMES: &[&str] = &["generative", "loglikelihood", "auto"];

    /// The setting called `name`.
    pub fn parse(name: &str) -> Option<Scoring> {
        match name {
            "generative" => Some(Scoring::Generative),
            "loglikelihood" => Some(Scoring::Loglikelihood),
            "auto" => Some(Scoring::Auto),
            _ => None,
        }
    }
}

/// How a quality benchmark was scored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// Answers generated and read out of the replies.
    Generative,
    /// Options compared by log-likelihood.
    Loglikelihood,
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Method::Generative => "generative",
            Method::Loglikelihood => "loglikelihood",
        })
    }
}

/// What one item asks the engine to score.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// The text before every option.
    pub context: String,
    /// The options, each starting with a space.
    pub continuations: Vec<String>,
    /// Index of the right option.
    pub answer: usize,
    /// Whether the headline choice divides by the option's length.
    pub normalised: bool,
}

impl Options {
    /// The prompt sent for option `index`.
    pub fn prompt(&self, index: usize) -> String {
        format!("{}{}", self.context, self.continuations[index])
    }
}

/// Whether `dataset` can be scored by log-likelihood (it has options).
pub fn applies_to(dataset: Dataset) -> bool {
    dataset != Dataset::Gsm8k
}

/// The context and options of an item; `None` for an item without options.
pub fn options(dataset: Dataset, question: &Question) -> Option<Options> {
    match question {
        Question::Choice { question, choices, answer, .. } if dataset == Dataset::TruthfulQa => {
            Some(Options {
                context: format!("Q: {question}\nA:"),
                continuations: choices.iter().map(|choice| format!(" {choice}")).collect(),
                answer: *answer,
                normalised: false,
            })
        }
        Question::Choice { choices, answer, .. } => {
            let letters = (0..choices.len()).map(|i| format!(" {}", extract::letter(i))).collect();
            Some(Options {
                context: question.lettered_prompt("Answer:"),
                continuations: letters,
                answer: *answer,
                normalised: false,
            })
        }
        Question::Continuation { context, endings, answer } => Some(Options {
            context: context.clone(),
            continuations: endings.iter().map(|ending| format!(" {ending}")).collect(),
            answer: *answer,
            normalised: true,
        }),
        Question::Arithmetic { .. } => None,
    }
}

/// Scores item `index` from each option's log-likelihood (`None` where its
/// request failed or could not be read: the item then counts as unanswered).
pub fn score(index: usize, options: &Options, tails: &[Option<Tail>]) -> QualityItem {
    let choices: Vec<ChoiceScore> = options
        .continuations
        .iter()
        .zip(tails)
        .map(|(text, tail)| ChoiceScore {
            loglikelihood: tail.map(|tail| tail.logprob),
            tokens: tail.map(|tail| tail.tokens),
            chars: text.chars().count(),
        })
        .collect();
    let expected = extract::letter(options.answer).to_string();
    let chosen = best(&choices, options.normalised).map(|i| extract::letter(i).to_string());
    QualityItem {
        index,
        correct: chosen.as_deref() == Some(expected.as_str()),
        expected,
        extracted: chosen,
        response: String::new(),
        choices,
    }
}

/// The winning option, by sum or by per-character mean; `None` when any
/// option has no log-likelihood.
fn best(choices: &[ChoiceScore], normalised: bool) -> Option<usize> {
    let mut best: Option<(usize, f64)> = None;
    for (index, choice) in choices.iter().enumerate() {
        let sum = choice.loglikelihood?;
        let value = if normalised { sum / choice.chars.max(1) as f64 } else { sum };
        if best.is_none_or(|(_, top)| value > top) {
            best = Some((index, value));
        }
    }
    best.map(|(index, _)| index)
}

/// `accuracy_sum` and `accuracy_norm` over scored items (0 when there are none).
pub fn metrics(items: &[QualityItem]) -> BTreeMap<String, f64> {
    let accuracy = |normalised: bool| {
        if items.is_empty() {
            return 0.0;
        }
        let right = items
            .iter()
            .filter(|item| {
                let expected = item.expected.bytes().next().and_then(|c| c.checked_sub(b'A'));
                best(&item.choices, normalised)
                    .is_some_and(|i| Some(i) == expected.map(usize::from))
            })
            .count();
        right as f64 / items.len() as f64
    };
    BTreeMap::from([
        ("accuracy_sum".to_owned(), accuracy(false)),
        ("accuracy_norm".to_owned(), accuracy(true)),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tail(logprob: f64) -> Option<Tail> {
        Some(Tail { logprob, tokens: 2 })
    }

    fn hellaswag() -> Question {
        Question::Continuation {
            context: "He opens the door and".into(),
            endings: vec!["walks in slowly and sits down.".into(), "flies.".into()],
            answer: 0,
        }
    }

    #[test]
    fn each_dataset_has_its_context_and_options() {
        let mmlu = Question::Choice {
            question: "2+2?".into(),
            subject: Some("math".into()),
            choices: vec!["3".into(), "4".into(), "5".into(), "6".into()],
            answer: 1,
        };
        let scored = options(Dataset::Mmlu, &mmlu).unwrap();
        assert!(scored.context.ends_with("2+2?\nA. 3\nB. 4\nC. 5\nD. 6\nAnswer:"), "{scored:?}");
        assert_eq!(scored.continuations, [" A", " B", " C", " D"]);
        assert_eq!(scored.prompt(1), format!("{} B", scored.context));

        let truthful = options(Dataset::TruthfulQa, &mmlu).unwrap();
        assert_eq!(truthful.context, "Q: 2+2?\nA:");
        assert_eq!(truthful.continuations[1], " 4");
        assert!(!truthful.normalised);

        let swag = options(Dataset::HellaSwag, &hellaswag()).unwrap();
        assert_eq!((swag.context.as_str(), swag.normalised), ("He opens the door and", true));
        assert_eq!(swag.continuations[1], " flies.");

        let sum = Question::Arithmetic { question: "1+1".into(), answer: "2".into() };
        assert_eq!(options(Dataset::Gsm8k, &sum), None);
        assert!(!applies_to(Dataset::Gsm8k) && applies_to(Dataset::HellaSwag));
    }

    #[test]
    fn hellaswag_picks_by_mean_per_character_and_keeps_both_choices() {
        let scored = options(Dataset::HellaSwag, &hellaswag()).unwrap();
        // The long right ending: -6.2 over 31 characters (-0.2 each); the short
        // wrong one: -3.5 over 7 (-0.5 each). The sum prefers the wrong one.
        let item = score(4, &scored, &[tail(-6.2), tail(-3.5)]);
        assert_eq!((item.index, item.correct, item.extracted.as_deref()), (4, true, Some("A")));
        assert_eq!(item.choices[0].chars, 31);
        assert_eq!(
            item.choices[1],
            ChoiceScore { loglikelihood: Some(-3.5), tokens: Some(2), chars: 7 }
        );
        let metrics = metrics(std::slice::from_ref(&item));
        assert_eq!((metrics["accuracy_norm"], metrics["accuracy_sum"]), (1.0, 0.0));
    }

    #[test]
    fn a_missing_option_leaves_the_item_unanswered_and_ties_go_first() {
        let scored = options(Dataset::HellaSwag, &hellaswag()).unwrap();
        let item = score(0, &scored, &[tail(-1.0), None]);
        assert_eq!((item.correct, item.extracted), (false, None));
        assert_eq!(item.choices[1].loglikelihood, None);

        let even = Options {
            context: "c".into(),
            continuations: vec![" x".into(), " y".into()],
            answer: 1,
            normalised: false,
        };
        assert_eq!(score(0, &even, &[tail(-1.0), tail(-1.0)]).extracted.as_deref(), Some("A"));
        assert_eq!(metrics(&[]).get("accuracy_sum"), Some(&0.0));
    }
}
