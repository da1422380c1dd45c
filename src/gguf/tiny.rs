//! The project's own small llama model: random weights, a byte-level vocabulary and
//! a chat template, written as GGUF and deterministic from a seed.
//!
//! Its output is predictable in shape, which is what benchmarks of a real engine
//! need from it. The vocabulary is `<unk>`, `<s>`, `</s>`, the 256 byte tokens
//! and `▁`, and the rows of `output.weight` are zero for every token except the
//! printable ASCII bytes and `▁`. Those rows all share a large weight on one
//! embedding channel that every token embedding carries and that no layer writes
//! to, so after the final norm their logits sit far above the zeros. A real
//! engine therefore only ever emits printable single-byte tokens (no partial
//! UTF-8 for a server to merge into one chunk) and never the end-of-sequence
//! token, so every request runs to exactly its token limit.
//!
//! The size knobs pick between a model that generates in an instant and one
//! that is measurably slow; widths stay multiples of 256 so that
//! `llama-quantize` can make K-quants of the file. This module does not
//! quantize and makes no attempt at a model that says anything meaningful.

use std::fs::File;
use std::io::{self, BufWriter};
use std::path::Path;

use super::writer::{Array, GgufWriter, TensorInfo, TensorType, Value};

/// Token ids of the special tokens.
const UNK: u32 = 0;
const BOS: u32 = 1;
const EOS: u32 = 2;
/// The id of the byte token `<0x00>`; byte `b` is `FIRST_BYTE + b`.
const FIRST_BYTE: u32 = 3;
/// The id of `▁`, SentencePiece's word-boundary space.
const SPACE: u32 = FIRST_BYTE + 256;
/// The vocabulary size.
const VOCAB: u32 = SPACE + 1;

/// llama.cpp's token types.
const NORMAL: i32 = 1;
const UNKNOWN: i32 = 2;
const CONTROL: i32 = 3;
const BYTE: i32 = 6;

/// The embedding channel every token carries at full strength and no layer changes.
const CARRIER: usize = 0;

/// Widths must be multiples of this so every row is whole K-quant blocks.
const QUANT_BLOCK: u32 = 256;

/// A chatml template: `<|im_start|>role\ncontent<|im_end|>\n` per message.
const CHAT_TEMPLATE: &str = concat!(
    "{%- for message in messages -%}",
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' -}}",
    "{%- endfor -%}",
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}",
);

/// The shape, seed and storage type of a random llama model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TinyModel {
    /// Transformer blocks.
    pub layers: u32,
    /// Embedding width (`n_embd`), a multiple of 256.
    pub embedding: u32,
    /// Feed-forward width (`n_ff`), a multiple of 256.
    pub feed_forward: u32,
    /// Attention heads; they divide `embedding` into even head sizes.
    pub heads: u32,
    /// Key/value heads; they divide `heads`.
    pub kv_heads: u32,
    /// The training context length the file declares.
    pub context_length: u32,
    /// The seed every weight derives from.
    pub seed: u64,
    /// How matrices are stored (norms are always F32).
    pub dtype: TensorType,
}

impl Default for TinyModel {
    /// The instant model: about 2.5 M parameters, 10 MB in F32.
    fn default() -> Self {
        TinyModel {
            layers: 4,
            embedding: 256,
            feed_forward: 512,
            heads: 4,
            kv_heads: 2,
            context_length: 4096,
            seed: 0,
            dtype: TensorType::F32,
        }
    }
}

/// Why a [`TinyModel`] cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TinyModelError {
    /// A size is zero.
    #[error("`{0}` must be at least 1")]
    Zero(&'static str),
    /// A width is not whole K-quant blocks.
    #[error(
        "`{field}` must be a multiple of 256 (so llama-quantize can make K-quants), got {value}"
    )]
    NotBlockMultiple {
        /// The field.
        field: &'static str,
        /// The value given.
        value: u32,
    },
    /// The heads do not split the embedding into even head sizes.
    #[error("`heads` ({heads}) must split `embedding` ({embedding}) into heads of even size")]
    HeadSize {
        /// The heads given.
        heads: u32,
        /// The embedding width given.
        embedding: u32,
    },
    /// The key/value heads do not divide the heads.
    #[error("`kv_heads` ({kv_heads}) must divide `heads` ({heads})")]
    KvHeads {
        /// The key/value heads given.
        kv_heads: u32,
        /// The heads given.
        heads: u32,
    },
}

impl From<TinyModelError> for io::Error {
    fn from(error: TinyModelError) -> Self {
        io::Error::new(io::ErrorKind::InvalidInput, error)
    }
}

impl TinyModel {
    /// The instant model (the [`Default`]).
    pub fn instant() -> Self {
        TinyModel::default()
    }

