//! `--from-results DIR`: a campaign that repeats the runs whose `metrics.json`
//! files are under DIR.
//!
//! Decisions:
//! - DIR is walked recursively (symbolic links to folders are not followed)
//!   for files named `metrics.json`. Each is one of: kitt's own result with its
//!   campaign recorded (`campaign`: exact model entry, engine entry, run key
//!   and disk settings); kitt's own result without it (`kitt run`, or written
//!   before kitt recorded it); or the original tool's file (`model` a path or
//!   Ollama tag, `engine`, `suite_name`). The last two have their source read
//!   from the path (see `infer`).
//! - Every result counts, passed or failed: the file repeats what ran.
//! - A result whose source cannot be read is never dropped silently: a warning
//!   on stderr names the file and why, and the file lists it in a comment. A
//!   file that is not JSON, or JSON of neither shape, is warned about and
//!   skipped. No usable result at all is an error (exit 2).
//! - The campaign is named `replay-<DIR's name>`, never the original's name:
//!   a replay is a new campaign, and sharing a name would make `--resume`
//!   without an id continue the original.
//! - One engine entry per engine (a campaign cannot list one twice). When
//!   results disagree on an engine's suite or settings, the newest result
//!   recorded by a campaign wins (else the newest result), with a warning and
//!   a comment. Results with a recorded campaign win over inferred ones for
//!   the `disk` section too; without any, `disk.storage_path` is the storage
//!   root the paths were under and the reserve is left at its default (a
//!   comment says so).
//! - Model names: the recorded name; for an inferred source, the repository's
//!   name without a `-GGUF` suffix, or the Ollama tag. A name already taken by
//!   another source gets `-2`, `-3`, ….

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::infer::{Inferred, infer};
use super::{CampaignFile, CreateError, Generated, check, listed_keys, render};
use crate::config::SUITES;
use crate::engine::{EngineKind, Format};
use crate::plan::discover::tag_label;
use crate::results::context::{CampaignContext, DiskEntry, EngineEntry, ModelEntry};

/// One replayable result.
struct Record {
    file: PathBuf,
    /// When it ran, for "newest" (RFC 3339 for kitt, ISO local time for the original).
    when: String,
    /// Identity of its model source; results of one source merge into one model.
    identity: String,
    model: ModelEntry,
    engine: EngineEntry,
    quant: String,
    /// Recorded by a campaign (exact), rather than inferred.
    recorded: bool,
    disk: Option<DiskEntry>,
    /// The storage root an inferred path was under.
    root: Option<String>,
    campaign: Option<String>,
}

/// What reading the results gave.
#[derive(Default)]
struct Gathered {
    records: Vec<Record>,
    /// Results that cannot be replayed: file and why.
    unreplayable: Vec<(PathBuf, String)>,
    warnings: Vec<String>,
    /// Comments about choices made (disagreements).
    notes: Vec<String>,
}

