//! The closed set of operations, with typed attributes.
//!
//! Input and output order follows the ONNX operator of the same name; the
//! ONNX frontend normalises opset differences (attributes that later opsets
//! moved to inputs become inputs; legacy broadcast and coercion rules become
//! explicit ops), so each variant has exactly one meaning.

use crate::DType;
use serde::{Deserialize, Serialize};
use std::hash::{Hash, Hasher};

/// An f32 attribute that can be hashed and compared bit for bit.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Float(pub f32);

impl PartialEq for Float {
    fn eq(&self, other: &Self) -> bool {
        self.0.to_bits() == other.0.to_bits()
    }
}
impl Eq for Float {}
impl PartialOrd for Float {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Float {
    /// Bitwise order, consistent with `Eq`; only used to store ops in sorted containers.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.to_bits().cmp(&other.0.to_bits())
    }
}
impl Hash for Float {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.to_bits().hash(state)
    }
}
impl From<f32> for Float {
    fn from(v: f32) -> Self {
        Float(v)
    }
}

/// A scalar literal attribute (the fill value of `ConstantOfShape`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Literal {
    /// A floating-point value, stored as the bits of an f64.
    Float(u64),
    /// A signed integer value.
    Int(i64),
    /// An unsigned integer value too large for i64.
    UInt(u64),
    /// A boolean value.
    Bool(bool),
}

impl Literal {
    /// A float literal.
    pub fn float(v: f64) -> Self {
        Literal::Float(v.to_bits())
    }

    /// The value as f64.
    pub fn as_f64(self) -> f64 {
        match self {
            Literal::Float(b) => f64::from_bits(b),
            Literal::Int(i) => i as f64,
            Literal::UInt(u) => u as f64,
            Literal::Bool(b) => b as u8 as f64,
        }
    }

    /// The value as i64 (floats truncated).
    pub fn as_i64(self) -> i64 {
        match self {
            Literal::Float(b) => f64::from_bits(b) as i64,
            Literal::Int(i) => i,
            Literal::UInt(u) => u as i64,
            Literal::Bool(b) => b as i64,
        }
    }
}

/// What a reduction computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ReduceKind {
    /// Sum.
    Sum,
    /// Arithmetic mean.
    Mean,
    /// Maximum.
    Max,
    /// Minimum.
    Min,
    /// Product.
    Prod,
    /// Sum of absolute values.
    L1,
    /// Square root of the sum of squares.
    L2,
    /// Logarithm of the sum.
    LogSum,
    /// Logarithm of the sum of exponentials.
    LogSumExp,
    /// Sum of squares.
    SumSquare,
}

/// Which pooling a pooling op computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum PoolKind {
    /// Maximum over the window.
    Max,
    /// Average over the window.
    Average,
}

/// How the spatial padding of a convolution or pool is chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum AutoPad {
    /// Use the explicit `pads`.
    NotSet,
    /// Pad so that output = ceil(input / stride), extra padding at the end.
    SameUpper,
    /// Pad so that output = ceil(input / stride), extra padding at the start.
    SameLower,
    /// No padding.
    Valid,
}

/// Spatial window attributes shared by convolutions and pools.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Window {
    /// Kernel size per spatial axis; empty means "from the weight" (convolutions).
    pub kernel_shape: Vec<u64>,
    /// Stride per spatial axis; empty means all 1.
    pub strides: Vec<u64>,
    /// Begin pads for every spatial axis, then end pads; empty means all 0.
    pub pads: Vec<u64>,
    /// Dilation per spatial axis; empty means all 1.
    pub dilations: Vec<u64>,
    /// Automatic padding rule.
    pub auto_pad: AutoPad,
}

/// The padding mode of `Pad`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum PadMode {
    /// Fill with the constant input (default 0).
    Constant,
    /// Mirror without repeating the edge.
    Reflect,
    /// Repeat the edge value.
    Edge,
    /// Wrap around.
    Wrap,
}

/// The interpolation mode of `Resize`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ResizeMode {
    /// Nearest neighbour.
    Nearest,
    /// (Multi)linear.
    Linear,
    /// Cubic.
    Cubic,
}

