//! Dequantization of ggml block formats to f32, one file per family.
//!
//! Every kernel reproduces `gguf.quants.dequantize` of the gguf Python
//! package bit for bit (numpy evaluates each operation in f32 with no fused
//! multiply-add, and so do these loops); `frontends/tests/gguf_files.rs`
//! checks every element's bits against it.

mod float;
mod kquants;
mod legacy;

use super::{GgmlType, GgufError};
use rayon::prelude::*;

/// The types [`dequantize_into`] converts.
pub(crate) const SUPPORTED: &[GgmlType] = &[
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q2_K,
    GgmlType::Q3_K,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
];

/// A kernel converts whole blocks: `bytes` holds n blocks, `out` n × block size.
type Kernel = fn(&[u8], &mut [f32]);

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
        GgmlType::Q2_K => kquants::q2_k,
        GgmlType::Q3_K => kquants::q3_k,
        GgmlType::Q4_K => kquants::q4_k,
        GgmlType::Q5_K => kquants::q5_k,
        GgmlType::Q6_K => kquants::q6_k,
        _ => return None,
    })
}

/// Below this many elements one thread is faster than splitting the work.
const PARALLEL_MIN: usize = 1 << 16;
/// Elements per parallel work item (a whole number of blocks is used).
const CHUNK: usize = 1 << 14;

/// Dequantizes `bytes`, a packed run of `ty` blocks, into `out`.
///
/// `out.len()` must be a multiple of the type's block size and `bytes` must
/// hold exactly `out.len() / block_size` blocks. Large inputs are split
/// across the rayon pool; the result does not depend on the split.
pub fn dequantize_into(ty: GgmlType, bytes: &[u8], out: &mut [f32]) -> Result<(), GgufError> {
    let (Some(kernel), Some(block), Some(size)) = (kernel(ty), ty.block_size(), ty.type_size())
    else {
        return Err(GgufError::DequantUnsupported { ty });
    };
    let (block, size) = (block as usize, size as usize);
    if !out.len().is_multiple_of(block) {
        return Err(GgufError::DequantSize {
            ty,
            problem: format!(
                "{} output elements are not a whole number of {block}-element blocks",
                out.len()
            ),
        });
    }
    let n_blocks = out.len() / block;
    if bytes.len() != n_blocks * size {
        return Err(GgufError::DequantSize {
            ty,
            problem: format!(
                "{} elements need {} bytes ({n_blocks} blocks of {size}), got {}",
                out.len(),
                n_blocks * size,
                bytes.len()
            ),
        });
    }
    if out.len() < PARALLEL_MIN {
        kernel(bytes, out);
    } else {
        let blocks_per_chunk = (CHUNK / block).max(1);
        out.par_chunks_mut(blocks_per_chunk * block)
            .zip(bytes.par_chunks(blocks_per_chunk * size))
            .for_each(|(o, b)| kernel(b, o));
    }
    Ok(())
}