/// Builds the campaign file for every `metrics.json` under `dir`.
pub fn from_results(dir: &Path) -> Result<Generated, CreateError> {
    if !dir.is_dir() {
        return Err(CreateError::Nothing(format!("{} is not a directory", dir.display())));
    }
    let mut files = Vec::new();
    let mut gathered = Gathered::default();
    std::fs::read_dir(dir)
        .map_err(|source| CreateError::ReadDir { path: dir.to_owned(), source })?;
    walk(dir, &mut files, &mut gathered.warnings);
    files.sort();
    for file in &files {
        gathered.read(file);
    }
    if gathered.records.is_empty() {
        let found = match (files.len(), gathered.unreplayable.len()) {
            (0, _) => "no metrics.json file".to_owned(),
            (n, 0) => format!("{n} metrics.json file(s), none readable"),
            (n, bad) => format!("{n} metrics.json file(s), {bad} of them not replayable"),
        };
        let mut message = format!("nothing to replay under {}: {found}", dir.display());
        for warning in &gathered.warnings {
            message.push_str(&format!("\n  {warning}"));
        }
        return Err(CreateError::Nothing(message));
    }
    gathered.records.sort_by(|a, b| a.when.cmp(&b.when).then_with(|| a.file.cmp(&b.file)));

    let dir_name = dir
        .canonicalize()
        .ok()
        .and_then(|path| path.file_name().map(|name| name.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "results".into());
    let engines = gathered.engines();
    let disk = gathered.disk();
    let models = gathered.models();
    let campaigns: BTreeSet<&str> =
        gathered.records.iter().filter_map(|record| record.campaign.as_deref()).collect();
    let mut description = format!(
        "Replays {} result(s) found under {} (kitt campaign create --from-results)",
        gathered.records.len(),
        dir.display()
    );
    if !campaigns.is_empty() {
        let names: Vec<&str> = campaigns.into_iter().collect();
        description.push_str(&format!("; campaigns: {}", names.join(", ")));
    }
    let file = CampaignFile {
        campaign_name: format!("replay-{dir_name}"),
        description,
        models,
        engines,
        disk,
    };

    let mut comments = vec![
        format!("Generated by `kitt campaign create --from-results {}`.", dir.display()),
        "Each model's `quants` lists exactly the engines and variants that ran.".to_owned(),
    ];
    comments.append(&mut gathered.notes);
    if !gathered.unreplayable.is_empty() {
        comments.push("Not replayed (their model source could not be read):".to_owned());
        for (file, why) in &gathered.unreplayable {
            comments.push(format!("  {}: {why}", file.display()));
        }
    }
    let text = render(&comments, &file);
    check(&text, Path::new("<generated campaign>"))?;
    Ok(Generated { text, warnings: gathered.warnings, keys: listed_keys(&file.models) })
}

/// The largest `metrics.json` read (kitt's own are a few KiB: requests are
/// kept in their own file).
const MAX_METRICS_BYTES: u64 = 64 * 1024 * 1024;

/// Every `metrics.json` under `dir`; a folder that cannot be read is warned
/// about and left out.
fn walk(dir: &Path, out: &mut Vec<PathBuf>, warnings: &mut Vec<String>) {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) => {
            warnings.push(format!("skipped {}: {error}", dir.display()));
            return;
        }
    };
    for entry in entries.flatten() {
        let Ok(kind) = entry.file_type() else { continue };
        if kind.is_dir() {
            walk(&entry.path(), out, warnings);
        } else if entry.file_name() == "metrics.json" {
            // Only regular files (a link is followed to one): a device, a
            // pipe or a huge file is not a result and would never end.
            let path = entry.path();
            match std::fs::metadata(&path) {
                Ok(meta) if meta.is_file() && meta.len() <= MAX_METRICS_BYTES => out.push(path),
                Ok(meta) if meta.is_file() => warnings.push(format!(
                    "skipped {}: {} bytes is too large for a metrics.json",
                    path.display(),
                    meta.len()
                )),
                Ok(_) => warnings.push(format!("skipped {}: not a regular file", path.display())),
                Err(error) => warnings.push(format!("skipped {}: {error}", path.display())),
            }
        }
    }
}

impl Gathered {
    fn read(&mut self, file: &Path) {
        let value = match std::fs::read_to_string(file)
            .map_err(|error| error.to_string())
            .and_then(|text| serde_json::from_str::<Value>(&text).map_err(|e| e.to_string()))
        {
            Ok(value) => value,
            Err(error) => {
                self.warnings.push(format!("skipped {}: {error}", file.display()));
                return;
            }
        };
        match record(file, &value) {
            Ok(record) => self.records.push(record),
            Err(Unusable::Shape(why)) => {
                self.warnings.push(format!("skipped {}: {why}", file.display()));
            }
            Err(Unusable::Source(why)) => {
                self.warnings.push(format!("not replayed: {}: {why}", file.display()));
                self.unreplayable.push((file.to_owned(), why));
            }
        }
    }

