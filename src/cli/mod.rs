//! The command line: clap types (no logic) and the dispatch to handlers.

mod campaign;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::error::{Exit, KittError, report};

/// Benchmark LLM inference engines through campaigns.
///
/// A campaign is a YAML matrix of models × engines × quantization variants.
/// kitt plans it, fetches each model, starts the engine, measures it over
/// HTTP, and stores every measurement.
///
/// Exit codes: 0 every run succeeded or was skipped; 1 some run failed;
/// 2 invalid input (command line, config); 3 environment problem;
/// 130 interrupted.
#[derive(Debug, Parser)]
#[command(name = "kitt", version, max_term_width = 100)]
pub struct Cli {
    /// Directory for kitt's store, results and logs.
    #[arg(long, global = true, env = "KITT_HOME", hide_env_values = true, value_name = "DIR")]
    pub home: Option<PathBuf>,

    /// Print machine-readable JSON on stdout instead of tables.
    #[arg(long, global = true)]
    pub json: bool,

    #[command(subcommand)]
    pub command: Command,
}

/// kitt's commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Plan and run benchmark campaigns.
    #[command(subcommand)]
    Campaign(CampaignCommand),
}

/// `kitt campaign …`.
#[derive(Debug, Subcommand)]
pub enum CampaignCommand {
    /// Plan a campaign and show every run it means.
    ///
    /// kitt expands the campaign's models × engines × quantization variants,
    /// finds each model's files in local storage (`disk.storage_path`, else
    /// $KITT_MODELS_DIR, else ~/models; and the Hugging Face cache) and on the
    /// Hugging Face Hub ($HF_ENDPOINT, $HF_TOKEN; HF_HUB_OFFLINE=1 for local
    /// only) or the Ollama library, and checks each run against the size limit,
    /// the disk reserve and gated access.
    ///
    /// Example: kitt campaign run configs/campaigns/example.yaml --dry-run
    #[command(after_help = "Executing campaigns (without --dry-run) is not available yet.")]
    Run(RunArgs),
}

/// Arguments of `kitt campaign run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The campaign YAML file.
    #[arg(value_name = "CONFIG")]
    pub config: PathBuf,

    /// Show the planned runs without executing anything: nothing is
    /// downloaded and nothing is written to the store.
    #[arg(long)]
    pub dry_run: bool,
}

/// Parses the command line, runs the command, and returns the exit status.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let usage_error = error.use_stderr();
            // clap prints help and version on stdout and usage errors on stderr.
            let _ = error.print();
            return if usage_error { Exit::InvalidInput.into() } else { Exit::Success.into() };
        }
    };
    init_logging();
    match dispatch(cli) {
        Ok(exit) => exit.into(),
        Err(error) => {
            let exit = error.exit();
            if exit != Exit::Success {
                report(&error);
            }
            exit.into()
        }
    }
}

fn dispatch(cli: Cli) -> Result<Exit, KittError> {
    let home = crate::home::resolve(cli.home);
    match cli.command {
        Command::Campaign(CampaignCommand::Run(args)) => campaign::run(&args, &home, cli.json),
    }
}

/// Logs go to stderr, filtered by `KITT_LOG` (default `warn`).
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("KITT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}
