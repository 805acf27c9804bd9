"""Times onnxruntime on one model and input, for Kiln's benchmark tables.

Usage: bench_ort.py MODEL INPUT.safetensors --runs N --threads T
Prints one JSON object: {"runtime": "onnxruntime", "version", "times_s": [...], "median_s"}.
"""
import argparse
import json
import statistics
import time

import onnxruntime as ort
from safetensors.numpy import load_file


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("model")
    p.add_argument("input")
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--warmup", type=int, default=2)
    a = p.parse_args()
    so = ort.SessionOptions()
    so.intra_op_num_threads = a.threads
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(a.model, so, providers=["CPUExecutionProvider"])
    feeds = load_file(a.input)
    for _ in range(a.warmup):
        sess.run(None, feeds)
    times = []
    for _ in range(a.runs):
        t = time.perf_counter()
        sess.run(None, feeds)
        times.append(time.perf_counter() - t)
    print(json.dumps({"runtime": "onnxruntime", "version": ort.__version__, "threads": a.threads,
                      "times_s": times, "median_s": statistics.median(times)}))


if __name__ == "__main__":
    main()
