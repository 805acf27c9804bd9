//! The GPU execution plan of a graph: its distinct kernels and one step per
//! node.

use crate::kernel::{CodegenError, Kernel, KernelSpec, NodeCtx};
use crate::schedule::Schedule;
use crate::DeviceCaps;
use kiln_ir::{DType, Graph, Op};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// How one node runs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum StepKind {
    /// A kernel launch: `kernel` indexes [`GpuPlan::kernels`].
    Kernel {
        /// Index of the kernel in the plan.
        kernel: usize,
        /// What the kernel computes, to fill its params at run time (boxed:
        /// specs carry programs and shapes, far larger than the other steps).
        spec: Box<KernelSpec>,
        /// The schedule the kernel was generated with.
        schedule: Schedule,
    },
    /// The result is the first operand's buffer under a new shape (Reshape,
    /// Flatten, Squeeze, Unsqueeze, Identity): no launch.
    Alias,
    /// No kernel for this node on this device: the runtime evaluates it on
    /// the host with the CPU executor's kernels.
    Host {
        /// Why, for `kiln inspect` and the run statistics.
        reason: String,
    },
}

/// One node's step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Step {
    /// Index of the node in `Graph::nodes`.
    pub node: usize,
    /// The node's name, to check a plan against its graph.
    pub name: String,
    /// How it runs.
    pub kind: StepKind,
}

/// The plan of a whole graph for one device class.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GpuPlan {
    /// The limits the plan was made for.
    pub caps: DeviceCaps,
    /// Distinct kernels, in order of first use.
    pub kernels: Vec<Kernel>,
    /// One step per node, in graph order.
    pub steps: Vec<Step>,
}

/// Counts of a plan's steps.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanSummary {
    /// Nodes run by a kernel.
    pub kernel_steps: usize,
    /// Nodes that only rename a buffer.
    pub alias_steps: usize,
    /// Nodes run on the host, by op name.
    pub host_ops: BTreeMap<String, usize>,
    /// Distinct kernels.
    pub kernels: usize,
}

impl GpuPlan {
    /// Counts the plan's steps.
    pub fn summary(&self, graph: &Graph) -> PlanSummary {
        let mut s = PlanSummary {
            kernels: self.kernels.len(),
            ..Default::default()
        };
        for step in &self.steps {
            match &step.kind {
                StepKind::Kernel { .. } => s.kernel_steps += 1,
                StepKind::Alias => s.alias_steps += 1,
                StepKind::Host { .. } => {
                    let op: &'static str = graph.nodes[step.node].op.name();
                    *s.host_ops.entry(op.to_string()).or_default() += 1;
                }
            }
        }
        s
    }
}

/// Whether a node only renames its first operand's buffer.
fn is_alias(graph: &Graph, node: &kiln_ir::Node) -> bool {
    let renames = matches!(
        node.op,
        Op::Reshape { .. }
            | Op::Flatten { .. }
            | Op::Squeeze { .. }
            | Op::Unsqueeze { .. }
            | Op::Identity
    ) || matches!(node.op, Op::Dropout) && node.outputs.len() == 1;
    renames
        && node.outputs.len() == 1
        && node.inputs.first().copied().flatten().is_some_and(|v| {
            let dt = graph.value(v).ty.dtype;
            dt != DType::Bool && !dt.is_quant()
        })
}

