//! kitt: benchmark campaigns for LLM inference engines.
//!
//! The modules follow the pipeline of the design brief: `config` (YAML as
//! written) → `plan` (the resolved run matrix) → `acquire` (where models come
//! from) → engines and measurement (later) → `report`. `cli` holds the
//! command handlers, which stay thin; `error` maps failures to exit codes;
//! `schedule` runs campaign files on cron schedules.

pub mod acquire;
pub mod campaign;
pub mod cli;
pub mod config;
pub mod engine;
pub mod error;
pub mod gguf;
pub mod hardware;
pub mod home;
pub mod measure;
pub mod notify;
pub mod plan;
pub mod quality;
pub mod report;
pub mod results;
pub mod run;
pub mod schedule;
pub mod store;
pub mod suite;
