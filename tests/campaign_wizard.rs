//! `kitt campaign wizard` driven through a pseudo-terminal: the real binary,
//! real keystrokes, and the saved file checked by `kitt campaign run --dry-run`.

mod common;

use std::net::TcpListener;
use std::process::Stdio;
use std::time::Duration;

use common::Scratch;
use expectrl::process::unix::WaitStatus;
use expectrl::session::OsSession;
use expectrl::{Eof, Expect, Session};
use serde_json::Value;

const ENTER: &str = "\r";
const CTRL_C: &str = "\x03";

/// A wizard session in the scratch directory, on a wide terminal.
fn wizard(scratch: &Scratch, extra: &[&str]) -> OsSession {
    let mut command = scratch.kitt();
    command.env("TERM", "xterm").args(["campaign", "wizard"]).args(extra);
    let mut session = Session::spawn(command).expect("spawn kitt in a pty");
    session.get_process_mut().set_window_size(200, 50).expect("window size");
    // Generous: the machine may be busy; a missing prompt still fails the test.
    session.set_expect_timeout(Some(Duration::from_secs(90)));
    session
}

/// Waits for `prompt`, then types `keys`.
fn answer(session: &mut OsSession, prompt: &str, keys: &str) {
    if let Err(error) = session.expect(prompt) {
        panic!("no `{prompt}` on the terminal: {error}");
    }
    session.send(keys).expect("type");
}

/// Waits for `text` (an error message, a table line) without answering.
fn sees(session: &mut OsSession, text: &str) {
    if let Err(error) = session.expect(text) {
        panic!("no `{text}` on the terminal: {error}");
    }
}

/// Deletes what a rejected answer left in the input line.
fn erase(session: &mut OsSession, typed: &str) {
    session.send("\x7f".repeat(typed.chars().count())).expect("type");
}

/// Reads to the end and returns the exit code.
fn finish(mut session: OsSession) -> i32 {
    session.expect(Eof).expect("the wizard ends");
    match session.get_process().wait().expect("wait") {
        WaitStatus::Exited(_, code) => code,
        other => panic!("kitt did not exit normally: {other:?}"),
    }
}

/// Answers the sections after the engines with their defaults, keeping no
/// disk reserve so the dry run plans on any machine.
fn accept_the_rest(session: &mut OsSession) {
    answer(session, "Quantizations to skip", ENTER);
    answer(session, "Run only these quantizations", ENTER);
    answer(session, "Largest model to run", ENTER);
    answer(session, "Free disk space to keep", &format!("0{ENTER}"));
    answer(session, "Where models are stored", ENTER);
    answer(session, "Delete downloaded models", ENTER);
    answer(session, "Desktop notifications?", ENTER);
    answer(session, "Notify when the campaign completes?", ENTER);
    answer(session, "Notify when a run fails?", ENTER);
    answer(session, "Webhook URL", ENTER);
    answer(session, "Send notifications by email?", ENTER);
}

/// Files in the scratch directory whose name ends with `suffix`.
fn files_ending(scratch: &Scratch, suffix: &str) -> Vec<String> {
    std::fs::read_dir(scratch.path())
        .expect("read scratch")
        .flatten()
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(suffix))
        .collect()
}

fn planned_keys(scratch: &Scratch, file: &str) -> Vec<String> {
    let outcome = scratch.dry_run(file, &["--json"]);
    assert_eq!(outcome.code, 0, "{}", outcome.stderr);
    let plan: Value = serde_json::from_str(&outcome.stdout).expect("plan JSON");
    plan["runs"]
        .as_array()
        .expect("runs")
        .iter()
        .filter(|run| run["status"] == "planned")
        .map(|run| run["key"].as_str().expect("key").to_owned())
        .collect()
}

