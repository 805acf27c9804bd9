//! Reductions, arg-reductions, cumulative sums/products and TopK.

use super::value::{bail, norm_axis, strides_of, with_dtype, Elem, KResult, Value};
use kiln_ir::{DType, ReduceKind};
use rayon::prelude::*;
use std::cmp::Ordering;

/// Offsets of every index combination over `axes` (the others fixed at 0).
fn offsets_over(shape: &[usize], axes: &[usize]) -> Vec<usize> {
    let st = strides_of(shape);
    let mut offs = vec![0usize];
    for &a in axes {
        let mut next = Vec::with_capacity(offs.len() * shape[a]);
        for &o in &offs {
            for i in 0..shape[a] {
                next.push(o + i * st[a]);
            }
        }
        offs = next;
    }
    offs
}

/// Reduce over `axes` (already resolved: None = every axis, Some(empty) = identity).
pub(crate) fn reduce(
    x: &Value,
    kind: ReduceKind,
    axes: Option<&[i64]>,
    keepdims: bool,
) -> KResult<Value> {
    let r = x.rank();
    let mut red: Vec<usize> = match axes {
        None => (0..r).collect(),
        Some(a) => a.iter().map(|&a| norm_axis(a, r)).collect::<KResult<_>>()?,
    };
    red.sort_unstable();
    red.dedup();
    let kept: Vec<usize> = (0..r).filter(|a| !red.contains(a)).collect();
    let out_shape: Vec<usize> = if keepdims {
        (0..r)
            .map(|a| if red.contains(&a) { 1 } else { x.shape[a] })
            .collect()
    } else {
        kept.iter().map(|&a| x.shape[a]).collect()
    };
    let out_offs = offsets_over(&x.shape, &kept);
    let red_offs = offsets_over(&x.shape, &red);
    let dt = x.dtype();
    if dt == DType::Bool {
        // Max is "any", Min is "all"; an empty reduction gives the identity.
        let xs = x.slice::<bool>()?;
        let v: Vec<bool> = match kind {
            ReduceKind::Max => out_offs
                .iter()
                .map(|&b| red_offs.iter().any(|&o| xs[b + o]))
                .collect(),
            ReduceKind::Min => out_offs
                .iter()
                .map(|&b| red_offs.iter().all(|&o| xs[b + o]))
                .collect(),
            _ => bail!("Reduce {kind:?} on bool is not defined"),
        };
        return Ok(Value::new(out_shape, v));
    }
    let int = dt.is_integer();
    with_dtype!(dt, T => {
        let xs = x.slice::<T>()?;
        let one = |base: usize| -> T {
            let it = red_offs.iter().map(|&o| xs[base + o]);
            if int && matches!(kind, ReduceKind::Sum | ReduceKind::Prod | ReduceKind::Max | ReduceKind::Min) {
                let v: i64 = match kind {
                    ReduceKind::Sum => it.fold(0i64, |a, v| a.wrapping_add(v.to_i64())),
                    ReduceKind::Prod => it.fold(1i64, |a, v| a.wrapping_mul(v.to_i64())),
                    ReduceKind::Max => it.map(|v| v.to_i64()).max().unwrap_or(min_of(dt)),
                    _ => it.map(|v| v.to_i64()).min().unwrap_or(max_of(dt)),
                };
                if dt == DType::U64 { T::from_u64(v as u64) } else { T::from_i64(v) }
            } else {
                let n = red_offs.len() as f64;
                let v: f64 = match kind {
                    ReduceKind::Sum => it.map(|v| v.to_f64()).sum(),
                    ReduceKind::Mean => it.map(|v| v.to_f64()).sum::<f64>() / n,
                    ReduceKind::Prod => it.map(|v| v.to_f64()).product(),
                    ReduceKind::Max => it.map(|v| v.to_f64()).fold(f64::NEG_INFINITY, |a, b| if b > a || b.is_nan() || a.is_nan() { if a.is_nan() { a } else { b } } else { a }),
                    ReduceKind::Min => it.map(|v| v.to_f64()).fold(f64::INFINITY, |a, b| if b < a || b.is_nan() || a.is_nan() { if a.is_nan() { a } else { b } } else { a }),
                    ReduceKind::L1 => it.map(|v| v.to_f64().abs()).sum(),
                    ReduceKind::L2 => it.map(|v| { let f = v.to_f64(); f * f }).sum::<f64>().sqrt(),
                    ReduceKind::SumSquare => it.map(|v| { let f = v.to_f64(); f * f }).sum(),
                    ReduceKind::LogSum => it.map(|v| v.to_f64()).sum::<f64>().ln(),
                    ReduceKind::LogSumExp => {
                        let vals: Vec<f64> = it.map(|v| v.to_f64()).collect();
                        let m = vals.iter().copied().filter(|v| v.is_finite()).fold(f64::NEG_INFINITY, f64::max);
                        let m = if m.is_finite() { m } else { 0.0 };
                        vals.iter().map(|v| (v - m).exp()).sum::<f64>().ln() + m
                    }
                };
                T::from_f64(v)
            }
        };
        let out: Vec<T> = if out_offs.len() * red_offs.len() >= super::elementwise::PAR_MIN {
            out_offs.par_iter().map(|&b| one(b)).collect()
        } else {
            out_offs.iter().map(|&b| one(b)).collect()
        };
        Ok(Value::new(out_shape, out))
    })
}

fn min_of(dt: DType) -> i64 {
    match dt {
        DType::I8 => i8::MIN as i64,
        DType::I16 => i16::MIN as i64,
        DType::I32 => i32::MIN as i64,
        DType::I64 => i64::MIN,
        _ => 0,
    }
}

