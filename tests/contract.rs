//! Contract 0.2 (`wit/ztbridge.wit`), held by real components built in the
//! build: the host reads the event once and guests in Rust, JavaScript and
//! Python see the same fields; no ambient clock or randomness; typed transport
//! errors; components built for 0.1.0 are refused with a clear message.

mod common;

use std::sync::Arc;

use common::*;
use serde_json::{Value, json};
use ztbridge_runtime::config::{Limits, RouteConfig};
use ztbridge_runtime::egress::{CannedTransport, HttpTransport, Transport};
use ztbridge_runtime::flow::{self, FlowInput, FlowReport, Outcome, Route};
use ztbridge_runtime::sandbox::{Engine, Transform};
use ztbridge_runtime::store::{MemoryState, TransformState};

/// The JavaScript probe, built by `ci/js.sh`.
fn js_probe() -> Option<String> {
    let path = std::env::var("ZTBRIDGE_JS_PROBE_WASM").unwrap_or_else(|_| {
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/transforms-js/probe/probe.wasm"
        )
        .to_string()
    });
    if std::path::Path::new(&path).exists() {
        return Some(path);
    }
    assert!(
        std::env::var_os("ZTBRIDGE_REQUIRE_JS").is_none(),
        "{path} is missing: run `bash ci/js.sh`"
    );
    eprintln!("skipping the JavaScript half: {path} is missing (bash ci/js.sh builds it)");
    None
}

/// The Python probe (transforms-py/probe), built by `ci/py.sh`.
fn py_probe() -> Option<String> {
    let path = std::env::var("ZTBRIDGE_PY_PROBE_WASM").unwrap_or_else(|_| {
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/transforms-py/probe/probe.wasm"
        )
        .to_string()
    });
    if std::path::Path::new(&path).exists() {
        return Some(path);
    }
    assert!(
        std::env::var_os("ZTBRIDGE_REQUIRE_PY").is_none(),
        "{path} is missing: run `bash ci/py.sh`"
    );
    eprintln!("skipping the Python third: {path} is missing (bash ci/py.sh builds it)");
    None
}

struct Harness {
    engine: Arc<Engine>,
    state: Arc<dyn TransformState>,
}

impl Harness {
    fn new() -> Harness {
        Harness {
            engine: Arc::new(Engine::new(Limits::default()).expect("engine")),
            state: Arc::new(MemoryState::default()),
        }
    }

    fn route(&self, wasm: &str, config: &[(&str, &str)]) -> Route {
        let bytes = std::fs::read(wasm).expect("component");
        let transform = Transform::load(&self.engine, wasm, &bytes).expect("load");
        let mut text =
            "name = \"probe\"\ntransform = \"x\"\nallow_http = true\nprivate_networks = [\"127.0.0.0/8\"]\n[config]\n"
                .to_string();
        for (k, v) in config {
            text.push_str(&format!("{k} = {v:?}\n"));
        }
        let rc: RouteConfig = toml::from_str(&text).expect("route config");
        Route::build(&rc, transform, &|_| None).expect("route")
    }

    async fn run(
        &self,
        route: &Route,
        body: &str,
        receipt: &str,
        transport: &impl Transport,
    ) -> FlowReport {
        let event = flow::record(&FlowInput {
            body,
            receipt_id: receipt,
            received_ms: 1_749_636_904_250,
            attempt: 1,
        });
        flow::run(&self.engine, route, &self.state, event, transport).await
    }
}

fn done(report: &FlowReport) -> Value {
    match &report.outcome {
        Outcome::Done { message } => serde_json::from_str(message).expect("JSON outcome"),
        other => panic!("flow did not finish: {other:?}"),
    }
}

