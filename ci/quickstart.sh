#!/usr/bin/env bash
# The README's quick start, run as written, both ways:
#
#   bash ci/quickstart.sh package   # the installed .deb/.rpm, with no Rust on PATH
#   bash ci/quickstart.sh source    # this checkout, with cargo
#
# What cannot run here is replaced by its equivalent: without systemd (CI
# runs in a container) `systemctl enable --now ztbridge` becomes `serve` as
# the ztbridge user with the directories systemd would give it; and
# PagerDuty is pointed at a name that never resolves (`.invalid`, RFC 6761;
# ZTBRIDGE_PAGERDUTY_URL), so the test incident never leaves the machine
# (a loopback port would be refused: egress reaches public addresses only).  Needs port 5000 free.
set -euo pipefail
cd "$(dirname "$0")/.."

mode=${1:?usage: quickstart.sh package|source}
KEY=R0UTINGKEYabcdef0123456789abcdef
OFFLINE_PD=https://events.pagerduty.invalid/v2/enqueue
fixture=$PWD/tests/fixtures/events/critical-lockout.json
work=$(mktemp -d)
pid=
cleanup() {
    if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

fail() { echo "quickstart ($mode): $*" >&2; [ -f "$work/serve.log" ] && tail -20 "$work/serve.log" >&2; exit 1; }

# Waits for /readyz (the service loaded its transforms and opened its store).
wait_ready() {
    for _ in $(seq 1 240); do
        if curl -fsS localhost:5000/readyz >/dev/null 2>&1; then return 0; fi
        if ! kill -0 "$pid" 2>/dev/null; then fail "the service exited"; fi
        sleep 0.5
    done
    fail "not ready after 120 s"
}

case "$mode" in
package)
    # No Rust: a PATH without cargo or rustc.
    export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
    if command -v cargo >/dev/null; then fail "cargo is on PATH"; fi
    command -v ztbridge >/dev/null || fail "ztbridge is not installed"

    # README: the routing key as a credential, then the check.
    install -m 0600 /dev/stdin /etc/ztbridge/credentials/pagerduty_routing_key <<< "$KEY"
    ztbridge config check /etc/ztbridge/ztbridge.toml

    # README: systemctl enable --now ztbridge.  Without systemd: what the
    # unit does, by hand (its user, StateDirectory and LoadCredential).
    if [ -d /run/systemd/system ]; then
        mkdir -p /run/systemd/system/ztbridge.service.d
        printf '[Service]\nEnvironment=ZTBRIDGE_PAGERDUTY_URL=%s\n' "$OFFLINE_PD" \
            > /run/systemd/system/ztbridge.service.d/offline.conf
        systemctl daemon-reload
        systemctl enable --now ztbridge
        pid=
    else
        creds=$work/credentials
        install -d -o ztbridge -m 0700 "$creds"
        install -o ztbridge -m 0400 /etc/ztbridge/credentials/pagerduty_routing_key "$creds/"
        chmod 0755 "$work"
        runuser -u ztbridge -- env STATE_DIRECTORY=/var/lib/ztbridge CREDENTIALS_DIRECTORY="$creds" \
            ZTBRIDGE_PAGERDUTY_URL="$OFFLINE_PD" \
            ztbridge serve --config /etc/ztbridge/ztbridge.toml > "$work/serve.log" 2>&1 &
        pid=$!
        wait_ready
    fi

    # README: what would be sent, then a real test (here, to a name that never resolves).
    ztbridge send-test --config /etc/ztbridge/ztbridge.toml --dry-run > "$work/dry.txt"
    grep -q 'route pagerduty: takes it' "$work/dry.txt" || fail "send-test --dry-run: $(cat "$work/dry.txt")"
    ztbridge send-test --config /etc/ztbridge/ztbridge.toml > "$work/send.txt"
    grep -q 'outcome: accepted for pagerduty' "$work/send.txt" || fail "send-test: $(cat "$work/send.txt")"
    # README: the events commands, as the service user.
    runuser -u ztbridge -- ztbridge events list --config /etc/ztbridge/ztbridge.toml > "$work/list.txt"
    grep -q 'ZTBRIDGE-TEST-' "$work/list.txt" || fail "events list: $(cat "$work/list.txt")"
    if [ -d /run/systemd/system ]; then
        systemctl disable --now ztbridge
        rm -rf /run/systemd/system/ztbridge.service.d
    fi
    ;;
source)
    command -v cargo >/dev/null || fail "cargo is not on PATH"
    # README: the built-in routes, the key in the environment.
    export STATE_DIRECTORY=$work/data ZTBRIDGE_PAGERDUTY_URL=$OFFLINE_PD
    export ZTBRIDGE_PAGERDUTY_ROUTING_KEY=$KEY
    # `cargo run` compiles first (nothing, after ci/test.sh: the same
    # units); the readiness wait below times the service, not the compiler.
    cargo build --locked --quiet
    cargo run --locked --quiet -- serve > "$work/serve.log" 2>&1 &
    pid=$!
    wait_ready
    # README: try it by hand, then see how it went.
    answer=$(curl -sS localhost:5000/webhook -H 'content-type: application/json' --data @"$fixture")
    echo "$answer"
    receipt=$(sed -n 's/.*"receipt_id":"\([^"]*\)".*/\1/p' <<< "$answer")
    [ -n "$receipt" ] || fail "no receipt_id in $answer"
    record=$(curl -fsS "localhost:5000/api/events/$receipt")
    grep -q '"route":"pagerduty"' <<< "$record" || fail "/api/events/$receipt: $record"
    cargo run --locked --quiet -- send-test --dry-run > "$work/dry.txt"
    grep -q 'dry run: nothing is sent' "$work/dry.txt" || fail "send-test --dry-run"
    # README: a transform offline.
    cargo run --locked --quiet -- transform run builtin:pagerduty --event "$fixture" \
        --set routing_key=$KEY > "$work/run.json"
    grep -q '"dedup_key": "superna-zt-RSW-20250611-000123"' "$work/run.json" || fail "transform run"
    ;;
*)
    fail "usage: quickstart.sh package|source"
    ;;
esac
echo "quickstart ($mode): OK"
