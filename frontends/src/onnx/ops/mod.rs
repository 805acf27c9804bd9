//! ONNX operators → IR ops, one file per op family, one dispatch table.
//!
//! A handler receives the node with its inputs resolved and appends one or
//! more IR nodes to the [`Builder`]. Handlers normalise opset differences so
//! that every IR op has a single meaning (see `kiln_ir::Op`).

mod attention;
mod conv_pool;
mod elementwise;
mod linalg;
mod norm;
mod reduce;
mod shape;

use super::attrs::Attrs;
use super::builder::Builder;
use crate::error::{ImportError, NodeRef};
use kiln_ir::{Op, Tensor, ValueId};
use std::collections::HashMap;
use std::sync::OnceLock;
use tract_onnx::pb::NodeProto;

/// One node being imported, with its inputs resolved to values.
pub(crate) struct NodeCtx<'a> {
    /// The source node.
    pub proto: &'a NodeProto,
    /// The node, for messages.
    pub node: &'a NodeRef,
    /// Opset version of the node's domain.
    pub opset: i64,
    /// File label, for messages.
    pub file: &'a str,
    /// Attribute access.
    pub attrs: Attrs<'a>,
    /// Resolved inputs; `None` for absent optional inputs; trailing absents trimmed.
    pub inputs: Vec<Option<ValueId>>,
    /// Output names; trailing empty names (absent optional outputs) trimmed.
    pub outputs: Vec<String>,
}

impl NodeCtx<'_> {
    /// The op type.
    pub(crate) fn op_type(&self) -> &str {
        &self.proto.op_type
    }

    /// An "unsupported feature" error for this node.
    pub(crate) fn unsupported(&self, feature: impl Into<String>) -> ImportError {
        ImportError::UnsupportedFeature {
            file: self.file.to_string(),
            node: Box::new(self.node.clone()),
            feature: feature.into(),
        }
    }

    /// An arity / structure error for this node.
    pub(crate) fn arity(&self, problem: impl Into<String>) -> ImportError {
        ImportError::NodeArity {
            file: self.file.to_string(),
            node: Box::new(self.node.clone()),
            problem: problem.into(),
        }
    }

    /// Input `i`, which must be present.
    pub(crate) fn input(&self, i: usize) -> Result<ValueId, ImportError> {
        self.inputs
            .get(i)
            .copied()
            .flatten()
            .ok_or_else(|| self.arity(format!("required input {i} is missing")))
    }

    /// Input `i` when present.
    pub(crate) fn opt_input(&self, i: usize) -> Option<ValueId> {
        self.inputs.get(i).copied().flatten()
    }

    /// Checks the number of inputs (counting absent optional ones up to the last present one).
    pub(crate) fn expect_inputs(&self, min: usize, max: usize) -> Result<(), ImportError> {
        let n = self.inputs.len();
        if n < min || n > max {
            let want = if min == max {
                format!("{min}")
            } else if max == usize::MAX {
                format!("at least {min}")
            } else {
                format!("{min} to {max}")
            };
            return Err(self.arity(format!("expected {want} inputs, found {n}")));
        }
        for i in 0..min {
            self.input(i)?;
        }
        Ok(())
    }

    /// Checks the number of requested outputs.
    pub(crate) fn expect_outputs(&self, min: usize, max: usize) -> Result<(), ImportError> {
        let n = self.outputs.len();
        if n < min || n > max {
            let want = if min == max {
                format!("{min}")
            } else {
                format!("{min} to {max}")
            };
            return Err(self.arity(format!("expected {want} outputs, found {n}")));
        }
        Ok(())
    }

    /// Output names that must be requested exactly: `allowed` outputs at most,
    /// with an error naming `what` for any later one that is requested.
    pub(crate) fn only_outputs(&self, allowed: usize, what: &str) -> Result<(), ImportError> {
        if self.outputs.iter().skip(allowed).any(|o| !o.is_empty()) {
            return Err(self.unsupported(what.to_string()));
        }
        Ok(())
    }

    /// Emits `op` on the node's own inputs and outputs.
    pub(crate) fn emit(&self, b: &mut Builder, op: Op) -> Vec<ValueId> {
        b.emit(&self.proto.name, op, self.inputs.clone(), &self.outputs)
    }

    /// Emits `op` with other inputs onto the node's outputs.
    pub(crate) fn emit_with(
        &self,
        b: &mut Builder,
        op: Op,
        inputs: Vec<Option<ValueId>>,
    ) -> Vec<ValueId> {
        b.emit(&self.proto.name, op, inputs, &self.outputs)
    }

    /// The constant behind input `i`, when the input is a compile-time constant.
    pub(crate) fn const_input<'b>(&self, b: &'b Builder, i: usize) -> Option<&'b Tensor> {
        self.opt_input(i).and_then(|v| b.g.constant(v))
    }

    /// A generated-name hint tied to this node's first output.
    pub(crate) fn hint(&self, what: &str) -> String {
        format!(
            "{}.{what}",
            self.outputs.first().map(String::as_str).unwrap_or("node")
        )
    }
}

