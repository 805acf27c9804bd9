use super::*;
use crate::validate::{to_msl, to_spirv, validate};
use kiln_ir::fused::UnaryFn;
use kiln_ir::{GeluApprox, Shape};

fn vt(dtype: DType, dims: &[u64]) -> ValueType {
    ValueType::new(dtype, Shape::fixed(dims))
}

/// `select` for `op` on operands and result of these types.
fn sel(op: &Op, inputs: &[Option<ValueType>], out: ValueType, caps: &DeviceCaps) -> Option<Spec> {
    let cx = NodeCtx {
        name: "n",
        op,
        inputs: inputs.iter().map(Option::as_ref).collect(),
        consts: vec![None; inputs.len()],
        outputs: vec![&out],
        caps,
    };
    Spec::select(&cx)
}

fn f32t(dims: &[u64]) -> Option<ValueType> {
    Some(vt(DType::F32, dims))
}

fn fmt(s: &str) -> QuantFormat {
    QuantFormat::parse(s).unwrap()
}

/// `epilogue(acc, bias) = gelu(acc + bias)`, then `+ residual`.
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

fn fused(trans_a: bool, trans_b: bool, epilogue: Program) -> Op {
    Op::FusedMatMul {
        trans_a,
        trans_b,
        epilogue,
    }
}

fn gemm(alpha: f32, beta: f32, trans_a: bool, trans_b: bool) -> Op {
    Op::Gemm {
        alpha: Float(alpha),
        beta: Float(beta),
        trans_a,
        trans_b,
    }
}

/// Every kernel parses, validates and translates to MSL and SPIR-V.
fn check(spec: &Spec, schedule: &Schedule) -> Kernel {
    let k = spec
        .emit(schedule)
        .unwrap_or_else(|e| panic!("{spec:?}: {e}"));
    validate(&k).unwrap_or_else(|e| panic!("{e}\n{}", k.wgsl));
    let msl = to_msl(&k).unwrap_or_else(|e| panic!("{e}"));
    assert!(msl.contains(&format!("[[buffer({})]]", k.storage_buffers() - 1)));
    let spv = to_spirv(&k).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(spv[0], 0x0723_0203);
    assert_eq!(k.inputs as usize, spec.bound_inputs().len());
    k
}

