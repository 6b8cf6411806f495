//! Splunk HTTP Event Collector (HEC) transform.
//!
//! One Superna Zero Trust webhook becomes one HEC event:
//! `POST <url>/services/collector/event` with `Authorization: Splunk
//! <token>` and the body `{"time", "host", "source", "sourcetype",
//! "index", "event"}`, where `event` is the webhook's JSON exactly as
//! received and `time` the detection time (else the receive time) in epoch
//! seconds.
//!
//! With indexer acknowledgement (`ack = true`) every request carries the
//! `X-Splunk-Request-Channel` header (the `channel` key, or a GUID derived
//! from the URL and index, stable per route), HEC answers
//! `{"text":"Success","code":0,"ackId":N}` and the flow then polls
//! `POST <url>/services/collector/ack?channel=...` with `{"acks":[N]}` up
//! to `ack_polls` times.  Acknowledged: done.  Still pending: a retryable
//! failure after `ack_retry_seconds`, and the ackId is kept in per-route
//! state so the retried flow polls it again *before* sending anything: an
//! event is not indexed twice because its acknowledgement was slow.
//!
//! HEC's errors: 401 (token required, code 2/3) and 403 (invalid token,
//! code 4) are permanent, as is 400 (invalid data, or acknowledgement
//! disabled on the token: code 14); 503 (server busy, code 9), 5xx and 429
//! are retried, honouring `Retry-After`.

use std::sync::Mutex;

use serde_json::Value;
use ztbridge_sdk::config::key;
use ztbridge_sdk::json::ObjectWriter;
use ztbridge_sdk::{
    EgressRule, Event, EventInput, Failure, Guest, HttpResponse, Info, Request, Response, Step,
    config, export, failure, join_url, send, single, state, text,
};

const EVENT_PATH: &str = "services/collector/event";
const ACK_PATH: &str = "services/collector/ack";
const DEFAULT_SOURCETYPE: &str = "superna:zerotrust";

/// Where the flow is.
enum Pending {
    /// The event was sent.
    Sent,
    /// Ack `id` polled (`polls` so far); `resent` when the event was sent
    /// by this flow (not an earlier attempt).
    Polling { id: u64, polls: u32 },
}

/// Per flow: settings and position (a fresh instance per flow).
static FLOW: Mutex<Option<(Settings, String, Pending)>> = Mutex::new(None);

struct Splunk;

