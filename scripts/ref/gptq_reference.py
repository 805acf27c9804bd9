"""Independent NumPy reference of GPTQ as Kiln's passes/src/quant/gptq.rs specifies it.

Written from the GPTQ paper (Frantar et al. 2022, Algorithm 1) and the structure
of the reference implementation's `GPTQ.fasterquant` (gptq.py), not from the
Rust code; everything is float64 except the code arithmetic, which follows
docs/quant-formats.md (float32 division, round half away from zero, f16
scales rounded toward zero, at least 2^-14).

Usage:
  gptq_reference.py --rows R --cols C --format w4g32[a] --act-order 0|1
                    --damp 0.01 --block 128 --w W.f32 --h H.f64 --out DIR

W.f32 is the [R, C] (= [in, out]) weight, row-major little-endian float32;
H.f64 the [R, R] Hessian X^T X, float64. Writes to DIR:
  codes.u8   [R, C] codes, row-major
  scales.u16 [C, groups] f16 bit patterns (column-major groups, as Kiln packs)
  zeros.u8   [C, groups] zero points (asymmetric formats only)
  deq.f64    [R, C] dequantized weight
  error.txt  tr(dW^T H dW) / tr(W^T H W), dW = W - deq, and tries (damp retries)

Conventions, in the reference's layout (torch Linear weight = [out, in], so
the code below works on W^T and "columns" are input features):
  * dead inputs: H_ii == 0 -> H_ii = 1 and W[:, i] = 0;
  * act order: perm = stable argsort of -diag(H) (after the dead fix); group
    parameters are then static (computed from W before any update, groups in
    the ORIGINAL input order, "static_groups=True");
  * without act order, a group's parameters are computed when its first
    input is reached, from the current W; the loop is run with
    blocksize = groupsize so that the current W is fully updated there
    (fasterquant reads the global W, which lags the in-block updates when
    blocksize > groupsize);
  * without a group (per output channel), parameters come from the whole W
    after the dead fix;
  * damp: H += damp * mean(diag H) * I; Hinv = upper Cholesky factor of
    (H)^-1 via cholesky -> cholesky_inverse -> cholesky(upper), as fasterquant;
    if a Cholesky fails, damp *= 10 and retry (up to 5 tries).
"""

import argparse
import os

import numpy as np

MIN_SCALE = np.float16(2.0**-14)


def parse_format(text):
    assert text.startswith("w")
    sym = not text.endswith("a")
    body = text[1:].rstrip("a")
    bits, _, group = body.partition("g")
    return int(bits), (int(group) if group else None), sym


def round_away(t):
    """Round float32 values half away from zero (exact in float64)."""
    t = np.asarray(t, dtype=np.float32).astype(np.float64)
    return np.copysign(np.floor(np.abs(t) + 0.5), t)


def scale_at_most(x):
    """Largest f16 <= x (float32 array >= 0), at least 2^-14."""
    x = np.asarray(x, dtype=np.float32)
    h = x.astype(np.float16)
    up = h.astype(np.float32) > x
    h = np.where(up, np.nextafter(h, np.float16(0)), h)
    return np.maximum(h, MIN_SCALE).astype(np.float16)


def find_params(x, bits, sym):
    """Per-row (output channel) scale f16 and zero of a float32 block x [out, n]."""
    x = np.asarray(x, dtype=np.float32)
    if sym:
        qmax = np.float32((1 << (bits - 1)) - 1)
        amax = np.max(np.abs(x), axis=1).astype(np.float32)
        s = scale_at_most((amax / qmax).astype(np.float32))
        z = np.full(x.shape[0], 1 << (bits - 1), dtype=np.float64)
        return s, z
    q = np.float32((1 << bits) - 1)
    lo = np.minimum(np.min(x, axis=1), 0).astype(np.float32)
    hi = np.maximum(np.max(x, axis=1), 0).astype(np.float32)
    s = scale_at_most(((hi - lo).astype(np.float32) / q).astype(np.float32))
    z = np.zeros(x.shape[0])
    for r in range(x.shape[0]):
        for _ in range(5):
            sf = np.float32(s[r])
            zr = min(max(round_away(np.float32(-lo[r] / sf)), 0.0), float(q))
            top = round_away(np.float32(hi[r] / sf)) + zr
            if top >= q or s[r] <= MIN_SCALE:
                break
            s[r] = np.nextafter(s[r], np.float16(0))
        z[r] = zr
    return s, z


def quantize(w, s, z, maxq):
    """Codes and dequantized values of a float64 vector w with per-entry s, z."""
    t = (w.astype(np.float32) / s.astype(np.float32)).astype(np.float32)
    c = np.clip(round_away(t) + z, 0, maxq)
    return c, (c - z) * s.astype(np.float64)


