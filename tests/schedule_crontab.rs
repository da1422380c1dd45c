//! `kitt campaign schedule`, `unschedule` and `cron-status` against the real
//! `crontab` command, each test on the crontab of a throwaway user of its
//! own (`support::cron`): the user's other lines survive schedule,
//! reschedule and unschedule byte for byte (comments, blank lines,
//! variables, a last line without newline); `cron-status` reads the real
//! crontab; the installed line, run by a shell with cron's bare environment,
//! fires the campaign; kitt accepts no expression Debian's cron refuses.
//! Also the command-line errors (exit 2, naming the field or id) and the
//! message where no `crontab` command exists.

mod common;
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{Outcome, Scratch};
use serde_json::Value;
use support::cron::CronUser;
use support::stream::{Script, ScriptedStream};

/// A user no test creates: a command that wrongly reached the crontab
/// fails instead of touching a real one.
const NO_USER: &str = "kitt-no-such-user";

/// A campaign on an `openai` server (not contacted until it runs).
fn config(name: &str, base_url: &str, extra: &str) -> String {
    format!(
        "campaign_name: {name}\nmodels:\n  - name: Served\nengines:\n  - name: openai\n    \
         suite: quick\n    config:\n      base_url: {base_url}/v1\n      model: m\n{extra}"
    )
}

fn kitt(scratch: &Scratch, user: Option<&CronUser>) -> Command {
    let mut command = scratch.kitt();
    command.env("KITT_CRONTAB_USER", user.map_or(NO_USER, |user| user.name.as_str()));
    command
}

fn run(scratch: &Scratch, user: Option<&CronUser>, args: &[&str]) -> Outcome {
    scratch.run(kitt(scratch, user).args(args))
}

fn status_json(scratch: &Scratch, user: Option<&CronUser>) -> Value {
    let outcome = run(scratch, user, &["--json", "campaign", "cron-status"]);
    assert_eq!(outcome.code, 0, "{outcome:?}");
    serde_json::from_str(&outcome.stdout).unwrap_or_else(|e| panic!("{e}: {}", outcome.stdout))
}

fn kitt_binary() -> PathBuf {
    std::fs::canonicalize(env!("CARGO_BIN_EXE_kitt")).unwrap()
}

/// The line the crontab gained after `before`.
fn added_line<'a>(crontab: &'a str, before: &str) -> &'a str {
    let rest = crontab
        .strip_prefix(before)
        .unwrap_or_else(|| panic!("the user's lines changed:\n{crontab}\n--- was ---\n{before}"));
    assert_eq!(rest.matches('\n').count(), 1, "one line added: {rest:?}");
    rest.strip_suffix('\n').expect("the added line ends with a newline")
}

const MINE: &str = "# my jobs\nMAILTO=\"\"\nSHELL=/bin/bash\n\n\
                    */5 * * * * /usr/bin/true # kitt-schedule:nightly-2\n \t\n\
                    30 3 * * 0 echo 'weekly \\%x' >/dev/null\n";

#[test]
fn schedule_reschedule_and_unschedule_keep_every_other_crontab_byte() {
    let Some(user) = CronUser::create() else { return };
    let scratch = Scratch::new();
    scratch.write("nightly.yaml", &config("nightly", "http://127.0.0.1:9", ""));
    user.install(MINE);

    let scheduled = run(
        &scratch,
        Some(&user),
        &["campaign", "schedule", "nightly.yaml", "--cron", "0 2 * * 1-5"],
    );
    assert_eq!(scheduled.code, 0, "{scheduled:?}");
    assert!(
        scheduled.stdout.contains(&format!("installed in the crontab of user `{}`", user.name)),
        "{}",
        scheduled.stdout
    );
    let crontab = user.crontab().expect("a crontab");
    let line = added_line(&crontab, MINE);
    let home = scratch.home();
    let expected_tail = format!(
        "{} --home {} campaign fire nightly >>{}/logs/schedules/nightly.log 2>&1 \
         # kitt-schedule:nightly",
        kitt_binary().display(),
        home.display(),
        home.display()
    );
    assert!(line.starts_with("0 2 * * 1-5 PATH="), "{line}");
    assert!(line.ends_with(&expected_tail), "{line}\nexpected to end with\n{expected_tail}");
    assert!(line.contains(&format!("KITT_MODELS_DIR={}", scratch.models().display())), "{line}");
    assert!(home.join("logs/schedules/nightly").is_dir());

    // Rescheduling replaces the line where it was.
    let again =
        run(&scratch, Some(&user), &["campaign", "schedule", "nightly.yaml", "--cron", "@daily"]);
    assert_eq!(again.code, 0, "{again:?}");
    assert!(again.stdout.starts_with("rescheduled `nightly`"), "{}", again.stdout);
    let crontab = user.crontab().expect("a crontab");
    let line = added_line(&crontab, MINE);
    assert!(line.starts_with("@daily PATH="), "{line}");
    let status = status_json(&scratch, Some(&user));
    assert_eq!(status.as_array().unwrap().len(), 1, "{status}");
    assert_eq!(status[0]["id"], "nightly");
    assert_eq!(status[0]["cron"], "@daily");
    assert_eq!(status[0]["source"], "option");
    assert_eq!(status[0]["crontab"]["state"], "present", "{status}");
    assert_eq!(status[0]["crontab"]["user"], user.name.as_str());
    assert_eq!(status[0]["next_fires"].as_array().unwrap().len(), 3);
    let config_path = std::fs::canonicalize(scratch.path().join("nightly.yaml")).unwrap();
    assert_eq!(status[0]["config"], config_path.display().to_string());

    let removed = run(&scratch, Some(&user), &["campaign", "unschedule", "nightly"]);
    assert_eq!(removed.code, 0, "{removed:?}");
    assert!(
        removed.stdout.contains("removed from the store and the crontab"),
        "{}",
        removed.stdout
    );
    assert_eq!(user.crontab().as_deref(), Some(MINE), "byte for byte after unschedule");
    assert_eq!(status_json(&scratch, Some(&user)), Value::Array(Vec::new()));
}

