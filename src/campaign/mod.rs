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
//! - `--resume` redoes failed runs, except one whose engine ran out of memory
//!   at start-up under the same config file (same hash): it would fail the
//!   same way, so it stays failed, with a note, until the config changes.

mod acquire;
mod board;
mod cleanup;
pub mod compare;
pub mod coordinator;
pub mod create;
mod devon;
mod download_view;
pub mod lock;
pub mod parallel;
pub mod placement;
pub mod progress;
mod pulls;
mod reserve;
pub mod wizard;

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
/// a file name and on a command line: 1–100 letters, digits, `.`, `_` or `-`,
/// starting with a letter or digit.
pub fn valid_campaign_id(id: &str) -> bool {
    (1..=100).contains(&id.len())
        && id.starts_with(|c: char| c.is_ascii_alphanumeric())
        && id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// The command that resumes a campaign, with `--home` when the home is not
/// the default, ready to paste into a shell.
pub fn resume_command(config: &str, id: &str, home: &Path) -> String {
    let home_arg = if home == crate::home::default() {
        String::new()
    } else {
        format!("--home {} ", shell_word(&home.display().to_string()))
    };
    format!(
        "kitt {home_arg}campaign run {} --resume --campaign-id {}",
        shell_word(config),
        shell_word(id)
    )
}

/// A word a POSIX shell reads back as itself.
pub(crate) fn shell_word(word: &str) -> String {
    let plain = !word.is_empty()
        && word.chars().all(|c| c.is_ascii_alphanumeric() || "-_./:=@%+,".contains(c));
    if plain { word.to_owned() } else { format!("'{}'", word.replace('\'', r"'\''")) }
}

/// SHA-256 of the config file's bytes, as hex.
pub fn config_hash(source: &str) -> String {
    Sha256::digest(source.as_bytes()).iter().map(|byte| format!("{byte:02x}")).collect()
}

/// The config as stored with the campaign: the parsed YAML as JSON (itself
/// valid YAML) with the value of every credential key — webhook URLs
/// included, whose paths usually carry a token — replaced by `<redacted>`,
/// however it was written (block, flow, quoted, multi-line).
pub fn config_snapshot(source: &str) -> String {
    match serde_saphyr::from_str::<serde_json::Value>(source) {
        Ok(mut value) => {
            let mut secrets = Vec::new();
            redact(&mut value, &mut secrets);
            // The same values reached elsewhere (a YAML alias) and passwords
            // in URLs go too.
            secrets.retain(|secret| secret.chars().count() >= 3);
            scrub(&mut value, &secrets);
            serde_json::to_string_pretty(&value).unwrap_or_default()
        }
        // The loader accepted the file, so this is not expected; store no
        // text rather than risk a credential.
        Err(error) => format!("# the config could not be parsed for a snapshot: {error}"),
    }
}

/// Replaces the values of credential keys, collecting the strings replaced.
fn redact(value: &mut serde_json::Value, secrets: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, value) in map.iter_mut() {
                if crate::config::is_secret_key(key) {
                    strings(value, secrets);
                    *value = serde_json::Value::String(REDACTED.into());
                } else {
                    redact(value, secrets);
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(|item| redact(item, secrets)),
        _ => {}
    }
}

fn strings(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::String(text) => out.push(text.trim().to_owned()),
        serde_json::Value::Array(items) => items.iter().for_each(|item| strings(item, out)),
        serde_json::Value::Object(map) => map.values().for_each(|item| strings(item, out)),
        _ => {}
    }
}

/// Removes `secrets` and URL passwords from every string (keys included).
fn scrub(value: &mut serde_json::Value, secrets: &[String]) {
    let clean = |text: &str| {
        let mut text = USERINFO.replace_all(text, "://<redacted>@").into_owned();
        for secret in secrets {
            text = text.replace(secret.as_str(), REDACTED);
        }
        text
    };
    match value {
        serde_json::Value::String(text) => *text = clean(text),
        serde_json::Value::Array(items) => items.iter_mut().for_each(|item| scrub(item, secrets)),
        serde_json::Value::Object(map) => {
            let entries: Vec<(String, serde_json::Value)> =
                std::mem::take(map).into_iter().collect();
            for (key, mut item) in entries {
                scrub(&mut item, secrets);
                map.insert(clean(&key), item);
            }
        }
        _ => {}
    }
}

const REDACTED: &str = "<redacted>";

/// The `user:password` of a URL.
static USERINFO: std::sync::LazyLock<regex::Regex> =
    std::sync::LazyLock::new(|| regex::Regex::new(r"://[^/@\s]+@").expect("static regex"));

/// A failure or skip reason on one line for tables, progress and
/// notifications: its first line, and for an engine failure the last line of
/// the engine's log (where the cause usually is) instead of the whole tail.
pub fn brief(reason: &str) -> String {
    let mut lines =
        reason.lines().filter(|line| !line.trim().is_empty() && !line.starts_with(ENGINE_LOG_NOTE));
    let first = lines.next().unwrap_or_default();
    match first.strip_suffix("; last log lines:") {
        Some(head) => match lines.next_back() {
            Some(last) => format!("{head}: {}", last.trim()),
            None => head.to_owned(),
        },
        None => first.to_owned(),
    }
}

/// How a failure reason names the engine's full log.
pub const ENGINE_LOG_NOTE: &str = "engine log: ";

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
    fn briefs_keep_the_cause_from_the_log() {
        let reason = "the engine exited while loading (exit status: 1); last log lines:\n\
                      load: reading\ngguf_init: invalid magic\n\nengine log: /h/logs/x.engine.log";
        assert_eq!(
            brief(reason),
            "the engine exited while loading (exit status: 1): gguf_init: invalid magic"
        );
        assert_eq!(
            brief("not enough disk under /m: needs 1 GiB"),
            "not enough disk under /m: needs 1 GiB"
        );
        assert_eq!(brief(""), "");
    }

    #[test]
    fn resume_commands_name_a_home_that_is_not_the_default_and_quote_paths() {
        let default = crate::home::default();
        assert_eq!(
            resume_command("c.yaml", "x-1", &default),
            "kitt campaign run c.yaml --resume --campaign-id x-1"
        );
        assert_eq!(
            resume_command("my dir/c.yaml", "x-1", Path::new("/tmp/it's")),
            "kitt --home '/tmp/it'\\''s' campaign run 'my dir/c.yaml' --resume --campaign-id x-1"
        );
    }

    #[test]
    fn given_ids_are_checked() {
        assert!(valid_campaign_id("nightly-1.2_b"));
        for bad in ["", ".hidden", "-bar", "a/b", "a b", &"x".repeat(101)] {
            assert!(!valid_campaign_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn snapshots_hide_credentials_however_written() {
        let source = "campaign_name: x\n\
            hf_token: &tok |\n  hf_BLOCK\n\
            devon_api_key:\n  MULTILINE\n\
            \"smtp_password\": QUOTED\n\
            notifications: {webhook_url: \"http://h/T/FLOW\", on_complete: true}\n\
            description: *tok\n\
            devon_url: \"http://user:PASSWORD@h:9/\"\n\
            models:\n  - name: m\n    gguf_repo: o/r\n";
        let snapshot = config_snapshot(source);
        for secret in ["hf_BLOCK", "MULTILINE", "QUOTED", "FLOW", "PASSWORD"] {
            assert!(!snapshot.contains(secret), "{secret} in {snapshot}");
        }
        assert!(
            snapshot.contains("\"on_complete\": true") && snapshot.contains("o/r"),
            "{snapshot}"
        );
        assert_eq!(
            config_hash("a"),
            "ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb"
        );
    }
}
