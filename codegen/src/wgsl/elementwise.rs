//! Elementwise kernels: float unary maps, binary and variadic arithmetic
//! with numpy broadcasting, comparisons and logic on booleans, `Where`,
//! `Clip`, `Cast`, and fused `Elementwise` programs.
//!
//! One kernel shape serves them all (`templates/wgsl/elementwise.wgsl`, and
//! `elementwise_bool.wgsl` for boolean results, where each invocation writes
//! a whole word of four bools): `element(i)` loads every operand at output
//! element `i` and computes the result. How an operand is read is decided
//! from the static shapes when the node is planned ([`Access`]): an operand
//! with the output's shape is read at `i` and a one-element operand at 0,
//! without index math; only a broadcast operand pays for the output
//! coordinates, from the dims and strides in `params`. The output rank is
//! baked into the source, the dims arrive at run time.
//!
//! Values are computed in f32 (f16 operands are widened on load and the
//! result rounded to nearest-even on store, as the CPU executor does),
//! i32 as i32, i64 as `vec2<i32>` (low, high words) and bools as `bool`.
//! The schedule's vector width is not used: every invocation computes one
//! element (one word of four for boolean results).

use crate::kernel::{broadcast_strides, linear_grid, word};
use crate::template::render;
use crate::wgsl::program::{f32_literal, statements, MATH};
use crate::{CodegenError, Kernel, Launch, NodeCtx, Schedule};
use kiln_ir::{DType, Dim, Float, GeluApprox, Op, Shape, Tensor};
use serde::{Deserialize, Serialize};

const TEMPLATE: &str = include_str!("../../templates/wgsl/elementwise.wgsl");
const TEMPLATE_BOOL: &str = include_str!("../../templates/wgsl/elementwise_bool.wgsl");
const LIB: &str = include_str!("../../templates/wgsl/elementwise_lib.wgsl");

/// Element type of an operand or result, as the kernel reads and writes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Elem {
    /// `array<f32>`, computed as f32.
    F32,
    /// `array<f16>` (needs `shader-f16`), computed as f32.
    F16,
    /// `array<i32>`.
    I32,
    /// `array<i32>` read as (low, high) pairs, computed as `vec2<i32>`.
    I64,
    /// `array<u32>` with four bools (one byte each) per word.
    Bool,
}

impl Elem {
    /// The kernel element type of `dt`, if the family handles it on a device
    /// with (`f16`) or without half-precision shaders.
    pub fn of(dt: DType, f16: bool) -> Option<Elem> {
        match dt {
            DType::F32 => Some(Elem::F32),
            DType::F16 if f16 => Some(Elem::F16),
            DType::I32 => Some(Elem::I32),
            DType::I64 => Some(Elem::I64),
            DType::Bool => Some(Elem::Bool),
            _ => None,
        }
    }

    fn is_float(self) -> bool {
        matches!(self, Elem::F32 | Elem::F16)
    }

    /// WGSL type of a value in `element`.
    fn value_type(self) -> &'static str {
        match self {
            Elem::F32 | Elem::F16 => "f32",
            Elem::I32 => "i32",
            Elem::I64 => "vec2<i32>",
            Elem::Bool => "bool",
        }
    }

    /// WGSL type of the storage array.
    fn array_type(self) -> &'static str {
        match self {
            Elem::F32 => "array<f32>",
            Elem::F16 => "array<f16>",
            Elem::I32 | Elem::I64 => "array<i32>",
            Elem::Bool => "array<u32>",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Elem::F32 => "f32",
            Elem::F16 => "f16",
            Elem::I32 => "i32",
            Elem::I64 => "i64",
            Elem::Bool => "bool",
        }
    }
}

/// How a kernel reads an operand, decided from the static shapes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Access {
    /// The operand has the output's shape: element `i` is at `i`.
    Same,
    /// The operand has one element, read at 0.
    Scalar,
    /// Broadcast through the output coordinates and the operand's strides.
    Broadcast,
}

/// One bound operand.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Operand {
    /// Position among the node's operands.
    pub input: usize,
    /// Element type.
    pub elem: Elem,
    /// How it is read.
    pub access: Access,
}

/// An elementwise kernel: the op, its bound operands and result type.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Spec {
    /// The node's op (one of those [`Spec::select`] accepts); boxed, as
    /// `Op` is large and most of a plan's steps are small.
    pub op: Box<Op>,
    /// Bound operands, in binding order.
    pub operands: Vec<Operand>,
    /// Result element type.
    pub out: Elem,
    /// Result rank.
    pub rank: u32,
    /// `Clip` bounds given as constants, baked into the source: min, max.
    pub clip: [Option<Float>; 2],
}

