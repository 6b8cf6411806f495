//! Where the per-event cost goes: for the empty component (the floor) and
//! the PagerDuty transform, time to create a Store and instantiate (`new`),
//! the one `start` call, and dropping the Store (returning the pool slot),
//! plus the fuel `start` used and building a WASI context alone.
//! `cargo bench --bench sandbox_phases` (ZTBRIDGE_BENCH_ITERS to change the
//! iteration count).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;
use ztbridge_runtime::sandbox::Transform;
use ztbridge_runtime::sandbox::{FlowContext, Sandbox, block_on};
use ztbridge_runtime::store::{MemoryState, TransformState};
use ztbridge_runtime::text::Redactor;
use ztbridge_runtime::{config::Limits, sandbox::Engine};

fn main() {
    let engine = Engine::new(Limits::default()).unwrap();
    // ZTBRIDGE_BENCH_WASM_DIR loads other builds of the same guests (e.g.
    // unstripped ones, for `perf` with ZTBRIDGE_WASM_PROFILER=perfmap).
    let dir = std::env::var("ZTBRIDGE_BENCH_WASM_DIR")
        .ok()
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| env!("ZTBRIDGE_WASM_DIR").to_string());
    let state: Arc<dyn TransformState> = Arc::new(MemoryState::default());
    let body = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/events/critical-lockout.json"
    ))
    .unwrap();
    // The record is built once here: `start` below is the guest's work;
    // per_event includes the host's reading of the event.
    let ev = ztbridge_runtime::flow::record(&ztbridge_runtime::flow::FlowInput {
        body: &body,
        receipt_id: "x",
        received_ms: 1_749_636_904_000,
        attempt: 1,
    });
    let n: usize = std::env::var("ZTBRIDGE_BENCH_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let pd_cfg: Arc<BTreeMap<String, String>> = Arc::new(
        [(
            "routing_key".to_string(),
            "R0UTINGKEY0123456789abcdef012345".to_string(),
        )]
        .into(),
    );
    let mut cases = vec![
        ("empty.wasm", Arc::new(BTreeMap::new())),
        ("pagerduty.wasm", pd_cfg),
    ];
    // ZTBRIDGE_BENCH_ONLY=empty runs only the cases whose file name
    // contains it (e.g. to count instructions under callgrind).
    let only = std::env::var("ZTBRIDGE_BENCH_ONLY").unwrap_or_default();
    cases.retain(|(file, _)| file.contains(only.as_str()));
    for (file, cfg) in cases {
        let bytes = std::fs::read(format!("{dir}/{file}")).unwrap();
        let t = Transform::load(&engine, file, &bytes).unwrap();
        for round in 0..2 {
            let (mut tn, mut ts, mut td) = (0f64, 0f64, 0f64);
            let mut fuel = 0;
            let flt0 = minor_faults();
            for _ in 0..n {
                let a = Instant::now();
                let ctx = FlowContext::new(
                    Arc::from("r"),
                    cfg.clone(),
                    state.clone(),
                    Arc::new(Redactor::default()),
                );
                let mut s = block_on(Sandbox::new(&engine, &t, ctx)).unwrap();
                let b = Instant::now();
                let f0 = s.fuel_used();
                let _ = block_on(s.start(&ev)).unwrap();
                fuel = s.fuel_used() - f0;
                let c = Instant::now();
                drop(s);
                let d = Instant::now();
                tn += (b - a).as_secs_f64();
                ts += (c - b).as_secs_f64();
                td += (d - c).as_secs_f64();
            }
            let faults = (minor_faults() - flt0) as f64 / n as f64;
            let f = 1e6 / n as f64;
            println!(
                "{file:<15} round {round}: new {:.2} us, start {:.2} us ({fuel} fuel), drop {:.2} us, {faults:.1} page faults/event",
                tn * f,
                ts * f,
                td * f
            );
        }
    }
    // WasiCtx build alone
    let a = Instant::now();
    for _ in 0..n {
        let w = wasmtime_wasi::WasiCtxBuilder::new().build();
        drop(w);
    }
    println!(
        "WasiCtx build+drop {:.2} us",
        a.elapsed().as_secs_f64() * 1e6 / n as f64
    );
}

/// Minor page faults of this process so far (Linux; 0 elsewhere).
fn minor_faults() -> u64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            // Fields after the parenthesised command name; minflt is the 10th.
            let rest = s.rsplit_once(')')?.1.to_string();
            rest.split_whitespace().nth(7)?.parse().ok()
        })
        .unwrap_or(0)
}
