//! Campaign reports: the summary at the end of `campaign run`, `campaign
//! status` and `campaign list`, as tables or JSON.

use std::io::{self, Write};
use std::path::Path;
use std::time::Duration;

use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{CellAlignment, ColumnConstraint, Table, Width};
use serde::Serialize;

use crate::campaign::coordinator::Outcome;
use crate::campaign::lock;
use crate::campaign::progress::clock;
use crate::plan::matrix::human_bytes;
use crate::results::compare::Compared;
use crate::store::{
    CampaignRow, CampaignStatus, CampaignSummary, DOWNLOADS_VERSION, DownloadTotals, RunCounts,
    RunRow, RunStatus, Store, StoreError,
};

/// How many failed runs a status table lists (JSON lists all).
const FAILED_SHOWN: usize = 20;

/// Reasons are cut to this many characters in tables.
const REASON_WIDTH: usize = 90;

/// The summary table of every run, the reasons of failed and skipped runs
/// below it (one line each, so they read at any terminal width), then the
/// totals.
pub fn write_summary(out: &mut impl Write, outcome: &Outcome) -> io::Result<()> {
    let mut table = Table::new();
    table.load_style(UTF8_FULL_CONDENSED);
    super::fit_to_terminal(&mut table);
    table.set_header(["run", "status", "time", "tok/s", "TTFT p50 ms", "errors"]);
    // Statuses and numbers stay on one line; a long run key wraps.
    let mut constraints = vec![ColumnConstraint::LowerBoundary(Width::Fixed(16))];
    constraints.extend([ColumnConstraint::ContentWidth; 5]);
    table.set_constraints(constraints);
    for run in &outcome.runs {
        table.add_row(vec![
            run.key.clone(),
            status_text(run),
            run.duration_s.map(|s| format!("{s:.1} s")).unwrap_or_default(),
            number(run.headline.output_tokens_per_second, 1),
            number(run.headline.ttft_ms_p50, 1),
            run.headline
                .error_rate
                .map(|rate| format!("{:.1} %", rate * 100.0))
                .unwrap_or_default(),
        ]);
    }
    for column in 2..=5 {
        if let Some(column) = table.column_mut(column) {
            column.set_cell_alignment(CellAlignment::Right);
        }
    }
    writeln!(out, "{table}")?;
    for run in outcome.runs.iter().filter(|run| run.status != RunStatus::Success) {
        if let Some(reason) = run.reason.as_deref().filter(|reason| !reason.is_empty()) {
            writeln!(out, "{} {}: {}", run.status, run.key, crate::campaign::brief(reason))?;
        }
    }
    let limited = outcome.runs.iter().filter(|run| is_limited(run)).count();
    if limited > 0 {
        writeln!(out, "{}", limited_note(limited as u64))?;
    }
    let counts = &outcome.counts;
    let state =
        if outcome.interrupted { "interrupted".to_owned() } else { outcome.status.to_string() };
    writeln!(
        out,
        "Campaign {} {state} in {}: {} runs, {} succeeded, {} failed, {} skipped, {} pending",
        outcome.campaign_id,
        if outcome.elapsed.as_secs() < 60 {
            format!("{:.1}s", outcome.elapsed.as_secs_f64())
        } else {
            clock(outcome.elapsed)
        },
        counts.total(),
        counts.success,
        counts.failed,
        counts.skipped,
        counts.pending + counts.running,
    )?;
    if let Some(compared) = &outcome.comparison {
        super::compare::write_text(out, compared)?;
    }
    Ok(())
}

/// The summary as one JSON object.
pub fn write_summary_json(out: &mut impl Write, outcome: &Outcome) -> io::Result<()> {
    let value = serde_json::json!({
        "campaign_id": outcome.campaign_id,
        "status": outcome.status,
        "interrupted": outcome.interrupted,
        "elapsed_s": outcome.elapsed.as_secs_f64(),
        "item_limit": outcome.limit,
        "counts": outcome.counts,
        "runs": outcome.runs,
        "comparison": outcome.comparison.as_ref().map(super::compare::to_json),
    });
    serde_json::to_writer_pretty(&mut *out, &value)?;
    writeln!(out)
}

