//! Parameter counts and model size estimates.
//!
//! The planner prefers real byte sizes; when a listing has none it estimates a variant's size
//! from the model's parameter count and the bits per weight of its quantization. This module
//! owns both halves of that estimate: reading counts as users write them (`8B`, `8x7B`,
//! `500M`) and the one table of bits per weight. It does not decide which size source a run
//! uses; the planner records that.

use std::sync::LazyLock;

use regex::Regex;

/// Where a quantization label is used: GGUF file names, or safetensors checkpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    Gguf,
    Checkpoint,
}

/// Effective bits per weight, keyed by upper-case base label.
///
/// Where the figures come from:
/// - ggml block types (`Q4_0`, `Q2_K`…`Q6_K`, `IQ*`, `TQ*`, `MXFP4`, `NVFP4`, floats): the
///   block layouts in llama.cpp's `ggml-common.h`, bytes per block × 8 / weights per block
///   (for example `Q4_K`: 144 bytes per 256 weights = 4.5). A bare K type (`Q4_K`) counts as
///   the block type itself, although llama.cpp's quantize tool treats it as the `_M` mix.
/// - llama.cpp mixes (`_S`/`_M`/`_L`, `IQ2_M`, `IQ3_XS`, `IQ3_M`, `MXFP4_MOE`): the file sizes
///   and bpw figures llama.cpp's quantize tool prints for them, rounded; they include the
///   larger types the mix uses for embeddings, output and attention tensors.
/// - Publisher mixes (bartowski's `_L`, unsloth's dynamic `_XL`): typical values from published
///   file sizes; they keep embeddings and output in Q8_0 or better, so each sits a little above
///   the `_M` mix of its family.
/// - Checkpoint labels: the storage type, plus group scales for `INT4`/`AWQ`/`GPTQ`
///   (128-weight groups with 16-bit scales).
///
/// An estimate counts weights only; metadata and the tokenizer add a few megabytes at most.
const BITS_PER_WEIGHT: &[(&str, f64, Family)] = &[
    ("Q4_0", 4.5, Family::Gguf),
    ("Q4_1", 5.0, Family::Gguf),
    ("Q5_0", 5.5, Family::Gguf),
    ("Q5_1", 6.0, Family::Gguf),
    ("Q8_0", 8.5, Family::Gguf),
    ("Q4_0_4_4", 4.5, Family::Gguf),
    ("Q4_0_4_8", 4.5, Family::Gguf),
    ("Q4_0_8_8", 4.5, Family::Gguf),
    ("Q2_K", 2.625, Family::Gguf),
    ("Q2_K_S", 3.0, Family::Gguf),
    ("Q2_K_L", 3.3, Family::Gguf),
    ("Q2_K_XL", 3.4, Family::Gguf),
    ("Q3_K", 3.4375, Family::Gguf),
    ("Q3_K_S", 3.5, Family::Gguf),
    ("Q3_K_M", 3.9, Family::Gguf),
    ("Q3_K_L", 4.3, Family::Gguf),
    ("Q3_K_XL", 4.4, Family::Gguf),
    ("Q4_K", 4.5, Family::Gguf),
    ("Q4_K_S", 4.6, Family::Gguf),
    ("Q4_K_M", 4.85, Family::Gguf),
    ("Q4_K_L", 5.0, Family::Gguf),
    ("Q4_K_XL", 5.1, Family::Gguf),
    ("Q5_K", 5.5, Family::Gguf),
    ("Q5_K_S", 5.55, Family::Gguf),
    ("Q5_K_M", 5.7, Family::Gguf),
    ("Q5_K_L", 5.9, Family::Gguf),
    ("Q5_K_XL", 6.0, Family::Gguf),
    ("Q6_K", 6.5625, Family::Gguf),
    ("Q6_K_L", 6.8, Family::Gguf),
    ("Q6_K_XL", 7.0, Family::Gguf),
    ("Q8_K_XL", 9.0, Family::Gguf),
    ("IQ1_S", 1.5625, Family::Gguf),
    ("IQ1_M", 1.75, Family::Gguf),
    ("IQ2_XXS", 2.0625, Family::Gguf),
    ("IQ2_XS", 2.3125, Family::Gguf),
    ("IQ2_S", 2.5625, Family::Gguf),
    ("IQ2_M", 2.7, Family::Gguf),
    ("IQ3_XXS", 3.0625, Family::Gguf),
    ("IQ3_XS", 3.3, Family::Gguf),
    ("IQ3_S", 3.4375, Family::Gguf),
    ("IQ3_M", 3.66, Family::Gguf),
    ("IQ4_XS", 4.25, Family::Gguf),
    ("IQ4_NL", 4.5, Family::Gguf),
    ("TQ1_0", 1.6875, Family::Gguf),
    ("TQ2_0", 2.0625, Family::Gguf),
    ("MXFP4", 4.25, Family::Gguf),
    ("MXFP4_MOE", 4.7, Family::Gguf),
    ("NVFP4", 4.5, Family::Gguf),
    ("F16", 16.0, Family::Gguf),
    ("BF16", 16.0, Family::Gguf),
    ("FP16", 16.0, Family::Gguf),
    ("F32", 32.0, Family::Gguf),
    ("FP32", 32.0, Family::Gguf),
    ("FP8", 8.0, Family::Checkpoint),
    ("INT8", 8.0, Family::Checkpoint),
    ("INT4", 4.25, Family::Checkpoint),
    ("AWQ", 4.25, Family::Checkpoint),
    ("GPTQ", 4.5, Family::Checkpoint),
];

