//! The PROXY protocol v2 (haproxy's `send-proxy-v2`, AWS NLB, GCP, nginx `proxy_protocol`
//! upstream): a binary header a TCP balancer writes at the start of each connection, naming
//! the client's address, before any TLS or HTTP byte. With `server.proxy_protocol: true`
//! every accepted connection must start with one:
//!
//! - it is read with a deadline ([`HEADER_TIMEOUT`], or `server.header_read_timeout` when
//!   shorter) and a size bound ([`MAX_PAYLOAD`] bytes after the 16 fixed ones), and nothing
//!   else is read before it ends, so TLS and HTTP start on the first byte after it;
//! - a connection without a valid header is closed unanswered (the balancer speaks the
//!   protocol or it is not the balancer), counted in
//!   `portcullis_proxy_protocol_refused_total{reason}` and logged at most once a minute;
//! - when `server.trusted_proxies` is set, only peers inside it may send one: any other
//!   peer's connection is refused before a byte is read;
//! - `LOCAL` (the balancer's own health checks) and the families that carry no IP address
//!   (`UNSPEC`, unix sockets) keep the TCP peer's address.
//!
//! Version 1 (the text form, `PROXY TCP4 ...`) is refused with a reason saying so.
//! The parser ([`parse`]) is a pure function of the bytes, fuzzed by `fuzz/fuzz_targets/proxy_protocol.rs`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt};

use super::client_addr::TrustedProxies;
use crate::telemetry::metrics::metrics;

/// The 12 bytes every v2 header starts with (chosen by the spec never to begin valid HTTP,
/// TLS or SSH).
pub const SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// Signature, version and command, family and protocol, payload length.
pub const FIXED_LEN: usize = 16;

/// The largest payload (addresses and TLVs) accepted. Two unix socket paths take 216 bytes;
/// the TLVs AWS (VPC endpoint id) and GCP (PSC connection id) add are tens of bytes, haproxy's
/// (unique id, TLS details) a few hundred at most. A longer one is refused unread.
pub const MAX_PAYLOAD: usize = 512;

/// How long a balancer may take to send the header (it sends it with its first packet).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// What the header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyHeader {
    /// `LOCAL`: the balancer's own connection (a health check); the TCP peer is the client.
    Local,
    /// `PROXY` over TCP: the client's address and the one it connected to.
    Proxied {
        source: SocketAddr,
        destination: SocketAddr,
    },
    /// `PROXY` with no IP addresses (`UNSPEC`, unix sockets): the TCP peer is the client.
    NoAddress,
}

/// Why a connection was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    #[error("the connection did not start with a PROXY protocol v2 header (server.proxy_protocol is on)")]
    NoSignature,
    #[error(
        "a PROXY protocol v1 (text) header: only version 2 is accepted (haproxy: send-proxy-v2)"
    )]
    Version1,
    #[error("PROXY protocol version {0} (only 2 is accepted)")]
    Version(u8),
    #[error("unknown PROXY protocol command {0:#x}")]
    Command(u8),
    #[error("unsupported address family and protocol {0:#04x} (TCP over IPv4 or IPv6 only)")]
    Family(u8),
    #[error("a header of {0} bytes after the fixed part, over the limit of {MAX_PAYLOAD}")]
    TooLong(usize),
    #[error("an address block of {got} bytes where its family needs {need}")]
    Short { got: usize, need: usize },
    #[error("the connection ended inside the PROXY protocol header")]
    Truncated,
    #[error("no complete PROXY protocol header within {0:?}")]
    Timeout(Duration),
    #[error(
        "the peer is not in server.trusted_proxies, so its PROXY protocol header is not believed"
    )]
    Untrusted,
    #[error("reading the PROXY protocol header failed: {0}")]
    Io(String),
}

impl ProxyError {
    /// The `reason` label of the refusal metric.
    pub fn label(&self) -> &'static str {
        match self {
            ProxyError::NoSignature | ProxyError::Version1 | ProxyError::Version(_) => "no_header",
            ProxyError::Command(_) | ProxyError::Family(_) | ProxyError::Short { .. } => {
                "malformed"
            }
            ProxyError::TooLong(_) => "too_long",
            ProxyError::Truncated | ProxyError::Io(_) => "closed",
            ProxyError::Timeout(_) => "timeout",
            ProxyError::Untrusted => "untrusted",
        }
    }

    /// Every label, for series that exist from start-up.
    pub const LABELS: [&'static str; 6] = [
        "no_header",
        "malformed",
        "too_long",
        "closed",
        "timeout",
        "untrusted",
    ];
}

