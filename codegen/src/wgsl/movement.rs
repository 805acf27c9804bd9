//! Data movement kernels: Transpose, Slice, Expand, Tile and Pad (one
//! per-axis index map, `templates/wgsl/movement_view.wgsl`), Concat and
//! Split (`movement_concat.wgsl`, `movement_split.wgsl`), and
//! RotaryEmbedding (`rotary.wgsl`).
//!
//! Pure movement never looks at the values, so elements travel as their
//! bits in 32-bit words ([`Width`]): one kernel serves every dtype of a
//! width, f16 and bool included, without the `shader-f16` feature, and NaN
//! payloads survive. Sub-word elements (1 and 2 bytes) are packed: each
//! invocation writes one whole output word, so no two invocations write the
//! same word. Operands that shape the result (Slice's starts, Pad's pads,
//! Expand's shape, Tile's repeats, Split's sizes) must be constants; the
//! kernels themselves take every size from `params`.

use crate::kernel::{linear_grid, strides, word};
use crate::schedule::Schedule;
use crate::template::render;
use crate::{CodegenError, Kernel, Launch, NodeCtx};
use kiln_ir::{DType, Dim, Op, PadMode, Tensor, ValueType};
use serde::{Deserialize, Serialize};

const VIEW: &str = include_str!("../../templates/wgsl/movement_view.wgsl");
const CONCAT: &str = include_str!("../../templates/wgsl/movement_concat.wgsl");
const SPLIT: &str = include_str!("../../templates/wgsl/movement_split.wgsl");
const ROTARY: &str = include_str!("../../templates/wgsl/rotary.wgsl");

/// How elements of one dtype travel through 32-bit words.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Width {
    /// One-byte elements (i8, u8, bool), four to a word.
    B1,
    /// Two-byte elements (f16, bf16, i16, u16), two to a word.
    B2,
    /// Four-byte elements (f32, i32, u32), one word each.
    B4,
    /// Eight-byte elements (i64, u64, f64), two words each.
    B8,
}

impl Width {
    /// The width of `dtype`'s elements; `None` for packed quantized weights.
    pub fn of(dtype: DType) -> Option<Width> {
        match dtype.size_of() {
            1 => Some(Width::B1),
            2 => Some(Width::B2),
            4 => Some(Width::B4),
            8 => Some(Width::B8),
            _ => None,
        }
    }

    /// Elements packed into one word (1 for four- and eight-byte elements).
    fn per_word(self) -> u32 {
        match self {
            Width::B1 => 4,
            Width::B2 => 2,
            Width::B4 | Width::B8 => 1,
        }
    }

    /// The units (words, or element pairs of words) that cover `n` elements:
    /// one invocation each.
    pub fn units(self, n: usize) -> usize {
        n.div_ceil(self.per_word() as usize)
    }

    /// The WGSL type one element is held in.
    pub fn elem_type(self) -> &'static str {
        match self {
            Width::B8 => "vec2<u32>",
            _ => "u32",
        }
    }

    /// The WGSL value of an element whose bits are all zero.
    pub fn zero(self) -> &'static str {
        match self {
            Width::B8 => "vec2<u32>(0u, 0u)",
            _ => "0u",
        }
    }

    /// The WGSL value of an element with little-endian bits `bits` (low word
    /// first; sub-word elements are masked).
    pub fn literal(self, bits: [u32; 2]) -> String {
        match self {
            Width::B1 => format!("{}u", bits[0] & 0xff),
            Width::B2 => format!("{}u", bits[0] & 0xffff),
            Width::B4 => format!("{}u", bits[0]),
            Width::B8 => format!("vec2<u32>({}u, {}u)", bits[0], bits[1]),
        }
    }

    /// `fn {name}(i: u32) -> elem` reading element `i` of the `array<u32>`
    /// binding `buf`.
    pub fn load_fn(self, name: &str, buf: &str) -> String {
        let body = match self {
            Width::B1 => format!("return ({buf}[i / 4u] >> ((i % 4u) * 8u)) & 0xffu;"),
            Width::B2 => format!("return ({buf}[i / 2u] >> ((i % 2u) * 16u)) & 0xffffu;"),
            Width::B4 => format!("return {buf}[i];"),
            Width::B8 => format!("return vec2<u32>({buf}[2u * i], {buf}[2u * i + 1u]);"),
        };
        format!(
            "fn {name}(i: u32) -> {} {{\n    {body}\n}}",
            self.elem_type()
        )
    }

    /// Statements writing unit `u` of the `array<u32>` binding `out`, whose
    /// tensor holds `n` elements (WGSL names `u` and `n` must be in scope);
    /// `value(e)` is the WGSL expression of output element `e`. Each unit is
    /// a whole word (or pair), so invocations never share a word.
    pub fn store(self, out: &str, value: &dyn Fn(&str) -> String, indent: &str) -> String {
        match self {
            Width::B4 => format!("{indent}{out}[u] = {};", value("u")),
            Width::B8 => format!(
                "{indent}let v = {};\n{indent}{out}[2u * u] = v.x;\n{indent}{out}[2u * u + 1u] = v.y;",
                value("u")
            ),
            Width::B1 | Width::B2 => {
                let (per, bits) = if self == Width::B1 { (4, 8) } else { (2, 16) };
                format!(
                    "{indent}var w = 0u;\n\
                     {indent}for (var j = 0u; j < {per}u; j++) {{\n\
                     {indent}    let e = u * {per}u + j;\n\
                     {indent}    if (e < n) {{\n\
                     {indent}        w = w | ({} << (j * {bits}u));\n\
                     {indent}    }}\n\
                     {indent}}}\n\
                     {indent}{out}[u] = w;",
                    value("e")
                )
            }
        }
    }
}

/// `x, y, z` of a workgroup size and the invocations of one workgroup.
pub(crate) fn workgroup(schedule: &Schedule) -> (String, u32) {
    let [x, y, z] = schedule.workgroup;
    (format!("{x}, {y}, {z}"), schedule.invocations().max(1))
}

/// The grid covering `units` invocations with `schedule`'s workgroups.
pub(crate) fn grid(units: usize, schedule: &Schedule) -> [u32; 3] {
    let per = schedule.invocations().max(1) as usize;
    linear_grid(units.div_ceil(per) as u64)
}

/// A signed value as a `params` word (its two's-complement bits).
pub(crate) fn signed_word(kernel: &str, what: &str, v: i64) -> Result<u32, CodegenError> {
    i32::try_from(v)
        .map(|v| v as u32)
        .map_err(|_| launch_err(kernel, format!("{what} = {v} does not fit in 32 bits")))
}

/// A launch error naming `kernel`.
pub(crate) fn launch_err(kernel: &str, message: String) -> CodegenError {
    CodegenError::Launch {
        kernel: kernel.to_string(),
        message,
    }
}

/// The concrete shape of operand `i`, or an error naming what is missing.
pub(crate) fn operand<'a>(
    kernel: &str,
    inputs: &[Option<&'a [usize]>],
    i: usize,
) -> Result<&'a [usize], CodegenError> {
    inputs
        .get(i)
        .copied()
        .flatten()
        .ok_or_else(|| launch_err(kernel, format!("operand {i} has no shape")))
}

