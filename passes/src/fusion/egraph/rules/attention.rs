//! Scaled dot-product attention from its primitive form, and the head
//! split/merge around it folded into the op's 3-d layout.

use super::{constant, is_absent, ops, scalar, ty};
use crate::fusion::egraph::analysis::EG;
use crate::fusion::egraph::saturate::{Rhs, Rule};
use egg::Id;
use kiln_ir::{DType, Dim, Float, Op, Shape, ValueType};

/// The rules of this group.
pub(crate) static RULES: &[&dyn Rule] = &[&AttentionPrimitive, &AttentionHeads];

/// `a`, and `a · c` / `c · a` / `a / c` for a one-element constant `c`: `(a, factor)`.
fn scaled(eg: &EG, id: Id) -> Vec<(Id, f64)> {
    let one = |c: Id| {
        constant(eg, c)
            .filter(|t| t.len() == 1)
            .and_then(|_| scalar(eg, c))
    };
    let mut out = vec![(id, 1.0)];
    for (op, ch) in ops(eg, id) {
        match op {
            Op::Mul => {
                if let Some(c) = one(ch[1]) {
                    out.push((ch[0], c));
                }
                if let Some(c) = one(ch[0]) {
                    out.push((ch[1], c));
                }
            }
            Op::Div => {
                if let Some(c) = one(ch[1]).filter(|c| *c != 0.0) {
                    out.push((ch[0], 1.0 / c));
                }
            }
            _ => {}
        }
    }
    out
}

fn attention_op(scale: f64, q_heads: i64, kv_heads: i64) -> Op {
    Op::Attention {
        is_causal: false,
        q_num_heads: q_heads,
        kv_num_heads: kv_heads,
        scale: Some(Float(scale as f32)),
        softcap: Float(0.0),
        qk_matmul_output_mode: 0,
        softmax_precision: None,
    }
}

fn f32_rank(eg: &EG, id: Id, r: usize) -> Option<&ValueType> {
    ty(eg, id).filter(|t| t.dtype == DType::F32 && t.shape.rank() == r)
}

/// `Softmax(scale · (Q·Kᵀ) [+ mask]) · V` on 4-d `[batch, heads, seq, dim]`
/// operands (the scale may sit on Q, on Kᵀ and on the scores, as a product
/// or a division) → `Attention(Q, K, V, mask)` with the product of the scales.
pub(crate) struct AttentionPrimitive;

