//! Attention-family ops: `Attention` (scaled dot-product attention with
//! optional KV cache) and `RotaryEmbedding`.

use super::{unify, vt, Ctx, R};
use crate::{DType, Dim, ValueType};

/// `a + b` for sequence lengths: fixed when both are, `a` when `b` is 0.
fn dim_add(a: &Dim, b: &Dim) -> Dim {
    match (a, b) {
        (Dim::Fixed(x), Dim::Fixed(y)) => Dim::Fixed(x.saturating_add(*y)),
        (d, Dim::Fixed(0)) | (Dim::Fixed(0), d) => d.clone(),
        _ => Dim::Unknown,
    }
}

/// `hidden / heads` for a per-head size; an error when a fixed size does not divide.
fn per_head(cx: &Ctx, hidden: &Dim, heads: u64, what: &str) -> R<Dim> {
    match hidden {
        Dim::Fixed(n) if n % heads != 0 => Err(cx.err(format!(
            "{what} hidden size {n} is not a multiple of {heads} heads"
        ))),
        Dim::Fixed(n) => Ok(Dim::Fixed(n / heads)),
        _ => Ok(Dim::Unknown),
    }
}

/// Unifies two dimensions that must agree, naming them on a mismatch.
fn same(cx: &Ctx, a: &Dim, b: &Dim, what: &str) -> R<Dim> {
    unify(a, b).ok_or_else(|| cx.err(format!("{what} differ: {a} vs {b}")))
}

/// A head-count attribute of 3-d inputs as a positive number.
fn heads_attr(cx: &Ctx, v: i64, name: &str) -> R<u64> {
    if v <= 0 {
        return Err(cx.err(format!("{name} must be positive for 3-d inputs, got {v}")));
    }
    Ok(v as u64)
}

/// One of Q, K, V seen as `[batch, heads, seq, head_size]`.
struct Heads {
    batch: Dim,
    heads: Dim,
    seq: Dim,
    size: Dim,
}

/// Splits operand `i` (3-d with `heads` heads, or 4-d) into its parts.
fn heads_of(cx: &Ctx, i: usize, heads: i64, rank: usize, name: &str, attr: &str) -> R<Heads> {
    let t = cx.float_operand(i)?;
    let d = &t.shape.0;
    if d.len() != rank {
        return Err(cx.err(format!(
            "{name} must have the rank of Q ({rank}), got shape {}",
            t.shape
        )));
    }
    if rank == 3 {
        let h = heads_attr(cx, heads, attr)?;
        return Ok(Heads {
            batch: d[0].clone(),
            heads: Dim::Fixed(h),
            seq: d[1].clone(),
            size: per_head(cx, &d[2], h, name)?,
        });
    }
    // Opsets 23 and 24 tolerate the head counts on 4-d inputs; they must agree.
    if heads > 0 && unify(&d[1], &Dim::Fixed(heads as u64)).is_none() {
        return Err(cx.err(format!(
            "{attr} = {heads} disagrees with {name} of shape {}",
            t.shape
        )));
    }
    Ok(Heads {
        batch: d[0].clone(),
        heads: d[1].clone(),
        seq: d[2].clone(),
        size: d[3].clone(),
    })
}

