//! Fused kernels: `Elementwise` (a scalar program over broadcast inputs)
//! and `FusedMatMul` (a product with an elementwise epilogue).
//!
//! `FusedMatMul` reads transposed operands through swapped strides (no
//! transposed copy). A single product (B without batch dims folds A's
//! batches into rows) is one `gemm` call with gemm's own blocking and
//! threading, then the whole epilogue in one parallel pass over the result:
//! measured faster on the ViT, MiniLM and SmolLM2 shapes than tiles that
//! each pack their panel of B again. Batched products (attention-like, B
//! with batch dims) split each batch into tiles of up to 256 rows × 256
//! columns, one rayon task each, and run the epilogue over each tile while
//! it is in L2. A packed B goes through `qmatmul`, which calls the epilogue
//! on each panel of columns it finishes.
//!
//! A program runs over chunks of [`CHUNK`] output elements with a register
//! file of chunk buffers: each instruction is one tight loop over the chunk
//! (the scalar functions come from `kiln_ir::fused`, written branch-free so
//! the loops vectorise), so every input is read and the output written once,
//! and intermediates never leave L1. Compiling the program for the operands
//! at hand decides, per register, how it is held:
//! - a constant, a scalar operand, or an instruction of those alone: one
//!   number, folded at compile time, read as a scalar by the loops;
//! - an operand of the output's shape: read in place;
//! - any other broadcast operand: gathered into a buffer per chunk, in runs
//!   along its innermost axis (a bias row is copied, a column broadcast is a
//!   fill);
//! - an instruction result: a buffer, reused once its last reader has run;
//!   the final instruction writes straight into the output.

use super::elementwise::broadcast_shapes;
use super::matmul::{check_mat, gemm_into, Mat};
use super::qmatmul;
use super::value::{bail, strides_of, KResult, Value};
use kiln_ir::fused::{
    erf_f32, exp_f32, gelu_erf_f32, gelu_tanh_f32, max_f32, min_f32, pow_f32, relu_f32,
    sigmoid_f32, BinaryFn, Instr, Program, UnaryFn,
};
use kiln_ir::GeluApprox;
use rayon::prelude::*;

/// Output elements one pass of the register file covers.
const CHUNK: usize = 512;
/// Outputs at least this large are split over rayon tasks.
const PAR_MIN: usize = 1 << 16;
/// Output elements per rayon task (whole chunks).
const TASK: usize = 16 * CHUNK;
/// Most rows of a matmul tile: each tile packs its columns of B again, so
/// tiles need many rows to amortise that (256 measured faster than 128 on
/// a [512, 576] × [576, 1536] product).
const TILE_ROWS: usize = 256;
/// Most columns of a matmul tile: a tile of output (256 KiB at most) stays
/// in L2 between its product and its epilogue.
const TILE_COLS: usize = 256;
/// Fewest columns of a tile when columns are split further for threads.
const MIN_TILE_COLS: usize = 32;

// ---------------------------------------------------------------------------
// Operands read through broadcast strides.

/// How an operand's values line up with the output's flat indices.
#[derive(Clone, Debug)]
enum Access {
    /// One value for every output element.
    Scalar(f32),
    /// Same shape as the output: element i is value i.
    Contiguous,
    /// Output dims (merged, size-1 dims dropped) and the operand's stride
    /// along each (0 where broadcast).
    Strided {
        dims: Vec<usize>,
        strides: Vec<usize>,
    },
}

/// An operand of a program, bound to its data.
struct Operand<'a> {
    data: &'a [f32],
    access: Access,
}

