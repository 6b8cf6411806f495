//! PagerDuty Events API v2 transform.
//!
//! One Superna Zero Trust webhook becomes one Events v2 event:
//! * `dedup_key` = `superna-zt-<event ID>` (stable across updates; a hash
//!   when longer than 255 characters; a body hash, with a warning, when the
//!   event has no recognisable ID);
//! * `trigger` for new events and updates, `resolve` when the state is one
//!   of `resolve_states`;
//! * severity through `severity_map`;
//! * `custom_details` carries the received event, shrunk (and the cut
//!   described) so the request stays under PagerDuty's 512 KB limit.

use std::sync::Mutex;

use serde::Serialize;
use serde_json::{Map, Value, json};
use ztbridge_sdk::config::key;
use ztbridge_sdk::event::{self, Event, StateKind};
use ztbridge_sdk::{
    EventInput, Failure, Guest, HttpResponse, Info, Request, Step, config, export, failure, log,
    send, single, text,
};

const DEFAULT_URL: &str = "https://events.pagerduty.com/v2/enqueue";
const DEFAULT_RESOLVE: &str = "access_restored,recovered,false_positive";
const DEFAULT_SEVERITY_MAP: &str = "critical=critical,major=error,warning=warning,other=info";
/// PagerDuty refuses requests over 512 KB; stay clear of it.
const MAX_REQUEST_BYTES: usize = 500 * 1024;

/// What `resume` needs to know about the request `start` sent.
struct Pending {
    action: &'static str,
    dedup_key: String,
}

static PENDING: Mutex<Option<Pending>> = Mutex::new(None);

struct PagerDuty;

impl Guest for PagerDuty {
    fn describe() -> Info {
        Info {
            name: "pagerduty".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Superna Zero Trust events to PagerDuty Events API v2 alerts".into(),
            egress: vec![
                "events.pagerduty.com".into(),
                "events.eu.pagerduty.com".into(),
                "config:url".into(),
            ],
            config: vec![
                key(
                    "routing_key",
                    "Integration key of an Events API v2 integration",
                    true,
                    true,
                    None,
                ),
                key(
                    "url",
                    "Events API endpoint (EU: https://events.eu.pagerduty.com/v2/enqueue)",
                    false,
                    false,
                    Some(DEFAULT_URL),
                ),
                key(
                    "resolve_states",
                    "States that resolve the alert: state kinds (access_restored, recovered, false_positive, lockout, delayed_lockout) or raw state names, comma-separated",
                    false,
                    false,
                    Some(DEFAULT_RESOLVE),
                ),
                key(
                    "severity_map",
                    "Superna severity to PagerDuty severity, e.g. critical=critical,major=error,warning=warning,other=info",
                    false,
                    false,
                    Some(DEFAULT_SEVERITY_MAP),
                ),
                key(
                    "source",
                    "PagerDuty `source` when the event names no cluster",
                    false,
                    false,
                    Some("superna-eyeglass"),
                ),
            ],
        }
    }

    fn start(input: EventInput) -> Result<Step, Failure> {
        let routing_key = config::require("routing_key")?;
        let url = config::get_or("url", DEFAULT_URL);
        let resolve_states = config::list("resolve_states", DEFAULT_RESOLVE);
        let severity_map = config::map("severity_map", DEFAULT_SEVERITY_MAP)?;
        let default_source = config::get_or("source", "superna-eyeglass");

        let ev = Event::parse(&input.body)
            .map_err(|e| failure::permanent(&format!("event is not JSON: {e}")))?;
        let dedup_key = dedup_key(&ev, &input.body);
        let resolve = ev
            .state()
            .is_some_and(|s| event::state_matches(&s, &resolve_states));
        let action = if resolve { "resolve" } else { "trigger" };

        let link = ev.console_url();
        let links = link.as_deref().map(|href| {
            [Link {
                href,
                text: "Open in Superna Eyeglass",
            }]
        });
        let received = (!resolve).then(|| received_event(&ev));
        let has_payload = received.is_some();
        let body = Body {
            routing_key: &routing_key,
            event_action: action,
            dedup_key: &dedup_key,
            client: "ztbridge (Superna Zero Trust)",
            client_url: link.as_deref(),
            links,
            payload: has_payload.then(|| payload(&ev, &input, &severity_map, &default_source)),
        };
        let body = fit_custom_details(&body, received.as_deref());
        *PENDING.lock().unwrap_or_else(|p| p.into_inner()) = Some(Pending { action, dedup_key });
        Ok(send(vec![
            Request::post(&url).body("application/json", body),
        ]))
    }

