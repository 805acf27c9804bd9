//! Second-moment statistics of a linear layer's input, and the error measure
//! every calibrated quantizer here minimises.
//!
//! For a linear layer `y = x·W` with input rows `X` (tokens × input
//! features), the output error of a perturbed weight `W + ΔW` over the
//! calibration set is `‖X·ΔW‖² = tr(ΔWᵀ·H·ΔW)` with `H = XᵀX`. So `H` (plus
//! the mean `|x|` per channel, which AWQ's scale search needs) is all the
//! calibration data a layer's quantizer has to see; the activations
//! themselves can be dropped as soon as they are accumulated.
//!
//! This module also holds [`CalibError`], the error type shared by the GPTQ,
//! AWQ and clip-search modules, and the small strided-`gemm` helpers they use.

use gemm::Parallelism;
use kiln_ir::quant::QuantError;
use rayon::prelude::*;
use std::sync::OnceLock;

/// Error raised by the calibrated quantizers (statistics, GPTQ, AWQ, clip
/// search). Callers add the layer's name.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CalibError {
    /// An activation block is not a whole number of rows.
    #[error("input block of {len} values is not a whole number of rows of {dim} features")]
    InputLength {
        /// Values given.
        len: usize,
        /// Input features per row.
        dim: usize,
    },
    /// An activation is NaN or infinite.
    #[error("input row {row}, feature {feature} is {value}; calibration inputs must be finite")]
    NonFiniteInput {
        /// Row within the block passed to [`InputStats::add`].
        row: usize,
        /// Input feature.
        feature: usize,
        /// The value.
        value: f32,
    },
    /// A Hessian does not hold `dim × dim` values.
    #[error(
        "a Hessian of {actual} values does not match {dim} input features (expected {dim} × {dim})"
    )]
    HessianShape {
        /// Input features.
        dim: usize,
        /// Values given.
        actual: usize,
    },
    /// A Hessian entry is NaN or infinite.
    #[error("Hessian entry [{row}, {col}] is {value}; it must be finite")]
    NonFiniteHessian {
        /// Row.
        row: usize,
        /// Column.
        col: usize,
        /// The value.
        value: f64,
    },
    /// A weight's input dimension differs from its statistics' dimension.
    #[error("a weight with {rows} input rows does not match input statistics of {dim} features")]
    DimMismatch {
        /// Input rows of the weight.
        rows: usize,
        /// Features of the statistics or Hessian.
        dim: usize,
    },
    /// Cholesky factorisation failed even after raising the dampening.
    #[error("the Hessian of {dim} inputs is not positive definite even with a dampening of {damp} × mean diagonal ({tries} tries)")]
    NotPositiveDefinite {
        /// Input features.
        dim: usize,
        /// The last relative dampening tried.
        damp: f64,
        /// Factorisations attempted.
        tries: u32,
    },
    /// An option is out of range.
    #[error("invalid option `{name}` = {value}: expected {expected}")]
    Options {
        /// Option name.
        name: &'static str,
        /// The value given, printed.
        value: String,
        /// The accepted range.
        expected: &'static str,
    },
    /// GPTQ was asked for a different activation order than the Hessian was
    /// prepared for.
    #[error("the Hessian was prepared with act_order = {prepared}, but GPTQ was asked for act_order = {requested}")]
    ActOrderMismatch {
        /// Order of the prepared Hessian.
        prepared: bool,
        /// Order requested.
        requested: bool,
    },
    /// Group parameters were computed for another shape or format.
    #[error("group parameters for a {params} weight used with a {weight} weight")]
    ParamsMismatch {
        /// Shape and format of the parameters, printed.
        params: String,
        /// Shape and format of the weight, printed.
        weight: String,
    },
    /// Packing or round-to-nearest failed.
    #[error(transparent)]
    Quant(#[from] QuantError),
}

/// Activation rows multiplied at once: `XᵀX` of a block is formed in f32 and
/// added to the f64 sum, so f32 only ever sums this many products.
const STATS_CHUNK: usize = 1024;

/// Input features per block of the `XᵀX` product; only blocks on or above
/// the diagonal are computed, the rest is mirrored.
const STATS_BLOCK: usize = 128;

