//! GPU check: what Kiln's generated kernels achieve on a real GPU.
//!
//! ```text
//! gpu-check prepare DIR           # here: write the models' graphs (structure only)
//! gpu-check run [--graphs DIR] [--out FILE] [--quick]
//! ```
//!
//! `run` prints, and writes to `--out` (default `gpu-check.txt`):
//!
//! 1. the adapter wgpu picked and its limits;
//! 2. f32 and w4 (`rtn:w4g64`) matrix products at decode (M = 1) and
//!    prefill (M = 512) shapes, with Kiln's own kernels dispatched many
//!    times in one submission: GFLOP/s and GB/s, and those as a fraction of
//!    the card's peak (a table of known cards, or `KILN_PEAK_GFLOPS` and
//!    `KILN_PEAK_GBS`), beside a measured copy bandwidth;
//! 3. end-to-end latency of MiniLM (batch 1 × 128 tokens) and SmolLM2-135M
//!    (prefill 128 tokens, and one token), f32 and w4, on the wgpu executor
//!    and on the CPU executor of the same machine, medians.
//!
//! The model files are larger than what travels to a lent GPU machine, so
//! `prepare` writes each model's cleaned graph as text with its weights
//! left out, and `run` fills the weights with seeded random values of the
//! right shapes: latency does not depend on the values (no data-dependent
//! control flow in these graphs), and quality is measured elsewhere on the
//! real weights. `scripts/gpu-check.sh` wraps both steps.

use anyhow::{bail, Context, Result};
use kiln_codegen::StepKind;
use kiln_ir::{DType, Graph, Node, Op, Shape, Tensor, ValueType};
use kiln_runtime::cpu::{CpuExecutor, ExecOptions};
use kiln_runtime::gpu::{GpuContext, GpuExecutor};
use kiln_tests::bench::median;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("prepare") => {
            let dir = PathBuf::from(args.get(1).context("usage: gpu-check prepare DIR")?);
            prepare(&dir)
        }
        Some("run") => {
            let mut graphs = None;
            let mut out = PathBuf::from("gpu-check.txt");
            let mut quick = false;
            let mut it = args[1..].iter();
            while let Some(a) = it.next() {
                match a.as_str() {
                    "--graphs" => graphs = Some(PathBuf::from(it.next().context("--graphs DIR")?)),
                    "--out" => out = PathBuf::from(it.next().context("--out FILE")?),
                    "--quick" => quick = true,
                    other => bail!("unknown argument {other}"),
                }
            }
            let report = run(graphs.as_deref(), quick)?;
            std::fs::write(&out, &report).with_context(|| format!("writing {}", out.display()))?;
            eprintln!("wrote {}", out.display());
            Ok(())
        }
        _ => bail!(
            "usage: gpu-check prepare DIR | gpu-check run [--graphs DIR] [--out FILE] [--quick]"
        ),
    }
}

/// Writes the cleaned, unfused graphs of MiniLM and SmolLM2 as text, weights left out.
fn prepare(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    for (name, path) in [
        ("minilm", kiln_tests::lm::minilm()),
        ("smollm2", kiln_tests::lm::smollm2()),
    ] {
        if !path.exists() {
            bail!("{} missing (run scripts/setup.sh)", path.display());
        }
        let model = kiln_tests::lm::import_unfused(&path);
        let text = kiln_ir::text::print(&model.graph);
        let file = dir.join(format!("{name}.graph.txt"));
        std::fs::write(&file, text)?;
        eprintln!(
            "wrote {} ({} nodes)",
            file.display(),
            model.graph.nodes.len()
        );
    }
    Ok(())
}

/// Output collected for the terminal and the report file.
struct Report(String);

impl Report {
    fn line(&mut self, s: impl AsRef<str>) {
        println!("{}", s.as_ref());
        let _ = writeln!(self.0, "{}", s.as_ref());
    }
}

