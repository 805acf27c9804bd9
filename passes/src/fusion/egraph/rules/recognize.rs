//! Recognition: LayerNorm, RMSNorm, GELU (erf and tanh forms), SiLU and
//! Softmax from the primitive ops exporters write them as.

use super::{
    constant, is_absent, is_scalar, ones, ops, rank, reduction, same_type, scalar, trailing, ty,
};
use crate::fusion::egraph::analysis::EG;
use crate::fusion::egraph::saturate::{Rhs, Rule};
use egg::Id;
use kiln_ir::{DType, Float, GeluApprox, Op, ReduceKind};

/// The rules of this group.
pub(crate) static RULES: &[&dyn Rule] = &[
    &LayerNormCore,
    &NormScale,
    &NormBias,
    &RmsNormCore,
    &GeluErf,
    &GeluTanh,
    &Silu,
    &SoftmaxPrimitive,
];

/// Relative tolerance for recognising well-known constants (√2, 0.5, ...).
const CONST_TOL: f64 = 1e-4;

/// The classes `id` is a binary `op` of, as (left, right) pairs.
fn binary(eg: &EG, id: Id, want: fn(&Op) -> bool) -> Vec<(Id, Id)> {
    ops(eg, id)
        .filter(|(op, ch)| want(op) && ch.len() == 2)
        .map(|(_, ch)| (ch[0], ch[1]))
        .collect()
}

fn unary(eg: &EG, id: Id, want: fn(&Op) -> bool) -> Vec<Id> {
    ops(eg, id)
        .filter(|(op, ch)| want(op) && ch.len() == 1)
        .map(|(_, ch)| ch[0])
        .collect()
}

/// `(a, b)` and `(b, a)` for every `a op b` in the class.
fn either_order(pairs: Vec<(Id, Id)>) -> Vec<(Id, Id)> {
    pairs
        .into_iter()
        .flat_map(|(a, b)| [(a, b), (b, a)])
        .collect()
}

/// Mean over trailing axes with kept dims: `(operand, first axis)`.
fn trailing_mean(eg: &EG, id: Id) -> Vec<(Id, usize)> {
    ops(eg, id)
        .filter_map(|(op, ch)| {
            let (kind, axes, keep) = reduction(eg, op, ch)?;
            let r = rank(eg, ch[0])?;
            (kind == ReduceKind::Mean && keep).then_some(())?;
            Some((ch[0], trailing(&axes, r)?))
        })
        .collect()
}

/// `d²` as `Pow(d, 2)` or `Mul(d, d)`: the `d`s.
fn squares(eg: &EG, id: Id) -> Vec<Id> {
    let mut v: Vec<Id> = binary(eg, id, |o| matches!(o, Op::Pow))
        .into_iter()
        .filter(|&(_, e)| is_scalar(eg, e, 2.0, 0.0))
        .map(|(d, _)| d)
        .collect();
    v.extend(
        binary(eg, id, |o| matches!(o, Op::Mul))
            .into_iter()
            .filter(|(a, b)| eg.find(*a) == eg.find(*b))
            .map(|(a, _)| a),
    );
    v
}

/// `1/√(v + eps)` (as `Reciprocal(Sqrt(..))`, `Div(1, Sqrt(..))` or
/// `Pow(.., -0.5)`) or `√(v + eps)` depending on `inverse`: the `(v, eps)` pairs.
fn root_of_sum(eg: &EG, id: Id, inverse: bool) -> Vec<(Id, f64)> {
    let sum = |s: Id| -> Vec<(Id, f64)> {
        either_order(binary(eg, s, |o| matches!(o, Op::Add)))
            .into_iter()
            .filter_map(|(v, e)| {
                let eps = scalar(eg, e)?;
                (constant(eg, e)?.len() == 1 && eps >= 0.0).then_some((v, eps))
            })
            .collect()
    };
    let sqrt_of = |s: Id| -> Vec<(Id, f64)> {
        unary(eg, s, |o| matches!(o, Op::Sqrt))
            .into_iter()
            .flat_map(sum)
            .collect()
    };
    if !inverse {
        return sqrt_of(id);
    }
    let mut out: Vec<(Id, f64)> = unary(eg, id, |o| matches!(o, Op::Reciprocal))
        .into_iter()
        .flat_map(sqrt_of)
        .collect();
    for (n, s) in binary(eg, id, |o| matches!(o, Op::Div)) {
        if is_scalar(eg, n, 1.0, 0.0) {
            out.extend(sqrt_of(s));
        }
    }
    for (b, e) in binary(eg, id, |o| matches!(o, Op::Pow)) {
        if is_scalar(eg, e, -0.5, 0.0) {
            out.extend(sum(b));
        }
    }
    out
}

