//! Shape manipulation and data movement: Constant, Reshape, Slice, Pad,
//! gathers and scatters, Resize/Upsample, ...

use super::elementwise::dtype_attr;
use super::NodeCtx;
use crate::error::ImportError;
use crate::onnx::builder::Builder;
use kiln_ir::{
    CoordinateTransform, DType, DepthToSpaceMode, Float, KeepAspectRatio, Literal, NearestMode, Op,
    PadMode, ResizeAttrs, ResizeMode, ScatterReduction, Tensor, ValueId,
};

pub(super) fn constant(b: &mut Builder, n: &NodeCtx) -> Result<(), ImportError> {
    n.expect_inputs(0, 0)?;
    n.expect_outputs(1, 1)?;
    let a = &n.attrs;
    let name = n.outputs[0].as_str();
    let mut found: Vec<Tensor> = Vec::new();
    if let Some(t) = a.tensor("value")? {
        found.push(b.tensors.read(t, name)?);
    }
    if let Some(s) = a.sparse_tensor("sparse_value")? {
        found.push(b.tensors.read_sparse(s, name)?);
    }
    let bad = |e: kiln_ir::TensorError| a.err("value", e.to_string());
    if let Some(v) = a.float("value_float")? {
        found.push(Tensor::scalar(v));
    }
    if let Some(v) = a.floats("value_floats")? {
        found.push(Tensor::from_vec(vec![v.len()], v).map_err(bad)?);
    }
    if let Some(v) = a.int("value_int")? {
        found.push(Tensor::scalar(v));
    }
    if let Some(v) = a.ints("value_ints")? {
        found.push(Tensor::from_vec(vec![v.len()], v).map_err(bad)?);
    }
    if a.has("value_string") || a.has("value_strings") {
        return Err(n.unsupported("string constants"));
    }
    if found.len() != 1 {
        return Err(n.arity(format!(
            "a Constant needs exactly one value attribute, found {}",
            found.len()
        )));
    }
    let t = found.remove(0);
    // The constant keeps the model's name; it is not a node in the IR.
    b.add_named_constant(name, t);
    Ok(())
}

pub(super) fn reshape(b: &mut Builder, n: &NodeCtx) -> Result<(), ImportError> {
    n.expect_inputs(2, 2)?;
    n.expect_outputs(1, 1)?;
    let allowzero = n.attrs.flag("allowzero", false)?;
    n.emit(b, Op::Reshape { allowzero });
    Ok(())
}

pub(super) fn shape(b: &mut Builder, n: &NodeCtx) -> Result<(), ImportError> {
    n.expect_inputs(1, 1)?;
    n.expect_outputs(1, 1)?;
    let op = Op::Shape {
        start: n.attrs.int_or("start", 0)?,
        end: n.attrs.int("end")?,
    };
    n.emit(b, op);
    Ok(())
}

pub(super) fn size(b: &mut Builder, n: &NodeCtx) -> Result<(), ImportError> {
    n.expect_inputs(1, 1)?;
    n.expect_outputs(1, 1)?;
    n.emit(b, Op::Size);
    Ok(())
}

pub(super) fn flatten(b: &mut Builder, n: &NodeCtx) -> Result<(), ImportError> {
    n.expect_inputs(1, 1)?;
    n.expect_outputs(1, 1)?;
    let axis = n.attrs.int_or("axis", 1)?;
    n.emit(b, Op::Flatten { axis });
    Ok(())
}

pub(super) fn squeeze(b: &mut Builder, n: &NodeCtx) -> Result<(), ImportError> {
    n.expect_outputs(1, 1)?;
    let squeeze = n.op_type() == "Squeeze";
    // Opset 13 moved axes from an attribute to input 1.
    let axes = if n.opset >= 13 {
        n.expect_inputs(if squeeze { 1 } else { 2 }, 2)?;
        None
    } else {
        n.expect_inputs(1, 1)?;
        let axes = n.attrs.ints("axes")?;
        if !squeeze && axes.is_none() {
            return Err(n.attrs.err("axes", "required but missing"));
        }
        axes
    };
    let op = if squeeze {
        Op::Squeeze { axes }
    } else {
        Op::Unsqueeze { axes }
    };
    n.emit(b, op);
    Ok(())
}

