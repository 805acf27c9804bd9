//! Kiln's targets: what the compiler produces for a device.
//!
//! The bundle writer ([`bundle`]): the one file `kiln
//! optimize` writes and the runtime (`kiln_runtime::bundle`) loads; and
//! [`compile`]: which pipeline each target runs. Device
//! profiles will join them here.

pub mod bundle;
pub mod compile;
pub mod gpu;
