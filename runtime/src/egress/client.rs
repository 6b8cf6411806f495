//! Performs the HTTP requests transforms ask for (reqwest, rustls).
//!
//! Redirects are never followed (a 3xx goes back to the transform as is),
//! so a destination cannot bounce a request to a host outside the
//! allow-list.  A request that gets no response is a [`TransportError`]
//! with its kind (DNS, connect, TLS, timeout) and its cause chain.

use std::time::Duration;

use super::transport::{Sent, Transport, TransportError, TransportFailure};
use crate::sandbox::bindings::types::{Header, HttpRequest, HttpResponse};

/// The real transport.
#[derive(Clone)]
pub struct HttpTransport {
    /// One pooled client for every route.
    client: reqwest::Client,
    /// Response bytes kept (the rest is dropped, unread).
    max_response_bytes: usize,
}

/// The HTTP client could not be built (TLS roots, resolver).
#[derive(Debug, thiserror::Error)]
#[error("could not create the HTTP client")]
pub struct ClientError(#[source] reqwest::Error);

impl HttpTransport {
    pub fn new(
        request_timeout: Duration,
        max_response_bytes: usize,
    ) -> Result<HttpTransport, ClientError> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(request_timeout)
            .connect_timeout(Duration::from_secs(10).min(request_timeout))
            .user_agent(concat!("ztbridge/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(ClientError)?;
        Ok(HttpTransport {
            client,
            max_response_bytes,
        })
    }

    async fn perform(&self, req: &HttpRequest) -> Sent {
        let method = reqwest::Method::from_bytes(req.method.to_ascii_uppercase().as_bytes())
            .map_err(|_| TransportError {
                kind: TransportFailure::Other,
                message: format!("invalid method {:?}", req.method),
            })?;
        let mut builder = self.client.request(method, &req.url);
        for h in &req.headers {
            builder = builder.header(h.name.as_str(), h.value.as_str());
        }
        if !req.body.is_empty() {
            builder = builder.body(req.body.clone());
        }
        let mut resp = builder.send().await.map_err(|e| describe_error(&e))?;
        let status = resp.status().as_u16();
        let headers = resp
            .headers()
            .iter()
            .take(64)
            .map(|(k, v)| Header {
                name: k.as_str().to_string(),
                value: String::from_utf8_lossy(v.as_bytes()).into_owned(),
            })
            .collect();
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| describe_error(&e))? {
            let room = self.max_response_bytes.saturating_sub(body.len());
            body.extend_from_slice(&chunk[..chunk.len().min(room)]);
            if room <= chunk.len() {
                break;
            }
        }
        Ok(HttpResponse {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }
}

/// A reqwest error as a [`TransportError`]: its kind, and its cause chain
/// without the URL (which may carry a query with data).
fn describe_error(e: &reqwest::Error) -> TransportError {
    let mut chain = Vec::new();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        chain.push(s.to_string());
        source = s.source();
    }
    let any = |needle: &str| {
        chain
            .iter()
            .any(|c| c.to_ascii_lowercase().contains(needle))
    };
    let (kind, what) = if e.is_timeout() {
        (TransportFailure::Timeout, "timeout")
    } else if any("dns error") || any("failed to lookup address") {
        (TransportFailure::Dns, "DNS lookup failed")
    } else if any("certificate") || any("tls") || any("handshake") {
        (TransportFailure::Tls, "TLS failed")
    } else if e.is_connect() {
        (TransportFailure::Connect, "connection failed")
    } else if e.is_body() || e.is_decode() {
        (TransportFailure::Other, "reading the response failed")
    } else {
        (TransportFailure::Other, "request failed")
    };
    let mut message = what.to_string();
    for c in chain {
        message.push_str(": ");
        message.push_str(&c);
    }
    TransportError { kind, message }
}

impl Transport for HttpTransport {
    async fn send(&self, req: &HttpRequest) -> Option<Sent> {
        Some(self.perform(req).await)
    }
}
