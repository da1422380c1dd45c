//! The wizard's questions, section by section, on the terminal.
//!
//! Prompts draw on stderr (inquire's terminal); section headings go there too,
//! so stdout carries only what the command prints itself.

use std::path::PathBuf;

use inquire::list_option::ListOption;
use inquire::validator::Validation;
use inquire::{Confirm, CustomUserError, MultiSelect, Select, Text};

use super::draft::{Draft, DraftEngine, DraftModel};
use super::{EngineChoice, Offer, Stopped};
use crate::acquire::local::LocalRepo;
use crate::config::SUITES;
use crate::engine::EngineKind;

type Answer<T> = Result<T, Stopped>;

/// A check of the answer's form before it goes into the draft (a number
/// where a number is needed); `None` when the form is right.
type Form = fn(&str) -> Option<String>;

/// A question: its text, default and help line.
struct Question<'a> {
    message: &'a str,
    default: Option<&'a str>,
    help: Option<&'a str>,
}

impl<'a> Question<'a> {
    fn new(message: &'a str) -> Self {
        Question { message, default: None, help: None }
    }

    fn default(mut self, default: &'a str) -> Self {
        self.default = Some(default);
        self
    }

    fn help(mut self, help: &'a str) -> Self {
        self.help = Some(help);
        self
    }
}

/// Asks every section of the campaign in turn and returns the draft.
pub fn ask(offer: &Offer) -> Answer<Draft> {
    let mut draft = Draft::default();

    heading("Campaign");
    let question = Question::new("Campaign name:").default("my-campaign");
    checked_text(&mut draft, &question, "campaign_name", None, |d, v| {
        v.trim().clone_into(&mut d.campaign_name);
    })?;
    let question = Question::new("Description (empty for none):");
    checked_text(&mut draft, &question, "description", None, |d, v| {
        v.trim().clone_into(&mut d.description);
    })?;

    heading("Models");
    models(&mut draft, offer)?;
    heading("Engines");
    engines(&mut draft, &offer.engines)?;
    heading("Quantization filter");
    quant_filter(&mut draft)?;
    heading("Resource limits");
    let question = Question::new("Largest model to run, in GB (empty for no limit):");
    checked_text(
        &mut draft,
        &question,
        "resource_limits.max_model_size_gb",
        Some(number_form),
        |d, v| d.resource_limits.max_model_size_gb = number(v),
    )?;
    heading("Disk");
    disk(&mut draft, offer)?;
    heading("Notifications");
    notifications(&mut draft)?;
    Ok(draft)
}

/// Asks where to save the file.
pub fn ask_save_path(default: &str) -> Answer<PathBuf> {
    let answer = Text::new("Save the campaign to:")
        .with_default(default)
        .with_validator(|input: &str| Ok(verdict(required(input))))
        .prompt()?;
    Ok(PathBuf::from(answer.trim()))
}

/// Asks a yes/no question.
pub fn confirm(message: &str, default: bool) -> Answer<bool> {
    Ok(Confirm::new(message).with_default(default).prompt()?)
}

fn heading(title: &str) {
    eprintln!("\n== {title} ==");
}

/// Offers the stored models, then asks for models by hand until the user
/// has enough (at least one).
fn models(draft: &mut Draft, offer: &Offer) -> Answer<()> {
    if !offer.local.is_empty() {
        let labels: Vec<String> = offer.local.iter().map(local_label).collect();
        let message = format!("Models found under {}:", offer.storage_root.display());
        let chosen = MultiSelect::new(&message, labels.clone())
            .with_help_message("space selects, enter confirms, typing filters")
            .prompt()?;
        for label in chosen {
            if let Some(index) = labels.iter().position(|known| *known == label) {
                add_local(draft, &offer.local[index])?;
            }
        }
    }
    if draft.models.is_empty() {
        add_by_hand(draft)?;
    }
    while confirm("Add another model by its repository or Ollama tag?", false)? {
        add_by_hand(draft)?;
    }
    Ok(())
}

fn local_label(repo: &LocalRepo) -> String {
    let bytes: u64 = repo.files.iter().map(|file| file.size).sum();
    let gib = bytes as f64 / crate::config::GB;
    let format = if is_gguf(repo) { "gguf" } else { "safetensors" };
    format!("{} ({format}, {} files, {gib:.1} GB)", repo.repo, repo.files.len())
}

