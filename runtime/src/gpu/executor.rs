//! Runs a whole graph through wgpu: kernel steps on the device, alias steps
//! as buffer renames, host steps through the CPU executor's kernels.

use super::context::{padded, GpuContext, Pipeline};
use crate::cpu::eval_node;
use crate::RuntimeError;
use kiln_codegen::{plan_graph, GpuPlan, Kernel, KernelSpec, Schedule, StepKind};
use kiln_ir::{DType, Graph, Node, Shape, Tensor, ValueId, ValueType};
use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};

/// Counters of one [`GpuExecutor::run`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunStats {
    /// Kernel dispatches recorded (zero-element results launch nothing).
    pub kernel_launches: usize,
    /// Nodes evaluated on the host, including kernel steps that fell back.
    pub host_steps: usize,
    /// Nodes that only renamed a buffer or a host tensor.
    pub alias_steps: usize,
    /// Kernel steps run on the host at run time: a result shape that only
    /// the data decides, or a buffer or grid beyond the device's limits.
    pub kernel_fallbacks: usize,
    /// Command buffers submitted (one per stretch of work between host
    /// read-backs, plus the final read-back).
    pub submissions: usize,
    /// Tensor bytes copied to the device during the run (inputs and host
    /// results that kernels read; not the params words).
    pub uploaded_bytes: u64,
    /// Tensor bytes read back (for host steps and graph outputs).
    pub downloaded_bytes: u64,
    /// Device buffers created because the pool had none of the size class.
    pub buffers_created: usize,
    /// Device buffers taken from the pool (freed earlier in this run or by
    /// an earlier run).
    pub buffers_reused: usize,
}

/// What [`GpuExecutor::run`] returns.
#[derive(Clone, Debug)]
pub struct GpuRunResult {
    /// Graph outputs, by name, in graph order.
    pub outputs: Vec<(String, Tensor)>,
    /// What the run did.
    pub stats: RunStats,
}

/// A device buffer and whether it returns to the pool when its last value dies.
struct DevBuf {
    buffer: wgpu::Buffer,
    /// Bytes allocated (the size class for pooled buffers).
    size: u64,
    pooled: bool,
}

/// Free buffers by size class, reused within and across runs.
#[derive(Default)]
struct Pool {
    free: BTreeMap<u64, Vec<wgpu::Buffer>>,
}

/// Allocation size for `bytes`: a multiple of a quarter of the enclosing
/// power of two (at most 25% waste), at least 256 bytes, so buffers of
/// nearby sizes share a class.
fn size_class(bytes: u64) -> u64 {
    let b = bytes.max(256);
    let p = 1u64 << (63 - b.leading_zeros());
    let step = (p / 4).max(4);
    b.div_ceil(step) * step
}

/// A result's dtype and run-time dimensions.
type Concrete = (DType, Vec<usize>);

/// Where a value lives during a run; a value may be in both places.
#[derive(Clone)]
struct Slot {
    dtype: DType,
    dims: Vec<usize>,
    host: Option<Tensor>,
    dev: Option<Arc<DevBuf>>,
}

impl Slot {
    fn bytes(&self) -> usize {
        self.dtype.byte_len(&self.dims).unwrap_or(0)
    }
}

/// Work recorded for the current submission, in program order.
enum Pending {
    /// Copy `size` bytes from the segment's staging buffer into `dst`.
    Upload {
        dst: wgpu::Buffer,
        offset: u64,
        size: u64,
    },
    Dispatch {
        node: usize,
        kernel: usize,
        /// Bound inputs, outputs (buffer, binding size), params last.
        bindings: Vec<(wgpu::Buffer, u64)>,
        params_offset: u64,
        params_size: u64,
        workgroups: [u32; 3],
    },
}

#[derive(Default)]
struct Segment {
    ops: Vec<Pending>,
    staging: Vec<u8>,
    params: Vec<u8>,
}

/// Validation and out-of-memory error scopes, popped in order (validation
/// first) and reopened at each check.
struct Scopes<'d> {
    device: &'d wgpu::Device,
    guards: Option<(wgpu::ErrorScopeGuard, wgpu::ErrorScopeGuard)>,
}

impl<'d> Scopes<'d> {
    fn open(device: &'d wgpu::Device) -> Self {
        let oom = device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let val = device.push_error_scope(wgpu::ErrorFilter::Validation);
        Scopes {
            device,
            guards: Some((oom, val)),
        }
    }

    /// Errors recorded since the last check, as one message.
    fn take(&mut self) -> Option<String> {
        let (oom, val) = self.guards.take()?;
        let v = pollster::block_on(val.pop());
        let o = pollster::block_on(oom.pop());
        let oom = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let val = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        self.guards = Some((oom, val));
        v.or(o).map(|e| e.to_string())
    }

    fn check(&mut self, what: impl FnOnce() -> String) -> Result<(), RuntimeError> {
        match self.take() {
            Some(e) => Err(RuntimeError::Gpu(format!("{}: {e}", what()))),
            None => Ok(()),
        }
    }
}

impl Drop for Scopes<'_> {
    fn drop(&mut self) {
        if let Some((oom, val)) = self.guards.take() {
            drop(val);
            drop(oom);
        }
    }
}