/// An op handler.
pub(crate) type Handler = fn(&mut Builder, &NodeCtx) -> Result<(), ImportError>;

/// The dispatch table: ONNX op type (default domain) → handler.
fn table() -> &'static HashMap<&'static str, Handler> {
    static TABLE: OnceLock<HashMap<&'static str, Handler>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut m: HashMap<&'static str, Handler> = HashMap::new();
        let mut add = |names: &[&'static str], h: Handler| {
            for n in names {
                m.insert(n, h);
            }
        };
        add(elementwise::UNARY, elementwise::unary);
        add(elementwise::ACTIVATIONS, elementwise::activation);
        add(elementwise::BINARY, elementwise::binary);
        add(elementwise::VARIADIC, elementwise::variadic);
        add(&["Clip"], elementwise::clip);
        add(&["Cast"], elementwise::cast);
        add(&["CastLike"], elementwise::cast_like);
        add(&["Identity"], elementwise::identity);
        add(&["Dropout"], elementwise::dropout);
        add(&["MatMul"], linalg::matmul);
        add(&["Gemm"], linalg::gemm);
        add(&["Einsum"], linalg::einsum);
        add(&["Conv", "ConvTranspose"], conv_pool::conv);
        add(&["MaxPool", "AveragePool"], conv_pool::pool);
        add(
            &["GlobalAveragePool", "GlobalMaxPool"],
            conv_pool::global_pool,
        );
        add(&["BatchNormalization"], norm::batch_norm);
        add(&["InstanceNormalization"], norm::instance_norm);
        add(&["LayerNormalization"], norm::layer_norm);
        add(&["RMSNormalization"], norm::rms_norm);
        add(&["GroupNormalization"], norm::group_norm);
        add(&["LpNormalization"], norm::lp_norm);
        add(&["LRN"], norm::lrn);
        add(&["MeanVarianceNormalization"], norm::mvn);
        add(&["Softmax", "LogSoftmax", "Hardmax"], norm::softmax);
        add(reduce::REDUCE, reduce::reduce);
        add(&["ArgMax", "ArgMin"], reduce::arg_reduce);
        add(&["CumSum", "CumProd"], reduce::cumulative);
        add(&["TopK"], reduce::top_k);
        add(&["Constant"], shape::constant);
        add(&["Reshape"], shape::reshape);
        add(&["Shape"], shape::shape);
        add(&["Size"], shape::size);
        add(&["Flatten"], shape::flatten);
        add(&["Squeeze", "Unsqueeze"], shape::squeeze);
        add(&["Transpose"], shape::transpose);
        add(&["Concat"], shape::concat);
        add(&["Split"], shape::split);
        add(&["Slice"], shape::slice);
        add(&["Gather", "GatherElements", "GatherND"], shape::gather);
        add(&["Scatter", "ScatterElements", "ScatterND"], shape::scatter);
        add(&["Expand", "Tile", "Range", "NonZero"], shape::plain);
        add(&["Pad"], shape::pad);
        add(&["ConstantOfShape"], shape::constant_of_shape);
        add(&["Trilu"], shape::trilu);
        add(&["OneHot"], shape::one_hot);
        add(&["EyeLike"], shape::eye_like);
        add(&["Compress"], shape::compress);
        add(&["DepthToSpace", "SpaceToDepth"], shape::depth_space);
        add(&["Resize"], shape::resize);
        add(&["Upsample"], shape::upsample);
        add(&["Attention"], attention::attention);
        add(&["RotaryEmbedding"], attention::rotary_embedding);
        m
    })
}

/// The handler for a default-domain op type.
pub(crate) fn handler(op_type: &str) -> Option<Handler> {
    table().get(op_type).copied()
}

/// Every default-domain ONNX op type the importer maps, sorted.
pub fn supported_ops() -> Vec<&'static str> {
    let mut v: Vec<&'static str> = table().keys().copied().collect();
    v.sort_unstable();
    v
}