/// Attention(Q, K, V, mask?, past_key?, past_value?, nonpad_kv_seqlen?) →
/// Y, present_key, present_value, qk_matmul_output.
pub(super) fn attention(
    cx: &Ctx,
    q_num_heads: i64,
    kv_num_heads: i64,
    qk_matmul_output_mode: i64,
    softmax_precision: Option<DType>,
) -> R<Vec<ValueType>> {
    cx.arity(3, 7)?;
    let qt = cx.float_operand(0)?;
    let rank = qt.shape.rank();
    if rank != 3 && rank != 4 {
        return Err(cx.err(format!(
            "Q must be 3-d [batch, seq, hidden] or 4-d [batch, heads, seq, head_size], got shape {}",
            qt.shape
        )));
    }
    let q = heads_of(cx, 0, q_num_heads, rank, "Q", "q_num_heads")?;
    let k = heads_of(cx, 1, kv_num_heads, rank, "K", "kv_num_heads")?;
    let v = heads_of(cx, 2, kv_num_heads, rank, "V", "kv_num_heads")?;
    let batch = same(cx, &q.batch, &k.batch, "batch sizes of Q and K")?;
    let batch = same(cx, &batch, &v.batch, "batch sizes of Q and V")?;
    let kv_heads = same(cx, &k.heads, &v.heads, "head counts of K and V")?;
    if let (Dim::Fixed(hq), Dim::Fixed(hkv)) = (&q.heads, &kv_heads) {
        if *hkv == 0 || hq % hkv != 0 {
            return Err(cx.err(format!(
                "{hq} query heads are not a multiple of {hkv} key/value heads"
            )));
        }
    }
    let head = same(cx, &q.size, &k.size, "head sizes of Q and K")?;
    let kv_seq = same(cx, &k.seq, &v.seq, "sequence lengths of K and V")?;
    let (kt, vt_) = (cx.input(1)?, cx.input(2)?);

    // past_key [B, Hkv, P, D] and past_value [B, Hkv, P, Dv] come together.
    let past_len = match (cx.opt(4), cx.opt(5)) {
        (None, None) => Dim::Fixed(0),
        (Some(pk), Some(pv)) => {
            for (i, t, size, name) in [(4, pk, &head, "past_key"), (5, pv, &v.size, "past_value")] {
                if t.shape.rank() != 4 {
                    return Err(cx.err(format!(
                        "{name} must be 4-d [batch, kv_heads, past_seq, head_size], got shape {}",
                        t.shape
                    )));
                }
                let want = if i == 4 { kt.dtype } else { vt_.dtype };
                if t.dtype != want {
                    return Err(cx.err(format!("{name} must have dtype {want}, got {}", t.dtype)));
                }
                let d = &t.shape.0;
                same(cx, &d[0], &batch, &format!("batch sizes of {name} and Q"))?;
                same(
                    cx,
                    &d[1],
                    &kv_heads,
                    &format!("head counts of {name} and K"),
                )?;
                same(cx, &d[3], size, &format!("head sizes of {name} and K/V"))?;
            }
            same(
                cx,
                &pk.shape.0[2],
                &pv.shape.0[2],
                "past sequence lengths of past_key and past_value",
            )?
        }
        _ => return Err(cx.err("past_key and past_value must be given together")),
    };
    let total = dim_add(&kv_seq, &past_len);

    if let Some(m) = cx.opt(3) {
        let r = m.shape.rank();
        if r == 0 || r > 4 {
            return Err(cx.err(format!(
                "attn_mask must have rank 1 to 4, got shape {}",
                m.shape
            )));
        }
        // Right-aligned against [batch, q_heads, q_seq, total]; the last
        // dimension may be shorter (padded with "masked").
        let target = [batch.clone(), q.heads.clone(), q.seq.clone(), total.clone()];
        for (j, d) in m.shape.0.iter().enumerate() {
            let t = &target[4 - r + j];
            let ok = match (d, t) {
                (Dim::Fixed(a), Dim::Fixed(b)) if j == r - 1 => a <= b,
                (Dim::Fixed(1), _) => true,
                (Dim::Fixed(a), Dim::Fixed(b)) => a == b,
                _ => true,
            };
            if !ok {
                return Err(cx.err(format!(
                    "attn_mask of shape {} does not broadcast to [{batch},{},{},{total}]",
                    m.shape, q.heads, q.seq
                )));
            }
        }
    }
    if let Some(n) = cx.opt(6) {
        if n.dtype != DType::I64 || n.shape.rank() != 1 {
            return Err(cx.err(format!("nonpad_kv_seqlen must be i64[batch], got {n}")));
        }
        same(
            cx,
            &n.shape.0[0],
            &batch,
            "batch sizes of nonpad_kv_seqlen and Q",
        )?;
        if cx.opt(4).is_some() {
            return Err(cx.err("nonpad_kv_seqlen cannot be combined with past_key/past_value"));
        }
    }
    if !(0..=3).contains(&qk_matmul_output_mode) {
        return Err(cx.err(format!(
            "qk_matmul_output_mode must be 0 to 3, got {qk_matmul_output_mode}"
        )));
    }
    if let Some(p) = softmax_precision {
        if !p.is_float() {
            return Err(cx.err(format!(
                "softmax_precision must be a floating-point type, got {p}"
            )));
        }
    }

    let y = if rank == 3 {
        let hidden = match (&q.heads, &v.size) {
            (Dim::Fixed(h), d) => super::dim_scale(d, *h),
            _ => Dim::Unknown,
        };
        vt(qt.dtype, vec![batch.clone(), q.seq.clone(), hidden])
    } else {
        vt(
            qt.dtype,
            vec![
                batch.clone(),
                q.heads.clone(),
                q.seq.clone(),
                v.size.clone(),
            ],
        )
    };
    Ok(vec![
        y,
        vt(
            kt.dtype,
            vec![batch.clone(), kv_heads.clone(), total.clone(), head],
        ),
        vt(
            vt_.dtype,
            vec![batch.clone(), kv_heads, total.clone(), v.size],
        ),
        vt(qt.dtype, vec![batch, q.heads, q.seq, total]),
    ])
}

