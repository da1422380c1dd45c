//! The command line: clap types (no logic) and the dispatch to handlers.

mod campaign;
mod create;
mod datasets;
mod run;
mod schedule;
mod wizard;

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

    /// Run one suite against one model on one engine and store the result.
    ///
    /// kitt starts the engine on a free loopback port (llama_cpp, natively or
    /// with --engine-config mode=docker in its official container image), or
    /// connects to a running OpenAI-compatible server (openai), waits until it
    /// serves the model, runs the suite's benchmarks over streaming HTTP, stops
    /// the engine, and writes the result to the store and to a run directory.
    /// Phases are printed on stderr as the run goes.
    ///
    /// Example: kitt run -m ~/models/tiny.gguf -e llama_cpp -s quick
    Run(RunCmd),

    /// Inspect the engines kitt knows.
    #[command(subcommand)]
    Engines(EnginesCommand),

    /// Download and list the quality benchmarks' datasets.
    #[command(subcommand)]
    Datasets(DatasetsCommand),
}

/// `kitt datasets …`.
#[derive(Debug, Subcommand)]
pub enum DatasetsCommand {
    /// Download benchmark datasets from the Hugging Face Hub.
    ///
    /// Each NAME (mmlu, gsm8k, truthfulqa, hellaswag, or all) is fetched from
    /// its Hub repository ($HF_ENDPOINT, token $HF_TOKEN; HF_HUB_OFFLINE=1 or
    /// KITT_OFFLINE=1 fetch nothing): the Parquet files of the config and
    /// split the benchmark reads, into DIR/<name>/ as laid out on the Hub.
    /// Each file is checked against the size (and, for LFS files such as
    /// Parquet, the SHA-256) the Hub lists before it is kept; files already
    /// there and verified are not fetched again. A
    /// dataset that fails does not stop the others (exit 1 at the end).
    ///
    /// Example: kitt datasets download mmlu hellaswag
    Download(DatasetDownloadArgs),

    /// List every benchmark dataset: its Hub repository, config and split,
    /// and whether it is present in DIR/<name>/.
    List(DatasetListArgs),
}

/// Arguments of `kitt datasets download`.
#[derive(Debug, Args)]
pub struct DatasetDownloadArgs {
    /// Datasets to download: mmlu, gsm8k, truthfulqa, hellaswag, or all.
    #[arg(value_name = "NAME", required = true)]
    pub names: Vec<String>,

    /// Where datasets go, one folder per name [default: <kitt home>/datasets,
    /// where benchmarks look without a `dataset_path`].
    #[arg(long, value_name = "DIR")]
    pub dest: Option<PathBuf>,
}

/// Arguments of `kitt datasets list`.
#[derive(Debug, Args)]
pub struct DatasetListArgs {
    /// Where to look [default: <kitt home>/datasets].
    #[arg(long, value_name = "DIR")]
    pub dest: Option<PathBuf>,
}

/// Arguments of `kitt run`.
#[derive(Debug, Args)]
pub struct RunCmd {
    /// A GGUF file, a directory of GGUF variants, a safetensors checkpoint
    /// directory (vllm, sglang, exllamav2, mlx), or a repository id in local
    /// storage (for `openai`: the served model id).
    #[arg(short, long, value_name = "MODEL")]
    pub model: String,

    /// The engine: llama_cpp, vllm, sglang, exllamav2, mlx or openai.
    #[arg(short, long, value_name = "ENGINE")]
    pub engine: String,

    /// The suite: quick, standard, performance, or a path to a suite YAML.
    #[arg(short, long, default_value = "quick", value_name = "SUITE")]
    pub suite: String,

    /// The variant to run when MODEL holds several (e.g. Q4_K_M).
    #[arg(long, value_name = "QUANT")]
    pub quant: Option<String>,

    /// Engine parameter (binary, context_size, gpu_layers, parallel, threads,
    /// gpu_memory_utilization, tensor_parallel_size, tokenizer, extra_args,
    /// profile, mode=native|docker, image, gpus, base_url, model); repeatable.
    /// A key the engine does not take is an error. vLLM serves a GGUF file
    /// with tokenizer=DIR_OR_REPO.
    #[arg(long = "engine-config", value_name = "KEY=VALUE")]
    pub engine_config: Vec<String>,

