//! A small helper for writing graphs by hand: architecture templates read like
//! the model definitions they mirror instead of like node bookkeeping.

use kiln_ir::{infer, DType, Dim, Graph, Node, Op, Shape, Tensor, ValueId, ValueType};

/// Builds a graph node by node; values get readable names from a scope prefix.
pub struct GraphBuilder {
    graph: Graph,
    scope: String,
    counter: usize,
}

impl GraphBuilder {
    /// An empty graph named `name`.
    pub fn new(name: &str) -> Self {
        GraphBuilder {
            graph: Graph::new(name),
            scope: String::new(),
            counter: 0,
        }
    }

    /// Sets the prefix of the names of values added from now on (e.g. `layers.3`).
    pub fn scope(&mut self, scope: impl Into<String>) {
        self.scope = scope.into();
    }

    /// Adds a graph input with a shape written as fixed sizes or symbols.
    pub fn input(&mut self, name: &str, dtype: DType, dims: &[DimSpec]) -> ValueId {
        let shape = Shape(dims.iter().map(DimSpec::to_dim).collect());
        let id = self.graph.add_value(name, ValueType::new(dtype, shape));
        self.graph.inputs.push(id);
        id
    }

    /// Adds a constant (a weight or a literal) under its own name.
    pub fn constant(&mut self, name: &str, tensor: Tensor) -> ValueId {
        self.graph.add_constant(name, tensor)
    }

    /// Adds a scalar f32 constant.
    pub fn scalar_f32(&mut self, value: f32) -> ValueId {
        let name = self.fresh("const");
        self.graph.add_constant(name, Tensor::scalar(value))
    }

    /// Adds a 1-D i64 constant (axes, shapes, indices).
    pub fn ints(&mut self, values: &[i64]) -> ValueId {
        let name = self.fresh("ints");
        let t = Tensor::from_vec(vec![values.len()], values.to_vec())
            .expect("a vector's length matches its dims");
        self.graph.add_constant(name, t)
    }

    /// Adds a node with one output and returns it.
    pub fn op(&mut self, op: Op, inputs: &[ValueId]) -> ValueId {
        self.op_opt(op, &inputs.iter().map(|&v| Some(v)).collect::<Vec<_>>())
    }

    /// Adds a node with optional (absent) inputs and one output.
    pub fn op_opt(&mut self, op: Op, inputs: &[Option<ValueId>]) -> ValueId {
        let name = self.fresh(op.name());
        let out = self
            .graph
            .add_value(name.clone(), ValueType::new(DType::F32, Shape(Vec::new())));
        self.graph.add_node(Node {
            name,
            op,
            inputs: inputs.to_vec(),
            outputs: vec![out],
        });
        out
    }

    /// Renames a value (used for graph outputs, whose names are the interface).
    pub fn rename(&mut self, id: ValueId, name: &str) {
        self.graph.value_mut(id).name = name.to_string();
    }

    /// Marks a value as a graph output under `name`.
    pub fn output(&mut self, id: ValueId, name: &str) {
        self.rename(id, name);
        self.graph.outputs.push(id);
    }

    /// Sets a metadata entry.
    pub fn meta(&mut self, key: &str, value: impl Into<String>) {
        self.graph.metadata.insert(key.to_string(), value.into());
    }

    /// Infers every value's type and returns the graph.
    pub fn finish(mut self) -> Result<Graph, infer::GraphInferError> {
        infer::infer_graph(&mut self.graph)?;
        Ok(self.graph)
    }

    fn fresh(&mut self, what: &str) -> String {
        self.counter += 1;
        if self.scope.is_empty() {
            format!("{what}_{}", self.counter)
        } else {
            format!("{}/{what}_{}", self.scope, self.counter)
        }
    }

    // ---- common compositions ----

    /// `x · w` where `w` is stored input-major (`[in, out]`), plus an optional bias.
    pub fn linear(&mut self, x: ValueId, w: ValueId, bias: Option<ValueId>) -> ValueId {
        let y = self.op(Op::MatMul, &[x, w]);
        match bias {
            Some(b) => self.op(Op::Add, &[y, b]),
            None => y,
        }
    }

    /// Reshape to a target written with ONNX's 0 (copy) and -1 (infer).
    pub fn reshape(&mut self, x: ValueId, target: &[i64]) -> ValueId {
        let shape = self.ints(target);
        self.op(Op::Reshape { allowzero: false }, &[x, shape])
    }

    /// Scaled dot-product attention over `[batch, seq, heads·head_dim]`
    /// operands, with the default scale `1/√head_dim`.
    pub fn attention(
        &mut self,
        causal: bool,
        heads: usize,
        kv_heads: usize,
        inputs: &[ValueId],
    ) -> ValueId {
        let op = Op::Attention {
            is_causal: causal,
            q_num_heads: heads as i64,
            kv_num_heads: kv_heads as i64,
            scale: None,
            softcap: 0.0.into(),
            qk_matmul_output_mode: 0,
            softmax_precision: None,
        };
        self.op(op, inputs)
    }

    /// Inserts axes of size 1.
    pub fn unsqueeze(&mut self, x: ValueId, axes: &[i64]) -> ValueId {
        let axes = self.ints(axes);
        self.op(Op::Unsqueeze { axes: None }, &[x, axes])
    }
}

/// A dimension of a graph input: fixed or a named symbol.
#[derive(Clone, Debug)]
pub enum DimSpec {
    /// A fixed size.
    Fixed(u64),
    /// A symbol bound at run time.
    Sym(&'static str),
}

impl DimSpec {
    fn to_dim(&self) -> Dim {
        match self {
            DimSpec::Fixed(n) => Dim::Fixed(*n),
            DimSpec::Sym(s) => Dim::Sym((*s).to_string()),
        }
    }
}