/// The kernel's value of `op` applied to `x` (an f32 expression), for the
/// float unary ops; `None` for other ops.
fn float_unary(op: &Op, x: &str) -> Option<String> {
    let lit = |v: f32| f32_literal(v);
    Some(match op {
        Op::Abs => format!("abs({x})"),
        Op::Neg => format!("(-{x})"),
        Op::Exp => format!("kiln_exp({x})"),
        Op::Log => format!("ew_log({x})"),
        Op::Sqrt => format!("ew_sqrt({x})"),
        Op::Reciprocal => format!("(1.0 / {x})"),
        Op::Sin => format!("ew_sin({x})"),
        Op::Cos => format!("ew_cos({x})"),
        Op::Tan => format!("ew_tan({x})"),
        Op::Asin => format!("ew_asin({x})"),
        Op::Acos => format!("ew_acos({x})"),
        Op::Atan => format!("ew_atan({x})"),
        Op::Sinh => format!("ew_sinh({x})"),
        Op::Cosh => format!("ew_cosh({x})"),
        Op::Asinh => format!("ew_asinh({x})"),
        Op::Acosh => format!("ew_acosh({x})"),
        Op::Atanh => format!("ew_atanh({x})"),
        Op::Tanh => format!("ew_tanh({x})"),
        Op::Sigmoid => format!("kiln_sigmoid({x})"),
        Op::Relu => format!("ew_relu({x})"),
        Op::Erf => format!("kiln_erf({x})"),
        Op::Floor => format!("floor({x})"),
        Op::Ceil => format!("ceil({x})"),
        // WGSL's round breaks ties to even, as ONNX Round does.
        Op::Round => format!("round({x})"),
        Op::Sign => format!("ew_sign({x})"),
        Op::Softplus => format!("ew_softplus({x})"),
        Op::Softsign => format!("({x} / (1.0 + abs({x})))"),
        Op::Mish => format!("({x} * ew_tanh(ew_softplus({x})))"),
        Op::HardSwish => format!("({x} * clamp({x} / 6.0 + 0.5, 0.0, 1.0))"),
        Op::Swish { alpha } => format!("({x} * kiln_sigmoid({} * {x}))", lit(alpha.0)),
        Op::Gelu {
            approximate: GeluApprox::None,
        } => format!("kiln_gelu_erf({x})"),
        Op::Gelu {
            approximate: GeluApprox::Tanh,
        } => format!("ew_gelu_tanh({x})"),
        Op::LeakyRelu { alpha } => format!("select({} * {x}, {x}, {x} >= 0.0)", lit(alpha.0)),
        Op::Elu { alpha } => {
            format!(
                "select({} * (exp({x}) - 1.0), {x}, {x} > 0.0)",
                lit(alpha.0)
            )
        }
        // gamma·alpha is one f32 product on the CPU; folding it here keeps
        // WGSL from evaluating it in higher precision.
        Op::Selu { alpha, gamma } => format!(
            "select({} * (exp({x}) - 1.0), {} * {x}, {x} > 0.0)",
            lit(gamma.0 * alpha.0),
            lit(gamma.0)
        ),
        Op::Celu { alpha } => format!(
            "(max({x}, 0.0) + min({a} * (exp({x} / {a}) - 1.0), 0.0))",
            a = lit(alpha.0)
        ),
        Op::HardSigmoid { alpha, beta } => {
            format!("clamp({} * {x} + {}, 0.0, 1.0)", lit(alpha.0), lit(beta.0))
        }
        Op::ThresholdedRelu { alpha } => format!("select(0.0, {x}, {x} > {})", lit(alpha.0)),
        Op::Shrink { bias, lambd } => format!(
            "select(select(0.0, {x} - {b}, {x} > {l}), {x} + {b}, {x} < {nl})",
            b = lit(bias.0),
            l = lit(lambd.0),
            nl = lit(-lambd.0)
        ),
        _ => return None,
    })
}

/// `v` (a value of `from`) converted to `to` as the CPU executor's `Cast`
/// does: floats truncate toward zero into integers (saturating through
/// i64, NaN to 0), integers round to nearest-even into floats, narrowing
/// integers wrap, and anything nonzero (NaN included) is `true`.
fn convert(from: Elem, to: Elem, v: &str) -> String {
    use Elem::*;
    match (from, to) {
        (F32 | F16, F32 | F16) | (I32, I32) | (I64, I64) | (Bool, Bool) => v.to_string(),
        (F32 | F16, Bool) => format!("ew_nonzero({v})"),
        (F32 | F16, I32) => format!("ew_f32_to_i64({v}).x"),
        (F32 | F16, I64) => format!("ew_f32_to_i64({v})"),
        (I32, F32 | F16) => format!("ew_i64_to_f32(vec2<i32>({v}, {v} >> 31u))"),
        (I64, F32 | F16) => format!("ew_i64_to_f32({v})"),
        (I32, I64) => format!("vec2<i32>({v}, {v} >> 31u)"),
        (I64, I32) => format!("{v}.x"),
        (I32, Bool) => format!("({v} != 0)"),
        (I64, Bool) => format!("any({v} != vec2<i32>(0, 0))"),
        (Bool, F32 | F16) => format!("select(0.0, 1.0, {v})"),
        (Bool, I32) => format!("select(0, 1, {v})"),
        (Bool, I64) => format!("vec2<i32>(select(0, 1, {v}), 0)"),
    }
}

/// The static shape of operand `i`, when present.
fn shape_of<'a>(cx: &'a NodeCtx, i: usize) -> Option<&'a Shape> {
    cx.inputs.get(i).copied().flatten().map(|t| &t.shape)
}

/// How operand `shape` is read for a result of static shape `out`, or
/// `None` when it cannot broadcast to it.
fn access(shape: &Shape, out: &Shape) -> Option<Access> {
    if shape.rank() > out.rank() {
        return None;
    }
    let known = |s: &Shape| s.0.iter().all(|d| *d != Dim::Unknown);
    if shape == out && known(shape) {
        Some(Access::Same)
    } else if shape.0.iter().all(|d| *d == Dim::Fixed(1)) {
        Some(Access::Scalar)
    } else {
        Some(Access::Broadcast)
    }
}

/// A `Clip` bound given as a constant: `Ok(None)` when empty (no bound),
/// `Err(())` when it has more than one element (the CPU executor rejects it).
fn const_bound(t: &Tensor) -> Result<Option<Float>, ()> {
    match t.len() {
        0 => Ok(None),
        1 => Ok(t.to_f64_vec().first().map(|&v| Float(v as f32))),
        _ => Err(()),
    }
}

