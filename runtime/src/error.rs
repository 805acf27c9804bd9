//! Runtime errors.

/// Everything that can go wrong while loading or running a graph.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// An op was given operands it cannot work on (names node and op).
    #[error("node {node}: {message}")]
    Node {
        /// The node, described (name and op).
        node: String,
        /// What was wrong.
        message: String,
    },
    /// The caller's inputs do not match the graph.
    #[error("input `{name}`: {message}")]
    Input {
        /// Input name.
        name: String,
        /// What was wrong.
        message: String,
    },
    /// An op or dtype the executor does not handle.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// A bundle could not be read or trusted.
    #[error("bundle {path}: {message}")]
    Bundle {
        /// The bundle file.
        path: String,
        /// What was wrong.
        message: String,
    },
    /// The GPU device, driver or a kernel launch failed (names the kernel or
    /// node and the limit involved).
    #[error("gpu: {0}")]
    Gpu(String),
    /// An I/O error with the file it concerns.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
}
