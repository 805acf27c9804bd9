//! GGUF export of SmolLM2-135M against the gguf Python package and
//! llama.cpp's own file (scripts/gguf_export_check.py reads every exported
//! file with `GGUFReader` and `gguf.quants.dequantize`):
//!
//! - the f32 graph forced to Q8_0: every block equals Kiln's Q8_0 quantizer
//!   (itself checked against `gguf.quants.quantize`) applied to llama.cpp's
//!   original tensors, so names, dims and the query/key row permutation are
//!   llama.cpp's; the metadata is the original file's, key for key;
//! - packed weights (RTN w4g32 linear layers, w8 embedding) in `auto` mode:
//!   written from their codes, decoding to Kiln's dequantized weights bit for
//!   bit; re-imported, the same constants, tokens and logits;
//! - every packed format in `auto` mode, each tensor's type, exactness and
//!   largest deviation (asymmetric codes kept in Q4_1 with minimums rounded
//!   to f16 stay within that rounding);
//! - the model through a Hugging Face folder (no GGUF metadata kept): the
//!   tokenizer arrays, chat template and hyper-parameters derived from
//!   tokenizer.json, tokenizer_config.json and config.json equal llama.cpp's
//!   converter's;
//! - a Qwen2 config (no permutation) round trip, and refusals.
//!
//! Needs `$KILN_CACHE/models/SmolLM2-135M-Instruct.Q4_1.gguf`,
//! `$KILN_CACHE/data/moby_dick.txt` and the reference venv; skips with a
//! reason otherwise.

mod gguf_common;

use gguf_common::{kiln_cache, python, read_json};
use kiln_frontends::arch::weights::transpose_2d;
use kiln_frontends::gguf::quantize::quantize;
use kiln_frontends::gguf::{
    dequantize_into, export_gguf, GgmlType, GgufExportOptions, GgufExportReport, GgufFile, GgufType,
};
use kiln_frontends::gguf_llama::{unpermute_rows, GGUF_METADATA_ASSET};
use kiln_frontends::tokenizer::Tokenizer;
use kiln_frontends::{load_model, Model};
use kiln_ir::quant::{quantize_rtn, QuantFormat};
use kiln_ir::{DType, Shape, Tensor, ValueType};
use kiln_runtime::cpu::{CpuExecutor, ExecOptions};
use safetensors::SafeTensors;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

const EMBED: &str = "model.embed_tokens.weight";
const HEADS: usize = 9;
const KV_HEADS: usize = 3;

fn smollm2() -> PathBuf {
    kiln_cache().join("models/SmolLM2-135M-Instruct.Q4_1.gguf")
}

fn moby_dick() -> PathBuf {
    kiln_cache().join("data/moby_dick.txt")
}

/// The reference Python when the model, the text and the venv are there;
/// otherwise prints why the test is skipped.
fn require() -> Option<PathBuf> {
    for p in [smollm2(), moby_dick()] {
        if !p.exists() {
            eprintln!("skipped: {} is missing (run scripts/setup.sh)", p.display());
            return None;
        }
    }
    let py = python();
    if py.is_none() {
        eprintln!(
            "skipped: no reference venv at {} (run scripts/setup.sh)",
            kiln_cache().join("venv").display()
        );
    }
    py
}

/// The f32 SmolLM2 graph, imported once for all tests.
fn model() -> &'static Model {
    static M: OnceLock<Model> = OnceLock::new();
    M.get_or_init(|| load_model(&smollm2()).expect("SmolLM2 imports"))
}

/// What the gguf package reads from a file.
struct ReadBack {
    meta: Value,
    dir: tempfile::TempDir,
}

impl ReadBack {
    fn tensors(&self, which: &str) -> memmap2::Mmap {
        let f = std::fs::File::open(self.dir.path().join(which)).expect("script output");
        // SAFETY: a private temporary file nobody else writes.
        unsafe { memmap2::Mmap::map(&f) }.expect("map")
    }
}