/// Check the bytes received so far against the signature: a plain HTTP or TLS client is
/// refused on its first byte, not after the timeout.
fn check_prefix(bytes: &[u8]) -> Result<(), ProxyError> {
    let n = bytes.len().min(SIGNATURE.len());
    if bytes[..n] == SIGNATURE[..n] {
        return Ok(());
    }
    if bytes.first() == Some(&b'P') {
        return Err(ProxyError::Version1);
    }
    Err(ProxyError::NoSignature)
}

/// The payload length the 16 fixed bytes announce, once they are checked.
fn payload_len(fixed: &[u8]) -> Result<usize, ProxyError> {
    check_prefix(&fixed[..SIGNATURE.len()])?;
    let version = fixed[12] >> 4;
    if version != 2 {
        return Err(ProxyError::Version(version));
    }
    let command = fixed[12] & 0x0f;
    if command > 1 {
        return Err(ProxyError::Command(command));
    }
    let len = usize::from(u16::from_be_bytes([fixed[14], fixed[15]]));
    if len > MAX_PAYLOAD {
        return Err(ProxyError::TooLong(len));
    }
    Ok(len)
}

/// Parse a header at the start of `bytes`: what it says and how many bytes it took. Pure; the
/// bytes after it are not looked at.
pub fn parse(bytes: &[u8]) -> Result<(ProxyHeader, usize), ProxyError> {
    if bytes.len() < FIXED_LEN {
        check_prefix(bytes)?;
        return Err(ProxyError::Truncated);
    }
    let len = payload_len(&bytes[..FIXED_LEN])?;
    let total = FIXED_LEN + len;
    let Some(payload) = bytes.get(FIXED_LEN..total) else {
        return Err(ProxyError::Truncated);
    };
    if bytes[12] & 0x0f == 0 {
        // LOCAL: the spec says to ignore the family and the addresses.
        return Ok((ProxyHeader::Local, total));
    }
    let family = bytes[13];
    let need = |need: usize| {
        if payload.len() < need {
            Err(ProxyError::Short {
                got: payload.len(),
                need,
            })
        } else {
            Ok(())
        }
    };
    let port = |at: usize| u16::from_be_bytes([payload[at], payload[at + 1]]);
    let header = match family {
        // AF_UNSPEC.
        0x00 => ProxyHeader::NoAddress,
        // TCP over IPv4: source, destination, source port, destination port.
        0x11 => {
            need(12)?;
            let ip = |at: usize| {
                IpAddr::V4(Ipv4Addr::new(
                    payload[at],
                    payload[at + 1],
                    payload[at + 2],
                    payload[at + 3],
                ))
            };
            ProxyHeader::Proxied {
                source: SocketAddr::new(ip(0), port(8)),
                destination: SocketAddr::new(ip(4), port(10)),
            }
        }
        // TCP over IPv6.
        0x21 => {
            need(36)?;
            let ip = |at: usize| {
                let mut octets = [0u8; 16];
                octets.copy_from_slice(&payload[at..at + 16]);
                IpAddr::V6(Ipv6Addr::from(octets)).to_canonical()
            };
            ProxyHeader::Proxied {
                source: SocketAddr::new(ip(0), port(32)),
                destination: SocketAddr::new(ip(16), port(34)),
            }
        }
        // Unix stream sockets: two 108-byte paths, no IP address.
        0x31 => {
            need(216)?;
            ProxyHeader::NoAddress
        }
        other => return Err(ProxyError::Family(other)),
    };
    Ok((header, total))
}

/// Read one header off `stream`, byte-exact (nothing after it is consumed), within `timeout`.
pub async fn read<S>(stream: &mut S, timeout: Duration) -> Result<ProxyHeader, ProxyError>
where
    S: AsyncRead + Unpin,
{
    tokio::time::timeout(timeout, read_header(stream))
        .await
        .map_err(|_| ProxyError::Timeout(timeout))?
}

