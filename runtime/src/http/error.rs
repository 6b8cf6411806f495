//! Every answer that is not a success: JSON `{"error": code, "message"}`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// An error answer with its status, machine code and a short message.
pub(crate) fn error(status: StatusCode, code: &str, message: impl std::fmt::Display) -> Response {
    (
        status,
        Json(json!({ "error": code, "message": message.to_string() })),
    )
        .into_response()
}

/// 503 with `Retry-After`: try again later.
pub(crate) fn unavailable(code: &str, message: &str) -> Response {
    let mut resp = error(StatusCode::SERVICE_UNAVAILABLE, code, message);
    resp.headers_mut().insert(
        axum::http::header::RETRY_AFTER,
        axum::http::HeaderValue::from_static("30"),
    );
    resp
}
