//! Operator fusion.
//!
//! The rewrites live in [`egraph`]: equality saturation over the fusible part
//! of the graph, extraction of the cheapest equivalent graph under a cost
//! model taken from the target's device profile.

pub mod egraph;

pub use egraph::{FuseGraph, FusionLimits, FusionStats, StopReason};
