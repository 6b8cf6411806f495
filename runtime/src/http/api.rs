//! The read API: `GET /api/events/{receipt_id}`, what happened to a recent
//! webhook, from the store.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::HttpState;
use super::error::error;

pub(super) async fn event_status(
    State(app): State<Arc<HttpState>>,
    Path(receipt_id): Path<String>,
) -> Response {
    match app.dispatcher.record(&receipt_id).await {
        Ok(Some(record)) => Json(record).into_response(),
        Ok(None) => error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no event with receipt ID {receipt_id}"),
        ),
        Err(e) => {
            tracing::error!("event lookup failed: {}", crate::text::error_chain(&e));
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "store",
                "the event store failed",
            )
        }
    }
}