    /// Root of the run directory, written as DIR/results/<model>/<engine>/<quant>/<time>/
    /// [default: the kitt home].
    #[arg(short, long, value_name = "DIR")]
    pub output: Option<PathBuf>,

    /// Score only the first N items of each quality benchmark's dataset, for
    /// smoke runs (overrides the benchmark's `limit`).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub limit: Option<u32>,
}

/// `kitt engines …`.
#[derive(Debug, Subcommand)]
pub enum EnginesCommand {
    /// List every engine, the formats it loads, and whether it is usable here.
    List(EngineArgs),
}

/// Arguments of `kitt engines list`.
#[derive(Debug, Args)]
pub struct EngineArgs {}

/// `kitt campaign …`.
#[derive(Debug, Subcommand)]
pub enum CampaignCommand {
    /// Run a campaign: plan it, then execute every run, storing state and
    /// results as it goes.
    ///
    /// kitt expands the campaign's models × engines × quantization variants,
    /// finds each model's files in local storage (`disk.storage_path`, else
    /// $KITT_MODELS_DIR, else ~/models; and the Hugging Face cache) and on the
    /// Hugging Face Hub ($HF_ENDPOINT, $HF_TOKEN; HF_HUB_OFFLINE=1 for local
    /// only) or the Ollama library, and checks each run against the size limit,
    /// the disk reserve and gated access. Then it runs each planned run in
    /// order: download the model's files from the Hub when they are not local
    /// (resumable and verified; KITT_DOWNLOAD_STALL_SECS bounds a silent
    /// connection), start the engine, run the engine's suite, store the
    /// result, stop the engine, and with `disk.cleanup_after_run` delete what
    /// it downloaded once no later run needs it. One run's failure never stops
    /// the campaign. Ctrl-C stops the current run cleanly (a partial download
    /// is kept) and leaves the campaign resumable.
    ///
    /// Example: kitt campaign run configs/campaigns/local.yaml
    #[command(after_help = "Exit codes: 0 every run succeeded or was skipped; 1 some run \
                            failed; 2 invalid config or arguments; 3 environment problem (store, \
                            campaign locked by another process); 130 interrupted (resumable).")]
    Run(RunArgs),

    /// Build a campaign file by answering questions on the terminal.
    ///
    /// The wizard asks for the campaign's name and description; its models
    /// (name, parameter count, and at least one source: safetensors
    /// repository, GGUF repository or Ollama tag), offering the repositories
    /// already under the storage root ($KITT_MODELS_DIR, else ~/models);
    /// the engines, as `kitt engines list` shows them, each with its suite and
    /// formats; the quantization filter, the size limit, the disk settings and
    /// the notifications. Each answer is checked as `campaign run` checks the
    /// file, and asked again with the problem when it is wrong. Then it shows
    /// the YAML, loads it, prints the plan `campaign run --dry-run` would
    /// print, and saves the file (without -o it asks where, default
    /// <campaign_name>.yaml; an existing file is replaced only when you say
    /// so). Ctrl-C or Esc at any point stops it and writes nothing. It needs a
    /// terminal on stdin; without one it refuses (exit 2).
    ///
    /// Example: kitt campaign wizard -o configs/campaigns/nightly.yaml
    #[command(after_help = "Exit codes: 0 saved; 2 stdin is not a terminal; 3 environment \
                            problem (terminal, planning); 130 interrupted (nothing saved).")]
    Wizard(WizardArgs),

    /// Show a campaign's state: status, runs per status, the current run,
    /// failures, ETA, free disk, and bytes downloaded and still to download.
    /// Works while another process runs it.
    ///
    /// Without ID: the newest campaign.
    Status(StatusArgs),

    /// List every campaign, newest first.
    List(ListArgs),