pub(super) fn transpose(b: &mut Builder, n: &NodeCtx) -> Result<(), ImportError> {
    n.expect_inputs(1, 1)?;
    n.expect_outputs(1, 1)?;
    let perm = n.attrs.ints("perm")?;
    n.emit(b, Op::Transpose { perm });
    Ok(())
}

pub(super) fn concat(b: &mut Builder, n: &NodeCtx) -> Result<(), ImportError> {
    n.expect_inputs(1, usize::MAX)?;
    if n.inputs.iter().any(Option::is_none) {
        return Err(n.arity("Concat inputs cannot be absent"));
    }
    n.expect_outputs(1, 1)?;
    let axis = n.attrs.req_int("axis")?;
    n.emit(b, Op::Concat { axis });
    Ok(())
}

pub(super) fn split(b: &mut Builder, n: &NodeCtx) -> Result<(), ImportError> {
    n.expect_outputs(1, usize::MAX)?;
    if n.outputs.iter().any(String::is_empty) {
        return Err(n.arity("Split outputs cannot be absent"));
    }
    let axis = n.attrs.int_or("axis", 0)?;
    let split = if n.opset >= 13 {
        n.expect_inputs(1, 2)?;
        // Opset 18's num_outputs only restates the number of outputs; the
        // IR derives it from the node.
        if let Some(k) = n.attrs.int("num_outputs")? {
            if n.opt_input(1).is_some() {
                return Err(n.attrs.err(
                    "num_outputs",
                    "cannot be given together with the split input",
                ));
            }
            if usize::try_from(k).ok() != Some(n.outputs.len()) {
                return Err(n.attrs.err(
                    "num_outputs",
                    format!("is {k} but the node has {} outputs", n.outputs.len()),
                ));
            }
        }
        None
    } else {
        n.expect_inputs(1, 1)?;
        n.attrs.ints("split")?.filter(|s| !s.is_empty())
    };
    n.emit(b, Op::Split { axis, split });
    Ok(())
}

pub(super) fn slice(b: &mut Builder, n: &NodeCtx) -> Result<(), ImportError> {
    n.expect_outputs(1, 1)?;
    if n.opset >= 10 {
        n.expect_inputs(3, 5)?;
        n.emit(b, Op::Slice);
        return Ok(());
    }
    // Opset 1-9: starts/ends/axes are attributes; they become i64 inputs.
    n.expect_inputs(1, 1)?;
    let a = &n.attrs;
    let starts = a
        .ints("starts")?
        .ok_or_else(|| a.err("starts", "required but missing"))?;
    let ends = a
        .ints("ends")?
        .ok_or_else(|| a.err("ends", "required but missing"))?;
    let axes = a.ints("axes")?;
    if ends.len() != starts.len() || axes.as_ref().is_some_and(|x| x.len() != starts.len()) {
        return Err(a.err("ends", "starts, ends and axes must have the same length"));
    }
    let s = b.const_i64s(&n.hint("starts"), &starts);
    let e = b.const_i64s(&n.hint("ends"), &ends);
    let ax = axes.map(|x| b.const_i64s(&n.hint("axes"), &x));
    n.emit_with(b, Op::Slice, vec![Some(n.input(0)?), Some(s), Some(e), ax]);
    Ok(())
}

pub(super) fn gather(b: &mut Builder, n: &NodeCtx) -> Result<(), ImportError> {
    n.expect_inputs(2, 2)?;
    n.expect_outputs(1, 1)?;
    let op = match n.op_type() {
        "Gather" => Op::Gather {
            axis: n.attrs.int_or("axis", 0)?,
        },
        "GatherElements" => Op::GatherElements {
            axis: n.attrs.int_or("axis", 0)?,
        },
        _ => Op::GatherNd {
            batch_dims: n.attrs.int_or("batch_dims", 0)?,
        },
    };
    n.emit(b, op);
    Ok(())
}

