//! Probes for load balancers and supervisors: `GET /healthz` (alive),
//! `GET /readyz` (ready to take webhooks) and `GET /metrics` (Prometheus;
//! on a shared store its queue gauges are the cluster's, and the
//! `cluster_*` gauges say how many nodes are live and how many dead
//! letters there are).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::HttpState;
use crate::delivery::Full;

/// Prometheus text format; queue gauges are read from the store now.
pub(super) async fn metrics(State(app): State<Arc<HttpState>>) -> Response {
    if let Ok(b) = app.dispatcher.store().backlog().await {
        app.metrics.queue_depth.set(b.open as i64);
        let age = b
            .oldest_open_ms
            .map(|ms| (crate::time::now_millis() - ms).max(0) as f64 / 1000.0)
            .unwrap_or(0.0);
        app.metrics.oldest_pending_age.set(age);
    }
    // A shared store: backlog and age above are the cluster's already.
    if let Ok(Some(c)) = app.dispatcher.store().cluster().await {
        app.metrics
            .cluster_dead_letters
            .set(c.dead_letters.min(i64::MAX as u64) as i64);
        app.metrics
            .cluster_live_nodes
            .set(c.live_nodes.min(i64::MAX as u64) as i64);
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
pub(super) async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// Ready: transforms loaded (the app exists only once they are), the
/// scheduler running and the event store committing writes.
pub(super) async fn readyz(State(app): State<Arc<HttpState>>) -> Response {
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
