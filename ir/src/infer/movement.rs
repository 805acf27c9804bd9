//! Shape and data movement: Reshape, Shape, Size, Flatten, Squeeze,
//! Unsqueeze, Transpose, Concat, Split, Slice, Expand, Tile, Pad,
//! DepthToSpace, SpaceToDepth.

use super::broadcast::broadcast_pair;
use super::{dim_offset, dim_product, dim_scale, unify, vt, Ctx, R};
use crate::{DType, Dim, Shape, ValueType};

/// Reshape(data, shape): 0 copies the input dimension (unless `allowzero`),
/// -1 is inferred from the element count. A non-constant shape gives its
/// static length's rank with unknown dimensions.
pub(super) fn reshape(cx: &Ctx, allowzero: bool) -> R<ValueType> {
    cx.arity(2, 2)?;
    let x = cx.input(0)?;
    cx.int_operand(1)?;
    let Some(target) = cx.const_ints(1) else {
        return Ok(vt(x.dtype, vec![Dim::Unknown; cx.vec_len(1)?]));
    };
    let input = &x.shape.0;
    let mut out = Vec::with_capacity(target.len());
    let mut infer_at = None;
    for (i, &t) in target.iter().enumerate() {
        match t {
            -1 => {
                if infer_at.replace(i).is_some() {
                    return Err(cx.err(format!("shape {target:?} has more than one -1")));
                }
                out.push(Dim::Unknown);
            }
            0 if !allowzero => out.push(input.get(i).cloned().ok_or_else(|| {
                cx.err(format!(
                    "shape {target:?} copies dimension {i} (a 0) that input {} does not have",
                    x.shape
                ))
            })?),
            t if t < 0 => return Err(cx.err(format!("shape {target:?} has invalid size {t}"))),
            t => out.push(Dim::Fixed(t as u64)),
        }
    }
    if allowzero && infer_at.is_some() && target.contains(&0) {
        return Err(cx.err(format!("shape {target:?} has both -1 and 0 with allowzero")));
    }
    let bad = || {
        cx.err(format!(
            "cannot reshape {} to {target:?}: element counts differ",
            x.shape
        ))
    };
    match infer_at {
        Some(k) => {
            let others: Vec<Dim> = out
                .iter()
                .enumerate()
                .filter(|&(i, _)| i != k)
                .map(|(_, d)| d.clone())
                .collect();
            out[k] = infer_minus_one(input, &others).ok_or_else(bad)?;
        }
        None => {
            if !counts_may_match(input, &out) {
                return Err(bad());
            }
        }
    }
    Ok(vt(x.dtype, out))
}

/// Dimensions split into a fixed product, symbols, and whether any is unknown.
struct Factors<'d> {
    fixed: u128,
    syms: Vec<&'d str>,
    unknown: bool,
}

fn factors(dims: &[Dim]) -> Factors<'_> {
    let mut f = Factors {
        fixed: 1,
        syms: Vec::new(),
        unknown: false,
    };
    for d in dims {
        match d {
            Dim::Fixed(n) => f.fixed = f.fixed.saturating_mul(*n as u128),
            Dim::Sym(s) => f.syms.push(s),
            Dim::Unknown => f.unknown = true,
        }
    }
    f
}

/// Cancels symbols that appear on both sides (equal names are equal sizes).
fn cancel<'d>(a: &mut Factors<'d>, b: &mut Factors<'d>) {
    let mut i = 0;
    while i < a.syms.len() {
        if let Some(j) = b.syms.iter().position(|s| *s == a.syms[i]) {
            a.syms.remove(i);
            b.syms.remove(j);
        } else {
            i += 1;
        }
    }
}

