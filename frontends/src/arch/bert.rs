//! The BERT family as a template: BERT, MiniLM and other encoders with
//! post-LayerNorm blocks and absolute position embeddings, plus the
//! sentence-transformers pooling head when the folder has one.
//!
//! Inputs `input_ids`, `attention_mask`, `token_type_ids` (all
//! `i64[batch, seq]`); outputs `last_hidden_state: f32[batch, seq, hidden]`
//! and, with pooling, `sentence_embedding: f32[batch, hidden]`.

use super::builder::{DimSpec, GraphBuilder};
use super::config::{HfConfig, PoolingMode};
use super::weights::{load_weight, WeightSource};
use super::{Architecture, Layout, WeightSpec, META_TASK};
use crate::ImportError;
use kiln_ir::{DType, GeluApprox, Graph, Op, ReduceKind, Tensor, ValueId};

/// The template's registry entry.
pub const ARCH: Architecture = Architecture {
    name: "bert",
    model_types: &["bert"],
    task: "encoder",
    build,
    weights,
};

/// The hyper-parameters the template reads from `config.json`.
struct BertConfig {
    layers: usize,
    heads: usize,
    eps: f32,
    gelu: GeluApprox,
}

impl BertConfig {
    fn from_hf(cfg: &HfConfig) -> Result<Self, ImportError> {
        let hidden = cfg.usize("hidden_size")?;
        let heads = cfg.usize("num_attention_heads")?;
        if heads == 0 || hidden % heads != 0 {
            return Err(cfg.error(
                "num_attention_heads",
                format!("{heads} heads do not divide hidden_size {hidden}"),
            ));
        }
        if let Some(kind) = cfg.opt_str("position_embedding_type")? {
            if kind != "absolute" {
                return Err(cfg.error(
                    "position_embedding_type",
                    format!("'{kind}' is not supported (supported: absolute)"),
                ));
            }
        }
        let gelu = match cfg.opt_str("hidden_act")?.unwrap_or("gelu") {
            "gelu" => GeluApprox::None,
            "gelu_new" | "gelu_pytorch_tanh" => GeluApprox::Tanh,
            other => {
                return Err(cfg.error(
                    "hidden_act",
                    format!(
                        "'{other}' is not supported (supported: gelu, gelu_new, gelu_pytorch_tanh)"
                    ),
                ))
            }
        };
        Ok(BertConfig {
            layers: cfg.usize("num_hidden_layers")?,
            heads,
            eps: cfg.opt_f64("layer_norm_eps")?.unwrap_or(1e-12) as f32,
            gelu,
        })
    }
}

/// Checkpoints name BERT weights with or without a `bert.` prefix.
fn prefix(source: &dyn Fn(&str) -> bool) -> &'static str {
    if source("bert.embeddings.word_embeddings.weight") {
        "bert."
    } else {
        ""
    }
}

fn weights(cfg: &HfConfig, source: &dyn Fn(&str) -> bool) -> Result<Vec<WeightSpec>, ImportError> {
    let c = BertConfig::from_hf(cfg)?;
    let p = prefix(source);
    let mut w = Vec::new();
    for e in [
        "word_embeddings",
        "position_embeddings",
        "token_type_embeddings",
    ] {
        w.push(WeightSpec::new(
            &format!("{p}embeddings.{e}.weight"),
            Layout::AsIs,
        ));
    }
    for n in ["weight", "bias"] {
        w.push(WeightSpec::new(
            &format!("{p}embeddings.LayerNorm.{n}"),
            Layout::AsIs,
        ));
    }
    for i in 0..c.layers {
        let l = format!("{p}encoder.layer.{i}.");
        for lin in [
            "attention.self.query",
            "attention.self.key",
            "attention.self.value",
            "attention.output.dense",
            "intermediate.dense",
            "output.dense",
        ] {
            w.push(WeightSpec::new(
                &format!("{l}{lin}.weight"),
                Layout::Transposed,
            ));
            w.push(WeightSpec::new(&format!("{l}{lin}.bias"), Layout::AsIs));
        }
        for ln in ["attention.output.LayerNorm", "output.LayerNorm"] {
            w.push(WeightSpec::new(&format!("{l}{ln}.weight"), Layout::AsIs));
            w.push(WeightSpec::new(&format!("{l}{ln}.bias"), Layout::AsIs));
        }
    }
    Ok(w)
}

