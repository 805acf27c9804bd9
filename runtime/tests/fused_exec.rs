//! The fused ops through the CPU executor: `Elementwise` against the scalar
//! reference (`Program::eval` per element) and against the same computation
//! as a graph of primitive ops; `FusedMatMul` against the graph
//! MatMul(+Transpose) + Add(bias) + Gelu + Add(residual), against the naive
//! f64 reference of `kiln_ir::fused`, and with a packed weight against the
//! same graph on the dequantized weight.

use kiln_ir::fused::{reference_elementwise, reference_fused_matmul, RefOperand};
use kiln_ir::quant::{dequantize, quantize_rtn, QuantFormat};
use kiln_ir::{
    BinaryFn, DType, Float, GeluApprox, Graph, Instr, Node, Op, Program, Shape, Tensor, UnaryFn,
    ValueId, ValueType,
};
use kiln_runtime::cpu::{CpuExecutor, ExecOptions};
use std::collections::BTreeMap;
use std::time::Instant;

/// SplitMix64: a small seeded generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    /// Uniform in [lo, hi).
    fn f32(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * ((self.next() >> 40) as f32 / (1u64 << 24) as f32)
    }
    fn vec(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..n).map(|_| self.f32(lo, hi)).collect()
    }
}

const UNARY: [UnaryFn; 13] = [
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

const BINARY: [BinaryFn; 6] = [
    BinaryFn::Add,
    BinaryFn::Sub,
    BinaryFn::Mul,
    BinaryFn::Div,
    BinaryFn::Max,
    BinaryFn::Min,
];

/// A random valid program; Pow only ever raises to a constant exponent
/// (2, 3 or 0.5), the forms exporters write.
fn random_program(rng: &mut Rng, inputs: u8, len: usize) -> Program {
    let mut instrs = Vec::new();
    let reg = |rng: &mut Rng, regs: usize| {
        // Mostly recent registers, so programs form chains rather than fans.
        if rng.below(3) == 0 {
            rng.below(regs)
        } else {
            regs - 1 - rng.below(regs.min(3))
        }
    };
    while instrs.len() < len {
        let regs = inputs as usize + instrs.len();
        match rng.below(20) {
            0..=2 => instrs.push(Instr::Const(Float(rng.f32(-2.0, 2.0)))),
            3..=9 => {
                let x = reg(rng, regs) as u8;
                instrs.push(Instr::Unary(UNARY[rng.below(UNARY.len())], x));
            }
            10 => {
                let x = reg(rng, regs) as u8;
                let e = [2.0, 3.0, 0.5][rng.below(3)];
                instrs.push(Instr::Const(Float(e)));
                instrs.push(Instr::Binary(BinaryFn::Pow, x, regs as u8));
            }
            _ => {
                let (x, y) = (reg(rng, regs) as u8, reg(rng, regs) as u8);
                instrs.push(Instr::Binary(BINARY[rng.below(BINARY.len())], x, y));
            }
        }
    }
    let p = Program { inputs, instrs };
    p.validate().expect("generated programs are valid");
    p
}

/// Builds graphs value by value; types are inferred at the end.
struct Builder {
    g: Graph,
    inputs: BTreeMap<String, Tensor>,
}

impl Builder {
    fn new() -> Builder {
        Builder {
            g: Graph::new("fused"),
            inputs: BTreeMap::new(),
        }
    }

    fn input(&mut self, t: Tensor) -> ValueId {
        let name = format!("in{}", self.inputs.len());
        let v = self.g.add_value(
            name.clone(),
            ValueType::new(t.dtype(), Shape::fixed(&dims64(t.dims()))),
        );
        self.g.inputs.push(v);
        self.inputs.insert(name, t);
        v
    }

    fn constant(&mut self, t: Tensor) -> ValueId {
        let name = format!("c{}", self.g.num_values());
        self.g.add_constant(name, t)
    }

    fn node(&mut self, op: Op, inputs: &[ValueId]) -> ValueId {
        let name = format!("v{}", self.g.num_values());
        let out = self
            .g
            .add_value(name, ValueType::new(DType::F32, Shape(vec![])));
        self.g.add_node(Node {
            name: String::new(),
            op,
            inputs: inputs.iter().map(|&v| Some(v)).collect(),
            outputs: vec![out],
        });
        out
    }

    /// Infers the types, runs the graph on two threads, returns the output.
    fn run(mut self, out: ValueId) -> (Vec<f32>, Vec<usize>) {
        self.g.outputs.push(out);
        kiln_ir::infer::infer_graph(&mut self.g).expect("graph infers");
        let exec = CpuExecutor::new(self.g, ExecOptions { threads: Some(2) }).expect("executor");
        let r = exec.run(&self.inputs).expect("run");
        let y = &r.outputs[0].1;
        (y.to_vec::<f32>().unwrap(), y.dims().to_vec())
    }
}

fn dims64(d: &[usize]) -> Vec<u64> {
    d.iter().map(|&x| x as u64).collect()
}

fn tensor(shape: &[usize], v: &[f32]) -> Tensor {
    Tensor::from_vec(shape.to_vec(), v.to_vec()).unwrap()
}

/// The program as a graph of primitive ops over `inputs`.
fn primitive_graph(b: &mut Builder, p: &Program, inputs: &[ValueId]) -> ValueId {
    let mut regs: Vec<ValueId> = inputs.to_vec();
    for ins in &p.instrs {
        let v = match *ins {
            Instr::Const(c) => b.constant(Tensor::scalar(c.0)),
            Instr::Unary(f, x) => {
                let op = match f {
                    UnaryFn::Neg => Op::Neg,
                    UnaryFn::Abs => Op::Abs,
                    UnaryFn::Exp => Op::Exp,
                    UnaryFn::Log => Op::Log,
                    UnaryFn::Sqrt => Op::Sqrt,
                    UnaryFn::Reciprocal => Op::Reciprocal,
                    UnaryFn::Tanh => Op::Tanh,
                    UnaryFn::Sigmoid => Op::Sigmoid,
                    UnaryFn::Relu => Op::Relu,
                    UnaryFn::Erf => Op::Erf,
                    UnaryFn::Gelu(approximate) => Op::Gelu { approximate },
                    UnaryFn::Swish(alpha) => Op::Swish { alpha },
                };
                b.node(op, &[regs[x as usize]])
            }
            Instr::Binary(f, x, y) => {
                let op = match f {
                    BinaryFn::Add => Op::Add,
                    BinaryFn::Sub => Op::Sub,
                    BinaryFn::Mul => Op::Mul,
                    BinaryFn::Div => Op::Div,
                    BinaryFn::Pow => Op::Pow,
                    BinaryFn::Max => Op::Max,
                    BinaryFn::Min => Op::Min,
                };
                b.node(op, &[regs[x as usize], regs[y as usize]])
            }
        };
        regs.push(v);
    }
    regs[p.result() as usize]
}

fn same_bits(a: f32, b: f32) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

/// Within 1e-5 relative, or equal (infinities), or both NaN.
fn close(a: f32, b: f32) -> bool {
    a == b || (a.is_nan() && b.is_nan()) || (a - b).abs() <= 1e-5 * b.abs()
}

/// Operand shapes that broadcast to `[2, 3, 7]`: full, scalar, a bias along
/// the last axis, `[B, 1, N]`, a column and size-1 axes.
const SMALL: [&[usize]; 8] = [
    &[2, 3, 7],
    &[],
    &[7],
    &[2, 1, 7],
    &[3, 1],
    &[1],
    &[2, 3, 1],
    &[1, 3, 7],
];

/// The same shapes for an output of 67 080 elements (split over threads,
/// chunks straddling rows).
const LARGE: [&[usize]; 6] = [
    &[4, 130, 129],
    &[],
    &[129],
    &[4, 1, 129],
    &[130, 1],
    &[4, 130, 1],
];

fn check_elementwise(rng: &mut Rng, shapes: &[&[usize]], what: &str) {
    let n = 1 + rng.below(4) as u8;
    let len = 1 + rng.below(12);
    let p = random_program(rng, n, len);
    // The first operand has the full shape half of the time.
    let mut in_shapes: Vec<&[usize]> = (0..n).map(|_| shapes[rng.below(shapes.len())]).collect();
    if rng.below(2) == 0 {
        in_shapes[0] = shapes[0];
    }
    let data: Vec<Vec<f32>> = in_shapes
        .iter()
        .map(|s| rng.vec(s.iter().product(), -2.0, 2.0))
        .collect();
    let refs: Vec<RefOperand> = data
        .iter()
        .zip(&in_shapes)
        .map(|(d, s)| (d.as_slice(), *s))
        .collect();
    let (want, want_shape) = reference_elementwise(&p, &refs).unwrap();

    let mut b = Builder::new();
    let ids: Vec<ValueId> = refs.iter().map(|(d, s)| b.input(tensor(s, d))).collect();
    let y = b.node(Op::Elementwise { program: p.clone() }, &ids);
    let (got, shape) = b.run(y);
    assert_eq!(shape, want_shape, "{what}: {p:?}");
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert!(
            same_bits(*g, *w),
            "{what}: element {i}: kernel {g} vs Program::eval {w}\n{p:?}\nshapes {in_shapes:?}"
        );
    }

    let mut b = Builder::new();
    let ids: Vec<ValueId> = refs.iter().map(|(d, s)| b.input(tensor(s, d))).collect();
    let y = primitive_graph(&mut b, &p, &ids);
    // Results that ignore some operands are smaller in the primitive graph:
    // adding zeros of the full shape broadcasts them (x + 0 = x).
    let zeros = b.input(tensor(&want_shape, &vec![0.0; want.len()]));
    let y = b.node(Op::Add, &[y, zeros]);
    let (prim, prim_shape) = b.run(y);
    assert_eq!(prim_shape, shape, "{what}");
    for (i, (g, w)) in got.iter().zip(&prim).enumerate() {
        assert!(
            close(*g, *w),
            "{what}: element {i}: fused {g} vs primitive graph {w}\n{p:?}\nshapes {in_shapes:?}"
        );
    }
}

