//! Every kind of bad input gives one clear error, a non-zero exit, no panic
//! and no partial output.

mod common;

use common::*;
use safetensors::tensor::{Dtype, TensorView};
use std::path::Path;

fn write_f32(path: &Path, name: &str, dims: &[usize]) {
    let n: usize = dims.iter().product();
    let bytes = vec![0u8; n * 4];
    let view = TensorView::new(Dtype::F32, dims.to_vec(), &bytes).unwrap();
    std::fs::write(
        path,
        safetensors::serialize(vec![(name.to_string(), view)], &None).unwrap(),
    )
    .unwrap();
}

#[test]
fn truncated_and_garbage_models() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path(), false);
    let bytes = std::fs::read(&model).unwrap();
    let truncated = dir.path().join("truncated.onnx");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let garbage = dir.path().join("garbage.onnx");
    std::fs::write(&garbage, b"\xff\xfe this is not protobuf \x00\x01").unwrap();
    for bad in [&truncated, &garbage] {
        let out = dir.path().join("out.kiln");
        let o = kiln(&[
            "optimize",
            bad.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ]);
        assert_clean_failure(&o, &[bad.file_name().unwrap().to_str().unwrap()]);
        assert!(!out.exists(), "partial bundle left behind");
    }
    let missing = dir.path().join("nope.onnx");
    let o = kiln(&["inspect", missing.to_str().unwrap()]);
    assert_clean_failure(&o, &["nope.onnx"]);
}

#[test]
fn missing_external_data() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path(), true);
    std::fs::remove_file(dir.path().join("tiny.bin")).unwrap();
    let out = dir.path().join("out.kiln");
    let o = kiln(&[
        "optimize",
        model.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_clean_failure(&o, &["tiny.bin"]);
    assert!(!out.exists());
}

#[test]
fn wrong_inputs_for_run() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path(), false);
    let bundle = dir.path().join("m.kiln");
    assert!(kiln(&[
        "optimize",
        model.to_str().unwrap(),
        "-o",
        bundle.to_str().unwrap(),
        "-q"
    ])
    .status
    .success());
    let out = dir.path().join("out.safetensors");

    let wrong_name = dir.path().join("wrong_name.safetensors");
    write_f32(&wrong_name, "input", &[1, 4]);
    let o = kiln(&[
        "run",
        bundle.to_str().unwrap(),
        "--input",
        wrong_name.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
    ]);
    assert_clean_failure(&o, &["input `input`", "no such input", "expected: x"]);
    assert!(!out.exists());

    let wrong_shape = dir.path().join("wrong_shape.safetensors");
    write_f32(&wrong_shape, "x", &[1, 5]);
    let o = kiln(&[
        "run",
        bundle.to_str().unwrap(),
        "--input",
        wrong_shape.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
    ]);
    assert_clean_failure(&o, &["input `x`", "[batch,4]"]);
    assert!(!out.exists());
}

#[test]
fn corrupted_bundle() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path(), false);
    let bundle = dir.path().join("m.kiln");
    assert!(kiln(&[
        "optimize",
        model.to_str().unwrap(),
        "-o",
        bundle.to_str().unwrap(),
        "-q"
    ])
    .status
    .success());
    let mut bytes = std::fs::read(&bundle).unwrap();
    let last = bytes.len() - 5;
    bytes[last] ^= 0x40;
    std::fs::write(&bundle, &bytes).unwrap();
    let input = dir.path().join("in.safetensors");
    write_f32(&input, "x", &[1, 4]);
    let out = dir.path().join("out.safetensors");
    let o = kiln(&[
        "run",
        bundle.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
    ]);
    assert_clean_failure(&o, &["m.kiln"]);
    assert!(
        stderr(&o).to_lowercase().contains("checksum") || stderr(&o).contains("corrupt"),
        "{}",
        stderr(&o)
    );
    assert!(!out.exists());
}

#[test]
fn unwritable_output_path() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path(), false);
    let out = dir.path().join("no/such/dir/m.kiln");
    let o = kiln(&[
        "optimize",
        model.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_clean_failure(&o, &["no/such/dir"]);
    assert!(!out.exists());
}

#[test]
fn unknown_target() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path(), false);
    let out = dir.path().join("m.kiln");
    let o = kiln(&[
        "optimize",
        model.to_str().unwrap(),
        "--target",
        "tpu",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_clean_failure(&o, &["tpu", "cpu"]);
}
