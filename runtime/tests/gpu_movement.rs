//! Gather, conv and movement kernels (RotaryEmbedding included) on the GPU,
//! against the CPU executor's kernels (`cpu::eval_node`) on the same seeded
//! random operands. Pure movement must match bit for bit; Conv and
//! RotaryEmbedding within float tolerance. Every case runs with the
//! family's default schedule and with a small odd one (32 invocations, 3
//! channels per conv invocation), so partial workgroups and channel blocks
//! are exercised. Tests skip (with a message) without a GPU adapter.
#![cfg(feature = "gpu")]

use half::f16;
use kiln_codegen::{KernelSpec, NodeCtx, Schedule};
use kiln_ir::{AutoPad, DType, Op, PadMode, Shape, Tensor, ValueType, Window};
use kiln_runtime::cpu::eval_node;
use kiln_runtime::gpu::test_context;

/// xorshift64*: seeded, dependency-free operands.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in [-1, 1).
    fn f32(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn tensor(&mut self, dtype: DType, dims: &[usize]) -> Tensor {
        let n: usize = dims.iter().product();
        let d = dims.to_vec();
        match dtype {
            DType::F32 => Tensor::from_vec(d, (0..n).map(|_| self.f32()).collect::<Vec<_>>()),
            DType::F16 => Tensor::from_vec(
                d,
                (0..n)
                    .map(|_| f16::from_f32(self.f32() * 100.0))
                    .collect::<Vec<_>>(),
            ),
            DType::I64 => Tensor::from_vec(
                d,
                (0..n).map(|_| self.next() as i64 >> 20).collect::<Vec<_>>(),
            ),
            DType::I32 => {
                Tensor::from_vec(d, (0..n).map(|_| self.next() as i32).collect::<Vec<_>>())
            }
            DType::U8 => Tensor::from_vec(d, (0..n).map(|_| self.next() as u8).collect::<Vec<_>>()),
            DType::Bool => {
                let v: Vec<bool> = (0..n).map(|_| self.next() & 1 == 1).collect();
                Tensor::from_bools(d, &v)
            }
            other => panic!("no generator for {other}"),
        }
        .expect("dims match")
    }
}

fn i64s(v: &[i64]) -> Tensor {
    Tensor::from_vec(vec![v.len()], v.to_vec()).expect("1-d")
}

/// One node operand: its value, and whether the graph holds it as a constant.
#[derive(Clone)]
struct Operand {
    value: Tensor,
    constant: bool,
}

fn data(t: Tensor) -> Option<Operand> {
    Some(Operand {
        value: t,
        constant: false,
    })
}

fn constant(t: Tensor) -> Option<Operand> {
    Some(Operand {
        value: t,
        constant: true,
    })
}

/// How results are compared.
#[derive(Clone, Copy, Debug)]
enum Compare {
    /// Bit for bit.
    Exact,
    /// f32 within `abs + rel·|want|`.
    Close { abs: f32, rel: f32 },
}

fn value_type(t: &Tensor) -> ValueType {
    let dims: Vec<u64> = t.dims().iter().map(|&d| d as u64).collect();
    ValueType::new(t.dtype(), Shape::fixed(&dims))
}

