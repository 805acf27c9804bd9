//! Scaled dot-product attention (ONNX `Attention`, opsets 23 and 24).
//!
//! Work is split into tasks of (batch, query head, block of query rows) run
//! in parallel. Each task multiplies its Q rows by the K head it reads
//! (grouped-query attention maps several Q heads onto one KV head) with the
//! `gemm` crate, reading 3-d and 4-d layouts through strides, so Q, K and V
//! are never transposed or repeated. Keys that the causal frontier, the
//! `nonpad_kv_seqlen` lengths or a short mask rule out for every row of the
//! block are not computed at all. The mask is read in place through
//! broadcast strides, never expanded per head.
//!
//! f32 and f64 compute in their own type. f16 and bf16 compute in f32 but
//! round to their type at the points where the ONNX reference rounds (scaled
//! Q and K, scores, softmax steps, probabilities, output), so results match
//! it to the last bit in most elements.

use super::matmul::{gemm_into, GemmElem, Mat};
use super::norm::NFloat;
use super::value::{arg, bail, opt, unsupported, with_dtype, Elem, KResult, Value};
use half::{bf16, f16};
use kiln_ir::DType;
use rayon::prelude::*;
use std::borrow::Cow;

/// Query rows per task: a block of scores (rows × keys) stays in cache.
const QB: usize = 64;

/// Attributes of one `Attention` node.
#[derive(Clone, Debug)]
pub(crate) struct AttnAttrs {
    /// Apply the (bottom-right aligned) causal mask.
    pub is_causal: bool,
    /// Q heads of 3-d inputs (0 for 4-d).
    pub q_num_heads: i64,
    /// K/V heads of 3-d inputs (0 for 4-d).
    pub kv_num_heads: i64,
    /// Scale of Q·Kᵀ; `None` is 1/√head_size.
    pub scale: Option<f32>,
    /// Softcap (0 is off).
    pub softcap: f32,
    /// What output 3 holds (0 to 3).
    pub qk_mode: i64,
    /// Precision of the softmax; `None` is Q's.
    pub softmax_precision: Option<DType>,
}

/// Float types the kernel computes in.
trait AFloat: NFloat + GemmElem {
    /// e^x for x in [`EXP_FLOOR`, 0] (a softmax term), vectorisable.
    fn exp_term(self) -> Self;
}
impl AFloat for f32 {
    #[inline(always)]
    fn exp_term(self) -> Self {
        exp_term_f32(self)
    }
}
impl AFloat for f64 {
    #[inline(always)]
    fn exp_term(self) -> Self {
        self.exp()
    }
}

/// e^x for x in [-80, 0]: 2^k · e^r with |r| ≤ ln2/2, e^r by a degree-6
/// polynomial. The bounded range keeps 2^k a normal number built with
/// integer arithmetic, so the loop vectorises without float-to-int casts.
#[inline(always)]
fn exp_term_f32(x: f32) -> f32 {
    // Adding 1.5·2^23 rounds to an integer held in the low mantissa bits.
    const MAGIC: f32 = 12_582_912.0;
    let kf = x * std::f32::consts::LOG2_E + MAGIC;
    let k = kf - MAGIC;
    let r = k * -0.693_145_75 + x;
    let r = k * -1.428_606_8e-6 + r;
    let mut p = 1.0 / 720.0_f32;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * r + 1.0;
    p = p * r + 1.0;
    let ki = (kf.to_bits() as i32).wrapping_sub(0x4B40_0000);
    p * f32::from_bits(((ki + 127) as u32) << 23)
}

/// Rounding applied after each step, to reproduce half-precision arithmetic.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Round {
    /// No rounding: the compute type is the tensor type.
    Exact,
    /// Round to IEEE binary16.
    F16,
    /// Round to bfloat16.
    BF16,
}

impl Round {
    fn of(dt: DType) -> Round {
        match dt {
            DType::F16 => Round::F16,
            DType::BF16 => Round::BF16,
            _ => Round::Exact,
        }
    }

    #[inline]
    fn rt<F: AFloat>(self, x: F) -> F {
        match self {
            Round::Exact => x,
            Round::F16 => F::from_f64(f16::from_f64(x.to_f64()).to_f64()),
            Round::BF16 => F::from_f64(bf16::from_f64(x.to_f64()).to_f64()),
        }
    }
}

/// Strides (in elements) of batch, head and sequence position; the head
/// dimension is contiguous.
#[derive(Clone, Copy, Debug)]
struct Lay {
    b: usize,
    h: usize,
    s: usize,
}

