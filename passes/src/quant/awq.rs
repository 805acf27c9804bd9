//! AWQ's per-input-channel scale search (Lin et al. 2023, "AWQ:
//! Activation-aware Weight Quantization", as in llm-awq's `auto_scale`).
//!
//! Input channels with large activations matter most to the output. AWQ
//! multiplies weight row `i` by `s_i > 1` for such channels before
//! round-to-nearest (so their relative rounding error shrinks) and divides
//! the input by `s_i` (folded into the previous operation), which leaves the
//! unquantized product unchanged. The scales are `s = mean|x|^α`,
//! normalised by `sqrt(max(s)·min(s))`, with `α` picked from a grid by the
//! output error of the quantized weights. Here the error is measured with the
//! input Hessian, `tr(ΔWᵀ·H·ΔW) = ‖X·ΔW‖²`, instead of re-running the layer on
//! sampled activations; it is summed over the weights that share the input
//! (q/k/v, or gate/up).

use super::clip::fake_quantize_rtn;
use super::hessian::{check_weight, relative, trace_quad, CalibError, InputStats};
use gemm::Parallelism;
use kiln_ir::quant::QuantFormat;
use rayon::prelude::*;

/// Options of the scale search.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AwqOptions {
    /// Exponents tried: `α = k / grid` for `k = 0..grid`.
    pub grid: usize,
}

impl Default for AwqOptions {
    fn default() -> Self {
        AwqOptions { grid: 20 }
    }
}

/// The result of [`awq_scales`].
#[derive(Clone, Debug, PartialEq)]
pub struct AwqScales {
    /// One scale per input channel: multiply weight row `i` by `scales[i]`
    /// and divide input channel `i` by it.
    pub scales: Vec<f32>,
    /// The exponent chosen.
    pub alpha: f64,
    /// Relative output error of plain RTN (`α = 0`):
    /// `Σ tr(ΔWᵀ·H·ΔW) / Σ tr(Wᵀ·H·W)` over the weights.
    pub error_before: f64,
    /// The same relative error with the chosen scales (never above
    /// `error_before`).
    pub error_after: f64,
}

/// Mean `|x|` below this is raised to it before the exponent, so dead
/// channels get a small finite scale rather than 0.
const MIN_MEAN_ABS: f64 = 1e-4;

/// Searches AWQ's input-channel scales for the weights sharing one input.
///
/// `weights` holds `(w, cols)` pairs, each `w` a `[stats.dim(), cols]`
/// row-major weight. Every `α = k/grid` (`k = 0..grid`) is tried: `s =
/// max(mean|x|, 1e-4)^α / sqrt(max(s)·min(s))`, each weight is quantized as
/// `Q = RTN(diag(s)·W)` and its effective weight is `Ŵ = diag(1/s)·deq(Q)`;
/// the error is `Σ tr((W − Ŵ)ᵀ·H·(W − Ŵ))`. The smallest error wins (ties
/// keep the smaller `α`), and since `α = 0` is plain RTN, AWQ never does worse
/// than RTN in this measure. Deterministic; exponents run in parallel.
pub fn awq_scales(
    weights: &[(&[f32], usize)],
    stats: &InputStats,
    format: QuantFormat,
    opts: &AwqOptions,
) -> Result<AwqScales, CalibError> {
    let dim = stats.dim();
    if opts.grid == 0 {
        return Err(CalibError::Options {
            name: "awq grid",
            value: "0".into(),
            expected: "at least 1",
        });
    }
    for &(w, cols) in weights {
        check_weight(w, dim, cols)?;
    }
    // f32 products: the errors compared differ by far more than f32
    // rounding of sums over `dim` terms.
    let h: Vec<f32> = stats.hessian().iter().map(|&v| v as f32).collect();
    let den: f64 = weights
        .iter()
        .map(|&(w, cols)| trace_quad(&h, w, dim, cols, Parallelism::Rayon(0)))
        .sum();
    let mean: Vec<f64> = stats
        .mean_abs()
        .iter()
        .map(|&m| m.max(MIN_MEAN_ABS))
        .collect();
    let candidates: Vec<Result<(f64, Vec<f32>), CalibError>> = (0..opts.grid)
        .into_par_iter()
        .map(|k| {
            let alpha = k as f64 / opts.grid as f64;
            let s = channel_scales(&mean, alpha);
            let mut err = 0.0f64;
            for &(w, cols) in weights {
                let delta = scaled_rtn_error(w, dim, cols, &s, format)?;
                err += trace_quad(&h, &delta, dim, cols, Parallelism::None);
            }
            Ok((err, s))
        })
        .collect();
    let mut best: Option<(usize, f64, Vec<f32>)> = None;
    let mut before = 0.0;
    for (k, c) in candidates.into_iter().enumerate() {
        let (err, s) = c?;
        if k == 0 {
            before = err;
        }
        if best.as_ref().is_none_or(|b| err < b.1) {
            best = Some((k, err, s));
        }
    }
    let (k, after, scales) = best.unwrap_or((0, 0.0, vec![1.0; dim]));
    Ok(AwqScales {
        scales,
        alpha: k as f64 / opts.grid as f64,
        error_before: relative(before, den),
        error_after: relative(after, den),
    })
}

