#!/usr/bin/env python3
"""Reference checks for Kiln's GGUF writer and quantizers (frontends/tests/gguf_writer.rs).

    gguf_check.py read FILE.gguf OUT_DIR
        Reads FILE with the gguf package's GGUFReader. Writes
        OUT_DIR/read.json (version, alignment, data offset, every metadata
        key/value in file order with its stored types, arrays of arrays
        decoded level by level, and the tensor infos),
        OUT_DIR/read.safetensors (gguf.quants.dequantize of every tensor
        whose type it can dequantize), and, when every value can be
        expressed through GGUFWriter's API, OUT_DIR/rewrite.gguf: the same
        metadata and tensors written again by GGUFWriter.

    gguf_check.py quantize IN.safetensors OUT.safetensors
        For every f32 tensor of IN named "TYPE/anything" (TYPE a ggml type
        name such as Q4_0), writes gguf.quants.quantize(values, TYPE) as raw
        bytes (uint8) under the same name.

    gguf_check.py codes IN.safetensors OUT.safetensors
        For every TYPE with tensors "TYPE/codes" (integer codes) and
        "TYPE/scales" (f32, one per 32 codes; "TYPE/mins" too for Q4_1 and
        Q5_1), writes "TYPE/expected": the f32 values those codes stand for,
        f32(f16(scale)) * code (+ f32(f16(min))), computed by numpy.

Floats in the JSON are written as their IEEE bit patterns (f32 as u32, f64
as u64) so that every value, NaN and infinities included, compares exactly.
"""

import argparse
import json
import struct
import sys
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType as Q, GGUFReader, GGUFValueType as V, GGUFWriter
from gguf.quants import dequantize, quantize
from safetensors.numpy import load_file, save_file

VTYPE_NAME = {
    V.UINT8: "u8", V.INT8: "i8", V.UINT16: "u16", V.INT16: "i16", V.UINT32: "u32", V.INT32: "i32",
    V.UINT64: "u64", V.INT64: "i64", V.FLOAT32: "f32", V.FLOAT64: "f64", V.BOOL: "bool",
    V.STRING: "string", V.ARRAY: "array",
}


def decode(parts, i, vtype):
    """Decodes one value from GGUFReader's field parts starting at parts[i].

    Returns (json value, python value, writable, next index). GGUFReader
    flattens arrays of arrays in `contents()`, but its parts keep every
    level: an array is [element type, length, element parts...], a string
    [length, bytes], a scalar one part.
    """
    if vtype == V.STRING:
        s = bytes(parts[i + 1]).decode("utf-8")
        return {"type": "string", "value": s}, s, True, i + 2
    if vtype == V.ARRAY:
        elem = V(int(parts[i][0]))
        n = int(parts[i + 1][0])
        i += 2
        items, values, writable = [], [], True
        for _ in range(n):
            j, v, w, i = decode(parts, i, elem)
            items.append(j)
            values.append(v)
            writable = writable and w
        return {"type": "array", "elem": VTYPE_NAME[elem], "value": items}, (elem, values), writable, i
    x = parts[i][0]
    if vtype == V.FLOAT32:
        bits = int(np.array([x], np.float32).view(np.uint32)[0])
        return {"type": "f32", "value": bits}, float(x), True, i + 1
    if vtype == V.FLOAT64:
        bits = int(np.array([x], np.float64).view(np.uint64)[0])
        return {"type": "f64", "value": bits}, float(x), True, i + 1
    if vtype == V.BOOL:
        return {"type": "bool", "value": bool(x)}, bool(x), True, i + 1
    return {"type": VTYPE_NAME[vtype], "value": int(x)}, int(x), True, i + 1


def nested_python(value):
    """An inner array as GGUFWriter takes it (plain lists), or None when
    GGUFWriter would pick another element type than the stored one (it
    derives inner arrays' types from the Python values: int -> i32,
    float -> f32)."""
    elem, values = value
    implied = {V.INT32, V.FLOAT32, V.BOOL, V.STRING, V.ARRAY}
    if elem not in implied:
        return None
    if elem == V.ARRAY:
        inner = [nested_python(v) for v in values]
        return None if any(v is None for v in inner) else inner
    return values


