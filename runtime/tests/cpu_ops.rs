//! Kernel checks against independent expectations: naive loops on random
//! data, and small cases whose expected numbers are worked out by hand (or
//! with numpy, as noted).

use kiln_ir::{AutoPad, Float, Op, Tensor, Window};
use kiln_runtime::cpu::eval_node;

/// Deterministic pseudo-random floats in [-1, 1).
fn rand(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn t32(dims: &[usize], v: Vec<f32>) -> Tensor {
    Tensor::from_vec(dims.to_vec(), v).unwrap()
}

fn ti64(dims: &[usize], v: Vec<i64>) -> Tensor {
    Tensor::from_vec(dims.to_vec(), v).unwrap()
}

fn eval1(op: Op, inputs: &[Option<&Tensor>]) -> Tensor {
    eval_node(&op, inputs, 1).unwrap().remove(0)
}

fn assert_close(got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len(), "length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= tol + tol * w.abs(),
            "element {i}: got {g}, want {w}"
        );
    }
}

fn naive_matmul(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
    let mut c = vec![0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut s = 0f64;
            for p in 0..k {
                s += a[i * k + p] as f64 * b[p * n + j] as f64;
            }
            c[i * n + j] = s as f32;
        }
    }
    c
}

#[test]
fn matmul_matches_naive_loop_with_batch_broadcasting() {
    // (a shape, b shape, batch of a, batch of b, broadcast batch)
    let cases: &[(&[usize], &[usize])] = &[
        (&[3, 4], &[4, 5]),
        (&[64, 70], &[70, 90]),
        (&[2, 3, 4], &[4, 5]),
        (&[2, 1, 3, 4], &[5, 4, 6]),
        (&[4], &[4, 5]),
        (&[2, 3, 4], &[4]),
        (&[3, 100, 33], &[3, 33, 65]),
    ];
    for (ci, (ash, bsh)) in cases.iter().enumerate() {
        let a = rand(ash.iter().product(), ci as u64 * 2);
        let b = rand(bsh.iter().product(), ci as u64 * 2 + 1);
        let got = eval1(
            Op::MatMul,
            &[Some(&t32(ash, a.clone())), Some(&t32(bsh, b.clone()))],
        );
        // Reference: promote vectors, broadcast batches, naive loop per batch.
        let a2: Vec<usize> = if ash.len() == 1 {
            vec![1, ash[0]]
        } else {
            ash.to_vec()
        };
        let b2: Vec<usize> = if bsh.len() == 1 {
            vec![bsh[0], 1]
        } else {
            bsh.to_vec()
        };
        let (m, k, n) = (a2[a2.len() - 2], a2[a2.len() - 1], b2[b2.len() - 1]);
        let ab = &a2[..a2.len() - 2];
        let bb = &b2[..b2.len() - 2];
        let r = ab.len().max(bb.len());
        let pad = |s: &[usize]| -> Vec<usize> {
            std::iter::repeat_n(1, r - s.len())
                .chain(s.iter().copied())
                .collect()
        };
        let (pa, pb) = (pad(ab), pad(bb));
        let batch: Vec<usize> = (0..r).map(|i| pa[i].max(pb[i])).collect();
        let nb: usize = batch.iter().product();
        let mut want = Vec::new();
        for bi in 0..nb {
            let (mut rem, mut oa, mut ob, mut sa, mut sb) = (bi, 0, 0, 1, 1);
            for d in (0..r).rev() {
                let i = rem % batch[d];
                rem /= batch[d];
                if pa[d] != 1 {
                    oa += i * sa;
                }
                if pb[d] != 1 {
                    ob += i * sb;
                }
                sa *= pa[d];
                sb *= pb[d];
            }
            want.extend(naive_matmul(
                &a[oa * m * k..(oa + 1) * m * k],
                &b[ob * k * n..(ob + 1) * k * n],
                m,
                k,
                n,
            ));
        }
        let mut want_shape = batch.clone();
        if ash.len() > 1 {
            want_shape.push(m);
        }
        if bsh.len() > 1 {
            want_shape.push(n);
        }
        assert_eq!(got.dims(), &want_shape[..], "case {ci}");
        assert_close(&got.to_vec::<f32>().unwrap(), &want, 1e-4);
    }
}

