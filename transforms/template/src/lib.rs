//! Template transform: one HTTP request per event, described entirely by
//! the route's config, for destinations nobody has written a transform
//! for.
//!
//! * `url`: where to send (its host is the route's only egress).
//! * `method`: `POST` (default), `PUT`, `PATCH`, `GET` or `DELETE`.
//! * `headers`: a JSON object of header name to value, e.g.
//!   `{"Content-Type": "application/json", "Authorization": "Bearer {{ secret }}"}`.
//!   Values are templates too (rendered without escaping; a value that
//!   renders to a line break is refused: no header injection).
//! * `body`: a [minijinja](https://docs.rs/minijinja) (Jinja2) template
//!   rendered inside the sandbox over the event.
//! * `escape`: `json` (default) or `none`.  With `json`, every `{{ ... }}`
//!   in the body prints a JSON value: `{{ raw.user }}` prints
//!   `"CORP\\jsmith"` with its quotes, so event content can never break
//!   the body's JSON structure; `{{ x | safe }}` prints as is.
//! * `secret`: one secret value (a token, a routing key), usable as
//!   `{{ secret }}` and never logged.
//!
//! The template sees:
//! * `event`: the host's reading of the event (contract 0.2 `event`
//!   record): `event.event_id`, `event.severity` (`critical`, `major`,
//!   `warning`, `other`), `event.severity_text`, `event.state`,
//!   `event.state_kind` (`open`, `update`, `closed`), `event.state_class`,
//!   `event.user`, `event.client_ips`, `event.paths`, `event.clusters`,
//!   `event.detected_at`, `event.receipt_id`, `event.received_at`...;
//! * `raw`: the webhook's JSON as received (`raw.severity`, `raw.nes[0]`);
//! * `raw_text`: the same as text;
//! * `secret`.
//!
//! Undefined values chain (`raw.a.b.c` of an event without `a` is
//! undefined, not an error; `| default(...)` gives a fallback): Superna's
//! field names vary between versions.
//!
//! A broken template is a configuration error found before any event is
//! delivered: the host runs `start` once per route with the config key
//! `ztbridge_validate` set, on a sample event, when it builds the route
//! (`ztbridge config check`, `serve`, reload); in that mode the transform
//! compiles the templates, renders them over the sample, checks a JSON
//! body parses, and finishes without sending anything.

use std::sync::Mutex;

use minijinja::{AutoEscape, Environment, UndefinedBehavior};
use serde_json::{Value, json};
use ztbridge_sdk::config::key;
use ztbridge_sdk::{
    EgressRule, Event, EventInput, Failure, Guest, Header, HttpRequest, Info, Phase, Response,
    SeverityLevel, Step, config, export, failure, single, text,
};

const DEFAULT_HEADERS: &str = r#"{"Content-Type": "application/json"}"#;
/// The config key the host sets to ask for a validation run.
const VALIDATE_KEY: &str = "ztbridge_validate";

/// The request sent, for the done message.
static SENT: Mutex<Option<(String, String)>> = Mutex::new(None);

struct Template;

impl Guest for Template {
    fn describe() -> Info {
        Info {
            name: "template".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description:
                "Any HTTP destination without code: URL, method, headers and a minijinja body template from the route's config"
                    .into(),
            egress: vec![EgressRule::ConfigUrl("url".into())],
            needs_random: false,
            config: vec![
                key("url", "Destination URL", true, false, None),
                key(
                    "method",
                    "HTTP method: POST, PUT, PATCH, GET or DELETE",
                    false,
                    false,
                    Some("POST"),
                ),
                key(
                    "headers",
                    "JSON object of header name to value; values are templates (e.g. \"Bearer {{ secret }}\")",
                    false,
                    false,
                    Some(DEFAULT_HEADERS),
                ),
                key(
                    "body",
                    "minijinja template of the request body over `event`, `raw`, `raw_text` and `secret`",
                    false,
                    false,
                    None,
                ),
                key(
                    "escape",
                    "How `{{ ... }}` prints in the body: json (a JSON value, the default) or none",
                    false,
                    false,
                    Some("json"),
                ),
                key(
                    "secret",
                    "A secret usable as {{ secret }} (a token, a routing key); never logged",
                    false,
                    true,
                    None,
                ),
                key(
                    VALIDATE_KEY,
                    "Set by the host only, when it checks the route: render over a sample event, send nothing",
                    false,
                    false,
                    None,
                ),
            ],
        }
    }

