//! The wgpu executor: the one-shot kernel harness, and whole graphs against
//! the CPU executor. Tests skip (with a message) on machines without a GPU
//! adapter.
#![cfg(feature = "gpu")]

use kiln_codegen::{Kernel, Launch};
use kiln_runtime::gpu::test_context;

/// A handwritten kernel following the calling convention: one input, one
/// output, params = [count]; each invocation copies one word, plus one.
const COPY_PLUS_ONE: &str = r#"
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@group(0) @binding(2) var<storage, read> params: array<u32>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let wg = wid.x + wid.y * nwg.x;
    let i = wg * 64u + lid;
    if (i >= params[0]) {
        return;
    }
    y[i] = x[i] + 1.0;
}
"#;

#[test]
fn run_kernel_once_runs_a_handwritten_kernel() {
    let Some(ctx) = test_context() else { return };
    let kernel = Kernel::new("copy", COPY_PLUS_ONE.to_string(), 1, 1, 0);
    // 131 elements: not a multiple of the workgroup, so the bounds check matters.
    let n = 131usize;
    let x: Vec<f32> = (0..n).map(|i| i as f32 * 0.5 - 7.0).collect();
    let launch = Launch {
        params: vec![n as u32],
        workgroups: kiln_codegen::kernel::linear_grid(n.div_ceil(64) as u64),
    };
    let out = ctx
        .run_kernel_once(&kernel, &[bytemuck::cast_slice(&x)], &[n * 4], &launch)
        .expect("kernel runs");
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].len(), n * 4);
    let y: &[f32] = bytemuck::cast_slice(&out[0]);
    for (i, (&a, &b)) in x.iter().zip(y).enumerate() {
        assert_eq!(b, a + 1.0, "element {i}");
    }
    // Odd byte counts are truncated to what was asked for.
    let out = ctx
        .run_kernel_once(&kernel, &[bytemuck::cast_slice(&x)], &[6], &launch)
        .expect("kernel runs");
    assert_eq!(out[0].len(), 6);
    assert_eq!(&out[0][..4], &(x[0] + 1.0).to_le_bytes());
}

#[test]
fn run_kernel_once_reports_invalid_wgsl() {
    let Some(ctx) = test_context() else { return };
    let kernel = Kernel::new(
        "broken",
        "fn main() { let x: u32 = 1.5; }".to_string(),
        1,
        1,
        0,
    );
    let launch = Launch {
        params: vec![0],
        workgroups: [1, 1, 1],
    };
    let err = ctx
        .run_kernel_once(&kernel, &[&[0u8; 4]], &[4], &launch)
        .expect_err("invalid WGSL is an error, not a panic");
    assert!(err.to_string().contains(&kernel.name), "{err}");
}

use kiln_codegen::{plan_graph, DeviceCaps, StepKind};
use kiln_ir::{Graph, Tensor};
use kiln_runtime::cpu::{CpuExecutor, ExecOptions};
use kiln_runtime::gpu::GpuExecutor;
use std::collections::BTreeMap;