fn read_back(python: &Path, file: &Path, tensors: bool, hf_names: &[String]) -> ReadBack {
    let dir = tempfile::tempdir().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/gguf_export_check.py");
    let mut cmd = Command::new(python);
    cmd.arg(&script).arg(file).arg(dir.path());
    if !tensors {
        cmd.arg("--no-tensors");
    }
    if !hf_names.is_empty() {
        let names = dir.path().join("hf_names.json");
        std::fs::write(&names, serde_json::to_string(hf_names).unwrap()).unwrap();
        cmd.arg("--hf-names").arg(names);
    }
    let out = cmd.output().expect("cannot start the reference Python");
    assert!(
        out.status.success(),
        "{} failed:\n{}\n{}",
        script.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let meta = read_json(&dir.path().join("meta.json"));
    ReadBack { meta, dir }
}

/// The original file's metadata as the gguf package reads it.
fn original_meta(python: &Path) -> &'static Value {
    static M: OnceLock<Value> = OnceLock::new();
    M.get_or_init(|| read_back(python, &smollm2(), false, &[]).meta)
}

/// Key → entry (type, elem, value) of a `meta.json`.
fn meta_map(meta: &Value) -> BTreeMap<String, Value> {
    meta["metadata"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["key"].as_str().unwrap().to_string(), e.clone()))
        .collect()
}

/// The exported file has the original's keys, values and stored types,
/// except `general.file_type`, which is `file_type`.
fn assert_original_metadata(python: &Path, got: &Value, file_type: u64) {
    let want = meta_map(original_meta(python));
    let got_map = meta_map(got);
    assert_eq!(
        got_map.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "metadata keys"
    );
    for (key, w) in &want {
        if key != "general.file_type" {
            assert_same_entry(key, &got_map[key], w);
        }
    }
    assert_eq!(got_map["general.file_type"]["type"], "u32");
    assert_eq!(got_map["general.file_type"]["value"], file_type);
    assert_eq!(got["missing_keys"], serde_json::json!([]));
    assert_eq!(got["unknown_tensors"], serde_json::json!([]));
}

/// Asserts equal metadata entries, naming the first differing array element
/// instead of printing 49k-entry arrays.
fn assert_same_entry(key: &str, got: &Value, want: &Value) {
    if got == want {
        return;
    }
    if let (Some(g), Some(w)) = (got["value"].as_array(), want["value"].as_array()) {
        let at = g.iter().zip(w).position(|(a, b)| a != b);
        panic!(
            "metadata '{key}': {} vs {} entries, first difference at {at:?}: {:?} vs {:?} (types {} {} vs {} {})",
            g.len(),
            w.len(),
            at.map(|i| &g[i]),
            at.map(|i| &w[i]),
            got["type"],
            got["elem"],
            want["type"],
            want["elem"],
        );
    }
    panic!("metadata '{key}': got {got}, expected {want}");
}

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn tensor_of(st: &SafeTensors<'_>, name: &str) -> (Vec<usize>, Vec<f32>) {
    let v = st
        .tensor(name)
        .unwrap_or_else(|_| panic!("'{name}' read back"));
    let values = v
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    (v.shape().to_vec(), values)
}

fn heads_of(gguf_name: &str) -> Option<usize> {
    if gguf_name.contains(".attn_q.") {
        Some(HEADS)
    } else if gguf_name.contains(".attn_k.") {
        Some(KV_HEADS)
    } else {
        None
    }
}

/// A read-back `[out, in]` tensor in Hugging Face row order (query/key rows
/// un-permuted by the importer's `unpermute_rows`).
fn hf_rows(gguf_name: &str, dims: Vec<usize>, values: Vec<f32>) -> Vec<f32> {
    let t = Tensor::from_vec(dims, values).unwrap();
    match heads_of(gguf_name) {
        Some(h) => unpermute_rows(t, h, gguf_name, "read back")
            .unwrap()
            .to_vec()
            .unwrap(),
        None => t.to_vec().unwrap(),
    }
}

