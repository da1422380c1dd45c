//! Finding a quality benchmark's dataset on disk and reading it.
//!
//! A benchmark reads `<kitt home>/datasets/<name>/`, or the file or folder its
//! YAML names in `dataset_path`. In a folder (searched three levels deep, as
//! the Hub lays datasets out: `all/test-00000-of-00001.parquet`), files
//! ending in `.jsonl`, `.csv` or `.parquet` are candidates, and the split is chosen by the
//! words of the file name: `test` first, then `validation` (also `val`,
//! `valid`); HellaSwag prefers `validation`, because its published test split
//! has no labels. Files naming `train` or `dev` are never read; files naming
//! no split are read when no split is found. Several files of one split
//! (shards) are read in name order. When a split has files in several formats,
//! only one format is read: JSONL, else CSV, else Parquet (the Hub's layout,
//! Snappy-compressed or uncompressed).

use std::path::{Path, PathBuf};

use super::rows;
use super::score::Question;

/// The datasets kitt knows, by their public layouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dataset {
    /// `cais/mmlu`: question, subject, choices, answer 0–3.
    Mmlu,
    /// `openai/gsm8k` (`main`): question, answer ending in `#### <number>`.
    Gsm8k,
    /// `truthfulqa/truthful_qa` (`multiple_choice`): question, mc1_targets.
    TruthfulQa,
    /// `Rowan/hellaswag`: ctx, endings, label `"0"`–`"3"`.
    HellaSwag,
}

/// Where a dataset is published on the Hugging Face Hub, and which part of
/// it a benchmark reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HubSource {
    /// The dataset repository, `org/name`.
    pub repo: &'static str,
    /// The config (subset) read.
    pub config: &'static str,
    /// The repository folder holding that config's Parquet files.
    pub folder: &'static str,
    /// The split read.
    pub split: &'static str,
}

impl Dataset {
    /// Every dataset name, as a quality benchmark's `dataset` setting takes it.
    pub const NAMES: &[&str] = &["mmlu", "gsm8k", "truthfulqa", "hellaswag"];

    /// Every dataset, in the order of [`NAMES`](Self::NAMES).
    pub const ALL: [Dataset; 4] =
        [Dataset::Mmlu, Dataset::Gsm8k, Dataset::TruthfulQa, Dataset::HellaSwag];

    /// Its Hub repository, config and split (HellaSwag's labelled split is
    /// `validation`; the others are read from `test`, TruthfulQA has only
    /// `validation`).
    pub fn hub_source(self) -> HubSource {
        let (repo, config, folder, split) = match self {
            Dataset::Mmlu => ("cais/mmlu", "all", "all", "test"),
            Dataset::Gsm8k => ("openai/gsm8k", "main", "main", "test"),
            Dataset::TruthfulQa => {
                ("truthfulqa/truthful_qa", "multiple_choice", "multiple_choice", "validation")
            }
            Dataset::HellaSwag => ("Rowan/hellaswag", "default", "data", "validation"),
        };
        HubSource { repo, config, folder, split }
    }

    /// The dataset called `name`.
    pub fn from_name(name: &str) -> Option<Dataset> {
        match name {
            "mmlu" => Some(Dataset::Mmlu),
            "gsm8k" => Some(Dataset::Gsm8k),
            "truthfulqa" => Some(Dataset::TruthfulQa),
            "hellaswag" => Some(Dataset::HellaSwag),
            _ => None,
        }
    }

    /// Its name.
    pub fn name(self) -> &'static str {
        match self {
            Dataset::Mmlu => "mmlu",
            Dataset::Gsm8k => "gsm8k",
            Dataset::TruthfulQa => "truthfulqa",
            Dataset::HellaSwag => "hellaswag",
        }
    }

    /// The config folder to read when a whole repository was downloaded:
    /// the Hub publishes other configs beside it (MMLU's per-subject folders
    /// repeat `all`; GSM8K's `socratic` repeats `main`; TruthfulQA's
    /// `generation` has another layout).
    fn config_folder(self) -> Option<&'static str> {
        match self {
            Dataset::Mmlu => Some("all"),
            Dataset::Gsm8k => Some("main"),
            Dataset::TruthfulQa => Some("multiple_choice"),
            Dataset::HellaSwag => None,
        }
    }

    /// Splits in order of preference.
    fn splits(self) -> &'static [Split] {
        match self {
            Dataset::HellaSwag => &[Split::Validation, Split::Test],
            _ => &[Split::Test, Split::Validation],
        }
    }
}

