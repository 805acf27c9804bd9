//! The matmul kernels (MatMul, Gemm, FusedMatMul; dense f32 and f16, packed
//! quantized weights) against the CPU executor's kernels on seeded random
//! data. Tests skip (with a message) on machines without a GPU adapter.
//!
//! Tolerance: the GPU sums in another order than the CPU (tiles of 16, or
//! per-invocation partial sums added up in workgroup memory), so each value
//! may differ by a few roundings of the running sum. Both sides round each
//! partial sum to f32, so the difference is bounded by a small multiple of
//! ε·Σ|a·b| (ε = 2⁻²⁴) for the inner dimensions used here (≤ 300); the
//! tests allow 1e-5 of Σ|a·b| plus the magnitude of the epilogue's operands,
//! and 1e-5 of the value itself. f16 results allow one f16 rounding more
//! (2⁻¹¹ of the value), since either side may round a value that sits near a
//! rounding boundary of f16 the other way.
#![cfg(feature = "gpu")]

use half::f16;
use kiln_codegen::{Family, KernelSpec, NodeCtx, Schedule};
use kiln_ir::fused::{BinaryFn, Instr, Program, UnaryFn};
use kiln_ir::quant::{dequantize, quantize_rtn, QuantFormat};
use kiln_ir::{DType, Float, GeluApprox, Op, Shape, Tensor, ValueType};
use kiln_runtime::cpu::eval_node;
use kiln_runtime::gpu::{test_context, GpuContext};
use std::cell::Cell;

/// Deterministic pseudo-random values in [-1, 1), with an outlier every 53
/// values so that packed groups have codes far from their zero point.
fn rand(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|i| {
            s = s
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let v = ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0;
            if i % 53 == 0 {
                v * 4.0
            } else {
                v
            }
        })
        .collect()
}

fn t32(dims: &[usize], seed: u64) -> Tensor {
    let n = dims.iter().product();
    Tensor::from_vec(dims.to_vec(), rand(n, seed)).expect("tensor")
}

fn t16(dims: &[usize], seed: u64) -> Tensor {
    let n = dims.iter().product();
    let v: Vec<f16> = rand(n, seed).into_iter().map(f16::from_f32).collect();
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

/// |t| as f32 (a packed weight dequantized first).
fn abs_f32(t: &Tensor) -> Tensor {
    let v: Vec<f32> = match t.packed_view() {
        Some(view) => view.expect("packed view").dequantize(),
        None => values(t),
    };
    Tensor::from_vec(t.dims().to_vec(), v.into_iter().map(f32::abs).collect()).expect("tensor")
}

/// `|acc| + |x1| + .. + |xk|`: the magnitude a result's rounding error
/// scales with, when run on |A| and |B|.
fn magnitude_program(extras: usize) -> Program {
    let inputs = 1 + extras as u8;
    let mut instrs = Vec::new();
    let mut acc = 0u8;
    for e in 1..inputs {
        instrs.push(Instr::Unary(UnaryFn::Abs, e));
        let abs = inputs + instrs.len() as u8 - 1;
        instrs.push(Instr::Binary(BinaryFn::Add, acc, abs));
        acc = abs + 1;
    }
    Program { inputs, instrs }
}

/// Σ|a·b| (plus |beta·C| or the epilogue operands' magnitudes) per output.
fn magnitudes(op: &Op, inputs: &[Option<Tensor>]) -> Vec<f32> {
    let abs: Vec<Option<Tensor>> = inputs.iter().map(|t| t.as_ref().map(abs_f32)).collect();
    let refs: Vec<Option<&Tensor>> = abs.iter().map(Option::as_ref).collect();
    let op = match op {
        Op::MatMul => Op::MatMul,
        Op::Gemm {
            alpha,
            beta,
            trans_a,
            trans_b,
        } => Op::Gemm {
            alpha: Float(alpha.0.abs()),
            beta: Float(beta.0.abs()),
            trans_a: *trans_a,
            trans_b: *trans_b,
        },
        Op::FusedMatMul {
            trans_a,
            trans_b,
            epilogue,
        } => Op::FusedMatMul {
            trans_a: *trans_a,
            trans_b: *trans_b,
            epilogue: magnitude_program(epilogue.inputs as usize - 1),
        },
        other => panic!("not a product: {other:?}"),
    };
    values(&eval_node(&op, &refs, 1).expect("magnitudes")[0])
}

thread_local! {
    /// The largest |gpu − cpu| / (Σ|a·b| + |cpu|) seen, for the report.
    static WORST: Cell<f64> = const { Cell::new(0.0) };
}

/// Which path a launch is expected to take.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Path {
    Tiled,
    Decode,
}