    /// Write a campaign file from what already ran: result directories, or a
    /// stored campaign's failed runs.
    ///
    /// --from-results DIR reads every metrics.json under DIR (kitt's result
    /// directories, and the original Python tool's files) and writes a
    /// campaign that repeats exactly those model × engine × variant × suite
    /// runs: each model gets `quants` naming the engines and variants that
    /// ran, with the sources the results recorded (or, for results that record
    /// none, the repository read from the model's path under a storage root or
    /// the Hugging Face cache, or the Ollama tag). Results whose source cannot
    /// be read are named on stderr and in a comment, never dropped silently.
    ///
    /// --from-campaign ID --failed writes a config that reruns just the
    /// campaign's failed runs; run it with `kitt campaign run FILE --resume
    /// --campaign-id ID`. Credentials are never copied.
    ///
    /// The file is checked as `campaign run` checks it before it is written.
    /// Without -o it goes to stdout.
    ///
    /// Example: kitt campaign create --from-results ~/.kitt/results -o replay.yaml
    ///
    /// Example: kitt campaign create --from-campaign nightly-20261204-020000 --failed -o rerun.yaml
    #[command(after_help = "Exit codes: 0 file written (or no failed run to rerun); 2 nothing \
                            to replay, unknown campaign, or FILE exists without --force; 3 \
                            environment problem (store, writing FILE).")]
    Create(CreateArgs),

    /// Run a campaign file on a cron schedule.
    ///
    /// EXPR has five fields (minute hour day-of-month month day-of-week:
    /// numbers, ranges `1-5`, lists `1,15`, steps `*/15` and `0-30/10`, names
    /// JAN-DEC and SUN-SAT, 0 and 7 both Sunday) or is a macro: @hourly,
    /// @daily (@midnight), @weekly, @monthly, @yearly (@annually). When day of
    /// month and day of week are both restricted, either one matching fires.
    /// Without --cron the file's `schedule` key is used; --cron wins over it.
    ///
    /// The campaign file is checked as `campaign run` checks it, the schedule
    /// is stored under ID (default: the file's name without extension), and
    /// one line for it is installed in your crontab ($KITT_CRONTAB_USER's with
    /// `crontab -u`), marked `# kitt-schedule:ID`; your other lines are kept as
    /// they are. Scheduling an ID again replaces it. The line runs kitt with
    /// absolute paths, this --home, and this shell's PATH and kitt settings
    /// (never secrets such as HF_TOKEN). Each fire runs `kitt campaign run`,
    /// logged under <home>/logs/schedules/ID/; a fire never overlaps another
    /// of the same schedule (it waits), and one that finds the last campaign
    /// unfinished resumes it. Without a `crontab` command the schedule is
    /// stored and `kitt campaign scheduler` fires it.
    ///
    /// Example: kitt campaign schedule configs/campaigns/nightly.yaml --cron "0 2 * * 1-5"
    #[command(after_help = "Exit codes: 0 scheduled; 2 invalid expression, config or id; 3 \
                            environment problem (crontab refused, store).")]
    Schedule(ScheduleArgs),

    /// List the schedules: expression, next fires (local time), last fire
    /// and its campaign, and whether the crontab really has each line.
    ///
    /// The crontab is read now: `present` (kitt's line as installed),
    /// `differs` (changed by hand), `missing`, or `unavailable` (no
    /// `crontab` command; run `kitt campaign scheduler`). A fire whose
    /// process is gone while it was recorded running shows as `lost`.
    ///
    /// Example: kitt --json campaign cron-status
    CronStatus(CronStatusArgs),

    /// Remove a schedule: its store row and its crontab line.
    ///
    /// A fire that is running goes on to its end. An ID that is neither
    /// stored nor in the crontab is an error (exit 2).
    ///
    /// Example: kitt campaign unschedule nightly
    Unschedule(UnscheduleArgs),

    /// Fire the schedules from the foreground, for machines without cron
    /// (a container, a systemd service).
    ///
    /// Each schedule fires at its times exactly as its crontab line would
    /// (same fire, same logs, same overlap rules); schedules added or removed
    /// while it runs are picked up within 30 s. Ctrl-C or SIGTERM stops it:
    /// running fires stop their campaigns cleanly (resumable) and it exits 0.
    ///
    /// Example: kitt campaign scheduler
    Scheduler(SchedulerArgs),

    /// Fire one schedule now (what its crontab line runs).
    #[command(hide = true)]
    Fire(FireArgs),
}

/// Arguments of `kitt campaign schedule`.
#[derive(Debug, Args)]
pub struct ScheduleArgs {
    /// The campaign YAML file.
    #[arg(value_name = "CONFIG")]
    pub config: PathBuf,

    /// The cron expression [default: the file's `schedule` key].
    #[arg(long, value_name = "EXPR")]
    pub cron: Option<String>,

    /// The schedule's id [default: the file's name without extension].
    #[arg(long, value_name = "ID")]
    pub id: Option<String>,
}

