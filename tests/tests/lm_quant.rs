//! Weight quantization of SmolLM2-135M end to end: packed execution against
//! the dequantized weights, the calibrated methods against round to nearest,
//! reproducibility, and the packed bundle.
//!
//! Calibration uses a small sample of the State of the Union text (8 × 128
//! tokens) so the file runs in CI; `bench-quant` measures the full 32 × 512.

use kiln_eval::lm::forward;
use kiln_eval::perplexity::{perplexity, PerplexityOptions};
use kiln_frontends::Model;
use kiln_ir::{DType, Tensor};
use kiln_passes::quant::{Calibration, QuantReport};
use kiln_tests::lm::{executor, have, import_unfused, moby_dick, smollm2, tokenizer};
use kiln_tests::quant::{calibration, quantize, sotu_files, sotu_tokens};
use std::sync::OnceLock;

fn model() -> &'static Model {
    static MODEL: OnceLock<Model> = OnceLock::new();
    MODEL.get_or_init(|| import_unfused(&smollm2()))
}

fn sotu() -> &'static Vec<u32> {
    static TOKENS: OnceLock<Vec<u32>> = OnceLock::new();
    TOKENS.get_or_init(|| sotu_tokens(&tokenizer(model())))
}

fn ready() -> bool {
    if !have(&[&smollm2(), &moby_dick()]) {
        return false;
    }
    let files = sotu_files();
    if files.is_empty() {
        assert!(!kiln_tests::in_ci(), "missing the SOTU text under CI");
        eprintln!("skipped: no State of the Union text (run scripts/setup.sh)");
        return false;
    }
    true
}

fn small_calibration() -> Calibration {
    calibration(sotu(), 8, 128, 0)
}

/// The first `n` tokens of Moby Dick.
fn prompt(n: usize) -> Vec<u32> {
    let text = std::fs::read_to_string(moby_dick()).unwrap();
    tokenizer(model()).encode(&text[..20_000], false).unwrap()[..n].to_vec()
}

/// Perplexity on the first two 512-token windows of Moby Dick.
fn perplexity_of(m: &Model) -> f64 {
    let text = std::fs::read_to_string(moby_dick()).unwrap();
    let tok = tokenizer(m);
    let tokens = tok.encode(&text[..40_000], false).unwrap();
    let opts = PerplexityOptions {
        ctx: 512,
        chunks: Some(2),
        bos: if tok.add_bos() { tok.bos_id() } else { None },
    };
    perplexity(&executor(m), &tokens, &opts, |_, _| {})
        .unwrap()
        .perplexity
}

/// The original graph with every quantized weight replaced by its
/// dequantized f32 values, in the original layout.
fn dequantized_twin(q: &Model) -> Model {
    let mut g = model().graph.clone();
    for (&id, t) in &q.graph.constants {
        let Some(Ok(view)) = t.packed_view() else {
            continue;
        };
        let name = &q.graph.value(id).name;
        let orig = g.find_value(name).expect("weight in the original graph");
        let dims = g.constant(orig).unwrap().dims().to_vec();
        let (rows, cols) = (view.rows(), view.cols());
        let w = view.dequantize();
        let values = if dims == [rows, cols] {
            w
        } else {
            assert_eq!(dims, [cols, rows], "{name}");
            let mut out = vec![0.0; w.len()];
            for r in 0..rows {
                for c in 0..cols {
                    out[c * rows + r] = w[r * cols + c];
                }
            }
            out
        };
        g.constants
            .insert(orig, Tensor::from_vec(dims, values).unwrap());
    }
    Model {
        graph: g,
        assets: q.assets.clone(),
    }
}

fn mean_output_error(r: &QuantReport) -> f64 {
    let errs: Vec<f64> = r
        .layers
        .iter()
        .filter(|l| l.method != "keep")
        .map(|l| l.output_error.expect("calibrated error"))
        .collect();
    errs.iter().sum::<f64>() / errs.len() as f64
}

