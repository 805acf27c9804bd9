//! Importer tests on models written in Rust with the `tract_onnx::pb` structs.

use super::*;
use crate::load_model;
use kiln_ir::{text, DType};
use tract_onnx::pb::attribute_proto::AttributeType;
use tract_onnx::pb::tensor_proto::{DataLocation, DataType};
use tract_onnx::pb::tensor_shape_proto::Dimension;
use tract_onnx::pb::type_proto;
use tract_onnx::pb::{
    AttributeProto, OperatorSetIdProto, StringStringEntryProto, TensorProto, TensorShapeProto,
    TypeProto,
};

/// A dimension of a declared shape.
enum D {
    V(i64),
    P(&'static str),
    N,
}

fn vi(name: &str, elem: DataType, dims: &[D]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| Dimension {
            denotation: String::new(),
            value: match d {
                D::V(v) => Some(DimValue::DimValue(*v)),
                D::P(p) => Some(DimValue::DimParam(p.to_string())),
                D::N => None,
            },
        })
        .collect();
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            denotation: String::new(),
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: elem as i32,
                shape: Some(TensorShapeProto { dim }),
            })),
        }),
        doc_string: String::new(),
    }
}

fn node(
    op: &str,
    name: &str,
    inputs: &[&str],
    outputs: &[&str],
    attrs: Vec<AttributeProto>,
) -> NodeProto {
    NodeProto {
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        name: name.into(),
        op_type: op.into(),
        attribute: attrs,
        ..Default::default()
    }
}

fn attr(name: &str, ty: AttributeType) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: ty as i32,
        ..Default::default()
    }
}

fn a_int(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        i: v,
        ..attr(name, AttributeType::Int)
    }
}

fn a_float(name: &str, v: f32) -> AttributeProto {
    AttributeProto {
        f: v,
        ..attr(name, AttributeType::Float)
    }
}

fn a_ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto {
        ints: v.to_vec(),
        ..attr(name, AttributeType::Ints)
    }
}

fn a_floats(name: &str, v: &[f32]) -> AttributeProto {
    AttributeProto {
        floats: v.to_vec(),
        ..attr(name, AttributeType::Floats)
    }
}

fn f32_tensor(name: &str, dims: &[i64], vals: &[f32]) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type: DataType::Float as i32,
        float_data: vals.to_vec(),
        ..Default::default()
    }
}

