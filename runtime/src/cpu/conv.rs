//! Conv (im2col + gemm) and ConvTranspose (gemm + col2im), N-d, NCHW.

use super::matmul::{gemm_into, Mat};
use super::value::{bail, KResult, Value};
use kiln_ir::{AutoPad, DType, Window};
use rayon::prelude::*;

/// Resolved window geometry for one spatial rank.
pub(crate) struct Geometry {
    pub kernel: Vec<usize>,
    pub strides: Vec<usize>,
    pub dilations: Vec<usize>,
    /// Begin pads per axis.
    pub pad_begin: Vec<usize>,
    pub out: Vec<usize>,
}

fn or_ones(v: &[u64], n: usize, what: &str) -> KResult<Vec<usize>> {
    if v.is_empty() {
        return Ok(vec![1; n]);
    }
    if v.len() != n {
        bail!("{what} has {} entries for {n} spatial axes", v.len());
    }
    if v.contains(&0) {
        bail!("{what} must be positive, got {v:?}");
    }
    Ok(v.iter().map(|&x| x as usize).collect())
}

/// Output size and begin padding of a convolution window over `input` spatial dims.
pub(crate) fn conv_geometry(w: &Window, input: &[usize], kernel: &[usize]) -> KResult<Geometry> {
    let n = input.len();
    let strides = or_ones(&w.strides, n, "strides")?;
    let dilations = or_ones(&w.dilations, n, "dilations")?;
    let pads: Vec<usize> = if w.pads.is_empty() {
        vec![0; 2 * n]
    } else if w.pads.len() == 2 * n {
        w.pads.iter().map(|&p| p as usize).collect()
    } else {
        bail!("pads has {} entries for {n} spatial axes", w.pads.len());
    };
    let mut pad_begin = vec![0; n];
    let mut out = vec![0; n];
    for i in 0..n {
        let span = dilations[i] * (kernel[i].max(1) - 1) + 1;
        match w.auto_pad {
            AutoPad::SameUpper | AutoPad::SameLower => {
                let o = input[i].div_ceil(strides[i]);
                let total = ((o.max(1) - 1) * strides[i] + span).saturating_sub(input[i]);
                pad_begin[i] = if w.auto_pad == AutoPad::SameUpper {
                    total / 2
                } else {
                    total - total / 2
                };
                out[i] = o;
            }
            AutoPad::Valid | AutoPad::NotSet => {
                let (pb, pe) = if w.auto_pad == AutoPad::Valid {
                    (0, 0)
                } else {
                    (pads[i], pads[i + n])
                };
                let padded = input[i] + pb + pe;
                if padded < span {
                    bail!("window of extent {span} is larger than the padded input {padded}");
                }
                pad_begin[i] = pb;
                out[i] = (padded - span) / strides[i] + 1;
            }
        }
    }
    Ok(Geometry {
        kernel: kernel.to_vec(),
        strides,
        dilations,
        pad_begin,
        out,
    })
}

/// For each spatial axis, `table[k * out + o]` = input index read by kernel tap k at output o, or None.
fn tap_tables(g: &Geometry, input: &[usize]) -> Vec<Vec<Option<usize>>> {
    (0..input.len())
        .map(|i| {
            let (kn, on) = (g.kernel[i], g.out[i]);
            let mut t = vec![None; kn * on];
            for k in 0..kn {
                for o in 0..on {
                    let p =
                        (o * g.strides[i] + k * g.dilations[i]) as isize - g.pad_begin[i] as isize;
                    if p >= 0 && (p as usize) < input[i] {
                        t[k * on + o] = Some(p as usize);
                    }
                }
            }
            t
        })
        .collect()
}