/// Random programs over broadcast operands: bit for bit the scalar
/// reference, and within 1e-5 of the primitive ops' graph.
#[test]
fn elementwise_matches_eval_and_primitive_graph() {
    let mut rng = Rng(7);
    for case in 0..300 {
        check_elementwise(&mut rng, &SMALL, &format!("small case {case}"));
    }
    for case in 0..12 {
        check_elementwise(&mut rng, &LARGE, &format!("large case {case}"));
    }
}

/// bias + Gelu + residual: the epilogue of a transformer MLP.
fn bias_gelu_residual() -> Program {
    Program {
        inputs: 3,
        instrs: vec![
            Instr::Binary(BinaryFn::Add, 0, 1),
            Instr::Unary(UnaryFn::Gelu(GeluApprox::None), 3),
            Instr::Binary(BinaryFn::Add, 4, 2),
        ],
    }
}

/// Swaps the last two axes of a row-major tensor.
fn transpose_last(v: &[f32], shape: &[usize]) -> (Vec<f32>, Vec<usize>) {
    let r = shape.len();
    let (x, y) = (shape[r - 2], shape[r - 1]);
    let mut out = Vec::with_capacity(v.len());
    for m in v.chunks(x * y) {
        for j in 0..y {
            for i in 0..x {
                out.push(m[i * y + j]);
            }
        }
    }
    let mut s = shape.to_vec();
    s.swap(r - 2, r - 1);
    (out, s)
}

