//! Discovery: what files and tags each source of a campaign has.
//!
//! Local copies are looked up first. When the Hub is online, its listing is the
//! full set of a repository's variants and local copies mark which need no
//! download; when the Hub cannot be reached (or `HF_HUB_OFFLINE=1`), what is
//! local is all there is, with a warning naming the source. Ollama tags that
//! name a size (`llama3.1:8b`) expand to that size's quantization tags; a tag
//! that already names a quantization, `latest`, or no tag is taken as written.
//! Nothing here fails: every problem becomes a reason or a warning.

use std::collections::{BTreeSet, HashMap};

use futures_util::StreamExt;
use futures_util::stream;

use super::quant::{QuantLabel, quant_from_file_name};
use super::variants::SizedFile;
use crate::acquire::hub::{Gate, HubClient, HubError};
use crate::acquire::local::{LocalIndex, LocalOrigin, LocalRepo};
use crate::acquire::ollama::{OllamaClient, OllamaError, split_tag};
use crate::config::Campaign;
use crate::engine::Format;

/// How many listings are fetched at once.
const CONCURRENT_LOOKUPS: usize = 8;

/// What is known about one repository.
#[derive(Debug, Clone)]
pub struct RepoInfo {
    /// `org/name`.
    pub repo: String,
    /// Every file of the repository with its size.
    pub files: Vec<SizedFile>,
    /// The local copy, if any.
    pub local: Option<LocalRepo>,
    /// Whether `files` came from the Hub (else from the local copy).
    pub from_hub: bool,
    /// Access to a gated repository.
    pub gate: Gate,
}

impl RepoInfo {
    /// Whether every one of `paths` is present locally with the listed size.
    pub fn is_local(&self, paths: &[String]) -> bool {
        let Some(local) = &self.local else { return false };
        paths.iter().all(|path| {
            let listed = self.files.iter().find(|file| &file.path == path).map(|file| file.size);
            local.files.iter().any(|file| &file.path == path && Some(file.size) == listed)
        })
    }

    /// Bytes of `paths` not present locally with the listed size: what a
    /// download of them fetches.
    pub fn missing_bytes(&self, paths: &[String]) -> u64 {
        paths
            .iter()
            .filter(|path| !self.is_local(std::slice::from_ref(*path)))
            .filter_map(|path| self.files.iter().find(|file| &file.path == path))
            .fold(0u64, |sum, file| sum.saturating_add(file.size))
    }

    /// `local:org/name`, `hf-cache:org/name` or `hf:org/name`.
    pub fn source_for(&self, paths: &[String]) -> String {
        match &self.local {
            Some(local) if self.is_local(paths) => match local.origin {
                LocalOrigin::StorageRoot => format!("local:{}", self.repo),
                LocalOrigin::HfCache { .. } => format!("hf-cache:{}", self.repo),
            },
            _ => format!("hf:{}", self.repo),
        }
    }
}

/// A repository lookup: its listing, or why there is none.
#[derive(Debug, Clone)]
pub enum RepoLookup {
    /// Listed.
    Found(RepoInfo),
    /// Neither local nor listable; the reason says why.
    Unavailable(String),
}

/// One Ollama tag a model expands to.
#[derive(Debug, Clone)]
pub struct TagVariant {
    /// `name:tag`.
    pub full: String,
    /// The quantization label read from the tag.
    pub label: QuantLabel,
    /// Total size from the registry manifest.
    pub size: Option<u64>,
    /// Why the tag cannot be pulled and served here (the library or registry
    /// does not know it, or it is a cloud model).
    pub missing: Option<String>,
}

impl TagVariant {
    /// A tag with no size known yet.
    pub fn new(full: &str) -> Self {
        TagVariant { full: full.to_owned(), label: tag_label(full), size: None, missing: None }
    }
}

/// Everything discovery learned, keyed by repository id and by tag as written.
#[derive(Debug, Default)]
pub struct Discovery {
    /// Hugging Face repositories.
    pub repos: HashMap<String, RepoLookup>,
    /// Ollama tags as written in the config → the tags they expand to.
    pub tags: HashMap<String, Vec<TagVariant>>,
    /// Degraded sources, one line each.
    pub warnings: Vec<String>,
    /// `KITT_OFFLINE`: nothing may be pulled into an Ollama store.
    pub ollama_offline: bool,
}

