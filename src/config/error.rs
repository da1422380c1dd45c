//! Config errors that name the file, line, column and field, with a snippet.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::LazyLock;

use regex::Regex;

use serde_saphyr::Error as YamlError;
use serde_saphyr::MessageFormatter;

use super::raw::KEYS_ELSEWHERE;
use super::suggest::did_you_mean;

/// Why a campaign file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read campaign config `{}`", path.display())]
    Read {
        /// The file as given.
        path: PathBuf,
        /// The I/O failure.
        #[source]
        source: std::io::Error,
    },
    /// The file was read but holds one or more problems.
    #[error("{}", render(path, problems))]
    Invalid {
        /// The file as given.
        path: PathBuf,
        /// Each problem found, in file order.
        problems: Vec<Problem>,
    },
}

/// One problem in a config file, located at a line and column.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    /// 1-based line; 0 when the problem concerns the whole file.
    pub line: u64,
    /// 1-based column.
    pub column: u64,
    /// The field's path, as `disk.reserve_gb` or `models[1].name`; empty for the file.
    pub field: String,
    /// What is wrong.
    pub message: String,
    /// How to fix it, when kitt knows.
    pub help: Option<String>,
    /// The source line the problem is on.
    pub source_line: Option<String>,
}

impl Problem {
    /// A problem at a location, without a snippet (added when rendering against the source).
    pub fn at(
        line: u64,
        column: u64,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Problem {
            line,
            column,
            field: field.into(),
            message: message.into(),
            help: None,
            source_line: None,
        }
    }

    /// Adds a hint on how to fix the problem.
    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// Sets the hint on a problem already recorded.
    pub fn hint(&mut self, help: impl Into<String>) {
        self.help = Some(help.into());
    }

    /// Attaches the source line the problem points at, with any credential
    /// on it replaced, and removes credentials the message may echo.
    pub fn with_source(mut self, source: &str) -> Self {
        let secrets = SecretLines::scan(source);
        if self.line > 0 {
            let index = usize::try_from(self.line - 1).unwrap_or(usize::MAX);
            self.source_line = match secrets.lines.get(&index) {
                Some(redacted) => Some(redacted.clone()),
                None => source.lines().nth(index).map(|line| without_userinfo(&cut(line))),
            };
        }
        for value in &secrets.values {
            self.message = self.message.replace(value.as_str(), "<redacted>");
        }
        self.message = without_userinfo(&self.message);
        self
    }
}

/// Where a config's credentials are: the lines holding them (with their
/// redacted rendering) and the values themselves. Covers `key: value`,
/// quoted keys, block and multi-line values below a credential key, list
/// items under one, and credentials inside `{…}` flow mappings.
#[derive(Debug, Default)]
struct SecretLines {
    /// 0-based line → what to show instead.
    lines: HashMap<usize, String>,
    /// Credential values, to scrub from messages.
    values: Vec<String>,
}

impl SecretLines {
    fn scan(source: &str) -> SecretLines {
        let mut found = SecretLines::default();
        // The indentation of a credential key whose value may continue below
        // (block scalars, multi-line plain scalars, lists).
        let mut open_block: Option<usize> = None;
        // A quoted credential that has not closed yet, in any context.
        let mut open_quote: Option<char> = None;
        for (index, line) in source.lines().enumerate() {
            let indent = line.len() - line.trim_start().len();
            let trimmed = line.trim();
            if let Some(quote) = open_quote {
                found.value(trimmed.split(quote).next().unwrap_or_default());
                found.lines.insert(index, format!("{}<redacted>", &line[..indent]));
                if trimmed.contains(quote) {
                    open_quote = None;
                }
                continue;
            }
            if let Some(key_indent) = open_block {
                if trimmed.is_empty() || indent > key_indent {
                    found.value(trimmed.trim_start_matches("- "));
                    found.lines.insert(index, format!("{}<redacted>", &line[..indent]));
                    continue;
                }
                open_block = None;
            }
            if let Some(captures) = KEY_LINE.captures(line) {
                let key = &captures[3];
                if is_secret_key(key) {
                    let value = captures[4].trim();
                    let prefix = &captures[1];
                    found.lines.insert(index, format!("{prefix}{key}: <redacted>"));
                    open_quote = unclosed_quote(value);
                    open_block = Some(prefix.len());
                    found.value(value);
                    continue;
                }
            }
            for captures in FLOW_KEY.captures_iter(line) {
                if is_secret_key(&captures[2]) {
                    let value = captures[4].trim();
                    found.value(value);
                    found.lines.insert(index, format!("{}<redacted>", &line[..indent]));
                    open_quote = open_quote.or(unclosed_quote(value));
                }
            }
        }
        found
    }

