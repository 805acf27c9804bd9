//! Writing a model back out as a Hugging Face folder: `config.json`,
//! `model.safetensors` and `tokenizer.json` (plus the sentence-transformers
//! pooling files for embedding models), so a GGUF model can leave Kiln as
//! safetensors and come back.

use super::{CONFIG_ASSET, TOKENIZER_ASSET, TOKENIZER_CONFIG_ASSET};
use crate::arch::weights::transpose_2d;
use crate::arch::{self, HfConfig, Layout, META_TASK};
use crate::ImportError;
use ::safetensors::tensor::{Dtype, TensorView};
use kiln_ir::{DType, Graph, Tensor};
use std::collections::BTreeMap;
use std::path::Path;

/// Graph metadata key recording the pooling of sentence-embedding graphs
/// (`mean`, `cls` or `max`, with `+normalize`).
pub const META_POOLING: &str = "kiln.pooling";

/// What [`export_folder`] wrote.
#[derive(Clone, Debug)]
pub struct ExportReport {
    /// Files written, relative to the folder.
    pub files: Vec<String>,
    /// Tensors in `model.safetensors`.
    pub tensors: usize,
    /// Parameters (elements) in `model.safetensors`.
    pub parameters: u64,
}

fn invalid(dir: &Path, message: String) -> ImportError {
    ImportError::InvalidModel {
        file: dir.display().to_string(),
        message,
    }
}

/// Writes `graph` (imported by one of Kiln's architecture templates) and its
/// assets as a Hugging Face folder at `dir`, creating it if needed.
pub fn export_folder(
    graph: &Graph,
    assets: &BTreeMap<String, Vec<u8>>,
    dir: &Path,
) -> Result<ExportReport, ImportError> {
    let arch = arch::for_graph(graph).ok_or_else(|| {
        invalid(
            dir,
            "only models imported from a Hugging Face folder or a GGUF file can be exported as \
             safetensors (this graph has no architecture template)"
                .to_string(),
        )
    })?;
    let config_bytes = assets
        .get(CONFIG_ASSET)
        .ok_or_else(|| invalid(dir, "the model carries no config.json".to_string()))?;
    let cfg = HfConfig::from_bytes(CONFIG_ASSET, config_bytes)?;
    let constant = |name: &str| graph.find_value(name).and_then(|id| graph.constant(id));
    let specs = (arch.weights)(&cfg, &|n| constant(n).is_some())?;

    let mut tensors: Vec<(String, Tensor)> = Vec::with_capacity(specs.len());
    for spec in &specs {
        let t = constant(&spec.name).ok_or_else(|| {
            invalid(
                dir,
                format!("the graph has no weight '{}' to export", spec.name),
            )
        })?;
        if t.dtype() != DType::F32 {
            return Err(invalid(
                dir,
                format!(
                    "weight '{}' is {}; export writes f32 weights",
                    spec.name,
                    t.dtype()
                ),
            ));
        }
        let t = match spec.layout {
            Layout::AsIs => t.clone(),
            Layout::Transposed => transpose_2d(t, &spec.name, &dir.display().to_string())?,
        };
        tensors.push((spec.name.clone(), t));
    }

    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ImportError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let mut files = Vec::new();
    let views = tensors
        .iter()
        .map(|(name, t)| {
            TensorView::new(Dtype::F32, t.dims().to_vec(), t.bytes())
                .map(|v| (name.clone(), v))
                .map_err(|e| invalid(dir, format!("weight '{name}': {e:?}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let metadata = BTreeMap::from([("format".to_string(), "pt".to_string())]);
    let weights_path = dir.join("model.safetensors");
    ::safetensors::serialize_to_file(views, &Some(metadata.into_iter().collect()), &weights_path)
        .map_err(|e| invalid(dir, format!("cannot write model.safetensors: {e:?}")))?;
    files.push("model.safetensors".to_string());

    let mut write = |name: &str, bytes: &[u8]| -> Result<(), ImportError> {
        let path = dir.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        std::fs::write(&path, bytes).map_err(io(&path))?;
        files.push(name.to_string());
        Ok(())
    };
    write(CONFIG_ASSET, config_bytes)?;
    for name in [TOKENIZER_ASSET, TOKENIZER_CONFIG_ASSET] {
        if let Some(bytes) = assets.get(name) {
            write(name, bytes)?;
        }
    }
    if graph.metadata.get(META_TASK).map(String::as_str) == Some("sentence-embedding") {
        if let Some(pooling) = graph.metadata.get(META_POOLING) {
            let (mode, normalize) = match pooling.split_once('+') {
                Some((m, n)) => (m, n == "normalize"),
                None => (pooling.as_str(), false),
            };
            let mut modules = vec![
                serde_json::json!({"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}),
                serde_json::json!({"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}),
            ];
            if normalize {
                modules.push(serde_json::json!({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}));
            }
            let hidden = cfg.usize("hidden_size")?;
            let pool = serde_json::json!({
                "word_embedding_dimension": hidden,
                "pooling_mode_cls_token": mode == "cls",
                "pooling_mode_mean_tokens": mode == "mean",
                "pooling_mode_max_tokens": mode == "max",
                "pooling_mode_mean_sqrt_len_tokens": false,
            });
            let pretty = |v: &serde_json::Value| {
                serde_json::to_vec_pretty(v).expect("JSON values serialize")
            };
            write("modules.json", &pretty(&serde_json::Value::Array(modules)))?;
            write("1_Pooling/config.json", &pretty(&pool))?;
        }
    }
    Ok(ExportReport {
        files,
        tensors: tensors.len(),
        parameters: tensors.iter().map(|(_, t)| t.len() as u64).sum(),
    })
}
