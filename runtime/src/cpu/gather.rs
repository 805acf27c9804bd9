//! Gather and scatter ops. Negative indices count from the end; indices out
//! of range are errors, never panics.

use super::qmatmul;
use super::value::{bail, norm_axis, strides_of, with_dtype, Elem, KResult, Value};
use kiln_ir::ScatterReduction;

fn fix_index(i: i64, d: usize) -> KResult<usize> {
    let j = if i < 0 { i + d as i64 } else { i };
    if j < 0 || j >= d as i64 {
        bail!("index {i} is out of range for a dimension of {d}");
    }
    Ok(j as usize)
}

/// Gather along `axis`: out shape = data[..axis] + indices + data[axis+1..].
/// A packed `[K, N]` weight is gathered along axis 1 only, decoding just the
/// selected columns to f32.
pub(crate) fn gather(data: &Value, indices: &Value, axis: i64) -> KResult<Value> {
    let a = norm_axis(axis, data.rank())?;
    let d = data.shape[a];
    let idx: Vec<usize> = indices
        .to_i64s()
        .into_iter()
        .map(|i| fix_index(i, d))
        .collect::<KResult<_>>()?;
    if data.dtype().is_quant() {
        // Output columns of a packed [in, out] weight are contiguous; rows are not.
        if a != 1 || data.rank() != 2 {
            bail!(
                "a packed {} weight of shape {:?} is gathered along axis 1 (its output columns), not axis {axis}",
                data.dtype(),
                data.shape
            );
        }
        return qmatmul::gather_columns(data, &idx, &indices.shape);
    }
    let outer: usize = data.shape[..a].iter().product();
    let inner: usize = data.shape[a + 1..].iter().product();
    let mut shape = data.shape[..a].to_vec();
    shape.extend(&indices.shape);
    shape.extend(&data.shape[a + 1..]);
    with_dtype!(data.dtype(), T => {
        let src = data.slice::<T>()?;
        let mut out = Vec::with_capacity(outer * idx.len() * inner);
        for o in 0..outer {
            for &i in &idx {
                let s = (o * d + i) * inner;
                out.extend_from_slice(&src[s..s + inner]);
            }
        }
        Ok(Value::new(shape, out))
    })
}

/// GatherElements: out[i] = data[i with axis coordinate replaced by indices[i]].
pub(crate) fn gather_elements(data: &Value, indices: &Value, axis: i64) -> KResult<Value> {
    let r = data.rank();
    let a = norm_axis(axis, r)?;
    if indices.rank() != r {
        bail!("GatherElements indices must have rank {r}");
    }
    let idx = indices.to_i64s();
    let ds = strides_of(&data.shape);
    let is = strides_of(&indices.shape);
    with_dtype!(data.dtype(), T => {
        let src = data.slice::<T>()?;
        let mut out = Vec::with_capacity(idx.len());
        for (flat, &k) in idx.iter().enumerate() {
            let off = element_offset(flat, k, a, &data.shape, &ds, &indices.shape, &is, "GatherElements")?;
            out.push(src[off]);
        }
        Ok(Value::new(indices.shape.clone(), out))
    })
}

/// Applies a scatter reduction.
fn combine<T: Elem>(old: T, new: T, red: ScatterReduction) -> T {
    match red {
        ScatterReduction::None => new,
        ScatterReduction::Add => {
            if T::DTYPE.is_float() {
                T::from_f64(old.to_f64() + new.to_f64())
            } else {
                T::from_i64(old.to_i64().wrapping_add(new.to_i64()))
            }
        }
        ScatterReduction::Mul => {
            if T::DTYPE.is_float() {
                T::from_f64(old.to_f64() * new.to_f64())
            } else {
                T::from_i64(old.to_i64().wrapping_mul(new.to_i64()))
            }
        }
        ScatterReduction::Max => {
            if new > old {
                new
            } else {
                old
            }
        }
        ScatterReduction::Min => {
            if new < old {
                new
            } else {
                old
            }
        }
    }
}

/// ScatterElements(data, indices, updates).
pub(crate) fn scatter_elements(
    data: &Value,
    indices: &Value,
    updates: &Value,
    axis: i64,
    red: ScatterReduction,
) -> KResult<Value> {
    let r = data.rank();
    let a = norm_axis(axis, r)?;
    if indices.shape != updates.shape || indices.rank() != r {
        bail!(
            "ScatterElements indices {:?} and updates {:?} must match and have rank {r}",
            indices.shape,
            updates.shape
        );
    }
    let idx = indices.to_i64s();
    let ds = strides_of(&data.shape);
    let is = strides_of(&indices.shape);
    with_dtype!(data.dtype(), T => {
        let mut out = data.slice::<T>()?.to_vec();
        let up = updates.slice::<T>()?;
        for (flat, &k) in idx.iter().enumerate() {
            let off = element_offset(flat, k, a, &data.shape, &ds, &indices.shape, &is, "ScatterElements")?;
            out[off] = combine(out[off], up[flat], red);
        }
        Ok(Value::new(data.shape.clone(), out))
    })
}

