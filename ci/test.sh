#!/usr/bin/env bash
# Runs every test: the host workspace (unit, end-to-end, CLI) and the
# guest-side crates' own unit tests.  Installs the wasm target it needs.
# Ends with one line totalling every cargo test result.
set -euo pipefail
cd "$(dirname "$0")/.."

if command -v rustup >/dev/null; then
    rustup target add wasm32-wasip2 >/dev/null
fi

# Formatting first: it takes a second and needs no build.
if cargo fmt --version >/dev/null 2>&1; then
    cargo fmt --all -- --check
fi

# The JavaScript transform (componentize-js from npm); tests find it here
# and must not skip it.  Compiled components are cached across test runs.
bash ci/js.sh
export ZTBRIDGE_JS_WASM=$PWD/transforms-js/webhook/webhook.wasm ZTBRIDGE_REQUIRE_JS=1
export ZTBRIDGE_JS_PROBE_WASM=$PWD/transforms-js/probe/probe.wasm
# The Python transforms (componentize-py from PyPI, in a venv under
# target/): the signed ServiceNow transform and the contract test's probe.
bash ci/py.sh
export ZTBRIDGE_PY_SERVICENOW_WASM=$PWD/transforms-py/servicenow/servicenow.wasm ZTBRIDGE_REQUIRE_PY=1
export ZTBRIDGE_PY_PROBE_WASM=$PWD/transforms-py/probe/probe.wasm
export ZTBRIDGE_COMPILE_CACHE=${ZTBRIDGE_COMPILE_CACHE:-${CARGO_TARGET_DIR:-$PWD/target}/compile-cache}

# The console's browser tests: playwright-core at the version the committed
# lock pins, driving the distribution's Chromium (ci/deps.sh installs it);
# no browser is downloaded.
(cd tests/browser && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error)

log=$(mktemp)
trap 'rm -f "$log"' EXIT

# Host workspace; build.rs compiles the guest transforms to components.
cargo test --locked --workspace "$@" 2>&1 | tee -a "$log"

# The service as the README runs it (`cargo run`) is the binary just
# tested: the same units, nothing compiled again (the root Cargo.toml
# unifies the features the tests' crates turn on).
rebuilt=$(cargo build --locked --message-format=json 2>/dev/null \
    | grep '"reason":"compiler-artifact"' | grep -v '"fresh":true' \
    | sed -n 's/.*"target":{[^}]*"name":"\([^"]*\)".*/\1/p' | sort -u | tr '\n' ' ' || true)
if [ -n "$rebuilt" ]; then
    echo "cargo build compiled again after cargo test (features differ): $rebuilt" >&2
    exit 1
fi
echo "cargo build: the tested units, nothing compiled again"

# Guest crates' own unit tests, run on the host: the shared event model and
# the built-in transforms' pure parts.
cargo test --locked --manifest-path transforms/Cargo.toml -p zt-event -p zt-jitbit -p zt-pagerduty \
    -p zt-opsgenie -p zt-splunk -p zt-template --lib \
    --target-dir target/guest-host-tests 2>&1 | tee -a "$log"

# Scaffolded transforms (Rust and JavaScript) build and pass their fixture.
bash ci/kit.sh

# Every benchmark, short, in this profile (so none rots unnoticed).
bash ci/bench-smoke.sh

# The systemd unit, against the binary the tests just built.
unit_dir=$(mktemp -d)
sed "s#/usr/bin/ztbridge#$PWD/target/debug/ztbridge#" dist/systemd/ztbridge.service \
    > "$unit_dir/ztbridge.service"
systemd-analyze verify "$unit_dir/ztbridge.service"
echo "systemd unit: systemd-analyze verify passed"
rm -rf "$unit_dir"

# pipefail made any failing cargo above exit already; total what ran.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed;?$/) p += $i; if ($(i+1) ~ /^failed;?$/) f += $i } }
     END { printf "ztbridge: %d passed, %d failed\n", p, f }' "$log"
