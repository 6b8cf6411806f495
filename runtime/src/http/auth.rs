//! Optional authentication of `POST /webhook`: a bearer token or a shared
//! secret in a custom header, compared in constant time (on SHA-256
//! digests, so the comparison does not reveal the secret's length either).

use std::sync::Arc;

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{HeaderName, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::HttpState;
use crate::config::{ConfigError, InboundAuth};

/// The resolved check.  Never logged: it holds the secret's digest only.
#[derive(Clone)]
pub(crate) struct WebhookAuth {
    /// Header to read, lower case.
    header: HeaderName,
    /// `Authorization: Bearer` form (strip the scheme) or a bare value.
    bearer: bool,
    /// SHA-256 of the expected token.
    expected: [u8; 32],
}

impl std::fmt::Debug for WebhookAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookAuth")
            .field("header", &self.header)
            .finish_non_exhaustive()
    }
}

impl WebhookAuth {
    /// `None` when no token is configured.
    pub(crate) fn from_config(cfg: &InboundAuth) -> Result<Option<WebhookAuth>, ConfigError> {
        let Some(token) = &cfg.token else {
            return Ok(None);
        };
        let token = token.resolve("inbound", "token")?;
        if token.trim().len() < 16 {
            return Err(ConfigError::Invalid(
                "inbound.token must be at least 16 characters".into(),
            ));
        }
        let name = cfg
            .header
            .as_deref()
            .unwrap_or("authorization")
            .trim()
            .to_ascii_lowercase();
        let header = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
            ConfigError::Invalid(format!(
                "inbound.header `{name}` is not a valid header name"
            ))
        })?;
        let bearer = header == header::AUTHORIZATION;
        Ok(Some(WebhookAuth {
            header,
            bearer,
            expected: Sha256::digest(token.trim().as_bytes()).into(),
        }))
    }

    /// Whether the request carries the token.
    pub(crate) fn allows(&self, headers: &axum::http::HeaderMap) -> bool {
        let Some(value) = headers.get(&self.header) else {
            return false;
        };
        let value = value.as_bytes();
        let presented = if self.bearer {
            match value.get(..7) {
                Some(scheme) if scheme.eq_ignore_ascii_case(b"bearer ") => &value[7..],
                _ => return false,
            }
        } else {
            value
        };
        let digest: [u8; 32] = Sha256::digest(presented.trim_ascii()).into();
        digest.ct_eq(&self.expected).into()
    }
}

/// Tower middleware: 401 JSON unless the token matches.  A refused
/// webhook is counted in `webhooks_rejected_total{reason="unauthorized"}`.
pub(crate) async fn require(
    State(state): State<Arc<HttpState>>,
    request: Request,
    next: Next,
) -> Response {
    match state.auth.as_ref() {
        Some(a) if !a.allows(request.headers()) => {
            if request.uri().path() == "/webhook" {
                state
                    .metrics
                    .webhooks_rejected
                    .with_label_values(&["unauthorized"])
                    .inc();
            }
            tracing::warn!(header = %a.header, "webhook refused: missing or wrong token");
            let body = serde_json::json!({
                "error": "unauthorized",
                "message": format!("missing or wrong webhook token (header {})", a.header),
            });
            let mut resp = (StatusCode::UNAUTHORIZED, Json(body)).into_response();
            if a.bearer {
                resp.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    header::HeaderValue::from_static("Bearer"),
                );
            }
            resp
        }
        _ => next.run(request).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ConfigValue;
    use axum::http::HeaderMap;

    fn headers(name: &str, value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
        h
    }

    #[test]
    fn bearer_and_custom_header() {
        let token = "0123456789abcdef-token";
        let bearer = WebhookAuth::from_config(&InboundAuth {
            token: Some(ConfigValue::Text(token.into())),
            header: None,
        })
        .unwrap()
        .unwrap();
        assert!(bearer.allows(&headers("authorization", &format!("Bearer {token}"))));
        assert!(bearer.allows(&headers("authorization", &format!("bearer {token}"))));
        assert!(!bearer.allows(&headers("authorization", token)));
        assert!(!bearer.allows(&headers("authorization", "Bearer 0123456789abcdef-tokeN")));
        assert!(!bearer.allows(&HeaderMap::new()));

        let custom = WebhookAuth::from_config(&InboundAuth {
            token: Some(ConfigValue::Text(token.into())),
            header: Some("X-Ztbridge-Token".into()),
        })
        .unwrap()
        .unwrap();
        assert!(custom.allows(&headers("x-ztbridge-token", token)));
        assert!(!custom.allows(&headers("authorization", &format!("Bearer {token}"))));
        assert!(!format!("{custom:?}").contains(token));
    }

    #[test]
    fn short_tokens_are_refused() {
        let r = WebhookAuth::from_config(&InboundAuth {
            token: Some(ConfigValue::Text("short".into())),
            header: None,
        });
        assert!(r.is_err());
    }
}
