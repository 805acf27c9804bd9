//! `kiln optimize --quant` on SmolLM2: the JSON summary, the report files,
//! byte-identical bundles for the same inputs, `kiln inspect` on a packed
//! bundle, and the errors a build script sees.

mod common;

use common::*;
use std::path::PathBuf;

#[test]
fn quantized_bundles_are_reproducible_and_reported() {
    let gguf = cache().join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    let calib: Vec<PathBuf> = ["2019_donald_j_trump_r.txt", "2020_donald_j_trump_r.txt"]
        .iter()
        .map(|f| cache().join("data/sotu").join(f))
        .collect();
    if !have(&[&gguf, &calib[0], &calib[1]]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let g = gguf.to_str().unwrap();
    let build = |name: &str, seed: &str| {
        let out = dir.path().join(name);
        let o = kiln(&[
            "optimize",
            g,
            "--quant",
            "gptq:w4g128",
            "--calib",
            calib[0].to_str().unwrap(),
            calib[1].to_str().unwrap(),
            "--calib-samples",
            "4",
            "--calib-len",
            "64",
            "--seed",
            seed,
            "-o",
            out.to_str().unwrap(),
            "--json",
        ]);
        (out, json_of(&o))
    };
    let (a, summary) = build("a.kiln", "3");
    let quant = &summary["quant"];
    assert_eq!(quant["spec"], "gptq:w4g128");
    let before = quant["weights_bytes_before"].as_u64().unwrap();
    let after = quant["weights_bytes_after"].as_u64().unwrap();
    assert!(after * 5 < before, "{before} -> {after}");
    // The report beside the bundle: one row per weight, and its chart.
    let report_path = PathBuf::from(quant["report"].as_str().unwrap());
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report_path).unwrap()).unwrap();
    let layers = report["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 211);
    assert!(layers
        .iter()
        .filter(|l| l["method"] == "gptq")
        .all(|l| l["output_error"].as_f64().unwrap() > 0.0));
    let svg = std::fs::read_to_string(quant["chart"].as_str().unwrap()).unwrap();
    assert_eq!(svg.matches("<rect").count(), 211);

    let (b, _) = build("b.kiln", "3");
    assert!(
        std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap(),
        "same inputs and seed gave different bundles"
    );
    let (c, _) = build("c.kiln", "4");
    assert!(std::fs::read(&a).unwrap() != std::fs::read(&c).unwrap());

    // inspect: sizes per format and the memory the loaded bundle takes.
    let info = json_of(&kiln(&["inspect", a.to_str().unwrap(), "--json", "-q"]));
    let by = &info["weights_by_dtype"];
    // 30 layers of q, k, v, o (576 → 576, 192, 192, 576) and gate, up, down
    // (576 ↔ 1536), and the 49152 × 576 tied embedding kept as w8.
    let per_layer = 576 * (576 + 192 + 192 + 576) + 3 * 576 * 1536;
    assert_eq!(by["w4g128"]["parameters"], 30 * per_layer);
    assert_eq!(by["w8"]["parameters"], 49152 * 576);
    assert!((by["w4g128"]["bits_per_weight"].as_f64().unwrap() - 4.14).abs() < 0.01);
    assert_eq!(info["metadata"]["kiln.quant"], "gptq:w4g128");
    let resident = info["resident_bytes_after_load"].as_u64().unwrap();
    let file = info["file_bytes"].as_u64().unwrap();
    eprintln!("bundle {file} bytes, resident after load {resident} bytes");
    // Packed weights stay packed: far below the 515 MiB an f32 copy takes.
    assert!(
        resident < file + 200 * 1024 * 1024,
        "{resident} bytes resident"
    );
}

#[test]
fn quantization_errors_name_what_is_wrong() {
    let gguf = cache().join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    if !have(&[&gguf]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.kiln");
    let (g, o) = (gguf.to_str().unwrap(), out.to_str().unwrap());
    let e = kiln(&["optimize", g, "--quant", "gptq:w4g64", "-o", o]);
    assert!(!e.status.success());
    assert!(stderr(&e).contains("--calib"), "{}", stderr(&e));
    let e = kiln(&["optimize", g, "--quant", "gptq:w5g64", "-o", o]);
    assert!(!e.status.success());
    assert!(stderr(&e).contains("w5g64"), "{}", stderr(&e));
    let e = kiln(&[
        "optimize",
        g,
        "--quant",
        "rtn:w4g64",
        "--keep-as",
        "f16",
        "-o",
        o,
    ]);
    assert!(!e.status.success());
    assert!(stderr(&e).contains("f16"), "{}", stderr(&e));
    assert!(!out.exists(), "a failed build left a bundle behind");
}