/// The sources discovery may consult.
pub struct Sources {
    /// Local storage root and Hugging Face cache.
    pub local: LocalIndex,
    /// The Hub.
    pub hub: HubClient,
    /// The Ollama library and registry.
    pub ollama: OllamaClient,
}

/// Looks up every repository and tag the campaign's engines could use.
pub async fn discover(campaign: &Campaign, sources: &Sources) -> Discovery {
    let (repos, tags) = wanted(campaign);
    let repo_lookups = stream::iter(repos)
        .map(|repo| async move {
            let lookup = lookup_repo(&repo, sources).await;
            (repo, lookup)
        })
        .buffer_unordered(CONCURRENT_LOOKUPS)
        .collect::<Vec<_>>()
        .await;
    let tag_lookups = stream::iter(tags)
        .map(|tag| async move {
            let lookup = expand_tag(&tag, &sources.ollama).await;
            (tag, lookup)
        })
        .buffer_unordered(CONCURRENT_LOOKUPS)
        .collect::<Vec<_>>()
        .await;

    let mut discovery = Discovery::default();
    let mut warnings = BTreeSet::new();
    for (repo, (lookup, warning)) in repo_lookups {
        warnings.extend(warning);
        discovery.repos.insert(repo, lookup);
    }
    for (tag, (variants, warning)) in tag_lookups {
        warnings.extend(warning);
        discovery.tags.insert(tag, variants);
    }
    discovery.warnings = warnings.into_iter().collect();
    discovery.ollama_offline = sources.ollama.is_offline();
    discovery
}

/// The repositories and tags some engine of the campaign can load.
fn wanted(campaign: &Campaign) -> (BTreeSet<String>, BTreeSet<String>) {
    let formats: BTreeSet<Format> =
        campaign.engines.iter().flat_map(|engine| engine.formats.iter().copied()).collect();
    let mut repos = BTreeSet::new();
    let mut tags = BTreeSet::new();
    for model in &campaign.models {
        if formats.contains(&Format::Gguf) {
            repos.extend(model.gguf_repo.clone());
        }
        if formats.contains(&Format::Safetensors) || formats.contains(&Format::Gguf) {
            repos.extend(model.safetensors_repo.clone());
        }
        if formats.contains(&Format::Ollama) || formats.contains(&Format::Gguf) {
            tags.extend(model.ollama_tag.clone());
            // A Hugging Face tag's listing tells its size and whether Ollama can pull it.
            let hub = model.ollama_tag.as_deref().and_then(hub_tag).map(|(repo, _)| repo);
            repos.extend(hub);
        }
    }
    (repos, tags)
}

async fn lookup_repo(repo: &str, sources: &Sources) -> (RepoLookup, Option<String>) {
    let local = sources.local.find(repo);
    let listed = sources.hub.repo(repo).await;
    match (&listed, &local) {
        (Ok(hub), _) => tracing::debug!(repo, files = hub.files.len(), "listed from the Hub"),
        (Err(error), Some(found)) => {
            tracing::debug!(repo, files = found.files.len(), "using the local copy: {error}");
        }
        (Err(error), None) => tracing::debug!(repo, "unavailable: {error}"),
    }
    match (listed, local) {
        (Ok(hub), local) => {
            let files = sized(hub.files.iter().map(|f| (&f.path, f.size)));
            let gate = hub.gate.clone();
            let info = RepoInfo { repo: repo.to_owned(), files, local, from_hub: true, gate };
            (RepoLookup::Found(info), None)
        }
        (Err(error), Some(local)) => {
            // Files we hold are readable whatever the Hub's gate says.
            let files = sized(local.files.iter().map(|f| (&f.path, f.size)));
            let info = RepoInfo {
                repo: repo.to_owned(),
                files,
                local: Some(local),
                from_hub: false,
                gate: Gate::Open,
            };
            (RepoLookup::Found(info), degraded_warning(&error, sources))
        }
        (Err(error), None) => {
            let reason = match &error {
                HubError::Offline { .. } => format!(
                    "`{repo}` is not in local storage or the Hugging Face cache, and the Hub is offline"
                ),
                other => format!("{other}; not in local storage either"),
            };
            (RepoLookup::Unavailable(reason), degraded_warning(&error, sources))
        }
    }
}

fn sized<'a>(files: impl Iterator<Item = (&'a String, u64)>) -> Vec<SizedFile> {
    files.map(|(path, size)| SizedFile { path: path.clone(), size }).collect()
}

