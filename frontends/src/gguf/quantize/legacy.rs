//! The 32-element block formats: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0.
//!
//! Two ways in:
//!
//! - From f32 values: each kernel mirrors `quantize_blocks` of the gguf
//!   Python package (`gguf/quants.py`) operation by operation in f32
//!   (numpy's float32 arithmetic, no fused multiply-add), so the bytes are
//!   identical to `gguf.quants.quantize`'s.
//! - From integer codes and scales that a quantization already chose
//!   (`*_from_codes`): the codes are stored as they are and each scale (and
//!   minimum) is rounded once to f16, so dequantizing gives
//!   `f16(scale) · code` (plus `f16(min)`) with no second rounding of codes.
//!
//! Block layouts (ggml's `block_q*` structs, little-endian):
//! `Q4_0 [d][qs: 16]`, `Q4_1 [d][m][qs: 16]`, `Q5_0 [d][qh: 4][qs: 16]`,
//! `Q5_1 [d][m][qh: 4][qs: 16]`, `Q8_0 [d][qs: 32 × i8]`, with `d` and `m`
//! f16. Nibble `j` of `qs` holds element `j` (low) and `j + 16` (high); bit
//! `j` of the little-endian u32 `qh` is the fifth bit of element `j`.

use super::float::f32_to_f16_bits;
use super::QuantizeError;
use crate::gguf::GgmlType;

/// Elements per block.
pub(super) const QK: usize = 32;

/// numpy's float → uint8/int8 cast (`astype`) of an already integral value,
/// as compiled for x86-64: truncate to i32, where NaN, infinities and values
/// out of i32 range become `i32::MIN`, then keep the low byte.
///
/// The quantizers only cast non-finite or out-of-range values when a block's
/// scale underflows f16 (its reciprocal overflows f32) or its range
/// overflows f32; the scale stored for such a block is then zero or
/// infinite, so the codes do not change what the block dequantizes to.
#[inline]
fn cast_byte(v: f32) -> u8 {
    let i = if v.is_finite() && (-2_147_483_648.0..2_147_483_648.0).contains(&v) {
        v as i32
    } else {
        i32::MIN
    };
    i as u8
}

/// The gguf package's `np_roundf`: round half away from zero, spelled as it
/// does so every intermediate is the same f32.
#[inline]
fn np_roundf(n: f32) -> f32 {
    let a = n.abs();
    let floored = a.floor();
    let b = floored + (2.0 * (a - floored)).floor();
    np_sign(n) * b
}

/// `np.sign`: -1, 0 (keeping the zero's sign) or 1; NaN stays NaN.
#[inline]
fn np_sign(n: f32) -> f32 {
    if n > 0.0 {
        1.0
    } else if n < 0.0 {
        -1.0
    } else {
        n
    }
}

/// `1 / d`, or 0 when `d` is zero (`np.where(d == 0, 0, 1 / d)`).
#[inline]
fn inverse(d: f32) -> f32 {
    if d == 0.0 {
        0.0
    } else {
        1.0 / d
    }
}

/// The element of largest magnitude, keeping its sign; the first one on
/// ties (`np.argmax` of `abs`, then `take_along_axis`).
#[inline]
fn signed_absmax(x: &[f32]) -> f32 {
    let mut best = x[0];
    for &v in &x[1..] {
        if v.abs() > best.abs() {
            best = v;
        }
    }
    best
}

/// Block minimum and maximum (`blocks.min(axis=-1)`, `blocks.max(axis=-1)`).
///
/// Only the sign of a zero extreme depends on which of several equal
/// elements is taken: this takes the last, which is what numpy's reduction
/// returns (checked on x86-64 with numpy 2.4 for blocks mixing +0 and −0).
#[inline]
fn min_max(x: &[f32]) -> (f32, f32) {
    let (mut lo, mut hi) = (x[0], x[0]);
    for &v in &x[1..] {
        if v <= lo {
            lo = v;
        }
        if v >= hi {
            hi = v;
        }
    }
    (lo, hi)
}

