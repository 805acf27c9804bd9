#!/usr/bin/env python3
"""Reference data for Kiln's GGUF reader (frontends/tests/gguf_*.rs).

    gguf_testfiles.py OUT_DIR
        Writes small GGUF files with the gguf package's GGUFWriter: one per
        dequantizable type (random raw blocks, finite random f16 scales,
        stored as-is through raw_dtype), one with metadata of every value
        type, and one with an IQ2_XXS tensor. Writes the values
        gguf.quants.dequantize computes for every tensor to
        OUT_DIR/expected.safetensors, and the files' metadata, tensor infos
        and the ggml type table to OUT_DIR/expected.json.

    gguf_testfiles.py OUT_DIR --model FILE.gguf
        Reads a real GGUF file with GGUFReader and writes its metadata and
        tensor list to OUT_DIR/model.json, and a few of its tensors
        dequantized by gguf.quants.dequantize to OUT_DIR/model.safetensors.

Floats in the JSON are written as their IEEE bit patterns (f32 as u32, f64
as u64) so that every value, infinities included, compares exactly.
"""

import argparse
import json
import math
import struct
import sys
from pathlib import Path

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType as Q, GGUFReader, GGUFValueType as V, GGUFWriter
from gguf.quants import dequantize
from safetensors.numpy import save_file

SEED = 20240607

# Byte offsets of the f16 scale/minimum fields inside one block of each type
# (ggml's block_q*_* structs); these are drawn as finite values, every other
# byte is random.
F16_FIELDS = {
    Q.Q4_0: [0], Q.Q4_1: [0, 2], Q.Q5_0: [0], Q.Q5_1: [0, 2], Q.Q8_0: [0],
    Q.Q2_K: [80, 82], Q.Q3_K: [108], Q.Q4_K: [0, 2], Q.Q5_K: [0, 2], Q.Q6_K: [208],
}
FLOAT_TYPES = [Q.F32, Q.F16, Q.BF16]
# Some files use a non-default alignment so the reader must honour general.alignment.
ALIGNMENT = {Q.Q8_0: 64, Q.F16: 8, Q.Q6_K: 1024}

VTYPE_NAME = {
    V.UINT8: "u8", V.INT8: "i8", V.UINT16: "u16", V.INT16: "i16", V.UINT32: "u32", V.INT32: "i32",
    V.UINT64: "u64", V.INT64: "i64", V.FLOAT32: "f32", V.FLOAT64: "f64", V.BOOL: "bool",
    V.STRING: "string", V.ARRAY: "array",
}


def f32_bits(x: float) -> int:
    return struct.unpack("<I", struct.pack("<f", x))[0]


def f64_bits(x: float) -> int:
    return struct.unpack("<Q", struct.pack("<d", x))[0]


def encode(vtype, value, sub_type=None):
    """A metadata value as {"type", "value"}; array elements likewise."""
    if vtype == V.ARRAY:
        if sub_type is None:
            sub_type = V.get_type(value[0])
        return {"type": "array", "value": [encode(sub_type, v) for v in value]}
    if vtype == V.FLOAT32:
        value = f32_bits(value)
    elif vtype == V.FLOAT64:
        value = f64_bits(value)
    return {"type": VTYPE_NAME[vtype], "value": value}


