//! Cleanup: transpose and reshape pairs, identity arithmetic, chains of
//! scalar constants. (Constant-only subgraphs are folded by the analysis as
//! they appear; see `analysis.rs`.)

use super::{constant, ints, ops, same_type, scalar, scalar_const, ty};
use crate::fusion::egraph::analysis::EG;
use crate::fusion::egraph::saturate::{Rhs, Rule};
use egg::Id;
use kiln_ir::Op;

/// The rules of this group.
pub(crate) static RULES: &[&dyn Rule] = &[
    &TransposePair,
    &TransposeIdentity,
    &ReshapePair,
    &ReshapeNoop,
    &IdentityArith,
    &ScalarChain,
    &DivToMul,
];

fn perm_of(p: &Option<Vec<i64>>, rank: usize) -> Option<Vec<usize>> {
    match p {
        None => Some((0..rank).rev().collect()),
        Some(p) if p.len() == rank => p
            .iter()
            .map(|&a| (0..rank as i64).contains(&a).then_some(a as usize))
            .collect(),
        Some(_) => None,
    }
}

fn is_identity(p: &[usize]) -> bool {
    p.iter().enumerate().all(|(i, &a)| i == a)
}

/// `Transpose(Transpose(y, p1), p2)` → `Transpose(y, p1∘p2)`, or `y` when the composition is the identity.
pub(crate) struct TransposePair;

impl Rule for TransposePair {
    fn name(&self) -> &'static str {
        "transpose-pair"
    }
    fn search(&self, eg: &EG, id: Id, out: &mut Vec<Rhs>) {
        for (op, ch) in ops(eg, id) {
            let Op::Transpose { perm: p2 } = op else {
                continue;
            };
            for (inner, ich) in ops(eg, ch[0]) {
                let Op::Transpose { perm: p1 } = inner else {
                    continue;
                };
                let Some(r) = ty(eg, ich[0]).map(|t| t.shape.rank()) else {
                    continue;
                };
                let (Some(p1), Some(p2)) = (perm_of(p1, r), perm_of(p2, r)) else {
                    continue;
                };
                let q: Vec<usize> = p2.iter().map(|&i| p1[i]).collect();
                let mut rhs = Rhs::new();
                let y = rhs.class(ich[0]);
                if !is_identity(&q) {
                    rhs.op(
                        Op::Transpose {
                            perm: Some(q.iter().map(|&a| a as i64).collect()),
                        },
                        &[y],
                    );
                }
                out.push(rhs);
            }
        }
    }
}

/// `Transpose(y, identity)` → `y`.
pub(crate) struct TransposeIdentity;

impl Rule for TransposeIdentity {
    fn name(&self) -> &'static str {
        "transpose-identity"
    }
    fn search(&self, eg: &EG, id: Id, out: &mut Vec<Rhs>) {
        for (op, ch) in ops(eg, id) {
            let Op::Transpose { perm } = op else { continue };
            let Some(r) = ty(eg, ch[0]).map(|t| t.shape.rank()) else {
                continue;
            };
            if perm_of(perm, r).is_some_and(|p| is_identity(&p)) {
                let mut rhs = Rhs::new();
                rhs.class(ch[0]);
                out.push(rhs);
            }
        }
    }
}

/// `Reshape(Reshape(y, s1), s2)` → `Reshape(y, s2)` when `s2` does not copy
/// dimensions from its input (no 0 entries, or `allowzero`).
pub(crate) struct ReshapePair;

impl Rule for ReshapePair {
    fn name(&self) -> &'static str {
        "reshape-pair"
    }
    fn search(&self, eg: &EG, id: Id, out: &mut Vec<Rhs>) {
        for (op, ch) in ops(eg, id) {
            let Op::Reshape { allowzero } = op else {
                continue;
            };
            let Some(s2) = ints(eg, ch[1]) else { continue };
            if !allowzero && s2.contains(&0) {
                continue;
            }
            for (inner, ich) in ops(eg, ch[0]) {
                if !matches!(inner, Op::Reshape { .. }) {
                    continue;
                }
                let mut rhs = Rhs::new();
                let y = rhs.class(ich[0]);
                let s = rhs.class(ch[1]);
                rhs.op(op.clone(), &[y, s]);
                out.push(rhs);
            }
        }
    }
}

/// `Reshape(y, s)` → `y` when the result has `y`'s (fully known) shape.
pub(crate) struct ReshapeNoop;

