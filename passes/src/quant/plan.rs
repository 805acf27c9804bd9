//! Which constants of a graph are linear-layer weights, which activation
//! feeds them, and where an AWQ scale can be folded.

use kiln_ir::{DType, Graph, Op, ValueId};
use std::collections::BTreeMap;

/// How a weight is stored in the graph.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Orientation {
    /// `[in, out]`: the `MatMul` weight layout, packed as is.
    InOut,
    /// `[out, in]`: an embedding table, or a `Gemm` weight with `trans_b`.
    OutIn,
}

/// How a node reads a weight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UseKind {
    /// `MatMul(x, W)`.
    MatMul,
    /// `Gemm(x, W)` without C, with alpha 1, trans_a off.
    Gemm,
    /// `Gather(W, ids, axis = 0)`: an embedding lookup.
    Gather,
}

/// A 2-D f32 constant read only as a linear weight or embedding table.
#[derive(Clone, Debug)]
pub struct Candidate {
    /// The constant.
    pub value: ValueId,
    /// Its name (the checkpoint's tensor name).
    pub name: String,
    /// Input features.
    pub rows: usize,
    /// Output features.
    pub cols: usize,
    /// How the graph stores it.
    pub orientation: Orientation,
    /// Every node that reads it.
    pub uses: Vec<(usize, UseKind)>,
}

/// One activation and the weights that multiply it.
#[derive(Clone, Debug)]
pub struct Site {
    /// The activation value (the layers' shared input).
    pub activation: ValueId,
    /// Candidates multiplying it, in node order, with the node and the
    /// activation's operand position there.
    pub uses: Vec<(usize, usize, usize)>,
    /// Where `x / s` can be folded, if anywhere.
    pub fold: Option<Fold>,
}

impl Site {
    /// The first node reading the activation among the site's nodes.
    pub fn first_node(&self) -> usize {
        self.uses.iter().map(|u| u.1).min().unwrap_or(0)
    }

    /// The candidates, without repeats, in node order.
    pub fn candidates(&self) -> Vec<usize> {
        let mut out: Vec<usize> = Vec::new();
        for &(c, _, _) in &self.uses {
            if !out.contains(&c) {
                out.push(c);
            }
        }
        out
    }
}

/// Where a per-input-channel scale of a site's activation can be absorbed.
#[derive(Clone, Debug, PartialEq)]
pub enum Fold {
    /// A normalisation's scale (and bias) constants, used by nothing else.
    Norm {
        /// The norm node.
        node: usize,
        /// Its scale constant.
        scale: ValueId,
        /// Its bias constant (LayerNorm).
        bias: Option<ValueId>,
    },
    /// The output columns of the linear layer whose output is one factor of
    /// the product that forms the activation (SwiGLU's up projection).
    Columns {
        /// The candidate whose columns absorb the scale.
        candidate: usize,
    },
}

/// Candidates and sites of a graph.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Every candidate, in order of first use.
    pub candidates: Vec<Candidate>,
    /// Every activation that feeds candidates, in order of first use.
    pub sites: Vec<Site>,
}

fn is_one(x: f32) -> bool {
    x == 1.0
}

/// How node `n` reads operand `pos` as a weight, if it does so in a way
/// the quantized form supports.
fn use_kind(op: &Op, pos: usize, has_c: bool) -> Option<(UseKind, Orientation)> {
    match (op, pos) {
        (Op::MatMul, 1) => Some((UseKind::MatMul, Orientation::InOut)),
        (
            Op::Gemm {
                alpha,
                trans_a: false,
                trans_b,
                ..
            },
            1,
        ) if !has_c && is_one(alpha.0) => Some((
            UseKind::Gemm,
            if *trans_b {
                Orientation::OutIn
            } else {
                Orientation::InOut
            },
        )),
        (Op::Gather { axis: 0 }, 0) => Some((UseKind::Gather, Orientation::OutIn)),
        _ => None,
    }
}

/// What a constant's readers say about it: the orientation they agree on,
/// whether every use is supported, and the uses.
type Uses = (Option<Orientation>, bool, Vec<(usize, UseKind)>);