    /// A model that generates measurably slowly on a CPU: about 90 M parameters, F16.
    pub fn measurably_slow() -> Self {
        TinyModel {
            layers: 8,
            embedding: 1024,
            feed_forward: 2816,
            heads: 16,
            kv_heads: 4,
            dtype: TensorType::F16,
            ..TinyModel::default()
        }
    }

    /// Checks that llama.cpp can load the shape and llama-quantize can K-quantize it.
    pub fn validate(&self) -> Result<(), TinyModelError> {
        let sizes = [
            ("layers", self.layers),
            ("embedding", self.embedding),
            ("feed_forward", self.feed_forward),
            ("heads", self.heads),
            ("kv_heads", self.kv_heads),
            ("context_length", self.context_length),
        ];
        if let Some((field, _)) = sizes.iter().find(|(_, value)| *value == 0) {
            return Err(TinyModelError::Zero(field));
        }
        for (field, value) in [("embedding", self.embedding), ("feed_forward", self.feed_forward)] {
            if !value.is_multiple_of(QUANT_BLOCK) {
                return Err(TinyModelError::NotBlockMultiple { field, value });
            }
        }
        let head_size = self.embedding / self.heads;
        if !self.embedding.is_multiple_of(self.heads) || !head_size.is_multiple_of(2) {
            let (heads, embedding) = (self.heads, self.embedding);
            return Err(TinyModelError::HeadSize { heads, embedding });
        }
        if !self.heads.is_multiple_of(self.kv_heads) {
            return Err(TinyModelError::KvHeads { kv_heads: self.kv_heads, heads: self.heads });
        }
        Ok(())
    }

    /// The `general.name` written into the file.
    pub fn name(&self) -> String {
        let (layers, width, dtype) = (self.layers, self.embedding, self.dtype.name());
        format!("kitt tiny llama {layers}x{width} {dtype} seed {}", self.seed)
    }

    /// The total number of weights.
    pub fn parameter_count(&self) -> u64 {
        self.tensors().iter().map(TensorInfo::element_count).sum()
    }

    /// Writes the model to `path` and returns the number of bytes written.
    pub fn write(&self, path: &Path) -> io::Result<u64> {
        self.validate()?;
        let file = BufWriter::with_capacity(1 << 20, File::create(path)?);
        let mut writer = GgufWriter::new(file, &self.metadata(), self.tensors())?;

        while let Some(tensor) = writer.current_tensor() {
            let fill = Fill::for_tensor(tensor, self.seed);
            let (row_len, rows) =
                (tensor.dims[0] as usize, tensor.element_count() / tensor.dims[0]);
            let mut row = vec![0f32; row_len];
            for index in 0..rows {
                fill.row(index as u32, &mut row);
                writer.write_values(&row)?;
            }
        }

        let (file, bytes) = writer.finish()?;
        file.into_inner().map_err(io::IntoInnerError::into_error)?.sync_all()?;
        Ok(bytes)
    }

    fn metadata(&self) -> Vec<(String, Value)> {
        let llama = |key: &str| format!("llama.{key}");
        let file_type = match self.dtype {
            TensorType::F32 => 0,
            TensorType::F16 => 1,
        };
        let mut entries = vec![
            ("general.architecture".into(), Value::String("llama".into())),
            ("general.name".into(), Value::String(self.name())),
            ("general.file_type".into(), Value::U32(file_type)),
            ("general.alignment".into(), Value::U32(super::DEFAULT_ALIGNMENT)),
            (llama("vocab_size"), Value::U32(VOCAB)),
            (llama("context_length"), Value::U32(self.context_length)),
            (llama("embedding_length"), Value::U32(self.embedding)),
            (llama("block_count"), Value::U32(self.layers)),
            (llama("feed_forward_length"), Value::U32(self.feed_forward)),
            (llama("attention.head_count"), Value::U32(self.heads)),
            (llama("attention.head_count_kv"), Value::U32(self.kv_heads)),
            (llama("attention.layer_norm_rms_epsilon"), Value::F32(1e-5)),
            (llama("rope.dimension_count"), Value::U32(self.embedding / self.heads)),
            (llama("rope.freq_base"), Value::F32(10_000.0)),
        ];
        entries.extend(vocabulary());
        entries
    }

