//! Operator fusion by equality saturation, the only module that uses `egg`.
//!
//! The graph's single-result nodes become an e-graph ([`bridge`]); rules
//! grouped by topic ([`rules`]) add equivalent forms — cleanups,
//! recognised composite ops (LayerNorm, GELU, attention, ...), fused ops —
//! without removing any; extraction ([`extract`]) then picks, per needed
//! e-class, the form that is cheapest on the target under the device
//! profile's cost model ([`cost`]), paying once for shared subgraphs. The
//! pass keeps the input graph when the extracted one would not be cheaper.
//! No egg type leaves this module.

mod analysis;
mod bridge;
mod cost;
mod extract;
mod lang;
pub(crate) mod rules;
mod saturate;

#[cfg(test)]
mod tests;

use crate::{Changed, Pass, PassCx, PassError};
use kiln_ir::profile::DeviceProfile;
use kiln_ir::Graph;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

pub use saturate::{FusionLimits, StopReason};

/// Constants larger than this (in elements) are not made by folding during
/// saturation (shape and scalar arithmetic is small); larger constant-only
/// subgraphs are folded by fold-constants after extraction, when chosen.
const FOLD_LIMIT: usize = 1 << 16;

/// What one fusion run did.
#[derive(Clone, Debug)]
pub struct FusionStats {
    /// Nodes that entered the e-graph.
    pub modelled_nodes: usize,
    /// E-nodes after saturation.
    pub enodes: usize,
    /// E-classes after saturation.
    pub eclasses: usize,
    /// Saturation iterations run.
    pub iterations: usize,
    /// Why saturation stopped.
    pub stop: StopReason,
    /// Saturation time.
    pub saturation_time: Duration,
    /// Extraction and rebuild time.
    pub extraction_time: Duration,
    /// Estimated cost of the modelled nodes before, in nanoseconds.
    pub cost_before: f64,
    /// Estimated cost after (equal to before when the input was kept).
    pub cost_after: f64,
    /// How often each rule changed the e-graph.
    pub fired: BTreeMap<&'static str, usize>,
    /// E-classes folded to constants.
    pub folded: usize,
    /// The extracted graph was not cheaper, so the input was kept.
    pub kept_input: bool,
    /// The DAG extraction failed and the tree extraction was used.
    pub tree_fallback: bool,
}

/// The fusion pass.
#[derive(Clone, Debug)]
pub struct FuseGraph {
    /// Saturation limits.
    pub limits: FusionLimits,
    /// The target's cost parameters.
    pub profile: DeviceProfile,
    /// Sizes of symbolic dimensions for costing (others count as `default_dim`).
    pub bindings: BTreeMap<String, u64>,
    /// Size assumed for symbolic dimensions not in `bindings`.
    pub default_dim: u64,
    /// Which rule groups run (all when empty); see [`rules::GROUPS`].
    pub groups: Vec<String>,
    /// The pass's name in pipelines and records: `fuse`, or `fuse-gpu` for
    /// the instance priced with a GPU profile.
    pub pass_name: &'static str,
}

impl Default for FuseGraph {
    fn default() -> Self {
        FuseGraph {
            limits: FusionLimits::default(),
            profile: DeviceProfile::cpu(),
            bindings: BTreeMap::new(),
            default_dim: 1,
            groups: Vec::new(),
            pass_name: "fuse",
        }
    }
}

impl FuseGraph {
    /// Rewrites `g`; returns what was done. `g` is left unchanged when no
    /// cheaper graph was found or the rebuilt graph could not be made.
    pub fn fuse(&self, g: &mut Graph) -> FusionStats {
        let cost = cost::CostModel::new(
            self.profile.clone(),
            self.bindings.clone(),
            self.default_dim,
        );
        let mut region = bridge::to_egraph(g, FOLD_LIMIT);
        let rules = rules::select(&self.groups);
        let report = saturate::saturate(&mut region.eg, &rules, &self.limits);
        let cost_before = bridge::input_cost(g, &region, &cost);
        let start = Instant::now();
        let mut tree_fallback = false;
        let choice = match extract::extract_dag(&region.eg, &cost, &region.roots) {
            Some(c) => Some(c),
            None => {
                tree_fallback = true;
                extract::extract_tree(&region.eg, &cost, &region.roots)
            }
        };
        let emitted = choice.and_then(|c| bridge::from_egraph(g, &region, &c, &cost).ok());
        let extraction_time = start.elapsed();
        let (kept_input, cost_after) = match emitted {
            Some(e) if e.cost < cost_before - 1e-6 => {
                let after = e.cost;
                *g = e.graph;
                (false, after)
            }
            _ => (true, cost_before),
        };
        FusionStats {
            modelled_nodes: region.modelled,
            enodes: region.eg.total_number_of_nodes(),
            eclasses: region.eg.number_of_classes(),
            iterations: report.iterations,
            stop: report.stop,
            saturation_time: report.time,
            extraction_time,
            cost_before,
            cost_after,
            fired: report.fired,
            folded: region.eg.analysis.folded,
            kept_input,
            tree_fallback,
        }
    }
}

impl Pass for FuseGraph {
    fn name(&self) -> &'static str {
        self.pass_name
    }

    fn run(&mut self, g: &mut Graph, cx: &mut PassCx) -> Result<Changed, PassError> {
        let s = self.fuse(g);
        cx.count("enodes", s.enodes as i64);
        cx.count("eclasses", s.eclasses as i64);
        cx.count("iterations", s.iterations as i64);
        cx.count("cost_before_ns", s.cost_before.round() as i64);
        cx.count("cost_after_ns", s.cost_after.round() as i64);
        cx.count("folded", s.folded as i64);
        cx.count("kept_input", s.kept_input as i64);
        cx.note("stop", s.stop.name());
        cx.time("saturation", s.saturation_time);
        cx.time("extraction", s.extraction_time);
        for (rule, n) in &s.fired {
            if *n > 0 {
                cx.count(&format!("rule.{rule}"), *n as i64);
            }
        }
        Ok(Changed::from(!s.kept_input))
    }
}
