//! Incremental construction of the IR graph while walking the ONNX nodes.
//!
//! Node results get the type the model declares for them (`value_info`,
//! graph outputs) or a placeholder; shape inference overwrites both once the
//! whole graph is built. Rewrites that need an element type the model does
//! not declare (CastLike, legacy attributes turned into constant inputs)
//! record a [`Fixup`] that is resolved while inference walks the graph.

use super::tensor::{tensor_of_dtype, TensorReader};
use kiln_ir::{DType, Graph, Node, Op, Shape, Tensor, ValueId, ValueType};
use std::collections::{HashMap, HashSet};

/// A rewrite that needs an inferred element type, applied just before the
/// node at index `node` is inferred.
#[derive(Clone, Debug)]
pub(crate) struct Fixup {
    /// Index of the node in `Graph::nodes`.
    pub node: usize,
    /// What to do.
    pub kind: FixupKind,
}

/// The kinds of [`Fixup`].
#[derive(Clone, Debug)]
pub(crate) enum FixupKind {
    /// The node is a `Cast` lowered from `CastLike`: set `to` to the dtype of `like`.
    CastTo {
        /// The value whose dtype is the target.
        like: ValueId,
    },
    /// Convert the constant to the dtype of `like` (legacy attribute turned input).
    ConstLike {
        /// The constant.
        constant: ValueId,
        /// The value whose dtype the constant must have.
        like: ValueId,
    },
}

/// The type placeholder of a node result whose type is not declared; it is
/// always overwritten by inference.
pub(crate) fn placeholder() -> ValueType {
    ValueType::new(DType::F32, Shape::scalar())
}

/// Graph under construction plus the name bookkeeping of the import.
pub(crate) struct Builder {
    /// The graph.
    pub g: Graph,
    /// Values by ONNX name.
    names: HashMap<String, ValueId>,
    /// Every name the model mentions plus every generated one.
    taken: HashSet<String>,
    /// Whether each value's stored type is trustworthy before inference.
    known: Vec<bool>,
    /// Types declared by the model for intermediate values and outputs.
    pub declared: HashMap<String, ValueType>,
    /// Pending rewrites.
    pub fixups: Vec<Fixup>,
    /// Reads constant tensors.
    pub tensors: TensorReader,
}

impl Builder {
    /// A builder for a graph named `name`; `taken` holds every name the model uses.
    pub(crate) fn new(name: &str, taken: HashSet<String>, tensors: TensorReader) -> Self {
        Builder {
            g: Graph::new(name),
            names: HashMap::new(),
            taken,
            known: Vec::new(),
            declared: HashMap::new(),
            fixups: Vec::new(),
            tensors,
        }
    }

    /// A new unique name starting with `kiln.`, so it cannot clash with model names.
    pub(crate) fn fresh(&mut self, hint: &str) -> String {
        let base = format!("kiln.{hint}");
        let mut name = base.clone();
        let mut i = 1;
        while self.taken.contains(&name) {
            name = format!("{base}.{i}");
            i += 1;
        }
        self.taken.insert(name.clone());
        name
    }

    /// The value an ONNX name refers to.
    pub(crate) fn lookup(&self, name: &str) -> Option<ValueId> {
        self.names.get(name).copied()
    }

    /// True when the ONNX name is already defined.
    pub(crate) fn is_defined(&self, name: &str) -> bool {
        self.names.contains_key(name)
    }

    fn push_value(&mut self, name: String, ty: ValueType, known: bool) -> ValueId {
        let id = self.g.add_value(name.clone(), ty);
        self.known.push(known);
        self.names.insert(name, id);
        id
    }

    /// Adds a graph input (its type is declared by the model).
    pub(crate) fn add_input(&mut self, name: &str, ty: ValueType) -> ValueId {
        let id = self.push_value(name.to_string(), ty, true);
        self.g.inputs.push(id);
        id
    }

    /// Adds a constant under an exact (model) name.
    pub(crate) fn add_named_constant(&mut self, name: &str, t: Tensor) -> ValueId {
        let id = self.g.add_constant(name, t);
        self.known.push(true);
        self.names.insert(name.to_string(), id);
        self.taken.insert(name.to_string());
        id
    }

