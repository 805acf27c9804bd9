//! Quantization of f32 values to ggml block formats, one file per family.
//!
//! [`quantize`] produces the bytes the gguf Python package's
//! `gguf.quants.quantize` produces for the same f32 input, bit for bit: the
//! kernels repeat its numpy float32 operations in the same order (its
//! Q8_0 is ggml's reference quantizer; its Q4/Q5 ones are the same
//! formulas). `frontends/tests/gguf_writer.rs` compares every byte against
//! the package. The `*_from_codes` functions store codes that a
//! quantization already chose, with no re-rounding.
//!
//! Supported: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, every type both
//! the package quantizes and [`super::dequantize_into`] reads.

mod float;
mod legacy;

pub use legacy::{
    q4_0_from_codes, q4_1_from_codes, q5_0_from_codes, q5_1_from_codes, q8_0_from_codes,
};

use super::GgmlType;
use rayon::prelude::*;

/// The types [`quantize`] produces.
pub const SUPPORTED: &[GgmlType] = &[
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
];

/// Why values could not be quantized or codes could not be packed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum QuantizeError {
    /// The type has no quantizer here.
    #[error("cannot quantize to {ty} (supported: {})", supported_list())]
    Unsupported {
        /// The type asked for.
        ty: GgmlType,
    },
    /// The number of values is not a whole number of blocks.
    #[error(
        "cannot quantize {len} values to {ty}: not a whole number of {block_size}-element blocks"
    )]
    PartialBlock {
        /// The type.
        ty: GgmlType,
        /// The number of values given.
        len: usize,
        /// Elements per block of the type.
        block_size: usize,
    },
    /// A block format was given a NaN or an infinity (its scale would be
    /// meaningless; the float types store them as they are).
    #[error("cannot quantize to {ty}: value {index} is {value}, block formats need finite values")]
    NonFinite {
        /// The type.
        ty: GgmlType,
        /// Index of the first non-finite value.
        index: usize,
        /// The value.
        value: f32,
    },
    /// Codes and scales (or minimums) do not match up.
    #[error("cannot pack {ty}: {codes} codes and {count} {what} do not match (expected 32 codes per entry)")]
    CodeCount {
        /// The type.
        ty: GgmlType,
        /// The number of codes.
        codes: usize,
        /// `scales` or `minimums`.
        what: &'static str,
        /// How many were given.
        count: usize,
    },
    /// A code lies outside the format's range.
    #[error("cannot pack {ty}: code {index} is {code}, expected {min}..={max}")]
    CodeRange {
        /// The type.
        ty: GgmlType,
        /// Index of the code.
        index: usize,
        /// The code.
        code: i32,
        /// Smallest allowed code.
        min: i32,
        /// Largest allowed code.
        max: i32,
    },
    /// A scale or minimum is not finite or overflows f16.
    #[error("cannot pack {ty}: the {what} of block {block} is {value}, which is not a finite f16 (|x| < 65520)")]
    ScaleRange {
        /// The type.
        ty: GgmlType,
        /// `scale` or `minimum`.
        what: &'static str,
        /// The block.
        block: usize,
        /// The value given.
        value: f32,
    },
}

fn supported_list() -> String {
    SUPPORTED
        .iter()
        .map(|t| t.name())
        .collect::<Vec<_>>()
        .join(", ")
}

/// `x` rounded to the nearest f16 (ties to even) and widened back: the value
/// a block format's scale or minimum takes when stored.
pub fn f16_round(x: f32) -> f32 {
    half::f16::from_bits(float::f32_to_f16_bits(x)).to_f32()
}

/// A kernel converts whole blocks: `values` holds n blocks, `out` n × type size.
type Kernel = fn(&[f32], &mut [u8]);

fn kernel(ty: GgmlType) -> Option<Kernel> {
    Some(match ty {
        GgmlType::F32 => float::f32s,
        GgmlType::F16 => float::f16s,
        GgmlType::BF16 => float::bf16s,
        GgmlType::Q4_0 => legacy::q4_0,
        GgmlType::Q4_1 => legacy::q4_1,
        GgmlType::Q5_0 => legacy::q5_0,
        GgmlType::Q5_1 => legacy::q5_1,
        GgmlType::Q8_0 => legacy::q8_0,
        _ => return None,
    })
}

/// Below this many values one thread is faster than splitting the work.
const PARALLEL_MIN: usize = 1 << 16;
/// Values per parallel work item (a whole number of blocks is used).
const CHUNK: usize = 1 << 14;

