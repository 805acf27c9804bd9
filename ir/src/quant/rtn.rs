//! Round-to-nearest (RTN) quantization.
//!
//! Rules (docs/quant-formats.md, "Quantization"):
//! - codes round half away from zero (`f32::round`), then clamp to
//!   `[0, 2^bits - 1]`;
//! - symmetric: `s = max|w| / qmax` with `qmax = 2^(bits-1) - 1`, code
//!   `round(w / s) + 2^(bits-1)`;
//! - asymmetric: the group's range is widened to include 0, `s = (max - min)
//!   / (2^bits - 1)`, `z = round(-min / s)`, code `round(w / s) + z`;
//! - scales round toward zero to f16 and never go below [`MIN_SCALE`].
//!
//! Rounding scales down rather than to nearest keeps the extreme codes in
//! use, which is what makes re-quantizing a dequantized weight lossless.

use super::{PackedWeight, QuantError, QuantFormat};
use half::f16;

/// The smallest scale RTN stores: 2^-14, the smallest normal f16.
///
/// Keeping scales normal keeps their full 11-bit precision, which the error
/// bounds rely on. Groups whose `max|w| / qmax` (or range / `2^bits - 1`)
/// falls below it use it, and their codes then stay inside the range.
pub const MIN_SCALE: f16 = f16::MIN_POSITIVE;

// The symmetric bound |w - ŵ| ≤ s/2 relies on a scale rounded down by less
// than one f16 step (relative 2^-10) moving the largest value by less than
// half a code: qmax · 2^-10 < 1/2.
const _: () = {
    let bits = [3u32, 4, 8];
    let mut i = 0;
    while i < bits.len() {
        let qmax = (1u32 << (bits[i] - 1)) - 1;
        assert!(2 * qmax < 1024);
        i += 1;
    }
};

/// Columns gathered at once, so the row-major input is read in runs.
const COLUMN_CHUNK: usize = 16;

/// Most one-step reductions of an asymmetric scale; one always suffices
/// (see [`asymmetric_group`]), the bound only makes termination obvious.
const MAX_SCALE_STEPS: usize = 4;

/// Quantizes a row-major `[rows, cols]` (`[in, out]`) f32 weight with
/// round-to-nearest, groups running down each output column.
///
/// Deterministic: the same input gives the same bytes on every machine.
/// Fails when `w` does not hold `rows * cols` values, when a weight is not
/// finite, or when a group needs a scale beyond f16's range (65504).
pub fn quantize_rtn(
    w: &[f32],
    rows: usize,
    cols: usize,
    fmt: QuantFormat,
) -> Result<PackedWeight, QuantError> {
    let n = rows
        .checked_mul(cols)
        .ok_or(QuantError::TooLarge { rows, cols })?;
    if w.len() != n {
        return Err(QuantError::ShapeMismatch {
            rows,
            cols,
            actual: w.len(),
        });
    }
    if let Some(i) = w.iter().position(|v| !v.is_finite()) {
        return Err(QuantError::NonFinite {
            row: i / cols,
            col: i % cols,
            value: w[i],
        });
    }
    let groups = fmt.groups_per_column(rows);
    let mut codes = vec![0u8; n];
    let mut scales = Vec::with_capacity(cols * groups);
    let mut zeros = Vec::with_capacity(if fmt.symmetric() { 0 } else { cols * groups });
    let mut columns = vec![0.0f32; rows * COLUMN_CHUNK.min(cols)];
    for c0 in (0..cols).step_by(COLUMN_CHUNK) {
        let width = COLUMN_CHUNK.min(cols - c0);
        for r in 0..rows {
            for (k, &v) in w[r * cols + c0..r * cols + c0 + width].iter().enumerate() {
                columns[k * rows + r] = v;
            }
        }
        for k in 0..width {
            let c = c0 + k;
            let values = &columns[k * rows..(k + 1) * rows];
            let out = &mut codes[c * rows..(c + 1) * rows];
            let len = fmt.group_len(rows);
            for g in 0..groups {
                let span = g * len..((g + 1) * len).min(rows);
                let overflow = |range| QuantError::ScaleOverflow {
                    col: c,
                    group: g,
                    range,
                };
                let (s, z) = if fmt.symmetric() {
                    symmetric_group(&values[span.clone()], fmt).map_err(overflow)?
                } else {
                    let (s, z) = asymmetric_group(&values[span.clone()], fmt).map_err(overflow)?;
                    zeros.push(z);
                    (s, z)
                };
                scales.push(s);
                let (s, z, max) = (s.to_f32(), f32::from(z), f32::from(fmt.max_code()));
                for (q, &v) in out[span.clone()].iter_mut().zip(&values[span]) {
                    *q = ((v / s).round() + z).clamp(0.0, max) as u8;
                }
            }
        }
    }
    let zeros = (!fmt.symmetric()).then_some(zeros);
    PackedWeight::from_codes(fmt, rows, cols, &codes, scales, zeros)
}

/// Scale and (implicit) zero point of a symmetric group; `Err(max|w|)` when
/// the scale would overflow f16.
fn symmetric_group(values: &[f32], fmt: QuantFormat) -> Result<(f16, u8), f32> {
    let amax = values.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    group_params(-amax, amax, fmt)
}