/// The size of a -1 in a reshape target; `None` when the counts cannot match.
fn infer_minus_one(input: &[Dim], others: &[Dim]) -> Option<Dim> {
    let (mut a, mut b) = (factors(input), factors(others));
    cancel(&mut a, &mut b);
    if a.fixed == 0 || b.fixed == 0 {
        // Zero-sized tensors: -1 is 0 when only the input is empty, ambiguous otherwise.
        return Some(if b.fixed != 0 && !b.unknown && b.syms.is_empty() {
            Dim::Fixed(0)
        } else {
            Dim::Unknown
        });
    }
    if a.unknown || b.unknown || !b.syms.is_empty() {
        return Some(Dim::Unknown);
    }
    match a.syms.as_slice() {
        [] => (a.fixed % b.fixed == 0).then(|| Dim::Fixed((a.fixed / b.fixed) as u64)),
        [s] if a.fixed == b.fixed => Some(Dim::Sym(s.to_string())),
        _ => Some(Dim::Unknown),
    }
}

/// False only when both shapes' element counts are statically known to differ.
fn counts_may_match(a: &[Dim], b: &[Dim]) -> bool {
    let (mut fa, mut fb) = (factors(a), factors(b));
    cancel(&mut fa, &mut fb);
    fa.unknown || fb.unknown || !fa.syms.is_empty() || !fb.syms.is_empty() || fa.fixed == fb.fixed
}

/// Shape(data) → I64 [len], the dims in `[start, end)` (clamped, negatives from the end).
pub(super) fn shape(cx: &Ctx, start: i64, end: Option<i64>) -> R<ValueType> {
    cx.arity(1, 1)?;
    let r = cx.input(0)?.shape.rank() as i64;
    let clamp = |v: i64| if v < 0 { v + r } else { v }.clamp(0, r);
    let (s, e) = (clamp(start), clamp(end.unwrap_or(r)));
    Ok(vt(DType::I64, vec![Dim::Fixed((e - s).max(0) as u64)]))
}

/// Size(data) → I64 scalar.
pub(super) fn size(cx: &Ctx) -> R<ValueType> {
    cx.arity(1, 1)?;
    cx.input(0)?;
    Ok(vt(DType::I64, Vec::new()))
}

/// Flatten(data) → 2-d [prod(dims[..axis]), prod(dims[axis..])], axis in [-r, r].
pub(super) fn flatten(cx: &Ctx, axis: i64) -> R<ValueType> {
    cx.arity(1, 1)?;
    let x = cx.input(0)?;
    let r = x.shape.rank();
    // Flatten's axis lies in [-r, r]: it may equal the rank.
    let ri = r as i64;
    if axis < -ri || axis > ri {
        return Err(cx.err(format!(
            "axis {axis} is out of range for rank {r} (valid: {} to {r})",
            -ri
        )));
    }
    let a = (if axis < 0 { axis + ri } else { axis }) as usize;
    let (head, tail) = x.shape.0.split_at(a);
    Ok(vt(x.dtype, vec![dim_product(head), dim_product(tail)]))
}

/// Squeeze(data, axes?): removes the given size-1 axes, or every fixed 1.
///
/// Without axes, a symbolic or unknown dimension is assumed not to be 1 and
/// is kept (a rank that changes with the bound value cannot be compiled).
/// With axes, such a dimension is assumed to be 1.
pub(super) fn squeeze(cx: &Ctx, attr: Option<&[i64]>) -> R<ValueType> {
    cx.arity(1, 2)?;
    let x = cx.input(0)?;
    let r = x.shape.rank();
    let axes = match attr {
        Some(a) => a.to_vec(),
        None if cx.opt(1).is_some() => {
            cx.int_operand(1)?;
            match cx.const_ints(1) {
                Some(a) => a,
                None => {
                    let n = cx.vec_len(1)?;
                    let left = r.checked_sub(n).ok_or_else(|| {
                        cx.err(format!("{n} axes given for an input of rank {r}"))
                    })?;
                    return Ok(vt(x.dtype, vec![Dim::Unknown; left]));
                }
            }
        }
        None => Vec::new(),
    };
    if axes.is_empty() {
        let out = x
            .shape
            .0
            .iter()
            .filter(|d| **d != Dim::Fixed(1))
            .cloned()
            .collect();
        return Ok(vt(x.dtype, out));
    }
    let axes = cx.axes(&axes, r)?;
    for &a in &axes {
        if let Dim::Fixed(n) = x.shape.0[a] {
            if n != 1 {
                return Err(cx.err(format!(
                    "cannot squeeze axis {a} of size {n} in {}",
                    x.shape
                )));
            }
        }
    }
    let out = x
        .shape
        .0
        .iter()
        .enumerate()
        .filter(|(i, _)| !axes.contains(i))
        .map(|(_, d)| d.clone())
        .collect();
    Ok(vt(x.dtype, out))
}