/// How `Resize` maps an output coordinate to an input coordinate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum CoordinateTransform {
    /// (x + 0.5) / scale - 0.5
    HalfPixel,
    /// Like half_pixel, but 0 when the output length is 1.
    PytorchHalfPixel,
    /// x * (in - 1) / (out - 1)
    AlignCorners,
    /// x / scale
    Asymmetric,
    /// Uses the region of interest input.
    TfCropAndResize,
    /// Half pixel with a symmetric offset (opset 19).
    HalfPixelSymmetric,
}

/// Rounding rule for `Resize` in nearest mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum NearestMode {
    /// Round half down.
    RoundPreferFloor,
    /// Round half up.
    RoundPreferCeil,
    /// Floor.
    Floor,
    /// Ceil.
    Ceil,
}

/// How `Resize` treats the aspect ratio when sizes are given (opset 18).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum KeepAspectRatio {
    /// Use the sizes as given.
    Stretch,
    /// Scale so the result fits inside the sizes.
    NotLarger,
    /// Scale so the result covers the sizes.
    NotSmaller,
}

/// Attributes of `Resize`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ResizeAttrs {
    /// Interpolation.
    pub mode: ResizeMode,
    /// Coordinate mapping.
    pub coordinate_transform: CoordinateTransform,
    /// Rounding in nearest mode.
    pub nearest_mode: NearestMode,
    /// Cubic coefficient.
    pub cubic_coeff_a: Float,
    /// Whether cubic weights outside the input are dropped and renormalised.
    pub exclude_outside: bool,
    /// Value for sampling outside the input in tf_crop_and_resize.
    pub extrapolation_value: Float,
    /// Axes that the scales/sizes refer to; empty means all.
    pub axes: Vec<i64>,
    /// Aspect ratio policy.
    pub keep_aspect_ratio: KeepAspectRatio,
    /// Whether the anti-aliasing filter is used when downsampling.
    pub antialias: bool,
}

/// Element order of `DepthToSpace`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum DepthToSpaceMode {
    /// Depth-column-row.
    Dcr,
    /// Column-row-depth.
    Crd,
}

/// The approximation a `Gelu` uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum GeluApprox {
    /// Exact, with erf.
    None,
    /// The tanh approximation.
    Tanh,
}

/// Reduction applied by scatter ops to colliding updates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ScatterReduction {
    /// Replace.
    None,
    /// Add.
    Add,
    /// Multiply.
    Mul,
    /// Maximum.
    Max,
    /// Minimum.
    Min,
}

