//! Raw config → validated [`Campaign`]: every semantic rule of a campaign file.
//!
//! All problems are collected, not just the first, each with the location of
//! the value it concerns, so one run of kitt shows everything to fix.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use regex::Regex;
use serde_saphyr::Spanned;

use super::campaign::*;
use super::error::Problem;
use super::raw::*;
use super::suggest::did_you_mean;
use crate::acquire::hub::{HubError, validate_repo_id};
use crate::engine::{EngineKind, Format};
use crate::plan::glob::QuantGlob;
use crate::plan::size::parse_params;

/// The suites kitt ships.
pub const SUITES: &[&str] = &["quick", "standard", "performance"];

const DEFAULT_RESERVE_GB: f64 = 100.0;

static OLLAMA_TAG: LazyLock<Regex> = LazyLock::new(|| {
    // A library tag, or a Hugging Face GGUF repository Ollama pulls itself
    // (`hf.co/org/Repo-GGUF:Q4_K_M`), whose names keep their case.
    Regex::new(
        r"^(([a-z0-9][a-z0-9._-]*/)?[a-z0-9][a-z0-9._-]*|(hf\.co|huggingface\.co)/[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*)(:[A-Za-z0-9][A-Za-z0-9._-]*)?$",
    )
    .expect("static regex")
});

/// Whether `text` is written as an Ollama tag the config accepts (`ollama_tag`).
pub fn is_ollama_tag(text: &str) -> bool {
    OLLAMA_TAG.is_match(text)
}

/// Checks a parsed file and builds the campaign, or returns every problem found.
pub fn validate(raw: RawCampaign, path: &Path, source: &str) -> Result<Campaign, Vec<Problem>> {
    let mut check = Checker { problems: Vec::new(), warnings: Vec::new() };
    let campaign = check.campaign(raw, path);
    if check.problems.is_empty() {
        Ok(Campaign { warnings: check.warnings, ..campaign })
    } else {
        let mut problems: Vec<Problem> =
            check.problems.into_iter().map(|problem| problem.with_source(source)).collect();
        problems.sort_by_key(|problem| (problem.line, problem.column));
        Err(problems)
    }
}

/// Collects problems and warnings while building the campaign.
pub(super) struct Checker {
    pub(super) problems: Vec<Problem>,
    pub(super) warnings: Vec<String>,
}

impl Checker {
    pub(super) fn report<T>(
        &mut self,
        value: &Spanned<T>,
        field: &str,
        message: String,
    ) -> &mut Problem {
        let at = value.referenced;
        self.problems.push(Problem::at(at.line(), at.column(), field, message));
        self.problems.last_mut().expect("just pushed")
    }

    pub(super) fn report_file(&mut self, field: &str, message: String) -> &mut Problem {
        self.problems.push(Problem::at(0, 0, field, message));
        self.problems.last_mut().expect("just pushed")
    }

    fn campaign(&mut self, raw: RawCampaign, path: &Path) -> Campaign {
        let name = raw.campaign_name.value.trim().to_owned();
        if !name.chars().any(char::is_alphanumeric) {
            let message = format!("`{name}` has no letter or digit to build a campaign ID from");
            self.report(&raw.campaign_name, "campaign_name", message);
        }
        if let Some(rules) = &raw.matching_rules {
            self.report(rules, "matching_rules", "`matching_rules` is not supported".into()).hint(
                "list the models under `models` and narrow quantizations with `quant_filter`",
            );
        }

        let engines = self.engines(raw.engines);
        let kinds: Vec<EngineKind> = engines.iter().map(|engine| engine.kind).collect();
        let models = self.models(raw.models, &kinds);
        let notifications = self.notifications(raw.notifications, raw.auto_compare);
        let schedule = raw.schedule.map(|schedule| self.schedule(schedule));
        let devon_url = raw.devon_url.map(|url| self.devon_url(url));

        Campaign {
            name,
            description: raw.description.unwrap_or_default(),
            path: path.to_owned(),
            models,
            engines,
            disk: self.disk(raw.disk),
            notifications,
            quant_filter: self
                .filter(&raw.quant_filter.skip_patterns, &raw.quant_filter.include_only),
            max_model_size_bytes: self.max_model_size(raw.resource_limits),
            parallel: raw.parallel,
            max_parallel: self.max_parallel(raw.max_parallel, raw.parallel),
            devon: Devon {
                managed: raw.devon_managed,
                url: devon_url,
                api_key: self.secret(raw.devon_api_key, "devon_api_key", "DEVON_API_KEY"),
            },
            hf_token: self.secret(raw.hf_token, "hf_token", "HF_TOKEN"),
            skip_gated: raw.skip_gated,
            schedule,
            auto_compare: raw.auto_compare,
            thresholds: self.thresholds(raw.regression_thresholds, raw.auto_compare),
            warnings: Vec::new(),
        }
    }

