//! PagerDuty Events API v2 transform.
//!
//! One Superna Zero Trust webhook becomes one Events v2 event:
//! * `dedup_key` = `superna-zt-<event ID>` (stable across updates; a hash
//!   when longer than 255 characters; a body hash, with a warning, when the
//!   event has no recognisable ID);
//! * `trigger` for new events and updates, `resolve` when the state is one
//!   of `resolve_states`;
//! * severity through `severity_map`;
//! * `timestamp` = the detection time in RFC 3339 when it is a date and
//!   time that exists; otherwise no `timestamp`, and the time as received
//!   in `custom_details.zero_trust.detected_unreadable`;
//! * `custom_details` carries the received event: its text as received,
//!   without whitespace if that is what it takes to stay under PagerDuty's
//!   512 KB limit, shrunk (and the cut described) if even that is too big.
//!
//! The body is written member by member ([`ObjectWriter`]) from values read
//! in place out of the event's text: no DOM is built on the common path,
//! which is what keeps a delivery within a few microseconds of the empty
//! transform (`cargo bench --bench per_event`).

use std::borrow::Cow;
use std::sync::Mutex;

use serde_json::{Map, Value, json};
use ztbridge_sdk::config::key;
use ztbridge_sdk::event::{self, StateKind};
use ztbridge_sdk::json::ObjectWriter;
use ztbridge_sdk::{
    EgressRule, Event, EventInput, Failure, Guest, Info, Request, Response, Step, config, export,
    failure, log, send, single, text,
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
                EgressRule::Host("events.pagerduty.com".into()),
                EgressRule::Host("events.eu.pagerduty.com".into()),
                EgressRule::ConfigUrl("url".into()),
            ],
            needs_random: false,
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
        let settings = Settings::load()?;
        let (body, pending) = request_body(&settings, input)?;
        *PENDING.lock().unwrap_or_else(|p| p.into_inner()) = Some(pending);
        Ok(send(vec![
            Request::post(&settings.url).body("application/json", body),
        ]))
    }

    fn resume(responses: Vec<Response>) -> Result<Step, Failure> {
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

/// The route's configuration, read once per flow.
struct Settings {
    routing_key: String,
    url: String,
    /// `resolve_states` as configured (the default is not split per event).
    resolve_states: String,
    severity_map: SeverityMap,
    default_source: String,
}

impl Settings {
    fn load() -> Result<Settings, Failure> {
        Ok(Settings {
            routing_key: config::require("routing_key")?,
            url: config::get_or("url", DEFAULT_URL),
            resolve_states: config::get_or("resolve_states", DEFAULT_RESOLVE),
            severity_map: severity_map(&config::get_or("severity_map", DEFAULT_SEVERITY_MAP))?,
            default_source: config::get_or("source", "superna-eyeglass"),
        })
    }

    /// True when the state ends the incident.
    fn resolves(&self, state: &str) -> bool {
        if self.resolve_states == DEFAULT_RESOLVE {
            // The default list is exactly the end kinds.
            StateKind::classify(state).is_end()
        } else {
            event::state_matches(state, &config::split_list(&self.resolve_states))
        }
    }
}

/// The Events v2 request body for one event, and what `resume` needs.
/// Pure: no host calls but a warning log for an event without an ID.
fn request_body(settings: &Settings, input: EventInput) -> Result<(String, Pending), Failure> {
    let ev = Event::new(input);
    let dedup_key = dedup_key(&ev);
    let state = ev.state();
    let resolve = state.as_deref().is_some_and(|s| settings.resolves(s));
    let action = if resolve { "resolve" } else { "trigger" };

    let link = ev.console_url();
    let head = Head {
        routing_key: &settings.routing_key,
        action,
        dedup_key: &dedup_key,
        link: link.as_deref(),
    };
    let body = if resolve {
        // A resolve carries no payload.
        head.write(None)
    } else {
        let payload = Payload::of(
            &ev,
            state,
            link.clone(),
            &settings.severity_map,
            &settings.default_source,
        );
        let received = Received {
            receipt_id: ev.receipt_id(),
            received_at: ev.received_at(),
        };
        fit(&head, &payload, &received, ev.raw_text())
    };
    Ok((body, Pending { action, dedup_key }))
}

/// `superna-zt-<id>`, at most 255 characters, stable across updates.
fn dedup_key(ev: &Event) -> String {
    match ev.id() {
        Some(id) => {
            let mut k = String::with_capacity(11 + id.len());
            k.push_str("superna-zt-");
            k.push_str(&id);
            if k.len() <= 255 || k.chars().count() <= 255 {
                k
            } else {
                format!("superna-zt-sha256-{}", text::sha256_hex(id.as_bytes()))
            }
        }
        None => {
            let body = ev.raw_text();
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

/// `severity_map`: Superna severity (`critical`, `major`, `warning`,
/// `other`) to PagerDuty severity; an entry naming no PagerDuty severity
/// gives `info`.
enum SeverityMap {
    /// `DEFAULT_SEVERITY_MAP`, without parsing it per event.
    Default,
    Custom(Vec<(String, Option<&'static str>)>),
}

fn severity_map(text: &str) -> Result<SeverityMap, Failure> {
    if text == DEFAULT_SEVERITY_MAP {
        return Ok(SeverityMap::Default);
    }
    let entries = config::split_map("severity_map", text)?;
    Ok(SeverityMap::Custom(
        entries
            .into_iter()
            .map(|(k, v)| (k, pagerduty_severity(&v)))
            .collect(),
    ))
}

/// One of PagerDuty's four severities, case-insensitively.
fn pagerduty_severity(v: &str) -> Option<&'static str> {
    ["critical", "error", "warning", "info"]
        .into_iter()
        .find(|s| v.eq_ignore_ascii_case(s))
}

impl SeverityMap {
    fn get(&self, severity: &event::Severity) -> &'static str {
        let key = match severity {
            event::Severity::Critical => "critical",
            event::Severity::Major => "major",
            event::Severity::Warning => "warning",
            event::Severity::Other(_) => "other",
        };
        match self {
            SeverityMap::Default => match key {
                "critical" => "critical",
                "major" => "error",
                "warning" => "warning",
                _ => "info",
            },
            SeverityMap::Custom(entries) => entries
                .iter()
                .find(|(k, _)| k == key)
                .or_else(|| entries.iter().find(|(k, _)| k == "other"))
                .and_then(|(_, v)| *v)
                .unwrap_or("info"),
        }
    }
}

/// The members every request has (Events API v2), in this order.
struct Head<'a> {
    routing_key: &'a str,
    action: &'static str,
    dedup_key: &'a str,
    /// The console link: `client_url` and `links`.
    link: Option<&'a str>,
}

impl Head<'_> {
    /// The request body; a trigger's payload carries `received_event` (the
    /// event's JSON text) last.
    fn write(&self, payload: Option<(&Payload, &Received, &str)>) -> String {
        let extra = payload.map_or(0, |(_, _, event)| event.len() + 1024);
        let mut out = String::with_capacity(512 + extra);
        let mut body = ObjectWriter::new(&mut out);
        body.str("routing_key", self.routing_key)
            .str("event_action", self.action)
            .str("dedup_key", self.dedup_key)
            .str("client", "ztbridge (Superna Zero Trust)")
            .opt_str("client_url", self.link);
        if let Some(href) = self.link {
            let out = body.key("links");
            out.push('[');
            let mut link = ObjectWriter::new(out);
            link.str("href", href)
                .str("text", "Open in Superna Eyeglass");
            link.end();
            out.push(']');
        }
        if let Some((payload, received, event)) = payload {
            payload.write(body.object("payload"), received, event);
        }
        body.end();
        out
    }
}

/// What the host said about this delivery, kept in `custom_details`.
struct Received<'a> {
    receipt_id: &'a str,
    received_at: &'a str,
}

/// `payload` of a trigger: what PagerDuty shows, and the fields ztbridge
/// read from the event (`custom_details.zero_trust`), borrowed from the
/// event's text where no decoding was needed.
struct Payload<'e> {
    summary: String,
    source: Cow<'e, str>,
    severity: &'static str,
    /// The detection time, normalised; absent when the event has none or
    /// it is not a date and time that exists (PagerDuty refuses those).
    timestamp: Option<String>,
    /// The detection time as received when it could not be read: kept in
    /// `custom_details.zero_trust.detected_unreadable`.
    detected_unreadable: Option<Cow<'e, str>>,
    component: Option<Cow<'e, str>>,
    group: Cow<'e, str>,
    class: &'static str,
    event_id: Option<Cow<'e, str>>,
    severity_label: Cow<'e, str>,
    state: Option<Cow<'e, str>>,
    user: Option<Cow<'e, str>>,
    signal_strength: Option<Cow<'e, str>>,
    protection_mode: Option<Cow<'e, str>>,
    console_url: Option<Cow<'e, str>>,
    client_ips: Vec<Cow<'e, str>>,
    shares: Vec<Cow<'e, str>>,
    detectors: Vec<Cow<'e, str>>,
    clusters: Vec<Cow<'e, str>>,
    snapshots: Vec<Cow<'e, str>>,
    file_count: usize,
}