impl Spec {
    /// The kernel for the node, if this family has one: f32 (and f16 with
    /// `shader-f16`) arithmetic, bool logic, comparisons, `Where` and `Cast`
    /// over f32, f16, i32, i64 and bool, and fused programs, with every
    /// operand able to broadcast to the result and all buffers within the
    /// device's storage-buffer limit.
    pub fn select(cx: &NodeCtx) -> Option<Spec> {
        if cx.outputs.len() != 1 {
            return None;
        }
        let out_ty = cx.outputs[0];
        let f16 = cx.caps.shader_f16;
        let out = Elem::of(out_ty.dtype, f16)?;
        let elem = |i: usize| -> Option<Elem> {
            Elem::of(cx.inputs.get(i).copied().flatten()?.dtype, f16)
        };
        let present: Vec<usize> = (0..cx.inputs.len())
            .filter(|&i| cx.inputs[i].is_some())
            .collect();
        // Operand positions and the result type the op needs.
        let mut clip = [None, None];
        let (inputs, expected): (Vec<usize>, Elem) = match cx.op {
            Op::Clip => {
                let x = elem(0)?;
                if !x.is_float() {
                    return None;
                }
                let mut bound = vec![0];
                for (k, slot) in clip.iter_mut().enumerate() {
                    let i = k + 1;
                    if cx.inputs.get(i).copied().flatten().is_none() {
                        continue;
                    }
                    if let Some(t) = cx.consts.get(i).copied().flatten() {
                        *slot = const_bound(t).ok()?;
                    } else if elem(i)? == x
                        && shape_of(cx, i)?.0.iter().all(|d| *d == Dim::Fixed(1))
                    {
                        bound.push(i);
                    } else {
                        return None;
                    }
                }
                (bound, x)
            }
            Op::Cast { .. } | Op::Identity => {
                elem(0)?;
                (vec![0], out)
            }
            // Inference-mode Dropout ignores its ratio and training-mode operands.
            Op::Dropout => (vec![0], elem(0)?),
            Op::Add | Op::Sub | Op::Mul | Op::Div | Op::PRelu => {
                let a = elem(0)?;
                if !a.is_float() || elem(1)? != a || present.len() != 2 {
                    return None;
                }
                (vec![0, 1], a)
            }
            Op::Pow => {
                let a = elem(0)?;
                if !a.is_float() || elem(1)? == Elem::Bool || present.len() != 2 {
                    return None;
                }
                (vec![0, 1], a)
            }
            Op::Max | Op::Min | Op::Sum | Op::Mean => {
                let a = elem(0)?;
                if !a.is_float() || present.len() != cx.inputs.len() {
                    return None;
                }
                for &i in &present {
                    if elem(i)? != a {
                        return None;
                    }
                }
                (present.clone(), a)
            }
            Op::Equal | Op::Less | Op::LessOrEqual | Op::Greater | Op::GreaterOrEqual => {
                let a = elem(0)?;
                if elem(1)? != a || present.len() != 2 {
                    return None;
                }
                if a == Elem::Bool && *cx.op != Op::Equal {
                    return None;
                }
                (vec![0, 1], Elem::Bool)
            }
            Op::And | Op::Or | Op::Xor => {
                if elem(0)? != Elem::Bool || elem(1)? != Elem::Bool || present.len() != 2 {
                    return None;
                }
                (vec![0, 1], Elem::Bool)
            }
            Op::Not => {
                if elem(0)? != Elem::Bool {
                    return None;
                }
                (vec![0], Elem::Bool)
            }
            Op::IsNaN | Op::IsInf { .. } => {
                if !elem(0)?.is_float() {
                    return None;
                }
                (vec![0], Elem::Bool)
            }
            Op::Where => {
                let a = elem(1)?;
                if elem(0)? != Elem::Bool || elem(2)? != a || present.len() != 3 {
                    return None;
                }
                (vec![0, 1, 2], a)
            }
            Op::Elementwise { program } => {
                let n = program.inputs as usize;
                if n == 0
                    || cx.inputs.len() != n
                    || present.len() != n
                    || program.validate().is_err()
                {
                    return None;
                }
                for i in 0..n {
                    if elem(i)? != Elem::F32 {
                        return None;
                    }
                }
                (present.clone(), Elem::F32)
            }
            op => {
                let x = elem(0)?;
                if !x.is_float() || present.len() != 1 || float_unary(op, "x").is_none() {
                    return None;
                }
                (vec![0], x)
            }
        };
        if out != expected {
            return None;
        }
        // Inputs, the output and params must all fit in one stage.
        if inputs.len() + 2 > cx.caps.max_storage_buffers_per_stage as usize {
            return None;
        }
        let operands = inputs
            .iter()
            .map(|&i| {
                Some(Operand {
                    input: i,
                    elem: elem(i)?,
                    access: access(shape_of(cx, i)?, &out_ty.shape)?,
                })
            })
            .collect::<Option<Vec<_>>>()?;
        Some(Spec {
            op: Box::new(cx.op.clone()),
            operands,
            out,
            rank: out_ty.shape.rank() as u32,
            clip,
        })
    }

    /// The kernel's name stem: `ew_` and the op.
    fn stem(&self) -> String {
        let op = match self.op.as_ref() {
            Op::Cast { .. } => {
                let from = self.operands.first().map_or("x", |o| o.elem.name());
                format!("cast_{from}_{}", self.out.name())
            }
            Op::Elementwise { .. } => "fused".to_string(),
            op => op.name().to_lowercase(),
        };
        format!("ew_{op}")
    }

    /// Whether any operand needs the output coordinates.
    fn broadcasts(&self) -> bool {
        self.operands.iter().any(|o| o.access == Access::Broadcast)
    }

