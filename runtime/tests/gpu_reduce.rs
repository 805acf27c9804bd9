//! The reduce, softmax and norm kernels (Reduce of every kind over several
//! axis sets, Softmax and LogSoftmax along the last and middle axes,
//! LayerNorm with and without bias, RMSNorm) against the CPU executor's
//! kernels on seeded random data. Tests skip (with a message) on machines
//! without a GPU adapter.
//!
//! Tolerance: the GPU folds each group in f32 in another order (strided
//! partial results, then a tree) than the CPU (f64 for reductions, eight
//! lanes of f32 for the norms), so a sum may differ by a few roundings of
//! its running value: bounded by a small multiple of ε·Σ|x| (ε = 2⁻²⁴).
//! Sums and means allow 1e-5 of Σ|x| (of mean |x|), other kinds 1e-5 of the
//! value plus 1e-6. Softmax allows 1e-5 of the value plus 1e-6 (the GPU's
//! and the CPU's e^x differ by an ulp or two; the inputs are scaled so that
//! exponents reach −80); LogSoftmax allows 1e-5 of the row's largest |x|, as
//! it subtracts the log-sum from x. Norms allow 1e-5 of |y| plus 1e-5: the
//! statistics carry a relative error of a few ε, scaled by |x - mean|/σ.
//! f16 results allow an f16 rounding (2⁻¹⁰ of the value) more.
#![cfg(feature = "gpu")]

use half::f16;
use kiln_codegen::{Family, KernelSpec, NodeCtx, Schedule};
use kiln_ir::{DType, Float, Op, ReduceKind, Shape, Tensor, ValueType};
use kiln_runtime::cpu::eval_node;
use kiln_runtime::gpu::{test_context, GpuContext};

/// Deterministic pseudo-random values in [lo, hi).
fn rand(n: usize, seed: u64, lo: f32, hi: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            lo + ((s >> 40) as f32 / (1u64 << 24) as f32) * (hi - lo)
        })
        .collect()
}

fn t32(dims: &[usize], seed: u64, lo: f32, hi: f32) -> Tensor {
    let n = dims.iter().product();
    Tensor::from_vec(dims.to_vec(), rand(n, seed, lo, hi)).expect("tensor")
}

fn t16(dims: &[usize], seed: u64, lo: f32, hi: f32) -> Tensor {
    let n = dims.iter().product();
    let v: Vec<f16> = rand(n, seed, lo, hi)
        .into_iter()
        .map(f16::from_f32)
        .collect();
    Tensor::from_vec(dims.to_vec(), v).expect("tensor")
}

fn values(t: &Tensor) -> Vec<f32> {
    match t.dtype() {
        DType::F16 => t
            .to_vec::<f16>()
            .expect("f16")
            .into_iter()
            .map(f16::to_f32)
            .collect(),
        _ => t.to_vec::<f32>().expect("f32"),
    }
}

fn fixed(t: &Tensor) -> ValueType {
    let dims: Vec<u64> = t.dims().iter().map(|&d| d as u64).collect();
    ValueType::new(t.dtype(), Shape::fixed(&dims))
}

/// Runs `op` on the GPU (through `KernelSpec::select`, expecting `family`)
/// and on the CPU; returns (gpu, cpu) values of the first result. Operands
/// in `consts` are given to `select` as compile-time constants.
fn run_both(
    ctx: &GpuContext,
    op: &Op,
    inputs: &[Option<Tensor>],
    consts: &[usize],
    family: Family,
    schedule: Option<Schedule>,
) -> (Vec<f32>, Vec<f32>) {
    let refs: Vec<Option<&Tensor>> = inputs.iter().map(Option::as_ref).collect();
    let cpu = eval_node(op, &refs, 1).expect("cpu").remove(0);
    let in_types: Vec<Option<ValueType>> = inputs.iter().map(|t| t.as_ref().map(fixed)).collect();
    let out_type = fixed(&cpu);
    let cx = NodeCtx {
        name: "node",
        op,
        inputs: in_types.iter().map(Option::as_ref).collect(),
        consts: refs
            .iter()
            .enumerate()
            .map(|(i, t)| if consts.contains(&i) { *t } else { None })
            .collect(),
        outputs: vec![&out_type],
        caps: &ctx.caps,
    };
    let spec = KernelSpec::select(&cx).unwrap_or_else(|| panic!("no kernel for {op:?}"));
    assert_eq!(spec.family(), family, "{op:?}");
    let schedule = schedule.unwrap_or_else(|| Schedule::default_for(family, &ctx.caps));
    let kernel = spec.emit(&schedule).expect("emit");
    let dims: Vec<Option<&[usize]>> = inputs
        .iter()
        .map(|t| t.as_ref().map(|t| t.dims()))
        .collect();
    let launch = spec
        .launch(&dims, &[cpu.dims()], &schedule)
        .expect("launch");
    let bound: Vec<&[u8]> = spec
        .bound_inputs()
        .iter()
        .map(|&i| inputs[i].as_ref().expect("bound operand").bytes())
        .collect();
    let out = ctx
        .run_kernel_once(&kernel, &bound, &[cpu.bytes().len()], &launch)
        .expect("gpu run");
    let gpu = Tensor::from_raw(cpu.dtype(), cpu.dims().to_vec(), &out[0]).expect("gpu tensor");
    (values(&gpu), values(&cpu))
}

