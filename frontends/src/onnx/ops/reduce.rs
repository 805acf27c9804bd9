//! Reductions, arg-reductions, cumulative ops and TopK.

use super::NodeCtx;
use crate::error::ImportError;
use crate::onnx::builder::Builder;
use kiln_ir::{Op, ReduceKind};

/// The ReduceX ops.
pub(super) const REDUCE: &[&str] = &[
    "ReduceSum",
    "ReduceMean",
    "ReduceMax",
    "ReduceMin",
    "ReduceProd",
    "ReduceL1",
    "ReduceL2",
    "ReduceLogSum",
    "ReduceLogSumExp",
    "ReduceSumSquare",
];

pub(super) fn reduce(b: &mut Builder, n: &NodeCtx) -> Result<(), ImportError> {
    n.expect_outputs(1, 1)?;
    let kind = match n.op_type() {
        "ReduceSum" => ReduceKind::Sum,
        "ReduceMean" => ReduceKind::Mean,
        "ReduceMax" => ReduceKind::Max,
        "ReduceMin" => ReduceKind::Min,
        "ReduceProd" => ReduceKind::Prod,
        "ReduceL1" => ReduceKind::L1,
        "ReduceL2" => ReduceKind::L2,
        "ReduceLogSum" => ReduceKind::LogSum,
        "ReduceLogSumExp" => ReduceKind::LogSumExp,
        "ReduceSumSquare" => ReduceKind::SumSquare,
        other => unreachable!("dispatch table sent {other} to reduce"),
    };
    let keepdims = n.attrs.flag("keepdims", true)?;
    // ReduceSum moved axes to an input in opset 13, the others in opset 18.
    let axes_as_input = if kind == ReduceKind::Sum {
        n.opset >= 13
    } else {
        n.opset >= 18
    };
    let op = if axes_as_input {
        n.expect_inputs(1, 2)?;
        Op::Reduce {
            kind,
            axes: None,
            keepdims,
            noop_with_empty_axes: n.attrs.flag("noop_with_empty_axes", false)?,
        }
    } else {
        n.expect_inputs(1, 1)?;
        // An empty attribute list meant "all axes" in the attribute form.
        let axes = n.attrs.ints("axes")?.filter(|a| !a.is_empty());
        Op::Reduce {
            kind,
            axes,
            keepdims,
            noop_with_empty_axes: false,
        }
    };
    n.emit(b, op);
    Ok(())
}

pub(super) fn arg_reduce(b: &mut Builder, n: &NodeCtx) -> Result<(), ImportError> {
    n.expect_inputs(1, 1)?;
    n.expect_outputs(1, 1)?;
    let op = Op::ArgReduce {
        max: n.op_type() == "ArgMax",
        axis: n.attrs.int_or("axis", 0)?,
        keepdims: n.attrs.flag("keepdims", true)?,
        select_last_index: n.attrs.flag("select_last_index", false)?,
    };
    n.emit(b, op);
    Ok(())
}

pub(super) fn cumulative(b: &mut Builder, n: &NodeCtx) -> Result<(), ImportError> {
    n.expect_inputs(2, 2)?;
    n.expect_outputs(1, 1)?;
    let exclusive = n.attrs.flag("exclusive", false)?;
    let reverse = n.attrs.flag("reverse", false)?;
    let op = if n.op_type() == "CumSum" {
        Op::CumSum { exclusive, reverse }
    } else {
        Op::CumProd { exclusive, reverse }
    };
    n.emit(b, op);
    Ok(())
}

pub(super) fn top_k(b: &mut Builder, n: &NodeCtx) -> Result<(), ImportError> {
    n.expect_outputs(2, 2)?;
    let op = Op::TopK {
        axis: n.attrs.int_or("axis", -1)?,
        largest: n.attrs.flag("largest", true)?,
        sorted: n.attrs.flag("sorted", true)?,
    };
    if n.opset >= 10 {
        n.expect_inputs(2, 2)?;
        n.emit(b, op);
    } else {
        // Opset 1-9: k is an attribute; opset 10 made it a 1-element i64 input.
        n.expect_inputs(1, 1)?;
        let k = n.attrs.req_int("k")?;
        let k = b.const_i64s(&n.hint("k"), &[k]);
        n.emit_with(b, op, vec![Some(n.input(0)?), Some(k)]);
    }
    Ok(())
}
