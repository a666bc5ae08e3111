//! The client's real address behind a load balancer: `server.trusted_proxies` and the
//! `X-Forwarded-For` header.
//!
//! Everything that keys on the client (brute-force bans, the stripped-header detector,
//! per-client limits, the audit and access logs) reads [`super::ClientAddr`], which is what
//! [`resolve`] gives. The rule:
//! - the peer (the TCP peer, or the source the PROXY protocol header named) is not in
//!   `server.trusted_proxies` (or the list is empty): the peer is the client, whatever the
//!   request says;
//! - it is trusted: the `X-Forwarded-For` entries (several such headers are one list, in
//!   order) are read from the right, each trusted address skipped as one more hop of ours;
//!   the first untrusted one is the client. When every entry is trusted, the leftmost is.
//!   Entries left of the client are the client's own words and are not even parsed;
//! - a trusted peer that sent no `X-Forwarded-For`, or one with an entry that is not an
//!   address right of the client, means the peer itself (logged once per process, escaped):
//!   a hop that does not forward the address is a misconfiguration, not a reason to believe
//!   the rest of the header.
//!
//! `Forwarded` (RFC 7239) and `X-Real-IP` are ignored: no balancer we test against needs them,
//! and two headers naming the client could disagree.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use http::HeaderMap;

/// The header the balancer appends the address it saw to.
pub const X_FORWARDED_FOR: &str = "x-forwarded-for";

/// An address block such as `10.0.0.0/8` or `fd00::/8`; a bare address is a block of one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Whether `ip` is inside the block (an IPv4-mapped IPv6 address counts as its IPv4
    /// address, as the kernel hands them to a dual-stack listener).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = mask32(self.prefix);
                u32::from(ip) & mask == u32::from(net)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = mask128(self.prefix);
                u128::from(ip) & mask == u128::from(net)
            }
            _ => false,
        }
    }
}

fn mask32(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

fn mask128(prefix: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0)
}

impl FromStr for Cidr {
    type Err = String;

    /// `ADDRESS/PREFIX` with no host bits set, or a bare `ADDRESS`.
    fn from_str(text: &str) -> Result<Cidr, String> {
        let text = text.trim();
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let network: IpAddr = address.parse().map_err(|_| {
            format!(
                "{text:?} is not an address block: write e.g. 10.0.0.0/8, 192.168.1.7 or fd00::/8"
            )
        })?;
        let network = network.to_canonical();
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => match p.parse::<u8>() {
                Ok(n) if n <= max && p.bytes().all(|b| b.is_ascii_digit()) => n,
                _ => {
                    return Err(format!(
                        "{text:?}: the prefix length must be a number from 0 to {max}"
                    ))
                }
            },
        };
        let masked = match network {
            IpAddr::V4(ip) => IpAddr::V4(Ipv4Addr::from(u32::from(ip) & mask32(prefix))),
            IpAddr::V6(ip) => IpAddr::V6(Ipv6Addr::from(u128::from(ip) & mask128(prefix))),
        };
        if masked != network {
            return Err(format!(
                "{text:?} has host bits set: the block is {masked}/{prefix} (write that, or the address alone)"
            ));
        }
        Ok(Cidr { network, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// `server.trusted_proxies`: the balancers and proxies whose word about the client is taken.
/// Shared by every connection (cloning is a reference count).
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Arc<[Cidr]>);

impl TrustedProxies {
    pub fn new(blocks: Vec<Cidr>) -> TrustedProxies {
        TrustedProxies(blocks.into())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|block| block.contains(ip))
    }

    pub fn blocks(&self) -> &[Cidr] {
        &self.0
    }
}

/// Why a trusted peer's `X-Forwarded-For` was not used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    /// The trusted peer sent none.
    Missing,
    /// An entry right of the client is not an address.
    Malformed,
}

/// The client of a request from `peer` with `headers` (see the module documentation). An
/// address from `X-Forwarded-For` has port 0: the balancer does not say the client's port.
pub fn resolve(peer: SocketAddr, headers: &HeaderMap, trusted: &TrustedProxies) -> SocketAddr {
    let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
    if trusted.is_empty() || !trusted.contains(peer.ip()) {
        return peer;
    }
    match from_forwarded_for(headers, trusted) {
        Ok(ip) => SocketAddr::new(ip, 0),
        Err(fallback) => {
            note_fallback(peer, headers, fallback);
            peer
        }
    }
}

