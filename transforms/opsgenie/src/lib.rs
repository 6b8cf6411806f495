//! Opsgenie Alert API v2 transform.
//!
//! One Superna Zero Trust webhook becomes one Alert API request, chosen by
//! what the event means (the host's `state-kind`):
//!
//! * **open** (a lockout): `POST /v2/alerts` creating an alert whose
//!   `alias` is the dedup key `superna-zt-<event ID>` (stable across
//!   updates; a hash when longer than Opsgenie's 512 characters; a body
//!   hash, with a warning, when the event has no ID).  Opsgenie
//!   de-duplicates on the alias, so a replayed create only bumps the
//!   alert's count: the flow is idempotent.
//! * **update**: `POST /v2/alerts/{alias}/notes?identifierType=alias`, a
//!   note saying what the event now says.
//! * **closed** (access restored, recovered, false positive):
//!   `POST /v2/alerts/{alias}/close?identifierType=alias` with a note.
//!
//! Opsgenie answers `202 Accepted` with a `requestId` (it processes the
//! request asynchronously); the done message carries it so an operator can
//! look it up (`GET /v2/alerts/requests/{requestId}`).  401/403 (a bad
//! `GenieKey`), 400 and 422 (invalid request) are permanent; 429 is retried
//! honouring `Retry-After`; 5xx and network errors are retried.
//!
//! The base URL is `https://api.opsgenie.com` (`region = "us"`) or
//! `https://api.eu.opsgenie.com` (`region = "eu"`); `api_url` overrides it
//! (a proxy, or a stub in tests).

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::{Map, Value, json};
use ztbridge_sdk::config::key;
use ztbridge_sdk::event::Severity;
use ztbridge_sdk::{
    EgressRule, Event, EventInput, Failure, Guest, Info, Phase, Request, Response, Step, config,
    export, failure, join_url, log, send, single, text,
};

const US_API: &str = "https://api.opsgenie.com";
const EU_API: &str = "https://api.eu.opsgenie.com";
const DEFAULT_PRIORITY_MAP: &str = "critical=P1,major=P2,warning=P3,other=P5";
/// Opsgenie's limits (characters).
const MAX_MESSAGE: usize = 130;
const MAX_ALIAS: usize = 512;
const MAX_DESCRIPTION: usize = 15_000;
const MAX_NOTE: usize = 25_000;
const MAX_DETAIL_VALUE: usize = 8_000;
/// Items of a list shown in a description or a detail.
const MAX_LIST_ITEMS: usize = 50;

