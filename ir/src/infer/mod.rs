//! Shape and dtype inference, per op.
//!
//! [`infer_node`] is the single source of truth for the static type of every
//! op's results; [`infer_graph`] applies it to a whole graph in order.
//!
//! The rules follow ONNX (latest opset) semantics. Dimensions are
//! [`Dim::Fixed`], [`Dim::Sym`] (a named run-time size) or [`Dim::Unknown`];
//! the rank of a result is always known. Where a size cannot be determined
//! statically (a non-constant shape operand, symbolic arithmetic that does not
//! simplify) the dimension becomes `Unknown`; only inputs that no run time
//! could accept (mismatched fixed sizes, bad attributes, wrong operand counts)
//! are errors.
//!
//! The code is split by op family: [`broadcast`] (numpy broadcasting, shared
//! with other crates), `elementwise`, `linalg`, `conv`, `norm`, `reduce`,
//! `movement`, `index`, `generate`, `resize`, `attention` and `fused`.

mod attention;
pub mod broadcast;
mod conv;
mod elementwise;
mod fused;
mod generate;
mod index;
pub(crate) mod linalg;
mod movement;
mod norm;
mod reduce;
mod resize;

pub use broadcast::broadcast_shapes;

use crate::{DType, Dim, Graph, Op, Shape, Tensor, ValueType};

/// Why a node's result types could not be inferred.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
#[error("{op}: {message}")]
pub struct InferError {
    /// The op's name.
    pub op: String,
    /// What was wrong (wrong operand count, incompatible shapes, bad attribute, ...).
    pub message: String,
}

/// Result of an inference step.
pub(crate) type R<T> = Result<T, InferError>;

/// Infers the result types of one node.
///
/// `inputs[i]` is the type of operand i (`None` when the optional operand is
/// absent); `consts[i]` its value when known at compile time (shape tensors,
/// axes, pads). Returns one type per output the op produces: its required
/// outputs (`Dropout`, `LayerNorm`, `Pool` and `Attention` return only their first; `TopK`
/// both), and for `Split` one per size given by the attribute or the constant
/// (or statically sized) `split` operand. Use [`infer_node_with_outputs`] when
/// the node's output count is known, e.g. for `Split` with `num_outputs` or to
/// get a `Dropout` mask.
pub fn infer_node(
    op: &Op,
    inputs: &[Option<&ValueType>],
    consts: &[Option<&Tensor>],
) -> Result<Vec<ValueType>, InferError> {
    infer_impl(op, inputs, consts, None)
}

/// Infers the result types of a node that has `num_outputs` results.
///
/// Ops with optional outputs (`Dropout` mask, `LayerNorm` mean and inverse
/// standard deviation, max-`Pool` indices, `Attention` present key/value and
/// scores) return that many types; `Split`
/// without explicit sizes splits into `num_outputs` equal parts (the last one
/// smaller when the axis does not divide evenly, as ONNX does). A count the
/// op cannot produce is an error.
pub fn infer_node_with_outputs(
    op: &Op,
    inputs: &[Option<&ValueType>],
    consts: &[Option<&Tensor>],
    num_outputs: usize,
) -> Result<Vec<ValueType>, InferError> {
    infer_impl(op, inputs, consts, Some(num_outputs))
}

fn infer_impl(
    op: &Op,
    inputs: &[Option<&ValueType>],
    consts: &[Option<&Tensor>],
    num_outputs: Option<usize>,
) -> R<Vec<ValueType>> {
    let cx = Ctx { op, inputs, consts };
    if let Op::Split { axis, split } = op {
        // Split is the one op whose output count is data, not a property of the op.
        return movement::split(&cx, *axis, split.as_deref(), num_outputs);
    }
    let mut out = dispatch(&cx)?;
    // `dispatch` returns every output the op can produce; the first `min` are required.
    let (min, max) = output_range(op);
    debug_assert_eq!(out.len(), max);
    let n = num_outputs.unwrap_or(min);
    if n < min || n > max {
        let expected = match (min, max) {
            (1, 1) => "1 result".to_string(),
            (a, b) if a == b => format!("{a} results"),
            (a, b) => format!("{a} to {b} results"),
        };
        return Err(cx.err(format!("produces {expected}, the node has {n}")));
    }
    out.truncate(n);
    Ok(out)
}

/// How many results an op has: (required, all).
fn output_range(op: &Op) -> (usize, usize) {
    match op {
        Op::Dropout => (1, 2),
        Op::TopK { .. } => (2, 2),
        Op::LayerNorm { .. } => (1, 3),
        Op::Attention { .. } => (1, 4),
        Op::Pool {
            kind: crate::PoolKind::Max,
            ..
        } => (1, 2),
        _ => (1, 1),
    }
}

