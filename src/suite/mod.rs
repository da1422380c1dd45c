//! Suites and benchmark definitions, as YAML files users know: suites
//! (`quick`, `standard`, `performance`) name benchmarks (`throughput`,
//! `latency`, `memory_usage`, `warmup_analysis`, and the quality benchmarks).
//!
//! The shipped files under `configs/` are embedded in the binary; a file of the
//! same name under `<kitt home>/suites/` or `<kitt home>/tests/` overrides one,
//! and a path to a YAML file names a suite directly. Settings resolve, most
//! specific first: the suite's `test_overrides`, then the suite's `sampling`,
//! then the benchmark's own file.
//!
//! A quality benchmark reads its dataset from `dataset_path` (a file or
//! folder; `~` expands; a relative path is relative to the folder of the
//! benchmark file that names it, not to where kitt runs) or else
//! `<kitt home>/datasets/<name>/`, in the layout of the public dataset its
//! `dataset` setting names (default: its own name). Its `scoring` setting
//! (`generative`, `loglikelihood` or `auto`, the default; a suite's
//! `test_overrides` may set it too) chooses how answers are scored, see
//! [`crate::quality::loglikelihood`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::quality::{Dataset, Scoring, loglikelihood};

const SHIPPED_SUITES: &[(&str, &str)] = &[
    ("quick", include_str!("../../configs/suites/quick.yaml")),
    ("standard", include_str!("../../configs/suites/standard.yaml")),
    ("performance", include_str!("../../configs/suites/performance.yaml")),
];

const SHIPPED_TESTS: &[(&str, &str)] = &[
    ("throughput", include_str!("../../configs/tests/throughput.yaml")),
    ("latency", include_str!("../../configs/tests/latency.yaml")),
    ("memory_usage", include_str!("../../configs/tests/memory_usage.yaml")),
    ("warmup_analysis", include_str!("../../configs/tests/warmup_analysis.yaml")),
    ("mmlu", include_str!("../../configs/tests/mmlu.yaml")),
    ("gsm8k", include_str!("../../configs/tests/gsm8k.yaml")),
    ("truthfulqa", include_str!("../../configs/tests/truthfulqa.yaml")),
    ("hellaswag", include_str!("../../configs/tests/hellaswag.yaml")),
];

/// Why a suite could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SuiteError {
    /// No suite or benchmark by that name.
    #[error("unknown {what} `{name}`; known: {known}")]
    Unknown {
        /// `suite` or `benchmark`.
        what: &'static str,
        /// The name asked for.
        name: String,
        /// The names kitt knows.
        known: String,
    },
    /// A file could not be read.
    #[error("cannot read `{}`", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A file is not a valid suite or benchmark.
    #[error("invalid {what} `{name}`: {message}")]
    Invalid {
        /// `suite` or `benchmark`.
        what: &'static str,
        /// Its name or path.
        name: String,
        /// What is wrong, with line and column.
        message: String,
    },
}