fn build(cfg: &HfConfig, src: &mut dyn WeightSource) -> Result<Graph, ImportError> {
    let c = BertConfig::from_hf(cfg)?;
    let has = |n: &str| src.contains(n);
    let p = prefix(&has);
    let mut b = GraphBuilder::new(cfg.opt_str("_name_or_path")?.unwrap_or("bert"));
    let dims = [DimSpec::Sym("batch"), DimSpec::Sym("seq")];
    let ids = b.input("input_ids", DType::I64, &dims);
    let mask = b.input("attention_mask", DType::I64, &dims);
    let types = b.input("token_type_ids", DType::I64, &dims);

    let layer_norm = Op::LayerNorm {
        axis: -1,
        epsilon: c.eps.into(),
    };

    // Embeddings: word + position + token type, then LayerNorm.
    b.scope("embeddings");
    let word = load_weight(
        &mut b,
        src,
        &format!("{p}embeddings.word_embeddings.weight"),
        Layout::AsIs,
    )?;
    let pos_table = load_weight(
        &mut b,
        src,
        &format!("{p}embeddings.position_embeddings.weight"),
        Layout::AsIs,
    )?;
    let type_table = load_weight(
        &mut b,
        src,
        &format!("{p}embeddings.token_type_embeddings.weight"),
        Layout::AsIs,
    )?;
    let shape = b.op(
        Op::Shape {
            start: 1,
            end: Some(2),
        },
        &[ids],
    );
    let seq = b.op(Op::Squeeze { axes: None }, &[shape]);
    let start = b.constant("embeddings.position_start", Tensor::scalar(0i64));
    let step = b.constant("embeddings.position_step", Tensor::scalar(1i64));
    let positions = b.op(Op::Range, &[start, seq, step]);
    let e_word = b.op(Op::Gather { axis: 0 }, &[word, ids]);
    let e_pos = b.op(Op::Gather { axis: 0 }, &[pos_table, positions]);
    let e_type = b.op(Op::Gather { axis: 0 }, &[type_table, types]);
    let e = b.op(Op::Add, &[e_word, e_pos]);
    let e = b.op(Op::Add, &[e, e_type]);
    let g = load_weight(
        &mut b,
        src,
        &format!("{p}embeddings.LayerNorm.weight"),
        Layout::AsIs,
    )?;
    let beta = load_weight(
        &mut b,
        src,
        &format!("{p}embeddings.LayerNorm.bias"),
        Layout::AsIs,
    )?;
    let mut h = b.op(layer_norm.clone(), &[e, g, beta]);

    // Padding mask, true where a token may be attended: [batch, seq], and
    // [batch, 1, 1, seq] for attention.
    let keep_2d = b.op(
        Op::Cast {
            to: DType::Bool,
            saturate: true,
        },
        &[mask],
    );
    let keep = b.unsqueeze(keep_2d, &[1, 2]);

    for i in 0..c.layers {
        b.scope(format!("layer.{i}"));
        let l = format!("{p}encoder.layer.{i}.");
        let linear = |b: &mut GraphBuilder,
                      src: &mut dyn WeightSource,
                      name: &str,
                      x: ValueId|
         -> Result<ValueId, ImportError> {
            let w = load_weight(b, src, &format!("{l}{name}.weight"), Layout::Transposed)?;
            let bias = load_weight(b, src, &format!("{l}{name}.bias"), Layout::AsIs)?;
            Ok(b.linear(x, w, Some(bias)))
        };
        let q = linear(&mut b, src, "attention.self.query", h)?;
        let k = linear(&mut b, src, "attention.self.key", h)?;
        let v = linear(&mut b, src, "attention.self.value", h)?;
        let attn = b.attention(false, c.heads, c.heads, &[q, k, v, keep]);
        let o = linear(&mut b, src, "attention.output.dense", attn)?;
        let r = b.op(Op::Add, &[h, o]);
        let g = load_weight(
            &mut b,
            src,
            &format!("{l}attention.output.LayerNorm.weight"),
            Layout::AsIs,
        )?;
        let beta = load_weight(
            &mut b,
            src,
            &format!("{l}attention.output.LayerNorm.bias"),
            Layout::AsIs,
        )?;
        h = b.op(layer_norm.clone(), &[r, g, beta]);
        let inter = linear(&mut b, src, "intermediate.dense", h)?;
        let inter = b.op(
            Op::Gelu {
                approximate: c.gelu,
            },
            &[inter],
        );
        let out = linear(&mut b, src, "output.dense", inter)?;
        let r = b.op(Op::Add, &[h, out]);
        let g = load_weight(
            &mut b,
            src,
            &format!("{l}output.LayerNorm.weight"),
            Layout::AsIs,
        )?;
        let beta = load_weight(
            &mut b,
            src,
            &format!("{l}output.LayerNorm.bias"),
            Layout::AsIs,
        )?;
        h = b.op(layer_norm.clone(), &[r, g, beta]);
    }
    b.output(h, "last_hidden_state");

    if let Some(pooling) = cfg.pooling {
        b.scope("pooling");
        let reduce = |kind, axes: &[i64], keepdims| Op::Reduce {
            kind,
            axes: Some(axes.to_vec()),
            keepdims,
            noop_with_empty_axes: false,
        };
        let mut e = match pooling.mode {
            PoolingMode::Cls => {
                let first = b.constant("pooling.first", Tensor::scalar(0i64));
                b.op(Op::Gather { axis: 1 }, &[h, first])
            }
            PoolingMode::Mean => {
                // sum(h · mask) / max(sum(mask), 1e-9), as sentence-transformers does.
                let m = b.op(
                    Op::Cast {
                        to: DType::F32,
                        saturate: true,
                    },
                    &[mask],
                );
                let m = b.unsqueeze(m, &[-1]);
                let masked = b.op(Op::Mul, &[h, m]);
                let sum = b.op(reduce(ReduceKind::Sum, &[1], false), &[masked]);
                let count = b.op(reduce(ReduceKind::Sum, &[1], false), &[m]);
                let floor = b.scalar_f32(1e-9);
                let count = b.op(Op::Max, &[count, floor]);
                b.op(Op::Div, &[sum, count])
            }
            PoolingMode::Max => {
                // Padded tokens get -1e9 so they never win, as sentence-transformers does.
                let m = b.unsqueeze(keep_2d, &[-1]);
                let low = b.scalar_f32(-1e9);
                let masked = b.op(Op::Where, &[m, h, low]);
                b.op(reduce(ReduceKind::Max, &[1], false), &[masked])
            }
        };
        if pooling.normalize {
            let norm = b.op(reduce(ReduceKind::L2, &[-1], true), &[e]);
            let floor = b.scalar_f32(1e-12);
            let norm = b.op(Op::Max, &[norm, floor]);
            e = b.op(Op::Div, &[e, norm]);
        }
        b.output(e, "sentence_embedding");
        b.meta(META_TASK, "sentence-embedding");
        let mode = match pooling.mode {
            PoolingMode::Mean => "mean",
            PoolingMode::Cls => "cls",
            PoolingMode::Max => "max",
        };
        let norm = if pooling.normalize { "+normalize" } else { "" };
        b.meta(crate::safetensors::META_POOLING, format!("{mode}{norm}"));
    }
    b.finish().map_err(|source| ImportError::Infer {
        file: src.origin(),
        source,
    })
}
