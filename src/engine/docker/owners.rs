//! Which containers are kitt's, and which of those may be removed.
//!
//! Every container kitt creates is named `kitt-<campaign>-<run>` (`kitt-run-<run>`
//! outside a campaign) and labelled `kitt.owner=<pid>:<start time>` with the
//! same owner tag its native engines carry ([`process::OWNER_ENV`]), plus
//! `kitt.campaign` and `kitt.run`. kitt removes a container only when it
//! created it in this process, or when its owner label names a kitt of the
//! same kitt home that is no longer running. Containers without the label
//! are never touched.

use std::sync::{Arc, Mutex};

use super::cli::{DockerCli, DockerProgram};
use crate::engine::process;

/// The label naming the kitt process that owns a container.
pub const OWNER_LABEL: &str = "kitt.owner";
/// The label naming the campaign a container's run belongs to.
pub const CAMPAIGN_LABEL: &str = "kitt.campaign";
/// The label naming a container's run.
pub const RUN_LABEL: &str = "kitt.run";

/// The container name of a run: `kitt-<campaign>-<run>`, or `kitt-run-<run>`.
/// Characters Docker does not allow in names become `-`.
pub fn container_name(campaign: Option<&str>, run_id: &str) -> String {
    let name = format!("kitt-{}-{run_id}", campaign.unwrap_or("run"));
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') { c } else { '-' })
        .collect()
}

/// The labels of a run's container.
pub fn labels(campaign: Option<&str>, run_id: &str) -> Vec<(String, String)> {
    let mut labels = vec![(OWNER_LABEL.to_owned(), process::owner_tag())];
    if let Some(campaign) = campaign {
        labels.push((CAMPAIGN_LABEL.to_owned(), campaign.to_owned()));
    }
    labels.push((RUN_LABEL.to_owned(), run_id.to_owned()));
    labels
}

/// Containers this process has created (or is creating) and not yet removed.
type Live = Vec<(Arc<dyn DockerCli>, String)>;
static LIVE: Mutex<Live> = Mutex::new(Vec::new());

/// Records that this process is creating container `name`.
pub fn register(docker: &Arc<dyn DockerCli>, name: &str) {
    if let Ok(mut live) = LIVE.lock() {
        live.push((Arc::clone(docker), name.to_owned()));
    }
}

/// Records that container `name` is gone.
pub fn unregister(name: &str) {
    if let Ok(mut live) = LIVE.lock() {
        live.retain(|(_, known)| known != name);
    }
}

/// Removes every container this process created, blocking; for immediate exits.
pub fn remove_own_containers() {
    let live = LIVE.lock().map(|mut live| std::mem::take(&mut *live)).unwrap_or_default();
    for (docker, name) in live {
        if let Err(error) = docker.remove_blocking(std::slice::from_ref(&name)) {
            eprintln!("warning: cannot remove container {name}: {error}");
        }
    }
}

/// Removes containers whose owner label names a kitt that is no longer
/// running; returns their names. Without a `docker` program, or when the
/// daemon does not answer, there is nothing kitt could remove: that is
/// logged, not an error.
pub fn reap_orphan_containers() -> Vec<String> {
    let Ok(docker) = DockerProgram::find() else { return Vec::new() };
    match reap_with(&docker) {
        Ok(reaped) => reaped,
        Err(error) => {
            tracing::debug!("not looking for orphaned containers: {error}");
            Vec::new()
        }
    }
}

fn reap_with(docker: &dyn DockerCli) -> Result<Vec<String>, super::DockerError> {
    let orphans: Vec<String> = docker
        .labelled(OWNER_LABEL)?
        .into_iter()
        .filter(|container| {
            process::same_home(&container.value) && !process::owner_is_alive(&container.value)
        })
        .map(|container| container.name)
        .collect();
    docker.remove_blocking(&orphans)?;
    Ok(orphans)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_campaign_and_run() {
        assert_eq!(
            container_name(Some("bench-20260101-120000"), "ab12"),
            "kitt-bench-20260101-120000-ab12"
        );
        assert_eq!(container_name(None, "ab12"), "kitt-run-ab12");
        assert_eq!(container_name(Some("a b/c"), "1"), "kitt-a-b-c-1");
    }

    #[test]
    fn labels_carry_this_process_as_owner() {
        let labels = labels(Some("c"), "r");
        assert_eq!(labels[0], (OWNER_LABEL.to_owned(), process::owner_tag()));
        assert!(process::owner_is_alive(&labels[0].1));
        assert_eq!(
            labels[1..],
            [("kitt.campaign".into(), "c".into()), ("kitt.run".into(), "r".into())]
        );
    }
}
