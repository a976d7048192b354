#!/usr/bin/env bash
# Installs what the test suite needs on a fresh Debian machine (as root).
# Idempotent: skips what is already there. Called by scripts/test.sh when
# something is missing, and by .ci/run.
set -euo pipefail

need_apt=()
# --- Debian packages: each section adds what its tests need -----------------
# (servers for the SQL store and the Redis backend are added by their issues)
# SQL store: PostgreSQL (initdb, pg_ctl) and MariaDB (mariadb-install-db,
# mariadbd, the mariadb client); scripts/test.sh starts them in a temporary folder.
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || need_apt+=(postgresql)
{ command -v mariadbd || [[ -x /usr/sbin/mariadbd ]]; } >/dev/null 2>&1 || need_apt+=(mariadb-server)
command -v mariadb >/dev/null 2>&1 || need_apt+=(mariadb-client)
command -v python3 >/dev/null 2>&1 || need_apt+=(python3)
# ---------------------------------------------------------------------------

if ((${#need_apt[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "scripts/deps.sh: missing ${need_apt[*]}; run as root or install them" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
