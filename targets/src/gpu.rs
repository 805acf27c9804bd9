//! What a GPU bundle carries beyond the graph: the execution plan, its WGSL
//! kernels (each validated by naga) and, per API, the kernels translated
//! ahead of time: MSL for `metal`, SPIR-V for `vulkan`.

use kiln_codegen::plan::PlanSummary;
use kiln_codegen::{plan_graph, validate, CodegenError, DeviceCaps, GpuPlan};
use kiln_ir::Graph;
use serde::Serialize;
use std::collections::BTreeMap;

/// The graphics API a GPU target is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum GpuApi {
    /// WebGPU in browsers (and native wgpu): WebGPU's guaranteed limits.
    WebGpu,
    /// Vulkan (Android, Linux, Windows).
    Vulkan,
    /// Metal (iOS, macOS).
    Metal,
}

impl GpuApi {
    /// The device limits the plan is made for.
    pub fn caps(self) -> DeviceCaps {
        match self {
            GpuApi::WebGpu => DeviceCaps::webgpu(),
            GpuApi::Vulkan => DeviceCaps::vulkan(),
            GpuApi::Metal => DeviceCaps::metal(),
        }
    }
}

/// The GPU part of a bundle.
pub struct GpuArtifacts {
    /// The plan, as the runtime will read it.
    pub plan: GpuPlan,
    /// Assets to add to the bundle.
    pub assets: BTreeMap<String, Vec<u8>>,
    /// Step counts, for the manifest and `--stats`.
    pub summary: PlanSummary,
}

/// Plans `graph` for `api`, validates every kernel with naga and translates
/// it for the API; errors name the kernel and quote naga's diagnostic.
pub fn build(graph: &Graph, api: GpuApi) -> Result<GpuArtifacts, CodegenError> {
    let plan = plan_graph(graph, &api.caps())?;
    let mut assets = plan.to_assets();
    for k in &plan.kernels {
        validate::validate(k)?;
        match api {
            GpuApi::Metal => {
                let msl = validate::to_msl(k)?;
                assets.insert(format!("gpu/msl/{}.metal", k.name), msl.into_bytes());
            }
            GpuApi::Vulkan => {
                let words = validate::to_spirv(k)?;
                let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
                assets.insert(format!("gpu/spirv/{}.spv", k.name), bytes);
            }
            GpuApi::WebGpu => {}
        }
    }
    let summary = plan.summary(graph);
    Ok(GpuArtifacts {
        plan,
        assets,
        summary,
    })
}
