//! GGUF language models (llama.cpp's format) through the same templates as
//! Hugging Face folders: the GGUF metadata becomes a `config.json`, GGUF
//! tensor names become Hugging Face names, and the query/key rows that
//! llama.cpp's converter permuted for its rotary layout are put back.
//!
//! The inverse mappings ([`gguf_name`], [`permute_rows`],
//! [`gguf_architecture`]) serve the GGUF exporter ([`crate::gguf::export`]);
//! the metadata the config and tokenizer cannot hold travels with the model
//! as the [`GGUF_METADATA_ASSET`] so an export writes it back.

use crate::arch::{self, HfConfig, WeightSource};
use crate::gguf::{GgufFile, MetaValue};
use crate::safetensors::{CONFIG_ASSET, TOKENIZER_ASSET, TOKENIZER_CONFIG_ASSET};
use crate::tokenizer::{GgufVocab, Tokenizer};
use crate::{ImportError, Model};
use kiln_ir::Tensor;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::path::Path;

/// GGUF architectures Kiln imports, and whether llama.cpp's converter
/// permuted their query/key rows (LLaMA's "normal" rotary layout).
const ARCHITECTURES: &[(&str, &str, bool)] = &[("llama", "llama", true), ("qwen2", "qwen2", false)];

/// Asset holding the GGUF metadata of an imported file that `config.json`
/// and `tokenizer.json` do not carry exactly (see
/// [`crate::gguf::export::source_metadata_json`]).
pub const GGUF_METADATA_ASSET: &str = "gguf_metadata.json";

/// The GGUF architecture llama.cpp's converter writes for a Hugging Face
/// `model_type`, and whether it permutes query/key rows: Mistral
/// checkpoints are converted as `llama`.
pub fn gguf_architecture(model_type: &str) -> Option<(&'static str, bool)> {
    let arch = match model_type {
        "mistral" => "llama",
        other => other,
    };
    ARCHITECTURES
        .iter()
        .find(|a| a.1 == arch)
        .map(|&(gguf, _, permuted)| (gguf, permuted))
}

/// The `model_type`s [`gguf_architecture`] maps.
pub const EXPORTABLE_MODEL_TYPES: &[&str] = &["llama", "mistral", "qwen2"];

/// Imports a GGUF file.
pub fn import(path: &Path) -> Result<Model, ImportError> {
    import_layers(path, None)
}

/// Imports a GGUF file keeping only its first `layers` decoder layers (all
/// when `None` or more than it has): a smaller model with the same weights,
/// for tests and for measuring how compile time grows with depth.
pub fn import_layers(path: &Path, layers: Option<usize>) -> Result<Model, ImportError> {
    let file = GgufFile::open(path)?;
    let origin = path.display().to_string();
    let arch_name = meta_str(&file, &origin, "general.architecture")?.to_string();
    let Some(&(_, model_type, permuted)) = ARCHITECTURES.iter().find(|a| a.0 == arch_name) else {
        let known: Vec<&str> = ARCHITECTURES.iter().map(|a| a.0).collect();
        return Err(ImportError::InvalidModel {
            file: origin,
            message: format!(
                "general.architecture is '{arch_name}', which Kiln cannot import from GGUF (supported: {})",
                known.join(", ")
            ),
        });
    };
    let mut config = hf_config(&file, &origin, &arch_name, model_type)?;
    if let Some(keep) = layers {
        if let Some(n) = config.get("num_hidden_layers").and_then(Value::as_u64) {
            config.insert(
                "num_hidden_layers".to_string(),
                Value::from(n.min(keep as u64)),
            );
        }
    }
    let config_json = serde_json::to_vec_pretty(&Value::Object(config.clone()))
        .expect("a JSON object always serializes");
    let cfg = HfConfig {
        file: origin.clone(),
        raw: config,
        pooling: None,
    };
    let heads = cfg.usize("num_attention_heads")?;
    let kv_heads = cfg.opt_usize("num_key_value_heads")?.unwrap_or(heads);
    let vocab = gguf_vocab(&file, &origin)?;
    let tokenizer = Tokenizer::from_gguf_vocab(&vocab)?;
    let tokenizer_json = tokenizer.to_json()?;
    let metadata_json =
        crate::gguf::export::source_metadata_json(file.metadata(), &tokenizer_json, &origin)?;
    let chat_template = file
        .get("tokenizer.chat_template")
        .and_then(MetaValue::as_str)
        .map(str::to_string);

    let mut source = GgufSource {
        file,
        origin,
        permuted,
        heads,
        kv_heads,
    };
    let mut graph = arch::build(&cfg, &mut source)?;
    if let Some(name) = source.file.get("general.name").and_then(MetaValue::as_str) {
        graph.name = name.to_string();
    }
    let mut assets = BTreeMap::new();
    assets.insert(CONFIG_ASSET.to_string(), config_json);
    assets.insert(TOKENIZER_ASSET.to_string(), tokenizer_json.into_bytes());
    assets.insert(
        TOKENIZER_CONFIG_ASSET.to_string(),
        with_chat_template(tokenizer.to_config_json(), chat_template.as_deref()).into_bytes(),
    );
    assets.insert(GGUF_METADATA_ASSET.to_string(), metadata_json.into_bytes());
    Ok(Model { graph, assets })
}