fn swap_perm(rank: usize) -> Op {
    let mut perm: Vec<i64> = (0..rank as i64).collect();
    perm.swap(rank - 2, rank - 1);
    Op::Transpose { perm: Some(perm) }
}

/// Asserts `|got - want| ≤ 1e-5 · mag` element by element.
fn assert_within(got: &[f32], want: &[f32], mag: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, ((g, w), m)) in got.iter().zip(want).zip(mag).enumerate() {
        let err = (f64::from(*g) - f64::from(*w)).abs();
        assert!(
            err <= 1e-5 * f64::from(*m).max(1e-6),
            "{what}: element {i}: {g} vs {w} (|err| {err:e}, scale {m:e})"
        );
    }
}

/// The scale of rounding error of each output: Σ|a·b| + |bias| + |residual|.
fn magnitudes(
    a: RefOperand,
    ta: bool,
    b: RefOperand,
    tb: bool,
    bias: RefOperand,
    res: RefOperand,
) -> Vec<f32> {
    let abs = |v: &[f32]| v.iter().map(|x| x.abs()).collect::<Vec<_>>();
    let (aa, ba, biasa, resa) = (abs(a.0), abs(b.0), abs(bias.0), abs(res.0));
    let sum3 = Program {
        inputs: 3,
        instrs: vec![
            Instr::Binary(BinaryFn::Add, 0, 1),
            Instr::Binary(BinaryFn::Add, 3, 2),
        ],
    };
    reference_fused_matmul(
        (&aa, a.1),
        ta,
        (&ba, b.1),
        tb,
        &sum3,
        &[(&biasa, bias.1), (&resa, res.1)],
    )
    .unwrap()
    .0
}

