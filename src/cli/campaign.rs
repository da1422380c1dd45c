//! `kitt campaign` handlers: run (plan, then execute or print the plan),
//! status and list.

use std::io::Write;
use std::path::Path;

use super::{ListArgs, RunArgs, StatusArgs};
use crate::acquire::hub::HubClient;
use crate::acquire::local::{
    LocalIndex, free_space, hf_cache_dir, ollama_models_dir, storage_root,
};
use crate::acquire::ollama::OllamaClient;
use crate::campaign::coordinator::{Options, drive};
use crate::campaign::placement::Preview;
use crate::config::{self, Campaign};
use crate::error::{Exit, KittError, with_causes};
use crate::plan::Plan;
use crate::plan::RunPlan;
use crate::plan::discover::{Sources, discover};
use crate::plan::matrix::{PlanEnv, plan};
use crate::report;
use crate::run::signals::block_on_interruptible;
use crate::store::Store;

/// `kitt campaign run CONFIG [--dry-run] [--resume] [--campaign-id ID]`.
pub fn run(args: &RunArgs, home: &Path, json: bool) -> Result<Exit, KittError> {
    let campaign = config::load(&args.config)?;
    for warning in &campaign.warnings {
        eprintln!("warning: {warning}");
    }
    // Read once more for the stored snapshot and hash; the loader has just
    // read the same bytes.
    let config_text = crate::campaign::read_config_text(&args.config).map_err(|source| {
        KittError::Config(config::ConfigError::Read { path: args.config.clone(), source })
    })?;
    let mut plan = plan_campaign(&campaign)?;
    for warning in &plan.warnings {
        eprintln!("warning: {warning}");
    }
    if args.dry_run {
        // What the run would place its runs on, asked of the machine now.
        let preview = campaign.parallel.then(|| {
            let inventory = crate::hardware::inventory::inventory();
            Preview::new(&inventory, campaign.max_parallel)
        });
        // A run the machine cannot hold is skipped by the real run: the
        // dry run counts it so (totals, download) and says why.
        if let Some(preview) = &preview {
            for run in plan.runs.iter_mut().filter(|run| run.status == RunPlan::Planned) {
                if let Err(reason) = preview.run(run.size_bytes) {
                    run.status = RunPlan::Skipped;
                    run.reason = Some(reason);
                }
            }
        }
        let mut out = std::io::stdout().lock();
        let written = if json {
            report::plan::write_json(&mut out, &plan, preview.as_ref())
        } else {
            report::plan::write_table(&mut out, &campaign, &plan, preview.as_ref())
        };
        written.and_then(|()| out.flush()).map_err(KittError::Output)?;
        return Ok(Exit::Success);
    }

    let options = Options {
        campaign: &campaign,
        plan: &plan,
        config_text: &config_text,
        home,
        resume: args.resume,
        campaign_id: args.campaign_id.as_deref(),
        json,
        limit: args.limit,
    };
    // The summary is printed before waiting for notifications, so a slow
    // webhook or relay never holds it back.
    let outcome = block_on_interruptible(|cancel| async move {
        let mut outcome = drive(&options, &cancel).await?;
        print_summary(&outcome, json)?;
        for sending in std::mem::take(&mut outcome.notifications) {
            let _ = sending.await;
        }
        Ok::<_, KittError>(outcome)
    })??;
    if outcome.interrupted {
        let resume = crate::campaign::resume_command(
            &args.config.display().to_string(),
            &outcome.campaign_id,
            home,
        );
        eprintln!("campaign {} interrupted; resume it with: {resume}", outcome.campaign_id);
        return Err(KittError::Interrupted);
    }
    Ok(if outcome.counts.failed > 0 { Exit::RunsFailed } else { Exit::Success })
}

/// The end-of-campaign summary on stdout.
fn print_summary(
    outcome: &crate::campaign::coordinator::Outcome,
    json: bool,
) -> Result<(), KittError> {
    let mut out = std::io::stdout().lock();
    let written = if json {
        report::campaign::write_summary_json(&mut out, outcome)
    } else {
        report::campaign::write_summary(&mut out, outcome)
    };
    written.and_then(|()| out.flush()).map_err(KittError::Output)
}