/// Runs graphs on a wgpu device following a [`GpuPlan`].
pub struct GpuExecutor {
    ctx: Arc<GpuContext>,
    graph: Graph,
    plan: GpuPlan,
    fallbacks: Vec<String>,
    /// One pipeline per kernel of the plan that some step launches.
    pipelines: Vec<Option<Pipeline>>,
    /// Constants as values: host tensor always, device buffer when a kernel reads it.
    consts: Vec<Option<Slot>>,
    resident_bytes: u64,
    last_use: Vec<Option<usize>>,
    is_output: Vec<bool>,
    pool: Mutex<Pool>,
    params: Mutex<Option<wgpu::Buffer>>,
}

impl std::fmt::Debug for GpuExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuExecutor")
            .field("graph", &self.graph.name)
            .field("adapter", &self.ctx.adapter_name())
            .field("steps", &self.plan.steps.len())
            .field("fallbacks", &self.fallbacks)
            .finish()
    }
}

/// Fixed dims as a shape.
fn fixed_type(dtype: DType, dims: &[usize]) -> ValueType {
    ValueType::new(
        dtype,
        Shape::fixed(&dims.iter().map(|&d| d as u64).collect::<Vec<_>>()),
    )
}

/// Names `node` in errors the CPU kernels raise with only the op's name.
fn name_error(g: &Graph, node: &Node, e: RuntimeError) -> RuntimeError {
    match e {
        RuntimeError::Node { message, .. } => RuntimeError::Node {
            node: node.describe(g),
            message,
        },
        RuntimeError::Unsupported(m) => {
            RuntimeError::Unsupported(format!("{}: {m}", node.describe(g)))
        }
        other => other,
    }
}

/// Why a kernel cannot run with `caps`, or `None` when it can.
fn misfit(kernel: &Kernel, schedule: &Schedule, caps: &kiln_codegen::DeviceCaps) -> Option<String> {
    let mut why = Vec::new();
    if kernel.storage_buffers() > caps.max_storage_buffers_per_stage {
        why.push(format!(
            "{} storage buffers (device: {})",
            kernel.storage_buffers(),
            caps.max_storage_buffers_per_stage
        ));
    }
    if kernel.workgroup_bytes > caps.max_workgroup_storage_bytes {
        why.push(format!(
            "{} bytes of workgroup memory (device: {})",
            kernel.workgroup_bytes, caps.max_workgroup_storage_bytes
        ));
    }
    if kernel.uses_f16 && !caps.shader_f16 {
        why.push("shader-f16 (device: none)".to_string());
    }
    if !schedule.fits(caps) {
        why.push(format!(
            "workgroup {:?} (device: {} invocations, at most {:?})",
            schedule.workgroup, caps.max_invocations_per_workgroup, caps.max_workgroup_size
        ));
    }
    if kernel.fits(caps) && why.is_empty() {
        None
    } else {
        Some(why.join(", "))
    }
}