/// `d / √(v + eps)` or `d · 1/√(v + eps)` in class `id`: `(d, v, eps)`.
fn normalized(eg: &EG, id: Id) -> Vec<(Id, Id, f64)> {
    let mut out = Vec::new();
    for (d, s) in binary(eg, id, |o| matches!(o, Op::Div)) {
        out.extend(
            root_of_sum(eg, s, false)
                .into_iter()
                .map(|(v, e)| (d, v, e)),
        );
    }
    for (d, s) in either_order(binary(eg, id, |o| matches!(o, Op::Mul))) {
        out.extend(root_of_sum(eg, s, true).into_iter().map(|(v, e)| (d, v, e)));
    }
    out
}

fn norm_rhs(eg: &EG, op: Op, x: Id) -> Option<Rhs> {
    let dtype = ty(eg, x)?.dtype;
    if dtype != DType::F32 {
        return None;
    }
    let mut rhs = Rhs::new();
    let xr = rhs.class(x);
    let scale = ones(&mut rhs, eg, dtype, &[1])?;
    if matches!(op, Op::LayerNorm { .. }) {
        let b = rhs.absent();
        rhs.op(op, &[xr, scale, b]);
    } else {
        rhs.op(op, &[xr, scale]);
    }
    Some(rhs)
}

/// `(x - mean(x)) / √(mean((x - mean(x))²) + eps)` over trailing axes →
/// `LayerNorm(x, 1)`.
pub(crate) struct LayerNormCore;

impl Rule for LayerNormCore {
    fn name(&self) -> &'static str {
        "layernorm"
    }
    fn search(&self, eg: &EG, id: Id, out: &mut Vec<Rhs>) {
        for (d, v, eps) in normalized(eg, id) {
            for (sq, axis) in trailing_mean(eg, v) {
                if !squares(eg, sq).iter().any(|&s| eg.find(s) == eg.find(d)) {
                    continue;
                }
                for (x, m) in binary(eg, d, |o| matches!(o, Op::Sub)) {
                    let centred = trailing_mean(eg, m)
                        .iter()
                        .any(|&(mx, a)| a == axis && eg.find(mx) == eg.find(x));
                    if !centred || !same_type(eg, id, x) {
                        continue;
                    }
                    let op = Op::LayerNorm {
                        axis: axis as i64,
                        epsilon: Float(eps as f32),
                    };
                    out.extend(norm_rhs(eg, op, x));
                }
            }
        }
    }
}

/// `x / √(mean(x²) + eps)` (or times the reciprocal root) over trailing axes →
/// `RmsNorm(x, 1)`.
pub(crate) struct RmsNormCore;

impl Rule for RmsNormCore {
    fn name(&self) -> &'static str {
        "rmsnorm"
    }
    fn search(&self, eg: &EG, id: Id, out: &mut Vec<Rhs>) {
        for (x, v, eps) in normalized(eg, id) {
            for (sq, axis) in trailing_mean(eg, v) {
                if squares(eg, sq).iter().any(|&s| eg.find(s) == eg.find(x)) && same_type(eg, id, x)
                {
                    let op = Op::RmsNorm {
                        axis: axis as i64,
                        epsilon: Float(eps as f32),
                    };
                    out.extend(norm_rhs(eg, op, x));
                }
            }
        }
    }
}

