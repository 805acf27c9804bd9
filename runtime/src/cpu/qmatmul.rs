//! Matrix products and column gathers that read packed quantized weights in
//! place (docs/quant-formats.md): a packed weight is never inflated whole.
//!
//! - Few rows of activations (decode-shaped, `M ≤ DECODE_MAX_ROWS`): each
//!   output column's codes are decoded in registers and multiplied straight
//!   into the activations, four rows at a time. Per group the kernel sums
//!   `(c − z)·x` in vector lanes and adds `s·Σ` to the column's total. The
//!   zero point is taken off before any rounding (in integers, or through a
//!   table of `n − z` that a permute instruction indexes with the codes), so
//!   the error is that of a plain f32 dot product; the factored form
//!   `s·(Σ c·x − z·Σ x)` would lose digits to cancellation when most codes
//!   sit near `z`. The activations are permuted once per call into the order
//!   the decoder produces codes, so unpacking moves nothing across lanes.
//!   AVX-512 and AVX2 (with FMA and F16C) are picked at run time; a portable
//!   version of the same loop runs elsewhere. Rayon tasks split the columns.
//! - More rows (prefill-shaped): each rayon task decodes a panel of up to
//!   256 output columns into an f32 `[K, panel]` scratch (blocks of columns
//!   transposed in registers: `gemm` is fastest with the panel's columns
//!   contiguous) and multiplies it with `gemm`, so at most one panel per
//!   thread is ever decoded.
//! - Gather along axis 1 (an embedding lookup from a `[hidden, vocab]`
//!   table) decodes only the selected columns.

use super::value::{bail, Data, KResult, Value};
use kiln_ir::quant::QuantFormat;
use rayon::prelude::*;
use std::ops::Range;

/// Rows of activations up to which products run the decode-shaped kernel
/// (beyond, decoding panels for `gemm` costs less than decoding the codes
/// again for every few rows).
const DECODE_MAX_ROWS: usize = 12;

/// Rows one pass of the decode-shaped kernel computes.
const KERNEL_ROWS: usize = 4;

/// Products with fewer weights than this run on one thread.
const PAR_MIN_WEIGHTS: usize = 1 << 16;

/// The packed parts of a weight, sliced from its serialised bytes (codes,
/// little-endian f16 scales, zero points).
#[derive(Clone, Copy)]
struct Parts<'a> {
    format: QuantFormat,
    rows: usize,
    cols: usize,
    stride: usize,
    groups: usize,
    glen: usize,
    data: &'a [u8],
    scales: &'a [u8],
    zeros: Option<&'a [u8]>,
}

impl<'a> Parts<'a> {
    /// The parts of a packed value; `None` for any other value.
    fn of(v: &'a Value) -> Option<KResult<Parts<'a>>> {
        let Data::Packed(t) = &v.data else {
            return None;
        };
        Some(v.packed()?.map(|view| {
            // The view checked the total length; the parts follow the codes.
            let (format, rows, cols) = (view.format(), view.rows(), view.cols());
            let groups = format.groups_per_column(rows);
            let data = view.data();
            let rest = &t.bytes()[data.len()..];
            let (scales, zeros) = rest.split_at(2 * cols * groups);
            Parts {
                format,
                rows,
                cols,
                stride: format.column_stride(rows),
                groups,
                glen: format.group_len(rows),
                data,
                scales,
                zeros: (!format.symmetric()).then_some(zeros),
            }
        }))
    }

    fn scale(&self, col: usize, group: usize) -> f32 {
        let i = 2 * (col * self.groups + group);
        half::f16::from_le_bytes([self.scales[i], self.scales[i + 1]]).to_f32()
    }

    /// The zero point of a group, as the kernels subtract it.
    fn zero(&self, col: usize, group: usize) -> f32 {
        match self.zeros {
            Some(z) => f32::from(z[col * self.groups + group]),
            None => f32::from(self.format.symmetric_zero()),
        }
    }

    fn kind(&self) -> u8 {
        match (self.format.bits(), self.format.symmetric()) {
            (8, true) => I8,
            (8, false) => U8,
            (4, _) => U4,
            _ => U3,
        }
    }

    /// Decodes output column `col` into `out` (`rows` values), exactly:
    /// `(c − z)·s` as the reference decoder computes it.
    fn decode_column(&self, col: usize, out: &mut [f32]) {
        let bytes = &self.data[col * self.stride..(col + 1) * self.stride];
        let bits = usize::from(self.format.bits());
        for g in 0..self.groups {
            let (s, z) = (self.scale(col, g), self.zero(col, g));
            let r0 = g * self.glen;
            let r1 = (r0 + self.glen).min(self.rows);
            // Groups start on whole bytes (docs/quant-formats.md).
            let b = &bytes[r0 * bits / 8..];
            let o = &mut out[r0..r1];
            match bits {
                8 => {
                    for (o, &c) in o.iter_mut().zip(b) {
                        *o = (f32::from(c) - z) * s;
                    }
                }
                4 => {
                    let done = 2 * (o.len() / 2);
                    let mut pairs = o.chunks_exact_mut(2);
                    for (p, &c) in (&mut pairs).zip(b) {
                        p[0] = (f32::from(c & 15) - z) * s;
                        p[1] = (f32::from(c >> 4) - z) * s;
                    }
                    if let Some(last) = pairs.into_remainder().first_mut() {
                        *last = (f32::from(b[done / 2] & 15) - z) * s;
                    }
                }
                _ => {
                    for (block, w) in o.chunks_mut(8).zip(b.chunks_exact(3)) {
                        let word = u32::from(w[0]) | u32::from(w[1]) << 8 | u32::from(w[2]) << 16;
                        for (i, o) in block.iter_mut().enumerate() {
                            *o = (((word >> (3 * i)) & 7) as f32 - z) * s;
                        }
                    }
                }
            }
        }
    }
}

// How a kernel reads codes (a const generic: the loops are compiled per kind).
/// Asymmetric int8: codes as unsigned bytes.
const U8: u8 = 0;
/// Symmetric int8: `c XOR 0x80` read as `i8` is `c − 128`, so no zero point.
const I8: u8 = 1;
/// int4, two codes per byte.
const U4: u8 = 2;
/// int3, eight codes per three bytes.
const U3: u8 = 3;

fn bits_of(kind: u8) -> usize {
    match kind {
        U8 | I8 => 8,
        U4 => 4,
        _ => 3,
    }
}

/// The code (index within its chunk of `2·lanes` codes) that lane `l` of
/// decoded vector `v` holds. The activations are laid out in this order, so
/// that decoding never moves values across lanes:
/// - int8: codes in order, `lanes` per vector;
/// - int4: byte `l` of the chunk feeds lane `l`: its low nibble (code `2l`)
///   to vector 0 and its high nibble (code `2l + 1`) to vector 1;
/// - int3: lanes come in fours, one 3-byte block per four lanes; lane `d` of
///   block `h` holds code `d` of the block in vector 0 and code `4 + d` in
///   vector 1.
const fn code_of(kind: u8, lanes: usize, v: usize, l: usize) -> usize {
    match kind {
        U8 | I8 => v * lanes + l,
        U4 => 2 * l + v,
        _ => 8 * (l / 4) + 4 * v + l % 4,
    }
}

/// The code of input row `r` in a column's bytes, as a kernel reads it.
#[inline(always)]
fn code_at<const C: u8>(bytes: &[u8], r: usize) -> f32 {
    match C {
        U8 => f32::from(bytes[r]),
        I8 => f32::from((bytes[r] ^ 0x80) as i8),
        U4 => f32::from((bytes[r / 2] >> (4 * (r % 2))) & 15),
        _ => {
            let j = 3 * (r / 8);
            let word =
                u32::from(bytes[j]) | u32::from(bytes[j + 1]) << 8 | u32::from(bytes[j + 2]) << 16;
            ((word >> (3 * (r % 8))) & 7) as f32
        }
    }
}

/// Vector operations the decode kernel is written against.
trait Simd {
    /// A vector of `LANES` f32.
    type F: Copy;
    /// What decoding one group of one column needs (its zero point, or a
    /// table of its decoded values).
    type G: Copy;
    const LANES: usize;
    unsafe fn zero() -> Self::F;
    unsafe fn splat(v: f32) -> Self::F;
    /// Loads `LANES` values from `p` (no alignment needed).
    unsafe fn load(p: *const f32) -> Self::F;
    /// `a·b + c`.
    unsafe fn fma(a: Self::F, b: Self::F, c: Self::F) -> Self::F;
    unsafe fn hsum(a: Self::F) -> f32;
    /// An f16 (its bits) to f32.
    unsafe fn half(bits: u16) -> f32;
    /// The decoding state of a group with zero point `z`.
    unsafe fn group<const C: u8>(z: f32) -> Self::G;
    /// Decodes one chunk of `2·LANES` codes of kind `C` starting at `p`
    /// (`2·LANES·bits/8` bytes, all of which lie within the weight) into two
    /// vectors of `c − z` (exact) in [`code_of`] order.
    unsafe fn decode<const C: u8>(p: *const u8, g: Self::G) -> [Self::F; 2];
    /// Reorders a decoded chunk from [`code_of`] order to input-row order.
    unsafe fn natural<const C: u8>(d: [Self::F; 2]) -> [Self::F; 2];
    /// `a·b`.
    unsafe fn mul(a: Self::F, b: Self::F) -> Self::F;
    /// Stores `LANES` values at `p` (no alignment needed).
    unsafe fn store(p: *mut f32, a: Self::F);
    /// Transposes the `LANES × LANES` matrix held in `a[..LANES]` (vector
    /// `i` is row `i`).
    unsafe fn transpose(a: &mut [Self::F; 16]);
}

/// One decode-shaped product: the weight's parts and the activations in
/// the forms the kernel reads.
struct Job<'a> {
    parts: Parts<'a>,
    /// Rows of activations.
    m: usize,
    /// Input rows in whole chunks (the rest is the tail of the last group).
    full: usize,
    /// `[m, full]`: each chunk of every row permuted into [`code_of`] order.
    xp: Vec<f32>,
    /// `[m, rows]`: the activations as given (for the tail).
    x: &'a [f32],
}