    fn start(input: EventInput) -> Result<Step, Failure> {
        let spec = Spec::load()?;
        let ev = Event::new(input);
        let request = spec.render(&ev)?;
        if config::get(VALIDATE_KEY).is_some() {
            return Ok(Step::Done(format!(
                "template ok: {} {} with {} header(s) and a {}-byte body on the sample event",
                request.method,
                request.url,
                request.headers.len(),
                request.body.len()
            )));
        }
        *SENT.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((request.method.clone(), request.url.clone()));
        Ok(Step::Send(vec![request]))
    }

    fn resume(responses: Vec<Response>) -> Result<Step, Failure> {
        let resp = single(responses)?;
        let (method, url) = SENT
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .unwrap_or_default();
        failure::check(&resp, &format!("{method} {url}"))?;
        Ok(Step::Done(format!(
            "{method} {url} answered HTTP {}",
            resp.status
        )))
    }
}

/// How `{{ ... }}` prints in the body.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Escape {
    Json,
    None,
}

/// The route's request description.
struct Spec {
    url: String,
    method: String,
    /// Header name and value template, in the order written.
    headers: Vec<(String, String)>,
    body: Option<String>,
    escape: Escape,
    secret: Option<String>,
}

impl Spec {
    fn load() -> Result<Spec, Failure> {
        let method = config::get_or("method", "POST").trim().to_uppercase();
        if !["POST", "PUT", "PATCH", "GET", "DELETE"].contains(&method.as_str()) {
            return Err(failure::config(&format!(
                "config key `method`: `{}` is not one of POST, PUT, PATCH, GET, DELETE",
                text::truncate(&method, 20)
            )));
        }
        let escape = match config::get_or("escape", "json")
            .trim()
            .to_lowercase()
            .as_str()
        {
            "json" => Escape::Json,
            "none" => Escape::None,
            other => {
                return Err(failure::config(&format!(
                    "config key `escape`: `{}` is neither `json` nor `none`",
                    text::truncate(other, 20)
                )));
            }
        };
        Ok(Spec {
            url: config::require("url")?.trim().to_string(),
            method,
            headers: parse_headers(&config::get_or("headers", DEFAULT_HEADERS))?,
            body: config::get("body"),
            escape,
            secret: config::get("secret"),
        })
    }

    /// The request for `ev`, or a configuration failure naming what is
    /// wrong in which template.
    fn render(&self, ev: &Event) -> Result<HttpRequest, Failure> {
        let ctx = context(ev, self.secret.as_deref());
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Chainable);
        let escape = self.escape;
        env.set_auto_escape_callback(move |name| match (name, escape) {
            ("body", Escape::Json) => AutoEscape::Json,
            _ => AutoEscape::None,
        });
        let mut headers = Vec::with_capacity(self.headers.len());
        for (name, value) in &self.headers {
            let rendered = render(&env, &format!("header {name}"), value, &ctx)?;
            if rendered.contains(['\r', '\n']) {
                return Err(failure::permanent(&format!(
                    "header {name}: the rendered value holds a line break (refused: header injection)"
                )));
            }
            headers.push(Header {
                name: name.clone(),
                value: rendered,
            });
        }
        let body = match &self.body {
            Some(src) => render(&env, "body", src, &ctx)?,
            None => String::new(),
        };
        let json_body = headers.iter().any(|h| {
            h.name.eq_ignore_ascii_case("content-type")
                && h.value.to_ascii_lowercase().contains("json")
        });
        if json_body
            && !body.is_empty()
            && let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(&body)
        {
            return Err(failure::config(&format!(
                "config key `body`: the Content-Type is JSON but the rendered body is not JSON ({e}): {}",
                text::truncate(&body, 200)
            )));
        }
        Ok(HttpRequest {
            method: self.method.clone(),
            url: self.url.clone(),
            headers,
            body,
        })
    }
}

/// Compiles and renders one template; errors name it and the line.
fn render(
    env: &Environment<'_>,
    what: &str,
    src: &str,
    ctx: &minijinja::Value,
) -> Result<String, Failure> {
    let name = if what == "body" { "body" } else { "header" };
    let explain = |e: minijinja::Error| {
        let line = e.line().map(|l| format!(" (line {l})")).unwrap_or_default();
        let mut detail = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            detail.push_str(&format!(": {s}"));
            source = s.source();
        }
        failure::config(&format!("template `{what}`{line}: {detail}"))
    };
    let t = env.template_from_named_str(name, src).map_err(explain)?;
    t.render(ctx).map_err(explain)
}

