#!/usr/bin/env bash
# Pruning the SQL attempt log under a concurrent writer, on a SQLite file
# and on a throw-away PostgreSQL (started here on 127.0.0.1, durability off
# like scripts/test.sh's, stopped on exit). Each run fills a new table with
# --rows old attempts, then prunes them all by age while a writer records
# batches of 100 every 5 ms: bench-prune prints one JSON line (rows/s
# pruned, the slowest statement, the writer's records/s before, during and
# after pruning). Runs the default pause between batches (50 ms) and none.
#
#   bench/prune.sh [--bin DIR] [--rows 1000000] [--backends "sqlite postgres"] [--pauses "50 0"]
#
# DIR holds a release bench-prune (default target/release; build it with
# cargo build --release -p fastapihooks-bench --features prune --bin bench-prune).
# Prints each run's JSON line to stderr and a Markdown table to stdout.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${CARGO_TARGET_DIR:-target}/release
ROWS=1000000
BACKENDS="sqlite postgres"
PAUSES="50 0"
while (($#)); do
  case $1 in
    --bin) BIN=$2; shift 2 ;;
    --rows) ROWS=$2; shift 2 ;;
    --backends) BACKENDS=$2; shift 2 ;;
    --pauses) PAUSES=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
[[ -x $BIN/bench-prune ]] || { echo "no bench-prune in $BIN (build it with --features prune)" >&2; exit 2; }

WORK=$(mktemp -d -t fastapihooks-prune.XXXXXX)
RAW=$WORK/raw.jsonl
cleanup() {
  if [[ -n ${PG_DATA:-} && -f $PG_DATA/postmaster.pid ]]; then
    as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -m fast -w stop >/dev/null 2>&1 || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

as_pg() {
  if [[ $(id -u) -eq 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}
start_postgres() {
  PG_BIN=$(compgen -G '/usr/lib/postgresql/*/bin' | sort -V | tail -n 1)
  chmod 755 "$WORK"
  mkdir -p "$WORK/pg"
  [[ $(id -u) -eq 0 ]] && chown postgres "$WORK/pg"
  PG_DATA="$WORK/pg/data"
  PG_PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  as_pg "$PG_BIN/initdb" -D "$PG_DATA" -U postgres -A trust -E UTF8 --locale=C --no-sync >"$WORK/pg-initdb.log" 2>&1
  as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$WORK/pg/server.log" -w -t 30 \
    -o "-c listen_addresses=127.0.0.1 -p $PG_PORT -k $WORK/pg -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
    start >/dev/null
  PG_URL="postgres://postgres@127.0.0.1:$PG_PORT/postgres"
}

for backend in $BACKENDS; do
  [[ $backend == postgres && -z ${PG_URL:-} ]] && start_postgres
  for pause in $PAUSES; do
    case $backend in
      sqlite) url="sqlite://$WORK/prune-$pause.db" ;;
      postgres) url=$PG_URL ;;
      *) echo "unknown backend $backend" >&2; exit 2 ;;
    esac
    line=$("$BIN/bench-prune" --url "$url" --rows "$ROWS" --pause-ms "$pause")
    echo "$line" >&2
    echo "$line" >>"$RAW"
    rm -f "$WORK"/prune-"$pause".db*
  done
done

python3 - "$RAW" <<'PY'
import json, sys
print("| backend | pause | rows pruned | prune time | rows/s pruned (in statements) | statement p50 / p99 / max | writer records/s before / during / after | during / before | writer `record` p99 before / during |")
print("|---|---|---|---|---|---|---|---|---|")
for line in open(sys.argv[1]):
    d = json.loads(line)
    b, du, a = d["writer_before"], d["writer_during"], d["writer_after"]
    print(f"| {d['backend']} | {d['pause_ms']} ms | {d['pruned']:,} (left: {d['old_left']}) | {d['prune_s']} s "
          f"| {d['prune_rows_per_s']:,.0f} ({d['prune_rows_per_s_in_statements']:,.0f}) "
          f"| {d['statement_ms_p50']} / {d['statement_ms_p99']} / {d['statement_ms_max']} ms "
          f"| {b['records_per_s']:,.0f} / {du['records_per_s']:,.0f} / {a['records_per_s']:,.0f} "
          f"| {d['writer_during_over_before']:.2f} | {b['record_ms_p99']} / {du['record_ms_p99']} ms |")
PY
