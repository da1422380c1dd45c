//! The planner: campaign × discovery → ordered runs with skip reasons.
//!
//! Pure and synchronous: everything it needs was gathered by discovery, and
//! free space comes through [`PlanEnv`], so it is cheap to call on very large
//! matrices and easy to test.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use super::discover::{Discovery, RepoInfo, RepoLookup};
use super::ollama::tag_candidate;
use super::quant::QuantLabel;
use super::restrict::{not_listed, restrict};
use super::size::{bits_per_weight, estimate_bytes};
use super::variants::{gguf_variants, safetensors_files};
use super::{Plan, PlannedRun, RunPlan, SizeSource};
use crate::acquire::hub::Gate;
use crate::config::{Campaign, EngineSpec, GB, ModelSpec, QuantRestriction};
use crate::engine::ollama::store::Location;
use crate::engine::{EngineKind, Format};

/// Measures free bytes under a path; `None` when it cannot be measured.
pub type FreeSpace = Box<dyn Fn(&Path) -> Option<u64>>;

/// Whether the Ollama store in a directory has a tag.
pub type TagCheck = Box<dyn Fn(&Path, &str) -> bool>;

/// Facts about this machine the checks need.
pub struct PlanEnv {
    /// Where Hugging Face downloads go.
    pub storage_root: PathBuf,
    /// Where a native Ollama keeps pulled models unless an engine's
    /// `extra_args` set `OLLAMA_MODELS`.
    pub ollama_dir: PathBuf,
    /// Free bytes under a path; `None` when it cannot be measured.
    pub free_space: FreeSpace,
    /// Whether a native Ollama store already has a tag (it then downloads nothing).
    pub has_ollama_tag: TagCheck,
}

/// Safetensors repositories whose name says how they are quantized.
const SAFETENSORS_TOKENS: &[&str] = &[
    "AWQ", "GPTQ", "FP8", "INT8", "INT4", "W4A16", "W8A8", "NVFP4", "MXFP4", "EXL2", "4BIT", "8BIT",
];

/// Builds the plan.
pub fn plan(campaign: &Campaign, discovery: &Discovery, env: &PlanEnv) -> Plan {
    let mut planner = Planner::new(campaign, env);
    for model in &campaign.models {
        for (index, engine) in campaign.engines.iter().enumerate() {
            let candidates = match model.quants_on(engine.kind) {
                QuantRestriction::Any => candidates(model, engine, discovery, env),
                QuantRestriction::NotListed => vec![not_listed(engine)],
                QuantRestriction::Only(labels) => {
                    restrict(candidates(model, engine, discovery, env), labels, engine.kind)
                }
            };
            planner.add(model, index, engine, candidates);
        }
    }
    let mut warnings = discovery.warnings.clone();
    warnings.extend(planner.free_space_warnings());
    Plan {
        campaign: campaign.name.clone(),
        runs: planner.runs,
        warnings,
        storage_root: env.storage_root.clone(),
        download_bytes: planner.download_total,
    }
}

/// A run before checks.
pub(super) struct Candidate {
    pub(super) label: QuantLabel,
    pub(super) source: String,
    pub(super) files: Vec<String>,
    pub(super) known_size: Option<u64>,
    /// Bytes to fetch, where they go, and an id so one download counts once.
    pub(super) download: Option<Download>,
    pub(super) gate_denied: Option<String>,
    pub(super) blocked: Option<String>,
}

pub(super) struct Download {
    pub(super) id: String,
    /// Known bytes; `None` uses the run's estimated size.
    pub(super) bytes: Option<u64>,
    pub(super) target: Target,
}

/// Where a download's bytes land, which is where free space is checked.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum Target {
    /// The storage root (Hub downloads).
    StorageRoot,
    /// An Ollama server's store (pulls).
    Ollama(Location),
}

impl Candidate {
    pub(super) fn new(label: QuantLabel, source: String) -> Self {
        Candidate {
            label,
            source,
            files: Vec::new(),
            known_size: None,
            download: None,
            gate_denied: None,
            blocked: None,
        }
    }
}