fn is_gguf(repo: &LocalRepo) -> bool {
    repo.files.iter().any(|file| file.path.to_ascii_lowercase().ends_with(".gguf"))
}

/// A stored repository as a model: its own repository is its source.
fn add_local(draft: &mut Draft, repo: &LocalRepo) -> Answer<()> {
    let index = draft.models.len();
    let mut model = DraftModel::default();
    if is_gguf(repo) {
        model.gguf_repo = Some(repo.repo.clone());
    } else {
        model.safetensors_repo = Some(repo.repo.clone());
    }
    draft.models.push(model);
    eprintln!("Model from {}:", repo.repo);
    model_name(draft, index, &short_name(&repo.repo))?;
    model_params(draft, index)
}

/// The repository's name without its organisation and a `-GGUF` suffix.
fn short_name(repo: &str) -> String {
    let name = repo.rsplit('/').next().unwrap_or(repo);
    let trimmed = name.strip_suffix("-GGUF").or_else(|| name.strip_suffix("-gguf"));
    trimmed.unwrap_or(name).to_owned()
}

fn add_by_hand(draft: &mut Draft) -> Answer<()> {
    let index = draft.models.len();
    draft.models.push(DraftModel::default());
    model_name(draft, index, "")?;
    model_params(draft, index)?;
    model_sources(draft, index)
}

fn model_name(draft: &mut Draft, index: usize, default: &str) -> Answer<()> {
    // The name is checked before the sources are asked: a stand-in source
    // keeps the loader's "names no source" problem out of this answer.
    let mut probe = draft.clone();
    let model = &mut probe.models[index];
    if model.gguf_repo.is_none() && model.safetensors_repo.is_none() && model.ollama_tag.is_none() {
        model.gguf_repo = Some("wizard/stand-in".into());
    }
    let mut question = Question::new("  Model name (part of every run key):");
    if !default.is_empty() {
        question = question.default(default);
    }
    let field = format!("models[{index}].name");
    let name = checked_text(&mut probe, &question, &field, Some(required), move |d, v| {
        v.trim().clone_into(&mut d.models[index].name);
    })?;
    name.trim().clone_into(&mut draft.models[index].name);
    Ok(())
}

fn model_params(draft: &mut Draft, index: usize) -> Answer<()> {
    let question = Question::new("  Parameter count (e.g. 8B, 1.5B, 8x7B; empty to skip):")
        .help("used to estimate sizes when the source does not list them");
    let field = format!("models[{index}].params");
    checked_text(draft, &question, &field, None, move |d, v| d.models[index].params = optional(v))?;
    Ok(())
}

/// The three sources, asked again until at least one is given.
fn model_sources(draft: &mut Draft, index: usize) -> Answer<()> {
    loop {
        let question = Question::new("  Safetensors repository (org/name; empty for none):")
            .help("loaded by vllm, sglang, exllamav2, mlx");
        let field = format!("models[{index}].safetensors_repo");
        checked_text(draft, &question, &field, None, move |d, v| {
            d.models[index].safetensors_repo = optional(v);
        })?;
        let question = Question::new("  GGUF repository (org/name; empty for none):")
            .help("loaded by llama_cpp, ollama, vllm");
        let field = format!("models[{index}].gguf_repo");
        checked_text(draft, &question, &field, None, move |d, v| {
            d.models[index].gguf_repo = optional(v);
        })?;
        let question = Question::new("  Ollama tag (e.g. llama3.1:8b; empty for none):");
        let field = format!("models[{index}].ollama_tag");
        checked_text(draft, &question, &field, None, move |d, v| {
            d.models[index].ollama_tag = optional(v);
        })?;

        let problems = draft.problems_at(&format!("models[{index}].name"));
        if problems.is_empty() {
            return Ok(());
        }
        for problem in problems {
            eprintln!("  {problem}");
        }
    }
}

/// The engines to benchmark, each with its suite, formats and, for
/// `openai`, the server's URL.
fn engines(draft: &mut Draft, choices: &[EngineChoice]) -> Answer<()> {
    let labels: Vec<String> = choices.iter().map(engine_label).collect();
    let at_least_one = |chosen: &[ListOption<&String>]| {
        Ok::<_, CustomUserError>(if chosen.is_empty() {
            Validation::Invalid("choose at least one engine".into())
        } else {
            Validation::Valid
        })
    };
    let chosen = MultiSelect::new("Engines to benchmark:", labels.clone())
        .with_help_message("space selects, enter confirms, typing filters")
        .with_validator(at_least_one)
        .prompt()?;
    for label in chosen {
        if let Some(index) = labels.iter().position(|known| *known == label) {
            engine(draft, choices[index].kind)?;
        }
    }
    Ok(())
}

