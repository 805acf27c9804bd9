//! all-MiniLM-L6-v2 (BERT, safetensors + tokenizer.json + sentence-transformers
//! pooling) end to end, against the float64 NumPy forward pass of
//! scripts/ref/minilm_reference.py on 100 real sentences.

use kiln_eval::embed::{cosine, embed_ids, tokenize_lines};
use kiln_frontends::Model;
use kiln_tests::lm::{executor, have, import_cpu, minilm, read_tensor, reference, tokenizer};
use std::sync::OnceLock;

fn model() -> &'static Model {
    static MODEL: OnceLock<Model> = OnceLock::new();
    MODEL.get_or_init(|| import_cpu(&minilm()))
}

fn sentences() -> Vec<String> {
    std::fs::read_to_string(reference("sentences.txt"))
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

/// The reference ids of each sentence (padding removed).
fn reference_ids() -> Vec<Vec<u32>> {
    let path = reference("minilm_embeddings.safetensors");
    let (dims, ids) = read_tensor(&path, "input_ids");
    let (_, mask) = read_tensor(&path, "attention_mask");
    (0..dims[0])
        .map(|i| {
            let row = i * dims[1]..(i + 1) * dims[1];
            ids[row.clone()]
                .iter()
                .zip(&mask[row])
                .filter(|(_, &m)| m != 0.0)
                .map(|(&t, _)| t as u32)
                .collect()
        })
        .collect()
}

#[test]
fn embeddings_of_100_sentences_match_the_numpy_reference() {
    let path = reference("minilm_embeddings.safetensors");
    if !have(&[&minilm(), &path, &reference("sentences.txt")]) {
        return;
    }
    let m = model();
    let lines = sentences();
    assert_eq!(lines.len(), 100);
    let ids = tokenize_lines(&tokenizer(m), &lines, 512).unwrap();
    assert_eq!(
        ids,
        reference_ids(),
        "token ids differ from the tokenizers package"
    );
    let got = embed_ids(&executor(m), &ids, 0, 8, |_, _| {}).unwrap();
    let (dims, want) = read_tensor(&path, "embeddings");
    let mut worst = f64::INFINITY;
    for (i, g) in got.iter().enumerate() {
        let w: Vec<f32> = want[i * dims[1]..(i + 1) * dims[1]]
            .iter()
            .map(|&x| x as f32)
            .collect();
        worst = worst.min(cosine(g, &w));
    }
    eprintln!("MiniLM: 100 sentences, smallest cosine to the reference {worst:.9}");
    assert!(worst >= 0.99999, "smallest cosine {worst}");
}

#[test]
fn batching_and_padding_do_not_change_embeddings() {
    if !have(&[&minilm(), &reference("sentences.txt")]) {
        return;
    }
    let m = model();
    let lines: Vec<String> = sentences().into_iter().take(12).collect();
    let ids = tokenize_lines(&tokenizer(m), &lines, 512).unwrap();
    let exec = executor(m);
    let one = embed_ids(&exec, &ids, 0, 1, |_, _| {}).unwrap();
    let batched = embed_ids(&exec, &ids, 0, 12, |_, _| {}).unwrap();
    for (a, b) in one.iter().zip(&batched) {
        assert!(cosine(a, b) > 0.999999, "padding changed an embedding");
    }
}

#[test]
fn safetensors_export_comes_back_with_the_same_embeddings() {
    if !have(&[&minilm(), &reference("sentences.txt")]) {
        return;
    }
    let m = model();
    let dir = tempfile::tempdir().unwrap();
    kiln_frontends::safetensors::export_folder(&m.graph, &m.assets, dir.path()).unwrap();
    let back = import_cpu(dir.path());
    let lines: Vec<String> = sentences().into_iter().take(8).collect();
    let ids = tokenize_lines(&tokenizer(m), &lines, 512).unwrap();
    let a = embed_ids(&executor(m), &ids, 0, 8, |_, _| {}).unwrap();
    let b = embed_ids(&executor(&back), &ids, 0, 8, |_, _| {}).unwrap();
    assert_eq!(a, b);
}
