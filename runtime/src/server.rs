//! The HTTP server.  Handlers are thin: intake decides, the dispatcher
//! delivers.  Every answer is JSON.
//!
//! * `POST /webhook`: a Superna Zero Trust webhook -> 202, or a 4xx saying
//!   what was wrong.
//! * `GET /healthz`: alive.
//! * `GET /readyz`: transforms loaded, scheduler running, store writable.
//! * `GET /metrics`: Prometheus text format.
//! * `GET /api/events/{receipt_id}`: what happened to a recent webhook.

use std::future::Future;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use tokio::net::TcpListener;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;

use crate::app::App;
use crate::dispatch::{Admitted, Full};

fn error(status: StatusCode, code: &str, message: impl std::fmt::Display) -> Response {
    (
        status,
        Json(json!({ "error": code, "message": message.to_string() })),
    )
        .into_response()
}

async fn webhook(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let started = std::time::Instant::now();
    app.metrics.webhooks_received.inc();
    let resp = accept(&app, headers, body).await;
    app.metrics
        .accept_latency
        .observe(started.elapsed().as_secs_f64());
    resp
}

/// A refusal, counted by its reason.
fn refuse(app: &App, resp: Response, reason: &str) -> Response {
    app.metrics
        .webhooks_rejected
        .with_label_values(&[reason])
        .inc();
    resp
}

async fn accept(
    app: &Arc<App>,
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
        };
        tracing::warn!("webhook refused: {message}");
        return refuse(app, unavailable(code, message), code);
    }
    // Inflating and parsing up to intake.max_decoded_bytes is CPU work:
    // keep it off the async workers.
    let kept_headers = headers_of_note(&headers);
    let intake_app = app.clone();
    let decoded =
        tokio::task::spawn_blocking(move || intake_app.intake.accept(&headers, &body)).await;
    let decoded = match decoded {
        Ok(d) => d,
        Err(_) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "intake task failed",
            );
        }
    };
    let event = match decoded {
        Ok(event) => event,
        Err(e) => {
            tracing::info!(reason = e.code(), "webhook refused: {e}");
            let code = e.code();
            return refuse(app, e.into_response(), code);
        }
    };
    let receipt_id = event.receipt_id.clone();
    let event_id = event
        .event
        .id()
        .map(|id| crate::dispatch::display_id(Some(&id)));
    if event_id.is_none() {
        tracing::warn!(%receipt_id, "webhook has no recognisable event ID: updates cannot be correlated");
    }
    match app.dispatcher.admit(event, kept_headers).await {
        Ok(Admitted::Stored { routes }) => {
            app.metrics.webhooks_accepted.inc();
            tracing::info!(%receipt_id, event_id = ?event_id, ?routes, "webhook accepted");
            (
                StatusCode::ACCEPTED,
                Json(json!({ "status": "accepted", "receipt_id": receipt_id, "event_id": event_id, "routes": routes })),
            )
                .into_response()
        }
        Ok(Admitted::Duplicate {
            receipt_id: original,
            received_at,
        }) => {
            app.metrics.webhooks_duplicate.inc();
            tracing::info!(event_id = ?event_id, original = %original, "duplicate webhook: already accepted at {received_at}; not delivered again");
            (
                StatusCode::OK,
                Json(json!({ "status": "duplicate", "receipt_id": original, "event_id": event_id, "first_received_at": received_at })),
            )
                .into_response()
        }
        Err(e) => {
            tracing::error!(%receipt_id, "webhook NOT accepted: cannot store it: {e}");
            unavailable(
                "store_unavailable",
                "the event could not be stored; retry later",
            )
        }
    }
}

fn unavailable(code: &str, message: &str) -> Response {
    let mut resp = error(StatusCode::SERVICE_UNAVAILABLE, code, message);
    resp.headers_mut().insert(
        axum::http::header::RETRY_AFTER,
        axum::http::HeaderValue::from_static("30"),
    );
    resp
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
            (k.to_string(), crate::flow::excerpt(&v, 256))
        })
        .collect()
}

