//! Benchmark: one ViT-S/14 image through Kiln's CPU executor, tract and
//! onnxruntime, in the same run, with the same input and thread count.
//!
//! `cargo run --release -p kiln-tests --bin bench-vit -- [--runs N] [--threads T] [--json]`
//!
//! Needs the assets from scripts/setup.sh (model, input tensor, venv with
//! onnxruntime). Prints a table of medians and ratios to Kiln.

use anyhow::{bail, Context, Result};
use kiln_runtime::cpu::{CpuExecutor, ExecOptions};
use kiln_targets::compile::{compile, Target};
use kiln_tests::bench::{median, time_runs, BenchArgs};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use tract_onnx::prelude::*;

fn read_input(path: &Path) -> Result<(String, kiln_ir::Tensor)> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let st = safetensors::SafeTensors::deserialize(&bytes)?;
    let (name, view) = st
        .tensors()
        .into_iter()
        .next()
        .context("empty input file")?;
    let t = kiln_ir::Tensor::from_raw(kiln_ir::DType::F32, view.shape().to_vec(), view.data())?;
    Ok((name, t))
}

fn main() -> Result<()> {
    let BenchArgs {
        runs,
        threads,
        json,
    } = BenchArgs::from_env(10)?;
    let dir = kiln_tests::kiln_cache();
    let model = dir.join("models/vit_s_focus.onnx");
    let input_path = dir.join("data/vit_input.safetensors");
    if !model.exists() || !input_path.exists() {
        bail!(
            "assets missing under {}: run scripts/setup.sh",
            dir.display()
        );
    }
    let (input_name, input) = read_input(&input_path)?;

    // Kiln: the cpu target's pipeline, then the CPU executor.
    let graph = kiln_frontends::load_model(&model)?.graph;
    let target = Target::by_name("cpu")?;
    let compiled = compile(graph, target, &Default::default(), |_, _| {}, |_, _| {})?;
    let exec = CpuExecutor::new(
        compiled.graph,
        ExecOptions {
            threads: Some(threads),
        },
    )?;
    let inputs: BTreeMap<String, kiln_ir::Tensor> = [(input_name.clone(), input.clone())].into();
    let mut peak = 0u64;
    let kiln_times = time_runs(runs, 2, || {
        peak = exec.run(&inputs)?.peak_bytes;
        Ok(())
    })?;

    // tract: its own optimised plan, with a fixed input shape. Built without
    // its `multithread-mm` feature, tract runs on one thread.
    let dims: Vec<usize> = input.dims().to_vec();
    let tract_model = tract_onnx::onnx()
        .model_for_path(&model)?
        .with_input_fact(0, f32::fact(dims.clone()).into())?
        .into_optimized()?
        .into_runnable()?;
    let data = input.to_vec::<f32>()?;
    let tract_input: tract_onnx::prelude::Tensor =
        tract_ndarray::ArrayD::from_shape_vec(dims, data)?.into();
    let tract_times = time_runs(runs, 2, || {
        tract_model.run(tvec!(tract_input.clone().into_tvalue()))?;
        Ok(())
    })?;

    // onnxruntime, through the reference venv.
    let python = dir.join("venv/bin/python");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/bench_ort.py");
    let out = Command::new(&python)
        .arg(&script)
        .arg(&model)
        .arg(&input_path)
        .args([
            "--runs",
            &runs.to_string(),
            "--threads",
            &threads.to_string(),
        ])
        .output()
        .with_context(|| format!("cannot run {}", python.display()))?;
    if !out.status.success() {
        bail!(
            "onnxruntime benchmark failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let ort: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let ort_times: Vec<f64> = ort["times_s"]
        .as_array()
        .context("times_s")?
        .iter()
        .filter_map(|v| v.as_f64())
        .collect();

    let rows = [
        ("kiln (cpu executor)", median(kiln_times.clone())),
        ("tract 0.23 (1 thread)", median(tract_times.clone())),
        ("onnxruntime", median(ort_times.clone())),
    ];
    let kiln = rows[0].1;
    if json {
        let v = serde_json::json!({
            "model": "vit_s_focus.onnx", "threads": threads, "runs": runs,
            "kiln_peak_bytes": peak,
            "median_s": rows.iter().map(|(n, t)| (n.to_string(), *t)).collect::<BTreeMap<_, _>>(),
            "times_s": {"kiln": kiln_times, "tract": tract_times, "onnxruntime": ort_times},
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!("ViT-S/14 saliency (vit_s_focus.onnx), 1 image 224x224, {threads} threads, median of {runs} runs");
    println!("| runtime | median ms | time / kiln |");
    println!("|---|---:|---:|");
    for (name, t) in rows {
        println!("| {name} | {:.1} | {:.2} |", t * 1e3, t / kiln);
    }
    println!(
        "kiln peak memory (inputs, intermediates, outputs): {:.1} MiB",
        peak as f64 / 1048576.0
    );
    Ok(())
}