impl Lay {
    /// `[batch, seq, heads·size]` (3-d) or `[batch, heads, seq, size]` (4-d).
    fn new(rank: usize, heads: usize, seq: usize, size: usize) -> Lay {
        if rank == 3 {
            Lay {
                b: seq * heads * size,
                h: size,
                s: heads * size,
            }
        } else {
            Lay {
                b: heads * seq * size,
                h: seq * size,
                s: size,
            }
        }
    }

    /// One past the last element addressed, for `rows × size` of every head.
    fn extent(&self, batch: usize, heads: usize, rows: usize, size: usize) -> usize {
        if batch == 0 || heads == 0 || rows == 0 || size == 0 {
            return 0;
        }
        (batch - 1) * self.b + (heads - 1) * self.h + (rows - 1) * self.s + size
    }
}

/// The elements of a float operand in the compute type (borrowed when it already is).
fn as_f<F: AFloat>(v: &Value) -> KResult<Cow<'_, [F]>> {
    if v.dtype() == F::DTYPE {
        return Ok(Cow::Borrowed(v.slice::<F>()?));
    }
    Ok(Cow::Owned(with_dtype!(v.dtype(), T => v
        .slice::<T>()?
        .iter()
        .map(|&x| F::from_f64(x.to_f64()))
        .collect())))
}

/// `[batch, heads, seq, size]` of a 3-d (split by `heads`) or 4-d operand.
fn dims_of(v: &Value, heads: i64, name: &str, attr: &str) -> KResult<[usize; 4]> {
    match *v.shape.as_slice() {
        [b, h, s, d] => {
            if heads > 0 && heads as usize != h {
                bail!("{attr} = {heads} disagrees with {name} of shape {:?}", v.shape);
            }
            Ok([b, h, s, d])
        }
        [b, s, hidden] => {
            if heads <= 0 {
                bail!("{attr} must be positive for 3-d inputs, got {heads}");
            }
            let h = heads as usize;
            if hidden % h != 0 {
                bail!(
                    "{name} of shape {:?}: hidden size {hidden} is not a multiple of {h} heads",
                    v.shape
                );
            }
            Ok([b, h, s, hidden / h])
        }
        _ => bail!(
            "{name} must be 3-d [batch, seq, hidden] or 4-d [batch, heads, seq, head_size], got shape {:?}",
            v.shape
        ),
    }
}

/// A mask read in place: element (b, h, i, j) is at `b·sb + h·sh + i·sq + j`
/// for `j < len`; keys at `j ≥ len` are masked.
struct Mask<'a, F: Clone> {
    data: MaskData<'a, F>,
    sb: usize,
    sh: usize,
    sq: usize,
    len: usize,
}

enum MaskData<'a, F: Clone> {
    /// True keeps the key.
    Bool(&'a [bool]),
    /// Added to the scores.
    Add(Cow<'a, [F]>),
}

impl<F: AFloat> Mask<'_, F> {
    fn row_start(&self, b: usize, h: usize, i: usize) -> usize {
        b * self.sb + h * self.sh + i * self.sq
    }

    /// One past the last key below `lim` that row (b, h, i) does not mask;
    /// 0 when it masks all of them.
    fn last_kept(&self, b: usize, h: usize, i: usize, lim: usize) -> usize {
        let at = self.row_start(b, h, i);
        let kept = match &self.data {
            MaskData::Bool(m) => m[at..at + lim].iter().rposition(|&on| on),
            MaskData::Add(m) => m[at..at + lim]
                .iter()
                .rposition(|&add| add != F::neg_infinity()),
        };
        kept.map_or(0, |j| j + 1)
    }
}

/// The mask's broadcast strides against `[batch, heads, q_seq, total]`.
fn mask_view<F: AFloat>(m: &Value, target: [usize; 4]) -> KResult<Mask<'_, F>> {
    let r = m.rank();
    if r == 0 || r > 4 {
        bail!("attn_mask must have rank 1 to 4, got shape {:?}", m.shape);
    }
    let mut m4 = [1usize; 4];
    m4[4 - r..].copy_from_slice(&m.shape);
    let stride = [m4[1] * m4[2] * m4[3], m4[2] * m4[3], m4[3]];
    let mut st = [0usize; 3];
    for i in 0..3 {
        if m4[i] == target[i] {
            st[i] = if m4[i] == 1 { 0 } else { stride[i] };
        } else if m4[i] != 1 {
            bail!(
                "attn_mask of shape {:?} does not broadcast to {:?}",
                m.shape,
                target
            );
        }
    }
    if m4[3] > target[3] {
        bail!(
            "attn_mask of shape {:?} has more keys than the {} keys (past and new)",
            m.shape,
            target[3]
        );
    }
    let data = if m.dtype() == DType::Bool {
        MaskData::Bool(m.slice::<bool>()?)
    } else {
        MaskData::Add(as_f::<F>(m)?)
    };
    Ok(Mask {
        data,
        sb: st[0],
        sh: st[1],
        sq: st[2],
        len: m4[3],
    })
}

