//! Elementwise ops: unary math, activations, binary and variadic ops,
//! Clip, Cast/CastLike, Identity and Dropout.

use super::NodeCtx;
use crate::error::ImportError;
use crate::onnx::builder::{Builder, Fixup, FixupKind};
use crate::onnx::tensor::dtype_from_onnx;
use kiln_ir::{DType, Float, GeluApprox, Op};

/// Unary ops without attributes.
pub(super) const UNARY: &[&str] = &[
    "Abs",
    "Neg",
    "Exp",
    "Log",
    "Sqrt",
    "Reciprocal",
    "Sin",
    "Cos",
    "Tan",
    "Asin",
    "Acos",
    "Atan",
    "Sinh",
    "Cosh",
    "Asinh",
    "Acosh",
    "Atanh",
    "Tanh",
    "Sigmoid",
    "Relu",
    "Erf",
    "Floor",
    "Ceil",
    "Round",
    "Sign",
    "Softplus",
    "Softsign",
    "Not",
    "BitwiseNot",
    "IsNaN",
    "Mish",
    "HardSwish",
];

/// Unary ops with attributes.
pub(super) const ACTIVATIONS: &[&str] = &[
    "IsInf",
    "Swish",
    "Gelu",
    "LeakyRelu",
    "Elu",
    "Selu",
    "Celu",
    "HardSigmoid",
    "ThresholdedRelu",
    "Shrink",
];

/// Binary ops with numpy broadcasting.
pub(super) const BINARY: &[&str] = &[
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Pow",
    "Mod",
    "PRelu",
    "And",
    "Or",
    "Xor",
    "Equal",
    "Less",
    "LessOrEqual",
    "Greater",
    "GreaterOrEqual",
    "BitwiseAnd",
    "BitwiseOr",
    "BitwiseXor",
    "BitShift",
    "Where",
];

/// Variadic ops with broadcasting.
pub(super) const VARIADIC: &[&str] = &["Max", "Min", "Sum", "Mean"];

pub(super) fn unary(b: &mut Builder, n: &NodeCtx) -> Result<(), ImportError> {
    n.expect_inputs(1, 1)?;
    n.expect_outputs(1, 1)?;
    let op = match n.op_type() {
        "Abs" => Op::Abs,
        "Neg" => Op::Neg,
        "Exp" => Op::Exp,
        "Log" => Op::Log,
        "Sqrt" => Op::Sqrt,
        "Reciprocal" => Op::Reciprocal,
        "Sin" => Op::Sin,
        "Cos" => Op::Cos,
        "Tan" => Op::Tan,
        "Asin" => Op::Asin,
        "Acos" => Op::Acos,
        "Atan" => Op::Atan,
        "Sinh" => Op::Sinh,
        "Cosh" => Op::Cosh,
        "Asinh" => Op::Asinh,
        "Acosh" => Op::Acosh,
        "Atanh" => Op::Atanh,
        "Tanh" => Op::Tanh,
        "Sigmoid" => Op::Sigmoid,
        "Relu" => Op::Relu,
        "Erf" => Op::Erf,
        "Floor" => Op::Floor,
        "Ceil" => Op::Ceil,
        "Round" => Op::Round,
        "Sign" => Op::Sign,
        "Softplus" => Op::Softplus,
        "Softsign" => Op::Softsign,
        "Not" => Op::Not,
        "BitwiseNot" => Op::BitwiseNot,
        "IsNaN" => Op::IsNaN,
        "Mish" => Op::Mish,
        "HardSwish" => Op::HardSwish,
        other => unreachable!("dispatch table sent {other} to unary"),
    };
    n.emit(b, op);
    Ok(())
}

