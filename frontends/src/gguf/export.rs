//! Writing a LLaMA-family model as a GGUF file that llama.cpp loads.
//!
//! [`export_gguf`] inverts the GGUF import: Hugging Face weight names become
//! GGUF names ([`gguf_llama::gguf_name`]), query/key rows get llama.cpp's
//! rotary permutation back ([`gguf_llama::permute_rows`]), `config.json`
//! becomes the `{arch}.*` hyper-parameters and `tokenizer.json` the
//! `tokenizer.ggml.*` vocabulary. A model that came from a GGUF file
//! carries the rest of that file's metadata as an asset
//! ([`gguf_llama::GGUF_METADATA_ASSET`]) and gets it back.
//!
//! Weights: 1-D tensors (norms, biases) are always F32. A packed
//! quantized weight ([`kiln_ir::DType::Quant`]) is written in the llama.cpp
//! block type its codes fit, from those codes and scales, without
//! re-rounding them (Q4_1 may round a block's minimum to f16); an f32
//! weight, or codes that do not fit, go through llama.cpp's quantizer
//! ([`super::quantize`]). [`GgufType`] chooses the
//! type; the report says, per tensor, which type was written and whether
//! the file decodes to Kiln's values bit for bit. See docs/gguf.md.

mod asset;
mod tensors;
mod vocab;

pub use asset::source_metadata_json;

use super::{GgmlType, GgufWriteError, GgufWriter, MetaValue};
use crate::arch::llama::LlamaConfig;
use crate::arch::{self, HfConfig, WeightSpec};
use crate::gguf_llama::{
    gguf_architecture, gguf_name, permute_rows, EXPORTABLE_MODEL_TYPES, GGUF_METADATA_ASSET,
};
use crate::safetensors::{CONFIG_ASSET, TOKENIZER_ASSET, TOKENIZER_CONFIG_ASSET};
use crate::tokenizer::{Tokenizer, TokenizerError};
use crate::ImportError;
use kiln_ir::{DType, Graph};
use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::Path;
use std::str::FromStr;

/// `general.quantization_version` llama.cpp writes (`GGML_QNT_VERSION`).
const QUANTIZATION_VERSION: u32 = 2;

/// Which ggml type the 2-D weights get.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum GgufType {
    /// Each packed weight in the block type its codes fit (symmetric 3-
    /// and 4-bit: Q4_0, exact; asymmetric 3- and 4-bit: Q4_1, exact where a
    /// block's minimum is an f16, else with the minimum rounded to one;
    /// 8-bit: Q8_0, exact when the codes fit an i8), f32 weights in Q8_0.
    #[default]
    Auto,
    /// Every 2-D weight in this type: exact where the codes fit, llama.cpp's
    /// quantizer otherwise. One of [`GgufType::FORCEABLE`].
    Force(GgmlType),
}

impl GgufType {
    /// The types `--gguf-type` may name.
    pub const FORCEABLE: [GgmlType; 5] = [
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::Q8_0,
        GgmlType::Q4_0,
        GgmlType::Q4_1,
    ];

    /// Parses `auto` or a type name (`f32`, `f16`, `q8_0`, `q4_0`, `q4_1`;
    /// any case).
    pub fn parse(text: &str) -> Result<GgufType, GgufExportError> {
        if text.eq_ignore_ascii_case("auto") {
            return Ok(GgufType::Auto);
        }
        Self::FORCEABLE
            .iter()
            .find(|t| t.name().eq_ignore_ascii_case(text))
            .map(|&t| GgufType::Force(t))
            .ok_or_else(|| GgufExportError::UnknownType(text.to_string()))
    }
}

impl FromStr for GgufType {
    type Err = GgufExportError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        GgufType::parse(s)
    }
}

impl fmt::Display for GgufType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GgufType::Auto => f.write_str("auto"),
            GgufType::Force(t) => f.write_str(&t.name().to_ascii_lowercase()),
        }
    }
}

/// Options of [`export_gguf`].
#[derive(Clone, Debug, Default)]
pub struct GgufExportOptions {
    /// Types of the 2-D weights.
    pub types: GgufType,
    /// `general.name`; by default the source GGUF file's name, else the
    /// last part of `config.json`'s `_name_or_path`, else the file's stem.
    pub name: Option<String>,
}

