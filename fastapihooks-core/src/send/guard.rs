//! The network guard: which addresses a delivery may connect to (SSRF
//! protection).
//!
//! Subscription URLs come from untrusted users. By default only globally
//! routable addresses are allowed: private, loopback, link-local,
//! unspecified, multicast, CGNAT, documentation, benchmarking and reserved
//! ranges are refused, including their IPv4-mapped, IPv4-compatible, NAT64
//! and 6to4 IPv6 forms. Host names are resolved by the guard, and the
//! connection goes to the vetted address: there is no second resolution an
//! attacker could race (DNS rebinding).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ipnet::IpNet;

/// Which destinations deliveries may reach.
///
/// ```
/// # use fastapihooks_core::NetworkPolicy;
/// let strict = NetworkPolicy::default(); // public addresses only
/// assert!(!strict.permits("127.0.0.1".parse().unwrap()));
/// let local = NetworkPolicy::default().allow_loopback(); // tests, local development
/// assert!(local.permits("127.0.0.1".parse().unwrap()));
/// ```
#[derive(Clone, Debug, Default)]
pub struct NetworkPolicy {
    allow_private: bool,
    allowed: Vec<IpNet>,
}

/// The guard refused a destination.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{host} resolves only to addresses the network policy refuses ({addr})")]
pub struct Refused {
    /// The host name or address.
    pub host: String,
    /// The first refused address.
    pub addr: IpAddr,
}

impl NetworkPolicy {
    /// Public addresses only (the default).
    pub fn new() -> Self {
        Self::default()
    }

    /// Allows every address, private networks included. For trusted
    /// subscription URLs only.
    #[must_use]
    pub fn allow_private_networks(mut self) -> Self {
        self.allow_private = true;
        self
    }

    /// Allows a network (`"10.1.0.0/16"`, `"127.0.0.1/32"`, `"::1/128"`).
    #[must_use]
    pub fn allow_net(mut self, net: IpNet) -> Self {
        self.allowed.push(net);
        self
    }

    /// Allows a network given as CIDR text.
    ///
    /// # Errors
    /// The text is not CIDR notation.
    pub fn allow_cidr(self, cidr: &str) -> Result<Self, ipnet::AddrParseError> {
        Ok(self.allow_net(cidr.parse()?))
    }

    /// Allows loopback (`127.0.0.0/8` and `::1`): tests and local development.
    #[must_use]
    pub fn allow_loopback(self) -> Self {
        self.allow_net(IpNet::from(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 0))).trunc_to(8))
            .allow_net(IpNet::from(IpAddr::V6(Ipv6Addr::LOCALHOST)))
    }

    /// True when a delivery may connect to `ip`.
    pub fn permits(&self, ip: IpAddr) -> bool {
        if self.allow_private || self.allowed.iter().any(|n| n.contains(&ip)) {
            return true;
        }
        // An IPv6 form of an IPv4 address is judged as that IPv4 address,
        // so an allow-list entry for 127.0.0.0/8 also covers ::ffff:127.0.0.1.
        if let Some(v4) = embedded_ipv4(ip)
            && self.allowed.iter().any(|n| n.contains(&IpAddr::V4(v4)))
        {
            return true;
        }
        is_global(ip)
    }

    pub(crate) fn check(&self, host: &str, ip: IpAddr) -> Result<(), Refused> {
        if self.permits(ip) { Ok(()) } else { Err(Refused { host: host.to_owned(), addr: ip }) }
    }
}

trait TruncTo {
    fn trunc_to(self, prefix: u8) -> IpNet;
}

impl TruncTo for IpNet {
    fn trunc_to(self, prefix: u8) -> IpNet {
        IpNet::new(self.addr(), prefix).map(|n| n.trunc()).unwrap_or(self)
    }
}

/// The IPv4 address an IPv6 address stands for: IPv4-mapped
/// (`::ffff:a.b.c.d`), IPv4-compatible (`::a.b.c.d`), NAT64
/// (`64:ff9b::/96`, `64:ff9b:1::/48`) or 6to4 (`2002::/16`).
fn embedded_ipv4(ip: IpAddr) -> Option<Ipv4Addr> {
    let IpAddr::V6(v6) = ip else { return None };
    let s = v6.segments();
    let last = || Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    if let Some(v4) = v6.to_ipv4_mapped() {
        return Some(v4);
    }
    if s[..6] == [0, 0, 0, 0, 0, 0] && !(s[6] == 0 && s[7] <= 1) {
        return Some(last()); // IPv4-compatible (not :: or ::1)
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] || (s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1) {
        return Some(last());
    }
    if s[0] == 0x2002 {
        return Some(Ipv4Addr::new((s[1] >> 8) as u8, s[1] as u8, (s[2] >> 8) as u8, s[2] as u8));
    }
    None
}

