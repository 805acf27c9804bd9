"""Builds an ONNX graph of all-MiniLM-L6-v2 (BERT + mean pooling + L2 normalise) and checks it.

Usage: build_minilm_onnx.py MODEL_DIR OUT.onnx [--reference minilm_embeddings.safetensors] [--no-check]

The graph is what torch.onnx.export (opset 17) produces for the Hugging Face
BertModel followed by sentence-transformers' Pooling (mean) and Normalize:
plain MatMul/Add/Reshape/Transpose/Softmax attention, LayerNormalization as one
op, GELU as x * 0.5 * (1 + Erf(x / sqrt 2)), the padding mask as
(1 - mask) * float32.min added to the scores. onnxruntime fuses these patterns
itself, so it runs the graph at its best.

  inputs  input_ids, attention_mask, token_type_ids  int64 [batch, seq]
  outputs last_hidden_state f32 [batch, seq, hidden], sentence_embedding f32 [batch, hidden]

Check (unless --no-check): the padded batch stored by minilm_reference.py (default
$KILN_CACHE/data/ref/minilm_embeddings.safetensors) runs through onnxruntime in one
batch; every sentence's cosine with the float64 reference must be >= 0.99999.
"""
import argparse
import json
import math
import os
import sys
from pathlib import Path

import numpy as np
import onnx
from safetensors.numpy import load_file

sys.dont_write_bytecode = True  # keep the source folder free of __pycache__
sys.path.insert(0, str(Path(__file__).resolve().parent))
from onnx_graph import F32, I64, Graph, ort_optimized_op_counts, tensor_info  # noqa: E402

MIN_COSINE = 0.99999


def build(model_dir: Path) -> onnx.ModelProto:
    cfg = json.loads((model_dir / "config.json").read_text())
    raw = load_file(str(model_dir / "model.safetensors"))
    prefix = "bert." if "bert.embeddings.word_embeddings.weight" in raw else ""

    def w(name: str) -> np.ndarray:
        try:
            return raw[prefix + name].astype(np.float32)
        except KeyError:
            raise SystemExit(f"{model_dir}/model.safetensors: missing tensor {prefix + name!r}") from None

    hidden, heads = int(cfg["hidden_size"]), int(cfg["num_attention_heads"])
    d = hidden // heads
    eps = float(cfg["layer_norm_eps"])
    g = Graph()

    def linear(x: str, name: str) -> str:
        # torch exports nn.Linear as MatMul by the transposed weight, then Add bias.
        wt = g.init(name + ".weight_T", w(name + ".weight").T)
        return g.op("Add", [g.op("MatMul", [x, wt]), g.init(name + ".bias", w(name + ".bias"))])

    def layer_norm(x: str, name: str) -> str:
        return g.op("LayerNormalization", [x, g.init(name + ".weight", w(name + ".weight")),
                                          g.init(name + ".bias", w(name + ".bias"))], axis=-1, epsilon=eps)

    # Embeddings: positions are a slice of the 0..max_pos buffer, as BertEmbeddings does.
    word = g.op("Gather", [g.init("embeddings.word_embeddings.weight", w("embeddings.word_embeddings.weight")),
                           "input_ids"])
    seq = g.op("Unsqueeze", [g.op("Gather", [g.op("Shape", ["input_ids"]), g.const(1)], axis=0), g.const([0])])
    pos_ids = g.op("Slice", [g.init("embeddings.position_ids", np.arange(int(cfg["max_position_embeddings"]),
                                                                          dtype=np.int64)[None]),
                             g.const([0]), seq, g.const([1])])
    pos = g.op("Gather", [g.init("embeddings.position_embeddings.weight",
                                 w("embeddings.position_embeddings.weight")), pos_ids])
    tt = g.op("Gather", [g.init("embeddings.token_type_embeddings.weight",
                                w("embeddings.token_type_embeddings.weight")), "token_type_ids"])
    h = layer_norm(g.op("Add", [g.op("Add", [word, tt]), pos]), "embeddings.LayerNorm")

    # Extended attention mask: (1 - mask) * finfo(float32).min, shape [batch, 1, 1, seq].
    m = g.op("Cast", [g.op("Unsqueeze", ["attention_mask", g.const([1, 2])])], to=F32)
    ext = g.op("Mul", [g.op("Sub", [g.const(1.0, np.float32), m]),
                       g.const(np.finfo(np.float32).min, np.float32)])

    split_shape = g.const([0, 0, heads, d])
    for i in range(int(cfg["num_hidden_layers"])):
        p = f"encoder.layer.{i}."
        q = g.op("Transpose", [g.op("Reshape", [linear(h, p + "attention.self.query"), split_shape])],
                 perm=[0, 2, 1, 3])
        k = g.op("Transpose", [g.op("Reshape", [linear(h, p + "attention.self.key"), split_shape])],
                 perm=[0, 2, 3, 1])
        v = g.op("Transpose", [g.op("Reshape", [linear(h, p + "attention.self.value"), split_shape])],
                 perm=[0, 2, 1, 3])
        scores = g.op("Add", [g.op("Div", [g.op("MatMul", [q, k]), g.const(math.sqrt(d), np.float32)]), ext])
        ctx = g.op("MatMul", [g.op("Softmax", [scores], axis=-1), v])
        ctx = g.op("Reshape", [g.op("Transpose", [ctx], perm=[0, 2, 1, 3]), g.const([0, 0, hidden])])
        h = layer_norm(g.op("Add", [linear(ctx, p + "attention.output.dense"), h]),
                       p + "attention.output.LayerNorm")
        x = linear(h, p + "intermediate.dense")
        erf = g.op("Erf", [g.op("Div", [x, g.const(math.sqrt(2.0), np.float32)])])
        x = g.op("Mul", [g.op("Mul", [x, g.op("Add", [erf, g.const(1.0, np.float32)])]),
                         g.const(0.5, np.float32)])
        out = "last_hidden_state" if i == int(cfg["num_hidden_layers"]) - 1 else None
        h = g.op("LayerNormalization", [g.op("Add", [linear(x, p + "output.dense"), h]),
                                        g.init(p + "output.LayerNorm.weight", w(p + "output.LayerNorm.weight")),
                                        g.init(p + "output.LayerNorm.bias", w(p + "output.LayerNorm.bias"))],
                 out=out, axis=-1, epsilon=eps)

    # sentence-transformers Pooling (mean) and Normalize.
    mask3 = g.op("Cast", [g.op("Unsqueeze", ["attention_mask", g.const([-1])])], to=F32)
    summed = g.op("ReduceSum", [g.op("Mul", [h, mask3]), g.const([1])], keepdims=0)
    count = g.op("Clip", [g.op("ReduceSum", [mask3, g.const([1])], keepdims=0), g.const(1e-9, np.float32)])
    pooled = g.op("Div", [summed, count])
    norm = g.op("Clip", [g.op("ReduceL2", [pooled], axes=[1], keepdims=1), g.const(1e-12, np.float32)])
    g.op("Div", [pooled, norm], out="sentence_embedding")

    dims = ["batch", "seq"]
    return g.model([tensor_info(n, I64, dims) for n in ("input_ids", "attention_mask", "token_type_ids")],
                   [tensor_info("last_hidden_state", F32, dims + [hidden]),
                    tensor_info("sentence_embedding", F32, ["batch", hidden])], "minilm")