impl<'a> Job<'a> {
    fn new(parts: Parts<'a>, x: &'a [f32], m: usize, lanes: usize) -> Self {
        let rows = parts.rows;
        let kind = parts.kind();
        let chunk = 2 * lanes;
        let full = rows - rows % chunk;
        let mut xp = vec![0f32; m * full];
        for (row, dst) in x
            .chunks_exact(rows.max(1))
            .zip(xp.chunks_exact_mut(full.max(1)))
        {
            for (base, d) in (0..full).step_by(chunk).zip(dst.chunks_exact_mut(chunk)) {
                for v in 0..2 {
                    for l in 0..lanes {
                        d[v * lanes + l] = row[base + code_of(kind, lanes, v, l)];
                    }
                }
            }
        }
        Job {
            parts,
            m,
            full,
            xp,
            x,
        }
    }
}

/// Computes rows `row0 .. row0 + M` of columns `j0 .. j0 + NC` into
/// `out[n·job.m + row0 + i]`.
///
/// Zero points are subtracted before any rounding (in integers, or through
/// an exact table), so the f32 sums accumulate `(c − z)·x` and their error
/// is relative to `Σ|w·x|`, as in a plain dot product.
///
/// # Safety
/// The CPU supports `S`'s instructions, `j0 + NC ≤ cols`, `row0 + M ≤ job.m`,
/// `job` was made for `S::LANES`, and the weight's kind is `C`.
#[inline(always)]
unsafe fn columns<S: Simd, const C: u8, const M: usize, const NC: usize>(
    job: &Job,
    row0: usize,
    j0: usize,
    out: &mut [f32],
) {
    let p = &job.parts;
    let bits = bits_of(C);
    let chunk = 2 * S::LANES;
    let (full, groups, glen) = (job.full, p.groups, p.glen);
    let data = p.data.as_ptr();
    let xp = job.xp.as_ptr();
    // Symmetric formats share one zero point, hence one decoding state.
    let mut states = [S::group::<C>(zero_point::<C>(p, j0, 0)); NC];
    let mut total = [[S::zero(); M]; NC];
    for g in 0..groups {
        let r0 = g * glen;
        let r1 = (r0 + glen).min(full);
        if p.zeros.is_some() {
            for (n, state) in states.iter_mut().enumerate() {
                *state = S::group::<C>(zero_point::<C>(p, j0 + n, g));
            }
        }
        let mut acc = [[S::zero(); M]; NC];
        let mut r = r0;
        while r < r1 {
            let mut xv = [[S::zero(); 2]; M];
            for (i, x) in xv.iter_mut().enumerate() {
                let at = xp.add((row0 + i) * full + r);
                x[0] = S::load(at);
                x[1] = S::load(at.add(S::LANES));
            }
            for (n, acc) in acc.iter_mut().enumerate() {
                let d = S::decode::<C>(data.add((j0 + n) * p.stride + r * bits / 8), states[n]);
                for (a, x) in acc.iter_mut().zip(&xv) {
                    *a = S::fma(d[0], x[0], *a);
                    *a = S::fma(d[1], x[1], *a);
                }
            }
            r += chunk;
        }
        for n in 0..NC {
            let sv = S::splat(scale::<S>(p, j0 + n, g));
            for i in 0..M {
                total[n][i] = S::fma(acc[n][i], sv, total[n][i]);
            }
        }
    }
    let mut tail = [[0f32; M]; NC];
    if full < p.rows {
        // The last rows, fewer than a chunk, belong to the last group.
        for (n, tail) in tail.iter_mut().enumerate() {
            let col = j0 + n;
            let bytes = &p.data[col * p.stride..(col + 1) * p.stride];
            let (s, z) = (
                scale::<S>(p, col, groups - 1),
                zero_point::<C>(p, col, groups - 1),
            );
            for (i, t) in tail.iter_mut().enumerate() {
                let x = &job.x[(row0 + i) * p.rows..(row0 + i + 1) * p.rows];
                let dot: f32 = (full..p.rows)
                    .map(|r| (code_at::<C>(bytes, r) - z) * x[r])
                    .sum();
                *t = s * dot;
            }
        }
    }
    for n in 0..NC {
        for i in 0..M {
            out[n * job.m + row0 + i] = S::hsum(total[n][i]) + tail[n][i];
        }
    }
}

