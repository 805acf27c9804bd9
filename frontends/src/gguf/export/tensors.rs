//! One weight of a Kiln graph as ggml blocks.
//!
//! Every 2-D weight is first brought to GGUF's row order: `[out, in]`, one
//! row per output (a packed weight's output-major bytes already are; an f32
//! constant follows its template layout). A packed weight whose codes and
//! scales a llama.cpp block type can hold is written from them unchanged
//! (the `*_from_codes` packers; for Q4_1 a block's minimum may be rounded
//! to f16, see [`from_codes`]); anything else goes through llama.cpp's
//! quantizer from its f32 values. Either way the written blocks are decoded
//! again and compared with Kiln's own values bit for bit, which is what the
//! report's `exact` says.

use super::GgufType;
use crate::arch::weights::transpose_2d;
use crate::arch::Layout;
use crate::gguf::quantize::{self, f16_round};
use crate::gguf::{dequantize_into, GgmlType};
use kiln_ir::quant::PackedView;
use kiln_ir::{DType, Tensor};
use rayon::prelude::*;

/// Elements per block of every block type written here.
const BLOCK: usize = 32;

/// A weight encoded as ggml data.
#[derive(Debug)]
pub(super) struct Encoded {
    /// Dims in IR order (outermost first; GGUF's `ne` reversed).
    pub dims: Vec<usize>,
    /// The type written.
    pub ty: GgmlType,
    /// The data, rows laid end to end.
    pub bytes: Vec<u8>,
    /// The file decodes to Kiln's values bit for bit.
    pub exact: bool,
    /// Largest `|decoded − Kiln's value|` over the tensor (0 when exact).
    pub max_error: f32,
    /// llama.cpp's quantizer chose new codes (the source was f32, or its
    /// codes do not fit the type); false when the packed codes were kept.
    pub requantized: bool,
}

/// A 1-D weight (norm or bias) as F32.
pub(super) fn encode_1d(t: &Tensor) -> Result<Encoded, String> {
    if t.dtype() != DType::F32 {
        return Err(format!(
            "a 1-D weight of {}; GGUF export writes 1-D weights from f32",
            t.dtype()
        ));
    }
    Ok(Encoded {
        dims: t.dims().to_vec(),
        ty: GgmlType::F32,
        bytes: t.bytes().to_vec(),
        exact: true,
        max_error: 0.0,
        requantized: false,
    })
}

/// The type a packed weight of `rows` input rows gets in `auto` mode: the
/// llama.cpp type its codes fit (symmetric 3- and 4-bit: Q4_0; asymmetric:
/// Q4_1; 8-bit: Q8_0), F32 when rows are not whole blocks.
fn auto_packed(view: &PackedView<'_>) -> GgmlType {
    let f = view.format();
    if !view.rows().is_multiple_of(BLOCK) {
        GgmlType::F32
    } else if f.bits() <= 4 {
        if f.symmetric() {
            GgmlType::Q4_0
        } else {
            GgmlType::Q4_1
        }
    } else {
        GgmlType::Q8_0
    }
}

/// A 2-D weight in `layout` (for f32 constants) as `choice` asks.
pub(super) fn encode_2d(t: &Tensor, layout: Layout, choice: GgufType) -> Result<Encoded, String> {
    match t.dtype() {
        DType::Quant(_) => {
            let view = match t.packed_view() {
                Some(Ok(v)) => v,
                Some(Err(e)) => return Err(e.to_string()),
                None => unreachable!("a Quant tensor always has a packed view"),
            };
            let (rows, cols) = (view.rows(), view.cols());
            let values = dequantize_rows(&view);
            let mut ty = match choice {
                GgufType::Auto => auto_packed(&view),
                GgufType::Force(ty) => ty,
            };
            if ty.block_size() != Some(1) && !rows.is_multiple_of(BLOCK) {
                ty = GgmlType::F32;
            }
            if let Some(bytes) = from_codes(&view, ty) {
                let (exact, max_error) = compare(ty, &bytes, &values)?;
                return Ok(Encoded {
                    dims: vec![cols, rows],
                    ty,
                    bytes,
                    exact,
                    max_error,
                    requantized: false,
                });
            }
            convert(vec![cols, rows], &values, ty)
        }
        DType::F32 => {
            if t.dims().len() != 2 {
                return Err(format!("expected a 2-D weight, found dims {:?}", t.dims()));
            }
            let hf = match layout {
                Layout::AsIs => t.clone(),
                Layout::Transposed => transpose_2d(t, "", "").map_err(|e| e.to_string())?,
            };
            let values = hf.to_vec::<f32>().map_err(|e| e.to_string())?;
            let (out, inp) = (hf.dims()[0], hf.dims()[1]);
            let mut ty = match choice {
                GgufType::Auto => GgmlType::Q8_0,
                GgufType::Force(ty) => ty,
            };
            if ty.block_size() != Some(1) && !inp.is_multiple_of(BLOCK) {
                ty = GgmlType::F32;
            }
            convert(vec![out, inp], &values, ty)
        }
        other => Err(format!(
            "a weight of {other}; GGUF export writes f32 and packed quantized weights"
        )),
    }
}