/// Packs 32 codes (each below 16 after masking) into 16 bytes: low nibbles
/// are elements 0-15, high nibbles 16-31.
#[inline]
fn pack_nibbles(q: &[u8; QK], out: &mut [u8]) {
    for j in 0..QK / 2 {
        out[j] = (q[j] & 0x0f) | (q[j + QK / 2] << 4);
    }
}

/// Bit 4 of each of 32 codes, as the little-endian u32 `qh`
/// (`np.packbits(q >> 4, bitorder="little")`).
#[inline]
fn pack_high_bits(q: &[u8; QK], out: &mut [u8]) {
    let mut qh = 0u32;
    for (j, &v) in q.iter().enumerate() {
        qh |= u32::from((v >> 4) != 0) << j;
    }
    out.copy_from_slice(&qh.to_le_bytes());
}

#[inline]
fn put_f16(out: &mut [u8], x: f32) {
    out.copy_from_slice(&f32_to_f16_bits(x).to_le_bytes());
}

/// Q4_0: `d = max / -8` (max the signed element of largest magnitude),
/// `q = trunc(x / d + 8.5)` clipped to 15.
pub(super) fn q4_0(values: &[f32], out: &mut [u8]) {
    for (x, b) in values.chunks_exact(QK).zip(out.chunks_exact_mut(18)) {
        let d = signed_absmax(x) / -8.0;
        let id = inverse(d);
        let mut q = [0u8; QK];
        for (q, &v) in q.iter_mut().zip(x) {
            *q = cast_byte((v * id + 8.5).trunc()).min(15);
        }
        put_f16(&mut b[0..2], d);
        pack_nibbles(&q, &mut b[2..18]);
    }
}

/// Q4_1: `d = (max - min) / 15`, `q = trunc((x - min) / d + 0.5)` clipped
/// to 15, minimum stored as `m`.
pub(super) fn q4_1(values: &[f32], out: &mut [u8]) {
    for (x, b) in values.chunks_exact(QK).zip(out.chunks_exact_mut(20)) {
        let (min, max) = min_max(x);
        let d = (max - min) / 15.0;
        let id = inverse(d);
        let mut q = [0u8; QK];
        for (q, &v) in q.iter_mut().zip(x) {
            *q = cast_byte(((v - min) * id + 0.5).trunc()).min(15);
        }
        put_f16(&mut b[0..2], d);
        put_f16(&mut b[2..4], min);
        pack_nibbles(&q, &mut b[4..20]);
    }
}

/// Q5_0: `d = max / -16`, `q = trunc(x / d + 16.5)` clipped to 31.
pub(super) fn q5_0(values: &[f32], out: &mut [u8]) {
    for (x, b) in values.chunks_exact(QK).zip(out.chunks_exact_mut(22)) {
        let d = signed_absmax(x) / -16.0;
        let id = inverse(d);
        let mut q = [0u8; QK];
        for (q, &v) in q.iter_mut().zip(x) {
            *q = cast_byte((v * id + 16.5).trunc()).min(31);
        }
        put_f16(&mut b[0..2], d);
        pack_high_bits(&q, &mut b[2..6]);
        pack_nibbles(&q, &mut b[6..22]);
    }
}

/// Q5_1: `d = (max - min) / 31`, `q = trunc((x - min) / d + 0.5)` clipped to 31.
pub(super) fn q5_1(values: &[f32], out: &mut [u8]) {
    for (x, b) in values.chunks_exact(QK).zip(out.chunks_exact_mut(24)) {
        let (min, max) = min_max(x);
        let d = (max - min) / 31.0;
        let id = inverse(d);
        let mut q = [0u8; QK];
        for (q, &v) in q.iter_mut().zip(x) {
            *q = cast_byte(((v - min) * id + 0.5).trunc()).min(31);
        }
        put_f16(&mut b[0..2], d);
        put_f16(&mut b[2..4], min);
        pack_high_bits(&q, &mut b[4..8]);
        pack_nibbles(&q, &mut b[8..24]);
    }
}

