//! Fused elementwise programs: the attribute of [`crate::Op::Elementwise`]
//! and the epilogue of [`crate::Op::FusedMatMul`].
//!
//! A [`Program`] is a straight-line list of scalar instructions over a
//! register file. Registers `0 .. inputs` hold the inputs; instruction `i`
//! defines register `inputs + i`; the result is the last register. Operands
//! name earlier registers only, so a program is its own topological order
//! and needs no control flow.
//!
//! The scalar functions here ([`erf_f32`], [`exp_f32`], [`sigmoid_f32`],
//! the Gelu forms) are the formulas the CPU runtime's primitive elementwise
//! kernels use, written branch-free so that a loop over them vectorises: a
//! fused kernel built on them computes the same numbers as the unfused graph.
//! [`Program::eval`] is the scalar reference, and
//! [`reference_elementwise`] / [`reference_fused_matmul`] are naive
//! references of the two ops for tests.

use crate::{Float, GeluApprox};
use serde::{Deserialize, Serialize};

/// Most registers a program may use (register numbers are `u8`).
pub const MAX_REGISTERS: usize = 255;

/// A one-operand scalar function.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum UnaryFn {
    /// -x
    Neg,
    /// |x|
    Abs,
    /// e^x (as [`exp_f32`])
    Exp,
    /// ln x
    Log,
    /// √x
    Sqrt,
    /// 1/x
    Reciprocal,
    /// tanh x
    Tanh,
    /// 1 / (1 + e^-x)
    Sigmoid,
    /// max(x, 0), NaN kept
    Relu,
    /// erf x (as [`erf_f32`])
    Erf,
    /// Gaussian error linear unit, exact or tanh form.
    Gelu(GeluApprox),
    /// x · sigmoid(alpha · x)
    Swish(Float),
}

/// A two-operand scalar function.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum BinaryFn {
    /// a + b
    Add,
    /// a - b
    Sub,
    /// a · b
    Mul,
    /// a / b
    Div,
    /// a^b (a · a when b is exactly 2, as the runtime's Pow)
    Pow,
    /// Maximum; NaN if either operand is NaN.
    Max,
    /// Minimum; NaN if either operand is NaN.
    Min,
}

/// One instruction; it defines the next register.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Instr {
    /// A constant.
    Const(Float),
    /// f(register).
    Unary(UnaryFn, u8),
    /// f(register, register).
    Binary(BinaryFn, u8, u8),
}

impl Instr {
    /// The registers the instruction reads.
    pub fn operands(&self) -> Vec<u8> {
        match *self {
            Instr::Const(_) => vec![],
            Instr::Unary(_, a) => vec![a],
            Instr::Binary(_, a, b) => vec![a, b],
        }
    }

    /// The same instruction with every operand register mapped by `f`.
    fn map_operands(&self, f: impl Fn(u8) -> u8) -> Instr {
        match *self {
            Instr::Const(c) => Instr::Const(c),
            Instr::Unary(u, a) => Instr::Unary(u, f(a)),
            Instr::Binary(b, x, y) => Instr::Binary(b, f(x), f(y)),
        }
    }
}

/// A straight-line scalar program over `inputs` inputs (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Program {
    /// Number of inputs (registers `0 .. inputs`).
    pub inputs: u8,
    /// Instructions; instruction `i` defines register `inputs + i`.
    pub instrs: Vec<Instr>,
}

impl Program {
    /// `y = x`: one input, no instructions (a plain matmul as an epilogue).
    pub fn identity() -> Program {
        Program {
            inputs: 1,
            instrs: vec![],
        }
    }

    /// `y = f(x)`.
    pub fn unary(f: UnaryFn) -> Program {
        Program {
            inputs: 1,
            instrs: vec![Instr::Unary(f, 0)],
        }
    }

    /// `y = f(a, b)`.
    pub fn binary(f: BinaryFn) -> Program {
        Program {
            inputs: 2,
            instrs: vec![Instr::Binary(f, 0, 1)],
        }
    }

    /// Number of instructions.
    pub fn len(&self) -> usize {
        self.instrs.len()
    }

    /// Whether the program has no instructions (it is the identity when valid).
    pub fn is_empty(&self) -> bool {
        self.instrs.is_empty()
    }

    /// Whether this is [`Program::identity`].
    pub fn is_identity(&self) -> bool {
        self.inputs == 1 && self.instrs.is_empty()
    }

    /// Number of registers: inputs plus instructions.
    pub fn num_registers(&self) -> usize {
        self.inputs as usize + self.instrs.len()
    }

