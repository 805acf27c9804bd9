//! FLOP and byte counts.
use kiln_ir::cost::{graph_cost, node_cost, Cost};
use kiln_ir::*;
use std::collections::BTreeMap;

fn f32s(d: &[u64]) -> Option<(usize, Vec<u64>)> {
    Some((4, d.to_vec()))
}

#[test]
fn matmul_cost() {
    // Batched [2,3,4] x [4,5] → [2,3,5]: 2·(2·3)·5·4 = 240 flops.
    let c = node_cost(
        &Op::MatMul,
        &[f32s(&[2, 3, 4]), f32s(&[4, 5])],
        &[(4, vec![2, 3, 5])],
    );
    assert_eq!(
        c,
        Cost {
            flops: 240,
            bytes_read: 4 * (24 + 20),
            bytes_written: 4 * 30
        }
    );
}

#[test]
fn gemm_and_einsum_cost() {
    let gemm = Op::Gemm {
        alpha: Float(1.0),
        beta: Float(1.0),
        trans_a: false,
        trans_b: true,
    };
    // 2·M·N·K = 2·8·16·32 = 8192, plus 8·16 bias adds.
    let c = node_cost(
        &gemm,
        &[f32s(&[8, 32]), f32s(&[16, 32]), f32s(&[16])],
        &[(4, vec![8, 16])],
    );
    assert_eq!(c.flops, 8192 + 128);
    // bij,bjk->bik with b=2, i=3, j=4, k=5: 2·(2·3·4·5) = 240, like the batched matmul.
    let e = Op::Einsum {
        equation: "bij,bjk->bik".into(),
    };
    let c = node_cost(
        &e,
        &[f32s(&[2, 3, 4]), f32s(&[2, 4, 5])],
        &[(4, vec![2, 3, 5])],
    );
    assert_eq!(c.flops, 240);
}

#[test]
fn conv_cost() {
    // X [1,3,8,8], W [16,3,3,3] → [1,16,6,6]: 2·N·Cout·outspatial·(Cin/group)·kernel
    // = 2·1·16·36·3·9 = 31104.
    let conv = Op::Conv {
        window: Window {
            kernel_shape: vec![],
            strides: vec![],
            pads: vec![],
            dilations: vec![],
            auto_pad: AutoPad::NotSet,
        },
        group: 1,
    };
    let c = node_cost(
        &conv,
        &[f32s(&[1, 3, 8, 8]), f32s(&[16, 3, 3, 3]), None],
        &[(4, vec![1, 16, 6, 6])],
    );
    assert_eq!(c.flops, 31104);
    assert_eq!(c.bytes_read, 4 * (192 + 432));
    assert_eq!(c.bytes_written, 4 * 576);
}

#[test]
fn elementwise_reduce_movement_cost() {
    let c = node_cost(&Op::Add, &[f32s(&[2, 3]), f32s(&[3])], &[(4, vec![2, 3])]);
    assert_eq!(c.flops, 6);
    let red = Op::Reduce {
        kind: ReduceKind::Sum,
        axes: Some(vec![1]),
        keepdims: false,
        noop_with_empty_axes: false,
    };
    assert_eq!(node_cost(&red, &[f32s(&[2, 3])], &[(4, vec![2])]).flops, 6);
    assert_eq!(
        node_cost(
            &Op::Softmax { axis: -1 },
            &[f32s(&[2, 3])],
            &[(4, vec![2, 3])]
        )
        .flops,
        30
    );
    assert_eq!(
        node_cost(
            &Op::Transpose { perm: None },
            &[f32s(&[2, 3])],
            &[(4, vec![3, 2])]
        )
        .flops,
        0
    );
}

#[test]
fn graph_cost_binds_symbols() {
    let mut g = Graph::new("g");
    let x = g.add_value(
        "x",
        ValueType::new(DType::F32, Shape(vec![Dim::Sym("N".into()), Dim::Fixed(4)])),
    );
    let w = g.add_constant("w", Tensor::from_vec(vec![4, 8], vec![0.0f32; 32]).unwrap());
    let y = g.add_value(
        "y",
        ValueType::new(DType::F32, Shape(vec![Dim::Sym("N".into()), Dim::Fixed(8)])),
    );
    g.add_node(Node {
        name: "mm".into(),
        op: Op::MatMul,
        inputs: vec![Some(x), Some(w)],
        outputs: vec![y],
    });
    let c = graph_cost(&g, &BTreeMap::from([("N".to_string(), 2)])).unwrap();
    assert_eq!(c.flops, 2 * 2 * 8 * 4);
    assert_eq!(
        graph_cost(&g, &BTreeMap::new()).unwrap_err(),
        "shape [N,4] of `x` has unbound dimensions"
    );
}