/// A graph constant's values as `[out, in]` rows in Hugging Face order:
/// packed weights dequantized (output-major already), f32 linear weights
/// transposed (the embedding and norms are kept as they are).
fn kiln_rows(m: &Model, name: &str) -> Vec<f32> {
    let g = &m.graph;
    let t = g.constant(g.find_value(name).unwrap()).unwrap();
    if let Some(view) = t.packed_view() {
        let view = view.unwrap();
        let (rows, cols) = (view.rows(), view.cols());
        let mut out = vec![0f32; rows * cols];
        for c in 0..cols {
            view.dequantize_column(c, &mut out[c * rows..(c + 1) * rows]);
        }
        return out;
    }
    if t.dims().len() == 2 && name != EMBED && name != "lm_head.weight" {
        return transpose_2d(t, name, "").unwrap().to_vec().unwrap();
    }
    t.to_vec().unwrap()
}

/// The model with some weights replaced by packed RTN weights: linear
/// weights `[in, out]` as they are, the embedding `[vocab, hidden]` as
/// `[hidden, vocab]` (in = hidden, out = vocab).
fn packed_model(m: &Model, format: impl Fn(&str) -> Option<&'static str>) -> Model {
    let mut out = m.clone();
    let ids: Vec<_> = out.graph.constants.keys().copied().collect();
    for id in ids {
        let name = out.graph.value(id).name.clone();
        let Some(f) = format(&name) else { continue };
        let f = QuantFormat::parse(f).unwrap();
        let t = &out.graph.constants[&id];
        let t = if name == EMBED {
            transpose_2d(t, &name, "").unwrap()
        } else {
            t.clone()
        };
        let (rows, cols) = (t.dims()[0], t.dims()[1]);
        let w = quantize_rtn(&t.to_vec::<f32>().unwrap(), rows, cols, f).unwrap();
        out.graph.value_mut(id).ty =
            ValueType::new(DType::Quant(f), Shape::fixed(&[rows as u64, cols as u64]));
        out.graph.constants.insert(id, Tensor::from_packed(&w));
    }
    out
}

/// The model with packed weights dequantized back to f32 in the template's
/// layout, for the CPU executor and for comparing constants.
fn dequantized(m: &Model) -> Model {
    let mut out = m.clone();
    let ids: Vec<_> = out.graph.constants.keys().copied().collect();
    for id in ids {
        let name = out.graph.value(id).name.clone();
        let t = &out.graph.constants[&id];
        let Some(view) = t.packed_view() else {
            continue;
        };
        let view = view.unwrap();
        let (rows, cols) = (view.rows(), view.cols());
        let mut t = Tensor::from_vec(vec![rows, cols], view.dequantize()).unwrap();
        if name == EMBED || name == "lm_head.weight" {
            t = transpose_2d(&t, &name, "").unwrap();
        }
        out.graph.value_mut(id).ty = ValueType::new(
            DType::F32,
            Shape::fixed(&t.dims().iter().map(|&d| d as u64).collect::<Vec<_>>()),
        );
        out.graph.constants.insert(id, t);
    }
    out
}

fn tokenizer_of(m: &Model) -> Tokenizer {
    Tokenizer::from_json_and_config(
        &m.assets["tokenizer.json"],
        m.assets.get("tokenizer_config.json").map(Vec::as_slice),
    )
    .unwrap()
}

/// About a page of Moby-Dick (from chapter 1 on), cut at a character boundary.
fn page() -> String {
    let text = std::fs::read_to_string(moby_dick()).unwrap();
    let start = text.find("Call me Ishmael").unwrap_or(0);
    text[start..].chars().take(3000).collect()
}

fn logits(m: &Model, ids: &[u32]) -> Vec<f32> {
    let exec = CpuExecutor::new(m.graph.clone(), ExecOptions::default()).unwrap();
    let ids: Vec<i64> = ids.iter().map(|&i| i64::from(i)).collect();
    let input = Tensor::from_vec(vec![1, ids.len()], ids).unwrap();
    let r = exec
        .run(&BTreeMap::from([("input_ids".to_string(), input)]))
        .unwrap();
    let (_, t) = r.outputs.into_iter().find(|(n, _)| n == "logits").unwrap();
    t.to_vec().unwrap()
}

