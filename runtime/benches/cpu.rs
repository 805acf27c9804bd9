//! Timing of the CPU executor's hot kernels: `cargo bench -p kiln-runtime`.
//!
//! Plain `main` (no harness dependency): each case runs a few warm-up
//! iterations, then reports the best of several timed runs.

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
}