/// Candidates of one model on one engine, or rows that explain why there are none.
fn candidates(
    model: &ModelSpec,
    engine: &EngineSpec,
    discovery: &Discovery,
    env: &PlanEnv,
) -> Vec<Candidate> {
    let formats = &engine.formats;
    if engine.kind == EngineKind::Openai {
        return vec![served(model, engine)];
    }
    if engine.kind == EngineKind::Ollama {
        let wants_tags = formats.contains(&Format::Ollama) || formats.contains(&Format::Gguf);
        if let (true, Some(tag)) = (wants_tags, &model.ollama_tag) {
            return discovery
                .tags
                .get(tag)
                .map(|tags| {
                    tags.iter().map(|tag| tag_candidate(tag, engine, discovery, env)).collect()
                })
                .unwrap_or_default();
        }
    }
    let mut found = Vec::new();
    let mut had_source = false;
    for format in formats {
        let repo = match format {
            Format::Gguf => &model.gguf_repo,
            Format::Safetensors => &model.safetensors_repo,
            Format::Ollama => continue,
        };
        let Some(repo) = repo else { continue };
        had_source = true;
        match discovery.repos.get(repo) {
            Some(RepoLookup::Found(info)) if *format == Format::Gguf => {
                found.extend(gguf_candidates(model, engine.kind, info));
            }
            Some(RepoLookup::Found(info)) => found.push(safetensors_candidate(info)),
            Some(RepoLookup::Unavailable(reason)) => found.push(unavailable(repo, reason)),
            None => found.push(unavailable(repo, "not looked up")),
        }
    }
    if !had_source {
        found.push(no_source(engine));
    }
    found
}

fn served(model: &ModelSpec, engine: &EngineSpec) -> Candidate {
    let id = engine.config.model.clone().unwrap_or_else(|| model.name.clone());
    let base_url = engine.config.base_url.clone().unwrap_or_default();
    let label = QuantLabel { label: "served".into(), base: "served".into(), known: false };
    let mut candidate = Candidate::new(label, format!("openai:{base_url}"));
    candidate.files = vec![id];
    candidate
}

fn gguf_candidates(model: &ModelSpec, kind: EngineKind, info: &RepoInfo) -> Vec<Candidate> {
    let variants = gguf_variants(&info.files);
    if variants.is_empty() {
        return vec![unavailable(&info.repo, "the repository has no GGUF model files")];
    }
    variants
        .into_iter()
        .map(|variant| {
            let mut candidate =
                Candidate::new(variant.label.clone(), info.source_for(&variant.files));
            candidate.known_size = Some(variant.size);
            candidate.gate_denied = denied(&info.gate);
            if !info.is_local(&variant.files) {
                let id = format!("{}/{}", info.repo, variant.label.label);
                let bytes = Some(info.missing_bytes(&variant.files));
                candidate.download = Some(Download { id, bytes, target: Target::StorageRoot });
            }
            candidate.blocked =
                if let Some((present, total)) = variant.shards.filter(|_| !variant.is_complete()) {
                    let missing: Vec<String> =
                        variant.missing_shards.iter().map(u32::to_string).collect();
                    Some(format!(
                        "incomplete shard set: {present} of {total} shards, missing shard {}",
                        missing.join(", ")
                    ))
                } else if variant.is_sharded() && kind == EngineKind::Ollama {
                    Some(
                        "Ollama cannot import a sharded GGUF; merge it with llama-gguf-split first"
                            .into(),
                    )
                } else if variant.is_sharded() && kind == EngineKind::Vllm {
                    Some("vLLM loads only single-file GGUF models".into())
                } else if kind == EngineKind::Vllm && model.safetensors_repo.is_none() {
                    Some(
                    "vLLM serves a GGUF with the tokenizer of `safetensors_repo`, which is not set"
                        .into(),
                )
                } else {
                    None
                };
            candidate.files = variant.files;
            candidate
        })
        .collect()
}

