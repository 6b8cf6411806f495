//! Reports what the host gives a transform, for the contract's tests.
//! Config key `mode`:
//!
//! | mode      | what the flow does                                             |
//! |-----------|----------------------------------------------------------------|
//! | `echo`    | done: the event record as JSON (the cross-language test)       |
//! | `clock`   | done: what WASI's wall and monotonic clocks read               |
//! | `random`  | done: a u64 from WASI's `get-random-u64` (declared)            |
//! | `results` | GETs config `url`, then done: what each request gave           |
//!
//! It declares `needs-random`; the hostile transform does not, and its
//! `random` mode shows the trap.

use serde_json::{Value, json};
use ztbridge_sdk::{
    ConfigKey, EgressRule, Event, EventInput, Failure, Guest, Info, Phase, Request, Response,
    SeverityLevel, Step, config, export, send,
};

struct Probe;

// WASI's secure random, imported directly (the SDK has no wrapper: a
// transform that wants randomness asks WASI for it).
#[link(wasm_import_module = "wasi:random/random@0.2.6")]
unsafe extern "C" {
    #[link_name = "get-random-u64"]
    fn get_random_u64() -> i64;
}

/// The record as the cross-language test compares it.
pub fn echo(e: &Event) -> Value {
    let r = &e.record;
    json!({
        "event_id": r.event_id,
        "alert_id": r.alert_id,
        "severity": match r.severity {
            SeverityLevel::Critical => "critical",
            SeverityLevel::Major => "major",
            SeverityLevel::Warning => "warning",
            SeverityLevel::Other => "other",
        },
        "severity_text": r.severity_text,
        "state": r.state,
        "state_kind": match r.state_kind {
            Phase::Open => "open",
            Phase::Update => "update",
            Phase::Closed => "closed",
        },
        "state_class": r.state_class,
        "detected_at": r.detected_at,
        "detected_text": r.detected_text,
        "updated_at": r.updated_at,
        "updated_text": r.updated_text,
        "user": r.user,
        "paths": r.paths,
        "shares": r.shares,
        "client_ips": r.client_ips,
        "policy": r.policy,
        "clusters": r.clusters,
        "detectors": r.detectors,
        "signal_strength": r.signal_strength,
        "event_source": r.event_source,
        "console_url": r.console_url,
        "protection_mode": r.protection_mode,
        "snapshots": r.snapshots,
        "raw_length": r.raw.len(),
        "field": e.field(&config::get_or("field", "extra.0.name")),
    })
}

/// What WASI's clocks read: the wall clock in ms since the epoch, and how
/// far the monotonic clock moved across a busy loop.
pub fn clocks() -> Value {
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let start = std::time::Instant::now();
    let mut x = 0u64;
    for i in 0..100_000u64 {
        x = std::hint::black_box(x.wrapping_add(i));
    }
    json!({ "wall_ms": wall, "mono_moved_ns": start.elapsed().as_nanos() as u64, "x": x })
}

/// A u64 from WASI's secure random.
pub fn random() -> Value {
    // SAFETY: a WASI import with no arguments and a plain i64 result.
    let n = unsafe { get_random_u64() } as u64;
    json!({ "u64": n.to_string() })
}

impl Guest for Probe {
    fn describe() -> Info {
        let key = |name: &str| ConfigKey {
            name: name.into(),
            description: String::new(),
            required: false,
            secret: false,
            default_value: None,
        };
        Info {
            name: "probe".into(),
            version: "0.2.0".into(),
            description: "reports what the host gives a transform (tests)".into(),
            egress: vec![EgressRule::ConfigUrl("url".into())],
            config: vec![key("mode"), key("url"), key("field")],
            needs_random: true,
        }
    }

    fn start(input: EventInput) -> Result<Step, Failure> {
        let event = Event::new(input);
        let done = |v: Value| Ok(Step::Done(v.to_string()));
        match config::get_or("mode", "echo").as_str() {
            "clock" => done(clocks()),
            "random" => done(random()),
            "results" => {
                let url = config::require("url")?;
                Ok(send(vec![Request::get(&url), Request::get(&url)]))
            }
            _ => done(echo(&event)),
        }
    }

    fn resume(responses: Vec<Response>) -> Result<Step, Failure> {
        let seen: Vec<Value> = responses
            .iter()
            .map(|r| match r {
                Ok(resp) => json!({ "status": resp.status }),
                Err(e) => json!({ "error": format!("{e:?}") }),
            })
            .collect();
        Ok(Step::Done(Value::Array(seen).to_string()))
    }
}

export!(Probe);
