//! Where the floor of the per-event cost goes: for the empty component,
//! time to create a Store and instantiate (`new`), the one `start` call,
//! and dropping the Store (returning the pool slot), plus building a WASI
//! context alone.  `cargo bench --bench sandbox_phases`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;
use ztbridge_runtime::bindings::types::Event;
use ztbridge_runtime::engine::{Engine, Limits};
use ztbridge_runtime::redact::Redactor;
use ztbridge_runtime::sandbox::{FlowContext, Sandbox};
use ztbridge_runtime::state::{MemoryState, StateStore};
use ztbridge_runtime::transform::Transform;
fn main() {
    let engine = Engine::new(Limits::default()).unwrap();
    let bytes = std::fs::read(format!("{}/empty.wasm", env!("ZTBRIDGE_WASM_DIR"))).unwrap();
    let t = Transform::load(&engine, "e", &bytes).unwrap();
    let state: Arc<dyn StateStore> = Arc::new(MemoryState::default());
    let cfg = Arc::new(BTreeMap::new());
    let ev = Event {
        body: "{}".into(),
        receipt_id: "x".into(),
        received_at: "y".into(),
        attempt: 1,
    };
    let n: usize = std::env::var("ZTBRIDGE_BENCH_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    for round in 0..2 {
        let (mut tn, mut ts, mut td) = (0f64, 0f64, 0f64);
        for _ in 0..n {
            let a = Instant::now();
            let ctx = FlowContext::new(
                Arc::from("r"),
                cfg.clone(),
                state.clone(),
                Arc::new(Redactor::default()),
            );
            let mut s = Sandbox::new(&engine, &t, ctx).unwrap();
            let b = Instant::now();
            let _ = s.start(&ev).unwrap();
            let c = Instant::now();
            drop(s);
            let d = Instant::now();
            tn += (b - a).as_secs_f64();
            ts += (c - b).as_secs_f64();
            td += (d - c).as_secs_f64();
        }
        let f = 1e6 / n as f64;
        println!(
            "round {round}: new {:.2} us, start {:.2} us, drop {:.2} us",
            tn * f,
            ts * f,
            td * f
        );
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