/// Unsqueeze(data, axes?): inserts size-1 axes at positions of the result.
pub(super) fn unsqueeze(cx: &Ctx, attr: Option<&[i64]>) -> R<ValueType> {
    cx.arity(1, 2)?;
    let x = cx.input(0)?;
    let r = x.shape.rank();
    let axes = match attr {
        Some(a) => a.to_vec(),
        None => {
            if cx.opt(1).is_none() {
                return Err(cx.err("needs axes, from the attribute or operand 1"));
            }
            cx.int_operand(1)?;
            match cx.const_ints(1) {
                Some(a) => a,
                None => return Ok(vt(x.dtype, vec![Dim::Unknown; r + cx.vec_len(1)?])),
            }
        }
    };
    let out_rank = r + axes.len();
    let axes = cx.axes(&axes, out_rank)?;
    let mut rest = x.shape.0.iter();
    let out = (0..out_rank)
        .map(|i| {
            if axes.contains(&i) {
                Dim::Fixed(1)
            } else {
                rest.next().cloned().unwrap_or(Dim::Unknown)
            }
        })
        .collect();
    Ok(vt(x.dtype, out))
}

/// Transpose(data): permutes axes; no perm reverses them.
pub(super) fn transpose(cx: &Ctx, perm: Option<&[i64]>) -> R<ValueType> {
    cx.arity(1, 1)?;
    let x = cx.input(0)?;
    let r = x.shape.rank();
    let perm: Vec<usize> = match perm {
        None => (0..r).rev().collect(),
        Some(p) => {
            if p.len() != r {
                return Err(cx.err(format!(
                    "perm {p:?} has {} entries for input {} of rank {r}",
                    p.len(),
                    x.shape
                )));
            }
            cx.axes(p, r)
                .map_err(|_| cx.err(format!("perm {p:?} is not a permutation of 0..{r}")))?
        }
    };
    Ok(vt(
        x.dtype,
        perm.iter().map(|&i| x.shape.0[i].clone()).collect(),
    ))
}

/// Concat(inputs...) along an axis: same dtype and rank, equal other dims.
pub(super) fn concat(cx: &Ctx, axis: i64) -> R<ValueType> {
    cx.arity(1, usize::MAX)?;
    let first = cx.input(0)?;
    let r = first.shape.rank();
    let a = cx.axis(axis, r)?;
    let mut out = first.shape.0.clone();
    let mut along = vec![&first.shape.0[a]];
    for i in 1..cx.count() {
        let t = cx.input(i)?;
        cx.same_dtype(0, i)?;
        if t.shape.rank() != r {
            return Err(cx.err(format!(
                "operand {i} has shape {} but operand 0 has rank {r}",
                t.shape
            )));
        }
        for (j, d) in t.shape.0.iter().enumerate() {
            if j == a {
                along.push(d);
            } else {
                out[j] = unify(&out[j], d).ok_or_else(|| {
                    cx.err(format!(
                        "operand {i} has shape {} which does not match {} outside axis {a}",
                        t.shape, first.shape
                    ))
                })?;
            }
        }
    }
    // Empty operands add nothing; one non-empty operand keeps its (symbolic) size.
    let nonzero: Vec<&Dim> = along.into_iter().filter(|d| **d != Dim::Fixed(0)).collect();
    out[a] = match nonzero.as_slice() {
        [] => Dim::Fixed(0),
        [d] => (*d).clone(),
        ds => ds
            .iter()
            .map(|d| d.fixed())
            .sum::<Option<u64>>()
            .map_or(Dim::Unknown, Dim::Fixed),
    };
    Ok(vt(first.dtype, out))
}

