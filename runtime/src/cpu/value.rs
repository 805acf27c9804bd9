//! The executor's tensor type: a shape plus a dense, row-major buffer.
//!
//! Buffers are reference-counted so that constants, identity-like ops
//! (Reshape, Squeeze, Identity, ...) and graph outputs share storage instead
//! of copying it.

use half::{bf16, f16};
use kiln_ir::{DType, Tensor};
use std::sync::Arc;

/// Error raised by a kernel; the executor adds the node's name.
#[derive(Debug)]
pub(crate) enum KernelError {
    /// Operands the op cannot work on.
    Invalid(String),
    /// An op, mode or dtype the executor does not handle.
    Unsupported(String),
}

/// Result of a kernel.
pub(crate) type KResult<T> = Result<T, KernelError>;

/// Returns early with an [`KernelError::Invalid`] error built by `format!`.
macro_rules! bail {
    ($($arg:tt)*) => {
        return Err($crate::cpu::value::KernelError::Invalid(format!($($arg)*)))
    };
}
pub(crate) use bail;

/// Returns early with an [`KernelError::Unsupported`] error built by `format!`.
macro_rules! unsupported {
    ($($arg:tt)*) => {
        return Err($crate::cpu::value::KernelError::Unsupported(format!($($arg)*)))
    };
}
pub(crate) use unsupported;

/// A dense buffer of one element type.
#[derive(Clone, Debug)]
pub(crate) enum Data {
    F32(Arc<Store<f32>>),
    F16(Arc<Store<f16>>),
    BF16(Arc<Store<bf16>>),
    F64(Arc<Store<f64>>),
    I64(Arc<Store<i64>>),
    I32(Arc<Store<i32>>),
    I16(Arc<Store<i16>>),
    I8(Arc<Store<i8>>),
    U64(Arc<Store<u64>>),
    U32(Arc<Store<u32>>),
    U16(Arc<Store<u16>>),
    U8(Arc<Store<u8>>),
    Bool(Arc<Store<bool>>),
    /// A packed quantized weight ([`DType::Quant`]), kept as its constant
    /// tensor so the bytes are read in place and never inflated.
    Packed(Tensor),
}

/// The elements of a buffer: owned, or borrowed from a constant tensor's
/// storage (a memory-mapped bundle) so weights are never copied at load.
#[derive(Debug)]
pub(crate) enum Store<T> {
    /// Elements owned by the executor.
    Owned(Vec<T>),
    /// Elements viewed in place in an (aligned) constant tensor.
    Borrowed(Tensor),
}

impl<T: Elem> std::ops::Deref for Store<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        match self {
            Store::Owned(v) => v,
            // Alignment and dtype were checked when the store was made.
            Store::Borrowed(t) => T::cast_bytes(t.bytes()),
        }
    }
}

/// A runtime tensor: shape and row-major data.
#[derive(Clone, Debug)]
pub(crate) struct Value {
    pub shape: Vec<usize>,
    pub data: Data,
}

/// Element types the kernels are generic over.
pub(crate) trait Elem:
    Copy + Send + Sync + 'static + Default + PartialEq + PartialOrd + std::fmt::Debug
{
    /// The matching dtype.
    const DTYPE: DType;
    /// Wraps a vector as [`Data`].
    fn wrap(v: Vec<Self>) -> Data;
    /// Views aligned little-endian bytes as elements (empty for bool, which
    /// is never borrowed).
    fn cast_bytes(b: &[u8]) -> &[Self];
    /// The slice when `d` holds this type.
    fn view(d: &Data) -> Option<&[Self]>;
    /// Converts to f64 (bool → 0/1).
    fn to_f64(self) -> f64;
    /// Converts from f64 (numpy `astype` rules: floats round, ints truncate/saturate).
    fn from_f64(v: f64) -> Self;
    /// Converts to i64 (floats truncate).
    fn to_i64(self) -> i64;
    /// Converts from i64 (wrapping for narrower integers, like numpy).
    fn from_i64(v: i64) -> Self;
    /// Converts from u64 (wrapping for narrower integers).
    fn from_u64(v: u64) -> Self;
    /// Zero.
    fn zero() -> Self {
        Self::default()
    }
    /// One.
    fn one() -> Self {
        Self::from_i64(1)
    }
    /// True when the value is NaN (floats only).
    fn is_nan(self) -> bool {
        false
    }
}

