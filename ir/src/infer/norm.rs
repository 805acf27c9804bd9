//! Normalisations and softmax-like ops: the result has the input's type.

use super::broadcast::check_unidirectional;
use super::{unify, vt, Ctx, R};
use crate::{DType, Dim, Shape, ValueType};

/// Checks that operand `i` is a 1-d vector of `n` elements (per-channel parameters).
fn per_channel(cx: &Ctx, i: usize, n: &Dim, what: &str) -> R<()> {
    let t = cx.input(i)?;
    if !t.dtype.is_float() {
        return Err(cx.err(format!(
            "{what} must have a floating-point dtype, got {}",
            t.dtype
        )));
    }
    if t.shape.rank() != 1 || unify(&t.shape.0[0], n).is_none() {
        return Err(cx.err(format!("{what} must have shape [{n}], got {}", t.shape)));
    }
    Ok(())
}

/// BatchNorm(X, scale, B, mean, var) in inference mode: X's type.
pub(super) fn batch_norm(cx: &Ctx) -> R<ValueType> {
    cx.arity(5, 5)?;
    cx.float_operand(0)?;
    let x = cx.min_rank(0, 2)?;
    let c = &x.shape.0[1];
    for (i, what) in [(1, "scale"), (2, "bias"), (3, "mean"), (4, "var")] {
        per_channel(cx, i, c, what)?;
    }
    Ok(x.clone())
}

/// InstanceNorm(X, scale, B): X's type.
pub(super) fn instance_norm(cx: &Ctx) -> R<ValueType> {
    cx.arity(3, 3)?;
    cx.float_operand(0)?;
    let x = cx.min_rank(0, 3)?;
    per_channel(cx, 1, &x.shape.0[1], "scale")?;
    per_channel(cx, 2, &x.shape.0[1], "bias")?;
    Ok(x.clone())
}

/// Scale and bias must broadcast to X's normalised dims (`X[axis..]`).
fn check_affine(cx: &Ctx, x: &ValueType, axis: usize, operands: &[usize]) -> R<()> {
    let target = Shape(x.shape.0[axis..].to_vec());
    for &i in operands {
        if let Some(t) = cx.opt(i) {
            check_unidirectional(&t.shape, &target).map_err(|e| {
                cx.err(format!(
                    "operand {i}: {e} (the normalised dims of {})",
                    x.shape
                ))
            })?;
        }
    }
    Ok(())
}

/// LayerNorm(X, scale, B?) → Y, and optionally Mean and InvStdDev of shape
/// `X[..axis] + [1; rank - axis]`. Those are f32: ONNX's `stash_type`
/// defaults to float, and the op has no other stash type.
pub(super) fn layer_norm(cx: &Ctx, axis: i64) -> R<Vec<ValueType>> {
    cx.arity(2, 3)?;
    let x = cx.float_operand(0)?;
    let r = x.shape.rank();
    let a = cx.axis(axis, r)?;
    check_affine(cx, x, a, &[1, 2])?;
    let mut stat = x.shape.0[..a].to_vec();
    stat.resize(r, Dim::Fixed(1));
    Ok(vec![
        x.clone(),
        vt(DType::F32, stat.clone()),
        vt(DType::F32, stat),
    ])
}

/// RmsNorm(X, scale): X's type.
pub(super) fn rms_norm(cx: &Ctx, axis: i64) -> R<ValueType> {
    cx.arity(2, 2)?;
    let x = cx.float_operand(0)?;
    let a = cx.axis(axis, x.shape.rank())?;
    check_affine(cx, x, a, &[1])?;
    Ok(x.clone())
}

/// GroupNorm(X, scale, bias): X's type; channels must divide into the groups.
pub(super) fn group_norm(cx: &Ctx, num_groups: u64) -> R<ValueType> {
    cx.arity(3, 3)?;
    cx.float_operand(0)?;
    let x = cx.min_rank(0, 2)?;
    if num_groups == 0 {
        return Err(cx.err("num_groups must be positive"));
    }
    let c = &x.shape.0[1];
    if let Dim::Fixed(n) = c {
        if n % num_groups != 0 {
            return Err(cx.err(format!(
                "{n} channels do not divide into {num_groups} groups"
            )));
        }
    }
    // Opset 21 scales per channel; opset 18 per group. Accept either.
    for (i, what) in [(1, "scale"), (2, "bias")] {
        if per_channel(cx, i, &Dim::Fixed(num_groups), what).is_err() {
            per_channel(cx, i, c, what)?;
        }
    }
    Ok(x.clone())
}

/// LpNorm(X) along an axis, p ∈ {1, 2}.
pub(super) fn lp_norm(cx: &Ctx, axis: i64, p: u64) -> R<ValueType> {
    cx.arity(1, 1)?;
    let x = cx.float_operand(0)?;
    cx.axis(axis, x.shape.rank())?;
    if p != 1 && p != 2 {
        return Err(cx.err(format!("p must be 1 or 2, got {p}")));
    }
    Ok(x.clone())
}

/// Lrn(X): [N, C, ...] with a positive window size.
pub(super) fn lrn(cx: &Ctx, size: u64) -> R<ValueType> {
    cx.arity(1, 1)?;
    cx.float_operand(0)?;
    let x = cx.min_rank(0, 2)?;
    if size == 0 {
        return Err(cx.err("size must be positive"));
    }
    Ok(x.clone())
}

/// MeanVarianceNorm(X) over distinct axes.
pub(super) fn mean_variance_norm(cx: &Ctx, axes: &[i64]) -> R<ValueType> {
    cx.arity(1, 1)?;
    let x = cx.float_operand(0)?;
    cx.axes(axes, x.shape.rank())?;
    Ok(x.clone())
}

/// Softmax / LogSoftmax / Hardmax along a valid axis.
pub(super) fn softmax(cx: &Ctx, axis: i64) -> R<ValueType> {
    cx.arity(1, 1)?;
    let x = cx.float_operand(0)?;
    cx.axis(axis, x.shape.rank())?;
    Ok(x.clone())
}