/// Split(data, split?) into parts along an axis: sizes from the attribute, a
/// constant (or statically sized) operand 1, or `num_outputs` equal parts.
pub(super) fn split(
    cx: &Ctx,
    axis: i64,
    attr: Option<&[i64]>,
    num_outputs: Option<usize>,
) -> R<Vec<ValueType>> {
    cx.arity(1, 2)?;
    let x = cx.input(0)?;
    let a = cx.axis(axis, x.shape.rank())?;
    let d = &x.shape.0[a];
    let with = |size: Dim| {
        let mut s = x.shape.0.clone();
        s[a] = size;
        vt(x.dtype, s)
    };
    let sizes: Option<Vec<i64>> = match attr {
        Some(s) if !s.is_empty() => Some(s.to_vec()),
        _ => match cx.opt_nonempty(1) {
            None => None,
            Some(_) => {
                cx.int_operand(1)?;
                match cx.const_ints(1) {
                    Some(s) => Some(s),
                    None => {
                        let n = cx.vec_len(1)?;
                        if num_outputs.is_some_and(|m| m != n) {
                            return Err(cx.err(format!(
                                "split operand has {n} sizes but the node has {} outputs",
                                num_outputs.unwrap_or(0)
                            )));
                        }
                        return Ok(vec![with(Dim::Unknown); n]);
                    }
                }
            }
        },
    };
    if let Some(sizes) = sizes {
        if let Some(n) = num_outputs.filter(|&n| n != sizes.len()) {
            return Err(cx.err(format!(
                "split sizes {sizes:?} give {} outputs but the node has {n}",
                sizes.len()
            )));
        }
        if sizes.iter().any(|&s| s < 0) {
            return Err(cx.err(format!("split sizes {sizes:?} must be non-negative")));
        }
        if let Dim::Fixed(n) = d {
            let total: i64 = sizes.iter().sum();
            if total as u64 != *n {
                return Err(cx.err(format!(
                    "split sizes {sizes:?} sum to {total} but axis {a} of {} has {n}",
                    x.shape
                )));
            }
        }
        return Ok(sizes.iter().map(|&s| with(Dim::Fixed(s as u64))).collect());
    }
    let n = num_outputs.ok_or_else(|| {
        cx.err(
            "without split sizes the output count decides the split; use infer_node_with_outputs",
        )
    })?;
    if n == 0 {
        return Err(cx.err("needs at least one output"));
    }
    Ok(match d {
        Dim::Fixed(len) => {
            let n = n as u64;
            // ONNX: ceil-sized chunks, the last one takes the remainder.
            let chunk = len.div_ceil(n);
            let last = chunk
                .checked_mul(n - 1)
                .and_then(|used| len.checked_sub(used))
                .ok_or_else(|| {
                    cx.err(format!(
                        "axis {a} of size {len} cannot be split into {n} parts"
                    ))
                })?;
            let mut v = vec![with(Dim::Fixed(chunk)); n as usize - 1];
            v.push(with(Dim::Fixed(last)));
            v
        }
        _ if n == 1 => vec![with(d.clone())],
        _ => vec![with(Dim::Unknown); n],
    })
}

/// Threshold above which a slice end means "to the end" (exporters use
/// INT_MAX or i64::MAX), so a symbolic dimension can be kept.
const TO_END: i64 = i32::MAX as i64;

/// The length of `d[start:end:step]` with ONNX clamping.
fn slice_dim(d: &Dim, start: i64, end: i64, step: i64) -> Dim {
    let Dim::Fixed(n) = d else {
        let whole = (step == 1 && start == 0 && end >= TO_END)
            || (step == -1 && start == -1 && end <= -TO_END);
        if whole {
            return d.clone();
        }
        if step > 0 && start >= 0 && end >= 0 && end <= start {
            return Dim::Fixed(0);
        }
        return Dim::Unknown;
    };
    let n = *n as i64;
    let norm = |v: i64| if v < 0 { v.saturating_add(n) } else { v };
    let (s, e) = if step > 0 {
        (norm(start).clamp(0, n), norm(end).clamp(0, n))
    } else {
        // max/min instead of clamp: for n = 0 the range would be empty.
        (norm(start).max(0).min(n - 1), norm(end).max(-1).min(n - 1))
    };
    let len = if step > 0 {
        if e > s {
            (e - s + step - 1) / step
        } else {
            0
        }
    } else if s > e {
        (s - e + (-step) - 1) / (-step)
    } else {
        0
    };
    Dim::Fixed(len.max(0) as u64)
}

