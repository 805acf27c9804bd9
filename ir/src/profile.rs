//! Device profiles: what running a graph costs on a target, in the three
//! quantities that decide between equivalent graphs — kernel launches, bytes
//! moved and arithmetic.

use serde::{Deserialize, Serialize};

/// The cost parameters of one device family.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeviceProfile {
    /// Profile name (the target it describes).
    pub name: String,
    /// Fixed cost of running one kernel (dispatch, output allocation, thread
    /// wake-up), in nanoseconds.
    pub launch_ns: f64,
    /// Cost of an op that only relabels a buffer's shape (`Reshape`,
    /// `Squeeze`, ...), in nanoseconds; such ops move no data.
    pub view_ns: f64,
    /// Sustained memory bandwidth, in bytes per nanosecond (GB/s).
    pub bytes_per_ns: f64,
    /// Sustained arithmetic throughput, in operations per nanosecond (GFLOP/s).
    pub flops_per_ns: f64,
}

impl DeviceProfile {
    /// A desktop- or phone-class CPU running Kiln's CPU executor: a few
    /// cores with SIMD, a few microseconds per node of executor overhead,
    /// and memory bandwidth far below arithmetic throughput.
    pub fn cpu() -> Self {
        DeviceProfile {
            name: "cpu".to_string(),
            launch_ns: 2_000.0,
            view_ns: 200.0,
            bytes_per_ns: 10.0,
            flops_per_ns: 50.0,
        }
    }

    /// A mobile- or laptop-class GPU reached through wgpu: dispatches are
    /// recorded into one command buffer, so a launch costs a few
    /// microseconds of driver and pipeline-switch work, and bandwidth and
    /// arithmetic are an order of magnitude above the CPU's. Shape-only ops
    /// alias their input's buffer and cost nothing to run.
    pub fn gpu() -> Self {
        DeviceProfile {
            name: "gpu".to_string(),
            launch_ns: 5_000.0,
            view_ns: 50.0,
            bytes_per_ns: 100.0,
            flops_per_ns: 2_000.0,
        }
    }

    /// The estimated time of one kernel, in nanoseconds.
    pub fn kernel_ns(&self, bytes: f64, flops: f64) -> f64 {
        self.launch_ns + bytes / self.bytes_per_ns + flops / self.flops_per_ns
    }
}