    fn models(
        &mut self,
        raw: Option<Spanned<Vec<RawModel>>>,
        engines: &[EngineKind],
    ) -> Vec<ModelSpec> {
        let has_openai = engines.contains(&EngineKind::Openai);
        let Some(list) = raw else {
            self.report_file("models", "required field `models` is missing".into())
                .hint("list at least one model with a `name` and a source such as `gguf_repo`");
            return Vec::new();
        };
        if list.value.is_empty() {
            self.report(
                &list,
                "models",
                "`models` is empty: the campaign would plan nothing".into(),
            );
        }
        let mut seen: HashMap<String, u64> = HashMap::new();
        let mut models = Vec::new();
        for (index, model) in list.value.into_iter().enumerate() {
            let field = format!("models[{index}]");
            let name = self.name(&model.name, &format!("{field}.name"), "model", &mut seen);
            let params_text = model.params.as_ref().map(|p| p.value.trim().to_owned());
            let params = model.params.as_ref().and_then(|p| self.params(p, &field));
            let gguf_repo = model.gguf_repo.map(|repo| self.repo(repo, &field, "gguf_repo"));
            let safetensors_repo =
                model.safetensors_repo.map(|repo| self.repo(repo, &field, "safetensors_repo"));
            let ollama_tag = model.ollama_tag.map(|tag| self.ollama_tag(tag, &field));
            let estimated = model
                .estimated_size_gb
                .and_then(|size| self.size_gb(&size, &format!("{field}.estimated_size_gb")));
            let quants = model.quants.map(|quants| self.model_quants(quants, &field, engines));
            let has_source =
                gguf_repo.is_some() || safetensors_repo.is_some() || ollama_tag.is_some();
            if !has_source && !has_openai {
                let message = format!("model `{name}` names no source to load it from");
                self.report(&model.name, &format!("{field}.name"), message)
                    .hint("set `gguf_repo`, `safetensors_repo` or `ollama_tag`");
            }
            models.push(ModelSpec {
                name,
                params,
                params_text: params_text.unwrap_or_default(),
                safetensors_repo,
                gguf_repo,
                ollama_tag,
                estimated_size_bytes: estimated.filter(|bytes| *bytes > 0),
                quants,
            });
        }
        models
    }

    fn engines(&mut self, raw: Option<Spanned<Vec<RawEngine>>>) -> Vec<EngineSpec> {
        let Some(list) = raw else {
            self.report_file("engines", "required field `engines` is missing".into())
                .hint(format!("list at least one engine: {}", EngineKind::NAMES.join(", ")));
            return Vec::new();
        };
        if list.value.is_empty() {
            self.report(
                &list,
                "engines",
                "`engines` is empty: the campaign would plan nothing".into(),
            );
        }
        let mut seen: HashMap<String, u64> = HashMap::new();
        let mut engines = Vec::new();
        for (index, engine) in list.value.into_iter().enumerate() {
            if let Some(spec) = self.engine(engine, index, &mut seen) {
                engines.push(spec);
            }
        }
        engines
    }

