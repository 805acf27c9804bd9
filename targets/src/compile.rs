//! Per-target compilation: which pipeline a target runs, and the run itself.

use kiln_ir::Graph;
use kiln_passes::{PassError, PassManager, PassRecord, RunOptions};
use serde_json::json;
use std::collections::BTreeMap;

/// A target family this build can compile for, and the pipeline it runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Target {
    /// Name used on the command line and in the bundle manifest.
    pub name: &'static str,
    /// The named pass pipeline (see `kiln_passes::PIPELINES`).
    pub pipeline: &'static str,
}

/// Every target this build supports.
pub const TARGETS: &[Target] = &[Target {
    name: "cpu",
    pipeline: "cpu",
}];

/// Error for a target name this build does not know.
#[derive(Debug, thiserror::Error)]
#[error("unknown target `{0}` (this build supports: {known})", known = TARGETS.iter().map(|t| t.name).collect::<Vec<_>>().join(", "))]
pub struct UnknownTarget(pub String);

impl Target {
    /// Looks a target up by name.
    pub fn by_name(name: &str) -> Result<Target, UnknownTarget> {
        TARGETS
            .iter()
            .copied()
            .find(|t| t.name == name)
            .ok_or_else(|| UnknownTarget(name.to_string()))
    }
}

/// The result of compiling a graph for a target.
pub struct Compiled {
    /// The rewritten graph.
    pub graph: Graph,
    /// What each pass did.
    pub records: Vec<PassRecord>,
    /// Node count before the pipeline.
    pub nodes_before: usize,
}

impl Compiled {
    /// The options recorded in the bundle manifest: pipeline, passes with
    /// their statistics. Times are left out so bundles stay reproducible.
    pub fn manifest_options(&self, target: Target) -> BTreeMap<String, serde_json::Value> {
        let passes: Vec<_> = self
            .records
            .iter()
            .map(|r| json!({"pass": r.pass, "changed": r.changed, "nodes_after": r.nodes_after, "stats": r.stats}))
            .collect();
        let mut m = BTreeMap::new();
        m.insert("pipeline".to_string(), json!(target.pipeline));
        m.insert("passes".to_string(), json!(passes));
        m.insert("nodes_before".to_string(), json!(self.nodes_before));
        m
    }
}

/// Runs the target's pipeline on an imported graph. `on_pass(i, name)` is
/// called as each pass starts; `dump(pass, text)` for every `dump_after` match.
pub fn compile(
    mut graph: Graph,
    target: Target,
    options: &RunOptions,
    on_pass: impl FnMut(usize, &'static str),
    dump: impl FnMut(&str, &str),
) -> Result<Compiled, PassError> {
    let nodes_before = graph.nodes.len();
    let mut pm = PassManager::new(kiln_passes::pipeline(target.pipeline)?);
    let records = pm.run(&mut graph, options, on_pass, dump)?;
    Ok(Compiled {
        graph,
        records,
        nodes_before,
    })
}

/// Number of passes in a target's pipeline (for progress bars).
pub fn pipeline_len(target: Target) -> usize {
    kiln_passes::PIPELINES
        .iter()
        .find(|(n, _)| *n == target.pipeline)
        .map(|(_, p)| p.len())
        .unwrap_or(0)
}