def metadata_spec():
    """(key, type, value, array element type) for every GGUF value type."""
    strings = [f"tok{i}_{'é' * (i % 3)}" for i in range(1000)] + ["", "Ġthe", "<|im_end|>", "世界"]
    return [
        ("test.u8", V.UINT8, 200, None),
        ("test.i8", V.INT8, -100, None),
        ("test.u16", V.UINT16, 65535, None),
        ("test.i16", V.INT16, -32768, None),
        ("test.u32", V.UINT32, 4294967295, None),
        ("test.i32", V.INT32, -2147483648, None),
        ("test.u64", V.UINT64, 2**64 - 1, None),
        ("test.i64", V.INT64, -(2**63), None),
        ("test.f32", V.FLOAT32, 1e-5, None),
        ("test.f32_inf", V.FLOAT32, -math.inf, None),
        ("test.f64", V.FLOAT64, math.pi, None),
        ("test.f64_neg_zero", V.FLOAT64, -0.0, None),
        ("test.bool_true", V.BOOL, True, None),
        ("test.bool_false", V.BOOL, False, None),
        ("test.string", V.STRING, "héllo ✓ 世界\n\"quoted\"", None),
        ("test.empty_string", V.STRING, "", None),
        ("test.arr_u8", V.ARRAY, [0, 1, 127, 255], V.UINT8),
        ("test.arr_i16", V.ARRAY, [-32768, 0, 32767], V.INT16),
        ("test.arr_i32", V.ARRAY, [-5, 0, 7, 2**31 - 1], V.INT32),
        ("test.arr_u64", V.ARRAY, [0, 2**53 + 1, 2**64 - 1], V.UINT64),
        ("test.arr_f32", V.ARRAY, [0.5, -1.25, 1e30, math.inf], V.FLOAT32),
        ("test.arr_f64", V.ARRAY, [1e-300, -2.5], V.FLOAT64),
        ("test.arr_bool", V.ARRAY, [True, False, True], V.BOOL),
        ("test.arr_str", V.ARRAY, strings, V.STRING),
        ("test.arr_nested", V.ARRAY, [[1, 2], [3], [4, 5, 6]], None),
        ("test.arr_nested_str", V.ARRAY, [["a"], ["b", "c"]], None),
    ]


def random_blocks(rng, qtype, n_blocks):
    """n_blocks raw blocks of qtype: random bytes with finite random f16 scales."""
    _, type_size = GGML_QUANT_SIZES[qtype]
    blocks = rng.integers(0, 256, size=(n_blocks, type_size), dtype=np.uint8)
    for off in F16_FIELDS[qtype]:
        # Normal-ish scales over several decades, both signs, some subnormal.
        scales = rng.standard_normal(n_blocks) * 10.0 ** rng.uniform(-6, 1, n_blocks)
        blocks[:, off:off + 2] = scales.astype(np.float16).view(np.uint8).reshape(n_blocks, 2)
    return blocks


def float_payload(rng, qtype, n):
    """n values of a float type as raw bytes (uint8)."""
    if qtype == Q.F32:
        bits = rng.integers(0, 2**32, size=n, dtype=np.uint64).astype(np.uint32)
        return bits.view(np.uint8)
    if qtype == Q.BF16:
        # Every bfloat16 pattern (NaNs included: the conversion is a bit move).
        return np.resize(np.arange(2**16, dtype=np.uint16), n).view(np.uint8)
    # Every non-NaN half pattern. NaN payload handling of numpy's cast could
    # depend on the CPU it was built for, so NaNs stay out of the comparison.
    all_bits = np.arange(2**16, dtype=np.uint16)
    finite = all_bits[~np.isnan(all_bits.view(np.float16))]
    return np.resize(finite, n).view(np.uint8)


def tensor_shapes(qtype):
    """(suffix, numpy shape) of the tensors written for qtype."""
    block, _ = GGML_QUANT_SIZES[qtype]
    if qtype in FLOAT_TYPES:
        big = {Q.F32: (80, 1024), Q.F16: (62, 1024), Q.BF16: (64, 1024)}[qtype]
        return [("small", (5, 7)), ("cube", (2, 3, 4)), ("vector", (9,)), ("big", big)]
    # "big" exceeds the reader's single-thread threshold (65536 elements).
    return [("small", (3, 3 * block)), ("cube", (2, 3, block)), ("big", (80, 1024))]


