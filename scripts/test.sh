#!/usr/bin/env bash
# Set up the machine (scripts/setup.sh) and run the whole test suite in the
# release profile (the model and conformance tests are slow unoptimised).
# Extra arguments go to `cargo test`, e.g. `bash scripts/test.sh -p kiln-ir`.
# Ends with one line: "tests: N passed, N failed, N skipped"; exits non-zero on any failure.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export KILN_CACHE="${KILN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kiln}"

bash scripts/setup.sh --references

if [ -n "${CI:-}" ]; then
    export CARGO_INCREMENTAL=0 CARGO_TERM_COLOR=never
fi

log="$(mktemp "${TMPDIR:-/tmp}/kiln-test.XXXXXX")"
trap 'rm -f "$log"' EXIT
start=$SECONDS
set +e
cargo test --workspace --release --no-fail-fast "$@" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
set -e

# Add up cargo's per-binary lines: "test result: ok. 12 passed; 0 failed; 1 ignored; ..."
read -r passed failed ignored binaries < <(awk '
    /^test result: / {
        for (i = 1; i <= NF; i++) {
            v = $i; gsub(/[;.]/, "", v)
            if ($(i+1) ~ /^passed/)  p += v
            if ($(i+1) ~ /^failed/)  f += v
            if ($(i+1) ~ /^ignored/) s += v
        }
        b++
    }
    END { printf "%d %d %d %d\n", p, f, s, b }' "$log")

echo "cargo test: exit status $rc, $binaries test binaries, $((SECONDS - start))s"
if [ "$rc" -ne 0 ] && [ "$failed" -eq 0 ]; then
    echo "tests: cargo test failed before all tests ran (build error or crashed test binary), exit status $rc"
    exit "$rc"
fi
echo "tests: $passed passed, $failed failed, $ignored skipped"
exit "$rc"
