//! GGUF files: a streaming writer, a bounded metadata reader, and the project's own
//! small random-weight llama model built on the writer.
//!
//! The writer and reader know the container format only (header, typed metadata,
//! tensor infos, alignment). They do not quantize, and the reader never loads
//! tensor data: it reads what kitt records as run provenance and skips the rest.
//! [`tiny`] is the one place that knows what llama.cpp expects of a llama model.

pub mod reader;
pub mod tiny;
pub mod writer;

pub use reader::{GgufInfo, ReadError, read_info, read_info_from};
pub use tiny::{TinyModel, TinyModelError};
pub use writer::{Array, GgufWriter, TensorInfo, TensorType, Value, WriteError};

/// The four bytes every GGUF file starts with.
pub const MAGIC: [u8; 4] = *b"GGUF";

/// The format version the writer produces.
pub const VERSION: u32 = 3;

/// The data alignment a file has when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u32 = 32;

/// The metadata key that overrides [`DEFAULT_ALIGNMENT`].
pub const ALIGNMENT_KEY: &str = "general.alignment";

/// The type codes of metadata values, as the format numbers them.
pub(crate) mod value_type {
    pub const U8: u32 = 0;
    pub const I8: u32 = 1;
    pub const U16: u32 = 2;
    pub const I16: u32 = 3;
    pub const U32: u32 = 4;
    pub const I32: u32 = 5;
    pub const F32: u32 = 6;
    pub const BOOL: u32 = 7;
    pub const STRING: u32 = 8;
    pub const ARRAY: u32 = 9;
    pub const U64: u32 = 10;
    pub const I64: u32 = 11;
    pub const F64: u32 = 12;
}