macro_rules! elem_int {
    ($($t:ty => $v:ident),*) => {$(
        impl Elem for $t {
            const DTYPE: DType = DType::$v;
            fn wrap(v: Vec<Self>) -> Data { Data::$v(Arc::new(Store::Owned(v))) }
            fn cast_bytes(b: &[u8]) -> &[Self] { bytemuck::cast_slice(b) }
            fn view(d: &Data) -> Option<&[Self]> { if let Data::$v(x) = d { Some(x) } else { None } }
            fn to_f64(self) -> f64 { self as f64 }
            fn from_f64(v: f64) -> Self { v as $t }
            fn to_i64(self) -> i64 { self as i64 }
            fn from_i64(v: i64) -> Self { v as $t }
            fn from_u64(v: u64) -> Self { v as $t }
        }
    )*};
}
elem_int!(i64 => I64, i32 => I32, i16 => I16, i8 => I8, u64 => U64, u32 => U32, u16 => U16, u8 => U8);

macro_rules! elem_float {
    ($($t:ty => $v:ident),*) => {$(
        impl Elem for $t {
            const DTYPE: DType = DType::$v;
            fn wrap(v: Vec<Self>) -> Data { Data::$v(Arc::new(Store::Owned(v))) }
            fn cast_bytes(b: &[u8]) -> &[Self] { bytemuck::cast_slice(b) }
            fn view(d: &Data) -> Option<&[Self]> { if let Data::$v(x) = d { Some(x) } else { None } }
            fn to_f64(self) -> f64 { self as f64 }
            fn from_f64(v: f64) -> Self { v as $t }
            fn to_i64(self) -> i64 { self as i64 }
            fn from_i64(v: i64) -> Self { v as $t }
            fn from_u64(v: u64) -> Self { v as $t }
            fn is_nan(self) -> bool { self.is_nan() }
        }
    )*};
}
elem_float!(f32 => F32, f64 => F64);

macro_rules! elem_half {
    ($($t:ty => $v:ident),*) => {$(
        impl Elem for $t {
            const DTYPE: DType = DType::$v;
            fn wrap(v: Vec<Self>) -> Data { Data::$v(Arc::new(Store::Owned(v))) }
            fn cast_bytes(b: &[u8]) -> &[Self] { bytemuck::cast_slice(b) }
            fn view(d: &Data) -> Option<&[Self]> { if let Data::$v(x) = d { Some(x) } else { None } }
            fn to_f64(self) -> f64 { <$t>::to_f64(self) }
            fn from_f64(v: f64) -> Self { <$t>::from_f64(v) }
            fn to_i64(self) -> i64 { <$t>::to_f64(self) as i64 }
            fn from_i64(v: i64) -> Self { <$t>::from_f64(v as f64) }
            fn from_u64(v: u64) -> Self { <$t>::from_f64(v as f64) }
            fn is_nan(self) -> bool { <$t>::is_nan(self) }
        }
    )*};
}
elem_half!(f16 => F16, bf16 => BF16);

impl Elem for bool {
    const DTYPE: DType = DType::Bool;
    fn wrap(v: Vec<Self>) -> Data {
        Data::Bool(Arc::new(Store::Owned(v)))
    }
    fn cast_bytes(_: &[u8]) -> &[Self] {
        &[]
    }
    fn view(d: &Data) -> Option<&[Self]> {
        if let Data::Bool(x) = d {
            Some(x)
        } else {
            None
        }
    }
    fn to_f64(self) -> f64 {
        self as u8 as f64
    }
    fn from_f64(v: f64) -> Self {
        v != 0.0
    }
    fn to_i64(self) -> i64 {
        self as i64
    }
    fn from_i64(v: i64) -> Self {
        v != 0
    }
    fn from_u64(v: u64) -> Self {
        v != 0
    }
}

