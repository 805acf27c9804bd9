//! MatMul, Gemm and Einsum.
mod common;
use common::*;
use kiln_ir::{Float, Op};

fn gemm(trans_a: bool, trans_b: bool) -> Op {
    Op::Gemm {
        alpha: Float(1.0),
        beta: Float(1.0),
        trans_a,
        trans_b,
    }
}

fn einsum(eq: &str) -> Op {
    Op::Einsum {
        equation: eq.into(),
    }
}

#[test]
fn matmul() {
    assert_eq!(
        infer_t(&Op::MatMul, &["f32[2,3]", "f32[3,4]"]).unwrap(),
        "f32[2,4]"
    );
    assert_eq!(
        infer_t(&Op::MatMul, &["f32[B,S,768]", "f32[768,3072]"]).unwrap(),
        "f32[B,S,3072]"
    );
    // Batch broadcasting.
    assert_eq!(
        infer_t(&Op::MatMul, &["f32[B,1,S,64]", "f32[12,64,T]"]).unwrap(),
        "f32[B,12,S,T]"
    );
    // 1-d operands: the promoted axis is removed.
    assert_eq!(
        infer_t(&Op::MatMul, &["f32[3]", "f32[N,3,4]"]).unwrap(),
        "f32[N,4]"
    );
    assert_eq!(
        infer_t(&Op::MatMul, &["f32[2,3]", "f32[3]"]).unwrap(),
        "f32[2]"
    );
    assert_eq!(
        infer_t(&Op::MatMul, &["f32[3]", "f32[3]"]).unwrap(),
        "f32[]"
    );
    assert_eq!(
        err(infer_t(&Op::MatMul, &["f32[2,3]", "f32[4,5]"])),
        "MatMul: inner dimensions differ: [2,3] x [4,5] (3 vs 4)"
    );
    assert_eq!(
        err(infer_t(&Op::MatMul, &["f32[2,3]", "f16[3,5]"])),
        "MatMul: operands 0 and 1 must have the same dtype, got f32 and f16"
    );
    assert_eq!(
        err(infer_t(&Op::MatMul, &["f32[2,2,3]", "f32[3,3,5]"])),
        "MatMul: batch dimensions of [2,2,3] and [3,3,5] do not broadcast: cannot broadcast [2] with [3]"
    );
}

#[test]
fn gemm_shapes() {
    assert_eq!(
        infer_t(&gemm(false, false), &["f32[N,3]", "f32[3,4]", "f32[4]"]).unwrap(),
        "f32[N,4]"
    );
    assert_eq!(
        infer_t(&gemm(true, true), &["f32[3,N]", "f32[4,3]"]).unwrap(),
        "f32[N,4]"
    );
    assert_eq!(
        err(infer_t(&gemm(false, false), &["f32[2,3]"])),
        "Gemm: expects 2 or 3 operands, got 1"
    );
    assert_eq!(
        err(infer_t(
            &gemm(false, false),
            &["f32[2,3]", "f32[3,4]", "f32[3]"]
        )),
        "Gemm: C: [3] does not broadcast to [2,4]"
    );
    assert_eq!(
        err(infer_t(&gemm(false, true), &["f32[2,3]", "f32[3,4]"])),
        "Gemm: inner dimensions differ: A [2,3] (trans_a=false) x B [3,4] (trans_b=true)"
    );
    assert_eq!(
        err(infer_t(&gemm(false, false), &["f32[2,3,1]", "f32[3,4]"])),
        "Gemm: operand 0 must be 2-d, got shape [2,3,1]"
    );
}

#[test]
fn einsum_shapes() {
    assert_eq!(
        infer_t(&einsum("bij,bjk->bik"), &["f32[B,2,3]", "f32[B,3,4]"]).unwrap(),
        "f32[B,2,4]"
    );
    // Implicit output: letters used once, in alphabetical order.
    assert_eq!(
        infer_t(&einsum("ij,jk"), &["f32[2,3]", "f32[3,4]"]).unwrap(),
        "f32[2,4]"
    );
    assert_eq!(infer_t(&einsum("ba"), &["f32[2,3]"]).unwrap(), "f32[3,2]");
    assert_eq!(infer_t(&einsum("ii"), &["f32[3,3]"]).unwrap(), "f32[]");
    // Trace and explicit diagonal.
    assert_eq!(infer_t(&einsum("ii->i"), &["f32[3,3]"]).unwrap(), "f32[3]");
    // Ellipsis broadcasting, explicit and implicit.
    assert_eq!(
        infer_t(
            &einsum("...ij,...jk->...ik"),
            &["f32[B,1,2,3]", "f32[5,3,4]"]
        )
        .unwrap(),
        "f32[B,5,2,4]"
    );
    assert_eq!(
        infer_t(&einsum("...ij,jk"), &["f32[N,2,3]", "f32[3,4]"]).unwrap(),
        "f32[N,2,4]"
    );
    assert_eq!(
        infer_t(
            &einsum("bhqd, bhkd -> bhqk"),
            &["f32[B,H,S,64]", "f32[B,H,T,64]"]
        )
        .unwrap(),
        "f32[B,H,S,T]"
    );
    assert_eq!(
        err(infer_t(&einsum("ij,jk->ik"), &["f32[2,3]", "f32[4,5]"])),
        "Einsum: letter `j` has sizes 3 and 4"
    );
    assert_eq!(
        err(infer_t(&einsum("ij->k"), &["f32[2,3]"])),
        "Einsum: output letter `k` does not appear in any input"
    );
    assert_eq!(
        err(infer_t(&einsum("ij,jk->ik"), &["f32[2,3]"])),
        "Einsum: equation `ij,jk->ik` has 2 input terms but there are 1 operands"
    );
    assert_eq!(
        err(infer_t(&einsum("ijk->ik"), &["f32[2,3]"])),
        "Einsum: operand of shape [2,3] has rank 2 but its term has 3 letters"
    );
}
