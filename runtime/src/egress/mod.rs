//! Egress: how a transform's requests leave the host.  The allow-list
//! ([`Policy`]: which URLs a request may go to), the addresses it may reach
//! ([`AddressFilter`]), the [`Transport`] that performs requests (the real
//! [`HttpTransport`], or canned responses for dry runs) and what a request
//! that got no response failed on.
//!
//! May import: `sandbox` (the WIT request and response types), `text`.
//!
//! The host, not the transform, decides where a request goes.  A request
//! is allowed when:
//!
//! * its scheme is `https`, or `http` on a route with `allow_http = true`;
//! * its URL carries no user info (`https://user:pass@host/`);
//! * its host AND port match the transform's declared list (with
//!   `config:KEY` entries expanded to the host and port of that config
//!   value) AND, when the route sets `egress`, the route's list.  An entry
//!   without a port stands for the scheme's default port;
//! * every address it reaches is public, or inside one of the route's
//!   `private_networks`: IP literals are checked here, names after DNS
//!   resolution, by the HTTP client's resolver, which hands the client only
//!   the vetted addresses to connect to ([`address`]);
//! * it sets none of the headers the host owns: framing (`Host`,
//!   `Content-Length`, `Transfer-Encoding`, `TE`, `Trailer`) and hop-by-hop
//!   (`Connection`, `Keep-Alive`, `Upgrade`, `Proxy-*`).

mod address;
mod client;
mod transport;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub use address::AddressFilter;
pub use client::{ClientError, HttpTransport};
pub use transport::{CannedTransport, Sent, Transport, TransportError, TransportFailure};

use url::{Host, Url};

/// The host part of an allow-list entry.
#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    /// An IP address (`127.0.0.1`, `[::1]`), compared as an address.
    Ip(IpAddr),
    /// A name, compared exactly (lower case, no trailing dot).
    Name(String),
    /// `*.example.com`: any subdomain of this suffix, not the suffix itself.
    Subdomains(String),
}

/// One allow-list entry: a host and a port.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Allowed {
    /// Which hosts.
    host: HostPattern,
    /// Which port; `None`: the default port of the request's scheme.
    port: Option<u16>,
}

impl Allowed {
    /// `host`, `host:port`, `*.domain[:port]`, `1.2.3.4[:port]`, `::1`,
    /// `[::1][:port]`.  `None` when it is none of these.
    fn parse(entry: &str) -> Option<Allowed> {
        let e = entry.trim().to_ascii_lowercase();
        if let Some(rest) = e.strip_prefix('[') {
            let (addr, after) = rest.split_once(']')?;
            let ip: Ipv6Addr = addr.parse().ok()?;
            let port = match after {
                "" => None,
                p => Some(p.strip_prefix(':')?.parse().ok()?),
            };
            return Some(Allowed {
                host: HostPattern::Ip(IpAddr::V6(ip)),
                port,
            });
        }
        if let Ok(ip) = e.parse::<Ipv6Addr>() {
            return Some(Allowed {
                host: HostPattern::Ip(IpAddr::V6(ip)),
                port: None,
            });
        }
        let (host, port) = match e.rsplit_once(':') {
            Some((h, p)) => (h, Some(p.parse::<u16>().ok()?)),
            None => (e.as_str(), None),
        };
        let host = host.trim_end_matches('.');
        let (wildcard, name) = match host.strip_prefix("*.") {
            Some(suffix) => (true, suffix),
            None => (false, host),
        };
        // The URL parser's own reading: IPv4 in any notation, IDNA names.
        let host = match Host::parse(name).ok()? {
            Host::Domain(d) if d.contains('*') => return None,
            Host::Domain(d) if wildcard => HostPattern::Subdomains(d),
            Host::Domain(d) => HostPattern::Name(d),
            Host::Ipv4(a) if !wildcard => HostPattern::Ip(IpAddr::V4(a)),
            Host::Ipv6(a) if !wildcard => HostPattern::Ip(IpAddr::V6(a)),
            _ => return None,
        };
        Some(Allowed { host, port })
    }

