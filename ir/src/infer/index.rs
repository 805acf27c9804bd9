//! Indexing ops: Gather, GatherElements, GatherNd, the scatters, NonZero,
//! Compress, OneHot and Trilu.

use super::{vt, Ctx, R};
use crate::{DType, Dim, ValueType};

/// Gather(data, indices) along an axis: `data[..axis] + indices + data[axis+1..]`.
pub(super) fn gather(cx: &Ctx, axis: i64) -> R<ValueType> {
    cx.arity(2, 2)?;
    let x = cx.min_rank(0, 1)?;
    let idx = cx.int_operand(1)?;
    let a = cx.axis(axis, x.shape.rank())?;
    if let (Some(ix), Dim::Fixed(n)) = (cx.const_ints(1), &x.shape.0[a]) {
        let n = *n as i64;
        if let Some(bad) = ix.iter().find(|&&i| i < -n || i >= n) {
            return Err(cx.err(format!(
                "index {bad} is out of range for axis {a} of size {n}"
            )));
        }
    }
    let mut out = x.shape.0[..a].to_vec();
    out.extend(idx.shape.0.iter().cloned());
    out.extend(x.shape.0[a + 1..].iter().cloned());
    if x.dtype.is_quant() {
        // Columns of a packed [in, out] weight are contiguous; rows are not.
        if a != 1 {
            return Err(cx.err(format!(
                "a packed {} weight is gathered along axis 1 (its output columns), not {a}",
                x.dtype
            )));
        }
        return Ok(vt(crate::DType::F32, out));
    }
    Ok(vt(x.dtype, out))
}

/// GatherElements(data, indices): the indices' shape, the data's dtype.
pub(super) fn gather_elements(cx: &Ctx, axis: i64) -> R<ValueType> {
    cx.arity(2, 2)?;
    let x = cx.min_rank(0, 1)?;
    let idx = cx.int_operand(1)?;
    cx.axis(axis, x.shape.rank())?;
    if idx.shape.rank() != x.shape.rank() {
        return Err(cx.err(format!(
            "indices {} must have the rank of data {}",
            idx.shape, x.shape
        )));
    }
    Ok(ValueType::new(x.dtype, idx.shape.clone()))
}

/// GatherNd(data, indices): `indices[..q-1] + data[batch_dims + m..]`, where
/// `m` is the last dimension of indices (it must be fixed: it decides the rank).
pub(super) fn gather_nd(cx: &Ctx, batch_dims: i64) -> R<ValueType> {
    cx.arity(2, 2)?;
    let x = cx.min_rank(0, 1)?;
    let idx = cx.int_operand(1)?;
    let (r, q) = (x.shape.rank(), idx.shape.rank());
    if q == 0 {
        return Err(cx.err("indices must have rank at least 1"));
    }
    let b = usize::try_from(batch_dims)
        .map_err(|_| cx.err(format!("batch_dims {batch_dims} must be non-negative")))?;
    let Dim::Fixed(m) = idx.shape.0[q - 1] else {
        return Err(cx.err(format!(
            "the last dimension of indices {} must be known at compile time: it decides the result rank",
            idx.shape
        )));
    };
    let m = m as usize;
    if b >= q || b + m > r {
        return Err(cx.err(format!(
            "indices {} with batch_dims {b} do not fit data {}",
            idx.shape, x.shape
        )));
    }
    let mut out = idx.shape.0[..q - 1].to_vec();
    out.extend(x.shape.0[b + m..].iter().cloned());
    Ok(vt(x.dtype, out))
}

/// ScatterElements(data, indices, updates): the data's type.
pub(super) fn scatter_elements(cx: &Ctx, axis: i64) -> R<ValueType> {
    cx.arity(3, 3)?;
    let x = cx.min_rank(0, 1)?;
    let idx = cx.int_operand(1)?;
    cx.same_dtype(0, 2)?;
    cx.axis(axis, x.shape.rank())?;
    let upd = cx.input(2)?;
    if idx.shape.rank() != x.shape.rank() || upd.shape.rank() != idx.shape.rank() {
        return Err(cx.err(format!(
            "data {}, indices {} and updates {} must have one rank",
            x.shape, idx.shape, upd.shape
        )));
    }
    Ok(x.clone())
}