#[test]
fn a_last_line_without_newline_keeps_its_bytes_and_gains_only_the_newline() {
    let Some(user) = CronUser::create() else { return };
    let scratch = Scratch::new();
    scratch.write("c.yaml", &config("c", "http://127.0.0.1:9", ""));
    let mine = "A=1\n\n# the last line has no newline\n0 1 * * * echo last";
    user.write_spool(mine);
    assert_eq!(user.crontab().as_deref(), Some(mine));

    let scheduled =
        run(&scratch, Some(&user), &["campaign", "schedule", "c.yaml", "--cron", "*/15 * * * *"]);
    assert_eq!(scheduled.code, 0, "{scheduled:?}");
    let crontab = user.crontab().unwrap();
    let line = added_line(&crontab, &format!("{mine}\n"));
    assert!(line.starts_with("*/15 * * * * "), "{line}");

    let removed = run(&scratch, Some(&user), &["campaign", "unschedule", "c"]);
    assert_eq!(removed.code, 0, "{removed:?}");
    assert_eq!(user.crontab().unwrap(), format!("{mine}\n"));
}

#[test]
fn a_user_without_a_crontab_is_left_without_one() {
    let Some(user) = CronUser::create() else { return };
    let scratch = Scratch::new();
    scratch.write("c.yaml", &config("c", "http://127.0.0.1:9", ""));
    assert_eq!(user.crontab(), None);

    let scheduled = run(
        &scratch,
        Some(&user),
        &["campaign", "schedule", "c.yaml", "--cron", "@hourly", "--id", "hourly"],
    );
    assert_eq!(scheduled.code, 0, "{scheduled:?}");
    let crontab = user.crontab().unwrap();
    assert!(added_line(&crontab, "").starts_with("@hourly "), "{crontab}");

    assert_eq!(run(&scratch, Some(&user), &["campaign", "unschedule", "hourly"]).code, 0);
    assert_eq!(user.crontab(), None);
    let again = run(&scratch, Some(&user), &["campaign", "unschedule", "hourly"]);
    assert_eq!(again.code, 2, "{again:?}");
    assert!(again.stderr.contains("error: no schedule `hourly`"), "{}", again.stderr);

    // A kitt line the store does not know (its home was deleted) is removed too.
    user.install("@daily /old/kitt --home /gone campaign fire orphan # kitt-schedule:orphan\n");
    let orphan = run(&scratch, Some(&user), &["campaign", "unschedule", "orphan"]);
    assert_eq!(orphan.code, 0, "{orphan:?}");
    assert!(
        orphan.stdout.contains("removed from the crontab (the store had no row for it)"),
        "{}",
        orphan.stdout
    );
    assert_eq!(user.crontab(), None);
}