fn model(
    opset: i64,
    nodes: Vec<NodeProto>,
    inputs: Vec<ValueInfoProto>,
    outputs: Vec<ValueInfoProto>,
    inits: Vec<TensorProto>,
) -> ModelProto {
    ModelProto {
        ir_version: 8,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: opset,
        }],
        producer_name: "kiln-tests".into(),
        producer_version: "1.0".into(),
        metadata_props: vec![StringStringEntryProto {
            key: "author".into(),
            value: "me".into(),
        }],
        graph: Some(GraphProto {
            node: nodes,
            name: "g".into(),
            initializer: inits,
            input: inputs,
            output: outputs,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Imports with inference; while `kiln_ir::infer` is still a stub, falls
/// back to the graph without inferred types so structure can be checked.
fn import_lenient(m: &ModelProto) -> Graph {
    let bytes = m.encode_to_vec();
    match import_bytes(&bytes, Path::new("."), "model.onnx") {
        Ok(g) => g,
        Err(ImportError::Infer { source, .. })
            if source.source.message.contains("not implemented") =>
        {
            import_bytes_uninferred(&bytes, Path::new("."), "model.onnx")
                .expect("uninferred import")
        }
        Err(e) => panic!("import failed: {e}"),
    }
}

fn import_err(m: &ModelProto) -> String {
    match import_bytes(&m.encode_to_vec(), Path::new("."), "model.onnx") {
        Ok(_) => panic!("import unexpectedly succeeded"),
        Err(e) => e.to_string(),
    }
}

fn x_in(dims: &[D]) -> Vec<ValueInfoProto> {
    vec![vi("x", DataType::Float, dims)]
}

fn y_out() -> Vec<ValueInfoProto> {
    vec![vi("y", DataType::Float, &[])]
}

#[test]
fn small_graph_with_initializers_constants_and_symbols() {
    let m = model(
        17,
        vec![
            node("MatMul", "mm", &["x", "w"], &["h"], vec![]),
            node(
                "Constant",
                "c",
                &[],
                &["bias"],
                vec![a_floats("value_floats", &[1.0, 2.0, 3.0, 4.0])],
            ),
            node("Constant", "c2", &[], &["two"], vec![a_int("value_int", 2)]),
            node("Add", "add", &["h", "bias"], &["y"], vec![]),
        ],
        vec![
            vi("x", DataType::Float, &[D::P("batch"), D::V(4), D::N]),
            // Also an initializer: a constant with a default, not an input.
            vi("w", DataType::Float, &[D::V(4), D::V(4)]),
        ],
        y_out(),
        vec![f32_tensor("w", &[4, 4], &[0.5; 16])],
    );
    let g = import_lenient(&m);
    let t = text::print(&g);
    assert!(t.contains("input %x: f32[batch,4,x_dim2]"), "{t}");
    assert!(t.contains("const %w: f32[4,4] = [0.5, 0.5"), "{t}");
    assert!(
        t.contains("const %bias: f32[4] = [1.0, 2.0, 3.0, 4.0]"),
        "{t}"
    );
    assert!(t.contains("const %two: i64[] = [2]"), "{t}");
    assert!(t.contains("= MatMul(%x, %w) @\"mm\""), "{t}");
    assert!(t.contains("= Add(%h, %bias) @\"add\""), "{t}");
    assert!(t.contains("output %y"), "{t}");
    assert_eq!(g.inputs.len(), 1);
    assert_eq!(g.metadata["onnx.producer"], "kiln-tests");
    assert_eq!(g.metadata["onnx.producer_version"], "1.0");
    assert_eq!(g.metadata["onnx.opset"], "17");
    assert_eq!(g.metadata["onnx.meta.author"], "me");
    assert_eq!(g.name, "g");
}

#[test]
fn unsorted_nodes_are_sorted() {
    let m = model(
        17,
        vec![
            node("Neg", "second", &["h"], &["y"], vec![]),
            node("Relu", "first", &["x"], &["h"], vec![]),
        ],
        x_in(&[D::V(2)]),
        y_out(),
        vec![],
    );
    let g = import_lenient(&m);
    assert_eq!(g.nodes[0].name, "first");
    assert_eq!(g.nodes[1].name, "second");
}

fn write_model(dir: &Path, name: &str, m: &ModelProto) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, m.encode_to_vec()).expect("write model");
    p
}

fn external(name: &str, dims: &[i64], location: &str, offset: usize, len: usize) -> TensorProto {
    let kv = |k: &str, v: String| StringStringEntryProto {
        key: k.into(),
        value: v,
    };
    TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type: DataType::Float as i32,
        data_location: Some(DataLocation::External as i32),
        external_data: vec![
            kv("location", location.into()),
            kv("offset", offset.to_string()),
            kv("length", len.to_string()),
        ],
        ..Default::default()
    }
}

#[test]
fn external_data_is_mapped_when_aligned_and_copied_otherwise() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut bin = Vec::new();
    for v in [1.0f32, 2.0, 3.0, 4.0, 5.0] {
        bin.extend_from_slice(&v.to_le_bytes());
    }
    std::fs::write(dir.path().join("weights.bin"), &bin).expect("write bin");
    let m = model(
        17,
        vec![
            node("Add", "a", &["x", "wa"], &["h"], vec![]),
            node("Add", "b", &["h", "wb"], &["y"], vec![]),
        ],
        x_in(&[D::V(2)]),
        y_out(),
        vec![
            external("wa", &[2], "weights.bin", 0, 8),
            external("wb", &[2], "weights.bin", 12, 8),
        ],
    );
    let path = write_model(dir.path(), "model.onnx", &m);
    let bytes = std::fs::read(&path).expect("read");
    let g = match import(&path) {
        Ok(g) => g,
        Err(ImportError::Infer { .. }) => {
            import_bytes_uninferred(&bytes, dir.path(), "model.onnx").expect("import")
        }
        Err(e) => panic!("{e}"),
    };
    let wa = g.constant(g.find_value("wa").expect("wa")).expect("const");
    let wb = g.constant(g.find_value("wb").expect("wb")).expect("const");
    assert!(wa.storage().is_mapped());
    assert!(!wb.storage().is_mapped());
    assert_eq!(wa.to_vec::<f32>().expect("f32"), vec![1.0, 2.0]);
    assert_eq!(wb.to_vec::<f32>().expect("f32"), vec![4.0, 5.0]);

    // The same tensor through the public single-tensor entry point.
    let t =
        tensor_from_proto(&external("wb", &[2], "weights.bin", 12, 8), dir.path()).expect("tensor");
    assert_eq!(t.to_vec::<f32>().expect("f32"), vec![4.0, 5.0]);
}