fn max_of(dt: DType) -> i64 {
    match dt {
        DType::I8 => i8::MAX as i64,
        DType::I16 => i16::MAX as i64,
        DType::I32 => i32::MAX as i64,
        DType::U8 => u8::MAX as i64,
        DType::U16 => u16::MAX as i64,
        DType::U32 => u32::MAX as i64,
        // u64::MAX reinterpreted; the caller casts back through u64.
        DType::U64 => -1,
        _ => i64::MAX,
    }
}

/// Splits a shape around `axis` into (outer, len, inner).
pub(crate) fn split_axis(shape: &[usize], axis: usize) -> (usize, usize, usize) {
    (
        shape[..axis].iter().product(),
        shape[axis],
        shape[axis + 1..].iter().product(),
    )
}

/// ArgMax / ArgMin.
pub(crate) fn arg_reduce(
    x: &Value,
    max: bool,
    axis: i64,
    keepdims: bool,
    last: bool,
) -> KResult<Value> {
    let a = norm_axis(axis, x.rank())?;
    let (outer, n, inner) = split_axis(&x.shape, a);
    if n == 0 {
        bail!("ArgReduce over an empty axis");
    }
    let mut shape = x.shape.clone();
    if keepdims {
        shape[a] = 1;
    } else {
        shape.remove(a);
    }
    with_dtype!(x.dtype(), T => {
        let xs = x.slice::<T>()?;
        let mut out = vec![0i64; outer * inner];
        for o in 0..outer {
            for i in 0..inner {
                let mut bi = 0usize;
                let mut bv = xs[o * n * inner + i];
                for j in 1..n {
                    let v = xs[(o * n + j) * inner + i];
                    if bv.is_nan() {
                        break;
                    }
                    let better = if v.is_nan() {
                        true
                    } else if max {
                        v > bv || (last && v == bv)
                    } else {
                        v < bv || (last && v == bv)
                    };
                    if better {
                        bv = v;
                        bi = j;
                    }
                }
                out[o * inner + i] = bi as i64;
            }
        }
        Ok(Value::new(shape, out))
    })
}

/// CumSum / CumProd along the axis in operand 1.
pub(crate) fn cumulative(
    x: &Value,
    axis: &Value,
    prod: bool,
    exclusive: bool,
    reverse: bool,
) -> KResult<Value> {
    let ax = axis.to_i64s();
    if ax.len() != 1 {
        bail!("the axis operand must hold one value, got {}", ax.len());
    }
    let a = norm_axis(ax[0], x.rank())?;
    let (outer, n, inner) = split_axis(&x.shape, a);
    with_dtype!(x.dtype(), T => {
        let xs = x.slice::<T>()?;
        let mut out = vec![T::default(); xs.len()];
        let float = T::DTYPE.is_float();
        for o in 0..outer {
            for i in 0..inner {
                let mut accf = if prod { 1.0 } else { 0.0 };
                let mut acci: i64 = if prod { 1 } else { 0 };
                for s in 0..n {
                    let j = if reverse { n - 1 - s } else { s };
                    let idx = (o * n + j) * inner + i;
                    let v = xs[idx];
                    if exclusive {
                        out[idx] = if float { T::from_f64(accf) } else { T::from_i64(acci) };
                    }
                    if prod {
                        accf *= v.to_f64();
                        acci = acci.wrapping_mul(v.to_i64());
                    } else {
                        accf += v.to_f64();
                        acci = acci.wrapping_add(v.to_i64());
                    }
                    if !exclusive {
                        out[idx] = if float { T::from_f64(accf) } else { T::from_i64(acci) };
                    }
                }
            }
        }
        Ok(Value::new(x.shape.clone(), out))
    })
}

/// TopK: values and i64 indices; ties keep the lower index first (like the ONNX reference).
pub(crate) fn topk(x: &Value, k: &Value, axis: i64, largest: bool) -> KResult<Vec<Value>> {
    let kv = k.to_i64s();
    if kv.len() != 1 || kv[0] < 0 {
        bail!("K must be one non-negative value, got {kv:?}");
    }
    let k = kv[0] as usize;
    let a = norm_axis(axis, x.rank())?;
    let (outer, n, inner) = split_axis(&x.shape, a);
    if k > n {
        bail!("K = {k} is larger than the axis length {n}");
    }
    let mut shape = x.shape.clone();
    shape[a] = k;
    with_dtype!(x.dtype(), T => {
        let xs = x.slice::<T>()?;
        let mut vals = vec![T::default(); outer * k * inner];
        let mut idxs = vec![0i64; outer * k * inner];
        // NaN sorts above everything, as in numpy.
        let cmp = |a: &T, b: &T| -> Ordering {
            match (a.is_nan(), b.is_nan()) {
                (true, true) => Ordering::Equal,
                (true, false) => Ordering::Greater,
                (false, true) => Ordering::Less,
                _ => a.partial_cmp(b).unwrap_or(Ordering::Equal),
            }
        };
        let mut order: Vec<usize> = Vec::with_capacity(n);
        for o in 0..outer {
            for i in 0..inner {
                order.clear();
                order.extend(0..n);
                let at = |j: usize| xs[(o * n + j) * inner + i];
                // Stable sort keeps lower indices first among equal values.
                if largest {
                    order.sort_by(|&p, &q| cmp(&at(q), &at(p)));
                } else {
                    order.sort_by(|&p, &q| cmp(&at(p), &at(q)));
                }
                for (s, &j) in order.iter().take(k).enumerate() {
                    vals[(o * k + s) * inner + i] = at(j);
                    idxs[(o * k + s) * inner + i] = j as i64;
                }
            }
        }
        Ok(vec![Value::new(shape.clone(), vals), Value::new(shape, idxs)])
    })
}
