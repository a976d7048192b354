#!/usr/bin/env bash
# The whole test suite: installs what is missing, starts the servers the
# tests need on 127.0.0.1 (in a temporary folder, stopped on exit), then runs
# every test of the workspace with every feature.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/deps.sh

WORK=$(mktemp -d -t fastapihooks-test.XXXXXX)
cleanup() {
  # --- stop servers started below ---
  if [[ -n ${PG_DATA:-} && -f $PG_DATA/postmaster.pid ]]; then
    as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -m immediate -w stop >/dev/null 2>&1 || true
  fi
  if [[ -n ${MY_INSTALL:-} ]]; then
    kill "$MY_INSTALL" 2>/dev/null || true
  fi
  if [[ -n ${MY_PID:-} ]]; then
    kill "$MY_PID" 2>/dev/null || true
    wait "$MY_PID" 2>/dev/null || true
  fi
  if [[ -n ${REDIS_PID:-} ]]; then
    kill "$REDIS_PID" 2>/dev/null || true
    wait "$REDIS_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

# --- servers: each section starts one and exports its URL --------------------
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# The MariaDB datadir is made while PostgreSQL starts (below).
mkdir -p "$WORK/mysql"
MY_OPTS=(--no-defaults --datadir="$WORK/mysql/data" --user="$(id -un)")
mariadb-install-db "${MY_OPTS[@]}" --auth-root-authentication-method=normal --skip-test-db \
  >"$WORK/mysql/install.log" 2>&1 &
MY_INSTALL=$!

# PostgreSQL (the SQL store): a throw-away cluster in $WORK, trust auth on
# 127.0.0.1, durability off (tests only). initdb refuses to run as root, so
# as root it runs as the `postgres` user.
PG_BIN=$(compgen -G '/usr/lib/postgresql/*/bin' | sort -V | tail -n 1)
as_pg() {
  if [[ $(id -u) -eq 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}
chmod 755 "$WORK"
mkdir -p "$WORK/pg"
[[ $(id -u) -eq 0 ]] && chown postgres "$WORK/pg"
PG_DATA="$WORK/pg/data"
PG_PORT=$(free_port)
as_pg "$PG_BIN/initdb" -D "$PG_DATA" -U postgres -A trust -E UTF8 --locale=C --no-sync >"$WORK/pg-initdb.log" 2>&1 \
  || { cat "$WORK/pg-initdb.log" >&2; exit 1; }
as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$WORK/pg/server.log" -w -t 30 \
  -o "-c listen_addresses=127.0.0.1 -p $PG_PORT -k $WORK/pg -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" \
  start >/dev/null || { cat "$WORK/pg/server.log" >&2; exit 1; }
export FASTAPIHOOKS_TEST_POSTGRES_URL="postgres://postgres@127.0.0.1:$PG_PORT/postgres"

# MariaDB (the SQL store, MySQL dialect): a throw-away datadir in $WORK.
MY_DIR="$WORK/mysql"
MY_PORT=$(free_port)
while [[ $MY_PORT == "$PG_PORT" ]]; do MY_PORT=$(free_port); done
wait "$MY_INSTALL" || { cat "$MY_DIR/install.log" >&2; exit 1; }
MARIADBD=$(command -v mariadbd || echo /usr/sbin/mariadbd)
"$MARIADBD" "${MY_OPTS[@]}" --bind-address=127.0.0.1 --port="$MY_PORT" --socket="$MY_DIR/sock" \
  --pid-file="$MY_DIR/pid" --log-error="$MY_DIR/error.log" --skip-log-bin --max-connections=300 \
  --innodb-flush-log-at-trx-commit=0 --innodb-doublewrite=0 --innodb-buffer-pool-size=64M \
  2>>"$MY_DIR/stderr.log" &
MY_PID=$!
for _ in $(seq 1 150); do
  mariadb --no-defaults -h 127.0.0.1 -P "$MY_PORT" -u root -e 'SELECT 1' >/dev/null 2>&1 && break
  kill -0 "$MY_PID" 2>/dev/null || { cat "$MY_DIR/error.log" >&2; exit 1; }
  sleep 0.2
done
mariadb --no-defaults -h 127.0.0.1 -P "$MY_PORT" -u root -e 'CREATE DATABASE IF NOT EXISTS fastapihooks' \
  || { cat "$MY_DIR/error.log" >&2; exit 1; }
export FASTAPIHOOKS_TEST_MYSQL_URL="mysql://root@127.0.0.1:$MY_PORT/fastapihooks"
# SQLite needs no server: its tests use temporary files.

# Redis (the Redis Streams backend): a throw-away server, no persistence.
# Tests use unique stream keys, so they share it; the restart test starts its own.
REDIS_DIR="$WORK/redis"
mkdir -p "$REDIS_DIR"
REDIS_PORT=$(free_port)
while [[ $REDIS_PORT == "$PG_PORT" || $REDIS_PORT == "$MY_PORT" ]]; do REDIS_PORT=$(free_port); done
REDIS_SERVER=$(command -v redis-server || echo /usr/bin/redis-server)
"$REDIS_SERVER" --bind 127.0.0.1 --port "$REDIS_PORT" --dir "$REDIS_DIR" --save '' --appendonly no \
  --logfile "$REDIS_DIR/server.log" &
REDIS_PID=$!
for _ in $(seq 1 100); do
  redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG && break
  kill -0 "$REDIS_PID" 2>/dev/null || { cat "$REDIS_DIR/server.log" >&2; exit 1; }
  sleep 0.1
done
redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG || { cat "$REDIS_DIR/server.log" >&2; exit 1; }
export FASTAPIHOOKS_TEST_REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0"
# ---------------------------------------------------------------------------

# Every test binary prints its own result line; the last one is often a
# crate without doctests ("0 passed"). End with the total over all of them.
set +e
cargo test --workspace --all-features --no-fail-fast "$@" 2>&1 | tee "$WORK/cargo-test.log"
status=${PIPESTATUS[0]}
set -e
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "\nfastapihooks: %d passed, %d failed\n", p, f }' "$WORK/cargo-test.log"
exit "$status"