/// Runs `op` on `inputs` through the GPU kernel (default schedule) and
/// through `eval_node`, and compares.
fn check(ctx: &GpuContext, what: &str, op: &Op, inputs: &[Option<Tensor>], path: Path) {
    let schedule = Schedule::default_for(Family::MatMul, ctx.caps());
    check_with(ctx, what, op, inputs, path, &schedule);
}

/// [`check`] with the kernel generated for `schedule`.
fn check_with(
    ctx: &GpuContext,
    what: &str,
    op: &Op,
    inputs: &[Option<Tensor>],
    path: Path,
    schedule: &Schedule,
) {
    let refs: Vec<Option<&Tensor>> = inputs.iter().map(Option::as_ref).collect();
    let want = eval_node(op, &refs, 1).unwrap_or_else(|e| panic!("{what}: cpu: {e}"));
    let want = &want[0];
    let types: Vec<Option<ValueType>> = inputs
        .iter()
        .map(|t| {
            t.as_ref().map(|t| {
                let dims: Vec<u64> = t.dims().iter().map(|&d| d as u64).collect();
                ValueType::new(t.dtype(), Shape::fixed(&dims))
            })
        })
        .collect();
    let out_dims: Vec<u64> = want.dims().iter().map(|&d| d as u64).collect();
    let out_ty = ValueType::new(want.dtype(), Shape::fixed(&out_dims));
    let caps = ctx.caps();
    let cx = NodeCtx {
        name: what,
        op,
        inputs: types.iter().map(Option::as_ref).collect(),
        consts: vec![None; inputs.len()],
        outputs: vec![&out_ty],
        caps,
    };
    let spec = KernelSpec::select(&cx).unwrap_or_else(|| panic!("{what}: no kernel selected"));
    assert_eq!(spec.family(), Family::MatMul, "{what}");
    let kernel = spec.emit(schedule).expect("emit");
    assert!(
        kernel.fits(caps),
        "{what}: {} does not fit the device",
        kernel.name
    );
    let shapes: Vec<Option<&[usize]>> = inputs
        .iter()
        .map(|t| t.as_ref().map(Tensor::dims))
        .collect();
    let launch = spec
        .launch(&shapes, &[want.dims()], schedule)
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let decode = launch.params[4] == 1;
    assert_eq!(decode, path == Path::Decode, "{what}: path");
    let bound: Vec<&[u8]> = spec
        .bound_inputs()
        .iter()
        .map(|&i| inputs[i].as_ref().expect("bound operand").bytes())
        .collect();
    let out = ctx
        .run_kernel_once(&kernel, &bound, &[want.bytes().len()], &launch)
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let got: Vec<f32> = match want.dtype() {
        DType::F16 => bytemuck::cast_slice::<u8, u16>(&out[0])
            .iter()
            .map(|&b| f16::from_bits(b).to_f32())
            .collect(),
        _ => bytemuck::cast_slice::<u8, f32>(&out[0]).to_vec(),
    };
    let want_v = values(want);
    let mags = magnitudes(op, inputs);
    let f16_out = want.dtype() == DType::F16;
    assert_eq!(got.len(), want_v.len(), "{what}");
    for (i, ((&g, &w), &m)) in got.iter().zip(&want_v).zip(&mags).enumerate() {
        let scale = f64::from(m) + f64::from(w.abs());
        let mut tol = 1e-5 * scale + 1e-6;
        if f16_out {
            tol += f64::from(w.abs()) * 2f64.powi(-10);
        }
        let err = f64::from((g - w).abs());
        assert!(
            err <= tol,
            "{what} (kernel {}): element {i} of {:?}: gpu {g}, cpu {w}, |Σ|ab|| {m}, tolerance {tol:e}",
            kernel.name,
            want.dims()
        );
        if !f16_out && scale > 0.0 {
            WORST.with(|c| c.set(c.get().max(err / scale)));
        }
    }
}