    fn engine(
        &mut self,
        raw: RawEngine,
        index: usize,
        seen: &mut HashMap<String, u64>,
    ) -> Option<EngineSpec> {
        let field = format!("engines[{index}]");
        let name_field = format!("{field}.name");
        let name = self.name(&raw.name, &name_field, "engine", seen);
        let Some(kind) = EngineKind::parse(&name) else {
            let problem = self.report(&raw.name, &name_field, format!("unknown engine `{name}`"));
            match did_you_mean(&name, EngineKind::NAMES.iter().copied()) {
                Some(near) => problem.hint(format!("did you mean `{near}`?")),
                None => problem.hint(format!("known engines: {}", EngineKind::NAMES.join(", "))),
            };
            return None;
        };
        let suite = match raw.suite {
            Some(suite) => self.suite(suite, &field),
            None => "standard".to_owned(),
        };
        let formats = self.formats(kind, raw.formats, &field);
        let config = self.engine_config(kind, raw.config, &field, &raw.name);
        let quant_filter = match raw.quant_filter {
            Some(filter) => self.engine_filter(&filter, &field),
            None => QuantFilter::default(),
        };
        Some(EngineSpec { kind, suite, formats, config, quant_filter })
    }

    fn name(
        &mut self,
        name: &Spanned<String>,
        field: &str,
        what: &str,
        seen: &mut HashMap<String, u64>,
    ) -> String {
        let trimmed = name.value.trim().to_owned();
        if trimmed.is_empty() {
            self.report(name, field, format!("the {what} name is empty"));
        } else if trimmed.contains('|') {
            self.report(name, field, format!("the {what} name `{trimmed}` contains `|`"))
                .hint("`|` separates the parts of a run key; choose another character");
        } else if let Some(first) = seen.get(&trimmed.to_lowercase()) {
            let message = format!("{what} `{trimmed}` is listed twice (first on line {first})");
            self.report(name, field, message)
                .hint(format!("each {what} needs its own name: run keys are model|engine|quant"));
        } else {
            seen.insert(trimmed.to_lowercase(), name.referenced.line());
        }
        trimmed
    }

    fn params(&mut self, params: &Spanned<String>, field: &str) -> Option<u64> {
        let text = params.value.trim();
        if text.is_empty() {
            return None;
        }
        // A leading minus is a negative count here, not a separator as in
        // a model name such as `Llama-3.1-8B`.
        let parsed = if text.starts_with('-') { None } else { parse_params(text) };
        if parsed.is_none() {
            let message = format!("cannot read a parameter count from `{text}`");
            self.report(params, &format!("{field}.params"), message)
                .hint("write it like `8B`, `1.5B`, `500M` or `8x7B`");
        }
        parsed
    }

    fn repo(&mut self, repo: Spanned<String>, field: &str, key: &str) -> String {
        let text = repo.value.trim().to_owned();
        if let Err(HubError::InvalidRepoId { reason, .. }) = validate_repo_id(&text) {
            let message = format!("`{text}` is not a repository id: {reason}");
            self.report(&repo, &format!("{field}.{key}"), message)
                .hint("write it as `organisation/name`, e.g. `Qwen/Qwen2.5-7B-Instruct-GGUF`");
        }
        text
    }

    fn ollama_tag(&mut self, tag: Spanned<String>, field: &str) -> String {
        let text = tag.value.trim().to_owned();
        if !OLLAMA_TAG.is_match(&text) {
            let message = format!("`{text}` is not an Ollama model tag");
            self.report(&tag, &format!("{field}.ollama_tag"), message).hint(
                "write it as `name:tag` in lower case, e.g. `llama3.1:8b`, or as \
                     `hf.co/org/repo:QUANT`",
            );
        }
        text
    }

    fn size_gb(&mut self, size: &Spanned<f64>, field: &str) -> Option<u64> {
        if !size.value.is_finite() || size.value < 0.0 {
            let message = format!("must be zero or more, got {}", size.value);
            self.report(size, field, message);
            return None;
        }
        // Sizes are at most a few thousand GiB; the product fits easily in u64.
        Some((size.value * GB).round() as u64)
    }

    fn suite(&mut self, suite: Spanned<String>, field: &str) -> String {
        let text = suite.value.trim().to_owned();
        if !SUITES.contains(&text.as_str()) {
            let problem =
                self.report(&suite, &format!("{field}.suite"), format!("unknown suite `{text}`"));
            match did_you_mean(&text, SUITES.iter().copied()) {
                Some(near) => problem.hint(format!("did you mean `{near}`?")),
                None => problem.hint(format!("known suites: {}", SUITES.join(", "))),
            };
        }
        text
    }