fn engine_label(choice: &EngineChoice) -> String {
    let formats: Vec<&str> = choice.kind.formats().iter().map(|format| format.name()).collect();
    let formats =
        if formats.is_empty() { "whatever its server serves".into() } else { formats.join(", ") };
    let usable = if choice.usable { "usable" } else { "not usable here" };
    format!("{} [{formats}] {usable}: {}", choice.kind, choice.detail)
}

fn engine(draft: &mut Draft, kind: EngineKind) -> Answer<()> {
    let index = draft.engines.len();
    draft.engines.push(DraftEngine { name: kind.name().to_owned(), ..Default::default() });

    let standard = SUITES.iter().position(|suite| *suite == "standard").unwrap_or(0);
    let suite = Select::new(&format!("  Suite for {kind}:"), SUITES.to_vec())
        .with_starting_cursor(standard)
        .prompt()?;
    draft.engines[index].suite = suite.to_owned();

    if kind.formats().len() > 1 {
        let names: Vec<&str> = kind.formats().iter().map(|format| format.name()).collect();
        let defaults: Vec<usize> = kind
            .default_formats()
            .iter()
            .filter_map(|format| kind.formats().iter().position(|known| known == format))
            .collect();
        let chosen = MultiSelect::new(&format!("  Formats {kind} loads:"), names.clone())
            .with_default(&defaults)
            .with_validator(|chosen: &[ListOption<&&str>]| {
                Ok::<_, CustomUserError>(if chosen.is_empty() {
                    Validation::Invalid("choose at least one format".into())
                } else {
                    Validation::Valid
                })
            })
            .prompt()?;
        let default_names: Vec<&str> = defaults.iter().map(|i| names[*i]).collect();
        let same = chosen.len() == default_names.len()
            && chosen.iter().all(|name| default_names.contains(name));
        if !same {
            draft.engines[index].formats = chosen.iter().map(|name| (*name).to_owned()).collect();
        }
    }

    if kind == EngineKind::Openai {
        let question =
            Question::new("  URL of the running server (e.g. http://127.0.0.1:8000/v1):");
        let field = format!("engines[{index}].config.base_url");
        checked_text(draft, &question, &field, None, move |d, v| {
            d.engines[index].config.base_url = optional(v);
        })?;
    }
    Ok(())
}

fn quant_filter(draft: &mut Draft) -> Answer<()> {
    let question = Question::new("Quantizations to skip (globs, comma-separated; empty for none):")
        .help("for example IQ1_*, IQ2_*");
    checked_text(draft, &question, "quant_filter.skip_patterns", None, |d, v| {
        d.quant_filter.skip_patterns = patterns(v);
    })?;
    let question = Question::new("Run only these quantizations (globs; empty for all):")
        .help("for example Q4_K_M, Q8_0");
    checked_text(draft, &question, "quant_filter.include_only", None, |d, v| {
        d.quant_filter.include_only = patterns(v);
    })?;
    Ok(())
}

fn disk(draft: &mut Draft, offer: &Offer) -> Answer<()> {
    let question = Question::new("Free disk space to keep, in GB:").default("100");
    checked_text(draft, &question, "disk.reserve_gb", Some(number_form), |d, v| {
        d.disk.reserve_gb = number(v).unwrap_or(100.0);
    })?;

    let root = offer.storage_root.display().to_string();
    let question = Question::new("Where models are stored and downloaded to:")
        .default(&root)
        .help("the default follows KITT_MODELS_DIR and is not written to the file");
    let default_root = root.clone();
    checked_text(draft, &question, "disk.storage_path", None, move |d, v| {
        let path = v.trim();
        d.disk.storage_path = (!path.is_empty() && path != default_root).then(|| path.to_owned());
    })?;

    draft.disk.cleanup_after_run = confirm("Delete downloaded models after their runs?", true)?;
    Ok(())
}

