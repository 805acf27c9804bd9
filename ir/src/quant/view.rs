//! A borrowed view of a packed weight in its serialised form.
//!
//! A [`DType::Quant`](crate::DType::Quant) tensor stores one packed weight as
//! three consecutive parts: the codes (`data`), the scales as little-endian
//! f16, and for asymmetric formats the zero points. [`PackedView`] reads those
//! parts in place (a memory-mapped bundle is never copied), and
//! [`PackedWeight::to_bytes`] writes them.

use super::{PackedWeight, QuantError, QuantFormat};
use half::f16;
use std::ops::Range;

/// A packed `[rows, cols]` weight borrowed from serialised bytes.
///
/// Part lengths are checked on construction, so the accessors never fail.
#[derive(Clone, Copy, Debug)]
pub struct PackedView<'a> {
    format: QuantFormat,
    rows: usize,
    cols: usize,
    data: &'a [u8],
    scales: &'a [u8],
    zeros: Option<&'a [u8]>,
}

impl<'a> PackedView<'a> {
    /// Splits `bytes` (codes, f16 scales, zero points) into the parts of a
    /// `[rows, cols]` weight of `format`, checking the total length.
    pub fn new(
        format: QuantFormat,
        rows: usize,
        cols: usize,
        bytes: &'a [u8],
    ) -> Result<Self, QuantError> {
        let data_len = cols
            .checked_mul(format.column_stride(rows))
            .ok_or(QuantError::TooLarge { rows, cols })?;
        let groups = cols
            .checked_mul(format.groups_per_column(rows))
            .ok_or(QuantError::TooLarge { rows, cols })?;
        let zero_len = if format.symmetric() { 0 } else { groups };
        let expected = data_len + 2 * groups + zero_len;
        if bytes.len() != expected {
            return Err(QuantError::PartLength {
                format,
                rows,
                cols,
                part: "bytes",
                expected,
                actual: bytes.len(),
            });
        }
        let (data, rest) = bytes.split_at(data_len);
        let (scales, zeros) = rest.split_at(2 * groups);
        Ok(PackedView {
            format,
            rows,
            cols,
            data,
            scales,
            zeros: (!format.symmetric()).then_some(zeros),
        })
    }

    /// The format.
    pub fn format(&self) -> QuantFormat {
        self.format
    }

    /// Input dimension.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Output dimension.
    pub fn cols(&self) -> usize {
        self.cols
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

    /// The packed codes of every column, column after column.
    pub fn data(&self) -> &'a [u8] {
        self.data
    }

    /// The packed bytes of output column `col` (panics when out of range).
    pub fn column_bytes(&self, col: usize) -> &'a [u8] {
        let stride = self.format.column_stride(self.rows);
        &self.data[col * stride..(col + 1) * stride]
    }

    /// Scale of group `group` of column `col` (panics when out of range).
    pub fn scale(&self, col: usize, group: usize) -> f32 {
        let i = 2 * (col * self.groups_per_column() + group);
        f16::from_le_bytes([self.scales[i], self.scales[i + 1]]).to_f32()
    }

    /// Zero point of group `group` of column `col`: stored for asymmetric
    /// formats, `2^(bits-1)` for symmetric ones (panics when out of range).
    pub fn zero(&self, col: usize, group: usize) -> u8 {
        match self.zeros {
            Some(z) => z[col * self.groups_per_column() + group],
            None => self.format.symmetric_zero(),
        }
    }

    /// Unpacks the codes of column `col` into `out` (`rows` bytes).
    pub fn column_codes_into(&self, col: usize, out: &mut [u8]) {
        self.format
            .packing()
            .unpack(self.column_bytes(col), &mut out[..self.rows]);
    }

    /// Decodes column `col` into `out` (`rows` values), exactly.
    pub fn dequantize_column(&self, col: usize, out: &mut [f32]) {
        let mut codes = vec![0u8; self.rows];
        self.column_codes_into(col, &mut codes);
        for g in 0..self.groups_per_column() {
            let (s, z) = (self.scale(col, g), i32::from(self.zero(col, g)));
            for r in self.group_rows(g) {
                out[r] = (i32::from(codes[r]) - z) as f32 * s;
            }
        }
    }

    /// Decodes the whole weight to f32, `[rows, cols]` row-major.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = vec![0.0f32; self.rows * self.cols];
        let mut column = vec![0.0f32; self.rows];
        for c in 0..self.cols {
            self.dequantize_column(c, &mut column);
            for (r, &v) in column.iter().enumerate() {
                out[r * self.cols + c] = v;
            }
        }
        out
    }

    /// Copies the parts into an owned [`PackedWeight`], validating them
    /// (finite scales, zero points within the code width).
    pub fn to_owned(&self) -> Result<PackedWeight, QuantError> {
        let scales = self
            .scales
            .chunks_exact(2)
            .map(|b| f16::from_le_bytes([b[0], b[1]]))
            .collect();
        PackedWeight::from_parts(
            self.format,
            self.rows,
            self.cols,
            self.data.to_vec(),
            scales,
            self.zeros.map(<[u8]>::to_vec),
        )
    }
}