    /// The entry for the host and port of a configured URL.
    fn of_url(u: &Url) -> Option<Allowed> {
        let host = match u.host()? {
            Host::Domain(d) => HostPattern::Name(d.trim_end_matches('.').to_ascii_lowercase()),
            Host::Ipv4(a) => HostPattern::Ip(IpAddr::V4(a)),
            Host::Ipv6(a) => HostPattern::Ip(IpAddr::V6(a)),
        };
        Some(Allowed {
            host,
            port: u.port(),
        })
    }

    fn matches(&self, host: &Host<&str>, port: u16, scheme: &str) -> bool {
        let host_ok = match (&self.host, host) {
            (HostPattern::Ip(a), Host::Ipv4(b)) => *a == IpAddr::V4(*b),
            (HostPattern::Ip(a), Host::Ipv6(b)) => *a == IpAddr::V6(*b),
            (HostPattern::Name(n), Host::Domain(d)) => {
                d.trim_end_matches('.').eq_ignore_ascii_case(n)
            }
            (HostPattern::Subdomains(s), Host::Domain(d)) => {
                let d = d.trim_end_matches('.').to_ascii_lowercase();
                d.len() > s.len() + 1
                    && d.ends_with(s.as_str())
                    && d[..d.len() - s.len()].ends_with('.')
            }
            _ => false,
        };
        host_ok && self.port.or_else(|| default_port(scheme)) == Some(port)
    }
}

impl std::fmt::Display for Allowed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.host, self.port) {
            (HostPattern::Ip(IpAddr::V6(a)), Some(p)) => write!(f, "[{a}]:{p}"),
            (HostPattern::Ip(IpAddr::V6(a)), None) => write!(f, "[{a}]"),
            (HostPattern::Ip(a), _) => write!(f, "{a}"),
            (HostPattern::Name(n), _) => f.write_str(n),
            (HostPattern::Subdomains(s), _) => write!(f, "*.{s}"),
        }?;
        match (&self.host, self.port) {
            (HostPattern::Ip(IpAddr::V6(_)), _) | (_, None) => Ok(()),
            (_, Some(p)) => write!(f, ":{p}"),
        }
    }
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "https" => Some(443),
        "http" => Some(80),
        _ => None,
    }
}

/// Headers the host owns: framing, and hop-by-hop headers (RFC 9110
/// §7.6.1) that only the host's HTTP client may set.  A request carrying
/// one is refused: a wrong `Host` can route it elsewhere through a proxy or
/// CDN, a wrong `Content-Length` stalls it.
pub(crate) fn host_owned_header(name: &str) -> bool {
    let n = name.trim().to_ascii_lowercase();
    matches!(
        n.as_str(),
        "host"
            | "content-length"
            | "transfer-encoding"
            | "connection"
            | "keep-alive"
            | "upgrade"
            | "te"
            | "trailer"
            | "expect"
    ) || n.starts_with("proxy-")
}

/// Where a vetted request goes: the URL as the policy parsed it (sent as
/// is, so no second parser reads it differently) and the addresses it may
/// reach.
#[derive(Debug, Clone)]
pub struct Destination {
    /// The parsed URL.
    pub(crate) url: Url,
    /// The route's address filter, applied by the client's resolver.
    pub(crate) addresses: AddressFilter,
}

impl Destination {
    /// `scheme://host:port` (the port always written): what one circuit
    /// breaker stands for, shared by every route that sends there.
    pub(crate) fn origin(&self) -> String {
        let port = self
            .url
            .port_or_known_default()
            .map(|p| format!(":{p}"))
            .unwrap_or_default();
        format!(
            "{}://{}{port}",
            self.url.scheme(),
            self.url.host_str().unwrap_or("")
        )
    }
}