/// Runs `$body` with `$T` bound to the Rust type of dtype `$dt` (every plain
/// dtype); returns an unsupported-dtype error for packed weights, which only
/// the kernels that read them in place accept.
macro_rules! with_dtype {
    ($dt:expr, $T:ident => $body:expr) => {
        $crate::cpu::value::with_dtype!($dt, $T => $body, packed f => {
            return Err($crate::cpu::value::KernelError::Unsupported(format!(
                "this op on a packed {f} weight"
            )))
        })
    };
    ($dt:expr, $T:ident => $body:expr, packed $f:ident => $packed:expr) => {
        match $dt {
            kiln_ir::DType::F32 => {
                type $T = f32;
                $body
            }
            kiln_ir::DType::F16 => {
                type $T = half::f16;
                $body
            }
            kiln_ir::DType::BF16 => {
                type $T = half::bf16;
                $body
            }
            kiln_ir::DType::F64 => {
                type $T = f64;
                $body
            }
            kiln_ir::DType::I64 => {
                type $T = i64;
                $body
            }
            kiln_ir::DType::I32 => {
                type $T = i32;
                $body
            }
            kiln_ir::DType::I16 => {
                type $T = i16;
                $body
            }
            kiln_ir::DType::I8 => {
                type $T = i8;
                $body
            }
            kiln_ir::DType::U64 => {
                type $T = u64;
                $body
            }
            kiln_ir::DType::U32 => {
                type $T = u32;
                $body
            }
            kiln_ir::DType::U16 => {
                type $T = u16;
                $body
            }
            kiln_ir::DType::U8 => {
                type $T = u8;
                $body
            }
            kiln_ir::DType::Bool => {
                type $T = bool;
                $body
            }
            kiln_ir::DType::Quant($f) => $packed,
        }
    };
}
pub(crate) use with_dtype;

/// Runs `$body` with `$T` bound to the integer type of `$dt`; `$else` for other dtypes.
macro_rules! with_int {
    ($dt:expr, $T:ident => $body:expr, _ => $else:expr) => {
        match $dt {
            kiln_ir::DType::I64 => {
                type $T = i64;
                $body
            }
            kiln_ir::DType::I32 => {
                type $T = i32;
                $body
            }
            kiln_ir::DType::I16 => {
                type $T = i16;
                $body
            }
            kiln_ir::DType::I8 => {
                type $T = i8;
                $body
            }
            kiln_ir::DType::U64 => {
                type $T = u64;
                $body
            }
            kiln_ir::DType::U32 => {
                type $T = u32;
                $body
            }
            kiln_ir::DType::U16 => {
                type $T = u16;
                $body
            }
            kiln_ir::DType::U8 => {
                type $T = u8;
                $body
            }
            _ => $else,
        }
    };
}
pub(crate) use with_int;

/// Runs `$body` with `$T` bound to f32 or f64; `$else` for other dtypes.
macro_rules! with_f {
    ($dt:expr, $T:ident => $body:expr, _ => $else:expr) => {
        match $dt {
            kiln_ir::DType::F32 => {
                type $T = f32;
                $body
            }
            kiln_ir::DType::F64 => {
                type $T = f64;
                $body
            }
            _ => $else,
        }
    };
}
pub(crate) use with_f;

impl Value {
    /// Wraps a vector; the caller guarantees `v.len()` matches `shape`.
    pub fn new<T: Elem>(shape: Vec<usize>, v: Vec<T>) -> Value {
        debug_assert_eq!(shape.iter().product::<usize>(), v.len());
        Value {
            shape,
            data: T::wrap(v),
        }
    }