/// The concrete shape of result `i`.
pub(crate) fn result<'a>(
    kernel: &str,
    outputs: &[&'a [usize]],
    i: usize,
) -> Result<&'a [usize], CodegenError> {
    outputs
        .get(i)
        .copied()
        .ok_or_else(|| launch_err(kernel, format!("result {i} has no shape")))
}

/// Normalises an axis against `rank` (negative counts from the end).
pub(crate) fn norm_axis(axis: i64, rank: usize) -> Option<usize> {
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    (0..r).contains(&a).then_some(a as usize)
}

/// Whether a result type's dims are all known at run time (fixed or bound
/// symbols), so the runtime can size its buffer without running the node.
fn resolvable(ty: &ValueType) -> bool {
    ty.shape.0.iter().all(|d| !matches!(d, Dim::Unknown))
}

/// How an axis of a view maps an output coordinate to an input one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AxisMap {
    /// `input = base + c * stride` (Transpose, Slice, Expand).
    Strided,
    /// `input = (c mod in_dim) * stride` (Tile).
    Wrap,
    /// Pad with the given mode.
    Pad(PadMode),
}

/// Rotary embedding: what the kernel bakes in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rotary {
    /// Pairs are adjacent elements instead of the two halves.
    pub interleaved: bool,
    /// X is `[batch, heads, seq, head]` (else `[batch, seq, heads·head]`).
    pub four_d: bool,
    /// Heads of a 3-d X.
    pub num_heads: usize,
    /// Rotated leading elements of each head; 0 means all.
    pub rotary_dim: usize,
    /// Position ids are bound, with this dtype (`I64` or `I32`).
    pub position_ids: Option<DType>,
}

/// A data movement kernel.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Spec {
    /// Transpose by a normalised permutation.
    Transpose {
        /// Element width.
        width: Width,
        /// Output axis `i` is input axis `perm[i]`.
        perm: Vec<usize>,
    },
    /// Slice with constant starts, ends, axes and steps (ONNX clamping; negative steps walk backwards).
    Slice {
        /// Element width.
        width: Width,
        /// Rank of the data.
        rank: usize,
        /// Start per sliced axis.
        starts: Vec<i64>,
        /// End per sliced axis.
        ends: Vec<i64>,
        /// Sliced axes, normalised.
        axes: Vec<usize>,
        /// Step per sliced axis (never 0).
        steps: Vec<i64>,
    },
    /// Expand (numpy broadcast) to the result's shape.
    Expand {
        /// Element width.
        width: Width,
        /// Rank of the result.
        rank: usize,
    },
    /// Tile by constant repeats.
    Tile {
        /// Element width.
        width: Width,
        /// Repeats per axis.
        reps: Vec<usize>,
    },
    /// Pad with constant pads.
    Pad {
        /// Element width.
        width: Width,
        /// Pad before each axis (negative crops).
        before: Vec<i64>,
        /// Pad after each axis.
        after: Vec<i64>,
        /// Padding mode.
        mode: PadMode,
        /// Bits of the fill value (Constant mode), low word first.
        fill: [u32; 2],
    },
    /// Concat of the present operands along an axis.
    Concat {
        /// Element width.
        width: Width,
        /// Positions of the present operands, in order.
        operands: Vec<usize>,
        /// Normalised axis.
        axis: usize,
    },
    /// Split along an axis; the sizes come from the results' shapes.
    Split {
        /// Element width.
        width: Width,
        /// Number of results.
        outputs: usize,
        /// Normalised axis.
        axis: usize,
    },
    /// RotaryEmbedding on f32.
    Rotary(Rotary),
}

/// A constant operand as i64s, if present and constant.
fn const_ints(cx: &NodeCtx, i: usize) -> Option<Vec<i64>> {
    cx.consts.get(i).copied().flatten().map(Tensor::to_i64_vec)
}

/// Whether operand `i` is absent.
fn absent(cx: &NodeCtx, i: usize) -> bool {
    cx.inputs.get(i).is_none_or(|t| t.is_none())
}

impl Spec {
    /// The kernel for the node, if this family has one: pure movement of any
    /// plain dtype whose shaping operands are constants, and RotaryEmbedding
    /// on f32.
    pub fn select(cx: &NodeCtx) -> Option<Spec> {
        if let Op::RotaryEmbedding {
            interleaved,
            num_heads,
            rotary_embedding_dim,
        } = cx.op
        {
            return select_rotary(cx, *interleaved, *num_heads, *rotary_embedding_dim);
        }
        let x = (*cx.inputs.first()?)?;
        let width = Width::of(x.dtype)?;
        let out = cx.outputs.first()?;
        if out.dtype != x.dtype || !cx.outputs.iter().all(|o| o.dtype == x.dtype) {
            return None;
        }
        let rank = x.shape.rank();
        let buffers = cx.caps.max_storage_buffers_per_stage as usize;
        let spec = match cx.op {
            Op::Transpose { perm } => {
                let perm: Vec<usize> = match perm {
                    None => (0..rank).rev().collect(),
                    Some(p) => p
                        .iter()
                        .map(|&a| norm_axis(a, rank))
                        .collect::<Option<_>>()?,
                };
                let mut seen = vec![false; rank];
                if perm.len() != rank || perm.iter().any(|&p| std::mem::replace(&mut seen[p], true))
                {
                    return None;
                }
                Spec::Transpose { width, perm }
            }
            Op::Slice => {
                let starts = const_ints(cx, 1)?;
                let ends = const_ints(cx, 2)?;
                let axes: Vec<usize> = match (absent(cx, 3), const_ints(cx, 3)) {
                    (true, _) => (0..starts.len()).collect(),
                    (false, Some(a)) => a
                        .iter()
                        .map(|&a| norm_axis(a, rank))
                        .collect::<Option<_>>()?,
                    (false, None) => return None,
                };
                let steps = match (absent(cx, 4), const_ints(cx, 4)) {
                    (true, _) => vec![1; starts.len()],
                    (false, Some(s)) => s,
                    (false, None) => return None,
                };
                let n = starts.len();
                let unique = axes.iter().enumerate().all(|(i, a)| !axes[..i].contains(a));
                if ends.len() != n
                    || axes.len() != n
                    || steps.len() != n
                    || steps.contains(&0)
                    || !unique
                    || axes.iter().any(|&a| a >= rank)
                {
                    return None;
                }
                Spec::Slice {
                    width,
                    rank,
                    starts,
                    ends,
                    axes,
                    steps,
                }
            }
            Op::Expand => {
                // The result's shape is the broadcast of X and the target; with
                // a constant target (or a result the runtime can size from its
                // symbols) the kernel needs nothing else from operand 1.
                if const_ints(cx, 1).is_none() && !resolvable(out) {
                    return None;
                }
                if out.shape.rank() < rank {
                    return None;
                }
                Spec::Expand {
                    width,
                    rank: out.shape.rank(),
                }
            }
            Op::Tile => {
                let reps = const_ints(cx, 1)?;
                if reps.len() != rank || reps.iter().any(|&r| r < 0) {
                    return None;
                }
                Spec::Tile {
                    width,
                    reps: reps.into_iter().map(|r| r as usize).collect(),
                }
            }
            Op::Pad { mode } => select_pad(cx, width, rank, *mode, x.dtype)?,
            Op::Concat { axis } => {
                let operands: Vec<usize> =
                    (0..cx.inputs.len()).filter(|&i| !absent(cx, i)).collect();
                let same = operands.iter().all(|&i| {
                    cx.inputs[i].is_some_and(|t| t.dtype == x.dtype && t.shape.rank() == rank)
                });
                if operands.is_empty() || !same || operands.len() + 2 > buffers {
                    return None;
                }
                Spec::Concat {
                    width,
                    operands,
                    axis: norm_axis(*axis, rank)?,
                }
            }
            Op::Split { axis, .. } => {
                // Sizes from operand 1 must be constant so that the runtime
                // knows the results' shapes; the kernel reads them from there.
                if !absent(cx, 1) && const_ints(cx, 1).is_none() {
                    return None;
                }
                let outputs = cx.outputs.len();
                if outputs == 0 || outputs + 2 > buffers {
                    return None;
                }
                Spec::Split {
                    width,
                    outputs,
                    axis: norm_axis(*axis, rank)?,
                }
            }
            _ => return None,
        };
        Some(spec)
    }