/// Packed weights are read in place by three ops only: `MatMul` and
/// `FusedMatMul` (as their weight operand) and `Gather` (selecting output
/// columns); any other use
/// would see codes instead of values.
fn check_packed_operands(cx: &Ctx) -> R<()> {
    for (i, t) in cx.inputs.iter().enumerate() {
        let Some(t) = t else { continue };
        if let crate::DType::Quant(f) = t.dtype {
            let allowed = matches!(
                (cx.op, i),
                (Op::MatMul | Op::FusedMatMul { .. }, 1) | (Op::Gather { .. }, 0)
            );
            if !allowed {
                return Err(cx.err(format!(
                    "operand {i} is a packed {f} weight, which only MatMul and FusedMatMul (operand 1) and Gather (operand 0) read"
                )));
            }
            if t.shape.rank() != 2 {
                return Err(cx.err(format!(
                    "packed {f} weight of shape {} must be 2-d [in, out]",
                    t.shape
                )));
            }
        }
    }
    Ok(())
}

fn dispatch(cx: &Ctx) -> R<Vec<ValueType>> {
    use Op::*;
    let one = |t: ValueType| Ok(vec![t]);
    check_packed_operands(cx)?;
    match cx.op {
        Abs
        | Neg
        | Exp
        | Log
        | Sqrt
        | Reciprocal
        | Sin
        | Cos
        | Tan
        | Asin
        | Acos
        | Atan
        | Sinh
        | Cosh
        | Asinh
        | Acosh
        | Atanh
        | Tanh
        | Sigmoid
        | Relu
        | Erf
        | Floor
        | Ceil
        | Round
        | Sign
        | Softplus
        | Softsign
        | Not
        | BitwiseNot
        | IsNaN
        | IsInf { .. }
        | Mish
        | HardSwish
        | Swish { .. }
        | Gelu { .. }
        | LeakyRelu { .. }
        | Elu { .. }
        | Selu { .. }
        | Celu { .. }
        | HardSigmoid { .. }
        | ThresholdedRelu { .. }
        | Shrink { .. } => one(elementwise::unary(cx)?),
        Clip => one(elementwise::clip(cx)?),
        Cast { to, .. } => one(elementwise::cast(cx, *to)?),
        Identity => one(elementwise::identity(cx)?),
        Dropout => elementwise::dropout(cx),
        Add
        | Sub
        | Mul
        | Div
        | Pow
        | Mod { .. }
        | PRelu
        | And
        | Or
        | Xor
        | Equal
        | Less
        | LessOrEqual
        | Greater
        | GreaterOrEqual
        | BitwiseAnd
        | BitwiseOr
        | BitwiseXor
        | BitShift { .. } => one(elementwise::binary(cx)?),
        Where => one(elementwise::where_(cx)?),
        Max | Min | Sum | Mean => one(elementwise::variadic(cx)?),

        MatMul => one(linalg::matmul(cx)?),
        Gemm {
            trans_a, trans_b, ..
        } => one(linalg::gemm(cx, *trans_a, *trans_b)?),
        Einsum { equation } => one(linalg::einsum(cx, equation)?),

        Conv { window, group } => one(conv::conv(cx, window, *group)?),
        ConvTranspose {
            window,
            group,
            output_padding,
            output_shape,
        } => one(conv::conv_transpose(
            cx,
            window,
            *group,
            output_padding,
            output_shape,
        )?),
        Pool {
            kind,
            window,
            ceil_mode,
            ..
        } => conv::pool(cx, *kind, window, *ceil_mode),
        GlobalPool { .. } => one(conv::global_pool(cx)?),

        BatchNorm { .. } => one(norm::batch_norm(cx)?),
        InstanceNorm { .. } => one(norm::instance_norm(cx)?),
        LayerNorm { axis, .. } => norm::layer_norm(cx, *axis),
        RmsNorm { axis, .. } => one(norm::rms_norm(cx, *axis)?),
        GroupNorm { num_groups, .. } => one(norm::group_norm(cx, *num_groups)?),
        LpNorm { axis, p } => one(norm::lp_norm(cx, *axis, *p)?),
        Lrn { size, .. } => one(norm::lrn(cx, *size)?),
        MeanVarianceNorm { axes } => one(norm::mean_variance_norm(cx, axes)?),
        Softmax { axis } | LogSoftmax { axis } | Hardmax { axis } => one(norm::softmax(cx, *axis)?),

        Reduce {
            axes,
            keepdims,
            noop_with_empty_axes,
            ..
        } => one(reduce::reduce(
            cx,
            axes.as_deref(),
            *keepdims,
            *noop_with_empty_axes,
        )?),
        ArgReduce { axis, keepdims, .. } => one(reduce::arg_reduce(cx, *axis, *keepdims)?),
        CumSum { .. } | CumProd { .. } => one(reduce::cumulative(cx)?),
        TopK { axis, .. } => reduce::top_k(cx, *axis),

        Reshape { allowzero } => one(movement::reshape(cx, *allowzero)?),
        Shape { start, end } => one(movement::shape(cx, *start, *end)?),
        Size => one(movement::size(cx)?),
        Flatten { axis } => one(movement::flatten(cx, *axis)?),
        Squeeze { axes } => one(movement::squeeze(cx, axes.as_deref())?),
        Unsqueeze { axes } => one(movement::unsqueeze(cx, axes.as_deref())?),
        Transpose { perm } => one(movement::transpose(cx, perm.as_deref())?),
        Concat { axis } => one(movement::concat(cx, *axis)?),
        Split { .. } => unreachable!("Split is handled before dispatch"),
        Slice => one(movement::slice(cx)?),
        Expand => one(movement::expand(cx)?),
        Tile => one(movement::tile(cx)?),
        Pad { .. } => one(movement::pad(cx)?),
        DepthToSpace { blocksize, .. } => one(movement::depth_to_space(cx, *blocksize)?),
        SpaceToDepth { blocksize } => one(movement::space_to_depth(cx, *blocksize)?),

        Gather { axis } => one(index::gather(cx, *axis)?),
        GatherElements { axis } => one(index::gather_elements(cx, *axis)?),
        GatherNd { batch_dims } => one(index::gather_nd(cx, *batch_dims)?),
        ScatterElements { axis, .. } => one(index::scatter_elements(cx, *axis)?),
        ScatterNd { .. } => one(index::scatter_nd(cx)?),
        NonZero => one(index::non_zero(cx)?),
        Compress { axis } => one(index::compress(cx, *axis)?),
        OneHot { axis } => one(index::one_hot(cx, *axis)?),
        Trilu { .. } => one(index::trilu(cx)?),

        ConstantOfShape { dtype, .. } => one(generate::constant_of_shape(cx, *dtype)?),
        Range => one(generate::range(cx)?),
        EyeLike { dtype, .. } => one(generate::eye_like(cx, *dtype)?),

        Resize(attrs) => one(resize::resize(cx, attrs)?),

        Attention {
            q_num_heads,
            kv_num_heads,
            qk_matmul_output_mode,
            softmax_precision,
            ..
        } => attention::attention(
            cx,
            *q_num_heads,
            *kv_num_heads,
            *qk_matmul_output_mode,
            *softmax_precision,
        ),
        RotaryEmbedding {
            num_heads,
            rotary_embedding_dim,
            ..
        } => one(attention::rotary_embedding(
            cx,
            *num_heads,
            *rotary_embedding_dim,
        )?),

        Elementwise { program } => one(fused::elementwise(cx, program)?),
        FusedMatMul {
            trans_a,
            trans_b,
            epilogue,
        } => one(fused::fused_matmul(cx, *trans_a, *trans_b, epilogue)?),
    }
}

