#!/usr/bin/env bash
# Every benchmark, run short in the test profile: they start the real
# service and its sinks, so a change that breaks one (a config key, the
# egress rules, a renamed metric) fails CI instead of the next person who
# measures.  The figures of such short debug runs mean nothing; the full
# runs are `cargo bench --bench NAME` (release build), see benches/.
# ci/test.sh runs this after the tests, with the components they built.
set -euo pipefail
cd "$(dirname "$0")/.."

run() {
    local name=$1
    shift
    local started=$SECONDS
    echo "== bench smoke: $name"
    env "$@" cargo test --locked --bench "$name" 2>&1 | grep -v '^\s*\(Compiling\|Finished\|Running\)' || {
        echo "bench smoke: $name failed" >&2
        exit 1
    }
    echo "== bench smoke: $name passed in $((SECONDS - started)) s"
}

run intake_parse
run sandbox_phases ZTBRIDGE_BENCH_ITERS=20
run per_event ZTBRIDGE_BENCH_ITERS=20
run languages ZTBRIDGE_BENCH_ITERS=5
run throughput ZTBRIDGE_BENCH_EVENTS=200 ZTBRIDGE_BENCH_CLIENTS=4
run bulkhead ZTBRIDGE_BENCH_ROUNDS=1 ZTBRIDGE_BENCH_EVENTS=40 ZTBRIDGE_BENCH_CLIENTS=4
run e2e ZTBRIDGE_BENCH_SECS=2 ZTBRIDGE_BENCH_CLIENTS=4 ZTBRIDGE_BENCH_PENDING=200
run console_events ZTBRIDGE_BENCH_EVENTS=300 ZTBRIDGE_BENCH_ROUNDS=2
run cluster ZTBRIDGE_BENCH_EVENTS=200 ZTBRIDGE_BENCH_CLIENTS=4 PGBENCH_SECONDS=1
echo "bench smoke: every benchmark ran"