/// GatherNd with `batch_dims` leading batch axes.
pub(crate) fn gather_nd(data: &Value, indices: &Value, batch_dims: i64) -> KResult<Value> {
    let b = batch_dims.max(0) as usize;
    let q = indices.rank();
    if q == 0 || b >= q || b > data.rank() {
        bail!("GatherNd indices of rank {q} do not fit batch_dims {b}");
    }
    let k = indices.shape[q - 1];
    if b + k > data.rank() || indices.shape[..b] != data.shape[..b] {
        bail!(
            "GatherNd indices {:?} do not fit data {:?}",
            indices.shape,
            data.shape
        );
    }
    let batch: usize = data.shape[..b].iter().product();
    let slice_sz: usize = data.shape[b + k..].iter().product();
    let per_batch: usize = data.shape[b..].iter().product();
    let ds = strides_of(&data.shape[b..]);
    let idx = indices.to_i64s();
    let n_tuples: usize = indices.shape[..q - 1].iter().product();
    let tuples_per_batch = n_tuples / batch.max(1);
    let mut shape = indices.shape[..q - 1].to_vec();
    shape.extend(&data.shape[b + k..]);
    with_dtype!(data.dtype(), T => {
        let src = data.slice::<T>()?;
        let mut out = Vec::with_capacity(n_tuples * slice_sz);
        for t in 0..n_tuples {
            let bi = t / tuples_per_batch.max(1);
            let mut off = bi * per_batch;
            for j in 0..k {
                off += fix_index(idx[t * k + j], data.shape[b + j])? * ds[j];
            }
            out.extend_from_slice(&src[off..off + slice_sz]);
        }
        Ok(Value::new(shape, out))
    })
}

/// ScatterNd(data, indices, updates).
pub(crate) fn scatter_nd(
    data: &Value,
    indices: &Value,
    updates: &Value,
    red: ScatterReduction,
) -> KResult<Value> {
    let q = indices.rank();
    if q == 0 {
        bail!("ScatterNd indices must have rank ≥ 1");
    }
    let k = indices.shape[q - 1];
    if k > data.rank() {
        bail!(
            "ScatterNd index tuples of length {k} exceed data rank {}",
            data.rank()
        );
    }
    let mut expect = indices.shape[..q - 1].to_vec();
    expect.extend(&data.shape[k..]);
    if updates.shape != expect {
        bail!(
            "ScatterNd updates {:?} should have shape {expect:?}",
            updates.shape
        );
    }
    let slice_sz: usize = data.shape[k..].iter().product();
    let ds = strides_of(&data.shape);
    let idx = indices.to_i64s();
    let n_tuples: usize = indices.shape[..q - 1].iter().product();
    with_dtype!(data.dtype(), T => {
        let mut out = data.slice::<T>()?.to_vec();
        let up = updates.slice::<T>()?;
        for t in 0..n_tuples {
            let mut off = 0;
            for j in 0..k {
                off += fix_index(idx[t * k + j], data.shape[j])? * ds[j];
            }
            for s in 0..slice_sz {
                out[off + s] = combine(out[off + s], up[t * slice_sz + s], red);
            }
        }
        Ok(Value::new(data.shape.clone(), out))
    })
}

/// The offset in `data` of the element that index tensor position `flat`
/// addresses along `axis` with index `k` (GatherElements / ScatterElements).
#[allow(clippy::too_many_arguments)]
fn element_offset(
    flat: usize,
    k: i64,
    axis: usize,
    data_shape: &[usize],
    data_strides: &[usize],
    idx_shape: &[usize],
    idx_strides: &[usize],
    op: &str,
) -> KResult<usize> {
    let mut off = 0;
    let mut f = flat;
    for dim in 0..data_shape.len() {
        let c = f / idx_strides[dim];
        f %= idx_strides[dim];
        let c = if dim == axis {
            fix_index(k, data_shape[axis])?
        } else {
            c
        };
        if c >= data_shape[dim] {
            bail!("{op} indices shape {idx_shape:?} exceeds data {data_shape:?}");
        }
        off += c * data_strides[dim];
    }
    Ok(off)
}
