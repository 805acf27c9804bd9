//! Model importers for Kiln.
//!
//! Each frontend turns a model file into a [`Model`]: an IR graph plus the
//! files a deployed model needs beside it (its tokenizer, its config).
//! [`onnx`] reads ONNX files; [`safetensors`] reads Hugging Face folders and
//! [`gguf_llama`] llama.cpp's GGUF files, both through the architecture
//! templates of [`arch`]; [`tokenizer`] rebuilds their tokenizers. Importers
//! normalise source-format quirks so the IR has one meaning per op, and
//! report every problem as an [`ImportError`] naming the file and, where
//! relevant, the node or tensor.

pub mod arch;
pub mod error;
pub mod gguf;
pub mod gguf_llama;
pub mod onnx;
pub mod safetensors;
pub mod tokenizer;

pub use error::{ImportError, NodeRef};

use kiln_ir::Graph;
use std::collections::BTreeMap;
use std::path::Path;

/// An imported model: the graph and the named files that travel with it
/// (`tokenizer.json`, `config.json`), which bundles carry as assets.
#[derive(Clone, Debug, Default)]
pub struct Model {
    /// The graph.
    pub graph: Graph,
    /// Named files, by name.
    pub assets: BTreeMap<String, Vec<u8>>,
}

impl Model {
    /// A model with no assets.
    pub fn from_graph(graph: Graph) -> Self {
        Model {
            graph,
            assets: BTreeMap::new(),
        }
    }
}

/// Loads a model: a `.onnx` or `.gguf` file, or a Hugging Face folder
/// (`config.json` with `*.safetensors` shards; a `.safetensors` file or a
/// `config.json` inside such a folder names the folder too).
pub fn load_model(path: &Path) -> Result<Model, ImportError> {
    if path.is_dir() {
        return safetensors::import_folder(path);
    }
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let folder = || {
        path.parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
    };
    match ext.as_deref() {
        Some("onnx") => onnx::import(path).map(Model::from_graph),
        Some("gguf") => gguf_llama::import(path),
        Some("safetensors") => safetensors::import_folder(folder()),
        _ if path.file_name().is_some_and(|n| n == "config.json") => {
            safetensors::import_folder(folder())
        }
        _ => Err(ImportError::UnsupportedFormat {
            path: path.to_path_buf(),
        }),
    }
}