pub(super) fn activation(b: &mut Builder, n: &NodeCtx) -> Result<(), ImportError> {
    n.expect_inputs(1, 1)?;
    n.expect_outputs(1, 1)?;
    let a = &n.attrs;
    let f = |name: &str, d: f32| a.float_or(name, d).map(Float);
    let op = match n.op_type() {
        "IsInf" => Op::IsInf {
            detect_positive: a.flag("detect_positive", true)?,
            detect_negative: a.flag("detect_negative", true)?,
        },
        "Swish" => Op::Swish {
            alpha: f("alpha", 1.0)?,
        },
        "Gelu" => Op::Gelu {
            approximate: a.choice(
                "approximate",
                "none",
                &[("none", GeluApprox::None), ("tanh", GeluApprox::Tanh)],
            )?,
        },
        "LeakyRelu" => Op::LeakyRelu {
            alpha: f("alpha", 0.01)?,
        },
        "Elu" => Op::Elu {
            alpha: f("alpha", 1.0)?,
        },
        // Defaults of opset 6 and later (opset 1 had rounded constants).
        "Selu" => Op::Selu {
            alpha: f("alpha", 1.673_263_2)?,
            gamma: f("gamma", 1.050_701)?,
        },
        "Celu" => Op::Celu {
            alpha: f("alpha", 1.0)?,
        },
        "HardSigmoid" => Op::HardSigmoid {
            alpha: f("alpha", 0.2)?,
            beta: f("beta", 0.5)?,
        },
        "ThresholdedRelu" => Op::ThresholdedRelu {
            alpha: f("alpha", 1.0)?,
        },
        "Shrink" => Op::Shrink {
            bias: f("bias", 0.0)?,
            lambd: f("lambd", 0.5)?,
        },
        other => unreachable!("dispatch table sent {other} to activation"),
    };
    n.emit(b, op);
    Ok(())
}

pub(super) fn binary(b: &mut Builder, n: &NodeCtx) -> Result<(), ImportError> {
    let arity = if n.op_type() == "Where" { 3 } else { 2 };
    n.expect_inputs(arity, arity)?;
    n.expect_outputs(1, 1)?;
    let op = match n.op_type() {
        "Add" => Op::Add,
        "Sub" => Op::Sub,
        "Mul" => Op::Mul,
        "Div" => Op::Div,
        "Pow" => Op::Pow,
        "Mod" => Op::Mod {
            fmod: n.attrs.flag("fmod", false)?,
        },
        "PRelu" => Op::PRelu,
        "And" => Op::And,
        "Or" => Op::Or,
        "Xor" => Op::Xor,
        "Equal" => Op::Equal,
        "Less" => Op::Less,
        "LessOrEqual" => Op::LessOrEqual,
        "Greater" => Op::Greater,
        "GreaterOrEqual" => Op::GreaterOrEqual,
        "BitwiseAnd" => Op::BitwiseAnd,
        "BitwiseOr" => Op::BitwiseOr,
        "BitwiseXor" => Op::BitwiseXor,
        "BitShift" => {
            let s = n
                .attrs
                .string("direction")?
                .ok_or_else(|| n.attrs.err("direction", "required but missing"))?;
            let left = match s.as_str() {
                "LEFT" => true,
                "RIGHT" => false,
                other => {
                    return Err(n.attrs.err(
                        "direction",
                        format!("expected LEFT or RIGHT, found '{other}'"),
                    ))
                }
            };
            Op::BitShift { left }
        }
        "Where" => Op::Where,
        other => unreachable!("dispatch table sent {other} to binary"),
    };
    n.emit(b, op);
    Ok(())
}

pub(super) fn variadic(b: &mut Builder, n: &NodeCtx) -> Result<(), ImportError> {
    n.expect_inputs(1, usize::MAX)?;
    if n.inputs.iter().any(Option::is_none) {
        return Err(n.arity("variadic inputs cannot be absent"));
    }
    n.expect_outputs(1, 1)?;
    let op = match n.op_type() {
        "Max" => Op::Max,
        "Min" => Op::Min,
        "Sum" => Op::Sum,
        "Mean" => Op::Mean,
        other => unreachable!("dispatch table sent {other} to variadic"),
    };
    n.emit(b, op);
    Ok(())
}

