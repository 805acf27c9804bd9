//! Normalisations and softmax-like ops.
//!
//! Row kernels (LayerNorm, RmsNorm, Softmax over the last axis) work one
//! row at a time while it sits in cache, in parallel over rows, with
//! several independent accumulators so the sums vectorise.

use super::elementwise::{broadcast_to, exp_f32, PAR_MIN};
use super::reduce::split_axis;
use super::value::{bail, norm_axis, Elem, KResult, Value};
use kiln_ir::DType;
use num_traits::Float;
use rayon::prelude::*;

/// Float types the normalisation kernels are written for.
pub(crate) trait NFloat: Elem + Float + std::iter::Sum + Send + Sync {
    /// e^x, vectorisable for f32.
    fn fexp(self) -> Self;
    /// From f32 (attributes).
    fn c(v: f32) -> Self;
}
impl NFloat for f32 {
    #[inline(always)]
    fn fexp(self) -> Self {
        exp_f32(self)
    }
    fn c(v: f32) -> Self {
        v
    }
}
impl NFloat for f64 {
    #[inline(always)]
    fn fexp(self) -> Self {
        self.exp()
    }
    fn c(v: f32) -> Self {
        v as f64
    }
}

/// Sum of a slice with 8 independent accumulators (lets the compiler vectorise).
#[inline]
pub(crate) fn fast_sum<F: NFloat>(xs: &[F]) -> F {
    let mut acc = [F::c(0.0); 8];
    let chunks = xs.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for i in 0..8 {
            acc[i] = acc[i] + c[i];
        }
    }
    let mut s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    for &v in rest {
        s = s + v;
    }
    s
}

/// Sum of squared deviations from `mean`, vectorisable.
#[inline]
fn sq_dev_sum<F: NFloat>(xs: &[F], mean: F) -> F {
    let mut acc = [F::c(0.0); 8];
    let chunks = xs.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for i in 0..8 {
            let d = c[i] - mean;
            acc[i] = acc[i] + d * d;
        }
    }
    let mut s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    for &v in rest {
        let d = v - mean;
        s = s + d * d;
    }
    s
}

/// Runs `f(row_in, row_out, row_index)` over rows of length `n`, in parallel when large.
fn rows<F: NFloat>(x: &[F], n: usize, f: impl Fn(&[F], &mut [F], usize) + Sync + Send) -> Vec<F> {
    let mut out = vec![F::c(0.0); x.len()];
    if n == 0 {
        return out;
    }
    if x.len() >= PAR_MIN {
        let per = (8192 / n).max(1);
        out.par_chunks_mut(n * per)
            .zip(x.par_chunks(n * per))
            .enumerate()
            .for_each(|(t, (o, i))| {
                for (j, (o, i)) in o.chunks_mut(n).zip(i.chunks(n)).enumerate() {
                    f(i, o, t * per + j);
                }
            });
    } else {
        for (j, (o, i)) in out.chunks_mut(n).zip(x.chunks(n)).enumerate() {
            f(i, o, j);
        }
    }
    out
}

/// Computes in f32 for half types, calls `$f::<f32>` / `$f::<f64>` otherwise.
macro_rules! float_dispatch {
    ($x:expr, $F:ident => $body:expr) => {{
        let dt = $x.dtype();
        match dt {
            DType::F32 => {
                type $F = f32;
                $body
            }
            DType::F64 => {
                type $F = f64;
                $body
            }
            DType::F16 | DType::BF16 => {
                type $F = f32;
                let r: KResult<Vec<Value>> = $body;
                r.map(|v| {
                    v.into_iter()
                        .map(|v| {
                            if v.dtype() == DType::F32 {
                                v.cast(dt)
                            } else {
                                v
                            }
                        })
                        .collect()
                })
            }
            d => bail!("expected a floating-point tensor, got {d}"),
        }
    }};
}

/// The operand's elements as `F` (converting half types), broadcast to `shape` when given.
fn as_f<'a, F: NFloat>(
    v: &'a Value,
    shape: Option<&[usize]>,
) -> KResult<std::borrow::Cow<'a, [F]>> {
    let v = match shape {
        Some(s) if v.shape != s => std::borrow::Cow::Owned(broadcast_to(v, s)?),
        _ => std::borrow::Cow::Borrowed(v),
    };
    if let Some(s) = shape {
        if v.shape != s {
            bail!(
                "operand of shape {:?} does not broadcast to {:?}",
                v.shape,
                s
            );
        }
    }
    if v.dtype() == F::DTYPE {
        return Ok(match v {
            std::borrow::Cow::Borrowed(b) => std::borrow::Cow::Borrowed(b.slice::<F>()?),
            std::borrow::Cow::Owned(o) => std::borrow::Cow::Owned(o.slice::<F>()?.to_vec()),
        });
    }
    Ok(std::borrow::Cow::Owned(
        v.cast(F::DTYPE).slice::<F>()?.to_vec(),
    ))
}