#[test]
fn packed_weights_run_like_their_dequantized_values() {
    if !ready() {
        return;
    }
    let (q, report) = quantize(model(), "rtn:w4g64", None);
    // 30 layers of 7 projections, plus the tied embedding kept as w8.
    assert_eq!(report.layers.len(), 211);
    let packed: Vec<DType> = q
        .graph
        .constants
        .values()
        .map(Tensor::dtype)
        .filter(|d| d.is_quant())
        .collect();
    assert_eq!(packed.len(), 211);
    assert!(
        report.bytes_after * 5 < report.bytes_before,
        "{} -> {} bytes",
        report.bytes_before,
        report.bytes_after
    );
    let ids = prompt(64);
    let ours = forward(&executor(&q), &ids).unwrap();
    let twin = forward(&executor(&dequantized_twin(&q)), &ids).unwrap();
    let max_err = ours
        .values
        .iter()
        .zip(&twin.values)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    eprintln!("packed vs dequantized f32 logits: max abs difference {max_err:.2e}");
    assert!(max_err < 2e-3, "max abs difference {max_err}");

    // Through a bundle file: the packed weights are read in place from the
    // mapped file and give the same logits.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.kiln");
    let info = kiln_targets::bundle::BundleInfo {
        assets: q.assets.clone(),
        ..kiln_targets::bundle::BundleInfo::for_source("cpu", &smollm2()).unwrap()
    };
    let written = kiln_targets::bundle::write_bundle(&path, &q.graph, &info).unwrap();
    let bundle = kiln_runtime::bundle::Bundle::open(&path).unwrap();
    let from_file = kiln_runtime::cpu::CpuExecutor::new(
        bundle.graph().clone(),
        kiln_runtime::cpu::ExecOptions::default(),
    )
    .unwrap();
    assert_eq!(forward(&from_file, &ids).unwrap().values, ours.values);
    let mib = written.file_size as f64 / 1048576.0;
    eprintln!("rtn:w4g64 bundle: {mib:.2} MiB");
    assert!(mib < 90.0, "{mib} MiB");
}

#[test]
fn calibrated_methods_beat_round_to_nearest() {
    if !ready() {
        return;
    }
    let cal = small_calibration();
    let (rtn, rtn_report) = quantize(model(), "rtn:w4g64", Some(&cal));
    let rtn_err = mean_output_error(&rtn_report);
    let rtn_ppl = perplexity_of(&rtn);
    let base_ppl = perplexity_of(model());
    eprintln!("baseline: perplexity {base_ppl:.3}");
    eprintln!("rtn:w4g64: mean output error {rtn_err:.3e}, perplexity {rtn_ppl:.3}");
    for spec in ["gptq:w4g64", "awq:w4g64", "awq+gptq:w4g64"] {
        let (q, report) = quantize(model(), spec, Some(&cal));
        let err = mean_output_error(&report);
        let ppl = perplexity_of(&q);
        eprintln!("{spec}: mean output error {err:.3e}, perplexity {ppl:.3}");
        assert!(err < rtn_err, "{spec}: {err} vs rtn {rtn_err}");
        assert!(ppl < rtn_ppl, "{spec}: perplexity {ppl} vs rtn {rtn_ppl}");
        assert!(
            ppl > base_ppl * 0.98,
            "{spec}: {ppl} below the f32 model's {base_ppl}"
        );
        if spec.starts_with("awq") {
            // Every q/k/v and gate/up input scale folds into its RMSNorm, and
            // down_proj's into up_proj's columns; o_proj (after grouped-query
            // attention) has nowhere to fold.
            let folded = report
                .layers
                .iter()
                .filter(|l| l.folded_into.is_some())
                .count();
            let o_proj = report
                .layers
                .iter()
                .filter(|l| l.name.contains("o_proj") && l.folded_into.is_some())
                .count();
            assert_eq!(o_proj, 0);
            assert!(folded >= 5 * 30, "{folded} weights with a folded scale");
        }
    }
}

#[test]
fn quantization_is_reproducible() {
    if !ready() {
        return;
    }
    let cal = calibration(sotu(), 4, 64, 7);
    let (a, _) = quantize(model(), "awq+gptq:w3g64", Some(&cal));
    let (b, _) = quantize(model(), "awq+gptq:w3g64", Some(&cal));
    let bytes = |m: &Model| -> Vec<Vec<u8>> {
        m.graph
            .constants
            .values()
            .map(|t| t.bytes().to_vec())
            .collect()
    };
    assert!(bytes(&a) == bytes(&b), "two runs gave different weights");
    let other = calibration(sotu(), 4, 64, 8);
    let (c, _) = quantize(model(), "awq+gptq:w3g64", Some(&other));
    assert!(
        bytes(&a) != bytes(&c),
        "a different sample gave the same weights"
    );
}
