//! Matrix products: `MatMul`, `Gemm` and `FusedMatMul`, with dense f32 or
//! f16 operands or a packed quantized B (docs/quant-formats.md), as one
//! kernel shape: `y = epilogue(op(A) · op(B), E1 .. Ek)`.
//!
//! `MatMul` is the identity epilogue, `Gemm` the program `alpha·acc + beta·C`
//! with C as its one extra operand, and `FusedMatMul` carries its own
//! program. Every kernel holds two paths (`templates/wgsl/matmul.wgsl`): a
//! tiled one staging tiles of A and B through workgroup memory, and a
//! decode-shaped one for a few rows (matrix-vector products), where each
//! workgroup streams a block of B's columns once and splits the inner
//! dimension across its invocations. [`Spec::launch`] picks the path from the
//! run's row count, so a node whose sequence length is symbolic runs the
//! decode path for single tokens and the tiled one for prompts. Packed weights
//! are decoded inside the kernel from their raw bytes
//! (`templates/wgsl/qmatmul.wgsl`): per element into the B tile on the tiled
//! path, a few codes per 32-bit load on the decode path.

mod emit;
#[cfg(test)]
mod tests;

use crate::kernel::{broadcast_strides, word};
use crate::schedule::Family;
use crate::{CodegenError, DeviceCaps, Kernel, Launch, NodeCtx, Schedule};
use kiln_ir::fused::{BinaryFn, Instr, Program};
use kiln_ir::quant::QuantFormat;
use kiln_ir::{DType, Dim, Float, Op, ValueType};
use serde::{Deserialize, Serialize};

/// Row counts up to which a launch runs the decode-shaped path. For so few
/// rows, streaming B's columns once per pass of four rows beats 64-row tiles
/// that are mostly empty, and a matrix-vector product gets many more
/// workgroups (one per 8 or 32 columns instead of one per 64).
pub const DECODE_MAX_ROWS: usize = 8;

/// Words of `params` before the batch axes (see the template's header).
const HEADER_WORDS: usize = 10;

/// Outputs one invocation may accumulate on the tiled path (registers).
const MAX_OUTPUTS_PER_INVOCATION: u32 = 64;

/// The element type of A, a dense B, Gemm's C and the result.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Elem {
    /// `f32`.
    F32,
    /// `f16` storage (needs `shader-f16`); products accumulate in f32.
    F16,
}

impl Elem {
    fn wgsl(self) -> &'static str {
        match self {
            Elem::F32 => "f32",
            Elem::F16 => "f16",
        }
    }

    fn dtype(self) -> DType {
        match self {
            Elem::F32 => DType::F32,
            Elem::F16 => DType::F16,
        }
    }
}

/// How B is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Weight {
    /// A dense matrix (or batch of matrices) of the element type.
    Dense,
    /// A packed quantized `[K, N]` weight, bound as its raw bytes.
    Packed(QuantFormat),
}

/// What a matmul kernel needs from its node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Spec {
    /// Element type of A, a dense B, the extra operands and the result.
    pub elem: Elem,
    /// Dense or packed B.
    pub weight: Weight,
    /// A is read transposed (its last two axes swapped).
    pub trans_a: bool,
    /// B is read transposed (dense B only).
    pub trans_b: bool,
    /// Batch axes of the result (rank without the row and column axes).
    pub batch_rank: u32,
    /// Applied to each product element: input 0 is the product, input `i`
    /// the extra operand `extras[i - 1]`, broadcast to the result.
    pub epilogue: Program,
    /// Node operand positions of the epilogue's extra operands, bound after
    /// A and B in this order.
    pub extras: Vec<usize>,
    /// Bytes of workgroup memory the device allows: [`Spec::emit`] halves
    /// the tile's depth until the A and B tiles fit.
    pub workgroup_limit: u32,
}

/// The shapes of one launch, resolved.
struct Dims {
    m: usize,
    n: usize,
    k: usize,
    batch: Vec<usize>,
    a_batch_strides: Vec<usize>,
    b_batch_strides: Vec<usize>,
    out: Vec<usize>,
}

