//! End to end: webhooks into the real server, the built-in Splunk HEC
//! component in the sandbox, a stub HTTP Event Collector on loopback that
//! speaks the documented protocol:
//!
//! * `Authorization: Splunk <token>`: missing -> 401 `{"text": "Token is
//!   required", "code": 2}`, unknown -> 403 `{"text": "Invalid token",
//!   "code": 4}`;
//! * `POST /services/collector/event`: a JSON object with `event`, else
//!   400 (`code` 6 invalid data format, 12 event field is required);
//!   answers `{"text": "Success", "code": 0}`, plus `ackId` when the token
//!   has indexer acknowledgement, which then needs the
//!   `X-Splunk-Request-Channel` header (else 400 code 10);
//! * `POST /services/collector/ack?channel=...` with `{"acks": [ids]}`:
//!   `{"acks": {"id": bool}}`, an ID acknowledged once polled
//!   `ack_after` times; 400 code 14 when the token has no acknowledgement.
//!
//! Scripted answers (503 server busy, 429...) come first.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::stub::{HttpStub, StubRequest};
use common::*;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);
const TOKEN: &str = "11111111-2222-3333-4444-555555555555";

#[derive(Default)]
struct Hec {
    /// The token has indexer acknowledgement enabled.
    ack_enabled: bool,
    /// Polls an ackId needs before it reads as acknowledged.
    ack_after: u32,
    /// Indexed events (the request bodies).
    events: Vec<Value>,
    /// ackId -> (channel, polls so far).
    acks: BTreeMap<u64, (String, u32)>,
}

fn hec_error(status: u16, text: &str, code: u32) -> Answer {
    (
        status,
        vec![],
        json!({"text": text, "code": code}).to_string(),
    )
}

fn hec(s: &mut Hec, r: &StubRequest) -> Answer {
    let auth = r.header("authorization");
    if auth.is_empty() {
        return hec_error(401, "Token is required", 2);
    }
    if auth != format!("Splunk {TOKEN}") {
        return hec_error(403, "Invalid token", 4);
    }
    let channel = r.header("x-splunk-request-channel");
    match r.path.as_str() {
        "/services/collector/event" => {
            let Ok(body) = serde_json::from_str::<Value>(&r.body) else {
                return hec_error(400, "Invalid data format", 6);
            };
            if body.get("event").is_none() {
                return hec_error(400, "Event field is required", 12);
            }
            if s.ack_enabled && channel.is_empty() {
                return hec_error(400, "Data channel is missing", 10);
            }
            s.events.push(body);
            if s.ack_enabled {
                let id = s.acks.len() as u64;
                s.acks.insert(id, (channel, 0));
                (
                    200,
                    vec![],
                    json!({"text": "Success", "code": 0, "ackId": id}).to_string(),
                )
            } else {
                (
                    200,
                    vec![],
                    json!({"text": "Success", "code": 0}).to_string(),
                )
            }
        }
        "/services/collector/ack" => {
            if !s.ack_enabled {
                return hec_error(400, "ACK is disabled", 14);
            }
            let query_channel = r
                .query
                .strip_prefix("channel=")
                .unwrap_or_default()
                .to_string();
            if query_channel.is_empty() || query_channel != channel {
                return hec_error(400, "Data channel is missing", 10);
            }
            let Some(ids) = serde_json::from_str::<Value>(&r.body)
                .ok()
                .and_then(|v| v["acks"].as_array().cloned())
            else {
                return hec_error(400, "Invalid data format", 6);
            };
            let ack_after = s.ack_after;
            let mut out = serde_json::Map::new();
            for id in ids.iter().filter_map(Value::as_u64) {
                let acked = match s.acks.get_mut(&id) {
                    Some((c, polls)) if *c == channel => {
                        *polls += 1;
                        *polls >= ack_after
                    }
                    _ => false,
                };
                out.insert(id.to_string(), json!(acked));
            }
            (200, vec![], json!({"acks": out}).to_string())
        }
        _ => hec_error(404, "The requested URL was not found on this server.", 404),
    }
}

async fn stub(ack_enabled: bool, ack_after: u32) -> HttpStub<Hec> {
    HttpStub::start(
        Hec {
            ack_enabled,
            ack_after,
            ..Hec::default()
        },
        hec,
    )
    .await
}

fn route(stub: &HttpStub<Hec>, config: &str) -> String {
    format!(
        "{FAST_RETRY}[[route]]\nname = \"splunk\"\ntransform = \"builtin:splunk\"\nallow_http = true\nprivate_networks = [\"127.0.0.0/8\"]\n[route.config]\nurl = {:?}\n{config}\n",
        stub.url()
    )
}