impl Rule for ReshapeNoop {
    fn name(&self) -> &'static str {
        "reshape-noop"
    }
    fn search(&self, eg: &EG, id: Id, out: &mut Vec<Rhs>) {
        for (op, ch) in ops(eg, id) {
            let reshape_like = matches!(
                op,
                Op::Reshape { .. } | Op::Squeeze { .. } | Op::Unsqueeze { .. } | Op::Flatten { .. }
            );
            if reshape_like && same_type(eg, id, ch[0]) {
                let mut rhs = Rhs::new();
                rhs.class(ch[0]);
                out.push(rhs);
            }
        }
    }
}

/// `x + 0`, `0 + x`, `x - 0`, `x · 1`, `1 · x`, `x / 1`, `x ^ 1` → `x`, when
/// the constant does not broadcast `x` to a larger shape or another dtype.
pub(crate) struct IdentityArith;

impl Rule for IdentityArith {
    fn name(&self) -> &'static str {
        "identity-arith"
    }
    fn search(&self, eg: &EG, id: Id, out: &mut Vec<Rhs>) {
        for (op, ch) in ops(eg, id) {
            if ch.len() != 2 {
                continue;
            }
            let is = |c: Id, v: f64| scalar(eg, c) == Some(v);
            let keep = match op {
                Op::Add => {
                    if is(ch[1], 0.0) {
                        Some(ch[0])
                    } else if is(ch[0], 0.0) {
                        Some(ch[1])
                    } else {
                        None
                    }
                }
                Op::Mul => {
                    if is(ch[1], 1.0) {
                        Some(ch[0])
                    } else if is(ch[0], 1.0) {
                        Some(ch[1])
                    } else {
                        None
                    }
                }
                Op::Sub => is(ch[1], 0.0).then_some(ch[0]),
                Op::Div | Op::Pow => is(ch[1], 1.0).then_some(ch[0]),
                _ => None,
            };
            if let Some(x) = keep {
                if same_type(eg, id, x) {
                    let mut rhs = Rhs::new();
                    rhs.class(x);
                    out.push(rhs);
                }
            }
        }
    }
}

/// A one-element float constant operand of a binary op: `(other operand, value, constant class)`.
fn scalar_operand(eg: &EG, ch: &[Id], either_side: bool) -> Vec<(Id, f64, Id)> {
    let one = |c: Id| {
        constant(eg, c)
            .filter(|t| t.len() == 1)
            .and_then(|_| scalar(eg, c))
    };
    let mut v = Vec::new();
    if let Some(s) = one(ch[1]) {
        v.push((ch[0], s, ch[1]));
    }
    if either_side {
        if let Some(s) = one(ch[0]) {
            v.push((ch[1], s, ch[0]));
        }
    }
    v
}

/// `(x · a) · b` → `x · (a·b)`, `(x + a) + b` → `x + (a+b)` and
/// `(x / a) / b` → `x / (a·b)` for one-element constants `a`, `b`, when `b`
/// does not change the shape (the rounding of one product or sum of two
/// constants differs from two roundings by at most one unit in the last place).
pub(crate) struct ScalarChain;

impl Rule for ScalarChain {
    fn name(&self) -> &'static str {
        "scalar-chain"
    }
    fn search(&self, eg: &EG, id: Id, out: &mut Vec<Rhs>) {
        for (op, ch) in ops(eg, id) {
            let commutes = match op {
                Op::Mul | Op::Add => true,
                Op::Div => false,
                _ => continue,
            };
            for (inner_id, b, _) in scalar_operand(eg, ch, commutes) {
                if !same_type(eg, id, inner_id) {
                    continue;
                }
                for (iop, ich) in ops(eg, inner_id) {
                    if iop != op {
                        continue;
                    }
                    for (x, a, a_class) in scalar_operand(eg, ich, commutes) {
                        let Some(t) = constant(eg, a_class) else {
                            continue;
                        };
                        let v = match op {
                            Op::Add => a + b,
                            _ => a * b,
                        };
                        let mut rhs = Rhs::new();
                        let xr = rhs.class(x);
                        let Some(c) = scalar_const(&mut rhs, eg, t.dtype(), t.dims(), v) else {
                            continue;
                        };
                        rhs.op(op.clone(), &[xr, c]);
                        out.push(rhs);
                    }
                }
            }
        }
    }
}

/// `x / c` → `x · (1/c)` when `1/c` is exact (c a power of two), so the
/// result is bit for bit the same.
pub(crate) struct DivToMul;

