#!/usr/bin/env bash
# A chunked load of long documents against the embedder alone on the same chunks, in
# one run (issue 22): pgshift migrate --embed 'pages->page_chunks=body' (PG15 -> PG16,
# --no-follow), then examples/embed_rate on the chunk texts the load wrote. The ratio is
# chunks per second during the load's copy phase over the embedder's texts per second.
# Then examples/chunk_rate: what cutting a 10 MB document costs beside embedding it.
# BENCH_DOCS (default 60) documents of BENCH_PARAGRAPHS (default 30) paragraphs.
set -euo pipefail

DOCS="${BENCH_DOCS:-60}"
PARAGRAPHS="${BENCH_PARAGRAPHS:-30}"
WORK="${BENCH_DIR:-/tmp/pgshift-bench-chunks}"
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cargo build --release --locked --example embed_rate --example chunk_rate >/dev/null 2>&1 || cargo build --release --locked --example embed_rate --example chunk_rate
start_clusters

SRC="postgresql://postgres@127.0.0.1:$SPORT/bench"
DST="postgresql://postgres@127.0.0.1:$TPORT/bench"
psql_at $SPORT postgres -c "CREATE DATABASE bench"
psql_at $TPORT postgres -c "CREATE DATABASE bench"
# Paragraphs of sentences of varied length, different in every document.
psql_at $SPORT bench -c "
CREATE TABLE pages (id int PRIMARY KEY, body text NOT NULL);
INSERT INTO pages
SELECT d, string_agg(
         (SELECT string_agg(initcap(s) || '.', ' ')
            FROM (SELECT string_agg((ARRAY['replication','slot','keeps','the','write-ahead','log','until','subscriber','confirms',
                                           'every','change','vector','index','search','finds','nearest','neighbours','quickly',
                                           'database','moves','without','downtime','while','application','writes'])[1 + (hashint4(d * 7919 + p * 104729 + w) & 2147483647) % 25], ' ') AS s
                    FROM generate_series(1, 6) sn, generate_series(1, 4 + (d + p + sn) % 20) w
                   GROUP BY sn) x), E'\n\n')
FROM generate_series(1, $DOCS) d, generate_series(1, $PARAGRAPHS) p
GROUP BY d;"

echo "1/2 pgshift migrate --embed 'pages->page_chunks=body' ($DOCS documents)" >&2
"$PGSHIFT" migrate --source "$SRC" --target "$DST" --embed 'pages->page_chunks=body' --no-follow --jobs 2 --json >"$WORK/migrate.json"
COPY_S=$(python3 -c "import json; print(json.load(open('$WORK/migrate.json'))['copy_seconds'])")
CHUNKS=$(psql_at $TPORT bench -At -c "SELECT count(*) FROM page_chunks")
psql_at $TPORT bench -At -c "SELECT replace(chunk, E'\n', ' ') FROM page_chunks" >"$WORK/chunks.txt"
echo "2/2 the embedder alone on the same $CHUNKS chunks" >&2
ALONE=$("$ROOT/target/release/examples/embed_rate" chunks 32 2 <"$WORK/chunks.txt" | awk '{print $NF}')
LOAD=$(python3 -c "print(f'{$CHUNKS / $COPY_S:.2f}')")
echo
echo "chunked load of $DOCS documents ($CHUNKS chunks), PG15 -> PG16, 2 cores"
echo "  load copy phase:                 ${COPY_S}s = $LOAD chunks/s"
echo "  embedder alone, same chunks:     $ALONE chunks/s"
echo "  load vs embedder alone:          $(ratio "$LOAD" "$ALONE")"
"$ROOT/target/release/examples/chunk_rate" 10
