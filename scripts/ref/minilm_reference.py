"""Sentence embeddings of all-MiniLM-L6-v2 by an explicit NumPy BERT forward.

Usage: minilm_reference.py MODEL_DIR SENTENCES.txt OUT_DIR

Written from the Hugging Face BertModel and sentence-transformers definitions,
with every step spelled out in float64 (weights are float32 on disk and are
widened), so the stored float32 results are more accurate than anything they
check. Each sentence runs alone (batch 1, no padding), so the reference does
not depend on masking; the padded ids written next to it are for consumers.

Per sentence:
  ids   = tokenizer.json encoding with special tokens ([CLS] ... [SEP]),
          padding and truncation switched off, token_type_ids all 0
  h     = LayerNorm(word[ids] + position[0..n) + token_type[0])
  layer (num_hidden_layers times):
    q,k,v = h Wq^T + bq, h Wk^T + bk, h Wv^T + bv, split in num_attention_heads
    a     = softmax(q k^T / sqrt(head_dim) + mask) v   (mask: 0 attended,
            -inf padded; no padding here)
    h     = LayerNorm(h + a Wo^T + bo)
    h     = LayerNorm(h + GELU(h Wi^T + bi) Wout^T + bout),
            GELU(x) = x/2 (1 + erf(x/sqrt 2)), erf from math.erf (float64)
  LayerNorm(x) = (x - mean) / sqrt(var + layer_norm_eps) * gamma + beta,
            var the biased variance over the hidden axis
  pooled = sum over attended tokens of h / max(count, 1e-9)  (1_Pooling: mean)
  emb    = pooled / max(||pooled||_2, 1e-12)                  (2_Normalize)

Writes OUT_DIR/minilm_embeddings.safetensors:
  embeddings         f32 [N, hidden]  the normalised sentence embeddings
  last_hidden_state  f32 [N, L, hidden] final hidden states, zero where padded
  input_ids, attention_mask, token_type_ids  i64 [N, L]  right-padded with 0
  (L = longest sentence in tokens), and OUT_DIR/minilm_summary.json.
"""
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file
from tokenizers import Tokenizer

_ERF = np.frompyfunc(math.erf, 1, 1)


def erf(x: np.ndarray) -> np.ndarray:
    """Elementwise erf in float64, exact to libm's math.erf."""
    return _ERF(x).astype(np.float64)


def layer_norm(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float) -> np.ndarray:
    """LayerNorm over the last axis with the biased variance, as torch does."""
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * gamma + beta


def softmax(x: np.ndarray) -> np.ndarray:
    """Softmax over the last axis."""
    m = x.max(axis=-1, keepdims=True)
    e = np.exp(x - m)
    return e / e.sum(axis=-1, keepdims=True)


class Bert:
    """BERT encoder weights (float64) and the forward pass."""

    def __init__(self, model_dir: Path):
        cfg = json.loads((model_dir / "config.json").read_text())
        self.cfg = cfg
        if cfg.get("hidden_act") != "gelu":
            raise SystemExit(f"{model_dir}/config.json: hidden_act {cfg.get('hidden_act')!r}, expected 'gelu'")
        if cfg.get("position_embedding_type", "absolute") != "absolute":
            raise SystemExit(f"{model_dir}/config.json: only absolute position embeddings are handled")
        raw = load_file(str(model_dir / "model.safetensors"))
        prefix = "bert." if "bert.embeddings.word_embeddings.weight" in raw else ""
        self.w = {k[len(prefix):]: v.astype(np.float64) for k, v in raw.items()
                  if k.startswith(prefix) and v.dtype == np.float32}
        self.eps = float(cfg["layer_norm_eps"])
        self.heads = int(cfg["num_attention_heads"])
        self.layers = int(cfg["num_hidden_layers"])

    def p(self, name: str) -> np.ndarray:
        """One weight by its Hugging Face name (without the model prefix)."""
        try:
            return self.w[name]
        except KeyError:
            raise SystemExit(f"model.safetensors: missing tensor {name!r}") from None

    def forward(self, ids: np.ndarray, mask: np.ndarray, types: np.ndarray) -> np.ndarray:
        """ids, mask, types: int [B, S]. Returns last_hidden_state float64 [B, S, H]."""
        b, s = ids.shape
        h = (self.p("embeddings.word_embeddings.weight")[ids]
             + self.p("embeddings.position_embeddings.weight")[np.arange(s)][None]
             + self.p("embeddings.token_type_embeddings.weight")[types])
        h = layer_norm(h, self.p("embeddings.LayerNorm.weight"), self.p("embeddings.LayerNorm.bias"), self.eps)
        hidden = h.shape[-1]
        d = hidden // self.heads
        # Padded keys get -inf; a row always has its own [CLS] attended, so no NaN.
        add_mask = np.where(mask[:, None, None, :] > 0, 0.0, -np.inf)
        for i in range(self.layers):
            pre = f"encoder.layer.{i}."

            def lin(x, name):
                return x @ self.p(pre + name + ".weight").T + self.p(pre + name + ".bias")

            def split(x):
                return x.reshape(b, s, self.heads, d).transpose(0, 2, 1, 3)

            q = split(lin(h, "attention.self.query"))
            k = split(lin(h, "attention.self.key"))
            v = split(lin(h, "attention.self.value"))
            probs = softmax(q @ k.transpose(0, 1, 3, 2) / math.sqrt(d) + add_mask)
            ctx = (probs @ v).transpose(0, 2, 1, 3).reshape(b, s, hidden)
            h = layer_norm(h + lin(ctx, "attention.output.dense"),
                           self.p(pre + "attention.output.LayerNorm.weight"),
                           self.p(pre + "attention.output.LayerNorm.bias"), self.eps)
            inter = lin(h, "intermediate.dense")
            inter = 0.5 * inter * (1.0 + erf(inter / math.sqrt(2.0)))
            h = layer_norm(h + lin(inter, "output.dense"),
                           self.p(pre + "output.LayerNorm.weight"),
                           self.p(pre + "output.LayerNorm.bias"), self.eps)
        return h