    /// The tensors in file order, with the shapes llama.cpp expects (innermost first).
    fn tensors(&self) -> Vec<TensorInfo> {
        let (embd, ff) = (u64::from(self.embedding), u64::from(self.feed_forward));
        let kv = embd / u64::from(self.heads) * u64::from(self.kv_heads);
        let matrix =
            |name: String, rows: u64, cols: u64| TensorInfo::new(name, &[cols, rows], self.dtype);
        let norm = |name: String| TensorInfo::new(name, &[embd], TensorType::F32);

        let mut tensors = vec![matrix("token_embd.weight".into(), u64::from(VOCAB), embd)];
        for layer in 0..self.layers {
            let blk = |part: &str| format!("blk.{layer}.{part}.weight");
            tensors.extend([
                norm(blk("attn_norm")),
                matrix(blk("attn_q"), embd, embd),
                matrix(blk("attn_k"), kv, embd),
                matrix(blk("attn_v"), kv, embd),
                matrix(blk("attn_output"), embd, embd),
                norm(blk("ffn_norm")),
                matrix(blk("ffn_gate"), ff, embd),
                matrix(blk("ffn_up"), ff, embd),
                matrix(blk("ffn_down"), embd, ff),
            ]);
        }
        tensors.push(norm("output_norm.weight".into()));
        tensors.push(matrix("output.weight".into(), u64::from(VOCAB), embd));
        tensors
    }
}

/// The byte-level SentencePiece vocabulary, its special ids and the chat template.
fn vocabulary() -> Vec<(String, Value)> {
    let mut tokens = vec!["<unk>".to_owned(), "<s>".into(), "</s>".into()];
    tokens.extend((0..=255u8).map(|byte| format!("<0x{byte:02X}>")));
    tokens.push("▁".into());

    let mut types = vec![UNKNOWN, CONTROL, CONTROL];
    types.extend([BYTE; 256]);
    types.push(NORMAL);

    let mut scores = vec![0.0f32; VOCAB as usize];
    scores[SPACE as usize] = -1.0;

    let tokenizer = |key: &str| format!("tokenizer.{key}");
    vec![
        (tokenizer("ggml.model"), Value::String("llama".into())),
        (tokenizer("ggml.tokens"), Value::Array(Array::String(tokens))),
        (tokenizer("ggml.scores"), Value::Array(Array::F32(scores))),
        (tokenizer("ggml.token_type"), Value::Array(Array::I32(types))),
        (tokenizer("ggml.unknown_token_id"), Value::U32(UNK)),
        (tokenizer("ggml.bos_token_id"), Value::U32(BOS)),
        (tokenizer("ggml.eos_token_id"), Value::U32(EOS)),
        (tokenizer("ggml.add_bos_token"), Value::Bool(true)),
        (tokenizer("ggml.add_eos_token"), Value::Bool(false)),
        (tokenizer("chat_template"), Value::String(CHAT_TEMPLATE.into())),
    ]
}

/// Whether the model may emit this token: printable ASCII bytes and `▁`.
fn is_emitted(token: u32) -> bool {
    token == SPACE || (FIRST_BYTE + 0x20..=FIRST_BYTE + 0x7e).contains(&token)
}

/// How the rows of one tensor are filled.
enum Fill {
    /// Norm weights: all ones.
    Ones,
    /// Token embeddings: the carrier channel at 1, the rest small and random.
    Embedding(Rng),
    /// A layer matrix scaled by its input width; `carrier_row` is zeroed so no
    /// layer writes to the carrier channel.
    Layer { rng: Rng, scale: f32, carrier_row: bool },
    /// The output projection: zero rows for tokens never emitted, a strong
    /// carrier weight and random rest for the others.
    Output(Rng),
}

impl Fill {
    fn for_tensor(tensor: &TensorInfo, seed: u64) -> Fill {
        let rng = Rng::new(seed ^ fnv1a(tensor.name.as_bytes()));
        let name = tensor.name.as_str();
        let fan_in = tensor.dims[0] as f32;
        if tensor.dims.len() == 1 {
            Fill::Ones
        } else if name == "token_embd.weight" {
            Fill::Embedding(rng)
        } else if name == "output.weight" {
            Fill::Output(rng)
        } else {
            let writes_residual =
                name.ends_with("attn_output.weight") || name.ends_with("ffn_down.weight");
            Fill::Layer { rng, scale: 0.15 / fan_in.sqrt(), carrier_row: writes_residual }
        }
    }

    /// Fills row `index` (the values for one output unit or one token).
    fn row(&self, index: u32, row: &mut [f32]) {
        let width = row.len() as f32;
        match self {
            Fill::Ones => row.fill(1.0),
            Fill::Embedding(rng) => {
                rng.fill(index, row, 0.7 / width.sqrt());
                row[CARRIER] = 1.0;
            }
            Fill::Layer { rng, scale, carrier_row } => {
                if *carrier_row && index as usize == CARRIER {
                    row.fill(0.0);
                } else {
                    rng.fill(index, row, *scale);
                }
            }
            Fill::Output(rng) if is_emitted(index) => {
                rng.fill(index, row, 3.5 / width.sqrt());
                row[CARRIER] = 32.0 / width.sqrt();
            }
            Fill::Output(_) => row.fill(0.0),
        }
    }
}

/// A splitmix64 stream per (tensor, row), so rows are independent of write order.
#[derive(Debug, Clone, Copy)]
struct Rng {
    seed: u64,
}