/// (f32 GFLOP/s, GB/s) peaks of known cards, from their data sheets.
fn known_peak(adapter: &str) -> Option<(f64, f64, &'static str)> {
    let a = adapter.to_ascii_lowercase();
    let table: &[(&str, f64, f64, &str)] = &[
        ("h200", 66_900.0, 4_800.0, "H200 SXM data sheet"),
        ("h100 pcie", 51_200.0, 2_000.0, "H100 PCIe data sheet"),
        ("h100", 66_900.0, 3_350.0, "H100 SXM data sheet"),
        ("a100", 19_500.0, 2_039.0, "A100 80GB SXM data sheet"),
        ("rtx 4090", 82_600.0, 1_008.0, "RTX 4090 data sheet"),
        ("apple m2", 3_600.0, 100.0, "Apple M2 (10-core GPU)"),
    ];
    table
        .iter()
        .find(|(k, ..)| a.contains(k))
        .map(|&(_, f, b, s)| (f, b, s))
}

fn run(graphs: Option<&Path>, quick: bool) -> Result<String> {
    let mut r = Report(String::new());
    let ctx = GpuContext::new().context("no GPU adapter")?;
    r.line(format!(
        "# Kiln GPU check\n\nadapter: {}",
        ctx.adapter_summary()
    ));
    r.line(format!("limits: {:?}", ctx.caps()));
    let env = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<f64>().ok());
    let peak = match (env("KILN_PEAK_GFLOPS"), env("KILN_PEAK_GBS")) {
        (Some(f), Some(b)) => Some((f, b, "KILN_PEAK_GFLOPS/KILN_PEAK_GBS")),
        _ => known_peak(ctx.adapter_name()),
    };
    match peak {
        Some((f, b, src)) => r.line(format!("peak: {f:.0} GFLOP/s f32, {b:.0} GB/s ({src})")),
        None => r.line("peak: unknown card (set KILN_PEAK_GFLOPS and KILN_PEAK_GBS)"),
    }
    let iters = if quick { 5 } else { 50 };
    let copy = copy_bandwidth(&ctx, if quick { 1 << 22 } else { 1 << 26 }, iters)?;
    r.line(format!(
        "measured copy bandwidth: {copy:.1} GB/s (read + write)\n"
    ));

    r.line("| product | M×K×N | µs | GFLOP/s | GB/s | % of f32 peak | % of bandwidth peak |");
    r.line("|---|---|---|---|---|---|---|");
    let (k, n) = if quick { (1024, 1024) } else { (4096, 4096) };
    for (label, m, quant) in [
        ("f32 decode", 1, None),
        ("f32 prefill", 512, None),
        ("w4g64 decode", 1, Some("rtn:w4g64")),
        ("w4g64 prefill", 512, Some("rtn:w4g64")),
    ] {
        let (secs, bytes) = time_matmul(&ctx, m, k, n, quant, iters)?;
        let flops = 2.0 * (m * k * n) as f64;
        let gflops = flops / secs / 1e9;
        let gbs = bytes as f64 / secs / 1e9;
        let (pf, pb) = match peak {
            Some((f, b, _)) => (
                format!("{:.1}%", 100.0 * gflops / f),
                format!("{:.1}%", 100.0 * gbs / b),
            ),
            None => ("n/a".to_string(), "n/a".to_string()),
        };
        r.line(format!(
            "| {label} | {m}×{k}×{n} | {:.1} | {gflops:.1} | {gbs:.1} | {pf} | {pb} |",
            secs * 1e6
        ));
    }

    if let Some(dir) = graphs {
        r.line("\n| model | input | wgpu ms | CPU ms | CPU / wgpu |");
        r.line("|---|---|---|---|---|");
        let runs = if quick { 3 } else { 20 };
        for (name, file) in [("MiniLM", "minilm"), ("SmolLM2-135M", "smollm2")] {
            let path = dir.join(format!("{file}.graph.txt"));
            if !path.exists() {
                r.line(format!("| {name} | {} missing | | | |", path.display()));
                continue;
            }
            let graph = random_weights(&path)?;
            let variants: Vec<(&str, Graph)> = if file == "smollm2" {
                vec![
                    ("f32", graph.clone()),
                    ("w4g64", kiln_tests::gpu::quantize_rtn(&graph, "rtn:w4g64")),
                ]
            } else {
                vec![("f32", graph)]
            };
            for (variant, g) in variants {
                let lens: &[usize] = if file == "smollm2" { &[128, 1] } else { &[128] };
                for &len in lens {
                    let inputs = token_inputs(&g, len);
                    let gpu_graph = kiln_tests::gpu::fuse_for(g.clone(), "vulkan");
                    let cpu_graph = kiln_tests::lm::fuse_cpu(g.clone());
                    let exec = GpuExecutor::new(ctx.clone(), gpu_graph, None)?;
                    exec.run(&inputs)?;
                    let gpu_ms = median(
                        (0..runs)
                            .map(|_| {
                                let t = Instant::now();
                                exec.run(&inputs).map(|_| t.elapsed().as_secs_f64() * 1e3)
                            })
                            .collect::<Result<Vec<_>, _>>()?,
                    );
                    let cpu = CpuExecutor::new(cpu_graph, ExecOptions::default())?;
                    cpu.run(&inputs)?;
                    let cpu_ms = median(
                        (0..runs.min(5))
                            .map(|_| {
                                let t = Instant::now();
                                cpu.run(&inputs).map(|_| t.elapsed().as_secs_f64() * 1e3)
                            })
                            .collect::<Result<Vec<_>, _>>()?,
                    );
                    r.line(format!(
                        "| {name} {variant} | 1 × {len} tokens | {gpu_ms:.2} | {cpu_ms:.2} | {:.2}× |",
                        cpu_ms / gpu_ms
                    ));
                }
            }
        }
    }
    Ok(r.0)
}

