//! Plain float types: F32, F16, BF16, and the f16 conversion the block
//! formats use for their scales.

/// Widens IEEE half-precision bits to f32 exactly.
///
/// NaN payloads are kept as they are (a signalling NaN stays signalling), as
/// numpy's `float16` → `float32` cast does; hardware conversions
/// (F16C) would quiet them, and `half` may use those.
#[inline]
pub(crate) fn f16_to_f32(h: u16) -> f32 {
    let sign = u32::from(h & 0x8000) << 16;
    let exp = u32::from((h >> 10) & 0x1f);
    let man = u32::from(h & 0x3ff);
    let bits = match exp {
        0 if man == 0 => sign,
        0 => {
            // Subnormal: shift the leading one into the implicit-bit place.
            let lz = man.leading_zeros();
            let shift = lz - 21;
            sign | ((134 - lz) << 23) | (((man << shift) & 0x3ff) << 13)
        }
        31 => sign | 0x7f80_0000 | (man << 13),
        _ => sign | ((exp + 112) << 23) | (man << 13),
    };
    f32::from_bits(bits)
}

/// Reads the little-endian f16 at `b[i..i + 2]` as f32.
#[inline]
pub(crate) fn f16_at(b: &[u8], i: usize) -> f32 {
    f16_to_f32(u16::from_le_bytes([b[i], b[i + 1]]))
}

/// F32: the bits as stored.
pub(super) fn f32s(bytes: &[u8], out: &mut [f32]) {
    for (o, b) in out.iter_mut().zip(bytes.chunks_exact(4)) {
        *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    }
}

/// F16: exact widening.
pub(super) fn f16s(bytes: &[u8], out: &mut [f32]) {
    for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        *o = f16_to_f32(u16::from_le_bytes([b[0], b[1]]));
    }
}

/// BF16: the upper half of an f32 (numpy: `int16 → int32 << 16`, a pure bit move).
pub(super) fn bf16s(bytes: &[u8], out: &mut [f32]) {
    for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        *o = f32::from_bits(u32::from(u16::from_le_bytes([b[0], b[1]])) << 16);
    }
}

#[cfg(test)]
mod tests {
    use super::f16_to_f32;

    #[test]
    fn f16_widening_matches_half_for_non_nan() {
        for h in 0..=u16::MAX {
            let want = half::f16::from_bits(h).to_f32();
            if want.is_nan() {
                continue;
            }
            assert_eq!(f16_to_f32(h).to_bits(), want.to_bits(), "{h:#06x}");
        }
    }

    #[test]
    fn f16_nan_payloads_are_kept() {
        // Bit patterns printed by numpy 2.4: np.array([h], np.uint16)
        // .view(np.float16).astype(np.float32).view(np.uint32).
        for (h, want) in [
            (0x7c01u16, 0x7f80_2000u32),
            (0x7e01, 0x7fc0_2000),
            (0xfc01, 0xff80_2000),
        ] {
            assert_eq!(f16_to_f32(h).to_bits(), want, "{h:#06x}");
        }
    }
}