fn export(m: &Model, path: &Path, types: GgufType) -> GgufExportReport {
    let opts = GgufExportOptions {
        types,
        ..Default::default()
    };
    let start = std::time::Instant::now();
    let r = export_gguf(&m.graph, &m.assets, path, &opts).unwrap();
    eprintln!(
        "exported {} ({types}) in {:.2} s: {} tensors, {:.1} MB",
        path.display(),
        start.elapsed().as_secs_f64(),
        r.tensors.len(),
        r.bytes as f64 / 1e6
    );
    assert_eq!(r.bytes, std::fs::metadata(path).unwrap().len());
    r
}

#[test]
fn gguf_q8_0_export_of_the_f32_graph_is_llama_cpps_file_requantized() {
    let Some(py) = require() else { return };
    let m = model();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q8.gguf");
    let report = export(m, &path, GgufType::Force(GgmlType::Q8_0));
    let hf: Vec<String> = report.tensors.iter().map(|t| t.source.clone()).collect();
    let rb = read_back(&py, &path, true, &hf);
    assert_original_metadata(&py, &rb.meta, 7);
    assert_eq!(rb.meta["file_type_name"], "MOSTLY_Q8_0");
    assert_eq!(report.file_type, 7);
    // Our names are the gguf package's names for the Hugging Face tensors.
    for t in &report.tensors {
        assert_eq!(
            rb.meta["hf_names"][&t.source],
            t.name.as_str(),
            "{}",
            t.source
        );
    }

    let original = GgufFile::open(&smollm2()).unwrap();
    assert_eq!(report.tensors.len(), original.tensors().len());
    let listed: BTreeMap<&str, &Value> = rb.meta["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["name"].as_str().unwrap(), t))
        .collect();
    let (values_map, raw_map) = (
        rb.tensors("values.safetensors"),
        rb.tensors("raw.safetensors"),
    );
    let values = SafeTensors::deserialize(&values_map).unwrap();
    let raw = SafeTensors::deserialize(&raw_map).unwrap();
    let mut lossless = 0;
    for t in &report.tensors {
        let info = original
            .tensor_info(&t.name)
            .expect("a tensor of the original");
        assert_eq!(
            listed[t.name.as_str()]["ggml_dims"],
            serde_json::json!(info.ggml_dims)
        );
        assert_eq!(t.dims, info.ir_dims(), "{}", t.name);
        // llama.cpp's tensor, as Kiln's reader decodes it (bit-exact with gguf-py).
        let want = original
            .dequantize(&t.name)
            .unwrap()
            .to_vec::<f32>()
            .unwrap();
        let (_, got) = tensor_of(&values, &t.name);
        let got_raw = raw.tensor(&t.name).unwrap().data();
        if t.dims.len() == 1 {
            assert_eq!(t.ty, GgmlType::F32);
            assert_eq!(got_raw, f32_bytes(&want), "{}", t.name);
            assert!(t.exact && !t.requantized);
            continue;
        }
        assert_eq!((t.ty, t.requantized), (GgmlType::Q8_0, true), "{}", t.name);
        assert_eq!(listed[t.name.as_str()]["type"], "Q8_0");
        let blocks = quantize(GgmlType::Q8_0, &want).unwrap();
        assert_eq!(got_raw, &blocks[..], "{}: Q8_0 blocks", t.name);
        let mut decoded = vec![0f32; want.len()];
        dequantize_into(GgmlType::Q8_0, &blocks, &mut decoded).unwrap();
        assert_eq!(
            f32_bytes(&got),
            f32_bytes(&decoded),
            "{}: gguf-py's values",
            t.name
        );
        let exact = f32_bytes(&got) == f32_bytes(&want);
        assert_eq!(t.exact, exact, "{}: exactness", t.name);
        lossless += usize::from(exact);
    }
    // The embedding was Q8_0 in llama.cpp's file: requantizing its values
    // gives them back.
    let embd = report
        .tensors
        .iter()
        .find(|t| t.name == "token_embd.weight")
        .unwrap();
    assert!(embd.exact);
    eprintln!("{lossless} of 211 requantized tensors decode to the f32 graph's values exactly");

    // Re-imported, the same tokens.
    let back = load_model(&path).unwrap();
    let text = page();
    assert_eq!(
        tokenizer_of(&back).encode(&text, true).unwrap(),
        tokenizer_of(m).encode(&text, true).unwrap()
    );
}

fn w4g32_and_w8_embedding(name: &str) -> Option<&'static str> {
    if name == EMBED {
        Some("w8")
    } else if name.ends_with("_proj.weight") {
        Some("w4g32")
    } else {
        None
    }
}

