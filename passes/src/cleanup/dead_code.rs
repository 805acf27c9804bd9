//! Removes nodes and constants that no graph output depends on.

use crate::{Changed, Pass, PassCx, PassError};
use kiln_ir::Graph;

/// Dead-code elimination: every op is free of side effects, so a node whose
/// results reach no graph output goes, and so does an unused constant.
pub struct DeadCode;

impl Pass for DeadCode {
    fn name(&self) -> &'static str {
        "dead-code"
    }

    fn run(&mut self, g: &mut Graph, cx: &mut PassCx) -> Result<Changed, PassError> {
        let mut live = vec![false; g.num_values()];
        for &o in &g.outputs {
            live[o.index()] = true;
        }
        let mut keep = vec![false; g.nodes.len()];
        for (i, n) in g.nodes.iter().enumerate().rev() {
            if n.outputs.iter().any(|o| live[o.index()]) {
                keep[i] = true;
                for v in n.present_inputs() {
                    live[v.index()] = true;
                }
            }
        }
        let nodes_before = g.nodes.len();
        let mut i = 0;
        g.nodes.retain(|_| {
            i += 1;
            keep[i - 1]
        });
        let consts_before = g.constants.len();
        g.constants.retain(|v, _| live[v.index()]);
        let removed_nodes = nodes_before - g.nodes.len();
        let removed_consts = consts_before - g.constants.len();
        cx.count("nodes_removed", removed_nodes as i64);
        cx.count("constants_removed", removed_consts as i64);
        let values_before = g.num_values();
        g.compact();
        Ok(Changed::from(
            removed_nodes + removed_consts > 0 || g.num_values() != values_before,
        ))
    }
}