/// A route's egress policy.
#[derive(Debug, Clone)]
pub struct Policy {
    /// The transform's declared hosts and ports, expanded.
    declared: Vec<Allowed>,
    /// The route's own list, when it sets one.
    route: Option<Vec<Allowed>>,
    /// Whether plain `http` is allowed (loopback tests, lab setups).
    allow_http: bool,
    /// Public addresses and the route's `private_networks`.
    addresses: AddressFilter,
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum EgressError {
    #[error("egress denied: `{0}` is not a valid absolute URL")]
    BadUrl(String),
    #[error(
        "egress denied: scheme `{scheme}` of {url} is not allowed (https only; set allow_http = true on the route for http)"
    )]
    Scheme { scheme: String, url: String },
    #[error("egress denied: {url} carries user info (user:password@); credentials go in headers")]
    Userinfo { url: String },
    #[error("egress denied: `{host}` is not in the allow-list [{allowed}]")]
    Host { host: String, allowed: String },
    #[error(
        "egress denied: {host} is a {why} address; only public addresses are reached unless the route lists its network in private_networks (now: {opted_in})"
    )]
    Address {
        host: String,
        why: &'static str,
        opted_in: String,
    },
    #[error("egress denied: header `{0}` is set by the host, not by transforms")]
    HostHeader(String),
    #[error("route egress entry `{0}` is not a host, host:port, *.domain or IP address")]
    Entry(String),
}

impl Policy {
    /// `declared` as the transform states it; `config:KEY` entries take the
    /// host and port of the URL in `config[KEY]` (ignored when unset or not
    /// a URL; [`Policy::configured_urls`] lists them for checking).
    /// Entries of the route's `egress` that do not parse are an error;
    /// the transform's are dropped with a warning.
    pub(crate) fn new(
        declared: &[String],
        config: &BTreeMap<String, String>,
        route: Option<&[String]>,
        allow_http: bool,
        private_networks: &[ipnet::IpNet],
    ) -> Result<Policy, EgressError> {
        let declared = declared
            .iter()
            .filter_map(|d| match d.strip_prefix("config:") {
                Some(key) => config
                    .get(key)
                    .and_then(|v| Url::parse(v).ok())
                    .and_then(|u| Allowed::of_url(&u)),
                None => {
                    let parsed = Allowed::parse(d);
                    if parsed.is_none() {
                        tracing::warn!(
                            "transform egress entry `{}` is not a host, host:port, *.domain or IP address; ignored",
                            crate::text::escape_controls(d)
                        );
                    }
                    parsed
                }
            })
            .collect();
        let route = match route {
            None => None,
            Some(r) => Some(
                r.iter()
                    .map(|e| Allowed::parse(e).ok_or_else(|| EgressError::Entry(e.clone())))
                    .collect::<Result<Vec<_>, _>>()?,
            ),
        };
        Ok(Policy {
            declared,
            route,
            allow_http,
            addresses: AddressFilter::new(private_networks),
        })
    }

