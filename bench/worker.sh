#!/usr/bin/env bash
# The sidecar worker on Redis Streams, two builds side by side in one run:
# events delivered per second by 1 and 2 workers (`fastapihooks start`)
# against the fast receiver, and one worker's peak memory with a dead
# endpoint. Everything on 127.0.0.1: a private redis-server (no
# persistence), bench-receiver, the workers. Every wait is bounded.
#
#   bench/worker.sh --old DIR --new DIR [--fill DIR] [--rounds 3] [--events 100000] [--port 16390]
#
# DIR holds release binaries `fastapihooks` (features cli) and
# bench-receiver; --fill DIR one with bench-publish (features redis, from
# this checkout: it fills the stream; default --new). Each round runs old,
# new (odd rounds) or new, old (even rounds); the ratios are new / old
# within a round. Progress on stderr, a Markdown table on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."

OLD= NEW= FILL= ROUNDS=3 EVENTS=100000 PORT=16390
while (($#)); do
  case $1 in
    --old) OLD=$(cd "$2" && pwd); shift 2 ;;
    --new) NEW=$(cd "$2" && pwd); shift 2 ;;
    --fill) FILL=$(cd "$2" && pwd); shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --events) EVENTS=$2; shift 2 ;;
    --port) PORT=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
FILL=${FILL:-$NEW}
for b in "$OLD/fastapihooks" "$NEW/fastapihooks" "$NEW/bench-receiver" "$FILL/bench-publish"; do
  [[ -x $b ]] || { echo "missing $b" >&2; exit 2; }
done

REDIS=redis://127.0.0.1:$PORT/0
RX_PORT=$((PORT + 1))
RX=http://127.0.0.1:$RX_PORT
DEAD=http://127.0.0.1:$((PORT + 2))/dead   # nothing listens there
SECRET=bench-secret
WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]:-}"; do kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
log() { echo "[worker] $*" >&2; }
jget() { python3 -c "import json,sys; d=json.load(sys.stdin); print(d$1)"; }
rcli() { redis-cli -p "$PORT" "$@"; }

redis-server --port "$PORT" --bind 127.0.0.1 --save '' --appendonly no --dir "$WORK" >"$WORK/redis.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do rcli ping >/dev/null 2>&1 && break; sleep 0.05; done
"$NEW/bench-receiver" --port "$RX_PORT" --secret $SECRET >"$WORK/rx.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do curl -s -o /dev/null "$RX/stats" && break; sleep 0.05; done

fill() { # stream target
  "$FILL/bench-publish" --redis "$REDIS" --events "$EVENTS" --stream "$1" --subscriber "$2" >/dev/null
}
start_workers() { # bin stream n [args...]
  local bin=$1 stream=$2 n=$3 i
  shift 3
  WPIDS=()
  for ((i = 0; i < n; i++)); do
    FASTAPIHOOKS_SIGNING_SECRET=$SECRET "$bin" start --redis-url "$REDIS" --stream "$stream" \
      --allow-cidr 127.0.0.0/8 --log-level error "$@" >/dev/null 2>"$WORK/worker-$i.log" &
    WPIDS+=($!)
    PIDS+=($!)
  done
}
stop_workers() { for p in "${WPIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; }

# Events delivered per second by `n` workers of `bin`, from a full stream.
rate() { # bin n
  local stream="fh-bench:worker:$RANDOM$RANDOM" start now got last=-1 still=0
  curl -s -X POST "$RX/reset" >/dev/null
  fill "$stream" "$RX/hook"
  start=$(date +%s%3N)
  start_workers "$1" "$stream" "$2"
  while :; do
    got=$(curl -s "$RX/stats" | jget "['unique']")
    now=$(date +%s%3N)
    ((got >= EVENTS)) && break
    if ((got == last)); then ((still += 1)); else still=0; last=$got; fi
    ((still < 100)) || { log "stalled at $got of $EVENTS"; break; }   # 10 s without progress
    sleep 0.1
  done
  stop_workers
  rcli del "$stream" "$stream:schedule" "$stream:failures" >/dev/null
  python3 -c "print(round($got / (($now - $start) / 1000)))"
}

# One worker's peak RSS (KiB) while a dead endpoint's deliveries all go to
# the retry schedule, and how many waited there at the end.
dead_rss() { # bin
  local stream="fh-bench:dead:$RANDOM$RANDOM" peak=0 rss waiting=0 i
  fill "$stream" "$DEAD"
  start_workers "$1" "$stream" 1
  for ((i = 0; i < 600; i++)); do   # at most 60 s
    rss=$(awk '/VmRSS/ {print $2}' "/proc/${WPIDS[0]}/status" 2>/dev/null || echo 0)
    ((rss > peak)) && peak=$rss
    waiting=$(rcli zcard "$stream:schedule")
    (($(rcli xlen "$stream") == 0)) && break
    sleep 0.1
  done
  local failed; failed=$(rcli xlen "$stream:failures")
  stop_workers
  rcli del "$stream" "$stream:schedule" "$stream:failures" >/dev/null
  echo "$peak $waiting $failed"
}

declare -A R
for ((round = 1; round <= ROUNDS; round++)); do
  order=(old new); ((round % 2 == 0)) && order=(new old)
  for side in "${order[@]}"; do
    bin=$OLD/fastapihooks; [[ $side == new ]] && bin=$NEW/fastapihooks
    for n in 1 2; do
      R[$round,$side,$n]=$(rate "$bin" $n)
      log "round $round $side $n worker(s): ${R[$round,$side,$n]} events/s"
    done
  done
done
read -r new_peak new_waiting new_failed < <(dead_rss "$NEW/fastapihooks")
log "dead endpoint, new: peak RSS $new_peak KiB, $new_waiting waiting, $new_failed given up"
read -r old_peak old_waiting old_failed < <(dead_rss "$OLD/fastapihooks")
log "dead endpoint, old: peak RSS $old_peak KiB, $old_waiting waiting, $old_failed given up"

echo "| workers | old events/s (median) | new events/s (median) | new / old (median [min .. max]) |"
echo "|---|---|---|---|"
for n in 1 2; do
  olds=() news=() ratios=()
  for ((round = 1; round <= ROUNDS; round++)); do
    olds+=("${R[$round,old,$n]}"); news+=("${R[$round,new,$n]}")
    ratios+=("$(python3 -c "print(${R[$round,new,$n]} / max(1, ${R[$round,old,$n]}))")")
  done
  python3 - "$n" "${olds[*]}" "${news[*]}" "${ratios[*]}" <<'PY'
import statistics, sys
n, olds, news, ratios = sys.argv[1], *(list(map(float, a.split())) for a in sys.argv[2:])
print(f"| {n} | {statistics.median(olds):,.0f} | {statistics.median(news):,.0f} | {statistics.median(ratios):.2f} [{min(ratios):.2f} .. {max(ratios):.2f}] |")
PY
done
echo
echo "Dead endpoint, $EVENTS events, one worker: new peak RSS $((new_peak / 1024)) MiB ($new_waiting deliveries waiting in Redis, $new_failed recorded as given up); old peak RSS $((old_peak / 1024)) MiB (its retries wait in memory; what it gives up is only logged, so not counted here)."
