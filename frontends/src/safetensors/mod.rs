//! Hugging Face model folders: `config.json`, one or more `*.safetensors`
//! shards (with or without `model.safetensors.index.json`), a tokenizer and,
//! for sentence-transformers models, the pooling modules.
//!
//! Shards are memory-mapped; each weight is converted to f32 when the
//! architecture template asks for it, so peak memory is the graph being built,
//! not the checkpoint twice.

pub mod export;

pub use export::{export_folder, ExportReport, META_POOLING};

use crate::arch::{self, HfConfig, Pooling, PoolingMode, WeightSource};
use crate::{ImportError, Model};
use ::safetensors::tensor::{Dtype, TensorInfo};
use ::safetensors::SafeTensors;
use half::{bf16, f16};
use kiln_ir::Tensor;
use memmap2::Mmap;
use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

/// Asset name of the architecture config in a [`Model`].
pub const CONFIG_ASSET: &str = "config.json";
/// Asset name of the tokenizer in a [`Model`].
pub const TOKENIZER_ASSET: &str = "tokenizer.json";
/// Asset name of the tokenizer's special-token settings in a [`Model`].
pub const TOKENIZER_CONFIG_ASSET: &str = "tokenizer_config.json";

/// The weights of a folder's safetensors shards.
pub struct SafetensorsFolder {
    dir: PathBuf,
    shards: Vec<(PathBuf, Mmap, usize)>,
    index: BTreeMap<String, (usize, TensorInfo)>,
}

impl SafetensorsFolder {
    /// Maps every `*.safetensors` file of `dir` (the shards the index names,
    /// when there is an index) and reads their headers.
    pub fn open(dir: &Path) -> Result<Self, ImportError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| ImportError::Io { path, source }
        };
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(io(dir))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
            .collect();
        files.sort();
        let index_path = dir.join("model.safetensors.index.json");
        if index_path.exists() {
            let bytes = std::fs::read(&index_path).map_err(io(&index_path))?;
            let index: serde_json::Value =
                serde_json::from_slice(&bytes).map_err(|e| ImportError::InvalidModel {
                    file: index_path.display().to_string(),
                    message: format!("not valid JSON: {e}"),
                })?;
            let map = index
                .get("weight_map")
                .and_then(|m| m.as_object())
                .ok_or_else(|| ImportError::InvalidModel {
                    file: index_path.display().to_string(),
                    message: "expected an object 'weight_map'".to_string(),
                })?;
            let mut named: Vec<PathBuf> = map
                .values()
                .filter_map(|v| v.as_str())
                .map(|f| dir.join(f))
                .collect();
            named.sort();
            named.dedup();
            for f in &named {
                if !f.exists() {
                    return Err(ImportError::InvalidModel {
                        file: index_path.display().to_string(),
                        message: format!("names shard {} which does not exist", f.display()),
                    });
                }
            }
            files = named;
        }
        if files.is_empty() {
            return Err(ImportError::InvalidModel {
                file: dir.display().to_string(),
                message: "no *.safetensors file in the model folder".to_string(),
            });
        }
        let mut shards = Vec::new();
        let mut index = BTreeMap::new();
        for path in files {
            let file = File::open(&path).map_err(io(&path))?;
            // SAFETY: the mapping is read-only; a checkpoint being rewritten
            // while it is imported is outside what any loader can guard.
            let map = unsafe { Mmap::map(&file) }.map_err(io(&path))?;
            let (header, meta) =
                SafeTensors::read_metadata(&map).map_err(|e| ImportError::InvalidModel {
                    file: path.display().to_string(),
                    message: format!("not a valid safetensors file: {e:?}"),
                })?;
            let shard = shards.len();
            for (name, info) in meta.tensors() {
                if let Some((other, _)) = index.insert(name.clone(), (shard, info.clone())) {
                    let other: &(PathBuf, Mmap, usize) = &shards[other];
                    return Err(ImportError::InvalidModel {
                        file: path.display().to_string(),
                        message: format!("tensor '{name}' is also in {}", other.0.display()),
                    });
                }
            }
            shards.push((path, map, 8 + header));
        }
        Ok(SafetensorsFolder {
            dir: dir.to_path_buf(),
            shards,
            index,
        })
    }
}