/// The first untrusted address of the `X-Forwarded-For` list, read from the right.
pub fn from_forwarded_for(
    headers: &HeaderMap,
    trusted: &TrustedProxies,
) -> Result<IpAddr, Fallback> {
    let mut leftmost = None;
    for value in headers.get_all(X_FORWARDED_FOR).iter().rev() {
        let value = value.to_str().map_err(|_| Fallback::Malformed)?;
        for entry in value.rsplit(',') {
            let entry = entry.trim();
            if entry.is_empty() {
                continue;
            }
            let ip = parse_entry(entry).ok_or(Fallback::Malformed)?;
            if !trusted.contains(ip) {
                return Ok(ip);
            }
            leftmost = Some(ip);
        }
    }
    leftmost.ok_or(Fallback::Missing)
}

/// One `X-Forwarded-For` entry: `1.2.3.4`, `1.2.3.4:5678`, `::1`, `[::1]` or `[::1]:5678`.
fn parse_entry(entry: &str) -> Option<IpAddr> {
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    if let Ok(address) = entry.parse::<SocketAddr>() {
        return Some(address.ip().to_canonical());
    }
    let inner = entry.strip_prefix('[')?.strip_suffix(']')?;
    inner
        .parse::<Ipv6Addr>()
        .ok()
        .map(|ip| IpAddr::V6(ip).to_canonical())
}

static MISSING_LOGGED: AtomicBool = AtomicBool::new(false);
static MALFORMED_LOGGED: AtomicBool = AtomicBool::new(false);