    /// Statements and the result expression of `element`, over the loaded
    /// operands `a0, a1, ...`.
    fn compute(&self) -> Result<(String, String), CodegenError> {
        let a = |k: usize| format!("a{k}");
        let elem0 = self.operands.first().map(|o| o.elem);
        let half = self.out == Elem::F16;
        let unsupported =
            || CodegenError::Template(format!("elementwise: no kernel for {}", self.op.name()));
        let expr = match self.op.as_ref() {
            Op::Cast { .. } | Op::Identity | Op::Dropout => {
                convert(elem0.ok_or_else(unsupported)?, self.out, &a(0))
            }
            Op::Clip => {
                let mut body = "    var v = a0;\n".to_string();
                for (k, (cmp, name)) in [("<", "min"), (">", "max")].into_iter().enumerate() {
                    let bound = match (
                        self.clip[k],
                        self.operands.iter().position(|o| o.input == k + 1),
                    ) {
                        (Some(c), _) => Some(f32_literal(c.0)),
                        (None, Some(j)) => Some(a(j)),
                        (None, None) => None,
                    };
                    if let Some(b) = bound {
                        body.push_str(&format!("    let {name} = {b};\n    if (v {cmp} {name}) {{\n        v = {name};\n    }}\n"));
                    }
                }
                return Ok((body, "v".to_string()));
            }
            Op::Add => "(a0 + a1)".to_string(),
            Op::Sub => "(a0 - a1)".to_string(),
            Op::Mul => "(a0 * a1)".to_string(),
            Op::Div => "(a0 / a1)".to_string(),
            Op::PRelu => "select(a0, a0 * a1, a0 < 0.0)".to_string(),
            Op::Pow => {
                let e = convert(self.operands[1].elem, Elem::F32, "a1");
                format!("kiln_pow(a0, {e})")
            }
            Op::Max | Op::Min | Op::Sum | Op::Mean => {
                // Left to right, as the CPU executor folds them; a
                // half-precision fold rounds every partial result to f16.
                let mut acc = a(0);
                for k in 1..self.operands.len() {
                    let step = match *self.op {
                        Op::Max => format!("ew_max({acc}, a{k})"),
                        Op::Min => format!("ew_min({acc}, a{k})"),
                        _ => format!("({acc} + a{k})"),
                    };
                    let last = k + 1 == self.operands.len();
                    acc = if half && !(last && *self.op != Op::Mean) {
                        format!("ew_round_f16({step})")
                    } else {
                        step
                    };
                }
                if *self.op == Op::Mean && self.operands.len() > 1 {
                    acc = format!("({acc} / {})", f32_literal(self.operands.len() as f32));
                }
                acc
            }
            Op::Equal | Op::Less | Op::LessOrEqual | Op::Greater | Op::GreaterOrEqual => {
                if elem0 == Some(Elem::I64) {
                    match *self.op {
                        Op::Equal => "all(a0 == a1)".to_string(),
                        Op::Less => "ew_i64_lt(a0, a1)".to_string(),
                        Op::LessOrEqual => "!ew_i64_lt(a1, a0)".to_string(),
                        Op::Greater => "ew_i64_lt(a1, a0)".to_string(),
                        _ => "!ew_i64_lt(a0, a1)".to_string(),
                    }
                } else {
                    let cmp = match *self.op {
                        Op::Equal => "==",
                        Op::Less => "<",
                        Op::LessOrEqual => "<=",
                        Op::Greater => ">",
                        _ => ">=",
                    };
                    format!("(a0 {cmp} a1)")
                }
            }
            Op::And => "(a0 && a1)".to_string(),
            Op::Or => "(a0 || a1)".to_string(),
            Op::Xor => "(a0 != a1)".to_string(),
            Op::Not => "(!a0)".to_string(),
            Op::IsNaN => "ew_isnan(a0)".to_string(),
            Op::IsInf {
                detect_positive,
                detect_negative,
            } => {
                let mut tests = Vec::new();
                if *detect_positive {
                    tests.push("bitcast<u32>(a0) == 0x7f800000u");
                }
                if *detect_negative {
                    tests.push("bitcast<u32>(a0) == 0xff800000u");
                }
                if tests.is_empty() {
                    "false".to_string()
                } else {
                    format!("({})", tests.join(" || "))
                }
            }
            Op::Where => "select(a2, a1, a0)".to_string(),
            Op::Elementwise { program } => {
                let names: Vec<String> = (0..self.operands.len()).map(a).collect();
                return Ok(statements(program, &names, "r"));
            }
            op => float_unary(op, "a0").ok_or_else(unsupported)?,
        };
        Ok((String::new(), expr))
    }

    /// The body of `element(i)`: output coordinates when an operand is
    /// broadcast, the loads, the computation and the return.
    fn body(&self) -> Result<String, CodegenError> {
        let rank = self.rank as usize;
        let mut s = String::new();
        if self.broadcasts() {
            // params: [n, dims[rank], strides of each broadcast operand].
            if rank == 1 {
                s.push_str("    let c0 = i;\n");
            } else {
                s.push_str("    var rem = i;\n");
                for d in (1..rank).rev() {
                    s.push_str(&format!(
                        "    let c{d} = rem % params[{p}u];\n    rem = rem / params[{p}u];\n",
                        p = 1 + d
                    ));
                }
                s.push_str("    let c0 = rem;\n");
            }
        }
        let mut next_stride = 1 + rank;
        for (k, o) in self.operands.iter().enumerate() {
            let off = match o.access {
                Access::Same => "i".to_string(),
                Access::Scalar => "0u".to_string(),
                Access::Broadcast => {
                    let terms: Vec<String> = (0..rank)
                        .map(|d| format!("c{d} * params[{}u]", next_stride + d))
                        .collect();
                    next_stride += rank;
                    s.push_str(&format!("    let o{k} = {};\n", terms.join(" + ")));
                    format!("o{k}")
                }
            };
            let load = match o.elem {
                Elem::F32 | Elem::I32 => format!("x{k}[{off}]"),
                Elem::F16 => format!("f32(x{k}[{off}])"),
                Elem::I64 => format!("vec2<i32>(x{k}[2u * {off}], x{k}[2u * {off} + 1u])"),
                Elem::Bool => format!("((x{k}[{off} / 4u] >> (({off} % 4u) * 8u)) & 0xffu) != 0u"),
            };
            s.push_str(&format!("    let a{k} = {load};\n"));
        }
        let (stmts, result) = self.compute()?;
        s.push_str(&stmts);
        s.push_str(&format!("    return {result};\n"));
        Ok(s)
    }

    /// The WGSL for `schedule` (any workgroup shape; one element, or one
    /// word of four bools, per invocation).
    pub fn emit(&self, schedule: &Schedule) -> Result<Kernel, CodegenError> {
        let body = self.body()?;
        let n_in = self.operands.len();
        let uses_f16 = self.out == Elem::F16 || self.operands.iter().any(|o| o.elem == Elem::F16);
        let mut bindings = String::new();
        for (k, o) in self.operands.iter().enumerate() {
            bindings.push_str(&format!(
                "@group(0) @binding({k}) var<storage, read> x{k}: {};\n",
                o.elem.array_type()
            ));
        }
        bindings.push_str(&format!(
            "@group(0) @binding({n_in}) var<storage, read_write> y: {};",
            self.out.array_type()
        ));
        let store = match self.out {
            Elem::F32 | Elem::I32 => "    y[i] = element(i);\n".to_string(),
            Elem::F16 => "    y[i] = ew_f16(element(i));\n".to_string(),
            Elem::I64 => {
                "    let v = element(i);\n    y[2u * i] = v.x;\n    y[2u * i + 1u] = v.y;\n"
                    .to_string()
            }
            Elem::Bool => String::new(),
        };
        let functions = used_functions(&format!("{body}{store}"));
        let [wx, wy, wz] = schedule.workgroup;
        let mut vars = vec![
            (
                "ENABLE",
                if uses_f16 {
                    "enable f16;\n".to_string()
                } else {
                    String::new()
                },
            ),
            ("FUNCTIONS", functions),
            ("BINDINGS", bindings),
            ("PARAMS_BINDING", (n_in + 1).to_string()),
            ("BODY", body),
            ("WORKGROUP", format!("{wx}, {wy}, {wz}")),
            ("INVOCATIONS", schedule.invocations().to_string()),
        ];
        let mut wgsl = if self.out == Elem::Bool {
            render("elementwise_bool", TEMPLATE_BOOL, &vars)?
        } else {
            vars.push(("VALUE_TYPE", self.out.value_type().to_string()));
            vars.push(("STORE", store));
            render("elementwise", TEMPLATE, &vars)?
        };
        // Empty holes (no `enable`, no helper functions) leave blank runs.
        while wgsl.contains("\n\n\n") {
            wgsl = wgsl.replace("\n\n\n", "\n\n");
        }
        Ok(Kernel::new(&self.stem(), wgsl, n_in as u32, 1, 0))
    }