#[test]
fn gguf_packed_weights_are_written_from_their_codes_and_come_back_with_the_same_logits() {
    let Some(py) = require() else { return };
    let m = packed_model(model(), w4g32_and_w8_embedding);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("packed.gguf");
    let report = export(&m, &path, GgufType::Auto);
    assert_eq!(report.file_type, 2, "mostly Q4_0");
    for t in &report.tensors {
        let want = match t.source_dtype {
            DType::F32 => GgmlType::F32,
            DType::Quant(f) if f.bits() == 8 => GgmlType::Q8_0,
            _ => GgmlType::Q4_0,
        };
        assert_eq!(
            (t.ty, t.exact, t.requantized),
            (want, true, false),
            "{}",
            t.name
        );
    }
    let rb = read_back(&py, &path, true, &[]);
    assert_original_metadata(&py, &rb.meta, 2);
    assert_eq!(rb.meta["file_type_name"], "MOSTLY_Q4_0");
    let values_map = rb.tensors("values.safetensors");
    let values = SafeTensors::deserialize(&values_map).unwrap();
    for t in &report.tensors {
        let (dims, got) = tensor_of(&values, &t.name);
        assert_eq!(dims, t.dims, "{}", t.name);
        let got = hf_rows(&t.name, dims, got);
        assert!(
            f32_bytes(&got) == f32_bytes(&kiln_rows(&m, &t.source)),
            "{}: gguf-py's values differ from Kiln's dequantized weight",
            t.name
        );
    }

    // Re-imported: the same constants (weights and rotary tables), the same
    // tokens, the same logits.
    let source = dequantized(&m);
    let back = load_model(&path).unwrap();
    let mut compared = 0;
    for (id, t) in &source.graph.constants {
        let name = &source.graph.value(*id).name;
        let b = back
            .graph
            .constant(back.graph.find_value(name).expect("same constants"))
            .unwrap();
        assert!(
            b.same_as(t),
            "constant '{name}' differs after the round trip"
        );
        compared += 1;
    }
    assert_eq!(compared, back.graph.constants.len());
    let text = page();
    let ids = tokenizer_of(&m).encode(&text, true).unwrap();
    assert_eq!(tokenizer_of(&back).encode(&text, true).unwrap(), ids);
    assert_eq!(
        tokenizer_of(&back).encode(&text, false).unwrap(),
        tokenizer_of(&m).encode(&text, false).unwrap()
    );
    let prompt = tokenizer_of(&m)
        .encode("<|im_start|>user\nCall me Ishmael.<|im_end|>\n", true)
        .unwrap();
    let (a, b) = (logits(&source, &prompt), logits(&back, &prompt));
    assert_eq!(a.len(), prompt.len() * 49152);
    assert!(
        f32_bytes(&a) == f32_bytes(&b),
        "logits of the packed graph and of its GGUF export differ"
    );
    eprintln!(
        "{} tokens of Moby-Dick and the logits of a {}-token prompt identical after the round trip",
        ids.len(),
        prompt.len()
    );

    // The same weights under a Qwen2 config: no row permutation, and back.
    let mut q = m.clone();
    let mut cfg: Value = serde_json::from_slice(&q.assets["config.json"]).unwrap();
    cfg["model_type"] = "qwen2".into();
    cfg["architectures"] = serde_json::json!(["Qwen2ForCausalLM"]);
    q.assets
        .insert("config.json".into(), serde_json::to_vec(&cfg).unwrap());
    q.assets.remove(GGUF_METADATA_ASSET);
    let qpath = dir.path().join("qwen2.gguf");
    let r = export(&q, &qpath, GgufType::Auto);
    assert_eq!(r.architecture, "qwen2");
    let qb = read_back(&py, &qpath, false, &[]);
    assert_eq!(qb.meta["missing_keys"], serde_json::json!([]));
    assert_eq!(qb.meta["unknown_tensors"], serde_json::json!([]));
    let back = load_model(&qpath).unwrap();
    for (id, t) in &source.graph.constants {
        let name = &source.graph.value(*id).name;
        let b = back
            .graph
            .constant(back.graph.find_value(name).unwrap())
            .unwrap();
        assert!(
            b.same_as(t),
            "qwen2: constant '{name}' differs after the round trip"
        );
    }
}

