"""Logits and perplexity of a LLaMA-architecture GGUF model by an explicit NumPy forward.

Usage: llama_reference.py MODEL.gguf IDS.json OUT_DIR
           [--prompt-ids 1,2,3 | --prompt-ids @ids.json] [--prompt-len 64]
           [--windows 16] [--n-ctx 512] [--add-bos auto|yes|no] [--skip-ppl] [--skip-prompt]

IDS.json holds the evaluation text's token ids, either a JSON list of ints or
{"ids": [...]} (scripts/tokenizer_reference.py writes them). Written from
llama.cpp's LLaMA graph (src/llama-model.cpp, build for LLM_ARCH_LLAMA) and the
GGUF conventions, not from Kiln:

  weights  gguf.GGUFReader + gguf.quants.dequantize, widened to float64. GGUF
           lists dims innermost first, so a tensor shown as [in, out] comes back
           as a numpy [out, in] matrix and a linear layer is y = x W^T. Output
           head: output.weight, else token_embd.weight (tied).
  x        token_embd[ids]
  layer    (llama.block_count times)
           h  = RMSNorm(x) * attn_norm,  RMSNorm(x) = x / sqrt(mean(x^2) + eps),
                eps = llama.attention.layer_norm_rms_epsilon
           q, k, v = h Wq^T, h Wk^T, h Wv^T; heads of head_dim = n_embd / head_count
           RoPE "normal" mode (LLAMA_ROPE_TYPE_NORM) on q and k: for each head and
                i < rope.dimension_count/2, the ADJACENT pair (x[2i], x[2i+1]) is
                rotated by pos * freq_base^(-2i/n_rot) (the converter permuted the
                Hugging Face q/k rows so adjacent pairs are what rotate here)
           attention: causal, grouped-query (query head j reads kv head
                j // (head_count / head_count_kv)), softmax(q k^T / sqrt(head_dim)) v
           x  = x + attn Wo^T
           h  = RMSNorm(x) * ffn_norm
           x  = x + (silu(h Wgate^T) * (h Wup^T)) Wdown^T,  silu(z) = z / (1 + e^-z)
  logits   RMSNorm(x) * output_norm, times W_out^T
Everything is float64 (BLAS dgemm); stored values are rounded to float32.

Outputs in OUT_DIR:
  smollm2_prompt_logits.safetensors  ids i64 [P], logits f32 [P, vocab]: the first
        P (default 64) ids of IDS.json (or --prompt-ids) run as one sequence at
        positions 0..P-1, ids used exactly as given.
  smollm2_ppl.json  perplexity as llama.cpp's perplexity tool computes it (see
        PPL_DEFINITION), with per-window mean nll, total nll, count and ppl.
  smollm2_ppl_tokens.safetensors  window_ids i64 [W, n_ctx] (as evaluated, BOS
        substituted when add_bos), nll f64 [W, n_ctx/2 - 1] per scored token.
"""
import argparse
import json
import math
import time
from pathlib import Path

import gguf
import numpy as np
from safetensors.numpy import save_file

PPL_DEFINITION = (
    "llama.cpp perplexity (tools/perplexity, default mode, ppl_stride 0): the token ids are split "
    "into non-overlapping windows of n_ctx tokens, window w = ids[w*n_ctx : (w+1)*n_ctx]; the first W "
    "windows are used. If the model's tokenizer.ggml.add_bos_token is true, the first token of every "
    "window is replaced by the BOS id before evaluation (otherwise the ids are used as they are). "
    "Each window is evaluated alone from an empty cache at positions 0..n_ctx-1. With first = n_ctx/2, "
    "the logits at positions first .. n_ctx-2 predict the tokens at first+1 .. n_ctx-1 "
    "(n_ctx - first - 1 = 255 tokens per window for n_ctx 512); nll of one token = "
    "logsumexp(logits) - logits[target], in float64. ppl = exp(sum of nll / number of scored tokens)."
)


def field(reader: gguf.GGUFReader, key: str, default=None):
    """One metadata value of the GGUF file, or `default` when absent (error when no default)."""
    f = reader.fields.get(key)
    if f is None:
        if default is None:
            raise SystemExit(f"{reader.path}: missing metadata key {key!r}")
        return default
    return f.contents()


