//! Performs the HTTP requests transforms ask for (reqwest, rustls).
//!
//! Redirects are never followed (a 3xx goes back to the transform as is),
//! so a destination cannot bounce a request to a host outside the
//! allow-list.  Names are resolved by [`VettingResolver`], which drops
//! every address the route may not reach ([`AddressFilter`]); the client
//! connects only to the addresses it returns, so a name that resolves (or
//! re-resolves: DNS rebinding) inward is never connected to.  One client
//! (and so one connection pool) per address filter: a connection opened
//! for a route allowed a private network is never reused by one that is
//! not.  System proxy settings are ignored: through a proxy the host could
//! not vet the address the proxy connects to.  A request that gets no
//! response is a [`TransportError`] with its kind (DNS, connect, TLS,
//! timeout, egress) and its cause chain.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::Destination;
use super::address::AddressFilter;
use super::transport::{Sent, Transport, TransportError, TransportFailure};
use crate::sandbox::bindings::types::{Header, HttpRequest, HttpResponse};

/// The real transport.
#[derive(Clone)]
pub struct HttpTransport {
    /// One pooled client per address filter (routes with the same
    /// `private_networks` share one), made on first use.
    clients: Arc<Mutex<HashMap<AddressFilter, reqwest::Client>>>,
    /// Timeout of one whole request.
    request_timeout: Duration,
    /// Response bytes kept (the rest is dropped, unread).
    max_response_bytes: usize,
}

/// The HTTP client could not be built (TLS roots, resolver).
#[derive(Debug, thiserror::Error)]
#[error("could not create the HTTP client")]
pub struct ClientError(#[source] reqwest::Error);

/// A name that resolved only to addresses the route may not reach.
#[derive(Debug, thiserror::Error)]
#[error(
    "egress denied: {name} resolves only to addresses this route may not reach ({addresses}); allow their network in the route's private_networks if this destination is on-premises"
)]
pub struct AddressRefused {
    /// The name looked up.
    name: String,
    /// What it resolved to, with why each is refused.
    addresses: String,
}

/// The resolver of a client: looks the name up (the system resolver, as
/// reqwest's default does) and keeps only the addresses `filter` allows.
struct VettingResolver {
    /// What the route may reach.
    filter: AddressFilter,
}

impl reqwest::dns::Resolve for VettingResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let filter = self.filter.clone();
        let name = name.as_str().to_string();
        Box::pin(async move {
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((name.as_str(), 0)).await?.collect();
            let (allowed, refused): (Vec<SocketAddr>, Vec<SocketAddr>) = found
                .into_iter()
                .partition(|a| filter.check(a.ip()).is_ok());
            if allowed.is_empty() {
                let addresses = refused
                    .iter()
                    .take(8)
                    .map(|a| {
                        let why = filter.check(a.ip()).err().unwrap_or("refused");
                        format!("{}: {why}", a.ip())
                    })
                    .collect::<Vec<_>>()
                    .join(", ");
                let err: Box<dyn std::error::Error + Send + Sync> =
                    Box::new(AddressRefused { name, addresses });
                return Err(err);
            }
            if !refused.is_empty() {
                tracing::warn!(
                    name = %name,
                    refused = %refused.iter().map(|a| a.ip().to_string()).collect::<Vec<_>>().join(","),
                    "some addresses of this name are not reachable by the route; using the others"
                );
            }
            let addrs: reqwest::dns::Addrs = Box::new(allowed.into_iter());
            Ok(addrs)
        })
    }
}

/// The addresses `name` resolves to now, or none when the lookup fails
/// or takes longer than `timeout` (for checks at start: DNS may be down).
pub(super) fn resolve_with_timeout(name: &str, port: u16, timeout: Duration) -> Vec<IpAddr> {
    let (tx, rx) = std::sync::mpsc::channel();
    let target = (name.to_string(), port);
    // The lookup blocks and cannot be cancelled; a stuck one ends on its
    // own, its answer unread.
    let spawned = std::thread::Builder::new()
        .name("ztbridge-dns-check".into())
        .spawn(move || {
            let found = std::net::ToSocketAddrs::to_socket_addrs(&(target.0.as_str(), target.1))
                .map(|it| it.map(|a| a.ip()).collect::<Vec<_>>())
                .unwrap_or_default();
            let _ = tx.send(found);
        });
    if spawned.is_err() {
        return vec![];
    }
    rx.recv_timeout(timeout).unwrap_or_default()
}

