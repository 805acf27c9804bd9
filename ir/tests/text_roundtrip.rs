//! The text form prints and parses back to the same graph.

use kiln_ir::text::{external_weights, parse, print};
use kiln_ir::*;

fn sample() -> Graph {
    let mut g = Graph::new("tiny");
    let x = g.add_value(
        "x",
        ValueType::new(
            DType::F32,
            Shape(vec![Dim::Sym("batch".into()), Dim::Fixed(32)]),
        ),
    );
    g.inputs.push(x);
    let w = g.add_constant(
        "w",
        Tensor::from_vec(vec![32, 32], (0..1024).map(|i| i as f32 * 0.5).collect()).unwrap(),
    );
    let axes = g.add_constant("axes", Tensor::from_vec(vec![1], vec![-1i64]).unwrap());
    let y = g.add_value(
        "/layer 0/y",
        ValueType::new(
            DType::F32,
            Shape(vec![Dim::Sym("batch".into()), Dim::Fixed(32)]),
        ),
    );
    g.add_node(Node {
        name: "mm".into(),
        op: Op::MatMul,
        inputs: vec![Some(x), Some(w)],
        outputs: vec![y],
    });
    let z = g.add_value(
        "z",
        ValueType::new(
            DType::F32,
            Shape(vec![Dim::Sym("batch".into()), Dim::Fixed(1)]),
        ),
    );
    g.add_node(Node {
        name: String::new(),
        op: Op::Reduce {
            kind: ReduceKind::Mean,
            axes: None,
            keepdims: true,
            noop_with_empty_axes: false,
        },
        inputs: vec![Some(y), Some(axes)],
        outputs: vec![z],
    });
    let e = g.add_value("e", ValueType::new(DType::F32, Shape(vec![Dim::Unknown])));
    g.add_node(Node {
        name: "einsum".into(),
        op: Op::Einsum {
            equation: "b(i),ij->\"bj".into(),
        },
        inputs: vec![Some(z), None],
        outputs: vec![e],
    });
    g.outputs.push(z);
    g.metadata.insert("producer".into(), "test".into());
    g
}

#[test]
fn print_parse_print_is_stable() {
    let g = sample();
    verify::verify(&g).unwrap();
    let text = print(&g);
    let back = parse(&text, &external_weights(&g)).unwrap();
    verify::verify(&back).unwrap();
    assert_eq!(print(&back), text);
    assert_eq!(back.nodes, g.nodes);
    assert_eq!(back.values(), g.values());
    for (id, t) in &g.constants {
        assert!(back.constants[id].same_as(t));
    }
    assert!(
        text.contains("%\"/layer 0/y\": f32[batch,32] = MatMul(%x, %w) @\"mm\""),
        "{text}"
    );
    assert!(text.contains("const %axes: i64[1] = [-1]"), "{text}");
}

#[test]
fn parse_errors_name_the_line() {
    let text = "graph \"g\" {\n  input %x: f32[2]\n  %y: f32[2] = Relu(%nope)\n}\n";
    let e = parse(text, &Default::default()).unwrap_err();
    assert_eq!(e.line, 3);
    assert!(e.message.contains("%nope"), "{e}");
    let missing = "graph \"g\" {\n  const %w: f32[20] = weight\n}\n";
    assert!(parse(missing, &Default::default())
        .unwrap_err()
        .message
        .contains("no weight data"));
}

#[test]
fn attention_ops_round_trip() {
    let mut g = Graph::new("attn");
    let f = |dims: &[u64]| ValueType::new(DType::F32, Shape::fixed(dims));
    let q = g.add_value("q", f(&[1, 4, 576]));
    let kv = g.add_value("kv", f(&[1, 4, 192]));
    let cos = g.add_value("cos", f(&[4, 32]));
    let ids = g.add_value("ids", ValueType::new(DType::I64, Shape::fixed(&[1, 4])));
    let mask = g.add_value(
        "mask",
        ValueType::new(DType::Bool, Shape::fixed(&[1, 1, 4, 4])),
    );
    g.inputs.extend([q, kv, cos, ids, mask]);
    let qr = g.add_value("qr", f(&[1, 4, 576]));
    g.add_node(Node {
        name: "rope".into(),
        op: Op::RotaryEmbedding {
            interleaved: true,
            num_heads: 9,
            rotary_embedding_dim: 0,
        },
        inputs: vec![Some(q), Some(cos), Some(cos), Some(ids)],
        outputs: vec![qr],
    });
    let y = g.add_value("y", f(&[1, 4, 576]));
    let pk = g.add_value("present_k", f(&[1, 3, 4, 64]));
    let pv = g.add_value("present_v", f(&[1, 3, 4, 64]));
    let scores = g.add_value("scores", f(&[1, 9, 4, 4]));
    g.add_node(Node {
        name: "attn".into(),
        op: Op::Attention {
            is_causal: true,
            q_num_heads: 9,
            kv_num_heads: 3,
            scale: Some(Float(0.125)),
            softcap: Float(30.0),
            qk_matmul_output_mode: 3,
            softmax_precision: Some(DType::F32),
        },
        inputs: vec![Some(qr), Some(kv), Some(kv), Some(mask)],
        outputs: vec![y, pk, pv, scores],
    });
    let y2 = g.add_value("y2", f(&[1, 4, 576]));
    g.add_node(Node {
        name: "attn_default".into(),
        op: Op::Attention {
            is_causal: false,
            q_num_heads: 9,
            kv_num_heads: 3,
            scale: None,
            softcap: Float(0.0),
            qk_matmul_output_mode: 0,
            softmax_precision: None,
        },
        inputs: vec![Some(y), Some(kv), Some(kv)],
        outputs: vec![y2],
    });
    g.outputs.extend([y2, scores]);
    let text = print(&g);
    verify::verify(&g).unwrap();
    let back = parse(&text, &external_weights(&g)).unwrap();
    assert_eq!(print(&back), text);
    assert_eq!(back.nodes, g.nodes);
    assert!(text.contains("RotaryEmbedding(interleaved:true"), "{text}");
    assert!(text.contains("scale:Some(0.125)"), "{text}");
}
