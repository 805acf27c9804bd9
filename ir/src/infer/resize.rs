//! Resize(X, roi?, scales?, sizes?).

use super::{vt, Ctx, R};
use crate::{CoordinateTransform, Dim, KeepAspectRatio, ResizeAttrs, ValueType};

/// Resize: `sizes` when given (adjusted by `keep_aspect_ratio`), else
/// `floor(in · scale)` (times the roi extent for tf_crop_and_resize).
/// Only the axes named by `axes` (all when empty) change.
pub(super) fn resize(cx: &Ctx, attrs: &ResizeAttrs) -> R<ValueType> {
    cx.arity(1, 4)?;
    let x = cx.input(0)?;
    let r = x.shape.rank();
    let axes = if attrs.axes.is_empty() {
        (0..r).collect()
    } else {
        cx.axes(&attrs.axes, r)?
    };
    let n = axes.len();
    let mut out = x.shape.0.clone();
    let unknown = |mut out: Vec<Dim>| {
        for &a in &axes {
            out[a] = Dim::Unknown;
        }
        vt(x.dtype, out)
    };
    if cx.opt_nonempty(3).is_some() {
        cx.int_operand(3)?;
        let Some(sizes) = cx.const_ints(3) else {
            return Ok(unknown(out));
        };
        if sizes.len() != n || sizes.iter().any(|&s| s < 0) {
            return Err(cx.err(format!("sizes {sizes:?} must hold {n} non-negative values")));
        }
        if attrs.keep_aspect_ratio == KeepAspectRatio::Stretch {
            for (k, &a) in axes.iter().enumerate() {
                out[a] = Dim::Fixed(sizes[k] as u64);
            }
            return Ok(vt(x.dtype, out));
        }
        // One scale for every axis: the smallest (not_larger) or largest (not_smaller) ratio.
        let Some(ins) = axes
            .iter()
            .map(|&a| out[a].fixed())
            .collect::<Option<Vec<u64>>>()
        else {
            return Ok(unknown(out));
        };
        let ratios = ins.iter().zip(&sizes).map(|(&i, &s)| s as f64 / i as f64);
        let scale = if attrs.keep_aspect_ratio == KeepAspectRatio::NotLarger {
            ratios.fold(f64::INFINITY, f64::min)
        } else {
            ratios.fold(f64::NEG_INFINITY, f64::max)
        };
        for (k, &a) in axes.iter().enumerate() {
            // ONNX rounds half up here.
            out[a] = Dim::Fixed((scale * ins[k] as f64 + 0.5).floor() as u64);
        }
        return Ok(vt(x.dtype, out));
    }
    if cx.opt_nonempty(2).is_none() {
        return Err(cx.err("needs scales (operand 2) or sizes (operand 3)"));
    }
    if !cx.input(2)?.dtype.is_float() {
        return Err(cx.err(format!(
            "scales must be floating point, got {}",
            cx.input(2)?.dtype
        )));
    }
    let Some(scales) = cx.konst(2).map(|t| t.to_f64_vec()) else {
        return Ok(unknown(out));
    };
    if scales.len() != n || scales.iter().any(|&s| !(s > 0.0 && s.is_finite())) {
        return Err(cx.err(format!("scales {scales:?} must hold {n} positive values")));
    }
    // tf_crop_and_resize samples the roi only: its extent multiplies the size.
    let roi = (attrs.coordinate_transform == CoordinateTransform::TfCropAndResize)
        .then(|| cx.konst(1).map(|t| t.to_f64_vec()))
        .flatten();
    for (k, &a) in axes.iter().enumerate() {
        let extent = match &roi {
            Some(v) if v.len() == 2 * n => v[n + k] - v[k],
            Some(v) if v.len() == 2 * r => v[r + a] - v[a],
            _ if attrs.coordinate_transform == CoordinateTransform::TfCropAndResize => {
                out[a] = Dim::Unknown;
                continue;
            }
            _ => 1.0,
        };
        out[a] = match &out[a] {
            Dim::Fixed(d) => Dim::Fixed((*d as f64 * extent * scales[k]).floor().max(0.0) as u64),
            d if scales[k] == 1.0 && extent == 1.0 => d.clone(),
            _ => Dim::Unknown,
        };
    }
    Ok(vt(x.dtype, out))
}
