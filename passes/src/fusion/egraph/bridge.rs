//! From a graph to the e-graph and back.
//!
//! Every single-result node becomes an e-node; nodes with several results
//! stay as they are and their results enter the e-graph as leaves, as do
//! graph inputs and constants. Going back, the chosen e-nodes are emitted in
//! dependency order around the kept nodes, reusing the original values'
//! names, and every graph output keeps its value.

use super::analysis::{FusionAnalysis, Leaf, EG};
use super::cost::CostModel;
use super::extract::Choice;
use super::lang::ENode;
use egg::Id;
use kiln_ir::{Graph, Node, Op, ValueId};
use std::collections::{BTreeMap, HashMap, HashSet};

/// A graph in e-graph form.
pub(crate) struct Region {
    /// The e-graph.
    pub eg: EG,
    /// The e-class of each graph value.
    pub class_of: HashMap<ValueId, Id>,
    /// Indices of the nodes kept out of the e-graph.
    pub kept: Vec<usize>,
    /// The e-classes needed outside: graph outputs and operands of kept nodes.
    pub roots: Vec<Id>,
    /// Number of nodes that entered the e-graph.
    pub modelled: usize,
}

fn modelled(node: &Node) -> bool {
    node.outputs.len() == 1
}

fn unknown_dims(t: &kiln_ir::ValueType) -> usize {
    t.shape
        .0
        .iter()
        .filter(|d| matches!(d, kiln_ir::Dim::Unknown))
        .count()
}

/// Builds the e-graph of `g`.
pub(crate) fn to_egraph(g: &Graph, fold_limit: usize) -> Region {
    let mut eg = EG::new(FusionAnalysis::new(fold_limit));
    let mut class_of: HashMap<ValueId, Id> = HashMap::new();
    let leaf = |eg: &mut EG, v: ValueId, g: &Graph| {
        let i = eg.analysis.add_leaf(Leaf {
            value: Some(v),
            tensor: g.constant(v).cloned(),
            ty: Some(g.value(v).ty.clone()),
        });
        eg.add(ENode::Leaf(i))
    };
    for &v in &g.inputs {
        let id = leaf(&mut eg, v, g);
        class_of.insert(v, id);
    }
    for &v in g.constants.keys() {
        let id = leaf(&mut eg, v, g);
        class_of.insert(v, id);
    }
    let mut kept = Vec::new();
    let mut roots = Vec::new();
    let mut count = 0;
    for (i, node) in g.nodes.iter().enumerate() {
        let mut children = Vec::with_capacity(node.inputs.len());
        for input in &node.inputs {
            let id = match input {
                None => eg.add(ENode::Absent),
                Some(v) => match class_of.get(v) {
                    Some(&id) => id,
                    None => {
                        let id = leaf(&mut eg, *v, g);
                        class_of.insert(*v, id);
                        id
                    }
                },
            };
            children.push(id);
        }
        if modelled(node) {
            let id = eg.add(ENode::Op(node.op.clone(), children));
            // The graph may know more than plain inference (shapes that
            // fold-constants proved from shape subgraphs): keep the better.
            let known = &g.value(node.outputs[0]).ty;
            let inferred = eg[id].data.ty.clone();
            if inferred
                .as_ref()
                .is_none_or(|t| unknown_dims(known) < unknown_dims(t))
            {
                let mut data = eg[id].data.clone();
                data.ty = Some(known.clone());
                eg.set_analysis_data(id, data);
            }
            class_of.insert(node.outputs[0], id);
            count += 1;
        } else {
            roots.extend(children.iter().copied());
            kept.push(i);
            for &o in &node.outputs {
                let id = leaf(&mut eg, o, g);
                class_of.insert(o, id);
            }
        }
    }
    roots.extend(g.outputs.iter().map(|v| class_of[v]));
    // Record how often the input graph reads each class: rules only merge
    // a value into its consumer when that is its one use.
    let mut uses: BTreeMap<Id, u32> = BTreeMap::new();
    for node in &g.nodes {
        for v in node.present_inputs() {
            *uses.entry(eg.find(class_of[&v])).or_default() += 1;
        }
    }
    for v in &g.outputs {
        *uses.entry(eg.find(class_of[v])).or_default() += 1;
    }
    for (id, n) in uses {
        let mut data = eg[id].data.clone();
        data.uses = n;
        eg.set_analysis_data(id, data);
    }
    Region {
        eg,
        class_of,
        kept,
        roots,
        modelled: count,
    }
}

/// The modelled nodes' cost as they are in `g`.
pub(crate) fn input_cost(g: &Graph, region: &Region, cost: &CostModel) -> f64 {
    let eg = &region.eg;
    g.nodes
        .iter()
        .filter(|n| modelled(n))
        .map(|n| {
            let class = eg.find(region.class_of[&n.outputs[0]]);
            let children = n
                .inputs
                .iter()
                .map(|i| match i {
                    Some(v) => eg.find(region.class_of[v]),
                    None => eg
                        .lookup(ENode::Absent)
                        .expect("absent operands were added when the e-graph was built"),
                })
                .collect();
            cost.node_ns(eg, class, &ENode::Op(n.op.clone(), children))
        })
        .sum()
}

/// The rebuilt graph and its cost.
pub(crate) struct Emitted {
    pub graph: Graph,
    pub cost: f64,
}

struct Emitter<'a> {
    eg: &'a EG,
    choice: &'a Choice,
    cost: &'a CostModel,
    g: Graph,
    nodes: Vec<Node>,
    /// The value emitted for each class.
    value: HashMap<Id, ValueId>,
    /// Values defined so far outside the e-graph (inputs, constants, kept results).
    defined: HashSet<ValueId>,
    on_stack: HashSet<Id>,
    /// Original values of each class, in graph order (their names and ids are reused).
    originals: BTreeMap<Id, Vec<ValueId>>,
    used_ids: HashSet<ValueId>,
    total: f64,
    fresh: usize,
}

