//! MatMul, Gemm and Einsum.
//!
//! f32 and f64 products go through the `gemm` crate, which takes arbitrary
//! row/column strides, so transposed operands and broadcast batches never
//! need a copy. Half-precision types compute in f32; integer types use a
//! simple cache-friendly loop.

use super::elementwise::{broadcast_shapes, broadcast_to};
use super::qmatmul;
use super::value::{bail, strides_of, unsupported, with_dtype, with_int, Elem, KResult, Value};
use kiln_ir::DType;
use rayon::prelude::*;

/// Products with fewer multiply-adds than this run single-threaded.
const PAR_FLOPS: usize = 1 << 18;

/// Element types `gemm` multiplies.
pub(crate) trait GemmElem: Elem {}
impl GemmElem for f32 {}
impl GemmElem for f64 {}

/// One strided matrix operand: element offset, row stride, column stride.
#[derive(Clone, Copy)]
pub(crate) struct Mat {
    pub off: usize,
    pub rs: isize,
    pub cs: isize,
}

/// `dst[m×n] (row-major) = scale · a[m×k] · b[k×n] (+ dst when accumulate)`.
///
/// # Safety contract (checked by callers)
/// Every element addressed through `a`/`b` with the given strides lies inside the slices.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_into<T: GemmElem>(
    dst: &mut [T],
    (m, n, k): (usize, usize, usize),
    a: &[T],
    am: Mat,
    b: &[T],
    bm: Mat,
    scale: T,
    accumulate: bool,
    threads: usize,
) {
    debug_assert_eq!(dst.len(), m * n);
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            dst.fill(T::zero());
        }
        return;
    }
    let par = if threads > 1 && m * n * k >= PAR_FLOPS {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: callers guarantee the strided operands stay within `a` and `b`
    // (see `check_mat`), `dst` holds m·n elements, and T is f32 or f64.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.as_ptr().add(am.off),
            am.cs,
            am.rs,
            b.as_ptr().add(bm.off),
            bm.cs,
            bm.rs,
            T::one(),
            scale,
            false,
            false,
            false,
            par,
        );
    }
}

/// Checks that a strided rows×cols matrix lies within `len` elements.
pub(crate) fn check_mat(mat: Mat, rows: usize, cols: usize, len: usize) -> bool {
    if rows == 0 || cols == 0 {
        return true;
    }
    let last = mat.off as isize + (rows as isize - 1) * mat.rs + (cols as isize - 1) * mat.cs;
    last >= 0 && (last as usize) < len && mat.rs >= 0 && mat.cs >= 0
}

