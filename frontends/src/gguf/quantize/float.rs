//! Plain float types: F32, F16, BF16, and the f32 → f16 rounding the block
//! formats use for their scales.

/// Narrows f32 to IEEE half-precision bits, rounding to nearest even.
///
/// Overflow (|x| ≥ 65520) gives a signed infinity and tiny values a signed
/// zero or subnormal, as IEEE rounding does. NaNs follow numpy's software
/// conversion (`npy_floatbits_to_halfbits`), which the gguf package's
/// `astype(np.float16)` uses: the top ten payload bits are kept as they are
/// (a signalling NaN stays signalling) and a payload that would vanish
/// becomes 1, so the result is still a NaN. Hardware conversions (F16C)
/// would quiet the NaN instead; doing it in software keeps the written bytes
/// the same on every machine.
#[inline]
pub(crate) fn f32_to_f16_bits(x: f32) -> u16 {
    let f = x.to_bits();
    let sign = ((f >> 16) & 0x8000) as u16;
    let exp = (f >> 23) & 0xff;
    let man = f & 0x007f_ffff;
    if exp == 0xff {
        if man == 0 {
            return sign | 0x7c00;
        }
        let h = 0x7c00 | (man >> 13) as u16;
        return sign | if h == 0x7c00 { 0x7c01 } else { h };
    }
    // Half exponents are biased by 15, single ones by 127: a half exponent
    // field of 31 (infinity) corresponds to a single exponent field of 143.
    if exp >= 143 {
        return sign | 0x7c00;
    }
    // Normal halves need an exponent field of at least 113 (2^-14).
    if exp >= 113 {
        let mut v = ((exp - 112) << 10) | (man >> 13);
        let rest = man & 0x1fff;
        // A carry out of the significand bumps the exponent, up to infinity
        // (0x7c00), which is the correctly rounded result.
        if rest > 0x1000 || (rest == 0x1000 && v & 1 == 1) {
            v += 1;
        }
        return sign | v as u16;
    }
    // Below 2^-25 everything rounds to zero (2^-25 itself is a tie, to even zero).
    if exp < 102 {
        return sign;
    }
    // Subnormal half: count units of 2^-24. The significand with its
    // implicit bit is `m · 2^(exp − 150)`, so the unit count is `m >> (126 − exp)`.
    let m = man | 0x0080_0000;
    let shift = 126 - exp; // 14..=24
    let mut v = m >> shift;
    let rest = m & ((1 << shift) - 1);
    let halfway = 1 << (shift - 1);
    if rest > halfway || (rest == halfway && v & 1 == 1) {
        v += 1;
    }
    sign | v as u16
}

/// F32: the bits as they are.
pub(super) fn f32s(values: &[f32], out: &mut [u8]) {
    for (o, v) in out.chunks_exact_mut(4).zip(values) {
        o.copy_from_slice(&v.to_le_bytes());
    }
}

/// F16: `astype(np.float16)`.
pub(super) fn f16s(values: &[f32], out: &mut [u8]) {
    for (o, v) in out.chunks_exact_mut(2).zip(values) {
        o.copy_from_slice(&f32_to_f16_bits(*v).to_le_bytes());
    }
}

/// BF16 as the gguf package's `BF16.quantize_blocks` (and ggml's
/// `ggml_compute_fp32_to_bf16`): NaNs are forced quiet, everything else is
/// rounded to nearest even on the upper 16 bits, in 64-bit arithmetic so
/// the rounding carry cannot wrap.
pub(super) fn bf16s(values: &[f32], out: &mut [u8]) {
    for (o, v) in out.chunks_exact_mut(2).zip(values) {
        let mut n = v.to_bits();
        if n & 0x7fff_ffff > 0x7f80_0000 {
            n = (n & 0xffff_0000) | (64 << 16);
        }
        let rounded = (u64::from(n) + u64::from(0x7fff + ((n >> 16) & 1))) >> 16;
        // numpy's `astype(np.uint16)` keeps the low 16 bits.
        o.copy_from_slice(&(rounded as u16).to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::f32_to_f16_bits;

    #[test]
    fn f16_narrowing_matches_half_for_non_nan() {
        // Every 61st pattern covers all exponents and many rounding cases;
        // the boundaries are added explicitly.
        let boundaries = [
            0x3380_0000u32, // 2^-24
            0x3300_0000,    // 2^-25: a tie to zero
            0x3300_0001,
            0x3880_0000, // 2^-14, smallest normal half
            0x387f_e000, // largest subnormal half + half a unit
            0x477f_e000, // 65504
            0x477f_efff, // just below the overflow threshold
            0x477f_f000, // 65520: ties away from 65504, to infinity
            0x7f80_0000,
        ];
        let patterns = (0..=u32::MAX)
            .step_by(61)
            .chain(boundaries.iter().copied())
            .chain(boundaries.iter().map(|b| b | 0x8000_0000));
        for bits in patterns {
            let x = f32::from_bits(bits);
            if x.is_nan() {
                continue;
            }
            let want = half::f16::from_f32(x).to_bits();
            assert_eq!(f32_to_f16_bits(x), want, "{bits:#010x} ({x:e})");
        }
    }

    #[test]
    fn f16_nan_payloads_follow_numpy() {
        // Printed by numpy 2.4: np.array([b], np.uint32).view(np.float32)
        // .astype(np.float16).view(np.uint16).
        for (bits, want) in [
            (0x7f80_0001u32, 0x7c01u16),
            (0x7fc0_0000, 0x7e00),
            (0xffc0_0001, 0xfe00),
            (0x7f80_2000, 0x7c01),
            (0x7fa0_0000, 0x7d00),
        ] {
            assert_eq!(f32_to_f16_bits(f32::from_bits(bits)), want, "{bits:#010x}");
        }
    }
}
