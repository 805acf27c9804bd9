//! `kiln`: optimize, run and inspect models for edge devices.
//!
//! This is the only crate that formats errors for people: library errors
//! arrive typed and leave here as one line on stderr with a non-zero exit.

mod commands;
mod progress;
mod quant_report;
mod tensors;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Kiln: an ahead-of-time model compiler for edge devices.
#[derive(Parser)]
#[command(name = "kiln", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Compile a model (ONNX, GGUF or a Hugging Face folder) into a deployable bundle for one target.
    Optimize(commands::optimize::Args),
    /// Run a bundle (or a model) on inputs from a safetensors file.
    Run(commands::run::Args),
    /// Describe a model or bundle: inputs, outputs, ops, parameters, FLOPs.
    Inspect(commands::inspect::Args),
    /// Measure a model or bundle on real text: perplexity, embeddings, comparison.
    Eval(commands::eval::Args),
    /// Write a model or bundle in another format (a Hugging Face safetensors folder).
    Export(commands::export::Args),
}

fn main() -> ExitCode {
    // `kiln inspect m.onnx | head` must end quietly when the reader goes
    // away, as other command-line tools do, not panic on a broken pipe.
    #[cfg(unix)]
    // SAFETY: restoring the default disposition of one signal before any
    // other thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Optimize(a) => commands::optimize::run(a),
        Command::Run(a) => commands::run::run(a),
        Command::Inspect(a) => commands::inspect::run(a),
        Command::Eval(a) => commands::eval::run(a),
        Command::Export(a) => commands::export::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: the chain of causes, outermost first.
            let chain: Vec<String> = e.chain().map(|c| c.to_string()).collect();
            let mut line = String::new();
            for c in chain {
                if !line.contains(&c) {
                    if !line.is_empty() {
                        line.push_str(": ");
                    }
                    line.push_str(&c);
                }
            }
            eprintln!("error: {line}");
            ExitCode::FAILURE
        }
    }
}
