//! Max/average pooling (N-d, NCHW) and global pooling, following the ONNX
//! reference's padding and ceil-mode rules.

use super::value::{bail, strides_of, KResult, Value};
use kiln_ir::{AutoPad, DType, PoolKind, Window};
use rayon::prelude::*;

/// Pool: returns Y and, for max pooling, the flat argmax indices.
pub(crate) fn pool(
    x: &Value,
    kind: PoolKind,
    w: &Window,
    ceil_mode: bool,
    count_include_pad: bool,
    want_indices: bool,
) -> KResult<Vec<Value>> {
    let dt = x.dtype();
    if dt != DType::F32 && dt != DType::F64 {
        // Narrow floats compute in f32; integers (max only) in f64, which
        // holds every value up to 2^53 exactly.
        let work = if dt.is_float() {
            DType::F32
        } else if kind == PoolKind::Max && dt.is_integer() {
            DType::F64
        } else {
            bail!("pooling needs floating-point input, got {dt}");
        };
        let mut r = pool(
            &x.cast(work),
            kind,
            w,
            ceil_mode,
            count_include_pad,
            want_indices,
        )?;
        r[0] = r[0].cast(dt);
        return Ok(r);
    }
    if x.rank() < 3 {
        bail!("pooling needs rank ≥ 3, got {:?}", x.shape);
    }
    let sp = &x.shape[2..];
    let nd = sp.len();
    let kernel: Vec<usize> = w.kernel_shape.iter().map(|&k| k as usize).collect();
    if kernel.len() != nd || kernel.contains(&0) {
        bail!(
            "kernel_shape {:?} does not fit {nd} spatial axes",
            w.kernel_shape
        );
    }
    let ones = |v: &[u64], what: &str| -> KResult<Vec<usize>> {
        if v.is_empty() {
            Ok(vec![1; nd])
        } else if v.len() == nd && !v.contains(&0) {
            Ok(v.iter().map(|&s| s as usize).collect())
        } else {
            bail!("{what} {v:?} does not fit {nd} spatial axes")
        }
    };
    let strides = ones(&w.strides, "strides")?;
    let dil = ones(&w.dilations, "dilations")?;
    let mut pads: Vec<usize> = if w.pads.is_empty() {
        vec![0; 2 * nd]
    } else {
        w.pads.iter().map(|&p| p as usize).collect()
    };
    if pads.len() != 2 * nd {
        bail!("pads {:?} do not fit {nd} spatial axes", w.pads);
    }
    let mut out = vec![0usize; nd];
    // Begin offset of the window grid relative to the input (may exceed pads in ceil mode, like the reference).
    let mut shift = vec![0usize; nd];
    match w.auto_pad {
        AutoPad::SameUpper | AutoPad::SameLower | AutoPad::Valid => {
            for i in 0..nd {
                if w.auto_pad == AutoPad::Valid {
                    if sp[i] < kernel[i] {
                        bail!("pooling window is larger than the input");
                    }
                    out[i] = (sp[i] - kernel[i]) / strides[i] + 1;
                    pads[i] = 0;
                    pads[i + nd] = 0;
                } else {
                    out[i] = (sp[i].max(1) - 1) / strides[i] + 1;
                    let total = ((out[i] - 1) * strides[i] + kernel[i]).saturating_sub(sp[i]);
                    let (a, b) = if w.auto_pad == AutoPad::SameUpper {
                        (total / 2, total - total / 2)
                    } else {
                        (total - total / 2, total / 2)
                    };
                    pads[i] = a;
                    pads[i + nd] = b;
                }
                shift[i] = pads[i];
            }
        }
        AutoPad::NotSet => {
            for i in 0..nd {
                let span = dil[i] * (kernel[i] - 1) + 1;
                let padded = sp[i] + pads[i] + pads[i + nd];
                if padded < span {
                    bail!("pooling window is larger than the padded input");
                }
                let num = padded - span;
                let mut o = if ceil_mode {
                    num.div_ceil(strides[i]) + 1
                } else {
                    num / strides[i] + 1
                };
                if ceil_mode && (o - 1) * strides[i] >= sp[i] + pads[i] {
                    o -= 1;
                }
                out[i] = o;
                let required = (o - 1) * strides[i] + span;
                let extra = required as i64 - padded as i64;
                shift[i] = pads[i] + if extra > 0 { extra as usize / 2 } else { 0 };
            }
        }
    }
    let (n, c) = (x.shape[0], x.shape[1]);
    let in_sz: usize = sp.iter().product();
    let out_sz: usize = out.iter().product();
    let ksz: usize = kernel.iter().product();
    let in_st = strides_of(sp);
    let xs = x.to_f64s_fast();
    let mut y = vec![0f64; n * c * out_sz];
    let mut idx = vec![0i64; if want_indices { n * c * out_sz } else { 0 }];
    let plane = |p: usize, yo: &mut [f64], io: &mut [i64]| {
        let xp = &xs[p * in_sz..(p + 1) * in_sz];
        let mut o = vec![0usize; nd];
        let mut k = vec![0usize; nd];
        for oi in 0..out_sz {
            let mut r = oi;
            for d in (0..nd).rev() {
                o[d] = r % out[d];
                r /= out[d];
            }
            let (mut best, mut best_i, mut sum, mut cnt) = (f64::NEG_INFINITY, -1i64, 0.0, 0usize);
            let mut any_nan = false;
            for ki in 0..ksz {
                let mut r = ki;
                for d in (0..nd).rev() {
                    k[d] = r % kernel[d];
                    r /= kernel[d];
                }
                let mut off = 0usize;
                let mut inside = true;
                let mut in_pad_region = true;
                for d in 0..nd {
                    let q = o[d] * strides[d] + k[d] * dil[d];
                    if q >= sp[d] + pads[d] + pads[d + nd] {
                        in_pad_region = false;
                        break;
                    }
                    let pos = q as i64 - shift[d] as i64;
                    if pos < 0 || pos as usize >= sp[d] {
                        inside = false;
                    } else {
                        off += pos as usize * in_st[d];
                    }
                }
                if !in_pad_region {
                    continue;
                }
                if inside {
                    let v = xp[off];
                    match kind {
                        PoolKind::Max => {
                            if v > best || best_i < 0 {
                                best = v;
                                best_i = off as i64;
                            }
                            any_nan |= v.is_nan();
                        }
                        PoolKind::Average => {
                            sum += v;
                            cnt += 1;
                        }
                    }
                } else if count_include_pad {
                    cnt += 1;
                }
            }
            yo[oi] = match kind {
                PoolKind::Max => {
                    if any_nan {
                        f64::NAN
                    } else {
                        best
                    }
                }
                PoolKind::Average => sum / cnt.max(1) as f64,
            };
            if !io.is_empty() {
                io[oi] = (p * in_sz) as i64 + best_i.max(0);
            }
        }
    };
    if want_indices {
        y.par_chunks_mut(out_sz.max(1))
            .zip(idx.par_chunks_mut(out_sz.max(1)))
            .enumerate()
            .for_each(|(p, (yo, io))| plane(p, yo, io));
    } else {
        y.par_chunks_mut(out_sz.max(1))
            .enumerate()
            .for_each(|(p, yo)| plane(p, yo, &mut []));
    }
    let mut shape = vec![n, c];
    shape.extend(&out);
    let mut res = vec![Value::new(shape.clone(), y).cast(dt)];
    if want_indices {
        res.push(Value::new(shape, idx));
    }
    Ok(res)
}

