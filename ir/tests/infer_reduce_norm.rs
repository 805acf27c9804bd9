//! Reductions, normalisations, softmax, TopK.
mod common;
use common::*;
use kiln_ir::{Float, Op, ReduceKind};

fn reduce(axes: Option<Vec<i64>>, keepdims: bool) -> Op {
    Op::Reduce {
        kind: ReduceKind::Mean,
        axes,
        keepdims,
        noop_with_empty_axes: false,
    }
}

#[test]
fn reductions() {
    assert_eq!(
        infer_t(&reduce(Some(vec![-1]), true), &["f32[N,S,768]"]).unwrap(),
        "f32[N,S,1]"
    );
    assert_eq!(
        infer_t(&reduce(Some(vec![1, 2]), false), &["f32[N,S,768]"]).unwrap(),
        "f32[N]"
    );
    // No axes: everything.
    assert_eq!(
        infer_t(&reduce(None, false), &["f32[N,S,768]"]).unwrap(),
        "f32[]"
    );
    assert_eq!(
        infer_t(&reduce(None, true), &["f32[N,S,768]"]).unwrap(),
        "f32[1,1,1]"
    );
    // Axes from a constant operand, and from a non-constant one.
    assert_eq!(
        infer(&reduce(None, false), vec![a("f32[N,S,768]"), k(ints(&[0]))]).unwrap(),
        "f32[S,768]"
    );
    assert_eq!(
        infer_t(&reduce(None, false), &["f32[N,S,768]", "i64[2]"]).unwrap(),
        "f32[?]"
    );
    assert_eq!(
        infer_t(&reduce(None, true), &["f32[N,S,768]", "i64[2]"]).unwrap(),
        "f32[?,?,?]"
    );
    let noop = Op::Reduce {
        kind: ReduceKind::Sum,
        axes: None,
        keepdims: true,
        noop_with_empty_axes: true,
    };
    assert_eq!(infer_t(&noop, &["f32[N,3]"]).unwrap(), "f32[N,3]");
    assert_eq!(
        err(infer_t(&reduce(Some(vec![3]), true), &["f32[N,S,768]"])),
        "Reduce: axis 3 is out of range for rank 3 (valid: -3 to 2)"
    );
    assert_eq!(
        err(infer_t(&reduce(Some(vec![1, -2]), true), &["f32[N,S,768]"])),
        "Reduce: axis -2 is repeated in [1, -2]"
    );
    let am = Op::ArgReduce {
        max: true,
        axis: -1,
        keepdims: false,
        select_last_index: false,
    };
    assert_eq!(infer_t(&am, &["f16[N,10]"]).unwrap(), "i64[N]");
    let cs = Op::CumSum {
        exclusive: false,
        reverse: false,
    };
    assert_eq!(
        infer(&cs, vec![a("f32[N,4]"), k(kiln_ir::Tensor::scalar(1i64))]).unwrap(),
        "f32[N,4]"
    );
}

#[test]
fn top_k() {
    let op = Op::TopK {
        axis: -1,
        largest: true,
        sorted: true,
    };
    assert_eq!(
        infer(&op, vec![a("f32[N,100]"), k(ints(&[5]))]).unwrap(),
        "f32[N,5] ; i64[N,5]"
    );
    assert_eq!(
        infer_t(&op, &["f32[N,100]", "i64[1]"]).unwrap(),
        "f32[N,?] ; i64[N,?]"
    );
    assert_eq!(
        err(infer(&op, vec![a("f32[N,4]"), k(ints(&[5]))])),
        "TopK: K = 5 exceeds the axis size 4"
    );
}

#[test]
fn norms_and_softmax() {
    let eps = Float(1e-5);
    let ln = Op::LayerNorm {
        axis: -1,
        epsilon: eps,
    };
    assert_eq!(
        infer_t(&ln, &["f16[N,S,768]", "f16[768]", "f16[768]"]).unwrap(),
        "f16[N,S,768]"
    );
    // Mean and InvStdDev: X[..axis] + ones, f32 (stash_type float).
    assert_eq!(
        infer_n(&ln, vec![a("f16[N,S,768]"), a("f16[768]")], 3).unwrap(),
        "f16[N,S,768] ; f32[N,S,1] ; f32[N,S,1]"
    );
    assert_eq!(
        err(infer_t(&ln, &["f32[N,S,768]", "f32[512]"])),
        "LayerNorm: operand 1: [512] does not broadcast to [768] (the normalised dims of [N,S,768])"
    );
    let bn = Op::BatchNorm { epsilon: eps };
    assert_eq!(
        infer_t(
            &bn,
            &["f32[N,64,H,W]", "f32[64]", "f32[64]", "f32[64]", "f32[64]"]
        )
        .unwrap(),
        "f32[N,64,H,W]"
    );
    assert_eq!(
        err(infer_t(
            &bn,
            &["f32[N,64,H,W]", "f32[32]", "f32[64]", "f32[64]", "f32[64]"]
        )),
        "BatchNorm: scale must have shape [64], got [32]"
    );
    let gn = Op::GroupNorm {
        num_groups: 8,
        epsilon: eps,
    };
    assert_eq!(
        infer_t(&gn, &["f32[N,64,H,W]", "f32[64]", "f32[64]"]).unwrap(),
        "f32[N,64,H,W]"
    );
    assert_eq!(
        err(infer_t(
            &Op::GroupNorm {
                num_groups: 5,
                epsilon: eps
            },
            &["f32[N,64,H,W]", "f32[64]", "f32[64]"]
        )),
        "GroupNorm: 64 channels do not divide into 5 groups"
    );
    assert_eq!(
        infer_t(
            &Op::RmsNorm {
                axis: -1,
                epsilon: eps
            },
            &["f32[N,S,D]", "f32[D]"]
        )
        .unwrap(),
        "f32[N,S,D]"
    );
    assert_eq!(
        infer_t(&Op::Softmax { axis: -1 }, &["f32[N,H,S,S]"]).unwrap(),
        "f32[N,H,S,S]"
    );
    assert_eq!(
        err(infer_t(&Op::Softmax { axis: 4 }, &["f32[N,H,S,S]"])),
        "Softmax: axis 4 is out of range for rank 4 (valid: -4 to 3)"
    );
    assert_eq!(
        err(infer_t(&Op::Softmax { axis: -1 }, &["i32[4]"])),
        "Softmax: operand 0 must have a floating-point dtype, got i32"
    );
}
