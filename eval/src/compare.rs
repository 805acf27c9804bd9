//! How far two models are apart on real input: the measure every pass that
//! changes numerics reports.
//!
//! For language models, both run on the same perplexity windows and are
//! compared at the scored positions: the KL divergence `KL(P_a ‖ P_b)` of the
//! next-token distributions (model A is the reference), the fraction of
//! positions where both pick the same top token, and each model's
//! perplexity. For encoders, the cosine similarity of the sentence
//! embeddings of each line.

use crate::embed::{cosine, embed_ids};
use crate::lm::{argmax, forward, log_sum_exp};
use crate::perplexity::{first_scored, windows, PerplexityOptions};
use crate::EvalError;
use kiln_runtime::cpu::CpuExecutor;
use serde::Serialize;

/// Language-model comparison.
#[derive(Clone, Debug, Serialize)]
pub struct LmComparison {
    /// Mean KL(P_a ‖ P_b) over scored positions, in nats.
    pub kl_mean: f64,
    /// Largest KL at one position.
    pub kl_max: f64,
    /// 99th percentile of KL over positions.
    pub kl_p99: f64,
    /// Fraction of positions where both models' top token agree.
    pub top1_agreement: f64,
    /// Perplexity of A on the scored tokens.
    pub perplexity_a: f64,
    /// Perplexity of B on the scored tokens.
    pub perplexity_b: f64,
    /// Positions compared.
    pub positions: usize,
    /// Windows evaluated.
    pub windows: usize,
}

/// Compares two causal language models on the perplexity windows of `tokens`.
pub fn compare_lm(
    a: &CpuExecutor,
    b: &CpuExecutor,
    tokens: &[u32],
    opts: &PerplexityOptions,
    mut progress: impl FnMut(usize, usize),
) -> Result<LmComparison, EvalError> {
    let windows = windows(tokens, opts)?;
    let mut kls = Vec::new();
    let (mut agree, mut nll_a, mut nll_b) = (0usize, 0f64, 0f64);
    for (i, w) in windows.iter().enumerate() {
        let la = forward(a, w)?;
        let lb = forward(b, w)?;
        if la.vocab != lb.vocab {
            return Err(EvalError::Interface(format!(
                "the models have different vocabularies ({} and {})",
                la.vocab, lb.vocab
            )));
        }
        for j in first_scored(w.len())..w.len() - 1 {
            let (ra, rb) = (la.row(j), lb.row(j));
            let (za, zb) = (log_sum_exp(ra), log_sum_exp(rb));
            let mut kl = 0f64;
            for (&x, &y) in ra.iter().zip(rb) {
                let lpa = x as f64 - za;
                let lpb = y as f64 - zb;
                kl += lpa.exp() * (lpa - lpb);
            }
            kls.push(kl.max(0.0));
            agree += usize::from(argmax(ra) == argmax(rb));
            let target = w[j + 1] as usize;
            nll_a += za - ra[target] as f64;
            nll_b += zb - rb[target] as f64;
        }
        progress(i + 1, windows.len());
    }
    let n = kls.len();
    let kl_mean = kls.iter().sum::<f64>() / n as f64;
    let mut sorted = kls.clone();
    sorted.sort_by(f64::total_cmp);
    let p99 = sorted[((n as f64 * 0.99).ceil() as usize).clamp(1, n) - 1];
    Ok(LmComparison {
        kl_mean,
        kl_max: *sorted.last().unwrap_or(&0.0),
        kl_p99: p99,
        top1_agreement: agree as f64 / n as f64,
        perplexity_a: (nll_a / n as f64).exp(),
        perplexity_b: (nll_b / n as f64).exp(),
        positions: n,
        windows: windows.len(),
    })
}

/// Encoder comparison.
#[derive(Clone, Debug, Serialize)]
pub struct EmbeddingComparison {
    /// Mean cosine similarity over lines.
    pub cosine_mean: f64,
    /// Smallest cosine similarity.
    pub cosine_min: f64,
    /// Lines compared.
    pub lines: usize,
}

/// Compares two sentence-embedding models on the same token sequences.
pub fn compare_embeddings(
    a: &CpuExecutor,
    b: &CpuExecutor,
    sequences: &[Vec<u32>],
    pad_id: u32,
    batch: usize,
) -> Result<EmbeddingComparison, EvalError> {
    let ea = embed_ids(a, sequences, pad_id, batch, |_, _| {})?;
    let eb = embed_ids(b, sequences, pad_id, batch, |_, _| {})?;
    let cos: Vec<f64> = ea.iter().zip(&eb).map(|(x, y)| cosine(x, y)).collect();
    Ok(EmbeddingComparison {
        cosine_mean: cos.iter().sum::<f64>() / cos.len().max(1) as f64,
        cosine_min: cos.iter().copied().fold(f64::INFINITY, f64::min),
        lines: cos.len(),
    })
}
