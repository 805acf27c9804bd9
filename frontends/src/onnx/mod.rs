//! The ONNX importer: `ModelProto` → [`Graph`].
//!
//! Import runs in two phases. The first walks the (topologically sorted)
//! nodes and appends IR nodes, normalising opset differences; node results
//! carry the type the model declares for them, or a placeholder. The second
//! runs `kiln_ir::infer` over the graph (best effort: shapes that depend on
//! run-time values are completed by the `import` pass pipeline, which folds
//! shape computations), then verifies the graph.

mod attrs;
mod builder;
mod ops;
mod tensor;

#[cfg(test)]
mod tests;

pub use ops::supported_ops;
pub use tensor::{dtype_to_onnx, load_tensor_file, tensor_from_proto};

use crate::error::{ImportError, NodeRef};
use attrs::Attrs;
use builder::{Builder, FixupKind};
use kiln_ir::infer::GraphInferError;
use kiln_ir::{Dim, Graph, Op, Shape, ValueType};
use ops::NodeCtx;
use prost::Message;
use std::collections::{HashMap, HashSet};
use std::path::Path;
use tensor::{dtype_from_onnx, TensorReader};
use tract_onnx::pb::tensor_shape_proto::dimension::Value as DimValue;
use tract_onnx::pb::type_proto::Value as TypeValue;
use tract_onnx::pb::{GraphProto, ModelProto, NodeProto, ValueInfoProto};

/// Oldest default-domain opset the importer reads. Opsets 1-6 used
/// legacy broadcasting attributes and `consumed_inputs`.
pub const MIN_OPSET: i64 = 7;
/// Newest default-domain opset the importer knows (the `onnx` 1.2x releases).
pub const MAX_OPSET: i64 = 28;

/// Imports the ONNX model at `path`.
///
/// The file is memory-mapped and decoded; external data is resolved
/// relative to the file's folder. Errors name the file.
pub fn import(path: &Path) -> Result<Graph, ImportError> {
    let io = |source| ImportError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    // SAFETY: read-only mapping; the model file must not be truncated while
    // it is being decoded (the usual contract of mmap-based loaders).
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
    let base_dir = path.parent().unwrap_or_else(|| Path::new("."));
    import_bytes(&map, base_dir, &path.display().to_string())
}

/// Imports an ONNX model from memory.
///
/// `base_dir` is the folder external data paths are relative to, and
/// `file_label` names the model in error messages.
pub fn import_bytes(bytes: &[u8], base_dir: &Path, file_label: &str) -> Result<Graph, ImportError> {
    let mut b = build(bytes, base_dir, file_label)?;
    run_inference(&mut b).map_err(|source| ImportError::Infer {
        file: file_label.to_string(),
        source,
    })?;
    verified(b.g, file_label)
}

/// Phase 1 plus verification, without shape inference (for tests while
/// `kiln_ir::infer` is incomplete; node result types are placeholders).
#[cfg(test)]
pub(crate) fn import_bytes_uninferred(
    bytes: &[u8],
    base_dir: &Path,
    file_label: &str,
) -> Result<Graph, ImportError> {
    verified(build(bytes, base_dir, file_label)?.g, file_label)
}

fn verified(g: Graph, file: &str) -> Result<Graph, ImportError> {
    kiln_ir::verify::verify(&g).map_err(|source| ImportError::Verify {
        file: file.to_string(),
        source,
    })?;
    Ok(g)
}

/// Runs shape inference, resolving the pending fix-ups (CastLike targets,
/// legacy constants typed like another value) as inference reaches them.
///
/// Inference here is best effort: a node whose result shape depends on a
/// value computed at run time (a shape built from `Shape` → ... → `Range`)
/// keeps its declared (or placeholder) type. The `import` pipeline's
/// constant folding infers and folds node by node and completes those types;
/// its final strict inference reports what is still wrong, naming the node.
fn run_inference(b: &mut Builder) -> Result<(), GraphInferError> {
    let fixups = std::mem::take(&mut b.fixups);
    for i in 0..b.g.nodes.len() {
        for f in fixups.iter().filter(|f| f.node == i) {
            match f.kind {
                FixupKind::CastTo { like } => {
                    let dtype = b.g.value(like).ty.dtype;
                    if let Op::Cast { to, .. } = &mut b.g.nodes[i].op {
                        *to = dtype;
                    }
                }
                FixupKind::ConstLike { constant, like } => {
                    let dtype = b.g.value(like).ty.dtype;
                    let node = b.g.nodes[i].describe(&b.g);
                    b.retype_constant(constant, dtype)
                        .map_err(|e| GraphInferError {
                            node,
                            source: kiln_ir::infer::InferError {
                                op: "Constant".into(),
                                message: e.to_string(),
                            },
                        })?;
                }
            }
        }
        // A failure here is settled later by folding (see above).
        let _ = infer_one(&mut b.g, i);
    }
    Ok(())
}

