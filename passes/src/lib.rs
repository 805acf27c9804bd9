//! Graph rewrites for Kiln.
//!
//! Every rewrite is a [`Pass`]; the [`PassManager`] runs a named
//! [`pipeline`] of them, verifies the graph after each one, records what each
//! changed and how long it took, and names the pass (and node) in every error.

pub mod cleanup;
pub mod fusion;
pub mod manager;
pub mod pipeline;
pub mod quant;

pub use manager::{Changed, Pass, PassCx, PassError, PassManager, PassRecord, RunOptions};
pub use pipeline::{pass_by_name, pass_with_options, pipeline, pipeline_with_options, PIPELINES};
