//! A reader for GGUF files (llama.cpp's model format), versions 2 and 3,
//! a writer for version 3 ([`GgufWriter`], with quantizers in
//! [`quantize`]), and the export of LLaMA-family models ([`export`]).
//!
//! [`GgufFile::open`] maps the file, parses and validates the header (every
//! tensor's type, block geometry, alignment and bounds are checked up
//! front, so later accessors cannot fail on a bad file), and keeps the
//! tensor data mapped. [`GgufFile::dequantize`] converts one tensor to an
//! f32 [`kiln_ir::Tensor`], bit-identical to the gguf Python package's
//! `gguf.quants.dequantize`.
//!
//! Dimension order: GGUF lists dimensions innermost first (`ne[0]` is the
//! row length), the IR outermost first, so [`TensorInfo::ir_dims`] is
//! [`TensorInfo::ggml_dims`] reversed; the element order in memory is the
//! same. A `[576, 49152]` embedding in GGUF is `[49152, 576]` in the IR.

mod dequant;
mod error;
pub mod export;
mod meta;
mod parse;
pub mod quantize;
mod types;
pub mod writer;

pub use dequant::dequantize_into;
pub use error::GgufError;
pub use export::{export_gguf, GgufExportError, GgufExportOptions, GgufExportReport, GgufType};
pub use meta::MetaValue;
pub use quantize::QuantizeError;
pub use types::{GgmlType, QK_K};
pub use writer::{GgufWriteError, GgufWriter};

use kiln_ir::Tensor;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// Data alignment when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;

/// One tensor's entry in the header, validated against the file.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    /// The tensor's name (`blk.0.attn_q.weight`).
    pub name: String,
    /// Dimensions innermost first, as stored (`ne[0]` is the row length).
    pub ggml_dims: Vec<u64>,
    /// Element type.
    pub ggml_type: GgmlType,
    /// Offset of the data from the start of the data section.
    pub offset: u64,
    n_elements: u64,
    n_bytes: u64,
}

impl TensorInfo {
    /// Dimensions outermost first (the IR's row-major order): `ggml_dims` reversed.
    pub fn ir_dims(&self) -> Vec<usize> {
        // `open` checked that the element count fits usize, so every dim does.
        self.ggml_dims.iter().rev().map(|&d| d as usize).collect()
    }

    /// Number of elements.
    pub fn n_elements(&self) -> u64 {
        self.n_elements
    }

    /// Size of the stored data in bytes.
    pub fn n_bytes(&self) -> u64 {
        self.n_bytes
    }
}

/// An open, memory-mapped GGUF file.
pub struct GgufFile {
    path: PathBuf,
    map: memmap2::Mmap,
    version: u32,
    metadata: BTreeMap<String, MetaValue>,
    tensors: Vec<TensorInfo>,
    by_name: HashMap<String, usize>,
    alignment: u64,
    data_offset: u64,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("metadata_keys", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .field("alignment", &self.alignment)
            .finish()
    }
}

impl GgufFile {
    /// Opens and validates `path`.
    pub fn open(path: &Path) -> Result<GgufFile, GgufError> {
        let io = |source| GgufError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = std::fs::File::open(path).map_err(io)?;
        // SAFETY: read-only mapping; the file must not be truncated while it
        // is open (the usual contract of mmap-based loaders).
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
        let header = parse::parse_header(&map, path)?;
        let alignment = alignment(&header.metadata, path)?;
        let file_len = map.len() as u64;
        let data_offset = header.end.div_ceil(alignment).saturating_mul(alignment);

        let mut tensors = Vec::with_capacity(header.tensors.len());
        let mut by_name = HashMap::with_capacity(header.tensors.len());
        for raw in header.tensors {
            let info = validate_tensor(raw, path, alignment, data_offset, file_len)?;
            if by_name.insert(info.name.clone(), tensors.len()).is_some() {
                return Err(GgufError::Malformed {
                    path: path.to_path_buf(),
                    what: format!("tensor '{}'", info.name),
                    problem: "the name appears twice".into(),
                });
            }
            tensors.push(info);
        }
        Ok(GgufFile {
            path: path.to_path_buf(),
            map,
            version: header.version,
            metadata: header.metadata,
            tensors,
            by_name,
            alignment,
            data_offset,
        })
    }

    /// The file's path, as given to [`GgufFile::open`].
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The format version (2 or 3).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// All metadata, by key.
    pub fn metadata(&self) -> &BTreeMap<String, MetaValue> {
        &self.metadata
    }

    /// One metadata value.
    pub fn get(&self, key: &str) -> Option<&MetaValue> {
        self.metadata.get(key)
    }

    /// A metadata value that must be present.
    pub fn require(&self, key: &str) -> Result<&MetaValue, GgufError> {
        self.get(key).ok_or_else(|| GgufError::MissingKey {
            path: self.path.clone(),
            key: key.to_owned(),
        })
    }

    /// A metadata value that must be a non-negative integer.
    pub fn require_u64(&self, key: &str) -> Result<u64, GgufError> {
        let v = self.require(key)?;
        v.as_u64()
            .ok_or_else(|| self.wrong_type(key, "a non-negative integer", v))
    }

    /// A metadata value that must be a number.
    pub fn require_f64(&self, key: &str) -> Result<f64, GgufError> {
        let v = self.require(key)?;
        v.as_f64()
            .ok_or_else(|| self.wrong_type(key, "a number", v))
    }