/// Q8_0: `d = max|x| / 127`, `q = roundf(x / d)` (ggml's reference
/// `quantize_row_q8_0_ref`).
pub(super) fn q8_0(values: &[f32], out: &mut [u8]) {
    for (x, b) in values.chunks_exact(QK).zip(out.chunks_exact_mut(34)) {
        let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = inverse(d);
        put_f16(&mut b[0..2], d);
        for (o, &v) in b[2..34].iter_mut().zip(x) {
            *o = cast_byte(np_roundf(v * id));
        }
    }
}

/// What one format's codes look like, for [`from_codes`].
struct CodeSpec {
    ty: GgmlType,
    /// Inclusive range of the codes.
    range: (i32, i32),
    /// Added to a code to get the stored unsigned value.
    offset: i32,
}

/// Checks codes, scales (and minimums) against `spec` and packs them with `pack`.
fn from_codes<C: Copy + Into<i32>>(
    spec: &CodeSpec,
    codes: &[C],
    scales: &[f32],
    mins: Option<&[f32]>,
    type_size: usize,
    pack: impl Fn(&[u8; QK], u16, u16, &mut [u8]),
) -> Result<Vec<u8>, QuantizeError> {
    let ty = spec.ty;
    if codes.len() != scales.len() * QK {
        return Err(QuantizeError::CodeCount {
            ty,
            codes: codes.len(),
            what: "scales",
            count: scales.len(),
        });
    }
    if let Some(mins) = mins {
        if mins.len() != scales.len() {
            return Err(QuantizeError::CodeCount {
                ty,
                codes: codes.len(),
                what: "minimums",
                count: mins.len(),
            });
        }
    }
    let f16_of = |what: &'static str, block: usize, x: f32| {
        let h = f32_to_f16_bits(x);
        if h & 0x7c00 == 0x7c00 {
            Err(QuantizeError::ScaleRange {
                ty,
                what,
                block,
                value: x,
            })
        } else {
            Ok(h)
        }
    };
    let mut out = vec![0u8; scales.len() * type_size];
    for (block, (c, b)) in codes
        .chunks_exact(QK)
        .zip(out.chunks_exact_mut(type_size))
        .enumerate()
    {
        let mut q = [0u8; QK];
        for (j, (q, &code)) in q.iter_mut().zip(c).enumerate() {
            let code: i32 = code.into();
            if code < spec.range.0 || code > spec.range.1 {
                return Err(QuantizeError::CodeRange {
                    ty,
                    index: block * QK + j,
                    code,
                    min: spec.range.0,
                    max: spec.range.1,
                });
            }
            // In range, so the stored value fits a byte (i8 for Q8_0, kept
            // as its two's-complement bits).
            *q = (code + spec.offset) as u8;
        }
        let d = f16_of("scale", block, scales[block])?;
        let m = match mins {
            Some(mins) => f16_of("minimum", block, mins[block])?,
            None => 0,
        };
        pack(&q, d, m, b);
    }
    Ok(out)
}

/// Q4_0 blocks holding `codes` (each in −8..=7) exactly, one scale per 32
/// codes: element `i` dequantizes to `f16(scales[i / 32]) · codes[i]`.
///
/// The scale is rounded to the nearest f16 (ties to even; see
/// [`super::f16_round`]); that product is exact in f32 (11 × 4 significant
/// bits), so it is the only rounding. A scale that is not finite or rounds
/// to an f16 infinity (|s| ≥ 65520) is an error.
pub fn q4_0_from_codes(codes: &[i8], scales: &[f32]) -> Result<Vec<u8>, QuantizeError> {
    let spec = CodeSpec {
        ty: GgmlType::Q4_0,
        range: (-8, 7),
        offset: 8,
    };
    from_codes(&spec, codes, scales, None, 18, |q, d, _, b| {
        b[0..2].copy_from_slice(&d.to_le_bytes());
        pack_nibbles(q, &mut b[2..18]);
    })
}

