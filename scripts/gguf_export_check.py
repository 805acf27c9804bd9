#!/usr/bin/env python3
"""Reads a GGUF file with the gguf Python package, for Kiln's GGUF export
tests (frontends/tests/gguf_export.rs).

    gguf_export_check.py FILE.gguf OUT_DIR [--no-tensors] [--hf-names NAMES.json]

Writes
  OUT_DIR/meta.json
      "metadata": every key/value GGUFReader reads, in file order, with its
        stored type ({"key", "type", "value"}; arrays add "elem"; floats as
        their IEEE bit patterns, f32 as u32 and f64 as u64, so values
        compare exactly);
      "tensors": name, ggml type, dims (GGUF order, innermost first), bytes;
      "missing_keys": the keys llama.cpp needs for the file's architecture
        (named by the package's gguf.Keys) that the file lacks;
      "unknown_tensors": tensor names that are not the package's names
        (gguf.MODEL_TENSORS / TENSOR_NAMES) for the architecture and block count;
      "file_type_name": general.file_type as gguf.LlamaFileType names it;
      "hf_names" (with --hf-names, a JSON list of Hugging Face tensor names):
        the GGUF name the package's TensorNameMap gives each one.
  OUT_DIR/values.safetensors (unless --no-tensors): gguf.quants.dequantize of
      every tensor, f32, shaped as GGUFReader shapes it (outermost first).
  OUT_DIR/raw.safetensors (unless --no-tensors): every tensor's stored
      bytes, uint8, flat.
"""

import argparse
import json
from pathlib import Path

import numpy as np
import gguf
from gguf import GGUFReader, GGUFValueType as V
from gguf.quants import dequantize
from safetensors.numpy import save_file

VTYPE_NAME = {
    V.UINT8: "u8", V.INT8: "i8", V.UINT16: "u16", V.INT16: "i16", V.UINT32: "u32", V.INT32: "i32",
    V.UINT64: "u64", V.INT64: "i64", V.FLOAT32: "f32", V.FLOAT64: "f64", V.BOOL: "bool",
    V.STRING: "string", V.ARRAY: "array",
}


def plain(vtype, x):
    """One scalar as JSON: floats as bit patterns."""
    if vtype == V.FLOAT32:
        return int(np.array([x], np.float32).view(np.uint32)[0])
    if vtype == V.FLOAT64:
        return int(np.array([x], np.float64).view(np.uint64)[0])
    if vtype == V.BOOL:
        return bool(x)
    if vtype == V.STRING:
        return x
    return int(x)


def field_json(key, field):
    types = field.types
    value = field.contents()
    if types[0] == V.ARRAY:
        if len(types) > 2:
            raise SystemExit(f"{key}: nested arrays are not expected in an exported file")
        elem = types[1]
        return {"key": key, "type": "array", "elem": VTYPE_NAME[elem],
                "value": [plain(elem, x) for x in value]}
    return {"key": key, "type": VTYPE_NAME[types[0]], "value": plain(types[0], value)}


def required_keys(arch):
    K = gguf.Keys
    keys = [
        K.General.ARCHITECTURE, K.General.FILE_TYPE,
        K.LLM.CONTEXT_LENGTH, K.LLM.EMBEDDING_LENGTH, K.LLM.BLOCK_COUNT, K.LLM.FEED_FORWARD_LENGTH,
        K.LLM.VOCAB_SIZE, K.Attention.HEAD_COUNT, K.Attention.HEAD_COUNT_KV,
        K.Attention.LAYERNORM_RMS_EPS, K.Rope.FREQ_BASE, K.Rope.DIMENSION_COUNT,
        K.Tokenizer.MODEL, K.Tokenizer.LIST, K.Tokenizer.TOKEN_TYPE,
        K.Tokenizer.BOS_ID, K.Tokenizer.EOS_ID,
    ]
    return [k.format(arch=arch) for k in keys]


def arch_of(name):
    return next((a for a, n in gguf.MODEL_ARCH_NAMES.items() if n == name), None)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("file", type=Path)
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--no-tensors", action="store_true")
    ap.add_argument("--hf-names", type=Path)
    a = ap.parse_args()

    r = GGUFReader(a.file)
    meta = [field_json(k, f) for k, f in r.fields.items() if not k.startswith("GGUF.")]
    keys = {m["key"] for m in meta}
    arch_name = r.fields["general.architecture"].contents()
    arch = arch_of(arch_name)
    if arch is None:
        raise SystemExit(f"{a.file}: the gguf package knows no architecture '{arch_name}'")
    n_blocks = int(r.fields[f"{arch_name}.block_count"].contents())

    known = set()
    for t in gguf.MODEL_TENSORS[arch]:
        for bid in range(n_blocks):
            base = gguf.TENSOR_NAMES[t].format(bid=bid)
            known.update({base + ".weight", base + ".bias"})
    out = {
        "metadata": meta,
        "tensors": [{"name": t.name, "type": t.tensor_type.name, "ggml_dims": [int(d) for d in t.shape],
                     "n_bytes": int(t.n_bytes)} for t in r.tensors],
        "missing_keys": [k for k in required_keys(arch_name) if k not in keys],
        "unknown_tensors": [t.name for t in r.tensors if t.name not in known],
        "file_type_name": gguf.LlamaFileType(int(r.fields["general.file_type"].contents())).name,
    }
    if a.hf_names:
        tmap = gguf.get_tensor_name_map(arch, n_blocks)
        names = json.loads(a.hf_names.read_text())
        out["hf_names"] = {n: tmap.get_name(n, try_suffixes=(".weight", ".bias")) for n in names}

    a.out_dir.mkdir(parents=True, exist_ok=True)
    (a.out_dir / "meta.json").write_text(json.dumps(out, ensure_ascii=False))
    if not a.no_tensors:
        values, raw = {}, {}
        for t in r.tensors:
            values[t.name] = np.ascontiguousarray(dequantize(t.data, t.tensor_type), dtype=np.float32)
            raw[t.name] = np.ascontiguousarray(t.data).view(np.uint8).reshape(-1)
        save_file(values, str(a.out_dir / "values.safetensors"))
        save_file(raw, str(a.out_dir / "raw.safetensors"))


if __name__ == "__main__":
    main()
