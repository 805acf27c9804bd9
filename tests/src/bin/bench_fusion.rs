//! Benchmark: the operator-fusion pass on the real models.
//!
//! `cargo run --release -p kiln-tests --bin bench-fusion -- [--quick] [--profile] [--threads T]`
//!
//! For ViT-S/14 (ONNX), all-MiniLM-L6-v2 (BERT) and SmolLM2-135M (GGUF,
//! dequantized to f32), each first run through the CPU target's cleanup
//! stage, prints markdown tables of:
//!
//! 1. what fusion does to the graph: nodes and kernel launches before and
//!    after the CPU target's fusion stage, the e-graph's size, why
//!    saturation stopped, saturation and extraction times (median of 5 runs
//!    of the pass on copies of the graph), the estimated cost of the modelled
//!    nodes, and the rules that fired;
//! 2. the CPU executor's time on the unfused and the fused graph, measured
//!    in the same process with interleaved runs, and the largest difference
//!    between their outputs;
//! 3. how fusion time grows with depth: SmolLM2 cut to 6, 12 and 24 layers.
//!
//! `--quick` runs fewer repetitions; `--profile` adds, per model, the
//! executor's time by op kind before and after fusion. Needs the assets
//! from scripts/setup.sh.

use anyhow::{bail, Context, Result};
use kiln_frontends::tokenizer::Tokenizer;
use kiln_ir::{Graph, Tensor};
use kiln_passes::fusion::{FuseGraph, FusionStats};
use kiln_runtime::cpu::{CpuExecutor, ExecOptions, RunResult};
use kiln_targets::compile::{compile_stage, Stage, Target};
use kiln_tests::bench::median;
use kiln_tests::lm::{minilm, moby_dick, smollm2, tokenizer};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

/// Ops that only reinterpret their input's shape or pass it through: no
/// kernel runs for them, so they are not counted as launches.
const VIEW_OPS: &[&str] = &[
    "Reshape",
    "Flatten",
    "Squeeze",
    "Unsqueeze",
    "Identity",
    "Dropout",
    "Shape",
    "Size",
];

/// Depths of the SmolLM2 slices of the scaling table.
const SLICES: &[usize] = &[6, 12, 24];

/// Outputs differing by more than this fraction of the largest reference
/// magnitude get a warning (fused kernels only reorder f32 arithmetic).
const REL_TOLERANCE: f64 = 1e-3;

struct Args {
    quick: bool,
    profile: bool,
    threads: usize,
}

impl Args {
    fn from_env() -> Result<Self> {
        let mut a = Args {
            quick: false,
            profile: false,
            threads: 2,
        };
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--quick" => a.quick = true,
                "--profile" => a.profile = true,
                "--threads" => a.threads = args.next().context("--threads T")?.parse()?,
                other => {
                    bail!("unknown argument `{other}` (expected --quick, --profile, --threads T)")
                }
            }
        }
        Ok(a)
    }

    /// Runs of the fusion pass whose times are reported as a median.
    fn fuse_runs(&self) -> usize {
        if self.quick {
            3
        } else {
            5
        }
    }

    /// Untimed executor runs of each graph before timing.
    fn warmup(&self) -> usize {
        if self.quick {
            1
        } else {
            2
        }
    }

    /// Timed executor runs of each graph.
    fn exec_runs(&self) -> usize {
        if self.quick {
            3
        } else {
            10
        }
    }
}

/// Runs one stage of the CPU target's pipeline.
fn cpu_stage(graph: Graph, stage: Stage) -> Result<Graph> {
    let target = Target::by_name("cpu")?;
    let compiled = compile_stage(
        graph,
        target,
        stage,
        &Default::default(),
        |_, _| {},
        |_, _| {},
    )
    .with_context(|| format!("the cpu target's {stage:?} stage failed"))?;
    Ok(compiled.graph)
}

