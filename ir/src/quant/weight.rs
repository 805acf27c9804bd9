//! The packed weight and its scalar reference decoders.

use super::{QuantError, QuantFormat};
use half::f16;
use std::fmt;
use std::ops::Range;

/// A quantized `[rows, cols]` (`[in, out]`) weight in packed form.
///
/// Layout (docs/quant-formats.md): output column `c` owns bytes
/// `c * stride .. (c + 1) * stride` of [`data`](Self::data), where `stride`
/// is [`QuantFormat::column_stride`]; inside, its `rows` codes run along the
/// input dimension, packed by the format's width. Group `g` of column `c`
/// covers input rows `g * group_len .. min((g + 1) * group_len, rows)`; its
/// scale is `scales[c * groups + g]` and, for asymmetric formats, its zero
/// point `zeros[c * groups + g]` (one byte each, unpacked).
///
/// The parts are validated on construction, so decoding never fails.
#[derive(Clone, PartialEq)]
pub struct PackedWeight {
    format: QuantFormat,
    rows: usize,
    cols: usize,
    data: Vec<u8>,
    scales: Vec<f16>,
    zeros: Option<Vec<u8>>,
}

impl PackedWeight {
    /// Assembles a packed weight from its stored parts, checking their sizes,
    /// that zero points are present exactly for asymmetric formats and fit
    /// the code width, and that scales are finite. Padding bits are not
    /// checked; decoders ignore them.
    pub fn from_parts(
        format: QuantFormat,
        rows: usize,
        cols: usize,
        data: Vec<u8>,
        scales: Vec<f16>,
        zeros: Option<Vec<u8>>,
    ) -> Result<Self, QuantError> {
        let len_err = |part, expected, actual| QuantError::PartLength {
            format,
            rows,
            cols,
            part,
            expected,
            actual,
        };
        let data_len = cols
            .checked_mul(format.column_stride(rows))
            .ok_or(QuantError::TooLarge { rows, cols })?;
        if data.len() != data_len {
            return Err(len_err("data", data_len, data.len()));
        }
        let groups = format.groups_per_column(rows);
        let group_count = cols * groups;
        if scales.len() != group_count {
            return Err(len_err("scales", group_count, scales.len()));
        }
        if let Some(i) = scales.iter().position(|s| !s.is_finite()) {
            return Err(QuantError::NonFiniteScale {
                col: i / groups,
                group: i % groups,
                value: scales[i].to_f32(),
            });
        }
        match (&zeros, format.symmetric()) {
            (None, true) => {}
            (Some(z), false) => {
                if z.len() != group_count {
                    return Err(len_err("zeros", group_count, z.len()));
                }
                if let Some(i) = z.iter().position(|&v| v > format.max_code()) {
                    return Err(QuantError::ZeroRange {
                        col: i / groups,
                        group: i % groups,
                        value: z[i],
                        bits: format.bits(),
                    });
                }
            }
            _ => return Err(QuantError::ZerosPresence { format }),
        }
        Ok(PackedWeight {
            format,
            rows,
            cols,
            data,
            scales,
            zeros,
        })
    }

    /// Packs unpacked codes (output-major: `codes[c * rows + r]` is input
    /// row `r` of output column `c`, one code per byte) with their scales and
    /// zero points, as a quantizer that chooses its own codes (GPTQ, AWQ)
    /// produces them.
    pub fn from_codes(
        format: QuantFormat,
        rows: usize,
        cols: usize,
        codes: &[u8],
        scales: Vec<f16>,
        zeros: Option<Vec<u8>>,
    ) -> Result<Self, QuantError> {
        let n = rows
            .checked_mul(cols)
            .ok_or(QuantError::TooLarge { rows, cols })?;
        if codes.len() != n {
            return Err(QuantError::PartLength {
                format,
                rows,
                cols,
                part: "codes",
                expected: n,
                actual: codes.len(),
            });
        }
        if let Some(i) = codes.iter().position(|&c| c > format.max_code()) {
            return Err(QuantError::CodeRange {
                col: i / rows,
                row: i % rows,
                value: codes[i],
                bits: format.bits(),
            });
        }
        let stride = format.column_stride(rows);
        let len = cols
            .checked_mul(stride)
            .ok_or(QuantError::TooLarge { rows, cols })?;
        let mut data = vec![0u8; len];
        if rows > 0 {
            for (column, out) in codes.chunks_exact(rows).zip(data.chunks_exact_mut(stride)) {
                format.packing().pack(column, out);
            }
        }
        PackedWeight::from_parts(format, rows, cols, data, scales, zeros)
    }

    /// The format.
    pub fn format(&self) -> QuantFormat {
        self.format
    }

    /// Input dimension (rows of the `[in, out]` matrix).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Output dimension (columns of the `[in, out]` matrix).
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The packed codes of every output column, column after column.
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// One scale per group, column after column.
    pub fn scales(&self) -> &[f16] {
        &self.scales
    }

    /// One zero point per group (asymmetric formats only), like the scales.
    pub fn zeros(&self) -> Option<&[u8]> {
        self.zeros.as_deref()
    }

