//! Extraction: one e-node per needed e-class, chosen by DAG cost (a shared
//! e-class is paid for once, however many users it has), never a cycle.

use super::analysis::EG;
use super::cost::CostModel;
use super::lang::ENode;
use egg::{CostFunction, Extractor, Id, Language};
use std::collections::HashMap;

/// The chosen e-node of every e-class reachable from the roots.
pub(crate) type Choice = HashMap<Id, ENode>;

struct Bits(Vec<u64>);

impl Bits {
    fn new(n: usize) -> Self {
        Bits(vec![0; n.div_ceil(64)])
    }
    fn set(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }
    fn has(&self, i: usize) -> bool {
        self.0[i / 64] >> (i % 64) & 1 == 1
    }
    fn union(&mut self, o: &Bits) {
        for (a, b) in self.0.iter_mut().zip(&o.0) {
            *a |= b;
        }
    }
    fn ones(&self) -> impl Iterator<Item = usize> + '_ {
        self.0.iter().enumerate().flat_map(|(w, &bits)| {
            let mut b = bits;
            std::iter::from_fn(move || {
                (b != 0).then(|| {
                    let t = b.trailing_zeros() as usize;
                    b &= b - 1;
                    w * 64 + t
                })
            })
        })
    }
}

struct Best {
    node: usize,
    total: f64,
    set: Bits,
}

/// Greedy DAG extraction: each class keeps the node whose sub-DAG (the union
/// of its operands' sub-DAGs, each class counted once) is cheapest, iterated
/// to a fixed point. Returns `None` if a root has no finite choice or the
/// choices form a cycle; [`extract_tree`] is the fallback.
pub(crate) fn extract_dag(eg: &EG, cost: &CostModel, roots: &[Id]) -> Option<Choice> {
    let classes: Vec<Id> = {
        let mut c: Vec<Id> = eg.classes().map(|c| c.id).collect();
        c.sort();
        c
    };
    let index: HashMap<Id, usize> = classes.iter().enumerate().map(|(i, &c)| (c, i)).collect();
    let n = classes.len();
    let own: Vec<Vec<f64>> = classes
        .iter()
        .map(|&c| {
            eg[c]
                .nodes
                .iter()
                .map(|nd| cost.node_ns(eg, c, nd))
                .collect()
        })
        .collect();
    let kids: Vec<Vec<Vec<usize>>> = classes
        .iter()
        .map(|&c| {
            eg[c]
                .nodes
                .iter()
                .map(|nd| nd.children().iter().map(|k| index[&eg.find(*k)]).collect())
                .collect()
        })
        .collect();
    let mut best: Vec<Option<Best>> = (0..n).map(|_| None).collect();
    for _pass in 0..64 {
        let mut changed = false;
        for c in 0..n {
            let mut pick: Option<Best> = None;
            for (k, ch) in kids[c].iter().enumerate() {
                if ch.iter().any(|&d| best[d].is_none()) {
                    continue;
                }
                let mut set = Bits::new(n);
                for &d in ch {
                    if let Some(b) = &best[d] {
                        set.union(&b.set);
                    }
                }
                if set.has(c) {
                    continue;
                }
                set.set(c);
                let total: f64 = set
                    .ones()
                    .map(|d| {
                        if d == c {
                            own[c][k]
                        } else {
                            best[d].as_ref().map_or(0.0, |b| own[d][b.node])
                        }
                    })
                    .sum();
                if pick.as_ref().is_none_or(|p| total < p.total - 1e-6) {
                    pick = Some(Best {
                        node: k,
                        total,
                        set,
                    });
                }
            }
            if let Some(p) = pick {
                let better = match &best[c] {
                    None => true,
                    Some(b) => p.node != b.node && p.total < b.total - 1e-6,
                };
                if better {
                    changed = true;
                }
                if better || best[c].as_ref().is_some_and(|b| b.node == p.node) {
                    best[c] = Some(p);
                }
            }
        }
        if !changed {
            break;
        }
    }
    let mut choice = Choice::new();
    let mut state: HashMap<usize, bool> = HashMap::new(); // false: on the stack, true: done
    fn visit(
        c: usize,
        best: &[Option<Best>],
        kids: &[Vec<Vec<usize>>],
        state: &mut HashMap<usize, bool>,
    ) -> bool {
        match state.get(&c) {
            Some(true) => return true,
            Some(false) => return false,
            None => {}
        }
        let Some(b) = &best[c] else {
            return false;
        };
        state.insert(c, false);
        for &d in &kids[c][b.node] {
            if !visit(d, best, kids, state) {
                return false;
            }
        }
        state.insert(c, true);
        true
    }
    for r in roots {
        let r = *index.get(&eg.find(*r))?;
        if !visit(r, &best, &kids, &mut state) {
            return None;
        }
    }
    for (&c, &done) in &state {
        if done {
            if let Some(b) = &best[c] {
                choice.insert(classes[c], eg[classes[c]].nodes[b.node].clone());
            }
        }
    }
    Some(choice)
}

struct TreeCost<'a> {
    costs: &'a HashMap<ENode, f64>,
}

impl CostFunction<ENode> for TreeCost<'_> {
    type Cost = f64;
    fn cost<C: FnMut(Id) -> f64>(&mut self, enode: &ENode, mut costs: C) -> f64 {
        let own = self.costs.get(enode).copied().unwrap_or(f64::INFINITY);
        enode.children().iter().fold(own, |acc, &c| acc + costs(c))
    }
}

/// Tree-cost extraction with egg's extractor: acyclic by construction
/// (every op costs more than nothing), used when the DAG choice fails.
pub(crate) fn extract_tree(eg: &EG, cost: &CostModel, roots: &[Id]) -> Option<Choice> {
    let mut costs = HashMap::new();
    for class in eg.classes() {
        for nd in &class.nodes {
            costs.insert(nd.clone(), cost.node_ns(eg, class.id, nd).max(1e-3));
        }
    }
    let ex = Extractor::new(eg, TreeCost { costs: &costs });
    let mut choice = Choice::new();
    let mut stack: Vec<Id> = roots.iter().map(|&r| eg.find(r)).collect();
    while let Some(c) = stack.pop() {
        if choice.contains_key(&c) {
            continue;
        }
        let (cost, node) = (ex.find_best_cost(c), ex.find_best_node(c).clone());
        if !cost.is_finite() {
            return None;
        }
        stack.extend(node.children().iter().map(|&k| eg.find(k)));
        choice.insert(c, node);
    }
    Some(choice)
}
