//! `auto_compare`: once a campaign has finished, compare it with the
//! previous finished campaign of the same name ([`crate::results::compare`]),
//! store the comparison, and hand it back to be printed and notified.
//!
//! Decisions:
//! - The baseline is the newest other campaign of the same name whose every
//!   run is done (`completed` or `failed`, not interrupted), by when it
//!   finished: last night's campaign with one failed run still holds the
//!   numbers of all its other runs.
//! - Only runs of the current config are compared, on both sides.
//! - One comparison is kept per campaign; comparing again (a resumed campaign
//!   finishing later) replaces it.

use crate::config::Thresholds;
use crate::results::compare::{Comparison, Side, compare};
use crate::store::{CampaignRow, CampaignStatus, RunStatus, Store, StoreError};

/// The result of `auto_compare` for one finished campaign.
#[derive(Debug, Clone)]
pub enum Compared {
    /// No earlier finished campaign of the same name.
    NoBaseline {
        /// The campaign's name.
        name: String,
    },
    /// The comparison, stored.
    Done(Box<Comparison>),
}

/// The newest other campaign named like `campaign` whose runs are all done.
pub fn baseline_of(
    store: &Store,
    campaign: &CampaignRow,
) -> Result<Option<CampaignRow>, StoreError> {
    let candidates = store.campaigns_named(&campaign.name)?;
    let finished = |row: &CampaignRow| {
        let done = matches!(row.status, CampaignStatus::Completed | CampaignStatus::Failed);
        let at = row.finished_at.as_deref().and_then(|at| at.parse::<jiff::Timestamp>().ok());
        (row.id != campaign.id && done).then_some(at).flatten()
    };
    let mut best: Option<(jiff::Timestamp, CampaignRow)> = None;
    for row in candidates {
        let Some(at) = finished(&row) else { continue };
        if best.as_ref().is_none_or(|(newest, _)| at > *newest) {
            best = Some((at, row));
        }
    }
    Ok(best.map(|(_, row)| row))
}

/// Every run of a campaign in the current config, with the results of its successes.
fn sides(store: &Store, campaign_id: &str) -> Result<Vec<Side>, StoreError> {
    let mut sides = Vec::new();
    for run in store.campaign_runs(campaign_id, None, None)? {
        if !run.in_config {
            continue;
        }
        let result = match (&run.result_id, run.status) {
            (Some(id), RunStatus::Success) => store.result(id)?,
            _ => None,
        };
        sides.push(Side { key: run.key, status: run.status, result });
    }
    Ok(sides)
}

/// Compares the finished campaign `campaign_id` with its baseline and stores
/// the comparison.
pub fn after_campaign(
    store: &mut Store,
    campaign_id: &str,
    thresholds: &Thresholds,
) -> Result<Option<Compared>, StoreError> {
    let Some(campaign) = store.campaign(campaign_id)? else { return Ok(None) };
    let Some(baseline) = baseline_of(store, &campaign)? else {
        return Ok(Some(Compared::NoBaseline { name: campaign.name }));
    };
    let mut comparison =
        compare(&sides(store, &baseline.id)?, &sides(store, campaign_id)?, thresholds);
    comparison.campaign_id = campaign.id;
    comparison.baseline_id = baseline.id;
    comparison.baseline_finished_at = baseline.finished_at;
    comparison.created_at = jiff::Timestamp::now().to_string();
    store.save_comparison(&comparison)?;
    Ok(Some(Compared::Done(Box::new(comparison))))
}
