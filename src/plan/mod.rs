//! Planning: turns a validated campaign config and model listings into the
//! ordered list of runs, each planned or skipped with a reason.

pub mod glob;
pub mod quant;
pub mod size;
