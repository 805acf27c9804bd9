//! Numpy (multidirectional) broadcasting over shapes with symbolic dimensions.

use super::InferError;
use crate::{Dim, Shape};

/// Broadcasts two shapes with numpy rules, extended to symbolic dimensions.
///
/// Shapes are right-aligned; per dimension: `1` with anything gives the
/// other; equal dimensions give themselves; two fixed sizes that differ and
/// are not 1 are an error ("cannot broadcast [2,3] with [4,3]"); a symbol or
/// unknown against a fixed `n ≠ 1` gives `n` (the symbol must be 1 or `n`
/// at run time, and the result is `n` either way); two different symbols, or
/// a symbol and an unknown, give [`Dim::Unknown`].
pub fn broadcast_shapes(a: &Shape, b: &Shape) -> Result<Shape, InferError> {
    broadcast_pair(a, b).map_err(|message| InferError {
        op: "broadcast".into(),
        message,
    })
}

/// [`broadcast_shapes`] with the message alone, for callers that attribute it to an op.
pub(crate) fn broadcast_pair(a: &Shape, b: &Shape) -> Result<Shape, String> {
    let r = a.rank().max(b.rank());
    let one = Dim::Fixed(1);
    let at = |s: &'_ Shape, i: usize| -> Dim {
        // Right-align: missing leading dimensions act as 1.
        let pad = r - s.rank();
        if i < pad {
            one.clone()
        } else {
            s.0[i - pad].clone()
        }
    };
    (0..r)
        .map(|i| {
            broadcast_dim(&at(a, i), &at(b, i))
                .ok_or_else(|| format!("cannot broadcast {a} with {b}"))
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Shape)
}

/// Broadcasts one pair of dimensions; `None` for two different fixed sizes, neither 1.
pub(crate) fn broadcast_dim(a: &Dim, b: &Dim) -> Option<Dim> {
    match (a, b) {
        (Dim::Fixed(1), x) | (x, Dim::Fixed(1)) => Some(x.clone()),
        (Dim::Fixed(x), Dim::Fixed(y)) => (x == y).then_some(Dim::Fixed(*x)),
        (Dim::Fixed(n), _) | (_, Dim::Fixed(n)) => Some(Dim::Fixed(*n)),
        (Dim::Sym(x), Dim::Sym(y)) if x == y => Some(a.clone()),
        _ => Some(Dim::Unknown),
    }
}

/// Broadcasts any number of shapes (left fold of [`broadcast_pair`]).
pub(crate) fn broadcast_all<'s>(
    shapes: impl IntoIterator<Item = &'s Shape>,
) -> Result<Shape, String> {
    let mut acc = Shape::scalar();
    for s in shapes {
        acc = broadcast_pair(&acc, s)?;
    }
    Ok(acc)
}

/// Checks that `from` broadcasts to `to` without changing `to`
/// (ONNX unidirectional broadcasting, e.g. Gemm's C or a norm's scale).
pub(crate) fn check_unidirectional(from: &Shape, to: &Shape) -> Result<(), String> {
    let bad = || format!("{from} does not broadcast to {to}");
    if from.rank() > to.rank() {
        return Err(bad());
    }
    let pad = to.rank() - from.rank();
    for (i, d) in from.0.iter().enumerate() {
        if let (Dim::Fixed(x), Dim::Fixed(y)) = (d, &to.0[pad + i]) {
            if *x != 1 && x != y {
                return Err(bad());
            }
        }
    }
    Ok(())
}
