#!/usr/bin/env bash
# Cutover write pause under load: pgbench (scale BENCH_SCALE, ~BENCH_TPS transactions
# per second) writes to the source during the load, catch-up and the cutover. Prints
# the pause pgshift cutover reports and pgbench's latency/failures around it.
set -euo pipefail

SCALE="${BENCH_SCALE:-10}"
TPS="${BENCH_TPS:-500}"
WORK="${BENCH_DIR:-/tmp/pgshift-bench-cutover}"
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
start_clusters

SRC="postgresql://postgres@127.0.0.1:$SPORT/bench"
DST="postgresql://postgres@127.0.0.1:$TPORT/bench"
psql_at $SPORT postgres -c "CREATE DATABASE bench"
psql_at $TPORT postgres -c "CREATE DATABASE bench"
"$PG16/pgbench" -h 127.0.0.1 -p $SPORT -U postgres -i -s "$SCALE" -q bench >/dev/null 2>&1
psql_at $SPORT bench -c "ALTER TABLE pgbench_history REPLICA IDENTITY FULL"

"$PG16/pgbench" -h 127.0.0.1 -p $SPORT -U postgres -n -c 4 -j 2 -T 90 -R "$TPS" -P 5 bench >"$WORK/pgbench.log" 2>&1 &
BENCH=$!
"$PGSHIFT" migrate --source "$SRC" --target "$DST" --jobs 2 --quiet >"$WORK/migrate.log" 2>&1 &
MIGRATE=$!
until [ "$(psql_at $SPORT bench -At -c "SELECT count(*) FROM pg_replication_slots WHERE active")" = 1 ] \
   && [ "$(psql_at $TPORT bench -At -c "SELECT count(*) FROM pgshift.runs WHERE phase = 'loaded'" 2>/dev/null)" = 1 ]; do sleep 0.5; done
sleep 10
"$PGSHIFT" cutover --source "$SRC" --target "$DST" --json >"$WORK/cutover.json"
wait $MIGRATE || true
kill $BENCH 2>/dev/null || true; wait $BENCH 2>/dev/null || true
"$PGSHIFT" verify --source "$SRC" --target "$DST" --quiet >/dev/null && VERIFY=ok || VERIFY=FAILED
PAUSE=$(python3 -c "import json;print(round(json.load(open('$WORK/cutover.json'))['write_pause_ms']))")
STEPS=$(python3 -c "import json;print(', '.join(f'{k[:-3]} {round(v)}' for k, v in json.load(open('$WORK/cutover.json'))['pause_steps'].items()))")

cat <<REPORT

cutover under pgbench (scale $SCALE, -R $TPS, 4 clients), PG15 -> PG16, 2 cores
  write pause reported by pgshift cutover:  ${PAUSE} ms (ms per step: ${STEPS})
  verify after cutover:                     $VERIFY
  pgbench progress around the cutover:
$(grep -E "^progress" "$WORK/pgbench.log" | tail -6 | sed 's/^/    /')
REPORT