/// A norm with unit scale (and no bias) in class `id`: `(op, x)`.
fn unit_norms(eg: &EG, id: Id) -> Vec<(Op, Id)> {
    ops(eg, id)
        .filter(|(op, ch)| {
            matches!(op, Op::LayerNorm { .. } | Op::RmsNorm { .. })
                && is_scalar(eg, ch[1], 1.0, 0.0)
                && ch.get(2).is_none_or(|b| is_absent(eg, *b))
        })
        .map(|(op, ch)| (op.clone(), ch[0]))
        .collect()
}

/// True when constant `c` only spans the normalised axes of `norm` (`x`'s rank `r`).
fn spans_normalised(eg: &EG, op: &Op, c: Id, r: usize) -> bool {
    let axis = match op {
        Op::LayerNorm { axis, .. } | Op::RmsNorm { axis, .. } => *axis,
        _ => return false,
    };
    let axis = if axis < 0 { axis + r as i64 } else { axis } as usize;
    constant(eg, c).is_some_and(|t| t.dims().len() <= r - axis && t.dtype() == DType::F32)
}

/// `Norm(x, 1) · γ` → `Norm(x, γ)` for a constant γ over the normalised axes.
pub(crate) struct NormScale;

impl Rule for NormScale {
    fn name(&self) -> &'static str {
        "norm-scale"
    }
    fn search(&self, eg: &EG, id: Id, out: &mut Vec<Rhs>) {
        for (n, gamma) in either_order(binary(eg, id, |o| matches!(o, Op::Mul))) {
            for (op, x) in unit_norms(eg, n) {
                let Some(r) = rank(eg, x) else { continue };
                if !spans_normalised(eg, &op, gamma, r) || !same_type(eg, id, n) {
                    continue;
                }
                let mut rhs = Rhs::new();
                let xr = rhs.class(x);
                let g = rhs.class(gamma);
                if matches!(op, Op::LayerNorm { .. }) {
                    let b = rhs.absent();
                    rhs.op(op, &[xr, g, b]);
                } else {
                    rhs.op(op, &[xr, g]);
                }
                out.push(rhs);
            }
        }
    }
}

/// `LayerNorm(x, γ) + β` → `LayerNorm(x, γ, β)` for a constant β over the normalised axes.
pub(crate) struct NormBias;

impl Rule for NormBias {
    fn name(&self) -> &'static str {
        "norm-bias"
    }
    fn search(&self, eg: &EG, id: Id, out: &mut Vec<Rhs>) {
        for (n, beta) in either_order(binary(eg, id, |o| matches!(o, Op::Add))) {
            for (op, ch) in ops(eg, n) {
                if !matches!(op, Op::LayerNorm { .. }) || ch.len() != 3 {
                    continue;
                }
                let absent_bias = is_absent(eg, ch[2]);
                let Some(r) = rank(eg, ch[0]) else { continue };
                if !absent_bias || !spans_normalised(eg, op, beta, r) || !same_type(eg, id, n) {
                    continue;
                }
                let mut rhs = Rhs::new();
                let xr = rhs.class(ch[0]);
                let g = rhs.class(ch[1]);
                let b = rhs.class(beta);
                rhs.op(op.clone(), &[xr, g, b]);
                out.push(rhs);
            }
        }
    }
}

/// Factorisations of a product class into three factors, one level deep on
/// either side: `a·(b·c)` and `(a·b)·c` in every operand order.
fn three_factors(eg: &EG, id: Id) -> Vec<[Id; 3]> {
    let mut out = Vec::new();
    for (p, q) in either_order(binary(eg, id, |o| matches!(o, Op::Mul))) {
        for (a, b) in binary(eg, p, |o| matches!(o, Op::Mul)) {
            out.push([a, b, q]);
        }
    }
    out
}

