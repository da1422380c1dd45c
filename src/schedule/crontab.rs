//! The user's crontab: reading it, finding kitt's lines, and installing an
//! edited copy through the `crontab` command.
//!
//! kitt owns exactly the lines that end with its marker comment,
//! `# kitt-schedule:<id>`; the id must match whole, so `nightly` never
//! touches `nightly-2`. Every other byte of the crontab — comments, blank
//! lines, variable assignments, other jobs — is written back as it was read.
//! The one exception: a last line without a newline gets one when kitt adds
//! a line after it, because cron refuses a crontab whose last line lacks one.
//!
//! Decisions:
//! - A line being replaced stays where it is (variable assignments above it
//!   keep applying); a new line goes at the end.
//! - `crontab -l` failing for any reason other than "no crontab for USER" is
//!   an error: kitt never installs a crontab it could not read, which would
//!   drop the user's lines.
//! - A crontab left with nothing in it is removed (`crontab -r`), so
//!   scheduling and unscheduling on a user without a crontab leaves none.
//! - `KITT_CRONTAB_USER` names another user's crontab (`crontab -u USER`,
//!   which needs root); tests use it to work on a throwaway user.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The environment variable naming the user whose crontab kitt edits.
pub const USER_ENV: &str = "KITT_CRONTAB_USER";

/// The longest command cron accepts after the time fields (Debian's cron
/// refuses longer lines with "command too long").
pub const MAX_COMMAND_BYTES: usize = 998;

/// A crontab failure; an environment problem for the caller.
#[derive(Debug, thiserror::Error)]
pub enum CrontabError {
    /// The command could not be started.
    #[error("cannot run `{program}`")]
    Spawn {
        /// The crontab program.
        program: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// `crontab -l` failed other than for a missing crontab.
    #[error("cannot read the crontab{user}: `crontab` said: {message}")]
    Read {
        /// " of USER" when another user's.
        user: String,
        /// What crontab printed.
        message: String,
    },
    /// `crontab -` or `crontab -r` refused.
    #[error("cannot install the crontab{user}: `crontab` said: {message}")]
    Write {
        /// " of USER" when another user's.
        user: String,
        /// What crontab printed.
        message: String,
    },
}

/// The `crontab` command for one user.
#[derive(Debug, Clone)]
pub struct Crontab {
    program: PathBuf,
    user: Option<String>,
}

impl Crontab {
    /// The `crontab` command on `PATH`, for the user `KITT_CRONTAB_USER`
    /// names or the current one; `None` when there is no such command.
    pub fn find() -> Option<Crontab> {
        let program = find_on_path("crontab")?;
        let user = std::env::var(USER_ENV).ok().filter(|user| !user.trim().is_empty());
        Some(Crontab { program, user })
    }

    /// The user named with `-u`, if any.
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// " of USER" for messages, or "" for the current user.
    pub fn whose(&self) -> String {
        self.user.as_ref().map(|user| format!(" of user `{user}`")).unwrap_or_default()
    }

    /// The crontab's text; empty when the user has none.
    pub fn read(&self) -> Result<String, CrontabError> {
        let output = self.command().arg("-l").stdin(Stdio::null()).output().map_err(|source| {
            CrontabError::Spawn { program: self.program.display().to_string(), source }
        })?;
        if output.status.success() {
            return Ok(String::from_utf8_lossy(&output.stdout).into_owned());
        }
        let message = String::from_utf8_lossy(&output.stderr).trim().to_owned();
        if message.starts_with("no crontab for ") {
            return Ok(String::new());
        }
        Err(CrontabError::Read { user: self.whose(), message: or_status(message, output.status) })
    }

    /// Installs `text` as the whole crontab (removes it when `text` is empty).
    pub fn install(&self, text: &str) -> Result<(), CrontabError> {
        let spawn =
            |source| CrontabError::Spawn { program: self.program.display().to_string(), source };
        let output = if text.is_empty() {
            self.command().arg("-r").stdin(Stdio::null()).output().map_err(spawn)?
        } else {
            let mut child = self
                .command()
                .arg("-")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .map_err(spawn)?;
            let written = child.stdin.take().map(|mut stdin| stdin.write_all(text.as_bytes()));
            let output = child.wait_with_output().map_err(spawn)?;
            if let Some(Err(source)) = written {
                return Err(spawn(source));
            }
            output
        };
        if output.status.success() {
            return Ok(());
        }
        let message = String::from_utf8_lossy(&output.stderr).trim().to_owned();
        if text.is_empty() && message.starts_with("no crontab for ") {
            return Ok(());
        }
        Err(CrontabError::Write { user: self.whose(), message: or_status(message, output.status) })
    }