/// One operation of the graph.
///
/// Inputs are positional, in the order of the ONNX operator of the same
/// name; optional inputs may be absent (`None` in [`crate::Node::inputs`]).
#[derive(
    Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, strum::IntoStaticStr,
)]
pub enum Op {
    // ---- elementwise unary ----
    /// |x|
    Abs,
    /// -x
    Neg,
    /// e^x
    Exp,
    /// ln x
    Log,
    /// √x
    Sqrt,
    /// 1/x
    Reciprocal,
    /// sin x
    Sin,
    /// cos x
    Cos,
    /// tan x
    Tan,
    /// asin x
    Asin,
    /// acos x
    Acos,
    /// atan x
    Atan,
    /// sinh x
    Sinh,
    /// cosh x
    Cosh,
    /// asinh x
    Asinh,
    /// acosh x
    Acosh,
    /// atanh x
    Atanh,
    /// tanh x
    Tanh,
    /// 1 / (1 + e^-x)
    Sigmoid,
    /// max(x, 0)
    Relu,
    /// erf x
    Erf,
    /// ⌊x⌋
    Floor,
    /// ⌈x⌉
    Ceil,
    /// Round half to even.
    Round,
    /// -1, 0 or 1.
    Sign,
    /// ln(1 + e^x)
    Softplus,
    /// x / (1 + |x|)
    Softsign,
    /// Logical not (bool).
    Not,
    /// Bitwise not (integers).
    BitwiseNot,
    /// x is NaN (bool output).
    IsNaN,
    /// x is infinite (bool output), optionally only one sign.
    IsInf {
        /// Detect +inf.
        detect_positive: bool,
        /// Detect -inf.
        detect_negative: bool,
    },
    /// x · tanh(softplus(x))
    Mish,
    /// x · relu6(x + 3) / 6
    HardSwish,
    /// x · sigmoid(alpha · x)
    Swish {
        /// Slope inside the sigmoid.
        alpha: Float,
    },
    /// Gaussian error linear unit.
    Gelu {
        /// Exact or tanh form.
        approximate: GeluApprox,
    },
    /// x if x ≥ 0 else alpha · x
    LeakyRelu {
        /// Negative slope.
        alpha: Float,
    },
    /// x if x > 0 else alpha · (e^x - 1)
    Elu {
        /// Negative scale.
        alpha: Float,
    },
    /// Scaled ELU.
    Selu {
        /// alpha
        alpha: Float,
        /// gamma
        gamma: Float,
    },
    /// max(0, x) + min(0, alpha · (e^(x/alpha) - 1))
    Celu {
        /// alpha
        alpha: Float,
    },
    /// max(0, min(1, alpha · x + beta))
    HardSigmoid {
        /// alpha
        alpha: Float,
        /// beta
        beta: Float,
    },
    /// x if x > alpha else 0
    ThresholdedRelu {
        /// Threshold.
        alpha: Float,
    },
    /// x - bias if x > lambd, x + bias if x < -lambd, else 0.
    Shrink {
        /// bias
        bias: Float,
        /// lambd
        lambd: Float,
    },
    /// Clamp to the optional `min` (input 1) and `max` (input 2).
    Clip,
    /// Converts the element type.
    Cast {
        /// Target element type.
        to: DType,
        /// Saturate out-of-range values when casting to narrow float formats.
        saturate: bool,
    },
    /// Passes its input through.
    Identity,
    /// Inference-mode dropout: output 0 is the input; output 1 (optional) is an all-true mask.
    Dropout,

    // ---- elementwise binary, with numpy broadcasting ----
    /// a + b
    Add,
    /// a - b
    Sub,
    /// a · b
    Mul,
    /// a / b (integer division truncates)
    Div,
    /// a^b
    Pow,
    /// Remainder; `fmod` selects C fmod semantics, otherwise the sign follows the divisor.
    Mod {
        /// C fmod semantics.
        fmod: bool,
    },
    /// x if x ≥ 0 else slope · x (slope broadcast).
    PRelu,
    /// Logical and.
    And,
    /// Logical or.
    Or,
    /// Logical xor.
    Xor,
    /// a == b
    Equal,
    /// a < b
    Less,
    /// a ≤ b
    LessOrEqual,
    /// a > b
    Greater,
    /// a ≥ b
    GreaterOrEqual,
    /// Bitwise and.
    BitwiseAnd,
    /// Bitwise or.
    BitwiseOr,
    /// Bitwise xor.
    BitwiseXor,
    /// Shift of integers: left shifts wrap, right shifts of signed values are
    /// arithmetic; a shift count outside `0..bits` gives 0 (or -1 for a
    /// negative value shifted right).
    BitShift {
        /// Shift left (true) or right (false).
        left: bool,
    },
    /// cond ? a : b
    Where,

    // ---- elementwise variadic, with broadcasting ----
    /// Elementwise maximum of all inputs.
    Max,
    /// Elementwise minimum of all inputs.
    Min,
    /// Elementwise sum of all inputs.
    Sum,
    /// Elementwise mean of all inputs.
    Mean,

    // ---- linear algebra ----
    /// numpy matmul, with batch broadcasting.
    MatMul,
    /// alpha · op(A) · op(B) + beta · C
    Gemm {
        /// Scale of the product.
        alpha: Float,
        /// Scale of C.
        beta: Float,
        /// Transpose A.
        trans_a: bool,
        /// Transpose B.
        trans_b: bool,
    },
    /// Einstein summation.
    Einsum {
        /// The equation, e.g. `bij,bjk->bik`.
        equation: String,
    },