/// Logical shapes of a product (before any transpose): A batch, B batch, M, K, N.
type Case = (Vec<usize>, Vec<usize>, usize, usize, usize);

fn matmul_cases() -> Vec<Case> {
    let mut cases = Vec::new();
    for m in [1, 3, 64, 200] {
        cases.push((vec![], vec![], m, 40, 24));
        cases.push((vec![3], vec![], m, 33, 17));
        cases.push((vec![2, 1], vec![3], m, 16, 9));
        cases.push((vec![], vec![2], m, 8, 70));
    }
    // Wide enough that the output is split into several row panels per batch.
    cases.push((vec![2], vec![2], 300, 64, 520));
    cases
}

#[test]
fn fused_matmul_matches_the_primitive_graph_and_the_reference() {
    let mut rng = Rng(11);
    for (a_batch, b_batch, m, k, n) in matmul_cases() {
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            let what = format!("A {a_batch:?}+[{m},{k}] ta={ta} × B {b_batch:?}+[{k},{n}] tb={tb}");
            let a_shape: Vec<usize> = a_batch.iter().copied().chain([m, k]).collect();
            let b_shape: Vec<usize> = b_batch.iter().copied().chain([k, n]).collect();
            let a = rng.vec(a_shape.iter().product(), -1.0, 1.0);
            let b = rng.vec(b_shape.iter().product(), -1.0, 1.0);
            // Stored transposed when the flag is set.
            let (a_st, a_st_shape) = if ta {
                transpose_last(&a, &a_shape)
            } else {
                (a.clone(), a_shape.clone())
            };
            let (b_st, b_st_shape) = if tb {
                transpose_last(&b, &b_shape)
            } else {
                (b.clone(), b_shape.clone())
            };
            let rank = a_batch.len().max(b_batch.len()) + 2;
            let mut out_shape: Vec<usize> = vec![1; rank - 2];
            for s in [&a_batch, &b_batch] {
                for (i, &d) in s.iter().enumerate() {
                    let o = &mut out_shape[rank - 2 - s.len() + i];
                    *o = (*o).max(d);
                }
            }
            out_shape.extend([m, n]);
            let bias = rng.vec(n, -1.0, 1.0);
            let res = rng.vec(out_shape.iter().product(), -1.0, 1.0);

            // Fused.
            let mut g = Builder::new();
            let ids = [
                g.input(tensor(&a_st_shape, &a_st)),
                g.input(tensor(&b_st_shape, &b_st)),
                g.input(tensor(&[n], &bias)),
                g.input(tensor(&out_shape, &res)),
            ];
            let y = g.node(
                Op::FusedMatMul {
                    trans_a: ta,
                    trans_b: tb,
                    epilogue: bias_gelu_residual(),
                },
                &ids,
            );
            let (got, shape) = g.run(y);
            assert_eq!(shape, out_shape, "{what}");

            // Primitive ops: Transpose, MatMul, Add, Gelu, Add.
            let mut g = Builder::new();
            let mut av = g.input(tensor(&a_st_shape, &a_st));
            let mut bv = g.input(tensor(&b_st_shape, &b_st));
            let biasv = g.input(tensor(&[n], &bias));
            let resv = g.input(tensor(&out_shape, &res));
            if ta {
                av = g.node(swap_perm(a_st_shape.len()), &[av]);
            }
            if tb {
                bv = g.node(swap_perm(b_st_shape.len()), &[bv]);
            }
            let mm = g.node(Op::MatMul, &[av, bv]);
            let h = g.node(Op::Add, &[mm, biasv]);
            let h = g.node(
                Op::Gelu {
                    approximate: GeluApprox::None,
                },
                &[h],
            );
            let y = g.node(Op::Add, &[h, resv]);
            let (prim, prim_shape) = g.run(y);
            assert_eq!(prim_shape, out_shape, "{what}");

            let mag = magnitudes(
                (&a_st, &a_st_shape),
                ta,
                (&b_st, &b_st_shape),
                tb,
                (&bias, &[n]),
                (&res, &out_shape),
            );
            assert_within(&got, &prim, &mag, &format!("{what} vs primitive graph"));
            let (want, want_shape) = reference_fused_matmul(
                (&a_st, &a_st_shape),
                ta,
                (&b_st, &b_st_shape),
                tb,
                &bias_gelu_residual(),
                &[(&bias, &[n]), (&res, &out_shape)],
            )
            .unwrap();
            assert_eq!(want_shape, out_shape);
            assert_within(&got, &want, &mag, &format!("{what} vs reference"));
        }
    }
}