#[test]
fn cron_status_reads_the_real_crontab() {
    let Some(user) = CronUser::create() else { return };
    let scratch = Scratch::new();
    scratch.write("c.yaml", &config("c", "http://127.0.0.1:9", ""));
    for (id, cron) in [("alpha", "0 1 * * *"), ("beta", "0 3 * * *"), ("gamma", "0 5 * * *")] {
        let outcome = run(
            &scratch,
            Some(&user),
            &["campaign", "schedule", "c.yaml", "--id", id, "--cron", cron],
        );
        assert_eq!(outcome.code, 0, "{outcome:?}");
    }
    // By hand: alpha's line deleted, beta's changed.
    let edited: String = user
        .crontab()
        .unwrap()
        .lines()
        .filter(|line| !line.ends_with("kitt-schedule:alpha"))
        .map(|line| format!("{}\n", line.replacen("0 3 * * *", "0 4 * * *", 1)))
        .collect();
    user.install(&edited);

    let status = status_json(&scratch, Some(&user));
    let states: Vec<(&str, &str)> = status
        .as_array()
        .unwrap()
        .iter()
        .map(|view| (view["id"].as_str().unwrap(), view["crontab"]["state"].as_str().unwrap()))
        .collect();
    assert_eq!(states, [("alpha", "missing"), ("beta", "differs"), ("gamma", "present")]);
    assert!(status[1]["crontab"]["line"].as_str().unwrap().starts_with("0 4 * * * "), "{status}");
    let table = run(&scratch, Some(&user), &["campaign", "cron-status"]);
    assert_eq!(table.code, 0, "{table:?}");
    assert!(table.stdout.contains("its crontab line is missing"), "{}", table.stdout);
    assert!(
        table.stdout.contains("its crontab line was changed by hand: 0 4 * * *"),
        "{}",
        table.stdout
    );

    // Scheduling again puts the lines back.
    for id in ["alpha", "beta"] {
        let cron = if id == "alpha" { "0 1 * * *" } else { "0 3 * * *" };
        let outcome = run(
            &scratch,
            Some(&user),
            &["campaign", "schedule", "c.yaml", "--id", id, "--cron", cron],
        );
        assert_eq!(outcome.code, 0, "{outcome:?}");
    }
    let status = status_json(&scratch, Some(&user));
    for view in status.as_array().unwrap() {
        assert_eq!(view["crontab"]["state"], "present", "{view}");
    }
}

/// The command cron would run for a crontab line: everything after the
/// five time fields (or the macro), with cron's `\%` → `%`.
fn cron_command(line: &str) -> String {
    let fields = if line.starts_with('@') { 1 } else { 5 };
    let command = line.splitn(fields + 1, ' ').nth(fields).expect("a command after the time");
    command.replace("\\%", "%")
}

#[test]
fn the_installed_line_fires_the_campaign_from_a_bare_shell() {
    let Some(user) = CronUser::create() else { return };
    let scratch = Scratch::new();
    let server = ScriptedStream::start(Script::chat("m", &["Hello", " there"], Duration::ZERO));
    server.serve_models(&["m"]);
    scratch.write("it's nightly.yaml", &config("nightly", server.url(), ""));
    let home = scratch.path().join("kitt home, 100% mine");

    let mut command = kitt(&scratch, Some(&user));
    command
        .arg("--home")
        .arg(&home)
        .args([
            "campaign",
            "schedule",
            "it's nightly.yaml",
            "--id",
            "nightly",
            "--cron",
            "0 2 * * *",
        ])
        .env("HF_TOKEN", "hf_SECRETVALUE");
    let scheduled = scratch.run(&mut command);
    assert_eq!(scheduled.code, 0, "{scheduled:?}");
    assert!(
        scheduled.stderr.contains("HF_TOKEN is set here but is not written"),
        "{}",
        scheduled.stderr
    );
    let crontab = user.crontab().unwrap();
    assert!(!crontab.contains("SECRET"), "{crontab}");
    let line = added_line(&crontab, "");
    assert!(
        line.contains("--home 'kitt home, 100\\% mine'") || line.contains("100\\% mine'"),
        "{line}"
    );

    // What cron does at 02:00: sh -c COMMAND with almost no environment.
    let output = Command::new("/bin/sh")
        .arg("-c")
        .arg(cron_command(line))
        .env_clear()
        .env("HOME", "/nonexistent")
        .env("LOGNAME", &user.name)
        .env("SHELL", "/bin/sh")
        .env("PATH", "/usr/bin:/bin")
        .current_dir("/")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert!(output.stdout.is_empty() && output.stderr.is_empty(), "cron's output goes to the log");

    let status = status_json_at(&scratch, &home);
    let fire = &status[0]["last_fire"];
    assert_eq!(fire["status"], "completed", "{status}");
    assert_eq!(fire["action"], "new");
    assert_eq!(fire["exit_code"], 0);
    let campaign_id = fire["campaign_id"].as_str().unwrap();
    assert!(campaign_id.starts_with("nightly-"), "{campaign_id}");
    let messages = std::fs::read_to_string(home.join("logs/schedules/nightly.log")).unwrap();
    assert!(messages.contains("the campaign's output goes to"), "{messages}");
    let log = std::fs::read_to_string(fire["log"].as_str().unwrap()).unwrap();
    assert!(log.contains(&format!("starting campaign {campaign_id}")), "{log}");
    assert!(log.contains("Served|openai|served"), "the campaign's summary is in the log: {log}");
    assert!(server.requests("/v1/chat/completions") > 0);

    let campaigns =
        scratch.run(scratch.kitt().arg("--home").arg(&home).args(["--json", "campaign", "list"]));
    let campaigns: Value = serde_json::from_str(&campaigns.stdout).unwrap();
    assert_eq!(campaigns[0]["id"], campaign_id);
    assert_eq!(campaigns[0]["status"], "completed");
}

