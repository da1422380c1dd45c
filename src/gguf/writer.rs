//! Writing GGUF v3 files as a stream.
//!
//! [`GgufWriter::new`] writes the header, the typed metadata and the tensor infos
//! (with offsets computed from the declared shapes), then tensor data is appended
//! in declaration order through [`GgufWriter::write_values`], a slice at a time,
//! so a file of hundreds of megabytes needs only a row's worth of memory. The
//! writer stores F32 and F16 data (F16 through its own rounding conversion); it
//! does not quantize and it does not know what any model architecture expects.

use std::collections::HashSet;
use std::io::{self, Write};

use super::{ALIGNMENT_KEY, DEFAULT_ALIGNMENT, MAGIC, VERSION, value_type};

/// The most dimensions ggml gives a tensor.
const MAX_DIMS: usize = 4;

/// A metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// An unsigned 8-bit integer.
    U8(u8),
    /// A signed 8-bit integer.
    I8(i8),
    /// An unsigned 16-bit integer.
    U16(u16),
    /// A signed 16-bit integer.
    I16(i16),
    /// An unsigned 32-bit integer.
    U32(u32),
    /// A signed 32-bit integer.
    I32(i32),
    /// An unsigned 64-bit integer.
    U64(u64),
    /// A signed 64-bit integer.
    I64(i64),
    /// A 32-bit float.
    F32(f32),
    /// A 64-bit float.
    F64(f64),
    /// A boolean, stored as one byte.
    Bool(bool),
    /// A UTF-8 string.
    String(String),
    /// An array whose elements all have one type.
    Array(Array),
}

/// A metadata array whose elements all have one type.
#[derive(Debug, Clone, PartialEq)]
pub enum Array {
    /// Unsigned 8-bit integers.
    U8(Vec<u8>),
    /// Signed 8-bit integers.
    I8(Vec<i8>),
    /// Unsigned 16-bit integers.
    U16(Vec<u16>),
    /// Signed 16-bit integers.
    I16(Vec<i16>),
    /// Unsigned 32-bit integers.
    U32(Vec<u32>),
    /// Signed 32-bit integers.
    I32(Vec<i32>),
    /// Unsigned 64-bit integers.
    U64(Vec<u64>),
    /// Signed 64-bit integers.
    I64(Vec<i64>),
    /// 32-bit floats.
    F32(Vec<f32>),
    /// 64-bit floats.
    F64(Vec<f64>),
    /// Booleans.
    Bool(Vec<bool>),
    /// Strings.
    String(Vec<String>),
}

/// The ggml tensor types this writer can store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TensorType {
    /// 32-bit floats (ggml type 0).
    #[default]
    F32,
    /// IEEE half-precision floats (ggml type 1).
    F16,
}

impl TensorType {
    /// The ggml type code written in the tensor info.
    pub fn ggml_code(self) -> u32 {
        match self {
            TensorType::F32 => 0,
            TensorType::F16 => 1,
        }
    }

    /// Bytes per element.
    pub fn element_size(self) -> u64 {
        match self {
            TensorType::F32 => 4,
            TensorType::F16 => 2,
        }
    }

    /// The lowercase name used on the command line and in model names.
    pub fn name(self) -> &'static str {
        match self {
            TensorType::F32 => "f32",
            TensorType::F16 => "f16",
        }
    }
}

/// One tensor's name, shape (first dimension varies fastest) and storage type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    /// The tensor name, e.g. `blk.0.attn_q.weight`.
    pub name: String,
    /// The dimensions, innermost first, as ggml orders them.
    pub dims: Vec<u64>,
    /// How the elements are stored.
    pub ty: TensorType,
}

impl TensorInfo {
    /// A tensor info from its parts.
    pub fn new(name: impl Into<String>, dims: &[u64], ty: TensorType) -> Self {
        TensorInfo { name: name.into(), dims: dims.to_vec(), ty }
    }

