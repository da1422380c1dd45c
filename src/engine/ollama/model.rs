//! Getting the run's model ready on an Ollama server: a library tag is
//! found in the local store or pulled ([`super::pull`]); a local GGUF file is imported under
//! a kitt-owned name (hash, upload unless the server has the blob, create);
//! then the model is loaded and warmed up with the options every measured
//! request carries. Works against any [`Api`]; what to do when the server's
//! process dies is the caller's business.
//!
//! A model kitt imports is removed again when the engine stops
//! ([`OwnedModel::remove`]); a pulled tag ([`super::pull`]) is removed only
//! as the run's pull rules say, and nothing kitt did not create is ever
//! deleted.

use std::collections::BTreeMap;
use std::future::Future;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::api::{Api, ApiError, LocalModel, ProgressLine};
use super::settings;
use crate::engine::pulls::{PullEvent, PullLedger};
use crate::engine::{EngineError, Format, Launch, StartProgress};
use crate::plan::matrix::human_bytes;
use crate::plan::quant::{quant_from_file_name, shard_index};

/// The model kitt will ask for, once it is in the server's store.
#[derive(Debug)]
pub struct Prepared {
    /// The name requests use.
    pub served: String,
    /// Its size in the store.
    pub size_bytes: u64,
    /// Set when kitt removes it after the run (an import, or a pull the rules let go).
    pub owned: Option<OwnedModel>,
    /// What to record in the result's parameters.
    pub recorded: BTreeMap<String, String>,
}

/// A model kitt put into the server's store and removes when the run is over.
#[derive(Debug)]
pub struct OwnedModel {
    api: Api,
    name: String,
    /// For a pulled model: the store it is in and the campaign's ledger.
    pulled: Option<(String, Option<PullLedger>)>,
}

impl OwnedModel {
    /// A model kitt imported under its own name.
    fn imported(api: &Api, name: &str) -> Self {
        OwnedModel { api: api.clone(), name: name.to_owned(), pulled: None }
    }

    /// A library tag kitt pulled into `store`, its removal told to `ledger`.
    pub(super) fn pulled(api: &Api, name: &str, store: &str, ledger: Option<PullLedger>) -> Self {
        OwnedModel {
            api: api.clone(),
            name: name.to_owned(),
            pulled: Some((store.to_owned(), ledger)),
        }
    }

    /// Whether it is a pulled library tag (rather than an import).
    pub fn is_pulled(&self) -> bool {
        self.pulled.is_some()
    }

    /// Deletes the model from the server's store; a failure is logged, not raised,
    /// because the run's measurements are already complete.
    pub async fn remove(self) {
        let what = if self.pulled.is_some() { "pulled" } else { "imported" };
        let deleted = self.api.delete(&self.name).await;
        match &deleted {
            Ok(()) => tracing::info!(model = %self.name, "removed the model kitt {what}"),
            Err(error) => {
                tracing::warn!(model = %self.name, "cannot remove the model kitt {what}: {error}")
            }
        }
        if let Some((store, Some(ledger))) = &self.pulled {
            let event = match deleted {
                Ok(()) => PullEvent::Removed,
                Err(error) => PullEvent::RemoveFailed { error: error.to_string() },
            };
            ledger.note(&self.name, store, event).await;
        }
    }
}

/// Puts the launch's model into the server's store.
pub async fn prepare(
    api: &Api,
    launch: &Launch<'_>,
    reporter: &mut Reporter,
) -> Result<Prepared, EngineError> {
    let path = launch.model_path.ok_or(EngineError::NoModelFile { engine: "ollama" })?;
    match launch.format {
        Some(Format::Ollama) => {
            let tag = path.to_string_lossy();
            let store = super::store::location_from_env(launch.config);
            super::pull::from_library(api, &tag, &launch.pulls, &store, reporter).await
        }
        Some(Format::Gguf) => import(api, path, settings::num_ctx(launch), reporter).await,
        other => Err(EngineError::ModelUnavailable {
            model: path.display().to_string(),
            reason: format!(
                "Ollama serves library tags and GGUF files, not {}",
                other.map_or("a model of unknown format", Format::name)
            ),
        }),
    }
}

