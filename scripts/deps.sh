#!/usr/bin/env bash
# Installs what the test suite needs on a fresh Debian machine (as root).
# Idempotent: skips what is already there. Called by scripts/test.sh when
# something is missing, and by .ci/run.
set -euo pipefail

need_apt=()
# --- Debian packages: each section adds what its tests need -----------------
# signing interop tests (tests/it/signing_*.rs) run python3 with standardwebhooks
if ! command -v python3 >/dev/null 2>&1; then
  need_apt+=(python3 python3-pip)
elif ! python3 -c 'import standardwebhooks' >/dev/null 2>&1 && ! python3 -m pip --version >/dev/null 2>&1; then
  need_apt+=(python3-pip)
fi
# SQL store: PostgreSQL (initdb, pg_ctl) and MariaDB (mariadb-install-db,
# mariadbd, the mariadb client); scripts/test.sh starts them in a temporary folder.
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || need_apt+=(postgresql)
{ command -v mariadbd || [[ -x /usr/sbin/mariadbd ]]; } >/dev/null 2>&1 || need_apt+=(mariadb-server)
command -v mariadb >/dev/null 2>&1 || need_apt+=(mariadb-client)
command -v python3 >/dev/null 2>&1 || need_apt+=(python3)
# Redis Streams backend: redis-server (>= 6.2 for XAUTOCLAIM; Debian ships 7.x);
# scripts/test.sh starts a throw-away one, and some tests start their own.
{ command -v redis-server || [[ -x /usr/bin/redis-server ]]; } >/dev/null 2>&1 || need_apt+=(redis-server)
# HTTP keep-alive soak (tests/it/keepalive_soak.rs) and proxy tests
# (tests/it/tinyproxy_util.rs): each test starts a private nginx or tinyproxy
# of its own in a temporary folder; the system services are never used.
{ command -v nginx || [[ -x /usr/sbin/nginx ]]; } >/dev/null 2>&1 || need_apt+=(nginx-light)
{ command -v tinyproxy || [[ -x /usr/bin/tinyproxy ]] || [[ -x /usr/sbin/tinyproxy ]]; } >/dev/null 2>&1 || need_apt+=(tinyproxy)
# ---------------------------------------------------------------------------

if ((${#need_apt[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "scripts/deps.sh: missing ${need_apt[*]}; run as root or install them" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

# --- Python packages (after apt: pip may come from it) ------------------------
# The signing interop tests verify deliveries with the Standard Webhooks
# reference package `standardwebhooks`, which no one here wrote.
if ! python3 -c 'import standardwebhooks' >/dev/null 2>&1; then
  python3 -m pip install -q --disable-pip-version-check standardwebhooks 2>/dev/null \
    || python3 -m pip install -q --disable-pip-version-check --break-system-packages standardwebhooks
fi
