//! The saturation loop: every rule searches every e-class, then every match
//! is added and unioned, then the e-graph is rebuilt; until nothing changes
//! or a limit is reached.

use super::analysis::{ConstKey, EG};
use super::lang::ENode;
use egg::Id;
use kiln_ir::{Op, Tensor};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// A rewrite's right-hand side: a small expression over existing e-classes,
/// new ops and new constants. Nodes refer to earlier nodes by index; the
/// last node is the result.
#[derive(Debug, Default)]
pub(crate) struct Rhs {
    nodes: Vec<RhsNode>,
    target: Option<Id>,
}

#[derive(Debug)]
enum RhsNode {
    Class(Id),
    Op(Op, Vec<usize>),
    Const(ConstKey, Option<Tensor>),
    Absent,
}

/// A reference to a node of an [`Rhs`].
pub(crate) type R = usize;

impl Rhs {
    /// An empty expression.
    pub(crate) fn new() -> Self {
        Rhs::default()
    }

    /// Makes the expression equal to `class` instead of the searched class
    /// (for rules that find several equalities from one place).
    pub(crate) fn equal_to(mut self, class: Id) -> Self {
        self.target = Some(class);
        self
    }

    /// An existing e-class.
    pub(crate) fn class(&mut self, id: Id) -> R {
        self.nodes.push(RhsNode::Class(id));
        self.nodes.len() - 1
    }

    /// An absent optional operand.
    pub(crate) fn absent(&mut self) -> R {
        self.nodes.push(RhsNode::Absent);
        self.nodes.len() - 1
    }

    /// A new op node.
    pub(crate) fn op(&mut self, op: Op, children: &[R]) -> R {
        self.nodes.push(RhsNode::Op(op, children.to_vec()));
        self.nodes.len() - 1
    }

    /// A constant, made once per key; `make` only runs when the key is new.
    pub(crate) fn constant(
        &mut self,
        eg: &EG,
        key: ConstKey,
        make: impl FnOnce() -> Option<Tensor>,
    ) -> Option<R> {
        let tensor = match eg.analysis.made(&key) {
            Some(_) => None,
            None => Some(make()?),
        };
        self.nodes.push(RhsNode::Const(key, tensor));
        Some(self.nodes.len() - 1)
    }

    /// Adds the expression to the e-graph; returns its class.
    fn add_to(self, eg: &mut EG) -> Option<Id> {
        let mut ids: Vec<Id> = Vec::with_capacity(self.nodes.len());
        for node in self.nodes {
            let id = match node {
                RhsNode::Class(id) => id,
                RhsNode::Absent => eg.add(ENode::Absent),
                RhsNode::Op(op, ch) => {
                    let children = ch.iter().map(|&i| ids[i]).collect();
                    eg.add(ENode::Op(op, children))
                }
                RhsNode::Const(key, tensor) => {
                    let leaf = match (eg.analysis.made(&key), tensor) {
                        (Some(i), _) => i,
                        (None, Some(t)) => eg.analysis.make_constant(key, t),
                        (None, None) => return None,
                    };
                    eg.add(ENode::Leaf(leaf))
                }
            };
            ids.push(id);
        }
        ids.last().copied()
    }
}

/// One rewrite rule. Rules go one way; each looks at one e-class and reports
/// expressions equal to it.
pub(crate) trait Rule: Sync {
    /// Stable name, used in statistics and tests.
    fn name(&self) -> &'static str;
    /// Pushes to `out` expressions equal to class `id`.
    fn search(&self, eg: &EG, id: Id, out: &mut Vec<Rhs>);
}

/// Why saturation stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// No rule could add anything new: every equivalent form the rules know is in the e-graph.
    Saturated,
    /// The iteration limit was reached.
    IterationLimit,
    /// The e-node limit was reached.
    NodeLimit,
    /// The time limit was reached.
    TimeLimit,
}

impl StopReason {
    /// Lower-case name for reports.
    pub fn name(self) -> &'static str {
        match self {
            StopReason::Saturated => "saturated",
            StopReason::IterationLimit => "iteration-limit",
            StopReason::NodeLimit => "node-limit",
            StopReason::TimeLimit => "time-limit",
        }
    }
}

/// Limits of one saturation run.
#[derive(Clone, Copy, Debug)]
pub struct FusionLimits {
    /// Stop after this many iterations.
    pub iterations: usize,
    /// Stop once the e-graph holds this many e-nodes.
    pub nodes: usize,
    /// Stop after this much time (checked between iterations; only a
    /// backstop, since a run cut short by time is not reproducible).
    pub time: Duration,
}

impl Default for FusionLimits {
    fn default() -> Self {
        FusionLimits {
            iterations: 30,
            nodes: 200_000,
            time: Duration::from_secs(20),
        }
    }
}

/// What a saturation run did.
#[derive(Clone, Debug)]
pub(crate) struct SaturationReport {
    pub iterations: usize,
    pub stop: StopReason,
    pub time: Duration,
    /// How many of each rule's matches changed the e-graph.
    pub fired: BTreeMap<&'static str, usize>,
}

/// Runs the rules to saturation or a limit.
pub(crate) fn saturate(
    eg: &mut EG,
    rules: &[&dyn Rule],
    limits: &FusionLimits,
) -> SaturationReport {
    let start = Instant::now();
    let mut fired: BTreeMap<&'static str, usize> = rules.iter().map(|r| (r.name(), 0)).collect();
    eg.rebuild();
    let mut iterations = 0;
    let stop = loop {
        if iterations >= limits.iterations {
            break StopReason::IterationLimit;
        }
        if eg.total_number_of_nodes() >= limits.nodes {
            break StopReason::NodeLimit;
        }
        if start.elapsed() >= limits.time {
            break StopReason::TimeLimit;
        }
        iterations += 1;
        let classes: Vec<Id> = eg.classes().map(|c| c.id).collect();
        let mut found: Vec<(usize, Id, Rhs)> = Vec::new();
        for (r, rule) in rules.iter().enumerate() {
            let mut out = Vec::new();
            for &id in &classes {
                rule.search(eg, id, &mut out);
                found.extend(out.drain(..).map(|rhs| (r, id, rhs)));
            }
        }
        let nodes_before = eg.total_number_of_nodes();
        let mut changed = false;
        for (r, id, rhs) in found {
            let before = eg.total_number_of_nodes();
            let id = rhs.target.unwrap_or(id);
            let Some(new) = rhs.add_to(eg) else {
                continue;
            };
            let unioned = eg.union(id, new);
            if unioned || eg.total_number_of_nodes() != before {
                *fired.entry(rules[r].name()).or_insert(0) += 1;
                changed = true;
            }
        }
        eg.rebuild();
        if !changed && eg.total_number_of_nodes() == nodes_before {
            break StopReason::Saturated;
        }
    };
    SaturationReport {
        iterations,
        stop,
        time: start.elapsed(),
        fired,
    }
}