/// `x · (1 + f) · ½` in any factor order: the `(x, f)` pairs, where `f` is the class added to 1.
fn half_x_one_plus(eg: &EG, id: Id) -> Vec<(Id, Id)> {
    let mut out = Vec::new();
    for f in three_factors(eg, id) {
        for h in 0..3 {
            if !is_scalar(eg, f[h], 0.5, CONST_TOL) {
                continue;
            }
            let rest: Vec<Id> = (0..3).filter(|&i| i != h).map(|i| f[i]).collect();
            for (x, e) in [(rest[0], rest[1]), (rest[1], rest[0])] {
                for (a, b) in either_order(binary(eg, e, |o| matches!(o, Op::Add))) {
                    if is_scalar(eg, b, 1.0, 0.0) {
                        out.push((x, a));
                    }
                }
            }
        }
    }
    out
}

fn gelu_rhs(eg: &EG, id: Id, x: Id, approximate: GeluApprox) -> Option<Rhs> {
    if !same_type(eg, id, x) || ty(eg, x)?.dtype != DType::F32 {
        return None;
    }
    let mut rhs = Rhs::new();
    let xr = rhs.class(x);
    rhs.op(Op::Gelu { approximate }, &[xr]);
    Some(rhs)
}

/// `x · ½ · (1 + erf(x / √2))` (or `erf(x · 1/√2)`) → `Gelu(x)`.
pub(crate) struct GeluErf;

impl Rule for GeluErf {
    fn name(&self) -> &'static str {
        "gelu-erf"
    }
    fn search(&self, eg: &EG, id: Id, out: &mut Vec<Rhs>) {
        for (x, f) in half_x_one_plus(eg, id) {
            for z in unary(eg, f, |o| matches!(o, Op::Erf)) {
                let scaled = binary(eg, z, |o| matches!(o, Op::Div))
                    .into_iter()
                    .any(|(a, c)| {
                        eg.find(a) == eg.find(x)
                            && is_scalar(eg, c, std::f64::consts::SQRT_2, CONST_TOL)
                    })
                    || either_order(binary(eg, z, |o| matches!(o, Op::Mul)))
                        .into_iter()
                        .any(|(a, c)| {
                            eg.find(a) == eg.find(x)
                                && is_scalar(eg, c, std::f64::consts::FRAC_1_SQRT_2, CONST_TOL)
                        });
                if scaled {
                    out.extend(gelu_rhs(eg, id, x, GeluApprox::None));
                }
            }
        }
    }
}

/// `x³` as `Pow(x, 3)`, `x·(x·x)` or `(x·x)·x`.
fn is_cube_of(eg: &EG, c: Id, x: Id) -> bool {
    let x = eg.find(x);
    binary(eg, c, |o| matches!(o, Op::Pow))
        .iter()
        .any(|&(b, e)| eg.find(b) == x && is_scalar(eg, e, 3.0, 0.0))
        || either_order(binary(eg, c, |o| matches!(o, Op::Mul)))
            .iter()
            .any(|&(a, sq)| eg.find(a) == x && squares(eg, sq).iter().any(|&s| eg.find(s) == x))
}

/// `x · ½ · (1 + tanh(√(2/π) · (x + 0.044715·x³)))` → `Gelu(x, tanh)`.
pub(crate) struct GeluTanh;

impl Rule for GeluTanh {
    fn name(&self) -> &'static str {
        "gelu-tanh"
    }
    fn search(&self, eg: &EG, id: Id, out: &mut Vec<Rhs>) {
        let k = (2.0 / std::f64::consts::PI).sqrt();
        for (x, f) in half_x_one_plus(eg, id) {
            for t in unary(eg, f, |o| matches!(o, Op::Tanh)) {
                for (u, c) in either_order(binary(eg, t, |o| matches!(o, Op::Mul))) {
                    if !is_scalar(eg, c, k, CONST_TOL) {
                        continue;
                    }
                    let inner = either_order(binary(eg, u, |o| matches!(o, Op::Add)))
                        .into_iter()
                        .any(|(a, cube_term)| {
                            eg.find(a) == eg.find(x)
                                && either_order(binary(eg, cube_term, |o| matches!(o, Op::Mul)))
                                    .into_iter()
                                    .any(|(cube, w)| {
                                        is_scalar(eg, w, 0.044715, CONST_TOL)
                                            && is_cube_of(eg, cube, x)
                                    })
                        });
                    if inner {
                        out.extend(gelu_rhs(eg, id, x, GeluApprox::Tanh));
                    }
                }
            }
        }
    }
}

