#!/usr/bin/env bash
# Runs the whole suite and ends with one total line ("N passed, N failed"), since
# cargo prints a result line per test binary, the last of which is often doc-tests.
set -uo pipefail
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
# The GPU build must keep compiling even where no GPU runs it.
if ! cargo check --locked --features cuda 2>&1 | tee "$log"; then
  echo "the --features cuda build does not compile"
  exit 1
fi
cargo test --workspace --locked "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i) ~ /^passed;?$/) p += $(i-1); if ($(i) ~ /^failed;?$/) f += $(i-1) } }
     END { printf "%d passed, %d failed\n", p, f }' "$log"
exit "$status"
