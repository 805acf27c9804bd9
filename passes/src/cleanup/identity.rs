//! Removes ops that pass their input through unchanged.

use crate::{Changed, Pass, PassCx, PassError};
use kiln_ir::{Graph, Op};

/// Removes `Identity`, `Cast` to the dtype its operand already has, and
/// inference-mode `Dropout` whose mask is unused.
///
/// A removed node's result keeps its name when it is a graph output: the
/// operand takes the name over, so callers see the same output names.
pub struct EliminateIdentity;

impl Pass for EliminateIdentity {
    fn name(&self) -> &'static str {
        "eliminate-identity"
    }

    fn run(&mut self, g: &mut Graph, cx: &mut PassCx) -> Result<Changed, PassError> {
        let mut removed = 0;
        let mut i = 0;
        while i < g.nodes.len() {
            let n = &g.nodes[i];
            let passthrough = match n.op {
                Op::Identity => true,
                Op::Cast { to, .. } => n
                    .inputs
                    .first()
                    .copied()
                    .flatten()
                    .is_some_and(|x| g.value(x).ty.dtype == to),
                Op::Dropout => n.outputs.len() == 1 || g.use_counts()[n.outputs[1].index()] == 0,
                _ => false,
            };
            let (Some(Some(src)), Some(&dst)) = (n.inputs.first().copied(), n.outputs.first())
            else {
                i += 1;
                continue;
            };
            if !passthrough {
                i += 1;
                continue;
            }
            let dst_is_output = g.outputs.contains(&dst);
            let src_is_boundary = g.inputs.contains(&src) || g.outputs.contains(&src);
            if dst_is_output && src_is_boundary {
                // Both names are part of the interface; the copy must stay.
                i += 1;
                continue;
            }
            if dst_is_output {
                let name = g.value(dst).name.clone();
                g.value_mut(dst).name = format!("{name}.kiln-removed");
                g.value_mut(src).name = name;
            }
            g.replace_uses(dst, src);
            g.nodes.remove(i);
            removed += 1;
        }
        cx.count("removed", removed);
        if removed > 0 {
            g.compact();
        }
        Ok(Changed::from(removed > 0))
    }
}