impl PackedWeight {
    /// The serialised form: codes, then scales as little-endian f16, then
    /// zero points (asymmetric formats only). [`PackedView::new`] reads it.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.byte_len());
        out.extend_from_slice(self.data());
        for s in self.scales() {
            out.extend_from_slice(&s.to_le_bytes());
        }
        if let Some(z) = self.zeros() {
            out.extend_from_slice(z);
        }
        out
    }

    /// Reads the serialised form written by [`PackedWeight::to_bytes`].
    pub fn from_bytes(
        format: QuantFormat,
        rows: usize,
        cols: usize,
        bytes: &[u8],
    ) -> Result<Self, QuantError> {
        PackedView::new(format, rows, cols, bytes)?.to_owned()
    }

    /// Decodes column `col` into `out` (`rows` values), exactly (panics
    /// when out of range).
    pub fn dequantize_column(&self, col: usize, out: &mut [f32]) {
        let codes = self.column_codes(col);
        for g in 0..self.groups_per_column() {
            let (s, z) = (self.scale(col, g), i32::from(self.zero(col, g)));
            for r in self.group_rows(g) {
                out[r] = (i32::from(codes[r]) - z) as f32 * s;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::{dequantize, quantize_rtn};

    fn weight(rows: usize, cols: usize) -> Vec<f32> {
        (0..rows * cols)
            .map(|i| ((i * 7919 % 1000) as f32 / 500.0 - 1.0) * (1.0 + (i % 5) as f32))
            .collect()
    }

    #[test]
    fn bytes_round_trip_and_view_decodes_like_the_reference() {
        for format in QuantFormat::all() {
            let (rows, cols) = (200, 7);
            let w = quantize_rtn(&weight(rows, cols), rows, cols, format).unwrap();
            let bytes = w.to_bytes();
            assert_eq!(bytes.len(), w.byte_len(), "{format}");
            let view = PackedView::new(format, rows, cols, &bytes).unwrap();
            assert_eq!(view.dequantize(), dequantize(&w), "{format}");
            assert_eq!(
                PackedWeight::from_bytes(format, rows, cols, &bytes).unwrap(),
                w
            );
            let mut col = vec![0.0; rows];
            w.dequantize_column(3, &mut col);
            let reference = dequantize(&w);
            for r in 0..rows {
                assert_eq!(col[r], reference[r * cols + 3]);
            }
        }
    }

    #[test]
    fn wrong_length_is_rejected() {
        let format = QuantFormat::parse("w4g32a").unwrap();
        let err = PackedView::new(format, 64, 2, &[0u8; 10]).unwrap_err();
        assert!(
            matches!(err, QuantError::PartLength { expected: 76, .. }),
            "{err}"
        );
    }
}
