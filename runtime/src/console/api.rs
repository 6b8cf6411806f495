//! The JSON API under `/api/` (documented in `openapi.json`, served at
//! `/api/openapi.json`), and the actions, which the pages' forms post to
//! as well: a form post is answered with a redirect back, anything else
//! with JSON.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use serde_json::{Value, json};

use super::ConsoleState;
use super::data::{self, EventsQuery};
use super::error::{json_error, store_error};
use crate::store::{DeliveryState, ListFilter, RetrySelection};
use crate::time::now_millis;

/// The OpenAPI document of this API.
pub(super) const OPENAPI: &str = include_str!("openapi.json");

/// Most dead letters one bulk action handles.
const BULK_MAX: usize = 10_000;

/// An action's parameters: a form's fields or a JSON object's strings.
pub(super) struct Params {
    /// By name.
    fields: HashMap<String, String>,
    /// Whether they came from a form (answer with a redirect).
    form: bool,
}

impl Params {
    // The error is the answer itself, built once per request: boxing it
    // would only add an allocation.
    #[allow(clippy::result_large_err)]
    fn read(headers: &HeaderMap, body: &[u8]) -> Result<Params, Response> {
        let ct = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if ct.starts_with("application/json") {
            let v: Value = serde_json::from_slice(body).map_err(|e| {
                json_error(
                    StatusCode::BAD_REQUEST,
                    "bad_json",
                    format!("the body is not JSON: {e}"),
                )
            })?;
            let Value::Object(m) = v else {
                return Err(json_error(
                    StatusCode::BAD_REQUEST,
                    "bad_json",
                    "the body must be a JSON object",
                ));
            };
            let fields = m
                .into_iter()
                .filter_map(|(k, v)| match v {
                    Value::String(s) => Some((k, s)),
                    Value::Bool(b) => Some((k, b.to_string())),
                    Value::Number(n) => Some((k, n.to_string())),
                    _ => None,
                })
                .collect();
            return Ok(Params {
                fields,
                form: false,
            });
        }
        let fields = url::form_urlencoded::parse(body).into_owned().collect();
        Ok(Params {
            fields,
            form: ct.starts_with("application/x-www-form-urlencoded"),
        })
    }

    fn get(&self, k: &str) -> Option<String> {
        self.fields
            .get(k)
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    }

    fn yes(&self, k: &str) -> bool {
        matches!(self.get(k).as_deref(), Some("yes" | "true" | "1" | "on"))
    }

    /// The answer: back to the page the form came from (a local path
    /// only), or JSON.
    fn answer(&self, status: StatusCode, body: Value, flash: &str) -> Response {
        if !self.form {
            return (status, Json(body)).into_response();
        }
        let back = self
            .get("back")
            .filter(|b| b.starts_with('/') && !b.starts_with("//") && !b.contains('\\'))
            .unwrap_or_else(|| "/".into());
        let sep = if back.contains('?') { '&' } else { '?' };
        let flash: String = url::form_urlencoded::byte_serialize(flash.as_bytes()).collect();
        Redirect::to(&format!("{back}{sep}flash={flash}")).into_response()
    }

    /// The events filter these fields describe.
    #[allow(clippy::result_large_err)]
    fn filter(&self) -> Result<ListFilter, Response> {
        EventsQuery {
            route: self.get("route"),
            state: None,
            severity: self.get("severity"),
            since: self.get("since"),
            until: self.get("until"),
            q: self.get("q"),
            page: None,
        }
        .filter()
        .map_err(|m| json_error(StatusCode::BAD_REQUEST, "bad_filter", m))
    }
}

pub(super) async fn overview(State(app): State<Arc<ConsoleState>>) -> Response {
    match data::overview(&app).await {
        Ok(o) => Json(o).into_response(),
        Err(e) => store_error(&e),
    }
}

