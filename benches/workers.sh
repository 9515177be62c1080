#!/usr/bin/env bash
# Past one process, each side measured in this same run on this machine:
#   1. Copy: `migrate --jobs 3` alone vs `migrate --jobs 0` with three `pgshift worker
#      --jobs 1` processes (same table, same split; target emptied between runs).
#      Target: workers >= 0.9x of one migrate (claiming from the queue costs nothing).
#   2. Embedding fleet: the embedded load with one infinity endpoint vs two (each
#      server on one core), against the servers' own rate measured alone.
# ROWS, EMBED_ROWS size the runs; PARTS="1 2" picks parts.
set -euo pipefail

ROWS="${ROWS:-5000000}"; EMBED_ROWS="${EMBED_ROWS:-6000}"
WORK="${BENCH_DIR:-/tmp/pgshift-bench-workers}"
PARTS="${PARTS:-1 2}"
part() { [[ " $PARTS " == *" $1 "* ]]; }
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cargo build --release --locked --bin pgshift >/dev/null 2>&1 || cargo build --release --locked --bin pgshift
start_clusters
SRC="postgresql://postgres@127.0.0.1:$SPORT/bench"
DST="postgresql://postgres@127.0.0.1:$TPORT/bench"
psql_at $SPORT postgres -c "CREATE DATABASE bench"
fresh_target() { psql_at $TPORT postgres -c "DROP DATABASE IF EXISTS bench" -c "CREATE DATABASE bench" >/dev/null; }

if part 1; then
  psql_at $SPORT bench -c "CREATE TABLE events (id bigint PRIMARY KEY, account int, body text, at timestamptz DEFAULT now());
    INSERT INTO events SELECT i, i % 9973, repeat(md5(i::text), 3) FROM generate_series(1, $ROWS) i" >/dev/null
  # Hint bits and the visibility map set now, not by whichever run reads first.
  psql_at $SPORT bench -c "VACUUM ANALYZE events" >/dev/null
  one_process() {
    fresh_target
    t0=$(now); "$PGSHIFT" migrate --source "$SRC" --target "$DST" --jobs 3 --split-rows 100000 --no-follow --quiet >/dev/null; t1=$(now)
    python3 -c "print(f'{$t1 - $t0:.2f}')"
  }
  three_workers() {
    fresh_target
    t0=$(now)
    "$PGSHIFT" migrate --source "$SRC" --target "$DST" --jobs 0 --split-rows 100000 --no-follow --quiet >/dev/null &
    local coord=$!
    for _ in 1 2 3; do "$PGSHIFT" worker --source "$SRC" --target "$DST" --jobs 1 --quiet >/dev/null & done
    wait $coord; t1=$(now); wait
    python3 -c "print(f'{$t1 - $t0:.2f}')"
  }
  # Alternating, best of two each: the machine's noise hits both sides.
  L1=$(one_process); W1=$(three_workers); L2=$(one_process); W2=$(three_workers)
  LOCAL=$(python3 -c "print(min($L1, $L2))"); WORKERS=$(python3 -c "print(min($W1, $W2))")
  "$PGSHIFT" verify --source "$SRC" --target "$DST" --quiet >/dev/null && VERIFY=ok || VERIFY=FAILED
  cat <<REPORT

1. copy of $ROWS rows (split 100k), PG15 -> PG16, 2 cores, same run
  migrate --jobs 3:                          ${LOCAL} s (runs: $L1, $L2)
  migrate --jobs 0 + 3 x worker --jobs 1:    ${WORKERS} s (runs: $W1, $W2)   (speed ratio workers / one process: $(ratio $LOCAL $WORKERS); verify: $VERIFY)
REPORT
fi

if part 2; then
  INF="$ROOT/.cache/infinity-0.0.78"
  [ -x "$INF/venv/bin/infinity_emb" ] || "$ROOT/scripts/fetch_infinity.sh"
  serve() {
    HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 DO_NOT_TRACK=1 INFINITY_ANONYMOUS_USAGE_STATS=0 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 \
      "$INF/venv/bin/infinity_emb" v2 --model-id "$INF/all-MiniLM-L6-v2" --served-model-name all-MiniLM-L6-v2 --engine torch --device cpu \
      --host 127.0.0.1 --port "$1" --url-prefix /v1 --no-model-warmup >"$WORK/infinity-$1.log" 2>&1 &
    echo $!
  }
  A=$(serve 57997); B=$(serve 57998)
  trap 'kill $A $B 2>/dev/null; cleanup' EXIT
  until curl -sf http://127.0.0.1:57997/health >/dev/null && curl -sf http://127.0.0.1:57998/health >/dev/null; do sleep 1; done
  psql_at $SPORT bench -c "DROP TABLE IF EXISTS docs; CREATE TABLE docs (id bigint PRIMARY KEY, body text);
    INSERT INTO docs SELECT i, 'note ' || i || ' is about ' || (ARRAY['cats', 'the sea', 'mountains', 'jazz', 'bread'])[1 + i % 5] || ' and ' || md5(i::text)
    FROM generate_series(1, $EMBED_ROWS) i" >/dev/null
  # The server's own rate: batches of 32 texts, 4 at once, straight at one endpoint.
  ALONE=$(python3 - <<PY
import json, time, urllib.request, concurrent.futures as cf
texts = [f"note {i} is about mountains and {i:032x}" for i in range(1024)]
def post(batch):
    req = urllib.request.Request("http://127.0.0.1:57997/v1/embeddings", json.dumps({"model": "all-MiniLM-L6-v2", "input": batch}).encode(), {"content-type": "application/json"})
    urllib.request.urlopen(req).read()
batches = [texts[i:i + 32] for i in range(0, len(texts), 32)]
t = time.time()
with cf.ThreadPoolExecutor(4) as ex: list(ex.map(post, batches))
print(f"{len(texts) / (time.time() - t):.0f}")
PY
)
  # The load's own report: texts per second of the copy, and each endpoint's busy share.
  load() {
    fresh_target
    spec=$(python3 -c "import json,sys; print(json.dumps({'table': 'docs', 'text': 'body', 'column': 'embedding', 'dims': 384, 'url': sys.argv[1:]}))" "$@")
    "$PGSHIFT" migrate --source "$SRC" --target "$DST" --tables docs --embed "$spec" --no-follow --quiet --json >"$WORK/load.json"
    python3 - "$WORK/load.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
s = r["copy_seconds"]
busy = ", ".join(f"{e['busy_seconds'] / s:.0%}" for e in r["embedding_endpoints"])
print(f"{sum(e['texts'] for e in r['embedding_endpoints']) / s:.0f} {busy}")
PY
  }
  read -r ONE ONE_BUSY < <(load http://127.0.0.1:57997/v1/embeddings)
  read -r TWO TWO_BUSY < <(load http://127.0.0.1:57997/v1/embeddings http://127.0.0.1:57998/v1/embeddings)
  cat <<REPORT

2. embedded load of $EMBED_ROWS short texts through infinity (one core per server), copy phase, same run
  one server alone (32 per request, 4 at once):  ${ALONE} texts/s
  load with one endpoint:                        ${ONE} texts/s   ($(ratio $ONE $ALONE) of the server's own rate; endpoint busy ${ONE_BUSY} of the copy)
  load with two endpoints:                       ${TWO} texts/s   ($(ratio $TWO $ONE) of one endpoint; endpoints busy ${TWO_BUSY} of the copy)
REPORT
fi