/// `mean^α / sqrt(max·min)` in f64, stored as f32. `α = 0` gives exactly 1.
fn channel_scales(mean: &[f64], alpha: f64) -> Vec<f32> {
    let s: Vec<f64> = mean.iter().map(|m| m.powf(alpha)).collect();
    let (lo, hi) = s.iter().fold((f64::INFINITY, 0.0f64), |(lo, hi), &v| {
        (lo.min(v), hi.max(v))
    });
    let norm = (lo * hi).sqrt();
    s.iter().map(|v| (v / norm) as f32).collect()
}

/// `W − diag(1/s)·deq(RTN(diag(s)·W))`, row-major `[rows, cols]`.
fn scaled_rtn_error(
    w: &[f32],
    rows: usize,
    cols: usize,
    s: &[f32],
    format: QuantFormat,
) -> Result<Vec<f32>, CalibError> {
    let mut scaled = vec![0.0f32; w.len()];
    for ((dst, src), &sr) in scaled
        .chunks_exact_mut(cols.max(1))
        .zip(w.chunks_exact(cols.max(1)))
        .zip(s)
    {
        for (d, &v) in dst.iter_mut().zip(src) {
            *d = v * sr;
        }
    }
    // The packed round trip's values without the packing (same bits).
    let mut deq = vec![0.0f32; w.len()];
    fake_quantize_rtn(&scaled, rows, cols, format, &mut deq)?;
    for ((d, src), &sr) in deq
        .chunks_exact_mut(cols.max(1))
        .zip(w.chunks_exact(cols.max(1)))
        .zip(s)
    {
        for (q, &v) in d.iter_mut().zip(src) {
            *q = v - *q / sr;
        }
    }
    Ok(deq)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::hessian::output_error;
    use crate::quant::hessian::tests::{correlated_inputs, weight};
    use kiln_ir::quant::{dequantize, quantize_rtn};

    fn fmt(text: &str) -> QuantFormat {
        QuantFormat::parse(text).unwrap()
    }

    /// On inputs with a few large channels AWQ picks a non-zero exponent and
    /// lowers the error; `error_before` is RTN's output error and
    /// `error_after` is the output error of the scaled weight, both checked
    /// with [`output_error`] (f64) on the weights themselves.
    #[test]
    fn quant_awq_lowers_the_error() {
        let dim = 128;
        let x = correlated_inputs(4 * dim, dim, 31);
        let mut stats = InputStats::new(dim);
        stats.add(&x).unwrap();
        let h = stats.hessian();
        let (w1, w2) = (weight(dim, 40, 32), weight(dim, 24, 33));
        for f in ["w4g32", "w4g64", "w3g64", "w4g64a", "w4"] {
            let f = fmt(f);
            let got =
                awq_scales(&[(&w1, 40), (&w2, 24)], &stats, f, &AwqOptions::default()).unwrap();
            eprintln!(
                "{f}: alpha {}, before {:.5e}, after {:.5e}",
                got.alpha, got.error_before, got.error_after
            );
            assert!(got.error_after <= got.error_before, "{f}");
            assert!(got.alpha > 0.0 && got.error_after < got.error_before, "{f}");
            // The effective weight diag(1/s)·deq(RTN(diag(s)·W)), built
            // here step by step, and RTN's.
            let (mut before, mut after, mut total) = (0.0f64, 0.0f64, 0.0f64);
            for (w, cols) in [(&w1, 40usize), (&w2, 24)] {
                let rtn = dequantize(&quantize_rtn(w, dim, cols, f).unwrap());
                let scaled: Vec<f32> = w
                    .iter()
                    .enumerate()
                    .map(|(i, &v)| v * got.scales[i / cols])
                    .collect();
                let w_hat: Vec<f32> = dequantize(&quantize_rtn(&scaled, dim, cols, f).unwrap())
                    .iter()
                    .enumerate()
                    .map(|(i, &v)| v / got.scales[i / cols])
                    .collect();
                // Relative errors weighted back by tr(WᵀHW) to sum them.
                let wd: Vec<f64> = w.iter().map(|&v| f64::from(v)).collect();
                let t = trace_quad(h, &wd, dim, cols, Parallelism::None);
                before += output_error(w, &rtn, dim, cols, h) * t;
                after += output_error(w, &w_hat, dim, cols, h) * t;
                total += t;
            }
            let (before, after) = (before / total, after / total);
            assert!(
                (before - got.error_before).abs() <= 1e-4 * before,
                "{f}: {before}"
            );
            assert!(
                (after - got.error_after).abs() <= 1e-4 * after,
                "{f}: {after}"
            );
        }
    }

    /// The scales are `mean|x|^α` normalised so that `max·min = 1`.
    #[test]
    fn quant_awq_scales_follow_the_formula() {
        let mean = [0.0, 2e-5, 0.5, 3.0, 40.0];
        let clamped: Vec<f64> = mean.iter().map(|m: &f64| m.max(1e-4)).collect();
        let s = channel_scales(&clamped, 0.35);
        let raw: Vec<f64> = clamped.iter().map(|m| m.powf(0.35)).collect();
        let norm = (raw[0] * raw[4]).sqrt();
        for (a, b) in s.iter().zip(&raw) {
            assert!((f64::from(*a) - b / norm).abs() <= 1e-6 * b / norm);
        }
        assert!((f64::from(s[0]) * f64::from(s[4]) - 1.0).abs() < 1e-6);
        assert!(channel_scales(&clamped, 0.0).iter().all(|&v| v == 1.0));
    }
}
