//! The gateway's registry connections as a user meets them: a registry that closes kept-alive
//! connections or restarts costs no request, no request reaches it twice, a burst leaves at
//! most the bound of idle connections behind, and a registry that never answers an upload
//! is still a 504.

use crate::support;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use support::gateway::secrets::*;
use support::gateway::{Gateway, GatewayFiles, GatewayOptions};
use support::http::get;
use support::raw::RawRequest;
use support::stack::Stack;
use support::wire::silent_upstream;

const REPO: &str = "mygroup/myproject";

/// The HTTP/1 connections one gateway worker keeps parked (`proxy::clients::MAX_PARKED`).
const MAX_PARKED: usize = 64;

/// How the stand-in ends its connections.
#[derive(Clone, Copy, PartialEq)]
enum Ending {
    /// Never: kept alive.
    KeptAlive,
    /// After one answer that says `Connection: close` (nginx's `keepalive_requests 1`).
    SaysClose,
    /// After one answer that does not say so (a registry timing out idle connections,
    /// restarting, or a middlebox cutting them).
    Silently,
}

/// A registry stand-in that answers every request 200 (two-byte body) after `delay`, and
/// ends connections as `ending` says. Counts the requests for each path.
struct Upstream {
    url: String,
    port: u16,
    paths: Arc<Mutex<HashMap<String, usize>>>,
}

impl Upstream {
    fn start(ending: Ending, delay: Duration) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let paths = Arc::new(Mutex::new(HashMap::new()));
        let seen = paths.clone();
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let seen = seen.clone();
                thread::spawn(move || serve(stream, seen, ending, delay));
            }
        });
        Upstream {
            url: format!("http://127.0.0.1:{port}"),
            port,
            paths,
        }
    }

    /// Requests received for each path starting with `prefix` (not the gateway's own
    /// start-up probe of `/v2/`).
    fn counts(&self, prefix: &str) -> HashMap<String, usize> {
        let mut counts = self.paths.lock().unwrap().clone();
        counts.retain(|path, _| path.starts_with(prefix));
        counts
    }
}

fn serve(
    stream: TcpStream,
    seen: Arc<Mutex<HashMap<String, usize>>>,
    ending: Ending,
    delay: Duration,
) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut stream = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let path = line.split(' ').nth(1).unwrap_or("").to_owned();
        // The rest of the head (these requests have no body).
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            if header == "\r\n" {
                break;
            }
        }
        *seen.lock().unwrap().entry(path).or_default() += 1;
        thread::sleep(delay);
        let close = if ending == Ending::SaysClose {
            "connection: close\r\n"
        } else {
            ""
        };
        let answer = format!("HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: application/json\r\n{close}\r\n{{}}");
        if stream.write_all(answer.as_bytes()).is_err() || ending != Ending::KeptAlive {
            return;
        }
    }
}

fn gateway_for(upstream: &str) -> Gateway {
    let files = GatewayFiles::init("ec", upstream);
    Gateway::start(
        files,
        &GatewayOptions {
            // One worker: one pool, so the bound below is the gateway's.
            extra: "server: { workers: 1, max_upstream_requests_per_client: 256 }\n".into(),
            ..GatewayOptions::new(upstream)
        },
    )
}

fn token(gateway: &Gateway, user: &str, secret: &str, actions: &str) -> String {
    get(&format!(
        "{}/jwt/auth?service=container_registry&scope=repository:{REPO}:{actions}",
        gateway.url
    ))
    .basic(user, secret)
    .send()
    .json()["token"]
        .as_str()
        .expect("a token")
        .to_owned()
}

fn port_of(gateway: &Gateway) -> u16 {
    gateway.host.rsplit(':').next().unwrap().parse().unwrap()
}

/// One kept-alive client connection to the gateway, requests sent one after another.
struct KeepAlive {
    reader: BufReader<TcpStream>,
    stream: TcpStream,
}

impl KeepAlive {
    fn open(port: u16) -> KeepAlive {
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        KeepAlive {
            reader: BufReader::new(stream.try_clone().unwrap()),
            stream,
        }
    }

    /// GET `path`; the answer's status (0 when the connection ended without one).
    fn get(&mut self, path: &str, bearer: &str) -> u16 {
        let head = format!(
            "GET {path} HTTP/1.1\r\nHost: gateway\r\nAuthorization: Bearer {bearer}\r\n\r\n"
        );
        if self.stream.write_all(head.as_bytes()).is_err() {
            return 0;
        }
        let mut status_line = String::new();
        if self.reader.read_line(&mut status_line).unwrap_or(0) == 0 {
            return 0;
        }
        let mut length = 0;
        loop {
            let mut header = String::new();
            self.reader.read_line(&mut header).unwrap();
            if header == "\r\n" {
                break;
            }
            if let Some(value) = header.to_ascii_lowercase().strip_prefix("content-length:") {
                length = value.trim().parse().unwrap();
            }
        }
        let mut body = vec![0; length];
        self.reader.read_exact(&mut body).unwrap();
        status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }
}

/// Established TCP connections to `port` (the gateway's side of its registry connections).
fn established_to(port: u16) -> usize {
    let mut count = 0;
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let remote_port = fields
                .get(2)
                .and_then(|a| a.rsplit(':').next())
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            if remote_port == Some(port) && fields.get(3) == Some(&"01") {
                count += 1;
            }
        }
    }
    count
}

