//! The HTTP side: the router, webhook intake (limits, gzip, auth) and the
//! read API.  Handlers are thin: intake decides, the dispatcher stores.
//! Every answer is JSON.
//!
//! * `POST /webhook` ([`webhook`]): a Superna Zero Trust webhook.
//! * `GET /healthz`, `GET /readyz`, `GET /metrics` ([`probes`]).
//! * `GET /api/events/{receipt_id}` ([`api`]).
//!
//! May import: `delivery`, `store`, `ops`, `config`, `time`, `text`.

mod api;
pub(crate) mod auth;
mod error;
pub mod intake;
mod listener;
mod probes;
mod webhook;

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use tokio::net::TcpListener;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;

use crate::delivery::Dispatcher;
use crate::ops::{Metrics, notify};
use error::error;

pub(crate) use auth::WebhookAuth;
pub(crate) use intake::Intake;

/// What the handlers share.
pub(crate) struct HttpState {
    /// Decodes and checks webhooks.
    pub(crate) intake: Intake,
    /// Stores accepted webhooks and runs their deliveries.
    pub(crate) dispatcher: Arc<Dispatcher>,
    /// Webhook authentication, when configured.
    pub(crate) auth: Arc<Option<WebhookAuth>>,
    /// What `/metrics` exports.
    pub(crate) metrics: Arc<Metrics>,
    /// Open webhook connections at most (`intake.max_connections` or the
    /// default derived from the open-file limit), resolved at build.
    pub(crate) max_connections: usize,
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
pub(crate) fn router(state: Arc<HttpState>) -> Router {
    // The extractor refuses bodies over the intake limit before reading
    // them whole.
    let body_limit = state.intake.limits.max_body_bytes;
    // The webhook token also guards the API (delivery records).
    let auth = || axum::middleware::from_fn_with_state(state.clone(), auth::require);
    Router::new()
        .route("/webhook", post(webhook::webhook).route_layer(auth()))
        .route("/healthz", get(probes::healthz))
        .route("/readyz", get(probes::readyz))
        .route("/metrics", get(probes::metrics))
        .route(
            "/api/events/{receipt_id}",
            get(api::event_status).route_layer(auth()),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(TraceLayer::new_for_http())
        .layer(CatchPanicLayer::custom(panic_response))
        .with_state(state)
}

/// Starts delivering, serves until `shutdown` completes, then drains.
pub(crate) async fn run(
    listener: TcpListener,
    state: Arc<HttpState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "listening for webhooks on POST /webhook");
    }
    let dispatcher = state.dispatcher.clone();
    dispatcher.start().await.map_err(std::io::Error::other)?;
    notify::ready();
    let health = dispatcher.clone();
    let watchdog = tokio::spawn(async move {
        notify::watchdog(|timeout| {
            let d = health.clone();
            async move { d.health(timeout).await }
        })
        .await
    });
    let settings = listener::Settings {
        header_read_timeout: std::time::Duration::from_secs(
            state.intake.limits.header_read_timeout_secs,
        ),
        max_connections: state.max_connections,
    };
    let metrics = state.metrics.clone();
    let served = listener::serve(listener, router(state), settings, metrics, async move {
        shutdown.await;
        tracing::info!("shutting down: no new webhooks; draining deliveries");
        notify::stopping();
    })
    .await;
    watchdog.abort();
    dispatcher.stop().await;
    served
}
