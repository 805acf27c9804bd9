//! The e-graph's language: IR ops over e-classes, plus leaves for values the
//! region does not model.

use egg::{Id, Language};
use kiln_ir::Op;

/// One e-node.
///
/// Ops carry their IR attributes as typed data (`kiln_ir::Op`), so a rewrite
/// reads and writes attributes exactly as the rest of the compiler does and
/// the bridge back to the graph needs no translation.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum ENode {
    /// A value from outside the rewritten region: a graph input, a constant
    /// (original or folded), or a result of a node the e-graph does not
    /// model. Indexes `FusionAnalysis::leaves`.
    Leaf(u32),
    /// An absent optional operand.
    Absent,
    /// An op applied to e-classes, operands in the op's order.
    Op(Op, Vec<Id>),
}

impl ENode {
    /// The op, when this is an op node.
    pub(crate) fn op(&self) -> Option<(&Op, &[Id])> {
        match self {
            ENode::Op(op, ch) => Some((op, ch)),
            _ => None,
        }
    }
}

impl Language for ENode {
    type Discriminant = std::mem::Discriminant<ENode>;

    fn discriminant(&self) -> Self::Discriminant {
        std::mem::discriminant(self)
    }

    fn matches(&self, other: &Self) -> bool {
        match (self, other) {
            (ENode::Leaf(a), ENode::Leaf(b)) => a == b,
            (ENode::Absent, ENode::Absent) => true,
            (ENode::Op(a, ca), ENode::Op(b, cb)) => a == b && ca.len() == cb.len(),
            _ => false,
        }
    }

    fn children(&self) -> &[Id] {
        match self {
            ENode::Op(_, ch) => ch,
            _ => &[],
        }
    }

    fn children_mut(&mut self) -> &mut [Id] {
        match self {
            ENode::Op(_, ch) => ch,
            _ => &mut [],
        }
    }
}
