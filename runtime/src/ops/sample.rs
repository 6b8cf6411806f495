//! The sample alert operators send to check a route end to end
//! (`ztbridge send-test` and the console's "send a test event"): shaped
//! like a Superna Zero Trust webhook, marked as a test everywhere a person
//! reads it.

use serde_json::{Value, json};

/// What varies between the senders of a sample alert.
pub struct Sample<'a> {
    /// The event ID (`ZTBRIDGE-TEST-<ms>`, or an earlier one to update it).
    pub id: &'a str,
    /// Superna's severity word (`CRITICAL`, `MAJOR`, `WARNING`).
    pub severity: &'a str,
    /// Superna's state (`LOCKED_OUT`, `ACCESS_RESTORED`, ...).
    pub state: &'a str,
    /// The user the alert names, so the sender is told apart at the
    /// destination.
    pub user: &'a str,
    /// The detector text: says which tool sent it and that it is no alert.
    pub note: &'a str,
    /// When it was detected and last updated (ms since the epoch).
    pub at_ms: i64,
}

/// The webhook body of `sample`.
pub fn sample_event(sample: &Sample) -> Value {
    let at = crate::time::rfc3339_millis(sample.at_ms);
    json!({
        "id": sample.id,
        "severity": sample.severity,
        "state": sample.state,
        "user": sample.user,
        "clientIPs": ["192.0.2.10"],
        "shares": ["\\\\test-cluster\\ztbridge-test"],
        "files": ["/ifs/data/ztbridge-test/sample.docx.locked"],
        "eventSource": "ISILON_CLUSTER",
        "nes": ["test-cluster"],
        "signalStrength": 3,
        "threatDetectors": [sample.note],
        "detected": at,
        "lastUpdated": at,
    })
}