def tensor_json(t, data_offset):
    return {
        "name": t.name,
        "type": t.tensor_type.name,
        "type_id": int(t.tensor_type),
        "ggml_dims": [int(d) for d in t.shape],
        "n_elements": int(t.n_elements),
        "n_bytes": int(t.n_bytes),
        "offset": int(t.data_offset) - int(data_offset),
    }


def read(path: Path, out: Path):
    r = GGUFReader(path)
    meta = []
    rewrite_kv = []
    writable = True
    for key, field in r.fields.items():
        if key.startswith("GGUF."):
            continue
        # parts: [key length, key bytes, value type, value parts...]
        vtype = V(int(field.parts[2][0]))
        j, v, _, end = decode(field.parts, 3, vtype)
        assert end == len(field.parts), key
        meta.append({"key": key, "value": j})
        if vtype == V.ARRAY:
            elem, values = v
            if elem == V.ARRAY:
                values = [nested_python(x) for x in values]
                if any(x is None for x in values):
                    writable = False
            rewrite_kv.append((key, values, vtype, elem))
        else:
            rewrite_kv.append((key, v, vtype, None))

    values = {}
    for t in r.tensors:
        try:
            values[t.name] = np.ascontiguousarray(dequantize(t.data, t.tensor_type))
        except NotImplementedError:
            pass
    save_file(values, str(out / "read.safetensors"))

    arch = next((v for k, v, _, _ in rewrite_kv if k == "general.architecture"), None)
    if writable and arch is not None and rewrite_kv[0][0] == "general.architecture":
        w = GGUFWriter(out / "rewrite.gguf", arch)
        for key, v, vtype, sub in rewrite_kv:
            if key == "general.alignment":
                w.add_custom_alignment(v)
            else:
                w.add_key_value(key, v, vtype, sub_type=sub)
        for t in r.tensors:
            w.add_tensor(t.name, t.data, raw_dtype=t.tensor_type)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
    else:
        writable = False

    (out / "read.json").write_text(json.dumps({
        "version": int(r.fields["GGUF.version"].contents()),
        "alignment": int(r.alignment),
        "data_offset": int(r.data_offset),
        "metadata": meta,
        "tensors": [tensor_json(t, r.data_offset) for t in r.tensors],
        "dequantized": sorted(values),
        "rewritten": writable,
    }, ensure_ascii=False))


def quantize_file(inp: Path, out: Path):
    result = {}
    for name, values in load_file(str(inp)).items():
        qtype = Q[name.split("/")[0]]
        assert values.dtype == np.float32, name
        with np.errstate(all="ignore"):
            q = quantize(values, qtype)
        result[name] = np.ascontiguousarray(q).view(np.uint8).reshape(values.shape[0], -1)
    save_file(result, str(out))


def codes_file(inp: Path, out: Path):
    t = load_file(str(inp))
    result = {}
    for qname in sorted({n.split("/")[0] for n in t}):
        codes = t[f"{qname}/codes"].astype(np.float32).reshape(-1, 32)
        d = t[f"{qname}/scales"].astype(np.float16).astype(np.float32).reshape(-1, 1)
        values = d * codes
        if f"{qname}/mins" in t:
            values = values + t[f"{qname}/mins"].astype(np.float16).astype(np.float32).reshape(-1, 1)
        result[f"{qname}/expected"] = np.ascontiguousarray(values.reshape(-1))
    save_file(result, str(out))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="mode", required=True)
    p = sub.add_parser("read")
    p.add_argument("file", type=Path)
    p.add_argument("out_dir", type=Path)
    for mode in ("quantize", "codes"):
        p = sub.add_parser(mode)
        p.add_argument("input", type=Path)
        p.add_argument("output", type=Path)
    args = ap.parse_args()
    if args.mode == "read":
        args.out_dir.mkdir(parents=True, exist_ok=True)
        read(args.file, args.out_dir)
    elif args.mode == "quantize":
        quantize_file(args.input, args.output)
    else:
        codes_file(args.input, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
