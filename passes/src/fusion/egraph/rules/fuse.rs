//! Fusion: matrix products with an elementwise epilogue (bias, activation,
//! residual, scaling), chains of elementwise ops as one program, transposes
//! folded into matrix-product operand layouts, and projections of one input
//! merged into one wider product.

use super::{constant, ops, rank, ty};
use crate::fusion::egraph::analysis::{ConstKey, EG};
use crate::fusion::egraph::lang::ENode;
use crate::fusion::egraph::saturate::{Rhs, Rule};
use egg::Id;
use kiln_ir::fused::{BinaryFn, Instr, Program, UnaryFn};
use kiln_ir::{DType, Op, Tensor, ValueType};

/// The rules of this group.
pub(crate) static RULES: &[&dyn Rule] = &[
    &MatMulEpilogue,
    &EpilogueMerge,
    &ElementwiseMerge,
    &TransposeIntoMatMul,
    &SharedInputProjections,
];

/// Largest fused program, in instructions: beyond this the e-graph grows
/// faster than the savings.
const MAX_INSTRS: usize = 32;
/// Largest number of tensor operands of a fused program.
const MAX_INPUTS: usize = 6;

/// The op as a scalar program, when it is elementwise on f32.
fn as_program(op: &Op, arity: usize) -> Option<Program> {
    use BinaryFn as B;
    use UnaryFn as U;
    let b = |f| (arity == 2).then(|| Program::binary(f));
    let u = |f| (arity == 1).then(|| Program::unary(f));
    match op {
        Op::Add => b(B::Add),
        Op::Sub => b(B::Sub),
        Op::Mul => b(B::Mul),
        Op::Div => b(B::Div),
        Op::Pow => b(B::Pow),
        Op::Max => b(B::Max),
        Op::Min => b(B::Min),
        Op::Neg => u(U::Neg),
        Op::Abs => u(U::Abs),
        Op::Exp => u(U::Exp),
        Op::Log => u(U::Log),
        Op::Sqrt => u(U::Sqrt),
        Op::Reciprocal => u(U::Reciprocal),
        Op::Tanh => u(U::Tanh),
        Op::Sigmoid => u(U::Sigmoid),
        Op::Relu => u(U::Relu),
        Op::Erf => u(U::Erf),
        Op::Gelu { approximate } => u(U::Gelu(*approximate)),
        Op::Swish { alpha } => u(U::Swish(*alpha)),
        Op::Elementwise { program } => (program.inputs as usize == arity).then(|| program.clone()),
        _ => None,
    }
}

fn is_f32(eg: &EG, id: Id) -> bool {
    ty(eg, id).is_some_and(|t| t.dtype == DType::F32)
}

/// A one-element f32 constant's value.
fn scalar_value(eg: &EG, id: Id) -> Option<f32> {
    let t = constant(eg, id)?;
    (t.dtype() == DType::F32 && t.len() == 1)
        .then(|| t.to_vec::<f32>().ok()?.first().copied())
        .flatten()
}

/// Operands of a fused program: an e-class, or the matrix product's accumulator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Operand {
    Acc,
    Class(Id),
}

/// Moves one-element constants into the program as literals (when that
/// cannot change the broadcast shape) and merges operands bound to the
/// same class. Returns `None` when the program grows past the limits.
fn tidy(
    eg: &EG,
    mut prog: Program,
    mut inputs: Vec<Operand>,
    out_rank: usize,
) -> Option<(Program, Vec<Operand>)> {
    let mut i = inputs.len();
    while i > 0 {
        i -= 1;
        let Operand::Class(c) = inputs[i] else {
            continue;
        };
        let Some(v) = scalar_value(eg, c) else {
            continue;
        };
        let keeps_rank = constant(eg, c).is_some_and(|t| t.dims().len() <= out_rank)
            && inputs.iter().enumerate().any(|(j, o)| {
                j != i
                    && match o {
                        Operand::Acc => true,
                        Operand::Class(d) => {
                            scalar_value(eg, *d).is_none() && rank(eg, *d) == Some(out_rank)
                        }
                    }
            });
        if !keeps_rank {
            continue;
        }
        prog = prog.compose(
            i,
            &Program {
                inputs: 0,
                instrs: vec![Instr::Const(v.into())],
            },
        );
        inputs.remove(i);
    }
    let ids: Vec<Operand> = inputs
        .iter()
        .map(|o| match o {
            Operand::Class(c) => Operand::Class(eg.find(*c)),
            a => *a,
        })
        .collect();
    let (prog, inputs) = prog.dedup_inputs(&ids);
    (prog.instrs.len() <= MAX_INSTRS && inputs.len() <= MAX_INPUTS && prog.validate().is_ok())
        .then_some((prog, inputs))
}

