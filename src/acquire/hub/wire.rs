//! What kitt reads of the Hub's answers, and the URLs it builds: the
//! repository info and tree entries (JSON), `Link` pagination headers, and
//! safe, percent-encoded repository paths.

use reqwest::Url;
use serde::Deserialize;

use super::HubFile;

/// The parts of `GET /api/models/{repo}` (and `/api/datasets/{repo}`) that kitt reads.
#[derive(Deserialize)]
pub(super) struct RepoInfo {
    pub(super) sha: Option<String>,
    #[serde(default)]
    pub(super) gated: serde_json::Value,
}

/// One entry of a tree listing.
#[derive(Deserialize)]
pub(super) struct TreeEntry {
    #[serde(rename = "type")]
    kind: String,
    path: String,
    #[serde(default)]
    size: u64,
    lfs: Option<LfsInfo>,
}

/// The LFS part of a tree entry.
#[derive(Deserialize)]
struct LfsInfo {
    oid: String,
    size: u64,
}

impl TreeEntry {
    /// The file this entry describes; directories give `None`.
    pub(super) fn into_file(self) -> Option<HubFile> {
        if self.kind != "file" {
            return None;
        }
        let (size, sha256) = match self.lfs {
            Some(lfs) => (lfs.size, Some(lfs.oid)),
            None => (self.size, None),
        };
        Some(HubFile { path: self.path, size, sha256 })
    }
}

/// Whether a listed path is a plain relative path kitt may show and later
/// write: no control characters, no absolute path, no `..`, no backslash.
pub(super) fn is_safe_path(path: &str) -> bool {
    !path.is_empty()
        && !path.starts_with('/')
        && !path.chars().any(|c| c.is_control() || c == '\\')
        && path.split('/').all(|part| !part.is_empty() && part != "." && part != "..")
}

/// Reads the model info's `gated` field: `false`/absent, `true`, `"auto"` or `"manual"`.
pub(super) fn is_gated(value: &serde_json::Value) -> Option<bool> {
    match value {
        serde_json::Value::Null => Some(false),
        serde_json::Value::Bool(gated) => Some(*gated),
        serde_json::Value::String(mode) => match mode.as_str() {
            "auto" | "manual" | "true" => Some(true),
            "false" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

/// The target of the `rel="next"` entry in one `Link` header value.
pub(super) fn next_link_target(header: &str) -> Option<String> {
    header.split(',').find_map(|link| {
        let (target, params) = link.trim().split_once(';')?;
        let is_next = params.split(';').any(|param| {
            let param = param.trim().replace(' ', "");
            param == "rel=\"next\"" || param == "rel=next"
        });
        let target = target.trim().strip_prefix('<')?.strip_suffix('>')?;
        is_next.then(|| target.to_owned())
    })
}

/// Whether two URLs share scheme, host and port.
pub(super) fn same_origin(a: &Url, b: &Url) -> bool {
    a.scheme() == b.scheme()
        && a.host_str() == b.host_str()
        && a.port_or_known_default() == b.port_or_known_default()
}

/// Percent-encodes each segment of a repository-relative path.
pub(super) fn encode_path(path: &str) -> String {
    let mut encoded = String::with_capacity(path.len());
    for byte in path.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~/".contains(&byte) {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsafe_listing_paths_are_refused() {
        assert!(is_safe_path("Q4_K_M/model-Q4_K_M-00001-of-00002.gguf"));
        for bad in [
            "../../etc/x.gguf",
            "/abs/y.gguf",
            "a/./b.gguf",
            "x\u{1b}[31m.gguf",
            "a\nb.gguf",
            "a\\b",
            "",
        ] {
            assert!(!is_safe_path(bad), "{bad:?}");
        }
    }

    #[test]
    fn gated_field_values() {
        assert_eq!(is_gated(&serde_json::json!(false)), Some(false));
        assert_eq!(is_gated(&serde_json::json!(null)), Some(false));
        assert_eq!(is_gated(&serde_json::json!("manual")), Some(true));
        assert_eq!(is_gated(&serde_json::json!("auto")), Some(true));
        assert_eq!(is_gated(&serde_json::json!(3)), None);
    }

    #[test]
    fn link_header_next_target() {
        let header = concat!(
            r#"<https://h.co/api/x?cursor=a>; rel="prev", "#,
            r#"<https://h.co/api/x?cursor=b>; rel="next""#
        );
        assert_eq!(next_link_target(header).as_deref(), Some("https://h.co/api/x?cursor=b"));
        assert_eq!(next_link_target(r#"<https://h.co/a>; rel="prev""#), None);
    }

    #[test]
    fn paths_are_percent_encoded_per_segment() {
        assert_eq!(encode_path("dir/a b#1.gguf"), "dir/a%20b%231.gguf");
    }
}
