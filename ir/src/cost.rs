//! FLOP and byte counts per op, for `kiln inspect` and cost models.
//!
//! Counting conventions (estimates for comparing graphs, not exact counts of
//! any kernel):
//! - a multiply-add counts 2 (MatMul/Gemm `2·M·N·K` per batch, Conv
//!   `2·N·Cout·out_spatial·(Cin/group)·kernel`, ConvTranspose
//!   `2·N·Cin·in_spatial·(Cout/group)·kernel`, Einsum `2·∏ sizes of every
//!   distinct index`); a bias adds 1 per output element;
//! - elementwise ops count 1 per output element, transcendentals and
//!   composite activations (Gelu, Mish, ...) included: they are bound by
//!   memory traffic, and a per-function weight would only be a guess;
//!   variadic Max/Min/Sum/Mean count `operands - 1` per element (at least 1);
//! - reductions, arg-reductions, cumulative ops, TopK and global pooling
//!   count 1 per input element; windowed pooling 1 per output element per
//!   kernel element;
//! - normalisations per element: BatchNorm 5 (inference: subtract, scale by
//!   1/σ, scale, shift, plus per-channel work amortised), LayerNorm,
//!   InstanceNorm, GroupNorm and MeanVarianceNorm 8 (mean, subtract, square,
//!   variance sum, normalise, scale, shift, plus the rsqrt amortised),
//!   RmsNorm 5, LpNorm 3, Lrn `2·size + 4`; Softmax and LogSoftmax 5
//!   (max, subtract, exp, sum, divide), Hardmax 2;
//! - Resize counts per output element `2·2^a` (linear) or `2·4^a` (cubic)
//!   for `a` resized axes, 0 for nearest; scatters with a reduction 1 per
//!   update element; NonZero 1 per input element;
//! - Attention counts `2·B·Hq·Sq·Skv·D` for Q·Kᵀ, `2·B·Hq·Sq·Skv·Dv` for
//!   the product with V and 5 per score for the softmax, where `Skv`
//!   includes the past keys (causal masking is not discounted: kernels may
//!   or may not skip masked blocks); RotaryEmbedding 3 per output element;
//! - fused ops: Elementwise counts one per instruction per output element;
//!   FusedMatMul `2·M·N·K` per batch for the product plus one per epilogue
//!   instruction per output element;
//! - movement, indexing and generating ops (Reshape, Transpose, Gather, Pad,
//!   Identity, Dropout, Range, ...) count 0 flops.
//!
//! `bytes_read` is the sum of operand sizes and `bytes_written` the sum of
//! result sizes, for every op (even Shape, which reads no data).

use crate::{Graph, Op, PoolKind, ResizeMode};
use std::collections::BTreeMap;

/// Work and memory traffic of one node (or a sum of nodes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cost {
    /// Floating-point (or integer arithmetic) operations; a multiply-add counts 2.
    pub flops: u64,
    /// Bytes read from operands.
    pub bytes_read: u64,
    /// Bytes written to results.
    pub bytes_written: u64,
}

impl std::ops::AddAssign for Cost {
    fn add_assign(&mut self, o: Cost) {
        self.flops = self.flops.saturating_add(o.flops);
        self.bytes_read = self.bytes_read.saturating_add(o.bytes_read);
        self.bytes_written = self.bytes_written.saturating_add(o.bytes_written);
    }
}

/// Product of dimensions, saturating instead of overflowing.
fn prod(d: &[u64]) -> u64 {
    d.iter().fold(1u64, |a, &b| a.saturating_mul(b))
}

/// The cost of one node, with operand and result shapes resolved to numbers.
///
/// `inputs` and `outputs` are `(dtype size in bytes, dims)`; `None` for an
/// absent optional operand. See the module docs for the counting rules.
/// Malformed shapes never panic: missing dimensions count as 0 work.
pub fn node_cost(
    op: &Op,
    inputs: &[Option<(usize, Vec<u64>)>],
    outputs: &[(usize, Vec<u64>)],
) -> Cost {
    let bytes = |(s, d): &(usize, Vec<u64>)| (*s as u64).saturating_mul(prod(d));
    Cost {
        flops: flops(op, inputs, outputs),
        bytes_read: inputs
            .iter()
            .flatten()
            .map(bytes)
            .fold(0, u64::saturating_add),
        bytes_written: outputs.iter().map(bytes).fold(0, u64::saturating_add),
    }
}

