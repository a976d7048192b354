#!/usr/bin/env bash
# End-to-end load benchmark of fastapihooks, every measurement in one run,
# all traffic on 127.0.0.1, every load bounded in time or count.
#
#   bench/load.sh [--runs 3] [--duration 10] [--bin DIR]
#
# --bin DIR: use the release binaries bench-app and bench-receiver in DIR
# instead of building this checkout's.
# Needs wrk (Debian) and oha (`cargo install oha`); installs them if missing.
# Prints a Markdown report (medians and ranges over the runs, as ratios) on
# stdout; progress goes to stderr. See docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=3
DURATION=10
BIN=
while (($#)); do
  case $1 in
    --runs) RUNS=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --bin) BIN=$(cd "$OLDPWD" && cd "$2" && pwd); shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done

command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
export PATH="$HOME/.cargo/bin:$PATH"
command -v oha >/dev/null || cargo install --locked oha >&2

if [[ -z $BIN ]]; then cargo build --release -q -p fastapihooks-bench >&2; BIN=target/release; fi
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

. bench/lib.sh # jget wait_port start_/stop_receiver start_/stop_app wrk_rps drain rx_stat app_stat cpu_ms threads_cpu_ms
# The fixed-rate measurements (see the loop below): `rounds` rounds of one
# 2-second slice at 5,000 req/s on each app.
FIXED_VARIANTS=(0sub default shared nice10)
fixed_rate_rounds() {
  local rounds=$1 i j k=${#FIXED_VARIANTS[@]} v port rx0 rx1 e0 e1 a0 r0 p99 lag args n
  declare -A pid_of port_of
  for i in "${!FIXED_VARIANTS[@]}"; do
    v=${FIXED_VARIANTS[$i]}; port=$((APP_PORT + 10 + i))
    case $v in
      0sub) args=(--subscribers 0) ;;
      default) args=(--subscribers 1) ;;
      shared) args=(--subscribers 1 --shared) ;;
      nice10) args=(--subscribers 1 --nice 10) ;;
    esac
    "$BIN/bench-app" --port "$port" --receiver "$RX" --secret $SECRET "${args[@]}" & pid_of[$v]=$!; PIDS+=("${pid_of[$v]}")
    port_of[$v]=$port
    wait_port "http://127.0.0.1:$port/admin/stats"
  done
  local rows=()
  for ((round = 0; round < rounds; round++)); do
    local row=()
    for ((j = 0; j < k; j++)); do
      if ((round % 2)); then i=$(( (k - 1 - j + round) % k )); else i=$(( (j + round) % k )); fi
      v=${FIXED_VARIANTS[$i]}; port=${port_of[$v]}
      rx0=$(rx_stat unique); e0=$(curl -s "http://127.0.0.1:$port/admin/stats" | jget "['emitted']")
      a0=$(cpu_ms "${pid_of[$v]}"); r0=$(cpu_ms "$RX_PID")
      oha --no-tui --output-format json -z 2s -q 5000 -c 64 -m POST -H 'content-type: application/json' \
        -d '{"item":"book","qty":2}' "http://127.0.0.1:$port/hooked" > "$RESULTS.oha"
      p99=$(jget "['latencyPercentiles']['p99']" < "$RESULTS.oha")
      n=$(jget "['statusCodeDistribution'].get('200', 0)" < "$RESULTS.oha")
      rx1=$(rx_stat unique); e1=$(curl -s "http://127.0.0.1:$port/admin/stats" | jget "['emitted']")
      lag=0; [[ $v == 0sub ]] || lag=$(drain "$((rx0 + e1 - e0))")
      # p99 (s), app and receiver CPU (ms), events emitted and delivered
      # during the slice, the time until the rest were delivered (ms), and
      # the requests served.
      row[$i]="$p99 $(( $(cpu_ms "${pid_of[$v]}") - a0 )) $(( $(cpu_ms "$RX_PID") - r0 )) $((e1 - e0)) $((rx1 - rx0)) $lag $n"
    done
    rows+=("$(IFS=,; echo "${row[*]}")")
  done
  for v in "${FIXED_VARIANTS[@]}"; do kill -INT "${pid_of[$v]}"; wait "${pid_of[$v]}" 2>/dev/null || true; done
  # Per round: p99s, ratios to the round's baseline; the run's value: the median over rounds.
  python3 - "${FIXED_VARIANTS[*]}" "${rows[@]}" >> "$RESULTS" <<'PY2'
