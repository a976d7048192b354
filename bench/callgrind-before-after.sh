#!/usr/bin/env bash
# Instruction counts of two commits side by side (callgrind, repeatable):
# the request path of `#[hook]` (bench-overhead: main thread per request,
# the runtime's threads per event) and the cost per delivery
# (bench/callgrind-delivery.sh, 1 and 10 subscribers), for each commit, in
# rounds. docs/benchmarks.md quotes its output.
#
#   bench/callgrind-before-after.sh --before REV --after REV [--rounds 2] [--targets DIR]
#
# Each commit is built (release, fastapihooks-bench) in a worktree of its
# own under a temporary folder, with its own target dir under --targets
# (default /tmp/fh-cg-targets; kept, so a second run is incremental).
# Installs valgrind if missing. Progress on stderr; results on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."

BEFORE= AFTER= ROUNDS=2 TARGETS=/tmp/fh-cg-targets
while (($#)); do
  case $1 in
    --before) BEFORE=$2; shift 2 ;;
    --after) AFTER=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --targets) TARGETS=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
[[ -n $BEFORE && -n $AFTER ]] || { echo "usage: $0 --before REV --after REV [--rounds N] [--targets DIR]" >&2; exit 2; }
command -v valgrind >/dev/null || { apt-get update -qq && apt-get install -y -qq valgrind >/dev/null; }

WORK=$(mktemp -d)
cleanup() {
  for side in before after; do git worktree remove --force "$WORK/$side" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
log() { echo "[before-after] $*" >&2; }

declare -A BIN
for side in before after; do
  rev=$BEFORE; [[ $side == after ]] && rev=$AFTER
  git worktree add -q --detach "$WORK/$side" "$rev"
  log "building $side ($rev)"
  (cd "$WORK/$side" && CARGO_TARGET_DIR=$TARGETS/$side cargo build -q --release -p fastapihooks-bench)
  BIN[$side]=$TARGETS/$side/release
done

# Total instructions of the main thread and of all other threads.
count() { # bin variant n
  local d; d=$(mktemp -d)
  (cd "$d" && valgrind --tool=callgrind --separate-threads=yes "$1/bench-overhead" "$2" "$3" >/dev/null 2>&1)
  python3 - "$d" <<'PY'
import glob, sys
main = others = 0
for f in glob.glob(sys.argv[1] + "/callgrind.out.*"):
    # A file without totals (callgrind's process-level file, with no
    # thread's costs in it) counts for nothing.
    total = next((int(l.split()[1]) for l in open(f) if l.startswith(("summary:", "totals:"))), 0)
    if f.endswith("-01"): main += total
    else: others += total
print(main, others)
PY
  rm -rf "$d"
}

for ((round = 1; round <= ROUNDS; round++)); do
  for side in before after; do
    for variant in plain response all; do
      read -r m1 o1 < <(count "${BIN[$side]}" "$variant" 1000)
      read -r m3 o3 < <(count "${BIN[$side]}" "$variant" 3000)
      echo "round $round $side $variant: request path $(((m3 - m1) / 2000)) per request, runtime's threads $(((o3 - o1) / 2000)) per event"
    done
    for subs in 1 10; do
      if ((subs == 1)); then small=1000 large=3000; else small=300 large=900; fi
      per=$(bash bench/callgrind-delivery.sh --bin "${BIN[$side]}" --subscribers $subs --small $small --large $large 2>/dev/null | grep '^per delivery')
      echo "round $round $side $subs subscriber(s): $per"
    done
  done
done
