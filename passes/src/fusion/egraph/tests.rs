//! Properties of the whole pass: cost never rises, results are reproducible,
//! limits stop saturation, names and sharing survive, kept nodes stay in order.

use super::rules::testing::*;
use super::{FuseGraph, FusionLimits, StopReason};
use kiln_ir::{Op, ReduceKind, ValueId};

fn mean(b: &mut B, x: ValueId) -> ValueId {
    b.op(
        Op::Reduce {
            kind: ReduceKind::Mean,
            axes: Some(vec![-1]),
            keepdims: true,
            noop_with_empty_axes: false,
        },
        &[x],
    )
}

/// LayerNorm in primitives, its result used twice.
fn shared_norm() -> kiln_ir::Graph {
    let mut b = B::new();
    let x = b.input("x", &[3, 16]);
    let m = mean(&mut b, x);
    let d = b.op(Op::Sub, &[x, m]);
    let dd = b.op(Op::Mul, &[d, d]);
    let v = mean(&mut b, dd);
    let eps = b.scalar(1e-5);
    let a = b.op(Op::Add, &[v, eps]);
    let s = b.op(Op::Sqrt, &[a]);
    let n = b.op(Op::Div, &[d, s]);
    let y1 = b.op(Op::Relu, &[n]);
    let y2 = b.op(Op::Exp, &[n]);
    b.finish(&[y1, y2])
}

#[test]
fn a_shared_subgraph_is_emitted_once() {
    let g = shared_norm();
    let (f, s) = fuse(&g, &[]);
    assert_eq!(
        op_names(&f).iter().filter(|n| **n == "LayerNorm").count(),
        1
    );
    assert!(s.cost_after < s.cost_before);
    assert_same_outputs(&g, &f, 1e-5);
}

#[test]
fn outputs_keep_their_names() {
    let g = shared_norm();
    let (f, _) = fuse(&g, &[]);
    let names = |g: &kiln_ir::Graph| -> Vec<String> {
        g.outputs.iter().map(|&v| g.value(v).name.clone()).collect()
    };
    assert_eq!(names(&f), names(&g));
}

#[test]
fn fusion_is_reproducible() {
    let g = shared_norm();
    let (a, _) = fuse(&g, &[]);
    let (b, _) = fuse(&g, &[]);
    assert_eq!(kiln_ir::text::print(&a), kiln_ir::text::print(&b));
}

#[test]
fn a_graph_with_nothing_to_gain_is_kept() {
    let mut b = B::new();
    let x = b.input("x", &[4, 8]);
    let w = b.weight(&[8, 8], 1);
    let y = b.op(Op::MatMul, &[x, w]);
    let g = b.finish(&[y]);
    let before = kiln_ir::text::print(&g);
    let (f, s) = fuse(&g, &[]);
    assert!(s.cost_after <= s.cost_before);
    if s.kept_input {
        assert_eq!(kiln_ir::text::print(&f), before);
    }
}

#[test]
fn limits_stop_saturation() {
    let g = shared_norm();
    let mut f = g.clone();
    let one_iteration = FuseGraph {
        limits: FusionLimits {
            iterations: 1,
            ..FusionLimits::default()
        },
        ..FuseGraph::default()
    };
    assert_eq!(one_iteration.fuse(&mut f).stop, StopReason::IterationLimit);
    let mut f = g.clone();
    let few_nodes = FuseGraph {
        limits: FusionLimits {
            nodes: 5,
            ..FusionLimits::default()
        },
        ..FuseGraph::default()
    };
    let s = few_nodes.fuse(&mut f);
    assert_eq!(s.stop, StopReason::NodeLimit);
    assert_eq!(s.iterations, 0);
    // Stopping early still gives a correct graph.
    assert_same_outputs(&g, &f, 1e-5);
    let mut f = g.clone();
    let s = FuseGraph::default().fuse(&mut f);
    assert_eq!(s.stop, StopReason::Saturated);
}