/// Everything `campaign status` shows.
#[derive(Debug, Serialize)]
pub struct StatusView {
    /// The campaign.
    pub campaign: CampaignRow,
    /// `pending`, `running`, `completed`, `failed`, or `interrupted` (stored
    /// as running but no process holds its lock).
    pub state: &'static str,
    /// Whether a process is driving it now.
    pub live: bool,
    /// Runs in the current config.
    pub total: u64,
    /// Runs per status as stored.
    pub counts: RunCounts,
    /// Runs left `running` by a process that died (0 while live).
    pub interrupted_runs: u64,
    /// The run being executed (with several in flight, the latest to
    /// start that is still running).
    pub current_run: Option<RunRow>,
    /// Every run in flight (several in a parallel campaign, each with its
    /// `devices`).
    pub current_runs: Vec<RunRow>,
    /// The next run while its model downloads beside the current one.
    pub next_run: Option<RunRow>,
    /// Failed runs with their errors.
    pub failed_runs: Vec<RunRow>,
    /// Failed runs in all (the table shows the first few).
    pub failed_total: u64,
    /// Estimated seconds left (while live, once a run has finished).
    pub eta_seconds: Option<f64>,
    /// Free bytes under the storage root.
    pub disk_free_bytes: Option<u64>,
    /// The latest session's `--limit` (`None`: whole datasets).
    pub item_limit: Option<u32>,
    /// Successful runs whose quality benchmarks scored only part of their
    /// datasets (a smoke run's results).
    pub limited_runs: u64,
    /// Bytes downloaded for the campaign and still to download (none from a
    /// store written before kitt recorded downloads).
    pub downloads: Option<DownloadTotals>,
    /// `auto_compare`'s stored comparison with the previous campaign of the
    /// same name.
    #[serde(serialize_with = "super::compare::serialize_compared")]
    pub comparison: Option<Compared>,
}

/// Reads a campaign's status; `None` when there is no such campaign.
pub fn status_view(
    store: &Store,
    home: &Path,
    id: Option<&str>,
    all_failed: bool,
) -> Result<Option<StatusView>, StoreError> {
    let campaign = match id {
        Some(id) => store.campaign(id)?,
        None => store.latest_campaign(None)?,
    };
    let Some(campaign) = campaign else { return Ok(None) };
    let live = lock::is_held(home, &campaign.id);
    let counts = store.run_counts(&campaign.id)?;
    let pending = if live {
        store.campaign_runs(&campaign.id, Some(RunStatus::Pending), None)?
    } else {
        Vec::new()
    };
    // A pending run that holds devices (a parallel run waiting for disk
    // space) is current too; one with only a phase is a prefetch.
    let holds_devices = |run: &RunRow| run.devices.is_some() && run.phase.is_some();
    let current_runs: Vec<RunRow> = if live {
        let running = store.campaign_runs(&campaign.id, Some(RunStatus::Running), None)?;
        let waiting = pending.iter().filter(|run| holds_devices(run)).cloned();
        running.into_iter().chain(waiting).filter(|run| run.in_config).collect()
    } else {
        Vec::new()
    };
    let current_run = match (live, campaign.current_run) {
        (true, Some(run)) => store.campaign_run(run)?,
        _ => None,
    };
    // A parallel run that ends clears the campaign's current run while
    // others still run.
    let current_run = current_run.or_else(|| current_runs.last().cloned());
    let next_run =
        pending.into_iter().find(|run| run.in_config && run.phase.is_some() && !holds_devices(run));
    let limit = (!all_failed).then_some(FAILED_SHOWN);
    let failed_runs = store.campaign_runs(&campaign.id, Some(RunStatus::Failed), limit)?;
    let eta_seconds = if live {
        store
            .mean_run_seconds(&campaign.id)?
            .map(|mean| mean * (counts.pending + counts.running) as f64)
    } else {
        None
    };
    let disk_free_bytes = crate::acquire::local::free_space(Path::new(&campaign.storage_root));
    let successes = store.campaign_runs(&campaign.id, Some(RunStatus::Success), None)?;
    let limited_runs = successes.iter().filter(|run| is_limited(run)).count() as u64;
    let item_limit = store.session_item_limit(&campaign.id)?;
    let downloads = if store.schema_version()? >= DOWNLOADS_VERSION {
        Some(store.download_totals(&campaign.id)?)
    } else {
        None
    };
    let comparison = store.comparison(&campaign.id)?;
    Ok(Some(StatusView {
        comparison,
        item_limit,
        limited_runs,
        state: state(&campaign, live),
        live,
        total: counts.total(),
        interrupted_runs: if live { 0 } else { counts.running },
        counts,
        current_run,
        current_runs,
        next_run,
        failed_runs,
        failed_total: counts.failed,
        eta_seconds,
        disk_free_bytes,
        downloads,
        campaign,
    }))
}

