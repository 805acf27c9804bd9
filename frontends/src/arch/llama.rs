//! The LLaMA family as a template: LLaMA 2/3, SmolLM2, Mistral-style and
//! Qwen2-style decoders (grouped-query attention, rotary embeddings, RMSNorm,
//! SwiGLU, optional attention bias, optional tied embeddings).
//!
//! The graph is the prefill forward pass: `input_ids: i64[batch, seq]` →
//! `logits: f32[batch, seq, vocab]`, causal, positions `0..seq`.

use super::builder::{DimSpec, GraphBuilder};
use super::config::HfConfig;
use super::weights::{load_weight as load, WeightSource};
use super::{Architecture, Layout, WeightSpec};
use crate::ImportError;
use kiln_ir::{DType, Graph, Op, Tensor};

/// The template's registry entry.
pub const ARCH: Architecture = Architecture {
    name: "llama",
    model_types: &["llama", "mistral", "qwen2"],
    task: "causal-lm",
    build,
    weights,
};

/// The hyper-parameters the template reads from `config.json`.
#[derive(Clone, Debug, PartialEq)]
pub struct LlamaConfig {
    /// Width of the residual stream.
    pub hidden: usize,
    /// Width of the SwiGLU hidden layer.
    pub intermediate: usize,
    /// Number of decoder layers.
    pub layers: usize,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads (grouped-query attention when fewer than `heads`).
    pub kv_heads: usize,
    /// Size of one head.
    pub head_dim: usize,
    /// Vocabulary size.
    pub vocab: usize,
    /// RMSNorm epsilon.
    pub rms_eps: f32,
    /// Longest sequence the rotary cache covers.
    pub max_positions: usize,
    /// Inverse frequencies of the rotary embedding, one per rotated pair.
    pub inv_freq: Vec<f64>,
    /// The output head shares the embedding matrix.
    pub tied_embeddings: bool,
}

impl LlamaConfig {
    /// Reads the config, applying Hugging Face's defaults.
    pub fn from_hf(cfg: &HfConfig) -> Result<Self, ImportError> {
        let hidden = cfg.usize("hidden_size")?;
        let heads = cfg.usize("num_attention_heads")?;
        if heads == 0 || hidden % heads != 0 {
            return Err(cfg.error(
                "num_attention_heads",
                format!("{heads} heads do not divide hidden_size {hidden}"),
            ));
        }
        let kv_heads = cfg.opt_usize("num_key_value_heads")?.unwrap_or(heads);
        if kv_heads == 0 || heads % kv_heads != 0 {
            return Err(cfg.error(
                "num_key_value_heads",
                format!("{kv_heads} key/value heads do not divide {heads} query heads"),
            ));
        }
        let head_dim = cfg.opt_usize("head_dim")?.unwrap_or(hidden / heads);
        if head_dim % 2 != 0 {
            return Err(cfg.error(
                "head_dim",
                format!("{head_dim} is odd; rotary embeddings rotate pairs"),
            ));
        }
        let theta = cfg.opt_f64("rope_theta")?.unwrap_or(10_000.0);
        let max_positions = cfg.opt_usize("max_position_embeddings")?.unwrap_or(2048);
        let partial = cfg.opt_f64("partial_rotary_factor")?.unwrap_or(1.0);
        let rot_dim = ((head_dim as f64 * partial) as usize) & !1;
        let inv_freq = rope_inv_freq(cfg, theta, rot_dim)?;
        Ok(LlamaConfig {
            hidden,
            intermediate: cfg.usize("intermediate_size")?,
            layers: cfg.usize("num_hidden_layers")?,
            heads,
            kv_heads,
            head_dim,
            vocab: cfg.usize("vocab_size")?,
            rms_eps: cfg.opt_f64("rms_norm_eps")?.unwrap_or(1e-6) as f32,
            max_positions,
            inv_freq,
            // Hugging Face's LlamaConfig, MistralConfig and Qwen2Config
            // default to an untied head.
            tied_embeddings: cfg.opt_bool("tie_word_embeddings")?.unwrap_or(false),
        })
    }
}