    /// A metadata value that must be a string.
    pub fn require_str(&self, key: &str) -> Result<&str, GgufError> {
        let v = self.require(key)?;
        v.as_str()
            .ok_or_else(|| self.wrong_type(key, "a string", v))
    }

    fn wrong_type(&self, key: &str, expected: &'static str, found: &MetaValue) -> GgufError {
        GgufError::WrongKeyType {
            path: self.path.clone(),
            key: key.to_owned(),
            expected,
            found: found.type_name(),
        }
    }

    /// Tensor infos in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// The info of the tensor called `name`.
    pub fn tensor_info(&self, name: &str) -> Option<&TensorInfo> {
        self.by_name.get(name).map(|&i| &self.tensors[i])
    }

    /// The raw stored bytes of a tensor of this file (blocks as stored).
    ///
    /// An info taken from another file that does not fit this one yields
    /// an empty slice.
    pub fn tensor_bytes(&self, info: &TensorInfo) -> &[u8] {
        let start = self.data_offset.checked_add(info.offset);
        let end = start.and_then(|s| s.checked_add(info.n_bytes));
        match (start, end) {
            (Some(s), Some(e)) => self.map.get(s as usize..e as usize).unwrap_or(&[]),
            _ => &[],
        }
    }

    /// Dequantizes tensor `name` to an f32 tensor with IR dims
    /// ([`TensorInfo::ir_dims`]).
    pub fn dequantize(&self, name: &str) -> Result<Tensor, GgufError> {
        let info = self
            .tensor_info(name)
            .ok_or_else(|| GgufError::NoSuchTensor {
                path: self.path.clone(),
                tensor: name.to_owned(),
            })?;
        if !info.ggml_type.can_dequantize() {
            return Err(GgufError::UnsupportedType {
                path: self.path.clone(),
                tensor: name.to_owned(),
                ty: info.ggml_type,
            });
        }
        let mut values = vec![0f32; info.n_elements as usize];
        dequantize_into(info.ggml_type, self.tensor_bytes(info), &mut values)?;
        Tensor::from_vec(info.ir_dims(), values).map_err(|e| GgufError::Malformed {
            path: self.path.clone(),
            what: format!("tensor '{name}'"),
            problem: e.to_string(),
        })
    }

    /// The data alignment in bytes (`general.alignment`, default 32).
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Absolute file offset where the data section starts.
    pub fn data_offset(&self) -> u64 {
        self.data_offset
    }
}

/// `general.alignment`, checked, or the default.
fn alignment(metadata: &BTreeMap<String, MetaValue>, path: &Path) -> Result<u64, GgufError> {
    let bad = |problem: String| GgufError::BadAlignment {
        path: path.to_path_buf(),
        problem,
    };
    match metadata.get("general.alignment") {
        None => Ok(DEFAULT_ALIGNMENT),
        Some(MetaValue::U32(a)) if a.is_power_of_two() => Ok(u64::from(*a)),
        Some(MetaValue::U32(a)) => Err(bad(format!("{a} is not a power of two"))),
        Some(v) => Err(bad(format!("holds a {}", v.type_name()))),
    }
}

/// Checks one tensor info against the file and computes its sizes.
fn validate_tensor(
    raw: parse::RawTensor,
    path: &Path,
    alignment: u64,
    data_offset: u64,
    file_len: u64,
) -> Result<TensorInfo, GgufError> {
    let ty = GgmlType::from_id(raw.type_id);
    let (Some(block), Some(size)) = (ty.block_size(), ty.type_size()) else {
        return Err(GgufError::UnknownType {
            path: path.to_path_buf(),
            tensor: raw.name,
            id: raw.type_id,
        });
    };
    let malformed = |name: &str, problem: String| GgufError::Malformed {
        path: path.to_path_buf(),
        what: format!("tensor '{name}'"),
        problem,
    };
    let n_elements = raw
        .dims
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .filter(|&n| usize::try_from(n).is_ok())
        .ok_or_else(|| {
            malformed(
                &raw.name,
                format!(
                    "dimensions {:?} hold more elements than memory can",
                    raw.dims
                ),
            )
        })?;
    let row_len = raw.dims.first().copied().unwrap_or(1);
    if !row_len.is_multiple_of(block) {
        return Err(GgufError::BlockMismatch {
            path: path.to_path_buf(),
            tensor: raw.name,
            ty,
            row_len,
            block_size: block,
        });
    }
    // Whole rows are whole blocks, so this division is exact.
    let n_bytes = (n_elements / block)
        .checked_mul(size)
        .ok_or_else(|| malformed(&raw.name, "byte size overflows".into()))?;
    if !raw.offset.is_multiple_of(alignment) {
        return Err(GgufError::Misaligned {
            path: path.to_path_buf(),
            tensor: raw.name,
            offset: raw.offset,
            alignment,
        });
    }
    let start = data_offset.saturating_add(raw.offset);
    let end = start.saturating_add(n_bytes);
    if end > file_len {
        return Err(GgufError::OutOfBounds {
            path: path.to_path_buf(),
            tensor: raw.name,
            start,
            end,
            file_len,
        });
    }
    Ok(TensorInfo {
        name: raw.name,
        ggml_dims: raw.dims,
        ggml_type: ty,
        offset: raw.offset,
        n_elements,
        n_bytes,
    })
}
