//! GGUF reader on a real model, SmolLM2-135M-Instruct Q4_1 (Q8_0, Q4_1 and
//! F32 tensors, 49k-entry tokenizer arrays), against the gguf Python
//! package's GGUFReader and `gguf.quants.dequantize`: all metadata, the
//! tensor list, and four tensors bit for bit.
//!
//! Skips (with a message) when the model or the reference venv is missing.
//! Run with `--release`: it dequantizes the 28M-element embedding.

mod gguf_common;

use gguf_common::{
    check_all_meta, check_dequantized, check_tensor_list, kiln_cache, python, read_json, run_script,
};
use kiln_frontends::gguf::{GgmlType, GgufFile};
use std::time::Instant;

#[test]
fn smollm2_matches_gguf_package() {
    let model = kiln_cache().join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    if !model.exists() {
        eprintln!(
            "{} not found (run scripts/setup.sh); skipping",
            model.display()
        );
        return;
    }
    let Some(python) = python() else {
        eprintln!("reference venv not found (run scripts/setup.sh); skipping");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    run_script(&python, dir.path(), &["--model", model.to_str().unwrap()]);
    let expected = read_json(&dir.path().join("model.json"));

    let start = Instant::now();
    let file = GgufFile::open(&model).unwrap_or_else(|e| panic!("{e}"));
    let open_time = start.elapsed();

    assert_eq!(
        Some(u64::from(file.version())),
        expected["version"].as_u64()
    );
    assert_eq!(Some(file.alignment()), expected["alignment"].as_u64());
    assert_eq!(Some(file.data_offset()), expected["data_offset"].as_u64());
    check_all_meta(&file, &expected["metadata"]);
    check_tensor_list(&file, &expected["tensors"]);

    // The facts the LLaMA importer relies on, read through the typed accessors.
    assert_eq!(file.require_str("general.architecture").unwrap(), "llama");
    assert_eq!(file.require_u64("llama.block_count").unwrap(), 30);
    assert_eq!(file.require_u64("llama.embedding_length").unwrap(), 576);
    assert_eq!(file.require_u64("llama.attention.head_count").unwrap(), 9);
    assert_eq!(
        file.require_u64("llama.attention.head_count_kv").unwrap(),
        3
    );
    let tokens = file
        .get("tokenizer.ggml.tokens")
        .unwrap()
        .as_array()
        .unwrap();
    assert_eq!(tokens.len(), 49152);
    let embd = file.tensor_info("token_embd.weight").unwrap();
    assert_eq!(embd.ggml_type, GgmlType::Q8_0);
    assert_eq!(embd.ir_dims(), vec![49152, 576]);

    let values_bytes = std::fs::read(dir.path().join("model.safetensors")).unwrap();
    let values = safetensors::SafeTensors::deserialize(&values_bytes).unwrap();
    for name in expected["dumped"].as_array().unwrap() {
        let name = name.as_str().unwrap();
        let start = Instant::now();
        let n = check_dequantized(&file, name, &values.tensor(name).unwrap());
        eprintln!(
            "{name} ({}): {n} elements bit-identical (dequantize + compare {:.1} ms)",
            file.tensor_info(name).unwrap().ggml_type,
            start.elapsed().as_secs_f64() * 1e3
        );
    }

    let start = Instant::now();
    let embd = file.dequantize("token_embd.weight").unwrap();
    let dq_time = start.elapsed();
    eprintln!(
        "open (header, {} keys, {} tensors): {:.1} ms; token_embd.weight dequantize ({} elements): {:.1} ms",
        file.metadata().len(),
        file.tensors().len(),
        open_time.as_secs_f64() * 1e3,
        embd.len(),
        dq_time.as_secs_f64() * 1e3
    );
}
