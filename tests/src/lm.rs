//! Shared set-up for the language-model tests: the real models and the NumPy
//! references that `scripts/setup.sh` writes under `$KILN_CACHE`.

use kiln_frontends::tokenizer::Tokenizer;
use kiln_frontends::Model;
use kiln_runtime::cpu::{CpuExecutor, ExecOptions};
use std::path::{Path, PathBuf};

/// The SmolLM2-135M GGUF file.
pub fn smollm2() -> PathBuf {
    crate::kiln_cache().join("models/SmolLM2-135M-Instruct.Q4_1.gguf")
}

/// The all-MiniLM-L6-v2 folder.
pub fn minilm() -> PathBuf {
    crate::kiln_cache().join("models/all-minilm-l6-v2")
}

/// A file of the reference data (`data/ref/`).
pub fn reference(name: &str) -> PathBuf {
    crate::kiln_cache().join("data/ref").join(name)
}

/// The evaluation text.
pub fn moby_dick() -> PathBuf {
    crate::kiln_cache().join("data/moby_dick.txt")
}

/// True when every path exists; otherwise prints why the test is skipped
/// (and fails under CI, where set-up must have provided them).
pub fn have(paths: &[&Path]) -> bool {
    let missing: Vec<String> = paths
        .iter()
        .filter(|p| !p.exists())
        .map(|p| p.display().to_string())
        .collect();
    if missing.is_empty() {
        return true;
    }
    assert!(
        !crate::in_ci(),
        "missing under CI (run scripts/setup.sh): {}",
        missing.join(", ")
    );
    eprintln!(
        "skipped: missing {} (run scripts/setup.sh)",
        missing.join(", ")
    );
    false
}

/// Imports a model and runs the CPU target's pipeline on it, fusion
/// included, as `kiln optimize` does.
pub fn import_cpu(path: &Path) -> Model {
    let mut model = import_unfused(path);
    model.graph = fuse_cpu(model.graph);
    model
}

/// Imports a model and runs the CPU target's first stage (cleanup, no
/// fusion): the graph weight quantization works on.
pub fn import_unfused(path: &Path) -> Model {
    let mut model = kiln_frontends::load_model(path).expect("import");
    let target = kiln_targets::compile::Target::by_name("cpu").expect("cpu target");
    let compiled = kiln_targets::compile::compile_stage(
        model.graph,
        target,
        kiln_targets::compile::Stage::Cleanup,
        &Default::default(),
        |_, _| {},
        |_, _| {},
    )
    .expect("compile");
    model.graph = compiled.graph;
    model
}

/// Runs the CPU target's fusion stage, as `kiln optimize` does after quantizing.
pub fn fuse_cpu(graph: kiln_ir::Graph) -> kiln_ir::Graph {
    let target = kiln_targets::compile::Target::by_name("cpu").expect("cpu target");
    kiln_targets::compile::compile_stage(
        graph,
        target,
        kiln_targets::compile::Stage::Fusion,
        &Default::default(),
        |_, _| {},
        |_, _| {},
    )
    .expect("fusion")
    .graph
}

/// An executor on a model's graph.
pub fn executor(model: &Model) -> CpuExecutor {
    CpuExecutor::new(model.graph.clone(), ExecOptions::default()).expect("executor")
}

/// A model's tokenizer, from its `tokenizer.json` asset.
pub fn tokenizer(model: &Model) -> Tokenizer {
    let json = model.assets.get("tokenizer.json").expect("tokenizer asset");
    let config = model.assets.get("tokenizer_config.json").map(Vec::as_slice);
    Tokenizer::from_json_and_config(json, config).expect("tokenizer")
}

/// Reads one tensor of a safetensors file as f64 values with its dims.
pub fn read_tensor(path: &Path, name: &str) -> (Vec<usize>, Vec<f64>) {
    let bytes = std::fs::read(path).expect("reference file");
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("safetensors");
    let v = st.tensor(name).expect("tensor in the reference file");
    let data = v.data();
    let values = match v.dtype() {
        safetensors::Dtype::F32 => data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64)
            .collect(),
        safetensors::Dtype::F64 => data
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect(),
        safetensors::Dtype::I64 => data
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")) as f64)
            .collect(),
        other => panic!("unexpected dtype {other:?} for {name}"),
    };
    (v.shape().to_vec(), values)
}

/// The token ids of a reference ids file (`{"ids": [...]}` or a plain list).
pub fn read_ids(path: &Path) -> Vec<u32> {
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(path).expect("ids file")).expect("JSON");
    let list = v.get("ids").unwrap_or(&v);
    list.as_array()
        .expect("a list of ids")
        .iter()
        .map(|x| x.as_u64().expect("an id") as u32)
        .collect()
}

/// Token ids, attention mask and token types for `names`, rows padded with
/// `pad` to the longest (mask 0 there).
pub fn token_inputs(
    names: &[&str],
    ids: &[Vec<u32>],
    pad: u32,
) -> std::collections::BTreeMap<String, kiln_ir::Tensor> {
    let (b, s) = (ids.len(), ids.iter().map(Vec::len).max().unwrap_or(0));
    let mut tok = vec![pad as i64; b * s];
    let mut mask = vec![0i64; b * s];
    for (i, row) in ids.iter().enumerate() {
        for (j, &t) in row.iter().enumerate() {
            tok[i * s + j] = t as i64;
            mask[i * s + j] = 1;
        }
    }
    let mut m = std::collections::BTreeMap::new();
    for &n in names {
        let v = match n {
            "input_ids" => tok.clone(),
            "attention_mask" => mask.clone(),
            _ => vec![0i64; b * s],
        };
        m.insert(
            n.to_string(),
            kiln_ir::Tensor::from_vec(vec![b, s], v).unwrap(),
        );
    }
    m
}

/// `n` paragraphs of Moby Dick (past the front matter), tokenized and cut to
/// `len` tokens: real text for end-to-end comparisons.
pub fn text_ids(model: &kiln_frontends::Model, n: usize, len: usize) -> Vec<Vec<u32>> {
    let text = std::fs::read_to_string(moby_dick()).expect("moby dick");
    let tok = tokenizer(model);
    text.split("\n\n")
        .map(str::trim)
        .filter(|p| p.len() > 200)
        .skip(40)
        .take(n)
        .map(|p| {
            let mut ids = tok.encode(p, true).expect("tokenize");
            ids.truncate(len);
            ids
        })
        .collect()
}
