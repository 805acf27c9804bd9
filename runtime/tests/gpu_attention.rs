//! The attention kernel against the CPU executor's `Attention` on seeded
//! random data: 3-d and 4-d layouts, grouped-query heads (9 over 3, as
//! SmolLM2), causal masks, bool padding masks and additive masks (full,
//! broadcast, shorter than the keys), past key/value caches,
//! `nonpad_kv_seqlen`, softcap and explicit scales, query lengths 1, 7 and
//! 130, and workgroups small enough that the online softmax runs over many
//! key blocks. Tests skip (with a message) on machines without a GPU
//! adapter.
//!
//! Tolerance: 1e-5 of |y| plus 2e-6. Each output is a convex combination of
//! value rows (|v| < 1 here); the GPU sums scores, probabilities and the
//! weighted values in another order than the CPU (`gemm` panels, a softmax
//! normalised before the product instead of after), so each score carries a
//! few roundings of ε·Σ|q·k| (ε = 2⁻²⁴; under 1e-6 for these sizes), which
//! moves a probability by as much relatively and the output by that times
//! |v|. The largest difference measured on lavapipe is 2.4e-7.
#![cfg(feature = "gpu")]

use kiln_codegen::{Family, KernelSpec, NodeCtx, Schedule};
use kiln_ir::{Float, Op, Shape, Tensor, ValueType};
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

fn t32(dims: &[usize], seed: u64) -> Tensor {
    let n = dims.iter().product();
    Tensor::from_vec(dims.to_vec(), rand(n, seed, -1.0, 1.0)).expect("tensor")
}

fn fixed(t: &Tensor) -> ValueType {
    let dims: Vec<u64> = t.dims().iter().map(|&d| d as u64).collect();
    ValueType::new(t.dtype(), Shape::fixed(&dims))
}

fn attention(causal: bool, heads: i64, kv_heads: i64) -> Op {
    Op::Attention {
        is_causal: causal,
        q_num_heads: heads,
        kv_num_heads: kv_heads,
        scale: None,
        softcap: Float(0.0),
        qk_matmul_output_mode: 0,
        softmax_precision: None,
    }
}

/// Runs `op` through `KernelSpec::select` on the GPU (with `workgroup`, or
/// the default schedule) and on the CPU, and compares Y.
fn check(
    ctx: &GpuContext,
    what: &str,
    op: &Op,
    inputs: &[Option<Tensor>],
    workgroup: Option<[u32; 3]>,
) -> Vec<f32> {
    let refs: Vec<Option<&Tensor>> = inputs.iter().map(Option::as_ref).collect();
    let cpu = eval_node(op, &refs, 1).expect("cpu").remove(0);
    let in_types: Vec<Option<ValueType>> = inputs.iter().map(|t| t.as_ref().map(fixed)).collect();
    let out_type = fixed(&cpu);
    let cx = NodeCtx {
        name: what,
        op,
        inputs: in_types.iter().map(Option::as_ref).collect(),
        consts: vec![None; inputs.len()],
        outputs: vec![&out_type],
        caps: &ctx.caps,
    };
    let spec = KernelSpec::select(&cx).unwrap_or_else(|| panic!("{what}: no kernel"));
    assert_eq!(spec.family(), Family::Attention, "{what}");
    let mut schedule = Schedule::default_for(Family::Attention, &ctx.caps);
    if let Some(wg) = workgroup {
        schedule.workgroup = wg;
    }
    let kernel = spec.emit(&schedule).expect("emit");
    assert!(
        kernel.fits(&ctx.caps),
        "{what}: kernel does not fit the device"
    );
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
    let gpu: Vec<f32> = bytemuck::cast_slice(&out[0]).to_vec();
    let cpu = cpu.to_vec::<f32>().expect("f32");
    assert_eq!(gpu.len(), cpu.len(), "{what}: lengths");
    let mut worst = 0.0f32;
    for (i, (&g, &c)) in gpu.iter().zip(&cpu).enumerate() {
        let err = (g - c).abs();
        assert!(
            err <= 1e-5 * c.abs() + 2e-6,
            "{what}: element {i}: gpu {g}, cpu {c}"
        );
        worst = worst.max(err);
    }
    eprintln!("{what}: {} values, largest difference {worst:e}", gpu.len());
    cpu
}

