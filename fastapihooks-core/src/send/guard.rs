//! The network guard: which addresses a delivery may connect to (SSRF
//! protection).
//!
//! Subscription URLs come from untrusted users. By default only globally
//! reachable addresses are allowed, judged entry by entry against IANA's
//! IPv4 and IPv6 Special-Purpose Address Registries: private, loopback,
//! link-local, unspecified, multicast, limited broadcast, shared (CGNAT),
//! documentation, benchmarking, discard-only, dummy, SRv6 SID, IETF
//! protocol assignment, deprecated (6to4 relay anycast, site-local,
//! ORCHID) and reserved ranges are refused. An IPv6 address that stands
//! for an IPv4 one (IPv4-mapped, IPv4-translated, IPv4-compatible, NAT64
//! with the well-known prefix `64:ff9b::/96`, 6to4 `2002::/16`) is judged
//! as that IPv4 address.
//!
//! Decisions the registries' "Globally Reachable" column does not make
//! alone:
//!
//! - Entries marked globally reachable are permitted (AS112
//!   `192.31.196.0/24`, `192.175.48.0/24`, `2001:4:112::/48`,
//!   `2620:4f:8000::/48`; AMT `192.52.193.0/24`, `2001:3::/32`; ORCHIDv2
//!   `2001:20::/28`; drone remote ID `2001:30::/28`), except the PCP, TURN
//!   and DNS-SD SRP anycast addresses (`192.0.0.9`, `192.0.0.10`,
//!   `2001:1::1` to `2001:1::3`). Those are refused on purpose: the server
//!   answering them is one of the sender's own network (its NAT gateway,
//!   its access network's relay), the kind of internal host the guard keeps
//!   deliveries away from, and no webhook receiver lives there.
//! - Entries without a verdict: 6to4 is judged by its IPv4 address; Teredo
//!   (`2001::/32`) is refused, as a relay would forward the delivery to the
//!   IPv4 address and port hidden in it; the deprecated 6to4 relay anycast
//!   block `192.88.99.0/24` is refused, as the nearest relay answers it.
//! - The local-use NAT64 prefix `64:ff9b:1::/48` (not globally reachable)
//!   is refused whole rather than judged by an IPv4 address: where that
//!   address sits in it depends on the translator's prefix length, which
//!   the guard cannot know. Behind such a translator, allow the prefix
//!   explicitly.
//!
//! Host names are resolved by the guard, and the connection goes to the
//! vetted address: there is no second resolution an attacker could race
//! (DNS rebinding).

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
/// (`::ffff:a.b.c.d`), IPv4-translated (`::ffff:0:a.b.c.d`, SIIT),
/// IPv4-compatible (`::a.b.c.d`), NAT64 with the well-known prefix
/// (`64:ff9b::/96`) or 6to4 (`2002::/16`).
///
/// The local-use NAT64 prefix `64:ff9b:1::/48` is not unwrapped: where the
/// IPv4 address sits in it depends on the prefix length the translator was
/// given, so the address alone does not tell which IPv4 address it stands for.
fn embedded_ipv4(ip: IpAddr) -> Option<Ipv4Addr> {
    let IpAddr::V6(v6) = ip else { return None };
    let s = v6.segments();
    let last = || Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    if let Some(v4) = v6.to_ipv4_mapped() {
        return Some(v4);
    }
    if s[..6] == [0, 0, 0, 0, 0xffff, 0] {
        return Some(last()); // IPv4-translated
    }
    if s[..6] == [0, 0, 0, 0, 0, 0] && !(s[6] == 0 && s[7] <= 1) {
        return Some(last()); // IPv4-compatible (not :: or ::1)
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
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
    let bits = u32::from(ip);
    let within = |net: [u8; 4], len: u32| bits >> (32 - len) == u32::from_be_bytes(net) >> (32 - len);
    !(within([0, 0, 0, 0], 8) // "this network", 0.0.0.0 included
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local() // cloud metadata at 169.254.169.254
        || within([100, 64, 0, 0], 10) // shared address space (CGNAT)
        // IETF protocol assignments, whole: the registry calls the PCP and
        // TURN anycast addresses 192.0.0.9 and 192.0.0.10 globally reachable,
        // but the server answering them is the sender's own network's.
        || within([192, 0, 0, 0], 24)
        // Deprecated 6to4 relay anycast (6a44 relay 192.88.99.2 included):
        // the nearest relay answers, and no receiver lives there.
        || within([192, 88, 99, 0], 24)
        || ip.is_documentation()
        || within([198, 18, 0, 0], 15) // benchmarking
        || ip.is_multicast()
        || within([240, 0, 0, 0], 4)) // reserved, limited broadcast 255.255.255.255 included
}

fn is_global_v6(ip: Ipv6Addr) -> bool {
    let bits = u128::from(ip);
    let within = |net: u128, len: u32| bits >> (128 - len) == net >> (128 - len);
    // The parts of 2001::/23 the registry calls globally reachable, and that
    // are internet services rather than ones of the sender's network: AMT,
    // AS112-v6, ORCHIDv2 and drone remote ID (DETs). The PCP, TURN and
    // DNS-SD SRP anycast addresses 2001:1::1 to 2001:1::3 stay refused, as
    // their IPv4 counterparts do.
    let global_in_2001 = within(0x2001_0003 << 96, 32)
        || within(0x2001_0004_0112 << 80, 48)
        || within(0x2001_0020 << 96, 28)
        || within(0x2001_0030 << 96, 28);
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || within(0x0064_ff9b_0001 << 80, 48) // local-use NAT64: see `embedded_ipv4`
        || within(0x0100 << 112, 64) // discard-only 100::/64
        || within(0x0100_0000_0000_0001 << 64, 64) // dummy prefix 100:0:0:1::/64
        || (within(0x2001 << 112, 23) && !global_in_2001) // IETF protocol assignments, Teredo included
        || within(0x2001_0db8 << 96, 32) // documentation
        || within(0x3fff << 112, 20) // documentation
        || within(0x5f00 << 112, 16) // SRv6 SIDs: segment routing domains, not hosts
        || within(0xfc00 << 112, 7) // unique local
        || within(0xfe80 << 112, 10) // link-local
        || within(0xfec0 << 112, 10)) // site-local (deprecated)
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

    /// How the default policy must judge the addresses of a range.
    #[derive(Clone, Copy, Debug)]
    enum Verdict {
        Refused,
        Permitted,
        /// As the IPv4 address held in the 32 bits that end this many bits
        /// from the right.
        AsIpv4(u32),
    }
    use Verdict::{AsIpv4, Permitted, Refused};

    /// IANA's IPv4 and IPv6 Special-Purpose Address Registries, one row per
    /// entry, and the ranges they leave to other registries (multicast,
    /// IPv4-compatible, IPv4-translated, site-local). Where the registry's
    /// "Globally Reachable" column disagrees with the verdict, the module
    /// docs say why.
    const RANGES: &[(&str, &str, Verdict)] = &[
        ("0.0.0.0/8", "RFC 791", Refused),
        ("0.0.0.0/32", "RFC 1122", Refused),
        ("10.0.0.0/8", "RFC 1918", Refused),
        ("100.64.0.0/10", "RFC 6598", Refused),
        ("127.0.0.0/8", "RFC 1122", Refused),
        ("169.254.0.0/16", "RFC 3927", Refused),
        ("172.16.0.0/12", "RFC 1918", Refused),
        ("192.0.0.0/24", "RFC 6890", Refused),
        ("192.0.0.0/29", "RFC 7335", Refused),
        ("192.0.0.8/32", "RFC 7600", Refused),
        ("192.0.0.9/32", "RFC 7723", Refused), // globally reachable, but the PCP server is the sender's NAT
        ("192.0.0.10/32", "RFC 8155", Refused), // globally reachable, but the TURN server is the access network's
        ("192.0.0.170/32", "RFC 8880", Refused),
        ("192.0.0.171/32", "RFC 8880", Refused),
        ("192.0.2.0/24", "RFC 5737", Refused),
        ("192.31.196.0/24", "RFC 7535", Permitted),
        ("192.52.193.0/24", "RFC 7450", Permitted),
        ("192.88.99.0/24", "RFC 7526", Refused),
        ("192.88.99.2/32", "RFC 6751", Refused),
        ("192.168.0.0/16", "RFC 1918", Refused),
        ("192.175.48.0/24", "RFC 7534", Permitted),
        ("198.18.0.0/15", "RFC 2544", Refused),
        ("198.51.100.0/24", "RFC 5737", Refused),
        ("203.0.113.0/24", "RFC 5737", Refused),
        ("224.0.0.0/4", "RFC 5771", Refused),
        ("240.0.0.0/4", "RFC 1112", Refused),
        ("255.255.255.255/32", "RFC 919", Refused),
        ("::1/128", "RFC 4291", Refused),
        ("::/128", "RFC 4291", Refused),
        ("::/96", "RFC 4291", AsIpv4(0)), // IPv4-compatible (deprecated)
        ("::ffff:0:0/96", "RFC 4291", AsIpv4(0)),
        ("::ffff:0:0:0/96", "RFC 2765", AsIpv4(0)), // IPv4-translated
        ("64:ff9b::/96", "RFC 6052", AsIpv4(0)),
        ("64:ff9b:1::/48", "RFC 8215", Refused),
        ("100::/64", "RFC 6666", Refused),
        ("100:0:0:1::/64", "RFC 9780", Refused),
        ("2001::/23", "RFC 2928", Refused),
        ("2001::/32", "RFC 4380", Refused),
        ("2001:1::1/128", "RFC 7723", Refused), // as 192.0.0.9
        ("2001:1::2/128", "RFC 8155", Refused), // as 192.0.0.10
        ("2001:1::3/128", "RFC 9665", Refused), // the SRP server is the sender's network's
        ("2001:2::/48", "RFC 5180", Refused),
        ("2001:3::/32", "RFC 7450", Permitted),
        ("2001:4:112::/48", "RFC 7535", Permitted),
        ("2001:10::/28", "RFC 4843", Refused),
        ("2001:20::/28", "RFC 7343", Permitted),
        ("2001:30::/28", "RFC 9374", Permitted),
        ("2001:db8::/32", "RFC 3849", Refused),
        ("2002::/16", "RFC 3056", AsIpv4(80)),
        ("2620:4f:8000::/48", "RFC 7534", Permitted),
        ("3fff::/20", "RFC 9637", Refused),
        ("5f00::/16", "RFC 9602", Refused),
        ("fc00::/7", "RFC 4193", Refused),
        ("fe80::/10", "RFC 4291", Refused),
        ("fec0::/10", "RFC 3879", Refused),
        ("ff00::/8", "RFC 4291", Refused),
    ];

    fn net(cidr: &str) -> IpNet {
        cidr.parse().unwrap()
    }

    fn bits(a: IpAddr) -> u128 {
        match a {
            IpAddr::V4(v4) => u32::from(v4).into(),
            IpAddr::V6(v6) => v6.into(),
        }
    }

    /// The address of `like`'s family with these bits, if there is one.
    fn addr(like: IpAddr, bits: u128) -> Option<IpAddr> {
        match like {
            IpAddr::V4(_) => u32::try_from(bits).ok().map(|b| IpAddr::V4(b.into())),
            IpAddr::V6(_) => Some(IpAddr::V6(bits.into())),
        }
    }

    /// Whether the table refuses `a`: the most specific row holding it
    /// decides. None when no row holds it.
    fn table_refuses(a: IpAddr) -> Option<bool> {
        let &(_, _, verdict) = RANGES
            .iter()
            .filter(|(cidr, ..)| net(cidr).contains(&a))
            .max_by_key(|(cidr, ..)| net(cidr).prefix_len())?;
        Some(match verdict {
            Refused => true,
            Permitted => false,
            AsIpv4(shift) => {
                let v4 = IpAddr::V4(Ipv4Addr::from((bits(a) >> shift) as u32));
                assert_eq!(embedded_ipv4(a).map(IpAddr::V4), Some(v4), "{a} stands for {v4}");
                table_refuses(v4).unwrap_or(false)
            }
        })
    }

    #[test]
    fn special_purpose_registries_entry_by_entry() {
        let strict = NetworkPolicy::default();
        for &(cidr, rfc, _) in RANGES {
            let range = net(cidr);
            let (first, last) = (range.network(), range.broadcast());
            let middle = addr(first, bits(first) + (bits(last) - bits(first)) / 2).unwrap();
            for a in [first, middle, last] {
                let refuse = table_refuses(a).unwrap();
                assert_eq!(is_global(a), !refuse, "{a} in {cidr} ({rfc})");
                assert_eq!(strict.permits(a), !refuse, "{a} in {cidr} ({rfc})");
            }
            // Just outside: judged by the row holding it, permitted when none
            // does. IPv6 space outside 2000::/3 that no row holds is
            // unallocated, and this test makes no claim about it.
            let outside = [bits(first).checked_sub(1), bits(last).checked_add(1)];
            for b in outside.into_iter().flatten().filter_map(|b| addr(first, b)) {
                let refuse = match table_refuses(b) {
                    Some(refuse) => refuse,
                    None if b.is_ipv4() || net("2000::/3").contains(&b) => false,
                    None => continue,
                };
                assert_eq!(strict.permits(b), !refuse, "{b} next to {cidr} ({rfc})");
            }
        }
    }

    #[test]
    fn refuses_new_documentation_srv6_dummy_and_6to4_relay_ranges() {
        for a in [
            "3fff::",
            "3fff:fff:ffff:ffff:ffff:ffff:ffff:ffff",
            "5f00::1",
            "5f00:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            "100:0:0:1::1",
            "192.88.99.0",
            "192.88.99.1",
            "192.88.99.2",
            "192.88.99.255",
            "2002:c058:6301::1", // 6to4 of 192.88.99.1
        ] {
            assert!(!NetworkPolicy::default().permits(ip(a)), "{a} must be refused");
        }
        for a in ["3ffe:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "3fff:1000::", "192.88.98.255", "192.88.100.0"] {
            assert!(NetworkPolicy::default().permits(ip(a)), "{a} must be permitted");
        }
    }

    #[test]
    fn judges_the_parts_of_2001_23_by_global_reachability() {
        for a in ["2001:3::1", "2001:4:112::1", "2001:20::1", "2001:2f:ffff:ffff:ffff:ffff:ffff:ffff", "2001:30::1"] {
            assert!(NetworkPolicy::default().permits(ip(a)), "{a} must be permitted");
        }
        for a in
            ["2001::1", "2001:1::1", "2001:1::2", "2001:1::3", "2001:2::1", "2001:4:113::1", "2001:10::1", "2001:40::1"]
        {
            assert!(!NetworkPolicy::default().permits(ip(a)), "{a} must be refused");
        }
    }

    #[test]
    fn local_use_nat64_is_refused_whole() {
        // With a /48 translator prefix the IPv4 address is in bits 48 to 87,
        // here 10.0.0.1, whatever the last 32 bits say.
        for a in ["64:ff9b:1::808:808", "64:ff9b:1:a00:0:100:808:808", "64:ff9b:1:ffff:ffff:ffff:ffff:ffff"] {
            assert_eq!(embedded_ipv4(ip(a)), None, "{a}");
            assert!(!NetworkPolicy::default().permits(ip(a)), "{a} must be refused");
            assert!(!NetworkPolicy::default().allow_cidr("8.8.8.8/32").unwrap().permits(ip(a)), "{a}");
            assert!(NetworkPolicy::default().allow_cidr("64:ff9b:1::/48").unwrap().permits(ip(a)), "{a}");
        }
    }

    /// The IPv6 forms of `v4` the guard judges as `v4`.
    fn ipv6_forms(v4: Ipv4Addr) -> [(&'static str, IpAddr); 5] {
        let [a, b, c, d] = v4.octets();
        let (hi, lo) = (u16::from_be_bytes([a, b]), u16::from_be_bytes([c, d]));
        [
            ("mapped", Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, hi, lo)),
            ("translated", Ipv6Addr::new(0, 0, 0, 0, 0xffff, 0, hi, lo)),
            ("compatible", Ipv6Addr::new(0, 0, 0, 0, 0, 0, hi, lo)),
            ("NAT64", Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, hi, lo)),
            ("6to4", Ipv6Addr::new(0x2002, hi, lo, 0, 0, 0, 0, 1)),
        ]
        .map(|(form, v6)| (form, IpAddr::V6(v6)))
    }

    #[test]
    fn ipv6_forms_of_an_ipv4_address_are_judged_as_it() {
        for private in ["127.0.0.1", "10.0.0.1", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1"] {
            let v4: Ipv4Addr = private.parse().unwrap();
            for (form, v6) in ipv6_forms(v4) {
                assert_eq!(embedded_ipv4(v6), Some(v4), "{form} {v6}");
                assert!(!NetworkPolicy::default().permits(v6), "{form} {v6} of {private} must be refused");
            }
        }
        for public in ["8.8.8.8", "1.1.1.1"] {
            let v4: Ipv4Addr = public.parse().unwrap();
            for (form, v6) in ipv6_forms(v4) {
                assert_eq!(embedded_ipv4(v6), Some(v4), "{form} {v6}");
                assert!(NetworkPolicy::default().permits(v6), "{form} {v6} of {public} must be permitted");
            }
        }
        assert!(!NetworkPolicy::default().permits(ip("::ffff:0:127.0.0.1")));
        assert!(!NetworkPolicy::default().permits(ip("::ffff:0:10.0.0.1")));
    }

    #[test]
    fn an_ipv4_allow_list_entry_covers_its_ipv6_forms() {
        let loopback = Ipv4Addr::new(127, 0, 0, 1);
        for p in
            [NetworkPolicy::default().allow_loopback(), NetworkPolicy::default().allow_cidr("127.0.0.0/8").unwrap()]
        {
            for (form, v6) in ipv6_forms(loopback) {
                assert!(p.permits(v6), "{form} {v6}");
            }
            assert!(p.permits(ip("::ffff:0:127.0.0.1")));
            assert!(!p.permits(ip("::ffff:0:10.0.0.1")));
        }
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
