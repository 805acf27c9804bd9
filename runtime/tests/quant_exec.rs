//! Packed quantized weights through the CPU executor: MatMul and Gather read
//! them in place, and their results match the scalar reference decoders of
//! `kiln_ir::quant` (docs/quant-formats.md) and the same graph run on the
//! dequantized f32 weight.

use kiln_ir::quant::{dequantize, dot_column, quantize_rtn, QuantFormat};
use kiln_ir::{Graph, Tensor};
use kiln_runtime::cpu::{CpuExecutor, ExecOptions};
use std::collections::BTreeMap;

/// Deterministic pseudo-random values in [-1, 1), with an outlier every 97
/// values so that most codes of a group sit near its zero point.
fn rand(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9e3779b97f4a7c15) | 1;
    (0..n)
        .map(|i| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let v = ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0;
            if i % 97 == 0 {
                v * 8.0
            } else {
                v
            }
        })
        .collect()
}

fn dims(d: &[usize]) -> String {
    d.iter().map(usize::to_string).collect::<Vec<_>>().join(",")
}

/// Parses a graph whose constant `%w` is supplied beside the text.
fn parse(text: &str, w: Tensor) -> Graph {
    let weights = BTreeMap::from([("w".to_string(), w)]);
    kiln_ir::text::parse(text, &weights).expect("graph parses")
}

/// `y = MatMul(x, w)` for `x: f32[x_dims]` and a constant `w`.
fn matmul_graph(x_dims: &[usize], w: Tensor) -> Graph {
    let (k, n) = (w.dims()[0], w.dims()[1]);
    let mut y_dims = x_dims[..x_dims.len() - 1].to_vec();
    y_dims.push(n);
    let text = format!(
        "graph \"g\" {{\n  input %x: f32[{}]\n  const %w: {}[{k},{n}] = weight\n  %y: f32[{}] = MatMul(%x, %w)\n  output %y\n}}\n",
        dims(x_dims),
        w.dtype(),
        dims(&y_dims)
    );
    parse(&text, w)
}

fn run(graph: Graph, x: Tensor, threads: usize) -> (Vec<f32>, Vec<usize>, u64) {
    let exec = CpuExecutor::new(
        graph,
        ExecOptions {
            threads: Some(threads),
        },
    )
    .expect("executor");
    let r = exec
        .run(&BTreeMap::from([("x".to_string(), x)]))
        .expect("run");
    let y = &r.outputs[0].1;
    (y.to_vec::<f32>().unwrap(), y.dims().to_vec(), r.peak_bytes)
}

/// Σ|w·x| of each output element (`[m, n]`), in f64 from the exact
/// dequantized weight: the scale of summation-order rounding.
fn magnitudes(deq: &[f32], x: &[f32], m: usize, k: usize, n: usize) -> Vec<f64> {
    let mut out = vec![0f64; m * n];
    for i in 0..m {
        for r in 0..k {
            let xv = f64::from(x[i * k + r]).abs();
            for j in 0..n {
                out[i * n + j] += (f64::from(deq[r * n + j]) * xv).abs();
            }
        }
    }
    out
}

fn assert_within(got: &[f32], want: &[f32], mag: &[f64], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (e, ((g, w), m)) in got.iter().zip(want).zip(mag).enumerate() {
        let err = (f64::from(*g) - f64::from(*w)).abs();
        assert!(
            err <= 1e-5 * m,
            "{what}: element {e}: got {g}, want {w} (|err| {err:e}, Σ|w·x| {m:e})"
        );
    }
}