/// Runs `op` on the CPU and, through its selected kernel, on the GPU, and
/// compares every result; returns the spec so callers can check its shape.
fn check(
    op: &Op,
    operands: &[Option<Operand>],
    num_outputs: usize,
    cmp: Compare,
) -> Option<KernelSpec> {
    let ctx = test_context()?;
    let refs: Vec<Option<&Tensor>> = operands
        .iter()
        .map(|o| o.as_ref().map(|o| &o.value))
        .collect();
    let want = eval_node(op, &refs, num_outputs).expect("the CPU evaluates the node");
    let in_types: Vec<Option<ValueType>> = refs.iter().map(|t| t.map(value_type)).collect();
    let out_types: Vec<ValueType> = want.iter().map(value_type).collect();
    let cx = NodeCtx {
        name: "node",
        op,
        inputs: in_types.iter().map(|t| t.as_ref()).collect(),
        consts: operands
            .iter()
            .map(|o| o.as_ref().filter(|o| o.constant).map(|o| &o.value))
            .collect(),
        outputs: out_types.iter().collect(),
        caps: &ctx.caps,
    };
    let spec = KernelSpec::select(&cx).unwrap_or_else(|| panic!("no kernel for {op:?}"));
    let odd = Schedule {
        workgroup: [8, 4, 1],
        tile: [1, 1, 1],
        vector: 3,
    };
    for schedule in [Schedule::default_for(spec.family(), &ctx.caps), odd] {
        let kernel = spec.emit(&schedule).expect("emits");
        let in_shapes: Vec<Option<&[usize]>> = refs.iter().map(|t| t.map(|t| t.dims())).collect();
        let out_shapes: Vec<&[usize]> = want.iter().map(|t| t.dims()).collect();
        let launch = spec
            .launch(&in_shapes, &out_shapes, &schedule)
            .expect("launches");
        let bound: Vec<&[u8]> = spec
            .bound_inputs()
            .iter()
            .map(|&i| refs[i].expect("bound operands are present").bytes())
            .collect();
        let sizes: Vec<usize> = want.iter().map(|t| t.bytes().len()).collect();
        let got = ctx
            .run_kernel_once(&kernel, &bound, &sizes, &launch)
            .unwrap_or_else(|e| panic!("{e}\n{}", kernel.wgsl));
        for (r, (w, g)) in want.iter().zip(&got).enumerate() {
            compare(op, r, w, g, cmp, &schedule);
        }
    }
    Some(spec)
}

fn compare(op: &Op, r: usize, want: &Tensor, got: &[u8], cmp: Compare, schedule: &Schedule) {
    let what = format!("{op:?} result {r} {:?} with {schedule:?}", want.dims());
    match cmp {
        Compare::Exact => {
            if want.bytes() != got {
                let size = want.dtype().size_of().max(1);
                let first = want
                    .bytes()
                    .chunks(size)
                    .zip(got.chunks(size))
                    .position(|(a, b)| a != b);
                panic!("{what}: bytes differ, first at element {first:?}");
            }
        }
        Compare::Close { abs, rel } => {
            let w = want.to_vec::<f32>().expect("f32 result");
            let g: Vec<f32> = bytemuck::pod_collect_to_vec(got);
            assert_eq!(w.len(), g.len(), "{what}");
            for (i, (a, b)) in w.iter().zip(&g).enumerate() {
                assert!(
                    (a - b).abs() <= abs + rel * a.abs(),
                    "{what}: element {i}: want {a}, got {b}"
                );
            }
        }
    }
}

// ---- gather ----

#[test]
fn gather_embeddings() {
    let mut rng = Rng(1);
    let table = rng.tensor(DType::F32, &[50, 24]);
    // First, last and negative ids (−1 is the last row, −50 the first).
    let ids: Vec<i64> = vec![0, 49, 7, -1, -50, 13];
    let ids = Tensor::from_vec(vec![2, 3], ids).unwrap();
    let op = Op::Gather { axis: 0 };
    let Some(spec) = check(&op, &[data(table.clone()), data(ids)], 1, Compare::Exact) else {
        return;
    };
    assert!(matches!(spec, KernelSpec::Gather(_)));
    // One token, as in decoding; i32 ids.
    check(
        &op,
        &[data(table.clone()), data(i64s(&[31]))],
        1,
        Compare::Exact,
    );
    let ids32 = Tensor::from_vec(vec![5], vec![3i32, -2, 0, 49, 11]).unwrap();
    check(&op, &[data(table), data(ids32)], 1, Compare::Exact);
}