/// True when `inner` is computed for `user` alone: the input graph reads
/// it once, or every reader leads (within a few steps) to `user` — the
/// primitive form of an op that was recognised, for one. Merging a value
/// that has other users into one of them would compute it twice: the
/// e-graph would only grow with forms extraction never picks (a residual
/// stream merged into every later layer, for one).
fn single_use(eg: &EG, inner: Id, user: Id) -> bool {
    fn leads_to(eg: &EG, class: Id, user: Id, depth: usize) -> bool {
        let class = eg.find(class);
        if class == user {
            return true;
        }
        let mut parents = eg[class].parents().peekable();
        depth > 0 && parents.peek().is_some() && parents.all(|p| leads_to(eg, p, user, depth - 1))
    }
    let user = eg.find(user);
    eg[inner].data.uses == 1 || eg[inner].parents().all(|p| leads_to(eg, p, user, 6))
}

/// `op` over existing classes, when it infers to `result`'s type.
fn rhs_over(eg: &EG, op: Op, classes: &[Id], result: &ValueType) -> Option<Rhs> {
    let types: Vec<Option<&ValueType>> = classes.iter().map(|&c| ty(eg, c)).collect();
    let consts = vec![None; types.len()];
    let inferred = kiln_ir::infer::infer_node(&op, &types, &consts);
    if !inferred.is_ok_and(|t| t.first() == Some(result)) {
        return None;
    }
    let mut rhs = Rhs::new();
    let refs: Vec<usize> = classes.iter().map(|&c| rhs.class(c)).collect();
    rhs.op(op, &refs);
    Some(rhs)
}

/// `MatMul(a, b)` → `FusedMatMul(a, b)` with the identity epilogue: the
/// form the other rules of this group extend.
pub(crate) struct MatMulEpilogue;

impl Rule for MatMulEpilogue {
    fn name(&self) -> &'static str {
        "matmul-epilogue"
    }
    fn search(&self, eg: &EG, id: Id, out: &mut Vec<Rhs>) {
        for (op, ch) in ops(eg, id) {
            if !matches!(op, Op::MatMul) {
                continue;
            }
            let b_ok = ty(eg, ch[1]).is_some_and(|t| t.dtype == DType::F32 || t.dtype.is_quant());
            if !is_f32(eg, ch[0]) || !b_ok || rank(eg, ch[0]) < Some(2) || rank(eg, ch[1]) < Some(2)
            {
                continue;
            }
            let mut rhs = Rhs::new();
            let (a, b) = (rhs.class(ch[0]), rhs.class(ch[1]));
            rhs.op(
                Op::FusedMatMul {
                    trans_a: false,
                    trans_b: false,
                    epilogue: Program::identity(),
                },
                &[a, b],
            );
            out.push(rhs);
        }
    }
}

/// An elementwise op whose operand is a fused matrix product of the same
/// shape → the product with the op appended to its epilogue (bias,
/// activation, scaling, residual: one pass over the result instead of one per op).
pub(crate) struct EpilogueMerge;

