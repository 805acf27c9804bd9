//! Fused ops: Elementwise (a scalar program over broadcast inputs) and
//! FusedMatMul (a product with an elementwise epilogue).

use super::broadcast::{broadcast_all, broadcast_pair, check_unidirectional};
use super::{unify, vt, Ctx, R};
use crate::fused::Program;
use crate::{DType, Dim, Shape, ValueType};

/// Checks the program and that the node has exactly `want` operands, all present.
fn operands(cx: &Ctx, program: &Program, want: usize, what: &str) -> R<()> {
    program
        .validate()
        .map_err(|m| cx.err(format!("invalid {what}: {m}")))?;
    if cx.inputs.len() != want || cx.count() != want {
        return Err(cx.err(format!(
            "the {what} has {} inputs, so the node needs {want} operands, got {}",
            program.inputs,
            cx.count()
        )));
    }
    for i in 0..want {
        cx.input(i)?;
    }
    Ok(())
}

fn f32_operand(cx: &Ctx, i: usize, name: &str) -> R<()> {
    let t = cx.input(i)?;
    if t.dtype != DType::F32 {
        return Err(cx.err(format!("{name} (operand {i}) must be f32, got {}", t.dtype)));
    }
    Ok(())
}

/// Elementwise: all operands f32, result of their broadcast shape.
pub(super) fn elementwise(cx: &Ctx, program: &Program) -> R<ValueType> {
    let n = program.inputs as usize;
    operands(cx, program, n, "program")?;
    for i in 0..n {
        f32_operand(cx, i, &format!("X{i}"))?;
    }
    let shapes = (0..n)
        .map(|i| cx.input(i).map(|t| &t.shape))
        .collect::<R<Vec<&Shape>>>()?;
    let out = broadcast_all(shapes).map_err(|m| cx.err(m))?;
    Ok(ValueType::new(DType::F32, out))
}

/// FusedMatMul: numpy matmul of op(A) and op(B), then the epilogue with
/// every Ei broadcasting to the product's shape.
pub(super) fn fused_matmul(
    cx: &Ctx,
    trans_a: bool,
    trans_b: bool,
    epilogue: &Program,
) -> R<ValueType> {
    operands(cx, epilogue, epilogue.inputs as usize + 1, "epilogue")?;
    f32_operand(cx, 0, "A")?;
    let (a, b) = (cx.input(0)?, cx.input(1)?);
    if b.dtype.is_quant() {
        if trans_b {
            return Err(cx.err(format!(
                "a packed {} weight is read as [in, out]; trans_b must be false",
                b.dtype
            )));
        }
    } else {
        f32_operand(cx, 1, "B")?;
    }
    let (sa, sb) = (&a.shape.0, &b.shape.0);
    if sa.is_empty() || sb.is_empty() {
        return Err(cx.err(format!(
            "operands must have rank at least 1, got {} and {}",
            a.shape, b.shape
        )));
    }
    for (flag, s, name) in [
        (trans_a, &a.shape, "trans_a"),
        (trans_b, &b.shape, "trans_b"),
    ] {
        if flag && s.rank() < 2 {
            return Err(cx.err(format!(
                "{name} swaps the last two axes, so the operand needs rank ≥ 2, got shape {s}"
            )));
        }
    }
    // (batch, rows, cols) of op(X); a 1-d operand has no batch and one of rows/cols.
    let split = |s: &[Dim], t: bool| -> (Vec<Dim>, Dim, Dim) {
        let r = s.len();
        let (x, y) = (s[r - 2].clone(), s[r - 1].clone());
        let (rows, cols) = if t { (y, x) } else { (x, y) };
        (s[..r - 2].to_vec(), rows, cols)
    };
    let (a_batch, m, ka) = match sa.len() {
        1 => (vec![], None, sa[0].clone()),
        _ => {
            let (b, r, c) = split(sa, trans_a);
            (b, Some(r), c)
        }
    };
    let (b_batch, kb, n) = match sb.len() {
        1 => (vec![], sb[0].clone(), None),
        _ => {
            let (b, r, c) = split(sb, trans_b);
            (b, r, Some(c))
        }
    };
    unify(&ka, &kb).ok_or_else(|| {
        cx.err(format!(
            "inner dimensions differ: A {} (trans_a={trans_a}) × B {} (trans_b={trans_b}): {ka} vs {kb}",
            a.shape, b.shape
        ))
    })?;
    let batch = broadcast_pair(&Shape(a_batch), &Shape(b_batch)).map_err(|m| {
        cx.err(format!(
            "batch dimensions of {} and {} do not broadcast: {m}",
            a.shape, b.shape
        ))
    })?;
    let mut out = batch.0;
    out.extend(m);
    out.extend(n);
    let out = Shape(out);
    for i in 2..cx.count() {
        let e = cx.input(i)?;
        if e.dtype != DType::F32 {
            return Err(cx.err(format!(
                "E{} (operand {i}) must be f32, got {}",
                i - 1,
                e.dtype
            )));
        }
        check_unidirectional(&e.shape, &out).map_err(|m| {
            cx.err(format!(
                "E{} (operand {i}) must broadcast to the product's shape: {m}",
                i - 1
            ))
        })?;
    }
    Ok(vt(DType::F32, out.0))
}

#[cfg(test)]
mod tests {
    use crate::fused::{BinaryFn, Instr, Program, UnaryFn};
    use crate::infer::infer_node;
    use crate::quant::QuantFormat;
    use crate::{DType, Dim, GeluApprox, Op, Shape, ValueType};