    /// The register holding the result: the last one.
    pub fn result(&self) -> u8 {
        self.num_registers().saturating_sub(1) as u8
    }

    /// Checks the register rules: at least one register, at most
    /// [`MAX_REGISTERS`], operands naming earlier registers, and exactly one
    /// input when there are no instructions (the identity).
    pub fn validate(&self) -> Result<(), String> {
        let n = self.num_registers();
        if n == 0 {
            return Err("program has no inputs and no instructions".into());
        }
        if n > MAX_REGISTERS {
            return Err(format!(
                "program uses {n} registers ({} inputs + {} instructions), at most {MAX_REGISTERS} allowed",
                self.inputs,
                self.instrs.len()
            ));
        }
        if self.instrs.is_empty() && self.inputs != 1 {
            return Err(format!(
                "program without instructions must have exactly 1 input (the identity), has {}",
                self.inputs
            ));
        }
        for (i, ins) in self.instrs.iter().enumerate() {
            let reg = self.inputs as usize + i;
            if let Some(bad) = ins.operands().into_iter().find(|&r| r as usize >= reg) {
                return Err(format!(
                    "instruction {i} ({ins:?}, defining r{reg}) reads r{bad}, which is not defined before it"
                ));
            }
        }
        Ok(())
    }

    /// The scalar reference: runs the program on one element per input.
    ///
    /// # Panics
    /// When `inputs.len() != self.inputs` or the program is invalid
    /// (call [`Program::validate`] on untrusted programs first).
    pub fn eval(&self, inputs: &[f32]) -> f32 {
        assert_eq!(
            inputs.len(),
            self.inputs as usize,
            "program expects {} inputs",
            self.inputs
        );
        let mut regs = Vec::with_capacity(self.num_registers());
        regs.extend_from_slice(inputs);
        for ins in &self.instrs {
            let v = match *ins {
                Instr::Const(c) => c.0,
                Instr::Unary(f, a) => f.apply(regs[a as usize]),
                Instr::Binary(f, a, b) => f.apply(regs[a as usize], regs[b as usize]),
            };
            regs.push(v);
        }
        regs[self.result() as usize]
    }

    /// Maps input `i` to input `map[i]` of a program with `new_inputs`
    /// inputs; instructions keep their order.
    pub fn remap_inputs(&self, map: &[usize], new_inputs: usize) -> Program {
        let old = self.inputs as usize;
        let reg = |r: u8| -> u8 {
            let r = r as usize;
            if r < old {
                map[r] as u8
            } else {
                (r - old + new_inputs) as u8
            }
        };
        Program {
            inputs: new_inputs as u8,
            instrs: self.instrs.iter().map(|i| i.map_operands(reg)).collect(),
        }
    }

    /// Substitutes `inner` for input `arg` of `self`: the result computes
    /// `self(x_0, .., inner(z_0, ..), .., x_{n-1})`.
    ///
    /// Input order of the result: `self`'s inputs without `arg`, in order,
    /// then `inner`'s inputs, in order. Registers: those inputs, then
    /// `inner`'s instructions, then `self`'s. Both programs must be valid;
    /// the result may exceed [`MAX_REGISTERS`] (check with
    /// [`Program::validate`]).
    ///
    /// # Panics
    /// When `arg >= self.inputs`.
    pub fn compose(&self, arg: usize, inner: &Program) -> Program {
        let outer_in = self.inputs as usize;
        assert!(
            arg < outer_in,
            "compose: input {arg} of a program with {outer_in} inputs"
        );
        let inner_in = inner.inputs as usize;
        let n_new = outer_in - 1 + inner_in;
        // Inner registers: its inputs follow the outer ones, its instructions the new inputs.
        let inner_reg = |r: u8| -> usize {
            let r = r as usize;
            if r < inner_in {
                outer_in - 1 + r
            } else {
                n_new + (r - inner_in)
            }
        };
        let inner_result = inner_reg(inner.result());
        let outer_base = n_new + inner.instrs.len();
        let outer_reg = |r: u8| -> usize {
            let r = r as usize;
            match r.cmp(&arg) {
                _ if r >= outer_in => outer_base + (r - outer_in),
                std::cmp::Ordering::Less => r,
                std::cmp::Ordering::Equal => inner_result,
                std::cmp::Ordering::Greater => r - 1,
            }
        };
        let mut instrs: Vec<Instr> = inner
            .instrs
            .iter()
            .map(|i| i.map_operands(|r| inner_reg(r) as u8))
            .collect();
        instrs.extend(
            self.instrs
                .iter()
                .map(|i| i.map_operands(|r| outer_reg(r) as u8)),
        );
        Program {
            inputs: n_new as u8,
            instrs,
        }
    }

