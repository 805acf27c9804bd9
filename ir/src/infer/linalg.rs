//! Linear algebra: MatMul (numpy matmul), Gemm and Einsum.

use super::broadcast::{broadcast_dim, broadcast_pair, check_unidirectional};
use super::{unify, vt, Ctx, R};
use crate::{Dim, Shape, ValueType};
use std::collections::BTreeMap;

/// numpy matmul: 1-d operands are promoted (and the added axis removed),
/// leading batch dimensions broadcast, inner dimensions must agree.
pub(super) fn matmul(cx: &Ctx) -> R<ValueType> {
    cx.arity(2, 2)?;
    let (a, b) = (cx.input(0)?, cx.input(1)?);
    if b.dtype.is_quant() {
        // A packed [in, out] weight decodes to f32.
        if a.dtype != crate::DType::F32 {
            return Err(cx.err(format!(
                "a packed {} weight multiplies f32 activations, got {}",
                b.dtype, a.dtype
            )));
        }
    } else {
        cx.same_dtype(0, 1)?;
    }
    let (sa, sb) = (&a.shape.0, &b.shape.0);
    if sa.is_empty() || sb.is_empty() {
        return Err(cx.err(format!(
            "operands must have rank at least 1, got {} and {}",
            a.shape, b.shape
        )));
    }
    let (a_batch, m, ka) = match sa.len() {
        1 => (&sa[..0], None, &sa[0]),
        r => (&sa[..r - 2], Some(&sa[r - 2]), &sa[r - 1]),
    };
    let (b_batch, kb, n) = match sb.len() {
        1 => (&sb[..0], &sb[0], None),
        r => (&sb[..r - 2], &sb[r - 2], Some(&sb[r - 1])),
    };
    let _k = unify(ka, kb).ok_or_else(|| {
        cx.err(format!(
            "inner dimensions differ: {} x {} ({ka} vs {kb})",
            a.shape, b.shape
        ))
    })?;
    let batch =
        broadcast_pair(&Shape(a_batch.to_vec()), &Shape(b_batch.to_vec())).map_err(|m| {
            cx.err(format!(
                "batch dimensions of {} and {} do not broadcast: {m}",
                a.shape, b.shape
            ))
        })?;
    let mut out = batch.0;
    out.extend(m.cloned());
    out.extend(n.cloned());
    Ok(vt(a.dtype, out))
}

/// Gemm(A, B, C?): op(A) is M×K, op(B) is K×N, C broadcasts to M×N.
pub(super) fn gemm(cx: &Ctx, trans_a: bool, trans_b: bool) -> R<ValueType> {
    cx.arity(2, 3)?;
    let (a, b) = (cx.input(0)?, cx.input(1)?);
    cx.same_dtype(0, 1)?;
    for (i, t) in [(0, a), (1, b)] {
        if t.shape.rank() != 2 {
            return Err(cx.err(format!("operand {i} must be 2-d, got shape {}", t.shape)));
        }
    }
    let (sa, sb) = (&a.shape.0, &b.shape.0);
    let (m, ka) = if trans_a {
        (&sa[1], &sa[0])
    } else {
        (&sa[0], &sa[1])
    };
    let (kb, n) = if trans_b {
        (&sb[1], &sb[0])
    } else {
        (&sb[0], &sb[1])
    };
    unify(ka, kb).ok_or_else(|| {
        cx.err(format!(
            "inner dimensions differ: A {} (trans_a={trans_a}) x B {} (trans_b={trans_b})",
            a.shape, b.shape
        ))
    })?;
    let out = Shape(vec![m.clone(), n.clone()]);
    if let Some(c) = cx.opt(2) {
        cx.same_dtype(0, 2)?;
        check_unidirectional(&c.shape, &out).map_err(|e| cx.err(format!("C: {e}")))?;
    }
    Ok(ValueType::new(a.dtype, out))
}

/// One subscript of an einsum term.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Label {
    Letter(u8),
    Ellipsis,
}

/// A parsed einsum equation.
struct Equation {
    inputs: Vec<Vec<Label>>,
    /// `None` for the implicit form (no `->`).
    output: Option<Vec<Label>>,
}

fn parse_term(t: &str) -> Result<Vec<Label>, String> {
    let mut out = Vec::new();
    let b = t.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            c if c.is_ascii_alphabetic() => out.push(Label::Letter(c)),
            b'.' if b[i..].starts_with(b"...") => {
                if out.contains(&Label::Ellipsis) {
                    return Err(format!("term `{t}` has more than one ellipsis"));
                }
                out.push(Label::Ellipsis);
                i += 2;
            }
            c if c.is_ascii_whitespace() => {}
            c => {
                return Err(format!(
                    "unexpected character `{}` in term `{t}`",
                    c as char
                ))
            }
        }
        i += 1;
    }
    Ok(out)
}

