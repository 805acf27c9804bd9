//! Running a causal language model graph on token windows.

use crate::EvalError;
use kiln_ir::Tensor;
use kiln_runtime::cpu::CpuExecutor;
use std::collections::BTreeMap;

/// Name of the token input of Kiln's language-model graphs.
pub const INPUT_IDS: &str = "input_ids";
/// Name of the logits output of Kiln's language-model graphs.
pub const LOGITS: &str = "logits";

/// The logits of one window: `rows` positions × `vocab` classes.
pub struct Logits {
    /// Row-major values.
    pub values: Vec<f32>,
    /// Vocabulary size.
    pub vocab: usize,
}

impl Logits {
    /// The logits at position `i`.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.values[i * self.vocab..(i + 1) * self.vocab]
    }
}

/// Runs the model on one sequence of token ids and returns its logits.
pub fn forward(exec: &CpuExecutor, tokens: &[u32]) -> Result<Logits, EvalError> {
    let ids: Vec<i64> = tokens.iter().map(|&t| t as i64).collect();
    let input = Tensor::from_vec(vec![1, ids.len()], ids)
        .map_err(|e| EvalError::Interface(e.to_string()))?;
    let inputs = BTreeMap::from([(INPUT_IDS.to_string(), input)]);
    let result = exec.run(&inputs)?;
    let (_, logits) = result
        .outputs
        .into_iter()
        .find(|(n, _)| n == LOGITS)
        .ok_or_else(|| EvalError::Interface(format!("the graph has no output '{LOGITS}'")))?;
    let dims = logits.dims().to_vec();
    let [1, rows, vocab] = dims[..] else {
        return Err(EvalError::Interface(format!(
            "expected logits of dims [1, {}, vocab], found {dims:?}",
            tokens.len()
        )));
    };
    if rows != tokens.len() {
        return Err(EvalError::Interface(format!(
            "expected {} rows of logits, found {rows}",
            tokens.len()
        )));
    }
    let values = logits
        .to_vec::<f32>()
        .map_err(|e| EvalError::Interface(format!("logits: {e}")))?;
    Ok(Logits { values, vocab })
}

/// log Σ exp(row), computed in f64 with the maximum subtracted.
pub fn log_sum_exp(row: &[f32]) -> f64 {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let sum: f64 = row.iter().map(|&x| (x as f64 - max).exp()).sum();
    max + sum.ln()
}

/// Index of the largest value (the first one on ties).
pub fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in row.iter().enumerate() {
        if x > row[best] {
            best = i;
        }
    }
    best
}
