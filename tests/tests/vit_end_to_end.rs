//! The DINOv2 ViT-S/14 saliency model end to end: import, optimize to a CPU
//! bundle, load the bundle, run it on a real photo, and compare with
//! onnxruntime's output for the same input tensor (made by
//! scripts/vit_reference.py during set-up).

use kiln_runtime::bundle::Bundle;
use kiln_runtime::cpu::{CpuExecutor, ExecOptions};
use kiln_targets::bundle::{write_bundle, BundleInfo};
use kiln_targets::compile::{compile, Target};
use std::collections::BTreeMap;

fn read_safetensors(path: &std::path::Path) -> BTreeMap<String, kiln_ir::Tensor> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(name, v)| {
            assert_eq!(v.dtype(), safetensors::Dtype::F32, "{name}");
            (
                name,
                kiln_ir::Tensor::from_raw(kiln_ir::DType::F32, v.shape().to_vec(), v.data())
                    .unwrap(),
            )
        })
        .collect()
}

#[test]
fn vit_bundle_matches_onnxruntime_on_a_photo() {
    let dir = kiln_tests::kiln_cache();
    let model = dir.join("models/vit_s_focus.onnx");
    let input = dir.join("data/vit_input.safetensors");
    let reference = dir.join("data/vit_ort_output.safetensors");
    if !(model.exists() && input.exists() && reference.exists()) {
        assert!(
            std::env::var_os("CI").is_none(),
            "ViT model or reference data missing under {}: run scripts/setup.sh",
            dir.display()
        );
        eprintln!(
            "skipped: ViT model or reference data missing under {} (run scripts/setup.sh)",
            dir.display()
        );
        return;
    }
    let graph = kiln_frontends::load_model(&model).unwrap().graph;
    let target = Target::by_name("cpu").unwrap();
    let compiled = compile(graph, target, &Default::default(), |_, _| {}, |_, _| {}).unwrap();
    // Shape subgraphs fold away: no Shape op may survive except those feeding
    // the one batch-dependent Expand and Resize.
    let g = &compiled.graph;
    let out = g.value(g.outputs[0]);
    assert_eq!(out.ty.to_string(), "f32[batch_size,1,224,224]");
    assert!(
        g.nodes.len() < compiled.nodes_before * 2 / 3,
        "{} of {} nodes left",
        g.nodes.len(),
        compiled.nodes_before
    );
    assert!(
        g.op_histogram().get("Shape").copied().unwrap_or(0) <= 2,
        "{:?}",
        g.op_histogram()
    );

    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("vit.kiln");
    let info = BundleInfo {
        options: compiled.manifest_options(target),
        ..BundleInfo::for_source("cpu", &model).unwrap()
    };
    write_bundle(&path, &compiled.graph, &info).unwrap();
    let bundle = Bundle::open(&path).unwrap();

    let exec = CpuExecutor::new(bundle.into_graph(), ExecOptions { threads: Some(2) }).unwrap();
    let result = exec.run(&read_safetensors(&input)).unwrap();
    let expected = read_safetensors(&reference);
    assert_eq!(result.outputs.len(), expected.len());
    for (name, got) in &result.outputs {
        let want = &expected[name];
        assert_eq!(got.dims(), want.dims(), "{name}");
        let got = got.to_vec::<f32>().unwrap();
        let want = want.to_vec::<f32>().unwrap();
        let max_abs = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        let scale = want.iter().fold(0f32, |m, b| m.max(b.abs()));
        let rel = max_abs / scale;
        eprintln!("{name}: max abs error {max_abs:.3e}, relative to max |ref| {rel:.3e}, peak memory {} bytes", result.peak_bytes);
        assert!(
            rel <= 1e-4,
            "{name}: relative error {rel:e} exceeds 1e-4 (max abs {max_abs:e})"
        );
    }
}