def check(onnx_path: Path, ref_path: Path) -> dict:
    import onnxruntime as ort

    ref = load_file(str(ref_path))
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    sess = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
    feeds = {k: ref[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
    last, emb = sess.run(["last_hidden_state", "sentence_embedding"], feeds)
    want = ref["embeddings"].astype(np.float64)
    got = emb.astype(np.float64)
    cos = (got * want).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
    attended = ref["attention_mask"].astype(bool)
    result = {
        "batch": list(feeds["input_ids"].shape),
        "min_cosine": float(cos.min()),
        "max_abs_err_embedding": float(np.abs(got - want).max()),
        "max_abs_err_last_hidden_attended": float(np.abs(last[attended] - ref["last_hidden_state"][attended]).max()),
    }
    result["pass"] = result["min_cosine"] >= MIN_COSINE
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model_dir")
    ap.add_argument("out")
    cache = Path(os.environ.get("KILN_CACHE", Path.home() / ".cache" / "kiln"))
    ap.add_argument("--reference", default=str(cache / "data" / "ref" / "minilm_embeddings.safetensors"))
    ap.add_argument("--no-check", action="store_true")
    a = ap.parse_args()
    model = build(Path(a.model_dir))
    onnx.checker.check_model(model)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(out))
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB, {len(model.graph.node)} nodes, opset 17)")
    print("onnxruntime optimised graph:", json.dumps(ort_optimized_op_counts(str(out))))
    if a.no_check:
        return
    if not Path(a.reference).is_file():
        sys.exit(f"build_minilm_onnx.py: reference {a.reference} not found (run minilm_reference.py, or --no-check)")
    r = check(out, Path(a.reference))
    print("check vs NumPy reference:", json.dumps(r))
    if not r["pass"]:
        sys.exit(f"build_minilm_onnx.py: min cosine {r['min_cosine']} < {MIN_COSINE}")


if __name__ == "__main__":
    main()
