//! Benchmark: MatMul with packed quantized weights against f32 weights, on
//! SmolLM2-135M's real layer-0 weights, through the CPU executor.
//!
//! `cargo run --release -p kiln-tests --bin bench-qmatmul -- [--runs N] [--threads T] [--json]`
//!
//! Each case is a one-node graph `y = MatMul(x, W)` with `x: f32[M, K]` an
//! input and `W` a constant: the f32 weight, or the same weight quantized
//! with `quantize_rtn` (w8, w4g64, w4g128, w3g64, all symmetric). Shapes
//! are SmolLM2's projections (K × N = 576×576, 576×192, 576×1536, 1536×576)
//! and its tied output head (576×49152, the transposed embedding), at
//! M = 1 (decode) and M = 512 (prefill). Times are medians of `--runs` runs
//! (fewer for the large prefill products) after two warm-up runs, taken
//! round-robin over the formats of a shape, and include the executor's
//! per-run work (input checks, the copy of the output into a tensor), which
//! is the same for every format. GB/s is the weight's stored bytes per
//! second, for M = 1.

use anyhow::{bail, Context, Result};
use kiln_ir::quant::{quantize_rtn, QuantFormat};
use kiln_ir::{DType, Graph, Node, Op, Shape, Tensor, ValueType};
use kiln_runtime::cpu::{CpuExecutor, ExecOptions};
use kiln_tests::bench::{median, time_runs, BenchArgs};
use std::collections::BTreeMap;

/// Weight formats compared with f32.
const FORMATS: [&str; 4] = ["w8", "w4g64", "w4g128", "w3g64"];

/// Rows of activations: one decode step, and a 512-token prefill.
const ROWS: [usize; 2] = [1, 512];

struct Row {
    layer: String,
    k: usize,
    n: usize,
    m: usize,
    format: String,
    weight_bytes: usize,
    seconds: f64,
}

/// An `[in, out]` f32 weight of layer 0 (or the transposed embedding).
fn weight(graph: &Graph, name: &str) -> Result<(Vec<f32>, usize, usize)> {
    let id = graph
        .find_value(name)
        .with_context(|| format!("SmolLM2 graph has no value `{name}`"))?;
    let t = graph
        .constant(id)
        .with_context(|| format!("`{name}` is not a constant"))?;
    let &[rows, cols] = t.dims() else {
        bail!("`{name}` has shape {:?}, expected 2-d", t.dims());
    };
    let v = t
        .to_vec::<f32>()
        .with_context(|| format!("`{name}` is not f32"))?;
    Ok((v, rows, cols))
}

fn transpose(v: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0f32; v.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = v[r * cols + c];
        }
    }
    out
}

/// `y = MatMul(x, W)` with `x: f32[m, k]`.
fn graph(w: Tensor, m: usize) -> Result<Graph> {
    let (k, n) = (w.dims()[0], w.dims()[1]);
    let mut g = Graph::new("qmatmul");
    let x = g.add_value(
        "x",
        ValueType::new(DType::F32, Shape::fixed(&[m as u64, k as u64])),
    );
    g.inputs.push(x);
    let wid = g.add_constant("w", w);
    let y = g.add_value(
        "y",
        ValueType::new(DType::F32, Shape::fixed(&[m as u64, n as u64])),
    );
    g.add_node(Node {
        name: "matmul".into(),
        op: Op::MatMul,
        inputs: vec![Some(x), Some(wid)],
        outputs: vec![y],
    });
    g.outputs.push(y);
    Ok(g)
}

/// Median seconds per run of each weight's graph on the same input. Runs
/// go round-robin over the weights, so that a busy moment on the machine
/// slows every weight alike rather than one of them.
fn time_cases(
    weights: &[(String, Tensor)],
    m: usize,
    runs: usize,
    threads: usize,
) -> Result<Vec<f64>> {
    let k = weights[0].1.dims()[0];
    let execs = weights
        .iter()
        .map(|(_, w)| {
            CpuExecutor::new(
                graph(w.clone(), m)?,
                ExecOptions {
                    threads: Some(threads),
                },
            )
            .map_err(Into::into)
        })
        .collect::<Result<Vec<_>>>()?;
    let x: Vec<f32> = (0..m * k)
        .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
        .collect();
    let inputs = BTreeMap::from([("x".to_string(), Tensor::from_vec(vec![m, k], x)?)]);
    for exec in &execs {
        time_runs(0, 2, || {
            exec.run(&inputs)?;
            Ok(())
        })?;
    }
    let mut times = vec![Vec::with_capacity(runs); execs.len()];
    for _ in 0..runs {
        for (exec, t) in execs.iter().zip(&mut times) {
            t.extend(time_runs(1, 0, || {
                exec.run(&inputs)?;
                Ok(())
            })?);
        }
    }
    Ok(times.into_iter().map(median).collect())
}