/// `kitt campaign status [ID]`.
pub fn status(args: &StatusArgs, home: &Path, json: bool) -> Result<Exit, KittError> {
    let view = match open_existing(home)? {
        Some(store) => report::campaign::status_view(&store, home, args.id.as_deref(), json)
            .map_err(|error| KittError::Environment(with_causes(&error)))?,
        None => None,
    };
    match (view, &args.id) {
        (Some(view), _) => write_out(|out| {
            if json {
                serde_json::to_writer_pretty(&mut *out, &view)?;
                writeln!(out)
            } else {
                report::campaign::write_status(out, &view, home)
            }
        }),
        (None, Some(id)) => Err(unknown_campaign(id)),
        (None, None) => {
            write_out(
                |out| {
                    if json { writeln!(out, "null") } else { writeln!(out, "No campaigns yet.") }
                },
            )
        }
    }
}

/// `kitt campaign list`.
pub fn list(_args: &ListArgs, home: &Path, json: bool) -> Result<Exit, KittError> {
    let campaigns = match open_existing(home)? {
        Some(store) => {
            store.campaigns().map_err(|error| KittError::Environment(with_causes(&error)))?
        }
        None => Vec::new(),
    };
    write_out(|out| {
        if json {
            report::campaign::write_list_json(out, home, &campaigns)
        } else {
            report::campaign::write_list(out, home, &campaigns)
        }
    })
}

/// The store for reading, when one with campaign state exists: reading
/// commands never create, migrate or write it.
pub(super) fn open_existing(home: &Path) -> Result<Option<Store>, KittError> {
    let store =
        Store::open_read_only(home).map_err(|error| KittError::Environment(with_causes(&error)))?;
    let Some(store) = store else { return Ok(None) };
    let version = store.schema_version().map_err(|e| KittError::Environment(with_causes(&e)))?;
    Ok((version >= crate::store::CAMPAIGN_STATE_VERSION).then_some(store))
}

fn unknown_campaign(id: &str) -> KittError {
    KittError::Usage(format!("no campaign `{id}`; `kitt campaign list` shows the campaigns"))
}

fn write_out(
    write: impl FnOnce(&mut std::io::StdoutLock<'static>) -> std::io::Result<()>,
) -> Result<Exit, KittError> {
    let mut out = std::io::stdout().lock();
    write(&mut out).and_then(|()| out.flush()).map_err(KittError::Output)?;
    Ok(Exit::Success)
}

/// Discovers every source of the campaign and builds its plan.
pub fn plan_campaign(campaign: &Campaign) -> Result<Plan, KittError> {
    let (root, _) = storage_root(campaign.disk.storage_path.as_deref());
    let token = campaign.hf_token.as_ref().map(|token| token.expose().to_owned());
    let hub =
        HubClient::from_env(token).map_err(|error| KittError::Environment(error.to_string()))?;
    let ollama =
        OllamaClient::from_env().map_err(|error| KittError::Environment(error.to_string()))?;
    let sources = Sources { local: LocalIndex::new(root.clone(), hf_cache_dir()), hub, ollama };

    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|error| {
            KittError::Environment(format!("cannot start the async runtime: {error}"))
        })?;
    let discovery = runtime.block_on(discover(campaign, &sources));

    let root_warning = root_problem(&root);
    let env = PlanEnv {
        storage_root: root,
        ollama_dir: ollama_models_dir(),
        free_space: Box::new(free_space),
        has_ollama_tag: Box::new(crate::engine::ollama::store::has_tag),
    };
    let mut plan = plan(campaign, &discovery, &env);
    plan.warnings.extend(root_warning);
    Ok(plan)
}

/// A warning when the storage root exists but cannot be used.
fn root_problem(root: &std::path::Path) -> Option<String> {
    if !root.exists() {
        return None;
    }
    if !root.is_dir() {
        return Some(format!("the storage root {} is not a directory", root.display()));
    }
    std::fs::read_dir(root)
        .err()
        .map(|error| format!("cannot read the storage root {}: {error}", root.display()))
}
