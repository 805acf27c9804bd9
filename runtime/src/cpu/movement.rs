//! Shape and data-movement ops.
//!
//! Most of them reduce to two primitives: a strided copy (Transpose, Slice,
//! Tile, DepthToSpace) and a per-axis index map (Pad).

use super::elementwise::{broadcast_to, PAR_MIN};
use super::value::{bail, norm_axis, strides_of, unsupported, with_dtype, Elem, KResult, Value};
use kiln_ir::{DType, DepthToSpaceMode, Literal, PadMode};
use rayon::prelude::*;

/// Copies the view `src[base + Σ idx·strides]` of `shape` into a new row-major vector.
pub(crate) fn strided_copy<T: Elem>(
    src: &[T],
    base: isize,
    shape: &[usize],
    strides: &[isize],
) -> KResult<Vec<T>> {
    let n: usize = shape.iter().product();
    if n == 0 {
        return Ok(Vec::new());
    }
    // Bounds check of the whole view once, so the loops can index freely.
    let (mut lo, mut hi) = (base, base);
    for (&d, &s) in shape.iter().zip(strides) {
        let span = (d as isize - 1) * s;
        if span < 0 {
            lo += span;
        } else {
            hi += span;
        }
    }
    if lo < 0 || hi as usize >= src.len() {
        bail!(
            "view of shape {shape:?} does not fit a buffer of {} elements",
            src.len()
        );
    }
    // Drop unit dims and merge dims that are contiguous with each other.
    let mut dims: Vec<(usize, isize)> = Vec::new();
    for (&d, &s) in shape.iter().zip(strides) {
        if d == 1 {
            continue;
        }
        if let Some(last) = dims.last_mut() {
            if last.1 == s * d as isize {
                last.0 *= d;
                last.1 = s;
                continue;
            }
        }
        dims.push((d, s));
    }
    let (inner, istride) = dims.pop().unwrap_or((1, 1));
    let outer: Vec<(usize, isize)> = dims;
    let mut out = vec![T::default(); n];
    let row = |r: usize, o: &mut [T]| {
        let mut off = base;
        let mut rr = r;
        for &(d, s) in outer.iter().rev() {
            off += (rr % d) as isize * s;
            rr /= d;
        }
        if istride == 1 {
            let start = off as usize;
            o.copy_from_slice(&src[start..start + inner]);
        } else {
            for (k, v) in o.iter_mut().enumerate() {
                *v = src[(off + k as isize * istride) as usize];
            }
        }
    };
    if n >= PAR_MIN {
        let per = (4096 / inner).max(1);
        out.par_chunks_mut(inner * per)
            .enumerate()
            .for_each(|(t, rows)| {
                for (j, o) in rows.chunks_mut(inner).enumerate() {
                    row(t * per + j, o);
                }
            });
    } else {
        for (r, o) in out.chunks_mut(inner).enumerate() {
            row(r, o);
        }
    }
    Ok(out)
}

/// A strided view of a whole value as a new value.
fn view(v: &Value, base: isize, shape: Vec<usize>, strides: &[isize]) -> KResult<Value> {
    with_dtype!(v.dtype(), T => Ok(Value::new(shape.clone(), strided_copy(v.slice::<T>()?, base, &shape, strides)?)))
}

/// Transpose by `perm` (reversed axes when `None`).
pub(crate) fn transpose(x: &Value, perm: Option<&[i64]>) -> KResult<Value> {
    let r = x.rank();
    let perm: Vec<usize> = match perm {
        None => (0..r).rev().collect(),
        Some(p) => p.iter().map(|&a| norm_axis(a, r)).collect::<KResult<_>>()?,
    };
    let mut seen = vec![false; r];
    if perm.len() != r || perm.iter().any(|&p| std::mem::replace(&mut seen[p], true)) {
        bail!("perm {perm:?} is not a permutation of {r} axes");
    }
    let st = strides_of(&x.shape);
    let shape: Vec<usize> = perm.iter().map(|&p| x.shape[p]).collect();
    let strides: Vec<isize> = perm.iter().map(|&p| st[p] as isize).collect();
    if perm.iter().enumerate().all(|(i, &p)| i == p) {
        return Ok(x.clone());
    }
    view(x, 0, shape, &strides)
}

