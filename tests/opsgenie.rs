//! End to end: webhooks into the real server, the built-in Opsgenie
//! component in the sandbox, a stub Opsgenie Alert API v2 on loopback
//! that speaks the documented protocol:
//!
//! * every call needs `Authorization: GenieKey <key>`; anything else gets
//!   401 `{"message": "Could not authenticate", ...}`;
//! * `POST /v2/alerts` validates `message` (1-130 characters) and `alias`
//!   (at most 512), else 422 with `errors`; an open alert with the same
//!   alias is de-duplicated (its count goes up), as Opsgenie does;
//! * `POST /v2/alerts/{alias}/notes?identifierType=alias` and
//!   `.../close?identifierType=alias` act on the alert by alias;
//! * every accepted request answers `202 {"result": "Request will be
//!   processed", "took": ..., "requestId": ...}`.
//!
//! Scripted answers (429 + Retry-After, 5xx, 401...) come first.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::stub::{HttpStub, StubRequest};
use common::*;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(20);
const KEY: &str = "0pSg3N1e-KEY-0000-1111-222233334444";

/// An alert as the stub keeps it.
#[derive(Debug, Clone, Default)]
struct Alert {
    body: Value,
    count: u32,
    notes: Vec<String>,
    closed: bool,
}

#[derive(Default)]
struct Opsgenie {
    alerts: BTreeMap<String, Alert>,
    requests: u32,
}

fn accepted(s: &mut Opsgenie) -> Answer {
    s.requests += 1;
    (
        202,
        vec![],
        json!({"result": "Request will be processed", "took": 0.01,
               "requestId": format!("req-{:04}", s.requests)})
        .to_string(),
    )
}

fn error(status: u16, message: &str) -> Answer {
    (
        status,
        vec![],
        json!({"message": message, "took": 0.0, "requestId": "req-err"}).to_string(),
    )
}

/// Percent-decodes a path segment.
fn decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

fn opsgenie(s: &mut Opsgenie, r: &StubRequest) -> Answer {
    if r.header("authorization") != format!("GenieKey {KEY}") {
        return error(401, "Could not authenticate");
    }
    if r.method != "POST" {
        return error(405, "Method not allowed");
    }
    let Ok(body) = serde_json::from_str::<Value>(&r.body) else {
        return error(400, "Request body is not a valid JSON");
    };
    if r.path == "/v2/alerts" {
        let message = body["message"].as_str().unwrap_or_default();
        let alias = body["alias"].as_str().unwrap_or_default();
        if message.is_empty() || message.chars().count() > 130 || alias.chars().count() > 512 {
            return (
                422,
                vec![],
                json!({"message": "Request body is not processable. Please check the errors.",
                       "errors": {"message": "Message can not be empty or longer than 130 characters."},
                       "took": 0.0, "requestId": "req-422"})
                .to_string(),
            );
        }
        let alert = s.alerts.entry(alias.to_string()).or_default();
        if alert.count == 0 || alert.closed {
            *alert = Alert {
                body: body.clone(),
                ..Alert::default()
            };
        }
        alert.count += 1;
        return accepted(s);
    }
    let parts: Vec<&str> = r.path.trim_start_matches('/').split('/').collect();
    if let ["v2", "alerts", alias, action @ ("notes" | "close")] = parts[..] {
        if r.query != "identifierType=alias" {
            return error(400, "identifierType must be alias here");
        }
        let alias = decode(alias);
        let note = body["note"].as_str().unwrap_or_default().to_string();
        // Opsgenie accepts first and fails the request asynchronously for
        // an unknown alias: the stub records it the same way.
        if let Some(alert) = s.alerts.get_mut(&alias) {
            if action == "close" {
                alert.closed = true;
            }
            alert.notes.push(note);
        }
        return accepted(s);
    }
    error(404, "No such endpoint")
}

async fn stub() -> HttpStub<Opsgenie> {
    HttpStub::start(Opsgenie::default(), opsgenie).await
}

fn route(stub: &HttpStub<Opsgenie>, extra: &str) -> String {
    format!(
        "{FAST_RETRY}[[route]]\nname = \"opsgenie\"\ntransform = \"builtin:opsgenie\"\nallow_http = true\nprivate_networks = [\"127.0.0.0/8\"]\n[route.config]\napi_key = {KEY:?}\napi_url = {:?}\n{extra}\n",
        stub.url()
    )
}

