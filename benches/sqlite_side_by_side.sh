#!/usr/bin/env bash
# SQLite -> PostgreSQL side by side, one run, one target cluster (PG16 wheel):
#   1. sqlite3 -csv | psql COPY FROM (CSV), both tables at once, into tables made
#      beforehand: the raw baseline (PostgreSQL parses and converts the text; no
#      keys, indexes or checks)
#   2. pgloader (Debian's, defaults: it creates tables, indexes, keys)
#   3. pgshift migrate --jobs 2 (creates tables, indexes, keys)
# The database: users (BENCH_USERS, default 100000) and messages (BENCH_ROWS,
# default 1000000) with ISO timestamps, 0/1 booleans, JSON text, a REAL, a foreign
# key and an index. Prints seconds, ratios against this run's baseline, and
# pgshift's peak RSS; pgshift verify checks its result.
set -euo pipefail

ROWS="${BENCH_ROWS:-1000000}"
USERS="${BENCH_USERS:-100000}"
WORK="${BENCH_DIR:-/tmp/pgshift-bench-sqlite}"
EXTRA_CONF="fsync = off"
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
for tool in pgloader sqlite3 bc /usr/bin/time; do
  command -v "$tool" >/dev/null || { echo "needs $tool: PGSHIFT_BENCH=1 scripts/bootstrap.sh" >&2; exit 1; }
done
start_clusters

DB="$WORK/app.db"
DST="postgresql://postgres@127.0.0.1:$TPORT/bench"
echo "generating $USERS users and $ROWS messages in SQLite..." >&2
python3 - "$DB" "$USERS" "$ROWS" <<'PY'
import json, sqlite3, sys
path, users, rows = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
db = sqlite3.connect(path)
db.executescript("""
CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT NOT NULL UNIQUE, active BOOLEAN NOT NULL, created_at DATETIME NOT NULL);
CREATE TABLE messages (id INTEGER PRIMARY KEY, user_id INTEGER NOT NULL REFERENCES users(id), body TEXT NOT NULL,
                       meta JSON, flagged BOOLEAN NOT NULL, score REAL, sent_at DATETIME NOT NULL);
CREATE INDEX messages_user ON messages (user_id);
""")
db.executemany("INSERT INTO users VALUES (?, ?, ?, ?)",
               ((i, f"user{i}@example.com", i % 3 != 0, f"2023-01-{1 + i % 28:02d}T10:00:00Z") for i in range(1, users + 1)))
db.executemany("INSERT INTO messages VALUES (?, ?, ?, ?, ?, ?, ?)",
               ((i, 1 + i % users, f"message {i}: " + "lorem ipsum dolor sit amet " * 6,
                 json.dumps({"tags": [f"t{i % 50}"], "n": i}), i % 7 == 0, i / 3.0,
                 f"2024-{1 + i % 12:02d}-{1 + i % 28:02d} {i % 24:02d}:{i % 60:02d}:00")
                for i in range(1, rows + 1)))
db.commit()
PY
SIZE=$(du -h "$DB" | cut -f1)

fresh_target() {
  psql_at $TPORT postgres -c "DROP DATABASE IF EXISTS bench WITH (FORCE)" -c "CREATE DATABASE bench"
}

echo "1/3 sqlite3 CSV | psql COPY" >&2
fresh_target
psql_at $TPORT bench -c "
CREATE TABLE users (id bigint, email text, active boolean, created_at timestamptz);
CREATE TABLE messages (id bigint, user_id bigint, body text, meta jsonb, flagged boolean, score double precision, sent_at timestamptz);"
t0=$(now)
sqlite3 -csv "$DB" "SELECT * FROM users" | psql_at $TPORT bench -c "COPY users FROM STDIN (FORMAT csv)" &
sqlite3 -csv "$DB" "SELECT * FROM messages" | psql_at $TPORT bench -c "COPY messages FROM STDIN (FORMAT csv)" &
wait
t1=$(now); RAW=$(echo "$t1 - $t0" | bc)

echo "2/3 pgloader" >&2
fresh_target
t0=$(now)
pgloader "sqlite://$DB" "${DST/postgres@/postgres:$PGPASSWORD@}" >"$WORK/pgloader.log" 2>&1 || { tail -20 "$WORK/pgloader.log" >&2; echo "pgloader failed" >&2; }
t1=$(now); PGLOADER=$(echo "$t1 - $t0" | bc)
PGLOADER_ROWS=$(psql_at $TPORT bench -At -c "SELECT count(*) FROM messages" 2>/dev/null || echo 0)

echo "3/3 pgshift migrate" >&2
fresh_target
t0=$(now)
/usr/bin/time -v -o "$WORK/rss" "$PGSHIFT" migrate --source "sqlite://$DB" --target "$DST" --jobs 2 --quiet --json >"$WORK/pgshift.json"
t1=$(now); PGSHIFT_TOTAL=$(echo "$t1 - $t0" | bc)
PGSHIFT_COPY=$(python3 -c "import json;print(round(json.load(open('$WORK/pgshift.json'))['copy_seconds'],2))")
RSS_KB=$(awk -F: '/Maximum resident/ {gsub(/ /,"",$2); print $2}' "$WORK/rss")
"$PGSHIFT" verify --source "sqlite://$DB" --target "$DST" --quiet >/dev/null && VERIFY=ok || VERIFY=FAILED

python3 -c "import json;r=json.load(open('$WORK/pgshift.json'));print('pgshift phases: copy', round(r['copy_seconds'],2), 'post-data', round(r['post_data_seconds'],2), 'total', round(r['total_seconds'],2))" >&2
cat <<REPORT

SQLite $SIZE: $USERS users, $ROWS messages -> PostgreSQL 16 (2 cores)
  sqlite3 CSV | psql COPY (copy only, no keys)   ${RAW}s
  pgloader (tables, copy, indexes, keys)          ${PGLOADER}s   ($PGLOADER_ROWS messages loaded)
  pgshift migrate (tables, copy, indexes, keys)   ${PGSHIFT_TOTAL}s   (copy phase ${PGSHIFT_COPY}s)
  pgshift copy phase vs the CSV pipe:             $(ratio "$RAW" "$PGSHIFT_COPY") as fast
  pgshift end to end vs pgloader:                 $(ratio "$PGLOADER" "$PGSHIFT_TOTAL") as fast
  pgshift peak RSS:                               $((RSS_KB / 1024)) MiB
  verify after pgshift:                           $VERIFY
REPORT
