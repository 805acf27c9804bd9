//! `kiln eval`: how good a model (or a bundle) is on real text.

use super::{load, Loaded};
use crate::progress;
use anyhow::{bail, Context, Result};
use kiln_eval::compare::{compare_embeddings, compare_lm};
use kiln_eval::embed::{embed_ids, tokenize_lines};
use kiln_eval::perplexity::{perplexity, PerplexityOptions};
use kiln_frontends::arch::META_TASK;
use kiln_runtime::cpu::{CpuExecutor, ExecOptions};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Arguments of `kiln eval`.
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    what: What,
}

#[derive(clap::Subcommand)]
enum What {
    /// Perplexity of a causal language model, as llama.cpp's perplexity tool
    /// computes it (second half of each window scored; see docs/eval.md).
    Perplexity(PerplexityArgs),
    /// Sentence embeddings of each line of a text file.
    Embed(EmbedArgs),
    /// How far two models (or bundles) are apart on real text.
    Compare(CompareArgs),
}

/// Options shared by the subcommands.
#[derive(clap::Args)]
struct Common {
    /// Text file (UTF-8).
    #[arg(long)]
    text: PathBuf,
    /// Threads for the CPU executor (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Print a JSON result on stdout.
    #[arg(long)]
    json: bool,
    /// No progress display.
    #[arg(short, long)]
    quiet: bool,
}

#[derive(clap::Args)]
struct PerplexityArgs {
    /// A model file or folder, or a bundle.
    model: PathBuf,
    /// Window length in tokens.
    #[arg(long, default_value_t = 512)]
    ctx: usize,
    /// Evaluate at most this many windows (default: all full windows).
    #[arg(long)]
    chunks: Option<usize>,
    #[command(flatten)]
    common: Common,
}

#[derive(clap::Args)]
struct EmbedArgs {
    /// A sentence-embedding model file or folder, or a bundle.
    model: PathBuf,
    /// Lines per batch.
    #[arg(long, default_value_t = 8)]
    batch: usize,
    /// Longest line in tokens; longer lines are cut (keeping the final token).
    #[arg(long, default_value_t = 512)]
    max_tokens: usize,
    #[command(flatten)]
    common: Common,
}

#[derive(clap::Args)]
struct CompareArgs {
    /// The reference model or bundle.
    a: PathBuf,
    /// The model or bundle compared with it.
    b: PathBuf,
    /// Window length in tokens (language models).
    #[arg(long, default_value_t = 512)]
    ctx: usize,
    /// Windows to compare at most (language models; default 8).
    #[arg(long, default_value_t = 8)]
    chunks: usize,
    /// Lines per batch (encoders).
    #[arg(long, default_value_t = 8)]
    batch: usize,
    #[command(flatten)]
    common: Common,
}

/// Runs `kiln eval`.
pub fn run(a: Args) -> Result<()> {
    match a.what {
        What::Perplexity(p) => run_perplexity(p),
        What::Embed(e) => run_embed(e),
        What::Compare(c) => run_compare(c),
    }
}

fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path)
        .with_context(|| format!("cannot read text file {}", path.display()))
}

fn executor(loaded: &Loaded, path: &Path, threads: Option<usize>) -> Result<CpuExecutor> {
    CpuExecutor::new(loaded.graph.clone(), ExecOptions { threads })
        .with_context(|| format!("{}: cannot prepare the CPU executor", path.display()))
}

fn task(loaded: &Loaded) -> &str {
    loaded
        .graph
        .metadata
        .get(META_TASK)
        .map_or("", String::as_str)
}

fn require_task(loaded: &Loaded, path: &Path, wanted: &[&str]) -> Result<()> {
    let t = task(loaded);
    if !wanted.contains(&t) {
        bail!(
            "{}: this command needs a {} model, but the model's task is '{}'",
            path.display(),
            wanted.join(" or "),
            if t.is_empty() { "unknown" } else { t }
        );
    }
    Ok(())
}

