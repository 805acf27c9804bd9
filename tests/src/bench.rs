//! Timing helpers shared by the benchmark binaries (never used by tests:
//! tests assert numbers, not wall times).

use anyhow::{bail, Context, Result};
use std::time::Instant;

/// The median of a list of timings.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Runs `f` `warmup` times untimed, then `runs` times; returns seconds per run.
pub fn time_runs(
    runs: usize,
    warmup: usize,
    mut f: impl FnMut() -> Result<()>,
) -> Result<Vec<f64>> {
    for _ in 0..warmup {
        f()?;
    }
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        f()?;
        times.push(t.elapsed().as_secs_f64());
    }
    Ok(times)
}

/// The command line every benchmark binary takes: `--runs N --threads T --json`.
#[derive(Clone, Debug)]
pub struct BenchArgs {
    /// Timed runs per case.
    pub runs: usize,
    /// Threads for every runtime.
    pub threads: usize,
    /// Print JSON instead of a table.
    pub json: bool,
}

impl BenchArgs {
    /// Parses the process arguments, with `runs` timed runs by default and 2 threads.
    pub fn from_env(runs: usize) -> Result<Self> {
        let mut a = BenchArgs {
            runs,
            threads: 2,
            json: false,
        };
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--runs" => a.runs = args.next().context("--runs N")?.parse()?,
                "--threads" => a.threads = args.next().context("--threads T")?.parse()?,
                "--json" => a.json = true,
                other => {
                    bail!("unknown argument `{other}` (expected --runs N, --threads T, --json)")
                }
            }
        }
        Ok(a)
    }
}