#[test]
fn selects_products_and_refuses_the_rest() {
    let web = DeviceCaps::webgpu();
    let mm = Op::MatMul;
    let s = sel(
        &mm,
        &[f32t(&[5, 7]), f32t(&[7, 3])],
        vt(DType::F32, &[5, 3]),
        &web,
    )
    .unwrap();
    assert_eq!(
        (s.elem, s.weight, s.batch_rank),
        (Elem::F32, Weight::Dense, 0)
    );
    assert!(s.epilogue.is_identity() && s.extras.is_empty());
    assert_eq!(s.bound_inputs(), vec![0, 1]);

    // Batched with broadcasting, vectors.
    let s = sel(
        &mm,
        &[f32t(&[2, 1, 5, 7]), f32t(&[3, 7, 4])],
        vt(DType::F32, &[2, 3, 5, 4]),
        &web,
    )
    .unwrap();
    assert_eq!(s.batch_rank, 2);
    assert!(sel(
        &mm,
        &[f32t(&[7]), f32t(&[7, 3])],
        vt(DType::F32, &[3]),
        &web
    )
    .is_some());
    assert!(sel(&mm, &[f32t(&[7]), f32t(&[7])], vt(DType::F32, &[]), &web).is_some());

    // Integers have no kernel; f16 only with shader-f16.
    let i32t = |d: &[u64]| Some(vt(DType::I32, d));
    assert!(sel(
        &mm,
        &[i32t(&[2, 2]), i32t(&[2, 2])],
        vt(DType::I32, &[2, 2]),
        &web
    )
    .is_none());
    let h = |d: &[u64]| Some(vt(DType::F16, d));
    assert!(sel(
        &mm,
        &[h(&[2, 2]), h(&[2, 2])],
        vt(DType::F16, &[2, 2]),
        &web
    )
    .is_none());
    let metal = DeviceCaps::metal();
    let s = sel(
        &mm,
        &[h(&[2, 2]), h(&[2, 2])],
        vt(DType::F16, &[2, 2]),
        &metal,
    )
    .unwrap();
    assert_eq!(s.elem, Elem::F16);

    // Packed weights: f32 activations, [K, N], never transposed.
    let q = |f: &str, d: &[u64]| Some(vt(DType::Quant(fmt(f)), d));
    let s = sel(
        &mm,
        &[f32t(&[1, 64]), q("w4g32a", &[64, 9])],
        vt(DType::F32, &[1, 9]),
        &web,
    )
    .unwrap();
    assert_eq!(s.weight, Weight::Packed(fmt("w4g32a")));
    assert_eq!(s.stem(), "qmatmul_w4g32a");
    let tb = fused(false, true, Program::identity());
    assert!(sel(
        &tb,
        &[f32t(&[1, 64]), q("w8", &[64, 9])],
        vt(DType::F32, &[1, 9]),
        &web
    )
    .is_none());

    // Gemm: C bound only when beta is not 0.
    let c = f32t(&[3]);
    let s = sel(
        &gemm(0.5, 2.0, true, false),
        &[f32t(&[7, 5]), f32t(&[7, 3]), c.clone()],
        vt(DType::F32, &[5, 3]),
        &web,
    )
    .unwrap();
    assert_eq!(s.bound_inputs(), vec![0, 1, 2]);
    assert_eq!(s.epilogue.eval(&[3.0, 5.0]), 0.5 * 3.0 + 2.0 * 5.0);
    let s = sel(
        &gemm(1.0, 0.0, false, false),
        &[f32t(&[5, 7]), f32t(&[7, 3]), c],
        vt(DType::F32, &[5, 3]),
        &web,
    )
    .unwrap();
    assert!(s.epilogue.is_identity() && s.extras.is_empty());
    assert!(sel(
        &gemm(1.0, 1.0, false, false),
        &[f32t(&[2, 5, 7]), f32t(&[7, 3])],
        vt(DType::F32, &[2, 5, 3]),
        &web
    )
    .is_none());

    // FusedMatMul: extras bound after A and B.
    let op = fused(false, false, bias_gelu_residual());
    let s = sel(
        &op,
        &[f32t(&[4, 8]), f32t(&[8, 6]), f32t(&[6]), f32t(&[4, 6])],
        vt(DType::F32, &[4, 6]),
        &web,
    )
    .unwrap();
    assert_eq!(s.bound_inputs(), vec![0, 1, 2, 3]);
    // Too many bindings for WebGPU's 8 storage buffers (A, B, 5 extras, y, params), not for Vulkan's 16.
    let five = Program {
        inputs: 6,
        instrs: std::iter::once(Instr::Binary(BinaryFn::Add, 0, 1))
            .chain((1..5).map(|i| Instr::Binary(BinaryFn::Add, 5 + i, i + 1)))
            .collect(),
    };
    five.validate().unwrap();
    let mut ins = vec![f32t(&[4, 8]), f32t(&[8, 6])];
    ins.extend((0..5).map(|_| f32t(&[6])));
    assert!(sel(
        &fused(false, false, five.clone()),
        &ins,
        vt(DType::F32, &[4, 6]),
        &web
    )
    .is_none());
    assert!(sel(
        &fused(false, false, five),
        &ins,
        vt(DType::F32, &[4, 6]),
        &DeviceCaps::vulkan()
    )
    .is_some());
    // A weight larger than one binding may span.
    let small = DeviceCaps {
        max_storage_binding_bytes: 1024,
        ..DeviceCaps::webgpu()
    };
    assert!(sel(
        &mm,
        &[f32t(&[2, 64]), f32t(&[64, 64])],
        vt(DType::F32, &[2, 64]),
        &small
    )
    .is_none());
    // Not a product.
    assert!(sel(&Op::Relu, &[f32t(&[2])], vt(DType::F32, &[2]), &web).is_none());
}

