//! The access log's line, formatted and written without tracing's generic machinery.
//!
//! One line per request is the gateway's most frequent piece of work after moving bytes:
//! through `tracing-subscriber`'s fmt layer it cost about a quarter of the gateway's CPU on a
//! small request (field visitors, `fmt` for every value, a timestamp formatted from scratch).
//! When the binary installed the subscriber itself ([`install`]), the access line is written
//! here instead, byte for byte the line that subscriber would have written (text or JSON), into
//! a reused per-thread buffer, with the date part of the timestamp formatted once a second,
//! and sent to stderr in one `write`, as the subscriber does, but through a duplicate of the
//! descriptor rather than `std::io::stderr()`'s lock: under load the worker threads queued on
//! that lock (futex waits and context switches), while the kernel keeps one `write` of a line
//! whole on its own. On the server's worker threads the lines are gathered and written a few
//! at a time, after the answers (`gather`).
//!
//! Filtering stays with tracing: the line is written only if an INFO event of the
//! `portcullis::access` target is enabled (`RUST_LOG`, `log.level`). Where no subscriber of ours
//! is installed (the gateway embedded in another program) or stderr is a terminal (colours),
//! the access log is an ordinary tracing event.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::fs::File;
use std::io::Write;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::config::LogFormat;

/// How and where the access line is written, chosen once by [`install`].
static OUTPUT: OnceLock<(LogFormat, File)> = OnceLock::new();

/// The binary installed its own plain (no colour) subscriber with `format`, writing to stderr:
/// write access lines directly in that format, to the same place. (If stderr cannot be
/// duplicated, the access log stays a tracing event.)
pub fn install(format: LogFormat) {
    if let Ok(stderr) = std::io::stderr().as_fd().try_clone_to_owned() {
        let _ = OUTPUT.set((format, File::from(stderr)));
    }
}

/// What one access line says.
pub struct AccessLine<'a> {
    pub client: Option<SocketAddr>,
    pub method: &'a str,
    pub path: &'a str,
    pub version: http::Version,
    pub status: u16,
    pub elapsed: Duration,
    pub user: &'a str,
    /// Why the gateway refused the request (absent when it did not).
    pub reason: Option<&'a str>,
    /// The TCP peer (the balancer) when it is not the client (PROXY protocol, a trusted
    /// proxy's X-Forwarded-For); absent otherwise.
    pub peer: Option<SocketAddr>,
}

/// Log one request: directly when [`install`] was called, through tracing otherwise.
pub fn log(line: &AccessLine<'_>) {
    if !tracing::enabled!(target: "portcullis::access", tracing::Level::INFO) {
        return;
    }
    let Some((format, file)) = OUTPUT.get() else {
        return log_with_tracing(line);
    };
    BUFFER.with(|buffer| {
        let Ok(mut buffer) = buffer.try_borrow_mut() else {
            return log_with_tracing(line);
        };
        let Buffer { text, clock } = &mut *buffer;
        let now = SystemTime::now();
        let timestamp = clock.timestamp(now);
        let make = |out: &mut Vec<u8>| match format {
            LogFormat::Text => line.text(out, timestamp),
            LogFormat::Json => line.json(out, timestamp),
        };
        // Made straight into the worker's gathered lines (see `gather`); elsewhere one write,
        // as tracing-subscriber does. A failed log write is not the request's error.
        if let Some(make) = super::gather::push_with(now, make) {
            text.clear();
            make(text);
            let mut output: &File = file;
            let _ = output.write_all(text);
        }
    });
}

/// Where access lines go, once [`install`] chose it.
pub(super) fn output() -> Option<&'static File> {
    OUTPUT.get().map(|(_, file)| file)
}

fn log_with_tracing(line: &AccessLine<'_>) {
    tracing::info!(
        target: "portcullis::access",
        client = %Client(line.client),
        method = %line.method,
        path = %line.path,
        version = ?line.version,
        status = line.status,
        duration_ms = Millis(line.elapsed).as_f64(),
        user = line.user,
        reason = line.reason,
        peer = line.peer.map(tracing::field::display),
        "request"
    );
}

