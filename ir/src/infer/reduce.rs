//! Reductions, arg-reductions, cumulative ops and TopK.

use super::{vt, Ctx, R};
use crate::{DType, Dim, ValueType};

/// Reduce(X, axes?): axes from the attribute or a constant operand 1; none
/// means all axes, or the identity with `noop_with_empty_axes`.
pub(super) fn reduce(
    cx: &Ctx,
    attr: Option<&[i64]>,
    keepdims: bool,
    noop_with_empty_axes: bool,
) -> R<ValueType> {
    cx.arity(1, 2)?;
    let x = cx.input(0)?;
    let r = x.shape.rank();
    let axes: Vec<i64> = match attr {
        Some(a) => a.to_vec(),
        None => match cx.opt(1) {
            None => Vec::new(),
            Some(_) => {
                cx.int_operand(1)?;
                match cx.const_ints(1) {
                    Some(a) => a,
                    None => {
                        // Which axes is unknown; how many is the operand's length.
                        let n = cx.vec_len(1)?;
                        if n == 0 {
                            Vec::new()
                        } else if keepdims {
                            return Ok(vt(x.dtype, vec![Dim::Unknown; r]));
                        } else {
                            let left = r.checked_sub(n).ok_or_else(|| {
                                cx.err(format!("{n} axes given for an input of rank {r}"))
                            })?;
                            return Ok(vt(x.dtype, vec![Dim::Unknown; left]));
                        }
                    }
                }
            }
        },
    };
    if axes.is_empty() && noop_with_empty_axes {
        return Ok(x.clone());
    }
    let axes = if axes.is_empty() {
        (0..r).collect()
    } else {
        cx.axes(&axes, r)?
    };
    let mut out = Vec::with_capacity(r);
    for (i, d) in x.shape.0.iter().enumerate() {
        if !axes.contains(&i) {
            out.push(d.clone());
        } else if keepdims {
            out.push(Dim::Fixed(1));
        }
    }
    Ok(vt(x.dtype, out))
}

/// ArgMax/ArgMin along one axis: I64 indices.
pub(super) fn arg_reduce(cx: &Ctx, axis: i64, keepdims: bool) -> R<ValueType> {
    cx.arity(1, 1)?;
    let x = cx.input(0)?;
    let a = cx.axis(axis, x.shape.rank())?;
    let mut out = x.shape.0.clone();
    if keepdims {
        out[a] = Dim::Fixed(1);
    } else {
        out.remove(a);
    }
    Ok(vt(DType::I64, out))
}

/// CumSum/CumProd(X, axis): X's type; the axis is an integer scalar.
pub(super) fn cumulative(cx: &Ctx) -> R<ValueType> {
    cx.arity(2, 2)?;
    let x = cx.input(0)?;
    let a = cx.int_operand(1)?;
    if a.shape.num_elements().is_some_and(|n| n != 1) || a.shape.rank() > 1 {
        return Err(cx.err(format!(
            "axis operand must be a scalar, got shape {}",
            a.shape
        )));
    }
    if let Some(&[axis]) = cx.const_ints(1).as_deref() {
        cx.axis(axis, x.shape.rank())?;
    }
    Ok(x.clone())
}

/// TopK(X, K) → (values of X's dtype, I64 indices), K along `axis`.
pub(super) fn top_k(cx: &Ctx, axis: i64) -> R<Vec<ValueType>> {
    cx.arity(2, 2)?;
    let x = cx.input(0)?;
    cx.int_operand(1)?;
    let a = cx.axis(axis, x.shape.rank())?;
    let k = match cx.const_ints(1).as_deref() {
        Some(&[k]) => {
            if k < 0 {
                return Err(cx.err(format!("K must be non-negative, got {k}")));
            }
            if let Dim::Fixed(n) = x.shape.0[a] {
                if k as u64 > n {
                    return Err(cx.err(format!("K = {k} exceeds the axis size {n}")));
                }
            }
            Dim::Fixed(k as u64)
        }
        Some(v) => return Err(cx.err(format!("K must hold one value, got {v:?}"))),
        None => Dim::Unknown,
    };
    let mut out = x.shape.0.clone();
    out[a] = k;
    Ok(vec![vt(x.dtype, out.clone()), vt(DType::I64, out)])
}