/// Statistics of one linear layer's input `X` (rows = tokens, columns =
/// input features): the number of rows seen, `XᵀX` and `Σ|x|` per feature,
/// both accumulated in f64.
///
/// Only the upper triangle of `XᵀX` is accumulated; the full symmetric
/// matrix is built once, when [`hessian`](Self::hessian) is first asked for
/// after the last [`add`](Self::add).
#[derive(Clone, Debug)]
pub struct InputStats {
    dim: usize,
    rows: u64,
    /// `XᵀX`, row-major; only entries on or above the diagonal are kept.
    upper: Vec<f64>,
    /// The full symmetric `XᵀX`, built on demand.
    full: OnceLock<Vec<f64>>,
    abs_sum: Vec<f64>,
}

impl PartialEq for InputStats {
    fn eq(&self, other: &Self) -> bool {
        (self.dim, self.rows) == (other.dim, other.rows)
            && self.abs_sum == other.abs_sum
            && self.hessian() == other.hessian()
    }
}

impl InputStats {
    /// Empty statistics of a `dim`-feature input.
    pub fn new(dim: usize) -> Self {
        InputStats {
            dim,
            rows: 0,
            upper: vec![0.0; dim * dim],
            full: OnceLock::new(),
            abs_sum: vec![0.0; dim],
        }
    }

    /// Statistics with a given `XᵀX` (row-major `dim × dim`; its upper
    /// triangle is used, mirrored), `Σ|x|` per feature and row count, e.g.
    /// read back from disk or built in tests.
    pub fn from_parts(
        dim: usize,
        rows: u64,
        xtx: Vec<f64>,
        abs_sum: Vec<f64>,
    ) -> Result<Self, CalibError> {
        check_hessian(&xtx, dim)?;
        if abs_sum.len() != dim {
            return Err(CalibError::DimMismatch {
                rows: abs_sum.len(),
                dim,
            });
        }
        Ok(InputStats {
            dim,
            rows,
            upper: xtx,
            full: OnceLock::new(),
            abs_sum,
        })
    }

    /// Adds a block of activations: `x` is `n × dim` row-major with
    /// `n = x.len() / dim`. Blocks of 1024 rows or more use the products
    /// best.
    ///
    /// Fails, leaving the statistics unchanged, when `x.len()` is not a
    /// multiple of `dim` or a value is not finite. The result depends only on
    /// the blocks passed and their order (never on thread scheduling).
    pub fn add(&mut self, x: &[f32]) -> Result<(), CalibError> {
        let dim = self.dim;
        if dim == 0 {
            return if x.is_empty() {
                Ok(())
            } else {
                Err(CalibError::InputLength { len: x.len(), dim })
            };
        }
        if !x.len().is_multiple_of(dim) {
            return Err(CalibError::InputLength { len: x.len(), dim });
        }
        if let Some(i) = x.iter().position(|v| !v.is_finite()) {
            return Err(CalibError::NonFiniteInput {
                row: i / dim,
                feature: i % dim,
                value: x[i],
            });
        }
        for row in x.chunks_exact(dim) {
            for (s, v) in self.abs_sum.iter_mut().zip(row) {
                *s += f64::from(v.abs());
            }
        }
        let blocks: Vec<(usize, usize)> = (0..dim)
            .step_by(STATS_BLOCK)
            .map(|a| (a, (a + STATS_BLOCK).min(dim)))
            .collect();
        let pairs: Vec<(usize, usize)> = (0..blocks.len())
            .flat_map(|a| (a..blocks.len()).map(move |b| (a, b)))
            .collect();
        for chunk in x.chunks(STATS_CHUNK * dim) {
            let n = chunk.len() / dim;
            // Disjoint block products in parallel, summed into f64 in a fixed
            // order afterwards.
            let products: Vec<Vec<f32>> = pairs
                .par_iter()
                .map(|&(a, b)| {
                    let (ra, rb) = (blocks[a], blocks[b]);
                    let (ma, mb) = (ra.1 - ra.0, rb.1 - rb.0);
                    let mut dst = vec![0.0f32; ma * mb];
                    gemm_into(
                        (ma, mb, n),
                        &mut dst,
                        mb,
                        false,
                        Operand::new(chunk, ra.0, 1, dim),
                        Operand::new(chunk, rb.0, dim, 1),
                        1.0,
                        Parallelism::None,
                    );
                    dst
                })
                .collect();
            // Diagonal blocks contribute their upper triangle only.
            for (&(a, b), p) in pairs.iter().zip(&products) {
                let (ra, rb) = (blocks[a], blocks[b]);
                let mb = rb.1 - rb.0;
                for (i, prow) in p.chunks_exact(mb).enumerate() {
                    let r = ra.0 + i;
                    let first = if a == b { i } else { 0 };
                    let row = &mut self.upper[r * dim + rb.0 + first..r * dim + rb.1];
                    for (h, &v) in row.iter_mut().zip(&prow[first..]) {
                        *h += f64::from(v);
                    }
                }
            }
        }
        self.full = OnceLock::new();
        self.rows += (x.len() / dim) as u64;
        Ok(())
    }

