//! Shared pieces of the GPU tests: the wgpu context (required under CI,
//! where lavapipe is installed) and the GPU target's compilation.

use kiln_frontends::Model;
use kiln_runtime::gpu::GpuContext;
use std::sync::Arc;

/// The shared wgpu context, or `None` after printing why the caller skips.
/// Under CI a missing adapter is a failure: setup installs lavapipe.
pub fn context() -> Option<Arc<GpuContext>> {
    let ctx = kiln_runtime::gpu::test_context();
    if ctx.is_none() {
        assert!(
            !crate::in_ci(),
            "no GPU adapter under CI: scripts/setup.sh installs Mesa's lavapipe (mesa-vulkan-drivers)"
        );
    }
    ctx
}

/// Runs both stages of a GPU target's pipeline (cleanup and GPU-priced
/// fusion) on an already cleaned graph, as `kiln optimize --target TARGET` does.
pub fn compile_for(graph: kiln_ir::Graph, target: &str) -> kiln_ir::Graph {
    let target = kiln_targets::compile::Target::by_name(target).expect("GPU target");
    kiln_targets::compile::compile(graph, target, &Default::default(), |_, _| {}, |_, _| {})
        .expect("compile for the GPU target")
        .graph
}

/// Imports a model and compiles it for `target`, fusion included.
pub fn import_for(path: &std::path::Path, target: &str) -> Model {
    let mut model = crate::lm::import_unfused(path);
    model.graph = compile_for(model.graph, target);
    model
}

/// Runs only a GPU target's fusion stage, as `kiln optimize` does after
/// quantizing the cleaned graph.
pub fn fuse_for(graph: kiln_ir::Graph, target: &str) -> kiln_ir::Graph {
    let target = kiln_targets::compile::Target::by_name(target).expect("GPU target");
    kiln_targets::compile::compile_stage(
        graph,
        target,
        kiln_targets::compile::Stage::Fusion,
        &Default::default(),
        |_, _| {},
        |_, _| {},
    )
    .expect("GPU fusion")
    .graph
}

/// The first `layers` layers of SmolLM2 from the GGUF file, cleaned (no
/// fusion): small enough for the software Vulkan driver.
pub fn smollm2_slice(layers: usize) -> Model {
    let mut model = kiln_frontends::gguf_llama::import_layers(&crate::lm::smollm2(), Some(layers))
        .expect("import SmolLM2 layers");
    let target = kiln_targets::compile::Target::by_name("cpu").expect("cpu target");
    model.graph = kiln_targets::compile::compile_stage(
        model.graph,
        target,
        kiln_targets::compile::Stage::Cleanup,
        &Default::default(),
        |_, _| {},
        |_, _| {},
    )
    .expect("cleanup")
    .graph;
    model
}

/// Round-to-nearest quantization of a cleaned graph with `spec` (no
/// calibration needed), unfused: fuse it with [`fuse_for`] or
/// `lm::fuse_cpu`.
pub fn quantize_rtn(graph: &kiln_ir::Graph, spec: &str) -> kiln_ir::Graph {
    use kiln_passes::quant::{quantize_graph, QuantConfig, QuantSpec};
    let mut g = graph.clone();
    let config = QuantConfig::new(QuantSpec::parse(spec).expect("spec"));
    quantize_graph(&mut g, &config, None, &mut |_| {}).expect("quantize");
    g
}

/// Largest absolute difference and cosine similarity of two outputs.
pub fn agreement(a: &kiln_ir::Tensor, b: &kiln_ir::Tensor) -> (f64, f64) {
    let (x, y) = (
        a.to_vec::<f32>().expect("f32 output"),
        b.to_vec::<f32>().expect("f32 output"),
    );
    assert_eq!(x.len(), y.len(), "output sizes differ");
    let (mut dot, mut nx, mut ny, mut max) = (0f64, 0f64, 0f64, 0f64);
    for (&p, &q) in x.iter().zip(&y) {
        let (p, q) = (p as f64, q as f64);
        dot += p * q;
        nx += p * p;
        ny += q * q;
        max = max.max((p - q).abs());
    }
    (max, dot / (nx.sqrt() * ny.sqrt()).max(1e-30))
}