fn launches(g: &Graph) -> usize {
    g.nodes
        .iter()
        .filter(|n| !VIEW_OPS.contains(&n.op.name()))
        .count()
}

/// Change from `before` to `after`, as a signed percentage.
fn change(before: f64, after: f64) -> String {
    if before == 0.0 {
        return "n/a".to_string();
    }
    format!("{:+.1}%", (after - before) / before * 100.0)
}

/// What running the fusion pass on one graph gave.
struct FuseMeasure {
    /// Statistics of the first run (the counts do not vary between runs).
    stats: FusionStats,
    saturation_ms: f64,
    extraction_ms: f64,
    /// Median of saturation + extraction, per run.
    total_ms: f64,
    /// Wall time of the whole `fuse` call (bridge and costing included).
    wall_ms: f64,
}

fn measure_fusion(g: &Graph, runs: usize) -> FuseMeasure {
    let pass = FuseGraph::default();
    let (mut sat, mut ext, mut tot, mut wall) = (vec![], vec![], vec![], vec![]);
    let mut first = None;
    for _ in 0..runs {
        let mut copy = g.clone();
        let t = Instant::now();
        let s = pass.fuse(&mut copy);
        wall.push(t.elapsed().as_secs_f64() * 1e3);
        let (a, b) = (
            s.saturation_time.as_secs_f64() * 1e3,
            s.extraction_time.as_secs_f64() * 1e3,
        );
        sat.push(a);
        ext.push(b);
        tot.push(a + b);
        first.get_or_insert(s);
    }
    FuseMeasure {
        stats: first.expect("at least one fusion run"),
        saturation_ms: median(sat),
        extraction_ms: median(ext),
        total_ms: median(tot),
        wall_ms: median(wall),
    }
}

/// What fusion did to one model's graph (counts only: the graphs are
/// dropped once measured, SmolLM2 in f32 takes half a gigabyte per copy).
struct ModelReport {
    name: String,
    nodes: (usize, usize),
    launches: (usize, usize),
    ops: (BTreeMap<&'static str, usize>, BTreeMap<&'static str, usize>),
    fusion: FuseMeasure,
}

impl ModelReport {
    /// Measures the fusion pass on `unfused`; returns the report and the
    /// graph after the CPU target's whole fusion stage.
    fn new(name: &str, unfused: &Graph, fuse_runs: usize) -> Result<(Self, Graph)> {
        eprintln!("{name}: {} nodes, fusing", unfused.nodes.len());
        let fusion = measure_fusion(unfused, fuse_runs);
        let after = cpu_stage(unfused.clone(), Stage::Fusion)?;
        let r = ModelReport {
            name: name.to_string(),
            nodes: (unfused.nodes.len(), after.nodes.len()),
            launches: (launches(unfused), launches(&after)),
            ops: (unfused.op_histogram(), after.op_histogram()),
            fusion,
        };
        Ok((r, after))
    }