    // ---- convolution and pooling (NCHW...) ----
    /// N-d convolution: inputs X, W, optional B.
    Conv {
        /// Window attributes.
        window: Window,
        /// Number of groups.
        group: u64,
    },
    /// N-d transposed convolution: inputs X, W, optional B.
    ConvTranspose {
        /// Window attributes.
        window: Window,
        /// Number of groups.
        group: u64,
        /// Extra size added to one side of each output axis.
        output_padding: Vec<u64>,
        /// Explicit output spatial shape; empty means computed.
        output_shape: Vec<u64>,
    },
    /// Max or average pooling; max pooling may also give the row-major
    /// flat indices of the maxima as a second (i64) output.
    Pool {
        /// Max or average.
        kind: PoolKind,
        /// Window attributes.
        window: Window,
        /// Use ceil instead of floor for the output size.
        ceil_mode: bool,
        /// Average pooling counts padded elements.
        count_include_pad: bool,
    },
    /// Pooling over all spatial axes.
    GlobalPool {
        /// Max or average.
        kind: PoolKind,
    },

    // ---- normalisation ----
    /// Inference batch normalisation: X, scale, B, mean, var.
    BatchNorm {
        /// Added to the variance.
        epsilon: Float,
    },
    /// Instance normalisation: X, scale, B.
    InstanceNorm {
        /// Added to the variance.
        epsilon: Float,
    },
    /// Layer normalisation over axes ≥ `axis`: X, scale, optional B → Y and,
    /// optionally, Mean and InvStdDev (f32, reduced axes kept as 1).
    LayerNorm {
        /// First normalised axis.
        axis: i64,
        /// Added to the variance.
        epsilon: Float,
    },
    /// RMS normalisation over axes ≥ `axis`: X, scale.
    RmsNorm {
        /// First normalised axis.
        axis: i64,
        /// Added to the mean square.
        epsilon: Float,
    },
    /// Group normalisation: X, scale, bias (per channel).
    GroupNorm {
        /// Number of groups.
        num_groups: u64,
        /// Added to the variance.
        epsilon: Float,
    },
    /// Lp normalisation along one axis.
    LpNorm {
        /// Axis.
        axis: i64,
        /// 1 or 2.
        p: u64,
    },
    /// Local response normalisation across channels.
    Lrn {
        /// alpha
        alpha: Float,
        /// beta
        beta: Float,
        /// bias
        bias: Float,
        /// Window size.
        size: u64,
    },
    /// (x - mean) / std over the given axes.
    MeanVarianceNorm {
        /// Axes.
        axes: Vec<i64>,
    },
    /// Softmax along one axis.
    Softmax {
        /// Axis.
        axis: i64,
    },
    /// Log-softmax along one axis.
    LogSoftmax {
        /// Axis.
        axis: i64,
    },
    /// One-hot of the maximum along one axis.
    Hardmax {
        /// Axis.
        axis: i64,
    },

    // ---- reductions ----
    /// Reduction over `axes` (attribute), or over input 1 when present.
    Reduce {
        /// What to compute.
        kind: ReduceKind,
        /// Axes from the attribute form; `None` when they come from input 1 or are absent.
        axes: Option<Vec<i64>>,
        /// Keep reduced axes with size 1.
        keepdims: bool,
        /// With no axes: identity instead of reducing everything.
        noop_with_empty_axes: bool,
    },
    /// Index of the maximum (`max = true`) or minimum along one axis.
    ArgReduce {
        /// Maximum or minimum.
        max: bool,
        /// Axis.
        axis: i64,
        /// Keep the axis with size 1.
        keepdims: bool,
        /// On ties, the last index.
        select_last_index: bool,
    },
    /// Cumulative sum along the axis given by input 1.
    CumSum {
        /// Exclude the current element.
        exclusive: bool,
        /// Accumulate from the end.
        reverse: bool,
    },
    /// Cumulative product along the axis given by input 1.
    CumProd {
        /// Exclude the current element.
        exclusive: bool,
        /// Accumulate from the end.
        reverse: bool,
    },
    /// The k largest or smallest along an axis: X, K → values, indices.
    TopK {
        /// Axis.
        axis: i64,
        /// Largest (true) or smallest.
        largest: bool,
        /// Sorted output.
        sorted: bool,
    },

