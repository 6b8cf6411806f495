//! Which IP addresses a request may reach.
//!
//! Denied unless a route opts in (`private_networks`): loopback,
//! unspecified, private (RFC 1918, IPv6 unique local), CGNAT (RFC 6598),
//! link-local (with the cloud metadata address 169.254.169.254),
//! multicast, broadcast and reserved ranges, documentation and benchmark
//! ranges, and IPv6 forms that carry one of those IPv4 addresses
//! (IPv4-mapped `::ffff:a.b.c.d`, NAT64 `64:ff9b::/96`, 6to4 `2002::/16`).
//! IPv4-compatible `::/96` is denied whole (deprecated; never a real
//! destination).
//!
//! The check runs twice: on IP literals in the URL before sending
//! ([`super::Policy::check`]), and on every address DNS returns, in the
//! HTTP client's resolver, whose vetted addresses are the ones connected
//! to ([`super::client`]).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// IPv4 ranges no request reaches without an opt-in.
const DENIED_V4: &[(Ipv4Addr, u8, &str)] = &[
    (
        Ipv4Addr::new(0, 0, 0, 0),
        8,
        "unspecified (\"this network\")",
    ),
    (Ipv4Addr::new(10, 0, 0, 0), 8, "private"),
    (Ipv4Addr::new(100, 64, 0, 0), 10, "carrier-grade NAT"),
    (Ipv4Addr::new(127, 0, 0, 0), 8, "loopback"),
    (
        Ipv4Addr::new(169, 254, 0, 0),
        16,
        "link-local (cloud metadata)",
    ),
    (Ipv4Addr::new(172, 16, 0, 0), 12, "private"),
    (Ipv4Addr::new(192, 0, 0, 0), 24, "IETF protocol assignments"),
    (Ipv4Addr::new(192, 0, 2, 0), 24, "documentation"),
    (Ipv4Addr::new(192, 88, 99, 0), 24, "6to4 relay"),
    (Ipv4Addr::new(192, 168, 0, 0), 16, "private"),
    (Ipv4Addr::new(198, 18, 0, 0), 15, "benchmarking"),
    (Ipv4Addr::new(198, 51, 100, 0), 24, "documentation"),
    (Ipv4Addr::new(203, 0, 113, 0), 24, "documentation"),
    (Ipv4Addr::new(224, 0, 0, 0), 4, "multicast"),
    (Ipv4Addr::new(240, 0, 0, 0), 4, "reserved or broadcast"),
];

/// IPv6 ranges no request reaches without an opt-in (embedded IPv4 forms
/// are handled by [`embedded_v4`] first).
const DENIED_V6: &[(Ipv6Addr, u8, &str)] = &[
    (
        Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 0),
        96,
        "unspecified, loopback or IPv4-compatible",
    ),
    (
        Ipv6Addr::new(0x64, 0xff9b, 1, 0, 0, 0, 0, 0),
        48,
        "local-use NAT64",
    ),
    (
        Ipv6Addr::new(0x100, 0, 0, 0, 0, 0, 0, 0),
        64,
        "discard-only",
    ),
    (
        Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0),
        32,
        "documentation",
    ),
    (
        Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0),
        7,
        "unique local (private)",
    ),
    (Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 10, "link-local"),
    (Ipv6Addr::new(0xfec0, 0, 0, 0, 0, 0, 0, 0), 10, "site-local"),
    (Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0), 8, "multicast"),
];

/// The IPv4 address an IPv6 address stands for, when it embeds one that a
/// gateway or the kernel would reach: IPv4-mapped, NAT64, 6to4.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let v4 = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    match s {
        [0, 0, 0, 0, 0, 0xffff, hi, lo] => Some(v4(hi, lo)),
        [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => Some(v4(hi, lo)),
        [0x2002, hi, lo, ..] => Some(v4(hi, lo)),
        _ => None,
    }
}