/// Deterministic values in [-1, 1) (64-bit LCG).
fn random(seed: u64, n: usize) -> Vec<f32> {
    let mut s = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn f32_tensor(dims: &[usize], seed: u64) -> Tensor {
    Tensor::from_vec(dims.to_vec(), random(seed, dims.iter().product())).unwrap()
}

fn parse(text: &str, weights: &[(&str, Tensor)]) -> Graph {
    let w: BTreeMap<String, Tensor> = weights
        .iter()
        .map(|(n, t)| (n.to_string(), t.clone()))
        .collect();
    kiln_ir::text::parse(text, &w).expect("test graph parses")
}

fn feed(pairs: &[(&str, Tensor)]) -> BTreeMap<String, Tensor> {
    pairs
        .iter()
        .map(|(n, t)| (n.to_string(), t.clone()))
        .collect()
}

/// Asserts the GPU outputs equal the CPU executor's: same names, dtypes and
/// shapes, integers exactly. Floats within 1e-5 relative plus 1e-5 of the
/// output's largest magnitude: kernels compute in f32 like the CPU but sum
/// dot products in another order, and a sum that cancels keeps the error of
/// its terms (about the output's scale), not of its small result.
fn assert_matches_cpu(graph: &Graph, gpu: &[(String, Tensor)], inputs: &BTreeMap<String, Tensor>) {
    let cpu = CpuExecutor::new(graph.clone(), ExecOptions::default())
        .unwrap()
        .run(inputs)
        .unwrap();
    assert_eq!(gpu.len(), cpu.outputs.len());
    for ((gn, g), (cn, c)) in gpu.iter().zip(&cpu.outputs) {
        assert_eq!(gn, cn);
        assert_eq!(g.dtype(), c.dtype(), "{gn}");
        assert_eq!(g.dims(), c.dims(), "{gn}");
        if g.dtype().is_float() {
            let (a, b) = (g.to_f64_vec(), c.to_f64_vec());
            let scale = b.iter().fold(1e-1f64, |m, v| m.max(v.abs()));
            for (i, (x, y)) in a.iter().zip(&b).enumerate() {
                assert!(
                    (x - y).abs() <= 1e-5 * (scale + y.abs()),
                    "{gn}[{i}]: gpu {x} cpu {y}"
                );
            }
        } else {
            assert_eq!(g.bytes(), c.bytes(), "{gn}");
        }
    }
}

/// MatMul, Add, Relu and Softmax (kernels where a family has one), a
/// Reshape whose target shape a host-step chain computes (Shape → Slice →
/// Concat, so the alias needs a host-known value), a Transpose, a Gather by
/// i64 ids, a reduction to a scalar and an Identity of a graph input.
const MIXED: &str = r#"graph "mixed" {
  input %x: f32[batch,6]
  input %ids: i64[3]
  const %w: f32[6,5] = weight
  const %b: f32[5] = [0.5, -0.25, 0.125, 1, -1]
  const %z: i64[1] = [0]
  const %o: i64[1] = [1]
  const %m1: i64[1] = [-1]
  %h: f32[batch,5] = MatMul(%x, %w)
  %h2: f32[batch,5] = Add(%h, %b)
  %r: f32[batch,5] = Relu(%h2)
  %s: f32[batch,5] = Softmax(axis:-1)(%r)
  %shp: i64[2] = Shape(start:0, end:None)(%s)
  %first: i64[1] = Slice(%shp, %z, %o)
  %target: i64[2] = Concat(axis:0)(%m1, %first)
  %v: f32[5,batch] = Reshape(allowzero:false)(%s, %target)
  %t: f32[batch,5] = Transpose(perm:Some([1,0]))(%v)
  %u: f32[batch,5] = Mul(%t, %h2)
  %g: f32[3,5] = Gather(axis:0)(%u, %ids)
  %sum: f32[] = Reduce(kind:Sum, axes:None, keepdims:false, noop_with_empty_axes:false)(%g)
  %xi: f32[batch,6] = Identity(%x)
  output %u
  output %g
  output %sum
  output %xi
  output %target
}
"#;

fn mixed_graph() -> Graph {
    parse(MIXED, &[("w", f32_tensor(&[6, 5], 7))])
}

fn mixed_inputs(batch: usize) -> BTreeMap<String, Tensor> {
    let ids = Tensor::from_vec(vec![3], vec![0i64, (batch.max(1) - 1) as i64, 0]).unwrap();
    feed(&[("x", f32_tensor(&[batch, 6], 11)), ("ids", ids)])
}

/// Kernel steps of `exec`'s plan.
fn kernel_steps(exec: &GpuExecutor) -> usize {
    exec.plan()
        .steps
        .iter()
        .filter(|s| matches!(s.kind, StepKind::Kernel { .. }))
        .count()
}