fn status_json_at(scratch: &Scratch, home: &Path) -> Value {
    let outcome = scratch.run(kitt(scratch, None).arg("--home").arg(home).args([
        "--json",
        "campaign",
        "cron-status",
    ]));
    assert_eq!(outcome.code, 0, "{outcome:?}");
    serde_json::from_str(&outcome.stdout).unwrap()
}

#[test]
fn kitt_accepts_no_expression_debian_cron_refuses() {
    let Some(user) = CronUser::create() else { return };
    let accepted = [
        "*/15 * * * *",
        "0,30 */2 * * *",
        "0-30/10 9-17/4 * * *",
        "0 2 * * MON-FRI",
        "0 2 1 JAN,jul *",
        "0 0 * * 7",
        "0 0 * * 5-7",
        "0 0 * * sun",
        "59 23 31 12 *",
        "0 0 1-7 * */7",
        "@daily",
        "@hourly",
        "@weekly",
        "@monthly",
        "@yearly",
        "@annually",
        "@midnight",
        "*/100 * * * *",
        "00 02 * * *",
    ];
    for expr in accepted {
        let kitt_form =
            kitt::schedule::cron::CronExpr::parse(expr).unwrap_or_else(|e| panic!("{expr}: {e}"));
        user.install(&format!("{} true\n", kitt_form.as_str()));
    }
    // Debian's cron refuses these, and so does kitt.
    for expr in
        ["0 2 * * 8", "60 * * * *", "5/15 * * * *", "*/0 * * * *", "0 0 * * MON-FOO", "@reboot x"]
    {
        assert!(kitt::schedule::cron::CronExpr::parse(expr).is_err(), "{expr}");
    }
}

#[test]
fn invalid_expressions_exit_2_naming_the_field() {
    let scratch = Scratch::new();
    scratch.write("c.yaml", &config("c", "http://127.0.0.1:9", ""));
    for (expr, message) in [
        ("0 2 * * 8", "`day-of-week` field `8`: 8 is out of range"),
        ("*/0 * * * *", "`minute` field `*/0`: the step in `*/0` is 0"),
        ("0 25 * * *", "`hour` field `25`"),
        ("0 0 0 * *", "`day-of-month` field `0`"),
        ("0 0 * FOO *", "`month` field `FOO`"),
        ("0 2 * *", "has 4 fields"),
        ("@reboot", "`@reboot` is not a time"),
        ("0 0 31 2 *", "never fires"),
    ] {
        let outcome = run(&scratch, None, &["campaign", "schedule", "c.yaml", "--cron", expr]);
        assert_eq!(outcome.code, 2, "{expr}: {outcome:?}");
        assert!(outcome.stderr.contains("error: invalid --cron: "), "{expr}: {}", outcome.stderr);
        assert!(outcome.stderr.contains(message), "{expr}: {}", outcome.stderr);
    }
    assert!(!scratch.home().join("kitt.db").exists(), "nothing was stored");
}

