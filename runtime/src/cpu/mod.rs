//! The reference CPU executor.
//!
//! [`CpuExecutor`] runs a [`Graph`] node by node in graph order. Shapes are
//! computed at run time from the actual operands (symbolic dimensions make
//! them dynamic), so no shape inference is needed. At load time the executor
//! converts constants once and computes each value's last use; while running
//! it drops every intermediate right after its last use and tracks the peak
//! of live bytes. [`eval_node`] evaluates a single op, for constant folding.

// Kernels are written once in macros expanded for every dtype (bool and u64
// included), so comparisons on bools and same-type casts are expected there.
#![allow(
    clippy::bool_comparison,
    clippy::unnecessary_cast,
    clippy::if_same_then_else
)]

mod attention;
mod conv;
mod elementwise;
mod fused;
mod gather;
mod matmul;
mod movement;
mod norm;
mod ops;
mod pool;
mod qmatmul;
mod reduce;
mod resize;
mod rotary;
mod value;

use crate::RuntimeError;
use kiln_ir::{Graph, Node, Op, Tensor, ValueId};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Instant;
use value::{Data, KernelError, Value};

/// Options of a [`CpuExecutor`].
#[derive(Clone, Debug, Default)]
pub struct ExecOptions {
    /// Worker threads; `None` uses rayon's global pool.
    pub threads: Option<usize>,
}

/// Wall time spent in one node during a run.
#[derive(Clone, Debug)]
pub struct NodeTime {
    /// The node, as [`kiln_ir::Node::describe`] prints it.
    pub node: String,
    /// The op's name.
    pub op: &'static str,
    /// Seconds spent in the kernel.
    pub seconds: f64,
}

/// What [`CpuExecutor::run`] returns.
#[derive(Clone, Debug)]
pub struct RunResult {
    /// Graph outputs, by name, in graph order.
    pub outputs: Vec<(String, Tensor)>,
    /// Peak bytes of live buffers (inputs, intermediates, outputs; not constants).
    pub peak_bytes: u64,
    /// Time per node, in execution order.
    pub node_times: Option<Vec<NodeTime>>,
}

/// Runs graphs on the CPU; the semantic reference for every op.
pub struct CpuExecutor {
    graph: Graph,
    /// Converted constants, indexed by value id.
    consts: Vec<Option<Value>>,
    /// For each value, the index of the last node reading it (`None`: never freed or unused).
    last_use: Vec<Option<usize>>,
    /// Values the caller receives (never freed during a run).
    is_output: Vec<bool>,
    pool: Option<rayon::ThreadPool>,
}

/// The address of a value's buffer, to count shared buffers once.
fn buffer_id(v: &Value) -> usize {
    match &v.data {
        Data::F32(a) => Arc::as_ptr(a) as usize,
        Data::F16(a) => Arc::as_ptr(a) as usize,
        Data::BF16(a) => Arc::as_ptr(a) as usize,
        Data::F64(a) => Arc::as_ptr(a) as usize,
        Data::I64(a) => Arc::as_ptr(a) as usize,
        Data::I32(a) => Arc::as_ptr(a) as usize,
        Data::I16(a) => Arc::as_ptr(a) as usize,
        Data::I8(a) => Arc::as_ptr(a) as usize,
        Data::U64(a) => Arc::as_ptr(a) as usize,
        Data::U32(a) => Arc::as_ptr(a) as usize,
        Data::U16(a) => Arc::as_ptr(a) as usize,
        Data::U8(a) => Arc::as_ptr(a) as usize,
        Data::Bool(a) => Arc::as_ptr(a) as usize,
        Data::Packed(t) => t.bytes().as_ptr() as usize,
    }
}

/// Live-byte accounting that counts each buffer once, however many values share it.
struct Meter<'a> {
    constants: &'a HashSet<usize>,
    buffers: HashMap<usize, (usize, u64)>,
    live: u64,
    peak: u64,
}

