//! Quantization labels read from GGUF file and folder names.
//!
//! Publishers name a GGUF variant by appending a quant token (`Q4_K_M`, `IQ2_XXS`, `MXFP4`,
//! `BF16`…) to the model name, sometimes behind a vendor prefix (`UD-`) and before a shard
//! suffix (`-00001-of-00003`). This module finds that token, keeps its vendor prefix and
//! normalises its case. It does not list repositories, group shards into variants or apply
//! quant filters; those belong to discovery and to `plan::glob`.
//!
//! Label conventions:
//! - Labels are upper case (`q4_k_m` → `Q4_K_M`), so one variant never splits into two groups
//!   by letter case.
//! - Tokens are never merged: `F16` and `FP16` stay distinct, and an unknown but quant-shaped
//!   token such as `Q4_K_XXL` is kept whole with `known: false`.
//! - A name with no quant token falls back to its last `-`/`.`-separated segment, upper case
//!   (`model.gguf` → `MODEL`), also with `known: false`.

use std::sync::LazyLock;

use regex::Regex;

use crate::plan::size;

/// Vendor prefixes kitt recognises in front of a quant token, upper case.
///
/// `UD` marks unsloth's dynamic quants (`Qwen3-30B-A3B-UD-Q4_K_XL.gguf`); `I1` marks
/// mradermacher's importance-matrix quants (`Llama-3-8B.i1-Q4_K_M.gguf`). Any other token in
/// front of a quant (`A3B` in `Qwen3-30B-A3B-Q4_K_M`) is part of the model name.
pub const VENDOR_PREFIXES: &[&str] = &["UD", "I1"];

/// A quantization label read from a GGUF file name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QuantLabel {
    /// The label as kitt shows it: canonical upper case, vendor prefix kept, e.g. `UD-Q4_K_XL`.
    pub label: String,
    /// The label without any vendor prefix, e.g. `Q4_K_XL`.
    pub base: String,
    /// Whether `base` is a quantization type kitt knows (false: kept verbatim from the name).
    pub known: bool,
}

impl QuantLabel {
    /// Builds a label from an upper-case base token and an optional upper-case prefix.
    fn new(prefix: Option<&str>, base: &str) -> QuantLabel {
        let label = match prefix {
            Some(prefix) => format!("{prefix}-{base}"),
            None => base.to_owned(),
        };
        QuantLabel { label, base: base.to_owned(), known: size::is_gguf_type(base) }
    }

    /// The vendor prefix, if the label has one.
    pub fn prefix(&self) -> Option<&str> {
        self.label.strip_suffix(&self.base)?.strip_suffix('-')
    }
}

impl std::fmt::Display for QuantLabel {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(&self.label)
    }
}

/// The shape of a quant token, tested on an upper-case segment of a name.
///
/// It is deliberately looser than the list of known types so that a new or unusual token
/// (`Q4_K_XXL`, `Q4` as Microsoft writes it) is kept whole instead of being cut down to a
/// known neighbour. Float tokens are spelled out so that `F1` or `FP` in a model name never
/// count.
static QUANT_TOKEN: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(concat!(
        r"^(?:",
        r"I?Q[0-9]+(?:_[A-Z0-9]+)*",
        r"|TQ[0-9]+(?:_[A-Z0-9]+)*",
        r"|(?:MX|NV)?FP[0-9]+(?:_[A-Z0-9]+)*",
        r"|B?F(?:16|32|64)",
        r")$",
    ))
    .expect("the quant token pattern is valid")
});

/// A shard suffix at the end of a stem: `-00001-of-00003`.
static SHARD: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)-([0-9]{1,9})-of-([0-9]{1,9})$").expect("the shard pattern is valid")
});

