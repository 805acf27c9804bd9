//! What a GPU device allows, as plain data: the limits kernels are planned
//! against and checked against again when a bundle is loaded.

use serde::{Deserialize, Serialize};

/// The device limits and features that change which kernels can run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceCaps {
    /// Storage buffers one shader stage may bind (inputs + outputs + params).
    pub max_storage_buffers_per_stage: u32,
    /// Bytes of `var<workgroup>` memory one workgroup may use.
    pub max_workgroup_storage_bytes: u32,
    /// Invocations in one workgroup.
    pub max_invocations_per_workgroup: u32,
    /// Workgroup size per dimension.
    pub max_workgroup_size: [u32; 3],
    /// Workgroups per dispatch dimension.
    pub max_workgroups_per_dimension: u32,
    /// Bytes one storage buffer binding may span.
    pub max_storage_binding_bytes: u64,
    /// Whether kernels may use `f16` arithmetic and storage (`shader-f16`).
    pub shader_f16: bool,
}

impl DeviceCaps {
    /// WebGPU's guaranteed limits, which every browser and native adapter meets.
    pub fn webgpu() -> Self {
        DeviceCaps {
            max_storage_buffers_per_stage: 8,
            max_workgroup_storage_bytes: 16 * 1024,
            max_invocations_per_workgroup: 256,
            max_workgroup_size: [256, 256, 64],
            max_workgroups_per_dimension: 65_535,
            max_storage_binding_bytes: 128 << 20,
            shader_f16: false,
        }
    }

    /// Limits common to desktop and mobile Vulkan devices (and Mesa's
    /// lavapipe): more buffers per stage and larger bindings than WebGPU.
    pub fn vulkan() -> Self {
        DeviceCaps {
            max_storage_buffers_per_stage: 16,
            max_storage_binding_bytes: 1 << 30,
            ..Self::webgpu()
        }
    }

    /// Limits of Apple GPUs from the A13 and M1 on, with `shader-f16`.
    pub fn metal() -> Self {
        DeviceCaps {
            max_storage_buffers_per_stage: 31,
            max_workgroup_storage_bytes: 32 * 1024,
            max_invocations_per_workgroup: 1024,
            max_workgroup_size: [1024, 1024, 1024],
            max_storage_binding_bytes: 1 << 30,
            shader_f16: true,
            ..Self::webgpu()
        }
    }

    /// Whether a plan made for `self` also fits `device`.
    pub fn fits_within(&self, device: &DeviceCaps) -> bool {
        self.max_storage_buffers_per_stage <= device.max_storage_buffers_per_stage
            && self.max_workgroup_storage_bytes <= device.max_workgroup_storage_bytes
            && self.max_invocations_per_workgroup <= device.max_invocations_per_workgroup
            && (0..3).all(|i| self.max_workgroup_size[i] <= device.max_workgroup_size[i])
            && self.max_workgroups_per_dimension <= device.max_workgroups_per_dimension
            && self.max_storage_binding_bytes <= device.max_storage_binding_bytes
            && (!self.shader_f16 || device.shader_f16)
    }
}