/// Why a dataset could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    /// Nothing to read: the benchmark is not run.
    #[error(
        "no {dataset} dataset: put its files (JSONL, CSV or Parquet, as published) in {}, \
         or set `dataset_path` in the benchmark's YAML",
        location.display()
    )]
    Missing {
        /// The dataset.
        dataset: &'static str,
        /// Where kitt looked.
        location: PathBuf,
    },
    /// A file could not be read.
    #[error("cannot read {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A Parquet file could not be read.
    #[error("cannot read {} as Parquet", path.display())]
    Parquet {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: parquet::errors::ParquetError,
    },
    /// A Parquet row does not have the published layout.
    #[error("{} row {row}: {message}", path.display())]
    Record {
        /// The file.
        path: PathBuf,
        /// 1-based row.
        row: u64,
        /// What is wrong.
        message: String,
    },
    /// A row does not have the published layout.
    #[error("{} line {line}: {message}", path.display())]
    Row {
        /// The file.
        path: PathBuf,
        /// 1-based line of the row.
        line: u64,
        /// What is wrong.
        message: String,
    },
    /// The files hold no rows.
    #[error("{} holds no rows", location.display())]
    Empty {
        /// The file or folder.
        location: PathBuf,
    },
}

impl DatasetError {
    /// Whether the benchmark should be reported "not run" rather than failed.
    pub fn is_not_run(&self) -> bool {
        matches!(self, DatasetError::Missing { .. })
    }
}

/// A dataset read from disk.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The files read, in order.
    pub files: Vec<PathBuf>,
    /// Every item, in file and row order.
    pub questions: Vec<Question>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Split {
    Test,
    Validation,
    Excluded,
    Unnamed,
}

/// How deep to look below the dataset folder.
const MAX_DEPTH: usize = 3;

/// Reads `dataset` from `location` (a file, or a folder to search).
pub fn load(dataset: Dataset, location: &Path) -> Result<Loaded, DatasetError> {
    let files = choose_files(dataset, location)?;
    let mut questions = Vec::new();
    for file in &files {
        if is_parquet(file) {
            rows::read_parquet(dataset, file, &mut questions)?;
            continue;
        }
        let text = std::fs::read_to_string(file)
            .map_err(|source| DatasetError::Read { path: file.clone(), source })?;
        if is_csv(file) {
            rows::read_csv(dataset, file, &text, &mut questions)?;
        } else {
            rows::read_jsonl(dataset, file, &text, &mut questions)?;
        }
    }
    if questions.is_empty() {
        return Err(DatasetError::Empty { location: location.to_owned() });
    }
    Ok(Loaded { files, questions })
}

/// The files [`load`] would read at `location` (empty when there are none).
pub fn present(dataset: Dataset, location: &Path) -> Vec<PathBuf> {
    choose_files(dataset, location).unwrap_or_default()
}

