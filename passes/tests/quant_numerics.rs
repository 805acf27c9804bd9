//! Timing of the calibrated quantizers at SmolLM2-135M's sizes (576 hidden,
//! 1536 MLP, 32 × 512 calibration tokens). Ignored by default; run with
//! `cargo test --release -p kiln-passes --test quant_numerics -- --ignored --nocapture`.

use kiln_ir::quant::{dequantize, quantize_rtn, QuantFormat};
use kiln_passes::quant::awq::{awq_scales, AwqOptions};
use kiln_passes::quant::clip::{clip_search, ClipOptions};
use kiln_passes::quant::gptq::{gptq, prepare, GptqOptions};
use kiln_passes::quant::hessian::{output_error, InputStats};
use std::time::Instant;

/// Seeded xorshift64* values, uniform in [-1, 1).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f32 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        ((x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40) as f32 / (1u64 << 23) as f32) - 1.0
    }
}

/// `n × dim` activations: a shared low-rank part plus noise, a few channels
/// 20× larger.
fn activations(n: usize, dim: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng(seed | 1);
    let rank = 16;
    let mix: Vec<f32> = (0..rank * dim).map(|_| rng.next()).collect();
    let mut x = Vec::with_capacity(n * dim);
    for _ in 0..n {
        let f: Vec<f32> = (0..rank).map(|_| rng.next()).collect();
        for j in 0..dim {
            let mut v = 0.5 * rng.next();
            for k in 0..rank {
                v += 0.25 * f[k] * mix[k * dim + j];
            }
            x.push(if j % 97 == 3 { 20.0 * v } else { v });
        }
    }
    x
}

/// CPU seconds (user + system, all threads) of this process so far, from
/// `/proc/self/stat` at the usual 100 ticks per second; 0 where unavailable.
/// Reported next to wall time because the machine may be shared.
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields of the whole line.
    let Some(rest) = stat.rsplit(')').next() else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (tick(11) + tick(12)) / 100.0
}

fn weight(rows: usize, cols: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng(seed | 1);
    (0..rows * cols).map(|_| 0.05 * rng.next()).collect()
}

fn stats(dim: usize, seed: u64) -> (InputStats, f64) {
    let mut s = InputStats::new(dim);
    let x = activations(512, dim, seed);
    let t = Instant::now();
    // 32 sequences of 512 tokens (the same block repeated: timing only).
    for _ in 0..32 {
        s.add(&x).unwrap();
    }
    (s, t.elapsed().as_secs_f64())
}

#[test]
#[ignore = "timing at real sizes; run explicitly with --ignored --nocapture"]
fn quant_timing_real_sizes() {
    let (wall, cpu) = (Instant::now(), cpu_seconds());
    let f = QuantFormat::parse("w4g64").unwrap();
    let opts = GptqOptions::default();
    let (s576, t_h576) = stats(576, 1);
    let (s1536, t_h1536) = stats(1536, 2);
    eprintln!("InputStats::add, 32 × 512 tokens: dim 576 {t_h576:.3} s, dim 1536 {t_h1536:.3} s");

    let t = Instant::now();
    let p576 = prepare(s576.hessian(), 576, &opts).unwrap();
    let t_p576 = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let p1536 = prepare(s1536.hessian(), 1536, &opts).unwrap();
    let t_p1536 = t.elapsed().as_secs_f64();
    eprintln!("prepare: 576 {t_p576:.3} s, 1536 {t_p1536:.3} s");

    let mut t_w = std::collections::BTreeMap::new();
    for (rows, cols, p, h) in [
        (1536, 576, &p1536, s1536.hessian()),
        (576, 1536, &p576, s576.hessian()),
        (576, 576, &p576, s576.hessian()),
        (576, 192, &p576, s576.hessian()),
    ] {
        let w = weight(rows, cols, (rows * cols) as u64);
        let t = Instant::now();
        let q = gptq(&w, rows, cols, p, f, &opts).unwrap();
        let secs = t.elapsed().as_secs_f64();
        t_w.insert((rows, cols), secs);
        let t = Instant::now();
        let e = output_error(&w, &dequantize(&q), rows, cols, h);
        let t_err = t.elapsed().as_secs_f64();
        let rtn = quantize_rtn(&w, rows, cols, f).unwrap();
        let e_rtn = output_error(&w, &dequantize(&rtn), rows, cols, h);
        eprintln!(
            "gptq {rows}x{cols} {f}: {secs:.3} s, error {e:.4e} (rtn {e_rtn:.4e}); \
             output_error {t_err:.3} s"
        );
    }
    // One SmolLM2 layer: Hessians of the q/k/v, o, gate/up and down inputs;
    // q, o (576×576), k, v (576×192), gate, up (576×1536), down (1536×576).
    let layer = 3.0 * t_h576
        + t_h1536
        + 3.0 * t_p576
        + t_p1536
        + 2.0 * t_w[&(576, 576)]
        + 2.0 * t_w[&(576, 192)]
        + 2.0 * t_w[&(576, 1536)]
        + t_w[&(1536, 576)];
    eprintln!(
        "one layer (stats + prepare + gptq): {layer:.2} s; 30 layers ≈ {:.1} s",
        30.0 * layer
    );

    let (g, u) = (weight(576, 1536, 5), weight(576, 1536, 6));
    let t = Instant::now();
    let a = awq_scales(&[(&g, 1536), (&u, 1536)], &s576, f, &AwqOptions::default()).unwrap();
    eprintln!(
        "awq_scales gate+up (2 × 576x1536): {:.3} s, alpha {}, error {:.4e} -> {:.4e}",
        t.elapsed().as_secs_f64(),
        a.alpha,
        a.error_before,
        a.error_after
    );
    let down = weight(1536, 576, 7);
    let t = Instant::now();
    let a = awq_scales(&[(&down, 576)], &s1536, f, &AwqOptions::default()).unwrap();
    eprintln!(
        "awq_scales down (1536x576): {:.3} s, alpha {}",
        t.elapsed().as_secs_f64(),
        a.alpha
    );
    let t = Instant::now();
    clip_search(&g, 576, 1536, s576.hessian(), f, &ClipOptions::default()).unwrap();
    eprintln!("clip_search 576x1536: {:.3} s", t.elapsed().as_secs_f64());
    let t = Instant::now();
    let clip = GptqOptions {
        clip: Some(ClipOptions::default()),
        ..opts
    };
    gptq(&down, 1536, 576, &p1536, f, &clip).unwrap();
    eprintln!(
        "gptq with clip 1536x576: {:.3} s",
        t.elapsed().as_secs_f64()
    );
    eprintln!(
        "total: {:.2} s wall, {:.2} s CPU (2 threads)",
        wall.elapsed().as_secs_f64(),
        cpu_seconds() - cpu
    );
}