    /// The kernel's name stem.
    fn stem(&self) -> &'static str {
        match self {
            Spec::Transpose { .. } => "transpose",
            Spec::Slice { .. } => "slice",
            Spec::Expand { .. } => "expand",
            Spec::Tile { .. } => "tile",
            Spec::Pad { .. } => "pad",
            Spec::Concat { .. } => "concat",
            Spec::Split { .. } => "split",
            Spec::Rotary(_) => "rotary",
        }
    }

    /// The WGSL for `schedule`.
    pub fn emit(&self, schedule: &Schedule) -> Result<Kernel, CodegenError> {
        let stem = self.stem();
        let (wg, invocations) = workgroup(schedule);
        match self {
            Spec::Transpose { width, perm } => emit_view(
                stem,
                *width,
                perm.len(),
                AxisMap::Strided,
                [0, 0],
                &wg,
                invocations,
            ),
            Spec::Slice { width, rank, .. } => emit_view(
                stem,
                *width,
                *rank,
                AxisMap::Strided,
                [0, 0],
                &wg,
                invocations,
            ),
            Spec::Expand { width, rank } => emit_view(
                stem,
                *width,
                *rank,
                AxisMap::Strided,
                [0, 0],
                &wg,
                invocations,
            ),
            Spec::Tile { width, reps } => emit_view(
                stem,
                *width,
                reps.len(),
                AxisMap::Wrap,
                [0, 0],
                &wg,
                invocations,
            ),
            Spec::Pad {
                width,
                before,
                mode,
                fill,
                ..
            } => emit_view(
                stem,
                *width,
                before.len(),
                AxisMap::Pad(*mode),
                *fill,
                &wg,
                invocations,
            ),
            Spec::Concat {
                width, operands, ..
            } => emit_concat(*width, operands.len(), &wg, invocations),
            Spec::Split { width, outputs, .. } => emit_split(*width, *outputs, &wg, invocations),
            Spec::Rotary(r) => emit_rotary(r, &wg, invocations),
        }
    }

    /// Node operands bound as inputs: the data (every present operand for
    /// Concat; X, the caches and the position ids for RotaryEmbedding).
    pub fn bound_inputs(&self) -> Vec<usize> {
        match self {
            Spec::Concat { operands, .. } => operands.clone(),
            Spec::Rotary(r) => {
                if r.position_ids.is_some() {
                    vec![0, 1, 2, 3]
                } else {
                    vec![0, 1, 2]
                }
            }
            _ => vec![0],
        }
    }

    /// Params and grid for concrete shapes.
    pub fn launch(
        &self,
        inputs: &[Option<&[usize]>],
        outputs: &[&[usize]],
        schedule: &Schedule,
    ) -> Result<Launch, CodegenError> {
        let k = self.stem();
        let x = operand(k, inputs, 0)?;
        match self {
            Spec::Transpose { width, perm } => {
                check_rank(k, x, perm.len())?;
                let st = strides(x);
                let axes: Vec<ViewAxis> = perm
                    .iter()
                    .map(|&p| ViewAxis {
                        out: x[p],
                        input: x[p],
                        stride: st[p] as i64,
                        before: 0,
                    })
                    .collect();
                launch_view(k, *width, 0, &axes, outputs, schedule)
            }
            Spec::Slice {
                width,
                rank,
                starts,
                ends,
                axes,
                steps,
            } => {
                check_rank(k, x, *rank)?;
                let st = strides(x);
                let mut view: Vec<ViewAxis> = (0..*rank)
                    .map(|a| ViewAxis {
                        out: x[a],
                        input: x[a],
                        stride: st[a] as i64,
                        before: 0,
                    })
                    .collect();
                let mut base = 0i64;
                for (i, &ax) in axes.iter().enumerate() {
                    let (count, start) = slice_axis(x[ax] as i64, starts[i], ends[i], steps[i]);
                    view[ax].out = count as usize;
                    if count > 0 {
                        base += start * st[ax] as i64;
                    }
                    view[ax].stride = st[ax] as i64 * steps[i];
                }
                launch_view(k, *width, base, &view, outputs, schedule)
            }
            Spec::Expand { width, rank } => {
                let y = result(k, outputs, 0)?;
                check_rank(k, y, *rank)?;
                if x.len() > *rank {
                    return Err(launch_err(
                        k,
                        format!("X {x:?} has more axes than the result {y:?}"),
                    ));
                }
                let lead = rank - x.len();
                let st = strides(x);
                let mut view = Vec::with_capacity(*rank);
                for a in 0..*rank {
                    let (d, s) = if a < lead {
                        (1, 0)
                    } else {
                        (x[a - lead], st[a - lead])
                    };
                    if d != y[a] && d != 1 {
                        return Err(launch_err(
                            k,
                            format!("X {x:?} does not broadcast to {y:?}"),
                        ));
                    }
                    view.push(ViewAxis {
                        out: y[a],
                        input: d,
                        stride: if d == 1 { 0 } else { s as i64 },
                        before: 0,
                    });
                }
                launch_view(k, *width, 0, &view, outputs, schedule)
            }
            Spec::Tile { width, reps } => {
                check_rank(k, x, reps.len())?;
                let st = strides(x);
                let view: Vec<ViewAxis> = (0..reps.len())
                    .map(|a| ViewAxis {
                        out: x[a] * reps[a],
                        input: x[a],
                        stride: st[a] as i64,
                        before: 0,
                    })
                    .collect();
                launch_view(k, *width, 0, &view, outputs, schedule)
            }
            Spec::Pad {
                width,
                before,
                after,
                mode,
                ..
            } => {
                check_rank(k, x, before.len())?;
                let st = strides(x);
                let mut view = Vec::with_capacity(x.len());
                for a in 0..x.len() {
                    let len = x[a] as i64 + before[a] + after[a];
                    if len < 0 {
                        return Err(launch_err(
                            k,
                            format!("pads remove more than axis {a} of {x:?} holds"),
                        ));
                    }
                    if x[a] == 0 && len > 0 && *mode != PadMode::Constant {
                        return Err(launch_err(
                            k,
                            format!("cannot {mode:?}-pad the empty axis {a} of {x:?}"),
                        ));
                    }
                    view.push(ViewAxis {
                        out: len as usize,
                        input: x[a],
                        stride: st[a] as i64,
                        before: before[a],
                    });
                }
                launch_view(k, *width, 0, &view, outputs, schedule)
            }
            Spec::Concat {
                width,
                operands,
                axis,
            } => launch_concat(k, *width, operands, *axis, inputs, outputs, schedule),
            Spec::Split {
                width,
                outputs: n,
                axis,
            } => launch_split(k, *width, *n, *axis, x, outputs, schedule),
            Spec::Rotary(r) => launch_rotary(k, r, inputs, outputs, schedule),
        }
    }
}