/// Conv: X [N, C, ...], W [M, C/group, k...], optional B [M].
pub(crate) fn conv(
    x: &Value,
    w: &Value,
    b: Option<&Value>,
    window: &Window,
    group: u64,
) -> KResult<Value> {
    let dt = x.dtype();
    if w.dtype() != dt || b.is_some_and(|b| b.dtype() != dt) {
        bail!("Conv operands have different dtypes");
    }
    if dt != DType::F32 {
        if !dt.is_float() {
            bail!("Conv needs floating-point operands, got {dt}");
        }
        let b32 = b.map(|b| b.cast(DType::F32));
        return Ok(conv(
            &x.cast(DType::F32),
            &w.cast(DType::F32),
            b32.as_ref(),
            window,
            group,
        )?
        .cast(dt));
    }
    if x.rank() < 3 || w.rank() != x.rank() {
        bail!(
            "Conv needs X and W of equal rank ≥ 3, got {:?} and {:?}",
            x.shape,
            w.shape
        );
    }
    let g = group.max(1) as usize;
    let (n, c) = (x.shape[0], x.shape[1]);
    let m = w.shape[0];
    let cg = w.shape[1];
    if c != cg * g || !m.is_multiple_of(g) {
        bail!(
            "Conv channels do not match: X {:?}, W {:?}, group {g}",
            x.shape,
            w.shape
        );
    }
    let sp_in = &x.shape[2..];
    let kernel = &w.shape[2..];
    if !window.kernel_shape.is_empty()
        && window
            .kernel_shape
            .iter()
            .map(|&k| k as usize)
            .ne(kernel.iter().copied())
    {
        bail!(
            "Conv kernel_shape {:?} does not match W {:?}",
            window.kernel_shape,
            w.shape
        );
    }
    let geo = conv_geometry(window, sp_in, kernel)?;
    let mg = m / g;
    let ksize: usize = kernel.iter().product();
    let in_sz: usize = sp_in.iter().product();
    let out_sz: usize = geo.out.iter().product();
    let rows = cg * ksize;
    let xs = x.slice::<f32>()?;
    let ws = w.slice::<f32>()?;
    let bias = match b {
        Some(b) if b.len() != m => {
            bail!("Conv bias has {} elements for {m} output channels", b.len())
        }
        Some(b) => Some(b.slice::<f32>()?),
        None => None,
    };
    let mut out_shape = vec![n, m];
    out_shape.extend(&geo.out);
    let mut out = vec![0f32; n * m * out_sz];
    let threads = rayon::current_num_threads();
    // A 1×1 window with unit strides and no padding reads X directly as the column matrix.
    let direct = kernel.iter().all(|&k| k == 1)
        && geo.strides.iter().all(|&s| s == 1)
        && geo.pad_begin.iter().all(|&p| p == 0)
        && geo.out == sp_in;
    let tables = tap_tables(&geo, sp_in);
    let mut col = if direct {
        Vec::new()
    } else {
        vec![0f32; rows * out_sz]
    };
    for ni in 0..n {
        for gi in 0..g {
            let x_off = (ni * c + gi * cg) * in_sz;
            let (src, src_off): (&[f32], usize) = if direct {
                (xs, x_off)
            } else {
                im2col(
                    &xs[x_off..x_off + cg * in_sz],
                    sp_in,
                    &geo,
                    &tables,
                    &mut col,
                );
                (&col, 0)
            };
            let o_off = (ni * m + gi * mg) * out_sz;
            let dst = &mut out[o_off..o_off + mg * out_sz];
            gemm_into(
                dst,
                (mg, out_sz, rows),
                ws,
                Mat {
                    off: gi * mg * rows,
                    rs: rows as isize,
                    cs: 1,
                },
                src,
                Mat {
                    off: src_off,
                    rs: out_sz as isize,
                    cs: 1,
                },
                1.0,
                false,
                threads,
            );
            if let Some(bias) = bias {
                for (j, row) in dst.chunks_mut(out_sz.max(1)).enumerate() {
                    let bv = bias[gi * mg + j];
                    row.iter_mut().for_each(|v| *v += bv);
                }
            }
        }
    }
    Ok(Value::new(out_shape, out))
}

/// Fills `col` [C·K, OUT] with the input taps of every output position.
fn im2col(
    x: &[f32],
    sp_in: &[usize],
    geo: &Geometry,
    tables: &[Vec<Option<usize>>],
    col: &mut [f32],
) {
    let nd = sp_in.len();
    let out_sz: usize = geo.out.iter().product();
    let ksize: usize = geo.kernel.iter().product();
    let in_sz: usize = sp_in.iter().product();
    let in_strides = super::value::strides_of(sp_in);
    let last_out = geo.out[nd - 1];
    let body = |r: usize, row: &mut [f32]| {
        let (ch, mut kidx) = (r / ksize, r % ksize);
        // Kernel tap per axis.
        let mut kk = vec![0usize; nd];
        for d in (0..nd).rev() {
            kk[d] = kidx % geo.kernel[d];
            kidx /= geo.kernel[d];
        }
        let xc = &x[ch * in_sz..(ch + 1) * in_sz];
        let last_tab = &tables[nd - 1][kk[nd - 1] * last_out..(kk[nd - 1] + 1) * last_out];
        // Walk output rows (all axes but the last) with an odometer.
        let mut o = vec![0usize; nd];
        for seg in row.chunks_mut(last_out.max(1)) {
            let mut base = Some(0usize);
            for d in 0..nd - 1 {
                match (base, tables[d][kk[d] * geo.out[d] + o[d]]) {
                    (Some(b), Some(p)) => base = Some(b + p * in_strides[d]),
                    _ => base = None,
                }
            }
            match base {
                None => seg.fill(0.0),
                Some(b) => {
                    for (v, t) in seg.iter_mut().zip(last_tab) {
                        *v = match t {
                            Some(p) => xc[b + p],
                            None => 0.0,
                        };
                    }
                }
            }
            for d in (0..nd.saturating_sub(1)).rev() {
                o[d] += 1;
                if o[d] < geo.out[d] {
                    break;
                }
                o[d] = 0;
            }
        }
    };
    if col.len() >= super::elementwise::PAR_MIN {
        col.par_chunks_mut(out_sz.max(1))
            .enumerate()
            .for_each(|(r, row)| body(r, row));
    } else {
        col.chunks_mut(out_sz.max(1))
            .enumerate()
            .for_each(|(r, row)| body(r, row));
    }
}

