//! Maps each [`Op`] to its kernel.

use super::value::{arg, bail, opt, KResult, Value};
use super::{
    attention, conv, elementwise as ew, fused, gather, matmul, movement as mv, norm, pool, reduce,
    resize, rotary,
};
use kiln_ir::{DType, Op};

/// Axes given either as an attribute or as an optional operand.
fn axes_from(attr: &Option<Vec<i64>>, inputs: &[Option<&Value>], i: usize) -> Option<Vec<i64>> {
    match attr {
        Some(a) => Some(a.clone()),
        None => opt(inputs, i).map(|v| v.to_i64s()),
    }
}

/// Every present operand from `i` on.
fn all_from<'a>(inputs: &[Option<&'a Value>], i: usize) -> Vec<&'a Value> {
    inputs.iter().skip(i).flatten().copied().collect()
}

/// Evaluates one op on runtime values.
pub(crate) fn eval(op: &Op, inputs: &[Option<&Value>], num_outputs: usize) -> KResult<Vec<Value>> {
    let one = |v: Value| Ok(vec![v]);
    let x = || arg(inputs, 0);
    match op {
        Op::Abs
        | Op::Neg
        | Op::Exp
        | Op::Log
        | Op::Sqrt
        | Op::Reciprocal
        | Op::Sin
        | Op::Cos
        | Op::Tan
        | Op::Asin
        | Op::Acos
        | Op::Atan
        | Op::Sinh
        | Op::Cosh
        | Op::Asinh
        | Op::Acosh
        | Op::Atanh
        | Op::Tanh
        | Op::Sigmoid
        | Op::Relu
        | Op::Erf
        | Op::Floor
        | Op::Ceil
        | Op::Round
        | Op::Sign
        | Op::Softplus
        | Op::Softsign
        | Op::Not
        | Op::BitwiseNot
        | Op::IsNaN
        | Op::IsInf { .. }
        | Op::Mish
        | Op::HardSwish
        | Op::Swish { .. }
        | Op::Gelu { .. }
        | Op::LeakyRelu { .. }
        | Op::Elu { .. }
        | Op::Selu { .. }
        | Op::Celu { .. }
        | Op::HardSigmoid { .. }
        | Op::ThresholdedRelu { .. }
        | Op::Shrink { .. } => one(ew::unary(op, x()?)?),
        Op::Clip => one(ew::clip(x()?, opt(inputs, 1), opt(inputs, 2))?),
        Op::Cast { to, .. } => one(x()?.cast(*to)),
        Op::Identity => one(x()?.clone()),
        Op::Dropout => {
            let x = x()?;
            let mut out = vec![x.clone()];
            if num_outputs > 1 {
                out.push(Value::new(x.shape.clone(), vec![true; x.len()]));
            }
            Ok(out)
        }
        Op::Add
        | Op::Sub
        | Op::Mul
        | Op::Div
        | Op::Pow
        | Op::Mod { .. }
        | Op::PRelu
        | Op::And
        | Op::Or
        | Op::Xor
        | Op::Equal
        | Op::Less
        | Op::LessOrEqual
        | Op::Greater
        | Op::GreaterOrEqual
        | Op::BitwiseAnd
        | Op::BitwiseOr
        | Op::BitwiseXor
        | Op::BitShift { .. } => one(ew::binary_op(op, x()?, arg(inputs, 1)?)?),
        Op::Where => one(ew::where_op(x()?, arg(inputs, 1)?, arg(inputs, 2)?)?),
        Op::Max | Op::Min | Op::Sum | Op::Mean => one(ew::variadic(op, &all_from(inputs, 0))?),
        Op::MatMul => one(matmul::matmul(x()?, arg(inputs, 1)?)?),
        Op::Gemm {
            alpha,
            beta,
            trans_a,
            trans_b,
        } => one(matmul::gemm_op(
            x()?,
            arg(inputs, 1)?,
            opt(inputs, 2),
            alpha.0,
            beta.0,
            *trans_a,
            *trans_b,
        )?),
        Op::Einsum { equation } => one(matmul::einsum(equation, &all_from(inputs, 0))?),
        Op::Conv { window, group } => one(conv::conv(
            x()?,
            arg(inputs, 1)?,
            opt(inputs, 2),
            window,
            *group,
        )?),
        Op::ConvTranspose {
            window,
            group,
            output_padding,
            output_shape,
        } => one(conv::conv_transpose(
            x()?,
            arg(inputs, 1)?,
            opt(inputs, 2),
            window,
            *group,
            output_padding,
            output_shape,
        )?),
        Op::Pool {
            kind,
            window,
            ceil_mode,
            count_include_pad,
        } => pool::pool(
            x()?,
            *kind,
            window,
            *ceil_mode,
            *count_include_pad,
            num_outputs > 1,
        ),
        Op::GlobalPool { kind } => one(pool::global_pool(x()?, *kind)?),
        Op::BatchNorm { epsilon } => {
            let out = norm::batch_norm(
                x()?,
                arg(inputs, 1)?,
                arg(inputs, 2)?,
                arg(inputs, 3)?,
                arg(inputs, 4)?,
                epsilon.0,
            )?;
            if num_outputs > 1 {
                // Training-mode outputs (running mean/var) are passed through unchanged.
                let mut v = vec![out];
                v.push(arg(inputs, 3)?.clone());
                v.push(arg(inputs, 4)?.clone());
                v.truncate(num_outputs);
                return Ok(v);
            }
            one(out)
        }
        Op::InstanceNorm { epsilon } => {
            let x = x()?;
            let c = x.shape.get(1).copied().unwrap_or(0);
            one(norm::group_norm(
                x,
                arg(inputs, 1)?,
                arg(inputs, 2)?,
                c,
                epsilon.0,
            )?)
        }
        Op::LayerNorm { axis, epsilon } => {
            let mut v = norm::layer_norm(
                x()?,
                arg(inputs, 1)?,
                opt(inputs, 2),
                *axis,
                epsilon.0,
                false,
                num_outputs > 1,
            )?;
            v.truncate(num_outputs.max(1));
            Ok(v)
        }
        Op::RmsNorm { axis, epsilon } => {
            let mut v =
                norm::layer_norm(x()?, arg(inputs, 1)?, None, *axis, epsilon.0, true, false)?;
            v.truncate(1);
            Ok(v)
        }
        Op::GroupNorm {
            num_groups,
            epsilon,
        } => one(norm::group_norm(
            x()?,
            arg(inputs, 1)?,
            arg(inputs, 2)?,
            *num_groups as usize,
            epsilon.0,
        )?),
        Op::LpNorm { axis, p } => one(norm::lp_norm(x()?, *axis, *p)?),
        Op::Lrn {
            alpha,
            beta,
            bias,
            size,
        } => one(norm::lrn(x()?, alpha.0, beta.0, bias.0, *size)?),
        Op::MeanVarianceNorm { axes } => one(norm::mvn(x()?, axes)?),
        Op::Softmax { axis } => one(norm::softmax(x()?, *axis, norm::SoftmaxMode::Softmax)?),
        Op::LogSoftmax { axis } => one(norm::softmax(x()?, *axis, norm::SoftmaxMode::LogSoftmax)?),
        Op::Hardmax { axis } => one(norm::softmax(x()?, *axis, norm::SoftmaxMode::Hardmax)?),
        Op::Reduce {
            kind,
            axes,
            keepdims,
            noop_with_empty_axes,
        } => {
            let x = x()?;
            let axes = axes_from(axes, inputs, 1).unwrap_or_default();
            if axes.is_empty() && *noop_with_empty_axes {
                return one(x.clone());
            }
            let ax = if axes.is_empty() {
                None
            } else {
                Some(axes.as_slice())
            };
            one(reduce::reduce(x, *kind, ax, *keepdims)?)
        }
        Op::ArgReduce {
            max,
            axis,
            keepdims,
            select_last_index,
        } => one(reduce::arg_reduce(
            x()?,
            *max,
            *axis,
            *keepdims,
            *select_last_index,
        )?),
        Op::CumSum { exclusive, reverse } => one(reduce::cumulative(
            x()?,
            arg(inputs, 1)?,
            false,
            *exclusive,
            *reverse,
        )?),
        Op::CumProd { exclusive, reverse } => one(reduce::cumulative(
            x()?,
            arg(inputs, 1)?,
            true,
            *exclusive,
            *reverse,
        )?),
        Op::TopK { axis, largest, .. } => reduce::topk(x()?, arg(inputs, 1)?, *axis, *largest),
        Op::Reshape { allowzero } => {
            one(mv::reshape(x()?, &arg(inputs, 1)?.to_i64s(), *allowzero)?)
        }
        Op::Shape { start, end } => one(mv::shape_op(x()?, *start, *end)),
        Op::Size => one(Value::scalar(x()?.len() as i64)),
        Op::Flatten { axis } => one(mv::flatten(x()?, *axis)?),
        Op::Squeeze { axes } => one(mv::squeeze(x()?, axes_from(axes, inputs, 1).as_deref())?),
        Op::Unsqueeze { axes } => match axes_from(axes, inputs, 1) {
            Some(a) => one(mv::unsqueeze(x()?, &a)?),
            None => bail!("Unsqueeze needs axes"),
        },
        Op::Transpose { perm } => one(mv::transpose(x()?, perm.as_deref())?),
        Op::Concat { axis } => one(mv::concat(&all_from(inputs, 0), *axis)?),
        Op::Split { axis, split } => {
            mv::split(x()?, *axis, axes_from(split, inputs, 1), num_outputs)
        }
        Op::Slice => {
            let starts = arg(inputs, 1)?.to_i64s();
            let ends = arg(inputs, 2)?.to_i64s();
            let axes = opt(inputs, 3).map(|v| v.to_i64s());
            let steps = opt(inputs, 4).map(|v| v.to_i64s());
            one(mv::slice(
                x()?,
                &starts,
                &ends,
                axes.as_deref(),
                steps.as_deref(),
            )?)
        }
        Op::Gather { axis } => one(gather::gather(x()?, arg(inputs, 1)?, *axis)?),
        Op::GatherElements { axis } => one(gather::gather_elements(x()?, arg(inputs, 1)?, *axis)?),
        Op::GatherNd { batch_dims } => one(gather::gather_nd(x()?, arg(inputs, 1)?, *batch_dims)?),
        Op::ScatterElements { axis, reduction } => one(gather::scatter_elements(
            x()?,
            arg(inputs, 1)?,
            arg(inputs, 2)?,
            *axis,
            *reduction,
        )?),
        Op::ScatterNd { reduction } => one(gather::scatter_nd(
            x()?,
            arg(inputs, 1)?,
            arg(inputs, 2)?,
            *reduction,
        )?),
        Op::Expand => one(mv::expand(x()?, &arg(inputs, 1)?.to_i64s())?),
        Op::Tile => one(mv::tile(x()?, &arg(inputs, 1)?.to_i64s())?),
        Op::Pad { mode } => {
            let pads = arg(inputs, 1)?.to_i64s();
            let axes = opt(inputs, 3).map(|v| v.to_i64s());
            one(mv::pad(
                x()?,
                &pads,
                opt(inputs, 2),
                axes.as_deref(),
                *mode,
            )?)
        }
        Op::ConstantOfShape { value, dtype } => {
            let shape = match opt(inputs, 0) {
                Some(s) => s.to_i64s(),
                None => Vec::new(),
            };
            one(mv::constant_of_shape(&shape, *value, *dtype)?)
        }
        Op::Range => one(mv::range(x()?, arg(inputs, 1)?, arg(inputs, 2)?)?),
        Op::Trilu { upper } => {
            let k = match opt(inputs, 1) {
                Some(k) => match k.to_i64s().first() {
                    Some(&k) => k,
                    None => bail!("Trilu k operand is empty"),
                },
                None => 0,
            };
            one(mv::trilu(x()?, k, *upper)?)
        }
        Op::OneHot { axis } => one(mv::one_hot(x()?, arg(inputs, 1)?, arg(inputs, 2)?, *axis)?),
        Op::EyeLike { dtype, k } => one(mv::eye_like(x()?, *dtype, *k)?),
        Op::NonZero => one(mv::non_zero(x()?)?),
        Op::Compress { axis } => one(mv::compress(x()?, arg(inputs, 1)?, *axis)?),
        Op::DepthToSpace { blocksize, mode } => one(mv::depth_to_space(x()?, *blocksize, *mode)?),
        Op::SpaceToDepth { blocksize } => one(mv::space_to_depth(x()?, *blocksize)?),
        Op::Resize(attrs) => one(resize::resize(
            x()?,
            opt(inputs, 1),
            opt(inputs, 2),
            opt(inputs, 3),
            attrs,
        )?),
        Op::Attention {
            is_causal,
            q_num_heads,
            kv_num_heads,
            scale,
            softcap,
            qk_matmul_output_mode,
            softmax_precision,
        } => {
            let attrs = attention::AttnAttrs {
                is_causal: *is_causal,
                q_num_heads: *q_num_heads,
                kv_num_heads: *kv_num_heads,
                scale: scale.map(|s| s.0),
                softcap: softcap.0,
                qk_mode: *qk_matmul_output_mode,
                softmax_precision: *softmax_precision,
            };
            attention::attention(inputs, &attrs, num_outputs)
        }
        Op::RotaryEmbedding {
            interleaved,
            num_heads,
            rotary_embedding_dim,
        } => one(rotary::rotary_embedding(
            inputs,
            *interleaved,
            *num_heads,
            *rotary_embedding_dim,
        )?),
        Op::Elementwise { program } => {
            if inputs.len() != program.inputs as usize {
                bail!(
                    "the program has {} inputs, the node has {} operands",
                    program.inputs,
                    inputs.len()
                );
            }
            let xs = (0..program.inputs as usize)
                .map(|i| arg(inputs, i))
                .collect::<KResult<Vec<_>>>()?;
            one(fused::elementwise(program, &xs)?)
        }
        Op::FusedMatMul {
            trans_a,
            trans_b,
            epilogue,
        } => {
            if inputs.len() != epilogue.inputs as usize + 1 {
                bail!(
                    "the epilogue has {} inputs, so the node needs {} operands (A, B, E1..), got {}",
                    epilogue.inputs,
                    epilogue.inputs as usize + 1,
                    inputs.len()
                );
            }
            let extras = (2..epilogue.inputs as usize + 1)
                .map(|i| arg(inputs, i))
                .collect::<KResult<Vec<_>>>()?;
            one(fused::fused_matmul(
                x()?,
                arg(inputs, 1)?,
                &extras,
                *trans_a,
                *trans_b,
                epilogue,
            )?)
        }
    }
}

/// Dtypes an op's first operand may not have (checked when the graph is loaded).
pub(crate) fn rejects(op: &Op, dt: DType) -> bool {
    if dt.is_quant() {
        // Packed weights are read in place by MatMul (as operand 1, never
        // first) and by Gather along their output columns only.
        return !matches!(op, Op::Gather { axis: 1 | -1 });
    }
    match op {
        Op::Conv { .. }
        | Op::ConvTranspose { .. }
        | Op::Softmax { .. }
        | Op::LogSoftmax { .. }
        | Op::LayerNorm { .. }
        | Op::RmsNorm { .. }
        | Op::Attention { .. }
        | Op::RotaryEmbedding { .. } => !dt.is_float(),
        Op::MatMul | Op::Gemm { .. } => dt == DType::Bool,
        Op::Elementwise { .. } | Op::FusedMatMul { .. } => dt != DType::F32,
        _ => false,
    }
}