    fn value(&mut self, value: &str) {
        // An anchor (`&name value`) names the value; the secret follows it.
        let value = without_anchor(value).trim_matches(['"', '\'']).trim();
        let indicator = value.starts_with(['|', '>', '*']) && value.len() <= 3;
        if value.chars().count() >= 3 && !indicator {
            self.values.push(value.to_owned());
        }
    }
}

/// A scalar without a leading anchor (`&name value` → `value`), trimmed.
fn without_anchor(value: &str) -> &str {
    let value = value.trim();
    match value.strip_prefix('&') {
        Some(anchored) => {
            anchored.split_once(char::is_whitespace).map_or("", |(_, rest)| rest.trim())
        }
        None => value,
    }
}

/// The quote a scalar opens without closing on its line, if any.
fn unclosed_quote(value: &str) -> Option<char> {
    let value = without_anchor(value);
    let quote = value.chars().next().filter(|c| matches!(c, '"' | '\''))?;
    (!value[1..].contains(quote)).then_some(quote)
}

/// A key and its value inside a `{…}` flow mapping.
static FLOW_KEY: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"[{,]\s*(["']?)([A-Za-z0-9_.-]+)(["']?)\s*:\s*("[^"]*"|'[^']*'|[^,}]*)"#)
        .expect("static regex")
});

/// Credentials in a URL: `scheme://user:password@`.
static URL_USERINFO: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"(?i)\b([a-z][a-z0-9+.-]*://)[^/@\s"']*@"#).expect("valid regex")
});

/// `text` with the credentials of any URL in it replaced.
fn without_userinfo(text: &str) -> String {
    URL_USERINFO.replace_all(text, "${1}<redacted>@").into_owned()
}

/// A `key: value` line, in any section or list.
static KEY_LINE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"^(\s*(?:-\s+)?)(["']?)([A-Za-z0-9_.-]+)["']?\s*:(.*)$"#).expect("static regex")
});

/// The config keys that hold credentials.
const SECRET_KEYS: &[&str] = &["hf_token", "smtp_password", "devon_api_key"];

/// Whether a key names a credential (a webhook URL's path usually carries
/// one), or is a misspelling of one.
pub fn is_secret_key(key: &str) -> bool {
    let lower = key.to_ascii_lowercase();
    // A tokenizer is a directory or a repository id, not a token.
    if lower == "tokenizer" {
        return false;
    }
    let looks_secret = ["tok", "pass", "pasw", "pwd", "secret", "key", "cred", "auth", "webhook"]
        .iter()
        .any(|part| lower.contains(part));
    looks_secret || did_you_mean(key, SECRET_KEYS.iter().copied()).is_some()
}

/// Source lines are shown up to this many characters.
const MAX_SNIPPET: usize = 160;

fn cut(line: &str) -> String {
    if line.chars().count() <= MAX_SNIPPET {
        return line.to_owned();
    }
    let head: String = line.chars().take(MAX_SNIPPET).collect();
    format!("{head} …")
}

fn render(path: &std::path::Path, problems: &[Problem]) -> String {
    let mut out = String::new();
    let count = problems.len();
    let noun = if count == 1 { "problem" } else { "problems" };
    out.push_str(&format!("campaign config `{}` has {count} {noun}", path.display()));
    for problem in problems {
        out.push_str("\n\n");
        out.push_str(&render_problem(path, problem));
    }
    out
}

fn render_problem(path: &std::path::Path, problem: &Problem) -> String {
    let mut out = String::new();
    let field =
        if problem.field.is_empty() { String::new() } else { format!("`{}`: ", problem.field) };
    if problem.line == 0 {
        out.push_str(&format!("  --> {}\n  {field}{}", path.display(), problem.message));
    } else {
        let location = format!("{}:{}:{}", path.display(), problem.line, problem.column);
        out.push_str(&format!("  --> {location}\n  {field}{}", problem.message));
    }
    if let Some(line) = &problem.source_line {
        let number = problem.line.to_string();
        let gutter = " ".repeat(number.len());
        let caret_pad = " ".repeat(usize::try_from(problem.column.saturating_sub(1)).unwrap_or(0));
        out.push_str(&format!("\n   {gutter}|\n   {number}| {line}\n   {gutter}| {caret_pad}^"));
    }
    if let Some(help) = &problem.help {
        out.push_str(&format!("\n  help: {help}"));
    }
    out
}