    fn resume(responses: Vec<HttpResponse>) -> Result<Step, Failure> {
        let resp = single(responses)?;
        let pending = PENDING.lock().unwrap_or_else(|p| p.into_inner()).take();
        let (action, dedup_key) = match &pending {
            Some(p) => (p.action, p.dedup_key.as_str()),
            None => ("event", "?"),
        };
        if resp.status == 400 {
            // PagerDuty explains what was invalid in `errors`.
            let why = serde_json::from_str::<Value>(&resp.body)
                .ok()
                .and_then(|v| v.get("errors").map(Value::to_string))
                .unwrap_or_else(|| text::truncate(&resp.body, 300));
            return Err(failure::permanent(&format!(
                "PagerDuty rejected the {action} (HTTP 400, not retried): {why}"
            )));
        }
        failure::check(&resp, "PagerDuty enqueue")?;
        Ok(Step::Done(format!(
            "PagerDuty accepted {action} (HTTP {}) dedup_key={dedup_key}",
            resp.status
        )))
    }
}

/// `superna-zt-<id>`, at most 255 characters, stable across updates.
fn dedup_key(ev: &Event, body: &str) -> String {
    match ev.id() {
        Some(id) => {
            let k = format!("superna-zt-{id}");
            if k.chars().count() <= 255 {
                k
            } else {
                format!("superna-zt-sha256-{}", text::sha256_hex(id.as_bytes()))
            }
        }
        None => {
            let k = format!(
                "superna-zt-body-{}",
                &text::sha256_hex(body.as_bytes())[..32]
            );
            log::warn(&format!(
                "event has no recognisable event ID: updates cannot be correlated; using dedup_key {k}"
            ));
            k
        }
    }
}

/// The request body (Events API v2), serialised in this field order.
#[derive(Serialize)]
struct Body<'a> {
    routing_key: &'a str,
    event_action: &'a str,
    dedup_key: &'a str,
    client: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_url: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    links: Option<[Link<'a>; 1]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    payload: Option<Payload<'a>>,
}

#[derive(Serialize)]
struct Link<'a> {
    href: &'a str,
    text: &'a str,
}

#[derive(Serialize)]
struct Payload<'a> {
    summary: String,
    source: String,
    severity: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    timestamp: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    component: Option<String>,
    group: String,
    class: String,
    custom_details: Details<'a>,
}

/// `custom_details`; `received_event` (the last member) is spliced in as
/// text by [`to_json`].
#[derive(Serialize)]
struct Details<'a> {
    zero_trust: ZeroTrust<'a>,
}

/// The fields ztbridge read from the event.
#[derive(Serialize)]
struct ZeroTrust<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    event_id: Option<String>,
    severity: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    state: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    signal_strength: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    protection_mode: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    console_url: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    client_ips: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    shares: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    detectors: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    clusters: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    snapshots: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    file_count: Option<usize>,
    ztbridge_receipt_id: &'a str,
    ztbridge_received_at: &'a str,
}

/// The received event for `custom_details`: its text as received, without
/// the whitespace between tokens (no DOM is built and re-serialised).
fn received_event(ev: &Event) -> String {
    match ev.raw_text() {
        Some(text) => minify(text),
        None => serde_json::to_string(ev.raw()).unwrap_or_default(),
    }
}