    /// Adds a constant under a generated name.
    pub(crate) fn add_constant(&mut self, hint: &str, t: Tensor) -> ValueId {
        let name = self.fresh(hint);
        self.add_named_constant(&name, t)
    }

    /// Adds an i64 1-d constant.
    pub(crate) fn const_i64s(&mut self, hint: &str, v: &[i64]) -> ValueId {
        let t =
            Tensor::from_vec(vec![v.len()], v.to_vec()).expect("length matches by construction");
        self.add_constant(hint, t)
    }

    /// Adds a constant holding `values` with the element type of `like`,
    /// converting it once `like`'s type is inferred if it is not known yet.
    /// `consumer` is the index of the node that will use the constant.
    pub(crate) fn const_like(
        &mut self,
        hint: &str,
        dims: Vec<usize>,
        values: &[f64],
        like: ValueId,
        consumer: usize,
    ) -> ValueId {
        let dtype = self.known_dtype(like);
        let t = tensor_of_dtype(dtype.unwrap_or(DType::F32), dims, values)
            .expect("length matches by construction");
        let c = self.add_constant(hint, t);
        if dtype.is_none() {
            self.fixups.push(Fixup {
                node: consumer,
                kind: FixupKind::ConstLike { constant: c, like },
            });
        }
        c
    }

    /// The element type of a value, when known before inference.
    pub(crate) fn known_dtype(&self, v: ValueId) -> Option<DType> {
        self.known[v.index()].then(|| self.g.value(v).ty.dtype)
    }

    /// The type of a value, when known before inference.
    pub(crate) fn known_type(&self, v: ValueId) -> Option<&ValueType> {
        self.known[v.index()].then(|| &self.g.value(v).ty)
    }

    /// Index the next node will get.
    pub(crate) fn next_node_index(&self) -> usize {
        self.g.nodes.len()
    }

    /// Defines a node result under a model name, with its declared type when there is one.
    pub(crate) fn define_output(&mut self, name: &str) -> ValueId {
        match self.declared.get(name).cloned() {
            Some(ty) => self.push_value(name.to_string(), ty, true),
            None => self.push_value(name.to_string(), placeholder(), false),
        }
    }

    /// Appends a node whose results take the given model names.
    pub(crate) fn emit(
        &mut self,
        node_name: &str,
        op: Op,
        inputs: Vec<Option<ValueId>>,
        outputs: &[String],
    ) -> Vec<ValueId> {
        let outs: Vec<ValueId> = outputs.iter().map(|o| self.define_output(o)).collect();
        self.push_node(node_name, op, inputs, outs.clone());
        outs
    }

    /// Appends a helper node with one generated result.
    pub(crate) fn emit_tmp(
        &mut self,
        node_name: &str,
        op: Op,
        inputs: Vec<Option<ValueId>>,
        hint: &str,
    ) -> ValueId {
        let name = self.fresh(hint);
        let out = self.push_value(name, placeholder(), false);
        self.push_node(node_name, op, inputs, vec![out]);
        out
    }

    fn push_node(
        &mut self,
        node_name: &str,
        op: Op,
        mut inputs: Vec<Option<ValueId>>,
        outputs: Vec<ValueId>,
    ) {
        // Absent trailing optionals are dropped so operand counts are canonical.
        while matches!(inputs.last(), Some(None)) {
            inputs.pop();
        }
        self.g.add_node(Node {
            name: node_name.to_string(),
            op,
            inputs,
            outputs,
        });
    }

    /// Converts a constant to another element type in place.
    pub(crate) fn retype_constant(
        &mut self,
        c: ValueId,
        dtype: DType,
    ) -> Result<(), kiln_ir::TensorError> {
        let Some(t) = self.g.constants.get(&c) else {
            return Ok(());
        };
        if t.dtype() == dtype {
            return Ok(());
        }
        let t = tensor_of_dtype(dtype, t.dims().to_vec(), &t.to_f64_vec())?;
        self.g.value_mut(c).ty.dtype = dtype;
        self.g.constants.insert(c, t);
        Ok(())
    }
}
