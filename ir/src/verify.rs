//! Structural checks every pass must preserve.

use crate::{Graph, ValueId};
use std::collections::HashSet;

/// A broken invariant, naming the node or value at fault.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum VerifyError {
    /// A value is defined by more than one input, constant or node output.
    #[error("value `{0}` is defined more than once")]
    Redefined(String),
    /// Two values share a name.
    #[error("two values are named `{0}`")]
    DuplicateName(String),
    /// A node uses a value before (or without) its definition.
    #[error("node {node} uses `{value}` before it is defined")]
    UseBeforeDef {
        /// The node, described.
        node: String,
        /// The value's name.
        value: String,
    },
    /// A graph output is never defined.
    #[error("graph output `{0}` is never defined")]
    UndefinedOutput(String),
    /// A value id is out of range.
    #[error("node {0} refers to a value id that does not exist")]
    DanglingId(String),
    /// A constant's data does not match its declared type.
    #[error("constant `{name}` holds {actual}, its value says {declared}")]
    ConstantType {
        /// The value's name.
        name: String,
        /// What the tensor holds.
        actual: String,
        /// What the value type declares.
        declared: String,
    },
}

/// Checks that the graph is well formed: single definitions, unique names,
/// topological order, constants matching their types.
pub fn verify(g: &Graph) -> Result<(), VerifyError> {
    let n = g.num_values();
    let mut defined = vec![false; n];
    let define = |v: ValueId, defined: &mut Vec<bool>| {
        if defined[v.index()] {
            return Err(VerifyError::Redefined(g.value(v).name.clone()));
        }
        defined[v.index()] = true;
        Ok(())
    };
    let mut names = HashSet::new();
    for v in g.values() {
        if !names.insert(v.name.as_str()) {
            return Err(VerifyError::DuplicateName(v.name.clone()));
        }
    }
    for &i in &g.inputs {
        define(i, &mut defined)?;
    }
    for (&c, t) in &g.constants {
        define(c, &mut defined)?;
        let ty = &g.value(c).ty;
        let dims: Option<Vec<u64>> = ty.shape.as_fixed();
        let actual: Vec<u64> = t.dims().iter().map(|&d| d as u64).collect();
        if ty.dtype != t.dtype() || dims.as_ref() != Some(&actual) {
            return Err(VerifyError::ConstantType {
                name: g.value(c).name.clone(),
                actual: format!("{}{:?}", t.dtype(), t.dims()),
                declared: ty.to_string(),
            });
        }
    }
    for node in &g.nodes {
        for v in node.present_inputs().chain(node.outputs.iter().copied()) {
            if v.index() >= n {
                return Err(VerifyError::DanglingId(node.describe(g)));
            }
        }
        for v in node.present_inputs() {
            if !defined[v.index()] {
                return Err(VerifyError::UseBeforeDef {
                    node: node.describe(g),
                    value: g.value(v).name.clone(),
                });
            }
        }
        for &o in &node.outputs {
            define(o, &mut defined)?;
        }
    }
    for &o in &g.outputs {
        if o.index() >= n || !defined[o.index()] {
            return Err(VerifyError::UndefinedOutput(
                g.values()
                    .get(o.index())
                    .map(|v| v.name.clone())
                    .unwrap_or_default(),
            ));
        }
    }
    Ok(())
}