/// Valid JSON text without insignificant whitespace.
fn minify(json: &str) -> String {
    let bytes = json.as_bytes();
    let mut out = String::with_capacity(bytes.len());
    // Copies runs between whitespace outside strings.
    let (mut start, mut i) = (0, 0);
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                // Skip the string, escapes included.
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            b' ' | b'\n' | b'\r' | b'\t' => {
                out.push_str(&json[start..i]);
                while i < bytes.len() && matches!(bytes[i], b' ' | b'\n' | b'\r' | b'\t') {
                    i += 1;
                }
                start = i;
            }
            _ => i += 1,
        }
    }
    out.push_str(&json[start.min(json.len())..]);
    out
}

fn payload<'a>(
    ev: &Event,
    input: &'a EventInput,
    severity_map: &[(String, String)],
    default_source: &str,
) -> Payload<'a> {
    let sev = ev.severity();
    let sev_key = match sev {
        event::Severity::Other(_) => "other".to_string(),
        ref s => s.name(),
    };
    let pd_sev = severity_map
        .iter()
        .find(|(k, _)| *k == sev_key)
        .or_else(|| severity_map.iter().find(|(k, _)| k == "other"))
        .map(|(_, v)| v.to_lowercase())
        .filter(|v| ["critical", "error", "warning", "info"].contains(&v.as_str()))
        .unwrap_or_else(|| "info".into());

    let clusters = ev.clusters();
    let event_source = ev.event_source();
    let source = clusters
        .first()
        .cloned()
        .or_else(|| event_source.clone())
        .unwrap_or_else(|| default_source.to_string());
    let state = ev.state();
    let user = ev.user();

    let mut summary = format!(
        "[{}] {}: {} on {}",
        sev.label(),
        state.as_deref().unwrap_or("unknown state"),
        user.as_deref().unwrap_or("unknown user"),
        source
    );
    let detectors = ev.detectors();
    if !detectors.is_empty() {
        summary.push_str(&format!(" - {}", detectors.join(", ")));
    }
    let ips = ev.client_ips();
    if !ips.is_empty() {
        summary.push_str(&format!(" (from {})", ips.join(", ")));
    }

    let shares = ev.shares();
    let class = match state.as_deref().map(StateKind::classify) {
        None | Some(StateKind::Other) => "zero-trust-alert".to_string(),
        Some(k) => format!("zero-trust-{}", k.name().replace('_', "-")),
    };
    let file_count = ev.file_count();
    Payload {
        summary: text::truncate_chars(&summary, 1024),
        source: text::truncate_chars(&source, 255),
        severity: pd_sev,
        timestamp: ev.detected(),
        component: shares.first().map(|s| text::truncate_chars(s, 255)),
        group: event_source
            .clone()
            .unwrap_or_else(|| "superna-zero-trust".into()),
        class,
        custom_details: Details {
            zero_trust: ZeroTrust {
                event_id: ev.id(),
                severity: sev.label(),
                state,
                user,
                signal_strength: ev.signal_strength(),
                protection_mode: ev.protection_mode(),
                console_url: ev.console_url(),
                client_ips: ips,
                shares,
                detectors,
                clusters,
                snapshots: ev.snapshots(),
                file_count: (file_count > 0).then_some(file_count),
                ztbridge_receipt_id: &input.receipt_id,
                ztbridge_received_at: &input.received_at,
            },
        },
    }
}

/// The request body as JSON text: `body` with `received` (the event's JSON
/// text) as `payload.custom_details.received_event`.
fn to_json(body: &Body, received: Option<&str>) -> String {
    let mut text = serde_json::to_string(body).unwrap_or_default();
    if let Some(received) = received.filter(|_| body.payload.is_some()) {
        // `custom_details`, `payload` and the body end the text (each is the
        // last member of its parent): reopen `custom_details`.
        let end = text.len().saturating_sub(3);
        if text.get(end..) == Some("}}}") {
            text.truncate(end);
            text.push_str(",\"received_event\":");
            text.push_str(received);
            text.push_str("}}}");
        }
    }
    text
}