#[test]
fn a_registry_that_closes_each_connection_after_one_answer_costs_no_request_and_gets_none_twice() {
    for ending in [Ending::SaysClose, Ending::Silently] {
        let upstream = Upstream::start(ending, Duration::ZERO);
        let gateway = gateway_for(&upstream.url);
        let bearer = token(&gateway, "alice", ALICE_PAT, "pull");
        let port = port_of(&gateway);
        // One after another on one client connection, no pause: each finds the last
        // registry connection closed, or closing unseen (a silent close is learnt only when
        // epoll reports it, so a GET may go out on a connection already closed: hyper then
        // cannot hand it back unsent, and it is sent again because a GET is safe to repeat;
        // the stand-in never read it, so it is counted once).
        let mut client = KeepAlive::open(port);
        for i in 0..100 {
            let path = format!("/v2/{REPO}/manifests/one-{i}");
            assert_eq!(client.get(&path, &bearer), 200, "{path}");
        }
        // And at once, from several connections.
        let workers: Vec<_> = (0..4)
            .map(|t| {
                let bearer = bearer.clone();
                thread::spawn(move || {
                    let mut client = KeepAlive::open(port);
                    for i in 0..25 {
                        let path = format!("/v2/{REPO}/manifests/many-{t}-{i}");
                        assert_eq!(client.get(&path, &bearer), 200, "{path}");
                    }
                })
            })
            .collect();
        for worker in workers {
            worker.join().unwrap();
        }
        let counts = upstream.counts(&format!("/v2/{REPO}/manifests/"));
        assert_eq!(counts.len(), 200, "every request reached the registry");
        let twice: Vec<_> = counts.iter().filter(|(_, n)| **n != 1).collect();
        assert!(twice.is_empty(), "sent more than once: {twice:?}");
    }
}

#[test]
fn a_restarted_registry_is_reached_again_without_a_failed_request() {
    let mut stack = Stack::start();
    let bearer = stack.token("alice", ALICE_PAT, &[&format!("repository:{REPO}:pull")]);
    let port = port_of(&stack.gateway);
    let mut client = KeepAlive::open(port);
    for _ in 0..5 {
        assert_eq!(client.get("/v2/", &bearer), 200);
    }
    // The gateway's kept-alive connections are closed by the registry's exit.
    stack.registry.stop();
    stack.registry.restart();
    for round in 0..20 {
        assert_eq!(
            client.get("/v2/", &bearer),
            200,
            "request {round} after the restart"
        );
    }
    let mut fresh = KeepAlive::open(port);
    assert_eq!(fresh.get(&format!("/v2/{REPO}/tags/list"), &bearer), 404);
}

#[test]
fn after_a_burst_of_concurrent_requests_at_most_the_bound_of_idle_registry_connections_stay_open() {
    let upstream = Upstream::start(Ending::KeptAlive, Duration::from_millis(500));
    let gateway = gateway_for(&upstream.url);
    let bearer = token(&gateway, "alice", ALICE_PAT, "pull");
    let port = port_of(&gateway);
    // The worker's bound, and the start-up trust probe's connection, parked by the main
    // thread's own pool.
    let bound = MAX_PARKED + 1;
    let burst = MAX_PARKED + 36;
    let clients: Vec<_> = (0..burst)
        .map(|i| {
            let bearer = bearer.clone();
            thread::spawn(move || {
                RawRequest::new("GET", &format!("/v2/{REPO}/manifests/burst-{i}"))
                    .bearer(&bearer)
                    .send(port)
                    .status
            })
        })
        .collect();
    for client in clients {
        assert_eq!(client.join().unwrap(), 200);
    }
    assert_eq!(
        upstream
            .counts(&format!("/v2/{REPO}/manifests/burst-"))
            .len(),
        burst
    );
    // Every answer is in; the connections beyond the bound are closed as they come back.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut open = established_to(upstream.port);
    while open > bound && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
        open = established_to(upstream.port);
    }
    assert!(
        (MAX_PARKED / 2..=bound).contains(&open),
        "{open} registry connections left open after {burst} at once (bound {MAX_PARKED} + the probe's)"
    );
    // The parked ones serve the next requests.
    let mut client = KeepAlive::open(port);
    for i in 0..10 {
        assert_eq!(
            client.get(&format!("/v2/{REPO}/manifests/after-{i}"), &bearer),
            200
        );
    }
    assert!(established_to(upstream.port) <= bound);
}

#[test]
fn a_registry_that_never_answers_an_upload_is_504_once_the_body_is_sent() {
    let upstream = silent_upstream();
    let gateway = gateway_for(&upstream);
    let bearer = token(&gateway, "root", ROOT_PAT, "pull,push");
    let started = Instant::now();
    let reply = RawRequest::new(
        "PUT",
        &format!("/v2/{REPO}/blobs/uploads/00000000-0000-0000-0000-000000000000?digest=sha256:0000000000000000000000000000000000000000000000000000000000000000"),
    )
    .bearer(&bearer)
    .header("Content-Type", "application/octet-stream")
    .body(&[7u8; 4096])
    .send(port_of(&gateway));
    assert_eq!(reply.status, 504, "{}", reply.text());
    assert!(reply.text().contains("UNAVAILABLE"), "{}", reply.text());
    // upstream.response_timeout is 3 s in these tests.
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(3) && waited < Duration::from_secs(10),
        "{waited:?}"
    );
}