/// The scale of group `g` of column `col`.
#[inline(always)]
unsafe fn scale<S: Simd>(p: &Parts, col: usize, g: usize) -> f32 {
    let i = 2 * (col * p.groups + g);
    S::half(u16::from_le_bytes([p.scales[i], p.scales[i + 1]]))
}

/// The zero point of group `g` of column `col` as kind `C` subtracts it
/// (symmetric int8 is read signed: no zero point).
#[inline(always)]
fn zero_point<const C: u8>(p: &Parts, col: usize, g: usize) -> f32 {
    match p.zeros {
        Some(z) => f32::from(z[col * p.groups + g]),
        None if C == I8 => 0.0,
        None => f32::from(p.format.symmetric_zero()),
    }
}

/// Computes rows `row0 .. row0 + M` of columns `cols` into `out`
/// (`[cols.len(), job.m]`), `NC` columns at a time.
#[inline(always)]
unsafe fn run_cols<S: Simd, const C: u8, const M: usize, const NC: usize>(
    job: &Job,
    row0: usize,
    cols: Range<usize>,
    out: &mut [f32],
) {
    debug_assert!(row0 + M <= job.m && out.len() == cols.len() * job.m);
    let mut j = cols.start;
    while j + NC <= cols.end {
        let o = (j - cols.start) * job.m;
        columns::<S, C, M, NC>(job, row0, j, &mut out[o..o + NC * job.m]);
        j += NC;
    }
    while j < cols.end {
        let o = (j - cols.start) * job.m;
        columns::<S, C, M, 1>(job, row0, j, &mut out[o..o + job.m]);
        j += 1;
    }
}

/// Decodes columns `cols` into `out`, row-major `[rows, cols.len()]` (the
/// layout `gemm` multiplies fastest), exactly as the reference decoder does.
///
/// Blocks of `LANES` columns are decoded a chunk at a time and transposed
/// in registers; the last rows (fewer than a chunk) and the last columns
/// (fewer than `LANES`) are decoded one value at a time.
///
/// # Safety
/// The CPU supports `S`'s instructions, `cols` lie within the weight, the
/// weight's kind is `C`, and `out` holds `rows` rows of `ld ≥ cols.len()`.
#[inline(always)]
unsafe fn decode_panel<S: Simd, const C: u8>(
    p: &Parts,
    cols: Range<usize>,
    out: &mut [f32],
    ld: usize,
) {
    let (bits, lanes) = (bits_of(C), S::LANES);
    let chunk = 2 * lanes;
    let (rows, nc) = (p.rows, cols.len());
    let full = rows - rows % chunk;
    debug_assert!(ld >= nc && out.len() >= rows * ld);
    let dst = out.as_mut_ptr();
    let mut c0 = 0;
    while c0 + lanes <= nc {
        let j0 = cols.start + c0;
        let mut states = [S::group::<C>(zero_point::<C>(p, j0, 0)); 16];
        let mut scales = [S::zero(); 16];
        for g in 0..p.groups {
            for c in 0..lanes {
                if p.zeros.is_some() {
                    states[c] = S::group::<C>(zero_point::<C>(p, j0 + c, g));
                }
                scales[c] = S::splat(scale::<S>(p, j0 + c, g));
            }
            let r0 = g * p.glen;
            let r1 = (r0 + p.glen).min(full);
            let mut r = r0;
            while r < r1 {
                let (mut a, mut b) = ([S::zero(); 16], [S::zero(); 16]);
                for c in 0..lanes {
                    let src = p.data.as_ptr().add((j0 + c) * p.stride + r * bits / 8);
                    let d = S::natural::<C>(S::decode::<C>(src, states[c]));
                    a[c] = S::mul(d[0], scales[c]);
                    b[c] = S::mul(d[1], scales[c]);
                }
                S::transpose(&mut a);
                S::transpose(&mut b);
                for i in 0..lanes {
                    S::store(dst.add((r + i) * ld + c0), a[i]);
                    S::store(dst.add((r + lanes + i) * ld + c0), b[i]);
                }
                r += chunk;
            }
        }
        for c in 0..lanes {
            decode_rows::<S, C>(p, j0 + c, full..rows, dst.add(c0 + c), ld);
        }
        c0 += lanes;
    }
    for c in c0..nc {
        decode_rows::<S, C>(p, cols.start + c, 0..rows, dst.add(c), ld);
    }
}

/// Decodes rows `rows` of column `col` one value at a time into
/// `out[r·ld]`.
///
/// # Safety
/// `out[r·ld]` is writable for every row.
#[inline(always)]
unsafe fn decode_rows<S: Simd, const C: u8>(
    p: &Parts,
    col: usize,
    rows: Range<usize>,
    out: *mut f32,
    ld: usize,
) {
    let bytes = &p.data[col * p.stride..(col + 1) * p.stride];
    for r in rows {
        let g = r / p.glen;
        let (s, z) = (scale::<S>(p, col, g), zero_point::<C>(p, col, g));
        *out.add(r * ld) = (code_at::<C>(bytes, r) - z) * s;
    }
}

/// A compiled panel decoder (see [`decode_panel`]).
type PanelFn = unsafe fn(&Parts, Range<usize>, &mut [f32], usize);

/// A compiled decode kernel: computes `M` rows from a first row, for a
/// range of output columns, into `[cols, job.m]` (see [`run_cols`]).
type KernelFn = unsafe fn(&Job, usize, Range<usize>, &mut [f32]);

/// Portable vectors of eight lanes (plain arrays the compiler may vectorise).
struct Portable;

