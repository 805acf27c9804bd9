//! Elementwise kernels on the GPU against the CPU executor's kernels
//! (`cpu::eval_node`) on the same seeded random operands: every float unary
//! op, binary and variadic arithmetic with broadcasting, comparisons and
//! logic (bool results packed four to a word), `Where`, `Clip`, `Cast`
//! across f32, f16, i32, i64 and bool, and fused programs. Integer, bool
//! and conversion results must match bit for bit; float results within a
//! tolerance stated per case. Sizes are odd (not multiples of the workgroup
//! or of four) so partial workgroups and partial bool words are exercised.
//! Tests skip (with a message) without a GPU adapter.
#![cfg(feature = "gpu")]

use half::f16;
use kiln_codegen::{Family, KernelSpec, NodeCtx, Schedule};
use kiln_ir::fused::{BinaryFn, Instr, Program, UnaryFn};
use kiln_ir::{DType, Float, GeluApprox, Op, Shape, Tensor, ValueType};
use kiln_runtime::cpu::eval_node;
use kiln_runtime::gpu::test_context;

/// xorshift64*: seeded, dependency-free operands.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in [lo, hi).
    fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        let u = (self.next() >> 40) as f32 / (1u64 << 24) as f32;
        lo + (hi - lo) * u
    }

    fn f32s(&mut self, dims: &[usize], lo: f32, hi: f32) -> Tensor {
        let n: usize = dims.iter().product();
        let v: Vec<f32> = (0..n).map(|_| self.uniform(lo, hi)).collect();
        Tensor::from_vec(dims.to_vec(), v).expect("dims match")
    }

    /// Small integers as f32, so comparisons see equal values.
    fn small_ints(&mut self, dims: &[usize]) -> Tensor {
        let n: usize = dims.iter().product();
        let v: Vec<f32> = (0..n).map(|_| (self.next() % 5) as f32 - 2.0).collect();
        Tensor::from_vec(dims.to_vec(), v).expect("dims match")
    }

    fn bools(&mut self, dims: &[usize]) -> Tensor {
        let n: usize = dims.iter().product();
        let v: Vec<bool> = (0..n).map(|_| self.next() & 1 == 1).collect();
        Tensor::from_bools(dims.to_vec(), &v).expect("dims match")
    }

    /// Values of `dt` spread over its range, with repeats and sign changes.
    fn of(&mut self, dt: DType, dims: &[usize]) -> Tensor {
        let n: usize = dims.iter().product();
        let d = dims.to_vec();
        match dt {
            DType::F32 => Ok(self.small_ints(dims)),
            DType::F16 => Tensor::from_vec(
                d,
                (0..n)
                    .map(|_| f16::from_f32((self.next() % 5) as f32 - 2.0))
                    .collect::<Vec<_>>(),
            ),
            DType::I32 => Tensor::from_vec(
                d,
                (0..n)
                    .map(|_| match self.next() % 3 {
                        0 => (self.next() % 5) as i32 - 2,
                        _ => self.next() as i32,
                    })
                    .collect::<Vec<_>>(),
            ),
            DType::I64 => Tensor::from_vec(
                d,
                (0..n)
                    .map(|_| match self.next() % 3 {
                        0 => (self.next() % 5) as i64 - 2,
                        1 => self.next() as i64,
                        // Equal high words, different low words.
                        _ => (self.next() % 7) as i64 - 3 + (1i64 << 40),
                    })
                    .collect::<Vec<_>>(),
            ),
            DType::Bool => Ok(self.bools(dims)),
            other => panic!("no generator for {other}"),
        }
        .expect("dims match")
    }
}

fn f32t(dims: &[usize], v: &[f32]) -> Tensor {
    Tensor::from_vec(dims.to_vec(), v.to_vec()).expect("dims match")
}

/// How results are compared.
#[derive(Clone, Copy, Debug)]
enum Compare {
    /// Bit for bit (NaNs compared as NaN, whatever their payload).
    Exact,
    /// Within `abs + rel·|want|`; NaN and infinities must match.
    Close { abs: f64, rel: f64 },
}