    // ---- shape and data movement ----
    /// Reshape to the shape in input 1 (0 copies, -1 infers).
    Reshape {
        /// A 0 means a zero-sized dimension instead of "copy".
        allowzero: bool,
    },
    /// The shape of the input as i64, sliced to `[start, end)`.
    Shape {
        /// First dimension.
        start: i64,
        /// One past the last dimension; `None` means the rank.
        end: Option<i64>,
    },
    /// Number of elements as an i64 scalar.
    Size,
    /// Collapse to 2-d at `axis`.
    Flatten {
        /// Split point.
        axis: i64,
    },
    /// Remove size-1 axes (from the attribute or input 1; all when neither).
    Squeeze {
        /// Axes from the attribute form.
        axes: Option<Vec<i64>>,
    },
    /// Insert size-1 axes (from the attribute or input 1).
    Unsqueeze {
        /// Axes from the attribute form.
        axes: Option<Vec<i64>>,
    },
    /// Permute axes; `None` reverses them.
    Transpose {
        /// Permutation.
        perm: Option<Vec<i64>>,
    },
    /// Concatenate along an axis.
    Concat {
        /// Axis.
        axis: i64,
    },
    /// Split along an axis, by input 1 sizes, the attribute sizes, or evenly.
    Split {
        /// Axis.
        axis: i64,
        /// Sizes from the attribute form.
        split: Option<Vec<i64>>,
    },
    /// Slice: data, starts, ends, optional axes, optional steps.
    Slice,
    /// Gather along an axis with an index tensor.
    Gather {
        /// Axis.
        axis: i64,
    },
    /// Gather elements with an index tensor of the data's rank.
    GatherElements {
        /// Axis.
        axis: i64,
    },
    /// Gather slices by index tuples.
    GatherNd {
        /// Leading batch dimensions.
        batch_dims: i64,
    },
    /// Scatter updates along an axis.
    ScatterElements {
        /// Axis.
        axis: i64,
        /// Collision rule.
        reduction: ScatterReduction,
    },
    /// Scatter slices by index tuples.
    ScatterNd {
        /// Collision rule.
        reduction: ScatterReduction,
    },
    /// Broadcast to the shape in input 1.
    Expand,
    /// Repeat by the counts in input 1.
    Tile,
    /// Pad: data, pads, optional constant value, optional axes.
    Pad {
        /// Padding mode.
        mode: PadMode,
    },
    /// A tensor of the shape in input 0 filled with `value`.
    ConstantOfShape {
        /// Fill value.
        value: Literal,
        /// Element type of the result.
        dtype: DType,
    },
    /// start, limit, delta → 1-d range.
    Range,
    /// Upper or lower triangle, with the diagonal offset in optional input 1.
    Trilu {
        /// Keep the upper triangle.
        upper: bool,
    },
    /// indices, depth, values → one-hot.
    OneHot {
        /// Axis of the new dimension.
        axis: i64,
    },
    /// A 2-d identity-like matrix with the input's shape.
    EyeLike {
        /// Element type; `None` keeps the input's.
        dtype: Option<DType>,
        /// Diagonal offset.
        k: i64,
    },
    /// Indices of non-zero elements, shape [rank, n].
    NonZero,
    /// Select slices where a bool condition holds.
    Compress {
        /// Axis; `None` flattens first.
        axis: Option<i64>,
    },
    /// Move depth into spatial blocks.
    DepthToSpace {
        /// Block size.
        blocksize: u64,
        /// Element order.
        mode: DepthToSpaceMode,
    },
    /// Move spatial blocks into depth.
    SpaceToDepth {
        /// Block size.
        blocksize: u64,
    },
    /// Resize: X, optional roi, optional scales, optional sizes.
    Resize(ResizeAttrs),