/// Infers the result types of `node` from the current types and constants
/// of its operands in `g` (the node need not be in `g.nodes`). Errors name
/// the node.
pub fn infer_node_in(g: &Graph, node: &crate::Node) -> Result<Vec<ValueType>, GraphInferError> {
    let mut tys: Vec<Option<ValueType>> = Vec::with_capacity(node.inputs.len());
    let mut consts: Vec<Option<&Tensor>> = Vec::with_capacity(node.inputs.len());
    for v in &node.inputs {
        // A dangling id is a malformed graph: report it instead of panicking.
        let v = match v {
            Some(v) if v.index() >= g.num_values() => {
                return Err(GraphInferError {
                    node: node.describe(g),
                    source: InferError {
                        op: node.op.name().to_string(),
                        message: format!("operand refers to value id {} that does not exist", v.0),
                    },
                })
            }
            v => *v,
        };
        tys.push(v.map(|v| g.value(v).ty.clone()));
        consts.push(v.and_then(|v| g.constant(v)));
    }
    let ty_refs: Vec<Option<&ValueType>> = tys.iter().map(|t| t.as_ref()).collect();
    infer_node_with_outputs(&node.op, &ty_refs, &consts, node.outputs.len()).map_err(|e| {
        GraphInferError {
            node: node.describe(g),
            source: e,
        }
    })
}

