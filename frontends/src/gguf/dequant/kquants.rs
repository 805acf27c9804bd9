//! The 256-element K-quant super-blocks: Q2_K, Q3_K, Q4_K, Q5_K, Q6_K.
//!
//! Each kernel mirrors `dequantize_blocks` of the gguf Python package
//! (`gguf/quants.py`) in f32: the per-sub-block scale is formed first
//! (`d * sc`, `dmin * m`), then `scale * q - min` or `scale * q`, with no
//! fused multiply-add, so results are bit-identical. Element `e` of a block
//! takes its bits from the byte and shift the numpy reshapes imply; those
//! index formulas are spelled out per kernel.

use super::float::f16_at;

const QK_K: usize = 256;

/// Q2_K: `[scales: 16][qs: 64][d: f16][dmin: f16]`; sub-block `g` (16
/// elements) has scale `d · (scales[g] & 15)` and minimum `dmin · (scales[g] >> 4)`;
/// element `e = 128 j + 32 s + l` is `(qs[32 j + l] >> 2 s) & 3`.
pub(super) fn q2_k(bytes: &[u8], out: &mut [f32]) {
    for (b, o) in bytes.chunks_exact(84).zip(out.chunks_exact_mut(QK_K)) {
        let (scales, qs) = (&b[0..16], &b[16..80]);
        let d = f16_at(b, 80);
        let dmin = f16_at(b, 82);
        let mut dl = [0f32; 16];
        let mut ml = [0f32; 16];
        for g in 0..16 {
            dl[g] = d * f32::from(scales[g] & 0x0f);
            ml[g] = dmin * f32::from(scales[g] >> 4);
        }
        for j in 0..2 {
            for s in 0..4 {
                for l in 0..32 {
                    let e = 128 * j + 32 * s + l;
                    let q = f32::from((qs[32 * j + l] >> (2 * s)) & 3);
                    o[e] = dl[e / 16] * q - ml[e / 16];
                }
            }
        }
    }
}

/// Q3_K: `[hmask: 32][qs: 64][scales: 12][d: f16]`; sixteen 6-bit signed
/// scales (low nibbles in bytes 0-7, high pairs in bytes 8-11, minus 32);
/// element `e = 128 j + 32 s + l` has low bits `(qs[32 j + l] >> 2 s) & 3`,
/// and 4 is subtracted when bit `4 j + s` of `hmask[l]` is clear.
pub(super) fn q3_k(bytes: &[u8], out: &mut [f32]) {
    for (b, o) in bytes.chunks_exact(110).zip(out.chunks_exact_mut(QK_K)) {
        let (hmask, qs, sc) = (&b[0..32], &b[32..96], &b[96..108]);
        let d = f16_at(b, 108);
        let mut dl = [0f32; 16];
        for (i, x) in dl.iter_mut().enumerate() {
            let lo = if i < 8 { sc[i] & 0x0f } else { sc[i - 8] >> 4 };
            let hi = (sc[8 + i % 4] >> (2 * (i / 4))) & 3;
            *x = d * f32::from((lo | (hi << 4)) as i8 - 32);
        }
        for j in 0..2 {
            for s in 0..4 {
                let bit = 4 * j + s;
                for l in 0..32 {
                    let e = 128 * j + 32 * s + l;
                    let ql = ((qs[32 * j + l] >> (2 * s)) & 3) as i8;
                    let qh = ((hmask[l] >> bit) & 1) ^ 1;
                    o[e] = dl[e / 16] * f32::from(ql - (qh << 2) as i8);
                }
            }
        }
    }
}

/// The eight 6-bit scales and minimums of Q4_K and Q5_K, packed in 12 bytes.
#[inline]
fn scale_min_k4(s: &[u8]) -> ([u8; 8], [u8; 8]) {
    let mut sc = [0u8; 8];
    let mut mn = [0u8; 8];
    for k in 0..4 {
        sc[k] = s[k] & 0x3f;
        mn[k] = s[k + 4] & 0x3f;
        sc[k + 4] = (s[k + 8] & 0x0f) | ((s[k] >> 2) & 0x30);
        mn[k + 4] = (s[k + 8] >> 4) | ((s[k + 4] >> 2) & 0x30);
    }
    (sc, mn)
}

/// Per-sub-block scale `d · sc` and minimum `dmin · m` of Q4_K and Q5_K.
#[inline]
fn sub_scales(b: &[u8]) -> ([f32; 8], [f32; 8]) {
    let d = f16_at(b, 0);
    let dmin = f16_at(b, 2);
    let (sc, mn) = scale_min_k4(&b[4..16]);
    (
        sc.map(|s| d * f32::from(s)),
        mn.map(|m| dmin * f32::from(m)),
    )
}

/// Q4_K: `[d: f16][dmin: f16][scales: 12][qs: 128]`; sub-block `k` (32
/// elements) is `(qs[32 (k / 2) + l] >> 4 (k % 2)) & 15`.
pub(super) fn q4_k(bytes: &[u8], out: &mut [f32]) {
    for (b, o) in bytes.chunks_exact(144).zip(out.chunks_exact_mut(QK_K)) {
        let (dk, mk) = sub_scales(b);
        let qs = &b[16..144];
        for k in 0..8 {
            let shift = 4 * (k % 2);
            for l in 0..32 {
                let q = f32::from((qs[32 * (k / 2) + l] >> shift) & 0x0f);
                o[32 * k + l] = dk[k] * q - mk[k];
            }
        }
    }
}

/// Q5_K: `[d: f16][dmin: f16][scales: 12][qh: 32][qs: 128]`; as Q4_K plus a
/// fifth bit, bit `k` of `qh[l]`.
pub(super) fn q5_k(bytes: &[u8], out: &mut [f32]) {
    for (b, o) in bytes.chunks_exact(176).zip(out.chunks_exact_mut(QK_K)) {
        let (dk, mk) = sub_scales(b);
        let (qh, qs) = (&b[16..48], &b[48..176]);
        for k in 0..8 {
            let shift = 4 * (k % 2);
            for l in 0..32 {
                let lo = (qs[32 * (k / 2) + l] >> shift) & 0x0f;
                let hi = (qh[l] >> k) & 1;
                o[32 * k + l] = dk[k] * f32::from(lo | (hi << 4)) - mk[k];
            }
        }
    }
}

/// Q6_K: `[ql: 128][qh: 64][scales: 16 × i8][d: f16]`; element
/// `e = 128 j + r` takes its low nibble from `ql[64 j + r % 64] >> 4 (r / 64)`
/// and its top two bits from `qh[32 j + r % 32] >> 2 (r / 32)`, minus 32;
/// sub-block `e / 16` has scale `d · scales[e / 16]`.
pub(super) fn q6_k(bytes: &[u8], out: &mut [f32]) {
    for (b, o) in bytes.chunks_exact(210).zip(out.chunks_exact_mut(QK_K)) {
        let (ql, qh, scales) = (&b[0..128], &b[128..192], &b[192..208]);
        let d = f16_at(b, 208);
        let mut dl = [0f32; 16];
        for (x, &s) in dl.iter_mut().zip(scales) {
            *x = d * f32::from(s as i8);
        }
        for j in 0..2 {
            for r in 0..128 {
                let lo = (ql[64 * j + r % 64] >> (4 * (r / 64))) & 0x0f;
                let hi = (qh[32 * j + r % 32] >> (2 * (r / 32))) & 3;
                let e = 128 * j + r;
                o[e] = dl[e / 16] * f32::from((lo | (hi << 4)) as i8 - 32);
            }
        }
    }
}
