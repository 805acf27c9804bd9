//! Constant tensors: weights and folded values, held apart from the graph.

use crate::DType;
use half::{bf16, f16};
use std::fmt;
use std::sync::Arc;

/// Storage of a constant tensor's bytes (little-endian, densely packed).
///
/// Owned buffers are 8-byte aligned, and mapped ones are aligned by the file
/// layout, so typed views are zero-copy.
#[derive(Clone)]
pub enum TensorBytes {
    /// Bytes owned by the process.
    Owned(Arc<AlignedBytes>),
    /// A range of a memory-mapped file.
    Mapped {
        /// The mapping, shared by every tensor of the file.
        map: Arc<memmap2::Mmap>,
        /// Start of the tensor inside the mapping.
        offset: usize,
        /// Length in bytes.
        len: usize,
    },
}

impl TensorBytes {
    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        match self {
            TensorBytes::Owned(b) => b.as_slice(),
            TensorBytes::Mapped { map, offset, len } => &map[*offset..*offset + *len],
        }
    }

    /// True when the bytes live in a memory-mapped file.
    pub fn is_mapped(&self) -> bool {
        matches!(self, TensorBytes::Mapped { .. })
    }
}

/// A heap buffer of bytes with 8-byte alignment.
pub struct AlignedBytes {
    words: Vec<u64>,
    len: usize,
}

impl AlignedBytes {
    /// Copies `bytes` into a new aligned buffer.
    pub fn copy_from(bytes: &[u8]) -> Self {
        let mut words = vec![0u64; bytes.len().div_ceil(8)];
        bytemuck::cast_slice_mut::<u64, u8>(&mut words)[..bytes.len()].copy_from_slice(bytes);
        AlignedBytes {
            words,
            len: bytes.len(),
        }
    }

    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        &bytemuck::cast_slice::<u64, u8>(&self.words)[..self.len]
    }
}

/// Error raised when a tensor is built from inconsistent parts.
#[derive(Debug, thiserror::Error)]
pub enum TensorError {
    /// The byte length does not match dtype × element count.
    #[error("tensor of {dtype}{dims:?} needs {expected} bytes, got {actual}")]
    SizeMismatch {
        /// Element type.
        dtype: DType,
        /// Dimensions.
        dims: Vec<usize>,
        /// Expected byte length.
        expected: usize,
        /// Actual byte length.
        actual: usize,
    },
    /// The dimensions do not suit the dtype (a packed weight that is not
    /// `[in, out]`) or their byte size overflows.
    #[error("a tensor of {dtype} cannot have dimensions {dims:?}")]
    BadShape {
        /// Element type.
        dtype: DType,
        /// Dimensions.
        dims: Vec<usize>,
    },
    /// The packed bytes of a quantized weight are inconsistent.
    #[error("packed weight: {0}")]
    Packed(#[from] crate::quant::QuantError),
    /// A typed view was asked for with the wrong element type.
    #[error("tensor holds {actual}, asked for {asked}")]
    WrongDType {
        /// The dtype the tensor holds.
        actual: DType,
        /// The dtype that was asked for.
        asked: DType,
    },
}

/// A dense constant tensor with fixed dimensions.
#[derive(Clone)]
pub struct Tensor {
    dtype: DType,
    dims: Vec<usize>,
    bytes: TensorBytes,
}

/// Rust element types that map one-to-one to a [`DType`].
pub trait Element: bytemuck::Pod + Copy + Send + Sync + 'static {
    /// The matching dtype.
    const DTYPE: DType;
}

macro_rules! element {
    ($($t:ty => $d:ident),* $(,)?) => {
        $(impl Element for $t { const DTYPE: DType = DType::$d; })*
    };
}
element!(f32 => F32, f64 => F64, f16 => F16, bf16 => BF16, i64 => I64, i32 => I32, i16 => I16,
         i8 => I8, u64 => U64, u32 => U32, u16 => U16, u8 => U8);

impl Tensor {
    /// Wraps bytes as a tensor, checking the length.
    pub fn from_bytes(
        dtype: DType,
        dims: Vec<usize>,
        bytes: TensorBytes,
    ) -> Result<Self, TensorError> {
        let actual = bytes.as_slice().len();
        let Some(expected) = dtype.byte_len(&dims) else {
            return Err(TensorError::BadShape { dtype, dims });
        };
        if expected != actual {
            return Err(TensorError::SizeMismatch {
                dtype,
                dims,
                expected,
                actual,
            });
        }
        Ok(Tensor { dtype, dims, bytes })
    }

    /// Copies raw little-endian bytes into a new tensor.
    pub fn from_raw(dtype: DType, dims: Vec<usize>, bytes: &[u8]) -> Result<Self, TensorError> {
        Self::from_bytes(
            dtype,
            dims,
            TensorBytes::Owned(Arc::new(AlignedBytes::copy_from(bytes))),
        )
    }

    /// Builds a tensor from typed values.
    pub fn from_vec<T: Element>(dims: Vec<usize>, values: Vec<T>) -> Result<Self, TensorError> {
        Self::from_raw(T::DTYPE, dims, bytemuck::cast_slice(&values))
    }

    /// Builds a boolean tensor.
    pub fn from_bools(dims: Vec<usize>, values: &[bool]) -> Result<Self, TensorError> {
        let bytes: Vec<u8> = values.iter().map(|&b| b as u8).collect();
        Self::from_raw(DType::Bool, dims, &bytes)
    }

    /// A rank-0 tensor.
    pub fn scalar<T: Element>(value: T) -> Self {
        Self::from_raw(T::DTYPE, Vec::new(), bytemuck::bytes_of(&value))
            .expect("one element always matches a scalar shape")
    }

