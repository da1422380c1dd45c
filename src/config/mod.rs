//! Campaign files: raw YAML types, loading with located errors, and the
//! validated [`Campaign`] every later stage reads.
//!
//! Keys the original tool's documentation used but its code dropped are given
//! a meaning here rather than ignored: `schedule` (the cron expression this file
//! runs on, same as `kitt campaign schedule --cron`), `auto_compare` (compare a
//! finished campaign with the previous finished campaign of the same name, run
//! key by run key, with `regression_thresholds`), an engine's own
//! `quant_filter` (a pattern, a list, or a skip/include mapping applied after the
//! top-level filter), and `notifications.notify_on` (the events to send, instead
//! of `on_complete`/`on_failure`). `matching_rules` is rejected with guidance.
//! A model's own `quants` (engine name → exact variant labels) is kitt's
//! addition: it makes a model run only on those engines and variants, which
//! is how `kitt campaign create` writes a file that replays exactly what ran.

mod campaign;
mod error;
mod raw;
mod secret;
mod suggest;
mod validate;
mod validate_engine;
mod validate_quants;
mod validate_settings;

use std::path::Path;

pub use campaign::*;
pub use error::{ConfigError, Problem, is_secret_key};
pub use secret::{Secret, SecretOrigin};
pub use suggest::did_you_mean;
pub use validate::{SUITES, expand_home, is_ollama_tag};

/// Reads, parses and validates a campaign file.
pub fn load(path: &Path) -> Result<Campaign, ConfigError> {
    let source = std::fs::read_to_string(path)
        .map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
    parse(&source, path)
}

/// Parses and validates campaign YAML; `path` is used in messages.
pub fn parse(source: &str, path: &Path) -> Result<Campaign, ConfigError> {
    let invalid = |problems| ConfigError::Invalid { path: path.to_owned(), problems };
    let raw = parse_raw(source).map_err(|problem| invalid(vec![problem]))?;
    validate::validate(raw, path, source).map_err(invalid)
}

fn parse_raw(source: &str) -> Result<raw::RawCampaign, Problem> {
    let mut failed_at = None;
    let parsed = serde_saphyr::with_deserializer_from_str(source, |deserializer| {
        serde_path_to_error::deserialize(deserializer).map_err(|error| {
            failed_at = Some(error.path().to_string());
            error.into_inner()
        })
    });
    parsed.map_err(|error| error::problem_from_yaml(&error, failed_at, source))
}