#[test]
fn mixed_graph_matches_the_cpu_and_reuses_buffers() {
    let Some(ctx) = test_context() else { return };
    let graph = mixed_graph();
    let exec = GpuExecutor::new(ctx.clone(), graph.clone(), None).unwrap();
    let summary = exec.plan().summary(&graph);
    eprintln!("caps {:?}\nplan {summary:?}", ctx.caps());
    assert!(exec.fallbacks().is_empty(), "{:?}", exec.fallbacks());
    // `Shape` has no kernel in any family: at least one host step.
    assert!(summary.host_ops.contains_key("Shape"), "{summary:?}");
    assert_eq!(summary.alias_steps, 2, "Reshape and Identity are aliases");
    let inputs = mixed_inputs(4);
    let first = exec.run(&inputs).unwrap();
    eprintln!("run 1: {:?}", first.stats);
    assert_matches_cpu(&graph, &first.outputs, &inputs);
    let s = &first.stats;
    assert_eq!(s.kernel_launches, kernel_steps(&exec));
    assert_eq!(s.kernel_fallbacks, 0);
    assert_eq!(
        s.alias_steps + s.host_steps + s.kernel_launches,
        graph.nodes.len()
    );
    assert!(s.alias_steps >= 1 && s.host_steps >= 1, "{s:?}");
    // x (and ids, when Gather has a kernel) go up; outputs come back.
    assert!(s.uploaded_bytes >= 4 * 6 * 4, "{s:?}");
    assert!(s.downloaded_bytes > 0 && s.submissions >= 1, "{s:?}");

    let second = exec.run(&inputs).unwrap();
    eprintln!("run 2: {:?}", second.stats);
    assert_matches_cpu(&graph, &second.outputs, &inputs);
    // Every buffer of the second run comes from the pool the first one left.
    assert_eq!(second.stats.buffers_created, 0, "{:?}", second.stats);
    assert_eq!(
        second.stats.buffers_reused,
        first.stats.buffers_created + first.stats.buffers_reused
    );
    // Another batch size, with the same executor and pool.
    let inputs = mixed_inputs(9);
    let third = exec.run(&inputs).unwrap();
    assert_matches_cpu(&graph, &third.outputs, &inputs);
}

#[test]
fn host_steps_alone_match_the_cpu() {
    // Every node on the host (the fallback path of every op without a
    // kernel), with aliases kept: values move only through host tensors.
    let Some(ctx) = test_context() else { return };
    let graph = mixed_graph();
    let mut plan = plan_graph(&graph, ctx.caps()).unwrap();
    for step in &mut plan.steps {
        if !matches!(step.kind, StepKind::Alias) {
            step.kind = StepKind::Host {
                reason: "test".into(),
            };
        }
    }
    let exec = GpuExecutor::new(ctx, graph.clone(), Some(plan)).unwrap();
    let inputs = mixed_inputs(3);
    let r = exec.run(&inputs).unwrap();
    assert_matches_cpu(&graph, &r.outputs, &inputs);
    let s = &r.stats;
    assert_eq!(
        (
            s.kernel_launches,
            s.submissions,
            s.uploaded_bytes,
            s.downloaded_bytes
        ),
        (0, 0, 0, 0),
        "{s:?}"
    );
    assert_eq!(s.alias_steps, 2);
    assert_eq!(s.host_steps, graph.nodes.len() - 2);
}