    fn print(&self) {
        let s = &self.fusion.stats;
        let (nb, na) = self.nodes;
        let (lb, la) = self.launches;
        println!("### {}\n", self.name);
        println!("| | before | after | change |");
        println!("|---|---:|---:|---:|");
        println!("| nodes | {nb} | {na} | {} |", change(nb as f64, na as f64));
        println!(
            "| kernel launches | {lb} | {la} | {} |",
            change(lb as f64, la as f64)
        );
        println!(
            "| estimated cost of the modelled nodes (ms) | {:.3} | {:.3} | {} |",
            s.cost_before / 1e6,
            s.cost_after / 1e6,
            change(s.cost_before, s.cost_after)
        );
        println!();
        println!("| modelled nodes | e-nodes | e-classes | iterations | stop | saturation ms | extraction ms | whole pass ms | folded | kept input | tree fallback |");
        println!("|---:|---:|---:|---:|---|---:|---:|---:|---:|---|---|");
        println!(
            "| {} | {} | {} | {} | {} | {:.1} | {:.1} | {:.1} | {} | {} | {} |",
            s.modelled_nodes,
            s.enodes,
            s.eclasses,
            s.iterations,
            s.stop.name(),
            self.fusion.saturation_ms,
            self.fusion.extraction_ms,
            self.fusion.wall_ms,
            s.folded,
            yes_no(s.kept_input),
            yes_no(s.tree_fallback),
        );
        println!();
        let mut fired: Vec<(&str, usize)> = s
            .fired
            .iter()
            .filter(|(_, &n)| n > 0)
            .map(|(&r, &n)| (r, n))
            .collect();
        fired.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        let fired: Vec<String> = fired.iter().map(|(r, n)| format!("{r} ×{n}")).collect();
        println!(
            "Rules fired: {}\n",
            if fired.is_empty() {
                "none".to_string()
            } else {
                fired.join(", ")
            }
        );
        let (hb, ha) = &self.ops;
        let mut ops: Vec<&str> = hb.keys().chain(ha.keys()).copied().collect();
        ops.sort_unstable();
        ops.dedup();
        let changed: Vec<String> = ops
            .iter()
            .filter_map(|op| {
                let (b, a) = (
                    hb.get(op).copied().unwrap_or(0),
                    ha.get(op).copied().unwrap_or(0),
                );
                (b != a).then(|| format!("{op} {b}→{a}"))
            })
            .collect();
        println!(
            "Ops whose count changed: {}\n",
            if changed.is_empty() {
                "none".to_string()
            } else {
                changed.join(", ")
            }
        );
    }
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

/// Executor times on the unfused and the fused graph, and how far apart their outputs are.
struct ExecReport {
    model: String,
    input: String,
    before_ms: f64,
    after_ms: f64,
    max_abs_diff: f64,
    max_abs_ref: f64,
    /// Mean ms per run spent in each op kind, with its node count: unfused, fused.
    profile: (OpProfile, OpProfile),
}

/// Node count and mean ms per run, by op name.
type OpProfile = BTreeMap<&'static str, (usize, f64)>;

/// Adds one run's node times to `p`, weighted by `1 / runs`.
fn add_profile(p: &mut OpProfile, r: &RunResult, runs: usize) {
    let mut seen: BTreeMap<&'static str, usize> = BTreeMap::new();
    for t in r.node_times.as_deref().unwrap_or_default() {
        *seen.entry(t.op).or_default() += 1;
        p.entry(t.op).or_default().1 += t.seconds * 1e3 / runs as f64;
    }
    for (op, n) in seen {
        p.entry(op).or_default().0 = n;
    }
}

/// Times both graphs on the same inputs, alternating between them (and
/// which goes first) so that drifts in machine load hit both alike.
fn compare_exec(
    model: &str,
    input: String,
    before: &Graph,
    after: &Graph,
    inputs: &BTreeMap<String, Tensor>,
    args: &Args,
) -> Result<ExecReport> {
    eprintln!("{model}: timing {input}");
    let opts = ExecOptions {
        threads: Some(args.threads),
    };
    let eb = CpuExecutor::new(before.clone(), opts.clone())
        .with_context(|| format!("{model}: executor on the unfused graph"))?;
    let ea = CpuExecutor::new(after.clone(), opts)
        .with_context(|| format!("{model}: executor on the fused graph"))?;
    let mut out_b = None;
    let mut out_a = None;
    for _ in 0..args.warmup().max(1) {
        out_b = Some(
            eb.run(inputs)
                .with_context(|| format!("{model}: unfused run"))?,
        );
        out_a = Some(
            ea.run(inputs)
                .with_context(|| format!("{model}: fused run"))?,
        );
    }
    let (mut tb, mut ta) = (vec![], vec![]);
    let (mut pb, mut pa) = (OpProfile::new(), OpProfile::new());
    let runs = args.exec_runs();
    let timed = |e: &CpuExecutor, times: &mut Vec<f64>, p: &mut OpProfile| -> Result<()> {
        let t = Instant::now();
        let r = e.run(inputs)?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
        add_profile(p, &r, runs);
        Ok(())
    };
    for i in 0..runs {
        if i % 2 == 0 {
            timed(&eb, &mut tb, &mut pb)?;
            timed(&ea, &mut ta, &mut pa)?;
        } else {
            timed(&ea, &mut ta, &mut pa)?;
            timed(&eb, &mut tb, &mut pb)?;
        }
    }
    let (max_abs_diff, max_abs_ref) = output_diff(
        model,
        &out_b.context("no unfused run")?,
        &out_a.context("no fused run")?,
    );
    Ok(ExecReport {
        model: model.to_string(),
        input,
        before_ms: median(tb),
        after_ms: median(ta),
        max_abs_diff,
        max_abs_ref,
        profile: (pb, pa),
    })
}

/// Mean time per op kind of one model, unfused against fused, largest first.
fn print_profile(e: &ExecReport) {
    let (pb, pa) = &e.profile;
    let mut ops: Vec<&str> = pb.keys().chain(pa.keys()).copied().collect();
    ops.sort_unstable();
    ops.dedup();
    let get = |p: &OpProfile, op: &str| p.get(op).copied().unwrap_or((0, 0.0));
    ops.sort_by(|a, b| {
        let key = |op: &str| get(pb, op).1.max(get(pa, op).1);
        key(b).total_cmp(&key(a))
    });
    println!(
        "### {}: executor time by op kind (mean of the timed runs)\n",
        e.model
    );
    println!("| op | unfused nodes | unfused ms | fused nodes | fused ms |");
    println!("|---|---:|---:|---:|---:|");
    for op in ops {
        let ((nb, tb), (na, ta)) = (get(pb, op), get(pa, op));
        println!("| {op} | {nb} | {tb:.2} | {na} | {ta:.2} |");
    }
    let total = |p: &OpProfile| p.values().map(|v| v.1).sum::<f64>();
    println!(
        "| total in kernels | | {:.2} | | {:.2} |\n",
        total(pb),
        total(pa)
    );
}

/// The largest absolute difference over all outputs, and the largest
/// magnitude of the unfused outputs; outputs that cannot be compared give
/// infinity (and a printed reason).
fn output_diff(model: &str, before: &RunResult, after: &RunResult) -> (f64, f64) {
    let after: BTreeMap<&str, &Tensor> =
        after.outputs.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let (mut diff, mut mag) = (0f64, 0f64);
    for (name, b) in &before.outputs {
        let Some(a) = after.get(name.as_str()) else {
            println!("WARNING: {model}: output `{name}` is missing after fusion");
            diff = f64::INFINITY;
            continue;
        };
        if a.dims() != b.dims() {
            println!(
                "WARNING: {model}: output `{name}` has dims {:?} after fusion, {:?} before",
                a.dims(),
                b.dims()
            );
            diff = f64::INFINITY;
            continue;
        }
        for (x, y) in b.to_f64_vec().iter().zip(a.to_f64_vec()) {
            mag = mag.max(x.abs());
            // NaN compares false: make it count as a difference.
            let d = (x - y).abs();
            diff = if d.is_nan() {
                f64::INFINITY
            } else {
                diff.max(d)
            };
        }
    }
    (diff, mag)
}

/// The ViT image: the set-up's preprocessed photo when present, else a
/// smooth deterministic image of ImageNet-normalised values.
fn vit_input(g: &Graph, cache: &Path) -> Result<(String, Tensor, String)> {
    let path = cache.join("data/vit_input.safetensors");
    if path.exists() {
        let bytes =
            std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let st = safetensors::SafeTensors::deserialize(&bytes)
            .with_context(|| format!("{} is not a safetensors file", path.display()))?;
        let (name, view) = st
            .tensors()
            .into_iter()
            .next()
            .with_context(|| format!("{} holds no tensor", path.display()))?;
        if view.dtype() != safetensors::Dtype::F32 {
            bail!(
                "{}: tensor `{name}` is {:?}, expected F32",
                path.display(),
                view.dtype()
            );
        }
        let t = Tensor::from_raw(kiln_ir::DType::F32, view.shape().to_vec(), view.data())
            .with_context(|| format!("{}: tensor `{name}`", path.display()))?;
        let desc = format!("1 photo {:?}", t.dims());
        return Ok((name, t, desc));
    }
    let name = g
        .inputs
        .first()
        .map(|&v| g.value(v).name.clone())
        .context("the ViT graph has no input")?;
    let (c, h, w) = (3usize, 224usize, 224usize);
    let mut data = Vec::with_capacity(c * h * w);
    for ch in 0..c {
        for y in 0..h {
            for x in 0..w {
                let (fx, fy) = (x as f32 / w as f32, y as f32 / h as f32);
                let v = 0.5
                    + 0.25 * (6.0 * fx + ch as f32).sin() * (4.0 * fy).cos()
                    + 0.2 * (fx - 0.5) * (fy - 0.5);
                data.push((v - 0.45) / 0.226);
            }
        }
    }
    let t = Tensor::from_vec(vec![1, c, h, w], data)?;
    Ok((name, t, "1 synthetic image [1, 3, 224, 224]".to_string()))
}

/// Moby Dick from its first chapter on (the front matter is mostly lists).
fn story(text: &str) -> &str {
    text.find("Call me Ishmael")
        .map(|i| &text[i..])
        .unwrap_or(text)
}

/// Eight consecutive sentences of the text, tokenized with special tokens
/// and padded to the longest.
fn minilm_inputs(tok: &Tokenizer, text: &str) -> Result<(BTreeMap<String, Tensor>, String)> {
    let flat = story(text).split_whitespace().collect::<Vec<_>>().join(" ");
    let sentences: Vec<&str> = flat
        .split_inclusive(['.', '?', '!'])
        .map(str::trim)
        .filter(|s| s.split(' ').count() >= 4)
        .take(8)
        .collect();
    if sentences.len() < 8 {
        bail!("{}: fewer than 8 sentences found", moby_dick().display());
    }
    let ids = tok.encode_batch(&sentences, true)?;
    let seq = ids.iter().map(Vec::len).max().unwrap_or(0);
    let pad = tok
        .pad_id()
        .or_else(|| tok.token_to_id("[PAD]"))
        .unwrap_or(0) as i64;
    let batch = ids.len();
    let (mut flat_ids, mut mask) = (
        Vec::with_capacity(batch * seq),
        Vec::with_capacity(batch * seq),
    );
    for row in &ids {
        flat_ids.extend(row.iter().map(|&t| t as i64));
        flat_ids.extend(std::iter::repeat_n(pad, seq - row.len()));
        mask.extend(std::iter::repeat_n(1i64, row.len()));
        mask.extend(std::iter::repeat_n(0i64, seq - row.len()));
    }
    let dims = vec![batch, seq];
    let inputs = BTreeMap::from([
        (
            "input_ids".to_string(),
            Tensor::from_vec(dims.clone(), flat_ids)?,
        ),
        (
            "attention_mask".to_string(),
            Tensor::from_vec(dims.clone(), mask)?,
        ),
        (
            "token_type_ids".to_string(),
            Tensor::from_vec(dims, vec![0i64; batch * seq])?,
        ),
    ]);
    let lens: Vec<String> = ids.iter().map(|r| r.len().to_string()).collect();
    Ok((
        inputs,
        format!(
            "8 sentences, padded to {seq} tokens (lengths {})",
            lens.join(", ")
        ),
    ))
}

/// The first `seq` tokens of the story.
fn smollm2_ids(tok: &Tokenizer, text: &str, seq: usize) -> Result<Vec<i64>> {
    let s = story(text);
    let end = s.char_indices().nth(8 * seq).map_or(s.len(), |(i, _)| i);
    let ids = tok.encode(&s[..end], true)?;
    if ids.len() < seq {
        bail!(
            "{}: only {} tokens in the first {end} bytes, expected {seq}",
            moby_dick().display(),
            ids.len()
        );
    }
    Ok(ids[..seq].iter().map(|&t| t as i64).collect())
}

/// One row of the scaling table.
struct ScaleRow {
    layers: String,
    per_layer_of: usize,
    nodes: usize,
    enodes: usize,
    stop: &'static str,
    total_ms: f64,
}

impl ScaleRow {
    fn new(layers: usize, label: String, g: &Graph, m: &FuseMeasure) -> Self {
        ScaleRow {
            layers: label,
            per_layer_of: layers,
            nodes: g.nodes.len(),
            enodes: m.stats.enodes,
            stop: m.stats.stop.name(),
            total_ms: m.total_ms,
        }
    }
}

/// The number of decoder layers in a GGUF import's `config.json` asset.
fn layer_count(model: &kiln_frontends::Model) -> Option<usize> {
    let cfg: serde_json::Value = serde_json::from_slice(model.assets.get("config.json")?).ok()?;
    cfg.get("num_hidden_layers")?.as_u64().map(|n| n as usize)
}

fn import(path: &Path) -> Result<kiln_frontends::Model> {
    kiln_frontends::load_model(path).with_context(|| format!("cannot import {}", path.display()))
}

fn main() -> Result<()> {
    let args = Args::from_env()?;
    let cache = kiln_tests::kiln_cache();
    let vit = cache.join("models/vit_s_focus.onnx");
    for p in [&vit, &minilm(), &smollm2(), &moby_dick()] {
        if !p.exists() {
            bail!("{} is missing: run scripts/setup.sh", p.display());
        }
    }
    let text = std::fs::read_to_string(moby_dick())
        .with_context(|| format!("cannot read {}", moby_dick().display()))?;
    let started = Instant::now();
    let (mut models, mut execs, mut notes, mut scaling) = (vec![], vec![], vec![], vec![]);

    // Each model's graphs live only inside its block.
    {
        let unfused = cpu_stage(import(&vit)?.graph, Stage::Cleanup)?;
        let (r, fused) =
            ModelReport::new("ViT-S/14 (vit_s_focus.onnx)", &unfused, args.fuse_runs())?;
        models.push(r);
        let (name, image, desc) = vit_input(&unfused, &cache)?;
        let inputs = BTreeMap::from([(name, image)]);
        execs.push(compare_exec(
            "ViT-S/14", desc, &unfused, &fused, &inputs, &args,
        )?);
    }
    {
        let model = import(&minilm())?;
        let tok = tokenizer(&model);
        let unfused = cpu_stage(model.graph, Stage::Cleanup)?;
        let (r, fused) = ModelReport::new("all-MiniLM-L6-v2", &unfused, args.fuse_runs())?;
        models.push(r);
        let (inputs, desc) = minilm_inputs(&tok, &text)?;
        execs.push(compare_exec(
            "all-MiniLM-L6-v2",
            desc,
            &unfused,
            &fused,
            &inputs,
            &args,
        )?);
    }
    {
        let model = import(&smollm2())?;
        let tok = tokenizer(&model);
        let layers = layer_count(&model);
        let unfused = cpu_stage(model.graph, Stage::Cleanup)?;
        let (r, fused) = ModelReport::new("SmolLM2-135M (f32)", &unfused, args.fuse_runs())?;
        if let Some(n) = layers {
            scaling.push(ScaleRow::new(n, format!("{n} (all)"), &unfused, &r.fusion));
        }
        models.push(r);
        let names: Vec<String> = unfused
            .inputs
            .iter()
            .map(|&v| unfused.value(v).name.clone())
            .collect();
        if names.iter().any(|n| n.contains("past")) {
            bail!(
                "SmolLM2's graph takes past key/values ({}); this benchmark feeds input_ids only",
                names.join(", ")
            );
        }
        notes.push(format!(
            "SmolLM2's graph takes no past key/values (inputs: {}): every call is a full \
             prefill, so no separate decode step is timed.",
            names.join(", ")
        ));
        let seq = 128;
        let ids = smollm2_ids(&tok, &text, seq)?;
        let inputs = BTreeMap::from([(
            "input_ids".to_string(),
            Tensor::from_vec(vec![1, seq], ids)?,
        )]);
        execs.push(compare_exec(
            "SmolLM2-135M",
            format!("prefill {seq} tokens of Moby Dick"),
            &unfused,
            &fused,
            &inputs,
            &args,
        )?);
    }
    for &n in SLICES {
        eprintln!("SmolLM2 cut to {n} layers: fusing");
        let model = kiln_frontends::gguf_llama::import_layers(&smollm2(), Some(n))
            .with_context(|| format!("cannot import {} ({n} layers)", smollm2().display()))?;
        let g = cpu_stage(model.graph, Stage::Cleanup)?;
        let m = measure_fusion(&g, args.fuse_runs());
        scaling.push(ScaleRow::new(n, n.to_string(), &g, &m));
    }
    scaling.sort_by_key(|r| r.per_layer_of);

    println!("# Operator fusion on the CPU target\n");
    println!(
        "Fusion times: median of {} runs of the pass on copies of the graph. Executor: {} threads, \
         {} warm-up and {} timed runs of each graph, interleaved.{}\n",
        args.fuse_runs(),
        args.threads,
        args.warmup().max(1),
        args.exec_runs(),
        if args.quick { " (--quick)" } else { "" }
    );
    println!("## 1. What fusion does to the graph\n");
    println!(
        "Before: after the cpu target's cleanup stage. After: after its fusion stage (fuse, \
         fold-constants, dead-code, infer-shapes). Kernel launches leave out pure views ({}). \
         Estimated costs are the pass's cost model (ns, shown in ms) over the nodes it models.\n",
        VIEW_OPS.join(", ")
    );
    for m in &models {
        m.print();
    }

    println!("## 2. CPU executor, unfused vs fused\n");
    println!(
        "| model | input | unfused ms | fused ms | speed-up | max abs diff | max abs output |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|");
    for e in &execs {
        println!(
            "| {} | {} | {:.1} | {:.1} | {:.2}× | {:.2e} | {:.3} |",
            e.model,
            e.input,
            e.before_ms,
            e.after_ms,
            e.before_ms / e.after_ms,
            e.max_abs_diff,
            e.max_abs_ref
        );
    }
    println!();
    for e in &execs {
        let limit = REL_TOLERANCE * e.max_abs_ref.max(1.0);
        if e.max_abs_diff.is_nan() || e.max_abs_diff > limit {
            println!(
                "WARNING: {}: outputs differ by {:.3e} after fusion (limit {limit:.3e})",
                e.model, e.max_abs_diff
            );
        }
    }
    for n in &notes {
        println!("{n}");
    }
    println!();
    if args.profile {
        for e in &execs {
            print_profile(e);
        }
    }

    println!("## 3. Fusion time against depth (SmolLM2, cleanup stage, then the pass)\n");
    println!("| layers | nodes | e-nodes | stop | saturation + extraction ms | ms per layer |");
    println!("|---:|---:|---:|---|---:|---:|");
    for r in &scaling {
        println!(
            "| {} | {} | {} | {} | {:.1} | {:.2} |",
            r.layers,
            r.nodes,
            r.enodes,
            r.stop,
            r.total_ms,
            r.total_ms / r.per_layer_of as f64
        );
    }
    println!(
        "\nTotal benchmark time: {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
