//! `kiln optimize`: model in, bundle out.

use crate::progress;
use anyhow::{Context, Result};
use kiln_passes::RunOptions;
use kiln_targets::bundle::BundleInfo;
use kiln_targets::compile::{self, Target};
use serde_json::json;
use std::path::PathBuf;
use std::time::Instant;

/// Arguments of `kiln optimize`.
#[derive(clap::Args)]
pub struct Args {
    /// The model to compile: a .onnx or .gguf file, or a Hugging Face folder
    /// (config.json and *.safetensors).
    pub model: PathBuf,
    /// Target device family.
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
    };
    let compiled = compile::compile(
        graph,
        target,
        &options,
        |i, name| {
            pb.set_position(i as u64);
            pb.set_message(name);
        },
        |pass, text| eprintln!("// ---- after {pass} ----\n{text}"),
    )
    .with_context(|| format!("{}: optimizing for {}", a.model.display(), a.target))?;
    pb.finish_and_clear();

    let info = BundleInfo {
        options: compiled.manifest_options(target),
        assets,
        ..info_source
    };
    let sp = progress::spinner(quiet, format!("writing {}", a.output.display()));
    let report = kiln_targets::bundle::write_bundle(&a.output, &compiled.graph, &info)?;
    sp.finish_and_clear();
    let (records, graph, nodes_before) =
        (&compiled.records, &compiled.graph, compiled.nodes_before);

    if a.json {
        let passes: Vec<_> = records
            .iter()
            .map(|r| {
                json!({"pass": r.pass, "changed": r.changed, "nodes_after": r.nodes_after,
                       "seconds": r.time.as_secs_f64(), "stats": r.stats})
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
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    if a.stats {
        println!("{:<22} {:>8} {:>10}  stats", "pass", "nodes", "ms");
        for r in records {
            let stats: Vec<String> = r.stats.iter().map(|(k, v)| format!("{k}={v}")).collect();
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
    Ok(())
}