    fn command(&self) -> Command {
        let mut command = Command::new(&self.program);
        if let Some(user) = &self.user {
            command.args(["-u", user]);
        }
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
        command
    }
}

fn or_status(message: String, status: std::process::ExitStatus) -> String {
    if message.is_empty() { format!("nothing ({status})") } else { message }
}

/// An executable `name` in one of `PATH`'s directories.
pub fn find_on_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;

    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .filter(|dir| !dir.as_os_str().is_empty())
        .map(|dir| dir.join(name))
        .find(|candidate| {
            std::fs::metadata(candidate)
                .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        })
}

/// The marker comment that ends the line of schedule `id`.
pub fn marker(id: &str) -> String {
    format!("# kitt-schedule:{id}")
}

/// Whether `line` (without its newline) is the line of schedule `id`.
fn is_line_of(line: &str, id: &str) -> bool {
    let line = line.trim_end();
    let marker = marker(id);
    line.strip_suffix(&marker).is_some_and(|rest| rest.is_empty() || rest.ends_with([' ', '\t']))
}

/// The crontab's line for schedule `id`, without its newline.
pub fn find_line<'a>(crontab: &'a str, id: &str) -> Option<&'a str> {
    crontab.lines().find(|line| is_line_of(line, id))
}

/// The ids of every kitt line in the crontab.
pub fn kitt_ids(crontab: &str) -> Vec<String> {
    crontab
        .lines()
        .filter_map(|line| line.trim_end().rsplit_once("# kitt-schedule:"))
        .map(|(_, id)| id.to_owned())
        .filter(|id| crate::campaign::valid_campaign_id(id))
        .collect()
}

/// The crontab with schedule `id`'s line set to `line` (given without a
/// newline): replaced where it was, or appended; every other byte kept.
pub fn with_line(crontab: &str, id: &str, line: &str) -> String {
    let mut out = String::with_capacity(crontab.len() + line.len() + 2);
    let mut placed = false;
    for piece in crontab.split_inclusive('\n') {
        let text = piece.strip_suffix('\n').unwrap_or(piece);
        if is_line_of(text, id) {
            if !placed {
                out.push_str(line);
                out.push('\n');
                placed = true;
            }
        } else {
            out.push_str(piece);
        }
    }
    if !placed {
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// The crontab without schedule `id`'s line, and whether it had one.
pub fn without_line(crontab: &str, id: &str) -> (String, bool) {
    let mut out = String::with_capacity(crontab.len());
    let mut removed = false;
    for piece in crontab.split_inclusive('\n') {
        let text = piece.strip_suffix('\n').unwrap_or(piece);
        if is_line_of(text, id) {
            removed = true;
        } else {
            out.push_str(piece);
        }
    }
    (out, removed)
}

/// What a fire's crontab line runs.
#[derive(Debug)]
pub struct LineSpec<'a> {
    /// The cron expression.
    pub expr: &'a str,
    /// The kitt binary, absolute.
    pub kitt: &'a Path,
    /// The kitt home, absolute.
    pub home: &'a Path,
    /// The schedule.
    pub id: &'a str,
    /// Variables set for the fire (PATH first), in order.
    pub env: &'a [(String, String)],
    /// Where cron appends the fire's own output.
    pub log: &'a Path,
}

/// A value that cannot go on a crontab line.
#[derive(Debug, thiserror::Error)]
pub enum LineError {
    /// A newline, or a `%` after a backslash (cron's newline escape).
    #[error("{what} cannot be written on a crontab line: {why}")]
    Unwritable {
        /// Which value.
        what: String,
        /// Why.
        why: &'static str,
    },
    /// Longer than cron reads.
    #[error(
        "the crontab line would run a {length}-byte command, but cron reads at most {max}; \
         shorten PATH or the paths of kitt, its home or the campaign"
    )]
    TooLong {
        /// The command's length.
        length: usize,
        /// The limit.
        max: usize,
    },
}

