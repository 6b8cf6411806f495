#!/usr/bin/env bash
# Runs every test: the host workspace (unit, end-to-end, CLI) and the
# guest-side crates' own unit tests.  Installs the wasm target it needs.
set -euo pipefail
cd "$(dirname "$0")/.."

if command -v rustup >/dev/null; then
    rustup target add wasm32-wasip2 >/dev/null
fi

# Host workspace; build.rs compiles the guest transforms to components.
cargo test --locked --workspace "$@"

# Guest crates' own unit tests, run on the host: the shared event model and
# the Jitbit transform's pure helpers.
cargo test --locked --manifest-path transforms/Cargo.toml -p zt-event -p zt-jitbit --target-dir target/guest-host-tests