#[test]
fn gather_middle_axis_every_width() {
    let mut rng = Rng(2);
    let ids = Tensor::from_vec(vec![2, 2], vec![6i64, -7, 3, -1]).unwrap();
    for dt in [DType::F32, DType::I64, DType::F16, DType::U8, DType::Bool] {
        let x = rng.tensor(dt, &[3, 7, 5]);
        if check(
            &Op::Gather { axis: 1 },
            &[data(x.clone()), data(ids.clone())],
            1,
            Compare::Exact,
        )
        .is_none()
        {
            return;
        }
        // The last axis, with a scalar index.
        let scalar = Tensor::scalar(-2i64);
        check(
            &Op::Gather { axis: -1 },
            &[data(x), data(scalar)],
            1,
            Compare::Exact,
        );
    }
}

#[test]
fn gather_elements() {
    let mut rng = Rng(3);
    let x = rng.tensor(DType::F32, &[4, 5, 3]);
    // Indices in [-5, 5), smaller than the data on the other axes.
    let idx: Vec<i64> = (0..4 * 2 * 3).map(|_| rng.below(10) as i64 - 5).collect();
    let idx = Tensor::from_vec(vec![4, 2, 3], idx).unwrap();
    let op = Op::GatherElements { axis: 1 };
    if check(&op, &[data(x), data(idx)], 1, Compare::Exact).is_none() {
        return;
    }
    let x = rng.tensor(DType::I64, &[3, 4]);
    let idx = Tensor::from_vec(vec![3, 2], vec![0i32, 3, -1, 2, 1, -4]).unwrap();
    check(
        &Op::GatherElements { axis: -1 },
        &[data(x), data(idx)],
        1,
        Compare::Exact,
    );
}

// ---- conv ----

fn conv_op(strides: &[u64], pads: &[u64], dilations: &[u64], auto_pad: AutoPad, group: u64) -> Op {
    Op::Conv {
        window: Window {
            kernel_shape: Vec::new(),
            strides: strides.to_vec(),
            pads: pads.to_vec(),
            dilations: dilations.to_vec(),
            auto_pad,
        },
        group,
    }
}

/// Sums of up to 588 products of values in [-1, 1): the GPU accumulates in
/// another order (and may fuse multiply-adds), so allow a few ulps of the
/// sum's magnitude rather than of each result.
const CONV_TOL: Compare = Compare::Close {
    abs: 1e-4,
    rel: 1e-5,
};

#[test]
fn conv_vit_patch_embedding() {
    let mut rng = Rng(4);
    // A 28×42 image in 14×14 patches: a 2×3 grid, 3 → 8 channels.
    let x = rng.tensor(DType::F32, &[1, 3, 28, 42]);
    let w = rng.tensor(DType::F32, &[8, 3, 14, 14]);
    let b = rng.tensor(DType::F32, &[8]);
    let op = Op::Conv {
        window: Window {
            kernel_shape: vec![14, 14],
            strides: vec![14, 14],
            pads: vec![0, 0, 0, 0],
            dilations: vec![1, 1],
            auto_pad: AutoPad::NotSet,
        },
        group: 1,
    };
    let Some(spec) = check(&op, &[data(x), data(w), data(b)], 1, CONV_TOL) else {
        return;
    };
    assert!(matches!(spec, KernelSpec::Conv(_)));
}

#[test]
fn conv_3x3_pad1_stride2() {
    let mut rng = Rng(5);
    // Odd sizes: 9×11 → 5×6; 6 output channels (not a multiple of 4 lanes); no bias.
    let x = rng.tensor(DType::F32, &[2, 4, 9, 11]);
    let w = rng.tensor(DType::F32, &[6, 4, 3, 3]);
    let op = conv_op(&[2, 2], &[1, 1, 1, 1], &[], AutoPad::NotSet, 1);
    check(&op, &[data(x), data(w), None], 1, CONV_TOL);
}

