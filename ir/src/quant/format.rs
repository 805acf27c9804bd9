//! Quantization formats (`w8`, `w4g64`, `w3g128a`, ...) and their storage cost.

use super::pack::Packing;
use super::QuantError;
use std::fmt;
use std::str::FromStr;

/// Group sizes (input rows sharing one scale) a format may use.
pub const GROUP_SIZES: [usize; 3] = [32, 64, 128];

/// Bit widths a format may use.
const BITS: [u8; 3] = [3, 4, 8];

/// A packed weight format: code width, group size along the input
/// dimension, and whether groups carry a zero point.
///
/// Every value is valid: the constructor and the parser reject the rest.
/// Written `w<bits>[g<group>][a]`: `w8` (one scale per output column,
/// symmetric), `w4g64` (groups of 64 input rows), `w4g64a` (asymmetric, with
/// zero points).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QuantFormat {
    bits: u8,
    group: Option<usize>,
    symmetric: bool,
}

impl QuantFormat {
    /// A format of `bits` (3, 4 or 8) bit codes, `group` input rows per scale
    /// (32, 64 or 128; `None` for one scale per output column).
    pub fn new(bits: u8, group: Option<usize>, symmetric: bool) -> Result<Self, QuantError> {
        if !BITS.contains(&bits) {
            return Err(QuantError::UnsupportedBits(bits));
        }
        if let Some(g) = group {
            if !GROUP_SIZES.contains(&g) {
                return Err(QuantError::UnsupportedGroup(g));
            }
        }
        Ok(QuantFormat {
            bits,
            group,
            symmetric,
        })
    }

    /// Parses `w<bits>[g<group>][a]`, the form [`fmt::Display`] prints.
    ///
    /// Numbers are plain decimal without leading zeros, so every format has
    /// exactly one spelling.
    pub fn parse(text: &str) -> Result<Self, QuantError> {
        let err = |reason: String| QuantError::Parse {
            text: text.to_owned(),
            reason,
        };
        let rest = text
            .strip_prefix('w')
            .ok_or_else(|| err("it must start with `w`".into()))?;
        let (rest, symmetric) = match rest.strip_suffix('a') {
            Some(r) => (r, false),
            None => (rest, true),
        };
        let (bits, group) = match rest.split_once('g') {
            Some((b, g)) => (b, Some(g)),
            None => (rest, None),
        };
        let bits = decimal(bits).ok_or_else(|| {
            err(format!(
                "`{bits}` is not a bit width (a decimal number without leading zeros)"
            ))
        })?;
        let bits = u8::try_from(bits).map_err(|_| {
            err(format!(
                "unsupported quantization width of {bits} bits (expected 3, 4 or 8)"
            ))
        })?;
        let group = match group {
            Some(g) => Some(decimal(g).ok_or_else(|| {
                err(format!(
                    "`{g}` is not a group size (a decimal number without leading zeros)"
                ))
            })?),
            None => None,
        };
        QuantFormat::new(bits, group, symmetric).map_err(|e| err(e.to_string()))
    }

    /// Every valid format, narrowest codes first.
    pub fn all() -> Vec<QuantFormat> {
        let mut out = Vec::new();
        for bits in BITS {
            for group in std::iter::once(None).chain(GROUP_SIZES.map(Some)) {
                for symmetric in [true, false] {
                    out.push(QuantFormat {
                        bits,
                        group,
                        symmetric,
                    });
                }
            }
        }
        out
    }

    /// Bits per code: 3, 4 or 8.
    pub fn bits(self) -> u8 {
        self.bits
    }

    /// Input rows per scale; `None` means one scale per output column.
    pub fn group(self) -> Option<usize> {
        self.group
    }

    /// True when codes are centred on zero and groups carry no zero point.
    pub fn symmetric(self) -> bool {
        self.symmetric
    }

    /// The largest code, `2^bits - 1`.
    pub fn max_code(self) -> u8 {
        ((1u16 << self.bits) - 1) as u8
    }

    /// The implicit zero point of symmetric formats, `2^(bits-1)`.
    pub fn symmetric_zero(self) -> u8 {
        1u8 << (self.bits - 1)
    }

    /// Input rows of a full group for a matrix of `rows` input rows (the
    /// whole column when the format has no group). The last group of a column
    /// is shorter when the group does not divide `rows`.
    pub fn group_len(self, rows: usize) -> usize {
        self.group.unwrap_or(rows).max(1)
    }

    /// Groups (scales) per output column.
    pub fn groups_per_column(self, rows: usize) -> usize {
        rows.div_ceil(self.group_len(rows))
    }

    /// Bytes of packed codes per output column, padded to a whole block.
    pub fn column_stride(self, rows: usize) -> usize {
        self.packing().bytes_for(rows)
    }

    pub(crate) fn packing(self) -> Packing {
        match Packing::for_bits(self.bits) {
            Some(p) => p,
            // The constructor admits only widths that have a packing.
            None => unreachable!("QuantFormat with {} bits", self.bits),
        }
    }
}

/// A decimal number without sign or leading zeros.
fn decimal(text: &str) -> Option<usize> {
    let canonical = !text.is_empty()
        && text.bytes().all(|b| b.is_ascii_digit())
        && (text == "0" || !text.starts_with('0'));
    canonical.then(|| text.parse().ok()).flatten()
}

impl fmt::Display for QuantFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "w{}", self.bits)?;
        if let Some(g) = self.group {
            write!(f, "g{g}")?;
        }
        if !self.symmetric {
            f.write_str("a")?;
        }
        Ok(())
    }
}

impl FromStr for QuantFormat {
    type Err = QuantError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        QuantFormat::parse(s)
    }
}

/// Total bytes of a packed `[rows, cols]` weight: codes, 2 bytes per f16
/// scale and, for asymmetric formats, 1 byte per zero point.
///
/// Equals [`PackedWeight::byte_len`](super::PackedWeight::byte_len) of every
/// weight of that shape and format.
pub fn packed_bytes(rows: usize, cols: usize, fmt: QuantFormat) -> usize {
    let groups = cols * fmt.groups_per_column(rows);
    let zero_bytes = if fmt.symmetric { 0 } else { groups };
    cols * fmt.column_stride(rows) + 2 * groups + zero_bytes
}

/// Storage bits per weight of a packed `[rows, cols]` weight, scales, zero
/// points and padding included (0 for an empty matrix).
pub fn bits_per_weight(rows: usize, cols: usize, fmt: QuantFormat) -> f64 {
    let weights = rows * cols;
    if weights == 0 {
        return 0.0;
    }
    8.0 * packed_bytes(rows, cols, fmt) as f64 / weights as f64
}

impl serde::Serialize for QuantFormat {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for QuantFormat {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        QuantFormat::parse(&text).map_err(serde::de::Error::custom)
    }
}