/// Vector operands are promoted as MatMul does, and an identity epilogue is
/// a plain product.
#[test]
fn fused_matmul_promotes_vectors() {
    let mut rng = Rng(5);
    for (a_shape, b_shape, out) in [
        (vec![6], vec![6, 5], vec![5]),
        (vec![4, 6], vec![6], vec![4]),
        (vec![6], vec![6], vec![]),
        (vec![2, 4, 6], vec![6], vec![2, 4]),
    ] {
        let a = rng.vec(a_shape.iter().product(), -1.0, 1.0);
        let b = rng.vec(b_shape.iter().product(), -1.0, 1.0);
        let mut g = Builder::new();
        let ids = [g.input(tensor(&a_shape, &a)), g.input(tensor(&b_shape, &b))];
        let y = g.node(
            Op::FusedMatMul {
                trans_a: false,
                trans_b: false,
                epilogue: Program::identity(),
            },
            &ids,
        );
        let (got, shape) = g.run(y);
        assert_eq!(shape, out);
        let mut g = Builder::new();
        let ids = [g.input(tensor(&a_shape, &a)), g.input(tensor(&b_shape, &b))];
        let y = g.node(Op::MatMul, &ids);
        let (prim, _) = g.run(y);
        let mag = vec![8.0; got.len()];
        assert_within(&got, &prim, &mag, &format!("{a_shape:?} × {b_shape:?}"));
    }
}

/// A packed weight through the quantized kernels (decode-shaped M ≤ 12 and
/// prefill-shaped), with the epilogue fused into them, against the same
/// graph on the dequantized weight.
#[test]
fn fused_matmul_with_a_packed_weight_matches_the_dequantized_graph() {
    let mut rng = Rng(23);
    let (k, n) = (96, 300);
    for format in ["w4g32", "w8", "w3g64"] {
        let fmt = QuantFormat::parse(format).unwrap();
        let w = rng.vec(k * n, -1.0, 1.0);
        let packed = quantize_rtn(&w, k, n, fmt).unwrap();
        let deq = dequantize(&packed);
        for m in [1, 3, 64, 200] {
            for ta in [false, true] {
                let what = format!("{format} [2, {m}, {k}] ta={ta} × [{k}, {n}]");
                let a_shape = [2, m, k];
                let a = rng.vec(2 * m * k, -1.0, 1.0);
                let (a_st, a_st_shape) = if ta {
                    transpose_last(&a, &a_shape)
                } else {
                    (a.clone(), a_shape.to_vec())
                };
                let out_shape = [2, m, n];
                let bias = rng.vec(n, -1.0, 1.0);
                let res = rng.vec(2 * m * n, -1.0, 1.0);

                let mut g = Builder::new();
                let av = g.input(tensor(&a_st_shape, &a_st));
                let wv = g.constant(Tensor::from_packed(&packed));
                let biasv = g.input(tensor(&[n], &bias));
                let resv = g.input(tensor(&out_shape, &res));
                let y = g.node(
                    Op::FusedMatMul {
                        trans_a: ta,
                        trans_b: false,
                        epilogue: bias_gelu_residual(),
                    },
                    &[av, wv, biasv, resv],
                );
                let (got, shape) = g.run(y);
                assert_eq!(shape, out_shape, "{what}");

                let mut g = Builder::new();
                let av = g.input(tensor(&a_shape, &a));
                let wv = g.constant(tensor(&[k, n], &deq));
                let biasv = g.input(tensor(&[n], &bias));
                let resv = g.input(tensor(&out_shape, &res));
                let mm = g.node(Op::MatMul, &[av, wv]);
                let h = g.node(Op::Add, &[mm, biasv]);
                let h = g.node(
                    Op::Gelu {
                        approximate: GeluApprox::None,
                    },
                    &[h],
                );
                let y = g.node(Op::Add, &[h, resv]);
                let (prim, _) = g.run(y);
                let mag = magnitudes(
                    (&a, &a_shape),
                    false,
                    (&deq, &[k, n]),
                    false,
                    (&bias, &[n]),
                    (&res, &out_shape),
                );
                assert_within(&got, &prim, &mag, &what);
            }
        }
    }
}