impl Rule for EpilogueMerge {
    fn name(&self) -> &'static str {
        "epilogue-merge"
    }
    fn search(&self, eg: &EG, id: Id, out: &mut Vec<Rhs>) {
        let Some(result) = ty(eg, id).filter(|t| t.dtype == DType::F32).cloned() else {
            return;
        };
        for (op, ch) in ops(eg, id) {
            let Some(outer) = as_program(op, ch.len()) else {
                continue;
            };
            if !ch.iter().all(|&c| is_f32(eg, c)) {
                continue;
            }
            for (i, &inner) in ch.iter().enumerate() {
                if ty(eg, inner).map(|t| &t.shape) != Some(&result.shape)
                    || !single_use(eg, inner, id)
                {
                    continue;
                }
                for (iop, ich) in ops(eg, inner) {
                    let Op::FusedMatMul {
                        trans_a,
                        trans_b,
                        epilogue,
                    } = iop
                    else {
                        continue;
                    };
                    // outer ∘ epilogue: inputs are outer's others, then acc and the extras.
                    let composed = outer.compose(i, epilogue);
                    let others: Vec<Operand> = ch
                        .iter()
                        .enumerate()
                        .filter(|&(j, _)| j != i)
                        .map(|(_, &c)| Operand::Class(c))
                        .collect();
                    let extras: Vec<Operand> =
                        ich[2..].iter().map(|&c| Operand::Class(c)).collect();
                    // Reorder to acc, extras, others.
                    let n_others = others.len();
                    let n = composed.inputs as usize;
                    let map: Vec<usize> = (0..n)
                        .map(|r| {
                            if r < n_others {
                                1 + extras.len() + r
                            } else {
                                r - n_others
                            }
                        })
                        .collect();
                    let prog = composed.remap_inputs(&map, n);
                    let mut operands = vec![Operand::Acc];
                    operands.extend(extras);
                    operands.extend(others);
                    let Some((prog, operands)) = tidy(eg, prog, operands, result.shape.rank())
                    else {
                        continue;
                    };
                    if operands.first() != Some(&Operand::Acc)
                        || operands[1..].contains(&Operand::Acc)
                    {
                        continue;
                    }
                    let new = Op::FusedMatMul {
                        trans_a: *trans_a,
                        trans_b: *trans_b,
                        epilogue: prog,
                    };
                    let classes: Vec<Id> = [ich[0], ich[1]]
                        .into_iter()
                        .chain(operands[1..].iter().filter_map(|o| match o {
                            Operand::Class(c) => Some(*c),
                            Operand::Acc => None,
                        }))
                        .collect();
                    out.extend(rhs_over(eg, new, &classes, &result));
                }
            }
        }
    }
}

/// An elementwise op whose operand (of the same shape) is itself
/// elementwise → one `Elementwise` program computing both in one pass.
pub(crate) struct ElementwiseMerge;

impl Rule for ElementwiseMerge {
    fn name(&self) -> &'static str {
        "elementwise-merge"
    }
    fn search(&self, eg: &EG, id: Id, out: &mut Vec<Rhs>) {
        let Some(result) = ty(eg, id).filter(|t| t.dtype == DType::F32).cloned() else {
            return;
        };
        for (op, ch) in ops(eg, id) {
            let Some(outer) = as_program(op, ch.len()) else {
                continue;
            };
            if !ch.iter().all(|&c| is_f32(eg, c)) {
                continue;
            }
            for (i, &inner) in ch.iter().enumerate() {
                if eg.find(inner) == eg.find(id)
                    || ty(eg, inner).map(|t| &t.shape) != Some(&result.shape)
                    || !single_use(eg, inner, id)
                {
                    continue;
                }
                for (iop, ich) in ops(eg, inner) {
                    let Some(inner_prog) = as_program(iop, ich.len()) else {
                        continue;
                    };
                    if !ich.iter().all(|&c| is_f32(eg, c)) {
                        continue;
                    }
                    let prog = outer.compose(i, &inner_prog);
                    let operands: Vec<Operand> = ch
                        .iter()
                        .enumerate()
                        .filter(|&(j, _)| j != i)
                        .map(|(_, &c)| c)
                        .chain(ich.iter().copied())
                        .map(Operand::Class)
                        .collect();
                    let Some((prog, operands)) = tidy(eg, prog, operands, result.shape.rank())
                    else {
                        continue;
                    };
                    let classes: Vec<Id> = operands
                        .iter()
                        .filter_map(|o| match o {
                            Operand::Class(c) => Some(*c),
                            Operand::Acc => None,
                        })
                        .collect();
                    if classes.is_empty() {
                        continue;
                    }
                    let new = Op::Elementwise { program: prog };
                    out.extend(rhs_over(eg, new, &classes, &result));
                }
            }
        }
    }
}

/// True when `perm` swaps the last two axes and keeps the others.
fn swaps_last_two(perm: &Option<Vec<i64>>, r: usize) -> bool {
    match perm {
        Some(p) => {
            r >= 2
                && p.len() == r
                && p.iter().enumerate().all(|(i, &a)| {
                    let want = if i + 2 == r {
                        r - 1
                    } else if i + 1 == r {
                        r - 2
                    } else {
                        i
                    };
                    a == want as i64
                })
        }
        None => r == 2,
    }
}

/// `FusedMatMul(Transpose(a), b)` with the last two axes swapped →
/// `FusedMatMul(a, b, trans_a)` (and likewise for `b`): the product reads
/// the operand through strides instead of a transposed copy.
pub(crate) struct TransposeIntoMatMul;

