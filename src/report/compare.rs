//! `auto_compare`'s comparison as users read it: a table after the campaign
//! summary, a few lines in `campaign status`, JSON, and the regression
//! notification's text.

use std::fmt::Write as _;
use std::io::{self, Write};

use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{CellAlignment, Table};
use serde_json::{Value, json};

use crate::notify::Message;
use crate::results::compare::{Compared, Comparison, MetricChange, Verdict};

/// Regressions a notification lists before "… and N more".
const NOTIFIED: usize = 20;

/// Changed metrics `campaign status` lists before "… and N more".
const STATUS_SHOWN: usize = 10;

/// One line: what was compared with what, and how it came out.
pub fn headline(comparison: &Comparison) -> String {
    let thresholds = comparison.thresholds;
    let finished = comparison
        .baseline_finished_at
        .as_deref()
        .map(|at| format!(", finished {}", short_time(at)))
        .unwrap_or_default();
    format!(
        "Compared with campaign {}{finished}: {} run(s) compared, {} regression(s), {} \
         improvement(s) (thresholds: throughput {} %, latency {} %)",
        comparison.baseline_id,
        comparison.compared_runs,
        comparison.regression_count(),
        comparison.improvements().count(),
        thresholds.throughput_pct,
        thresholds.latency_pct,
    )
}

/// The comparison after a campaign's summary: the headline, a table of the
/// regressions and improvements, then the runs that failed now, the runs
/// without a baseline and the notes.
pub fn write_text(out: &mut impl Write, compared: &Compared) -> io::Result<()> {
    let comparison = match compared {
        Compared::NoBaseline { name } => {
            return writeln!(
                out,
                "auto_compare: no earlier finished campaign named `{name}` to compare with; \
                 this one is the baseline for the next"
            );
        }
        Compared::Done(comparison) => comparison,
    };
    writeln!(out, "{}", headline(comparison))?;
    let changed: Vec<&MetricChange> =
        comparison.changes.iter().filter(|change| change.verdict != Verdict::Unchanged).collect();
    if !changed.is_empty() {
        writeln!(out, "{}", table(&changed))?;
    }
    for key in &comparison.failed_now {
        writeln!(out, "regression {key}: failed now, succeeded in the baseline")?;
    }
    for lost in &comparison.not_measured_now {
        writeln!(out, "not measured {}: {} (succeeded in the baseline)", lost.run_key, lost.note)?;
    }
    if !comparison.not_in_baseline.is_empty() {
        writeln!(
            out,
            "No earlier success to compare with: {}",
            comparison.not_in_baseline.join(", ")
        )?;
    }
    for note in &comparison.notes {
        writeln!(out, "note {}: {}", note.run_key, note.note)?;
    }
    Ok(())
}

/// The lines `campaign status` shows for a stored comparison.
pub fn write_status(out: &mut impl Write, compared: &Compared) -> io::Result<()> {
    let comparison = match compared {
        Compared::NoBaseline { name } => {
            return writeln!(
                out,
                "Compare:  nothing to compare with (no earlier finished campaign named `{name}`)"
            );
        }
        Compared::Done(comparison) => comparison,
    };
    writeln!(out, "Compare:  {}", headline(comparison))?;
    let mut lines: Vec<String> = comparison
        .changes
        .iter()
        .filter(|change| change.verdict != Verdict::Unchanged)
        .map(line)
        .collect();
    lines.extend(
        comparison
            .failed_now
            .iter()
            .map(|key| format!("{key}: failed now, succeeded in the baseline (regression)")),
    );
    lines.extend(comparison.not_measured_now.iter().map(|lost| {
        format!("{}: not measured: {} (succeeded in the baseline)", lost.run_key, lost.note)
    }));
    if !comparison.not_in_baseline.is_empty() {
        lines.push(format!(
            "no earlier success to compare with: {}",
            comparison.not_in_baseline.join(", ")
        ));
    }
    lines.extend(
        comparison.notes.iter().map(|note| format!("note {}: {}", note.run_key, note.note)),
    );
    for text in lines.iter().take(STATUS_SHOWN) {
        writeln!(out, "  {text}")?;
    }
    if lines.len() > STATUS_SHOWN {
        writeln!(out, "  … and {} more (--json lists all)", lines.len() - STATUS_SHOWN)?;
    }
    Ok(())
}

/// Serializes a stored comparison as [`to_json`] does.
pub fn serialize_compared<S: serde::Serializer>(
    compared: &Option<Compared>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serde::Serialize::serialize(&compared.as_ref().map(to_json), serializer)
}

/// The comparison as JSON; `null` baseline when there was none.
pub fn to_json(compared: &Compared) -> Value {
    match compared {
        Compared::NoBaseline { name } => json!({
            "baseline_id": null,
            "note": format!("no earlier finished campaign named `{name}`"),
        }),
        Compared::Done(comparison) => {
            let mut value = serde_json::to_value(comparison).unwrap_or(Value::Null);
            if let Value::Object(map) = &mut value {
                map.insert("regressions".into(), json!(comparison.regression_count()));
                map.insert("improvements".into(), json!(comparison.improvements().count()));
            }
            value
        }
    }
}

/// The notification sent when `notify_on` asks for regressions.
pub fn regression_message(campaign_name: &str, comparison: &Comparison) -> Message {
    let count = comparison.regression_count();
    let title = format!("kitt: {count} regression(s) in campaign {campaign_name}");
    let mut body = format!(
        "Campaign {} ({campaign_name})\n{}\n",
        comparison.campaign_id,
        headline(comparison)
    );
    let lines = comparison
        .regressions()
        .map(line)
        .chain(
            comparison
                .failed_now
                .iter()
                .map(|key| format!("{key}: failed now, succeeded in the baseline")),
        )
        .collect::<Vec<_>>();
    for text in lines.iter().take(NOTIFIED) {
        let _ = writeln!(body, "- {text}");
    }
    if lines.len() > NOTIFIED {
        let _ = writeln!(body, "… and {} more", lines.len() - NOTIFIED);
    }
    Message::new(title, body)
}

/// `key benchmark.metric: 120.0 → 60.0 (-50.0 %, regression)`.
fn line(change: &MetricChange) -> String {
    format!(
        "{} {}.{}: {} → {} ({:+.1} %, {})",
        change.run_key,
        change.benchmark,
        change.metric,
        number(change.baseline),
        number(change.current),
        change.change_pct,
        change.verdict.as_str()
    )
}

fn table(changes: &[&MetricChange]) -> Table {
    let mut table = Table::new();
    table.load_style(UTF8_FULL_CONDENSED);
    super::fit_to_terminal(&mut table);
    table.set_header(["run", "metric", "baseline", "now", "change", "verdict"]);
    for change in changes {
        table.add_row(vec![
            change.run_key.clone(),
            format!("{}.{}", change.benchmark, change.metric),
            number(change.baseline),
            number(change.current),
            format!("{:+.1} %", change.change_pct),
            change.verdict.as_str().to_owned(),
        ]);
    }
    for column in 2..=4 {
        if let Some(column) = table.column_mut(column) {
            column.set_cell_alignment(CellAlignment::Right);
        }
    }
    table
}

/// An RFC 3339 time to the second, `2026-12-04 02:03:10 UTC`; other text as it is.
fn short_time(text: &str) -> String {
    text.parse::<jiff::Timestamp>()
        .map(|at| at.strftime("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|_| text.to_owned())
}

/// Three significant decimals for small numbers, one for large ones.
fn number(value: f64) -> String {
    if value.abs() >= 100.0 { format!("{value:.1}") } else { format!("{value:.3}") }
}