/// Quantizes `values` (rows laid end to end, each a whole number of blocks)
/// to `ty` blocks, as `gguf.quants.quantize` would.
///
/// The float types take any value (NaN and infinities included); the block
/// formats need finite values. Large inputs are split across the rayon pool
/// in whole blocks; the bytes do not depend on the split.
pub fn quantize(ty: GgmlType, values: &[f32]) -> Result<Vec<u8>, QuantizeError> {
    let (Some(kernel), Some(block), Some(size)) = (kernel(ty), ty.block_size(), ty.type_size())
    else {
        return Err(QuantizeError::Unsupported { ty });
    };
    let (block, size) = (block as usize, size as usize);
    if !values.len().is_multiple_of(block) {
        return Err(QuantizeError::PartialBlock {
            ty,
            len: values.len(),
            block_size: block,
        });
    }
    if block > 1 {
        if let Some(index) = values.iter().position(|v| !v.is_finite()) {
            return Err(QuantizeError::NonFinite {
                ty,
                index,
                value: values[index],
            });
        }
    }
    let mut out = vec![0u8; values.len() / block * size];
    if values.len() < PARALLEL_MIN {
        kernel(values, &mut out);
    } else {
        let blocks_per_chunk = (CHUNK / block).max(1);
        out.par_chunks_mut(blocks_per_chunk * size)
            .zip(values.par_chunks(blocks_per_chunk * block))
            .for_each(|(o, v)| kernel(v, o));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::dequantize_into;

    #[test]
    fn rejects_what_it_cannot_do() {
        assert!(matches!(
            quantize(GgmlType::Q4_K, &[0.0; 256]),
            Err(QuantizeError::Unsupported { .. })
        ));
        assert!(matches!(
            quantize(GgmlType::Q8_0, &[0.0; 33]),
            Err(QuantizeError::PartialBlock { len: 33, .. })
        ));
        let mut v = vec![1.0f32; 64];
        v[40] = f32::NAN;
        assert!(matches!(
            quantize(GgmlType::Q4_0, &v),
            Err(QuantizeError::NonFinite { index: 40, .. })
        ));
        v[40] = f32::INFINITY;
        assert!(quantize(GgmlType::F16, &v).is_ok());
        let e = q4_0_from_codes(&[8; 32], &[1.0]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "cannot pack Q4_0: code 0 is 8, expected -8..=7"
        );
        let e = q8_0_from_codes(&[0; 32], &[1e5]).unwrap_err();
        assert!(
            matches!(e, QuantizeError::ScaleRange { block: 0, .. }),
            "{e}"
        );
        let e = q4_1_from_codes(&[0; 64], &[1.0, 1.0], &[0.0]).unwrap_err();
        assert!(
            matches!(
                e,
                QuantizeError::CodeCount {
                    what: "minimums",
                    count: 1,
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn the_split_does_not_change_the_bytes() {
        // Big enough for the parallel path; compared with block-by-block kernels.
        let values: Vec<f32> = (0..(PARALLEL_MIN + 4 * CHUNK) as u32)
            .map(|i| ((i.wrapping_mul(2_654_435_761) >> 8) as f32 / 65536.0 - 128.0) * 1e-2)
            .collect();
        for &ty in SUPPORTED {
            let all = quantize(ty, &values).unwrap();
            let block = ty.block_size().unwrap() as usize;
            let size = ty.type_size().unwrap() as usize;
            let k = kernel(ty).unwrap();
            let mut one = vec![0u8; size];
            for (i, chunk) in values.chunks_exact(block).enumerate() {
                k(chunk, &mut one);
                assert_eq!(&all[i * size..(i + 1) * size], &one[..], "{ty} block {i}");
            }
        }
    }

    #[test]
    fn codes_dequantize_to_scale_times_code() {
        // Exactness is checked in f64, where every product below is exact.
        let scales = [0.013_f32, -2.5e-3, 7.0, 6.1e-5, 1e-7, 0.0];
        let n = scales.len() * 32;
        let codes_i8: Vec<i8> = (0..n).map(|i| (i % 16) as i8 - 8).collect();
        let blocks = q4_0_from_codes(&codes_i8, &scales).unwrap();
        let mut out = vec![0f32; n];
        dequantize_into(GgmlType::Q4_0, &blocks, &mut out).unwrap();
        for i in 0..n {
            let want = f64::from(f16_round(scales[i / 32])) * f64::from(codes_i8[i]);
            assert_eq!(f64::from(out[i]), want, "Q4_0 element {i}");
        }

        let codes_q8: Vec<i8> = (0..n).map(|i| (i * 37 % 256) as u8 as i8).collect();
        let blocks = q8_0_from_codes(&codes_q8, &scales).unwrap();
        dequantize_into(GgmlType::Q8_0, &blocks, &mut out).unwrap();
        for i in 0..n {
            let want = f64::from(f16_round(scales[i / 32])) * f64::from(codes_q8[i]);
            assert_eq!(f64::from(out[i]), want, "Q8_0 element {i}");
        }

        let codes_q5: Vec<i8> = (0..n).map(|i| (i % 32) as i8 - 16).collect();
        let blocks = q5_0_from_codes(&codes_q5, &scales).unwrap();
        dequantize_into(GgmlType::Q5_0, &blocks, &mut out).unwrap();
        for i in 0..n {
            let want = f64::from(f16_round(scales[i / 32])) * f64::from(codes_q5[i]);
            assert_eq!(f64::from(out[i]), want, "Q5_0 element {i}");
        }
    }
}
