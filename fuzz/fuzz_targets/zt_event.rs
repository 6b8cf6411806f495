//! The zt-event parser (`Event::parse`, the scanner every route reads
//! fields through) and its helpers.  Properties: no panic; the scanner
//! agrees with serde_json on what is JSON; and an event parsed from the
//! text and one made from the serde_json value of the same text read the
//! same fields (ID, severity, state, user, files, clusters...), when every
//! number in it is an integer (`Event::from_value` documents why floats
//! may read one unit in the last place apart).

#![no_main]

use libfuzzer_sys::fuzz_target;
use zt_event::{Event, Severity, StateKind};

fn fields(e: &Event) -> Vec<String> {
    let mut out = vec![
        format!("{:?}", e.id()),
        e.severity().label(),
        format!("{:?}", e.state()),
        format!("{:?}", e.state_kind()),
        format!("{:?}", e.user()),
        format!("{:?}", e.files()),
        format!("{:?}", e.clusters()),
        format!("{:?}", e.client_ips()),
        format!("{:?}", e.detected()),
    ];
    out.push(e.file_count().to_string());
    out
}

fn only_integers(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::Number(n) => !n.is_f64(),
        serde_json::Value::Array(a) => a.iter().all(only_integers),
        serde_json::Value::Object(o) => o.values().all(only_integers),
        _ => true,
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Helpers that take event text.
    let _ = zt_event::normalize(text);
    let _ = Severity::parse(text).label();
    let kind = StateKind::classify(text);
    let _ = (kind.name(), kind.is_end());
    let _ = zt_event::state_matches(text, &[text.to_string(), "lockout".into()]);

    let parsed = Event::parse(text);
    let json = serde_json::from_str::<serde_json::Value>(text);
    match (&parsed, json) {
        (Ok(e), Ok(value)) => {
            let _ = (
                e.shares(),
                e.detectors(),
                e.signal_strength(),
                e.event_source(),
            );
            let _ = (
                e.updated(),
                e.console_url(),
                e.protection_mode(),
                e.snapshots(),
            );
            let _ = (e.detected_raw(), e.updated_raw(), e.raw());
            if only_integers(&value) {
                let from_value = Event::from_value(value);
                assert_eq!(fields(e), fields(&from_value), "{text:?}");
            }
        }
        (Ok(_), Err(err)) => {
            panic!("the scanner accepted what serde_json refuses ({err}): {text:?}")
        }
        (Err(err), Ok(_)) => panic!("the scanner refused valid JSON ({err}): {text:?}"),
        (Err(_), Err(_)) => {}
    }
});
