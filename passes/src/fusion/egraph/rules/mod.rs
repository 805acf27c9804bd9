//! The rewrite rules, one file per topic. Each rule goes one way (there is
//! no blanket commutativity or associativity: a rule that accepts operands
//! in either order says so itself), and each has a test that shows it firing
//! and one that shows it refusing where it must.

pub(crate) mod attention;
pub(crate) mod cleanup;
pub(crate) mod fuse;
pub(crate) mod recognize;

use super::analysis::{ConstKey, EG};
use super::saturate::{Rhs, Rule, R};
use egg::Id;
use kiln_ir::{DType, Op, ReduceKind, Tensor, ValueType};

/// Rule groups, in the order they are listed in reports.
pub const GROUPS: &[&str] = &["cleanup", "recognize", "attention", "fuse"];

/// The rules of one group.
pub(crate) fn group(name: &str) -> &'static [&'static dyn Rule] {
    match name {
        "cleanup" => cleanup::RULES,
        "recognize" => recognize::RULES,
        "attention" => attention::RULES,
        "fuse" => fuse::RULES,
        _ => &[],
    }
}

/// The rules of the named groups (every group when `groups` is empty).
pub(crate) fn select(groups: &[String]) -> Vec<&'static dyn Rule> {
    GROUPS
        .iter()
        .filter(|g| groups.is_empty() || groups.iter().any(|n| n == *g))
        .flat_map(|g| group(g).iter().copied())
        .collect()
}

/// The op nodes of a class.
pub(crate) fn ops(eg: &EG, id: Id) -> impl Iterator<Item = (&Op, &[Id])> {
    eg[id].nodes.iter().filter_map(|n| n.op())
}

/// The class's type.
pub(crate) fn ty(eg: &EG, id: Id) -> Option<&ValueType> {
    eg[id].data.ty.as_ref()
}

/// True when the class is the absent optional operand.
pub(crate) fn is_absent(eg: &EG, id: Id) -> bool {
    eg[id]
        .nodes
        .iter()
        .any(|n| matches!(n, super::lang::ENode::Absent))
}

/// The class's rank.
pub(crate) fn rank(eg: &EG, id: Id) -> Option<usize> {
    ty(eg, id).map(|t| t.shape.rank())
}

/// True when both classes have the same known dtype and shape.
pub(crate) fn same_type(eg: &EG, a: Id, b: Id) -> bool {
    matches!((ty(eg, a), ty(eg, b)), (Some(x), Some(y)) if x == y && !x.shape.0.iter().any(|d| matches!(d, kiln_ir::Dim::Unknown)))
}

/// The class's value when it is a float constant with all elements equal.
pub(crate) fn scalar(eg: &EG, id: Id) -> Option<f64> {
    eg[id].data.scalar
}

/// The class's constant.
pub(crate) fn constant(eg: &EG, id: Id) -> Option<&Tensor> {
    eg.analysis.constant(&eg[id].data)
}

/// The class's value when it is a constant integer tensor.
pub(crate) fn ints(eg: &EG, id: Id) -> Option<Vec<i64>> {
    let t = constant(eg, id)?;
    t.dtype().is_integer().then(|| t.to_i64_vec())
}

/// True when `a` is within `rel` (relative) of `b`.
pub(crate) fn near(a: f64, b: f64, rel: f64) -> bool {
    (a - b).abs() <= rel * b.abs().max(1e-30)
}

/// True when the class is a float scalar constant equal to `v` (within `rel`).
pub(crate) fn is_scalar(eg: &EG, id: Id, v: f64, rel: f64) -> bool {
    scalar(eg, id).is_some_and(|s| near(s, v, rel))
        && constant(eg, id).is_some_and(|t| t.len() == 1)
}

/// A reduction's kind, normalised axes (ascending, non-negative) and keepdims.
pub(crate) fn reduction(eg: &EG, op: &Op, ch: &[Id]) -> Option<(ReduceKind, Vec<usize>, bool)> {
    let Op::Reduce {
        kind,
        axes,
        keepdims,
        noop_with_empty_axes: _,
    } = op
    else {
        return None;
    };
    let r = rank(eg, *ch.first()?)? as i64;
    let raw = match axes {
        Some(a) => a.clone(),
        None => ints(eg, *ch.get(1)?)?,
    };
    if raw.is_empty() {
        return None;
    }
    let mut out: Vec<usize> = raw
        .iter()
        .map(|&a| if a < 0 { a + r } else { a })
        .map(|a| (0..r).contains(&a).then_some(a as usize))
        .collect::<Option<_>>()?;
    out.sort_unstable();
    out.dedup();
    Some((*kind, out, *keepdims))
}

/// True when `axes` are exactly the trailing axes of a rank-`r` tensor; returns the first.
pub(crate) fn trailing(axes: &[usize], r: usize) -> Option<usize> {
    let first = *axes.first()?;
    (axes.len() == r - first && axes.iter().enumerate().all(|(i, &a)| a == first + i))
        .then_some(first)
}

/// A float scalar constant of `dtype` with the given dims, made once per value.
pub(crate) fn scalar_const(
    rhs: &mut Rhs,
    eg: &EG,
    dtype: DType,
    dims: &[usize],
    v: f64,
) -> Option<R> {
    let key = ConstKey {
        tag: "scalar",
        parts: [v.to_bits() as i64, dtype_code(dtype)]
            .into_iter()
            .chain(dims.iter().map(|&d| d as i64))
            .collect(),
    };
    let dims = dims.to_vec();
    rhs.constant(eg, key, move || {
        let n: usize = dims.iter().product();
        match dtype {
            DType::F32 => Tensor::from_vec(dims, vec![v as f32; n]).ok(),
            DType::F64 => Tensor::from_vec(dims, vec![v; n]).ok(),
            _ => None,
        }
    })
}

/// A constant of ones with the given dims (an identity scale).
pub(crate) fn ones(rhs: &mut Rhs, eg: &EG, dtype: DType, dims: &[usize]) -> Option<R> {
    scalar_const(rhs, eg, dtype, dims, 1.0)
}

fn dtype_code(d: DType) -> i64 {
    match d {
        DType::F32 => 1,
        DType::F64 => 2,
        DType::F16 => 3,
        DType::BF16 => 4,
        _ => 0,
    }
}

#[cfg(test)]
pub(crate) mod testing;
