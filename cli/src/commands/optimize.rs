//! `kiln optimize`: model in, bundle out.

use crate::progress;
use anyhow::{bail, Context, Result};
use kiln_passes::{PassManager, RunOptions};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

/// Targets this build can compile for.
const TARGETS: &[&str] = &["cpu"];

/// Arguments of `kiln optimize`.
#[derive(clap::Args)]
pub struct Args {
    /// The model to compile (ONNX).
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
    if !TARGETS.contains(&a.target.as_str()) {
        bail!("unknown target `{}` (this build supports: {})", a.target, TARGETS.join(", "));
    }
    let quiet = a.quiet || a.json;
    let start = Instant::now();
    let source_sha256 = kiln_targets::bundle::sha256_file(&a.model)
        .with_context(|| format!("cannot read {}", a.model.display()))?;
    let sp = progress::spinner(quiet, format!("importing {}", a.model.display()));
    let mut graph = kiln_frontends::load_model(&a.model)?;
    sp.finish_and_clear();
    let nodes_before = graph.nodes.len();

    let pipeline_name = a.target.as_str();
    let mut pm = PassManager::new(kiln_passes::pipeline(pipeline_name)?);
    let pb = progress::bar(quiet, pm.pass_names().len() as u64, "passes");
    let options = RunOptions {
        dump_after: a.dump_after.clone(),
        stop_after: a.stop_after.clone(),
        always_verify: false,
    };
    let records = pm
        .run(
            &mut graph,
            &options,
            |i, name| {
                pb.set_position(i as u64);
                pb.set_message(name);
            },
            |pass, text| eprintln!("// ---- after {pass} ----\n{text}"),
        )
        .with_context(|| format!("{}: optimizing for {}", a.model.display(), a.target))?;
    pb.finish_and_clear();

    // Times stay out of the bundle: the same input must give the same bytes.
    let passes_json: Vec<_> = records
        .iter()
        .map(|r| json!({"pass": r.pass, "changed": r.changed, "nodes_after": r.nodes_after, "stats": r.stats}))
        .collect();
    let mut bundle_options = BTreeMap::new();
    bundle_options.insert("pipeline".to_string(), json!(pipeline_name));
    bundle_options.insert("passes".to_string(), json!(passes_json));
    bundle_options.insert("nodes_before".to_string(), json!(nodes_before));
    let source_name = a
        .model
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let info = kiln_targets::bundle::BundleInfo {
        target: a.target.clone(),
        source_name,
        source_sha256,
        options: bundle_options,
    };
    let sp = progress::spinner(quiet, format!("writing {}", a.output.display()));
    let report = kiln_targets::bundle::write_bundle(&a.output, &graph, &info)?;
    sp.finish_and_clear();

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
        for r in &records {
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