impl Rule for DivToMul {
    fn name(&self) -> &'static str {
        "div-to-mul"
    }
    fn search(&self, eg: &EG, id: Id, out: &mut Vec<Rhs>) {
        for (op, ch) in ops(eg, id) {
            if !matches!(op, Op::Div) {
                continue;
            }
            for (x, c, c_class) in scalar_operand(eg, ch, false) {
                let exact = c != 0.0 && c.is_finite() && {
                    let (m, _) = frexp(c.abs());
                    m == 0.5
                };
                let Some(t) = constant(eg, c_class) else {
                    continue;
                };
                if !exact {
                    continue;
                }
                let mut rhs = Rhs::new();
                let xr = rhs.class(x);
                let Some(k) = scalar_const(&mut rhs, eg, t.dtype(), t.dims(), 1.0 / c) else {
                    continue;
                };
                rhs.op(Op::Mul, &[xr, k]);
                out.push(rhs);
            }
        }
    }
}

/// Mantissa in [0.5, 1) and exponent of a positive finite number.
fn frexp(x: f64) -> (f64, i32) {
    let e = x.log2().floor() as i32 + 1;
    (x / 2f64.powi(e), e)
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use kiln_ir::Op;

    #[test]
    fn transpose_pair_composes_and_cancels() {
        let mut b = B::new();
        let x = b.input("x", &[2, 3, 4]);
        let t1 = b.op(
            Op::Transpose {
                perm: Some(vec![1, 0, 2]),
            },
            &[x],
        );
        let t2 = b.op(
            Op::Transpose {
                perm: Some(vec![1, 0, 2]),
            },
            &[t1],
        );
        let y = b.op(Op::Relu, &[t2]);
        let t3 = b.op(
            Op::Transpose {
                perm: Some(vec![2, 0, 1]),
            },
            &[y],
        );
        let t4 = b.op(
            Op::Transpose {
                perm: Some(vec![0, 2, 1]),
            },
            &[t3],
        );
        let g = b.finish(&[t4]);
        let (f, s) = fuse(&g, &["cleanup"]);
        assert!(s.fired["transpose-pair"] >= 2);
        assert_eq!(op_names(&f), ["Relu", "Transpose"]);
        assert_same_outputs(&g, &f, 0.0);
    }

    #[test]
    fn transpose_pair_needs_a_transpose_operand() {
        let mut b = B::new();
        let x = b.input("x", &[2, 3]);
        let r = b.op(Op::Relu, &[x]);
        let t = b.op(Op::Transpose { perm: None }, &[r]);
        let g = b.finish(&[t]);
        let (f, s) = fuse(&g, &["cleanup"]);
        assert_eq!(s.fired["transpose-pair"], 0);
        assert_eq!(op_names(&f), ["Relu", "Transpose"]);
    }

    #[test]
    fn reshape_pair_and_noop() {
        let mut b = B::new();
        let x = b.input("x", &[2, 6]);
        let s1 = b.ints(&[3, 4]);
        let s2 = b.ints(&[12]);
        let s3 = b.ints(&[2, 6]);
        let r1 = b.op(Op::Reshape { allowzero: false }, &[x, s1]);
        let r2 = b.op(Op::Reshape { allowzero: false }, &[r1, s2]);
        let r3 = b.op(Op::Reshape { allowzero: false }, &[r2, s3]);
        let y = b.op(Op::Exp, &[r3]);
        let g = b.finish(&[y]);
        let (f, s) = fuse(&g, &["cleanup"]);
        assert!(s.fired["reshape-pair"] > 0 && s.fired["reshape-noop"] > 0);
        assert_eq!(op_names(&f), ["Exp"]);
        assert_same_outputs(&g, &f, 0.0);
    }

    #[test]
    fn reshape_pair_keeps_copying_targets() {
        // A 0 in the outer target copies a dimension of its *input*; skipping
        // the inner reshape would copy a different one.
        let mut b = B::new();
        let x = b.input("x", &[2, 6]);
        let s1 = b.ints(&[3, 4]);
        let s2 = b.ints(&[0, 2, 2]);
        let r1 = b.op(Op::Reshape { allowzero: false }, &[x, s1]);
        let r2 = b.op(Op::Reshape { allowzero: false }, &[r1, s2]);
        let y = b.op(Op::Exp, &[r2]);
        let g = b.finish(&[y]);
        let (_, s) = fuse(&g, &["cleanup"]);
        assert_eq!(s.fired["reshape-pair"], 0);
    }

    #[test]
    fn identity_arith_removes_neutral_constants() {
        let mut b = B::new();
        let x = b.input("x", &[4, 5]);
        let zero = b.scalar(0.0);
        let one = b.scalar(1.0);
        let a = b.op(Op::Add, &[zero, x]);
        let m = b.op(Op::Mul, &[a, one]);
        let d = b.op(Op::Div, &[m, one]);
        let y = b.op(Op::Tanh, &[d]);
        let g = b.finish(&[y]);
        let (f, s) = fuse(&g, &["cleanup"]);
        assert!(s.fired["identity-arith"] >= 3);
        assert_eq!(op_names(&f), ["Tanh"]);
        assert_same_outputs(&g, &f, 0.0);
    }

    #[test]
    fn identity_arith_keeps_broadcasting_constants() {
        // x[4] + zeros[3,4] has shape [3,4]: the Add is not an identity.
        let mut b = B::new();
        let x = b.input("x", &[4]);
        let zeros = b.konst(kiln_ir::Tensor::from_vec(vec![3, 4], vec![0f32; 12]).unwrap());
        let a = b.op(Op::Add, &[x, zeros]);
        let g = b.finish(&[a]);
        let (f, s) = fuse(&g, &["cleanup"]);
        assert_eq!(s.fired["identity-arith"], 0);
        assert_eq!(op_names(&f), ["Add"]);
    }

    #[test]
    fn scalar_chain_and_div_to_mul() {
        let mut b = B::new();
        let x = b.input("x", &[3, 4]);
        let c2 = b.scalar(2.0);
        let c3 = b.scalar(3.0);
        let c8 = b.scalar(8.0);
        let m1 = b.op(Op::Mul, &[x, c2]);
        let m2 = b.op(Op::Mul, &[c3, m1]);
        let d = b.op(Op::Div, &[m2, c8]);
        let g = b.finish(&[d]);
        let (f, s) = fuse(&g, &["cleanup"]);
        assert!(s.fired["scalar-chain"] > 0 && s.fired["div-to-mul"] > 0);
        assert_eq!(op_names(&f), ["Mul"]);
        assert_same_outputs(&g, &f, 1e-6);
    }

    #[test]
    fn div_by_a_non_power_of_two_stays_a_division() {
        let mut b = B::new();
        let x = b.input("x", &[3]);
        let c = b.scalar(3.0);
        let d = b.op(Op::Div, &[x, c]);
        let g = b.finish(&[d]);
        let (f, s) = fuse(&g, &["cleanup"]);
        assert_eq!(s.fired["div-to-mul"], 0);
        assert_eq!(op_names(&f), ["Div"]);
    }

    #[test]
    fn constant_subgraphs_fold() {
        let mut b = B::new();
        let x = b.input("x", &[3]);
        let c = b.konst(kiln_ir::Tensor::from_vec(vec![3], vec![1f32, 4.0, 9.0]).unwrap());
        let s = b.op(Op::Sqrt, &[c]);
        let n = b.op(Op::Neg, &[s]);
        let y = b.op(Op::Add, &[x, n]);
        let g = b.finish(&[y]);
        let (f, st) = fuse(&g, &["cleanup"]);
        assert!(st.folded >= 2);
        assert_eq!(op_names(&f), ["Add"]);
        assert_same_outputs(&g, &f, 0.0);
    }

    #[test]
    fn transpose_identity_goes_and_others_stay() {
        let mut b = B::new();
        let x = b.input("x", &[2, 3]);
        let same = b.op(
            Op::Transpose {
                perm: Some(vec![0, 1]),
            },
            &[x],
        );
        let y = b.op(Op::Relu, &[same]);
        let swap = b.op(
            Op::Transpose {
                perm: Some(vec![1, 0]),
            },
            &[y],
        );
        let g = b.finish(&[swap]);
        let (f, s) = fuse(&g, &["cleanup"]);
        assert_eq!(s.fired["transpose-identity"], 1);
        assert_eq!(op_names(&f), ["Relu", "Transpose"]);
        assert_same_outputs(&g, &f, 0.0);
    }

    #[test]
    fn a_reshape_that_changes_the_shape_stays() {
        let mut b = B::new();
        let x = b.input("x", &[2, 6]);
        let s = b.ints(&[3, 4]);
        let r = b.op(Op::Reshape { allowzero: false }, &[x, s]);
        let g = b.finish(&[r]);
        let (f, st) = fuse(&g, &["cleanup"]);
        assert_eq!(st.fired["reshape-noop"], 0);
        assert_eq!(op_names(&f), ["Reshape"]);
    }

    #[test]
    fn scalar_chain_needs_two_constants() {
        let mut b = B::new();
        let x = b.input("x", &[3, 4]);
        let y = b.input("y", &[3, 4]);
        let c = b.scalar(2.0);
        let m1 = b.op(Op::Mul, &[x, c]);
        let m2 = b.op(Op::Mul, &[m1, y]);
        let g = b.finish(&[m2]);
        let (f, s) = fuse(&g, &["cleanup"]);
        assert_eq!(s.fired["scalar-chain"], 0);
        assert_eq!(op_names(&f), ["Mul", "Mul"]);
    }
}