#[test]
fn missing_external_file_names_tensor_and_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let m = model(
        17,
        vec![node("Add", "a", &["x", "w"], &["y"], vec![])],
        x_in(&[D::V(2)]),
        y_out(),
        vec![external("w", &[2], "nothere.bin", 0, 8)],
    );
    let path = write_model(dir.path(), "model.onnx", &m);
    let e = import(&path).expect_err("must fail").to_string();
    assert!(e.contains("model.onnx"), "{e}");
    assert!(e.contains("tensor 'w'"), "{e}");
    assert!(e.contains("nothere.bin"), "{e}");

    let escape = model(
        17,
        vec![],
        vec![],
        vec![],
        vec![external("w", &[2], "../w.bin", 0, 8)],
    );
    let e = import_err(&escape);
    assert!(e.contains("must be a relative path"), "{e}");
}

#[test]
fn truncated_and_garbage_files_are_errors_naming_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let m = model(
        17,
        vec![node("Add", "a", &["x", "w"], &["y"], vec![])],
        x_in(&[D::V(4)]),
        y_out(),
        vec![f32_tensor("w", &[4], &[1.0, 2.0, 3.0, 4.0])],
    );
    let bytes = m.encode_to_vec();
    for cut in [1, bytes.len() / 2, bytes.len() - 1] {
        let p = dir.path().join("cut.onnx");
        std::fs::write(&p, &bytes[..cut]).expect("write");
        let e = import(&p)
            .expect_err("truncated model must fail")
            .to_string();
        assert!(e.contains("cut.onnx"), "{e}");
    }
    let p = dir.path().join("garbage.onnx");
    std::fs::write(&p, [0xffu8; 64]).expect("write");
    let e = load_model(&p).expect_err("garbage must fail").to_string();
    assert!(e.contains("garbage.onnx"), "{e}");
    let p = dir.path().join("empty.onnx");
    std::fs::write(&p, []).expect("write");
    assert!(import(&p)
        .expect_err("empty")
        .to_string()
        .contains("empty.onnx"));
    let e = import(&dir.path().join("absent.onnx"))
        .expect_err("absent")
        .to_string();
    assert!(e.contains("absent.onnx"), "{e}");
    let e = load_model(Path::new("model.tflite"))
        .expect_err("format")
        .to_string();
    assert!(e.contains("model.tflite: unsupported model format"), "{e}");
    let e = load_model(Path::new("absent.gguf"))
        .expect_err("absent")
        .to_string();
    assert!(e.contains("absent.gguf"), "{e}");
}

#[test]
fn unsupported_op_names_node_op_and_opset() {
    let m = model(
        17,
        vec![node("LSTM", "foo", &["x"], &["y"], vec![])],
        x_in(&[D::V(2)]),
        y_out(),
        vec![],
    );
    assert_eq!(
        import_err(&m),
        "model.onnx: node 'foo' (LSTM, opset 17): unsupported operator"
    );

    let mut m = model(
        17,
        vec![NodeProto {
            domain: "com.microsoft".into(),
            ..node("FusedGemm", "bar", &["x"], &["y"], vec![])
        }],
        x_in(&[D::V(2)]),
        y_out(),
        vec![],
    );
    m.opset_import.push(OperatorSetIdProto {
        domain: "com.microsoft".into(),
        version: 1,
    });
    assert_eq!(
        import_err(&m),
        "model.onnx: node 'bar' (FusedGemm, domain com.microsoft, opset 1): unsupported operator"
    );

    let m = model(5, vec![], x_in(&[D::V(2)]), vec![], vec![]);
    assert!(import_err(&m).contains("unsupported opset"));
}