/// Seconds per dispatch of the kernel Kiln plans for an `M×K · K×N` product
/// (B a constant weight, packed when `quant` names a spec), and the bytes
/// one dispatch must move at least (A, B as stored, the result).
fn time_matmul(
    ctx: &Arc<GpuContext>,
    m: usize,
    k: usize,
    n: usize,
    quant: Option<&str>,
    iters: usize,
) -> Result<(f64, u64)> {
    let mut g = Graph::new("matmul");
    let a = g.add_value(
        "a",
        ValueType::new(DType::F32, Shape::fixed(&[m as u64, k as u64])),
    );
    g.inputs.push(a);
    let w = seeded(k * n, 7, 0.05);
    let b = g.add_constant("b", Tensor::from_vec(vec![k, n], w)?);
    let y = g.add_value(
        "y",
        ValueType::new(DType::F32, Shape::fixed(&[m as u64, n as u64])),
    );
    g.outputs.push(y);
    g.add_node(Node {
        name: "mm".into(),
        op: Op::MatMul,
        inputs: vec![Some(a), Some(b)],
        outputs: vec![y],
    });
    if let Some(spec) = quant {
        g = kiln_tests::gpu::quantize_rtn(&g, spec);
    }
    let plan = kiln_codegen::plan_graph(&g, ctx.caps())?;
    let StepKind::Kernel {
        kernel,
        spec,
        schedule,
    } = &plan.steps[0].kind
    else {
        bail!("no GPU kernel for the product: {:?}", plan.steps[0].kind);
    };
    let kernel = &plan.kernels[*kernel];
    let node = &g.nodes[0];
    let b_tensor = node.inputs[1]
        .and_then(|v| g.constant(v))
        .context("weight")?;
    let a_bytes: Vec<u8> = seeded(m * k, 3, 1.0)
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    let b_bytes = b_tensor.bytes().to_vec();
    let launch = spec.launch(&[Some(&[m, k]), Some(&[k, n])], &[&[m, n]], schedule)?;
    let secs = ctx.time_kernel(kernel, &[&a_bytes, &b_bytes], &[m * n * 4], &launch, iters)?;
    Ok((secs, (a_bytes.len() + b_bytes.len() + m * n * 4) as u64))
}