fn safetensors_candidate(info: &RepoInfo) -> Candidate {
    let (files, size) = safetensors_files(&info.files);
    let mut candidate = Candidate::new(safetensors_label(&info.repo), info.source_for(&files));
    if files.is_empty() {
        candidate.blocked = Some(format!("`{}` has no .safetensors files", info.repo));
        return candidate;
    }
    candidate.known_size = Some(size);
    candidate.gate_denied = denied(&info.gate);
    if !info.is_local(&files) {
        let bytes = Some(info.missing_bytes(&files));
        let id = info.repo.clone();
        candidate.download = Some(Download { id, bytes, target: Target::StorageRoot });
    }
    candidate.files = files;
    candidate
}

/// The quantization a safetensors repository's name announces, else `BF16`,
/// the precision most published checkpoints are stored in.
pub(crate) fn safetensors_label(repo: &str) -> QuantLabel {
    let upper = repo.to_ascii_uppercase();
    let token = upper
        .split(|c: char| !c.is_ascii_alphanumeric())
        .find(|part| SAFETENSORS_TOKENS.contains(part) || *part == "BF16" || *part == "FP16");
    let label = token.unwrap_or("BF16").to_owned();
    QuantLabel { base: label.clone(), label, known: true }
}

fn denied(gate: &Gate) -> Option<String> {
    match gate {
        Gate::Denied { reason } => Some(reason.clone()),
        Gate::Open | Gate::Granted => None,
    }
}

fn unavailable(repo: &str, reason: &str) -> Candidate {
    let mut candidate = Candidate::new(placeholder(), format!("hf:{repo}"));
    candidate.blocked = Some(reason.to_owned());
    candidate
}

fn no_source(engine: &EngineSpec) -> Candidate {
    let formats: Vec<&str> = engine.formats.iter().map(|format| format.name()).collect();
    let fields: Vec<&str> = engine
        .formats
        .iter()
        .map(|format| match format {
            Format::Gguf => "`gguf_repo`",
            Format::Safetensors => "`safetensors_repo`",
            Format::Ollama => "`ollama_tag`",
        })
        .collect();
    let mut candidate = Candidate::new(placeholder(), "-".into());
    candidate.blocked = Some(format!(
        "no compatible source: `{}` loads {} here; set {}",
        engine.kind,
        formats.join(", "),
        fields.join(" or ")
    ));
    candidate
}

pub(super) fn placeholder() -> QuantLabel {
    QuantLabel { label: "-".into(), base: "-".into(), known: false }
}

/// Applies filters and checks in order, and keeps the disk accounting.
struct Planner<'a> {
    campaign: &'a Campaign,
    env: &'a PlanEnv,
    runs: Vec<PlannedRun>,
    keys: HashSet<String>,
    free: HashMap<Target, Option<u64>>,
    /// Downloads already counted while `cleanup_after_run` is off, and their total per target.
    kept: HashSet<String>,
    kept_bytes: HashMap<Target, u64>,
    download_total: u64,
}

impl<'a> Planner<'a> {
    fn new(campaign: &'a Campaign, env: &'a PlanEnv) -> Self {
        Planner {
            campaign,
            env,
            runs: Vec::new(),
            keys: HashSet::new(),
            free: HashMap::new(),
            kept: HashSet::new(),
            kept_bytes: HashMap::new(),
            download_total: 0,
        }
    }

    fn add(
        &mut self,
        model: &ModelSpec,
        index: usize,
        engine: &EngineSpec,
        mut found: Vec<Candidate>,
    ) {
        found.sort_by(|a, b| order(&a.label, &b.label));
        for candidate in found {
            let run = self.check(model, index, engine, candidate);
            self.runs.push(run);
        }
    }

