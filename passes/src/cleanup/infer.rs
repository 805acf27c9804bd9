//! Re-infers every value's type after rewrites.

use crate::{Changed, Pass, PassCx, PassError};
use kiln_ir::infer::GraphInferError;
use kiln_ir::{Dim, Graph, Node, Shape};

/// Runs shape and dtype inference over the whole graph, node by node.
///
/// Inference is sound but sees only constants, while earlier passes may
/// have proved more (constant folding knows which shape elements are another
/// value's symbolic dimension). So a dimension that inference leaves
/// `Unknown` keeps what the graph already said about it; a pass that changes
/// a value's shape must set the new type itself.
pub struct InferShapes;

impl Pass for InferShapes {
    fn name(&self) -> &'static str {
        "infer-shapes"
    }

    fn run(&mut self, g: &mut Graph, _cx: &mut PassCx) -> Result<Changed, PassError> {
        let mut changed = false;
        let nodes = std::mem::take(&mut g.nodes);
        let result = nodes.iter().try_for_each(|node| {
            changed |= infer_in_place(g, node, true)?;
            Ok(())
        });
        g.nodes = nodes;
        result.map_err(|source| PassError::Infer {
            pass: self.name().to_string(),
            source,
        })?;
        Ok(Changed::from(changed))
    }
}

/// Infers one node's result types from its operands' current types and
/// constants and stores them; with `keep_known`, a dimension inference
/// leaves unknown keeps its previous value. Returns whether a type changed.
pub(crate) fn infer_in_place(
    g: &mut Graph,
    node: &Node,
    keep_known: bool,
) -> Result<bool, GraphInferError> {
    let out = kiln_ir::infer::infer_node_in(g, node)?;
    let mut changed = false;
    for (&o, mut ty) in node.outputs.iter().zip(out) {
        let old = &g.value(o).ty;
        if keep_known && ty.dtype == old.dtype && ty.shape.rank() == old.shape.rank() {
            ty.shape = Shape(
                ty.shape
                    .0
                    .iter()
                    .zip(&old.shape.0)
                    .map(|(new, old)| {
                        if *new == Dim::Unknown {
                            old.clone()
                        } else {
                            new.clone()
                        }
                    })
                    .collect(),
            );
        }
        changed |= ty != *old;
        g.value_mut(o).ty = ty;
    }
    Ok(changed)
}
