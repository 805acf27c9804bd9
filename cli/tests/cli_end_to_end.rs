//! The `kiln` command on a tiny model: optimize, inspect, run, and reproducibility.

mod common;

use common::*;

#[test]
fn optimize_inspect_run() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path(), true);
    let out1 = dir.path().join("a.kiln");
    let out2 = dir.path().join("b.kiln");
    let o = kiln(&[
        "optimize",
        model.to_str().unwrap(),
        "--target",
        "cpu",
        "-o",
        out1.to_str().unwrap(),
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let summary: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(summary["target"], "cpu");
    // MatMul, Add and Relu fuse into one product with an epilogue.
    assert_eq!(summary["nodes_after"], 1);
    // Same input and options on one thread instead of all: the same bytes.
    let o = kiln_with_env(
        &[
            "optimize",
            model.to_str().unwrap(),
            "-o",
            out2.to_str().unwrap(),
            "-q",
        ],
        &[("RAYON_NUM_THREADS", "1")],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        std::fs::read(&out1).unwrap(),
        std::fs::read(&out2).unwrap(),
        "bundles differ"
    );

    let o = kiln(&[
        "inspect",
        out1.to_str().unwrap(),
        "--json",
        "--dim",
        "batch=2",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let info: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(info["kind"], "bundle");
    assert_eq!(info["inputs"][0]["name"], "x");
    assert_eq!(info["inputs"][0]["shape"], "[batch,4]");
    assert_eq!(info["outputs"][0]["shape"], "[batch,3]");
    assert_eq!(info["parameters"], 15);
    assert_eq!(info["ops"]["FusedMatMul"], 1);
    // 2·batch·4·3 for the product, plus batch·3 for each epilogue
    // instruction (the bias add and the ReLU).
    assert_eq!(info["flops"], 2 * 2 * 4 * 3 + 2 * 3 + 2 * 3);

    let input = dir.path().join("in.safetensors");
    let output = dir.path().join("out.safetensors");
    let x = [1.0f32, 0.0, -1.0, 2.0, 0.5, 0.5, 0.5, 0.5];
    write_input(&input, "x", &[2, 4], &x);
    let o = kiln(&[
        "run",
        out1.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let (dims, y) = read_output(&output, "y");
    assert_eq!(dims, vec![2, 3]);
    let (w, b) = tiny_weights();
    for r in 0..2 {
        for c in 0..3 {
            let dot: f32 = (0..4).map(|k| x[r * 4 + k] * w[k * 3 + c]).sum();
            let want = (dot + b[c]).max(0.0);
            assert!(
                (y[r * 3 + c] - want).abs() < 1e-6,
                "y[{r},{c}] = {} want {want}",
                y[r * 3 + c]
            );
        }
    }
}

#[test]
fn every_command_has_help() {
    for cmd in [
        vec!["--help"],
        vec!["optimize", "--help"],
        vec!["run", "--help"],
        vec!["inspect", "--help"],
    ] {
        let o = kiln(&cmd);
        assert!(o.status.success());
        assert!(String::from_utf8_lossy(&o.stdout).contains("Usage"));
    }
}