/// A warning for a Hub failure that planning works around, or none when the
/// failure is about the repository itself rather than the source. The text
/// names the source, not the repository, so it is printed once.
fn degraded_warning(error: &HubError, sources: &Sources) -> Option<String> {
    let endpoint = sources.hub.endpoint();
    let what = match error {
        HubError::Offline { .. } => {
            return Some("Hugging Face Hub: offline mode, using local models only".into());
        }
        HubError::Network { .. } => "cannot be reached".to_owned(),
        HubError::RateLimited { .. } => "kept rate-limiting requests".to_owned(),
        HubError::Status { status, .. } => format!("answered HTTP {status}"),
        HubError::BadResponse { .. } => "answered something kitt cannot read".to_owned(),
        _ => return None,
    };
    Some(format!("Hugging Face Hub at {endpoint} {what}; using local models where it failed"))
}

/// The repository and quant of a Hugging Face tag (`hf.co/org/repo:Q4_K_M`,
/// also `huggingface.co/…`); the quant is `None` when the tag names none.
pub fn hub_tag(full: &str) -> Option<(String, Option<String>)> {
    let rest = full.strip_prefix("hf.co/").or_else(|| full.strip_prefix("huggingface.co/"))?;
    let (repo, quant) = match rest.split_once(':') {
        Some((repo, quant)) => (repo, Some(quant).filter(|q| !q.eq_ignore_ascii_case("latest"))),
        None => (rest, None),
    };
    let parts: Vec<&str> = repo.split('/').collect();
    let valid = parts.len() == 2 && parts.iter().all(|part| !part.is_empty());
    valid.then(|| (repo.to_owned(), quant.map(str::to_owned)))
}

/// Whether a tag names one of Ollama's cloud models (`gpt-oss:120b-cloud`).
fn is_cloud_tag(full: &str) -> bool {
    let tag = full.rsplit_once(':').map_or("", |(_, tag)| tag).to_ascii_lowercase();
    tag == "cloud" || tag.ends_with("-cloud")
}

fn cloud_reason(full: &str) -> String {
    format!(
        "`{full}` is a cloud model: Ollama runs it on its own servers, so nothing would be \
         benchmarked on this machine"
    )
}

async fn expand_tag(written: &str, ollama: &OllamaClient) -> (Vec<TagVariant>, Option<String>) {
    let (mut variants, warning) = expand(written, ollama).await;
    for variant in variants.iter_mut().filter(|v| v.missing.is_none() && is_cloud_tag(&v.full)) {
        variant.missing = Some(cloud_reason(&variant.full));
    }
    (variants, warning)
}

async fn expand(written: &str, ollama: &OllamaClient) -> (Vec<TagVariant>, Option<String>) {
    let as_written = || vec![TagVariant::new(written)];
    let Ok((model, tag)) = split_tag(written) else {
        return (as_written(), None);
    };
    let names_quant = quant_from_file_name(&tag).known;
    let candidates = if names_quant || tag == "latest" {
        vec![tag.clone()]
    } else {
        match ollama.tags(&model).await {
            Ok(all) => size_variants(&tag, &all),
            Err(OllamaError::NotFound { .. }) => {
                let missing = format!("`{model}` is not in the Ollama library");
                return (
                    vec![TagVariant { missing: Some(missing), ..TagVariant::new(written) }],
                    None,
                );
            }
            Err(error) => return (as_written(), ollama_warning(&error)),
        }
    };
    let mut variants: Vec<(TagVariant, Option<String>)> = Vec::new();
    let mut warning = None;
    for candidate in candidates {
        let full = format!("{model}:{candidate}");
        match ollama.manifest(&model, &candidate).await {
            Ok(manifest) => {
                // Weights are a layer of every model that runs locally.
                let missing = manifest.model_size.is_none().then(|| cloud_reason(&full));
                let variant = TagVariant {
                    size: Some(manifest.total_size),
                    missing,
                    ..TagVariant::new(&full)
                };
                variants.push((variant, Some(manifest.config_digest)));
            }
            Err(OllamaError::NotFound { .. }) => {
                let missing = format!("tag `{full}` is not in the Ollama registry");
                variants
                    .push((TagVariant { missing: Some(missing), ..TagVariant::new(&full) }, None));
            }
            Err(error) => {
                warning = warning.or_else(|| ollama_warning(&error));
                variants.push((TagVariant::new(&full), None));
            }
        }
    }
    (drop_aliases(variants), warning)
}