    /// The number of elements (the product of the dimensions).
    pub fn element_count(&self) -> u64 {
        self.dims.iter().product()
    }

    /// The bytes of data the tensor occupies, before padding.
    pub fn byte_len(&self) -> u64 {
        self.element_count() * self.ty.element_size()
    }
}

/// Why a GGUF file could not be written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The underlying writer failed.
    #[error("cannot write the GGUF file")]
    Io(#[from] io::Error),
    /// A metadata key was given twice.
    #[error("metadata key `{0}` is given twice")]
    DuplicateKey(String),
    /// A tensor name was given twice.
    #[error("tensor `{0}` is declared twice")]
    DuplicateTensor(String),
    /// `general.alignment` is not a power of two stored as a u32.
    #[error("`general.alignment` must be a u32 power of two, got {0}")]
    BadAlignment(String),
    /// A tensor has no dimensions, too many, or a zero-sized one.
    #[error("tensor `{name}` has shape {dims:?}; expected 1 to 4 non-zero dimensions")]
    BadShape {
        /// The tensor.
        name: String,
        /// The shape given.
        dims: Vec<u64>,
    },
    /// More values were given than the current tensor holds.
    #[error("tensor `{name}` holds {expected} values; {given} were given")]
    TooManyValues {
        /// The tensor.
        name: String,
        /// Its element count.
        expected: u64,
        /// How many values it would have received.
        given: u64,
    },
    /// Values were given after the last tensor was complete.
    #[error("every declared tensor is complete; {0} more values were given")]
    NoTensorLeft(usize),
    /// The writer was finished before every tensor was complete.
    #[error("tensor `{name}` is incomplete: {written} of {expected} values written")]
    Incomplete {
        /// The first incomplete tensor.
        name: String,
        /// Values written into it.
        written: u64,
        /// Its element count.
        expected: u64,
    },
}

impl From<WriteError> for io::Error {
    fn from(error: WriteError) -> Self {
        match error {
            WriteError::Io(source) => source,
            other => io::Error::new(io::ErrorKind::InvalidInput, other),
        }
    }
}

/// A GGUF file being written: the header is out, tensor data follows in order.
pub struct GgufWriter<W: Write> {
    out: Counting<W>,
    tensors: Vec<TensorInfo>,
    alignment: u64,
    current: usize,
    written: u64,
    scratch: Vec<u8>,
}

impl<W: Write> GgufWriter<W> {
    /// Validates the layout, then writes header, metadata and tensor infos.
    pub fn new(
        out: W,
        metadata: &[(String, Value)],
        tensors: Vec<TensorInfo>,
    ) -> Result<Self, WriteError> {
        let alignment = check_layout(metadata, &tensors)?;
        let mut out = Counting { inner: out, count: 0 };

        out.write_all(&MAGIC)?;
        out.write_all(&VERSION.to_le_bytes())?;
        out.write_all(&(tensors.len() as u64).to_le_bytes())?;
        out.write_all(&(metadata.len() as u64).to_le_bytes())?;
        for (key, value) in metadata {
            write_string(&mut out, key)?;
            out.write_all(&value.type_code().to_le_bytes())?;
            write_value(&mut out, value)?;
        }

        let mut offset = 0u64;
        for tensor in &tensors {
            write_string(&mut out, &tensor.name)?;
            out.write_all(&(tensor.dims.len() as u32).to_le_bytes())?;
            for dim in &tensor.dims {
                out.write_all(&dim.to_le_bytes())?;
            }
            out.write_all(&tensor.ty.ggml_code().to_le_bytes())?;
            out.write_all(&offset.to_le_bytes())?;
            offset += padded(tensor.byte_len(), alignment);
        }
        pad(&mut out, alignment)?;

        Ok(GgufWriter { out, tensors, alignment, current: 0, written: 0, scratch: Vec::new() })
    }