/// Infers the result types of node `i` (the body of `infer_graph`).
fn infer_one(g: &mut Graph, i: usize) -> Result<(), GraphInferError> {
    let out = kiln_ir::infer::infer_node_in(g, &g.nodes[i])?;
    let outputs = g.nodes[i].outputs.clone();
    for (o, ty) in outputs.into_iter().zip(out) {
        g.value_mut(o).ty = ty;
    }
    Ok(())
}

fn invalid(file: &str, message: impl Into<String>) -> ImportError {
    ImportError::InvalidModel {
        file: file.to_string(),
        message: message.into(),
    }
}

fn is_default_domain(d: &str) -> bool {
    d.is_empty() || d == "ai.onnx"
}

/// How a declared type is used: graph inputs must have a known rank and get
/// generated symbols for unnamed dimensions; other declarations are hints.
#[derive(Clone, Copy, PartialEq)]
enum Decl {
    Input,
    Hint,
}

/// The IR type of a `ValueInfoProto`; `Ok(None)` for a hint that cannot be used.
fn value_type(
    vi: &ValueInfoProto,
    decl: Decl,
    file: &str,
) -> Result<Option<ValueType>, ImportError> {
    let err = |problem: String| ImportError::ValueType {
        file: file.to_string(),
        value: vi.name.clone(),
        problem,
    };
    let tensor = match vi.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        Some(TypeValue::TensorType(t)) => t,
        None if decl == Decl::Input => {
            return Err(err(
                "has no tensor type (sequences, maps and optionals are not supported)".into(),
            ))
        }
        None => return Ok(None),
    };
    let dtype = match dtype_from_onnx(tensor.elem_type) {
        Ok(d) => d,
        Err(t) if decl == Decl::Input => return Err(err(format!("unsupported element type {t}"))),
        Err(_) => return Ok(None),
    };
    let Some(shape) = &tensor.shape else {
        if decl == Decl::Input {
            return Err(err("has no shape (unknown rank is not supported)".into()));
        }
        return Ok(None);
    };
    let mut dims = Vec::with_capacity(shape.dim.len());
    for (i, d) in shape.dim.iter().enumerate() {
        let dim = match &d.value {
            Some(DimValue::DimValue(v)) if *v >= 0 => Dim::Fixed(*v as u64),
            Some(DimValue::DimValue(v)) => return Err(err(format!("negative dimension {v}"))),
            Some(DimValue::DimParam(p)) if !p.is_empty() => Dim::Sym(p.clone()),
            _ if decl == Decl::Input => Dim::Sym(format!("{}_dim{i}", vi.name)),
            _ => Dim::Unknown,
        };
        dims.push(dim);
    }
    Ok(Some(ValueType::new(dtype, Shape(dims))))
}

/// Node indices in an order where every producer precedes its consumers,
/// keeping the model's order where it is already valid.
fn topo_order(graph: &GraphProto, file: &str) -> Result<Vec<usize>, ImportError> {
    let nodes = &graph.node;
    let mut producer: HashMap<&str, usize> = HashMap::new();
    for (i, n) in nodes.iter().enumerate() {
        for o in n.output.iter().filter(|o| !o.is_empty()) {
            if producer.insert(o.as_str(), i).is_some() {
                return Err(invalid(
                    file,
                    format!("value '{o}' is produced by more than one node"),
                ));
            }
        }
    }
    // 0 = unvisited, 1 = on the stack, 2 = emitted.
    let mut state = vec![0u8; nodes.len()];
    let mut order = Vec::with_capacity(nodes.len());
    for root in 0..nodes.len() {
        if state[root] != 0 {
            continue;
        }
        state[root] = 1;
        let mut stack: Vec<(usize, usize)> = vec![(root, 0)];
        while let Some(&mut (i, ref mut k)) = stack.last_mut() {
            let inputs = &nodes[i].input;
            let mut next = None;
            while *k < inputs.len() {
                let name = inputs[*k].as_str();
                *k += 1;
                if let Some(&p) = producer.get(name) {
                    match state[p] {
                        0 => {
                            next = Some(p);
                            break;
                        }
                        1 => {
                            return Err(invalid(
                                file,
                                format!("the graph has a cycle through value '{name}'"),
                            ));
                        }
                        _ => {}
                    }
                }
            }
            match next {
                Some(p) => {
                    state[p] = 1;
                    stack.push((p, 0));
                }
                None => {
                    stack.pop();
                    state[i] = 2;
                    order.push(i);
                }
            }
        }
    }
    Ok(order)
}