#[test]
fn grouped_query_causal_like_smollm2() {
    let Some(ctx) = test_context() else { return };
    // 9 query heads over 3 KV heads of size 64, 3-d operands.
    for (i, (batch, seq)) in [(1, 1), (2, 7), (1, 130)].into_iter().enumerate() {
        let s = 100 + 3 * i as u64;
        let q = t32(&[batch, seq, 9 * 64], s);
        let k = t32(&[batch, seq, 3 * 64], s + 1);
        let v = t32(&[batch, seq, 3 * 64], s + 2);
        let inputs = [Some(q), Some(k), Some(v)];
        check(
            &ctx,
            &format!("causal gqa seq {seq}"),
            &attention(true, 9, 3),
            &inputs,
            None,
        );
        check(
            &ctx,
            &format!("full gqa seq {seq}"),
            &attention(false, 9, 3),
            &inputs,
            None,
        );
    }
}

#[test]
fn padding_masks_with_and_without_causality() {
    let Some(ctx) = test_context() else { return };
    for (i, seq) in [1usize, 7, 130].into_iter().enumerate() {
        let s = 200 + 4 * i as u64;
        let q = t32(&[2, seq, 4 * 16], s);
        let k = t32(&[2, seq, 2 * 16], s + 1);
        let v = t32(&[2, seq, 2 * 16], s + 2);
        // Batch 0 sees every key; batch 1 loses its last third (at least one).
        let pad = seq - seq / 3;
        let keep: Vec<bool> = (0..2 * seq).map(|j| j < seq || j - seq < pad).collect();
        let mask = Tensor::from_bools(vec![2, 1, 1, seq], &keep).expect("mask");
        let inputs = [Some(q), Some(k), Some(v), Some(mask)];
        for causal in [false, true] {
            let what = format!("padding mask seq {seq} causal {causal}");
            check(&ctx, &what, &attention(causal, 4, 2), &inputs, None);
        }
    }
}

#[test]
fn additive_and_short_masks_on_four_d_operands() {
    let Some(ctx) = test_context() else { return };
    let (b, h, hk, sq, t, d) = (2usize, 6usize, 2usize, 7usize, 9usize, 16usize);
    let q = t32(&[b, h, sq, d], 300);
    let k = t32(&[b, hk, t, d], 301);
    let v = t32(&[b, hk, t, d], 302);
    // Additive, [q_seq, keys], with -inf holes.
    let mut m = rand(sq * t, 303, -3.0, 3.0);
    for (i, x) in m.iter_mut().enumerate() {
        if i % 5 == 2 {
            *x = f32::NEG_INFINITY;
        }
    }
    let add = Tensor::from_vec(vec![sq, t], m).expect("mask");
    let inputs = [Some(q.clone()), Some(k.clone()), Some(v.clone()), Some(add)];
    check(
        &ctx,
        "additive mask",
        &attention(false, 0, 0),
        &inputs,
        None,
    );
    check(
        &ctx,
        "additive mask causal",
        &attention(true, 0, 0),
        &inputs,
        None,
    );
    // A per-head bool mask shorter than the keys: keys past it are masked.
    let keep: Vec<bool> = (0..b * h * sq * (t - 3)).map(|i| i % 7 != 3).collect();
    let short = Tensor::from_bools(vec![b, h, sq, t - 3], &keep).expect("mask");
    let inputs = [
        Some(q.clone()),
        Some(k.clone()),
        Some(v.clone()),
        Some(short),
    ];
    check(
        &ctx,
        "short bool mask",
        &attention(false, 0, 0),
        &inputs,
        None,
    );
    // A row with every key masked is zeros.
    let keep: Vec<bool> = (0..sq * t).map(|i| i / t != 2).collect();
    let none = Tensor::from_bools(vec![sq, t], &keep).expect("mask");
    let inputs = [Some(q), Some(k), Some(v), Some(none)];
    let y = check(
        &ctx,
        "fully masked row",
        &attention(false, 0, 0),
        &inputs,
        None,
    );
    assert!(y[2 * d..3 * d].iter().all(|&x| x == 0.0));
}

