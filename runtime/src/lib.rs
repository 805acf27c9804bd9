//! Kiln's embeddable runtime.
//!
//! It reads bundles ([`bundle`]) and runs graphs on the CPU ([`cpu`]) or,
//! with the `gpu` feature, through wgpu (`gpu`) on Vulkan, Metal, DX12 or
//! WebGPU. The CPU executor is the semantic reference for every op of the
//! IR. This crate depends on the IR (and, for the GPU, on the kernel
//! generator's plan types): no compiler passes, no importer, no rewrite
//! engine.

pub mod bundle;
pub mod cpu;
pub mod error;
#[cfg(feature = "gpu")]
pub mod gpu;
mod inputs;

pub use error::RuntimeError;