pub(super) async fn events(
    State(app): State<Arc<ConsoleState>>,
    Query(q): Query<EventsQuery>,
) -> Response {
    let (filter, page) = match (q.filter(), q.page()) {
        (Ok(f), Ok(p)) => (f, p),
        (Err(m), _) | (_, Err(m)) => return json_error(StatusCode::BAD_REQUEST, "bad_filter", m),
    };
    match data::events(&app, filter, page).await {
        Ok(p) => Json(p).into_response(),
        Err(e) => store_error(&e),
    }
}

pub(super) async fn event(
    State(app): State<Arc<ConsoleState>>,
    Path(id): Path<String>,
) -> Response {
    match data::event(&app, &id).await {
        Ok(Some(r)) => Json(r).into_response(),
        Ok(None) => json_error(
            StatusCode::NOT_FOUND,
            "not_found",
            "no event with this receipt ID",
        ),
        Err(e) => store_error(&e),
    }
}

/// What each route's current transform would do with the event, offline.
pub(super) async fn dry_run(
    State(app): State<Arc<ConsoleState>>,
    Path(id): Path<String>,
) -> Response {
    match app.dispatcher.store().record(&id, false).await {
        Ok(Some(r)) => Json(data::dry_runs(&app, &r).await).into_response(),
        Ok(None) => json_error(
            StatusCode::NOT_FOUND,
            "not_found",
            "no event with this receipt ID",
        ),
        Err(e) => store_error(&e),
    }
}

/// `retry`: pending and failed deliveries due now; `rerun`: delivered ones
/// too, from scratch through the route's current transform.
async fn requeue(app: &ConsoleState, id: &str, p: &Params, all: bool) -> Response {
    let store = app.dispatcher.store();
    let record = match store.record(id, false).await {
        Ok(Some(r)) => r,
        Ok(None) => {
            return json_error(
                StatusCode::NOT_FOUND,
                "not_found",
                "no event with this receipt ID",
            );
        }
        Err(e) => return store_error(&e),
    };
    let only = p.get("route");
    let mut done = Vec::new();
    for d in &record.deliveries {
        if only.as_ref().is_some_and(|r| *r != d.route) {
            continue;
        }
        let eligible = match d.state {
            DeliveryState::Pending | DeliveryState::Failed => true,
            DeliveryState::Delivered => all,
            DeliveryState::InFlight => false,
        };
        if !eligible {
            continue;
        }
        match store
            .requeue(id, Some(&d.route), app.dispatcher.retry_horizon_ms())
            .await
        {
            Ok(r) => done.extend(r),
            Err(e) => return store_error(&e),
        }
    }
    if done.is_empty() {
        return json_error(
            StatusCode::CONFLICT,
            "nothing_to_do",
            "no delivery of this event is in a state this action applies to",
        );
    }
    app.dispatcher.wake();
    tracing::info!(receipt_id = %id, routes = %done.join(","), rerun = all, "console: deliveries re-queued");
    let verb = if all { "run again" } else { "retried" };
    p.answer(
        StatusCode::OK,
        json!({ "requeued": done }),
        &format!("{verb}: {}", done.join(", ")),
    )
}

pub(super) async fn retry(
    State(app): State<Arc<ConsoleState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match Params::read(&headers, &body) {
        Ok(p) => requeue(&app, &id, &p, false).await,
        Err(r) => r,
    }
}

pub(super) async fn rerun(
    State(app): State<Arc<ConsoleState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match Params::read(&headers, &body) {
        Ok(p) => requeue(&app, &id, &p, true).await,
        Err(r) => r,
    }
}

pub(super) async fn skip(
    State(app): State<Arc<ConsoleState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let p = match Params::read(&headers, &body) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let Some(route) = p.get("route") else {
        return json_error(
            StatusCode::BAD_REQUEST,
            "missing_route",
            "route: which delivery to mark skipped",
        );
    };
    match app
        .dispatcher
        .store()
        .skip(&id, &route, "skipped by an operator (console)")
        .await
    {
        Ok(true) => {
            tracing::info!(receipt_id = %id, %route, "console: delivery marked skipped");
            p.answer(
                StatusCode::OK,
                json!({ "skipped": route }),
                &format!("skipped: {route}"),
            )
        }
        Ok(false) => json_error(
            StatusCode::CONFLICT,
            "nothing_to_do",
            "no pending or failed delivery of this event on this route",
        ),
        Err(e) => store_error(&e),
    }
}

