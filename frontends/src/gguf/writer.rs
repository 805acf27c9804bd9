//! A writer for GGUF version 3 files.
//!
//! [`GgufWriter`] collects metadata and tensors (already in their ggml block
//! form, or f32 values quantized on the way in with
//! [`super::quantize::quantize`]), checks each one as it is added, and
//! writes the file in one go. The layout is the one `parse.rs` reads and
//! the gguf Python package's `GGUFWriter` writes: header, metadata in
//! insertion order, tensor infos (dims innermost first), zero padding to
//! the alignment, then each tensor's data padded to the alignment (the last
//! one too). Nothing depends on time, environment or hashing order, so the
//! same additions give the same bytes.

use super::quantize::{self, QuantizeError};
use super::{GgmlType, MetaValue, DEFAULT_ALIGNMENT};
use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// The format version written.
pub const GGUF_VERSION: u32 = 3;

/// ggml's `GGML_MAX_DIMS`: tensors have one to four dimensions.
const MAX_DIMS: usize = 4;

/// ggml's `GGML_MAX_NAME`: llama.cpp refuses tensor names of this many
/// bytes or more.
const MAX_NAME: usize = 64;

/// The reader's nesting limit for arrays of arrays (`parse.rs`), so every
/// written file can be read back.
const MAX_ARRAY_DEPTH: u32 = 8;