    /// The hosts a request may go to, for messages and `config check`.
    pub fn describe(&self) -> String {
        let list = |v: &[Allowed]| {
            v.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut out = list(&self.declared);
        if let Some(r) = &self.route {
            out.push_str(&format!(" (narrowed by the route to {})", list(r)));
        }
        let nets = self.addresses.describe();
        if nets != "none" {
            out.push_str(&format!("; private networks allowed: {nets}"));
        }
        out
    }

    /// Vets one request URL: scheme, user info, host and port against the
    /// lists, and an IP literal against the address filter.  Names are
    /// vetted again, address by address, when the client resolves them.
    pub(crate) fn check(&self, url: &str) -> Result<Destination, EgressError> {
        let parsed =
            Url::parse(url).map_err(|_| EgressError::BadUrl(crate::text::excerpt(url, 40)))?;
        let scheme = parsed.scheme();
        if !(scheme == "https" || (scheme == "http" && self.allow_http)) {
            return Err(EgressError::Scheme {
                scheme: crate::text::excerpt(scheme, 16),
                url: strip_query(&parsed),
            });
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(EgressError::Userinfo {
                url: strip_query(&parsed),
            });
        }
        let (Some(host), Some(port)) = (parsed.host(), parsed.port_or_known_default()) else {
            return Err(EgressError::BadUrl(strip_query(&parsed)));
        };
        let in_declared = self.declared.iter().any(|p| p.matches(&host, port, scheme));
        let in_route = self
            .route
            .as_ref()
            .is_none_or(|r| r.iter().any(|p| p.matches(&host, port, scheme)));
        if !(in_declared && in_route) {
            return Err(EgressError::Host {
                host: host_port(&host, port),
                allowed: self.describe(),
            });
        }
        let literal = match host {
            Host::Ipv4(a) => Some(IpAddr::V4(a)),
            Host::Ipv6(a) => Some(IpAddr::V6(a)),
            Host::Domain(_) => None,
        };
        if let Some(ip) = literal {
            self.addresses
                .check(ip)
                .map_err(|why| self.address_error(host_port(&host, port), why))?;
        }
        Ok(Destination {
            url: parsed,
            addresses: self.addresses.clone(),
        })
    }

    /// Vets a URL from the configuration, before any event: everything
    /// [`Policy::check`] does, and for a name, where it resolves now
    /// (`localhost` always to loopback; others through DNS when
    /// `dns_timeout` is given, waiting at most that long; a name that does
    /// not resolve passes, since DNS may not be up yet).  A URL refused
    /// here could never be delivered to.
    pub(crate) fn check_configured(
        &self,
        url: &str,
        dns_timeout: Option<std::time::Duration>,
    ) -> Result<(), EgressError> {
        let dest = self.check(url)?;
        let Some(Host::Domain(name)) = dest.url.host() else {
            return Ok(());
        };
        let port = dest.url.port_or_known_default().unwrap_or(443);
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        let addrs: Vec<IpAddr> = if name == "localhost" || name.ends_with(".localhost") {
            vec![
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(Ipv6Addr::LOCALHOST),
            ]
        } else if let Some(timeout) = dns_timeout {
            client::resolve_with_timeout(&name, port, timeout)
        } else {
            vec![]
        };
        let refused: Vec<(IpAddr, &'static str)> = addrs
            .iter()
            .filter_map(|a| self.addresses.check(*a).err().map(|why| (*a, why)))
            .collect();
        match refused.first() {
            Some((ip, why)) if refused.len() == addrs.len() => {
                Err(self.address_error(format!("{name} (resolves to {ip})"), why))
            }
            _ => Ok(()),
        }
    }

    fn address_error(&self, host: String, why: &'static str) -> EgressError {
        EgressError::Address {
            host,
            why,
            opted_in: self.addresses.describe(),
        }
    }

    /// The first header a transform may not set, if any.
    pub(crate) fn check_headers<'a>(
        names: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), EgressError> {
        match names.into_iter().find(|n| host_owned_header(n)) {
            Some(n) => Err(EgressError::HostHeader(crate::text::excerpt(n, 64))),
            None => Ok(()),
        }
    }
}

fn host_port(host: &Host<&str>, port: u16) -> String {
    match host {
        Host::Ipv6(a) => format!("[{a}]:{port}"),
        Host::Ipv4(a) => format!("{a}:{port}"),
        Host::Domain(d) => format!("{d}:{port}"),
    }
}

/// Scheme, host and port only: paths, queries and user info may carry
/// data or credentials and never go into messages.
fn strip_query(u: &Url) -> String {
    match u.host() {
        Some(h) => match u.port() {
            Some(p) => format!("{}://{}/…", u.scheme(), host_port(&h, p)),
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

    fn policy(
        declared: &[&str],
        url: &str,
        route: Option<&[&str]>,
        http: bool,
        nets: &[&str],
    ) -> Policy {
        let declared: Vec<String> = declared.iter().map(|s| s.to_string()).collect();
        let route: Option<Vec<String>> = route.map(|r| r.iter().map(|s| s.to_string()).collect());
        let nets: Vec<ipnet::IpNet> = nets.iter().map(|n| n.parse().unwrap()).collect();
        Policy::new(&declared, &cfg(url), route.as_deref(), http, &nets).unwrap()
    }

    #[test]
    fn declared_and_config_hosts() {
        let p = policy(
            &["events.pagerduty.com", "*.jitbit.com", "config:url"],
            "https://tickets.corp.example/api",
            None,
            false,
            &[],
        );
        assert!(p.check("https://events.pagerduty.com/v2/enqueue").is_ok());
        assert!(p.check("https://EVENTS.pagerduty.com./v2/enqueue").is_ok());
        assert!(
            p.check("https://acme.jitbit.com/helpdesk/api/ticket")
                .is_ok()
        );
        assert!(p.check("https://tickets.corp.example/api/ticket").is_ok());
        for denied in [
            "https://jitbit.com/x",
            "https://evil.example/x",
            "https://xjitbit.com/",
        ] {
            assert!(
                matches!(p.check(denied), Err(EgressError::Host { .. })),
                "{denied}"
            );
        }
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
    fn entries_match_host_and_port() {
        let p = policy(
            &["events.pagerduty.com", "api.example.com:8443", "config:url"],
            "http://127.0.0.1:18080/x",
            None,
            true,
            &["127.0.0.1/32"],
        );
        assert!(p.check("https://events.pagerduty.com:443/").is_ok());
        assert!(p.check("http://events.pagerduty.com/").is_ok());
        assert!(matches!(
            p.check("https://events.pagerduty.com:8443/"),
            Err(EgressError::Host { .. })
        ));
        assert!(p.check("https://api.example.com:8443/").is_ok());
        assert!(matches!(
            p.check("https://api.example.com/"),
            Err(EgressError::Host { .. })
        ));
        // The configured URL's port, and no other: no port scan of an
        // allowed host.
        assert!(p.check("http://127.0.0.1:18080/v2/enqueue").is_ok());
        for port in [18082, 22, 80] {
            let e = p.check(&format!("http://127.0.0.1:{port}/")).unwrap_err();
            assert!(matches!(e, EgressError::Host { .. }), "{port}: {e}");
        }
    }

    #[test]
    fn non_public_literals_need_an_opt_in() {
        let p = policy(
            &[
                "127.0.0.1",
                "169.254.169.254",
                "[::1]",
                "[::ffff:127.0.0.1]",
                "10.0.0.1",
            ],
            "",
            None,
            true,
            &[],
        );
        for url in [
            "http://127.0.0.1/",
            "http://2130706433/",
            "http://0x7f.1/",
            "http://169.254.169.254/latest/meta-data/",
            "http://[::1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://10.0.0.1/",
        ] {
            let e = p.check(url).unwrap_err();
            assert!(matches!(e, EgressError::Address { .. }), "{url}: {e}");
            assert!(e.to_string().contains("private_networks"), "{e}");
        }
        let opted = policy(
            &["127.0.0.1", "[::1]:8080"],
            "",
            None,
            true,
            &["127.0.0.1/32", "::1/128"],
        );
        assert!(opted.check("http://127.0.0.1/").is_ok());
        assert!(opted.check("http://2130706433/").is_ok());
        assert!(opted.check("http://[::1]:8080/").is_ok());
        assert!(matches!(
            opted.check("http://[::1]/"),
            Err(EgressError::Host { .. })
        ));
    }

    #[test]
    fn ipv6_literals_match_their_entries() {
        let p = policy(
            &["[2606:4700::1111]", "2606:4700::1001", "config:url"],
            "https://[2606:4700::6810:84e5]:8443/x",
            None,
            false,
            &[],
        );
        assert!(p.check("https://[2606:4700::1111]/").is_ok());
        assert!(p.check("https://[2606:4700:0:0::1111]:443/").is_ok());
        assert!(p.check("https://[2606:4700::1001]/").is_ok());
        let r = p.check("https://[2606:4700::6810:84e5]:8443/");
        assert!(r.is_ok(), "{r:?}");
        assert!(matches!(
            p.check("https://[2606:4700::6810:84e5]/"),
            Err(EgressError::Host { .. })
        ));
        assert_eq!(
            p.describe(),
            "[2606:4700::1111], [2606:4700::1001], [2606:4700::6810:84e5]:8443"
        );
    }

    #[test]
    fn user_info_is_refused() {
        let p = policy(
            &["events.pagerduty.com", "127.0.0.1"],
            "",
            None,
            true,
            &["127.0.0.1/32"],
        );
        for url in [
            "http://a:b@events.pagerduty.com@127.0.0.1/",
            "https://user@events.pagerduty.com/",
            "https://:pw@events.pagerduty.com/",
        ] {
            let e = p.check(url).unwrap_err();
            assert!(matches!(e, EgressError::Userinfo { .. }), "{url}: {e}");
            assert!(!e.to_string().contains("a:b"), "{e}");
        }
    }

    #[test]
    fn route_narrows_and_http_opt_in() {
        let p = policy(
            &["events.pagerduty.com", "config:url"],
            "http://127.0.0.1:9/x",
            Some(&["127.0.0.1:9"]),
            true,
            &["127.0.0.1/32"],
        );
        assert!(p.check("http://127.0.0.1:9/v2/enqueue").is_ok());
        assert!(matches!(
            p.check("https://events.pagerduty.com/v2/enqueue"),
            Err(EgressError::Host { .. })
        ));
        let bad = Policy::new(
            &[],
            &BTreeMap::new(),
            Some(&["exa mple.com".to_string()]),
            false,
            &[],
        );
        assert!(matches!(bad, Err(EgressError::Entry(_))));
    }

    #[test]
    fn configured_urls_that_could_never_pass_are_found() {
        let check = |url: &str, http: bool, route: Option<&[&str]>, nets: &[&str]| {
            policy(&["config:url"], url, route, http, nets).check_configured(url, None)
        };
        assert!(check("https://events.pagerduty.com/v2/enqueue", false, None, &[]).is_ok());
        assert!(matches!(
            check("http://events.pagerduty.com/", false, None, &[]),
            Err(EgressError::Scheme { .. })
        ));
        assert!(matches!(
            check("http://127.0.0.1:5/", true, None, &[]),
            Err(EgressError::Address { .. })
        ));
        assert!(matches!(
            check("http://localhost:5/", true, None, &[]),
            Err(EgressError::Address { .. })
        ));
        assert!(matches!(
            check("http://app.localhost:5/", true, None, &[]),
            Err(EgressError::Address { .. })
        ));
        assert!(check("http://localhost:5/", true, None, &["127.0.0.0/8"]).is_ok());
        assert!(matches!(
            check("http://169.254.169.254/", true, None, &[]),
            Err(EgressError::Address { .. })
        ));
        assert!(matches!(
            check(
                "https://events.pagerduty.com/",
                false,
                Some(&["other.example"]),
                &[]
            ),
            Err(EgressError::Host { .. })
        ));
        assert!(matches!(
            check("https://u:p@events.pagerduty.com/", false, None, &[]),
            Err(EgressError::Userinfo { .. })
        ));
    }

    #[test]
    fn host_owned_headers_are_refused() {
        for h in [
            "Host",
            "content-length",
            "Transfer-Encoding",
            "Connection",
            "Keep-Alive",
            "Upgrade",
            "TE",
            "Trailer",
            "Proxy-Authorization",
            "proxy-connection",
        ] {
            assert!(
                matches!(Policy::check_headers([h]), Err(EgressError::HostHeader(_))),
                "{h}"
            );
        }
        assert!(Policy::check_headers(["Content-Type", "Authorization", "X-Host"]).is_ok());
    }
}