    fn f32t(d: &[u64]) -> ValueType {
        ValueType::new(DType::F32, Shape::fixed(d))
    }

    fn infer(op: &Op, ins: &[ValueType]) -> Result<Vec<u64>, String> {
        let refs: Vec<Option<&ValueType>> = ins.iter().map(Some).collect();
        let consts = vec![None; ins.len()];
        infer_node(op, &refs, &consts)
            .map(|t| {
                assert_eq!(t[0].dtype, DType::F32);
                t[0].shape
                    .0
                    .iter()
                    .map(|d| d.fixed().unwrap_or(0))
                    .collect()
            })
            .map_err(|e| e.to_string())
    }

    fn bias_gelu() -> Program {
        Program {
            inputs: 2,
            instrs: vec![
                Instr::Binary(BinaryFn::Add, 0, 1),
                Instr::Unary(UnaryFn::Gelu(GeluApprox::Tanh), 2),
            ],
        }
    }

    #[test]
    fn elementwise_broadcasts() {
        let op = Op::Elementwise {
            program: bias_gelu(),
        };
        assert_eq!(
            infer(&op, &[f32t(&[2, 1, 5]), f32t(&[3, 1])]),
            Ok(vec![2, 3, 5])
        );
        assert_eq!(infer(&op, &[f32t(&[]), f32t(&[4])]), Ok(vec![4]));
        assert!(infer(&op, &[f32t(&[2]), f32t(&[3])])
            .unwrap_err()
            .contains("cannot broadcast"));
        assert!(infer(&op, &[f32t(&[2])])
            .unwrap_err()
            .contains("2 operands"));
        let i64t = ValueType::new(DType::I64, Shape::fixed(&[2]));
        assert!(infer(&op, &[f32t(&[2]), i64t]).unwrap_err().contains("f32"));
        let bad = Op::Elementwise {
            program: Program {
                inputs: 1,
                instrs: vec![Instr::Unary(UnaryFn::Exp, 3)],
            },
        };
        assert!(infer(&bad, &[f32t(&[2])])
            .unwrap_err()
            .contains("invalid program"));
    }

    #[test]
    fn fused_matmul_shapes() {
        let mm = |ta, tb, epilogue| Op::FusedMatMul {
            trans_a: ta,
            trans_b: tb,
            epilogue,
        };
        let id = Program::identity();
        assert_eq!(
            infer(
                &mm(false, false, id.clone()),
                &[f32t(&[2, 3, 4]), f32t(&[4, 5])]
            ),
            Ok(vec![2, 3, 5])
        );
        assert_eq!(
            infer(
                &mm(true, true, id.clone()),
                &[f32t(&[4, 3]), f32t(&[7, 1, 5, 4])]
            ),
            Ok(vec![7, 1, 3, 5])
        );
        assert_eq!(
            infer(
                &mm(false, false, id.clone()),
                &[f32t(&[4]), f32t(&[2, 4, 5])]
            ),
            Ok(vec![2, 5])
        );
        assert!(
            infer(&mm(true, false, id.clone()), &[f32t(&[4]), f32t(&[4, 5])])
                .unwrap_err()
                .contains("rank ≥ 2")
        );
        assert!(infer(
            &mm(false, true, id.clone()),
            &[f32t(&[3, 4]), f32t(&[4, 5])]
        )
        .unwrap_err()
        .contains("inner dimensions"));
        // The epilogue's operands broadcast to the product, never enlarge it.
        let e = mm(false, false, bias_gelu());
        assert_eq!(
            infer(&e, &[f32t(&[3, 4]), f32t(&[4, 5]), f32t(&[5])]),
            Ok(vec![3, 5])
        );
        assert!(infer(&e, &[f32t(&[3, 4]), f32t(&[4, 5]), f32t(&[2, 3, 5])])
            .unwrap_err()
            .contains("broadcast to the product"));
        assert!(infer(&e, &[f32t(&[3, 4]), f32t(&[4, 5])])
            .unwrap_err()
            .contains("3 operands"));
        // Symbolic rows stay symbolic.
        let x = ValueType::new(
            DType::F32,
            Shape(vec![Dim::Sym("seq".into()), Dim::Fixed(4)]),
        );
        let refs = [Some(&x), Some(&f32t(&[4, 5])), Some(&f32t(&[1, 5]))];
        let t = infer_node(&e, &refs, &[None, None, None]).unwrap();
        assert_eq!(t[0].shape.0, vec![Dim::Sym("seq".into()), Dim::Fixed(5)]);
    }

    #[test]
    fn fused_matmul_reads_packed_weights() {
        let fmt = QuantFormat::parse("w4g32").unwrap();
        let w = ValueType::new(DType::Quant(fmt), Shape::fixed(&[64, 8]));
        let op = |tb| Op::FusedMatMul {
            trans_a: false,
            trans_b: tb,
            epilogue: Program::identity(),
        };
        assert_eq!(
            infer(&op(false), &[f32t(&[3, 64]), w.clone()]),
            Ok(vec![3, 8])
        );
        assert!(infer(&op(true), &[f32t(&[3, 64]), w.clone()])
            .unwrap_err()
            .contains("trans_b must be false"));
        // Elementwise may not read one.
        let ew = Op::Elementwise {
            program: Program::unary(UnaryFn::Relu),
        };
        assert!(infer(&ew, &[w]).is_err());
    }
}
