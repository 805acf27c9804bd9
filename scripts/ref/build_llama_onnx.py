"""Builds an ONNX prefill graph of a LLaMA-architecture GGUF model and checks it.

Usage: build_llama_onnx.py MODEL.gguf OUT.onnx [--reference smollm2_prompt_logits.safetensors] [--no-check]
                           [--max-pos N]

The graph is what torch.onnx.export (opset 17) produces for a Hugging Face
LlamaForCausalLM forward without a KV cache, with the weights of the GGUF file
dequantized to float32 (OUT.onnx plus OUT.onnx.data, external data):

  inputs   input_ids int64 [batch, seq]  (positions 0..seq-1)
  outputs  logits f32 [batch, seq, vocab]

  RMSNorm  x / Sqrt(ReduceMean(x^2) + eps) * w (Pow, ReduceMean, Add, Sqrt, Div, Mul)
  linear   MatMul by the transposed weight (one initializer per weight; the tied
           output head gets its own transposed copy, as constant folding in the
           exporter gives)
  RoPE     Hugging Face rotate_half form: x * cos + concat(-x2, x1) * sin with
           cos/sin tables [max_pos, head_dim] precomputed and Gathered by position.
           GGUF q/k rows were permuted by llama.cpp's converter so that adjacent
           pairs rotate; this builder undoes that permutation, so the graph uses
           the Hugging Face layout (and checks the permutation independently of
           llama_reference.py, which rotates adjacent pairs on the GGUF rows).
  mask     causal: Where(col > row, float32.min, 0) added to the scores
  GQA      K/V heads repeated: Unsqueeze, Expand, Reshape (repeat_kv)
  SwiGLU   down(gate * Sigmoid(gate) * up)

Check (unless --no-check): the ids stored by llama_reference.py (default
$KILN_CACHE/data/ref/smollm2_prompt_logits.safetensors) run through onnxruntime;
the max abs logit error against the float64 reference must be <= 1e-3.
"""
import argparse
import json
import os
import sys
from pathlib import Path

import gguf
import numpy as np
import onnx

sys.dont_write_bytecode = True  # keep the source folder free of __pycache__
sys.path.insert(0, str(Path(__file__).resolve().parent))
from onnx_graph import F32, I64, Graph, ort_optimized_op_counts, tensor_info  # noqa: E402

MAX_ABS_ERR = 1e-3


def meta(r: gguf.GGUFReader, key: str, default=None):
    f = r.fields.get(key)
    if f is None:
        if default is None:
            raise SystemExit(f"{r.path}: missing metadata key {key!r}")
        return default
    return f.contents()