    /// Merges the inputs listed in `same` (bound to the same value) into the
    /// smallest of them.
    ///
    /// Input order of the result: `self`'s inputs with the others of `same`
    /// removed, the rest in their order.
    ///
    /// # Panics
    /// When an index in `same` is not an input.
    pub fn merge_duplicate_inputs(&self, same: &[usize]) -> Program {
        let n = self.inputs as usize;
        assert!(
            same.iter().all(|&i| i < n),
            "merge_duplicate_inputs: {same:?} names an input beyond {n}"
        );
        let Some(&keep) = same.iter().min() else {
            return self.clone();
        };
        let ids: Vec<usize> = (0..n)
            .map(|i| if same.contains(&i) { keep } else { i })
            .collect();
        self.dedup_inputs(&ids).0
    }

    /// Merges inputs bound to equal values: `ids[i]` is what input `i` is
    /// bound to. Returns the program and its inputs' bindings: the distinct
    /// ids in order of first occurrence.
    ///
    /// # Panics
    /// When `ids.len() != self.inputs`.
    pub fn dedup_inputs<T: Eq + Clone>(&self, ids: &[T]) -> (Program, Vec<T>) {
        assert_eq!(
            ids.len(),
            self.inputs as usize,
            "dedup_inputs: one id per input"
        );
        let mut distinct: Vec<T> = Vec::new();
        let map: Vec<usize> = ids
            .iter()
            .map(|id| match distinct.iter().position(|d| d == id) {
                Some(p) => p,
                None => {
                    distinct.push(id.clone());
                    distinct.len() - 1
                }
            })
            .collect();
        (self.remap_inputs(&map, distinct.len()), distinct)
    }
}

// ---------------------------------------------------------------------------
// Scalar functions, shared with the runtime's kernels.

/// erf for f32: a rational approximation (as used by Eigen/XLA) accurate to a
/// few ulp, written without branches so the loop vectorises.
#[inline(always)]
pub fn erf_f32(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = -2.726_142_3e-10_f32;
    p = p * x2 + 2.770_681_4e-8;
    p = p * x2 + -2.101_024e-6;
    p = p * x2 + -5.692_506_4e-5;
    p = p * x2 + -7.349_906e-4;
    p = p * x2 + -2.954_600_1e-3;
    p = p * x2 + -1.609_603_3e-2;
    let mut q = -1.456_607_2e-5_f32;
    q = q * x2 + -2.133_740_6e-4;
    q = q * x2 + -1.682_827e-3;
    q = q * x2 + -7.373_329_3e-3;
    q = q * x2 + -1.426_474e-2;
    x * p / q
}

/// e^x for f32 without a libm call, so loops over it vectorise (about 1 ulp).
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    // exp(x) = 2^k · exp(r), r = x - k·ln2, |r| ≤ ln2/2; exp(r) by a degree-6 polynomial.
    let x = x.clamp(-104.0, 88.7);
    // Round to nearest with the 1.5·2^23 trick: `f32::round` is a libm call on baseline x86-64.
    const MAGIC: f32 = 12_582_912.0;
    let k = (x * std::f32::consts::LOG2_E + MAGIC) - MAGIC;
    let r = k * -0.693_145_75 + x;
    let r = k * -1.428_606_8e-6 + r;
    let mut p = 1.0 / 720.0_f32;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * r + 1.0;
    p = p * r + 1.0;
    // Split the scaling in two so k down to -150 still produces subnormals and zeros.
    let k = k as i32;
    let k1 = k / 2;
    let k2 = k - k1;
    let s1 = f32::from_bits(((k1 + 127) as u32) << 23);
    let s2 = f32::from_bits(((k2 + 127) as u32) << 23);
    p * s1 * s2
}

/// 1 / (1 + e^-x); [`exp_f32`] saturates instead of overflowing, so this one
/// branch-free form is stable on both sides.
#[inline(always)]
pub fn sigmoid_f32(x: f32) -> f32 {
    1.0 / (1.0 + exp_f32(-x))
}