/// The request body as JSON text, within PagerDuty's size limit.
fn fit_custom_details(body: &Body, received: Option<&str>) -> String {
    // Serialised once; in the common case that text is the request body.
    let text = to_json(body, received);
    if text.len() <= MAX_REQUEST_BYTES {
        return text;
    }
    // Rare (a huge event): shrink a DOM of the body.
    let Ok(mut body) = serde_json::from_str::<Value>(&text) else {
        return text;
    };
    let size = json_len(&body);
    if size <= MAX_REQUEST_BYTES {
        return serde_json::to_string(&body).unwrap_or_default();
    }
    shrink_custom_details(&mut body, size);
    serde_json::to_string(&body).unwrap_or_default()
}

/// Shrinks `payload.custom_details.received_event` until the request fits
/// PagerDuty's limit, and records what was cut in
/// `custom_details.ztbridge_truncated`.  Rare: the event is huge.
fn shrink_custom_details(body: &mut Value, size: usize) {
    let Some(details) = body
        .pointer_mut("/payload/custom_details")
        .and_then(Value::as_object_mut)
    else {
        return;
    };
    let Some(original) = details.remove("received_event") else {
        return;
    };
    let original_len = json_len(&original);
    let without = size.saturating_sub(original_len);
    let budget = MAX_REQUEST_BYTES.saturating_sub(without + 512);

    // Halve list and string lengths until the event fits; the structure and
    // the first items of every list survive.
    let (mut max_items, mut max_str) = (1000usize, 4096usize);
    let (mut shrunk, cut) = loop {
        let mut cut = Cut::default();
        let shrunk = shrink(&original, max_items, max_str, &mut cut, 0);
        if json_len(&shrunk) <= budget || (max_items <= 1 && max_str <= 16) {
            break (shrunk, cut);
        }
        max_items = (max_items / 2).max(1);
        max_str = (max_str / 2).max(16);
    };
    let note = format!(
        "received event of {original_len} bytes shrunk to fit PagerDuty's 512 KB limit: \
         {} list items and {} string bytes cut (lists keep their first {max_items} items, \
         strings their first {max_str} bytes); the full event is kept by ztbridge",
        cut.items, cut.bytes
    );
    if json_len(&shrunk) > budget {
        // Pathological shape (e.g. a huge flat object): keep a text excerpt.
        let excerpt = text::truncate(&original.to_string(), budget.saturating_sub(200));
        shrunk = json!({ "excerpt": excerpt });
    }
    details.insert("received_event".into(), shrunk);
    details.insert("ztbridge_truncated".into(), json!(note));
    log::warn(&note);
}

/// Serialized size of a value, without building the text.
fn json_len(v: &Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Count(0);
    let _ = serde_json::to_writer(&mut c, v);
    c.0
}

#[derive(Default)]
struct Cut {
    items: usize,
    bytes: usize,
}

fn shrink(v: &Value, max_items: usize, max_str: usize, cut: &mut Cut, depth: usize) -> Value {
    match v {
        Value::String(s) if s.len() > max_str => {
            cut.bytes += s.len() - max_str;
            json!(text::truncate(s, max_str))
        }
        Value::Array(a) => {
            let mut out: Vec<Value> = a
                .iter()
                .take(max_items)
                .map(|x| shrink(x, max_items, max_str, cut, depth + 1))
                .collect();
            if a.len() > max_items {
                let rest = a.len() - max_items;
                cut.items += rest;
                out.push(json!(format!("… {rest} more items cut by ztbridge")));
            }
            Value::Array(out)
        }
        Value::Object(o) => {
            let mut out = Map::new();
            for (i, (k, x)) in o.iter().enumerate() {
                if i >= max_items.max(64) {
                    cut.items += o.len() - i;
                    out.insert(
                        "ztbridge_cut".into(),
                        json!(format!("{} more keys cut", o.len() - i)),
                    );
                    break;
                }
                out.insert(k.clone(), shrink(x, max_items, max_str, cut, depth + 1));
            }
            Value::Object(out)
        }
        other => other.clone(),
    }
}

export!(PagerDuty);
