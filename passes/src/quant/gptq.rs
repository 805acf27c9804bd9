//! GPTQ (Frantar et al. 2022, "GPTQ: Accurate Post-Training Quantization
//! for Generative Pre-trained Transformers"), following the reference
//! implementation's `fasterquant`.
//!
//! GPTQ quantizes a weight one input row at a time and, after each row,
//! spreads that row's rounding error over the rows not yet quantized so that
//! the layer's output `X·W` moves as little as possible: with `U` the upper
//! Cholesky factor of `H⁻¹` (`H = XᵀX` dampened), row `i`'s error
//! `e = (w_i − q_i) / U_ii` is subtracted as `w_j −= U_ij·e` from every later
//! row `j`. Updates are applied lazily in blocks of rows (one `gemm` per
//! block), which changes only the order of floating-point operations.
//!
//! - **Dampening**: `damp · mean(diag H)` is added to the diagonal; if `H` is
//!   still not positive definite the dampening is raised ×10 and retried.
//! - **Dead inputs** (`H_ii = 0`, a feature that was always zero): `H_ii = 1`
//!   and the weight row is zeroed, as in the reference.
//! - **Activation order**: rows are processed by decreasing `H_ii`, so the
//!   most important ones are quantized while the most rows remain to absorb
//!   their error. Group parameters are then fixed up front from the original
//!   weight ("static groups"), so the result keeps the plain group-wise
//!   format: group `g` covers input rows `g·G..(g+1)·G` in the original order.
//! - **Without activation order** group parameters are taken when a group's
//!   first row is reached, from the group's rows as updated by every earlier
//!   row (the reference's behaviour when its block size equals the group).
//!
//! - **Without a group** (one scale per output column) the parameters come
//!   from the whole column after the dead-input fix, before any update.
//!
//! Codes follow `kiln_ir::quant::quantize_rtn`'s rules (f32 division,
//! rounding half away from zero where the reference's `torch.round` rounds
//! half to even, clamping to the code range; scales by
//! [`GroupParams::min_max`] or the clip search), so with `H = I` (nothing to
//! spread) GPTQ returns exactly RTN's bytes. The working weight and all
//! updates are f64; `scripts/ref/gptq_reference.py` is an independent
//! float64 NumPy implementation of the same algorithm that the tests compare
//! against.
//!
//! Columns (output channels) are independent in GPTQ; blocks of columns run
//! in parallel with a fixed split, and `gemm` never splits a sum between
//! threads, so the result never depends on thread scheduling. (`gemm` picks
//! its kernels by CPU features, so a machine with other SIMD units may
//! round the updates' last bits differently.)

use super::clip::{clip_params, code_of, range_params, search_group, ClipOptions, GroupParams};
use super::hessian::{check_hessian, check_weight, gemm_into, CalibError, Operand};
use gemm::Parallelism;
use half::f16;
use kiln_ir::quant::{PackedWeight, QuantError, QuantFormat};
use rayon::prelude::*;

/// Options of [`prepare`] and [`gptq`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GptqOptions {
    /// Dampening added to the Hessian's diagonal, relative to its mean
    /// diagonal (the reference's `percdamp`).
    pub damp: f64,
    /// Process input rows by decreasing `H_ii`, with static groups.
    pub act_order: bool,
    /// Rows per lazy batch update.
    pub block: usize,
    /// When set, group parameters come from the H-weighted clip search
    /// instead of plain min/max.
    pub clip: Option<ClipOptions>,
}

impl Default for GptqOptions {
    fn default() -> Self {
        GptqOptions {
            damp: 0.01,
            act_order: true,
            block: 128,
            clip: None,
        }
    }
}

/// Factorisations tried in [`prepare`]: the requested dampening, then ×10
/// each time.
const DAMP_TRIES: u32 = 5;

/// A Hessian ready for GPTQ, shared by every weight that reads the same
/// input (q/k/v, gate/up): dampened, permuted to the processing order, and
/// factored as `(H + λI)⁻¹ = UᵀU`.
#[derive(Clone, Debug)]
pub struct PreparedHessian {
    dim: usize,
    act_order: bool,
    damp: f64,
    tries: u32,
    perm: Vec<usize>,
    dead: Vec<bool>,
    h: Vec<f64>,
    u: Vec<f64>,
}

impl PreparedHessian {
    /// Input features.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Whether rows are processed in activation order.
    pub fn act_order(&self) -> bool {
        self.act_order
    }

    /// The relative dampening actually used (above the requested one when
    /// the factorisation had to be retried).
    pub fn damp(&self) -> f64 {
        self.damp
    }

    /// Factorisations needed: 1 when the requested dampening sufficed.
    pub fn tries(&self) -> u32 {
        self.tries
    }

    /// Processing order: position `p` quantizes input row `perm()[p]`.
    pub fn perm(&self) -> &[usize] {
        &self.perm
    }

    /// Number of dead inputs (`H_ii = 0`), whose weight rows are zeroed.
    pub fn dead_inputs(&self) -> usize {
        self.dead.iter().filter(|&&d| d).count()
    }

    /// The Hessian with dead inputs' diagonal set to 1, undampened, in the
    /// original order (what the clip search weighs groups by).
    pub fn hessian(&self) -> &[f64] {
        &self.h
    }