/// Prometheus text format; queue gauges are read from the store now.
async fn metrics(State(app): State<Arc<App>>) -> Response {
    let store = app.dispatcher.store().clone();
    if let Ok(Ok(b)) = tokio::task::spawn_blocking(move || store.backlog()).await {
        app.metrics.queue_depth.set(b.open as i64);
        let age = b
            .oldest_open_ms
            .map(|ms| (crate::time::now_millis() - ms).max(0) as f64 / 1000.0)
            .unwrap_or(0.0);
        app.metrics.oldest_pending_age.set(age);
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        app.metrics.render(),
    )
        .into_response()
}

/// Alive: the process answers HTTP.
async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// Ready: transforms loaded (the app exists only once they are), the
/// scheduler running and the event store committing writes.
async fn readyz(State(app): State<Arc<App>>) -> Response {
    let routes = app.dispatcher.route_names();
    let open = app.dispatcher.open_deliveries();
    let accepting = match app.dispatcher.room() {
        Ok(()) => "yes",
        Err(Full::Backlog) => "no: delivery backlog full",
        Err(Full::Disk) => "no: short of disk space",
    };
    match app.dispatcher.health(std::time::Duration::from_secs(2)).await {
        Ok(()) => Json(json!({ "status": "ready", "routes": routes, "open_deliveries": open, "accepting": accepting })).into_response(),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "not_ready", "error": "not_ready", "message": why, "routes": routes })),
        )
            .into_response(),
    }
}

async fn event_status(State(app): State<Arc<App>>, Path(receipt_id): Path<String>) -> Response {
    let lookup = app.clone();
    let id = receipt_id.clone();
    let found = tokio::task::spawn_blocking(move || lookup.dispatcher.record(&id)).await;
    match found {
        Ok(Ok(Some(record))) => Json(record).into_response(),
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, "store", e),
        Err(_) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "lookup failed",
        ),
        Ok(Ok(None)) => error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no event with receipt ID {receipt_id}"),
        ),
    }
}

async fn not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such endpoint (POST /webhook, GET /healthz, GET /readyz, GET /metrics, GET /api/events/{receipt_id})",
    )
}

async fn method_not_allowed() -> Response {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed here",
    )
}

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("a request handler panicked; answered 500");
    error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "internal error",
    )
}

/// The router, for `run` and for tests that drive it directly.
pub fn router(app: Arc<App>) -> Router {
    // The extractor refuses bodies over the intake limit before reading
    // them whole.
    let body_limit = app.intake.limits.max_body_bytes;
    // The webhook token also guards the API (delivery records).
    let auth = || axum::middleware::from_fn_with_state(app.auth.clone(), crate::auth::require);
    Router::new()
        .route("/webhook", post(webhook).route_layer(auth()))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route(
            "/api/events/{receipt_id}",
            get(event_status).route_layer(auth()),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(TraceLayer::new_for_http())
        // A client that trickles its body is cut off.
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
            std::time::Duration::from_secs(30),
        ))
        .layer(CatchPanicLayer::custom(panic_response))
        .with_state(app)
}

/// Serves until `shutdown` completes.
pub async fn run(
    listener: TcpListener,
    app: Arc<App>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "listening for webhooks on POST /webhook");
    }
    app.dispatcher
        .start()
        .await
        .map_err(std::io::Error::other)?;
    crate::notify::ready();
    let watchdog = tokio::spawn(crate::notify::watchdog(app.dispatcher.clone()));
    let served = axum::serve(listener, router(app.clone()))
        .with_graceful_shutdown(async move {
            shutdown.await;
            tracing::info!("shutting down: no new webhooks; draining deliveries");
            crate::notify::stopping();
        })
        .await;
    watchdog.abort();
    app.dispatcher.stop().await;
    served
}