pub(super) fn clip(b: &mut Builder, n: &NodeCtx) -> Result<(), ImportError> {
    n.expect_outputs(1, 1)?;
    if n.opset >= 11 {
        n.expect_inputs(1, 3)?;
        n.emit(b, Op::Clip);
        return Ok(());
    }
    // Opset 6-10: min/max are attributes; they become constant inputs of
    // the input's element type (an absent bound stays absent).
    n.expect_inputs(1, 1)?;
    let x = n.input(0)?;
    let min = n.attrs.float("min")?;
    let max = n.attrs.float("max")?;
    let at = b.next_node_index();
    let min = min.map(|v| b.const_like(&n.hint("min"), vec![], &[f64::from(v)], x, at));
    let max = max.map(|v| b.const_like(&n.hint("max"), vec![], &[f64::from(v)], x, at));
    n.emit_with(b, Op::Clip, vec![Some(x), min, max]);
    Ok(())
}

/// The Kiln dtype of a `to`/`dtype` attribute; a type Kiln has no
/// counterpart for (float8, 4-bit, 2-bit) is an unsupported feature.
pub(super) fn dtype_attr(n: &NodeCtx, name: &str, code: i64) -> Result<DType, ImportError> {
    let code = i32::try_from(code)
        .map_err(|_| n.attrs.err(name, format!("unknown data type code {code}")))?;
    dtype_from_onnx(code).map_err(|t| n.unsupported(format!("attribute '{name}': data type {t}")))
}

pub(super) fn cast(b: &mut Builder, n: &NodeCtx) -> Result<(), ImportError> {
    n.expect_inputs(1, 1)?;
    n.expect_outputs(1, 1)?;
    let to = dtype_attr(n, "to", n.attrs.req_int("to")?)?;
    let saturate = n.attrs.flag("saturate", true)?;
    // round_mode only affects casts to float8/float4, which Kiln rejects.
    n.attrs.ignore(&["round_mode"]);
    n.emit(b, Op::Cast { to, saturate });
    Ok(())
}

pub(super) fn cast_like(b: &mut Builder, n: &NodeCtx) -> Result<(), ImportError> {
    n.expect_inputs(2, 2)?;
    n.expect_outputs(1, 1)?;
    let saturate = n.attrs.flag("saturate", true)?;
    n.attrs.ignore(&["round_mode"]);
    let x = n.input(0)?;
    let like = n.input(1)?;
    match b.known_dtype(like) {
        Some(to) => {
            n.emit_with(b, Op::Cast { to, saturate }, vec![Some(x)]);
        }
        None => {
            // The target type is only known after inference: emit a Cast and
            // fix `to` when inference reaches it.
            let at = b.next_node_index();
            b.fixups.push(Fixup {
                node: at,
                kind: FixupKind::CastTo { like },
            });
            n.emit_with(
                b,
                Op::Cast {
                    to: DType::F32,
                    saturate,
                },
                vec![Some(x)],
            );
        }
    }
    Ok(())
}

pub(super) fn identity(b: &mut Builder, n: &NodeCtx) -> Result<(), ImportError> {
    n.expect_inputs(1, 1)?;
    n.expect_outputs(1, 1)?;
    n.emit(b, Op::Identity);
    Ok(())
}

pub(super) fn dropout(b: &mut Builder, n: &NodeCtx) -> Result<(), ImportError> {
    n.expect_inputs(1, 3)?;
    n.expect_outputs(1, 2)?;
    // Opset < 12 carries the ratio as an attribute; it has no effect at inference.
    n.attrs.ignore(&["ratio", "seed"]);
    if let Some(tm) = n.opt_input(2) {
        match b.g.constant(tm) {
            Some(t) if t.to_i64_vec().iter().all(|&v| v == 0) => {}
            Some(_) => return Err(n.unsupported("training-mode Dropout (training_mode=true)")),
            None => return Err(n.unsupported("Dropout with a non-constant training_mode input")),
        }
    }
    // Only the data survives: inference dropout ignores ratio and training_mode.
    n.emit_with(b, Op::Dropout, vec![Some(n.input(0)?)]);
    Ok(())
}
