//! `kiln export`: a model or bundle out to another format.

use super::load;
use crate::progress;
use anyhow::{bail, Context, Result};
use kiln_frontends::gguf::export::{file_type_name, TensorReport};
use kiln_frontends::gguf::{GgmlType, GgufExportOptions, GgufType};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Arguments of `kiln export`.
#[derive(clap::Args)]
pub struct Args {
    /// The model (file or folder) or bundle to export.
    pub model: PathBuf,
    /// Output format: `safetensors` (a Hugging Face folder) or `gguf` (a
    /// llama.cpp file; LLaMA-family models).
    #[arg(long)]
    pub format: String,
    /// Where to write (a folder for `safetensors`, a file for `gguf`).
    #[arg(short, long)]
    pub output: PathBuf,
    /// GGUF type of the 2-D weights: `auto` (packed weights in the block
    /// type their codes fit, f32 weights in Q8_0), or `f32`, `f16`, `q8_0`,
    /// `q4_0`, `q4_1` for all of them. Norms stay F32.
    #[arg(long, value_name = "TYPE")]
    pub gguf_type: Option<String>,
    /// `general.name` of a GGUF file (default: the model's own name).
    #[arg(long)]
    pub name: Option<String>,
    /// Print a JSON summary on stdout (for GGUF, with every tensor).
    #[arg(long)]
    pub json: bool,
    /// No progress display.
    #[arg(short, long)]
    pub quiet: bool,
}

/// Runs `kiln export`.
pub fn run(a: Args) -> Result<()> {
    match a.format.as_str() {
        "safetensors" => {
            if a.gguf_type.is_some() || a.name.is_some() {
                bail!("--gguf-type and --name apply to --format gguf only");
            }
            safetensors(a)
        }
        "gguf" => gguf(a),
        other => bail!("unknown export format '{other}' (supported: safetensors, gguf)"),
    }
}

fn safetensors(a: Args) -> Result<()> {
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

/// How a tensor was written, in words.
fn how(t: &TensorReport) -> &'static str {
    let float = matches!(t.ty, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16);
    match (t.requantized, t.exact) {
        (false, true) => "exact",
        (false, false) if float => "converted",
        (false, false) => "codes kept, minimums rounded to f16",
        (true, true) => "requantized (lossless)",
        (true, false) => "requantized",
    }
}

fn gguf(a: Args) -> Result<()> {
    let types = match &a.gguf_type {
        Some(t) => GgufType::parse(t)?,
        None => GgufType::Auto,
    };
    let quiet = a.quiet || a.json;
    let loaded = load(&a.model, quiet)?;
    let sp = progress::spinner(quiet, format!("writing {}", a.output.display()));
    let options = GgufExportOptions {
        types,
        name: a.name.clone(),
    };
    let report =
        kiln_frontends::gguf::export_gguf(&loaded.graph, &loaded.assets, &a.output, &options)
            .with_context(|| {
                format!(
                    "{}: export as GGUF to {}",
                    a.model.display(),
                    a.output.display()
                )
            })?;
    sp.finish_and_clear();
    if a.json {
        let tensors: Vec<_> = report
            .tensors
            .iter()
            .map(|t| {
                json!({
                    "name": t.name,
                    "source": t.source,
                    "source_dtype": t.source_dtype.to_string(),
                    "dims": t.dims,
                    "type": t.ty.name(),
                    "exact": t.exact,
                    "max_error": t.max_error,
                    "requantized": t.requantized,
                })
            })
            .collect();
        let out = json!({
            "output": a.output.display().to_string(),
            "format": a.format,
            "gguf_type": types.to_string(),
            "architecture": report.architecture,
            "file_type": report.file_type,
            "file_type_name": file_type_name(report.file_type),
            "metadata_keys": report.metadata_keys,
            "parameters": report.parameters,
            "bytes": report.bytes,
            "tensors": tensors,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!(
        "wrote {} ({}, {}; {} metadata keys, {} tensors, {:.1} M parameters, {:.1} MB)",
        a.output.display(),
        report.architecture,
        file_type_name(report.file_type),
        report.metadata_keys,
        report.tensors.len(),
        report.parameters as f64 / 1e6,
        report.bytes as f64 / 1e6
    );
    // One line per (type, source dtype, how): counts and the largest
    // deviation, not 300 lines.
    let mut groups: BTreeMap<(&str, String, &str), (usize, f32)> = BTreeMap::new();
    for t in &report.tensors {
        let g = groups
            .entry((t.ty.name(), t.source_dtype.to_string(), how(t)))
            .or_default();
        g.0 += 1;
        g.1 = g.1.max(t.max_error);
    }
    for ((ty, from, how), (n, err)) in groups {
        let err = if err > 0.0 {
            format!(" (max |Δ| {err:.3e})")
        } else {
            String::new()
        };
        println!("  {n:>4} × {ty:<5} from {from:<7} {how}{err}");
    }
    // Name the tensors that changed when they are few; --json lists all.
    let lossy: Vec<String> = report
        .tensors
        .iter()
        .filter(|t| !t.exact)
        .map(|t| format!("{} ({})", t.name, t.ty.name()))
        .collect();
    if !lossy.is_empty() && lossy.len() <= 8 {
        println!("  not exact: {}", lossy.join(", "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(model: PathBuf, format: &str, gguf_type: Option<&str>, output: PathBuf) -> Args {
        Args {
            model,
            format: format.to_string(),
            output,
            gguf_type: gguf_type.map(str::to_string),
            name: None,
            json: false,
            quiet: true,
        }
    }

    /// The error as `kiln` prints it: the chain of causes on one line.
    fn message(e: anyhow::Error) -> String {
        format!("{e:#}")
    }

    fn minilm() -> PathBuf {
        let cache = std::env::var_os("KILN_CACHE")
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                std::env::var_os("HOME")
                    .map(PathBuf::from)
                    .unwrap_or_default()
                    .join(".cache/kiln")
            });
        cache.join("models/all-minilm-l6-v2")
    }

    #[test]
    fn bad_formats_and_types_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("x.gguf");
        let m = dir.path().to_path_buf();
        let e = message(run(args(m.clone(), "onnx", None, out.clone())).unwrap_err());
        assert!(e.contains("'onnx'") && e.contains("gguf"), "{e}");
        let e = message(run(args(m.clone(), "gguf", Some("q4_k"), out.clone())).unwrap_err());
        assert!(e.contains("'q4_k'") && e.contains("q4_1"), "{e}");
        let e = message(run(args(m, "safetensors", Some("q8_0"), out)).unwrap_err());
        assert!(e.contains("--gguf-type"), "{e}");
    }

    #[test]
    fn a_model_that_is_not_llama_family_is_refused_naming_its_architecture() {
        let model = minilm();
        if !model.exists() {
            eprintln!(
                "skipped: {} is missing (run scripts/setup.sh)",
                model.display()
            );
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("minilm.gguf");
        let e = message(run(args(model, "gguf", None, out.clone())).unwrap_err());
        assert!(
            e.contains("all-minilm-l6-v2")
                && e.contains("'bert'")
                && e.contains("BertModel")
                && e.contains("LLaMA-family"),
            "{e}"
        );
        assert!(!out.exists());
    }
}
