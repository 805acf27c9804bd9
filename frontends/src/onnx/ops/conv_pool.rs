//! Convolutions and pools.

use super::NodeCtx;
use crate::error::ImportError;
use crate::onnx::builder::Builder;
use kiln_ir::{AutoPad, Op, PoolKind, Window};

/// Reads the window attributes shared by convolutions and pools.
fn window(n: &NodeCtx, kernel_required: bool) -> Result<Window, ImportError> {
    let a = &n.attrs;
    let kernel_shape = a.uints("kernel_shape")?;
    if kernel_required && kernel_shape.is_empty() {
        return Err(a.err("kernel_shape", "required but missing"));
    }
    let w = Window {
        kernel_shape,
        strides: a.uints("strides")?,
        pads: a.uints("pads")?,
        dilations: a.uints("dilations")?,
        auto_pad: a.choice(
            "auto_pad",
            "NOTSET",
            &[
                ("NOTSET", AutoPad::NotSet),
                ("SAME_UPPER", AutoPad::SameUpper),
                ("SAME_LOWER", AutoPad::SameLower),
                ("VALID", AutoPad::Valid),
            ],
        )?,
    };
    // Catch inconsistent spatial ranks here, where the node can be named.
    let k = w.kernel_shape.len();
    if k > 0 {
        for (name, len, want) in [
            ("strides", w.strides.len(), k),
            ("dilations", w.dilations.len(), k),
            ("pads", w.pads.len(), 2 * k),
        ] {
            if len != 0 && len != want {
                return Err(a.err(name, format!("has {len} values, the kernel needs {want}")));
            }
        }
    }
    if w.strides.contains(&0) || w.dilations.contains(&0) {
        return Err(a.err("strides", "strides and dilations must be positive"));
    }
    Ok(w)
}

pub(super) fn conv(b: &mut Builder, n: &NodeCtx) -> Result<(), ImportError> {
    n.expect_inputs(2, 3)?;
    n.expect_outputs(1, 1)?;
    let window = window(n, false)?;
    let group = n.attrs.uint_or("group", 1)?;
    if group == 0 {
        return Err(n.attrs.err("group", "must be positive"));
    }
    let op = if n.op_type() == "Conv" {
        Op::Conv { window, group }
    } else {
        Op::ConvTranspose {
            window,
            group,
            output_padding: n.attrs.uints("output_padding")?,
            output_shape: n.attrs.uints("output_shape")?,
        }
    };
    n.emit(b, op);
    Ok(())
}

pub(super) fn pool(b: &mut Builder, n: &NodeCtx) -> Result<(), ImportError> {
    n.expect_inputs(1, 1)?;
    let max = n.op_type() == "MaxPool";
    if max {
        // storage_order only changes the indices output; the executor
        // computes row-major indices.
        if n.attrs.int_or("storage_order", 0)? != 0 {
            n.only_outputs(1, "MaxPool indices output with storage_order=1")?;
        }
        n.expect_outputs(1, 2)?;
    } else {
        n.expect_outputs(1, 1)?;
    }
    let window = window(n, true)?;
    let op = Op::Pool {
        kind: if max {
            PoolKind::Max
        } else {
            PoolKind::Average
        },
        window,
        ceil_mode: n.attrs.flag("ceil_mode", false)?,
        count_include_pad: if max {
            false
        } else {
            n.attrs.flag("count_include_pad", false)?
        },
    };
    n.emit(b, op);
    Ok(())
}

pub(super) fn global_pool(b: &mut Builder, n: &NodeCtx) -> Result<(), ImportError> {
    n.expect_inputs(1, 1)?;
    n.expect_outputs(1, 1)?;
    let kind = if n.op_type() == "GlobalMaxPool" {
        PoolKind::Max
    } else {
        PoolKind::Average
    };
    n.emit(b, Op::GlobalPool { kind });
    Ok(())
}
