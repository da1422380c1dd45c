//! The published row layouts, in JSONL, CSV and Parquet.
//!
//! Each row becomes a JSON object first (a JSONL line as it is; a CSV record
//! as header → cell text; a Parquet row with lists as arrays and structs as
//! objects), then one reader per dataset checks its fields:
//!
//! - **MMLU**: `question`, `subject` (optional), `choices` (a list of four),
//!   `answer` (0–3, or a letter A–D).
//! - **GSM8K**: `question`, `answer` (working that ends in `#### <number>`).
//! - **TruthfulQA** (`multiple_choice`): `question`, `mc1_targets`
//!   (`{"choices": [...], "labels": [...]}` with exactly one label 1). The
//!   published rows list the right answer first, so the options of each item
//!   are shuffled with a fixed seed derived from the item's position: the
//!   order is the same in every run and the right letter varies.
//! - **HellaSwag**: `ctx`, `endings` (a list of four), `label` (`"0"`–`"3"`
//!   or a number).
//!
//! In CSV, a list column holds JSON text (`["a", "b", "c", "d"]`); for MMLU
//! and HellaSwag, four columns `A`, `B`, `C`, `D` may hold the options
//! instead. Numbers may be written as text in either format.

use std::path::Path;

use serde_json::{Map, Value};

use super::dataset::{Dataset, DatasetError};
use super::extract;
use super::score::Question;

type Row = Map<String, Value>;

/// Reads a JSONL file, appending to the items read before it.
pub(super) fn read_jsonl(
    dataset: Dataset,
    path: &Path,
    text: &str,
    out: &mut Vec<Question>,
) -> Result<(), DatasetError> {
    // A byte-order mark some editors write is not part of the first row.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    for (number, line) in text.lines().enumerate() {
        let line_number = number as u64 + 1;
        let error = |message: String| DatasetError::Row {
            path: path.to_owned(),
            line: line_number,
            message,
        };
        if line.trim().is_empty() {
            continue;
        }
        let value: Value =
            serde_json::from_str(line).map_err(|e| error(format!("not a JSON object ({e})")))?;
        let Value::Object(row) = value else {
            return Err(error("not a JSON object".into()));
        };
        out.push(question(dataset, &row, out.len()).map_err(error)?);
    }
    Ok(())
}

/// Reads a Parquet file, appending to the items read before it.
pub(super) fn read_parquet(
    dataset: Dataset,
    path: &Path,
    out: &mut Vec<Question>,
) -> Result<(), DatasetError> {
    use parquet::file::reader::{FileReader, SerializedFileReader};

    let parquet = |source| DatasetError::Parquet { path: path.to_owned(), source };
    let file = std::fs::File::open(path)
        .map_err(|source| DatasetError::Read { path: path.to_owned(), source })?;
    let reader = SerializedFileReader::new(file).map_err(parquet)?;
    for (number, row) in reader.get_row_iter(None).map_err(parquet)?.enumerate() {
        let error = |message: String| DatasetError::Record {
            path: path.to_owned(),
            row: number as u64 + 1,
            message,
        };
        let Value::Object(row) = row.map_err(parquet)?.to_json_value() else {
            return Err(error("not a record".into()));
        };
        out.push(question(dataset, &row, out.len()).map_err(error)?);
    }
    Ok(())
}

/// Reads a CSV file with a header row, appending to the items read before it.
pub(super) fn read_csv(
    dataset: Dataset,
    path: &Path,
    text: &str,
    out: &mut Vec<Question>,
) -> Result<(), DatasetError> {
    let mut reader = csv::ReaderBuilder::new().has_headers(true).from_reader(text.as_bytes());
    let row_error =
        |line: u64, message: String| DatasetError::Row { path: path.to_owned(), line, message };
    let headers = reader.headers().map_err(|e| row_error(1, e.to_string()))?.clone();
    for record in reader.records() {
        let record = record.map_err(|e| {
            let line = e.position().map_or(0, csv::Position::line);
            row_error(line, e.to_string())
        })?;
        let line = record.position().map_or(0, csv::Position::line);
        let row: Row = headers
            .iter()
            .zip(record.iter())
            .map(|(name, cell)| (name.trim().to_owned(), Value::String(cell.to_owned())))
            .collect();
        out.push(question(dataset, &row, out.len()).map_err(|m| row_error(line, m))?);
    }
    Ok(())
}

