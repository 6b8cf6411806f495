//! The console's error answers: JSON `{"error": code, "message"}` with a
//! status, as the webhook API answers.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::store::StoreError;

/// An error answer with its status, machine code and a short message.
pub(super) fn json_error(
    status: StatusCode,
    code: &str,
    message: impl std::fmt::Display,
) -> Response {
    (
        status,
        Json(json!({ "error": code, "message": message.to_string() })),
    )
        .into_response()
}

/// 503: the store failed (logged with its causes, not shown).
pub(super) fn store_error(e: &StoreError) -> Response {
    tracing::error!(
        "console: the event store failed: {}",
        crate::text::error_chain(e)
    );
    json_error(
        StatusCode::SERVICE_UNAVAILABLE,
        "store",
        "the event store failed (see the service log)",
    )
}