/// The state users read: a `running` campaign nobody drives was interrupted.
fn state(campaign: &CampaignRow, live: bool) -> &'static str {
    match campaign.status {
        CampaignStatus::Running if !live => "interrupted",
        status => status.as_str(),
    }
}

/// `campaign status` as text.
pub fn write_status(out: &mut impl Write, view: &StatusView, home: &Path) -> io::Result<()> {
    let campaign = &view.campaign;
    writeln!(out, "Campaign: {} ({})", campaign.name, campaign.id)?;
    let owner = match (view.live, campaign.owner_pid, &campaign.owner_host) {
        (true, Some(pid), Some(host)) => format!(" (pid {pid} on {host})"),
        _ => String::new(),
    };
    writeln!(out, "Status:   {}{owner}", view.state)?;
    if view.state == "interrupted" || campaign.status == CampaignStatus::Pending {
        let resume = crate::campaign::resume_command(&campaign.config_path, &campaign.id, home);
        writeln!(out, "          resume with: {resume}")?;
    }
    writeln!(out, "Config:   {}", campaign.config_path)?;
    writeln!(out, "Created:  {}", campaign.created_at)?;
    if let Some(finished) = &campaign.finished_at {
        writeln!(out, "Finished: {finished}")?;
    }
    let counts = &view.counts;
    // A run left `running` by a process that died was interrupted.
    let running = if view.live { "running" } else { "interrupted" };
    writeln!(
        out,
        "Runs:     {} total | {} success | {} failed | {} skipped | {} {running} | {} pending",
        view.total, counts.success, counts.failed, counts.skipped, counts.running, counts.pending
    )?;
    let current: Vec<&RunRow> = if view.current_runs.len() > 1 {
        view.current_runs.iter().collect()
    } else {
        view.current_run.iter().collect()
    };
    for run in current {
        let phase = run.phase.as_deref().unwrap_or("starting");
        let since = run.started_at.as_deref().unwrap_or("?");
        let devices =
            run.devices.as_ref().map(|devices| format!(" on {devices}")).unwrap_or_default();
        writeln!(
            out,
            "Current:  {}{devices} — {phase} (attempt {}, since {since})",
            run.key, run.attempts
        )?;
    }
    if let Some(run) = &view.next_run {
        let phase = run.phase.as_deref().unwrap_or_default();
        writeln!(out, "Next:     {} — {phase} (beside the current run)", run.key)?;
    }
    if let Some(eta) = view.eta_seconds {
        writeln!(out, "ETA:      {}", clock(Duration::from_secs_f64(eta.max(0.0))))?;
    }
    if let Some(limit) = view.item_limit {
        writeln!(
            out,
            "Limit:    --limit {limit} (quality benchmarks score their first {limit} items)"
        )?;
    }
    if view.limited_runs > 0 {
        writeln!(out, "Limited:  {}", limited_note(view.limited_runs))?;
    }
    let free = view.disk_free_bytes.map_or_else(|| "unknown".to_owned(), human_bytes);
    writeln!(out, "Disk:     {free} free under {}", campaign.storage_root)?;
    if let Some(totals) = view.downloads.filter(|t| t.downloaded_bytes + t.to_download_bytes > 0) {
        writeln!(
            out,
            "Download: {} downloaded, {} to download",
            human_bytes(totals.downloaded_bytes),
            human_bytes(totals.to_download_bytes)
        )?;
    }
    if let Some(comparison) = &view.comparison {
        super::compare::write_status(out, comparison)?;
    }
    if !view.failed_runs.is_empty() {
        writeln!(out, "Failed runs:")?;
        for run in &view.failed_runs {
            let reason = run.reason.as_deref().unwrap_or_default();
            writeln!(out, "  {}: {}", run.key, short(reason))?;
        }
        let more = view.failed_total.saturating_sub(view.failed_runs.len() as u64);
        if more > 0 {
            writeln!(out, "  … and {more} more (--json lists all)")?;
        }
    }
    Ok(())
}

/// `campaign list` as a table, newest first.
pub fn write_list(
    out: &mut impl Write,
    home: &Path,
    campaigns: &[CampaignSummary],
) -> io::Result<()> {
    if campaigns.is_empty() {
        return writeln!(out, "No campaigns yet.");
    }
    let mut table = Table::new();
    table.load_style(UTF8_FULL_CONDENSED);
    super::fit_to_terminal(&mut table);
    table.set_header(["id", "name", "status", "runs", "success", "failed", "skipped", "created"]);
    for summary in campaigns {
        let campaign = &summary.campaign;
        let live = campaign.status == CampaignStatus::Running && lock::is_held(home, &campaign.id);
        table.add_row(vec![
            campaign.id.clone(),
            campaign.name.clone(),
            state(campaign, live).to_owned(),
            summary.total.to_string(),
            summary.counts.success.to_string(),
            summary.counts.failed.to_string(),
            summary.counts.skipped.to_string(),
            campaign.created_at.chars().take(19).collect(),
        ]);
    }
    writeln!(out, "{table}")
}