fn question(dataset: Dataset, row: &Row, position: usize) -> Result<Question, String> {
    match dataset {
        Dataset::Mmlu => mmlu(row),
        Dataset::Gsm8k => gsm8k(row),
        Dataset::TruthfulQa => truthfulqa(row, position),
        Dataset::HellaSwag => hellaswag(row),
    }
}

fn mmlu(row: &Row) -> Result<Question, String> {
    let choices = options(row, "choices")?;
    let answer = match row.get("answer") {
        Some(Value::String(text)) if text.trim().len() == 1 && is_letter(text.trim()) => {
            usize::from(text.trim().as_bytes()[0] - b'A')
        }
        _ => index(row, "answer", choices.len())?,
    };
    Ok(Question::Choice {
        question: text(row, "question")?,
        subject: row.get("subject").and_then(Value::as_str).map(str::to_owned),
        choices,
        answer,
    })
}

fn gsm8k(row: &Row) -> Result<Question, String> {
    let working = text(row, "answer")?;
    let number = working
        .rsplit_once("####")
        .and_then(|(_, after)| extract::normalize_number(after))
        .ok_or_else(|| {
            format!("`answer` must end in `#### <number>`, got `{}`", short(&working))
        })?;
    Ok(Question::Arithmetic { question: text(row, "question")?, answer: number })
}

fn truthfulqa(row: &Row, position: usize) -> Result<Question, String> {
    let targets = json_field(row, "mc1_targets")?;
    let object = targets.as_object().ok_or("`mc1_targets` must be an object")?;
    let choices = string_list(object.get("choices"), "mc1_targets.choices")?;
    let labels = object
        .get("labels")
        .and_then(Value::as_array)
        .ok_or("`mc1_targets.labels` must be a list")?;
    if labels.len() != choices.len() || choices.len() < 2 {
        return Err(format!(
            "`mc1_targets` needs at least two choices and one label per choice, got {} and {}",
            choices.len(),
            labels.len()
        ));
    }
    let right: Vec<usize> = labels
        .iter()
        .enumerate()
        .filter(|(_, label)| label.as_i64() == Some(1))
        .map(|(i, _)| i)
        .collect();
    let [right] = right[..] else {
        let labels = Value::Array(labels.clone());
        return Err(format!("`mc1_targets.labels` must hold exactly one 1, got {labels}"));
    };
    if choices.len() > 26 {
        return Err(format!(
            "`mc1_targets` has {} choices; at most 26 can be lettered",
            choices.len()
        ));
    }
    let order = shuffled(choices.len(), position as u64);
    let shown: Vec<String> = order.iter().map(|&i| choices[i].clone()).collect();
    let answer = order.iter().position(|&i| i == right).unwrap_or(0);
    Ok(Question::Choice { question: text(row, "question")?, subject: None, choices: shown, answer })
}

fn hellaswag(row: &Row) -> Result<Question, String> {
    let endings = options(row, "endings")?;
    Ok(Question::Continuation {
        context: text(row, "ctx")?,
        answer: index(row, "label", endings.len())?,
        endings,
    })
}

fn text(row: &Row, key: &str) -> Result<String, String> {
    match row.get(key) {
        Some(Value::String(text)) if !text.trim().is_empty() => Ok(text.clone()),
        Some(Value::String(_)) => Err(format!("`{key}` is empty")),
        Some(other) => Err(format!("`{key}` must be text, got {}", short(&other.to_string()))),
        None => Err(missing(row, key)),
    }
}

/// Four options, from a list (or its JSON text), or from columns `A`–`D`.
fn options(row: &Row, key: &str) -> Result<Vec<String>, String> {
    let list = if row.contains_key(key) {
        string_list(Some(&json_field(row, key)?), key)?
    } else if ["A", "B", "C", "D"].iter().all(|column| row.contains_key(*column)) {
        ["A", "B", "C", "D"].iter().map(|column| text(row, column)).collect::<Result<_, _>>()?
    } else {
        return Err(missing(row, key) + " (or columns `A`, `B`, `C`, `D`)");
    };
    if list.len() != 4 {
        return Err(format!("`{key}` must hold 4 options, got {}", list.len()));
    }
    Ok(list)
}