/// Invocation layout of a kernel, derived from its spec and schedule (the
/// emitter and the launch must agree on it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Geometry {
    /// Workgroup size along x (tile columns).
    pub wgx: u32,
    /// Workgroup size along y (tile rows).
    pub wgy: u32,
    /// Tiled path: output rows per workgroup.
    pub tm: u32,
    /// Tiled path: output columns per workgroup.
    pub tn: u32,
    /// Tiled path: inner-dimension depth staged per step (the schedule's,
    /// halved until both tiles fit the workgroup memory).
    pub tk: u32,
    /// Decode path: output columns per workgroup.
    pub dc: u32,
    /// Decode path: invocations sharing one column.
    pub dt: u32,
    /// Decode path: inner-dimension values one invocation reads per step.
    pub uc: u32,
    /// Decode path: whether neighbouring invocations take neighbouring
    /// columns (a row-major dense B) rather than neighbouring units of one
    /// column (packed or transposed B, whose columns are contiguous).
    pub lanes_on_columns: bool,
}

impl Geometry {
    /// Invocations per workgroup.
    pub fn invocations(&self) -> u32 {
        self.wgx * self.wgy
    }

    /// f32 words of workgroup memory: both tiles, or four rows of partial
    /// sums per invocation.
    pub fn shared_words(&self) -> u32 {
        (self.tm * self.tk + self.tk * self.tn).max(4 * self.invocations())
    }
}

impl Spec {
    /// The kernel for the node, if this family has one: `MatMul`, `Gemm`
    /// and `FusedMatMul` in f32 (f16 for `MatMul` and `Gemm` when the device
    /// has `shader-f16`), with a dense or packed B, when the bindings and
    /// the default tile fit the device.
    pub fn select(cx: &NodeCtx) -> Option<Spec> {
        if cx.outputs.len() != 1 {
            return None;
        }
        let a = (*cx.inputs.first()?)?;
        let b = (*cx.inputs.get(1)?)?;
        let out = cx.outputs[0];
        let (trans_a, trans_b, epilogue, extras) = match cx.op {
            Op::MatMul => {
                if cx.inputs.len() != 2 {
                    return None;
                }
                (false, false, Program::identity(), vec![])
            }
            Op::Gemm {
                alpha,
                beta,
                trans_a,
                trans_b,
            } => {
                if a.shape.rank() != 2 || b.shape.rank() != 2 || cx.inputs.len() > 3 {
                    return None;
                }
                let c = cx.inputs.get(2).copied().flatten();
                let with_c = c.is_some() && beta.0 != 0.0;
                if let Some(c) = c.filter(|_| with_c) {
                    if c.dtype != a.dtype || c.shape.rank() > 2 {
                        return None;
                    }
                }
                let extras = if with_c { vec![2] } else { vec![] };
                (
                    *trans_a,
                    *trans_b,
                    gemm_program(alpha.0, beta.0, with_c),
                    extras,
                )
            }
            Op::FusedMatMul {
                trans_a,
                trans_b,
                epilogue,
            } => {
                epilogue.validate().ok()?;
                let k = epilogue.inputs as usize - 1;
                if cx.inputs.len() != 2 + k {
                    return None;
                }
                for e in &cx.inputs[2..] {
                    let e = (*e)?;
                    if e.dtype != DType::F32 || e.shape.rank() > out.shape.rank() {
                        return None;
                    }
                }
                (*trans_a, *trans_b, epilogue.clone(), (2..2 + k).collect())
            }
            _ => return None,
        };
        let elem = match a.dtype {
            DType::F32 => Elem::F32,
            DType::F16 if cx.caps.shader_f16 && !matches!(cx.op, Op::FusedMatMul { .. }) => {
                Elem::F16
            }
            _ => return None,
        };
        let weight = match b.dtype {
            DType::Quant(f) => {
                // Packed weights are `[in, out]` and multiply f32 activations.
                if elem != Elem::F32 || trans_b || b.shape.rank() != 2 {
                    return None;
                }
                Weight::Packed(f)
            }
            dt if dt == a.dtype => Weight::Dense,
            _ => return None,
        };
        if out.dtype != elem.dtype() {
            return None;
        }
        let (ra, rb) = (a.shape.rank(), b.shape.rank());
        if ra == 0 || rb == 0 || (trans_a && ra < 2) || (trans_b && rb < 2) {
            return None;
        }
        let batch_rank = ra.max(rb).saturating_sub(2);
        if out.shape.rank() != batch_rank + usize::from(ra > 1) + usize::from(rb > 1) {
            return None;
        }
        // Bindings: A, B, the extra operands, the result and params.
        if 2 + extras.len() + 2 > cx.caps.max_storage_buffers_per_stage as usize {
            return None;
        }
        let bound = [0, 1].into_iter().chain(extras.iter().copied());
        for i in bound.clone() {
            if !fits_binding(cx.inputs[i]?, cx.caps) {
                return None;
            }
        }
        if !fits_binding(out, cx.caps) {
            return None;
        }
        let spec = Spec {
            elem,
            weight,
            trans_a,
            trans_b,
            batch_rank: batch_rank as u32,
            epilogue,
            extras,
            workgroup_limit: cx.caps.max_workgroup_storage_bytes,
        };
        let g = spec
            .geometry(&Schedule::default_for(Family::MatMul, cx.caps))
            .ok()?;
        (4 * g.shared_words() <= cx.caps.max_workgroup_storage_bytes).then_some(spec)
    }