    fn check(
        &mut self,
        model: &ModelSpec,
        index: usize,
        engine: &EngineSpec,
        c: Candidate,
    ) -> PlannedRun {
        let key = format!("{}|{}|{}", model.name, engine.kind, c.label.label);
        let (size_bytes, size_source) = size_of(model, &c);
        let download_bytes =
            c.download.as_ref().map_or(0, |download| download.bytes.or(size_bytes).unwrap_or(0));
        let mut run = PlannedRun {
            key: key.clone(),
            model: model.name.clone(),
            engine: engine.kind,
            engine_index: index,
            suite: engine.suite.clone(),
            quant: c.label.label.clone(),
            source: c.source.clone(),
            files: c.files.clone(),
            size_bytes,
            size_source,
            download_bytes,
            status: RunPlan::Skipped,
            reason: None,
        };
        let is_placeholder = c.label.label == "-";
        let skip = if !is_placeholder && !self.keys.insert(key.clone()) {
            Some(format!("duplicate run key `{key}`"))
        } else {
            self.skip_reason(engine, &c, size_bytes, download_bytes)
        };
        match skip {
            Some(reason) => {
                tracing::debug!(key = %run.key, "skipped: {reason}");
                run.reason = Some(reason);
            }
            None => {
                run.status = RunPlan::Planned;
                run.reason = self.note(&c);
                self.count_download(&c, download_bytes);
            }
        }
        run
    }

    /// The first check that fails, in the documented order.
    fn skip_reason(
        &mut self,
        engine: &EngineSpec,
        c: &Candidate,
        size: Option<u64>,
        download_bytes: u64,
    ) -> Option<String> {
        if c.label.label != "-" {
            let filtered = self.campaign.quant_filter.exclusion(&c.label);
            let engine_filtered =
                engine.quant_filter.exclusion(&c.label).map(|r| format!("engine {r}"));
            if let Some(reason) = filtered.or(engine_filtered) {
                return Some(reason);
            }
        }
        if let Some(reason) = &c.blocked {
            return Some(reason.clone());
        }
        if let (Some(limit), Some(size)) = (self.campaign.max_model_size_bytes, size)
            && size > limit
        {
            return Some(format!(
                "size {} exceeds resource_limits.max_model_size_gb ({})",
                human_bytes(size),
                human_bytes(limit)
            ));
        }
        let uses_disk = engine.kind != crate::engine::EngineKind::Openai;
        if let Some(reason) = self.disk_shortfall(c, download_bytes).filter(|_| uses_disk) {
            return Some(reason);
        }
        match &c.gate_denied {
            Some(reason) if self.campaign.skip_gated => Some(format!("gated: {reason}")),
            _ => None,
        }
    }

    fn disk_shortfall(&mut self, c: &Candidate, bytes: u64) -> Option<String> {
        // A local model downloads nothing, but the reserve still holds: the
        // campaign writes results and logs, and the user asked to keep it free.
        let target = c.download.as_ref().map_or(Target::StorageRoot, |d| d.target.clone());
        let already_counted = c.download.as_ref().is_some_and(|download| {
            !self.campaign.disk.cleanup_after_run && self.kept.contains(&download.id)
        });
        if already_counted {
            return None;
        }
        let dir = self.dir_of(&target)?;
        // Bytes a partial file already holds need no more room.
        let bytes = bytes.saturating_sub(self.partial_bytes(c));
        let free_space = &self.env.free_space;
        let free = *self.free.entry(target.clone()).or_insert_with(|| free_space(&dir));
        let free = free?;
        let kept = if self.campaign.disk.cleanup_after_run {
            0
        } else {
            self.kept_bytes.get(&target).copied().unwrap_or(0)
        };
        let reserve = self.campaign.disk.reserve_bytes;
        let needed = reserve.saturating_add(kept).saturating_add(bytes);
        (free < needed).then(|| disk_shortfall_message(&dir, bytes, kept, reserve, free))
    }

    /// Bytes the partial files of a Hub candidate's downloads already hold
    /// under the storage root (a download interrupted earlier, resumed later).
    fn partial_bytes(&self, c: &Candidate) -> u64 {
        let Some(repo) = c.source.strip_prefix("hf:") else { return 0 };
        let dir = self.env.storage_root.join("huggingface").join(repo);
        c.files
            .iter()
            .map(|file| crate::acquire::download::part_path(&dir.join(file)))
            .filter_map(|part| std::fs::metadata(part).ok())
            .fold(0u64, |sum, meta| sum.saturating_add(meta.len()))
    }

