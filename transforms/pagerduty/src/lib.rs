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

        let mut body = Map::new();
        body.insert("routing_key".into(), json!(routing_key));
        body.insert("event_action".into(), json!(action));
        body.insert("dedup_key".into(), json!(dedup_key));
        body.insert("client".into(), json!("ztbridge (Superna Zero Trust)"));
        if let Some(link) = ev.console_url() {
            body.insert("client_url".into(), json!(link));
            body.insert(
                "links".into(),
                json!([{ "href": link, "text": "Open in Superna Eyeglass" }]),
            );
        }
        if !resolve {
            body.insert(
                "payload".into(),
                payload(ev, &input, &severity_map, &default_source),
            );
        }
        let body = fit_custom_details(Value::Object(body));

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

fn payload(
    ev: Event,
    input: &EventInput,
    severity_map: &[(String, String)],
    default_source: &str,
) -> Value {
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
    let source = clusters
        .first()
        .cloned()
        .or_else(|| ev.event_source())
        .unwrap_or_else(|| default_source.to_string());
    let state = ev.state().unwrap_or_else(|| "unknown state".into());
    let user = ev.user().unwrap_or_else(|| "unknown user".into());

    let mut summary = format!("[{}] {}: {} on {}", sev.label(), state, user, source);
    let detectors = ev.detectors();
    if !detectors.is_empty() {
        summary.push_str(&format!(" - {}", detectors.join(", ")));
    }
    let ips = ev.client_ips();
    if !ips.is_empty() {
        summary.push_str(&format!(" (from {})", ips.join(", ")));
    }

    let mut p = Map::new();
    p.insert(
        "summary".into(),
        json!(text::truncate_chars(&summary, 1024)),
    );
    p.insert("source".into(), json!(text::truncate_chars(&source, 255)));
    p.insert("severity".into(), json!(pd_sev));
    if let Some(t) = ev.detected() {
        p.insert("timestamp".into(), json!(t));
    }
    if let Some(share) = ev.shares().first() {
        p.insert("component".into(), json!(text::truncate_chars(share, 255)));
    }
    p.insert(
        "group".into(),
        json!(
            ev.event_source()
                .unwrap_or_else(|| "superna-zero-trust".into())
        ),
    );
    let class = match ev.state_kind() {
        StateKind::Other => "zero-trust-alert".to_string(),
        k => format!("zero-trust-{}", k.name().replace('_', "-")),
    };
    p.insert("class".into(), json!(class));

    let mut summary_fields = Map::new();
    let mut put = |k: &str, v: Option<String>| {
        if let Some(v) = v {
            summary_fields.insert(k.into(), json!(v));
        }
    };
    put("event_id", ev.id());
    put("severity", Some(sev.label()));
    put("state", ev.state());
    put("user", ev.user());
    put("signal_strength", ev.signal_strength());
    put("protection_mode", ev.protection_mode());
    put("console_url", ev.console_url());
    let lists = [
        ("client_ips", ips),
        ("shares", ev.shares()),
        ("detectors", detectors),
        ("clusters", clusters),
        ("snapshots", ev.snapshots()),
    ];
    for (k, v) in lists {
        if !v.is_empty() {
            summary_fields.insert(k.into(), json!(v));
        }
    }
    let files = ev.files();
    if !files.is_empty() {
        summary_fields.insert("file_count".into(), json!(files.len()));
    }
    summary_fields.insert("ztbridge_receipt_id".into(), json!(input.receipt_id));
    summary_fields.insert("ztbridge_received_at".into(), json!(input.received_at));

    let mut details = Map::new();
    details.insert("zero_trust".into(), Value::Object(summary_fields));
    details.insert("received_event".into(), ev.into_raw());
    p.insert("custom_details".into(), Value::Object(details));
    Value::Object(p)
}

/// The request body as JSON text, within PagerDuty's size limit.
fn fit_custom_details(mut body: Value) -> String {
    // Serialised once; in the common case that text is the request body.
    let text = serde_json::to_string(&body).unwrap_or_default();
    if text.len() <= MAX_REQUEST_BYTES {
        return text;
    }
    shrink_custom_details(&mut body, text.len());
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