impl Rule for TransposeIntoMatMul {
    fn name(&self) -> &'static str {
        "transpose-into-matmul"
    }
    fn search(&self, eg: &EG, id: Id, out: &mut Vec<Rhs>) {
        let Some(result) = ty(eg, id).cloned() else {
            return;
        };
        for (op, ch) in ops(eg, id) {
            let Op::FusedMatMul {
                trans_a,
                trans_b,
                epilogue,
            } = op
            else {
                continue;
            };
            for side in 0..2 {
                for (top, tch) in ops(eg, ch[side]) {
                    let Op::Transpose { perm } = top else {
                        continue;
                    };
                    let Some(r) = rank(eg, tch[0]) else { continue };
                    if !swaps_last_two(perm, r) || !is_f32(eg, tch[0]) {
                        continue;
                    }
                    let new = Op::FusedMatMul {
                        trans_a: if side == 0 { !trans_a } else { *trans_a },
                        trans_b: if side == 1 { !trans_b } else { *trans_b },
                        epilogue: epilogue.clone(),
                    };
                    let mut classes = ch.to_vec();
                    classes[side] = tch[0];
                    out.extend(rhs_over(eg, new, &classes, &result));
                }
            }
        }
    }
}

/// Products of one input with several constant `[K, Nᵢ]` weights →
/// one product with the weights side by side, each original result a slice
/// of it (Q, K and V projections; gate and up). Whether that pays depends on
/// the target: it reads the input once, but each slice is a copy.
pub(crate) struct SharedInputProjections;

