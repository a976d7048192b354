# Helpers shared by bench/load.sh and bench/compare.sh; sourced, not run.
# They use the caller's globals: BIN (the directory of bench-app and
# bench-receiver), RX_PORT, APP_PORT, RX, APP, SECRET, DURATION, LUA, and
# the array PIDS (every process started, for the caller's cleanup).

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
# The same, of the process's threads whose name starts with $2.
threads_cpu_ms() {
  local t sum=0
  for t in /proc/"$1"/task/*; do
    [[ $(cat "$t/comm" 2>/dev/null) == "$2"* ]] && sum=$((sum + $(awk '{print ($14 + $15) * 10}' "$t/stat" 2>/dev/null || echo 0)))
  done
  echo "$sum"
}