/// Finds the linear weights of `g`, the activations that feed them and the
/// folds available to AWQ.
pub fn plan(g: &Graph) -> Plan {
    // Every use of every 2-D f32 constant, and whether all of them are
    // supported and agree on orientation.
    let mut found: BTreeMap<ValueId, Uses> = BTreeMap::new();
    for (i, n) in g.nodes.iter().enumerate() {
        let has_c = n.inputs.get(2).copied().flatten().is_some();
        for (pos, v) in n.inputs.iter().enumerate() {
            let Some(v) = *v else { continue };
            let Some(t) = g.constant(v) else { continue };
            if t.dtype() != DType::F32 || t.dims().len() != 2 {
                continue;
            }
            let entry = found.entry(v).or_insert((None, true, Vec::new()));
            match use_kind(&n.op, pos, has_c) {
                Some((kind, orient)) if entry.0.is_none_or(|o| o == orient) => {
                    entry.0 = Some(orient);
                    entry.2.push((i, kind));
                }
                _ => entry.1 = false,
            }
        }
    }
    let outputs: Vec<ValueId> = g.outputs.clone();
    let mut candidates: Vec<Candidate> = found
        .into_iter()
        .filter_map(|(v, (orient, ok, uses))| {
            let orientation = orient?;
            if !ok || outputs.contains(&v) {
                return None;
            }
            let dims = g.constant(v)?.dims().to_vec();
            let (rows, cols) = match orientation {
                Orientation::InOut => (dims[0], dims[1]),
                Orientation::OutIn => (dims[1], dims[0]),
            };
            // Groups of 32 need at least one full group of inputs.
            (rows >= 32 && cols >= 1).then(|| Candidate {
                value: v,
                name: g.value(v).name.clone(),
                rows,
                cols,
                orientation,
                uses,
            })
        })
        .collect();
    candidates.sort_by_key(|c| c.uses.first().map(|u| u.0));

    // Sites: activations multiplying candidates.
    let mut sites: Vec<Site> = Vec::new();
    for (ci, c) in candidates.iter().enumerate() {
        for &(node, kind) in &c.uses {
            if kind == UseKind::Gather {
                continue;
            }
            let Some(x) = g.nodes[node].inputs[0] else {
                continue;
            };
            match sites.iter_mut().find(|s| s.activation == x) {
                Some(s) => s.uses.push((ci, node, 0)),
                None => sites.push(Site {
                    activation: x,
                    uses: vec![(ci, node, 0)],
                    fold: None,
                }),
            }
        }
    }
    for s in &mut sites {
        s.uses.sort_by_key(|u| u.1);
    }
    sites.sort_by_key(Site::first_node);
    let folds: Vec<Option<Fold>> = sites.iter().map(|s| find_fold(g, &candidates, s)).collect();
    for (s, f) in sites.iter_mut().zip(folds) {
        s.fold = f;
    }
    Plan { candidates, sites }
}

fn find_fold(g: &Graph, candidates: &[Candidate], site: &Site) -> Option<Fold> {
    let counts = g.use_counts();
    let x = site.activation;
    // Every reader of x must be one of the site's weights, so that dividing
    // x by s changes nothing else.
    if counts[x.index()] != site.uses.len() || g.constant(x).is_some() {
        return None;
    }
    let producers = g.producers();
    let p = *producers.get(&x)?;
    let node = &g.nodes[p];
    let dim = candidates[site.uses[0].0].rows;
    let exclusive_vector = |v: Option<ValueId>| -> Option<ValueId> {
        let v = v?;
        let t = g.constant(v)?;
        (t.dtype() == DType::F32 && t.dims() == [dim] && counts[v.index()] == 1).then_some(v)
    };
    match &node.op {
        Op::RmsNorm { axis, .. } | Op::LayerNorm { axis, .. }
            if *axis == -1 || {
                let rank = g.value(x).ty.shape.rank() as i64;
                *axis == rank - 1
            } =>
        {
            let scale = exclusive_vector(node.inputs.get(1).copied().flatten())?;
            let bias = match node.inputs.get(2).copied().flatten() {
                Some(b) => Some(exclusive_vector(Some(b))?),
                None => None,
            };
            Some(Fold::Norm {
                node: p,
                scale,
                bias,
            })
        }
        Op::Mul => {
            for operand in node.inputs.iter().flatten() {
                if counts[operand.index()] != 1 || g.value(*operand).ty.shape != g.value(x).ty.shape
                {
                    continue;
                }
                let Some(&q) = producers.get(operand) else {
                    continue;
                };
                let up = &g.nodes[q];
                if up.op != Op::MatMul {
                    continue;
                }
                let Some(w) = up.inputs[1] else { continue };
                let Some(ci) = candidates.iter().position(|c| c.value == w) else {
                    continue;
                };
                let c = &candidates[ci];
                if c.orientation == Orientation::InOut && c.uses.len() == 1 && c.cols == dim {
                    return Some(Fold::Columns { candidate: ci });
                }
            }
            None
        }
        _ => None,
    }
}