/// Scale and zero point of an asymmetric group; `Err(max - min)` when the
/// scale would overflow f16.
fn asymmetric_group(values: &[f32], fmt: QuantFormat) -> Result<(f16, u8), f32> {
    let lo = values.iter().fold(0.0f32, |m, &v| m.min(v));
    let hi = values.iter().fold(0.0f32, |m, &v| m.max(v));
    group_params(lo, hi, fmt)
}

/// Round-to-nearest's scale and zero point for a group whose values span
/// `[lo, hi]`; `Err(max|w|)` (symmetric) or `Err(max - min)` (asymmetric)
/// when the scale would overflow f16. Calibrated quantizers that choose a
/// group's range themselves (clip search, GPTQ's static groups) call this so
/// their scales follow the same rules.
///
/// Asymmetric: the range is widened to include 0, which keeps 0 exactly
/// representable and the zero point inside the code range. With the scale
/// rounded down, `-min/s + max/s ≥ 2^bits - 1`, so the codes of the minimum
/// and the maximum are `0` and `2^bits - 1` (both ends of the code range in
/// use). Only f32 rounding of those quotients at a tie can leave the top
/// code one short; the scale then steps down one f16 value, which gains a
/// margin (relative 2^-11) far above f32 rounding.
pub fn group_params(lo: f32, hi: f32, fmt: QuantFormat) -> Result<(f16, u8), f32> {
    if fmt.symmetric() {
        let qmax = f32::from(fmt.symmetric_zero() - 1);
        let amax = lo.abs().max(hi.abs());
        let s = scale_at_most(amax / qmax).ok_or(amax)?;
        Ok((s, fmt.symmetric_zero()))
    } else {
        let (lo, hi) = (lo.min(0.0), hi.max(0.0));
        let range = hi - lo;
        let q = f32::from(fmt.max_code());
        let s = scale_at_most(range / q).ok_or(range)?;
        Ok(settle_asymmetric(lo, hi, q, s))
    }
}

/// The zero point for scale `s`, first stepping `s` down one f16 value at a
/// time while the top code `round(hi / s) + z` falls short of `q`.
fn settle_asymmetric(lo: f32, hi: f32, q: f32, mut s: f16) -> (f16, u8) {
    let mut steps = 0;
    loop {
        let sf = s.to_f32();
        let z = (-lo / sf).round().clamp(0.0, q);
        let top = (hi / sf).round() + z;
        if top >= q || s <= MIN_SCALE || steps == MAX_SCALE_STEPS {
            return (s, z as u8);
        }
        // s is a positive normal above MIN_SCALE, so this stays normal.
        s = f16::from_bits(s.to_bits() - 1);
        steps += 1;
    }
}

/// The largest f16 not above `x`, raised to [`MIN_SCALE`]; `None` when `x`
/// exceeds f16's range.
fn scale_at_most(x: f32) -> Option<f16> {
    if x.is_nan() || x > f16::MAX.to_f32() {
        return None;
    }
    let mut h = f16::from_f32(x);
    if h.to_f32() > x {
        // Rounded up to nearest: take the f16 just below (h > x ≥ 0).
        h = f16::from_bits(h.to_bits() - 1);
    }
    Some(if h < MIN_SCALE { MIN_SCALE } else { h })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The scale is the largest f16 not above its argument, checked against
    /// neighbouring f16 values.
    #[test]
    fn scales_round_toward_zero() {
        for x in [1.0f32, 0.1, 0.333_333_34, 1e-3, 7.0e-5, 65504.0, 12345.678] {
            let s = scale_at_most(x).unwrap();
            let next = f16::from_bits(s.to_bits() + 1);
            assert!(s.to_f32() <= x && next.to_f32() > x, "x {x}: s {s}");
        }
        assert_eq!(scale_at_most(0.0), Some(MIN_SCALE));
        assert_eq!(scale_at_most(1e-9), Some(MIN_SCALE));
        assert_eq!(scale_at_most(65520.0), None);
        assert_eq!(scale_at_most(f32::NAN), None);
    }

    /// A scale too large for the top code to reach 15 steps down until it
    /// does: from 1.0098 (f16 0x3C0A), 12.6 / s reaches 12.5 at s ≤ 1.008,
    /// two steps (0x3C08 = 1.0078125).
    #[test]
    fn asymmetric_scale_steps_down_until_the_top_code_is_used() {
        let start = f16::from_bits(0x3C0A);
        let (s, z) = settle_asymmetric(-2.4, 12.6, 15.0, start);
        assert_eq!((s.to_bits(), z), (0x3C08, 2));
        assert_eq!((12.6f32 / s.to_f32()).round() + 2.0, 15.0);
        // A fitting scale is kept.
        assert_eq!(settle_asymmetric(-2.4, 12.6, 15.0, f16::ONE), (f16::ONE, 2));
        // Never below the smallest scale.
        assert_eq!(settle_asymmetric(0.0, 0.0, 15.0, MIN_SCALE), (MIN_SCALE, 0));
    }
}
