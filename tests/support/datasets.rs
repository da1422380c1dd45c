//! The four quality datasets in miniature, written as the Hub publishes them
//! (JSONL, CSV and Parquet, each in its config folder), with a tag such as
//! `[m1]` in every question so scripted servers can tell the items apart.
//!
//! | tag | dataset | right answer |
//! |---|---|---|
//! | `[m1]`…`[m5]` | MMLU | B (Paris), A (4), D (oxygen), B (blue), C (seven) |
//! | `[g1]`…`[g3]` | GSM8K | 1200, 18, 5 |
//! | `[t1]`…`[t3]` | TruthfulQA | Nothing happens, No, It depends |
//! | `[h1]`, `[h2]` | HellaSwag | A (picks up the ball.), B (rinses the plate.) |

use std::path::Path;

use serde_json::json;

use super::parquet;

fn mmlu_row(tag: &str, choices: [&str; 4], answer: usize) -> String {
    json!({"question": format!("{tag} Pick one."), "subject": "trivia",
           "choices": choices, "answer": answer})
    .to_string()
}

/// A TruthfulQA row as published: the right choice first, labelled 1.
fn truthfulqa_row<'a>(question: &'a str, right: &'a str, wrong: &[&'a str]) -> TruthfulRow<'a> {
    let mut choices = vec![right];
    choices.extend_from_slice(wrong);
    let labels = (0..choices.len()).map(|i| i32::from(i == 0)).collect();
    (question, choices, labels)
}

type TruthfulRow<'a> = (&'a str, Vec<&'a str>, Vec<i32>);

/// The TruthfulQA rows, as [`parquet::write_truthfulqa`] takes them.
pub fn truthfulqa_rows() -> Vec<(&'static str, Vec<&'static str>, Vec<i32>)> {
    vec![
        truthfulqa_row("[t1] Really?", "Nothing happens", &["You die", "You get rich", "Rain"]),
        truthfulqa_row("[t2] Really?", "No", &["Yes", "Only on Sundays"]),
        truthfulqa_row("[t3] Really?", "It depends", &["Always", "Never", "Twice", "Once"]),
    ]
}

/// MMLU's rows as JSON lines.
pub fn mmlu_jsonl() -> String {
    let rows = [
        mmlu_row("[m1]", ["Rome", "Paris", "Madrid", "Oslo"], 1),
        mmlu_row("[m2]", ["4", "5", "6", "3"], 0),
        mmlu_row("[m3]", ["helium", "neon", "argon", "oxygen"], 3),
        mmlu_row("[m4]", ["red", "blue", "green", "black"], 1),
        mmlu_row("[m5]", ["five", "six", "seven", "eight"], 2),
    ];
    rows.join("\n")
}

/// GSM8K's rows as CSV.
pub const GSM8K_CSV: &str = "question,answer\n\
    \"[g1] 600 apples twice?\",\"600 * 2 = <<600*2=1200>>1200\n#### 1,200\"\n\
    \"[g2] 9 and 9?\",\"9 + 9 = 18\n#### 18\"\n\
    \"[g3] 2 and 3?\",\"2 + 3 = 5\n#### 5\"\n";

/// HellaSwag's rows as CSV.
pub const HELLASWAG_CSV: &str = "ctx,endings,label\n\
    [h1] A dog runs to the ball and,\"[\"\"picks up the ball.\"\", \"\"flies away.\"\", \
    \"\"sings.\"\", \"\"reads a book.\"\"]\",0\n\
    [h2] She washes the plate and,\"[\"\"eats it.\"\", \"\"rinses the plate.\"\", \
    \"\"paints it.\"\", \"\"throws it.\"\"]\",1\n";

/// Writes the four datasets under `<home>/datasets/`, as published, in all
/// three formats (a train file that must never be read sits beside GSM8K's
/// test split).
pub fn write_datasets(home: &Path) {
    write(&home.join("datasets/mmlu/all/test-00000-of-00001.jsonl"), &mmlu_jsonl());
    write(&home.join("datasets/gsm8k/main/test.csv"), GSM8K_CSV);
    write(&home.join("datasets/gsm8k/main/train.csv"), "not,a\nusable,file,at all\n");
    let validation = "datasets/truthfulqa/multiple_choice/validation-00000-of-00001.parquet";
    parquet::write_truthfulqa(&home.join(validation), &truthfulqa_rows());
    write(&home.join("datasets/hellaswag/data/validation.csv"), HELLASWAG_CSV);
}

/// Writes `text` to `path`, creating its folders.
pub fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}