fn report(what: &str) {
    WORST.with(|c| {
        eprintln!(
            "{what}: largest |gpu − cpu| / (Σ|a·b| + |cpu|) = {:.2e}",
            c.get()
        )
    });
}

fn fused(trans_a: bool, trans_b: bool, epilogue: Program) -> Op {
    Op::FusedMatMul {
        trans_a,
        trans_b,
        epilogue,
    }
}

/// `gelu(acc + bias) + residual`.
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

#[test]
fn dense_matmul_odd_sizes_batches_and_vectors() {
    let Some(ctx) = test_context() else { return };
    let mm = Op::MatMul;
    let mut seed = 1;
    let mut case = |what: &str, a: &[usize], b: &[usize], path: Path| {
        seed += 2;
        check(
            &ctx,
            what,
            &mm,
            &[Some(t32(a, seed)), Some(t32(b, seed + 1))],
            path,
        );
    };
    // Not multiples of the 64×64×16 tile or of the 16×16 workgroup.
    case("odd", &[67, 45], &[45, 71], Path::Tiled);
    case("deep", &[9, 300], &[300, 130], Path::Tiled);
    // Batch axes broadcast both ways.
    case("broadcast", &[2, 1, 13, 9], &[3, 9, 17], Path::Tiled);
    // A shared weight: the six batches fold into one product of 60 rows.
    case("folded", &[2, 3, 10, 20], &[20, 33], Path::Tiled);
    // A batched weight broadcast over A's leading axis.
    case("batched weight", &[4, 2, 11, 7], &[2, 7, 5], Path::Tiled);
    // Decode-shaped: one row, a few rows (a pass of four, then one), batched.
    case("matvec", &[1, 150], &[150, 97], Path::Decode);
    case("few rows", &[5, 70], &[70, 41], Path::Decode);
    case("batched decode", &[3, 5, 40], &[3, 40, 19], Path::Decode);
    case("folded decode", &[2, 3, 1, 20], &[20, 33], Path::Decode);
    // 1-d operands as numpy promotes them.
    case("vector × matrix", &[45], &[45, 30], Path::Decode);
    case("matrix × vector", &[3, 12, 45], &[45], Path::Tiled);
    case("dot", &[45], &[45], Path::Decode);
    case("empty inner", &[9, 0], &[0, 5], Path::Tiled);
    report("dense matmul");
}

#[test]
fn gemm_transposes_and_c_broadcasts() {
    let Some(ctx) = test_context() else { return };
    let (m, k, n) = (37, 29, 70);
    let mut seed = 100;
    for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
        for c_dims in [
            None,
            Some(vec![n]),
            Some(vec![m, 1]),
            Some(vec![m, n]),
            Some(vec![]),
        ] {
            for (alpha, beta) in [(1.0, 1.0), (0.5, -2.0)] {
                seed += 3;
                let op = Op::Gemm {
                    alpha: Float(alpha),
                    beta: Float(beta),
                    trans_a: ta,
                    trans_b: tb,
                };
                let a = if ta { [k, m] } else { [m, k] };
                let b = if tb { [n, k] } else { [k, n] };
                let c = c_dims.as_ref().map(|d| t32(d, seed + 2));
                let what = format!("gemm ta={ta} tb={tb} C={c_dims:?} α={alpha} β={beta}");
                check(
                    &ctx,
                    &what,
                    &op,
                    &[Some(t32(&a, seed)), Some(t32(&b, seed + 1)), c],
                    Path::Tiled,
                );
            }
        }
    }
    // The tied output head of a language model: one row against a
    // transposed table (decode path, columns contiguous).
    let op = Op::Gemm {
        alpha: Float(1.0),
        beta: Float(0.0),
        trans_a: false,
        trans_b: true,
    };
    check(
        &ctx,
        "head",
        &op,
        &[Some(t32(&[1, 96], 7)), Some(t32(&[301, 96], 8))],
        Path::Decode,
    );
    report("gemm");
}

