//! Shared set-up for the quantization tests and benchmark: the calibration
//! text (State of the Union addresses, never the evaluation text) and a
//! one-call quantization of an imported model.

use kiln_frontends::tokenizer::Tokenizer;
use kiln_frontends::Model;
use kiln_passes::quant::{
    quantize_graph, sample_windows, Calibration, QuantConfig, QuantReport, QuantSpec,
};
use std::path::PathBuf;

/// The calibration files, sorted by name (the order their tokens are joined in).
pub fn sotu_files() -> Vec<PathBuf> {
    let dir = crate::kiln_cache().join("data/sotu");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "txt"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

/// The calibration files' tokens, joined in name order.
pub fn sotu_tokens(tokenizer: &Tokenizer) -> Vec<u32> {
    let mut tokens = Vec::new();
    for f in sotu_files() {
        let text = std::fs::read_to_string(&f).expect("calibration text");
        tokens.extend(tokenizer.encode(&text, false).expect("tokenize"));
    }
    tokens
}

/// A seeded calibration sample of `samples` × `len` tokens.
pub fn calibration(tokens: &[u32], samples: usize, len: usize, seed: u64) -> Calibration {
    Calibration {
        sequences: sample_windows(tokens, samples, len, seed).expect("calibration sample"),
    }
}

/// Quantizes a copy of `model` with `spec` (default options) on `calib`.
/// `model` must be unfused ([`crate::lm::import_unfused`]); the result is
/// fused, as `kiln optimize --quant` leaves it.
pub fn quantize(model: &Model, spec: &str, calib: Option<&Calibration>) -> (Model, QuantReport) {
    let mut graph = model.graph.clone();
    let config = QuantConfig::new(QuantSpec::parse(spec).expect("spec"));
    let report = quantize_graph(&mut graph, &config, calib, &mut |_| {}).expect("quantize");
    (
        Model {
            graph: crate::lm::fuse_cpu(graph),
            assets: model.assets.clone(),
        },
        report,
    )
}
