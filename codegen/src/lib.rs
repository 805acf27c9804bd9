//! Kernel generation for Kiln's GPU targets.
//!
//! Kernels are real WGSL source files (`codegen/templates/wgsl/`, one per op
//! family) filled in from a node's attributes and a [`Schedule`]. For each
//! node the family modules under [`wgsl`] decide whether a GPU kernel exists
//! ([`KernelSpec`]); [`plan::plan_graph`] turns a whole graph into a
//! [`plan::GpuPlan`]: the distinct kernels and one step per node (a kernel
//! launch, a buffer alias for pure reshapes, or a host step for ops without a
//! kernel). [`validate`] parses and validates every kernel with naga and
//! translates it to MSL and SPIR-V.
//!
//! Kernels are shape-generic: the rank and the attributes are baked into the
//! source, the dimensions arrive at run time in a `params` buffer that
//! [`KernelSpec::launch`] fills from the concrete shapes. One bundle therefore
//! serves every batch and sequence length, as the CPU bundle does.

pub mod caps;
pub mod kernel;
pub mod plan;
pub mod schedule;
pub mod template;
pub mod validate;
pub mod wgsl;

pub use caps::DeviceCaps;
pub use kernel::{CodegenError, Kernel, KernelSpec, Launch, NodeCtx};
pub use plan::{plan_graph, GpuPlan, Step, StepKind};
pub use schedule::{Family, Schedule};