/// Pad with constant pads, axes and fill value.
fn select_pad(
    cx: &NodeCtx,
    width: Width,
    rank: usize,
    mode: PadMode,
    dtype: DType,
) -> Option<Spec> {
    let pads = const_ints(cx, 1)?;
    let axes: Vec<usize> = match (absent(cx, 3), const_ints(cx, 3)) {
        (true, _) => (0..rank).collect(),
        (false, Some(a)) => a
            .iter()
            .map(|&a| norm_axis(a, rank))
            .collect::<Option<_>>()?,
        (false, None) => return None,
    };
    if pads.len() != 2 * axes.len() {
        return None;
    }
    let mut before = vec![0i64; rank];
    let mut after = vec![0i64; rank];
    for (i, &a) in axes.iter().enumerate() {
        before[a] = pads[i];
        after[a] = pads[i + axes.len()];
    }
    let mut fill = [0u32; 2];
    if !absent(cx, 2) {
        // The fill's bits are baked in as they are: only a constant of the
        // data's own dtype, which is what ONNX requires.
        let v = cx.consts.get(2).copied().flatten()?;
        if v.dtype() != dtype || v.is_empty() {
            return None;
        }
        let size = dtype.size_of();
        let mut bytes = [0u8; 8];
        bytes[..size].copy_from_slice(v.bytes().get(..size)?);
        fill = [
            u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]),
            u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]),
        ];
    }
    Some(Spec::Pad {
        width,
        before,
        after,
        mode,
        fill,
    })
}

/// RotaryEmbedding on f32 X and caches, with optional i64 or i32 position ids.
fn select_rotary(cx: &NodeCtx, interleaved: bool, num_heads: i64, rotary_dim: i64) -> Option<Spec> {
    let x = (*cx.inputs.first()?)?;
    let cos = (*cx.inputs.get(1)?)?;
    let sin = (*cx.inputs.get(2)?)?;
    let y = cx.outputs.first()?;
    if [x.dtype, cos.dtype, sin.dtype, y.dtype]
        .iter()
        .any(|&d| d != DType::F32)
    {
        return None;
    }
    let four_d = match x.shape.rank() {
        4 => true,
        3 if num_heads > 0 => false,
        _ => return None,
    };
    if rotary_dim < 0 || rotary_dim % 2 != 0 {
        return None;
    }
    let position_ids = match cx.inputs.get(3).copied().flatten() {
        None => None,
        Some(t) if matches!(t.dtype, DType::I64 | DType::I32) => Some(t.dtype),
        Some(_) => return None,
    };
    let buffers = 3 + usize::from(position_ids.is_some()) + 2;
    if buffers > cx.caps.max_storage_buffers_per_stage as usize {
        return None;
    }
    Some(Spec::Rotary(Rotary {
        interleaved,
        four_d,
        num_heads: num_heads.max(0) as usize,
        rotary_dim: rotary_dim as usize,
        position_ids,
    }))
}

/// The element count and first index of one sliced axis of length `d`,
/// with ONNX's clamping (as the CPU executor computes them).
fn slice_axis(d: i64, start: i64, end: i64, step: i64) -> (i64, i64) {
    let (mut s, mut e) = (start, end);
    if s < 0 {
        s = s.saturating_add(d);
    }
    if e < 0 {
        e = e.saturating_add(d);
    }
    let count = if step > 0 {
        s = s.clamp(0, d);
        e = e.clamp(0, d);
        if e > s {
            (e - s + step - 1) / step
        } else {
            0
        }
    } else {
        s = s.clamp(0, (d - 1).max(0));
        e = e.clamp(-1, d - 1);
        if s > e && d > 0 {
            (s - e + (-step) - 1) / (-step)
        } else {
            0
        }
    };
    (count, s)
}

fn check_rank(k: &str, shape: &[usize], rank: usize) -> Result<(), CodegenError> {
    if shape.len() == rank {
        Ok(())
    } else {
        Err(launch_err(
            k,
            format!("shape {shape:?} should have rank {rank}"),
        ))
    }
}

/// One output axis of a view.
struct ViewAxis {
    out: usize,
    input: usize,
    stride: i64,
    before: i64,
}

/// Per-axis WGSL of a view kernel (inside `source_of`'s loop: `c`, `in_dim`,
/// `stride`, `before` and `src` in scope).
fn axis_code(map: AxisMap) -> &'static str {
    match map {
        AxisMap::Strided => "        src += i32(c) * stride;",
        AxisMap::Wrap => "        src += i32(c % u32(in_dim)) * stride;",
        AxisMap::Pad(PadMode::Constant) => {
            "        let q = i32(c) - before;\n\
             \x20       if (q < 0 || q >= in_dim) {\n\
             \x20           return -1;\n\
             \x20       }\n\
             \x20       src += q * stride;"
        }
        AxisMap::Pad(PadMode::Edge) => {
            "        src += clamp(i32(c) - before, 0, in_dim - 1) * stride;"
        }
        AxisMap::Pad(PadMode::Wrap) => {
            "        var q = (i32(c) - before) % in_dim;\n\
             \x20       if (q < 0) {\n\
             \x20           q += in_dim;\n\
             \x20       }\n\
             \x20       src += q * stride;"
        }
        AxisMap::Pad(PadMode::Reflect) => {
            "        var q = 0;\n\
             \x20       if (in_dim > 1) {\n\
             \x20           let period = 2 * (in_dim - 1);\n\
             \x20           q = (i32(c) - before) % period;\n\
             \x20           if (q < 0) {\n\
             \x20               q += period;\n\
             \x20           }\n\
             \x20           if (q >= in_dim) {\n\
             \x20               q = period - q;\n\
             \x20           }\n\
             \x20       }\n\
             \x20       src += q * stride;"
        }
    }
}

fn emit_view(
    stem: &str,
    width: Width,
    rank: usize,
    map: AxisMap,
    fill: [u32; 2],
    wg: &str,
    invocations: u32,
) -> Result<Kernel, CodegenError> {
    let src = render(
        "movement_view",
        VIEW,
        &[
            ("RANK", rank.to_string()),
            ("LOAD", width.load_fn("load_x", "x")),
            ("AXIS", axis_code(map).to_string()),
            ("ELEM", width.elem_type().to_string()),
            ("FILL", width.literal(fill)),
            ("WORKGROUP", wg.to_string()),
            ("INVOCATIONS", invocations.to_string()),
            (
                "STORE",
                width.store("y", &|e| format!("value_at({e})"), "    "),
            ),
        ],
    )?;
    Ok(Kernel::new(stem, src, 1, 1, 0))
}

