//! Per-event cost of the sandbox: a fresh Store + instantiation (from the
//! reused InstancePre) + `start` on one event, for the PagerDuty transform
//! and for the empty component (the floor), measured in the same run.
//!
//! `cargo bench --bench per_event` (ZTBRIDGE_BENCH_ITERS to change the
//! iteration count).  Prints microseconds per event (median of batches) and
//! the ratio to the floor.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use ztbridge_runtime::bindings::types::Event;
use ztbridge_runtime::engine::{Engine, Limits};
use ztbridge_runtime::redact::Redactor;
use ztbridge_runtime::sandbox::{FlowContext, Sandbox};
use ztbridge_runtime::state::{MemoryState, StateStore};
use ztbridge_runtime::transform::Transform;

const WASM_DIR: &str = env!("ZTBRIDGE_WASM_DIR");

struct Case {
    name: &'static str,
    transform: Arc<Transform>,
    config: Arc<BTreeMap<String, String>>,
    event: Event,
}

fn one(engine: &Engine, case: &Case, state: &Arc<dyn StateStore>) {
    let ctx = FlowContext::new(Arc::from(case.name), case.config.clone(), state.clone(), Arc::new(Redactor::default()));
    let mut sandbox = Sandbox::new(engine, &case.transform, ctx).expect("instantiate");
    let step = sandbox.start(&case.event).expect("start");
    assert!(step.is_ok(), "{} failed: {step:?}", case.name);
}

/// Median microseconds per event over `batches` batches of `per_batch`.
fn measure(engine: &Engine, case: &Case, state: &Arc<dyn StateStore>, batches: usize, per_batch: usize) -> f64 {
    for _ in 0..per_batch {
        one(engine, case, state); // warm the pool slots and caches
    }
    let mut samples: Vec<f64> = (0..batches)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..per_batch {
                one(engine, case, state);
            }
            t.elapsed().as_secs_f64() * 1e6 / per_batch as f64
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

fn main() {
    let iters: usize = std::env::var("ZTBRIDGE_BENCH_ITERS").ok().and_then(|v| v.parse().ok()).unwrap_or(20_000);
    let batches = 20;
    let per_batch = (iters / batches).max(1);
    let engine = Engine::new(Limits::default()).expect("engine");
    let state: Arc<dyn StateStore> = Arc::new(MemoryState::default());
    let load = |file: &str| {
        let bytes = std::fs::read(format!("{WASM_DIR}/{file}")).expect("component");
        let t = Instant::now();
        let tr = Transform::load(&engine, file, &bytes).expect("load");
        (tr, t.elapsed().as_secs_f64() * 1e3, bytes.len())
    };
    let body = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/events/critical-lockout.json"))
        .expect("fixture");
    let event = Event { body, receipt_id: "bench".into(), received_at: "2025-06-11T10:15:04Z".into(), attempt: 1 };

    let (empty, empty_compile_ms, empty_size) = load("empty.wasm");
    let (pd, pd_compile_ms, pd_size) = load("pagerduty.wasm");
    let cases = [
        Case { name: "empty (floor)", transform: empty, config: Arc::new(BTreeMap::new()), event: event.clone() },
        Case {
            name: "pagerduty",
            transform: pd,
            config: Arc::new([("routing_key".to_string(), "R0UTINGKEY0123456789abcdef012345".to_string())].into()),
            event,
        },
    ];
    println!("per-event cost: fresh Store + instantiate (InstancePre) + start(); {iters} events per case, median of {batches} batches");
    println!("component sizes: empty {empty_size} B (compile {empty_compile_ms:.1} ms), pagerduty {pd_size} B (compile {pd_compile_ms:.1} ms)");
    let floor = measure(&engine, &cases[0], &state, batches, per_batch);
    println!("{:<16} {:>9.2} us/event  (1.00x floor)", cases[0].name, floor);
    for case in &cases[1..] {
        let us = measure(&engine, case, &state, batches, per_batch);
        println!("{:<16} {:>9.2} us/event  ({:.2}x floor)", case.name, us, us / floor);
    }
}