#[test]
fn matmul_inner_mismatch_is_an_error() {
    let a = t32(&[2, 3], vec![0.0; 6]);
    let b = t32(&[4, 2], vec![0.0; 8]);
    let e = eval_node(&Op::MatMul, &[Some(&a), Some(&b)], 1)
        .unwrap_err()
        .to_string();
    assert!(e.contains("inner"), "{e}");
}

#[test]
fn gemm_transposes_and_broadcasts_c() {
    // A = [[1,2],[3,4]] (transposed: [[1,3],[2,4]]), B = I, C = [10, 20] broadcast over rows.
    // alpha 2, beta 0.5 → 2·Aᵀ + 0.5·C = [[2+5, 6+10], [4+5, 8+10]] = [[7,16],[9,18]].
    let a = t32(&[2, 2], vec![1.0, 2.0, 3.0, 4.0]);
    let b = t32(&[2, 2], vec![1.0, 0.0, 0.0, 1.0]);
    let c = t32(&[2], vec![10.0, 20.0]);
    let op = Op::Gemm {
        alpha: Float(2.0),
        beta: Float(0.5),
        trans_a: true,
        trans_b: true,
    };
    let y = eval1(op, &[Some(&a), Some(&b), Some(&c)]);
    assert_eq!(y.to_vec::<f32>().unwrap(), vec![7.0, 16.0, 9.0, 18.0]);
}

#[allow(clippy::too_many_arguments)]
fn naive_conv(
    x: &[f32],
    xs: [usize; 4],
    w: &[f32],
    ws: [usize; 4],
    b: &[f32],
    stride: usize,
    pad: usize,
    dil: usize,
    group: usize,
) -> (Vec<f32>, [usize; 4]) {
    let [n, c, h, wd] = xs;
    let [m, cg, kh, kw] = ws;
    let oh = (h + 2 * pad - dil * (kh - 1) - 1) / stride + 1;
    let ow = (wd + 2 * pad - dil * (kw - 1) - 1) / stride + 1;
    let mg = m / group;
    let mut y = vec![0f32; n * m * oh * ow];
    for ni in 0..n {
        for mi in 0..m {
            let g = mi / mg;
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut s = b[mi] as f64;
                    for ci in 0..cg {
                        for ky in 0..kh {
                            for kx in 0..kw {
                                let iy = (oy * stride + ky * dil) as isize - pad as isize;
                                let ix = (ox * stride + kx * dil) as isize - pad as isize;
                                if iy < 0 || ix < 0 || iy >= h as isize || ix >= wd as isize {
                                    continue;
                                }
                                let xv = x
                                    [((ni * c + g * cg + ci) * h + iy as usize) * wd + ix as usize];
                                let wv = w[((mi * cg + ci) * kh + ky) * kw + kx];
                                s += xv as f64 * wv as f64;
                            }
                        }
                    }
                    y[((ni * m + mi) * oh + oy) * ow + ox] = s as f32;
                }
            }
        }
    }
    let _ = c;
    (y, [n, m, oh, ow])
}

#[test]
fn conv_matches_naive_direct_convolution() {
    // (x shape, w shape, stride, pad, dilation, group)
    let cases = [
        ([1, 3, 8, 8], [4, 3, 3, 3], 1, 1, 1, 1),
        ([2, 4, 9, 7], [6, 2, 3, 2], 2, 1, 1, 2),
        ([1, 4, 10, 10], [4, 1, 3, 3], 1, 2, 2, 4),
        ([1, 8, 5, 5], [3, 8, 1, 1], 1, 0, 1, 1),
        ([1, 3, 28, 28], [16, 3, 14, 14], 14, 0, 1, 1),
    ];
    for (ci, (xs, ws, s, p, d, g)) in cases.into_iter().enumerate() {
        let x = rand(xs.iter().product(), 10 + ci as u64);
        let w = rand(ws.iter().product(), 20 + ci as u64);
        let b = rand(ws[0], 30 + ci as u64);
        let (want, shape) = naive_conv(&x, xs, &w, ws, &b, s, p, d, g);
        let op = Op::Conv {
            window: Window {
                kernel_shape: vec![],
                strides: vec![s as u64; 2],
                pads: vec![p as u64; 4],
                dilations: vec![d as u64; 2],
                auto_pad: AutoPad::NotSet,
            },
            group: g as u64,
        };
        let got = eval1(
            op,
            &[
                Some(&t32(&xs, x)),
                Some(&t32(&ws, w)),
                Some(&t32(&[ws[0]], b)),
            ],
        );
        assert_eq!(got.dims(), &shape, "case {ci}");
        assert_close(&got.to_vec::<f32>().unwrap(), &want, 1e-4);
    }
}

