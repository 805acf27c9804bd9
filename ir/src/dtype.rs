//! Element types of tensors.

use crate::quant::QuantFormat;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

/// The element type of a tensor value.
///
/// Packed quantized weights are [`DType::Quant`]: a quantized weight is a
/// tensor like any other, and every pass sees its true size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum DType {
    /// IEEE 754 binary32.
    F32,
    /// IEEE 754 binary16.
    F16,
    /// bfloat16 (the upper half of an f32).
    BF16,
    /// IEEE 754 binary64; kept so reference models and tests that use doubles import faithfully.
    F64,
    /// Signed 64-bit integer.
    I64,
    /// Signed 32-bit integer.
    I32,
    /// Signed 16-bit integer.
    I16,
    /// Signed 8-bit integer.
    I8,
    /// Unsigned 64-bit integer.
    U64,
    /// Unsigned 32-bit integer.
    U32,
    /// Unsigned 16-bit integer.
    U16,
    /// Unsigned 8-bit integer.
    U8,
    /// Boolean, one byte per element (0 or 1).
    Bool,
    /// A packed quantized `[in, out]` weight (docs/quant-formats.md): codes,
    /// f16 scales and zero points, as [`crate::quant::PackedWeight::to_bytes`]
    /// lays them out. Only 2-D constants have this dtype, and only `MatMul`
    /// (as its second operand) and `Gather` (along axis 1) read it.
    Quant(QuantFormat),
}

impl DType {
    /// Every plain (unpacked) dtype, in declaration order.
    pub const ALL: [DType; 13] = [
        DType::F32,
        DType::F16,
        DType::BF16,
        DType::F64,
        DType::I64,
        DType::I32,
        DType::I16,
        DType::I8,
        DType::U64,
        DType::U32,
        DType::U16,
        DType::U8,
        DType::Bool,
    ];

    /// Bytes taken by one element; 0 for [`DType::Quant`], whose elements
    /// take a fraction of a byte (use [`DType::byte_len`] for sizes).
    pub fn size_of(self) -> usize {
        match self {
            DType::Quant(_) => 0,
            DType::F64 | DType::I64 | DType::U64 => 8,
            DType::F32 | DType::I32 | DType::U32 => 4,
            DType::F16 | DType::BF16 | DType::I16 | DType::U16 => 2,
            DType::I8 | DType::U8 | DType::Bool => 1,
        }
    }

    /// Bytes taken by a tensor of this dtype and these dimensions; `None`
    /// when the count overflows, or for a packed dtype whose dimensions are
    /// not `[in, out]`.
    pub fn byte_len(self, dims: &[usize]) -> Option<usize> {
        match self {
            DType::Quant(format) => match dims {
                &[rows, cols] => {
                    rows.checked_mul(cols)?;
                    Some(crate::quant::packed_bytes(rows, cols, format))
                }
                _ => None,
            },
            _ => dims
                .iter()
                .try_fold(self.size_of(), |acc, &d| acc.checked_mul(d)),
        }
    }

    /// True for packed quantized weights.
    pub fn is_quant(self) -> bool {
        matches!(self, DType::Quant(_))
    }

    /// True for the floating-point types.
    pub fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F16 | DType::BF16 | DType::F64)
    }

    /// True for the signed and unsigned integer types.
    pub fn is_integer(self) -> bool {
        matches!(
            self,
            DType::I64
                | DType::I32
                | DType::I16
                | DType::I8
                | DType::U64
                | DType::U32
                | DType::U16
                | DType::U8
        )
    }

    /// The short name used in the text form (`f32`, `i64`, `bool`, ...; the
    /// format, such as `w4g64`, for packed weights).
    pub fn name(self) -> Cow<'static, str> {
        Cow::Borrowed(match self {
            DType::Quant(format) => return Cow::Owned(format.to_string()),
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::F64 => "f64",
            DType::I64 => "i64",
            DType::I32 => "i32",
            DType::I16 => "i16",
            DType::I8 => "i8",
            DType::U64 => "u64",
            DType::U32 => "u32",
            DType::U16 => "u16",
            DType::U8 => "u8",
            DType::Bool => "bool",
        })
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// Error for a dtype name that is not one of [`DType::ALL`].
#[derive(Debug, thiserror::Error)]
#[error("unknown dtype `{0}` (expected one of f32, f16, bf16, f64, i64, i32, i16, i8, u64, u32, u16, u8, bool, or a quantized format such as w4g64)")]
pub struct UnknownDType(pub String);

impl FromStr for DType {
    type Err = UnknownDType;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DType::ALL
            .iter()
            .copied()
            .find(|d| d.name() == s)
            .or_else(|| QuantFormat::parse(s).ok().map(DType::Quant))
            .ok_or_else(|| UnknownDType(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for d in DType::ALL {
            assert_eq!(d.name().parse::<DType>().unwrap(), d);
        }
        assert!("f8".parse::<DType>().is_err());
        for f in QuantFormat::all() {
            let d = DType::Quant(f);
            assert_eq!(d.name().parse::<DType>().unwrap(), d);
        }
    }

    #[test]
    fn packed_sizes_follow_the_format() {
        let f = QuantFormat::parse("w4g64").unwrap();
        // 576 x 1536: 288 code bytes and 9 f16 scales per column.
        assert_eq!(
            DType::Quant(f).byte_len(&[576, 1536]),
            Some(1536 * (288 + 18))
        );
        assert_eq!(DType::Quant(f).byte_len(&[576]), None);
        assert_eq!(DType::F32.byte_len(&[3, 5]), Some(60));
        assert_eq!(DType::F32.byte_len(&[usize::MAX, 2]), None);
    }
}