    /// Node operands bound as inputs (constant `Clip` bounds are baked in).
    pub fn bound_inputs(&self) -> Vec<usize> {
        self.operands.iter().map(|o| o.input).collect()
    }

    /// Params (element count, then output dims and broadcast strides when
    /// an operand is broadcast) and a linear grid for concrete shapes.
    pub fn launch(
        &self,
        inputs: &[Option<&[usize]>],
        outputs: &[&[usize]],
        schedule: &Schedule,
    ) -> Result<Launch, CodegenError> {
        let kernel = self.stem();
        let fail = |message: String| CodegenError::Launch {
            kernel: kernel.clone(),
            message,
        };
        let out = *outputs
            .first()
            .ok_or_else(|| fail("no output shape given".into()))?;
        if out.len() != self.rank as usize {
            return Err(fail(format!(
                "output has rank {} ({out:?}), the kernel was generated for rank {}",
                out.len(),
                self.rank
            )));
        }
        let n: usize = out.iter().product();
        let mut params = vec![word(&kernel, "element count", n)?];
        let pairs = self.out == Elem::I64 || self.operands.iter().any(|o| o.elem == Elem::I64);
        if pairs {
            // i64 elements are addressed as word pairs.
            word(&kernel, "twice the element count", 2 * n)?;
        }
        if self.broadcasts() {
            for &d in out {
                params.push(word(&kernel, "output dim", d)?);
            }
        }
        for o in &self.operands {
            let dims = inputs
                .get(o.input)
                .copied()
                .flatten()
                .ok_or_else(|| fail(format!("operand {} has no shape", o.input)))?;
            match o.access {
                Access::Same if dims != out => {
                    return Err(fail(format!(
                        "operand {} has shape {dims:?}, planned as the output's {out:?}",
                        o.input
                    )))
                }
                Access::Scalar if dims.iter().product::<usize>() != 1 => {
                    return Err(fail(format!(
                        "operand {} has shape {dims:?}, planned as one element",
                        o.input
                    )))
                }
                Access::Broadcast => {
                    let lead = out.len().checked_sub(dims.len());
                    let fits = lead.is_some_and(|lead| {
                        dims.iter()
                            .enumerate()
                            .all(|(j, &d)| d == 1 || d == out[lead + j])
                    });
                    if !fits {
                        return Err(fail(format!(
                            "operand {} of shape {dims:?} does not broadcast to {out:?}",
                            o.input
                        )));
                    }
                    for s in broadcast_strides(dims, out) {
                        params.push(word(&kernel, "stride", s)?);
                    }
                }
                _ => {}
            }
        }
        let invocations = if self.out == Elem::Bool {
            n.div_ceil(4)
        } else {
            n
        };
        let per_group = schedule.invocations().max(1) as usize;
        Ok(Launch {
            params,
            workgroups: linear_grid(invocations.div_ceil(per_group) as u64),
        })
    }
}

/// One top-level function of a WGSL library: its name and text (with the
/// comment lines above it).
struct LibFn<'a> {
    name: &'a str,
    text: String,
}

/// Splits a library of top-level functions (each ending with a `}` line at
/// column 0) into functions.
fn lib_functions(src: &str) -> Vec<LibFn<'_>> {
    let mut out = Vec::new();
    let mut pending = String::new();
    let mut current: Option<LibFn> = None;
    for line in src.lines() {
        if let Some(f) = current.as_mut() {
            f.text.push_str(line);
            f.text.push('\n');
            if line == "}" {
                out.extend(current.take());
            }
        } else if let Some(rest) = line.strip_prefix("fn ") {
            let name = rest.split('(').next().unwrap_or("").trim();
            let mut text = std::mem::take(&mut pending);
            text.push_str(line);
            text.push('\n');
            current = Some(LibFn { name, text });
        } else if line.starts_with("//") {
            pending.push_str(line);
            pending.push('\n');
        } else {
            pending.clear();
        }
    }
    out
}

/// Whether `src` calls `name(`.
fn calls(src: &str, name: &str) -> bool {
    let pat = format!("{name}(");
    src.match_indices(&pat).any(|(at, _)| {
        src[..at]
            .chars()
            .next_back()
            .is_none_or(|c| !(c.is_alphanumeric() || c == '_'))
    })
}