    /// The tensor the next values belong to, or `None` once all are complete.
    pub fn current_tensor(&self) -> Option<&TensorInfo> {
        self.tensors.get(self.current)
    }

    /// Appends values to the current tensor in storage order, converting to its type.
    ///
    /// A slice may not run past the end of the current tensor; once a tensor is
    /// complete, the padding is written and the next tensor becomes current.
    pub fn write_values(&mut self, values: &[f32]) -> Result<(), WriteError> {
        let Some(tensor) = self.tensors.get(self.current) else {
            return Err(WriteError::NoTensorLeft(values.len()));
        };
        let expected = tensor.element_count();
        let given = self.written + values.len() as u64;
        if given > expected {
            let name = tensor.name.clone();
            return Err(WriteError::TooManyValues { name, expected, given });
        }

        self.scratch.clear();
        for value in values {
            match tensor.ty {
                TensorType::F32 => self.scratch.extend_from_slice(&value.to_le_bytes()),
                TensorType::F16 => {
                    self.scratch.extend_from_slice(&f32_to_f16(*value).to_le_bytes())
                }
            }
        }
        self.out.write_all(&self.scratch)?;

        self.written = given;
        if given == expected {
            pad(&mut self.out, self.alignment)?;
            self.current += 1;
            self.written = 0;
        }
        Ok(())
    }

    /// Checks that every tensor is complete, flushes, and returns the writer and byte count.
    pub fn finish(mut self) -> Result<(W, u64), WriteError> {
        if let Some(tensor) = self.tensors.get(self.current) {
            return Err(WriteError::Incomplete {
                name: tensor.name.clone(),
                written: self.written,
                expected: tensor.element_count(),
            });
        }
        self.out.flush()?;
        Ok((self.out.inner, self.out.count))
    }
}

impl Value {
    /// The format's type code for this value.
    fn type_code(&self) -> u32 {
        match self {
            Value::U8(_) => value_type::U8,
            Value::I8(_) => value_type::I8,
            Value::U16(_) => value_type::U16,
            Value::I16(_) => value_type::I16,
            Value::U32(_) => value_type::U32,
            Value::I32(_) => value_type::I32,
            Value::U64(_) => value_type::U64,
            Value::I64(_) => value_type::I64,
            Value::F32(_) => value_type::F32,
            Value::F64(_) => value_type::F64,
            Value::Bool(_) => value_type::BOOL,
            Value::String(_) => value_type::STRING,
            Value::Array(_) => value_type::ARRAY,
        }
    }
}

/// Checks keys, names, shapes and alignment; returns the alignment to use.
fn check_layout(metadata: &[(String, Value)], tensors: &[TensorInfo]) -> Result<u64, WriteError> {
    let mut keys = HashSet::new();
    for (key, _) in metadata {
        if !keys.insert(key.as_str()) {
            return Err(WriteError::DuplicateKey(key.clone()));
        }
    }

    let mut names = HashSet::new();
    for tensor in tensors {
        if !names.insert(tensor.name.as_str()) {
            return Err(WriteError::DuplicateTensor(tensor.name.clone()));
        }
        let rank_ok = (1..=MAX_DIMS).contains(&tensor.dims.len());
        if !rank_ok || tensor.dims.contains(&0) {
            let (name, dims) = (tensor.name.clone(), tensor.dims.clone());
            return Err(WriteError::BadShape { name, dims });
        }
    }

    match metadata.iter().find(|(key, _)| key == ALIGNMENT_KEY) {
        None => Ok(u64::from(DEFAULT_ALIGNMENT)),
        Some((_, Value::U32(a))) if a.is_power_of_two() => Ok(u64::from(*a)),
        Some((_, other)) => Err(WriteError::BadAlignment(format!("{other:?}"))),
    }
}

/// `len` rounded up to a multiple of `alignment`.
fn padded(len: u64, alignment: u64) -> u64 {
    len.div_ceil(alignment) * alignment
}