/// numpy `matmul` with batch broadcasting; a packed `[K, N]` second operand
/// is read in place (`qmatmul`).
pub(crate) fn matmul(a: &Value, b: &Value) -> KResult<Value> {
    if b.dtype().is_quant() {
        return qmatmul::matmul_packed(a, b);
    }
    if a.dtype().is_quant() {
        bail!(
            "a packed {} weight is MatMul's second operand ([in, out]), not its first",
            a.dtype()
        );
    }
    if a.dtype() != b.dtype() {
        bail!(
            "MatMul operands have different dtypes {} and {}",
            a.dtype(),
            b.dtype()
        );
    }
    if a.rank() == 0 || b.rank() == 0 {
        bail!(
            "MatMul operands must have rank ≥ 1, got {:?} and {:?}",
            a.shape,
            b.shape
        );
    }
    let dt = a.dtype();
    match dt {
        DType::F16 | DType::BF16 => {
            return Ok(matmul(&a.cast(DType::F32), &b.cast(DType::F32))?.cast(dt))
        }
        DType::Bool => unsupported!("MatMul on bool"),
        _ => {}
    }
    // Promote vectors to matrices and remember which axes to drop afterwards.
    let a_vec = a.rank() == 1;
    let b_vec = b.rank() == 1;
    let ash: Vec<usize> = if a_vec {
        vec![1, a.shape[0]]
    } else {
        a.shape.clone()
    };
    let bsh: Vec<usize> = if b_vec {
        vec![b.shape[0], 1]
    } else {
        b.shape.clone()
    };
    let (m, k) = (ash[ash.len() - 2], ash[ash.len() - 1]);
    let (k2, n) = (bsh[bsh.len() - 2], bsh[bsh.len() - 1]);
    if k != k2 {
        bail!(
            "MatMul inner dimensions differ: {:?} × {:?}",
            a.shape,
            b.shape
        );
    }
    let abatch = &ash[..ash.len() - 2];
    let bbatch = &bsh[..bsh.len() - 2];
    let batch = broadcast_shapes(&[abatch, bbatch])?;
    let mut out_shape = batch.clone();
    if !a_vec {
        out_shape.push(m);
    }
    if !b_vec {
        out_shape.push(n);
    }
    let nb: usize = batch.iter().product();
    // Batch offsets of each operand (0 stride on broadcast axes).
    let offsets = |sh: &[usize], mat: usize| -> Vec<usize> {
        let off = batch.len() - sh.len();
        let st = strides_of(sh);
        (0..nb)
            .map(|mut i| {
                let mut o = 0;
                for d in (0..batch.len()).rev() {
                    let idx = i % batch[d];
                    i /= batch[d];
                    if d >= off && sh[d - off] != 1 {
                        o += idx * st[d - off];
                    }
                }
                o * mat
            })
            .collect()
    };
    let a_off = offsets(abatch, m * k);
    let b_off = offsets(bbatch, k * n);
    let threads = rayon::current_num_threads();
    with_dtype!(dt, T => {
        let out = batched::<T>(a.slice::<T>()?, b.slice::<T>()?, &a_off, &b_off, (m, n, k), bbatch.iter().product::<usize>() == 1 && abatch.len() == batch.len(), threads)?;
        Ok(Value::new(out_shape, out))
    })
}

/// Runs `nb` row-major products; `fold_batch` says the right operand is shared and the left
/// one contiguous, so all batches become one tall product.
fn batched<T: Elem>(
    a: &[T],
    b: &[T],
    a_off: &[usize],
    b_off: &[usize],
    (m, n, k): (usize, usize, usize),
    fold_batch: bool,
    threads: usize,
) -> KResult<Vec<T>> {
    let nb = a_off.len();
    let mut out = vec![T::default(); nb * m * n];
    macro_rules! float_path {
        ($F:ty) => {{
            // SAFETY of the casts: T is $F here (checked by DTYPE).
            let a: &[$F] = bytemuck_view(a);
            let b: &[$F] = bytemuck_view(b);
            let o: &mut [$F] = bytemuck_view_mut(&mut out);
            let am = |off| Mat {
                off,
                rs: k as isize,
                cs: 1,
            };
            let bm = |off| Mat {
                off,
                rs: n as isize,
                cs: 1,
            };
            if fold_batch && nb > 1 {
                gemm_into(
                    o,
                    (nb * m, n, k),
                    a,
                    am(0),
                    b,
                    bm(b_off[0]),
                    1.0,
                    false,
                    threads,
                );
            } else if nb > 1 && m * n * k < (1 << 22) && threads > 1 {
                // Many small products: one thread each beats splitting each one.
                o.par_chunks_mut(m * n).enumerate().for_each(|(i, o)| {
                    gemm_into(
                        o,
                        (m, n, k),
                        a,
                        am(a_off[i]),
                        b,
                        bm(b_off[i]),
                        1.0,
                        false,
                        1,
                    );
                });
            } else {
                for (i, o) in o.chunks_mut((m * n).max(1)).enumerate().take(nb) {
                    gemm_into(
                        o,
                        (m, n, k),
                        a,
                        am(a_off[i]),
                        b,
                        bm(b_off[i]),
                        1.0,
                        false,
                        threads,
                    );
                }
            }
        }};
    }
    if m * n == 0 {
        return Ok(out);
    }
    for i in 0..nb {
        if a_off[i] + m * k > a.len() || b_off[i] + k * n > b.len() {
            bail!("MatMul operand is smaller than its shape");
        }
    }
    match T::DTYPE {
        DType::F32 => float_path!(f32),
        DType::F64 => float_path!(f64),
        _ => with_int!(T::DTYPE, I => {
            let a: &[I] = bytemuck_view(a);
            let b: &[I] = bytemuck_view(b);
            let o: &mut [I] = bytemuck_view_mut(&mut out);
            o.par_chunks_mut(m * n).enumerate().for_each(|(bi, o)| {
                let (a, b) = (&a[a_off[bi]..], &b[b_off[bi]..]);
                for i in 0..m {
                    let row = &mut o[i * n..(i + 1) * n];
                    for p in 0..k {
                        let x = a[i * k + p];
                        for (r, &y) in row.iter_mut().zip(&b[p * n..(p + 1) * n]) {
                            *r = r.wrapping_add(x.wrapping_mul(y));
                        }
                    }
                }
            });
        }, _ => unsupported!("MatMul on {}", T::DTYPE)),
    }
    Ok(out)
}

