//! Writing small Parquet files in the layouts the Hugging Face Hub publishes
//! (nullable columns, `LIST` groups with `list`/`element`, Snappy pages), for
//! the quality dataset readers.

use std::path::Path;
use std::sync::Arc;

use parquet::basic::Compression;
use parquet::column::writer::ColumnWriter;
use parquet::data_type::ByteArray;
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;

/// One leaf column's values with their definition and repetition levels.
enum Leaf {
    Text(Vec<String>, Vec<i16>, Vec<i16>),
    Int64(Vec<i64>, Vec<i16>),
    Int32(Vec<i32>, Vec<i16>, Vec<i16>),
}

/// Repetition levels, or none for a column that is not repeated.
fn repeated(levels: &[i16]) -> Option<&[i16]> {
    (!levels.is_empty()).then_some(levels)
}

/// Values of a list column, with the levels of fully defined elements at `depth`.
fn list_levels(lists: &[Vec<i16>], depth: i16) -> (Vec<i16>, Vec<i16>) {
    let mut definition = Vec::new();
    let mut repetition = Vec::new();
    for list in lists {
        for position in 0..list.len() {
            definition.push(depth);
            repetition.push(i16::from(position > 0));
        }
    }
    (definition, repetition)
}

fn text_list(rows: &[Vec<&str>], depth: i16) -> Leaf {
    let shape: Vec<Vec<i16>> = rows.iter().map(|row| vec![0; row.len()]).collect();
    let (definition, repetition) = list_levels(&shape, depth);
    let values = rows.iter().flatten().map(|s| (*s).to_owned()).collect();
    Leaf::Text(values, definition, repetition)
}

fn text(rows: &[&str]) -> Leaf {
    Leaf::Text(rows.iter().map(|s| (*s).to_owned()).collect(), vec![1; rows.len()], Vec::new())
}

fn write(path: &Path, schema: &str, leaves: Vec<Leaf>) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let schema = Arc::new(parse_message_type(schema).unwrap());
    let properties =
        Arc::new(WriterProperties::builder().set_compression(Compression::SNAPPY).build());
    let file = std::fs::File::create(path).unwrap();
    let mut writer = SerializedFileWriter::new(file, schema, properties).unwrap();
    let mut group = writer.next_row_group().unwrap();
    let mut leaves = leaves.into_iter();
    while let Some(mut column) = group.next_column().unwrap() {
        match (leaves.next().expect("a leaf per column"), column.untyped()) {
            (Leaf::Text(values, def, rep), ColumnWriter::ByteArrayColumnWriter(out)) => {
                let values: Vec<ByteArray> =
                    values.iter().map(|v| ByteArray::from(v.as_str())).collect();
                out.write_batch(&values, Some(&def), repeated(&rep)).unwrap();
            }
            (Leaf::Int64(values, def), ColumnWriter::Int64ColumnWriter(out)) => {
                out.write_batch(&values, Some(&def), None).unwrap();
            }
            (Leaf::Int32(values, def, rep), ColumnWriter::Int32ColumnWriter(out)) => {
                out.write_batch(&values, Some(&def), repeated(&rep)).unwrap();
            }
            _ => panic!("a leaf does not match its column's type"),
        }
        column.close().unwrap();
    }
    group.close().unwrap();
    writer.close().unwrap();
}

/// An MMLU file (cais/mmlu): question, subject, choices, answer.
pub fn write_mmlu(path: &Path, rows: &[(&str, &str, [&str; 4], i64)]) {
    let schema = "message schema {
        optional binary question (STRING);
        optional binary subject (STRING);
        optional group choices (LIST) { repeated group list { optional binary element (STRING); } }
        optional int64 answer;
    }";
    let choices: Vec<Vec<&str>> = rows.iter().map(|row| row.2.to_vec()).collect();
    let answers: Vec<i64> = rows.iter().map(|row| row.3).collect();
    let leaves = vec![
        text(&rows.iter().map(|row| row.0).collect::<Vec<_>>()),
        text(&rows.iter().map(|row| row.1).collect::<Vec<_>>()),
        text_list(&choices, 3),
        Leaf::Int64(answers, vec![1; rows.len()]),
    ];
    write(path, schema, leaves);
}

/// A TruthfulQA `multiple_choice` file: question, mc1_targets {choices, labels}.
pub fn write_truthfulqa(path: &Path, rows: &[(&str, Vec<&str>, Vec<i32>)]) {
    let schema = "message schema {
        optional binary question (STRING);
        optional group mc1_targets {
            optional group choices (LIST) {
                repeated group list { optional binary element (STRING); }
            }
            optional group labels (LIST) { repeated group list { optional int32 element; } }
        }
    }";
    let choices: Vec<Vec<&str>> = rows.iter().map(|row| row.1.clone()).collect();
    let shape: Vec<Vec<i16>> = rows.iter().map(|row| vec![0; row.2.len()]).collect();
    let (definition, repetition) = list_levels(&shape, 4);
    let labels = rows.iter().flat_map(|row| row.2.iter().copied()).collect();
    let leaves = vec![
        text(&rows.iter().map(|row| row.0).collect::<Vec<_>>()),
        text_list(&choices, 4),
        Leaf::Int32(labels, definition, repetition),
    ];
    write(path, schema, leaves);
}

/// A GSM8K file (openai/gsm8k `main`): question, answer.
pub fn write_gsm8k(path: &Path, rows: &[(&str, &str)]) {
    let schema = "message schema {
        optional binary question (STRING);
        optional binary answer (STRING);
    }";
    let leaves = vec![
        text(&rows.iter().map(|row| row.0).collect::<Vec<_>>()),
        text(&rows.iter().map(|row| row.1).collect::<Vec<_>>()),
    ];
    write(path, schema, leaves);
}

/// A HellaSwag file (Rowan/hellaswag): ctx, endings, label (text).
pub fn write_hellaswag(path: &Path, rows: &[(&str, [&str; 4], &str)]) {
    let schema = "message schema {
        optional binary ctx (STRING);
        optional group endings (LIST) { repeated group list { optional binary element (STRING); } }
        optional binary label (STRING);
    }";
    let endings: Vec<Vec<&str>> = rows.iter().map(|row| row.1.to_vec()).collect();
    let leaves = vec![
        text(&rows.iter().map(|row| row.0).collect::<Vec<_>>()),
        text_list(&endings, 3),
        text(&rows.iter().map(|row| row.2).collect::<Vec<_>>()),
    ];
    write(path, schema, leaves);
}