fn launch_view(
    k: &str,
    width: Width,
    base: i64,
    axes: &[ViewAxis],
    outputs: &[&[usize]],
    schedule: &Schedule,
) -> Result<Launch, CodegenError> {
    let y = result(k, outputs, 0)?;
    let dims: Vec<usize> = axes.iter().map(|a| a.out).collect();
    if y != dims.as_slice() {
        return Err(launch_err(
            k,
            format!("the result should be {dims:?}, got {y:?}"),
        ));
    }
    let n: usize = dims.iter().product();
    let units = width.units(n);
    let mut params = vec![
        word(k, "elements", n)?,
        word(k, "units", units)?,
        signed_word(k, "offset", base)?,
    ];
    for a in axes {
        params.push(word(k, "dim", a.out)?);
        params.push(word(k, "input dim", a.input)?);
        params.push(signed_word(k, "stride", a.stride)?);
        params.push(signed_word(k, "pad", a.before)?);
    }
    Ok(Launch {
        params,
        workgroups: grid(units, schedule),
    })
}

fn emit_concat(
    width: Width,
    inputs: usize,
    wg: &str,
    invocations: u32,
) -> Result<Kernel, CodegenError> {
    let mut bindings = String::new();
    let mut loads = Vec::new();
    for i in 0..inputs {
        bindings.push_str(&format!(
            "@group(0) @binding({i}) var<storage, read> x{i}: array<u32>;\n"
        ));
        loads.push(width.load_fn(&format!("load_x{i}"), &format!("x{i}")));
    }
    bindings.push_str(&format!(
        "@group(0) @binding({inputs}) var<storage, read_write> y: array<u32>;\n\
         @group(0) @binding({}) var<storage, read> params: array<u32>;",
        inputs + 1
    ));
    let mut pick = String::new();
    for i in 0..inputs {
        let read = format!(
            "load_x{i}(row * params[{}] + col - params[{}])",
            4 + 2 * i,
            3 + 2 * i
        );
        if i + 1 < inputs {
            pick.push_str(&format!(
                "    if (col < params[{}]) {{\n        return {read};\n    }}\n",
                3 + 2 * (i + 1)
            ));
        } else {
            pick.push_str(&format!("    return {read};"));
        }
    }
    let src = render(
        "movement_concat",
        CONCAT,
        &[
            ("BINDINGS", bindings),
            ("LOADS", loads.join("\n\n")),
            ("ELEM", width.elem_type().to_string()),
            ("PICK", pick),
            ("WORKGROUP", wg.to_string()),
            ("INVOCATIONS", invocations.to_string()),
            (
                "STORE",
                width.store("y", &|e| format!("value_at({e})"), "    "),
            ),
        ],
    )?;
    Ok(Kernel::new("concat", src, inputs as u32, 1, 0))
}

fn launch_concat(
    k: &str,
    width: Width,
    operands: &[usize],
    axis: usize,
    inputs: &[Option<&[usize]>],
    outputs: &[&[usize]],
    schedule: &Schedule,
) -> Result<Launch, CodegenError> {
    let y = result(k, outputs, 0)?;
    if axis >= y.len() {
        return Err(launch_err(
            k,
            format!("axis {axis} is outside the result {y:?}"),
        ));
    }
    let inner: usize = y[axis + 1..].iter().product();
    let row = y[axis] * inner;
    let n: usize = y.iter().product();
    let units = width.units(n);
    let mut params = vec![
        word(k, "elements", n)?,
        word(k, "units", units)?,
        word(k, "row", row)?,
    ];
    let mut start = 0usize;
    for &i in operands {
        let x = operand(k, inputs, i)?;
        let fits = x.len() == y.len() && (0..y.len()).all(|a| a == axis || x[a] == y[a]);
        if !fits {
            return Err(launch_err(
                k,
                format!("operand {i} {x:?} does not fit the result {y:?} on axis {axis}"),
            ));
        }
        params.push(word(k, "start", start * inner)?);
        params.push(word(k, "block", x[axis] * inner)?);
        start += x[axis];
    }
    if start != y[axis] {
        return Err(launch_err(
            k,
            format!(
                "operands add up to {start} on axis {axis}, the result has {}",
                y[axis]
            ),
        ));
    }
    Ok(Launch {
        params,
        workgroups: grid(units, schedule),
    })
}

fn emit_split(
    width: Width,
    outputs: usize,
    wg: &str,
    invocations: u32,
) -> Result<Kernel, CodegenError> {
    let mut bindings = String::from("@group(0) @binding(0) var<storage, read> x: array<u32>;\n");
    for i in 0..outputs {
        bindings.push_str(&format!(
            "@group(0) @binding({}) var<storage, read_write> y{i}: array<u32>;\n",
            i + 1
        ));
    }
    bindings.push_str(&format!(
        "@group(0) @binding({}) var<storage, read> params: array<u32>;",
        outputs + 1
    ));
    let mut pick = String::new();
    for i in 0..outputs {
        let p = 2 + 4 * i;
        let store = width.store(
            &format!("y{i}"),
            &|e| format!("value_at(params[{}], params[{}], {e})", p + 2, p + 3),
            "        ",
        );
        let body = format!(
            "        let u = g - params[{p}];\n        let n = params[{}];\n{store}\n",
            p + 1
        );
        let cond = if i + 1 < outputs {
            format!("if (g < params[{}]) ", 2 + 4 * (i + 1))
        } else {
            String::new()
        };
        let prefix = if i == 0 { "    " } else { " else " };
        pick.push_str(&format!("{prefix}{cond}{{\n{body}    }}"));
    }
    let src = render(
        "movement_split",
        SPLIT,
        &[
            ("BINDINGS", bindings),
            ("LOAD", width.load_fn("load_x", "x")),
            ("ELEM", width.elem_type().to_string()),
            ("WORKGROUP", wg.to_string()),
            ("INVOCATIONS", invocations.to_string()),
            ("PICK", pick),
        ],
    )?;
    Ok(Kernel::new("split", src, 1, outputs as u32, 0))
}

fn launch_split(
    k: &str,
    width: Width,
    n_out: usize,
    axis: usize,
    x: &[usize],
    outputs: &[&[usize]],
    schedule: &Schedule,
) -> Result<Launch, CodegenError> {
    if axis >= x.len() || outputs.len() != n_out {
        return Err(launch_err(
            k,
            format!(
                "{} results of {x:?} split on axis {axis}, expected {n_out}",
                outputs.len()
            ),
        ));
    }
    let inner: usize = x[axis + 1..].iter().product();
    let mut params = vec![word(k, "row", x[axis] * inner)?, 0];
    let (mut units, mut start) = (0usize, 0usize);
    for (i, y) in outputs.iter().enumerate() {
        let fits = y.len() == x.len() && (0..x.len()).all(|a| a == axis || x[a] == y[a]);
        if !fits {
            return Err(launch_err(
                k,
                format!("result {i} {y:?} does not fit X {x:?} on axis {axis}"),
            ));
        }
        let n: usize = y.iter().product();
        params.push(word(k, "first unit", units)?);
        params.push(word(k, "elements", n)?);
        // An empty result never reaches its block; 1 keeps the division defined.
        params.push(word(k, "block", (y[axis] * inner).max(1))?);
        params.push(word(k, "start", start * inner)?);
        units += width.units(n);
        start += y[axis];
    }
    if start != x[axis] {
        return Err(launch_err(
            k,
            format!(
                "results add up to {start} on axis {axis}, X has {}",
                x[axis]
            ),
        ));
    }
    params[1] = word(k, "units", units)?;
    Ok(Launch {
        params,
        workgroups: grid(units, schedule),
    })
}

