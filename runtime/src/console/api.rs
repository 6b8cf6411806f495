//! The JSON API under `/api/` (documented in `openapi.json`, served at
//! `/api/openapi.json`), and the actions, which the pages' forms post to
//! as well: a form post is answered with a redirect back, anything else
//! with JSON.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequest, Path, Query, Request, State};
use axum::http::{StatusCode, header};
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
///
/// An extractor: an action handler takes `p: Params` (its last argument,
/// since it reads the body) and answers an unreadable body with the error
/// [`Params::read`] gives.
pub(super) struct Params {
    /// By name.
    fields: HashMap<String, String>,
    /// Whether they came from a form (answer with a redirect).
    form: bool,
}

/// An action's answer. `Err` is an answer given early (an error, or a dry
/// run's preview), so that a handler's steps can end it with `?`; both
/// sides are sent as they are.
type Answer = Result<Response, Response>;

impl<S: Send + Sync> FromRequest<S> for Params {
    type Rejection = Response;

    /// The body, as the `Bytes` extractor reads it (its error answer
    /// unchanged), then its fields as [`Params::read`] parses them.
    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let content_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let body = Bytes::from_request(req, state)
            .await
            .map_err(IntoResponse::into_response)?;
        Params::read(&content_type, &body)
    }
}

impl Params {
    /// The fields of a body of this content type: a JSON object's
    /// strings, booleans and numbers, or else URL-encoded form fields.
    // The error is the answer itself, built once per request: boxing it
    // would only add an allocation.
    #[allow(clippy::result_large_err)]
    fn read(ct: &str, body: &[u8]) -> Result<Params, Response> {
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

/// 404 for a receipt ID the store does not know.
fn no_event() -> Response {
    json_error(
        StatusCode::NOT_FOUND,
        "not_found",
        "no event with this receipt ID",
    )
}

/// 409 for an action with nothing in a state it applies to.
fn nothing_to_do(message: &str) -> Response {
    json_error(StatusCode::CONFLICT, "nothing_to_do", message)
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
        Ok(None) => no_event(),
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
        Ok(None) => no_event(),
        Err(e) => store_error(&e),
    }
}

/// `retry`: pending and failed deliveries due now; `rerun`: delivered ones
/// too, from scratch through the route's current transform.
async fn requeue(app: &ConsoleState, id: &str, p: &Params, all: bool) -> Answer {
    let store = app.dispatcher.store();
    let record = store
        .record(id, false)
        .await
        .map_err(|e| store_error(&e))?
        .ok_or_else(no_event)?;
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
        let requeued = store
            .requeue(id, Some(&d.route), app.dispatcher.retry_horizon_ms())
            .await
            .map_err(|e| store_error(&e))?;
        done.extend(requeued);
    }
    if done.is_empty() {
        return Err(nothing_to_do(
            "no delivery of this event is in a state this action applies to",
        ));
    }
    app.dispatcher.wake();
    tracing::info!(receipt_id = %id, routes = %done.join(","), rerun = all, "console: deliveries re-queued");
    let verb = if all { "run again" } else { "retried" };
    Ok(p.answer(
        StatusCode::OK,
        json!({ "requeued": done }),
        &format!("{verb}: {}", done.join(", ")),
    ))
}

pub(super) async fn retry(
    State(app): State<Arc<ConsoleState>>,
    Path(id): Path<String>,
    p: Params,
) -> Answer {
    requeue(&app, &id, &p, false).await
}

pub(super) async fn rerun(
    State(app): State<Arc<ConsoleState>>,
    Path(id): Path<String>,
    p: Params,
) -> Answer {
    requeue(&app, &id, &p, true).await
}

pub(super) async fn skip(
    State(app): State<Arc<ConsoleState>>,
    Path(id): Path<String>,
    p: Params,
) -> Answer {
    let Some(route) = p.get("route") else {
        return Err(json_error(
            StatusCode::BAD_REQUEST,
            "missing_route",
            "route: which delivery to mark skipped",
        ));
    };
    let skipped = app
        .dispatcher
        .store()
        .skip(&id, &route, "skipped by an operator (console)")
        .await
        .map_err(|e| store_error(&e))?;
    if !skipped {
        return Err(nothing_to_do(
            "no pending or failed delivery of this event on this route",
        ));
    }
    tracing::info!(receipt_id = %id, %route, "console: delivery marked skipped");
    Ok(p.answer(
        StatusCode::OK,
        json!({ "skipped": route }),
        &format!("skipped: {route}"),
    ))
}

/// The dead letters (receipt ID, route) a bulk action applies to: those
/// its filter selects, at most [`BULK_MAX`].  Without `confirm=yes`, the
/// dry run is answered instead, as `Err`: `{"dry_run": true, <would>:
/// count}` and the flash `preview(count)`.
async fn confirmed_dead_letters(
    app: &ConsoleState,
    p: &Params,
    would: &str,
    preview: impl FnOnce(u64) -> String,
) -> Result<Vec<(String, String)>, Response> {
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
    if !p.yes("confirm") {
        return Err(p.answer(
            StatusCode::OK,
            json!({ "dry_run": true, would: total }),
            &preview(total),
        ));
    }
    Ok(rows.into_iter().map(|r| (r.receipt_id, r.route)).collect())
}