fn flops(op: &Op, inputs: &[Option<(usize, Vec<u64>)>], outputs: &[(usize, Vec<u64>)]) -> u64 {
    use Op::*;
    let dims = |i: usize| {
        inputs
            .get(i)
            .and_then(|x| x.as_ref())
            .map(|(_, d)| d.as_slice())
    };
    let out0 = outputs.first().map_or(0, |(_, d)| prod(d));
    let in0 = dims(0).map_or(0, prod);
    let present = inputs.iter().flatten().count() as u64;
    let per = |k: u64| out0.saturating_mul(k);
    let bias = |i: usize| if dims(i).is_some() { out0 } else { 0 };
    match op {
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
        | Shrink { .. }
        | Clip
        | Cast { .. } => out0,
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
        | BitShift { .. }
        | Where => out0,
        Max | Min | Sum | Mean => per(present.saturating_sub(1).max(1)),
        Identity | Dropout => 0,

        MatMul => {
            // K is the last dimension of A (A may be 1-d).
            let k = dims(0).and_then(|d| d.last().copied()).unwrap_or(0);
            per(2).saturating_mul(k)
        }
        Gemm { trans_a, .. } => {
            let k = dims(0)
                .and_then(|d| d.get(if *trans_a { 0 } else { 1 }).copied())
                .unwrap_or(0);
            per(2).saturating_mul(k).saturating_add(bias(2))
        }
        Einsum { equation } => {
            let shapes: Vec<crate::Shape> = inputs
                .iter()
                .flatten()
                .map(|(_, d)| crate::Shape::fixed(d))
                .collect();
            let refs: Vec<&crate::Shape> = shapes.iter().collect();
            match crate::infer::linalg::einsum_analyze(equation, &refs) {
                Ok(info) => {
                    let sizes = info
                        .labels
                        .values()
                        .chain(&info.ellipsis)
                        .map(|d| d.fixed().unwrap_or(0));
                    sizes.fold(2u64, u64::saturating_mul)
                }
                Err(_) => 0,
            }
        }

        // W is [Cout, Cin/group, k...]: each output element is a dot product over W[1..].
        Conv { .. } => per(2)
            .saturating_mul(dims(1).map_or(0, |w| prod(w.get(1..).unwrap_or(&[]))))
            .saturating_add(bias(2)),
        // W is [Cin, Cout/group, k...]: each input element scatters into W[1..].
        ConvTranspose { .. } => in0
            .saturating_mul(2)
            .saturating_mul(dims(1).map_or(0, |w| prod(w.get(1..).unwrap_or(&[]))))
            .saturating_add(bias(2)),
        Pool { window, .. } => per(prod(&window.kernel_shape)),
        GlobalPool {
            kind: PoolKind::Max | PoolKind::Average,
        } => in0,

        BatchNorm { .. } => per(5),
        InstanceNorm { .. } | LayerNorm { .. } | GroupNorm { .. } | MeanVarianceNorm { .. } => {
            per(8)
        }
        RmsNorm { .. } => per(5),
        LpNorm { .. } => per(3),
        Lrn { size, .. } => per(size.saturating_mul(2).saturating_add(4)),
        Softmax { .. } | LogSoftmax { .. } => per(5),
        Hardmax { .. } => per(2),
        Attention {
            q_num_heads,
            kv_num_heads,
            ..
        } => attention_flops(
            dims(0),
            dims(1),
            dims(2),
            dims(4),
            *q_num_heads,
            *kv_num_heads,
        ),
        RotaryEmbedding { .. } => per(3),
        Elementwise { program } => per(program.len() as u64),
        FusedMatMul {
            trans_a, epilogue, ..
        } => {
            // K is A's last axis, or its second to last when transposed (A may be 1-d).
            let k = dims(0)
                .and_then(|d| {
                    let i = d.len().checked_sub(if *trans_a { 2 } else { 1 })?;
                    d.get(i).copied()
                })
                .unwrap_or(0);
            per(2)
                .saturating_mul(k)
                .saturating_add(per(epilogue.len() as u64))
        }

        Reduce { .. }
        | ArgReduce { .. }
        | CumSum { .. }
        | CumProd { .. }
        | TopK { .. }
        | NonZero => in0,

        ScatterElements { reduction, .. } | ScatterNd { reduction } => {
            if *reduction == crate::ScatterReduction::None {
                0
            } else {
                dims(2).map_or(0, prod)
            }
        }
        Resize(attrs) => {
            let resized = match (dims(0), outputs.first()) {
                (Some(i), Some((_, o))) => i.iter().zip(o).filter(|(a, b)| a != b).count() as u32,
                _ => 0,
            };
            let taps: u64 = match attrs.mode {
                ResizeMode::Nearest => 0,
                ResizeMode::Linear => 2u64.saturating_pow(resized),
                ResizeMode::Cubic => 4u64.saturating_pow(resized),
            };
            per(2).saturating_mul(taps)
        }

        Reshape { .. }
        | Shape { .. }
        | Size
        | Flatten { .. }
        | Squeeze { .. }
        | Unsqueeze { .. }
        | Transpose { .. }
        | Concat { .. }
        | Split { .. }
        | Slice
        | Gather { .. }
        | GatherElements { .. }
        | GatherNd { .. }
        | Expand
        | Tile
        | Pad { .. }
        | ConstantOfShape { .. }
        | Range
        | Trilu { .. }
        | OneHot { .. }
        | EyeLike { .. }
        | Compress { .. }
        | DepthToSpace { .. }
        | SpaceToDepth { .. } => 0,
    }
}

