#!/usr/bin/env bash
# Two builds of the bench programs side by side, in one run: typically the
# delivery client before and after a change. All traffic on 127.0.0.1,
# every load bounded in time or count.
#
#   bench/compare.sh --old DIR --new DIR [--rounds 3] [--duration 10] [--fixed 5] [--raw FILE]
#
# DIR holds release binaries bench-app and bench-receiver (e.g.
# CARGO_TARGET_DIR=/tmp/t cargo build --release -p fastapihooks-bench, then
# /tmp/t/release). Each round starts ONE receiver (the --new DIR's
# bench-receiver) for everything in it, then runs each measurement four
# times, on a fresh app each time, in the order old, new, new, old (odd
# rounds) or new, old, old, new (even rounds), so that a drift in the
# machine's speed weighs on both alike:
#
#   b1, b10  1 and 10 subscribers, wrk saturating POST /hooked for --duration s:
#            deliveries/s during the load, app CPU per delivery (whole process,
#            and the delivery threads `fastapihooks-de*`), request throughput;
#   c        a burst of 20,000 hooked requests (oha -n 20000 -c 64): time until
#            all are delivered, peak RSS;
#   fixed    5,000 req/s for --fixed s with 1 subscriber (after a 1 s warm-up):
#            the endpoint's p50/p99 (oha -q 5000), app CPU per request.
#
# A variant's value in a round is the mean of its two runs; its ratio is
# new / old within the round. The Markdown table (stdout) gives, per
# metric, the old and new medians over the rounds and the median of the
# per-round ratios [min .. max]. Progress goes to stderr; --raw FILE keeps
# the raw `round variant metric value` lines. Needs wrk and oha; installs
# them if missing. Ports: receiver 19400..19409, app 19420.
set -euo pipefail

ROUNDS=3
DURATION=10
FIXED=5
OLD=
NEW=
RAW=
while (($#)); do
  case $1 in
    --old) OLD=$(cd "$2" && pwd); shift 2 ;;
    --new) NEW=$(cd "$2" && pwd); shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --fixed) FIXED=$2; shift 2 ;;
    --raw) RAW=$(realpath -m -- "$2"); shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
[[ -n $OLD && -n $NEW ]] || { echo "usage: $0 --old DIR --new DIR [--rounds N] [--duration S] [--fixed S] [--raw FILE]" >&2; exit 2; }
for d in "$OLD" "$NEW"; do
  for b in bench-app bench-receiver; do [[ -x $d/$b ]] || { echo "no $d/$b" >&2; exit 2; }; done
done
cd "$(dirname "$0")/.."

command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
export PATH="$HOME/.cargo/bin:$PATH"
command -v oha >/dev/null || cargo install --locked oha >&2