impl HttpTransport {
    /// Builds the client for public destinations now (so TLS setup errors
    /// show at start); clients for routes with `private_networks` are made
    /// on first use.
    pub fn new(
        request_timeout: Duration,
        max_response_bytes: usize,
    ) -> Result<HttpTransport, ClientError> {
        let public = AddressFilter::default();
        let client = build_client(request_timeout, &public)?;
        Ok(HttpTransport {
            clients: Arc::new(Mutex::new(HashMap::from([(public, client)]))),
            request_timeout,
            max_response_bytes,
        })
    }

    /// The client for `filter`, made on first use.
    fn client(&self, filter: &AddressFilter) -> Result<reqwest::Client, ClientError> {
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = clients.get(filter) {
            return Ok(c.clone());
        }
        let c = build_client(self.request_timeout, filter)?;
        clients.insert(filter.clone(), c.clone());
        Ok(c)
    }

    async fn perform(&self, req: &HttpRequest, to: &Destination) -> Sent {
        let method = reqwest::Method::from_bytes(req.method.to_ascii_uppercase().as_bytes())
            .map_err(|_| {
                TransportError::new(
                    TransportFailure::Other,
                    format!("invalid method {:?}", req.method),
                )
            })?;
        let client = self.client(&to.addresses).map_err(|e| {
            TransportError::new(TransportFailure::Other, crate::text::error_chain(&e))
        })?;
        let mut builder = client.request(method, to.url.clone());
        for h in req
            .headers
            .iter()
            .filter(|h| !super::host_owned_header(&h.name))
        {
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

/// A client that reaches only what `filter` allows.
fn build_client(
    request_timeout: Duration,
    filter: &AddressFilter,
) -> Result<reqwest::Client, ClientError> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .dns_resolver(Arc::new(VettingResolver {
            filter: filter.clone(),
        }))
        .timeout(request_timeout)
        .connect_timeout(Duration::from_secs(10).min(request_timeout))
        .user_agent(concat!("ztbridge/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(ClientError)
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
    let refused = {
        let mut source = std::error::Error::source(e);
        let mut found = false;
        while let Some(s) = source {
            found |= s.downcast_ref::<AddressRefused>().is_some();
            source = s.source();
        }
        found
    };
    let (kind, what) = if refused {
        (TransportFailure::EgressDenied, "not sent")
    } else if e.is_timeout() {
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
    if chain.is_empty() {
        return TransportError::new(kind, what.to_string());
    }
    let detail = chain.join(": ");
    TransportError {
        kind,
        message: format!("{what}: {detail}"),
        detail,
    }
}

impl Transport for HttpTransport {
    async fn send(&self, req: &HttpRequest, to: &Destination) -> Option<Sent> {
        Some(self.perform(req, to).await)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::egress::Policy;

    /// An HTTP server on 127.0.0.1 counting the requests it answers.
    async fn server() -> (u16, Arc<AtomicUsize>) {
        let hits = Arc::new(AtomicUsize::new(0));
        let counted = hits.clone();
        let app = axum::Router::new().fallback(move || {
            let counted = counted.clone();
            async move {
                counted.fetch_add(1, Ordering::SeqCst);
                "hello"
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (port, hits)
    }

    fn request(url: &str) -> HttpRequest {
        HttpRequest {
            method: "GET".into(),
            url: url.into(),
            headers: vec![],
            body: String::new(),
        }
    }

    #[tokio::test]
    async fn a_name_resolving_inward_is_not_connected_to_without_an_opt_in() {
        let (port, hits) = server().await;
        let url = format!("http://localhost:{port}/x");
        let transport = HttpTransport::new(Duration::from_secs(10), 1 << 20).unwrap();
        let entry = vec![format!("localhost:{port}")];

        let public_only = Policy::new(&entry, &BTreeMap::new(), None, true, &[]).unwrap();
        // The name passes the allow-list; its addresses do not.
        let to = public_only.check(&url).unwrap();
        let err = transport.perform(&request(&url), &to).await.unwrap_err();
        assert_eq!(err.kind, TransportFailure::EgressDenied, "{}", err.message);
        assert!(err.message.contains("private_networks"), "{}", err.message);
        assert_eq!(hits.load(Ordering::SeqCst), 0);

        let nets = ["127.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()];
        let opted_in = Policy::new(&entry, &BTreeMap::new(), None, true, &nets).unwrap();
        let to = opted_in.check(&url).unwrap();
        let resp = transport.perform(&request(&url), &to).await.unwrap();
        assert_eq!((resp.status, resp.body.as_str()), (200, "hello"));
        assert_eq!(hits.load(Ordering::SeqCst), 1);

        // The public-only client did not get the opted-in client's
        // pooled connection.
        let to = public_only.check(&url).unwrap();
        let err = transport.perform(&request(&url), &to).await.unwrap_err();
        assert_eq!(err.kind, TransportFailure::EgressDenied);
        assert_eq!(hits.load(Ordering::SeqCst), 1);
    }

    /// The record says what kind of failure it was; the transform gets the
    /// causes alone (its contract variant and SDK name the kind), so the
    /// reason an operator reads does not say "connection failed" twice.
    #[tokio::test]
    async fn a_refused_connection_is_named_once() {
        // A port nothing listens on: bound, then closed.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("http://127.0.0.1:{port}/");
        let nets = ["127.0.0.0/8".parse().unwrap()];
        let entry = vec![format!("127.0.0.1:{port}")];
        let policy = Policy::new(&entry, &BTreeMap::new(), None, true, &nets).unwrap();
        let transport = HttpTransport::new(Duration::from_secs(10), 1 << 20).unwrap();
        let err = transport
            .perform(&request(&url), &policy.check(&url).unwrap())
            .await
            .unwrap_err();
        assert_eq!(err.kind, TransportFailure::Connect, "{}", err.message);
        assert!(
            err.message.starts_with("connection failed: "),
            "{}",
            err.message
        );
        assert!(!err.detail.is_empty());
        assert!(!err.detail.contains("connection failed"), "{}", err.detail);
        assert_eq!(err.message, format!("connection failed: {}", err.detail));
    }

    #[tokio::test]
    async fn a_destination_s_answer_is_cut_at_the_limit() {
        let app = axum::Router::new().fallback(|| async { "x".repeat(3 << 20) });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let url = format!("http://127.0.0.1:{port}/");
        let policy = Policy::new(
            &[format!("127.0.0.1:{port}")],
            &BTreeMap::new(),
            None,
            true,
            &["127.0.0.1/32".parse().unwrap()],
        )
        .unwrap();
        let transport = HttpTransport::new(Duration::from_secs(10), 1000).unwrap();
        let resp = transport
            .perform(&request(&url), &policy.check(&url).unwrap())
            .await
            .unwrap();
        assert_eq!((resp.status, resp.body.len()), (200, 1000));
    }

    #[tokio::test]
    async fn host_owned_headers_never_reach_the_wire() {
        let hits = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = hits.clone();
        let app = axum::Router::new().fallback(move |headers: axum::http::HeaderMap| {
            let seen = seen.clone();
            async move {
                seen.lock().unwrap().push(headers);
                "ok"
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let url = format!("http://127.0.0.1:{port}/");
        let policy = Policy::new(
            &[format!("127.0.0.1:{port}")],
            &BTreeMap::new(),
            None,
            true,
            &["127.0.0.1/32".parse().unwrap()],
        )
        .unwrap();
        let transport = HttpTransport::new(Duration::from_secs(10), 1 << 20).unwrap();
        let mut req = request(&url);
        req.headers = vec![
            Header {
                name: "Host".into(),
                value: "evil.example".into(),
            },
            Header {
                name: "X-Kept".into(),
                value: "yes".into(),
            },
        ];
        let resp = transport
            .perform(&req, &policy.check(&url).unwrap())
            .await
            .unwrap();
        assert_eq!(resp.status, 200);
        let got = hits.lock().unwrap()[0].clone();
        assert_eq!(got["host"], format!("127.0.0.1:{port}").as_str());
        assert_eq!(got["x-kept"], "yes");
    }
}
