//! Kernel timing on the device, for benchmarks and the GPU check.
//!
//! A single dispatch is too short to time from the host (a 4096² w4
//! matrix-vector product moves 8 MB: microseconds on a discrete GPU), so
//! the kernel is dispatched many times in one submission and the wall time
//! of the whole submission, waited for, is divided by the count. A warm-up
//! submission first builds the pipeline and faults the buffers in.

use super::context::{padded, GpuContext};
use crate::RuntimeError;
use kiln_codegen::{Kernel, Launch};
use std::time::Instant;

impl GpuContext {
    /// Median over three submissions of the seconds per dispatch of
    /// `kernel`, each submission dispatching it `iterations` times on the
    /// same buffers (`inputs` uploaded once, outputs of `output_bytes`).
    pub fn time_kernel(
        &self,
        kernel: &Kernel,
        inputs: &[&[u8]],
        output_bytes: &[usize],
        launch: &Launch,
        iterations: usize,
    ) -> Result<f64, RuntimeError> {
        self.check_launch(&kernel.name, launch)?;
        let pipeline = self.create_pipeline(kernel)?;
        let mut buffers: Vec<wgpu::Buffer> = inputs
            .iter()
            .map(|d| self.upload("kiln timing input", d))
            .collect();
        for &len in output_bytes {
            buffers.push(self.storage_buffer("kiln timing output", padded(len)));
        }
        buffers.push(self.upload("kiln timing params", bytemuck::cast_slice(&launch.params)));
        let entries: Vec<wgpu::BindGroupEntry> = buffers
            .iter()
            .enumerate()
            .map(|(i, b)| wgpu::BindGroupEntry {
                binding: i as u32,
                resource: b.as_entire_binding(),
            })
            .collect();
        let bind_group = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(&kernel.name),
            layout: &pipeline.layout,
            entries: &entries,
        });
        let submit = |count: usize| -> Result<f64, RuntimeError> {
            let mut encoder = self
                .device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
            {
                let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some(&kernel.name),
                    timestamp_writes: None,
                });
                pass.set_pipeline(&pipeline.pipeline);
                pass.set_bind_group(0, &bind_group, &[]);
                let [x, y, z] = launch.workgroups;
                for _ in 0..count {
                    pass.dispatch_workgroups(x, y, z);
                }
            }
            let start = Instant::now();
            self.queue.submit([encoder.finish()]);
            self.device
                .poll(wgpu::PollType::wait_indefinitely())
                .map_err(|e| RuntimeError::Gpu(format!("waiting for the device: {e}")))?;
            Ok(start.elapsed().as_secs_f64())
        };
        submit(1)?;
        let mut times: Vec<f64> = (0..3)
            .map(|_| submit(iterations.max(1)).map(|t| t / iterations.max(1) as f64))
            .collect::<Result<_, _>>()?;
        times.sort_by(f64::total_cmp);
        Ok(times[1])
    }
}
