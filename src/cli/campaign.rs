//! `kitt campaign` handlers: load, plan, print.

use std::io::Write;
use std::path::Path;

use super::RunArgs;
use crate::acquire::hub::HubClient;
use crate::acquire::local::{
    LocalIndex, free_space, hf_cache_dir, ollama_models_dir, storage_root,
};
use crate::acquire::ollama::OllamaClient;
use crate::config::{self, Campaign};
use crate::error::{Exit, KittError};
use crate::plan::Plan;
use crate::plan::discover::{Sources, discover};
use crate::plan::matrix::{PlanEnv, plan};
use crate::report;

/// `kitt campaign run CONFIG [--dry-run]`.
pub fn run(args: &RunArgs, _home: &Path, json: bool) -> Result<Exit, KittError> {
    let campaign = config::load(&args.config)?;
    for warning in &campaign.warnings {
        eprintln!("warning: {warning}");
    }
    if !args.dry_run {
        return Err(KittError::Usage(
            "executing campaigns is not available yet; add `--dry-run` to see the plan".into(),
        ));
    }
    let plan = plan_campaign(&campaign)?;
    for warning in &plan.warnings {
        eprintln!("warning: {warning}");
    }

    let mut out = std::io::stdout().lock();
    let written = if json {
        report::plan::write_json(&mut out, &plan)
    } else {
        report::plan::write_table(&mut out, &campaign, &plan)
    };
    written.and_then(|()| out.flush()).map_err(KittError::Output)?;
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