/// `x · sigmoid(x)` (either order) → `Swish(x, α=1)`, i.e. SiLU; and
/// `x · sigmoid(α·x)` → `Swish(x, α)`.
pub(crate) struct Silu;

impl Rule for Silu {
    fn name(&self) -> &'static str {
        "silu"
    }
    fn search(&self, eg: &EG, id: Id, out: &mut Vec<Rhs>) {
        for (x, s) in either_order(binary(eg, id, |o| matches!(o, Op::Mul))) {
            for z in unary(eg, s, |o| matches!(o, Op::Sigmoid)) {
                let alpha = if eg.find(z) == eg.find(x) {
                    Some(1.0)
                } else {
                    either_order(binary(eg, z, |o| matches!(o, Op::Mul)))
                        .into_iter()
                        .find(|&(a, c)| {
                            eg.find(a) == eg.find(x)
                                && constant(eg, c).is_some_and(|t| t.len() == 1)
                        })
                        .and_then(|(_, c)| scalar(eg, c))
                };
                let Some(alpha) = alpha else { continue };
                if !same_type(eg, id, x) || ty(eg, x).is_none_or(|t| t.dtype != DType::F32) {
                    continue;
                }
                let mut rhs = Rhs::new();
                let xr = rhs.class(x);
                rhs.op(
                    Op::Swish {
                        alpha: Float(alpha as f32),
                    },
                    &[xr],
                );
                out.push(rhs);
            }
        }
    }
}

/// A reduction of `kind` over exactly one axis with kept dims: `(operand, axis)`.
fn reduce_one(eg: &EG, id: Id, kind: ReduceKind) -> Vec<(Id, usize)> {
    ops(eg, id)
        .filter_map(|(op, ch)| {
            let (k, axes, keep) = reduction(eg, op, ch)?;
            (k == kind && keep && axes.len() == 1).then_some((ch[0], axes[0]))
        })
        .collect()
}

/// `exp(x - max(x)) / Σ exp(x - max(x))` (or without the max) along one axis → `Softmax(x)`.
pub(crate) struct SoftmaxPrimitive;