    /// One entry per engine, in kitt's engine order; the newest recorded entry
    /// wins, else the newest inferred one.
    fn engines(&mut self) -> Vec<EngineEntry> {
        let mut engines = Vec::new();
        for kind in EngineKind::ALL {
            let name = kind.name();
            let of_kind: Vec<&Record> =
                self.records.iter().filter(|record| record.engine.name == name).collect();
            let chosen = of_kind
                .iter()
                .rev()
                .find(|record| record.recorded)
                .or_else(|| of_kind.last())
                .copied();
            let Some(chosen) = chosen else { continue };
            let differs = of_kind.iter().any(|record| {
                record.engine.suite != chosen.engine.suite
                    || (record.recorded && record.engine != chosen.engine)
            });
            if differs {
                let message = format!(
                    "the results disagree on engine `{name}`'s suite or settings; the file uses \
                     those of the newest{} result, {}",
                    if chosen.recorded { " campaign" } else { "" },
                    chosen.file.display()
                );
                self.warnings.push(message.clone());
                self.notes.push(message);
            }
            engines.push(chosen.engine.clone());
        }
        engines
    }

    /// The `disk` section: the newest recorded one, else the storage root the
    /// inferred paths were under.
    fn disk(&mut self) -> Option<DiskEntry> {
        let recorded: Vec<&DiskEntry> =
            self.records.iter().filter_map(|record| record.disk.as_ref()).collect();
        if let Some(newest) = recorded.last() {
            if recorded.iter().any(|disk| disk != newest) {
                let message = "the results' campaigns had different `disk` settings; the file \
                               uses the newest campaign's"
                    .to_owned();
                self.warnings.push(message.clone());
                self.notes.push(message);
            }
            return Some((*newest).clone());
        }
        self.notes.push(
            "disk.reserve_gb is not recorded in these results: kitt's default applies; lower it \
             if the dry run skips runs for disk space."
                .to_owned(),
        );
        let roots: Vec<String> = self
            .records
            .iter()
            .filter_map(|record| record.root.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let newest = self.records.iter().rev().find_map(|record| record.root.clone())?;
        if roots.len() > 1 {
            let message = format!(
                "the results' models are under several storage roots ({}); the file uses the \
                 newest, {newest}",
                roots.join(", ")
            );
            self.warnings.push(message.clone());
            self.notes.push(message);
        }
        Some(DiskEntry { storage_path: Some(newest), ..DiskEntry::default() })
    }

    /// One model per source, each with `quants` naming what ran.
    fn models(&mut self) -> Vec<ModelEntry> {
        let mut by_identity: BTreeMap<&str, (ModelEntry, BTreeMap<String, BTreeSet<String>>)> =
            BTreeMap::new();
        // Oldest first, so the newest spec of a model replaces older ones.
        for record in &self.records {
            let (model, quants) = by_identity
                .entry(record.identity.as_str())
                .or_insert_with(|| (record.model.clone(), BTreeMap::new()));
            if *model != record.model {
                let message = format!(
                    "model `{}` is configured differently across the results; the file uses the \
                     newest, from {}",
                    record.model.name,
                    record.file.display()
                );
                if !self.notes.contains(&message) {
                    self.warnings.push(message.clone());
                    self.notes.push(message);
                }
                *model = record.model.clone();
            }
            quants.entry(record.engine.name.clone()).or_default().insert(record.quant.clone());
        }
        let mut taken = BTreeSet::new();
        let mut models = Vec::new();
        for (_, (mut model, quants)) in by_identity {
            let base = model.name.clone();
            let mut suffix = 1;
            while !taken.insert(model.name.to_lowercase()) {
                suffix += 1;
                model.name = format!("{base}-{suffix}");
            }
            model.quants = Some(
                quants
                    .into_iter()
                    .map(|(engine, labels)| (engine, labels.into_iter().collect()))
                    .collect(),
            );
            models.push(model);
        }
        models.sort_by(|a, b| a.name.cmp(&b.name));
        models
    }
}

/// Why a file gives no record.
enum Unusable {
    /// Not a result file kitt understands.
    Shape(String),
    /// A result whose model source cannot be read.
    Source(String),
}

fn record(file: &Path, value: &Value) -> Result<Record, Unusable> {
    if let Some(context) = value.get("campaign").filter(|context| !context.is_null()) {
        let context: CampaignContext = serde_json::from_value(context.clone())
            .map_err(|error| Unusable::Shape(format!("its `campaign` is not readable: {error}")))?;
        let when = text(value, "finished_at").unwrap_or_default().to_owned();
        return Ok(recorded(file, when, context));
    }
    let (model, engine, suite, when) = match &value["model"] {
        Value::Object(model) => (
            model.get("path").and_then(Value::as_str),
            value["engine"]["name"].as_str(),
            text(value, "suite"),
            text(value, "finished_at"),
        ),
        Value::String(model) => (
            Some(model.as_str()),
            text(value, "engine"),
            text(value, "suite_name"),
            text(value, "timestamp"),
        ),
        _ => return Err(Unusable::Shape("not a result file: it has no `model`".into())),
    };
    let (Some(model), Some(engine)) = (model, engine) else {
        return Err(Unusable::Shape("not a result file: no model path or engine name".into()));
    };
    let kind = EngineKind::parse(engine)
        .ok_or_else(|| Unusable::Source(format!("engine `{engine}` is not one kitt runs")))?;
    if kind == EngineKind::Openai {
        return Err(Unusable::Source(
            "an `openai` result does not record the server's base_url".into(),
        ));
    }
    let suite = suite.unwrap_or("standard");
    if !SUITES.contains(&suite) {
        return Err(Unusable::Source(format!(
            "suite `{suite}` is not a campaign suite ({})",
            SUITES.join(", ")
        )));
    }
    let inferred = infer(model, kind).map_err(Unusable::Source)?;
    Ok(inferred_record(file, when.unwrap_or_default().to_owned(), kind, suite, inferred))
}

fn text<'a>(value: &'a Value, key: &str) -> Option<&'a str> {
    value.get(key).and_then(Value::as_str)
}