/// `[b, s, h, d]` (a 3-d operand) → `[b, h, s, d]`.
fn heads_first<T: Copy>(src: &[T], [b, h, s, d]: [usize; 4]) -> Vec<T> {
    let mut out = Vec::with_capacity(src.len());
    for bi in 0..b {
        for hi in 0..h {
            for si in 0..s {
                let o = ((bi * s + si) * h + hi) * d;
                out.extend_from_slice(&src[o..o + d]);
            }
        }
    }
    out
}

/// `[b, h, past + s, d]`: the past cache followed by the new keys or values.
fn concat_past<F: AFloat>(
    past: &[F],
    new: &[F],
    new_lay: Lay,
    [b, h, s, d]: [usize; 4],
    p: usize,
) -> Vec<F> {
    let mut out = Vec::with_capacity(b * h * (p + s) * d);
    for bi in 0..b {
        for hi in 0..h {
            let o = (bi * h + hi) * p * d;
            out.extend_from_slice(&past[o..o + p * d]);
            for si in 0..s {
                let o = bi * new_lay.b + hi * new_lay.h + si * new_lay.s;
                out.extend_from_slice(&new[o..o + d]);
            }
        }
    }
    out
}

/// A present key/value output without a past: the input in `[b, h, s, d]`.
fn present_of(v: &Value, dims: [usize; 4]) -> KResult<Value> {
    if v.rank() == 4 {
        return Ok(v.clone());
    }
    with_dtype!(v.dtype(), T => Ok(Value::new(dims.to_vec(), heads_first(v.slice::<T>()?, dims))))
}

/// Runs `Attention` on its operands; returns `num_outputs` results (at least Y).
pub(crate) fn attention(
    inputs: &[Option<&Value>],
    a: &AttnAttrs,
    num_outputs: usize,
) -> KResult<Vec<Value>> {
    let (q, k, v) = (arg(inputs, 0)?, arg(inputs, 1)?, arg(inputs, 2)?);
    for (name, t) in [("Q", q), ("K", k), ("V", v)] {
        if !t.dtype().is_float() {
            unsupported!(
                "Attention on {} {name} (floating-point types only)",
                t.dtype()
            );
        }
    }
    if k.rank() != q.rank() || v.rank() != q.rank() {
        bail!(
            "Q, K and V must have the same rank, got shapes {:?}, {:?} and {:?}",
            q.shape,
            k.shape,
            v.shape
        );
    }
    if !(0..=3).contains(&a.qk_mode) {
        bail!("qk_matmul_output_mode must be 0 to 3, got {}", a.qk_mode);
    }
    let wide = [q, k, v].iter().any(|t| t.dtype() == DType::F64)
        || a.softmax_precision == Some(DType::F64);
    if wide {
        run::<f64>(inputs, a, num_outputs)
    } else {
        run::<f32>(inputs, a, num_outputs)
    }
}

/// Everything a task needs, shared by all tasks.
struct Cx<'a, F: AFloat> {
    q: &'a [F],
    ql: Lay,
    k: &'a [F],
    kl: Lay,
    v: &'a [F],
    vl: Lay,
    mask: Option<Mask<'a, F>>,
    group: usize,
    sq: usize,
    t: usize,
    d: usize,
    dv: usize,
    alpha: F,
    softcap: F,
    causal: bool,
    /// Causal offset per batch: query i sees keys j ≤ i + offset.
    offset: Vec<i64>,
    /// Keys per batch that any row may see (nonpad length, mask length).
    key_lim: Vec<usize>,
    qk_mode: Option<i64>,
    round: Round,
    soft_round: Round,
}