#[test]
fn unknown_attributes_and_unsupported_outputs_are_errors() {
    let m = model(
        17,
        vec![node("Relu", "r", &["x"], &["y"], vec![a_int("fancy", 1)])],
        x_in(&[D::V(2)]),
        y_out(),
        vec![],
    );
    let e = import_err(&m);
    assert!(
        e.contains("node 'r' (Relu, opset 17): attribute 'fancy'"),
        "{e}"
    );

    // LayerNorm's statistics outputs are supported; four outputs are not.
    let m = model(
        17,
        vec![node(
            "LayerNormalization",
            "ln",
            &["x", "s"],
            &["y", "mean", "inv", "extra"],
            vec![],
        )],
        x_in(&[D::V(2)]),
        y_out(),
        vec![f32_tensor("s", &[2], &[1.0, 1.0])],
    );
    assert!(import_err(&m).contains("node 'ln' (LayerNormalization, opset 17)"));

    // MaxPool indices in column-major order (storage_order=1) are not supported.
    let m = model(
        17,
        vec![node(
            "MaxPool",
            "mp",
            &["x"],
            &["y", "idx"],
            vec![a_ints("kernel_shape", &[2]), a_int("storage_order", 1)],
        )],
        x_in(&[D::V(1), D::V(1), D::V(4)]),
        y_out(),
        vec![],
    );
    assert!(import_err(&m).contains("storage_order=1"));

    let m = model(
        17,
        vec![node("Relu", "r", &["nope"], &["y"], vec![])],
        x_in(&[D::V(2)]),
        y_out(),
        vec![],
    );
    assert!(import_err(&m).contains("input 'nope' is not defined"));
}

#[test]
fn cast_like_becomes_cast() {
    let m = model(
        15,
        vec![node("CastLike", "cl", &["x", "t"], &["y"], vec![])],
        vec![
            vi("x", DataType::Float, &[D::V(2)]),
            vi("t", DataType::Float16, &[D::V(1)]),
        ],
        y_out(),
        vec![],
    );
    let g = import_lenient(&m);
    let t = text::print(&g);
    assert!(
        t.contains("= Cast(to:F16,saturate:true)(%x) @\"cl\""),
        "{t}"
    );
}

#[test]
fn legacy_softmax_is_lowered_to_one_axis() {
    // Unknown trailing dims: Flatten → Softmax(axis=1) → Reshape(Shape(x)).
    let m = model(
        11,
        vec![node(
            "Softmax",
            "sm",
            &["x"],
            &["y"],
            vec![a_int("axis", 1)],
        )],
        x_in(&[D::V(2), D::P("s"), D::V(4)]),
        y_out(),
        vec![],
    );
    let g = import_lenient(&m);
    let t = text::print(&g);
    let ops: Vec<&str> = g.nodes.iter().map(|n| n.op.name()).collect();
    assert_eq!(ops, ["Shape", "Flatten", "Softmax", "Reshape"], "{t}");
    assert!(t.contains("Flatten(axis:1)(%x)"), "{t}");
    assert!(t.contains("Softmax(axis:1)(%kiln.y.flat)"), "{t}");
    assert!(
        t.contains("Reshape(allowzero:true)(%kiln.y.2d, %kiln.y.shape)"),
        "{t}"
    );

    // Fixed trailing dims: constant reshapes that keep the leading symbol.
    let m = model(
        11,
        vec![node(
            "Hardmax",
            "hm",
            &["x"],
            &["y"],
            vec![a_int("axis", 1)],
        )],
        x_in(&[D::P("b"), D::V(3), D::V(4)]),
        y_out(),
        vec![],
    );
    let g = import_lenient(&m);
    let t = text::print(&g);
    assert!(
        t.contains("const %kiln.y.flat_shape: i64[2] = [0, -1]"),
        "{t}"
    );
    assert!(t.contains("const %kiln.y.shape: i64[3] = [0, 3, 4]"), "{t}");
    assert!(t.contains("Hardmax(axis:1)(%kiln.y.flat)"), "{t}");
    assert!(
        t.contains("Reshape(allowzero:false)(%kiln.y.coerced, %kiln.y.shape)"),
        "{t}"
    );

    // On the last axis the legacy and current semantics agree: no lowering.
    let m = model(
        11,
        vec![node(
            "LogSoftmax",
            "sm",
            &["x"],
            &["y"],
            vec![a_int("axis", 2)],
        )],
        x_in(&[D::V(2), D::V(3), D::V(4)]),
        y_out(),
        vec![],
    );
    let g = import_lenient(&m);
    assert_eq!(g.nodes.len(), 1);
    assert_eq!(g.nodes[0].op, Op::LogSoftmax { axis: -1 });
}

