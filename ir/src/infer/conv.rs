//! Convolution and pooling over NC[D...] tensors.
//!
//! Output spatial sizes follow the ONNX formulas, with `ek = (k - 1)·d + 1`
//! the dilated kernel extent:
//! - explicit pads: `floor((in + pb + pe - ek) / s) + 1` (`ceil` with
//!   `ceil_mode`, dropping a last window that would start in the end padding);
//! - `VALID`: `floor((in - ek) / s) + 1`;
//! - `SAME_UPPER` / `SAME_LOWER`: `ceil(in / s)`.
//!
//! ConvTranspose: `s·(in - 1) + output_padding + ek - pb - pe`, or `in·s`
//! with `SAME_*`, or the explicit `output_shape`.

use super::{dim_scale, unify, vt, Ctx, R};
use crate::{AutoPad, DType, Dim, PoolKind, ValueType, Window};

/// Per-axis window parameters with defaults filled in.
struct Params {
    strides: Vec<u64>,
    dilations: Vec<u64>,
    pads: Vec<u64>,
}

fn params(cx: &Ctx, w: &Window, nsp: usize) -> R<Params> {
    let fill = |v: &[u64], n: usize, default: u64, what: &str| -> R<Vec<u64>> {
        if v.is_empty() {
            return Ok(vec![default; n]);
        }
        if v.len() != n {
            return Err(cx.err(format!("{what} has {} values, expected {n}", v.len())));
        }
        Ok(v.to_vec())
    };
    let p = Params {
        strides: fill(&w.strides, nsp, 1, "strides")?,
        dilations: fill(&w.dilations, nsp, 1, "dilations")?,
        pads: fill(&w.pads, 2 * nsp, 0, "pads")?,
    };
    if p.strides.contains(&0) || p.dilations.contains(&0) {
        return Err(cx.err("strides and dilations must be positive"));
    }
    Ok(p)
}

/// The output size of one spatial axis of a convolution or pool.
#[allow(clippy::too_many_arguments)]
fn out_size(
    cx: &Ctx,
    input: &Dim,
    k: Option<u64>,
    s: u64,
    d: u64,
    pb: u64,
    pe: u64,
    auto: AutoPad,
    ceil_mode: bool,
) -> R<Dim> {
    if matches!(auto, AutoPad::SameUpper | AutoPad::SameLower) {
        return Ok(match input {
            Dim::Fixed(n) => Dim::Fixed(n.div_ceil(s)),
            _ if s == 1 => input.clone(),
            _ => Dim::Unknown,
        });
    }
    let (pb, pe) = if auto == AutoPad::Valid {
        (0, 0)
    } else {
        (pb, pe)
    };
    let Some(k) = k else { return Ok(Dim::Unknown) };
    if k == 0 {
        return Err(cx.err("kernel sizes must be positive"));
    }
    let ek = (k - 1).saturating_mul(d).saturating_add(1);
    match input {
        Dim::Fixed(n) => {
            let total = n.saturating_add(pb).saturating_add(pe);
            if total < ek {
                return Err(cx.err(format!(
                    "window of extent {ek} does not fit an input of size {n} with pads {pb}+{pe}"
                )));
            }
            let span = total - ek;
            let mut o = if ceil_mode {
                span.div_ceil(s)
            } else {
                span / s
            } + 1;
            // ONNX: with ceil_mode, a window that would start in the end padding is dropped.
            if ceil_mode && (o - 1).saturating_mul(s) >= n.saturating_add(pb) {
                o -= 1;
            }
            Ok(Dim::Fixed(o))
        }
        // Stride 1 with "same"-sized explicit padding keeps the (symbolic) size.
        _ if s == 1 && pb.saturating_add(pe).saturating_add(1) == ek => Ok(input.clone()),
        _ => Ok(Dim::Unknown),
    }
}