    fn formats(
        &mut self,
        kind: EngineKind,
        raw: Option<Spanned<Vec<Spanned<String>>>>,
        field: &str,
    ) -> Vec<Format> {
        let field = format!("{field}.formats");
        let Some(list) = raw else {
            return kind.default_formats().to_vec();
        };
        if kind == EngineKind::Openai {
            self.report(&list, &field, "`openai` serves whatever its server has loaded".into())
                .hint("remove `formats` from this engine");
            return Vec::new();
        }
        if list.value.is_empty() {
            self.report(&list, &field, "`formats` is empty: this engine would plan nothing".into());
        }
        let mut formats = Vec::new();
        for name in &list.value {
            match Format::parse(name.value.trim()) {
                Some(format) if kind.formats().contains(&format) => {
                    if !formats.contains(&format) {
                        formats.push(format);
                    }
                }
                Some(format) => {
                    let accepted: Vec<&str> = kind.formats().iter().map(|f| f.name()).collect();
                    let message = format!("engine `{kind}` cannot load `{format}` models");
                    self.report(name, &field, message)
                        .hint(format!("`{kind}` accepts {}", accepted.join(", ")));
                }
                None => {
                    let message = format!("unknown format `{}`", name.value);
                    let problem = self.report(name, &field, message);
                    match did_you_mean(&name.value, Format::NAMES.iter().copied()) {
                        Some(near) => problem.hint(format!("did you mean `{near}`?")),
                        None => {
                            problem.hint(format!("known formats: {}", Format::NAMES.join(", ")))
                        }
                    };
                }
            }
        }
        // Keep the engine's own preference order whatever order the file lists them in.
        formats.sort_by_key(|format| kind.formats().iter().position(|known| known == format));
        formats
    }

    fn engine_config(
        &mut self,
        kind: EngineKind,
        mut raw: RawEngineConfig,
        field: &str,
        name: &Spanned<String>,
    ) -> EngineConfig {
        let field = format!("{field}.config");
        let mut config = EngineConfig::default();
        self.server_keys(kind, &mut raw, &field, &mut config);
        config.extra_args = raw.extra_args;
        if let Some(mode) = raw.mode {
            config.mode = match mode.value.trim() {
                "native" => EngineMode::Native,
                "docker" if kind.has_docker_mode() => EngineMode::Docker,
                "docker" => {
                    let message = format!("engine `{kind}` has no Docker mode");
                    self.report(&mode, &format!("{field}.mode"), message);
                    EngineMode::Native
                }
                other => {
                    let message = format!("unknown mode `{other}`");
                    self.report(&mode, &format!("{field}.mode"), message)
                        .hint("use `native` or `docker`");
                    EngineMode::Native
                }
            };
        }
        config.binary = raw.binary.map(|binary| {
            if !kind.is_managed() {
                let message = "`openai` engines are never started by kitt".to_owned();
                self.report(&binary, &format!("{field}.binary"), message)
                    .hint("remove `binary`; set `base_url` to the running server");
            }
            expand_home(binary.value.trim())
        });
        config.image = raw.image.map(|image| {
            let text = image.value.trim().to_owned();
            if config.mode != EngineMode::Docker {
                self.report(
                    &image,
                    &format!("{field}.image"),
                    "`image` applies to Docker mode only".into(),
                )
                .hint("set `mode: docker`");
            } else if let Some(problem) = crate::engine::docker::image_problem(&text) {
                let message = format!("`{text}` is not a container image reference: {problem}");
                self.report(&image, &format!("{field}.image"), message).hint(
                    "write it as `repository[:tag]`, e.g. `ghcr.io/ggml-org/llama.cpp:server`",
                );
            }
            text
        });
        config.gpus = raw.gpus.and_then(|gpus| self.gpus(&gpus, config.mode, &field));
        config.base_url = self.base_url(kind, raw.base_url, &field, name);
        config.model = raw.model.map(|model| {
            if kind.is_managed() {
                let message = "only `openai` engines take a served `model` id".to_owned();
                self.report(&model, &format!("{field}.model"), message);
            }
            model.value.trim().to_owned()
        });
        config.context_size =
            self.bounded(raw.context_size, &field, "context_size", engine_limits::CONTEXT_SIZE);
        config.gpu_layers =
            self.bounded(raw.gpu_layers, &field, "gpu_layers", engine_limits::GPU_LAYERS);
        config.parallel = self.bounded(raw.parallel, &field, "parallel", engine_limits::PARALLEL);
        config.threads = self.bounded(raw.threads, &field, "threads", engine_limits::THREADS);
        config.keep_alive = raw.keep_alive.and_then(|value| {
            let key = format!("{field}.keep_alive");
            if kind != EngineKind::Ollama {
                let message = format!("engine `{kind}` has no `keep_alive`; only `ollama` does");
                self.report(&value, &key, message);
                return None;
            }
            match crate::engine::ollama::settings::keep_alive(&value.value) {
                Ok(_) => Some(value.value.trim().to_owned()),
                Err(message) => {
                    self.report(&value, &key, message);
                    None
                }
            }
        });
        if let Some(name) = raw.profile {
            match crate::engine::profile::load(name.value.trim(), kind, None) {
                Ok(profile) => profile.apply(&mut config),
                Err(error) => {
                    self.report(&name, &format!("{field}.profile"), error.to_string());
                }
            }
        }
        if kind == EngineKind::Ollama
            && let Err(message) =
                crate::engine::ollama::settings::extra_environment(&config.extra_args)
        {
            self.report(name, &format!("{field}.extra_args"), message);
        }
        config
    }