/// Reshape to the target in operand 1 (0 copies the input dim unless `allowzero`, -1 infers).
pub(crate) fn reshape(x: &Value, target: &[i64], allowzero: bool) -> KResult<Value> {
    let mut shape = Vec::with_capacity(target.len());
    let mut infer = None;
    for (i, &t) in target.iter().enumerate() {
        match t {
            -1 => {
                if infer.replace(i).is_some() {
                    bail!("Reshape target {target:?} has more than one -1");
                }
                shape.push(1);
            }
            0 if !allowzero => match x.shape.get(i) {
                Some(&d) => shape.push(d),
                None => bail!(
                    "Reshape target {target:?} copies dim {i} of a rank-{} input",
                    x.rank()
                ),
            },
            t if t < 0 => bail!("Reshape target {target:?} has a negative size"),
            t => shape.push(t as usize),
        }
    }
    let n = x.len();
    if let Some(i) = infer {
        let rest: usize = shape
            .iter()
            .enumerate()
            .filter(|&(j, _)| j != i)
            .map(|(_, &d)| d)
            .product();
        if rest == 0 || !n.is_multiple_of(rest) {
            bail!("cannot reshape {:?} to {target:?}", x.shape);
        }
        shape[i] = n / rest;
    }
    if shape.iter().product::<usize>() != n {
        bail!("cannot reshape {:?} ({n} elements) to {target:?}", x.shape);
    }
    Ok(x.reshaped(shape))
}

/// Squeeze: removes the given size-1 axes, or every size-1 axis.
pub(crate) fn squeeze(x: &Value, axes: Option<&[i64]>) -> KResult<Value> {
    let r = x.rank();
    let shape: Vec<usize> = match axes {
        None => x.shape.iter().copied().filter(|&d| d != 1).collect(),
        Some(a) => {
            let ax: Vec<usize> = a.iter().map(|&a| norm_axis(a, r)).collect::<KResult<_>>()?;
            for &a in &ax {
                if x.shape[a] != 1 {
                    bail!("cannot squeeze axis {a} of size {}", x.shape[a]);
                }
            }
            (0..r)
                .filter(|i| !ax.contains(i))
                .map(|i| x.shape[i])
                .collect()
        }
    };
    Ok(x.reshaped(shape))
}

/// Unsqueeze: inserts size-1 axes at positions of the output.
pub(crate) fn unsqueeze(x: &Value, axes: &[i64]) -> KResult<Value> {
    let r = x.rank() + axes.len();
    let mut ax: Vec<usize> = axes
        .iter()
        .map(|&a| norm_axis(a, r))
        .collect::<KResult<_>>()?;
    ax.sort_unstable();
    if ax.windows(2).any(|w| w[0] == w[1]) {
        bail!("Unsqueeze axes {axes:?} repeat");
    }
    let mut shape = x.shape.clone();
    for a in ax {
        shape.insert(a, 1);
    }
    Ok(x.reshaped(shape))
}

/// Flatten to 2-d at `axis`.
pub(crate) fn flatten(x: &Value, axis: i64) -> KResult<Value> {
    let r = x.rank() as i64;
    let a = if axis < 0 { axis + r } else { axis };
    if a < 0 || a > r {
        bail!("Flatten axis {axis} is out of range for rank {r}");
    }
    let a = a as usize;
    let outer: usize = x.shape[..a].iter().product();
    let inner: usize = x.shape[a..].iter().product();
    Ok(x.reshaped(vec![outer, inner]))
}

