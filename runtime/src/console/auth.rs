//! Who may use the console: the admin token (compared in constant time),
//! login sessions held in memory (a random ID in an HttpOnly,
//! SameSite=Strict cookie, an absolute expiry), and the per-session CSRF
//! token every POST must carry (form field `csrf` or `X-CSRF-Token`).
//! The JSON API also takes `Authorization: Bearer <admin token>`: such a
//! caller sends no cookie, so it needs no CSRF token.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::ConsoleState;
use super::error::json_error;
use crate::time::now_millis;

/// The session cookie's name.
pub(super) const SESSION_COOKIE: &str = "ztb_session";
/// The login form's double-submit cookie (a CSRF token before a session).
pub(super) const LOGIN_COOKIE: &str = "ztb_login";
/// Largest body a POST may have (forms and JSON actions are small).
pub(super) const MAX_POST_BYTES: usize = 64 * 1024;

/// One login.
#[derive(Clone)]
struct Session {
    /// The token every POST of this session must carry.
    csrf: String,
    /// When the session ends (ms since the epoch), whatever happens.
    expires_ms: i64,
}

/// The admin token and the sessions it opened.
pub(crate) struct AdminAuth {
    /// SHA-256 of the admin token: compared in constant time, and the
    /// token itself is not kept.
    token_hash: [u8; 32],
    /// Open sessions by SHA-256 of their ID (a memory dump does not hand
    /// out live cookies).
    sessions: Mutex<HashMap<[u8; 32], Session>>,
    /// How long a login lasts.
    ttl_ms: i64,
    /// Believe `X-Forwarded-Proto` (a TLS proxy in front): Secure cookies.
    trust_proxy: bool,
}

/// Who made a request, as the middleware found out.
#[derive(Clone)]
pub(super) enum Caller {
    /// `Authorization: Bearer <admin token>` (scripts).
    Bearer,
    /// A browser with a session; its CSRF token, for the pages' forms.
    Session { csrf: String },
}

/// 32 random bytes from the operating system, as hex.
pub(crate) fn random_hex() -> std::io::Result<String> {
    use std::io::Read;
    let mut buf = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut buf)?;
    Ok(hex::encode(buf))
}

fn hash(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

/// Constant-time equality of two texts (their lengths may leak).
pub(super) fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// A cookie's value from the request's `Cookie` headers.
pub(super) fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

impl AdminAuth {
    pub(crate) fn new(token: &str, ttl_secs: u64, trust_proxy: bool) -> AdminAuth {
        AdminAuth {
            token_hash: hash(token),
            sessions: Mutex::new(HashMap::new()),
            ttl_ms: (ttl_secs.saturating_mul(1000)).min(i64::MAX as u64) as i64,
            trust_proxy,
        }
    }

    /// Whether `token` is the admin token (constant time).
    pub(super) fn is_token(&self, token: &str) -> bool {
        bool::from(hash(token.trim()).ct_eq(&self.token_hash))
    }

    /// Opens a session: returns its ID (the cookie's value).
    pub(super) fn open(&self) -> std::io::Result<String> {
        let id = random_hex()?;
        let csrf = random_hex()?;
        let now = now_millis();
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        sessions.retain(|_, s| s.expires_ms > now);
        sessions.insert(
            hash(&id),
            Session {
                csrf,
                expires_ms: now.saturating_add(self.ttl_ms),
            },
        );
        Ok(id)
    }

    /// Ends the session with this ID, if any.
    pub(super) fn close(&self, id: &str) {
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&hash(id));
    }

    /// The live session with this ID.
    fn session(&self, id: &str) -> Option<Session> {
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        let key = hash(id);
        match sessions.get(&key) {
            Some(s) if s.expires_ms > now_millis() => Some(s.clone()),
            Some(_) => {
                sessions.remove(&key);
                None
            }
            None => None,
        }
    }

    /// Whether cookies must be `Secure`: the request came over TLS, as a
    /// trusted proxy says.
    pub(super) fn secure(&self, headers: &HeaderMap) -> bool {
        self.trust_proxy
            && headers
                .get("x-forwarded-proto")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"))
    }

    /// A `Set-Cookie` value: HttpOnly, SameSite=Strict, Path=/, Secure
    /// when the request came over TLS; `max_age` 0 deletes it.
    pub(super) fn set_cookie(
        &self,
        headers: &HeaderMap,
        name: &str,
        value: &str,
        max_age_s: i64,
    ) -> String {
        let secure = if self.secure(headers) { "; Secure" } else { "" };
        format!("{name}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age_s}{secure}")
    }

    /// A session cookie's lifetime in seconds.
    pub(super) fn ttl_secs(&self) -> i64 {
        self.ttl_ms / 1000
    }
}

