//! Shared helpers of the GGUF reader tests: locating the reference venv,
//! running `scripts/gguf_testfiles.py`, and comparing against its output.

#![allow(dead_code)]

use kiln_frontends::gguf::{GgufFile, MetaValue};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

/// `$KILN_CACHE`, else `~/.cache/kiln` (as in scripts/setup.sh).
pub fn kiln_cache() -> PathBuf {
    if let Some(p) = std::env::var_os("KILN_CACHE").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    std::env::var_os("XDG_CACHE_HOME")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"))
        .join("kiln")
}

/// The reference venv's Python, if it exists.
pub fn python() -> Option<PathBuf> {
    let p = kiln_cache().join("venv/bin/python");
    p.exists().then_some(p)
}

/// Runs `scripts/gguf_testfiles.py OUT_DIR ARGS...`; panics with its output on failure.
pub fn run_script(python: &Path, out_dir: &Path, args: &[&str]) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/gguf_testfiles.py");
    let out = Command::new(python)
        .arg(&script)
        .arg(out_dir)
        .args(args)
        .output()
        .expect("cannot start the reference Python");
    assert!(
        out.status.success(),
        "{} failed:\n{}\n{}",
        script.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Reads a JSON file.
pub fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).expect("reference JSON missing");
    serde_json::from_str(&text).expect("reference JSON is valid")
}

/// Asserts that `got` is the value the script described as `{"type", "value"}`
/// (floats as IEEE bit patterns).
pub fn check_meta(ctx: &str, want: &Value, got: &MetaValue) {
    let ty = want["type"].as_str().expect("type is a string");
    let v = &want["value"];
    assert_eq!(got.type_name(), ty, "{ctx}: value type");
    let ok = match got {
        MetaValue::U8(_) | MetaValue::U16(_) | MetaValue::U32(_) | MetaValue::U64(_) => {
            got.as_u64() == v.as_u64()
        }
        MetaValue::I8(_) | MetaValue::I16(_) | MetaValue::I32(_) | MetaValue::I64(_) => {
            got.as_i64() == v.as_i64()
        }
        MetaValue::F32(x) => Some(u64::from(x.to_bits())) == v.as_u64(),
        MetaValue::F64(x) => Some(x.to_bits()) == v.as_u64(),
        MetaValue::Bool(b) => Some(*b) == v.as_bool(),
        MetaValue::String(s) => Some(s.as_str()) == v.as_str(),
        MetaValue::Array(items) => {
            let want_items = v.as_array().expect("array value is a list");
            assert_eq!(items.len(), want_items.len(), "{ctx}: array length");
            for (i, (w, g)) in want_items.iter().zip(items).enumerate() {
                check_meta(&format!("{ctx}[{i}]"), w, g);
            }
            true
        }
    };
    assert!(ok, "{ctx}: got {got:?}, expected {v}");
}

/// Asserts that the file's metadata is exactly `want` (a key → value object).
pub fn check_all_meta(file: &GgufFile, want: &Value) {
    let want = want.as_object().expect("metadata is an object");
    let got_keys: Vec<&String> = file.metadata().keys().collect();
    let mut want_keys: Vec<&String> = want.keys().collect();
    want_keys.sort();
    assert_eq!(
        got_keys,
        want_keys,
        "{}: metadata keys",
        file.path().display()
    );
    for (key, w) in want {
        let got = file.get(key).expect("key present");
        check_meta(&format!("{}: {key}", file.path().display()), w, got);
    }
}

/// Asserts that the file's tensor infos are, in order, those the script listed.
pub fn check_tensor_list(file: &GgufFile, want: &Value) {
    let want = want.as_array().expect("tensors is a list");
    let got = file.tensors();
    assert_eq!(
        got.len(),
        want.len(),
        "{}: tensor count",
        file.path().display()
    );
    for (g, w) in got.iter().zip(want) {
        let ctx = format!("{}: tensor '{}'", file.path().display(), g.name);
        assert_eq!(g.name, w["name"].as_str().unwrap(), "{ctx}: name");
        assert_eq!(
            g.ggml_type.name(),
            w["type"].as_str().unwrap(),
            "{ctx}: type"
        );
        assert_eq!(
            Some(u64::from(g.ggml_type.id())),
            w["type_id"].as_u64(),
            "{ctx}"
        );
        let dims: Vec<u64> = w["ggml_dims"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap())
            .collect();
        assert_eq!(g.ggml_dims, dims, "{ctx}: dims");
        assert_eq!(
            Some(g.n_elements()),
            w["n_elements"].as_u64(),
            "{ctx}: elements"
        );
        assert_eq!(Some(g.n_bytes()), w["n_bytes"].as_u64(), "{ctx}: bytes");
        assert_eq!(Some(g.offset), w["offset"].as_u64(), "{ctx}: offset");
        assert_eq!(file.tensor_info(&g.name), Some(g), "{ctx}: lookup by name");
    }
}

/// Dequantizes `name` and asserts bit equality, and equal dims, with `want`.
/// Returns the number of elements compared.
pub fn check_dequantized(
    file: &GgufFile,
    name: &str,
    want: &safetensors::tensor::TensorView,
) -> usize {
    let ctx = format!("{}: tensor '{name}'", file.path().display());
    let got = file
        .dequantize(name)
        .unwrap_or_else(|e| panic!("{ctx}: {e}"));
    assert_eq!(
        want.dtype(),
        safetensors::Dtype::F32,
        "{ctx}: reference dtype"
    );
    assert_eq!(got.dims(), want.shape(), "{ctx}: dims");
    let got = got.to_vec::<f32>().expect("f32 tensor");
    let want: Vec<u32> = want
        .data()
        .chunks_exact(4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    assert_eq!(got.len(), want.len(), "{ctx}: element count");
    let mismatches: Vec<usize> = (0..got.len())
        .filter(|&i| got[i].to_bits() != want[i])
        .collect();
    if let Some(&i) = mismatches.first() {
        panic!(
            "{ctx}: {} of {} elements differ; first at {i}: got {} ({:#010x}), expected {} ({:#010x})",
            mismatches.len(),
            got.len(),
            got[i],
            got[i].to_bits(),
            f32::from_bits(want[i]),
            want[i]
        );
    }
    got.len()
}