/// Concat along `axis`.
pub(crate) fn concat(xs: &[&Value], axis: i64) -> KResult<Value> {
    let Some(first) = xs.first() else {
        bail!("Concat needs at least one operand");
    };
    let r = first.rank();
    let a = norm_axis(axis, r)?;
    let dt = first.dtype();
    let mut shape = first.shape.clone();
    shape[a] = 0;
    for x in xs {
        if x.dtype() != dt
            || x.rank() != r
            || (0..r).any(|i| i != a && x.shape[i] != first.shape[i])
        {
            bail!(
                "Concat operands do not match: {:?} and {:?} ({} vs {})",
                first.shape,
                x.shape,
                dt,
                x.dtype()
            );
        }
        shape[a] += x.shape[a];
    }
    let outer: usize = shape[..a].iter().product();
    let inner: usize = shape[a + 1..].iter().product();
    with_dtype!(dt, T => {
        let mut out = Vec::with_capacity(shape.iter().product());
        let parts: Vec<&[T]> = xs.iter().map(|x| x.slice::<T>()).collect::<KResult<_>>()?;
        for o in 0..outer {
            for (x, p) in xs.iter().zip(&parts) {
                let blk = x.shape[a] * inner;
                out.extend_from_slice(&p[o * blk..(o + 1) * blk]);
            }
        }
        Ok(Value::new(shape, out))
    })
}

/// Split along `axis` into the given sizes (or `n` near-equal parts).
pub(crate) fn split(
    x: &Value,
    axis: i64,
    sizes: Option<Vec<i64>>,
    n: usize,
) -> KResult<Vec<Value>> {
    let a = norm_axis(axis, x.rank())?;
    let d = x.shape[a];
    let sizes: Vec<usize> = match sizes {
        Some(s) => {
            if s.iter().any(|&v| v < 0) || s.iter().sum::<i64>() != d as i64 {
                bail!("split sizes {s:?} do not add up to {d}");
            }
            s.into_iter().map(|v| v as usize).collect()
        }
        None => {
            if n == 0 {
                bail!("Split with no outputs");
            }
            // ONNX: ceil(d / n) each, the last one takes the rest.
            let c = d.div_ceil(n);
            (0..n).map(|i| c.min(d.saturating_sub(c * i))).collect()
        }
    };
    let st = strides_of(&x.shape);
    let strides: Vec<isize> = st.iter().map(|&s| s as isize).collect();
    let mut start = 0;
    let mut out = Vec::new();
    for s in sizes {
        let mut shape = x.shape.clone();
        shape[a] = s;
        out.push(view(x, (start * st[a]) as isize, shape, &strides)?);
        start += s;
    }
    Ok(out)
}

/// Slice with ONNX clamping rules; negative steps walk backwards.
pub(crate) fn slice(
    x: &Value,
    starts: &[i64],
    ends: &[i64],
    axes: Option<&[i64]>,
    steps: Option<&[i64]>,
) -> KResult<Value> {
    let r = x.rank();
    if starts.len() != ends.len() {
        bail!("Slice starts and ends have different lengths");
    }
    let axes: Vec<usize> = match axes {
        Some(a) => a.iter().map(|&a| norm_axis(a, r)).collect::<KResult<_>>()?,
        None => (0..starts.len()).collect(),
    };
    let steps: Vec<i64> = steps
        .map(|s| s.to_vec())
        .unwrap_or_else(|| vec![1; starts.len()]);
    if axes.len() != starts.len() || steps.len() != starts.len() {
        bail!("Slice operands have different lengths");
    }
    let st = strides_of(&x.shape);
    let mut shape = x.shape.clone();
    let mut strides: Vec<isize> = st.iter().map(|&s| s as isize).collect();
    let mut base = 0isize;
    for (i, &ax) in axes.iter().enumerate() {
        if axes[..i].contains(&ax) {
            bail!("Slice axis {ax} repeats");
        }
        let d = x.shape[ax] as i64;
        let step = steps[i];
        if step == 0 {
            bail!("Slice step must not be 0");
        }
        let (mut s, mut e) = (starts[i], ends[i]);
        if s < 0 {
            s = s.saturating_add(d);
        }
        if e < 0 {
            e = e.saturating_add(d);
        }
        let count = if step > 0 {
            s = s.clamp(0, d);
            e = e.clamp(0, d);
            if e > s {
                (e - s + step - 1) / step
            } else {
                0
            }
        } else {
            s = s.clamp(0, (d - 1).max(0));
            e = e.clamp(-1, d - 1);
            if s > e && d > 0 {
                (s - e + (-step) - 1) / (-step)
            } else {
                0
            }
        };
        shape[ax] = count as usize;
        if count > 0 {
            base += s as isize * st[ax] as isize;
        }
        strides[ax] = st[ax] as isize * step as isize;
    }
    view(x, base, shape, &strides)
}