impl Rule for SharedInputProjections {
    fn name(&self) -> &'static str {
        "shared-input-projections"
    }
    fn search(&self, eg: &EG, id: Id, out: &mut Vec<Rhs>) {
        let x = eg.find(id);
        if !is_f32(eg, x) || rank(eg, x) < Some(2) {
            return;
        }
        // (result class, weight class, weight leaf, columns)
        let mut users: Vec<(Id, Id, u32, usize)> = Vec::new();
        let mut parents: Vec<Id> = eg[x].parents().map(|p| eg.find(p)).collect();
        parents.sort();
        parents.dedup();
        for p in parents {
            for node in &eg[p].nodes {
                let ENode::Op(Op::MatMul, ch) = node else {
                    continue;
                };
                if eg.find(ch[0]) != x {
                    continue;
                }
                let w = eg.find(ch[1]);
                let Some(t) = constant(eg, w) else { continue };
                if t.dtype() != DType::F32 || t.dims().len() != 2 {
                    continue;
                }
                let Some(leaf) = eg[w].data.konst else {
                    continue;
                };
                // Only the model's own weights: a side-by-side weight made
                // here is a user of `x` too and must not be widened again.
                if eg.analysis.leaves[leaf as usize].value.is_none() {
                    continue;
                }
                if !users.iter().any(|u| u.0 == p) {
                    users.push((p, w, leaf, t.dims()[1]));
                }
            }
        }
        if users.len() < 2 {
            return;
        }
        let k = constant(eg, users[0].1).map(|t| t.dims()[0]);
        if users
            .iter()
            .any(|u| constant(eg, u.1).map(|t| t.dims()[0]) != k)
        {
            return;
        }
        // The side-by-side weight is a Concat of constants: free here (the
        // cost model prices constant-only ops at zero) and made by
        // fold-constants after extraction only if it is chosen.
        let mut offset = 0;
        for (p, _, _, n) in &users {
            let mut rhs = Rhs::new();
            let xr = rhs.class(x);
            let parts: Vec<usize> = users.iter().map(|u| rhs.class(u.1)).collect();
            let w = rhs.op(Op::Concat { axis: 1 }, &parts);
            let wide = rhs.op(Op::MatMul, &[xr, w]);
            let int = |rhs: &mut Rhs, tag: &'static str, v: i64| {
                rhs.constant(
                    eg,
                    ConstKey {
                        tag,
                        parts: vec![v],
                    },
                    || Tensor::from_vec(vec![1], vec![v]).ok(),
                )
            };
            let (Some(s), Some(e), Some(a)) = (
                int(&mut rhs, "i64", offset as i64),
                int(&mut rhs, "i64", (offset + n) as i64),
                int(&mut rhs, "i64", -1),
            ) else {
                return;
            };
            rhs.op(Op::Slice, &[wide, s, e, a]);
            out.push(rhs.equal_to(*p));
            offset += n;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use kiln_ir::{GeluApprox, Op};

    /// A transformer MLP block as exported: bias adds, GELU, a layer scale
    /// and the residual add, all separate ops.
    fn mlp_block() -> kiln_ir::Graph {
        let mut b = B::new();
        let x = b.input("x", &[1, 6, 8]);
        let w1 = b.weight(&[8, 16], 1);
        let b1 = b.weight(&[16], 2);
        let w2 = b.weight(&[16, 8], 3);
        let b2 = b.weight(&[8], 4);
        let lambda = b.weight(&[8], 5);
        let h = b.op(Op::MatMul, &[x, w1]);
        let h = b.op(Op::Add, &[b1, h]);
        let h = b.op(
            Op::Gelu {
                approximate: GeluApprox::None,
            },
            &[h],
        );
        let y = b.op(Op::MatMul, &[h, w2]);
        let y = b.op(Op::Add, &[b2, y]);
        let y = b.op(Op::Mul, &[y, lambda]);
        let y = b.op(Op::Add, &[y, x]);
        b.finish(&[y])
    }

    #[test]
    fn bias_activation_scale_and_residual_join_the_products() {
        let g = mlp_block();
        let (f, s) = fuse(&g, &["fuse"]);
        assert!(s.fired["matmul-epilogue"] > 0 && s.fired["epilogue-merge"] > 0);
        assert_eq!(
            op_names(&f),
            ["FusedMatMul", "FusedMatMul"],
            "{}",
            kiln_ir::text::print(&f)
        );
        assert_same_outputs(&g, &f, 1e-5);
    }

    #[test]
    fn residual_joins_a_product_with_symbolic_dims() {
        let mut b = B::new();
        let x = b.input_sym("x", &[(None, "batch"), (None, "seq"), (Some(8), "")]);
        let a = b.input_sym("a", &[(None, "batch"), (None, "seq"), (Some(8), "")]);
        let w = b.weight(&[8, 8], 1);
        let o = b.op(Op::MatMul, &[a, w]);
        let y = b.op(Op::Add, &[x, o]);
        let g = b.finish(&[y]);
        let (f, _) = fuse(&g, &["fuse"]);
        assert_eq!(
            op_names(&f),
            ["FusedMatMul"],
            "{}",
            kiln_ir::text::print(&f)
        );
    }

    #[test]
    fn a_product_used_twice_is_computed_once() {
        // The product feeds the bias add and is an output itself: fusing the
        // add would compute the product twice, so the extraction keeps one.
        let mut b = B::new();
        let x = b.input("x", &[4, 8]);
        let w = b.weight(&[8, 8], 1);
        let bias = b.weight(&[8], 2);
        let p = b.op(Op::MatMul, &[x, w]);
        let y = b.op(Op::Add, &[p, bias]);
        let g = b.finish(&[p, y]);
        let (f, _) = fuse(&g, &["fuse"]);
        let products = op_names(&f).iter().filter(|n| n.contains("MatMul")).count();
        assert_eq!(products, 1, "{}", kiln_ir::text::print(&f));
        assert_same_outputs(&g, &f, 1e-6);
    }

    #[test]
    fn an_epilogue_operand_may_not_enlarge_the_product() {
        let mut b = B::new();
        let x = b.input("x", &[4, 8]);
        let z = b.input("z", &[3, 4, 8]);
        let w = b.weight(&[8, 8], 1);
        let p = b.op(Op::MatMul, &[x, w]);
        let y = b.op(Op::Add, &[p, z]);
        let g = b.finish(&[y]);
        let (f, s) = fuse(&g, &["fuse"]);
        assert_eq!(s.fired["epilogue-merge"], 0);
        assert!(op_names(&f).contains(&"Add"));
        assert_same_outputs(&g, &f, 1e-6);
    }

    #[test]
    fn elementwise_chains_become_one_program() {
        let mut b = B::new();
        let x = b.input("x", &[4, 8]);
        let y = b.input("y", &[4, 8]);
        let z = b.input("z", &[8]);
        let m = b.op(Op::Mul, &[x, y]);
        let a = b.op(Op::Add, &[m, z]);
        let t = b.op(Op::Tanh, &[a]);
        let g = b.finish(&[t]);
        let (f, s) = fuse(&g, &["fuse"]);
        assert!(s.fired["elementwise-merge"] > 0);
        assert_eq!(op_names(&f), ["Elementwise"]);
        assert_eq!(f.nodes[0].inputs.len(), 3);
        assert_same_outputs(&g, &f, 1e-6);
    }

    #[test]
    fn an_operand_smaller_than_the_result_is_not_merged() {
        // relu(x[8]) + y[4, 8]: merging would compute the ReLU 4 times over.
        let mut b = B::new();
        let x = b.input("x", &[8]);
        let y = b.input("y", &[4, 8]);
        let r = b.op(Op::Relu, &[x]);
        let a = b.op(Op::Add, &[r, y]);
        let g = b.finish(&[a]);
        let (f, s) = fuse(&g, &["fuse"]);
        assert_eq!(s.fired["elementwise-merge"], 0);
        assert_eq!(op_names(&f), ["Relu", "Add"]);
    }

    #[test]
    fn transposes_fold_into_the_product() {
        let mut b = B::new();
        let a = b.input("a", &[8, 4]);
        let w = b.input("w", &[6, 8]);
        let at = b.op(
            Op::Transpose {
                perm: Some(vec![1, 0]),
            },
            &[a],
        );
        let wt = b.op(Op::Transpose { perm: None }, &[w]);
        let p = b.op(Op::MatMul, &[at, wt]);
        let g = b.finish(&[p]);
        let (f, s) = fuse(&g, &["fuse"]);
        assert!(s.fired["transpose-into-matmul"] >= 2);
        assert_eq!(op_names(&f), ["FusedMatMul"]);
        assert!(matches!(
            f.nodes[0].op,
            Op::FusedMatMul {
                trans_a: true,
                trans_b: true,
                ..
            }
        ));
        assert_same_outputs(&g, &f, 1e-6);
    }

    #[test]
    fn a_transpose_of_leading_axes_stays() {
        let mut b = B::new();
        let a = b.input("a", &[3, 2, 4]);
        let w = b.weight(&[4, 5], 1);
        let at = b.op(
            Op::Transpose {
                perm: Some(vec![1, 0, 2]),
            },
            &[a],
        );
        let p = b.op(Op::MatMul, &[at, w]);
        let g = b.finish(&[p]);
        let (f, s) = fuse(&g, &["fuse"]);
        assert_eq!(s.fired["transpose-into-matmul"], 0);
        assert!(op_names(&f).contains(&"Transpose"));
    }

    #[test]
    fn projections_of_one_input_get_a_wide_form() {
        // The wide product is added to each projection's class. Extraction
        // is greedy per class, and one slice of the wide product never pays
        // on its own, so the graph keeps the three products (see
        // docs/fusion.md, "What the rules still miss").
        let mut b = B::new();
        let x = b.input("x", &[256, 512]);
        let outs: Vec<_> = (0..3)
            .map(|i| {
                let w = b.weight(&[512, 16], 10 + i);
                b.op(Op::MatMul, &[x, w])
            })
            .collect();
        let g = b.finish(&outs);
        let (f, s) = fuse(&g, &["fuse"]);
        assert_eq!(s.fired["shared-input-projections"], 3);
        assert_same_outputs(&g, &f, 1e-5);
    }

    #[test]
    fn products_with_runtime_operands_are_not_widened() {
        let mut b = B::new();
        let x = b.input("x", &[4, 8]);
        let w1 = b.input("w1", &[8, 8]);
        let w2 = b.input("w2", &[8, 8]);
        let p1 = b.op(Op::MatMul, &[x, w1]);
        let p2 = b.op(Op::MatMul, &[x, w2]);
        let g = b.finish(&[p1, p2]);
        let (_, s) = fuse(&g, &["fuse"]);
        assert_eq!(s.fired["shared-input-projections"], 0);
    }

    #[test]
    fn a_vector_product_keeps_its_plain_form() {
        // numpy promotes a 1-d operand; the fused form takes matrices only.
        let mut b = B::new();
        let x = b.input("x", &[8]);
        let w = b.weight(&[8, 4], 1);
        let p = b.op(Op::MatMul, &[x, w]);
        let r = b.op(Op::Relu, &[p]);
        let g = b.finish(&[r]);
        let (f, s) = fuse(&g, &["fuse"]);
        assert_eq!(s.fired["matmul-epilogue"], 0);
        assert_eq!(op_names(&f)[0], "MatMul");
        assert_same_outputs(&g, &f, 1e-6);
    }
}
