//! A generic stub destination on loopback: a protocol function answers
//! every request from the stub's own state (alerts, indexed events...),
//! unless a scripted answer (429 with Retry-After, 5xx...) is queued for
//! that path.  Every request is recorded with the answer it got, so tests
//! assert on what the destination saw.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

use super::{Answer, wait_until};

/// One request the stub received.
#[derive(Debug, Clone)]
pub struct StubRequest {
    pub at: Instant,
    pub method: String,
    /// The path, percent-encoding kept (`/v2/alerts/a%2Fb/notes`).
    pub path: String,
    /// The raw query string (empty when none).
    pub query: String,
    pub headers: HeaderMap,
    pub body: String,
    /// What the stub answered.
    pub status: u16,
}

impl StubRequest {
    pub fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).expect("the stub received JSON")
    }

    /// `POST /v2/alerts`: for asserting on a flow's sequence of calls.
    pub fn call(&self) -> String {
        format!("{} {}", self.method, self.path)
    }
}

/// The protocol: state, the request (status not yet known) -> answer.
pub type Protocol<S> = fn(&mut S, &StubRequest) -> Answer;

struct Inner<S> {
    state: S,
    received: Vec<StubRequest>,
    /// (path substring, answer), given instead of the protocol's answer to
    /// the next matching request.
    script: VecDeque<(String, Answer)>,
}

struct Shared<S> {
    inner: Mutex<Inner<S>>,
    protocol: Protocol<S>,
}

/// The stub server; clones share it.
pub struct HttpStub<S> {
    pub addr: SocketAddr,
    shared: Arc<Shared<S>>,
}

impl<S> Clone for HttpStub<S> {
    fn clone(&self) -> Self {
        HttpStub {
            addr: self.addr,
            shared: self.shared.clone(),
        }
    }
}

async fn handle<S: Send + 'static>(
    State(shared): State<Arc<Shared<S>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut req = StubRequest {
        at: Instant::now(),
        method: method.to_string(),
        path: uri.path().to_string(),
        query: uri.query().unwrap_or_default().to_string(),
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
        status: 0,
    };
    let (status, hdrs, text) = {
        let mut inner = shared.inner.lock().unwrap_or_else(|p| p.into_inner());
        let scripted = inner
            .script
            .iter()
            .position(|(p, _)| req.path.contains(p.as_str()))
            .and_then(|i| inner.script.remove(i))
            .map(|(_, a)| a);
        let answer = match scripted {
            Some(a) => a,
            None => (shared.protocol)(&mut inner.state, &req),
        };
        req.status = answer.0;
        inner.received.push(req);
        answer
    };
    let mut h = HeaderMap::new();
    for (k, v) in hdrs {
        h.insert(k, v.parse().expect("header value"));
    }
    let content_type = if text.starts_with('{') || text.starts_with('[') {
        "application/json"
    } else {
        "text/plain"
    };
    h.entry("content-type")
        .or_insert(content_type.parse().expect("content type"));
    (StatusCode::from_u16(status).expect("status"), h, text).into_response()
}

impl<S: Send + 'static> HttpStub<S> {
    /// Serves `protocol` over `state` on a loopback port.
    pub async fn start(state: S, protocol: Protocol<S>) -> HttpStub<S> {
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner {
                state,
                received: Vec::new(),
                script: VecDeque::new(),
            }),
            protocol,
        });
        let app = Router::new()
            .fallback(handle::<S>)
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind stub");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await.expect("stub serve") });
        HttpStub { addr, shared }
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn inner(&self) -> MutexGuard<'_, Inner<S>> {
        self.shared.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The next request whose path contains `path` gets `answer`.
    pub fn script(&self, path: &str, answer: Answer) {
        self.inner().script.push_back((path.to_string(), answer));
    }

    pub fn received(&self) -> Vec<StubRequest> {
        self.inner().received.clone()
    }

    /// The calls received, `METHOD /path`.
    pub fn calls(&self) -> Vec<String> {
        self.received().iter().map(StubRequest::call).collect()
    }

    /// Reads (or changes) the stub's state.
    pub fn with<R>(&self, f: impl FnOnce(&mut S) -> R) -> R {
        f(&mut self.inner().state)
    }

    /// Waits until at least `n` requests arrived.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<StubRequest> {
        wait_until(timeout, || {
            let r = self.received();
            (r.len() >= n).then_some(r)
        })
        .await
        .unwrap_or_else(|| panic!("stub got {} requests, expected {n}", self.received().len()))
    }
}