/// What happened to one tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorReport {
    /// GGUF name (`blk.0.attn_q.weight`).
    pub name: String,
    /// The graph constant it came from (its Hugging Face name); empty for
    /// tensors the export computes (`rope_freqs.weight`).
    pub source: String,
    /// The constant's dtype (`f32`, or a packed format such as `w4g32`).
    pub source_dtype: DType,
    /// Dims in IR order, outermost first (GGUF's `ne` reversed).
    pub dims: Vec<usize>,
    /// The ggml type written.
    pub ty: GgmlType,
    /// The file decodes to the constant's values (packed weights: their
    /// dequantized values) bit for bit, checked after writing the blocks.
    pub exact: bool,
    /// Largest `|decoded − constant's value|` over the tensor (0 when exact).
    pub max_error: f32,
    /// llama.cpp's quantizer chose the codes (the weight was f32, or its
    /// codes do not fit `ty`); false when the packed codes were kept (Q4_1
    /// may then round a block's minimum to f16) or the values were
    /// converted to a float type.
    pub requantized: bool,
}

/// What [`export_gguf`] wrote.
#[derive(Clone, Debug)]
pub struct GgufExportReport {
    /// `general.architecture` (`llama`, `qwen2`).
    pub architecture: &'static str,
    /// `general.file_type` (llama.cpp's `LLAMA_FTYPE_*`).
    pub file_type: u32,
    /// Metadata keys written.
    pub metadata_keys: usize,
    /// Every tensor, in file order.
    pub tensors: Vec<TensorReport>,
    /// Elements over all tensors.
    pub parameters: u64,
    /// File size in bytes.
    pub bytes: u64,
}

/// The name of a `general.file_type` value (`MOSTLY_Q4_0`).
pub fn file_type_name(file_type: u32) -> &'static str {
    match file_type {
        0 => "ALL_F32",
        1 => "MOSTLY_F16",
        2 => "MOSTLY_Q4_0",
        3 => "MOSTLY_Q4_1",
        7 => "MOSTLY_Q8_0",
        8 => "MOSTLY_Q5_0",
        9 => "MOSTLY_Q5_1",
        32 => "MOSTLY_BF16",
        _ => "UNKNOWN",
    }
}

/// llama.cpp's `LLAMA_FTYPE_MOSTLY_*` for a tensor type.
fn file_type_of(ty: GgmlType) -> u32 {
    match ty {
        GgmlType::F16 => 1,
        GgmlType::Q4_0 => 2,
        GgmlType::Q4_1 => 3,
        GgmlType::Q8_0 => 7,
        GgmlType::Q5_0 => 8,
        GgmlType::Q5_1 => 9,
        GgmlType::BF16 => 32,
        _ => 0,
    }
}

