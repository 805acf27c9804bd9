//! The evaluation error type.

/// Why an evaluation could not run.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// The model does not have the interface the evaluation needs.
    #[error("the model cannot be evaluated this way: {0}")]
    Interface(String),
    /// The text is too short for what was asked.
    #[error("{0}")]
    Text(String),
    /// Tokenization failed.
    #[error(transparent)]
    Tokenizer(#[from] kiln_frontends::tokenizer::TokenizerError),
    /// The executor failed.
    #[error(transparent)]
    Runtime(#[from] kiln_runtime::RuntimeError),
}