pub(super) fn scatter(b: &mut Builder, n: &NodeCtx) -> Result<(), ImportError> {
    n.expect_inputs(3, 3)?;
    n.expect_outputs(1, 1)?;
    let reduction = n.attrs.choice(
        "reduction",
        "none",
        &[
            ("none", ScatterReduction::None),
            ("add", ScatterReduction::Add),
            ("mul", ScatterReduction::Mul),
            ("max", ScatterReduction::Max),
            ("min", ScatterReduction::Min),
        ],
    )?;
    let op = match n.op_type() {
        // Scatter (opset 9-10) is ScatterElements without reduction.
        "Scatter" | "ScatterElements" => Op::ScatterElements {
            axis: n.attrs.int_or("axis", 0)?,
            reduction,
        },
        _ => Op::ScatterNd { reduction },
    };
    n.emit(b, op);
    Ok(())
}

/// Ops whose inputs map one to one and that have no attribute to read.
pub(super) fn plain(b: &mut Builder, n: &NodeCtx) -> Result<(), ImportError> {
    n.expect_outputs(1, 1)?;
    let (arity, op) = match n.op_type() {
        "Expand" => (2, Op::Expand),
        "Tile" => (2, Op::Tile),
        "Range" => {
            // stash_type (opset 27) only picks the accumulation precision.
            n.attrs.ignore(&["stash_type"]);
            (3, Op::Range)
        }
        _ => (1, Op::NonZero),
    };
    n.expect_inputs(arity, arity)?;
    n.emit(b, op);
    Ok(())
}

pub(super) fn pad(b: &mut Builder, n: &NodeCtx) -> Result<(), ImportError> {
    n.expect_outputs(1, 1)?;
    let mode = n.attrs.choice(
        "mode",
        "constant",
        &[
            ("constant", PadMode::Constant),
            ("reflect", PadMode::Reflect),
            ("edge", PadMode::Edge),
            ("wrap", PadMode::Wrap),
        ],
    )?;
    let op = Op::Pad { mode };
    if n.opset >= 11 {
        n.expect_inputs(2, 4)?;
        n.emit(b, op);
        return Ok(());
    }
    // Opset 2-10: pads and value are attributes; they become inputs.
    n.expect_inputs(1, 1)?;
    let x = n.input(0)?;
    let pads = n
        .attrs
        .ints("pads")?
        .ok_or_else(|| n.attrs.err("pads", "required but missing"))?;
    let value = n.attrs.float_or("value", 0.0)?;
    let at = b.next_node_index();
    let pads = b.const_i64s(&n.hint("pads"), &pads);
    let value = (mode == PadMode::Constant && value != 0.0)
        .then(|| b.const_like(&n.hint("value"), vec![], &[f64::from(value)], x, at));
    n.emit_with(b, op, vec![Some(x), Some(pads), value]);
    Ok(())
}

/// The scalar literal and dtype of a one-element tensor.
fn literal_of(t: &Tensor) -> Option<(Literal, DType)> {
    if t.len() != 1 {
        return None;
    }
    let d = t.dtype();
    let lit = if d.is_float() {
        Literal::float(t.to_f64_vec()[0])
    } else if d == DType::Bool {
        Literal::Bool(t.bytes()[0] != 0)
    } else if d == DType::U64 {
        let v = t.to_vec::<u64>().ok()?[0];
        i64::try_from(v)
            .map(Literal::Int)
            .unwrap_or(Literal::UInt(v))
    } else {
        Literal::Int(t.to_i64_vec()[0])
    };
    Some((lit, d))
}

pub(super) fn constant_of_shape(b: &mut Builder, n: &NodeCtx) -> Result<(), ImportError> {
    n.expect_inputs(1, 1)?;
    n.expect_outputs(1, 1)?;
    let (value, dtype) = match n.attrs.tensor("value")? {
        None => (Literal::float(0.0), DType::F32),
        Some(t) => {
            let t = b.tensors.read(t, &n.hint("value"))?;
            literal_of(&t).ok_or_else(|| {
                n.attrs
                    .err("value", format!("must hold one element, holds {}", t.len()))
            })?
        }
    };
    n.emit(b, Op::ConstantOfShape { value, dtype });
    Ok(())
}

