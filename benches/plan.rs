//! Planning cost for a very large matrix: 100 models × 5 engines × 20 variants
//! from local listings (no network). Run with `cargo bench --bench plan`.

use std::collections::HashMap;
use std::path::PathBuf;

use criterion::{Criterion, criterion_group, criterion_main};
use kitt::acquire::hub::Gate;
use kitt::config;
use kitt::plan::discover::{Discovery, RepoInfo, RepoLookup};
use kitt::plan::matrix::{PlanEnv, plan};
use kitt::plan::variants::SizedFile;

const QUANTS: [&str; 20] = [
    "IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_M", "IQ3_XXS", "IQ3_M", "Q2_K", "Q3_K_S", "Q3_K_M",
    "Q3_K_L", "IQ4_XS", "IQ4_NL", "Q4_0", "Q4_K_S", "Q4_K_M", "Q5_K_M", "Q6_K", "Q8_0", "F16",
];
const ENGINES: usize = 5;
const MODELS: usize = 100;

/// A campaign of 100 GGUF models on five engine entries. Validation forbids
/// listing one engine twice, so the five entries are made by hand from a
/// parsed one-engine campaign: the planner's work per run is the same.
fn campaign() -> config::Campaign {
    let mut yaml = String::from("campaign_name: bench\nmodels:\n");
    for i in 0..MODELS {
        yaml.push_str(&format!(
            "  - name: Model-{i}\n    params: 8B\n    gguf_repo: org/Model-{i}-GGUF\n"
        ));
    }
    yaml.push_str("engines:\n  - name: llama_cpp\nquant_filter:\n  skip_patterns: [\"IQ1_*\"]\n");
    yaml.push_str("disk:\n  reserve_gb: 10\n  cleanup_after_run: false\n");
    let mut campaign = config::parse(&yaml, "bench.yaml".as_ref()).expect("valid campaign");
    let engine = campaign.engines[0].clone();
    campaign.engines = vec![engine; ENGINES];
    campaign
}

fn discovery() -> Discovery {
    let mut repos = HashMap::new();
    for i in 0..MODELS {
        let repo = format!("org/Model-{i}-GGUF");
        let files = QUANTS
            .iter()
            .map(|quant| SizedFile { path: format!("Model-{i}-{quant}.gguf"), size: 5_000_000_000 })
            .collect();
        let info =
            RepoInfo { repo: repo.clone(), files, local: None, from_hub: true, gate: Gate::Open };
        repos.insert(repo, RepoLookup::Found(info));
    }
    Discovery { repos, ..Discovery::default() }
}

fn bench_plan(c: &mut Criterion) {
    let campaign = campaign();
    let discovery = discovery();
    let env = PlanEnv {
        storage_root: PathBuf::from("/models"),
        ollama_dir: PathBuf::from("/ollama"),
        free_space: Box::new(|_| Some(u64::MAX / 2)),
        has_ollama_tag: Box::new(|_, _| false),
    };
    let runs = plan(&campaign, &discovery, &env).runs.len();
    assert_eq!(runs, MODELS * ENGINES * QUANTS.len());
    c.bench_function("plan 100 models x 5 engines x 20 variants", |b| {
        b.iter(|| plan(&campaign, &discovery, &env))
    });
}

criterion_group!(benches, bench_plan);
criterion_main!(benches);