fn main() -> Result<()> {
    let BenchArgs {
        runs,
        threads,
        json,
    } = BenchArgs::from_env(20)?;
    let path = kiln_tests::lm::smollm2();
    if !path.exists() {
        bail!("{} is missing: run scripts/setup.sh", path.display());
    }
    let model = kiln_frontends::load_model(&path)
        .with_context(|| format!("cannot load {}", path.display()))?;
    let g = &model.graph;
    let layer = |p: &str| format!("model.layers.0.{p}.weight");
    let mut layers = Vec::new();
    for p in [
        "self_attn.q_proj",
        "self_attn.k_proj",
        "mlp.gate_proj",
        "mlp.down_proj",
    ] {
        let (v, rows, cols) = weight(g, &layer(p))?;
        layers.push((p.to_string(), v, rows, cols));
    }
    // The tied head multiplies by the embedding's transpose: [hidden, vocab].
    let (embed, vocab, hidden) = weight(g, "model.embed_tokens.weight")?;
    layers.push((
        "head (embed_tokensᵀ)".to_string(),
        transpose(&embed, vocab, hidden),
        hidden,
        vocab,
    ));
    drop(model);

    let mut rows = Vec::new();
    for (name, v, k, n) in &layers {
        let (k, n) = (*k, *n);
        let mut weights = vec![("f32".to_string(), Tensor::from_vec(vec![k, n], v.clone())?)];
        for f in FORMATS {
            let format = QuantFormat::parse(f)?;
            let packed = quantize_rtn(v, k, n, format)
                .with_context(|| format!("quantizing {name} to {f}"))?;
            weights.push((f.to_string(), Tensor::from_packed(&packed)));
        }
        for m in ROWS {
            // The large prefill products take long enough that fewer runs do.
            let runs = if m > 1 && k * n > 1 << 22 {
                runs.div_ceil(4).max(3)
            } else {
                runs
            };
            let seconds = time_cases(&weights, m, runs, threads)?;
            for ((format, w), seconds) in weights.iter().zip(seconds) {
                eprintln!("{name} {k}x{n} M={m} {format}: {:.1} us", seconds * 1e6);
                rows.push(Row {
                    layer: name.clone(),
                    k,
                    n,
                    m,
                    format: format.clone(),
                    weight_bytes: w.bytes().len(),
                    seconds,
                });
            }
        }
    }

    let f32_time = |r: &Row| {
        rows.iter()
            .find(|b| b.k == r.k && b.n == r.n && b.m == r.m && b.format == "f32")
            .map_or(f64::NAN, |b| b.seconds)
    };
    if json {
        let v: Vec<_> = rows
            .iter()
            .map(|r| {
                serde_json::json!({"layer": r.layer, "k": r.k, "n": r.n, "m": r.m,
                    "format": r.format, "weight_bytes": r.weight_bytes,
                    "median_s": r.seconds, "ratio_to_f32": r.seconds / f32_time(r)})
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
        "MatMul with packed weights (SmolLM2-135M layer 0 and head), {threads} threads, median of {runs} runs"
    );
    println!("| layer | K × N | M | weight | weight MB | µs | time / f32 | GB/s |");
    println!("|---|---|---:|---|---:|---:|---:|---:|");
    for r in &rows {
        let gbs = if r.m == 1 {
            format!("{:.1}", r.weight_bytes as f64 / r.seconds / 1e9)
        } else {
            "—".to_string()
        };
        println!(
            "| {} | {}×{} | {} | {} | {:.2} | {:.1} | {:.2} | {} |",
            r.layer,
            r.k,
            r.n,
            r.m,
            r.format,
            r.weight_bytes as f64 / 1e6,
            r.seconds * 1e6,
            r.seconds / f32_time(r),
            gbs
        );
    }
    Ok(())
}
