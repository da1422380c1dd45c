//! Reading what a GGUF file says about itself, for run provenance, without trusting it.
//!
//! The reader walks the header, the metadata and the tensor infos of any GGUF
//! file (versions 2 and 3, little-endian) and keeps a handful of facts: the
//! architecture, the name, the training context length, the file type, whether a
//! chat template is embedded, the split count and the number of parameters. Every
//! count and length is checked against a limit before it is acted on, values it
//! does not need are skipped rather than loaded, and no tensor data is read.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::Path;

use super::{MAGIC, value_type};

/// The most tensors, metadata entries or array elements a file may declare.
pub const MAX_COUNT: u64 = 1_000_000;

/// The longest string, in bytes, the reader accepts.
pub const MAX_STRING_LEN: u64 = 16 * 1024 * 1024;

/// How deeply arrays may nest inside arrays.
const MAX_ARRAY_DEPTH: u32 = 4;

/// The most dimensions ggml gives a tensor.
const MAX_DIMS: u32 = 4;

/// What a GGUF file declares about itself.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GgufInfo {
    /// The format version (2 or 3).
    pub version: u32,
    /// How many tensors this file (this shard, for a split model) holds.
    pub tensor_count: u64,
    /// `general.architecture`, e.g. `llama`.
    pub architecture: Option<String>,
    /// `general.name`.
    pub name: Option<String>,
    /// `<architecture>.context_length`: the training context.
    pub context_length: Option<u64>,
    /// `general.file_type`, llama.cpp's code for the predominant tensor type.
    pub file_type: Option<u32>,
    /// The sum of the tensors' element counts (of this shard only, for a split model).
    pub parameter_count: u64,
    /// Whether `tokenizer.chat_template` is present.
    pub has_chat_template: bool,
    /// `split.count`: how many shards the model has, when it is split.
    pub split_count: Option<u16>,
}

/// Why a file's GGUF metadata could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Reading failed.
    #[error("cannot read the GGUF file")]
    Io(#[source] io::Error),
    /// The file ended before the metadata did.
    #[error("the file ends inside its GGUF header or metadata")]
    Truncated,
    /// The magic bytes are wrong.
    #[error("not a GGUF file: it starts with {0:02x?} instead of `GGUF`")]
    NotGguf([u8; 4]),
    /// The version is one the reader does not know (a big-endian file reads as a huge version).
    #[error("GGUF version {0} is not supported; expected 2 or 3")]
    UnsupportedVersion(u32),
    /// A declared count is beyond [`MAX_COUNT`].
    #[error("the file declares {count} {what}; the limit is {MAX_COUNT}")]
    CountTooLarge {
        /// What is being counted.
        what: &'static str,
        /// The declared count.
        count: u64,
    },
    /// A declared string length is beyond [`MAX_STRING_LEN`].
    #[error("the file declares a string of {0} bytes; the limit is 16 MiB")]
    StringTooLong(u64),
    /// A metadata value type code is unknown.
    #[error("unknown metadata value type {0}")]
    UnknownValueType(u32),
    /// Arrays nest too deeply.
    #[error("metadata arrays nest deeper than {MAX_ARRAY_DEPTH} levels")]
    TooDeep,
    /// A tensor declares more dimensions than ggml has.
    #[error("a tensor declares {0} dimensions; at most {MAX_DIMS} exist")]
    TooManyDims(u32),
    /// The element counts do not fit in 64 bits.
    #[error("the tensors' element counts overflow a 64-bit count")]
    CountOverflow,
}

impl From<io::Error> for ReadError {
    fn from(error: io::Error) -> Self {
        if error.kind() == io::ErrorKind::UnexpectedEof {
            ReadError::Truncated
        } else {
            ReadError::Io(error)
        }
    }
}

/// Reads the metadata of the GGUF file at `path`.
pub fn read_info(path: &Path) -> Result<GgufInfo, ReadError> {
    let file = File::open(path).map_err(ReadError::Io)?;
    read_info_from(BufReader::new(file))
}

