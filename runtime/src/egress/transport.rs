//! How a request is performed: the [`Transport`] interface, what a request
//! that got no response failed on ([`TransportFailure`]), and canned
//! responses for dry runs and golden tests ([`CannedTransport`]).

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Mutex;

use super::Destination;
use crate::sandbox::bindings::types::{HttpRequest, HttpResponse};

/// Why a request got no response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TransportFailure {
    /// The host name did not resolve.
    Dns,
    /// No connection (refused, unreachable, reset).
    Connect,
    /// The TLS handshake failed (certificate, protocol).
    Tls,
    /// No (complete) answer within `limits.request_timeout_ms`.
    Timeout,
    /// The response exceeded what the host keeps.
    TooLarge,
    /// The host refused to send it (egress policy), or refused every
    /// address its name resolved to.
    EgressDenied,
    /// Not sent: the destination failed repeatedly and its circuit
    /// breaker holds requests until a probe gets through (delivery).
    BreakerOpen,
    /// Anything else (reading the body failed...).
    Other,
}

/// A request that got no response: the kind, and the whole cause chain
/// as text (never the URL's path or query, which may carry data).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct TransportError {
    /// What kind of failure.
    pub(crate) kind: TransportFailure,
    /// What happened, for people: the kind in words, then the causes.
    pub(crate) message: String,
    /// The causes alone, for the transform: the contract's variant already
    /// names the kind, and the SDKs put it in words again.
    pub(crate) detail: String,
}

impl TransportError {
    /// A failure of `kind`, described by `message`.
    pub(crate) fn new(kind: TransportFailure, message: String) -> TransportError {
        TransportError {
            kind,
            detail: message.clone(),
            message,
        }
    }
}

/// What sending one request gave.
pub type Sent = Result<HttpResponse, TransportError>;

/// Performs one request the egress policy vetted (`to`: its parsed URL
/// and the addresses it may reach); `None` means no response is available
/// (the dry run ran out of canned responses) and the flow stops as
/// incomplete.
pub trait Transport: Send + Sync {
    fn send(
        &self,
        req: &HttpRequest,
        to: &Destination,
    ) -> impl Future<Output = Option<Sent>> + Send;
}

/// Replays canned responses in order (dry run, golden tests).
#[derive(Default)]
pub struct CannedTransport {
    /// What the next requests get, in order.
    responses: Mutex<VecDeque<HttpResponse>>,
}

impl CannedTransport {
    pub fn new(responses: Vec<HttpResponse>) -> CannedTransport {
        CannedTransport {
            responses: Mutex::new(responses.into()),
        }
    }
}

impl Transport for CannedTransport {
    async fn send(&self, _req: &HttpRequest, _to: &Destination) -> Option<Sent> {
        self.responses
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop_front()
            .map(Ok)
    }
}