/// Plans `graph` for a device with `caps`: a kernel where a family has one
/// that fits the device, an alias for pure reshapes, the host otherwise.
pub fn plan_graph(graph: &Graph, caps: &DeviceCaps) -> Result<GpuPlan, CodegenError> {
    let mut kernels: Vec<Kernel> = Vec::new();
    let mut by_name: BTreeMap<String, usize> = BTreeMap::new();
    let mut steps = Vec::with_capacity(graph.nodes.len());
    for (i, node) in graph.nodes.iter().enumerate() {
        let kind = if is_alias(graph, node) {
            StepKind::Alias
        } else {
            let cx = NodeCtx {
                name: &node.name,
                op: &node.op,
                inputs: node
                    .inputs
                    .iter()
                    .map(|v| v.map(|v| &graph.value(v).ty))
                    .collect(),
                consts: node
                    .inputs
                    .iter()
                    .map(|v| v.and_then(|v| graph.constant(v)))
                    .collect(),
                outputs: node.outputs.iter().map(|&v| &graph.value(v).ty).collect(),
                caps,
            };
            match KernelSpec::select(&cx) {
                Some(spec) => {
                    let schedule = Schedule::default_for(spec.family(), caps);
                    let kernel = spec.emit(&schedule)?;
                    if kernel.fits(caps) && schedule.fits(caps) {
                        let idx = *by_name.entry(kernel.name.clone()).or_insert_with(|| {
                            kernels.push(kernel);
                            kernels.len() - 1
                        });
                        StepKind::Kernel {
                            kernel: idx,
                            spec: Box::new(spec),
                            schedule,
                        }
                    } else {
                        StepKind::Host {
                            reason: format!(
                                "kernel `{}` needs {} storage buffers and {} bytes of workgroup memory{}; the device allows {} and {}",
                                kernel.name,
                                kernel.storage_buffers(),
                                kernel.workgroup_bytes,
                                if kernel.uses_f16 { " and shader-f16" } else { "" },
                                caps.max_storage_buffers_per_stage,
                                caps.max_workgroup_storage_bytes
                            ),
                        }
                    }
                }
                None => StepKind::Host {
                    reason: format!("no GPU kernel for {}", describe_types(graph, node)),
                },
            }
        };
        steps.push(Step {
            node: i,
            name: node.name.clone(),
            kind,
        });
    }
    Ok(GpuPlan {
        caps: caps.clone(),
        kernels,
        steps,
    })
}

/// `Op(dtype, dtype, …)` for a host step's reason.
fn describe_types(graph: &Graph, node: &kiln_ir::Node) -> String {
    let types: Vec<String> = node
        .inputs
        .iter()
        .map(|v| match v {
            Some(v) => graph.value(*v).ty.dtype.name().to_string(),
            None => "-".to_string(),
        })
        .collect();
    format!("{}({})", node.op.name(), types.join(", "))
}

/// Name of the plan inside a bundle's assets.
pub const PLAN_ASSET: &str = "gpu/plan.json";

/// Folder of the WGSL kernels inside a bundle's assets.
pub const WGSL_DIR: &str = "gpu/wgsl/";

/// Failure to read a plan back from bundle assets.
#[derive(Debug, thiserror::Error)]
pub enum PlanAssetError {
    /// `gpu/plan.json` is not a plan.
    #[error("{PLAN_ASSET}: {0}")]
    Json(#[from] serde_json::Error),
    /// A kernel named by the plan has no source in the bundle.
    #[error("{PLAN_ASSET} names kernel `{0}`, but the bundle has no {WGSL_DIR}{0}.wgsl")]
    MissingKernel(String),
    /// A kernel source is not UTF-8.
    #[error("{WGSL_DIR}{0}.wgsl is not UTF-8")]
    NotUtf8(String),
}

impl GpuPlan {
    /// The plan as bundle assets: `gpu/plan.json` (steps and kernel
    /// metadata) and one readable `gpu/wgsl/<kernel>.wgsl` per kernel.
    pub fn to_assets(&self) -> BTreeMap<String, Vec<u8>> {
        let mut assets = BTreeMap::new();
        let mut meta = self.clone();
        for k in &mut meta.kernels {
            assets.insert(
                format!("{WGSL_DIR}{}.wgsl", k.name),
                std::mem::take(&mut k.wgsl).into_bytes(),
            );
        }
        // serde_json cannot fail on these types (string keys, finite data).
        let json = serde_json::to_vec_pretty(&meta).unwrap_or_default();
        assets.insert(PLAN_ASSET.to_string(), json);
        assets
    }

    /// Reads a plan written by [`GpuPlan::to_assets`]; `Ok(None)` when the
    /// bundle has no plan (a CPU bundle).
    pub fn from_assets<'a>(
        asset: impl Fn(&str) -> Option<&'a [u8]>,
    ) -> Result<Option<GpuPlan>, PlanAssetError> {
        let Some(json) = asset(PLAN_ASSET) else {
            return Ok(None);
        };
        let mut plan: GpuPlan = serde_json::from_slice(json)?;
        for k in &mut plan.kernels {
            let src = asset(&format!("{WGSL_DIR}{}.wgsl", k.name))
                .ok_or_else(|| PlanAssetError::MissingKernel(k.name.clone()))?;
            k.wgsl = String::from_utf8(src.to_vec())
                .map_err(|_| PlanAssetError::NotUtf8(k.name.clone()))?;
        }
        Ok(Some(plan))
    }
}