    /// A rank-0 value.
    pub fn scalar<T: Elem>(v: T) -> Value {
        Value::new(Vec::new(), vec![v])
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        match &self.data {
            Data::F32(_) => DType::F32,
            Data::F16(_) => DType::F16,
            Data::BF16(_) => DType::BF16,
            Data::F64(_) => DType::F64,
            Data::I64(_) => DType::I64,
            Data::I32(_) => DType::I32,
            Data::I16(_) => DType::I16,
            Data::I8(_) => DType::I8,
            Data::U64(_) => DType::U64,
            Data::U32(_) => DType::U32,
            Data::U16(_) => DType::U16,
            Data::U8(_) => DType::U8,
            Data::Bool(_) => DType::Bool,
            Data::Packed(t) => t.dtype(),
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// Rank.
    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    /// Bytes held by the buffer.
    pub fn bytes(&self) -> u64 {
        match &self.data {
            Data::Packed(t) => t.bytes().len() as u64,
            _ => (self.len() * self.dtype().size_of()) as u64,
        }
    }

    /// The packed weight this value holds, if it is one.
    pub fn packed(&self) -> Option<KResult<kiln_ir::quant::PackedView<'_>>> {
        match &self.data {
            Data::Packed(t) => Some(
                t.packed_view()?
                    .map_err(|e| KernelError::Invalid(format!("packed weight: {e}"))),
            ),
            _ => None,
        }
    }

    /// A packed weight decoded to an f32 value of the same shape, so that
    /// ops without a packed kernel still see the weight's values.
    fn dequantized(t: &Tensor) -> Value {
        let values = match t.packed_view() {
            Some(Ok(view)) => view.dequantize(),
            // Tensors are checked when they are made; a malformed one decodes to nothing.
            _ => Vec::new(),
        };
        let shape = if values.is_empty() {
            vec![0]
        } else {
            t.dims().to_vec()
        };
        Value::new(shape, values)
    }

    /// The elements as a slice of `T`, or an error naming the dtypes.
    pub fn slice<T: Elem>(&self) -> KResult<&[T]> {
        T::view(&self.data).ok_or_else(|| {
            KernelError::Invalid(format!(
                "expected a {} tensor, got {}",
                T::DTYPE,
                self.dtype()
            ))
        })
    }

    /// Same data, new shape (shares the buffer); the element count must match.
    pub fn reshaped(&self, shape: Vec<usize>) -> Value {
        debug_assert_eq!(shape.iter().product::<usize>(), self.len());
        Value {
            shape,
            data: self.data.clone(),
        }
    }

    /// Every element as i64 (for shape-like operands: axes, pads, sizes).
    pub fn to_i64s(&self) -> Vec<i64> {
        if let Data::Packed(t) = &self.data {
            return Value::dequantized(t).to_i64s();
        }
        with_dtype!(self.dtype(), T => match self.slice::<T>() {
            Ok(s) => s.iter().map(|&x| x.to_i64()).collect(),
            Err(_) => Vec::new(),
        }, packed _f => Vec::new())
    }

    /// Every element as f64.
    pub fn to_f64s(&self) -> Vec<f64> {
        if let Data::Packed(t) = &self.data {
            return Value::dequantized(t).to_f64s();
        }
        with_dtype!(self.dtype(), T => match self.slice::<T>() {
            Ok(s) => s.iter().map(|&x| x.to_f64()).collect(),
            Err(_) => Vec::new(),
        }, packed _f => Vec::new())
    }

    /// Converts an IR tensor: aligned storage is borrowed, the rest copied once.
    pub fn from_tensor(t: &Tensor) -> Value {
        let shape = t.dims().to_vec();
        if t.dtype().is_quant() {
            return Value {
                shape,
                data: Data::Packed(t.clone()),
            };
        }
        if t.dtype() == DType::Bool {
            return Value::new(
                shape,
                t.bytes().iter().map(|&b| b != 0).collect::<Vec<bool>>(),
            );
        }
        fn conv<T: Elem + bytemuck::Pod + kiln_ir::Element>(t: &Tensor) -> Arc<Store<T>> {
            match t.as_slice::<T>() {
                // Aligned storage of the right dtype is viewed in place.
                Ok(Some(_)) => Arc::new(Store::Borrowed(t.clone())),
                _ => Arc::new(Store::Owned(bytemuck::pod_collect_to_vec(t.bytes()))),
            }
        }
        let data = match t.dtype() {
            DType::F32 => Data::F32(conv(t)),
            DType::F16 => Data::F16(conv(t)),
            DType::BF16 => Data::BF16(conv(t)),
            DType::F64 => Data::F64(conv(t)),
            DType::I64 => Data::I64(conv(t)),
            DType::I32 => Data::I32(conv(t)),
            DType::I16 => Data::I16(conv(t)),
            DType::I8 => Data::I8(conv(t)),
            DType::U64 => Data::U64(conv(t)),
            DType::U32 => Data::U32(conv(t)),
            DType::U16 => Data::U16(conv(t)),
            DType::U8 => Data::U8(conv(t)),
            DType::Bool | DType::Quant(_) => unreachable!("handled above"),
        };
        Value { shape, data }
    }

    /// Converts to an IR tensor (little-endian bytes).
    pub fn to_tensor(&self) -> Tensor {
        let dims = self.shape.clone();
        let dt = self.dtype();
        let bytes: Vec<u8>;
        let raw: &[u8] = match &self.data {
            Data::F32(v) => bytemuck::cast_slice(v),
            Data::F16(v) => bytemuck::cast_slice(v),
            Data::BF16(v) => bytemuck::cast_slice(v),
            Data::F64(v) => bytemuck::cast_slice(v),
            Data::I64(v) => bytemuck::cast_slice(v),
            Data::I32(v) => bytemuck::cast_slice(v),
            Data::I16(v) => bytemuck::cast_slice(v),
            Data::I8(v) => bytemuck::cast_slice(v),
            Data::U64(v) => bytemuck::cast_slice(v),
            Data::U32(v) => bytemuck::cast_slice(v),
            Data::U16(v) => bytemuck::cast_slice(v),
            Data::U8(v) => v,
            Data::Packed(t) => return t.clone(),
            Data::Bool(v) => {
                bytes = v.iter().map(|&b| b as u8).collect();
                &bytes
            }
        };
        Tensor::from_raw(dt, dims, raw).expect("a value's buffer always matches its shape")
    }

    /// Converts to f32 (for half-precision kernels that compute in f32).
    pub fn to_f32_vec(&self) -> KResult<Vec<f32>> {
        Ok(match &self.data {
            Data::F32(v) => v.to_vec(),
            Data::F16(v) => v.iter().map(|x| x.to_f32()).collect(),
            Data::BF16(v) => v.iter().map(|x| x.to_f32()).collect(),
            Data::Packed(t) => return Value::dequantized(t).to_f32_vec(),
            _ => {
                with_dtype!(self.dtype(), T => self.slice::<T>()?.iter().map(|&x| x.to_f64() as f32).collect())
            }
        })
    }

    /// Casts every element to `to` (numpy `astype` semantics).
    pub fn cast(&self, to: DType) -> Value {
        if self.dtype() == to {
            return self.clone();
        }
        if let Data::Packed(t) = &self.data {
            return Value::dequantized(t).cast(to);
        }
        let shape = self.shape.clone();
        with_dtype!(self.dtype(), S => {
            let src = self.slice::<S>().unwrap_or(&[]);
            with_dtype!(to, D => Value::new(shape, cast_slice::<S, D>(src)), packed _f => self.clone())
        }, packed _f => self.clone())
    }
}

/// Converts one slice to another element type.
pub(crate) fn cast_slice<S: Elem, D: Elem>(src: &[S]) -> Vec<D> {
    let s_float = S::DTYPE.is_float();
    let s_unsigned = matches!(
        S::DTYPE,
        DType::U64 | DType::U32 | DType::U16 | DType::U8 | DType::Bool
    );
    if s_float {
        if D::DTYPE == DType::Bool {
            // NaN is truthy in numpy.
            src.iter()
                .map(|&x| D::from_i64((x.to_f64() != 0.0) as i64))
                .collect()
        } else if D::DTYPE.is_float() {
            src.iter().map(|&x| D::from_f64(x.to_f64())).collect()
        } else {
            // Truncate toward zero; go through i64 so narrow integers wrap like C casts do.
            src.iter()
                .map(|&x| {
                    let f = x.to_f64();
                    if D::DTYPE == DType::U64 && f >= 9.223372036854776e18 {
                        D::from_u64(f as u64)
                    } else {
                        D::from_i64(f as i64)
                    }
                })
                .collect()
        }
    } else if s_unsigned && S::DTYPE == DType::U64 {
        src.iter()
            .map(|&x| D::from_u64(x.to_i64() as u64))
            .collect()
    } else {
        src.iter().map(|&x| D::from_i64(x.to_i64())).collect()
    }
}

/// Normalises a possibly negative axis against `rank`.
pub(crate) fn norm_axis(axis: i64, rank: usize) -> KResult<usize> {
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    if a < 0 || a >= r {
        bail!("axis {axis} is out of range for rank {rank}");
    }
    Ok(a as usize)
}

/// Row-major strides of a shape (in elements).
pub(crate) fn strides_of(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// The required operand `i`, or an error.
pub(crate) fn arg<'a>(inputs: &[Option<&'a Value>], i: usize) -> KResult<&'a Value> {
    inputs
        .get(i)
        .copied()
        .flatten()
        .ok_or_else(|| KernelError::Invalid(format!("missing required operand {i}")))
}

/// The optional operand `i`.
pub(crate) fn opt<'a>(inputs: &[Option<&'a Value>], i: usize) -> Option<&'a Value> {
    inputs.get(i).copied().flatten()
}
