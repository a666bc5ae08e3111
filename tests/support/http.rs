//! Raw HTTP for the error cases, through curl (a real client; HTTP/1.1, HTTP/2, TLS).

use std::collections::HashMap;
use std::process::Command;

/// A response as a client saw it.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    /// Lower-cased header names; repeated headers joined with "\n".
    pub headers: HashMap<String, String>,
    pub body: String,
    /// "1.1" or "2".
    pub http_version: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }

    /// The body as JSON (panics with the body when it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }

    /// `errors[0].code` of a registry-style error body.
    pub fn error_code(&self) -> String {
        self.json()["errors"][0]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    pub fn error_message(&self) -> String {
        self.json()["errors"][0]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

/// A request built up and sent with curl.
pub struct Request {
    args: Vec<String>,
}

pub fn request(method: &str, url: &str) -> Request {
    Request {
        args: vec!["-sS".into(), "-X".into(), method.into(), url.into()],
    }
}

pub fn get(url: &str) -> Request {
    request("GET", url)
}

impl Request {
    pub fn header(mut self, name: &str, value: &str) -> Request {
        self.args.push("-H".into());
        self.args.push(format!("{name}: {value}"));
        self
    }

    pub fn basic(self, user: &str, secret: &str) -> Request {
        use std::fmt::Write;
        let mut encoded = String::new();
        let raw = format!("{user}:{secret}");
        // Tiny base64 so tests do not need a crate for it.
        const ALPHABET: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        for chunk in raw.as_bytes().chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..4 {
                if i <= chunk.len() {
                    let _ =
                        encoded.write_char(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
                } else {
                    encoded.push('=');
                }
            }
        }
        self.header("Authorization", &format!("Basic {encoded}"))
    }

    pub fn bearer(self, token: &str) -> Request {
        self.header("Authorization", &format!("Bearer {token}"))
    }

    pub fn body(mut self, data: &str) -> Request {
        self.args.push("--data-binary".into());
        self.args.push(data.into());
        self
    }

    pub fn arg(mut self, arg: &str) -> Request {
        self.args.push(arg.into());
        self
    }

    pub fn send(self) -> Reply {
        let dir = tempfile::tempdir().unwrap();
        let head = dir.path().join("head");
        let body = dir.path().join("body");
        let out = Command::new("curl")
            .args(&self.args)
            .arg("-D")
            .arg(&head)
            .arg("-o")
            .arg(&body)
            .args(["-w", "%{http_code} %{http_version}", "--max-time", "30"])
            .output()
            .expect("curl (Debian package curl) must be installed");
        let written = String::from_utf8_lossy(&out.stdout).into_owned();
        let mut parts = written.split_whitespace();
        let status = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
        if status == 0 {
            // No answer at all: say why, so a failing assertion on the status can be read.
            eprintln!(
                "curl {:?} got no HTTP answer (exit {:?}): {}",
                self.args.get(2..4),
                out.status.code(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let http_version = parts.next().unwrap_or("").to_owned();
        let head_text = std::fs::read_to_string(&head).unwrap_or_default();
        let mut headers: HashMap<String, String> = HashMap::new();
        // With redirects or 100-continue there may be several heads: keep the last one.
        let last_head = head_text
            .split("\r\n\r\n")
            .filter(|h| !h.trim().is_empty())
            .last()
            .unwrap_or("");
        for line in last_head.lines().skip(1) {
            if let Some((name, value)) = line.split_once(':') {
                headers
                    .entry(name.trim().to_ascii_lowercase())
                    .and_modify(|v| {
                        v.push('\n');
                        v.push_str(value.trim());
                    })
                    .or_insert_with(|| value.trim().to_owned());
            }
        }
        Reply {
            status,
            headers,
            body: std::fs::read_to_string(&body).unwrap_or_default(),
            http_version,
        }
    }
}

/// The claims of a JWT, decoded without verification (tests inspect what the gateway issued).
pub fn jwt_part(token: &str, index: usize) -> serde_json::Value {
    let part = token.split('.').nth(index).expect("a JWT has three parts");
    let mut bytes = Vec::new();
    let mut buffer = 0u32;
    let mut bits = 0;
    for c in part.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => continue,
        };
        buffer = (buffer << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            bytes.push((buffer >> bits) as u8);
        }
    }
    serde_json::from_slice(&bytes).expect("JWT part is JSON")
}

/// The value of one series of a Prometheus text page (`name{labels}` exactly as exported),
/// if present.
pub fn series(metrics: &str, name: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let value = line.strip_prefix(name)?.strip_prefix(' ')?;
        value.trim().parse().ok()
    })
}