/// Turns a YAML or serde error into a located problem. `field` is the path
/// serde was at; serde-saphyr's `Spanned` wrapper adds a `.value` suffix.
pub fn problem_from_yaml(error: &YamlError, field: Option<String>, source: &str) -> Problem {
    let (line, column) = error.location().map_or((0, 0), |at| (at.line(), at.column()));
    let field = clean_path(field.unwrap_or_default());
    let problem = match error.without_snippet() {
        YamlError::SerdeUnknownField { field: key, expected, .. } => {
            unknown_key(&field, key, expected, line, column)
        }
        YamlError::SerdeMissingField { field: key, .. } => {
            let path = join(&field, key);
            Problem::at(line, column, path, format!("required field `{key}` is missing"))
        }
        YamlError::DuplicateMappingKey { key, .. } => {
            let key = key.clone().unwrap_or_default();
            let path = join(&field, &key);
            Problem::at(line, column, path, format!("key `{key}` appears twice in this mapping"))
                .help("remove one of them; kitt does not guess which one you meant")
        }
        YamlError::Eof { .. } if source.trim().is_empty() || only_comments(source) => {
            Problem::at(0, 0, "", "the file is empty")
                .help("a campaign needs at least `campaign_name`, `models` and `engines`")
        }
        YamlError::Unexpected { .. } if field.is_empty() => {
            Problem::at(line, column, "", "the top level must be a mapping of keys to values")
                .help("start the file with `campaign_name: <name>`")
        }
        YamlError::Unexpected { expected, .. } => {
            let wanted = match *expected {
                "mapping start" => "a mapping of keys to values",
                "sequence start" => "a list such as `[a, b]`",
                other if other.contains("scalar") => "a single value",
                other => other,
            };
            let found = scalar_at(source, line, column);
            let found = if found.is_empty() { "nothing".to_owned() } else { format!("`{found}`") };
            Problem::at(line, column, field, format!("expected {wanted}, found {found}"))
        }
        YamlError::MultipleDocuments { .. } => {
            Problem::at(line, column, field, "the file holds more than one YAML document")
                .help("a campaign is one document: remove the `---` separators")
        }
        YamlError::Budget { .. } => {
            Problem::at(line, column, field, "the file expands to too many YAML nodes")
                .help("anchors and aliases may repeat content at most a few times")
        }
        YamlError::InvalidScalar { ty, .. } => {
            let found = scalar_at(source, line, column);
            Problem::at(line, column, field, format!("expected {}, found `{found}`", noun(ty)))
        }
        YamlError::SerdeInvalidType { unexpected, expected, .. } => {
            Problem::at(line, column, field, format!("expected {expected}, found {unexpected}"))
        }
        other => {
            let message = serde_saphyr::DefaultMessageFormatter.format_message(other);
            Problem::at(line, column, field, message.into_owned())
        }
    };
    problem.with_source(source)
}

fn unknown_key(path: &str, key: &str, expected: &[&str], line: u64, column: u64) -> Problem {
    // serde's path already ends at the unknown key.
    let path = if path.is_empty() { key.to_owned() } else { path.to_owned() };
    let problem = Problem::at(line, column, path, format!("unknown key `{key}`"));
    if let Some(near) = did_you_mean(key, expected.iter().copied()) {
        return problem.help(format!("did you mean `{near}`?"));
    }
    if let Some((_, home)) = KEYS_ELSEWHERE.iter().find(|(name, _)| *name == key) {
        return problem.help(format!("`{key}` belongs under `{home}`"));
    }
    let allowed = expected.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", ");
    problem.help(format!("allowed keys here: {allowed}"))
}

fn noun(ty: &str) -> String {
    let ty = ty.to_ascii_lowercase();
    if ty.contains("float") || ty.starts_with('f') {
        "a number".to_owned()
    } else if ty.contains("int") || ty.starts_with('i') || ty.starts_with('u') {
        "a whole number".to_owned()
    } else if ty.contains("bool") {
        "`true` or `false`".to_owned()
    } else {
        format!("a value of type {ty}")
    }
}

fn scalar_at(source: &str, line: u64, column: u64) -> String {
    let index = usize::try_from(line.saturating_sub(1)).unwrap_or(usize::MAX);
    let start = usize::try_from(column.saturating_sub(1)).unwrap_or(0);
    let text = source.lines().nth(index).unwrap_or_default();
    let rest: String = text.chars().skip(start).collect();
    let value = rest.split(" #").next().unwrap_or_default();
    value.trim().to_owned()
}

fn only_comments(source: &str) -> bool {
    source.lines().all(|line| {
        let line = line.trim();
        line.is_empty() || line.starts_with('#') || line == "---" || line == "..."
    })
}

fn clean_path(path: String) -> String {
    let path = path.replace(".value", "");
    match path.as_str() {
        "." | "?" => String::new(),
        _ => path,
    }
}

fn join(section: &str, key: &str) -> String {
    if section.is_empty() { key.to_owned() } else { format!("{section}.{key}") }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: `{}`: {}", self.line, self.column, self.field, self.message)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_tokenizer_is_not_a_secret_but_tokens_are() {
        assert!(!super::is_secret_key("tokenizer"));
        assert!(super::is_secret_key("hf_token"));
        assert!(super::is_secret_key("tokenizer_token"));
    }
}
