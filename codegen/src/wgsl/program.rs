//! A fused scalar [`Program`] as WGSL statements, and the math prelude its
//! functions come from (`templates/wgsl/math.wgsl`).
//!
//! Used by the fused elementwise kernel and by the matmul epilogue, so a
//! program means the same on every kernel that carries one.

use kiln_ir::fused::{BinaryFn, Instr, Program, UnaryFn};
use kiln_ir::GeluApprox;

/// The scalar functions (`kiln_erf`, `kiln_exp`, `kiln_gelu_*`, …) that
/// [`statements`] calls; prepend it to any kernel that carries a program.
pub const MATH: &str = include_str!("../../templates/wgsl/math.wgsl");

/// A WGSL `f32` literal that round-trips `v` exactly (NaN and infinities
/// built from their bits, which WGSL has no literal for).
pub fn f32_literal(v: f32) -> String {
    if v.is_finite() {
        // `{:?}` prints the shortest decimal that parses back to the same f32.
        let s = format!("{v:?}");
        if s.contains(['.', 'e', 'E']) {
            s
        } else {
            format!("{s}.0")
        }
    } else {
        format!("bitcast<f32>({}u)", v.to_bits())
    }
}

/// WGSL statements evaluating `program`: register `i < program.inputs` is
/// `inputs[i]` (any f32 expression), each instruction defines
/// `let {prefix}{n}`, and the returned expression names the result.
pub fn statements(program: &Program, inputs: &[String], prefix: &str) -> (String, String) {
    let n_in = program.inputs as usize;
    let reg = |r: u8| -> String {
        let r = r as usize;
        if r < n_in {
            inputs[r].clone()
        } else {
            format!("{prefix}{}", r - n_in)
        }
    };
    let mut body = String::new();
    for (i, ins) in program.instrs.iter().enumerate() {
        let expr = match *ins {
            Instr::Const(c) => f32_literal(c.0),
            Instr::Unary(f, a) => unary(f, &reg(a)),
            Instr::Binary(f, a, b) => binary(f, &reg(a), &reg(b)),
        };
        body.push_str(&format!("    let {prefix}{i} = {expr};\n"));
    }
    let result = if program.instrs.is_empty() {
        reg(0)
    } else {
        format!("{prefix}{}", program.instrs.len() - 1)
    };
    (body, result)
}

/// `f(x)` in WGSL.
pub fn unary(f: UnaryFn, x: &str) -> String {
    match f {
        UnaryFn::Neg => format!("(-{x})"),
        UnaryFn::Abs => format!("abs({x})"),
        UnaryFn::Exp => format!("kiln_exp({x})"),
        UnaryFn::Log => format!("log({x})"),
        UnaryFn::Sqrt => format!("sqrt({x})"),
        UnaryFn::Reciprocal => format!("(1.0 / {x})"),
        UnaryFn::Tanh => format!("kiln_tanh({x})"),
        UnaryFn::Sigmoid => format!("kiln_sigmoid({x})"),
        UnaryFn::Relu => format!("kiln_relu({x})"),
        UnaryFn::Erf => format!("kiln_erf({x})"),
        UnaryFn::Gelu(GeluApprox::None) => format!("kiln_gelu_erf({x})"),
        UnaryFn::Gelu(GeluApprox::Tanh) => format!("kiln_gelu_tanh({x})"),
        UnaryFn::Swish(a) => format!("({x} * kiln_sigmoid({} * {x}))", f32_literal(a.0)),
    }
}

/// `f(x, y)` in WGSL.
pub fn binary(f: BinaryFn, x: &str, y: &str) -> String {
    match f {
        BinaryFn::Add => format!("({x} + {y})"),
        BinaryFn::Sub => format!("({x} - {y})"),
        BinaryFn::Mul => format!("({x} * {y})"),
        BinaryFn::Div => format!("({x} / {y})"),
        BinaryFn::Pow => format!("kiln_pow({x}, {y})"),
        BinaryFn::Max => format!("kiln_max({x}, {y})"),
        BinaryFn::Min => format!("kiln_min({x}, {y})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Kernel;
    use kiln_ir::Float;

    #[test]
    fn literals_round_trip() {
        for v in [0.0f32, 1.0, -2.5, 1e-30, 3.4e38, 0.1, f32::MIN_POSITIVE] {
            let s = f32_literal(v);
            assert_eq!(s.parse::<f32>().unwrap().to_bits(), v.to_bits(), "{s}");
        }
        assert_eq!(f32_literal(f32::INFINITY), "bitcast<f32>(2139095040u)");
    }

    #[test]
    fn every_function_validates() {
        // One program using every unary and binary function, compiled by naga.
        let mut instrs = vec![Instr::Const(Float(0.5))];
        let unaries = [
            UnaryFn::Neg,
            UnaryFn::Abs,
            UnaryFn::Exp,
            UnaryFn::Log,
            UnaryFn::Sqrt,
            UnaryFn::Reciprocal,
            UnaryFn::Tanh,
            UnaryFn::Sigmoid,
            UnaryFn::Relu,
            UnaryFn::Erf,
            UnaryFn::Gelu(GeluApprox::None),
            UnaryFn::Gelu(GeluApprox::Tanh),
            UnaryFn::Swish(Float(1.702)),
        ];
        for f in unaries {
            instrs.push(Instr::Unary(f, 0));
        }
        for f in [
            BinaryFn::Add,
            BinaryFn::Sub,
            BinaryFn::Mul,
            BinaryFn::Div,
            BinaryFn::Pow,
            BinaryFn::Max,
            BinaryFn::Min,
        ] {
            let last = instrs.len() as u8; // registers: 1 input + instructions
            instrs.push(Instr::Binary(f, last, 1));
        }
        let p = Program { inputs: 2, instrs };
        let (body, result) = statements(&p, &["a[i]".into(), "b[i]".into()], "r");
        let src = format!(
            "{MATH}\n@group(0) @binding(0) var<storage, read> a: array<f32>;\n\
             @group(0) @binding(1) var<storage, read> b: array<f32>;\n\
             @group(0) @binding(2) var<storage, read_write> y: array<f32>;\n\
             @group(0) @binding(3) var<storage, read> params: array<u32>;\n\
             @compute @workgroup_size(64)\nfn main(@builtin(global_invocation_id) gid: vec3<u32>) {{\n\
             let i = gid.x;\n if (i >= params[0]) {{ return; }}\n{body}    y[i] = {result};\n}}\n"
        );
        crate::validate::validate(&Kernel::new("program", src, 2, 1, 0)).unwrap();
    }
}
