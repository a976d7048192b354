#!/usr/bin/env bash
# The app's publish rate to Redis Streams, two builds side by side in one
# run: typically before and after a change to the pipeline. Only the given
# Redis on 127.0.0.1 is talked to; every run is bounded (bench-publish
# gives up after --limit seconds).
#
#   bench/publish.sh --old DIR --new DIR [--redis redis://127.0.0.1:16383/0] [--rounds 3] [--events 200000]
#
# DIR holds a release bench-publish (CARGO_TARGET_DIR=/tmp/t cargo build
# --release -p fastapihooks-bench --features redis --bin bench-publish, then
# /tmp/t/release). Run Redis without persistence for it (--save ''
# --appendonly no). Each round runs old, new, new, old (odd rounds) or new,
# old, old, new (even rounds); a variant's value in a round is the mean of
# its two runs, its ratio new / old within the round. Prints each run's
# JSON line to stderr and a Markdown table to stdout: the medians of the
# rounds and the median of the per-round ratios [min .. max].
set -euo pipefail

ROUNDS=3
EVENTS=200000
REDIS=redis://127.0.0.1:16383/0
OLD=
NEW=
while (($#)); do
  case $1 in
    --old) OLD=$(cd "$2" && pwd); shift 2 ;;
    --new) NEW=$(cd "$2" && pwd); shift 2 ;;
    --redis) REDIS=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --events) EVENTS=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
[[ -x $OLD/bench-publish && -x $NEW/bench-publish ]] || { echo "--old and --new must hold bench-publish" >&2; exit 2; }
[[ $REDIS == redis://127.0.0.1:* ]] || { echo "--redis must be on 127.0.0.1" >&2; exit 2; }

RAW=$(mktemp)
trap 'rm -f "$RAW"' EXIT
run() { # round variant
  local dir=$OLD line
  [[ $2 == new ]] && dir=$NEW
  line=$("$dir/bench-publish" --redis "$REDIS" --events "$EVENTS" --limit 300)
  echo "round $1 $2: $line" >&2
  python3 -c "import json,sys; d=json.loads(sys.argv[1]); print($1, '$2', d['events_per_s'], d['in_stream'] == d['events'] and d['failed'] == 0)" "$line" >>"$RAW"
}
for ((r = 1; r <= ROUNDS; r++)); do
  if ((r % 2)); then order=(old new new old); else order=(new old old new); fi
  for v in "${order[@]}"; do run "$r" "$v"; done
done
python3 - "$RAW" "$EVENTS" <<'PY'
import statistics, sys
from collections import defaultdict
runs = defaultdict(list)
complete = True
for line in open(sys.argv[1]):
    r, v, rate, ok = line.split()
    runs[(int(r), v)].append(float(rate))
    complete &= ok == "True"
rounds = sorted({r for r, _ in runs})
mean = {k: statistics.mean(v) for k, v in runs.items()}
old = [mean[(r, "old")] for r in rounds]
new = [mean[(r, "new")] for r in rounds]
ratios = [n / o for n, o in zip(new, old)]
print(f"Rounds: {len(rounds)}, {sys.argv[2]} events a run, every event in the stream and none failed: {'yes' if complete else 'NO'}.\n")
print("| measurement | old | new | new / old |")
print("|---|---|---|---|")
print(f"| publish rate, events/s (median of rounds) | {statistics.median(old):,.0f} | {statistics.median(new):,.0f} | "
      f"{statistics.median(ratios):.2f} [{min(ratios):.2f} .. {max(ratios):.2f}] |")
print(f"| publish rate, events/s [min .. max of rounds] | {min(old):,.0f} .. {max(old):,.0f} | {min(new):,.0f} .. {max(new):,.0f} | |")
PY