    /// The WGSL for `schedule`.
    pub fn emit(&self, schedule: &Schedule) -> Result<Kernel, CodegenError> {
        emit::emit(self, schedule)
    }

    /// Node operands bound as inputs: A, B, then the epilogue's operands.
    pub fn bound_inputs(&self) -> Vec<usize> {
        let mut v = vec![0, 1];
        v.extend(&self.extras);
        v
    }

    /// The kernel's name stem (`matmul`, `matmul_f16`, `qmatmul_w4g64`).
    pub fn stem(&self) -> String {
        match (self.weight, self.elem) {
            (Weight::Packed(f), _) => format!("qmatmul_{f}"),
            (Weight::Dense, Elem::F32) => "matmul".to_string(),
            (Weight::Dense, Elem::F16) => "matmul_f16".to_string(),
        }
    }

    /// The invocation layout for `schedule`: the schedule's workgroup and
    /// tile (depth shrunk to the device's workgroup memory), and the decode
    /// path's split of the same invocations.
    pub(crate) fn geometry(&self, schedule: &Schedule) -> Result<Geometry, CodegenError> {
        let bad = |message: String| CodegenError::Launch {
            kernel: self.stem(),
            message,
        };
        let [wgx, wgy, wgz] = schedule.workgroup;
        let [tm, tn, mut tk] = schedule.tile;
        if wgx == 0 || wgy == 0 || wgz != 1 || tm == 0 || tn == 0 || tk == 0 {
            return Err(bad(format!(
                "schedule {schedule:?}: needs a 2-d workgroup and a non-empty tile"
            )));
        }
        if tm % wgy != 0 || tn % wgx != 0 {
            return Err(bad(format!(
                "schedule {schedule:?}: the tile's rows must be a multiple of the workgroup's y and its columns of its x"
            )));
        }
        if (tm / wgy) * (tn / wgx) > MAX_OUTPUTS_PER_INVOCATION {
            return Err(bad(format!(
                "schedule {schedule:?}: more than {MAX_OUTPUTS_PER_INVOCATION} outputs per invocation"
            )));
        }
        while tk > 1 && 4 * (tm * tk + tk * tn) > self.workgroup_limit {
            tk /= 2;
        }
        let inv = wgx * wgy;
        // The largest power of two (at most 32, a common SIMD width) that
        // divides the invocations: the unit of coalesced reads.
        let lanes = (1u32 << inv.trailing_zeros()).min(32);
        let (uc, lanes_on_columns) = match self.weight {
            Weight::Packed(f) => (if f.bits() == 8 { 4 } else { 8 }, false),
            Weight::Dense if self.trans_b => (4, false),
            Weight::Dense => (1, true),
        };
        let (dc, dt) = if lanes_on_columns {
            (lanes, inv / lanes)
        } else {
            (inv / lanes, lanes)
        };
        Ok(Geometry {
            wgx,
            wgy,
            tm,
            tn,
            tk,
            dc,
            dt,
            uc,
            lanes_on_columns,
        })
    }