/// Reinterprets a slice of `T` as `U` when they are the same type.
pub(crate) fn bytemuck_view<T: Elem, U: Elem>(s: &[T]) -> &[U] {
    assert_eq!(T::DTYPE, U::DTYPE, "same dtype required");
    // SAFETY: T and U are the same type (same DTYPE ⇔ same Rust type by construction of `Elem`).
    unsafe { std::slice::from_raw_parts(s.as_ptr() as *const U, s.len()) }
}

/// Mutable version of [`bytemuck_view`].
pub(crate) fn bytemuck_view_mut<T: Elem, U: Elem>(s: &mut [T]) -> &mut [U] {
    assert_eq!(T::DTYPE, U::DTYPE, "same dtype required");
    // SAFETY: as above.
    unsafe { std::slice::from_raw_parts_mut(s.as_mut_ptr() as *mut U, s.len()) }
}

/// Gemm: `alpha · op(A) · op(B) + beta · C`.
pub(crate) fn gemm_op(
    a: &Value,
    b: &Value,
    c: Option<&Value>,
    alpha: f32,
    beta: f32,
    trans_a: bool,
    trans_b: bool,
) -> KResult<Value> {
    let dt = a.dtype();
    if b.dtype() != dt || c.is_some_and(|c| c.dtype() != dt) {
        bail!("Gemm operands have different dtypes");
    }
    if a.rank() != 2 || b.rank() != 2 {
        bail!(
            "Gemm needs 2-d operands, got {:?} and {:?}",
            a.shape,
            b.shape
        );
    }
    if matches!(dt, DType::F16 | DType::BF16) {
        let c32 = c.map(|c| c.cast(DType::F32));
        return Ok(gemm_op(
            &a.cast(DType::F32),
            &b.cast(DType::F32),
            c32.as_ref(),
            alpha,
            beta,
            trans_a,
            trans_b,
        )?
        .cast(dt));
    }
    let (m, k) = if trans_a {
        (a.shape[1], a.shape[0])
    } else {
        (a.shape[0], a.shape[1])
    };
    let (k2, n) = if trans_b {
        (b.shape[1], b.shape[0])
    } else {
        (b.shape[0], b.shape[1])
    };
    if k != k2 {
        bail!(
            "Gemm inner dimensions differ: {:?}{} × {:?}{}",
            a.shape,
            if trans_a { "ᵀ" } else { "" },
            b.shape,
            if trans_b { "ᵀ" } else { "" }
        );
    }
    let am = if trans_a {
        Mat {
            off: 0,
            rs: 1,
            cs: m as isize,
        }
    } else {
        Mat {
            off: 0,
            rs: k as isize,
            cs: 1,
        }
    };
    let bm = if trans_b {
        Mat {
            off: 0,
            rs: 1,
            cs: k as isize,
        }
    } else {
        Mat {
            off: 0,
            rs: n as isize,
            cs: 1,
        }
    };
    let threads = rayon::current_num_threads();
    // Start from beta · C broadcast to [m, n], then accumulate the product on top.
    let init = match c {
        Some(c) if beta != 0.0 => {
            let cb = broadcast_to(c, &[m, n])?;
            if cb.shape != [m, n] {
                bail!(
                    "Gemm C of shape {:?} does not broadcast to [{m}, {n}]",
                    c.shape
                );
            }
            Some(cb)
        }
        _ => None,
    };
    macro_rules! go {
        ($F:ty) => {{
            let (x, y) = (a.slice::<$F>()?, b.slice::<$F>()?);
            if !check_mat(am, m, k, x.len()) || !check_mat(bm, k, n, y.len()) {
                bail!("Gemm operand is smaller than its shape");
            }
            let mut out: Vec<$F> = match &init {
                Some(cb) => cb.slice::<$F>()?.iter().map(|&v| v * beta as $F).collect(),
                None => vec![0.0; m * n],
            };
            gemm_into(
                &mut out,
                (m, n, k),
                x,
                am,
                y,
                bm,
                alpha as $F,
                init.is_some(),
                threads,
            );
            Ok(Value::new(vec![m, n], out))
        }};
    }
    match dt {
        DType::F32 => go!(f32),
        DType::F64 => go!(f64),
        _ => with_int!(dt, I => {
            let (x, y) = (a.slice::<I>()?, b.slice::<I>()?);
            let mut out: Vec<I> = match &init {
                Some(cb) => cb.slice::<I>()?.iter().map(|&v| I::from_f64(v.to_f64() * beta as f64)).collect(),
                None => vec![0; m * n],
            };
            let al = I::from_f64(alpha as f64);
            for i in 0..m {
                for j in 0..n {
                    let mut s: I = 0;
                    for p in 0..k {
                        let av = x[(am.off as isize + i as isize * am.rs + p as isize * am.cs) as usize];
                        let bv = y[(bm.off as isize + p as isize * bm.rs + j as isize * bm.cs) as usize];
                        s = s.wrapping_add(av.wrapping_mul(bv));
                    }
                    out[i * n + j] = out[i * n + j].wrapping_add(s.wrapping_mul(al));
                }
            }
            Ok(Value::new(vec![m, n], out))
        }, _ => unsupported!("Gemm on {dt}")),
    }
}