def unpermute(w: np.ndarray, n_head: int) -> np.ndarray:
    """Inverse of llama.cpp convert_hf_to_gguf's LlamaModel.permute on a [rows, cols] q/k weight."""
    rows = w.shape[0]
    return w.reshape(n_head, rows // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def build(path: Path, max_pos: int | None) -> onnx.ModelProto:
    r = gguf.GGUFReader(str(path))
    if meta(r, "general.architecture") != "llama":
        raise SystemExit(f"{path}: general.architecture is not 'llama'")
    n_layer = int(meta(r, "llama.block_count"))
    n_embd = int(meta(r, "llama.embedding_length"))
    nh = int(meta(r, "llama.attention.head_count"))
    nkv = int(meta(r, "llama.attention.head_count_kv", nh))
    hd = n_embd // nh
    n_rot = int(meta(r, "llama.rope.dimension_count", hd))
    if n_rot != hd:
        raise SystemExit(f"{path}: rope.dimension_count {n_rot} != head_dim {hd}; partial rotary is not handled")
    base = float(meta(r, "llama.rope.freq_base", 10000.0))
    eps = float(meta(r, "llama.attention.layer_norm_rms_epsilon"))
    max_pos = max_pos or int(meta(r, "llama.context_length"))
    tensors = {t.name: t for t in r.tensors}

    def w(name: str) -> np.ndarray:
        t = tensors.get(name)
        if t is None:
            raise SystemExit(f"{path}: missing tensor {name!r}")
        return gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)

    g = Graph()
    # Rotary tables as LlamaRotaryEmbedding computes them (emb = cat(freqs, freqs)).
    inv_freq = 1.0 / base ** (np.arange(0, hd, 2, dtype=np.float64) / hd)
    freqs = np.arange(max_pos, dtype=np.float64)[:, None] * inv_freq[None, :]
    emb = np.concatenate([freqs, freqs], axis=1)
    cos_t = g.init("rope.cos", np.cos(emb).astype(np.float32))
    sin_t = g.init("rope.sin", np.sin(emb).astype(np.float32))

    embed = w("token_embd.weight")
    x = g.op("Gather", [g.init("model.embed_tokens.weight", embed), "input_ids"])
    seq = g.op("Gather", [g.op("Shape", ["input_ids"]), g.const(1)], axis=0)
    positions = g.op("Range", [g.const(0), seq, g.const(1)])
    cos = g.op("Unsqueeze", [g.op("Gather", [cos_t, positions], axis=0), g.const([0, 1])])
    sin = g.op("Unsqueeze", [g.op("Gather", [sin_t, positions], axis=0), g.const([0, 1])])
    later = g.op("Greater", [g.op("Unsqueeze", [positions, g.const([0])]),
                             g.op("Unsqueeze", [positions, g.const([1])])])
    mask = g.op("Where", [later, g.const(np.finfo(np.float32).min, np.float32), g.const(0.0, np.float32)])

    def rms_norm(v: str, weight: np.ndarray, name: str) -> str:
        var = g.op("ReduceMean", [g.op("Pow", [v, g.const(2.0, np.float32)])], axes=[-1], keepdims=1)
        den = g.op("Sqrt", [g.op("Add", [var, g.const(eps, np.float32)])])
        return g.op("Mul", [g.op("Div", [v, den]), g.init(name, weight)])

    def linear(v: str, weight: np.ndarray, name: str) -> str:
        return g.op("MatMul", [v, g.init(name + "_T", weight.T)])

    def heads(v: str, n: int) -> str:
        return g.op("Transpose", [g.op("Reshape", [v, g.const([0, 0, n, hd])])], perm=[0, 2, 1, 3])

    def rope(v: str) -> str:
        x1 = g.op("Slice", [v, g.const([0]), g.const([hd // 2]), g.const([-1])])
        x2 = g.op("Slice", [v, g.const([hd // 2]), g.const([hd]), g.const([-1])])
        rot = g.op("Concat", [g.op("Neg", [x2]), x1], axis=-1)
        return g.op("Add", [g.op("Mul", [v, cos]), g.op("Mul", [rot, sin])])

    def repeat_kv(v: str) -> str:
        if nkv == nh:
            return v
        e = g.op("Expand", [g.op("Unsqueeze", [v, g.const([2])]), g.const([1, 1, nh // nkv, 1, 1])])
        return g.op("Reshape", [e, g.const([0, nh, -1, hd])])

    for i in range(n_layer):
        b, p = f"blk.{i}.", f"model.layers.{i}."
        h = rms_norm(x, w(b + "attn_norm.weight"), p + "input_layernorm.weight")
        q = rope(heads(linear(h, unpermute(w(b + "attn_q.weight"), nh), p + "self_attn.q_proj.weight"), nh))
        k = rope(heads(linear(h, unpermute(w(b + "attn_k.weight"), nkv), p + "self_attn.k_proj.weight"), nkv))
        v = heads(linear(h, w(b + "attn_v.weight"), p + "self_attn.v_proj.weight"), nkv)
        k, v = repeat_kv(k), repeat_kv(v)
        s = g.op("MatMul", [q, g.op("Transpose", [k], perm=[0, 1, 3, 2])])
        s = g.op("Add", [g.op("Mul", [s, g.const(hd ** -0.5, np.float32)]), mask])
        o = g.op("MatMul", [g.op("Softmax", [s], axis=-1), v])
        o = g.op("Reshape", [g.op("Transpose", [o], perm=[0, 2, 1, 3]), g.const([0, 0, nh * hd])])
        x = g.op("Add", [x, linear(o, w(b + "attn_output.weight"), p + "self_attn.o_proj.weight")])
        h = rms_norm(x, w(b + "ffn_norm.weight"), p + "post_attention_layernorm.weight")
        gate = linear(h, w(b + "ffn_gate.weight"), p + "mlp.gate_proj.weight")
        act = g.op("Mul", [g.op("Mul", [gate, g.op("Sigmoid", [gate])]),
                           linear(h, w(b + "ffn_up.weight"), p + "mlp.up_proj.weight")])
        x = g.op("Add", [x, linear(act, w(b + "ffn_down.weight"), p + "mlp.down_proj.weight")])
    h = rms_norm(x, w("output_norm.weight"), "model.norm.weight")
    head = w("output.weight") if "output.weight" in tensors else embed
    g.op("MatMul", [h, g.init("lm_head.weight_T", head.T)], out="logits")
    vocab = head.shape[0]
    return g.model([tensor_info("input_ids", I64, ["batch", "seq"])],
                   [tensor_info("logits", F32, ["batch", "seq", vocab])], "llama_prefill")


def check(onnx_path: Path, ref_path: Path) -> dict:
    import onnxruntime as ort
    from safetensors.numpy import load_file

    ref = load_file(str(ref_path))
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    sess = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
    (logits,) = sess.run(["logits"], {"input_ids": ref["ids"][None]})
    want = ref["logits"].astype(np.float64)
    got = logits[0].astype(np.float64)
    err = np.abs(got - want)
    result = {
        "tokens": int(ref["ids"].shape[0]),
        "max_abs_err": float(err.max()),
        "mean_abs_err": float(err.mean()),
        "logit_absmax": float(np.abs(want).max()),
        "argmax_agree": float((got.argmax(1) == want.argmax(1)).mean()),
    }
    result["pass"] = result["max_abs_err"] <= MAX_ABS_ERR
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model")
    ap.add_argument("out")
    cache = Path(os.environ.get("KILN_CACHE", Path.home() / ".cache" / "kiln"))
    ap.add_argument("--reference", default=str(cache / "data" / "ref" / "smollm2_prompt_logits.safetensors"))
    ap.add_argument("--max-pos", type=int, help="rows of the cos/sin tables (default llama.context_length)")
    ap.add_argument("--no-check", action="store_true")
    a = ap.parse_args()
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    model = build(Path(a.model), a.max_pos)
    data = out.name + ".data"
    if (out.parent / data).exists():
        (out.parent / data).unlink()  # onnx.save appends to an existing data file
    onnx.save(model, str(out), save_as_external_data=True, all_tensors_to_one_file=True,
              location=data, size_threshold=1024)
    onnx.checker.check_model(str(out))
    size = (out.stat().st_size + (out.parent / data).stat().st_size) / 1e6
    print(f"wrote {out} + {data} ({size:.0f} MB, {len(model.graph.node)} nodes, opset 17)")
    del model
    print("onnxruntime optimised graph:", json.dumps(ort_optimized_op_counts(str(out))))
    if a.no_check:
        return
    if not Path(a.reference).is_file():
        sys.exit(f"build_llama_onnx.py: reference {a.reference} not found (run llama_reference.py, or --no-check)")
    r = check(out, Path(a.reference))
    print("check vs NumPy reference:", json.dumps(r))
    if not r["pass"]:
        sys.exit(f"build_llama_onnx.py: max abs logit error {r['max_abs_err']} > {MAX_ABS_ERR}")


if __name__ == "__main__":
    main()