/// Phase 1: decode and build the graph with declared or placeholder types.
fn build(bytes: &[u8], base_dir: &Path, file: &str) -> Result<Builder, ImportError> {
    let model = ModelProto::decode(bytes).map_err(|source| ImportError::Decode {
        file: file.to_string(),
        source,
    })?;
    let graph = model
        .graph
        .as_ref()
        .ok_or_else(|| invalid(file, "not an ONNX model: it has no graph"))?;

    let mut opsets: HashMap<String, i64> = HashMap::new();
    for o in &model.opset_import {
        let domain = if is_default_domain(&o.domain) {
            String::new()
        } else {
            o.domain.clone()
        };
        opsets.insert(domain, o.version);
    }
    // Models of other domains only (ai.onnx.ml) may omit the default
    // opset; their nodes are then reported one by one as unsupported.
    let default_opset = opsets.get("").copied();
    if let Some(v) = default_opset.filter(|v| !(MIN_OPSET..=MAX_OPSET).contains(v)) {
        return Err(ImportError::UnsupportedOpset {
            file: file.to_string(),
            domain: "ai.onnx".into(),
            version: v,
            supported: format!("{MIN_OPSET} to {MAX_OPSET}"),
        });
    }

    // Every name the model uses, so generated names never collide with one.
    let mut taken: HashSet<String> = HashSet::new();
    taken.extend(graph.input.iter().map(|v| v.name.clone()));
    taken.extend(graph.output.iter().map(|v| v.name.clone()));
    taken.extend(graph.initializer.iter().map(|t| t.name.clone()));
    for n in &graph.node {
        taken.extend(n.input.iter().cloned());
        taken.extend(n.output.iter().cloned());
    }

    let name = if graph.name.is_empty() {
        Path::new(file)
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default()
    } else {
        graph.name.clone()
    };
    let mut b = Builder::new(&name, taken, TensorReader::new(base_dir, file));
    add_metadata(&mut b.g, &model, default_opset);

    // Initializers are constants; a graph input that shares an
    // initializer's name is a constant with a default, not an input.
    for t in &graph.initializer {
        if t.name.is_empty() || b.is_defined(&t.name) {
            return Err(invalid(
                file,
                format!("initializer name '{}' is empty or used twice", t.name),
            ));
        }
        let tensor = b.tensors.read(t, &t.name)?;
        b.add_named_constant(&t.name, tensor);
    }
    for s in &graph.sparse_initializer {
        let name = s
            .values
            .as_ref()
            .map(|v| v.name.clone())
            .unwrap_or_default();
        if name.is_empty() || b.is_defined(&name) {
            return Err(invalid(
                file,
                format!("sparse initializer name '{name}' is empty or used twice"),
            ));
        }
        let tensor = b.tensors.read_sparse(s, &name)?;
        b.add_named_constant(&name, tensor);
    }
    let initializer_names: HashSet<&str> = graph
        .initializer
        .iter()
        .map(|t| t.name.as_str())
        .chain(
            graph
                .sparse_initializer
                .iter()
                .filter_map(|s| s.values.as_ref().map(|v| v.name.as_str())),
        )
        .collect();
    for vi in &graph.input {
        if initializer_names.contains(vi.name.as_str()) {
            continue;
        }
        if vi.name.is_empty() || b.is_defined(&vi.name) {
            return Err(invalid(
                file,
                format!("graph input name '{}' is empty or used twice", vi.name),
            ));
        }
        let ty = value_type(vi, Decl::Input, file)?.expect("inputs always have a type or fail");
        b.add_input(&vi.name, ty);
    }

    for vi in graph.value_info.iter().chain(&graph.output) {
        if let Some(ty) = value_type(vi, Decl::Hint, file)? {
            b.declared.insert(vi.name.clone(), ty);
        }
    }

    let functions: HashSet<(&str, &str)> = model
        .functions
        .iter()
        .map(|f| {
            (
                f.domain.as_deref().unwrap_or(""),
                f.name.as_deref().unwrap_or(""),
            )
        })
        .collect();
    for i in topo_order(graph, file)? {
        import_node(&mut b, &graph.node[i], &opsets, &functions, file)?;
    }

    for vi in &graph.output {
        let id = b
            .lookup(&vi.name)
            .ok_or_else(|| invalid(file, format!("graph output '{}' is never defined", vi.name)))?;
        b.g.outputs.push(id);
    }
    Ok(b)
}