    /// `U`, the upper Cholesky factor of the dampened, permuted `H⁻¹`
    /// (row-major `dim × dim`, zeros below the diagonal).
    pub fn inverse_factor(&self) -> &[f64] {
        &self.u
    }
}

/// Prepares the `dim × dim` Hessian `h` (`XᵀX`, row-major) for [`gptq`]:
/// dead inputs, activation order and dampening as set in `opts`, then the
/// upper Cholesky factor of the inverse. Raises the dampening ×10 up to four
/// times when the matrix is not positive definite (see
/// [`PreparedHessian::tries`]) and fails after that.
pub fn prepare(h: &[f64], dim: usize, opts: &GptqOptions) -> Result<PreparedHessian, CalibError> {
    check_hessian(h, dim)?;
    if !(opts.damp >= 0.0 && opts.damp.is_finite()) {
        return Err(CalibError::Options {
            name: "gptq damp",
            value: opts.damp.to_string(),
            expected: "a finite number ≥ 0",
        });
    }
    let mut h = h.to_vec();
    let dead: Vec<bool> = (0..dim).map(|i| h[i * dim + i] == 0.0).collect();
    for (i, _) in dead.iter().enumerate().filter(|(_, &d)| d) {
        h[i * dim + i] = 1.0;
    }
    let mut perm: Vec<usize> = (0..dim).collect();
    if opts.act_order {
        // Stable: equal diagonals keep their original order.
        perm.sort_by(|&a, &b| h[b * dim + b].total_cmp(&h[a * dim + a]));
    }
    let mean_diag = (0..dim).map(|i| h[i * dim + i]).sum::<f64>() / dim.max(1) as f64;
    let mut damp = opts.damp;
    let mut tries = 0;
    loop {
        tries += 1;
        let lambda = damp * mean_diag;
        // The matrix in processing order, reversed (row and column p hold
        // processing position dim-1-p): the lower Cholesky factor L of the
        // reversed matrix gives U = J·L⁻¹·J, the upper Cholesky factor of the
        // inverse, with one factorisation and one triangular inverse.
        let mut a = vec![0.0f64; dim * dim];
        for p in 0..dim {
            let i = perm[dim - 1 - p];
            for q in 0..=p {
                let j = perm[dim - 1 - q];
                a[p * dim + q] = h[i * dim + j];
            }
            a[p * dim + p] += lambda;
        }
        if cholesky_lower(&mut a, dim) {
            let x = invert_lower(&a, dim);
            let mut u = vec![0.0f64; dim * dim];
            for p in 0..dim {
                for q in p..dim {
                    u[p * dim + q] = x[(dim - 1 - p) * dim + (dim - 1 - q)];
                }
            }
            return Ok(PreparedHessian {
                dim,
                act_order: opts.act_order,
                damp,
                tries,
                perm,
                dead,
                h,
                u,
            });
        }
        if tries == DAMP_TRIES {
            return Err(CalibError::NotPositiveDefinite { dim, damp, tries });
        }
        damp = if damp > 0.0 { damp * 10.0 } else { 0.01 };
    }
}

/// Output columns per parallel task. Fixed, so the order of every
/// floating-point operation is too.
const GPTQ_COLUMNS: usize = 64;

/// Quantizes a `[rows, cols]` weight with GPTQ against a prepared Hessian of
/// its input (`prepared.dim() == rows`). `opts.act_order` must match the
/// preparation; `opts.damp` is not used here (it was applied by
/// [`prepare`]).
pub fn gptq(
    w: &[f32],
    rows: usize,
    cols: usize,
    prepared: &PreparedHessian,
    format: QuantFormat,
    opts: &GptqOptions,
) -> Result<PackedWeight, CalibError> {
    check_weight(w, rows, cols)?;
    if rows != prepared.dim {
        return Err(CalibError::DimMismatch {
            rows,
            dim: prepared.dim,
        });
    }
    if opts.act_order != prepared.act_order {
        return Err(CalibError::ActOrderMismatch {
            prepared: prepared.act_order,
            requested: opts.act_order,
        });
    }
    if let Some(c) = &opts.clip {
        c.check()?;
    }
    if opts.block == 0 {
        return Err(CalibError::Options {
            name: "gptq block",
            value: "0".into(),
            expected: "at least 1",
        });
    }
    let groups = format.groups_per_column(rows);
    let mut w0 = w.to_vec();
    for (r, _) in prepared.dead.iter().enumerate().filter(|(_, &d)| d) {
        w0[r * cols..(r + 1) * cols].fill(0.0);
    }
    let fixed = if prepared.act_order {
        Some(match &opts.clip {
            Some(c) => clip_params(&w0, rows, cols, &prepared.h, format, c)?,
            None => GroupParams::min_max(&w0, rows, cols, format)?,
        })
    } else {
        None
    };
    let job = Job {
        w: &w0,
        rows,
        cols,
        prepared,
        format,
        block: opts.block,
        clip: opts.clip,
        fixed: fixed.as_ref(),
    };
    let starts: Vec<usize> = (0..cols).step_by(GPTQ_COLUMNS).collect();
    let parts: Vec<Result<ColumnBlock, CalibError>> = starts
        .par_iter()
        .map(|&c0| job.run(c0, GPTQ_COLUMNS.min(cols - c0)))
        .collect();
    let mut codes = Vec::with_capacity(rows * cols);
    let mut scales = Vec::with_capacity(cols * groups);
    let mut zeros = Vec::new();
    for part in parts {
        let part = part?;
        codes.extend_from_slice(&part.codes);
        scales.extend_from_slice(&part.scales);
        zeros.extend_from_slice(&part.zeros);
    }
    let zeros = (!format.symmetric()).then_some(zeros);
    Ok(PackedWeight::from_codes(
        format, rows, cols, &codes, scales, zeros,
    )?)
}

