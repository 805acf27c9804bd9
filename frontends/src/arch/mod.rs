//! Model architectures as data-driven templates.
//!
//! A template turns a Hugging Face `config.json` plus a [`WeightSource`] into
//! an IR graph. Each architecture family is one module with one
//! [`Architecture`] entry in [`ARCHITECTURES`]; adding GPT-2 or Phi is a new
//! file and one line here. The same entry lists the weights the graph holds
//! and their layout ([`Architecture::weights`]), which is what lets
//! `kiln export` write a Hugging Face folder back out.

pub mod bert;
pub mod builder;
pub mod config;
pub mod llama;
pub mod weights;

pub use config::{HfConfig, Pooling, PoolingMode};
pub use weights::WeightSource;

use crate::ImportError;
use kiln_ir::Graph;

/// Graph metadata key naming the architecture template (`llama`, `bert`).
pub const META_ARCHITECTURE: &str = "kiln.architecture";
/// Graph metadata key naming what the graph computes (`causal-lm`, `sentence-embedding`).
pub const META_TASK: &str = "kiln.task";

/// How a weight is kept in the graph relative to its Hugging Face tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// Same dims and order.
    AsIs,
    /// A linear weight `[out, in]` kept input-major as `[in, out]`.
    Transposed,
}

/// One weight of a template: its Hugging Face name and how the graph keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WeightSpec {
    /// Hugging Face tensor name, also the graph constant's name.
    pub name: String,
    /// Layout in the graph.
    pub layout: Layout,
}

impl WeightSpec {
    /// A spec.
    pub fn new(name: &str, layout: Layout) -> Self {
        WeightSpec {
            name: name.to_string(),
            layout,
        }
    }
}

/// Builds a template's graph from a config and weights.
pub type BuildFn = fn(&HfConfig, &mut dyn WeightSource) -> Result<Graph, ImportError>;

/// Lists a template's weights; the closure says whether an optional weight
/// (a bias, an untied head) exists.
pub type WeightsFn = fn(&HfConfig, &dyn Fn(&str) -> bool) -> Result<Vec<WeightSpec>, ImportError>;

/// An architecture template.
pub struct Architecture {
    /// Template name, recorded in the graph metadata.
    pub name: &'static str,
    /// The `model_type` values of `config.json` this template builds.
    pub model_types: &'static [&'static str],
    /// What the graph computes (recorded as [`META_TASK`]).
    pub task: &'static str,
    /// Builds the graph.
    pub build: BuildFn,
    /// The weights the graph holds.
    pub weights: WeightsFn,
}

/// Every template Kiln has.
pub const ARCHITECTURES: &[Architecture] = &[llama::ARCH, bert::ARCH];

/// The template for a config's `model_type`.
pub fn for_config(cfg: &HfConfig) -> Result<&'static Architecture, ImportError> {
    let model_type = cfg.model_type()?;
    ARCHITECTURES
        .iter()
        .find(|a| a.model_types.contains(&model_type))
        .ok_or_else(|| {
            let known: Vec<&str> = ARCHITECTURES
                .iter()
                .flat_map(|a| a.model_types.iter().copied())
                .collect();
            cfg.error(
                "model_type",
                format!(
                    "'{model_type}' has no Kiln template (supported: {})",
                    known.join(", ")
                ),
            )
        })
}

/// The template named in a graph's metadata (for graphs Kiln imported).
pub fn for_graph(graph: &Graph) -> Option<&'static Architecture> {
    let name = graph.metadata.get(META_ARCHITECTURE)?;
    ARCHITECTURES.iter().find(|a| a.name == name)
}

/// Builds the graph for `cfg` from `src` and records the template in its metadata.
pub fn build(cfg: &HfConfig, src: &mut dyn WeightSource) -> Result<Graph, ImportError> {
    let arch = for_config(cfg)?;
    let mut graph = (arch.build)(cfg, src)?;
    graph
        .metadata
        .insert(META_ARCHITECTURE.to_string(), arch.name.to_string());
    // A template may know better (an encoder with a pooling head).
    graph
        .metadata
        .entry(META_TASK.to_string())
        .or_insert_with(|| arch.task.to_string());
    Ok(graph)
}
