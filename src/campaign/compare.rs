//! `auto_compare`: once a campaign has finished, compare it with the
//! previous finished campaign of the same name ([`crate::results::compare`]),
//! store the comparison, and hand it back to be printed and notified.
//!
//! Decisions:
//! - The baseline is the newest campaign of the same name created before this
//!   one whose every run is done (`completed` or `failed`, not interrupted).
//!   Creation order, not finishing order: resuming an old campaign never
//!   makes it the "previous" one of a newer campaign, and two campaigns
//!   never become each other's baseline.
//! - A key that failed or was skipped in the baseline is compared with its
//!   newest success in an earlier finished campaign of the name, and a note
//!   says which: one failed night must not hide the next regression.
//! - Only runs of the current config are compared, on both sides.
//! - One comparison is kept per campaign. It is made when a session that
//!   executed runs finishes the campaign (a resume with nothing left to do
//!   changes nothing and notifies nobody), and forgotten when a session
//!   starts redoing runs, so `status` never shows one the runs have outgrown.
//! - The first campaign of a name stores that it had nothing to compare with.

use crate::config::Thresholds;
use crate::results::compare::{Compared, Side, compare};
use crate::store::{CampaignRow, CampaignStatus, RunRow, RunStatus, Store, StoreError};

/// Earlier campaigns of `campaign`'s name that finished, newest first.
pub fn earlier_finished(
    store: &Store,
    campaign: &CampaignRow,
) -> Result<Vec<CampaignRow>, StoreError> {
    let named = store.campaigns_named(&campaign.name)?;
    // Newest created first: the ones after this campaign were created before it.
    let earlier = named.into_iter().skip_while(|row| row.id != campaign.id).skip(1);
    Ok(earlier
        .filter(|row| matches!(row.status, CampaignStatus::Completed | CampaignStatus::Failed))
        .collect())
}

/// The runs of a campaign's current config, without results.
fn rows(store: &Store, campaign_id: &str) -> Result<Vec<RunRow>, StoreError> {
    Ok(store
        .campaign_runs(campaign_id, None, None)?
        .into_iter()
        .filter(|run| run.in_config)
        .collect())
}

/// The result of a run row when it succeeded.
fn side(store: &Store, run: RunRow, from: Option<String>) -> Result<Side, StoreError> {
    let result = match (&run.result_id, run.status) {
        (Some(id), RunStatus::Success) => store.result(id)?,
        _ => None,
    };
    Ok(Side { key: run.key, status: run.status, reason: run.reason, result, from })
}

/// The baseline side: the baseline campaign's runs, each key without a
/// success there replaced by its newest success in an earlier campaign.
fn baseline_sides(
    store: &Store,
    baseline: &CampaignRow,
    older: &[CampaignRow],
    wanted: &[&str],
) -> Result<Vec<Side>, StoreError> {
    let mut sides = Vec::new();
    let mut missing: Vec<&str> = Vec::new();
    let primary = rows(store, &baseline.id)?;
    for &key in wanted {
        if !primary.iter().any(|run| run.key == key && run.status == RunStatus::Success) {
            missing.push(key);
        }
    }
    for run in primary {
        if run.status == RunStatus::Success || !missing.contains(&run.key.as_str()) {
            sides.push(side(store, run, None)?);
        }
    }
    for campaign in older {
        if missing.is_empty() {
            break;
        }
        for run in rows(store, &campaign.id)? {
            let Some(at) = missing.iter().position(|key| *key == run.key) else { continue };
            if run.status == RunStatus::Success {
                missing.swap_remove(at);
                sides.push(side(store, run, Some(campaign.id.clone()))?);
            }
        }
    }
    Ok(sides)
}

/// Compares the finished campaign `campaign_id` with its baseline and stores
/// the comparison (or that there was nothing to compare with).
pub fn after_campaign(
    store: &mut Store,
    campaign_id: &str,
    thresholds: &Thresholds,
) -> Result<Option<Compared>, StoreError> {
    let Some(campaign) = store.campaign(campaign_id)? else { return Ok(None) };
    let earlier = earlier_finished(store, &campaign)?;
    let Some((baseline, older)) = earlier.split_first() else {
        store.save_no_baseline(campaign_id)?;
        return Ok(Some(Compared::NoBaseline { name: campaign.name }));
    };
    let current = rows(store, campaign_id)?
        .into_iter()
        .map(|run| side(store, run, None))
        .collect::<Result<Vec<_>, _>>()?;
    let wanted: Vec<&str> = current.iter().map(|side| side.key.as_str()).collect();
    let then = baseline_sides(store, baseline, older, &wanted)?;
    let mut comparison = compare(&then, &current, thresholds);
    comparison.campaign_id = campaign.id;
    comparison.baseline_id = baseline.id.clone();
    comparison.baseline_finished_at = baseline.finished_at.clone();
    comparison.created_at = jiff::Timestamp::now().to_string();
    store.save_comparison(&comparison)?;
    Ok(Some(Compared::Done(Box::new(comparison))))
}
