//! Group parameters (scale, zero point) chosen by AWQ's weight-clip search,
//! measured with the input Hessian instead of sampled activations, and
//! round-to-nearest with given parameters.
//!
//! Plain min/max parameters spend code range on a group's rare extreme
//! values. Shrinking the range clamps those values but rounds the rest more
//! finely; which wins depends on how the inputs weigh each row, so every
//! shrink factor `1, 1 − max_shrink/grid, …, 1 − max_shrink` is tried per
//! (column, group) and the one minimising `Δᵀ·H_gg·Δ` is kept, with
//! `Δ` the group's quantization error and `H_gg` its diagonal block of the
//! Hessian. That is the group's own share of the output error
//! `‖X·ΔW‖²`; the cross terms between groups are left out, as in AWQ, so
//! every group is searched independently.
//!
//! The scale rules are those of `kiln_ir::quant::quantize_rtn`
//! (docs/quant-formats.md): f16 scales rounded toward zero and at least
//! [`MIN_SCALE`], symmetric zero `2^(bits−1)`, asymmetric range widened to
//! include 0. With factor 1 the parameters are exactly RTN's.

use super::hessian::{check_hessian, check_weight, gemm_into, CalibError, Operand};
use gemm::Parallelism;
use half::f16;
use kiln_ir::quant::{PackedWeight, QuantError, QuantFormat, MIN_SCALE};
use rayon::prelude::*;

/// Options of the clip search.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ClipOptions {
    /// Shrink steps: factors `1 − k·max_shrink/grid` for `k = 0..=grid`.
    pub grid: usize,
    /// The largest relative shrink of a group's range, in `[0, 1)`.
    pub max_shrink: f64,
}

impl Default for ClipOptions {
    fn default() -> Self {
        ClipOptions {
            grid: 20,
            max_shrink: 0.5,
        }
    }
}

impl ClipOptions {
    /// Checks the ranges documented on the fields.
    pub(crate) fn check(&self) -> Result<(), CalibError> {
        if self.grid == 0 {
            return Err(CalibError::Options {
                name: "clip grid",
                value: "0".into(),
                expected: "at least 1",
            });
        }
        if !(0.0..1.0).contains(&self.max_shrink) {
            return Err(CalibError::Options {
                name: "clip max_shrink",
                value: self.max_shrink.to_string(),
                expected: "a number in [0, 1)",
            });
        }
        Ok(())
    }

    /// The shrink factors tried, largest (1, no clipping) first.
    pub(crate) fn factors(&self) -> Vec<f64> {
        (0..=self.grid)
            .map(|k| 1.0 - k as f64 * self.max_shrink / self.grid as f64)
            .collect()
    }
}

/// Scales and zero points of every (output column, group) of a `[rows,
/// cols]` weight, in the layout of [`PackedWeight`]: index
/// `col · groups + group`.
#[derive(Clone, Debug, PartialEq)]
pub struct GroupParams {
    /// The format the parameters are for.
    pub format: QuantFormat,
    /// Input rows of the weight.
    pub rows: usize,
    /// Output columns of the weight.
    pub cols: usize,
    /// One f16 scale per group.
    pub scales: Vec<f16>,
    /// One zero point per group, asymmetric formats only.
    pub zeros: Option<Vec<u8>>,
}

impl GroupParams {
    /// Round-to-nearest's parameters (the group's min/max), exactly those
    /// `kiln_ir::quant::quantize_rtn` stores.
    pub fn min_max(
        w: &[f32],
        rows: usize,
        cols: usize,
        format: QuantFormat,
    ) -> Result<Self, CalibError> {
        check_weight(w, rows, cols)?;
        let groups = format.groups_per_column(rows);
        let glen = format.group_len(rows);
        let mut scales = Vec::with_capacity(cols * groups);
        let mut zeros = Vec::with_capacity(if format.symmetric() { 0 } else { cols * groups });
        for c in 0..cols {
            for g in 0..groups {
                let rows_g = g * glen..((g + 1) * glen).min(rows);
                let (lo, hi) = rows_g.fold((0.0f32, 0.0f32), |(lo, hi), r| {
                    let v = w[r * cols + c];
                    (lo.min(v), hi.max(v))
                });
                let (s, z) =
                    range_params(lo, hi, format).map_err(|range| QuantError::ScaleOverflow {
                        col: c,
                        group: g,
                        range,
                    })?;
                scales.push(s);
                if !format.symmetric() {
                    zeros.push(z);
                }
            }
        }
        Ok(GroupParams {
            format,
            rows,
            cols,
            scales,
            zeros: (!format.symmetric()).then_some(zeros),
        })
    }