/// Expand: numpy broadcast to the shape in operand 1.
pub(crate) fn expand(x: &Value, shape: &[i64]) -> KResult<Value> {
    if shape.iter().any(|&d| d < 0) {
        bail!("Expand shape {shape:?} has a negative dim");
    }
    let s: Vec<usize> = shape.iter().map(|&d| d as usize).collect();
    broadcast_to(x, &s)
}

/// Tile by `reps`: a strided view [r0, d0, r1, d1, ...] with zero strides on the repeats.
pub(crate) fn tile(x: &Value, reps: &[i64]) -> KResult<Value> {
    if reps.len() != x.rank() || reps.iter().any(|&r| r < 0) {
        bail!("Tile repeats {reps:?} do not fit rank {}", x.rank());
    }
    let st = strides_of(&x.shape);
    let mut shape = Vec::new();
    let mut strides = Vec::new();
    for i in 0..x.rank() {
        shape.extend([reps[i] as usize, x.shape[i]]);
        strides.extend([0isize, st[i] as isize]);
    }
    let out_shape: Vec<usize> = (0..x.rank())
        .map(|i| reps[i] as usize * x.shape[i])
        .collect();
    if out_shape.iter().product::<usize>() == 0 {
        return with_dtype!(x.dtype(), T => Ok(Value::new(out_shape, Vec::<T>::new())));
    }
    Ok(view(x, 0, shape, &strides)?.reshaped(out_shape))
}

/// Gathers `src` through one index map per axis (`None` = fill).
pub(crate) fn map_axes<T: Elem>(
    src: &[T],
    in_shape: &[usize],
    maps: &[Vec<Option<usize>>],
    fill: T,
) -> Vec<T> {
    let out_shape: Vec<usize> = maps.iter().map(|m| m.len()).collect();
    let n: usize = out_shape.iter().product();
    let r = in_shape.len();
    if n == 0 {
        return Vec::new();
    }
    if r == 0 {
        return vec![src[0]];
    }
    let st = strides_of(in_shape);
    let last = out_shape[r - 1];
    let mut out = vec![fill; n];
    let row = |ri: usize, o: &mut [T]| {
        let mut rr = ri;
        let mut base = Some(0usize);
        for d in (0..r - 1).rev() {
            let i = rr % out_shape[d];
            rr /= out_shape[d];
            base = match (base, maps[d][i]) {
                (Some(b), Some(p)) => Some(b + p * st[d]),
                _ => None,
            };
        }
        if let Some(b) = base {
            for (v, m) in o.iter_mut().zip(&maps[r - 1]) {
                if let Some(p) = m {
                    *v = src[b + p];
                }
            }
        }
    };
    if n >= PAR_MIN {
        out.par_chunks_mut(last.max(1))
            .enumerate()
            .for_each(|(i, o)| row(i, o));
    } else {
        out.chunks_mut(last.max(1))
            .enumerate()
            .for_each(|(i, o)| row(i, o));
    }
    out
}

