#!/usr/bin/env bash
# Catch-up apply, side by side on the same clusters in one run: a backlog of row
# changes (pgbench's mix: 3 updates + 1 insert per transaction) waits in two logical
# slots; then
#   1. a native subscriber (CREATE SUBSCRIPTION ... binary = true, copy_data = false)
#   2. pgshift follow
# and, for reference, pg_recvlogical reading the same stream into /dev/null (what the
# source's decoding alone costs).
# each apply it into their own copy of the data on the target. Time = from starting
# the apply until the backlog's last transaction is visible on the target.
# BENCH_CHANGES (default 1000000) row changes; BENCH_SCALE (default 10) pgbench scale.
# BENCH_MIX=random: each transaction updates 3 random accounts + 1 insert (no hot rows,
# so nothing folds in the net effect) instead of pgbench's account/teller/branch mix.
set -euo pipefail

CHANGES="${BENCH_CHANGES:-1000000}"
MIX="${BENCH_MIX:-pgbench}"
SCALE="${BENCH_SCALE:-10}"
WORK="${BENCH_DIR:-/tmp/pgshift-bench-catchup}"
# Autovacuum after one apply would run during the other: keep the runs independent.
EXTRA_CONF="autovacuum = off"
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
start_clusters

SRC="postgresql://postgres@127.0.0.1:$SPORT/bench"
psql_at $SPORT postgres -c "CREATE DATABASE bench"
"$PG16/pgbench" -h 127.0.0.1 -p $SPORT -U postgres -i -s "$SCALE" -q bench >/dev/null 2>&1
psql_at $SPORT bench -c "ALTER TABLE pgbench_history ADD COLUMN id bigserial PRIMARY KEY"
for db in shift native; do
  psql_at $TPORT postgres -c "CREATE DATABASE $db"
done

echo "load: pgshift into 'shift' (slot kept), plain copy into 'native'" >&2
"$PGSHIFT" migrate --source "$SRC" --target "postgresql://postgres@127.0.0.1:$TPORT/shift" --jobs 2 --load-only --quiet >/dev/null
"$PGSHIFT" migrate --source "$SRC" --target "postgresql://postgres@127.0.0.1:$TPORT/native" --jobs 2 --no-follow --quiet >/dev/null
psql_at $SPORT bench -c "CREATE PUBLICATION native FOR TABLE pgbench_accounts, pgbench_branches, pgbench_tellers, pgbench_history" \
  -c "SELECT pg_create_logical_replication_slot('native', 'pgoutput')" -c "SELECT pg_create_logical_replication_slot('probe', 'pgoutput')" >/dev/null
psql_at $TPORT native -c "CREATE SUBSCRIPTION native CONNECTION 'host=127.0.0.1 port=$SPORT user=postgres password=bench dbname=bench' \
  PUBLICATION native WITH (create_slot = false, slot_name = 'native', copy_data = false, binary = true, enabled = false)"

TXNS=$((CHANGES / 4))
echo "backlog: $TXNS transactions, $CHANGES row changes" >&2
t0=$(now)
psql_at $SPORT bench -c "
DO \$\$
DECLARE a int; b int; c int; d int;
BEGIN
  FOR i IN 1..$TXNS LOOP
    a := 1 + (random() * ($SCALE * 100000 - 1))::int; d := (random() * 10000)::int - 5000;
    UPDATE pgbench_accounts SET abalance = abalance + d WHERE aid = a;
    IF '$MIX' = 'random' THEN
      -- Keys drawn first: random() in a WHERE clause would be drawn per row (a full scan).
      b := 1 + (random() * ($SCALE * 100000 - 1))::int; c := 1 + (random() * ($SCALE * 100000 - 1))::int;
      UPDATE pgbench_accounts SET abalance = abalance + d WHERE aid = b;
      UPDATE pgbench_accounts SET abalance = abalance - d WHERE aid = c;
    ELSE
      UPDATE pgbench_tellers SET tbalance = tbalance + d WHERE tid = 1 + i % ($SCALE * 10);
      UPDATE pgbench_branches SET bbalance = bbalance + d WHERE bid = 1 + i % $SCALE;
    END IF;
    INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (1 + i % ($SCALE * 10), 1 + i % $SCALE, a, d, now());
    COMMIT;
  END LOOP;
  INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (0, 0, 0, -999999999, now());
