//! The dry-run plan as a table with totals, or as one JSON object.

use std::io::{self, Write};

use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{ColumnConstraint, Table, Width};
use serde::Serialize;

use crate::campaign::placement::Preview;
use crate::config::Campaign;
use crate::plan::matrix::human_bytes;
use crate::plan::variants::saturating_sum;
use crate::plan::{Plan, PlannedRun, RunPlan, SizeSource};

/// The JSON shape of one run.
#[derive(Serialize)]
struct JsonRun<'a> {
    key: &'a str,
    model: &'a str,
    engine: &'a str,
    quant: &'a str,
    source: &'a str,
    files: &'a [String],
    size_bytes: Option<u64>,
    size_source: Option<SizeSource>,
    status: RunPlan,
    reason: Option<&'a str>,
    /// With `parallel: true`, for a planned run.
    #[serde(skip_serializing_if = "Option::is_none")]
    placement: Option<JsonPlacement>,
}

/// Where a planned run of a parallel campaign may go.
#[derive(Serialize)]
#[serde(untagged)]
enum JsonPlacement {
    /// How many devices, and which it may get (`2 of GPU 0,1,2,3`).
    Needs { devices_needed: usize, devices: String },
    /// The machine can never hold it; the run is skipped when it comes.
    Skipped { skipped: String },
}

/// The machine a parallel campaign places its runs on.
#[derive(Serialize)]
struct JsonMachine<'a> {
    devices: &'a str,
    max_parallel: Option<u32>,
}

/// The JSON shape of a plan.
#[derive(Serialize)]
struct JsonPlan<'a> {
    campaign: &'a str,
    /// With `parallel: true`.
    #[serde(skip_serializing_if = "Option::is_none")]
    parallel: Option<JsonMachine<'a>>,
    runs: Vec<JsonRun<'a>>,
}

/// Writes `{"campaign": …, "runs": […]}`, with the machine and each planned
/// run's placement when `preview` is given (`parallel: true`).
pub fn write_json(out: &mut impl Write, plan: &Plan, preview: Option<&Preview>) -> io::Result<()> {
    let runs = plan
        .runs
        .iter()
        .map(|run| JsonRun {
            key: &run.key,
            model: &run.model,
            engine: run.engine.name(),
            quant: &run.quant,
            source: &run.source,
            files: &run.files,
            size_bytes: run.size_bytes,
            size_source: run.size_source,
            status: run.status,
            reason: run.reason.as_deref(),
            placement: preview.filter(|_| run.status == RunPlan::Planned).map(|preview| {
                match preview.run(run.size_bytes) {
                    Ok((devices_needed, devices)) => {
                        JsonPlacement::Needs { devices_needed, devices }
                    }
                    Err(skipped) => JsonPlacement::Skipped { skipped },
                }
            }),
        })
        .collect();
    let parallel = preview.map(|preview| JsonMachine {
        devices: &preview.machine,
        max_parallel: preview.max_parallel,
    });
    let document = JsonPlan { campaign: &plan.campaign, parallel, runs };
    serde_json::to_writer_pretty(&mut *out, &document)?;
    writeln!(out)
}

/// Writes the header, the run table and the totals; with `preview`
/// (`parallel: true`) the machine's devices and a column with the devices
/// each planned run needs.
pub fn write_table(
    out: &mut impl Write,
    campaign: &Campaign,
    plan: &Plan,
    preview: Option<&Preview>,
) -> io::Result<()> {
    writeln!(out, "Campaign: {}", campaign.name)?;
    writeln!(out, "  Models:       {}", campaign.models.len())?;
    writeln!(out, "  Engines:      {}", campaign.engines.len())?;
    writeln!(out, "  Storage root: {}", plan.storage_root.display())?;
    if let Some(schedule) = &campaign.schedule {
        writeln!(out, "  Schedule:     {schedule} (cron)")?;
    }
    if campaign.auto_compare {
        let thresholds = campaign.thresholds;
        writeln!(
            out,
            "  Auto-compare: on (regression beyond {} % throughput, {} % latency)",
            thresholds.throughput_pct, thresholds.latency_pct
        )?;
    }
    if let Some(preview) = preview {
        let limit = preview.max_parallel.map(|cap| format!(", at most {cap} at once"));
        writeln!(out, "  Parallel:     on{}", limit.unwrap_or_default())?;
        writeln!(out, "  Devices:      {}", preview.machine)?;
    }
    writeln!(out)?;

    if plan.runs.is_empty() {
        writeln!(out, "No runs.")?;
    } else {
        writeln!(out, "{}", table(&plan.runs, preview))?;
    }
    writeln!(out)?;
    write_totals(out, plan)
}

