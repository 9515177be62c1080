#!/usr/bin/env bash
# Embedding benchmarks, each side measured in this same run on this machine:
#   1. pgshift's embedder alone vs Python onnxruntime on the same model.onnx and
#      tokenizer.json: short (~12 words), long (~200 words) and mixed texts (one long
#      in eight), batch 32/64, 1 and 2 threads. Python takes batches in input order
#      (and '+sorted' by length).
#   2. The whole load of an embedded table (pgshift migrate --embed, PG15 -> PG16)
#      against the embedder's standalone rate for the same kind of texts.
#   3. HNSW build of 100k x 384 vectors: pgshift's settings (maintenance_work_mem
#      sized to the graph, parallel workers) vs PostgreSQL/pgvector defaults.
# SHORT_N, LONG_N, EMBED_ROWS, HNSW_ROWS size the runs; PARTS="1 2 3" picks parts.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SHORT_N="${SHORT_N:-512}"; LONG_N="${LONG_N:-64}"; MIXED_N="${MIXED_N:-256}"; EMBED_ROWS="${EMBED_ROWS:-3000}"; HNSW_ROWS="${HNSW_ROWS:-100000}"
WORK="${BENCH_DIR:-/tmp/pgshift-bench-embed}"
source "$ROOT/benches/lib.sh"
VENV="$ROOT/.cache/benchenv"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet "$ROOT"/.cache/embed/wheels/onnxruntime-1.31.1-*.whl tokenizers==0.22.1 numpy==2.3.5
fi
cargo build --release --locked --example embed_rate --bin pgshift >/dev/null 2>&1 || cargo build --release --locked --example embed_rate --bin pgshift
RATE="$ROOT/target/release/examples/embed_rate"

PARTS="${PARTS:-1 2 3}"
part() { [[ " $PARTS " == *" $1 "* ]]; }
declare -A STANDALONE
if part 1 || part 2; then
echo "== 1. embedder alone (texts/s; ratio = pgshift / python in input order)"
printf '%-6s %5s %7s %10s %10s %15s %7s\n' kind batch threads pgshift python python+sorted ratio
for kind in short long mixed; do
  if ! part 1 && [ $kind != short ]; then continue; fi
  case $kind in short) n=$SHORT_N ;; long) n=$LONG_N ;; *) n=$MIXED_N ;; esac
  for batch in 32 64; do
    for threads in 1 2; do
      rust=$(python3 "$ROOT/benches/embed_texts.py" $kind $n | "$RATE" $kind $batch $threads | awk '{print $5}')
      py=$("$VENV/bin/python" "$ROOT/benches/embed_python.py" "$PGSHIFT_MODEL_DIR" $kind $n $batch $threads)
      plain=$(echo "$py" | awk '$1 == "python" {print $5}'); sorted=$(echo "$py" | awk '$1 == "python+sorted" {print $5}')
      STANDALONE[$kind-$batch-$threads]=$rust
      printf '%-6s %5s %7s %10s %10s %15s %6.2fx\n' $kind $batch $threads "$rust" "$plain" "$sorted" "$(python3 -c "print($rust / $plain)")"
    done
  done
done

fi
start_clusters
psql_at $SPORT postgres -c "CREATE DATABASE bench"
psql_at $TPORT postgres -c "CREATE DATABASE bench"
if part 2; then
echo "== 2. whole load of an embedded table ($EMBED_ROWS rows of short text)"
python3 "$ROOT/benches/embed_texts.py" short "$EMBED_ROWS" | awk '{gsub(/\t/, " "); print NR "\t" $0}' \
  | psql_at $SPORT bench -c "CREATE TABLE notes (id bigint PRIMARY KEY, body text NOT NULL)" -c "\copy notes FROM STDIN"
SRC="postgresql://postgres@127.0.0.1:$SPORT/bench"; DST="postgresql://postgres@127.0.0.1:$TPORT/bench"
report=$("$ROOT/target/release/pgshift" migrate --source "$SRC" --target "$DST" --no-follow --jobs 2 --split-rows 1000 \
  --embed "notes.embedding=body" --embed-batch 32 --json --quiet)
copy=$(echo "$report" | python3 -c "import json,sys; print(json.load(sys.stdin)['copy_seconds'])")
load_rate=$(python3 -c "print($EMBED_ROWS / $copy)")
alone=${STANDALONE[short-32-2]}
printf 'load %.1f rows/s (copy phase %.2fs); embedder alone %.1f texts/s; ratio %.2fx\n' "$load_rate" "$copy" "$alone" "$(python3 -c "print($load_rate / $alone)")"

fi
if part 3; then
echo "== 3. HNSW build, $HNSW_ROWS x 384"
psql_at $TPORT bench -c "CREATE EXTENSION IF NOT EXISTS vector" >/dev/null
psql_at $TPORT bench -c "CREATE TABLE vecs AS SELECT i AS id, (SELECT array_agg(random() - 0.5)::vector(384) FROM generate_series(1, 384) WHERE i > 0) AS v FROM generate_series(1, $HNSW_ROWS) i" >/dev/null
MEM=$(python3 -c "r=$HNSW_ROWS; print(-(-(r * (384 * 4 + 32 * 8 + 96) * 5 // 4) // (1024 * 1024)))")
build() { # settings
  psql_at $TPORT bench -c "DROP INDEX IF EXISTS vecs_v_idx" >/dev/null
  local t0; t0=$(now)
  psql_at $TPORT bench -c "$1 CREATE INDEX vecs_v_idx ON vecs USING hnsw (v vector_cosine_ops)" >/dev/null
  python3 -c "print(f'{$(now) - $t0:.2f}')"
}
defaults=$(build "SET maintenance_work_mem = '64MB'; RESET max_parallel_maintenance_workers;")
pgshift=$(build "SET maintenance_work_mem = '${MEM}MB'; SET max_parallel_maintenance_workers = 2;")
printf 'defaults (64MB, default workers) %ss; pgshift (%sMB, 2 workers) %ss; speed-up %s\n' "$defaults" "$MEM" "$pgshift" "$(ratio "$defaults" "$pgshift")"
fi