/// Kiln's values of a packed `[in, out]` weight, one row per output.
fn dequantize_rows(view: &PackedView<'_>) -> Vec<f32> {
    let rows = view.rows();
    let mut out = vec![0f32; rows * view.cols()];
    if rows > 0 {
        out.par_chunks_mut(rows)
            .enumerate()
            .for_each(|(c, row)| view.dequantize_column(c, row));
    }
    out
}

/// Converts f32 values with `quantize` (llama.cpp's quantizers, or a float
/// conversion) and checks whether the result decodes to them exactly.
fn convert(dims: Vec<usize>, values: &[f32], ty: GgmlType) -> Result<Encoded, String> {
    let bytes = quantize::quantize(ty, values).map_err(|e| e.to_string())?;
    let (exact, max_error) = compare(ty, &bytes, values)?;
    Ok(Encoded {
        dims,
        ty,
        bytes,
        exact,
        max_error,
        requantized: !matches!(ty, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16),
    })
}

/// Whether `bytes` of `ty` decode to `values` bit for bit, and the largest
/// absolute difference (infinite where one side is not finite and the
/// other differs).
fn compare(ty: GgmlType, bytes: &[u8], values: &[f32]) -> Result<(bool, f32), String> {
    let mut back = vec![0f32; values.len()];
    dequantize_into(ty, bytes, &mut back).map_err(|e| e.to_string())?;
    let exact = back
        .par_iter()
        .zip(values.par_iter())
        .all(|(a, b)| a.to_bits() == b.to_bits());
    if exact {
        return Ok((true, 0.0));
    }
    let max_error = back
        .par_iter()
        .zip(values.par_iter())
        .map(|(a, b)| {
            let d = (a - b).abs();
            if d.is_nan() && a.to_bits() != b.to_bits() {
                f32::INFINITY
            } else if d.is_nan() {
                0.0
            } else {
                d
            }
        })
        .reduce(|| 0.0, f32::max);
    Ok((false, max_error))
}

/// The packed weight's own codes and scales as `ty` blocks, when they fit:
/// rows are whole 32-blocks (every Kiln group size is a multiple of 32, so
/// each block lies in one group and has one scale and zero point), and
/// - Q8_0 / Q4_0 (`d·q`): `q = c − z` within −128..=127 / −8..=7, `d = s`;
/// - Q4_1 (`d·q + m`): codes of at most 4 bits, stored as `q = c − k`
///   with `d = s` and `m = (k − z)·s`, the offset `k` chosen per block by
///   [`q4_1_offset`]. Exact when `m` is an f16; otherwise `m` is rounded to
///   the nearest f16, which moves the block's values by at most
///   `2⁻¹¹·|m|` (below `0.008·s`), where llama.cpp's quantizer, putting
///   the values on a new grid, moves them by up to `d/2`.
///
/// `None` otherwise (and for every other type).
fn from_codes(view: &PackedView<'_>, ty: GgmlType) -> Option<Vec<u8>> {
    let (rows, cols) = (view.rows(), view.cols());
    if rows == 0 || !rows.is_multiple_of(BLOCK) {
        return None;
    }
    let (lo, hi) = match ty {
        GgmlType::Q8_0 => (-128, 127),
        GgmlType::Q4_0 => (-8, 7),
        GgmlType::Q4_1 if view.format().bits() <= 4 => (0, 15),
        _ => return None,
    };
    let mut codes = vec![0u8; rows * cols];
    codes
        .par_chunks_mut(rows)
        .enumerate()
        .for_each(|(c, col)| view.column_codes_into(c, col));
    let per_col = rows / BLOCK;
    let group = view.format().group_len(rows);
    let (mut scales, mut zeros) = (
        Vec::with_capacity(cols * per_col),
        Vec::with_capacity(cols * per_col),
    );
    for c in 0..cols {
        for b in 0..per_col {
            let g = b * BLOCK / group;
            scales.push(view.scale(c, g));
            zeros.push(view.zero(c, g));
        }
    }
    if ty == GgmlType::Q4_1 {
        let mut u = vec![0u8; codes.len()];
        let mut mins = Vec::with_capacity(scales.len());
        for (b, block) in codes.chunks_exact(BLOCK).enumerate() {
            let (s, z) = (scales[b], i32::from(zeros[b]));
            let lo = block.iter().copied().min().map_or(0, i32::from);
            let hi = block.iter().copied().max().map_or(0, i32::from);
            let k = q4_1_offset(lo, hi, z, s);
            for (out, &c) in u[b * BLOCK..(b + 1) * BLOCK].iter_mut().zip(block) {
                // lo ≥ k ≥ hi − 15, so the stored code is in 0..=15.
                *out = (i32::from(c) - k) as u8;
            }
            mins.push((k - z) as f32 * s);
        }
        return quantize::q4_1_from_codes(&u, &scales, &mins).ok();
    }
    let q: Option<Vec<i8>> = codes
        .par_iter()
        .enumerate()
        .map(|(i, &c)| {
            let q = i32::from(c) - i32::from(zeros[i / BLOCK]);
            (lo..=hi).contains(&q).then_some(q as i8)
        })
        .collect();
    let q = q?;
    match ty {
        GgmlType::Q8_0 => quantize::q8_0_from_codes(&q, &scales).ok(),
        _ => quantize::q4_0_from_codes(&q, &scales).ok(),
    }
}