impl GpuExecutor {
    /// Prepares `graph` on `ctx`'s device: plans it for the device when no
    /// plan is given; otherwise checks the plan against the graph and
    /// re-plans, for the device, each kernel the device cannot run (see
    /// [`GpuExecutor::fallbacks`]). Builds one pipeline per distinct kernel
    /// and uploads the constants kernels read.
    pub fn new(
        ctx: Arc<GpuContext>,
        graph: Graph,
        plan: Option<GpuPlan>,
    ) -> Result<Self, RuntimeError> {
        let caps = ctx.caps().clone();
        let device_plan = || {
            plan_graph(&graph, &caps).map_err(|e| {
                RuntimeError::Gpu(format!(
                    "planning graph `{}` for the device: {e}",
                    graph.name
                ))
            })
        };
        let mut fallbacks = Vec::new();
        let plan = match plan {
            None => device_plan()?,
            Some(mut plan) => {
                check_plan(&graph, &plan)?;
                let mut replanned: Option<GpuPlan> = None;
                for i in 0..plan.steps.len() {
                    let StepKind::Kernel {
                        kernel, schedule, ..
                    } = &plan.steps[i].kind
                    else {
                        continue;
                    };
                    let Some(why) = misfit(&plan.kernels[*kernel], schedule, &caps) else {
                        continue;
                    };
                    let old = plan.kernels[*kernel].name.clone();
                    if replanned.is_none() {
                        replanned = Some(device_plan()?);
                    }
                    let dp = replanned.as_ref().expect("planned just above");
                    let kind = match &dp.steps[i].kind {
                        StepKind::Kernel {
                            kernel,
                            spec,
                            schedule,
                        } => {
                            let k = &dp.kernels[*kernel];
                            let idx = match plan.kernels.iter().position(|x| x.name == k.name) {
                                Some(idx) => idx,
                                None => {
                                    plan.kernels.push(k.clone());
                                    plan.kernels.len() - 1
                                }
                            };
                            StepKind::Kernel {
                                kernel: idx,
                                spec: spec.clone(),
                                schedule: schedule.clone(),
                            }
                        }
                        other => other.clone(),
                    };
                    let now = match &kind {
                        StepKind::Kernel { kernel, .. } => {
                            format!("kernel `{}`", plan.kernels[*kernel].name)
                        }
                        StepKind::Alias => "a buffer alias".to_string(),
                        StepKind::Host { reason } => format!("the host ({reason})"),
                    };
                    fallbacks.push(format!(
                        "node {}: kernel `{old}` needs {why}; runs as {now}",
                        graph.nodes[i].describe(&graph)
                    ));
                    plan.steps[i].kind = kind;
                }
                plan
            }
        };
        // The plan must still agree with the calling convention.
        for (i, step) in plan.steps.iter().enumerate() {
            if let StepKind::Kernel { kernel, spec, .. } = &step.kind {
                check_kernel_step(&graph, &graph.nodes[i], &plan.kernels[*kernel], spec)?;
            }
        }

        let mut scopes = Scopes::open(&ctx.device);
        let mut pipelines: Vec<Option<Pipeline>> = (0..plan.kernels.len()).map(|_| None).collect();
        for step in &plan.steps {
            if let StepKind::Kernel { kernel, .. } = &step.kind {
                if pipelines[*kernel].is_none() {
                    pipelines[*kernel] = Some(ctx.create_pipeline(&plan.kernels[*kernel])?);
                }
            }
        }

        // Constants a kernel binds, directly or through aliases, go to the
        // device once; the rest stay on the host.
        let mut on_device: HashSet<ValueId> = HashSet::new();
        for (step, node) in plan.steps.iter().zip(&graph.nodes).rev() {
            match &step.kind {
                StepKind::Kernel { spec, .. } => {
                    for pos in spec.bound_inputs() {
                        if let Some(Some(v)) = node.inputs.get(pos) {
                            on_device.insert(*v);
                        }
                    }
                }
                StepKind::Alias if node.outputs.iter().any(|o| on_device.contains(o)) => {
                    if let Some(Some(v)) = node.inputs.first() {
                        on_device.insert(*v);
                    }
                }
                _ => {}
            }
        }
        let nv = graph.num_values();
        let mut consts: Vec<Option<Slot>> = vec![None; nv];
        let mut resident_bytes = 0u64;
        let binding_limit = ctx
            .limits
            .max_storage_buffer_binding_size
            .min(ctx.limits.max_buffer_size);
        for (&id, t) in &graph.constants {
            if id.index() >= nv {
                continue;
            }
            let dev = if on_device.contains(&id) && padded(t.bytes().len()) <= binding_limit {
                resident_bytes += t.bytes().len() as u64;
                Some(Arc::new(DevBuf {
                    buffer: ctx.upload(&graph.value(id).name, t.bytes()),
                    size: padded(t.bytes().len()),
                    pooled: false,
                }))
            } else {
                None
            };
            consts[id.index()] = Some(Slot {
                dtype: t.dtype(),
                dims: t.dims().to_vec(),
                host: Some(t.clone()),
                dev,
            });
        }
        scopes.check(|| format!("uploading the constants of graph `{}`", graph.name))?;
        drop(scopes);

        let mut last_use = vec![None; nv];
        for (i, n) in graph.nodes.iter().enumerate() {
            for v in n.present_inputs() {
                if v.index() >= nv {
                    return Err(RuntimeError::Node {
                        node: n.describe(&graph),
                        message: format!("operand #{} is not a value of the graph", v.0),
                    });
                }
                last_use[v.index()] = Some(i);
            }
            if let Some(o) = n.outputs.iter().find(|o| o.index() >= nv) {
                return Err(RuntimeError::Node {
                    node: n.describe(&graph),
                    message: format!("output #{} is not a value of the graph", o.0),
                });
            }
        }
        let mut is_output = vec![false; nv];
        for &o in &graph.outputs {
            if o.index() >= nv {
                return Err(RuntimeError::Node {
                    node: graph.name.clone(),
                    message: format!("graph output #{} is not a value of the graph", o.0),
                });
            }
            is_output[o.index()] = true;
        }
        Ok(GpuExecutor {
            ctx,
            graph,
            plan,
            fallbacks,
            pipelines,
            consts,
            resident_bytes,
            last_use,
            is_output,
            pool: Mutex::new(Pool::default()),
            params: Mutex::new(None),
        })
    }

    /// The graph being run.
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// The plan being followed (after re-planning for the device).
    pub fn plan(&self) -> &GpuPlan {
        &self.plan
    }

    /// The device context.
    pub fn context(&self) -> &Arc<GpuContext> {
        &self.ctx
    }

    /// One message per kernel of the given plan that the device could not
    /// run, naming the node, what the kernel needs and what runs instead.
    pub fn fallbacks(&self) -> &[String] {
        &self.fallbacks
    }

    /// Bytes of constants resident on the device.
    pub fn resident_bytes(&self) -> u64 {
        self.resident_bytes
    }

