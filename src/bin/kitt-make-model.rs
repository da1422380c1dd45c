//! `kitt-make-model`: writes the project's own small random-weight llama GGUF.
//!
//! A thin front end to [`kitt::gguf::TinyModel`]: it picks a preset, applies the
//! size options, validates, writes, and prints the path and size. Invalid
//! options exit with status 2; a file that cannot be written exits with 3.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, ValueEnum};
use kitt::error::Exit;
use kitt::gguf::{TensorType, TinyModel};

const EXAMPLES: &str = "\
Examples:
  kitt-make-model tiny.gguf
  kitt-make-model slow.gguf --preset slow
  kitt-make-model wide.gguf --width 512 --ff 1024 --layers 2 --seed 7 --type f16";

/// Write a random-weight llama GGUF that only ever emits printable ASCII.
///
/// The model has a byte-level vocabulary and a chatml chat template, and never
/// emits the end-of-sequence token, so every request to an engine runs to
/// exactly its token limit. The same options and seed give a byte-identical
/// file. Options override the preset's values; widths must be multiples of 256
/// so that llama-quantize can make K-quants of the file.
#[derive(Debug, Parser)]
#[command(name = "kitt-make-model", version, after_help = EXAMPLES)]
struct Args {
    /// Where to write the GGUF file (overwritten if it exists).
    out: PathBuf,

    /// Starting shape: `instant` (4 x 256, F32, ~10 MB) or `slow` (8 x 1024, F16, ~180 MB).
    #[arg(long, value_enum, default_value_t = Preset::Instant)]
    preset: Preset,

    /// Transformer blocks.
    #[arg(long, value_name = "N")]
    layers: Option<u32>,

    /// Embedding width, a multiple of 256.
    #[arg(long, value_name = "N")]
    width: Option<u32>,

    /// Feed-forward width, a multiple of 256.
    #[arg(long, value_name = "N")]
    ff: Option<u32>,

    /// Attention heads; they must split the width into even head sizes.
    #[arg(long, value_name = "N")]
    heads: Option<u32>,

    /// Key/value heads; they must divide the heads.
    #[arg(long, value_name = "N")]
    kv_heads: Option<u32>,

    /// Training context length the file declares.
    #[arg(long, value_name = "N")]
    ctx: Option<u32>,

    /// Seed for the weights.
    #[arg(long, value_name = "N", default_value_t = 0)]
    seed: u64,

    /// Storage type of the matrices (norms are always f32).
    #[arg(long = "type", value_enum, value_name = "TYPE")]
    dtype: Option<Dtype>,
}

/// The shapes to start from.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum Preset {
    /// Generates in an instant.
    Instant,
    /// Generates measurably slowly on a CPU.
    Slow,
}

/// The matrix storage types on offer.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum Dtype {
    /// 32-bit floats.
    F32,
    /// Half-precision floats.
    F16,
}

impl Args {
    /// The model these options describe (not yet validated).
    fn model(&self) -> TinyModel {
        let base = match self.preset {
            Preset::Instant => TinyModel::instant(),
            Preset::Slow => TinyModel::measurably_slow(),
        };
        let dtype = self.dtype.map(|dtype| match dtype {
            Dtype::F32 => TensorType::F32,
            Dtype::F16 => TensorType::F16,
        });
        TinyModel {
            layers: self.layers.unwrap_or(base.layers),
            embedding: self.width.unwrap_or(base.embedding),
            feed_forward: self.ff.unwrap_or(base.feed_forward),
            heads: self.heads.unwrap_or(base.heads),
            kv_heads: self.kv_heads.unwrap_or(base.kv_heads),
            context_length: self.ctx.unwrap_or(base.context_length),
            seed: self.seed,
            dtype: dtype.unwrap_or(base.dtype),
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let model = args.model();

    if let Err(error) = model.validate() {
        eprintln!("error: invalid model shape: {error}");
        eprintln!(
            "hint: --width sets `embedding`, --ff `feed_forward`, --kv-heads `kv_heads`, \
             --ctx `context_length`"
        );
        return Exit::InvalidInput.into();
    }

    match model.write(&args.out) {
        Ok(bytes) => {
            let params = model.parameter_count();
            println!("{} ({bytes} bytes, {params} parameters)", args.out.display());
            Exit::Success.into()
        }
        Err(error) => {
            eprintln!("error: cannot write {}: {error}", args.out.display());
            Exit::Environment.into()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> TinyModel {
        let argv = ["kitt-make-model", "out.gguf"].iter().chain(args);
        Args::try_parse_from(argv).expect("valid arguments").model()
    }

    #[test]
    fn options_override_the_preset() {
        assert_eq!(parse(&[]), TinyModel::instant());
        assert_eq!(parse(&["--preset", "slow"]), TinyModel::measurably_slow());

        let model = parse(&["--preset", "slow", "--layers", "2", "--type", "f32", "--seed", "9"]);
        let expected = TinyModel {
            layers: 2,
            seed: 9,
            dtype: TensorType::F32,
            ..TinyModel::measurably_slow()
        };
        assert_eq!(model, expected);

        let model = parse(&["--width", "512", "--ff", "768", "--heads", "8", "--kv-heads", "8"]);
        assert_eq!((model.embedding, model.feed_forward, model.heads), (512, 768, 8));
        assert_eq!((model.kv_heads, parse(&["--ctx", "128"]).context_length), (8, 128));
    }

    #[test]
    fn unknown_values_are_refused_by_the_parser() {
        let argv = ["kitt-make-model", "out.gguf", "--type", "q4_0"];
        assert!(Args::try_parse_from(argv).is_err());
    }
}
