#!/usr/bin/env bash
# Instructions per delivery (callgrind), as docs/benchmarks.md ("What limits
# throughput", 5. Per-delivery bookkeeping) describes: bench-app under
# `valgrind --tool=callgrind --separate-threads=yes` delivers one burst
# (`POST /admin/burst?n=`) to a native bench-receiver, at two sizes; per
# delivery = (instructions at the larger burst - at the smaller) / (the
# difference in deliveries), summed over the delivery threads (which also
# run the pipeline). Also the share of it in functions whose name matches
# sha256 (callgrind_annotate, self cost).
#
#   bench/callgrind-delivery.sh --bin DIR --subscribers N --small N1 --large N2 [--port 19300] [--keep DIR]
#
# DIR holds release binaries bench-app and bench-receiver. The receiver
# listens on 127.0.0.1, ports PORT.., the app on PORT + 20. --keep DIR keeps
# the callgrind files there. The doc's runs: --subscribers 1 --small 1000
# --large 3000, and --subscribers 10 --small 300 --large 900. Installs
# valgrind if missing. Progress on stderr; the result on stdout.
set -euo pipefail

BIN=
SUBS=1
SMALL=1000
LARGE=3000
PORT=19300
KEEP=
while (($#)); do
  case $1 in
    --bin) BIN=$(cd "$2" && pwd); shift 2 ;;
    --subscribers) SUBS=$2; shift 2 ;;
    --small) SMALL=$2; shift 2 ;;
    --large) LARGE=$2; shift 2 ;;
    --port) PORT=$2; shift 2 ;;
    --keep) mkdir -p "$2"; KEEP=$(cd "$2" && pwd); shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
[[ -n $BIN ]] || { echo "usage: $0 --bin DIR --subscribers N --small N1 --large N2 [--port P] [--keep DIR]" >&2; exit 2; }
for b in bench-app bench-receiver; do [[ -x $BIN/$b ]] || { echo "no $BIN/$b" >&2; exit 2; }; done
((LARGE > SMALL)) || { echo "--large must exceed --small" >&2; exit 2; }
command -v valgrind >/dev/null || { apt-get update -qq && apt-get install -y -qq valgrind >/dev/null; }

RX=http://127.0.0.1:$PORT
APP_PORT=$((PORT + 20))
APP=http://127.0.0.1:$APP_PORT
SECRET=s
OUT=${KEEP:-$(mktemp -d)}
PIDS=()
cleanup() {
  for p in "${PIDS[@]:-}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [[ -n $KEEP ]] || rm -rf "$OUT"
}
trap cleanup EXIT
log() { echo "[callgrind] $*" >&2; }
jget() { python3 -c "import json,sys; d=json.load(sys.stdin); print(d$1)"; }
wait_url() { # url seconds
  local i
  for ((i = 0; i < $2 * 10; i++)); do curl -s -o /dev/null "$1" && return 0; sleep 0.1; done
  echo "no server at $1" >&2; exit 1
}

# One burst of n: sets DELIVERED, IR (the delivery threads' instructions),
# SHA (theirs in sha256 functions) and THREADS (how many).
one_burst() {
  local n=$1 rx_pid app_pid got last=-1 still=0 f files=() x
  "$BIN/bench-receiver" --port "$PORT" --ports $((SUBS > 10 ? SUBS : 10)) --secret $SECRET & rx_pid=$!; PIDS+=("$rx_pid")
  wait_url "$RX/stats" 10
  valgrind --tool=callgrind --separate-threads=yes --callgrind-out-file="$OUT/cg.n$n.%p" \
    "$BIN/bench-app" --port "$APP_PORT" --receiver "$RX" --subscribers "$SUBS" --secret $SECRET \
    2> "$OUT/valgrind.n$n.log" & app_pid=$!; PIDS+=("$app_pid")
  wait_url "$APP/admin/stats" 120
  log "n=$n: $(curl -s -XPOST "$APP/admin/burst?n=$n")"
  # Until the receiver has them all, or no progress for 60 s.
  while :; do
    got=$(curl -s "$RX/stats" | jget "['unique']")
    ((got >= n * SUBS)) && break
    if ((got == last)); then still=$((still + 1)); ((still > 600)) && break; else still=0; fi
    last=$got; sleep 0.1
  done
  ((got == n * SUBS)) || log "n=$n: the receiver counts $got deliveries, not $((n * SUBS))"
  ((got > 0)) || { echo "nothing delivered" >&2; exit 1; }
  kill -INT "$app_pid"; wait "$app_pid" || true
  kill "$rx_pid"; wait "$rx_pid" 2>/dev/null || true
  # The delivery threads: the ones that ran DeliveryRuntime::start's thread closure.
  for f in "$OUT"/cg.n"$n".*-*; do
    if grep -qF 'DeliveryRuntime::start::{{closure}}' "$f"; then files+=("$f"); fi
  done
  ((${#files[@]})) || { echo "no delivery thread found in $OUT/cg.n$n.*" >&2; exit 1; }
  IR=0 SHA=0 THREADS=${#files[@]} DELIVERED=$got
  for f in "${files[@]}"; do
    x=$(awk '/^(summary|totals):/ {print $2; exit}' "$f"); IR=$((IR + x))
    x=$(callgrind_annotate --threshold=100 "$f" 2>/dev/null |
      awk 'tolower($0) ~ /sha256/ && $1 ~ /^[0-9,]+$/ {gsub(",", "", $1); s += $1} END {print s + 0}')
    SHA=$((SHA + x))
  done
}

log "bin $BIN, $SUBS subscriber(s), bursts of $SMALL and $LARGE"
one_burst "$SMALL"; d1=$DELIVERED i1=$IR s1=$SHA t1=$THREADS
one_burst "$LARGE"; d2=$DELIVERED i2=$IR s2=$SHA t2=$THREADS
echo "bin=$BIN subscribers=$SUBS"
echo "burst n=$SMALL: deliveries=$d1 delivery_thread_instructions=$i1 sha256=$s1 threads=$t1"
echo "burst n=$LARGE: deliveries=$d2 delivery_thread_instructions=$i2 sha256=$s2 threads=$t2"
python3 - "$d1" "$i1" "$s1" "$d2" "$i2" "$s2" <<'PY'
import sys
d1, i1, s1, d2, i2, s2 = map(int, sys.argv[1:])
per = (i2 - i1) / (d2 - d1)
sha = (s2 - s1) / (d2 - d1)
print(f"per delivery: {per:,.0f} instructions ({sha:,.0f} of them SHA-256, {sha / per:.0%}; the rest {per - sha:,.0f})")
PY
