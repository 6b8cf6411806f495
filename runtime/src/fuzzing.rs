//! Entry points for the fuzz targets in `fuzz/` (cargo-fuzz): the code
//! that reads untrusted input but is private to the crate, with the
//! properties each run checks.  A property that does not hold panics,
//! which the fuzzer reports as a crash.  Not an API.
//!
//! May import: `http`, `config`, `text`.

use axum::http::{HeaderMap, HeaderValue, header};

use crate::config::IntakeLimits;
use crate::http::intake::Intake;

/// Limits small enough for the fuzzer to reach every refusal quickly.
pub fn small_limits() -> IntakeLimits {
    IntakeLimits {
        max_body_bytes: 64 << 10,
        max_decoded_bytes: 256 << 10,
        max_json_depth: 32,
        ..IntakeLimits::default()
    }
}

/// One webhook through [`Intake::accept`] (as `POST /webhook` runs it),
/// with these headers.  Checks: no panic; a refusal is a 4xx with a code;
/// an accepted body is a JSON object within the limits whose parsed view
/// answers every accessor; the event ID shown in logs is one line.
/// Returns the refusal code, or `"accepted"`.
pub fn intake(
    intake: &Intake,
    content_type: Option<&str>,
    content_encoding: Option<&str>,
    body: &[u8],
) -> &'static str {
    let mut headers = HeaderMap::new();
    for (name, value) in [
        (header::CONTENT_TYPE, content_type),
        (header::CONTENT_ENCODING, content_encoding),
    ] {
        if let Some(v) = value.and_then(|v| HeaderValue::from_str(v).ok()) {
            headers.insert(name, v);
        }
    }
    match intake.accept(&headers, body) {
        Err(e) => {
            let status = e.status().as_u16();
            assert!((400..500).contains(&status), "{e}: status {status}");
            e.code()
        }
        Ok(accepted) => {
            let limits = &intake.limits;
            assert!(accepted.body.len() <= limits.max_decoded_bytes);
            let value: serde_json::Value =
                serde_json::from_str(&accepted.body).expect("accepted body is JSON");
            assert!(value.is_object(), "accepted a non-object");
            let ev = &accepted.event;
            let _ = (ev.severity().label(), ev.state_kind().name());
            let _ = (ev.user(), ev.client_ips(), ev.shares(), ev.files());
            let _ = (ev.file_count(), ev.detectors(), ev.signal_strength());
            let _ = (
                ev.clusters(),
                ev.event_source(),
                ev.detected(),
                ev.updated(),
            );
            let _ = (ev.console_url(), ev.protection_mode(), ev.snapshots());
            if let Some(id) = ev.id() {
                let shown = crate::text::display_id(Some(&id));
                assert!(!shown.chars().any(char::is_control), "{shown:?}");
                assert!(shown.chars().count() <= 128, "{shown:?}");
            }
            "accepted"
        }
    }
}

/// An intake with [`small_limits`].
pub fn new_intake() -> Intake {
    Intake::new(small_limits())
}