#[test]
fn fused_matmul_bias_gelu_residual() {
    let Some(ctx) = test_context() else { return };
    let mut seed = 500;
    for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
        for (rows, path) in [(37, Path::Tiled), (1, Path::Decode)] {
            seed += 4;
            let (k, n) = (50, 70);
            let a = if ta { [2, k, rows] } else { [2, rows, k] };
            let b = if tb { [n, k] } else { [k, n] };
            let inputs = [
                Some(t32(&a, seed)),
                Some(t32(&b, seed + 1)),
                Some(t32(&[n], seed + 2)),
                Some(t32(&[2, rows, n], seed + 3)),
            ];
            let what = format!("fused ta={ta} tb={tb} rows={rows}");
            check(
                &ctx,
                &what,
                &fused(ta, tb, bias_gelu_residual()),
                &inputs,
                path,
            );
        }
    }
    // Batched operands, and epilogue operands broadcast along rows and batches.
    let inputs = [
        Some(t32(&[3, 1, 9, 16], 1)),
        Some(t32(&[2, 16, 20], 2)),
        Some(t32(&[2, 1, 20], 3)),
        Some(t32(&[9, 1], 4)),
    ];
    check(
        &ctx,
        "fused batched",
        &fused(false, false, bias_gelu_residual()),
        &inputs,
        Path::Tiled,
    );
    let inputs = [
        Some(t32(&[3, 1, 2, 16], 5)),
        Some(t32(&[2, 16, 20], 6)),
        Some(t32(&[2, 1, 20], 7)),
        Some(t32(&[2, 1], 8)),
    ];
    check(
        &ctx,
        "fused batched decode",
        &fused(false, false, bias_gelu_residual()),
        &inputs,
        Path::Decode,
    );
    report("fused matmul");
}

/// A packed `[k, n]` weight of `format`, quantized from seeded values.
fn packed(k: usize, n: usize, format: QuantFormat, seed: u64) -> Tensor {
    let w = quantize_rtn(&rand(k * n, seed), k, n, format).expect("quantize");
    // The kernel must decode the same bytes the CPU reads.
    let t = Tensor::from_packed(&w);
    let deq = dequantize(&w);
    assert_eq!(deq.len(), k * n);
    t
}

#[test]
fn packed_weights_every_format() {
    let Some(ctx) = test_context() else { return };
    // K = 101: a short last group for every group size, odd column strides
    // (unaligned columns) for int8 and int4, and a padded int3 block.
    let (k, n) = (101, 29);
    for (i, format) in QuantFormat::all().into_iter().enumerate() {
        let w = packed(k, n, format, 900 + i as u64);
        for (rows, path) in [(1, Path::Decode), (6, Path::Decode), (37, Path::Tiled)] {
            let x = t32(&[rows, k], 1000 + i as u64);
            let what = format!("{format} rows={rows}");
            check(&ctx, &what, &Op::MatMul, &[Some(x), Some(w.clone())], path);
        }
    }
    report("packed matmul");
}