fn choose_files(dataset: Dataset, location: &Path) -> Result<Vec<PathBuf>, DatasetError> {
    let missing = || DatasetError::Missing { dataset: dataset.name(), location: location.into() };
    if location.is_file() {
        return Ok(vec![location.to_owned()]);
    }
    if !location.is_dir() {
        return Err(missing());
    }

    // A repository downloaded whole holds several configs; read only the
    // one whose layout this benchmark reads.
    let root = match dataset.config_folder().map(|folder| location.join(folder)) {
        Some(config) if config.is_dir() => config,
        _ => location.to_owned(),
    };
    let mut found = Vec::new();
    collect(&root, 0, &mut found);
    found.sort();
    found.dedup();
    let of_split = |split: Split| -> Vec<PathBuf> {
        found.iter().filter(|file| split_of(file) == split).cloned().collect()
    };
    let preferred = dataset.splits().iter().map(|split| of_split(*split)).find(|f| !f.is_empty());
    let chosen = preferred.unwrap_or_else(|| of_split(Split::Unnamed));
    if chosen.is_empty() {
        return Err(missing());
    }

    let formats: [fn(&Path) -> bool; 3] = [is_jsonl, is_csv, is_parquet];
    let of_format = |is: &fn(&Path) -> bool| -> Vec<PathBuf> {
        chosen.iter().filter(|file| is(file)).cloned().collect()
    };
    Ok(formats.iter().map(of_format).find(|files| !files.is_empty()).unwrap_or_default())
}

/// Candidate files below `dir`; unreadable folders are skipped.
fn collect(dir: &Path, depth: usize, found: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        let hidden = entry.file_name().to_string_lossy().starts_with('.');
        if hidden {
            continue;
        }
        // Linked folders are not followed (a link back up would read files
        // twice), and folders naming an excluded split are skipped.
        let Ok(kind) = entry.file_type() else { continue };
        if kind.is_dir() {
            if depth + 1 < MAX_DEPTH && split_of(&path) != Split::Excluded {
                collect(&path, depth + 1, found);
            }
        } else if path.is_file() && (is_csv(&path) || is_jsonl(&path) || is_parquet(&path)) {
            found.push(path);
        }
    }
}

fn split_of(file: &Path) -> Split {
    // A folder's whole name counts (`train/`); a file's name without its extension.
    let stem = if file.extension().is_some_and(|_| !file.is_dir()) {
        file.file_stem()
    } else {
        file.file_name()
    };
    let stem = stem.map(|s| s.to_string_lossy().to_lowercase()).unwrap_or_default();
    let words: Vec<&str> = stem.split(|c: char| !c.is_ascii_alphanumeric()).collect();
    let has = |names: &[&str]| words.iter().any(|word| names.contains(word));
    if has(&["train", "dev", "auxiliary"]) {
        Split::Excluded
    } else if has(&["test"]) {
        Split::Test
    } else if has(&["validation", "val", "valid"]) {
        Split::Validation
    } else {
        Split::Unnamed
    }
}

fn extension_is(file: &Path, wanted: &str) -> bool {
    file.extension().is_some_and(|ext| ext.eq_ignore_ascii_case(wanted))
}

fn is_csv(file: &Path) -> bool {
    extension_is(file, "csv")
}

fn is_jsonl(file: &Path) -> bool {
    extension_is(file, "jsonl")
}

fn is_parquet(file: &Path) -> bool {
    extension_is(file, "parquet")
}

#[cfg(test)]
mod tests {
    use super::*;

    const MMLU_ROW: &str =
        r#"{"question":"2+2?","subject":"math","choices":["3","4","5","6"],"answer":1}"#;

    fn write(dir: &Path, name: &str, text: &str) {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    #[test]
    fn test_split_wins_and_train_and_dev_are_never_read() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "all/test-00000-of-00001.jsonl", &format!("{MMLU_ROW}\n"));
        write(dir.path(), "all/validation.jsonl", &format!("{MMLU_ROW}\n{MMLU_ROW}\n"));
        write(dir.path(), "all/dev.jsonl", "not even json\n");
        write(dir.path(), "all/auxiliary_train.jsonl", "not even json\n");