/// Slice(data, starts, ends, axes?, steps?).
pub(super) fn slice(cx: &Ctx) -> R<ValueType> {
    cx.arity(3, 5)?;
    let x = cx.input(0)?;
    let r = x.shape.rank();
    for i in 1..5 {
        if cx.opt(i).is_some() {
            cx.int_operand(i)?;
        }
    }
    let n = cx.vec_len(1)?;
    if cx.vec_len(2)? != n {
        return Err(cx.err(format!(
            "starts has {n} values but ends has {}",
            cx.vec_len(2)?
        )));
    }
    let axes: Option<Vec<usize>> = match cx.opt(3) {
        None => Some((0..n).collect()),
        Some(_) => cx.const_ints(3).map(|a| cx.axes(&a, r)).transpose()?,
    };
    let Some(axes) = axes else {
        // Which axes are sliced is unknown: every dimension may change.
        return Ok(vt(x.dtype, vec![Dim::Unknown; r]));
    };
    if axes.len() != n {
        return Err(cx.err(format!("axes has {} values but starts has {n}", axes.len())));
    }
    if n > r {
        return Err(cx.err(format!("{n} axes sliced for an input of rank {r}")));
    }
    let steps: Option<Vec<i64>> = match cx.opt(4) {
        None => Some(vec![1; n]),
        Some(_) => cx.const_ints(4),
    };
    if let Some(s) = &steps {
        if s.len() != n {
            return Err(cx.err(format!("steps has {} values but starts has {n}", s.len())));
        }
        if s.contains(&0) {
            return Err(cx.err("steps must not be 0"));
        }
    }
    let (starts, ends) = (cx.const_ints(1), cx.const_ints(2));
    let mut out = x.shape.0.clone();
    for (k, &a) in axes.iter().enumerate() {
        out[a] = match (&starts, &ends, &steps) {
            (Some(s), Some(e), Some(st)) => slice_dim(&x.shape.0[a], s[k], e[k], st[k]),
            _ => Dim::Unknown,
        };
    }
    Ok(vt(x.dtype, out))
}

/// Expand(data, shape): bidirectional broadcast of the input with the shape.
pub(super) fn expand(cx: &Ctx) -> R<ValueType> {
    cx.arity(2, 2)?;
    let x = cx.input(0)?;
    cx.int_operand(1)?;
    let target = match cx.const_ints(1) {
        Some(t) => {
            if let Some(v) = t.iter().find(|&&v| v < 0) {
                return Err(cx.err(format!("shape {t:?} has negative size {v}")));
            }
            Shape::fixed(&t.iter().map(|&v| v as u64).collect::<Vec<_>>())
        }
        // Unknown target sizes: an input size n > 1 survives (the target must be 1 or n).
        None => Shape(vec![Dim::Unknown; cx.vec_len(1)?]),
    };
    let out = broadcast_pair(&x.shape, &target).map_err(|m| cx.err(m))?;
    Ok(ValueType::new(x.dtype, out))
}

/// Tile(data, repeats): each dimension times its repeat count.
pub(super) fn tile(cx: &Ctx) -> R<ValueType> {
    cx.arity(2, 2)?;
    let x = cx.input(0)?;
    cx.int_operand(1)?;
    let r = x.shape.rank();
    let Some(reps) = cx.const_ints(1) else {
        if cx.vec_len(1)? != r {
            return Err(cx.err(format!(
                "repeats must have {r} values for input {}",
                x.shape
            )));
        }
        return Ok(vt(x.dtype, vec![Dim::Unknown; r]));
    };
    if reps.len() != r {
        return Err(cx.err(format!(
            "repeats {reps:?} must have {r} values for input {}",
            x.shape
        )));
    }
    if reps.iter().any(|&v| v < 0) {
        return Err(cx.err(format!("repeats {reps:?} must be non-negative")));
    }
    Ok(vt(
        x.dtype,
        x.shape
            .0
            .iter()
            .zip(&reps)
            .map(|(d, &k)| dim_scale(d, k as u64))
            .collect(),
    ))
}