#[test]
fn every_variant_validates_and_translates() {
    let web = DeviceCaps::webgpu();
    let metal = DeviceCaps::metal();
    let schedules = [
        Schedule::default_for(Family::MatMul, &web),
        Schedule {
            workgroup: [8, 8, 1],
            tile: [32, 32, 8],
            vector: 4,
        },
        // A tile depth that is not whole units of packed codes.
        Schedule {
            workgroup: [16, 4, 1],
            tile: [16, 64, 4],
            vector: 4,
        },
    ];
    let mut specs = Vec::new();
    let mm = Op::MatMul;
    for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
        let a = if ta {
            f32t(&[3, 8, 5])
        } else {
            f32t(&[3, 5, 8])
        };
        let b = if tb { f32t(&[6, 8]) } else { f32t(&[8, 6]) };
        specs.push(
            sel(
                &fused(ta, tb, Program::identity()),
                &[a.clone(), b.clone()],
                vt(DType::F32, &[3, 5, 6]),
                &web,
            )
            .unwrap(),
        );
        specs.push(
            sel(
                &fused(ta, tb, bias_gelu_residual()),
                &[a, b, f32t(&[6]), f32t(&[3, 5, 6])],
                vt(DType::F32, &[3, 5, 6]),
                &web,
            )
            .unwrap(),
        );
        let a2 = if ta { f32t(&[8, 5]) } else { f32t(&[5, 8]) };
        let b2 = if tb { f32t(&[6, 8]) } else { f32t(&[8, 6]) };
        specs.push(
            sel(
                &gemm(0.5, 2.0, ta, tb),
                &[a2.clone(), b2.clone(), f32t(&[5, 1])],
                vt(DType::F32, &[5, 6]),
                &web,
            )
            .unwrap(),
        );
        let h = |v: Option<ValueType>| v.map(|t| vt(DType::F16, &t.shape.as_fixed().unwrap()));
        specs.push(
            sel(
                &gemm(1.0, 1.0, ta, tb),
                &[h(a2), h(b2), h(f32t(&[6]))],
                vt(DType::F16, &[5, 6]),
                &metal,
            )
            .unwrap(),
        );
    }
    specs.push(
        sel(
            &mm,
            &[f32t(&[2, 1, 5, 8]), f32t(&[3, 8, 6])],
            vt(DType::F32, &[2, 3, 5, 6]),
            &web,
        )
        .unwrap(),
    );
    specs.push(sel(&mm, &[f32t(&[8]), f32t(&[8])], vt(DType::F32, &[]), &web).unwrap());
    for f in QuantFormat::all() {
        let q = Some(vt(DType::Quant(f), &[64, 6]));
        specs.push(
            sel(
                &mm,
                &[f32t(&[2, 64]), q.clone()],
                vt(DType::F32, &[2, 6]),
                &web,
            )
            .unwrap(),
        );
        specs.push(
            sel(
                &fused(true, false, bias_gelu_residual()),
                &[f32t(&[2, 64, 3]), q, f32t(&[6]), f32t(&[3, 6])],
                vt(DType::F32, &[2, 3, 6]),
                &web,
            )
            .unwrap(),
        );
    }
    let mut names = std::collections::BTreeSet::new();
    for spec in &specs {
        for s in &schedules {
            let k = check(spec, s);
            assert!(
                k.workgroup_bytes <= web.max_workgroup_storage_bytes,
                "{}",
                k.name
            );
            assert!(k.fits(if spec.elem == Elem::F16 { &metal } else { &web }));
            names.insert(k.name);
        }
    }
    assert_eq!(
        names.len(),
        specs.len() * schedules.len(),
        "distinct sources"
    );
}

#[test]
fn tile_depth_shrinks_to_the_workgroup_memory() {
    let caps = DeviceCaps {
        max_workgroup_storage_bytes: 4096,
        ..DeviceCaps::webgpu()
    };
    let s = sel(
        &Op::MatMul,
        &[f32t(&[5, 7]), f32t(&[7, 3])],
        vt(DType::F32, &[5, 3]),
        &caps,
    )
    .unwrap();
    let k = check(&s, &Schedule::default_for(Family::MatMul, &caps));
    assert_eq!(k.workgroup_bytes, 4096, "64×8 + 8×64 floats");
    assert!(k.wgsl.contains("const TK: u32 = 8u;"));
    let tiny = DeviceCaps {
        max_workgroup_storage_bytes: 2048,
        ..DeviceCaps::webgpu()
    };
    // Four rows of partial sums per invocation (4 KiB) no longer fit.
    assert!(sel(
        &Op::MatMul,
        &[f32t(&[5, 7]), f32t(&[7, 3])],
        vt(DType::F32, &[5, 3]),
        &tiny
    )
    .is_none());
}