    /// Runs the graph on named inputs.
    pub fn run(&self, inputs: &BTreeMap<String, Tensor>) -> Result<GpuRunResult, RuntimeError> {
        self.check_inputs(inputs)?;
        let pool = std::mem::take(&mut *self.pool.lock().unwrap_or_else(|e| e.into_inner()));
        let params = self.params.lock().unwrap_or_else(|e| e.into_inner()).take();
        let mut run = Run {
            x: self,
            env: vec![None; self.graph.num_values()],
            pool,
            params,
            seg: Segment::default(),
            stats: RunStats::default(),
            scopes: Scopes::open(&self.ctx.device),
        };
        let result = run.run(inputs);
        // Every buffer of the run goes back to the pool for the next one,
        // also after an error (nothing recorded is pending any more then).
        run.seg = Segment::default();
        for slot in std::mem::take(&mut run.env).into_iter().flatten() {
            if let Some(d) = slot.dev {
                run.pool.release(d);
            }
        }
        let Run {
            pool: run_pool,
            params,
            stats,
            ..
        } = run;
        {
            let mut shared = self.pool.lock().unwrap_or_else(|e| e.into_inner());
            for (class, mut bufs) in run_pool.free {
                shared.free.entry(class).or_default().append(&mut bufs);
            }
        }
        *self.params.lock().unwrap_or_else(|e| e.into_inner()) = params;
        result.map(|outputs| GpuRunResult { outputs, stats })
    }

    /// Checks the caller's inputs against the graph's declared inputs (an
    /// input that is also a constant may be left out).
    fn check_inputs(&self, inputs: &BTreeMap<String, Tensor>) -> Result<(), RuntimeError> {
        crate::inputs::check(&self.graph, inputs, true)
    }
}

/// Checks that `plan` was made for `graph`: one step per node, in order, with
/// the node's name, and kernel indices inside the plan.
fn check_plan(graph: &Graph, plan: &GpuPlan) -> Result<(), RuntimeError> {
    if plan.steps.len() != graph.nodes.len() {
        return Err(RuntimeError::Gpu(format!(
            "the plan has {} steps but graph `{}` has {} nodes: it was made for another graph",
            plan.steps.len(),
            graph.name,
            graph.nodes.len()
        )));
    }
    for (i, (step, node)) in plan.steps.iter().zip(&graph.nodes).enumerate() {
        if step.node != i || step.name != node.name {
            return Err(RuntimeError::Node {
                node: node.describe(graph),
                message: format!(
                    "step {i} of the plan is for node {} `{}`: the plan was made for another graph",
                    step.node, step.name
                ),
            });
        }
        if let StepKind::Kernel { kernel, .. } = &step.kind {
            if *kernel >= plan.kernels.len() {
                return Err(RuntimeError::Node {
                    node: node.describe(graph),
                    message: format!(
                        "the plan names kernel {kernel}, but has {} kernels",
                        plan.kernels.len()
                    ),
                });
            }
        }
    }
    Ok(())
}

/// Checks a kernel step's bindings against the node.
fn check_kernel_step(
    graph: &Graph,
    node: &Node,
    kernel: &Kernel,
    spec: &KernelSpec,
) -> Result<(), RuntimeError> {
    let bound = spec.bound_inputs();
    let absent = bound
        .iter()
        .find(|&&p| !matches!(node.inputs.get(p), Some(Some(_))));
    if bound.len() != kernel.inputs as usize
        || node.outputs.len() != kernel.outputs as usize
        || absent.is_some()
    {
        return Err(RuntimeError::Node {
            node: node.describe(graph),
            message: format!(
                "kernel `{}` binds {} inputs and {} outputs; the node has operands {:?} bound and {} results",
                kernel.name,
                kernel.inputs,
                kernel.outputs,
                bound,
                node.outputs.len()
            ),
        });
    }
    Ok(())
}

impl Pool {
    /// A buffer of at least `bytes`, from the pool when one of the class is free.
    fn take(&mut self, ctx: &GpuContext, bytes: u64, stats: &mut RunStats) -> DevBuf {
        let padded = bytes.max(4).div_ceil(4) * 4;
        let mut class = size_class(padded);
        if class > ctx.limits.max_buffer_size {
            class = padded;
        }
        if let Some(buffer) = self.free.get_mut(&class).and_then(|v| v.pop()) {
            stats.buffers_reused += 1;
            return DevBuf {
                buffer,
                size: class,
                pooled: true,
            };
        }
        stats.buffers_created += 1;
        DevBuf {
            buffer: ctx.storage_buffer("kiln pooled", class),
            size: class,
            pooled: true,
        }
    }

    /// Returns a buffer to the pool once no value shares it any more.
    fn release(&mut self, d: Arc<DevBuf>) {
        if let Ok(d) = Arc::try_unwrap(d) {
            if d.pooled {
                self.free.entry(d.size).or_default().push(d.buffer);
            }
        }
    }
}

/// The state of one run.
struct Run<'a> {
    x: &'a GpuExecutor,
    env: Vec<Option<Slot>>,
    pool: Pool,
    params: Option<wgpu::Buffer>,
    seg: Segment,
    stats: RunStats,
    scopes: Scopes<'a>,
}