/// At most `max` characters, borrowed when nothing is cut.
fn bounded<'e>(s: Cow<'e, str>, max: usize) -> Cow<'e, str> {
    if s.len() <= max {
        s
    } else {
        Cow::Owned(text::truncate_chars(&s, max))
    }
}

impl<'e> Payload<'e> {
    fn of(
        ev: &'e Event,
        state: Option<Cow<'e, str>>,
        console_url: Option<Cow<'e, str>>,
        severity_map: &SeverityMap,
        default_source: &str,
    ) -> Payload<'e> {
        let sev = ev.severity();
        let label: Cow<'e, str> = match &sev {
            event::Severity::Critical => Cow::Borrowed("Critical"),
            event::Severity::Major => Cow::Borrowed("Major"),
            event::Severity::Warning => Cow::Borrowed("Warning"),
            other => Cow::Owned(other.label()),
        };
        let clusters = ev.clusters();
        let event_source = ev.event_source();
        let source: Cow<'e, str> = match clusters.first().or(event_source.as_ref()) {
            Some(s) => s.clone(),
            None => Cow::Owned(default_source.to_string()),
        };
        let user = ev.user();
        let detectors = ev.detectors();
        let ips = ev.client_ips();

        // `[Critical] LOCKED_OUT: CORP\jsmith on prod-cluster-01 - Mass
        // file rename (from 10.20.30.41)`: readable on a phone.
        let mut summary = String::with_capacity(128);
        for part in [
            "[",
            &label,
            "] ",
            state.as_deref().unwrap_or("unknown state"),
            ": ",
            user.as_deref().unwrap_or("unknown user"),
            " on ",
            &source,
        ] {
            summary.push_str(part);
        }
        push_joined(&mut summary, " - ", &detectors, "");
        push_joined(&mut summary, " (from ", &ips, ")");

        let timestamp = ev.detected();
        let detected_unreadable = match timestamp {
            Some(_) => None,
            None => ev.detected_raw().map(|t| bounded(t, 256)),
        };
        let shares = ev.shares();
        let class = match state.as_deref().map(StateKind::classify) {
            None | Some(StateKind::Other) => "zero-trust-alert",
            Some(StateKind::Lockout) => "zero-trust-lockout",
            Some(StateKind::DelayedLockout) => "zero-trust-delayed-lockout",
            Some(StateKind::AccessRestored) => "zero-trust-access-restored",
            Some(StateKind::Recovered) => "zero-trust-recovered",
            Some(StateKind::FalsePositive) => "zero-trust-false-positive",
        };
        Payload {
            summary: text::truncate_chars(&summary, 1024),
            source: bounded(source, 255),
            severity: severity_map.get(&sev),
            timestamp,
            detected_unreadable,
            component: shares.first().map(|s| bounded(s.clone(), 255)),
            group: event_source.unwrap_or(Cow::Borrowed("superna-zero-trust")),
            class,
            event_id: ev.id(),
            severity_label: label,
            state,
            user,
            signal_strength: ev.signal_strength(),
            protection_mode: ev.protection_mode(),
            console_url,
            client_ips: ips,
            shares,
            detectors,
            clusters,
            snapshots: ev.snapshots(),
            file_count: ev.file_count(),
        }
    }

    fn write(&self, mut payload: ObjectWriter, received: &Received, event: &str) {
        payload
            .str("summary", &self.summary)
            .str("source", &self.source)
            .str("severity", self.severity)
            .opt_str("timestamp", self.timestamp.as_deref())
            .opt_str("component", self.component.as_deref())
            .str("group", &self.group)
            .str("class", self.class);
        let mut details = payload.object("custom_details");
        let mut zt = details.object("zero_trust");
        zt.opt_str("event_id", self.event_id.as_deref())
            .str("severity", &self.severity_label)
            .opt_str("state", self.state.as_deref())
            .opt_str("user", self.user.as_deref())
            .opt_str("signal_strength", self.signal_strength.as_deref())
            .opt_str("protection_mode", self.protection_mode.as_deref())
            .opt_str("console_url", self.console_url.as_deref())
            .opt_str("detected_unreadable", self.detected_unreadable.as_deref())
            .strs("client_ips", &self.client_ips)
            .strs("shares", &self.shares)
            .strs("detectors", &self.detectors)
            .strs("clusters", &self.clusters)
            .strs("snapshots", &self.snapshots);
        if self.file_count > 0 {
            zt.uint("file_count", self.file_count as u64);
        }
        zt.str("ztbridge_receipt_id", received.receipt_id)
            .str("ztbridge_received_at", received.received_at);
        zt.end();
        details.raw("received_event", event);
        details.end();
        payload.end();
    }
}