#[test]
fn conv_groups_dilation_and_auto_pad() {
    let mut rng = Rng(6);
    let x = rng.tensor(DType::F32, &[1, 4, 8, 7]);
    let w = rng.tensor(DType::F32, &[6, 2, 3, 3]);
    let b = rng.tensor(DType::F32, &[6]);
    let op = conv_op(&[1, 2], &[1, 0, 2, 1], &[2, 1], AutoPad::NotSet, 2);
    if check(
        &op,
        &[data(x.clone()), data(w.clone()), data(b.clone())],
        1,
        CONV_TOL,
    )
    .is_none()
    {
        return;
    }
    for auto_pad in [AutoPad::SameUpper, AutoPad::SameLower, AutoPad::Valid] {
        let op = conv_op(&[2, 2], &[], &[], auto_pad, 2);
        check(
            &op,
            &[data(x.clone()), data(w.clone()), data(b.clone())],
            1,
            CONV_TOL,
        );
    }
    // Depthwise: one channel per group.
    let w = rng.tensor(DType::F32, &[4, 1, 3, 3]);
    let op = conv_op(&[1, 1], &[1, 1, 1, 1], &[], AutoPad::NotSet, 4);
    check(&op, &[data(x), data(w), None], 1, CONV_TOL);
}

#[test]
fn conv_1d() {
    let mut rng = Rng(7);
    let x = rng.tensor(DType::F32, &[2, 3, 17]);
    let w = rng.tensor(DType::F32, &[5, 3, 4]);
    let b = rng.tensor(DType::F32, &[5]);
    let op = conv_op(&[3], &[2, 1], &[2], AutoPad::NotSet, 1);
    check(&op, &[data(x), data(w), data(b)], 1, CONV_TOL);
}

// ---- movement ----

#[test]
fn transposes_rank_2_to_5() {
    let mut rng = Rng(8);
    let cases: [(&[usize], Option<Vec<i64>>); 6] = [
        (&[7, 5], None),
        (&[3, 5, 7], Some(vec![2, 0, 1])),
        (&[3, 5, 7], Some(vec![0, -1, 1])),
        (&[2, 7, 3, 5], Some(vec![0, 2, 1, 3])),
        (&[2, 3, 5, 7], None),
        (&[2, 3, 2, 5, 3], Some(vec![4, 1, 3, 0, 2])),
    ];
    for dt in [DType::F32, DType::I64, DType::F16, DType::Bool, DType::I32] {
        for (dims, perm) in &cases {
            let x = rng.tensor(dt, dims);
            let op = Op::Transpose { perm: perm.clone() };
            if check(&op, &[data(x)], 1, Compare::Exact).is_none() {
                return;
            }
        }
    }
}

#[test]
fn concat_three_inputs_on_a_middle_axis() {
    let mut rng = Rng(9);
    for dt in [DType::F32, DType::I64, DType::U8] {
        let a = rng.tensor(dt, &[2, 3, 5]);
        let b = rng.tensor(dt, &[2, 1, 5]);
        let c = rng.tensor(dt, &[2, 4, 5]);
        let op = Op::Concat { axis: 1 };
        if check(
            &op,
            &[data(a.clone()), data(b.clone()), data(c.clone())],
            1,
            Compare::Exact,
        )
        .is_none()
        {
            return;
        }
        // The same on the last axis, and with an empty operand.
        let e = rng.tensor(dt, &[2, 3, 0]);
        let op = Op::Concat { axis: -1 };
        let d = rng.tensor(dt, &[2, 3, 2]);
        check(&op, &[data(a), data(e), data(d)], 1, Compare::Exact);
    }
}

/// Slice's constant operands: starts, ends, axes, steps.
type SliceCase = (
    &'static [i64],
    &'static [i64],
    Option<&'static [i64]>,
    Option<&'static [i64]>,
);