#[test]
fn launch_picks_the_path_and_folds_shared_weights() {
    let web = DeviceCaps::webgpu();
    let sched = Schedule::default_for(Family::MatMul, &web);
    let s = sel(
        &Op::MatMul,
        &[f32t(&[2, 3, 70, 9]), f32t(&[9, 130])],
        vt(DType::F32, &[2, 3, 70, 130]),
        &web,
    )
    .unwrap();
    // A shared weight: 6 batches of 70 rows are one product of 420 rows.
    let l = s
        .launch(
            &[Some(&[2, 3, 70, 9]), Some(&[9, 130])],
            &[&[2, 3, 70, 130]],
            &sched,
        )
        .unwrap();
    assert_eq!(&l.params[..5], &[70, 130, 9, 420, 0]);
    assert_eq!(l.workgroups, [3, 7, 1]);
    assert_eq!(&l.params[10..], &[2, 3 * 70 * 9, 0, 3, 70 * 9, 0]);
    // One row: the decode path, 8 columns per workgroup... for a row-major B, 32.
    let l = s
        .launch(
            &[Some(&[1, 1, 1, 9]), Some(&[9, 130])],
            &[&[1, 1, 1, 130]],
            &sched,
        )
        .unwrap();
    assert_eq!(l.params[4], 1);
    assert_eq!(l.workgroups, [5, 1, 1]);
    // Batched B: no folding, one grid layer per batch.
    let s = sel(
        &Op::MatMul,
        &[f32t(&[4, 1, 5, 9]), f32t(&[3, 9, 6])],
        vt(DType::F32, &[4, 3, 5, 6]),
        &web,
    )
    .unwrap();
    let l = s
        .launch(
            &[Some(&[4, 1, 5, 9]), Some(&[3, 9, 6])],
            &[&[4, 3, 5, 6]],
            &sched,
        )
        .unwrap();
    assert_eq!(l.workgroups, [1, 1, 12]);
    assert_eq!(&l.params[10..], &[4, 45, 0, 3, 0, 54]);
    // Shapes that do not fit are errors naming the kernel.
    let e = s
        .launch(
            &[Some(&[4, 1, 5, 8]), Some(&[3, 9, 6])],
            &[&[4, 3, 5, 6]],
            &sched,
        )
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("matmul") && e.contains("inner dimensions"),
        "{e}"
    );
    // Packed: column stride, groups, rows per group, scale and zero offsets.
    let f = fmt("w3g32a");
    let q = Some(vt(DType::Quant(f), &[70, 5]));
    let s = sel(
        &Op::MatMul,
        &[f32t(&[2, 70]), q],
        vt(DType::F32, &[2, 5]),
        &web,
    )
    .unwrap();
    let l = s
        .launch(&[Some(&[2, 70]), Some(&[70, 5])], &[&[2, 5]], &sched)
        .unwrap();
    let stride = 3 * 70usize.div_ceil(8);
    assert_eq!(
        l.params[5..10],
        [
            stride as u32,
            3,
            32,
            (5 * stride) as u32,
            (5 * stride + 2 * 15) as u32
        ]
    );
    assert_eq!(l.workgroups, [1, 1, 1]);
}

#[test]
fn epilogue_operands_get_broadcast_strides() {
    let web = DeviceCaps::webgpu();
    let sched = Schedule::default_for(Family::MatMul, &web);
    let op = fused(false, false, bias_gelu_residual());
    let s = sel(
        &op,
        &[
            f32t(&[2, 3, 8]),
            f32t(&[2, 8, 6]),
            f32t(&[6]),
            f32t(&[2, 1, 6]),
        ],
        vt(DType::F32, &[2, 3, 6]),
        &web,
    )
    .unwrap();
    let l = s
        .launch(
            &[
                Some(&[2, 3, 8]),
                Some(&[2, 8, 6]),
                Some(&[6]),
                Some(&[2, 1, 6]),
            ],
            &[&[2, 3, 6]],
            &sched,
        )
        .unwrap();
    // Header, one batch axis [dim, A, B], then E1 [batch, row, col] and E2.
    assert_eq!(&l.params[10..13], &[2, 24, 48]);
    assert_eq!(&l.params[13..], &[0, 0, 1, 6, 0, 1]);
    let e = s
        .launch(
            &[
                Some(&[2, 3, 8]),
                Some(&[2, 8, 6]),
                Some(&[5]),
                Some(&[2, 1, 6]),
            ],
            &[&[2, 3, 6]],
            &sched,
        )
        .unwrap_err()
        .to_string();
    assert!(e.contains("does not broadcast"), "{e}");
}