async fn read_header<S>(stream: &mut S) -> Result<ProxyHeader, ProxyError>
where
    S: AsyncRead + Unpin,
{
    let mut bytes = [0u8; FIXED_LEN + MAX_PAYLOAD];
    let mut got = 0;
    while got < FIXED_LEN {
        let n = stream
            .read(&mut bytes[got..FIXED_LEN])
            .await
            .map_err(|e| ProxyError::Io(e.to_string()))?;
        if n == 0 {
            return Err(ProxyError::Truncated);
        }
        got += n;
        check_prefix(&bytes[..got])?;
    }
    let total = FIXED_LEN + payload_len(&bytes[..FIXED_LEN])?;
    stream
        .read_exact(&mut bytes[FIXED_LEN..total])
        .await
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => ProxyError::Truncated,
            _ => ProxyError::Io(e.to_string()),
        })?;
    parse(&bytes[..total]).map(|(header, _)| header)
}

/// The client address of a connection from `peer` on a `server.proxy_protocol` listener:
/// the header's source, or `peer` for `LOCAL` and address-less headers. Refused connections
/// are counted and logged here; the caller closes them.
pub async fn accept<S>(
    stream: &mut S,
    peer: SocketAddr,
    trusted: &TrustedProxies,
    timeout: Duration,
) -> Result<SocketAddr, ProxyError>
where
    S: AsyncRead + Unpin,
{
    let result = if !trusted.is_empty() && !trusted.contains(peer.ip()) {
        Err(ProxyError::Untrusted)
    } else {
        read(stream, timeout).await
    };
    match result {
        Ok(ProxyHeader::Proxied { source, .. }) => Ok(source),
        Ok(ProxyHeader::Local | ProxyHeader::NoAddress) => Ok(peer),
        Err(error) => {
            metrics().proxy_protocol_refused(error.label());
            REFUSALS.note(peer, &error);
            Err(error)
        }
    }
}

/// At most one WARN a minute about refused connections, saying how many were not logged.
struct RateLimited {
    state: Mutex<(Option<Instant>, u64)>,
}

const LOG_INTERVAL: Duration = Duration::from_secs(60);

static REFUSALS: RateLimited = RateLimited {
    state: Mutex::new((None, 0)),
};

