//! Constant folding, including the shape-computing subgraphs that exporters
//! emit for dynamic shapes.
//!
//! Two mechanisms work together:
//! - a node whose operands are all constant is evaluated by the runtime's
//!   reference executor (`kiln_runtime::cpu::eval_node`), so folding can
//!   never disagree with execution;
//! - small integer tensors that describe shapes are tracked element by
//!   element: each element is a known number or "dimension k of value v"
//!   (a run-time size). `Shape`, `Size`, `Gather`, `Concat`, `Unsqueeze`, `Squeeze`, `Slice`
//!   and `Cast` propagate them. When every element is known the value becomes
//!   a constant; when it feeds `Reshape`, elements that copy the reshaped
//!   input's own dimension become 0 ("copy") and a single remaining run-time size
//!   becomes -1, so `Reshape(x, Concat(Shape(x)[0], Shape(x)[1], 6, 64))`
//!   folds to a constant target even when batch and sequence are symbolic.

use crate::{Changed, Pass, PassCx, PassError};
use kiln_ir::{DType, Dim, Graph, Node, Op, Shape, Tensor, ValueId, ValueType};
use std::collections::HashMap;

/// The most elements a tracked shape tensor may have.
const MAX_SHAPE_ELEMENTS: usize = 16;

/// A folded result may be at most this many bytes larger than its operands,
/// so folding never turns a small graph into a large file (a broadcast mask
/// of 4096 × 4096 stays a node).
const MAX_GROWTH_BYTES: usize = 64 * 1024;

/// One element of a tracked shape tensor.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Elem {
    Known(i64),
    /// Dimension `k` of value `v`, not known at compile time.
    DimOf(ValueId, usize),
}

/// Folds constant subgraphs and shape computations into constants.
#[derive(Default)]
pub struct FoldConstants;

impl Pass for FoldConstants {
    fn name(&self) -> &'static str {
        "fold-constants"
    }

    fn run(&mut self, g: &mut Graph, cx: &mut PassCx) -> Result<Changed, PassError> {
        // Folded values go into the bundle, which must be byte-identical
        // whatever the machine's thread count: a parallel reduction (matmul)
        // could sum in another order on more threads, so fold on one.
        match rayon::ThreadPoolBuilder::new().num_threads(1).build() {
            Ok(pool) => pool.install(|| self.fold(g, cx)),
            Err(e) => Err(PassError::Node {
                pass: self.name().to_string(),
                node: String::new(),
                message: format!("cannot start the folding thread: {e}"),
            }),
        }
    }
}

impl FoldConstants {
    fn fold(&self, g: &mut Graph, cx: &mut PassCx) -> Result<Changed, PassError> {
        let mut elems: HashMap<ValueId, (Vec<Elem>, bool)> = HashMap::new();
        let mut folded = 0i64;
        let mut reshapes = 0i64;
        let mut keep = Vec::with_capacity(g.nodes.len());
        for node in std::mem::take(&mut g.nodes) {
            // Inference runs node by node here, interleaved with folding, so
            // a shape that only a folded value determines is known before
            // the nodes that depend on it are inferred.
            let inferred = super::infer::infer_in_place(g, &node, false);
            if let Some(results) = try_fold(g, &node, inferred.is_ok()) {
                for (&o, t) in node.outputs.iter().zip(results) {
                    let dims = t.dims().iter().map(|&d| d as u64).collect::<Vec<_>>();
                    g.value_mut(o).ty = ValueType::new(t.dtype(), Shape::fixed(&dims));
                    g.constants.insert(o, t);
                }
                folded += 1;
                continue;
            }
            track(g, &node, &mut elems);
            let mut node = node;
            if let Some(t) = fold_tracked(g, &node, &elems) {
                g.constants.insert(node.outputs[0], t);
                folded += 1;
                continue;
            }
            let err = |source| PassError::Infer {
                pass: self.name().to_string(),
                source,
            };
            inferred.map_err(err)?;
            if rewrite_reshape_target(g, &mut node, &elems) {
                reshapes += 1;
                // The target is constant now: inference can see it.
                super::infer::infer_in_place(g, &node, true).map_err(err)?;
            }
            refine_shape(g, &node, &elems);
            keep.push(node);
        }
        g.nodes = keep;
        cx.count("nodes_folded", folded);
        cx.count("reshape_targets_folded", reshapes);
        Ok(Changed::from(folded + reshapes > 0))
    }
}

