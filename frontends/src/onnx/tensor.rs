//! `TensorProto` → [`Tensor`]: inline data in every ONNX encoding, and
//! external data files, memory-mapped when the layout allows it.

use crate::error::ImportError;
use half::{bf16, f16};
use kiln_ir::{DType, Tensor, TensorBytes};
use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use tract_onnx::pb::tensor_proto::{DataLocation, DataType};
use tract_onnx::pb::{SparseTensorProto, TensorProto};

/// The Kiln dtype of an ONNX `TensorProto.DataType` code, or its ONNX name
/// when Kiln has no counterpart (strings, complex, float8, 4-bit types).
pub(crate) fn dtype_from_onnx(code: i32) -> Result<DType, String> {
    let dt = DataType::try_from(code).map_err(|_| format!("with unknown code {code}"))?;
    Ok(match dt {
        DataType::Float => DType::F32,
        DataType::Uint8 => DType::U8,
        DataType::Int8 => DType::I8,
        DataType::Uint16 => DType::U16,
        DataType::Int16 => DType::I16,
        DataType::Int32 => DType::I32,
        DataType::Int64 => DType::I64,
        DataType::Bool => DType::Bool,
        DataType::Float16 => DType::F16,
        DataType::Double => DType::F64,
        DataType::Uint32 => DType::U32,
        DataType::Uint64 => DType::U64,
        DataType::Bfloat16 => DType::BF16,
        other => return Err(other.as_str_name().to_string()),
    })
}

/// The ONNX `DataType` code of a Kiln dtype (for tests and round trips).
pub fn dtype_to_onnx(d: DType) -> i32 {
    let dt = match d {
        DType::F32 => DataType::Float,
        DType::F16 => DataType::Float16,
        DType::BF16 => DataType::Bfloat16,
        DType::F64 => DataType::Double,
        DType::I64 => DataType::Int64,
        DType::I32 => DataType::Int32,
        DType::I16 => DataType::Int16,
        DType::I8 => DataType::Int8,
        DType::U64 => DataType::Uint64,
        DType::U32 => DataType::Uint32,
        DType::U16 => DataType::Uint16,
        DType::U8 => DataType::Uint8,
        DType::Bool => DataType::Bool,
        // ONNX has no packed weight type.
        DType::Quant(_) => DataType::Undefined,
    };
    dt as i32
}

/// Reads tensors of one model: knows the model's folder (external data
/// paths are relative to it) and shares one mapping per external file.
pub(crate) struct TensorReader {
    base_dir: PathBuf,
    file: String,
    maps: HashMap<PathBuf, Arc<memmap2::Mmap>>,
}

impl TensorReader {
    /// A reader for the model labelled `file` whose folder is `base_dir`.
    pub(crate) fn new(base_dir: &Path, file: &str) -> Self {
        TensorReader {
            base_dir: base_dir.to_path_buf(),
            file: file.to_string(),
            maps: HashMap::new(),
        }
    }

    fn bad(&self, tensor: &str, problem: impl Into<String>) -> ImportError {
        ImportError::BadTensor {
            file: self.file.clone(),
            tensor: tensor.to_string(),
            problem: problem.into(),
        }
    }