    /// Element type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Dimensions.
    pub fn dims(&self) -> &[usize] {
        &self.dims
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.dims.iter().product()
    }

    /// True when the tensor has no element.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Raw little-endian bytes.
    pub fn bytes(&self) -> &[u8] {
        self.bytes.as_slice()
    }

    /// The storage (owned or mapped).
    pub fn storage(&self) -> &TensorBytes {
        &self.bytes
    }

    /// A typed view of the elements; copies only if the storage is misaligned.
    pub fn to_vec<T: Element>(&self) -> Result<Vec<T>, TensorError> {
        self.check::<T>()?;
        Ok(bytemuck::pod_collect_to_vec(self.bytes()))
    }

    /// A zero-copy typed view, when the storage is aligned for `T`.
    pub fn as_slice<T: Element>(&self) -> Result<Option<&[T]>, TensorError> {
        self.check::<T>()?;
        Ok(bytemuck::try_cast_slice(self.bytes()).ok())
    }

    fn check<T: Element>(&self) -> Result<(), TensorError> {
        if self.dtype != T::DTYPE {
            return Err(TensorError::WrongDType {
                actual: self.dtype,
                asked: T::DTYPE,
            });
        }
        Ok(())
    }

    /// Reads every element as i64 (integers, bools and floats truncated).
    ///
    /// Meant for small index tensors: shapes, axes, pads.
    pub fn to_i64_vec(&self) -> Vec<i64> {
        let b = self.bytes();
        match self.dtype {
            DType::I64 => bytemuck::pod_collect_to_vec(b),
            DType::I32 => bytemuck::pod_collect_to_vec::<u8, i32>(b)
                .into_iter()
                .map(i64::from)
                .collect(),
            DType::I16 => bytemuck::pod_collect_to_vec::<u8, i16>(b)
                .into_iter()
                .map(i64::from)
                .collect(),
            DType::I8 => b.iter().map(|&x| x as i8 as i64).collect(),
            DType::U64 => bytemuck::pod_collect_to_vec::<u8, u64>(b)
                .into_iter()
                .map(|x| x as i64)
                .collect(),
            DType::U32 => bytemuck::pod_collect_to_vec::<u8, u32>(b)
                .into_iter()
                .map(i64::from)
                .collect(),
            DType::U16 => bytemuck::pod_collect_to_vec::<u8, u16>(b)
                .into_iter()
                .map(i64::from)
                .collect(),
            DType::U8 | DType::Bool => b.iter().map(|&x| x as i64).collect(),
            _ => self.to_f64_vec().into_iter().map(|x| x as i64).collect(),
        }
    }

    /// Reads every element as f64.
    pub fn to_f64_vec(&self) -> Vec<f64> {
        let b = self.bytes();
        match self.dtype {
            DType::F32 => bytemuck::pod_collect_to_vec::<u8, f32>(b)
                .into_iter()
                .map(f64::from)
                .collect(),
            DType::F64 => bytemuck::pod_collect_to_vec(b),
            DType::F16 => bytemuck::pod_collect_to_vec::<u8, f16>(b)
                .into_iter()
                .map(f64::from)
                .collect(),
            DType::BF16 => bytemuck::pod_collect_to_vec::<u8, bf16>(b)
                .into_iter()
                .map(f64::from)
                .collect(),
            DType::Quant(_) => match self.packed_view() {
                Some(Ok(view)) => view.dequantize().into_iter().map(f64::from).collect(),
                // Construction checked the byte length; the parts cannot be
                // inconsistent except through padding, which decoding ignores.
                _ => Vec::new(),
            },
            _ => self.to_i64_vec().into_iter().map(|x| x as f64).collect(),
        }
    }

    /// A packed weight as a `[in, out]` tensor of dtype [`DType::Quant`].
    pub fn from_packed(w: &crate::quant::PackedWeight) -> Self {
        let bytes = w.to_bytes();
        Tensor {
            dtype: DType::Quant(w.format()),
            dims: vec![w.rows(), w.cols()],
            bytes: TensorBytes::Owned(Arc::new(AlignedBytes::copy_from(&bytes))),
        }
    }

    /// A zero-copy view of a packed weight; `None` when the dtype is not
    /// [`DType::Quant`].
    pub fn packed_view(&self) -> Option<Result<crate::quant::PackedView<'_>, TensorError>> {
        let DType::Quant(format) = self.dtype else {
            return None;
        };
        let (rows, cols) = (self.dims[0], self.dims[1]);
        Some(crate::quant::PackedView::new(format, rows, cols, self.bytes()).map_err(Into::into))
    }

    /// Content equality: same dtype, dims and bytes.
    pub fn same_as(&self, other: &Tensor) -> bool {
        self.dtype == other.dtype && self.dims == other.dims && self.bytes() == other.bytes()
    }
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tensor({}{:?}", self.dtype, self.dims)?;
        if self.len() <= 8 {
            write!(f, " {:?}", self.to_f64_vec())?;
        }
        f.write_str(")")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_views_check_dtype_and_size() {
        let t = Tensor::from_vec(vec![2, 2], vec![1.0f32, 2.0, 3.0, 4.0]).unwrap();
        assert_eq!(t.as_slice::<f32>().unwrap().unwrap(), &[1.0, 2.0, 3.0, 4.0]);
        assert!(t.to_vec::<i64>().is_err());
        assert!(Tensor::from_raw(DType::F32, vec![3], &[0u8; 8]).is_err());
        assert_eq!(
            Tensor::from_vec(vec![2], vec![3i32, -1])
                .unwrap()
                .to_i64_vec(),
            vec![3, -1]
        );
    }
}
