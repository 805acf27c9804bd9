//! Elementwise ops: unary, binary and variadic with broadcasting, Where, Clip,
//! Cast, Identity and Dropout.

use super::broadcast::{broadcast_all, broadcast_pair};
use super::{Ctx, R};
use crate::{DType, Op, ValueType};

/// Which dtypes an elementwise op accepts (a coarse version of ONNX's type
/// constraints: enough to reject graphs no backend could run).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Accepts {
    /// Floating point only (transcendentals, activations).
    Float,
    /// Any number, not bool.
    Numeric,
    /// Bool only (logic).
    Bool,
    /// Integers only (bitwise).
    Integer,
    /// Anything (comparisons with Equal).
    Any,
}

fn check(cx: &Ctx, i: usize, accepts: Accepts) -> R<()> {
    let d = cx.input(i)?.dtype;
    let ok = match accepts {
        Accepts::Float => d.is_float(),
        Accepts::Numeric => d != DType::Bool,
        Accepts::Bool => d == DType::Bool,
        Accepts::Integer => d.is_integer(),
        Accepts::Any => true,
    };
    if ok {
        return Ok(());
    }
    let what = match accepts {
        Accepts::Float => "a floating-point dtype",
        Accepts::Numeric => "a numeric dtype",
        Accepts::Bool => "dtype bool",
        Accepts::Integer => "an integer dtype",
        Accepts::Any => "any dtype",
    };
    Err(cx.err(format!("operand {i} must have {what}, got {d}")))
}

/// Unary ops: same shape; dtype kept, or bool for IsNaN/IsInf.
pub(super) fn unary(cx: &Ctx) -> R<ValueType> {
    use Op::*;
    cx.arity(1, 1)?;
    let x = cx.input(0)?;
    let (accepts, out) = match cx.op {
        Not => (Accepts::Bool, x.dtype),
        BitwiseNot => (Accepts::Integer, x.dtype),
        IsNaN | IsInf { .. } => (Accepts::Float, DType::Bool),
        Abs | Neg | Sign | Relu | Erf | Shrink { .. } => (Accepts::Numeric, x.dtype),
        _ => (Accepts::Float, x.dtype),
    };
    check(cx, 0, accepts)?;
    Ok(ValueType::new(out, x.shape.clone()))
}

/// Binary ops with numpy broadcasting. Comparisons and logic give bool;
/// Pow keeps the base's dtype (its exponent may differ, as in ONNX).
pub(super) fn binary(cx: &Ctx) -> R<ValueType> {
    use Op::*;
    cx.arity(2, 2)?;
    let (a, b) = (cx.input(0)?, cx.input(1)?);
    let (accepts, out, same) = match cx.op {
        And | Or | Xor => (Accepts::Bool, DType::Bool, true),
        Equal => (Accepts::Any, DType::Bool, true),
        Less | LessOrEqual | Greater | GreaterOrEqual => (Accepts::Numeric, DType::Bool, true),
        BitwiseAnd | BitwiseOr | BitwiseXor => (Accepts::Integer, a.dtype, true),
        BitShift { .. } => (Accepts::Integer, a.dtype, true),
        Pow => (Accepts::Numeric, a.dtype, false),
        _ => (Accepts::Numeric, a.dtype, true),
    };
    check(cx, 0, accepts)?;
    check(cx, 1, accepts)?;
    if same {
        cx.same_dtype(0, 1)?;
    }
    let shape = broadcast_pair(&a.shape, &b.shape).map_err(|m| cx.err(m))?;
    Ok(ValueType::new(out, shape))
}

/// Where(cond, x, y): bool condition, x and y of one dtype, all three broadcast.
pub(super) fn where_(cx: &Ctx) -> R<ValueType> {
    cx.arity(3, 3)?;
    check(cx, 0, Accepts::Bool)?;
    cx.same_dtype(1, 2)?;
    let shapes = [
        &cx.input(0)?.shape,
        &cx.input(1)?.shape,
        &cx.input(2)?.shape,
    ];
    let shape = broadcast_all(shapes).map_err(|m| cx.err(m))?;
    Ok(ValueType::new(cx.input(1)?.dtype, shape))
}

/// Max/Min/Sum/Mean over one or more operands of one dtype, broadcast together.
pub(super) fn variadic(cx: &Ctx) -> R<ValueType> {
    cx.arity(1, usize::MAX)?;
    let mut shapes = Vec::with_capacity(cx.count());
    for i in 0..cx.count() {
        check(cx, i, Accepts::Numeric)?;
        cx.same_dtype(0, i)?;
        shapes.push(&cx.input(i)?.shape);
    }
    let shape = broadcast_all(shapes).map_err(|m| cx.err(m))?;
    Ok(ValueType::new(cx.input(0)?.dtype, shape))
}

/// Clip(x, min?, max?): bounds are scalars of x's dtype.
pub(super) fn clip(cx: &Ctx) -> R<ValueType> {
    cx.arity(1, 3)?;
    let x = cx.input(0)?;
    check(cx, 0, Accepts::Numeric)?;
    for i in 1..3 {
        if let Some(b) = cx.opt(i) {
            cx.same_dtype(0, i)?;
            // ONNX says scalar; exporters also emit 1-element tensors, which mean the same.
            if b.shape.num_elements().is_some_and(|n| n != 1) || b.shape.rank() > 1 {
                return Err(cx.err(format!(
                    "bound operand {i} must be a scalar, got shape {}",
                    b.shape
                )));
            }
        }
    }
    Ok(x.clone())
}

/// Cast: same shape, dtype `to`.
pub(super) fn cast(cx: &Ctx, to: DType) -> R<ValueType> {
    cx.arity(1, 1)?;
    Ok(ValueType::new(to, cx.input(0)?.shape.clone()))
}

/// Identity: the operand's type.
pub(super) fn identity(cx: &Ctx) -> R<ValueType> {
    cx.arity(1, 1)?;
    Ok(cx.input(0)?.clone())
}

/// Dropout(data, ratio?, training_mode?) → data's type and a bool mask of its shape.
pub(super) fn dropout(cx: &Ctx) -> R<Vec<ValueType>> {
    cx.arity(1, 3)?;
    let x = cx.input(0)?;
    if let Some(t) = cx.opt(2) {
        if t.dtype != DType::Bool {
            return Err(cx.err(format!("training_mode must be bool, got {}", t.dtype)));
        }
    }
    Ok(vec![
        x.clone(),
        ValueType::new(DType::Bool, x.shape.clone()),
    ])
}