/// Pad with the given mode; `pads` = begins then ends for `axes` (all axes when None).
pub(crate) fn pad(
    x: &Value,
    pads: &[i64],
    value: Option<&Value>,
    axes: Option<&[i64]>,
    mode: PadMode,
) -> KResult<Value> {
    let r = x.rank();
    let axes: Vec<usize> = match axes {
        Some(a) => a.iter().map(|&a| norm_axis(a, r)).collect::<KResult<_>>()?,
        None => (0..r).collect(),
    };
    if pads.len() != 2 * axes.len() {
        bail!("Pad has {} pads for {} axes", pads.len(), axes.len());
    }
    let mut begin = vec![0i64; r];
    let mut end = vec![0i64; r];
    for (i, &a) in axes.iter().enumerate() {
        begin[a] = pads[i];
        end[a] = pads[i + axes.len()];
    }
    let mut maps = Vec::with_capacity(r);
    for a in 0..r {
        let d = x.shape[a] as i64;
        let len = d + begin[a] + end[a];
        if len < 0 {
            bail!("Pad removes more than axis {a} holds");
        }
        if d == 0 && len > 0 && mode != PadMode::Constant {
            bail!("cannot {mode:?}-pad an empty axis");
        }
        let m: Vec<Option<usize>> = (0..len)
            .map(|i| {
                let p = i - begin[a];
                if (0..d).contains(&p) {
                    return Some(p as usize);
                }
                match mode {
                    PadMode::Constant => None,
                    PadMode::Edge => Some(p.clamp(0, d - 1) as usize),
                    PadMode::Wrap => Some(p.rem_euclid(d) as usize),
                    PadMode::Reflect => {
                        if d == 1 {
                            Some(0)
                        } else {
                            let period = 2 * (d - 1);
                            let q = p.rem_euclid(period);
                            Some(if q >= d { period - q } else { q } as usize)
                        }
                    }
                }
            })
            .collect();
        maps.push(m);
    }
    with_dtype!(x.dtype(), T => {
        let fill = match value {
            Some(v) if v.len() >= 1 => v.cast(T::DTYPE).slice::<T>()?[0],
            _ => T::default(),
        };
        let shape: Vec<usize> = maps.iter().map(|m| m.len()).collect();
        Ok(Value::new(shape, map_axes(x.slice::<T>()?, &x.shape, &maps, fill)))
    })
}

/// DepthToSpace as reshape + transpose.
pub(crate) fn depth_to_space(x: &Value, b: u64, mode: DepthToSpaceMode) -> KResult<Value> {
    if x.rank() != 4 || b == 0 {
        bail!("DepthToSpace needs a 4-d input and a positive block size");
    }
    let b = b as usize;
    let [n, c, h, w] = [x.shape[0], x.shape[1], x.shape[2], x.shape[3]];
    if c % (b * b) != 0 {
        bail!("{c} channels do not divide by blocksize² = {}", b * b);
    }
    let cc = c / (b * b);
    let (tmp, perm): (Vec<usize>, [i64; 6]) = match mode {
        DepthToSpaceMode::Dcr => (vec![n, b, b, cc, h, w], [0, 3, 4, 1, 5, 2]),
        DepthToSpaceMode::Crd => (vec![n, cc, b, b, h, w], [0, 1, 4, 2, 5, 3]),
    };
    Ok(transpose(&x.reshaped(tmp), Some(&perm))?.reshaped(vec![n, cc, h * b, w * b]))
}

/// SpaceToDepth as reshape + transpose.
pub(crate) fn space_to_depth(x: &Value, b: u64) -> KResult<Value> {
    if x.rank() != 4 || b == 0 {
        bail!("SpaceToDepth needs a 4-d input and a positive block size");
    }
    let b = b as usize;
    let [n, c, h, w] = [x.shape[0], x.shape[1], x.shape[2], x.shape[3]];
    if h % b != 0 || w % b != 0 {
        bail!("spatial dims {h}×{w} do not divide by the block size {b}");
    }
    let t = transpose(
        &x.reshaped(vec![n, c, h / b, b, w / b, b]),
        Some(&[0, 3, 5, 1, 2, 4]),
    )?;
    Ok(t.reshaped(vec![n, c * b * b, h / b, w / b]))
}

