//! Per-target compilation: which pipeline a target runs, and the run itself.

use kiln_ir::Graph;
use kiln_passes::{PassError, PassManager, PassRecord, RunOptions};
use serde_json::json;
use std::collections::BTreeMap;

/// A target family this build can compile for, and the pipeline it runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Target {
    /// Name used on the command line and in the bundle manifest.
    pub name: &'static str,
    /// The named pass pipeline run first (see `kiln_passes::PIPELINES`).
    pub pipeline: &'static str,
    /// The pipeline run after weight quantization: fusion.
    pub fusion_pipeline: &'static str,
    /// For GPU targets, the API whose kernels the bundle carries.
    pub gpu: Option<crate::gpu::GpuApi>,
}

/// Every target this build supports.
pub const TARGETS: &[Target] = &[
    Target {
        name: "cpu",
        pipeline: "cpu",
        fusion_pipeline: "cpu-fuse",
        gpu: None,
    },
    Target {
        name: "webgpu",
        pipeline: "gpu",
        fusion_pipeline: "gpu-fuse",
        gpu: Some(crate::gpu::GpuApi::WebGpu),
    },
    Target {
        name: "vulkan",
        pipeline: "gpu",
        fusion_pipeline: "gpu-fuse",
        gpu: Some(crate::gpu::GpuApi::Vulkan),
    },
    Target {
        name: "metal",
        pipeline: "gpu",
        fusion_pipeline: "gpu-fuse",
        gpu: Some(crate::gpu::GpuApi::Metal),
    },
];

/// The two stages of compilation; weight quantization happens between them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Folding, cleanup and shape inference.
    Cleanup,
    /// Operator fusion.
    Fusion,
}

impl Target {
    /// The pipeline of one stage.
    pub fn stage_pipeline(&self, stage: Stage) -> &'static str {
        match stage {
            Stage::Cleanup => self.pipeline,
            Stage::Fusion => self.fusion_pipeline,
        }
    }
}

/// Error for a target name this build does not know.
#[derive(Debug, thiserror::Error)]
#[error("unknown target `{0}` (this build supports: {known})", known = TARGETS.iter().map(|t| t.name).collect::<Vec<_>>().join(", "))]
pub struct UnknownTarget(pub String);

impl Target {
    /// Looks a target up by name.
    pub fn by_name(name: &str) -> Result<Target, UnknownTarget> {
        TARGETS
            .iter()
            .copied()
            .find(|t| t.name == name)
            .ok_or_else(|| UnknownTarget(name.to_string()))
    }
}

/// The result of compiling a graph for a target.
pub struct Compiled {
    /// The rewritten graph.
    pub graph: Graph,
    /// What each pass did.
    pub records: Vec<PassRecord>,
    /// Node count before the pipeline.
    pub nodes_before: usize,
}

impl Compiled {
    /// The options recorded in the bundle manifest: pipeline, passes with
    /// their statistics. Times are left out so bundles stay reproducible.
    pub fn manifest_options(&self, target: Target) -> BTreeMap<String, serde_json::Value> {
        let passes: Vec<_> = self
            .records
            .iter()
            .map(|r| json!({"pass": r.pass, "changed": r.changed, "nodes_after": r.nodes_after, "stats": r.stats, "notes": r.notes}))
            .collect();
        let mut m = BTreeMap::new();
        m.insert(
            "pipeline".to_string(),
            json!([target.pipeline, target.fusion_pipeline]),
        );
        m.insert("passes".to_string(), json!(passes));
        m.insert("nodes_before".to_string(), json!(self.nodes_before));
        m
    }
}

/// Runs both stages of the target's pipeline on an imported graph.
/// `on_pass(i, name)` is called as each pass starts; `dump(pass, text)` for
/// every `dump_after` match.
pub fn compile(
    graph: Graph,
    target: Target,
    options: &RunOptions,
    mut on_pass: impl FnMut(usize, &'static str),
    mut dump: impl FnMut(&str, &str),
) -> Result<Compiled, PassError> {
    let first = compile_stage(
        graph,
        target,
        Stage::Cleanup,
        options,
        &mut on_pass,
        &mut dump,
    )?;
    let offset = stage_len(target, Stage::Cleanup);
    let second = compile_stage(
        first.graph,
        target,
        Stage::Fusion,
        options,
        |i, n| on_pass(offset + i, n),
        &mut dump,
    )?;
    let mut records = first.records;
    records.extend(second.records);
    Ok(Compiled {
        graph: second.graph,
        records,
        nodes_before: first.nodes_before,
    })
}

/// Runs one stage of the target's pipeline. A stage is skipped when
/// `options.stop_after` names a pass of an earlier stage.
pub fn compile_stage(
    mut graph: Graph,
    target: Target,
    stage: Stage,
    options: &RunOptions,
    on_pass: impl FnMut(usize, &'static str),
    dump: impl FnMut(&str, &str),
) -> Result<Compiled, PassError> {
    let nodes_before = graph.nodes.len();
    let mut own = options.clone();
    if let Some(stop) = &options.stop_after {
        let stages = [Stage::Cleanup, Stage::Fusion];
        let here = stages.iter().position(|s| *s == stage).unwrap_or(0);
        let at = stages
            .iter()
            .position(|s| stage_passes(target, *s).contains(&stop.as_str()));
        match at {
            // Stopped in an earlier stage: nothing to run.
            Some(at) if at < here => {
                return Ok(Compiled {
                    graph,
                    records: Vec::new(),
                    nodes_before,
                })
            }
            Some(at) if at == here => {}
            // A later stage's pass, or (past the first stage) an unknown
            // name the first stage has already reported.
            Some(_) => own.stop_after = None,
            None if stage != Stage::Cleanup => own.stop_after = None,
            None => {}
        }
    }
    let mut pm = PassManager::new(kiln_passes::pipeline_with_options(
        target.stage_pipeline(stage),
        &own,
    )?);
    let records = pm.run(&mut graph, &own, on_pass, dump)?;
    Ok(Compiled {
        graph,
        records,
        nodes_before,
    })
}

fn stage_passes(target: Target, stage: Stage) -> &'static [&'static str] {
    kiln_passes::PIPELINES
        .iter()
        .find(|(n, _)| *n == target.stage_pipeline(stage))
        .map(|(_, p)| *p)
        .unwrap_or(&[])
}

/// Number of passes in one stage (for progress bars).
pub fn stage_len(target: Target, stage: Stage) -> usize {
    stage_passes(target, stage).len()
}

/// Number of passes in a target's pipeline, both stages (for progress bars).
pub fn pipeline_len(target: Target) -> usize {
    stage_len(target, Stage::Cleanup) + stage_len(target, Stage::Fusion)
}