/// Reads GGUF metadata from a stream positioned at the start of the file.
pub fn read_info_from(input: impl Read) -> Result<GgufInfo, ReadError> {
    let mut input = Input { inner: input };

    let mut magic = [0u8; 4];
    input.inner.read_exact(&mut magic)?;
    if magic != MAGIC {
        return Err(ReadError::NotGguf(magic));
    }
    let version = input.u32()?;
    if !(2..=3).contains(&version) {
        return Err(ReadError::UnsupportedVersion(version));
    }
    let tensor_count = input.count("tensors")?;
    let kv_count = input.count("metadata entries")?;

    let mut info = GgufInfo { version, tensor_count, ..GgufInfo::default() };
    let mut context_lengths = Vec::new();
    for _ in 0..kv_count {
        let key = input.string()?;
        let ty = input.u32()?;
        read_entry(&mut input, &key, ty, &mut info, &mut context_lengths)?;
    }
    info.context_length = info.architecture.as_ref().and_then(|arch| {
        let key = format!("{arch}.context_length").into_bytes();
        context_lengths.iter().find(|(k, _)| *k == key).map(|(_, length)| *length)
    });

    for _ in 0..tensor_count {
        info.parameter_count = info
            .parameter_count
            .checked_add(read_tensor_elements(&mut input)?)
            .ok_or(ReadError::CountOverflow)?;
    }
    Ok(info)
}

/// Reads one metadata value, keeping it in `info` when it is one kitt records.
fn read_entry<R: Read>(
    input: &mut Input<R>,
    key: &[u8],
    ty: u32,
    info: &mut GgufInfo,
    context_lengths: &mut Vec<(Vec<u8>, u64)>,
) -> Result<(), ReadError> {
    match (key, ty) {
        (b"general.architecture", value_type::STRING) => info.architecture = Some(input.text()?),
        (b"general.name", value_type::STRING) => info.name = Some(input.text()?),
        (b"tokenizer.chat_template", value_type::STRING) => {
            info.has_chat_template = true;
            input.skip(value_type::STRING, 0)?;
        }
        (b"general.file_type", _) if is_integer(ty) => {
            info.file_type = input.integer(ty)?.and_then(|v| u32::try_from(v).ok());
        }
        (b"split.count", _) if is_integer(ty) => {
            info.split_count = input.integer(ty)?.and_then(|v| u16::try_from(v).ok());
        }
        _ if key.ends_with(b".context_length") && is_integer(ty) => {
            if let Some(length) = input.integer(ty)? {
                context_lengths.push((key.to_vec(), length));
            }
        }
        _ => input.skip(ty, 0)?,
    }
    Ok(())
}

/// Reads one tensor info and returns its element count.
fn read_tensor_elements<R: Read>(input: &mut Input<R>) -> Result<u64, ReadError> {
    input.skip(value_type::STRING, 0)?;
    let n_dims = input.u32()?;
    if n_dims > MAX_DIMS {
        return Err(ReadError::TooManyDims(n_dims));
    }
    let mut elements = 1u64;
    for _ in 0..n_dims {
        elements = elements.checked_mul(input.u64()?).ok_or(ReadError::CountOverflow)?;
    }
    // The ggml type and the data offset matter only to code that loads tensors.
    input.u32()?;
    input.u64()?;
    Ok(elements)
}

fn is_integer(ty: u32) -> bool {
    use value_type as t;
    matches!(ty, t::U8 | t::I8 | t::U16 | t::I16 | t::U32 | t::I32 | t::U64 | t::I64)
}

/// The byte size of a fixed-size value type, or `None` for strings and arrays.
fn fixed_size(ty: u32) -> Option<u64> {
    use value_type as t;
    match ty {
        t::U8 | t::I8 | t::BOOL => Some(1),
        t::U16 | t::I16 => Some(2),
        t::U32 | t::I32 | t::F32 => Some(4),
        t::U64 | t::I64 | t::F64 => Some(8),
        _ => None,
    }
}

/// Little-endian primitives over a stream, each bounded.
struct Input<R> {
    inner: R,
}