/// Trilu: keeps the upper (j - i ≥ k) or lower (j - i ≤ k) triangle of the last two axes.
pub(crate) fn trilu(x: &Value, k: i64, upper: bool) -> KResult<Value> {
    if x.rank() < 2 {
        bail!("Trilu needs rank ≥ 2");
    }
    let (m, n) = (x.shape[x.rank() - 2], x.shape[x.rank() - 1]);
    with_dtype!(x.dtype(), T => {
        let mut v = x.slice::<T>()?.to_vec();
        for (idx, e) in v.iter_mut().enumerate() {
            let j = (idx % n) as i64;
            let i = ((idx / n) % m.max(1)) as i64;
            let keep = if upper { j - i >= k } else { j - i <= k };
            if !keep {
                *e = T::default();
            }
        }
        Ok(Value::new(x.shape.clone(), v))
    })
}

/// Shape, sliced to [start, end).
pub(crate) fn shape_op(x: &Value, start: i64, end: Option<i64>) -> Value {
    let r = x.rank() as i64;
    let clamp = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
    let (s, e) = (clamp(start), clamp(end.unwrap_or(r)));
    let dims: Vec<i64> = if s < e {
        x.shape[s..e].iter().map(|&d| d as i64).collect()
    } else {
        Vec::new()
    };
    Value::new(vec![dims.len()], dims)
}

/// ConstantOfShape.
pub(crate) fn constant_of_shape(shape: &[i64], value: Literal, dtype: DType) -> KResult<Value> {
    if shape.iter().any(|&d| d < 0) {
        bail!("ConstantOfShape shape {shape:?} has a negative dim");
    }
    let s: Vec<usize> = shape.iter().map(|&d| d as usize).collect();
    let n: usize = s.iter().product();
    with_dtype!(dtype, T => {
        let v: T = match value {
            Literal::Float(_) => T::from_f64(value.as_f64()),
            Literal::UInt(u) => T::from_u64(u),
            _ => T::from_i64(value.as_i64()),
        };
        Ok(Value::new(s, vec![v; n]))
    })
}

/// Range(start, limit, delta).
pub(crate) fn range(start: &Value, limit: &Value, delta: &Value) -> KResult<Value> {
    let dt = start.dtype();
    if limit.dtype() != dt
        || delta.dtype() != dt
        || start.len() != 1
        || limit.len() != 1
        || delta.len() != 1
    {
        bail!("Range needs three scalars of one dtype");
    }
    if dt.is_float() {
        let (s, l, d) = (start.to_f64s()[0], limit.to_f64s()[0], delta.to_f64s()[0]);
        if d == 0.0 {
            bail!("Range delta must not be 0");
        }
        let n = ((l - s) / d).ceil().max(0.0) as usize;
        with_dtype!(dt, T => {
            // numpy arange computes in the element type: start + i·delta.
            let (s, d) = (T::from_f64(s).to_f64(), T::from_f64(d).to_f64());
            Ok(Value::new(vec![n], (0..n).map(|i| T::from_f64(s + i as f64 * d)).collect::<Vec<T>>()))
        })
    } else {
        let (s, l, d) = (start.to_i64s()[0], limit.to_i64s()[0], delta.to_i64s()[0]);
        if d == 0 {
            bail!("Range delta must not be 0");
        }
        let diff = l as i128 - s as i128;
        let n = if (diff > 0) == (d > 0) && diff != 0 {
            ((diff.abs() + d.abs() as i128 - 1) / d.abs() as i128) as usize
        } else {
            0
        };
        with_dtype!(dt, T => Ok(Value::new(vec![n], (0..n).map(|i| T::from_i64(s + i as i64 * d)).collect::<Vec<T>>())))
    }
}