impl Guest for Splunk {
    fn describe() -> Info {
        Info {
            name: "splunk".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description:
                "Superna Zero Trust events to Splunk HTTP Event Collector, with or without indexer acknowledgement"
                    .into(),
            egress: vec![EgressRule::ConfigUrl("url".into())],
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
                    "url",
                    "HEC base URL, e.g. https://splunk.example.com:8088 (the path /services/collector/event is added)",
                    true,
                    false,
                    None,
                ),
                key("token", "HEC token (sent as `Authorization: Splunk <token>`)", true, true, None),
                key("index", "Index to write to (none: the token's default index)", false, false, None),
                key("sourcetype", "Event sourcetype", false, false, Some(DEFAULT_SOURCETYPE)),
                key("source", "Event source", false, false, Some("ztbridge")),
                key(
                    "host",
                    "Event host (none: the event's first cluster, else HEC's default)",
                    false,
                    false,
                    None,
                ),
                key(
                    "ack",
                    "Wait for indexer acknowledgement (the token must have it enabled)",
                    false,
                    false,
                    Some("false"),
                ),
                key(
                    "channel",
                    "X-Splunk-Request-Channel GUID for acknowledgement (none: derived from url and index, stable per route)",
                    false,
                    false,
                    None,
                ),
                key(
                    "ack_polls",
                    "Acknowledgement polls per attempt before retrying later",
                    false,
                    false,
                    Some("5"),
                ),
                key(
                    "ack_retry_seconds",
                    "When acknowledgement is still pending: retry after this many seconds",
                    false,
                    false,
                    Some("10"),
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
        let state_key = format!("ack:{}", ev.receipt_id());
        // A retried flow whose event is already sent polls its ack first.
        if settings.ack
            && let Some(id) = state::get(&state_key).and_then(|v| v.parse::<u64>().ok())
        {
            let step = send(vec![ack_request(&settings, id)]);
            *FLOW.lock().unwrap_or_else(|p| p.into_inner()) =
                Some((settings, state_key, Pending::Polling { id, polls: 1 }));
            return Ok(step);
        }
        let request = event_request(&settings, &ev);
        *FLOW.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((settings, state_key, Pending::Sent));
        Ok(send(vec![request]))
    }

    fn resume(responses: Vec<Response>) -> Result<Step, Failure> {
        let resp = single(responses)?;
        let mut flow = FLOW.lock().unwrap_or_else(|p| p.into_inner());
        let Some((settings, state_key, pending)) = flow.as_mut() else {
            return Err(failure::permanent("resume without a flow"));
        };
        match *pending {
            Pending::Sent => {
                check(&resp, "Splunk HEC event")?;
                if !settings.ack {
                    return Ok(Step::Done(format!(
                        "Splunk HEC accepted the event (HTTP {})",
                        resp.status
                    )));
                }
                let Some(id) = serde_json::from_str::<Value>(&resp.body)
                    .ok()
                    .and_then(|v| v.get("ackId").and_then(Value::as_u64))
                else {
                    return Err(failure::config(
                        "ack = true but Splunk HEC answered without an ackId: enable indexer acknowledgement on the token, or set ack = false",
                    ));
                };
                state::set(state_key, &id.to_string());
                *pending = Pending::Polling { id, polls: 1 };
                Ok(send(vec![ack_request(settings, id)]))
            }
            Pending::Polling { id, polls } => {
                check(&resp, "Splunk HEC ack")?;
                let acked = serde_json::from_str::<Value>(&resp.body)
                    .ok()
                    .and_then(|v| v.get("acks")?.get(id.to_string())?.as_bool())
                    .unwrap_or(false);
                if acked {
                    state::delete(state_key);
                    return Ok(Step::Done(format!(
                        "Splunk HEC indexed the event (ackId {id} acknowledged after {polls} poll{})",
                        if polls == 1 { "" } else { "s" }
                    )));
                }
                if polls >= settings.ack_polls {
                    return Err(failure::retryable(
                        &format!(
                            "Splunk HEC has not acknowledged ackId {id} after {polls} polls; polling again later (the event is not sent again)"
                        ),
                        Some(settings.ack_retry_seconds),
                    ));
                }
                *pending = Pending::Polling {
                    id,
                    polls: polls + 1,
                };
                Ok(send(vec![ack_request(settings, id)]))
            }
        }
    }
}

/// HEC's answer classified: its `text` and `code` in the message.
fn check(resp: &HttpResponse, what: &str) -> Result<(), Failure> {
    if resp.status == 400 {
        let v: Option<Value> = serde_json::from_str(&resp.body).ok();
        let code = v
            .as_ref()
            .and_then(|v| v.get("code"))
            .and_then(Value::as_i64);
        let why = v
            .as_ref()
            .and_then(|v| v.get("text"))
            .and_then(Value::as_str)
            .map(|t| text::truncate(t, 300))
            .unwrap_or_else(|| text::truncate(resp.body.trim(), 300));
        let hint = if code == Some(14) {
            " (indexer acknowledgement is disabled on this token: set ack = false or enable it)"
        } else {
            ""
        };
        return Err(failure::permanent(&format!(
            "{what}: HTTP 400, HEC code {} (rejected, not retried): {why}{hint}",
            code.map_or("?".into(), |c| c.to_string())
        )));
    }
    failure::check(resp, what)
}

/// The route's configuration.
struct Settings {
    token: String,
    /// Base URL without a trailing `/`.
    url: String,
    index: Option<String>,
    sourcetype: String,
    source: String,
    host: Option<String>,
    ack: bool,
    channel: String,
    ack_polls: u32,
    ack_retry_seconds: u32,
}

impl Settings {
    fn load() -> Result<Settings, Failure> {
        let url = config::require("url")?
            .trim()
            .trim_end_matches('/')
            .to_string();
        // Accept the full endpoint too.
        let url = url
            .strip_suffix("/services/collector/event")
            .or_else(|| url.strip_suffix("/services/collector"))
            .unwrap_or(&url)
            .to_string();
        let index = config::get("index");
        let number = |k: &str, d: &str, lo: u32, hi: u32| -> Result<u32, Failure> {
            let v = config::get_or(k, d);
            v.trim()
                .parse::<u32>()
                .ok()
                .filter(|n| (lo..=hi).contains(n))
                .ok_or_else(|| {
                    failure::config(&format!(
                        "config key `{k}`: `{}` is not a number from {lo} to {hi}",
                        text::truncate(&v, 40)
                    ))
                })
        };
        let channel = match config::get("channel") {
            Some(c) => {
                let c = c.trim().to_string();
                if !is_guid(&c) {
                    return Err(failure::config(
                        "config key `channel`: not a GUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)",
                    ));
                }
                c
            }
            None => derived_channel(&url, index.as_deref().unwrap_or("")),
        };
        Ok(Settings {
            token: config::require("token")?,
            index,
            sourcetype: config::get_or("sourcetype", DEFAULT_SOURCETYPE),
            source: config::get_or("source", "ztbridge"),
            host: config::get("host"),
            ack: config::flag("ack", false)?,
            channel,
            ack_polls: number("ack_polls", "5", 1, 100)?,
            ack_retry_seconds: number("ack_retry_seconds", "10", 1, 3600)?,
            url,
        })
    }

