//! One GPU kernel and its calling convention.
//!
//! Every kernel is a WGSL compute shader with entry point `main` and one
//! bind group: bindings `0..inputs` are the bound node inputs
//! (`var<storage, read>`), the next `outputs` bindings are the node outputs
//! (`var<storage, read_write>`), and the last binding is `params`, an
//! `array<u32>` (`var<storage, read>`) with the run-time dimensions that
//! [`KernelSpec::launch`] computes. Buffers hold exactly the host layout of
//! the tensor (little-endian, packed quantized weights as their raw bytes),
//! so uploads and read-backs are plain copies; `i64` values are read as
//! pairs of 32-bit words.

use crate::schedule::{Family, Schedule};
use crate::wgsl;
use crate::DeviceCaps;
use kiln_ir::{Op, Tensor, ValueType};
use serde::{Deserialize, Serialize};

/// Failure to generate, validate or translate a kernel.
#[derive(Debug, thiserror::Error)]
pub enum CodegenError {
    /// A template could not be filled.
    #[error("{0}")]
    Template(String),
    /// naga rejected a generated kernel.
    #[error("kernel `{kernel}` is not valid WGSL: {message}")]
    Invalid {
        /// The kernel's name.
        kernel: String,
        /// naga's diagnostic, with the source location.
        message: String,
    },
    /// naga could not translate a kernel to another shading language.
    #[error("kernel `{kernel}`: translation to {language} failed: {message}")]
    Translate {
        /// The kernel's name.
        kernel: String,
        /// `MSL` or `SPIR-V`.
        language: &'static str,
        /// naga's diagnostic.
        message: String,
    },
    /// The shapes given at launch do not fit the kernel's spec.
    #[error("kernel `{kernel}`: {message}")]
    Launch {
        /// The kernel's name.
        kernel: String,
        /// What was expected.
        message: String,
    },
}

/// A generated kernel: WGSL source and its binding counts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kernel {
    /// Unique name: the family stem and a digest of the source.
    pub name: String,
    /// WGSL source, entry point `main`.
    pub wgsl: String,
    /// Bound node inputs (bindings `0..inputs`).
    pub inputs: u32,
    /// Node outputs (the next bindings); `params` follows them.
    pub outputs: u32,
    /// Bytes of workgroup memory the kernel declares.
    pub workgroup_bytes: u32,
    /// Whether the kernel enables `f16`.
    pub uses_f16: bool,
}

impl Kernel {
    /// Builds a kernel named `stem` plus a digest of `wgsl`, so equal sources
    /// share one name and one pipeline.
    pub fn new(
        stem: &str,
        wgsl: String,
        inputs: u32,
        outputs: u32,
        workgroup_bytes: u32,
    ) -> Kernel {
        let uses_f16 = wgsl.contains("enable f16;");
        Kernel {
            name: format!("{stem}_{:08x}", fnv1a(wgsl.as_bytes()) as u32),
            wgsl,
            inputs,
            outputs,
            workgroup_bytes,
            uses_f16,
        }
    }

    /// Storage buffers the kernel binds: inputs, outputs and params.
    pub fn storage_buffers(&self) -> u32 {
        self.inputs + self.outputs + 1
    }

    /// Whether the kernel can run on a device with `caps`.
    pub fn fits(&self, caps: &DeviceCaps) -> bool {
        self.storage_buffers() <= caps.max_storage_buffers_per_stage
            && self.workgroup_bytes <= caps.max_workgroup_storage_bytes
            && (!self.uses_f16 || caps.shader_f16)
    }
}

/// 64-bit FNV-1a: a stable digest for kernel names (not for security).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// One dispatch: the `params` words and the workgroup grid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Launch {
    /// Contents of the `params` binding.
    pub params: Vec<u32>,
    /// Workgroups along x, y, z.
    pub workgroups: [u32; 3],
}

/// Spreads `groups` workgroups over x and y so that no dimension exceeds
/// WebGPU's 65,535; kernels recover the linear index as
/// `wid.x + wid.y * num_workgroups.x` and return when it is `>= groups`.
pub fn linear_grid(groups: u64) -> [u32; 3] {
    const MAX: u64 = 65_535;
    let groups = groups.max(1);
    let x = groups.min(MAX);
    let y = groups.div_ceil(x);
    [x as u32, y as u32, 1]
}

/// Everything a family needs to decide whether it has a kernel for a node.
#[derive(Clone, Debug)]
pub struct NodeCtx<'a> {
    /// The node's name, for error messages.
    pub name: &'a str,
    /// The op.
    pub op: &'a Op,
    /// Types of the node's operands (`None`: optional operand absent).
    pub inputs: Vec<Option<&'a ValueType>>,
    /// Constant operand values, when known at compile time.
    pub consts: Vec<Option<&'a Tensor>>,
    /// Types of the node's results.
    pub outputs: Vec<&'a ValueType>,
    /// The device the plan is for.
    pub caps: &'a DeviceCaps,
}