fn recorded(file: &Path, when: String, context: CampaignContext) -> Record {
    let model = ModelEntry { quants: None, ..context.model };
    Record {
        file: file.to_owned(),
        when,
        identity: format!("name:{}", model.name.to_lowercase()),
        model,
        engine: context.engine,
        quant: context.quant,
        recorded: true,
        disk: Some(context.disk),
        root: None,
        campaign: Some(context.campaign_name),
    }
}

fn inferred_record(
    file: &Path,
    when: String,
    kind: EngineKind,
    suite: &str,
    inferred: Inferred,
) -> Record {
    let engine =
        EngineEntry { name: kind.name().to_owned(), suite: suite.to_owned(), ..Default::default() };
    let (identity, model, quant, root) = match inferred {
        Inferred::Repo { repo, format, quant, storage_root } => {
            let name = repo.rsplit('/').next().unwrap_or(&repo);
            let name = strip_suffix_ignore_case(name, "-GGUF").to_owned();
            let root = storage_root.map(|root| root.display().to_string());
            let mut model = ModelEntry { name, ..ModelEntry::default() };
            let tag = match format {
                Format::Gguf => {
                    model.gguf_repo = Some(repo.clone());
                    "gguf"
                }
                _ => {
                    model.safetensors_repo = Some(repo.clone());
                    "safetensors"
                }
            };
            (format!("{tag}:{repo}"), model, quant, root)
        }
        Inferred::Tag(tag) => {
            let quant = tag_label(&tag).label;
            let model = ModelEntry {
                name: tag.clone(),
                ollama_tag: Some(tag.clone()),
                ..ModelEntry::default()
            };
            (format!("tag:{tag}"), model, quant, None)
        }
    };
    Record {
        file: file.to_owned(),
        when,
        identity,
        model,
        engine,
        quant,
        recorded: false,
        disk: None,
        root,
        campaign: None,
    }
}

fn strip_suffix_ignore_case<'a>(text: &'a str, suffix: &str) -> &'a str {
    let cut = text.len().checked_sub(suffix.len()).filter(|&at| text.is_char_boundary(at));
    match cut {
        Some(at) if at > 0 && text[at..].eq_ignore_ascii_case(suffix) => &text[..at],
        _ => text,
    }
}