impl Meter<'_> {
    fn add(&mut self, v: &Value) {
        let id = buffer_id(v);
        if self.constants.contains(&id) {
            return;
        }
        let e = self.buffers.entry(id).or_insert((0, v.bytes()));
        if e.0 == 0 {
            self.live += e.1;
            self.peak = self.peak.max(self.live);
        }
        e.0 += 1;
    }

    fn remove(&mut self, v: &Value) {
        let id = buffer_id(v);
        if let Some(e) = self.buffers.get_mut(&id) {
            e.0 -= 1;
            if e.0 == 0 {
                self.live -= e.1;
                self.buffers.remove(&id);
            }
        }
    }
}

fn kernel_error(node: String, op: &Op, e: KernelError) -> RuntimeError {
    match e {
        KernelError::Invalid(m) => RuntimeError::Node {
            node,
            message: format!("{}: {m}", op.name()),
        },
        KernelError::Unsupported(m) => RuntimeError::Unsupported(format!("{node}: {m}")),
    }
}

/// Runs a kernel, turning a panic (a bug, never expected) into an error instead of unwinding into the caller.
fn guarded(op: &Op, inputs: &[Option<&Value>], n: usize) -> Result<Vec<Value>, KernelError> {
    match std::panic::catch_unwind(AssertUnwindSafe(|| ops::eval(op, inputs, n))) {
        Ok(r) => r,
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".into());
            Err(KernelError::Invalid(format!(
                "internal error in kernel: {msg}"
            )))
        }
    }
}

impl CpuExecutor {
    /// Prepares a graph: checks that every operand is defined before use and
    /// that the executor handles every op's dtype, converts the constants
    /// once and computes the memory plan (each value's last use).
    pub fn new(graph: Graph, options: ExecOptions) -> Result<Self, RuntimeError> {
        let nv = graph.num_values();
        let mut defined = vec![false; nv];
        for &v in &graph.inputs {
            defined[v.index()] = true;
        }
        for &v in graph.constants.keys() {
            if v.index() < nv {
                defined[v.index()] = true;
            }
        }
        let mut last_use = vec![None; nv];
        for (i, n) in graph.nodes.iter().enumerate() {
            for v in n.present_inputs() {
                if v.index() >= nv || !defined[v.index()] {
                    return Err(RuntimeError::Node {
                        node: n.describe(&graph),
                        message: format!("operand #{} is used before it is defined", v.0),
                    });
                }
                last_use[v.index()] = Some(i);
            }
            if let Some(first) = n.inputs.first().copied().flatten() {
                let dt = graph.value(first).ty.dtype;
                if ops::rejects(&n.op, dt) {
                    return Err(RuntimeError::Unsupported(format!(
                        "{}: {} on {dt}",
                        n.describe(&graph),
                        n.op.name()
                    )));
                }
            }
            for &o in &n.outputs {
                if o.index() >= nv {
                    return Err(RuntimeError::Node {
                        node: n.describe(&graph),
                        message: "output is not a value of the graph".into(),
                    });
                }
                defined[o.index()] = true;
            }
        }
        let mut is_output = vec![false; nv];
        for &o in &graph.outputs {
            if o.index() >= nv || !defined[o.index()] {
                return Err(RuntimeError::Node {
                    node: graph.name.clone(),
                    message: format!("graph output #{} is never computed", o.0),
                });
            }
            is_output[o.index()] = true;
        }
        let mut consts = vec![None; nv];
        for (&id, t) in &graph.constants {
            if id.index() < nv {
                consts[id.index()] = Some(Value::from_tensor(t));
            }
        }
        let pool = match options.threads {
            Some(n) => Some(
                rayon::ThreadPoolBuilder::new()
                    .num_threads(n.max(1))
                    .build()
                    .map_err(|e| {
                        RuntimeError::Unsupported(format!("cannot start {n} threads: {e}"))
                    })?,
            ),
            None => None,
        };
        Ok(CpuExecutor {
            graph,
            consts,
            last_use,
            is_output,
            pool,
        })
    }

