//! Kiln's graph IR.
//!
//! A [`Graph`] is plain data: values with static types ([`ValueType`]),
//! nodes holding a closed [`Op`] enum with typed attributes, and constants
//! ([`Tensor`]) held apart from the structure so they can be memory-mapped.
//! The graph prints to and parses from a stable text form ([`text`]).

pub mod cost;
pub mod dtype;
pub mod fused;
pub mod graph;
pub mod infer;
pub mod op;
pub mod profile;
pub mod quant;
pub mod shape;
pub mod tensor;
pub mod text;
pub mod verify;

pub use dtype::DType;
pub use fused::{BinaryFn, Instr, Program, UnaryFn};
pub use graph::{Graph, Node, ValueId, ValueInfo};
pub use op::*;
pub use shape::{Dim, Shape, ValueType};
pub use tensor::{AlignedBytes, Element, Tensor, TensorBytes, TensorError};
