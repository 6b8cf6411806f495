//! Egress: how a transform's requests leave the host.  The allow-list
//! ([`Policy`]: which URLs a request may go to), the [`Transport`] that
//! performs requests (the real [`HttpTransport`], or canned responses for
//! dry runs) and what a request that got no response failed on.
//!
//! May import: `sandbox` (the WIT request and response types), `text`.
//!
//! A request is allowed when its host matches the transform's declared list
//! (with `config:KEY` entries expanded to the host of that config value) AND,
//! when the route sets `egress`, the route's list; its scheme is `https`, or
//! `http` on a route with `allow_http = true`.

mod client;
mod transport;

use std::collections::BTreeMap;

pub use client::{ClientError, HttpTransport};
pub use transport::{CannedTransport, Sent, Transport, TransportError, TransportFailure};

use url::Url;

/// A host pattern: `example.com` (exact) or `*.example.com` (any subdomain).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HostPattern(String);

impl HostPattern {
    pub(crate) fn new(p: &str) -> HostPattern {
        HostPattern(p.trim().trim_end_matches('.').to_ascii_lowercase())
    }

    pub(crate) fn matches(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        match self.0.strip_prefix("*.") {
            Some(suffix) => host.len() > suffix.len() + 1 && host.ends_with(&format!(".{suffix}")),
            None => host == self.0,
        }
    }
}

impl std::fmt::Display for HostPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A route's egress policy.
#[derive(Debug, Clone)]
pub struct Policy {
    /// The transform's declared hosts, expanded.
    declared: Vec<HostPattern>,
    /// The route's own list, when it sets one.
    route: Option<Vec<HostPattern>>,
    /// Whether plain `http` is allowed (loopback tests, lab setups).
    allow_http: bool,
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub(crate) enum EgressError {
    #[error("egress denied: `{0}` is not a valid absolute URL")]
    BadUrl(String),
    #[error(
        "egress denied: scheme `{scheme}` of {url} is not allowed (https only; set allow_http = true on the route for http)"
    )]
    Scheme { scheme: String, url: String },
    #[error("egress denied: host `{host}` is not in the allow-list [{allowed}]")]
    Host { host: String, allowed: String },
}

impl Policy {
    /// `declared` as the transform states it; `config:KEY` entries take the
    /// host of the URL in `config[KEY]` (ignored when unset or not a URL).
    pub(crate) fn new(
        declared: &[String],
        config: &BTreeMap<String, String>,
        route: Option<&[String]>,
        allow_http: bool,
    ) -> Policy {
        let declared = declared
            .iter()
            .filter_map(|d| match d.strip_prefix("config:") {
                Some(key) => config
                    .get(key)
                    .and_then(|v| Url::parse(v).ok())
                    .and_then(|u| u.host_str().map(HostPattern::new)),
                None => Some(HostPattern::new(d)),
            })
            .collect();
        Policy {
            declared,
            route: route.map(|r| r.iter().map(|p| HostPattern::new(p)).collect()),
            allow_http,
        }
    }

    /// The hosts a request may go to, for messages and `config check`.
    pub fn describe(&self) -> String {
        let declared: Vec<String> = self.declared.iter().map(ToString::to_string).collect();
        match &self.route {
            None => declared.join(", "),
            Some(r) => {
                let r: Vec<String> = r.iter().map(ToString::to_string).collect();
                format!(
                    "{} (narrowed by the route to {})",
                    declared.join(", "),
                    r.join(", ")
                )
            }
        }
    }

    pub(crate) fn check(&self, url: &str) -> Result<Url, EgressError> {
        let parsed = Url::parse(url)
            .map_err(|_| EgressError::BadUrl(url.chars().take(40).collect::<String>() + "…"))?;
        let scheme = parsed.scheme();
        if !(scheme == "https" || (scheme == "http" && self.allow_http)) {
            return Err(EgressError::Scheme {
                scheme: scheme.into(),
                url: strip_query(&parsed),
            });
        }
        let host = parsed
            .host_str()
            .ok_or_else(|| EgressError::BadUrl(strip_query(&parsed)))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let in_declared = self.declared.iter().any(|p| p.matches(host));
        let in_route = self
            .route
            .as_ref()
            .is_none_or(|r| r.iter().any(|p| p.matches(host)));
        if in_declared && in_route {
            Ok(parsed)
        } else {
            Err(EgressError::Host {
                host: host.to_string(),
                allowed: self.describe(),
            })
        }
    }
}

/// Scheme, host and port only: paths, queries and user info may carry
/// data or credentials and never go into messages.
fn strip_query(u: &Url) -> String {
    match u.host_str() {
        Some(h) => match u.port() {
            Some(p) => format!("{}://{h}:{p}/…", u.scheme()),
            None => format!("{}://{h}/…", u.scheme()),
        },
        None => format!("{}:…", u.scheme()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(url: &str) -> BTreeMap<String, String> {
        [("url".to_string(), url.to_string())].into_iter().collect()
    }

    #[test]
    fn declared_and_config_hosts() {
        let p = Policy::new(
            &[
                "events.pagerduty.com".into(),
                "*.jitbit.com".into(),
                "config:url".into(),
            ],
            &cfg("https://tickets.corp.example/api"),
            None,
            false,
        );
        assert!(p.check("https://events.pagerduty.com/v2/enqueue").is_ok());
        assert!(
            p.check("https://acme.jitbit.com/helpdesk/api/ticket")
                .is_ok()
        );
        assert!(p.check("https://tickets.corp.example/api/ticket").is_ok());
        assert!(matches!(
            p.check("https://jitbit.com/x"),
            Err(EgressError::Host { .. })
        ));
        assert!(matches!(
            p.check("https://evil.example/x"),
            Err(EgressError::Host { .. })
        ));
        assert!(matches!(
            p.check("http://events.pagerduty.com/v2/enqueue"),
            Err(EgressError::Scheme { .. })
        ));
        assert!(matches!(
            p.check("ftp://events.pagerduty.com/"),
            Err(EgressError::Scheme { .. })
        ));
        assert!(matches!(p.check("not a url"), Err(EgressError::BadUrl(_))));
    }

    #[test]
    fn route_narrows_and_http_opt_in() {
        let p = Policy::new(
            &["events.pagerduty.com".into(), "config:url".into()],
            &cfg("http://127.0.0.1:9/x"),
            Some(&["127.0.0.1".into()]),
            true,
        );
        assert!(p.check("http://127.0.0.1:4000/v2/enqueue").is_ok());
        assert!(matches!(
            p.check("https://events.pagerduty.com/v2/enqueue"),
            Err(EgressError::Host { .. })
        ));
    }
}