/// Pad(data, pads, constant_value?, axes?): begin pads then end pads, per axis.
pub(super) fn pad(cx: &Ctx) -> R<ValueType> {
    cx.arity(2, 4)?;
    let x = cx.input(0)?;
    let r = x.shape.rank();
    cx.int_operand(1)?;
    if cx.opt(2).is_some() {
        cx.same_dtype(0, 2)?;
    }
    let axes: Option<Vec<usize>> = match cx.opt(3) {
        None => Some((0..r).collect()),
        Some(_) => {
            cx.int_operand(3)?;
            cx.const_ints(3).map(|a| cx.axes(&a, r)).transpose()?
        }
    };
    let Some(axes) = axes else {
        return Ok(vt(x.dtype, vec![Dim::Unknown; r]));
    };
    let n = axes.len();
    let plen = cx.vec_len(1)?;
    if plen != 2 * n {
        return Err(cx.err(format!(
            "pads has {plen} values, expected {} (2 per padded axis)",
            2 * n
        )));
    }
    let mut out = x.shape.0.clone();
    let pads = cx.const_ints(1);
    for (k, &a) in axes.iter().enumerate() {
        out[a] = match &pads {
            Some(p) => dim_offset(&out[a], p[k].saturating_add(p[n + k])).ok_or_else(|| {
                cx.err(format!("pads {p:?} make axis {a} of {} negative", x.shape))
            })?,
            None => Dim::Unknown,
        };
    }
    Ok(vt(x.dtype, out))
}

/// `d / k`, exact when fixed; `None` when a fixed size does not divide.
fn dim_div(d: &Dim, k: u64) -> Option<Dim> {
    match d {
        Dim::Fixed(n) => (n % k == 0).then(|| Dim::Fixed(n / k)),
        _ if k == 1 => Some(d.clone()),
        _ => Some(Dim::Unknown),
    }
}

fn block_operand<'a>(cx: &'a Ctx, blocksize: u64) -> R<&'a ValueType> {
    cx.arity(1, 1)?;
    let x = cx.input(0)?;
    if x.shape.rank() != 4 {
        return Err(cx.err(format!("input must be 4-d [N, C, H, W], got {}", x.shape)));
    }
    if blocksize == 0 {
        return Err(cx.err("blocksize must be positive"));
    }
    Ok(x)
}

/// DepthToSpace: [N, C, H, W] → [N, C/b², H·b, W·b].
pub(super) fn depth_to_space(cx: &Ctx, b: u64) -> R<ValueType> {
    let x = block_operand(cx, b)?;
    let s = &x.shape.0;
    let c = dim_div(&s[1], b.saturating_mul(b)).ok_or_else(|| {
        cx.err(format!(
            "channels {} do not divide by blocksize² = {}",
            s[1],
            b * b
        ))
    })?;
    Ok(vt(
        x.dtype,
        vec![s[0].clone(), c, dim_scale(&s[2], b), dim_scale(&s[3], b)],
    ))
}

/// SpaceToDepth: [N, C, H, W] → [N, C·b², H/b, W/b].
pub(super) fn space_to_depth(cx: &Ctx, b: u64) -> R<ValueType> {
    let x = block_operand(cx, b)?;
    let s = &x.shape.0;
    let div = |d: &Dim| {
        dim_div(d, b)
            .ok_or_else(|| cx.err(format!("spatial size {d} does not divide by blocksize {b}")))
    };
    Ok(vt(
        x.dtype,
        vec![
            s[0].clone(),
            dim_scale(&s[1], b.saturating_mul(b)),
            div(&s[2])?,
            div(&s[3])?,
        ],
    ))
}