/// Evaluates a node whose operands are all constant.
fn try_fold(g: &Graph, node: &Node, types_known: bool) -> Option<Vec<Tensor>> {
    let mut operands = Vec::with_capacity(node.inputs.len());
    let mut in_bytes = 0usize;
    for i in &node.inputs {
        match i {
            None => operands.push(None),
            Some(v) => {
                let t = g.constant(*v)?;
                in_bytes += t.bytes().len();
                operands.push(Some(t));
            }
        }
    }
    // Static output sizes let us refuse a blow-up before computing it.
    let mut out_bytes = 0usize;
    for &o in &node.outputs {
        let ty = &g.value(o).ty;
        if let Some(n) = ty.shape.num_elements() {
            out_bytes += n as usize * ty.dtype.size_of();
        }
    }
    if types_known && out_bytes > in_bytes + MAX_GROWTH_BYTES {
        return None;
    }
    let results = kiln_runtime::cpu::eval_node(&node.op, &operands, node.outputs.len()).ok()?;
    let total: usize = results.iter().map(|t| t.bytes().len()).sum();
    if total > in_bytes + MAX_GROWTH_BYTES || results.len() != node.outputs.len() {
        return None;
    }
    // The folded constant must have the dtype inference promised.
    for (t, &o) in results.iter().zip(&node.outputs) {
        if types_known && t.dtype() != g.value(o).ty.dtype {
            return None;
        }
    }
    Some(results)
}

fn elems_of(
    g: &Graph,
    v: ValueId,
    elems: &HashMap<ValueId, (Vec<Elem>, bool)>,
) -> Option<(Vec<Elem>, bool)> {
    if let Some(t) = g.constant(v) {
        if (t.dtype().is_integer() || t.dtype() == DType::Bool)
            && t.dims().len() <= 1
            && t.len() <= MAX_SHAPE_ELEMENTS
        {
            return Some((
                t.to_i64_vec().into_iter().map(Elem::Known).collect(),
                t.dims().is_empty(),
            ));
        }
        return None;
    }
    elems.get(&v).cloned()
}

fn const_ints(g: &Graph, v: Option<ValueId>) -> Option<Vec<i64>> {
    g.constant(v?).map(|t| t.to_i64_vec())
}

fn norm_index(i: i64, len: usize) -> Option<usize> {
    let j = if i < 0 { i + len as i64 } else { i };
    (0..len as i64).contains(&j).then_some(j as usize)
}

