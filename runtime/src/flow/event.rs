//! The event record every transform receives (contract 0.2): the host
//! reads the webhook once, tolerantly, with zt-event, so transforms in any
//! language see the same event ID, severity, state and fields.

use zt_event::{Phase, Severity};

use crate::sandbox::bindings::types::{self, Severity as Sev, StateKind as Kind};
use crate::time::rfc3339_millis;

/// What a flow is run for: one stored webhook and the attempt number.
#[derive(Debug, Clone)]
pub struct FlowInput<'a> {
    /// The JSON text as received.
    pub body: &'a str,
    /// The host's identifier of the webhook.
    pub receipt_id: &'a str,
    /// When it was received (ms since the epoch): the flow's "now".
    pub received_ms: i64,
    /// 1 for the first run, 2 for the first retry...
    pub attempt: u32,
}

/// The record handed to `start`.  A body that is not JSON (never stored:
/// intake refuses it) gives a record with only the raw text.
pub fn record(input: &FlowInput<'_>) -> types::Event {
    let r = zt_event::Event::parse(input.body)
        .map(|e| e.record())
        .unwrap_or_default();
    types::Event {
        receipt_id: input.receipt_id.to_string(),
        received_at: rfc3339_millis(input.received_ms),
        attempt: input.attempt,
        event_id: r.event_id,
        alert_id: r.alert_id,
        severity: match r.severity {
            Severity::Critical => Sev::Critical,
            Severity::Major => Sev::Major,
            Severity::Warning => Sev::Warning,
            Severity::Other(_) => Sev::Other,
        },
        severity_text: r.severity_text,
        state: r.state,
        state_kind: match r.phase {
            Phase::Open => Kind::Open,
            Phase::Update => Kind::Update,
            Phase::Closed => Kind::Closed,
        },
        state_class: r.state_kind.name().to_string(),
        detected_at: r.detected_at,
        detected_text: r.detected_text,
        updated_at: r.updated_at,
        updated_text: r.updated_text,
        user: r.user,
        paths: r.paths,
        shares: r.shares,
        client_ips: r.client_ips,
        policy: r.policy,
        clusters: r.clusters,
        detectors: r.detectors,
        signal_strength: r.signal_strength,
        event_source: r.event_source,
        console_url: r.console_url,
        protection_mode: r.protection_mode,
        snapshots: r.snapshots,
        raw: input.body.to_string(),
    }
}
