//! How good a model is, measured on real text.
//!
//! - [`perplexity`]: llama.cpp's perplexity over non-overlapping windows;
//! - [`embed`]: sentence embeddings with the model's own pooling;
//! - [`compare`]: how far two models are apart (KL divergence and top-1
//!   agreement of next-token distributions; cosine of embeddings).
//!
//! Every function takes a ready [`kiln_runtime::cpu::CpuExecutor`], so the
//! same code measures an imported model and a compiled bundle.

pub mod compare;
pub mod embed;
pub mod error;
pub mod lm;
pub mod perplexity;

pub use error::EvalError;