    /// Input features.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Activation rows accumulated.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// `XᵀX`, unnormalised, row-major `dim × dim`, exactly symmetric.
    pub fn hessian(&self) -> &[f64] {
        self.full
            .get_or_init(|| mirror_upper(&self.upper, self.dim))
    }

    /// `Σ|x|` per input feature.
    pub fn abs_sum(&self) -> &[f64] {
        &self.abs_sum
    }

    /// Mean `|x|` per input feature (zeros before any row was added).
    pub fn mean_abs(&self) -> Vec<f64> {
        let n = self.rows.max(1) as f64;
        self.abs_sum.iter().map(|s| s / n).collect()
    }

    /// The statistics of `X·diag(1/s)`: the input after an AWQ scale `s` has
    /// been folded into the previous operation, so that GPTQ on the scaled
    /// weight `diag(s)·W` sees the Hessian of its actual input.
    ///
    /// # Panics
    /// When `s.len() != dim`. Scales are expected positive and finite (as
    /// [`crate::quant::awq::awq_scales`] makes them).
    pub fn scaled(&self, s: &[f32]) -> InputStats {
        assert_eq!(
            s.len(),
            self.dim,
            "{} scales for input statistics of {} features",
            s.len(),
            self.dim
        );
        let inv: Vec<f64> = s.iter().map(|&v| 1.0 / f64::from(v)).collect();
        let mut upper = self.upper.clone();
        for (i, row) in upper.chunks_exact_mut(self.dim.max(1)).enumerate() {
            for (j, h) in row.iter_mut().enumerate().skip(i) {
                *h *= inv[i] * inv[j];
            }
        }
        InputStats {
            dim: self.dim,
            rows: self.rows,
            upper,
            full: OnceLock::new(),
            abs_sum: self.abs_sum.iter().zip(&inv).map(|(a, i)| a * i).collect(),
        }
    }
}

/// The full symmetric matrix from the upper triangle of a row-major
/// `dim × dim` one, transposing in tiles to stay in cache.
fn mirror_upper(upper: &[f64], dim: usize) -> Vec<f64> {
    const TILE: usize = 64;
    let mut full = upper.to_vec();
    for i0 in (0..dim).step_by(TILE) {
        for j0 in (0..=i0).step_by(TILE) {
            for i in i0..(i0 + TILE).min(dim) {
                for j in j0..(j0 + TILE).min(i) {
                    full[i * dim + j] = upper[j * dim + i];
                }
            }
        }
    }
    full
}

/// Relative output error of a quantized weight: `tr(ΔWᵀ·H·ΔW) / tr(Wᵀ·H·W)`
/// with `ΔW = w − w_hat`, both `[rows, cols]` row-major and `h` the
/// `rows × rows` Hessian `XᵀX`. With `H = XᵀX` this is
/// `‖X·ΔW‖² / ‖X·W‖²`, the share of the layer's output energy lost to
/// quantization. 0 when both traces are 0, infinite when only the
/// denominator is.
///
/// # Panics
/// When `w` or `w_hat` does not hold `rows·cols` values or `h` does not hold
/// `rows²`.
pub fn output_error(w: &[f32], w_hat: &[f32], rows: usize, cols: usize, h: &[f64]) -> f64 {
    assert!(
        w.len() == rows * cols && w_hat.len() == rows * cols && h.len() == rows * rows,
        "output_error of a [{rows}, {cols}] weight: got {} and {} weight values and {} Hessian values",
        w.len(),
        w_hat.len(),
        h.len()
    );
    let wd: Vec<f64> = w.iter().map(|&v| f64::from(v)).collect();
    let dd: Vec<f64> = w
        .iter()
        .zip(w_hat)
        .map(|(&a, &b)| f64::from(a) - f64::from(b))
        .collect();
    let num = trace_quad(h, &dd, rows, cols, Parallelism::Rayon(0));
    let den = trace_quad(h, &wd, rows, cols, Parallelism::Rayon(0));
    relative(num, den)
}