def hand_dequant_first_row(t) -> np.ndarray | None:
    """First row of a Q8_0 or Q4_1 tensor decoded from the raw bytes per the ggml block layout."""
    raw = np.asarray(t.data[0], dtype=np.uint8)
    name = t.tensor_type.name
    if name == "Q8_0":  # 34-byte blocks: f16 scale d, 32 x int8 q; x = d q
        b = raw.reshape(-1, 34)
        d = b[:, :2].copy().view(np.float16).astype(np.float64)
        q = b[:, 2:].copy().view(np.int8).astype(np.float64)
        return (d * q).reshape(-1)
    if name == "Q4_1":  # 20-byte blocks: f16 d, f16 m, 16 bytes; low nibbles are x[0..16), high x[16..32)
        b = raw.reshape(-1, 20)
        d = b[:, 0:2].copy().view(np.float16).astype(np.float64)
        m = b[:, 2:4].copy().view(np.float16).astype(np.float64)
        qs = b[:, 4:]
        q = np.concatenate([qs & 0x0F, qs >> 4], axis=1).astype(np.float64)
        return (d * q + m).reshape(-1)
    return None


class Llama:
    """Hyperparameters and float64 weights of a GGUF LLaMA model, and its forward pass."""

    def __init__(self, path: Path):
        self.path = path
        r = gguf.GGUFReader(str(path))
        arch = field(r, "general.architecture")
        if arch != "llama":
            raise SystemExit(f"{path}: general.architecture is {arch!r}, expected 'llama'")
        for key in ("llama.rope.scaling.type", "llama.rope.freq_scale", "llama.expert_count"):
            if key in r.fields:
                raise SystemExit(f"{path}: {key} is set; this reference implements plain LLaMA only")
        self.n_layer = int(field(r, "llama.block_count"))
        self.n_embd = int(field(r, "llama.embedding_length"))
        self.n_head = int(field(r, "llama.attention.head_count"))
        self.n_head_kv = int(field(r, "llama.attention.head_count_kv", self.n_head))
        self.head_dim = self.n_embd // self.n_head
        self.n_rot = int(field(r, "llama.rope.dimension_count", self.head_dim))
        self.freq_base = float(field(r, "llama.rope.freq_base", 10000.0))
        self.eps = float(field(r, "llama.attention.layer_norm_rms_epsilon"))
        self.add_bos = bool(field(r, "tokenizer.ggml.add_bos_token", False))
        self.bos_id = int(field(r, "tokenizer.ggml.bos_token_id", -1))
        self.w: dict[str, np.ndarray] = {}
        checked = set()
        for t in r.tensors:
            arr = gguf.quants.dequantize(t.data, t.tensor_type)
            want = tuple(int(x) for x in reversed(t.shape))
            if arr.shape != want:
                raise SystemExit(f"{path}: tensor {t.name} dequantized to {arr.shape}, expected {want}")
            if t.tensor_type.name not in checked:
                hand = hand_dequant_first_row(t)
                if hand is not None:
                    err = np.abs(hand - arr.reshape(arr.shape[0], -1)[0]).max()
                    if err > 0:
                        raise SystemExit(f"{path}: {t.name}: gguf dequantize differs from the block layout by {err}")
                    checked.add(t.tensor_type.name)
            self.w[t.name] = arr.astype(np.float64)
        self.dequant_checked = sorted(checked)
        self.tied = "output.weight" not in self.w
        self.out_w = self.p("token_embd.weight" if self.tied else "output.weight")
        self.vocab = self.out_w.shape[0]

    def p(self, name: str) -> np.ndarray:
        """One weight by its GGUF name."""
        try:
            return self.w[name]
        except KeyError:
            raise SystemExit(f"{self.path}: missing tensor {name!r}") from None

    def rms_norm(self, x: np.ndarray, weight: str) -> np.ndarray:
        return x / np.sqrt((x * x).mean(axis=-1, keepdims=True) + self.eps) * self.p(weight)

    def rope(self, x: np.ndarray, pos: np.ndarray) -> np.ndarray:
        """x [T, heads, head_dim]: rotates adjacent pairs of the first n_rot dims."""
        half = self.n_rot // 2
        theta = self.freq_base ** (-2.0 * np.arange(half) / self.n_rot)
        ang = pos[:, None].astype(np.float64) * theta[None, :]
        cos, sin = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
        out = x.copy()
        x0, x1 = x[..., 0:self.n_rot:2], x[..., 1:self.n_rot:2]
        out[..., 0:self.n_rot:2] = x0 * cos - x1 * sin
        out[..., 1:self.n_rot:2] = x0 * sin + x1 * cos
        return out

    def forward(self, ids: np.ndarray, logit_rows: np.ndarray | None = None) -> np.ndarray:
        """ids int [T] at positions 0..T-1. Returns float64 logits [len(logit_rows) or T, vocab]."""
        t = len(ids)
        if ids.min() < 0 or ids.max() >= self.p("token_embd.weight").shape[0]:
            raise SystemExit(f"token id out of range 0..{self.p('token_embd.weight').shape[0] - 1}")
        pos = np.arange(t)
        hd, nh, nkv = self.head_dim, self.n_head, self.n_head_kv
        group = nh // nkv
        causal = np.triu(np.full((t, t), -np.inf), k=1)
        x = self.p("token_embd.weight")[ids]
        for i in range(self.n_layer):
            b = f"blk.{i}."
            h = self.rms_norm(x, b + "attn_norm.weight")
            q = self.rope((h @ self.p(b + "attn_q.weight").T).reshape(t, nh, hd), pos)
            k = self.rope((h @ self.p(b + "attn_k.weight").T).reshape(t, nkv, hd), pos)
            v = (h @ self.p(b + "attn_v.weight").T).reshape(t, nkv, hd)
            # [kv, group*T, hd]: query head j = kv*group + g reads kv head j // group.
            qg = q.transpose(1, 0, 2).reshape(nkv, group * t, hd)
            s = qg @ k.transpose(1, 2, 0) / math.sqrt(hd)
            s = s.reshape(nkv, group, t, t) + causal
            s = np.exp(s - s.max(axis=-1, keepdims=True))
            s /= s.sum(axis=-1, keepdims=True)
            o = s.reshape(nkv, group * t, t) @ v.transpose(1, 0, 2)
            o = o.reshape(nh, t, hd).transpose(1, 0, 2).reshape(t, nh * hd)
            x = x + o @ self.p(b + "attn_output.weight").T
            h = self.rms_norm(x, b + "ffn_norm.weight")
            g = h @ self.p(b + "ffn_gate.weight").T
            u = h @ self.p(b + "ffn_up.weight").T
            x = x + (g / (1.0 + np.exp(-g)) * u) @ self.p(b + "ffn_down.weight").T
        if logit_rows is not None:
            x = x[logit_rows]
        return self.rms_norm(x, "output_norm.weight") @ self.out_w.T


