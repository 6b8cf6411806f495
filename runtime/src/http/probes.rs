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
/// scheduler running, the event store committing writes, and webhooks
/// being accepted now: the same admission decision `/webhook` makes
/// (backlog, free disk space read now, the store's files), so a load
/// balancer never sends webhooks to a node that would refuse them.
pub(super) async fn readyz(State(app): State<Arc<HttpState>>) -> Response {
    let routes = app.dispatcher.route_names();
    let open = app.dispatcher.open_deliveries();
    let refused = match app.dispatcher.room() {
        Ok(()) => None,
        Err(Full::Backlog) => Some(("overloaded", "not accepting webhooks: delivery backlog full (delivery.max_pending)".to_string())),
        Err(Full::Disk) => Some(("disk_full", "not accepting webhooks: the data directory is short of disk space (delivery.min_free_disk_mb)".to_string())),
        Err(Full::StoreLost) => Some((
            "store_lost",
            format!(
                "not accepting webhooks: {}",
                app.dispatcher.store().lost().unwrap_or_default()
            ),
        )),
    };
    let health = match refused {
        Some(r) => Err(r),
        None => app
            .dispatcher
            .health(std::time::Duration::from_secs(2))
            .await
            .map_err(|why| ("not_ready", why)),
    };
    match health {
        Ok(()) => Json(json!({ "status": "ready", "routes": routes, "open_deliveries": open, "accepting": "yes" })).into_response(),
        Err((reason, why)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "not_ready", "error": "not_ready", "reason": reason, "message": crate::text::escape_controls(&why), "routes": routes, "open_deliveries": open, "accepting": "no" })),
        )
            .into_response(),
    }
}