/// FLOPs of scaled dot-product attention from the Q, K, V and past_key
/// shapes (3-d inputs split by the head-count attributes); 0 when malformed.
fn attention_flops(
    q: Option<&[u64]>,
    k: Option<&[u64]>,
    v: Option<&[u64]>,
    past: Option<&[u64]>,
    q_heads: i64,
    kv_heads: i64,
) -> u64 {
    let split = |hidden: u64, heads: i64| hidden.checked_div(heads.max(0) as u64).unwrap_or(0);
    let (b, hq, sq, d) = match q {
        Some([b, h, s, d]) => (*b, *h, *s, *d),
        Some([b, s, hidden]) => (*b, q_heads.max(0) as u64, *s, split(*hidden, q_heads)),
        _ => return 0,
    };
    let skv = match k {
        Some([_, _, s, _]) | Some([_, s, _]) => *s,
        _ => return 0,
    };
    let dv = match v {
        Some([_, _, _, dv]) => *dv,
        Some([_, _, hidden]) => split(*hidden, kv_heads),
        _ => return 0,
    };
    let skv = skv.saturating_add(past.and_then(|p| p.get(2).copied()).unwrap_or(0));
    let scores = prod(&[b, hq, sq, skv]);
    scores
        .saturating_mul(d.saturating_add(dv).saturating_mul(2))
        .saturating_add(scores.saturating_mul(5))
}

