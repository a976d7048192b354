#!/usr/bin/env bash
# Delivery throughput with the attempt log on and off, side by side in one
# run: bench-app delivers bursts to bench-receiver (both on 127.0.0.1), once
# per attempt-log mode, in rounds whose order alternates. A mode is what
# bench-app's --attempt-log takes: none, memory, a sqlite://path or a
# postgres:// URL (the log's table is dropped before each run, so every run
# starts empty).
#
#   bench/attempt-log.sh --bin DIR [--modes "none sqlite:///tmp/a.db postgres://..."] [--rounds 3] [--events 20000] [--subscribers 1] [--port 19400]
#
# DIR holds release bench-app (built with --features sqlite,postgres) and
# bench-receiver. Per run: deliveries/s from the burst to the last of its
# deliveries at the receiver, and the records the app wrote (and lost).
# Prints each run to stderr and a Markdown table to stdout: per mode, the
# median deliveries/s and the median of its per-round ratios to the first
# mode [min .. max].
set -euo pipefail
cd "$(dirname "$0")/.."

BIN= MODES="none memory" ROUNDS=3 EVENTS=20000 SUBS=1 PORT=19400
while (($#)); do
  case $1 in
    --bin) BIN=$(cd "$2" && pwd); shift 2 ;;
    --modes) MODES=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --events) EVENTS=$2; shift 2 ;;
    --subscribers) SUBS=$2; shift 2 ;;
    --port) PORT=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
[[ -x $BIN/bench-app && -x $BIN/bench-receiver ]] || { echo "--bin must hold bench-app and bench-receiver" >&2; exit 2; }
for m in $MODES; do
  case $m in
    none | memory | sqlite://* ) ;;
    postgres://*@127.0.0.1* | postgres://127.0.0.1*) ;;
    *) echo "mode $m: none, memory, sqlite://path or postgres:// on 127.0.0.1" >&2; exit 2 ;;
  esac
done

RX=http://127.0.0.1:$PORT
APP_PORT=$((PORT + 20))
APP=http://127.0.0.1:$APP_PORT
SECRET=s
RAW=$(mktemp)
PIDS=()
cleanup() {
  for p in "${PIDS[@]:-}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -f "$RAW"
}
trap cleanup EXIT
jget() { python3 -c "import json,sys; d=json.load(sys.stdin); print(d$1)"; }
wait_url() { local i; for ((i = 0; i < 100; i++)); do curl -s -o /dev/null "$1" && return 0; sleep 0.1; done; echo "no server at $1" >&2; exit 1; }
now_ms() { date +%s%3N; }

run() { # round mode
  local round=$1 mode=$2 rx_pid app_pid got last=-1 still=0 start end recorded lost
  "$BIN/bench-receiver" --port "$PORT" --ports $((SUBS > 10 ? SUBS : 10)) --secret $SECRET & rx_pid=$!; PIDS+=("$rx_pid")
  wait_url "$RX/stats"
  "$BIN/bench-app" --port "$APP_PORT" --receiver "$RX" --subscribers "$SUBS" --secret $SECRET \
    --queue $((EVENTS * 2)) --attempt-log "$mode" --fresh-attempt-log & app_pid=$!; PIDS+=("$app_pid")
  wait_url "$APP/admin/stats"
  start=$(now_ms)
  curl -s -XPOST "$APP/admin/burst?n=$EVENTS" >/dev/null
  while :; do
    got=$(curl -s "$RX/stats" | jget "['unique']")
    ((got >= EVENTS * SUBS)) && break
    if ((got == last)); then still=$((still + 1)); ((still > 300)) && break; else still=0; fi
    last=$got; sleep 0.02
  done
  end=$(now_ms)
  sleep 1 # the writer's last batch
  recorded=$(curl -s "$APP/admin/stats" | jget "['attempts_recorded']")
  lost=$(curl -s "$APP/admin/stats" | jget "['attempts_unrecorded']")
  kill -INT "$app_pid"; wait "$app_pid" || true
  kill "$rx_pid"; wait "$rx_pid" 2>/dev/null || true
  local rate=$((got * 1000 / (end - start > 0 ? end - start : 1)))
  echo "round $round $mode: $got deliveries in $((end - start)) ms = $rate/s, $recorded records written, $lost lost" >&2
  echo "$round $mode $rate $got $recorded $lost" >>"$RAW"
}

read -ra modes <<<"$MODES"
for ((r = 1; r <= ROUNDS; r++)); do
  order=("${modes[@]}")
  ((r % 2)) || { order=(); for ((i = ${#modes[@]} - 1; i >= 0; i--)); do order+=("${modes[$i]}"); done; }
  for m in "${order[@]}"; do run "$r" "$m"; done
done
python3 - "$RAW" "$EVENTS" "$SUBS" "${modes[0]}" <<'PY'
import statistics, sys
from collections import defaultdict
raw, events, subs, base = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
rate = {}
complete = True
order = []
for line in open(raw):
    r, m, v, got, rec, lost = line.split()
    rate[(int(r), m)] = float(v)
    complete &= int(got) == events * subs
    if m not in order:
        order.append(m)
rounds = sorted({r for r, _ in rate})
print(f"| attempt log | deliveries/s (median of {len(rounds)}) | ratio to `{base}` (median [min .. max]) |")
print("|---|---|---|")
for m in order:
    ratios = [rate[(r, m)] / rate[(r, base)] for r in rounds]
    med = statistics.median(rate[(r, m)] for r in rounds)
    print(f"| `{m.split('@')[-1]}` | {med:,.0f} | {statistics.median(ratios):.2f} [{min(ratios):.2f} .. {max(ratios):.2f}] |")
if not complete:
    print("\n(some runs did not deliver every event: see stderr)")
PY
