//! `kitt datasets` handlers: download (from the Hugging Face Hub) and list.

use std::io::Write;
use std::path::{Path, PathBuf};

use comfy_table::Table;
use comfy_table::presets::UTF8_FULL_CONDENSED;

use super::{DatasetDownloadArgs, DatasetListArgs};
use crate::acquire::datasets::{Downloaded, download as fetch};
use crate::acquire::hub::{Fetched, HubClient};
use crate::error::{Exit, KittError, with_causes};
use crate::plan::matrix::human_bytes;
use crate::quality::{Dataset, present};
use crate::run::signals::block_on_interruptible;

/// `kitt datasets download NAME... [--dest DIR]`.
pub fn download(args: &DatasetDownloadArgs, home: &Path, json: bool) -> Result<Exit, KittError> {
    let datasets = parse_names(&args.names)?;
    let root = root(args.dest.as_deref(), home);
    let hub = HubClient::from_env(None).map_err(|error| KittError::Usage(error.to_string()))?;

    let outcomes = block_on_interruptible(|cancel| async move {
        let mut outcomes = Vec::new();
        for dataset in datasets {
            let fetched = tokio::select! {
                fetched = fetch(&hub, dataset, &root) => fetched,
                () = cancel.cancelled() => return Err(KittError::Interrupted),
            };
            outcomes.push((dataset, fetched.map_err(|error| with_causes(&error))));
        }
        Ok(outcomes)
    })??;

    let mut out = std::io::stdout().lock();
    let written =
        if json { write_json(&mut out, &outcomes) } else { write_lines(&mut out, &outcomes) };
    written.and_then(|()| out.flush()).map_err(KittError::Output)?;
    let failed = outcomes.iter().filter(|(_, outcome)| outcome.is_err()).count();
    Ok(if failed > 0 { Exit::RunsFailed } else { Exit::Success })
}

/// `kitt datasets list [--dest DIR]`.
pub fn list(args: &DatasetListArgs, home: &Path, json: bool) -> Result<Exit, KittError> {
    let root = root(args.dest.as_deref(), home);
    let mut out = std::io::stdout().lock();
    let written = if json {
        let rows: Vec<serde_json::Value> = Dataset::ALL
            .iter()
            .map(|dataset| {
                let source = dataset.hub_source();
                let location = root.join(dataset.name());
                let files: Vec<String> = present(*dataset, &location)
                    .iter()
                    .map(|path| path.display().to_string())
                    .collect();
                serde_json::json!({
                    "name": dataset.name(), "repo": source.repo, "config": source.config,
                    "split": source.split, "location": location.display().to_string(),
                    "present": !files.is_empty(), "files": files,
                })
            })
            .collect();
        serde_json::to_writer_pretty(&mut out, &rows)
            .map_err(std::io::Error::other)
            .and_then(|()| writeln!(out))
    } else {
        write_list(&mut out, &root)
    };
    written.and_then(|()| out.flush()).map_err(KittError::Output)?;
    Ok(Exit::Success)
}

fn root(dest: Option<&Path>, home: &Path) -> PathBuf {
    dest.map_or_else(|| home.join("datasets"), Path::to_path_buf)
}

/// The datasets named, in order, each once; `all` means every one.
fn parse_names(names: &[String]) -> Result<Vec<Dataset>, KittError> {
    let mut datasets = Vec::new();
    for name in names {
        let named = if name == "all" {
            Dataset::ALL.to_vec()
        } else {
            let dataset = Dataset::from_name(name).ok_or_else(|| {
                KittError::Usage(format!(
                    "unknown dataset `{name}` (known: {}, or all)",
                    Dataset::NAMES.join(", ")
                ))
            })?;
            vec![dataset]
        };
        for dataset in named {
            if !datasets.contains(&dataset) {
                datasets.push(dataset);
            }
        }
    }
    Ok(datasets)
}

type Outcomes = Vec<(Dataset, Result<Downloaded, String>)>;

/// One line per file and a summary per dataset; failures on stderr.
fn write_lines(out: &mut impl Write, outcomes: &Outcomes) -> std::io::Result<()> {
    for (dataset, outcome) in outcomes {
        let name = dataset.name();
        let source = dataset.hub_source();
        let done = match outcome {
            Ok(done) => done,
            Err(error) => {
                eprintln!("error: {name}: {error}");
                continue;
            }
        };
        for file in &done.files {
            let what = match (file.fetched, done.checked) {
                (Fetched::Downloaded, _) => "downloaded",
                (Fetched::Present, true) => "present and verified",
                (Fetched::Present, false) => "present (offline: not checked against the Hub)",
            };
            writeln!(out, "{name}: {what}: {} ({})", file.path.display(), human_bytes(file.size))?;
        }
        let revision = done.revision.as_deref().map(|r| format!(" at {r}")).unwrap_or_default();
        writeln!(
            out,
            "{name}: ready in {} (datasets/{}{revision}, config `{}`, split `{}`)",
            done.location.display(),
            source.repo,
            source.config,
            source.split
        )?;
    }
    Ok(())
}

fn write_json(out: &mut impl Write, outcomes: &Outcomes) -> std::io::Result<()> {
    let rows: Vec<serde_json::Value> = outcomes
        .iter()
        .map(|(dataset, outcome)| {
            let source = dataset.hub_source();
            let mut row = serde_json::json!({
                "name": dataset.name(), "repo": source.repo, "config": source.config,
                "split": source.split,
            });
            match outcome {
                Ok(done) => {
                    let files: Vec<serde_json::Value> = done
                        .files
                        .iter()
                        .map(|file| {
                            serde_json::json!({
                                "path": file.path.display().to_string(),
                                "size_bytes": file.size,
                                "sha256": file.sha256,
                                "downloaded": file.fetched == Fetched::Downloaded,
                            })
                        })
                        .collect();
                    row["location"] = done.location.display().to_string().into();
                    row["revision"] = done.revision.clone().into();
                    row["checked"] = done.checked.into();
                    row["files"] = files.into();
                }
                Err(error) => row["error"] = error.clone().into(),
            }
            row
        })
        .collect();
    serde_json::to_writer_pretty(&mut *out, &rows)?;
    writeln!(out)
}

fn write_list(out: &mut impl Write, root: &Path) -> std::io::Result<()> {
    let mut table = Table::new();
    table.load_style(UTF8_FULL_CONDENSED);
    table.set_header(["dataset", "Hub repository", "config", "split", "here"]);
    for dataset in Dataset::ALL {
        let source = dataset.hub_source();
        let files = present(dataset, &root.join(dataset.name()));
        let bytes: u64 =
            files.iter().filter_map(|path| std::fs::metadata(path).ok()).map(|m| m.len()).sum();
        let here = match files.len() {
            0 => "no".to_owned(),
            1 => format!("yes (1 file, {})", human_bytes(bytes)),
            n => format!("yes ({n} files, {})", human_bytes(bytes)),
        };
        table.add_row([
            dataset.name(),
            &format!("datasets/{}", source.repo),
            source.config,
            source.split,
            &here,
        ]);
    }
    writeln!(out, "{table}")?;
    writeln!(out, "Location: {}/<dataset>/", root.display())?;
    writeln!(out, "Download with: kitt datasets download <dataset>... (or all)")
}