/// Appends `prefix`, the items joined with ", ", and `suffix`, when there
/// are items.
fn push_joined(out: &mut String, prefix: &str, items: &[Cow<str>], suffix: &str) {
    if items.is_empty() {
        return;
    }
    out.push_str(prefix);
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(item);
    }
    out.push_str(suffix);
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

/// The trigger's body, within PagerDuty's size limit: the event as
/// received; else without its whitespace; else shrunk (rare: a huge event).
fn fit(head: &Head, payload: &Payload, received: &Received, event: &str) -> String {
    let text = head.write(Some((payload, received, event)));
    if text.len() <= MAX_REQUEST_BYTES {
        return text;
    }
    let text = head.write(Some((payload, received, &minify(event))));
    if text.len() <= MAX_REQUEST_BYTES {
        return text;
    }
    let Ok(mut body) = serde_json::from_str::<Value>(&text) else {
        return text;
    };
    // Sizes from here on are those of serde_json's text of the DOM (which
    // may differ from the received text: `\u00e9` is written `é`, `1E9`
    // is written `1000000000.0`).
    let size = json_len(&body);
    if size > MAX_REQUEST_BYTES {
        shrink_custom_details(&mut body, size);
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            routing_key: "R0UTINGKEY0123456789abcdef012345".into(),
            url: DEFAULT_URL.into(),
            resolve_states: DEFAULT_RESOLVE.into(),
            severity_map: SeverityMap::Default,
            default_source: "superna-eyeglass".into(),
        }
    }

    /// The record the host builds for `body` (zt-event's reading, as the
    /// host makes it).
    fn input(body: &str) -> EventInput {
        let mut record = ztbridge_sdk::Event::parse(body).expect("JSON").record;
        record.receipt_id = "r1".into();
        record.received_at = "2025-06-11T10:15:04Z".into();
        record
    }

    const LOCKOUT: &str = include_str!("../../../tests/fixtures/events/critical-lockout.json");

    #[test]
    fn a_lockout_triggers_with_the_event_attached() {
        let (body, pending) = request_body(&settings(), input(LOCKOUT)).unwrap();
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(pending.action, "trigger");
        assert_eq!(v["dedup_key"], "superna-zt-RSW-20250611-000123");
        assert_eq!(v["payload"]["severity"], "critical");
        assert_eq!(
            v["payload"]["custom_details"]["received_event"],
            serde_json::from_str::<Value>(LOCKOUT).unwrap()
        );
    }

    /// The request body of `event`, parsed, checked to be within the limit.
    fn sent(event: &str) -> Value {
        let (body, _) = request_body(&settings(), input(event)).unwrap();
        assert!(body.len() <= MAX_REQUEST_BYTES, "{} bytes", body.len());
        serde_json::from_str(&body).unwrap()
    }

    #[test]
    fn big_events_fit_and_are_cut_only_when_they_must() {
        // Pretty-printed and over the limit as received, but not once the
        // whitespace is gone: sent whole.
        let files: Vec<String> = (0..17_500)
            .map(|i| format!("/ifs/data/f{i:05}.locked"))
            .collect();
        let event = serde_json::to_string_pretty(&json!({"id": "BIG-1", "files": files})).unwrap();
        assert!(event.len() > MAX_REQUEST_BYTES);
        let v = sent(&event);
        let details = &v["payload"]["custom_details"];
        assert_eq!(
            details["received_event"]["files"].as_array().unwrap().len(),
            17_500
        );
        assert!(details.get("ztbridge_truncated").is_none());

        // 600 KB of `\u00e9` escapes is 200 KB once decoded: sent whole.
        let escaped = format!(
            r#"{{"id": "BIG-2", "note": "{}"}}"#,
            "\\u00e9".repeat(100_000)
        );
        assert!(escaped.len() > MAX_REQUEST_BYTES);
        let v = sent(&escaped);
        let details = &v["payload"]["custom_details"];
        assert_eq!(
            details["received_event"]["note"]
                .as_str()
                .unwrap()
                .chars()
                .count(),
            100_000
        );
        assert!(details.get("ztbridge_truncated").is_none());

        // Numbers that serde_json writes longer than received (`1E9` is
        // `1000000000.0`), too many to fit: cut, said so, within the limit.
        let numbers = format!(
            r#"{{"id": "BIG-3", "n": [{}]}}"#,
            vec!["1E9"; 140_000].join(",")
        );
        let v = sent(&numbers);
        let details = &v["payload"]["custom_details"];
        assert!(
            details["ztbridge_truncated"]
                .as_str()
                .unwrap()
                .contains("shrunk")
        );
        assert_eq!(details["received_event"]["id"], "BIG-3");
    }

    /// `payload.timestamp` and `custom_details.zero_trust.detected_unreadable`
    /// of a trigger for an event detected at `detected` (JSON text).
    fn timestamps(detected: &str) -> (Value, Value, Value) {
        let event = format!(r#"{{"id": "T-1", "state": "LOCKED_OUT", "detected": {detected}}}"#);
        let v = sent(&event);
        let details = &v["payload"]["custom_details"];
        assert_eq!(
            details["received_event"]["detected"],
            serde_json::from_str::<Value>(detected).unwrap(),
            "the event is attached as received"
        );
        (
            v["payload"]["timestamp"].clone(),
            details["zero_trust"]["detected_unreadable"].clone(),
            v["payload"].clone(),
        )
    }

    #[test]
    fn readable_times_become_rfc3339_timestamps() {
        for (detected, want) in [
            (r#""2025-06-11T10:15:03Z""#, "2025-06-11T10:15:03Z"),
            (r#""2025-06-11 10:15:03""#, "2025-06-11T10:15:03Z"),
            (r#"" 2025-06-11T10:15:03 ""#, "2025-06-11T10:15:03Z"),
            (r#""2025-06-11 10:15""#, "2025-06-11T10:15:00Z"),
            (r#""2025-06-11t10:15:03.25z""#, "2025-06-11T10:15:03.250Z"),
            (
                r#""2025-06-11T10:15:03.123456+02:00""#,
                "2025-06-11T10:15:03.123+02:00",
            ),
            (
                r#""2025-06-11T10:15:03-05:30""#,
                "2025-06-11T10:15:03-05:30",
            ),
            (r#""2025-06-11T10:15:03+00:00""#, "2025-06-11T10:15:03Z"),
            (r#""2024-02-29T23:59:59Z""#, "2024-02-29T23:59:59Z"),
            ("1749636903", "2025-06-11T10:15:03Z"),
            ("1749636903250", "2025-06-11T10:15:03.250Z"),
            (r#""1749636903""#, "2025-06-11T10:15:03Z"),
            (r#""1749636903250""#, "2025-06-11T10:15:03.250Z"),
        ] {
            let (timestamp, unreadable, _) = timestamps(detected);
            assert_eq!(timestamp, want, "{detected}");
            assert_eq!(unreadable, Value::Null, "{detected}");
        }
    }

    #[test]
    fn impossible_or_unreadable_times_are_kept_in_custom_details_only() {
        for (detected, kept) in [
            (r#""2025-06-11T99:99:99Z""#, "2025-06-11T99:99:99Z"),
            (r#""2025-02-31T00:00:00Z""#, "2025-02-31T00:00:00Z"),
            (r#""2025-02-29 10:15:03""#, "2025-02-29 10:15:03"),
            (r#""2025-06-11T24:00:00Z""#, "2025-06-11T24:00:00Z"),
            (
                r#""2025-06-11T10:15:03+25:00""#,
                "2025-06-11T10:15:03+25:00",
            ),
            (r#"" 11/06/2025 10:15 ""#, "11/06/2025 10:15"),
            (r#""yesterday""#, "yesterday"),
            (r#""2025-06-11""#, "2025-06-11"),
            // Escapes are decoded.
            (r#""\u0032025-06-11T10:15:03Q""#, "2025-06-11T10:15:03Q"),
            ("1749636903.5", "1749636903.5"),
            ("-5", "-5"),
            ("true", "true"),
            (r#"{"at": "noon"}"#, r#"{"at": "noon"}"#),
        ] {
            let (timestamp, unreadable, payload) = timestamps(detected);
            assert!(
                payload.get("timestamp").is_none(),
                "{detected}: no timestamp, not {timestamp}"
            );
            assert_eq!(unreadable, kept, "{detected}");
        }

        // Bounded like the other fields; absent and empty times leave
        // nothing to keep.
        let long = format!(r#""{}""#, "9".repeat(2000) + "x");
        let (_, unreadable, _) = timestamps(&long);
        assert_eq!(unreadable.as_str().unwrap().chars().count(), 256);
        for detected in [r#""""#, r#""   ""#, "null"] {
            let (timestamp, unreadable, _) = timestamps(detected);
            assert_eq!(
                (timestamp, unreadable),
                (Value::Null, Value::Null),
                "{detected}"
            );
        }
        let v = sent(r#"{"id": "T-2", "state": "LOCKED_OUT"}"#);
        assert!(v["payload"].get("timestamp").is_none());
        assert!(
            v["payload"]["custom_details"]["zero_trust"]
                .get("detected_unreadable")
                .is_none()
        );
    }

    /// Not a test: `cargo test -p zt-pagerduty --release -- --ignored
    /// profile_loop` runs the mapping natively in a loop for a profiler
    /// (callgrind) to attribute its instructions.
    #[test]
    #[ignore]
    fn profile_loop() {
        let n: usize = std::env::var("PROFILE_ITERS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1000);
        let s = settings();
        for _ in 0..n {
            std::hint::black_box(request_body(&s, input(std::hint::black_box(LOCKOUT))).unwrap());
        }
    }
}