/// The crontab line of a schedule (without a newline):
/// `EXPR VAR='…' … '/abs/kitt' --home '/abs/home' campaign fire ID
/// >>'/abs/log' 2>&1 # kitt-schedule:ID`.
pub fn render(spec: &LineSpec<'_>) -> Result<String, LineError> {
    let mut command = String::new();
    for (name, value) in spec.env {
        command.push_str(&format!("{name}={} ", cron_word(value, name)?));
    }
    command.push_str(&cron_word(&spec.kitt.display().to_string(), "the kitt binary's path")?);
    command.push_str(" --home ");
    command.push_str(&cron_word(&spec.home.display().to_string(), "the kitt home's path")?);
    command.push_str(&format!(" campaign fire {} >>", spec.id));
    command.push_str(&cron_word(&spec.log.display().to_string(), "the log's path")?);
    command.push_str(&format!(" 2>&1 {}", marker(spec.id)));
    if command.len() > MAX_COMMAND_BYTES {
        return Err(LineError::TooLong { length: command.len(), max: MAX_COMMAND_BYTES });
    }
    Ok(format!("{} {command}", spec.expr))
}

/// A shell word for a crontab line: quoted for the shell, with `%` escaped
/// for cron (which turns a bare `%` into a newline).
fn cron_word(value: &str, what: &str) -> Result<String, LineError> {
    let unwritable = |why| LineError::Unwritable { what: what.to_owned(), why };
    if value.contains(['\n', '\r']) {
        return Err(unwritable("it holds a line break"));
    }
    if value.contains("\\%") {
        return Err(unwritable("it holds `\\%`, which cron would change"));
    }
    Ok(crate::campaign::shell_word(value).replace('%', "\\%"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_match_whole() {
        let crontab =
            "0 1 * * * a # kitt-schedule:nightly-2\n0 2 * * * b # kitt-schedule:nightly\n";
        assert_eq!(find_line(crontab, "nightly"), Some("0 2 * * * b # kitt-schedule:nightly"));
        assert_eq!(find_line(crontab, "2"), None);
        let (rest, removed) = without_line(crontab, "nightly");
        assert!(removed);
        assert_eq!(rest, "0 1 * * * a # kitt-schedule:nightly-2\n");
        assert_eq!(kitt_ids(crontab), ["nightly-2", "nightly"]);
    }

    #[test]
    fn other_bytes_are_kept_and_a_replaced_line_keeps_its_place() {
        let crontab = "MAILTO=\"\"\n# mine\n\n0 1 * * * old # kitt-schedule:x\n@daily other\r\n";
        let replaced = with_line(crontab, "x", "5 5 * * * new # kitt-schedule:x");
        assert_eq!(
            replaced,
            "MAILTO=\"\"\n# mine\n\n5 5 * * * new # kitt-schedule:x\n@daily other\r\n"
        );
        let (back, _) = without_line(&replaced, "x");
        assert_eq!(back, "MAILTO=\"\"\n# mine\n\n@daily other\r\n");
    }

    #[test]
    fn a_last_line_without_newline_gets_one_before_an_appended_line() {
        assert_eq!(with_line("A=1", "x", "L"), "A=1\nL\n");
        assert_eq!(with_line("", "x", "L"), "L\n");
        assert_eq!(without_line("A=1\nL # kitt-schedule:x", "x"), ("A=1\n".to_owned(), true));
    }

    #[test]
    fn lines_quote_paths_escape_percent_and_refuse_line_breaks() {
        let env = vec![("PATH".to_owned(), "/usr/bin:/b in".to_owned())];
        let spec = LineSpec {
            expr: "*/15 * * * *",
            kitt: Path::new("/opt/it's/kitt"),
            home: Path::new("/h/100%"),
            id: "n-1",
            env: &env,
            log: Path::new("/h/100%/logs/schedules/n-1.log"),
        };
        assert_eq!(
            render(&spec).unwrap(),
            "*/15 * * * * PATH='/usr/bin:/b in' '/opt/it'\\''s/kitt' --home /h/100\\% campaign \
             fire n-1 >>/h/100\\%/logs/schedules/n-1.log 2>&1 # kitt-schedule:n-1"
        );
        let broken = LineSpec { home: Path::new("/h/a\nb"), ..spec };
        assert!(render(&broken).unwrap_err().to_string().contains("line break"));
        let long = vec![("PATH".to_owned(), "x".repeat(1000))];
        let too_long = LineSpec { env: &long, home: Path::new("/h"), ..spec };
        assert!(matches!(render(&too_long), Err(LineError::TooLong { .. })));
    }
}