fn parse_equation(eq: &str) -> Result<Equation, String> {
    let (lhs, rhs) = match eq.split_once("->") {
        Some((l, r)) => (l, Some(r)),
        None => (eq, None),
    };
    let inputs = lhs
        .split(',')
        .map(parse_term)
        .collect::<Result<Vec<_>, _>>()?;
    let output = rhs.map(parse_term).transpose()?;
    Ok(Equation { inputs, output })
}

/// Sizes in an einsum: every letter's size, the broadcast ellipsis dims, and the output shape.
pub(crate) struct EinsumInfo {
    /// Size of each distinct letter.
    pub labels: BTreeMap<u8, Dim>,
    /// Broadcast shape of the ellipsis dimensions.
    pub ellipsis: Vec<Dim>,
    /// Output shape.
    pub output: Vec<Dim>,
}

/// Binds an einsum equation to operand shapes.
pub(crate) fn einsum_analyze(eq: &str, shapes: &[&Shape]) -> Result<EinsumInfo, String> {
    let e = parse_equation(eq)?;
    if e.inputs.len() != shapes.len() {
        return Err(format!(
            "equation `{eq}` has {} input terms but there are {} operands",
            e.inputs.len(),
            shapes.len()
        ));
    }
    let mut labels: BTreeMap<u8, Dim> = BTreeMap::new();
    let mut counts: BTreeMap<u8, usize> = BTreeMap::new();
    let mut ellipsis = Shape::scalar();
    let mut any_ellipsis = false;
    for (term, shape) in e.inputs.iter().zip(shapes) {
        let letters = term
            .iter()
            .filter(|l| matches!(l, Label::Letter(_)))
            .count();
        let has_ell = term.contains(&Label::Ellipsis);
        let ell_rank = if has_ell {
            shape.rank().checked_sub(letters).ok_or_else(|| {
                format!("operand of shape {shape} has fewer dimensions than the term's {letters} letters")
            })?
        } else if shape.rank() != letters {
            return Err(format!(
                "operand of shape {shape} has rank {} but its term has {letters} letters",
                shape.rank()
            ));
        } else {
            0
        };
        let mut pos = 0;
        for l in term {
            match *l {
                Label::Letter(c) => {
                    let d = &shape.0[pos];
                    pos += 1;
                    *counts.entry(c).or_insert(0) += 1;
                    let merged = match labels.get(&c) {
                        // numpy einsum broadcasts size-1 dimensions of a repeated letter.
                        Some(prev) => broadcast_dim(prev, d).ok_or_else(|| {
                            format!("letter `{}` has sizes {prev} and {d}", c as char)
                        })?,
                        None => d.clone(),
                    };
                    labels.insert(c, merged);
                }
                Label::Ellipsis => {
                    any_ellipsis = true;
                    let part = Shape(shape.0[pos..pos + ell_rank].to_vec());
                    pos += ell_rank;
                    ellipsis = broadcast_pair(&ellipsis, &part)?;
                }
            }
        }
    }
    let output_labels = match e.output {
        Some(o) => {
            let mut seen = Vec::new();
            for l in &o {
                if let Label::Letter(c) = l {
                    if !labels.contains_key(c) {
                        return Err(format!(
                            "output letter `{}` does not appear in any input",
                            *c as char
                        ));
                    }
                    if seen.contains(c) {
                        return Err(format!("output letter `{}` is repeated", *c as char));
                    }
                    seen.push(*c);
                }
            }
            if !o.contains(&Label::Ellipsis) && ellipsis.rank() > 0 {
                return Err("inputs have ellipsis dimensions but the output has no `...`".into());
            }
            o
        }
        None => {
            // numpy's implicit output: the ellipsis, then letters used once, in ASCII order.
            let mut o = Vec::new();
            if any_ellipsis {
                o.push(Label::Ellipsis);
            }
            o.extend(
                counts
                    .iter()
                    .filter(|(_, &n)| n == 1)
                    .map(|(&c, _)| Label::Letter(c)),
            );
            o
        }
    };
    let mut output = Vec::new();
    for l in output_labels {
        match l {
            Label::Letter(c) => output.push(labels[&c].clone()),
            Label::Ellipsis => output.extend(ellipsis.0.iter().cloned()),
        }
    }
    Ok(EinsumInfo {
        labels,
        ellipsis: ellipsis.0,
        output,
    })
}

/// Einsum: operands of one dtype; output per the (explicit or implicit) equation.
pub(super) fn einsum(cx: &Ctx, equation: &str) -> R<ValueType> {
    cx.arity(1, usize::MAX)?;
    let mut shapes = Vec::new();
    for i in 0..cx.count() {
        cx.same_dtype(0, i)?;
        shapes.push(&cx.input(i)?.shape);
    }
    let info = einsum_analyze(equation, &shapes).map_err(|m| cx.err(m))?;
    Ok(vt(cx.input(0)?.dtype, info.output))
}