fn run<F: AFloat>(
    inputs: &[Option<&Value>],
    a: &AttnAttrs,
    num_outputs: usize,
) -> KResult<Vec<Value>> {
    let (q, k, v) = (arg(inputs, 0)?, arg(inputs, 1)?, arg(inputs, 2)?);
    let rank = q.rank();
    let [b, hq, sq, d] = dims_of(q, a.q_num_heads, "Q", "q_num_heads")?;
    let kd = dims_of(k, a.kv_num_heads, "K", "kv_num_heads")?;
    let vd = dims_of(v, a.kv_num_heads, "V", "kv_num_heads")?;
    let [kb, hkv, skv, kdd] = kd;
    let dv = vd[3];
    if kb != b || vd[0] != b {
        bail!(
            "batch sizes differ: Q {:?}, K {:?}, V {:?}",
            q.shape,
            k.shape,
            v.shape
        );
    }
    if vd[1] != hkv || vd[2] != skv {
        bail!(
            "K {:?} and V {:?} differ in heads or sequence length",
            k.shape,
            v.shape
        );
    }
    if kdd != d {
        bail!("head sizes of Q {:?} and K {:?} differ", q.shape, k.shape);
    }
    if hkv == 0 || hq % hkv != 0 {
        bail!("{hq} query heads are not a multiple of {hkv} key/value heads");
    }
    let (past_k, past_v) = (opt(inputs, 4), opt(inputs, 5));
    let past = match (past_k, past_v) {
        (None, None) => None,
        (Some(pk), Some(pv)) => {
            let p = pk.shape.get(2).copied().unwrap_or(0);
            if pk.shape != [b, hkv, p, d] || pv.shape != [b, hkv, p, dv] {
                bail!(
                    "past_key {:?} and past_value {:?} must be [{b}, {hkv}, past, {d}] and [{b}, {hkv}, past, {dv}]",
                    pk.shape,
                    pv.shape
                );
            }
            Some((pk, pv, p))
        }
        _ => bail!("past_key and past_value must be given together"),
    };
    let p = past.map_or(0, |x| x.2);
    let t = p + skv;
    let nonpad = match opt(inputs, 6) {
        None => None,
        Some(n) => {
            if past.is_some() {
                bail!("nonpad_kv_seqlen cannot be combined with past_key/past_value");
            }
            if n.dtype() != DType::I64 || n.shape != [b] {
                bail!(
                    "nonpad_kv_seqlen must be i64[{b}], got {}{:?}",
                    n.dtype(),
                    n.shape
                );
            }
            Some(n.to_i64s())
        }
    };

    let round = Round::of(q.dtype());
    let soft_round = match a.softmax_precision {
        None => round,
        Some(p) => Round::of(p),
    };
    let scale = match a.scale {
        Some(s) => s as f64,
        None => 1.0 / (d as f64).sqrt(),
    };

    // K and V in [b, hkv, t, ·] when a past cache is prepended, else read in place.
    let qf = as_f::<F>(q)?;
    let ql = Lay::new(rank, hq, sq, d);
    let (present_k, present_v) = match past {
        Some((pk, pv, p)) => {
            let kc = concat_past(
                &as_f::<F>(pk)?,
                &as_f::<F>(k)?,
                Lay::new(rank, hkv, skv, d),
                kd,
                p,
            );
            let vc = concat_past(
                &as_f::<F>(pv)?,
                &as_f::<F>(v)?,
                Lay::new(rank, hkv, skv, dv),
                vd,
                p,
            );
            (
                Some(Value::new(vec![b, hkv, t, d], kc)),
                Some(Value::new(vec![b, hkv, t, dv], vc)),
            )
        }
        None => (None, None),
    };
    let (kf, kl) = match &present_k {
        Some(pk) => (Cow::Borrowed(pk.slice::<F>()?), Lay::new(4, hkv, t, d)),
        None => (as_f::<F>(k)?, Lay::new(rank, hkv, skv, d)),
    };
    let (vf, vl) = match &present_v {
        Some(pv) => (Cow::Borrowed(pv.slice::<F>()?), Lay::new(4, hkv, t, dv)),
        None => (as_f::<F>(v)?, Lay::new(rank, hkv, skv, dv)),
    };
    if qf.len() < ql.extent(b, hq, sq, d)
        || kf.len() < kl.extent(b, hkv, t, d)
        || vf.len() < vl.extent(b, hkv, t, dv)
    {
        bail!("an operand holds fewer elements than its shape");
    }

    // Half types scale Q and K separately by √scale rounded to their type, as the reference does.
    let (qs, ks, alpha) = if round == Round::Exact {
        (qf, kf, F::from_f64(scale))
    } else {
        let s = round.rt(F::from_f64(scale.sqrt()));
        let q2: Vec<F> = qf.iter().map(|&x| round.rt(x * s)).collect();
        let k2: Vec<F> = kf.iter().map(|&x| round.rt(x * s)).collect();
        (Cow::Owned(q2), Cow::Owned(k2), F::c(1.0))
    };

    let mask = match opt(inputs, 3) {
        Some(m) => Some(mask_view::<F>(m, [b, hq, sq, t])?),
        None => None,
    };
    let offset: Vec<i64> = (0..b)
        .map(|bi| match &nonpad {
            Some(n) => n[bi] - sq as i64,
            None => p as i64,
        })
        .collect();
    let key_lim: Vec<usize> = (0..b)
        .map(|bi| {
            let mut l = t;
            if let Some(n) = &nonpad {
                l = l.min(n[bi].clamp(0, t as i64) as usize);
            }
            if let Some(m) = &mask {
                l = l.min(m.len);
            }
            l
        })
        .collect();
    let want_qk = num_outputs >= 4;
    let cx = Cx {
        q: &qs,
        ql,
        k: &ks,
        kl,
        v: &vf,
        vl,
        mask,
        group: hq / hkv,
        sq,
        t,
        d,
        dv,
        alpha,
        softcap: F::from_f64(a.softcap as f64),
        causal: a.is_causal,
        offset,
        key_lim,
        qk_mode: want_qk.then_some(a.qk_mode),
        round,
        soft_round,
    };

    let mut y = vec![F::c(0.0); b * hq * sq * dv];
    let mut qk = vec![F::c(0.0); if want_qk { b * hq * sq * t } else { 0 }];
    let y_blocks = blocks(&mut y, b * hq, sq, dv);
    let qk_blocks = blocks(&mut qk, b * hq, sq, if want_qk { t } else { 0 });
    let nblk = sq.div_ceil(QB);
    y_blocks
        .into_par_iter()
        .zip(qk_blocks)
        .enumerate()
        .for_each(|(i, (yb, qb))| {
            let bh = i / nblk.max(1);
            block(&cx, bh / hq, bh % hq, (i % nblk.max(1)) * QB, yb, qb);
        });

    let y = if rank == 3 {
        // [b, hq, sq, dv] → [b, sq, hq·dv], one output row (b, s) at a time.
        let mut o = vec![F::c(0.0); y.len()];
        if !o.is_empty() {
            o.par_chunks_mut(hq * dv).enumerate().for_each(|(r, row)| {
                let (bi, si) = (r / sq, r % sq);
                for (hi, dst) in row.chunks_mut(dv).enumerate() {
                    let src = ((bi * hq + hi) * sq + si) * dv;
                    dst.copy_from_slice(&y[src..src + dv]);
                }
            });
        }
        Value::new(vec![b, sq, hq * dv], o)
    } else {
        Value::new(vec![b, hq, sq, dv], y)
    };
    let mut out = vec![y.cast(q.dtype())];
    if num_outputs >= 2 {
        out.push(match present_k {
            Some(pk) => pk.cast(k.dtype()),
            None => present_of(k, kd)?,
        });
    }
    if num_outputs >= 3 {
        out.push(match present_v {
            Some(pv) => pv.cast(v.dtype()),
            None => present_of(v, vd)?,
        });
    }
    if want_qk {
        out.push(Value::new(vec![b, hq, sq, t], qk).cast(q.dtype()));
    }
    Ok(out)
}