/// Path segments keep only unreserved characters as they are.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// What the flow asked Opsgenie to do, for the done message.
static PENDING: std::sync::Mutex<Option<(&'static str, String)>> = std::sync::Mutex::new(None);

struct Opsgenie;

impl Guest for Opsgenie {
    fn describe() -> Info {
        Info {
            name: "opsgenie".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description:
                "Superna Zero Trust events to Opsgenie alerts (Alert API v2): create, note on update, close"
                    .into(),
            egress: vec![
                EgressRule::Host("api.opsgenie.com".into()),
                EgressRule::Host("api.eu.opsgenie.com".into()),
                EgressRule::ConfigUrl("api_url".into()),
            ],
            needs_random: false,
            config: vec![
                key(
                    VALIDATE_KEY,
                    "Set by the host only, when it checks the route: read the config, send nothing",
                    false,
                    false,
                    None,
                ),
                key(
                    "api_key",
                    "API key of an Opsgenie API integration (sent as `Authorization: GenieKey <key>`)",
                    true,
                    true,
                    None,
                ),
                key(
                    "region",
                    "`us` (api.opsgenie.com) or `eu` (api.eu.opsgenie.com)",
                    false,
                    false,
                    Some("us"),
                ),
                key(
                    "api_url",
                    "Base URL overriding `region` (a proxy; a stub in tests), e.g. https://api.opsgenie.com",
                    false,
                    false,
                    None,
                ),
                key(
                    "priority_map",
                    "Superna severity to Opsgenie priority (P1-P5), e.g. critical=P1,major=P2,warning=P3,other=P5",
                    false,
                    false,
                    Some(DEFAULT_PRIORITY_MAP),
                ),
                key(
                    "responders",
                    "Teams to notify, comma-separated team names (none: the integration's own team)",
                    false,
                    false,
                    None,
                ),
                key(
                    "tags",
                    "Tags on created alerts, comma-separated",
                    false,
                    false,
                    Some("superna,zero-trust"),
                ),
                key(
                    "source",
                    "The alert's `source` field",
                    false,
                    false,
                    Some("ztbridge"),
                ),
            ],
        }
    }

    fn start(input: EventInput) -> Result<Step, Failure> {
        let settings = Settings::load()?;
        if config::get(VALIDATE_KEY).is_some() {
            // The host's check of the route: the config reads; send nothing.
            return Ok(Step::Done("config ok".into()));
        }
        let ev = Event::new(input);
        let (what, request, alias) = request(&settings, &ev);
        *PENDING.lock().unwrap_or_else(|p| p.into_inner()) = Some((what, alias));
        Ok(send(vec![request]))
    }

    fn resume(responses: Vec<Response>) -> Result<Step, Failure> {
        let resp = single(responses)?;
        let (what, alias) = PENDING
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .unwrap_or(("request", "?".into()));
        let body: Option<Value> = serde_json::from_str(&resp.body).ok();
        let opsgenie_message = || {
            body.as_ref()
                .and_then(|v| v.get("message"))
                .and_then(Value::as_str)
                .map(|m| text::truncate(m, 300))
                .unwrap_or_else(|| text::truncate(resp.body.trim(), 300))
        };
        if matches!(resp.status, 400 | 422) {
            return Err(failure::permanent(&format!(
                "Opsgenie rejected the {what} for alias {alias} (HTTP {}, not retried): {}",
                resp.status,
                opsgenie_message()
            )));
        }
        failure::check(&resp, &format!("Opsgenie {what}"))?;
        let request_id = body
            .as_ref()
            .and_then(|v| v.get("requestId"))
            .and_then(Value::as_str)
            .map(|id| text::truncate(id, 100));
        Ok(Step::Done(match request_id {
            Some(id) => format!(
                "Opsgenie accepted {what} (HTTP {}) alias={alias} requestId={id}",
                resp.status
            ),
            None => format!(
                "Opsgenie accepted {what} (HTTP {}) alias={alias}",
                resp.status
            ),
        }))
    }
}

/// The route's configuration, read once per flow.
struct Settings {
    api_key: String,
    /// Base URL, without a trailing `/`.
    base: String,
    priorities: Vec<(String, String)>,
    responders: Vec<String>,
    tags: Vec<String>,
    source: String,
}

impl Settings {
    fn load() -> Result<Settings, Failure> {
        let base = match config::get("api_url") {
            Some(url) => url.trim().trim_end_matches('/').to_string(),
            None => match config::get_or("region", "us")
                .trim()
                .to_lowercase()
                .as_str()
            {
                "us" => US_API.to_string(),
                "eu" => EU_API.to_string(),
                other => {
                    return Err(failure::config(&format!(
                        "config key `region`: `{}` is neither `us` nor `eu`",
                        text::truncate(other, 40)
                    )));
                }
            },
        };
        let priorities = config::map("priority_map", DEFAULT_PRIORITY_MAP)?;
        for (k, v) in &priorities {
            if !["P1", "P2", "P3", "P4", "P5"].contains(&v.to_uppercase().as_str()) {
                return Err(failure::config(&format!(
                    "config key `priority_map`: `{k}={v}`: Opsgenie priorities are P1 to P5"
                )));
            }
        }
        Ok(Settings {
            api_key: config::require("api_key")?,
            base,
            priorities,
            responders: config::list("responders", ""),
            tags: config::list("tags", "superna,zero-trust"),
            source: config::get_or("source", "ztbridge"),
        })
    }

    fn priority(&self, severity: &Severity) -> String {
        let name = match severity {
            Severity::Critical => "critical",
            Severity::Major => "major",
            Severity::Warning => "warning",
            Severity::Other(_) => "other",
        };
        self.priorities
            .iter()
            .find(|(k, _)| k == name)
            .or_else(|| self.priorities.iter().find(|(k, _)| k == "other"))
            .map(|(_, v)| v.to_uppercase())
            .unwrap_or_else(|| "P3".into())
    }
}

/// The request for `ev`: what it does, the request, the alias.
fn request(settings: &Settings, ev: &Event) -> (&'static str, Request, String) {
    let alias = alias(ev);
    let auth = format!("GenieKey {}", settings.api_key);
    let segment = utf8_percent_encode(&alias, SEGMENT).to_string();
    let state = ev.state().unwrap_or_else(|| "unknown state".into());
    match ev.phase() {
        Phase::Open => {
            let body = create_body(settings, ev, &alias);
            let r = Request::post(&join_url(&settings.base, "v2/alerts"))
                .header("Authorization", &auth)
                .json(&body);
            ("create", r, alias)
        }
        Phase::Update => {
            let note = format!("Superna Zero Trust update: {}", summary(ev));
            let r = Request::post(&join_url(
                &settings.base,
                &format!("v2/alerts/{segment}/notes"),
            ))
            .query(&[("identifierType", "alias")])
            .header("Authorization", &auth)
            .json(&json!({
                "source": settings.source,
                "user": "ztbridge",
                "note": text::truncate_chars(&format!("{note}\n\n{}", description(ev)), MAX_NOTE),
            }));
            ("note", r, alias)
        }
        Phase::Closed => {
            let r = Request::post(&join_url(
                &settings.base,
                &format!("v2/alerts/{segment}/close"),
            ))
            .query(&[("identifierType", "alias")])
            .header("Authorization", &auth)
            .json(&json!({
                "source": settings.source,
                "user": "ztbridge",
                "note": text::truncate_chars(
                    &format!("Closed by Superna Zero Trust: {state} ({})", ev.record.state_class),
                    MAX_NOTE,
                ),
            }));
            ("close", r, alias)
        }
    }
}

/// `superna-zt-<id>`, at most 512 characters, stable across updates.
fn alias(ev: &Event) -> String {
    match ev.id() {
        Some(id) => {
            let k = format!("superna-zt-{id}");
            if k.chars().count() <= MAX_ALIAS {
                k
            } else {
                format!("superna-zt-sha256-{}", text::sha256_hex(id.as_bytes()))
            }
        }
        None => {
            let k = format!(
                "superna-zt-body-{}",
                &text::sha256_hex(ev.raw_text().as_bytes())[..32]
            );
            log::warn(&format!(
                "event has no recognisable event ID: updates cannot be correlated; using alias {k}"
            ));
            k
        }
    }
}

/// `[Critical] LOCKED_OUT: CORP\jsmith on prod-cluster-01 - Mass file
/// rename (from 10.20.30.41)`.
fn summary(ev: &Event) -> String {
    let severity = match ev.severity() {
        Severity::Other(s) if s.is_empty() => "Unknown".to_string(),
        s => s.label(),
    };
    let clusters = ev.clusters();
    let source = ev.event_source();
    let on = clusters
        .first()
        .or(source.as_ref())
        .map(|s| s.to_string())
        .unwrap_or_else(|| "superna".into());
    let mut s = format!(
        "[{severity}] {}: {} on {on}",
        ev.state().as_deref().unwrap_or("unknown state"),
        ev.user().as_deref().unwrap_or("unknown user"),
    );
    let detectors = ev.detectors();
    if !detectors.is_empty() {
        s.push_str(" - ");
        s.push_str(&joined(&detectors));
    }
    let ips = ev.client_ips();
    if !ips.is_empty() {
        s.push_str(&format!(" (from {})", joined(&ips)));
    }
    s
}

/// The items joined with ", ", bounded.
fn joined(items: &[std::borrow::Cow<str>]) -> String {
    let mut out = items
        .iter()
        .take(MAX_LIST_ITEMS)
        .map(|s| s.as_ref())
        .collect::<Vec<_>>()
        .join(", ");
    if items.len() > MAX_LIST_ITEMS {
        out.push_str(&format!(" (+{} more)", items.len() - MAX_LIST_ITEMS));
    }
    out
}

/// The event's fields, one per line (Opsgenie shows descriptions as text).
fn description(ev: &Event) -> String {
    let mut lines = Vec::new();
    let mut line = |label: &str, value: Option<String>| {
        if let Some(v) = value.filter(|v| !v.is_empty()) {
            lines.push(format!("{label}: {v}"));
        }
    };
    line("Event ID", ev.id().map(|s| s.to_string()));
    line("Severity", Some(ev.record.severity_text.clone()));
    line("State", ev.state().map(|s| s.to_string()));
    line("User", ev.user().map(|s| s.to_string()));
    line("Client IPs", Some(joined(&ev.client_ips())));
    line("Shares", Some(joined(&ev.shares())));
    line("Clusters", Some(joined(&ev.clusters())));
    line("Detectors", Some(joined(&ev.detectors())));
    line("Policy", ev.policy().map(|s| s.to_string()));
    line(
        "Detected",
        ev.detected().or(ev.detected_raw().map(|s| s.to_string())),
    );
    line("Files", Some(joined(&ev.files())));
    line("Snapshots", Some(joined(&ev.snapshots())));
    line("Console", ev.console_url().map(|s| s.to_string()));
    text::truncate_chars(&lines.join("\n"), MAX_DESCRIPTION)
}

/// The `POST /v2/alerts` body.
fn create_body(settings: &Settings, ev: &Event, alias: &str) -> Value {
    let mut details = Map::new();
    let mut detail = |k: &str, v: Option<String>| {
        if let Some(v) = v.filter(|v| !v.is_empty()) {
            details.insert(k.into(), json!(text::truncate(&v, MAX_DETAIL_VALUE)));
        }
    };
    detail("event_id", ev.id().map(|s| s.to_string()));
    detail("severity", Some(ev.record.severity_text.clone()));
    detail("state", ev.state().map(|s| s.to_string()));
    detail("user", ev.user().map(|s| s.to_string()));
    detail("client_ips", Some(joined(&ev.client_ips())));
    detail("shares", Some(joined(&ev.shares())));
    detail("clusters", Some(joined(&ev.clusters())));
    detail("detectors", Some(joined(&ev.detectors())));
    detail("policy", ev.policy().map(|s| s.to_string()));
    detail("detected", ev.detected());
    detail(
        "file_count",
        Some(ev.file_count().to_string()).filter(|n| n != "0"),
    );
    detail("console_url", ev.console_url().map(|s| s.to_string()));
    detail("ztbridge_receipt_id", Some(ev.receipt_id().to_string()));

    let mut body = Map::new();
    body.insert(
        "message".into(),
        json!(text::truncate_chars(&summary(ev), MAX_MESSAGE)),
    );
    body.insert("alias".into(), json!(alias));
    body.insert("description".into(), json!(description(ev)));
    if !settings.responders.is_empty() {
        body.insert(
            "responders".into(),
            Value::Array(
                settings
                    .responders
                    .iter()
                    .map(|t| json!({"name": t, "type": "team"}))
                    .collect(),
            ),
        );
    }
    let mut tags: Vec<Value> = settings.tags.iter().map(|t| json!(t)).collect();
    tags.push(json!(ev.record.severity_text.to_lowercase()));
    body.insert("tags".into(), Value::Array(tags));
    body.insert("details".into(), Value::Object(details));
    if let Some(user) = ev.user() {
        body.insert("entity".into(), json!(text::truncate_chars(&user, 512)));
    }
    body.insert("source".into(), json!(settings.source));
    body.insert("priority".into(), json!(settings.priority(&ev.severity())));
    Value::Object(body)
}

/// The config key the host sets when it checks the route (see
/// `Route::validate` in the runtime).
const VALIDATE_KEY: &str = "ztbridge_validate";

export!(Opsgenie);

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            api_key: "k".into(),
            base: US_API.into(),
            priorities: ztbridge_sdk::config::split_map("priority_map", DEFAULT_PRIORITY_MAP)
                .unwrap(),
            responders: vec![],
            tags: vec!["superna".into()],
            source: "ztbridge".into(),
        }
    }

    fn event(json: &str) -> Event {
        Event::parse(json).expect("JSON")
    }

    #[test]
    fn open_creates_update_notes_closed_closes() {
        let s = settings();
        let (what, r, alias) = request(
            &s,
            &event(r#"{"id": "A/1 x", "severity": "Critical", "state": "LOCKED_OUT"}"#),
        );
        assert_eq!((what, alias.as_str()), ("create", "superna-zt-A/1 x"));
        let r = r.build();
        assert_eq!(r.url, "https://api.opsgenie.com/v2/alerts");
        let body: Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(body["priority"], "P1");
        assert_eq!(body["alias"], "superna-zt-A/1 x");

        let (what, r, _) = request(
            &s,
            &event(r#"{"id": "A/1 x", "severity": "Critical", "state": "ACCESS_RESTORED"}"#),
        );
        assert_eq!(what, "close");
        assert_eq!(
            r.build().url,
            "https://api.opsgenie.com/v2/alerts/superna-zt-A%2F1%20x/close?identifierType=alias"
        );
    }

    #[test]
    fn long_messages_are_cut_to_opsgenie_limits() {
        let user = "u".repeat(500);
        let ev = event(&format!(
            r#"{{"id": "L-1", "severity": "major", "state": "LOCKED_OUT", "user": "{user}"}}"#
        ));
        let body = create_body(&settings(), &ev, "a");
        assert_eq!(
            body["message"].as_str().unwrap().chars().count(),
            MAX_MESSAGE
        );
        assert_eq!(body["priority"], "P2");
    }
}
