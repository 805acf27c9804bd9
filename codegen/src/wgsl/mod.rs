//! WGSL kernels, one module per op family; each fills its template from
//! `codegen/templates/wgsl/`.
//!
//! Every family module has the same shape: a serialisable `Spec` (what the
//! node needs from the kernel: dtypes, ranks, attributes), `Spec::select`
//! (whether the family has a kernel for a node on a device), `emit` (the
//! WGSL for a schedule), `bound_inputs` and `launch` (the run-time
//! `params` and grid from concrete shapes).

pub mod attention;
pub mod conv;
pub mod elementwise;
pub mod gather;
pub mod matmul;
pub mod movement;
pub mod norm;
pub mod program;
pub mod reduce;

use crate::{KernelSpec, NodeCtx};

/// The first family with a kernel for the node, if any.
pub fn select(cx: &NodeCtx) -> Option<KernelSpec> {
    if let Some(s) = matmul::Spec::select(cx) {
        return Some(KernelSpec::MatMul(s));
    }
    if let Some(s) = elementwise::Spec::select(cx) {
        return Some(KernelSpec::Elementwise(s));
    }
    if let Some(s) = norm::Spec::select(cx) {
        return Some(KernelSpec::Norm(s));
    }
    if let Some(s) = reduce::Spec::select(cx) {
        return Some(KernelSpec::Reduce(s));
    }
    if let Some(s) = attention::Spec::select(cx) {
        return Some(KernelSpec::Attention(s));
    }
    if let Some(s) = gather::Spec::select(cx) {
        return Some(KernelSpec::Gather(s));
    }
    if let Some(s) = conv::Spec::select(cx) {
        return Some(KernelSpec::Conv(s));
    }
    if let Some(s) = movement::Spec::select(cx) {
        return Some(KernelSpec::Movement(s));
    }
    None
}
