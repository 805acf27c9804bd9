"""Independent NumPy reference of Kiln's RTN quantizer and packed layout.

Implements docs/quant-formats.md from the text (not from the Rust code) and
prints the expected bytes used by `ir/src/quant/tests.rs`
(`rtn_matches_the_numpy_reference`) and the bits-per-weight table of the
document. Run: python3 ir/src/quant/testdata/rtn_reference.py
"""

import math

import numpy as np

MIN_SCALE = np.float16(2.0**-14)


def scale_at_most(x):
    """Largest f16 <= x (x a float32 >= 0), raised to 2^-14."""
    h = np.float16(x)
    if np.float32(h) > x:
        h = np.nextafter(h, np.float16(0))
    return max(h, MIN_SCALE)


def round_away(t):
    """Round a float32 half away from zero (exact in float64)."""
    t = float(t)
    return math.copysign(math.floor(abs(t) + 0.5), t)


def quantize_group(v, bits, symmetric):
    """v: float32 array. Returns (scale f16, zero int, codes list)."""
    if symmetric:
        z = 1 << (bits - 1)
        qmax = np.float32(z - 1)
        amax = np.float32(np.max(np.abs(v)))
        s = scale_at_most(np.float32(amax / qmax))
    else:
        q = np.float32((1 << bits) - 1)
        lo = np.float32(min(np.min(v), 0))
        hi = np.float32(max(np.max(v), 0))
        s = scale_at_most(np.float32(np.float32(hi - lo) / q))
        for _ in range(5):
            sf = np.float32(s)
            z = min(max(round_away(np.float32(-lo / sf)), 0), q)
            top = round_away(np.float32(hi / sf)) + z
            if top >= q or s <= MIN_SCALE:
                break
            s = np.nextafter(s, np.float16(0))
        z = int(z)
    sf = np.float32(s)
    maxc = (1 << bits) - 1
    codes = [int(min(max(round_away(np.float32(x / sf)) + z, 0), maxc)) for x in v]
    return s, z, codes


def pack(codes, bits):
    per = {8: 1, 4: 2, 3: 8}[bits]
    nbytes = {8: 1, 4: 1, 3: 3}[bits]
    out = bytearray()
    for i in range(0, len(codes), per):
        word = 0
        for j, c in enumerate(codes[i : i + per]):
            word |= c << (bits * j)
        out += word.to_bytes(nbytes, "little")
    return bytes(out)


def quantize(w, bits, group, symmetric):
    rows, cols = w.shape
    glen = group or rows
    data, scales, zeros = bytearray(), [], []
    for c in range(cols):
        codes = []
        for g0 in range(0, rows, glen):
            s, z, cs = quantize_group(w[g0 : g0 + glen, c], bits, symmetric)
            scales.append(int(np.array(s, dtype=np.float16).view(np.uint16)))
            zeros.append(z)
            codes += cs
        data += pack(codes, bits)
    return bytes(data), scales, (None if symmetric else zeros)


def sample(rows, cols):
    w = np.zeros((rows, cols), dtype=np.float32)
    for r in range(rows):
        for c in range(cols):
            k = np.float32(((r * 37 + c * 11) % 23) - 11)
            w[r, c] = np.float32(k / np.float32(7)) + np.float32(np.float32(c) * np.float32(0.75))
    return w


def parse(fmt):
    sym = not fmt.endswith("a")
    body = fmt[1:].rstrip("a")
    bits, _, group = body.partition("g")
    return int(bits), (int(group) if group else None), sym


def bits_per_weight(rows, cols, fmt):
    bits, group, sym = parse(fmt)
    glen = group or rows
    groups = -(-rows // glen)
    col_bytes = {8: rows, 4: -(-rows // 2), 3: 3 * -(-rows // 8)}[bits]
    total = cols * col_bytes + cols * groups * (2 if sym else 3)
    return total, 8 * total / (rows * cols)


if __name__ == "__main__":
    w = sample(35, 3)
    for fmt in ["w8", "w4g32", "w4g32a", "w3", "w3g32a"]:
        data, scales, zeros = quantize(w, *parse(fmt))
        print(f'("{fmt}", "{data.hex()}", &{scales}, {"None" if zeros is None else f"Some(&{zeros})"}),')
    print()
    for fmt in ["w8", "w8a", "w4g128", "w4g128a", "w4g64", "w4g64a", "w4g32", "w4g32a", "w3g64", "w3g64a", "w3g128", "w3g128a"]:
        total, bpw = bits_per_weight(576, 1536, fmt)
        print(f"{fmt:8} {total:8} bytes {bpw:.4f} bits/weight")