/// GlobalAveragePool / GlobalMaxPool over every spatial axis (kept as size 1).
pub(crate) fn global_pool(x: &Value, kind: PoolKind) -> KResult<Value> {
    let dt = x.dtype();
    if !dt.is_float() {
        bail!("global pooling needs floating-point input, got {dt}");
    }
    if x.rank() < 2 {
        bail!("global pooling needs rank ≥ 2, got {:?}", x.shape);
    }
    let (n, c) = (x.shape[0], x.shape[1]);
    let sz: usize = x.shape[2..].iter().product();
    let xs = x.to_f64s_fast();
    let y: Vec<f64> = (0..n * c)
        .into_par_iter()
        .map(|p| {
            let s = &xs[p * sz..(p + 1) * sz];
            match kind {
                PoolKind::Average => s.iter().sum::<f64>() / sz as f64,
                PoolKind::Max => s.iter().copied().fold(f64::NEG_INFINITY, |a, b| {
                    if b > a || b.is_nan() {
                        b
                    } else {
                        a
                    }
                }),
            }
        })
        .collect();
    let mut shape = vec![n, c];
    shape.extend(std::iter::repeat_n(1, x.rank() - 2));
    Ok(Value::new(shape, y).cast(dt))
}

impl Value {
    /// Every element as f64 (pooling computes in f64; it is memory-bound anyway).
    pub(crate) fn to_f64s_fast(&self) -> Vec<f64> {
        self.to_f64s()
    }
}
