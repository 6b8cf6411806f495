//! Per-event cost of the sandbox: a fresh Store + instantiation (from the
//! reused InstancePre) + `start` on one event, for the PagerDuty transform
//! and for the empty component (the floor), measured in the same run.
//!
//! `cargo bench --bench per_event` (ZTBRIDGE_BENCH_ITERS to change the
//! iteration count).  Prints microseconds per event (the median and the
//! best of 20 batches, the cases taking turns) and the ratio to the floor.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use ztbridge_runtime::flow::{FlowInput, record};
use ztbridge_runtime::sandbox::Transform;
use ztbridge_runtime::sandbox::bindings::types::{HttpResponse, Step, TransportError};
use ztbridge_runtime::sandbox::{FlowContext, Sandbox, block_on};
use ztbridge_runtime::store::{MemoryState, TransformState};
use ztbridge_runtime::text::Redactor;
use ztbridge_runtime::{config::Limits, sandbox::Engine};

const WASM_DIR: &str = env!("ZTBRIDGE_WASM_DIR");

struct Case {
    name: &'static str,
    transform: Arc<Transform>,
    config: Arc<BTreeMap<String, String>>,
    /// The webhook body: the host reads it into the event record per
    /// event (`flow::record`), as delivery does.
    body: Arc<str>,
    /// Canned responses fed back step by step (empty: only `start`).
    responses: Vec<Vec<Result<HttpResponse, TransportError>>>,
    state: Arc<dyn TransformState>,
}

fn one(engine: &Engine, case: &Case) {
    let event = record(&FlowInput {
        body: &case.body,
        receipt_id: "bench",
        received_ms: 1_749_636_904_000,
        attempt: 1,
    });
    let ctx = FlowContext::new(
        Arc::from("route"),
        case.config.clone(),
        case.state.clone(),
        Arc::new(Redactor::default()),
    )
    .for_event(&event);
    let mut sandbox = block_on(Sandbox::new(engine, &case.transform, ctx)).expect("instantiate");
    let mut step = block_on(sandbox.start(&event)).expect("start");
    for responses in &case.responses {
        match step {
            Ok(Step::Send(_)) => step = block_on(sandbox.resume(responses)).expect("resume"),
            other => panic!("{}: flow ended early: {other:?}", case.name),
        }
    }
    match step {
        Ok(_) if case.responses.is_empty() => {}
        Ok(Step::Done(_)) => {}
        other => panic!("{}: unexpected end {other:?}", case.name),
    }
}

fn ok(status: u16, body: &str) -> Vec<Result<HttpResponse, TransportError>> {
    vec![Ok(HttpResponse {
        status,
        headers: vec![],
        body: body.to_string(),
    })]
}

/// Microseconds per event of each case: the median and the best of
/// `batches` batches of `per_batch` events.  The cases take turns batch by
/// batch, so a noisy moment of the machine falls on all of them alike and
/// the ratios to the floor stay meaningful.
fn measure(engine: &Engine, cases: &[Case], batches: usize, per_batch: usize) -> Vec<(f64, f64)> {
    for case in cases {
        for _ in 0..per_batch {
            one(engine, case); // warm the pool slots and caches
        }
    }
    let mut samples: Vec<Vec<f64>> = vec![Vec::with_capacity(batches); cases.len()];
    for _ in 0..batches {
        for (case, samples) in cases.iter().zip(&mut samples) {
            let t = Instant::now();
            for _ in 0..per_batch {
                one(engine, case);
            }
            samples.push(t.elapsed().as_secs_f64() * 1e6 / per_batch as f64);
        }
    }
    samples
        .into_iter()
        .map(|mut s| {
            s.sort_by(f64::total_cmp);
            (s[s.len() / 2], s[0])
        })
        .collect()
}

