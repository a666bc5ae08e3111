//! HTTP/1.1 written byte for byte: request targets no client library would send as they are
//! (`%2F`, dot segments, absolute form, repeated parameters), to see what a gateway and a
//! registry each make of them.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// One request, sent exactly as given (with `Host`, `Content-Length` and `Connection: close`
/// added).
#[derive(Clone, Debug)]
pub struct RawRequest {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawRequest {
    pub fn new(method: &str, target: &str) -> RawRequest {
        RawRequest {
            method: method.into(),
            target: target.into(),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> RawRequest {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn bearer(self, token: &str) -> RawRequest {
        self.header("Authorization", &format!("Bearer {token}"))
    }

    pub fn body(mut self, body: &[u8]) -> RawRequest {
        self.body = body.to_vec();
        self
    }

    /// Send to `127.0.0.1:port` and read the answer to the end.
    pub fn send(&self, port: u16) -> RawReply {
        self.send_after(port, &[])
    }

    /// Like [`RawRequest::send`], with `prefix` written first (a PROXY protocol header).
    pub fn send_after(&self, port: u16, prefix: &[u8]) -> RawReply {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        stream.write_all(prefix).unwrap();
        let mut head = format!(
            "{} {} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n",
            self.method, self.target
        );
        for (name, value) in &self.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        if !self.body.is_empty() || matches!(self.method.as_str(), "POST" | "PUT" | "PATCH") {
            head.push_str(&format!("Content-Length: {}\r\n", self.body.len()));
        }
        head.push_str("\r\n");
        // A gateway that refuses the prefix closes at once, and the kernel may then reset the
        // connection under these writes: that is an answer too (none, status 0), not a failure.
        let _ = stream
            .write_all(head.as_bytes())
            .and_then(|()| stream.write_all(&self.body));
        let mut bytes = Vec::new();
        let _ = stream.read_to_end(&mut bytes);
        RawReply::parse(&bytes, self.method == "HEAD")
    }
}

/// An answer as it came off the wire; `status` 0 when there was none.
#[derive(Debug, Default)]
pub struct RawReply {
    pub status: u16,
    /// Lower-cased names, in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawReply {
    fn parse(bytes: &[u8], head_only: bool) -> RawReply {
        let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") else {
            return RawReply::default();
        };
        let head = String::from_utf8_lossy(&bytes[..end]);
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .and_then(|line| line.split(' ').nth(1))
            .and_then(|code| code.parse().ok())
            .unwrap_or(0);
        let headers: Vec<(String, String)> = lines
            .filter_map(|line| line.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let mut body = bytes[end + 4..].to_vec();
        let chunked = headers
            .iter()
            .any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
        if chunked && !head_only {
            body = dechunk(&body);
        }
        RawReply {
            status,
            headers,
            body,
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(line_end) = body.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&body[..line_end])
            .ok()
            .and_then(|s| usize::from_str_radix(s.split(';').next().unwrap().trim(), 16).ok())
            .unwrap_or(0);
        if size == 0 {
            break;
        }
        let start = line_end + 2;
        let Some(chunk) = body.get(start..start + size) else {
            break;
        };
        out.extend_from_slice(chunk);
        body = body.get(start + size + 2..).unwrap_or_default();
    }
    out
}

/// The PROXY protocol v2 signature.
pub const PROXY_V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// A PROXY protocol v2 header as a balancer writes it: `command` 0 (LOCAL) or 1 (PROXY),
/// `family` (0x11 TCP over IPv4, 0x21 over IPv6, 0x00 unspecified) and its payload.
pub fn proxy_v2(command: u8, family: u8, payload: &[u8]) -> Vec<u8> {
    let mut bytes = PROXY_V2_SIGNATURE.to_vec();
    bytes.push(0x20 | command);
    bytes.push(family);
    bytes.extend_from_slice(&u16::try_from(payload.len()).unwrap().to_be_bytes());
    bytes.extend_from_slice(payload);
    bytes
}

/// A PROXY header saying the connection came from `source` to `destination` (same family).
pub fn proxy_v2_from(source: std::net::SocketAddr, destination: std::net::SocketAddr) -> Vec<u8> {
    use std::net::IpAddr;
    let mut payload = Vec::new();
    let family = match (source.ip(), destination.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            payload.extend_from_slice(&s.octets());
            payload.extend_from_slice(&d.octets());
            0x11
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            payload.extend_from_slice(&s.octets());
            payload.extend_from_slice(&d.octets());
            0x21
        }
        _ => panic!("source and destination of one family"),
    };
    payload.extend_from_slice(&source.port().to_be_bytes());
    payload.extend_from_slice(&destination.port().to_be_bytes());
    proxy_v2(1, family, &payload)
}

/// What became of a connection that sent some bytes and then waited.
#[derive(Debug)]
pub struct Ending {
    /// The server closed (or reset) it after this long; `None` if it was still open at the
    /// limit.
    pub closed_after: Option<Duration>,
    /// What the server sent before closing.
    pub received: Vec<u8>,
}

/// Connect to `127.0.0.1:port`, write `bytes` (and keep the connection open, sending nothing
/// more), and wait up to `limit` for the server to close it.
pub fn send_and_wait(port: u16, bytes: &[u8], limit: Duration) -> Ending {
    let started = std::time::Instant::now();
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    // A server that closes before reading everything resets; that is an ending too.
    let _ = stream.write_all(bytes);
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        let left = limit.saturating_sub(started.elapsed());
        if left.is_zero() {
            return Ending {
                closed_after: None,
                received,
            };
        }
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => received.extend_from_slice(&buffer[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Ending {
                    closed_after: None,
                    received,
                }
            }
            Err(_) => break,
        }
    }
    Ending {
        closed_after: Some(started.elapsed()),
        received,
    }
}
