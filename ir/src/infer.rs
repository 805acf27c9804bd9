//! Shape and dtype inference, per op.
//!
//! `infer_node` is the single source of truth for the static type of every
//! op's results; `infer_graph` applies it to a whole graph in order.

use crate::{Graph, Op, Tensor, ValueType};

/// Why a node's result types could not be inferred.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
#[error("{op}: {message}")]
pub struct InferError {
    /// The op's name.
    pub op: String,
    /// What was wrong (wrong operand count, incompatible shapes, bad attribute, ...).
    pub message: String,
}

/// Infers the result types of one node.
///
/// `inputs[i]` is the type of operand i (`None` when the optional operand is
/// absent); `consts[i]` its value when known at compile time (shape tensors,
/// axes, pads). Returns one type per output the op produces.
pub fn infer_node(op: &Op, inputs: &[Option<&ValueType>], consts: &[Option<&Tensor>]) -> Result<Vec<ValueType>, InferError> {
    let _ = (inputs, consts);
    Err(InferError {
        op: op.name().to_string(),
        message: "shape inference is not implemented for this op".into(),
    })
}

/// Re-infers the type of every node output in graph order, overwriting the
/// stored types. Errors name the node.
pub fn infer_graph(g: &mut Graph) -> Result<(), GraphInferError> {
    for i in 0..g.nodes.len() {
        let node = &g.nodes[i];
        let tys: Vec<Option<ValueType>> = node.inputs.iter().map(|v| v.map(|v| g.value(v).ty.clone())).collect();
        let ty_refs: Vec<Option<&ValueType>> = tys.iter().map(|t| t.as_ref()).collect();
        let consts: Vec<Option<&Tensor>> = node.inputs.iter().map(|v| v.and_then(|v| g.constant(v))).collect();
        let out = infer_node(&node.op, &ty_refs, &consts).map_err(|e| GraphInferError {
            node: node.describe(g),
            source: e,
        })?;
        let outputs = node.outputs.clone();
        for (o, ty) in outputs.into_iter().zip(out) {
            g.value_mut(o).ty = ty;
        }
    }
    Ok(())
}

/// An inference error with the node it happened at.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
#[error("node {node}: {source}")]
pub struct GraphInferError {
    /// The node, described.
    pub node: String,
    /// The op-level error.
    pub source: InferError,
}