/// Records the element-wise content of the node's result when it is a small shape tensor.
fn track(g: &Graph, node: &Node, elems: &mut HashMap<ValueId, (Vec<Elem>, bool)>) {
    let Some(&out) = node.outputs.first() else {
        return;
    };
    let input = |k: usize| node.inputs.get(k).copied().flatten();
    let result: Option<(Vec<Elem>, bool)> = match &node.op {
        Op::Shape { start, end } => {
            let Some(x) = input(0) else { return };
            let dims = &g.value(x).ty.shape.0;
            let r = dims.len() as i64;
            let clamp = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
            let (s, e) = (clamp(*start), clamp(end.unwrap_or(r)));
            let list = (s..e.max(s))
                .map(|k| match dims[k] {
                    Dim::Fixed(n) => Elem::Known(n as i64),
                    _ => Elem::DimOf(x, k),
                })
                .collect();
            Some((list, false))
        }
        Op::Size => input(0)
            .and_then(|x| g.value(x).ty.shape.num_elements())
            .map(|n| (vec![Elem::Known(n as i64)], true)),
        Op::Gather { axis: 0 } => (|| {
            let (data, _) = elems_of(g, input(0)?, elems)?;
            let idx = g.constant(input(1)?)?;
            let picked = idx
                .to_i64_vec()
                .into_iter()
                .map(|i| norm_index(i, data.len()).map(|j| data[j]))
                .collect::<Option<Vec<_>>>()?;
            Some((picked, idx.dims().is_empty()))
        })(),
        Op::Unsqueeze { .. } => elems_of(g, input(0).unwrap_or(out), elems)
            .filter(|(_, scalar)| *scalar)
            .map(|(e, _)| (e, false)),
        Op::Squeeze { .. } => elems_of(g, input(0).unwrap_or(out), elems)
            .filter(|(e, scalar)| !*scalar && e.len() == 1)
            .map(|(e, _)| (e, true)),
        Op::Cast {
            to: DType::I64 | DType::I32,
            ..
        } => elems_of(g, input(0).unwrap_or(out), elems),
        Op::Reshape { .. } => elems_of(g, input(0).unwrap_or(out), elems).and_then(|(e, _)| {
            // Only reshapes between scalar, [1] and [n] keep the element order trivially.
            match g.value(out).ty.shape.rank() {
                0 if e.len() == 1 => Some((e, true)),
                1 => Some((e, false)),
                _ => None,
            }
        }),
        Op::Equal => (|| {
            let (a, sa) = elems_of(g, input(0)?, elems)?;
            let (b, sb) = elems_of(g, input(1)?, elems)?;
            let n = a.len().max(b.len());
            if !(a.len() == n || a.len() == 1) || !(b.len() == n || b.len() == 1) {
                return None;
            }
            let pick = |v: &[Elem], i: usize| v[if v.len() == 1 { 0 } else { i }];
            let eq = (0..n)
                .map(|i| match (pick(&a, i), pick(&b, i)) {
                    (Elem::Known(x), Elem::Known(y)) => Some(Elem::Known((x == y) as i64)),
                    // A dimension is never negative.
                    (Elem::DimOf(..), Elem::Known(y)) | (Elem::Known(y), Elem::DimOf(..))
                        if y < 0 =>
                    {
                        Some(Elem::Known(0))
                    }
                    (x @ Elem::DimOf(..), y) if x == y => Some(Elem::Known(1)),
                    _ => None,
                })
                .collect::<Option<Vec<_>>>()?;
            Some((eq, sa && sb))
        })(),
        Op::Where => (|| {
            let (c, sc) = elems_of(g, input(0)?, elems)?;
            let (x, sx) = elems_of(g, input(1)?, elems)?;
            let (y, sy) = elems_of(g, input(2)?, elems)?;
            let n = c.len().max(x.len()).max(y.len());
            if [c.len(), x.len(), y.len()]
                .iter()
                .any(|&l| l != n && l != 1)
            {
                return None;
            }
            let pick = |v: &[Elem], i: usize| v[if v.len() == 1 { 0 } else { i }];
            let sel = (0..n)
                .map(|i| match pick(&c, i) {
                    Elem::Known(0) => Some(pick(&y, i)),
                    Elem::Known(_) => Some(pick(&x, i)),
                    Elem::DimOf(..) => None,
                })
                .collect::<Option<Vec<_>>>()?;
            Some((sel, sc && sx && sy))
        })(),
        Op::Concat { .. } => (|| {
            let mut all = Vec::new();
            for v in node.present_inputs() {
                let (e, scalar) = elems_of(g, v, elems)?;
                if scalar {
                    return None;
                }
                all.extend(e);
            }
            Some((all, false))
        })(),
        Op::Slice => (|| {
            let (data, scalar) = elems_of(g, input(0)?, elems)?;
            if scalar {
                return None;
            }
            let starts = const_ints(g, input(1))?;
            let ends = const_ints(g, input(2))?;
            if starts.len() != 1 || ends.len() != 1 {
                return None;
            }
            if let Some(axes) = input(3) {
                if !matches!(const_ints(g, Some(axes))?.as_slice(), [0] | [-1]) {
                    return None;
                }
            }
            let step = match input(4) {
                Some(s) => *const_ints(g, Some(s))?.first()?,
                None => 1,
            };
            if step != 1 {
                return None;
            }
            let n = data.len() as i64;
            let clamp = |v: i64| (if v < 0 { v + n } else { v }).clamp(0, n) as usize;
            let (s, e) = (clamp(starts[0]), clamp(ends[0]));
            Some((data[s..e.max(s)].to_vec(), false))
        })(),
        _ => None,
    };
    if let Some(r) = result {
        if r.0.len() <= MAX_SHAPE_ELEMENTS {
            elems.insert(out, r);
        }
    }
}

