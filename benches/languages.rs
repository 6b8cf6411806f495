//! Transforms in other languages: the JavaScript transform (webhook-js,
//! componentize-js) against the empty component (the floor) and the Rust
//! PagerDuty transform, in the same run:
//!
//! * per event: a fresh Store + instantiation (from the reused
//!   InstancePre) + `start` + `resume` with a canned success response;
//! * compile: `Component::new` (no cache), a cache miss (compile + store
//!   the artifact) and a cache hit (`Component::deserialize_file`), each
//!   followed by linking and `describe` (what loading a transform costs).
//!
//! `cargo bench --bench languages`.  The JavaScript component comes from
//! ZTBRIDGE_JS_WASM (default transforms-js/webhook/webhook.wasm, built by
//! `bash ci/js.sh`); without it only the Rust rows are printed.
//! ZTBRIDGE_BENCH_ITERS sets the events per Rust case (JavaScript: a tenth).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use ztbridge_runtime::flow::{FlowInput, record};
use ztbridge_runtime::sandbox::CompileCache;
use ztbridge_runtime::sandbox::Transform;
use ztbridge_runtime::sandbox::bindings::types::{HttpResponse, Step};
use ztbridge_runtime::sandbox::{FlowContext, Sandbox};
use ztbridge_runtime::store::{MemoryState, TransformState};
use ztbridge_runtime::text::Redactor;
use ztbridge_runtime::{config::Limits, sandbox::Engine};

const WASM_DIR: &str = env!("ZTBRIDGE_WASM_DIR");

struct Case {
    name: &'static str,
    transform: Arc<Transform>,
    config: Arc<BTreeMap<String, String>>,
    response: Option<HttpResponse>,
    events: usize,
}

fn one(engine: &Engine, case: &Case, body: &str, state: &Arc<dyn TransformState>) -> u64 {
    // The host reads the event into the record per event, as delivery does.
    let record = record(&FlowInput {
        body,
        receipt_id: "bench",
        received_ms: 1_749_636_904_000,
        attempt: 1,
    });
    let event = &record;
    let ctx = FlowContext::new(
        Arc::from("route"),
        case.config.clone(),
        state.clone(),
        Arc::new(Redactor::default()),
    )
    .for_event(event);
    let mut sandbox = Sandbox::new(engine, &case.transform, ctx).expect("instantiate");
    let step = sandbox.start(event).expect("start").expect("step");
    if let Some(r) = &case.response {
        assert!(matches!(step, Step::Send(_)), "{}: {step:?}", case.name);
        let end = sandbox.resume(&[Ok(r.clone())]).expect("resume");
        assert!(matches!(end, Ok(Step::Done(_))), "{}: {end:?}", case.name);
    }
    sandbox.fuel_used()
}