/// Why `ip` is not a public destination, or `None` when it is.
pub(crate) fn non_public(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => DENIED_V4
            .iter()
            .find(|(net, len, _)| Ipv4Net::new(*net, *len).is_ok_and(|n| n.contains(&v4)))
            .map(|(_, _, why)| *why),
        IpAddr::V6(v6) => match embedded_v4(v6) {
            Some(v4) => non_public(IpAddr::V4(v4)),
            None => DENIED_V6
                .iter()
                .find(|(net, len, _)| Ipv6Net::new(*net, *len).is_ok_and(|n| n.contains(&v6)))
                .map(|(_, _, why)| *why),
        },
    }
}

/// The addresses one route may reach: every public address, and the
/// private networks it opted in to.  Cheap to clone; equal filters share
/// an HTTP client (and so a connection pool).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct AddressFilter {
    /// The route's `private_networks`, sorted and deduplicated (a pool key).
    opted_in: Arc<[IpNet]>,
}

impl AddressFilter {
    /// A filter allowing public addresses and `networks`.
    pub(crate) fn new(networks: &[IpNet]) -> AddressFilter {
        let mut nets: Vec<IpNet> = networks.iter().map(IpNet::trunc).collect();
        nets.sort();
        nets.dedup();
        AddressFilter {
            opted_in: nets.into(),
        }
    }

    /// `Ok` when `ip` may be reached; otherwise why not.
    pub(crate) fn check(&self, ip: IpAddr) -> Result<(), &'static str> {
        // An IPv4-mapped address is its IPv4 address, for opt-ins too.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match non_public(ip) {
            None => Ok(()),
            Some(_) if self.opted_in.iter().any(|n| n.contains(&ip)) => Ok(()),
            Some(why) => Err(why),
        }
    }

    /// The opted-in networks, for messages.
    pub(crate) fn describe(&self) -> String {
        if self.opted_in.is_empty() {
            "none".into()
        } else {
            self.opted_in
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn non_public_ranges_are_denied_by_default() {
        let f = AddressFilter::default();
        for denied in [
            "127.0.0.1",
            "127.255.255.254",
            "0.0.0.0",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "100.64.0.1",
            "100.127.255.255",
            "169.254.169.254",
            "224.0.0.1",
            "239.255.255.250",
            "255.255.255.255",
            "::",
            "::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::ffff:10.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::",
            "::127.0.0.1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "ff02::1",
            "2001:db8::1",
        ] {
            assert!(f.check(ip(denied)).is_err(), "{denied} should be denied");
        }
        for public in [
            "8.8.8.8",
            "1.1.1.1",
            "172.32.0.1",
            "100.128.0.1",
            "169.253.255.255",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
        ] {
            assert!(f.check(ip(public)).is_ok(), "{public} should be allowed");
        }
    }

    #[test]
    fn opt_in_allows_exactly_the_listed_networks() {
        let f = AddressFilter::new(&[
            "10.20.0.0/16".parse().unwrap(),
            "127.0.0.1/32".parse().unwrap(),
        ]);
        assert!(f.check(ip("10.20.3.4")).is_ok());
        assert!(f.check(ip("127.0.0.1")).is_ok());
        assert!(f.check(ip("::ffff:127.0.0.1")).is_ok());
        assert!(f.check(ip("10.21.0.1")).is_err());
        assert!(f.check(ip("127.0.0.2")).is_err());
        assert!(f.check(ip("169.254.169.254")).is_err());
        assert!(f.check(ip("::1")).is_err());
        assert!(f.check(ip("8.8.8.8")).is_ok());
    }

    #[test]
    fn equal_opt_ins_are_one_filter() {
        let a = AddressFilter::new(&["10.0.0.0/8".parse().unwrap(), "10.1.2.3/8".parse().unwrap()]);
        let b = AddressFilter::new(&["10.0.0.0/8".parse().unwrap()]);
        assert_eq!(a, b);
    }
}