    /// Groups per output column.
    pub fn groups_per_column(&self) -> usize {
        self.format.groups_per_column(self.rows)
    }

    /// Scale and zero point of group `group` of column `col`.
    ///
    /// # Panics
    /// When the column or group is out of range.
    pub fn get(&self, col: usize, group: usize) -> (f16, u8) {
        let i = col * self.groups_per_column() + group;
        let z = match &self.zeros {
            Some(z) => z[i],
            None => self.format.symmetric_zero(),
        };
        (self.scales[i], z)
    }

    fn check_for(&self, rows: usize, cols: usize, format: QuantFormat) -> Result<(), CalibError> {
        let groups = self.format.groups_per_column(self.rows);
        let consistent = self.scales.len() == self.cols * groups
            && self.zeros.as_ref().map(Vec::len)
                == (!self.format.symmetric()).then_some(self.cols * groups);
        if !consistent || (self.format, self.rows, self.cols) != (format, rows, cols) {
            return Err(CalibError::ParamsMismatch {
                params: format!(
                    "[{}, {}] {} ({} scales)",
                    self.rows,
                    self.cols,
                    self.format,
                    self.scales.len()
                ),
                weight: format!("[{rows}, {cols}] {format}"),
            });
        }
        Ok(())
    }
}

/// The code of `v` for scale `s` and zero point `z`, by RTN's rule: round
/// half away from zero in f32, then clamp to the code range.
#[inline]
pub(crate) fn code_of(v: f32, s: f32, z: f32, max_code: f32) -> f32 {
    ((v / s).round() + z).clamp(0.0, max_code)
}

/// Round-to-nearest of a `[rows, cols]` weight with given group parameters
/// (values outside a group's range clamp to the end codes).
///
/// With [`GroupParams::min_max`] this is `quantize_rtn` bit for bit.
pub fn quantize_with_params(
    w: &[f32],
    rows: usize,
    cols: usize,
    format: QuantFormat,
    params: &GroupParams,
) -> Result<PackedWeight, CalibError> {
    check_weight(w, rows, cols)?;
    params.check_for(rows, cols, format)?;
    let groups = format.groups_per_column(rows);
    let glen = format.group_len(rows);
    let max_code = f32::from(format.max_code());
    let mut codes = vec![0u8; rows * cols];
    for (c, out) in codes.chunks_exact_mut(rows.max(1)).enumerate().take(cols) {
        for g in 0..groups {
            let (s, z) = params.get(c, g);
            let (s, z) = (s.to_f32(), f32::from(z));
            for r in g * glen..((g + 1) * glen).min(rows) {
                out[r] = code_of(w[r * cols + c], s, z, max_code) as u8;
            }
        }
    }
    Ok(PackedWeight::from_codes(
        format,
        rows,
        cols,
        &codes,
        params.scales.clone(),
        params.zeros.clone(),
    )?)
}

/// `dequantize(quantize_rtn(w))` without packing: each value replaced by
/// its round-to-nearest reconstruction `(c − z)·s`, written to `out`
/// (row-major `[rows, cols]` like `w`). Equal to the packed round trip bit
/// for bit; for searches that only need the error. `w` must be finite;
/// fails when a group's scale would overflow f16.
pub(crate) fn fake_quantize_rtn(
    w: &[f32],
    rows: usize,
    cols: usize,
    format: QuantFormat,
    out: &mut [f32],
) -> Result<(), QuantError> {
    let glen = format.group_len(rows);
    let max_code = f32::from(format.max_code());
    let mut ranges = vec![(0.0f32, 0.0f32); cols];
    let mut params = vec![(0.0f32, 0.0f32); cols];
    for g in 0..format.groups_per_column(rows) {
        let span = g * glen..((g + 1) * glen).min(rows);
        ranges.fill((0.0, 0.0));
        for r in span.clone() {
            for (m, &v) in ranges.iter_mut().zip(&w[r * cols..(r + 1) * cols]) {
                *m = (m.0.min(v), m.1.max(v));
            }
        }
        for (c, (p, &(lo, hi))) in params.iter_mut().zip(&ranges).enumerate() {
            let (s, z) =
                range_params(lo, hi, format).map_err(|range| QuantError::ScaleOverflow {
                    col: c,
                    group: g,
                    range,
                })?;
            *p = (s.to_f32(), f32::from(z));
        }
        for r in span {
            let (src, dst) = (
                &w[r * cols..(r + 1) * cols],
                &mut out[r * cols..(r + 1) * cols],
            );
            for ((d, &v), &(s, z)) in dst.iter_mut().zip(src).zip(&params) {
                *d = (code_of(v, s, z, max_code) - z) * s;
            }
        }
    }
    Ok(())
}

