#!/usr/bin/env python3
"""Write the ONNX backend node tests to disk, offline.

Usage: gen_onnx_node_tests.py OUT_DIR

Calls onnx.backend.test.case.node.collect_testcases(None) (the cases that ship
inside the `onnx` package, computed locally, nothing downloaded) and writes each
case with kind == 'node' the way onnx's own backend test data is laid out:

    OUT_DIR/<name>/model.onnx
    OUT_DIR/<name>/test_data_set_<k>/input_<i>.pb    (serialized TensorProto)
    OUT_DIR/<name>/test_data_set_<k>/output_<i>.pb

input_<i> belongs to the model's i-th graph input, output_<i> to its i-th
graph output. Cases whose inputs or outputs are not plain tensors (sequences,
optionals, maps) are not written; they are listed in OUT_DIR/skipped.txt
("name<TAB>reason"). A case whose rtol/atol differ from onnx's defaults gets a
tolerance.json next to its model. OUT_DIR/manifest.txt lists the written cases.

The output goes to a temporary sibling directory first and is renamed into
place at the end, so an interrupted run never leaves a half-written tree.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import warnings

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper
from onnx.backend.test.case import node as node_cases

DEFAULT_RTOL = 1e-3
DEFAULT_ATOL = 1e-7


def non_tensor_reason(value_infos, values, what: str) -> str | None:
    for j, vi in enumerate(value_infos):
        kind = vi.type.WhichOneof("value")
        if kind != "tensor_type":
            return f"{what} {j} ({vi.name!r}) is {kind}, not a tensor"
    if len(values) != len(value_infos):
        return f"{len(values)} {what} values for {len(value_infos)} graph {what}s"
    for j, v in enumerate(values):
        if not isinstance(v, (np.ndarray, np.generic, TensorProto)):
            return f"{what} {j} value is a {type(v).__name__}, not a tensor"
    return None


def to_tensor_proto(value, name: str) -> TensorProto:
    if isinstance(value, TensorProto):
        t = TensorProto()
        t.CopyFrom(value)
        if not t.name:
            t.name = name
        return t
    return numpy_helper.from_array(np.asarray(value), name)


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    out_dir = os.path.abspath(sys.argv[1])
    tmp_dir = out_dir + ".tmp"
    if os.path.exists(tmp_dir):
        shutil.rmtree(tmp_dir)
    os.makedirs(tmp_dir)

    with warnings.catch_warnings():
        # The case generators compute overflowing casts, log(0) etc. on purpose.
        warnings.simplefilter("ignore")
        cases = node_cases.collect_testcases(None)

    written: list[str] = []
    skipped: list[tuple[str, str]] = []
    for case in sorted(cases, key=lambda c: c.name):
        if case.kind != "node":
            skipped.append((case.name, f"kind is {case.kind!r}, not 'node'"))
            continue
        model = case.model
        if model is None or not case.data_sets:
            skipped.append((case.name, "no model or no data sets"))
            continue
        graph = model.graph
        reason = None
        for inputs, outputs in case.data_sets:
            reason = non_tensor_reason(graph.input, list(inputs), "input") or non_tensor_reason(
                graph.output, list(outputs), "output"
            )
            if reason:
                break
        if reason:
            skipped.append((case.name, reason))
            continue

        case_dir = os.path.join(tmp_dir, case.name)
        os.makedirs(case_dir)
        with open(os.path.join(case_dir, "model.onnx"), "wb") as f:
            f.write(model.SerializeToString())
        if (case.rtol, case.atol) != (DEFAULT_RTOL, DEFAULT_ATOL):
            with open(os.path.join(case_dir, "tolerance.json"), "w") as f:
                json.dump({"rtol": case.rtol, "atol": case.atol}, f, sort_keys=True)
        for k, (inputs, outputs) in enumerate(case.data_sets):
            ds_dir = os.path.join(case_dir, f"test_data_set_{k}")
            os.makedirs(ds_dir)
            for j, value in enumerate(inputs):
                with open(os.path.join(ds_dir, f"input_{j}.pb"), "wb") as f:
                    f.write(to_tensor_proto(value, graph.input[j].name).SerializeToString())
            for j, value in enumerate(outputs):
                with open(os.path.join(ds_dir, f"output_{j}.pb"), "wb") as f:
                    f.write(to_tensor_proto(value, graph.output[j].name).SerializeToString())
        written.append(case.name)

    with open(os.path.join(tmp_dir, "skipped.txt"), "w") as f:
        for name, reason in skipped:
            f.write(f"{name}\t{reason}\n")
    with open(os.path.join(tmp_dir, "manifest.txt"), "w") as f:
        f.write("".join(f"{n}\n" for n in written))

    if os.path.exists(out_dir):
        shutil.rmtree(out_dir)
    os.rename(tmp_dir, out_dir)
    print(
        f"onnx {onnx.__version__}: wrote {len(written)} node tests to {out_dir}, "
        f"skipped {len(skipped)} (see skipped.txt)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
