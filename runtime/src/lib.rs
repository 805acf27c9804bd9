//! Kiln's embeddable runtime.
//!
//! It reads bundles ([`bundle`]) and runs graphs on the CPU ([`cpu`]). The
//! CPU executor is the semantic reference for every op of the IR. This
//! crate depends on the IR only: no compiler, no importer, no rewrite engine.

pub mod bundle;
pub mod cpu;
pub mod error;

pub use error::RuntimeError;