#[test]
fn slice_opset9_attributes_become_constant_inputs() {
    let m = model(
        9,
        vec![node(
            "Slice",
            "s",
            &["x"],
            &["y"],
            vec![
                a_ints("starts", &[0, 1]),
                a_ints("ends", &[2, 3]),
                a_ints("axes", &[0, 1]),
            ],
        )],
        x_in(&[D::V(4), D::V(4)]),
        y_out(),
        vec![],
    );
    let g = import_lenient(&m);
    let t = text::print(&g);
    assert!(t.contains("const %kiln.y.starts: i64[2] = [0, 1]"), "{t}");
    assert!(t.contains("const %kiln.y.ends: i64[2] = [2, 3]"), "{t}");
    assert!(t.contains("const %kiln.y.axes: i64[2] = [0, 1]"), "{t}");
    assert!(
        t.contains("= Slice(%x, %kiln.y.starts, %kiln.y.ends, %kiln.y.axes) @\"s\""),
        "{t}"
    );
}

#[test]
fn legacy_attribute_forms_are_normalised() {
    // Clip-6 min/max, Pad-2 pads/value, TopK-1 k, Upsample-7 scales, ReduceMean-13 axes.
    let m = model(
        7,
        vec![
            node(
                "Clip",
                "clip",
                &["x"],
                &["c"],
                vec![a_float("min", 0.0), a_float("max", 6.0)],
            ),
            node(
                "Pad",
                "pad",
                &["c"],
                &["p"],
                vec![a_ints("pads", &[0, 1, 0, 1]), a_float("value", 2.0)],
            ),
            node(
                "Upsample",
                "up",
                &["p"],
                &["y"],
                vec![a_floats("scales", &[1.0, 2.0])],
            ),
        ],
        x_in(&[D::V(2), D::V(2)]),
        y_out(),
        vec![],
    );
    let g = import_lenient(&m);
    let t = text::print(&g);
    assert!(t.contains("const %kiln.c.min: f32[] = [0.0]"), "{t}");
    assert!(t.contains("= Clip(%x, %kiln.c.min, %kiln.c.max)"), "{t}");
    assert!(
        t.contains("const %kiln.p.pads: i64[4] = [0, 1, 0, 1]"),
        "{t}"
    );
    assert!(
        t.contains("= Pad(mode:Constant)(%c, %kiln.p.pads, %kiln.p.value)"),
        "{t}"
    );
    assert!(
        t.contains("const %kiln.y.scales: f32[2] = [1.0, 2.0]"),
        "{t}"
    );
    assert!(t.contains("(%p, _, %kiln.y.scales)"), "{t}");
    assert!(matches!(g.nodes[2].op, Op::Resize(_)));

    let m = model(
        9,
        vec![
            node("TopK", "tk", &["x"], &["v", "i"], vec![a_int("k", 1)]),
            node(
                "ReduceMean",
                "rm",
                &["v"],
                &["y"],
                vec![a_ints("axes", &[1]), a_int("keepdims", 0)],
            ),
        ],
        x_in(&[D::V(2), D::V(2)]),
        y_out(),
        vec![],
    );
    let g = import_lenient(&m);
    let t = text::print(&g);
    assert!(t.contains("const %kiln.v.k: i64[1] = [1]"), "{t}");
    assert_eq!(
        g.nodes[1].op,
        Op::Reduce {
            kind: kiln_ir::ReduceKind::Mean,
            axes: Some(vec![1]),
            keepdims: false,
            noop_with_empty_axes: false
        }
    );
}

