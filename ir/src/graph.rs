//! The graph: values, nodes, constants.

use crate::{Op, Tensor, ValueType};
use std::collections::{BTreeMap, HashMap};

/// Index of a value in its graph.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ValueId(pub u32);

impl ValueId {
    /// The index as usize.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// A named, typed value: a graph input, a constant or a node output.
#[derive(Clone, Debug, PartialEq)]
pub struct ValueInfo {
    /// Unique name (kept from the source model where it had one).
    pub name: String,
    /// Static type.
    pub ty: ValueType,
}

/// One operation applied to values.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// Name from the source model, for error messages; may be empty.
    pub name: String,
    /// The operation.
    pub op: Op,
    /// Operands in the op's order; `None` for an absent optional input.
    pub inputs: Vec<Option<ValueId>>,
    /// Results in the op's order.
    pub outputs: Vec<ValueId>,
}

impl Node {
    /// The node's name for messages: its own name, or its op and first output.
    pub fn describe(&self, g: &Graph) -> String {
        if self.name.is_empty() {
            let out = self
                .outputs
                .first()
                .map(|&v| g.value(v).name.as_str())
                .unwrap_or("");
            format!("{} -> {out}", self.op.name())
        } else {
            format!("{} ({})", self.name, self.op.name())
        }
    }

    /// The present inputs.
    pub fn present_inputs(&self) -> impl Iterator<Item = ValueId> + '_ {
        self.inputs.iter().flatten().copied()
    }
}

/// A computation graph in topological order, with its constants held apart.
#[derive(Clone, Debug, Default)]
pub struct Graph {
    /// Name of the graph (from the source model).
    pub name: String,
    values: Vec<ValueInfo>,
    /// Nodes, in an order where every operand is defined before use.
    pub nodes: Vec<Node>,
    /// Values the caller provides.
    pub inputs: Vec<ValueId>,
    /// Values the caller receives.
    pub outputs: Vec<ValueId>,
    /// Values whose content is known at compile time (weights and folded values).
    pub constants: BTreeMap<ValueId, Tensor>,
    /// Free-form key/value metadata carried from the source model.
    pub metadata: BTreeMap<String, String>,
}

impl Graph {
    /// An empty graph with a name.
    pub fn new(name: impl Into<String>) -> Self {
        Graph {
            name: name.into(),
            ..Default::default()
        }
    }

    /// Adds a value and returns its id.
    pub fn add_value(&mut self, name: impl Into<String>, ty: ValueType) -> ValueId {
        let id = ValueId(self.values.len() as u32);
        self.values.push(ValueInfo {
            name: name.into(),
            ty,
        });
        id
    }

    /// Adds a constant value.
    pub fn add_constant(&mut self, name: impl Into<String>, tensor: Tensor) -> ValueId {
        let ty = ValueType::new(
            tensor.dtype(),
            crate::Shape::fixed(&tensor.dims().iter().map(|&d| d as u64).collect::<Vec<_>>()),
        );
        let id = self.add_value(name, ty);
        self.constants.insert(id, tensor);
        id
    }

    /// Appends a node.
    pub fn add_node(&mut self, node: Node) {
        self.nodes.push(node);
    }

    /// The value with this id.
    pub fn value(&self, id: ValueId) -> &ValueInfo {
        &self.values[id.index()]
    }

    /// The value with this id, mutably.
    pub fn value_mut(&mut self, id: ValueId) -> &mut ValueInfo {
        &mut self.values[id.index()]
    }

    /// Every value, indexed by id.
    pub fn values(&self) -> &[ValueInfo] {
        &self.values
    }

    /// Number of values.
    pub fn num_values(&self) -> usize {
        self.values.len()
    }

    /// Looks a value up by name.
    pub fn find_value(&self, name: &str) -> Option<ValueId> {
        self.values
            .iter()
            .position(|v| v.name == name)
            .map(|i| ValueId(i as u32))
    }

    /// The constant held by a value, if any.
    pub fn constant(&self, id: ValueId) -> Option<&Tensor> {
        self.constants.get(&id)
    }

    /// For each value, the index of the node that produces it.
    pub fn producers(&self) -> HashMap<ValueId, usize> {
        let mut m = HashMap::new();
        for (i, n) in self.nodes.iter().enumerate() {
            for &o in &n.outputs {
                m.insert(o, i);
            }
        }
        m
    }

    /// For each value, how many node operands and graph outputs use it.
    pub fn use_counts(&self) -> Vec<usize> {
        let mut c = vec![0; self.values.len()];
        for n in &self.nodes {
            for v in n.present_inputs() {
                c[v.index()] += 1;
            }
        }
        for &o in &self.outputs {
            c[o.index()] += 1;
        }
        c
    }

    /// Replaces every use of `from` (node operands and graph outputs) with `to`.
    pub fn replace_uses(&mut self, from: ValueId, to: ValueId) {
        for n in &mut self.nodes {
            for v in n.inputs.iter_mut().flatten() {
                if *v == from {
                    *v = to;
                }
            }
        }
        for o in &mut self.outputs {
            if *o == from {
                *o = to;
            }
        }
    }

    /// Drops values that nothing defines or uses and renumbers the rest densely,
    /// keeping their relative order.
    pub fn compact(&mut self) {
        let mut keep = vec![false; self.values.len()];
        for &v in self.inputs.iter().chain(&self.outputs) {
            keep[v.index()] = true;
        }
        for n in &self.nodes {
            for v in n.present_inputs().chain(n.outputs.iter().copied()) {
                keep[v.index()] = true;
            }
        }
        let mut remap = vec![None; self.values.len()];
        let mut values = Vec::new();
        for (i, v) in std::mem::take(&mut self.values).into_iter().enumerate() {
            if keep[i] {
                remap[i] = Some(ValueId(values.len() as u32));
                values.push(v);
            }
        }
        self.values = values;
        let map = |v: ValueId| remap[v.index()].expect("kept values have a new id");
        for n in &mut self.nodes {
            for v in n.inputs.iter_mut().flatten() {
                *v = map(*v);
            }
            for v in &mut n.outputs {
                *v = map(*v);
            }
        }
        self.inputs = self.inputs.iter().map(|&v| map(v)).collect();
        self.outputs = self.outputs.iter().map(|&v| map(v)).collect();
        self.constants = std::mem::take(&mut self.constants)
            .into_iter()
            .filter_map(|(v, t)| remap[v.index()].map(|n| (n, t)))
            .collect();
    }

    /// Total bytes of constant data.
    pub fn constant_bytes(&self) -> u64 {
        self.constants
            .values()
            .map(|t| t.bytes().len() as u64)
            .sum()
    }

    /// Total number of constant elements (parameters).
    pub fn constant_elements(&self) -> u64 {
        self.constants.values().map(|t| t.len() as u64).sum()
    }

    /// How many nodes of each op there are, by op name.
    pub fn op_histogram(&self) -> BTreeMap<&'static str, usize> {
        let mut h = BTreeMap::new();
        for n in &self.nodes {
            *h.entry(n.op.name()).or_insert(0) += 1;
        }
        h
    }
}
