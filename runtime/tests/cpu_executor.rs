//! Executor-level checks: input validation, symbolic dims, memory reuse.

use kiln_ir::{DType, Dim, Graph, Node, Op, Shape, Tensor, ValueType};
use kiln_runtime::cpu::{CpuExecutor, ExecOptions};
use std::collections::BTreeMap;

fn parse(text: &str) -> Graph {
    kiln_ir::text::parse(text, &BTreeMap::new()).unwrap()
}

const TWO_INPUTS: &str = r#"graph "g" {
  input %a: f32[batch,4]
  input %b: f32[batch,4]
  %c: f32[batch,4] = Add(%a, %b)
  output %c
}
"#;

fn inputs(pairs: &[(&str, Tensor)]) -> BTreeMap<String, Tensor> {
    pairs
        .iter()
        .map(|(n, t)| (n.to_string(), t.clone()))
        .collect()
}

fn zeros(dims: &[usize]) -> Tensor {
    Tensor::from_vec(dims.to_vec(), vec![0f32; dims.iter().product()]).unwrap()
}

#[test]
fn runs_a_parsed_graph_with_symbolic_batch() {
    let exec = CpuExecutor::new(parse(TWO_INPUTS), ExecOptions::default()).unwrap();
    let a = Tensor::from_vec(vec![2, 4], (0..8).map(|v| v as f32).collect()).unwrap();
    let r = exec.run(&inputs(&[("a", a.clone()), ("b", a)])).unwrap();
    assert_eq!(r.outputs[0].0, "c");
    assert_eq!(r.outputs[0].1.to_vec::<f32>().unwrap()[7], 14.0);
}

#[test]
fn input_validation_errors_name_the_problem() {
    let exec = CpuExecutor::new(parse(TWO_INPUTS), ExecOptions { threads: Some(2) }).unwrap();
    // Unknown name: the error lists the expected names.
    let e = exec
        .run(&inputs(&[
            ("a", zeros(&[2, 4])),
            ("b", zeros(&[2, 4])),
            ("x", zeros(&[1])),
        ]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("`x`") && e.contains("a, b"), "{e}");
    // Missing input.
    let e = exec
        .run(&inputs(&[("a", zeros(&[2, 4]))]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("`b`") && e.contains("missing"), "{e}");
    // Wrong dtype.
    let i = Tensor::from_vec(vec![2, 4], vec![0i64; 8]).unwrap();
    let e = exec
        .run(&inputs(&[("a", i), ("b", zeros(&[2, 4]))]))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("`a`") && e.contains("i64") && e.contains("f32"),
        "{e}"
    );
    // Wrong rank and wrong fixed dim.
    let e = exec
        .run(&inputs(&[("a", zeros(&[8])), ("b", zeros(&[2, 4]))]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("rank"), "{e}");
    let e = exec
        .run(&inputs(&[("a", zeros(&[2, 5])), ("b", zeros(&[2, 4]))]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("dimension 1 is 5, expected 4"), "{e}");
    // Inconsistent symbol binding.
    let e = exec
        .run(&inputs(&[("a", zeros(&[2, 4])), ("b", zeros(&[3, 4]))]))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("dimension `batch` is 2 in input `a` but 3 in input `b`"),
        "{e}"
    );
}

#[test]
fn kernel_errors_name_the_node() {
    let g = parse(
        r#"graph "g" {
  input %a: f32[2,3]
  input %b: f32[4,2]
  %c: f32[2,2] = MatMul(%a, %b) @"proj"
  output %c
}
"#,
    );
    let exec = CpuExecutor::new(g, ExecOptions::default()).unwrap();
    let e = exec
        .run(&inputs(&[("a", zeros(&[2, 3])), ("b", zeros(&[4, 2]))]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("proj") && e.contains("MatMul"), "{e}");
}

#[test]
fn peak_bytes_shows_memory_reuse_on_a_chain() {
    // x → Relu → Neg → Relu → ... (20 nodes), each intermediate 4 KiB.
    let n = 1024usize;
    let mut g = Graph::new("chain");
    let ty = ValueType::new(DType::F32, Shape(vec![Dim::Fixed(n as u64)]));
    let x = g.add_value("x", ty.clone());
    g.inputs.push(x);
    let mut prev = x;
    let steps = 20;
    for i in 0..steps {
        let out = g.add_value(format!("v{i}"), ty.clone());
        let op = if i % 2 == 0 { Op::Relu } else { Op::Neg };
        g.add_node(Node {
            name: String::new(),
            op,
            inputs: vec![Some(prev)],
            outputs: vec![out],
        });
        prev = out;
    }
    g.outputs.push(prev);
    let exec = CpuExecutor::new(g, ExecOptions::default()).unwrap();
    let input = Tensor::from_vec(vec![n], (0..n).map(|v| v as f32 - 500.0).collect()).unwrap();
    let r = exec.run(&inputs(&[("x", input)])).unwrap();
    let one = (n * 4) as u64;
    let all_intermediates = one * steps as u64;
    assert!(
        r.peak_bytes < all_intermediates,
        "peak {} vs {}",
        r.peak_bytes,
        all_intermediates
    );
    // At most input/previous + current alive at once.
    assert!(r.peak_bytes <= 2 * one, "peak {}", r.peak_bytes);
    assert_eq!(r.node_times.as_ref().map(|t| t.len()), Some(steps));
    // Relu then Neg ten times: the result is -relu(x) → non-positive.
    assert!(r.outputs[0]
        .1
        .to_vec::<f32>()
        .unwrap()
        .iter()
        .all(|&v| v <= 0.0));
}

#[test]
fn constants_and_shape_ops_in_a_graph() {
    // y = Reshape(x, Shape(x)[1..] ++ [-1]) exercises constants, Shape, Concat, Reshape.
    let g = parse(
        r#"graph "g" {
  input %x: f32[2,3,4]
  const %m1: i64[1] = [-1]
  %s: i64[2] = Shape(start:1, end:None)(%x)
  %t: i64[1] = Slice(%s, %zero, %one)
  %shape: i64[2] = Concat(axis:0)(%t, %m1)
  %y: f32[3,8] = Reshape(allowzero:false)(%x, %shape)
  output %y
}
"#
        .replace("%zero", "%z")
        .replace("%one", "%o")
        .replace(
            "const %m1",
            "const %z: i64[1] = [0]\n  const %o: i64[1] = [1]\n  const %m1",
        )
        .as_str(),
    );
    let exec = CpuExecutor::new(g, ExecOptions::default()).unwrap();
    let r = exec.run(&inputs(&[("x", zeros(&[2, 3, 4]))])).unwrap();
    assert_eq!(r.outputs[0].1.dims(), &[3, 8]);
}
