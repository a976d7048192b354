#!/usr/bin/env bash
# End-to-end load benchmark of fastapihooks, every measurement in one run,
# all traffic on 127.0.0.1, every load bounded in time or count.
#
#   bench/load.sh [--runs 3] [--duration 10]
#
# Needs wrk (Debian) and oha (`cargo install oha`); installs them if missing.
# Prints a Markdown report (medians and ranges over the runs, as ratios) on
# stdout; progress goes to stderr. See docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=3
DURATION=10
while (($#)); do
  case $1 in
    --runs) RUNS=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done

command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
export PATH="$HOME/.cargo/bin:$PATH"
command -v oha >/dev/null || cargo install --locked oha >&2

cargo build --release -q -p fastapihooks-bench >&2
BIN=target/release
SECRET=bench-secret
RX_PORT=19100
APP_PORT=19200
RX=http://127.0.0.1:$RX_PORT
APP=http://127.0.0.1:$APP_PORT
LUA=bench/lua/order.lua
PIDS=()
cleanup() { for p in "${PIDS[@]:-}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
log() { echo "[load] $*" >&2; }

jget() { python3 -c "import json,sys; d=json.load(sys.stdin); print(d$1)"; }
wait_port() { for _ in $(seq 100); do curl -s -o /dev/null "$1" && return 0; sleep 0.05; done; echo "no server at $1" >&2; exit 1; }

start_receiver() { # [args...]
  "$BIN/bench-receiver" --port $RX_PORT --ports 10 --secret $SECRET "$@" & RX_PID=$!; PIDS+=("$RX_PID")
  [[ " $* " == *" --hang "* ]] || wait_port "$RX/stats"
}
stop_receiver() { kill "$RX_PID"; wait "$RX_PID" 2>/dev/null || true; }
start_app() { # subscribers [args...]
  local subs=$1; shift
  "$BIN/bench-app" --port $APP_PORT --receiver "$RX" --subscribers "$subs" --secret $SECRET "$@" & APP_PID=$!; PIDS+=("$APP_PID")
  wait_port "$APP/admin/stats"
}
stop_app() { kill -INT "$APP_PID"; wait "$APP_PID" 2>/dev/null || true; }

wrk_rps() { # url [lua] [seconds]
  wrk -t2 -c64 -d"${3:-$DURATION}s" -s "${2:-$LUA}" "$1" | awk '/Requests\/sec/ {print $2}'
}
# Waits until the receiver has `want` unique deliveries, or no progress for 10 s.
# Prints the milliseconds waited.
drain() {
  local want=$1 start now last=-1 still=0
  start=$(date +%s%3N)
  while :; do
    local got; got=$(curl -s "$RX/stats" | jget "['unique']")
    ((got >= want)) && break
    if ((got == last)); then still=$((still + 1)); ((still > 100)) && break; else still=0; fi
    last=$got; sleep 0.1
  done
  now=$(date +%s%3N); echo $((now - start))
}
rx_stat() { curl -s "$RX/stats" | jget "['$1']"; }
app_stat() { curl -s "$APP/admin/stats" | jget "['$1']"; }
# CPU time (user + system) a process has used, in milliseconds.
cpu_ms() { awk '{print ($14 + $15) * 10}' "/proc/$1/stat"; }
# Runs the fixed-rate load (5,000 req/s) against /hooked; prints its p99 in
# seconds, and sets APP_CPU_MS and RX_CPU_MS to the CPU the app and the
# receiver used meanwhile.
fixed_rate() {
  local a0 r0 p99
  a0=$(cpu_ms "$APP_PID"); r0=$(cpu_ms "$RX_PID")
  p99=$(oha --no-tui --output-format json -z "${DURATION}s" -q 5000 -c 64 -m POST -H 'content-type: application/json' -d '{"item":"book","qty":2}' "$APP/hooked" | jget "['latencyPercentiles']['p99']")
  APP_CPU_MS=$(( $(cpu_ms "$APP_PID") - a0 )); RX_CPU_MS=$(( $(cpu_ms "$RX_PID") - r0 ))
  echo "$p99"
}

RESULTS=$(mktemp)
record() { echo "$1 $2" >> "$RESULTS"; log "$1 = $2"; }

for run in $(seq "$RUNS"); do
  log "run $run of $RUNS"

  # (a) 0 subscribers, saturation: hooked vs plain.
  # In the order plain, hooked, hooked, plain (each for half the duration),
  # so that a drift in the machine's speed weighs on both alike.
  start_receiver; start_app 0
  p1=$(wrk_rps "$APP/plain" "$LUA" $((DURATION / 2))); h1=$(wrk_rps "$APP/hooked" "$LUA" $((DURATION / 2)))
  h2=$(wrk_rps "$APP/hooked" "$LUA" $((DURATION / 2))); p2=$(wrk_rps "$APP/plain" "$LUA" $((DURATION / 2)))
  plain=$(python3 -c "print(($p1 + $p2) / 2)"); hooked=$(python3 -c "print(($h1 + $h2) / 2)")
  record a_plain_rps "$plain"; record a_hooked_rps "$hooked"
  record a_ratio "$(python3 -c "print($hooked / $plain)")"
  stop_app

  # Fixed rate, 5,000 req/s: the p99 with 0 subscribers (the baseline), with
  # 1 subscriber, with 1 subscriber and delivery on a dedicated
  # lower-priority runtime, and the baseline again (the ratios use the mean
  # of the two baselines, so a drift weighs on both sides alike); each on a
  # fresh app, one right after the other.
  start_app 0
  fixed_rate > "$RESULTS.p99"; p99_0a=$(cat "$RESULTS.p99")
  # CPU per request, in microseconds (5,000 requests/s for DURATION s).
  record fixed5k_app_cpu_us_0sub "$(python3 -c "print($APP_CPU_MS * 1000 / (5000 * $DURATION))")"
  stop_app
  declare -A p99_1
  for variant in shared dedicated; do
    if [[ $variant == shared ]]; then start_app 1; else start_app 1 --dedicated 1; fi
    curl -s -XPOST "$RX/reset" >/dev/null
    before=$(app_stat emitted)
    fixed_rate > "$RESULTS.p99"; p99_1[$variant]=$(cat "$RESULTS.p99")
    at_stop=$(rx_stat unique)
    want=$(( $(app_stat emitted) - before ))
    prefix=fixed5k; [[ $variant == dedicated ]] && prefix=fixed5k_dedicated
    record "${prefix}_p99_1sub_ms" "$(python3 -c "print(${p99_1[$variant]} * 1000)")"
    record "${prefix}_backlog_s" "$(python3 -c "print(($want - $at_stop) / 5000)")"
    if [[ $variant == shared ]]; then
      record fixed5k_app_cpu_us_1sub "$(python3 -c "print($APP_CPU_MS * 1000 / (5000 * $DURATION))")"
      record fixed5k_rx_cpu_us "$(python3 -c "print($RX_CPU_MS * 1000 / (5000 * $DURATION))")"
      record fixed5k_lag_ms "$(drain "$want")"
    fi
    stop_app
  done
  start_app 0
  fixed_rate > "$RESULTS.p99"; p99_0b=$(cat "$RESULTS.p99")
  stop_app
  p99_0=$(python3 -c "print(($p99_0a + $p99_0b) / 2)")
  record fixed5k_p99_0sub_ms "$(python3 -c "print($p99_0 * 1000)")"
  record fixed5k_p99_ratio "$(python3 -c "print(${p99_1[shared]} / $p99_0)")"
  record fixed5k_dedicated_p99_ratio "$(python3 -c "print(${p99_1[dedicated]} / $p99_0)")"

  # (b) 1 and 10 subscribers, saturation.
  for subs in 1 10; do
    start_app "$subs"
    curl -s -XPOST "$RX/reset" >/dev/null
    rps=$(wrk_rps "$APP/hooked")
    delivered_during=$(rx_stat unique)
    emitted=$(app_stat emitted)
    want=$((emitted * subs))
    lag_ms=$(drain "$want")
    # Refused at intake (queue full): one report per event, covering all its subscribers.
    got=$(rx_stat unique); refused=$(app_stat queue_full); failed=$(( $(app_stat failed) - refused )); bad=$(rx_stat bad_signatures)
    record "b${subs}_rps_vs_plain" "$(python3 -c "print($rps / $plain)")"
    record "b${subs}_events_per_s" "$(python3 -c "print($delivered_during / $subs / $DURATION)")"
    record "b${subs}_deliveries_per_s" "$(python3 -c "print($delivered_during / $DURATION)")"
    record "b${subs}_backlog_at_stop" "$((want - delivered_during))"
    record "b${subs}_lag_ms" "$lag_ms"
    record "b${subs}_refused_at_intake" "$refused"
    record "b${subs}_reported" "$failed"
    record "b${subs}_lost" "$((want - got - failed))"
    record "b${subs}_bad_signatures" "$bad"
    stop_app
  done

  # (c) a burst of 20,000 hooked requests: time until all are delivered, peak RSS.
  start_app 1
  curl -s -XPOST "$RX/reset" >/dev/null
  t0=$(date +%s%3N)
  oha --no-tui --output-format json -n 20000 -c 64 -m POST -H 'content-type: application/json' -d '{"item":"book","qty":2}' "$APP/hooked" >/dev/null
  drain 20000 >/dev/null
  t1=$(date +%s%3N)
  record c_burst_ms "$((t1 - t0))"
  record c_burst_delivered "$(rx_stat unique)"
  record c_peak_rss_mb "$(python3 -c "print($(app_stat peak_rss_kb) / 1024)")"
  stop_app

  # (d) the receiver's own capacity with signed bodies, and (b10) as a share of it.
  cap=$(wrk_rps "$RX/s0" bench/lua/signed.lua)
  record d_receiver_rps "$cap"
  record d_10sub_share "$(python3 -c "print($(grep "^b10_deliveries_per_s " "$RESULTS" | tail -1 | cut -d' ' -f2) / $cap)")"
  stop_receiver

  # (e) a subscriber failing 30 % with 503: delivered, reported, lost.
  start_receiver --fail-rate 0.3
  start_app 1 --retry-base-ms 50
  n=5000
  oha --no-tui --output-format json -n $n -c 32 -m POST -H 'content-type: application/json' -d '{"item":"book","qty":2}' "$APP/hooked" >/dev/null
  drain $n >/dev/null
  sleep 2 # the last retries (≤ 4 attempts, 50..400 ms apart)
  got=$(rx_stat unique); failed=$(app_stat failed)
  record e_delivered "$got"; record e_reported "$failed"; record e_lost "$((n - got - failed))"
  stop_app; stop_receiver
done

# Memory with a dead subscriber and a full queue: 100,000 events.
start_receiver --hang
start_app 1
for _ in $(seq 10); do curl -s -XPOST "$APP/admin/burst?n=10000" >/dev/null; sleep 0.2; done
sleep 2
record m_dead_rss_mb "$(python3 -c "print($(app_stat rss_kb) / 1024)")"
record m_dead_reported "$(app_stat failed)"
stop_app; stop_receiver

python3 bench/report.py "$RESULTS" "$RUNS" "$DURATION"