/// Re-infers the type of every node output in graph order, overwriting the
/// stored types. Errors name the node.
pub fn infer_graph(g: &mut Graph) -> Result<(), GraphInferError> {
    for i in 0..g.nodes.len() {
        let out = infer_node_in(g, &g.nodes[i])?;
        let outputs = g.nodes[i].outputs.clone();
        for (o, ty) in outputs.into_iter().zip(out) {
            if o.index() < g.num_values() {
                g.value_mut(o).ty = ty;
            }
        }
    }
    Ok(())
}

/// An inference error with the node it happened at.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
#[error("node {node}: {source}")]
pub struct GraphInferError {
    /// The node, described.
    pub node: String,
    /// The op-level error.
    pub source: InferError,
}

// ---------------------------------------------------------------------------
// Shared helpers for the op families.

/// The node being inferred: its op, operand types and constant operands.
pub(crate) struct Ctx<'a> {
    pub op: &'a Op,
    pub inputs: &'a [Option<&'a ValueType>],
    pub consts: &'a [Option<&'a Tensor>],
}

impl<'a> Ctx<'a> {
    /// An error attributed to this op.
    pub fn err(&self, message: impl Into<String>) -> InferError {
        InferError {
            op: self.op.name().to_string(),
            message: message.into(),
        }
    }

    /// Number of operands, not counting absent trailing optional ones.
    pub fn count(&self) -> usize {
        self.inputs
            .iter()
            .rposition(Option::is_some)
            .map_or(0, |i| i + 1)
    }

    /// Checks the operand count is within `min..=max`.
    pub fn arity(&self, min: usize, max: usize) -> R<()> {
        let n = self.count();
        if n >= min && n <= max {
            return Ok(());
        }
        let plural = |k: usize| if k == 1 { "operand" } else { "operands" };
        let expected = if min == max {
            format!("{min} {}", plural(min))
        } else if max == usize::MAX {
            format!("at least {min} {}", plural(min))
        } else if max == min + 1 {
            format!("{min} or {max} operands")
        } else {
            format!("{min} to {max} operands")
        };
        Err(self.err(format!("expects {expected}, got {n}")))
    }

    /// The type of a required operand.
    pub fn input(&self, i: usize) -> R<&'a ValueType> {
        self.opt(i)
            .ok_or_else(|| self.err(format!("operand {i} is required but absent")))
    }

    /// The type of an optional operand.
    pub fn opt(&self, i: usize) -> Option<&'a ValueType> {
        self.inputs.get(i).copied().flatten()
    }

    /// An optional operand, treating a statically empty 1-d tensor as absent
    /// (older exporters pass `[]` as a placeholder for an omitted input).
    pub fn opt_nonempty(&self, i: usize) -> Option<&'a ValueType> {
        self.opt(i)
            .filter(|t| !(t.shape.rank() == 1 && t.shape.0[0] == Dim::Fixed(0)))
    }

    /// The constant value of an operand, when known.
    pub fn konst(&self, i: usize) -> Option<&'a Tensor> {
        self.consts.get(i).copied().flatten()
    }

    /// The constant value of an operand as integers, when known.
    pub fn const_ints(&self, i: usize) -> Option<Vec<i64>> {
        self.konst(i).map(Tensor::to_i64_vec)
    }

    /// The static length of a 1-d operand (a scalar counts as length 1).
    pub fn vec_len(&self, i: usize) -> R<usize> {
        if let Some(t) = self.konst(i) {
            return Ok(t.len());
        }
        let ty = self.input(i)?;
        match ty.shape.0.as_slice() {
            [] => Ok(1),
            [Dim::Fixed(n)] => Ok(*n as usize),
            [_] => Err(self.err(format!(
                "operand {i} has a length unknown at compile time ({}), so the result rank is unknown",
                ty.shape
            ))),
            _ => Err(self.err(format!("operand {i} must be 1-d, got shape {}", ty.shape))),
        }
    }

    /// Normalises an axis in `[-rank, rank)`.
    pub fn axis(&self, axis: i64, rank: usize) -> R<usize> {
        norm_axis(axis, rank).ok_or_else(|| {
            self.err(format!(
                "axis {axis} is out of range for rank {rank} (valid: {} to {})",
                -(rank as i64),
                rank as i64 - 1
            ))
        })
    }

    /// Normalises a list of distinct axes in `[-rank, rank)`.
    pub fn axes(&self, axes: &[i64], rank: usize) -> R<Vec<usize>> {
        let mut out = Vec::with_capacity(axes.len());
        for &a in axes {
            let n = self.axis(a, rank)?;
            if out.contains(&n) {
                return Err(self.err(format!("axis {a} is repeated in {axes:?}")));
            }
            out.push(n);
        }
        Ok(out)
    }

    /// Checks that operands `i` and `j` have the same dtype.
    pub fn same_dtype(&self, i: usize, j: usize) -> R<()> {
        let (a, b) = (self.input(i)?, self.input(j)?);
        if a.dtype != b.dtype {
            return Err(self.err(format!(
                "operands {i} and {j} must have the same dtype, got {} and {}",
                a.dtype, b.dtype
            )));
        }
        Ok(())
    }

    /// Checks that operand `i` has an integer dtype (indices, shapes, axes).
    pub fn int_operand(&self, i: usize) -> R<&'a ValueType> {
        let t = self.input(i)?;
        if !t.dtype.is_integer() {
            return Err(self.err(format!(
                "operand {i} must have an integer dtype, got {}",
                t.dtype
            )));
        }
        Ok(t)
    }

    /// Checks that operand `i` has a floating-point dtype.
    pub fn float_operand(&self, i: usize) -> R<&'a ValueType> {
        let t = self.input(i)?;
        if !t.dtype.is_float() {
            return Err(self.err(format!(
                "operand {i} must have a floating-point dtype, got {}",
                t.dtype
            )));
        }
        Ok(t)
    }

    /// Checks the rank of operand `i` is at least `min`.
    pub fn min_rank(&self, i: usize, min: usize) -> R<&'a ValueType> {
        let t = self.input(i)?;
        if t.shape.rank() < min {
            return Err(self.err(format!(
                "operand {i} must have rank at least {min}, got shape {}",
                t.shape
            )));
        }
        Ok(t)
    }
}