/// Asserts |g - c| <= tol(i, c) for every element.
fn assert_close(what: &str, gpu: &[f32], cpu: &[f32], tol: impl Fn(usize, f32) -> f32) {
    assert_eq!(gpu.len(), cpu.len(), "{what}: lengths");
    let mut worst = (0.0f32, 0usize);
    for (i, (&g, &c)) in gpu.iter().zip(cpu).enumerate() {
        let err = (g - c).abs();
        // A NaN on either side fails.
        if err.is_nan() || err > tol(i, c) {
            panic!(
                "{what}: element {i}: gpu {g}, cpu {c} (tolerance {})",
                tol(i, c)
            );
        }
        if err > worst.0 {
            worst = (err, i);
        }
    }
    eprintln!(
        "{what}: {} values, largest difference {:e} at {}",
        gpu.len(),
        worst.0,
        worst.1
    );
}

fn reduce(kind: ReduceKind, axes: Option<Vec<i64>>, keepdims: bool) -> Op {
    Op::Reduce {
        kind,
        axes,
        keepdims,
        noop_with_empty_axes: false,
    }
}

const KINDS: [ReduceKind; 10] = [
    ReduceKind::Sum,
    ReduceKind::Mean,
    ReduceKind::Max,
    ReduceKind::Min,
    ReduceKind::Prod,
    ReduceKind::L1,
    ReduceKind::L2,
    ReduceKind::LogSum,
    ReduceKind::LogSumExp,
    ReduceKind::SumSquare,
];

/// Checks one reduction of `x` against the CPU, with the tolerance of its kind.
fn check_reduce(
    ctx: &GpuContext,
    x: &Tensor,
    kind: ReduceKind,
    axes: Option<Vec<i64>>,
    keepdims: bool,
) {
    let what = format!(
        "{kind:?} over {axes:?} of {:?} keepdims={keepdims}",
        x.dims()
    );
    let op = reduce(kind, axes.clone(), keepdims);
    let (gpu, cpu) = run_both(ctx, &op, &[Some(x.clone())], &[], Family::Reduce, None);
    // Σ|x| (or mean |x|) per output: the scale of a sum's rounding error.
    let scale = match kind {
        ReduceKind::Sum | ReduceKind::Mean => {
            let k = if kind == ReduceKind::Sum {
                ReduceKind::L1
            } else {
                ReduceKind::Mean
            };
            let abs: Vec<f32> = values(x).iter().map(|v| v.abs()).collect();
            let abs = Tensor::from_vec(x.dims().to_vec(), abs).expect("tensor");
            values(&eval_node(&reduce(k, axes, keepdims), &[Some(&abs)], 1).expect("cpu")[0])
        }
        _ => vec![0.0; cpu.len()],
    };
    let half = if x.dtype() == DType::F16 {
        1.0 / 1024.0
    } else {
        0.0
    };
    assert_close(&what, &gpu, &cpu, |i, c| {
        1e-5 * scale[i] + (1e-5 + half) * c.abs() + 1e-6
    });
}

#[test]
fn every_reduce_kind_over_several_axis_sets() {
    let Some(ctx) = test_context() else { return };
    // 3 × 5 × 7: no size is a multiple of anything the kernel tiles by.
    let dims = [3usize, 5, 7];
    let axis_sets: [Option<Vec<i64>>; 7] = [
        Some(vec![-1]),
        Some(vec![1]),
        Some(vec![0]),
        Some(vec![0, 2]),
        Some(vec![1, 2]),
        Some(vec![2, 0, 1]),
        None,
    ];
    for (k, kind) in KINDS.into_iter().enumerate() {
        // Products and log-sums of positive values near 1 stay finite.
        let (lo, hi) = match kind {
            ReduceKind::Prod | ReduceKind::LogSum => (0.5, 1.5),
            _ => (-2.0, 2.0),
        };
        let x = t32(&dims, 10 + k as u64, lo, hi);
        for (a, axes) in axis_sets.iter().enumerate() {
            check_reduce(&ctx, &x, kind, axes.clone(), (a + k).is_multiple_of(2));
        }
    }
}