/// Splits a `[bh, sq, w]` buffer into per-task blocks of up to [`QB`] rows.
fn blocks<F>(buf: &mut [F], bh: usize, sq: usize, w: usize) -> Vec<&mut [F]> {
    let mut out = Vec::with_capacity(bh * sq.div_ceil(QB));
    let mut rest = buf;
    for _ in 0..bh {
        let mut i0 = 0;
        while i0 < sq {
            let n = QB.min(sq - i0) * w;
            let (head, tail) = std::mem::take(&mut rest).split_at_mut(n);
            out.push(head);
            rest = tail;
            i0 += QB;
        }
    }
    out
}

/// One task: rows `i0..` of query head `h` of batch `b`, into `y` (rows × dv)
/// and, when requested, `qk` (rows × t).
fn block<F: AFloat>(cx: &Cx<F>, b: usize, h: usize, i0: usize, y: &mut [F], qk: &mut [F]) {
    let rows = QB.min(cx.sq - i0);
    let hk = h / cx.group;
    let t = cx.t;
    // Per row, the keys past the last one it may see are masked: no score
    // is needed there. The causal frontier, nonpad length and mask length
    // bound that, and the mask itself narrows it further (padding).
    let lims: Vec<usize> = (0..rows)
        .map(|r| {
            let mut l = cx.key_lim[b];
            if cx.causal {
                let c = (i0 + r) as i64 + cx.offset[b] + 1;
                l = l.min(c.clamp(0, t as i64) as usize);
            }
            match &cx.mask {
                Some(m) => m.last_kept(b, h, i0 + r, l),
                None => l,
            }
        })
        .collect();
    let kmax = lims.iter().copied().max().unwrap_or(0);
    let kc = if cx.qk_mode.is_some() { t } else { kmax };
    if kc == 0 {
        return;
    }
    let mut s = vec![F::c(0.0); rows * kc];
    gemm_into(
        &mut s,
        (rows, kc, cx.d),
        cx.q,
        Mat {
            off: b * cx.ql.b + h * cx.ql.h + i0 * cx.ql.s,
            rs: cx.ql.s as isize,
            cs: 1,
        },
        cx.k,
        Mat {
            off: b * cx.kl.b + hk * cx.kl.h,
            rs: 1,
            cs: cx.kl.s as isize,
        },
        cx.alpha,
        false,
        1,
    );
    let (round, soft) = (cx.round, cx.soft_round);
    if round != Round::Exact {
        s.iter_mut().for_each(|x| *x = round.rt(*x));
    }
    let neg_inf = F::neg_infinity();
    let zero = F::c(0.0);
    for (r, &lim) in lims.iter().enumerate() {
        let row = &mut s[r * kc..(r + 1) * kc];
        let mut qk_row = (!qk.is_empty()).then(|| &mut qk[r * t..(r + 1) * t]);
        let mut keep = |mode: i64, row: &[F]| {
            if let Some(o) = qk_row.as_deref_mut() {
                if cx.qk_mode == Some(mode) {
                    o.copy_from_slice(row);
                }
            }
        };
        keep(0, row);
        if cx.softcap > zero {
            let c = round.rt(cx.softcap);
            for x in row.iter_mut() {
                let z = round.rt(round.rt(*x / c).tanh());
                *x = round.rt(z * c);
            }
        }
        keep(1, row);
        if let Some(m) = &cx.mask {
            let at = m.row_start(b, h, i0 + r);
            match &m.data {
                MaskData::Bool(mb) => {
                    for (x, &on) in row[..lim].iter_mut().zip(&mb[at..at + lim]) {
                        if !on {
                            *x = neg_inf;
                        }
                    }
                }
                MaskData::Add(ma) => {
                    for (x, &add) in row[..lim].iter_mut().zip(&ma[at..at + lim]) {
                        *x = *x + add;
                    }
                    if round != Round::Exact {
                        row[..lim].iter_mut().for_each(|x| *x = round.rt(*x));
                    }
                }
            }
        }
        row[lim..].fill(neg_inf);
        keep(2, row);
        if lim > 0 {
            if soft == Round::Exact {
                softmax(&mut row[..lim]);
            } else {
                softmax_rounded(&mut row[..lim], soft);
            }
            if round != Round::Exact {
                row[..lim].iter_mut().for_each(|x| *x = round.rt(*x));
            }
            row[lim..].fill(zero);
        } else {
            // No key may be attended: the row is zero, not NaN.
            row.fill(zero);
        }
        keep(3, row);
    }
    if kmax > 0 && cx.dv > 0 {
        gemm_into(
            y,
            (rows, cx.dv, kmax),
            &s,
            Mat {
                off: 0,
                rs: kc as isize,
                cs: 1,
            },
            cx.v,
            Mat {
                off: b * cx.vl.b + hk * cx.vl.h,
                rs: cx.vl.s as isize,
                cs: 1,
            },
            F::c(1.0),
            false,
            1,
        );
        if round != Round::Exact {
            y.iter_mut().for_each(|x| *x = round.rt(*x));
        }
    }
}

