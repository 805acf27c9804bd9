//! Helpers shared by the inference tests: compact type specs like `f32[N,3,?]`.
#![allow(dead_code)]

use kiln_ir::infer::{infer_node, infer_node_with_outputs};
use kiln_ir::{DType, Dim, Op, Shape, Tensor, ValueType};

/// Parses `f32[N,3,?]`: numbers are fixed, `?` unknown, names symbols.
pub fn ty(spec: &str) -> ValueType {
    let (d, rest) = spec.split_once('[').expect("spec has a [");
    let dims = rest.trim_end_matches(']');
    let dims = if dims.is_empty() {
        vec![]
    } else {
        dims.split(',')
            .map(|x| match x.trim() {
                "?" => Dim::Unknown,
                x => x
                    .parse()
                    .map(Dim::Fixed)
                    .unwrap_or_else(|_| Dim::Sym(x.to_string())),
            })
            .collect()
    };
    ValueType::new(d.parse::<DType>().unwrap(), Shape(dims))
}

/// An operand: a type, a constant, or absent.
pub enum Arg {
    Ty(ValueType),
    Const(Tensor),
    Absent,
}

/// An operand of this type.
pub fn a(spec: &str) -> Arg {
    Arg::Ty(ty(spec))
}

/// A constant operand.
pub fn k(t: Tensor) -> Arg {
    Arg::Const(t)
}

/// An absent optional operand.
pub fn none() -> Arg {
    Arg::Absent
}

/// A 1-d i64 tensor.
pub fn ints(v: &[i64]) -> Tensor {
    Tensor::from_vec(vec![v.len()], v.to_vec()).unwrap()
}

/// A 1-d f32 tensor.
pub fn floats(v: &[f32]) -> Tensor {
    Tensor::from_vec(vec![v.len()], v.to_vec()).unwrap()
}

fn run(op: &Op, args: &[Arg], n: Option<usize>) -> Result<String, String> {
    let tys: Vec<Option<ValueType>> = args
        .iter()
        .map(|x| match x {
            Arg::Ty(t) => Some(t.clone()),
            Arg::Const(t) => Some(ValueType::new(
                t.dtype(),
                Shape::fixed(&t.dims().iter().map(|&d| d as u64).collect::<Vec<_>>()),
            )),
            Arg::Absent => None,
        })
        .collect();
    let refs: Vec<Option<&ValueType>> = tys.iter().map(|t| t.as_ref()).collect();
    let consts: Vec<Option<&Tensor>> = args
        .iter()
        .map(|x| match x {
            Arg::Const(t) => Some(t),
            _ => None,
        })
        .collect();
    let out = match n {
        None => infer_node(op, &refs, &consts),
        Some(n) => infer_node_with_outputs(op, &refs, &consts, n),
    };
    out.map(|v| {
        v.iter()
            .map(|t| t.to_string())
            .collect::<Vec<_>>()
            .join(" ; ")
    })
    .map_err(|e| e.to_string())
}

/// Infers and prints the results as `f32[2,3] ; i64[2,3]`, or the error message.
pub fn infer(op: &Op, args: Vec<Arg>) -> Result<String, String> {
    run(op, &args, None)
}

/// Like [`infer`] for a node with `n` outputs.
pub fn infer_n(op: &Op, args: Vec<Arg>, n: usize) -> Result<String, String> {
    run(op, &args, Some(n))
}

/// Infers with plain typed operands.
pub fn infer_t(op: &Op, specs: &[&str]) -> Result<String, String> {
    run(op, &specs.iter().map(|s| a(s)).collect::<Vec<_>>(), None)
}

/// The error message, panicking if inference succeeded.
pub fn err(r: Result<String, String>) -> String {
    match r {
        Ok(v) => panic!("expected an error, got {v}"),
        Err(e) => e,
    }
}
