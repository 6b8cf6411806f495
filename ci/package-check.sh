#!/usr/bin/env bash
# CI's packaging check (called by .ci/run after the tests): installs what
# ci/release.sh needs, builds the release artefacts once, then on this
# machine (Debian 12, as root):
#   * the static binary: no interpreter, no dynamic section, runs;
#   * the .deb: dpkg -i; --version; the system user, /var/lib/ztbridge 0700,
#     the conffile, unit, man pages, completions; config check (first
#     without the routing key: the credential file is explained); the
#     README's quick start from the package, with no Rust on PATH;
#     dpkg -r keeps data and config, dpkg -P removes both;
#   * the .rpm: rpm -qlp lists the same files, the config is a noreplace
#     config file, the scripts create the user;
#   * SHA256SUMS: its signature, with ztbridge and with OpenSSL;
#   * the ServiceNow transform: verified with the release key, inspected.
# Prints how long it took.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$SECONDS
step() { echo "== package check: $* ($((SECONDS - started)) s)"; }
fail() { echo "package check: $*" >&2; exit 1; }

step "tools"
missing=()
command -v musl-gcc >/dev/null || missing+=(musl-tools)
command -v rpm >/dev/null || missing+=(rpm)
command -v curl >/dev/null || missing+=(curl)
command -v file >/dev/null || missing+=(file)
command -v openssl >/dev/null || missing+=(openssl)
if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
rustup target add x86_64-unknown-linux-musl >/dev/null 2>&1 || true
tool() { # crate version: installed once, at that version
    if ! cargo "${1#cargo-}" --version 2>/dev/null | grep -q " $2\$"; then
        cargo install --locked --quiet "$1@$2"
    fi
}
tool cargo-deb 3.8.0
tool cargo-generate-rpm 0.21.1