fn table(runs: &[PlannedRun], preview: Option<&Preview>) -> Table {
    let mut table = Table::new();
    table.load_style(UTF8_FULL_CONDENSED);
    super::fit_to_terminal(&mut table);
    let mut header = vec!["#", "model", "engine", "quant", "files", "size", "size source", "plan"];
    if preview.is_some() {
        header.push("devices");
    }
    table.set_header(header);
    // Only file names and reasons wrap: keys and sizes stay readable.
    let mut constraints = vec![ColumnConstraint::ContentWidth; 7];
    constraints[4] = ColumnConstraint::UpperBoundary(Width::Percentage(30));
    table.set_constraints(constraints);
    for (index, run) in runs.iter().enumerate() {
        let mut row = vec![
            (index + 1).to_string(),
            run.model.clone(),
            run.engine.name().to_owned(),
            run.quant.clone(),
            files_cell(&run.files),
            run.size_bytes.map_or_else(|| "-".to_owned(), human_bytes),
            run.size_source.map_or("-", size_source_name).to_owned(),
            plan_cell(run),
        ];
        if let Some(preview) = preview {
            row.push(devices_cell(run, preview));
        }
        table.add_row(row);
    }
    table
}

/// The devices a planned run needs, or why placement skips it.
fn devices_cell(run: &PlannedRun, preview: &Preview) -> String {
    if run.status != RunPlan::Planned {
        return "-".to_owned();
    }
    match preview.run(run.size_bytes) {
        Ok((_, devices)) => devices,
        Err(reason) => format!("skipped: {reason}"),
    }
}

fn files_cell(files: &[String]) -> String {
    let Some(first) = files.first() else { return "-".to_owned() };
    let name = first.rsplit('/').next().unwrap_or(first);
    match files.len() {
        1 => name.to_owned(),
        n => format!("{name} (+{} more)", n - 1),
    }
}

fn plan_cell(run: &PlannedRun) -> String {
    match (run.status, &run.reason) {
        (RunPlan::Planned, None) => "planned".to_owned(),
        (RunPlan::Planned, Some(note)) => format!("planned ({note})"),
        (RunPlan::Skipped, reason) => format!("skip: {}", reason.as_deref().unwrap_or("-")),
    }
}

fn size_source_name(source: SizeSource) -> &'static str {
    match source {
        SizeSource::Files => "files",
        SizeSource::Estimate => "estimate",
        SizeSource::Config => "config",
    }
}

fn write_totals(out: &mut impl Write, plan: &Plan) -> io::Result<()> {
    let planned: Vec<&PlannedRun> = plan.planned().collect();
    let skipped = plan.runs.len() - planned.len();
    let size = saturating_sum(planned.iter().filter_map(|run| run.size_bytes));
    let unknown = planned.iter().filter(|run| run.size_bytes.is_none()).count();
    let download = plan.download_bytes;
    writeln!(out, "Runs:     {} ({} planned, {skipped} skipped)", plan.runs.len(), planned.len())?;
    let unknown_note =
        if unknown > 0 { format!(" ({unknown} of unknown size)") } else { String::new() };
    writeln!(out, "Size:     {} planned{unknown_note}", human_bytes(size))?;
    writeln!(out, "Download: {} at most", human_bytes(download))
}
