//! Small ONNX models written from Rust, and a way to run the `kiln` binary.

#![allow(dead_code)]

use prost::Message;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use tract_onnx::pb;

/// ONNX's element type code for f32.
pub const ONNX_FLOAT: i32 = 1;

fn value_info(name: &str, dims: &[Result<i64, &str>]) -> pb::ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| pb::tensor_shape_proto::Dimension {
            denotation: String::new(),
            value: Some(match d {
                Ok(n) => pb::tensor_shape_proto::dimension::Value::DimValue(*n),
                Err(s) => pb::tensor_shape_proto::dimension::Value::DimParam(s.to_string()),
            }),
        })
        .collect();
    pb::ValueInfoProto {
        name: name.into(),
        r#type: Some(pb::TypeProto {
            denotation: String::new(),
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: ONNX_FLOAT,
                shape: Some(pb::TensorShapeProto { dim }),
            })),
        }),
        ..Default::default()
    }
}

fn node(op: &str, inputs: &[&str], outputs: &[&str]) -> pb::NodeProto {
    pb::NodeProto {
        op_type: op.into(),
        name: format!("{op}_0"),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

fn f32_tensor(name: &str, dims: &[i64], values: &[f32]) -> pb::TensorProto {
    pb::TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type: ONNX_FLOAT,
        raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ..Default::default()
    }
}

/// Weights of the tiny model: W[4,3] = (i+1)/10 row-major, b = [0.5, -1, 0].
pub fn tiny_weights() -> (Vec<f32>, Vec<f32>) {
    (
        (0..12).map(|i| (i + 1) as f32 / 10.0).collect(),
        vec![0.5, -1.0, 0.0],
    )
}

/// y = Relu(x · W + b) with x: f32[batch, 4]; the weight is stored externally
/// in `tiny.bin` when `external` is set.
pub fn tiny_model(dir: &Path, external: bool) -> PathBuf {
    let (w, b) = tiny_weights();
    let mut wt = f32_tensor("W", &[4, 3], &w);
    if external {
        std::fs::write(dir.join("tiny.bin"), &wt.raw_data).unwrap();
        wt.raw_data.clear();
        wt.data_location = Some(1);
        wt.external_data = vec![pb::StringStringEntryProto {
            key: "location".into(),
            value: "tiny.bin".into(),
        }];
    }
    let graph = pb::GraphProto {
        name: "tiny".into(),
        node: vec![
            node("MatMul", &["x", "W"], &["xw"]),
            node("Add", &["xw", "b"], &["z"]),
            node("Relu", &["z"], &["y"]),
        ],
        initializer: vec![wt, f32_tensor("b", &[3], &b)],
        input: vec![value_info("x", &[Err("batch"), Ok(4)])],
        output: vec![value_info("y", &[Err("batch"), Ok(3)])],
        ..Default::default()
    };
    let model = pb::ModelProto {
        ir_version: 8,
        opset_import: vec![pb::OperatorSetIdProto {
            domain: String::new(),
            version: 17,
        }],
        producer_name: "kiln-tests".into(),
        graph: Some(graph),
        ..Default::default()
    };
    let path = dir.join(if external {
        "tiny_ext.onnx"
    } else {
        "tiny.onnx"
    });
    std::fs::write(&path, model.encode_to_vec()).unwrap();
    path
}

/// Runs the `kiln` binary built for these tests.
pub fn kiln(args: &[&str]) -> Output {
    kiln_with_env(args, &[])
}

/// Runs the `kiln` binary with extra environment variables.
pub fn kiln_with_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("kiln binary runs")
}

/// Stderr as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts a failed run with one clear error line mentioning every `needle`, and no panic.
pub fn assert_clean_failure(o: &Output, needles: &[&str]) {
    let err = stderr(o);
    assert!(!o.status.success(), "expected failure, stderr: {err}");
    assert!(!err.contains("panicked"), "panic: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one error line, got: {err}");
    assert!(lines[0].starts_with("error: "), "{err}");
    for n in needles {
        assert!(
            lines[0].contains(n),
            "error `{}` does not mention `{n}`",
            lines[0]
        );
    }
}

/// The model and data cache that scripts/setup.sh fills.
pub fn cache() -> PathBuf {
    std::env::var_os("KILN_CACHE")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_default();
            std::env::var_os("XDG_CACHE_HOME")
                .filter(|p| !p.is_empty())
                .map(PathBuf::from)
                .unwrap_or_else(|| home.join(".cache"))
                .join("kiln")
        })
}

/// True when every path exists; otherwise says why the test is skipped
/// (and fails under CI, where set-up must have provided them).
pub fn have(paths: &[&PathBuf]) -> bool {
    let missing: Vec<_> = paths.iter().filter(|p| !p.exists()).collect();
    if missing.is_empty() {
        return true;
    }
    assert!(
        std::env::var("CI").map_or(true, |v| v.is_empty() || v == "0" || v == "false"),
        "missing under CI: {missing:?}"
    );
    eprintln!("skipped: missing {missing:?} (run scripts/setup.sh)");
    false
}

/// The JSON object a successful `--json` command printed.
pub fn json_of(o: &Output) -> serde_json::Value {
    assert!(o.status.success(), "kiln failed: {}", stderr(o));
    serde_json::from_slice(&o.stdout).expect("--json prints one JSON object")
}

/// Writes one f32 input tensor as a safetensors file for `kiln run`.
pub fn write_input(path: &std::path::Path, name: &str, dims: &[usize], values: &[f32]) {
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let view = safetensors::tensor::TensorView::new(
        safetensors::tensor::Dtype::F32,
        dims.to_vec(),
        &bytes,
    )
    .unwrap();
    std::fs::write(
        path,
        safetensors::serialize(vec![(name.to_string(), view)], &None).unwrap(),
    )
    .unwrap();
}

/// Reads one f32 tensor from the safetensors file `kiln run` wrote.
pub fn read_output(path: &std::path::Path, name: &str) -> (Vec<usize>, Vec<f32>) {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor(name).unwrap();
    let vals = t
        .data()
        .chunks(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    (t.shape().to_vec(), vals)
}