/// A node's kernel, as data: what to generate and how to launch it. Stored
/// in the bundle's plan so the runtime can launch (and, when the device
/// lacks a feature, regenerate) the kernel without the compiler.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum KernelSpec {
    /// See [`wgsl::elementwise`].
    Elementwise(wgsl::elementwise::Spec),
    /// See [`wgsl::matmul`].
    MatMul(wgsl::matmul::Spec),
    /// See [`wgsl::reduce`].
    Reduce(wgsl::reduce::Spec),
    /// See [`wgsl::norm`].
    Norm(wgsl::norm::Spec),
    /// See [`wgsl::attention`].
    Attention(wgsl::attention::Spec),
    /// See [`wgsl::gather`].
    Gather(wgsl::gather::Spec),
    /// See [`wgsl::conv`].
    Conv(wgsl::conv::Spec),
    /// See [`wgsl::movement`].
    Movement(wgsl::movement::Spec),
}

macro_rules! each_family {
    ($self:expr, $s:ident => $e:expr) => {
        match $self {
            KernelSpec::Elementwise($s) => $e,
            KernelSpec::MatMul($s) => $e,
            KernelSpec::Reduce($s) => $e,
            KernelSpec::Norm($s) => $e,
            KernelSpec::Attention($s) => $e,
            KernelSpec::Gather($s) => $e,
            KernelSpec::Conv($s) => $e,
            KernelSpec::Movement($s) => $e,
        }
    };
}

impl KernelSpec {
    /// The kernel for `node`, if a family has one for its op, dtypes and
    /// the device's features.
    pub fn select(cx: &NodeCtx) -> Option<KernelSpec> {
        wgsl::select(cx)
    }

    /// The op family.
    pub fn family(&self) -> Family {
        match self {
            KernelSpec::Elementwise(_) => Family::Elementwise,
            KernelSpec::MatMul(_) => Family::MatMul,
            KernelSpec::Reduce(_) => Family::Reduce,
            KernelSpec::Norm(_) => Family::Norm,
            KernelSpec::Attention(_) => Family::Attention,
            KernelSpec::Gather(_) => Family::Gather,
            KernelSpec::Conv(_) => Family::Conv,
            KernelSpec::Movement(_) => Family::Movement,
        }
    }

    /// Generates the kernel's WGSL for `schedule`.
    pub fn emit(&self, schedule: &Schedule) -> Result<Kernel, CodegenError> {
        each_family!(self, s => s.emit(schedule))
    }

    /// Positions of the node operands bound as kernel inputs, in binding
    /// order (operands folded into the source, such as a Reshape's shape,
    /// are not bound).
    pub fn bound_inputs(&self) -> Vec<usize> {
        each_family!(self, s => s.bound_inputs())
    }

    /// The `params` words and grid for one run, from the concrete shapes of
    /// every node operand (`None`: absent) and result.
    pub fn launch(
        &self,
        inputs: &[Option<&[usize]>],
        outputs: &[&[usize]],
        schedule: &Schedule,
    ) -> Result<Launch, CodegenError> {
        each_family!(self, s => s.launch(inputs, outputs, schedule))
    }
}

/// Row-major strides of `dims`.
pub fn strides(dims: &[usize]) -> Vec<usize> {
    let mut s = vec![1usize; dims.len()];
    for i in (0..dims.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * dims[i + 1];
    }
    s
}

/// Strides of an operand of shape `dims` broadcast (numpy rules) to a result
/// of rank `rank`: 0 along broadcast axes, so a kernel indexes every operand
/// with the result's coordinates.
pub fn broadcast_strides(dims: &[usize], out: &[usize]) -> Vec<usize> {
    let own = strides(dims);
    let lead = out.len() - dims.len().min(out.len());
    (0..out.len())
        .map(|i| {
            if i < lead {
                0
            } else {
                let j = i - lead;
                if dims[j] == 1 && out[i] != 1 {
                    0
                } else {
                    own[j]
                }
            }
        })
        .collect()
}

/// Converts a size to a `params` word, naming the kernel when it does not fit.
pub fn word(kernel: &str, what: &str, v: usize) -> Result<u32, CodegenError> {
    u32::try_from(v).map_err(|_| CodegenError::Launch {
        kernel: kernel.to_string(),
        message: format!("{what} = {v} does not fit in 32 bits"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_stays_within_webgpu_limits() {
        assert_eq!(linear_grid(0), [1, 1, 1]);
        assert_eq!(linear_grid(10), [10, 1, 1]);
        let g = linear_grid(200_000);
        assert!(g[0] <= 65_535 && g[1] <= 65_535);
        assert!(u64::from(g[0]) * u64::from(g[1]) >= 200_000);
    }

    #[test]
    fn broadcast_strides_zero_broadcast_axes() {
        assert_eq!(strides(&[2, 3, 4]), vec![12, 4, 1]);
        assert_eq!(broadcast_strides(&[3, 1], &[2, 3, 4]), vec![0, 1, 0]);
        assert_eq!(broadcast_strides(&[], &[2, 3]), vec![0, 0]);
    }

    #[test]
    fn kernel_names_follow_source() {
        let a = Kernel::new("k", "fn main() {}".into(), 1, 1, 0);
        let b = Kernel::new("k", "fn main() { }".into(), 1, 1, 0);
        assert_ne!(a.name, b.name);
        assert_eq!(
            a.name,
            Kernel::new("k", "fn main() {}".into(), 1, 1, 0).name
        );
        assert_eq!(a.storage_buffers(), 3);
    }
}