impl AccessLine<'_> {
    /// tracing-subscriber's `Full` text format: `<time>  INFO portcullis::access: request k=v...`
    /// (`&str` fields are recorded with `Debug`, so they are quoted).
    ///
    /// Written piece by piece, not through `write!`: `core::fmt`'s machinery for the line's
    /// nine arguments was 4% of a small request's instructions (callgrind). Byte for byte the
    /// same line (the tests below compare it with the `fmt` forms).
    fn text(&self, out: &mut Vec<u8>, timestamp: Timestamp<'_>) {
        timestamp.push(out);
        out.extend_from_slice(b"  INFO portcullis::access: request client=");
        Client(self.client).push(out);
        out.extend_from_slice(b" method=");
        out.extend_from_slice(self.method.as_bytes());
        out.extend_from_slice(b" path=");
        out.extend_from_slice(self.path.as_bytes());
        out.extend_from_slice(b" version=");
        push_version(out, self.version);
        out.extend_from_slice(b" status=");
        push_decimal(out, u64::from(self.status));
        out.extend_from_slice(b" duration_ms=");
        Millis(self.elapsed).push(out);
        out.extend_from_slice(b" user=");
        push_debug_str(out, self.user);
        if let Some(reason) = self.reason {
            out.extend_from_slice(b" reason=");
            push_debug_str(out, reason);
        }
        if let Some(peer) = self.peer {
            let _ = write!(out, " peer={peer}");
        }
        out.push(b'\n');
    }

    /// tracing-subscriber's JSON format with `flatten_event(true)`; strings that come from the
    /// request or the configuration are escaped by serde_json, as that format does. Written
    /// piece by piece like [`AccessLine::text`].
    fn json(&self, out: &mut Vec<u8>, timestamp: Timestamp<'_>) {
        out.extend_from_slice(b"{\"timestamp\":\"");
        timestamp.push(out);
        out.extend_from_slice(b"\",\"level\":\"INFO\",\"message\":\"request\",\"client\":\"");
        Client(self.client).push(out);
        out.extend_from_slice(b"\",\"method\":");
        let _ = serde_json::to_writer(&mut *out, self.method);
        out.extend_from_slice(b",\"path\":");
        let _ = serde_json::to_writer(&mut *out, self.path);
        out.extend_from_slice(b",\"version\":\"");
        push_version(out, self.version);
        out.extend_from_slice(b"\",\"status\":");
        push_decimal(out, u64::from(self.status));
        out.extend_from_slice(b",\"duration_ms\":");
        Millis(self.elapsed).push(out);
        out.extend_from_slice(b",\"user\":");
        let _ = serde_json::to_writer(&mut *out, self.user);
        if let Some(reason) = self.reason {
            out.extend_from_slice(b",\"reason\":");
            let _ = serde_json::to_writer(&mut *out, reason);
        }
        if let Some(peer) = self.peer {
            let _ = write!(out, ",\"peer\":\"{peer}\"");
        }
        out.extend_from_slice(b",\"target\":\"portcullis::access\"}\n");
    }
}

/// The per-thread line buffer and its clock.
#[derive(Default)]
struct Buffer {
    text: Vec<u8>,
    clock: Clock,
}

thread_local! {
    static BUFFER: RefCell<Buffer> = RefCell::new(Buffer::default());
}

/// RFC 3339 timestamps with microseconds in UTC, the date and time of day formatted once per
/// second.
#[derive(Default)]
struct Clock {
    second: u64,
    /// `YYYY-MM-DDTHH:MM:SS` of `second`.
    prefix: String,
}

impl Clock {
    fn timestamp(&mut self, now: SystemTime) -> Timestamp<'_> {
        let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
        if self.prefix.is_empty() || since.as_secs() != self.second {
            self.second = since.as_secs();
            self.prefix.clear();
            let at = i64::try_from(self.second)
                .ok()
                .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
                .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
            let _ = write!(
                self.prefix,
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
                at.year(),
                u8::from(at.month()),
                at.day(),
                at.hour(),
                at.minute(),
                at.second()
            );
        }
        Timestamp {
            prefix: &self.prefix,
            micros: since.subsec_micros(),
        }
    }
}

struct Timestamp<'a> {
    prefix: &'a str,
    micros: u32,
}