/// Events that two hand-written parsers read differently.
fn tricky_events() -> Vec<(&'static str, String)> {
    vec![
        ("duplicate keys (the last wins, as serde_json reads it)", r#"{"id": "first", "id": "second", "severity": "Major"}"#.into()),
        ("mixed-case and spelled keys", r#"{"EventID": "RSW-9", "Severity": "CRITICAL", "Client-IPs": ["10.0.0.1", " 10.0.0.2 "], "user_name": "CORP\\jsmith", "Share": "finance"}"#.into()),
        ("a wrapped payload", r#"{"event": {"eventId": "W-1", "incidentId": "INC-7", "state": "ACCESS_RESTORED", "nes": ["prod-1"], "files": ["/a", "/b"]}}"#.into()),
        ("numbers as IDs, severities and strings", r#"{"id": 1.5e3, "severity": 2, "user": 42, "signalStrength": 3.50}"#.into()),
        ("a 20-digit numeric ID keeps every digit", r#"{"id": 12345678901234567890, "state": "LOCKED_OUT"}"#.into()),
        ("an ID with spaces around it", r#"{"id": "  RSW-SPACE  ", "state": "locked out (delayed)"}"#.into()),
        ("no ID at all", r#"{"severity": "Warning", "state": "MONITOR", "detected": "2025-06-11 10:15:03"}"#.into()),
        ("impossible and epoch times", r#"{"id": "T", "detected": "2025-02-31T10:00:00Z", "updated": 1749636903250}"#.into()),
        ("objects where text is expected", r#"{"id": {"value": "OBJ-1"}, "user": {"name": "bob"}, "clientIPs": [{"ip": "10.1.1.1"}, {"address": "10.1.1.2"}], "rule": {"name": "Mass rename"}}"#.into()),
        ("a field only event-field reads", r#"{"id": "X", "extra": [{"name": "deep value"}, 2]}"#.into()),
        ("unicode and escapes", r#"{"id": "\u00e9t\u00e9-\ud83d\ude00", "user": "tab\tand\nnewline", "paths": ["/\u00fc/\"q\""]}"#.into()),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_javascript_and_python_transforms_see_the_same_event() {
    let h = Harness::new();
    let rust = h.route(&wasm_path("probe"), &[("mode", "echo")]);
    let js = js_probe().map(|p| h.route(&p, &[]));
    let py = py_probe().map(|p| h.route(&p, &[]));
    let canned = CannedTransport::new(vec![]);
    for (what, body) in tricky_events() {
        let from_rust = done(&h.run(&rust, &body, "r1", &canned).await);
        println!("{what}: {from_rust}");
        if let Some(js) = &js {
            let from_js = done(&h.run(js, &body, "r1", &canned).await);
            assert_eq!(from_rust, from_js, "{what}: Rust and JavaScript disagree");
        }
        if let Some(py) = &py {
            let from_py = done(&h.run(py, &body, "r1", &canned).await);
            assert_eq!(from_rust, from_py, "{what}: Rust and Python disagree");
        }
        // What the record says, checked against the event itself.
        match what {
            w if w.starts_with("duplicate keys") => assert_eq!(from_rust["event_id"], "second"),
            w if w.starts_with("mixed-case") => {
                assert_eq!(from_rust["event_id"], "RSW-9");
                assert_eq!(from_rust["severity"], "critical");
                assert_eq!(from_rust["client_ips"], json!(["10.0.0.1", "10.0.0.2"]));
                assert_eq!(from_rust["shares"], json!(["finance"]));
            }
            w if w.starts_with("a wrapped payload") => {
                assert_eq!(from_rust["event_id"], "W-1");
                assert_eq!(from_rust["alert_id"], "INC-7");
                assert_eq!(from_rust["state_kind"], "closed");
                assert_eq!(from_rust["state_class"], "access_restored");
                assert_eq!(from_rust["clusters"], json!(["prod-1"]));
            }
            w if w.starts_with("numbers as IDs") => {
                assert_eq!(from_rust["event_id"], "1.5e3");
                assert_eq!(from_rust["severity"], "other");
                assert_eq!(from_rust["user"], "42");
            }
            w if w.starts_with("a 20-digit") => {
                assert_eq!(from_rust["event_id"], "12345678901234567890");
                assert_eq!(from_rust["state_kind"], "open");
            }
            w if w.starts_with("an ID with spaces") => {
                assert_eq!(from_rust["event_id"], "RSW-SPACE");
                assert_eq!(from_rust["state_class"], "delayed_lockout");
            }
            w if w.starts_with("no ID") => {
                assert_eq!(from_rust["event_id"], Value::Null);
                assert_eq!(from_rust["state_kind"], "update");
                assert_eq!(from_rust["detected_at"], "2025-06-11T10:15:03Z");
            }
            w if w.starts_with("impossible") => {
                assert_eq!(from_rust["detected_at"], Value::Null);
                assert_eq!(from_rust["detected_text"], "2025-02-31T10:00:00Z");
                assert_eq!(from_rust["updated_at"], "2025-06-11T10:15:03.250Z");
            }
            w if w.starts_with("objects") => {
                assert_eq!(from_rust["event_id"], "OBJ-1");
                assert_eq!(from_rust["user"], "bob");
                assert_eq!(from_rust["client_ips"], json!(["10.1.1.1", "10.1.1.2"]));
                assert_eq!(from_rust["policy"], "Mass rename");
            }
            w if w.starts_with("a field only") => assert_eq!(from_rust["field"], "deep value"),
            w if w.starts_with("unicode") => {
                assert_eq!(from_rust["event_id"], "\u{e9}t\u{e9}-\u{1f600}");
                assert_eq!(from_rust["raw_length"], body.len());
            }
            _ => {}
        }
    }
    // And every fixture event.
    for (name, body) in event_fixtures() {
        let from_rust = done(&h.run(&rust, &body, "r1", &canned).await);
        if let Some(js) = &js {
            let from_js = done(&h.run(js, &body, "r1", &canned).await);
            assert_eq!(from_rust, from_js, "{name}: Rust and JavaScript disagree");
        }
        if let Some(py) = &py {
            let from_py = done(&h.run(py, &body, "r1", &canned).await);
            assert_eq!(from_rust, from_py, "{name}: Rust and Python disagree");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clocks_read_the_event_time_and_random_bytes_follow_the_receipt() {
    let h = Harness::new();
    let canned = CannedTransport::new(vec![]);
    let body = fixture("events/critical-lockout.json");
    // The wall clock is the receive time; the monotonic clock stands still.
    let probe = h.route(&wasm_path("probe"), &[("mode", "clock")]);
    let clock = done(&h.run(&probe, &body, "r1", &canned).await);
    assert_eq!(clock["wall_ms"], 1_749_636_904_250u64, "{clock}");
    assert_eq!(clock["mono_moved_ns"], 0, "{clock}");
    // Random bytes: declared, so given; the same for the same receipt (a
    // replay builds the same requests), different for another.
    let probe = h.route(&wasm_path("probe"), &[("mode", "random")]);
    let a = done(&h.run(&probe, &body, "r-A", &canned).await);
    let again = done(&h.run(&probe, &body, "r-A", &canned).await);
    let b = done(&h.run(&probe, &body, "r-B", &canned).await);
    assert_eq!(a, again);
    assert_ne!(a, b);
    // Not declared: the call traps, and the error names it.
    let hostile = h.route(&wasm_path("hostile"), &[("mode", "random")]);
    let report = h.run(&hostile, &body, "r-A", &canned).await;
    match &report.outcome {
        Outcome::Failed {
            retryable, message, ..
        } => {
            assert!(!retryable);
            assert!(
                message.contains("wasi:random/random.get-random-u64")
                    && message.contains("does not declare needs-random"),
                "{message}"
            );
        }
        other => panic!("undeclared randomness must trap: {other:?}"),
    }
    // A transform without the declaration still reads the event's time.
    let hostile = h.route(&wasm_path("hostile"), &[("mode", "clock")]);
    let report = h.run(&hostile, &body, "r-A", &canned).await;
    assert!(
        matches!(&report.outcome, Outcome::Done { message } if message == "wall_ms=1749636904250"),
        "{:?}",
        report.outcome
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_gets_no_response_reaches_the_transform_as_a_typed_error() {
    let h = Harness::new();
    let closed_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{closed_port}/x");
    let probe = h.route(&wasm_path("probe"), &[("mode", "results"), ("url", &url)]);
    let transport = HttpTransport::new(std::time::Duration::from_secs(5), 1 << 20).expect("client");
    let report = h
        .run(
            &probe,
            &fixture("events/critical-lockout.json"),
            "r1",
            &transport,
        )
        .await;
    let seen = done(&report);
    let errors: Vec<&str> = seen
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["error"].as_str().unwrap_or("(a response)"))
        .collect();
    assert_eq!(errors.len(), 2, "{seen}");
    assert!(
        errors
            .iter()
            .all(|e| e.starts_with("TransportError::Connect(") && e.contains("Connection refused")),
        "{seen}"
    );
    // The record keeps what happened: no status, the kind, the cause.
    let step = &report.steps[0];
    assert_eq!(step.responses[0].status, 0);
    let rec = serde_json::to_value(&step.responses[0]).unwrap();
    assert_eq!(rec["failure"], "connect", "{rec}");
}

#[test]
fn a_component_built_for_contract_0_1_is_refused_with_how_to_rebuild() {
    let engine = Engine::new(Limits::default()).expect("engine");
    let bytes = std::fs::read(wasm_path("v01")).expect("the 0.1.0 fixture component");
    let err = Transform::load(&engine, "v01.wasm", &bytes)
        .err()
        .expect("refused");
    let text = err.to_string();
    for needle in [
        "v01.wasm",
        "built for ztbridge:transform@0.1.0",
        "this ztbridge runs ztbridge:transform@0.2.0",
        "Rebuild it",
    ] {
        assert!(text.contains(needle), "{needle:?} in {text}");
    }
    // The same through the CLI.
    let (code, _, stderr) = ztbridge(&["transform", "inspect", &wasm_path("v01")]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("ztbridge:transform@0.1.0"), "{stderr}");
}

#[test]
fn inspect_shows_the_contract_version() {
    let (code, v, stderr) = ztbridge(&["transform", "inspect", "builtin:pagerduty"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(v["contract"], "ztbridge:transform@0.2.0", "{v}");
}
