//! What users read: tables and JSON.

pub mod plan;