def raw_tensor(rng, qtype, shape):
    """Raw bytes for a tensor of numpy shape `shape`, shaped (..., row_bytes)."""
    block, type_size = GGML_QUANT_SIZES[qtype]
    n = int(np.prod(shape))
    if qtype in FLOAT_TYPES:
        flat = float_payload(rng, qtype, n)
    else:
        flat = random_blocks(rng, qtype, n // block).reshape(-1)
    return flat.reshape(*shape[:-1], shape[-1] // block * type_size)


def tensor_json(reader_tensor, data_offset):
    t = reader_tensor
    return {
        "name": t.name,
        "type": t.tensor_type.name,
        "type_id": int(t.tensor_type),
        "ggml_dims": [int(d) for d in t.shape],
        "n_elements": int(t.n_elements),
        "n_bytes": int(t.n_bytes),
        "offset": int(t.data_offset) - int(data_offset),
    }


def write_synthetic(out: Path):
    rng = np.random.default_rng(SEED)
    expected_values = {}
    files = []

    def finish(writer, path, meta_json):
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        reader = GGUFReader(path)
        files.append({
            "file": path.name,
            "alignment": int(reader.alignment),
            "data_offset": int(reader.data_offset),
            "metadata": meta_json,
            "tensors": [tensor_json(t, reader.data_offset) for t in reader.tensors],
        })

    for qtype in FLOAT_TYPES + list(F16_FIELDS):
        path = out / f"{qtype.name.lower()}.gguf"
        w = GGUFWriter(path, "test")
        meta = {"general.architecture": encode(V.STRING, "test")}
        if qtype in ALIGNMENT:
            w.add_custom_alignment(ALIGNMENT[qtype])
            meta["general.alignment"] = encode(V.UINT32, ALIGNMENT[qtype])
        for suffix, shape in tensor_shapes(qtype):
            name = f"{qtype.name.lower()}.{suffix}"
            raw = raw_tensor(rng, qtype, shape)
            w.add_tensor(name, raw, raw_dtype=qtype)
            values = dequantize(raw, qtype)
            assert values.dtype == np.float32 and values.shape == shape, (name, values.shape)
            expected_values[name] = np.ascontiguousarray(values)
        finish(w, path, meta)

    # Metadata of every value type.
    path = out / "metadata.gguf"
    w = GGUFWriter(path, "test")
    meta = {"general.architecture": encode(V.STRING, "test")}
    for key, vtype, value, sub_type in metadata_spec():
        w.add_key_value(key, value, vtype, sub_type=sub_type)
        meta[key] = encode(vtype, value, sub_type)
    raw = raw_tensor(rng, Q.F32, (2, 3))
    w.add_tensor("meta.weight", raw, raw_dtype=Q.F32)
    expected_values["meta.weight"] = np.ascontiguousarray(dequantize(raw, Q.F32))
    finish(w, path, meta)

    # A type the reader lists but cannot dequantize.
    path = out / "iq2_xxs.gguf"
    w = GGUFWriter(path, "test")
    _, type_size = GGML_QUANT_SIZES[Q.IQ2_XXS]
    w.add_tensor("iq.weight", rng.integers(0, 256, size=(2, type_size), dtype=np.uint8), raw_dtype=Q.IQ2_XXS)
    finish(w, path, {"general.architecture": encode(V.STRING, "test")})

    save_file(expected_values, str(out / "expected.safetensors"))
    types = {q.name: {"id": int(q), "block_size": bs, "type_size": ts} for q, (bs, ts) in GGML_QUANT_SIZES.items()}
    (out / "expected.json").write_text(json.dumps({"files": files, "ggml_types": types}, ensure_ascii=False))


def field_json(field):
    """A GGUFReader field as {"type", "value"} (arrays one level deep, as in real files)."""
    main = field.types[0]
    if main == V.ARRAY:
        sub = field.types[1]
        if sub == V.ARRAY:
            raise SystemExit(f"{field.name}: nested arrays are not handled by this dump")
        return {"type": "array", "value": [encode(sub, v) for v in field.contents()]}
    return encode(main, field.contents())


def dump_model(out: Path, model: Path):
    r = GGUFReader(model)
    version = int(r.fields["GGUF.version"].contents())
    meta = {k: field_json(f) for k, f in r.fields.items() if not k.startswith("GGUF.")}
    arch = r.fields["general.architecture"].contents()
    n_layers = int(r.fields[f"{arch}.block_count"].contents())
    names = ["token_embd.weight", "blk.0.attn_q.weight", "blk.0.attn_norm.weight",
             f"blk.{n_layers - 1}.ffn_down.weight"]
    by_name = {t.name: t for t in r.tensors}
    values = {}
    for name in names:
        t = by_name[name]
        values[name] = np.ascontiguousarray(dequantize(t.data, t.tensor_type))
    save_file(values, str(out / "model.safetensors"))
    (out / "model.json").write_text(json.dumps({
        "version": version,
        "alignment": int(r.alignment),
        "data_offset": int(r.data_offset),
        "metadata": meta,
        "tensors": [tensor_json(t, r.data_offset) for t in r.tensors],
        "dumped": names,
    }, ensure_ascii=False))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--model", type=Path, help="dump this real GGUF file instead of writing test files")
    args = ap.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    if args.model:
        dump_model(args.out_dir, args.model)
    else:
        write_synthetic(args.out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