#[test]
fn zero_elements_and_scalars_run() {
    let Some(ctx) = test_context() else { return };
    let graph = mixed_graph();
    let exec = GpuExecutor::new(ctx.clone(), graph.clone(), None).unwrap();
    // batch = 0: empty MatMul, Softmax, Transpose; Gather of nothing is
    // out of range on the CPU too, so this graph stops before it.
    let text = r#"graph "empty" {
  input %x: f32[batch,6]
  input %a: f32[]
  const %w: f32[6,5] = weight
  %h: f32[batch,5] = MatMul(%x, %w)
  %h2: f32[batch,5] = Add(%h, %a)
  %s: f32[batch,5] = Softmax(axis:-1)(%h2)
  %t: f32[5,batch] = Transpose(perm:Some([1,0]))(%s)
  %sum: f32[] = Reduce(kind:Sum, axes:None, keepdims:false, noop_with_empty_axes:false)(%t)
  %a2: f32[] = Mul(%a, %a)
  %a3: f32[] = Add(%a2, %sum)
  output %t
  output %sum
  output %a3
}
"#;
    let g = parse(text, &[("w", f32_tensor(&[6, 5], 3))]);
    let exec2 = GpuExecutor::new(ctx, g.clone(), None).unwrap();
    for batch in [0usize, 2] {
        let inputs = feed(&[
            ("x", f32_tensor(&[batch, 6], 5)),
            ("a", Tensor::scalar(1.5f32)),
        ]);
        let r = exec2.run(&inputs).unwrap();
        eprintln!("batch {batch}: {:?}", r.stats);
        assert_matches_cpu(&g, &r.outputs, &inputs);
        assert_eq!(r.outputs[0].1.dims(), &[5, batch]);
        assert_eq!(r.outputs[2].1.dims(), &[] as &[usize]);
    }
    drop(exec);
}

#[test]
fn a_plan_for_another_graph_is_rejected() {
    let Some(ctx) = test_context() else { return };
    let graph = mixed_graph();
    let other = parse(
        r#"graph "other" {
  input %x: f32[2,3]
  %y: f32[2,3] = Relu(%x)
  output %y
}
"#,
        &[],
    );
    let plan = plan_graph(&other, ctx.caps()).unwrap();
    let e = GpuExecutor::new(ctx.clone(), graph.clone(), Some(plan))
        .unwrap_err()
        .to_string();
    assert!(e.contains("another graph") && e.contains("mixed"), "{e}");
    // Same node count, different names.
    let mut plan = plan_graph(&graph, ctx.caps()).unwrap();
    plan.steps[3].name = "renamed".into();
    let e = GpuExecutor::new(ctx, graph, Some(plan))
        .unwrap_err()
        .to_string();
    assert!(e.contains("another graph") && e.contains("renamed"), "{e}");
}

#[test]
fn a_plan_for_a_larger_device_falls_back() {
    let Some(ctx) = test_context() else { return };
    let graph = mixed_graph();
    let device = ctx.caps().clone();
    let big = DeviceCaps {
        max_storage_buffers_per_stage: device.max_storage_buffers_per_stage * 2,
        max_workgroup_storage_bytes: device.max_workgroup_storage_bytes * 4,
        max_invocations_per_workgroup: device.max_invocations_per_workgroup,
        max_workgroup_size: device.max_workgroup_size,
        max_workgroups_per_dimension: device.max_workgroups_per_dimension,
        max_storage_binding_bytes: device.max_storage_binding_bytes * 2,
        shader_f16: true,
    };
    assert!(!big.fits_within(&device));
    let mut plan = plan_graph(&graph, &big).unwrap();
    // What a family would emit for the larger device: a kernel with more
    // workgroup memory than this device has (the one MatMul step).
    let (step, k) = plan
        .steps
        .iter()
        .enumerate()
        .find_map(|(i, s)| match &s.kind {
            StepKind::Kernel { kernel, .. } if graph.nodes[i].op.name() == "MatMul" => {
                Some((i, *kernel))
            }
            _ => None,
        })
        .expect("the plan has a MatMul kernel");
    plan.kernels[k].workgroup_bytes = big.max_workgroup_storage_bytes;
    plan.kernels[k].name = "matmul_big".into();
    let exec = GpuExecutor::new(ctx.clone(), graph.clone(), Some(plan)).unwrap();
    eprintln!("{:#?}", exec.fallbacks());
    assert_eq!(exec.fallbacks().len(), 1);
    let msg = &exec.fallbacks()[0];
    assert!(
        msg.contains(&graph.nodes[step].name) || msg.contains("MatMul"),
        "{msg}"
    );
    assert!(
        msg.contains("matmul_big") && msg.contains("workgroup memory"),
        "{msg}"
    );
    // The re-planned step fits the device.
    match &exec.plan().steps[step].kind {
        StepKind::Kernel { kernel, .. } => assert!(exec.plan().kernels[*kernel].fits(&device)),
        StepKind::Host { .. } => {}
        StepKind::Alias => panic!("a MatMul never becomes an alias"),
    }
    let inputs = mixed_inputs(5);
    let r = exec.run(&inputs).unwrap();
    assert_matches_cpu(&graph, &r.outputs, &inputs);
}