/// Turns a tracked shape tensor whose elements are all known into a constant.
fn fold_tracked(
    g: &Graph,
    node: &Node,
    elems: &HashMap<ValueId, (Vec<Elem>, bool)>,
) -> Option<Tensor> {
    let &out = node.outputs.first()?;
    let (list, scalar) = elems.get(&out)?;
    let values: Vec<i64> = list
        .iter()
        .map(|e| match e {
            Elem::Known(n) => Some(*n),
            _ => None,
        })
        .collect::<Option<_>>()?;
    let dims = if *scalar { vec![] } else { vec![values.len()] };
    match g.value(out).ty.dtype {
        DType::I64 => Tensor::from_vec(dims, values).ok(),
        DType::Bool => {
            Tensor::from_bools(dims, &values.iter().map(|&v| v != 0).collect::<Vec<_>>()).ok()
        }
        DType::I32 => Tensor::from_vec(dims, values.into_iter().map(|v| v as i32).collect()).ok(),
        _ => None,
    }
}

/// The dimension a tracked element stands for.
fn elem_dim(g: &Graph, e: Elem) -> Dim {
    match e {
        Elem::Known(n) if n >= 0 => Dim::Fixed(n as u64),
        Elem::Known(_) => Dim::Unknown,
        Elem::DimOf(v, k) => g
            .value(v)
            .ty
            .shape
            .0
            .get(k)
            .cloned()
            .unwrap_or(Dim::Unknown),
    }
}

/// `Range(0, n, 1)` has `n` elements: a symbolic length when `n` is a
/// tracked dimension (position ids of a sequence).
fn range_shape(
    g: &Graph,
    node: &Node,
    elems: &HashMap<ValueId, (Vec<Elem>, bool)>,
) -> Option<Shape> {
    let scalar = |i: usize| -> Option<Elem> {
        let v = node.inputs.get(i).copied()??;
        match elems_of(g, v, elems)? {
            (list, _) if list.len() == 1 => Some(list[0]),
            _ => None,
        }
    };
    match (scalar(0)?, scalar(1)?, scalar(2)?) {
        (Elem::Known(0), limit, Elem::Known(1)) => Some(Shape(vec![elem_dim(g, limit)])),
        _ => None,
    }
}