/// RotaryEmbedding(X, cos_cache, sin_cache, position_ids?) → X's type.
pub(super) fn rotary_embedding(cx: &Ctx, num_heads: i64, rotary_dim: i64) -> R<ValueType> {
    cx.arity(3, 4)?;
    let x = cx.float_operand(0)?;
    let d = &x.shape.0;
    let (batch, seq, head) = match d.len() {
        4 => (&d[0], &d[2], d[3].clone()),
        3 => {
            let h = heads_attr(cx, num_heads, "num_heads")?;
            (&d[0], &d[1], per_head(cx, &d[2], h, "X")?)
        }
        _ => {
            return Err(cx.err(format!(
                "X must be 4-d [batch, heads, seq, head_size] or 3-d [batch, seq, hidden], got shape {}",
                x.shape
            )))
        }
    };
    if rotary_dim < 0 || rotary_dim % 2 != 0 {
        return Err(cx.err(format!(
            "rotary_embedding_dim must be 0 or a positive even number, got {rotary_dim}"
        )));
    }
    let rot = if rotary_dim == 0 {
        head.clone()
    } else {
        if let Dim::Fixed(h) = head {
            if rotary_dim as u64 > h {
                return Err(cx.err(format!(
                    "rotary_embedding_dim {rotary_dim} exceeds the head size {h}"
                )));
            }
        }
        Dim::Fixed(rotary_dim as u64)
    };
    if let Dim::Fixed(r) = rot {
        if r % 2 != 0 {
            return Err(cx.err(format!("the rotated size {r} must be even")));
        }
    }
    let half = match rot {
        Dim::Fixed(r) => Dim::Fixed(r / 2),
        _ => Dim::Unknown,
    };
    let with_ids = cx.opt(3).is_some();
    if with_ids {
        let p = cx.int_operand(3)?;
        if p.shape.rank() != 2 {
            return Err(cx.err(format!(
                "position_ids must be 2-d [batch, seq], got shape {}",
                p.shape
            )));
        }
        same(
            cx,
            &p.shape.0[0],
            batch,
            "batch sizes of position_ids and X",
        )?;
        same(
            cx,
            &p.shape.0[1],
            seq,
            "sequence lengths of position_ids and X",
        )?;
    }
    for (i, name) in [(1, "cos_cache"), (2, "sin_cache")] {
        let c = cx.input(i)?;
        if c.dtype != x.dtype {
            return Err(cx.err(format!(
                "{name} must have X's dtype {}, got {}",
                x.dtype, c.dtype
            )));
        }
        let cd = &c.shape.0;
        let ok = if with_ids {
            cd.len() == 2
        } else {
            cd.len() == 3 && unify(&cd[0], batch).is_some() && unify(&cd[1], seq).is_some()
        };
        let last_ok = cd.last().is_some_and(|l| unify(l, &half).is_some());
        if !ok || !last_ok {
            let want = if with_ids {
                format!("[max_position, {half}]")
            } else {
                format!("[{batch}, {seq}, {half}]")
            };
            return Err(cx.err(format!("{name} must have shape {want}, got {}", c.shape)));
        }
    }
    Ok(x.clone())
}