/// Totals over the graph with symbolic dimensions bound to `bindings`;
/// errors name a value whose shape stays unresolved.
pub fn graph_cost(g: &Graph, bindings: &BTreeMap<String, u64>) -> Result<Cost, String> {
    let resolve = |v: crate::ValueId| -> Result<(usize, Vec<u64>), String> {
        let info = g
            .values()
            .get(v.index())
            .ok_or_else(|| format!("value id {} does not exist", v.0))?;
        info.ty
            .shape
            .resolve(bindings)
            .map(|d| (info.ty.dtype.size_of(), d))
            .ok_or_else(|| {
                format!(
                    "shape {} of `{}` has unbound dimensions",
                    info.ty.shape, info.name
                )
            })
    };
    let mut total = Cost::default();
    for n in &g.nodes {
        let ins: Result<Vec<_>, String> = n
            .inputs
            .iter()
            .map(|i| i.map(resolve).transpose())
            .collect();
        let outs: Result<Vec<_>, String> = n.outputs.iter().map(|&o| resolve(o)).collect();
        total += node_cost(&n.op, &ins?, &outs?);
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Float;

    fn f32s(d: &[u64]) -> Option<(usize, Vec<u64>)> {
        Some((4, d.to_vec()))
    }

    #[test]
    fn attention_cost_3d_and_4d_agree() {
        let op = |q, kv| Op::Attention {
            is_causal: true,
            q_num_heads: q,
            kv_num_heads: kv,
            scale: None,
            softcap: Float(0.0),
            qk_matmul_output_mode: 0,
            softmax_precision: None,
        };
        // 9 query heads of 64 over 3 KV heads, 512 tokens.
        let scores: u64 = 9 * 512 * 512;
        let want = scores * 2 * 64 * 2 + scores * 5;
        let c3 = node_cost(
            &op(9, 3),
            &[
                f32s(&[1, 512, 576]),
                f32s(&[1, 512, 192]),
                f32s(&[1, 512, 192]),
            ],
            &[(4, vec![1, 512, 576])],
        );
        assert_eq!(c3.flops, want);
        assert_eq!(c3.bytes_read, 4 * 512 * (576 + 192 + 192));
        let c4 = node_cost(
            &op(0, 0),
            &[
                f32s(&[1, 9, 512, 64]),
                f32s(&[1, 3, 512, 64]),
                f32s(&[1, 3, 512, 64]),
            ],
            &[(4, vec![1, 9, 512, 64])],
        );
        assert_eq!(c4.flops, want);
        // Past keys lengthen the key sequence: 1 new token over 511 cached.
        let c = node_cost(
            &op(0, 0),
            &[
                f32s(&[1, 9, 1, 64]),
                f32s(&[1, 3, 1, 64]),
                f32s(&[1, 3, 1, 64]),
                None,
                f32s(&[1, 3, 511, 64]),
                f32s(&[1, 3, 511, 64]),
            ],
            &[(4, vec![1, 9, 1, 64])],
        );
        assert_eq!(c.flops, 9 * 512 * (2 * 64 * 2 + 5));
    }

    #[test]
    fn fused_costs_count_the_product_and_the_program() {
        use crate::fused::{BinaryFn, Instr, Program, UnaryFn};
        let bias_gelu = Program {
            inputs: 2,
            instrs: vec![
                Instr::Binary(BinaryFn::Add, 0, 1),
                Instr::Unary(UnaryFn::Gelu(crate::GeluApprox::None), 2),
            ],
        };
        // [2, 3, 4] · [4, 5] with a bias and Gelu: 2·(2·3)·5·4 + 2 per output.
        let op = Op::FusedMatMul {
            trans_a: false,
            trans_b: false,
            epilogue: bias_gelu.clone(),
        };
        let c = node_cost(
            &op,
            &[f32s(&[2, 3, 4]), f32s(&[4, 5]), f32s(&[5])],
            &[(4, vec![2, 3, 5])],
        );
        assert_eq!(c.flops, 2 * 30 * 4 + 2 * 30);
        // Transposed A [4, 3]: K is the second to last axis.
        let op = Op::FusedMatMul {
            trans_a: true,
            trans_b: false,
            epilogue: Program::identity(),
        };
        let c = node_cost(&op, &[f32s(&[4, 3]), f32s(&[4, 5])], &[(4, vec![3, 5])]);
        assert_eq!(c.flops, 2 * 15 * 4);
        let op = Op::Elementwise { program: bias_gelu };
        let c = node_cost(&op, &[f32s(&[3, 5]), f32s(&[5])], &[(4, vec![3, 5])]);
        assert_eq!(c.flops, 30);
        assert_eq!(c.bytes_read, 4 * 20);
    }
}