/// Largest of a row, propagating NaN; 8 lanes so it vectorises.
#[inline(always)]
fn row_max<F: AFloat>(x: &[F]) -> F {
    let mut acc = [F::neg_infinity(); 8];
    let chunks = x.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for i in 0..8 {
            // `>` is false for NaN: `acc` keeps a NaN once it has one.
            acc[i] = if acc[i] > c[i] || num_traits::Float::is_nan(acc[i]) {
                acc[i]
            } else {
                c[i]
            };
        }
    }
    let mut m = F::neg_infinity();
    for &v in acc.iter().chain(rest) {
        m = if m > v || num_traits::Float::is_nan(m) {
            m
        } else {
            v
        };
    }
    m
}

/// Below this, e^x is far under f32's rounding of the row sum (which holds
/// e^0 = 1): such terms are 0, which also avoids slow subnormal arithmetic.
const EXP_FLOOR: f32 = -80.0;

/// In-place softmax; an all `-inf` row becomes zeros.
///
/// The loops are compiled twice: for the baseline target and, picked at
/// run time, for AVX2 with FMA (twice the lanes on most x86-64 machines).
fn softmax<F: AFloat>(x: &mut [F]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has the features `softmax_avx2` is compiled for.
        unsafe { softmax_avx2(x) };
        return;
    }
    softmax_body(x);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn softmax_avx2<F: AFloat>(x: &mut [F]) {
    softmax_body(x);
}