#[test]
fn gguf_every_packed_format_gets_the_type_it_fits() {
    let Some(py) = require() else { return };
    let layer_format = |name: &str| -> Option<&'static str> {
        if name == EMBED {
            return Some("w4g128");
        }
        let layer: usize = name
            .strip_prefix("model.layers.")?
            .split('.')
            .next()?
            .parse()
            .ok()?;
        if !name.ends_with("_proj.weight") {
            return None;
        }
        [
            Some("w4g64"),
            Some("w3g64"),
            Some("w8g32"),
            Some("w4g32a"),
            Some("w8"),
            None,
        ][layer % 6]
    };
    let m = packed_model(model(), layer_format);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mixed.gguf");
    let report = export(&m, &path, GgufType::Auto);
    let rb = read_back(&py, &path, true, &[]);
    assert_original_metadata(&py, &rb.meta, 2);
    let (values_map, raw_map) = (
        rb.tensors("values.safetensors"),
        rb.tensors("raw.safetensors"),
    );
    let values = SafeTensors::deserialize(&values_map).unwrap();
    let raw = SafeTensors::deserialize(&raw_map).unwrap();
    let mut asym = [0usize; 2];
    for t in &report.tensors {
        let want_ty = match layer_format(&t.source).map(|f| QuantFormat::parse(f).unwrap()) {
            _ if t.dims.len() == 1 => GgmlType::F32,
            None => GgmlType::Q8_0,
            Some(f) if f.bits() == 8 => GgmlType::Q8_0,
            Some(f) if f.symmetric() => GgmlType::Q4_0,
            Some(_) => GgmlType::Q4_1,
        };
        assert_eq!(t.ty, want_ty, "{} ({})", t.name, t.source_dtype);
        // f32 weights are requantized; packed ones keep their codes.
        match t.source_dtype {
            DType::F32 => assert_eq!(t.requantized, t.dims.len() == 2, "{}", t.name),
            _ => assert!(!t.requantized, "{}", t.name),
        }
        let (dims, got) = tensor_of(&values, &t.name);
        let got = hf_rows(&t.name, dims, got);
        let kiln = kiln_rows(&m, &t.source);
        assert_eq!(
            t.exact,
            f32_bytes(&got) == f32_bytes(&kiln),
            "{}: the report's exactness",
            t.name
        );
        let max_error = got
            .iter()
            .zip(&kiln)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert_eq!(t.max_error, max_error, "{}: the report's max error", t.name);
        if t.requantized {
            // llama.cpp's quantizer on Kiln's values.
            let blocks = quantize(t.ty, &kiln).unwrap();
            let mut decoded = vec![0f32; kiln.len()];
            dequantize_into(t.ty, &blocks, &mut decoded).unwrap();
            assert!(f32_bytes(&got) == f32_bytes(&decoded), "{}", t.name);
            if heads_of(&t.name).is_none() {
                assert_eq!(
                    raw.tensor(&t.name).unwrap().data(),
                    &blocks[..],
                    "{}",
                    t.name
                );
            }
        } else if !t.exact {
            // Codes kept, a block's minimum (at most 15 steps of its scale)
            // rounded to f16: off by at most 2^-11 of it, plus the f32
            // rounding of d·q + m.
            assert_eq!(t.ty, GgmlType::Q4_1, "{}", t.name);
            let g = &m.graph;
            let view = g.constant(g.find_value(&t.source).unwrap()).unwrap();
            let view = view.packed_view().unwrap().unwrap();
            let rows = view.rows();
            let group = view.format().group_len(rows);
            for (i, (a, b)) in got.iter().zip(&kiln).enumerate() {
                let (c, r) = (i / rows, i % rows);
                let s = view.scale(c, r / group);
                let bound = 15.0 * s / 2048.0 + b.abs() * f32::EPSILON;
                assert!((a - b).abs() <= bound, "{} [{c}, {r}]: {a} vs {b}", t.name);
            }
        }
        if t.ty == GgmlType::Q4_1 {
            asym[usize::from(t.exact)] += 1;
        }
    }
    assert!(asym[1] + asym[0] == 35, "w4g32a tensors: {asym:?}");
    eprintln!(
        "w4g32a (RTN) to Q4_1 with the codes kept: {} tensors exact, {} with some minimums rounded to f16",
        asym[1], asym[0]
    );
}