/// Why a tensor or metadata value was refused, or the file could not be written.
#[derive(Debug, thiserror::Error)]
pub enum GgufWriteError {
    /// The key was added before.
    #[error("metadata key '{key}' is added twice")]
    DuplicateKey {
        /// The key.
        key: String,
    },
    /// The value cannot be stored (empty or mixed array, bad alignment, ...).
    #[error("metadata key '{key}': {problem}")]
    BadMeta {
        /// The key.
        key: String,
        /// What is wrong and what was expected.
        problem: String,
    },
    /// A tensor of that name was added before.
    #[error("tensor '{tensor}' is added twice")]
    DuplicateTensor {
        /// The name.
        tensor: String,
    },
    /// The tensor's name, dims or type cannot be stored.
    #[error("tensor '{tensor}': {problem}")]
    BadTensor {
        /// The name.
        tensor: String,
        /// What is wrong and what was expected.
        problem: String,
    },
    /// The innermost dimension is not a whole number of blocks.
    #[error("tensor '{tensor}': row length {row_len} is not a multiple of the {ty} block size {block_size}")]
    BlockMismatch {
        /// The name.
        tensor: String,
        /// The type.
        ty: GgmlType,
        /// The innermost (last IR) dimension.
        row_len: u64,
        /// Elements per block of the type.
        block_size: u64,
    },
    /// The data is not the size the dims and type need.
    #[error("tensor '{tensor}': {ty} data of dims {dims:?} is {expected} bytes, got {got}")]
    ByteLength {
        /// The name.
        tensor: String,
        /// The type.
        ty: GgmlType,
        /// The IR dims (outermost first).
        dims: Vec<usize>,
        /// Bytes needed.
        expected: u64,
        /// Bytes given.
        got: usize,
    },
    /// Quantizing the tensor's values failed.
    #[error("tensor '{tensor}': {source}")]
    Quantize {
        /// The name.
        tensor: String,
        /// Why.
        #[source]
        source: QuantizeError,
    },
    /// Writing or renaming the file failed.
    #[error("{}: cannot write GGUF file: {source}", .path.display())]
    Io {
        /// The destination.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// One tensor waiting to be written.
#[derive(Debug)]
struct Pending {
    name: String,
    /// Innermost first, as stored.
    ggml_dims: Vec<u64>,
    ty: GgmlType,
    bytes: Vec<u8>,
}

/// Builds a GGUF version 3 file: metadata key/values in insertion order,
/// then tensors in insertion order.
///
/// By convention `general.architecture` is added first. The data alignment
/// is 32 bytes unless a `general.alignment` value (a u32 power of two) is
/// added.
#[derive(Debug)]
pub struct GgufWriter {
    meta: Vec<(String, MetaValue)>,
    keys: HashSet<String>,
    tensors: Vec<Pending>,
    names: HashSet<String>,
    alignment: u64,
}

impl Default for GgufWriter {
    fn default() -> Self {
        GgufWriter::new()
    }
}

impl GgufWriter {
    /// An empty file: no metadata, no tensors, alignment 32.
    pub fn new() -> GgufWriter {
        GgufWriter {
            meta: Vec::new(),
            keys: HashSet::new(),
            tensors: Vec::new(),
            names: HashSet::new(),
            alignment: DEFAULT_ALIGNMENT,
        }
    }

    /// Adds a metadata key/value, written in the order added.
    ///
    /// Arrays must be non-empty (an empty array has no element type to
    /// store) and hold elements of one type; arrays of arrays are checked
    /// level by level. `general.alignment` must be a u32 power of two and
    /// sets the data alignment.
    pub fn add_meta(
        &mut self,
        key: impl Into<String>,
        value: MetaValue,
    ) -> Result<(), GgufWriteError> {
        let key = key.into();
        if self.keys.contains(&key) {
            return Err(GgufWriteError::DuplicateKey { key });
        }
        if let Err(problem) = check_value(&value, 0) {
            return Err(GgufWriteError::BadMeta { key, problem });
        }
        if key == "general.alignment" {
            match value {
                MetaValue::U32(a) if a.is_power_of_two() => self.alignment = u64::from(a),
                ref v => {
                    let found = match v {
                        MetaValue::U32(a) => a.to_string(),
                        v => format!("a {}", v.type_name()),
                    };
                    return Err(GgufWriteError::BadMeta {
                        key,
                        problem: format!("expected a u32 power of two, got {found}"),
                    });
                }
            }
        }
        self.keys.insert(key.clone());
        self.meta.push((key, value));
        Ok(())
    }

    /// Adds a tensor from its stored bytes (`ty` blocks, rows laid end to
    /// end). `ir_dims` are outermost first, as in the IR; the file stores
    /// them reversed (innermost first), so the last IR dim is the row
    /// length and must be a whole number of blocks.
    pub fn add_tensor(
        &mut self,
        name: impl Into<String>,
        ir_dims: &[usize],
        ty: GgmlType,
        bytes: Vec<u8>,
    ) -> Result<(), GgufWriteError> {
        let name = name.into();
        let (ggml_dims, _, n_bytes) = self.check_tensor(&name, ir_dims, ty)?;
        if bytes.len() as u64 != n_bytes {
            return Err(GgufWriteError::ByteLength {
                tensor: name,
                ty,
                dims: ir_dims.to_vec(),
                expected: n_bytes,
                got: bytes.len(),
            });
        }
        self.names.insert(name.clone());
        self.tensors.push(Pending {
            name,
            ggml_dims,
            ty,
            bytes,
        });
        Ok(())
    }

    /// Adds a tensor from f32 values (row-major, `ir_dims` outermost first),
    /// quantized to `ty` by [`quantize::quantize`] (bit-identical to
    /// `gguf.quants.quantize`).
    pub fn add_f32_tensor(
        &mut self,
        name: impl Into<String>,
        ir_dims: &[usize],
        ty: GgmlType,
        values: &[f32],
    ) -> Result<(), GgufWriteError> {
        let name = name.into();
        let (_, n_elements, _) = self.check_tensor(&name, ir_dims, ty)?;
        if values.len() as u64 != n_elements {
            return Err(GgufWriteError::BadTensor {
                tensor: name,
                problem: format!(
                    "dims {ir_dims:?} hold {n_elements} elements, got {} values",
                    values.len()
                ),
            });
        }
        let bytes = quantize::quantize(ty, values).map_err(|source| GgufWriteError::Quantize {
            tensor: name.clone(),
            source,
        })?;
        self.add_tensor(name, ir_dims, ty, bytes)
    }

    /// The data alignment in bytes.
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Number of metadata entries added.
    pub fn meta_count(&self) -> usize {
        self.meta.len()
    }

    /// Number of tensors added.
    pub fn tensor_count(&self) -> usize {
        self.tensors.len()
    }

    /// Checks a tensor's name, dims and type; returns its ggml dims,
    /// element count and byte size.
    fn check_tensor(
        &self,
        name: &str,
        ir_dims: &[usize],
        ty: GgmlType,
    ) -> Result<(Vec<u64>, u64, u64), GgufWriteError> {
        let bad = |problem: String| GgufWriteError::BadTensor {
            tensor: name.to_owned(),
            problem,
        };
        if self.names.contains(name) {
            return Err(GgufWriteError::DuplicateTensor {
                tensor: name.to_owned(),
            });
        }
        if name.len() >= MAX_NAME {
            return Err(bad(format!(
                "the name is {} bytes long; llama.cpp reads names of at most {} bytes",
                name.len(),
                MAX_NAME - 1
            )));
        }
        let (Some(block), Some(size)) = (ty.block_size(), ty.type_size()) else {
            return Err(bad(format!("{ty} is not a ggml type")));
        };
        if ir_dims.is_empty() || ir_dims.len() > MAX_DIMS {
            return Err(bad(format!(
                "{} dimensions {ir_dims:?}; GGUF stores 1 to {MAX_DIMS}",
                ir_dims.len()
            )));
        }
        let ggml_dims: Vec<u64> = ir_dims.iter().rev().map(|&d| d as u64).collect();
        let overflow = || {
            bad(format!(
                "dims {ir_dims:?} hold more elements than fit in memory"
            ))
        };
        let n_elements = ggml_dims
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
            .filter(|&n| usize::try_from(n).is_ok())
            .ok_or_else(overflow)?;
        let row_len = ggml_dims[0];
        if !row_len.is_multiple_of(block) {
            return Err(GgufWriteError::BlockMismatch {
                tensor: name.to_owned(),
                ty,
                row_len,
                block_size: block,
            });
        }
        // Whole rows are whole blocks, so the division is exact.
        let n_bytes = (n_elements / block)
            .checked_mul(size)
            .ok_or_else(overflow)?;
        Ok((ggml_dims, n_elements, n_bytes))
    }

    /// The header: magic, version, counts, metadata and tensor infos, up to
    /// (not including) the padding before the data section.
    fn header(&self) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(b"GGUF");
        b.extend_from_slice(&GGUF_VERSION.to_le_bytes());
        b.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        b.extend_from_slice(&(self.meta.len() as u64).to_le_bytes());
        for (key, value) in &self.meta {
            put_str(&mut b, key);
            b.extend_from_slice(&value_type(value).to_le_bytes());
            put_value(&mut b, value);
        }
        let mut offset = 0u64;
        for t in &self.tensors {
            put_str(&mut b, &t.name);
            b.extend_from_slice(&(t.ggml_dims.len() as u32).to_le_bytes());
            for d in &t.ggml_dims {
                b.extend_from_slice(&d.to_le_bytes());
            }
            b.extend_from_slice(&t.ty.id().to_le_bytes());
            b.extend_from_slice(&offset.to_le_bytes());
            offset += self.padded(t.bytes.len() as u64);
        }
        b
    }

    /// `n` rounded up to the alignment.
    fn padded(&self, n: u64) -> u64 {
        n.div_ceil(self.alignment) * self.alignment
    }

    /// Writes the whole file to `w`; returns the number of bytes written.
    pub fn write_to(&self, w: &mut impl Write) -> std::io::Result<u64> {
        let zeros = vec![0u8; self.alignment as usize];
        let mut pos = 0u64;
        let mut emit = |w: &mut dyn Write, bytes: &[u8]| -> std::io::Result<()> {
            w.write_all(bytes)?;
            pos += bytes.len() as u64;
            Ok(())
        };
        let header = self.header();
        emit(w, &header)?;
        let pad = (self.padded(header.len() as u64) - header.len() as u64) as usize;
        emit(w, &zeros[..pad])?;
        for t in &self.tensors {
            emit(w, &t.bytes)?;
            let n = t.bytes.len() as u64;
            emit(w, &zeros[..(self.padded(n) - n) as usize])?;
        }
        Ok(pos)
    }

    /// Writes the file to `path`; returns its size in bytes.
    ///
    /// The data goes to a temporary file beside `path` (`.NAME.kiln.tmp…`),
    /// is synced, and is renamed over `path` only when complete, so a reader
    /// never sees a partial file and a failure leaves `path` as it was.
    pub fn write(&self, path: &Path) -> Result<u64, GgufWriteError> {
        let io = |source| GgufWriteError::Io {
            path: path.to_path_buf(),
            source,
        };
        let Some(file_name) = path.file_name() else {
            return Err(io(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "the destination is not a file path",
            )));
        };
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let tmp_name = format!(
            ".{}.kiln.tmp{}.{}",
            file_name.to_string_lossy(),
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let tmp = path.with_file_name(tmp_name);
        let result = (|| {
            let file = std::fs::File::create(&tmp)?;
            let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
            let n = self.write_to(&mut w)?;
            let file = w.into_inner().map_err(|e| e.into_error())?;
            // Sync before the rename so a crash cannot leave a renamed but empty file.
            file.sync_all()?;
            std::fs::rename(&tmp, path)?;
            Ok(n)
        })();
        if result.is_err() {
            // Best effort: the original error is the one worth reporting.
            let _ = std::fs::remove_file(&tmp);
        }
        result.map_err(io)
    }
}

/// The GGUF value type id of `v` (`GGUF_TYPE_*`).
fn value_type(v: &MetaValue) -> u32 {
    match v {
        MetaValue::U8(_) => 0,
        MetaValue::I8(_) => 1,
        MetaValue::U16(_) => 2,
        MetaValue::I16(_) => 3,
        MetaValue::U32(_) => 4,
        MetaValue::I32(_) => 5,
        MetaValue::F32(_) => 6,
        MetaValue::Bool(_) => 7,
        MetaValue::String(_) => 8,
        MetaValue::Array(_) => 9,
        MetaValue::U64(_) => 10,
        MetaValue::I64(_) => 11,
        MetaValue::F64(_) => 12,
    }
}

/// Checks that arrays are storable: non-empty, one element type, not
/// nested deeper than the reader accepts.
fn check_value(v: &MetaValue, depth: u32) -> Result<(), String> {
    let MetaValue::Array(items) = v else {
        return Ok(());
    };
    if depth >= MAX_ARRAY_DEPTH {
        return Err(format!(
            "arrays nested more than {MAX_ARRAY_DEPTH} deep cannot be read back"
        ));
    }
    let Some(first) = items.first() else {
        return Err(
            "the array is empty, so it has no element type to store (leave the key out)".into(),
        );
    };
    let ty = value_type(first);
    for (i, item) in items.iter().enumerate() {
        if value_type(item) != ty {
            return Err(format!(
                "array element {i} is a {}, but element 0 is a {} (GGUF arrays hold one type)",
                item.type_name(),
                first.type_name()
            ));
        }
        check_value(item, depth + 1).map_err(|e| format!("array element {i}: {e}"))?;
    }
    Ok(())
}

/// A GGUF string: u64 byte length, then UTF-8 bytes.
fn put_str(b: &mut Vec<u8>, s: &str) {
    b.extend_from_slice(&(s.len() as u64).to_le_bytes());
    b.extend_from_slice(s.as_bytes());
}

/// A value's payload, without its type id (arrays carry their element
/// type and length; their elements carry no type ids).
fn put_value(b: &mut Vec<u8>, v: &MetaValue) {
    match v {
        MetaValue::U8(x) => b.push(*x),
        MetaValue::I8(x) => b.extend_from_slice(&x.to_le_bytes()),
        MetaValue::U16(x) => b.extend_from_slice(&x.to_le_bytes()),
        MetaValue::I16(x) => b.extend_from_slice(&x.to_le_bytes()),
        MetaValue::U32(x) => b.extend_from_slice(&x.to_le_bytes()),
        MetaValue::I32(x) => b.extend_from_slice(&x.to_le_bytes()),
        MetaValue::U64(x) => b.extend_from_slice(&x.to_le_bytes()),
        MetaValue::I64(x) => b.extend_from_slice(&x.to_le_bytes()),
        MetaValue::F32(x) => b.extend_from_slice(&x.to_le_bytes()),
        MetaValue::F64(x) => b.extend_from_slice(&x.to_le_bytes()),
        MetaValue::Bool(x) => b.push(u8::from(*x)),
        MetaValue::String(s) => put_str(b, s),
        MetaValue::Array(items) => {
            // `check_value` guarantees a first element.
            let ty = items.first().map_or(0, value_type);
            b.extend_from_slice(&ty.to_le_bytes());
            b.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for item in items {
                put_value(b, item);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_what_cannot_be_stored() {
        let mut w = GgufWriter::new();
        w.add_meta("a", MetaValue::U8(1)).unwrap();
        let e = w.add_meta("a", MetaValue::U8(2)).unwrap_err();
        assert_eq!(e.to_string(), "metadata key 'a' is added twice");
        let e = w.add_meta("b", MetaValue::Array(vec![])).unwrap_err();
        assert!(e.to_string().contains("array is empty"), "{e}");
        let mixed = MetaValue::Array(vec![MetaValue::U8(1), MetaValue::I8(1)]);
        let e = w.add_meta("c", mixed).unwrap_err();
        assert_eq!(
            e.to_string(),
            "metadata key 'c': array element 1 is a i8, but element 0 is a u8 (GGUF arrays hold one type)"
        );
        let e = w
            .add_meta("general.alignment", MetaValue::U32(48))
            .unwrap_err();
        assert!(e.to_string().contains("got 48"), "{e}");
        let e = w
            .add_meta("general.alignment", MetaValue::U64(64))
            .unwrap_err();
        assert!(e.to_string().contains("got a u64"), "{e}");
        let mut deep = MetaValue::Array(vec![MetaValue::U8(1)]);
        for _ in 0..MAX_ARRAY_DEPTH {
            deep = MetaValue::Array(vec![deep]);
        }
        let e = w.add_meta("d", deep).unwrap_err();
        assert!(e.to_string().contains("nested more than 8 deep"), "{e}");
        let inner_empty = MetaValue::Array(vec![MetaValue::Array(vec![])]);
        let e = w.add_meta("e", inner_empty).unwrap_err();
        assert!(
            e.to_string()
                .contains("array element 0: the array is empty"),
            "{e}"
        );
        w.add_meta("general.alignment", MetaValue::U32(64)).unwrap();
        assert_eq!(w.alignment(), 64);

        w.add_tensor("t", &[2, 32], GgmlType::Q8_0, vec![0; 68])
            .unwrap();
        let e = w
            .add_tensor("t", &[2, 32], GgmlType::Q8_0, vec![0; 68])
            .unwrap_err();
        assert_eq!(e.to_string(), "tensor 't' is added twice");
        let e = w
            .add_tensor("u", &[32, 2], GgmlType::Q8_0, vec![0; 68])
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "tensor 'u': row length 2 is not a multiple of the Q8_0 block size 32"
        );
        let e = w
            .add_tensor("u", &[2, 32], GgmlType::Q8_0, vec![0; 67])
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "tensor 'u': Q8_0 data of dims [2, 32] is 68 bytes, got 67"
        );
        let e = w.add_tensor("u", &[], GgmlType::F32, vec![]).unwrap_err();
        assert!(e.to_string().contains("0 dimensions"), "{e}");
        let e = w
            .add_tensor("u", &[1; 5], GgmlType::F32, vec![0; 4])
            .unwrap_err();
        assert!(e.to_string().contains("5 dimensions"), "{e}");
        let e = w
            .add_tensor("x".repeat(64), &[1], GgmlType::F32, vec![0; 4])
            .unwrap_err();
        assert!(e.to_string().contains("at most 63 bytes"), "{e}");
        let e = w
            .add_tensor("u", &[1], GgmlType::Unknown(99), vec![])
            .unwrap_err();
        assert!(e.to_string().contains("not a ggml type"), "{e}");
        let e = w
            .add_f32_tensor("u", &[2, 32], GgmlType::Q4_0, &[0.0; 63])
            .unwrap_err();
        assert!(
            e.to_string().contains("hold 64 elements, got 63 values"),
            "{e}"
        );
        let mut v = vec![0.0f32; 64];
        v[3] = f32::NAN;
        let e = w
            .add_f32_tensor("u", &[2, 32], GgmlType::Q4_0, &v)
            .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("tensor 'u': cannot quantize to Q4_0: value 3 is NaN"),
            "{e}"
        );
        assert_eq!((w.meta_count(), w.tensor_count()), (2, 1));
    }

    #[test]
    fn layout_matches_the_format() {
        let mut w = GgufWriter::new();
        w.add_meta("k", MetaValue::Array(vec![MetaValue::I16(-2)]))
            .unwrap();
        w.add_tensor("a", &[3], GgmlType::F32, vec![1; 12]).unwrap();
        w.add_tensor("b", &[1], GgmlType::F16, vec![2; 2]).unwrap();
        let mut out = Vec::new();
        let n = w.write_to(&mut out).unwrap();
        assert_eq!(n, out.len() as u64);
        let mut want = Vec::new();
        want.extend_from_slice(b"GGUF");
        want.extend_from_slice(&3u32.to_le_bytes());
        want.extend_from_slice(&2u64.to_le_bytes());
        want.extend_from_slice(&1u64.to_le_bytes());
        // key "k": array of i16 (type 3), one element
        want.extend_from_slice(&1u64.to_le_bytes());
        want.push(b'k');
        want.extend_from_slice(&9u32.to_le_bytes());
        want.extend_from_slice(&3u32.to_le_bytes());
        want.extend_from_slice(&1u64.to_le_bytes());
        want.extend_from_slice(&(-2i16).to_le_bytes());
        // tensor infos: name, n_dims, dims, type, offset (padded to 32)
        for (name, dim, ty, offset) in [(b'a', 3u64, 0u32, 0u64), (b'b', 1, 1, 32)] {
            want.extend_from_slice(&1u64.to_le_bytes());
            want.push(name);
            want.extend_from_slice(&1u32.to_le_bytes());
            want.extend_from_slice(&dim.to_le_bytes());
            want.extend_from_slice(&ty.to_le_bytes());
            want.extend_from_slice(&offset.to_le_bytes());
        }
        want.resize(want.len().div_ceil(32) * 32, 0);
        want.extend_from_slice(&[1; 12]);
        want.resize(want.len() + 20, 0);
        want.extend_from_slice(&[2; 2]);
        want.resize(want.len() + 30, 0);
        assert_eq!(out, want);
    }
}