#[test]
fn bad_configs_ids_and_unknown_schedules_exit_2() {
    let scratch = Scratch::new();
    scratch.write("bad.yaml", "campaign_name: c\nmodles: []\n");
    let outcome = run(&scratch, None, &["campaign", "schedule", "bad.yaml", "--cron", "@daily"]);
    assert_eq!(outcome.code, 2, "{outcome:?}");
    assert!(
        outcome.stderr.contains("bad.yaml:2:1"),
        "the loader's located error: {}",
        outcome.stderr
    );

    scratch.write(
        "bad-schedule.yaml",
        &config("c", "http://127.0.0.1:9", "schedule: \"0 2 * * 9\"\n"),
    );
    let outcome = run(&scratch, None, &["campaign", "schedule", "bad-schedule.yaml"]);
    assert_eq!(outcome.code, 2, "{outcome:?}");
    assert!(outcome.stderr.contains("`schedule`: `day-of-week` field `9`"), "{}", outcome.stderr);

    scratch.write("plain.yaml", &config("c", "http://127.0.0.1:9", ""));
    let outcome = run(&scratch, None, &["campaign", "schedule", "plain.yaml"]);
    assert_eq!(outcome.code, 2, "{outcome:?}");
    assert!(outcome.stderr.contains("no cron expression: give --cron EXPR"), "{}", outcome.stderr);

    let outcome = run(
        &scratch,
        None,
        &["campaign", "schedule", "plain.yaml", "--cron", "@daily", "--id", "a b"],
    );
    assert_eq!(outcome.code, 2, "{outcome:?}");
    assert!(
        outcome.stderr.contains("schedule id `a b` (from --id) is not valid"),
        "{}",
        outcome.stderr
    );

    let outcome =
        run(&scratch, None, &["campaign", "schedule", "missing.yaml", "--cron", "@daily"]);
    assert_eq!(outcome.code, 2, "{outcome:?}");

    let bin = path_without_crontab(&scratch);
    for args in [&["campaign", "unschedule", "ghost"][..], &["campaign", "fire", "ghost"][..]] {
        let outcome = scratch.run(kitt(&scratch, None).env("PATH", &bin).args(args));
        assert_eq!(outcome.code, 2, "{args:?}: {outcome:?}");
        assert!(outcome.stderr.contains("no schedule `ghost`"), "{}", outcome.stderr);
    }
    let outcome = run(&scratch, None, &["campaign", "cron-status"]);
    assert_eq!(outcome.code, 0, "{outcome:?}");
    assert!(outcome.stdout.starts_with("No schedules."), "{}", outcome.stdout);
}

/// A `PATH` with no `crontab` on it.
fn path_without_crontab(scratch: &Scratch) -> PathBuf {
    let dir = scratch.path().join("bin");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn without_crontab_the_schedule_is_stored_and_the_scheduler_is_named() {
    let scratch = Scratch::new();
    scratch.write(
        "nightly.yaml",
        &config("nightly", "http://127.0.0.1:9", "schedule: \"*/15 * * * 1-5\"\n"),
    );
    let bin = path_without_crontab(&scratch);

    let outcome = scratch.run(kitt(&scratch, None).env("PATH", &bin).args([
        "campaign",
        "schedule",
        "nightly.yaml",
    ]));
    assert_eq!(outcome.code, 0, "{outcome:?}");
    assert!(outcome.stdout.contains("scheduled `nightly`"), "{}", outcome.stdout);
    assert!(outcome.stdout.contains("at `*/15 * * * 1-5`"), "{}", outcome.stdout);
    assert!(outcome.stdout.contains("the crontab is unavailable"), "{}", outcome.stdout);
    assert!(outcome.stdout.contains("run `kitt campaign scheduler`"), "{}", outcome.stdout);

    let status = scratch.run(kitt(&scratch, None).env("PATH", &bin).args([
        "--json",
        "campaign",
        "cron-status",
    ]));
    let status: Value = serde_json::from_str(&status.stdout).unwrap();
    assert_eq!(status[0]["source"], "config");
    assert_eq!(status[0]["crontab"]["state"], "unavailable");
    assert_eq!(status[0]["environment"]["PATH"], bin.display().to_string());

    // --cron wins over the file's key, and says so.
    let outcome = scratch.run(kitt(&scratch, None).env("PATH", &bin).args([
        "campaign",
        "schedule",
        "nightly.yaml",
        "--cron",
        "0 3 * * *",
    ]));
    assert_eq!(outcome.code, 0, "{outcome:?}");
    assert!(
        outcome
            .stderr
            .contains("--cron `0 3 * * *` overrides the file's `schedule: \"*/15 * * * 1-5\"`"),
        "{}",
        outcome.stderr
    );
    let table =
        scratch.run(kitt(&scratch, None).env("PATH", &bin).args(["campaign", "cron-status"]));
    assert!(table.stdout.contains("0 3 * * *"), "{}", table.stdout);
    assert!(
        table.stdout.contains("run `kitt campaign scheduler` to fire these"),
        "{}",
        table.stdout
    );

    let removed = scratch.run(kitt(&scratch, None).env("PATH", &bin).args([
        "campaign",
        "unschedule",
        "nightly",
    ]));
    assert_eq!(removed.code, 0, "{removed:?}");
    assert!(removed.stdout.contains("removed from the store"), "{}", removed.stdout);
}
