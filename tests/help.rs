//! `--help` teaches: snapshots of what users read.

mod common;

use common::Scratch;

#[test]
fn campaign_run_help() {
    let scratch = Scratch::new();
    let mut command = scratch.kitt();
    command.args(["campaign", "run", "--help"]).env("COLUMNS", "100");
    let outcome = scratch.run(&mut command);
    assert_eq!(outcome.code, 0);
    insta::assert_snapshot!(outcome.stdout);
}

#[test]
fn datasets_download_help() {
    let scratch = Scratch::new();
    let mut command = scratch.kitt();
    command.args(["datasets", "download", "--help"]).env("COLUMNS", "100");
    let outcome = scratch.run(&mut command);
    assert_eq!(outcome.code, 0);
    insta::assert_snapshot!(outcome.stdout);
}

#[test]
fn campaign_schedule_help() {
    let scratch = Scratch::new();
    let mut command = scratch.kitt();
    command.args(["campaign", "schedule", "--help"]).env("COLUMNS", "100");
    let outcome = scratch.run(&mut command);
    assert_eq!(outcome.code, 0);
    insta::assert_snapshot!(outcome.stdout);
}

#[test]
fn usage_errors_exit_2() {
    let scratch = Scratch::new();
    let outcome = scratch.run(scratch.kitt().args(["campaign", "run"]));
    assert_eq!(outcome.code, 2, "{}", outcome.stderr);
    assert!(outcome.stderr.contains("<CONFIG>"), "{}", outcome.stderr);
}

#[test]
fn a_model_that_is_not_local_is_skipped_with_the_reason() {
    let scratch = Scratch::new();
    scratch.write("c.yaml", "campaign_name: c\nmodels:\n  - name: M\n    gguf_repo: o/m\nengines:\n  - name: llama_cpp\n");
    let outcome = scratch.run(scratch.kitt().args(["campaign", "run", "c.yaml"]));
    assert_eq!(outcome.code, 0, "{}", outcome.stderr);
    assert!(outcome.stdout.contains("M|llama_cpp|-"), "{}", outcome.stdout);
    assert!(outcome.stdout.contains("skipped"), "{}", outcome.stdout);
    assert!(outcome.stdout.contains("0 succeeded, 0 failed, 1 skipped"), "{}", outcome.stdout);
}

#[test]
fn campaign_create_help() {
    let scratch = Scratch::new();
    let mut command = scratch.kitt();
    command.args(["campaign", "create", "--help"]).env("COLUMNS", "100");
    let outcome = scratch.run(&mut command);
    assert_eq!(outcome.code, 0);
    insta::assert_snapshot!(outcome.stdout);
}