/// The offset `k` of a Q4_1 block holding codes `lo..=hi` of zero point
/// `z` and scale `s`: stored codes `c − k` must lie in 0..=15, so
/// `hi − 15 ≤ k ≤ lo`. Picks the `k` whose minimum `(k − z)·s` (exact in
/// f32) is an f16 exactly, or else is changed least by rounding to f16;
/// ties go to the smallest `|k − z|`.
fn q4_1_offset(lo: i32, hi: i32, z: i32, s: f32) -> i32 {
    let rounding = |k: i32| {
        let m = (k - z) as f32 * s;
        (f16_round(m) - m).abs()
    };
    (hi - 15..=lo)
        .min_by(|&a, &b| {
            rounding(a)
                .total_cmp(&rounding(b))
                .then((a - z).abs().cmp(&(b - z).abs()))
        })
        .unwrap_or(lo)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_ir::quant::{quantize_rtn, QuantFormat};

    fn weight(rows: usize, cols: usize, seed: u32) -> Vec<f32> {
        (0..rows * cols)
            .map(|i| {
                let x = (i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 8;
                (x as f32 / (1u32 << 24) as f32 - 0.5) * (1.0 + (i % 7) as f32)
            })
            .collect()
    }

    fn packed(rows: usize, cols: usize, format: &str) -> Tensor {
        let f = QuantFormat::parse(format).unwrap();
        Tensor::from_packed(&quantize_rtn(&weight(rows, cols, 7), rows, cols, f).unwrap())
    }

    #[test]
    fn auto_writes_the_codes_of_every_format_that_fits_exactly() {
        for (format, ty) in [
            ("w4g32", GgmlType::Q4_0),
            ("w4g64", GgmlType::Q4_0),
            ("w4g128", GgmlType::Q4_0),
            ("w4", GgmlType::Q4_0),
            ("w3g64", GgmlType::Q4_0),
            ("w8", GgmlType::Q8_0),
            ("w8g32", GgmlType::Q8_0),
            ("w8g128", GgmlType::Q8_0),
        ] {
            let t = packed(192, 5, format);
            let e = encode_2d(&t, Layout::Transposed, GgufType::Auto).unwrap();
            assert_eq!(
                (e.ty, e.exact, e.requantized),
                (ty, true, false),
                "{format}"
            );
            assert_eq!(e.dims, [5, 192]);
            // Forced to Q8_0, every symmetric format still fits.
            let e = encode_2d(&t, Layout::Transposed, GgufType::Force(GgmlType::Q8_0)).unwrap();
            assert!(e.exact && !e.requantized, "{format} as Q8_0");
        }
    }

    #[test]
    fn asymmetric_codes_are_kept_with_the_nearest_exact_minimum() {
        let (rows, cols) = (64, 3);
        let f = QuantFormat::parse("w4g32a").unwrap();
        let pack = |codes: &[u8], scale: half::f16, zero: u8| {
            let w = kiln_ir::quant::PackedWeight::from_codes(
                f,
                rows,
                cols,
                codes,
                vec![scale; cols * 2],
                Some(vec![zero; cols * 2]),
            )
            .unwrap();
            let t = Tensor::from_packed(&w);
            let e = encode_2d(&t, Layout::Transposed, GgufType::Auto).unwrap();
            (dequantize_rows(&t.packed_view().unwrap().unwrap()), e)
        };
        let decoded = |e: &Encoded| {
            let mut v = vec![0f32; rows * cols];
            dequantize_into(e.ty, &e.bytes, &mut v).unwrap();
            v
        };
        // A scale with a full 11-bit significand: 7·s needs 14 bits.
        let s = half::f16::from_bits(0x3BFF);
        // Every block spans all 16 codes: the minimum must be −7·s, which
        // is rounded; the values move by at most 2⁻¹¹·7·s.
        let all: Vec<u8> = (0..rows * cols).map(|i| (i * 5 % 16) as u8).collect();
        let (want, e) = pack(&all, s, 7);
        assert_eq!(
            (e.ty, e.exact, e.requantized),
            (GgmlType::Q4_1, false, false)
        );
        let bound = 7.0 * s.to_f32() / 2048.0;
        for (a, b) in decoded(&e).iter().zip(&want) {
            assert!((a - b).abs() <= bound, "{a} vs {b}");
        }
        // Codes 5..=12 leave room to shift: k − z = −2 gives an exact −2·s.
        let narrow: Vec<u8> = (0..rows * cols).map(|i| 5 + (i * 3 % 8) as u8).collect();
        let (want, e) = pack(&narrow, s, 7);
        assert_eq!(
            (e.ty, e.exact, e.requantized),
            (GgmlType::Q4_1, true, false)
        );
        assert_eq!(decoded(&e), want);
        // A zero point of 8 (or any power of two) times the scale is exact.
        let (want, e) = pack(&all, s, 8);
        assert!(e.exact && !e.requantized);
        assert_eq!(decoded(&e), want);
        // The full-range codes fit Q8_0 exactly (q = c − 7).
        let w = kiln_ir::quant::PackedWeight::from_codes(
            f,
            rows,
            cols,
            &all,
            vec![s; cols * 2],
            Some(vec![7; cols * 2]),
        )
        .unwrap();
        let e = encode_2d(
            &Tensor::from_packed(&w),
            Layout::Transposed,
            GgufType::Force(GgmlType::Q8_0),
        )
        .unwrap();
        assert!(e.exact && !e.requantized);
    }

    #[test]
    fn the_q4_1_offset_prefers_an_exact_minimum() {
        let s = half::f16::from_bits(0x3BFF).to_f32();
        // Window k ∈ [−3, 5] around z = 7: k − z ∈ [−10, −2]; −2, −4, −8 are exact.
        assert_eq!(q4_1_offset(5, 12, 7, s), 5);
        // Full range: only k = 0.
        assert_eq!(q4_1_offset(0, 15, 7, s), 0);
        // z = 0 inside the window: m = 0.
        assert_eq!(q4_1_offset(2, 9, 0, s), 0);
    }

    #[test]
    fn f32_weights_follow_their_layout_and_are_requantized() {
        let (out, inp) = (4, 64);
        let hf = weight(out, inp, 3);
        let t = Tensor::from_vec(vec![out, inp], hf.clone()).unwrap();
        let kiln = transpose_2d(&t, "w", "test").unwrap();
        let a = encode_2d(&t, Layout::AsIs, GgufType::Auto).unwrap();
        let b = encode_2d(&kiln, Layout::Transposed, GgufType::Auto).unwrap();
        assert_eq!(a.bytes, b.bytes);
        assert_eq!(a.bytes, quantize::quantize(GgmlType::Q8_0, &hf).unwrap());
        assert_eq!(
            (a.ty, a.requantized, a.dims.as_slice()),
            (GgmlType::Q8_0, true, &[out, inp][..])
        );
        let f = encode_2d(&kiln, Layout::Transposed, GgufType::Force(GgmlType::F32)).unwrap();
        assert!(f.exact && !f.requantized);
        assert_eq!(f.bytes, t.bytes());
        // Rows that are not whole blocks stay f32.
        let t = Tensor::from_vec(vec![2, 20], vec![0.5f32; 40]).unwrap();
        let e = encode_2d(&t, Layout::AsIs, GgufType::Force(GgmlType::Q4_0)).unwrap();
        assert_eq!((e.ty, e.exact), (GgmlType::F32, true));
    }
}