/// `name:tag`, with `:latest` added to a name without a tag.
pub fn normalise_tag(tag: &str) -> String {
    let tag = tag.trim();
    let last = tag.rsplit('/').next().unwrap_or(tag);
    if last.contains(':') { tag.to_owned() } else { format!("{tag}:latest") }
}

/// Checks that `tag` can name an Ollama model (`[host/][namespace/]model[:tag]`).
pub fn check_tag(tag: &str) -> Result<(), String> {
    let valid = !tag.is_empty()
        && !tag.starts_with(['/', ':', '.', '-'])
        && !tag.ends_with(['/', ':'])
        && tag.matches(':').count() <= 1
        && tag.chars().all(|c| c.is_ascii_alphanumeric() || "._-:/".contains(c));
    if valid {
        Ok(())
    } else {
        Err(format!("`{tag}` is not an Ollama model name such as `llama3.2:1b`"))
    }
}

/// The model of `models` that `wanted` (normalised) names.
pub(super) fn find<'a>(models: &'a [LocalModel], wanted: &str) -> Option<&'a LocalModel> {
    let same = |name: &str| normalise_tag(name).eq_ignore_ascii_case(wanted);
    models.iter().find(|model| same(&model.name) || model.model.as_deref().is_some_and(same))
}

/// The kitt-owned name a GGUF file is imported as: `kitt-<stem>:<quant>`.
pub fn import_name(file: &Path) -> String {
    let file_name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let label = quant_from_file_name(&file_name);
    let stem = file_name.to_ascii_lowercase();
    let stem = stem.strip_suffix(".gguf").unwrap_or(&stem);
    let (stem, tag) = if label.known {
        let tag = label.label.to_ascii_lowercase();
        (stem.replace(&tag, ""), tag)
    } else {
        (stem.to_owned(), "gguf".to_owned())
    };
    format!("kitt-{}:{}", sanitise(&stem), sanitise(&tag))
}

/// Lower case, `[a-z0-9._-]` only, no runs of `-`, no separator at either end.
fn sanitise(text: &str) -> String {
    let mut out = String::new();
    for c in text.to_ascii_lowercase().chars() {
        let c = if c.is_ascii_alphanumeric() || c == '.' || c == '_' { c } else { '-' };
        if !(c == '-' && out.ends_with('-')) {
            out.push(c);
        }
    }
    let trimmed: String = out.trim_matches(['-', '.', '_']).chars().take(64).collect();
    if trimmed.is_empty() { "model".to_owned() } else { trimmed }
}

/// The Modelfile equivalent of the import, for the record.
pub fn modelfile(file: &Path, num_ctx: u32) -> String {
    format!("FROM {}\nPARAMETER num_ctx {num_ctx}\n", file.display())
}

