//! Benchmark: the two real language models through Kiln's CPU executor and
//! onnxruntime, in the same run, with the same inputs and thread count.
//!
//! `cargo run --release -p kiln-tests --bin bench-lm -- [--runs N] [--threads T] [--json]`
//!
//! - all-MiniLM-L6-v2 (BERT): batch 8 × 128 tokens of Moby Dick;
//! - SmolLM2-135M (LLaMA, dequantized to f32): prefill of 512 tokens.
//!
//! onnxruntime runs reference ONNX exports of the same weights, built once by
//! scripts/ref/build_minilm_onnx.py and build_llama_onnx.py (each checks its
//! output against the NumPy reference) into `$KILN_CACHE/bench/`. Needs the
//! assets from scripts/setup.sh. Prints a table of medians and ratios.

use anyhow::{bail, Context, Result};
use kiln_ir::Tensor;
use kiln_runtime::cpu::{CpuExecutor, ExecOptions};
use kiln_tests::bench::{median, time_runs, BenchArgs};
use kiln_tests::lm::{import_cpu, minilm, moby_dick, smollm2, tokenizer};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

struct Case {
    name: &'static str,
    shape: String,
    tokens: usize,
    kiln: Vec<f64>,
    ort: Vec<f64>,
}

fn python() -> PathBuf {
    kiln_tests::kiln_cache().join("venv/bin/python")
}

fn script(name: &str) -> PathBuf {
    kiln_tests::workspace_root().join("scripts/ref").join(name)
}

/// Builds a reference ONNX file once.
fn ensure_onnx(out: &Path, builder: &str, source: &Path) -> Result<()> {
    if out.exists() {
        return Ok(());
    }
    eprintln!("building {} with {builder}", out.display());
    std::fs::create_dir_all(out.parent().context("bench dir")?)?;
    let status = Command::new(python())
        .arg(script(builder))
        .arg(source)
        .arg(out)
        .status()
        .with_context(|| format!("cannot run {builder}"))?;
    if !status.success() {
        bail!("{builder} failed");
    }
    Ok(())
}

/// Writes i64 inputs as safetensors for onnxruntime.
fn write_inputs(path: &Path, inputs: &BTreeMap<String, Tensor>) -> Result<()> {
    let views: Vec<(String, safetensors::tensor::TensorView)> = inputs
        .iter()
        .map(|(n, t)| {
            let v = safetensors::tensor::TensorView::new(
                safetensors::Dtype::I64,
                t.dims().to_vec(),
                t.bytes(),
            )?;
            Ok((n.clone(), v))
        })
        .collect::<Result<_>>()?;
    safetensors::serialize_to_file(views, &None, path)?;
    Ok(())
}