impl Timestamp<'_> {
    /// The `Display` form, written without `fmt`.
    fn push(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.prefix.as_bytes());
        out.push(b'.');
        push_padded(out, u64::from(self.micros), 6);
        out.push(b'Z');
    }
}

impl std::fmt::Display for Timestamp<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{:06}Z", self.prefix, self.micros)
    }
}

/// The client's address, or nothing.
struct Client(Option<SocketAddr>);

impl Client {
    /// The `Display` form; an IPv4 address (the usual case) is written without `fmt`.
    fn push(&self, out: &mut Vec<u8>) {
        match self.0 {
            Some(std::net::SocketAddr::V4(address)) => {
                for (i, octet) in address.ip().octets().into_iter().enumerate() {
                    if i > 0 {
                        out.push(b'.');
                    }
                    push_decimal(out, u64::from(octet));
                }
                if address.port() != 0 {
                    out.push(b':');
                    push_decimal(out, u64::from(address.port()));
                }
            }
            Some(_) => {
                let _ = write!(out, "{self}");
            }
            None => {}
        }
    }
}

impl std::fmt::Display for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            // From X-Forwarded-For, which names no port: the address alone.
            Some(address) if address.port() == 0 => address.ip().fmt(f),
            Some(address) => address.fmt(f),
            None => Ok(()),
        }
    }
}

/// A duration in milliseconds with three decimals (whole microseconds): in JSON a number,
/// so `duration_ms > 500` works in a log query.
struct Millis(Duration);

impl Millis {
    /// The same value for tracing's fallback event (recorded as a number).
    fn as_f64(&self) -> f64 {
        self.0.as_micros() as f64 / 1000.0
    }
}

impl Millis {
    /// The `Display` form, written without `fmt`.
    fn push(&self, out: &mut Vec<u8>) {
        let micros = u64::try_from(self.0.as_micros()).unwrap_or(u64::MAX);
        push_decimal(out, micros / 1000);
        out.push(b'.');
        push_padded(out, micros % 1000, 3);
    }
}

impl std::fmt::Display for Millis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let micros = self.0.as_micros();
        write!(f, "{}.{:03}", micros / 1000, micros % 1000)
    }
}