/// `num / den`, with 0/0 = 0 and x/0 = ∞.
pub(crate) fn relative(num: f64, den: f64) -> f64 {
    if den > 0.0 {
        num / den
    } else if num == 0.0 {
        0.0
    } else {
        f64::INFINITY
    }
}

/// `tr(Dᵀ·H·D) = Σ_c d_cᵀ·H·d_c` for a row-major `[rows, cols]` matrix `D`
/// and a symmetric `rows × rows` `H`; the products run through `gemm` and
/// the final sum runs sequentially in f64.
pub(crate) fn trace_quad<T: Real>(
    h: &[T],
    d: &[T],
    rows: usize,
    cols: usize,
    par: Parallelism,
) -> f64 {
    if rows == 0 || cols == 0 {
        return 0.0;
    }
    let mut hd = vec![T::ZERO; rows * cols];
    gemm_into(
        (rows, cols, rows),
        &mut hd,
        cols,
        false,
        Operand::new(h, 0, rows, 1),
        Operand::new(d, 0, cols, 1),
        T::ONE,
        par,
    );
    dot(d, &hd)
}

/// `Σ a_i·b_i` in f64 over eight interleaved partial sums (which lets the
/// loop vectorise), added in a fixed order: deterministic.
pub(crate) fn dot<T: Real>(a: &[T], b: &[T]) -> f64 {
    let mut acc = [0.0f64; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f64 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(&x, &y)| x.to_f64() * y.to_f64())
        .sum();
    for (x, y) in ca.zip(cb) {
        for k in 0..8 {
            acc[k] += x[k].to_f64() * y[k].to_f64();
        }
    }
    acc.iter().sum::<f64>() + tail
}

/// Checks that `h` is a finite `dim × dim` matrix.
pub(crate) fn check_hessian(h: &[f64], dim: usize) -> Result<(), CalibError> {
    if Some(h.len()) != dim.checked_mul(dim) {
        return Err(CalibError::HessianShape {
            dim,
            actual: h.len(),
        });
    }
    if let Some(i) = h.iter().position(|v| !v.is_finite()) {
        return Err(CalibError::NonFiniteHessian {
            row: i / dim,
            col: i % dim,
            value: h[i],
        });
    }
    Ok(())
}

/// Checks that `w` is a finite `[rows, cols]` matrix.
pub(crate) fn check_weight(w: &[f32], rows: usize, cols: usize) -> Result<(), CalibError> {
    if Some(w.len()) != rows.checked_mul(cols) {
        return Err(QuantError::ShapeMismatch {
            rows,
            cols,
            actual: w.len(),
        }
        .into());
    }
    if let Some(i) = w.iter().position(|v| !v.is_finite()) {
        return Err(QuantError::NonFinite {
            row: i / cols,
            col: i % cols,
            value: w[i],
        }
        .into());
    }
    Ok(())
}

/// The float types `gemm` multiplies here.
pub(crate) trait Real: Copy + Send + Sync + 'static {
    const ZERO: Self;
    const ONE: Self;
    fn to_f64(self) -> f64;
}

impl Real for f32 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    fn to_f64(self) -> f64 {
        f64::from(self)
    }
}

impl Real for f64 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    fn to_f64(self) -> f64 {
        self
    }
}

/// A strided read-only matrix operand: element `(i, j)` is
/// `data[off + i·rs + j·cs]`.
#[derive(Clone, Copy)]
pub(crate) struct Operand<'a, T> {
    data: &'a [T],
    off: usize,
    rs: usize,
    cs: usize,
}

impl<'a, T> Operand<'a, T> {
    pub(crate) fn new(data: &'a [T], off: usize, rs: usize, cs: usize) -> Self {
        Operand { data, off, rs, cs }
    }

    /// Whether every element of a `rows × cols` view lies inside `data`.
    fn fits(&self, rows: usize, cols: usize) -> bool {
        rows == 0
            || cols == 0
            || self.off + (rows - 1) * self.rs + (cols - 1) * self.cs < self.data.len()
    }
}

