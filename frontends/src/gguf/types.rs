//! ggml tensor types: numeric ids, names, block geometry.

use std::fmt;

/// Number of elements in one K-quant super-block.
pub const QK_K: u64 = 256;

/// Declares [`GgmlType`] with each type's id, block size and bytes per block
/// in one table, so the three can never drift apart.
macro_rules! ggml_types {
    ($($(#[$doc:meta])* $name:ident = $id:literal, $block:expr, $size:expr;)*) => {
        /// A ggml tensor element type, as stored in GGUF tensor infos.
        ///
        /// The numeric ids are those of `enum ggml_type` in `ggml.h`. Ids that
        /// ggml retired (4, 5, 31-33, 36-38) and ids newer than this table are
        /// [`GgmlType::Unknown`].
        #[allow(non_camel_case_types)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum GgmlType {
            $($(#[$doc])* $name,)*
            /// An id this reader does not know.
            Unknown(u32),
        }

        impl GgmlType {
            /// Every known type, in id order.
            pub const ALL: &'static [GgmlType] = &[$(GgmlType::$name),*];

            /// The type with ggml id `id`.
            pub fn from_id(id: u32) -> GgmlType {
                match id {
                    $($id => GgmlType::$name,)*
                    other => GgmlType::Unknown(other),
                }
            }

            /// The ggml id.
            pub fn id(self) -> u32 {
                match self {
                    $(GgmlType::$name => $id,)*
                    GgmlType::Unknown(id) => id,
                }
            }

            /// The ggml name (`Q4_K`, `BF16`, ...); `unknown` for unknown ids.
            pub fn name(self) -> &'static str {
                match self {
                    $(GgmlType::$name => stringify!($name),)*
                    GgmlType::Unknown(_) => "unknown",
                }
            }

            /// Elements per block (1 for plain scalar types); `None` when unknown.
            pub fn block_size(self) -> Option<u64> {
                match self {
                    $(GgmlType::$name => Some($block),)*
                    GgmlType::Unknown(_) => None,
                }
            }

            /// Bytes per block; `None` when unknown.
            pub fn type_size(self) -> Option<u64> {
                match self {
                    $(GgmlType::$name => Some($size),)*
                    GgmlType::Unknown(_) => None,
                }
            }
        }
    };
}

// Sizes follow `GGML_QUANT_SIZES` in the gguf Python package (ggml's type traits).
ggml_types! {
    /// IEEE single precision.
    F32 = 0, 1, 4;
    /// IEEE half precision.
    F16 = 1, 1, 2;
    /// 4-bit, one f16 scale per 32 elements.
    Q4_0 = 2, 32, 2 + 16;
    /// 4-bit, f16 scale and minimum per 32 elements.
    Q4_1 = 3, 32, 2 + 2 + 16;
    /// 5-bit, one f16 scale per 32 elements.
    Q5_0 = 6, 32, 2 + 4 + 16;
    /// 5-bit, f16 scale and minimum per 32 elements.
    Q5_1 = 7, 32, 2 + 2 + 4 + 16;
    /// 8-bit, one f16 scale per 32 elements.
    Q8_0 = 8, 32, 2 + 32;
    /// 8-bit with f32 scale and sum (a matmul intermediate).
    Q8_1 = 9, 32, 4 + 4 + 32;
    /// 2-bit K-quant.
    Q2_K = 10, QK_K, 2 + 2 + QK_K / 16 + QK_K / 4;
    /// 3-bit K-quant.
    Q3_K = 11, QK_K, 2 + QK_K / 4 + QK_K / 8 + 12;
    /// 4-bit K-quant.
    Q4_K = 12, QK_K, 2 + 2 + QK_K / 2 + 12;
    /// 5-bit K-quant.
    Q5_K = 13, QK_K, 2 + 2 + QK_K / 2 + QK_K / 8 + 12;
    /// 6-bit K-quant.
    Q6_K = 14, QK_K, 2 + QK_K / 2 + QK_K / 4 + QK_K / 16;
    /// 8-bit K-quant (a matmul intermediate).
    Q8_K = 15, QK_K, 4 + QK_K + QK_K / 8;
    /// 2.06 bits per weight i-quant.
    IQ2_XXS = 16, QK_K, 2 + QK_K / 4;
    /// 2.31 bits per weight i-quant.
    IQ2_XS = 17, QK_K, 2 + QK_K / 4 + QK_K / 32;
    /// 3.06 bits per weight i-quant.
    IQ3_XXS = 18, QK_K, 2 + QK_K / 4 + QK_K / 8;
    /// 1.56 bits per weight i-quant.
    IQ1_S = 19, QK_K, 2 + QK_K / 8 + QK_K / 16;
    /// 4-bit non-linear.
    IQ4_NL = 20, 32, 2 + 16;
    /// 3.44 bits per weight i-quant.
    IQ3_S = 21, QK_K, 2 + QK_K / 4 + QK_K / 8 + QK_K / 32 + 4;
    /// 2.5 bits per weight i-quant.
    IQ2_S = 22, QK_K, 2 + QK_K / 4 + QK_K / 16;
    /// 4.25 bits per weight non-linear.
    IQ4_XS = 23, QK_K, 2 + 2 + QK_K / 2 + QK_K / 64;
    /// 8-bit integer.
    I8 = 24, 1, 1;
    /// 16-bit integer.
    I16 = 25, 1, 2;
    /// 32-bit integer.
    I32 = 26, 1, 4;
    /// 64-bit integer.
    I64 = 27, 1, 8;
    /// IEEE double precision.
    F64 = 28, 1, 8;
    /// 1.75 bits per weight i-quant.
    IQ1_M = 29, QK_K, QK_K / 8 + QK_K / 16 + QK_K / 32;
    /// bfloat16.
    BF16 = 30, 1, 2;
    /// Ternary, 1.69 bits per weight.
    TQ1_0 = 34, QK_K, 2 + 4 * 13;
    /// Ternary, 2.06 bits per weight.
    TQ2_0 = 35, QK_K, 2 + 64;
    /// Microscaling FP4 (e2m1 values, e8m0 scale per 32).
    MXFP4 = 39, 32, 1 + 16;
    /// NVIDIA FP4 (e2m1 values, e4m3 scales).
    NVFP4 = 40, 64, 4 + 32;
    /// 1-bit, f16 scale per 128 elements.
    Q1_0 = 41, 128, 2 + 16;
}

impl GgmlType {
    /// True when [`crate::gguf::dequantize_into`] can convert this type to f32.
    pub fn can_dequantize(self) -> bool {
        crate::gguf::dequant::SUPPORTED.contains(&self)
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GgmlType::Unknown(id) => write!(f, "unknown type {id}"),
            t => f.write_str(t.name()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for &t in GgmlType::ALL {
            assert_eq!(GgmlType::from_id(t.id()), t);
            assert!(seen.insert(t.id()), "{t} listed twice");
        }
        assert_eq!(GgmlType::from_id(4), GgmlType::Unknown(4));
        assert_eq!(GgmlType::Unknown(4).block_size(), None);
    }
}