/// f32 tolerance for builtins and rearranged formulas: a few ulp.
const F32: Compare = Compare::Close {
    abs: 1e-6,
    rel: 1e-5,
};

/// One f16 ulp (2^-10 relative): the GPU's f32 result may sit on the other
/// side of a rounding boundary from the CPU's.
const F16: Compare = Compare::Close {
    abs: 1e-4,
    rel: 2e-3,
};

fn value_type(t: &Tensor) -> ValueType {
    let dims: Vec<u64> = t.dims().iter().map(|&d| d as u64).collect();
    ValueType::new(t.dtype(), Shape::fixed(&dims))
}

/// Runs `op` on the CPU and, through its selected kernel (default schedule
/// of the device, or `schedule`), on the GPU, and compares the results.
/// Operands listed in `consts` are compile-time constants. Returns the
/// largest relative error seen, or `None` when the test has no GPU (or f16 was
/// asked for on a device without it).
fn run(
    op: &Op,
    operands: &[Option<Tensor>],
    consts: &[usize],
    cmp: Compare,
    schedule: Option<Schedule>,
) -> Option<f64> {
    let ctx = test_context()?;
    let caps = ctx.caps();
    let uses_f16 = operands.iter().flatten().any(|t| t.dtype() == DType::F16)
        || matches!(op, Op::Cast { to: DType::F16, .. });
    if uses_f16 && !caps.shader_f16 {
        eprintln!("skipping {op:?}: the device has no shader-f16");
        return None;
    }
    let refs: Vec<Option<&Tensor>> = operands.iter().map(|o| o.as_ref()).collect();
    let want = eval_node(op, &refs, 1)
        .expect("the CPU evaluates the node")
        .remove(0);
    let in_types: Vec<Option<ValueType>> = refs.iter().map(|t| t.map(value_type)).collect();
    let out_type = value_type(&want);
    let cx = NodeCtx {
        name: "node",
        op,
        inputs: in_types.iter().map(|t| t.as_ref()).collect(),
        consts: (0..refs.len())
            .map(|i| if consts.contains(&i) { refs[i] } else { None })
            .collect(),
        outputs: vec![&out_type],
        caps,
    };
    let spec = KernelSpec::select(&cx).unwrap_or_else(|| panic!("no kernel for {op:?}"));
    assert!(
        matches!(spec, KernelSpec::Elementwise(_)),
        "{op:?}: {spec:?}"
    );
    let schedule = schedule.unwrap_or_else(|| Schedule::default_for(Family::Elementwise, caps));
    let kernel = spec.emit(&schedule).expect("emit");
    let shapes: Vec<Option<&[usize]>> = refs.iter().map(|t| t.map(|t| t.dims())).collect();
    let launch = spec
        .launch(&shapes, &[want.dims()], &schedule)
        .expect("launch");
    let bound: Vec<&[u8]> = spec
        .bound_inputs()
        .iter()
        .map(|&i| refs[i].expect("bound operands are present").bytes())
        .collect();
    let got = ctx
        .run_kernel_once(&kernel, &bound, &[want.bytes().len()], &launch)
        .unwrap_or_else(|e| panic!("{op:?}: {e}\n{}", kernel.wgsl))
        .remove(0);
    let got = Tensor::from_raw(want.dtype(), want.dims().to_vec(), &got).expect("sizes match");
    Some(compare(op, &got, &want, cmp, &refs))
}

