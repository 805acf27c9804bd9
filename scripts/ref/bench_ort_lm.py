"""Times onnxruntime on a language model and stored inputs, for Kiln's benchmark tables.

Usage: bench_ort_lm.py MODEL.onnx --inputs FILE.{npz,safetensors} [--threads 2] [--runs N]
                       [--map input_ids=ids] [--batch B] [--seq S]

Session: CPU execution provider, intra_op_num_threads = --threads, inter_op 1,
ORT_ENABLE_ALL graph optimisation, sequential execution. Each model input is fed
from the tensor of the same name in FILE (or the one --map names); tensors of
lower rank get leading 1-dims ([64] ids -> [1, 64]), are cast to the input's
dtype, and --batch / --seq keep the first B rows / S columns. Unused tensors in
FILE are ignored. One warm-up run, then --runs timed runs.

Prints one JSON object: {"runtime", "version", "threads", "inputs": {name: shape},
"runs": [ms...], "median_ms"}.
"""
import argparse
import json
import statistics
import sys
import time

import numpy as np
import onnxruntime as ort

ORT_DTYPES = {"tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(float)": np.float32,
              "tensor(float16)": np.float16, "tensor(bool)": np.bool_}


def load_inputs(path: str) -> dict[str, np.ndarray]:
    if path.endswith(".npz"):
        with np.load(path) as z:
            return {k: z[k] for k in z.files}
    from safetensors.numpy import load_file

    return load_file(path)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("model")
    p.add_argument("--inputs", required=True)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--map", action="append", default=[], metavar="INPUT=TENSOR")
    p.add_argument("--batch", type=int)
    p.add_argument("--seq", type=int)
    a = p.parse_args()

    rename = dict(m.split("=", 1) for m in a.map)
    stored = load_inputs(a.inputs)
    so = ort.SessionOptions()
    so.intra_op_num_threads = a.threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    sess = ort.InferenceSession(a.model, so, providers=["CPUExecutionProvider"])

    feeds = {}
    for inp in sess.get_inputs():
        src = rename.get(inp.name, inp.name)
        if src not in stored:
            sys.exit(f"bench_ort_lm.py: {a.inputs} has no tensor {src!r} for model input {inp.name!r} "
                     f"(has {sorted(stored)}); use --map {inp.name}=NAME")
        x = stored[src]
        while x.ndim < len(inp.shape):
            x = x[None]
        if a.batch is not None:
            x = x[:a.batch]
        if a.seq is not None and x.ndim >= 2:
            x = x[:, :a.seq]
        feeds[inp.name] = np.ascontiguousarray(x.astype(ORT_DTYPES.get(inp.type, x.dtype)))

    sess.run(None, feeds)
    runs = []
    for _ in range(a.runs):
        t = time.perf_counter()
        sess.run(None, feeds)
        runs.append((time.perf_counter() - t) * 1e3)
    print(json.dumps({"runtime": "onnxruntime", "version": ort.__version__, "threads": a.threads,
                      "inputs": {k: list(v.shape) for k, v in feeds.items()},
                      "runs": [round(r, 3) for r in runs], "median_ms": round(statistics.median(runs), 3)}))


if __name__ == "__main__":
    main()