/// LayerNorm (and RmsNorm when `rms`): outputs Y, and for LayerNorm Mean and InvStdDev.
#[allow(clippy::too_many_arguments)]
pub(crate) fn layer_norm(
    x: &Value,
    scale: &Value,
    bias: Option<&Value>,
    axis: i64,
    eps: f32,
    rms: bool,
    want_stats: bool,
) -> KResult<Vec<Value>> {
    let a = norm_axis(axis, x.rank())?;
    let tail: Vec<usize> = x.shape[a..].to_vec();
    let n: usize = tail.iter().product();
    let nrows: usize = x.shape[..a].iter().product();
    let mut stat_shape = x.shape[..a].to_vec();
    stat_shape.extend(std::iter::repeat_n(1, x.rank() - a));
    float_dispatch!(x, F => {
        let xs = as_f::<F>(x, None)?;
        let w = as_f::<F>(scale, Some(&tail))?;
        let b = match bias { Some(b) => Some(as_f::<F>(b, Some(&tail))?), None => None };
        let eps = F::c(eps);
        let nf = <F as Elem>::from_f64(n as f64);
        let y = rows::<F>(&xs, n, |r, o, _| {
            let mean = if rms { F::c(0.0) } else { fast_sum(r) / nf };
            let var = sq_dev_sum(r, mean) / nf;
            let inv = F::c(1.0) / (var + eps).sqrt();
            match &b {
                Some(b) => {
                    for (((o, &v), &w), &b) in o.iter_mut().zip(r).zip(w.iter()).zip(b.iter()) {
                        *o = (v - mean) * inv * w + b;
                    }
                }
                None => {
                    for ((o, &v), &w) in o.iter_mut().zip(r).zip(w.iter()) {
                        *o = (v - mean) * inv * w;
                    }
                }
            }
        });
        let mut out = vec![Value::new(x.shape.clone(), y)];
        if want_stats && !rms {
            // Recomputed only when the optional outputs are used (rare at inference).
            let (mut means, mut invs) = (Vec::with_capacity(nrows), Vec::with_capacity(nrows));
            for r in xs.chunks(n.max(1)).take(nrows) {
                let mean = fast_sum(r) / nf;
                means.push(mean);
                invs.push(F::c(1.0) / (sq_dev_sum(r, mean) / nf + eps).sqrt());
            }
            out.push(Value::new(stat_shape.clone(), means));
            out.push(Value::new(stat_shape, invs));
        }
        Ok(out)
    })
}

/// Softmax, LogSoftmax or Hardmax along `axis`.
pub(crate) fn softmax(x: &Value, axis: i64, mode: SoftmaxMode) -> KResult<Value> {
    let a = norm_axis(axis, x.rank().max(1))?;
    if x.rank() == 0 {
        bail!("softmax needs rank ≥ 1");
    }
    let (outer, n, inner) = split_axis(&x.shape, a);
    let r: KResult<Vec<Value>> = float_dispatch!(x, F => {
        let xs = as_f::<F>(x, None)?;
        let row = |r: &[F], o: &mut [F]| {
            let m = r.iter().copied().fold(F::neg_infinity(), |a, b| if b > a { b } else { a });
            match mode {
                SoftmaxMode::Softmax => {
                    for (o, &v) in o.iter_mut().zip(r) {
                        *o = (v - m).fexp();
                    }
                    let s = F::c(1.0) / fast_sum(o);
                    o.iter_mut().for_each(|v| *v *= s);
                }
                SoftmaxMode::LogSoftmax => {
                    let s = r.iter().map(|&v| (v - m).exp()).sum::<F>().ln();
                    for (o, &v) in o.iter_mut().zip(r) {
                        *o = v - m - s;
                    }
                }
                SoftmaxMode::Hardmax => {
                    o.fill(F::c(0.0));
                    if let Some(i) = r.iter().position(|&v| v == m) {
                        o[i] = F::c(1.0);
                    }
                }
            }
        };
        let y = if inner == 1 {
            rows::<F>(&xs, n, |r, o, _| row(r, o))
        } else {
            // Gather each strided row, process, scatter back.
            let mut y = vec![F::c(0.0); xs.len()];
            let mut buf = vec![F::c(0.0); n];
            let mut ob = vec![F::c(0.0); n];
            for oi in 0..outer {
                for ii in 0..inner {
                    for j in 0..n {
                        buf[j] = xs[(oi * n + j) * inner + ii];
                    }
                    row(&buf, &mut ob);
                    for j in 0..n {
                        y[(oi * n + j) * inner + ii] = ob[j];
                    }
                }
            }
            y
        };
        Ok(vec![Value::new(x.shape.clone(), y)])
    });
    Ok(r?.remove(0))
}

