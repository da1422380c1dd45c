//! What users read: tables and JSON.

pub mod campaign;
pub mod compare;
pub mod plan;
pub mod schedule;

/// On a terminal a table wraps its long cells to the terminal's width; off
/// one (pipes, files), or on a terminal too narrow to be real (a pseudo
/// terminal that reports no size), every row stays on one line so the output
/// can be grepped.
pub(crate) fn fit_to_terminal(table: &mut comfy_table::Table) {
    let wide_enough = table.width().is_some_and(|width| width >= 60);
    if table.is_tty() && wide_enough {
        table.set_content_arrangement(comfy_table::ContentArrangement::Dynamic);
    }
}
