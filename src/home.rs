//! The kitt home: `--home`, else `KITT_HOME`, else `~/.kitt`. It holds
//! `kitt.db`, `results/` and `logs/`. A dry run never writes to it.

use std::path::PathBuf;

/// Resolves the kitt home directory from the command-line value (which clap
/// already fills from `KITT_HOME`).
pub fn resolve(cli_value: Option<PathBuf>) -> PathBuf {
    cli_value.unwrap_or_else(default)
}

/// `~/.kitt`.
pub fn default() -> PathBuf {
    std::env::home_dir().unwrap_or_else(|| PathBuf::from(".")).join(".kitt")
}