impl Rule for SoftmaxPrimitive {
    fn name(&self) -> &'static str {
        "softmax"
    }
    fn search(&self, eg: &EG, id: Id, out: &mut Vec<Rhs>) {
        for (e, s) in binary(eg, id, |o| matches!(o, Op::Div)) {
            let Some((_, axis)) = reduce_one(eg, s, ReduceKind::Sum)
                .into_iter()
                .find(|&(se, _)| eg.find(se) == eg.find(e))
            else {
                continue;
            };
            for z in unary(eg, e, |o| matches!(o, Op::Exp)) {
                // Subtracting the maximum only guards exp against overflow;
                // Softmax always does, so both forms are the same function.
                let mut xs = vec![z];
                for (x, m) in binary(eg, z, |o| matches!(o, Op::Sub)) {
                    if reduce_one(eg, m, ReduceKind::Max)
                        .iter()
                        .any(|&(mx, a)| a == axis && eg.find(mx) == eg.find(x))
                    {
                        xs.push(x);
                    }
                }
                for x in xs {
                    if !same_type(eg, id, x) {
                        continue;
                    }
                    let mut rhs = Rhs::new();
                    let xr = rhs.class(x);
                    rhs.op(Op::Softmax { axis: axis as i64 }, &[xr]);
                    out.push(rhs);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use kiln_ir::{GeluApprox, Op, ReduceKind};

    fn mean(b: &mut B, x: kiln_ir::ValueId, axes: &[i64]) -> kiln_ir::ValueId {
        b.op(
            Op::Reduce {
                kind: ReduceKind::Mean,
                axes: Some(axes.to_vec()),
                keepdims: true,
                noop_with_empty_axes: false,
            },
            &[x],
        )
    }

    /// LayerNorm as the ViT export writes it.
    fn layer_norm_graph(axes: &[i64], centre_with: Option<kiln_ir::ValueId>) -> kiln_ir::Graph {
        let mut b = B::new();
        let x = b.input("x", &[2, 5, 16]);
        let m = mean(&mut b, x, axes);
        let d = b.op(Op::Sub, &[centre_with.unwrap_or(x), m]);
        let two = b.scalar(2.0);
        let p = b.op(Op::Pow, &[d, two]);
        let v = mean(&mut b, p, axes);
        let eps = b.scalar(1e-6);
        let a = b.op(Op::Add, &[v, eps]);
        let s = b.op(Op::Sqrt, &[a]);
        let n = b.op(Op::Div, &[d, s]);
        let gamma = b.weight(&[16], 1);
        let beta = b.weight(&[16], 2);
        let y = b.op(Op::Mul, &[n, gamma]);
        let y = b.op(Op::Add, &[y, beta]);
        b.finish(&[y])
    }

    #[test]
    fn layer_norm_with_scale_and_bias_is_recognised() {
        let g = layer_norm_graph(&[-1], None);
        let (f, s) = fuse(&g, &["recognize"]);
        assert!(s.fired["layernorm"] > 0 && s.fired["norm-scale"] > 0 && s.fired["norm-bias"] > 0);
        assert_eq!(op_names(&f), ["LayerNorm"]);
        assert_same_outputs(&g, &f, 1e-5);
    }

    #[test]
    fn layer_norm_over_a_leading_axis_is_not() {
        let g = layer_norm_graph(&[1], None);
        let (f, s) = fuse(&g, &["recognize"]);
        assert_eq!(s.fired["layernorm"], 0);
        assert!(!op_names(&f).contains(&"LayerNorm"));
    }

    #[test]
    fn rms_norm_is_recognised_and_takes_its_weight() {
        let mut b = B::new();
        let x = b.input("x", &[3, 32]);
        let sq = b.op(Op::Mul, &[x, x]);
        let v = mean(&mut b, sq, &[-1]);
        let eps = b.scalar(1e-5);
        let a = b.op(Op::Add, &[v, eps]);
        let r = b.op(Op::Sqrt, &[a]);
        let inv = b.op(Op::Reciprocal, &[r]);
        let n = b.op(Op::Mul, &[x, inv]);
        let w = b.weight(&[32], 3);
        let y = b.op(Op::Mul, &[w, n]);
        let g = b.finish(&[y]);
        let (f, s) = fuse(&g, &["recognize"]);
        assert!(s.fired["rmsnorm"] > 0 && s.fired["norm-scale"] > 0);
        assert_eq!(op_names(&f), ["RmsNorm"]);
        assert_same_outputs(&g, &f, 1e-5);
    }

    #[test]
    fn rms_norm_of_another_value_is_not() {
        // x / sqrt(mean(z²) + eps) normalises x by z's scale: not an RMSNorm of x.
        let mut b = B::new();
        let x = b.input("x", &[3, 32]);
        let z = b.input("z", &[3, 32]);
        let sq = b.op(Op::Mul, &[z, z]);
        let v = mean(&mut b, sq, &[-1]);
        let eps = b.scalar(1e-5);
        let a = b.op(Op::Add, &[v, eps]);
        let r = b.op(Op::Sqrt, &[a]);
        let n = b.op(Op::Div, &[x, r]);
        let g = b.finish(&[n]);
        let (_, s) = fuse(&g, &["recognize"]);
        assert_eq!(s.fired["rmsnorm"], 0);
    }

    fn gelu_erf_graph(root2: f32) -> kiln_ir::Graph {
        // The PyTorch export: x * 0.5 * (1 + erf(x / sqrt(2))) as Div, Erf, Add, Mul, Mul.
        let mut b = B::new();
        let x = b.input("x", &[4, 8]);
        let c = b.scalar(root2);
        let z = b.op(Op::Div, &[x, c]);
        let e = b.op(Op::Erf, &[z]);
        let one = b.scalar(1.0);
        let a = b.op(Op::Add, &[e, one]);
        let m = b.op(Op::Mul, &[x, a]);
        let half = b.scalar(0.5);
        let y = b.op(Op::Mul, &[m, half]);
        b.finish(&[y])
    }

    #[test]
    fn gelu_erf_is_recognised() {
        let g = gelu_erf_graph(std::f32::consts::SQRT_2);
        let (f, s) = fuse(&g, &["recognize"]);
        assert!(s.fired["gelu-erf"] > 0);
        assert_eq!(op_names(&f), ["Gelu"]);
        assert_eq!(
            f.nodes[0].op,
            Op::Gelu {
                approximate: GeluApprox::None
            }
        );
        assert_same_outputs(&g, &f, 1e-6);
    }

    #[test]
    fn gelu_with_a_wrong_constant_is_not() {
        let g = gelu_erf_graph(1.5);
        let (f, s) = fuse(&g, &["recognize"]);
        assert_eq!(s.fired["gelu-erf"], 0);
        assert!(!op_names(&f).contains(&"Gelu"));
    }

    /// `x · ½ · (1 + tanh(√(2/π) · (x + c·x³)))`, the tanh GELU when c = 0.044715.
    fn gelu_tanh_graph(c: f32) -> kiln_ir::Graph {
        let mut b = B::new();
        let x = b.input("x", &[4, 8]);
        let three = b.scalar(3.0);
        let cube = b.op(Op::Pow, &[x, three]);
        let w = b.scalar(c);
        let t = b.op(Op::Mul, &[w, cube]);
        let u = b.op(Op::Add, &[x, t]);
        let k = b.scalar((2.0 / std::f32::consts::PI).sqrt());
        let ku = b.op(Op::Mul, &[u, k]);
        let th = b.op(Op::Tanh, &[ku]);
        let one = b.scalar(1.0);
        let a = b.op(Op::Add, &[one, th]);
        let half = b.scalar(0.5);
        let hx = b.op(Op::Mul, &[half, x]);
        let y = b.op(Op::Mul, &[hx, a]);
        b.finish(&[y])
    }

    #[test]
    fn gelu_tanh_is_recognised() {
        let g = gelu_tanh_graph(0.044715);
        let (f, s) = fuse(&g, &["recognize"]);
        assert!(s.fired["gelu-tanh"] > 0);
        assert_eq!(op_names(&f), ["Gelu"]);
        assert_same_outputs(&g, &f, 1e-5);
    }

    #[test]
    fn silu_is_recognised_but_not_across_values() {
        let mut b = B::new();
        let x = b.input("x", &[4, 8]);
        let z = b.input("z", &[4, 8]);
        let s = b.op(Op::Sigmoid, &[x]);
        let y = b.op(Op::Mul, &[s, x]);
        let sz = b.op(Op::Sigmoid, &[z]);
        let gated = b.op(Op::Mul, &[x, sz]);
        let g = b.finish(&[y, gated]);
        let (f, st) = fuse(&g, &["recognize"]);
        assert_eq!(st.fired["silu"], 1);
        assert_eq!(op_names(&f), ["Swish", "Sigmoid", "Mul"]);
        assert_same_outputs(&g, &f, 1e-6);
    }

    fn softmax_graph(sum_axis: i64) -> kiln_ir::Graph {
        let mut b = B::new();
        let x = b.input("x", &[3, 7]);
        let red = |kind, axis: i64| Op::Reduce {
            kind,
            axes: Some(vec![axis]),
            keepdims: true,
            noop_with_empty_axes: false,
        };
        let m = b.op(red(ReduceKind::Max, -1), &[x]);
        let z = b.op(Op::Sub, &[x, m]);
        let e = b.op(Op::Exp, &[z]);
        let s = b.op(red(ReduceKind::Sum, sum_axis), &[e]);
        let y = b.op(Op::Div, &[e, s]);
        b.finish(&[y])
    }

    #[test]
    fn softmax_is_recognised() {
        let g = softmax_graph(-1);
        let (f, s) = fuse(&g, &["recognize"]);
        assert!(s.fired["softmax"] > 0);
        assert_eq!(op_names(&f), ["Softmax"]);
        assert_same_outputs(&g, &f, 1e-6);
    }

    #[test]
    fn softmax_along_another_axis_keeps_its_axis() {
        // The max along -1 only shifts each row; the sum along 0 makes it a
        // softmax of the shifted values along axis 0.
        let g = softmax_graph(0);
        let (f, s) = fuse(&g, &["recognize"]);
        assert!(s.fired["softmax"] > 0);
        assert!(f.nodes.iter().any(|n| n.op == Op::Softmax { axis: 0 }));
        assert_same_outputs(&g, &f, 1e-6);
    }

    #[test]
    fn exp_over_the_sum_of_another_exp_is_not_softmax() {
        let mut b = B::new();
        let x = b.input("x", &[3, 7]);
        let z = b.input("z", &[3, 7]);
        let ex = b.op(Op::Exp, &[x]);
        let ez = b.op(Op::Exp, &[z]);
        let s = b.op(
            Op::Reduce {
                kind: ReduceKind::Sum,
                axes: Some(vec![-1]),
                keepdims: true,
                noop_with_empty_axes: false,
            },
            &[ez],
        );
        let y = b.op(Op::Div, &[ex, s]);
        let g = b.finish(&[y]);
        let (f, st) = fuse(&g, &["recognize"]);
        assert_eq!(st.fired["softmax"], 0);
        assert!(!op_names(&f).contains(&"Softmax"));
    }

    #[test]
    fn norm_scale_and_bias_need_constants_over_the_normalised_axes() {
        // The scale is a runtime input, the bias spans the sequence axis too:
        // neither may move into the LayerNorm.
        let mut b = B::new();
        let x = b.input("x", &[2, 5, 16]);
        let y = b.input("y", &[2, 5, 16]);
        let m = mean(&mut b, x, &[-1]);
        let d = b.op(Op::Sub, &[x, m]);
        let two = b.scalar(2.0);
        let p = b.op(Op::Pow, &[d, two]);
        let v = mean(&mut b, p, &[-1]);
        let eps = b.scalar(1e-6);
        let a = b.op(Op::Add, &[v, eps]);
        let s = b.op(Op::Sqrt, &[a]);
        let n = b.op(Op::Div, &[d, s]);
        let scaled = b.op(Op::Mul, &[n, y]);
        let beta = b.weight(&[5, 16], 9);
        let out = b.op(Op::Add, &[scaled, beta]);
        let g = b.finish(&[out]);
        let (f, st) = fuse(&g, &["recognize"]);
        assert!(st.fired["layernorm"] > 0);
        assert_eq!(st.fired["norm-scale"], 0);
        assert_eq!(st.fired["norm-bias"], 0);
        assert_eq!(op_names(&f), ["LayerNorm", "Mul", "Add"]);
        assert_same_outputs(&g, &f, 1e-5);
    }

    #[test]
    fn gelu_tanh_with_a_wrong_cubic_coefficient_is_not() {
        let g = gelu_tanh_graph(0.05);
        let (f, s) = fuse(&g, &["recognize"]);
        assert_eq!(s.fired["gelu-tanh"], 0);
        assert!(!op_names(&f).contains(&"Gelu"));
    }
}
