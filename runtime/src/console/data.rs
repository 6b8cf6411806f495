//! What the pages and the JSON API show, read from the store and the
//! running routes: one function per view, so a page and its API answer
//! never disagree.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::ConsoleState;
use crate::store::{DeliveryState, EventRecord, ListFilter, ListRow, StoreError};
use crate::time::{now_millis, parse_rfc3339_millis, rfc3339_millis};

/// Rows per page of the events list.
pub(super) const PAGE_SIZE: usize = 50;
/// Consecutive failed attempts from which a route counts as failing.
const FAILING_AFTER: u32 = 3;
/// Attempts read for the overview's last hour (the newest kept).
const MAX_POINTS: usize = 200_000;

/// One route on the overview.
#[derive(Debug, Clone, Serialize)]
pub(super) struct RouteView {
    /// The route's name.
    pub name: String,
    /// `paused`; `failing` (3 or more failed attempts in a row);
    /// `retrying` (failed attempts and deliveries waiting); else `healthy`.
    pub state: &'static str,
    /// Whether the route is configured now (deliveries of a route that
    /// went away wait for it).
    pub configured: bool,
    /// When an attempt last succeeded (within the last hour).
    pub last_success: Option<String>,
    /// Failed attempts since the last success (within the last hour).
    pub consecutive_failures: u32,
    /// Deliveries pending or in flight.
    pub backlog: u64,
    /// Age of the oldest event with an open delivery, in seconds.
    pub oldest_pending_age_s: Option<i64>,
    /// Dead letters (failed deliveries).
    pub dead_letters: u64,
    /// Successful attempts per minute over the last hour, oldest first
    /// (60 values).
    pub per_minute: Vec<u32>,
    /// Median attempt duration over the last hour (ms).
    pub p50_ms: Option<f64>,
    /// 99th percentile attempt duration over the last hour (ms).
    pub p99_ms: Option<f64>,
}

/// A loaded transform, as the overview lists it.
#[derive(Debug, Clone, Serialize)]
pub(super) struct TransformView {
    /// The route that runs it.
    pub route: String,
    /// Its self-described name and version.
    pub name: String,
    /// Its version.
    pub version: String,
    /// `sha256:...` of the component.
    pub digest: String,
    /// Who signed it, as verified at load.
    pub signed_by: String,
    /// The WIT contract it implements.
    pub contract: String,
    /// Where its requests may go.
    pub egress: String,
}

/// The overview page's data.
#[derive(Debug, Clone, Serialize)]
pub(super) struct Overview {
    /// When it was read.
    pub generated_at: String,
    /// Per route, configured ones first.
    pub routes: Vec<RouteView>,
    /// The transforms the routes run.
    pub transforms: Vec<TransformView>,
}

/// The value at `q` (0..=1) of sorted `v`.
fn quantile(v: &[f64], q: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let i = ((v.len() - 1) as f64 * q).round() as usize;
    v.get(i.min(v.len() - 1)).copied()
}

pub(super) async fn overview(app: &ConsoleState) -> Result<Overview, StoreError> {
    let d = &app.dispatcher;
    let store = d.store();
    let now = now_millis();
    let hour_ago = now - 3_600_000;
    let counts = store.route_counts().await?;
    let points = store.attempts_since(hour_ago, MAX_POINTS).await?;
    let paused = d.paused();
    let routes = d.routes();
    let mut names: Vec<String> = routes.iter().map(|r| r.name.to_string()).collect();
    for c in &counts {
        if !names.contains(&c.route) {
            names.push(c.route.clone());
        }
    }
    let mut out = Vec::new();
    for name in names {
        let mut backlog = 0;
        let mut oldest: Option<i64> = None;
        let mut dead = 0;
        for c in counts.iter().filter(|c| c.route == name) {
            match c.state {
                DeliveryState::Pending | DeliveryState::InFlight => {
                    backlog += c.count;
                    oldest = match (oldest, c.oldest_received_ms) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    };
                }
                DeliveryState::Failed => dead += c.count,
                DeliveryState::Delivered => {}
            }
        }
        let mine: Vec<_> = points.iter().filter(|p| p.route == name).collect();
        let mut per_minute = vec![0u32; 60];
        let mut durations = Vec::with_capacity(mine.len());
        let mut last_success = None;
        let mut failures = 0u32;
        for p in &mine {
            durations.push(p.duration_ms);
            if p.ok {
                let slot = ((p.at_ms - hour_ago) / 60_000).clamp(0, 59) as usize;
                per_minute[slot] += 1;
                last_success = Some(p.at_ms);
                failures = 0;
            } else {
                failures += 1;
            }
        }
        durations.sort_by(|a, b| a.total_cmp(b));
        let state = if paused.contains(&name) {
            "paused"
        } else if failures >= FAILING_AFTER {
            "failing"
        } else if failures > 0 && backlog > 0 {
            "retrying"
        } else {
            "healthy"
        };
        out.push(RouteView {
            configured: routes.get(&name).is_some(),
            state,
            last_success: last_success.map(rfc3339_millis),
            consecutive_failures: failures,
            backlog,
            oldest_pending_age_s: oldest.map(|o| ((now - o) / 1000).max(0)),
            dead_letters: dead,
            per_minute,
            p50_ms: quantile(&durations, 0.5),
            p99_ms: quantile(&durations, 0.99),
            name,
        });
    }
    let transforms = routes
        .iter()
        .map(|r| TransformView {
            route: r.name.to_string(),
            name: r.transform.info.name.clone(),
            version: r.transform.info.version.clone(),
            digest: r.transform.digest.clone(),
            signed_by: r
                .transform
                .signed_by
                .get()
                .cloned()
                .unwrap_or_else(|| "unknown".into()),
            contract: r.transform.info.contract.clone(),
            egress: r.egress.describe(),
        })
        .collect();
    Ok(Overview {
        generated_at: rfc3339_millis(now),
        routes: out,
        transforms,
    })
}