/// The functions of [`MATH`] and the elementwise library that `code` calls,
/// directly or through each other, in library order.
fn used_functions(code: &str) -> String {
    let fns: Vec<LibFn> = lib_functions(MATH)
        .into_iter()
        .chain(lib_functions(LIB))
        .collect();
    let mut used = vec![false; fns.len()];
    let mut frontier = vec![code.to_string()];
    while let Some(src) = frontier.pop() {
        for (k, f) in fns.iter().enumerate() {
            if !used[k] && calls(&src, f.name) {
                used[k] = true;
                frontier.push(f.text.clone());
            }
        }
    }
    fns.iter()
        .zip(used)
        .filter(|(_, u)| *u)
        .map(|(f, _)| f.text.as_str())
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::{to_msl, to_spirv, validate};
    use crate::{DeviceCaps, Family};
    use kiln_ir::fused::{BinaryFn, Instr, Program, UnaryFn};
    use kiln_ir::ValueType;

    fn ty(dt: DType, dims: &[u64]) -> ValueType {
        ValueType::new(dt, Shape::fixed(dims))
    }

    /// Selects for `op` with operand types `ins` and result `out`.
    fn pick(
        op: &Op,
        ins: &[Option<&ValueType>],
        consts: &[Option<&Tensor>],
        out: &ValueType,
        caps: &DeviceCaps,
    ) -> Option<Spec> {
        let mut consts = consts.to_vec();
        consts.resize(ins.len(), None);
        Spec::select(&NodeCtx {
            name: "n",
            op,
            inputs: ins.to_vec(),
            consts,
            outputs: vec![out],
            caps,
        })
    }

    /// The kernel validates with naga and translates to MSL and SPIR-V.
    fn check(spec: &Spec) -> Kernel {
        let caps = DeviceCaps::metal();
        let k = spec
            .emit(&Schedule::default_for(Family::Elementwise, &caps))
            .unwrap();
        validate(&k).unwrap_or_else(|e| panic!("{e}\n{}", k.wgsl));
        to_msl(&k).unwrap_or_else(|e| panic!("{e}\n{}", k.wgsl));
        to_spirv(&k).unwrap_or_else(|e| panic!("{e}\n{}", k.wgsl));
        k
    }

    fn unary_ops() -> Vec<Op> {
        let f = Float;
        vec![
            Op::Abs,
            Op::Neg,
            Op::Exp,
            Op::Log,
            Op::Sqrt,
            Op::Reciprocal,
            Op::Sin,
            Op::Cos,
            Op::Tan,
            Op::Asin,
            Op::Acos,
            Op::Atan,
            Op::Sinh,
            Op::Cosh,
            Op::Asinh,
            Op::Acosh,
            Op::Atanh,
            Op::Tanh,
            Op::Sigmoid,
            Op::Relu,
            Op::Erf,
            Op::Floor,
            Op::Ceil,
            Op::Round,
            Op::Sign,
            Op::Softplus,
            Op::Softsign,
            Op::Mish,
            Op::HardSwish,
            Op::Swish { alpha: f(1.702) },
            Op::Gelu {
                approximate: GeluApprox::None,
            },
            Op::Gelu {
                approximate: GeluApprox::Tanh,
            },
            Op::LeakyRelu { alpha: f(0.01) },
            Op::Elu { alpha: f(1.0) },
            Op::Selu {
                alpha: f(1.67326),
                gamma: f(1.0507),
            },
            Op::Celu { alpha: f(1.5) },
            Op::HardSigmoid {
                alpha: f(0.2),
                beta: f(0.5),
            },
            Op::ThresholdedRelu { alpha: f(1.0) },
            Op::Shrink {
                bias: f(0.1),
                lambd: f(0.5),
            },
        ]
    }

    #[test]
    fn every_unary_op_validates_in_f32_and_f16() {
        let caps = DeviceCaps::metal();
        for op in unary_ops() {
            for dt in [DType::F32, DType::F16] {
                let t = ty(dt, &[3, 5]);
                let s = pick(&op, &[Some(&t)], &[], &t, &caps)
                    .unwrap_or_else(|| panic!("{op:?} {dt:?}"));
                assert_eq!(s.operands[0].access, Access::Same);
                let k = check(&s);
                assert_eq!(k.uses_f16, dt == DType::F16);
                // The same-shape path has no index math.
                assert!(!k.wgsl.contains("var rem"), "{}", k.wgsl);
            }
        }
    }

    #[test]
    fn f16_needs_shader_f16_and_other_dtypes_are_refused() {
        let web = DeviceCaps::webgpu();
        let h = ty(DType::F16, &[4]);
        assert!(pick(&Op::Exp, &[Some(&h)], &[], &h, &web).is_none());
        for dt in [DType::F64, DType::BF16, DType::I32, DType::U8] {
            let t = ty(dt, &[4]);
            assert!(
                pick(&Op::Exp, &[Some(&t)], &[], &t, &web).is_none(),
                "{dt:?}"
            );
            assert!(
                pick(&Op::Add, &[Some(&t), Some(&t)], &[], &t, &web).is_none(),
                "{dt:?}"
            );
        }
        // Ops outside the family.
        let f = ty(DType::F32, &[4]);
        assert!(pick(&Op::Softmax { axis: -1 }, &[Some(&f)], &[], &f, &web).is_none());
        assert!(pick(
            &Op::Mod { fmod: true },
            &[Some(&f), Some(&f)],
            &[],
            &f,
            &web
        )
        .is_none());
        assert!(pick(&Op::BitwiseNot, &[Some(&f)], &[], &f, &web).is_none());
        // Mixed operand dtypes.
        let i = ty(DType::I32, &[4]);
        assert!(pick(&Op::Add, &[Some(&f), Some(&i)], &[], &f, &web).is_none());
        // A result dtype that does not follow the op.
        assert!(pick(&Op::Add, &[Some(&f), Some(&f)], &[], &i, &web).is_none());
    }

    #[test]
    fn binary_ops_broadcast_with_index_math() {
        let caps = DeviceCaps::webgpu();
        let a = ty(DType::F32, &[2, 3, 4]);
        let b = ty(DType::F32, &[3, 1]);
        let one = ty(DType::F32, &[]);
        for op in [
            Op::Add,
            Op::Sub,
            Op::Mul,
            Op::Div,
            Op::Pow,
            Op::PRelu,
            Op::Max,
            Op::Min,
            Op::Sum,
            Op::Mean,
        ] {
            let s = pick(&op, &[Some(&a), Some(&b)], &[], &a, &caps).unwrap();
            assert_eq!(s.operands[1].access, Access::Broadcast);
            let k = check(&s);
            assert!(k.wgsl.contains("let o1 = c0 * params[4u]"), "{}", k.wgsl);
            let s = pick(&op, &[Some(&a), Some(&one)], &[], &a, &caps).unwrap();
            assert_eq!(s.operands[1].access, Access::Scalar);
            let k = check(&s);
            assert!(
                k.wgsl.contains("x1[0u]") && !k.wgsl.contains("var rem"),
                "{}",
                k.wgsl
            );
        }
        // Pow takes an integer exponent, converted like the CPU's cast.
        let e = ty(DType::I64, &[]);
        let s = pick(&Op::Pow, &[Some(&a), Some(&e)], &[], &a, &caps).unwrap();
        assert!(check(&s).wgsl.contains("ew_i64_to_f32"));
        // Shapes that cannot broadcast to the result.
        let big = ty(DType::F32, &[5, 2, 3, 4]);
        assert!(pick(&Op::Add, &[Some(&big), Some(&a)], &[], &a, &caps).is_none());
    }

    #[test]
    fn symbolic_shapes_take_the_same_shape_path() {
        let caps = DeviceCaps::webgpu();
        let s = Shape(vec![Dim::Sym("batch".into()), Dim::Fixed(8)]);
        let t = ValueType::new(DType::F32, s);
        let u = ValueType::new(DType::F32, Shape(vec![Dim::Unknown, Dim::Fixed(8)]));
        let spec = pick(&Op::Add, &[Some(&t), Some(&t)], &[], &t, &caps).unwrap();
        assert!(spec.operands.iter().all(|o| o.access == Access::Same));
        let spec = pick(&Op::Add, &[Some(&u), Some(&u)], &[], &u, &caps).unwrap();
        assert!(spec.operands.iter().all(|o| o.access == Access::Broadcast));
        check(&spec);
    }

    #[test]
    fn variadic_ops_stop_at_the_buffer_limit() {
        let web = DeviceCaps::webgpu();
        let t = ty(DType::F32, &[7]);
        for n in 1..=6 {
            let ins = vec![Some(&t); n];
            let s = pick(&Op::Sum, &ins, &[], &t, &web).unwrap();
            assert_eq!(s.bound_inputs(), (0..n).collect::<Vec<_>>());
            assert!(check(&s).storage_buffers() <= 8);
        }
        let ins = vec![Some(&t); 7];
        assert!(pick(&Op::Sum, &ins, &[], &t, &web).is_none());
        assert!(pick(&Op::Max, &ins, &[], &t, &DeviceCaps::vulkan()).is_some());
        let h = ty(DType::F16, &[7]);
        let s = pick(
            &Op::Mean,
            &[Some(&h), Some(&h), Some(&h)],
            &[],
            &h,
            &DeviceCaps::metal(),
        )
        .unwrap();
        assert!(check(&s).wgsl.contains("ew_round_f16"));
    }

    #[test]
    fn comparisons_and_logic_write_whole_bool_words() {
        let caps = DeviceCaps::metal();
        let b = ty(DType::Bool, &[3, 5]);
        for dt in [DType::F32, DType::F16, DType::I32, DType::I64, DType::Bool] {
            let t = ty(dt, &[3, 5]);
            let r = ty(DType::F32, &[5]);
            let r = if dt == DType::F32 { r } else { ty(dt, &[1, 5]) };
            for op in [
                Op::Equal,
                Op::Less,
                Op::LessOrEqual,
                Op::Greater,
                Op::GreaterOrEqual,
            ] {
                let s = pick(&op, &[Some(&t), Some(&r)], &[], &b, &caps);
                if dt == DType::Bool && op != Op::Equal {
                    assert!(s.is_none());
                    continue;
                }
                let k = check(&s.unwrap_or_else(|| panic!("{op:?} {dt:?}")));
                assert!(k.wgsl.contains("y[w] = word;"), "{}", k.wgsl);
            }
        }
        for op in [Op::And, Op::Or, Op::Xor] {
            check(&pick(&op, &[Some(&b), Some(&b)], &[], &b, &caps).unwrap());
        }
        check(&pick(&Op::Not, &[Some(&b)], &[], &b, &caps).unwrap());
        let f = ty(DType::F32, &[3, 5]);
        check(&pick(&Op::IsNaN, &[Some(&f)], &[], &b, &caps).unwrap());
        for (p, n) in [(true, true), (true, false), (false, true), (false, false)] {
            let op = Op::IsInf {
                detect_positive: p,
                detect_negative: n,
            };
            check(&pick(&op, &[Some(&f)], &[], &b, &caps).unwrap());
        }
        // Logic needs bools.
        assert!(pick(&Op::And, &[Some(&f), Some(&f)], &[], &b, &caps).is_none());
    }

    #[test]
    fn where_and_casts_cover_every_type_pair() {
        let caps = DeviceCaps::metal();
        let c = ty(DType::Bool, &[4, 1]);
        let dts = [DType::F32, DType::F16, DType::I32, DType::I64, DType::Bool];
        for dt in dts {
            let a = ty(dt, &[4, 6]);
            let b = ty(dt, &[6]);
            let s = pick(&Op::Where, &[Some(&c), Some(&a), Some(&b)], &[], &a, &caps).unwrap();
            check(&s);
            for to in dts {
                let op = Op::Cast { to, saturate: true };
                let out = ty(to, &[4, 6]);
                let s = pick(&op, &[Some(&a)], &[], &out, &caps).unwrap();
                check(&s);
            }
        }
        // Identity and Dropout copy their first operand only.
        let b = ty(DType::Bool, &[4, 6]);
        let r = ty(DType::F32, &[]);
        check(&pick(&Op::Identity, &[Some(&b)], &[], &b, &caps).unwrap());
        let s = pick(&Op::Dropout, &[Some(&b), Some(&r)], &[], &b, &caps).unwrap();
        assert_eq!(s.bound_inputs(), vec![0]);
        // No f16 on WebGPU, no f64 anywhere.
        let f = ty(DType::F32, &[4]);
        let h = ty(DType::F16, &[4]);
        let d = ty(DType::F64, &[4]);
        let web = DeviceCaps::webgpu();
        assert!(pick(
            &Op::Cast {
                to: DType::F16,
                saturate: true
            },
            &[Some(&f)],
            &[],
            &h,
            &web
        )
        .is_none());
        assert!(pick(
            &Op::Cast {
                to: DType::F64,
                saturate: true
            },
            &[Some(&f)],
            &[],
            &d,
            &caps
        )
        .is_none());
        // Where needs a bool condition and equal branch types.
        let i = ty(DType::I32, &[4]);
        assert!(pick(&Op::Where, &[Some(&f), Some(&f), Some(&f)], &[], &f, &caps).is_none());
        assert!(pick(&Op::Where, &[Some(&c), Some(&f), Some(&i)], &[], &f, &caps).is_none());
    }

    #[test]
    fn clip_bakes_constant_bounds_and_binds_the_others() {
        let caps = DeviceCaps::webgpu();
        let x = ty(DType::F32, &[10]);
        let s = ty(DType::F32, &[]);
        let lo = Tensor::scalar(-1.5f32);
        let empty = Tensor::from_vec::<f32>(vec![0], vec![]).unwrap();
        let wide = Tensor::from_vec(vec![2], vec![0f32, 1.0]).unwrap();
        // Both constant: one bound input.
        let spec = pick(
            &Op::Clip,
            &[Some(&x), Some(&s), Some(&s)],
            &[None, Some(&lo), Some(&lo)],
            &x,
            &caps,
        )
        .unwrap();
        assert_eq!(spec.bound_inputs(), vec![0]);
        assert_eq!(spec.clip, [Some(Float(-1.5)), Some(Float(-1.5))]);
        assert!(check(&spec).wgsl.contains("let min = -1.5;"));
        // Max only, as a run-time operand.
        let spec = pick(&Op::Clip, &[Some(&x), None, Some(&s)], &[], &x, &caps).unwrap();
        assert_eq!(spec.bound_inputs(), vec![0, 2]);
        let k = check(&spec);
        assert!(
            k.wgsl.contains("let max = a1;") && !k.wgsl.contains("let min"),
            "{}",
            k.wgsl
        );
        // An empty constant is no bound; a non-scalar one is refused.
        let spec = pick(
            &Op::Clip,
            &[Some(&x), Some(&s)],
            &[None, Some(&empty)],
            &x,
            &caps,
        )
        .unwrap();
        assert_eq!(spec.clip, [None, None]);
        check(&spec);
        let w = ty(DType::F32, &[2]);
        assert!(pick(
            &Op::Clip,
            &[Some(&x), Some(&w)],
            &[None, Some(&wide)],
            &x,
            &caps
        )
        .is_none());
        assert!(pick(&Op::Clip, &[Some(&x), Some(&w)], &[], &x, &caps).is_none());
    }

    #[test]
    fn fused_programs_broadcast_their_operands() {
        let caps = DeviceCaps::webgpu();
        let p = Program {
            inputs: 3,
            instrs: vec![
                Instr::Binary(BinaryFn::Mul, 0, 1),
                Instr::Binary(BinaryFn::Add, 3, 2),
                Instr::Unary(UnaryFn::Gelu(GeluApprox::Tanh), 4),
            ],
        };
        let op = Op::Elementwise { program: p };
        let x = ty(DType::F32, &[2, 8]);
        let g = ty(DType::F32, &[8]);
        let s = pick(&op, &[Some(&x), Some(&g), Some(&g)], &[], &x, &caps).unwrap();
        let k = check(&s);
        assert!(
            k.wgsl.contains("kiln_gelu_tanh") && k.wgsl.contains("fn kiln_tanh"),
            "{}",
            k.wgsl
        );
        // Only f32 operands.
        let h = ty(DType::I32, &[8]);
        assert!(pick(&op, &[Some(&x), Some(&h), Some(&g)], &[], &x, &caps).is_none());
        // The operand count must match the program.
        assert!(pick(&op, &[Some(&x), Some(&g)], &[], &x, &caps).is_none());
    }

    #[test]
    fn kernels_carry_only_the_functions_they_call() {
        let caps = DeviceCaps::webgpu();
        let t = ty(DType::F32, &[4]);
        let k = check(&pick(&Op::Add, &[Some(&t), Some(&t)], &[], &t, &caps).unwrap());
        assert!(
            !k.wgsl.contains("fn ew_") && !k.wgsl.contains("fn kiln_"),
            "{}",
            k.wgsl
        );
        let k = check(&pick(&Op::Mish, &[Some(&t)], &[], &t, &caps).unwrap());
        for f in [
            "fn ew_tanh",
            "fn ew_expm1",
            "fn ew_softplus",
            "fn ew_log1p",
            "fn ew_log",
            "fn ew_nan",
        ] {
            assert!(k.wgsl.contains(f), "{f}");
        }
        assert!(!k.wgsl.contains("fn kiln_erf") && !k.wgsl.contains("fn ew_f16"));
    }

    #[test]
    fn launch_fills_dims_and_strides() {
        let caps = DeviceCaps::webgpu();
        let a = ty(DType::F32, &[2, 3, 4]);
        let b = ty(DType::F32, &[3, 1]);
        let s = pick(&Op::Add, &[Some(&a), Some(&b)], &[], &a, &caps).unwrap();
        let sched = Schedule::default_for(Family::Elementwise, &caps);
        let l = s
            .launch(&[Some(&[2, 3, 4]), Some(&[3, 1])], &[&[2, 3, 4]], &sched)
            .unwrap();
        // n, dims, then operand 1's strides (operand 0 has the output's shape).
        assert_eq!(l.params, vec![24, 2, 3, 4, 0, 1, 0]);
        assert_eq!(l.workgroups, [1, 1, 1]);
        // A wrong rank or a shape that does not broadcast is an error.
        assert!(s
            .launch(&[Some(&[6, 4]), Some(&[3, 1])], &[&[6, 4]], &sched)
            .is_err());
        let e = s
            .launch(&[Some(&[2, 3, 4]), Some(&[2, 1])], &[&[2, 3, 4]], &sched)
            .unwrap_err()
            .to_string();
        assert!(e.contains("does not broadcast"), "{e}");
        // Bool results: one invocation per word of four.
        let t = ty(DType::F32, &[1030]);
        let bt = ty(DType::Bool, &[1030]);
        let s = pick(&Op::Less, &[Some(&t), Some(&t)], &[], &bt, &caps).unwrap();
        let l = s
            .launch(&[Some(&[1030]), Some(&[1030])], &[&[1030]], &sched)
            .unwrap();
        assert_eq!(l.params, vec![1030]);
        assert_eq!(l.workgroups, [2, 1, 1]);
        // Large tensors spread over y.
        let big = 256 * 70_000;
        let s = pick(&Op::Neg, &[Some(&t)], &[], &t, &caps).unwrap();
        let l = s.launch(&[Some(&[big])], &[&[big]], &sched).unwrap();
        assert_eq!(l.workgroups, linear_grid(70_000));
    }

    #[test]
    fn any_workgroup_shape_is_accepted() {
        let caps = DeviceCaps::webgpu();
        let t = ty(DType::F32, &[4, 4]);
        let s = pick(&Op::Relu, &[Some(&t)], &[], &t, &caps).unwrap();
        let sched = Schedule {
            workgroup: [8, 4, 2],
            tile: [1, 1, 1],
            vector: 4,
        };
        let k = s.emit(&sched).unwrap();
        validate(&k).unwrap();
        assert!(k.wgsl.contains("@workgroup_size(8, 4, 2)") && k.wgsl.contains("wg * 64u + lid"));
    }

    #[test]
    fn library_splits_into_functions() {
        let fns = lib_functions(LIB);
        assert!(fns.len() > 20);
        assert!(fns.iter().all(|f| f.text.trim_end().ends_with('}')));
        assert!(calls("a + ew_log(x)", "ew_log") && !calls("ew_log1p(x)", "ew_log"));
        assert!(!calls("kiln_ew_log(x)", "ew_log"));
    }
}