/// ScatterNd(data, indices, updates): the data's type.
pub(super) fn scatter_nd(cx: &Ctx) -> R<ValueType> {
    cx.arity(3, 3)?;
    let x = cx.input(0)?;
    let idx = cx.int_operand(1)?;
    cx.same_dtype(0, 2)?;
    let upd = cx.input(2)?;
    let (r, q) = (x.shape.rank(), idx.shape.rank());
    if q == 0 {
        return Err(cx.err("indices must have rank at least 1"));
    }
    if let Dim::Fixed(m) = idx.shape.0[q - 1] {
        let m = m as usize;
        if m > r || upd.shape.rank() != q - 1 + r - m {
            return Err(cx.err(format!(
                "updates {} do not match indices {} and data {}",
                upd.shape, idx.shape, x.shape
            )));
        }
    }
    Ok(x.clone())
}

/// NonZero(x) → I64 [rank, count]; the count is known when x is constant.
pub(super) fn non_zero(cx: &Ctx) -> R<ValueType> {
    cx.arity(1, 1)?;
    let x = cx.input(0)?;
    let count = cx.konst(0).map_or(Dim::Unknown, |t| {
        Dim::Fixed(t.to_f64_vec().iter().filter(|v| **v != 0.0).count() as u64)
    });
    Ok(vt(
        DType::I64,
        vec![Dim::Fixed(x.shape.rank() as u64), count],
    ))
}

/// Compress(x, condition): along `axis`, or of the flattened input; the
/// selected count is known when the condition is constant.
pub(super) fn compress(cx: &Ctx, axis: Option<i64>) -> R<ValueType> {
    cx.arity(2, 2)?;
    let x = cx.input(0)?;
    let c = cx.input(1)?;
    if c.dtype != DType::Bool || c.shape.rank() != 1 {
        return Err(cx.err(format!("condition must be 1-d bool, got {c}")));
    }
    let count = cx.konst(1).map_or(Dim::Unknown, |t| {
        Dim::Fixed(t.to_i64_vec().iter().filter(|v| **v != 0).count() as u64)
    });
    match axis {
        None => Ok(vt(x.dtype, vec![count])),
        Some(a) => {
            let a = cx.axis(a, x.shape.rank())?;
            let mut out = x.shape.0.clone();
            out[a] = count;
            Ok(vt(x.dtype, out))
        }
    }
}

/// OneHot(indices, depth, values): a new axis of size depth; the values' dtype.
pub(super) fn one_hot(cx: &Ctx, axis: i64) -> R<ValueType> {
    cx.arity(3, 3)?;
    let idx = cx.input(0)?;
    let values = cx.input(2)?;
    if values.shape.num_elements().is_some_and(|n| n != 2) {
        return Err(cx.err(format!(
            "values must hold [off, on], got shape {}",
            values.shape
        )));
    }
    let r = idx.shape.rank();
    // The new axis is a position in the result, of rank r + 1.
    let a = cx.axis(axis, r + 1)?;
    let depth = match cx.konst(1).map(|t| t.to_f64_vec()).as_deref() {
        Some(&[d]) if d >= 1.0 => Dim::Fixed(d as u64),
        Some(v) => return Err(cx.err(format!("depth must be one positive value, got {v:?}"))),
        None => Dim::Unknown,
    };
    let mut out = idx.shape.0.clone();
    out.insert(a, depth);
    Ok(vt(values.dtype, out))
}

/// Trilu(x, k?): the input's type; x is at least 2-d.
pub(super) fn trilu(cx: &Ctx) -> R<ValueType> {
    cx.arity(1, 2)?;
    let x = cx.min_rank(0, 2)?;
    if cx.opt(1).is_some() {
        let k = cx.int_operand(1)?;
        if k.shape.num_elements().is_some_and(|n| n != 1) {
            return Err(cx.err(format!("k must be a scalar, got shape {}", k.shape)));
        }
    }
    Ok(x.clone())
}
