//! What the e-graph knows about each e-class: its type (from the IR's shape
//! inference) and whether it is a known constant. Constant-only e-nodes are
//! folded here, with the runtime's reference kernels, as they appear.

use super::lang::ENode;
use egg::{Analysis, DidMerge, EGraph, Id};
use kiln_ir::{Tensor, ValueId, ValueType};
use std::collections::HashMap;

/// A value outside the rewritten region.
#[derive(Clone, Debug)]
pub(crate) struct Leaf {
    /// The graph value it stands for; `None` for constants made during saturation.
    pub value: Option<ValueId>,
    /// Its content, when it is a constant.
    pub tensor: Option<Tensor>,
    /// Its type.
    pub ty: Option<ValueType>,
}

/// Identifies a constant made by a rewrite, so that a rule firing again in a
/// later iteration reuses the leaf instead of making an equal one.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct ConstKey {
    /// What made it (rule-specific tag).
    pub tag: &'static str,
    /// The rule's description of the content (leaf indices, sizes, value bits).
    pub parts: Vec<i64>,
}

/// Per-class facts.
#[derive(Clone, Debug, Default)]
pub(crate) struct ClassData {
    /// Result type, when inference succeeded.
    pub ty: Option<ValueType>,
    /// A constant leaf in the class.
    pub konst: Option<u32>,
    /// The value, when the class is a float constant whose elements are all equal.
    pub scalar: Option<f64>,
    /// How many operands of the input graph's nodes (and graph outputs)
    /// read this class; 0 for classes rules made.
    pub uses: u32,
}

/// The analysis: leaves and the facts above.
#[derive(Debug, Default)]
pub(crate) struct FusionAnalysis {
    /// Every leaf, indexed by `ENode::Leaf`.
    pub leaves: Vec<Leaf>,
    made: HashMap<ConstKey, u32>,
    /// Largest constant (in elements) that folding may create.
    pub fold_limit: usize,
    /// How many e-classes were folded to constants.
    pub folded: usize,
}

/// The e-graph type of this module.
pub(crate) type EG = EGraph<ENode, FusionAnalysis>;

impl FusionAnalysis {
    /// An analysis that folds constants of up to `fold_limit` elements.
    pub(crate) fn new(fold_limit: usize) -> Self {
        FusionAnalysis {
            fold_limit,
            ..Default::default()
        }
    }

    /// Adds a leaf for a graph value.
    pub(crate) fn add_leaf(&mut self, leaf: Leaf) -> u32 {
        self.leaves.push(leaf);
        (self.leaves.len() - 1) as u32
    }

    /// The leaf previously made under `key`, if any.
    pub(crate) fn made(&self, key: &ConstKey) -> Option<u32> {
        self.made.get(key).copied()
    }

    /// A constant leaf for `tensor`, made once per key.
    pub(crate) fn make_constant(&mut self, key: ConstKey, tensor: Tensor) -> u32 {
        if let Some(&i) = self.made.get(&key) {
            return i;
        }
        let ty = ValueType::new(
            tensor.dtype(),
            kiln_ir::Shape::fixed(&tensor.dims().iter().map(|&d| d as u64).collect::<Vec<_>>()),
        );
        let i = self.add_leaf(Leaf {
            value: None,
            tensor: Some(tensor),
            ty: Some(ty),
        });
        self.made.insert(key, i);
        i
    }

    /// The tensor of a constant class.
    pub(crate) fn constant<'a>(&'a self, data: &ClassData) -> Option<&'a Tensor> {
        data.konst
            .and_then(|i| self.leaves[i as usize].tensor.as_ref())
    }
}

/// Largest constant whose elements are inspected for a uniform value.
const SCALAR_PROBE: usize = 4096;

fn uniform_value(t: &Tensor) -> Option<f64> {
    if !t.dtype().is_float() || t.is_empty() || t.len() > SCALAR_PROBE {
        return None;
    }
    let v = t.to_f64_vec();
    let first = *v.first()?;
    v.iter()
        .all(|&x| x.to_bits() == first.to_bits())
        .then_some(first)
}

impl Analysis<ENode> for FusionAnalysis {
    type Data = ClassData;

    fn make(egraph: &mut EG, enode: &ENode, _id: Id) -> ClassData {
        match enode {
            ENode::Leaf(i) => {
                let leaf = &egraph.analysis.leaves[*i as usize];
                ClassData {
                    ty: leaf.ty.clone(),
                    konst: leaf.tensor.as_ref().map(|_| *i),
                    scalar: leaf.tensor.as_ref().and_then(uniform_value),
                    uses: 0,
                }
            }
            ENode::Absent => ClassData::default(),
            ENode::Op(op, children) => {
                let types: Vec<Option<&ValueType>> = children
                    .iter()
                    .map(|c| egraph[*c].data.ty.as_ref())
                    .collect();
                let consts: Vec<Option<&Tensor>> = children
                    .iter()
                    .map(|c| egraph.analysis.constant(&egraph[*c].data))
                    .collect();
                let ty = kiln_ir::infer::infer_node(op, &types, &consts)
                    .ok()
                    .and_then(|t| t.into_iter().next());
                ClassData {
                    ty,
                    konst: None,
                    scalar: None,
                    uses: 0,
                }
            }
        }
    }

    fn merge(&mut self, to: &mut ClassData, from: ClassData) -> DidMerge {
        let mut changed_to = false;
        if to.ty.is_none() && from.ty.is_some() {
            to.ty = from.ty.clone();
            changed_to = true;
        }
        if to.konst.is_none() && from.konst.is_some() {
            to.konst = from.konst;
            to.scalar = from.scalar;
            changed_to = true;
        }
        if from.uses > 0 {
            to.uses += from.uses;
            changed_to = true;
        }
        let changed_from = (from.ty.is_none() && to.ty.is_some())
            || (from.konst.is_none() && to.konst.is_some())
            || to.uses != from.uses;
        DidMerge(changed_to, changed_from)
    }

    fn modify(egraph: &mut EG, id: Id) {
        if egraph[id].data.konst.is_some() {
            return;
        }
        let Some(ty) = egraph[id].data.ty.clone() else {
            return;
        };
        let Some(n) = ty.shape.num_elements() else {
            return;
        };
        if ty.dtype.is_quant() || n as usize > egraph.analysis.fold_limit {
            return;
        }
        let candidate = egraph[id].nodes.iter().find_map(|node| {
            let (op, children) = node.op()?;
            let mut inputs = Vec::with_capacity(children.len());
            for c in children {
                if egraph[*c].nodes.iter().any(|n| matches!(n, ENode::Absent)) {
                    inputs.push(None);
                    continue;
                }
                let t = egraph.analysis.constant(&egraph[*c].data)?;
                if t.dtype().is_quant() {
                    return None;
                }
                inputs.push(Some(t.clone()));
            }
            Some((op.clone(), inputs))
        });
        let Some((op, inputs)) = candidate else {
            return;
        };
        let refs: Vec<Option<&Tensor>> = inputs.iter().map(|t| t.as_ref()).collect();
        let Ok(mut out) = kiln_runtime::cpu::eval_node(&op, &refs, 1) else {
            return;
        };
        let Some(tensor) = out.drain(..).next() else {
            return;
        };
        let leaf = egraph.analysis.add_leaf(Leaf {
            value: None,
            tensor: Some(tensor),
            ty: Some(ty),
        });
        egraph.analysis.folded += 1;
        let added = egraph.add(ENode::Leaf(leaf));
        egraph.union(id, added);
    }
}