/// Normalises an axis in `[-rank, rank)`; `None` when out of range.
pub(crate) fn norm_axis(axis: i64, rank: usize) -> Option<usize> {
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    (0..r).contains(&a).then_some(a as usize)
}

/// A value type.
pub(crate) fn vt(dtype: DType, dims: Vec<Dim>) -> ValueType {
    ValueType::new(dtype, Shape(dims))
}

/// Two dimensions that must be equal at run time: the more informative one,
/// or `None` when both are fixed and differ.
pub(crate) fn unify(a: &Dim, b: &Dim) -> Option<Dim> {
    match (a, b) {
        (Dim::Fixed(x), Dim::Fixed(y)) => (x == y).then(|| a.clone()),
        (Dim::Fixed(_), _) => Some(a.clone()),
        (_, Dim::Fixed(_)) => Some(b.clone()),
        // Equal at run time, so either symbol names the size; keep the first.
        (Dim::Sym(_), _) => Some(a.clone()),
        _ => Some(b.clone()),
    }
}

/// The product of dimensions: fixed when all are, the single non-1 factor
/// when there is exactly one, otherwise unknown.
pub(crate) fn dim_product<'d>(dims: impl IntoIterator<Item = &'d Dim>) -> Dim {
    let mut fixed: u64 = 1;
    let mut other: Vec<&Dim> = Vec::new();
    for d in dims {
        match d {
            Dim::Fixed(0) => return Dim::Fixed(0),
            Dim::Fixed(n) => fixed = fixed.saturating_mul(*n),
            _ => other.push(d),
        }
    }
    match (other.as_slice(), fixed) {
        ([], n) => Dim::Fixed(n),
        ([d], 1) => (*d).clone(),
        _ => Dim::Unknown,
    }
}

/// `d * k` for a non-negative factor.
pub(crate) fn dim_scale(d: &Dim, k: u64) -> Dim {
    match (d, k) {
        (Dim::Fixed(n), k) => Dim::Fixed(n.saturating_mul(k)),
        (_, 0) => Dim::Fixed(0),
        (_, 1) => d.clone(),
        _ => Dim::Unknown,
    }
}

/// `d + delta`; `None` when a fixed result would be negative.
pub(crate) fn dim_offset(d: &Dim, delta: i64) -> Option<Dim> {
    match d {
        Dim::Fixed(n) => {
            let v = (*n as i64).checked_add(delta)?;
            (v >= 0).then_some(Dim::Fixed(v as u64))
        }
        _ if delta == 0 => Some(d.clone()),
        _ => Some(Dim::Unknown),
    }
}