SECRET=bench-secret
RX_PORT=19400
APP_PORT=19420
RX=http://127.0.0.1:$RX_PORT
APP=http://127.0.0.1:$APP_PORT
LUA=bench/lua/order.lua
BIN=$NEW
PIDS=()
cleanup() { for p in "${PIDS[@]:-}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
log() { echo "[compare] $*" >&2; }
. bench/lib.sh

RESULTS=$(mktemp)
ROUND=0
VARIANT=
record() { echo "$ROUND $VARIANT $1 $2" >> "$RESULTS"; log "round $ROUND $VARIANT: $1 = $2"; }
py() { python3 -c "print($1)"; }
# The app's outstanding work: deliveries accepted (`emitted` x subscribers)
# that are neither at the receiver nor reported to on_failure (an event
# refused at intake is counted in `failed` once, and not in `emitted`).
resolved() { # -> deliveries delivered or reported since the receiver's reset
  local rx app
  rx=$(curl -s "$RX/stats"); app=$(curl -s "$APP/admin/stats")
  python3 -c "import json,sys; r=json.loads(sys.argv[1]); a=json.loads(sys.argv[2]); print(r['unique'] + a['failed'] - a['queue_full'])" "$rx" "$app"
}
# Waits until `want` deliveries are resolved, or no progress for 10 s.
# Prints the milliseconds waited.
settle() {
  local want=$1 start now got last=-1 still=0
  start=$(date +%s%3N)
  while :; do
    got=$(resolved)
    ((got >= want)) && break
    if ((got == last)); then still=$((still + 1)); ((still > 100)) && break; else still=0; fi
    last=$got; sleep 0.1
  done
  now=$(date +%s%3N); echo $((now - start))
}
oha_post() { # oha args... (url last); bounded by count or time, and by `timeout`
  timeout 300 oha --no-tui --output-format json -m POST -H 'content-type: application/json' -d '{"item":"book","qty":2}' "$@"
}

# (b) `subs` subscribers, wrk saturating the hooked endpoint.
saturation() { # subs
  local subs=$1 a0 a1 d0 d1 w0 w1 r0 r1 rps n emitted want lag got failed refused
  start_app "$subs"
  curl -s -XPOST "$RX/reset" >/dev/null
  a0=$(cpu_ms "$APP_PID"); d0=$(threads_cpu_ms "$APP_PID" fastapihooks-de); w0=$(threads_cpu_ms "$APP_PID" tokio-rt-worker); r0=$(cpu_ms "$RX_PID")
  rps=$(wrk_rps "$APP/hooked")
  n=$(rx_stat unique)
  a1=$(cpu_ms "$APP_PID"); d1=$(threads_cpu_ms "$APP_PID" fastapihooks-de); w1=$(threads_cpu_ms "$APP_PID" tokio-rt-worker); r1=$(cpu_ms "$RX_PID")
  emitted=$(app_stat emitted); want=$((emitted * subs))
  lag=$(settle "$want")
  got=$(rx_stat unique); refused=$(app_stat queue_full); failed=$(( $(app_stat failed) - refused ))
  local p=b$subs
  record ${p}_deliveries_per_s "$(py "$n / $DURATION")"
  record ${p}_rps "$rps"
  record ${p}_app_cpu_us "$(py "($a1 - $a0) * 1000 / max($n, 1)")"
  record ${p}_delivery_cpu_us "$(py "($d1 - $d0) * 1000 / max($n, 1)")"
  record ${p}_request_cpu_us "$(py "($w1 - $w0) * 1000 / max($rps * $DURATION, 1)")"
  record ${p}_rx_cpu_us "$(py "($r1 - $r0) * 1000 / max($n, 1)")"
  record ${p}_cores_delivery "$(py "($d1 - $d0) / 1000 / $DURATION")"
  record ${p}_refused_at_intake "$refused"
  record ${p}_reported "$failed"
  record ${p}_lag_ms "$lag"
  record ${p}_lost "$((want - got - failed))"
  record ${p}_bad_signatures "$(rx_stat bad_signatures)"
  stop_app
}

# (c) 20,000 hooked requests at once: time until all are delivered, peak RSS.
burst() {
  local t0 t1 a0 a1 d0 d1 got
  start_app 1
  curl -s -XPOST "$RX/reset" >/dev/null
  a0=$(cpu_ms "$APP_PID"); d0=$(threads_cpu_ms "$APP_PID" fastapihooks-de)
  t0=$(date +%s%3N)
  oha_post -n 20000 -c 64 "$APP/hooked" >/dev/null
  settle 20000 >/dev/null
  t1=$(date +%s%3N)
  a1=$(cpu_ms "$APP_PID"); d1=$(threads_cpu_ms "$APP_PID" fastapihooks-de)
  got=$(rx_stat unique)
  record c_burst_ms "$((t1 - t0))"
  record c_delivered "$got"
  record c_peak_rss_mb "$(py "$(app_stat peak_rss_kb) / 1024")"
  record c_app_cpu_us "$(py "($a1 - $a0) * 1000 / 20000")"
  record c_delivery_cpu_us "$(py "($d1 - $d0) * 1000 / max($got, 1)")"
  stop_app
}

# 5,000 req/s for FIXED s, 1 subscriber, after a 1-second warm-up.
fixed() {
  local e0 e1 g0 g1 a0 a1 d0 d1 lag out n
  start_app 1
  curl -s -XPOST "$RX/reset" >/dev/null
  oha_post -z 1s -q 5000 -c 64 "$APP/hooked" >/dev/null
  settle "$(app_stat emitted)" >/dev/null
  e0=$(app_stat emitted); g0=$(rx_stat unique)
  a0=$(cpu_ms "$APP_PID"); d0=$(threads_cpu_ms "$APP_PID" fastapihooks-de)
  out=$(oha_post -z "${FIXED}s" -q 5000 -c 64 "$APP/hooked")
  e1=$(app_stat emitted); g1=$(rx_stat unique)
  lag=$(settle "$e1")
  a1=$(cpu_ms "$APP_PID"); d1=$(threads_cpu_ms "$APP_PID" fastapihooks-de)
  n=$(jget "['statusCodeDistribution'].get('200', 0)" <<< "$out")
  record f_p50_ms "$(jget "['latencyPercentiles']['p50'] * 1000" <<< "$out")"
  record f_p99_ms "$(jget "['latencyPercentiles']['p99'] * 1000" <<< "$out")"
  record f_rps "$(py "$n / $FIXED")"
  record f_app_cpu_us "$(py "($a1 - $a0) * 1000 / max($n, 1)")"
  record f_delivery_cpu_us "$(py "($d1 - $d0) * 1000 / max($((e1 - e0)), 1)")"
  record f_backlog_at_stop "$((e1 - e0 - (g1 - g0)))"
  record f_lag_ms "$lag"
  stop_app
}

declare -A DIR_OF=([old]=$OLD [new]=$NEW)
log "old: $OLD; new: $NEW; receiver: $NEW/bench-receiver; $ROUNDS rounds, --duration $DURATION, --fixed $FIXED"
for ((ROUND = 1; ROUND <= ROUNDS; ROUND++)); do
  if ((ROUND % 2)); then ORDER=(old new new old); else ORDER=(new old old new); fi
  log "round $ROUND of $ROUNDS: ${ORDER[*]}"
  BIN=$NEW; start_receiver
  for phase in "saturation 1" "saturation 10" burst fixed; do
    for VARIANT in "${ORDER[@]}"; do
      BIN=${DIR_OF[$VARIANT]}
      $phase
    done
  done
  BIN=$NEW; stop_receiver
done

[[ -z $RAW ]] || cp "$RESULTS" "$RAW"
python3 - "$RESULTS" "$ROUNDS" "$DURATION" "$FIXED" "$OLD" "$NEW" <<'PY'
import statistics as st, sys
from collections import defaultdict
path, rounds, duration, fixed, old_dir, new_dir = sys.argv[1:]
runs = defaultdict(list)  # (metric, round, variant) -> the two runs' values
for line in open(path):
    r, v, m, x = line.split()
    runs[(m, int(r), v)].append(float(x))
# key, label, kind: "higher" or "lower" (is better), "info" (a ratio, neither
# better), "max" or "min" (a count: each variant's worst run, no ratio)
ROWS = [
    ("b1_deliveries_per_s", "(b1) 1 subscriber, saturation: deliveries/s during the load", "higher"),
    ("b1_rps", "(b1) endpoint req/s", "higher"),
    ("b1_app_cpu_us", "(b1) app CPU per delivery, whole process (µs)", "lower"),
    ("b1_delivery_cpu_us", "(b1) delivery threads' CPU per delivery (µs)", "lower"),
    ("b1_request_cpu_us", "(b1) request threads' CPU per request (µs)", "lower"),
    ("b1_rx_cpu_us", "(b1) receiver CPU per delivery (µs)", "lower"),
    ("b1_cores_delivery", "(b1) cores used by the delivery threads", "info"),
    ("b1_reported", "(b1) deliveries reported (endpoint backlog full)", "max"),
    ("b1_lag_ms", "(b1) after the load: until all resolved (ms)", "lower"),
    ("b1_lost", "(b1) lost", "max"),
    ("b1_bad_signatures", "(b1) bad signatures", "max"),
    ("b10_deliveries_per_s", "(b10) 10 subscribers, saturation: deliveries/s during the load", "higher"),
    ("b10_rps", "(b10) endpoint req/s", "higher"),
    ("b10_app_cpu_us", "(b10) app CPU per delivery, whole process (µs)", "lower"),
    ("b10_delivery_cpu_us", "(b10) delivery threads' CPU per delivery (µs)", "lower"),
    ("b10_request_cpu_us", "(b10) request threads' CPU per request (µs)", "lower"),
    ("b10_rx_cpu_us", "(b10) receiver CPU per delivery (µs)", "lower"),
    ("b10_cores_delivery", "(b10) cores used by the delivery threads", "info"),
    ("b10_refused_at_intake", "(b10) events refused at intake (queue full)", "max"),
    ("b10_lag_ms", "(b10) after the load: until all resolved (ms)", "lower"),
    ("b10_lost", "(b10) lost", "max"),
    ("b10_bad_signatures", "(b10) bad signatures", "max"),
    ("c_burst_ms", "(c) 20,000-request burst: until all delivered (ms)", "lower"),
    ("c_delivered", "(c) burst: delivered", "min"),
    ("c_peak_rss_mb", "(c) burst: peak RSS (MB)", "lower"),
    ("c_app_cpu_us", "(c) burst: app CPU per request + delivery (µs)", "lower"),
    ("c_delivery_cpu_us", "(c) burst: delivery threads' CPU per delivery (µs)", "lower"),
    ("f_p50_ms", "5,000 req/s, 1 subscriber: endpoint p50 (ms)", "lower"),
    ("f_p99_ms", "5,000 req/s, 1 subscriber: endpoint p99 (ms)", "lower"),
    ("f_rps", "5,000 req/s: requests served per s", "info"),
    ("f_app_cpu_us", "5,000 req/s: app CPU per request, delivery included (µs)", "lower"),
    ("f_delivery_cpu_us", "5,000 req/s: delivery threads' CPU per delivery (µs)", "lower"),
    ("f_backlog_at_stop", "5,000 req/s: backlog when the load stops (deliveries)", "max"),
    ("f_lag_ms", "5,000 req/s: after the load: until all delivered (ms)", "lower"),
]

def fmt(v):
    return f"{v:,.3f}" if abs(v) < 10 else f"{v:,.0f}"

def value(m, r, v):  # a variant's value in a round: the mean of its runs
    xs = runs.get((m, r, v))
    return st.mean(xs) if xs else None

R = range(1, int(rounds) + 1)
print(f"old: `{old_dir}`; new: `{new_dir}`.")
print(f"Rounds: {rounds} (each old, new, new, old or new, old, old, new), saturation {duration} s, fixed rate {fixed} s.")
print("Per round a variant's value is the mean of its two runs; ratio = new / old within the round.\n")
print("| measurement | better | old (median) | new (median) | new / old: median [min .. max] |")
print("|---|---|---|---|---|")
for key, label, kind in ROWS:
    olds = [x for r in R if (x := value(key, r, "old")) is not None]
    news = [x for r in R if (x := value(key, r, "new")) is not None]
    if not olds or not news:
        continue
    ratio, better = "", kind if kind in ("higher", "lower") else ""
    if kind in ("max", "min"):
        worst = max if kind == "max" else min
        olds = [worst(x for r in R for x in runs.get((key, r, "old"), []))]
        news = [worst(x for r in R for x in runs.get((key, r, "new"), []))]
        label += " (worst run)"
    else:
        rs = [value(key, r, "new") / value(key, r, "old") for r in R
              if value(key, r, "old") and value(key, r, "new") is not None]
        if rs:
            ratio = f"{st.median(rs):.3f}" + (f" [{min(rs):.3f} .. {max(rs):.3f}]" if len(rs) > 1 else "")
    print(f"| {label} | {better} | {fmt(st.median(olds))} | {fmt(st.median(news))} | {ratio} |")
PY
rm -f "$RESULTS"