/// Operands that do not fit are errors naming the op, not panics.
#[test]
fn bad_operands_are_errors() {
    let run = |op: Op, shapes: &[&[usize]]| -> String {
        let mut g = Graph::new("bad");
        let ids: Vec<ValueId> = shapes
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let v = g.add_value(
                    format!("x{i}"),
                    ValueType::new(DType::F32, Shape::fixed(&dims64(s))),
                );
                g.inputs.push(v);
                v
            })
            .collect();
        let y = g.add_value("y", ValueType::new(DType::F32, Shape(vec![])));
        g.add_node(Node {
            name: "n".into(),
            op,
            inputs: ids.iter().map(|&v| Some(v)).collect(),
            outputs: vec![y],
        });
        g.outputs.push(y);
        let inputs: BTreeMap<String, Tensor> = shapes
            .iter()
            .enumerate()
            .map(|(i, s)| (format!("x{i}"), tensor(s, &vec![0.0; s.iter().product()])))
            .collect();
        let exec = CpuExecutor::new(g, ExecOptions::default()).unwrap();
        exec.run(&inputs).unwrap_err().to_string()
    };
    let e = run(
        Op::FusedMatMul {
            trans_a: false,
            trans_b: true,
            epilogue: Program::identity(),
        },
        &[&[3, 4], &[4, 5]],
    );
    assert!(
        e.contains("FusedMatMul") && e.contains("inner dimensions"),
        "{e}"
    );
    let e = run(
        Op::FusedMatMul {
            trans_a: false,
            trans_b: false,
            epilogue: Program::binary(BinaryFn::Add),
        },
        &[&[3, 4], &[4, 5], &[2, 3, 5]],
    );
    assert!(e.contains("E1") && e.contains("does not broadcast"), "{e}");
    let e = run(
        Op::Elementwise {
            program: Program::binary(BinaryFn::Mul),
        },
        &[&[3], &[4]],
    );
    assert!(e.contains("Elementwise") && e.contains("broadcast"), "{e}");
    let e = run(
        Op::Elementwise {
            program: Program::binary(BinaryFn::Mul),
        },
        &[&[3]],
    );
    assert!(e.contains("2 inputs"), "{e}");
}

/// Median wall time of `f` over `reps` runs, in milliseconds.
fn time_ms(reps: usize, mut f: impl FnMut()) -> f64 {
    let mut t: Vec<f64> = (0..reps)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[reps / 2]
}