    fn authed(&self, r: Request) -> Request {
        let r = r.header("Authorization", &format!("Splunk {}", self.token));
        if self.ack {
            r.header("X-Splunk-Request-Channel", &self.channel)
        } else {
            r
        }
    }
}

fn is_guid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() == 5
        && parts
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(p, n)| p.len() == n && p.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// A GUID from the URL and index: the same for every flow of a route.
fn derived_channel(url: &str, index: &str) -> String {
    let h = text::sha256_hex(format!("ztbridge-hec-channel\n{url}\n{index}").as_bytes());
    format!(
        "{}-{}-4{}-8{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

/// The HEC event request.
fn event_request(settings: &Settings, ev: &Event) -> Request {
    let time = ev
        .detected()
        .and_then(|t| epoch_seconds(&t))
        .or_else(|| epoch_seconds(ev.received_at()))
        .unwrap_or_else(|| "0".into());
    let clusters = ev.clusters();
    let host = settings
        .host
        .clone()
        .or_else(|| clusters.first().map(|c| c.to_string()));
    let raw = ev.raw_text();
    let mut body = String::with_capacity(raw.len() + 256);
    let mut w = ObjectWriter::new(&mut body);
    w.raw("time", &time)
        .opt_str("host", host.as_deref())
        .str("source", &settings.source)
        .str("sourcetype", &settings.sourcetype)
        .opt_str("index", settings.index.as_deref());
    // The event as received when it is JSON (the host stores only JSON
    // webhooks), else as a string.
    if serde_json::from_str::<serde::de::IgnoredAny>(raw).is_ok() {
        w.raw("event", raw);
    } else {
        w.str("event", raw);
    }
    w.end();
    settings
        .authed(Request::post(&join_url(&settings.url, EVENT_PATH)).body("application/json", body))
}

/// The ack poll for `id`.
fn ack_request(settings: &Settings, id: u64) -> Request {
    settings.authed(
        Request::post(&join_url(&settings.url, ACK_PATH))
            .query(&[("channel", &settings.channel)])
            .body("application/json", format!("{{\"acks\":[{id}]}}")),
    )
}

/// `2025-06-11T10:15:03.250Z` or `...+02:00` to `1749636903.250`.
fn epoch_seconds(t: &str) -> Option<String> {
    let b = t.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> { t.get(r)?.parse().ok() };
    if b.len() < 20 || b.get(4) != Some(&b'-') || b.get(10) != Some(&b'T') {
        return None;
    }
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hh, mm, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let mut i = 19;
    let mut millis = 0i64;
    if b.get(i) == Some(&b'.') {
        let start = i + 1;
        i = start;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let frac = format!("{:0<3}", &t[start..i]);
        millis = frac.get(0..3)?.parse().ok()?;
    }
    let offset = match b.get(i)? {
        b'Z' | b'z' => 0,
        sign @ (b'+' | b'-') => {
            let (oh, om) = (num(i + 1..i + 3)?, num(i + 4..i + 6)?);
            let o = oh * 3600 + om * 60;
            if *sign == b'+' { o } else { -o }
        }
        _ => return None,
    };
    let days = days_from_civil(y, m, d);
    let secs = days * 86_400 + hh * 3600 + mm * 60 + ss - offset;
    Some(format!("{secs}.{millis:03}"))
}

/// Days since 1970-01-01 (Howard Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The config key the host sets when it checks the route (see
/// `Route::validate` in the runtime).
const VALIDATE_KEY: &str = "ztbridge_validate";

export!(Splunk);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_become_epoch_seconds() {
        assert_eq!(
            epoch_seconds("2025-06-11T10:15:03Z").as_deref(),
            Some("1749636903.000")
        );
        assert_eq!(
            epoch_seconds("2025-06-11T12:15:03.25+02:00").as_deref(),
            Some("1749636903.250")
        );
        assert_eq!(epoch_seconds("yesterday"), None);
    }

    #[test]
    fn derived_channels_are_guids_and_stable() {
        let a = derived_channel("https://s:8088", "zt");
        assert!(is_guid(&a), "{a}");
        assert_eq!(a, derived_channel("https://s:8088", "zt"));
        assert_ne!(a, derived_channel("https://s:8088", "other"));
    }
}
