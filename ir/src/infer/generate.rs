//! Ops that make tensors: ConstantOfShape, Range, EyeLike.

use super::{vt, Ctx, R};
use crate::{DType, Dim, ValueType};

/// ConstantOfShape(shape) → `dtype` with the constant shape; an unknown
/// shape operand gives its static length's rank with unknown dimensions.
pub(super) fn constant_of_shape(cx: &Ctx, dtype: DType) -> R<ValueType> {
    cx.arity(1, 1)?;
    cx.int_operand(0)?;
    match cx.const_ints(0) {
        Some(dims) => {
            if let Some(bad) = dims.iter().find(|&&d| d < 0) {
                return Err(cx.err(format!("shape {dims:?} has negative size {bad}")));
            }
            Ok(vt(
                dtype,
                dims.iter().map(|&d| Dim::Fixed(d as u64)).collect(),
            ))
        }
        None => Ok(vt(dtype, vec![Dim::Unknown; cx.vec_len(0)?])),
    }
}

/// Range(start, limit, delta) → 1-d of `max(ceil((limit - start) / delta), 0)`
/// elements, the operands' dtype.
pub(super) fn range(cx: &Ctx) -> R<ValueType> {
    cx.arity(3, 3)?;
    let t = cx.input(0)?;
    for i in 0..3 {
        cx.same_dtype(0, i)?;
        let s = &cx.input(i)?.shape;
        if s.rank() > 1 || s.num_elements().is_some_and(|n| n != 1) {
            return Err(cx.err(format!("operand {i} must be a scalar, got shape {s}")));
        }
    }
    let n = match (cx.konst(0), cx.konst(1), cx.konst(2)) {
        (Some(s), Some(l), Some(d)) if t.dtype.is_float() => {
            // A malformed (empty) constant reads as NaN and is rejected below.
            let first = |t: &crate::Tensor| t.to_f64_vec().first().copied().unwrap_or(f64::NAN);
            let (s, l, d) = (first(s), first(l), first(d));
            if d == 0.0 || !(s.is_finite() && l.is_finite() && d.is_finite()) {
                return Err(cx.err(format!("cannot count range({s}, {l}, {d})")));
            }
            Dim::Fixed(((l - s) / d).ceil().max(0.0) as u64)
        }
        (Some(s), Some(l), Some(d)) => {
            let first = |t: &crate::Tensor| t.to_i64_vec().first().map(|&v| v as i128);
            let (Some(s), Some(l), Some(d)) = (first(s), first(l), first(d)) else {
                return Err(cx.err("start, limit and delta must each hold one value"));
            };
            if d == 0 {
                return Err(cx.err("delta must not be 0"));
            }
            let diff = l - s;
            // Ceiling division for either sign of delta.
            let q = diff / d + i128::from(diff % d != 0 && (diff > 0) == (d > 0));
            Dim::Fixed(q.max(0) as u64)
        }
        _ => Dim::Unknown,
    };
    Ok(vt(t.dtype, vec![n]))
}

/// EyeLike(x): x's 2-d shape, `dtype` or x's dtype.
pub(super) fn eye_like(cx: &Ctx, dtype: Option<DType>) -> R<ValueType> {
    cx.arity(1, 1)?;
    let x = cx.input(0)?;
    if x.shape.rank() != 2 {
        return Err(cx.err(format!("input must be 2-d, got {}", x.shape)));
    }
    Ok(ValueType::new(dtype.unwrap_or(x.dtype), x.shape.clone()))
}