pub(super) fn trilu(b: &mut Builder, n: &NodeCtx) -> Result<(), ImportError> {
    n.expect_inputs(1, 2)?;
    n.expect_outputs(1, 1)?;
    let upper = n.attrs.flag("upper", true)?;
    n.emit(b, Op::Trilu { upper });
    Ok(())
}

pub(super) fn one_hot(b: &mut Builder, n: &NodeCtx) -> Result<(), ImportError> {
    n.expect_inputs(3, 3)?;
    n.expect_outputs(1, 1)?;
    let axis = n.attrs.int_or("axis", -1)?;
    n.emit(b, Op::OneHot { axis });
    Ok(())
}

pub(super) fn eye_like(b: &mut Builder, n: &NodeCtx) -> Result<(), ImportError> {
    n.expect_inputs(1, 1)?;
    n.expect_outputs(1, 1)?;
    let dtype = match n.attrs.int("dtype")? {
        Some(code) => Some(dtype_attr(n, "dtype", code)?),
        None => None,
    };
    let k = n.attrs.int_or("k", 0)?;
    n.emit(b, Op::EyeLike { dtype, k });
    Ok(())
}

pub(super) fn compress(b: &mut Builder, n: &NodeCtx) -> Result<(), ImportError> {
    n.expect_inputs(2, 2)?;
    n.expect_outputs(1, 1)?;
    let axis = n.attrs.int("axis")?;
    n.emit(b, Op::Compress { axis });
    Ok(())
}

pub(super) fn depth_space(b: &mut Builder, n: &NodeCtx) -> Result<(), ImportError> {
    n.expect_inputs(1, 1)?;
    n.expect_outputs(1, 1)?;
    let blocksize = n
        .attrs
        .int("blocksize")?
        .ok_or_else(|| n.attrs.err("blocksize", "required but missing"))?;
    let blocksize = u64::try_from(blocksize)
        .ok()
        .filter(|&s| s > 0)
        .ok_or_else(|| n.attrs.err("blocksize", "must be positive"))?;
    let mode = n.attrs.choice(
        "mode",
        "DCR",
        &[
            ("DCR", DepthToSpaceMode::Dcr),
            ("CRD", DepthToSpaceMode::Crd),
        ],
    )?;
    let op = if n.op_type() == "DepthToSpace" {
        Op::DepthToSpace { blocksize, mode }
    } else {
        // SpaceToDepth gained `mode` in opset 28; the IR only has the DCR order.
        if mode != DepthToSpaceMode::Dcr {
            return Err(n.unsupported("SpaceToDepth with mode=CRD"));
        }
        Op::SpaceToDepth { blocksize }
    };
    n.emit(b, op);
    Ok(())
}

/// Input `i` as an optional input, treating a constant with no element
/// ("no scales", "no roi" in opset 11-12 models) as absent.
fn non_empty_input(b: &Builder, n: &NodeCtx, i: usize) -> Option<ValueId> {
    let v = n.opt_input(i)?;
    match b.g.constant(v) {
        Some(t) if t.is_empty() => None,
        _ => Some(v),
    }
}

/// The Resize attributes a legacy (Upsample, Resize-10) node implies.
fn legacy_resize_attrs(mode: ResizeMode) -> ResizeAttrs {
    ResizeAttrs {
        mode,
        // Upsample and Resize-10 compute x_in = x_out / scale, rounding
        // down in nearest mode (as the onnx 10→11 version converter does).
        coordinate_transform: CoordinateTransform::Asymmetric,
        nearest_mode: NearestMode::Floor,
        cubic_coeff_a: Float(-0.75),
        exclude_outside: false,
        extrapolation_value: Float(0.0),
        axes: Vec::new(),
        keep_aspect_ratio: KeepAspectRatio::Stretch,
        antialias: false,
    }
}

fn resize_mode(n: &NodeCtx, legacy: bool) -> Result<ResizeMode, ImportError> {
    let mut choices = vec![
        ("nearest", ResizeMode::Nearest),
        ("linear", ResizeMode::Linear),
    ];
    if legacy {
        // Upsample-7 documents "bilinear" as a synonym of linear.
        choices.push(("bilinear", ResizeMode::Linear));
    } else {
        choices.push(("cubic", ResizeMode::Cubic));
    }
    n.attrs.choice("mode", "nearest", &choices)
}