/// `headers`: a JSON object of strings.
fn parse_headers(text: &str) -> Result<Vec<(String, String)>, Failure> {
    let v: Value = serde_json::from_str(text).map_err(|e| {
        failure::config(&format!(
            "config key `headers`: not a JSON object ({e}); write e.g. {{\"Content-Type\": \"application/json\"}}"
        ))
    })?;
    let Value::Object(map) = v else {
        return Err(failure::config(
            "config key `headers`: not a JSON object of name to value",
        ));
    };
    map.into_iter()
        .map(|(k, v)| {
            let valid_name = !k.is_empty()
                && k.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
            match v {
                Value::String(s) if valid_name => Ok((k, s)),
                _ if !valid_name => Err(failure::config(&format!(
                    "config key `headers`: `{}` is not a header name",
                    text::truncate(&k, 60)
                ))),
                _ => Err(failure::config(&format!(
                    "config key `headers`: the value of `{k}` is not a string"
                ))),
            }
        })
        .collect()
}

/// What templates see.
fn context(ev: &Event, secret: Option<&str>) -> minijinja::Value {
    let r = &ev.record;
    let event = json!({
        "receipt_id": r.receipt_id,
        "received_at": r.received_at,
        "attempt": r.attempt,
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
    });
    minijinja::context! {
        event => minijinja::Value::from_serialize(&event),
        raw => minijinja::Value::from_serialize(ev.raw()),
        raw_text => r.raw.clone(),
        secret => secret.unwrap_or_default(),
    }
}

export!(Template);

#[cfg(test)]
mod tests {
    use super::*;

    const LOCKOUT: &str = include_str!("../../../tests/fixtures/events/critical-lockout.json");

    fn spec(body: &str, escape: Escape) -> Spec {
        Spec {
            url: "https://x.example/hook".into(),
            method: "POST".into(),
            headers: parse_headers(
                r#"{"Content-Type": "application/json", "X-Id": "{{ event.event_id }}"}"#,
            )
            .unwrap(),
            body: Some(body.into()),
            escape,
            secret: Some("s3cret".into()),
        }
    }

    fn ev() -> Event {
        Event::parse(LOCKOUT).unwrap()
    }

    #[test]
    fn json_escaping_keeps_hostile_content_inside_strings() {
        let hostile = Event::parse(r#"{"id": "H-1", "user": "\"}, \"evil\": {\"x\": 1"}"#).unwrap();
        let r = spec(
            r#"{"user": {{ raw.user }}, "id": {{ event.event_id }}}"#,
            Escape::Json,
        )
        .render(&hostile)
        .unwrap();
        let v: Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(v["user"], "\"}, \"evil\": {\"x\": 1");
        assert_eq!(v.as_object().unwrap().len(), 2);
        assert_eq!(r.headers[1].value, "H-1");
    }

    #[test]
    fn the_raw_event_and_record_are_visible() {
        let r = spec(
            r#"{"e": {{ raw }}, "sev": {{ event.severity }}, "k": {{ secret }}, "missing": {{ raw.a.b.c | default(none) }}}"#,
            Escape::Json,
        )
        .render(&ev())
        .unwrap();
        let v: Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(v["e"], serde_json::from_str::<Value>(LOCKOUT).unwrap());
        assert_eq!(v["sev"], "critical");
        assert_eq!(v["k"], "s3cret");
        assert_eq!(v["missing"], Value::Null);
    }

    #[test]
    fn broken_templates_are_configuration_errors() {
        for (body, want) in [
            ("{{ raw.user ", "template `body`"),
            ("{% if %}", "template `body`"),
            ("{{ raw | nosuchfilter }}", "nosuchfilter"),
            (r#"{"a": {{ raw.user | safe }}}"#, "not JSON"),
        ] {
            let e = spec(body, Escape::Json).render(&ev()).unwrap_err();
            assert!(!e.retryable);
            assert!(e.message.contains("configuration error"), "{}", e.message);
            assert!(e.message.contains(want), "{body}: {}", e.message);
        }
    }

    #[test]
    fn undefined_values_print_as_null() {
        let r = spec(
            r#"{"x": {{ raw.nosuch }}, "y": {{ raw.a.b }}, "z": {{ event.console_url }}}"#,
            Escape::Json,
        )
        .render(&Event::parse(r#"{"id": "1"}"#).unwrap())
        .unwrap();
        let v: Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(v, json!({"x": null, "y": null, "z": null}));
    }

    #[test]
    fn header_values_cannot_inject_lines() {
        let mut s = spec("{}", Escape::Json);
        s.headers = vec![("X-User".into(), "{{ raw.user }}".into())];
        let e = s
            .render(&Event::parse(r#"{"id": "1", "user": "a\r\nX-Evil: 1"}"#).unwrap())
            .unwrap_err();
        assert!(e.message.contains("line break"), "{}", e.message);
    }
}