fn run_perplexity(a: PerplexityArgs) -> Result<()> {
    let quiet = a.common.quiet || a.common.json;
    let text = read_text(&a.common.text)?;
    let loaded = load(&a.model, quiet)?;
    require_task(&loaded, &a.model, &["causal-lm"])?;
    let tokenizer = loaded.tokenizer(&a.model)?;
    let exec = executor(&loaded, &a.model, a.common.threads)?;
    let sp = progress::spinner(quiet, "tokenizing");
    let tokens = tokenizer.encode(&text, true)?;
    sp.finish_and_clear();
    let opts = PerplexityOptions {
        ctx: a.ctx,
        chunks: a.chunks,
        bos: if tokenizer.add_bos() {
            tokenizer.bos_id()
        } else {
            None
        },
    };
    let start = Instant::now();
    let pb = progress::bar(quiet, 0, "windows");
    let result = perplexity(&exec, &tokens, &opts, |done, total| {
        pb.set_length(total as u64);
        pb.set_position(done as u64);
    })
    .with_context(|| {
        format!(
            "{}: perplexity on {}",
            a.model.display(),
            a.common.text.display()
        )
    })?;
    pb.finish_and_clear();
    let seconds = start.elapsed().as_secs_f64();
    if a.common.json {
        let mut v = serde_json::to_value(&result)?;
        v["model"] = json!(a.model.display().to_string());
        v["text"] = json!(a.common.text.display().to_string());
        v["seconds"] = json!(seconds);
        v["definition"] = json!("llama.cpp perplexity: non-overlapping windows of ctx tokens, BOS-patched when the tokenizer adds BOS, logits at positions ctx/2..ctx-2 scored");
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let running: Vec<String> = result
        .window_nll
        .iter()
        .scan(0f64, |acc, n| {
            *acc += n;
            Some(*acc)
        })
        .enumerate()
        .map(|(i, s)| format!("[{}]{:.4}", i + 1, (s / (i + 1) as f64).exp()))
        .collect();
    println!("{}", running.join(","));
    println!(
        "perplexity {:.4} over {} windows of {} tokens ({} tokens scored of {} in the text) in {:.1}s",
        result.perplexity, result.windows, result.ctx, result.scored_tokens, result.text_tokens, seconds
    );
    Ok(())
}

fn lines_of(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

fn run_embed(a: EmbedArgs) -> Result<()> {
    let quiet = a.common.quiet || a.common.json;
    let lines = lines_of(&read_text(&a.common.text)?);
    if lines.is_empty() {
        bail!("{}: no non-empty lines to embed", a.common.text.display());
    }
    let loaded = load(&a.model, quiet)?;
    require_task(&loaded, &a.model, &["sentence-embedding"])?;
    let tokenizer = loaded.tokenizer(&a.model)?;
    let exec = executor(&loaded, &a.model, a.common.threads)?;
    let ids = tokenize_lines(&tokenizer, &lines, a.max_tokens)?;
    let start = Instant::now();
    let pb = progress::bar(quiet, lines.len() as u64, "lines");
    let vectors = embed_ids(
        &exec,
        &ids,
        tokenizer.pad_id().unwrap_or(0),
        a.batch,
        |done, _| pb.set_position(done as u64),
    )
    .with_context(|| {
        format!(
            "{}: embedding {}",
            a.model.display(),
            a.common.text.display()
        )
    })?;
    pb.finish_and_clear();
    if a.common.json {
        let items: Vec<_> = lines
            .iter()
            .zip(&vectors)
            .map(|(l, v)| json!({"text": l, "embedding": v}))
            .collect();
        println!(
            "{}",
            serde_json::to_string(
                &json!({"model": a.model.display().to_string(), "embeddings": items})
            )?
        );
        return Ok(());
    }
    for (l, v) in lines.iter().zip(&vectors) {
        let head: Vec<String> = v.iter().take(4).map(|x| format!("{x:+.4}")).collect();
        let short: String = l.chars().take(60).collect();
        println!("[{}] {} … | {short}", v.len(), head.join(" "));
    }
    println!(
        "embedded {} lines in {:.2}s",
        lines.len(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

fn run_compare(a: CompareArgs) -> Result<()> {
    let quiet = a.common.quiet || a.common.json;
    let text = read_text(&a.common.text)?;
    let la = load(&a.a, quiet)?;
    let lb = load(&a.b, quiet)?;
    let (ta, tb) = (task(&la).to_string(), task(&lb).to_string());
    if ta != tb {
        bail!(
            "{} is a '{ta}' model but {} is a '{tb}' model; compare models of the same kind",
            a.a.display(),
            a.b.display()
        );
    }
    let tokenizer = la.tokenizer(&a.a)?;
    let ea = executor(&la, &a.a, a.common.threads)?;
    let eb = executor(&lb, &a.b, a.common.threads)?;
    let value = match ta.as_str() {
        "causal-lm" => {
            let tokens = tokenizer.encode(&text, true)?;
            let opts = PerplexityOptions {
                ctx: a.ctx,
                chunks: Some(a.chunks),
                bos: if tokenizer.add_bos() { tokenizer.bos_id() } else { None },
            };
            let pb = progress::bar(quiet, 0, "windows");
            let r = compare_lm(&ea, &eb, &tokens, &opts, |done, total| {
                pb.set_length(total as u64);
                pb.set_position(done as u64);
            })?;
            pb.finish_and_clear();
            if !a.common.json {
                println!(
                    "KL(A‖B) mean {:.6} nats (p99 {:.6}, max {:.6}); same top token {:.2}%; \
                     perplexity A {:.4}, B {:.4} ({} positions, {} windows of {})",
                    r.kl_mean,
                    r.kl_p99,
                    r.kl_max,
                    100.0 * r.top1_agreement,
                    r.perplexity_a,
                    r.perplexity_b,
                    r.positions,
                    r.windows,
                    a.ctx
                );
            }
            serde_json::to_value(&r)?
        }
        "sentence-embedding" => {
            let lines = lines_of(&text);
            let ids = tokenize_lines(&tokenizer, &lines, 512)?;
            let r = compare_embeddings(&ea, &eb, &ids, tokenizer.pad_id().unwrap_or(0), a.batch)?;
            if !a.common.json {
                println!(
                    "cosine similarity mean {:.6}, min {:.6} over {} lines",
                    r.cosine_mean, r.cosine_min, r.lines
                );
            }
            serde_json::to_value(&r)?
        }
        other => bail!(
            "{}: cannot compare models whose task is '{}' (supported: causal-lm, sentence-embedding)",
            a.a.display(),
            if other.is_empty() { "unknown" } else { other }
        ),
    };
    if a.common.json {
        let mut v = value;
        v["a"] = json!(a.a.display().to_string());
        v["b"] = json!(a.b.display().to_string());
        v["task"] = json!(ta);
        println!("{}", serde_json::to_string_pretty(&v)?);
    }
    Ok(())
}
