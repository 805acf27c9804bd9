//! The importer's error type.
//!
//! Every message starts with the model file it came from, and node-level
//! errors name the node, its op type, its domain (when not the default one)
//! and the opset the node was read with, so a user can find the culprit in
//! Netron or `onnx.helper.printable_graph` without a debugger.

use std::fmt;
use std::path::PathBuf;

/// Identifies one node of the source model in error messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeRef {
    /// The node's name; may be empty in the model.
    pub name: String,
    /// Its first output, used to identify unnamed nodes.
    pub first_output: String,
    /// The op type (`Conv`, `LSTM`, ...).
    pub op_type: String,
    /// The domain; empty for the default ONNX domain.
    pub domain: String,
    /// The opset version of the node's domain the model imports.
    pub opset: i64,
}

impl fmt::Display for NodeRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.name.is_empty() {
            write!(f, "'' (output '{}')", self.first_output)?;
        } else {
            write!(f, "'{}'", self.name)?;
        }
        if self.domain.is_empty() || self.domain == "ai.onnx" {
            write!(f, " ({}, opset {})", self.op_type, self.opset)
        } else {
            write!(
                f,
                " ({}, domain {}, opset {})",
                self.op_type, self.domain, self.opset
            )
        }
    }
}

/// `"file: "`, or nothing when the caller gave no file label.
fn at(file: &str) -> String {
    if file.is_empty() {
        String::new()
    } else {
        format!("{file}: ")
    }
}

/// Why a model could not be imported.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The model file could not be opened or mapped.
    #[error("{}: cannot read model file: {source}", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The file extension names no format this crate reads.
    #[error(
        "{}: unsupported model format (expected a .onnx or .gguf file, or a folder with config.json and *.safetensors)",
        .path.display()
    )]
    UnsupportedFormat {
        /// The file.
        path: PathBuf,
    },
    /// The bytes are not a valid protobuf `ModelProto` (truncated or not ONNX).
    #[error("{file}: not a valid ONNX model (protobuf decoding failed: {source})")]
    Decode {
        /// The file.
        file: String,
        /// The decoder's error.
        #[source]
        source: prost::DecodeError,
    },
    /// The model is structurally broken (no graph, undefined or redefined values, cycles).
    #[error("{}{message}", at(.file))]
    InvalidModel {
        /// The file.
        file: String,
        /// What is wrong.
        message: String,
    },
    /// The model imports an opset version this importer does not know.
    #[error("{}unsupported opset: domain '{domain}' version {version} (supported: {supported})", at(.file))]
    UnsupportedOpset {
        /// The file.
        file: String,
        /// The domain (`ai.onnx` for the default one).
        domain: String,
        /// The version the model imports.
        version: i64,
        /// The supported range, in words.
        supported: String,
    },
    /// A node uses an operator (or domain) with no Kiln IR counterpart.
    #[error("{}node {node}: unsupported operator", at(.file))]
    UnsupportedOp {
        /// The file.
        file: String,
        /// The node.
        node: Box<NodeRef>,
    },
    /// A node uses a supported operator in a way the IR cannot express.
    #[error("{}node {node}: unsupported: {feature}", at(.file))]
    UnsupportedFeature {
        /// The file.
        file: String,
        /// The node.
        node: Box<NodeRef>,
        /// What is not supported.
        feature: String,
    },
    /// A node attribute is missing, of the wrong type, or has a bad value.
    #[error("{}node {node}: attribute '{attribute}': {problem}", at(.file))]
    Attribute {
        /// The file.
        file: String,
        /// The node.
        node: Box<NodeRef>,
        /// The attribute name.
        attribute: String,
        /// What is wrong with it.
        problem: String,
    },
    /// A node has the wrong number of inputs or outputs, or uses an undefined value.
    #[error("{}node {node}: {problem}", at(.file))]
    NodeArity {
        /// The file.
        file: String,
        /// The node.
        node: Box<NodeRef>,
        /// What is wrong.
        problem: String,
    },
    /// A value's declared type cannot be represented (unknown rank, non-tensor type, ...).
    #[error("{}value '{value}': {problem}", at(.file))]
    ValueType {
        /// The file.
        file: String,
        /// The value name.
        value: String,
        /// What is wrong.
        problem: String,
    },
    /// A tensor's element type has no Kiln counterpart.
    #[error("{}tensor '{tensor}': unsupported data type {data_type}", at(.file))]
    UnsupportedDType {
        /// The file.
        file: String,
        /// The tensor's name.
        tensor: String,
        /// The ONNX data type name.
        data_type: String,
    },
    /// A tensor's stored data is inconsistent (wrong length, negative dims, ...).
    #[error("{}tensor '{tensor}': {problem}", at(.file))]
    BadTensor {
        /// The file.
        file: String,
        /// The tensor's name.
        tensor: String,
        /// What is wrong.
        problem: String,
    },
    /// A tensor's external data file could not be read.
    #[error("{}tensor '{tensor}': cannot read external data file {}: {source}", at(.file), .path.display())]
    ExternalData {
        /// The file.
        file: String,
        /// The tensor's name.
        tensor: String,
        /// The external data file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Shape inference failed on the imported graph.
    #[error("{}shape inference failed: {source}", at(.file))]
    Infer {
        /// The file.
        file: String,
        /// The failing node and why.
        #[source]
        source: kiln_ir::infer::GraphInferError,
    },
    /// The imported graph broke an IR invariant (an importer bug or a malformed model).
    #[error("{}imported graph is malformed: {source}", at(.file))]
    Verify {
        /// The file.
        file: String,
        /// The broken invariant.
        #[source]
        source: kiln_ir::verify::VerifyError,
    },
    /// A GGUF file could not be read (the message names the file).
    #[error(transparent)]
    Gguf(#[from] crate::gguf::GgufError),
    /// A tokenizer could not be built or loaded.
    #[error(transparent)]
    Tokenizer(#[from] crate::tokenizer::TokenizerError),
}
