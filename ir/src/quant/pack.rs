//! Bit packing of quantization codes into whole bytes.
//!
//! Codes are packed least significant bits first: int8 one code per byte,
//! int4 two codes per byte (low nibble first), int3 eight codes per three
//! bytes, read as one little-endian 24-bit word whose bits `3i..3i+3` hold
//! code `i`. A run of codes is padded with zero bits to a whole block.

use super::format::GROUP_SIZES;

/// How codes of one bit width are laid out in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Packing {
    /// Bits per code.
    pub bits: u32,
    /// Codes in one packed block.
    pub codes_per_block: usize,
    /// Bytes of one packed block.
    pub bytes_per_block: usize,
}

/// One code per byte.
pub(crate) const INT8: Packing = Packing {
    bits: 8,
    codes_per_block: 1,
    bytes_per_block: 1,
};

/// Two codes per byte, low nibble first.
pub(crate) const INT4: Packing = Packing {
    bits: 4,
    codes_per_block: 2,
    bytes_per_block: 1,
};

/// Eight codes in a little-endian 24-bit word.
pub(crate) const INT3: Packing = Packing {
    bits: 3,
    codes_per_block: 8,
    bytes_per_block: 3,
};

// The layout's promises, checked when the crate compiles.
const _: () = {
    let all = [INT8, INT4, INT3];
    let mut i = 0;
    while i < all.len() {
        let p = all[i];
        // A block is a whole number of bytes with no spare bits, so packed
        // sizes are exact and no code straddles two blocks.
        assert!(p.codes_per_block * p.bits as usize == p.bytes_per_block * 8);
        // Unpacked codes and zero points are bytes.
        assert!(p.bits <= 8);
        // A block decodes from one u32 load.
        assert!(p.bytes_per_block <= 4);
        // Every group is whole blocks, so each group of a column starts on a
        // byte boundary and only a column's last block carries padding.
        let mut g = 0;
        while g < GROUP_SIZES.len() {
            assert!(GROUP_SIZES[g].is_multiple_of(p.codes_per_block));
            g += 1;
        }
        i += 1;
    }
    assert!(INT3.codes_per_block == 8 && INT3.bytes_per_block == 3);
    assert!(INT4.codes_per_block == 2 && INT4.bytes_per_block == 1);
    // Scales are stored as 2-byte f16 values.
    assert!(std::mem::size_of::<half::f16>() == 2);
};

impl Packing {
    /// The packing of `bits`-bit codes (3, 4 or 8).
    pub(crate) const fn for_bits(bits: u8) -> Option<Packing> {
        match bits {
            8 => Some(INT8),
            4 => Some(INT4),
            3 => Some(INT3),
            _ => None,
        }
    }

    /// Bytes holding `n` codes, padded to a whole block.
    pub(crate) const fn bytes_for(self, n: usize) -> usize {
        n.div_ceil(self.codes_per_block) * self.bytes_per_block
    }

    fn mask(self) -> u32 {
        (1u32 << self.bits) - 1
    }

    /// Packs `codes` into `out` (`bytes_for(codes.len())` bytes); padding
    /// bits are zero. Bits of a code above the width are dropped.
    pub(crate) fn pack(self, codes: &[u8], out: &mut [u8]) {
        debug_assert_eq!(out.len(), self.bytes_for(codes.len()));
        let mask = self.mask();
        for (block, chunk) in out
            .chunks_exact_mut(self.bytes_per_block)
            .zip(codes.chunks(self.codes_per_block))
        {
            let word = chunk.iter().enumerate().fold(0u32, |w, (i, &c)| {
                w | ((c as u32 & mask) << (i as u32 * self.bits))
            });
            block.copy_from_slice(&word.to_le_bytes()[..self.bytes_per_block]);
        }
    }

    /// Unpacks `out.len()` codes from `bytes`.
    pub(crate) fn unpack(self, bytes: &[u8], out: &mut [u8]) {
        debug_assert!(bytes.len() >= self.bytes_for(out.len()));
        let mask = self.mask();
        for (chunk, block) in out
            .chunks_mut(self.codes_per_block)
            .zip(bytes.chunks_exact(self.bytes_per_block))
        {
            let mut le = [0u8; 4];
            le[..self.bytes_per_block].copy_from_slice(block);
            let word = u32::from_le_bytes(le);
            for (i, c) in chunk.iter_mut().enumerate() {
                *c = ((word >> (i as u32 * self.bits)) & mask) as u8;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every code value at every position of a block (and of a padded
    /// partial block) survives pack then unpack, and neighbours are left
    /// untouched.
    #[test]
    fn pack_unpack_round_trip_is_exhaustive() {
        for p in [INT8, INT4, INT3] {
            let max = p.mask() as u8;
            for n in 1..=3 * p.codes_per_block {
                for pos in 0..n {
                    for value in 0..=max {
                        // Neighbours hold the complement so crosstalk shows.
                        let mut codes = vec![max - value; n];
                        codes[pos] = value;
                        let mut bytes = vec![0u8; p.bytes_for(n)];
                        p.pack(&codes, &mut bytes);
                        let mut back = vec![0u8; n];
                        p.unpack(&bytes, &mut back);
                        assert_eq!(
                            back, codes,
                            "{} bits, n {n}, pos {pos}, value {value}",
                            p.bits
                        );
                    }
                }
            }
        }
    }

    /// Padding codes of a partial block are zero bits.
    #[test]
    fn padding_is_zero() {
        for p in [INT4, INT3] {
            let n = p.codes_per_block + 1;
            let codes = vec![p.mask() as u8; n];
            let mut bytes = vec![0xAAu8; p.bytes_for(n)];
            p.pack(&codes, &mut bytes);
            let mut all = vec![0u8; 2 * p.codes_per_block];
            p.unpack(&bytes, &mut all);
            assert!(all[n..].iter().all(|&c| c == 0), "{} bits: {all:?}", p.bits);
        }
    }

    /// Byte images checked by hand against the documented bit order
    /// (docs/quant-formats.md).
    #[test]
    fn bit_order_matches_the_documented_layout() {
        let mut b = [0u8; 1];
        INT4.pack(&[0x3, 0xC], &mut b);
        // Code 0 in the low nibble, code 1 in the high nibble.
        assert_eq!(b, [0xC3]);

        // Codes 0..8 in one 24-bit word: sum of i << 3i = 0xFAC688.
        let mut b = [0u8; 3];
        INT3.pack(&[0, 1, 2, 3, 4, 5, 6, 7], &mut b);
        assert_eq!(b, [0x88, 0xC6, 0xFA]);

        // Code 2 straddles bytes 0 and 1: bits 6..8 of byte 0, bit 0 of byte 1.
        INT3.pack(&[0, 0, 0b101, 0, 0, 0, 0, 0], &mut b);
        assert_eq!(b, [0b0100_0000, 0b0000_0001, 0]);
        // Code 5 straddles bytes 1 and 2: bits 7 of byte 1, bits 0..2 of byte 2.
        INT3.pack(&[0, 0, 0, 0, 0, 0b111, 0, 0], &mut b);
        assert_eq!(b, [0, 0b1000_0000, 0b0000_0011]);
    }
}