/// Timings of the fused kernels against their primitive graphs (run with
/// `--ignored --nocapture`; numbers depend on the machine).
#[test]
#[ignore]
fn fused_timings() {
    let mut rng = Rng(3);
    for (m, k, n, epilogue) in [
        (512, 576, 1536, true),
        (512, 576, 1536, false),
        (64, 576, 1536, true),
        (1, 576, 49152, false),
    ] {
        let a = rng.vec(m * k, -1.0, 1.0);
        let w = rng.vec(k * n, -0.1, 0.1);
        let bias = rng.vec(n, -1.0, 1.0);
        let res = rng.vec(m * n, -1.0, 1.0);
        let executor = |fused: bool, packed: bool| {
            let mut g = Builder::new();
            let av = g.input(tensor(&[m, k], &a));
            let wv = if packed {
                let q = quantize_rtn(&w, k, n, QuantFormat::parse("w4g32").unwrap()).unwrap();
                g.constant(Tensor::from_packed(&q))
            } else {
                g.constant(tensor(&[k, n], &w))
            };
            let biasv = g.input(tensor(&[n], &bias));
            let resv = g.input(tensor(&[m, n], &res));
            let y = match (fused, epilogue) {
                (true, true) => g.node(
                    Op::FusedMatMul {
                        trans_a: false,
                        trans_b: false,
                        epilogue: bias_gelu_residual(),
                    },
                    &[av, wv, biasv, resv],
                ),
                (true, false) => g.node(
                    Op::FusedMatMul {
                        trans_a: false,
                        trans_b: false,
                        epilogue: Program::identity(),
                    },
                    &[av, wv],
                ),
                (false, true) => {
                    let mm = g.node(Op::MatMul, &[av, wv]);
                    let h = g.node(Op::Add, &[mm, biasv]);
                    let h = g.node(
                        Op::Gelu {
                            approximate: GeluApprox::None,
                        },
                        &[h],
                    );
                    g.node(Op::Add, &[h, resv])
                }
                (false, false) => g.node(Op::MatMul, &[av, wv]),
            };
            if !epilogue {
                // Unused inputs are not allowed to dangle: keep only A.
                g.inputs.retain(|name, _| name == "in0");
                g.g.inputs.truncate(1);
            }
            g.g.outputs.push(y);
            kiln_ir::infer::infer_graph(&mut g.g).unwrap();
            (
                CpuExecutor::new(g.g, ExecOptions { threads: None }).unwrap(),
                g.inputs,
            )
        };
        for packed in [false, true] {
            let (fe, fi) = executor(true, packed);
            let (pe, pi) = executor(false, packed);
            let reps = if m == 1 { 101 } else { 21 };
            let tf = time_ms(reps, || drop(fe.run(&fi).unwrap()));
            let tp = time_ms(reps, || drop(pe.run(&pi).unwrap()));
            println!(
                "[{m},{k}]x[{k},{n}]{}{}: fused {tf:.3} ms, primitive {tp:.3} ms",
                if packed { " (w4g32)" } else { "" },
                if epilogue {
                    " + bias + gelu + residual"
                } else {
                    ""
                }
            );
        }
    }
    let (m, n) = (512, 1536);
    // A LayerNorm-style tail: (x - mean) * rstd * gamma + beta over [512, 1536].
    let p = Program {
        inputs: 5,
        instrs: vec![
            Instr::Binary(BinaryFn::Sub, 0, 1),
            Instr::Binary(BinaryFn::Mul, 5, 2),
            Instr::Binary(BinaryFn::Mul, 6, 3),
            Instr::Binary(BinaryFn::Add, 7, 4),
        ],
    };
    let shapes: [&[usize]; 5] = [&[m, n], &[m, 1], &[m, 1], &[n], &[n]];
    let data: Vec<Vec<f32>> = shapes
        .iter()
        .map(|s| rng.vec(s.iter().product(), -1.0, 1.0))
        .collect();
    let build = |fused: bool| {
        let mut g = Builder::new();
        let ids: Vec<ValueId> = data
            .iter()
            .zip(shapes)
            .map(|(d, s)| g.input(tensor(s, d)))
            .collect();
        let y = if fused {
            g.node(Op::Elementwise { program: p.clone() }, &ids)
        } else {
            primitive_graph(&mut g, &p, &ids)
        };
        g.g.outputs.push(y);
        kiln_ir::infer::infer_graph(&mut g.g).unwrap();
        (
            CpuExecutor::new(g.g, ExecOptions { threads: None }).unwrap(),
            g.inputs,
        )
    };
    let (fe, fi) = build(true);
    let (pe, pi) = build(false);
    let tf = time_ms(31, || drop(fe.run(&fi).unwrap()));
    let tp = time_ms(31, || drop(pe.run(&pi).unwrap()));
    println!("[{m},{n}] sub/mul/mul/add with broadcasts: fused {tf:.3} ms, primitive {tp:.3} ms");
}
