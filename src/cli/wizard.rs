//! `kitt campaign wizard [-o FILE]`: ask, show, check, plan, save.
//!
//! The answers come from [`crate::campaign::wizard`]; this handler shows the
//! YAML, loads it with the loader `campaign run` uses, plans it with
//! [`super::campaign::plan_campaign`] and prints the plan table `--dry-run`
//! prints, then saves the file. Nothing is written before the file itself,
//! which goes through a temporary file in its directory renamed into place.

use std::fs::File;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use super::WizardArgs;
use crate::acquire::local::{LocalIndex, hf_cache_dir, storage_root};
use crate::campaign::wizard::{self, EngineChoice, Offer, Stopped};
use crate::config::Campaign;
use crate::error::{Exit, KittError};
use crate::plan::Plan;
use crate::report;

/// `kitt campaign wizard [-o FILE]`.
pub fn wizard(args: &WizardArgs) -> Result<Exit, KittError> {
    if !std::io::stdin().is_terminal() {
        return Err(KittError::Usage(
            "`kitt campaign wizard` asks its questions on a terminal, and stdin is not one; \
             write the campaign YAML by hand instead, starting from \
             configs/campaigns/example.yaml, and check it with `kitt campaign run FILE --dry-run`"
                .into(),
        ));
    }
    let offer = offer();

    let (text, campaign) = loop {
        let draft = wizard::ask(&offer).map_err(stopped)?;
        let text = draft.to_yaml().map_err(KittError::Environment)?;
        println!("\n--- campaign file ---\n{text}---");
        let path = args.output.clone().unwrap_or_else(|| default_path(&draft.campaign_name));
        match draft.load(&path) {
            Ok(loaded) => break loaded,
            // The wizard only writes what the loader accepted answer by
            // answer, so this is a bug; never save such a file.
            Err(error) => {
                eprintln!("error: the generated file does not load:\n{error}");
                eprintln!("Starting the questions again.");
            }
        }
    };
    for warning in &campaign.warnings {
        eprintln!("warning: {warning}");
    }

    let plan = plan_interruptible(&campaign)?;
    show_plan(&campaign, &plan)?;

    let path = save(args.output.as_deref(), &campaign.name, &text)?;
    println!("Saved {}. Run it with: kitt campaign run {}", path.display(), path.display());
    Ok(Exit::Success)
}

/// The local models and the engines, as `kitt engines list` sees them.
fn offer() -> Offer {
    let (root, _) = storage_root(None);
    let local = LocalIndex::new(root.clone(), hf_cache_dir()).stored_repos();
    let engines = super::run::engine_availability()
        .into_iter()
        .map(|(kind, usable, detail)| EngineChoice { kind, usable, detail })
        .collect();
    Offer { storage_root: root, local, engines }
}

fn stopped(stop: Stopped) -> KittError {
    match stop {
        Stopped::Interrupted => {
            eprintln!("wizard stopped; nothing was saved");
            KittError::Interrupted
        }
        Stopped::Terminal(message) => KittError::Environment(message),
    }
}

/// `<campaign_name>.yaml` in the current directory.
fn default_path(name: &str) -> PathBuf {
    let stem: String = name
        .chars()
        .map(|c| if c.is_alphanumeric() || "-_.".contains(c) { c } else { '-' })
        .collect();
    PathBuf::from(format!("{}.yaml", stem.trim_matches('.')))
}

/// Plans the campaign as `campaign run --dry-run` does, while Ctrl-C ends
/// the wizard (the planning thread is abandoned: it writes nothing).
fn plan_interruptible(campaign: &Campaign) -> Result<Plan, KittError> {
    use tokio::signal::unix::{SignalKind, signal};

    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|error| {
            KittError::Environment(format!("cannot start the async runtime: {error}"))
        })?;
    // Outside the prompts the terminal sends Ctrl-C as SIGINT: catch it from
    // before planning starts, so it always ends the wizard with exit 130.
    let mut interrupt = {
        let _entered = runtime.enter();
        signal(SignalKind::interrupt())
            .map_err(|error| KittError::Environment(format!("cannot watch for Ctrl-C: {error}")))?
    };
    eprintln!("\nPlanning (as `kitt campaign run --dry-run` would)...");
    let (sender, receiver) = tokio::sync::oneshot::channel();
    let owned = campaign.clone();
    std::thread::spawn(move || {
        let _ = sender.send(super::campaign::plan_campaign(&owned));
    });
    runtime.block_on(async {
        tokio::select! {
            planned = receiver => planned.unwrap_or_else(|_| {
                Err(KittError::Environment("planning stopped unexpectedly".into()))
            }),
            _ = interrupt.recv() => Err(stopped(Stopped::Interrupted)),
        }
    })
}

fn show_plan(campaign: &Campaign, plan: &Plan) -> Result<(), KittError> {
    for warning in &plan.warnings {
        eprintln!("warning: {warning}");
    }
    let mut out = std::io::stdout().lock();
    report::plan::write_table(&mut out, campaign, plan, None)
        .and_then(|()| out.flush())
        .map_err(KittError::Output)?;
    if plan.planned().next().is_none() {
        eprintln!(
            "warning: nothing would run; the table says why (save anyway and edit, or stop \
             with Ctrl-C)"
        );
    }
    Ok(())
}

/// Asks where to save (unless `-o` said), asks before overwriting, and
/// writes the file atomically; a path that cannot be written is asked again.
fn save(output: Option<&Path>, name: &str, text: &str) -> Result<PathBuf, KittError> {
    let mut given = output.map(Path::to_owned);
    loop {
        let path = match given.take() {
            Some(path) => path,
            None => {
                let default = default_path(name).display().to_string();
                wizard::ask_save_path(&default).map_err(stopped)?
            }
        };
        if path.exists() {
            let question = format!("{} exists. Overwrite it?", path.display());
            if !wizard::confirm(&question, false).map_err(stopped)? {
                continue;
            }
        }
        match write_atomic(&path, text) {
            Ok(()) => return Ok(path),
            Err(error) => eprintln!("error: cannot write {}: {error}", path.display()),
        }
    }
}

/// Writes `text` to `path` through a new temporary file beside it, renamed
/// into place; the temporary file is removed when anything fails.
fn write_atomic(path: &Path, text: &str) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
        _ => PathBuf::from("."),
    };
    let file_name = path.file_name().ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "the path names no file")
    })?;
    let temp =
        dir.join(format!(".{}.wizard-{}.tmp", file_name.to_string_lossy(), std::process::id()));
    let written = File::create_new(&temp).and_then(|mut file| {
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&temp, path)
    });
    if written.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_path_is_the_name_made_safe() {
        assert_eq!(default_path("my-campaign"), PathBuf::from("my-campaign.yaml"));
        assert_eq!(default_path("a/b c"), PathBuf::from("a-b-c.yaml"));
    }

    #[test]
    fn atomic_write_leaves_only_the_target() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.yaml");
        write_atomic(&path, "campaign_name: x\n").unwrap();
        write_atomic(&path, "campaign_name: y\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "campaign_name: y\n");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().flatten().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn atomic_write_into_a_missing_directory_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing/c.yaml");
        assert!(write_atomic(&path, "x").is_err());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