impl<'a> Operand<'a> {
    /// `shape` must broadcast to `out` (checked by the caller).
    fn new(data: &'a [f32], shape: &[usize], out: &[usize]) -> Operand<'a> {
        let r = out.len();
        let pad = r - shape.len();
        let st = strides_of(shape);
        let mut dims: Vec<usize> = Vec::new();
        let mut strides: Vec<usize> = Vec::new();
        for d in 0..r {
            if out[d] == 1 {
                continue;
            }
            let s = if d < pad || shape[d - pad] == 1 {
                0
            } else {
                st[d - pad]
            };
            // Merge with the previous dim when one stride walks both.
            if let (Some(ld), Some(ls)) = (dims.last_mut(), strides.last_mut()) {
                if *ls == s * out[d] {
                    *ld *= out[d];
                    *ls = s;
                    continue;
                }
            }
            dims.push(out[d]);
            strides.push(s);
        }
        let access = if data.len() == 1 || strides.iter().all(|&s| s == 0) {
            Access::Scalar(data.first().copied().unwrap_or(0.0))
        } else if strides == [1] {
            Access::Contiguous
        } else {
            Access::Strided { dims, strides }
        };
        Operand { data, access }
    }

    /// Gathers the values of output elements `start .. start + dst.len()`.
    fn gather(&self, start: usize, dst: &mut [f32]) {
        let (dims, strides) = match &self.access {
            Access::Scalar(v) => return dst.fill(*v),
            Access::Contiguous => {
                return dst.copy_from_slice(&self.data[start..start + dst.len()]);
            }
            Access::Strided { dims, strides } => (dims, strides),
        };
        let r = dims.len();
        let mut idx = [0usize; 16];
        let mut big = Vec::new();
        let idx: &mut [usize] = if r <= 16 {
            &mut idx[..r]
        } else {
            big.resize(r, 0);
            &mut big
        };
        let mut rem = start;
        let mut off = 0;
        for d in (0..r).rev() {
            idx[d] = rem % dims[d];
            rem /= dims[d];
            off += idx[d] * strides[d];
        }
        let (inner, step) = (dims[r - 1], strides[r - 1]);
        let mut pos = 0;
        while pos < dst.len() {
            let run = (inner - idx[r - 1]).min(dst.len() - pos);
            let out = &mut dst[pos..pos + run];
            match step {
                0 => out.fill(self.data[off]),
                1 => out.copy_from_slice(&self.data[off..off + run]),
                s => {
                    for (i, o) in out.iter_mut().enumerate() {
                        *o = self.data[off + i * s];
                    }
                }
            }
            pos += run;
            idx[r - 1] += run;
            off += run * step;
            if idx[r - 1] == inner && pos < dst.len() {
                // Carry into the outer dims.
                idx[r - 1] = 0;
                off -= inner * step;
                let mut d = r - 1;
                while d > 0 {
                    d -= 1;
                    idx[d] += 1;
                    off += strides[d];
                    if idx[d] < dims[d] {
                        break;
                    }
                    off -= dims[d] * strides[d];
                    idx[d] = 0;
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Programs compiled for their operands.

/// Where an instruction's operand is read from.
#[derive(Clone, Copy, Debug)]
enum Src {
    /// One value for the whole chunk.
    Scalar(f32),
    /// Operand `i`, read in place (it has the output's shape).
    Operand(usize),
    /// A register buffer.
    Slot(usize),
}

/// Where an instruction writes: a register buffer, or the output itself
/// (the final instruction).
#[derive(Clone, Copy, Debug)]
enum Dst {
    Slot(usize),
    Out,
}

/// The function an instruction applies.
#[derive(Clone, Copy, Debug)]
enum Func {
    Unary(UnaryFn),
    Binary(BinaryFn),
}

/// One instruction over a chunk (the second operand unused by unary ones).
#[derive(Clone, Debug)]
struct Step {
    func: Func,
    a: Src,
    b: Src,
    dst: Dst,
}

/// What fills a buffer at the start of each chunk.
#[derive(Clone, Copy, Debug)]
enum Load {
    /// Operand `i`, gathered through its strides.
    Operand(usize),
    /// The product values already in the output (an epilogue's register 0).
    Acc,
}

/// A program compiled for a set of operands.
#[derive(Debug)]
struct Compiled {
    loads: Vec<(Load, usize)>,
    steps: Vec<Step>,
    /// The result, when no step computes it (a scalar, an operand, a load).
    result: Option<Src>,
    slots: usize,
}

/// A slot allocator that reuses freed buffers.
#[derive(Default)]
struct Slots {
    free: Vec<usize>,
    count: usize,
}

impl Slots {
    fn take(&mut self) -> usize {
        self.free.pop().unwrap_or_else(|| {
            self.count += 1;
            self.count - 1
        })
    }
}

impl Compiled {
    /// Compiles `p` whose input registers are bound to `operands`; with
    /// `acc`, register 0 is the output's current values (an epilogue) and
    /// register i ≥ 1 is operand i - 1.
    fn new(p: &Program, operands: &[Operand], acc: bool) -> Compiled {
        let n_in = p.inputs as usize;
        let n = p.num_registers();
        let result = p.result() as usize;
        // Registers the result depends on.
        let mut live = vec![false; n];
        live[result] = true;
        for r in (n_in..n).rev() {
            if live[r] {
                for o in p.instrs[r - n_in].operands() {
                    live[o as usize] = true;
                }
            }
        }
        // Last step reading each register (usize::MAX: none).
        let mut last_use = vec![usize::MAX; n];
        for (i, ins) in p.instrs.iter().enumerate() {
            if live[n_in + i] {
                for o in ins.operands() {
                    last_use[o as usize] = i;
                }
            }
        }
        let mut slots = Slots::default();
        let mut loads = Vec::new();
        let mut src: Vec<Option<Src>> = vec![None; n];
        for r in 0..n_in {
            if !live[r] {
                continue;
            }
            let (load, operand) = match (acc, r) {
                (true, 0) => (Load::Acc, None),
                (true, r) => (Load::Operand(r - 1), Some(r - 1)),
                (false, r) => (Load::Operand(r), Some(r)),
            };
            src[r] = Some(match operand.map(|i| (i, &operands[i].access)) {
                Some((_, Access::Scalar(v))) => Src::Scalar(*v),
                Some((i, Access::Contiguous)) => Src::Operand(i),
                _ => {
                    let s = slots.take();
                    loads.push((load, s));
                    Src::Slot(s)
                }
            });
        }
        let mut steps = Vec::new();
        for (i, ins) in p.instrs.iter().enumerate() {
            let r = n_in + i;
            if !live[r] {
                continue;
            }
            let get = |o: u8| src[o as usize].expect("operands are defined before use");
            let (func, a, b) = match *ins {
                Instr::Const(c) => {
                    src[r] = Some(Src::Scalar(c.0));
                    continue;
                }
                Instr::Unary(f, x) => (Func::Unary(f), get(x), Src::Scalar(0.0)),
                Instr::Binary(f, x, y) => (Func::Binary(f), get(x), get(y)),
            };
            // All-scalar operands fold now, with the same formulas.
            if let (Src::Scalar(x), Src::Scalar(y)) = (a, b) {
                src[r] = Some(Src::Scalar(match func {
                    Func::Unary(f) => f.apply(x),
                    Func::Binary(f) => f.apply(x, y),
                }));
                continue;
            }
            let dst = if r == result {
                Dst::Out
            } else {
                Dst::Slot(slots.take())
            };
            steps.push(Step { func, a, b, dst });
            if let Dst::Slot(s) = dst {
                src[r] = Some(Src::Slot(s));
            }
            // Free the buffers whose last reader this was (after taking the
            // destination, so a step never writes a buffer it reads).
            let mut ops = ins.operands();
            ops.dedup();
            for o in ops {
                if last_use[o as usize] == i {
                    if let Some(Src::Slot(s)) = src[o as usize] {
                        slots.free.push(s);
                    }
                }
            }
        }
        let computed = matches!(steps.last(), Some(Step { dst: Dst::Out, .. }));
        Compiled {
            loads,
            steps,
            result: if computed { None } else { src[result] },
            slots: slots.count,
        }
    }

    /// Runs the program for output elements `start .. start + out.len()`
    /// (at most [`CHUNK`]); `regs` holds `self.slots` chunk buffers.
    fn run_chunk(&self, operands: &[Operand], start: usize, out: &mut [f32], regs: &mut [f32]) {
        let len = out.len();
        debug_assert!(len <= CHUNK);
        for &(load, s) in &self.loads {
            let dst = &mut regs[s * CHUNK..s * CHUNK + len];
            match load {
                Load::Operand(i) => operands[i].gather(start, dst),
                Load::Acc => dst.copy_from_slice(out),
            }
        }
        for step in &self.steps {
            // Split the register file around the destination, which no operand of the step uses.
            let (lo, dst, hi): (&[f32], &mut [f32], &[f32]) = match step.dst {
                Dst::Out => (&*regs, &mut *out, &[]),
                Dst::Slot(d) => {
                    let (lo, rest) = regs.split_at_mut(d * CHUNK);
                    let (dst, hi) = rest.split_at_mut(CHUNK);
                    (&*lo, &mut dst[..len], &*hi)
                }
            };
            let read = |s: Src| -> Arg {
                match s {
                    Src::Scalar(v) => Arg::S(v),
                    Src::Operand(i) => Arg::V(&operands[i].data[start..start + len]),
                    Src::Slot(j) => match step.dst {
                        Dst::Slot(d) if j > d => Arg::V(&hi[(j - d - 1) * CHUNK..][..len]),
                        _ => Arg::V(&lo[j * CHUNK..][..len]),
                    },
                }
            };
            match step.func {
                Func::Unary(f) => unary(f, read(step.a), dst),
                Func::Binary(f) => binary(f, read(step.a), read(step.b), dst),
            }
        }
        match self.result {
            None => {}
            Some(Src::Scalar(v)) => out.fill(v),
            Some(Src::Operand(i)) => out.copy_from_slice(&operands[i].data[start..start + len]),
            Some(Src::Slot(s)) => out.copy_from_slice(&regs[s * CHUNK..s * CHUNK + len]),
        }
    }

    /// Runs the program over `out`, whose first element is output element
    /// `start`, chunk by chunk; in parallel when `par` and it is large.
    fn run(&self, operands: &[Operand], start: usize, out: &mut [f32], par: bool) {
        let serial = |base: usize, out: &mut [f32], regs: &mut Vec<f32>| {
            regs.resize(self.slots * CHUNK, 0.0);
            for (c, o) in out.chunks_mut(CHUNK).enumerate() {
                self.run_chunk(operands, base + c * CHUNK, o, regs);
            }
        };
        if par && out.len() >= PAR_MIN && rayon::current_num_threads() > 1 {
            out.par_chunks_mut(TASK)
                .enumerate()
                .for_each_init(Vec::new, |regs, (t, o)| serial(start + t * TASK, o, regs));
        } else {
            serial(start, out, &mut Vec::new());
        }
    }
}

/// An operand of one instruction over a chunk.
#[derive(Clone, Copy)]
enum Arg<'a> {
    S(f32),
    V(&'a [f32]),
}

/// One loop per function, so that each is monomorphised and vectorised.
macro_rules! map1 {
    ($x:expr, $out:expr, |$v:ident| $body:expr) => {
        match $x {
            Arg::V(x) => {
                for (o, &$v) in $out.iter_mut().zip(x) {
                    *o = $body;
                }
            }
            Arg::S($v) => $out.fill($body),
        }
    };
}

macro_rules! map2 {
    ($a:expr, $b:expr, $out:expr, |$x:ident, $y:ident| $body:expr) => {
        match ($a, $b) {
            (Arg::V(a), Arg::V(b)) => {
                for ((o, &$x), &$y) in $out.iter_mut().zip(a).zip(b) {
                    *o = $body;
                }
            }
            (Arg::V(a), Arg::S($y)) => {
                for (o, &$x) in $out.iter_mut().zip(a) {
                    *o = $body;
                }
            }
            (Arg::S($x), Arg::V(b)) => {
                for (o, &$y) in $out.iter_mut().zip(b) {
                    *o = $body;
                }
            }
            (Arg::S($x), Arg::S($y)) => $out.fill($body),
        }
    };
}

fn unary(f: UnaryFn, x: Arg, out: &mut [f32]) {
    match f {
        UnaryFn::Neg => map1!(x, out, |v| -v),
        UnaryFn::Abs => map1!(x, out, |v| v.abs()),
        UnaryFn::Exp => map1!(x, out, |v| exp_f32(v)),
        UnaryFn::Log => map1!(x, out, |v| v.ln()),
        UnaryFn::Sqrt => map1!(x, out, |v| v.sqrt()),
        UnaryFn::Reciprocal => map1!(x, out, |v| 1.0 / v),
        UnaryFn::Tanh => map1!(x, out, |v| v.tanh()),
        UnaryFn::Sigmoid => map1!(x, out, |v| sigmoid_f32(v)),
        UnaryFn::Relu => map1!(x, out, |v| relu_f32(v)),
        UnaryFn::Erf => map1!(x, out, |v| erf_f32(v)),
        UnaryFn::Gelu(GeluApprox::None) => map1!(x, out, |v| gelu_erf_f32(v)),
        UnaryFn::Gelu(GeluApprox::Tanh) => map1!(x, out, |v| gelu_tanh_f32(v)),
        UnaryFn::Swish(a) => {
            let a = a.0;
            map1!(x, out, |v| v * sigmoid_f32(a * v))
        }
    }
}

fn binary(f: BinaryFn, a: Arg, b: Arg, out: &mut [f32]) {
    match f {
        BinaryFn::Add => map2!(a, b, out, |x, y| x + y),
        BinaryFn::Sub => map2!(a, b, out, |x, y| x - y),
        BinaryFn::Mul => map2!(a, b, out, |x, y| x * y),
        BinaryFn::Div => map2!(a, b, out, |x, y| x / y),
        BinaryFn::Pow => match b {
            // The common x² without a per-element test.
            Arg::S(2.0) => map1!(a, out, |x| x * x),
            _ => map2!(a, b, out, |x, y| pow_f32(x, y)),
        },
        BinaryFn::Max => map2!(a, b, out, |x, y| max_f32(x, y)),
        BinaryFn::Min => map2!(a, b, out, |x, y| min_f32(x, y)),
    }
}

// ---------------------------------------------------------------------------
// The ops.

fn f32_data<'v>(v: &'v Value, what: &str) -> KResult<&'v [f32]> {
    match v.slice::<f32>() {
        Ok(s) => Ok(s),
        Err(_) => bail!("{what} must be f32, got {}", v.dtype()),
    }
}

/// `Elementwise`: the program over its broadcast f32 inputs.
pub(crate) fn elementwise(program: &Program, inputs: &[&Value]) -> KResult<Value> {
    if let Err(m) = program.validate() {
        bail!("invalid program: {m}");
    }
    if inputs.len() != program.inputs as usize {
        bail!(
            "the program has {} inputs, the node has {} operands",
            program.inputs,
            inputs.len()
        );
    }
    let data = inputs
        .iter()
        .enumerate()
        .map(|(i, v)| f32_data(v, &format!("X{i}")))
        .collect::<KResult<Vec<_>>>()?;
    let shapes: Vec<&[usize]> = inputs.iter().map(|v| v.shape.as_slice()).collect();
    let out_shape = broadcast_shapes(&shapes)?;
    let operands: Vec<Operand> = data
        .iter()
        .zip(&shapes)
        .map(|(d, s)| Operand::new(d, s, &out_shape))
        .collect();
    let compiled = Compiled::new(program, &operands, false);
    let mut out = vec![0f32; out_shape.iter().product()];
    compiled.run(&operands, 0, &mut out, true);
    Ok(Value::new(out_shape, out))
}

/// The epilogue's extra operands bound to the product's shape, and the
/// compiled epilogue; `None` for the identity (nothing to apply).
fn epilogue_for<'a>(
    epilogue: &Program,
    extras: &[&'a Value],
    out_shape: &[usize],
) -> KResult<Option<(Compiled, Vec<Operand<'a>>)>> {
    if epilogue.is_identity() {
        return Ok(None);
    }
    let mut operands = Vec::with_capacity(extras.len());
    for (i, e) in extras.iter().enumerate() {
        let what = format!("E{}", i + 1);
        let data = f32_data(e, &what)?;
        if broadcast_shapes(&[&e.shape, out_shape]).ok().as_deref() != Some(out_shape) {
            bail!(
                "{what} of shape {:?} does not broadcast to the product's shape {out_shape:?}",
                e.shape
            );
        }
        operands.push(Operand::new(data, &e.shape, out_shape));
    }
    let compiled = Compiled::new(epilogue, &operands, true);
    Ok(Some((compiled, operands)))
}

/// A matmul operand's logical 2-d view: batch dims, rows, cols and its
/// strides (a transposed operand is read through swapped strides).
struct View {
    batch: Vec<usize>,
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
}

fn view(shape: &[usize], left: bool, trans: bool) -> View {
    let r = shape.len();
    if r == 1 {
        // numpy promotes a left vector to a row and a right one to a column.
        let k = shape[0];
        return if left {
            View {
                batch: vec![],
                rows: 1,
                cols: k,
                rs: k,
                cs: 1,
            }
        } else {
            View {
                batch: vec![],
                rows: k,
                cols: 1,
                rs: 1,
                cs: 1,
            }
        };
    }
    let (x, y) = (shape[r - 2], shape[r - 1]);
    let batch = shape[..r - 2].to_vec();
    if trans {
        View {
            batch,
            rows: y,
            cols: x,
            rs: 1,
            cs: y,
        }
    } else {
        View {
            batch,
            rows: x,
            cols: y,
            rs: y,
            cs: 1,
        }
    }
}

/// `FusedMatMul`: `epilogue(op(A) · op(B), E1, ..)`.
pub(crate) fn fused_matmul(
    a: &Value,
    b: &Value,
    extras: &[&Value],
    trans_a: bool,
    trans_b: bool,
    epilogue: &Program,
) -> KResult<Value> {
    if let Err(m) = epilogue.validate() {
        bail!("invalid epilogue: {m}");
    }
    if extras.len() + 1 != epilogue.inputs as usize {
        bail!(
            "the epilogue has {} inputs, so {} operands after A and B are needed, got {}",
            epilogue.inputs,
            epilogue.inputs as usize - 1,
            extras.len()
        );
    }
    let ad = f32_data(a, "A")?;
    if a.rank() == 0 || b.rank() == 0 {
        bail!(
            "operands must have rank ≥ 1, got {:?} and {:?}",
            a.shape,
            b.shape
        );
    }
    for (flag, v, name) in [(trans_a, a, "trans_a"), (trans_b, b, "trans_b")] {
        if flag && v.rank() < 2 {
            bail!(
                "{name} swaps the last two axes, so the operand needs rank ≥ 2, got {:?}",
                v.shape
            );
        }
    }
    if b.dtype().is_quant() {
        return packed(a, ad, b, extras, trans_a, trans_b, epilogue);
    }
    let bd = f32_data(b, "B")?;
    let (mut va, vb) = (
        view(&a.shape, true, trans_a),
        view(&b.shape, false, trans_b),
    );
    // A weight without batch dims: A's batches are consecutive rows of one
    // product (row-major, untransposed), so tiles can span them.
    let a_batches: usize = va.batch.iter().product();
    let flat_out_shape = (vb.batch.is_empty() && !trans_a && a.rank() > 2).then(|| {
        let mut s = va.batch.clone();
        s.push(va.rows);
        s
    });
    if flat_out_shape.is_some() {
        va.rows *= a_batches;
        va.batch.clear();
    }
    let (m, k, n) = (va.rows, va.cols, vb.cols);
    if vb.rows != k {
        bail!(
            "inner dimensions differ: A {:?} (trans_a={trans_a}) × B {:?} (trans_b={trans_b})",
            a.shape,
            b.shape
        );
    }
    let batch = broadcast_shapes(&[&va.batch, &vb.batch])?;
    let mut out_shape = match &flat_out_shape {
        Some(s) => s.clone(),
        None => {
            let mut s = batch.clone();
            if a.rank() > 1 {
                s.push(m);
            }
            s
        }
    };
    if b.rank() > 1 {
        out_shape.push(n);
    }
    let nb: usize = batch.iter().product();
    let a_off = batch_offsets(&batch, &va.batch, m * k);
    let b_off = batch_offsets(&batch, &vb.batch, k * n);
    let am = |off: usize| Mat {
        off,
        rs: va.rs as isize,
        cs: va.cs as isize,
    };
    let bm = |off: usize| Mat {
        off,
        rs: vb.rs as isize,
        cs: vb.cs as isize,
    };
    for i in 0..nb {
        if !check_mat(am(a_off[i]), m, k, ad.len()) || !check_mat(bm(b_off[i]), k, n, bd.len()) {
            bail!("an operand is smaller than its shape");
        }
    }
    let epi = epilogue_for(epilogue, extras, &out_shape)?;
    let mut out = vec![0f32; nb * m * n];
    if out.is_empty() {
        return Ok(Value::new(out_shape, out));
    }
    let threads = rayon::current_num_threads();
    if nb == 1 {
        // One product: gemm's own blocking and threading over the whole
        // matrix beat tiles that each pack their panel of B again; the
        // epilogue then makes its single pass over the result.
        gemm_into(
            &mut out,
            (m, n, k),
            ad,
            am(a_off[0]),
            bd,
            bm(b_off[0]),
            1.0,
            false,
            threads,
        );
        if let Some((c, ops)) = &epi {
            c.run(ops, 0, &mut out, threads > 1);
        }
        return Ok(Value::new(out_shape, out));
    }
    // Tiles of rows × columns of one batch; when there are fewer tiles
    // than tasks for the threads, narrower columns.
    let tile_rows = m.min(TILE_ROWS);
    let row_tiles = nb * m.div_ceil(tile_rows);
    let want_col_tiles = (2 * threads).div_ceil(row_tiles);
    let tile_cols = n
        .div_ceil(want_col_tiles)
        .next_multiple_of(16)
        .clamp(MIN_TILE_COLS, TILE_COLS)
        .min(n);
    let tiles: Vec<Tile> = (0..nb)
        .flat_map(|batch| (0..m).step_by(tile_rows).map(move |row0| (batch, row0)))
        .flat_map(|(batch, row0)| {
            (0..n).step_by(tile_cols).map(move |col0| Tile {
                batch,
                row0,
                rows: tile_rows.min(m - row0),
                col0,
                cols: tile_cols.min(n - col0),
            })
        })
        .collect();
    // A single tile: the product over all threads (when large enough).
    let inner_par = if threads > 1 && tiles.len() == 1 && m * n * k >= PAR_GEMM_FLOPS {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    let dst = SharedOut(out.as_mut_ptr());
    let run = |t: &Tile| {
        let (a0, b0) = (
            a_off[t.batch] + t.row0 * va.rs,
            b_off[t.batch] + t.col0 * vb.cs,
        );
        let first = (t.batch * m + t.row0) * n + t.col0;
        // SAFETY: `check_mat` above bounds every element of A and B that
        // the tile reads (a sub-block of its batch's matrices); the tile's
        // output rows row0.. and columns col0.. (row stride n) lie within
        // `out`, and no other tile writes them.
        unsafe {
            gemm::gemm(
                t.rows,
                t.cols,
                k,
                dst.ptr().add(first),
                1,
                n as isize,
                false,
                ad.as_ptr().add(a0),
                va.cs as isize,
                va.rs as isize,
                bd.as_ptr().add(b0),
                vb.cs as isize,
                vb.rs as isize,
                0.0f32,
                1.0f32,
                false,
                false,
                false,
                inner_par,
            );
        }
        if let Some((c, ops)) = &epi {
            for i in 0..t.rows {
                let start = first + i * n;
                // SAFETY: as above: one row of this tile's own output.
                let seg = unsafe { std::slice::from_raw_parts_mut(dst.ptr().add(start), t.cols) };
                c.run(ops, start, seg, false);
            }
        }
    };
    if k == 0 {
        // An empty sum is 0; the epilogue still applies.
        if let Some((c, ops)) = &epi {
            c.run(ops, 0, &mut out, true);
        }
    } else if threads > 1 && tiles.len() > 1 {
        tiles.par_iter().for_each(run);
    } else {
        tiles.iter().for_each(run);
    }
    Ok(Value::new(out_shape, out))
}

/// Products with fewer multiply-adds than this run on one thread.
const PAR_GEMM_FLOPS: usize = 1 << 18;

/// Rows `row0 .. row0 + rows` and columns `col0 .. col0 + cols` of one
/// batch's product.
struct Tile {
    batch: usize,
    row0: usize,
    rows: usize,
    col0: usize,
    cols: usize,
}

/// A raw pointer that tasks share to write disjoint tiles of one buffer.
#[derive(Clone, Copy)]
struct SharedOut(*mut f32);
// SAFETY: every task writes a distinct tile.
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}

impl SharedOut {
    // A method, so that closures capture the wrapper rather than the pointer.
    fn ptr(self) -> *mut f32 {
        self.0
    }
}

/// Element offset of each batch's matrix (`mat` elements each) in an
/// operand with batch dims `sh`, broadcast to `batch`.
fn batch_offsets(batch: &[usize], sh: &[usize], mat: usize) -> Vec<usize> {
    let nb: usize = batch.iter().product();
    let pad = batch.len() - sh.len();
    let st = strides_of(sh);
    (0..nb)
        .map(|mut i| {
            let mut o = 0;
            for d in (0..batch.len()).rev() {
                let idx = i % batch[d];
                i /= batch[d];
                if d >= pad && sh[d - pad] != 1 {
                    o += idx * st[d - pad];
                }
            }
            o * mat
        })
        .collect()
}

/// FusedMatMul with a packed `[K, N]` B: A's batch dims flatten into rows
/// and the epilogue runs inside the packed product, on each block of output
/// it finishes. A transposed A is copied into rows first (the packed
/// kernels read row-major activations).
fn packed(
    a: &Value,
    ad: &[f32],
    b: &Value,
    extras: &[&Value],
    trans_a: bool,
    trans_b: bool,
    epilogue: &Program,
) -> KResult<Value> {
    if trans_b {
        bail!(
            "a packed {} weight is read as [in, out]; trans_b must be false",
            b.dtype()
        );
    }
    if b.rank() != 2 {
        bail!("a packed weight must be 2-d [in, out], got {:?}", b.shape);
    }
    let (kb, n) = (b.shape[0], b.shape[1]);
    let va = view(&a.shape, true, trans_a);
    let (m, k) = (va.rows, va.cols);
    if k != kb {
        bail!(
            "inner dimensions differ: A {:?} (trans_a={trans_a}) × packed [{kb}, {n}]",
            a.shape
        );
    }
    let mut out_shape = va.batch.clone();
    if a.rank() > 1 {
        out_shape.push(m);
    }
    out_shape.push(n);
    let rows = va.batch.iter().product::<usize>() * m;
    let transposed: Vec<f32>;
    let x: &[f32] = if trans_a {
        transposed = (0..rows)
            .flat_map(|r| {
                let (bi, i) = (r / m, r % m);
                (0..k).map(move |p| (bi, i, p))
            })
            .map(|(bi, i, p)| ad[bi * m * k + p * m + i])
            .collect();
        &transposed
    } else {
        ad
    };
    let epi = epilogue_for(epilogue, extras, &out_shape)?;
    let finish = epi
        .as_ref()
        .map(|(c, ops)| move |start: usize, seg: &mut [f32]| c.run(ops, start, seg, false));
    let out =
        qmatmul::matmul_packed_rows(x, rows, b, finish.as_ref().map(|f| f as qmatmul::Finish))?;
    Ok(Value::new(out_shape, out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_ir::Float;

    /// The scalar functions the fused kernels share with `kiln_ir` are the
    /// primitive kernels' own, bit for bit.
    #[test]
    fn shared_scalar_functions_match_the_primitive_kernels() {
        use super::super::elementwise as ew;
        for i in -4000..=4000 {
            let x = i as f32 / 397.0;
            assert_eq!(erf_f32(x).to_bits(), ew::erf_f32(x).to_bits(), "erf({x})");
            assert_eq!(
                exp_f32(x * 20.0).to_bits(),
                ew::exp_f32(x * 20.0).to_bits(),
                "exp"
            );
        }
    }

    /// Broadcast gathers against the index arithmetic of the reference.
    #[test]
    fn gather_walks_broadcast_strides() {
        let out = [2, 3, 4, 5];
        for shape in [
            vec![4, 5],
            vec![5],
            vec![2, 1, 4, 1],
            vec![3, 1, 5],
            vec![2, 3, 1, 1],
            vec![1],
            vec![2, 3, 4, 5],
        ] {
            let len: usize = shape.iter().product();
            let data: Vec<f32> = (0..len).map(|i| i as f32).collect();
            let op = Operand::new(&data, &shape, &out);
            // The operand alone, broadcast to the output by adding zeros.
            let zeros = vec![0f32; 120];
            let (want, _) = kiln_ir::fused::reference_elementwise(
                &Program::binary(BinaryFn::Add),
                &[(&data, &shape), (&zeros, &out)],
            )
            .unwrap();
            for (start, len) in [(0, 120), (7, 50), (59, 61), (119, 1)] {
                let mut got = vec![f32::NAN; len];
                op.gather(start, &mut got);
                assert_eq!(got, want[start..start + len], "{shape:?} from {start}");
            }
        }
    }

    /// Buffers are reused once their last reader has run, and scalars fold.
    #[test]
    fn compile_reuses_buffers_and_folds_scalars() {
        let data = vec![1f32; 1000];
        let ops = [Operand::new(&data, &[1000], &[1000])];
        // ((x + 1) · 2 - 3) / 4 with the constant part 2 · 0.5 folded.
        let p = Program {
            inputs: 1,
            instrs: vec![
                Instr::Const(Float(1.0)),
                Instr::Binary(BinaryFn::Add, 0, 1),
                Instr::Const(Float(2.0)),
                Instr::Const(Float(0.5)),
                Instr::Binary(BinaryFn::Mul, 3, 4),
                Instr::Binary(BinaryFn::Mul, 2, 5),
                Instr::Unary(UnaryFn::Exp, 6),
                Instr::Unary(UnaryFn::Tanh, 7),
            ],
        };
        let c = Compiled::new(&p, &ops, false);
        assert_eq!(c.steps.len(), 4);
        assert!(c.slots <= 2, "{c:?}");
        assert!(c.loads.is_empty());
        let mut out = vec![0f32; 1000];
        c.run(&ops, 0, &mut out, false);
        let want = p.eval(&[1.0]);
        assert!(out.iter().all(|&v| v == want));
    }
}