#[test]
fn slices_with_steps_and_negative_indices() {
    let mut rng = Rng(10);
    // (starts, ends, axes, steps) on a [6, 7, 5] input.
    let cases: [SliceCase; 6] = [
        (&[1], &[5], None, None),
        (&[0, 1], &[7, 100], Some(&[1, -1]), Some(&[2, 3])),
        (&[-3], &[-1], Some(&[0]), None),
        (&[6], &[-100], Some(&[1]), Some(&[-1])),
        (&[-1, 4], &[-8, 0], Some(&[-1, 0]), Some(&[-2, -3])),
        (&[2, 0, 1], &[3, 7, 4], Some(&[0, 1, 2]), Some(&[1, 2, 1])),
    ];
    for dt in [DType::F32, DType::I64, DType::F16, DType::U8] {
        let x = rng.tensor(dt, &[6, 7, 5]);
        for (starts, ends, axes, steps) in cases {
            let mut ops = vec![
                data(x.clone()),
                constant(i64s(starts)),
                constant(i64s(ends)),
            ];
            ops.push(axes.map(|a| constant(i64s(a))).unwrap_or(None));
            if let Some(s) = steps {
                ops.push(constant(i64s(s)));
            }
            if check(&Op::Slice, &ops, 1, Compare::Exact).is_none() {
                return;
            }
        }
    }
    // i32 operands.
    let x = rng.tensor(DType::F32, &[6, 7, 5]);
    let i32s = |v: &[i32]| constant(Tensor::from_vec(vec![v.len()], v.to_vec()).unwrap());
    let ops = [data(x), i32s(&[4]), i32s(&[0]), i32s(&[2]), i32s(&[-1])];
    check(&Op::Slice, &ops, 1, Compare::Exact);
}

#[test]
fn splits() {
    let mut rng = Rng(11);
    for dt in [DType::F32, DType::F16, DType::I64, DType::Bool] {
        let x = rng.tensor(dt, &[3, 10, 3]);
        let op = Op::Split {
            axis: 1,
            split: Some(vec![3, 0, 5, 2]),
        };
        if check(&op, &[data(x.clone())], 4, Compare::Exact).is_none() {
            return;
        }
        // Even parts (ceil(10/3) each, the last takes the rest), sizes from a constant.
        let op = Op::Split {
            axis: -2,
            split: None,
        };
        check(&op, &[data(x.clone())], 3, Compare::Exact);
        check(&op, &[data(x), constant(i64s(&[1, 9]))], 2, Compare::Exact);
    }
}

#[test]
fn expands() {
    let mut rng = Rng(12);
    for dt in [DType::F32, DType::I64, DType::U8] {
        for (from, to) in [
            (&[3usize, 1][..], &[2i64, 3, 4][..]),
            (&[1, 5][..], &[4, 1][..]),
            (&[2, 1, 3][..], &[2, 4, 3][..]),
        ] {
            let x = rng.tensor(dt, from);
            if check(
                &Op::Expand,
                &[data(x), constant(i64s(to))],
                1,
                Compare::Exact,
            )
            .is_none()
            {
                return;
            }
        }
    }
    // SmolLM2's position ids: [1, seq] i64 expanded to [batch, seq].
    let ids = Tensor::from_vec(vec![1, 5], vec![0i64, 1, 2, 3, 4]).unwrap();
    check(
        &Op::Expand,
        &[data(ids), constant(i64s(&[3, 5]))],
        1,
        Compare::Exact,
    );
}

#[test]
fn tiles() {
    let mut rng = Rng(13);
    for dt in [DType::F32, DType::I64, DType::F16, DType::U8] {
        for (dims, reps) in [
            (&[2usize, 3][..], &[2i64, 3][..]),
            (&[1, 3, 1][..], &[3, 1, 5][..]),
            (&[5][..], &[1][..]),
        ] {
            let x = rng.tensor(dt, dims);
            if check(
                &Op::Tile,
                &[data(x), constant(i64s(reps))],
                1,
                Compare::Exact,
            )
            .is_none()
            {
                return;
            }
        }
    }
}

