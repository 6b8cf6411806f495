//! `POST /webhook`: a Superna Zero Trust webhook -> 202 once stored, 200
//! for a duplicate, or a 4xx/503 saying what was wrong.  The handler is
//! thin: [`super::intake`] decides, the dispatcher stores.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use std::time::Duration;

use super::HttpState;
use super::error::{error, unavailable};
use crate::delivery::{Accepted, Admitted, Full};
use crate::store::StoreError;
use crate::text::{display_id, error_chain, excerpt};
use crate::time::rfc3339_millis;

pub(super) async fn webhook(State(app): State<Arc<HttpState>>, req: Request) -> Response {
    app.metrics.webhooks_received.inc();
    let headers = req.headers().clone();
    // The body must arrive whole in time: a client trickling it cannot
    // hold the connection and this handler (tower-http's body timeout
    // only bounds the gap between two chunks).
    let deadline = Duration::from_secs(app.intake.limits.body_read_timeout_secs);
    let body = match tokio::time::timeout(deadline, Bytes::from_request(req, &())).await {
        Ok(body) => body,
        Err(_) => {
            tracing::info!(
                timeout_secs = deadline.as_secs(),
                "webhook refused: the body did not arrive in time"
            );
            return refuse(
                &app,
                error(
                    StatusCode::REQUEST_TIMEOUT,
                    "body_timeout",
                    format!(
                        "the request body did not arrive within {} s (intake.body_read_timeout_secs)",
                        deadline.as_secs()
                    ),
                ),
                "body_timeout",
            );
        }
    };
    let started = std::time::Instant::now();
    let resp = accept(&app, headers, body).await;
    app.metrics
        .accept_latency
        .observe(started.elapsed().as_secs_f64());
    resp
}

/// A refusal, counted by its reason.
fn refuse(app: &HttpState, resp: Response, reason: &str) -> Response {
    app.metrics
        .webhooks_rejected
        .with_label_values(&[reason])
        .inc();
    resp
}

async fn accept(
    app: &Arc<HttpState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(b) => b,
        Err(rej) if rej.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            let limit = app.intake.limits.max_body_bytes;
            return refuse(
                app,
                error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body_too_large",
                    format!("request body exceeds {limit} bytes"),
                ),
                "body_too_large",
            );
        }
        Err(rej) => {
            return refuse(
                app,
                error(rej.status(), "unreadable_body", rej.body_text()),
                "unreadable_body",
            );
        }
    };
    if let Err(full) = app.dispatcher.room() {
        let (code, message) = match full {
            Full::Backlog => (
                "overloaded",
                "delivery backlog is full (delivery.max_pending); retry later",
            ),
            Full::Disk => (
                "disk_full",
                "the data directory is short of disk space (delivery.min_free_disk_mb); retry later",
            ),
            Full::StoreLost => (
                "store_lost",
                "the event store's files were removed or replaced: nothing can be stored until it is restored or the service restarted",
            ),
        };
        tracing::warn!("webhook refused: {message}");
        return refuse(app, unavailable(code, message), code);
    }
    // Inflating and parsing up to intake.max_decoded_bytes is CPU work:
    // only small webhooks (the usual) are decoded here, the rest off the
    // async workers.
    let kept_headers = headers_of_note(&headers);
    let decoded = match app.intake.accept_inline(&headers, &body) {
        Some(decoded) => Ok(decoded),
        None => {
            let intake_app = app.clone();
            tokio::task::spawn_blocking(move || intake_app.intake.accept(&headers, &body)).await
        }
    };
    let event = match decoded {
        Ok(Ok(event)) => event,
        Ok(Err(e)) => {
            tracing::info!(reason = e.code(), "webhook refused: {e}");
            let code = e.code();
            return refuse(app, e.into_response(), code);
        }
        Err(_) => {
            return refuse(
                app,
                error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "intake task failed",
                ),
                "internal",
            );
        }
    };
    let receipt_id = event.receipt_id.clone();
    let event_id = event.event.id().map(|id| display_id(Some(&id)));
    if event_id.is_none() {
        tracing::warn!(%receipt_id, "webhook has no recognisable event ID: updates cannot be correlated");
    }
    let admitted = app
        .dispatcher
        .admit(Accepted {
            receipt_id: event.receipt_id.clone(),
            received_ms: event.received_ms,
            event: &event.event,
            body: event.body.clone(),
            headers: kept_headers,
        })
        .await;
    let shown_id = event_id.as_deref().unwrap_or("-");
    match admitted {
        Ok(Admitted::Stored { routes }) => {
            app.metrics.webhooks_accepted.inc();
            tracing::info!(%receipt_id, event_id = shown_id, routes = %routes.join(","), "webhook accepted");
            (
                StatusCode::ACCEPTED,
                Json(json!({ "status": "accepted", "receipt_id": receipt_id, "event_id": event_id, "routes": routes })),
            )
                .into_response()
        }
        Ok(Admitted::Duplicate {
            receipt_id: original,
            received_ms,
        }) => {
            app.metrics.webhooks_duplicate.inc();
            let received_at = rfc3339_millis(received_ms);
            tracing::info!(event_id = shown_id, original = %original, "duplicate webhook: already accepted at {received_at}; not delivered again");
            (
                StatusCode::OK,
                Json(json!({ "status": "duplicate", "receipt_id": original, "event_id": event_id, "first_received_at": received_at })),
            )
                .into_response()
        }
        Err(e @ StoreError::Lost(_)) => {
            tracing::error!(%receipt_id, "webhook NOT accepted: {}", error_chain(&e));
            refuse(
                app,
                unavailable(
                    "store_lost",
                    "the event store's files were removed or replaced: nothing can be stored until it is restored or the service restarted",
                ),
                "store_lost",
            )
        }
        Err(e) => {
            tracing::error!(%receipt_id, "webhook NOT accepted: cannot store it: {}", error_chain(&e));
            refuse(
                app,
                unavailable(
                    "store_unavailable",
                    "the event could not be stored; retry later",
                ),
                "store_unavailable",
            )
        }
    }
}

/// Request headers kept with the event: what tells how it was sent, never
/// credentials.
fn headers_of_note(headers: &HeaderMap) -> Vec<(String, String)> {
    const KEEP: &[&str] = &[
        "content-type",
        "content-encoding",
        "content-length",
        "user-agent",
        "x-forwarded-for",
        "x-request-id",
    ];
    headers
        .iter()
        .filter(|(k, _)| KEEP.contains(&k.as_str()) || k.as_str().starts_with("x-superna"))
        .take(32)
        .map(|(k, v)| {
            let v = String::from_utf8_lossy(v.as_bytes());
            (k.to_string(), excerpt(&v, 256))
        })
        .collect()
}
