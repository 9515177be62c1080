#!/usr/bin/env bash
# A scheduled re-index with the same model, in one run (issue 23): a table of BENCH_ROWS
# (default 100,000) rows with vectors made by `reembed`, then the same re-index
#   1. as before (--full: shadow column, backfill from the cache, new HNSW, swap),
#   2. in place with nothing changed (one scan comparing vectors with their texts),
#   3. in place after the application changed 10 texts.
# Texts repeat (1,000 distinct) so the first run's model time stays short; the runs
# measured read vectors from the cache either way. Ratios are against run 1.
set -euo pipefail

ROWS="${BENCH_ROWS:-100000}"
WORK="${BENCH_DIR:-/tmp/pgshift-bench-reembed}"
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
start_clusters
DB="postgresql://postgres@127.0.0.1:$TPORT/bench"
psql_at $TPORT postgres -c "CREATE DATABASE bench"
psql_at $TPORT bench -c "CREATE EXTENSION vector;
CREATE TABLE docs (id bigint PRIMARY KEY, body text, embedding vector(384));
INSERT INTO docs (id, body) SELECT i, 'Entry ' || (i % 1000) || ' of the harbour master''s logbook' FROM generate_series(1, $ROWS) i;"
reembed() { "$PGSHIFT" reembed --target "$DB" --table docs --text body --column embedding --json "$@"; }
seconds() { python3 -c "import json,sys; r=json.load(sys.stdin); print(r['seconds'], r['mode'], r['rows_embedded'], r['scan_seconds'])"; }

echo "0/3 first re-index: every row gets its vector" >&2
reembed >/dev/null
echo "1/3 the same re-index, as before (--full)" >&2
read -r FULL_S FULL_MODE FULL_ROWS _ < <(reembed --full | seconds)
echo "2/3 in place, nothing changed" >&2
read -r SAME_S SAME_MODE SAME_ROWS SAME_SCAN < <(reembed | seconds)
psql_at $TPORT bench -c "UPDATE docs SET body = 'A new entry ' || id WHERE id BETWEEN 1 AND 10"
echo "3/3 in place, 10 texts changed" >&2
read -r TEN_S TEN_MODE TEN_ROWS TEN_SCAN < <(reembed | seconds)
echo
echo "re-index of $ROWS rows with the same model, PG16, 2 cores"
echo "  as before ($FULL_MODE, $FULL_ROWS rows written):      ${FULL_S}s"
echo "  in place, nothing changed ($SAME_MODE, $SAME_ROWS rows): ${SAME_S}s = $(ratio "$SAME_S" "$FULL_S") of before (the comparing scan: ${SAME_SCAN}s)"
echo "  in place, 10 changed ($TEN_MODE, $TEN_ROWS rows):       ${TEN_S}s = $(ratio "$TEN_S" "$FULL_S") of before (the comparing scan: ${TEN_SCAN}s)"