/// Writes zero bytes up to the next multiple of `alignment`.
fn pad<W: Write>(out: &mut Counting<W>, alignment: u64) -> io::Result<()> {
    let fill = padded(out.count, alignment) - out.count;
    out.write_all(&vec![0u8; fill as usize])
}

fn write_string(out: &mut impl Write, text: &str) -> io::Result<()> {
    out.write_all(&(text.len() as u64).to_le_bytes())?;
    out.write_all(text.as_bytes())
}

fn write_value(out: &mut impl Write, value: &Value) -> io::Result<()> {
    match value {
        Value::U8(v) => out.write_all(&v.to_le_bytes()),
        Value::I8(v) => out.write_all(&v.to_le_bytes()),
        Value::U16(v) => out.write_all(&v.to_le_bytes()),
        Value::I16(v) => out.write_all(&v.to_le_bytes()),
        Value::U32(v) => out.write_all(&v.to_le_bytes()),
        Value::I32(v) => out.write_all(&v.to_le_bytes()),
        Value::U64(v) => out.write_all(&v.to_le_bytes()),
        Value::I64(v) => out.write_all(&v.to_le_bytes()),
        Value::F32(v) => out.write_all(&v.to_le_bytes()),
        Value::F64(v) => out.write_all(&v.to_le_bytes()),
        Value::Bool(v) => out.write_all(&[u8::from(*v)]),
        Value::String(v) => write_string(out, v),
        Value::Array(array) => write_array(out, array),
    }
}

/// Writes an array's element type, length and elements.
fn write_array(out: &mut impl Write, array: &Array) -> io::Result<()> {
    fn each<T, W: Write>(
        out: &mut W,
        code: u32,
        items: &[T],
        mut one: impl FnMut(&mut W, &T) -> io::Result<()>,
    ) -> io::Result<()> {
        out.write_all(&code.to_le_bytes())?;
        out.write_all(&(items.len() as u64).to_le_bytes())?;
        items.iter().try_for_each(|item| one(out, item))
    }

    use value_type as t;
    match array {
        Array::U8(v) => each(out, t::U8, v, |o, x| o.write_all(&x.to_le_bytes())),
        Array::I8(v) => each(out, t::I8, v, |o, x| o.write_all(&x.to_le_bytes())),
        Array::U16(v) => each(out, t::U16, v, |o, x| o.write_all(&x.to_le_bytes())),
        Array::I16(v) => each(out, t::I16, v, |o, x| o.write_all(&x.to_le_bytes())),
        Array::U32(v) => each(out, t::U32, v, |o, x| o.write_all(&x.to_le_bytes())),
        Array::I32(v) => each(out, t::I32, v, |o, x| o.write_all(&x.to_le_bytes())),
        Array::U64(v) => each(out, t::U64, v, |o, x| o.write_all(&x.to_le_bytes())),
        Array::I64(v) => each(out, t::I64, v, |o, x| o.write_all(&x.to_le_bytes())),
        Array::F32(v) => each(out, t::F32, v, |o, x| o.write_all(&x.to_le_bytes())),
        Array::F64(v) => each(out, t::F64, v, |o, x| o.write_all(&x.to_le_bytes())),
        Array::Bool(v) => each(out, t::BOOL, v, |o, x| o.write_all(&[u8::from(*x)])),
        Array::String(v) => each(out, t::STRING, v, |o, x| write_string(o, x)),
    }
}

