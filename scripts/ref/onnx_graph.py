"""A small ONNX graph builder shared by build_minilm_onnx.py and build_llama_onnx.py.

Nodes are plain standard ops, laid out the way torch.onnx.export lays out the
same PyTorch modules, so onnxruntime's own graph fusions apply to them.
"""
import collections
import os
import tempfile

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


class Graph:
    """Accumulates nodes and initializers; names are generated per op type."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.counts: collections.Counter = collections.Counter()
        self.consts: dict[tuple, str] = {}

    def fresh(self, stem: str) -> str:
        self.counts[stem] += 1
        return f"{stem}_{self.counts[stem]}"

    def init(self, name: str, arr: np.ndarray) -> str:
        """Adds a named initializer (a weight)."""
        self.inits.append(numpy_helper.from_array(np.array(arr, order="C", copy=True), name))
        return name

    def const(self, values, dtype=np.int64) -> str:
        """A small constant initializer, shared between uses of the same value."""
        arr = np.asarray(values, dtype=dtype)
        key = (arr.dtype.str, arr.shape, arr.tobytes())
        if key not in self.consts:
            self.consts[key] = self.init(self.fresh("const"), arr)
        return self.consts[key]

    def op(self, op_type: str, inputs: list[str], out: str | None = None, **attrs) -> str:
        """Adds one node with a single output and returns the output name."""
        out = out or self.fresh(op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=self.fresh("n_" + op_type), **attrs))
        return out

    def model(self, inputs, outputs, name: str) -> onnx.ModelProto:
        g = helper.make_graph(self.nodes, name, inputs, outputs, self.inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="kiln-ref")
        m.ir_version = 8
        return m


def tensor_info(name: str, elem, dims) -> onnx.ValueInfoProto:
    """A graph input/output with symbolic or fixed dims."""
    return helper.make_tensor_value_info(name, elem, dims)


F32, I64 = TensorProto.FLOAT, TensorProto.INT64


def ort_optimized_op_counts(model_path: str, threads: int = 2) -> dict[str, int]:
    """Op types of the graph after onnxruntime's ORT_ENABLE_ALL optimisation (to see what it fused)."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as d:
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.intra_op_num_threads = threads
        so.optimized_model_filepath = os.path.join(d, "opt.onnx")
        so.add_session_config_entry("session.optimized_model_external_initializers_file_name", "opt.data")
        so.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes", "1024")
        ort.InferenceSession(model_path, so, providers=["CPUExecutionProvider"])
        m = onnx.load(so.optimized_model_filepath, load_external_data=False)
        return dict(collections.Counter(n.op_type for n in m.graph.node).most_common())