#[test]
fn reductions_of_long_short_and_rank_one_rows() {
    let Some(ctx) = test_context() else { return };
    // Rows longer than the workgroup (several elements per invocation).
    let long = t32(&[3, 1000], 1, -2.0, 2.0);
    for kind in [
        ReduceKind::Sum,
        ReduceKind::Max,
        ReduceKind::LogSumExp,
        ReduceKind::L2,
    ] {
        check_reduce(&ctx, &long, kind, Some(vec![1]), false);
    }
    let long_pos = t32(&[2, 700], 2, 0.995, 1.005);
    check_reduce(&ctx, &long_pos, ReduceKind::Prod, Some(vec![-1]), true);
    // Length-1 groups, a rank-1 input reduced to a scalar, and a reduction
    // over the outer axis of a wide tensor (many short, strided groups).
    let ones = t32(&[4, 1], 3, -2.0, 2.0);
    check_reduce(&ctx, &ones, ReduceKind::Mean, Some(vec![1]), true);
    check_reduce(&ctx, &ones, ReduceKind::LogSumExp, Some(vec![1]), false);
    let vector = t32(&[300], 4, -2.0, 2.0);
    check_reduce(&ctx, &vector, ReduceKind::Sum, None, false);
    check_reduce(&ctx, &vector, ReduceKind::Min, Some(vec![0]), true);
    let wide = t32(&[2, 3, 300], 5, -2.0, 2.0);
    check_reduce(&ctx, &wide, ReduceKind::Mean, Some(vec![0]), false);
    check_reduce(&ctx, &wide, ReduceKind::Max, Some(vec![0, 2]), true);
    // LogSumExp ignores non-finite elements when choosing the shift.
    let mut v = rand(12, 6, -2.0, 2.0);
    v[1] = f32::NEG_INFINITY;
    let with_inf = Tensor::from_vec(vec![3, 4], v).expect("tensor");
    check_reduce(&ctx, &with_inf, ReduceKind::LogSumExp, Some(vec![1]), false);
}

#[test]
fn reduce_axes_from_a_constant_operand_and_the_noop_form() {
    let Some(ctx) = test_context() else { return };
    let x = t32(&[4, 6, 5], 7, -2.0, 2.0);
    let axes = Tensor::from_vec(vec![2], vec![-1i64, 1]).expect("axes");
    let op = reduce(ReduceKind::SumSquare, None, false);
    let (gpu, cpu) = run_both(
        &ctx,
        &op,
        &[Some(x.clone()), Some(axes)],
        &[1],
        Family::Reduce,
        None,
    );
    assert_eq!(cpu.len(), 4);
    assert_close("axes operand", &gpu, &cpu, |_, c| 1e-5 * c.abs() + 1e-6);
    // noop_with_empty_axes and no axes: the identity, bit for bit.
    let op = Op::Reduce {
        kind: ReduceKind::L1,
        axes: None,
        keepdims: true,
        noop_with_empty_axes: true,
    };
    let (gpu, cpu) = run_both(&ctx, &op, &[Some(x.clone())], &[], Family::Reduce, None);
    assert_eq!(gpu, cpu);
    assert_eq!(cpu, values(&x));
}

#[test]
fn reduce_with_odd_workgroups() {
    let Some(ctx) = test_context() else { return };
    let x = t32(&[5, 77], 8, -2.0, 2.0);
    for wg in [[1, 1, 1], [3, 1, 1], [48, 1, 1], [16, 4, 1]] {
        let sched = Schedule {
            workgroup: wg,
            tile: [1, 1, 1],
            vector: 1,
        };
        for kind in [ReduceKind::Sum, ReduceKind::Min, ReduceKind::LogSumExp] {
            let op = reduce(kind, Some(vec![1]), false);
            let (gpu, cpu) = run_both(
                &ctx,
                &op,
                &[Some(x.clone())],
                &[],
                Family::Reduce,
                Some(sched.clone()),
            );
            assert_close(&format!("{kind:?} wg {wg:?}"), &gpu, &cpu, |_, c| {
                1e-5 * (77.0 * 2.0) + 1e-5 * c.abs()
            });
        }
    }
}

/// Softmax / LogSoftmax of `x` along `axis` against the CPU.
fn check_softmax(ctx: &GpuContext, x: &Tensor, axis: i64, log: bool) {
    let op = if log {
        Op::LogSoftmax { axis }
    } else {
        Op::Softmax { axis }
    };
    let what = format!("{op:?} of {:?}", x.dims());
    let (gpu, cpu) = run_both(ctx, &op, &[Some(x.clone())], &[], Family::Reduce, None);
    let big = values(x).iter().fold(0.0f32, |a, v| a.max(v.abs()));
    let half = if x.dtype() == DType::F16 {
        1.0 / 1024.0
    } else {
        0.0
    };
    if log {
        assert_close(&what, &gpu, &cpu, |_, c| {
            1e-5 * big + (1e-5 + half) * c.abs() + 1e-6
        });
    } else {
        assert_close(&what, &gpu, &cpu, |_, c| (1e-5 + half) * c.abs() + 1e-6);
    }
}