/// Columns searched together: one `gemm` per (group, column block) covers
/// every shrink factor.
const CLIP_COLUMNS: usize = 32;

/// Group parameters of a `[rows, cols]` weight chosen by the clip search
/// against the `rows × rows` Hessian `h` (see the module documentation).
///
/// Deterministic; column blocks run in parallel, each with its own fixed
/// order of operations.
pub fn clip_params(
    w: &[f32],
    rows: usize,
    cols: usize,
    h: &[f64],
    format: QuantFormat,
    opts: &ClipOptions,
) -> Result<GroupParams, CalibError> {
    check_weight(w, rows, cols)?;
    check_hessian(h, rows)?;
    opts.check()?;
    let groups = format.groups_per_column(rows);
    let glen = format.group_len(rows);
    let factors = opts.factors();
    // Each group's diagonal block of H, in f32 for the products: the errors
    // compared differ by far more than f32 rounding.
    let blocks: Vec<Vec<f32>> = (0..groups)
        .map(|g| {
            let span = g * glen..((g + 1) * glen).min(rows);
            span.clone()
                .flat_map(|i| span.clone().map(move |j| h[i * rows + j] as f32))
                .collect()
        })
        .collect();
    let starts: Vec<usize> = (0..cols).step_by(CLIP_COLUMNS).collect();
    let searched: Vec<Result<Vec<(f16, u8)>, CalibError>> = starts
        .par_iter()
        .map(|&c0| {
            let width = CLIP_COLUMNS.min(cols - c0);
            let mut out = vec![(MIN_SCALE, 0u8); width * groups];
            for (g, hg) in blocks.iter().enumerate() {
                let r0 = g * glen;
                let len = glen.min(rows - r0);
                // The group's values, row-major `len × width`.
                let mut vals = Vec::with_capacity(len * width);
                for r in r0..r0 + len {
                    vals.extend_from_slice(&w[r * cols + c0..r * cols + c0 + width]);
                }
                let best = search_group(&vals, len, width, hg, format, &factors).map_err(
                    |(k, range)| QuantError::ScaleOverflow {
                        col: c0 + k,
                        group: g,
                        range,
                    },
                )?;
                for (k, p) in best.into_iter().enumerate() {
                    out[k * groups + g] = p;
                }
            }
            Ok(out)
        })
        .collect();
    let mut scales = Vec::with_capacity(cols * groups);
    let mut zeros = Vec::with_capacity(if format.symmetric() { 0 } else { cols * groups });
    for block in searched {
        for (s, z) in block? {
            scales.push(s);
            if !format.symmetric() {
                zeros.push(z);
            }
        }
    }
    Ok(GroupParams {
        format,
        rows,
        cols,
        scales,
        zeros: (!format.symmetric()).then_some(zeros),
    })
}

