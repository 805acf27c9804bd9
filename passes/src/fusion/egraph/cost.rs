//! The cost model: each e-node's estimated time on the target, from the
//! device profile (kernel launch, bytes moved, arithmetic).

use super::analysis::EG;
use super::lang::ENode;
use egg::Id;
use kiln_ir::profile::DeviceProfile;
use kiln_ir::{Dim, Op, ValueType};
use std::collections::BTreeMap;

/// Prices e-nodes for one target.
#[derive(Clone, Debug)]
pub(crate) struct CostModel {
    profile: DeviceProfile,
    bindings: BTreeMap<String, u64>,
    default_dim: u64,
}

/// Ops that relabel a buffer's shape without moving data.
pub(crate) fn is_view(op: &Op) -> bool {
    matches!(
        op,
        Op::Reshape { .. }
            | Op::Flatten { .. }
            | Op::Squeeze { .. }
            | Op::Unsqueeze { .. }
            | Op::Identity
            | Op::Dropout
    )
}

impl CostModel {
    /// A model for `profile`, resolving symbolic dimensions through
    /// `bindings` and taking `default_dim` for any other unknown size.
    pub(crate) fn new(
        profile: DeviceProfile,
        bindings: BTreeMap<String, u64>,
        default_dim: u64,
    ) -> Self {
        CostModel {
            profile,
            bindings,
            default_dim,
        }
    }

    fn dims(&self, ty: &ValueType) -> Vec<u64> {
        ty.shape
            .0
            .iter()
            .map(|d| match d {
                Dim::Fixed(n) => *n,
                Dim::Sym(s) => self.bindings.get(s).copied().unwrap_or(self.default_dim),
                Dim::Unknown => self.default_dim,
            })
            .collect()
    }

    fn bytes(&self, ty: &ValueType) -> f64 {
        let dims: Vec<usize> = self.dims(ty).iter().map(|&d| d as usize).collect();
        ty.dtype.byte_len(&dims).unwrap_or(0) as f64
    }

    /// Estimated nanoseconds of the e-node `node` of class `class`.
    pub(crate) fn node_ns(&self, eg: &EG, class: Id, node: &ENode) -> f64 {
        let ENode::Op(op, children) = node else {
            return 0.0;
        };
        if is_view(op) {
            return self.profile.view_ns;
        }
        // An op on constants only is computed once at compile time
        // (fold-constants runs after fusion), not per run; the token cost
        // makes an already-folded constant win the tie.
        if !children.is_empty() && children.iter().all(|c| eg[*c].data.konst.is_some()) {
            return 1e-3;
        }
        let mut bytes = 0.0;
        let mut inputs = Vec::with_capacity(children.len());
        for c in children {
            match &eg[*c].data.ty {
                Some(ty) => {
                    bytes += self.bytes(ty);
                    inputs.push(Some((ty.dtype.size_of(), self.dims(ty))));
                }
                None => inputs.push(None),
            }
        }
        let mut outputs = Vec::new();
        if let Some(ty) = &eg[class].data.ty {
            bytes += self.bytes(ty);
            outputs.push((ty.dtype.size_of(), self.dims(ty)));
        }
        let flops = kiln_ir::cost::node_cost(op, &inputs, &outputs).flops as f64;
        self.profile.kernel_ns(bytes, flops)
    }
}
