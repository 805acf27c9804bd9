//! Timing of the CPU executor's hot kernels: `cargo bench -p kiln-runtime`.
//!
//! Plain `main` (no harness dependency): each case runs a few warm-up
//! iterations, then reports the best of several timed runs. A word after
//! `--` runs only the cases whose name contains it.

use kiln_ir::{Float, Op, Tensor};
use kiln_runtime::cpu::eval_node;
use std::time::Instant;

fn rand(n: usize) -> Vec<f32> {
    let mut s = 0x9e3779b97f4a7c15u64;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5
        })
        .collect()
}

fn t(dims: &[usize]) -> Tensor {
    Tensor::from_vec(dims.to_vec(), rand(dims.iter().product())).expect("sizes match")
}

fn bench(name: &str, flops: f64, op: &Op, inputs: &[Option<&Tensor>]) {
    // `cargo bench -p kiln-runtime -- WORD` runs the cases whose name contains WORD.
    if let Some(f) = std::env::args().skip(1).find(|a| !a.starts_with('-')) {
        if !name.contains(f.as_str()) {
            return;
        }
    }
    for _ in 0..3 {
        eval_node(op, inputs, 1).expect("kernel runs");
    }
    let mut best = f64::INFINITY;
    for _ in 0..10 {
        let s = Instant::now();
        eval_node(op, inputs, 1).expect("kernel runs");
        best = best.min(s.elapsed().as_secs_f64());
    }
    if flops > 0.0 {
        println!(
            "{name:40} {:9.3} ms  {:7.1} GFLOP/s",
            best * 1e3,
            flops / best / 1e9
        );
    } else {
        println!("{name:40} {:9.3} ms", best * 1e3);
    }
}

fn main() {
    println!("threads: {}", rayon::current_num_threads());
    let (a, b) = (t(&[384, 384]), t(&[384, 1536]));
    bench(
        "matmul 384x384x1536",
        2.0 * 384.0 * 384.0 * 1536.0,
        &Op::MatMul,
        &[Some(&a), Some(&b)],
    );
    let (a, b) = (t(&[1, 257, 384]), t(&[384, 1536]));
    bench(
        "matmul [1,257,384]x[384,1536]",
        2.0 * 257.0 * 384.0 * 1536.0,
        &Op::MatMul,
        &[Some(&a), Some(&b)],
    );
    let (q, k) = (t(&[1, 6, 257, 64]), t(&[1, 6, 64, 257]));
    bench(
        "attention scores 6x257x64x257",
        2.0 * 6.0 * 257.0 * 64.0 * 257.0,
        &Op::MatMul,
        &[Some(&q), Some(&k)],
    );
    let x = t(&[1, 257, 1536]);
    bench(
        "gelu [257,1536]",
        0.0,
        &Op::Gelu {
            approximate: kiln_ir::GeluApprox::None,
        },
        &[Some(&x)],
    );
    bench("erf [257,1536]", 0.0, &Op::Erf, &[Some(&x)]);
    let s = t(&[1, 6, 257, 257]);
    bench(
        "softmax [6,257,257]",
        0.0,
        &Op::Softmax { axis: -1 },
        &[Some(&s)],
    );
    let (x, w, bb) = (t(&[1, 257, 384]), t(&[384]), t(&[384]));
    bench(
        "layernorm [257,384]",
        0.0,
        &Op::LayerNorm {
            axis: -1,
            epsilon: Float(1e-6),
        },
        &[Some(&x), Some(&w), Some(&bb)],
    );
    let x = t(&[1, 257, 6, 64]);
    bench(
        "transpose [1,257,6,64]->[1,6,257,64]",
        0.0,
        &Op::Transpose {
            perm: Some(vec![0, 2, 1, 3]),
        },
        &[Some(&x)],
    );
    let (x, w) = (t(&[1, 3, 224, 224]), t(&[384, 3, 14, 14]));
    let conv = Op::Conv {
        window: kiln_ir::Window {
            kernel_shape: vec![14, 14],
            strides: vec![14, 14],
            pads: vec![],
            dilations: vec![],
            auto_pad: kiln_ir::AutoPad::NotSet,
        },
        group: 1,
    };
    bench(
        "patch conv 3x224x224 k14 s14 -> 384",
        2.0 * 384.0 * 588.0 * 256.0,
        &conv,
        &[Some(&x), Some(&w)],
    );
    let (x, w) = (t(&[1, 64, 56, 56]), t(&[64, 64, 3, 3]));
    let conv = Op::Conv {
        window: kiln_ir::Window {
            kernel_shape: vec![3, 3],
            strides: vec![],
            pads: vec![1, 1, 1, 1],
            dilations: vec![],
            auto_pad: kiln_ir::AutoPad::NotSet,
        },
        group: 1,
    };
    bench(
        "resnet conv 64x56x56 3x3",
        2.0 * 64.0 * 576.0 * 3136.0,
        &conv,
        &[Some(&x), Some(&w)],
    );
    let (x, y) = (t(&[1, 257, 1536]), t(&[1536]));
    bench("add bias [257,1536]", 0.0, &Op::Add, &[Some(&x), Some(&y)]);
    // SmolLM2 prefill: 512 tokens, 9 query heads over 3 KV heads of 64, causal.
    // Useful flops: the causal half of 2·2·H·S²·D.
    let attn = |causal, q, kv| Op::Attention {
        is_causal: causal,
        q_num_heads: q,
        kv_num_heads: kv,
        scale: None,
        softcap: Float(0.0),
        qk_matmul_output_mode: 0,
        softmax_precision: None,
    };
    let (q, kv) = (t(&[1, 512, 576]), t(&[1, 512, 192]));
    bench(
        "attention causal gqa 512 tok 9/3 heads x64",
        2.0 * 2.0 * 9.0 * 512.0 * 512.0 * 64.0 / 2.0,
        &attn(true, 9, 3),
        &[Some(&q), Some(&kv), Some(&kv)],
    );
    // MiniLM: batch 8, 128 tokens, 12 heads of 32, bool padding mask [8,1,1,128].
    let (q, kv) = (t(&[8, 128, 384]), t(&[8, 128, 384]));
    let mask: Vec<u8> = (0..8 * 128)
        .map(|i| u8::from(i % 128 < 64 + 8 * (i / 128)))
        .collect();
    let mask =
        Tensor::from_raw(kiln_ir::DType::Bool, vec![8, 1, 1, 128], &mask).expect("sizes match");
    bench(
        "attention bool mask 8x128 tok 12 heads x32",
        2.0 * 2.0 * 8.0 * 12.0 * 128.0 * 128.0 * 32.0,
        &attn(false, 12, 12),
        &[Some(&q), Some(&kv), Some(&kv), Some(&mask)],
    );
    let (x, cos) = (t(&[1, 512, 576]), t(&[512, 32]));
    let ids = Tensor::from_vec(vec![1, 512], (0..512i64).collect()).expect("sizes match");
    bench(
        "rotary 512 tok 9 heads x64",
        0.0,
        &Op::RotaryEmbedding {
            interleaved: false,
            num_heads: 9,
            rotary_embedding_dim: 0,
        },
        &[Some(&x), Some(&cos), Some(&cos), Some(&ids)],
    );
}
