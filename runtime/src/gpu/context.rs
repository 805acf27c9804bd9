//! The wgpu device a graph runs on, and the pieces every launch needs:
//! pipelines built with the kernel calling convention's explicit layout,
//! padded storage buffers, and read-back through mapped staging buffers.

use crate::RuntimeError;
use kiln_codegen::{DeviceCaps, Kernel, Launch};
use std::sync::mpsc;
use std::sync::{Arc, OnceLock};

/// Environment variable that picks an adapter by a substring of its name
/// (case-insensitive), e.g. `KILN_GPU_ADAPTER=llvmpipe`.
pub const ADAPTER_ENV: &str = "KILN_GPU_ADAPTER";

/// An open wgpu device, with the limits kernels are planned against.
pub struct GpuContext {
    /// The wgpu instance the adapter came from.
    pub instance: wgpu::Instance,
    /// The physical adapter.
    pub adapter: wgpu::Adapter,
    /// The logical device, opened with the adapter's own limits.
    pub device: wgpu::Device,
    /// The device's queue.
    pub queue: wgpu::Queue,
    /// Name, backend, type and driver of the adapter.
    pub info: wgpu::AdapterInfo,
    /// The device's limits (the adapter's, requested in full).
    pub limits: wgpu::Limits,
    /// The limits and features that decide which kernels can run.
    pub caps: DeviceCaps,
}

impl std::fmt::Debug for GpuContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuContext")
            .field("adapter", &self.adapter_summary())
            .field("caps", &self.caps)
            .finish()
    }
}

/// A compute pipeline and the bind group layout of its calling convention.
pub(crate) struct Pipeline {
    pub(crate) pipeline: wgpu::ComputePipeline,
    pub(crate) layout: wgpu::BindGroupLayout,
}

/// Bytes a buffer holding `len` bytes of tensor data takes on the device:
/// a multiple of 4 (WGSL arrays are of 32-bit words) and never 0, since a
/// binding may not be empty.
pub(crate) fn padded(len: usize) -> u64 {
    (len.max(1) as u64).div_ceil(4) * 4
}

fn gpu_err(what: &str, e: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::Gpu(format!("{what}: {e}"))
}