/// A parameter count: a decimal, an optional `x` and expert size, then a unit letter.
///
/// The count must not follow a letter, digit or dot (so `A3B` in `30B-A3B` and the `5` in
/// `Qwen2.5` never start one), and the unit must end the word (so `8bit` is no count).
static PARAMS: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(concat!(
        r"(?i)(?:^|[^0-9a-z.])",
        r"([0-9]+(?:\.[0-9]+)?)",
        r"(?:\s*x\s*([0-9]+(?:\.[0-9]+)?))?",
        r"\s*([mbt])(?:[^0-9a-z]|$)",
    ))
    .expect("the parameter-count pattern is valid")
});

/// Parses a parameter count as users write it: `8B`, `1.5b`, `70 B`, `500M`, `270m`, `1.5T`,
/// `8x7B` (mixture of experts: total = 56B), `30B-A3B` (total 30B).
///
/// The first count in the text wins, so a model name such as `Llama-3.1-8B-Instruct` works
/// too. `8x7B` multiplies out (an upper bound: real mixtures share attention weights, and an
/// over-estimate keeps the size limit safe). A bare number has no unit and is no count. A
/// zero count returns None, so callers fall back to another size source instead of planning a
/// zero-byte model.
pub fn parse_params(text: &str) -> Option<u64> {
    let captures = PARAMS.captures(text)?;
    let count = Decimal::parse(&captures[1])?;

    let experts = match captures.get(2) {
        Some(size) => Decimal::parse(size.as_str())?,
        None => Decimal::ONE,
    };

    let unit = match captures[3].to_ascii_uppercase().as_str() {
        "M" => 1_000_000,
        "B" => 1_000_000_000,
        _ => 1_000_000_000_000,
    };

    let total = count.times(&experts)?.scaled_round(unit)?;
    u64::try_from(total).ok().filter(|&params| params > 0)
}

/// Effective bits per weight of a quantization base label (e.g. `Q4_K_M` → about 4.85), None
/// when unknown.
///
/// Case-insensitive; the label must not carry a vendor prefix (`Q4_K_XL`, not `UD-Q4_K_XL`).
/// Accepts GGUF types and the safetensors labels `BF16`, `FP16`, `FP8`, `INT8`, `INT4`, `AWQ`
/// and `GPTQ`.
pub fn bits_per_weight(base: &str) -> Option<f64> {
    lookup(base).map(|(bits, _)| bits)
}

/// True when `base` is a GGUF quantization type kitt has a bits-per-weight figure for.
pub fn is_gguf_type(base: &str) -> bool {
    matches!(lookup(base), Some((_, Family::Gguf)))
}