/// True for addresses reachable on the public internet.
pub fn is_global(ip: IpAddr) -> bool {
    if let Some(v4) = embedded_ipv4(ip) {
        return is_global_v4(v4);
    }
    match ip {
        IpAddr::V4(v4) => is_global_v4(v4),
        IpAddr::V6(v6) => is_global_v6(v6),
    }
}

fn is_global_v4(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_documentation()
        || o[0] == 0 // "this network"
        || (o[0] == 100 && (o[1] & 0xc0) == 64) // CGNAT 100.64.0.0/10
        || (o[0] == 192 && o[1] == 0 && o[2] == 0) // IETF protocol assignments
        || (o[0] == 198 && (o[1] & 0xfe) == 18) // benchmarking 198.18.0.0/15
        || o[0] >= 240) // reserved
}

fn is_global_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || (s[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
        || (s[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
        || (s[0] & 0xffc0) == 0xfec0 // site-local (deprecated) fec0::/10
        || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
        || (s[0] == 0x0100 && s[1..4] == [0, 0, 0]) // discard-only 100::/64
        || (s[0] == 0x2001 && s[1] < 0x0200)) // IETF protocol assignments 2001::/23
}

/// Why the guard could not give addresses for a host.
#[derive(Debug)]
pub(crate) enum ResolveError {
    /// Every address the host resolves to is refused by the policy.
    Refused(Refused),
    /// The lookup itself failed.
    Lookup(std::io::Error),
}

/// Resolves `host` with the system resolver and keeps only the addresses
/// `policy` permits, in the resolver's order, with `port`. The caller
/// connects to exactly these addresses, so the vetted address is the one
/// used: there is no second resolution an attacker could race.
///
/// # Errors
/// The lookup failed, or found addresses of which none is permitted.
pub(crate) async fn resolve(policy: &NetworkPolicy, host: &str, port: u16) -> Result<Vec<SocketAddr>, ResolveError> {
    let found = tokio::net::lookup_host((host, port)).await.map_err(ResolveError::Lookup)?;
    let mut refused = None;
    let vetted: Vec<SocketAddr> = found
        .filter(|a| match policy.check(host, a.ip()) {
            Ok(()) => true,
            Err(e) => {
                refused.get_or_insert(e);
                false
            }
        })
        .collect();
    match refused {
        Some(e) if vetted.is_empty() => Err(ResolveError::Refused(e)),
        _ if vetted.is_empty() => Err(ResolveError::Lookup(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "the host name resolved to no address",
        ))),
        _ => Ok(vetted),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn refuses_non_global_addresses() {
        for a in [
            "127.0.0.1",
            "10.0.0.1",
            "172.16.5.4",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "100.127.255.255",
            "224.0.0.1",
            "255.255.255.255",
            "198.18.0.1",
            "240.0.0.1",
            "192.0.2.1",
            "::1",
            "::",
            "fe80::1",
            "fc00::1",
            "fd12::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b::7f00:1",
            "::127.0.0.1",
            "2002:7f00:1::",
            "2001:db8::1",
        ] {
            assert!(!is_global(ip(a)), "{a} must be refused");
            assert!(!NetworkPolicy::default().permits(ip(a)), "{a}");
        }
    }

    #[test]
    fn allows_public_addresses() {
        for a in ["1.1.1.1", "8.8.8.8", "100.128.0.1", "2606:4700:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808"] {
            assert!(is_global(ip(a)), "{a} must be allowed");
        }
    }

    #[test]
    fn allow_lists() {
        let p = NetworkPolicy::default().allow_loopback();
        assert!(p.permits(ip("127.0.0.1")) && p.permits(ip("127.9.9.9")) && p.permits(ip("::1")));
        assert!(p.permits(ip("::ffff:127.0.0.1")));
        assert!(!p.permits(ip("10.0.0.1")));
        let p = NetworkPolicy::default().allow_cidr("10.1.0.0/16").unwrap();
        assert!(p.permits(ip("10.1.2.3")) && !p.permits(ip("10.2.0.1")));
        assert!(NetworkPolicy::default().allow_private_networks().permits(ip("192.168.0.1")));
        assert!(NetworkPolicy::default().allow_cidr("nope").is_err());
    }

    #[tokio::test]
    async fn resolve_keeps_only_permitted_addresses() {
        let strict = NetworkPolicy::default();
        match resolve(&strict, "localhost", 80).await {
            Err(ResolveError::Refused(r)) => assert_eq!(r.host, "localhost"),
            other => panic!("localhost must be refused by default: {other:?}"),
        }
        let local = NetworkPolicy::default().allow_cidr("127.0.0.0/8").unwrap();
        let addrs = resolve(&local, "localhost", 8080).await.unwrap();
        assert!(!addrs.is_empty());
        assert!(addrs.iter().all(|a| a.ip().is_loopback() && a.is_ipv4() && a.port() == 8080), "{addrs:?}");
    }
}