impl GpuContext {
    /// Opens the high-performance adapter (or the one [`ADAPTER_ENV`]
    /// names), requesting its full limits and `shader-f16` when it has it.
    /// Software adapters (lavapipe) are accepted.
    pub fn new() -> Result<Arc<GpuContext>, RuntimeError> {
        let instance =
            wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
        let adapter =
            match std::env::var(ADAPTER_ENV) {
                Ok(wanted) if !wanted.is_empty() => {
                    let adapters =
                        pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()));
                    let needle = wanted.to_lowercase();
                    let names: Vec<String> = adapters
                        .iter()
                        .map(|a| {
                            let i = a.get_info();
                            format!("{} ({:?})", i.name, i.backend)
                        })
                        .collect();
                    adapters
                        .into_iter()
                        .find(|a| a.get_info().name.to_lowercase().contains(&needle))
                        .ok_or_else(|| {
                            RuntimeError::Gpu(format!(
                            "{ADAPTER_ENV}={wanted}: no adapter name contains it (adapters: {})",
                            if names.is_empty() { "none".to_string() } else { names.join(", ") }
                        ))
                        })?
                }
                _ => pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions {
                    power_preference: wgpu::PowerPreference::HighPerformance,
                    force_fallback_adapter: false,
                    compatible_surface: None,
                    apply_limit_buckets: false,
                }))
                .map_err(|e| gpu_err("no GPU adapter", e))?,
            };
        let info = adapter.get_info();
        let limits = adapter.limits();
        let mut features = wgpu::Features::empty();
        if adapter.features().contains(wgpu::Features::SHADER_F16) {
            features |= wgpu::Features::SHADER_F16;
        }
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("kiln"),
            required_features: features,
            required_limits: limits.clone(),
            experimental_features: wgpu::ExperimentalFeatures::disabled(),
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        }))
        .map_err(|e| gpu_err(&format!("cannot open adapter `{}`", info.name), e))?;
        // Every operation runs inside an error scope; anything escaping one
        // is reported instead of aborting the embedding process.
        device.on_uncaptured_error(Arc::new(|e: wgpu::Error| {
            eprintln!("kiln gpu: uncaptured device error: {e}");
        }));
        let limits = device.limits();
        let caps = caps_from(&limits, device.features());
        Ok(Arc::new(GpuContext {
            instance,
            adapter,
            device,
            queue,
            info,
            limits,
            caps,
        }))
    }

    /// The adapter's name.
    pub fn adapter_name(&self) -> &str {
        &self.info.name
    }

    /// One line describing the adapter: name, backend, device type, driver.
    pub fn adapter_summary(&self) -> String {
        let i = &self.info;
        let driver = [i.driver.as_str(), i.driver_info.as_str()]
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        format!(
            "{} ({:?}, {:?}{})",
            i.name,
            i.backend,
            i.device_type,
            if driver.is_empty() {
                String::new()
            } else {
                format!(", {driver}")
            }
        )
    }

    /// The device's limits and features as kernels see them.
    pub fn caps(&self) -> &DeviceCaps {
        &self.caps
    }

    /// Builds `kernel`'s compute pipeline with the calling convention's
    /// explicit layout (inputs read-only, outputs read-write, params last).
    pub(crate) fn create_pipeline(&self, kernel: &Kernel) -> Result<Pipeline, RuntimeError> {
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let entry = |binding: u32, read_only: bool| wgpu::BindGroupLayoutEntry {
            binding,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty: wgpu::BufferBindingType::Storage { read_only },
                has_dynamic_offset: false,
                min_binding_size: None,
            },
            count: None,
        };
        let n = kernel.storage_buffers();
        let entries: Vec<wgpu::BindGroupLayoutEntry> = (0..n)
            .map(|b| {
                let output = b >= kernel.inputs && b < kernel.inputs + kernel.outputs;
                entry(b, !output)
            })
            .collect();
        let layout = self
            .device
            .create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                label: Some(&kernel.name),
                entries: &entries,
            });
        let pipeline_layout = self
            .device
            .create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                label: Some(&kernel.name),
                bind_group_layouts: &[Some(&layout)],
                immediate_size: 0,
            });
        let module = self
            .device
            .create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(&kernel.name),
                source: wgpu::ShaderSource::Wgsl(kernel.wgsl.as_str().into()),
            });
        let pipeline = self
            .device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(&kernel.name),
                layout: Some(&pipeline_layout),
                module: &module,
                entry_point: Some("main"),
                compilation_options: Default::default(),
                cache: None,
            });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(RuntimeError::Gpu(format!(
                "kernel `{}`: pipeline creation failed: {e}",
                kernel.name
            )));
        }
        Ok(Pipeline { pipeline, layout })
    }

    /// Checks that a buffer of `bytes` can be created and bound.
    pub(crate) fn check_binding(&self, what: &str, bytes: u64) -> Result<(), RuntimeError> {
        let limit = self
            .limits
            .max_storage_buffer_binding_size
            .min(self.limits.max_buffer_size);
        if bytes > limit {
            return Err(RuntimeError::Gpu(format!(
                "{what}: {bytes} bytes exceed the device's largest storage binding ({limit} bytes)"
            )));
        }
        Ok(())
    }

    /// A storage buffer holding `data`, padded with zeros to [`padded`] bytes.
    pub(crate) fn upload(&self, label: &str, data: &[u8]) -> wgpu::Buffer {
        let size = padded(data.len());
        let buffer = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size,
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_DST
                | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let whole = data.len() / 4 * 4;
        if whole > 0 {
            self.queue.write_buffer(&buffer, 0, &data[..whole]);
        }
        if whole < data.len() {
            let mut tail = [0u8; 4];
            tail[..data.len() - whole].copy_from_slice(&data[whole..]);
            self.queue.write_buffer(&buffer, whole as u64, &tail);
        }
        buffer
    }

    /// A zero-filled storage buffer of `size` bytes (a multiple of 4).
    pub(crate) fn storage_buffer(&self, label: &str, size: u64) -> wgpu::Buffer {
        self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size,
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_DST
                | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        })
    }

    /// Copies the first bytes of each `(buffer, len)` into staging buffers
    /// with `encoder`, submits it and returns the bytes once the device is done.
    pub(crate) fn submit_and_read(
        &self,
        mut encoder: wgpu::CommandEncoder,
        reads: &[(&wgpu::Buffer, usize)],
    ) -> Result<Vec<Vec<u8>>, RuntimeError> {
        let staging: Vec<wgpu::Buffer> = reads
            .iter()
            .map(|&(src, len)| {
                let size = padded(len);
                let dst = self.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("kiln read-back"),
                    size,
                    usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                });
                encoder.copy_buffer_to_buffer(src, 0, &dst, 0, size);
                dst
            })
            .collect();
        self.queue.submit([encoder.finish()]);
        let (tx, rx) = mpsc::channel();
        for (i, buf) in staging.iter().enumerate() {
            let tx = tx.clone();
            buf.slice(..).map_async(wgpu::MapMode::Read, move |r| {
                let _ = tx.send((i, r));
            });
        }
        drop(tx);
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| gpu_err("waiting for the device", e))?;
        for _ in 0..staging.len() {
            let (i, r) = rx
                .recv()
                .map_err(|e| gpu_err("read-back was never completed", e))?;
            r.map_err(|e| gpu_err(&format!("mapping read-back buffer {i}"), e))?;
        }
        let mut out = Vec::with_capacity(staging.len());
        for (buf, &(_, len)) in staging.iter().zip(reads) {
            {
                let view = buf
                    .slice(..)
                    .get_mapped_range()
                    .map_err(|e| gpu_err("reading a mapped buffer", e))?;
                out.push(view[..len].to_vec());
            }
            buf.unmap();
        }
        Ok(out)
    }

    /// Runs `kernel` once: uploads `inputs` (bindings `0..`), allocates
    /// outputs of `output_bytes`, writes `launch.params`, dispatches
    /// `launch.workgroups` and reads the outputs back (each truncated to its
    /// size). The harness for kernel tests.
    pub fn run_kernel_once(
        &self,
        kernel: &Kernel,
        inputs: &[&[u8]],
        output_bytes: &[usize],
        launch: &Launch,
    ) -> Result<Vec<Vec<u8>>, RuntimeError> {
        if inputs.len() != kernel.inputs as usize || output_bytes.len() != kernel.outputs as usize {
            return Err(RuntimeError::Gpu(format!(
                "kernel `{}` binds {} inputs and {} outputs, given {} and {}",
                kernel.name,
                kernel.inputs,
                kernel.outputs,
                inputs.len(),
                output_bytes.len()
            )));
        }
        self.check_launch(&kernel.name, launch)?;
        let pipeline = self.create_pipeline(kernel)?;
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let mut buffers = Vec::with_capacity(inputs.len() + output_bytes.len() + 1);
        for (i, data) in inputs.iter().enumerate() {
            self.check_binding(
                &format!("kernel `{}` input {i}", kernel.name),
                padded(data.len()),
            )?;
            buffers.push(self.upload("kiln input", data));
        }
        for (i, &len) in output_bytes.iter().enumerate() {
            self.check_binding(&format!("kernel `{}` output {i}", kernel.name), padded(len))?;
            buffers.push(self.storage_buffer("kiln output", padded(len)));
        }
        buffers.push(self.upload("kiln params", bytemuck::cast_slice(&launch.params)));
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
        let mut encoder = self
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some(&kernel.name),
            });
        if launch.workgroups.iter().all(|&w| w > 0) {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some(&kernel.name),
                timestamp_writes: None,
            });
            pass.set_pipeline(&pipeline.pipeline);
            pass.set_bind_group(0, &bind_group, &[]);
            let [x, y, z] = launch.workgroups;
            pass.dispatch_workgroups(x, y, z);
        }
        let first_out = inputs.len();
        let reads: Vec<(&wgpu::Buffer, usize)> = output_bytes
            .iter()
            .enumerate()
            .map(|(i, &len)| (&buffers[first_out + i], len))
            .collect();
        let result = self.submit_and_read(encoder, &reads);
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(RuntimeError::Gpu(format!("kernel `{}`: {e}", kernel.name)));
        }
        result
    }

    /// Checks a launch's grid against the device's dispatch limit.
    pub(crate) fn check_launch(&self, kernel: &str, launch: &Launch) -> Result<(), RuntimeError> {
        let max = self.limits.max_compute_workgroups_per_dimension;
        if launch.workgroups.iter().any(|&w| w > max) {
            return Err(RuntimeError::Gpu(format!(
                "kernel `{kernel}`: grid {:?} exceeds the device's {max} workgroups per dimension",
                launch.workgroups
            )));
        }
        Ok(())
    }
}

