//! Sentence embeddings: one vector per line, with the model's own pooling.
//!
//! Lines are tokenized with the model's tokenizer (special tokens added),
//! grouped in batches padded to their longest line with an attention mask,
//! and run through the graph's `sentence_embedding` output, which the
//! importer built from the model's pooling configuration.

use crate::EvalError;
use kiln_frontends::tokenizer::Tokenizer;
use kiln_ir::Tensor;
use kiln_runtime::cpu::CpuExecutor;
use std::collections::BTreeMap;

/// Name of the pooled output of Kiln's encoder graphs.
pub const SENTENCE_EMBEDDING: &str = "sentence_embedding";

/// Token ids of each line, cut to `max_len` tokens (keeping the last token,
/// the end-of-sequence marker, as truncating tokenizers do).
pub fn tokenize_lines(
    tokenizer: &Tokenizer,
    lines: &[String],
    max_len: usize,
) -> Result<Vec<Vec<u32>>, EvalError> {
    lines
        .iter()
        .map(|l| {
            let mut ids = tokenizer.encode(l, true)?;
            if ids.len() > max_len && max_len > 1 {
                let last = ids[ids.len() - 1];
                ids.truncate(max_len - 1);
                ids.push(last);
            }
            Ok(ids)
        })
        .collect()
}

/// Embeds token sequences `batch` at a time; returns one vector per sequence.
pub fn embed_ids(
    exec: &CpuExecutor,
    sequences: &[Vec<u32>],
    pad_id: u32,
    batch: usize,
    mut progress: impl FnMut(usize, usize),
) -> Result<Vec<Vec<f32>>, EvalError> {
    let graph = exec.graph();
    let has_input = |name: &str| graph.inputs.iter().any(|&v| graph.value(v).name == name);
    for required in ["input_ids", "attention_mask"] {
        if !has_input(required) {
            return Err(EvalError::Interface(format!(
                "the graph has no input '{required}'"
            )));
        }
    }
    if !graph
        .outputs
        .iter()
        .any(|&v| graph.value(v).name == SENTENCE_EMBEDDING)
    {
        return Err(EvalError::Interface(format!(
            "the graph has no output '{SENTENCE_EMBEDDING}' (is it a sentence-embedding model?)"
        )));
    }
    let with_types = has_input("token_type_ids");
    let mut out = Vec::with_capacity(sequences.len());
    for group in sequences.chunks(batch.max(1)) {
        let len = group.iter().map(Vec::len).max().unwrap_or(0).max(1);
        let mut ids = Vec::with_capacity(group.len() * len);
        let mut mask = Vec::with_capacity(group.len() * len);
        for s in group {
            ids.extend(s.iter().map(|&t| t as i64));
            ids.extend(std::iter::repeat_n(pad_id as i64, len - s.len()));
            mask.extend(std::iter::repeat_n(1i64, s.len()));
            mask.extend(std::iter::repeat_n(0i64, len - s.len()));
        }
        let dims = vec![group.len(), len];
        let tensor = |v: Vec<i64>| {
            Tensor::from_vec(dims.clone(), v).map_err(|e| EvalError::Interface(e.to_string()))
        };
        let mut inputs = BTreeMap::new();
        if with_types {
            inputs.insert("token_type_ids".to_string(), tensor(vec![0; ids.len()])?);
        }
        inputs.insert("input_ids".to_string(), tensor(ids)?);
        inputs.insert("attention_mask".to_string(), tensor(mask)?);
        let result = exec.run(&inputs)?;
        let (_, e) = result
            .outputs
            .into_iter()
            .find(|(n, _)| n == SENTENCE_EMBEDDING)
            .ok_or_else(|| EvalError::Interface(format!("no output '{SENTENCE_EMBEDDING}'")))?;
        let width = *e.dims().last().unwrap_or(&0);
        let values = e
            .to_vec::<f32>()
            .map_err(|err| EvalError::Interface(format!("{SENTENCE_EMBEDDING}: {err}")))?;
        out.extend(values.chunks(width.max(1)).map(<[f32]>::to_vec));
        progress(out.len(), sequences.len());
    }
    Ok(out)
}

/// Cosine similarity, accumulated in f64.
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let (mut ab, mut aa, mut bb) = (0f64, 0f64, 0f64);
    for (&x, &y) in a.iter().zip(b) {
        ab += x as f64 * y as f64;
        aa += x as f64 * x as f64;
        bb += y as f64 * y as f64;
    }
    ab / (aa.sqrt() * bb.sqrt()).max(f64::MIN_POSITIVE)
}