/// `campaign list --json`: an array, newest first, each with its `state`.
pub fn write_list_json(
    out: &mut impl Write,
    home: &Path,
    campaigns: &[CampaignSummary],
) -> io::Result<()> {
    let rows: Vec<serde_json::Value> = campaigns
        .iter()
        .map(|summary| {
            let live = summary.campaign.status == CampaignStatus::Running
                && lock::is_held(home, &summary.campaign.id);
            let mut value = serde_json::to_value(summary).unwrap_or_default();
            value["state"] = state(&summary.campaign, live).into();
            value
        })
        .collect();
    serde_json::to_writer_pretty(&mut *out, &rows)?;
    writeln!(out)
}

/// A run's status, marked when it succeeded on part of its datasets only.
fn status_text(run: &RunRow) -> String {
    match run.item_limit.filter(|_| is_limited(run)) {
        Some(limit) => format!("{} (first {limit} items)", run.status),
        None => run.status.to_string(),
    }
}

fn is_limited(run: &RunRow) -> bool {
    run.status == RunStatus::Success && run.item_limit.is_some()
}

/// What limited successes mean, on one line.
fn limited_note(runs: u64) -> String {
    let (count, them) = if runs == 1 {
        ("1 smoke result".to_owned(), "it")
    } else {
        (format!("{runs} smoke results"), "them")
    };
    format!(
        "{count} (quality benchmarks scored only their first items); `--resume` without \
         --limit redoes {them} in full"
    )
}

fn number(value: Option<f64>, digits: usize) -> String {
    value.map(|value| format!("{value:.digits$}")).unwrap_or_default()
}

/// A reason on one line (see [`crate::campaign::brief`]), cut for a table cell.
fn short(reason: &str) -> String {
    let line = crate::campaign::brief(reason);
    if line.chars().count() <= REASON_WIDTH {
        return line;
    }
    let head: String = line.chars().take(REASON_WIDTH).collect();
    format!("{head}…")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::campaign::lock::CampaignLock;
    use crate::store::testing;

    #[test]
    fn a_parallel_run_waiting_for_disk_space_is_current_with_its_devices() {
        let home = tempfile::tempdir().unwrap();
        let mut store = Store::open(home.path()).unwrap();
        let specs =
            ["a", "b", "n"].map(|key| testing::run((key, "llama_cpp", key), "hf:org/m", &[], 1));
        let session = testing::session(&mut store, &specs);
        let runs = store.campaign_runs("c", None, None).unwrap();
        let id = |key: &str| runs.iter().find(|run| run.key == key).unwrap().id;
        store.run_started(session, id("a"), Some("GPU 0")).unwrap();
        store.run_waiting(id("b"), "waiting for disk space: 1.0 GiB short", "GPU 1").unwrap();
        // A prefetch's phase on a pending run without devices: the next run.
        store.run_phase(id("n"), "downloading").unwrap();
        let _lock = CampaignLock::acquire(home.path(), "c").unwrap();

        let view = status_view(&store, home.path(), Some("c"), false).unwrap().unwrap();
        let current: Vec<(&str, Option<&str>, Option<&str>)> = view
            .current_runs
            .iter()
            .map(|run| (run.key.as_str(), run.devices.as_deref(), run.phase.as_deref()))
            .collect();
        assert_eq!(
            current,
            [
                ("a", Some("GPU 0"), Some("starting")),
                ("b", Some("GPU 1"), Some("waiting for disk space: 1.0 GiB short")),
            ]
        );
        assert_eq!(view.next_run.as_ref().map(|run| run.key.as_str()), Some("n"));
        let mut text = Vec::new();
        write_status(&mut text, &view, home.path()).unwrap();
        let text = String::from_utf8(text).unwrap();
        assert!(text.contains("b on GPU 1"), "{text}");

        // Waiting is recorded only for a run that has not started.
        store.run_waiting(id("a"), "waiting", "GPU 5").unwrap();
        let a = store.campaign_run(id("a")).unwrap().unwrap();
        assert_eq!((a.devices.as_deref(), a.phase.as_deref()), (Some("GPU 0"), Some("starting")));
    }
}