/// Reads the quantization label from a GGUF file's base name (no directory), with or
/// without the `.gguf` extension and shard suffix `-00001-of-00003`.
///
/// The quant token nearest the end of the name wins. A directory part, if given anyway, is
/// ignored.
pub fn quant_from_file_name(name: &str) -> QuantLabel {
    let stem = stem_of(base_name(name));
    let segments: Vec<&str> = stem.split(['-', '.']).collect();

    for (index, segment) in segments.iter().enumerate().rev() {
        if let Some(base) = whole_token(segment) {
            let prefix = index.checked_sub(1).and_then(|before| vendor_prefix(segments[before]));
            return QuantLabel::new(prefix, &base);
        }
        if let Some(base) = trailing_token(segment) {
            return QuantLabel::new(None, &base);
        }
    }

    fallback_label(&segments, name)
}

/// Reads a label from a directory name used as a per-variant sub-folder (e.g. `Q4_K_M`,
/// `UD-Q4_K_XL`, `BF16`); None if the name is not a quant token.
pub fn quant_from_dir_name(name: &str) -> Option<QuantLabel> {
    let name = name.trim_end_matches(['/', '\\']);
    if let Some(base) = whole_token(name) {
        return Some(QuantLabel::new(None, &base));
    }

    let (prefix, rest) = name.split_once('-')?;
    let prefix = vendor_prefix(prefix)?;
    let base = whole_token(rest)?;
    Some(QuantLabel::new(Some(prefix), &base))
}

/// Splits a shard suffix: `Model-Q4_K_M-00001-of-00003.gguf` → Some((1, 3)); case-insensitive.
///
/// None when there is no suffix or it is inconsistent (index 0, or index above the total).
pub fn shard_index(name: &str) -> Option<(u32, u32)> {
    let stem = strip_extension(base_name(name));
    let captures = SHARD.captures(stem)?;
    let index: u32 = captures[1].parse().ok()?;
    let total: u32 = captures[2].parse().ok()?;
    (index >= 1 && index <= total).then_some((index, total))
}

/// True for GGUF files that are not model variants: multimodal projectors (`mmproj` anywhere in
/// the name, case-insensitive), importance matrices (`imatrix`), and similar auxiliary files.
///
/// Besides those two markers it recognises multi-token-prediction heads published next to
/// the model (`MTP/mtp-gemma-4-31B-it-BF16.gguf`: an `mtp` word in the name) and llama.cpp's
/// vocabulary-only test files (`ggml-vocab-llama-bpe.gguf`).
pub fn is_auxiliary_gguf(name: &str) -> bool {
    let lower = base_name(name).to_lowercase();
    let has_marker = lower.contains("mmproj") || lower.contains("imatrix");
    let is_vocab = lower.starts_with("ggml-vocab-");
    let is_mtp = lower.split(['-', '.', '_']).any(|word| word == "mtp");
    has_marker || is_vocab || is_mtp
}

/// The part after the last `/` or `\`.
fn base_name(name: &str) -> &str {
    name.rsplit(['/', '\\']).next().unwrap_or(name)
}

/// Drops a trailing `.gguf`, in any case.
fn strip_extension(name: &str) -> &str {
    let cut = name.len().saturating_sub(".gguf".len());
    match (name.get(..cut), name.get(cut..)) {
        (Some(stem), Some(extension)) if extension.eq_ignore_ascii_case(".gguf") => stem,
        _ => name,
    }
}

/// The name without extension and shard suffix.
fn stem_of(name: &str) -> &str {
    let stem = strip_extension(name);
    match SHARD.find(stem) {
        Some(suffix) => &stem[..suffix.start()],
        None => stem,
    }
}

/// The segment upper-cased, when the whole segment is a quant token.
fn whole_token(segment: &str) -> Option<String> {
    let upper = segment.to_ascii_uppercase();
    QUANT_TOKEN.is_match(&upper).then_some(upper)
}

/// A quant token glued to the model name with `_` (`phi-2_Q4_K_M`), longest first.
fn trailing_token(segment: &str) -> Option<String> {
    segment.match_indices('_').map(|(at, _)| &segment[at + 1..]).find_map(whole_token)
}