/// The shared inputs of one GPTQ run.
struct Job<'a> {
    w: &'a [f32],
    rows: usize,
    cols: usize,
    prepared: &'a PreparedHessian,
    format: QuantFormat,
    block: usize,
    clip: Option<ClipOptions>,
    fixed: Option<&'a GroupParams>,
}

/// Codes (output-major), scales and zero points of a block of columns.
struct ColumnBlock {
    codes: Vec<u8>,
    scales: Vec<f16>,
    zeros: Vec<u8>,
}

impl Job<'_> {
    /// GPTQ of columns `c0..c0 + width`.
    fn run(&self, c0: usize, width: usize) -> Result<ColumnBlock, CalibError> {
        let (rows, cols, format) = (self.rows, self.cols, self.format);
        let (perm, u) = (&self.prepared.perm, &self.prepared.u);
        let groups = format.groups_per_column(rows);
        let glen = format.group_len(rows);
        let max_code = f32::from(format.max_code());
        // Working copy in processing order, row-major `rows × width`.
        let mut wk = vec![0.0f64; rows * width];
        for (p, row) in wk.chunks_exact_mut(width).enumerate() {
            let r = perm[p];
            for (d, &v) in row
                .iter_mut()
                .zip(&self.w[r * cols + c0..r * cols + c0 + width])
            {
                *d = f64::from(v);
            }
        }
        // Parameters of every (group, column), `params[g·width + k]`.
        let mut params = vec![(f16::ONE, 0u8); groups * width];
        if let Some(fixed) = self.fixed {
            for g in 0..groups {
                for k in 0..width {
                    params[g * width + k] = fixed.get(c0 + k, g);
                }
            }
        }
        // Dynamic groups read their rows when reached, so every update from
        // earlier rows must have landed: blocks end on group boundaries.
        let block = if self.fixed.is_none() && groups > 1 {
            self.block.div_ceil(glen) * glen
        } else {
            self.block
        };
        let mut codes = vec![0u8; width * rows];
        let mut err = vec![0.0f64; block.min(rows) * width];
        let mut i1 = 0;
        while i1 < rows {
            let i2 = (i1 + block).min(rows);
            for i in i1..i2 {
                if self.fixed.is_none() && i % glen == 0 {
                    self.group_start(&wk, i, width, c0, &mut params)?;
                }
                let r = perm[i];
                let g = r / glen;
                let d = u[i * rows + i];
                let (done, rest) = wk.split_at_mut((i + 1) * width);
                let wi = &done[i * width..];
                let e = &mut err[(i - i1) * width..(i - i1 + 1) * width];
                for k in 0..width {
                    let (s, z) = params[g * width + k];
                    let (s, z) = (s.to_f32(), f32::from(z));
                    let c = code_of(wi[k] as f32, s, z, max_code);
                    codes[k * rows + r] = c as u8;
                    let q = f64::from(c - z) * f64::from(s);
                    e[k] = (wi[k] - q) / d;
                }
                for (j, wj) in (i + 1..i2).zip(rest.chunks_exact_mut(width)) {
                    let uij = u[i * rows + j];
                    for (x, &ek) in wj.iter_mut().zip(e.iter()) {
                        *x -= uij * ek;
                    }
                }
            }
            if i2 < rows {
                // W[i2..] −= U[i1..i2, i2..]ᵀ · E
                let (_, tail) = wk.split_at_mut(i2 * width);
                gemm_into(
                    (rows - i2, width, i2 - i1),
                    tail,
                    width,
                    true,
                    Operand::new(u, i1 * rows + i2, 1, rows),
                    Operand::new(&err, 0, width, 1),
                    -1.0,
                    Parallelism::None,
                );
            }
            i1 = i2;
        }
        let mut scales = Vec::with_capacity(width * groups);
        let mut zeros = Vec::new();
        for k in 0..width {
            for g in 0..groups {
                let (s, z) = params[g * width + k];
                scales.push(s);
                if !format.symmetric() {
                    zeros.push(z);
                }
            }
        }
        Ok(ColumnBlock {
            codes,
            scales,
            zeros,
        })
    }

    /// Parameters of the group starting at row `i` (dynamic groups, no
    /// activation order, so processing order is the original order), from
    /// the rows as updated so far.
    fn group_start(
        &self,
        wk: &[f64],
        i: usize,
        width: usize,
        c0: usize,
        params: &mut [(f16, u8)],
    ) -> Result<(), CalibError> {
        let glen = self.format.group_len(self.rows);
        let g = i / glen;
        let len = glen.min(self.rows - i);
        let vals: Vec<f32> = wk[i * width..(i + len) * width]
            .iter()
            .map(|&v| v as f32)
            .collect();
        let overflow = |(k, range): (usize, f32)| {
            CalibError::from(QuantError::ScaleOverflow {
                col: c0 + k,
                group: g,
                range,
            })
        };
        let found = match &self.clip {
            Some(c) => {
                let h = &self.prepared.h;
                let hg: Vec<f32> = (i..i + len)
                    .flat_map(|a| (i..i + len).map(move |b| h[a * self.rows + b] as f32))
                    .collect();
                search_group(&vals, len, width, &hg, self.format, &c.factors()).map_err(overflow)?
            }
            None => {
                let mut out = Vec::with_capacity(width);
                for k in 0..width {
                    let (lo, hi) = vals
                        .iter()
                        .skip(k)
                        .step_by(width)
                        .fold((0.0f32, 0.0f32), |(lo, hi), &v| (lo.min(v), hi.max(v)));
                    out.push(range_params(lo, hi, self.format).map_err(|r| overflow((k, r)))?);
                }
                out
            }
        };
        params[g * width..(g + 1) * width].copy_from_slice(&found);
        Ok(())
    }
}

