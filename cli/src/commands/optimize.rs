//! `kiln optimize`: model in, bundle out.

use crate::progress;
use anyhow::{Context, Result};
use kiln_passes::fusion::FusionLimits;
use kiln_passes::quant::{
    quantize_graph, sample_windows, Calibration, Keep, QuantConfig, QuantProgress, QuantReport,
    QuantSpec,
};
use kiln_passes::RunOptions;
use kiln_targets::bundle::BundleInfo;
use kiln_targets::compile::{self, Stage, Target};
use serde_json::json;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Arguments of `kiln optimize`.
#[derive(clap::Args)]
pub struct Args {
    /// The model to compile: a .onnx or .gguf file, or a Hugging Face folder
    /// (config.json and *.safetensors).
    pub model: PathBuf,
    /// Target: `cpu` (the runtime's own kernels), or `webgpu`, `vulkan`,
    /// `metal` (generated GPU kernels run through wgpu; `metal` also carries
    /// them as MSL, `vulkan` as SPIR-V).
    #[arg(long, default_value = "cpu")]
    pub target: String,
    /// Where to write the bundle.
    #[arg(short, long)]
    pub output: PathBuf,
    /// Print a machine-readable JSON summary on stdout.
    #[arg(long)]
    pub json: bool,
    /// Print per-pass statistics.
    #[arg(long)]
    pub stats: bool,
    /// Print the graph's text form after this pass (repeatable).
    #[arg(long, value_name = "PASS")]
    pub dump_after: Vec<String>,
    /// Stop the pipeline after this pass.
    #[arg(long, value_name = "PASS")]
    pub stop_after: Option<String>,
    /// No progress display.
    #[arg(short, long)]
    pub quiet: bool,
    /// Leave out operator fusion.
    #[arg(long)]
    pub no_fuse: bool,
    /// Fusion: stop saturating after this many iterations.
    #[arg(long, default_value_t = 30, value_name = "N")]
    pub fuse_iterations: usize,
    /// Fusion: stop saturating once the e-graph holds this many e-nodes.
    #[arg(long, default_value_t = 200_000, value_name = "N")]
    pub fuse_nodes: usize,
    /// Fusion: stop saturating after this many seconds (a backstop: a run
    /// cut short by time is not reproducible, the other limits are).
    #[arg(long, default_value_t = 20.0, value_name = "SECONDS")]
    pub fuse_seconds: f64,
    /// Quantize the weights: METHOD:FORMAT with METHOD rtn, gptq, awq or
    /// awq+gptq and FORMAT w8, w4g32/64/128 or w3g32/64/128, `a` for zero
    /// points (e.g. gptq:w4g64, awq+gptq:w3g64a, rtn:w8).
    #[arg(long, value_name = "SPEC")]
    pub quant: Option<String>,
    /// Calibration text files (needed by gptq and awq; never the text you
    /// evaluate on).
    #[arg(long, value_name = "FILE", num_args = 1..)]
    pub calib: Vec<PathBuf>,
    /// Calibration sequences drawn from the text.
    #[arg(long, default_value_t = 32, value_name = "N")]
    pub calib_samples: usize,
    /// Tokens per calibration sequence.
    #[arg(long, default_value_t = 512, value_name = "L")]
    pub calib_len: usize,
    /// Seed of the calibration sample.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Keep weights whose name matches this pattern (`*`, `?`) in higher
    /// precision (repeatable; default: the token embedding and output head).
    #[arg(long, value_name = "PATTERN")]
    pub keep: Vec<String>,
    /// What kept weights become: f32, or a wider format such as w8.
    #[arg(long, default_value = "w8", value_name = "FORMAT")]
    pub keep_as: String,
}

impl Args {
    fn fusion_limits(&self) -> FusionLimits {
        FusionLimits {
            iterations: self.fuse_iterations,
            nodes: self.fuse_nodes,
            time: Duration::from_secs_f64(self.fuse_seconds.max(0.0)),
        }
    }
}