        let loaded = load(Dataset::Mmlu, dir.path()).unwrap();
        assert_eq!(loaded.questions.len(), 1);
        assert!(loaded.files[0].ends_with("all/test-00000-of-00001.jsonl"));
    }

    #[test]
    fn hellaswag_prefers_validation_and_shards_are_read_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let row = |ctx: &str| {
            format!(r#"{{"ctx":"{ctx}","endings":["a","b","c","d"],"label":"2"}}"#) + "\n"
        };
        write(dir.path(), "data/test.jsonl", &row("unlabelled"));
        write(dir.path(), "data/validation-00001-of-00002.jsonl", &row("second"));
        write(dir.path(), "data/validation-00000-of-00002.jsonl", &row("first"));

        let loaded = load(Dataset::HellaSwag, dir.path()).unwrap();
        assert_eq!(loaded.files.len(), 2);
        let contexts: Vec<String> = loaded.questions.iter().map(|q| q.text().to_owned()).collect();
        assert_eq!(contexts, ["first", "second"]);
    }

    #[test]
    fn a_whole_repository_reads_only_the_config_of_the_layout() {
        let dir = tempfile::tempdir().unwrap();
        let row = MMLU_ROW;
        write(dir.path(), "all/test-00000-of-00001.jsonl", &format!("{row}\n{row}\n"));
        write(dir.path(), "anatomy/test-00000-of-00001.jsonl", &format!("{row}\n"));
        let loaded = load(Dataset::Mmlu, dir.path()).unwrap();
        assert_eq!(loaded.questions.len(), 2, "{:?}", loaded.files);
        let truthful = tempfile::tempdir().unwrap();
        write(truthful.path(), "generation/validation.jsonl", "{\"best_answer\": \"x\"}\n");
        let mc = r#"{"question": "q", "mc1_targets": {"choices": ["a", "b"], "labels": [1, 0]}}"#;
        write(truthful.path(), "multiple_choice/validation.jsonl", &format!("{mc}\n"));
        assert_eq!(load(Dataset::TruthfulQa, truthful.path()).unwrap().questions.len(), 1);
    }

    #[test]
    fn linked_folders_and_train_folders_are_not_read_and_a_bom_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let row = MMLU_ROW;
        write(dir.path(), "test.jsonl", &format!("\u{feff}{row}\n"));
        write(dir.path(), "train/part0.jsonl", "garbage\n");
        std::os::unix::fs::symlink(dir.path(), dir.path().join("loop")).unwrap();
        let loaded = load(Dataset::Mmlu, dir.path()).unwrap();
        assert_eq!(loaded.questions.len(), 1, "{:?}", loaded.files);
    }

    #[test]
    fn a_missing_folder_is_not_run_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let error = load(Dataset::Gsm8k, &dir.path().join("gsm8k")).unwrap_err();
        assert!(error.is_not_run());
        assert!(error.to_string().contains("gsm8k"), "{error}");
        assert!(error.to_string().contains("dataset_path"), "{error}");
        write(dir.path(), "gsm8k/main/train.jsonl", "{}\n");
        assert!(load(Dataset::Gsm8k, &dir.path().join("gsm8k")).unwrap_err().is_not_run());
    }

    #[test]
    fn one_format_is_read_per_split_and_broken_parquet_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "all/test.jsonl", &format!("{MMLU_ROW}\n"));
        write(dir.path(), "all/test.parquet", "PAR1 but not really");
        let loaded = load(Dataset::Mmlu, dir.path()).unwrap();
        assert_eq!(loaded.files.len(), 1);
        assert!(loaded.files[0].ends_with("all/test.jsonl"));

        std::fs::remove_file(dir.path().join("all/test.jsonl")).unwrap();
        let error = load(Dataset::Mmlu, dir.path()).unwrap_err();
        assert!(!error.is_not_run());
        assert!(error.to_string().contains("all/test.parquet as Parquet"), "{error}");
    }

    #[test]
    fn a_named_file_is_read_whatever_its_name() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "mine.jsonl", &format!("{MMLU_ROW}\n\n{MMLU_ROW}\n"));
        let loaded = load(Dataset::Mmlu, &dir.path().join("mine.jsonl")).unwrap();
        assert_eq!(loaded.questions.len(), 2);
    }

    #[test]
    fn an_empty_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "test.jsonl", "\n");
        let error = load(Dataset::Mmlu, dir.path()).unwrap_err();
        assert!(!error.is_not_run());
        assert!(error.to_string().contains("holds no rows"), "{error}");
    }
}