fn token() -> String {
    format!("token = {TOKEN:?}\nindex = \"zerotrust\"\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_indexed_as_received_without_acknowledgement() {
    let hec = stub(false, 0).await;
    let server = Server::start(&route(
        &hec,
        &format!(
            "{}sourcetype = \"superna:zt\"\nsource = \"eyeglass\"\n",
            token()
        ),
    ))
    .await;
    let record = server
        .deliver(&fixture("events/critical-lockout.json"), WAIT)
        .await;
    assert_eq!(record["deliveries"][0]["state"], "delivered", "{record}");
    assert_eq!(
        outcomes(&record)[0]["message"],
        "Splunk HEC accepted the event (HTTP 200)"
    );
    let events = hec.with(|s| s.events.clone());
    assert_eq!(events.len(), 1);
    let e = &events[0];
    assert_eq!(e["index"], "zerotrust");
    assert_eq!(e["sourcetype"], "superna:zt");
    assert_eq!(e["source"], "eyeglass");
    assert_eq!(e["host"], "prod-cluster-01");
    assert_eq!(e["time"], json!(1_749_636_903.0));
    let original: Value = serde_json::from_str(&fixture("events/critical-lockout.json")).unwrap();
    assert_eq!(e["event"], original);
    let req = &hec.received()[0];
    assert_eq!(
        req.header("x-splunk-request-channel"),
        "",
        "no channel without ack"
    );
    assert_eq!(req.header("content-type"), "application/json");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_acknowledgement_the_ack_is_polled_until_indexed() {
    let hec = stub(true, 2).await;
    let server = Server::start(&route(&hec, &format!("{}ack = true\n", token()))).await;
    let record = server
        .deliver(&fixture("events/critical-lockout.json"), WAIT)
        .await;
    assert_eq!(record["deliveries"][0]["state"], "delivered", "{record}");
    assert_eq!(
        outcomes(&record)[0]["message"],
        "Splunk HEC indexed the event (ackId 0 acknowledged after 2 polls)"
    );
    assert_eq!(
        hec.calls(),
        [
            "POST /services/collector/event",
            "POST /services/collector/ack",
            "POST /services/collector/ack"
        ]
    );
    // One channel, a GUID, for the event and its polls.
    let got = hec.received();
    let channel = got[0].header("x-splunk-request-channel");
    assert_eq!(channel.len(), 36, "{channel}");
    assert!(
        got.iter()
            .all(|r| r.header("x-splunk-request-channel") == channel)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_acknowledgement_is_polled_again_later_without_resending() {
    // Acknowledged on the 4th poll; one poll per attempt, retried after 1 s.
    let hec = stub(true, 4).await;
    let server = Server::start(&route(
        &hec,
        &format!(
            "{}ack = true\nack_polls = 1\nack_retry_seconds = 1\n",
            token()
        ),
    ))
    .await;
    let (status, answer) = server
        .post_gzip(&fixture("events/critical-lockout.json"))
        .await;
    assert_eq!(status, 202);
    let receipt = answer["receipt_id"].as_str().unwrap().to_string();
    let record = server.settled(&receipt, WAIT).await;
    let o = delivered_after(&record, 4);
    for pending in &o[..3] {
        assert_eq!(pending["retryable"], true, "{record}");
        assert_eq!(pending["retry_after_seconds"], 1, "{record}");
    }
    assert_eq!(
        hec.with(|s| s.events.len()),
        1,
        "the event is sent once: {:?}",
        hec.calls()
    );
    assert_eq!(
        hec.calls().iter().filter(|c| c.ends_with("/ack")).count(),
        4
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_tokens_are_permanent_and_a_busy_server_is_retried() {
    let hec = stub(false, 0).await;
    let server = Server::start(&route(&hec, "token = \"not-the-token\"\n")).await;
    let record = server
        .deliver(&fixture("events/critical-lockout.json"), WAIT)
        .await;
    assert_eq!(record["deliveries"][0]["state"], "failed", "{record}");
    assert_not_retried(&record, "HTTP 403");
    assert!(!record.to_string().contains("not-the-token"), "redacted");

    let hec = stub(false, 0).await;
    hec.script(
        "/services/collector/event",
        (
            503,
            vec![("retry-after", "1".into())],
            json!({"text": "Server is busy", "code": 9}).to_string(),
        ),
    );
    hec.script(
        "/services/collector/event",
        (429, vec![("retry-after", "1".into())], String::new()),
    );
    let server = Server::start(&route(&hec, &token())).await;
    let record = server
        .deliver(&fixture("events/critical-lockout.json"), WAIT)
        .await;
    let o = delivered_after(&record, 3);
    assert_eq!(o[0]["retryable"], true);
    assert!(o[0]["message"].as_str().unwrap().contains("Server is busy"));
    assert_eq!(o[1]["retry_after_seconds"], 1);
    let got = hec.received();
    assert_eq!(
        got.iter().map(|r| r.status).collect::<Vec<_>>(),
        [503, 429, 200]
    );
    assert!(got[2].at.duration_since(got[1].at) >= Duration::from_secs(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ack_on_a_token_without_acknowledgement_is_a_clear_permanent_error() {
    // The token has no acknowledgement: HEC answers without an ackId.
    let hec = stub(false, 0).await;
    let server = Server::start(&route(&hec, &format!("{}ack = true\n", token()))).await;
    let record = server
        .deliver(&fixture("events/critical-lockout.json"), WAIT)
        .await;
    assert_not_retried(&record, "enable indexer acknowledgement on the token");
}