impl Rng {
    fn new(seed: u64) -> Self {
        Rng { seed }
    }

    /// Fills `row` with values uniform in `[-scale, scale)`, from this row's stream.
    fn fill(&self, index: u32, row: &mut [f32], scale: f32) {
        let mut state = splitmix(self.seed ^ u64::from(index).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        for value in row {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let unit = (splitmix(state) >> 40) as f32 / (1u64 << 24) as f32;
            *value = (unit * 2.0 - 1.0) * scale;
        }
    }
}

/// The splitmix64 output function.
fn splitmix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// FNV-1a, to give every tensor its own stream.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::read_info;

    #[test]
    fn the_instant_model_has_the_documented_size() {
        assert_eq!(TinyModel::default().parameter_count(), 2_494_720);
        assert!(TinyModel::measurably_slow().validate().is_ok());
    }

    #[test]
    fn shapes_llama_cpp_cannot_use_are_rejected() {
        let model = |change: fn(&mut TinyModel)| {
            let mut model = TinyModel::default();
            change(&mut model);
            model.validate().err()
        };
        assert_eq!(model(|m| m.layers = 0), Some(TinyModelError::Zero("layers")));
        assert!(matches!(
            model(|m| m.feed_forward = 500),
            Some(TinyModelError::NotBlockMultiple { field: "feed_forward", value: 500 })
        ));
        assert!(matches!(model(|m| m.heads = 3), Some(TinyModelError::HeadSize { .. })));
        assert!(matches!(model(|m| m.heads = 256), Some(TinyModelError::HeadSize { .. })));
        assert!(matches!(model(|m| m.kv_heads = 3), Some(TinyModelError::KvHeads { .. })));
    }

    #[test]
    fn only_printable_ascii_and_the_space_piece_can_be_emitted() {
        let emitted: Vec<u32> = (0..VOCAB).filter(|token| is_emitted(*token)).collect();
        assert_eq!(emitted.len(), 96);
        assert!(!is_emitted(EOS) && !is_emitted(BOS) && !is_emitted(UNK));
        assert!(!is_emitted(FIRST_BYTE + u32::from(b'\n')));
        assert!(!is_emitted(FIRST_BYTE + 0x80));
        assert!(is_emitted(FIRST_BYTE + u32::from(b'~')) && is_emitted(SPACE));

        let output = TensorInfo::new("output.weight", &[256, u64::from(VOCAB)], TensorType::F32);
        let fill = Fill::for_tensor(&output, 7);
        let mut row = vec![1.0; 256];
        fill.row(EOS, &mut row);
        assert!(row.iter().all(|value| *value == 0.0));
        fill.row(FIRST_BYTE + u32::from(b'a'), &mut row);
        assert_eq!(row[CARRIER], 2.0);
        assert!(row[1..].iter().all(|value| value.abs() < 3.5 / 16.0 && *value != 0.0));
    }

    #[test]
    fn written_files_read_back_and_depend_only_on_the_seed() {
        let dir = tempfile::tempdir().expect("temp dir");
        let write = |name: &str, model: &TinyModel| {
            let path = dir.path().join(name);
            let bytes = model.write(&path).expect("write");
            assert_eq!(std::fs::metadata(&path).expect("stat").len(), bytes);
            (path, bytes)
        };
        let small = TinyModel { layers: 1, seed: 11, ..TinyModel::default() };
        let (first, bytes) = write("a.gguf", &small);
        let (second, _) = write("b.gguf", &small);
        let (reseeded, _) = write("c.gguf", &TinyModel { seed: 12, ..small.clone() });
        let (half, half_bytes) = write("d.gguf", &TinyModel { dtype: TensorType::F16, ..small });

        let read = |path: &Path| std::fs::read(path).expect("read back");
        assert_eq!(read(&first), read(&second));
        assert_ne!(read(&first), read(&reseeded));
        assert!(half_bytes < bytes * 6 / 10);

        let info = read_info(&first).expect("read info");
        assert_eq!(info.architecture.as_deref(), Some("llama"));
        assert_eq!(info.name.as_deref(), Some("kitt tiny llama 1x256 f32 seed 11"));
        assert_eq!(info.context_length, Some(4096));
        assert_eq!(info.file_type, Some(0));
        assert_eq!(info.tensor_count, 3 + 9);
        assert!(info.has_chat_template);
        let expected = TinyModel { layers: 1, ..TinyModel::default() }.parameter_count();
        assert_eq!(info.parameter_count, expected);
        assert_eq!(read_info(&half).expect("read info").file_type, Some(1));
    }

    #[test]
    fn invalid_models_are_not_written() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("bad.gguf");
        let error = TinyModel { heads: 0, ..TinyModel::default() }.write(&path).err();
        assert_eq!(error.map(|e| e.kind()), Some(io::ErrorKind::InvalidInput));
        assert!(!path.exists());
    }
}