/// Kernel-relevant limits and features of a device.
fn caps_from(limits: &wgpu::Limits, features: wgpu::Features) -> DeviceCaps {
    DeviceCaps {
        max_storage_buffers_per_stage: limits.max_storage_buffers_per_shader_stage,
        max_workgroup_storage_bytes: limits.max_compute_workgroup_storage_size,
        max_invocations_per_workgroup: limits.max_compute_invocations_per_workgroup,
        max_workgroup_size: [
            limits.max_compute_workgroup_size_x,
            limits.max_compute_workgroup_size_y,
            limits.max_compute_workgroup_size_z,
        ],
        max_workgroups_per_dimension: limits.max_compute_workgroups_per_dimension,
        max_storage_binding_bytes: limits
            .max_storage_buffer_binding_size
            .min(limits.max_buffer_size),
        shader_f16: features.contains(wgpu::Features::SHADER_F16),
    }
}

/// The process-wide context for tests: opened once; `None` (after printing
/// why) when the machine has no usable adapter, so GPU tests skip.
pub fn test_context() -> Option<Arc<GpuContext>> {
    static CONTEXT: OnceLock<Result<Arc<GpuContext>, String>> = OnceLock::new();
    let ctx = CONTEXT.get_or_init(|| {
        GpuContext::new()
            .inspect(|ctx| eprintln!("gpu: {}", ctx.adapter_summary()))
            .map_err(|e| e.to_string())
    });
    match ctx {
        Ok(ctx) => Some(ctx.clone()),
        Err(e) => {
            eprintln!("skipping: no GPU adapter ({e})");
            None
        }
    }
}