fn ort_times(onnx: &Path, inputs: &Path, runs: usize, threads: usize) -> Result<Vec<f64>> {
    let out = Command::new(python())
        .arg(script("bench_ort_lm.py"))
        .arg(onnx)
        .args(["--inputs", &inputs.display().to_string()])
        .args([
            "--runs",
            &runs.to_string(),
            "--threads",
            &threads.to_string(),
        ])
        .output()
        .context("cannot run bench_ort_lm.py")?;
    if !out.status.success() {
        bail!(
            "onnxruntime benchmark failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    Ok(v["runs"]
        .as_array()
        .context("runs")?
        .iter()
        .filter_map(|x| x.as_f64())
        .map(|ms| ms / 1e3)
        .collect())
}

fn kiln_times(
    exec: &CpuExecutor,
    inputs: &BTreeMap<String, Tensor>,
    runs: usize,
) -> Result<Vec<f64>> {
    time_runs(runs, 1, || {
        exec.run(inputs)?;
        Ok(())
    })
}

fn main() -> Result<()> {
    let BenchArgs {
        runs,
        threads,
        json,
    } = BenchArgs::from_env(5)?;
    for p in [smollm2(), minilm(), moby_dick(), python()] {
        if !p.exists() {
            bail!("{} is missing: run scripts/setup.sh", p.display());
        }
    }
    let bench_dir = kiln_tests::kiln_cache().join("bench");
    let tmp = tempfile::tempdir()?;
    let text = std::fs::read_to_string(moby_dick())?;
    let opts = ExecOptions {
        threads: Some(threads),
    };
    let mut cases = Vec::new();

    // MiniLM: 8 sequences of [CLS] + 126 tokens of text + [SEP].
    {
        let model = import_cpu(&minilm());
        let tok = tokenizer(&model);
        // Line by line: the tokenizer file truncates each encoding to 128 tokens.
        let mut body = Vec::new();
        for line in text.lines().filter(|l| !l.trim().is_empty()).take(400) {
            body.extend(tok.encode(line, false)?);
        }
        let (cls, sep) = (
            tok.token_to_id("[CLS]").context("[CLS]")?,
            tok.token_to_id("[SEP]").context("[SEP]")?,
        );
        let (batch, seq) = (8usize, 128usize);
        let mut ids = Vec::with_capacity(batch * seq);
        for b in 0..batch {
            ids.push(cls as i64);
            ids.extend(
                body[b * (seq - 2)..(b + 1) * (seq - 2)]
                    .iter()
                    .map(|&t| t as i64),
            );
            ids.push(sep as i64);
        }
        let dims = vec![batch, seq];
        let inputs = BTreeMap::from([
            (
                "input_ids".to_string(),
                Tensor::from_vec(dims.clone(), ids)?,
            ),
            (
                "attention_mask".to_string(),
                Tensor::from_vec(dims.clone(), vec![1i64; batch * seq])?,
            ),
            (
                "token_type_ids".to_string(),
                Tensor::from_vec(dims.clone(), vec![0i64; batch * seq])?,
            ),
        ]);
        let exec = CpuExecutor::new(model.graph, opts.clone())?;
        let onnx = bench_dir.join("minilm.onnx");
        ensure_onnx(&onnx, "build_minilm_onnx.py", &minilm())?;
        let input_file = tmp.path().join("minilm_inputs.safetensors");
        write_inputs(&input_file, &inputs)?;
        cases.push(Case {
            name: "all-MiniLM-L6-v2",
            shape: format!("batch {batch} × {seq} tokens"),
            tokens: batch * seq,
            kiln: kiln_times(&exec, &inputs, runs)?,
            ort: ort_times(&onnx, &input_file, runs, threads)?,
        });
    }

    // SmolLM2: prefill of 512 tokens.
    {
        let model = import_cpu(&smollm2());
        let tok = tokenizer(&model);
        let seq = 512usize;
        let ids: Vec<i64> = tok.encode(&text[..100_000], true)?[..seq]
            .iter()
            .map(|&t| t as i64)
            .collect();
        let inputs = BTreeMap::from([(
            "input_ids".to_string(),
            Tensor::from_vec(vec![1, seq], ids)?,
        )]);
        let exec = CpuExecutor::new(model.graph, opts.clone())?;
        let onnx = bench_dir.join("smollm2.onnx");
        ensure_onnx(&onnx, "build_llama_onnx.py", &smollm2())?;
        let input_file = tmp.path().join("smollm2_inputs.safetensors");
        write_inputs(&input_file, &inputs)?;
        cases.push(Case {
            name: "SmolLM2-135M (f32)",
            shape: format!("prefill {seq} tokens"),
            tokens: seq,
            kiln: kiln_times(&exec, &inputs, runs)?,
            ort: ort_times(&onnx, &input_file, runs, threads)?,
        });
    }

    if json {
        let v: Vec<_> = cases
            .iter()
            .map(|c| {
                serde_json::json!({"model": c.name, "shape": c.shape, "tokens": c.tokens,
                    "kiln_median_s": median(c.kiln.clone()), "ort_median_s": median(c.ort.clone()),
                    "kiln_s": c.kiln, "ort_s": c.ort})
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({"threads": threads, "runs": runs, "cases": v})
            )?
        );
        return Ok(());
    }
    println!(
        "Language models on the CPU, {threads} threads, median of {runs} runs (after one warm-up)"
    );
    println!("| model | input | kiln ms | kiln tokens/s | onnxruntime ms | onnxruntime tokens/s | kiln / onnxruntime |");
    println!("|---|---|---:|---:|---:|---:|---:|");
    for c in &cases {
        let (k, o) = (median(c.kiln.clone()), median(c.ort.clone()));
        println!(
            "| {} | {} | {:.1} | {:.0} | {:.1} | {:.0} | {:.2} |",
            c.name,
            c.shape,
            k * 1e3,
            c.tokens as f64 / k,
            o * 1e3,
            c.tokens as f64 / o,
            k / o
        );
    }
    Ok(())
}