/// Diagonal blocks of the blocked Cholesky factorisation and triangular
/// inverse.
const LA_BLOCK: usize = 64;

/// In-place lower Cholesky factorisation `A = L·Lᵀ` of a symmetric `n × n`
/// row-major matrix, reading only its lower triangle; the strict upper
/// triangle is zeroed. Returns false (leaving `a` partly overwritten) when
/// `A` is not numerically positive definite.
///
/// Right-looking and blocked: after a diagonal block is factored, the panel
/// below it is `A21·L11⁻ᵀ` and the lower trapezoid of the trailing matrix
/// is updated by `−P·Pᵀ`, both through `gemm`.
pub(crate) fn cholesky_lower(a: &mut [f64], n: usize) -> bool {
    let (mut old, mut panel) = (Vec::new(), Vec::new());
    for k0 in (0..n).step_by(LA_BLOCK) {
        let k1 = (k0 + LA_BLOCK).min(n);
        let kb = k1 - k0;
        for j in k0..k1 {
            let mut d = a[j * n + j];
            for t in k0..j {
                d -= a[j * n + t] * a[j * n + t];
            }
            if !(d > 0.0 && d.is_finite()) {
                return false;
            }
            let ljj = d.sqrt();
            a[j * n + j] = ljj;
            for i in j + 1..k1 {
                let mut s = a[i * n + j];
                for t in k0..j {
                    s -= a[i * n + t] * a[j * n + t];
                }
                a[i * n + j] = s / ljj;
            }
        }
        if k1 == n {
            break;
        }
        let x11 = invert_diagonal_block(a, n, k0, kb);
        let m = n - k1;
        let (_, tail) = a.split_at_mut(k1 * n);
        old.clear();
        for row in tail.chunks_exact(n) {
            old.extend_from_slice(&row[k0..k1]);
        }
        // P = A21 · X11ᵀ with X11 = L11⁻¹.
        panel.clear();
        panel.resize(m * kb, 0.0);
        gemm_into(
            (m, kb, kb),
            &mut panel,
            kb,
            false,
            Operand::new(&old, 0, kb, 1),
            Operand::new(&x11, 0, 1, kb),
            1.0,
            Parallelism::Rayon(0),
        );
        for (row, p) in tail.chunks_exact_mut(n).zip(panel.chunks_exact(kb)) {
            row[k0..k1].copy_from_slice(p);
        }
        // A22 −= P·Pᵀ, lower trapezoid only: rows r0..r1 of the trailing
        // matrix need columns up to r1.
        for r0 in (0..m).step_by(2 * LA_BLOCK) {
            let r1 = (r0 + 2 * LA_BLOCK).min(m);
            gemm_into(
                (r1 - r0, r1, kb),
                &mut tail[r0 * n + k1..],
                n,
                true,
                Operand::new(&panel, r0 * kb, kb, 1),
                Operand::new(&panel, 0, 1, kb),
                -1.0,
                Parallelism::Rayon(0),
            );
        }
    }
    for i in 0..n {
        a[i * n + i + 1..(i + 1) * n].fill(0.0);
    }
    true
}

/// The inverse of the lower-triangular diagonal block `l[k0..k0+kb,
/// k0..k0+kb]` of an `n × n` row-major matrix, `kb × kb`, by forward
/// substitution.
fn invert_diagonal_block(l: &[f64], n: usize, k0: usize, kb: usize) -> Vec<f64> {
    let mut x = vec![0.0f64; kb * kb];
    for c in 0..kb {
        x[c * kb + c] = 1.0 / l[(k0 + c) * n + k0 + c];
        for r in c + 1..kb {
            let mut s = 0.0;
            for k in c..r {
                s += l[(k0 + r) * n + k0 + k] * x[k * kb + c];
            }
            x[r * kb + c] = -s / l[(k0 + r) * n + k0 + r];
        }
    }
    x
}