/// Einsum, by a direct loop over every index combination (accumulating in f64).
///
/// Einsum is rare in real models and mostly tiny; the common two-operand
/// contraction shapes are rewritten to MatMul by the compiler.
pub(crate) fn einsum(equation: &str, xs: &[&Value]) -> KResult<Value> {
    let eq: String = equation.chars().filter(|c| !c.is_whitespace()).collect();
    let (lhs, rhs) = match eq.split_once("->") {
        Some((l, r)) => (l.to_string(), Some(r.to_string())),
        None => (eq.clone(), None),
    };
    let terms: Vec<&str> = lhs.split(',').collect();
    if terms.len() != xs.len() {
        bail!(
            "Einsum equation `{equation}` names {} operands, got {}",
            terms.len(),
            xs.len()
        );
    }
    let dt = xs[0].dtype();
    if xs.iter().any(|x| x.dtype() != dt) {
        bail!("Einsum operands have different dtypes");
    }
    // Expand `...` into fresh upper-case-free placeholder letters (digits are never letters in equations).
    let ell_rank = terms
        .iter()
        .zip(xs)
        .filter(|(t, _)| t.contains("..."))
        .map(|(t, x)| x.rank() + 3 - t.len())
        .max()
        .unwrap_or(0);
    let ell: Vec<char> = (0..ell_rank)
        .map(|i| char::from_u32(0x3b1 + i as u32).unwrap_or('?'))
        .collect();
    let mut sizes: std::collections::BTreeMap<char, usize> = Default::default();
    let mut labels_of: Vec<Vec<char>> = Vec::new();
    for (t, x) in terms.iter().zip(xs) {
        let mut labels = Vec::new();
        if let Some((pre, post)) = t.split_once("...") {
            let n_ell = x
                .rank()
                .checked_sub(pre.len() + post.len())
                .ok_or_else(|| {
                    super::value::KernelError::Invalid(format!(
                        "Einsum term `{t}` does not match rank {}",
                        x.rank()
                    ))
                })?;
            labels.extend(pre.chars());
            labels.extend(ell[ell_rank - n_ell..].iter().copied());
            labels.extend(post.chars());
        } else {
            labels.extend(t.chars());
        }
        if labels.len() != x.rank() {
            bail!("Einsum term `{t}` does not match operand rank {}", x.rank());
        }
        for (&l, &d) in labels.iter().zip(&x.shape) {
            let e = sizes.entry(l).or_insert(d);
            if *e != d {
                if *e == 1 && ell.contains(&l) {
                    *e = d;
                } else if !(d == 1 && ell.contains(&l)) {
                    bail!("Einsum label `{l}` has sizes {e} and {d}");
                }
            }
        }
        labels_of.push(labels);
    }
    let out_labels: Vec<char> = match rhs {
        Some(r) => {
            let mut v = Vec::new();
            if let Some((pre, post)) = r.split_once("...") {
                v.extend(pre.chars());
                v.extend(ell.iter().copied());
                v.extend(post.chars());
            } else {
                v.extend(r.chars());
            }
            v
        }
        None => {
            // Implicit output: ellipsis dims, then labels used once, alphabetically.
            let mut count: std::collections::BTreeMap<char, usize> = Default::default();
            for ls in &labels_of {
                for &l in ls {
                    if !ell.contains(&l) {
                        *count.entry(l).or_insert(0) += 1;
                    }
                }
            }
            let mut v: Vec<char> = ell.clone();
            v.extend(count.into_iter().filter(|&(_, c)| c == 1).map(|(l, _)| l));
            v
        }
    };
    for l in &out_labels {
        if !sizes.contains_key(l) {
            bail!("Einsum output label `{l}` is not in any operand");
        }
    }
    let all: Vec<char> = out_labels
        .iter()
        .copied()
        .chain(sizes.keys().copied().filter(|l| !out_labels.contains(l)))
        .collect();
    let dims: Vec<usize> = all.iter().map(|l| sizes[l]).collect();
    // Per operand, its stride along each label of `all` (summed for repeated labels: diagonals).
    let op_strides: Vec<Vec<usize>> = labels_of
        .iter()
        .zip(xs)
        .map(|(ls, x)| {
            let st = strides_of(&x.shape);
            all.iter()
                .map(|l| {
                    ls.iter()
                        .zip(&st)
                        .zip(&x.shape)
                        .filter(|((m, _), &d)| *m == l && d != 1)
                        .map(|((_, s), _)| *s)
                        .sum()
                })
                .collect()
        })
        .collect();
    let out_shape: Vec<usize> = out_labels.iter().map(|l| sizes[l]).collect();
    let n_out: usize = out_shape.iter().product();
    let n_sum: usize = dims[out_labels.len()..].iter().product();
    let vals: Vec<Vec<f64>> = xs.iter().map(|x| x.to_f64s()).collect();
    let mut out = vec![0f64; n_out];
    let mut idx = vec![0usize; all.len()];
    for (o, slot) in out.iter_mut().enumerate() {
        let mut r = o;
        for d in (0..out_labels.len()).rev() {
            idx[d] = r % dims[d];
            r /= dims[d];
        }
        let mut acc = 0.0;
        for s in 0..n_sum {
            let mut r = s;
            for d in (out_labels.len()..all.len()).rev() {
                idx[d] = r % dims[d];
                r /= dims[d];
            }
            let mut p = 1.0;
            for (v, st) in vals.iter().zip(&op_strides) {
                let off: usize = idx.iter().zip(st).map(|(i, s)| i * s).sum();
                p *= v[off];
            }
            acc += p;
        }
        *slot = acc;
    }
    Ok(Value::new(out_shape, out).cast(dt))
}