async fn import(
    api: &Api,
    file: &Path,
    num_ctx: u32,
    reporter: &mut Reporter,
) -> Result<Prepared, EngineError> {
    let file_name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let unavailable = |reason: String| EngineError::ModelUnavailable {
        model: file.display().to_string(),
        reason,
    };
    if shard_index(&file_name).is_some() {
        return Err(unavailable(
            "Ollama cannot import a sharded GGUF; merge the shards with \
             `llama-gguf-split --merge` first"
                .into(),
        ));
    }
    let name = import_name(file);
    let text = modelfile(file, num_ctx);
    reporter.record(&format!("importing as `{name}` with this Modelfile:\n{text}"));
    let size = std::fs::metadata(file)
        .map_err(|error| unavailable(format!("cannot read it: {error}")))?
        .len();

    let hashed = Arc::new(AtomicU64::new(0));
    let hashing = tokio::task::spawn_blocking({
        let (file, hashed) = (file.to_owned(), Arc::clone(&hashed));
        move || sha256_of(&file, &hashed)
    });
    let step = format!("hashing {file_name}");
    let digest = watch(hashing, &hashed, size, reporter, &step)
        .await
        .map_err(|error| unavailable(format!("hashing failed: {error}")))?
        .map_err(|error| unavailable(format!("cannot read it: {error}")))?;

    let has_blob = api.has_blob(&digest).await.map_err(|e| unreachable(api, "/api/blobs", e))?;
    if has_blob {
        reporter.step(format!("the server already has {file_name} ({digest})"));
    } else {
        let sent = Arc::new(AtomicU64::new(0));
        let step = format!("uploading {file_name}");
        let upload = api.upload_blob(&digest, file, Arc::clone(&sent));
        watch(upload, &sent, size, reporter, &step)
            .await
            .map_err(|error| unavailable(format!("the upload failed: {error}")))?;
    }

    reporter.step(format!("creating {name}"));
    let body = json!({
        "model": name,
        "files": { file_name.clone(): digest },
        "parameters": { "num_ctx": num_ctx },
        "stream": true,
    });
    api.create(&body, |line| reporter.status(line))
        .await
        .map_err(|error| unavailable(format!("creating `{name}` failed: {error}")))?;
    let imported = OwnedModel::imported(api, &name);
    reporter.step(format!("created {name}"));

    let local = api.tags().await.map_err(|error| unreachable(api, "/api/tags", error))?;
    let Some(found) = find(&local, &name) else {
        imported.remove().await;
        return Err(unavailable(format!("`{name}` was created but the server does not list it")));
    };
    let recorded = BTreeMap::from([
        ("model".to_owned(), name.clone()),
        ("imported_from".to_owned(), file.display().to_string()),
        ("modelfile".to_owned(), text),
    ]);
    Ok(Prepared { served: name, size_bytes: found.size, owned: Some(imported), recorded })
}

/// `sha256:<hex>` of a file, counting bytes read into `done`.
fn sha256_of(file: &Path, done: &AtomicU64) -> std::io::Result<String> {
    let mut reader = std::fs::File::open(file)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let read = reader.read(&mut buffer)?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
        done.fetch_add(read as u64, Ordering::Relaxed);
    }
    let hex: String = hasher.finalize().iter().map(|byte| format!("{byte:02x}")).collect();
    Ok(format!("sha256:{hex}"))
}

/// Runs `work`, reporting `done` of `total` bytes under `step` while it runs.
async fn watch<T>(
    work: impl Future<Output = T>,
    done: &AtomicU64,
    total: u64,
    reporter: &mut Reporter,
    step: &str,
) -> T {
    tokio::pin!(work);
    let mut ticker = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            result = &mut work => {
                reporter.fraction(step, done.load(Ordering::Relaxed), total);
                return result;
            }
            _ = ticker.tick() => reporter.fraction(step, done.load(Ordering::Relaxed), total),
        }
    }
}

/// Loads `model` with the run's options and answers one request, so neither
/// the load nor a first request's extra cost lands in a measurement.
pub async fn load_and_warm_up(
    api: &Api,
    model: &str,
    options: &Map<String, Value>,
    keep_alive: &Value,
    deadline: Duration,
    reporter: &mut Reporter,
) -> Result<(), EngineError> {
    let failed = |what: &str, error: ApiError| EngineError::ModelUnavailable {
        model: model.to_owned(),
        reason: format!("{what} failed: {error}"),
    };
    let started = Instant::now();
    reporter.step(format!("loading {model}"));
    let body = settings::load_body(model, options, keep_alive);
    api.chat(&body, deadline).await.map_err(|error| failed("loading", error))?;
    reporter.step(format!("warming up {model}"));
    let body = settings::warm_up_body(model, options, keep_alive);
    let answer = api.chat(&body, deadline).await.map_err(|error| failed("the warm-up", error))?;
    tracing::info!(
        model,
        seconds = started.elapsed().as_secs_f64(),
        load_ns = answer["load_duration"].as_u64(),
        "model loaded and warmed up"
    );
    Ok(())
}

pub(super) fn unreachable(api: &Api, path: &str, error: ApiError) -> EngineError {
    EngineError::Unreachable { url: format!("{}{path}", api.base()), reason: error.to_string() }
}

/// Reports what happens while the model is made ready: to the run's
/// progress (throttled to one update a second within a step), to the
/// engine log (prefixed `kitt:`) and to the trace.
pub struct Reporter {
    progress: StartProgress,
    log: PathBuf,
    last: Option<Instant>,
    last_status: String,
}

