//! `kiln inspect`: what a model or bundle holds.

use anyhow::{bail, Result};
use kiln_ir::{Graph, ValueId};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Arguments of `kiln inspect`.
#[derive(clap::Args)]
pub struct Args {
    /// A model (ONNX, GGUF, a Hugging Face folder) or a Kiln bundle.
    pub file: PathBuf,
    /// Bind a symbolic dimension for the FLOP count, e.g. `--dim batch=1` (repeatable).
    #[arg(long, value_name = "NAME=VALUE")]
    pub dim: Vec<String>,
    /// Print JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Also print the graph in its text form.
    #[arg(long)]
    pub graph: bool,
    /// No progress display.
    #[arg(short, long)]
    pub quiet: bool,
}

fn parse_dims(specs: &[String]) -> Result<BTreeMap<String, u64>> {
    let mut m = BTreeMap::new();
    for s in specs {
        let Some((k, v)) = s.split_once('=') else {
            bail!("--dim `{s}`: expected NAME=VALUE");
        };
        let n: u64 = v
            .trim()
            .parse()
            .map_err(|_| anyhow::anyhow!("--dim `{s}`: `{v}` is not a whole number"))?;
        m.insert(k.trim().to_string(), n);
    }
    Ok(m)
}

fn io_json(g: &Graph, ids: &[ValueId]) -> Vec<serde_json::Value> {
    ids.iter()
        .map(|&v| {
            let info = g.value(v);
            json!({"name": info.name, "dtype": info.ty.dtype.name(), "shape": info.ty.shape.to_string()})
        })
        .collect()
}