/// Inverse rotary frequencies for `rot_dim` rotated dims, with the config's
/// `rope_scaling` (none, `linear` or `llama3`).
fn rope_inv_freq(cfg: &HfConfig, theta: f64, rot_dim: usize) -> Result<Vec<f64>, ImportError> {
    let base: Vec<f64> = (0..rot_dim / 2)
        .map(|i| 1.0 / theta.powf((2 * i) as f64 / rot_dim as f64))
        .collect();
    let Some(scaling) = cfg.get("rope_scaling") else {
        return Ok(base);
    };
    let obj = scaling
        .as_object()
        .ok_or_else(|| cfg.error("rope_scaling", "expected an object"))?;
    let kind = obj
        .get("rope_type")
        .or_else(|| obj.get("type"))
        .and_then(|v| v.as_str())
        .unwrap_or("default");
    let num = |k: &str| -> Result<f64, ImportError> {
        obj.get(k).and_then(|v| v.as_f64()).ok_or_else(|| {
            cfg.error(
                "rope_scaling",
                format!("'{kind}' scaling needs a number '{k}'"),
            )
        })
    };
    match kind {
        "default" => Ok(base),
        "linear" => {
            let factor = num("factor")?;
            Ok(base.iter().map(|f| f / factor).collect())
        }
        "llama3" => {
            // As in Hugging Face's `_compute_llama3_parameters`.
            let factor = num("factor")?;
            let low = num("low_freq_factor")?;
            let high = num("high_freq_factor")?;
            let old_ctx = num("original_max_position_embeddings")?;
            let low_wavelen = old_ctx / low;
            let high_wavelen = old_ctx / high;
            Ok(base
                .iter()
                .map(|&f| {
                    let wavelen = 2.0 * std::f64::consts::PI / f;
                    if wavelen < high_wavelen {
                        f
                    } else if wavelen > low_wavelen {
                        f / factor
                    } else {
                        let smooth = (old_ctx / wavelen - low) / (high - low);
                        (1.0 - smooth) * f / factor + smooth * f
                    }
                })
                .collect())
        }
        other => Err(cfg.error(
            "rope_scaling",
            format!("rope type '{other}' is not supported (supported: default, linear, llama3)"),
        )),
    }
}

fn layer(i: usize, rest: &str) -> String {
    format!("model.layers.{i}.{rest}")
}

/// The weights the template reads, with the layout Kiln keeps them in.
fn weights(cfg: &HfConfig, source: &dyn Fn(&str) -> bool) -> Result<Vec<WeightSpec>, ImportError> {
    let mut c = LlamaConfig::from_hf(cfg)?;
    // A checkpoint without an output head ties it, whatever the config says.
    c.tied_embeddings |= !source("lm_head.weight");
    let mut w = vec![
        WeightSpec::new("model.embed_tokens.weight", Layout::AsIs),
        WeightSpec::new("model.norm.weight", Layout::AsIs),
    ];
    if !c.tied_embeddings {
        w.push(WeightSpec::new("lm_head.weight", Layout::AsIs));
    }
    for i in 0..c.layers {
        w.push(WeightSpec::new(
            &layer(i, "input_layernorm.weight"),
            Layout::AsIs,
        ));
        w.push(WeightSpec::new(
            &layer(i, "post_attention_layernorm.weight"),
            Layout::AsIs,
        ));
        for p in ["q_proj", "k_proj", "v_proj", "o_proj"] {
            w.push(WeightSpec::new(
                &layer(i, &format!("self_attn.{p}.weight")),
                Layout::Transposed,
            ));
            let bias = layer(i, &format!("self_attn.{p}.bias"));
            if source(&bias) {
                w.push(WeightSpec::new(&bias, Layout::AsIs));
            }
        }
        for p in ["gate_proj", "up_proj", "down_proj"] {
            w.push(WeightSpec::new(
                &layer(i, &format!("mlp.{p}.weight")),
                Layout::Transposed,
            ));
        }
    }
    Ok(w)
}

/// Checks a weight's dims against what the config implies.
fn expect_dims(
    src: &dyn WeightSource,
    name: &str,
    t: &Tensor,
    dims: &[usize],
) -> Result<(), ImportError> {
    if t.dims() != dims {
        return Err(ImportError::BadTensor {
            file: src.origin(),
            tensor: name.to_string(),
            problem: format!(
                "expected dims {dims:?} from config.json, found {:?}",
                t.dims()
            ),
        });
    }
    Ok(())
}

