//! Normalisations and the softmax family.

use super::NodeCtx;
use crate::error::ImportError;
use crate::onnx::builder::Builder;
use kiln_ir::{Float, Op, Tensor};

/// ONNX's default epsilon for the normalisation ops.
const EPS: f32 = 1e-5;

pub(super) fn batch_norm(b: &mut Builder, n: &NodeCtx) -> Result<(), ImportError> {
    n.expect_inputs(5, 5)?;
    if n.attrs.flag("training_mode", false)? {
        return Err(n.unsupported("training-mode BatchNormalization (training_mode=1)"));
    }
    // Opset 7-8: `spatial=0` means per-activation statistics, which the IR lacks.
    if !n.attrs.flag("spatial", true)? {
        return Err(n.unsupported("BatchNormalization with spatial=0"));
    }
    n.only_outputs(
        1,
        "BatchNormalization running statistics outputs (outputs 1-4)",
    )?;
    n.expect_outputs(1, 1)?;
    // momentum only updates running statistics during training.
    n.attrs.ignore(&["momentum"]);
    let epsilon = Float(n.attrs.float_or("epsilon", EPS)?);
    n.emit(b, Op::BatchNorm { epsilon });
    Ok(())
}

pub(super) fn instance_norm(b: &mut Builder, n: &NodeCtx) -> Result<(), ImportError> {
    n.expect_inputs(3, 3)?;
    n.expect_outputs(1, 1)?;
    let epsilon = Float(n.attrs.float_or("epsilon", EPS)?);
    n.emit(b, Op::InstanceNorm { epsilon });
    Ok(())
}

pub(super) fn layer_norm(b: &mut Builder, n: &NodeCtx) -> Result<(), ImportError> {
    n.expect_inputs(2, 3)?;
    n.expect_outputs(1, 3)?;
    // stash_type picks the accumulation precision; Kiln always accumulates in
    // f32 or wider, and the Mean/InvStdDev outputs are f32 (the default stash type).
    n.attrs.ignore(&["stash_type"]);
    let op = Op::LayerNorm {
        axis: n.attrs.int_or("axis", -1)?,
        epsilon: Float(n.attrs.float_or("epsilon", EPS)?),
    };
    n.emit(b, op);
    Ok(())
}

pub(super) fn rms_norm(b: &mut Builder, n: &NodeCtx) -> Result<(), ImportError> {
    n.expect_inputs(2, 2)?;
    n.expect_outputs(1, 1)?;
    n.attrs.ignore(&["stash_type"]);
    let op = Op::RmsNorm {
        axis: n.attrs.int_or("axis", -1)?,
        epsilon: Float(n.attrs.float_or("epsilon", EPS)?),
    };
    n.emit(b, op);
    Ok(())
}

pub(super) fn group_norm(b: &mut Builder, n: &NodeCtx) -> Result<(), ImportError> {
    n.expect_inputs(3, 3)?;
    n.expect_outputs(1, 1)?;
    n.attrs.ignore(&["stash_type"]);
    let num_groups = n
        .attrs
        .int("num_groups")?
        .ok_or_else(|| n.attrs.err("num_groups", "required but missing"))?;
    let num_groups = u64::try_from(num_groups)
        .ok()
        .filter(|&g| g > 0)
        .ok_or_else(|| n.attrs.err("num_groups", "must be positive"))?;
    let epsilon = Float(n.attrs.float_or("epsilon", EPS)?);
    let op = Op::GroupNorm {
        num_groups,
        epsilon,
    };
    if n.opset >= 21 {
        n.emit(b, op);
        return Ok(());
    }
    // Opset 18 has one scale/bias per group; the IR (like opset 21) has one
    // per channel. Repeat each group's value over its channels, which needs
    // constant parameters and a known channel count.
    let x = n.input(0)?;
    let channels = b
        .known_type(x)
        .and_then(|t| t.shape.0.get(1))
        .and_then(|d| d.fixed());
    let (Some(scale), Some(bias), Some(c)) = (n.const_input(b, 1), n.const_input(b, 2), channels)
    else {
        return Err(n.unsupported(
            "GroupNormalization-18 (per-group scale/bias) needs constant scale and bias and a known channel count",
        ));
    };
    let g = num_groups as usize;
    let c = c as usize;
    if !c.is_multiple_of(g) || scale.len() != g || bias.len() != g {
        return Err(n.unsupported(format!(
            "GroupNormalization-18 with {c} channels, {g} groups, scale of {} and bias of {} elements",
            scale.len(),
            bias.len()
        )));
    }
    let per_channel = |t: &Tensor| -> Result<Tensor, ImportError> {
        let v = t.to_f64_vec();
        let rep: Vec<f64> = v
            .iter()
            .flat_map(|&x| std::iter::repeat_n(x, c / g))
            .collect();
        crate::onnx::tensor::tensor_of_dtype(t.dtype(), vec![c], &rep)
            .map_err(|e| n.unsupported(e.to_string()))
    };
    let scale = per_channel(scale)?;
    let bias = per_channel(bias)?;
    let scale = b.add_constant(&n.hint("scale"), scale);
    let bias = b.add_constant(&n.hint("bias"), bias);
    n.emit_with(b, op, vec![Some(x), Some(scale), Some(bias)]);
    Ok(())
}