/// Bulk retry of the dead letters a filter selects: without
/// `confirm=yes`, only the count (the preview).
pub(super) async fn dead_letters_retry(State(app): State<Arc<ConsoleState>>, p: Params) -> Answer {
    let rows = confirmed_dead_letters(&app, &p, "would_retry", |total| {
        format!("preview: {total} dead letters match; confirm to retry them")
    })
    .await?;
    let store = app.dispatcher.store();
    let horizon = app.dispatcher.retry_horizon_ms();
    let mut retried = 0usize;
    for (receipt_id, route) in rows {
        let selection = RetrySelection {
            receipt_id: Some(receipt_id),
            route: Some(route),
        };
        let r = store
            .retry_failed(selection, horizon)
            .await
            .map_err(|e| store_error(&e))?;
        retried += r.len();
    }
    app.dispatcher.wake();
    tracing::info!(retried, "console: dead letters retried");
    Ok(p.answer(
        StatusCode::OK,
        json!({ "dry_run": false, "retried": retried }),
        &format!("retried {retried} dead letters"),
    ))
}

/// Purge of the dead letters a filter selects: each is closed (no longer
/// a dead letter, never delivered) and goes with retention like delivered
/// ones.  Without `confirm=yes`, a dry run: the count.
pub(super) async fn dead_letters_purge(State(app): State<Arc<ConsoleState>>, p: Params) -> Answer {
    let rows = confirmed_dead_letters(&app, &p, "would_purge", |total| {
        format!("dry run: {total} dead letters would be purged; confirm to purge them")
    })
    .await?;
    let store = app.dispatcher.store();
    let mut purged = 0usize;
    for (receipt_id, route) in rows {
        let closed = store
            .skip(
                &receipt_id,
                &route,
                "dead letter purged by an operator (console)",
            )
            .await
            .map_err(|e| store_error(&e))?;
        purged += usize::from(closed);
    }
    tracing::info!(purged, "console: dead letters purged");
    Ok(p.answer(
        StatusCode::OK,
        json!({ "dry_run": false, "purged": purged }),
        &format!("purged {purged} dead letters"),
    ))
}

/// Pauses or resumes a route (configured, or paused already).
async fn set_paused(app: &ConsoleState, route: &str, p: &Params, paused: bool) -> Answer {
    let known = app.dispatcher.routes().get(route).is_some()
        || app.dispatcher.paused().iter().any(|r| r == route);
    if !known {
        return Err(json_error(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such route",
        ));
    }
    app.dispatcher
        .set_paused(route, paused)
        .await
        .map_err(|e| store_error(&e))?;
    Ok(p.answer(
        StatusCode::OK,
        json!({ "route": route, "paused": paused }),
        &format!("{route}: {}", if paused { "paused" } else { "resumed" }),
    ))
}

pub(super) async fn pause(
    State(app): State<Arc<ConsoleState>>,
    Path(route): Path<String>,
    p: Params,
) -> Answer {
    set_paused(&app, &route, &p, true).await
}

pub(super) async fn resume(
    State(app): State<Arc<ConsoleState>>,
    Path(route): Path<String>,
    p: Params,
) -> Answer {
    set_paused(&app, &route, &p, false).await
}

/// Sends a sample event through one route (a real delivery: a test
/// incident at the destination), to follow on its event page.
pub(super) async fn test_event(
    State(app): State<Arc<ConsoleState>>,
    Path(route): Path<String>,
    p: Params,
) -> Answer {
    if app.dispatcher.routes().get(&route).is_none() {
        return Err(json_error(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such route (configured and enabled)",
        ));
    }
    let now = now_millis();
    let id = format!("ZTBRIDGE-TEST-{now}");
    let event = crate::ops::sample::sample_event(&crate::ops::sample::Sample {
        id: &id,
        severity: "CRITICAL",
        state: "LOCKED_OUT",
        user: "CORP\\ztbridge-console-test",
        note: "ztbridge console test event (not a real alert)",
        at_ms: now,
    });
    let body = event.to_string();
    let Ok(parsed) = zt_event::Event::parse(body.clone()) else {
        return Err(json_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the sample event does not parse",
        ));
    };
    let receipt_id = app
        .dispatcher
        .admit_test(&route, body, &parsed)
        .await
        .map_err(|e| store_error(&e))?;
    tracing::info!(%route, %receipt_id, "console: test event sent");
    if p.form {
        let to: String = url::form_urlencoded::byte_serialize(receipt_id.as_bytes()).collect();
        return Ok(Redirect::to(&format!("/events/{to}?flash=test+event+sent")).into_response());
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "receipt_id": receipt_id, "event_id": id, "route": route })),
    )
        .into_response())
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
