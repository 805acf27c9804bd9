//! The ONNX backend node tests that pass on the CPU executor, run again on
//! the wgpu executor (under CI: Mesa's lavapipe), against the tests' own
//! expected outputs. Nodes without a GPU kernel run on the host, so every
//! case must still pass; the counts say how many exercised GPU kernels.

use kiln_tests::onnx_node::{self, Outcome};
use std::collections::BTreeMap;

#[test]
fn listed_onnx_node_tests_pass_on_the_gpu() {
    let Some(ctx) = kiln_tests::gpu::context() else {
        return;
    };
    let dir = onnx_node::default_dir();
    if !dir.join("manifest.txt").is_file() {
        assert!(!kiln_tests::in_ci(), "ONNX node tests missing under CI");
        eprintln!("skipping: ONNX node tests not found at {}", dir.display());
        return;
    }
    let list = onnx_node::pass_list();
    onnx_node::install_quiet_panic_hook();
    let (mut on_gpu, mut all_gpu, mut failures) = (0, 0, Vec::new());
    let mut by_op: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for name in &list {
        let (outcome, kernels, host) = onnx_node::run_node_test_gpu(&dir.join(name), &ctx);
        if kernels > 0 {
            on_gpu += 1;
            if host == 0 {
                all_gpu += 1;
            }
        }
        let ops = onnx_node::model_op_types(&dir.join(name).join("model.onnx")).unwrap_or_default();
        for op in ops {
            let e = by_op.entry(op).or_default();
            e.0 += 1;
            e.1 += usize::from(kernels > 0);
        }
        if outcome != Outcome::Passed {
            failures.push(format!(
                "  {name} (kernels {kernels}, host {host}): {outcome}"
            ));
        }
    }
    let covered: Vec<String> = by_op
        .iter()
        .filter(|(_, (_, k))| *k > 0)
        .map(|(op, (n, k))| format!("{op} {k}/{n}"))
        .collect();
    eprintln!(
        "wgpu on {}: {} of {} cases passed; {on_gpu} ran GPU kernels ({all_gpu} entirely on the GPU)\nops with GPU kernels (cases on GPU / cases): {}",
        ctx.adapter_summary(),
        list.len() - failures.len(),
        list.len(),
        covered.join(", ")
    );
    assert!(
        failures.is_empty(),
        "{} node test(s) fail on the GPU:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // The kernel families cover the common float ops; a drop means a family stopped selecting.
    assert!(
        on_gpu >= list.len() / 3,
        "only {on_gpu} cases ran GPU kernels"
    );
}
