//! Resize, ported from the ONNX reference: interpolation is separable, so an
//! N-d resize is one 1-d pass per resized axis (computed in f64).

use super::value::{bail, norm_axis, with_dtype, Elem, KResult, Value};
use kiln_ir::{CoordinateTransform, KeepAspectRatio, NearestMode, ResizeAttrs, ResizeMode};

fn nearest_coeffs(ratio: f64, mode: NearestMode) -> Vec<f64> {
    if ratio.fract() == 0.0 {
        return vec![0.0, 1.0];
    }
    let b = |v: bool| v as u8 as f64;
    match mode {
        NearestMode::RoundPreferFloor => vec![b(ratio <= 0.5), b(ratio > 0.5)],
        NearestMode::RoundPreferCeil => vec![b(ratio < 0.5), b(ratio >= 0.5)],
        NearestMode::Floor => vec![1.0, 0.0],
        NearestMode::Ceil => vec![0.0, 1.0],
    }
}

fn cubic_coeffs(r: f64, a: f64) -> Vec<f64> {
    vec![
        ((a * (r + 1.0) - 5.0 * a) * (r + 1.0) + 8.0 * a) * (r + 1.0) - 4.0 * a,
        ((a + 2.0) * r - (a + 3.0)) * r * r + 1.0,
        ((a + 2.0) * (1.0 - r) - (a + 3.0)) * (1.0 - r) * (1.0 - r) + 1.0,
        ((a * ((1.0 - r) + 1.0) - 5.0 * a) * ((1.0 - r) + 1.0) + 8.0 * a) * ((1.0 - r) + 1.0)
            - 4.0 * a,
    ]
}

fn cubic_coeffs_antialias(r: f64, scale: f64, a: f64) -> Vec<f64> {
    let scale = scale.min(1.0);
    let f = |x: f64| {
        let x = x.abs();
        let (x2, x3) = (x * x, x * x * x);
        if x <= 1.0 {
            (a + 2.0) * x3 - (a + 3.0) * x2 + 1.0
        } else if x < 2.0 {
            a * x3 - 5.0 * a * x2 + 8.0 * a * x - 4.0 * a
        } else {
            0.0
        }
    };
    let start = (-2.0 / scale).floor() as i64 + 1;
    let end = 2 - start;
    let c: Vec<f64> = (start..end).map(|i| f(scale * (i as f64 - r))).collect();
    let s: f64 = c.iter().sum();
    c.into_iter().map(|v| v / s).collect()
}

fn linear_coeffs_antialias(r: f64, scale: f64) -> Vec<f64> {
    let scale = scale.min(1.0);
    let start = (-1.0 / scale).floor() as i64 + 1;
    let footprint = 2 - 2 * start;
    let c: Vec<f64> = (start..start + footprint)
        .map(|i| (1.0 - ((i as f64 - r) * scale).abs()).clamp(0.0, 1.0))
        .collect();
    let s: f64 = c.iter().sum();
    c.into_iter().map(|v| v / s).collect()
}