impl Run<'_> {
    fn slot(&self, v: ValueId) -> Option<&Slot> {
        self.env[v.index()]
            .as_ref()
            .or(self.x.consts[v.index()].as_ref())
    }

    fn operand(&self, node: &Node, pos: usize, v: ValueId) -> Result<&Slot, RuntimeError> {
        self.slot(v).ok_or_else(|| RuntimeError::Node {
            node: node.describe(&self.x.graph),
            message: format!("operand {pos} has no value"),
        })
    }

    fn run(
        &mut self,
        inputs: &BTreeMap<String, Tensor>,
    ) -> Result<Vec<(String, Tensor)>, RuntimeError> {
        let g = &self.x.graph;
        for &v in &g.inputs {
            if let Some(t) = inputs.get(&g.value(v).name) {
                self.env[v.index()] = Some(Slot {
                    dtype: t.dtype(),
                    dims: t.dims().to_vec(),
                    host: Some(t.clone()),
                    dev: None,
                });
            }
        }
        for (i, (node, step)) in g.nodes.iter().zip(&self.x.plan.steps).enumerate() {
            match &step.kind {
                StepKind::Kernel {
                    kernel,
                    spec,
                    schedule,
                } => {
                    if !self.kernel_step(i, node, *kernel, spec, schedule)? {
                        self.stats.kernel_fallbacks += 1;
                        self.host_step(node)?;
                    }
                }
                StepKind::Alias => {
                    if !self.alias_step(node)? {
                        self.host_step(node)?;
                    }
                }
                StepKind::Host { .. } => self.host_step(node)?,
            }
            self.free_after(i, node);
        }
        self.outputs()
    }

    /// Drops what node `i` read for the last time, and results nobody reads.
    fn free_after(&mut self, i: usize, node: &Node) {
        let x = self.x;
        let dead: Vec<ValueId> = node
            .present_inputs()
            .filter(|v| x.last_use[v.index()] == Some(i))
            .chain(
                node.outputs
                    .iter()
                    .copied()
                    .filter(|v| x.last_use[v.index()].is_none()),
            )
            .filter(|v| !x.is_output[v.index()])
            .collect();
        for v in dead {
            if let Some(slot) = self.env[v.index()].take() {
                if let Some(d) = slot.dev {
                    self.pool.release(d);
                }
            }
        }
    }

    /// Concrete result types of `node` from its operands' run-time shapes,
    /// or `None` when they depend on data the host does not have.
    fn concrete_outputs(&self, node: &Node) -> Option<Vec<Concrete>> {
        let g = &self.x.graph;
        let mut types: Vec<Option<ValueType>> = Vec::with_capacity(node.inputs.len());
        let mut consts: Vec<Option<Tensor>> = Vec::with_capacity(node.inputs.len());
        for v in &node.inputs {
            match v {
                Some(v) => {
                    let s = self.slot(*v)?;
                    types.push(Some(fixed_type(s.dtype, &s.dims)));
                    // Small integer tensors known on the host (shapes made
                    // by host steps) decide the result shapes of Reshape,
                    // Expand and the like.
                    let known = g.constant(*v).cloned().or_else(|| {
                        s.host
                            .as_ref()
                            .filter(|t| t.dtype().is_integer() && t.len() <= 1024)
                            .cloned()
                    });
                    consts.push(known);
                }
                None => {
                    types.push(None);
                    consts.push(None);
                }
            }
        }
        let type_refs: Vec<Option<&ValueType>> = types.iter().map(|t| t.as_ref()).collect();
        let const_refs: Vec<Option<&Tensor>> = consts.iter().map(|t| t.as_ref()).collect();
        let out = kiln_ir::infer::infer_node_with_outputs(
            &node.op,
            &type_refs,
            &const_refs,
            node.outputs.len(),
        )
        .ok()?;
        out.into_iter()
            .map(|t| {
                let dims = t.shape.as_fixed()?;
                let dims: Vec<usize> = dims.into_iter().map(|d| d as usize).collect();
                t.dtype.byte_len(&dims)?;
                Some((t.dtype, dims))
            })
            .collect()
    }

    /// [`Run::concrete_outputs`], reading back first the small integer
    /// operands only the device has when the shapes depend on them (a
    /// Reshape target computed by kernels): a few bytes instead of running
    /// the node, and its large operands, on the host.
    fn resolve_outputs(&mut self, node: &Node) -> Result<Option<Vec<Concrete>>, RuntimeError> {
        if let Some(t) = self.concrete_outputs(node) {
            return Ok(Some(t));
        }
        let small: Vec<ValueId> = node
            .present_inputs()
            .filter(|&v| {
                self.slot(v).is_some_and(|s| {
                    s.host.is_none()
                        && s.dtype.is_integer()
                        && s.dims.iter().product::<usize>() <= 1024
                })
            })
            .collect();
        if small.is_empty() {
            return Ok(None);
        }
        let g = &self.x.graph;
        self.read_to_host(&small, || {
            format!(
                "reading back the shape operands of node {}",
                node.describe(g)
            )
        })?;
        Ok(self.concrete_outputs(node))
    }

    /// Renames the first operand; `false` when the result shape is unknown.
    fn alias_step(&mut self, node: &Node) -> Result<bool, RuntimeError> {
        let (Some(Some(src)), [out]) = (node.inputs.first(), node.outputs.as_slice()) else {
            return Ok(false);
        };
        let Some(types) = self.resolve_outputs(node)? else {
            return Ok(false);
        };
        let (dtype, dims) = types[0].clone();
        let s = self.operand(node, 0, *src)?;
        if dtype != s.dtype || dtype.byte_len(&dims) != Some(s.bytes()) {
            return Ok(false);
        }
        let host = match &s.host {
            Some(t) => Some(
                Tensor::from_bytes(dtype, dims.clone(), t.storage().clone()).map_err(|e| {
                    RuntimeError::Node {
                        node: node.describe(&self.x.graph),
                        message: e.to_string(),
                    }
                })?,
            ),
            None => None,
        };
        let slot = Slot {
            dtype,
            dims,
            host,
            dev: s.dev.clone(),
        };
        self.env[out.index()] = Some(slot);
        self.stats.alias_steps += 1;
        Ok(true)
    }

    /// Evaluates `node` with the CPU executor's kernels, reading back the
    /// operands that only the device has.
    fn host_step(&mut self, node: &Node) -> Result<(), RuntimeError> {
        let g = &self.x.graph;
        let mut missing: Vec<ValueId> = Vec::new();
        for (pos, v) in node.inputs.iter().enumerate() {
            if let Some(v) = v {
                if self.operand(node, pos, *v)?.host.is_none() && !missing.contains(v) {
                    missing.push(*v);
                }
            }
        }
        if !missing.is_empty() {
            self.read_to_host(&missing, || {
                format!("reading back the operands of node {}", node.describe(g))
            })?;
        }
        let tensors: Vec<Option<Tensor>> = node
            .inputs
            .iter()
            .map(|v| v.and_then(|v| self.slot(v).and_then(|s| s.host.clone())))
            .collect();
        let refs: Vec<Option<&Tensor>> = tensors.iter().map(|t| t.as_ref()).collect();
        let results =
            eval_node(&node.op, &refs, node.outputs.len()).map_err(|e| name_error(g, node, e))?;
        if results.len() < node.outputs.len() {
            return Err(RuntimeError::Node {
                node: node.describe(g),
                message: format!(
                    "{} produced {} results, the node has {} outputs",
                    node.op.name(),
                    results.len(),
                    node.outputs.len()
                ),
            });
        }
        for (&o, t) in node.outputs.iter().zip(results) {
            self.env[o.index()] = Some(Slot {
                dtype: t.dtype(),
                dims: t.dims().to_vec(),
                host: Some(t),
                dev: None,
            });
        }
        self.stats.host_steps += 1;
        Ok(())
    }

    /// Records `node`'s dispatch; `false` when it must run on the host
    /// instead (unknown result shape, or beyond the device's limits).
    fn kernel_step(
        &mut self,
        i: usize,
        node: &Node,
        kernel: usize,
        spec: &KernelSpec,
        schedule: &Schedule,
    ) -> Result<bool, RuntimeError> {
        let x = self.x;
        let g = &x.graph;
        let Some(outs) = self.resolve_outputs(node)? else {
            return Ok(false);
        };
        let bound = spec.bound_inputs();
        let limit = x
            .ctx
            .limits
            .max_storage_buffer_binding_size
            .min(x.ctx.limits.max_buffer_size);
        let mut in_dims: Vec<Option<Vec<usize>>> = Vec::with_capacity(node.inputs.len());
        for (pos, v) in node.inputs.iter().enumerate() {
            match v {
                Some(v) => in_dims.push(Some(self.operand(node, pos, *v)?.dims.clone())),
                None => in_dims.push(None),
            }
        }
        for &pos in &bound {
            let Some(Some(v)) = node.inputs.get(pos) else {
                continue;
            };
            let s = self.operand(node, pos, *v)?;
            if s.dev.is_none() && padded(s.bytes()) > limit {
                return Ok(false);
            }
        }
        for (dt, dims) in &outs {
            if padded(dt.byte_len(dims).unwrap_or(0)) > limit {
                return Ok(false);
            }
        }
        let in_refs: Vec<Option<&[usize]>> = in_dims.iter().map(|d| d.as_deref()).collect();
        let out_refs: Vec<&[usize]> = outs.iter().map(|(_, d)| d.as_slice()).collect();
        let launch =
            spec.launch(&in_refs, &out_refs, schedule)
                .map_err(|e| RuntimeError::Node {
                    node: node.describe(g),
                    message: format!("launching kernel `{}`: {e}", x.plan.kernels[kernel].name),
                })?;
        if launch
            .workgroups
            .iter()
            .any(|&w| w > x.ctx.limits.max_compute_workgroups_per_dimension)
        {
            return Ok(false);
        }

        // Bound operands on the device (host values uploaded in order).
        let mut bindings: Vec<(wgpu::Buffer, u64)> = Vec::with_capacity(bound.len() + outs.len());
        for &pos in &bound {
            let Some(Some(v)) = node.inputs.get(pos).copied() else {
                continue;
            };
            let dev = self.on_device(node, pos, v)?;
            let size = padded(self.operand(node, pos, v)?.bytes());
            bindings.push((dev.buffer.clone(), size));
        }
        // Results: fresh buffers, allocated before any operand is freed so a
        // kernel never writes a buffer it reads.
        let mut out_slots = Vec::with_capacity(outs.len());
        for (dtype, dims) in outs {
            let bytes = dtype.byte_len(&dims).unwrap_or(0);
            let dev = Arc::new(self.pool.take(&x.ctx, padded(bytes), &mut self.stats));
            bindings.push((dev.buffer.clone(), padded(bytes)));
            out_slots.push(Slot {
                dtype,
                dims,
                host: None,
                dev: Some(dev),
            });
        }
        let empty = out_slots.iter().all(|s| s.dims.contains(&0));
        if !empty && launch.workgroups.iter().all(|&w| w > 0) {
            let align = u64::from(x.ctx.limits.min_storage_buffer_offset_alignment.max(4));
            let offset = (self.seg.params.len() as u64).div_ceil(align) * align;
            self.seg.params.resize(offset as usize, 0);
            if launch.params.is_empty() {
                self.seg.params.extend_from_slice(&[0; 4]);
            } else {
                self.seg
                    .params
                    .extend_from_slice(bytemuck::cast_slice(&launch.params));
            }
            let params_size = self.seg.params.len() as u64 - offset;
            self.seg.ops.push(Pending::Dispatch {
                node: i,
                kernel,
                bindings,
                params_offset: offset,
                params_size,
                workgroups: launch.workgroups,
            });
            self.stats.kernel_launches += 1;
        }
        for (&o, slot) in node.outputs.iter().zip(out_slots) {
            self.env[o.index()] = Some(slot);
        }
        Ok(true)
    }

    /// The device buffer of operand `v`, uploading its host tensor first if needed.
    fn on_device(
        &mut self,
        node: &Node,
        pos: usize,
        v: ValueId,
    ) -> Result<Arc<DevBuf>, RuntimeError> {
        let s = self.operand(node, pos, v)?;
        if let Some(d) = &s.dev {
            return Ok(d.clone());
        }
        let mut s = s.clone();
        let Some(t) = s.host.clone() else {
            return Err(RuntimeError::Node {
                node: node.describe(&self.x.graph),
                message: format!("operand {pos} is neither on the host nor on the device"),
            });
        };
        let data = t.bytes();
        let size = padded(data.len());
        let dev = Arc::new(self.pool.take(&self.x.ctx, size, &mut self.stats));
        let offset = self.seg.staging.len() as u64;
        self.seg.staging.extend_from_slice(data);
        self.seg.staging.resize((offset + size) as usize, 0);
        self.seg.ops.push(Pending::Upload {
            dst: dev.buffer.clone(),
            offset,
            size,
        });
        self.stats.uploaded_bytes += data.len() as u64;
        s.dev = Some(dev.clone());
        // A constant uploaded for this run lives in the run's values, so it
        // is freed at its last use like any intermediate.
        self.env[v.index()] = Some(s);
        Ok(dev)
    }

    /// Reads the device values `vs` back into their slots' host tensors.
    fn read_to_host(
        &mut self,
        vs: &[ValueId],
        what: impl Fn() -> String,
    ) -> Result<(), RuntimeError> {
        let mut reads: Vec<(wgpu::Buffer, usize)> = Vec::new();
        let mut targets: Vec<ValueId> = Vec::new();
        for &v in vs {
            let Some(s) = self.slot(v) else { continue };
            if s.host.is_some() {
                continue;
            }
            let bytes = s.bytes();
            let Some(d) = &s.dev else {
                return Err(RuntimeError::Gpu(format!(
                    "{}: value `{}` is neither on the host nor on the device",
                    what(),
                    self.x.graph.value(v).name
                )));
            };
            if bytes > 0 {
                reads.push((d.buffer.clone(), bytes));
            }
            targets.push(v);
        }
        let mut data = self.flush(&reads, &what)?.into_iter();
        for v in targets {
            let mut s = self.slot(v).cloned().expect("checked above");
            let bytes = if s.bytes() > 0 {
                data.next().unwrap_or_default()
            } else {
                Vec::new()
            };
            self.stats.downloaded_bytes += bytes.len() as u64;
            let t = Tensor::from_raw(s.dtype, s.dims.clone(), &bytes).map_err(|e| {
                RuntimeError::Gpu(format!(
                    "{}: value `{}`: {e}",
                    what(),
                    self.x.graph.value(v).name
                ))
            })?;
            s.host = Some(t);
            self.env[v.index()] = Some(s);
        }
        Ok(())
    }

    /// Submits the work recorded so far, with copies of `reads` to staging
    /// buffers, waits, and returns the bytes read.
    fn flush(
        &mut self,
        reads: &[(wgpu::Buffer, usize)],
        what: &dyn Fn() -> String,
    ) -> Result<Vec<Vec<u8>>, RuntimeError> {
        if self.seg.ops.is_empty() && reads.is_empty() {
            return Ok(Vec::new());
        }
        let x = self.x;
        let ctx = &x.ctx;
        let seg = std::mem::take(&mut self.seg);
        let staging = (!seg.staging.is_empty()).then(|| {
            ctx.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("kiln upload"),
                size: seg.staging.len() as u64,
                usage: wgpu::BufferUsages::MAP_WRITE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: true,
            })
        });
        if let Some(buf) = &staging {
            {
                let mut view = buf
                    .slice(..)
                    .get_mapped_range_mut()
                    .map_err(|e| RuntimeError::Gpu(format!("{}: staging upload: {e}", what())))?;
                view.copy_from_slice(&seg.staging);
            }
            buf.unmap();
        }
        if !seg.params.is_empty() {
            let need = padded(seg.params.len());
            if self.params.as_ref().is_none_or(|b| b.size() < need) {
                self.params = Some(ctx.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("kiln params"),
                    size: size_class(need),
                    usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                }));
            }
            let mut words = seg.params.clone();
            words.resize(need as usize, 0);
            if let Some(p) = &self.params {
                ctx.queue.write_buffer(p, 0, &words);
            }
        }
        let mut encoder = ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("kiln run"),
            });
        let mut first_node = None;
        let mut last_node = None;
        let mut ops = seg.ops.iter().peekable();
        while let Some(op) = ops.next() {
            match op {
                Pending::Upload { dst, offset, size } => {
                    if let Some(src) = &staging {
                        encoder.copy_buffer_to_buffer(src, *offset, dst, 0, *size);
                    }
                }
                Pending::Dispatch { .. } => {
                    let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                        label: Some("kiln kernels"),
                        timestamp_writes: None,
                    });
                    let mut current = Some(op);
                    while let Some(Pending::Dispatch {
                        node,
                        kernel,
                        bindings,
                        params_offset,
                        params_size,
                        workgroups,
                    }) = current
                    {
                        first_node.get_or_insert(*node);
                        last_node = Some(*node);
                        let pipeline = x.pipelines[*kernel]
                            .as_ref()
                            .expect("a pipeline exists for every kernel a step launches");
                        let params = self
                            .params
                            .as_ref()
                            .expect("the params buffer was written above");
                        let mut entries: Vec<wgpu::BindGroupEntry> = bindings
                            .iter()
                            .enumerate()
                            .map(|(b, (buf, size))| wgpu::BindGroupEntry {
                                binding: b as u32,
                                resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                                    buffer: buf,
                                    offset: 0,
                                    size: wgpu::BufferSize::new(*size),
                                }),
                            })
                            .collect();
                        entries.push(wgpu::BindGroupEntry {
                            binding: bindings.len() as u32,
                            resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                                buffer: params,
                                offset: *params_offset,
                                size: wgpu::BufferSize::new(*params_size),
                            }),
                        });
                        let bind_group = ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
                            label: Some(&x.plan.kernels[*kernel].name),
                            layout: &pipeline.layout,
                            entries: &entries,
                        });
                        pass.set_pipeline(&pipeline.pipeline);
                        pass.set_bind_group(0, &bind_group, &[]);
                        let [wx, wy, wz] = *workgroups;
                        pass.dispatch_workgroups(wx, wy, wz);
                        current = if matches!(ops.peek(), Some(Pending::Dispatch { .. })) {
                            ops.next()
                        } else {
                            None
                        };
                    }
                }
            }
        }
        let read_refs: Vec<(&wgpu::Buffer, usize)> = reads.iter().map(|(b, n)| (b, *n)).collect();
        self.stats.submissions += 1;
        let result = ctx.submit_and_read(encoder, &read_refs);
        let g = &x.graph;
        let span = || match (first_node, last_node) {
            (Some(a), Some(b)) if a == b => format!("{} (node {})", what(), g.nodes[a].describe(g)),
            (Some(a), Some(b)) => format!(
                "{} (nodes {} to {})",
                what(),
                g.nodes[a].describe(g),
                g.nodes[b].describe(g)
            ),
            _ => what(),
        };
        self.scopes.check(span)?;
        result.map_err(|e| RuntimeError::Gpu(format!("{}: {e}", span())))
    }

    /// Reads back the graph outputs that only the device has, in one submission.
    fn outputs(&mut self) -> Result<Vec<(String, Tensor)>, RuntimeError> {
        let g = &self.x.graph;
        let mut missing = Vec::new();
        for &o in &g.outputs {
            let s = self.slot(o).ok_or_else(|| RuntimeError::Node {
                node: g.name.clone(),
                message: format!("output `{}` was not computed", g.value(o).name),
            })?;
            if s.host.is_none() && !missing.contains(&o) {
                missing.push(o);
            }
        }
        // Also submits work whose results no output needs, so every run
        // executes what it recorded.
        self.read_to_host(&missing, || {
            format!("reading back the outputs of graph `{}`", g.name)
        })?;
        if !self.seg.ops.is_empty() {
            self.flush(&[], &|| format!("running graph `{}`", g.name))?;
        }
        let mut out = Vec::with_capacity(g.outputs.len());
        for &o in &g.outputs {
            let t =
                self.slot(o)
                    .and_then(|s| s.host.clone())
                    .ok_or_else(|| RuntimeError::Node {
                        node: g.name.clone(),
                        message: format!("output `{}` was not computed", g.value(o).name),
                    })?;
            out.push((g.value(o).name.clone(), t));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::size_class;

    #[test]
    fn size_classes_waste_at_most_a_quarter() {
        assert_eq!(size_class(4), 256);
        assert_eq!(size_class(256), 256);
        assert_eq!(size_class(257), 320);
        assert_eq!(size_class(1000), 1024);
        for b in [300u64, 4096, 5000, 123_457, 1 << 20, (1 << 20) + 4] {
            let c = size_class(b);
            assert!(
                c >= b && c.is_multiple_of(4) && (c - b) * 4 <= c,
                "{b} -> {c}"
            );
        }
    }
}
