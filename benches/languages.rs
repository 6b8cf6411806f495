//! Transforms in other languages: the JavaScript transform (webhook-js,
//! componentize-js) and the Python one (servicenow, componentize-py)
//! against the empty component (the floor) and the Rust PagerDuty
//! transform, and the contract probe (the same work: echo the event
//! record) in Rust, JavaScript and Python, in the same run:
//!
//! * per event: a fresh Store + instantiation (from the reused
//!   InstancePre) + `start` + `resume` with a canned success response;
//! * compile: `Component::new` (no cache), a cache miss (compile + store
//!   the artifact) and a cache hit (`Component::deserialize_file`), each
//!   followed by linking and `describe` (what loading a transform costs).
//!
//! `cargo bench --bench languages`.  The JavaScript components come from
//! ZTBRIDGE_JS_WASM and ZTBRIDGE_JS_PROBE_WASM (default transforms-js/,
//! built by `bash ci/js.sh`), the Python ones from
//! ZTBRIDGE_PY_SERVICENOW_WASM and ZTBRIDGE_PY_PROBE_WASM (default
//! transforms-py/, built by `bash ci/py.sh`); a missing one's rows are
//! skipped.  ZTBRIDGE_BENCH_ITERS sets the events per Rust case
//! (JavaScript and Python: a tenth).  Every time is also given as a ratio
//! to the Rust row doing the same work in this run.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use ztbridge_runtime::flow::{FlowInput, record};
use ztbridge_runtime::sandbox::CompileCache;
use ztbridge_runtime::sandbox::Transform;
use ztbridge_runtime::sandbox::bindings::types::{HttpResponse, Step};
use ztbridge_runtime::sandbox::{FlowContext, Sandbox, block_on};
use ztbridge_runtime::store::{MemoryState, TransformState};
use ztbridge_runtime::text::Redactor;
use ztbridge_runtime::{config::Limits, sandbox::Engine};

const WASM_DIR: &str = env!("ZTBRIDGE_WASM_DIR");

struct Case {
    name: &'static str,
    transform: Arc<Transform>,
    config: Arc<BTreeMap<String, String>>,
    /// The canned answer to each step's one request, in order (empty: the
    /// flow ends in `start`).
    responses: Vec<HttpResponse>,
    events: usize,
    /// The case whose ratio this one is reported against (Rust, same work).
    baseline: usize,
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
    let mut sandbox = block_on(Sandbox::new(engine, &case.transform, ctx)).expect("instantiate");
    let mut step = block_on(sandbox.start(event))
        .expect("start")
        .expect("step");
    for r in &case.responses {
        assert!(matches!(step, Step::Send(_)), "{}: {step:?}", case.name);
        step = block_on(sandbox.resume(&[Ok(r.clone())]))
            .expect("resume")
            .unwrap_or_else(|f| panic!("{}: {f:?}", case.name));
    }
    assert!(matches!(step, Step::Done(_)), "{}: {step:?}", case.name);
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
    let optional = |name: &str, var: &str, default: &str, script: &str| {
        let path = std::env::var_os(var)
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(default));
        match std::fs::read(&path) {
            Ok(bytes) => Some(compile_rows(&engine, name, &bytes)),
            Err(_) => {
                println!(
                    "{name:<16} not built ({} missing; `bash {script}` builds it): its rows are skipped",
                    path.display()
                );
                None
            }
        }
    };
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
    let servicenow = optional(
        "servicenow-py",
        "ZTBRIDGE_PY_SERVICENOW_WASM",
        "transforms-py/servicenow/servicenow.wasm",
        "ci/py.sh",
    );
    let probe = compile_rows(&engine, "probe", &read(&format!("{WASM_DIR}/probe.wasm")));
    let probe_js = optional(
        "probe-js",
        "ZTBRIDGE_JS_PROBE_WASM",
        "transforms-js/probe/probe.wasm",
        "ci/js.sh",
    );
    let probe_py = optional(
        "probe-py",
        "ZTBRIDGE_PY_PROBE_WASM",
        "transforms-py/probe/probe.wasm",
        "ci/py.sh",
    );

    let ok = |status: u16, body: &str| HttpResponse {
        status,
        headers: vec![],
        body: body.into(),
    };
    let mut cases = vec![
        Case {
            name: "empty (floor)",
            transform: empty,
            config: Arc::new(BTreeMap::new()),
            responses: vec![],
            events: iters,
            baseline: 0,
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
            responses: vec![ok(
                202,
                r#"{"status":"success","message":"Event processed"}"#,
            )],
            events: iters,
            baseline: 1,
        },
        Case {
            name: "probe (echo)",
            transform: probe,
            config: Arc::new([("mode".to_string(), "echo".to_string())].into()),
            responses: vec![],
            events: iters,
            baseline: 2,
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
            responses: vec![ok(200, "ok")],
            events: (iters / 10).max(20),
            baseline: 1,
        });
    }
    if let Some(t) = servicenow {
        cases.push(Case {
            name: "servicenow-py",
            transform: t,
            config: Arc::new(
                [
                    ("instance_url", "https://acme.service-now.com"),
                    ("user", "ztbridge"),
                    ("password", "secret"),
                ]
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .into(),
            ),
            // Search (none found), then create.
            responses: vec![
                ok(200, r#"{"result":[]}"#),
                ok(
                    201,
                    r#"{"result":{"sys_id":"46d44a5ea9fe198101e6f2b8e4efb4b2","number":"INC0010001"}}"#,
                ),
            ],
            events: (iters / 10).max(20),
            baseline: 1,
        });
    }
    for (name, t) in [("probe-js (echo)", probe_js), ("probe-py (echo)", probe_py)] {
        if let Some(t) = t {
            cases.push(Case {
                name,
                transform: t,
                config: Arc::new(BTreeMap::new()),
                responses: vec![],
                events: (iters / 10).max(20),
                baseline: 2,
            });
        }
    }
    println!(
        "== per event: fresh Store + instantiate + start (+ resume with a canned success); median of 10 batches"
    );
    println!(
        "   (x Rust: against pagerduty (Rust) for the delivering transforms, against the Rust probe for the probes)"
    );
    let mut results: Vec<(f64, u64)> = vec![];
    for case in &cases {
        let (us, fuel) = measure(&engine, case, event, &state);
        results.push((us, fuel));
        let (floor, _) = results[0];
        let (base_us, base_fuel) = results[case.baseline];
        println!(
            "{:<16} {us:>9.2} us/event  ({:>6.2}x floor, {:>6.2}x Rust)  fuel {fuel:>11} ({:>6.1}x Rust)  [{} events]",
            case.name,
            us / floor,
            us / base_us,
            fuel as f64 / base_fuel.max(1) as f64,
            case.events
        );
    }
}
