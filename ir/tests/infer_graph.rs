//! `infer_graph` over a small graph, and errors naming the node.
use kiln_ir::infer::infer_graph;
use kiln_ir::*;

fn ty(d: DType, dims: Vec<Dim>) -> ValueType {
    ValueType::new(d, Shape(dims))
}

fn placeholder() -> ValueType {
    ty(DType::Bool, vec![])
}

#[test]
fn writes_types_in_order() {
    let mut g = Graph::new("mlp");
    let n = || Dim::Sym("N".into());
    let x = g.add_value("x", ty(DType::F32, vec![n(), Dim::Fixed(4)]));
    g.inputs.push(x);
    let w = g.add_constant("w", Tensor::from_vec(vec![4, 8], vec![0.0f32; 32]).unwrap());
    let shape = g.add_constant(
        "shape",
        Tensor::from_vec(vec![3], vec![0i64, 2, 4]).unwrap(),
    );
    let h = g.add_value("h", placeholder());
    let r = g.add_value("r", placeholder());
    let parts = [
        g.add_value("p0", placeholder()),
        g.add_value("p1", placeholder()),
    ];
    g.add_node(Node {
        name: "fc".into(),
        op: Op::MatMul,
        inputs: vec![Some(x), Some(w)],
        outputs: vec![h],
    });
    g.add_node(Node {
        name: "reshape".into(),
        op: Op::Reshape { allowzero: false },
        inputs: vec![Some(h), Some(shape)],
        outputs: vec![r],
    });
    // Split without sizes: the node's two outputs decide the split.
    g.add_node(Node {
        name: "split".into(),
        op: Op::Split {
            axis: -1,
            split: None,
        },
        inputs: vec![Some(r)],
        outputs: parts.to_vec(),
    });
    g.outputs.extend(parts);
    infer_graph(&mut g).unwrap();
    assert_eq!(g.value(h).ty.to_string(), "f32[N,8]");
    assert_eq!(g.value(r).ty.to_string(), "f32[N,2,4]");
    assert_eq!(g.value(parts[0]).ty.to_string(), "f32[N,2,2]");
    assert_eq!(g.value(parts[1]).ty.to_string(), "f32[N,2,2]");
}

#[test]
fn errors_name_the_node() {
    let mut g = Graph::new("bad");
    let a = g.add_value("a", ty(DType::F32, vec![Dim::Fixed(2), Dim::Fixed(3)]));
    let b = g.add_value("b", ty(DType::F32, vec![Dim::Fixed(4), Dim::Fixed(3)]));
    let c = g.add_value("c", placeholder());
    g.inputs.extend([a, b]);
    g.add_node(Node {
        name: "sum".into(),
        op: Op::Add,
        inputs: vec![Some(a), Some(b)],
        outputs: vec![c],
    });
    let e = infer_graph(&mut g).unwrap_err();
    assert_eq!(e.node, "sum (Add)");
    assert_eq!(
        e.to_string(),
        "node sum (Add): Add: cannot broadcast [2,3] with [4,3]"
    );

    // An unnamed node is described by its op and first output.
    g.nodes[0].name.clear();
    g.nodes[0].inputs = vec![Some(a)];
    let e = infer_graph(&mut g).unwrap_err();
    assert_eq!(
        e.to_string(),
        "node Add -> c: Add: expects 2 operands, got 1"
    );

    // A dangling id is an error, not a panic.
    g.nodes[0].inputs = vec![Some(a), Some(ValueId(99))];
    let e = infer_graph(&mut g).unwrap_err();
    assert_eq!(
        e.to_string(),
        "node Add -> c: Add: operand refers to value id 99 that does not exist"
    );
}