    /// Params and grid for concrete shapes: the decode path for at most
    /// [`DECODE_MAX_ROWS`] rows, the tiled one beyond.
    pub fn launch(
        &self,
        inputs: &[Option<&[usize]>],
        outputs: &[&[usize]],
        schedule: &Schedule,
    ) -> Result<Launch, CodegenError> {
        let name = self.stem();
        let err = |message: String| CodegenError::Launch {
            kernel: name.clone(),
            message,
        };
        let g = self.geometry(schedule)?;
        let operand = |i: usize, what: &str| -> Result<&[usize], CodegenError> {
            inputs
                .get(i)
                .copied()
                .flatten()
                .ok_or_else(|| err(format!("operand {i} ({what}) is missing")))
        };
        let (a, b) = (operand(0, "A")?, operand(1, "B")?);
        let d = self.dims(a, b).map_err(&err)?;
        let out = *outputs
            .first()
            .ok_or_else(|| err("the result's shape is missing".into()))?;
        if out != d.out.as_slice() {
            return Err(err(format!(
                "the result has shape {out:?}, the product of {a:?} and {b:?} is {:?}",
                d.out
            )));
        }
        let nb: usize = d.batch.iter().product();
        // A shared B (no batch strides) and a row-major A covering every
        // batch: all batches are one tall product, with taller tiles.
        let fold = nb > 1
            && !self.trans_a
            && d.b_batch_strides.iter().all(|&s| s == 0)
            && a.len() >= 2
            && a[..a.len() - 2].iter().product::<usize>() == nb;
        let (rows, grid_z) = if fold { (nb * d.m, 1) } else { (d.m, nb) };
        let decode = rows <= DECODE_MAX_ROWS;
        let mut p: Vec<u32> = Vec::with_capacity(HEADER_WORDS + 3 * d.batch.len());
        let w = |what: &str, v: usize| word(&name, what, v);
        p.push(w("M", d.m)?);
        p.push(w("N", d.n)?);
        p.push(w("K", d.k)?);
        p.push(w("rows", rows)?);
        p.push(u32::from(decode));
        match self.weight {
            Weight::Dense => p.extend([0; 5]),
            Weight::Packed(f) => {
                let groups = f.groups_per_column(d.k);
                let data = f
                    .column_stride(d.k)
                    .checked_mul(d.n)
                    .ok_or_else(|| err("packed weight too large".into()))?;
                p.push(w("column stride", f.column_stride(d.k))?);
                p.push(w("groups", groups)?);
                p.push(w("group rows", f.group_len(d.k))?);
                p.push(w("scale offset", data)?);
                p.push(w("zero offset", data + 2 * groups * d.n)?);
            }
        }
        for (i, &dim) in d.batch.iter().enumerate() {
            p.push(w("batch dim", dim)?);
            p.push(w("A batch stride", d.a_batch_strides[i])?);
            p.push(w("B batch stride", d.b_batch_strides[i])?);
        }
        let (has_m, has_n) = (a.len() > 1, b.len() > 1);
        let br = d.batch.len();
        for (e, &pos) in self.extras.iter().enumerate() {
            let shape = operand(pos, "epilogue operand")?;
            if shape.len() > out.len()
                || shape
                    .iter()
                    .zip(&out[out.len() - shape.len()..])
                    .any(|(&s, &o)| s != o && s != 1)
            {
                return Err(err(format!(
                    "epilogue operand {} of shape {shape:?} does not broadcast to the result's {out:?}",
                    e + 1
                )));
            }
            let s = broadcast_strides(shape, out);
            for &v in &s[..br] {
                p.push(w("epilogue stride", v)?);
            }
            p.push(w("epilogue row stride", if has_m { s[br] } else { 0 })?);
            let col = if has_n { s[br + usize::from(has_m)] } else { 0 };
            p.push(w("epilogue column stride", col)?);
        }
        let (gx, gy) = if decode {
            (d.n.div_ceil(g.dc as usize), 1)
        } else {
            (d.n.div_ceil(g.tn as usize), rows.div_ceil(g.tm as usize))
        };
        let grid = [gx.max(1), gy.max(1), grid_z.max(1)];
        if let Some(x) = grid.iter().find(|&&x| x > 65_535) {
            return Err(err(format!(
                "a grid of {grid:?} workgroups exceeds 65535 ({x}) along one axis"
            )));
        }
        Ok(Launch {
            params: p,
            workgroups: grid.map(|x| x as u32),
        })
    }