/// `n` in decimal.
fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// `n` in decimal, zero-padded to `width` digits.
fn push_padded(out: &mut Vec<u8>, n: u64, width: usize) {
    let mut digits = [b'0'; 20];
    let mut at = digits.len();
    let mut rest = n;
    while rest > 0 {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    let start = at.min(digits.len() - width.min(digits.len()));
    out.extend_from_slice(&digits[start..]);
}

/// `version` as its `Debug` form (`HTTP/1.1`).
fn push_version(out: &mut Vec<u8>, version: http::Version) {
    let text: &[u8] = match version {
        http::Version::HTTP_09 => b"HTTP/0.9",
        http::Version::HTTP_10 => b"HTTP/1.0",
        http::Version::HTTP_11 => b"HTTP/1.1",
        http::Version::HTTP_2 => b"HTTP/2.0",
        http::Version::HTTP_3 => b"HTTP/3.0",
        other => {
            let _ = write!(out, "{other:?}");
            return;
        }
    };
    out.extend_from_slice(text);
}

/// `text`'s `Debug` form (quoted, escaped). Names and reasons are plain printable ASCII: those
/// are copied between quotes, which is what `Debug` writes for them; anything else (a quote,
/// a backslash, a control or non-ASCII character) goes through `Debug` itself.
fn push_debug_str(out: &mut Vec<u8>, text: &str) {
    if text
        .bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
    {
        out.push(b'"');
        out.extend_from_slice(text.as_bytes());
        out.push(b'"');
    } else {
        let _ = write!(out, "{text:?}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(path: &'static str, user: &'static str) -> AccessLine<'static> {
        AccessLine {
            client: Some("127.0.0.1:36744".parse().unwrap()),
            method: "GET",
            path,
            version: http::Version::HTTP_11,
            status: 200,
            elapsed: Duration::from_micros(1234),
            user,
            reason: None,
            peer: None,
        }
    }

    #[test]
    fn timestamps_are_rfc3339_utc_with_microseconds_and_follow_the_second() {
        let mut clock = Clock::default();
        let at = UNIX_EPOCH + Duration::new(1_795_755_641, 358_992_123);
        assert_eq!(
            clock.timestamp(at).to_string(),
            "2026-11-27T05:00:41.358992Z"
        );
        let next = at + Duration::from_millis(700);
        assert_eq!(
            clock.timestamp(next).to_string(),
            "2026-11-27T05:00:42.058992Z"
        );
    }

    #[test]
    fn the_text_line_is_the_one_tracing_subscriber_writes() {
        let mut out = Vec::new();
        let mut clock = Clock::default();
        let at = UNIX_EPOCH + Duration::new(1_795_755_641, 358_992_000);
        line("/jwt/auth", "alice").text(&mut out, clock.timestamp(at));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "2026-11-27T05:00:41.358992Z  INFO portcullis::access: request client=127.0.0.1:36744 method=GET path=/jwt/auth version=HTTP/1.1 status=200 duration_ms=1.234 user=\"alice\"\n"
        );
    }

    #[test]
    fn a_refusal_names_its_reason_in_text_and_json() {
        let mut refused = line("/v2/a/b/blobs/uploads/", "alice");
        refused.status = 401;
        refused.reason = Some("insufficient_scope");
        let mut clock = Clock::default();
        let mut text = Vec::new();
        refused.text(&mut text, clock.timestamp(UNIX_EPOCH));
        let text = String::from_utf8(text).unwrap();
        assert!(
            text.ends_with(
                " status=401 duration_ms=1.234 user=\"alice\" reason=\"insufficient_scope\"\n"
            ),
            "{text}"
        );
        assert_eq!(text.lines().count(), 1);
        let mut json = Vec::new();
        refused.json(&mut json, clock.timestamp(UNIX_EPOCH));
        let parsed: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(parsed["reason"], "insufficient_scope");
        assert_eq!(parsed["user"], "alice");
    }

    #[test]
    fn the_json_line_parses_and_escapes_what_it_must() {
        let mut out = Vec::new();
        let mut clock = Clock::default();
        line("/v2/a\"b\\c", "al\nice").json(&mut out, clock.timestamp(UNIX_EPOCH));
        assert!(out.ends_with(b"}\n"), "one line");
        let parsed: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(parsed["timestamp"], "1970-01-01T00:00:00.000000Z");
        assert_eq!(parsed["target"], "portcullis::access");
        assert_eq!(parsed["path"], "/v2/a\"b\\c");
        assert_eq!(parsed["user"], "al\nice");
        assert_eq!(parsed["status"], 200);
        assert_eq!(parsed["duration_ms"], 1.234);
        assert!(
            parsed.get("reason").is_none(),
            "no reason on a request not refused"
        );
        assert_eq!(parsed["version"], "HTTP/1.1");
        assert_eq!(parsed["client"], "127.0.0.1:36744");
        assert!(
            parsed.get("peer").is_none(),
            "no peer when it is the client"
        );
    }

    #[test]
    fn behind_a_balancer_the_line_names_the_peer_and_a_forwarded_client_without_port() {
        let mut behind = line("/v2/", "");
        behind.client = Some("198.51.100.7:0".parse().unwrap());
        behind.peer = Some("10.0.0.3:51000".parse().unwrap());
        behind.reason = Some("missing_token");
        let mut clock = Clock::default();
        let mut text = Vec::new();
        behind.text(&mut text, clock.timestamp(UNIX_EPOCH));
        let text = String::from_utf8(text).unwrap();
        assert!(text.contains(" client=198.51.100.7 method=GET "), "{text}");
        assert!(
            text.ends_with(" reason=\"missing_token\" peer=10.0.0.3:51000\n"),
            "{text}"
        );
        assert_eq!(text.lines().count(), 1);
        let mut json = Vec::new();
        behind.json(&mut json, clock.timestamp(UNIX_EPOCH));
        let parsed: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(parsed["client"], "198.51.100.7");
        assert_eq!(parsed["peer"], "10.0.0.3:51000");
    }

    #[test]
    fn the_hand_written_pieces_are_the_fmt_forms() {
        for micros in [0, 7, 999, 1000, 1234, 999_999, 1_000_000, 86_400_000_123] {
            let mut out = Vec::new();
            Millis(Duration::from_micros(micros)).push(&mut out);
            let expected = Millis(Duration::from_micros(micros)).to_string();
            assert_eq!(String::from_utf8(out).unwrap(), expected);
        }
        for n in [0u64, 5, 10, 65535, u64::MAX] {
            let mut out = Vec::new();
            push_decimal(&mut out, n);
            assert_eq!(String::from_utf8(out).unwrap(), n.to_string());
            let mut out = Vec::new();
            push_padded(&mut out, n, 6);
            assert_eq!(String::from_utf8(out).unwrap(), format!("{n:06}"));
        }
        for micros in [0u32, 5, 999_999] {
            let timestamp = Timestamp {
                prefix: "2026-12-02T03:04:05",
                micros,
            };
            let mut out = Vec::new();
            timestamp.push(&mut out);
            assert_eq!(String::from_utf8(out).unwrap(), timestamp.to_string());
        }
        for client in [
            None,
            Some("0.0.0.0:1"),
            Some("255.255.255.255:65535"),
            Some("198.51.100.7:0"),
            Some("[::1]:8080"),
            Some("[2001:db8::7]:0"),
        ] {
            let client = Client(client.map(|c| c.parse().unwrap()));
            let mut out = Vec::new();
            client.push(&mut out);
            assert_eq!(String::from_utf8(out).unwrap(), client.to_string());
        }
        for version in [
            http::Version::HTTP_09,
            http::Version::HTTP_10,
            http::Version::HTTP_11,
            http::Version::HTTP_2,
            http::Version::HTTP_3,
        ] {
            let mut out = Vec::new();
            push_version(&mut out, version);
            assert_eq!(String::from_utf8(out).unwrap(), format!("{version:?}"));
        }
        for text in [
            "",
            "alice",
            "a\"b",
            "back\\slash",
            "new\nline",
            "tab\t",
            "caf\u{e9}",
            "\u{7f}",
            "\u{200b}zero-width",
        ] {
            let mut out = Vec::new();
            push_debug_str(&mut out, text);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                format!("{text:?}"),
                "{text:?}"
            );
        }
    }

    #[test]
    fn a_text_line_with_every_field_is_one_line_in_the_fmt_form() {
        let mut full = line("/v2/a/b/manifests/x", "bob\"\n");
        full.reason = Some("invalid_token");
        full.peer = Some("[2001:db8::1]:443".parse().unwrap());
        full.status = 401;
        full.version = http::Version::HTTP_2;
        let mut clock = Clock::default();
        let mut out = Vec::new();
        full.text(
            &mut out,
            clock.timestamp(UNIX_EPOCH + Duration::new(1, 5_000)),
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "1970-01-01T00:00:01.000005Z  INFO portcullis::access: request client=127.0.0.1:36744 method=GET path=/v2/a/b/manifests/x version=HTTP/2.0 status=401 duration_ms=1.234 user=\"bob\\\"\\n\" reason=\"invalid_token\" peer=[2001:db8::1]:443\n"
        );
    }

    #[test]
    fn the_json_line_is_the_one_the_fmt_form_wrote() {
        let mut full = line("/v2/a\"b/manifests/x", "bob");
        full.reason = Some("invalid_token");
        full.peer = Some("10.0.0.3:51000".parse().unwrap());
        let mut clock = Clock::default();
        let at = UNIX_EPOCH + Duration::new(1_795_755_641, 358_992_000);
        let mut out = Vec::new();
        full.json(&mut out, clock.timestamp(at));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            concat!(
                r#"{"timestamp":"2026-11-27T05:00:41.358992Z","level":"INFO","message":"request","#,
                r#""client":"127.0.0.1:36744","method":"GET","path":"/v2/a\"b/manifests/x","#,
                r#""version":"HTTP/1.1","status":200,"duration_ms":1.234,"user":"bob","#,
                r#""reason":"invalid_token","peer":"10.0.0.3:51000","target":"portcullis::access"}"#,
                "\n"
            )
        );
    }
}