step "release build (ci/release.sh)"
bash ci/release.sh target/artifacts
dist=target/artifacts
deb=$(ls $dist/*.deb)
rpm_file=$(ls $dist/*.rpm)
bin=$(ls $dist/ztbridge-*-x86_64-linux-musl)

step "the ServiceNow transform: signed with the release key, in SHA256SUMS"
snow=$(ls $dist/servicenow-*.wasm)
"$bin" transform verify "$snow" --trusted $dist/ztbridge-release.pub
grep -q " $(basename "$snow")\$" $dist/SHA256SUMS || fail "$snow is not in SHA256SUMS"
# Captured, not piped: `grep -q` stops reading at its match and the
# printer then dies of SIGPIPE, which pipefail reports as a failure.
inspected=$("$bin" transform inspect "$snow")
grep -q 'servicenow' <<< "$inspected" || fail "transform inspect $snow: $inspected"

step "the static binary"
file "$bin" | grep -Eq 'static(-pie|ally) linked' || fail "not static: $(file "$bin")"
if readelf -lW "$bin" | grep -q INTERP || readelf -dW "$bin" | grep -q '(NEEDED)'; then
    fail "$bin has an interpreter or needs a shared library"
fi
env -i "$bin" --version > /dev/null
version_text=$("$bin" --version)
grep -q '^contracts:  ztbridge:transform@' <<< "$version_text" || fail "--version: $version_text"

step "signature of SHA256SUMS (ztbridge, then OpenSSL)"
"$bin" keys verify $dist/SHA256SUMS --trusted $dist/ztbridge-release.pub
sed -n 's/^ed25519: //p' $dist/SHA256SUMS.sig | base64 -d > target/SHA256SUMS.sig.bin
openssl pkeyutl -verify -pubin -inkey $dist/ztbridge-release.pub -rawin \
    -in $dist/SHA256SUMS -sigfile target/SHA256SUMS.sig.bin

step "dpkg -i"
dpkg -P ztbridge >/dev/null 2>&1 || true
dpkg -i "$deb"
ztbridge --version
[ "$(command -v ztbridge)" = /usr/bin/ztbridge ] || fail "not /usr/bin/ztbridge"
getent passwd ztbridge >/dev/null || fail "no ztbridge user"
[ "$(stat -c '%a %U %G' /var/lib/ztbridge)" = "700 ztbridge ztbridge" ] \
    || fail "/var/lib/ztbridge: $(stat -c '%a %U %G' /var/lib/ztbridge)"
[ "$(stat -c '%a %G' /etc/ztbridge/ztbridge.toml)" = "640 ztbridge" ] || fail "ztbridge.toml mode"
grep -qx /etc/ztbridge/ztbridge.toml /var/lib/dpkg/info/ztbridge.conffiles || fail "not a conffile"
for f in /lib/systemd/system/ztbridge.service /usr/share/man/man1/ztbridge.1.gz \
    /usr/share/man/man1/ztbridge-config-check.1.gz /usr/share/bash-completion/completions/ztbridge \
    /usr/share/zsh/vendor-completions/_ztbridge /usr/share/fish/vendor_completions.d/ztbridge.fish; do
    [ -f "$f" ] || fail "$f not installed"
done
systemd-analyze verify /lib/systemd/system/ztbridge.service

step "config check, before and after the routing key"
rm -f /etc/ztbridge/credentials/pagerduty_routing_key
if ztbridge config check /etc/ztbridge/ztbridge.toml > /dev/null 2> target/check.err; then
    fail "config check passed without a routing key"
fi
grep -q 'A credential file holds one secret' target/check.err || fail "$(cat target/check.err)"
install -m 0600 /dev/stdin /etc/ztbridge/credentials/pagerduty_routing_key <<< R0UTINGKEYabcdef0123456789abcdef
ztbridge config check /etc/ztbridge/ztbridge.toml

step "the README's quick start from the package"
bash ci/quickstart.sh package

step "dpkg -r keeps data and config"
echo "# edited by the package check" >> /etc/ztbridge/ztbridge.toml
dpkg -r ztbridge
[ ! -e /usr/bin/ztbridge ] || fail "binary left after remove"
[ -f /var/lib/ztbridge/events.sqlite3 ] || fail "data removed by dpkg -r"
grep -q 'edited by the package check' /etc/ztbridge/ztbridge.toml || fail "config removed by dpkg -r"
[ -f /etc/ztbridge/credentials/pagerduty_routing_key ] || fail "credential removed by dpkg -r"

step "dpkg -P removes both"
dpkg -P ztbridge
[ ! -e /var/lib/ztbridge ] || fail "/var/lib/ztbridge left after purge"
[ ! -e /etc/ztbridge ] || fail "/etc/ztbridge left after purge"

step "rpm -qlp"
rpm -qlp "$rpm_file" | tee target/rpm-files.txt
for f in /usr/bin/ztbridge /usr/lib/systemd/system/ztbridge.service /etc/ztbridge/ztbridge.toml \
    /usr/share/man/man1/ztbridge.1.gz /usr/share/bash-completion/completions/ztbridge \
    /usr/share/zsh/site-functions/_ztbridge /usr/share/fish/vendor_completions.d/ztbridge.fish; do
    grep -qx "$f" target/rpm-files.txt || fail "$f not in the .rpm"
done
rpm -qp --configfiles "$rpm_file" | grep -qx /etc/ztbridge/ztbridge.toml || fail "rpm: not a config file"
rpm -qp --scripts "$rpm_file" > target/rpm-scripts.txt
grep -q 'useradd --system' target/rpm-scripts.txt || fail "rpm: no user creation"
grep -q 'chmod 0700 /var/lib/ztbridge' target/rpm-scripts.txt || fail "rpm: no data directory"
rpm -qlvp "$rpm_file" | grep -E '^-rw-r----- .* root +ztbridge .* /etc/ztbridge/ztbridge.toml$' >/dev/null \
    || fail "rpm: ztbridge.toml is not 0640 root:ztbridge"

echo "package check: OK in $((SECONDS - started)) s"