#[test]
fn past_cache_nonpad_lengths_and_value_width() {
    let Some(ctx) = test_context() else { return };
    let (b, h, hk, d, dv) = (2usize, 4usize, 2usize, 16usize, 24usize);
    // Decode (one query after 129 cached keys) and a short prefill over a past.
    for (i, (sq, p)) in [(1usize, 129usize), (3, 5)].into_iter().enumerate() {
        let s = 400 + 6 * i as u64;
        let q = t32(&[b, h, sq, d], s);
        let k = t32(&[b, hk, sq, d], s + 1);
        let v = t32(&[b, hk, sq, dv], s + 2);
        let pk = t32(&[b, hk, p, d], s + 3);
        let pv = t32(&[b, hk, p, dv], s + 4);
        let inputs = [Some(q), Some(k), Some(v), None, Some(pk), Some(pv)];
        check(
            &ctx,
            &format!("past {p} seq {sq}"),
            &attention(true, 0, 0),
            &inputs,
            None,
        );
    }
    // nonpad_kv_seqlen: batch 1 sees no key at all (zeros).
    let (sq, t) = (5usize, 8usize);
    let q = t32(&[b, h, sq, d], 420);
    let k = t32(&[b, hk, t, d], 421);
    let v = t32(&[b, hk, t, dv], 422);
    let lens = Tensor::from_vec(vec![b], vec![6i64, 0]).expect("lens");
    let inputs = [Some(q), Some(k), Some(v), None, None, None, Some(lens)];
    for causal in [false, true] {
        let y = check(
            &ctx,
            &format!("nonpad causal {causal}"),
            &attention(causal, 0, 0),
            &inputs,
            None,
        );
        assert!(y[h * sq * dv..].iter().all(|&x| x == 0.0));
    }
}

#[test]
fn softcap_and_explicit_scale() {
    let Some(ctx) = test_context() else { return };
    let q = t32(&[1, 7, 4 * 16], 500);
    let k = t32(&[1, 7, 4 * 16], 501);
    let v = t32(&[1, 7, 4 * 16], 502);
    let op = Op::Attention {
        is_causal: true,
        q_num_heads: 4,
        kv_num_heads: 4,
        scale: Some(Float(2.5)),
        softcap: Float(3.0),
        qk_matmul_output_mode: 0,
        softmax_precision: None,
    };
    check(&ctx, "softcap", &op, &[Some(q), Some(k), Some(v)], None);
}

#[test]
fn online_softmax_over_many_key_blocks() {
    let Some(ctx) = test_context() else { return };
    // Workgroups of 32 and 7 split 130 keys into 5 and 19 blocks; the
    // head size (64) is wider than the workgroup, so each invocation owns
    // several output channels.
    let q = t32(&[1, 130, 9 * 64], 600);
    let k = t32(&[1, 130, 3 * 64], 601);
    let v = t32(&[1, 130, 3 * 64], 602);
    let keep: Vec<bool> = (0..130).map(|j| j < 100).collect();
    let mask = Tensor::from_bools(vec![1, 1, 1, 130], &keep).expect("mask");
    for wg in [[32, 1, 1], [7, 1, 1], [16, 2, 1]] {
        let inputs = [Some(q.clone()), Some(k.clone()), Some(v.clone())];
        check(
            &ctx,
            &format!("causal wg {wg:?}"),
            &attention(true, 9, 3),
            &inputs,
            Some(wg),
        );
        let inputs = [
            Some(q.clone()),
            Some(k.clone()),
            Some(v.clone()),
            Some(mask.clone()),
        ];
        check(
            &ctx,
            &format!("padded wg {wg:?}"),
            &attention(false, 9, 3),
            &inputs,
            Some(wg),
        );
    }
    // Scores spread widely (|q·k| up to ~20): the running maximum moves.
    let big: Vec<f32> = rand(130 * 64, 603, -3.0, 3.0);
    let q = Tensor::from_vec(vec![1, 1, 130, 64], big).expect("q");
    let k = t32(&[1, 1, 130, 64], 604);
    let v = t32(&[1, 1, 130, 64], 605);
    let inputs = [Some(q), Some(k), Some(v)];
    check(
        &ctx,
        "wide scores",
        &attention(true, 0, 0),
        &inputs,
        Some([32, 1, 1]),
    );
}