    /// Converts one `TensorProto`; `name` overrides the proto's own name in messages.
    pub(crate) fn read(&mut self, t: &TensorProto, name: &str) -> Result<Tensor, ImportError> {
        let name = if name.is_empty() {
            t.name.as_str()
        } else {
            name
        };
        let dtype =
            dtype_from_onnx(t.data_type).map_err(|data_type| ImportError::UnsupportedDType {
                file: self.file.clone(),
                tensor: name.to_string(),
                data_type,
            })?;
        if t.segment.is_some() {
            return Err(self.bad(name, "segmented tensors are not supported"));
        }
        let mut dims = Vec::with_capacity(t.dims.len());
        for &d in &t.dims {
            dims.push(
                usize::try_from(d).map_err(|_| {
                    self.bad(name, format!("negative dimension {d} in {:?}", t.dims))
                })?,
            );
        }
        let count = dims
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| self.bad(name, format!("element count of {:?} overflows", t.dims)))?;
        let byte_len = count
            .checked_mul(dtype.size_of())
            .ok_or_else(|| self.bad(name, format!("byte size of {:?} overflows", t.dims)))?;
        let external = t.data_location == Some(DataLocation::External as i32);
        if external {
            return self.read_external(t, name, dtype, dims, byte_len);
        }
        let bytes: Vec<u8> = if !t.raw_data.is_empty() {
            t.raw_data.clone()
        } else {
            self.typed_field_bytes(t, name, dtype, count)?
        };
        if bytes.len() != byte_len {
            return Err(self.bad(
                name,
                format!(
                    "{dtype}{dims:?} needs {byte_len} bytes of data, the model holds {}",
                    bytes.len()
                ),
            ));
        }
        Tensor::from_raw(dtype, dims, &bytes).map_err(|e| self.bad(name, e.to_string()))
    }

    /// Densifies a `SparseTensorProto` (sparse initializers and `sparse_value` constants).
    pub(crate) fn read_sparse(
        &mut self,
        s: &SparseTensorProto,
        name: &str,
    ) -> Result<Tensor, ImportError> {
        let values = s
            .values
            .as_ref()
            .ok_or_else(|| self.bad(name, "sparse tensor without values"))?;
        let name = if name.is_empty() {
            values.name.as_str()
        } else {
            name
        };
        let values = self.read(values, name)?;
        let indices = match &s.indices {
            Some(i) => self.read(i, name)?,
            None => return Err(self.bad(name, "sparse tensor without indices")),
        };
        let mut dims = Vec::with_capacity(s.dims.len());
        for &d in &s.dims {
            dims.push(
                usize::try_from(d).map_err(|_| {
                    self.bad(name, format!("negative dimension {d} in {:?}", s.dims))
                })?,
            );
        }
        let count = dims
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| self.bad(name, format!("element count of {:?} overflows", s.dims)))?;
        let nnz = values.len();
        let idx = indices.to_i64_vec();
        let rank = dims.len();
        // Indices are either linear ([nnz]) or coordinates ([nnz, rank]).
        let linear: Vec<i64> = if indices.dims() == [nnz] {
            idx
        } else if indices.dims() == [nnz, rank] {
            idx.chunks(rank.max(1))
                .map(|c| {
                    c.iter().zip(&dims).fold(0i64, |acc, (&i, &d)| {
                        acc.saturating_mul(d as i64).saturating_add(i)
                    })
                })
                .collect()
        } else {
            return Err(self.bad(
                name,
                format!(
                    "sparse indices of shape {:?} do not match {nnz} values of rank {rank}",
                    indices.dims()
                ),
            ));
        };
        let size = values.dtype().size_of();
        let mut dense = vec![0u8; count * size];
        for (k, &li) in linear.iter().enumerate() {
            let li = usize::try_from(li)
                .ok()
                .filter(|&l| l < count)
                .ok_or_else(|| {
                    self.bad(
                        name,
                        format!("sparse index {li} out of range for {:?}", s.dims),
                    )
                })?;
            dense[li * size..(li + 1) * size]
                .copy_from_slice(&values.bytes()[k * size..(k + 1) * size]);
        }
        Tensor::from_raw(values.dtype(), dims, &dense).map_err(|e| self.bad(name, e.to_string()))
    }

    /// The little-endian bytes of the typed `*_data` field that ONNX uses for `dtype`.
    fn typed_field_bytes(
        &self,
        t: &TensorProto,
        name: &str,
        dtype: DType,
        count: usize,
    ) -> Result<Vec<u8>, ImportError> {
        // Each repeated field holds values of a wider type than some dtypes
        // (ONNX stores int8, bool and f16 bits in int32_data), so narrow
        // them one by one, rejecting values that do not fit.
        let field_len = match dtype {
            DType::F32 => t.float_data.len(),
            DType::F64 => t.double_data.len(),
            DType::I64 => t.int64_data.len(),
            DType::U64 | DType::U32 => t.uint64_data.len(),
            _ => t.int32_data.len(),
        };
        if field_len != count {
            return Err(self.bad(
                name,
                format!(
                    "{dtype}{:?} needs {count} elements, the model holds {field_len}",
                    t.dims
                ),
            ));
        }
        let narrow = |what: &str| self.bad(name, format!("{what} value out of range for {dtype}"));
        let mut out = Vec::with_capacity(count * dtype.size_of());
        match dtype {
            DType::F32 => t
                .float_data
                .iter()
                .for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
            DType::F64 => t
                .double_data
                .iter()
                .for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
            DType::I64 => t
                .int64_data
                .iter()
                .for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
            DType::U64 => t
                .uint64_data
                .iter()
                .for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
            DType::U32 => {
                for &v in &t.uint64_data {
                    out.extend_from_slice(
                        &u32::try_from(v)
                            .map_err(|_| narrow("uint64_data"))?
                            .to_le_bytes(),
                    );
                }
            }
            DType::I32 => t
                .int32_data
                .iter()
                .for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
            DType::I16 => {
                for &v in &t.int32_data {
                    out.extend_from_slice(
                        &i16::try_from(v)
                            .map_err(|_| narrow("int32_data"))?
                            .to_le_bytes(),
                    );
                }
            }
            DType::I8 => {
                for &v in &t.int32_data {
                    out.extend_from_slice(
                        &i8::try_from(v)
                            .map_err(|_| narrow("int32_data"))?
                            .to_le_bytes(),
                    );
                }
            }
            DType::U16 => {
                for &v in &t.int32_data {
                    out.extend_from_slice(
                        &u16::try_from(v)
                            .map_err(|_| narrow("int32_data"))?
                            .to_le_bytes(),
                    );
                }
            }
            DType::U8 => {
                for &v in &t.int32_data {
                    out.push(u8::try_from(v).map_err(|_| narrow("int32_data"))?);
                }
            }
            DType::Bool => t
                .int32_data
                .iter()
                .for_each(|&v| out.push(u8::from(v != 0))),
            DType::F16 | DType::BF16 => {
                // The 16 bits of the value are stored in the low half of an int32.
                for &v in t.int32_data.iter() {
                    out.extend_from_slice(&((v as u32 & 0xFFFF) as u16).to_le_bytes());
                }
            }
            DType::Quant(_) => {
                return Err(self.bad(name, format!("ONNX has no {dtype} tensors")));
            }
        }
        Ok(out)
    }

    fn read_external(
        &mut self,
        t: &TensorProto,
        name: &str,
        dtype: DType,
        dims: Vec<usize>,
        byte_len: usize,
    ) -> Result<Tensor, ImportError> {
        let mut location = None;
        let mut offset = 0usize;
        let mut length = None;
        for kv in &t.external_data {
            match kv.key.as_str() {
                "location" => location = Some(kv.value.clone()),
                "offset" => {
                    offset = kv.value.parse().map_err(|_| {
                        self.bad(
                            name,
                            format!("external data offset '{}' is not a number", kv.value),
                        )
                    })?
                }
                "length" => {
                    length = Some(kv.value.parse::<usize>().map_err(|_| {
                        self.bad(
                            name,
                            format!("external data length '{}' is not a number", kv.value),
                        )
                    })?)
                }
                // The checksum is advisory; other keys are reserved for tools.
                _ => {}
            }
        }
        let location =
            location.ok_or_else(|| self.bad(name, "external data without a 'location' key"))?;
        let rel = Path::new(&location);
        // The spec makes locations relative to the model's folder; refusing
        // absolute paths and `..` keeps a model from reading arbitrary files.
        if rel.is_absolute()
            || rel
                .components()
                .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
        {
            return Err(self.bad(
                name,
                format!("external data location '{location}' must be a relative path inside the model's folder"),
            ));
        }
        let path = self.base_dir.join(rel);
        let map = match self.maps.get(&path) {
            Some(m) => m.clone(),
            None => {
                let io_err = |source| ImportError::ExternalData {
                    file: self.file.clone(),
                    tensor: name.to_string(),
                    path: path.clone(),
                    source,
                };
                let f = std::fs::File::open(&path).map_err(io_err)?;
                // SAFETY: the mapping is read-only; like every mmap-based
                // loader we rely on the weight file not being truncated while
                // the model is in use.
                let m = unsafe { memmap2::Mmap::map(&f) }.map_err(io_err)?;
                let m = Arc::new(m);
                self.maps.insert(path.clone(), m.clone());
                m
            }
        };
        let len = length.unwrap_or_else(|| map.len().saturating_sub(offset));
        if len != byte_len {
            return Err(self.bad(
                name,
                format!("{dtype}{dims:?} needs {byte_len} bytes, external data gives {len}"),
            ));
        }
        let end = offset
            .checked_add(len)
            .filter(|&e| e <= map.len())
            .ok_or_else(|| {
                self.bad(
                    name,
                    format!(
                        "external data range {offset}..{} lies outside {} ({} bytes)",
                        offset.saturating_add(len),
                        path.display(),
                        map.len()
                    ),
                )
            })?;
        // The mapping starts page-aligned, so an 8-aligned offset gives
        // aligned typed views without copying; otherwise copy once.
        let tensor = if offset.is_multiple_of(8) {
            Tensor::from_bytes(dtype, dims, TensorBytes::Mapped { map, offset, len })
        } else {
            Tensor::from_raw(dtype, dims, &map[offset..end])
        };
        tensor.map_err(|e| self.bad(name, e.to_string()))
    }
}

