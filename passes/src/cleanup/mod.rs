//! Cleanup passes: constant folding, identity elimination, dead code, shape inference.

mod dead_code;
mod fold;
mod identity;
mod infer;

pub use dead_code::DeadCode;
pub use fold::FoldConstants;
pub use identity::EliminateIdentity;
pub use infer::InferShapes;