/// `dst (m × n, row stride dst_rs, unit column stride) = [dst +] beta·lhs·rhs`
/// for an `m × k` `lhs` and a `k × n` `rhs`.
///
/// `gemm` splits only the output among threads and sums along `k` in an
/// order fixed by the shapes, so the result does not depend on scheduling.
///
/// # Panics
/// When an operand or `dst` is too short for the shapes.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_into<T: Real>(
    (m, n, k): (usize, usize, usize),
    dst: &mut [T],
    dst_rs: usize,
    accumulate: bool,
    lhs: Operand<'_, T>,
    rhs: Operand<'_, T>,
    beta: T,
    par: Parallelism,
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(
        (m - 1) * dst_rs + n <= dst.len() && lhs.fits(m, k) && rhs.fits(k, n),
        "gemm operands too short for {m} × {n} × {k}"
    );
    if k == 0 {
        if !accumulate {
            for row in 0..m {
                dst[row * dst_rs..row * dst_rs + n].fill(T::ZERO);
            }
        }
        return;
    }
    // SAFETY: the assertion above keeps every addressed element of `dst`,
    // `lhs` and `rhs` inside its slice; `dst` is borrowed mutably and so does
    // not overlap the operands; T is f32 or f64, which gemm supports.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_rs as isize,
            accumulate,
            lhs.data.as_ptr().add(lhs.off),
            lhs.cs as isize,
            lhs.rs as isize,
            rhs.data.as_ptr().add(rhs.off),
            rhs.cs as isize,
            rhs.rs as isize,
            T::ONE,
            beta,
            false,
            false,
            false,
            par,
        );
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Seeded xorshift64* generator for reproducible test data.
    pub(crate) struct Rng(u64);

    impl Rng {
        pub(crate) fn new(seed: u64) -> Self {
            Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
        }

        pub(crate) fn next_u64(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            self.0 = x;
            x.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }

        /// Uniform in [0, 1).
        pub(crate) fn uniform(&mut self) -> f64 {
            (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
        }

        /// Standard normal (Box–Muller).
        pub(crate) fn normal(&mut self) -> f64 {
            let u = self.uniform().max(1e-300);
            let v = self.uniform();
            (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
        }
    }

    /// Activations with correlated features and a few large-magnitude
    /// channels, the structure that makes calibrated quantization pay:
    /// `n × dim` row-major, each row a mix of `dim / 4` shared factors plus
    /// noise, channels `k · dim / 5` scaled up 20×.
    pub(crate) fn correlated_inputs(n: usize, dim: usize, seed: u64) -> Vec<f32> {
        let mut rng = Rng::new(seed);
        let factors = (dim / 4).max(1);
        let mix: Vec<f64> = (0..factors * dim).map(|_| rng.normal()).collect();
        let big: Vec<bool> = (0..dim).map(|j| j % (dim / 5).max(1) == 3).collect();
        let mut x = Vec::with_capacity(n * dim);
        for _ in 0..n {
            let f: Vec<f64> = (0..factors).map(|_| rng.normal()).collect();
            for j in 0..dim {
                let mut v = 0.3 * rng.normal();
                for (k, fk) in f.iter().enumerate() {
                    v += fk * mix[k * dim + j] / (factors as f64).sqrt();
                }
                if big[j] {
                    v *= 20.0;
                }
                x.push(v as f32);
            }
        }
        x
    }

    /// A `[rows, cols]` weight of normal values with a few outliers.
    pub(crate) fn weight(rows: usize, cols: usize, seed: u64) -> Vec<f32> {
        let mut rng = Rng::new(seed);
        (0..rows * cols)
            .map(|i| {
                let v = 0.05 * rng.normal();
                (if i % 97 == 5 { 6.0 * v } else { v }) as f32
            })
            .collect()
    }

    pub(crate) fn naive_xtx(x: &[f32], dim: usize) -> Vec<f64> {
        let mut h = vec![0.0f64; dim * dim];
        for row in x.chunks_exact(dim) {
            for i in 0..dim {
                for j in 0..dim {
                    h[i * dim + j] += f64::from(row[i]) * f64::from(row[j]);
                }
            }
        }
        h
    }

    /// The blocked f32 accumulation agrees with a naive f64 `XᵀX` to f32
    /// precision, over blocks that split mid-chunk and a dimension that is
    /// not a multiple of the block; `Σ|x|` and the row count agree exactly.
    #[test]
    fn quant_hessian_matches_naive_f64() {
        let dim = 150;
        let x = correlated_inputs(1300, dim, 7);
        let mut stats = InputStats::new(dim);
        // Uneven calls: 700 rows (more than one chunk), then 600.
        stats.add(&x[..700 * dim]).unwrap();
        // The mirrored matrix built here must be rebuilt after the next add.
        assert!(stats.hessian()[dim] > 0.0);
        stats.add(&x[700 * dim..]).unwrap();
        assert_eq!(stats.rows(), 1300);
        let naive = naive_xtx(&x, dim);
        let h = stats.hessian();
        for i in 0..dim {
            for j in 0..dim {
                let tol = 1e-5 * (naive[i * dim + i] * naive[j * dim + j]).sqrt();
                let (a, b) = (h[i * dim + j], naive[i * dim + j]);
                assert!((a - b).abs() <= tol, "H[{i},{j}] = {a}, naive {b}");
                assert_eq!(h[i * dim + j], h[j * dim + i], "symmetry at [{i},{j}]");
            }
        }
        let mut abs = vec![0.0f64; dim];
        for row in x.chunks_exact(dim) {
            for (a, v) in abs.iter_mut().zip(row) {
                *a += f64::from(v.abs());
            }
        }
        assert_eq!(stats.abs_sum(), &abs[..]);
        let mean = stats.mean_abs();
        assert!((mean[3] - abs[3] / 1300.0).abs() < 1e-12 * abs[3]);
    }

    #[test]
    fn quant_hessian_rejects_bad_inputs_unchanged() {
        let mut stats = InputStats::new(4);
        assert_eq!(
            stats.add(&[1.0; 6]),
            Err(CalibError::InputLength { len: 6, dim: 4 })
        );
        let mut x = [1.0f32; 8];
        x[6] = f32::NAN;
        assert!(matches!(
            stats.add(&x),
            Err(CalibError::NonFiniteInput {
                row: 1,
                feature: 2,
                ..
            })
        ));
        assert_eq!(stats, InputStats::new(4));
    }

    /// `scaled(s)` equals the statistics of the explicitly scaled input.
    #[test]
    fn quant_scaled_stats_match_scaled_input() {
        let dim = 40;
        let x = correlated_inputs(200, dim, 3);
        let s: Vec<f32> = (0..dim).map(|j| 0.5 + j as f32 * 0.1).collect();
        let mut a = InputStats::new(dim);
        a.add(&x).unwrap();
        let scaled = a.scaled(&s);
        let xs: Vec<f32> = x.iter().enumerate().map(|(i, &v)| v / s[i % dim]).collect();
        let naive = naive_xtx(&xs, dim);
        for (i, (&p, &q)) in scaled.hessian().iter().zip(&naive).enumerate() {
            let tol = 1e-5 * (naive[(i / dim) * (dim + 1)] * naive[(i % dim) * (dim + 1)]).sqrt();
            assert!((p - q).abs() <= tol, "entry {i}: {p} vs {q}");
        }
        let mut b = InputStats::new(dim);
        b.add(&xs).unwrap();
        for (p, q) in scaled.abs_sum().iter().zip(b.abs_sum()) {
            assert!((p - q).abs() <= 1e-5 * q, "{p} vs {q}");
        }
    }

    /// The relative error equals ‖XΔW‖² / ‖XW‖² computed from X directly.
    #[test]
    fn quant_output_error_is_relative_output_energy() {
        let (n, rows, cols) = (300, 48, 20);
        let x = correlated_inputs(n, rows, 11);
        let w = weight(rows, cols, 12);
        let w_hat: Vec<f32> = w.iter().map(|v| (v * 20.0).round() / 20.0).collect();
        let mut stats = InputStats::new(rows);
        stats.add(&x).unwrap();
        let got = output_error(&w, &w_hat, rows, cols, stats.hessian());
        let (mut num, mut den) = (0.0f64, 0.0f64);
        for xr in x.chunks_exact(rows) {
            for c in 0..cols {
                let (mut y, mut e) = (0.0f64, 0.0f64);
                for r in 0..rows {
                    let xv = f64::from(xr[r]);
                    y += xv * f64::from(w[r * cols + c]);
                    e += xv * (f64::from(w[r * cols + c]) - f64::from(w_hat[r * cols + c]));
                }
                num += e * e;
                den += y * y;
            }
        }
        let want = num / den;
        assert!(want > 1e-4, "the perturbation is visible: {want}");
        assert!((got - want).abs() <= 1e-5 * want, "{got} vs {want}");
        assert_eq!(output_error(&w, &w, rows, cols, stats.hessian()), 0.0);
    }
}