/// The best parameters of each column of one group (`vals`, `len × width`
/// row-major) over the shrink `factors`, by `Δᵀ·hg·Δ`. Ties keep the larger
/// factor, so factor 1 (RTN) wins unless another is strictly better. Fails
/// with `(column, range)` when even the unshrunk range overflows f16.
pub(crate) fn search_group(
    vals: &[f32],
    len: usize,
    width: usize,
    hg: &[f32],
    format: QuantFormat,
    factors: &[f64],
) -> Result<Vec<(f16, u8)>, (usize, f32)> {
    let nf = factors.len();
    let max_code = f32::from(format.max_code());
    let mut ranges = vec![(0.0f32, 0.0f32); width];
    for row in vals.chunks_exact(width) {
        for (r, &v) in ranges.iter_mut().zip(row) {
            *r = (r.0.min(v), r.1.max(v));
        }
    }
    // Candidate parameters, `params[f·width + k]`, and the errors they give,
    // `delta` row-major `len × (nf·width)`.
    let mut params = Vec::with_capacity(nf * width);
    for &f in factors {
        for (k, &(lo, hi)) in ranges.iter().enumerate() {
            let (lo, hi) = if f == 1.0 {
                (lo, hi)
            } else {
                ((f64::from(lo) * f) as f32, (f64::from(hi) * f) as f32)
            };
            params.push(range_params(lo, hi, format).map_err(|r| (k, r))?);
        }
    }
    let n = nf * width;
    let mut delta = vec![0.0f32; len * n];
    for (row, drow) in vals.chunks_exact(width).zip(delta.chunks_exact_mut(n)) {
        for (j, d) in drow.iter_mut().enumerate() {
            let v = row[j % width];
            let (s, z) = params[j];
            let (s, z) = (s.to_f32(), f32::from(z));
            *d = v - (code_of(v, s, z, max_code) - z) * s;
        }
    }
    let mut hd = vec![0.0f32; len * n];
    gemm_into(
        (len, n, len),
        &mut hd,
        n,
        false,
        Operand::new(hg, 0, len, 1),
        Operand::new(&delta, 0, n, 1),
        1.0,
        Parallelism::None,
    );
    let mut err = vec![0.0f64; n];
    for (drow, hrow) in delta.chunks_exact(n).zip(hd.chunks_exact(n)) {
        for ((e, &d), &hv) in err.iter_mut().zip(drow).zip(hrow) {
            *e += f64::from(d) * f64::from(hv);
        }
    }
    Ok((0..width)
        .map(|k| {
            let mut best = 0;
            for f in 1..nf {
                if err[f * width + k] < err[best * width + k] {
                    best = f;
                }
            }
            params[best * width + k]
        })
        .collect())
}

/// Clip-searched round-to-nearest: [`clip_params`], then
/// [`quantize_with_params`].
pub fn clip_search(
    w: &[f32],
    rows: usize,
    cols: usize,
    h: &[f64],
    format: QuantFormat,
    opts: &ClipOptions,
) -> Result<PackedWeight, CalibError> {
    let params = clip_params(w, rows, cols, h, format, opts)?;
    quantize_with_params(w, rows, cols, format, &params)
}