/// Sharpens the inferred result shape of ops whose shape operand is a
/// tracked shape tensor: `Expand`, `ConstantOfShape`, `Resize` with sizes,
/// `Reshape` to a computed target, and `Range(0, n, 1)`. Inference sees only
/// constants; tracking also knows which elements are another value's
/// (possibly symbolic) dimension.
fn refine_shape(g: &mut Graph, node: &Node, elems: &HashMap<ValueId, (Vec<Elem>, bool)>) {
    if let Op::Range = node.op {
        if let (Some(shape), Some(&out)) = (range_shape(g, node, elems), node.outputs.first()) {
            merge_shape(g, out, shape);
        }
        return;
    }
    let operand = match node.op {
        Op::Expand => 1,
        Op::ConstantOfShape { .. } => 0,
        Op::Resize(_) => 3,
        Op::Reshape { .. } => 1,
        _ => return,
    };
    let Some(Some(shape_v)) = node.inputs.get(operand).copied() else {
        return;
    };
    let Some((list, false)) = elems.get(&shape_v) else {
        return;
    };
    let dims = Shape(list.iter().map(|&e| elem_dim(g, e)).collect());
    let Some(&out) = node.outputs.first() else {
        return;
    };
    let refined = match node.op {
        Op::Expand => {
            let Some(Some(x)) = node.inputs.first().copied() else {
                return;
            };
            match kiln_ir::infer::broadcast_shapes(&g.value(x).ty.shape, &dims) {
                Ok(s) => s,
                Err(_) => return,
            }
        }
        Op::Resize(ref attrs) if attrs.axes.is_empty() => dims,
        Op::Resize(_) => return,
        Op::Reshape { allowzero } => {
            // A 0 copies the input's dimension (unless allowzero); -1 stays unknown.
            let Some(Some(x)) = node.inputs.first().copied() else {
                return;
            };
            let input = g.value(x).ty.shape.clone();
            Shape(
                list.iter()
                    .zip(dims.0)
                    .enumerate()
                    .map(|(i, (e, d))| match e {
                        Elem::Known(0) if !allowzero => {
                            input.0.get(i).cloned().unwrap_or(Dim::Unknown)
                        }
                        _ => d,
                    })
                    .collect(),
            )
        }
        _ => dims,
    };
    merge_shape(g, out, refined);
}

/// Fills the unknown dims of `out`'s shape from `refined` (same rank only).
fn merge_shape(g: &mut Graph, out: ValueId, refined: Shape) {
    let current = &g.value(out).ty.shape;
    if current.rank() != refined.rank() {
        return;
    }
    // Keep what inference already knew; fill in only its unknowns.
    let merged = Shape(
        current
            .0
            .iter()
            .zip(&refined.0)
            .map(|(c, r)| {
                if *c == Dim::Unknown {
                    r.clone()
                } else {
                    c.clone()
                }
            })
            .collect(),
    );
    g.value_mut(out).ty.shape = merged;
}

/// Replaces a computed `Reshape` target with a constant using 0 (copy) and -1.
fn rewrite_reshape_target(
    g: &mut Graph,
    node: &mut Node,
    elems: &HashMap<ValueId, (Vec<Elem>, bool)>,
) -> bool {
    let Op::Reshape { allowzero: false } = node.op else {
        return false;
    };
    let (Some(Some(data)), Some(Some(target))) =
        (node.inputs.first().copied(), node.inputs.get(1).copied())
    else {
        return false;
    };
    if g.constant(target).is_some() {
        return false;
    }
    let Some((list, false)) = elems.get(&target).cloned() else {
        return false;
    };
    let mut unknown = 0;
    let values: Vec<i64> = list
        .iter()
        .enumerate()
        .map(|(k, e)| match *e {
            Elem::Known(n) => n,
            Elem::DimOf(v, d) if v == data && d == k => 0,
            _ => {
                unknown += 1;
                -1
            }
        })
        .collect();
    // A known 0 means "copy" in the original too, so it keeps its meaning;
    // a known -1 plus a new one would be ambiguous.
    if unknown > 1 || (unknown == 1 && list.contains(&Elem::Known(-1))) {
        return false;
    }
    let name = format!("{}.kiln-shape", g.value(target).name);
    let Ok(t) = Tensor::from_vec(vec![values.len()], values) else {
        return false;
    };
    if g.find_value(&name).is_some() {
        return false;
    }
    let c = g.add_constant(name, t);
    node.inputs[1] = Some(c);
    true
}