#[test]
fn typed_fields_decode_like_onnx_stores_them() {
    let base = Path::new(".");
    let t = |data_type: DataType, dims: &[i64]| TensorProto {
        name: "t".into(),
        dims: dims.to_vec(),
        data_type: data_type as i32,
        ..Default::default()
    };
    let f16 = TensorProto {
        int32_data: vec![0x3C00, 0xC000],
        ..t(DataType::Float16, &[2])
    };
    let v = tensor_from_proto(&f16, base).expect("f16");
    assert_eq!(v.dtype(), DType::F16);
    assert_eq!(v.to_f64_vec(), vec![1.0, -2.0]);
    let b = TensorProto {
        int32_data: vec![1, 0, 1],
        ..t(DataType::Bool, &[3])
    };
    assert_eq!(
        tensor_from_proto(&b, base).expect("bool").bytes(),
        &[1, 0, 1]
    );
    let i8s = TensorProto {
        int32_data: vec![-3, 7],
        ..t(DataType::Int8, &[2])
    };
    assert_eq!(
        tensor_from_proto(&i8s, base).expect("i8").to_i64_vec(),
        vec![-3, 7]
    );
    let u32s = TensorProto {
        uint64_data: vec![5, 4_000_000_000],
        ..t(DataType::Uint32, &[2])
    };
    assert_eq!(
        tensor_from_proto(&u32s, base).expect("u32").to_i64_vec(),
        vec![5, 4_000_000_000]
    );
    let d = TensorProto {
        double_data: vec![0.25],
        ..t(DataType::Double, &[])
    };
    assert_eq!(
        tensor_from_proto(&d, base).expect("f64").to_f64_vec(),
        vec![0.25]
    );
    let raw = TensorProto {
        raw_data: 7i64.to_le_bytes().to_vec(),
        ..t(DataType::Int64, &[1])
    };
    assert_eq!(
        tensor_from_proto(&raw, base).expect("raw").to_i64_vec(),
        vec![7]
    );

    let e = tensor_from_proto(&t(DataType::String, &[1]), base)
        .expect_err("string")
        .to_string();
    assert!(e.contains("tensor 't'") && e.contains("STRING"), "{e}");
    let e = tensor_from_proto(&t(DataType::Float8e4m3fn, &[1]), base)
        .expect_err("f8")
        .to_string();
    assert!(e.contains("FLOAT8E4M3FN"), "{e}");
    let short = TensorProto {
        float_data: vec![1.0],
        ..t(DataType::Float, &[2])
    };
    assert!(tensor_from_proto(&short, base).is_err());
}

#[test]
fn tensor_files_load() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("input_0.pb");
    std::fs::write(&p, f32_tensor("x", &[2], &[1.5, 2.5]).encode_to_vec()).expect("write");
    let t = load_tensor_file(&p).expect("load");
    assert_eq!(t.to_vec::<f32>().expect("f32"), vec![1.5, 2.5]);
}

#[test]
fn every_mapped_op_imports_without_attributes_errors() {
    // Smoke test: the dispatch table and a few representative attribute sets.
    let ops = supported_ops();
    assert!(ops.contains(&"Conv") && ops.contains(&"Resize") && ops.contains(&"RMSNormalization"));
    let m = model(
        23,
        vec![
            node(
                "Conv",
                "conv",
                &["x", "w"],
                &["c"],
                vec![
                    a_ints("kernel_shape", &[1, 1]),
                    a_ints("pads", &[0, 0, 0, 0]),
                ],
            ),
            node("Gelu", "gelu", &["c"], &["g"], vec![]),
            node(
                "RMSNormalization",
                "rms",
                &["g", "s"],
                &["r"],
                vec![a_int("axis", 1)],
            ),
            node("GlobalAveragePool", "gap", &["r"], &["y"], vec![]),
        ],
        x_in(&[D::V(1), D::V(1), D::V(2), D::V(2)]),
        y_out(),
        vec![
            f32_tensor("w", &[1, 1, 1, 1], &[2.0]),
            f32_tensor("s", &[1], &[1.0]),
        ],
    );
    let g = import_lenient(&m);
    let names: Vec<&str> = g.nodes.iter().map(|n| n.op.name()).collect();
    assert_eq!(names, ["Conv", "Gelu", "RmsNorm", "GlobalPool"]);
}