def gptq(W_in, H_in, bits, group, sym, act_order, damp, blocksize):
    W = W_in.T.astype(np.float64).copy()  # [out, in]
    H = H_in.astype(np.float64).copy()
    n = W.shape[1]
    maxq = (1 << bits) - 1
    glen = group or n
    dead = np.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    static = act_order or group is None
    if not act_order:
        blocksize = glen if group else blocksize
    groups = []
    if static:
        for g0 in range(0, n, glen):
            groups.append(find_params(W[:, g0 : g0 + glen], bits, sym))
    perm = np.arange(n)
    if act_order:
        perm = np.argsort(-np.diag(H), kind="stable")
        W = W[:, perm]
        H = H[perm][:, perm]
    invperm = np.argsort(perm)
    mean_diag = np.mean(np.diag(H))
    tries = 0
    while True:
        tries += 1
        try:
            Hd = H + damp * mean_diag * np.eye(n)
            L = np.linalg.cholesky(Hd)
            Linv = np.linalg.inv(L)
            Hinv = Linv.T @ Linv  # cholesky_inverse
            Hinv = np.linalg.cholesky(Hinv).T  # upper
            break
        except np.linalg.LinAlgError:
            if tries == 5:
                raise
            damp = damp * 10 if damp > 0 else 0.01
    codes = np.zeros_like(W)
    Q = np.zeros_like(W)
    used = {}
    for i1 in range(0, n, blocksize):
        i2 = min(i1 + blocksize, n)
        count = i2 - i1
        W1 = W[:, i1:i2].copy()
        Q1 = np.zeros_like(W1)
        C1 = np.zeros_like(W1)
        Err1 = np.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]
        for i in range(count):
            w = W1[:, i]
            d = Hinv1[i, i]
            if static:
                idx = perm[i1 + i]
                s, z = groups[idx // glen]
                used[idx // glen] = (s, z)
            else:
                if (i1 + i) % glen == 0:
                    params = find_params(W[:, i1 + i : i1 + i + glen], bits, sym)
                    used[(i1 + i) // glen] = params
                s, z = params
            c, q = quantize(w, s, z, maxq)
            C1[:, i] = c
            Q1[:, i] = q
            err1 = (w - q) / d
            W1[:, i:] -= np.outer(err1, Hinv1[i, i:])
            Err1[:, i] = err1
        Q[:, i1:i2] = Q1
        codes[:, i1:i2] = C1
        W[:, i2:] -= Err1 @ Hinv[i1:i2, i2:]
    Q = Q[:, invperm]
    codes = codes[:, invperm]
    ngroups = -(-n // glen)
    scales = np.zeros((W.shape[0], ngroups), dtype=np.float16)
    zeros = np.zeros((W.shape[0], ngroups), dtype=np.uint8)
    for g in range(ngroups):
        scales[:, g], zeros[:, g] = used[g][0], used[g][1].astype(np.uint8)
    return Q.T.copy(), codes.T.astype(np.uint8).copy(), scales, zeros, tries


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, required=True)
    ap.add_argument("--cols", type=int, required=True)
    ap.add_argument("--format", required=True)
    ap.add_argument("--act-order", type=int, default=1)
    ap.add_argument("--damp", type=float, default=0.01)
    ap.add_argument("--block", type=int, default=128)
    ap.add_argument("--w", required=True)
    ap.add_argument("--h", required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    bits, group, sym = parse_format(a.format)
    W = np.fromfile(a.w, dtype="<f4").reshape(a.rows, a.cols)
    H = np.fromfile(a.h, dtype="<f8").reshape(a.rows, a.rows)
    deq, codes, scales, zeros, tries = gptq(W, H, bits, group, sym, bool(a.act_order), a.damp, a.block)
    os.makedirs(a.out, exist_ok=True)
    codes.tofile(os.path.join(a.out, "codes.u8"))
    scales.view("<u2").tofile(os.path.join(a.out, "scales.u16"))
    if not sym:
        zeros.tofile(os.path.join(a.out, "zeros.u8"))
    deq.astype("<f8").tofile(os.path.join(a.out, "deq.f64"))
    Wd = W.astype(np.float64)
    Hd = H.copy()
    dW = Wd - deq
    num = np.trace(dW.T @ Hd @ dW)
    den = np.trace(Wd.T @ Hd @ Wd)
    with open(os.path.join(a.out, "error.txt"), "w") as f:
        f.write(f"{float(num / den)!r} {tries}\n")


if __name__ == "__main__":
    main()