pub(super) fn lp_norm(b: &mut Builder, n: &NodeCtx) -> Result<(), ImportError> {
    n.expect_inputs(1, 1)?;
    n.expect_outputs(1, 1)?;
    let p = n.attrs.int_or("p", 2)?;
    if p != 1 && p != 2 {
        return Err(n.attrs.err("p", format!("must be 1 or 2, found {p}")));
    }
    let op = Op::LpNorm {
        axis: n.attrs.int_or("axis", -1)?,
        p: p as u64,
    };
    n.emit(b, op);
    Ok(())
}

pub(super) fn lrn(b: &mut Builder, n: &NodeCtx) -> Result<(), ImportError> {
    n.expect_inputs(1, 1)?;
    n.expect_outputs(1, 1)?;
    let a = &n.attrs;
    let size = a
        .int("size")?
        .ok_or_else(|| a.err("size", "required but missing"))?;
    let size = u64::try_from(size)
        .ok()
        .filter(|&s| s > 0)
        .ok_or_else(|| a.err("size", "must be positive"))?;
    let op = Op::Lrn {
        alpha: Float(a.float_or("alpha", 1e-4)?),
        beta: Float(a.float_or("beta", 0.75)?),
        bias: Float(a.float_or("bias", 1.0)?),
        size,
    };
    n.emit(b, op);
    Ok(())
}

pub(super) fn mvn(b: &mut Builder, n: &NodeCtx) -> Result<(), ImportError> {
    n.expect_inputs(1, 1)?;
    n.expect_outputs(1, 1)?;
    let axes = n.attrs.ints("axes")?.unwrap_or_else(|| vec![0, 2, 3]);
    n.emit(b, Op::MeanVarianceNorm { axes });
    Ok(())
}

fn softmax_op(op_type: &str, axis: i64) -> Op {
    match op_type {
        "LogSoftmax" => Op::LogSoftmax { axis },
        "Hardmax" => Op::Hardmax { axis },
        _ => Op::Softmax { axis },
    }
}

pub(super) fn softmax(b: &mut Builder, n: &NodeCtx) -> Result<(), ImportError> {
    n.expect_inputs(1, 1)?;
    n.expect_outputs(1, 1)?;
    if n.opset >= 13 {
        let axis = n.attrs.int_or("axis", -1)?;
        n.emit(b, softmax_op(n.op_type(), axis));
        return Ok(());
    }
    // Before opset 13 the input is coerced to 2-d at `axis` and the op runs
    // over the flattened trailing block. That equals the one-axis op only
    // when `axis` is the last axis; otherwise the op runs on a reshaped view.
    let axis = n.attrs.int_or("axis", 1)?;
    let x = n.input(0)?;
    let ty = b.known_type(x).cloned();
    let rank = ty.as_ref().map(|t| t.shape.rank() as i64);
    let is_last = axis == -1 || rank.is_some_and(|r| axis == r - 1 || (r == 0 && axis == 0));
    if is_last {
        n.emit(b, softmax_op(n.op_type(), -1));
        return Ok(());
    }
    let name = n.proto.name.as_str();
    // When the rank is known and the coerced trailing dims are fixed (the
    // usual case: symbols are batch/sequence dims in front), reshape with
    // constant shapes whose 0s copy the leading dims: inference then keeps
    // every dimension, symbols included.
    if let (Some(ty), Some(r)) = (&ty, rank) {
        let k = if axis < 0 { axis + r } else { axis };
        let trailing: Option<Vec<i64>> = (0..r)
            .contains(&k)
            .then(|| {
                ty.shape.0[k as usize..]
                    .iter()
                    .map(|d| {
                        d.fixed()
                            .filter(|&v| v > 0)
                            .and_then(|v| i64::try_from(v).ok())
                    })
                    .collect::<Option<Vec<i64>>>()
            })
            .flatten();
        if let Some(trailing) = trailing {
            let mut flat_shape = vec![0i64; k as usize];
            flat_shape.push(-1);
            let mut back_shape = vec![0i64; k as usize];
            back_shape.extend(&trailing);
            let flat_shape = b.const_i64s(&n.hint("flat_shape"), &flat_shape);
            let back_shape = b.const_i64s(&n.hint("shape"), &back_shape);
            let reshape = Op::Reshape { allowzero: false };
            let flat = b.emit_tmp(
                name,
                reshape.clone(),
                vec![Some(x), Some(flat_shape)],
                &n.hint("flat"),
            );
            let y = b.emit_tmp(
                name,
                softmax_op(n.op_type(), k),
                vec![Some(flat)],
                &n.hint("coerced"),
            );
            n.emit_with(b, reshape, vec![Some(y), Some(back_shape)]);
            return Ok(());
        }
    }
    // General case: Flatten(axis) → op(axis=1) → Reshape back to Shape(x).
    let shape = b.emit_tmp(
        name,
        Op::Shape {
            start: 0,
            end: None,
        },
        vec![Some(x)],
        &n.hint("shape"),
    );
    let flat = b.emit_tmp(name, Op::Flatten { axis }, vec![Some(x)], &n.hint("flat"));
    let y2 = b.emit_tmp(
        name,
        softmax_op(n.op_type(), 1),
        vec![Some(flat)],
        &n.hint("2d"),
    );
    // allowzero: the shape is exact, so a 0 is a real zero-sized dimension.
    n.emit_with(
        b,
        Op::Reshape { allowzero: true },
        vec![Some(y2), Some(shape)],
    );
    Ok(())
}