impl RateLimited {
    fn note(&self, peer: SocketAddr, error: &ProxyError) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (last, suppressed) = &mut *state;
        if last.is_none_or(|at| at.elapsed() >= LOG_INTERVAL) {
            tracing::warn!(
                peer = %peer,
                reason = error.label(),
                not_logged_since_last = *suppressed,
                "connection refused: {error} (at most one such line a minute; portcullis_proxy_protocol_refused_total counts them all)"
            );
            *last = Some(Instant::now());
            *suppressed = 0;
        } else {
            *suppressed += 1;
            tracing::debug!(peer = %peer, reason = error.label(), "connection refused: {error}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A v2 header: `command` 0 (LOCAL) or 1 (PROXY), `family`, `payload`.
    pub fn header(command: u8, family: u8, payload: &[u8]) -> Vec<u8> {
        let mut bytes = SIGNATURE.to_vec();
        bytes.push(0x20 | command);
        bytes.push(family);
        bytes.extend_from_slice(&u16::try_from(payload.len()).unwrap().to_be_bytes());
        bytes.extend_from_slice(payload);
        bytes
    }

    fn tcp4(source: [u8; 4], sport: u16, dest: [u8; 4], dport: u16) -> Vec<u8> {
        let mut payload = Vec::new();
        payload.extend_from_slice(&source);
        payload.extend_from_slice(&dest);
        payload.extend_from_slice(&sport.to_be_bytes());
        payload.extend_from_slice(&dport.to_be_bytes());
        payload
    }

    #[test]
    fn tcp4_names_the_client() {
        let mut bytes = header(1, 0x11, &tcp4([192, 0, 2, 7], 40000, [10, 0, 0, 1], 443));
        let len = bytes.len();
        bytes.extend_from_slice(b"GET / HTTP/1.1\r\n");
        let (parsed, used) = parse(&bytes).unwrap();
        assert_eq!(used, len);
        assert_eq!(
            parsed,
            ProxyHeader::Proxied {
                source: "192.0.2.7:40000".parse().unwrap(),
                destination: "10.0.0.1:443".parse().unwrap(),
            }
        );
    }

    #[test]
    fn tcp6_with_tlvs_names_the_client() {
        let mut payload = Vec::new();
        payload.extend_from_slice(&"2001:db8::7".parse::<Ipv6Addr>().unwrap().octets());
        payload.extend_from_slice(&"::ffff:10.0.0.1".parse::<Ipv6Addr>().unwrap().octets());
        payload.extend_from_slice(&5000u16.to_be_bytes());
        payload.extend_from_slice(&443u16.to_be_bytes());
        // An AWS VPC endpoint TLV (type 0xEA).
        payload.extend_from_slice(&[0xEA, 0, 5, 1, b'v', b'p', b'c', b'e']);
        let (parsed, _) = parse(&header(1, 0x21, &payload)).unwrap();
        assert_eq!(
            parsed,
            ProxyHeader::Proxied {
                source: "[2001:db8::7]:5000".parse().unwrap(),
                destination: "10.0.0.1:443".parse().unwrap(),
            }
        );
    }

    #[test]
    fn local_and_unspec_keep_the_peer() {
        assert_eq!(parse(&header(0, 0x00, &[])).unwrap().0, ProxyHeader::Local);
        // LOCAL ignores whatever addresses it carries.
        assert_eq!(
            parse(&header(0, 0x11, &[1, 2])).unwrap().0,
            ProxyHeader::Local
        );
        assert_eq!(
            parse(&header(1, 0x00, &[])).unwrap().0,
            ProxyHeader::NoAddress
        );
        assert_eq!(
            parse(&header(1, 0x31, &[0; 216])).unwrap().0,
            ProxyHeader::NoAddress
        );
    }

    #[test]
    fn bad_headers_are_refused_with_their_reason() {
        assert_eq!(
            parse(b"GET / HTTP/1.1\r\n\r\n"),
            Err(ProxyError::NoSignature)
        );
        assert_eq!(parse(&[0x16, 3, 1]), Err(ProxyError::NoSignature));
        assert_eq!(
            parse(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n"),
            Err(ProxyError::Version1)
        );
        assert_eq!(parse(&SIGNATURE[..5]), Err(ProxyError::Truncated));
        let mut v1 = header(1, 0x11, &tcp4([1, 2, 3, 4], 1, [5, 6, 7, 8], 2));
        v1[12] = 0x11;
        assert_eq!(parse(&v1), Err(ProxyError::Version(1)));
        let mut cmd = v1.clone();
        cmd[12] = 0x25;
        assert_eq!(parse(&cmd), Err(ProxyError::Command(5)));
        assert_eq!(
            parse(&header(1, 0x12, &[0; 12])),
            Err(ProxyError::Family(0x12))
        );
        assert_eq!(
            parse(&header(1, 0x11, &[0; 11])),
            Err(ProxyError::Short { got: 11, need: 12 })
        );
        assert_eq!(
            parse(&header(1, 0x21, &[0; 12])),
            Err(ProxyError::Short { got: 12, need: 36 })
        );
        let mut long = header(1, 0x11, &[0; 12]);
        long[14..16].copy_from_slice(&513u16.to_be_bytes());
        assert_eq!(parse(&long), Err(ProxyError::TooLong(513)));
        let mut cut = header(1, 0x11, &[0; 12]);
        cut.truncate(20);
        assert_eq!(parse(&cut), Err(ProxyError::Truncated));
    }

    #[tokio::test]
    async fn read_takes_the_header_and_nothing_after_it() {
        let mut bytes = header(1, 0x11, &tcp4([192, 0, 2, 7], 1, [10, 0, 0, 1], 2));
        bytes.extend_from_slice(b"\x16\x03\x01rest");
        let mut reader = &bytes[..];
        let parsed = read(&mut reader, Duration::from_secs(1)).await.unwrap();
        assert!(matches!(parsed, ProxyHeader::Proxied { .. }));
        assert_eq!(reader, b"\x16\x03\x01rest");
    }

    #[tokio::test]
    async fn a_silent_peer_times_out() {
        let (mut client, mut server) = tokio::io::duplex(64);
        use tokio::io::AsyncWriteExt;
        client.write_all(&SIGNATURE[..4]).await.unwrap();
        let got = read(&mut server, Duration::from_millis(100)).await;
        assert_eq!(got, Err(ProxyError::Timeout(Duration::from_millis(100))));
    }
}
