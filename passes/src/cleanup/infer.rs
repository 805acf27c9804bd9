//! Re-infers every value's type after rewrites.

use crate::{Changed, Pass, PassCx, PassError};
use kiln_ir::Graph;

/// Runs shape and dtype inference over the whole graph.
pub struct InferShapes;

impl Pass for InferShapes {
    fn name(&self) -> &'static str {
        "infer-shapes"
    }

    fn run(&mut self, g: &mut Graph, _cx: &mut PassCx) -> Result<Changed, PassError> {
        let before: Vec<_> = g.values().iter().map(|v| v.ty.clone()).collect();
        kiln_ir::infer::infer_graph(g).map_err(|source| PassError::Infer {
            pass: self.name().to_string(),
            source,
        })?;
        Ok(Changed::from(
            g.values().iter().zip(&before).any(|(v, b)| &v.ty != b),
        ))
    }
}
