#!/usr/bin/env bash
# Side-by-side bulk load on the same two clusters, in one run:
#   1. psql COPY (FORMAT binary) | psql COPY FROM (the raw single-stream baseline)
#   2. pgcopydb clone --table-jobs 2 --index-jobs 2 --split-tables-larger-than ...
#   3. pgshift migrate --jobs 2
# Source: Debian PostgreSQL 15; target: PostgreSQL 16 from the wheel. Prints seconds
# and ratios against the baseline measured in this same run, and pgshift's peak RSS.
# BENCH_ROWS (default 2000000, ~1.7 GB) sizes the documents table. PGSHIFT_BASELINE=BIN
# also times another pgshift build (e.g. the last release) in the same run.
set -euo pipefail

ROWS="${BENCH_ROWS:-2000000}"
WORK="${BENCH_DIR:-/tmp/pgshift-bench}"
EXTRA_CONF="fsync = off"
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
start_clusters

SRC="postgresql://postgres@127.0.0.1:$SPORT/bench"
DST="postgresql://postgres@127.0.0.1:$TPORT/bench"
psql_at $SPORT postgres -c "CREATE DATABASE bench"
echo "generating $ROWS rows on the source..." >&2
psql_at $SPORT bench -c "
CREATE TABLE documents (id bigint PRIMARY KEY, ident uuid NOT NULL, body text NOT NULL, meta jsonb NOT NULL, created_at timestamptz NOT NULL);
INSERT INTO documents SELECT i, md5(i::text)::uuid,
  repeat(md5(i::text) || md5((i + 1)::text), 11) || ' doc ' || i,
  jsonb_build_object('n', i, 'tag', 't' || i % 100, 'flags', jsonb_build_array(i % 2 = 0, i % 3 = 0)),
  '2020-01-01'::timestamptz + i * interval '1 second'
FROM generate_series(1, $ROWS) i;
CREATE INDEX documents_created_idx ON documents (created_at);
"
psql_at $SPORT bench -c "VACUUM ANALYZE documents"
SIZE=$(psql_at $SPORT bench -At -c "SELECT pg_size_pretty(pg_table_size('documents'))")

fresh_target() {
  psql_at $TPORT postgres -c "DROP DATABASE IF EXISTS bench WITH (FORCE)" -c "CREATE DATABASE bench"
  psql_at $SPORT bench -At -c "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots" >/dev/null
}

echo "1/3 raw psql binary pipe" >&2
fresh_target
psql_at $TPORT bench -c "CREATE TABLE documents (id bigint, ident uuid, body text, meta jsonb, created_at timestamptz)"
t0=$(now)
psql_at $SPORT bench -c "COPY documents TO STDOUT (FORMAT binary)" | psql_at $TPORT bench -c "COPY documents FROM STDIN (FORMAT binary)"
t1=$(now); RAW=$(echo "$t1 - $t0" | bc)

echo "2/3 pgcopydb clone" >&2
fresh_target
rm -rf "$WORK/pgcopydb"
t0=$(now)
pgcopydb clone --source "$SRC" --target "$DST" --dir "$WORK/pgcopydb" --table-jobs 2 --index-jobs 2 \
  --split-tables-larger-than 400MB --no-owner --no-acl --skip-extensions >"$WORK/pgcopydb.log" 2>&1 \
  || { tail -20 "$WORK/pgcopydb.log" >&2; echo "pgcopydb failed" >&2; }
t1=$(now); PGCOPYDB=$(echo "$t1 - $t0" | bc)

echo "3/3 pgshift migrate" >&2
fresh_target
t0=$(now)
/usr/bin/time -v -o "$WORK/rss" "$PGSHIFT" migrate --source "$SRC" --target "$DST" --jobs 2 --no-follow --quiet --json >"$WORK/pgshift.json"
t1=$(now); PGSHIFT_TOTAL=$(echo "$t1 - $t0" | bc)
PGSHIFT_COPY=$(python3 -c "import json;print(round(json.load(open('$WORK/pgshift.json'))['copy_seconds'],2))")
RSS_KB=$(awk -F: '/Maximum resident/ {gsub(/ /,"",$2); print $2}' "$WORK/rss")
"$PGSHIFT" verify --source "$SRC" --target "$DST" --quiet >/dev/null && VERIFY=ok || VERIFY=FAILED

cat <<REPORT

documents: $ROWS rows, $SIZE on the source (PG15 -> PG16, 2 cores)
  raw psql binary pipe (copy only, no index)  ${RAW}s
  pgcopydb clone (copy + indexes)             ${PGCOPYDB}s
  pgshift migrate (copy + indexes)            ${PGSHIFT_TOTAL}s   (copy phase ${PGSHIFT_COPY}s)
  pgshift copy phase vs raw pipe:             $(ratio "$RAW" "$PGSHIFT_COPY") as fast
  pgshift end to end vs pgcopydb:             $(ratio "$PGCOPYDB" "$PGSHIFT_TOTAL") as fast
  pgshift peak RSS:                           $((RSS_KB / 1024)) MiB
  verify after pgshift:                       $VERIFY
REPORT

# Another pgshift build in the same run (PGSHIFT_BASELINE=BIN), e.g. before a change.
if [ -n "${PGSHIFT_BASELINE:-}" ]; then
  echo "4/4 baseline pgshift ($PGSHIFT_BASELINE)" >&2
  fresh_target
  t0=$(now)
  # Builds before 2026-12 read no PGPASSWORD: the password goes into the URL for them.
  "$PGSHIFT_BASELINE" migrate --source "${SRC/postgres@/postgres:$PGPASSWORD@}" --target "${DST/postgres@/postgres:$PGPASSWORD@}" \
    --jobs 2 --no-follow --quiet --json >"$WORK/baseline.json" 2>/dev/null
  t1=$(now); BASE_TOTAL=$(echo "$t1 - $t0" | bc)
  BASE_COPY=$(python3 -c "import json;print(round(json.load(open('$WORK/baseline.json'))['copy_seconds'],2))")
  cat <<REPORT
  baseline pgshift (copy + indexes)           ${BASE_TOTAL}s   (copy phase ${BASE_COPY}s)
  this pgshift vs baseline, end to end:       $(ratio "$BASE_TOTAL" "$PGSHIFT_TOTAL") as fast (copy phase $(ratio "$BASE_COPY" "$PGSHIFT_COPY"))
REPORT
fi
