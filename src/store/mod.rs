//! The store: one SQLite database in the kitt home (`kitt.db`) holding results
//! and campaign state, so another terminal can read a live campaign.
//!
//! [`Store::open`] creates the database if needed, switches it to WAL mode,
//! enforces foreign keys and applies the embedded migrations ([`schema`]).
//! Results are stored whole, in one transaction each, with every metric and
//! every raw request record, and read back whole. Cron schedules and their
//! fires and `auto_compare`'s comparisons live here too. Reports and run-directory files are not this
//! module's job.

mod campaigns;
mod comparisons;
mod connection;
mod devon;
mod downloads;
mod error;
mod pulls;
mod results;
mod schedules;
pub mod schema;
#[cfg(test)]
pub(crate) mod testing;

pub use campaigns::{
    CampaignRow, CampaignStatus, CampaignSummary, Headline, NewCampaign, RunCounts, RunEnd, RunRow,
    RunSpec, RunStatus, Session,
};
pub use connection::{DB_FILE, DEFAULT_BUSY_TIMEOUT, Store};
pub use devon::{DevonRow, NewDevonDownload};
pub use downloads::{DownloadRow, DownloadTotals, NewDownload};
pub use error::StoreError;
pub use pulls::{NewPull, PullRow};
pub use results::{ResultFilter, ResultSummary};
pub use schedules::{FireRow, FireStatus, NewFire, ScheduleRow, ScheduleSource};
pub use schema::{
    CAMPAIGN_STATE_VERSION, COMPARISONS_VERSION, DEVON_VERSION, DOWNLOADS_VERSION, PULLS_VERSION,
    SCHEDULES_VERSION, SCHEMA_VERSION,
};
