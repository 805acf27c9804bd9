//! Broadcasting and elementwise ops.
mod common;
use common::*;
use kiln_ir::infer::broadcast_shapes;
use kiln_ir::{DType, Float, Op};

fn bc(a: &str, b: &str) -> Result<String, String> {
    broadcast_shapes(&ty(a).shape, &ty(b).shape)
        .map(|s| s.to_string())
        .map_err(|e| e.to_string())
}

#[test]
fn broadcast_fixed() {
    assert_eq!(bc("f32[2,3]", "f32[3]").unwrap(), "[2,3]");
    assert_eq!(bc("f32[2,1,5]", "f32[4,1]").unwrap(), "[2,4,5]");
    assert_eq!(bc("f32[]", "f32[4,1]").unwrap(), "[4,1]");
    assert_eq!(bc("f32[0,1]", "f32[1,3]").unwrap(), "[0,3]");
    assert_eq!(
        bc("f32[2,3]", "f32[4,3]").unwrap_err(),
        "broadcast: cannot broadcast [2,3] with [4,3]"
    );
}

#[test]
fn broadcast_symbols() {
    // Equal symbols stay; 1 with a symbol gives the symbol.
    assert_eq!(bc("f32[N,3]", "f32[N,1]").unwrap(), "[N,3]");
    assert_eq!(bc("f32[1,S]", "f32[B,1]").unwrap(), "[B,S]");
    // A symbol against a fixed n > 1 must be 1 or n: the result is n.
    assert_eq!(bc("f32[N]", "f32[5]").unwrap(), "[5]");
    assert_eq!(bc("f32[?]", "f32[5]").unwrap(), "[5]");
    // Different symbols, or a symbol and an unknown: unknown.
    assert_eq!(bc("f32[N]", "f32[M]").unwrap(), "[?]");
    assert_eq!(bc("f32[N]", "f32[?]").unwrap(), "[?]");
    assert_eq!(bc("f32[?]", "f32[1]").unwrap(), "[?]");
}

#[test]
fn binary_ops() {
    assert_eq!(
        infer_t(&Op::Add, &["f32[N,1,4]", "f32[3,1]"]).unwrap(),
        "f32[N,3,4]"
    );
    assert_eq!(infer_t(&Op::Less, &["i64[N]", "i64[]"]).unwrap(), "bool[N]");
    assert_eq!(
        infer_t(&Op::Equal, &["bool[2]", "bool[2]"]).unwrap(),
        "bool[2]"
    );
    assert_eq!(
        infer_t(&Op::And, &["bool[2]", "bool[1]"]).unwrap(),
        "bool[2]"
    );
    // Pow's exponent may have another dtype; the result has the base's.
    assert_eq!(infer_t(&Op::Pow, &["f16[2]", "f32[]"]).unwrap(), "f16[2]");
    assert_eq!(
        infer_t(&Op::BitShift { left: true }, &["u8[2]", "u8[2]"]).unwrap(),
        "u8[2]"
    );
}

#[test]
fn binary_errors() {
    assert_eq!(
        err(infer_t(&Op::Add, &["f32[2]", "i64[2]"])),
        "Add: operands 0 and 1 must have the same dtype, got f32 and i64"
    );
    assert_eq!(
        err(infer_t(&Op::Mul, &["f32[2,3]", "f32[4,3]"])),
        "Mul: cannot broadcast [2,3] with [4,3]"
    );
    assert_eq!(
        err(infer_t(&Op::Add, &["f32[2]"])),
        "Add: expects 2 operands, got 1"
    );
    assert_eq!(
        err(infer_t(&Op::And, &["f32[2]", "f32[2]"])),
        "And: operand 0 must have dtype bool, got f32"
    );
    assert_eq!(
        err(infer_t(
            &Op::BitShift { left: false },
            &["f32[2]", "f32[2]"]
        )),
        "BitShift: operand 0 must have an integer dtype, got f32"
    );
}

#[test]
fn unary_ops() {
    assert_eq!(infer_t(&Op::Exp, &["f32[N,3]"]).unwrap(), "f32[N,3]");
    assert_eq!(infer_t(&Op::IsNaN, &["f16[2]"]).unwrap(), "bool[2]");
    let isinf = Op::IsInf {
        detect_positive: true,
        detect_negative: false,
    };
    assert_eq!(infer_t(&isinf, &["f32[?]"]).unwrap(), "bool[?]");
    assert_eq!(infer_t(&Op::Neg, &["i32[3]"]).unwrap(), "i32[3]");
    assert_eq!(
        infer_t(
            &Op::Gelu {
                approximate: kiln_ir::GeluApprox::Tanh
            },
            &["bf16[4]"]
        )
        .unwrap(),
        "bf16[4]"
    );
    assert_eq!(
        err(infer_t(&Op::Exp, &["i64[2]"])),
        "Exp: operand 0 must have a floating-point dtype, got i64"
    );
    assert_eq!(
        err(infer_t(&Op::Relu, &[])),
        "Relu: expects 1 operand, got 0"
    );
}

#[test]
fn cast_where_clip_variadic_dropout() {
    let cast = Op::Cast {
        to: DType::F16,
        saturate: true,
    };
    assert_eq!(infer_t(&cast, &["i64[N,2]"]).unwrap(), "f16[N,2]");
    assert_eq!(
        infer_t(&Op::Where, &["bool[N,1]", "f32[1,4]", "f32[]"]).unwrap(),
        "f32[N,4]"
    );
    assert_eq!(
        err(infer_t(&Op::Where, &["f32[2]", "f32[2]", "f32[2]"])),
        "Where: operand 0 must have dtype bool, got f32"
    );
    assert_eq!(
        infer(&Op::Clip, vec![a("f32[2,3]"), none(), a("f32[]")]).unwrap(),
        "f32[2,3]"
    );
    assert_eq!(
        err(infer_t(&Op::Clip, &["f32[2,3]", "f32[3]"])),
        "Clip: bound operand 1 must be a scalar, got shape [3]"
    );
    assert_eq!(
        infer_t(&Op::Sum, &["f32[3]", "f32[2,1]", "f32[]"]).unwrap(),
        "f32[2,3]"
    );
    assert_eq!(infer_t(&Op::Max, &["i32[N]"]).unwrap(), "i32[N]");
    assert_eq!(
        err(infer_t(&Op::Mean, &[])),
        "Mean: expects at least 1 operand, got 0"
    );
    assert_eq!(infer_t(&Op::Dropout, &["f32[2]"]).unwrap(), "f32[2]");
    assert_eq!(
        infer_n(&Op::Dropout, vec![a("f32[2]")], 2).unwrap(),
        "f32[2] ; bool[2]"
    );
    assert_eq!(
        err(infer_n(&Op::Dropout, vec![a("f32[2]")], 3)),
        "Dropout: produces 1 to 2 results, the node has 3"
    );
    assert_eq!(
        err(infer_n(&Op::Relu, vec![a("f32[2]")], 2)),
        "Relu: produces 1 result, the node has 2"
    );
    let lrelu = Op::LeakyRelu { alpha: Float(0.1) };
    assert_eq!(infer_t(&lrelu, &["f32[1]"]).unwrap(), "f32[1]");
}