/// Median microseconds per event over 10 batches; fuel of one event.
fn measure(
    engine: &Engine,
    case: &Case,
    event: &str,
    state: &Arc<dyn TransformState>,
) -> (f64, u64) {
    let batches = 10;
    let per_batch = (case.events / batches).max(1);
    let mut fuel = 0;
    for _ in 0..per_batch.min(50) {
        fuel = one(engine, case, event, state); // warm pool slots and caches
    }
    let mut samples: Vec<f64> = (0..batches)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..per_batch {
                one(engine, case, event, state);
            }
            t.elapsed().as_secs_f64() * 1e6 / per_batch as f64
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    (samples[samples.len() / 2], fuel)
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

/// Load times: no cache, cache miss (compile + write), cache hit.
fn compile_rows(engine: &Engine, name: &str, bytes: &[u8]) -> Arc<Transform> {
    let dir = std::env::temp_dir().join(format!("ztbridge-bench-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let cache = CompileCache::new(&dir);
    let t = Instant::now();
    let transform = Transform::load(engine, name, bytes).expect("load");
    let cold = ms(t);
    let t = Instant::now();
    Transform::load_with_cache(engine, name, bytes, Some(&cache)).expect("load (miss)");
    let miss = ms(t);
    let mut hits: Vec<f64> = (0..5)
        .map(|_| {
            let t = Instant::now();
            Transform::load_with_cache(engine, name, bytes, Some(&cache)).expect("load (hit)");
            ms(t)
        })
        .collect();
    hits.sort_by(f64::total_cmp);
    let entry = std::fs::metadata(cache.entry_path(&engine.wasm, bytes))
        .map(|m| m.len())
        .unwrap_or(0);
    println!(
        "{name:<16} {:>9.1} KB wasm  {:>9.1} KB compiled   load: no cache {cold:>9.1} ms | cache miss {miss:>9.1} ms | cache hit {:>7.2} ms ({:.0}x faster)",
        bytes.len() as f64 / 1024.0,
        entry as f64 / 1024.0,
        hits[2],
        cold / hits[2],
    );
    let _ = std::fs::remove_dir_all(&dir);
    transform
}

fn main() {
    let iters: usize = std::env::var("ZTBRIDGE_BENCH_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let engine = Engine::new(Limits::default()).expect("engine");
    let state: Arc<dyn TransformState> = Arc::new(MemoryState::default());
    let body = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/events/critical-lockout.json"
    ))
    .expect("fixture");
    let event: &str = &body;
    let js_path = std::env::var_os("ZTBRIDGE_JS_WASM")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/transforms-js/webhook/webhook.wasm"
            ))
        });
    let read = |p: &str| std::fs::read(p).unwrap_or_else(|e| panic!("{p}: {e}"));

    println!("== compile (load = compile + link + describe)");
    let empty = compile_rows(&engine, "empty", &read(&format!("{WASM_DIR}/empty.wasm")));
    let pd = compile_rows(
        &engine,
        "pagerduty",
        &read(&format!("{WASM_DIR}/pagerduty.wasm")),
    );
    let js = match std::fs::read(&js_path) {
        Ok(bytes) => Some(compile_rows(&engine, "webhook-js", &bytes)),
        Err(_) => {
            println!(
                "webhook-js       not built ({} missing; `bash ci/js.sh` builds it): JavaScript rows skipped",
                js_path.display()
            );
            None
        }
    };

    let ok = |status: u16, body: &str| {
        Some(HttpResponse {
            status,
            headers: vec![],
            body: body.into(),
        })
    };
    let mut cases = vec![
        Case {
            name: "empty (floor)",
            transform: empty,
            config: Arc::new(BTreeMap::new()),
            response: None,
            events: iters,
        },
        Case {
            name: "pagerduty+202",
            transform: pd,
            config: Arc::new(
                [(
                    "routing_key".to_string(),
                    "R0UTINGKEY0123456789abcdef012345".to_string(),
                )]
                .into(),
            ),
            response: ok(202, r#"{"status":"success","message":"Event processed"}"#),
            events: iters,
        },
    ];
    if let Some(js) = js {
        cases.push(Case {
            name: "webhook-js+200",
            transform: js,
            config: Arc::new(
                [(
                    "url".to_string(),
                    "https://hooks.slack.com/services/T0/B0/X".to_string(),
                )]
                .into(),
            ),
            response: ok(200, "ok"),
            events: (iters / 10).max(20),
        });
    }
    println!(
        "== per event: fresh Store + instantiate + start (+ resume with a canned success); median of 10 batches"
    );
    let (floor, floor_fuel) = measure(&engine, &cases[0], event, &state);
    println!(
        "{:<16} {floor:>9.2} us/event  (1.00x floor)  fuel {floor_fuel:>11}  [{} events]",
        cases[0].name, cases[0].events
    );
    for case in &cases[1..] {
        let (us, fuel) = measure(&engine, case, &event, &state);
        println!(
            "{:<16} {us:>9.2} us/event  ({:.2}x floor)  fuel {fuel:>11}  [{} events]",
            case.name,
            us / floor,
            case.events
        );
    }
}