impl Emitter<'_> {
    fn emit(&mut self, class: Id) -> Result<ValueId, String> {
        let class = self.eg.find(class);
        if let Some(&v) = self.value.get(&class) {
            return Ok(v);
        }
        if !self.on_stack.insert(class) {
            return Err(format!(
                "the chosen nodes form a cycle through e-class {class}"
            ));
        }
        let node = self
            .choice
            .get(&class)
            .ok_or_else(|| format!("no choice for e-class {class}"))?
            .clone();
        let v = match &node {
            ENode::Absent => return Err("an absent operand is used as a value".to_string()),
            ENode::Leaf(i) => {
                let leaf = &self.eg.analysis.leaves[*i as usize];
                match (leaf.value, &leaf.tensor) {
                    (Some(v), _) => {
                        if !self.defined.contains(&v) {
                            return Err(format!(
                                "value {} is used before the node that makes it",
                                self.g.value(v).name
                            ));
                        }
                        v
                    }
                    (None, Some(t)) => {
                        self.fresh += 1;
                        let name = format!("fused_const_{}", self.fresh);
                        self.g.add_constant(name, t.clone())
                    }
                    (None, None) => return Err("a leaf without value or content".to_string()),
                }
            }
            ENode::Op(op, children) => {
                let mut inputs = Vec::with_capacity(children.len());
                for &c in children {
                    let c = self.eg.find(c);
                    let absent = matches!(self.choice.get(&c), Some(ENode::Absent))
                        || self.eg[c].nodes.iter().all(|n| matches!(n, ENode::Absent));
                    inputs.push(if absent { None } else { Some(self.emit(c)?) });
                }
                let reuse = self
                    .originals
                    .get(&class)
                    .and_then(|vs| vs.iter().copied().find(|v| !self.used_ids.contains(v)));
                let out = match reuse {
                    Some(v) => v,
                    None => {
                        self.fresh += 1;
                        let ty = self.eg[class].data.ty.clone().unwrap_or_else(|| {
                            kiln_ir::ValueType::new(kiln_ir::DType::F32, kiln_ir::Shape(vec![]))
                        });
                        self.g.add_value(format!("fused_{}", self.fresh), ty)
                    }
                };
                self.used_ids.insert(out);
                self.total += self.cost.node_ns(self.eg, class, &node);
                self.nodes.push(Node {
                    name: String::new(),
                    op: op.clone(),
                    inputs,
                    outputs: vec![out],
                });
                out
            }
        };
        self.on_stack.remove(&class);
        self.value.insert(class, v);
        Ok(v)
    }
}

/// Rebuilds `g` from the chosen e-nodes.
pub(crate) fn from_egraph(
    g: &Graph,
    region: &Region,
    choice: &Choice,
    cost: &CostModel,
) -> Result<Emitted, String> {
    let eg = &region.eg;
    let mut originals: BTreeMap<Id, Vec<ValueId>> = BTreeMap::new();
    for n in g.nodes.iter().filter(|n| modelled(n)) {
        let v = n.outputs[0];
        originals
            .entry(eg.find(region.class_of[&v]))
            .or_default()
            .push(v);
    }
    // A graph output keeps its own value when its class is emitted, so no
    // Identity is needed to restore its name.
    let is_output: HashSet<ValueId> = g.outputs.iter().copied().collect();
    for vs in originals.values_mut() {
        vs.sort_by_key(|v| !is_output.contains(v));
    }
    let mut defined: HashSet<ValueId> = g.inputs.iter().copied().collect();
    defined.extend(g.constants.keys().copied());
    let mut e = Emitter {
        eg,
        choice,
        cost,
        g: g.clone(),
        nodes: Vec::new(),
        value: HashMap::new(),
        defined,
        on_stack: HashSet::new(),
        originals,
        used_ids: HashSet::new(),
        total: 0.0,
        fresh: 0,
    };
    for &i in &region.kept {
        let node = &g.nodes[i];
        let mut inputs = Vec::with_capacity(node.inputs.len());
        for input in &node.inputs {
            inputs.push(match input {
                Some(v) => Some(e.emit(region.class_of[v])?),
                None => None,
            });
        }
        e.defined.extend(node.outputs.iter().copied());
        e.nodes.push(Node {
            inputs,
            ..node.clone()
        });
    }
    let mut outputs = Vec::with_capacity(g.outputs.len());
    for &o in &g.outputs {
        let v = e.emit(region.class_of[&o])?;
        if v == o {
            outputs.push(o);
        } else if e.used_ids.contains(&o) || e.defined.contains(&o) {
            // The output's own value already means something else (another
            // output, or an input): give the output a fresh copy.
            e.fresh += 1;
            let ty = g.value(o).ty.clone();
            let copy =
                e.g.add_value(format!("{}_{}", g.value(o).name, e.fresh), ty);
            e.nodes.push(Node {
                name: String::new(),
                op: Op::Identity,
                inputs: vec![Some(v)],
                outputs: vec![copy],
            });
            outputs.push(copy);
        } else {
            // Keep the output's name: it is part of the model's interface.
            e.used_ids.insert(o);
            e.nodes.push(Node {
                name: String::new(),
                op: Op::Identity,
                inputs: vec![Some(v)],
                outputs: vec![o],
            });
            outputs.push(o);
        }
    }
    let mut graph = e.g;
    graph.nodes = e.nodes;
    graph.outputs = outputs;
    graph.compact();
    Ok(Emitted {
        graph,
        cost: e.total,
    })
}