#[test]
fn pads_every_mode() {
    let mut rng = Rng(14);
    for dt in [DType::F32, DType::I64, DType::F16, DType::U8] {
        let x = rng.tensor(dt, &[3, 4, 5]);
        let value = rng.tensor(dt, &[]);
        for mode in [
            PadMode::Constant,
            PadMode::Reflect,
            PadMode::Edge,
            PadMode::Wrap,
        ] {
            let op = Op::Pad { mode };
            // Begins then ends, with a crop (−1) on the last axis.
            let pads = i64s(&[1, 0, 2, 2, 3, -1]);
            let ops = [
                data(x.clone()),
                constant(pads.clone()),
                constant(value.clone()),
            ];
            if check(&op, &ops, 1, Compare::Exact).is_none() {
                return;
            }
            // Axes given, no value (zeros).
            let ops = [
                data(x.clone()),
                constant(i64s(&[2, 3])),
                None,
                constant(i64s(&[-1])),
            ];
            check(&op, &ops, 1, Compare::Exact);
        }
    }
}

// ---- rotary ----

/// Rotary tables as the LLaMA template builds them (base 10000).
fn rope_tables(positions: usize, half: usize) -> (Tensor, Tensor) {
    let (mut cos, mut sin) = (Vec::new(), Vec::new());
    for p in 0..positions {
        for j in 0..half {
            let f = 10000f64.powf(-(2.0 * j as f64) / (2 * half) as f64);
            cos.push((p as f64 * f).cos() as f32);
            sin.push((p as f64 * f).sin() as f32);
        }
    }
    (
        Tensor::from_vec(vec![positions, half], cos).unwrap(),
        Tensor::from_vec(vec![positions, half], sin).unwrap(),
    )
}

/// Two products and a sum per element of values in [-1, 1].
const ROPE_TOL: Compare = Compare::Close {
    abs: 1e-6,
    rel: 1e-6,
};

#[test]
fn rotary_as_smollm2_uses_it() {
    let mut rng = Rng(15);
    // 9 heads of 64, 5 positions starting at 3 (a continued sequence), 2 sequences.
    let (cos, sin) = rope_tables(32, 32);
    let x = rng.tensor(DType::F32, &[2, 5, 9 * 64]);
    let ids = Tensor::from_vec(vec![2, 5], vec![3i64, 4, 5, 6, 7, 0, 1, 2, 3, 4]).unwrap();
    let op = Op::RotaryEmbedding {
        interleaved: false,
        num_heads: 9,
        rotary_embedding_dim: 0,
    };
    let ops = [
        data(x.clone()),
        constant(cos.clone()),
        constant(sin.clone()),
        data(ids.clone()),
    ];
    let Some(spec) = check(&op, &ops, 1, ROPE_TOL) else {
        return;
    };
    assert!(matches!(spec, KernelSpec::Movement(_)));
    // The key side: 3 heads.
    let k = rng.tensor(DType::F32, &[2, 5, 3 * 64]);
    let op3 = Op::RotaryEmbedding {
        interleaved: false,
        num_heads: 3,
        rotary_embedding_dim: 0,
    };
    check(
        &op3,
        &[
            data(k),
            constant(cos.clone()),
            constant(sin.clone()),
            data(ids.clone()),
        ],
        1,
        ROPE_TOL,
    );
    // i32 ids, interleaved pairs, a partial rotation, 4-d X.
    let ids32 = Tensor::from_vec(vec![2, 5], vec![9i32, 8, 7, 6, 5, 31, 30, 0, 1, 2]).unwrap();
    let x4 = rng.tensor(DType::F32, &[2, 9, 5, 64]);
    for (interleaved, dim) in [(true, 0), (false, 32), (true, 48)] {
        let op = Op::RotaryEmbedding {
            interleaved,
            num_heads: 0,
            rotary_embedding_dim: dim,
        };
        let half = if dim == 0 { 32 } else { dim as usize / 2 };
        let (c, s) = rope_tables(32, half);
        check(
            &op,
            &[
                data(x4.clone()),
                constant(c),
                constant(s),
                data(ids32.clone()),
            ],
            1,
            ROPE_TOL,
        );
    }
    // Without ids: caches per (batch, position).
    let c = rng.tensor(DType::F32, &[2, 5, 32]);
    let s = rng.tensor(DType::F32, &[2, 5, 32]);
    check(&op, &[data(x), data(c), data(s)], 1, ROPE_TOL);
}
