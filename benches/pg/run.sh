#!/usr/bin/env bash
# The PostgreSQL ceiling of issue 15, on this machine, with a server of its
# own started the way the test harness does (tests/common/pg.rs): a temp dir
# owned by postgres, initdb, pg_ctl -w on a free 127.0.0.1 port, SCRAM over
# TCP.  Server settings are PostgreSQL's defaults: fsync on,
# synchronous_commit on (every commit is flushed before it returns).
#
#   (a) durable single-row inserts/s             (insert.sql)
#   (b) events/s of the naive pattern: one insert to admit, one SKIP LOCKED
#       claim, one completion, per event           (naive.sql)
#   (c) the sketched store (docs/notes/postgres/schema.sql): admit with
#       order and dedupe; claims and completions in batches of 32
#                                                 (sketch_*.sql)
#   (f) the same with admits 8 per statement (group admission)
#   (c0, c1, c8) its admits alone: a transaction of 4 round trips, one
#       statement, 8 events per statement (group admission)
#   (d, e) the 4-round-trip admit with NOTIFY inside the transaction, or
#       in a transaction of its own afterwards
#
# Usage: benches/pg/run.sh
#   PGBENCH_CLIENTS (16), PGBENCH_THREADS (2), PGBENCH_SECONDS (20)
#   ZTBRIDGE_PG_BIN: the server binaries (default: newest
#   /usr/lib/postgresql/*/bin); TMPDIR: where the cluster goes (a real disk,
#   not tmpfs, or the figures mean nothing).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
clients=${PGBENCH_CLIENTS:-16}
threads=${PGBENCH_THREADS:-2}
secs=${PGBENCH_SECONDS:-20}
bin=${ZTBRIDGE_PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)}
[ -x "$bin/initdb" ] && [ -x "$bin/pgbench" ] || {
    echo "no PostgreSQL server binaries (bash ci/deps.sh installs them)" >&2; exit 1; }

tmp=${TMPDIR:-/tmp}
dir=$(mktemp -d "$tmp/ztbridge-pgbench-XXXXXX")
as_pg=()
if [ "$(id -u)" = 0 ]; then
    chown postgres:postgres "$dir"
    as_pg=(runuser -u postgres --)
fi
chmod 700 "$dir"
cleanup() {
    if [ -f "$dir/data/postmaster.pid" ]; then
        (cd "$dir" && "${as_pg[@]}" "$bin/pg_ctl" stop -w -m immediate -D "$dir/data" >/dev/null 2>&1) || true
    fi
    rm -rf "$dir"
}
trap cleanup EXIT
cd "$dir"   # the postgres user may not enter the caller's directory