/// The events list's filters, as the query string carries them (every
/// field text, checked by [`EventsQuery::filter`]).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub(super) struct EventsQuery {
    /// Only this route.
    pub route: Option<String>,
    /// Only this delivery state (`pending`, `in_flight`, `delivered`,
    /// `failed`).
    pub state: Option<String>,
    /// Only this severity.
    pub severity: Option<String>,
    /// Received at or after (RFC 3339, or `YYYY-MM-DDTHH:MM` in UTC).
    pub since: Option<String>,
    /// Received before (same forms).
    pub until: Option<String>,
    /// Text in the receipt ID, event ID or body (user, path).
    pub q: Option<String>,
    /// Page number, from 1.
    pub page: Option<String>,
}

/// A time a filter form sent: RFC 3339, or a `datetime-local` value
/// (taken as UTC).
fn parse_time(s: &str) -> Option<i64> {
    parse_rfc3339_millis(s)
        .or_else(|| parse_rfc3339_millis(&format!("{s}:00Z")))
        .or_else(|| parse_rfc3339_millis(&format!("{s}Z")))
}

fn non_empty(v: &Option<String>) -> Option<String> {
    v.as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

impl EventsQuery {
    /// The store filter (without limit and offset), or what is wrong.
    pub(super) fn filter(&self) -> Result<ListFilter, String> {
        let state = match non_empty(&self.state) {
            Some(s) => Some(DeliveryState::parse(&s).ok_or_else(|| {
                format!("unknown state {s:?} (pending, in_flight, delivered, failed)")
            })?),
            None => None,
        };
        let time = |v: &Option<String>, name: &str| -> Result<Option<i64>, String> {
            match non_empty(v) {
                Some(s) => parse_time(&s).map(Some).ok_or_else(|| {
                    format!("{name}: not a time (RFC 3339, e.g. 2026-01-31T12:00:00Z)")
                }),
                None => Ok(None),
            }
        };
        let text = non_empty(&self.q);
        if text.as_ref().is_some_and(|t| t.len() > 200) {
            return Err("q: at most 200 bytes".into());
        }
        Ok(ListFilter {
            state,
            route: non_empty(&self.route),
            limit: 0,
            severity: non_empty(&self.severity),
            since_ms: time(&self.since, "since")?,
            until_ms: time(&self.until, "until")?,
            text,
            offset: 0,
        })
    }

    /// The page asked for, from 1.
    pub(super) fn page(&self) -> Result<usize, String> {
        match non_empty(&self.page) {
            None => Ok(1),
            Some(p) => p
                .parse::<usize>()
                .ok()
                .filter(|p| (1..=1_000_000).contains(p))
                .ok_or_else(|| "page: a number from 1".into()),
        }
    }

    /// This query as a query string, with `page` replaced.
    pub(super) fn with_page(&self, page: usize) -> String {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in [
            ("route", &self.route),
            ("state", &self.state),
            ("severity", &self.severity),
            ("since", &self.since),
            ("until", &self.until),
            ("q", &self.q),
        ] {
            if let Some(v) = non_empty(v) {
                q.append_pair(k, &v);
            }
        }
        q.append_pair("page", &page.to_string());
        q.finish()
    }
}

/// One page of the events list.
#[derive(Debug, Clone, Serialize)]
pub(super) struct EventsPage {
    /// Deliveries matching the filters.
    pub total: u64,
    /// This page's number, from 1.
    pub page: usize,
    /// How many pages there are.
    pub pages: usize,
    /// The rows, newest first.
    pub rows: Vec<ListRow>,
}

pub(super) async fn events(
    app: &ConsoleState,
    filter: ListFilter,
    page: usize,
) -> Result<EventsPage, StoreError> {
    let store = app.dispatcher.store();
    let total = store.count(filter.clone()).await?;
    let rows = store
        .list(ListFilter {
            limit: PAGE_SIZE,
            offset: (page - 1).saturating_mul(PAGE_SIZE),
            ..filter
        })
        .await?;
    Ok(EventsPage {
        total,
        page,
        pages: (total as usize).div_ceil(PAGE_SIZE).max(1),
        rows,
    })
}

/// Keys whose values are secrets wherever they appear in a body.
fn secret_key(k: &str) -> bool {
    let k = k.to_ascii_lowercase();
    [
        "password",
        "passwd",
        "secret",
        "token",
        "authorization",
        "api_key",
        "apikey",
        "routing_key",
        "cookie",
    ]
    .iter()
    .any(|s| k.contains(s))
}

/// `v` with secret-looking fields replaced by `[redacted]`.
pub(super) fn redact(v: &mut Value) {
    match v {
        Value::Object(m) => {
            for (k, v) in m.iter_mut() {
                if secret_key(k) && !v.is_null() {
                    *v = Value::String("[redacted]".into());
                } else {
                    redact(v);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(redact),
        _ => {}
    }
}

/// One webhook with its body and headers redacted, every route's secret
/// values removed from attempts.
pub(super) async fn event(
    app: &ConsoleState,
    receipt_id: &str,
) -> Result<Option<EventRecord>, StoreError> {
    let Some(mut record) = app.dispatcher.store().record(receipt_id, true).await? else {
        return Ok(None);
    };
    if let Some(body) = record.body.as_mut() {
        redact(body);
    }
    if let Some(h) = record.headers.as_mut() {
        redact(h);
    }
    let routes = app.dispatcher.routes();
    for d in &mut record.deliveries {
        if let Some(route) = routes.get(&d.route) {
            for a in &mut d.attempts {
                if let Some(e) = a.error.as_mut() {
                    *e = route.redactor.apply(e);
                }
                let text = route.redactor.apply(&a.outcome.to_string());
                a.outcome = serde_json::from_str(&text).unwrap_or(Value::String(text));
            }
            if let Some(r) = d.reason.as_mut() {
                *r = route.redactor.apply(r);
            }
        }
    }
    Ok(Some(record))
}

/// What each route's current transform would do with this event, as a
/// dry run (no request sent): route -> the report as JSON, its secret
/// values removed.
pub(super) async fn dry_runs(app: &ConsoleState, record: &EventRecord) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    let Some(body) = app
        .dispatcher
        .store()
        .record(&record.receipt_id, true)
        .await
        .ok()
        .flatten()
        .and_then(|r| r.body)
    else {
        return out;
    };
    let text = body.to_string();
    let routes = app.dispatcher.routes();
    for d in &record.deliveries {
        let Some(route) = routes.get(&d.route) else {
            continue;
        };
        if let Some(report) = app
            .dispatcher
            .dry_run(&d.route, &text, &record.receipt_id, record.received_ms)
            .await
        {
            let json = serde_json::to_string(&report).unwrap_or_default();
            let clean = route.redactor.apply(&json);
            out.insert(
                d.route.clone(),
                serde_json::from_str(&clean).unwrap_or(Value::String(clean)),
            );
        }
    }
    out
}

/// Open, failed and delivered counts by route, for the routes page.
pub(super) async fn route_states(
    app: &ConsoleState,
) -> Result<BTreeMap<String, [u64; 3]>, StoreError> {
    let mut out: BTreeMap<String, [u64; 3]> = BTreeMap::new();
    for r in app.dispatcher.routes().iter() {
        out.entry(r.name.to_string()).or_default();
    }
    for c in app.dispatcher.store().route_counts().await? {
        let e = out.entry(c.route).or_default();
        match c.state {
            DeliveryState::Pending | DeliveryState::InFlight => e[0] += c.count,
            DeliveryState::Failed => e[1] += c.count,
            DeliveryState::Delivered => e[2] += c.count,
        }
    }
    Ok(out)
}