/// The inverse of a lower-triangular `n × n` matrix with a positive
/// diagonal (row-major), by block rows: `X_ii = L_ii⁻¹` and
/// `X_i,<i = −X_ii·(L_i,<i·X_<i,<i)`, skipping the zero blocks of `X`.
pub(crate) fn invert_lower(l: &[f64], n: usize) -> Vec<f64> {
    let mut x = vec![0.0f64; n * n];
    let mut t = Vec::new();
    for i0 in (0..n).step_by(LA_BLOCK) {
        let i1 = (i0 + LA_BLOCK).min(n);
        let ib = i1 - i0;
        let xii = invert_diagonal_block(l, n, i0, ib);
        for r in 0..ib {
            x[(i0 + r) * n + i0..(i0 + r) * n + i1].copy_from_slice(&xii[r * ib..(r + 1) * ib]);
        }
        if i0 == 0 {
            continue;
        }
        // T = L[i, ..i0] · X[..i0, ..i0]; column block j of X is zero above
        // row j0, so each column block sums from j0 on.
        t.clear();
        t.resize(ib * i0, 0.0);
        for j0 in (0..i0).step_by(LA_BLOCK) {
            let j1 = (j0 + LA_BLOCK).min(i0);
            gemm_into(
                (ib, j1 - j0, i0 - j0),
                &mut t[j0..],
                i0,
                false,
                Operand::new(l, i0 * n + j0, n, 1),
                Operand::new(&x, j0 * n + j0, n, 1),
                1.0,
                Parallelism::Rayon(0),
            );
        }
        let (_, rows) = x.split_at_mut(i0 * n);
        gemm_into(
            (ib, i0, ib),
            rows,
            n,
            false,
            Operand::new(&xii, 0, ib, 1),
            Operand::new(&t, 0, i0, 1),
            -1.0,
            Parallelism::Rayon(0),
        );
    }
    x
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::hessian::output_error;
    use crate::quant::hessian::tests::{correlated_inputs, naive_xtx, weight, Rng};
    use crate::quant::hessian::InputStats;
    use kiln_ir::quant::{dequantize, quantize_rtn};
    use std::path::PathBuf;

    fn fmt(text: &str) -> QuantFormat {
        QuantFormat::parse(text).unwrap()
    }

    fn hessian_of(x: &[f32], dim: usize) -> Vec<f64> {
        let mut stats = InputStats::new(dim);
        stats.add(x).unwrap();
        stats.hessian().to_vec()
    }

    fn run(
        w: &[f32],
        rows: usize,
        cols: usize,
        h: &[f64],
        f: QuantFormat,
        opts: &GptqOptions,
    ) -> PackedWeight {
        let p = prepare(h, rows, opts).unwrap();
        gptq(w, rows, cols, &p, f, opts).unwrap()
    }

    /// A random symmetric positive definite matrix `AᵀA/m + 0.1·I`.
    fn spd(n: usize, seed: u64) -> Vec<f64> {
        let mut rng = Rng::new(seed);
        let m = n + 7;
        let a: Vec<f64> = (0..m * n).map(|_| rng.normal()).collect();
        let mut h = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..n {
                let mut s = 0.0;
                for k in 0..m {
                    s += a[k * n + i] * a[k * n + j];
                }
                h[i * n + j] = s / m as f64 + if i == j { 0.1 } else { 0.0 };
            }
        }
        h
    }

    /// The blocked, parallel Cholesky factor equals the textbook
    /// column-by-column one, and the blocked triangular inverse is an
    /// inverse; sizes straddle the 64-row block.
    #[test]
    fn quant_cholesky_and_inverse_match_naive() {
        for n in [1, 5, 64, 150, 300] {
            let h = spd(n, n as u64);
            let mut l = h.clone();
            assert!(cholesky_lower(&mut l, n));
            let mut naive = vec![0.0f64; n * n];
            for j in 0..n {
                let mut d = h[j * n + j];
                for k in 0..j {
                    d -= naive[j * n + k] * naive[j * n + k];
                }
                naive[j * n + j] = d.sqrt();
                for i in j + 1..n {
                    let mut s = h[i * n + j];
                    for k in 0..j {
                        s -= naive[i * n + k] * naive[j * n + k];
                    }
                    naive[i * n + j] = s / naive[j * n + j];
                }
            }
            for (i, (a, b)) in l.iter().zip(&naive).enumerate() {
                assert!(
                    (a - b).abs() <= 1e-12 * (1.0 + b.abs()),
                    "n {n} entry {i}: {a} vs {b}"
                );
            }
            let x = invert_lower(&l, n);
            for i in 0..n {
                for j in 0..n {
                    let s: f64 = (0..n).map(|k| x[i * n + k] * l[k * n + j]).sum();
                    let want = if i == j { 1.0 } else { 0.0 };
                    assert!((s - want).abs() < 1e-10, "n {n}: (L⁻¹L)[{i},{j}] = {s}");
                    if j > i {
                        assert_eq!(x[i * n + j], 0.0);
                    }
                }
            }
        }
        let mut not_pd = vec![1.0, 2.0, 2.0, 1.0];
        assert!(!cholesky_lower(&mut not_pd, 2));
    }

    /// `U` is upper triangular with `UᵀU = (P·H·Pᵀ + λI)⁻¹` in processing
    /// order, dead inputs get `H_ii = 1`, and the order is by decreasing
    /// diagonal.
    #[test]
    fn quant_prepared_factor_inverts_the_damped_hessian() {
        let n = 90;
        let mut h = spd(n, 4);
        for j in 0..n {
            h[7 * n + j] = 0.0;
            h[j * n + 7] = 0.0;
        }
        let opts = GptqOptions::default();
        let p = prepare(&h, n, &opts).unwrap();
        assert_eq!((p.tries(), p.dead_inputs(), p.damp()), (1, 1, 0.01));
        let perm = p.perm();
        assert!(perm
            .windows(2)
            .all(|w| p.h[w[0] * n + w[0]] >= p.h[w[1] * n + w[1]]));
        assert_eq!(p.hessian()[7 * n + 7], 1.0);
        let mean = (0..n).map(|i| p.h[i * n + i]).sum::<f64>() / n as f64;
        let u = p.inverse_factor();
        for i in 0..n {
            for j in 0..n {
                // (UᵀU · Hd)[i, j] with Hd the damped Hessian in processing order.
                let mut s = 0.0;
                for k in 0..n {
                    let uu: f64 = (0..=i.min(k)).map(|t| u[t * n + i] * u[t * n + k]).sum();
                    let hd = p.h[perm[k] * n + perm[j]] + if k == j { 0.01 * mean } else { 0.0 };
                    s += uu * hd;
                }
                let want = if i == j { 1.0 } else { 0.0 };
                assert!((s - want).abs() < 1e-9, "[{i},{j}] = {s}");
                if j < i {
                    assert_eq!(u[i * n + j], 0.0);
                }
            }
        }
    }

    /// An indefinite Hessian is factored after raising the dampening, and
    /// one that no dampening fixes is an error naming the last dampening.
    #[test]
    fn quant_prepare_raises_damp_until_positive_definite() {
        // Eigenvalues 3 and -0.5·mean-ish: diag mean 1.25, needs λ > 0.5.
        let h = [1.25, 1.75, 1.75, 1.25];
        let p = prepare(&h, 2, &GptqOptions::default()).unwrap();
        assert_eq!(p.tries(), 3, "0.01 and 0.1 fail, 1.0 works");
        assert_eq!(p.damp(), 0.01 * 10.0 * 10.0);
        let bad = [-1.0, 0.0, 0.0, -1.0];
        let err = prepare(&bad, 2, &GptqOptions::default()).unwrap_err();
        assert!(
            matches!(err, CalibError::NotPositiveDefinite { tries: 5, .. }),
            "{err}"
        );
    }

    /// With `H = I` nothing is spread, so GPTQ is RTN bit for bit, with and
    /// without activation order, for every format (short last groups
    /// included).
    #[test]
    fn quant_gptq_with_identity_hessian_is_rtn() {
        for (rows, cols) in [(100, 70), (64, 5)] {
            let mut h = vec![0.0f64; rows * rows];
            for i in 0..rows {
                h[i * rows + i] = 1.0;
            }
            let w = weight(rows, cols, rows as u64);
            for f in QuantFormat::all() {
                let rtn = quantize_rtn(&w, rows, cols, f).unwrap();
                for act_order in [false, true] {
                    let opts = GptqOptions {
                        act_order,
                        ..GptqOptions::default()
                    };
                    let got = run(&w, rows, cols, &h, f, &opts);
                    assert_eq!(got, rtn, "{f} {rows}x{cols} act_order {act_order}");
                }
            }
        }
    }

    /// On correlated inputs with large channels GPTQ lowers the output error
    /// well below RTN's, in both orders, and more bits mean less error.
    #[test]
    fn quant_gptq_beats_rtn() {
        let (rows, cols) = (192, 96);
        let x = correlated_inputs(4 * rows, rows, 41);
        let h = hessian_of(&x, rows);
        let w = weight(rows, cols, 42);
        let err = |f: QuantFormat, opts: Option<&GptqOptions>| {
            let q = match opts {
                Some(o) => run(&w, rows, cols, &h, f, o),
                None => quantize_rtn(&w, rows, cols, f).unwrap(),
            };
            output_error(&w, &dequantize(&q), rows, cols, &h)
        };
        let clip = GptqOptions {
            clip: Some(ClipOptions::default()),
            ..GptqOptions::default()
        };
        let no_order = GptqOptions {
            act_order: false,
            ..GptqOptions::default()
        };
        for f in ["w4g32", "w4g64", "w3g64", "w4g64a", "w3g32a", "w4", "w8"] {
            let f = fmt(f);
            let rtn = err(f, None);
            let ordered = err(f, Some(&GptqOptions::default()));
            let plain = err(f, Some(&no_order));
            let clipped = err(f, Some(&clip));
            eprintln!(
                "{f}: rtn {rtn:.4e}, gptq {ordered:.4e}, no act order {plain:.4e}, with clip {clipped:.4e}"
            );
            assert!(ordered < 0.8 * rtn, "{f}: gptq {ordered} vs rtn {rtn}");
            assert!(
                plain < 0.8 * rtn,
                "{f}: gptq without act order {plain} vs rtn {rtn}"
            );
            assert!(clipped < rtn, "{f}: gptq with clip {clipped} vs rtn {rtn}");
        }
        let by_bits: Vec<f64> = ["w3g64", "w4g64", "w8g64"]
            .iter()
            .map(|f| err(fmt(f), Some(&GptqOptions::default())))
            .collect();
        assert!(
            by_bits[0] > 3.0 * by_bits[1] && by_bits[1] > 20.0 * by_bits[2],
            "{by_bits:?}"
        );
    }

    /// Same inputs, same bytes: repeated runs, one thread or two, and a
    /// Hessian prepared once and shared by two weights (as q/k/v share one)
    /// all agree, and a weight's columns quantize as they do inside a wider
    /// weight (GPTQ treats output columns independently).
    #[test]
    fn quant_gptq_is_deterministic_and_shares_prepared_hessians() {
        let (rows, cols) = (150, 130);
        let x = correlated_inputs(4 * rows, rows, 51);
        let h = hessian_of(&x, rows);
        let w = weight(rows, cols, 52);
        let f = fmt("w4g32a");
        for opts in [
            GptqOptions::default(),
            GptqOptions {
                act_order: false,
                clip: Some(ClipOptions::default()),
                block: 32,
                ..GptqOptions::default()
            },
        ] {
            let p = prepare(&h, rows, &opts).unwrap();
            let a = gptq(&w, rows, cols, &p, f, &opts).unwrap();
            let b = gptq(&w, rows, cols, &p, f, &opts).unwrap();
            assert_eq!(a, b);
            let one = rayon::ThreadPoolBuilder::new()
                .num_threads(1)
                .build()
                .unwrap();
            let c = one.install(|| run(&w, rows, cols, &h, f, &opts));
            assert_eq!(a, c, "one thread");
            // The first 64 columns alone, and the rest alone, with the same
            // prepared Hessian.
            let split = 64;
            let left: Vec<f32> = w
                .chunks_exact(cols)
                .flat_map(|r| r[..split].to_vec())
                .collect();
            let right: Vec<f32> = w
                .chunks_exact(cols)
                .flat_map(|r| r[split..].to_vec())
                .collect();
            let l = gptq(&left, rows, split, &p, f, &opts).unwrap();
            let r = gptq(&right, rows, cols - split, &p, f, &opts).unwrap();
            let (da, dl, dr) = (dequantize(&a), dequantize(&l), dequantize(&r));
            for row in 0..rows {
                assert_eq!(
                    &da[row * cols..row * cols + split],
                    &dl[row * split..(row + 1) * split]
                );
                assert_eq!(
                    &da[row * cols + split..(row + 1) * cols],
                    &dr[row * (cols - split)..(row + 1) * (cols - split)]
                );
            }
        }
    }

    /// Lazy batching only reorders floating-point operations: block sizes
    /// of 1, 16 and 128 give the same output error and (but for rare ties)
    /// the same codes.
    #[test]
    fn quant_gptq_block_size_does_not_change_the_result() {
        let (rows, cols) = (160, 40);
        let x = correlated_inputs(4 * rows, rows, 61);
        let h = hessian_of(&x, rows);
        let w = weight(rows, cols, 62);
        for act_order in [true, false] {
            let results: Vec<Vec<f32>> = [128, 16, 1]
                .iter()
                .map(|&block| {
                    let opts = GptqOptions {
                        act_order,
                        block,
                        ..GptqOptions::default()
                    };
                    dequantize(&run(&w, rows, cols, &h, fmt("w4g32"), &opts))
                })
                .collect();
            let e0 = output_error(&w, &results[0], rows, cols, &h);
            for r in &results[1..] {
                let same = r.iter().zip(&results[0]).filter(|(a, b)| a == b).count();
                assert!(
                    same as f64 >= 0.999 * r.len() as f64,
                    "{same} of {}",
                    r.len()
                );
                let e = output_error(&w, r, rows, cols, &h);
                assert!((e - e0).abs() <= 1e-3 * e0, "{e} vs {e0}");
            }
        }
    }

    /// Dead inputs (never active) are zeroed, not quantized against noise,
    /// and leave the other rows' result valid.
    #[test]
    fn quant_gptq_zeroes_dead_inputs() {
        let (rows, cols) = (64, 16);
        let mut x = correlated_inputs(4 * rows, rows, 71);
        for row in x.chunks_exact_mut(rows) {
            row[5] = 0.0;
            row[40] = 0.0;
        }
        let h = hessian_of(&x, rows);
        let w = weight(rows, cols, 72);
        let q = dequantize(&run(
            &w,
            rows,
            cols,
            &h,
            fmt("w4g32"),
            &GptqOptions::default(),
        ));
        for c in 0..cols {
            assert_eq!((q[5 * cols + c], q[40 * cols + c]), (0.0, 0.0));
        }
        let rtn = dequantize(&quantize_rtn(&w, rows, cols, fmt("w4g32")).unwrap());
        assert!(output_error(&w, &q, rows, cols, &h) < output_error(&w, &rtn, rows, cols, &h));
    }

    fn write_le<T: Copy>(path: &std::path::Path, v: &[T], to: impl Fn(T) -> Vec<u8>) {
        let bytes: Vec<u8> = v.iter().flat_map(|&x| to(x)).collect();
        std::fs::write(path, bytes).unwrap();
    }

    fn python() -> Option<PathBuf> {
        let cache = std::env::var_os("KILN_CACHE")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/kiln")))?;
        let py = cache.join("venv/bin/python");
        py.exists().then_some(py)
    }

    /// GPTQ agrees with the independent float64 NumPy implementation
    /// `scripts/ref/gptq_reference.py` (written from the paper and the
    /// reference `fasterquant`): same scales and zero points, the same codes
    /// but for rare rounding ties, and the same output error to 1e-6.
    /// Covers activation order with static groups, dynamic groups, a dead
    /// input, asymmetric and per-channel formats and a short last group.
    #[test]
    fn quant_gptq_matches_numpy_reference() {
        let Some(py) = python() else {
            eprintln!("skipping: no Python venv at $KILN_CACHE/venv or ~/.cache/kiln/venv");
            return;
        };
        let script =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/ref/gptq_reference.py");
        /// Removes the scratch directory however the test ends.
        struct Scratch(PathBuf);
        impl Drop for Scratch {
            fn drop(&mut self) {
                std::fs::remove_dir_all(&self.0).ok();
            }
        }
        let scratch =
            Scratch(std::env::temp_dir().join(format!("kiln-gptq-ref-{}", std::process::id())));
        let dir = scratch.0.clone();
        std::fs::create_dir_all(&dir).unwrap();
        // (rows, cols, format, act_order, block): blocks of 32 make the
        // lazy batch updates run, including a short last block.
        let cases = [
            (96, 40, "w4g32", true, 128),
            (96, 40, "w4g32", true, 32),
            (96, 40, "w4g32", false, 128),
            (96, 40, "w3g32a", true, 32),
            (100, 24, "w4g32a", true, 32),
            (100, 24, "w4g64", false, 32),
            (96, 40, "w4", true, 128),
            (96, 40, "w8a", false, 32),
        ];
        for (rows, cols, f, act_order, block) in cases {
            let mut x = correlated_inputs(4 * rows, rows, 81 + rows as u64);
            for row in x.chunks_exact_mut(rows) {
                row[9] = 0.0;
            }
            let h = naive_xtx(&x, rows);
            let w = weight(rows, cols, 82);
            let opts = GptqOptions {
                act_order,
                block,
                ..GptqOptions::default()
            };
            let got = run(&w, rows, cols, &h, fmt(f), &opts);
            write_le(&dir.join("w.f32"), &w, |v| v.to_le_bytes().to_vec());
            write_le(&dir.join("h.f64"), &h, |v| v.to_le_bytes().to_vec());
            let out = dir.join(format!("out-{f}-{act_order}-{rows}-{block}"));
            let status = std::process::Command::new(&py)
                .arg(&script)
                .args([
                    "--rows",
                    &rows.to_string(),
                    "--cols",
                    &cols.to_string(),
                    "--format",
                    f,
                ])
                .args([
                    "--act-order",
                    if act_order { "1" } else { "0" },
                    "--damp",
                    "0.01",
                ])
                .args(["--block", &block.to_string()])
                .arg("--w")
                .arg(dir.join("w.f32"))
                .arg("--h")
                .arg(dir.join("h.f64"))
                .arg("--out")
                .arg(&out)
                .status()
                .unwrap();
            assert!(status.success(), "{} failed", script.display());
            let read = |name: &str| std::fs::read(out.join(name)).unwrap();
            let want_scales: Vec<u16> = read("scales.u16")
                .chunks_exact(2)
                .map(|b| u16::from_le_bytes([b[0], b[1]]))
                .collect();
            let got_scales: Vec<u16> = got.scales().iter().map(|s| s.to_bits()).collect();
            assert_eq!(got_scales, want_scales, "{f} act_order {act_order}: scales");
            if !fmt(f).symmetric() {
                assert_eq!(got.zeros().unwrap(), &read("zeros.u8")[..], "{f}: zeros");
            }
            let want_codes = read("codes.u8");
            let mut differ = 0;
            for c in 0..cols {
                let codes = got.column_codes(c);
                for r in 0..rows {
                    differ += usize::from(codes[r] != want_codes[r * cols + c]);
                }
            }
            let want_deq: Vec<f32> = read("deq.f64")
                .chunks_exact(8)
                .map(|b| f64::from_le_bytes(b.try_into().unwrap()) as f32)
                .collect();
            let text = String::from_utf8(read("error.txt")).unwrap();
            let mut fields = text.split_whitespace();
            let want_err: f64 = fields.next().unwrap().parse().unwrap();
            let tries: u32 = fields.next().unwrap().parse().unwrap();
            let deq = dequantize(&got);
            let got_err = output_error(&w, &deq, rows, cols, &h);
            let ref_err = output_error(&w, &want_deq, rows, cols, &h);
            eprintln!(
                "{f} act_order {act_order} block {block} {rows}x{cols}: {differ} codes differ, error {got_err:.6e} (reference {want_err:.6e})"
            );
            assert_eq!(tries, 1);
            assert!(differ * 1000 <= rows * cols, "{f}: {differ} codes differ");
            assert!(
                (ref_err - want_err).abs() <= 1e-9 * want_err,
                "output_error {ref_err} vs NumPy {want_err}"
            );
            assert!(
                (got_err - want_err).abs() <= 1e-6 * want_err,
                "{f}: error {got_err} vs {want_err}"
            );
            assert!(
                got_err
                    < output_error(
                        &w,
                        &dequantize(&quantize_rtn(&w, rows, cols, fmt(f)).unwrap()),
                        rows,
                        cols,
                        &h
                    )
            );
        }
    }
}