impl<R: Read> Input<R> {
    fn bytes<const N: usize>(&mut self) -> Result<[u8; N], ReadError> {
        let mut buf = [0u8; N];
        self.inner.read_exact(&mut buf)?;
        Ok(buf)
    }

    fn u32(&mut self) -> Result<u32, ReadError> {
        Ok(u32::from_le_bytes(self.bytes()?))
    }

    fn u64(&mut self) -> Result<u64, ReadError> {
        Ok(u64::from_le_bytes(self.bytes()?))
    }

    /// A u64 count, rejected when beyond [`MAX_COUNT`].
    fn count(&mut self, what: &'static str) -> Result<u64, ReadError> {
        let count = self.u64()?;
        if count > MAX_COUNT {
            return Err(ReadError::CountTooLarge { what, count });
        }
        Ok(count)
    }

    /// A string length, rejected when beyond [`MAX_STRING_LEN`].
    fn string_len(&mut self) -> Result<u64, ReadError> {
        let len = self.u64()?;
        if len > MAX_STRING_LEN {
            return Err(ReadError::StringTooLong(len));
        }
        Ok(len)
    }

    /// A length-prefixed string as bytes; memory grows with the bytes actually read.
    fn string(&mut self) -> Result<Vec<u8>, ReadError> {
        let len = self.string_len()?;
        let mut bytes = Vec::new();
        (&mut self.inner).take(len).read_to_end(&mut bytes)?;
        if bytes.len() as u64 != len {
            return Err(ReadError::Truncated);
        }
        Ok(bytes)
    }

    /// A string for display; invalid UTF-8 is replaced rather than refused.
    fn text(&mut self) -> Result<String, ReadError> {
        Ok(String::from_utf8_lossy(&self.string()?).into_owned())
    }

    /// An integer of any integer type, or `None` when it is negative.
    fn integer(&mut self, ty: u32) -> Result<Option<u64>, ReadError> {
        use value_type as t;
        Ok(match ty {
            t::U8 => Some(u64::from(self.bytes::<1>()?[0])),
            t::I8 => u64::try_from(i8::from_le_bytes(self.bytes()?)).ok(),
            t::U16 => Some(u64::from(u16::from_le_bytes(self.bytes()?))),
            t::I16 => u64::try_from(i16::from_le_bytes(self.bytes()?)).ok(),
            t::U32 => Some(u64::from(self.u32()?)),
            t::I32 => u64::try_from(i32::from_le_bytes(self.bytes()?)).ok(),
            t::U64 => Some(self.u64()?),
            t::I64 => u64::try_from(i64::from_le_bytes(self.bytes()?)).ok(),
            other => return Err(ReadError::UnknownValueType(other)),
        })
    }