/// Converts to IEEE half precision, rounding to nearest with ties to even.
///
/// Values too large for half precision become infinities, values too small
/// become (signed) zero or subnormals, and NaN stays NaN.
pub fn f32_to_f16(value: f32) -> u16 {
    let bits = value.to_bits();
    let sign = ((bits >> 16) & 0x8000) as u16;
    let exponent = ((bits >> 23) & 0xff) as i32;
    let mantissa = bits & 0x7f_ffff;

    if exponent == 0xff {
        // Keep NaN a NaN even when its payload lives only in the dropped low bits.
        let nan = if mantissa == 0 { 0 } else { 0x200 | (mantissa >> 13) as u16 };
        return sign | 0x7c00 | nan;
    }

    let half_exponent = exponent - 127 + 15;
    if half_exponent >= 0x1f {
        return sign | 0x7c00;
    }
    if half_exponent <= 0 {
        if half_exponent < -10 {
            return sign;
        }
        let full = mantissa | 0x80_0000;
        let shift = (14 - half_exponent) as u32;
        return sign | round_shift(full, shift) as u16;
    }

    // A carry out of the mantissa correctly bumps the exponent (up to infinity).
    let combined = ((half_exponent as u32) << 23) | mantissa;
    sign | round_shift(combined, 13) as u16
}

/// `value >> shift`, rounded to nearest with ties to even.
fn round_shift(value: u32, shift: u32) -> u32 {
    let kept = value >> shift;
    let rest = value & ((1 << shift) - 1);
    let half = 1 << (shift - 1);
    if rest > half || (rest == half && kept & 1 == 1) { kept + 1 } else { kept }
}

/// Counts the bytes that pass through, so padding and the total are known.
struct Counting<W> {
    inner: W,
    count: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let written = self.inner.write(buf)?;
        self.count += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes half precision exactly (every f16 is representable as f32).
    fn f16_to_f32(half: u16) -> f32 {
        let sign = if half & 0x8000 != 0 { -1.0 } else { 1.0 };
        let exponent = i32::from((half >> 10) & 0x1f);
        let mantissa = f32::from(half & 0x3ff);
        match exponent {
            0 => sign * mantissa * 2f32.powi(-24),
            0x1f if mantissa == 0.0 => sign * f32::INFINITY,
            0x1f => f32::NAN,
            _ => sign * (1.0 + mantissa / 1024.0) * 2f32.powi(exponent - 15),
        }
    }

    #[test]
    fn f16_conversion_matches_known_values_and_rounds_ties_to_even() {
        let cases: [(f32, u16); 12] = [
            (0.0, 0x0000),
            (-0.0, 0x8000),
            (1.0, 0x3c00),
            (-2.0, 0xc000),
            (0.333_333_34, 0x3555),
            (65504.0, 0x7bff),
            (65520.0, 0x7c00),
            (1e9, 0x7c00),
            (6.103_515_6e-5, 0x0400),
            (5.960_464_5e-8, 0x0001),
            (2.0e-8, 0x0000),
            (f32::NEG_INFINITY, 0xfc00),
        ];
        for (value, expected) in cases {
            assert_eq!(f32_to_f16(value), expected, "{value}");
        }
        assert_eq!(f32_to_f16(f32::NAN) & 0x7c00, 0x7c00);
        assert_ne!(f32_to_f16(f32::NAN) & 0x3ff, 0);

        // 1 + 2^-11 lies halfway between 1.0 and the next half; the even one is 1.0.
        assert_eq!(f32_to_f16(1.0 + 2f32.powi(-11)), 0x3c00);
        assert_eq!(f32_to_f16(1.0 + 3.0 * 2f32.powi(-11)), 0x3c02);
        assert_eq!(f32_to_f16(1.0 + 2f32.powi(-11) + 2f32.powi(-20)), 0x3c01);
    }

    #[test]
    fn every_finite_f16_survives_a_round_trip() {
        for half in 0..=u16::MAX {
            if half & 0x7c00 == 0x7c00 && half & 0x3ff != 0 {
                continue;
            }
            assert_eq!(f32_to_f16(f16_to_f32(half)), half, "{half:#06x}");
        }
    }