/// Kernel sizes: the attribute, else the weight's spatial dims (unknown when not fixed).
fn kernel(cx: &Ctx, w: &Window, weight: &ValueType, nsp: usize) -> R<Vec<Option<u64>>> {
    let from_w: Vec<Option<u64>> = weight.shape.0[2..].iter().map(Dim::fixed).collect();
    if w.kernel_shape.is_empty() {
        return Ok(from_w);
    }
    if w.kernel_shape.len() != nsp {
        return Err(cx.err(format!(
            "kernel_shape {:?} has {} values, expected {nsp}",
            w.kernel_shape,
            w.kernel_shape.len()
        )));
    }
    for (i, (a, b)) in w.kernel_shape.iter().zip(&from_w).enumerate() {
        if b.is_some_and(|b| b != *a) {
            return Err(cx.err(format!(
                "kernel_shape {:?} disagrees with weight shape {} at spatial axis {i}",
                w.kernel_shape, weight.shape
            )));
        }
    }
    Ok(w.kernel_shape.iter().map(|&k| Some(k)).collect())
}

/// X and W of a convolution: same dtype and rank, rank ≥ 3; returns the spatial count.
fn conv_operands<'a>(cx: &Ctx<'a>, group: u64) -> R<(&'a ValueType, &'a ValueType, usize)> {
    cx.arity(2, 3)?;
    let x = cx.min_rank(0, 3)?;
    let w = cx.input(1)?;
    cx.same_dtype(0, 1)?;
    if w.shape.rank() != x.shape.rank() {
        return Err(cx.err(format!(
            "weight {} must have the input's rank {} (input {})",
            w.shape,
            x.shape.rank(),
            x.shape
        )));
    }
    if group == 0 {
        return Err(cx.err("group must be positive"));
    }
    Ok((x, w, x.shape.rank() - 2))
}

fn check_bias(cx: &Ctx, channels: &Dim) -> R<()> {
    if let Some(b) = cx.opt(2) {
        cx.same_dtype(0, 2)?;
        if b.shape.rank() != 1 || unify(&b.shape.0[0], channels).is_none() {
            return Err(cx.err(format!(
                "bias must have shape [{channels}], got {}",
                b.shape
            )));
        }
    }
    Ok(())
}

/// Conv(X, W, B?): X is [N, C, D...], W is [M, C/group, k...], result [N, M, O...].
pub(super) fn conv(cx: &Ctx, window: &Window, group: u64) -> R<ValueType> {
    let (x, w, nsp) = conv_operands(cx, group)?;
    let (xs, ws) = (&x.shape.0, &w.shape.0);
    if let (Dim::Fixed(c), Dim::Fixed(wc)) = (&xs[1], &ws[1]) {
        if *c != wc.saturating_mul(group) {
            return Err(cx.err(format!(
                "input has {c} channels but weight {} with group {group} expects {}",
                w.shape,
                wc.saturating_mul(group)
            )));
        }
    }
    if let Dim::Fixed(m) = ws[0] {
        if m % group != 0 {
            return Err(cx.err(format!(
                "{m} output channels do not divide into {group} groups"
            )));
        }
    }
    check_bias(cx, &ws[0])?;
    let k = kernel(cx, window, w, nsp)?;
    let p = params(cx, window, nsp)?;
    let mut out = vec![xs[0].clone(), ws[0].clone()];
    for i in 0..nsp {
        out.push(out_size(
            cx,
            &xs[2 + i],
            k[i],
            p.strides[i],
            p.dilations[i],
            p.pads[i],
            p.pads[nsp + i],
            window.auto_pad,
            false,
        )?);
    }
    Ok(vt(x.dtype, out))
}