#[test]
fn nodes_with_several_results_stay_in_place() {
    let mut b = B::new();
    let x = b.input("x", &[4, 6]);
    let g0 = {
        let zero = b.scalar(0.0);
        let a = b.op(Op::Add, &[x, zero]);
        let mut g = b.finish(&[]);
        // Split into two halves: a node with two results the e-graph keeps as is.
        let h1 = g.add_value(
            "h1",
            kiln_ir::ValueType::new(kiln_ir::DType::F32, kiln_ir::Shape::fixed(&[4, 3])),
        );
        let h2 = g.add_value(
            "h2",
            kiln_ir::ValueType::new(kiln_ir::DType::F32, kiln_ir::Shape::fixed(&[4, 3])),
        );
        g.add_node(kiln_ir::Node {
            name: "split".into(),
            op: Op::Split {
                axis: 1,
                split: Some(vec![3, 3]),
            },
            inputs: vec![Some(a)],
            outputs: vec![h1, h2],
        });
        let y = g.add_value(
            "y",
            kiln_ir::ValueType::new(kiln_ir::DType::F32, kiln_ir::Shape::fixed(&[4, 3])),
        );
        g.add_node(kiln_ir::Node {
            name: String::new(),
            op: Op::Mul,
            inputs: vec![Some(h1), Some(h2)],
            outputs: vec![y],
        });
        g.outputs = vec![y];
        g
    };
    let (f, s) = fuse(&g0, &[]);
    assert!(s.fired["identity-arith"] > 0);
    assert_eq!(op_names(&f), ["Split", "Mul"]);
    assert_same_outputs(&g0, &f, 0.0);
}

/// One step of a random graph: an op and the pool indices of its operands.
#[derive(Clone, Debug)]
enum Step {
    Unary(u8, usize),
    Binary(u8, usize, usize),
    Product(usize, u64),
}

fn step() -> impl proptest::strategy::Strategy<Value = Step> {
    use proptest::prelude::*;
    prop_oneof![
        (0u8..5, 0usize..64).prop_map(|(o, a)| Step::Unary(o, a)),
        (0u8..4, 0usize..64, 0usize..64).prop_map(|(o, a, b)| Step::Binary(o, a, b)),
        (0usize..64, 0u64..1000).prop_map(|(a, s)| Step::Product(a, s)),
    ]
}

proptest::proptest! {
    #![proptest_config(proptest::test_runner::Config { cases: 48, ..Default::default() })]

    /// Random chains of elementwise ops and products with shared values:
    /// fusion never raises the estimated cost and never changes the results.
    #[test]
    fn random_graphs_keep_their_results(steps in proptest::collection::vec(step(), 1..14)) {
        let mut b = B::new();
        let x = b.input("x", &[4, 8]);
        let half = b.scalar(0.5);
        let bias = b.weight(&[8], 7);
        // Every value in the pool is [4, 8]; constants only enter as second operands.
        let mut pool = vec![x];
        for s in &steps {
            let pick = |i: usize, pool: &[ValueId]| pool[i % pool.len()];
            let v = match *s {
                Step::Unary(o, a) => {
                    let op = [Op::Relu, Op::Tanh, Op::Sigmoid, Op::Neg, Op::Gelu { approximate: kiln_ir::GeluApprox::None }][o as usize].clone();
                    b.op(op, &[pick(a, &pool)])
                }
                Step::Binary(o, a, c) => {
                    let op = [Op::Add, Op::Mul, Op::Sub, Op::Max][o as usize].clone();
                    let second = match c % 4 {
                        0 => half,
                        1 => bias,
                        _ => pick(c / 4, &pool),
                    };
                    b.op(op, &[pick(a, &pool), second])
                }
                Step::Product(a, seed) => {
                    let w = b.weight(&[8, 8], seed);
                    b.op(Op::MatMul, &[pick(a, &pool), w])
                }
            };
            pool.push(v);
        }
        let outputs: Vec<ValueId> = pool[1..].iter().rev().take(2).copied().collect();
        let g = b.finish(&outputs);
        let (f, s) = fuse(&g, &[]);
        proptest::prop_assert!(s.cost_after <= s.cost_before);
        assert_same_outputs(&g, &f, 1e-5);
    }
}