/// Converts an ONNX `TensorProto` into a Kiln [`Tensor`].
///
/// Reads `raw_data`, the typed repeated fields (`float_data`, `int32_data`
/// for the narrow integer, bool and 16-bit float types, `int64_data`,
/// `double_data`, `uint64_data`) and external data relative to `base_dir`.
/// External data at an 8-aligned offset stays memory-mapped.
pub fn tensor_from_proto(t: &TensorProto, base_dir: &Path) -> Result<Tensor, ImportError> {
    TensorReader::new(base_dir, "").read(t, "")
}

/// Decodes a file holding one serialized `TensorProto` (the `input_0.pb` /
/// `output_0.pb` files of the ONNX backend tests).
pub fn load_tensor_file(path: &Path) -> Result<Tensor, ImportError> {
    use prost::Message;
    let bytes = std::fs::read(path).map_err(|source| ImportError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let label = path.display().to_string();
    let proto = TensorProto::decode(bytes.as_slice()).map_err(|source| ImportError::Decode {
        file: label.clone(),
        source,
    })?;
    let base = path.parent().unwrap_or_else(|| Path::new("."));
    TensorReader::new(base, &label).read(&proto, "")
}

/// Builds a scalar or 1-d tensor of `dtype` from f64 values (used for
/// constants created from legacy float attributes).
pub(crate) fn tensor_of_dtype(
    dtype: DType,
    dims: Vec<usize>,
    values: &[f64],
) -> Result<Tensor, kiln_ir::TensorError> {
    match dtype {
        DType::F32 => Tensor::from_vec(dims, values.iter().map(|&v| v as f32).collect()),
        DType::F64 => Tensor::from_vec(dims, values.to_vec()),
        DType::F16 => Tensor::from_vec(dims, values.iter().map(|&v| f16::from_f64(v)).collect()),
        DType::BF16 => Tensor::from_vec(dims, values.iter().map(|&v| bf16::from_f64(v)).collect()),
        DType::I64 => Tensor::from_vec(dims, values.iter().map(|&v| v as i64).collect()),
        DType::I32 => Tensor::from_vec(dims, values.iter().map(|&v| v as i32).collect()),
        DType::I16 => Tensor::from_vec(dims, values.iter().map(|&v| v as i16).collect()),
        DType::I8 => Tensor::from_vec(dims, values.iter().map(|&v| v as i8).collect()),
        DType::U64 => Tensor::from_vec(dims, values.iter().map(|&v| v as u64).collect()),
        DType::U32 => Tensor::from_vec(dims, values.iter().map(|&v| v as u32).collect()),
        DType::U16 => Tensor::from_vec(dims, values.iter().map(|&v| v as u16).collect()),
        DType::U8 => Tensor::from_vec(dims, values.iter().map(|&v| v as u8).collect()),
        DType::Bool => {
            Tensor::from_bools(dims, &values.iter().map(|&v| v != 0.0).collect::<Vec<_>>())
        }
        DType::Quant(_) => Err(kiln_ir::TensorError::BadShape { dtype, dims }),
    }
}
