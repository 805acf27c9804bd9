//! The pass trait and the manager that runs pipelines.

use kiln_ir::Graph;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Whether a pass changed the graph.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Changed {
    /// The graph is as it was.
    No,
    /// The graph was rewritten.
    Yes,
}

impl From<bool> for Changed {
    fn from(b: bool) -> Self {
        if b {
            Changed::Yes
        } else {
            Changed::No
        }
    }
}

/// Context shared by the passes of one pipeline run: statistics each pass
/// reports (kept in the bundle manifest).
#[derive(Debug, Default)]
pub struct PassCx {
    stats: BTreeMap<String, i64>,
    notes: BTreeMap<String, String>,
    timings: BTreeMap<String, Duration>,
}

impl PassCx {
    /// Adds `n` to the statistic `key` of the running pass.
    pub fn count(&mut self, key: &str, n: i64) {
        *self.stats.entry(key.to_string()).or_insert(0) += n;
    }

    /// Records a textual statistic (a stop reason, a chosen variant).
    pub fn note(&mut self, key: &str, value: &str) {
        self.notes.insert(key.to_string(), value.to_string());
    }

    /// Records the time of a phase of the running pass. Timings are shown
    /// to people but kept out of bundles, which must be reproducible.
    pub fn time(&mut self, key: &str, t: Duration) {
        *self.timings.entry(key.to_string()).or_default() += t;
    }

    fn take(
        &mut self,
    ) -> (
        BTreeMap<String, i64>,
        BTreeMap<String, String>,
        BTreeMap<String, Duration>,
    ) {
        (
            std::mem::take(&mut self.stats),
            std::mem::take(&mut self.notes),
            std::mem::take(&mut self.timings),
        )
    }
}

/// A failure inside a pass, naming the pass and, where it applies, the node.
#[derive(Debug, thiserror::Error)]
pub enum PassError {
    /// The pass could not rewrite a node.
    #[error("pass {pass}: node {node}: {message}")]
    Node {
        /// Pass name.
        pass: String,
        /// The node, described.
        node: String,
        /// What went wrong.
        message: String,
    },
    /// The pass left a graph that fails verification (a bug in the pass).
    #[error("pass {pass} produced an invalid graph: {source}")]
    Verify {
        /// Pass name.
        pass: String,
        /// The broken invariant.
        source: kiln_ir::verify::VerifyError,
    },
    /// Shape inference failed after the pass.
    #[error("pass {pass}: {source}")]
    Infer {
        /// Pass name.
        pass: String,
        /// The inference error (names the node).
        source: kiln_ir::infer::GraphInferError,
    },
    /// A pass or pipeline name that does not exist.
    #[error("unknown {kind} `{name}` (known: {known})")]
    Unknown {
        /// "pass" or "pipeline".
        kind: &'static str,
        /// The name given.
        name: String,
        /// The known names, comma-separated.
        known: String,
    },
}

/// One graph rewrite.
pub trait Pass {
    /// Stable name used by pipelines, `--dump-after` and `--stop-after`.
    fn name(&self) -> &'static str;
    /// Rewrites the graph in place.
    fn run(&mut self, g: &mut Graph, cx: &mut PassCx) -> Result<Changed, PassError>;
}

/// What one pass did in a pipeline run.
#[derive(Clone, Debug)]
pub struct PassRecord {
    /// Pass name.
    pub pass: &'static str,
    /// Whether it changed the graph.
    pub changed: bool,
    /// Wall time.
    pub time: Duration,
    /// Node count after the pass.
    pub nodes_after: usize,
    /// Pass-specific statistics.
    pub stats: BTreeMap<String, i64>,
    /// Pass-specific textual statistics.
    pub notes: BTreeMap<String, String>,
    /// Times of the pass's phases.
    pub timings: BTreeMap<String, Duration>,
}

/// Options of a pipeline run.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Print the graph's text form after these passes (to the callback).
    pub dump_after: Vec<String>,
    /// Stop after this pass.
    pub stop_after: Option<String>,
    /// Verify after every pass even in release builds.
    pub always_verify: bool,
    /// Passes to leave out of the pipeline (e.g. `fuse`).
    pub skip: Vec<String>,
    /// Limits of the fusion pass's saturation (its defaults when `None`).
    pub fusion_limits: Option<crate::fusion::FusionLimits>,
}

/// Runs a list of passes in order.
pub struct PassManager {
    passes: Vec<Box<dyn Pass>>,
}

impl PassManager {
    /// A manager over the given passes.
    pub fn new(passes: Vec<Box<dyn Pass>>) -> Self {
        PassManager { passes }
    }

    /// Names of the passes, in order.
    pub fn pass_names(&self) -> Vec<&'static str> {
        self.passes.iter().map(|p| p.name()).collect()
    }

    /// Runs every pass; `on_pass` is told when each pass starts (for progress)
    /// and `dump` receives `(pass, text)` for every `--dump-after` match.
    pub fn run(
        &mut self,
        g: &mut Graph,
        options: &RunOptions,
        mut on_pass: impl FnMut(usize, &'static str),
        mut dump: impl FnMut(&str, &str),
    ) -> Result<Vec<PassRecord>, PassError> {
        if let Some(stop) = &options.stop_after {
            if !self.passes.iter().any(|p| p.name() == stop) {
                return Err(PassError::Unknown {
                    kind: "pass",
                    name: stop.clone(),
                    known: self.pass_names().join(", "),
                });
            }
        }
        let mut records = Vec::new();
        let mut cx = PassCx::default();
        for (i, pass) in self.passes.iter_mut().enumerate() {
            let name = pass.name();
            on_pass(i, name);
            let start = Instant::now();
            let changed = pass.run(g, &mut cx)?;
            let time = start.elapsed();
            if cfg!(debug_assertions) || options.always_verify {
                kiln_ir::verify::verify(g).map_err(|source| PassError::Verify {
                    pass: name.to_string(),
                    source,
                })?;
            }
            let (stats, notes, timings) = cx.take();
            records.push(PassRecord {
                pass: name,
                changed: changed == Changed::Yes,
                time,
                nodes_after: g.nodes.len(),
                stats,
                notes,
                timings,
            });
            if options.dump_after.iter().any(|d| d == name) {
                dump(name, &kiln_ir::text::print(g));
            }
            if options.stop_after.as_deref() == Some(name) {
                break;
            }
        }
        Ok(records)
    }
}