/// Why a model could not be written as GGUF.
#[derive(Debug, thiserror::Error)]
pub enum GgufExportError {
    /// The model is not one GGUF export handles.
    #[error(
        "GGUF export writes LLaMA-family models (model_type {}); this model's architecture is {found}",
        EXPORTABLE_MODEL_TYPES.join(", ")
    )]
    UnsupportedArchitecture {
        /// The architecture, in words.
        found: String,
    },
    /// `--gguf-type` names no type the export writes.
    #[error("unknown GGUF tensor type '{0}' (expected auto, f32, f16, q8_0, q4_0 or q4_1)")]
    UnknownType(String),
    /// An asset (config, tokenizer, kept GGUF metadata) is missing or unusable.
    #[error("{asset}: {problem}")]
    Asset {
        /// The asset's name.
        asset: String,
        /// What is wrong and what was expected.
        problem: String,
    },
    /// A weight cannot be written.
    #[error("weight '{tensor}' (GGUF '{gguf}'): {problem}")]
    Tensor {
        /// The graph constant.
        tensor: String,
        /// Its GGUF name.
        gguf: String,
        /// What is wrong.
        problem: String,
    },
    /// `config.json` is unusable.
    #[error(transparent)]
    Config(#[from] ImportError),
    /// The tokenizer cannot be loaded.
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    /// The GGUF writer refused a value or could not write the file.
    #[error(transparent)]
    Write(#[from] GgufWriteError),
}

fn asset_err(asset: &str, problem: impl Into<String>) -> GgufExportError {
    GgufExportError::Asset {
        asset: asset.to_string(),
        problem: problem.into(),
    }
}

/// Writes `graph` (built by the LLaMA template from a Hugging Face folder or
/// a GGUF file, possibly with packed weights) and its assets as the GGUF
/// file `path`.
pub fn export_gguf(
    graph: &Graph,
    assets: &BTreeMap<String, Vec<u8>>,
    path: &Path,
    options: &GgufExportOptions,
) -> Result<GgufExportReport, GgufExportError> {
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("model")
        .to_string();
    let (writer, mut report) = gguf_writer(graph, assets, options, &stem)?;
    report.bytes = writer.write(path)?;
    Ok(report)
}

/// The writer [`export_gguf`] fills, and its report (`bytes` left 0);
/// `default_name` is the `general.name` of a model without one.
pub fn gguf_writer(
    graph: &Graph,
    assets: &BTreeMap<String, Vec<u8>>,
    options: &GgufExportOptions,
    default_name: &str,
) -> Result<(GgufWriter, GgufExportReport), GgufExportError> {
    let config_bytes = assets.get(CONFIG_ASSET);
    let template = arch::for_graph(graph);
    let (Some(template), Some(config_bytes)) = (template, config_bytes) else {
        return Err(GgufExportError::UnsupportedArchitecture {
            found: "not known: the graph was not built by one of Kiln's architecture templates \
                    (import the model from a Hugging Face folder or a GGUF file)"
                .into(),
        });
    };
    let cfg = HfConfig::from_bytes(CONFIG_ASSET, config_bytes)?;
    let model_type = cfg.model_type()?.to_string();
    let Some((gguf_arch, permuted)) =
        gguf_architecture(&model_type).filter(|_| template.name == "llama")
    else {
        let classes = cfg
            .get("architectures")
            .and_then(|v| v.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|c| c.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .filter(|s| !s.is_empty())
            .map(|s| format!(", {s}"))
            .unwrap_or_default();
        return Err(GgufExportError::UnsupportedArchitecture {
            found: format!("'{}' (model_type '{model_type}'{classes})", template.name),
        });
    };
    let c = LlamaConfig::from_hf(&cfg)?;
    let source = match assets.get(GGUF_METADATA_ASSET) {
        Some(bytes) => Some(asset::read(bytes).map_err(|p| asset_err(GGUF_METADATA_ASSET, p))?),
        None => None,
    };

    let mut w = GgufWriter::new();
    let mut report = GgufExportReport {
        architecture: gguf_arch,
        file_type: 0,
        metadata_keys: 0,
        tensors: Vec::new(),
        parameters: 0,
        bytes: 0,
    };
    if let Some(factors) = llama3_rope_factors(&cfg, &c)? {
        report.tensors.push(TensorReport {
            name: "rope_freqs.weight".into(),
            source: String::new(),
            source_dtype: DType::F32,
            dims: vec![factors.len()],
            ty: GgmlType::F32,
            exact: true,
            max_error: 0.0,
            requantized: false,
        });
        w.add_f32_tensor(
            "rope_freqs.weight",
            &[factors.len()],
            GgmlType::F32,
            &factors,
        )?;
    }
    let constant = |name: &str| graph.find_value(name).and_then(|id| graph.constant(id));
    let specs = (template.weights)(&cfg, &|n| constant(n).is_some())?;
    for spec in file_order(specs) {
        let gguf = gguf_name(&spec.name).ok_or_else(|| GgufExportError::Tensor {
            tensor: spec.name.clone(),
            gguf: String::new(),
            problem: "has no GGUF counterpart".into(),
        })?;
        let bad = |problem: String| GgufExportError::Tensor {
            tensor: spec.name.clone(),
            gguf: gguf.clone(),
            problem,
        };
        let t = constant(&spec.name)
            .ok_or_else(|| bad("the graph has no such constant to export".into()))?;
        let mut e = if t.dims().len() == 1 {
            tensors::encode_1d(t)
        } else {
            tensors::encode_2d(t, spec.layout, options.types)
        }
        .map_err(bad)?;
        let heads = if spec.name.contains(".q_proj.") {
            Some(c.heads)
        } else if spec.name.contains(".k_proj.") {
            Some(c.kv_heads)
        } else {
            None
        };
        if let (true, Some(heads)) = (permuted, heads) {
            e.bytes = permute_rows(&e.bytes, e.dims[0], heads).ok_or_else(|| {
                bad(format!(
                    "{} rows do not split into {heads} heads of rotary pairs",
                    e.dims[0]
                ))
            })?;
        }
        report.parameters += e.dims.iter().product::<usize>() as u64;
        report.tensors.push(TensorReport {
            name: gguf.clone(),
            source: spec.name.clone(),
            source_dtype: t.dtype(),
            dims: e.dims.clone(),
            ty: e.ty,
            exact: e.exact,
            max_error: e.max_error,
            requantized: e.requantized,
        });
        w.add_tensor(gguf, &e.dims, e.ty, e.bytes)?;
    }
    report.file_type = mostly(&report.tensors);

    let name = match &options.name {
        Some(n) => n.clone(),
        // A GGUF file's general.name became the graph's name.
        None if source.is_some() && !graph.name.is_empty() => graph.name.clone(),
        // A Hugging Face `_name_or_path` is `owner/name` or a path.
        None => cfg
            .opt_str("_name_or_path")?
            .and_then(|p| p.rsplit(['/', '\\']).find(|s| !s.is_empty()))
            .unwrap_or(default_name)
            .to_string(),
    };
    let meta = Metadata {
        cfg: &cfg,
        c: &c,
        arch: gguf_arch,
        file_type: report.file_type,
        name,
        source: source.as_deref(),
    }
    .build(assets)?;
    report.metadata_keys = meta.len();
    for (key, value) in meta {
        w.add_meta(key, value)?;
    }
    Ok((w, report))
}

/// Token embedding and layers first, the output norm and head last (the
/// order llama.cpp's converter writes).
fn file_order(specs: Vec<WeightSpec>) -> Vec<WeightSpec> {
    let last = |s: &WeightSpec| matches!(s.name.as_str(), "model.norm.weight" | "lm_head.weight");
    let (tail, mut head): (Vec<_>, Vec<_>) = specs.into_iter().partition(last);
    head.extend(tail);
    head
}

/// llama.cpp's `general.file_type`: the type holding most elements of the
/// 2-D weights.
fn mostly(tensors: &[TensorReport]) -> u32 {
    let mut by_type: BTreeMap<u32, u64> = BTreeMap::new();
    for t in tensors.iter().filter(|t| t.dims.len() == 2) {
        *by_type.entry(file_type_of(t.ty)).or_default() += t.dims.iter().product::<usize>() as u64;
    }
    by_type
        .into_iter()
        .max_by_key(|&(ft, n)| (n, std::cmp::Reverse(ft)))
        .map_or(0, |(ft, _)| ft)
}

/// The `rope_freqs.weight` factors llama.cpp's converter writes for
/// `llama3` rope scaling (frequencies are divided by them), computed in f64.
fn llama3_rope_factors(
    cfg: &HfConfig,
    c: &LlamaConfig,
) -> Result<Option<Vec<f32>>, GgufExportError> {
    let Some(scaling) = cfg.get("rope_scaling").and_then(|v| v.as_object()) else {
        return Ok(None);
    };
    let kind = scaling
        .get("rope_type")
        .or_else(|| scaling.get("type"))
        .and_then(|v| v.as_str());
    if kind != Some("llama3") {
        return Ok(None);
    }
    let num = |k: &str, default: f64| scaling.get(k).and_then(|v| v.as_f64()).unwrap_or(default);
    let factor = num("factor", 8.0);
    let low = num("low_freq_factor", 1.0);
    let high = num("high_freq_factor", 4.0);
    let old_ctx = num("original_max_position_embeddings", 8192.0);
    let theta = cfg.opt_f64("rope_theta")?.unwrap_or(10_000.0);
    let dim = c.head_dim;
    let (low_wavelen, high_wavelen) = (old_ctx / low, old_ctx / high);
    Ok(Some(
        (0..dim / 2)
            .map(|i| {
                let freq = 1.0 / theta.powf((2 * i) as f64 / dim as f64);
                let wavelen = 2.0 * std::f64::consts::PI / freq;
                let f = if wavelen < high_wavelen {
                    1.0
                } else if wavelen > low_wavelen {
                    factor
                } else {
                    let smooth = (old_ctx / wavelen - low) / (high - low);
                    1.0 / ((1.0 - smooth) / factor + smooth)
                };
                f as f32
            })
            .collect(),
    ))
}

/// Everything the metadata is made from.
struct Metadata<'a> {
    cfg: &'a HfConfig,
    c: &'a LlamaConfig,
    arch: &'static str,
    file_type: u32,
    name: String,
    source: Option<&'a [asset::SourceEntry]>,
}

fn u32_of(key: &str, v: usize) -> Result<MetaValue, GgufExportError> {
    u32::try_from(v)
        .map(MetaValue::U32)
        .map_err(|_| asset_err(CONFIG_ASSET, format!("{key} = {v} does not fit a u32")))
}

fn strings(list: Vec<String>) -> MetaValue {
    MetaValue::Array(list.into_iter().map(MetaValue::String).collect())
}

impl Metadata<'_> {
    /// Keys in llama.cpp's converter order: general, hyper-parameters, file
    /// type, tokenizer, quantization version; keys kept from a source GGUF
    /// file join their section.
    fn build(
        &self,
        assets: &BTreeMap<String, Vec<u8>>,
    ) -> Result<Vec<(String, MetaValue)>, GgufExportError> {
        let (arch, c, cfg) = (self.arch, self.c, self.cfg);
        let source: &[asset::SourceEntry] = self.source.unwrap_or(&[]);
        let prefix = format!("{arch}.");
        let kept = |key: &str| {
            !matches!(
                key,
                "general.architecture"
                    | "general.name"
                    | "general.file_type"
                    | "general.quantization_version"
            )
        };

        let mut general = vec![
            (
                "general.architecture".to_string(),
                MetaValue::String(arch.into()),
            ),
            (
                "general.name".to_string(),
                MetaValue::String(self.name.clone()),
            ),
        ];
        let k = |s: &str| format!("{arch}.{s}");
        let mut model = vec![
            (k("block_count"), u32_of("num_hidden_layers", c.layers)?),
            (
                k("context_length"),
                u32_of("max_position_embeddings", c.max_positions)?,
            ),
            (k("embedding_length"), u32_of("hidden_size", c.hidden)?),
            (
                k("feed_forward_length"),
                u32_of("intermediate_size", c.intermediate)?,
            ),
            (
                k("attention.head_count"),
                u32_of("num_attention_heads", c.heads)?,
            ),
            (
                k("attention.head_count_kv"),
                u32_of("num_key_value_heads", c.kv_heads)?,
            ),
            (
                k("rope.freq_base"),
                MetaValue::F32(cfg.opt_f64("rope_theta")?.unwrap_or(10_000.0) as f32),
            ),
            (
                k("attention.layer_norm_rms_epsilon"),
                MetaValue::F32(c.rms_eps),
            ),
        ];
        if cfg.get("head_dim").is_some() {
            model.push((k("attention.key_length"), u32_of("head_dim", c.head_dim)?));
            model.push((k("attention.value_length"), u32_of("head_dim", c.head_dim)?));
        }
        model.push((
            "general.file_type".to_string(),
            MetaValue::U32(self.file_type),
        ));
        model.push((k("vocab_size"), u32_of("vocab_size", c.vocab)?));
        model.push((
            k("rope.dimension_count"),
            u32_of("head_dim", 2 * c.inv_freq.len())?,
        ));
        if let Some(s) = cfg.get("rope_scaling").and_then(|v| v.as_object()) {
            let kind = s
                .get("rope_type")
                .or_else(|| s.get("type"))
                .and_then(|v| v.as_str());
            if let (Some("linear"), Some(f)) = (kind, s.get("factor").and_then(|v| v.as_f64())) {
                model.push((k("rope.scaling.type"), MetaValue::String("linear".into())));
                model.push((k("rope.scaling.factor"), MetaValue::F32(f as f32)));
            }
        }

        let mut tokenizer = self.tokenizer(assets)?;
        let mut other = Vec::new();
        let generated: HashSet<String> = general
            .iter()
            .chain(&model)
            .chain(&tokenizer)
            .map(|(k, _)| k.clone())
            .collect();
        for (key, value) in source {
            // Tokens and merges (value None) are in the tokenizer section.
            let Some(value) = value else { continue };
            if generated.contains(key) || !kept(key) {
                continue;
            }
            // An empty array has no element type to store.
            if matches!(value, MetaValue::Array(a) if a.is_empty()) {
                continue;
            }
            let entry = (key.clone(), value.clone());
            if key.starts_with("general.") {
                general.push(entry);
            } else if key.starts_with(&prefix) {
                model.push(entry);
            } else if key.starts_with("tokenizer.") {
                tokenizer.push(entry);
            } else {
                other.push(entry);
            }
        }
        let qv = source
            .iter()
            .find(|(k, _)| k == "general.quantization_version")
            .and_then(|(_, v)| v.clone())
            .unwrap_or(MetaValue::U32(QUANTIZATION_VERSION));
        let mut all = general;
        all.extend(model);
        all.extend(tokenizer);
        all.extend(other);
        all.push(("general.quantization_version".to_string(), qv));
        Ok(all)
    }

    /// The `tokenizer.*` keys: a source GGUF file's own, with tokens and
    /// merges from `tokenizer.json`; otherwise derived from `tokenizer.json`
    /// and `tokenizer_config.json`.
    fn tokenizer(
        &self,
        assets: &BTreeMap<String, Vec<u8>>,
    ) -> Result<Vec<(String, MetaValue)>, GgufExportError> {
        let json = assets.get(TOKENIZER_ASSET).ok_or_else(|| {
            asset_err(
                TOKENIZER_ASSET,
                "the model carries no tokenizer; a GGUF file needs its vocabulary",
            )
        })?;
        let text = std::str::from_utf8(json)
            .map_err(|e| asset_err(TOKENIZER_ASSET, format!("not UTF-8: {e}")))?;
        let bad = |p: String| asset_err(TOKENIZER_ASSET, format!("cannot be written as GGUF: {p}"));
        if let Some(source) = self.source {
            // tokenizer.json is read only for the keys the asset leaves to it
            // (a vocabulary with repeated tokens keeps its own list).
            let (mut tokens, mut merges) = if source.iter().any(|(_, v)| v.is_none()) {
                let parsed: serde_json::Value =
                    serde_json::from_str(text).map_err(|e| bad(format!("not valid JSON: {e}")))?;
                let (t, m) = vocab::tokens_and_merges(&parsed).map_err(bad)?;
                (Some(t), m)
            } else {
                (None, None)
            };
            let mut out = Vec::new();
            for (key, value) in source.iter().filter(|(k, _)| k.starts_with("tokenizer.")) {
                let value = match (value, key.as_str()) {
                    (Some(v), _) => Some(v.clone()),
                    (None, "tokenizer.ggml.tokens") => tokens.take().map(strings),
                    (None, _) => merges.take().map(strings),
                }
                .ok_or_else(|| bad(format!("it holds no {key} for the kept GGUF metadata")))?;
                if !matches!(&value, MetaValue::Array(a) if a.is_empty()) {
                    out.push((key.clone(), value));
                }
            }
            return Ok(out);
        }

        let d = vocab::derive(text).map_err(bad)?;
        let config = assets.get(TOKENIZER_CONFIG_ASSET).map(Vec::as_slice);
        let tok = Tokenizer::from_json_and_config(json, config)?;
        let (mut tokens, mut types, mut scores) = (d.tokens, d.token_types, d.scores);
        if tokens.len() > self.c.vocab {
            return Err(bad(format!(
                "it has {} tokens, more than the model's vocab_size {}",
                tokens.len(),
                self.c.vocab
            )));
        }
        // As llama.cpp's converter: pad to the embedding's rows.
        for i in tokens.len()..self.c.vocab {
            tokens.push(format!("[PAD{i}]"));
            types.push(vocab::TYPE_UNUSED);
            if let Some(s) = &mut scores {
                s.push(vocab::PAD_SCORE);
            }
        }
        let key = |s: &str| format!("tokenizer.ggml.{s}");
        let mut out = vec![(key("model"), MetaValue::String(d.model.into()))];
        if let Some(pre) = d.pre {
            out.push((key("pre"), MetaValue::String(pre)));
        }
        out.push((key("tokens"), strings(tokens)));
        if let Some(scores) = scores {
            out.push((
                key("scores"),
                MetaValue::Array(scores.into_iter().map(MetaValue::F32).collect()),
            ));
        }
        out.push((
            key("token_type"),
            MetaValue::Array(types.into_iter().map(MetaValue::I32).collect()),
        ));
        if let Some(merges) = d.merges.filter(|m| !m.is_empty()) {
            out.push((key("merges"), strings(merges)));
        }
        for (name, id) in [
            ("bos_token_id", tok.bos_id()),
            ("eos_token_id", tok.eos_id()),
            ("unknown_token_id", tok.unk_id()),
            ("padding_token_id", tok.pad_id()),
        ] {
            if let Some(id) = id {
                out.push((key(name), MetaValue::U32(id)));
            }
        }
        out.push((key("add_bos_token"), MetaValue::Bool(tok.add_bos())));
        out.push((key("add_eos_token"), MetaValue::Bool(tok.add_eos())));
        if let Some(prefix) = d.add_space_prefix {
            out.push((key("add_space_prefix"), MetaValue::Bool(prefix)));
        }
        let template = config
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(b).ok())
            .and_then(|v| v.get("chat_template")?.as_str().map(str::to_string));
        if let Some(t) = template {
            out.push(("tokenizer.chat_template".to_string(), MetaValue::String(t)));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_parse_in_any_case_and_print_back() {
        assert_eq!(GgufType::parse("auto").unwrap(), GgufType::Auto);
        assert_eq!(
            GgufType::parse("Q4_1").unwrap(),
            GgufType::Force(GgmlType::Q4_1)
        );
        for t in GgufType::FORCEABLE {
            let g = GgufType::Force(t);
            assert_eq!(g.to_string().parse::<GgufType>().unwrap(), g);
        }
        let e = GgufType::parse("q4_k").unwrap_err().to_string();
        assert!(e.contains("'q4_k'") && e.contains("q8_0"), "{e}");
    }

    #[test]
    fn file_type_is_the_type_of_most_weight_elements() {
        let t = |ty, dims: &[usize]| TensorReport {
            name: String::new(),
            source: String::new(),
            source_dtype: DType::F32,
            dims: dims.to_vec(),
            ty,
            exact: true,
            max_error: 0.0,
            requantized: false,
        };
        let tensors = [
            t(GgmlType::Q8_0, &[49152, 576]),
            t(GgmlType::Q4_0, &[576, 576]),
            t(GgmlType::Q4_0, &[1536, 576]),
            t(GgmlType::F32, &[576]),
        ];
        assert_eq!(mostly(&tensors), 7);
        assert_eq!(mostly(&tensors[1..]), 2);
        assert_eq!(mostly(&tensors[3..]), 0);
        assert_eq!(file_type_name(3), "MOSTLY_Q4_1");
    }

    #[test]
    fn kept_tokenizer_keys_are_written_back_and_tokens_come_from_tokenizer_json_when_left_out() {
        let cfg = HfConfig::from_bytes(
            "config.json",
            br#"{"model_type": "llama", "hidden_size": 8, "intermediate_size": 16,
                "num_hidden_layers": 1, "num_attention_heads": 2, "vocab_size": 3}"#,
        )
        .unwrap();
        let c = LlamaConfig::from_hf(&cfg).unwrap();
        let strings = |s: &[&str]| {
            MetaValue::Array(s.iter().map(|x| MetaValue::String(x.to_string())).collect())
        };
        let kept = vec![
            (
                "tokenizer.ggml.model".to_string(),
                Some(MetaValue::String("gpt2".into())),
            ),
            (
                "tokenizer.ggml.pre".to_string(),
                Some(MetaValue::String("starcoder".into())),
            ),
            ("tokenizer.ggml.tokens".to_string(), None),
        ];
        fn meta<'a>(
            cfg: &'a HfConfig,
            c: &'a LlamaConfig,
            source: &'a [asset::SourceEntry],
        ) -> Metadata<'a> {
            Metadata {
                cfg,
                c,
                arch: "llama",
                file_type: 0,
                name: "m".into(),
                source: Some(source),
            }
        }
        let tokenizer = br#"{"model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": [["a", "b"]]}}"#;
        let assets = BTreeMap::from([(TOKENIZER_ASSET.to_string(), tokenizer.to_vec())]);
        let out = meta(&cfg, &c, &kept).tokenizer(&assets).unwrap();
        assert_eq!(out[1].1, MetaValue::String("starcoder".into()));
        assert_eq!(
            out[2],
            (
                "tokenizer.ggml.tokens".to_string(),
                strings(&["a", "b", "ab"])
            )
        );
        // A vocabulary tokenizer.json cannot express (a repeated token) is
        // kept in the asset; tokenizer.json is then not read at all.
        let mut own = kept.clone();
        own[2].1 = Some(strings(&["a", "a", "ab"]));
        let broken = BTreeMap::from([(TOKENIZER_ASSET.to_string(), b"not json".to_vec())]);
        let out = meta(&cfg, &c, &own).tokenizer(&broken).unwrap();
        assert_eq!(out[2].1, strings(&["a", "a", "ab"]));
        assert!(meta(&cfg, &c, &kept).tokenizer(&broken).is_err());
    }
}