/// Every format, odd sizes (K not a multiple of the group, N not a multiple
/// of any panel or vector width, K = 576 in groups of 128 with a short last
/// group), decode-shaped (M = 1, 3) and prefill-shaped (M = 17, 64)
/// products: the executor's result matches `dot_column` row by row, and the
/// same graph on the dequantized f32 weight.
#[test]
fn packed_matmul_matches_the_reference_for_every_format() {
    let shapes = [(576, 131), (100, 33), (37, 5)];
    for format in QuantFormat::all() {
        for (s, &(k, n)) in shapes.iter().enumerate() {
            let packed = quantize_rtn(&rand(k * n, s as u64 + 1), k, n, format).unwrap();
            let deq = dequantize(&packed);
            for m in [1, 3, 17, 64] {
                let x = rand(m * k, (m * 31 + s) as u64);
                let mag = magnitudes(&deq, &x, m, k, n);
                let what = format!("{format} [{m}, {k}] × [{k}, {n}]");
                let xt = Tensor::from_vec(vec![m, k], x.clone()).unwrap();
                let (got, shape, _) = run(
                    matmul_graph(&[m, k], Tensor::from_packed(&packed)),
                    xt.clone(),
                    2,
                );
                assert_eq!(shape, [m, n], "{what}");
                let want: Vec<f32> = (0..m)
                    .flat_map(|i| {
                        let row = &x[i * k..(i + 1) * k];
                        (0..n)
                            .map(|j| dot_column(&packed, j, row))
                            .collect::<Vec<_>>()
                    })
                    .collect();
                assert_within(&got, &want, &mag, &format!("{what} vs dot_column"));
                let w32 = Tensor::from_vec(vec![k, n], deq.clone()).unwrap();
                let (f32_out, _, _) = run(matmul_graph(&[m, k], w32), xt, 2);
                assert_within(&got, &f32_out, &mag, &format!("{what} vs f32 graph"));
            }
        }
    }
}

/// Leading dimensions of x flatten into rows (`[1, 512, 576]`-style
/// activations), and a vector `x` gives a vector; one thread or two give
/// the same numbers.
#[test]
fn batch_dimensions_flatten_into_rows() {
    let format = QuantFormat::parse("w4g64").unwrap();
    let (k, n) = (200, 300);
    let packed = quantize_rtn(&rand(k * n, 5), k, n, format).unwrap();
    let deq = dequantize(&packed);
    for x_dims in [vec![k], vec![2, 1, k], vec![1, 2, k], vec![2, 9, k]] {
        let m: usize = x_dims[..x_dims.len() - 1].iter().product();
        let x = rand(m * k, 9);
        let mag = magnitudes(&deq, &x, m, k, n);
        let xt = Tensor::from_vec(x_dims.clone(), x.clone()).unwrap();
        let (got, shape, _) = run(
            matmul_graph(&x_dims, Tensor::from_packed(&packed)),
            xt.clone(),
            1,
        );
        let mut want_shape = x_dims[..x_dims.len() - 1].to_vec();
        want_shape.push(n);
        assert_eq!(shape, want_shape, "x {x_dims:?}");
        let want: Vec<f32> = (0..m)
            .flat_map(|i| {
                let row = &x[i * k..(i + 1) * k];
                (0..n)
                    .map(|j| dot_column(&packed, j, row))
                    .collect::<Vec<_>>()
            })
            .collect();
        assert_within(&got, &want, &mag, &format!("x {x_dims:?}"));
        let (two, _, _) = run(matmul_graph(&x_dims, Tensor::from_packed(&packed)), xt, 2);
        assert_within(&two, &want, &mag, &format!("x {x_dims:?}, 2 threads"));
    }
}

/// An embedding lookup from a packed `[hidden, vocab]` table: Gather along
/// axis 1, then Transpose to `[batch, seq, hidden]`, as the graph of a tied
/// model does. Decoding is exact, so the result equals the dequantized
/// table's columns bit for bit.
#[test]
fn gather_decodes_the_selected_columns_exactly() {
    let (hidden, vocab) = (70, 301);
    let ids: Vec<i64> = vec![0, 300, 7, -1, 150, 7];
    for format in QuantFormat::all() {
        let packed = quantize_rtn(&rand(hidden * vocab, 3), hidden, vocab, format).unwrap();
        let text = format!(
            "graph \"g\" {{\n  input %x: i64[2,3]\n  const %w: {format}[{hidden},{vocab}] = weight\n  %cols: f32[{hidden},2,3] = Gather(axis:1)(%w, %x)\n  %y: f32[2,3,{hidden}] = Transpose(perm:Some([1,2,0]))(%cols)\n  output %y\n}}\n"
        );
        let g = parse(&text, Tensor::from_packed(&packed));
        let exec = CpuExecutor::new(g, ExecOptions { threads: Some(2) }).expect("executor");
        let x = Tensor::from_vec(vec![2, 3], ids.clone()).unwrap();
        let r = exec
            .run(&BTreeMap::from([("x".to_string(), x)]))
            .expect("run");
        let y = r.outputs[0].1.to_vec::<f32>().unwrap();
        assert_eq!(r.outputs[0].1.dims(), [2, 3, hidden], "{format}");
        let deq = dequantize(&packed);
        for (p, &id) in ids.iter().enumerate() {
            let col = id.rem_euclid(vocab as i64) as usize;
            for h in 0..hidden {
                assert_eq!(
                    y[p * hidden + h].to_bits(),
                    deq[h * vocab + col].to_bits(),
                    "{format}: token {p} (id {id}), row {h}"
                );
            }
        }
    }
}

