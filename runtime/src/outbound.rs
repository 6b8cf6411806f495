//! Performs the HTTP requests transforms ask for (reqwest, rustls).
//!
//! Redirects are never followed (a 3xx goes back to the transform as is),
//! so a destination cannot bounce a request to a host outside the
//! allow-list.  Network failures become a response with status 0 and the
//! reason in the body, so the transform decides what they mean.

use std::time::Duration;

use crate::bindings::types::{Header, HttpRequest, HttpResponse};
use crate::flow::Transport;

/// The real transport.
#[derive(Clone)]
pub struct HttpTransport {
    /// One pooled client for every route.
    client: reqwest::Client,
    /// Response bytes kept (the rest is dropped, unread).
    max_response_bytes: usize,
}

#[derive(Debug, thiserror::Error)]
#[error("could not create the HTTP client: {0}")]
pub struct TransportError(String);

impl HttpTransport {
    pub fn new(
        request_timeout: Duration,
        max_response_bytes: usize,
    ) -> Result<HttpTransport, TransportError> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(request_timeout)
            .connect_timeout(Duration::from_secs(10).min(request_timeout))
            .user_agent(concat!("ztbridge/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| TransportError(e.to_string()))?;
        Ok(HttpTransport {
            client,
            max_response_bytes,
        })
    }

    async fn perform(&self, req: &HttpRequest) -> Result<HttpResponse, String> {
        let method = reqwest::Method::from_bytes(req.method.to_ascii_uppercase().as_bytes())
            .map_err(|_| format!("invalid method {:?}", req.method))?;
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

/// reqwest errors without the URL (which may carry a query with data).
fn describe_error(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_body() || e.is_decode() {
        "reading the response failed"
    } else {
        "request failed"
    };
    let mut msg = kind.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}

impl Transport for HttpTransport {
    async fn send(&self, req: &HttpRequest) -> Option<HttpResponse> {
        Some(match self.perform(req).await {
            Ok(r) => r,
            Err(reason) => HttpResponse {
                status: 0,
                headers: vec![],
                body: reason,
            },
        })
    }
}
