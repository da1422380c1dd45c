//! Results: the record one run produces ([`model`]), the per-run directory
//! of files written for people and scripts ([`files`]), and the comparison of
//! two campaigns' results ([`compare`]). Storing results in
//! SQLite is the `store` module's job.

pub mod compare;
pub mod context;
pub mod files;
pub mod model;

pub use context::CampaignContext;

pub use files::write_run_dir;
pub use model::{
    BenchmarkResult, BenchmarkStatus, EngineIdentity, Gpu, Hardware, ModelIdentity, RunResult,
};