    /// The graph being run.
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// Runs the graph on named inputs.
    pub fn run(&self, inputs: &BTreeMap<String, Tensor>) -> Result<RunResult, RuntimeError> {
        match &self.pool {
            Some(p) => p.install(|| self.run_inner(inputs)),
            None => self.run_inner(inputs),
        }
    }

    /// Checks the caller's inputs against the graph's declared inputs.
    fn check_inputs(&self, inputs: &BTreeMap<String, Tensor>) -> Result<(), RuntimeError> {
        crate::inputs::check(&self.graph, inputs, false)
    }

    /// Runs the graph on named inputs, letting `observer` look at (and
    /// replace) the operands of the nodes it asks for before they run, or
    /// stop the run early.
    ///
    /// This is how calibration streams activations through a model: the
    /// observer sees each layer's input once, and what it substitutes (a
    /// quantized weight, a rescaled activation) is what every later node of
    /// the run reads. A replaced constant stays replaced only for this run.
    pub fn run_observed(
        &self,
        inputs: &BTreeMap<String, Tensor>,
        observer: &mut (dyn Observer + Send),
    ) -> Result<Option<RunResult>, RuntimeError> {
        match &self.pool {
            Some(p) => p.install(|| self.run_with(inputs, Some(observer))),
            None => self.run_with(inputs, Some(observer)),
        }
    }

    fn run_inner(&self, inputs: &BTreeMap<String, Tensor>) -> Result<RunResult, RuntimeError> {
        self.run_with(inputs, None)?
            .ok_or_else(|| RuntimeError::Node {
                node: self.graph.name.clone(),
                message: "the run stopped before its outputs were computed".into(),
            })
    }

    fn run_with(
        &self,
        inputs: &BTreeMap<String, Tensor>,
        mut observer: Option<&mut (dyn Observer + Send)>,
    ) -> Result<Option<RunResult>, RuntimeError> {
        self.check_inputs(inputs)?;
        let g = &self.graph;
        let const_ids: HashSet<usize> = self.consts.iter().flatten().map(buffer_id).collect();
        let mut meter = Meter {
            constants: &const_ids,
            buffers: HashMap::new(),
            live: 0,
            peak: 0,
        };
        let mut env: Vec<Option<Value>> = vec![None; g.num_values()];
        for &v in &g.inputs {
            let t = &inputs[&g.value(v).name];
            let val = Value::from_tensor(t);
            meter.add(&val);
            env[v.index()] = Some(val);
        }
        let mut times = Vec::with_capacity(g.nodes.len());
        for (i, node) in g.nodes.iter().enumerate() {
            if let Some(obs) = observer.as_deref_mut() {
                if obs.wants(i, node) {
                    let seen: Vec<Option<Tensor>> = node
                        .inputs
                        .iter()
                        .map(|o| {
                            o.and_then(|v| {
                                env[v.index()]
                                    .as_ref()
                                    .or(self.consts[v.index()].as_ref())
                                    .map(Value::to_tensor)
                            })
                        })
                        .collect();
                    let action = obs.before(i, node, &seen)?;
                    drop(seen);
                    for (pos, t) in action.replace {
                        let Some(Some(v)) = node.inputs.get(pos).copied() else {
                            return Err(RuntimeError::Node {
                                node: node.describe(g),
                                message: format!("an observer replaced operand {pos}, which the node does not have"),
                            });
                        };
                        let val = Value::from_tensor(&t);
                        if let Some(old) = env[v.index()].take() {
                            meter.remove(&old);
                        }
                        meter.add(&val);
                        env[v.index()] = Some(val);
                    }
                    if action.stop {
                        return Ok(None);
                    }
                }
            }
            let operands: Vec<Option<&Value>> = node
                .inputs
                .iter()
                .map(|o| {
                    o.and_then(|v| env[v.index()].as_ref().or(self.consts[v.index()].as_ref()))
                })
                .collect();
            if let Some(pos) = node
                .inputs
                .iter()
                .zip(&operands)
                .position(|(d, o)| d.is_some() && o.is_none())
            {
                return Err(RuntimeError::Node {
                    node: node.describe(g),
                    message: format!("operand {pos} has no value"),
                });
            }
            let start = Instant::now();
            let results = guarded(&node.op, &operands, node.outputs.len())
                .map_err(|e| kernel_error(node.describe(g), &node.op, e))?;
            let seconds = start.elapsed().as_secs_f64();
            times.push(NodeTime {
                node: node.describe(g),
                op: node.op.name(),
                seconds,
            });
            if results.len() < node.outputs.len() {
                return Err(RuntimeError::Node {
                    node: node.describe(g),
                    message: format!(
                        "{} produced {} results, the node has {} outputs",
                        node.op.name(),
                        results.len(),
                        node.outputs.len()
                    ),
                });
            }
            drop(operands);
            for (&o, r) in node.outputs.iter().zip(results) {
                meter.add(&r);
                env[o.index()] = Some(r);
            }
            // Free what this node read for the last time, and results nobody reads.
            let dead = node
                .present_inputs()
                .filter(|v| self.last_use[v.index()] == Some(i))
                .chain(
                    node.outputs
                        .iter()
                        .copied()
                        .filter(|v| self.last_use[v.index()].is_none()),
                );
            for v in dead.collect::<Vec<ValueId>>() {
                if self.is_output[v.index()] {
                    continue;
                }
                if let Some(val) = env[v.index()].take() {
                    meter.remove(&val);
                }
            }
        }
        let mut outputs = Vec::with_capacity(g.outputs.len());
        for &o in &g.outputs {
            let name = g.value(o).name.clone();
            let val = env[o.index()]
                .as_ref()
                .or(self.consts[o.index()].as_ref())
                .ok_or_else(|| RuntimeError::Node {
                    node: g.name.clone(),
                    message: format!("output `{name}` was not computed"),
                })?;
            outputs.push((name, val.to_tensor()));
        }
        Ok(Some(RunResult {
            outputs,
            peak_bytes: meter.peak,
            node_times: Some(times),
        }))
    }
}