def read_ids(spec: str) -> list[int]:
    """Token ids from a JSON file (list or {"ids": list}), or from '1,2,3'."""
    if spec.startswith("@") or spec.endswith(".json"):
        path = Path(spec.lstrip("@"))
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise SystemExit(f"{path}: cannot read token ids: {e}") from None
        if isinstance(data, dict):
            data = data.get("ids")
        if not isinstance(data, list) or not all(isinstance(x, int) for x in data):
            raise SystemExit(f"{path}: expected a JSON list of ints or {{\"ids\": [...]}}")
        return data
    try:
        return [int(x) for x in spec.split(",") if x.strip()]
    except ValueError:
        raise SystemExit(f"--prompt-ids {spec!r}: expected comma-separated ints or @file.json") from None


def log_softmax_at(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """nll[i] = logsumexp(logits[i]) - logits[i, targets[i]], float64."""
    m = logits.max(axis=1, keepdims=True)
    lse = m[:, 0] + np.log(np.exp(logits - m).sum(axis=1))
    return lse - logits[np.arange(len(targets)), targets]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model")
    ap.add_argument("ids")
    ap.add_argument("out_dir")
    ap.add_argument("--prompt-ids", help="prompt ids instead of the first --prompt-len of IDS.json: '1,2,3' or @file.json")
    ap.add_argument("--prompt-len", type=int, default=64)
    ap.add_argument("--windows", type=int, default=16)
    ap.add_argument("--n-ctx", type=int, default=512)
    ap.add_argument("--add-bos", choices=["auto", "yes", "no"], default="auto",
                    help="replace each window's first token by BOS (auto: tokenizer.ggml.add_bos_token)")
    ap.add_argument("--skip-ppl", action="store_true")
    ap.add_argument("--skip-prompt", action="store_true")
    a = ap.parse_args()
    out = Path(a.out_dir)
    out.mkdir(parents=True, exist_ok=True)

    t0 = time.perf_counter()
    model = Llama(Path(a.model))
    ids = read_ids("@" + a.ids)
    t_load = time.perf_counter() - t0
    print(f"loaded {a.model}: {model.n_layer} layers, {model.n_embd} hidden, {model.n_head}/{model.n_head_kv} heads, "
          f"vocab {model.vocab}, tied {model.tied}, dequant checked {model.dequant_checked} ({t_load:.1f} s)",
          flush=True)

    if not a.skip_prompt:
        prompt = read_ids(a.prompt_ids) if a.prompt_ids else ids[:a.prompt_len]
        if len(prompt) == 0:
            raise SystemExit("empty prompt")
        t1 = time.perf_counter()
        logits = model.forward(np.asarray(prompt, np.int64))
        dt = time.perf_counter() - t1
        save_file({"ids": np.asarray(prompt, np.int64), "logits": logits.astype(np.float32)},
                  str(out / "smollm2_prompt_logits.safetensors"))
        print(json.dumps({"prompt_tokens": len(prompt), "argmax_first8": logits.argmax(axis=1)[:8].tolist(),
                          "logit_absmax": float(np.abs(logits).max()), "wall_s": round(dt, 3)}), flush=True)

    if not a.skip_ppl:
        n_ctx, nw = a.n_ctx, a.windows
        if len(ids) < nw * n_ctx:
            raise SystemExit(f"{a.ids}: {len(ids)} ids, need at least {nw} x {n_ctx} = {nw * n_ctx}")
        add_bos = model.add_bos if a.add_bos == "auto" else a.add_bos == "yes"
        if add_bos and model.bos_id < 0:
            raise SystemExit(f"{a.model}: add_bos requested but tokenizer.ggml.bos_token_id is missing")
        first = n_ctx // 2
        rows = np.arange(first, n_ctx - 1)
        win_ids = np.asarray(ids[:nw * n_ctx], np.int64).reshape(nw, n_ctx).copy()
        if add_bos:
            win_ids[:, 0] = model.bos_id
        nll = np.zeros((nw, len(rows)), np.float64)
        t1 = time.perf_counter()
        running = []
        for w in range(nw):
            logits = model.forward(win_ids[w], rows)
            nll[w] = log_softmax_at(logits, win_ids[w, rows + 1])
            running.append(math.exp(nll[:w + 1].sum() / nll[:w + 1].size))
            print(f"[{w + 1}]{running[-1]:.4f} ({time.perf_counter() - t1:.1f} s)", flush=True)
        dt = time.perf_counter() - t1
        total, count = float(nll.sum()), int(nll.size)
        result = {
            "model": str(a.model),
            "ids_file": str(a.ids),
            "n_ids": len(ids),
            "n_ctx": n_ctx,
            "windows": nw,
            "first": first,
            "scored_per_window": len(rows),
            "add_bos": add_bos,
            "bos_id": model.bos_id,
            "window_mean_nll": nll.mean(axis=1).tolist(),
            "running_ppl": running,
            "total_nll": total,
            "count": count,
            "mean_nll": total / count,
            "ppl": math.exp(total / count),
            "definition": PPL_DEFINITION,
            "compute": "float64 forward (dequantized weights widened to float64), float64 log-softmax",
            "wall_s": round(dt, 3),
        }
        (out / "smollm2_ppl.json").write_text(json.dumps(result, indent=1) + "\n")
        save_file({"window_ids": win_ids, "nll": nll}, str(out / "smollm2_ppl_tokens.safetensors"))
        print(json.dumps({k: result[k] for k in ("count", "total_nll", "mean_nll", "ppl", "wall_s")}))


if __name__ == "__main__":
    main()
