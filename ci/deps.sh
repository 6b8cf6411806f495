#!/usr/bin/env bash
# System packages the tests need, from the distribution, installed only when
# absent (CI starts on a fresh Debian machine; a developer's machine usually
# has them already).  Idempotent; needs root only when it installs.
#
# PostgreSQL: the tests start their own servers (tests/common/pg.rs) from
# the newest /usr/lib/postgresql/<version>/bin, off PATH, so the `postgresql`
# package is installed when no such directory has initdb, pg_ctl and
# postgres.  It comes without Debian's "main" cluster: createcluster.d says
# so before the install, so nothing is created on port 5432, nor started
# where init scripts run.  (A main cluster that is already there, running
# or not, does not matter: the tests use their own ports, directories and
# sockets.)  pgbench comes with the same package (benches/pg/run.sh).
#
# Chromium and its driver (`chromium`, `chromium-driver`): the console's
# browser tests (tests/console_browser.rs) drive the distribution's
# Chromium; nothing is downloaded from elsewhere.
#
# For this script's own test (tests/ci_deps.rs): ZTBRIDGE_PG_ROOT replaces
# /usr/lib/postgresql, ZTBRIDGE_CHROMIUM_BIN replaces /usr/bin/chromium, and
# ZTBRIDGE_DEPS_DRY_RUN=1 prints the commands that would change the machine
# instead of running them.
set -euo pipefail

pg_root=${ZTBRIDGE_PG_ROOT:-/usr/lib/postgresql}
chromium_bin=${ZTBRIDGE_CHROMIUM_BIN:-/usr/bin/chromium}
dry=${ZTBRIDGE_DEPS_DRY_RUN:-}

run() {
    if [ -n "$dry" ]; then
        printf 'would run:'
        printf ' %q' "$@"
        printf '\n'
    else
        "$@"
    fi
}

# The newest <pg_root>/<version>/bin with the server programs, if any.
pg_server_bin() {
    local d found=""
    for d in "$pg_root"/*/bin; do
        [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ] && [ -x "$d/postgres" ] && found+="$d"$'\n'
    done
    [ -n "$found" ] || return 1
    printf '%s' "$found" | sort -V | tail -n 1
}

if [ -x "$chromium_bin" ]; then
    echo "deps: Chromium present: $chromium_bin"
else
    echo "deps: no $chromium_bin: installing chromium and chromium-driver"
    if [ -z "$dry" ] && [ "$(id -u)" != 0 ]; then
        echo "deps: run as root (apt-get install chromium chromium-driver), or install them yourself" >&2
        exit 1
    fi
    run apt-get update -qq
    run env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium chromium-driver
fi

if bin=$(pg_server_bin); then
    echo "deps: PostgreSQL server binaries present: $bin"
    exit 0
fi

echo "deps: no $pg_root/*/bin/initdb: installing postgresql"
if [ -z "$dry" ] && [ "$(id -u)" != 0 ]; then
    echo "deps: run as root (apt-get install postgresql), or install it yourself" >&2
    exit 1
fi
run mkdir -p /etc/postgresql-common/createcluster.d
run sh -c 'echo "create_main_cluster = false" > /etc/postgresql-common/createcluster.d/ztbridge-no-main-cluster.conf'
run apt-get update -qq
run env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql
if [ -z "$dry" ]; then
    bin=$(pg_server_bin) || { echo "deps: postgresql installed, but no $pg_root/*/bin/initdb" >&2; exit 1; }
    echo "deps: PostgreSQL server binaries installed: $bin"
fi