impl Rule for AttentionPrimitive {
    fn name(&self) -> &'static str {
        "attention"
    }
    fn search(&self, eg: &EG, id: Id, out: &mut Vec<Rhs>) {
        let Some(result) = ty(eg, id).cloned() else {
            return;
        };
        for (op, ch) in ops(eg, id) {
            if !matches!(op, Op::MatMul) {
                continue;
            }
            let (p, v) = (ch[0], ch[1]);
            let Some(vt) = f32_rank(eg, v, 4) else {
                continue;
            };
            for (sop, sch) in ops(eg, p) {
                let Op::Softmax { axis } = sop else { continue };
                if *axis != -1 && *axis != 3 {
                    continue;
                }
                // Scores, an optional additive mask and the scale on the scores.
                let mut scores: Vec<(Id, Option<Id>, f64)> = Vec::new();
                for (s, c) in scaled(eg, sch[0]) {
                    scores.push((s, None, c));
                }
                for (aop, ach) in ops(eg, sch[0]) {
                    if !matches!(aop, Op::Add) {
                        continue;
                    }
                    for (a, m) in [(ach[0], ach[1]), (ach[1], ach[0])] {
                        for (s, c) in scaled(eg, a) {
                            scores.push((s, Some(m), c));
                        }
                    }
                }
                for (s, mask, c0) in scores {
                    for (qop, qch) in ops(eg, s) {
                        if !matches!(qop, Op::MatMul) {
                            continue;
                        }
                        for (q, c1) in scaled(eg, qch[0]) {
                            for (kt, c2) in scaled(eg, qch[1]) {
                                let (Some(qt), Some(ktt)) =
                                    (f32_rank(eg, q, 4), f32_rank(eg, kt, 4))
                                else {
                                    continue;
                                };
                                let k_dims = {
                                    let d = &ktt.shape.0;
                                    vec![d[0].clone(), d[1].clone(), d[3].clone(), d[2].clone()]
                                };
                                let kty = ValueType::new(DType::F32, Shape(k_dims));
                                let mty = mask.and_then(|m| ty(eg, m));
                                if mask.is_some() && mty.is_none() {
                                    continue;
                                }
                                let new = attention_op(c0 * c1 * c2, 0, 0);
                                let inferred = kiln_ir::infer::infer_node(
                                    &new,
                                    &[Some(qt), Some(&kty), Some(vt), mty],
                                    &[None, None, None, None],
                                );
                                if !inferred.is_ok_and(|t| t.first() == Some(&result)) {
                                    continue;
                                }
                                let mut rhs = Rhs::new();
                                let qr = rhs.class(q);
                                let ktr = rhs.class(kt);
                                let kr = rhs.op(
                                    Op::Transpose {
                                        perm: Some(vec![0, 1, 3, 2]),
                                    },
                                    &[ktr],
                                );
                                let vr = rhs.class(v);
                                let mr = match mask {
                                    Some(m) => rhs.class(m),
                                    None => rhs.absent(),
                                };
                                rhs.op(new, &[qr, kr, vr, mr]);
                                out.push(rhs);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// `Transpose(Reshape(x, [B, S, H, D]), [0, 2, 1, 3])`: `(x, H)` with `x` `[B, S, H·D]`.
fn split_heads(eg: &EG, id: Id) -> Vec<(Id, i64)> {
    let mut out = Vec::new();
    for (op, ch) in ops(eg, id) {
        if !matches!(op, Op::Transpose { perm: Some(p) } if p == &[0, 2, 1, 3]) {
            continue;
        }
        for (rop, rch) in ops(eg, ch[0]) {
            if !matches!(rop, Op::Reshape { .. }) {
                continue;
            }
            let (Some(x), Some(r)) = (f32_rank(eg, rch[0], 3), ty(eg, ch[0])) else {
                continue;
            };
            let (xs, rs) = (&x.shape.0, &r.shape.0);
            let fixed = |d: &Dim| d.fixed();
            let heads_ok = rs.len() == 4
                && xs[0] == rs[0]
                && xs[1] == rs[1]
                && matches!((fixed(&rs[2]), fixed(&rs[3]), fixed(&xs[2])), (Some(h), Some(d), Some(hd)) if h * d == hd);
            if heads_ok {
                if let Some(h) = fixed(&rs[2]) {
                    out.push((rch[0], h as i64));
                }
            }
        }
    }
    out
}

/// `Reshape(Transpose(Attention(split(q), split(k), split(v)), [0, 2, 1, 3]), [B, S, H·D])`
/// → `Attention(q, k, v)` on 3-d operands with the head counts given: the
/// kernel reads heads through strides, so the six transposes go.
pub(crate) struct AttentionHeads;

impl Rule for AttentionHeads {
    fn name(&self) -> &'static str {
        "attention-heads"
    }
    fn search(&self, eg: &EG, id: Id, out: &mut Vec<Rhs>) {
        let Some(result) = f32_rank(eg, id, 3).cloned() else {
            return;
        };
        for (op, ch) in ops(eg, id) {
            if !matches!(op, Op::Reshape { .. }) {
                continue;
            }
            for (top, tch) in ops(eg, ch[0]) {
                if !matches!(top, Op::Transpose { perm: Some(p) } if p == &[0, 2, 1, 3]) {
                    continue;
                }
                for (aop, ach) in ops(eg, tch[0]) {
                    let Op::Attention {
                        is_causal,
                        q_num_heads: 0,
                        kv_num_heads: 0,
                        scale,
                        softcap,
                        qk_matmul_output_mode,
                        softmax_precision,
                    } = aop
                    else {
                        continue;
                    };
                    if ach.len() < 3
                        || ach.len() > 4
                        || ach
                            .get(3)
                            .is_some_and(|&m| !is_absent(eg, m) && ty(eg, m).is_none())
                    {
                        continue;
                    }
                    for (q, hq) in split_heads(eg, ach[0]) {
                        for (k, hk) in split_heads(eg, ach[1]) {
                            for (v, hv) in split_heads(eg, ach[2]) {
                                if hk != hv {
                                    continue;
                                }
                                let new = Op::Attention {
                                    is_causal: *is_causal,
                                    q_num_heads: hq,
                                    kv_num_heads: hk,
                                    scale: *scale,
                                    softcap: *softcap,
                                    qk_matmul_output_mode: *qk_matmul_output_mode,
                                    softmax_precision: *softmax_precision,
                                };
                                let mask = ach.get(3).copied().filter(|&m| !is_absent(eg, m));
                                let types = [
                                    ty(eg, q),
                                    ty(eg, k),
                                    ty(eg, v),
                                    mask.and_then(|m| ty(eg, m)),
                                ];
                                let inferred = kiln_ir::infer::infer_node(&new, &types, &[None; 4]);
                                if !inferred.is_ok_and(|t| t.first() == Some(&result)) {
                                    continue;
                                }
                                let mut rhs = Rhs::new();
                                let (qr, kr, vr) = (rhs.class(q), rhs.class(k), rhs.class(v));
                                let mr = match mask {
                                    Some(m) => rhs.class(m),
                                    None => rhs.absent(),
                                };
                                rhs.op(new, &[qr, kr, vr, mr]);
                                out.push(rhs);
                            }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use kiln_ir::Op;

    /// Multi-head self-attention as the ViT export writes it: heads split by
    /// Reshape + Transpose, √scale on both Q and Kᵀ, merged back after.
    fn mha(b: &mut B, x: kiln_ir::ValueId, scale_k: f32, v_perm: [i64; 4]) -> kiln_ir::ValueId {
        let (s, h, d) = (5u64, 2u64, 4u64);
        let split = |b: &mut B, seed: u64, perm: &[i64]| {
            let w = b.weight(&[8, 8], seed);
            let p = b.op(Op::MatMul, &[x, w]);
            let shape = b.ints(&[1, s as i64, h as i64, d as i64]);
            let r = b.op(Op::Reshape { allowzero: false }, &[p, shape]);
            b.op(
                Op::Transpose {
                    perm: Some(perm.to_vec()),
                },
                &[r],
            )
        };
        let q = split(b, 1, &[0, 2, 1, 3]);
        let kt = split(b, 2, &[0, 2, 3, 1]);
        let v = split(b, 3, &v_perm);
        let c = b.scalar(0.5f32.sqrt());
        let qs = b.op(Op::Mul, &[q, c]);
        let ck = b.scalar(scale_k);
        let ks = b.op(Op::Mul, &[kt, ck]);
        let scores = b.op(Op::MatMul, &[qs, ks]);
        let p = b.op(Op::Softmax { axis: -1 }, &[scores]);
        let o = b.op(Op::MatMul, &[p, v]);
        let t = b.op(
            Op::Transpose {
                perm: Some(vec![0, 2, 1, 3]),
            },
            &[o],
        );
        let shape = b.ints(&[1, s as i64, (h * d) as i64]);
        b.op(Op::Reshape { allowzero: false }, &[t, shape])
    }

    #[test]
    fn attention_is_recognised_with_heads_folded() {
        let mut b = B::new();
        let x = b.input("x", &[1, 5, 8]);
        let y = mha(&mut b, x, 0.5f32.sqrt(), [0, 2, 1, 3]);
        let g = b.finish(&[y]);
        let (f, s) = fuse(&g, &["cleanup", "attention"]);
        assert!(s.fired["attention"] > 0 && s.fired["attention-heads"] > 0);
        assert_eq!(op_names(&f), ["MatMul", "MatMul", "MatMul", "Attention"]);
        assert!(matches!(
            f.nodes[3].op,
            Op::Attention {
                q_num_heads: 2,
                kv_num_heads: 2,
                ..
            }
        ));
        assert_same_outputs(&g, &f, 1e-5);
    }

    #[test]
    fn heads_stay_split_while_the_key_layout_is_not_plain() {
        // Kᵀ is Transpose(Transpose(split k)): until the cleanup group
        // composes the two, K is not in the split-heads layout, so only the
        // 4-d attention is found.
        let mut b = B::new();
        let x = b.input("x", &[1, 5, 8]);
        let y = mha(&mut b, x, 0.5f32.sqrt(), [0, 2, 1, 3]);
        let g = b.finish(&[y]);
        let (f, s) = fuse(&g, &["attention"]);
        assert!(s.fired["attention"] > 0);
        assert_eq!(s.fired["attention-heads"], 0);
        assert!(op_names(&f).contains(&"Attention"));
        assert_same_outputs(&g, &f, 1e-5);
    }

    #[test]
    fn a_product_that_is_not_softmax_of_scores_is_not_attention() {
        let mut b = B::new();
        let a = b.input("a", &[1, 2, 5, 4]);
        let k = b.input("k", &[1, 2, 4, 5]);
        let v = b.input("v", &[1, 2, 5, 4]);
        let s = b.op(Op::MatMul, &[a, k]);
        let r = b.op(Op::Relu, &[s]);
        let o = b.op(Op::MatMul, &[r, v]);
        let g = b.finish(&[o]);
        let (_, st) = fuse(&g, &["attention"]);
        assert_eq!(st.fired["attention"], 0);
    }
}
