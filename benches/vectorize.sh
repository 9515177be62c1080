#!/usr/bin/env bash
# pgshift vectorize under an application's inserts, in one run (issue 23), PG16, 2 cores:
#   1. the embedder alone on texts like the application's (examples/embed_rate): A texts/s;
#   2. inserts at twice A for BENCH_SECONDS (default 20) with vectorize running: the rows
#      it embeds per second while the backlog grows, against A;
#   3. inserts at half of A: its lag (pgshift_vectorize_lag_seconds) sampled every 0.5 s, p95;
#   4. the application's insert rate (pgbench, 2 clients, as fast as it goes) without
#      vectorize, with its trigger and index but vectorize stopped, and with it running.
set -euo pipefail

SECONDS_LOAD="${BENCH_SECONDS:-20}"
WORK="${BENCH_DIR:-/tmp/pgshift-bench-vectorize}"
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cargo build --release --locked --example embed_rate >/dev/null 2>&1 || cargo build --release --locked --example embed_rate
start_clusters
DB="postgresql://postgres@127.0.0.1:$TPORT/bench"
PGBENCH="$PG16/pgbench"
psql_at $TPORT postgres -c "CREATE DATABASE bench"
psql_at $TPORT bench -c "CREATE EXTENSION vector; CREATE TABLE docs (id bigserial PRIMARY KEY, body text, embedding vector(384))"
TEXT="'Ship ' || (random() * 1e9)::bigint || ' reached harbour ' || (random() * 1000)::int || ' with grain, timber and letters for the winter'"
echo "INSERT INTO docs (body) VALUES ($TEXT);" >"$WORK/insert.sql"
pgbench_at() { PGPASSWORD=bench "$PGBENCH" -h 127.0.0.1 -p $TPORT -U postgres -n -f "$WORK/insert.sql" "$@" bench 2>&1; }
metric() { curl -s "http://127.0.0.1:59187/metrics" | awk -v m="$1" 'index($1, m) == 1 { s += $2 } END { print s + 0 }'; }

echo "1/4 the embedder alone" >&2
psql_at $TPORT bench -At -c "SELECT $TEXT FROM generate_series(1, 3000)" >"$WORK/texts.txt"
ALONE=$("$ROOT/target/release/examples/embed_rate" vectorize 32 2 <"$WORK/texts.txt" | awk '{print $NF}')

echo "4/4 (first) inserts without vectorize" >&2
WITHOUT=$(pgbench_at -c 2 -j 2 -T 10 | awk '/^tps/ {print $3}')
psql_at $TPORT bench -c "TRUNCATE docs"

"$PGSHIFT" vectorize --target "$DB" --embed 'docs.embedding=body' --metrics-addr 127.0.0.1:59187 2>"$WORK/vectorize.log" &
VEC=$!
trap 'kill $VEC 2>/dev/null || true; cleanup' EXIT
until curl -s "http://127.0.0.1:59187/metrics" | grep -q '^pgshift_vectorize_backlog_rows'; do sleep 0.2; done

RATE=$(python3 -c "print(int($ALONE * 2))")
# The same inserts take CPU from any embedder on these 2 cores: the embedder alone
# again while they run, so vectorize's own cost shows apart from theirs.
pgbench_at -R "$RATE" -T 30 >/dev/null &
LOAD=$!
sleep 1
ALONE_LOADED=$("$ROOT/target/release/examples/embed_rate" vectorize 32 2 <"$WORK/texts.txt" | awk '{print $NF}')
kill $LOAD 2>/dev/null || true; wait $LOAD 2>/dev/null || true
psql_at $TPORT bench -c "TRUNCATE docs"

echo "2/4 inserts at twice the embedder's rate for ${SECONDS_LOAD}s" >&2
pgbench_at -R "$RATE" -T "$SECONDS_LOAD" >/dev/null &
LOAD=$!
sleep 5
R0=$(metric pgshift_vectorize_rows_total); T0=$(now)
sleep $((SECONDS_LOAD - 8))
R1=$(metric pgshift_vectorize_rows_total); T1=$(now)
wait $LOAD
SUSTAINED=$(python3 -c "print(f'{($R1 - $R0) / ($T1 - $T0):.1f}')")
until [ "$(metric pgshift_vectorize_backlog_rows)" = "0" ]; do sleep 0.5; done

echo "3/4 inserts at half the embedder's rate for $((SECONDS_LOAD + 10))s" >&2
HALF=$(python3 -c "print(max(1, int($ALONE / 2)))")
pgbench_at -R "$HALF" -T $((SECONDS_LOAD + 10)) >/dev/null &
LOAD=$!
sleep 3
: >"$WORK/lag.txt"
while kill -0 $LOAD 2>/dev/null; do metric pgshift_vectorize_lag_seconds >>"$WORK/lag.txt"; sleep 0.5; done
P95=$(python3 -c "
v = sorted(float(x) for x in open('$WORK/lag.txt') if x.strip())
print(f'{v[int(len(v) * 0.95) - 1]:.2f}s p95, {v[-1]:.2f}s max, {len(v)} samples')")

echo "4/4 inserts with vectorize running, then with it stopped (its trigger and index stay)" >&2
WITH=$(pgbench_at -c 2 -j 2 -T 10 | awk '/^tps/ {print $3}')
kill $VEC; wait $VEC 2>/dev/null || true
IDLE=$(pgbench_at -c 2 -j 2 -T 10 | awk '/^tps/ {print $3}')

echo
echo "pgshift vectorize, PG16, 2 cores (short texts, ~20 words)"
echo "  embedder alone:                             $ALONE texts/s"
echo "  embedder alone under inserts at ${RATE}/s:    $ALONE_LOADED texts/s"
echo "  vectorize under inserts at ${RATE}/s:          $SUSTAINED rows/s = $(ratio "$SUSTAINED" "$ALONE") of the embedder alone, $(ratio "$SUSTAINED" "$ALONE_LOADED") of it under the same inserts"
echo "  lag under inserts at ${HALF}/s:                $P95"
echo "  application inserts without vectorize:      $WITHOUT tps"
echo "  ... with its trigger and index, stopped:    $IDLE tps = $(ratio "$IDLE" "$WITHOUT")"
echo "  ... with vectorize running (same 2 cores):  $WITH tps = $(ratio "$WITH" "$WITHOUT")"
