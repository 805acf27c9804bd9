//! GPU bundles end to end: `kiln optimize --target webgpu|vulkan|metal`
//! writes the plan and validated kernels (MSL for metal, SPIR-V for vulkan),
//! reproducibly, and `kiln run` executes them with the wgpu executor and
//! names its adapter. Without a GPU adapter (and outside CI, where lavapipe
//! is installed) the run part is skipped with a message.

mod common;

use common::*;

fn bundle_assets(path: &std::path::Path) -> Vec<String> {
    let b = kiln_runtime::bundle::Bundle::open(path).expect("open bundle");
    b.asset_names().into_iter().map(String::from).collect()
}

#[test]
fn gpu_targets_write_plans_and_kernels() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path(), false);
    let m = model.to_str().unwrap();
    for (target, extra) in [
        ("webgpu", None),
        ("vulkan", Some(".spv")),
        ("metal", Some(".metal")),
    ] {
        let out = dir.path().join(format!("{target}.kiln"));
        let j = json_of(&kiln(&[
            "optimize",
            m,
            "--target",
            target,
            "-o",
            out.to_str().unwrap(),
            "--json",
        ]));
        // MatMul + Add + Relu fuse into one product with an epilogue: one kernel.
        assert_eq!(j["gpu"]["kernel_steps"], 1, "{j}");
        assert_eq!(j["gpu"]["host_ops"], serde_json::json!({}), "{j}");
        let assets = bundle_assets(&out);
        assert!(assets.iter().any(|a| a == "gpu/plan.json"), "{assets:?}");
        assert_eq!(
            assets.iter().filter(|a| a.ends_with(".wgsl")).count(),
            1,
            "{assets:?}"
        );
        if let Some(ext) = extra {
            assert_eq!(
                assets.iter().filter(|a| a.ends_with(ext)).count(),
                1,
                "{assets:?}"
            );
        }
        // Same inputs, same bytes.
        let again = dir.path().join(format!("{target}-again.kiln"));
        let o = kiln(&[
            "optimize",
            m,
            "--target",
            target,
            "-o",
            again.to_str().unwrap(),
            "-q",
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        assert_eq!(
            std::fs::read(&out).unwrap(),
            std::fs::read(&again).unwrap(),
            "{target} bundle not reproducible"
        );
    }
}

#[test]
fn kiln_run_executes_a_gpu_bundle_and_names_the_adapter() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path(), false);
    let bundle = dir.path().join("v.kiln");
    let o = kiln(&[
        "optimize",
        model.to_str().unwrap(),
        "--target",
        "vulkan",
        "-o",
        bundle.to_str().unwrap(),
        "-q",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let input = dir.path().join("in.safetensors");
    let output = dir.path().join("out.safetensors");
    let x = [
        1.0f32, 0.0, -1.0, 2.0, 0.5, 0.5, 0.5, 0.5, -3.0, 1.0, 0.25, 0.0,
    ];
    write_input(&input, "x", &[3, 4], &x);
    let o = kiln(&[
        "run",
        bundle.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
    ]);
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    if !o.status.success() && stderr(&o).contains("no GPU adapter") {
        let ci = std::env::var("CI")
            .map(|v| !v.is_empty() && v != "0" && v != "false")
            .unwrap_or(false);
        assert!(!ci, "no GPU adapter under CI: {}", stderr(&o));
        eprintln!("skipping: {}", stderr(&o));
        return;
    }
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(text.contains("adapter: "), "{text}");
    assert!(text.contains("ran on gpu"), "{text}");
    let (dims, y) = read_output(&output, "y");
    assert_eq!(dims, vec![3, 3]);
    let (w, b) = tiny_weights();
    for r in 0..3 {
        for c in 0..3 {
            let dot: f32 = (0..4).map(|k| x[r * 4 + k] * w[k * 3 + c]).sum();
            let want = (dot + b[c]).max(0.0);
            assert!(
                (y[r * 3 + c] - want).abs() < 1e-5,
                "y[{r},{c}] = {} want {want}",
                y[r * 3 + c]
            );
        }
    }
    // --device cpu runs the same bundle on the CPU executor.
    let o = kiln(&[
        "run",
        bundle.to_str().unwrap(),
        "--device",
        "cpu",
        "--input",
        input.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
    ]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("ran on cpu"));
}