/// ConvTranspose(X, W, B?): X is [N, C, D...], W is [C, M/group, k...], result [N, M, O...].
pub(super) fn conv_transpose(
    cx: &Ctx,
    window: &Window,
    group: u64,
    output_padding: &[u64],
    output_shape: &[u64],
) -> R<ValueType> {
    let (x, w, nsp) = conv_operands(cx, group)?;
    let (xs, ws) = (&x.shape.0, &w.shape.0);
    unify(&xs[1], &ws[0]).ok_or_else(|| {
        cx.err(format!(
            "input has {} channels but weight {} expects {}",
            xs[1], w.shape, ws[0]
        ))
    })?;
    let m = dim_scale(&ws[1], group);
    check_bias(cx, &m)?;
    let k = kernel(cx, window, w, nsp)?;
    let p = params(cx, window, nsp)?;
    let op = if output_padding.is_empty() {
        vec![0; nsp]
    } else if output_padding.len() == nsp {
        output_padding.to_vec()
    } else {
        return Err(cx.err(format!(
            "output_padding has {} values, expected {nsp}",
            output_padding.len()
        )));
    };
    let mut out = vec![xs[0].clone(), m];
    if !output_shape.is_empty() {
        // Usually the spatial sizes; some exporters give the full [N, C, ...] shape.
        let sp = match output_shape.len() {
            n if n == nsp => output_shape,
            n if n == nsp + 2 => &output_shape[2..],
            n => return Err(cx.err(format!("output_shape has {n} values, expected {nsp}"))),
        };
        out.extend(sp.iter().map(|&d| Dim::Fixed(d)));
        return Ok(vt(x.dtype, out));
    }
    for i in 0..nsp {
        let s = p.strides[i];
        let input = &xs[2 + i];
        let d = match window.auto_pad {
            AutoPad::SameUpper | AutoPad::SameLower => dim_scale(input, s),
            auto => {
                let (pb, pe) = if auto == AutoPad::Valid {
                    (0, 0)
                } else {
                    (p.pads[i], p.pads[nsp + i])
                };
                match (input, k[i]) {
                    (_, None) => Dim::Unknown,
                    (_, Some(0)) => return Err(cx.err("kernel sizes must be positive")),
                    (Dim::Fixed(n), Some(k)) => {
                        let ek = (k - 1).saturating_mul(p.dilations[i]).saturating_add(1);
                        let v = s as i128 * (*n as i128 - 1) + op[i] as i128 + ek as i128
                            - pb as i128
                            - pe as i128;
                        if v < 0 {
                            return Err(
                                cx.err(format!("spatial axis {i} would have negative size {v}"))
                            );
                        }
                        Dim::Fixed(v as u64)
                    }
                    (_, Some(k))
                        if s == 1
                            && op[i].saturating_add((k - 1).saturating_mul(p.dilations[i]))
                                == pb.saturating_add(pe) =>
                    {
                        input.clone()
                    }
                    _ => Dim::Unknown,
                }
            }
        };
        out.push(d);
    }
    Ok(vt(x.dtype, out))
}

/// Pool(X): [N, C, D...] → [N, C, O...]; max pooling may also give I64 indices.
pub(super) fn pool(
    cx: &Ctx,
    kind: PoolKind,
    window: &Window,
    ceil_mode: bool,
) -> R<Vec<ValueType>> {
    cx.arity(1, 1)?;
    let x = cx.min_rank(0, 3)?;
    let nsp = x.shape.rank() - 2;
    if window.kernel_shape.len() != nsp {
        return Err(cx.err(format!(
            "kernel_shape {:?} must have one size per spatial axis ({nsp}) of input {}",
            window.kernel_shape, x.shape
        )));
    }
    let p = params(cx, window, nsp)?;
    let xs = &x.shape.0;
    let mut out = vec![xs[0].clone(), xs[1].clone()];
    for i in 0..nsp {
        out.push(out_size(
            cx,
            &xs[2 + i],
            Some(window.kernel_shape[i]),
            p.strides[i],
            p.dilations[i],
            p.pads[i],
            p.pads[nsp + i],
            window.auto_pad,
            ceil_mode,
        )?);
    }
    let y = vt(x.dtype, out.clone());
    Ok(match kind {
        PoolKind::Max => vec![y, vt(DType::I64, out)],
        PoolKind::Average => vec![y],
    })
}

/// GlobalPool(X): [N, C, D...] → [N, C, 1...].
pub(super) fn global_pool(cx: &Ctx) -> R<ValueType> {
    cx.arity(1, 1)?;
    let x = cx.min_rank(0, 2)?;
    let mut out = x.shape.0[..2].to_vec();
    out.resize(x.shape.rank(), Dim::Fixed(1));
    Ok(vt(x.dtype, out))
}