/// Which of the softmax family to compute.
#[derive(Clone, Copy)]
pub(crate) enum SoftmaxMode {
    Softmax,
    LogSoftmax,
    Hardmax,
}

/// Per-channel parameter of length C (axis 1), as F.
fn per_channel<F: NFloat>(v: &Value, c: usize, what: &str) -> KResult<Vec<F>> {
    if v.len() != c {
        bail!("{what} has {} elements for {c} channels", v.len());
    }
    Ok(as_f::<F>(v, None)?.into_owned())
}

/// Inference BatchNormalization.
pub(crate) fn batch_norm(
    x: &Value,
    scale: &Value,
    b: &Value,
    mean: &Value,
    var: &Value,
    eps: f32,
) -> KResult<Value> {
    if x.rank() < 2 {
        bail!("BatchNorm needs rank ≥ 2, got {:?}", x.shape);
    }
    let c = x.shape[1];
    let sp: usize = x.shape[2..].iter().product();
    let r: KResult<Vec<Value>> = float_dispatch!(x, F => {
        let xs = as_f::<F>(x, None)?;
        let (s, bb, m, v) = (per_channel::<F>(scale, c, "scale")?, per_channel::<F>(b, c, "B")?, per_channel::<F>(mean, c, "mean")?, per_channel::<F>(var, c, "var")?);
        let eps = F::c(eps);
        let mul: Vec<F> = (0..c).map(|i| s[i] / (v[i] + eps).sqrt()).collect();
        let add: Vec<F> = (0..c).map(|i| bb[i] - m[i] * mul[i]).collect();
        let y = rows::<F>(&xs, sp.max(1), |r, o, j| {
            let ch = j % c;
            for (o, &v) in o.iter_mut().zip(r) {
                *o = v * mul[ch] + add[ch];
            }
        });
        Ok(vec![Value::new(x.shape.clone(), y)])
    });
    Ok(r?.remove(0))
}

/// InstanceNorm (groups = C) and GroupNorm: normalise each (n, group) block, then scale per channel.
pub(crate) fn group_norm(
    x: &Value,
    scale: &Value,
    b: &Value,
    groups: usize,
    eps: f32,
) -> KResult<Value> {
    if x.rank() < 2 {
        bail!("normalisation needs rank ≥ 2, got {:?}", x.shape);
    }
    let c = x.shape[1];
    if groups == 0 || !c.is_multiple_of(groups) {
        bail!("{c} channels do not split into {groups} groups");
    }
    let sp: usize = x.shape[2..].iter().product();
    let cpg = c / groups;
    let r: KResult<Vec<Value>> = float_dispatch!(x, F => {
        let xs = as_f::<F>(x, None)?;
        // Scale and bias are per channel; an older form gives them per group.
        let expand = |v: &Value, what: &str| -> KResult<Vec<F>> {
            if v.len() == groups && groups != c {
                let g = as_f::<F>(v, None)?;
                Ok((0..c).map(|i| g[i / cpg]).collect())
            } else {
                per_channel::<F>(v, c, what)
            }
        };
        let (s, bb) = (expand(scale, "scale")?, expand(b, "bias")?);
        let eps = F::c(eps);
        let n = cpg * sp;
        let nf = <F as Elem>::from_f64(n as f64);
        let y = rows::<F>(&xs, n.max(1), |r, o, j| {
            let mean = fast_sum(r) / nf;
            let inv = F::c(1.0) / (sq_dev_sum(r, mean) / nf + eps).sqrt();
            let g = j % groups;
            for (ci, (o, r)) in o.chunks_mut(sp.max(1)).zip(r.chunks(sp.max(1))).enumerate() {
                let ch = g * cpg + ci;
                let (w, bias) = (s[ch] * inv, bb[ch]);
                for (o, &v) in o.iter_mut().zip(r) {
                    *o = (v - mean) * w + bias;
                }
            }
        });
        Ok(vec![Value::new(x.shape.clone(), y)])
    });
    Ok(r?.remove(0))
}

