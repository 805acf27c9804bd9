//! Kiln's end-to-end and conformance test support.
//!
//! - [`onnx_node`]: runs the ONNX backend node tests (written to disk by
//!   `scripts/gen_onnx_node_tests.py`) through the ONNX importer and the
//!   reference CPU executor. The `onnx-conformance` binary reports on all of
//!   them; `tests/onnx_node_conformance.rs` checks the ones listed in
//!   `conformance/onnx_node_pass.txt`.
//!
//! - [`bench`]: timing helpers for the benchmark binaries;
//! - [`lm`]: the real language models and their NumPy references.
//!
//! Data produced by `scripts/setup.sh` lives in [`kiln_cache`].

use std::path::PathBuf;

pub mod bench;
pub mod gpu;
pub mod lm;
pub mod onnx_node;
pub mod quant;

/// `$KILN_CACHE`, else `${XDG_CACHE_HOME:-$HOME/.cache}/kiln` (as in scripts/setup.sh).
pub fn kiln_cache() -> PathBuf {
    if let Some(p) = std::env::var_os("KILN_CACHE").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"));
    base.join("kiln")
}

/// The workspace root (the folder above this crate).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// True when running under CI (`CI` set and not `false`/`0`/empty): missing data is then an error.
pub fn in_ci() -> bool {
    std::env::var("CI")
        .map(|v| !v.is_empty() && v != "0" && v != "false")
        .unwrap_or(false)
}
