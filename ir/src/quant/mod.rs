//! Packed quantized weight formats.
//!
//! A quantized weight is a 2-D `[in, out]` matrix (the input-major layout of
//! Kiln's `MatMul` weights) stored as small integer codes plus one f16 scale
//! (and, for asymmetric formats, one integer zero point) per group of
//! consecutive input rows of one output column. Every code `c` decodes to
//! `(c - z) * s`, where `s` is its group's scale and `z` its group's zero
//! point (`2^(bits-1)` for symmetric formats), so one decoder serves every
//! format.
//!
//! The packed bytes are output-major: each output column's codes are
//! contiguous along the input dimension, so a matrix-vector product reads
//! each column once, front to back, decoding as it goes. The exact byte
//! layout, the rounding rules and the error bounds are specified in
//! `docs/quant-formats.md`; this module is the reference implementation of
//! that document.
//!
//! - [`QuantFormat`]: bits (8, 4 or 3), group size (32, 64, 128 or one group
//!   per output column) and symmetry, written `w4g64`, `w4g64a`, `w8`.
//! - [`PackedWeight`]: the packed codes, scales and zero points of one matrix.
//! - [`quantize_rtn`]: round-to-nearest quantization of an f32 matrix.
//! - [`dequantize`], [`dot_column`], [`matvec`]: scalar reference decoders.
//! - [`packed_bytes`], [`bits_per_weight`]: storage cost, scales included.
//! - [`PackedView`]: the serialised form of a [`crate::DType::Quant`] tensor,
//!   read in place.

mod format;
mod pack;
mod rtn;
mod view;
mod weight;

#[cfg(test)]
mod tests;

pub use format::{bits_per_weight, packed_bytes, QuantFormat, GROUP_SIZES};
pub use rtn::{group_params, quantize_rtn, MIN_SCALE};
pub use view::PackedView;
pub use weight::{dequantize, dot_column, matvec, PackedWeight};

/// Error raised by format parsing, quantization and packed-weight assembly.
///
/// Callers add the tensor's name; these errors say what was wrong with the
/// numbers and what was expected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum QuantError {
    /// A format string does not follow `w<bits>[g<group>][a]`.
    #[error("invalid quantization format `{text}`: {reason} (expected `w<bits>[g<group>][a]`, e.g. `w8`, `w4g64`, `w3g128a`)")]
    Parse {
        /// The text as given.
        text: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The bit width is not one of the supported ones.
    #[error("unsupported quantization width of {0} bits (expected 3, 4 or 8)")]
    UnsupportedBits(u8),
    /// The group size is not one of the supported ones.
    #[error("unsupported quantization group of {0} input rows (expected 32, 64 or 128, or no group for one scale per output column)")]
    UnsupportedGroup(usize),
    /// The weight slice does not hold `rows * cols` values.
    #[error("a [{rows}, {cols}] weight needs rows * cols values, got {actual}")]
    ShapeMismatch {
        /// Input dimension.
        rows: usize,
        /// Output dimension.
        cols: usize,
        /// Number of values given.
        actual: usize,
    },
    /// The matrix is too large for its byte size to be addressed.
    #[error("a [{rows}, {cols}] weight is too large to pack on this machine")]
    TooLarge {
        /// Input dimension.
        rows: usize,
        /// Output dimension.
        cols: usize,
    },
    /// A weight is NaN or infinite.
    #[error("weight element [{row}, {col}] is {value}; only finite weights can be quantized")]
    NonFinite {
        /// Input row of the element.
        row: usize,
        /// Output column of the element.
        col: usize,
        /// The value.
        value: f32,
    },
    /// A group's values are too large for its scale to fit in an f16.
    #[error("output column {col}, group {group} spans {range}, which needs a scale above the largest f16 (65504)")]
    ScaleOverflow {
        /// Output column.
        col: usize,
        /// Group index along the input dimension.
        group: usize,
        /// Largest magnitude (symmetric) or max - min (asymmetric) of the group.
        range: f32,
    },
    /// A part of a packed weight has the wrong length.
    #[error("packed {format} weight of [{rows}, {cols}]: `{part}` holds {actual} entries, expected {expected}")]
    PartLength {
        /// The format.
        format: QuantFormat,
        /// Input dimension.
        rows: usize,
        /// Output dimension.
        cols: usize,
        /// Which part: `data`, `codes`, `scales` or `zeros`.
        part: &'static str,
        /// Expected number of entries.
        expected: usize,
        /// Number of entries given.
        actual: usize,
    },
    /// Zero points were given for a symmetric format or missing for an
    /// asymmetric one.
    #[error(
        "packed {format} weight: zero points must be given exactly when the format is asymmetric"
    )]
    ZerosPresence {
        /// The format.
        format: QuantFormat,
    },
    /// A code does not fit in the format's bit width.
    #[error("code {value} at input row {row} of output column {col} does not fit in {bits} bits")]
    CodeRange {
        /// Output column.
        col: usize,
        /// Input row.
        row: usize,
        /// The code.
        value: u8,
        /// The format's bit width.
        bits: u8,
    },
    /// A zero point does not fit in the format's bit width.
    #[error(
        "zero point {value} of output column {col}, group {group} does not fit in {bits} bits"
    )]
    ZeroRange {
        /// Output column.
        col: usize,
        /// Group index along the input dimension.
        group: usize,
        /// The zero point.
        value: u8,
        /// The format's bit width.
        bits: u8,
    },
    /// A scale is NaN or infinite.
    #[error("scale of output column {col}, group {group} is {value}; scales must be finite")]
    NonFiniteScale {
        /// Output column.
        col: usize,
        /// Group index along the input dimension.
        group: usize,
        /// The scale.
        value: f32,
    },
}
