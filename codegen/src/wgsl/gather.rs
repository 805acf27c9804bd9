//! gather kernels (not written yet: every node of this family runs on the host).

use crate::{CodegenError, Kernel, Launch, NodeCtx, Schedule};
use serde::{Deserialize, Serialize};

/// What a gather kernel needs from its node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Spec {}

impl Spec {
    /// The kernel for the node, if this family has one.
    pub fn select(_cx: &NodeCtx) -> Option<Spec> {
        None
    }

    /// The WGSL for `schedule`.
    pub fn emit(&self, _schedule: &Schedule) -> Result<Kernel, CodegenError> {
        Err(CodegenError::Template("gather: no kernel".into()))
    }

    /// Node operands bound as inputs.
    pub fn bound_inputs(&self) -> Vec<usize> {
        Vec::new()
    }

    /// Params and grid for concrete shapes.
    pub fn launch(
        &self,
        _inputs: &[Option<&[usize]>],
        _outputs: &[&[usize]],
        _schedule: &Schedule,
    ) -> Result<Launch, CodegenError> {
        Err(CodegenError::Template("gather: no kernel".into()))
    }
}