/// One 1-d interpolation pass along `axis`.
fn pass(
    data: &[f64],
    shape: &[usize],
    axis: usize,
    scale: f64,
    out_w: usize,
    roi: Option<(f64, f64)>,
    at: &ResizeAttrs,
) -> KResult<Vec<f64>> {
    let in_w = shape[axis];
    let outer: usize = shape[..axis].iter().product();
    let inner: usize = shape[axis + 1..].iter().product();
    if out_w == 0 || outer * inner == 0 {
        return Ok(Vec::new());
    }
    if in_w == 0 {
        bail!("cannot resize an empty axis");
    }
    let (fin, fout) = (in_w as f64, scale * in_w as f64);
    let mut taps: Vec<(Vec<usize>, Vec<f64>, bool)> = Vec::with_capacity(out_w);
    for o in 0..out_w {
        let y = o as f64;
        let mut extrap = false;
        let x = match at.coordinate_transform {
            CoordinateTransform::AlignCorners => {
                if fout == 1.0 {
                    0.0
                } else {
                    y * (fin - 1.0) / (fout - 1.0)
                }
            }
            CoordinateTransform::Asymmetric => y / scale,
            CoordinateTransform::TfCropAndResize => {
                let (r0, r1) = roi.unwrap_or((0.0, 1.0));
                let x = if fout == 1.0 {
                    (r1 - r0) * (fin - 1.0) / 2.0
                } else {
                    y * (r1 - r0) * (fin - 1.0) / (fout - 1.0)
                };
                let x = x + r0 * (fin - 1.0);
                extrap = x < 0.0 || x > fin - 1.0;
                x
            }
            CoordinateTransform::PytorchHalfPixel => {
                if fout == 1.0 {
                    -0.5
                } else {
                    (y + 0.5) / scale - 0.5
                }
            }
            CoordinateTransform::HalfPixel => (y + 0.5) / scale - 0.5,
            CoordinateTransform::HalfPixelSymmetric => {
                let adjustment = out_w as f64 / fout;
                let center = fin / 2.0;
                center * (1.0 - adjustment) + (y + 0.5) / scale - 0.5
            }
        };
        let xi = x.floor();
        let ratio = if x == xi { 1.0 } else { x - xi };
        let a = at.cubic_coeff_a.0 as f64;
        let mut c = match (at.mode, at.antialias) {
            (ResizeMode::Nearest, _) => nearest_coeffs(ratio, at.nearest_mode),
            (ResizeMode::Linear, false) => vec![1.0 - ratio, ratio],
            (ResizeMode::Linear, true) => linear_coeffs_antialias(ratio, scale),
            (ResizeMode::Cubic, false) => cubic_coeffs(ratio, a),
            (ResizeMode::Cubic, true) => cubic_coeffs_antialias(ratio, scale, a),
        };
        let n = c.len() as i64;
        let pad = (n + 1) / 2;
        let xp = x + pad as f64;
        let p = xp.floor();
        let frac = xp - p;
        let off = if n % 2 == 0 {
            if frac == 0.0 {
                -(n / 2)
            } else {
                -(n / 2) + 1
            }
        } else {
            let base = -((n - 1) / 2);
            if frac <= 0.5 {
                base
            } else {
                base + 1
            }
        };
        let start = p as i64 + off - pad;
        let idx: Vec<i64> = (0..n).map(|k| start + k).collect();
        if at.exclude_outside {
            for (ci, &i) in c.iter_mut().zip(&idx) {
                if i < 0 || i >= in_w as i64 {
                    *ci = 0.0;
                }
            }
            let s: f64 = c.iter().sum();
            let s = if s == 0.0 { 1.0 } else { s };
            c.iter_mut().for_each(|v| *v /= s);
        }
        let clamped = idx
            .iter()
            .map(|&i| i.clamp(0, in_w as i64 - 1) as usize)
            .collect();
        taps.push((clamped, c, extrap));
    }
    let ev = at.extrapolation_value.0 as f64;
    let mut out = vec![0f64; outer * out_w * inner];
    for o in 0..outer {
        for (j, (idx, c, ex)) in taps.iter().enumerate() {
            let dst = &mut out[(o * out_w + j) * inner..(o * out_w + j + 1) * inner];
            if *ex {
                dst.fill(ev);
                continue;
            }
            for (&i, &w) in idx.iter().zip(c) {
                if w == 0.0 {
                    continue;
                }
                let src = &data[(o * in_w + i) * inner..(o * in_w + i + 1) * inner];
                for (d, &s) in dst.iter_mut().zip(src) {
                    *d += w * s;
                }
            }
        }
    }
    Ok(out)
}