#[test]
fn conv_same_upper_keeps_spatial_size() {
    let x = t32(&[1, 1, 5, 5], (0..25).map(|v| v as f32).collect());
    let w = t32(&[1, 1, 3, 3], vec![1.0; 9]);
    let op = Op::Conv {
        window: Window {
            kernel_shape: vec![3, 3],
            strides: vec![],
            pads: vec![],
            dilations: vec![],
            auto_pad: AutoPad::SameUpper,
        },
        group: 1,
    };
    let y = eval1(op, &[Some(&x), Some(&w)]);
    assert_eq!(y.dims(), &[1, 1, 5, 5]);
    // Top-left: 0+1+5+6 = 12; centre (2,2): sum of 6..8, 11..13, 16..18 = 108 (3×3 box sums).
    let v = y.to_vec::<f32>().unwrap();
    assert_eq!(v[0], 12.0);
    assert_eq!(v[12], 108.0);
}

#[test]
fn binary_broadcasting() {
    // [2,3,1] + [1,4] → [2,3,4]; out[i,j,k] = a[i,j] + b[k].
    let a = t32(&[2, 3, 1], vec![0.0, 10.0, 20.0, 30.0, 40.0, 50.0]);
    let b = t32(&[1, 4], vec![1.0, 2.0, 3.0, 4.0]);
    let y = eval1(Op::Add, &[Some(&a), Some(&b)]);
    assert_eq!(y.dims(), &[2, 3, 4]);
    let v = y.to_vec::<f32>().unwrap();
    assert_eq!(&v[..8], &[1.0, 2.0, 3.0, 4.0, 11.0, 12.0, 13.0, 14.0]);
    assert_eq!(v[23], 54.0);
    // Incompatible shapes are an error, not a panic.
    let c = t32(&[3], vec![0.0; 3]);
    assert!(eval_node(&Op::Add, &[Some(&b), Some(&c)], 1).is_err());
    // Scalar broadcast with a big operand (parallel path).
    let big = t32(&[70000], vec![1.0; 70000]);
    let s = t32(&[], vec![2.0]);
    let y = eval1(Op::Mul, &[Some(&big), Some(&s)]);
    assert!(y.to_vec::<f32>().unwrap().iter().all(|&v| v == 2.0));
}

#[test]
fn integer_div_and_mod_sign_rules() {
    let a = ti64(&[4], vec![-7, 7, -7, 7]);
    let b = ti64(&[4], vec![2, -2, -2, 2]);
    // Div truncates toward zero (C semantics, as ONNX's reference): -3.5 → -3.
    let d = eval1(Op::Div, &[Some(&a), Some(&b)]);
    assert_eq!(d.to_vec::<i64>().unwrap(), vec![-3, -3, 3, 3]);
    // Mod with fmod=0 takes the divisor's sign (numpy.mod): -7 mod 2 = 1, 7 mod -2 = -1.
    let m = eval1(Op::Mod { fmod: false }, &[Some(&a), Some(&b)]);
    assert_eq!(m.to_vec::<i64>().unwrap(), vec![1, -1, -1, 1]);
    // fmod=1 takes the dividend's sign (C fmod).
    let f = eval1(Op::Mod { fmod: true }, &[Some(&a), Some(&b)]);
    assert_eq!(f.to_vec::<i64>().unwrap(), vec![-1, 1, -1, 1]);
    // Division by zero does not panic (numpy gives 0).
    let z = ti64(&[4], vec![0; 4]);
    assert_eq!(
        eval1(Op::Div, &[Some(&a), Some(&z)])
            .to_vec::<i64>()
            .unwrap(),
        vec![0; 4]
    );
    // Float Mod fmod=0: -7.5 mod 2 = 0.5 (numpy).
    let fm = eval1(
        Op::Mod { fmod: false },
        &[Some(&t32(&[1], vec![-7.5])), Some(&t32(&[1], vec![2.0]))],
    );
    assert_eq!(fm.to_vec::<f32>().unwrap(), vec![0.5]);
}