    fn write(metadata: &[(String, Value)], tensors: Vec<TensorInfo>) -> Vec<u8> {
        let mut writer = GgufWriter::new(Vec::new(), metadata, tensors).expect("layout");
        while let Some(tensor) = writer.current_tensor() {
            let values: Vec<f32> = (0..tensor.element_count()).map(|i| i as f32).collect();
            writer.write_values(&values).expect("values");
        }
        let (bytes, count) = writer.finish().expect("finish");
        assert_eq!(count, bytes.len() as u64);
        bytes
    }

    #[test]
    fn header_counts_and_aligned_data_are_written() {
        let metadata = [("general.name".to_owned(), Value::String("x".into()))];
        let tensors = vec![
            TensorInfo::new("a", &[3], TensorType::F32),
            TensorInfo::new("b", &[2, 2], TensorType::F16),
        ];
        let bytes = write(&metadata, tensors);

        let counts = [&b"GGUF"[..], &3u32.to_le_bytes(), &2u64.to_le_bytes(), &1u64.to_le_bytes()];
        assert_eq!(bytes[..24], counts.concat());
        assert_eq!(bytes.len() % 32, 0);

        // Tensor `b` starts 32 bytes after `a` (12 bytes padded), and holds halves.
        let b_start = bytes.len() - 32;
        assert_eq!(bytes[b_start..b_start + 4], [0x00, 0x00, 0x00, 0x3c]);
        let a_start = b_start - 32;
        assert_eq!(bytes[a_start + 4..a_start + 8], 1f32.to_le_bytes());
    }

    #[test]
    fn alignment_comes_from_the_metadata() {
        let metadata = [(ALIGNMENT_KEY.to_owned(), Value::U32(256))];
        let bytes = write(&metadata, vec![TensorInfo::new("a", &[1], TensorType::F32)]);
        assert_eq!(bytes.len(), 512);

        let bad = [(ALIGNMENT_KEY.to_owned(), Value::U32(48))];
        let error = GgufWriter::new(Vec::new(), &bad, Vec::new()).err();
        assert!(matches!(error, Some(WriteError::BadAlignment(_))));
    }

    #[test]
    fn inconsistent_layouts_are_rejected() {
        let twice = [("k".to_owned(), Value::Bool(true)), ("k".to_owned(), Value::U8(1))];
        let error = GgufWriter::new(Vec::new(), &twice, Vec::new()).err();
        assert!(matches!(error, Some(WriteError::DuplicateKey(key)) if key == "k"));

        let same = vec![
            TensorInfo::new("t", &[1], TensorType::F32),
            TensorInfo::new("t", &[1], TensorType::F32),
        ];
        let error = GgufWriter::new(Vec::new(), &[], same).err();
        assert!(matches!(error, Some(WriteError::DuplicateTensor(_))));

        for dims in [&[4, 0][..], &[], &[1; 5]] {
            let bad = vec![TensorInfo::new("t", dims, TensorType::F32)];
            let error = GgufWriter::new(Vec::new(), &[], bad).err();
            assert!(matches!(error, Some(WriteError::BadShape { .. })), "{dims:?}");
        }
    }

    #[test]
    fn data_must_match_the_declared_shapes() {
        let tensors = vec![TensorInfo::new("t", &[4], TensorType::F32)];
        let mut writer = GgufWriter::new(Vec::new(), &[], tensors.clone()).expect("layout");
        let error = writer.write_values(&[0.0; 5]).err();
        assert!(matches!(error, Some(WriteError::TooManyValues { given: 5, .. })));

        writer.write_values(&[0.0; 3]).expect("three values fit");
        let error = writer.finish().err();
        assert!(matches!(error, Some(WriteError::Incomplete { written: 3, expected: 4, .. })));

        let mut writer = GgufWriter::new(Vec::new(), &[], tensors).expect("layout");
        writer.write_values(&[0.0; 4]).expect("exact fit");
        assert!(matches!(writer.write_values(&[1.0]), Err(WriteError::NoTensorLeft(1))));
    }
}
