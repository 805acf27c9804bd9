//! Tunable launch parameters of a kernel, with a heuristic default per op
//! family from the device's limits. Tuning may later pick other values; the
//! emitters accept any schedule the device allows.

use crate::DeviceCaps;
use serde::{Deserialize, Serialize};

/// Op families, one WGSL template (or a few variants) each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Family {
    /// Unary, binary, `Where`, `Cast`, and fused elementwise programs.
    Elementwise,
    /// Dense and packed-weight matrix products, with epilogues.
    MatMul,
    /// Reductions, Softmax and LogSoftmax along an axis.
    Reduce,
    /// LayerNorm and RMSNorm.
    Norm,
    /// Scaled-dot-product attention.
    Attention,
    /// Gather along an axis (embeddings).
    Gather,
    /// Convolution.
    Conv,
    /// Transpose, Concat, Slice, Expand and other data movement.
    Movement,
}

/// Launch parameters of one kernel.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Schedule {
    /// Invocations per workgroup along x, y, z.
    pub workgroup: [u32; 3],
    /// Output tile per workgroup for tiled kernels: rows, columns, and the
    /// depth staged through workgroup memory per step.
    pub tile: [u32; 3],
    /// Elements each invocation handles along the innermost dimension.
    pub vector: u32,
}

impl Schedule {
    /// The default schedule of `family` on a device with `caps`.
    pub fn default_for(family: Family, caps: &DeviceCaps) -> Schedule {
        let max = caps.max_invocations_per_workgroup;
        match family {
            Family::MatMul | Family::Conv => {
                // 16×16 invocations, each computing a 4×4 block of a 64×64
                // tile: a good register/shared-memory balance on desktop and
                // mobile GPUs, and within WebGPU's 256-invocation floor.
                let side = if max >= 256 { 16 } else { 8 };
                Schedule {
                    workgroup: [side, side, 1],
                    tile: [side * 4, side * 4, 16],
                    vector: 4,
                }
            }
            Family::Reduce | Family::Norm | Family::Attention => Schedule {
                workgroup: [max.min(256), 1, 1],
                tile: [1, 1, 1],
                vector: 1,
            },
            Family::Elementwise | Family::Gather | Family::Movement => Schedule {
                workgroup: [max.min(256), 1, 1],
                tile: [1, 1, 1],
                vector: 1,
            },
        }
    }

    /// Invocations in one workgroup.
    pub fn invocations(&self) -> u32 {
        self.workgroup.iter().product()
    }

    /// Whether the schedule respects the device's workgroup limits.
    pub fn fits(&self, caps: &DeviceCaps) -> bool {
        self.invocations() <= caps.max_invocations_per_workgroup
            && (0..3).all(|i| self.workgroup[i] <= caps.max_workgroup_size[i])
            && self.workgroup.iter().all(|&w| w > 0)
    }
}
