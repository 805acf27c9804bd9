//! Linear algebra: MatMul, Gemm, Einsum.

use super::NodeCtx;
use crate::error::ImportError;
use crate::onnx::builder::Builder;
use kiln_ir::{Float, Op};

pub(super) fn matmul(b: &mut Builder, n: &NodeCtx) -> Result<(), ImportError> {
    n.expect_inputs(2, 2)?;
    n.expect_outputs(1, 1)?;
    n.emit(b, Op::MatMul);
    Ok(())
}

pub(super) fn gemm(b: &mut Builder, n: &NodeCtx) -> Result<(), ImportError> {
    // C is required before opset 11 and optional after; the IR accepts both.
    n.expect_inputs(2, 3)?;
    n.expect_outputs(1, 1)?;
    let a = &n.attrs;
    let op = Op::Gemm {
        alpha: Float(a.float_or("alpha", 1.0)?),
        beta: Float(a.float_or("beta", 1.0)?),
        trans_a: a.flag("transA", false)?,
        trans_b: a.flag("transB", false)?,
    };
    n.emit(b, op);
    Ok(())
}

pub(super) fn einsum(b: &mut Builder, n: &NodeCtx) -> Result<(), ImportError> {
    n.expect_inputs(1, usize::MAX)?;
    n.expect_outputs(1, 1)?;
    let equation = n
        .attrs
        .string("equation")?
        .ok_or_else(|| n.attrs.err("equation", "required but missing"))?;
    // Whitespace is insignificant in the ONNX grammar; strip it so equal
    // equations compare equal.
    let equation: String = equation.chars().filter(|c| !c.is_whitespace()).collect();
    n.emit(b, Op::Einsum { equation });
    Ok(())
}