#[test]
fn input_errors_name_the_input() {
    let Some(ctx) = test_context() else { return };
    let exec = GpuExecutor::new(ctx, mixed_graph(), None).unwrap();
    let mut inputs = mixed_inputs(2);
    inputs.insert("x".into(), f32_tensor(&[2, 7], 1));
    let e = exec.run(&inputs).unwrap_err().to_string();
    assert!(e.contains("`x`") && e.contains("dimension 1 is 7"), "{e}");
    inputs.remove("x");
    let e = exec.run(&inputs).unwrap_err().to_string();
    assert!(e.contains("`x`") && e.contains("missing"), "{e}");
}

/// Add, Mul and MatMul chained, every node a kernel: the whole graph is
/// one submission (the final read-back included).
const CHAIN: &str = r#"graph "chain" {
  input %x: f32[rows,24]
  input %y: f32[rows,24]
  const %w1: f32[24,40] = weight
  const %w2: f32[40,17] = weight
  const %c: f32[40] = weight
  %a: f32[rows,24] = Add(%x, %y)
  %m: f32[rows,24] = Mul(%a, %x)
  %p: f32[rows,40] = MatMul(%m, %w1)
  %q: f32[rows,40] = Add(%p, %c)
  %r: f32[rows,40] = Mul(%q, %q)
  %o: f32[rows,17] = MatMul(%r, %w2)
  output %o
  output %q
}
"#;

#[test]
fn a_chain_of_kernels_is_one_submission() {
    let Some(ctx) = test_context() else { return };
    let graph = parse(
        CHAIN,
        &[
            ("w1", f32_tensor(&[24, 40], 21)),
            ("w2", f32_tensor(&[40, 17], 22)),
            ("c", f32_tensor(&[40], 23)),
        ],
    );
    let exec = GpuExecutor::new(ctx, graph.clone(), None).unwrap();
    assert_eq!(
        kernel_steps(&exec),
        graph.nodes.len(),
        "every node has a kernel: {:?}",
        exec.plan().summary(&graph)
    );
    // Weights are resident once: w1, w2 and c.
    assert_eq!(exec.resident_bytes(), (24 * 40 + 40 * 17 + 40) * 4);
    for rows in [1usize, 13] {
        let inputs = feed(&[
            ("x", f32_tensor(&[rows, 24], 31)),
            ("y", f32_tensor(&[rows, 24], 32)),
        ]);
        let r = exec.run(&inputs).unwrap();
        eprintln!("rows {rows}: {:?}", r.stats);
        assert_matches_cpu(&graph, &r.outputs, &inputs);
        let s = &r.stats;
        assert_eq!(s.submissions, 1, "{s:?}");
        assert_eq!(s.kernel_launches, graph.nodes.len());
        assert_eq!(s.host_steps, 0);
        assert_eq!(s.uploaded_bytes, (2 * rows * 24 * 4) as u64);
        assert_eq!(s.downloaded_bytes, (rows * (17 + 40) * 4) as u64);
    }
}
