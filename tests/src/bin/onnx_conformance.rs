//! Runs the ONNX backend node tests through Kiln and reports per op type.
//!
//! ```text
//! cargo run --release -p kiln-tests --bin onnx-conformance -- \
//!     [--json] [--write-list FILE] [--filter SUBSTR] [--threads N] [--verbose] [DIR]
//! ```
//! DIR defaults to `$KILN_CACHE/onnx-node-tests` (written by scripts/setup.sh).
//! `--write-list FILE` writes the sorted names of the passing cases, one a line
//! (the format of tests/conformance/onnx_node_pass.txt).

use anyhow::{bail, Context, Result};
use kiln_tests::onnx_node::{self, CaseResult, Counts};
use std::path::PathBuf;

const USAGE: &str = "usage: onnx-conformance [--json] [--write-list FILE] [--filter SUBSTR] [--threads N] [--verbose] [DIR]";

struct Args {
    json: bool,
    write_list: Option<PathBuf>,
    filter: Option<String>,
    threads: usize,
    verbose: bool,
    dir: PathBuf,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        json: false,
        write_list: None,
        filter: None,
        threads: 0,
        verbose: false,
        dir: onnx_node::default_dir(),
    };
    let mut it = std::env::args().skip(1);
    let mut dir = None;
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--json" => a.json = true,
            "--verbose" | "-v" => a.verbose = true,
            "--write-list" => {
                a.write_list = Some(it.next().context("--write-list needs a FILE")?.into())
            }
            "--filter" => a.filter = Some(it.next().context("--filter needs a SUBSTR")?),
            "--threads" => {
                a.threads = it
                    .next()
                    .context("--threads needs N")?
                    .parse()
                    .context("--threads N")?
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            s if s.starts_with('-') => bail!("unknown option {s}\n{USAGE}"),
            _ if dir.is_none() => dir = Some(PathBuf::from(arg)),
            _ => bail!("more than one DIR\n{USAGE}"),
        }
    }
    if let Some(d) = dir {
        a.dir = d;
    }
    Ok(a)
}

fn main() -> Result<()> {
    let args = parse_args()?;
    let mut names = onnx_node::list_cases(&args.dir).with_context(|| {
        format!(
            "reading {} (run scripts/setup.sh to generate the node tests)",
            args.dir.display()
        )
    })?;
    if let Some(f) = &args.filter {
        names.retain(|n| n.contains(f.as_str()));
    }
    if names.is_empty() {
        bail!(
            "no cases in {}{}",
            args.dir.display(),
            args.filter
                .as_ref()
                .map(|f| format!(" matching '{f}'"))
                .unwrap_or_default()
        );
    }

    let results = onnx_node::run_cases(&args.dir, &names, args.threads, &|_r: &CaseResult| {});
    let (total, per_op) = onnx_node::summarize(&results);

    if let Some(path) = &args.write_list {
        let text: String = results
            .iter()
            .filter(|r| r.outcome.passed())
            .map(|r| format!("{}\n", r.name))
            .collect();
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
        eprintln!(
            "wrote {} passing test names to {}",
            total.passed,
            path.display()
        );
    }

    if args.json {
        let counts = |c: &Counts| serde_json::json!({"passed": c.passed, "failed": c.failed, "unsupported": c.unsupported, "total": c.total()});
        let ops: serde_json::Map<String, serde_json::Value> =
            per_op.iter().map(|(k, c)| (k.clone(), counts(c))).collect();
        let cases: Vec<serde_json::Value> = results
            .iter()
            .map(|r| {
                serde_json::json!({
                    "name": r.name,
                    "ops": r.ops,
                    "outcome": r.outcome.kind(),
                    "reason": r.outcome.reason(),
                    "millis": r.elapsed.as_millis() as u64,
                })
            })
            .collect();
        let doc = serde_json::json!({
            "dir": args.dir.display().to_string(),
            "total": counts(&total),
            "ops": ops,
            "cases": cases,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }

    let w = per_op.keys().map(|k| k.len()).max().unwrap_or(2).max(7);
    println!(
        "{:<w$}  {:>6}  {:>6}  {:>11}  {:>5}",
        "op type", "passed", "failed", "unsupported", "total"
    );
    for (op, c) in &per_op {
        println!(
            "{op:<w$}  {:>6}  {:>6}  {:>11}  {:>5}",
            c.passed,
            c.failed,
            c.unsupported,
            c.total()
        );
    }
    println!();
    let failed: Vec<&CaseResult> = results
        .iter()
        .filter(|r| matches!(r.outcome, onnx_node::Outcome::Failed(_)))
        .collect();
    if !failed.is_empty() {
        println!("failed:");
        for r in &failed {
            println!(
                "  {}: {}",
                r.name,
                one_line(
                    r.outcome.reason().unwrap_or(""),
                    if args.verbose { 2000 } else { 240 }
                )
            );
        }
        println!();
    }
    if args.verbose {
        println!("unsupported:");
        for r in results
            .iter()
            .filter(|r| matches!(r.outcome, onnx_node::Outcome::Unsupported(_)))
        {
            println!(
                "  {}: {}",
                r.name,
                one_line(r.outcome.reason().unwrap_or(""), 2000)
            );
        }
        println!();
    }
    println!(
        "total: {} cases: {} passed, {} failed, {} unsupported ({})",
        total.total(),
        total.passed,
        total.failed,
        total.unsupported,
        args.dir.display()
    );
    Ok(())
}

fn one_line(s: &str, max: usize) -> String {
    let s = s.replace('\n', " | ");
    if s.chars().count() > max {
        let cut: String = s.chars().take(max).collect();
        format!("{cut}…")
    } else {
        s
    }
}