    /// `gpus`: only for containers, since a native engine sees every GPU anyway.
    fn gpus(&mut self, raw: &Spanned<RawGpus>, mode: EngineMode, field: &str) -> Option<Gpus> {
        let field = format!("{field}.gpus");
        if mode != EngineMode::Docker {
            self.report(raw, &field, "`gpus` applies to Docker mode only".into()).hint(
                "set `mode: docker`, or choose GPUs of a native engine with `gpu_layers` and \
                 CUDA_VISIBLE_DEVICES",
            );
            return None;
        }
        let parsed = match &raw.value {
            RawGpus::Count(count) => Gpus::count(*count),
            RawGpus::Text(text) => Gpus::parse(text),
            RawGpus::List(devices) => Gpus::devices(devices.iter().map(|d| d.trim())),
        };
        parsed
            .map_err(|message| {
                self.report(raw, &field, message);
            })
            .ok()
    }

    fn base_url(
        &mut self,
        kind: EngineKind,
        raw: Option<Spanned<String>>,
        field: &str,
        name: &Spanned<String>,
    ) -> Option<String> {
        match (kind, raw) {
            (EngineKind::Openai, None) => {
                self.report(
                    name,
                    &format!("{field}.base_url"),
                    "an `openai` engine needs `base_url`".into(),
                )
                .hint("set it to the running server, e.g. `http://127.0.0.1:8000/v1`");
                None
            }
            (EngineKind::Openai, Some(url)) => Some(self.url(url, &format!("{field}.base_url"))),
            (_, Some(url)) => {
                let message = format!("engine `{kind}` is started by kitt on a port it chooses");
                self.report(&url, &format!("{field}.base_url"), message)
                    .hint("use the `openai` engine to benchmark a server that is already running");
                None
            }
            (_, None) => None,
        }
    }

    /// `max_parallel`: a positive whole number; set without `parallel:
    /// true` it changes nothing, which is worth a warning.
    fn max_parallel(&mut self, value: Option<Spanned<i64>>, parallel: bool) -> Option<u32> {
        let value = value?;
        let Ok(count) = u32::try_from(value.value) else {
            let message = format!("must be a positive whole number, got {}", value.value);
            self.report(&value, "max_parallel", message)
                .hint("write how many runs may run at once, e.g. `max_parallel: 2`");
            return None;
        };
        if count == 0 {
            self.report(&value, "max_parallel", "must be a positive whole number, got 0".into())
                .hint("write how many runs may run at once, e.g. `max_parallel: 2`");
            return None;
        }
        if !parallel {
            self.warnings.push(format!(
                "max_parallel: {count} has no effect without `parallel: true`; runs go one at a time"
            ));
        }
        Some(count)
    }

    pub(super) fn bounded<T: TryFrom<i64>>(
        &mut self,
        value: Option<Spanned<i64>>,
        field: &str,
        key: &str,
        (min, max): (i64, i64),
    ) -> Option<T> {
        let value = value?;
        if value.value < min || value.value > max {
            let message = format!("must be between {min} and {max}, got {}", value.value);
            self.report(&value, &format!("{field}.{key}"), message);
            return None;
        }
        T::try_from(value.value).ok()
    }