fn main() {
    let iters: usize = std::env::var("ZTBRIDGE_BENCH_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let batches = 20;
    let per_batch = (iters / batches).max(1);
    let engine = Engine::new(Limits::default()).expect("engine");
    let state: Arc<dyn TransformState> = Arc::new(MemoryState::default());
    // Jitbit update: the category and the ticket are already known.
    let known: Arc<dyn TransformState> = Arc::new(MemoryState::with(
        "route",
        [
            (
                "category:storage security event".to_string(),
                "7".to_string(),
            ),
            ("ticket:RSW-20250611-000123".to_string(), "1001".to_string()),
        ]
        .into(),
    ));
    let load = |file: &str| {
        let bytes = std::fs::read(format!("{WASM_DIR}/{file}")).expect("component");
        let t = Instant::now();
        let tr = Transform::load(&engine, file, &bytes).expect("load");
        (tr, t.elapsed().as_secs_f64() * 1e3, bytes.len())
    };
    let body = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/events/critical-lockout.json"
    ))
    .expect("fixture");
    let event: Arc<str> = Arc::from(body.as_str());

    let (empty, empty_compile_ms, empty_size) = load("empty.wasm");
    let (pd, pd_compile_ms, pd_size) = load("pagerduty.wasm");
    let (jb, jb_compile_ms, jb_size) = load("jitbit.wasm");
    let jitbit_config: Arc<BTreeMap<String, String>> = Arc::new(
        [
            (
                "url".to_string(),
                "https://acme.jitbit.com/helpdesk/api".to_string(),
            ),
            ("token".to_string(), "t0ken-t0ken".to_string()),
        ]
        .into(),
    );
    let categories = r#"[{"CategoryID":7,"Name":"Storage Security Event","SectionID":1,"Section":"Helpdesk","NameWithSection":"Helpdesk / Storage Security Event","ForTechsOnly":false}]"#;
    let cases = [
        Case {
            name: "empty (floor)",
            transform: empty,
            config: Arc::new(BTreeMap::new()),
            body: event.clone(),
            responses: vec![],
            state: state.clone(),
        },
        Case {
            name: "pagerduty",
            transform: pd.clone(),
            config: Arc::new(
                [(
                    "routing_key".to_string(),
                    "R0UTINGKEY0123456789abcdef012345".to_string(),
                )]
                .into(),
            ),
            body: event.clone(),
            responses: vec![],
            state: state.clone(),
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
            body: event.clone(),
            responses: vec![ok(
                202,
                r#"{"status":"success","message":"Event processed","dedup_key":"x"}"#,
            )],
            state: state.clone(),
        },
        Case {
            name: "jitbit new",
            transform: jb.clone(),
            config: jitbit_config.clone(),
            body: event.clone(),
            responses: vec![ok(200, categories), ok(200, "[]"), ok(200, "1001")],
            state: state.clone(),
        },
        Case {
            name: "jitbit update",
            transform: jb,
            config: jitbit_config,
            body: event,
            responses: vec![ok(200, "")],
            state: known,
        },
    ];
    println!(
        "per-event cost: fresh Store + instantiate (InstancePre) + start(); {iters} events per case, median of {batches} batches"
    );
    println!(
        "component sizes: empty {empty_size} B (compile {empty_compile_ms:.1} ms), pagerduty {pd_size} B (compile {pd_compile_ms:.1} ms), jitbit {jb_size} B (compile {jb_compile_ms:.1} ms)"
    );
    println!(
        "rows: empty = start() answering done; pagerduty = start() building the request; pagerduty+202 = start + resume(202);"
    );
    println!(
        "      jitbit new = categories + search + create (4 calls); jitbit update = comment on a known ticket (2 calls)"
    );
    let results = measure(&engine, &cases, batches, per_batch);
    let (floor, floor_best) = results[0];
    println!(
        "{:<16} {:>9} {:>9} {:>9}",
        "case", "median", "best", "x floor"
    );
    for (case, (median, best)) in cases.iter().zip(&results) {
        println!(
            "{:<16} {:>6.2} us {:>6.2} us {:>8.2}x",
            case.name,
            median,
            best,
            median / floor
        );
    }
    println!(
        "targets: floor <= 10 us ({}), pagerduty start <= 25 us ({})",
        verdict(floor, floor_best, 10.0),
        verdict(results[1].0, results[1].1, 25.0)
    );
}

/// Whether a row meets its target, by its median and by its best batch.
fn verdict(median: f64, best: f64, target: f64) -> &'static str {
    match (median <= target, best <= target) {
        (true, _) => "met",
        (false, true) => "met by the best batch only: the machine is noisy",
        (false, false) => "NOT met",
    }
}
