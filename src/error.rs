//! The one place where failures become exit codes.
//!
//! Every layer has its own typed error; the command handlers convert them into
//! [`KittError`], whose [`KittError::exit_code`] is the documented contract:
//!
//! | code | meaning |
//! |---|---|
//! | 0 | every run succeeded or was skipped |
//! | 1 | the command finished but some run failed |
//! | 2 | invalid input: command line, config file, schedule |
//! | 3 | environment problem: engine binary missing, store locked, permission |
//! | 130 | interrupted by the user |

use std::fmt;
use std::process::ExitCode;

use crate::config::ConfigError;

/// The exit statuses kitt documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Every run succeeded or was skipped.
    Success,
    /// The command finished but some run failed.
    RunsFailed,
    /// Invalid input: command line, config file, schedule.
    InvalidInput,
    /// Environment problem: engine binary missing, store locked, permission.
    Environment,
    /// Interrupted by the user.
    Interrupted,
}

impl Exit {
    /// The numeric process exit status.
    pub fn code(self) -> u8 {
        match self {
            Exit::Success => 0,
            Exit::RunsFailed => 1,
            Exit::InvalidInput => 2,
            Exit::Environment => 3,
            Exit::Interrupted => 130,
        }
    }
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> Self {
        ExitCode::from(exit.code())
    }
}

/// A failure that ends a kitt command.
#[derive(Debug, thiserror::Error)]
pub enum KittError {
    /// The campaign file could not be read or is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A command-line value is invalid in a way clap cannot check.
    #[error("{0}")]
    Usage(String),
    /// Something about this machine prevents the command.
    #[error("{0}")]
    Environment(String),
    /// The run finished without a result (the engine died, failed to load).
    #[error("{0}")]
    RunFailed(String),
    /// The user interrupted the command.
    #[error("interrupted")]
    Interrupted,
    /// Writing output failed (a closed pipe, a full disk).
    #[error("cannot write output")]
    Output(#[source] std::io::Error),
}

impl KittError {
    /// The exit status this failure maps to.
    pub fn exit(&self) -> Exit {
        match self {
            // A reader that stops early (`| head`) is not a failure of kitt.
            KittError::Output(error) if error.kind() == std::io::ErrorKind::BrokenPipe => {
                Exit::Success
            }
            KittError::Config(ConfigError::Read { source, .. })
                if source.kind() == std::io::ErrorKind::PermissionDenied =>
            {
                Exit::Environment
            }
            KittError::Config(_) | KittError::Usage(_) => Exit::InvalidInput,
            KittError::Environment(_) | KittError::Output(_) => Exit::Environment,
            KittError::RunFailed(_) => Exit::RunsFailed,
            KittError::Interrupted => Exit::Interrupted,
        }
    }
}

/// Prints `error: <message>` and each cause on its own line to stderr.
pub fn report(error: &(dyn std::error::Error + 'static)) {
    eprintln!("error: {}", error);
    let mut source = error.source();
    while let Some(cause) = source {
        eprintln!("  caused by: {cause}");
        source = cause.source();
    }
}

/// Displays a list as `` `a`, `b` or `c` ``.
pub struct OneOf<'a>(pub &'a [&'a str]);

impl fmt::Display for OneOf<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, item) in self.0.iter().enumerate() {
            if i > 0 {
                let sep = if i + 1 == self.0.len() { " or " } else { ", " };
                f.write_str(sep)?;
            }
            write!(f, "`{item}`")?;
        }
        Ok(())
    }
}

/// An error and its causes on one line.
pub fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}
