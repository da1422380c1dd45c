//! Campaign execution: from a plan to stored results, unattended, resumable.
//!
//! One coordinator ([`coordinator`]) owns the campaign's state: it walks the
//! runs in plan order, re-checks each before it starts, runs it in-process
//! through [`crate::run::execute`], and records every transition in the store
//! as one transaction. The engine and the benchmark only send it phase
//! events. A lock ([`lock`]) lets one process drive a campaign at a time.
//!
//! Decisions where the design brief is silent:
//! - `--resume` without an earlier campaign of that name starts a new one
//!   (and says so), so a scheduled `--resume` works the first time too.
//! - `--campaign-id ID` without `--resume` creates a campaign with that id and
//!   refuses an id that exists (exit 2): state is never overwritten.
//! - A campaign ends `completed` when every run of its current config is a
//!   success or skipped, `failed` when some run failed, and goes back to
//!   `pending` when interrupted.
//! - The reserve (`disk.reserve_gb`) holds for local models too: a run is
//!   skipped when free space under the storage root is below the reserve plus
//!   what the run downloads.

pub mod coordinator;
pub mod lock;
pub mod progress;

use std::path::Path;

use sha2::{Digest, Sha256};

/// A campaign id: the name as a slug (lowercase letters, digits and dashes,
/// at most 40 characters) and the UTC time, e.g. `my-campaign-20261204-190000`.
pub fn new_campaign_id(name: &str, now: jiff::Timestamp) -> String {
    let mut slug = String::new();
    for c in name.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_alphanumeric() {
            slug.push(c);
        } else if !slug.ends_with('-') && !slug.is_empty() {
            slug.push('-');
        }
    }
    let mut slug: String = slug.chars().take(40).collect();
    while slug.ends_with('-') {
        slug.pop();
    }
    if slug.is_empty() {
        slug.push_str("campaign");
    }
    format!("{slug}-{}", now.strftime("%Y%m%d-%H%M%S"))
}

/// Whether an id given with `--campaign-id` is one kitt can store and use in
/// a file name: 1–100 letters, digits, `.`, `_` or `-`, not starting with `.`.
pub fn valid_campaign_id(id: &str) -> bool {
    (1..=100).contains(&id.len())
        && !id.starts_with('.')
        && id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// SHA-256 of the config file's bytes, as hex.
pub fn config_hash(source: &str) -> String {
    Sha256::digest(source.as_bytes()).iter().map(|byte| format!("{byte:02x}")).collect()
}

/// The config text as stored with the campaign: credentials and webhook
/// URLs (whose paths often carry a token) replaced by `<redacted>`.
pub fn config_snapshot(source: &str) -> String {
    crate::config::redact_secrets(source)
}

/// Reads the config file's text for the snapshot and hash.
pub fn read_config_text(path: &Path) -> std::io::Result<String> {
    std::fs::read_to_string(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_slugs_with_the_utc_time() {
        let now: jiff::Timestamp = "2026-12-04T19:00:05Z".parse().expect("time");
        assert_eq!(new_campaign_id("My Campaign", now), "my-campaign-20261204-190005");
        assert_eq!(new_campaign_id("../etc/passwd", now), "etc-passwd-20261204-190005");
        assert_eq!(new_campaign_id("Ünïcode — only", now), "n-code-only-20261204-190005");
        assert_eq!(new_campaign_id("!!!", now), "campaign-20261204-190005");
        let long = "x".repeat(80);
        assert_eq!(new_campaign_id(&long, now).len(), 40 + 16);
    }

    #[test]
    fn given_ids_are_checked() {
        assert!(valid_campaign_id("nightly-1.2_b"));
        for bad in ["", ".hidden", "a/b", "a b", &"x".repeat(101)] {
            assert!(!valid_campaign_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn snapshots_hide_credentials_and_webhooks() {
        let source = "campaign_name: x\nhf_token: hf_abc\nnotifications:\n  webhook_url: https://hooks.example/T/B/secret\n  smtp_password: 'p w'\n  email: a@b.c\n";
        let snapshot = config_snapshot(source);
        assert!(
            !snapshot.contains("hf_abc")
                && !snapshot.contains("secret")
                && !snapshot.contains("p w"),
            "{snapshot}"
        );
        assert!(
            snapshot.contains("email: a@b.c") && snapshot.contains("campaign_name: x"),
            "{snapshot}"
        );
        assert_eq!(
            config_hash("a"),
            "ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb"
        );
    }
}