password=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
printf '%s\n' "$password" > "$dir/pwfile"
[ ${#as_pg[@]} = 0 ] || chown postgres "$dir/pwfile"
"${as_pg[@]}" "$bin/initdb" -D "$dir/data" -U postgres --auth-local=trust \
    --auth-host=scram-sha-256 -E UTF8 --no-locale --no-sync --pwfile="$dir/pwfile" >/dev/null
rm -f "$dir/pwfile"
cat >> "$dir/data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
unix_socket_directories = '$dir'
max_connections = 100
CONF

# A port below the ephemeral range, reserved with flock like the harness
# does; another one if the server still meets "Address already in use".
ports=$tmp/ztbridge-pg-ports
mkdir -p "$ports" && chmod 1777 "$ports" 2>/dev/null || true
started=
for _ in $(seq 20); do
    port=$((20000 + RANDOM % 12000))
    exec {lockfd}>"$ports/$port.lock"
    if ! flock -n "$lockfd" || (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        exec {lockfd}>&-; continue
    fi
    if "${as_pg[@]}" "$bin/pg_ctl" start -w -t 120 -D "$dir/data" -l "$dir/server.log" -o "-p $port" >/dev/null; then
        started=1; break
    fi
    exec {lockfd}>&-
    grep -q "Address already in use" "$dir/server.log" || { cat "$dir/server.log" >&2; exit 1; }
done
[ -n "$started" ] || { echo "no free port" >&2; exit 1; }

export PGHOST=127.0.0.1 PGPORT=$port PGUSER=postgres PGDATABASE=postgres PGPASSWORD=$password
export PGOPTIONS='-c client_min_messages=warning'
psql -X -q -v ON_ERROR_STOP=1 -f "$here/schema.sql"
psql -X -q -v ON_ERROR_STOP=1 -f "$here/../../docs/notes/postgres/schema.sql"

echo "PostgreSQL $("$bin/postgres" --version | awk '{print $3}'), $(nproc) cores, fsync=$(psql -XAtc 'SHOW fsync'), synchronous_commit=$(psql -XAtc 'SHOW synchronous_commit'), $clients clients, $threads threads, ${secs}s each, on $(df --output=source,fstype "$dir" | tail -n 1 | tr -s ' ')"
results=()
# label, events per transaction of the first script, then pgbench's script
# options.  events/s: transactions/s of the first script times that.
bench() {
    local label=$1 per=$2; shift 2
    psql -X -q -c CHECKPOINT
    local out
    out=$(pgbench -n -M prepared -c "$clients" -j "$threads" -T "$secs" "$@" 2>&1) || { echo "$out" >&2; exit 1; }
    local tps lat
    if [ $# -gt 2 ]; then   # several scripts: the first one's own rate
        tps=$(echo "$out" | awk '/^SQL script 1:/ {s=1} s && /tps = / {gsub(/[(),]/, ""); for (i=1;i<=NF;i++) if ($i=="tps") {printf "%d", $(i+2); exit}}')
    else
        tps=$(echo "$out" | awk '/^tps = / {printf "%d", $3}')
    fi
    lat=$(echo "$out" | awk '/^latency average/ {print $4; exit}')
    results+=("$(printf '%-46s %7s events/s  (latency avg %s ms)' "$label" "$((tps * per))" "$lat")")
    echo "${results[-1]}"
}
bench "(a) durable single-row inserts" 1 -f "$here/insert.sql"
bench "(b) naive: insert, claim 1, complete 1" 1 -f "$here/naive.sql"
# Admits and batch claims mixed 16:1 over the same clients; the backlog
# left at the end shows whether the claims kept up.
bench "(c) sketch: admit, claim/complete x32" 1 -f "$here/sketch_admit1.sql@16" -f "$here/sketch_claim.sql@1"
backlog=$(psql -XAtc "SELECT count(*) FROM deliveries WHERE state <> 'delivered'")
results+=("    (c) left pending at the end: $backlog")
echo "${results[-1]}"
# The same with group admission: 8 webhooks per admit statement, claims
# mixed 4:1 (each claims up to 32).
psql -X -q -c "TRUNCATE deliveries, events, alerts CASCADE"
bench "(f) sketch: admit x8, claim/complete x32" 8 -f "$here/sketch_admit8.sql@4" -f "$here/sketch_claim.sql@1"
backlog=$(psql -XAtc "SELECT count(*) FROM deliveries WHERE state <> 'delivered'")
results+=("    (f) left pending at the end: $backlog")
echo "${results[-1]}"
# Waking the other nodes' schedulers: NOTIFY inside the admit transaction
# (d), or in a transaction of its own after it, with synchronous_commit off
# (e).  Admits alone.
sed "s/^COMMIT;/SELECT pg_notify('ztbridge_due', '');\nCOMMIT;/" "$here/sketch_admit.sql" > "$dir/admit_notify_in_tx.sql"
{ cat "$here/sketch_admit.sql"
  printf '%s\n' 'BEGIN;' 'SET LOCAL synchronous_commit = off;' "SELECT pg_notify('ztbridge_due', '');" 'COMMIT;'
} > "$dir/admit_notify_after.sql"
bench "(c0) sketch: admit alone, 4 round trips" 1 -f "$here/sketch_admit.sql"
bench "(c1) sketch: admit alone, 1 statement" 1 -f "$here/sketch_admit1.sql"
bench "(c8) sketch: admits 8 per statement" 8 -f "$here/sketch_admit8.sql"
bench "(d) sketch: admit with NOTIFY in its tx" 1 -f "$dir/admit_notify_in_tx.sql"
bench "(e) sketch: admit, then NOTIFY (async commit)" 1 -f "$dir/admit_notify_after.sql"
echo "== summary"
printf '%s\n' "${results[@]}"
