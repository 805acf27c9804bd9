//! `kiln run`: execute a bundle on inputs from a safetensors file.

use crate::{progress, tensors};
use anyhow::{Context, Result};
use kiln_runtime::cpu::{CpuExecutor, ExecOptions};
use serde_json::json;
use std::path::PathBuf;
use std::time::Instant;

/// Arguments of `kiln run`.
#[derive(clap::Args)]
pub struct Args {
    /// The bundle (or a model, compiled on the fly for the CPU).
    pub bundle: PathBuf,
    /// Inputs: a safetensors file with one tensor per model input, by name.
    #[arg(long)]
    pub input: PathBuf,
    /// Where to write the outputs (safetensors, named after the model's outputs).
    #[arg(long)]
    pub output: PathBuf,
    /// Which executor runs the bundle: `auto` picks the GPU (wgpu) for a
    /// bundle built for a GPU target and the CPU otherwise.
    #[arg(long, default_value = "auto", value_parser = ["auto", "cpu", "gpu"])]
    pub device: String,
    /// Threads for the CPU executor (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Print a JSON summary on stdout.
    #[arg(long)]
    pub json: bool,
    /// Print where the time went, by op.
    #[arg(long)]
    pub profile: bool,
    /// No progress display.
    #[arg(short, long)]
    pub quiet: bool,
}

/// Runs `kiln run`.
pub fn run(a: Args) -> Result<()> {
    let quiet = a.quiet || a.json;
    let inputs = tensors::read(&a.input)?;
    let loaded = super::load(&a.bundle, quiet)?;
    let plan = match &loaded.bundle {
        Some(b) => kiln_codegen::GpuPlan::from_assets(|n| b.asset(n))
            .with_context(|| format!("{}: cannot read its GPU plan", a.bundle.display()))?,
        None => None,
    };
    let use_gpu = match a.device.as_str() {
        "gpu" => true,
        "cpu" => false,
        _ => plan.is_some(),
    };
    if use_gpu {
        return run_gpu(&a, loaded.graph, plan, &inputs, quiet);
    }
    let exec = CpuExecutor::new(loaded.graph, ExecOptions { threads: a.threads })
        .with_context(|| format!("{}: cannot prepare the CPU executor", a.bundle.display()))?;
    let sp = progress::spinner(quiet, "running");
    let start = Instant::now();
    let result = exec
        .run(&inputs)
        .with_context(|| format!("{}: run on {}", a.bundle.display(), a.input.display()))?;
    let seconds = start.elapsed().as_secs_f64();
    sp.finish_and_clear();
    tensors::write(&a.output, &result.outputs)?;
    if a.json {
        let out = json!({
            "output_file": a.output.display().to_string(),
            "executor": "cpu",
            "outputs": describe_outputs(&result.outputs),
            "seconds": seconds,
            "peak_bytes": result.peak_bytes,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    for (n, t) in &result.outputs {
        println!("{n}: {}{:?}", t.dtype(), t.dims());
    }
    if a.profile {
        print_profile(result.node_times.as_deref().unwrap_or_default());
    }
    println!(
        "ran on cpu in {:.1} ms, peak memory {:.1} MiB; wrote {}",
        seconds * 1e3,
        result.peak_bytes as f64 / 1048576.0,
        a.output.display()
    );
    Ok(())
}

/// Name, dtype and dims of each output, for `--json`.
fn describe_outputs(outputs: &[(String, kiln_ir::Tensor)]) -> Vec<serde_json::Value> {
    outputs
        .iter()
        .map(|(n, t)| json!({"name": n, "dtype": t.dtype().name(), "dims": t.dims()}))
        .collect()
}

/// Runs the graph with the wgpu executor, on the bundle's plan when it has
/// one (a CPU bundle is planned on the fly for the adapter).
fn run_gpu(
    a: &Args,
    graph: kiln_ir::Graph,
    plan: Option<kiln_codegen::GpuPlan>,
    inputs: &std::collections::BTreeMap<String, kiln_ir::Tensor>,
    quiet: bool,
) -> Result<()> {
    use kiln_runtime::gpu::{GpuContext, GpuExecutor};
    let ctx = GpuContext::new().with_context(|| {
        format!(
            "{}: no GPU adapter to run it on (use --device cpu)",
            a.bundle.display()
        )
    })?;
    let adapter = ctx.adapter_summary();
    let exec = GpuExecutor::new(ctx, graph, plan)
        .with_context(|| format!("{}: cannot prepare the GPU executor", a.bundle.display()))?;
    let sp = progress::spinner(quiet, "running");
    let start = Instant::now();
    let result = exec
        .run(inputs)
        .with_context(|| format!("{}: run on {}", a.bundle.display(), a.input.display()))?;
    let seconds = start.elapsed().as_secs_f64();
    sp.finish_and_clear();
    tensors::write(&a.output, &result.outputs)?;
    let stats = &result.stats;
    if a.json {
        let out = json!({
            "output_file": a.output.display().to_string(),
            "executor": "gpu",
            "adapter": adapter,
            "outputs": describe_outputs(&result.outputs),
            "seconds": seconds,
            "kernel_launches": stats.kernel_launches,
            "host_steps": stats.host_steps,
            "submissions": stats.submissions,
            "fallbacks": exec.fallbacks(),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!("adapter: {adapter}");
    for f in exec.fallbacks() {
        println!("fallback: {f}");
    }
    for (n, t) in &result.outputs {
        println!("{n}: {}{:?}", t.dtype(), t.dims());
    }
    println!(
        "ran on gpu in {:.1} ms: {} kernel launches, {} host steps, {} submissions; wrote {}",
        seconds * 1e3,
        stats.kernel_launches,
        stats.host_steps,
        stats.submissions,
        a.output.display()
    );
    Ok(())
}

/// Time per op kind, largest first.
fn print_profile(times: &[kiln_runtime::cpu::NodeTime]) {
    let mut by_op: std::collections::BTreeMap<&str, (usize, f64)> = Default::default();
    for t in times {
        let e = by_op.entry(t.op).or_default();
        e.0 += 1;
        e.1 += t.seconds;
    }
    let total: f64 = by_op.values().map(|v| v.1).sum();
    let mut rows: Vec<_> = by_op.into_iter().collect();
    rows.sort_by(|a, b| b.1 .1.total_cmp(&a.1 .1));
    println!("{:<20} {:>6} {:>10} {:>7}", "op", "nodes", "ms", "share");
    for (op, (n, s)) in rows {
        println!(
            "{op:<20} {n:>6} {:>10.2} {:>6.1}%",
            s * 1e3,
            100.0 * s / total.max(1e-12)
        );
    }
}