fn build(cfg: &HfConfig, src: &mut dyn WeightSource) -> Result<Graph, ImportError> {
    let mut c = LlamaConfig::from_hf(cfg)?;
    c.tied_embeddings |= !src.contains("lm_head.weight");
    let mut b = GraphBuilder::new(cfg.opt_str("_name_or_path")?.unwrap_or("llama"));

    let ids = b.input(
        "input_ids",
        DType::I64,
        &[DimSpec::Sym("batch"), DimSpec::Sym("seq")],
    );

    let embed = src.get("model.embed_tokens.weight")?;
    expect_dims(
        src,
        "model.embed_tokens.weight",
        &embed,
        &[c.vocab, c.hidden],
    )?;
    let embed = b.constant("model.embed_tokens.weight", embed);
    let mut h = b.op(Op::Gather { axis: 0 }, &[embed, ids]);

    // Rotary tables for every position, computed in f64 and stored in f32.
    let half = c.inv_freq.len();
    let mut cos = Vec::with_capacity(c.max_positions * half);
    let mut sin = Vec::with_capacity(c.max_positions * half);
    for p in 0..c.max_positions {
        for f in &c.inv_freq {
            let angle = p as f64 * f;
            cos.push(angle.cos() as f32);
            sin.push(angle.sin() as f32);
        }
    }
    let table = |v| Tensor::from_vec(vec![c.max_positions, half], v).expect("dims match the table");
    let cos = b.constant("rope.cos", table(cos));
    let sin = b.constant("rope.sin", table(sin));

    // position_ids = [0, 1, …, seq-1] for every sequence of the batch.
    let shape = b.op(
        Op::Shape {
            start: 0,
            end: None,
        },
        &[ids],
    );
    let one = b.ints(&[1]);
    let seq = b.op(Op::Gather { axis: 0 }, &[shape, one]);
    let seq = b.op(Op::Squeeze { axes: None }, &[seq]);
    let zero_s = b.constant("rope.start", Tensor::scalar(0i64));
    let one_s = b.constant("rope.step", Tensor::scalar(1i64));
    let positions = b.op(Op::Range, &[zero_s, seq, one_s]);
    let positions = b.unsqueeze(positions, &[0]);
    let positions = b.op(Op::Expand, &[positions, shape]);

    let rot_dim = 2 * half;
    let rotary = |heads: usize| Op::RotaryEmbedding {
        interleaved: false,
        num_heads: heads as i64,
        rotary_embedding_dim: if rot_dim == c.head_dim {
            0
        } else {
            rot_dim as i64
        },
    };
    let norm = Op::RmsNorm {
        axis: -1,
        epsilon: c.rms_eps.into(),
    };

    for i in 0..c.layers {
        b.scope(format!("layers.{i}"));
        let w = |n: &str| layer(i, n);
        let attn_norm = load(&mut b, src, &w("input_layernorm.weight"), Layout::AsIs)?;
        let x = b.op(norm.clone(), &[h, attn_norm]);
        let mut proj = |b: &mut GraphBuilder, p: &str, x| -> Result<_, ImportError> {
            let wname = w(&format!("self_attn.{p}.weight"));
            let weight = load(b, src, &wname, Layout::Transposed)?;
            let bname = w(&format!("self_attn.{p}.bias"));
            let bias = if src.contains(&bname) {
                Some(load(b, src, &bname, Layout::AsIs)?)
            } else {
                None
            };
            Ok(b.linear(x, weight, bias))
        };
        let q = proj(&mut b, "q_proj", x)?;
        let k = proj(&mut b, "k_proj", x)?;
        let v = proj(&mut b, "v_proj", x)?;
        let q = b.op(rotary(c.heads), &[q, cos, sin, positions]);
        let k = b.op(rotary(c.kv_heads), &[k, cos, sin, positions]);
        let attn = b.attention(true, c.heads, c.kv_heads, &[q, k, v]);
        let o = proj(&mut b, "o_proj", attn)?;
        h = b.op(Op::Add, &[h, o]);

        let ffn_norm = load(
            &mut b,
            src,
            &w("post_attention_layernorm.weight"),
            Layout::AsIs,
        )?;
        let x = b.op(norm.clone(), &[h, ffn_norm]);
        let gate_w = load(&mut b, src, &w("mlp.gate_proj.weight"), Layout::Transposed)?;
        let up_w = load(&mut b, src, &w("mlp.up_proj.weight"), Layout::Transposed)?;
        let down_w = load(&mut b, src, &w("mlp.down_proj.weight"), Layout::Transposed)?;
        let gate = b.linear(x, gate_w, None);
        let gate = b.op(Op::Swish { alpha: 1.0.into() }, &[gate]);
        let up = b.linear(x, up_w, None);
        let act = b.op(Op::Mul, &[gate, up]);
        let down = b.linear(act, down_w, None);
        h = b.op(Op::Add, &[h, down]);
    }

    b.scope("head");
    let final_norm = load(&mut b, src, "model.norm.weight", Layout::AsIs)?;
    let x = b.op(norm, &[h, final_norm]);
    // The head multiplies by the `[vocab, hidden]` matrix transposed, so a
    // tied head reads the embedding table itself instead of a copy.
    let head = if c.tied_embeddings {
        embed
    } else {
        let t = src.get("lm_head.weight")?;
        expect_dims(src, "lm_head.weight", &t, &[c.vocab, c.hidden])?;
        b.constant("lm_head.weight", t)
    };
    let flat = b.reshape(x, &[-1, c.hidden as i64]);
    let logits = b.op(
        Op::Gemm {
            alpha: 1.0.into(),
            beta: 1.0.into(),
            trans_a: false,
            trans_b: true,
        },
        &[flat, head],
    );
    let out_shape = b.op(
        Op::Shape {
            start: 0,
            end: None,
        },
        &[ids],
    );
    let vocab = b.ints(&[c.vocab as i64]);
    let out_shape = b.op(Op::Concat { axis: 0 }, &[out_shape, vocab]);
    let logits = b.op(Op::Reshape { allowzero: false }, &[logits, out_shape]);
    b.output(logits, "logits");
    b.finish().map_err(|source| ImportError::Infer {
        file: src.origin(),
        source,
    })
}