/// Q4_1 blocks holding `codes` (each in 0..=15) exactly, with one scale and
/// one minimum per 32 codes: element `i` dequantizes to
/// `f16(scales[b]) · codes[i] + f16(mins[b])` with `b = i / 32`, the product
/// exact and the sum rounded once in f32, as ggml computes it.
///
/// Scales and minimums are rounded to the nearest f16; values that are not
/// finite or round to an f16 infinity are errors.
pub fn q4_1_from_codes(
    codes: &[u8],
    scales: &[f32],
    mins: &[f32],
) -> Result<Vec<u8>, QuantizeError> {
    let spec = CodeSpec {
        ty: GgmlType::Q4_1,
        range: (0, 15),
        offset: 0,
    };
    from_codes(&spec, codes, scales, Some(mins), 20, |q, d, m, b| {
        b[0..2].copy_from_slice(&d.to_le_bytes());
        b[2..4].copy_from_slice(&m.to_le_bytes());
        pack_nibbles(q, &mut b[4..20]);
    })
}

/// Q5_0 blocks holding `codes` (each in −16..=15) exactly: element `i`
/// dequantizes to `f16(scales[i / 32]) · codes[i]`, exact in f32.
pub fn q5_0_from_codes(codes: &[i8], scales: &[f32]) -> Result<Vec<u8>, QuantizeError> {
    let spec = CodeSpec {
        ty: GgmlType::Q5_0,
        range: (-16, 15),
        offset: 16,
    };
    from_codes(&spec, codes, scales, None, 22, |q, d, _, b| {
        b[0..2].copy_from_slice(&d.to_le_bytes());
        pack_high_bits(q, &mut b[2..6]);
        pack_nibbles(q, &mut b[6..22]);
    })
}

/// Q5_1 blocks holding `codes` (each in 0..=31) exactly: element `i`
/// dequantizes to `f16(scales[b]) · codes[i] + f16(mins[b])`, `b = i / 32`.
pub fn q5_1_from_codes(
    codes: &[u8],
    scales: &[f32],
    mins: &[f32],
) -> Result<Vec<u8>, QuantizeError> {
    let spec = CodeSpec {
        ty: GgmlType::Q5_1,
        range: (0, 31),
        offset: 0,
    };
    from_codes(&spec, codes, scales, Some(mins), 24, |q, d, m, b| {
        b[0..2].copy_from_slice(&d.to_le_bytes());
        b[2..4].copy_from_slice(&m.to_le_bytes());
        pack_high_bits(q, &mut b[4..8]);
        pack_nibbles(q, &mut b[8..24]);
    })
}

/// Q8_0 blocks holding `codes` (any i8, −128 included) exactly: element `i`
/// dequantizes to `codes[i] · f16(scales[i / 32])`, exact in f32 (11 × 8
/// significant bits).
pub fn q8_0_from_codes(codes: &[i8], scales: &[f32]) -> Result<Vec<u8>, QuantizeError> {
    let spec = CodeSpec {
        ty: GgmlType::Q8_0,
        range: (-128, 127),
        offset: 0,
    };
    from_codes(&spec, codes, scales, None, 34, |q, d, _, b| {
        b[0..2].copy_from_slice(&d.to_le_bytes());
        b[2..34].copy_from_slice(q);
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn np_roundf_rounds_half_away_from_zero() {
        for (x, want) in [
            (0.5f32, 1.0f32),
            (-0.5, -1.0),
            (1.5, 2.0),
            (2.5, 3.0),
            (-2.5, -3.0),
            (0.49999997, 0.0),
            (126.5, 127.0),
            (-126.49999, -126.0),
        ] {
            assert_eq!(np_roundf(x), want, "{x}");
            // Agrees with Rust's round, which has the same tie rule.
            assert_eq!(np_roundf(x), x.round(), "{x}");
        }
    }

    #[test]
    fn cast_byte_keeps_the_low_byte() {
        // Values numpy 2.4 prints on x86-64 for
        // np.array([nan, inf, -inf, 300, -1, 1e10], np.float32).astype(np.int8 / np.uint8).
        assert_eq!(cast_byte(f32::NAN), 0);
        assert_eq!(cast_byte(f32::INFINITY), 0);
        assert_eq!(cast_byte(f32::NEG_INFINITY), 0);
        assert_eq!(cast_byte(300.0), 44);
        assert_eq!(cast_byte(-1.0), 255);
        assert_eq!(cast_byte(1e10), 0);
    }
}