    /// Skips a value of type `ty`, at array nesting `depth`.
    fn skip(&mut self, ty: u32, depth: u32) -> Result<(), ReadError> {
        if let Some(size) = fixed_size(ty) {
            return self.discard(size);
        }
        match ty {
            value_type::STRING => {
                let len = self.string_len()?;
                self.discard(len)
            }
            value_type::ARRAY => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(ReadError::TooDeep);
                }
                let element = self.u32()?;
                let count = self.count("array elements")?;
                match fixed_size(element) {
                    // Bounded: both factors are checked, so this cannot overflow.
                    Some(size) => self.discard(size * count),
                    None => (0..count).try_for_each(|_| self.skip(element, depth + 1)),
                }
            }
            other => Err(ReadError::UnknownValueType(other)),
        }
    }

    /// Reads and drops `len` bytes, failing if the stream ends first.
    fn discard(&mut self, len: u64) -> Result<(), ReadError> {
        let copied = io::copy(&mut (&mut self.inner).take(len), &mut io::sink())?;
        if copied != len {
            return Err(ReadError::Truncated);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::{Array, GgufWriter, TensorInfo, TensorType, Value};

    fn entry(key: &str, value: Value) -> (String, Value) {
        (key.to_owned(), value)
    }

    /// A file with every value type, some of them under the keys the reader keeps.
    fn sample() -> Vec<u8> {
        let metadata = [
            entry("general.architecture", Value::String("llama".into())),
            entry("general.name", Value::String("sample".into())),
            entry("general.file_type", Value::U32(1)),
            entry("other.context_length", Value::U32(99)),
            entry("llama.context_length", Value::U64(4096)),
            entry("split.count", Value::U16(2)),
            entry("tokenizer.chat_template", Value::String("{{ x }}".into())),
            entry("v.i8", Value::I8(-1)),
            entry("v.i16", Value::I16(-1)),
            entry("v.i32", Value::I32(-1)),
            entry("v.i64", Value::I64(-1)),
            entry("v.f32", Value::F32(0.5)),
            entry("v.f64", Value::F64(0.5)),
            entry("v.bool", Value::Bool(true)),
            entry("a.u8", Value::Array(Array::U8(vec![1, 2, 3]))),
            entry("a.i16", Value::Array(Array::I16(vec![-1]))),
            entry("a.u64", Value::Array(Array::U64(vec![1, 2]))),
            entry("a.f32", Value::Array(Array::F32(vec![0.5; 7]))),
            entry("a.bool", Value::Array(Array::Bool(vec![true, false]))),
            entry("a.str", Value::Array(Array::String(vec!["x".into(), "yz".into()]))),
        ];
        let tensors = vec![
            TensorInfo::new("a", &[8, 3], TensorType::F32),
            TensorInfo::new("b", &[5], TensorType::F16),
        ];
        let mut writer = GgufWriter::new(Vec::new(), &metadata, tensors).expect("layout");
        writer.write_values(&[0.0; 24]).expect("a");
        writer.write_values(&[0.0; 5]).expect("b");
        writer.finish().expect("finish").0
    }

    #[test]
    fn reads_the_facts_it_keeps_and_skips_the_rest() {
        let info = read_info_from(sample().as_slice()).expect("read");
        let expected = GgufInfo {
            version: 3,
            tensor_count: 2,
            architecture: Some("llama".into()),
            name: Some("sample".into()),
            context_length: Some(4096),
            file_type: Some(1),
            parameter_count: 29,
            has_chat_template: true,
            split_count: Some(2),
        };
        assert_eq!(info, expected);
    }

    #[test]
    fn a_file_without_optional_keys_reads_as_none() {
        let writer = GgufWriter::new(Vec::new(), &[], Vec::new()).expect("layout");
        let bytes = writer.finish().expect("finish").0;
        let info = read_info_from(bytes.as_slice()).expect("read");
        assert_eq!(info, GgufInfo { version: 3, ..GgufInfo::default() });
    }

    #[test]
    fn other_files_and_versions_are_refused() {
        let error = read_info_from(&b"PK\x03\x04 not a gguf"[..]).err();
        assert!(matches!(error, Some(ReadError::NotGguf(_))));

        let mut big_endian = sample();
        big_endian[4..8].copy_from_slice(&3u32.to_be_bytes());
        let error = read_info_from(big_endian.as_slice()).err();
        assert!(matches!(error, Some(ReadError::UnsupportedVersion(0x0300_0000))));
    }

    #[test]
    fn every_cut_of_the_file_is_reported_as_truncated() {
        let bytes = sample();
        let full = read_info_from(bytes.as_slice()).expect("read");
        for cut in 0..bytes.len() {
            match read_info_from(&bytes[..cut]) {
                // The first cut that reads is the end of the tensor infos.
                Ok(info) => return assert_eq!(info, full),
                Err(error) => {
                    assert!(matches!(error, ReadError::Truncated), "cut at {cut}: {error:?}")
                }
            }
        }
    }

    fn header(tensors: u64, entries: u64) -> Vec<u8> {
        let mut bytes = b"GGUF".to_vec();
        bytes.extend_from_slice(&3u32.to_le_bytes());
        bytes.extend_from_slice(&tensors.to_le_bytes());
        bytes.extend_from_slice(&entries.to_le_bytes());
        bytes
    }

    fn key(bytes: &mut Vec<u8>, key: &str, ty: u32) {
        bytes.extend_from_slice(&(key.len() as u64).to_le_bytes());
        bytes.extend_from_slice(key.as_bytes());
        bytes.extend_from_slice(&ty.to_le_bytes());
    }

    #[test]
    fn declared_sizes_are_not_trusted() {
        let error = read_info_from(header(MAX_COUNT + 1, 0).as_slice()).err();
        assert!(matches!(error, Some(ReadError::CountTooLarge { what: "tensors", .. })));
        let error = read_info_from(header(0, u64::MAX).as_slice()).err();
        assert!(matches!(error, Some(ReadError::CountTooLarge { .. })));

        let mut long_string = header(0, 1);
        key(&mut long_string, "general.name", value_type::STRING);
        long_string.extend_from_slice(&(MAX_STRING_LEN + 1).to_le_bytes());
        let error = read_info_from(long_string.as_slice()).err();
        assert!(matches!(error, Some(ReadError::StringTooLong(_))));

        let mut huge_array = header(0, 1);
        key(&mut huge_array, "tokenizer.ggml.tokens", value_type::ARRAY);
        huge_array.extend_from_slice(&value_type::STRING.to_le_bytes());
        huge_array.extend_from_slice(&u64::MAX.to_le_bytes());
        let error = read_info_from(huge_array.as_slice()).err();
        assert!(matches!(error, Some(ReadError::CountTooLarge { what: "array elements", .. })));

        let mut claims_more = header(0, 1);
        key(&mut claims_more, "x", value_type::ARRAY);
        claims_more.extend_from_slice(&value_type::U64.to_le_bytes());
        claims_more.extend_from_slice(&MAX_COUNT.to_le_bytes());
        let error = read_info_from(claims_more.as_slice()).err();
        assert!(matches!(error, Some(ReadError::Truncated)));
    }

    #[test]
    fn malformed_values_and_tensors_are_refused() {
        let mut unknown = header(0, 1);
        key(&mut unknown, "x", 13);
        let error = read_info_from(unknown.as_slice()).err();
        assert!(matches!(error, Some(ReadError::UnknownValueType(13))));

        let mut nested = header(0, 1);
        key(&mut nested, "x", value_type::ARRAY);
        for _ in 0..=MAX_ARRAY_DEPTH {
            nested.extend_from_slice(&value_type::ARRAY.to_le_bytes());
            nested.extend_from_slice(&1u64.to_le_bytes());
        }
        let error = read_info_from(nested.as_slice()).err();
        assert!(matches!(error, Some(ReadError::TooDeep)));

        let mut dims = header(1, 0);
        dims.extend_from_slice(&1u64.to_le_bytes());
        dims.push(b't');
        dims.extend_from_slice(&5u32.to_le_bytes());
        let error = read_info_from(dims.as_slice()).err();
        assert!(matches!(error, Some(ReadError::TooManyDims(5))));

        let mut overflow = header(1, 0);
        overflow.extend_from_slice(&1u64.to_le_bytes());
        overflow.push(b't');
        overflow.extend_from_slice(&2u32.to_le_bytes());
        overflow.extend_from_slice(&u64::MAX.to_le_bytes());
        overflow.extend_from_slice(&2u64.to_le_bytes());
        let error = read_info_from(overflow.as_slice()).err();
        assert!(matches!(error, Some(ReadError::CountOverflow)));
    }

    #[test]
    fn reads_the_real_gemma_model_when_present() {
        let Some(home) = std::env::home_dir() else { return };
        let path =
            home.join("models/huggingface/kitt-local/gemma-3-270m-GGUF/gemma-3-270m-Q4_K_M.gguf");
        if !path.exists() {
            println!("notice: {} is absent (scripts/setup.sh fetches it); skipped", path.display());
            return;
        }

        let info = read_info(&path).expect("the Gemma file reads");
        println!("{info:?}");
        assert_eq!(info.version, 3);
        assert_eq!(info.architecture.as_deref(), Some("gemma3"));
        assert_eq!(info.name.as_deref(), Some("Gemma 3 270m"));
        assert!(info.context_length.is_some_and(|length| length >= 8192));
        assert!((200_000_000..300_000_000).contains(&info.parameter_count));
        assert!(!info.has_chat_template);
        assert_eq!(info.split_count, None);
    }
}