import statistics as st, sys
names = sys.argv[1].split()
rounds = [[list(map(float, cell.split())) for cell in row.split(',')] for row in sys.argv[2:]]
med = lambda xs: st.median(list(xs))
for i, n in enumerate(names):
    cells = [r[i] for r in rounds]
    print(f"fixed5k_{n}_p99_ms {med(c[0] * 1000 for c in cells)}")
    print(f"fixed5k_{n}_app_cpu_us {med(c[1] * 1000 / c[6] for c in cells)}")
    if i:
        print(f"fixed5k_{n}_p99_ratio {med(r[i][0] / r[0][0] for r in rounds)}")
        print(f"fixed5k_{n}_rx_cpu_us {med(c[2] * 1000 / c[4] for c in cells)}")
        print(f"fixed5k_{n}_backlog_s {max((c[3] - c[4]) / 5000 for c in cells)}")
        print(f"fixed5k_{n}_lag_ms {max(c[5] for c in cells)}")
PY2
  log "fixed rate: $(grep -c '^fixed5k_' "$RESULTS") values"
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

  # Fixed rate, 5,000 req/s: the endpoint's p99 with 0 subscribers (the
  # baseline) and with 1 subscriber on each delivery runtime. The four apps
  # run side by side (idle apps cost no CPU) and the load visits them in
  # turn, in 2-second slices, in an order that rotates and reverses each
  # round; each ratio is taken within a round, so that the machine's drift
  # weighs on both sides alike, and the run's ratio is their median.
  fixed_rate_rounds "$((DURATION * 3 / 5))"

  # (b) 1 and 10 subscribers, saturation.
  for subs in 1 10; do
    start_app "$subs"
    curl -s -XPOST "$RX/reset" >/dev/null
    rx0=$(cpu_ms "$RX_PID"); d0=$(threads_cpu_ms "$APP_PID" fastapihooks-de); w0=$(threads_cpu_ms "$APP_PID" tokio-rt-worker)
    rps=$(wrk_rps "$APP/hooked")
    delivered_during=$(rx_stat unique)
    rx1=$(cpu_ms "$RX_PID"); d1=$(threads_cpu_ms "$APP_PID" fastapihooks-de); w1=$(threads_cpu_ms "$APP_PID" tokio-rt-worker)
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
    # Where the two cores went while wrk ran (cores = CPU seconds per second).
    record "b${subs}_cores_app_requests" "$(python3 -c "print(($w1 - $w0) / 1000 / $DURATION)")"
    record "b${subs}_cores_app_delivery" "$(python3 -c "print(($d1 - $d0) / 1000 / $DURATION)")"
    record "b${subs}_cores_receiver" "$(python3 -c "print(($rx1 - $rx0) / 1000 / $DURATION)")"
    record "b${subs}_rx_cpu_us" "$(python3 -c "print(($rx1 - $rx0) * 1000 / max($delivered_during, 1))")"
    record "b${subs}_delivery_cpu_us" "$(python3 -c "print(($d1 - $d0) * 1000 / max($delivered_during, 1))")"
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
  rx0=$(cpu_ms "$RX_PID")
  cap=$(wrk_rps "$RX/s0" bench/lua/signed.lua)
  rx1=$(cpu_ms "$RX_PID")
  record d_receiver_rps "$cap"
  record d_cores_receiver "$(python3 -c "print(($rx1 - $rx0) / 1000 / $DURATION)")"
  record d_rx_cpu_us "$(python3 -c "print(($rx1 - $rx0) * 1000 / ($cap * $DURATION))")"
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