/// Compares `got` with `want`, panicking with the first mismatch and its
/// operands; returns the largest relative error over results of magnitude
/// 1e-6 and up (0 for exact comparisons).
fn compare(op: &Op, got: &Tensor, want: &Tensor, cmp: Compare, ins: &[Option<&Tensor>]) -> f64 {
    let operands_at = |i: usize| -> String {
        ins.iter()
            .flatten()
            .map(|t| {
                let v = t.to_f64_vec();
                format!("{:?}", v.get(i.min(v.len().saturating_sub(1))))
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut worst = 0f64;
    match (cmp, want.dtype().is_float()) {
        (Compare::Close { abs, rel }, true) => {
            let (g, w) = (got.to_f64_vec(), want.to_f64_vec());
            for (i, (&g, &w)) in g.iter().zip(&w).enumerate() {
                let ok = if w.is_nan() || w.is_infinite() {
                    (w.is_nan() && g.is_nan()) || g == w
                } else {
                    let e = (g - w).abs();
                    // Below 1e-6 only the absolute tolerance means anything.
                    if w.abs() >= 1e-6 {
                        worst = worst.max(e / w.abs());
                    }
                    e <= abs + rel * w.abs()
                };
                assert!(
                    ok,
                    "{op:?} element {i}: got {g}, want {w} (operands at i: {})",
                    operands_at(i)
                );
            }
        }
        _ if want.dtype().is_float() => {
            let (g, w) = (got.to_f64_vec(), want.to_f64_vec());
            for (i, (&g, &w)) in g.iter().zip(&w).enumerate() {
                let same = (g.is_nan() && w.is_nan())
                    || g.to_bits() == w.to_bits()
                    || (g == 0.0 && w == 0.0);
                assert!(
                    same,
                    "{op:?} element {i}: got {g}, want {w} (operands at i: {})",
                    operands_at(i)
                );
            }
        }
        _ => {
            let (g, w) = (got.to_i64_vec(), want.to_i64_vec());
            for (i, (&g, &w)) in g.iter().zip(&w).enumerate() {
                assert_eq!(
                    g,
                    w,
                    "{op:?} element {i} (operands at i: {})",
                    operands_at(i)
                );
            }
        }
    }
    worst
}

fn data(ts: Vec<Tensor>) -> Vec<Option<Tensor>> {
    ts.into_iter().map(Some).collect()
}

/// Every float unary op with the input range it is defined on.
fn unary_cases() -> Vec<(Op, f32, f32)> {
    let f = Float;
    vec![
        (Op::Abs, -8.0, 8.0),
        (Op::Neg, -8.0, 8.0),
        (Op::Exp, -100.0, 100.0),
        (Op::Log, 1e-3, 100.0),
        (Op::Sqrt, 0.0, 100.0),
        (Op::Reciprocal, 0.1, 8.0),
        (Op::Sin, -3.0, 3.0),
        (Op::Cos, -3.0, 3.0),
        (Op::Tan, -1.4, 1.4),
        (Op::Asin, -0.99, 0.99),
        (Op::Acos, -0.99, 0.99),
        (Op::Atan, -8.0, 8.0),
        (Op::Sinh, -40.0, 40.0),
        (Op::Cosh, -40.0, 40.0),
        (Op::Asinh, -100.0, 100.0),
        (Op::Acosh, 1.0, 100.0),
        (Op::Atanh, -0.99, 0.99),
        (Op::Tanh, -8.0, 8.0),
        (Op::Sigmoid, -30.0, 30.0),
        (Op::Relu, -8.0, 8.0),
        (Op::Erf, -5.0, 5.0),
        (Op::Floor, -8.0, 8.0),
        (Op::Ceil, -8.0, 8.0),
        (Op::Round, -8.0, 8.0),
        (Op::Sign, -8.0, 8.0),
        (Op::Softplus, -40.0, 40.0),
        (Op::Softsign, -8.0, 8.0),
        (Op::Mish, -40.0, 40.0),
        (Op::HardSwish, -8.0, 8.0),
        (Op::Swish { alpha: f(1.702) }, -8.0, 8.0),
        (
            Op::Gelu {
                approximate: GeluApprox::None,
            },
            -8.0,
            8.0,
        ),
        (
            Op::Gelu {
                approximate: GeluApprox::Tanh,
            },
            -8.0,
            8.0,
        ),
        (Op::LeakyRelu { alpha: f(0.01) }, -8.0, 8.0),
        (Op::Elu { alpha: f(0.7) }, -8.0, 8.0),
        (
            Op::Selu {
                alpha: f(1.673_263_2),
                gamma: f(1.050_701),
            },
            -8.0,
            8.0,
        ),
        (Op::Celu { alpha: f(1.5) }, -8.0, 8.0),
        (
            Op::HardSigmoid {
                alpha: f(0.2),
                beta: f(0.5),
            },
            -8.0,
            8.0,
        ),
        (Op::ThresholdedRelu { alpha: f(1.0) }, -8.0, 8.0),
        (
            Op::Shrink {
                bias: f(0.1),
                lambd: f(0.5),
            },
            -8.0,
            8.0,
        ),
    ]
}

#[test]
fn unary_ops_match_the_cpu_in_f32() {
    let mut rng = Rng::new(1);
    for (op, lo, hi) in unary_cases() {
        // Reciprocal on both signs; the rest on their range.
        let mut x = rng.f32s(&[3, 67], lo, hi);
        if op == Op::Reciprocal {
            let v: Vec<f32> = x
                .to_vec::<f32>()
                .unwrap()
                .iter()
                .enumerate()
                .map(|(i, &v)| if i % 2 == 0 { v } else { -v })
                .collect();
            x = f32t(&[3, 67], &v);
        }
        let Some(err) = run(&op, &[Some(x)], &[], F32, None) else {
            return;
        };
        eprintln!("{op:?}: max relative error {err:.3e}");
    }
}

#[test]
fn unary_ops_near_zero_and_at_ties() {
    // Small arguments, where exp(x) - 1 and friends cancel.
    let mut rng = Rng::new(2);
    for op in [
        Op::Tanh,
        Op::Sinh,
        Op::Asinh,
        Op::Atanh,
        Op::Softplus,
        Op::Mish,
    ] {
        let x = rng.f32s(&[301], -1e-3, 1e-3);
        if run(&op, &[Some(x)], &[], F32, None).is_none() {
            return;
        }
    }
    let x = rng.f32s(&[301], 1.0, 1.001);
    run(&Op::Acosh, &[Some(x)], &[], F32, None);
    // Round breaks ties to even; Sign keeps zero; NaN passes through.
    let v = [
        -2.5,
        -1.5,
        -0.5,
        0.0,
        0.5,
        1.5,
        2.5,
        3.5,
        4.5,
        -0.0,
        7.0,
        f32::NAN,
    ];
    for op in [
        Op::Round,
        Op::Floor,
        Op::Ceil,
        Op::Sign,
        Op::Relu,
        Op::Abs,
        Op::Neg,
    ] {
        run(&op, &[Some(f32t(&[12], &v))], &[], Compare::Exact, None);
    }
    // Log and Sqrt outside their domain, and Exp where it saturates.
    let v = [-1.0, 0.0, 1.0, 1e30, -1e-30];
    run(&Op::Log, &[Some(f32t(&[5], &v))], &[], F32, None);
    run(&Op::Sqrt, &[Some(f32t(&[5], &v))], &[], F32, None);
    let v = [-200.0, -104.0, 88.0, 88.7, 89.0, 200.0];
    run(&Op::Exp, &[Some(f32t(&[6], &v))], &[], F32, None);
}

#[test]
fn unary_ops_match_the_cpu_in_f16() {
    let mut rng = Rng::new(3);
    for (op, lo, hi) in unary_cases() {
        let x = rng.f32s(&[5, 41], lo.max(-60000.0), hi.min(60000.0));
        let h: Vec<f16> = x
            .to_vec::<f32>()
            .unwrap()
            .iter()
            .map(|&v| f16::from_f32(v))
            .collect();
        let x = Tensor::from_vec(vec![5, 41], h).unwrap();
        if run(&op, &[Some(x)], &[], F16, None).is_none() {
            return;
        }
    }
}

/// Shape pairs: same, row/column broadcast, both sides broadcast, scalar,
/// and a 1-d run long enough for several workgroups.
fn broadcast_pairs() -> Vec<(Vec<usize>, Vec<usize>)> {
    vec![
        (vec![7, 9], vec![7, 9]),
        (vec![2, 3, 5], vec![3, 1]),
        (vec![4, 1, 7], vec![1, 6, 1]),
        (vec![5], vec![3, 1, 5]),
        (vec![3, 5], vec![]),
        (vec![1000], vec![1]),
    ]
}

#[test]
fn binary_ops_broadcast_like_the_cpu() {
    let mut rng = Rng::new(4);
    for op in [
        Op::Add,
        Op::Sub,
        Op::Mul,
        Op::Div,
        Op::PRelu,
        Op::Max,
        Op::Min,
        Op::Sum,
        Op::Mean,
    ] {
        for (a, b) in broadcast_pairs() {
            let (x, y) = (rng.f32s(&a, -4.0, 4.0), rng.f32s(&b, 0.5, 4.0));
            let cmp = if matches!(op, Op::Div) {
                F32
            } else {
                Compare::Exact
            };
            if run(&op, &data(vec![x, y]), &[], cmp, None).is_none() {
                return;
            }
        }
    }
}

#[test]
fn pow_follows_the_cpu_for_every_exponent_kind() {
    let mut rng = Rng::new(5);
    // Positive bases, real exponents, broadcast.
    let x = rng.f32s(&[4, 33], 0.01, 4.0);
    let e = rng.f32s(&[33], -3.0, 3.0);
    let Some(err) = run(&Op::Pow, &data(vec![x, e]), &[], F32, None) else {
        return;
    };
    eprintln!("Pow: max relative error {err:.3e}");
    // Negative bases with integer exponents (odd and even), and x².
    let x = rng.f32s(&[4, 33], -3.0, 3.0);
    let e = f32t(&[4, 1], &[2.0, 3.0, -1.0, 4.0]);
    run(&Op::Pow, &data(vec![x.clone(), e]), &[], F32, None);
    run(
        &Op::Pow,
        &data(vec![x.clone(), Tensor::scalar(2f32)]),
        &[],
        Compare::Exact,
        None,
    );
    // Integer exponents, converted as the CPU converts them.
    let e = Tensor::from_vec(
        vec![33],
        (0..33).map(|i| i as i64 % 5 - 2).collect::<Vec<_>>(),
    )
    .unwrap();
    run(&Op::Pow, &data(vec![x.clone(), e]), &[], F32, None);
    run(
        &Op::Pow,
        &data(vec![x, Tensor::scalar(3i32)]),
        &[],
        F32,
        None,
    );
}

#[test]
fn variadic_ops_fold_left_to_right() {
    let mut rng = Rng::new(6);
    let shapes: [&[usize]; 6] = [&[2, 3, 7], &[7], &[3, 1], &[2, 3, 7], &[1, 1, 7], &[]];
    for op in [Op::Max, Op::Min, Op::Sum, Op::Mean] {
        for n in 1..=6 {
            let xs: Vec<Tensor> = shapes[..n].iter().map(|s| rng.f32s(s, -4.0, 4.0)).collect();
            // The first operand must carry the result's rank for one-operand ops.
            let cmp = if op == Op::Mean { F32 } else { Compare::Exact };
            if run(&op, &data(xs), &[], cmp, None).is_none() {
                return;
            }
        }
    }
    // Max and Min propagate NaN.
    let a = f32t(&[5], &[1.0, f32::NAN, 3.0, -1.0, f32::NAN]);
    let b = f32t(&[5], &[f32::NAN, 2.0, 1.0, 0.0, f32::NAN]);
    run(
        &Op::Max,
        &data(vec![a.clone(), b.clone()]),
        &[],
        Compare::Exact,
        None,
    );
    run(&Op::Min, &data(vec![a, b]), &[], Compare::Exact, None);
}

#[test]
fn f16_arithmetic_rounds_like_the_cpu() {
    let mut rng = Rng::new(7);
    let h = |t: Tensor| {
        let v: Vec<f16> = t
            .to_vec::<f32>()
            .unwrap()
            .iter()
            .map(|&v| f16::from_f32(v))
            .collect();
        Tensor::from_vec(t.dims().to_vec(), v).unwrap()
    };
    for op in [
        Op::Add,
        Op::Sub,
        Op::Mul,
        Op::Div,
        Op::Pow,
        Op::PRelu,
        Op::Max,
    ] {
        let x = h(rng.f32s(&[3, 45], 0.1, 8.0));
        let y = h(rng.f32s(&[45], -2.0, 2.0));
        if run(&op, &data(vec![x, y]), &[], F16, None).is_none() {
            return;
        }
    }
    // Each partial sum of a half-precision Sum/Mean is rounded to f16.
    for op in [Op::Sum, Op::Mean] {
        let xs: Vec<Tensor> = (0..4).map(|_| h(rng.f32s(&[97], -300.0, 300.0))).collect();
        run(&op, &data(xs), &[], F16, None);
    }
}

#[test]
fn comparisons_pack_bools_for_every_type() {
    let mut rng = Rng::new(8);
    for dt in [DType::F32, DType::F16, DType::I32, DType::I64, DType::Bool] {
        for op in [
            Op::Equal,
            Op::Less,
            Op::LessOrEqual,
            Op::Greater,
            Op::GreaterOrEqual,
        ] {
            if dt == DType::Bool && op != Op::Equal {
                continue;
            }
            // 37 elements: the last word is partial; then a broadcast pair.
            for (a, b) in [
                (vec![37], vec![37]),
                (vec![3, 1, 5], vec![4, 1]),
                (vec![9, 11], vec![]),
            ] {
                let ops = vec![rng.of(dt, &a), rng.of(dt, &b)];
                if run(&op, &data(ops), &[], Compare::Exact, None).is_none() && dt != DType::F16 {
                    return;
                }
            }
        }
    }
}

#[test]
fn logic_and_float_classes() {
    let mut rng = Rng::new(9);
    for op in [Op::And, Op::Or, Op::Xor] {
        for (a, b) in [(vec![41], vec![41]), (vec![2, 3, 7], vec![3, 1])] {
            let ops = vec![rng.bools(&a), rng.bools(&b)];
            if run(&op, &data(ops), &[], Compare::Exact, None).is_none() {
                return;
            }
        }
    }
    run(
        &Op::Not,
        &[Some(rng.bools(&[5, 13]))],
        &[],
        Compare::Exact,
        None,
    );
    let v = [
        1.0,
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        0.0,
        -0.0,
        3e38,
        -f32::NAN,
        7.0,
    ];
    run(
        &Op::IsNaN,
        &[Some(f32t(&[9], &v))],
        &[],
        Compare::Exact,
        None,
    );
    for (p, n) in [(true, true), (true, false), (false, true)] {
        let op = Op::IsInf {
            detect_positive: p,
            detect_negative: n,
        };
        run(&op, &[Some(f32t(&[9], &v))], &[], Compare::Exact, None);
    }
}

#[test]
fn where_selects_every_type_with_broadcasting() {
    let mut rng = Rng::new(10);
    for dt in [DType::F32, DType::F16, DType::I32, DType::I64, DType::Bool] {
        for (c, a, b) in [
            (vec![29], vec![29], vec![29]),
            (vec![4, 1], vec![4, 9], vec![9]),
            (vec![2, 1, 5], vec![], vec![3, 1]),
        ] {
            let ops = vec![rng.bools(&c), rng.of(dt, &a), rng.of(dt, &b)];
            if run(&Op::Where, &data(ops), &[], Compare::Exact, None).is_none() && dt != DType::F16
            {
                return;
            }
        }
    }
}

/// Values that stress each conversion: fractions of both signs, ties,
/// NaN, infinities, zeros of both signs, and values beyond i32, i64 and
/// f16 ranges.
fn cast_sources() -> Vec<Tensor> {
    let floats = [
        0.0f32,
        -0.0,
        0.5,
        -0.5,
        1.5,
        -1.7,
        2.5,
        123.456,
        -65519.0,
        65520.0,
        70000.0,
        1e-5,
        6e-8,
        2.9e-8,
        -3e-6,
        2147483520.0,
        2147483648.0,
        -2147483648.0,
        5e9,
        -5e9,
        1e19,
        -1e19,
        9.2e18,
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        16777217.0,
        0.1,
        65504.0,
        65505.0,
    ];
    let i64s = [
        0i64,
        1,
        -1,
        7,
        -7,
        i64::MAX,
        i64::MIN,
        1 << 40,
        -(1 << 40),
        (1 << 24) + 1,
        (1 << 25) + 3,
        (1 << 53) + 1,
        -(1 << 33) - 5,
        4_294_967_295,
        4_294_967_296,
        2_147_483_648,
        3_000_000_000,
        -3_000_000_000,
        (1i64 << 62) + (1 << 38) + 1,
        0x7fff_ff80_0000_0000,
        33_554_435,
        16_777_219,
        -16_777_219,
        65_519,
        65_520,
        100_000,
        255,
        256,
        2049,
        -2049,
    ];
    let i32s: Vec<i32> = i64s.iter().map(|&v| v as i32).collect();
    let bools: Vec<bool> = (0..30).map(|i| i % 3 == 0).collect();
    let halves: Vec<f16> = floats.iter().map(|&v| f16::from_f32(v)).collect();
    vec![
        Tensor::from_vec(vec![30], floats.to_vec()).unwrap(),
        Tensor::from_vec(vec![30], halves).unwrap(),
        Tensor::from_vec(vec![30], i32s).unwrap(),
        Tensor::from_vec(vec![30], i64s.to_vec()).unwrap(),
        Tensor::from_bools(vec![30], &bools).unwrap(),
    ]
}

#[test]
fn casts_match_the_cpu_bit_for_bit() {
    let Some(ctx) = test_context() else {
        return;
    };
    let f16_ok = ctx.caps().shader_f16;
    let dts = [DType::F32, DType::F16, DType::I32, DType::I64, DType::Bool];
    for src in cast_sources() {
        for to in dts {
            if !f16_ok && (src.dtype() == DType::F16 || to == DType::F16) {
                continue;
            }
            let op = Op::Cast { to, saturate: true };
            run(&op, &[Some(src.clone())], &[], Compare::Exact, None);
        }
    }
    // Identity and inference-mode Dropout copy (bools are not aliased by plans).
    let mut rng = Rng::new(11);
    let b = rng.bools(&[3, 7]);
    run(&Op::Identity, &[Some(b.clone())], &[], Compare::Exact, None);
    let ratio = Tensor::scalar(0.5f32);
    run(
        &Op::Dropout,
        &[Some(b), Some(ratio)],
        &[1],
        Compare::Exact,
        None,
    );
    // Random integers beyond 2^24 exercise the rounding of i64 → f32.
    let v: Vec<i64> = (0..1001)
        .map(|_| (rng.next() as i64) >> (rng.next() % 40))
        .collect();
    let t = Tensor::from_vec(vec![1001], v).unwrap();
    run(
        &Op::Cast {
            to: DType::F32,
            saturate: true,
        },
        &[Some(t)],
        &[],
        Compare::Exact,
        None,
    );
    // Random f32 bit patterns (normal, subnormal, huge) into f16.
    if f16_ok {
        let v: Vec<f32> = (0..1001)
            .map(|_| f32::from_bits(rng.next() as u32 & 0xbfff_ffff).clamp(-1e6, 1e6))
            .collect();
        let t = Tensor::from_vec(vec![1001], v).unwrap();
        run(
            &Op::Cast {
                to: DType::F16,
                saturate: true,
            },
            &[Some(t)],
            &[],
            Compare::Exact,
            None,
        );
    }
}

#[test]
fn clip_with_constant_runtime_and_missing_bounds() {
    let mut rng = Rng::new(12);
    let x = rng.f32s(&[6, 35], -5.0, 5.0);
    let lo = Tensor::scalar(-1.25f32);
    let hi = Tensor::scalar(2.0f32);
    let empty = Tensor::from_vec::<f32>(vec![0], vec![]).unwrap();
    let e = Compare::Exact;
    let cases: Vec<(Vec<Option<Tensor>>, Vec<usize>)> = vec![
        (
            vec![Some(x.clone()), Some(lo.clone()), Some(hi.clone())],
            vec![1, 2],
        ),
        (
            vec![Some(x.clone()), Some(lo.clone()), Some(hi.clone())],
            vec![],
        ),
        (
            vec![Some(x.clone()), Some(lo.clone()), Some(hi.clone())],
            vec![2],
        ),
        (vec![Some(x.clone()), None, Some(hi.clone())], vec![]),
        (vec![Some(x.clone()), Some(lo.clone())], vec![1]),
        (
            vec![Some(x.clone()), Some(empty.clone()), Some(hi.clone())],
            vec![1, 2],
        ),
        (vec![Some(x.clone())], vec![]),
        // min above max: max wins, as on the CPU.
        (vec![Some(x), Some(hi), Some(lo)], vec![1]),
    ];
    for (ops, consts) in cases {
        if run(&Op::Clip, &ops, &consts, e, None).is_none() {
            return;
        }
    }
}

#[test]
fn fused_programs_broadcast_their_operands() {
    let mut rng = Rng::new(13);
    // gelu_tanh(x · g + b) · sigmoid(x) + max(x, b)²
    let program = Program {
        inputs: 3,
        instrs: vec![
            Instr::Binary(BinaryFn::Mul, 0, 1),
            Instr::Binary(BinaryFn::Add, 3, 2),
            Instr::Unary(UnaryFn::Gelu(GeluApprox::Tanh), 4),
            Instr::Unary(UnaryFn::Sigmoid, 0),
            Instr::Binary(BinaryFn::Mul, 5, 6),
            Instr::Binary(BinaryFn::Max, 0, 2),
            Instr::Const(Float(2.0)),
            Instr::Binary(BinaryFn::Pow, 8, 9),
            Instr::Binary(BinaryFn::Add, 7, 10),
        ],
    };
    let op = Op::Elementwise { program };
    for (a, b, c) in [
        (vec![5, 67], vec![67], vec![5, 1]),
        (vec![301], vec![301], vec![301]),
        (vec![2, 3, 4], vec![], vec![3, 4]),
    ] {
        let ops = vec![
            rng.f32s(&a, -3.0, 3.0),
            rng.f32s(&b, -2.0, 2.0),
            rng.f32s(&c, -1.0, 1.0),
        ];
        let Some(err) = run(&op, &data(ops), &[], F32, None) else {
            return;
        };
        eprintln!("fused {a:?} {b:?} {c:?}: max relative error {err:.3e}");
    }
    // Every function of the program language on one input.
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
        UnaryFn::Swish(Float(1.5)),
    ];
    for f in unaries {
        let op = Op::Elementwise {
            program: Program::unary(f),
        };
        let x = rng.f32s(&[3, 43], 0.05, 5.0);
        run(&op, &[Some(x)], &[], F32, None);
    }
}

#[test]
fn grids_beyond_65535_workgroups_and_odd_workgroup_shapes() {
    let mut rng = Rng::new(14);
    // One invocation per workgroup: 70,001 workgroups spread over x and y.
    let tiny = Schedule {
        workgroup: [1, 1, 1],
        tile: [1, 1, 1],
        vector: 1,
    };
    let x = rng.f32s(&[70_001], -3.0, 3.0);
    let y = rng.f32s(&[1], -3.0, 3.0);
    if run(
        &Op::Add,
        &data(vec![x, y]),
        &[],
        Compare::Exact,
        Some(tiny.clone()),
    )
    .is_none()
    {
        return;
    }
    let x = rng.small_ints(&[70_001]);
    let y = rng.small_ints(&[70_001]);
    run(
        &Op::Less,
        &data(vec![x, y]),
        &[],
        Compare::Exact,
        Some(tiny),
    );
    // A 3-d workgroup of 60 invocations.
    let odd = Schedule {
        workgroup: [5, 4, 3],
        tile: [1, 1, 1],
        vector: 1,
    };
    let x = rng.f32s(&[3, 5, 41], -3.0, 3.0);
    let y = rng.f32s(&[5, 1], -3.0, 3.0);
    run(
        &Op::Mul,
        &data(vec![x.clone(), y.clone()]),
        &[],
        Compare::Exact,
        Some(odd.clone()),
    );
    run(
        &Op::Greater,
        &data(vec![x, y]),
        &[],
        Compare::Exact,
        Some(odd),
    );
}

#[test]
fn empty_tensors_launch_nothing_harmful() {
    let x = Tensor::from_vec::<f32>(vec![0, 3], vec![]).unwrap();
    let y = Tensor::from_vec::<f32>(vec![3], vec![1.0, 2.0, 3.0]).unwrap();
    run(
        &Op::Add,
        &data(vec![x.clone(), y]),
        &[],
        Compare::Exact,
        None,
    );
}