/// Estimated size in bytes of a model with `params` parameters in quantization `base`; None
/// when bits_per_weight is unknown.
///
/// Rounds up to whole bytes and saturates at `u64::MAX` rather than overflowing.
pub fn estimate_bytes(params: u64, base: &str) -> Option<u64> {
    let bits = bits_per_weight(base)?;

    // A float cast saturates, and for counts up to 10^13 the product stays well inside the
    // 53 bits where f64 is exact to the byte.
    Some((params as f64 * bits / 8.0).ceil() as u64)
}

fn lookup(base: &str) -> Option<(f64, Family)> {
    let key = base.trim().to_ascii_uppercase();
    BITS_PER_WEIGHT
        .iter()
        .find(|(label, _, _)| *label == key)
        .map(|&(_, bits, family)| (bits, family))
}

/// An exact decimal, `digits / 10^scale`, so `1.5B` is 1 500 000 000 without float rounding.
#[derive(Debug, Clone, Copy)]
struct Decimal {
    digits: u128,
    scale: u32,
}

impl Decimal {
    const ONE: Decimal = Decimal { digits: 1, scale: 0 };

    /// Parses `123` or `1.25`; None when the digits do not fit.
    fn parse(text: &str) -> Option<Decimal> {
        let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
        let digits = format!("{whole}{fraction}").parse::<u128>().ok()?;
        let scale = u32::try_from(fraction.len()).ok()?;
        Some(Decimal { digits, scale })
    }

    fn times(&self, other: &Decimal) -> Option<Decimal> {
        let digits = self.digits.checked_mul(other.digits)?;
        let scale = self.scale.checked_add(other.scale)?;
        Some(Decimal { digits, scale })
    }