    /// The directory whose free space a target's downloads use; `None` for a
    /// Docker volume, which kitt cannot measure.
    fn dir_of(&mut self, target: &Target) -> Option<PathBuf> {
        match target {
            Target::StorageRoot => Some(self.env.storage_root.clone()),
            Target::Ollama(Location::Dir(dir)) => Some(dir.clone()),
            Target::Ollama(Location::Volume(_)) => {
                self.free.entry(target.clone()).or_insert(None);
                None
            }
        }
    }

    /// Counts a planned run's download: once per file set when downloads are
    /// kept, once per run when each run deletes its own.
    fn count_download(&mut self, c: &Candidate, bytes: u64) {
        let Some(download) = &c.download else { return };
        if self.campaign.disk.cleanup_after_run {
            self.download_total = self.download_total.saturating_add(bytes);
        } else if self.kept.insert(download.id.clone()) {
            let kept = self.kept_bytes.entry(download.target.clone()).or_default();
            *kept = kept.saturating_add(bytes);
            self.download_total = self.download_total.saturating_add(bytes);
        }
    }

    /// One warning per download directory whose free space could not be measured.
    fn free_space_warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        for (target, free) in &self.free {
            if free.is_some() {
                continue;
            }
            warnings.push(match target {
                Target::StorageRoot => unmeasured(&self.env.storage_root.display()),
                Target::Ollama(Location::Dir(dir)) => unmeasured(&dir.display()),
                Target::Ollama(volume @ Location::Volume(_)) => format!(
                    "cannot measure free space in the {volume} of Ollama in Docker mode; the \
                     disk reserve was not checked for its pulls"
                ),
            });
        }
        warnings.sort();
        warnings
    }

    fn note(&self, c: &Candidate) -> Option<String> {
        if c.gate_denied.is_some() {
            return Some(
                "gated without access; will fail unless access is granted (skip_gated: false)"
                    .into(),
            );
        }
        None
    }
}

fn size_of(model: &ModelSpec, c: &Candidate) -> (Option<u64>, Option<SizeSource>) {
    if let Some(size) = c.known_size {
        return (Some(size), Some(SizeSource::Files));
    }
    if c.label.label == "-" {
        return (None, None);
    }
    let estimate = model.params.and_then(|params| estimate_bytes(params, &c.label.base));
    if let Some(bytes) = estimate {
        return (Some(bytes), Some(SizeSource::Estimate));
    }
    match model.estimated_size_bytes {
        Some(bytes) => (Some(bytes), Some(SizeSource::Config)),
        None => (None, None),
    }
}

fn unmeasured(dir: &impl std::fmt::Display) -> String {
    format!("cannot measure free space under {dir}; the disk reserve was not checked")
}

/// Fewest bits per weight first, unknown labels last, ties by label.
fn order(a: &QuantLabel, b: &QuantLabel) -> std::cmp::Ordering {
    let bits = |label: &QuantLabel| bits_per_weight(&label.base).unwrap_or(f64::INFINITY);
    bits(a).total_cmp(&bits(b)).then_with(|| a.label.cmp(&b.label))
}

/// Formats bytes for people: GiB with one decimal, or MiB/KiB below a GiB.
pub fn human_bytes(bytes: u64) -> String {
    const KIB: f64 = 1024.0;
    let value = bytes as f64;
    if value >= GB || bytes == 0 {
        format!("{:.1} GiB", value / GB)
    } else if value >= KIB * KIB {
        format!("{:.1} MiB", value / (KIB * KIB))
    } else {
        format!("{:.1} KiB", value / KIB)
    }
}

/// "not enough disk under DIR: needs …": the reason a run is skipped when
/// `free` is below the reserve plus what it downloads (and `kept` bytes
/// earlier runs left behind).
pub fn disk_shortfall_message(
    dir: &Path,
    download: u64,
    kept: u64,
    reserve: u64,
    free: u64,
) -> String {
    let needed = reserve.saturating_add(kept).saturating_add(download);
    let kept_note = if kept > 0 {
        format!(" + {} kept from earlier runs", human_bytes(kept))
    } else {
        String::new()
    };
    format!(
        "not enough disk under {}: needs {} (download {}{kept_note} + reserve {}), {} free",
        dir.display(),
        human_bytes(needed),
        human_bytes(download),
        human_bytes(reserve),
        human_bytes(free)
    )
}