fn emit_rotary(r: &Rotary, wg: &str, invocations: u32) -> Result<Kernel, CodegenError> {
    let ids = r.position_ids.is_some();
    let (ids_binding, cache_row) = match r.position_ids {
        Some(dt) => {
            let at = if dt == DType::I64 {
                "2u * (bi * params[3] + si)"
            } else {
                "bi * params[3] + si"
            };
            (
                "@group(0) @binding(3) var<storage, read> position_ids: array<i32>;".to_string(),
                format!(
                    "    // Ids outside the caches are clamped (the CPU executor reports them).\n\
                     \x20   let p = position_ids[{at}];\n\
                     \x20   return u32(clamp(p, 0, i32(params[5]) - 1));"
                ),
            )
        }
        None => (String::new(), "    return bi * params[3] + si;".to_string()),
    };
    let row_position = if r.four_d {
        "    let bi = r / (heads * seq);\n    let si = r % seq;"
    } else {
        "    let bi = r / (seq * heads);\n    let si = (r / heads) % seq;"
    };
    let pair = if r.interleaved {
        "    let j = k / 2u;\n    let i1 = 2u * j;\n    let i2 = i1 + 1u;\n    let first = (k & 1u) == 0u;"
    } else {
        "    let j = k % half;\n    let i1 = j;\n    let i2 = j + half;\n    let first = k < half;"
    };
    let inputs = 3 + u32::from(ids);
    let src = render(
        "rotary",
        ROTARY,
        &[
            ("IDS_BINDING", ids_binding),
            ("Y_BINDING", inputs.to_string()),
            ("PARAMS_BINDING", (inputs + 1).to_string()),
            ("CACHE_ROW", cache_row),
            ("WORKGROUP", wg.to_string()),
            ("INVOCATIONS", invocations.to_string()),
            ("ROW_POSITION", row_position.to_string()),
            ("PAIR", pair.to_string()),
        ],
    )?;
    Ok(Kernel::new("rotary", src, inputs, 1, 0))
}