/// ConvTranspose: X [N, C, ...], W [C, M/group, k...], optional B [M].
pub(crate) fn conv_transpose(
    x: &Value,
    w: &Value,
    b: Option<&Value>,
    window: &Window,
    group: u64,
    output_padding: &[u64],
    output_shape: &[u64],
) -> KResult<Value> {
    let dt = x.dtype();
    if w.dtype() != dt || b.is_some_and(|b| b.dtype() != dt) {
        bail!("ConvTranspose operands have different dtypes");
    }
    if dt != DType::F32 {
        if !dt.is_float() {
            bail!("ConvTranspose needs floating-point operands, got {dt}");
        }
        let b32 = b.map(|b| b.cast(DType::F32));
        return Ok(conv_transpose(
            &x.cast(DType::F32),
            &w.cast(DType::F32),
            b32.as_ref(),
            window,
            group,
            output_padding,
            output_shape,
        )?
        .cast(dt));
    }
    if x.rank() < 3 || w.rank() != x.rank() {
        bail!(
            "ConvTranspose needs X and W of equal rank ≥ 3, got {:?} and {:?}",
            x.shape,
            w.shape
        );
    }
    let g = group.max(1) as usize;
    let (n, c) = (x.shape[0], x.shape[1]);
    if w.shape[0] != c || c % g != 0 {
        bail!(
            "ConvTranspose channels do not match: X {:?}, W {:?}, group {g}",
            x.shape,
            w.shape
        );
    }
    let mg = w.shape[1];
    let m = mg * g;
    let cg = c / g;
    let sp_in = &x.shape[2..];
    let nd = sp_in.len();
    let kernel: Vec<usize> = w.shape[2..].to_vec();
    let strides = or_ones(&window.strides, nd, "strides")?;
    let dil = or_ones(&window.dilations, nd, "dilations")?;
    let opad: Vec<usize> = if output_padding.is_empty() {
        vec![0; nd]
    } else {
        output_padding.iter().map(|&v| v as usize).collect()
    };
    if opad.len() != nd {
        bail!(
            "output_padding has {} entries for {nd} spatial axes",
            opad.len()
        );
    }
    let given_out: Option<Vec<usize>> = match output_shape.len() {
        0 => None,
        l if l == nd => Some(output_shape.iter().map(|&v| v as usize).collect()),
        l if l == nd + 2 => Some(output_shape[2..].iter().map(|&v| v as usize).collect()),
        l => bail!("output_shape has {l} entries for {nd} spatial axes"),
    };
    let full = |i: usize| {
        (strides[i] * (sp_in[i].max(1) - 1) + opad[i] + (kernel[i] - 1) * dil[i] + 1) as i64
    };
    let same = matches!(window.auto_pad, AutoPad::SameUpper | AutoPad::SameLower);
    let (pad_begin, out_sp): (Vec<i64>, Vec<usize>) = if window.pads.is_empty() && same {
        // Follows the ONNX reference: output defaults to input · stride, padding split by auto_pad.
        let out = given_out
            .clone()
            .unwrap_or_else(|| (0..nd).map(|i| sp_in[i] * strides[i]).collect());
        let pb = (0..nd)
            .map(|i| {
                let total = full(i) - out[i] as i64;
                if window.auto_pad == AutoPad::SameUpper {
                    total.div_euclid(2)
                } else {
                    total - total.div_euclid(2)
                }
            })
            .collect();
        (pb, out)
    } else {
        let pads: Vec<i64> = if window.pads.is_empty() {
            vec![0; 2 * nd]
        } else {
            window.pads.iter().map(|&p| p as i64).collect()
        };
        if pads.len() != 2 * nd {
            bail!("pads has {} entries for {nd} spatial axes", pads.len());
        }
        let out = match given_out {
            Some(o) => o,
            None => (0..nd)
                .map(|i| {
                    let v = full(i) - pads[i] - pads[i + nd];
                    if v < 0 {
                        bail!("ConvTranspose output size is negative on axis {i}");
                    }
                    Ok(v as usize)
                })
                .collect::<KResult<Vec<_>>>()?,
        };
        (pads[..nd].to_vec(), out)
    };
    let ksize: usize = kernel.iter().product();
    let in_sz: usize = sp_in.iter().product();
    let out_sz: usize = out_sp.iter().product();
    let xs = x.slice::<f32>()?;
    let ws = w.slice::<f32>()?;
    if let Some(b) = b {
        if b.len() != m {
            bail!(
                "ConvTranspose bias has {} elements for {m} output channels",
                b.len()
            );
        }
    }
    let rows = mg * ksize;
    let mut col = vec![0f32; rows * in_sz];
    let mut out = vec![0f32; n * m * out_sz];
    let threads = rayon::current_num_threads();
    let out_strides = super::value::strides_of(&out_sp);
    let in_strides = super::value::strides_of(sp_in);
    for ni in 0..n {
        for gi in 0..g {
            // col [Mg·K, IN] = W_gᵀ [Mg·K, Cg] · X_g [Cg, IN]
            gemm_into(
                &mut col,
                (rows, in_sz, cg),
                ws,
                Mat {
                    off: gi * cg * rows,
                    rs: 1,
                    cs: rows as isize,
                },
                xs,
                Mat {
                    off: (ni * c + gi * cg) * in_sz,
                    rs: in_sz as isize,
                    cs: 1,
                },
                1.0,
                false,
                threads,
            );
            // col2im: scatter-add each tap into the output.
            let o_base = (ni * m + gi * mg) * out_sz;
            let dst = &mut out[o_base..o_base + mg * out_sz];
            dst.par_chunks_mut(out_sz.max(1))
                .enumerate()
                .for_each(|(oc, plane)| {
                    if nd == 2 {
                        // The common image case, with the index arithmetic
                        // hoisted out of the inner loop.
                        let (ih_n, iw_n) = (sp_in[0], sp_in[1]);
                        let (oh_n, ow_n) = (out_sp[0] as i64, out_sp[1]);
                        for kh in 0..kernel[0] {
                            for kw in 0..kernel[1] {
                                let k = kh * kernel[1] + kw;
                                let crow =
                                    &col[(oc * ksize + k) * in_sz..(oc * ksize + k + 1) * in_sz];
                                for ih in 0..ih_n {
                                    let oh = (ih * strides[0] + kh * dil[0]) as i64 - pad_begin[0];
                                    if oh < 0 || oh >= oh_n {
                                        continue;
                                    }
                                    let src = &crow[ih * iw_n..(ih + 1) * iw_n];
                                    let dst =
                                        &mut plane[oh as usize * ow_n..(oh as usize + 1) * ow_n];
                                    for (iw, &v) in src.iter().enumerate() {
                                        let ow =
                                            (iw * strides[1] + kw * dil[1]) as i64 - pad_begin[1];
                                        if ow >= 0 && (ow as usize) < ow_n {
                                            dst[ow as usize] += v;
                                        }
                                    }
                                }
                            }
                        }
                        return;
                    }
                    let mut kk = vec![0usize; nd];
                    let mut ii = vec![0usize; nd];
                    for k in 0..ksize {
                        let mut r = k;
                        for d in (0..nd).rev() {
                            kk[d] = r % kernel[d];
                            r /= kernel[d];
                        }
                        let crow = &col[(oc * ksize + k) * in_sz..(oc * ksize + k + 1) * in_sz];
                        for (p, &v) in crow.iter().enumerate() {
                            let mut r = p;
                            for d in (0..nd).rev() {
                                ii[d] = r % sp_in[d];
                                r /= sp_in[d];
                            }
                            let mut off = 0usize;
                            let mut ok = true;
                            for d in 0..nd {
                                let pos =
                                    (ii[d] * strides[d] + kk[d] * dil[d]) as i64 - pad_begin[d];
                                if pos < 0 || pos as usize >= out_sp[d] {
                                    ok = false;
                                    break;
                                }
                                off += pos as usize * out_strides[d];
                            }
                            if ok {
                                plane[off] += v;
                            }
                        }
                    }
                    let _ = &in_strides;
                });
        }
    }
    if let Some(b) = b {
        let bs = b.slice::<f32>()?;
        for (i, plane) in out.chunks_mut(out_sz.max(1)).enumerate() {
            let bv = bs[i % m];
            plane.iter_mut().for_each(|v| *v += bv);
        }
    }
    let mut shape = vec![n, m];
    shape.extend(out_sp);
    Ok(Value::new(shape, out))
}