#[inline(always)]
fn softmax_body<F: AFloat>(x: &mut [F]) {
    let m = row_max(x);
    if m == F::neg_infinity() {
        x.fill(F::c(0.0));
        return;
    }
    if !m.is_finite() {
        // A NaN or +inf score makes the row NaN, as e^(x - max) does.
        x.fill(F::nan());
        return;
    }
    let floor = F::c(EXP_FLOOR);
    for v in x.iter_mut() {
        let d = *v - m;
        let e = d.max(floor).exp_term();
        *v = if d < floor { F::c(0.0) } else { e };
    }
    let mut acc = [F::c(0.0); 8];
    let chunks = x.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for i in 0..8 {
            acc[i] = acc[i] + c[i];
        }
    }
    let mut sum = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    for &v in rest {
        sum = sum + v;
    }
    let inv = F::c(1.0) / sum;
    for v in x.iter_mut() {
        *v = *v * inv;
    }
}

/// Softmax rounded to a half type after every step, as numpy computes it:
/// bf16 sums accumulate in bf16, f16 sums in f32.
fn softmax_rounded<F: AFloat>(x: &mut [F], r: Round) {
    let m = x.iter().fold(F::neg_infinity(), |m, &v| m.max(v));
    if m == F::neg_infinity() {
        x.fill(F::c(0.0));
        return;
    }
    for v in x.iter_mut() {
        *v = r.rt(r.rt(*v - m).exp());
    }
    let sum = if r == Round::BF16 {
        x.iter().fold(F::c(0.0), |acc, &v| r.rt(acc + v))
    } else {
        r.rt(x.iter().fold(F::c(0.0), |acc, &v| acc + v))
    };
    for v in x.iter_mut() {
        *v = r.rt(*v / sum);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic values in [-1, 1).
    fn fill(n: usize, seed: u64) -> Vec<f32> {
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

    fn attrs(causal: bool, qh: i64, kvh: i64) -> AttnAttrs {
        AttnAttrs {
            is_causal: causal,
            q_num_heads: qh,
            kv_num_heads: kvh,
            scale: None,
            softcap: 0.0,
            qk_mode: 0,
            softmax_precision: None,
        }
    }

    /// Attention by the definition, in f64: `keep(b, h, i, j)` says whether
    /// query i of head h may see key j. Inputs are 3-d `[b, s, heads·d]`.
    #[allow(clippy::too_many_arguments)]
    fn naive(
        q: &[f32],
        k: &[f32],
        v: &[f32],
        (b, sq, skv): (usize, usize, usize),
        (hq, hkv, d): (usize, usize, usize),
        keep: impl Fn(usize, usize, usize, usize) -> bool,
    ) -> Vec<f32> {
        let group = hq / hkv;
        let scale = 1.0 / (d as f64).sqrt();
        let mut y = vec![0f32; b * sq * hq * d];
        for bi in 0..b {
            for h in 0..hq {
                let hk = h / group;
                for i in 0..sq {
                    let mut w = vec![f64::NEG_INFINITY; skv];
                    for (j, wj) in w.iter_mut().enumerate() {
                        if !keep(bi, h, i, j) {
                            continue;
                        }
                        let mut dot = 0.0;
                        for x in 0..d {
                            dot += q[(bi * sq + i) * hq * d + h * d + x] as f64
                                * k[(bi * skv + j) * hkv * d + hk * d + x] as f64;
                        }
                        *wj = dot * scale;
                    }
                    let m = w.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    if m == f64::NEG_INFINITY {
                        continue;
                    }
                    let e: Vec<f64> = w.iter().map(|&x| (x - m).exp()).collect();
                    let sum: f64 = e.iter().sum();
                    for x in 0..d {
                        let mut acc = 0.0;
                        for j in 0..skv {
                            acc += e[j] / sum * v[(bi * skv + j) * hkv * d + hk * d + x] as f64;
                        }
                        y[(bi * sq + i) * hq * d + h * d + x] = acc as f32;
                    }
                }
            }
        }
        y
    }

    fn close(got: &[f32], want: &[f32]) {
        assert_eq!(got.len(), want.len());
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!((g - w).abs() <= 1e-5 + 1e-4 * w.abs(), "at {i}: {g} vs {w}");
        }
    }

    #[test]
    fn exp_term_is_accurate_on_its_range() {
        for i in 0..=80_000 {
            let x = -(i as f32) * 1e-3;
            let want = (x as f64).exp();
            let got = exp_term_f32(x) as f64;
            assert!(((got - want) / want).abs() < 4e-7, "e^{x}: {got} vs {want}");
        }
    }

    #[test]
    fn gqa_causal_3d_matches_naive() {
        // 9 query heads over 3 KV heads as in SmolLM2, head 16; 70 rows span two blocks.
        let (b, s, hq, hkv, d) = (2, 70, 9, 3, 16);
        let q = fill(b * s * hq * d, 1);
        let k = fill(b * s * hkv * d, 2);
        let v = fill(b * s * hkv * d, 3);
        let qv = Value::new(vec![b, s, hq * d], q.clone());
        let kv = Value::new(vec![b, s, hkv * d], k.clone());
        let vv = Value::new(vec![b, s, hkv * d], v.clone());
        let out = attention(
            &[Some(&qv), Some(&kv), Some(&vv)],
            &attrs(true, hq as i64, hkv as i64),
            1,
        )
        .unwrap();
        assert_eq!(out[0].shape, vec![b, s, hq * d]);
        let want = naive(&q, &k, &v, (b, s, s), (hq, hkv, d), |_, _, i, j| j <= i);
        close(out[0].slice::<f32>().unwrap(), &want);
    }

    #[test]
    fn bool_padding_mask_matches_naive() {
        // BERT-style [b, 1, 1, s] padding mask: batch 0 keeps 5 keys, batch 1 all 7.
        let (b, s, h, d) = (2, 7, 4, 8);
        let valid = [5usize, 7];
        let q = fill(b * s * h * d, 4);
        let k = fill(b * s * h * d, 5);
        let v = fill(b * s * h * d, 6);
        let mask: Vec<bool> = (0..b * s).map(|i| i % s < valid[i / s]).collect();
        let qv = Value::new(vec![b, s, h * d], q.clone());
        let kv = Value::new(vec![b, s, h * d], k.clone());
        let vv = Value::new(vec![b, s, h * d], v.clone());
        let mv = Value::new(vec![b, 1, 1, s], mask);
        let out = attention(
            &[Some(&qv), Some(&kv), Some(&vv), Some(&mv)],
            &attrs(false, h as i64, h as i64),
            1,
        )
        .unwrap();
        let want = naive(&q, &k, &v, (b, s, s), (h, h, d), |bi, _, _, j| {
            j < valid[bi]
        });
        close(out[0].slice::<f32>().unwrap(), &want);
    }

    #[test]
    fn fully_masked_rows_are_zero_and_cache_is_prepended() {
        // 4-d, 1 new token over 3 cached; the mask hides every key of head 1.
        let (hq, d) = (2, 4);
        let q = Value::new(vec![1, hq, 1, d], fill(hq * d, 7));
        let k = Value::new(vec![1, hq, 1, d], fill(hq * d, 8));
        let v = Value::new(vec![1, hq, 1, d], fill(hq * d, 9));
        let pk = Value::new(vec![1, hq, 3, d], fill(3 * hq * d, 10));
        let pv = Value::new(vec![1, hq, 3, d], fill(3 * hq * d, 11));
        let mask = Value::new(
            vec![hq, 1, 4],
            vec![true, true, false, true, false, false, false, false],
        );
        let out = attention(
            &[
                Some(&q),
                Some(&k),
                Some(&v),
                Some(&mask),
                Some(&pk),
                Some(&pv),
            ],
            &attrs(true, 0, 0),
            3,
        )
        .unwrap();
        let y = out[0].slice::<f32>().unwrap();
        assert!(y[d..].iter().all(|&x| x == 0.0), "{y:?}");
        assert!(y[..d].iter().all(|&x| x != 0.0 && x.is_finite()), "{y:?}");
        assert_eq!(out[1].shape, vec![1, hq, 4, d]);
        let pk_out = out[1].slice::<f32>().unwrap();
        assert_eq!(&pk_out[..3 * d], &pk.slice::<f32>().unwrap()[..3 * d]);
        assert_eq!(&pk_out[3 * d..4 * d], &k.slice::<f32>().unwrap()[..d]);
    }
}