fn notifications(draft: &mut Draft) -> Answer<()> {
    let notes = &mut draft.notifications;
    notes.desktop = confirm("Desktop notifications?", false)?;
    notes.on_complete = confirm("Notify when the campaign completes?", true)?;
    notes.on_failure = confirm("Notify when a run fails?", true)?;

    let question = Question::new("Webhook URL (empty for none):");
    checked_text(draft, &question, "notifications.webhook_url", None, |d, v| {
        d.notifications.webhook_url = optional(v);
    })?;

    if !confirm("Send notifications by email?", false)? {
        return Ok(());
    }
    let question = Question::new("  SMTP relay host:");
    checked_text(draft, &question, "notifications.smtp_host", Some(required), |d, v| {
        d.notifications.smtp_host = optional(v);
    })?;
    let question = Question::new("  SMTP port:").default("587");
    checked_text(draft, &question, "notifications.smtp_port", Some(whole_form), |d, v| {
        d.notifications.smtp_port = v.trim().parse().ok();
    })?;
    let question = Question::new("  SMTP user (empty for none):")
        .help("the password is read from KITT_SMTP_PASSWORD, never from the file");
    checked_text(draft, &question, "notifications.smtp_user", None, |d, v| {
        d.notifications.smtp_user = optional(v);
    })?;
    let question = Question::new("  Send to address:");
    checked_text(draft, &question, "notifications.email", Some(required), |d, v| {
        d.notifications.email = optional(v);
    })?;
    Ok(())
}

/// Asks a text question until the answer has the right form and the config
/// loader finds no problem at `field` once `apply` has put it in the draft;
/// then puts it in the draft and returns it.
fn checked_text<F>(
    draft: &mut Draft,
    question: &Question,
    field: &str,
    form: Option<Form>,
    apply: F,
) -> Answer<String>
where
    F: Fn(&mut Draft, &str) + Clone + 'static,
{
    let base = draft.clone();
    let field = field.to_owned();
    let probe_apply = apply.clone();
    let validator = move |input: &str| {
        if let Some(problem) = form.and_then(|form| form(input)) {
            return Ok(verdict(Some(problem)));
        }
        let mut probe = base.clone();
        probe_apply(&mut probe, input);
        let problems = probe.problems_at(&field);
        Ok(verdict((!problems.is_empty()).then(|| problems.join("; "))))
    };
    let mut prompt = Text::new(question.message).with_validator(validator);
    if let Some(default) = question.default {
        prompt = prompt.with_default(default);
    }
    if let Some(help) = question.help {
        prompt = prompt.with_help_message(help);
    }
    let answer = prompt.prompt()?;
    apply(draft, &answer);
    Ok(answer)
}

fn verdict(problem: Option<String>) -> Validation {
    match problem {
        Some(problem) => Validation::Invalid(problem.into()),
        None => Validation::Valid,
    }
}

fn required(input: &str) -> Option<String> {
    input.trim().is_empty().then(|| "an answer is needed".to_owned())
}

fn number_form(input: &str) -> Option<String> {
    let text = input.trim();
    (!text.is_empty() && text.parse::<f64>().is_err()).then(|| format!("`{text}` is not a number"))
}

fn whole_form(input: &str) -> Option<String> {
    let text = input.trim();
    text.parse::<i64>().is_err().then(|| format!("`{text}` is not a whole number"))
}

fn number(input: &str) -> Option<f64> {
    input.trim().parse().ok()
}

fn optional(input: &str) -> Option<String> {
    let text = input.trim();
    (!text.is_empty()).then(|| text.to_owned())
}

/// Comma- or space-separated patterns.
fn patterns(input: &str) -> Vec<String> {
    input
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|pattern| !pattern.is_empty())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_name_drops_the_organisation_and_gguf_suffix() {
        assert_eq!(short_name("org/Tiny-Llama-GGUF"), "Tiny-Llama");
        assert_eq!(short_name("org/Qwen2.5-7B"), "Qwen2.5-7B");
    }

    #[test]
    fn patterns_split_on_commas_and_spaces() {
        assert_eq!(patterns(" IQ1_*, IQ2_*  Q3_K_S,,"), ["IQ1_*", "IQ2_*", "Q3_K_S"]);
        assert!(patterns("  ").is_empty());
    }

    #[test]
    fn forms_name_what_is_wrong() {
        assert_eq!(number_form("abc").as_deref(), Some("`abc` is not a number"));
        assert_eq!(number_form(""), None);
        assert_eq!(number_form("-5"), None);
        assert!(whole_form("5.5").is_some());
    }
}