#[test]
fn gguf_from_a_hugging_face_folder_the_vocabulary_is_derived_as_llama_cpp_does() {
    let Some(py) = require() else { return };
    // The model out as a Hugging Face folder and back: no GGUF metadata
    // travels, only config.json, tokenizer.json and tokenizer_config.json.
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("hf");
    kiln_frontends::safetensors::export_folder(&model().graph, &model().assets, &folder).unwrap();
    let m = load_model(&folder).unwrap();
    assert!(!m.assets.contains_key(GGUF_METADATA_ASSET));
    let path = dir.path().join("derived.gguf");
    export(&m, &path, GgufType::Force(GgmlType::Q4_0));
    let rb = read_back(&py, &path, false, &[]);
    assert_eq!(rb.meta["missing_keys"], serde_json::json!([]));
    assert_eq!(rb.meta["file_type_name"], "MOSTLY_Q4_0");
    let want = meta_map(original_meta(&py));
    let got = meta_map(&rb.meta);
    let only_original: Vec<&str> = want
        .keys()
        .filter(|k| !got.contains_key(*k))
        .map(String::as_str)
        .collect();
    let only_export: Vec<&str> = got
        .keys()
        .filter(|k| !want.contains_key(*k))
        .map(String::as_str)
        .collect();
    // Facts a Hugging Face folder does not hold (general.* provenance) or
    // that Kiln's tokenizer pipeline states differently (add_space_prefix
    // is a SentencePiece option; add_eos_token is written explicitly).
    assert_eq!(
        only_original,
        [
            "general.basename",
            "general.finetune",
            "general.languages",
            "general.license",
            "general.organization",
            "general.size_label",
            "general.type",
            "tokenizer.ggml.add_space_prefix",
        ]
    );
    assert_eq!(only_export, ["tokenizer.ggml.add_eos_token"]);
    assert_eq!(got["tokenizer.ggml.add_eos_token"]["value"], false);
    // No `_name_or_path` in the folder's config: the file's stem.
    assert_eq!(got["general.name"]["value"], "derived");
    for (key, w) in &want {
        if got.contains_key(key) && key != "general.file_type" && key != "general.name" {
            assert_same_entry(key, &got[key], w);
        }
    }
    assert!(got.contains_key("tokenizer.chat_template"));
    let back = load_model(&path).unwrap();
    let text = page();
    assert_eq!(
        tokenizer_of(&back).encode(&text, true).unwrap(),
        tokenizer_of(&m).encode(&text, true).unwrap()
    );
}

#[test]
fn gguf_export_refuses_models_that_are_not_llama_family_naming_their_architecture() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.gguf");
    let opts = GgufExportOptions::default();
    let e = export_gguf(&kiln_ir::Graph::default(), &BTreeMap::new(), &out, &opts)
        .unwrap_err()
        .to_string();
    assert!(e.contains("architecture templates"), "{e}");
    assert!(!out.exists());

    let minilm = kiln_cache().join("models/all-minilm-l6-v2");
    if !minilm.exists() {
        eprintln!("skipped the MiniLM part: {} is missing", minilm.display());
        return;
    }
    let m = load_model(&minilm).unwrap();
    let e = export_gguf(&m.graph, &m.assets, &out, &opts)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("'bert'") && e.contains("BertModel") && e.contains("llama, mistral, qwen2"),
        "{e}"
    );
    assert!(!out.exists());
}