/// LpNormalization along one axis (p = 1 or 2); zero norms give zeros.
pub(crate) fn lp_norm(x: &Value, axis: i64, p: u64) -> KResult<Value> {
    if p != 1 && p != 2 {
        bail!("LpNormalization supports p = 1 or 2, got {p}");
    }
    let a = norm_axis(axis, x.rank())?;
    let (outer, n, inner) = split_axis(&x.shape, a);
    let r: KResult<Vec<Value>> = float_dispatch!(x, F => {
        let xs = as_f::<F>(x, None)?;
        let mut y = vec![F::c(0.0); xs.len()];
        for o in 0..outer {
            for i in 0..inner {
                let at = |j: usize| (o * n + j) * inner + i;
                let norm = if p == 1 {
                    (0..n).map(|j| xs[at(j)].abs()).sum::<F>()
                } else {
                    (0..n).map(|j| xs[at(j)] * xs[at(j)]).sum::<F>().sqrt()
                };
                for j in 0..n {
                    y[at(j)] = if norm == F::c(0.0) { F::c(0.0) } else { xs[at(j)] / norm };
                }
            }
        }
        Ok(vec![Value::new(x.shape.clone(), y)])
    });
    Ok(r?.remove(0))
}

/// Local response normalisation across channels (axis 1).
pub(crate) fn lrn(x: &Value, alpha: f32, beta: f32, bias: f32, size: u64) -> KResult<Value> {
    if x.rank() < 3 {
        bail!("LRN needs rank ≥ 3, got {:?}", x.shape);
    }
    let (n, c) = (x.shape[0], x.shape[1]);
    let sp: usize = x.shape[2..].iter().product();
    let size = size.max(1) as usize;
    let (c1, c2) = ((size - 1) / 2, (size - 1).div_ceil(2) + 1);
    let r: KResult<Vec<Value>> = float_dispatch!(x, F => {
        let xs = as_f::<F>(x, None)?;
        let mut y = vec![F::c(0.0); xs.len()];
        let (al, be, bi) = (F::c(alpha) / <F as Elem>::from_f64(size as f64), F::c(beta), F::c(bias));
        for ni in 0..n {
            for ci in 0..c {
                let (lo, hi) = (ci.saturating_sub(c1), (ci + c2).min(c));
                for s in 0..sp {
                    let mut sq = F::c(0.0);
                    for k in lo..hi {
                        let v = xs[(ni * c + k) * sp + s];
                        sq += v * v;
                    }
                    let idx = (ni * c + ci) * sp + s;
                    y[idx] = xs[idx] / (bi + al * sq).powf(be);
                }
            }
        }
        Ok(vec![Value::new(x.shape.clone(), y)])
    });
    Ok(r?.remove(0))
}

/// MeanVarianceNormalization: (x - mean) / (std + 1e-9) over `axes`.
pub(crate) fn mvn(x: &Value, axes: &[i64]) -> KResult<Value> {
    use kiln_ir::ReduceKind;
    let axes: Vec<i64> = if axes.is_empty() {
        vec![0, 2, 3]
    } else {
        axes.to_vec()
    };
    let xf = x.cast(DType::F64);
    let mean = super::reduce::reduce(&xf, ReduceKind::Mean, Some(&axes), true)?;
    let sq = super::elementwise::binary::<f64, f64, f64>(&xf, &xf, |a, b| a * b)?;
    let sqm = super::reduce::reduce(&sq, ReduceKind::Mean, Some(&axes), true)?;
    let var = super::elementwise::binary::<f64, f64, f64>(&sqm, &mean, |s, m| {
        (s - m * m).max(0.0).sqrt() + 1e-9
    })?;
    let diff = super::elementwise::binary::<f64, f64, f64>(&xf, &mean, |a, m| a - m)?;
    let y = super::elementwise::binary::<f64, f64, f64>(&diff, &var, |d, s| d / s)?;
    Ok(y.cast(x.dtype()))
}
