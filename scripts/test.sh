#!/usr/bin/env bash
# The whole test suite: installs what is missing, starts the servers the
# tests need on 127.0.0.1 (in a temporary folder, stopped on exit), then runs
# every test of the workspace with every feature.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/deps.sh

WORK=$(mktemp -d -t fastapihooks-test.XXXXXX)
cleanup() {
  # --- stop servers started below ---
  rm -rf "$WORK"
}
trap cleanup EXIT

# --- servers: each section starts one and exports its URL --------------------
# ---------------------------------------------------------------------------

cargo test --workspace --all-features --no-fail-fast "$@"
