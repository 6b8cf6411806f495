#!/usr/bin/env bash
# The release artefacts, in one command, into target/artifacts/ (or $1; not target/dist/, cargo's own directory for the dist profile):
#
#   ztbridge-VERSION-x86_64-linux-musl          the static binary, stripped
#   ztbridge-VERSION-x86_64-linux-musl.tar.gz   it + man pages, completions,
#                                               unit, config, README
#   ztbridge_VERSION-1_amd64.deb                (cargo-deb)
#   ztbridge-VERSION-1.x86_64.rpm               (cargo-generate-rpm)
#   SHA256SUMS, SHA256SUMS.sig                  checksums, signed with the
#                                               release key (ztbridge keys sign)
#   ztbridge-release.pub                        the key that signed them
#   servicenow-VERSION.wasm                     the ServiceNow transform
#                                               (Python), signed with it
#
# The signing key is $ZTBRIDGE_RELEASE_KEY (a `ztbridge keys generate`
# .key file, kept offline); without it a throwaway key is made and said so:
# such a build is for testing, its signature proves nothing.
#
# Needs: musl-tools (musl-gcc, for the bundled SQLite), the rustup target
# x86_64-unknown-linux-musl (added here), cargo-deb and cargo-generate-rpm
# (`cargo install --locked cargo-deb@3.8.0 cargo-generate-rpm@0.21.1`).
# The guest transforms are still built for wasm32-wasip2 by build.rs (a
# nested cargo that inherits neither --target nor the musl linker).
set -euo pipefail
cd "$(dirname "$0")/.."

target=x86_64-unknown-linux-musl
profile=dist
out=${1:-target/artifacts}
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)
name=ztbridge-$version-x86_64-linux-musl
case "${out%/}" in
    target/dist | target/release | target/debug | target/"$target"*) fail "$out is cargo's own directory" ;;
esac

fail() { echo "release: $*" >&2; exit 1; }
need() { command -v "$1" >/dev/null || fail "$1 is missing: $2"; }
need musl-gcc "apt-get install musl-tools"
need cargo-deb "cargo install --locked cargo-deb@3.8.0"
need cargo-generate-rpm "cargo install --locked cargo-generate-rpm@0.21.1"
need readelf "apt-get install binutils"
need python3 "apt-get install python3 python3-venv (componentize-py builds the ServiceNow transform)"
if command -v rustup >/dev/null; then
    rustup target list --installed | grep -qx "$target" || rustup target add "$target"
fi

# Reproducible: the build date is the commit's.
SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}
export SOURCE_DATE_EPOCH

echo "== static binary ($target, profile $profile)"
t0=$SECONDS
cargo build --locked --profile "$profile" --target "$target"
echo "built in $((SECONDS - t0)) s"
bin=target/$target/$profile/ztbridge

# Static: no program interpreter and no shared library needed.  Rust links
# musl binaries static-pie (kept: the image is placed at a random address);
# its dynamic section holds only the relocations the binary applies to
# itself at start, no NEEDED entry.
if readelf -lW "$bin" | grep -q 'INTERP'; then fail "$bin has a program interpreter"; fi
if readelf -dW "$bin" | grep -q '(NEEDED)'; then
    fail "$bin needs shared libraries: $(readelf -dW "$bin" | grep NEEDED)"
fi
if readelf -SW "$bin" | grep -q '\.debug_'; then fail "$bin is not stripped"; fi
"$bin" --version

echo "== completions and man pages (from the binary itself)"
rm -rf target/pkg
mkdir -p target/pkg/completions target/pkg/man
"$bin" completions bash > target/pkg/completions/ztbridge.bash
"$bin" completions zsh > target/pkg/completions/_ztbridge
"$bin" completions fish > target/pkg/completions/ztbridge.fish
"$bin" manpages --out target/pkg/man > /dev/null
gzip -9n target/pkg/man/*.1

echo "== packages"
rm -rf "$out"
mkdir -p "$out"
cargo deb --no-build --no-strip --no-dbgsym --target "$target" --profile "$profile" \
    --output "$out/" --quiet
cargo generate-rpm --target "$target" --profile "$profile" --auto-req disabled \
    --output "$out/"
cp "$bin" "$out/$name"
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/$name"
cp "$bin" README.md ztbridge.example.toml dist/ztbridge.toml dist/systemd/ztbridge.service \
    "$stage/$name/"
cp -r target/pkg/man target/pkg/completions "$stage/$name/"
tar --sort=name --mtime="@$SOURCE_DATE_EPOCH" --owner=0 --group=0 --numeric-owner \
    -C "$stage" -czf "$out/$name.tar.gz" "$name"

echo "== SHA256SUMS, signed"
key=${ZTBRIDGE_RELEASE_KEY:-}
if [ -z "$key" ]; then
    keydir=target/release-key-UNOFFICIAL
    if [ ! -f "$keydir/ztbridge-release.key" ]; then
        "$bin" keys generate --out "$keydir" --name ztbridge-release > /dev/null
    fi
    key=$keydir/ztbridge-release.key
    echo "release: ZTBRIDGE_RELEASE_KEY is not set: signing with the THROWAWAY key $key (testing only)" >&2
fi
pub=${key%.key}.pub
[ -f "$pub" ] || fail "no public key $pub beside $key"

echo "== the ServiceNow transform (Python), signed with the release key"
# ci/py.sh makes componentize-py's venv (pinned); the artefact is built
# afresh from source so it carries the release signature only.
ZTBRIDGE_BIN=$bin bash ci/py.sh > /dev/null
snow=$out/servicenow-$version.wasm
"${CARGO_TARGET_DIR:-target}/py-venv/bin/componentize-py" -d wit -w transform-world componentize \
    -p transforms-py/servicenow -p transforms-py/sdk app -o "$snow" > /dev/null
"$bin" transform sign "$snow" --key "$key" > /dev/null
"$bin" transform verify "$snow" --trusted "$pub"

(cd "$out" && sha256sum -- * > SHA256SUMS)
"$bin" keys sign "$out/SHA256SUMS" --key "$key"
cp "$pub" "$out/ztbridge-release.pub"
"$bin" keys verify "$out/SHA256SUMS" --trusted "$out/ztbridge-release.pub"
(cd "$out" && sha256sum --check --quiet SHA256SUMS)

echo "== $out"
size=$(stat -c %s "$bin")
echo "static musl binary: $size bytes ($(numfmt --to=iec-i --suffix=B "$size")), stripped, static-pie: no interpreter, no shared library"
(cd "$out" && ls -l)