/// Runs `kiln inspect`.
pub fn run(a: Args) -> Result<()> {
    let mut bindings = parse_dims(&a.dim)?;
    let loaded = super::load(&a.file, a.quiet || a.json)?;
    let g = &loaded.graph;
    // Unbound symbols default to 1 so a FLOP count is always available; the
    // output says which were defaulted.
    let mut defaulted = Vec::new();
    for v in g.values() {
        for s in v.ty.shape.symbols() {
            if !bindings.contains_key(s) {
                bindings.insert(s.to_string(), 1);
                defaulted.push(s.to_string());
            }
        }
    }
    let cost = kiln_ir::cost::graph_cost(g, &bindings);
    let file_size = std::fs::metadata(&a.file).map(|m| m.len()).unwrap_or(0);
    let histogram = g.op_histogram();
    let kind = if loaded.bundle.is_some() {
        "bundle"
    } else {
        "model"
    };
    let manifest = loaded
        .bundle
        .as_ref()
        .map(|b| serde_json::to_value(b.manifest()))
        .transpose()?;
    let by_dtype = weights_by_dtype(g);
    let resident = loaded.bundle.as_ref().and_then(|_| resident_after_load(g));
    let out = json!({
        "file": a.file.display().to_string(),
        "kind": kind,
        "file_bytes": file_size,
        "graph": g.name,
        "inputs": io_json(g, &g.inputs),
        "outputs": io_json(g, &g.outputs),
        "nodes": g.nodes.len(),
        "ops": histogram,
        "parameters": g.constant_elements(),
        "weight_bytes": g.constant_bytes(),
        "weights_by_dtype": by_dtype.iter().map(|(d, (n, b))| (d.clone(), json!({"parameters": n, "bytes": b, "bits_per_weight": 8.0 * *b as f64 / (*n).max(1) as f64}))).collect::<BTreeMap<_, _>>(),
        "resident_bytes_after_load": resident,
        "dims": bindings,
        "dims_defaulted_to_1": defaulted,
        "flops": cost.as_ref().ok().map(|c| c.flops),
        "bytes_read": cost.as_ref().ok().map(|c| c.bytes_read),
        "bytes_written": cost.as_ref().ok().map(|c| c.bytes_written),
        "cost_error": cost.as_ref().err(),
        "manifest": manifest,
        "metadata": g.metadata,
        "assets": loaded.assets.iter().map(|(n, b)| (n.clone(), b.len())).collect::<std::collections::BTreeMap<_, _>>(),
    });
    if a.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!(
        "{} ({kind}, {:.2} MiB)",
        a.file.display(),
        file_size as f64 / 1048576.0
    );
    if let Some(b) = &loaded.bundle {
        let m = serde_json::to_value(b.manifest())?;
        if let Some(t) = m.get("target") {
            println!("  target      {}", t.as_str().unwrap_or_default());
        }
    }
    for (label, ids) in [("input", &g.inputs), ("output", &g.outputs)] {
        for &v in ids.iter() {
            let info = g.value(v);
            println!("  {label:<11} {}: {}", info.name, info.ty);
        }
    }
    for key in ["kiln.architecture", "kiln.task", "kiln.quant"] {
        if let Some(v) = g.metadata.get(key) {
            println!("  {:<11} {v}", key.trim_start_matches("kiln."));
        }
    }
    // A GPU bundle's kernels are many small assets: summarise them on one line.
    let (gpu_assets, other): (Vec<_>, Vec<_>) = loaded
        .assets
        .iter()
        .partition(|(n, _)| n.starts_with("gpu/"));
    if !other.is_empty() {
        let list: Vec<String> = other
            .iter()
            .map(|(n, b)| format!("{n} ({:.1} KiB)", b.len() as f64 / 1024.0))
            .collect();
        println!("  assets      {}", list.join(", "));
    }
    if !gpu_assets.is_empty() {
        let bytes: usize = gpu_assets.iter().map(|(_, b)| b.len()).sum();
        let plan = manifest
            .as_ref()
            .and_then(|m| m.pointer("/options/gpu"))
            .cloned()
            .unwrap_or_default();
        let host: Vec<String> = plan["host_ops"]
            .as_object()
            .map(|o| o.iter().map(|(k, v)| format!("{k}×{v}")).collect())
            .unwrap_or_default();
        println!(
            "  gpu plan    {} kernels, {} launches, {} aliases, host steps: {} ({} files, {:.1} KiB)",
            plan["kernels"],
            plan["kernel_steps"],
            plan["alias_steps"],
            if host.is_empty() { "none".to_string() } else { host.join(", ") },
            gpu_assets.len(),
            bytes as f64 / 1024.0
        );
    }
    println!("  nodes       {}", g.nodes.len());
    println!(
        "  parameters  {} ({:.2} MiB of weights)",
        g.constant_elements(),
        g.constant_bytes() as f64 / 1048576.0
    );
    if by_dtype.len() > 1 || by_dtype.keys().any(|d| d.starts_with('w')) {
        for (d, (n, b)) in &by_dtype {
            println!(
                "    {d:<9} {n:>11} parameters, {:>8.2} MiB, {:.2} bits/weight",
                *b as f64 / 1048576.0,
                8.0 * *b as f64 / (*n).max(1) as f64
            );
        }
    }
    if let Some(r) = resident {
        println!(
            "  resident    {:.2} MiB (whole process, after loading into the CPU executor and reading every weight)",
            r as f64 / 1048576.0
        );
    }
    match &cost {
        Ok(c) => {
            let dims: Vec<String> = bindings.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let note = if dims.is_empty() {
                String::new()
            } else {
                format!(" at {}", dims.join(", "))
            };
            println!("  FLOPs       {:.3} G{note}", c.flops as f64 / 1e9);
            println!(
                "  traffic     {:.1} MiB read, {:.1} MiB written (unfused, per run)",
                c.bytes_read as f64 / 1048576.0,
                c.bytes_written as f64 / 1048576.0
            );
        }
        Err(e) => println!("  FLOPs       unknown: {e}"),
    }
    if !defaulted.is_empty() {
        println!(
            "  (dimensions {} taken as 1; bind them with --dim NAME=VALUE)",
            defaulted.join(", ")
        );
    }
    println!("  ops:");
    let mut hist: Vec<_> = histogram.into_iter().collect();
    hist.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    for (op, n) in hist {
        println!("    {op:<20} {n}");
    }
    if a.graph {
        print!("{}", kiln_ir::text::print(g));
    }
    Ok(())
}

/// Parameters and bytes of the constants, per dtype (`f32`, `w4g64`, ...).
fn weights_by_dtype(g: &Graph) -> BTreeMap<String, (u64, u64)> {
    let mut m: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for t in g.constants.values() {
        let e = m.entry(t.dtype().to_string()).or_default();
        e.0 += t.len() as u64;
        e.1 += t.bytes().len() as u64;
    }
    m
}

/// Resident set size in bytes, from `/proc/self/statm` (Linux only).
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// The whole process's resident memory once the CPU executor has loaded the
/// bundle's graph and every weight page has been read: what a running app
/// pays for the model. Packed weights are read in place, so this follows the
/// bundle's size, not the f32 size.
fn resident_after_load(g: &Graph) -> Option<u64> {
    let exec =
        kiln_runtime::cpu::CpuExecutor::new(g.clone(), kiln_runtime::cpu::ExecOptions::default())
            .ok()?;
    let mut sum = 0u64;
    for t in exec.graph().constants.values() {
        // One byte per page brings every mapped page in.
        sum = sum.wrapping_add(
            t.bytes()
                .iter()
                .step_by(4096)
                .map(|&b| u64::from(b))
                .sum::<u64>(),
        );
    }
    std::hint::black_box(sum);
    let resident = resident_bytes()?;
    drop(exec);
    Some(resident)
}