/// GB/s of an elementwise copy (`Identity` through the elementwise family's
/// program kernel: y = x · 1) over `elems` floats, bytes read plus written.
fn copy_bandwidth(ctx: &Arc<GpuContext>, elems: usize, iters: usize) -> Result<f64> {
    let mut g = Graph::new("copy");
    let x = g.add_value(
        "x",
        ValueType::new(DType::F32, Shape::fixed(&[elems as u64])),
    );
    g.inputs.push(x);
    let y = g.add_value(
        "y",
        ValueType::new(DType::F32, Shape::fixed(&[elems as u64])),
    );
    g.outputs.push(y);
    g.add_node(Node {
        name: "relu".into(),
        op: Op::Relu,
        inputs: vec![Some(x)],
        outputs: vec![y],
    });
    let plan = kiln_codegen::plan_graph(&g, ctx.caps())?;
    let StepKind::Kernel {
        kernel,
        spec,
        schedule,
    } = &plan.steps[0].kind
    else {
        bail!("no GPU kernel for Relu");
    };
    let launch = spec.launch(&[Some(&[elems])], &[&[elems]], schedule)?;
    let data: Vec<u8> = seeded(elems, 5, 1.0)
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    let secs = ctx.time_kernel(
        &plan.kernels[*kernel],
        &[&data],
        &[elems * 4],
        &launch,
        iters,
    )?;
    Ok(2.0 * (elems * 4) as f64 / secs / 1e9)
}

/// Deterministic pseudo-random values in `[-scale, scale)` (xorshift).
fn seeded(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

/// Parses a graph written by `prepare`, giving every `weight` constant
/// seeded random values of its type (f32 weights; i64 ones are zeros).
fn random_weights(path: &Path) -> Result<Graph> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut weights = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let l = line.trim();
        let Some(rest) = l.strip_prefix("const %") else {
            continue;
        };
        if !l.ends_with("= weight") {
            continue;
        }
        // const %name: f32[a,b] = weight
        let (name, ty) = rest.split_once(": ").context("constant line")?;
        let ty = ty.trim_end_matches("= weight").trim();
        let (dtype, dims) = ty.split_once('[').context("constant type")?;
        let dims: Vec<usize> = dims
            .trim_end_matches(']')
            .split(',')
            .filter(|d| !d.is_empty())
            .map(|d| d.trim().parse::<usize>())
            .collect::<Result<_, _>>()
            .with_context(|| format!("{}:{}: dims", path.display(), i + 1))?;
        let count: usize = dims.iter().product();
        let t = match dtype {
            "f32" => Tensor::from_vec(dims, seeded(count, i as u64 + 1, 0.05))?,
            "i64" => Tensor::from_vec(dims, vec![0i64; count])?,
            other => bail!("{}:{}: cannot fill a {other} weight", path.display(), i + 1),
        };
        weights.insert(name.to_string(), t);
    }
    kiln_ir::text::parse(&text, &weights).with_context(|| format!("parsing {}", path.display()))
}

/// Token ids (and mask and token types where the graph has them) for one
/// sequence of `len` tokens.
fn token_inputs(g: &Graph, len: usize) -> BTreeMap<String, Tensor> {
    let ids: Vec<u32> = (0..len as u32).map(|i| 100 + (i * 37) % 1000).collect();
    let names: Vec<String> = g
        .inputs
        .iter()
        .filter(|v| !g.constants.contains_key(v))
        .map(|&v| g.value(v).name.clone())
        .collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    kiln_tests::lm::token_inputs(&refs, &[ids], 0)
}
