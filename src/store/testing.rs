//! Fixtures for tests that need a campaign in a store: campaign `c` and one
//! session over the given runs.

use super::{NewCampaign, RunSpec, Session, Store};

/// A run of model `m` and engine `engine` with key `key` and quant `quant`.
pub(crate) fn run<'a>(
    (key, engine, quant): (&'a str, &'a str, &'a str),
    source: &'a str,
    files: &'a [String],
    bytes: u64,
) -> RunSpec<'a> {
    RunSpec {
        key,
        model: "m",
        engine,
        quant,
        suite: "quick",
        source,
        size_bytes: Some(bytes),
        download_bytes: bytes,
        files,
    }
}

/// Creates campaign `c` when it does not exist and begins a session over
/// `runs`; returns the session's id.
pub(crate) fn session(store: &mut Store, runs: &[RunSpec<'_>]) -> i64 {
    let campaign = NewCampaign {
        id: "c",
        name: "c",
        config_path: "/c.yaml",
        config_hash: "0",
        config_yaml: "{}",
        storage_root: "/models",
    };
    store.create_campaign(&campaign).unwrap();
    let session = Session {
        campaign_id: "c",
        config_path: "/c.yaml",
        config_hash: "0",
        config_yaml: "{}",
        storage_root: "/models",
        pid: 1,
        host: "h",
        item_limit: None,
    };
    store.begin_session(&session, runs).unwrap()
}