END \$\$"
t1=$(now); BACKLOG_SECS=$(echo "$t1 - $t0" | bc)
WAL=$(psql_at $SPORT bench -At -c "SELECT pg_size_pretty(pg_current_wal_lsn() - confirmed_flush_lsn) FROM pg_replication_slots WHERE slot_name = 'native'")

checkpoint() { psql_at $SPORT bench -c CHECKPOINT; psql_at $TPORT postgres -c CHECKPOINT; }

# The backlog's last row, found by its key: one session polling an index every 10 ms
# (a psql per poll, or a scan of pgbench_history, would take CPU from the apply), each
# look in a transaction of its own (one long transaction would keep every dead row
# version alive and slow the apply of hot rows down).
MARKER=$(psql_at $SPORT bench -At -c "SELECT max(id) FROM pgbench_history")
wait_marker() {
  psql_at $TPORT "$1" -c "DO \$\$ BEGIN
    WHILE NOT EXISTS (SELECT FROM pgbench_history WHERE id = $MARKER AND delta = -999999999) LOOP COMMIT; PERFORM pg_sleep(0.01); END LOOP;
  END \$\$"
}

echo "0/2 pg_recvlogical: the walsender's decoding alone, to /dev/null" >&2
END=$(psql_at $SPORT bench -At -c "SELECT pg_current_wal_lsn()")
checkpoint
t0=$(now)
"$PG16/pg_recvlogical" -h 127.0.0.1 -p $SPORT -U postgres -d bench --slot probe --start --endpos "$END" -o proto_version=1 -o publication_names=native -o binary=true -f /dev/null
t1=$(now); RAW=$(echo "$t1 - $t0" | bc)
echo "1/2 native subscription" >&2
checkpoint
t0=$(now)
psql_at $TPORT native -c "ALTER SUBSCRIPTION native ENABLE"
wait_marker native
t1=$(now); NATIVE=$(echo "$t1 - $t0" | bc)
psql_at $TPORT native -c "ALTER SUBSCRIPTION native DISABLE"

echo "2/2 pgshift follow" >&2
checkpoint
t0=$(now)
"$PGSHIFT" follow --source "$SRC" --target "postgresql://postgres@127.0.0.1:$TPORT/shift" --quiet >"$WORK/follow.out" 2>&1 &
FOLLOW=$!
wait_marker shift
t1=$(now); PGSHIFT_SECS=$(echo "$t1 - $t0" | bc)
kill -TERM $FOLLOW; wait $FOLLOW || true

for db in shift native; do
  "$PGSHIFT" verify --source "$SRC" --target "postgresql://postgres@127.0.0.1:$TPORT/$db" --quiet >/dev/null \
    && eval "VERIFY_$db=ok" || eval "VERIFY_$db=FAILED"
done

cat <<REPORT

catch-up of $CHANGES row changes ($MIX mix, $TXNS transactions, $WAL of WAL; built in ${BACKLOG_SECS}s), PG15 -> PG16, 2 cores
  pg_recvlogical to /dev/null (decoding only)      ${RAW}s
  native subscription (binary, copy_data = false)   ${NATIVE}s   verify: $VERIFY_native
  pgshift follow                                    ${PGSHIFT_SECS}s   verify: $VERIFY_shift
  pgshift vs native:                                $(ratio "$NATIVE" "$PGSHIFT_SECS") as fast
  pgshift vs decoding alone:                        $(ratio "$RAW" "$PGSHIFT_SECS")
REPORT