fn with_state(state: &str) -> String {
    let mut v: Value = serde_json::from_str(&fixture("events/critical-lockout.json")).unwrap();
    v["state"] = json!(state);
    v.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_is_created_noted_and_closed_by_alias() {
    let og = stub().await;
    let server = Server::start(&route(&og, "responders = \"storage-oncall\"")).await;

    let record = server
        .deliver(&fixture("events/critical-lockout.json"), WAIT)
        .await;
    assert_eq!(record["deliveries"][0]["state"], "delivered", "{record}");
    let done = outcomes(&record)[0]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        done,
        "Opsgenie accepted create (HTTP 202) alias=superna-zt-RSW-20250611-000123 requestId=req-0001"
    );
    let alias = "superna-zt-RSW-20250611-000123";
    let alert = og.with(|s| s.alerts[alias].clone());
    assert_eq!(alert.body["priority"], "P1");
    assert_eq!(
        alert.body["responders"],
        json!([{"name": "storage-oncall", "type": "team"}])
    );
    assert_eq!(alert.body["details"]["user"], "CORP\\jsmith");
    assert!(
        alert.body["message"]
            .as_str()
            .unwrap()
            .starts_with("[Critical] LOCKED_OUT: CORP\\jsmith on prod-cluster-01")
    );

    // The same lockout again: Opsgenie de-duplicates on the alias.
    server
        .deliver(&fixture("events/critical-lockout.json"), WAIT)
        .await;
    // A monitor-only change is an update: a note.
    let record = server.deliver(&with_state("MONITOR"), WAIT).await;
    assert_eq!(record["deliveries"][0]["state"], "delivered", "{record}");
    // Access restored closes it.
    let record = server
        .deliver(&fixture("events/critical-access-restored.json"), WAIT)
        .await;
    assert_eq!(record["deliveries"][0]["state"], "delivered", "{record}");

    let alert = og.with(|s| s.alerts[alias].clone());
    assert_eq!(alert.count, 2, "one alert, de-duplicated");
    assert!(alert.closed);
    assert_eq!(alert.notes.len(), 2, "{:?}", alert.notes);
    assert!(alert.notes[0].starts_with("Superna Zero Trust update: [Critical] MONITOR"));
    assert!(alert.notes[1].contains("ACCESS_RESTORED"));
    assert_eq!(
        og.calls(),
        [
            "POST /v2/alerts",
            "POST /v2/alerts",
            &format!("POST /v2/alerts/{alias}/notes"),
            &format!("POST /v2/alerts/{alias}/close"),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aliases_with_reserved_characters_are_encoded_in_the_path() {
    let og = stub().await;
    let server = Server::start(&route(&og, "")).await;
    let mut v: Value = serde_json::from_str(&fixture("events/critical-lockout.json")).unwrap();
    v["id"] = json!("EV/7 ?#x");
    server.deliver(&v.to_string(), WAIT).await;
    v["state"] = json!("RECOVERED");
    let record = server.deliver(&v.to_string(), WAIT).await;
    assert_eq!(record["deliveries"][0]["state"], "delivered", "{record}");
    let close = og.received().pop().unwrap();
    assert_eq!(close.path, "/v2/alerts/superna-zt-EV%2F7%20%3F%23x/close");
    assert!(og.with(|s| s.alerts["superna-zt-EV/7 ?#x"].closed));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_is_retried_after_retry_after_and_5xx_is_retried() {
    let og = stub().await;
    og.script(
        "/v2/alerts",
        (429, vec![("retry-after", "1".into())], String::new()),
    );
    og.script("/v2/alerts", error(503, "Service Unavailable"));
    let server = Server::start(&route(&og, "")).await;
    let record = server
        .deliver(&fixture("events/critical-lockout.json"), WAIT)
        .await;
    let outcomes = outcomes(&record);
    assert_eq!(record["deliveries"][0]["state"], "delivered", "{record}");
    assert_eq!(outcomes.len(), 3, "{record}");
    assert_eq!(outcomes[0]["retryable"], true);
    assert_eq!(outcomes[0]["retry_after_seconds"], 1);
    assert_eq!(outcomes[1]["retryable"], true);
    let got = og.received();
    assert_eq!(
        got.iter().map(|r| r.status).collect::<Vec<_>>(),
        [429, 503, 202]
    );
    assert!(
        got[1].at.duration_since(got[0].at) >= Duration::from_secs(1),
        "Retry-After is honoured"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_key_and_an_invalid_request_are_not_retried() {
    let og = stub().await;
    let server = Server::start(&format!(
        "{FAST_RETRY}[[route]]\nname = \"opsgenie\"\ntransform = \"builtin:opsgenie\"\nallow_http = true\nprivate_networks = [\"127.0.0.0/8\"]\n[route.config]\napi_key = \"wrong-key\"\napi_url = {:?}\n",
        og.url()
    ))
    .await;
    let record = server
        .deliver(&fixture("events/critical-lockout.json"), WAIT)
        .await;
    assert_eq!(record["deliveries"][0]["state"], "failed", "{record}");
    assert_not_retried(&record, "HTTP 401");
    assert!(
        !record.to_string().contains("wrong-key"),
        "the key is redacted"
    );

    let og = stub().await;
    og.script(
        "/v2/alerts",
        (
            422,
            vec![],
            json!({"message": "Request body is not processable. Please check the errors.",
                   "errors": {"message": "Message can not be empty."}, "took": 0.0, "requestId": "r"})
            .to_string(),
        ),
    );
    let server = Server::start(&route(&og, "")).await;
    let record = server
        .deliver(&fixture("events/critical-lockout.json"), WAIT)
        .await;
    assert_not_retried(
        &record,
        "HTTP 422, not retried): Request body is not processable",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_region_or_priority_map_refuses_the_route_at_start() {
    for (extra, want) in [
        ("region = \"mars\"", "`region`"),
        ("priority_map = \"critical=P9\"", "P1 to P5"),
    ] {
        let data = tempfile::tempdir().expect("tempdir");
        let text = format!(
            "data_dir = {:?}\n[[route]]\nname = \"opsgenie\"\ntransform = \"builtin:opsgenie\"\n[route.config]\napi_key = \"k\"\n{extra}\n",
            data.path().display().to_string()
        );
        let config = ztbridge_runtime::config::Config::parse(&text, "test").expect("config");
        let err = match ztbridge_runtime::app::App::build(config, &builtins(), true) {
            Ok(_) => panic!("{extra}: the route was accepted"),
            Err(e) => format!("{e:#}"),
        };
        assert!(err.contains(want), "{extra}: {err}");
    }
}
