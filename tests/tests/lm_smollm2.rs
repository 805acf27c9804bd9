//! SmolLM2-135M (LLaMA architecture, Q4_1 GGUF) end to end, against the
//! independent NumPy forward pass of scripts/ref/llama_reference.py (built
//! from the `gguf` package) and the pure-Python BPE of
//! scripts/tokenizer_reference.py.

use kiln_eval::lm::forward;
use kiln_eval::perplexity::{perplexity, PerplexityOptions};
use kiln_frontends::Model;
use kiln_tests::lm::{
    executor, have, import_cpu, moby_dick, read_ids, read_tensor, reference, smollm2, tokenizer,
};
use std::sync::OnceLock;

/// One import shared by the tests of this file (dequantizing takes seconds).
fn model() -> &'static Model {
    static MODEL: OnceLock<Model> = OnceLock::new();
    MODEL.get_or_init(|| import_cpu(&smollm2()))
}

#[test]
fn tokenizer_matches_the_reference_bpe_on_all_of_moby_dick() {
    let ids_path = reference("moby_dick_smollm2_ids.json");
    if !have(&[&smollm2(), &moby_dick(), &ids_path]) {
        return;
    }
    let text = std::fs::read_to_string(moby_dick()).unwrap();
    let tok = tokenizer(model());
    let ours = tok.encode(&text, true).unwrap();
    let want = read_ids(&ids_path);
    let first_diff = ours.iter().zip(&want).position(|(a, b)| a != b);
    assert_eq!(first_diff, None, "token ids differ at index {first_diff:?}");
    assert_eq!(ours.len(), want.len());
    eprintln!(
        "{} tokens of Moby Dick identical to the reference",
        ours.len()
    );
}

#[test]
fn logits_match_the_numpy_reference() {
    let path = reference("smollm2_prompt_logits.safetensors");
    if !have(&[&smollm2(), &path]) {
        return;
    }
    let (_, ids) = read_tensor(&path, "ids");
    let (dims, want) = read_tensor(&path, "logits");
    let ids: Vec<u32> = ids.iter().map(|&x| x as u32).collect();
    let logits = forward(&executor(model()), &ids).unwrap();
    assert_eq!([ids.len(), logits.vocab], [dims[0], dims[1]]);
    let max_err = logits
        .values
        .iter()
        .zip(&want)
        .map(|(&a, &b)| (a as f64 - b).abs())
        .fold(0f64, f64::max);
    eprintln!(
        "SmolLM2 logits on {} tokens: max abs error {max_err:.3e}",
        ids.len()
    );
    assert!(max_err <= 1e-3, "max abs error {max_err}");
}

#[test]
fn perplexity_matches_the_numpy_reference_within_a_tenth_of_a_percent() {
    let ref_path = reference("smollm2_ppl.json");
    if !have(&[&smollm2(), &moby_dick(), &ref_path]) {
        return;
    }
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&ref_path).unwrap()).unwrap();
    let windows = r["windows"].as_u64().unwrap() as usize;
    let ctx = r["n_ctx"].as_u64().unwrap() as usize;
    let want = r["ppl"].as_f64().unwrap();
    let m = model();
    let tok = tokenizer(m);
    let text = std::fs::read_to_string(moby_dick()).unwrap();
    let tokens = tok.encode(&text, true).unwrap();
    let opts = PerplexityOptions {
        ctx,
        chunks: Some(windows),
        bos: if tok.add_bos() { tok.bos_id() } else { None },
    };
    assert_eq!(tok.add_bos(), r["add_bos"].as_bool().unwrap());
    let got = perplexity(&executor(m), &tokens, &opts, |_, _| {}).unwrap();
    assert_eq!(got.scored_tokens, r["count"].as_u64().unwrap() as usize);
    let rel = (got.perplexity - want).abs() / want;
    eprintln!(
        "SmolLM2 perplexity over {windows}×{ctx} tokens of Moby Dick: {:.4} (reference {want:.4}, relative difference {rel:.2e})",
        got.perplexity
    );
    assert!(
        rel <= 1e-3,
        "perplexity {} vs reference {want}",
        got.perplexity
    );
    for (i, (a, b)) in got
        .window_nll
        .iter()
        .zip(r["window_mean_nll"].as_array().unwrap())
        .enumerate()
    {
        let b = b.as_f64().unwrap();
        assert!((a - b).abs() <= 1e-3, "window {i}: mean nll {a} vs {b}");
    }
}

#[test]
fn safetensors_export_comes_back_with_the_same_logits() {
    if !have(&[&smollm2()]) {
        return;
    }
    let m = model();
    let dir = tempfile::tempdir().unwrap();
    let report =
        kiln_frontends::safetensors::export_folder(&m.graph, &m.assets, dir.path()).unwrap();
    assert!(report.files.contains(&"tokenizer.json".to_string()));
    assert_eq!(
        report.tensors,
        2 + 30 * 9,
        "embedding, final norm and 9 tensors per layer"
    );
    let back = import_cpu(dir.path());
    let prompt = "Call me Ishmael. Some years ago—never mind how long precisely—";
    let ids = tokenizer(m).encode(prompt, true).unwrap();
    assert_eq!(tokenizer(&back).encode(prompt, true).unwrap(), ids);
    let a = forward(&executor(m), &ids).unwrap();
    let b = forward(&executor(&back), &ids).unwrap();
    assert_eq!(
        a.values, b.values,
        "GGUF import and its safetensors export differ"
    );
}
