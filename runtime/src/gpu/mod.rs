//! The wgpu executor (feature `gpu`): runs a graph on Vulkan, Metal, DX12 or
//! WebGPU following a [`kiln_codegen::GpuPlan`].
//!
//! [`GpuContext`] opens an adapter (the high-performance one, or the one
//! whose name contains `$KILN_GPU_ADAPTER`; software adapters such as
//! lavapipe count) with the adapter's full limits and `shader-f16` when it
//! has it, and describes the device as a [`kiln_codegen::DeviceCaps`].
//! [`GpuContext::run_kernel_once`] launches one kernel, for kernel tests;
//! [`GpuContext::time_kernel`] times one, for benchmarks.
//!
//! # What the executor does
//!
//! [`GpuExecutor::new`] takes the graph and the plan a bundle carries, or
//! plans the graph for the device when there is none. A plan is checked
//! against the graph (one step per node, same names, kernel indices in
//! range; a plan made for another graph is an error). Each kernel the
//! device cannot run (more storage buffers or workgroup memory than it has,
//! `shader-f16` it lacks, a workgroup larger than it allows) is re-planned
//! for the device's own caps: the step becomes whatever
//! [`kiln_codegen::plan_graph`] picks there, another kernel or a host step,
//! and [`GpuExecutor::fallbacks`] says so, naming the node and the limit.
//! One compute pipeline is built per distinct kernel, with the calling
//! convention's explicit bind group layout.
//!
//! [`GpuExecutor::run`] walks the nodes in order, computing each value's
//! concrete shape from its operands' run-time shapes with the IR's shape
//! inference (constants and small integer tensors known on the host, such
//! as shapes computed by host steps, feed it):
//! - a kernel step fills its `params` from those shapes
//!   ([`kiln_codegen::KernelSpec::launch`]) and records a dispatch;
//! - an alias step gives the result its operand's buffer (or host tensor)
//!   under the new shape;
//! - a host step evaluates the node with the CPU executor's kernels
//!   ([`crate::cpu::eval_node`]), the semantic reference.
//!
//! # Residency
//!
//! A value lives on the device (a buffer), on the host (a tensor) or both.
//! Constants that some kernel binds (directly or through aliases) are
//! uploaded once when the executor is built and stay resident; constants
//! only host steps read stay on the host. Graph inputs start on the host
//! and are uploaded when a kernel binds them (i64 token ids as their bytes).
//! Kernel results stay on the device; a host step reads back the operands
//! only the device has, and its results stay on the host until a kernel
//! needs them. Graph outputs are read back at the end of the run.
//!
//! All the work between two read-backs goes into one command encoder, so a
//! graph without host steps is one submission; the `params` of its
//! dispatches share one buffer, each bound at an offset aligned to the
//! device's `min_storage_buffer_offset_alignment`. Buffers are pooled by
//! size class: an intermediate returns to the pool after its last reader
//! (once no alias shares it), and the pool carries over to the next run.
//! Uploads go through a staging buffer copied in program order, so a
//! pooled buffer is never overwritten before the dispatches recorded
//! earlier have read it.
//!
//! # Fallback rules
//!
//! - No kernel for the node on this device (the plan's host steps): host.
//! - A kernel step whose result shape cannot be inferred from the run-time
//!   shapes (it depends on data, e.g. `NonZero`), after reading back any
//!   small integer operand only the device has: host for that run.
//! - A kernel step whose operand or result exceeds the device's largest
//!   storage binding (`max_storage_buffer_binding_size`, `max_buffer_size`),
//!   or whose grid exceeds `max_compute_workgroups_per_dimension`: host for
//!   that run (a constant too large to bind stays on the host).
//! - An alias whose shape cannot be inferred: host.
//!
//! Run-time fallbacks are counted in [`RunStats::kernel_fallbacks`].
//! Errors name the node (and kernel) involved.

mod context;
mod executor;
mod timing;

pub use context::{test_context, GpuContext, ADAPTER_ENV};
pub use executor::{GpuExecutor, GpuRunResult, RunStats};
