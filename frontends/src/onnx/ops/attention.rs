//! Attention (opsets 23-25) and RotaryEmbedding (opset 23).

use super::elementwise::dtype_attr;
use super::NodeCtx;
use crate::error::ImportError;
use crate::onnx::builder::Builder;
use kiln_ir::{Float, Op};

/// First default-domain opset with `Attention` and `RotaryEmbedding`.
const SINCE: i64 = 23;

fn check_opset(n: &NodeCtx) -> Result<(), ImportError> {
    if n.opset < SINCE {
        return Err(n.unsupported(format!(
            "{} before opset {SINCE} (the operator was added in opset {SINCE})",
            n.op_type()
        )));
    }
    Ok(())
}

pub(super) fn attention(b: &mut Builder, n: &NodeCtx) -> Result<(), ImportError> {
    check_opset(n)?;
    // Opset 24 added nonpad_kv_seqlen (input 6).
    n.expect_inputs(3, if n.opset >= 24 { 7 } else { 6 })?;
    n.expect_outputs(1, 4)?;
    let a = &n.attrs;
    // Opset 25's sliding window; -1 (unbounded) on both sides is plain attention.
    for w in ["left_window_size", "right_window_size"] {
        match a.int(w)? {
            None | Some(-1) => {}
            Some(v) => {
                return Err(n.unsupported(format!("Attention with {w} = {v} (sliding window)")))
            }
        }
    }
    let heads = |name: &str| -> Result<i64, ImportError> {
        match a.int(name)? {
            None => Ok(0),
            Some(v) if v > 0 => Ok(v),
            Some(v) => Err(a.err(name, format!("expected a positive head count, found {v}"))),
        }
    };
    let qk_matmul_output_mode = a.int_or("qk_matmul_output_mode", 0)?;
    if !(0..=3).contains(&qk_matmul_output_mode) {
        return Err(a.err(
            "qk_matmul_output_mode",
            format!("expected 0 to 3, found {qk_matmul_output_mode}"),
        ));
    }
    let softmax_precision = match a.int("softmax_precision")? {
        None => None,
        Some(code) => {
            let dt = dtype_attr(n, "softmax_precision", code)?;
            if !dt.is_float() {
                return Err(a.err(
                    "softmax_precision",
                    format!("expected a floating-point type, found {dt}"),
                ));
            }
            Some(dt)
        }
    };
    let op = Op::Attention {
        is_causal: a.flag("is_causal", false)?,
        q_num_heads: heads("q_num_heads")?,
        kv_num_heads: heads("kv_num_heads")?,
        scale: a.float("scale")?.map(Float),
        softcap: Float(a.float_or("softcap", 0.0)?),
        qk_matmul_output_mode,
        softmax_precision,
    };
    n.emit(b, op);
    Ok(())
}

pub(super) fn rotary_embedding(b: &mut Builder, n: &NodeCtx) -> Result<(), ImportError> {
    check_opset(n)?;
    n.expect_inputs(3, 4)?;
    n.expect_outputs(1, 1)?;
    let a = &n.attrs;
    let num_heads = a.int_or("num_heads", 0)?;
    if num_heads < 0 {
        return Err(a.err(
            "num_heads",
            format!("expected 0 or more, found {num_heads}"),
        ));
    }
    let rotary_embedding_dim = a.int_or("rotary_embedding_dim", 0)?;
    if rotary_embedding_dim < 0 || rotary_embedding_dim % 2 != 0 {
        return Err(a.err(
            "rotary_embedding_dim",
            format!("expected 0 or a positive even number, found {rotary_embedding_dim}"),
        ));
    }
    let op = Op::RotaryEmbedding {
        interleaved: a.flag("interleaved", false)?,
        num_heads,
        rotary_embedding_dim,
    };
    n.emit(b, op);
    Ok(())
}
