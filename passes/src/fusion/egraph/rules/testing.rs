//! Small graphs for rule tests, and the checks every rule test makes: which
//! ops remain, and that the rewritten graph computes what the original did
//! (both run by the CPU executor).

use crate::fusion::egraph::{FuseGraph, FusionStats};
use kiln_ir::{DType, Graph, Node, Op, Shape, Tensor, ValueId, ValueType};
use kiln_runtime::cpu::{CpuExecutor, ExecOptions};
use std::collections::BTreeMap;

/// Builds a graph node by node, inferring each result's type.
pub(crate) struct B {
    g: Graph,
    n: usize,
}

impl B {
    pub(crate) fn new() -> Self {
        B {
            g: Graph::new("test"),
            n: 0,
        }
    }

    pub(crate) fn input(&mut self, name: &str, dims: &[u64]) -> ValueId {
        let v = self
            .g
            .add_value(name, ValueType::new(DType::F32, Shape::fixed(dims)));
        self.g.inputs.push(v);
        v
    }

    /// An input with named (symbolic) dimensions where `dims` has `None`.
    pub(crate) fn input_sym(&mut self, name: &str, dims: &[(Option<u64>, &str)]) -> ValueId {
        let shape = kiln_ir::Shape(
            dims.iter()
                .map(|(d, s)| match d {
                    Some(n) => kiln_ir::Dim::Fixed(*n),
                    None => kiln_ir::Dim::Sym(s.to_string()),
                })
                .collect(),
        );
        let v = self.g.add_value(name, ValueType::new(DType::F32, shape));
        self.g.inputs.push(v);
        v
    }

    pub(crate) fn konst(&mut self, t: Tensor) -> ValueId {
        self.n += 1;
        self.g.add_constant(format!("c{}", self.n), t)
    }

    pub(crate) fn scalar(&mut self, v: f32) -> ValueId {
        self.konst(Tensor::scalar(v))
    }

    pub(crate) fn ints(&mut self, v: &[i64]) -> ValueId {
        self.konst(Tensor::from_vec(vec![v.len()], v.to_vec()).unwrap())
    }

    /// A constant with reproducible pseudo-random values in [-1, 1).
    pub(crate) fn weight(&mut self, dims: &[usize], seed: u64) -> ValueId {
        self.konst(random(dims, seed))
    }

    pub(crate) fn op(&mut self, op: Op, inputs: &[ValueId]) -> ValueId {
        self.op_opt(op, &inputs.iter().map(|&v| Some(v)).collect::<Vec<_>>())
    }

    pub(crate) fn op_opt(&mut self, op: Op, inputs: &[Option<ValueId>]) -> ValueId {
        let types: Vec<Option<&ValueType>> = inputs
            .iter()
            .map(|v| v.map(|v| &self.g.value(v).ty))
            .collect();
        let consts: Vec<Option<&Tensor>> = inputs
            .iter()
            .map(|v| v.and_then(|v| self.g.constant(v)))
            .collect();
        let ty = kiln_ir::infer::infer_node(&op, &types, &consts)
            .unwrap_or_else(|e| panic!("test graph: {e}"))
            .remove(0);
        self.n += 1;
        let out = self.g.add_value(format!("v{}", self.n), ty);
        self.g.add_node(Node {
            name: String::new(),
            op,
            inputs: inputs.to_vec(),
            outputs: vec![out],
        });
        out
    }

    pub(crate) fn finish(mut self, outputs: &[ValueId]) -> Graph {
        self.g.outputs = outputs.to_vec();
        self.g
    }
}

/// Reproducible values in [-1, 1).
pub(crate) fn random(dims: &[usize], seed: u64) -> Tensor {
    let n: usize = dims.iter().product();
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(1);
    let v: Vec<f32> = (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect();
    Tensor::from_vec(dims.to_vec(), v).unwrap()
}

/// Runs the fusion pass with only the named rule groups.
pub(crate) fn fuse(g: &Graph, groups: &[&str]) -> (Graph, FusionStats) {
    let mut f = g.clone();
    let pass = FuseGraph {
        groups: groups.iter().map(|s| s.to_string()).collect(),
        ..FuseGraph::default()
    };
    let stats = pass.fuse(&mut f);
    assert!(
        stats.cost_after <= stats.cost_before,
        "fusion raised the cost: {} → {}",
        stats.cost_before,
        stats.cost_after
    );
    kiln_ir::verify::verify(&f).unwrap_or_else(|e| panic!("fused graph does not verify: {e}"));
    (f, stats)
}

/// The ops of a graph, in order.
pub(crate) fn op_names(g: &Graph) -> Vec<&'static str> {
    g.nodes.iter().map(|n| n.op.name()).collect()
}

fn run(g: &Graph, inputs: &BTreeMap<String, Tensor>) -> Vec<Vec<f32>> {
    let ex = CpuExecutor::new(g.clone(), ExecOptions::default()).unwrap();
    ex.run(inputs)
        .unwrap()
        .outputs
        .into_iter()
        .map(|(_, t)| t.to_vec::<f32>().unwrap())
        .collect()
}

/// Runs both graphs on the same random inputs; asserts every output agrees
/// within `tol` (absolute, scaled by the output's largest magnitude).
pub(crate) fn assert_same_outputs(a: &Graph, b: &Graph, tol: f32) {
    let inputs: BTreeMap<String, Tensor> = a
        .inputs
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let info = a.value(v);
            let dims: Vec<usize> = info
                .ty
                .shape
                .as_fixed()
                .unwrap()
                .iter()
                .map(|&d| d as usize)
                .collect();
            (info.name.clone(), random(&dims, 100 + i as u64))
        })
        .collect();
    let (ya, yb) = (run(a, &inputs), run(b, &inputs));
    assert_eq!(ya.len(), yb.len());
    for (x, y) in ya.iter().zip(&yb) {
        assert_eq!(x.len(), y.len());
        let scale = x.iter().fold(1f32, |m, v| m.max(v.abs()));
        let worst = x
            .iter()
            .zip(y)
            .map(|(p, q)| (p - q).abs())
            .fold(0f32, f32::max);
        assert!(
            worst <= tol * scale,
            "outputs differ by {worst} (scale {scale}, tolerance {tol})"
        );
    }
}