    /// Resolves M, N, K, the batch axes and the result's shape from the
    /// operands' shapes, with numpy's promotion of 1-d operands.
    fn dims(&self, a: &[usize], b: &[usize]) -> Result<Dims, String> {
        if a.is_empty() || b.is_empty() {
            return Err(format!("operands must have rank ≥ 1, got {a:?} and {b:?}"));
        }
        let split = |s: &[usize], left: bool, t: bool| -> (Vec<usize>, usize, usize) {
            match s.len() {
                1 if left => (vec![], 1, s[0]),
                1 => (vec![], s[0], 1),
                r => {
                    let (x, y) = (s[r - 2], s[r - 1]);
                    let (rows, cols) = if t { (y, x) } else { (x, y) };
                    (s[..r - 2].to_vec(), rows, cols)
                }
            }
        };
        let (ab, m, ka) = split(a, true, self.trans_a);
        let (bb, kb, n) = split(b, false, self.trans_b);
        if ka != kb {
            return Err(format!(
                "inner dimensions differ: A {a:?} (trans_a={}) × B {b:?} (trans_b={})",
                self.trans_a, self.trans_b
            ));
        }
        let r = ab.len().max(bb.len());
        let pad = |s: &[usize]| -> Vec<usize> {
            let mut v = vec![1; r - s.len()];
            v.extend_from_slice(s);
            v
        };
        let (pa, pb) = (pad(&ab), pad(&bb));
        let mut batch = Vec::with_capacity(r);
        for (&x, &y) in pa.iter().zip(&pb) {
            batch.push(match (x, y) {
                (x, y) if x == y => x,
                (1, y) => y,
                (x, 1) => x,
                _ => return Err(format!("batch axes of {a:?} and {b:?} do not broadcast")),
            });
        }
        if batch.len() != self.batch_rank as usize {
            return Err(format!(
                "the kernel was made for {} batch axes, the operands {a:?} and {b:?} have {}",
                self.batch_rank,
                batch.len()
            ));
        }
        let scaled = |s: &[usize], mat: usize| -> Vec<usize> {
            broadcast_strides(s, &batch)
                .into_iter()
                .map(|x| x * mat)
                .collect()
        };
        let a_batch_strides = scaled(&ab, m * ka);
        let b_batch_strides = scaled(&bb, kb * n);
        if matches!(self.weight, Weight::Packed(_)) && !bb.is_empty() {
            return Err(format!("a packed weight is 2-d [in, out], got {b:?}"));
        }
        let mut out = batch.clone();
        if a.len() > 1 {
            out.push(m);
        }
        if b.len() > 1 {
            out.push(n);
        }
        Ok(Dims {
            m,
            n,
            k: ka,
            batch,
            a_batch_strides,
            b_batch_strides,
            out,
        })
    }
}

/// `alpha·acc + beta·C` (C only when `with_c`), skipping multiplications by 1.
fn gemm_program(alpha: f32, beta: f32, with_c: bool) -> Program {
    let inputs = 1 + u8::from(with_c);
    let mut instrs = Vec::new();
    let mut next = inputs;
    let mut scaled = |reg: u8, by: f32, instrs: &mut Vec<Instr>| -> u8 {
        if by == 1.0 {
            return reg;
        }
        instrs.push(Instr::Const(Float(by)));
        instrs.push(Instr::Binary(BinaryFn::Mul, reg, next));
        next += 2;
        next - 1
    };
    let acc = scaled(0, alpha, &mut instrs);
    if with_c {
        let c = scaled(1, beta, &mut instrs);
        instrs.push(Instr::Binary(BinaryFn::Add, acc, c));
    }
    Program { inputs, instrs }
}

/// Whether a tensor of this type fits one storage binding (and 32-bit
/// indices); unknown sizes are checked at launch.
fn fits_binding(t: &ValueType, caps: &DeviceCaps) -> bool {
    let dims: Option<Vec<usize>> = t
        .shape
        .0
        .iter()
        .map(|d| match d {
            Dim::Fixed(n) => usize::try_from(*n).ok(),
            _ => None,
        })
        .collect();
    let Some(dims) = dims else {
        return true;
    };
    match t.dtype.byte_len(&dims) {
        Some(bytes) => bytes as u64 <= caps.max_storage_binding_bytes && bytes <= u32::MAX as usize,
        None => false,
    }
}
