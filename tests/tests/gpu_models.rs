//! The GPU targets on the real models: every generated kernel validates
//! (naga, MSL, SPIR-V through spirv-val), and the wgpu executor agrees with
//! the CPU executor end to end on real text (MiniLM; a 2-layer slice of
//! SmolLM2 in f32 and w4). Under CI the adapter is Mesa's lavapipe.

use kiln_ir::Graph;
use kiln_runtime::cpu::{CpuExecutor, ExecOptions};
use kiln_runtime::gpu::GpuExecutor;
use kiln_targets::gpu::{build, GpuApi};
use kiln_tests::gpu::{agreement, compile_for, context, fuse_for, quantize_rtn, smollm2_slice};
use kiln_tests::lm::{have, import_unfused, minilm, moby_dick, smollm2, text_ids, token_inputs};
use std::collections::BTreeMap;
use std::process::Command;

/// Validates every kernel of `graph` for each API; runs spirv-val on the
/// Vulkan SPIR-V. Returns the number of distinct kernels.
fn validate_all(label: &str, graph: &Graph) -> usize {
    let spirv_val = Command::new("spirv-val").arg("--version").output().is_ok();
    assert!(
        spirv_val || !kiln_tests::in_ci(),
        "spirv-val missing under CI (scripts/setup.sh installs spirv-tools)"
    );
    if !spirv_val {
        eprintln!("spirv-val not found: SPIR-V is generated but not checked by it");
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let mut kernels = 0;
    for api in [GpuApi::WebGpu, GpuApi::Vulkan, GpuApi::Metal] {
        // `build` validates every kernel with naga and translates it.
        let built = build(graph, api).unwrap_or_else(|e| panic!("{label} for {api:?}: {e}"));
        kernels = kernels.max(built.plan.kernels.len());
        eprintln!("{label} {api:?}: {:?}", built.summary);
        for (name, bytes) in &built.assets {
            if name.ends_with(".metal") {
                let msl = String::from_utf8_lossy(bytes);
                assert!(
                    msl.contains("kernel void"),
                    "{name} has no kernel entry point"
                );
                assert!(
                    msl.contains("[[buffer(0)]]"),
                    "{name} binds no real buffer slot"
                );
            }
            if name.ends_with(".spv") && spirv_val {
                let path = dir.path().join("k.spv");
                std::fs::write(&path, bytes).expect("write SPIR-V");
                let out = Command::new("spirv-val")
                    .args(["--target-env", "vulkan1.1"])
                    .arg(&path)
                    .output()
                    .expect("spirv-val");
                assert!(
                    out.status.success(),
                    "{label}: spirv-val rejects {name}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    }
    kernels
}

/// Runs `gpu_graph` on the wgpu executor and `cpu_graph` on the CPU
/// executor; returns (max abs difference, cosine) of each output.
fn compare_executors(
    gpu_graph: Graph,
    cpu_graph: Graph,
    inputs: &BTreeMap<String, kiln_ir::Tensor>,
) -> Option<Vec<(String, f64, f64)>> {
    let ctx = context()?;
    let plan = build(&gpu_graph, GpuApi::Vulkan).expect("plan").plan;
    let gpu = GpuExecutor::new(ctx, gpu_graph, Some(plan)).expect("GPU executor");
    let got = gpu.run(inputs).expect("GPU run");
    eprintln!("GPU run stats: {:?}", got.stats);
    let cpu = CpuExecutor::new(cpu_graph, ExecOptions::default()).expect("CPU executor");
    let want = cpu.run(inputs).expect("CPU run");
    Some(
        got.outputs
            .iter()
            .zip(&want.outputs)
            .map(|((n, g), (_, c))| {
                let (max, cos) = agreement(g, c);
                eprintln!("{n}: max |gpu - cpu| = {max:.3e}, cosine {cos:.7}");
                (n.clone(), max, cos)
            })
            .collect(),
    )
}

#[test]
fn every_kernel_of_the_language_models_validates() {
    if !have(&[&minilm(), &smollm2()]) {
        return;
    }
    let minilm = compile_for(import_unfused(&minilm()).graph, "vulkan");
    assert!(validate_all("MiniLM", &minilm) >= 5);
    let slice = smollm2_slice(2);
    let f32_graph = fuse_for(slice.graph.clone(), "vulkan");
    assert!(validate_all("SmolLM2 (2 layers)", &f32_graph) >= 5);
    for spec in ["rtn:w4g64", "rtn:w3g64", "rtn:w8"] {
        let q = fuse_for(quantize_rtn(&slice.graph, spec), "vulkan");
        validate_all(&format!("SmolLM2 (2 layers, {spec})"), &q);
    }
}

#[test]
fn every_kernel_of_the_vit_validates() {
    let path = kiln_tests::kiln_cache().join("models/vit_s_focus.onnx");
    if !have(&[&path]) {
        return;
    }
    let vit = compile_for(import_unfused(&path).graph, "vulkan");
    assert!(validate_all("ViT", &vit) >= 5);
}

#[test]
fn minilm_on_the_gpu_matches_the_cpu() {
    if !have(&[&minilm(), &moby_dick()]) {
        return;
    }
    let model = import_unfused(&minilm());
    let ids = text_ids(&model, 2, 24);
    let inputs = token_inputs(&["input_ids", "attention_mask", "token_type_ids"], &ids, 0);
    let gpu_graph = compile_for(model.graph.clone(), "vulkan");
    let Some(rows) = compare_executors(gpu_graph, model.graph, &inputs) else {
        return;
    };
    for (name, max, cos) in rows {
        // f32 on both sides, different summation orders: agreement to a few ulps of the activations.
        assert!(
            cos > 0.99999 && max < 1e-3,
            "{name}: max {max:.3e}, cosine {cos}"
        );
    }
}

#[test]
fn smollm2_slice_on_the_gpu_matches_the_cpu() {
    if !have(&[&smollm2(), &moby_dick()]) {
        return;
    }
    let slice = smollm2_slice(2);
    let ids = text_ids(&slice, 1, 20);
    let inputs = token_inputs(&["input_ids"], &ids, 0);
    // f32.
    let gpu_graph = fuse_for(slice.graph.clone(), "vulkan");
    let Some(rows) = compare_executors(gpu_graph, slice.graph.clone(), &inputs) else {
        return;
    };
    for (name, max, cos) in rows {
        assert!(
            cos > 0.99999 && max < 2e-2,
            "f32 {name}: max {max:.3e}, cosine {cos}"
        );
    }
    // w4: both executors read the same packed weights.
    let q = quantize_rtn(&slice.graph, "rtn:w4g64");
    let rows = compare_executors(fuse_for(q.clone(), "vulkan"), q, &inputs).expect("context");
    for (name, max, cos) in rows {
        assert!(
            cos > 0.99999 && max < 2e-2,
            "w4 {name}: max {max:.3e}, cosine {cos}"
        );
    }
}