/// The dead letters a bulk action's filter selects.
async fn dead_letters(
    app: &ConsoleState,
    p: &Params,
) -> Result<(u64, Vec<(String, String)>), Response> {
    let filter = ListFilter {
        state: Some(DeliveryState::Failed),
        ..p.filter()?
    };
    let store = app.dispatcher.store();
    let total = store
        .count(filter.clone())
        .await
        .map_err(|e| store_error(&e))?;
    let rows = store
        .list(ListFilter {
            limit: BULK_MAX,
            ..filter
        })
        .await
        .map_err(|e| store_error(&e))?;
    Ok((
        total,
        rows.into_iter().map(|r| (r.receipt_id, r.route)).collect(),
    ))
}

/// Bulk retry of the dead letters a filter selects: without
/// `confirm=yes`, only the count (the preview).
pub(super) async fn dead_letters_retry(
    State(app): State<Arc<ConsoleState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let p = match Params::read(&headers, &body) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let (total, rows) = match dead_letters(&app, &p).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    if !p.yes("confirm") {
        return p.answer(
            StatusCode::OK,
            json!({ "dry_run": true, "would_retry": total }),
            &format!("preview: {total} dead letters match; confirm to retry them"),
        );
    }
    let store = app.dispatcher.store();
    let horizon = app.dispatcher.retry_horizon_ms();
    let mut retried = 0usize;
    for (receipt_id, route) in rows {
        match store
            .retry_failed(
                RetrySelection {
                    receipt_id: Some(receipt_id),
                    route: Some(route),
                },
                horizon,
            )
            .await
        {
            Ok(r) => retried += r.len(),
            Err(e) => return store_error(&e),
        }
    }
    app.dispatcher.wake();
    tracing::info!(retried, "console: dead letters retried");
    p.answer(
        StatusCode::OK,
        json!({ "dry_run": false, "retried": retried }),
        &format!("retried {retried} dead letters"),
    )
}

/// Purge of the dead letters a filter selects: each is closed (no longer
/// a dead letter, never delivered) and goes with retention like delivered
/// ones.  Without `confirm=yes`, a dry run: the count.
pub(super) async fn dead_letters_purge(
    State(app): State<Arc<ConsoleState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let p = match Params::read(&headers, &body) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let (total, rows) = match dead_letters(&app, &p).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    if !p.yes("confirm") {
        return p.answer(
            StatusCode::OK,
            json!({ "dry_run": true, "would_purge": total }),
            &format!("dry run: {total} dead letters would be purged; confirm to purge them"),
        );
    }
    let store = app.dispatcher.store();
    let mut purged = 0usize;
    for (receipt_id, route) in rows {
        match store
            .skip(
                &receipt_id,
                &route,
                "dead letter purged by an operator (console)",
            )
            .await
        {
            Ok(true) => purged += 1,
            Ok(false) => {}
            Err(e) => return store_error(&e),
        }
    }
    tracing::info!(purged, "console: dead letters purged");
    p.answer(
        StatusCode::OK,
        json!({ "dry_run": false, "purged": purged }),
        &format!("purged {purged} dead letters"),
    )
}

async fn set_paused(
    app: &ConsoleState,
    route: &str,
    headers: &HeaderMap,
    body: &[u8],
    paused: bool,
) -> Response {
    let p = match Params::read(headers, body) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let known = app.dispatcher.routes().get(route).is_some()
        || app.dispatcher.paused().iter().any(|r| r == route);
    if !known {
        return json_error(StatusCode::NOT_FOUND, "not_found", "no such route");
    }
    match app.dispatcher.set_paused(route, paused).await {
        Ok(()) => p.answer(
            StatusCode::OK,
            json!({ "route": route, "paused": paused }),
            &format!("{route}: {}", if paused { "paused" } else { "resumed" }),
        ),
        Err(e) => store_error(&e),
    }
}

