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