/// The token a form or JSON body carries in `field`.
pub(super) fn body_field(headers: &HeaderMap, body: &[u8], field: &str) -> Option<String> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if ct.starts_with("application/json") {
        let v: serde_json::Value = serde_json::from_slice(body).ok()?;
        return v.get(field)?.as_str().map(str::to_string);
    }
    url::form_urlencoded::parse(body)
        .find(|(k, _)| k == field)
        .map(|(_, v)| v.into_owned())
}

/// Lets in the admin (bearer token or session), and checks the CSRF token
/// of every POST a session makes.  Pages send strangers to `/login`; the
/// API answers them 401.
pub(super) async fn require(
    State(app): State<Arc<ConsoleState>>,
    mut req: Request,
    next: Next,
) -> Response {
    let api = req.uri().path().starts_with("/api/");
    let headers = req.headers().clone();
    let caller = if let Some(auth) = headers.get(header::AUTHORIZATION) {
        let given = auth.to_str().ok().and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        });
        match given {
            Some(token) if app.auth.is_token(token) => Caller::Bearer,
            _ => {
                return json_error(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "wrong or malformed admin token (Authorization: Bearer <admin token>)",
                );
            }
        }
    } else {
        match cookie(&headers, SESSION_COOKIE).and_then(|id| app.auth.session(id)) {
            Some(s) => Caller::Session { csrf: s.csrf },
            None if api => {
                return json_error(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "log in at /login, or send Authorization: Bearer <admin token>",
                );
            }
            None => return Redirect::to("/login").into_response(),
        }
    };
    if req.method() == Method::POST
        && let Caller::Session { csrf } = &caller
    {
        let (parts, body) = req.into_parts();
        let Ok(bytes) = axum::body::to_bytes(body, MAX_POST_BYTES).await else {
            return json_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                "the request body is too large",
            );
        };
        let given = headers
            .get("x-csrf-token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .or_else(|| body_field(&headers, &bytes, "csrf"));
        if !given.is_some_and(|g| same(&g, csrf)) {
            tracing::warn!(path = %parts.uri.path(), "console POST refused: missing or wrong CSRF token");
            return json_error(
                StatusCode::FORBIDDEN,
                "csrf",
                "missing or wrong CSRF token: reload the page and try again",
            );
        }
        req = Request::from_parts(parts, Body::from(bytes));
    }
    req.extensions_mut().insert(caller);
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_expire_and_close() {
        let auth = AdminAuth::new("console-admin-token-0123456789", 3600, false);
        assert!(auth.is_token("console-admin-token-0123456789"));
        assert!(auth.is_token(" console-admin-token-0123456789\n"));
        assert!(!auth.is_token("console-admin-token-012345678"));
        let id = auth.open().unwrap();
        assert!(auth.session(&id).is_some());
        assert!(auth.session("not-a-session").is_none());
        auth.close(&id);
        assert!(auth.session(&id).is_none(), "closed at logout");
        // A session past its lifetime is refused (and forgotten).
        let short = AdminAuth::new("console-admin-token-0123456789", 0, false);
        let id = short.open().unwrap();
        assert!(short.session(&id).is_none(), "expired");
        assert!(short.sessions.lock().unwrap().is_empty());
    }

    #[test]
    fn cookies_and_fields_are_read_strictly() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            "a=1; ztb_session=abc; ztb_session_x=2".parse().unwrap(),
        );
        assert_eq!(cookie(&h, SESSION_COOKIE), Some("abc"));
        assert_eq!(cookie(&h, "missing"), None);
        assert_eq!(
            body_field(&h, b"csrf=x%20y&z=1", "csrf").as_deref(),
            Some("x y")
        );
        h.insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
        assert_eq!(
            body_field(&h, br#"{"csrf":"t"}"#, "csrf").as_deref(),
            Some("t")
        );
        assert_eq!(body_field(&h, b"not json", "csrf"), None);
        assert!(same("abc", "abc") && !same("abc", "abd") && !same("abc", "ab"));
    }

    #[test]
    fn secure_only_behind_a_trusted_tls_proxy() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-proto", "https".parse().unwrap());
        let trusting = AdminAuth::new("console-admin-token-0123456789", 60, true);
        let plain = AdminAuth::new("console-admin-token-0123456789", 60, false);
        assert!(trusting.set_cookie(&h, "n", "v", 60).ends_with("; Secure"));
        assert!(!plain.set_cookie(&h, "n", "v", 60).contains("Secure"));
        let c = plain.set_cookie(&HeaderMap::new(), "n", "v", 60);
        assert!(
            c.contains("HttpOnly") && c.contains("SameSite=Strict"),
            "{c}"
        );
    }
}