/// A field that is JSON, or text holding JSON (a CSV cell).
fn json_field(row: &Row, key: &str) -> Result<Value, String> {
    match row.get(key) {
        Some(Value::String(text)) => serde_json::from_str(text)
            .map_err(|e| format!("`{key}` must be JSON text, got `{}` ({e})", short(text))),
        Some(value) => Ok(value.clone()),
        None => Err(missing(row, key)),
    }
}

fn string_list(value: Option<&Value>, key: &str) -> Result<Vec<String>, String> {
    let items = value.and_then(Value::as_array).ok_or(format!("`{key}` must be a list"))?;
    items
        .iter()
        .map(|item| match item {
            Value::String(text) => Ok(text.clone()),
            other => Err(format!("`{key}` must hold text, got {other}")),
        })
        .collect()
}

/// A 0-based option index, as a number or as text.
fn index(row: &Row, key: &str, options: usize) -> Result<usize, String> {
    let value = row.get(key).ok_or_else(|| missing(row, key))?;
    let number = match value {
        Value::Number(number) => number.as_u64(),
        Value::String(text) => text.trim().parse::<u64>().ok(),
        _ => None,
    };
    match number.and_then(|n| usize::try_from(n).ok()).filter(|n| *n < options) {
        Some(index) => Ok(index),
        None => Err(format!(
            "`{key}` must be an option index from 0 to {}, got {}",
            options - 1,
            short(&value.to_string())
        )),
    }
}

fn missing(row: &Row, key: &str) -> String {
    let mut present: Vec<&str> = row.keys().map(String::as_str).collect();
    present.sort_unstable();
    format!("no `{key}` field (the row has: {})", present.join(", "))
}

fn is_letter(text: &str) -> bool {
    matches!(text, "A" | "B" | "C" | "D")
}

