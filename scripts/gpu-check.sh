#!/usr/bin/env bash
# The GPU check (tests/src/bin/gpu_check.rs): adapter, f32 and w4 matrix
# product throughput against the card's peak, MiniLM and SmolLM2 latency.
#
#   bash scripts/gpu-check.sh prepare        # here, with the models in the cache:
#                                            # builds gpu-check into .gpucheck/ with the
#                                            # models' graphs and the Vulkan loader package
#   bash scripts/gpu-check.sh run [OUTDIR]   # on the GPU machine, from the repository root
#                                            # (carry .gpucheck); writes OUTDIR/gpu-check.txt
#   bash scripts/gpu-check.sh local          # both, on this machine's adapter, quick sizes
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
dir=.gpucheck

prepare() {
    cargo build --release -p kiln-tests --bin gpu-check
    mkdir -p "$dir/debs"
    cp target/release/gpu-check "$dir/"
    "$dir/gpu-check" prepare "$dir"
    # A bare GPU machine may lack the Vulkan loader; its package travels along.
    if [ -z "$(ls "$dir"/debs/*.deb 2>/dev/null)" ]; then
        mkdir -p /tmp/kiln-apt/partial
        o="-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/kiln-apt"
        # shellcheck disable=SC2086
        apt-get $o update -qq && (cd "$dir/debs" && apt-get $o download libvulkan1) \
            || echo "could not download libvulkan1; the GPU machine must have a Vulkan loader"
    fi
    du -sh "$dir"
}

run_check() {
    local out="${1:-.}"
    shift || true
    if ! ldconfig -p | grep -q 'libvulkan.so.1'; then
        for f in "$dir"/debs/*.deb; do dpkg -x "$f" /; done
        ldconfig
    fi
    local icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
    [ -f "$icd" ] && export VK_DRIVER_FILES="$icd"
    "$dir/gpu-check" run --graphs "$dir" --out "$out/gpu-check.txt" "$@"
}

case "${1:-}" in
    prepare) prepare ;;
    run) run_check "${2:-.}" ;;
    local) prepare && run_check . --quick ;;
    *) echo "usage: $0 prepare | run [OUTDIR] | local" >&2; exit 2 ;;
esac
