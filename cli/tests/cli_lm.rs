//! `kiln optimize`, `eval` and `export` on the real language models (from
//! scripts/setup.sh; skipped with a message when they are missing).

mod common;

use common::*;

#[test]
fn gguf_bundle_eval_compare_and_export() {
    let gguf = cache().join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    let text = cache().join("data/moby_dick.txt");
    if !have(&[&gguf, &text]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("smollm2.kiln");
    let (g, t, b) = (
        gguf.to_str().unwrap(),
        text.to_str().unwrap(),
        bundle.to_str().unwrap(),
    );
    json_of(&kiln(&[
        "optimize", g, "--target", "cpu", "-o", b, "--json",
    ]));

    // The bundle carries the tokenizer: the same perplexity as the GGUF file.
    let ppl = |m: &str| {
        json_of(&kiln(&[
            "eval",
            "perplexity",
            m,
            "--text",
            t,
            "--ctx",
            "128",
            "--chunks",
            "2",
            "--json",
        ]))
    };
    let (from_gguf, from_bundle) = (ppl(g), ppl(b));
    assert_eq!(from_gguf["perplexity"], from_bundle["perplexity"]);
    assert_eq!(from_bundle["windows"], 2);
    assert_eq!(from_bundle["scored_tokens"], 2 * (128 - 1 - 64));
    let p = from_bundle["perplexity"].as_f64().unwrap();
    assert!(p > 1.0 && p < 1000.0, "perplexity {p}");

    // A model compared with its own bundle: no divergence at all.
    let c = json_of(&kiln(&[
        "eval", "compare", g, b, "--text", t, "--ctx", "128", "--chunks", "1", "--json",
    ]));
    assert_eq!(c["kl_mean"].as_f64(), Some(0.0));
    assert_eq!(c["top1_agreement"].as_f64(), Some(1.0));
    assert_eq!(c["positions"], 63);

    // Out as safetensors and back in: same perplexity.
    let out = dir.path().join("hf");
    let e = json_of(&kiln(&[
        "export",
        b,
        "--format",
        "safetensors",
        "-o",
        out.to_str().unwrap(),
        "--json",
    ]));
    assert_eq!(e["tensors"], 272);
    for f in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ] {
        assert!(out.join(f).exists(), "{f} missing from the export");
    }
    assert_eq!(
        ppl(out.to_str().unwrap())["perplexity"],
        from_gguf["perplexity"]
    );

    // Asking a language model for embeddings is a clear error.
    assert_clean_failure(
        &kiln(&["eval", "embed", b, "--text", t]),
        &["smollm2.kiln", "sentence-embedding", "causal-lm"],
    );
    // Too little text for one window.
    let short = dir.path().join("short.txt");
    std::fs::write(&short, "Call me Ishmael.").unwrap();
    assert_clean_failure(
        &kiln(&["eval", "perplexity", b, "--text", short.to_str().unwrap()]),
        &["fewer than one window of 512 tokens"],
    );
}

#[test]
fn minilm_folder_embed_and_compare() {
    let folder = cache().join("models/all-minilm-l6-v2");
    if !have(&[&folder]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("lines.txt");
    std::fs::write(
        &text,
        "Call me Ishmael.\n\nSome years ago I thought I would sail about a little.\nThe whale is a mammal.\n",
    )
    .unwrap();
    let (f, t) = (folder.to_str().unwrap(), text.to_str().unwrap());
    let v = json_of(&kiln(&["eval", "embed", f, "--text", t, "--json"]));
    let items = v["embeddings"].as_array().unwrap();
    assert_eq!(items.len(), 3, "empty lines are skipped");
    for item in items {
        let e: Vec<f64> = item["embedding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        assert_eq!(e.len(), 384);
        let norm = e.iter().map(|x| x * x).sum::<f64>().sqrt();
        assert!(
            (norm - 1.0).abs() < 1e-5,
            "normalised embedding, norm {norm}"
        );
    }
    let bundle = dir.path().join("minilm.kiln");
    json_of(&kiln(&[
        "optimize",
        f,
        "--target",
        "cpu",
        "-o",
        bundle.to_str().unwrap(),
        "--json",
    ]));
    let c = json_of(&kiln(&[
        "eval",
        "compare",
        f,
        bundle.to_str().unwrap(),
        "--text",
        t,
        "--json",
    ]));
    assert_eq!(c["task"], "sentence-embedding");
    assert!(c["cosine_min"].as_f64().unwrap() > 0.999999);
    assert_eq!(c["lines"], 3);
}

#[test]
fn onnx_models_cannot_be_exported_as_safetensors() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path(), false);
    let out = dir.path().join("out");
    assert_clean_failure(
        &kiln(&[
            "export",
            model.to_str().unwrap(),
            "--format",
            "safetensors",
            "-o",
            out.to_str().unwrap(),
        ]),
        &["tiny.onnx", "architecture template"],
    );
    assert_clean_failure(
        &kiln(&[
            "export",
            model.to_str().unwrap(),
            "--format",
            "gguf",
            "-o",
            out.to_str().unwrap(),
        ]),
        &["tiny.onnx", "LLaMA-family", "architecture templates"],
    );
    assert_clean_failure(
        &kiln(&[
            "export",
            model.to_str().unwrap(),
            "--format",
            "tflite",
            "-o",
            out.to_str().unwrap(),
        ]),
        &["unknown export format 'tflite'"],
    );
}