impl WeightSource for SafetensorsFolder {
    fn get(&mut self, name: &str) -> Result<Tensor, ImportError> {
        let Some((shard, info)) = self.index.get(name) else {
            return Err(ImportError::InvalidModel {
                file: self.origin(),
                message: format!("the checkpoint has no tensor '{name}'"),
            });
        };
        let (path, map, data_start) = &self.shards[*shard];
        let bad = |problem: String| ImportError::BadTensor {
            file: path.display().to_string(),
            tensor: name.to_string(),
            problem,
        };
        let (a, b) = info.data_offsets;
        let bytes = map
            .get(data_start + a..data_start + b)
            .ok_or_else(|| bad(format!("data bytes {a}..{b} lie outside the file")))?;
        let n: usize = info.shape.iter().product();
        let values: Vec<f32> = match info.dtype {
            Dtype::F32 => decode(bytes, n, 4, |c| {
                f32::from_le_bytes([c[0], c[1], c[2], c[3]])
            }),
            Dtype::F16 => decode(bytes, n, 2, |c| f16::from_le_bytes([c[0], c[1]]).to_f32()),
            Dtype::BF16 => decode(bytes, n, 2, |c| bf16::from_le_bytes([c[0], c[1]]).to_f32()),
            Dtype::F64 => decode(bytes, n, 8, |c| {
                f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32
            }),
            other => {
                return Err(bad(format!(
                    "has dtype {other:?}; Kiln reads F32, F16, BF16 and F64 weights"
                )))
            }
        }
        .ok_or_else(|| {
            bad(format!(
                "{} data bytes do not hold {n} elements",
                bytes.len()
            ))
        })?;
        Tensor::from_vec(info.shape.clone(), values).map_err(|e| bad(e.to_string()))
    }

    fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    fn origin(&self) -> String {
        self.dir.display().to_string()
    }
}

/// Decodes `n` little-endian elements of `width` bytes each.
fn decode(bytes: &[u8], n: usize, width: usize, f: impl Fn(&[u8]) -> f32) -> Option<Vec<f32>> {
    (bytes.len() == n * width).then(|| bytes.chunks_exact(width).map(f).collect())
}

/// Reads the sentence-transformers pooling head, when the folder has one.
fn read_pooling(dir: &Path) -> Result<Option<Pooling>, ImportError> {
    let modules_path = dir.join("modules.json");
    let Ok(bytes) = std::fs::read(&modules_path) else {
        return Ok(None);
    };
    let bad = |file: &Path, message: String| ImportError::InvalidModel {
        file: file.display().to_string(),
        message,
    };
    let modules: Vec<serde_json::Value> = serde_json::from_slice(&bytes).map_err(|e| {
        bad(
            &modules_path,
            format!("expected a JSON list of modules: {e}"),
        )
    })?;
    let kind = |m: &serde_json::Value| {
        m.get("type")
            .and_then(|t| t.as_str())
            .unwrap_or("")
            .to_string()
    };
    let Some(pool) = modules.iter().find(|m| kind(m).ends_with(".Pooling")) else {
        return Ok(None);
    };
    let sub = pool
        .get("path")
        .and_then(|p| p.as_str())
        .unwrap_or("1_Pooling");
    let pool_path = dir.join(sub).join("config.json");
    let bytes = std::fs::read(&pool_path).map_err(|source| ImportError::Io {
        path: pool_path.clone(),
        source,
    })?;
    let cfg: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| bad(&pool_path, format!("not valid JSON: {e}")))?;
    let flag = |k: &str| cfg.get(k).and_then(|v| v.as_bool()).unwrap_or(false);
    let mode = match (
        flag("pooling_mode_mean_tokens"),
        flag("pooling_mode_cls_token"),
        flag("pooling_mode_max_tokens"),
    ) {
        (true, false, false) => PoolingMode::Mean,
        (false, true, false) => PoolingMode::Cls,
        (false, false, true) => PoolingMode::Max,
        _ => {
            return Err(bad(
                &pool_path,
                "Kiln supports exactly one of mean, cls or max pooling".to_string(),
            ))
        }
    };
    let normalize = modules.iter().any(|m| kind(m).ends_with(".Normalize"));
    Ok(Some(Pooling { mode, normalize }))
}

/// Imports a Hugging Face model folder (or the folder of a `.safetensors` file).
pub fn import_folder(dir: &Path) -> Result<Model, ImportError> {
    let config_path = dir.join("config.json");
    let config_bytes = std::fs::read(&config_path).map_err(|source| ImportError::Io {
        path: config_path.clone(),
        source,
    })?;
    let mut cfg = HfConfig::from_bytes(&config_path.display().to_string(), &config_bytes)?;
    cfg.pooling = read_pooling(dir)?;
    let mut weights = SafetensorsFolder::open(dir)?;
    let graph = arch::build(&cfg, &mut weights)?;
    let mut assets = BTreeMap::new();
    assets.insert(CONFIG_ASSET.to_string(), config_bytes);
    let tok_path = dir.join("tokenizer.json");
    if tok_path.exists() {
        let tok = crate::tokenizer::Tokenizer::from_file(&tok_path)?;
        assets.insert(TOKENIZER_ASSET.to_string(), tok.to_json()?.into_bytes());
        // The chat template travels too (GGUF export writes it).
        let template = std::fs::read(dir.join("tokenizer_config.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| v.get("chat_template")?.as_str().map(str::to_string));
        let config =
            crate::gguf_llama::with_chat_template(tok.to_config_json(), template.as_deref());
        assets.insert(TOKENIZER_CONFIG_ASSET.to_string(), config.into_bytes());
    }
    Ok(Model { graph, assets })
}