/// Exact Gelu: x/2 · (1 + erf(x/√2)).
#[inline(always)]
pub fn gelu_erf_f32(x: f32) -> f32 {
    0.5 * x * (1.0 + erf_f32(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// Tanh-approximated Gelu: x/2 · (1 + tanh(√(2/π) · (x + 0.044715 x³))).
#[inline(always)]
pub fn gelu_tanh_f32(x: f32) -> f32 {
    0.5 * x * (1.0 + (0.797_884_6 * (x + 0.044715 * x * x * x)).tanh())
}

/// x^y as the runtime's Pow computes it: a multiply for y = 2 (exact, where
/// `powf` is a library call), `powf` otherwise.
#[inline(always)]
pub fn pow_f32(x: f32, y: f32) -> f32 {
    if y == 2.0 {
        x * x
    } else {
        x.powf(y)
    }
}

impl UnaryFn {
    /// f(x), with the runtime's formulas.
    #[inline(always)]
    pub fn apply(self, x: f32) -> f32 {
        match self {
            UnaryFn::Neg => -x,
            UnaryFn::Abs => x.abs(),
            UnaryFn::Exp => exp_f32(x),
            UnaryFn::Log => x.ln(),
            UnaryFn::Sqrt => x.sqrt(),
            UnaryFn::Reciprocal => 1.0 / x,
            UnaryFn::Tanh => x.tanh(),
            UnaryFn::Sigmoid => sigmoid_f32(x),
            UnaryFn::Relu => relu_f32(x),
            UnaryFn::Erf => erf_f32(x),
            UnaryFn::Gelu(GeluApprox::None) => gelu_erf_f32(x),
            UnaryFn::Gelu(GeluApprox::Tanh) => gelu_tanh_f32(x),
            UnaryFn::Swish(a) => x * sigmoid_f32(a.0 * x),
        }
    }
}

/// max(x, 0), keeping NaN.
#[inline(always)]
pub fn relu_f32(x: f32) -> f32 {
    if x > 0.0 || x.is_nan() {
        x
    } else {
        0.0
    }
}

/// Maximum that propagates NaN (numpy's `maximum`).
#[inline(always)]
pub fn max_f32(x: f32, y: f32) -> f32 {
    if x.is_nan() || y.is_nan() {
        f32::NAN
    } else {
        x.max(y)
    }
}

/// Minimum that propagates NaN (numpy's `minimum`).
#[inline(always)]
pub fn min_f32(x: f32, y: f32) -> f32 {
    if x.is_nan() || y.is_nan() {
        f32::NAN
    } else {
        x.min(y)
    }
}

impl BinaryFn {
    /// f(x, y), with the runtime's formulas.
    #[inline(always)]
    pub fn apply(self, x: f32, y: f32) -> f32 {
        match self {
            BinaryFn::Add => x + y,
            BinaryFn::Sub => x - y,
            BinaryFn::Mul => x * y,
            BinaryFn::Div => x / y,
            BinaryFn::Pow => pow_f32(x, y),
            BinaryFn::Max => max_f32(x, y),
            BinaryFn::Min => min_f32(x, y),
        }
    }
}

// ---------------------------------------------------------------------------
// Naive references of the two ops.

/// The numpy broadcast of several shapes.
fn broadcast(shapes: &[&[usize]]) -> Result<Vec<usize>, String> {
    let rank = shapes.iter().map(|s| s.len()).max().unwrap_or(0);
    let mut out = vec![1usize; rank];
    for s in shapes {
        for (i, &d) in s.iter().enumerate() {
            let o = &mut out[rank - s.len() + i];
            if *o == 1 {
                *o = d;
            } else if d != 1 && d != *o {
                return Err(format!("shapes {shapes:?} do not broadcast"));
            }
        }
    }
    Ok(out)
}

/// Index into a row-major tensor of shape `shape` of the element that
/// broadcasts to multi-index `idx` of a (right-aligned) larger shape.
fn broadcast_index(shape: &[usize], idx: &[usize]) -> usize {
    let off = idx.len() - shape.len();
    shape.iter().enumerate().fold(0, |acc, (i, &d)| {
        acc * d + if d == 1 { 0 } else { idx[off + i] }
    })
}

/// Row-major multi-index of flat index `flat` in `shape`.
fn unravel(mut flat: usize, shape: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; shape.len()];
    for d in (0..shape.len()).rev() {
        idx[d] = flat % shape[d];
        flat /= shape[d];
    }
    idx
}

fn check_len(what: &str, data: &[f32], shape: &[usize]) -> Result<(), String> {
    let n: usize = shape.iter().product();
    if data.len() != n {
        return Err(format!(
            "{what} has {} values but shape {shape:?} needs {n}",
            data.len()
        ));
    }
    Ok(())
}

/// Naive `Elementwise`: broadcasts the inputs (data, shape) and runs
/// [`Program::eval`] per element. Returns the values and their shape.
pub fn reference_elementwise(
    program: &Program,
    inputs: &[(&[f32], &[usize])],
) -> Result<(Vec<f32>, Vec<usize>), String> {
    program.validate()?;
    if inputs.len() != program.inputs as usize {
        return Err(format!(
            "program has {} inputs, got {}",
            program.inputs,
            inputs.len()
        ));
    }
    for (i, (d, s)) in inputs.iter().enumerate() {
        check_len(&format!("input {i}"), d, s)?;
    }
    let shapes: Vec<&[usize]> = inputs.iter().map(|x| x.1).collect();
    let out_shape = broadcast(&shapes)?;
    let n: usize = out_shape.iter().product();
    let mut args = vec![0f32; inputs.len()];
    let out = (0..n)
        .map(|f| {
            let idx = unravel(f, &out_shape);
            for (a, (d, s)) in args.iter_mut().zip(inputs) {
                *a = d[broadcast_index(s, &idx)];
            }
            program.eval(&args)
        })
        .collect();
    Ok((out, out_shape))
}

/// One operand of [`reference_fused_matmul`]: row-major values and shape.
pub type RefOperand<'a> = (&'a [f32], &'a [usize]);

/// Naive `FusedMatMul`: `epilogue(op(A) · op(B), E1, ..)` with numpy matmul
/// semantics (1-d promotion, batch broadcasting), products accumulated in
/// f64 and rounded to f32 before the epilogue. Each `Ei` must broadcast to
/// the product's shape. Returns the values and their shape.
pub fn reference_fused_matmul(
    a: RefOperand,
    trans_a: bool,
    b: RefOperand,
    trans_b: bool,
    epilogue: &Program,
    extras: &[RefOperand],
) -> Result<(Vec<f32>, Vec<usize>), String> {
    epilogue.validate()?;
    if extras.len() + 1 != epilogue.inputs as usize {
        return Err(format!(
            "epilogue has {} inputs, so {} extra operands are needed, got {}",
            epilogue.inputs,
            epilogue.inputs as usize - 1,
            extras.len()
        ));
    }
    check_len("A", a.0, a.1)?;
    check_len("B", b.0, b.1)?;
    if a.1.is_empty() || b.1.is_empty() {
        return Err("operands must have rank at least 1".into());
    }
    if (trans_a && a.1.len() < 2) || (trans_b && b.1.len() < 2) {
        return Err("a transposed operand must have rank at least 2".into());
    }
    // Logical (possibly transposed) 2-d views: element (i, j) of batch offset `base`.
    let view =
        |s: &[usize], vec_is_row: bool, t: bool| -> (Vec<usize>, usize, usize, usize, usize) {
            if s.len() == 1 {
                return if vec_is_row {
                    (vec![], 1, s[0], 0, 1)
                } else {
                    (vec![], s[0], 1, 1, 0)
                };
            }
            let r = s.len();
            let (rows, cols) = (s[r - 2], s[r - 1]);
            if t {
                (s[..r - 2].to_vec(), cols, rows, 1, cols)
            } else {
                (s[..r - 2].to_vec(), rows, cols, cols, 1)
            }
        };
    // (batch, rows, cols, row stride, col stride)
    let (ab, m, ka, ars, acs) = view(a.1, true, trans_a);
    let (bb, kb, n, brs, bcs) = view(b.1, false, trans_b);
    if ka != kb {
        return Err(format!(
            "inner dimensions differ: A {:?} (trans_a={trans_a}) × B {:?} (trans_b={trans_b})",
            a.1, b.1
        ));
    }
    let batch = broadcast(&[&ab, &bb])?;
    let mut out_shape = batch.clone();
    if a.1.len() > 1 {
        out_shape.push(m);
    }
    if b.1.len() > 1 {
        out_shape.push(n);
    }
    let nb: usize = batch.iter().product();
    let (amat, bmat) = (m * ka, kb * n);
    let mut acc = Vec::with_capacity(nb * m * n);
    for bi in 0..nb {
        let idx = unravel(bi, &batch);
        let (ao, bo) = (
            broadcast_index(&ab, &idx) * amat,
            broadcast_index(&bb, &idx) * bmat,
        );
        for i in 0..m {
            for j in 0..n {
                let mut s = 0f64;
                for p in 0..ka {
                    s += f64::from(a.0[ao + i * ars + p * acs])
                        * f64::from(b.0[bo + p * brs + j * bcs]);
                }
                acc.push(s as f32);
            }
        }
    }
    let mut inputs: Vec<RefOperand> = vec![(&acc, &out_shape)];
    for (i, e) in extras.iter().enumerate() {
        check_len(&format!("E{}", i + 1), e.0, e.1)?;
        if broadcast(&[e.1, &out_shape])? != out_shape {
            return Err(format!(
                "E{} of shape {:?} does not broadcast to the product's shape {out_shape:?}",
                i + 1,
                e.1
            ));
        }
        inputs.push(*e);
    }
    reference_elementwise(epilogue, &inputs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn unary_fns() -> Vec<UnaryFn> {
        vec![
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
        ]
    }

    const BINARY: [BinaryFn; 7] = [
        BinaryFn::Add,
        BinaryFn::Sub,
        BinaryFn::Mul,
        BinaryFn::Div,
        BinaryFn::Pow,
        BinaryFn::Max,
        BinaryFn::Min,
    ];

    /// A valid random program: `inputs` inputs and `len` instructions from `choices`.
    fn program(inputs: u8, choices: &[(u8, u8, u8, u8)]) -> Program {
        let mut instrs = Vec::new();
        for (i, &(kind, f, x, y)) in choices.iter().enumerate() {
            let regs = inputs as usize + i;
            let (x, y) = ((x as usize % regs) as u8, (y as usize % regs) as u8);
            instrs.push(match kind % 5 {
                0 => Instr::Const(Float(f as f32 / 16.0 - 4.0)),
                1 | 2 => {
                    let u = unary_fns();
                    Instr::Unary(u[f as usize % u.len()], x)
                }
                _ => Instr::Binary(BINARY[f as usize % BINARY.len()], x, y),
            });
        }
        if instrs.is_empty() && inputs != 1 {
            instrs.push(Instr::Binary(BinaryFn::Add, 0, inputs - 1));
        }
        Program { inputs, instrs }
    }

    fn same(a: f32, b: f32) -> bool {
        a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
    }

    fn arb_program(max_inputs: u8) -> impl Strategy<Value = Program> {
        (
            1..=max_inputs,
            prop::collection::vec(any::<(u8, u8, u8, u8)>(), 0..12),
        )
            .prop_map(|(n, c)| program(n, &c))
    }

    proptest! {
        #[test]
        fn random_programs_validate(p in arb_program(4)) {
            prop_assert_eq!(p.validate(), Ok(()));
        }

        /// compose(arg, inner) evaluates like the outer program fed with the inner one's result.
        #[test]
        fn compose_matches_nested_eval(
            outer in arb_program(4),
            inner in arb_program(3),
            arg in any::<usize>(),
            xs in prop::collection::vec(-3.0f32..3.0, 8),
        ) {
            let arg = arg % outer.inputs as usize;
            let c = outer.compose(arg, &inner);
            prop_assert_eq!(c.validate(), Ok(()));
            prop_assert_eq!(c.inputs as usize, outer.inputs as usize - 1 + inner.inputs as usize);
            let n_out = outer.inputs as usize - 1;
            let composed_in = &xs[..c.inputs as usize];
            let inner_in = &composed_in[n_out..];
            let mut outer_in: Vec<f32> = composed_in[..n_out].to_vec();
            outer_in.insert(arg, inner.eval(inner_in));
            let want = outer.eval(&outer_in);
            let got = c.eval(composed_in);
            prop_assert!(same(got, want), "{got} vs {want}: {c:?}");
        }

        /// dedup_inputs evaluates like the original with duplicated arguments.
        #[test]
        fn dedup_matches_duplicated_eval(
            p in arb_program(5),
            ids in prop::collection::vec(0u8..3, 5),
            vals in prop::collection::vec(-3.0f32..3.0, 3),
        ) {
            let ids = &ids[..p.inputs as usize];
            let (d, bound) = p.dedup_inputs(ids);
            prop_assert_eq!(d.validate(), Ok(()));
            prop_assert_eq!(d.inputs as usize, bound.len());
            let mut distinct = ids.to_vec();
            distinct.dedup();
            let orig: Vec<f32> = ids.iter().map(|&i| vals[i as usize]).collect();
            let new: Vec<f32> = bound.iter().map(|&i| vals[i as usize]).collect();
            let (got, want) = (d.eval(&new), p.eval(&orig));
            prop_assert!(same(got, want), "{got} vs {want}");
        }
    }

    #[test]
    fn compose_orders_inputs_outer_then_inner() {
        // outer(a, b, c) = (a - b) / c; inner(x, y) = x · y substituted for b.
        let outer = Program {
            inputs: 3,
            instrs: vec![
                Instr::Binary(BinaryFn::Sub, 0, 1),
                Instr::Binary(BinaryFn::Div, 3, 2),
            ],
        };
        let c = outer.compose(1, &Program::binary(BinaryFn::Mul));
        assert_eq!(c.inputs, 4);
        // Inputs: a, c, x, y.
        assert_eq!(c.eval(&[10.0, 2.0, 3.0, 4.0]), (10.0 - 12.0) / 2.0);
        // The identity composes away on either side.
        let g = Program::unary(UnaryFn::Gelu(GeluApprox::None));
        assert_eq!(Program::identity().compose(0, &g), g);
        assert_eq!(g.compose(0, &Program::identity()), g);
    }

    #[test]
    fn merge_duplicate_inputs_keeps_the_first() {
        // (a + b) · c with a and c the same value.
        let p = Program {
            inputs: 3,
            instrs: vec![
                Instr::Binary(BinaryFn::Add, 0, 1),
                Instr::Binary(BinaryFn::Mul, 3, 2),
            ],
        };
        let m = p.merge_duplicate_inputs(&[2, 0]);
        assert_eq!(m.inputs, 2);
        assert_eq!(m.validate(), Ok(()));
        assert_eq!(m.eval(&[3.0, 5.0]), p.eval(&[3.0, 5.0, 3.0]));
        let (d, ids) = p.dedup_inputs(&["x", "y", "x"]);
        assert_eq!(ids, ["x", "y"]);
        assert_eq!(d, m);
    }

    #[test]
    fn validate_rejects_bad_programs() {
        let bad = |p: Program| p.validate().unwrap_err();
        assert!(bad(Program {
            inputs: 0,
            instrs: vec![]
        })
        .contains("no inputs"));
        assert!(bad(Program {
            inputs: 2,
            instrs: vec![]
        })
        .contains("exactly 1 input"));
        assert!(bad(Program {
            inputs: 1,
            instrs: vec![Instr::Unary(UnaryFn::Exp, 1)]
        })
        .contains("reads r1"));
        assert!(bad(Program {
            inputs: 2,
            instrs: vec![Instr::Const(Float(1.0)); 254]
        })
        .contains("256 registers"));
        let ok = Program {
            inputs: 1,
            instrs: vec![Instr::Const(Float(1.0)); 254],
        };
        assert_eq!(ok.validate(), Ok(()));
        assert_eq!(ok.result(), 254);
        assert_eq!(Program::identity().result(), 0);
        // A program of constants only is valid (inputs unused).
        assert_eq!(
            Program {
                inputs: 0,
                instrs: vec![Instr::Const(Float(2.0))]
            }
            .eval(&[]),
            2.0
        );
    }

    /// The f32 formulas against f64 math (erf by libm-quality series below).
    #[test]
    fn scalar_functions_match_f64_math() {
        // erf by its Taylor series (converges fast for |x| ≤ 3).
        fn erf64(x: f64) -> f64 {
            let (mut term, mut sum) = (x, x);
            for n in 1..200 {
                term *= -x * x / n as f64;
                sum += term / (2 * n + 1) as f64;
            }
            sum * 2.0 / std::f64::consts::PI.sqrt()
        }
        for i in -300..=300 {
            let x = i as f32 / 100.0;
            let xd = f64::from(x);
            // Relative error, measured against at least `floor` (Gelu's
            // 1 + erf(x) cancels for negative x: the error there is absolute).
            let close = |got: f32, want: f64, tol: f64, what: &str| {
                let floor = if what.starts_with("gelu") { 0.1 } else { 1e-3 };
                assert!(
                    (f64::from(got) - want).abs() <= tol * want.abs().max(floor),
                    "{what}({x}) = {got}, want {want}"
                );
            };
            close(erf_f32(x), erf64(xd), 1e-6, "erf");
            close(exp_f32(x), xd.exp(), 1e-6, "exp");
            close(sigmoid_f32(x), 1.0 / (1.0 + (-xd).exp()), 1e-6, "sigmoid");
            close(
                gelu_erf_f32(x),
                0.5 * xd * (1.0 + erf64(xd / 2f64.sqrt())),
                1e-5,
                "gelu",
            );
            let t = (2.0 / std::f64::consts::PI).sqrt() * (xd + 0.044715 * xd.powi(3));
            close(
                gelu_tanh_f32(x),
                0.5 * xd * (1.0 + t.tanh()),
                1e-5,
                "gelu_tanh",
            );
        }
        assert!(max_f32(1.0, f32::NAN).is_nan() && min_f32(f32::NAN, 1.0).is_nan());
        assert!(relu_f32(f32::NAN).is_nan());
        assert_eq!(relu_f32(-2.0), 0.0);
    }

    /// Hand-computed broadcasting and a known product.
    #[test]
    fn references_broadcast_and_multiply() {
        // [2,1] + [3] -> [2,3]
        let (y, s) = reference_elementwise(
            &Program::binary(BinaryFn::Add),
            &[(&[1.0, 2.0], &[2, 1]), (&[10.0, 20.0, 30.0], &[3])],
        )
        .unwrap();
        assert_eq!(s, [2, 3]);
        assert_eq!(y, [11.0, 21.0, 31.0, 12.0, 22.0, 32.0]);
        // A = [[1,2],[3,4]] stored transposed, B = [[5,6],[7,8]]; plus bias [1, -1].
        let at = [1.0, 3.0, 2.0, 4.0];
        let b = [5.0, 6.0, 7.0, 8.0];
        let (y, s) = reference_fused_matmul(
            (&at, &[2, 2]),
            true,
            (&b, &[2, 2]),
            false,
            &Program::binary(BinaryFn::Add),
            &[(&[1.0, -1.0], &[2])],
        )
        .unwrap();
        assert_eq!(s, [2, 2]);
        assert_eq!(y, [20.0, 21.0, 44.0, 49.0]);
        // Vector · matrix drops the promoted axis; an enlarging Ei is an error.
        let (y, s) = reference_fused_matmul(
            (&[1.0, 1.0], &[2]),
            false,
            (&b, &[2, 2]),
            false,
            &Program::identity(),
            &[],
        )
        .unwrap();
        assert_eq!((y, s), (vec![12.0, 14.0], vec![2]));
        assert!(reference_fused_matmul(
            (&[1.0, 1.0], &[2]),
            false,
            (&b, &[2, 2]),
            false,
            &Program::binary(BinaryFn::Add),
            &[(&[0.0; 4], &[2, 2])],
        )
        .is_err());
    }
    /// Both ops print and parse back through the text form.
    #[test]
    fn text_form_round_trips() {
        use crate::{text, DType, Dim, Graph, Node, Op, Shape, Tensor, ValueType};
        let seq = || Dim::Sym("seq".into());
        let mut g = Graph::new("fused");
        let x = g.add_value(
            "x",
            ValueType::new(DType::F32, Shape(vec![seq(), Dim::Fixed(4)])),
        );
        g.inputs.push(x);
        let w = g.add_constant(
            "w",
            Tensor::from_vec(vec![3, 4], (0..12).map(|i| i as f32 * 0.25).collect()).unwrap(),
        );
        let bias = g.add_constant(
            "bias",
            Tensor::from_vec(vec![3], vec![0.5f32, -1.0, 2.0]).unwrap(),
        );
        let h = g.add_value(
            "h",
            ValueType::new(DType::F32, Shape(vec![seq(), Dim::Fixed(3)])),
        );
        g.add_node(Node {
            name: "mm".into(),
            op: Op::FusedMatMul {
                trans_a: false,
                trans_b: true,
                epilogue: Program {
                    inputs: 2,
                    instrs: vec![
                        Instr::Binary(BinaryFn::Add, 0, 1),
                        Instr::Unary(UnaryFn::Gelu(GeluApprox::None), 2),
                        Instr::Const(Float(-0.1)),
                        Instr::Unary(UnaryFn::Swish(Float(1.702)), 4),
                        Instr::Binary(BinaryFn::Pow, 3, 5),
                    ],
                },
            },
            inputs: vec![Some(x), Some(w), Some(bias)],
            outputs: vec![h],
        });
        let y = g.add_value(
            "y",
            ValueType::new(DType::F32, Shape(vec![seq(), Dim::Fixed(3)])),
        );
        g.add_node(Node {
            name: "ew".into(),
            op: Op::Elementwise {
                program: Program {
                    inputs: 2,
                    instrs: vec![
                        Instr::Binary(BinaryFn::Max, 0, 1),
                        Instr::Unary(UnaryFn::Sqrt, 2),
                    ],
                },
            },
            inputs: vec![Some(h), Some(bias)],
            outputs: vec![y],
        });
        g.outputs.push(y);
        crate::infer::infer_graph(&mut g).unwrap();
        let t = text::print(&g);
        assert!(
            t.contains("FusedMatMul") && t.contains("Elementwise"),
            "{t}"
        );
        let parsed = text::parse(&t, &text::external_weights(&g)).unwrap();
        assert_eq!(parsed.nodes, g.nodes);
        assert_eq!(text::print(&parsed), t);
    }
}
