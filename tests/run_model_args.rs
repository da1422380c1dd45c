//! How `kitt run -m MODEL --quant Q` chooses a file, and the clear refusals
//! when it cannot (all before any engine starts).

mod common;

use common::Scratch;

fn run(scratch: &Scratch, args: &[&str]) -> common::Outcome {
    let mut command = scratch.kitt();
    command
        .env("KITT_LLAMA_SERVER", "/nonexistent/llama-server")
        .arg("run")
        .args(args)
        .args(["-e", "llama_cpp"]);
    scratch.run(&mut command)
}

fn tiny(scratch: &Scratch, path: &str) {
    let full = scratch.path().join(path);
    std::fs::create_dir_all(full.parent().unwrap()).unwrap();
    kitt::gguf::TinyModel::default().write(&full).unwrap();
}

#[test]
fn an_empty_model_is_refused() {
    let scratch = Scratch::new();
    let outcome = run(&scratch, &["-m", ""]);
    assert_eq!(outcome.code, 2);
    assert!(outcome.stderr.contains("the model is empty"), "{}", outcome.stderr);
}

#[test]
fn a_directory_holding_two_models_of_one_quant_is_refused() {
    let scratch = Scratch::new();
    tiny(&scratch, "amb/a/alpha-Q4_K_M.gguf");
    tiny(&scratch, "amb/b/beta-Q4_K_M.gguf");
    let outcome = run(&scratch, &["-m", "amb"]);
    assert_eq!(outcome.code, 2);
    assert!(outcome.stderr.contains("holds several `Q4_K_M` files"), "{}", outcome.stderr);
}

#[test]
fn an_unknown_quant_names_the_ones_there_are() {
    let scratch = Scratch::new();
    tiny(&scratch, "dir/tiny-F32.gguf");
    tiny(&scratch, "dir/tiny-Q8_0.gguf");
    let outcome = run(&scratch, &["-m", "dir", "--quant", "Q4_K_M"]);
    assert_eq!(outcome.code, 2);
    assert!(
        outcome.stderr.contains("has no variant `Q4_K_M`; it has: F32, Q8_0"),
        "{}",
        outcome.stderr
    );
    let outcome = run(&scratch, &["-m", "dir/tiny-F32.gguf", "--quant", "Q8_0"]);
    assert!(outcome.stderr.contains("has no variant `Q8_0`; it has: F32"), "{}", outcome.stderr);
}

#[test]
fn a_missing_shard_is_named() {
    let scratch = Scratch::new();
    tiny(&scratch, "split/m-Q4_0-00001-of-00003.gguf");
    tiny(&scratch, "split/m-Q4_0-00003-of-00003.gguf");
    let outcome = run(&scratch, &["-m", "split"]);
    assert_eq!(outcome.code, 2);
    assert!(outcome.stderr.contains("missing shard(s) 2"), "{}", outcome.stderr);
}

#[test]
fn a_file_name_without_a_quant_takes_it_from_the_header() {
    let scratch = Scratch::new();
    tiny(&scratch, "noq/model.gguf");
    let model = kitt::run::resolve_model(
        scratch.path().join("noq/model.gguf").to_str().unwrap(),
        None,
        kitt::engine::EngineKind::LlamaCpp,
        &kitt::acquire::local::LocalIndex::new(scratch.models(), scratch.path().join("hf")),
    )
    .unwrap();
    assert_eq!(model.quant, "F32");
    assert!(model.path.is_absolute());
    assert_eq!(model.parameters, Some(kitt::gguf::TinyModel::default().parameter_count()));
}

#[test]
fn a_model_has_one_name_however_it_is_given() {
    let scratch = Scratch::new();
    tiny(&scratch, "models/huggingface/org/Tiny-GGUF/tiny-llama-Q8_0.gguf");
    let local = kitt::acquire::local::LocalIndex::new(scratch.models(), scratch.path().join("hf"));
    let resolve = |model: &str| {
        kitt::run::resolve_model(model, None, kitt::engine::EngineKind::LlamaCpp, &local)
            .unwrap()
            .name
    };
    let dir = scratch.models().join("huggingface/org/Tiny-GGUF");
    let file = dir.join("tiny-llama-Q8_0.gguf");

    let names =
        [resolve(file.to_str().unwrap()), resolve(dir.to_str().unwrap()), resolve("org/Tiny-GGUF")];

    assert_eq!(names, ["tiny-llama-Q8_0", "tiny-llama-Q8_0", "tiny-llama-Q8_0"]);
}

#[test]
fn unknown_engines_and_engine_keys_suggest_the_near_one() {
    let scratch = Scratch::new();
    let outcome = scratch.run(scratch.kitt().args(["run", "-m", "x", "-e", "llama.cpp"]));
    assert_eq!(outcome.code, 2);
    assert!(
        outcome.stderr.contains("unknown engine `llama.cpp`; did you mean `llama_cpp`?"),
        "{}",
        outcome.stderr
    );

    let outcome = run(&scratch, &["-m", "x", "--engine-config", "thread=2"]);
    assert_eq!(outcome.code, 2);
    assert!(
        outcome.stderr.contains("unknown --engine-config key `thread`; did you mean `threads`?"),
        "{}",
        outcome.stderr
    );
}

#[test]
fn a_safetensors_checkpoint_is_a_model_only_for_engines_that_load_one() {
    let scratch = Scratch::new();
    let dir = scratch.path().join("org/Tiny-AWQ");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("config.json"), "{}").unwrap();
    std::fs::write(dir.join("model.safetensors"), b"weights").unwrap();

    let outcome = run(&scratch, &["-m", "org/Tiny-AWQ"]);
    assert_eq!(outcome.code, 2);
    assert!(outcome.stderr.contains("holds no GGUF model files"), "{}", outcome.stderr);

    let mut command = scratch.kitt();
    command.args(["run", "-m", "org/Tiny-AWQ", "-e", "sglang", "--quant", "BF16"]);
    let outcome = scratch.run(&mut command);
    assert_eq!(outcome.code, 2);
    assert!(
        outcome.stderr.contains("has no variant `BF16`; it has: AWQ"),
        "the label comes from the checkpoint's name: {}",
        outcome.stderr
    );
}