/// The canonical vendor prefix `segment` spells, if any.
fn vendor_prefix(segment: &str) -> Option<&'static str> {
    VENDOR_PREFIXES.iter().copied().find(|prefix| prefix.eq_ignore_ascii_case(segment))
}

/// The label of a name without a quant token: its last non-empty segment, upper case.
fn fallback_label(segments: &[&str], name: &str) -> QuantLabel {
    let last = segments.iter().rev().find(|segment| !segment.is_empty());
    let text = last.copied().unwrap_or(name).to_uppercase();
    QuantLabel { label: text.clone(), base: text, known: false }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Real file names from public repositories: (name, label, base, known).
    const REAL_NAMES: &[(&str, &str, &str, bool)] = &[
        // bartowski
        ("Meta-Llama-3.1-8B-Instruct-Q4_K_M.gguf", "Q4_K_M", "Q4_K_M", true),
        ("Meta-Llama-3.1-8B-Instruct-Q6_K_L.gguf", "Q6_K_L", "Q6_K_L", true),
        ("Meta-Llama-3.1-8B-Instruct-Q5_K_L.gguf", "Q5_K_L", "Q5_K_L", true),
        ("Meta-Llama-3.1-8B-Instruct-Q4_K_L.gguf", "Q4_K_L", "Q4_K_L", true),
        ("Meta-Llama-3.1-8B-Instruct-Q3_K_XL.gguf", "Q3_K_XL", "Q3_K_XL", true),
        ("Meta-Llama-3.1-8B-Instruct-Q2_K_L.gguf", "Q2_K_L", "Q2_K_L", true),
        ("Meta-Llama-3.1-8B-Instruct-f32.gguf", "F32", "F32", true),
        ("Meta-Llama-3.1-8B-Instruct-IQ2_M.gguf", "IQ2_M", "IQ2_M", true),
        ("Meta-Llama-3.1-8B-Instruct-IQ3_XS.gguf", "IQ3_XS", "IQ3_XS", true),
        ("Meta-Llama-3.1-8B-Instruct-IQ3_M.gguf", "IQ3_M", "IQ3_M", true),
        ("Meta-Llama-3.1-8B-Instruct-IQ4_XS.gguf", "IQ4_XS", "IQ4_XS", true),
        ("Meta-Llama-3.1-8B-Instruct-Q4_0_4_8.gguf", "Q4_0_4_8", "Q4_0_4_8", true),
        ("Meta-Llama-3.1-8B-Instruct-Q4_0_8_8.gguf", "Q4_0_8_8", "Q4_0_8_8", true),
        ("Meta-Llama-3.1-70B-Instruct-IQ2_XXS.gguf", "IQ2_XXS", "IQ2_XXS", true),
        ("Meta-Llama-3.1-70B-Instruct-IQ2_XS.gguf", "IQ2_XS", "IQ2_XS", true),
        ("Meta-Llama-3.1-70B-Instruct-IQ2_S.gguf", "IQ2_S", "IQ2_S", true),
        ("Meta-Llama-3.1-70B-Instruct-IQ1_M.gguf", "IQ1_M", "IQ1_M", true),
        ("Meta-Llama-3.1-70B-Instruct-IQ3_XXS.gguf", "IQ3_XXS", "IQ3_XXS", true),
        ("Meta-Llama-3.1-70B-Instruct-Q8_0-00001-of-00002.gguf", "Q8_0", "Q8_0", true),
        ("Meta-Llama-3-8B-Instruct-IQ3_S.gguf", "IQ3_S", "IQ3_S", true),
        ("Llama-3.3-70B-Instruct-Q4_0_4_4.gguf", "Q4_0_4_4", "Q4_0_4_4", true),
        ("Qwen_Qwen3-30B-A3B-Q4_K_M.gguf", "Q4_K_M", "Q4_K_M", true),
        ("Qwen_Qwen3-30B-A3B-bf16-00001-of-00002.gguf", "BF16", "BF16", true),
        ("openai_gpt-oss-20b-MXFP4.gguf", "MXFP4", "MXFP4", true),
        ("google_gemma-3-27b-it-Q4_1.gguf", "Q4_1", "Q4_1", true),
        ("google_gemma-3-27b-it-IQ4_NL.gguf", "IQ4_NL", "IQ4_NL", true),
        ("Mistral-Nemo-Instruct-2407-Q6_K.gguf", "Q6_K", "Q6_K", true),
        ("DeepSeek-R1-Distill-Qwen-7B-Q5_K_M.gguf", "Q5_K_M", "Q5_K_M", true),
        // Qwen
        ("qwen2.5-7b-instruct-q4_k_m-00001-of-00002.gguf", "Q4_K_M", "Q4_K_M", true),
        ("qwen2.5-7b-instruct-fp16-00001-of-00004.gguf", "FP16", "FP16", true),
        ("qwen2.5-0.5b-instruct-q8_0.gguf", "Q8_0", "Q8_0", true),
        ("qwen2.5-1.5b-instruct-q5_0.gguf", "Q5_0", "Q5_0", true),
        ("qwen2.5-1.5b-instruct-q3_k_m.gguf", "Q3_K_M", "Q3_K_M", true),
        ("qwen2.5-1.5b-instruct-q2_k.gguf", "Q2_K", "Q2_K", true),
        ("qwen2.5-coder-7b-instruct-q6_k.gguf", "Q6_K", "Q6_K", true),
        ("Qwen3-8B-Q4_K_M.gguf", "Q4_K_M", "Q4_K_M", true),
        ("Qwen3-30B-A3B-Q5_K_M.gguf", "Q5_K_M", "Q5_K_M", true),
        ("qwq-32b-q4_k_m.gguf", "Q4_K_M", "Q4_K_M", true),
        // unsloth
        ("Qwen3-30B-A3B-UD-Q4_K_XL.gguf", "UD-Q4_K_XL", "Q4_K_XL", true),
        ("DeepSeek-R1-UD-IQ1_S-00001-of-00003.gguf", "UD-IQ1_S", "IQ1_S", true),
        ("DeepSeek-R1-UD-IQ1_M-00001-of-00004.gguf", "UD-IQ1_M", "IQ1_M", true),
        ("DeepSeek-R1-UD-IQ2_XXS-00001-of-00004.gguf", "UD-IQ2_XXS", "IQ2_XXS", true),
        ("DeepSeek-R1-UD-Q2_K_XL-00001-of-00005.gguf", "UD-Q2_K_XL", "Q2_K_XL", true),
        ("Kimi-K2-Instruct-UD-TQ1_0-00001-of-00005.gguf", "UD-TQ1_0", "TQ1_0", true),
        ("Qwen3-Coder-30B-A3B-Instruct-UD-Q8_K_XL.gguf", "UD-Q8_K_XL", "Q8_K_XL", true),
        ("Qwen3-8B-UD-Q6_K_XL.gguf", "UD-Q6_K_XL", "Q6_K_XL", true),
        ("Qwen3-8B-UD-Q5_K_XL.gguf", "UD-Q5_K_XL", "Q5_K_XL", true),
        ("Qwen3-8B-UD-Q3_K_XL.gguf", "UD-Q3_K_XL", "Q3_K_XL", true),
        ("gpt-oss-20b-F16.gguf", "F16", "F16", true),
        ("Qwen3-235B-A22B-BF16-00001-of-00010.gguf", "BF16", "BF16", true),
        ("gemma-3-27b-it-qat-UD-Q4_K_XL.gguf", "UD-Q4_K_XL", "Q4_K_XL", true),
        ("gemma-4-26B-A4B-it-UD-IQ4_NL.gguf", "UD-IQ4_NL", "IQ4_NL", true),
        ("Qwen3.6-35B-A3B-MXFP4_MOE.gguf", "MXFP4_MOE", "MXFP4_MOE", true),
        ("gemma-3-27b-it-Q4_0.gguf", "Q4_0", "Q4_0", true),
        ("phi-4-Q4_K_M.gguf", "Q4_K_M", "Q4_K_M", true),
        // ggml-org
        ("gpt-oss-20b-mxfp4.gguf", "MXFP4", "MXFP4", true),
        ("gpt-oss-120b-mxfp4-00001-of-00003.gguf", "MXFP4", "MXFP4", true),
        ("gemma-3-4b-it-Q4_K_M.gguf", "Q4_K_M", "Q4_K_M", true),
        ("SmolVLM-256M-Instruct-Q8_0.gguf", "Q8_0", "Q8_0", true),
        ("embeddinggemma-300M-Q8_0.gguf", "Q8_0", "Q8_0", true),
        ("ggml-model-q4_0.gguf", "Q4_0", "Q4_0", true),
        ("ggml-model-f16.gguf", "F16", "F16", true),
        ("stories15M-q4_0.gguf", "Q4_0", "Q4_0", true),
        ("mmproj-model-f16.gguf", "F16", "F16", true),
        // TheBloke
        ("llama-2-7b-chat.Q4_K_M.gguf", "Q4_K_M", "Q4_K_M", true),
        ("llama-2-7b-chat.Q2_K.gguf", "Q2_K", "Q2_K", true),
        ("llama-2-7b-chat.Q3_K_S.gguf", "Q3_K_S", "Q3_K_S", true),
        ("llama-2-7b-chat.Q3_K_L.gguf", "Q3_K_L", "Q3_K_L", true),
        ("llama-2-7b-chat.Q4_K_S.gguf", "Q4_K_S", "Q4_K_S", true),
        ("mistral-7b-instruct-v0.2.Q5_K_S.gguf", "Q5_K_S", "Q5_K_S", true),
        ("mixtral-8x7b-instruct-v0.1.Q4_0.gguf", "Q4_0", "Q4_0", true),
        ("tinyllama-1.1b-chat-v1.0.Q8_0.gguf", "Q8_0", "Q8_0", true),
        ("falcon-180b-chat.Q6_K.gguf-split-a", "Q6_K", "Q6_K", true),
        // lmstudio-community
        ("Meta-Llama-3-8B-Instruct-Q4_K_M.gguf", "Q4_K_M", "Q4_K_M", true),
        ("gemma-3-12b-it-Q4_K_M.gguf", "Q4_K_M", "Q4_K_M", true),
        ("gpt-oss-20b-MXFP4.gguf", "MXFP4", "MXFP4", true),
        ("Qwen3-30B-A3B-Q6_K.gguf", "Q6_K", "Q6_K", true),
        ("gemma-4-31B-it-NVFP4-turbo-NVFP4.gguf", "NVFP4", "NVFP4", true),
        ("DeepSeek-R1-Distill-Llama-8B-Q3_K_L.gguf", "Q3_K_L", "Q3_K_L", true),
        // Other publishers
        ("Llama-3-8B.i1-Q4_K_M.gguf", "I1-Q4_K_M", "Q4_K_M", true),
        ("CyberPal2.0-20B.i1-MXFP4_MOE.gguf", "I1-MXFP4_MOE", "MXFP4_MOE", true),
        ("nomic-embed-text-v1.5.Q5_1.gguf", "Q5_1", "Q5_1", true),
        ("bitnet_b1_58-xl-TQ2_0.gguf", "TQ2_0", "TQ2_0", true),
        ("gemma-3-27b-it-q4_0.gguf", "Q4_0", "Q4_0", true),
        ("Phi-3-mini-4k-instruct-fp16.gguf", "FP16", "FP16", true),
        ("Phi-3-mini-4k-instruct-q4.gguf", "Q4", "Q4", false),
    ];

    fn label(name: &str) -> String {
        quant_from_file_name(name).label
    }

    #[test]
    fn real_file_names_give_their_labels() {
        assert!(REAL_NAMES.len() >= 60);
        for &(name, label, base, known) in REAL_NAMES {
            let expected = QuantLabel { label: label.into(), base: base.into(), known };
            assert_eq!(quant_from_file_name(name), expected, "{name}");
        }
    }

    #[test]
    fn every_real_label_reads_back_as_a_folder_name() {
        for &(name, label, _, _) in REAL_NAMES {
            let from_dir = quant_from_dir_name(label);
            assert_eq!(from_dir.as_ref(), Some(&quant_from_file_name(name)), "{name}");
        }
    }

    #[test]
    fn model_name_tokens_are_not_vendor_prefixes() {
        let parsed = quant_from_file_name("Qwen3-30B-A3B-Q4_K_M.gguf");
        assert_eq!(parsed.label, "Q4_K_M");
        assert_eq!(parsed.prefix(), None);
        assert_eq!(quant_from_file_name("Qwen3-30B-A3B-UD-Q4_K_XL.gguf").prefix(), Some("UD"));
    }

    #[test]
    fn xl_suffix_is_not_truncated() {
        // The Python tool read `Qwen3-UD-Q4_K_XL` as `Q4_K`, merging it with another variant.
        assert_eq!(label("Qwen3-UD-Q4_K_XL.gguf"), "UD-Q4_K_XL");
    }

    #[test]
    fn unknown_token_is_kept_whole() {
        let parsed = quant_from_file_name("Model-Q4_K_XXL.gguf");
        assert_eq!(
            parsed,
            QuantLabel { label: "Q4_K_XXL".into(), base: "Q4_K_XXL".into(), known: false }
        );
    }

    #[test]
    fn f16_and_fp16_stay_distinct() {
        assert_eq!(label("model-f16.gguf"), "F16");
        assert_eq!(label("model-fp16.gguf"), "FP16");
        assert_eq!(label("model-bf16.gguf"), "BF16");
    }

    #[test]
    fn labels_ignore_letter_case() {
        assert_eq!(
            label("qwen2.5-7b-instruct-q4_k_m.gguf"),
            label("Qwen2.5-7B-Instruct-Q4_K_M.gguf")
        );
        assert_eq!(label("model-iq4_xs.gguf"), "IQ4_XS");
        assert_eq!(label("model-ud-q4_k_xl.GGUF"), "UD-Q4_K_XL");
    }

    #[test]
    fn q4_1_q5_1_tq_and_mxfp4_are_recognised() {
        // The Python tool's pattern missed these and used the whole file stem instead.
        for (name, expected) in [
            ("Model-Q4_1.gguf", "Q4_1"),
            ("Model-Q5_1.gguf", "Q5_1"),
            ("Model-TQ1_0.gguf", "TQ1_0"),
            ("Model-MXFP4.gguf", "MXFP4"),
        ] {
            assert!(quant_from_file_name(name).known, "{name}");
            assert_eq!(label(name), expected);
        }
    }

    #[test]
    fn name_without_token_falls_back_to_last_segment() {
        assert_eq!(label("model.gguf"), "MODEL");
        assert_eq!(label("ggml-model.gguf"), "MODEL");
        assert_eq!(label("Llama-3.1-8B-Instruct.gguf"), "INSTRUCT");
        assert!(!quant_from_file_name("model.gguf").known);
        assert_eq!(label(""), "");
    }

    #[test]
    fn extension_shard_and_directory_are_optional() {
        for name in [
            "Model-Q4_K_M",
            "Model-Q4_K_M.gguf",
            "Model-Q4_K_M-00002-of-00003",
            "Q4_K_M/Model-Q4_K_M-00001-of-00002.gguf",
        ] {
            assert_eq!(label(name), "Q4_K_M", "{name}");
        }
    }

    #[test]
    fn token_glued_with_underscore_is_found() {
        assert_eq!(label("phi-2_Q4_K_M.gguf"), "Q4_K_M");
        assert_eq!(label("stablelm-2-zephyr-1_6b-Q4_0.gguf"), "Q4_0");
    }

    #[test]
    fn shard_index_reads_the_suffix() {
        assert_eq!(shard_index("Model-Q4_K_M-00001-of-00003.gguf"), Some((1, 3)));
        assert_eq!(shard_index("model-q4_k_m-00002-OF-00003.GGUF"), Some((2, 3)));
        assert_eq!(shard_index("Model-Q4_K_M-00003-of-00003"), Some((3, 3)));
        assert_eq!(shard_index("UD-Q2_K_XL/Model-UD-Q2_K_XL-00001-of-00002.gguf"), Some((1, 2)));
        assert_eq!(shard_index("Model-Q4_K_M.gguf"), None);
        assert_eq!(shard_index("Model-Q4_K_M-00000-of-00003.gguf"), None);
        assert_eq!(shard_index("Model-Q4_K_M-00004-of-00003.gguf"), None);
        assert_eq!(shard_index("Model-00001-of-00003-Q4_K_M.gguf"), None);
    }

    #[test]
    fn dir_names_are_quant_tokens_only() {
        let cases = [
            ("Q4_K_M", Some("Q4_K_M")),
            ("q8_0", Some("Q8_0")),
            ("BF16", Some("BF16")),
            ("UD-Q4_K_XL", Some("UD-Q4_K_XL")),
            ("ud-iq1_s/", Some("UD-IQ1_S")),
            ("Q4_K_XXL", Some("Q4_K_XXL")),
            ("Meta-Llama-3.1-70B-Instruct-Q8_0", None),
            ("A3B-Q4_K_M", None),
            ("MTP", None),
            ("mmproj", None),
            ("", None),
        ];
        for (name, expected) in cases {
            let parsed = quant_from_dir_name(name).map(|quant| quant.label);
            assert_eq!(parsed.as_deref(), expected, "{name}");
        }
    }

    #[test]
    fn auxiliary_files_are_not_variants() {
        for name in [
            "mmproj-model-f16.gguf",
            "mmproj-F16.gguf",
            "mmproj-Qwen_Qwen2.5-VL-7B-Instruct-f16.gguf",
            "Qwen2.5-VL-7B-Instruct-MMPROJ-Q8_0.gguf",
            "imatrix_unsloth.gguf",
            "Kwaipilot_KAT-Coder-V2.5-Dev-imatrix.gguf",
            "MTP/mtp-gemma-4-31B-it-BF16.gguf",
            "ggml-vocab-llama-bpe.gguf",
        ] {
            assert!(is_auxiliary_gguf(name), "{name}");
        }
        for name in [
            "Meta-Llama-3.1-8B-Instruct-Q4_K_M.gguf",
            "gpt-oss-20b-mxfp4.gguf",
            "ggml-model-f16.gguf",
        ] {
            assert!(!is_auxiliary_gguf(name), "{name}");
        }
    }

    proptest! {
        #[test]
        fn appended_token_wins_whatever_the_model_name(
            model in "[A-Za-z0-9]{1,8}(-[A-Za-z0-9.]{1,8}){0,3}",
            index in 0usize..REAL_NAMES.len(),
        ) {
            let (_, expected, _, _) = REAL_NAMES[index];
            let last = model.rsplit(['-', '.']).next().unwrap_or_default();
            prop_assume!(vendor_prefix(last).is_none());
            prop_assert_eq!(label(&format!("{model}-{expected}.gguf")), expected);
        }
    }
}