/// `tokenizer_config.json` text with `chat_template` added (as Hugging Face
/// folders keep it), when there is one.
pub fn with_chat_template(config_json: String, template: Option<&str>) -> String {
    let Some(template) = template else {
        return config_json;
    };
    match serde_json::from_str::<Value>(&config_json) {
        Ok(Value::Object(mut obj)) => {
            obj.insert("chat_template".into(), Value::String(template.to_string()));
            Value::Object(obj).to_string()
        }
        _ => config_json,
    }
}

fn meta_str<'a>(file: &'a GgufFile, origin: &str, key: &str) -> Result<&'a str, ImportError> {
    file.get(key)
        .and_then(MetaValue::as_str)
        .ok_or_else(|| missing(origin, key, "a string"))
}

fn missing(origin: &str, key: &str, what: &str) -> ImportError {
    ImportError::InvalidModel {
        file: origin.to_string(),
        message: format!("metadata key '{key}' is missing or is not {what}"),
    }
}

/// A Hugging Face `config.json` equivalent to the GGUF metadata.
fn hf_config(
    file: &GgufFile,
    origin: &str,
    arch: &str,
    model_type: &str,
) -> Result<Map<String, Value>, ImportError> {
    let key = |k: &str| format!("{arch}.{k}");
    let uint = |k: &str| -> Result<u64, ImportError> {
        file.get(&key(k))
            .and_then(MetaValue::as_u64)
            .ok_or_else(|| missing(origin, &key(k), "an unsigned integer"))
    };
    let opt_uint = |k: &str| file.get(&key(k)).and_then(MetaValue::as_u64);
    let opt_f64 = |k: &str| file.get(&key(k)).and_then(MetaValue::as_f64);
    let hidden = uint("embedding_length")?;
    let heads = uint("attention.head_count")?;
    let vocab = match opt_uint("vocab_size") {
        Some(v) => v,
        None => file
            .get("tokenizer.ggml.tokens")
            .and_then(MetaValue::as_array)
            .map(|a| a.len() as u64)
            .ok_or_else(|| missing(origin, &key("vocab_size"), "an unsigned integer"))?,
    };
    let has_output = file.tensor_info("output.weight").is_some();
    let mut c = Map::new();
    let class = if model_type == "qwen2" {
        "Qwen2ForCausalLM"
    } else {
        "LlamaForCausalLM"
    };
    c.insert("architectures".into(), json!([class]));
    c.insert("model_type".into(), json!(model_type));
    c.insert("hidden_size".into(), json!(hidden));
    c.insert(
        "intermediate_size".into(),
        json!(uint("feed_forward_length")?),
    );
    c.insert("num_hidden_layers".into(), json!(uint("block_count")?));
    c.insert("num_attention_heads".into(), json!(heads));
    c.insert(
        "num_key_value_heads".into(),
        json!(opt_uint("attention.head_count_kv").unwrap_or(heads)),
    );
    if let Some(d) = opt_uint("attention.key_length") {
        c.insert("head_dim".into(), json!(d));
    }
    if let Some(eps) = opt_f64("attention.layer_norm_rms_epsilon") {
        // Through f32 so the value is the one llama.cpp uses, printed shortest.
        c.insert("rms_norm_eps".into(), json!(eps as f32));
    }
    c.insert(
        "rope_theta".into(),
        json!(opt_f64("rope.freq_base").unwrap_or(10_000.0) as f32),
    );
    if let Some(ctx) = opt_uint("context_length") {
        c.insert("max_position_embeddings".into(), json!(ctx));
    }
    if let Some(kind) = file
        .get(&key("rope.scaling.type"))
        .and_then(MetaValue::as_str)
    {
        match kind {
            "none" => {}
            "linear" => {
                let factor = opt_f64("rope.scaling.factor")
                    .ok_or_else(|| missing(origin, &key("rope.scaling.factor"), "a number"))?;
                c.insert(
                    "rope_scaling".into(),
                    json!({"rope_type": "linear", "factor": factor}),
                );
            }
            other => {
                return Err(ImportError::InvalidModel {
                    file: origin.to_string(),
                    message: format!(
                        "{} is '{other}', which Kiln does not support (supported: none, linear)",
                        key("rope.scaling.type")
                    ),
                })
            }
        }
    }
    if let Some(rot) = opt_uint("rope.dimension_count") {
        let head_dim = opt_uint("attention.key_length").unwrap_or(hidden / heads.max(1));
        if rot != head_dim {
            c.insert(
                "partial_rotary_factor".into(),
                json!(rot as f64 / head_dim as f64),
            );
        }
    }
    c.insert("vocab_size".into(), json!(vocab));
    c.insert("tie_word_embeddings".into(), json!(!has_output));
    for (k, hf) in [
        ("tokenizer.ggml.bos_token_id", "bos_token_id"),
        ("tokenizer.ggml.eos_token_id", "eos_token_id"),
    ] {
        if let Some(v) = file.get(k).and_then(MetaValue::as_u64) {
            c.insert(hf.into(), json!(v));
        }
    }
    c.insert("torch_dtype".into(), json!("float32"));
    Ok(c)
}

