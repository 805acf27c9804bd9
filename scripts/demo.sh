#!/usr/bin/env bash
# Set up the machine (scripts/setup.sh), build the kiln CLI, optimise the
# default model (DINOv2 ViT-S/14 saliency, ONNX) for the host CPU, inspect the
# bundle, run it on the photo and compare the result with onnxruntime's; then
# compile the SmolLM2-135M language model (GGUF) to a bundle and measure its
# perplexity on Moby Dick.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export KILN_CACHE="${KILN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kiln}"

bash scripts/setup.sh

echo "[demo] cargo build --release -p kiln"
cargo build --release -p kiln
KILN="${CARGO_TARGET_DIR:-$ROOT/target}/release/kiln"

MODEL="$KILN_CACHE/models/vit_s_focus.onnx"
OUT_DIR="$KILN_CACHE/out"
BUNDLE="$OUT_DIR/vit_s_focus.kiln"
INPUT="$KILN_CACHE/data/vit_input.safetensors"
RESULT="$OUT_DIR/vit_s_focus_output.safetensors"
REFERENCE="$KILN_CACHE/data/vit_ort_output.safetensors"
mkdir -p "$OUT_DIR"

echo "[demo] kiln optimize $MODEL --target cpu -o $BUNDLE"
"$KILN" optimize "$MODEL" --target cpu -o "$BUNDLE"
echo "[demo] kiln inspect $BUNDLE"
"$KILN" inspect "$BUNDLE"
echo "[demo] kiln run $BUNDLE --input $INPUT --output $RESULT"
"$KILN" run "$BUNDLE" --input "$INPUT" --output "$RESULT"

# Compare with onnxruntime's output on the same input tensor (scripts/vit_reference.py).
"$KILN_CACHE/venv/bin/python" - "$RESULT" "$REFERENCE" <<'PY'
import sys
import numpy as np
from safetensors.numpy import load_file
got, ref = load_file(sys.argv[1]), load_file(sys.argv[2])
ok = True
for name, r in ref.items():
    if name not in got:
        print(f"[demo] output {name!r} missing from kiln's result (has {sorted(got)})"); ok = False; continue
    g = got[name]
    if g.shape != r.shape:
        print(f"[demo] output {name!r}: shape {g.shape}, onnxruntime {r.shape}"); ok = False; continue
    d = np.abs(g.astype(np.float64) - r.astype(np.float64))
    close = np.allclose(g, r, rtol=1e-3, atol=1e-4)
    print(f"[demo] output {name!r} {list(g.shape)}: max |kiln - onnxruntime| = {d.max():.3g}, mean {d.mean():.3g} -> {'OK' if close else 'MISMATCH'}")
    ok &= bool(close)
sys.exit(0 if ok else 1)
PY

LM="$KILN_CACHE/models/SmolLM2-135M-Instruct.Q4_1.gguf"
LM_BUNDLE="$OUT_DIR/smollm2-135m.kiln"
echo "[demo] kiln optimize $LM --target cpu -o $LM_BUNDLE"
"$KILN" optimize "$LM" --target cpu -o "$LM_BUNDLE"
echo "[demo] kiln eval perplexity $LM_BUNDLE --text moby_dick.txt --ctx 512 --chunks 4"
"$KILN" eval perplexity "$LM_BUNDLE" --text "$KILN_CACHE/data/moby_dick.txt" --ctx 512 --chunks 4

size="$(du -h "$BUNDLE" | cut -f1)"
lm_size="$(du -h "$LM_BUNDLE" | cut -f1)"
echo "[demo] produced $BUNDLE ($size, target cpu), $RESULT and $LM_BUNDLE ($lm_size, target cpu)"
