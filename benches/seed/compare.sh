#!/usr/bin/env bash
# The seed design, ztbridge and the accept-and-discard limit under the same
# load, in one run on this machine: wrk (plain JSON webhooks, distinct event
# IDs) against
#   * nginx answering 202 itself (the limit: accept and discard);
#   * the seed: benches/seed/seed.py (Flask + requests, one event at a time),
#     forwarding each webhook to nginx playing an instant PagerDuty;
#   * the relay floor: examples/relay_floor.rs (axum in, 202, reqwest out to
#     the same nginx; no store, no sandbox, no parse): what one inbound and
#     one outbound HTTP exchange per event cost on this machine, the ceiling
#     of any relay built on these crates;
#   * the pipeline floor: examples/pipeline_floor.rs (the relay floor plus
#     the guarantees ztbridge keeps: one group-committed SQLite insert with
#     fsync before the 202, a fresh sandbox running the PagerDuty transform,
#     the row marked delivered; no routes, retries, metrics or logs): the
#     ceiling of that design on this machine;
#   * ztbridge serve (release build; default config but a large max_pending
#     and the PagerDuty route pointed at the same nginx), fsync before 202.
# Every delivery is counted at the sink (nginx's access log).  End to end =
# accepted events / (first request .. last one counted at the sink).
# "x seed" is end to end over the seed's at the same connections.  "cpu
# us/ev" is the whole machine's busy CPU (/proc/stat: wrk, nginx and the
# system under test together) over that window, per event counted: with
# both cores saturated, events/s = 2 cores / that, so it says what any
# target in events/s asks of the cost per event.
#
#   bash benches/seed/compare.sh [ZTBRIDGE_BINARY] [SECONDS] [CONNECTIONS...]
# PIPELINE_WITHOUT (see above) prices the pipeline floor's guarantees.
# With BASELINE=/path/to/an/older/ztbridge, that build is measured too, in
# the same run (label "baseline").
# Needs Debian's wrk and nginx, and python3 with flask and requests.
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=${1:-target/release/ztbridge}
secs=${2:-10}
shift 2 2>/dev/null || shift $#
conns=("${@:-8 32}")
read -r -a conns <<< "${conns[*]}"
lua=$PWD/benches/seed/post.lua
dir=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
sink_port=$(free_port); limit_port=$(free_port)
sink_log=$dir/sink.log
cat > "$dir/nginx.conf" <<CONF
worker_processes 1;
error_log $dir/nginx-error.log warn;
pid $dir/nginx.pid;
events { worker_connections 4096; }
http {
    log_format sink '\$request_length';
    client_body_temp_path $dir;
    keepalive_requests 1000000;
    server {
        listen 127.0.0.1:$sink_port;
        location /v2/enqueue {
            access_log $sink_log sink;
            default_type application/json;
            return 202 '{"status":"success","message":"Event processed","dedup_key":"x"}';
        }
    }
    server {
        listen 127.0.0.1:$limit_port;
        access_log off;
        location /webhook {
            default_type application/json;
            return 202 '{"status":"accepted"}';
        }
    }
}
CONF
touch "$sink_log"
nginx -p "$dir" -c "$dir/nginx.conf" -g 'daemon off;' &
pids+=($!)
wait_port() { for _ in $(seq 1 300); do (echo > "/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 never opened" >&2; exit 1; }
wait_port "$sink_port"; wait_port "$limit_port"
sink_count() { wc -l < "$sink_log"; }
# Busy jiffies of the whole machine (all but idle and iowait).
busy_jiffies() { awk '$1=="cpu" {print $2+$3+$4+$7+$8+$9}' /proc/stat; }
hz=$(getconf CLK_TCK)
declare -A seed_rate=()

# run LABEL URL CONNECTIONS TAG: wrk, then wait for the sink; one result row.
run() {
    local label=$1 url=$2 c=$3 tag=$4 before out start end accepted non2xx rate p50 p99 delivered e2e
    local busy0 counted cpu_us ratio=-
    before=$(sink_count)
    busy0=$(busy_jiffies)
    start=$(date +%s.%N)
    out=$(wrk -t2 -c"$c" -d"${secs}s" --latency -s "$lua" "$url" -- "$tag")
    requests=$(awk '/requests in/ {print $1}' <<< "$out")
    non2xx=$(awk '/Non-2xx/ {print $NF}' <<< "$out"); non2xx=${non2xx:-0}
    accepted=$((requests - non2xx))
    p50=$(awk '$1=="50%" {print $2}' <<< "$out"); p99=$(awk '$1=="99%" {print $2}' <<< "$out")
    rate=$(awk '/Requests\/sec/ {print $2}' <<< "$out")
    e2e=-
    counted=$accepted
    if [ "$label" != limit ]; then
        for _ in $(seq 1 6000); do
            delivered=$(( $(sink_count) - before ))
            [ "$delivered" -ge "$accepted" ] && break
            sleep 0.05
        done
        end=$(date +%s.%N)
        e2e=$(awk -v n="$delivered" -v a="$start" -v b="$end" 'BEGIN {printf "%.0f", n / (b - a)}')
        counted=$delivered
        [ "$label" = seed ] && seed_rate[$c]=$e2e
        [ -n "${seed_rate[$c]:-}" ] && ratio=$(awk -v a="$e2e" -v b="${seed_rate[$c]}" 'BEGIN {printf "%.1f", a / b}')
    fi
    cpu_us=$(awk -v j="$(( $(busy_jiffies) - busy0 ))" -v hz="$hz" -v n="$counted" \
        'BEGIN {printf "%.0f", (n > 0) ? j / hz / n * 1e6 : 0}')
    printf '%-10s %5s %10s %8s %10s %7s %10s %10s %9s\n' "$label" "$c" "$rate" "$non2xx" "$e2e" "$ratio" "$p50" "$p99" "$cpu_us"
}

printf '%-10s %5s %10s %8s %10s %7s %10s %10s %9s\n' system conns "accepted/s" non-2xx "e2e/s" "x seed" "p50" "p99" "cpu us/ev"
for c in "${conns[@]}"; do run limit "http://127.0.0.1:$limit_port/webhook" "$c" "limit$c"; done

seed_port=$(free_port)
python3 benches/seed/seed.py --port "$seed_port" --sink "http://127.0.0.1:$sink_port/v2/enqueue" 2> "$dir/seed.log" &
pids+=($!)
wait_port "$seed_port"
for c in "${conns[@]}"; do run seed "http://127.0.0.1:$seed_port/webhook" "$c" "seed$c"; done
kill "${pids[-1]}"

cargo build --release --locked --example relay_floor 2> "$dir/floor-build.log" || {
    cat "$dir/floor-build.log" >&2; exit 1; }
floor_port=$(free_port)
target/release/examples/relay_floor "$floor_port" "http://127.0.0.1:$sink_port/v2/enqueue" 2> "$dir/floor.log" &
pids+=($!)
wait_port "$floor_port"
for c in "${conns[@]}"; do run floor "http://127.0.0.1:$floor_port/webhook" "$c" "floor$c"; done
kill "${pids[-1]}"

cargo build --release --locked --example pipeline_floor 2> "$dir/pipeline-build.log" || {
    cat "$dir/pipeline-build.log" >&2; exit 1; }
# PIPELINE_WITHOUT="fsync sandbox,store ..." adds a row per entry, run with
# those guarantees dropped (labelled -fsync, -sandbox+store, ...).
read -r -a variants <<< "${PIPELINE_WITHOUT:-}"
for variant in "" "${variants[@]}"; do
  label=pipeline; [ -n "$variant" ] && label=-${variant//,/+}
  for c in "${conns[@]}"; do
    pipe_port=$(free_port)
    PIPELINE_FLOOR_WITHOUT=$variant target/release/examples/pipeline_floor "$pipe_port" \
        "http://127.0.0.1:$sink_port/v2/enqueue" "$dir/pipeline$c$variant.db" 2> "$dir/pipeline.log" &
    pids+=($!)
    wait_port "$pipe_port"
    run "$label" "http://127.0.0.1:$pipe_port/webhook" "$c" "pipeline$c$variant"
    kill "${pids[-1]}"
  done
done

bins=("ztbridge=$bin")
[ -n "${BASELINE:-}" ] && bins+=("baseline=$BASELINE")
for entry in "${bins[@]}"; do
  label=${entry%%=*}; exe=${entry#*=}
  for c in "${conns[@]}"; do
    zt_port=$(free_port)
    zdir=$dir/$label$c
    mkdir -p "$zdir"
    cat > "$zdir/ztbridge.toml" <<CONF
listen = "127.0.0.1:$zt_port"
data_dir = "$zdir/data"
[delivery]
max_pending = 1000000
[[route]]
name = "pagerduty"
transform = "builtin:pagerduty"
allow_http = true
private_networks = ["127.0.0.1/32"]
[route.config]
routing_key = "R0UTINGKEYabcdef0123456789abcdef"
url = "http://127.0.0.1:$sink_port/v2/enqueue"
CONF
    "$exe" serve --config "$zdir/ztbridge.toml" 2> "$zdir/stderr.log" &
    pids+=($!)
    wait_port "$zt_port"
    run "$label" "http://127.0.0.1:$zt_port/webhook" "$c" "$label$c"
    kill -TERM "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || true
  done
done
