//! Weight quantization: round to nearest, GPTQ and AWQ, calibrated on real
//! activations.
//!
//! The numerical methods are one file each and work on plain `[in, out]`
//! f32 matrices and the second moments of their inputs; the pass that finds
//! a graph's linear layers, streams calibration activations through it and
//! writes packed weights back is built on them.
//!
//! - [`hessian`]: input statistics of a linear layer (`XᵀX`, mean `|x|`).
//! - [`gptq`]: GPTQ with dampening, activation order, lazy block updates
//!   and static groups.
//! - [`awq`]: AWQ's per-input-channel scale search.
//! - [`clip`]: AWQ's weight-clip search (per-group range shrinking).

pub mod awq;
pub mod calib;
pub mod clip;
pub mod gptq;
pub mod hessian;
pub mod plan;
pub mod quantize;
pub mod spec;

pub use calib::sample_windows;
pub use quantize::{
    quantize_graph, Calibration, LayerReport, QuantConfig, QuantProgress, QuantReport,
    QuantizeError, META_QUANT,
};
pub use spec::{Keep, Method, QuantSpec};