#[test]
fn a_full_session_saves_a_campaign_that_plans_the_stored_model() {
    let scratch = Scratch::new();
    scratch.model_file("org/Tiny-Llama-GGUF", "tiny-llama-Q4_K_M.gguf", 700_000_000);
    scratch.model_file("org/Tiny-Llama-GGUF", "tiny-llama-Q8_0.gguf", 1_200_000_000);
    scratch.model_file("org/Tiny-Llama-GGUF", "tiny-llama-IQ1_S.gguf", 300_000_000);
    let mut session = wizard(&scratch, &[]);

    answer(&mut session, "Campaign name:", &format!("wizard-test{ENTER}"));
    answer(&mut session, "Description", &format!("Tiny: a smoke test{ENTER}"));
    sees(&mut session, "org/Tiny-Llama-GGUF (gguf, 3 files");
    answer(&mut session, "space selects", &format!(" {ENTER}"));
    // The model's name defaults to the repository's, without `-GGUF`.
    answer(&mut session, "Model name", ENTER);
    answer(&mut session, "Parameter count", &format!("1.1B{ENTER}"));
    answer(&mut session, "Add another model", ENTER);
    answer(&mut session, "Engines to benchmark:", "llama_cpp");
    session.send(format!(" {ENTER}")).expect("type");
    answer(&mut session, "Suite for llama_cpp", &format!("quick{ENTER}"));
    answer(&mut session, "Quantizations to skip", &format!("IQ1_*{ENTER}"));
    answer(&mut session, "Run only these quantizations", ENTER);
    answer(&mut session, "Largest model to run", &format!("1{ENTER}"));
    answer(&mut session, "Free disk space to keep", &format!("0{ENTER}"));
    answer(&mut session, "Where models are stored", ENTER);
    answer(&mut session, "Delete downloaded models", &format!("n{ENTER}"));
    answer(&mut session, "Desktop notifications?", ENTER);
    answer(&mut session, "Notify when the campaign completes?", ENTER);
    answer(&mut session, "Notify when a run fails?", ENTER);
    answer(&mut session, "Webhook URL", ENTER);
    answer(&mut session, "Send notifications by email?", ENTER);
    sees(&mut session, "--- campaign file ---");
    sees(&mut session, "gguf_repo: org/Tiny-Llama-GGUF");
    // The dry-run table: the Q8_0 variant is over the 1 GB limit.
    sees(&mut session, "Campaign: wizard-test");
    answer(&mut session, "Save the campaign to:", ENTER);
    sees(&mut session, "Saved wizard-test.yaml");

    assert_eq!(finish(session), 0);
    let text = std::fs::read_to_string(scratch.path().join("wizard-test.yaml")).expect("saved");
    assert!(text.contains(r#"description: "Tiny: a smoke test""#), "{text}");
    assert!(text.contains("name: Tiny-Llama"), "{text}");
    assert!(!text.contains("storage_path"), "the default root is not written: {text}");
    assert_eq!(planned_keys(&scratch, "wizard-test.yaml"), ["Tiny-Llama|llama_cpp|Q4_K_M"]);
    assert!(files_ending(&scratch, ".tmp").is_empty());
}

#[test]
fn wrong_answers_are_asked_again_with_the_loaders_message() {
    let scratch = Scratch::new();
    scratch.write("existing.yaml", "keep me\n");
    let mut session = wizard(&scratch, &["-o", "existing.yaml"]);

    answer(&mut session, "Campaign name:", &format!("!!!{ENTER}"));
    sees(&mut session, "has no letter or digit");
    erase(&mut session, "!!!");
    session.send(format!("by-hand{ENTER}")).expect("type");
    answer(&mut session, "Description", ENTER);
    // No stored models: the wizard goes straight to a model by hand.
    answer(&mut session, "Model name", &format!("Qwen-Small{ENTER}"));
    answer(&mut session, "Parameter count", &format!("lots{ENTER}"));
    sees(&mut session, "cannot read a parameter count from `lots`");
    erase(&mut session, "lots");
    session.send(format!("500M{ENTER}")).expect("type");
    answer(&mut session, "Safetensors repository", &format!("not a repo{ENTER}"));
    sees(&mut session, "`not a repo` is not a repository id");
    erase(&mut session, "not a repo");
    session.send(ENTER).expect("type");
    answer(&mut session, "GGUF repository", ENTER);
    answer(&mut session, "Ollama tag", &format!("Qwen Small{ENTER}"));
    sees(&mut session, "is not an Ollama model tag");
    erase(&mut session, "Qwen Small");
    session.send(ENTER).expect("type");
    // No source at all: the three sources are asked again.
    sees(&mut session, "names no source");
    answer(&mut session, "Safetensors repository", ENTER);
    answer(&mut session, "GGUF repository", &format!("Qwen/Qwen2.5-0.5B-Instruct-GGUF{ENTER}"));
    answer(&mut session, "Ollama tag", &format!("qwen2.5:0.5b{ENTER}"));
    answer(&mut session, "Add another model", ENTER);
    answer(&mut session, "Engines to benchmark:", ENTER);
    sees(&mut session, "choose at least one engine");
    session.send(format!("llama_cpp {ENTER}")).expect("type");
    answer(&mut session, "Suite for llama_cpp", ENTER);
    answer(&mut session, "Quantizations to skip", &format!("Q[8-4]_0{ENTER}"));
    sees(&mut session, "has a reversed character range");
    erase(&mut session, "Q[8-4]_0");
    session.send(ENTER).expect("type");
    answer(&mut session, "Run only these quantizations", ENTER);
    answer(&mut session, "Largest model to run", ENTER);
    answer(&mut session, "Free disk space to keep", &format!("-5{ENTER}"));
    sees(&mut session, "must be zero or more, got -5");
    erase(&mut session, "-5");
    session.send(format!("abc{ENTER}")).expect("type");
    sees(&mut session, "`abc` is not a number");
    erase(&mut session, "abc");
    session.send(format!("12.5{ENTER}")).expect("type");
    answer(&mut session, "Where models are stored", ENTER);
    answer(&mut session, "Delete downloaded models", ENTER);
    answer(&mut session, "Desktop notifications?", ENTER);
    answer(&mut session, "Notify when the campaign completes?", ENTER);
    answer(&mut session, "Notify when a run fails?", ENTER);
    answer(&mut session, "Webhook URL", &format!("hooks.example{ENTER}"));
    sees(&mut session, "is not an http(s) URL");
    erase(&mut session, "hooks.example");
    session.send(ENTER).expect("type");
    answer(&mut session, "Send notifications by email?", ENTER);
    sees(&mut session, "Campaign: by-hand");
    // -o names a file that exists: not overwritten without a yes.
    answer(&mut session, "existing.yaml exists. Overwrite it?", ENTER);
    answer(&mut session, "Save the campaign to:", &format!("fresh.yaml{ENTER}"));

    assert_eq!(finish(session), 0);
    assert_eq!(std::fs::read_to_string(scratch.path().join("existing.yaml")).unwrap(), "keep me\n");
    let text = std::fs::read_to_string(scratch.path().join("fresh.yaml")).expect("saved");
    for line in [
        "campaign_name: by-hand",
        "name: Qwen-Small",
        "params: 500M",
        "gguf_repo: Qwen/Qwen2.5-0.5B-Instruct-GGUF",
        "reserve_gb: 12.5",
    ] {
        assert!(text.contains(line), "no `{line}` in:\n{text}");
    }
    assert!(!text.contains("safetensors_repo"), "{text}");
    assert!(!text.contains("skip_patterns"), "{text}");
    let outcome = scratch.dry_run("fresh.yaml", &["--json"]);
    assert_eq!(outcome.code, 0, "{}", outcome.stderr);
}

#[test]
fn ctrl_c_at_a_question_exits_130_and_writes_nothing() {
    let scratch = Scratch::new();
    let mut session = wizard(&scratch, &["-o", "out.yaml"]);

    answer(&mut session, "Campaign name:", &format!("stopped{ENTER}"));
    answer(&mut session, "Description", "half an answer");
    session.send(CTRL_C).expect("type");
    sees(&mut session, "nothing was saved");

    assert_eq!(finish(session), 130);
    assert!(!scratch.path().join("out.yaml").exists());
    assert!(files_ending(&scratch, ".yaml").is_empty());
    assert!(files_ending(&scratch, ".tmp").is_empty());
}

#[test]
fn ctrl_c_after_the_plan_writes_nothing() {
    let scratch = Scratch::new();
    scratch.model_file("org/Tiny-GGUF", "tiny-Q4_0.gguf", 1_000_000);
    let mut session = wizard(&scratch, &[]);

    answer(&mut session, "Campaign name:", &format!("late-stop{ENTER}"));
    answer(&mut session, "Description", ENTER);
    answer(&mut session, "space selects", &format!(" {ENTER}"));
    answer(&mut session, "Model name", ENTER);
    answer(&mut session, "Parameter count", ENTER);
    answer(&mut session, "Add another model", ENTER);
    answer(&mut session, "Engines to benchmark:", format!("llama_cpp {ENTER}").as_str());
    answer(&mut session, "Suite for llama_cpp", ENTER);
    accept_the_rest(&mut session);
    sees(&mut session, "Campaign: late-stop");
    answer(&mut session, "Save the campaign to:", CTRL_C);

    assert_eq!(finish(session), 130);
    assert!(files_ending(&scratch, ".yaml").is_empty());
    assert!(files_ending(&scratch, ".tmp").is_empty());
}

#[test]
fn ctrl_c_while_planning_exits_130_and_writes_nothing() {
    // A Hub that accepts connections and never answers: planning waits on it.
    let silent_hub = TcpListener::bind("127.0.0.1:0").expect("bind");
    let endpoint = format!("http://{}", silent_hub.local_addr().expect("address"));
    let scratch = Scratch::new();
    let mut command = scratch.kitt();
    command
        .env_remove("HF_HUB_OFFLINE")
        .env_remove("KITT_OFFLINE")
        .env("HF_ENDPOINT", &endpoint)
        .env("TERM", "xterm")
        .args(["campaign", "wizard", "-o", "planned.yaml"]);
    let mut session = Session::spawn(command).expect("spawn kitt in a pty");
    session.set_expect_timeout(Some(Duration::from_secs(90)));

    answer(&mut session, "Campaign name:", &format!("slow-hub{ENTER}"));
    answer(&mut session, "Description", ENTER);
    answer(&mut session, "Model name", &format!("Remote{ENTER}"));
    answer(&mut session, "Parameter count", ENTER);
    answer(&mut session, "Safetensors repository", ENTER);
    answer(&mut session, "GGUF repository", &format!("org/Remote-GGUF{ENTER}"));
    answer(&mut session, "Ollama tag", ENTER);
    answer(&mut session, "Add another model", ENTER);
    answer(&mut session, "Engines to benchmark:", &format!("llama_cpp {ENTER}"));
    answer(&mut session, "Suite for llama_cpp", ENTER);
    accept_the_rest(&mut session);
    answer(&mut session, "Planning", CTRL_C);
    sees(&mut session, "nothing was saved");

    assert_eq!(finish(session), 130);
    assert!(files_ending(&scratch, ".yaml").is_empty());
    assert!(files_ending(&scratch, ".tmp").is_empty());
}

#[test]
fn without_a_terminal_it_refuses_with_exit_2() {
    let scratch = Scratch::new();
    let mut command = scratch.kitt();
    command.args(["campaign", "wizard", "-o", "x.yaml"]).stdin(Stdio::null());

    let outcome = scratch.run(&mut command);

    assert_eq!(outcome.code, 2, "{}", outcome.stderr);
    assert!(outcome.stderr.contains("stdin is not one"), "{}", outcome.stderr);
    assert!(outcome.stderr.contains("configs/campaigns/example.yaml"), "{}", outcome.stderr);
    assert!(outcome.stdout.is_empty(), "no prompt: {}", outcome.stdout);
    assert!(!scratch.path().join("x.yaml").exists());
}