fn launch_rotary(
    k: &str,
    r: &Rotary,
    inputs: &[Option<&[usize]>],
    outputs: &[&[usize]],
    schedule: &Schedule,
) -> Result<Launch, CodegenError> {
    let x = operand(k, inputs, 0)?;
    let cos = operand(k, inputs, 1)?;
    let sin = operand(k, inputs, 2)?;
    let (b, s, h, d) = match (r.four_d, x) {
        (true, &[b, h, s, d]) => (b, s, h, d),
        (false, &[b, s, hidden]) => {
            let h = r.num_heads;
            if h == 0 || !hidden.is_multiple_of(h) {
                return Err(launch_err(
                    k,
                    format!("X hidden size {hidden} is not a multiple of {h} heads"),
                ));
            }
            (b, s, h, hidden / h)
        }
        _ => return Err(launch_err(k, format!("X {x:?} has the wrong rank"))),
    };
    let rot = if r.rotary_dim == 0 { d } else { r.rotary_dim };
    if rot > d {
        return Err(launch_err(
            k,
            format!("rotary_embedding_dim {rot} exceeds the head size {d}"),
        ));
    }
    let half = rot / 2;
    let rows = if r.position_ids.is_some() {
        let ids = operand(k, inputs, 3)?;
        if cos.len() != 2 || cos[1] != half || ids != [b, s] {
            return Err(launch_err(
                k,
                format!("caches {cos:?} should be [positions, {half}] and ids {ids:?} [{b}, {s}]"),
            ));
        }
        cos[0]
    } else {
        if cos != [b, s, half] {
            return Err(launch_err(
                k,
                format!("caches {cos:?} should be [{b}, {s}, {half}]"),
            ));
        }
        b * s
    };
    if sin != cos {
        return Err(launch_err(
            k,
            format!("sin cache {sin:?} differs from cos cache {cos:?}"),
        ));
    }
    let y = result(k, outputs, 0)?;
    if y != x {
        return Err(launch_err(
            k,
            format!("the result {y:?} should have X's shape {x:?}"),
        ));
    }
    let n: usize = x.iter().product();
    let params = vec![
        word(k, "elements", n)?,
        word(k, "head size", d)?,
        word(k, "pairs", half)?,
        word(k, "sequence", s)?,
        word(k, "heads", h)?,
        word(k, "cache rows", rows)?,
    ];
    // A head size of 0 leaves nothing to do; keep the kernel's `e % d` defined.
    let params = if d == 0 {
        vec![0, 1, 0, 1, 1, 1]
    } else {
        params
    };
    Ok(Launch {
        params,
        workgroups: grid(n, schedule),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::{to_msl, to_spirv, validate};
    use crate::{DeviceCaps, Family};
    use kiln_ir::Shape;

    fn vt(dtype: DType, dims: &[u64]) -> ValueType {
        ValueType::new(dtype, Shape::fixed(dims))
    }

    fn ints(v: &[i64]) -> Tensor {
        Tensor::from_vec(vec![v.len()], v.to_vec()).unwrap()
    }

    fn select(
        op: &Op,
        inputs: &[Option<&ValueType>],
        consts: &[Option<&Tensor>],
        outputs: &[&ValueType],
        caps: &DeviceCaps,
    ) -> Option<Spec> {
        let mut consts = consts.to_vec();
        consts.resize(inputs.len(), None);
        Spec::select(&NodeCtx {
            name: "n",
            op,
            inputs: inputs.to_vec(),
            consts,
            outputs: outputs.to_vec(),
            caps,
        })
    }

    /// Emits for the default schedule and a small odd one, and checks the
    /// kernel through naga's validator and both backends.
    fn check(spec: &Spec) -> Kernel {
        let caps = DeviceCaps::webgpu();
        let mut first = None;
        for schedule in [
            Schedule::default_for(Family::Movement, &caps),
            Schedule {
                workgroup: [8, 4, 1],
                tile: [1, 1, 1],
                vector: 1,
            },
        ] {
            let k = spec.emit(&schedule).unwrap();
            validate(&k).unwrap_or_else(|e| panic!("{e}\n{}", k.wgsl));
            let msl = to_msl(&k).unwrap();
            assert!(msl.contains(&format!("[[buffer({})]]", k.storage_buffers() - 1)));
            assert_eq!(to_spirv(&k).unwrap()[0], 0x0723_0203);
            assert!(k.fits(&caps));
            first.get_or_insert(k);
        }
        first.unwrap()
    }

    #[test]
    fn transpose_every_width_and_rank() {
        let caps = DeviceCaps::webgpu();
        for dt in [DType::F32, DType::I64, DType::F16, DType::Bool, DType::I32] {
            for rank in 1..=5u64 {
                let dims: Vec<u64> = (2..2 + rank).collect();
                let x = vt(dt, &dims);
                let y = vt(dt, &dims.iter().rev().copied().collect::<Vec<_>>());
                let s = select(
                    &Op::Transpose { perm: None },
                    &[Some(&x)],
                    &[],
                    &[&y],
                    &caps,
                )
                .unwrap();
                assert_eq!(s.bound_inputs(), vec![0]);
                let k = check(&s);
                assert_eq!((k.inputs, k.outputs), (1, 1));
            }
        }
        let x = vt(DType::F32, &[2, 3]);
        // Not a permutation, or a packed weight: no kernel.
        let bad = Op::Transpose {
            perm: Some(vec![0, 0]),
        };
        assert!(select(&bad, &[Some(&x)], &[], &[&x], &caps).is_none());
        let q = vt(
            DType::Quant(kiln_ir::quant::QuantFormat::new(8, None, true).unwrap()),
            &[4, 4],
        );
        assert!(select(
            &Op::Transpose { perm: None },
            &[Some(&q)],
            &[],
            &[&q],
            &caps
        )
        .is_none());
    }

    #[test]
    fn transpose_launch_permutes_strides() {
        let s = Spec::Transpose {
            width: Width::B4,
            perm: vec![2, 0, 1],
        };
        let sch = Schedule::default_for(Family::Movement, &DeviceCaps::webgpu());
        let l = s.launch(&[Some(&[2, 3, 4])], &[&[4, 2, 3]], &sch).unwrap();
        assert_eq!(&l.params[..3], &[24, 24, 0]);
        // (out dim, in dim, stride, pad) per output axis.
        assert_eq!(&l.params[3..], &[4, 4, 1, 0, 2, 2, 12, 0, 3, 3, 4, 0]);
        assert!(s.launch(&[Some(&[2, 3, 4])], &[&[4, 3, 2]], &sch).is_err());
    }

    #[test]
    fn slice_needs_constant_operands() {
        let caps = DeviceCaps::webgpu();
        let x = vt(DType::F32, &[4, 6]);
        let y = vt(DType::F32, &[2, 3]);
        let i = vt(DType::I64, &[1]);
        let (st, en, ax, sp) = (ints(&[5]), ints(&[-10]), ints(&[-1]), ints(&[-2]));
        let ins = [Some(&x), Some(&i), Some(&i), Some(&i), Some(&i)];
        let s = select(
            &Op::Slice,
            &ins,
            &[None, Some(&st), Some(&en), Some(&ax), Some(&sp)],
            &[&y],
            &caps,
        )
        .unwrap();
        assert!(matches!(&s, Spec::Slice { axes, .. } if axes == &[1]));
        check(&s);
        // A run-time step, or a zero step: host.
        assert!(select(
            &Op::Slice,
            &ins,
            &[None, Some(&st), Some(&en), Some(&ax), None],
            &[&y],
            &caps
        )
        .is_none());
        let zero = ints(&[0]);
        assert!(select(
            &Op::Slice,
            &ins,
            &[None, Some(&st), Some(&en), Some(&ax), Some(&zero)],
            &[&y],
            &caps
        )
        .is_none());
        // Absent axes and steps default to the leading axes and 1.
        let s = select(
            &Op::Slice,
            &[Some(&x), Some(&i), Some(&i), None, None],
            &[None, Some(&st), Some(&en)],
            &[&y],
            &caps,
        )
        .unwrap();
        assert!(matches!(&s, Spec::Slice { axes, steps, .. } if axes == &[0] && steps == &[1]));
    }

    #[test]
    fn slice_launch_walks_backwards() {
        // x[4, 6][:, 5:-10:-2] = columns 5, 3, 1.
        let s = Spec::Slice {
            width: Width::B4,
            rank: 2,
            starts: vec![5],
            ends: vec![-10],
            axes: vec![1],
            steps: vec![-2],
        };
        let sch = Schedule::default_for(Family::Movement, &DeviceCaps::webgpu());
        let l = s.launch(&[Some(&[4, 6])], &[&[4, 3]], &sch).unwrap();
        assert_eq!(l.params[2], 5);
        assert_eq!(l.params[3 + 4 + 2] as i32, -2);
    }

    #[test]
    fn expand_tile_and_pad_variants_validate() {
        let caps = DeviceCaps::webgpu();
        let x = vt(DType::F32, &[3, 1]);
        let y = vt(DType::F32, &[2, 3, 4]);
        let shape = vt(DType::I64, &[3]);
        let target = ints(&[2, 3, 4]);
        let s = select(
            &Op::Expand,
            &[Some(&x), Some(&shape)],
            &[None, Some(&target)],
            &[&y],
            &caps,
        )
        .unwrap();
        assert_eq!(
            s,
            Spec::Expand {
                width: Width::B4,
                rank: 3
            }
        );
        check(&s);
        // A run-time target with an unknown result shape: host.
        let unknown = ValueType::new(
            DType::F32,
            Shape(vec![Dim::Unknown, Dim::Fixed(3), Dim::Fixed(4)]),
        );
        assert!(select(
            &Op::Expand,
            &[Some(&x), Some(&shape)],
            &[],
            &[&unknown],
            &caps
        )
        .is_none());

        let reps = ints(&[2, 3]);
        let r = vt(DType::I64, &[2]);
        let s = select(
            &Op::Tile,
            &[Some(&x), Some(&r)],
            &[None, Some(&reps)],
            &[&vt(DType::F32, &[6, 3])],
            &caps,
        )
        .unwrap();
        check(&s);
        assert!(select(&Op::Tile, &[Some(&x), Some(&r)], &[], &[&y], &caps).is_none());

        let pads = ints(&[1, 0, 2, -1]);
        let value = Tensor::scalar(2.5f32);
        let v = vt(DType::F32, &[]);
        for mode in [
            PadMode::Constant,
            PadMode::Reflect,
            PadMode::Edge,
            PadMode::Wrap,
        ] {
            let op = Op::Pad { mode };
            let s = select(
                &op,
                &[Some(&x), Some(&r), Some(&v)],
                &[None, Some(&pads), Some(&value)],
                &[&vt(DType::F32, &[6, 0])],
                &caps,
            )
            .unwrap();
            if let Spec::Pad {
                fill,
                before,
                after,
                ..
            } = &s
            {
                assert_eq!(fill[0], 2.5f32.to_bits());
                assert_eq!(
                    (before.as_slice(), after.as_slice()),
                    (&[1, 0][..], &[2, -1][..])
                );
            }
            check(&s);
        }
        // A fill of another dtype, or run-time pads: host.
        let other = Tensor::scalar(2i64);
        let op = Op::Pad {
            mode: PadMode::Constant,
        };
        assert!(select(
            &op,
            &[Some(&x), Some(&r), Some(&v)],
            &[None, Some(&pads), Some(&other)],
            &[&y],
            &caps
        )
        .is_none());
        assert!(select(&op, &[Some(&x), Some(&r)], &[], &[&y], &caps).is_none());
        // i64 and byte-wide fills keep their bits.
        for (dt, value, want) in [
            (
                DType::I64,
                Tensor::scalar(-3i64),
                [(-3i32) as u32, u32::MAX],
            ),
            (DType::U8, Tensor::scalar(7u8), [7, 0]),
        ] {
            let x = vt(dt, &[3, 1]);
            let v = vt(dt, &[]);
            let s = select(
                &op,
                &[Some(&x), Some(&r), Some(&v)],
                &[None, Some(&pads), Some(&value)],
                &[&vt(dt, &[6, 0])],
                &caps,
            )
            .unwrap();
            assert!(
                matches!(&s, Spec::Pad { fill, .. } if *fill == want),
                "{s:?}"
            );
            check(&s);
        }
    }

    #[test]
    fn concat_and_split_respect_the_buffer_limit() {
        let caps = DeviceCaps::webgpu();
        let x = vt(DType::F32, &[2, 3]);
        for n in 1..=6 {
            let ins: Vec<Option<&ValueType>> = vec![Some(&x); n];
            let y = vt(DType::F32, &[2, 3 * n as u64]);
            let s = select(&Op::Concat { axis: -1 }, &ins, &[], &[&y], &caps).unwrap();
            assert_eq!(s.bound_inputs(), (0..n).collect::<Vec<_>>());
            let k = check(&s);
            assert_eq!(k.storage_buffers() as usize, n + 2);
        }
        let ins: Vec<Option<&ValueType>> = vec![Some(&x); 7];
        assert!(select(&Op::Concat { axis: 0 }, &ins, &[], &[&x], &caps).is_none());
        assert!(select(
            &Op::Concat { axis: 0 },
            &ins,
            &[],
            &[&x],
            &DeviceCaps::vulkan()
        )
        .is_some());

        let op = Op::Split {
            axis: 1,
            split: Some(vec![1, 2]),
        };
        for dt in [DType::F32, DType::I64, DType::U8, DType::F16] {
            let x = vt(dt, &[2, 3]);
            let outs = [vt(dt, &[2, 1]), vt(dt, &[2, 2])];
            let s = select(&op, &[Some(&x)], &[], &[&outs[0], &outs[1]], &caps).unwrap();
            let k = check(&s);
            assert_eq!((k.inputs, k.outputs), (1, 2));
        }
        let outs: Vec<ValueType> = (0..7).map(|_| vt(DType::F32, &[2, 1])).collect();
        let refs: Vec<&ValueType> = outs.iter().collect();
        let x7 = vt(DType::F32, &[2, 7]);
        assert!(select(
            &Op::Split {
                axis: 1,
                split: None
            },
            &[Some(&x7)],
            &[],
            &refs,
            &caps
        )
        .is_none());
        // Run-time sizes: host.
        let sizes = vt(DType::I64, &[2]);
        assert!(select(
            &Op::Split {
                axis: 1,
                split: None
            },
            &[Some(&x7), Some(&sizes)],
            &[],
            &refs[..2],
            &caps
        )
        .is_none());
    }

    #[test]
    fn split_launch_lays_outputs_one_after_another() {
        let s = Spec::Split {
            width: Width::B1,
            outputs: 2,
            axis: 1,
        };
        let sch = Schedule::default_for(Family::Movement, &DeviceCaps::webgpu());
        let l = s
            .launch(&[Some(&[2, 5])], &[&[2, 2], &[2, 3]], &sch)
            .unwrap();
        // 4 bytes → 1 word, 6 bytes → 2 words.
        assert_eq!(l.params, vec![5, 3, 0, 4, 2, 0, 1, 6, 3, 2]);
        assert!(s
            .launch(&[Some(&[2, 5])], &[&[2, 2], &[2, 2]], &sch)
            .is_err());
    }

    #[test]
    fn rotary_variants() {
        let caps = DeviceCaps::webgpu();
        let x3 = vt(DType::F32, &[1, 5, 576]);
        let x4 = vt(DType::F32, &[1, 9, 5, 64]);
        let cache = vt(DType::F32, &[32, 32]);
        let ids = vt(DType::I64, &[1, 5]);
        let ids32 = vt(DType::I32, &[1, 5]);
        for interleaved in [false, true] {
            for (x, heads) in [(&x3, 9), (&x4, 0)] {
                for ids in [Some(&ids), Some(&ids32), None] {
                    let op = Op::RotaryEmbedding {
                        interleaved,
                        num_heads: heads,
                        rotary_embedding_dim: 0,
                    };
                    let mut ins = vec![Some(x), Some(&cache), Some(&cache)];
                    if let Some(i) = ids {
                        ins.push(Some(i));
                    }
                    let s = select(&op, &ins, &[], &[x], &caps).unwrap();
                    assert_eq!(s.bound_inputs().len(), ins.len());
                    let k = check(&s);
                    assert_eq!(k.inputs as usize, ins.len());
                }
            }
        }
        // 3-d without heads, odd rotary dim, f16: host.
        let op = Op::RotaryEmbedding {
            interleaved: false,
            num_heads: 0,
            rotary_embedding_dim: 0,
        };
        assert!(select(
            &op,
            &[Some(&x3), Some(&cache), Some(&cache)],
            &[],
            &[&x3],
            &caps
        )
        .is_none());
        let op = Op::RotaryEmbedding {
            interleaved: false,
            num_heads: 0,
            rotary_embedding_dim: 3,
        };
        assert!(select(
            &op,
            &[Some(&x4), Some(&cache), Some(&cache)],
            &[],
            &[&x4],
            &caps
        )
        .is_none());
        let h = vt(DType::F16, &[1, 9, 5, 64]);
        let op = Op::RotaryEmbedding {
            interleaved: false,
            num_heads: 0,
            rotary_embedding_dim: 0,
        };
        assert!(select(
            &op,
            &[Some(&h), Some(&cache), Some(&cache)],
            &[],
            &[&h],
            &caps
        )
        .is_none());
    }

    #[test]
    fn rotary_launch_checks_shapes() {
        let s = Spec::Rotary(Rotary {
            interleaved: false,
            four_d: false,
            num_heads: 9,
            rotary_dim: 0,
            position_ids: Some(DType::I64),
        });
        let sch = Schedule::default_for(Family::Movement, &DeviceCaps::webgpu());
        let x: &[usize] = &[1, 5, 576];
        let l = s
            .launch(
                &[Some(x), Some(&[32, 32]), Some(&[32, 32]), Some(&[1, 5])],
                &[x],
                &sch,
            )
            .unwrap();
        assert_eq!(l.params, vec![2880, 64, 32, 5, 9, 32]);
        assert!(s
            .launch(
                &[Some(x), Some(&[32, 16]), Some(&[32, 16]), Some(&[1, 5])],
                &[x],
                &sch
            )
            .is_err());
    }

    #[test]
    fn other_ops_are_not_movement() {
        let caps = DeviceCaps::webgpu();
        let x = vt(DType::F32, &[2]);
        assert!(select(&Op::Relu, &[Some(&x)], &[], &[&x], &caps).is_none());
    }
}
