#!/usr/bin/env bash
# One large source transaction, from its commit to its visibility on the target, with
# pgshift follow receiving it after its commit (protocol 1, --no-streaming) and while
# it runs (protocol 2, spooled to disk until the commit), in one run on the same
# clusters. Each round has its own run and slot, and only its own follower runs.
# BENCH_ROWS (default 4000000) rows inserted by one transaction.
set -euo pipefail

ROWS="${BENCH_ROWS:-4000000}"
WORK="${BENCH_DIR:-/tmp/pgshift-bench-large-txn}"
EXTRA_CONF="autovacuum = off"
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
start_clusters

SRC="postgresql://postgres@127.0.0.1:$SPORT/bench"
psql_at $SPORT postgres -c "CREATE DATABASE bench"
psql_at $SPORT bench -c "CREATE TABLE t (id bigint PRIMARY KEY, v int, note text)"

round() { # name, first id, follow flags...
  local name=$1 first=$2; shift 2
  local dst="postgresql://postgres@127.0.0.1:$TPORT/$name"
  psql_at $TPORT postgres -c "CREATE DATABASE $name"
  "$PGSHIFT" migrate --source "$SRC" --target "$dst" --load-only --quiet >/dev/null
  "$PGSHIFT" follow --source "$SRC" --target "$dst" --quiet "$@" >"$WORK/$name.out" 2>&1 &
  local follower=$! last=$((first + ROWS - 1))
  sleep 2
  local t0 t1 t2
  t0=$(now)
  psql_at $SPORT bench -c "INSERT INTO t SELECT i, i % 1000, 'row ' || i FROM generate_series($first, $last) i"
  t1=$(now)
  until [ "$(psql_at $TPORT "$name" -At -c "SELECT count(*) FROM t WHERE id = $last")" = 1 ]; do sleep 0.1; done
  t2=$(now)
  eval "RSS_$name='$(awk '/VmHWM/ {printf "%.0f MiB", $2 / 1024}' /proc/$follower/status)'"
  kill -TERM $follower; wait $follower || true
  # This round's slot would hold WAL and decode for nothing in the next one.
  psql_at $SPORT bench -c "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE NOT active" >/dev/null
  eval "TXN_$name=$(echo "$t1 - $t0" | bc)"
  eval "VISIBLE_$name=$(echo "$t2 - $t1" | bc)"
}

echo "round 1: protocol 1 (the transaction is sent after its commit)" >&2
round v1 1 --no-streaming
echo "round 2: protocol 2 (sent while it runs, spooled until its commit)" >&2
round v2 $((ROWS + 1))

cat <<REPORT

one transaction of $ROWS inserts, PG15 -> PG16, 2 cores
                                     source transaction   commit -> visible on the target   follower peak RSS
  protocol 1 (--no-streaming)        ${TXN_v1}s        ${VISIBLE_v1}s        ${RSS_v1}
  protocol 2 (streamed, spooled)     ${TXN_v2}s        ${VISIBLE_v2}s        ${RSS_v2}
  commit -> visible, protocol 2 vs 1: $(ratio "$VISIBLE_v1" "$VISIBLE_v2") as fast
REPORT
