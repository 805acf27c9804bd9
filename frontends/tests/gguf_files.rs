//! GGUF reader against the gguf Python package, on files its GGUFWriter
//! wrote (scripts/gguf_testfiles.py): metadata of every value type, tensor
//! infos, and bit-exact dequantization of every supported type, checked
//! element by element against `gguf.quants.dequantize`.
//!
//! Skips (with a message) when the reference venv is missing.

mod gguf_common;

use gguf_common::{
    check_all_meta, check_dequantized, check_tensor_list, python, read_json, run_script,
};
use kiln_frontends::gguf::{GgmlType, GgufError, GgufFile};
use std::collections::BTreeSet;

#[test]
fn python_written_files_read_and_dequantize_bit_exactly() {
    let Some(python) = python() else {
        eprintln!("reference venv not found (run scripts/setup.sh); skipping");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    run_script(&python, dir.path(), &[]);
    let expected = read_json(&dir.path().join("expected.json"));
    let values_bytes = std::fs::read(dir.path().join("expected.safetensors")).unwrap();
    let values = safetensors::SafeTensors::deserialize(&values_bytes).unwrap();

    let mut types_checked = BTreeSet::new();
    let mut elements = 0;
    for want in expected["files"].as_array().unwrap() {
        let path = dir.path().join(want["file"].as_str().unwrap());
        let file = GgufFile::open(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(file.version(), 3);
        assert_eq!(
            Some(file.alignment()),
            want["alignment"].as_u64(),
            "{}",
            path.display()
        );
        assert_eq!(
            Some(file.data_offset()),
            want["data_offset"].as_u64(),
            "{}",
            path.display()
        );
        check_all_meta(&file, &want["metadata"]);
        check_tensor_list(&file, &want["tensors"]);
        for info in file.tensors() {
            if !info.ggml_type.can_dequantize() {
                continue;
            }
            let reference = values.tensor(&info.name).unwrap();
            elements += check_dequantized(&file, &info.name, &reference);
            assert_eq!(file.tensor_bytes(info).len() as u64, info.n_bytes());
            types_checked.insert(info.ggml_type.name());
        }
    }
    let supported: BTreeSet<&str> = GgmlType::ALL
        .iter()
        .filter(|t| t.can_dequantize())
        .map(|t| t.name())
        .collect();
    assert_eq!(types_checked, supported, "every supported type is covered");
    eprintln!(
        "{} types, {elements} elements bit-identical to gguf.quants.dequantize",
        types_checked.len()
    );

    // A type the reader knows but cannot convert: the error names all three.
    let path = dir.path().join("iq2_xxs.gguf");
    let file = GgufFile::open(&path).unwrap();
    let err = file.dequantize("iq.weight").unwrap_err();
    assert!(matches!(
        err,
        GgufError::UnsupportedType {
            ty: GgmlType::IQ2_XXS,
            ..
        }
    ));
    let msg = err.to_string();
    assert!(msg.starts_with(&path.display().to_string()), "{msg}");
    assert!(
        msg.contains("tensor 'iq.weight' has type IQ2_XXS, which Kiln cannot dequantize (supported: F32, F16, BF16, Q4_0"),
        "{msg}"
    );
}

#[test]
fn type_table_matches_gguf_package() {
    let Some(python) = python() else {
        eprintln!("reference venv not found (run scripts/setup.sh); skipping");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    run_script(&python, dir.path(), &[]);
    let expected = read_json(&dir.path().join("expected.json"));
    let table = expected["ggml_types"].as_object().unwrap();
    for (name, t) in table {
        let ty = GgmlType::from_id(t["id"].as_u64().unwrap() as u32);
        assert_eq!(ty.name(), name);
        assert_eq!(ty.block_size(), t["block_size"].as_u64(), "{name}");
        assert_eq!(ty.type_size(), t["type_size"].as_u64(), "{name}");
    }
    for ty in GgmlType::ALL {
        assert!(
            table.contains_key(ty.name()),
            "{ty} is not in GGML_QUANT_SIZES"
        );
    }
}

#[test]
fn version_2_reads_like_version_3() {
    let Some(python) = python() else {
        eprintln!("reference venv not found (run scripts/setup.sh); skipping");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    run_script(&python, dir.path(), &[]);
    // Versions 2 and 3 share the little-endian layout; only the field differs.
    let v3 = dir.path().join("q4_k.gguf");
    let v2 = dir.path().join("q4_k_v2.gguf");
    let mut bytes = std::fs::read(&v3).unwrap();
    bytes[4..8].copy_from_slice(&2u32.to_le_bytes());
    std::fs::write(&v2, &bytes).unwrap();
    let (a, b) = (GgufFile::open(&v3).unwrap(), GgufFile::open(&v2).unwrap());
    assert_eq!((a.version(), b.version()), (3, 2));
    assert_eq!(a.metadata(), b.metadata());
    assert_eq!(a.tensors(), b.tensors());
    for t in a.tensors() {
        let (x, y) = (
            a.dequantize(&t.name).unwrap(),
            b.dequantize(&t.name).unwrap(),
        );
        assert!(x.same_as(&y), "{}", t.name);
    }
}