#[cfg(test)]
mod tests {
    use crate::infer::infer_node_with_outputs;
    use crate::{DType, Dim, Float, Op, Shape, ValueType};

    fn ty(dt: DType, dims: &[&str]) -> ValueType {
        let dims = dims
            .iter()
            .map(|d| match d.parse() {
                Ok(n) => Dim::Fixed(n),
                Err(_) => Dim::Sym(d.to_string()),
            })
            .collect();
        ValueType::new(dt, Shape(dims))
    }

    fn attn(q: i64, kv: i64) -> Op {
        Op::Attention {
            is_causal: true,
            q_num_heads: q,
            kv_num_heads: kv,
            scale: None,
            softcap: Float(0.0),
            qk_matmul_output_mode: 0,
            softmax_precision: None,
        }
    }

    fn show(v: &[ValueType]) -> Vec<String> {
        v.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn attention_3d_gqa_with_cache() {
        let q = ty(DType::F32, &["B", "S", "576"]);
        let k = ty(DType::F32, &["B", "S", "192"]);
        let pk = ty(DType::F32, &["B", "3", "7", "64"]);
        let ins = [Some(&q), Some(&k), Some(&k), None, Some(&pk), Some(&pk)];
        let out = infer_node_with_outputs(&attn(9, 3), &ins, &[], 4).unwrap();
        assert_eq!(
            show(&out),
            [
                "f32[B,S,576]",
                "f32[B,3,?,64]",
                "f32[B,3,?,64]",
                "f32[B,9,S,?]"
            ]
        );
    }

    #[test]
    fn attention_4d_and_errors() {
        let q = ty(DType::F16, &["2", "9", "4", "8"]);
        let k = ty(DType::F16, &["2", "3", "6", "8"]);
        let v = ty(DType::F16, &["2", "3", "6", "10"]);
        let m = ty(DType::Bool, &["4", "6"]);
        let ins = [Some(&q), Some(&k), Some(&v), Some(&m)];
        let out = infer_node_with_outputs(&attn(0, 0), &ins, &[], 1).unwrap();
        assert_eq!(show(&out), ["f16[2,9,4,10]"]);
        // 9 query heads over 2 kv heads.
        let k2 = ty(DType::F16, &["2", "2", "6", "8"]);
        let e = infer_node_with_outputs(&attn(0, 0), &[Some(&q), Some(&k2), Some(&k2)], &[], 1)
            .unwrap_err();
        assert!(e.message.contains("not a multiple"), "{e}");
        // A mask longer than the keys.
        let long = ty(DType::Bool, &["4", "7"]);
        let e = infer_node_with_outputs(
            &attn(0, 0),
            &[Some(&q), Some(&k), Some(&v), Some(&long)],
            &[],
            1,
        )
        .unwrap_err();
        assert!(e.message.contains("attn_mask"), "{e}");
        // 3-d inputs need the head counts.
        let q3 = ty(DType::F32, &["2", "4", "24"]);
        let e = infer_node_with_outputs(&attn(0, 0), &[Some(&q3), Some(&q3), Some(&q3)], &[], 1)
            .unwrap_err();
        assert!(e.message.contains("q_num_heads must be positive"), "{e}");
    }

    #[test]
    fn rotary() {
        let op = Op::RotaryEmbedding {
            interleaved: false,
            num_heads: 4,
            rotary_embedding_dim: 4,
        };
        let x = ty(DType::F32, &["B", "S", "32"]);
        let c = ty(DType::F32, &["50", "2"]);
        let p = ty(DType::I64, &["B", "S"]);
        let out = infer_node_with_outputs(&op, &[Some(&x), Some(&c), Some(&c), Some(&p)], &[], 1)
            .unwrap();
        assert_eq!(show(&out), ["f32[B,S,32]"]);
        let bad = ty(DType::F32, &["50", "4"]);
        let e = infer_node_with_outputs(&op, &[Some(&x), Some(&bad), Some(&bad), Some(&p)], &[], 1)
            .unwrap_err();
        assert!(e.message.contains("cos_cache must have shape"), "{e}");
    }
}
