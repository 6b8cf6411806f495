#!/usr/bin/env bash
# Builds the Python transforms (transforms-py/) from source with
# componentize-py, pinned to 0.25.1 and installed in a virtual environment
# under target/ (nothing goes into the system Python).  Needs Python 3.10+
# with venv and pip.  Outputs:
#   transforms-py/servicenow/servicenow.wasm   the ServiceNow transform, signed
#   transforms-py/probe/probe.wasm             the contract test's Python probe
# The ServiceNow component is signed with $ZTBRIDGE_SIGNING_KEY (a
# `ztbridge keys generate` secret key) when set, else with a throwaway key
# made once under target/py-signing (testing only: its signature proves
# nothing); the directory of the matching public key is printed and, for
# ci/test.sh, written to target/py-signing/trusted.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
target=${CARGO_TARGET_DIR:-$root/target}
version=0.25.1
python=${PYTHON:-python3}
if ! command -v "$python" >/dev/null; then
    echo "ci/py.sh: $python not found: install Python 3.10 or newer (the Python transforms are built with componentize-py from PyPI)" >&2
    exit 1
fi
venv=$target/py-venv
if [ "$("$venv/bin/componentize-py" --version 2>/dev/null)" != "componentize-py $version" ]; then
    "$python" -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "componentize-py==$version"
fi
echo "== Python transforms: $("$venv/bin/componentize-py" --version), $("$python" --version)"

# build DIR: transforms-py/DIR/app.py (+ the SDK) -> transforms-py/DIR/DIR.wasm,
# skipped when the component is newer than every source (and the WIT).
build() {
    local dir=transforms-py/$1 out=transforms-py/$1/$1.wasm
    if [ -f "$out" ] && [ -z "$(find "$dir" transforms-py/sdk wit -name '*.py' -newer "$out" -o -name '*.wit' -newer "$out")" ]; then
        echo "$out is up to date"
        return
    fi
    "$venv/bin/componentize-py" -d wit -w transform-world componentize \
        -p "$dir" -p transforms-py/sdk app -o "$out.tmp"
    mv "$out.tmp" "$out"
    ls -l "$out"
    BUILT=1
}

BUILT=0
build servicenow
# Signing changes the file: sign only what was just built.
if [ "$BUILT" = 1 ]; then
    # $ZTBRIDGE_BIN: a ztbridge to sign with (ci/release.sh passes the
    # release binary); else the debug one, built when missing.
    bin=${ZTBRIDGE_BIN:-$target/debug/ztbridge}
    [ -x "$bin" ] || cargo build --locked --bin ztbridge
    if [ -n "${ZTBRIDGE_SIGNING_KEY:-}" ]; then
        key=$ZTBRIDGE_SIGNING_KEY
    else
        key=$target/py-signing/ztbridge-signing.key
        if [ ! -f "$key" ]; then
            "$bin" keys generate --out "$target/py-signing" >/dev/null
        fi
        echo "py.sh: ZTBRIDGE_SIGNING_KEY is not set: signing with the THROWAWAY key $key (testing only)" >&2
    fi
    "$bin" transform sign transforms-py/servicenow/servicenow.wasm --key "$key" >/dev/null
    mkdir -p "$target/py-signing"
    dirname "$key" > "$target/py-signing/trusted"
fi
echo "servicenow.wasm signed; trusted keys in $(cat "$target/py-signing/trusted" 2>/dev/null || echo '(unknown)')"
build probe