pub(super) fn resize(b: &mut Builder, n: &NodeCtx) -> Result<(), ImportError> {
    n.expect_outputs(1, 1)?;
    if n.opset < 11 {
        // Resize-10: X, scales.
        n.expect_inputs(2, 2)?;
        let attrs = legacy_resize_attrs(resize_mode(n, true)?);
        n.emit_with(
            b,
            Op::Resize(attrs),
            vec![Some(n.input(0)?), None, Some(n.input(1)?)],
        );
        return Ok(());
    }
    n.expect_inputs(1, 4)?;
    let a = &n.attrs;
    let mut transforms = vec![
        ("half_pixel", CoordinateTransform::HalfPixel),
        ("pytorch_half_pixel", CoordinateTransform::PytorchHalfPixel),
        ("align_corners", CoordinateTransform::AlignCorners),
        ("asymmetric", CoordinateTransform::Asymmetric),
        ("tf_crop_and_resize", CoordinateTransform::TfCropAndResize),
    ];
    if n.opset >= 19 {
        transforms.push((
            "half_pixel_symmetric",
            CoordinateTransform::HalfPixelSymmetric,
        ));
    }
    // tf_half_pixel_for_nn (opset 11-12) has no IR counterpart and is rejected here.
    let attrs = ResizeAttrs {
        mode: resize_mode(n, false)?,
        coordinate_transform: a.choice(
            "coordinate_transformation_mode",
            "half_pixel",
            &transforms,
        )?,
        nearest_mode: a.choice(
            "nearest_mode",
            "round_prefer_floor",
            &[
                ("round_prefer_floor", NearestMode::RoundPreferFloor),
                ("round_prefer_ceil", NearestMode::RoundPreferCeil),
                ("floor", NearestMode::Floor),
                ("ceil", NearestMode::Ceil),
            ],
        )?,
        cubic_coeff_a: Float(a.float_or("cubic_coeff_a", -0.75)?),
        exclude_outside: a.flag("exclude_outside", false)?,
        extrapolation_value: Float(a.float_or("extrapolation_value", 0.0)?),
        axes: a.ints("axes")?.unwrap_or_default(),
        keep_aspect_ratio: a.choice(
            "keep_aspect_ratio_policy",
            "stretch",
            &[
                ("stretch", KeepAspectRatio::Stretch),
                ("not_larger", KeepAspectRatio::NotLarger),
                ("not_smaller", KeepAspectRatio::NotSmaller),
            ],
        )?,
        antialias: a.flag("antialias", false)?,
    };
    let roi = if attrs.coordinate_transform == CoordinateTransform::TfCropAndResize {
        n.opt_input(1)
    } else {
        // roi only matters for tf_crop_and_resize; drop it so the IR op
        // does not depend on an unused operand.
        None
    };
    let inputs = vec![
        Some(n.input(0)?),
        roi,
        non_empty_input(b, n, 2),
        non_empty_input(b, n, 3),
    ];
    n.emit_with(b, Op::Resize(attrs), inputs);
    Ok(())
}

pub(super) fn upsample(b: &mut Builder, n: &NodeCtx) -> Result<(), ImportError> {
    n.expect_outputs(1, 1)?;
    let attrs = legacy_resize_attrs(resize_mode(n, true)?);
    let x = n.input(0)?;
    let scales = if n.opset >= 9 {
        n.expect_inputs(2, 2)?;
        n.input(1)?
    } else {
        // Upsample-7: scales is an attribute; it becomes an f32 input.
        n.expect_inputs(1, 1)?;
        let s = n
            .attrs
            .floats("scales")?
            .ok_or_else(|| n.attrs.err("scales", "required but missing"))?;
        let t =
            Tensor::from_vec(vec![s.len()], s).map_err(|e| n.attrs.err("scales", e.to_string()))?;
        b.add_constant(&n.hint("scales"), t)
    };
    n.emit_with(b, Op::Resize(attrs), vec![Some(x), None, Some(scales)]);
    Ok(())
}