    // ---- attention ----
    /// Scaled dot-product attention (ONNX `Attention`, opsets 23 and 24):
    /// Q, K, V, [attn_mask], [past_key], [past_value], [nonpad_kv_seqlen]
    /// → Y, [present_key], [present_value], [qk_matmul_output].
    ///
    /// Q, K and V are either 3-d `[batch, seq, heads·head_size]` (with the
    /// head counts given) or 4-d `[batch, heads, seq, head_size]`. Fewer KV
    /// heads than Q heads is grouped-query attention: Q head `h` reads KV
    /// head `h / (q_heads / kv_heads)`. A bool mask keeps the keys where it
    /// is true; any other mask is added to the scores; a mask shorter than
    /// the key sequence is padded with "masked". Causal masking is aligned
    /// bottom-right (query `i` sees key `j ≤ i + offset`, the offset being
    /// the past length, or `nonpad_kv_seqlen - q_seq` per batch). A query row
    /// with every key masked gives zeros.
    Attention {
        /// Apply the causal mask.
        is_causal: bool,
        /// Number of Q heads of 3-d inputs; 0 when Q is 4-d.
        q_num_heads: i64,
        /// Number of K/V heads of 3-d inputs; 0 when K/V are 4-d.
        kv_num_heads: i64,
        /// Scale of Q·Kᵀ; `None` means 1/√head_size.
        scale: Option<Float>,
        /// Scores become `softcap · tanh(scores / softcap)` before the mask; 0 is off.
        softcap: Float,
        /// What output 3 holds: 0 the scaled Q·Kᵀ, 1 after softcap, 2 after
        /// the mask is added, 3 the softmax probabilities.
        qk_matmul_output_mode: i64,
        /// Element type the softmax is computed in; `None` means Q's.
        softmax_precision: Option<DType>,
    },
    /// Rotary position embedding (ONNX `RotaryEmbedding`, opset 23):
    /// X, cos_cache, sin_cache, [position_ids] → Y.
    ///
    /// X is `[batch, heads, seq, head_size]` or `[batch, seq, heads·head_size]`.
    /// With position ids (`[batch, seq]`) the caches are `[max_pos, dim/2]`
    /// tables indexed by them; without, the caches are `[batch, seq, dim/2]`.
    RotaryEmbedding {
        /// Pairs are adjacent elements (x0, x1) instead of the two halves.
        interleaved: bool,
        /// Number of heads of a 3-d X; 0 when X is 4-d.
        num_heads: i64,
        /// Leading elements of each head that are rotated; 0 means all.
        rotary_embedding_dim: i64,
    },

    // ---- fused (made by the fusion pass, never imported) ----
    /// A fused elementwise computation: inputs X0 .. X(n-1), n =
    /// `program.inputs`, all f32, with multidirectional (numpy)
    /// broadcasting; the result is f32 of the broadcast shape with
    /// `y[i] = program(X0[i], .., X(n-1)[i])`.
    Elementwise {
        /// The scalar program applied per element.
        program: crate::fused::Program,
    },
    /// A matrix product with a fused elementwise epilogue: A, B, E1 .. Ek
    /// (k = `epilogue.inputs - 1`).
    ///
    /// `acc = op(A) · op(B)` with numpy matmul semantics (batch
    /// broadcasting, 1-d operands promoted as in `MatMul`), `op` swapping
    /// the last two axes when its flag is set (a transposed operand has
    /// rank ≥ 2); then `y = epilogue(acc, E1, .., Ek)` elementwise, each Ei
    /// broadcast to acc's shape (it may not enlarge it). B may be a packed
    /// quantized `[in, out]` weight, as `MatMul`'s operand 1, when `trans_b`
    /// is false. An identity epilogue is a plain product.
    FusedMatMul {
        /// Transpose the last two axes of A.
        trans_a: bool,
        /// Transpose the last two axes of B.
        trans_b: bool,
        /// The program applied to each product element (register 0) and the Ei.
        epilogue: crate::fused::Program,
    },
}

impl Op {
    /// The op's name as printed in the text form (the variant name).
    pub fn name(&self) -> &'static str {
        self.into()
    }
}