/// Say once per process (per kind) that a trusted peer's header was not usable; later ones at
/// DEBUG. The header's value is client-controlled: logged escaped, and only its first bytes.
fn note_fallback(peer: SocketAddr, headers: &HeaderMap, fallback: Fallback) {
    let flag = match fallback {
        Fallback::Missing => &MISSING_LOGGED,
        Fallback::Malformed => &MALFORMED_LOGGED,
    };
    let values: Vec<String> = headers
        .get_all(X_FORWARDED_FOR)
        .iter()
        .map(|v| String::from_utf8_lossy(&v.as_bytes()[..v.len().min(200)]).into_owned())
        .collect();
    if !flag.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            peer = %peer,
            x_forwarded_for = ?values,
            problem = ?fallback,
            "a peer in server.trusted_proxies sent no usable X-Forwarded-For: the peer's own address is the client (logged once per process)"
        );
    } else {
        tracing::debug!(peer = %peer, x_forwarded_for = ?values, problem = ?fallback, "no usable X-Forwarded-For from a trusted peer");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trusted(blocks: &[&str]) -> TrustedProxies {
        TrustedProxies::new(blocks.iter().map(|b| b.parse().unwrap()).collect())
    }

    fn headers(values: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for v in values {
            map.append(X_FORWARDED_FOR, v.parse().unwrap());
        }
        map
    }

    fn peer(ip: &str) -> SocketAddr {
        SocketAddr::new(ip.parse().unwrap(), 4000)
    }

    #[test]
    fn blocks_parse_and_contain() {
        let block: Cidr = "10.0.0.0/8".parse().unwrap();
        assert!(block.contains("10.200.3.4".parse().unwrap()));
        assert!(!block.contains("11.0.0.1".parse().unwrap()));
        assert!(block.contains("::ffff:10.1.1.1".parse().unwrap()));
        let v6: Cidr = "fd00::/8".parse().unwrap();
        assert!(v6.contains("fd12::1".parse().unwrap()));
        assert!(!v6.contains("10.0.0.1".parse().unwrap()));
        let one: Cidr = "192.168.1.7".parse().unwrap();
        assert_eq!(one.to_string(), "192.168.1.7/32");
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("8.8.8.8".parse().unwrap()));
        let all6: Cidr = "::/0".parse().unwrap();
        assert!(all6.contains("2001:db8::1".parse().unwrap()));
    }

    #[test]
    fn bad_blocks_are_refused_with_the_fix() {
        for bad in [
            "10.0.0.0/33",
            "10.0.0.0/",
            "10.0.0/8",
            "fd00::/129",
            "x",
            "",
            "10.0.0.0/+8",
            "10.0.0.0/08x",
            "10.0.0.0/8/8",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad:?} accepted");
        }
        let err = "10.0.0.1/8".parse::<Cidr>().unwrap_err();
        assert!(err.contains("10.0.0.0/8"), "{err}");
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_sends() {
        let t = trusted(&["10.0.0.0/8"]);
        let got = resolve(peer("203.0.113.9"), &headers(&["1.2.3.4"]), &t);
        assert_eq!(got, peer("203.0.113.9"));
        let none = TrustedProxies::default();
        assert_eq!(
            resolve(peer("10.0.0.1"), &headers(&["1.2.3.4"]), &none),
            peer("10.0.0.1")
        );
    }

    #[test]
    fn the_list_is_read_from_the_right_skipping_trusted_hops() {
        let t = trusted(&["10.0.0.0/8", "fd00::/8"]);
        let h = headers(&["6.6.6.6, 198.51.100.7, 10.1.1.1", "fd00::2"]);
        assert_eq!(
            from_forwarded_for(&h, &t),
            Ok("198.51.100.7".parse().unwrap())
        );
        // Several headers are one list: the last header's entries are the rightmost.
        let h = headers(&["198.51.100.7", "10.0.0.5, 10.0.0.6"]);
        assert_eq!(
            from_forwarded_for(&h, &t),
            Ok("198.51.100.7".parse().unwrap())
        );
        // Garbage left of the client is the client's own business.
        let h = headers(&["not-an-ip, 198.51.100.7, 10.0.0.5"]);
        assert_eq!(
            from_forwarded_for(&h, &t),
            Ok("198.51.100.7".parse().unwrap())
        );
        // Ports and brackets.
        let h = headers(&["[2001:db8::1]:443, 198.51.100.7:5000"]);
        assert_eq!(
            from_forwarded_for(&h, &t),
            Ok("198.51.100.7".parse().unwrap())
        );
        let h = headers(&["[2001:db8::1]"]);
        assert_eq!(
            from_forwarded_for(&h, &t),
            Ok("2001:db8::1".parse().unwrap())
        );
        // Every hop trusted: the leftmost.
        let h = headers(&["10.0.0.9, 10.0.0.5"]);
        assert_eq!(from_forwarded_for(&h, &t), Ok("10.0.0.9".parse().unwrap()));
    }

    #[test]
    fn missing_or_malformed_from_a_trusted_peer_means_the_peer() {
        let t = trusted(&["10.0.0.0/8"]);
        let p = peer("10.0.0.1");
        assert_eq!(
            from_forwarded_for(&headers(&[]), &t),
            Err(Fallback::Missing)
        );
        assert_eq!(resolve(p, &headers(&[]), &t), p);
        for bad in [
            "unknown",
            "1.2.3.4, 10.0.0.2 junk",
            "1.2.3.4:99999",
            "_hidden",
            "1.2.3.4.5",
        ] {
            assert_eq!(
                from_forwarded_for(&headers(&[bad]), &t),
                Err(Fallback::Malformed),
                "{bad:?}"
            );
            assert_eq!(resolve(p, &headers(&[bad]), &t), p, "{bad:?}");
        }
        let mut h = HeaderMap::new();
        h.append(
            X_FORWARDED_FOR,
            http::HeaderValue::from_bytes(b"1.2.3.4\xff").unwrap(),
        );
        assert_eq!(from_forwarded_for(&h, &t), Err(Fallback::Malformed));
    }

    #[test]
    fn forwarded_is_ignored() {
        let t = trusted(&["10.0.0.0/8"]);
        let mut h = HeaderMap::new();
        h.append("forwarded", "for=198.51.100.7".parse().unwrap());
        assert_eq!(resolve(peer("10.0.0.1"), &h, &t), peer("10.0.0.1"));
    }
}