#[test]
fn softmax_and_log_softmax_along_last_and_middle_axes() {
    let Some(ctx) = test_context() else { return };
    // Scores up to ±40: e^(x - max) spans e^-80 .. 1.
    let cases: [(&[usize], i64); 6] = [
        (&[5, 300], -1),
        (&[3, 7, 5], 1),
        (&[3, 7, 5], 0),
        (&[4, 1], -1),
        (&[2, 9, 3, 4], 2),
        (&[1], 0),
    ];
    for (i, (dims, axis)) in cases.iter().enumerate() {
        let x = t32(dims, 20 + i as u64, -40.0, 40.0);
        check_softmax(&ctx, &x, *axis, false);
        check_softmax(&ctx, &x, *axis, true);
    }
}

fn layer_norm(axis: i64) -> Op {
    Op::LayerNorm {
        axis,
        epsilon: Float(1e-5),
    }
}

fn check_norm(ctx: &GpuContext, op: &Op, inputs: &[Option<Tensor>]) {
    let what = format!(
        "{op:?} of {:?}",
        inputs[0].as_ref().map(|t| t.dims().to_vec())
    );
    let (gpu, cpu) = run_both(ctx, op, inputs, &[], Family::Norm, None);
    let half = if inputs[0].as_ref().is_some_and(|t| t.dtype() == DType::F16) {
        1.0 / 1024.0
    } else {
        0.0
    };
    assert_close(&what, &gpu, &cpu, |_, c| {
        (1e-5 + half) * c.abs() + 1e-5 + half
    });
}

#[test]
fn layer_norm_with_and_without_bias() {
    let Some(ctx) = test_context() else { return };
    // Rows longer than the workgroup, with an offset mean.
    let x = t32(&[3, 7, 300], 30, 1.0, 5.0);
    let w = t32(&[300], 31, -2.0, 2.0);
    let b = t32(&[300], 32, -1.0, 1.0);
    check_norm(
        &ctx,
        &layer_norm(-1),
        &[Some(x.clone()), Some(w.clone()), Some(b.clone())],
    );
    check_norm(
        &ctx,
        &layer_norm(2),
        &[Some(x.clone()), Some(w.clone()), None],
    );
    // Two normalised axes; the scale a full row, the bias broadcast over
    // the first of them; then a scale broadcast along the last axis.
    let x = t32(&[5, 6, 4], 33, -3.0, 3.0);
    let w = t32(&[6, 4], 34, -2.0, 2.0);
    let b = t32(&[4], 35, -1.0, 1.0);
    check_norm(&ctx, &layer_norm(1), &[Some(x.clone()), Some(w), Some(b)]);
    let w = t32(&[6, 1], 36, -2.0, 2.0);
    check_norm(&ctx, &layer_norm(-2), &[Some(x.clone()), Some(w), None]);
    // Every axis normalised (one row), and rows of length 1.
    let w = t32(&[5, 6, 4], 37, -2.0, 2.0);
    check_norm(&ctx, &layer_norm(0), &[Some(x), Some(w), None]);
    let x = t32(&[9, 1], 38, -3.0, 3.0);
    let w = t32(&[1], 39, -2.0, 2.0);
    let b = t32(&[1], 40, -1.0, 1.0);
    check_norm(&ctx, &layer_norm(-1), &[Some(x), Some(w), Some(b)]);
}

#[test]
fn rms_norm_rows() {
    let Some(ctx) = test_context() else { return };
    let rms = |axis| Op::RmsNorm {
        axis,
        epsilon: Float(1e-6),
    };
    // SmolLM2's hidden size, with a sequence of 5.
    let x = t32(&[1, 5, 576], 41, -3.0, 3.0);
    let w = t32(&[576], 42, 0.5, 1.5);
    check_norm(&ctx, &rms(-1), &[Some(x), Some(w)]);
    let x = t32(&[7, 3, 5], 43, -3.0, 3.0);
    let w = t32(&[3, 5], 44, 0.5, 1.5);
    check_norm(&ctx, &rms(1), &[Some(x), Some(w)]);
}

#[test]
fn half_precision_kernels() {
    let Some(ctx) = test_context() else { return };
    if !ctx.caps.shader_f16 {
        eprintln!("skipping: the adapter has no shader-f16");
        return;
    }
    let x = t16(&[3, 300], 50, -4.0, 4.0);
    check_softmax(&ctx, &x, -1, false);
    check_reduce(&ctx, &x, ReduceKind::Mean, Some(vec![1]), true);
    let w = t16(&[300], 51, -2.0, 2.0);
    let b = t16(&[300], 52, -1.0, 1.0);
    check_norm(&ctx, &layer_norm(-1), &[Some(x), Some(w), Some(b)]);
}