/// Runs `kiln optimize`.
pub fn run(a: Args) -> Result<()> {
    let target = Target::by_name(&a.target)?;
    let quiet = a.quiet || a.json;
    let start = Instant::now();
    let info_source = BundleInfo::for_source(target.name, &a.model)
        .with_context(|| format!("cannot read {}", a.model.display()))?;
    let sp = progress::spinner(quiet, format!("importing {}", a.model.display()));
    let model = kiln_frontends::load_model(&a.model)?;
    sp.finish_and_clear();
    let (graph, assets) = (model.graph, model.assets);

    let pb = progress::bar(quiet, compile::pipeline_len(target) as u64, "passes");
    let options = RunOptions {
        dump_after: a.dump_after.clone(),
        stop_after: a.stop_after.clone(),
        always_verify: false,
        skip: if a.no_fuse {
            vec!["fuse".to_string(), "fuse-gpu".to_string()]
        } else {
            Vec::new()
        },
        fusion_limits: Some(a.fusion_limits()),
    };
    let context = || format!("{}: optimizing for {}", a.model.display(), a.target);
    let cleanup_len = compile::stage_len(target, Stage::Cleanup);
    let compiled = compile::compile_stage(
        graph,
        target,
        Stage::Cleanup,
        &options,
        |i, name| {
            pb.set_position(i as u64);
            pb.set_message(name);
        },
        |pass, text| eprintln!("// ---- after {pass} ----\n{text}"),
    )
    .with_context(context)?;
    pb.set_position(cleanup_len as u64);

    // Quantize between the stages, so that fusion sees the packed weights.
    let mut graph = compiled.graph;
    let quant = match &a.quant {
        Some(spec) => {
            pb.finish_and_clear();
            Some(quantize(&a, spec, &mut graph, &assets, quiet)?)
        }
        None => None,
    };
    let fused = compile::compile_stage(
        graph,
        target,
        Stage::Fusion,
        &options,
        |i, name| {
            pb.set_position((cleanup_len + i) as u64);
            pb.set_message(name);
        },
        |pass, text| eprintln!("// ---- after {pass} ----\n{text}"),
    )
    .with_context(context)?;
    pb.finish_and_clear();
    let mut records = compiled.records;
    records.extend(fused.records);
    let compiled = compile::Compiled {
        graph: fused.graph,
        records,
        nodes_before: compiled.nodes_before,
    };
    let mut options = compiled.manifest_options(target);
    let graph = compiled.graph;
    let quant = match quant {
        Some((report, manifest)) => {
            options.insert("quant".to_string(), manifest);
            Some(report)
        }
        None => None,
    };
    // GPU targets carry the execution plan and its kernels.
    let mut assets = assets;
    let gpu = match target.gpu {
        Some(api) => {
            let sp = progress::spinner(quiet, "generating GPU kernels");
            let built = kiln_targets::gpu::build(&graph, api).with_context(|| {
                format!("{}: generating {} kernels", a.model.display(), a.target)
            })?;
            sp.finish_and_clear();
            options.insert("gpu".to_string(), json!(built.summary));
            assets.extend(built.assets);
            Some(built.summary)
        }
        None => None,
    };
    let info = BundleInfo {
        options,
        assets,
        ..info_source
    };
    let sp = progress::spinner(quiet, format!("writing {}", a.output.display()));
    let report = kiln_targets::bundle::write_bundle(&a.output, &graph, &info)?;
    sp.finish_and_clear();
    let report_files = match &quant {
        Some(q) => Some(crate::quant_report::write(&a.output, q)?),
        None => None,
    };
    let (records, graph, nodes_before) = (&compiled.records, &graph, compiled.nodes_before);

    if a.json {
        let passes: Vec<_> = records
            .iter()
            .map(|r| {
                let timings: std::collections::BTreeMap<&str, f64> = r
                    .timings
                    .iter()
                    .map(|(k, t)| (k.as_str(), t.as_secs_f64()))
                    .collect();
                json!({"pass": r.pass, "changed": r.changed, "nodes_after": r.nodes_after,
                       "seconds": r.time.as_secs_f64(), "stats": r.stats, "notes": r.notes,
                       "phase_seconds": timings})
            })
            .collect();
        let out = json!({
            "bundle": a.output.display().to_string(),
            "target": a.target,
            "bytes": report.file_size,
            "weights_bytes": report.weights_bytes,
            "sha256": report.sha256,
            "nodes_before": nodes_before,
            "nodes_after": graph.nodes.len(),
            "seconds": start.elapsed().as_secs_f64(),
            "passes": passes,
            "gpu": gpu,
            "quant": quant.as_ref().map(|q| json!({
                "spec": q.spec,
                "weights_bytes_before": q.bytes_before,
                "weights_bytes_after": q.bytes_after,
                "seconds": q.seconds,
                "report": report_files.as_ref().map(|(j, _)| j.display().to_string()),
                "chart": report_files.as_ref().map(|(_, s)| s.display().to_string()),
            })),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    if a.stats {
        println!("{:<22} {:>8} {:>10}  stats", "pass", "nodes", "ms");
        for r in records {
            let stats: Vec<String> = r
                .notes
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .chain(r.stats.iter().map(|(k, v)| format!("{k}={v}")))
                .chain(
                    r.timings
                        .iter()
                        .map(|(k, t)| format!("{k}_ms={:.1}", t.as_secs_f64() * 1e3)),
                )
                .collect();
            println!(
                "{:<22} {:>8} {:>10.2}  {}",
                r.pass,
                r.nodes_after,
                r.time.as_secs_f64() * 1e3,
                stats.join(" ")
            );
        }
    }
    println!(
        "wrote {} ({} target, {:.2} MiB, {} → {} nodes) in {:.2}s",
        a.output.display(),
        a.target,
        report.file_size as f64 / (1024.0 * 1024.0),
        nodes_before,
        graph.nodes.len(),
        start.elapsed().as_secs_f64()
    );
    if let Some(g) = &gpu {
        let host: Vec<String> = g
            .host_ops
            .iter()
            .map(|(op, n)| format!("{op}×{n}"))
            .collect();
        println!(
            "GPU plan: {} kernel launches ({} distinct kernels), {} buffer aliases, {} host steps{}",
            g.kernel_steps,
            g.kernels,
            g.alias_steps,
            g.host_ops.values().sum::<usize>(),
            if host.is_empty() { String::new() } else { format!(" ({})", host.join(", ")) }
        );
    }
    if let (Some(q), Some((json_path, svg_path))) = (&quant, &report_files) {
        let worst = q
            .layers
            .iter()
            .filter_map(|l| l.output_error.map(|e| (e, l.name.as_str())))
            .fold(None::<(f64, &str)>, |m, (e, n)| match m {
                Some((me, _)) if me >= e => m,
                _ => Some((e, n)),
            });
        println!(
            "quantized {} weights with {} in {:.1}s: {:.2} → {:.2} MiB of weights{}",
            q.layers.iter().filter(|l| l.format != "f32").count(),
            q.spec,
            q.seconds,
            q.bytes_before as f64 / (1024.0 * 1024.0),
            q.bytes_after as f64 / (1024.0 * 1024.0),
            worst.map_or(String::new(), |(e, n)| format!(
                "; largest output error {e:.2e} ({n})"
            )),
        );
        println!("report: {} and {}", json_path.display(), svg_path.display());
    }
    Ok(())
}

/// Tokenizes the calibration files, draws the sample and quantizes `graph`;
/// returns the report and what the manifest records (no times, so the
/// bundle stays reproducible).
fn quantize(
    a: &Args,
    spec: &str,
    graph: &mut kiln_ir::Graph,
    assets: &std::collections::BTreeMap<String, Vec<u8>>,
    quiet: bool,
) -> Result<(QuantReport, serde_json::Value)> {
    let spec = QuantSpec::parse(spec)?;
    let mut config = QuantConfig::new(spec);
    if !a.keep.is_empty() {
        config.keep_patterns = a.keep.clone();
    }
    config.keep = Keep::parse(&a.keep_as)?;
    let calibration = if a.calib.is_empty() {
        if spec.method.needs_calibration() {
            anyhow::bail!("--quant {spec} needs calibration text: add --calib FILE...");
        }
        None
    } else {
        let loaded = super::Loaded {
            graph: kiln_ir::Graph::default(),
            bundle: None,
            assets: assets.clone(),
        };
        let tokenizer = loaded.tokenizer(&a.model)?;
        let sp = progress::spinner(quiet, "tokenizing calibration text");
        let mut tokens: Vec<u32> = Vec::new();
        let mut files = Vec::new();
        for path in &a.calib {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read calibration file {}", path.display()))?;
            let ids = tokenizer
                .encode(&text, false)
                .with_context(|| format!("{}: cannot tokenize", path.display()))?;
            files.push(json!({
                "name": path.file_name().map(|n| n.to_string_lossy().to_string()),
                "sha256": kiln_targets::bundle::sha256_source(path)?,
                "tokens": ids.len(),
            }));
            tokens.extend(ids);
        }
        sp.finish_and_clear();
        let sequences = sample_windows(&tokens, a.calib_samples, a.calib_len, a.seed)
            .with_context(|| format!("calibration files: {}", a.calib.len()))?;
        Some((Calibration { sequences }, files, tokens.len()))
    };
    let pb = progress::bar(quiet, 1, "quantizing");
    let mut on_progress = |p: QuantProgress| {
        pb.set_length(p.total as u64);
        pb.set_position(p.done as u64);
        pb.set_message(p.what);
    };
    let report = quantize_graph(
        graph,
        &config,
        calibration.as_ref().map(|c| &c.0),
        &mut on_progress,
    )
    .with_context(|| format!("{}: quantizing with {spec}", a.model.display()))?;
    pb.finish_and_clear();
    let manifest = json!({
        "spec": spec.to_string(),
        "keep": config.keep_patterns,
        "keep_as": a.keep_as,
        "calibration": calibration.as_ref().map(|(c, files, total)| json!({
            "files": files,
            "tokens": total,
            "samples": c.sequences.len(),
            "len": a.calib_len,
            "seed": a.seed,
        })),
        "layers": report.layers.iter().map(|l| json!({
            "name": l.name, "format": l.format, "method": l.method,
            "output_error": l.output_error, "weight_error": l.weight_error,
        })).collect::<Vec<_>>(),
    });
    Ok((report, manifest))
}
