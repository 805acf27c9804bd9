//! Perplexity with llama.cpp's definition (its `perplexity` tool).
//!
//! The text is tokenized once (with a leading BOS when the tokenizer adds
//! one) and cut into non-overlapping windows of `ctx` tokens; the tail that
//! does not fill a window is dropped. When the tokenizer adds BOS, the first
//! token of every window is replaced by BOS. In each window only the second
//! half is scored: the logits at positions `ctx/2 … ctx-2` predict the tokens
//! at `ctx/2+1 … ctx-1`, i.e. `ctx - 1 - ctx/2` tokens per window (255 for
//! `ctx = 512`), so every scored token has at least `ctx/2` tokens of context.
//! Perplexity is `exp` of the mean negative log-likelihood over all scored
//! tokens, accumulated in f64.

use crate::lm::{forward, log_sum_exp};
use crate::EvalError;
use kiln_runtime::cpu::CpuExecutor;
use serde::Serialize;

/// What to evaluate.
#[derive(Clone, Debug)]
pub struct PerplexityOptions {
    /// Window length in tokens.
    pub ctx: usize,
    /// Windows to evaluate at most (`None`: every full window of the text).
    pub chunks: Option<usize>,
    /// Replace each window's first token by this BOS id.
    pub bos: Option<u32>,
}

/// The result.
#[derive(Clone, Debug, Serialize)]
pub struct Perplexity {
    /// exp(mean negative log-likelihood).
    pub perplexity: f64,
    /// Mean negative log-likelihood per scored token (nats).
    pub mean_nll: f64,
    /// Tokens scored.
    pub scored_tokens: usize,
    /// Windows evaluated.
    pub windows: usize,
    /// Window length.
    pub ctx: usize,
    /// Tokens of the whole text.
    pub text_tokens: usize,
    /// Mean negative log-likelihood of each window.
    pub window_nll: Vec<f64>,
}

/// The windows llama.cpp evaluates: `ctx` tokens each, BOS-patched.
pub fn windows(tokens: &[u32], opts: &PerplexityOptions) -> Result<Vec<Vec<u32>>, EvalError> {
    if opts.ctx < 4 {
        return Err(EvalError::Text(format!(
            "--ctx {} is too small (at least 4)",
            opts.ctx
        )));
    }
    let available = tokens.len() / opts.ctx;
    if available == 0 {
        return Err(EvalError::Text(format!(
            "the text has {} tokens, fewer than one window of {} tokens",
            tokens.len(),
            opts.ctx
        )));
    }
    let n = opts.chunks.map_or(available, |c| c.min(available));
    Ok((0..n)
        .map(|i| {
            let mut w = tokens[i * opts.ctx..(i + 1) * opts.ctx].to_vec();
            if let Some(bos) = opts.bos {
                w[0] = bos;
            }
            w
        })
        .collect())
}

/// The first scored logit position of a window.
pub fn first_scored(ctx: usize) -> usize {
    ctx / 2
}

/// Negative log-likelihoods of the scored tokens of one window.
pub fn window_nlls(exec: &CpuExecutor, window: &[u32]) -> Result<Vec<f64>, EvalError> {
    let logits = forward(exec, window)?;
    let first = first_scored(window.len());
    (first..window.len() - 1)
        .map(|j| {
            let row = logits.row(j);
            let target = window[j + 1] as usize;
            let logit = *row.get(target).ok_or_else(|| {
                EvalError::Interface(format!(
                    "token id {target} is outside the model's vocabulary of {}",
                    row.len()
                ))
            })?;
            Ok(log_sum_exp(row) - logit as f64)
        })
        .collect()
}

/// Perplexity of `tokens`; `progress(done, total)` is called after each window.
pub fn perplexity(
    exec: &CpuExecutor,
    tokens: &[u32],
    opts: &PerplexityOptions,
    mut progress: impl FnMut(usize, usize),
) -> Result<Perplexity, EvalError> {
    let windows = windows(tokens, opts)?;
    let mut total = 0f64;
    let mut count = 0usize;
    let mut window_nll = Vec::with_capacity(windows.len());
    for (i, w) in windows.iter().enumerate() {
        let nlls = window_nlls(exec, w)?;
        let sum: f64 = nlls.iter().sum();
        window_nll.push(sum / nlls.len() as f64);
        total += sum;
        count += nlls.len();
        progress(i + 1, windows.len());
    }
    let mean_nll = total / count as f64;
    Ok(Perplexity {
        perplexity: mean_nll.exp(),
        mean_nll,
        scored_tokens: count,
        windows: windows.len(),
        ctx: opts.ctx,
        text_tokens: tokens.len(),
        window_nll,
    })
}