def check_pipeline(model_dir: Path) -> None:
    """Fails unless the sentence-transformers pipeline is Transformer → mean Pooling → Normalize."""
    modules = json.loads((model_dir / "modules.json").read_text())
    kinds = [m["type"].rsplit(".", 1)[-1] for m in modules]
    if kinds != ["Transformer", "Pooling", "Normalize"]:
        raise SystemExit(f"{model_dir}/modules.json: modules {kinds}, expected Transformer, Pooling, Normalize")
    pool = json.loads((model_dir / "1_Pooling" / "config.json").read_text())
    if not pool.get("pooling_mode_mean_tokens") or any(
            pool.get(k) for k in ("pooling_mode_cls_token", "pooling_mode_max_tokens",
                                  "pooling_mode_mean_sqrt_len_tokens")):
        raise SystemExit(f"{model_dir}/1_Pooling/config.json: expected mean pooling only, got {pool}")


def pool_normalize(h: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean over attended tokens, then L2 normalisation (sentence-transformers)."""
    m = mask[..., None].astype(np.float64)
    pooled = (h * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1e-9)
    return pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)


def main() -> None:
    if len(sys.argv) != 4:
        sys.exit("usage: minilm_reference.py MODEL_DIR SENTENCES.txt OUT_DIR")
    model_dir, sent_path, out_dir = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    t0 = time.perf_counter()
    check_pipeline(model_dir)
    sentences = [l for l in sent_path.read_text(encoding="utf-8").split("\n") if l]
    tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tok.no_padding()
    tok.no_truncation()
    bert = Bert(model_dir)
    max_pos = int(bert.cfg["max_position_embeddings"])

    encs = [tok.encode(s, add_special_tokens=True) for s in sentences]
    n, width, hidden = len(encs), max(len(e.ids) for e in encs), int(bert.cfg["hidden_size"])
    if width > max_pos:
        raise SystemExit(f"{sent_path}: a sentence has {width} tokens, more than {max_pos} positions")
    input_ids = np.zeros((n, width), np.int64)
    attention_mask = np.zeros((n, width), np.int64)
    token_type_ids = np.zeros((n, width), np.int64)
    last = np.zeros((n, width, hidden), np.float64)
    emb = np.zeros((n, hidden), np.float64)
    for i, e in enumerate(encs):
        ids = np.asarray(e.ids, np.int64)[None]
        ones = np.ones_like(ids)
        h = bert.forward(ids, ones, np.zeros_like(ids))
        emb[i] = pool_normalize(h, ones)[0]
        s = ids.shape[1]
        input_ids[i, :s], attention_mask[i, :s], last[i, :s] = ids[0], 1, h[0]
    wall = time.perf_counter() - t0

    out_dir.mkdir(parents=True, exist_ok=True)
    save_file({
        "embeddings": emb.astype(np.float32),
        "last_hidden_state": last.astype(np.float32),
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "token_type_ids": token_type_ids,
    }, str(out_dir / "minilm_embeddings.safetensors"))
    lengths = attention_mask.sum(axis=1)
    summary = {
        "model_dir": str(model_dir),
        "sentences": str(sent_path),
        "count": n,
        "hidden": hidden,
        "tokens_min": int(lengths.min()),
        "tokens_max": int(lengths.max()),
        "tokens_total": int(lengths.sum()),
        "first_ids": encs[0].ids,
        "first_embedding_head": [float(x) for x in emb[0, :8]],
        "mean_pairwise_cosine": float((emb @ emb.T)[np.triu_indices(n, 1)].mean()),
        "compute": "float64 throughout, stored float32; each sentence alone (batch 1, no padding)",
        "definition": ("tokenizer.json with special tokens, no padding/truncation; BERT embeddings "
                       "(word + position + token_type 0) -> LayerNorm; per layer: MHA softmax(QK^T/sqrt(d))V, "
                       "dense, residual + LayerNorm, dense + exact erf GELU, dense, residual + LayerNorm; "
                       "mean pool over attended tokens; L2 normalise"),
        "wall_s": round(wall, 3),
    }
    (out_dir / "minilm_summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps({k: summary[k] for k in ("count", "tokens_min", "tokens_max", "tokens_total",
                                               "mean_pairwise_cosine", "wall_s")}))


if __name__ == "__main__":
    main()
