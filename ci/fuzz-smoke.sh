#!/usr/bin/env bash
# Fuzz smoke test: runs each cargo-fuzz target in fuzz/ for FUZZ_SECONDS
# (default 30) on a corpus seeded from tests/fixtures and fuzz/seeds.
# Fails on the first crash (libFuzzer leaves the input in
# fuzz/artifacts/<target>/).  Installs cargo-fuzz when missing.  .ci/run
# runs it after the tests (not ci/test.sh: the instrumented build of the
# runtime, wasmtime included, takes minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
seconds=${FUZZ_SECONDS:-30}
targets=(webhook_intake zt_event config_parse signature)

# The machine's one toolchain, with RUSTC_BOOTSTRAP=1 for the -Z flag
# cargo fuzz passes (CI machines fetch crates, not other toolchains; with
# --sanitizer none nothing else needs nightly).  `cargo +nightly fuzz`
# works the same where a nightly is installed.
export RUSTC_BOOTSTRAP=1
fuzz=(cargo fuzz)
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz@0.13.2

# Corpora: fixtures and seeds (a corpus directory only grows; inputs the
# fuzzer found earlier are kept between runs on one machine).
corpus=$root/fuzz/corpus
mkdir -p "$corpus"/{webhook_intake,zt_event,config_parse,signature}
for f in tests/fixtures/events/*.json tests/fixtures/jitbit/*.json; do
    name=$(basename "$f" .json)
    cp "$f" "$corpus/zt_event/$name"
    # Selector byte (see fuzz_targets/webhook_intake.rs): 0x00 plain
    # application/json; 0x88 gzip-labelled and gzipped.
    { printf '\000'; cat "$f"; } > "$corpus/webhook_intake/$name-plain"
    { printf '\210'; cat "$f"; } > "$corpus/webhook_intake/$name-gzip"
done
cp ztbridge.example.toml "$corpus/config_parse/example.toml"
cp fuzz/seeds/config/*.toml "$corpus/config_parse/"
cp fuzz/seeds/signature/*.wasm "$corpus/signature/"

cd fuzz
# No sanitizer: the code under test is safe Rust (a crash is a panic,
# an overflow or a failed property), and it runs about twice as fast.
"${fuzz[@]}" build --sanitizer none
for t in "${targets[@]}"; do
    echo "== fuzz $t: ${seconds}s"
    "${fuzz[@]}" run --sanitizer none "$t" "$corpus/$t" -- \
        -max_total_time="$seconds" -max_len=65536 -rss_limit_mb=2048 -timeout=10 \
        -print_final_stats=1 2>&1 | grep -E '^(#[0-9]+.*DONE|stat::|==|INFO: (seed|-max_len))|SUMMARY|panicked|Test unit written' || true
    if ls "$root/fuzz/artifacts/$t"/crash-* >/dev/null 2>&1; then
        echo "fuzz $t: crash, see fuzz/artifacts/$t" >&2
        exit 1
    fi
done
echo "ztbridge: fuzz smoke passed (${#targets[@]} targets, ${seconds}s each)"