/// Tags of one size: the size itself and its `-`-suffixed variants, without
/// the base (`-text`) models.
fn size_variants(size: &str, all: &[String]) -> Vec<String> {
    let prefix = format!("{size}-");
    let kept: Vec<String> = all
        .iter()
        .filter(|tag| *tag == size || tag.starts_with(&prefix))
        .filter(|tag| !tag.contains("-text"))
        .cloned()
        .collect();
    if kept.is_empty() { vec![size.to_owned()] } else { kept }
}

/// Tags with the same manifest are one model: keep the most specific name.
fn drop_aliases(variants: Vec<(TagVariant, Option<String>)>) -> Vec<TagVariant> {
    let mut best: Vec<(TagVariant, Option<String>)> = Vec::new();
    for (variant, digest) in variants {
        let same = best.iter_mut().find(|(_, d)| digest.is_some() && *d == digest);
        match same {
            Some(slot) if variant.full.len() > slot.0.full.len() => *slot = (variant, digest),
            Some(_) => {}
            None => best.push((variant, digest)),
        }
    }
    best.into_iter().map(|(variant, _)| variant).collect()
}

/// The quantization of a tag (`8b-instruct-q4_K_M` → `Q4_K_M`), else the tag itself.
pub fn tag_label(full: &str) -> QuantLabel {
    let tag = full.rsplit_once(':').map_or("latest", |(_, tag)| tag);
    let label = quant_from_file_name(tag);
    if label.known {
        label
    } else {
        QuantLabel { label: tag.to_owned(), base: tag.to_owned(), known: false }
    }
}

fn ollama_warning(error: &OllamaError) -> Option<String> {
    let what = match error {
        OllamaError::Offline { .. } => {
            return Some("Ollama library: offline mode, tags taken as written".into());
        }
        OllamaError::Network { .. } => "cannot be reached".to_owned(),
        OllamaError::Status { status, .. } => format!("answered HTTP {status}"),
        OllamaError::BadResponse { .. } => "answered something kitt cannot read".to_owned(),
        _ => return None,
    };
    Some(format!("Ollama library {what}; tags taken as written where it failed"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_tag_expands_to_its_quant_variants_without_text_models() {
        let all: Vec<String> =
            ["latest", "8b", "70b", "8b-instruct-q4_K_M", "8b-text-q4_0", "8b-instruct-fp16"]
                .iter()
                .map(|s| s.to_string())
                .collect();
        assert_eq!(size_variants("8b", &all), ["8b", "8b-instruct-q4_K_M", "8b-instruct-fp16"]);
    }

    #[test]
    fn hugging_face_tags_name_a_repository_and_maybe_a_quant() {
        let tag = |full| hub_tag(full);
        assert_eq!(
            tag("hf.co/org/Repo-GGUF:Q4_K_M"),
            Some(("org/Repo-GGUF".into(), Some("Q4_K_M".into())))
        );
        assert_eq!(tag("huggingface.co/org/Repo-GGUF"), Some(("org/Repo-GGUF".into(), None)));
        assert_eq!(tag("hf.co/org/Repo-GGUF:latest"), Some(("org/Repo-GGUF".into(), None)));
        assert_eq!(tag("hf.co/Repo-GGUF:Q8_0"), None);
        assert_eq!(tag("llama3.1:8b"), None);
        assert!(is_cloud_tag("gpt-oss:120b-cloud") && is_cloud_tag("m:cloud"));
        assert!(!is_cloud_tag("cloudy:7b") && !is_cloud_tag("m:8b"));
    }

    #[test]
    fn aliases_keep_the_most_specific_tag() {
        let variant = |full: &str| TagVariant { size: Some(1), ..TagVariant::new(full) };
        let kept = drop_aliases(vec![
            (variant("m:8b"), Some("sha256:a".into())),
            (variant("m:8b-instruct-q4_K_M"), Some("sha256:a".into())),
            (variant("m:8b-instruct-q8_0"), Some("sha256:b".into())),
        ]);
        let names: Vec<_> = kept.iter().map(|v| v.full.as_str()).collect();
        assert_eq!(names, ["m:8b-instruct-q4_K_M", "m:8b-instruct-q8_0"]);
    }
}