    /// The value times `unit`, rounded half up to an integer.
    fn scaled_round(&self, unit: u128) -> Option<u128> {
        let numerator = self.digits.checked_mul(unit)?;
        let denominator = 10u128.checked_pow(self.scale)?;
        let rounded = numerator.checked_add(denominator / 2)? / denominator;
        Some(rounded)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn parse_params_reads_the_usual_spellings() {
        let cases: &[(&str, Option<u64>)] = &[
            ("8B", Some(8_000_000_000)),
            ("1.5b", Some(1_500_000_000)),
            ("70 B", Some(70_000_000_000)),
            ("500M", Some(500_000_000)),
            ("270m", Some(270_000_000)),
            ("1.5T", Some(1_500_000_000_000)),
            ("0.6B", Some(600_000_000)),
            ("8x7B", Some(56_000_000_000)),
            ("8 x 22B", Some(176_000_000_000)),
            ("30B-A3B", Some(30_000_000_000)),
            ("235B-A22B", Some(235_000_000_000)),
            ("Meta-Llama-3.1-8B-Instruct", Some(8_000_000_000)),
            ("Qwen2.5-7B", Some(7_000_000_000)),
            ("Mixtral-8x7B-Instruct-v0.1", Some(56_000_000_000)),
            ("gemma-3-270m-it", Some(270_000_000)),
            ("  14B  ", Some(14_000_000_000)),
        ];
        for &(text, expected) in cases {
            assert_eq!(parse_params(text), expected, "{text}");
        }
    }

    #[test]
    fn parse_params_returns_none_without_a_count() {
        for text in ["", "   ", "7", "8bit", "A3B", "model", "Phi-3-mini-4k-instruct", "0B"] {
            assert_eq!(parse_params(text), None, "{text:?}");
        }
    }

    #[test]
    fn moe_params_count_every_expert() {
        // The Python tool read `8x7B` as 7B, under-estimating Mixtral eightfold.
        assert_eq!(parse_params("8x7B"), Some(56_000_000_000));
    }

    #[test]
    fn million_params_are_not_zero() {
        // The Python tool read `500M` as 0, which disabled the size limit.
        assert_eq!(parse_params("500M"), Some(500_000_000));
    }

    #[test]
    fn parse_params_rejects_counts_that_overflow() {
        assert_eq!(parse_params("99999999999999999999999T"), None);
    }

    #[test]
    fn bits_per_weight_uses_block_sizes_and_mix_values() {
        assert_eq!(bits_per_weight("Q4_0"), Some(4.5));
        assert_eq!(bits_per_weight("Q8_0"), Some(8.5));
        assert_eq!(bits_per_weight("Q4_K"), Some(4.5));
        assert_eq!(bits_per_weight("Q6_K"), Some(6.5625));
        assert_eq!(bits_per_weight("IQ4_XS"), Some(4.25));
        assert_eq!(bits_per_weight("TQ1_0"), Some(1.6875));
        assert_eq!(bits_per_weight("MXFP4"), Some(4.25));
        assert_eq!(bits_per_weight("q4_k_m"), Some(4.85));
        assert_eq!(bits_per_weight("F32"), Some(32.0));
        assert_eq!(bits_per_weight("INT8"), Some(8.0));
        assert_eq!(bits_per_weight("Q4_K_XXL"), None);
        assert_eq!(bits_per_weight("UD-Q4_K_XL"), None);
    }

    #[test]
    fn f16_has_a_size_estimate() {
        // The Python tool had `fp16` but no `f16`, so the most common float label estimated 0.
        for label in ["F16", "f16", "FP16", "BF16", "bf16"] {
            assert_eq!(bits_per_weight(label), Some(16.0), "{label}");
        }
    }

    #[test]
    fn only_gguf_labels_are_gguf_types() {
        assert!(is_gguf_type("Q4_K_M"));
        assert!(is_gguf_type("bf16"));
        assert!(!is_gguf_type("AWQ"));
        assert!(!is_gguf_type("FP8"));
        assert!(!is_gguf_type("Q4_K_XXL"));
    }

    #[test]
    fn mixes_grow_with_their_suffix() {
        for family in ["Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"] {
            let bits: Vec<f64> = ["_S", "_M", "_L", "_XL"]
                .iter()
                .filter_map(|suffix| bits_per_weight(&format!("{family}{suffix}")))
                .collect();
            assert!(bits.windows(2).all(|pair| pair[0] < pair[1]), "{family}: {bits:?}");
        }
    }

    #[test]
    fn estimate_bytes_of_an_8b_model() {
        assert_eq!(estimate_bytes(8_000_000_000, "Q8_0"), Some(8_500_000_000));
        assert_eq!(estimate_bytes(8_000_000_000, "F16"), Some(16_000_000_000));
        assert_eq!(estimate_bytes(8_000_000_000, "Q4_K_M"), Some(4_850_000_000));
        assert_eq!(estimate_bytes(8_000_000_000, "mystery"), None);
        assert_eq!(estimate_bytes(0, "Q4_0"), Some(0));
    }

    fn known_label() -> impl Strategy<Value = &'static str> {
        proptest::sample::select(BITS_PER_WEIGHT.iter().map(|row| row.0).collect::<Vec<_>>())
    }

    proptest! {
        #[test]
        fn estimate_is_monotonic_in_params(
            a in 0u64..=10_000_000_000_000,
            b in 0u64..=10_000_000_000_000,
            label in known_label(),
        ) {
            let (low, high) = (a.min(b), a.max(b));
            prop_assert!(estimate_bytes(low, label) <= estimate_bytes(high, label));
        }

        #[test]
        fn more_bits_never_give_a_smaller_estimate(
            params in 0u64..=10_000_000_000_000,
            first in known_label(),
            second in known_label(),
        ) {
            let (a, b) = (bits_per_weight(first), bits_per_weight(second));
            let (small, large) = if a <= b { (first, second) } else { (second, first) };
            prop_assert!(estimate_bytes(params, small) <= estimate_bytes(params, large));
        }

        #[test]
        fn parse_params_round_trips_formatted_counts(n in 1u64..=1_000_000) {
            prop_assert_eq!(parse_params(&format!("{n}B")), Some(n * 1_000_000_000));
            prop_assert_eq!(parse_params(&format!("{n}m")), Some(n * 1_000_000));
            prop_assert_eq!(parse_params(&format!("{n} T")), Some(n * 1_000_000_000_000));
        }

        #[test]
        fn estimates_never_overflow(params in 0u64..=10_000_000_000_000, label in known_label()) {
            let bytes = estimate_bytes(params, label);
            prop_assert!(bytes.is_some());
            prop_assert!(bytes <= Some(params * 4 + 1));
        }
    }
}
