//! Quality benchmarks: public datasets read from local files, the prompt each
//! item becomes, how an answer is read out of a reply, and the scores.
//!
//! - `dataset`: where a benchmark's files are and which split is read.
//! - `rows`: the published row layouts (MMLU, GSM8K, TruthfulQA, HellaSwag)
//!   in JSONL, CSV and Parquet, turned into [`Question`]s.
//! - `extract`: answer extraction from free-form replies.
//! - `score`: prompts, per-item scoring and accuracy with its standard error.
//! - `loglikelihood`: scoring options by the log-probabilities of their
//!   tokens, and the `scoring` setting that chooses between the two methods.
//!
//! Nothing here talks to an engine; `run::quality` sends the prompts.

pub mod dataset;
pub mod extract;
pub mod loglikelihood;
mod rows;
pub mod score;

pub use dataset::{Dataset, DatasetError, HubSource, Loaded, load, present};
pub use loglikelihood::{Method, Scoring};
pub use score::{Question, Scores};