/// What an [`Observer`] does with a node it looked at.
#[derive(Debug, Default)]
pub struct ObserverAction {
    /// Operands to replace, by position: the node (and every later node of
    /// the run that reads the same value) sees the new tensor.
    pub replace: Vec<(usize, Tensor)>,
    /// End the run before this node executes.
    pub stop: bool,
}

/// Looks at nodes' operands during [`CpuExecutor::run_observed`].
pub trait Observer {
    /// Whether [`Observer::before`] wants node `index`; operands are copied
    /// out only for the nodes it wants.
    fn wants(&mut self, index: usize, node: &Node) -> bool;
    /// Called before node `index` runs, with its operands (`None` for
    /// absent optional ones).
    fn before(
        &mut self,
        index: usize,
        node: &Node,
        operands: &[Option<Tensor>],
    ) -> Result<ObserverAction, RuntimeError>;
}

/// Evaluates one op on constant operands (used by compile-time constant folding).
///
/// `inputs[i]` is `None` for an absent optional operand; the result has
/// `num_outputs` tensors (or fewer when the op produces fewer).
pub fn eval_node(
    op: &Op,
    inputs: &[Option<&Tensor>],
    num_outputs: usize,
) -> Result<Vec<Tensor>, RuntimeError> {
    let vals: Vec<Option<Value>> = inputs.iter().map(|t| t.map(Value::from_tensor)).collect();
    let refs: Vec<Option<&Value>> = vals.iter().map(|v| v.as_ref()).collect();
    let out =
        guarded(op, &refs, num_outputs).map_err(|e| kernel_error(op.name().to_string(), op, e))?;
    Ok(out
        .into_iter()
        .take(num_outputs.max(1))
        .map(|v| v.to_tensor())
        .collect())
}