/// The `tokenizer.ggml.*` metadata as a [`GgufVocab`].
fn gguf_vocab(file: &GgufFile, origin: &str) -> Result<GgufVocab, ImportError> {
    let get = |k: &str| file.get(&format!("tokenizer.ggml.{k}"));
    let strings = |k: &str| -> Option<Vec<String>> {
        get(k)?
            .as_array()?
            .iter()
            .map(|v| v.as_str().map(str::to_string))
            .collect()
    };
    let id = |k: &str| get(k).and_then(MetaValue::as_u64).map(|v| v as u32);
    let flag = |k: &str| get(k).and_then(MetaValue::as_bool);
    Ok(GgufVocab {
        model: meta_str(file, origin, "tokenizer.ggml.model")?.to_string(),
        pre: get("pre").and_then(MetaValue::as_str).map(str::to_string),
        tokens: strings("tokens")
            .ok_or_else(|| missing(origin, "tokenizer.ggml.tokens", "a list of strings"))?,
        scores: get("scores")
            .and_then(MetaValue::as_array)
            .map(|a| a.iter().map(|v| v.as_f64().unwrap_or(0.0) as f32).collect()),
        token_types: get("token_type")
            .and_then(MetaValue::as_array)
            .map(|a| a.iter().map(|v| v.as_i64().unwrap_or(1) as i32).collect()),
        merges: strings("merges"),
        bos: id("bos_token_id"),
        eos: id("eos_token_id"),
        unk: id("unknown_token_id"),
        pad: id("padding_token_id"),
        add_bos: flag("add_bos_token"),
        add_eos: flag("add_eos_token"),
        add_space_prefix: flag("add_space_prefix"),
    })
}

/// Hugging Face name → GGUF name, for the tensors of the LLaMA template
/// (`model.layers.3.self_attn.q_proj.weight` → `blk.3.attn_q.weight`); the
/// names llama.cpp's converter writes.
pub fn gguf_name(hf: &str) -> Option<String> {
    let fixed = match hf {
        "model.embed_tokens.weight" => Some("token_embd.weight"),
        "model.norm.weight" => Some("output_norm.weight"),
        "lm_head.weight" => Some("output.weight"),
        _ => None,
    };
    if let Some(f) = fixed {
        return Some(f.to_string());
    }
    let rest = hf.strip_prefix("model.layers.")?;
    let (layer, rest) = rest.split_once('.')?;
    let (module, kind) = rest.rsplit_once('.')?;
    let g = match module {
        "input_layernorm" => "attn_norm",
        "post_attention_layernorm" => "ffn_norm",
        "self_attn.q_proj" => "attn_q",
        "self_attn.k_proj" => "attn_k",
        "self_attn.v_proj" => "attn_v",
        "self_attn.o_proj" => "attn_output",
        "mlp.gate_proj" => "ffn_gate",
        "mlp.up_proj" => "ffn_up",
        "mlp.down_proj" => "ffn_down",
        _ => return None,
    };
    Some(format!("blk.{layer}.{g}.{kind}"))
}

/// A GGUF file seen as Hugging Face-named f32 weights.
struct GgufSource {
    file: GgufFile,
    origin: String,
    permuted: bool,
    heads: usize,
    kv_heads: usize,
}

impl WeightSource for GgufSource {
    fn get(&mut self, name: &str) -> Result<Tensor, ImportError> {
        let g = gguf_name(name).ok_or_else(|| ImportError::InvalidModel {
            file: self.origin.clone(),
            message: format!("no GGUF tensor corresponds to '{name}'"),
        })?;
        if self.file.tensor_info(&g).is_none() {
            return Err(ImportError::InvalidModel {
                file: self.origin.clone(),
                message: format!("the file has no tensor '{g}' (needed for '{name}')"),
            });
        }
        let t = self.file.dequantize(&g)?;
        if !self.permuted {
            return Ok(t);
        }
        if name.ends_with("q_proj.weight") || name.ends_with("q_proj.bias") {
            unpermute_rows(t, self.heads, &g, &self.origin)
        } else if name.ends_with("k_proj.weight") || name.ends_with("k_proj.bias") {
            unpermute_rows(t, self.kv_heads, &g, &self.origin)
        } else {
            Ok(t)
        }
    }

