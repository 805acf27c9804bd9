//! Operator fusion on the real models: what it recognises, how many kernel
//! launches it saves, and that the fused graph computes what the unfused
//! one does on real input (both run by the CPU executor).

use kiln_ir::{DType, Graph, Op, Tensor};
use kiln_passes::fusion::{FuseGraph, StopReason};
use kiln_runtime::cpu::{CpuExecutor, ExecOptions};
use kiln_tests::lm::{have, import_unfused, minilm, moby_dick, smollm2, text_ids, token_inputs};
use std::collections::BTreeMap;

/// Nodes that run a kernel (pure shape relabellings excluded).
fn launches(g: &Graph) -> usize {
    g.nodes
        .iter()
        .filter(|n| {
            !matches!(
                n.op,
                Op::Reshape { .. }
                    | Op::Flatten { .. }
                    | Op::Squeeze { .. }
                    | Op::Unsqueeze { .. }
                    | Op::Identity
                    | Op::Shape { .. }
                    | Op::Size
            )
        })
        .count()
}

fn count(g: &Graph, pred: impl Fn(&Op) -> bool) -> usize {
    g.nodes.iter().filter(|n| pred(&n.op)).count()
}

fn run(g: &Graph, inputs: &BTreeMap<String, Tensor>) -> Vec<(String, Vec<f32>)> {
    let ex = CpuExecutor::new(g.clone(), ExecOptions::default()).expect("executor");
    ex.run(inputs)
        .expect("run")
        .outputs
        .into_iter()
        .filter(|(_, t)| t.dtype() == DType::F32)
        .map(|(n, t)| (n, t.to_vec::<f32>().expect("f32")))
        .collect()
}

/// Largest difference of each output, relative to the output's largest magnitude.
fn assert_close(a: &Graph, b: &Graph, inputs: &BTreeMap<String, Tensor>, tol: f32) {
    let (ya, yb) = (run(a, inputs), run(b, inputs));
    assert_eq!(ya.len(), yb.len());
    for ((name, x), (_, y)) in ya.iter().zip(&yb) {
        let scale = x.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
        let worst = x
            .iter()
            .zip(y)
            .map(|(p, q)| (p - q).abs())
            .fold(0f32, f32::max);
        eprintln!("{name}: max |fused - unfused| = {worst:.3e} (scale {scale:.3})");
        assert!(
            worst <= tol * scale,
            "{name}: fused differs by {worst} (scale {scale})"
        );
    }
}

fn fused(g: &Graph) -> (Graph, kiln_passes::fusion::FusionStats) {
    let mut f = g.clone();
    let stats = FuseGraph::default().fuse(&mut f);
    kiln_ir::verify::verify(&f).expect("fused graph verifies");
    assert!(
        stats.cost_after <= stats.cost_before,
        "fusion raised the estimated cost"
    );
    assert_eq!(stats.stop, StopReason::Saturated);
    (f, stats)
}

#[test]
fn vit_blocks_are_recognised_and_launches_drop() {
    let path = kiln_tests::kiln_cache().join("models/vit_s_focus.onnx");
    if !have(&[&path]) {
        return;
    }
    let g = import_unfused(&path).graph;
    let (f, s) = fused(&g);
    // 12 blocks of two LayerNorms, a final one; a GELU and an attention per block.
    assert_eq!(s.fired["layernorm"], 25);
    assert_eq!(s.fired["gelu-erf"], 12);
    assert_eq!(s.fired["attention-heads"], 12);
    assert_eq!(count(&f, |o| matches!(o, Op::LayerNorm { .. })), 25);
    assert_eq!(
        count(&f, |o| matches!(o, Op::Attention { q_num_heads: 6, .. })),
        12
    );
    for primitive in ["Pow", "Sqrt", "Erf", "Softmax", "Transpose", "Reduce"] {
        let left: Vec<String> = f
            .nodes
            .iter()
            .filter(|n| n.op.name() == primitive)
            .map(|n| n.describe(&f))
            .collect();
        // The decoder head after the encoder keeps two transposes of its own.
        assert!(
            left.len() <= 2 && (primitive == "Transpose" || left.is_empty()),
            "{primitive} left: {left:?}"
        );
    }
    let (before, after) = (launches(&g), launches(&f));
    eprintln!("ViT kernel launches: {before} → {after}");
    assert!(
        after * 10 <= before * 6,
        "launches {before} → {after}: less than 40% fewer"
    );

    let mut input = vec![0f32; 3 * 224 * 224];
    for (i, v) in input.iter_mut().enumerate() {
        *v = ((i % 251) as f32 / 125.0 - 1.0) * 1.5;
    }
    let inputs = BTreeMap::from([(
        "input_image".to_string(),
        Tensor::from_vec(vec![1, 3, 224, 224], input).unwrap(),
    )]);
    assert_close(&g, &f, &inputs, 1e-4);
}

#[test]
fn minilm_fused_embeddings_match_unfused() {
    if !have(&[&minilm(), &moby_dick()]) {
        return;
    }
    let model = import_unfused(&minilm());
    let (f, s) = fused(&model.graph);
    assert!(s.fired["epilogue-merge"] >= 36, "{:?}", s.fired);
    assert!(launches(&f) < launches(&model.graph));
    let ids = text_ids(&model, 4, 48);
    let inputs = token_inputs(&["input_ids", "attention_mask", "token_type_ids"], &ids, 0);
    assert_close(&model.graph, &f, &inputs, 1e-4);
}

#[test]
fn smollm2_fused_logits_match_unfused() {
    if !have(&[&smollm2(), &moby_dick()]) {
        return;
    }
    let model = import_unfused(&smollm2());
    let (f, s) = fused(&model.graph);
    // Per layer: the output projection with its residual, the gate with
    // SiLU and the up product, the down projection with its residual.
    assert!(
        count(&f, |o| matches!(o, Op::FusedMatMul { .. })) >= 90,
        "{:?}",
        s.fired
    );
    assert_eq!(
        count(&f, |o| matches!(o, Op::Add | Op::Mul | Op::Swish { .. })),
        0
    );
    let ids = text_ids(&model, 1, 64);
    let inputs = token_inputs(&["input_ids"], &ids, 0);
    assert_close(&model.graph, &f, &inputs, 1e-4);
}