/// What a benchmark measures, which decides how it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TestKind {
    /// Output tokens per second over concurrency levels.
    Throughput,
    /// TTFT, TPOT and end-to-end latency, one request at a time.
    Latency,
    /// Memory by prompt and output length.
    MemoryUsage,
    /// First requests after start-up against later ones.
    WarmupAnalysis,
    /// Answers scored against a dataset.
    Quality,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSuite {
    name: String,
    version: u32,
    #[serde(default)]
    description: String,
    #[serde(default = "one")]
    runs: u32,
    #[serde(default)]
    sampling: RawSampling,
    #[serde(default)]
    warmup: RawWarmup,
    tests: Vec<String>,
    #[serde(default)]
    test_overrides: BTreeMap<String, RawOverride>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSampling {
    temperature: Option<f64>,
    max_tokens: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWarmup {
    #[serde(default = "three")]
    requests: u32,
    #[serde(default = "eight")]
    max_tokens: u32,
}

impl Default for RawWarmup {
    fn default() -> Self {
        RawWarmup { requests: three(), max_tokens: eight() }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOverride {
    runs: Option<u32>,
    iterations: Option<u32>,
    max_tokens: Option<u32>,
    concurrency: Option<Vec<u32>>,
    warmup: Option<bool>,
    limit: Option<u32>,
    scoring: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTest {
    name: String,
    kind: TestKind,
    version: u32,
    #[serde(default)]
    iterations: Option<u32>,
    #[serde(default)]
    max_tokens: Option<u32>,
    #[serde(default)]
    concurrency: Option<Vec<u32>>,
    #[serde(default)]
    warmup: Option<bool>,
    #[serde(default)]
    prompts: Vec<String>,
    #[serde(default)]
    output_lengths: Vec<u32>,
    #[serde(default)]
    sample_interval_ms: Option<u64>,
    #[serde(default)]
    dataset_path: Option<String>,
    #[serde(default)]
    dataset: Option<String>,
    #[serde(default)]
    limit: Option<u32>,
    #[serde(default)]
    scoring: Option<String>,
}

fn one() -> u32 {
    1
}
fn three() -> u32 {
    3
}
fn eight() -> u32 {
    8
}

/// A suite with every benchmark's settings resolved.
#[derive(Debug, Clone)]
pub struct Suite {
    /// Its name.
    pub name: String,
    /// Its version.
    pub version: u32,
    /// One line on what it is for.
    pub description: String,
    /// Sampling temperature for every request.
    pub temperature: f64,
    /// Warm-up requests before a benchmark that wants warm-up.
    pub warmup_requests: u32,
    /// Output tokens of each warm-up request.
    pub warmup_max_tokens: u32,
    /// The benchmarks, in order.
    pub tests: Vec<TestPlan>,
}

/// One benchmark of a suite, resolved.
#[derive(Debug, Clone)]
pub struct TestPlan {
    /// Its name.
    pub name: String,
    /// What it measures.
    pub kind: TestKind,
    /// Its definition's version.
    pub version: u32,
    /// Repetitions of the whole benchmark.
    pub runs: u32,
    /// Requests per repetition (per concurrency level for throughput).
    pub iterations: u32,
    /// Output tokens per request.
    pub max_tokens: u32,
    /// Concurrency levels (throughput), else `[1]`.
    pub concurrency: Vec<u32>,
    /// Whether warm-up requests precede it.
    pub warmup: bool,
    /// Prompts, used in turn.
    pub prompts: Vec<String>,
    /// Output lengths (memory_usage).
    pub output_lengths: Vec<u32>,
    /// Memory sampling interval in milliseconds.
    pub sample_interval_ms: u64,
    /// The public dataset layout a quality benchmark reads.
    pub dataset: Option<Dataset>,
    /// Where a quality benchmark's dataset is: a file, or a folder to search.
    pub dataset_path: Option<PathBuf>,
    /// Score only the first this many items of the dataset (smoke runs).
    pub limit: Option<u32>,
    /// How a quality benchmark is scored.
    pub scoring: Scoring,
}

/// Prompt tokens allowed for each quality item when sizing the context.
pub const QUALITY_PROMPT_TOKENS: u32 = 2048;

impl Suite {
    /// Loads a suite by name (home override, else shipped) or from a YAML path.
    pub fn load(name: &str, home: &Path) -> Result<Suite, SuiteError> {
        let suite_file = find("suite", name, &home.join("suites"), SHIPPED_SUITES)?;
        let label = suite_file.label;
        let raw: RawSuite = parse("suite", &label, &suite_file.text)?;
        let invalid =
            |message: String| SuiteError::Invalid { what: "suite", name: label.clone(), message };
        if raw.tests.is_empty() {
            return Err(invalid("`tests` is empty".into()));
        }
        if raw.runs == 0 {
            return Err(invalid("`runs` must be at least 1".into()));
        }
        if let Some(temperature) = raw.sampling.temperature
            && !(0.0..=2.0).contains(&temperature)
        {
            return Err(invalid(format!(
                "`sampling.temperature` must be between 0 and 2, got {temperature}"
            )));
        }
        let mut tests = Vec::new();
        for test in &raw.tests {
            let found = find("benchmark", test, &home.join("tests"), SHIPPED_TESTS)?;
            let def: RawTest = parse("benchmark", &found.label, &found.text)?;
            let overrides = raw.test_overrides.get(test);
            let invalid = |message: String| SuiteError::Invalid {
                what: "benchmark",
                name: test.clone(),
                message,
            };
            check_limits(&raw, &def, overrides).map_err(invalid)?;
            let dataset = dataset_of(&def).map_err(invalid)?;
            let scoring = scoring_of(&def, overrides, dataset).map_err(invalid)?;
            let mut plan = resolve(&raw, def, overrides);
            plan.scoring = scoring;
            if let Some(dataset) = dataset {
                plan.dataset_path = Some(match plan.dataset_path.take() {
                    Some(path) => relative_to(found.file.as_deref(), path),
                    None => home.join("datasets").join(&plan.name),
                });
                plan.dataset = Some(dataset);
            }
            tests.push(plan);
        }
        Ok(Suite {
            name: raw.name,
            version: raw.version,
            description: raw.description,
            temperature: raw.sampling.temperature.unwrap_or(0.0),
            warmup_requests: raw.warmup.requests,
            warmup_max_tokens: raw.warmup.max_tokens,
            tests,
        })
    }

    /// The most requests the suite ever has in flight.
    pub fn max_concurrency(&self) -> u32 {
        self.tests.iter().flat_map(|test| test.concurrency.iter().copied()).max().unwrap_or(1)
    }

    /// A context size per slot that fits every prompt and output of the suite:
    /// prompt characters (an upper bound on tokens for byte-level vocabularies),
    /// a margin for the chat template, and the longest output.
    pub fn context_per_slot(&self) -> u32 {
        let prompt =
            self.tests.iter().flat_map(|t| t.prompts.iter()).map(|p| p.len()).max().unwrap_or(0);
        let prompt = u32::try_from(prompt).unwrap_or(u32::MAX);
        let output = self
            .tests
            .iter()
            .flat_map(|t| t.output_lengths.iter().copied().chain([t.max_tokens]))
            .max()
            .unwrap_or(0)
            .max(self.warmup_max_tokens);
        let quality = self.tests.iter().any(|t| t.kind == TestKind::Quality);
        let prompt = if quality { prompt.max(QUALITY_PROMPT_TOKENS) } else { prompt };
        prompt.saturating_add(output).saturating_add(128)
    }

    /// Limits every quality benchmark to its first `limit` items.
    pub fn limit_quality(&mut self, limit: u32) {
        for test in self.tests.iter_mut().filter(|test| test.kind == TestKind::Quality) {
            test.limit = Some(limit);
        }
    }
}

/// The dataset layout of a quality benchmark; an error for an unknown one.
fn dataset_of(def: &RawTest) -> Result<Option<Dataset>, String> {
    if def.kind != TestKind::Quality {
        return Ok(None);
    }
    let name = def.dataset.as_deref().unwrap_or(&def.name);
    match Dataset::from_name(name) {
        Some(dataset) => Ok(Some(dataset)),
        None => {
            Err(format!("`dataset` must be one of {}, got `{name}`", Dataset::NAMES.join(", ")))
        }
    }
}

/// The `scoring` setting (the suite's override first); an unknown value, or
/// log-likelihood for a dataset without options, is an error.
fn scoring_of(
    def: &RawTest,
    over: Option<&RawOverride>,
    dataset: Option<Dataset>,
) -> Result<Scoring, String> {
    let Some(name) = over.and_then(|o| o.scoring.as_deref()).or(def.scoring.as_deref()) else {
        return Ok(Scoring::default());
    };
    let Some(dataset) = dataset else {
        return Err("`scoring` applies to quality benchmarks only".into());
    };
    let scoring = Scoring::parse(name).ok_or_else(|| {
        format!("`scoring` must be one of {}, got `{name}`", Scoring::NAMES.join(", "))
    })?;
    if scoring == Scoring::Loglikelihood && !loglikelihood::applies_to(dataset) {
        return Err(format!(
            "`scoring: loglikelihood` needs options to compare; {} is scored from generated \
             answers (use `generative` or `auto`)",
            dataset.name()
        ));
    }
    Ok(scoring)
}

/// A relative `dataset_path` is relative to the folder of the file naming it.
fn relative_to(file: Option<&Path>, path: PathBuf) -> PathBuf {
    match file.and_then(Path::parent) {
        Some(dir) if path.is_relative() => dir.join(path),
        _ => path,
    }
}

/// Counts that must be at least 1, wherever they are set.
fn check_limits(suite: &RawSuite, def: &RawTest, over: Option<&RawOverride>) -> Result<(), String> {
    let positive = [
        ("iterations", def.iterations.or(over.and_then(|o| o.iterations))),
        (
            "max_tokens",
            over.and_then(|o| o.max_tokens).or(suite.sampling.max_tokens).or(def.max_tokens),
        ),
        ("runs", over.and_then(|o| o.runs)),
        ("limit", over.and_then(|o| o.limit).or(def.limit)),
    ];
    for (key, value) in positive {
        if value == Some(0) {
            return Err(format!("`{key}` must be at least 1"));
        }
    }
    let concurrency = over.and_then(|o| o.concurrency.as_ref()).or(def.concurrency.as_ref());
    if let Some(levels) = concurrency
        && (levels.is_empty() || levels.contains(&0))
    {
        let levels: Vec<String> = levels.iter().map(u32::to_string).collect();
        return Err(format!(
            "`concurrency` must list levels of at least 1, got [{}]",
            levels.join(", ")
        ));
    }
    if def.output_lengths.contains(&0) {
        return Err("`output_lengths` must be at least 1".into());
    }
    Ok(())
}

fn resolve(suite: &RawSuite, def: RawTest, over: Option<&RawOverride>) -> TestPlan {
    let over = |pick: fn(&RawOverride) -> Option<u32>| over.and_then(pick);
    let concurrency = over_vec(suite, &def.name).or(def.concurrency).unwrap_or_else(|| vec![1]);
    TestPlan {
        runs: over(|o| o.runs).unwrap_or(suite.runs).max(1),
        iterations: over(|o| o.iterations).or(def.iterations).unwrap_or(5).max(1),
        max_tokens: over(|o| o.max_tokens)
            .or(suite.sampling.max_tokens)
            .or(def.max_tokens)
            .unwrap_or(128),
        warmup: suite
            .test_overrides
            .get(&def.name)
            .and_then(|o| o.warmup)
            .or(def.warmup)
            .unwrap_or(true),
        concurrency,
        name: def.name,
        kind: def.kind,
        version: def.version,
        prompts: def.prompts,
        output_lengths: def.output_lengths,
        sample_interval_ms: def.sample_interval_ms.unwrap_or(100),
        dataset_path: def.dataset_path.as_deref().map(crate::config::expand_home),
        dataset: None,
        limit: over(|o| o.limit).or(def.limit),
        scoring: Scoring::default(),
    }
}

fn over_vec(suite: &RawSuite, name: &str) -> Option<Vec<u32>> {
    suite.test_overrides.get(name).and_then(|o| o.concurrency.clone())
}

/// A suite or benchmark definition, and the file it came from.
struct Found {
    /// Its name, or its path when read from a file.
    label: String,
    /// The YAML.
    text: String,
    /// The file; `None` for a definition embedded in the binary.
    file: Option<PathBuf>,
}

fn find(
    what: &'static str,
    name: &str,
    override_dir: &Path,
    shipped: &[(&str, &str)],
) -> Result<Found, SuiteError> {
    let as_path = Path::new(name);
    let is_path = name.ends_with(".yaml") || name.ends_with(".yml") || name.contains('/');
    let candidate =
        if is_path { as_path.to_owned() } else { override_dir.join(format!("{name}.yaml")) };
    if is_path || candidate.is_file() {
        let text = std::fs::read_to_string(&candidate)
            .map_err(|source| SuiteError::Read { path: candidate.clone(), source })?;
        let label = candidate.display().to_string();
        return Ok(Found { label, text, file: Some(candidate) });
    }
    match shipped.iter().find(|(shipped_name, _)| *shipped_name == name) {
        Some((_, text)) => {
            Ok(Found { label: name.to_owned(), text: (*text).to_owned(), file: None })
        }
        None => Err(SuiteError::Unknown {
            what,
            name: name.to_owned(),
            known: shipped.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", "),
        }),
    }
}

fn parse<T: for<'de> Deserialize<'de>>(
    what: &'static str,
    name: &str,
    text: &str,
) -> Result<T, SuiteError> {
    serde_saphyr::from_str(text).map_err(|error| SuiteError::Invalid {
        what,
        name: name.to_owned(),
        message: error.without_snippet().to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped(name: &str) -> Suite {
        Suite::load(name, Path::new("/nonexistent-kitt-home")).unwrap()
    }

    #[test]
    fn every_shipped_suite_loads() {
        for (name, _) in SHIPPED_SUITES {
            let suite = shipped(name);
            assert!(!suite.tests.is_empty(), "{name}");
        }
    }

    #[test]
    fn suite_sampling_and_overrides_beat_the_benchmark_file() {
        let quick = shipped("quick");
        let throughput = &quick.tests[0];
        assert_eq!((throughput.max_tokens, throughput.runs), (128, 1));
        assert_eq!(throughput.concurrency, [1]);

        let performance = shipped("performance");
        let by_name = |n: &str| performance.tests.iter().find(|t| t.name == n).unwrap().clone();
        assert_eq!(by_name("throughput").max_tokens, 256);
        assert_eq!(by_name("throughput").concurrency, [1, 2, 4]);
        assert_eq!(by_name("latency").runs, 3);
        assert!(!by_name("warmup_analysis").warmup);
        assert_eq!(performance.max_concurrency(), 4);
    }

    #[test]
    fn standard_runs_mmlu_once() {
        let standard = shipped("standard");
        let mmlu = standard.tests.iter().find(|t| t.name == "mmlu").unwrap();
        assert_eq!((mmlu.kind, mmlu.runs), (TestKind::Quality, 1));
    }

    #[test]
    fn quality_benchmarks_find_their_datasets_and_limits() {
        let home = Path::new("/kitt-home");
        let mut standard = Suite::load("standard", home).unwrap();
        let by_name = |suite: &Suite, n: &str| suite.tests.iter().find(|t| t.name == n).cloned();
        let gsm8k = by_name(&standard, "gsm8k").unwrap();
        assert_eq!(gsm8k.dataset, Some(Dataset::Gsm8k));
        assert_eq!(gsm8k.dataset_path.as_deref(), Some(home.join("datasets/gsm8k").as_path()));
        assert_eq!(gsm8k.limit, None);
        assert!(standard.context_per_slot() > QUALITY_PROMPT_TOKENS);

        standard.limit_quality(3);
        assert_eq!(by_name(&standard, "mmlu").unwrap().limit, Some(3));
        assert_eq!(by_name(&standard, "throughput").unwrap().limit, None);

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("smoke.yaml");
        let suite = "name: smoke\nversion: 1\ntests: [gsm8k, hellaswag]\n\
                     test_overrides:\n  gsm8k:\n    limit: 5\n";
        std::fs::write(&path, suite).unwrap();
        let smoke = Suite::load(path.to_str().unwrap(), home).unwrap();
        assert_eq!(by_name(&smoke, "gsm8k").unwrap().limit, Some(5), "a suite override");
        assert_eq!(by_name(&smoke, "hellaswag").unwrap().limit, None);
    }

    #[test]
    fn a_quality_benchmark_names_its_dataset_path_and_layout() {
        let home = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(home.path().join("tests")).unwrap();
        let test = "name: mmlu_mini\nkind: quality\nversion: 1\ndataset: mmlu\n\
                    dataset_path: /data/mmlu.csv\nlimit: 10\n";
        std::fs::write(home.path().join("tests/mmlu_mini.yaml"), test).unwrap();
        std::fs::create_dir_all(home.path().join("suites")).unwrap();
        let suite = "name: s\nversion: 1\ntests: [mmlu_mini]\n";
        std::fs::write(home.path().join("suites/s.yaml"), suite).unwrap();

        let loaded = Suite::load("s", home.path()).unwrap();
        let plan = &loaded.tests[0];
        assert_eq!(plan.dataset, Some(Dataset::Mmlu));
        assert_eq!(plan.dataset_path.as_deref(), Some(Path::new("/data/mmlu.csv")));
        assert_eq!(plan.limit, Some(10));

        let unknown = test.replace("dataset: mmlu", "dataset: arc");
        std::fs::write(home.path().join("tests/mmlu_mini.yaml"), unknown).unwrap();
        let error = Suite::load("s", home.path()).unwrap_err().to_string();
        assert!(error.contains("`dataset` must be one of mmlu, gsm8k"), "{error}");
        let zero = test.replace("limit: 10", "limit: 0");
        std::fs::write(home.path().join("tests/mmlu_mini.yaml"), zero).unwrap();
        let error = Suite::load("s", home.path()).unwrap_err().to_string();
        assert!(error.contains("`limit` must be at least 1"), "{error}");
    }

    #[test]
    fn a_relative_dataset_path_is_relative_to_the_benchmark_file() {
        let home = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(home.path().join("tests")).unwrap();
        let test = "name: mine\nkind: quality\nversion: 1\ndataset: hellaswag\n\
                    dataset_path: data/hs.jsonl\n";
        std::fs::write(home.path().join("tests/mine.yaml"), test).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let suite = dir.path().join("s.yaml");
        std::fs::write(&suite, "name: s\nversion: 1\ntests: [mine]\n").unwrap();

        let loaded = Suite::load(suite.to_str().unwrap(), home.path()).unwrap();
        let expected = home.path().join("tests/data/hs.jsonl");
        assert_eq!(loaded.tests[0].dataset_path.as_deref(), Some(expected.as_path()));
        assert_eq!(loaded.tests[0].scoring, Scoring::Auto);
    }

    #[test]
    fn scoring_is_read_checked_and_overridden_by_the_suite() {
        let home = tempfile::tempdir().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let suite = |body: &str| {
            let path = dir.path().join("s.yaml");
            std::fs::write(&path, format!("name: s\nversion: 1\n{body}")).unwrap();
            Suite::load(path.to_str().unwrap(), home.path())
        };
        let forced =
            suite("tests: [mmlu, gsm8k]\ntest_overrides:\n  mmlu:\n    scoring: generative\n");
        assert_eq!(forced.unwrap().tests[0].scoring, Scoring::Generative);

        let cases = [
            (
                "mmlu:\n    scoring: logprobs",
                "`scoring` must be one of generative, loglikelihood, auto, got `logprobs`",
            ),
            ("gsm8k:\n    scoring: loglikelihood", "gsm8k is scored from generated answers"),
            ("latency:\n    scoring: auto", "`scoring` applies to quality benchmarks only"),
        ];
        for (over, expected) in cases {
            let body = format!("tests: [mmlu, gsm8k, latency]\ntest_overrides:\n  {over}\n");
            let error = suite(&body).unwrap_err().to_string();
            assert!(error.contains(expected), "{error}");
        }
    }

    #[test]
    fn a_suite_file_in_the_home_overrides_the_shipped_one() {
        let home = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(home.path().join("suites")).unwrap();
        let custom = "name: quick\nversion: 9\nruns: 2\ntests: [latency]\n";
        std::fs::write(home.path().join("suites/quick.yaml"), custom).unwrap();
        let suite = Suite::load("quick", home.path()).unwrap();
        assert_eq!(
            (suite.version, suite.tests[0].name.as_str(), suite.tests[0].runs),
            (9, "latency", 2)
        );
    }

    #[test]
    fn zero_counts_and_empty_levels_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        for (body, expected) in [
            (
                "tests: [throughput]\ntest_overrides:\n  throughput:\n    concurrency: [0]\n",
                "concurrency",
            ),
            (
                "tests: [throughput]\ntest_overrides:\n  throughput:\n    concurrency: []\n",
                "concurrency",
            ),
            ("tests: []\n", "`tests` is empty"),
            ("tests: [latency]\nsampling:\n  max_tokens: 0\n", "max_tokens"),
            ("tests: [latency]\nruns: 0\n", "runs"),
            ("tests: [latency]\nsampling:\n  temperature: -5\n", "temperature"),
        ] {
            let path = dir.path().join("s.yaml");
            std::fs::write(&path, format!("name: s\nversion: 1\n{body}")).unwrap();
            let error = Suite::load(path.to_str().unwrap(), Path::new("/none")).unwrap_err();
            assert!(error.to_string().contains(expected), "{body}: {error}");
        }
    }

    #[test]
    fn unknown_names_and_keys_are_errors() {
        let error = Suite::load("quik", Path::new("/none")).unwrap_err();
        assert!(error.to_string().contains("known: quick, standard, performance"), "{error}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.yaml");
        std::fs::write(&path, "name: x\nversion: 1\ntests: [latency]\nrepeat: 3\n").unwrap();
        let error = Suite::load(path.to_str().unwrap(), Path::new("/none")).unwrap_err();
        assert!(error.to_string().contains("repeat"), "{error}");
    }
}