    fn contains(&self, name: &str) -> bool {
        gguf_name(name).is_some_and(|g| self.file.tensor_info(&g).is_some())
    }

    fn origin(&self) -> String {
        self.origin.clone()
    }
}

/// Undoes llama.cpp's converter permutation of query/key rows.
///
/// The converter reshapes the rows of each head as `(2, head_dim/2)` and
/// swaps the two axes, so that rotary pairs become adjacent rows; the
/// Hugging Face layout (and Kiln's rotary op) wants the two halves instead.
/// GGUF row `h·d + 2i + j` is Hugging Face row `h·d + j·d/2 + i`.
pub fn unpermute_rows(
    t: Tensor,
    heads: usize,
    name: &str,
    origin: &str,
) -> Result<Tensor, ImportError> {
    let bad = |problem: String| ImportError::BadTensor {
        file: origin.to_string(),
        tensor: name.to_string(),
        problem,
    };
    let rows = *t
        .dims()
        .first()
        .ok_or_else(|| bad("expected at least one dim".into()))?;
    let cols: usize = t.dims()[1..].iter().product();
    if heads == 0 || rows % (2 * heads) != 0 {
        return Err(bad(format!(
            "{rows} rows do not split into {heads} heads of rotary pairs"
        )));
    }
    let d = rows / heads;
    let src = t.to_vec::<f32>().map_err(|e| bad(e.to_string()))?;
    let mut dst = vec![0f32; src.len()];
    for h in 0..heads {
        for i in 0..d / 2 {
            for j in 0..2 {
                let from = h * d + 2 * i + j;
                let to = h * d + j * (d / 2) + i;
                dst[to * cols..(to + 1) * cols]
                    .copy_from_slice(&src[from * cols..(from + 1) * cols]);
            }
        }
    }
    Tensor::from_vec(t.dims().to_vec(), dst).map_err(|e| bad(e.to_string()))
}

/// Applies llama.cpp's converter permutation of query/key rows, the inverse
/// of [`unpermute_rows`]: Hugging Face row `h·d + j·d/2 + i` becomes GGUF row
/// `h·d + 2i + j` (`d` = rows per head). `data` holds `rows` rows of equal
/// byte length (f32 values or whole quantized blocks alike); `None` when the
/// rows do not split into `heads` heads of rotary pairs or the bytes into
/// `rows` rows.
pub fn permute_rows(data: &[u8], rows: usize, heads: usize) -> Option<Vec<u8>> {
    if rows == 0
        || heads == 0
        || !rows.is_multiple_of(2 * heads)
        || !data.len().is_multiple_of(rows)
    {
        return None;
    }
    let row = data.len() / rows;
    let d = rows / heads;
    let mut out = vec![0u8; data.len()];
    for h in 0..heads {
        for i in 0..d / 2 {
            for j in 0..2 {
                let from = h * d + j * (d / 2) + i;
                let to = h * d + 2 * i + j;
                out[to * row..(to + 1) * row].copy_from_slice(&data[from * row..(from + 1) * row]);
            }
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permute_rows_inverts_unpermute_rows() {
        // 2 heads of 6 rows, 3 columns; llama.cpp's converter reshapes each
        // head as (2, d/2) and swaps the axes: rows 0..6 of a head become
        // 0, 3, 1, 4, 2, 5.
        let (rows, cols) = (12, 3);
        let values: Vec<f32> = (0..rows * cols).map(|i| i as f32).collect();
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let permuted = permute_rows(&bytes, rows, 2).unwrap();
        let row =
            |b: &[u8], r: usize| f32::from_le_bytes(b[r * 12..r * 12 + 4].try_into().unwrap());
        let order: Vec<f32> = (0..rows).map(|r| row(&permuted, r) / 3.0).collect();
        assert_eq!(
            order,
            [0.0, 3.0, 1.0, 4.0, 2.0, 5.0, 6.0, 9.0, 7.0, 10.0, 8.0, 11.0]
        );
        let t = Tensor::from_raw(kiln_ir::DType::F32, vec![rows, cols], &permuted).unwrap();
        let back = unpermute_rows(t, 2, "w", "test").unwrap();
        assert_eq!(back.bytes(), &bytes[..]);
        assert!(permute_rows(&bytes, rows, 5).is_none());
        assert!(permute_rows(&bytes[1..], rows, 2).is_none());
    }
}