#[test]
fn slice_with_negative_steps_and_clamping() {
    let x = t32(&[10], (0..10).map(|v| v as f32).collect());
    // starts -1 (=9), ends i64::MIN (clamped to -1, i.e. past the front), step -3 → 9, 6, 3, 0.
    let y = eval1(
        Op::Slice,
        &[
            Some(&x),
            Some(&ti64(&[1], vec![-1])),
            Some(&ti64(&[1], vec![i64::MIN])),
            None,
            Some(&ti64(&[1], vec![-3])),
        ],
    );
    assert_eq!(y.to_vec::<f32>().unwrap(), vec![9.0, 6.0, 3.0, 0.0]);
    // 2-d: rows reversed from 2 down to 1 (exclusive 0), columns 1..100 clamped to 1..4.
    let x = t32(&[3, 4], (0..12).map(|v| v as f32).collect());
    let y = eval1(
        Op::Slice,
        &[
            Some(&x),
            Some(&ti64(&[2], vec![2, 1])),
            Some(&ti64(&[2], vec![0, 100])),
            Some(&ti64(&[2], vec![0, 1])),
            Some(&ti64(&[2], vec![-1, 2])),
        ],
    );
    assert_eq!(y.dims(), &[2, 2]);
    // Rows 2, 1; columns 1, 3 → [[9, 11], [5, 7]].
    assert_eq!(y.to_vec::<f32>().unwrap(), vec![9.0, 11.0, 5.0, 7.0]);
}

#[test]
fn softmax_and_layer_norm_values() {
    // softmax([1,2,3]) = e^(x-3)/Σ = [0.09003057, 0.24472847, 0.66524096] (numpy).
    let x = t32(&[1, 3], vec![1.0, 2.0, 3.0]);
    let y = eval1(Op::Softmax { axis: -1 }, &[Some(&x)]);
    assert_close(
        &y.to_vec::<f32>().unwrap(),
        &[0.090_030_57, 0.244_728_47, 0.665_240_96],
        1e-6,
    );
    // Softmax over axis 0 of a [2,2]: columns [1,3] and [2,2] → [[0.1192, 0.5], [0.8808, 0.5]].
    let x = t32(&[2, 2], vec![1.0, 2.0, 3.0, 2.0]);
    let y = eval1(Op::Softmax { axis: 0 }, &[Some(&x)]);
    assert_close(
        &y.to_vec::<f32>().unwrap(),
        &[0.119_202_92, 0.5, 0.880_797_1, 0.5],
        1e-6,
    );
    // LayerNorm of [1,2,3,4]: mean 2.5, var 1.25 → (x-2.5)/sqrt(1.25+1e-5) = [-1.3416, -0.4472, 0.4472, 1.3416];
    // scale 2, bias 1 → [-1.6833, 0.1056, 1.8944, 3.6833] (numpy).
    let x = t32(&[1, 4], vec![1.0, 2.0, 3.0, 4.0]);
    let s = t32(&[4], vec![2.0; 4]);
    let b = t32(&[4], vec![1.0; 4]);
    let y = eval1(
        Op::LayerNorm {
            axis: -1,
            epsilon: Float(1e-5),
        },
        &[Some(&x), Some(&s), Some(&b)],
    );
    assert_close(
        &y.to_vec::<f32>().unwrap(),
        &[-1.683_268, 0.105_577_3, 1.894_422_7, 3.683_268],
        1e-5,
    );
}

