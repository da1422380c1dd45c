//! What users read: tables and JSON.

pub mod campaign;
pub mod plan;