/// Arguments of `kitt campaign cron-status`.
#[derive(Debug, Args)]
pub struct CronStatusArgs {}

/// Arguments of `kitt campaign unschedule`.
#[derive(Debug, Args)]
pub struct UnscheduleArgs {
    /// The schedule.
    #[arg(value_name = "ID")]
    pub id: String,
}

/// Arguments of `kitt campaign scheduler`.
#[derive(Debug, Args)]
pub struct SchedulerArgs {}

/// Arguments of `kitt campaign fire`.
#[derive(Debug, Args)]
pub struct FireArgs {
    /// The schedule.
    #[arg(value_name = "ID")]
    pub id: String,

    /// The minute this fire is for (RFC 3339) [default: now].
    #[arg(long, value_name = "TIME")]
    pub due: Option<String>,
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

    /// Continue a campaign: redo pending, failed and interrupted runs,
    /// re-check skipped ones, add runs the config gained; never repeat a
    /// success. Without --campaign-id: the newest campaign of this config's
    /// `campaign_name`.
    #[arg(long, conflicts_with = "dry_run")]
    pub resume: bool,

    /// The campaign to resume (with --resume), or the id to give a new one.
    #[arg(long, value_name = "ID")]
    pub campaign_id: Option<String>,

    /// Smoke run: every quality benchmark of every run scores only the first
    /// N items of its dataset. Results are marked as limited; `--resume`
    /// without --limit (or with another N) redoes limited successes.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub limit: Option<u32>,
}

/// Arguments of `kitt campaign wizard`.
#[derive(Debug, Args)]
pub struct WizardArgs {
    /// Where to save the campaign file [default: asked, offering
    /// <campaign_name>.yaml in the current directory].
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

/// Arguments of `kitt campaign create`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["from_results", "from_campaign"])))]
pub struct CreateArgs {
    /// A directory of results (searched recursively for metrics.json).
    #[arg(long, value_name = "DIR", conflicts_with = "from_campaign")]
    pub from_results: Option<PathBuf>,

    /// A stored campaign (with --failed: rerun its failed runs).
    #[arg(long, value_name = "ID", requires = "failed")]
    pub from_campaign: Option<String>,

    /// With --from-campaign: the campaign's failed runs.
    #[arg(long, requires = "from_campaign")]
    pub failed: bool,

    /// Write the campaign to FILE instead of stdout.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,

    /// Replace FILE when it exists.
    #[arg(long, requires = "output")]
    pub force: bool,
}

/// Arguments of `kitt campaign status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The campaign (default: the newest).
    #[arg(value_name = "ID")]
    pub id: Option<String>,
}

/// Arguments of `kitt campaign list`.
#[derive(Debug, Args)]
pub struct ListArgs {}

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
    crate::engine::process::set_home(&home);
    match cli.command {
        Command::Campaign(CampaignCommand::Run(args)) => campaign::run(&args, &home, cli.json),
        Command::Campaign(CampaignCommand::Wizard(args)) => wizard::wizard(&args),
        Command::Campaign(CampaignCommand::Status(args)) => {
            campaign::status(&args, &home, cli.json)
        }
        Command::Campaign(CampaignCommand::List(args)) => campaign::list(&args, &home, cli.json),
        Command::Campaign(CampaignCommand::Create(args)) => create::create(&args, &home),
        Command::Campaign(CampaignCommand::Schedule(args)) => {
            schedule::schedule(&args, &home, cli.json)
        }
        Command::Campaign(CampaignCommand::CronStatus(_)) => schedule::status(&home, cli.json),
        Command::Campaign(CampaignCommand::Unschedule(args)) => {
            schedule::unschedule(&args, &home, cli.json)
        }
        Command::Campaign(CampaignCommand::Scheduler(_)) => schedule::scheduler(&home),
        Command::Campaign(CampaignCommand::Fire(args)) => schedule::fire(&args, &home),
        Command::Run(args) => run::run(&args, &home, cli.json),
        Command::Engines(EnginesCommand::List(args)) => run::engines_list(&args, cli.json),
        Command::Datasets(DatasetsCommand::Download(args)) => {
            datasets::download(&args, &home, cli.json)
        }
        Command::Datasets(DatasetsCommand::List(args)) => datasets::list(&args, &home, cli.json),
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
