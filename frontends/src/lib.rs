//! Model importers for Kiln.
//!
//! Each frontend turns a model file into a [`kiln_ir::Graph`]: the ONNX
//! importer ([`onnx`]) today; safetensors and GGUF will follow. Importers
//! normalise source-format quirks (opset differences, legacy attributes)
//! so the IR has one meaning per op, and report every problem as an
//! [`ImportError`] naming the file and, where relevant, the node.

pub mod error;
pub mod onnx;

pub use error::{ImportError, NodeRef};

use kiln_ir::Graph;
use std::path::Path;

/// Loads a model, choosing the importer from the file extension.
///
/// Only `.onnx` is supported for now; other extensions are an
/// [`ImportError::UnsupportedFormat`].
pub fn load_model(path: &Path) -> Result<Graph, ImportError> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match ext.as_deref() {
        Some("onnx") => onnx::import(path),
        _ => Err(ImportError::UnsupportedFormat {
            path: path.to_path_buf(),
        }),
    }
}