/// Out-of-range ids are errors, not panics.
#[test]
fn gather_rejects_out_of_range_ids() {
    let format = QuantFormat::parse("w4g32").unwrap();
    let packed = quantize_rtn(&rand(64 * 10, 1), 64, 10, format).unwrap();
    let text = "graph \"g\" {\n  input %x: i64[1]\n  const %w: w4g32[64,10] = weight\n  %y: f32[64,1] = Gather(axis:1)(%w, %x)\n  output %y\n}\n";
    let exec = CpuExecutor::new(
        parse(text, Tensor::from_packed(&packed)),
        ExecOptions::default(),
    )
    .unwrap();
    let x = Tensor::from_vec(vec![1], vec![10i64]).unwrap();
    let e = exec
        .run(&BTreeMap::from([("x".to_string(), x)]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("out of range"), "{e}");
}

/// Peak memory counts a packed weight at its packed size: with the weight as
/// an input, the peak is x + packed W + y; as a constant, x + y.
#[test]
fn peak_memory_counts_packed_bytes() {
    let format = QuantFormat::parse("w4g64").unwrap();
    let (m, k, n) = (3, 576, 192);
    let packed = quantize_rtn(&rand(k * n, 2), k, n, format).unwrap();
    let packed_bytes = packed.byte_len() as u64;
    assert_eq!(
        packed_bytes,
        kiln_ir::quant::packed_bytes(k, n, format) as u64
    );
    let x = Tensor::from_vec(vec![m, k], rand(m * k, 4)).unwrap();
    let (x_bytes, y_bytes) = (4 * (m * k) as u64, 4 * (m * n) as u64);

    let (_, _, peak) = run(
        matmul_graph(&[m, k], Tensor::from_packed(&packed)),
        x.clone(),
        1,
    );
    assert_eq!(peak, x_bytes + y_bytes);

    let text = format!(
        "graph \"g\" {{\n  input %x: f32[{m},{k}]\n  input %w: w4g64[{k},{n}]\n  %y: f32[{m},{n}] = MatMul(%x, %w)\n  output %y\n}}\n"
    );
    let g = kiln_ir::text::parse(&text, &BTreeMap::new()).unwrap();
    let exec = CpuExecutor::new(g, ExecOptions::default()).unwrap();
    let r = exec
        .run(&BTreeMap::from([
            ("x".to_string(), x),
            ("w".to_string(), Tensor::from_packed(&packed)),
        ]))
        .unwrap();
    assert_eq!(r.peak_bytes, x_bytes + packed_bytes + y_bytes);
}

/// Ops that would read codes as values are refused when the graph is loaded.
#[test]
fn other_uses_of_a_packed_weight_are_rejected() {
    let packed = quantize_rtn(&rand(64 * 8, 1), 64, 8, QuantFormat::parse("w8").unwrap()).unwrap();
    let cases = [
        "  %y: f32[64,8] = Relu(%w)",
        "  %y: f32[1,8] = Gather(axis:0)(%w, %x)",
        "  %y: f32[64,64] = MatMul(%w, %w)",
    ];
    for body in cases {
        let text = format!(
            "graph \"g\" {{\n  input %x: i64[1]\n  const %w: w8[64,8] = weight\n{body}\n  output %y\n}}\n"
        );
        let g = parse(&text, Tensor::from_packed(&packed));
        let err = CpuExecutor::new(g, ExecOptions::default());
        let Err(e) = err else {
            panic!("`{body}` was accepted");
        };
        assert!(e.to_string().contains("w8"), "`{body}`: {e}");
    }
}