    /// Stored bytes: codes, 2 per scale, 1 per zero point.
    pub fn byte_len(&self) -> usize {
        self.data.len() + 2 * self.scales.len() + self.zeros.as_ref().map_or(0, Vec::len)
    }

    /// Groups (scales) per output column.
    pub fn groups_per_column(&self) -> usize {
        self.format.groups_per_column(self.rows)
    }

    /// Input rows covered by group `group` of every column.
    pub fn group_rows(&self, group: usize) -> Range<usize> {
        let len = self.format.group_len(self.rows);
        (group * len).min(self.rows)..((group + 1) * len).min(self.rows)
    }

    /// The packed bytes of output column `col`.
    ///
    /// # Panics
    /// When `col >= cols`.
    pub fn column_bytes(&self, col: usize) -> &[u8] {
        assert!(
            col < self.cols,
            "column {col} of a weight with {} columns",
            self.cols
        );
        let stride = self.format.column_stride(self.rows);
        &self.data[col * stride..(col + 1) * stride]
    }

    /// The unpacked codes of output column `col`, one per input row.
    ///
    /// # Panics
    /// When `col >= cols`.
    pub fn column_codes(&self, col: usize) -> Vec<u8> {
        let mut codes = vec![0u8; self.rows];
        self.format
            .packing()
            .unpack(self.column_bytes(col), &mut codes);
        codes
    }

    /// Scale of group `group` of output column `col`.
    ///
    /// # Panics
    /// When the column or group is out of range.
    pub fn scale(&self, col: usize, group: usize) -> f32 {
        self.scales[self.group_index(col, group)].to_f32()
    }

    /// Zero point of group `group` of output column `col`: the stored one for
    /// asymmetric formats, `2^(bits-1)` for symmetric ones.
    ///
    /// # Panics
    /// When the column or group is out of range.
    pub fn zero(&self, col: usize, group: usize) -> u8 {
        let i = self.group_index(col, group);
        match &self.zeros {
            Some(z) => z[i],
            None => self.format.symmetric_zero(),
        }
    }

    fn group_index(&self, col: usize, group: usize) -> usize {
        let groups = self.groups_per_column();
        assert!(
            col < self.cols && group < groups,
            "group {group} of column {col} in a weight with {} columns of {groups} groups",
            self.cols
        );
        col * groups + group
    }
}

impl fmt::Debug for PackedWeight {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The parts run to megabytes; their sizes say what matters.
        f.debug_struct("PackedWeight")
            .field("format", &self.format.to_string())
            .field("rows", &self.rows)
            .field("cols", &self.cols)
            .field("data_bytes", &self.data.len())
            .field("scales", &self.scales.len())
            .field("zeros", &self.zeros.as_ref().map(Vec::len))
            .finish()
    }
}

/// Decodes a packed weight to f32, `[rows, cols]` row-major (`[in, out]`).
///
/// Each value is `(code - zero) * scale`, which f32 holds exactly.
pub fn dequantize(w: &PackedWeight) -> Vec<f32> {
    let (rows, cols) = (w.rows, w.cols);
    let mut out = vec![0.0f32; rows * cols];
    for c in 0..cols {
        let codes = w.column_codes(c);
        for g in 0..w.groups_per_column() {
            let (s, z) = (w.scale(c, g), i32::from(w.zero(c, g)));
            for r in w.group_rows(g) {
                out[r * cols + c] = (i32::from(codes[r]) - z) as f32 * s;
            }
        }
    }
    out
}

/// Dot product of output column `col` with `x` (one value per input row),
/// decoding codes on the fly.
///
/// This is the reference for faster kernels: per group it sums
/// `(code - zero) * x` and then scales the sum, the order a kernel uses, but
/// accumulates in f64 so that its only rounding is the final one to f32.
///
/// # Panics
/// When `col >= cols` or `x.len() != rows`.
pub fn dot_column(w: &PackedWeight, col: usize, x: &[f32]) -> f32 {
    assert_eq!(
        x.len(),
        w.rows,
        "input vector of {} values for a weight with {} input rows",
        x.len(),
        w.rows
    );
    let codes = w.column_codes(col);
    let mut acc = 0.0f64;
    for g in 0..w.groups_per_column() {
        let z = i32::from(w.zero(col, g));
        let part: f64 = w
            .group_rows(g)
            .map(|r| f64::from(i32::from(codes[r]) - z) * f64::from(x[r]))
            .sum();
        acc += part * f64::from(w.scale(col, g));
    }
    acc as f32
}

/// Matrix-vector product `x · W` of an input vector (`rows` values) with the
/// `[rows, cols]` weight: one [`dot_column`] per output column.
///
/// # Panics
/// When `x.len() != rows`.
pub fn matvec(w: &PackedWeight, x: &[f32]) -> Vec<f32> {
    assert_eq!(
        x.len(),
        w.rows,
        "input vector of {} values for a weight with {} input rows",
        x.len(),
        w.rows
    );
    (0..w.cols).map(|c| dot_column(w, c, x)).collect()
}