/// EyeLike: ones on the k-th diagonal of a 2-d shape.
pub(crate) fn eye_like(x: &Value, dtype: Option<DType>, k: i64) -> KResult<Value> {
    if x.rank() != 2 {
        bail!("EyeLike needs a 2-d input, got {:?}", x.shape);
    }
    let (m, n) = (x.shape[0], x.shape[1]);
    with_dtype!(dtype.unwrap_or(x.dtype()), T => {
        let mut v = vec![T::default(); m * n];
        for i in 0..m {
            let j = i as i64 + k;
            if j >= 0 && (j as usize) < n {
                v[i * n + j as usize] = T::one();
            }
        }
        Ok(Value::new(vec![m, n], v))
    })
}

/// OneHot(indices, depth, values=[off, on]).
pub(crate) fn one_hot(indices: &Value, depth: &Value, values: &Value, axis: i64) -> KResult<Value> {
    let dv = depth.to_f64s();
    if dv.len() != 1 || dv[0] < 1.0 {
        bail!("OneHot depth must be one positive value");
    }
    let depth = dv[0] as usize;
    if values.len() != 2 {
        bail!("OneHot values must hold [off, on]");
    }
    let r = indices.rank() + 1;
    let a = norm_axis(axis, r)?;
    let idx: Vec<i64> = indices.to_f64s().into_iter().map(|v| v as i64).collect();
    let (outer, inner): (usize, usize) = (
        indices.shape[..a].iter().product(),
        indices.shape[a..].iter().product(),
    );
    let mut shape = indices.shape.clone();
    shape.insert(a, depth);
    with_dtype!(values.dtype(), T => {
        let vs = values.slice::<T>()?;
        let mut out = vec![vs[0]; outer * depth * inner];
        for o in 0..outer {
            for i in 0..inner {
                let mut k = idx[o * inner + i];
                if k < 0 {
                    k += depth as i64;
                }
                if (0..depth as i64).contains(&k) {
                    out[(o * depth + k as usize) * inner + i] = vs[1];
                }
            }
        }
        Ok(Value::new(shape, out))
    })
}

/// NonZero: [rank, count] indices in row-major order.
pub(crate) fn non_zero(x: &Value) -> KResult<Value> {
    let r = x.rank();
    let nz: Vec<usize> = with_dtype!(x.dtype(), T => {
        x.slice::<T>()?.iter().enumerate().filter(|(_, &v)| v != T::default()).map(|(i, _)| i).collect()
    });
    let st = strides_of(&x.shape);
    let mut out = vec![0i64; r * nz.len()];
    for (j, &flat) in nz.iter().enumerate() {
        let mut f = flat;
        for d in 0..r {
            out[d * nz.len() + j] = (f / st[d]) as i64;
            f %= st[d];
        }
    }
    Ok(Value::new(vec![r, nz.len()], out))
}

/// Compress: keep the slices along `axis` (or of the flattened input) where the condition holds.
pub(crate) fn compress(x: &Value, cond: &Value, axis: Option<i64>) -> KResult<Value> {
    let c: Vec<bool> = cond.cast(DType::Bool).slice::<bool>()?.to_vec();
    let (x, a) = match axis {
        Some(a) => (x.clone(), norm_axis(a, x.rank())?),
        None => (x.reshaped(vec![x.len()]), 0),
    };
    let d = x.shape[a];
    if c.len() > d {
        bail!(
            "Compress condition has {} entries for an axis of {d}",
            c.len()
        );
    }
    let keep: Vec<usize> = (0..c.len()).filter(|&i| c[i]).collect();
    let maps: Vec<Vec<Option<usize>>> = (0..x.rank())
        .map(|i| {
            if i == a {
                keep.iter().map(|&k| Some(k)).collect()
            } else {
                (0..x.shape[i]).map(Some).collect()
            }
        })
        .collect();
    with_dtype!(x.dtype(), T => {
        let shape: Vec<usize> = maps.iter().map(|m| m.len()).collect();
        Ok(Value::new(shape, map_axes(x.slice::<T>()?, &x.shape, &maps, T::default())))
    })
}

/// Rejects what no kernel here handles.
#[allow(dead_code)]
pub(crate) fn no(op: &str) -> KResult<Value> {
    unsupported!("{op}")
}