fn short(text: &str) -> String {
    match text.char_indices().nth(60) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

/// A permutation of `0..n`, fixed by `seed` (Fisher–Yates over SplitMix64).
fn shuffled(n: usize, seed: u64) -> Vec<usize> {
    let mut state = seed.wrapping_add(0x4b49_5454);
    let mut next = || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = (next() % (i as u64 + 1)) as usize;
        order.swap(i, j);
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jsonl(dataset: Dataset, text: &str) -> Result<Vec<Question>, DatasetError> {
        let mut out = Vec::new();
        read_jsonl(dataset, Path::new("/d/test.jsonl"), text, &mut out).map(|()| out)
    }

    fn csv(dataset: Dataset, text: &str) -> Result<Vec<Question>, DatasetError> {
        let mut out = Vec::new();
        read_csv(dataset, Path::new("/d/test.csv"), text, &mut out).map(|()| out)
    }

    fn error_text(result: Result<Vec<Question>, DatasetError>) -> String {
        result.expect_err("a malformed row").to_string()
    }

    #[test]
    fn mmlu_reads_jsonl_and_both_csv_layouts() {
        let line = r#"{"question":"Q?","subject":"law","choices":["w","x","y","z"],"answer":2}"#;
        let expected = Question::Choice {
            question: "Q?".into(),
            subject: Some("law".into()),
            choices: vec!["w".into(), "x".into(), "y".into(), "z".into()],
            answer: 2,
        };
        assert_eq!(jsonl(Dataset::Mmlu, line).unwrap(), std::slice::from_ref(&expected));

        let listed = concat!(
            "question,subject,choices,answer\n",
            "Q?,law,\"[\"\"w\"\",\"\"x\"\",\"\"y\"\",\"\"z\"\"]\",2\n"
        );
        assert_eq!(csv(Dataset::Mmlu, listed).unwrap(), std::slice::from_ref(&expected));
        let columns = "question,subject,A,B,C,D,answer\nQ?,law,w,x,y,z,C\n";
        assert_eq!(csv(Dataset::Mmlu, columns).unwrap(), [expected]);
    }

    #[test]
    fn malformed_rows_name_the_file_line_and_field() {
        let good = r#"{"question":"Q?","choices":["a","b","c","d"],"answer":0}"#;
        let cases = [
            (format!("{good}\n{{\"question\":\"Q\"}}"), "/d/test.jsonl line 2: no `choices`"),
            (format!("{good}\nnot json"), "/d/test.jsonl line 2: not a JSON object"),
            (
                r#"{"question":"Q","choices":["a","b","c","d"],"answer":4}"#.to_owned(),
                "line 1: `answer` must be an option index from 0 to 3, got 4",
            ),
            (
                r#"{"question":"Q","choices":["a","b"],"answer":0}"#.to_owned(),
                "line 1: `choices` must hold 4 options, got 2",
            ),
            (
                r#"{"question":"","choices":["a","b","c","d"],"answer":0}"#.to_owned(),
                "line 1: `question` is empty",
            ),
        ];
        for (text, expected) in cases {
            let message = error_text(jsonl(Dataset::Mmlu, &text));
            assert!(message.contains(expected), "{message}");
        }
        let message =
            error_text(csv(Dataset::Mmlu, "question,choices,answer\nQ,\"[1,2,3,4]\",0\n"));
        assert!(message.contains("/d/test.csv line 2: `choices` must hold text"), "{message}");
        let message = error_text(csv(Dataset::Mmlu, "question,A,B,C,D,answer\nQ,a,b,c\n"));
        assert!(message.contains("/d/test.csv line 2"), "{message}");
    }

    #[test]
    fn gsm8k_takes_the_number_after_the_last_marker() {
        let line = r#"{"question":"How many?","answer":"3 + 4 = <<3+4=7>>7\n#### 1,007"}"#;
        let expected = Question::Arithmetic { question: "How many?".into(), answer: "1007".into() };
        assert_eq!(jsonl(Dataset::Gsm8k, line).unwrap(), [expected]);
        let message = error_text(jsonl(Dataset::Gsm8k, r#"{"question":"Q","answer":"7"}"#));
        assert!(message.contains("`answer` must end in `#### <number>`"), "{message}");
        let csv_rows = "question,answer\nQ,\"so\n#### 12\"\n";
        assert_eq!(csv(Dataset::Gsm8k, csv_rows).unwrap()[0].expected(), "12");
    }

    #[test]
    fn truthfulqa_shuffles_with_a_fixed_seed_and_keeps_the_right_answer() {
        let line = concat!(
            r#"{"question":"Q?","mc1_targets":"#,
            r#"{"choices":["right","w1","w2","w3","w4"],"labels":[1,0,0,0,0]}}"#
        );
        let text = format!("{line}\n{line}\n{line}\n{line}\n");
        let read = jsonl(Dataset::TruthfulQa, &text).unwrap();
        assert_eq!(read, jsonl(Dataset::TruthfulQa, &text).unwrap(), "the same every time");
        let mut letters = std::collections::BTreeSet::new();
        for question in &read {
            let Question::Choice { choices, answer, .. } = question else { panic!() };
            assert_eq!(choices[*answer], "right");
            letters.insert(*answer);
        }
        assert!(letters.len() > 1, "the right answer is not always first: {letters:?}");

        let two = r#"{"question":"Q","mc1_targets":{"choices":["a","b"],"labels":[1,1]}}"#;
        let message = error_text(jsonl(Dataset::TruthfulQa, two));
        assert!(message.contains("must hold exactly one 1, got [1,1]"), "{message}");
        let csv_rows = concat!(
            "question,mc1_targets\n",
            "Q,\"{\"\"choices\"\":[\"\"a\"\",\"\"b\"\"],\"\"labels\"\":[0,1]}\"\n"
        );
        let read = csv(Dataset::TruthfulQa, csv_rows).unwrap();
        let Question::Choice { choices, answer, .. } = &read[0] else { panic!() };
        assert_eq!(choices[*answer], "b");
    }

    #[test]
    fn hellaswag_labels_are_text_or_numbers() {
        let line = r#"{"ctx":"He opens the door","endings":["a","b","c","d"],"label":"3"}"#;
        assert_eq!(jsonl(Dataset::HellaSwag, line).unwrap()[0].expected(), "D");
        let unlabelled = r#"{"ctx":"C","endings":["a","b","c","d"],"label":""}"#;
        let message = error_text(jsonl(Dataset::HellaSwag, unlabelled));
        assert!(message.contains("`label` must be an option index from 0 to 3"), "{message}");
        let columns = "ctx,A,B,C,D,label\nC,a,b,c,d,1\n";
        assert_eq!(csv(Dataset::HellaSwag, columns).unwrap()[0].expected(), "B");
    }

    #[test]
    fn shuffles_are_permutations() {
        for seed in 0..50 {
            let mut order = shuffled(7, seed);
            order.sort_unstable();
            assert_eq!(order, (0..7).collect::<Vec<_>>());
        }
    }
}
