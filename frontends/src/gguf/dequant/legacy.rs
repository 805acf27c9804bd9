//! The 32-element block formats: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0.
//!
//! Each kernel mirrors `dequantize_blocks` of the gguf Python package
//! (`gguf/quants.py`) operation by operation in f32, so results are
//! bit-identical: `d * q` for the symmetric formats, `(d * q) + m` for the
//! ones with a minimum, never a fused multiply-add. Nibble order: the low
//! nibbles of the 16 packed bytes are elements 0-15, the high ones 16-31.

use super::float::f16_at;

const QK: usize = 32;

/// Q4_0: `[d: f16][qs: 16 × u8]`, x = d · (nibble − 8).
pub(super) fn q4_0(bytes: &[u8], out: &mut [f32]) {
    for (b, o) in bytes.chunks_exact(18).zip(out.chunks_exact_mut(QK)) {
        let d = f16_at(b, 0);
        let qs = &b[2..18];
        for j in 0..16 {
            o[j] = d * f32::from((qs[j] & 0x0f) as i8 - 8);
            o[j + 16] = d * f32::from((qs[j] >> 4) as i8 - 8);
        }
    }
}

/// Q4_1: `[d: f16][m: f16][qs: 16 × u8]`, x = d · nibble + m.
pub(super) fn q4_1(bytes: &[u8], out: &mut [f32]) {
    for (b, o) in bytes.chunks_exact(20).zip(out.chunks_exact_mut(QK)) {
        let d = f16_at(b, 0);
        let m = f16_at(b, 2);
        let qs = &b[4..20];
        for j in 0..16 {
            o[j] = d * f32::from(qs[j] & 0x0f) + m;
            o[j + 16] = d * f32::from(qs[j] >> 4) + m;
        }
    }
}

/// The fifth bits of Q5 blocks: bit `i` of the little-endian u32 is element `i`'s.
#[inline]
fn high_bit(qh: u32, i: usize) -> u8 {
    ((qh >> i) & 1) as u8
}

/// Q5_0: `[d: f16][qh: u32][qs: 16 × u8]`, x = d · (q − 16).
pub(super) fn q5_0(bytes: &[u8], out: &mut [f32]) {
    for (b, o) in bytes.chunks_exact(22).zip(out.chunks_exact_mut(QK)) {
        let d = f16_at(b, 0);
        let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
        let qs = &b[6..22];
        for j in 0..16 {
            let lo = (qs[j] & 0x0f) | (high_bit(qh, j) << 4);
            let hi = (qs[j] >> 4) | (high_bit(qh, j + 16) << 4);
            o[j] = d * f32::from(lo as i8 - 16);
            o[j + 16] = d * f32::from(hi as i8 - 16);
        }
    }
}

/// Q5_1: `[d: f16][m: f16][qh: u32][qs: 16 × u8]`, x = d · q + m.
pub(super) fn q5_1(bytes: &[u8], out: &mut [f32]) {
    for (b, o) in bytes.chunks_exact(24).zip(out.chunks_exact_mut(QK)) {
        let d = f16_at(b, 0);
        let m = f16_at(b, 2);
        let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
        let qs = &b[8..24];
        for j in 0..16 {
            let lo = (qs[j] & 0x0f) | (high_bit(qh, j) << 4);
            let hi = (qs[j] >> 4) | (high_bit(qh, j + 16) << 4);
            o[j] = d * f32::from(lo) + m;
            o[j + 16] = d * f32::from(hi) + m;
        }
    }
}

/// Q8_0: `[d: f16][qs: 32 × i8]`, x = q · d.
pub(super) fn q8_0(bytes: &[u8], out: &mut [f32]) {
    for (b, o) in bytes.chunks_exact(34).zip(out.chunks_exact_mut(QK)) {
        let d = f16_at(b, 0);
        for (x, &q) in o.iter_mut().zip(&b[2..34]) {
            *x = f32::from(q as i8) * d;
        }
    }
}