/// Scale and zero point of a group whose values span `[lo, hi]`, by RTN's
/// rules (`kiln_ir::quant::group_params`); `Err(range)` when the scale
/// would overflow f16.
pub(crate) fn range_params(lo: f32, hi: f32, format: QuantFormat) -> Result<(f16, u8), f32> {
    kiln_ir::quant::group_params(lo, hi, format)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::hessian::tests::{correlated_inputs, weight, Rng};
    use crate::quant::hessian::{output_error, InputStats};
    use kiln_ir::quant::{dequantize, quantize_rtn};

    fn fmt(text: &str) -> QuantFormat {
        QuantFormat::parse(text).unwrap()
    }

    /// Min/max parameters and quantization with them reproduce
    /// `quantize_rtn` bit for bit, over every format, short last groups and
    /// magnitudes from the MIN_SCALE floor to large values.
    #[test]
    fn quant_min_max_params_equal_rtn() {
        let mut rng = Rng::new(5);
        for (rows, cols) in [(100, 7), (64, 3), (35, 5), (1, 2)] {
            for scale in [1e-5f64, 3e-3, 0.7, 40.0] {
                let w: Vec<f32> = (0..rows * cols)
                    .map(|i| {
                        let v = rng.normal() * scale + if i % 3 == 0 { scale } else { 0.0 };
                        v as f32
                    })
                    .collect();
                for f in QuantFormat::all() {
                    let rtn = quantize_rtn(&w, rows, cols, f).unwrap();
                    let p = GroupParams::min_max(&w, rows, cols, f).unwrap();
                    assert_eq!(p.scales, rtn.scales(), "{f} {rows}x{cols} scale {scale}");
                    assert_eq!(p.zeros.as_deref(), rtn.zeros(), "{f}");
                    let q = quantize_with_params(&w, rows, cols, f, &p).unwrap();
                    assert_eq!(q, rtn, "{f} {rows}x{cols} scale {scale}");
                    let mut fake = vec![f32::NAN; w.len()];
                    fake_quantize_rtn(&w, rows, cols, f, &mut fake).unwrap();
                    let deq = dequantize(&rtn);
                    assert!(
                        fake.iter()
                            .zip(&deq)
                            .all(|(a, b)| a.to_bits() == b.to_bits()),
                        "{f} {rows}x{cols} scale {scale}: fake quantization"
                    );
                }
            }
        }
    }

    #[test]
    fn quant_params_for_another_shape_are_rejected() {
        let w = weight(64, 4, 1);
        let p = GroupParams::min_max(&w, 64, 4, fmt("w4g32")).unwrap();
        let err = quantize_with_params(&w, 64, 4, fmt("w4g64"), &p).unwrap_err();
        assert!(matches!(err, CalibError::ParamsMismatch { .. }), "{err}");
        let err = quantize_with_params(&w[..128], 32, 4, fmt("w4g32"), &p).unwrap_err();
        assert!(matches!(err, CalibError::ParamsMismatch { .. }), "{err}");
    }

    /// The search never does worse than RTN in its own measure (each group's
    /// `Δᵀ·H_gg·Δ`, by construction) and, on correlated inputs, lowers the
    /// full output error too; it actually clips some groups.
    #[test]
    fn quant_clip_search_beats_no_clip() {
        let (rows, cols) = (128, 48);
        let x = correlated_inputs(4 * rows, rows, 21);
        let mut stats = InputStats::new(rows);
        stats.add(&x).unwrap();
        let h = stats.hessian();
        let w = weight(rows, cols, 22);
        for f in ["w4g32", "w4g64", "w3g64", "w4g64a", "w3g32a", "w4"] {
            let f = fmt(f);
            let rtn = quantize_rtn(&w, rows, cols, f).unwrap();
            let clip = clip_search(&w, rows, cols, h, f, &ClipOptions::default()).unwrap();
            let (dr, dc) = (dequantize(&rtn), dequantize(&clip));
            let glen = f.group_len(rows);
            let mut changed = 0;
            for g in 0..f.groups_per_column(rows) {
                for c in 0..cols {
                    let span = g * glen..((g + 1) * glen).min(rows);
                    let quad = |d: &[f32]| {
                        let mut e = 0.0f64;
                        for i in span.clone() {
                            for j in span.clone() {
                                e += h[i * rows + j]
                                    * f64::from(w[i * cols + c] - d[i * cols + c])
                                    * f64::from(w[j * cols + c] - d[j * cols + c]);
                            }
                        }
                        e
                    };
                    let (er, ec) = (quad(&dr), quad(&dc));
                    assert!(
                        ec <= er * (1.0 + 1e-5),
                        "{f} col {c} group {g}: {ec} > {er}"
                    );
                    changed += usize::from(clip.scale(c, g) != rtn.scale(c, g));
                }
            }
            let (e_rtn, e_clip) = (
                output_error(&w, &dr, rows, cols, h),
                output_error(&w, &dc, rows, cols, h),
            );
            eprintln!("{f}: rtn {e_rtn:.5e}, clip {e_clip:.5e}, {changed} groups clipped");
            assert!(changed > 0, "{f}: nothing clipped");
            assert!(e_clip < e_rtn, "{f}: clip {e_clip} vs rtn {e_rtn}");
        }
    }

    /// With `max_shrink = 0` every candidate is RTN's, so the result is RTN.
    #[test]
    fn quant_clip_without_shrink_is_rtn() {
        let (rows, cols) = (96, 10);
        let w = weight(rows, cols, 2);
        let mut h = vec![0.0f64; rows * rows];
        for i in 0..rows {
            h[i * rows + i] = 1.0 + i as f64;
        }
        let opts = ClipOptions {
            grid: 4,
            max_shrink: 0.0,
        };
        for f in ["w4g32", "w3g64a", "w8"] {
            let f = fmt(f);
            let got = clip_search(&w, rows, cols, &h, f, &opts).unwrap();
            assert_eq!(got, quantize_rtn(&w, rows, cols, f).unwrap(), "{f}");
        }
        let bad = ClipOptions {
            grid: 4,
            max_shrink: 1.0,
        };
        assert!(matches!(
            clip_params(&w, rows, cols, &h, fmt("w4"), &bad),
            Err(CalibError::Options { .. })
        ));
    }
}