pub(super) async fn pause(
    State(app): State<Arc<ConsoleState>>,
    Path(route): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    set_paused(&app, &route, &headers, &body, true).await
}

pub(super) async fn resume(
    State(app): State<Arc<ConsoleState>>,
    Path(route): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    set_paused(&app, &route, &headers, &body, false).await
}

/// Sends a sample event through one route (a real delivery: a test
/// incident at the destination), to follow on its event page.
pub(super) async fn test_event(
    State(app): State<Arc<ConsoleState>>,
    Path(route): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let p = match Params::read(&headers, &body) {
        Ok(p) => p,
        Err(r) => return r,
    };
    if app.dispatcher.routes().get(&route).is_none() {
        return json_error(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such route (configured and enabled)",
        );
    }
    let now = now_millis();
    let at = crate::time::rfc3339_millis(now);
    let id = format!("ZTBRIDGE-TEST-{now}");
    let event = json!({
        "id": id,
        "severity": "CRITICAL",
        "state": "LOCKED_OUT",
        "user": "CORP\\ztbridge-console-test",
        "clientIPs": ["192.0.2.10"],
        "shares": ["\\\\test-cluster\\ztbridge-test"],
        "files": ["/ifs/data/ztbridge-test/sample.docx.locked"],
        "eventSource": "ISILON_CLUSTER",
        "nes": ["test-cluster"],
        "signalStrength": 3,
        "threatDetectors": ["ztbridge console test event (not a real alert)"],
        "detected": at,
        "lastUpdated": at,
    });
    let body = event.to_string();
    let Ok(parsed) = zt_event::Event::parse(body.clone()) else {
        return json_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the sample event does not parse",
        );
    };
    match app.dispatcher.admit_test(&route, body, &parsed).await {
        Ok(receipt_id) => {
            tracing::info!(%route, %receipt_id, "console: test event sent");
            if p.form {
                let to: String =
                    url::form_urlencoded::byte_serialize(receipt_id.as_bytes()).collect();
                return Redirect::to(&format!("/events/{to}?flash=test+event+sent"))
                    .into_response();
            }
            (
                StatusCode::ACCEPTED,
                Json(json!({ "receipt_id": receipt_id, "event_id": id, "route": route })),
            )
                .into_response()
        }
        Err(e) => store_error(&e),
    }
}

pub(super) async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

/// Server-sent events: every second, the deliveries of events received
/// and the attempts made since the last look (`event: delivery` and
/// `event: attempt`, JSON data).  Read from the store, so it shows what
/// every node did.
pub(super) async fn stream(State(app): State<Arc<ConsoleState>>) -> Response {
    let start = now_millis();
    let state = (app, start, start);
    let s = futures_util::stream::unfold(
        state,
        |(app, mut seen_event, mut seen_attempt)| async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let store = app.dispatcher.store();
            let mut out: Vec<Result<Event, std::convert::Infallible>> = Vec::new();
            if let Ok(rows) = store
                .list(ListFilter {
                    since_ms: Some(seen_event),
                    limit: 200,
                    ..ListFilter::default()
                })
                .await
            {
                for r in rows.iter().rev() {
                    seen_event = seen_event.max(r.received_ms + 1);
                    if let Ok(data) = serde_json::to_string(r) {
                        out.push(Ok(Event::default().event("delivery").data(data)));
                    }
                }
            }
            if let Ok(points) = store.attempts_since(seen_attempt, 200).await {
                for p in points {
                    seen_attempt = seen_attempt.max(p.at_ms + 1);
                    if let Ok(data) = serde_json::to_string(&p) {
                        out.push(Ok(Event::default().event("attempt").data(data)));
                    }
                }
            }
            Some((
                futures_util::stream::iter(out),
                (app, seen_event, seen_attempt),
            ))
        },
    );
    use futures_util::StreamExt;
    Sse::new(s.flatten())
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}