impl Reporter {
    /// A reporter writing to `progress` and appending to the engine log at `log`.
    pub fn new(progress: StartProgress, log: &Path) -> Self {
        Self { progress, log: log.to_owned(), last: None, last_status: String::new() }
    }

    /// A new step: always reported.
    pub fn step(&mut self, text: String) {
        tracing::info!("{text}");
        self.record(&text);
        self.progress.report(text);
        self.last = Some(Instant::now());
    }

    /// A status line of a pull or create stream, reported when it changes
    /// (the final `success` is left to the caller's own step).
    pub fn status(&mut self, line: &ProgressLine) {
        let status = line.status.as_deref().filter(|s| *s != self.last_status && *s != "success");
        let Some(status) = status else { return };
        self.last_status = status.to_owned();
        self.step(status.to_owned());
    }

    /// Progress within `step`: reported at most once a second, and when complete.
    pub fn fraction(&mut self, step: &str, done: u64, total: u64) {
        let recent = self.last.is_some_and(|last| last.elapsed() < Duration::from_secs(1));
        if recent && done < total {
            return;
        }
        let percent = done.saturating_mul(100).checked_div(total).unwrap_or(100);
        let text = format!("{step}: {percent}% of {}", human_bytes(total));
        if text != self.last_status {
            self.last_status.clone_from(&text);
            self.step(text);
        }
    }

    /// Appends `text` to the engine log, each line prefixed `kitt: `.
    pub fn record(&self, text: &str) {
        use std::io::Write;
        let lines: String = text.lines().map(|line| format!("kitt: {line}\n")).collect();
        let file = std::fs::OpenOptions::new().create(true).append(true).open(&self.log);
        if let Err(error) = file.and_then(|mut file| file.write_all(lines.as_bytes())) {
            tracing::debug!("cannot write to the engine log: {error}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_without_a_tag_mean_latest() {
        assert_eq!(normalise_tag("llama3.2"), "llama3.2:latest");
        assert_eq!(normalise_tag("llama3.2:1b"), "llama3.2:1b");
        assert_eq!(normalise_tag("user/model"), "user/model:latest");
        assert_eq!(normalise_tag("hf.co/org/Repo-GGUF:Q4_K_M"), "hf.co/org/Repo-GGUF:Q4_K_M");
    }

    #[test]
    fn tag_syntax_is_checked() {
        for good in ["llama3.2", "qwen2.5:7b-instruct-q4_K_M", "user/model:tag", "hf.co/a/b:Q8_0"] {
            assert_eq!(check_tag(good), Ok(()), "{good}");
        }
        for bad in ["", "a b", ":1b", "a:b:c", "llama/", "x;y"] {
            assert!(check_tag(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn local_models_match_with_latest_and_case_normalised() {
        let models = vec![
            LocalModel { name: "llama3.2:latest".into(), model: None, size: 1 },
            LocalModel { name: "x".into(), model: Some("Qwen2.5:7B".into()), size: 2 },
        ];
        assert_eq!(find(&models, "llama3.2:latest").map(|m| m.size), Some(1));
        assert_eq!(find(&models, "qwen2.5:7b").map(|m| m.size), Some(2));
        assert!(find(&models, "llama3.2:1b").is_none());
    }

    #[test]
    fn imported_names_are_kitt_owned_and_deterministic() {
        let name = import_name(Path::new("/m/Meta-Llama-3.1-8B-Instruct-Q4_K_M.gguf"));
        assert_eq!(name, "kitt-meta-llama-3.1-8b-instruct:q4_k_m");
        assert_eq!(import_name(Path::new("/m/weird name!.gguf")), "kitt-weird-name:gguf");
        assert_eq!(import_name(Path::new("/m/tiny-q8_0.gguf")), "kitt-tiny:q8_0");
        assert_eq!(
            modelfile(Path::new("/m/a.gguf"), 2048),
            "FROM /m/a.gguf\nPARAMETER num_ctx 2048\n"
        );
    }
}
