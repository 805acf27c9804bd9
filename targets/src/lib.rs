//! Kiln's targets: what the compiler produces for a device.
//!
//! For now this is the bundle writer ([`bundle`]): the one file `kiln
//! optimize` writes and the runtime (`kiln_runtime::bundle`) loads. Device
//! profiles and per-target pipelines will join it here.

pub mod bundle;
