#!/usr/bin/env bash
# The transform kit as a user meets it: `ztbridge transform new` scaffolds a
# Rust, a JavaScript and a Python transform, each is built and passes its own fixture
# with `ztbridge transform test`.  Runs after `cargo test` (uses its binary).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
target=${CARGO_TARGET_DIR:-$root/target}
bin=$target/debug/ztbridge
[ -x "$bin" ] || cargo build --locked
cache=${ZTBRIDGE_COMPILE_CACHE:-$target/compile-cache}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"

echo "== scaffold: Rust"
"$bin" transform new --lang rust kit-rust --sdk "$root/transforms/sdk"
# The guest target dir build.rs uses: wit-bindgen and friends are built once.
(cd kit-rust && CARGO_TARGET_DIR="$target/wasm-guests" cargo build --release --target wasm32-wasip2)
"$bin" transform test "$target/wasm-guests/wasm32-wasip2/release/kit_rust.wasm" kit-rust/fixtures

echo "== scaffold: JavaScript"
"$bin" transform new --lang js kit-js
(cd kit-js && npm install --no-audit --no-fund --prefer-offline --loglevel=error && npm run --silent build)
"$bin" transform test kit-js/kit-js.wasm kit-js/fixtures --cache "$cache"
echo "== scaffold: Python"
"$bin" transform new --lang python kit-py
# The scaffold's own scripts: build.sh makes .venv with the pinned
# componentize-py (pip reuses its cache), test.sh builds and runs the fixture.
(cd kit-py && ZTBRIDGE="$bin" ZTBRIDGE_COMPILE_CACHE="$cache" ./test.sh)
echo "ztbridge: transform scaffolds (rust, js, python) built and passed their fixtures"
