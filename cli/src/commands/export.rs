//! `kiln export`: a model or bundle out to another format.

use super::load;
use crate::progress;
use anyhow::{bail, Context, Result};
use serde_json::json;
use std::path::PathBuf;

/// Arguments of `kiln export`.
#[derive(clap::Args)]
pub struct Args {
    /// The model (file or folder) or bundle to export.
    pub model: PathBuf,
    /// Output format: `safetensors` (a Hugging Face folder).
    #[arg(long)]
    pub format: String,
    /// Where to write (a folder for `safetensors`).
    #[arg(short, long)]
    pub output: PathBuf,
    /// Print a JSON summary on stdout.
    #[arg(long)]
    pub json: bool,
    /// No progress display.
    #[arg(short, long)]
    pub quiet: bool,
}

/// Runs `kiln export`.
pub fn run(a: Args) -> Result<()> {
    if a.format != "safetensors" {
        bail!(
            "unknown export format '{}' (supported: safetensors)",
            a.format
        );
    }
    let quiet = a.quiet || a.json;
    let loaded = load(&a.model, quiet)?;
    let sp = progress::spinner(quiet, format!("writing {}", a.output.display()));
    let report =
        kiln_frontends::safetensors::export_folder(&loaded.graph, &loaded.assets, &a.output)
            .with_context(|| format!("{}: export as safetensors", a.model.display()))?;
    sp.finish_and_clear();
    if a.json {
        let out = json!({
            "output": a.output.display().to_string(),
            "format": a.format,
            "files": report.files,
            "tensors": report.tensors,
            "parameters": report.parameters,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!(
            "wrote {} ({}; {} tensors, {:.1} M parameters)",
            a.output.display(),
            report.files.join(", "),
            report.tensors,
            report.parameters as f64 / 1e6
        );
    }
    Ok(())
}