fn add_metadata(g: &mut Graph, model: &ModelProto, default_opset: Option<i64>) {
    let m = &mut g.metadata;
    m.insert("onnx.ir_version".into(), model.ir_version.to_string());
    if let Some(v) = default_opset {
        m.insert("onnx.opset".into(), v.to_string());
    }
    for o in &model.opset_import {
        if !is_default_domain(&o.domain) {
            m.insert(format!("onnx.opset.{}", o.domain), o.version.to_string());
        }
    }
    if !model.producer_name.is_empty() {
        m.insert("onnx.producer".into(), model.producer_name.clone());
    }
    if !model.producer_version.is_empty() {
        m.insert(
            "onnx.producer_version".into(),
            model.producer_version.clone(),
        );
    }
    if !model.domain.is_empty() {
        m.insert("onnx.domain".into(), model.domain.clone());
    }
    if model.model_version != 0 {
        m.insert("onnx.model_version".into(), model.model_version.to_string());
    }
    for p in &model.metadata_props {
        m.insert(format!("onnx.meta.{}", p.key), p.value.clone());
    }
}

fn import_node(
    b: &mut Builder,
    proto: &NodeProto,
    opsets: &HashMap<String, i64>,
    functions: &HashSet<(&str, &str)>,
    file: &str,
) -> Result<(), ImportError> {
    let domain_key = if is_default_domain(&proto.domain) {
        ""
    } else {
        proto.domain.as_str()
    };
    let Some(&opset) = opsets.get(domain_key) else {
        let domain = if domain_key.is_empty() {
            "ai.onnx"
        } else {
            domain_key
        };
        return Err(invalid(
            file,
            format!(
                "node '{}' ({}) uses domain '{domain}', which the model does not import",
                proto.name, proto.op_type
            ),
        ));
    };
    let node = NodeRef {
        name: proto.name.clone(),
        first_output: proto
            .output
            .iter()
            .find(|o| !o.is_empty())
            .cloned()
            .unwrap_or_default(),
        op_type: proto.op_type.clone(),
        domain: proto.domain.clone(),
        opset,
    };
    if functions.contains(&(proto.domain.as_str(), proto.op_type.as_str())) {
        return Err(ImportError::UnsupportedFeature {
            file: file.to_string(),
            node: Box::new(node),
            feature: "calls a model-local function (function inlining is not implemented)".into(),
        });
    }
    let handler = if domain_key.is_empty() {
        ops::handler(&proto.op_type)
    } else {
        None
    };
    let Some(handler) = handler else {
        return Err(ImportError::UnsupportedOp {
            file: file.to_string(),
            node: Box::new(node),
        });
    };

    let arity = |problem: String| ImportError::NodeArity {
        file: file.to_string(),
        node: Box::new(node.clone()),
        problem,
    };
    let mut inputs = Vec::with_capacity(proto.input.len());
    for name in &proto.input {
        if name.is_empty() {
            inputs.push(None);
        } else {
            let v = b.lookup(name).ok_or_else(|| {
                arity(format!(
                    "input '{name}' is not defined by any node, input or initializer"
                ))
            })?;
            inputs.push(Some(v));
        }
    }
    while matches!(inputs.last(), Some(None)) {
        inputs.pop();
    }
    let mut outputs: Vec<String> = proto.output.clone();
    while outputs.last().is_some_and(String::is_empty) {
        outputs.pop();
    }
    for o in &mut outputs {
        if o.is_empty() {
            // An omitted output in the middle still needs a value in the IR.
            *o = b.fresh("unused");
        } else if b.is_defined(o) {
            return Err(invalid(
                file,
                format!("value '{o}' is defined more than once"),
            ));
        }
    }

    let ctx = NodeCtx {
        proto,
        node: &node,
        opset,
        file,
        attrs: Attrs::new(&proto.attribute, &node, file),
        inputs,
        outputs,
    };
    handler(b, &ctx)?;
    if let Some(a) = ctx.attrs.first_unused() {
        return Err(ctx.attrs.err(
            a,
            "not supported (unknown to the importer for this op and opset)",
        ));
    }
    // Every handler must define every requested output.
    if let Some(o) = ctx.outputs.iter().find(|o| !b.is_defined(o)) {
        return Err(arity(format!(
            "output '{o}' was not produced (importer bug)"
        )));
    }
    Ok(())
}
