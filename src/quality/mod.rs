//! Quality benchmarks: public datasets read from local files, the prompt each
//! item becomes, how an answer is read out of a reply, and the scores.
//!
//! - `dataset`: where a benchmark's files are and which split is read.
//! - `rows`: the published row layouts (MMLU, GSM8K, TruthfulQA, HellaSwag)
//!   in JSONL, CSV and Parquet, turned into [`Question`]s.
//! - `extract`: answer extraction from free-form replies.
//! - `score`: prompts, per-item scoring and accuracy with its standard error.
//!
//! Nothing here talks to an engine; `run::quality` sends the prompts.

pub mod dataset;
pub mod extract;
mod rows;
pub mod score;

pub use dataset::{Dataset, DatasetError, Loaded, load};
pub use score::{Question, Scores};