#[test]
fn cast_like_target_is_resolved_by_inference() {
    // The target `h` is an intermediate value with no declared type: the
    // Cast's `to` is fixed once inference knows h is f16.
    let m = model(
        15,
        vec![
            node(
                "Cast",
                "c",
                &["x"],
                &["h"],
                vec![a_int("to", DataType::Float16 as i64)],
            ),
            node("Relu", "r", &["x"], &["r"], vec![]),
            node("CastLike", "cl", &["r", "h"], &["y"], vec![]),
        ],
        x_in(&[D::V(2)]),
        y_out(),
        vec![],
    );
    let g = import_bytes(&m.encode_to_vec(), Path::new("."), "model.onnx").expect("import");
    assert_eq!(
        g.nodes[2].op,
        Op::Cast {
            to: DType::F16,
            saturate: true
        }
    );
    assert_eq!(g.value(g.outputs[0]).ty.dtype, DType::F16);
}

#[test]
fn attention_and_rotary_embedding_map_with_their_attributes() {
    let q = || vi("q", DataType::Float, &[D::P("B"), D::P("S"), D::V(576)]);
    let kv = || vi("kv", DataType::Float, &[D::P("B"), D::P("S"), D::V(192)]);
    let cache = || vi("cos", DataType::Float, &[D::V(64), D::V(32)]);
    let ids = || vi("ids", DataType::Int64, &[D::P("B"), D::P("S")]);
    let nodes = || {
        vec![
            node(
                "RotaryEmbedding",
                "rope",
                &["q", "cos", "cos", "ids"],
                &["qr"],
                vec![a_int("num_heads", 9), a_int("interleaved", 1)],
            ),
            node(
                "Attention",
                "attn",
                &["qr", "kv", "kv"],
                &["y", "", "", "scores"],
                vec![
                    a_int("is_causal", 1),
                    a_int("q_num_heads", 9),
                    a_int("kv_num_heads", 3),
                    a_float("scale", 0.125),
                    a_float("softcap", 30.0),
                    a_int("qk_matmul_output_mode", 3),
                    a_int("softmax_precision", DataType::Float as i64),
                ],
            ),
        ]
    };
    let m = model(
        23,
        nodes(),
        vec![q(), kv(), cache(), ids()],
        y_out(),
        vec![],
    );
    let g = import_lenient(&m);
    let t = text::print(&g);
    assert!(
        t.contains(
            "RotaryEmbedding(interleaved:true,num_heads:9,rotary_embedding_dim:0)(%q, %cos, %cos, %ids)"
        ),
        "{t}"
    );
    assert!(
        t.contains("Attention(is_causal:true,q_num_heads:9,kv_num_heads:3,scale:Some(0.125),softcap:30.0,qk_matmul_output_mode:3,softmax_precision:Some(F32))"),
        "{t}"
    );
    // Inference types every output, the omitted present key/value included.
    assert!(
        t.contains("%y: f32[B,S,576], %kiln.unused: f32[B,3,S,64], %kiln.unused.1: f32[B,3,S,64], %scores: f32[B,9,S,S] = Attention("),
        "{t}"
    );

    // Before opset 23 the operators do not exist.
    let m = model(
        22,
        nodes(),
        vec![q(), kv(), cache(), ids()],
        y_out(),
        vec![],
    );
    let e = import_err(&m);
    assert!(
        e.contains(
            "node 'rope' (RotaryEmbedding, opset 22): unsupported: RotaryEmbedding before opset 23"
        ),
        "{e}"
    );

    // Opset 25's sliding window is not modelled; -1 (no window) is accepted.
    let window = |v: i64| {
        model(
            25,
            vec![node(
                "Attention",
                "win",
                &["q", "q", "q"],
                &["y"],
                vec![
                    a_int("q_num_heads", 9),
                    a_int("kv_num_heads", 9),
                    a_int("left_window_size", v),
                ],
            )],
            vec![q()],
            y_out(),
            vec![],
        )
    };
    let e = import_err(&window(4));
    assert!(
        e.contains(
            "node 'win' (Attention, opset 25): unsupported: Attention with left_window_size = 4"
        ),
        "{e}"
    );
    let g = import_lenient(&window(-1));
    assert_eq!(g.nodes[0].op.name(), "Attention");

    // Bad attribute values name the attribute.
    let m = model(
        24,
        vec![node(
            "Attention",
            "bad",
            &["q", "q", "q"],
            &["y"],
            vec![a_int("q_num_heads", -2)],
        )],
        vec![q()],
        y_out(),
        vec![],
    );
    let e = import_err(&m);
    assert!(
        e.contains("attribute 'q_num_heads'") && e.contains("-2"),
        "{e}"
    );
}