impl Simd for Portable {
    type F = [f32; 8];
    type G = f32;
    const LANES: usize = 8;
    #[inline(always)]
    unsafe fn zero() -> Self::F {
        [0.0; 8]
    }
    #[inline(always)]
    unsafe fn splat(v: f32) -> Self::F {
        [v; 8]
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self::F {
        std::ptr::read_unaligned(p as *const [f32; 8])
    }
    #[inline(always)]
    unsafe fn fma(a: Self::F, b: Self::F, c: Self::F) -> Self::F {
        std::array::from_fn(|i| a[i] * b[i] + c[i])
    }
    #[inline(always)]
    unsafe fn hsum(a: Self::F) -> f32 {
        ((a[0] + a[4]) + (a[2] + a[6])) + ((a[1] + a[5]) + (a[3] + a[7]))
    }
    #[inline(always)]
    unsafe fn half(bits: u16) -> f32 {
        half::f16::from_bits(bits).to_f32()
    }
    #[inline(always)]
    unsafe fn group<const C: u8>(z: f32) -> f32 {
        z
    }
    #[inline(always)]
    unsafe fn decode<const C: u8>(p: *const u8, z: f32) -> [Self::F; 2] {
        let byte = |i: usize| *p.add(i);
        match C {
            U8 => [
                std::array::from_fn(|l| f32::from(byte(l)) - z),
                std::array::from_fn(|l| f32::from(byte(8 + l)) - z),
            ],
            I8 => [
                std::array::from_fn(|l| f32::from((byte(l) ^ 0x80) as i8)),
                std::array::from_fn(|l| f32::from((byte(8 + l) ^ 0x80) as i8)),
            ],
            U4 => [
                std::array::from_fn(|l| f32::from(byte(l) & 15) - z),
                std::array::from_fn(|l| f32::from(byte(l) >> 4) - z),
            ],
            _ => {
                let word = |h: usize| {
                    u32::from(byte(3 * h))
                        | u32::from(byte(3 * h + 1)) << 8
                        | u32::from(byte(3 * h + 2)) << 16
                };
                let (w0, w1) = (word(0), word(1));
                let at = |l: usize, shift: usize| {
                    let w = if l < 4 { w0 } else { w1 };
                    ((w >> (shift + 3 * (l % 4))) & 7) as f32 - z
                };
                [
                    std::array::from_fn(|l| at(l, 0)),
                    std::array::from_fn(|l| at(l, 12)),
                ]
            }
        }
    }
    #[inline(always)]
    unsafe fn natural<const C: u8>(d: [Self::F; 2]) -> [Self::F; 2] {
        let mut out = [[0.0; 8]; 2];
        for (v, d) in d.iter().enumerate() {
            for (l, &x) in d.iter().enumerate() {
                let c = code_of(C, 8, v, l);
                out[c / 8][c % 8] = x;
            }
        }
        out
    }
    #[inline(always)]
    unsafe fn mul(a: Self::F, b: Self::F) -> Self::F {
        std::array::from_fn(|i| a[i] * b[i])
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, a: Self::F) {
        std::ptr::write_unaligned(p as *mut [f32; 8], a)
    }
    #[inline(always)]
    unsafe fn transpose(a: &mut [Self::F; 16]) {
        let t = *a;
        for (i, row) in a.iter_mut().take(8).enumerate() {
            *row = std::array::from_fn(|j| t[j][i]);
        }
    }
}

unsafe fn portable_panel<const C: u8>(
    parts: &Parts,
    cols: Range<usize>,
    out: &mut [f32],
    ld: usize,
) {
    decode_panel::<Portable, C>(parts, cols, out, ld)
}

unsafe fn portable<const C: u8, const M: usize, const NC: usize>(
    job: &Job,
    row0: usize,
    cols: Range<usize>,
    out: &mut [f32],
) {
    run_cols::<Portable, C, M, NC>(job, row0, cols, out)
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{Job, Parts, Simd, I8, U3, U4, U8};
    use std::arch::x86_64::*;
    use std::ops::Range;

    /// AVX2 + FMA + F16C, eight lanes.
    pub(super) struct Avx2;

    /// Group state on AVX2: the zero point (int8, int4) or the eight
    /// decoded values `n − z` of the int3 codes `n`.
    #[derive(Clone, Copy)]
    pub(super) struct Avx2Group {
        zero: __m256i,
        table: __m256,
    }

    impl Simd for Avx2 {
        type F = __m256;
        type G = Avx2Group;
        const LANES: usize = 8;
        #[inline(always)]
        unsafe fn zero() -> Self::F {
            _mm256_setzero_ps()
        }
        #[inline(always)]
        unsafe fn splat(v: f32) -> Self::F {
            _mm256_set1_ps(v)
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> Self::F {
            _mm256_loadu_ps(p)
        }
        #[inline(always)]
        unsafe fn fma(a: Self::F, b: Self::F, c: Self::F) -> Self::F {
            _mm256_fmadd_ps(a, b, c)
        }
        #[inline(always)]
        unsafe fn hsum(a: Self::F) -> f32 {
            let s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
            let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
            _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
        }
        #[inline(always)]
        unsafe fn half(bits: u16) -> f32 {
            _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(bits))))
        }
        #[inline(always)]
        unsafe fn group<const C: u8>(z: f32) -> Avx2Group {
            if C == U3 {
                let n = _mm256_setr_ps(0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0);
                Avx2Group {
                    zero: _mm256_setzero_si256(),
                    table: _mm256_sub_ps(n, _mm256_set1_ps(z)),
                }
            } else {
                Avx2Group {
                    zero: _mm256_set1_epi32(z as i32),
                    table: _mm256_setzero_ps(),
                }
            }
        }
        #[inline(always)]
        unsafe fn decode<const C: u8>(p: *const u8, g: Avx2Group) -> [Self::F; 2] {
            let q = p as *const __m128i;
            let (z, table) = (g.zero, g.table);
            match C {
                U8 => [
                    _mm256_cvtepi32_ps(_mm256_sub_epi32(
                        _mm256_cvtepu8_epi32(_mm_loadl_epi64(q)),
                        z,
                    )),
                    _mm256_cvtepi32_ps(_mm256_sub_epi32(
                        _mm256_cvtepu8_epi32(_mm_loadl_epi64(p.add(8) as *const __m128i)),
                        z,
                    )),
                ],
                I8 => {
                    let v = _mm_xor_si128(_mm_loadu_si128(q), _mm_set1_epi8(-128));
                    [
                        _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v)),
                        _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(v, 8))),
                    ]
                }
                U4 => {
                    let v = _mm256_cvtepu8_epi32(_mm_loadl_epi64(q));
                    let lo = _mm256_and_si256(v, _mm256_set1_epi32(15));
                    let hi = _mm256_srli_epi32(v, 4);
                    [
                        _mm256_cvtepi32_ps(_mm256_sub_epi32(lo, z)),
                        _mm256_cvtepi32_ps(_mm256_sub_epi32(hi, z)),
                    ]
                }
                _ => {
                    // Two 3-byte blocks; a 6-byte copy never reads past them.
                    let mut b = [0u8; 8];
                    std::ptr::copy_nonoverlapping(p, b.as_mut_ptr(), 6);
                    let raw = _mm_cvtsi64_si128(i64::from_le_bytes(b));
                    // Every dword of 128-bit half h holds block h's 24-bit word.
                    let ctrl = _mm256_setr_epi8(
                        0, 1, 2, -1, 0, 1, 2, -1, 0, 1, 2, -1, 0, 1, 2, -1, 3, 4, 5, -1, 3, 4, 5,
                        -1, 3, 4, 5, -1, 3, 4, 5, -1,
                    );
                    let w = _mm256_shuffle_epi8(_mm256_broadcastsi128_si256(raw), ctrl);
                    // The permute reads the low three bits of each lane: one code.
                    let lo = _mm256_srlv_epi32(w, _mm256_setr_epi32(0, 3, 6, 9, 0, 3, 6, 9));
                    let hi =
                        _mm256_srlv_epi32(w, _mm256_setr_epi32(12, 15, 18, 21, 12, 15, 18, 21));
                    [
                        _mm256_permutevar8x32_ps(table, lo),
                        _mm256_permutevar8x32_ps(table, hi),
                    ]
                }
            }
        }
        #[inline(always)]
        unsafe fn natural<const C: u8>(d: [Self::F; 2]) -> [Self::F; 2] {
            match C {
                U4 => {
                    // Even codes in d[0], odd in d[1]: interleave.
                    let lo = _mm256_unpacklo_ps(d[0], d[1]);
                    let hi = _mm256_unpackhi_ps(d[0], d[1]);
                    [
                        _mm256_permute2f128_ps(lo, hi, 0x20),
                        _mm256_permute2f128_ps(lo, hi, 0x31),
                    ]
                }
                U3 => [
                    // Block h is the low (h = 0) or high half of both vectors.
                    _mm256_permute2f128_ps(d[0], d[1], 0x20),
                    _mm256_permute2f128_ps(d[0], d[1], 0x31),
                ],
                _ => d,
            }
        }
        #[inline(always)]
        unsafe fn mul(a: Self::F, b: Self::F) -> Self::F {
            _mm256_mul_ps(a, b)
        }
        #[inline(always)]
        unsafe fn store(p: *mut f32, a: Self::F) {
            _mm256_storeu_ps(p, a)
        }
        #[inline(always)]
        unsafe fn transpose(a: &mut [Self::F; 16]) {
            let t = [
                _mm256_unpacklo_ps(a[0], a[1]),
                _mm256_unpackhi_ps(a[0], a[1]),
                _mm256_unpacklo_ps(a[2], a[3]),
                _mm256_unpackhi_ps(a[2], a[3]),
                _mm256_unpacklo_ps(a[4], a[5]),
                _mm256_unpackhi_ps(a[4], a[5]),
                _mm256_unpacklo_ps(a[6], a[7]),
                _mm256_unpackhi_ps(a[6], a[7]),
            ];
            let u = [
                _mm256_shuffle_ps(t[0], t[2], 0x44),
                _mm256_shuffle_ps(t[0], t[2], 0xEE),
                _mm256_shuffle_ps(t[1], t[3], 0x44),
                _mm256_shuffle_ps(t[1], t[3], 0xEE),
                _mm256_shuffle_ps(t[4], t[6], 0x44),
                _mm256_shuffle_ps(t[4], t[6], 0xEE),
                _mm256_shuffle_ps(t[5], t[7], 0x44),
                _mm256_shuffle_ps(t[5], t[7], 0xEE),
            ];
            for i in 0..4 {
                a[i] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x20);
                a[i + 4] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x31);
            }
        }
    }

    /// AVX-512 (F, BW, VL) + FMA + F16C, sixteen lanes.
    pub(super) struct Avx512;

    /// Group state on AVX-512: the zero point (int8) or the sixteen decoded
    /// values `n − z` indexed by the low four bits of a lane (int4: the
    /// code; int3: the code and one bit of the next, so the eight values
    /// appear twice).
    #[derive(Clone, Copy)]
    pub(super) struct Avx512Group {
        zero: __m512i,
        table: __m512,
    }

    impl Simd for Avx512 {
        type F = __m512;
        type G = Avx512Group;
        const LANES: usize = 16;
        #[inline(always)]
        unsafe fn zero() -> Self::F {
            _mm512_setzero_ps()
        }
        #[inline(always)]
        unsafe fn splat(v: f32) -> Self::F {
            _mm512_set1_ps(v)
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> Self::F {
            _mm512_loadu_ps(p)
        }
        #[inline(always)]
        unsafe fn fma(a: Self::F, b: Self::F, c: Self::F) -> Self::F {
            _mm512_fmadd_ps(a, b, c)
        }
        #[inline(always)]
        unsafe fn hsum(a: Self::F) -> f32 {
            _mm512_reduce_add_ps(a)
        }
        #[inline(always)]
        unsafe fn half(bits: u16) -> f32 {
            _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(bits))))
        }
        #[inline(always)]
        unsafe fn group<const C: u8>(z: f32) -> Avx512Group {
            if C == U4 || C == U3 {
                let n = if C == U4 {
                    _mm512_setr_ps(
                        0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0, 12.0, 13.0,
                        14.0, 15.0,
                    )
                } else {
                    _mm512_setr_ps(
                        0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0,
                        7.0,
                    )
                };
                Avx512Group {
                    zero: _mm512_setzero_si512(),
                    table: _mm512_sub_ps(n, _mm512_set1_ps(z)),
                }
            } else {
                Avx512Group {
                    zero: _mm512_set1_epi32(z as i32),
                    table: _mm512_setzero_ps(),
                }
            }
        }
        #[inline(always)]
        unsafe fn decode<const C: u8>(p: *const u8, g: Avx512Group) -> [Self::F; 2] {
            let q = p as *const __m128i;
            let (z, table) = (g.zero, g.table);
            match C {
                U8 => [
                    _mm512_cvtepi32_ps(_mm512_sub_epi32(
                        _mm512_cvtepu8_epi32(_mm_loadu_si128(q)),
                        z,
                    )),
                    _mm512_cvtepi32_ps(_mm512_sub_epi32(
                        _mm512_cvtepu8_epi32(_mm_loadu_si128(q.add(1))),
                        z,
                    )),
                ],
                I8 => {
                    let flip = _mm_set1_epi8(-128);
                    [
                        _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_xor_si128(
                            _mm_loadu_si128(q),
                            flip,
                        ))),
                        _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_xor_si128(
                            _mm_loadu_si128(q.add(1)),
                            flip,
                        ))),
                    ]
                }
                U4 => {
                    // The permute reads the low four bits of each lane.
                    let v = _mm512_cvtepu8_epi32(_mm_loadu_si128(q));
                    [
                        _mm512_permutexvar_ps(v, table),
                        _mm512_permutexvar_ps(_mm512_srli_epi32(v, 4), table),
                    ]
                }
                _ => {
                    // Four 3-byte blocks; the masked load reads only their 12 bytes.
                    let raw = _mm_maskz_loadu_epi8(0x0FFF, p as *const i8);
                    // Every dword of 128-bit lane h holds block h's 24-bit word
                    // (the top byte zero).
                    let word = |b: i32| -1 << 24 | (b + 2) << 16 | (b + 1) << 8 | b;
                    let ctrl = _mm512_set_epi32(
                        word(9),
                        word(9),
                        word(9),
                        word(9),
                        word(6),
                        word(6),
                        word(6),
                        word(6),
                        word(3),
                        word(3),
                        word(3),
                        word(3),
                        word(0),
                        word(0),
                        word(0),
                        word(0),
                    );
                    let w = _mm512_shuffle_epi8(_mm512_broadcast_i32x4(raw), ctrl);
                    let lo_shift = _mm512_set_epi32(9, 6, 3, 0, 9, 6, 3, 0, 9, 6, 3, 0, 9, 6, 3, 0);
                    let hi_shift = _mm512_add_epi32(lo_shift, _mm512_set1_epi32(12));
                    [
                        _mm512_permutexvar_ps(_mm512_srlv_epi32(w, lo_shift), table),
                        _mm512_permutexvar_ps(_mm512_srlv_epi32(w, hi_shift), table),
                    ]
                }
            }
        }
        #[inline(always)]
        unsafe fn natural<const C: u8>(d: [Self::F; 2]) -> [Self::F; 2] {
            if C == U8 || C == I8 {
                return d;
            }
            // Lane j of the result takes lane idx[j] & 15 of d[0], or of d[1]
            // when bit 4 is set: the inverse of `code_of`.
            let [a, b] = if C == U4 { NATURAL_U4 } else { NATURAL_U3 };
            let (a, b) = (
                _mm512_loadu_si512(a.as_ptr() as *const _),
                _mm512_loadu_si512(b.as_ptr() as *const _),
            );
            [
                _mm512_permutex2var_ps(d[0], a, d[1]),
                _mm512_permutex2var_ps(d[0], b, d[1]),
            ]
        }
        #[inline(always)]
        unsafe fn mul(a: Self::F, b: Self::F) -> Self::F {
            _mm512_mul_ps(a, b)
        }
        #[inline(always)]
        unsafe fn store(p: *mut f32, a: Self::F) {
            _mm512_storeu_ps(p, a)
        }
        #[inline(always)]
        unsafe fn transpose(a: &mut [Self::F; 16]) {
            // Pairs of rows interleaved, then pairs of pairs, then 128-bit
            // blocks twice.
            let mut t = [_mm512_setzero_ps(); 16];
            for i in 0..8 {
                t[2 * i] = _mm512_unpacklo_ps(a[2 * i], a[2 * i + 1]);
                t[2 * i + 1] = _mm512_unpackhi_ps(a[2 * i], a[2 * i + 1]);
            }
            for i in 0..4 {
                let (x, y) = (4 * i, 4 * i + 2);
                a[4 * i] = _mm512_shuffle_ps(t[x], t[y], 0x44);
                a[4 * i + 1] = _mm512_shuffle_ps(t[x], t[y], 0xEE);
                a[4 * i + 2] = _mm512_shuffle_ps(t[x + 1], t[y + 1], 0x44);
                a[4 * i + 3] = _mm512_shuffle_ps(t[x + 1], t[y + 1], 0xEE);
            }
            for h in 0..2 {
                for i in 0..4 {
                    let (x, y) = (8 * h + i, 8 * h + i + 4);
                    t[8 * h + i] = _mm512_shuffle_f32x4(a[x], a[y], 0x88);
                    t[8 * h + i + 4] = _mm512_shuffle_f32x4(a[x], a[y], 0xDD);
                }
            }
            for i in 0..8 {
                a[i] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0x88);
                a[i + 8] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0xDD);
            }
        }
    }

    /// For each input row of a 32-code chunk, the (vector · 16 + lane) that
    /// holds it in [`super::code_of`] order.
    const fn natural_index(kind: u8) -> [[i32; 16]; 2] {
        let mut out = [[0i32; 16]; 2];
        let mut v = 0;
        while v < 2 {
            let mut l = 0;
            while l < 16 {
                let c = super::code_of(kind, 16, v, l);
                out[c / 16][c % 16] = (16 * v + l) as i32;
                l += 1;
            }
            v += 1;
        }
        out
    }
    const NATURAL_U4: [[i32; 16]; 2] = natural_index(U4);
    const NATURAL_U3: [[i32; 16]; 2] = natural_index(U3);

    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn avx2_panel<const C: u8>(
        parts: &Parts,
        cols: Range<usize>,
        out: &mut [f32],
        ld: usize,
    ) {
        super::decode_panel::<Avx2, C>(parts, cols, out, ld)
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
    pub(super) unsafe fn avx512_panel<const C: u8>(
        parts: &Parts,
        cols: Range<usize>,
        out: &mut [f32],
        ld: usize,
    ) {
        super::decode_panel::<Avx512, C>(parts, cols, out, ld)
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn avx2<const C: u8, const M: usize, const NC: usize>(
        job: &Job,
        row0: usize,
        cols: Range<usize>,
        out: &mut [f32],
    ) {
        super::run_cols::<Avx2, C, M, NC>(job, row0, cols, out)
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
    pub(super) unsafe fn avx512<const C: u8, const M: usize, const NC: usize>(
        job: &Job,
        row0: usize,
        cols: Range<usize>,
        out: &mut [f32],
    ) {
        super::run_cols::<Avx512, C, M, NC>(job, row0, cols, out)
    }
}

/// Instruction sets the decode kernel is compiled for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Isa {
    Portable,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

impl Isa {
    /// The widest set this CPU runs (detected once).
    fn best() -> Isa {
        static BEST: std::sync::OnceLock<Isa> = std::sync::OnceLock::new();
        *BEST.get_or_init(|| {
            #[cfg(target_arch = "x86_64")]
            {
                use std::arch::is_x86_feature_detected as has;
                let avx2 = has!("avx2") && has!("fma") && has!("f16c");
                if avx2 && has!("avx512f") && has!("avx512bw") && has!("avx512vl") {
                    return Isa::Avx512;
                }
                if avx2 {
                    return Isa::Avx2;
                }
            }
            Isa::Portable
        })
    }

    fn lanes(self) -> usize {
        match self {
            Isa::Portable => Portable::LANES,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => x86::Avx2::LANES,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => x86::Avx512::LANES,
        }
    }

    /// The panel decoder for codes of `kind`.
    fn panel(self, kind: u8) -> PanelFn {
        #[cfg(target_arch = "x86_64")]
        use x86::{avx2_panel, avx512_panel};
        macro_rules! by_kind {
            ($f:ident) => {
                match kind {
                    U8 => $f::<U8> as PanelFn,
                    I8 => $f::<I8> as PanelFn,
                    U4 => $f::<U4> as PanelFn,
                    _ => $f::<U3> as PanelFn,
                }
            };
        }
        match self {
            Isa::Portable => by_kind!(portable_panel),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => by_kind!(avx2_panel),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => by_kind!(avx512_panel),
        }
    }

    /// The kernel for codes of `kind` and `m` (1 to [`KERNEL_ROWS`]) rows. Columns per step shrink as rows grow, so that the accumulators
    /// stay in registers.
    fn kernel(self, kind: u8, m: usize) -> KernelFn {
        #[cfg(target_arch = "x86_64")]
        use x86::{avx2, avx512};
        macro_rules! by_rows {
            ($f:ident, $c:expr, [$n1:literal, $n2:literal, $n3:literal, $n4:literal]) => {
                match m {
                    1 => $f::<{ $c }, 1, $n1> as KernelFn,
                    2 => $f::<{ $c }, 2, $n2> as KernelFn,
                    3 => $f::<{ $c }, 3, $n3> as KernelFn,
                    _ => $f::<{ $c }, 4, $n4> as KernelFn,
                }
            };
        }
        macro_rules! by_kind {
            ($f:ident, $ncs:tt) => {
                match kind {
                    U8 => by_rows!($f, U8, $ncs),
                    I8 => by_rows!($f, I8, $ncs),
                    U4 => by_rows!($f, U4, $ncs),
                    _ => by_rows!($f, U3, $ncs),
                }
            };
        }
        match self {
            Isa::Portable => by_kind!(portable, [2, 1, 1, 1]),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => by_kind!(avx2, [4, 2, 1, 1]),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => by_kind!(avx512, [4, 2, 2, 2]),
        }
    }
}

/// `x · W` for f32 activations `x` (`[..., K]`) and a packed `[K, N]` weight:
/// `[..., N]` (`[N]` for a vector `x`). Batch dimensions flatten into rows.
pub(crate) fn matmul_packed(x: &Value, w: &Value) -> KResult<Value> {
    let Some(parts) = Parts::of(w) else {
        bail!("expected a packed weight as MatMul's second operand");
    };
    let parts = parts?;
    let Ok(xs) = x.slice::<f32>() else {
        bail!(
            "a packed {} weight multiplies f32 activations, got {}",
            parts.format,
            x.dtype()
        );
    };
    let k = parts.rows;
    if x.rank() == 0 || x.shape[x.rank() - 1] != k {
        bail!(
            "MatMul inner dimensions differ: {:?} × packed [{k}, {}]",
            x.shape,
            parts.cols
        );
    }
    let mut shape = x.shape[..x.rank() - 1].to_vec();
    let m = shape.iter().product();
    shape.push(parts.cols);
    let values = product(Isa::best(), parts, xs, m, rayon::current_num_threads());
    Ok(Value::new(shape, values))
}

/// Applied to finished parts of a packed product's row-major `[m, N]`
/// output while they are still in cache: `(flat index of the first value,
/// the values)`, called once for every value, from any thread.
pub(crate) type Finish<'a> = &'a (dyn Fn(usize, &mut [f32]) + Sync);

/// `x · W` for row-major f32 activations `x` (`[m, K]`) and a packed
/// `[K, N]` weight, as `[m, N]`, with `finish` applied to each part of the
/// output as soon as it is computed (a fused epilogue).
pub(crate) fn matmul_packed_rows(
    x: &[f32],
    m: usize,
    w: &Value,
    finish: Option<Finish>,
) -> KResult<Vec<f32>> {
    let Some(parts) = Parts::of(w) else {
        bail!("expected a packed weight as the second operand");
    };
    let parts = parts?;
    if x.len() != m * parts.rows {
        bail!(
            "{} activation values do not make {m} rows of the packed weight's {} inputs",
            x.len(),
            parts.rows
        );
    }
    let threads = rayon::current_num_threads();
    Ok(product_then(Isa::best(), parts, x, m, threads, finish))
}

/// `[m, K] · W` as `[m, N]`, by the kernel that suits `m`.
fn product(isa: Isa, parts: Parts, x: &[f32], m: usize, threads: usize) -> Vec<f32> {
    product_then(isa, parts, x, m, threads, None)
}

/// [`product`], then `finish` on every part of the output.
fn product_then(
    isa: Isa,
    parts: Parts,
    x: &[f32],
    m: usize,
    threads: usize,
    finish: Option<Finish>,
) -> Vec<f32> {
    let (k, n) = (parts.rows, parts.cols);
    if m == 0 || n == 0 || k == 0 || m <= DECODE_MAX_ROWS {
        let mut out = if m == 0 || n == 0 || k == 0 {
            vec![0.0; m * n]
        } else {
            decode_shaped(isa, parts, x, m, threads)
        };
        // Few rows: the whole output is small, and transposed back just now.
        if let Some(f) = finish {
            const PART: usize = 1 << 14;
            if threads > 1 && out.len() > 2 * PART {
                out.par_chunks_mut(PART)
                    .enumerate()
                    .for_each(|(i, c)| f(i * PART, c));
            } else {
                f(0, &mut out);
            }
        }
        out
    } else {
        prefill_shaped_then(isa, parts, x, m, threads, finish)
    }
}

/// The decode-shaped product: codes decoded in registers, columns split
/// over rayon tasks.
fn decode_shaped(isa: Isa, parts: Parts, x: &[f32], m: usize, threads: usize) -> Vec<f32> {
    let n = parts.cols;
    let job = Job::new(parts, x, m, isa.lanes());
    let kind = parts.kind();
    // Rows in blocks of up to four: each block decodes the codes again, but
    // they are still in cache from the block before.
    let blocks: Vec<(usize, KernelFn)> = (0..m)
        .step_by(KERNEL_ROWS)
        .map(|r| (r, isa.kernel(kind, KERNEL_ROWS.min(m - r))))
        .collect();
    // SAFETY: `Isa::best` checked the CPU's features (tests pick only
    // detected sets), the job was made for this set's lanes and the weight's
    // kind, and every range of rows and columns lies within the product.
    let run = |cols: Range<usize>, out: &mut [f32]| {
        for &(row0, kernel) in &blocks {
            unsafe { kernel(&job, row0, cols.clone(), out) };
        }
    };
    // Transposed ([n, m]) so that each task owns one contiguous range.
    let mut out_t = vec![0f32; n * m];
    if threads <= 1 || parts.rows * n * m < PAR_MIN_WEIGHTS {
        run(0..n, &mut out_t);
    } else {
        let per_task = n.div_ceil(4 * threads).next_multiple_of(4).max(16);
        out_t
            .par_chunks_mut(per_task * m)
            .enumerate()
            .for_each(|(t, o)| {
                let j0 = t * per_task;
                run(j0..j0 + o.len() / m, o);
            });
    }
    if m == 1 {
        return out_t;
    }
    let mut out = vec![0f32; m * n];
    for (j, col) in out_t.chunks_exact(m).enumerate() {
        for (i, &v) in col.iter().enumerate() {
            out[i * n + j] = v;
        }
    }
    out
}

/// A raw pointer that tasks share to write disjoint parts of one buffer.
#[derive(Clone, Copy)]
struct SharedOut(*mut f32);
// SAFETY: every task writes a distinct set of elements (its own columns).
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}

impl SharedOut {
    // A method, so that closures capture the wrapper rather than the pointer.
    fn ptr(self) -> *mut f32 {
        self.0
    }
}

/// The prefill-shaped product: each task decodes a panel of columns
/// (`[K, panel]`) and multiplies it with `gemm`.
#[cfg(test)]
fn prefill_shaped(isa: Isa, parts: Parts, x: &[f32], m: usize, threads: usize) -> Vec<f32> {
    prefill_shaped_then(isa, parts, x, m, threads, None)
}

/// [`prefill_shaped`], with `finish` applied to each panel of columns
/// right after its product.
fn prefill_shaped_then(
    isa: Isa,
    parts: Parts,
    x: &[f32],
    m: usize,
    threads: usize,
    finish: Option<Finish>,
) -> Vec<f32> {
    let (k, n) = (parts.rows, parts.cols);
    let decode = isa.panel(parts.kind());
    let mut out = vec![0f32; m * n];
    // Panels of 32 to 256 columns, at least two per thread when there are enough.
    let panel = n
        .div_ceil(2 * threads.max(1))
        .next_multiple_of(16)
        .clamp(32, 256);
    let panels = n.div_ceil(panel);
    // Rows of the decoded panel are padded so that they do not all map to
    // the same few cache sets.
    let ld = panel + 16;
    let dst = SharedOut(out.as_mut_ptr());
    let run = |scratch: &mut Vec<f32>, p: usize| {
        let j0 = p * panel;
        let nc = panel.min(n - j0);
        scratch.resize(ld * k, 0.0);
        // SAFETY: the decoder was compiled for this CPU (`Isa::best`, or a
        // set a test detected) and the weight's kind; the columns exist.
        unsafe { decode(&parts, j0..j0 + nc, scratch, ld) };
        // SAFETY: `dst` holds m·n values and this task writes only columns
        // j0 .. j0 + nc (row stride n); `x` holds m·k values and the scratch
        // k rows of `ld ≥ nc` values, read with the strides given.
        unsafe {
            gemm::gemm(
                m,
                nc,
                k,
                dst.ptr().add(j0),
                1,
                n as isize,
                false,
                x.as_ptr(),
                1,
                k as isize,
                scratch.as_ptr(),
                1,
                ld as isize,
                1.0f32,
                1.0f32,
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
        }
        if let Some(f) = finish {
            for i in 0..m {
                // SAFETY: row i's columns j0 .. j0 + nc lie within the m·n
                // output, and only this task touches them.
                let seg = unsafe { std::slice::from_raw_parts_mut(dst.ptr().add(i * n + j0), nc) };
                f(i * n + j0, seg);
            }
        }
    };
    if threads <= 1 || panels == 1 {
        let mut scratch = Vec::new();
        for p in 0..panels {
            run(&mut scratch, p);
        }
    } else {
        (0..panels)
            .into_par_iter()
            .for_each_init(Vec::new, |scratch, p| run(scratch, p));
    }
    out
}

/// Gather of output columns of a packed `[K, N]` weight: `[K, idx...]`
/// (ONNX Gather along axis 1), decoding only the selected columns.
pub(crate) fn gather_columns(w: &Value, idx: &[usize], idx_shape: &[usize]) -> KResult<Value> {
    let Some(parts) = Parts::of(w) else {
        bail!("expected a packed weight");
    };
    let parts = parts?;
    let (k, p) = (parts.rows, idx.len());
    if let Some(&bad) = idx.iter().find(|&&i| i >= parts.cols) {
        bail!(
            "column {bad} is out of range for a packed weight of {} columns",
            parts.cols
        );
    }
    let mut shape = vec![k];
    shape.extend_from_slice(idx_shape);
    // Decoded one selected column per row ([p, K]), then transposed.
    let mut cols = vec![0f32; p * k];
    if k > 0 {
        cols.par_chunks_mut(k)
            .zip(idx.par_iter())
            .for_each(|(col, &i)| parts.decode_column(i, col));
    }
    let mut out = vec![0f32; k * p];
    if p > 0 {
        out.par_chunks_mut(p).enumerate().for_each(|(r, row)| {
            for (o, col) in row.iter_mut().zip(cols.chunks_exact(k)) {
                *o = col[r];
            }
        });
    }
    Ok(Value::new(shape, out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_ir::quant::{dequantize, dot_column, quantize_rtn, PackedWeight};
    use kiln_ir::Tensor;

    /// Deterministic pseudo-random values in [-1, 1), with a few larger
    /// outliers so scales differ between groups.
    fn rand(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9e3779b97f4a7c15) | 1;
        (0..n)
            .map(|i| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let v = ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0;
                if i % 97 == 0 {
                    v * 6.0
                } else {
                    v
                }
            })
            .collect()
    }

    fn isas() -> Vec<Isa> {
        let mut v = vec![Isa::Portable];
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            if has!("avx2") && has!("fma") && has!("f16c") {
                v.push(Isa::Avx2);
            }
            if Isa::best() == Isa::Avx512 {
                v.push(Isa::Avx512);
            }
        }
        v
    }

    fn packed_value(w: &PackedWeight) -> Value {
        Value::from_tensor(&Tensor::from_packed(w))
    }

    /// Checks `got` (`[m, n]`) against the f64 reference `dot_column` per row,
    /// within `1e-5 · Σ|w·x|` per element.
    fn check(got: &[f32], w: &PackedWeight, x: &[f32], m: usize, what: &str) {
        let (k, n) = (w.rows(), w.cols());
        let deq = dequantize(w);
        for i in 0..m {
            let row = &x[i * k..(i + 1) * k];
            for j in 0..n {
                let want = dot_column(w, j, row);
                let mag: f64 = (0..k)
                    .map(|r| (f64::from(deq[r * n + j]) * f64::from(row[r])).abs())
                    .sum();
                let err = (f64::from(got[i * n + j]) - f64::from(want)).abs();
                assert!(
                    err <= 1e-5 * mag + 1e-30,
                    "{what}: row {i}, column {j}: got {}, want {want} (|err| {err:e}, Σ|w·x| {mag:e})",
                    got[i * n + j]
                );
            }
        }
    }

    #[test]
    fn decode_kernels_match_the_reference_for_every_format_and_instruction_set() {
        // Odd sizes: short last groups, tails shorter than a chunk, column
        // counts that are not a multiple of the columns per step.
        let shapes = [(576, 13), (100, 7), (7, 5), (33, 3), (200, 9), (64, 4)];
        for format in QuantFormat::all() {
            for &(k, n) in &shapes {
                let w = quantize_rtn(&rand(k * n, (k * n) as u64), k, n, format).unwrap();
                let v = packed_value(&w);
                let parts = Parts::of(&v).unwrap().unwrap();
                for m in [1, 2, 3, 4, 7, 9] {
                    let x = rand(m * k, m as u64 + 7);
                    for isa in isas() {
                        for threads in [1, 2] {
                            let got = decode_shaped(isa, parts, &x, m, threads);
                            check(
                                &got,
                                &w,
                                &x,
                                m,
                                &format!("{format} {isa:?} [{m}x{k}]·[{k}x{n}]"),
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn prefill_panels_match_the_reference() {
        for format in QuantFormat::all() {
            let (k, n) = (130, 300);
            let w = quantize_rtn(&rand(k * n, 3), k, n, format).unwrap();
            let v = packed_value(&w);
            let parts = Parts::of(&v).unwrap().unwrap();
            for m in [5, 17] {
                let x = rand(m * k, m as u64);
                for threads in [1, 3] {
                    for isa in isas() {
                        let got = prefill_shaped(isa, parts, &x, m, threads);
                        check(&got, &w, &x, m, &format!("{format} {isa:?} prefill m {m}"));
                    }
                }
            }
        }
    }

    #[test]
    fn decoded_columns_equal_the_reference_decoder_exactly() {
        for format in QuantFormat::all() {
            for (k, n) in [(576, 40), (37, 35), (200, 18), (1, 2)] {
                let w = quantize_rtn(&rand(k * n, 11), k, n, format).unwrap();
                let v = packed_value(&w);
                let parts = Parts::of(&v).unwrap().unwrap();
                let deq = dequantize(&w);
                let mut col = vec![0f32; k];
                for j in 0..n {
                    parts.decode_column(j, &mut col);
                    for r in 0..k {
                        assert_eq!(
                            col[r].to_bits(),
                            deq[r * n + j].to_bits(),
                            "{format} [{r}, {j}]"
                        );
                    }
                }
                for isa in isas() {
                    // Columns 1.. of the weight, [k, n - 1].
                    let mut panel = vec![0f32; (n - 1) * k];
                    unsafe { isa.panel(parts.kind())(&parts, 1..n, &mut panel, n - 1) };
                    for j in 1..n {
                        for r in 0..k {
                            assert_eq!(
                                panel[r * (n - 1) + j - 1].to_bits(),
                                deq[r * n + j].to_bits(),
                                "{format} {isa:?} panel [{r}, {j}]"
                            );
                        }
                    }
                }
            }
        }
    }
}
