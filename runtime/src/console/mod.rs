//! The operator's console (`[admin]`): server-rendered pages ([`pages`],
//! maud, every value escaped) and the JSON API behind them ([`api`]), on
//! their own listener, never the webhook port.  Login with the admin
//! token, a session cookie, a CSRF token on every POST ([`auth`]), a
//! strict Content-Security-Policy, assets embedded with hashed names.
//!
//! May import: `delivery`, `store`, `flow`, `sandbox`, `config`, `ops`
//! (the sample alert), `time`, `text`.

mod api;
mod auth;
mod data;
mod error;
mod pages;

use std::path::Path;
use std::sync::{Arc, LazyLock};

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;

use crate::config::{AdminConfig, ConfigError};
use crate::delivery::Dispatcher;
pub(crate) use auth::AdminAuth;
use error::json_error;

/// What the console's handlers share.
pub(crate) struct ConsoleState {
    /// The running deliveries: store, routes, pauses.
    pub(crate) dispatcher: Arc<Dispatcher>,
    /// The admin token and the sessions.
    pub(crate) auth: AdminAuth,
}

/// The Content-Security-Policy of every answer: scripts and styles from
/// this origin only (no inline script), no framing, forms post here.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// An embedded asset: its bytes and the name it is served under (with a
/// hash of its content, so it may be cached for ever).
pub(crate) struct Asset {
    /// `/assets/console-<hash>.js`.
    pub(crate) path: String,
    /// The file.
    body: &'static str,
    /// Its media type.
    content_type: &'static str,
}

fn asset(stem: &str, ext: &str, body: &'static str, content_type: &'static str) -> Asset {
    let h = hex::encode(Sha256::digest(body.as_bytes()));
    Asset {
        path: format!("/assets/{stem}-{}.{ext}", &h[..16]),
        body,
        content_type,
    }
}

/// The console's script.
pub(crate) static JS: LazyLock<Asset> = LazyLock::new(|| {
    asset(
        "console",
        "js",
        include_str!("assets/console.js"),
        "text/javascript; charset=utf-8",
    )
});
/// The console's style sheet.
pub(crate) static CSS: LazyLock<Asset> = LazyLock::new(|| {
    asset(
        "console",
        "css",
        include_str!("assets/console.css"),
        "text/css; charset=utf-8",
    )
});

async fn serve_asset(req: Request) -> Response {
    for a in [&*JS, &*CSS] {
        if req.uri().path() == a.path {
            return (
                [
                    (header::CONTENT_TYPE, a.content_type),
                    (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
                ],
                a.body,
            )
                .into_response();
        }
    }
    json_error(StatusCode::NOT_FOUND, "not_found", "no such asset")
}

/// Security headers on every answer.
async fn headers(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    resp
}

/// The console's routes: `(method, path)` of each, for the test that
/// checks the OpenAPI document lists every API route.
pub const API_ROUTES: &[(&str, &str)] = &[
    ("get", "/api/overview"),
    ("get", "/api/events"),
    ("get", "/api/events/{receipt_id}"),
    ("get", "/api/events/{receipt_id}/dry-run"),
    ("post", "/api/events/{receipt_id}/retry"),
    ("post", "/api/events/{receipt_id}/rerun"),
    ("post", "/api/events/{receipt_id}/skip"),
    ("post", "/api/dead-letters/retry"),
    ("post", "/api/dead-letters/purge"),
    ("post", "/api/routes/{route}/pause"),
    ("post", "/api/routes/{route}/resume"),
    ("post", "/api/routes/{route}/test"),
    ("get", "/api/stream"),
    ("get", "/api/openapi.json"),
];

/// The console's OpenAPI document, as served.
pub fn openapi_document() -> &'static str {
    api::OPENAPI
}

async fn not_found() -> Response {
    json_error(StatusCode::NOT_FOUND, "not_found", "no such page")
}

async fn method_not_allowed() -> Response {
    json_error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed here (every change is a POST)",
    )
}

pub(crate) fn router(state: Arc<ConsoleState>) -> Router {
    let guarded = Router::new()
        .route("/", get(pages::overview))
        .route("/events", get(pages::events))
        .route("/events/{receipt_id}", get(pages::event))
        .route("/dead-letters", get(pages::dead_letters))
        .route("/routes", get(pages::routes))
        .route("/logout", post(pages::logout))
        .route("/api/overview", get(api::overview))
        .route("/api/events", get(api::events))
        .route("/api/events/{receipt_id}", get(api::event))
        .route("/api/events/{receipt_id}/dry-run", get(api::dry_run))
        .route("/api/events/{receipt_id}/retry", post(api::retry))
        .route("/api/events/{receipt_id}/rerun", post(api::rerun))
        .route("/api/events/{receipt_id}/skip", post(api::skip))
        .route("/api/dead-letters/retry", post(api::dead_letters_retry))
        .route("/api/dead-letters/purge", post(api::dead_letters_purge))
        .route("/api/routes/{route}/pause", post(api::pause))
        .route("/api/routes/{route}/resume", post(api::resume))
        .route("/api/routes/{route}/test", post(api::test_event))
        .route("/api/stream", get(api::stream))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require,
        ));
    Router::new()
        .route("/login", get(pages::login_form).post(pages::login))
        .route("/api/openapi.json", get(api::openapi))
        .route("/assets/{name}", get(serve_asset))
        .merge(guarded)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::extract::DefaultBodyLimit::max(auth::MAX_POST_BYTES))
        .layer(axum::middleware::from_fn(headers))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
            std::time::Duration::from_secs(30),
        ))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(|_| {
            tracing::error!("a console handler panicked; answered 500");
            json_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal error",
            )
        }))
        .with_state(state)
}

/// The admin token `[admin]` names, or, without one (loopback only), a
/// fresh random token written to `<data_dir>/admin-token` (0600).  Refuses
/// the inbound webhook token.
pub(crate) fn admin_token(
    admin: &AdminConfig,
    inbound: Option<&str>,
    data_dir: &Path,
) -> Result<String, ConfigError> {
    let token = match &admin.token {
        Some(v) => {
            let t = v.resolve("admin", "token")?.trim().to_string();
            if t.len() < 16 {
                return Err(ConfigError::Invalid(
                    "admin.token must be at least 16 characters".into(),
                ));
            }
            t
        }
        None => {
            let t = auth::random_hex()
                .map_err(|e| ConfigError::Invalid(format!("admin token: no random bytes: {e}")))?;
            let path = data_dir.join("admin-token");
            write_private(&path, &t).map_err(|e| {
                ConfigError::Invalid(format!("cannot write {}: {e}", path.display()))
            })?;
            tracing::warn!(path = %path.display(), "no admin.token: the console's token for this run is in this file");
            t
        }
    };
    if inbound.is_some_and(|i| i.trim() == token) {
        return Err(ConfigError::Invalid(
            "admin.token must differ from inbound.token (whoever can send webhooks must not run the console)".into(),
        ));
    }
    Ok(token)
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(text.as_bytes())?;
    f.write_all(b"\n")
}

/// Serves the console on `listener` until `shutdown` completes.
pub(crate) async fn run(
    listener: TcpListener,
    state: Arc<ConsoleState>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "operator's console on http://{addr}/");
    }
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}