/// Resize(X, roi?, scales?, sizes?).
pub(crate) fn resize(
    x: &Value,
    roi: Option<&Value>,
    scales: Option<&Value>,
    sizes: Option<&Value>,
    at: &ResizeAttrs,
) -> KResult<Value> {
    let r = x.rank();
    let axes: Vec<usize> = if at.axes.is_empty() {
        (0..r).collect()
    } else {
        at.axes
            .iter()
            .map(|&a| norm_axis(a, r))
            .collect::<KResult<_>>()?
    };
    let scales = scales.filter(|s| s.len() > 0).map(|s| s.to_f64s());
    let sizes = sizes.filter(|s| s.len() > 0).map(|s| s.to_i64s());
    let roi_v = roi.filter(|v| v.len() > 0).map(|v| v.to_f64s());
    let mut full_roi: Option<Vec<f64>> = None;
    if let Some(rv) = &roi_v {
        if rv.len() == 2 * axes.len() {
            let mut fr: Vec<f64> = vec![0.0; r].into_iter().chain(vec![1.0; r]).collect();
            for (i, &a) in axes.iter().enumerate() {
                fr[a] = rv[i];
                fr[r + a] = rv[axes.len() + i];
            }
            full_roi = Some(fr);
        } else {
            bail!("roi has {} values for {} axes", rv.len(), axes.len());
        }
    }
    let mut scale_f = vec![1.0f64; r];
    let mut out_size = x.shape.clone();
    match (&scales, &sizes) {
        (_, Some(sz)) => {
            if sz.len() != axes.len() {
                bail!("sizes has {} values for {} axes", sz.len(), axes.len());
            }
            for (i, &a) in axes.iter().enumerate() {
                out_size[a] = sz[i].max(0) as usize;
                scale_f[a] = sz[i] as f64 / x.shape[a] as f64;
            }
            if at.keep_aspect_ratio != KeepAspectRatio::Stretch {
                let sel = axes.iter().map(|&a| scale_f[a]);
                let s = if at.keep_aspect_ratio == KeepAspectRatio::NotLarger {
                    sel.fold(f64::INFINITY, f64::min)
                } else {
                    sel.fold(f64::NEG_INFINITY, f64::max)
                };
                for &a in &axes {
                    scale_f[a] = s;
                    out_size[a] = (s * x.shape[a] as f64 + 0.5) as usize;
                }
            }
        }
        (Some(sc), None) => {
            if sc.len() != axes.len() {
                bail!("scales has {} values for {} axes", sc.len(), axes.len());
            }
            for (i, &a) in axes.iter().enumerate() {
                if sc[i] <= 0.0 {
                    bail!("scales must be positive, got {sc:?}");
                }
                scale_f[a] = sc[i];
                out_size[a] = (sc[i] * x.shape[a] as f64) as usize;
            }
        }
        (None, None) => bail!("Resize needs scales or sizes"),
    }
    let dt = x.dtype();
    let mut data = x.to_f64s();
    let mut shape = x.shape.clone();
    for &a in &axes {
        let roi_a = full_roi.as_ref().map(|fr| (fr[a], fr[a + r]));
        let trivial_roi =
            roi_a.is_none_or(|(b, e)| (b - 0.0).abs() < 1e-9 && (e - 1.0).abs() < 1e-9);
        if (scale_f[a] - 1.0).abs() < 1e-9 && out_size[a] == shape[a] && trivial_roi {
            continue;
        }
        data = pass(&data, &shape, a, scale_f[a], out_size[a], roi_a, at)?;
        shape[a] = out_size[a];
    }
    with_dtype!(dt, T => {
        let v: Vec<T> = if T::DTYPE.is_float() {
            data.iter().map(|&v| T::from_f64(v)).collect()
        } else {
            // Integer images: round and saturate instead of wrapping.
            let (lo, hi) = (min_max::<T>().0, min_max::<T>().1);
            data.iter().map(|&v| T::from_f64(v.round_ties_even().clamp(lo, hi))).collect()
        };
        Ok(Value::new(shape, v))
    })
}

fn min_max<T: Elem>() -> (f64, f64) {
    use kiln_ir::DType::*;
    match T::DTYPE {
        U8 => (0.0, 255.0),
        I8 => (-128.0, 127.0),
        U16 => (0.0, 65535.0),
        I16 => (-32768.0, 32767.0),
        U32 => (0.0, u32::MAX as f64),
        I32 => (i32::MIN as f64, i32::MAX as f64),
        U64 => (0.0, u64::MAX as f64),
        Bool => (0.0, 1.0),
        _ => (i64::MIN as f64, i64::MAX as f64),
    }
}