#[test]
fn packed_weights_with_epilogue_and_transposed_activations() {
    let Some(ctx) = test_context() else { return };
    let (k, n) = (128, 70);
    for (i, f) in ["w8", "w4g32a", "w3g64", "w4g128"].into_iter().enumerate() {
        let format = QuantFormat::parse(f).expect("format");
        let w = packed(k, n, format, 40 + i as u64);
        for (rows, path) in [(1, Path::Decode), (19, Path::Tiled)] {
            for ta in [false, true] {
                let a = if ta { [2, k, rows] } else { [2, rows, k] };
                let inputs = [
                    Some(t32(&a, 50 + i as u64)),
                    Some(w.clone()),
                    Some(t32(&[n], 60)),
                    Some(t32(&[2, rows, n], 61)),
                ];
                let what = format!("fused {f} rows={rows} ta={ta}");
                // Two batches of one row fold into two rows: still decode-shaped.
                check(
                    &ctx,
                    &what,
                    &fused(ta, false, bias_gelu_residual()),
                    &inputs,
                    path,
                );
            }
        }
    }
    // Other schedules: a small square tile, and a tile depth of 4 (not whole
    // units of 8 or 4 codes, so the B tile decodes value by value).
    let schedules = [
        Schedule {
            workgroup: [8, 8, 1],
            tile: [32, 32, 8],
            vector: 4,
        },
        Schedule {
            workgroup: [16, 4, 1],
            tile: [16, 64, 4],
            vector: 4,
        },
    ];
    for schedule in &schedules {
        for f in ["w8", "w4g32", "w3g64a"] {
            let w = packed(101, 70, QuantFormat::parse(f).expect("format"), 77);
            for (rows, path) in [(3, Path::Decode), (45, Path::Tiled)] {
                let what = format!("{f} rows={rows} {schedule:?}");
                let inputs = [Some(t32(&[rows, 101], 78)), Some(w.clone())];
                check_with(&ctx, &what, &Op::MatMul, &inputs, path, schedule);
            }
        }
        let inputs = [Some(t32(&[45, 33], 79)), Some(t32(&[33, 70], 80))];
        check_with(&ctx, "dense", &Op::MatMul, &inputs, Path::Tiled, schedule);
    }
    // A language-model shaped projection: 576 inputs in groups of 128 (the
    // last one short), one token and a short prompt.
    let w = packed(576, 96, QuantFormat::parse("w4g128a").expect("format"), 3);
    check(
        &ctx,
        "smollm decode",
        &Op::MatMul,
        &[Some(t32(&[1, 1, 576], 4)), Some(w.clone())],
        Path::Decode,
    );
    check(
        &ctx,
        "smollm prefill",
        &Op::MatMul,
        &[Some(t32(&[1, 24, 576], 5)), Some(w)],
        Path::Tiled,
    );
    report("packed fused matmul");
}

#[test]
fn f16_products_accumulate_in_f32() {
    let Some(ctx) = test_context() else { return };
    if !ctx.caps().shader_f16 {
        eprintln!("skipping: the adapter has no shader-f16");
        return;
    }
    let mm = Op::MatMul;
    check(
        &ctx,
        "f16 tiled",
        &mm,
        &[Some(t16(&[67, 45], 1)), Some(t16(&[45, 71], 2))],
        Path::Tiled,
    );
    check(
        &ctx,
        "f16 decode",
        &mm,
        &[Some(t16(&[1, 150], 3)), Some(t16(&[150, 33], 4))],
        Path::Decode,
    );
    check(
        &ctx,
        "f16 batched",
        &mm,
        &[Some(t16(&[2, 1, 13, 9], 5)), Some(t16(&[3, 9, 17], 6))],
        Path::Tiled,
    );
    let op = Op::Gemm {
        alpha: Float(0.5),
        beta: Float(1.5),
        trans_a: true,
        trans_b: true,
    };
    let inputs = [
        Some(t16(&[29, 37], 7)),
        Some(t16(&[70, 29], 8)),
        Some(t16(&[70], 9)),
    ];
    check(&ctx, "f16 gemm", &op, &inputs, Path::Tiled);
}