#[test]
fn erf_and_gelu_are_accurate() {
    // Compare the fast f32 erf with the f64 path (libm) over a dense range.
    let xs: Vec<f32> = (-6000..=6000)
        .map(|i| i as f32 * 1e-3)
        .chain([1e-6, -3e-5, 1e-20])
        .collect();
    let f = eval1(Op::Erf, &[Some(&t32(&[xs.len()], xs.clone()))])
        .to_vec::<f32>()
        .unwrap();
    let x64: Vec<f64> = xs.iter().map(|&v| v as f64).collect();
    let d = eval1(
        Op::Erf,
        &[Some(&Tensor::from_vec(vec![x64.len()], x64).unwrap())],
    )
    .to_vec::<f64>()
    .unwrap();
    for (i, (a, b)) in f.iter().zip(&d).enumerate() {
        assert!(
            ((*a as f64) - b).abs() <= 1e-7 + 1e-5 * b.abs(),
            "erf({}) = {a}, want {b}",
            xs[i]
        );
    }
    // Exp: fast f32 vs f64.
    let xs: Vec<f32> = (-1000..=880).map(|i| i as f32 * 0.1).collect();
    let e = eval1(Op::Exp, &[Some(&t32(&[xs.len()], xs.clone()))])
        .to_vec::<f32>()
        .unwrap();
    for (x, v) in xs.iter().zip(&e) {
        let want = (*x as f64).exp();
        assert!(
            ((*v as f64) - want).abs() <= 1e-6 * want + 1e-40,
            "exp({x}) = {v}, want {want}"
        );
    }
}