    pub(super) fn url(&mut self, url: Spanned<String>, field: &str) -> String {
        let text = url.value.trim().to_owned();
        let has_scheme = text.starts_with("http://") || text.starts_with("https://");
        if !has_scheme || text.len() <= "https://".len() {
            // The URL is not echoed: a webhook's path often carries its token.
            self.report(&url, field, "the value is not an http(s) URL".into())
                .hint("write it as http://HOST[:PORT]/PATH or https://…");
        }
        text
    }

    /// `devon_url`: an http(s) base URL without credentials or a query (the
    /// key goes in `devon_api_key`).
    fn devon_url(&mut self, url: Spanned<String>) -> String {
        let before = self.problems.len();
        let text = self.url(url.clone(), "devon_url");
        let parsed = reqwest::Url::parse(&text);
        let extra = parsed.as_ref().is_ok_and(|parsed| {
            !parsed.username().is_empty() || parsed.password().is_some() || parsed.query().is_some()
        });
        if self.problems.len() == before && (parsed.is_err() || extra) {
            self.report(
                &url,
                "devon_url",
                "the URL carries credentials or a query, or does not parse".into(),
            )
            .hint("write it as http://HOST[:PORT]/; put the key in devon_api_key or DEVON_API_KEY");
        }
        text
    }

    fn disk(&mut self, raw: RawDisk) -> DiskPolicy {
        let reserve = match raw.reserve_gb {
            Some(reserve) => self.size_gb(&reserve, "disk.reserve_gb").unwrap_or_default(),
            None => (DEFAULT_RESERVE_GB * GB) as u64,
        };
        let storage_path = raw.storage_path.and_then(|path| {
            let text = path.value.trim();
            if text.is_empty() {
                self.report(&path, "disk.storage_path", "the path is empty".into());
                return None;
            }
            Some(expand_home(text))
        });
        DiskPolicy {
            reserve_bytes: reserve,
            storage_path,
            cleanup_after_run: raw.cleanup_after_run.unwrap_or(true),
            prefetch: raw.prefetch.unwrap_or(true),
        }
    }

    fn max_model_size(&mut self, raw: RawResourceLimits) -> Option<u64> {
        let limit = raw.max_model_size_gb?;
        self.size_gb(&limit, "resource_limits.max_model_size_gb").filter(|bytes| *bytes > 0)
    }

    fn filter(&mut self, skip: &[Spanned<String>], include: &[Spanned<String>]) -> QuantFilter {
        QuantFilter {
            skip: skip.iter().filter_map(|p| self.glob(p, "quant_filter.skip_patterns")).collect(),
            include_only: include
                .iter()
                .filter_map(|p| self.glob(p, "quant_filter.include_only"))
                .collect(),
        }
    }

    fn glob(&mut self, pattern: &Spanned<String>, field: &str) -> Option<QuantGlob> {
        match QuantGlob::new(&pattern.value) {
            Ok(glob) => Some(glob),
            Err(error) => {
                self.report(pattern, field, error.to_string());
                None
            }
        }
    }

    fn engine_filter(&mut self, raw: &Spanned<RawEngineQuantFilter>, field: &str) -> QuantFilter {
        let field = format!("{field}.quant_filter");
        let mut compile = |patterns: &[String]| {
            let mut globs = Vec::new();
            for pattern in patterns {
                match QuantGlob::new(pattern) {
                    Ok(glob) => globs.push(glob),
                    Err(error) => {
                        self.report(raw, &field, error.to_string());
                    }
                }
            }
            globs
        };
        let skip = compile(&raw.value.skip_patterns);
        let include_only = compile(&raw.value.include_only);
        QuantFilter { skip, include_only }
    }
}

/// Expands a leading `~` to the home directory.
pub fn expand_home(path: &str) -> PathBuf {
    match path.strip_prefix("~/") {
        Some(rest) => {
            std::env::home_dir().map_or_else(|| PathBuf::from(path), |home| home.join(rest))
        }
        None if path == "~" => std::env::home_dir().unwrap_or_else(|| PathBuf::from(path)),
        None => PathBuf::from(path),
    }
}
