#!/usr/bin/env bash
# Start-to-ready time of `ztbridge serve` with a cold and with a warm
# compile cache: the built-in PagerDuty and Jitbit transforms plus the
# JavaScript webhook transform (12 MB; build it with `bash ci/js.sh`).
# Ready = GET /readyz answers 200 (READY=1 is sent at the same moment).
#
#   cargo build --release && bash benches/start_to_ready.sh [BINARY]
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-target/release/ztbridge}
js=transforms-js/webhook/webhook.wasm
[ -f "$js" ] || { echo "build $js first: bash ci/js.sh" >&2; exit 2; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$work/ztbridge.toml" <<TOML
listen = "127.0.0.1:$port"
data_dir = "$work/data"
[trust]
allow_unsigned = true
[[route]]
name = "pagerduty"
transform = "builtin:pagerduty"
[route.config]
routing_key = "R0UTINGKEYabcdef0123456789abcdef"
[[route]]
name = "jitbit"
transform = "builtin:jitbit"
[route.config]
url = "https://example.jitbit.com/helpdesk/api"
token = "x"
category = "Storage"
[[route]]
name = "slack"
transform = "$PWD/$js"
[route.config]
url = "https://hooks.slack.com/services/T/B/X"
TOML
measure() {
    local start end
    start=$(date +%s.%N)
    RUST_LOG=warn "$bin" serve --config "$work/ztbridge.toml" 2>>"$work/log" &
    local pid=$!
    until curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1; do
        kill -0 "$pid" 2>/dev/null || { cat "$work/log" >&2; exit 1; }
        sleep 0.01
    done
    end=$(date +%s.%N)
    kill -TERM "$pid"; wait "$pid" || true
    python3 -c "print(f'{($end - $start):.2f}')"
}
cold=$(measure)
warm=$(measure)
echo "start to ready, 3 routes (PagerDuty, Jitbit, 12 MB JavaScript):"
echo "  cold compile cache: ${cold} s"
echo "  warm compile cache: ${warm} s"
python3 -c "print(f'  ratio cold/warm: {$cold / $warm:.0f}x')"