#[test]
fn gather_negative_indices_and_range_errors() {
    let x = t32(&[3, 2], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    let y = eval1(
        Op::Gather { axis: 0 },
        &[Some(&x), Some(&ti64(&[2], vec![-1, 0]))],
    );
    assert_eq!(y.to_vec::<f32>().unwrap(), vec![5.0, 6.0, 1.0, 2.0]);
    let e = eval_node(
        &Op::Gather { axis: 0 },
        &[Some(&x), Some(&ti64(&[1], vec![3]))],
        1,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("out of range"), "{e}");
}

#[test]
fn movement_ops() {
    let x = t32(&[2, 3], (0..6).map(|v| v as f32).collect());
    let y = eval1(Op::Transpose { perm: None }, &[Some(&x)]);
    assert_eq!(y.dims(), &[3, 2]);
    assert_eq!(
        y.to_vec::<f32>().unwrap(),
        vec![0.0, 3.0, 1.0, 4.0, 2.0, 5.0]
    );
    let y = eval1(Op::Concat { axis: 1 }, &[Some(&x), Some(&x)]);
    assert_eq!(
        y.to_vec::<f32>().unwrap(),
        vec![0.0, 1.0, 2.0, 0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 3.0, 4.0, 5.0]
    );
    let y = eval1(Op::Tile, &[Some(&x), Some(&ti64(&[2], vec![1, 2]))]);
    assert_eq!(y.dims(), &[2, 6]);
    assert_eq!(
        y.to_vec::<f32>().unwrap()[..6],
        [0.0, 1.0, 2.0, 0.0, 1.0, 2.0]
    );
    // Reflect pad of [1,2,3] by 2 on each side: [3,2,1,2,3,2,1].
    let v = t32(&[3], vec![1.0, 2.0, 3.0]);
    let y = eval1(
        Op::Pad {
            mode: kiln_ir::PadMode::Reflect,
        },
        &[Some(&v), Some(&ti64(&[2], vec![2, 2]))],
    );
    assert_eq!(
        y.to_vec::<f32>().unwrap(),
        vec![3.0, 2.0, 1.0, 2.0, 3.0, 2.0, 1.0]
    );
    let outs = eval_node(
        &Op::Split {
            axis: 1,
            split: None,
        },
        &[Some(&x)],
        3,
    )
    .unwrap();
    assert_eq!(outs.len(), 3);
    assert_eq!(outs[2].to_vec::<f32>().unwrap(), vec![2.0, 5.0]);
    let y = eval1(
        Op::Reshape { allowzero: false },
        &[Some(&x), Some(&ti64(&[2], vec![0, -1]))],
    );
    assert_eq!(y.dims(), &[2, 3]);
}

#[test]
fn reductions_and_topk() {
    let x = t32(&[2, 3], vec![1.0, 5.0, 3.0, 4.0, 2.0, 6.0]);
    let y = eval1(
        Op::Reduce {
            kind: kiln_ir::ReduceKind::Mean,
            axes: Some(vec![-1]),
            keepdims: true,
            noop_with_empty_axes: false,
        },
        &[Some(&x)],
    );
    assert_eq!(y.dims(), &[2, 1]);
    assert_eq!(y.to_vec::<f32>().unwrap(), vec![3.0, 4.0]);
    let outs = eval_node(
        &Op::TopK {
            axis: 1,
            largest: true,
            sorted: true,
        },
        &[Some(&x), Some(&ti64(&[1], vec![2]))],
        2,
    )
    .unwrap();
    assert_eq!(outs[0].to_vec::<f32>().unwrap(), vec![5.0, 3.0, 6.0, 4.0]);
    assert_eq!(outs[1].to_vec::<i64>().unwrap(), vec![1, 2, 2, 0]);
}

#[test]
fn resize_nearest_and_linear() {
    use kiln_ir::{CoordinateTransform, KeepAspectRatio, NearestMode, ResizeAttrs, ResizeMode};
    let attrs = |mode, ct| ResizeAttrs {
        mode,
        coordinate_transform: ct,
        nearest_mode: NearestMode::RoundPreferFloor,
        cubic_coeff_a: Float(-0.75),
        exclude_outside: false,
        extrapolation_value: Float(0.0),
        axes: vec![],
        keep_aspect_ratio: KeepAspectRatio::Stretch,
        antialias: false,
    };
    let x = t32(&[1, 1, 2, 2], vec![1.0, 2.0, 3.0, 4.0]);
    let scales = t32(&[4], vec![1.0, 1.0, 2.0, 2.0]);
    // Nearest ×2 (asymmetric): each pixel repeated 2×2.
    let y = eval1(
        Op::Resize(attrs(ResizeMode::Nearest, CoordinateTransform::Asymmetric)),
        &[Some(&x), None, Some(&scales)],
    );
    assert_eq!(y.to_vec::<f32>().unwrap()[..4], [1.0, 1.0, 2.0, 2.0]);
    // Linear ×2, half_pixel (ONNX docs resize_upsample_scales_linear): first row [1, 1.25, 1.75, 2].
    let y = eval1(
        Op::Resize(attrs(ResizeMode::Linear, CoordinateTransform::HalfPixel)),
        &[Some(&x), None, Some(&scales)],
    );
    assert_close(
        &y.to_vec::<f32>().unwrap()[..4],
        &[1.0, 1.25, 1.75, 2.0],
        1e-6,
    );
}

#[test]
fn pool_max_and_average() {
    let x = t32(&[1, 1, 4, 4], (0..16).map(|v| v as f32).collect());
    let w = Window {
        kernel_shape: vec![2, 2],
        strides: vec![2, 2],
        pads: vec![],
        dilations: vec![],
        auto_pad: AutoPad::NotSet,
    };
    let y = eval1(
        Op::Pool {
            kind: kiln_ir::PoolKind::Max,
            window: w.clone(),
            ceil_mode: false,
            count_include_pad: false,
        },
        &[Some(&x)],
    );
    assert_eq!(y.to_vec::<f32>().unwrap(), vec![5.0, 7.0, 13.0, 15.0]);
    let y = eval1(
        Op::Pool {
            kind: kiln_ir::PoolKind::Average,
            window: w,
            ceil_mode: false,
            count_include_pad: false,
        },
        &[Some(&x)],
    );
    assert_eq!(y.to_vec::<f32>().unwrap(), vec![2.5, 4.5, 10.5, 12.5]);
}
