//! What a client can make the gateway hold, and what it answers when a client goes past it:
//! registry connections under an HTTP/2 fan-out, slow heads and bodies, and the requests
//! hyper or the registry would otherwise answer without the registry's JSON shape.

use crate::support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;
use support::gateway::secrets::*;
use support::gateway::{Gateway, GatewayFiles, GatewayOptions};
use support::http::{get, request};
use support::stack::{RegistryAuth, Stack, StackOptions};

const REPO: &str = "mygroup/myproject";

fn stack_with(auth: RegistryAuth, server: &str) -> Stack {
    let mut gateway = GatewayOptions::new("");
    gateway.extra = format!("server: {{ {server} }}\n");
    Stack::with(StackOptions {
        registry_auth: auth,
        gateway,
        ..StackOptions::default()
    })
}

fn push_token(stack: &Stack) -> String {
    stack.token(
        "alice",
        ALICE_PAT,
        &[&format!("repository:{REPO}:push,pull")],
    )
}

/// Open file descriptors of a process.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// Connect to `host` (`127.0.0.1:PORT`) with a short read timeout.
fn connect(host: &str) -> TcpStream {
    let stream = TcpStream::connect(host).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    stream
}

/// What the peer did since the last look: bytes it sent (appended), and whether it closed.
fn drain(stream: &mut TcpStream, seen: &mut Vec<u8>) -> bool {
    let mut chunk = [0u8; 4096];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => return true,
            Ok(n) => seen.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return false
            }
            Err(_) => return true,
        }
    }
}

/// Write `head`, then `body` one byte a second, until the gateway answers or closes or
/// `bound` passes. Returns what it sent back and how long that took.
fn dribble(host: &str, head: &[u8], body: &[u8], bound: Duration) -> (String, Duration) {
    let mut stream = connect(host);
    stream.write_all(head).unwrap();
    let started = Instant::now();
    let mut seen = Vec::new();
    for byte in body.iter().cycle() {
        let closed = drain(&mut stream, &mut seen);
        if closed || !seen.is_empty() {
            // Give the rest of the answer a moment to arrive.
            std::thread::sleep(Duration::from_millis(200));
            drain(&mut stream, &mut seen);
            break;
        }
        assert!(
            started.elapsed() < bound,
            "still open after {bound:?} of dribbling, nothing answered"
        );
        if stream.write_all(std::slice::from_ref(byte)).is_err() {
            drain(&mut stream, &mut seen);
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    (
        String::from_utf8_lossy(&seen).into_owned(),
        started.elapsed(),
    )
}

/// Status and JSON body of a raw HTTP/1.1 answer.
fn status_and_json(answer: &str) -> (u16, serde_json::Value) {
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {answer:?}"));
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    // A chunked answer: the JSON is the line that starts with `{`.
    let json = body
        .lines()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no JSON body: {answer:?}"));
    (status, serde_json::from_str(json).unwrap())
}

/// Start an upload session; the path and query of its Location.
fn start_upload(stack: &Stack, token: &str) -> String {
    let reply = request(
        "POST",
        &format!("{}/v2/{REPO}/blobs/uploads/", stack.gateway.url),
    )
    .bearer(token)
    .send();
    assert_eq!(reply.status, 202, "{}", reply.body);
    let location = reply.header("location").unwrap().to_owned();
    match location.find("/v2/") {
        Some(at) => location[at..].to_owned(),
        None => panic!("odd Location {location:?}"),
    }
}

#[test]
fn an_http2_fan_out_holds_at_most_its_share_of_registry_connections_and_others_still_pull() {
    let stack = stack_with(
        RegistryAuth::TrustsGateway,
        "max_upstream_requests: 24, max_upstream_requests_per_connection: 8, upstream_queue_timeout: 1s, body_rate_window: 120s",
    );
    let token = push_token(&stack);
    let pid = stack.gateway.pid();
    let before = open_fds(pid);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let host = stack.gateway.host.clone();
    // Two HTTP/2 connections, 100 streams each, every one a monolithic upload whose body
    // sends a byte and then never ends: each would hold one registry connection.
    let mut refused = Vec::new();
    let mut keep = Vec::new();
    for _ in 0..2 {
        let (statuses, senders) = runtime.block_on(fan_out(&host, &token, 100));
        refused.push(statuses);
        keep.push(senders);
    }
    std::thread::sleep(Duration::from_secs(3));
    let during = open_fds(pid);
    // At most 16 registry connections (2 x 8) and the 2 client ones, plus slack for the
    // pool and the logs; without the caps it is one per stream, 200.
    assert!(
        during < before + 40,
        "the gateway holds {during} descriptors (it had {before} before the fan-out)"
    );
    // Another client still gets through: its connection has its own share.
    let pull = stack.token("alice", ALICE_PAT, &[&format!("repository:{REPO}:pull")]);
    let reply = get(&format!("{}/v2/{REPO}/tags/list", stack.gateway.url))
        .bearer(&pull)
        .send();
    assert!(
        reply.status == 200 || reply.status == 404,
        "a pull during the fan-out got {}: {}",
        reply.status,
        reply.body
    );
    assert_ne!(reply.error_code(), "TOOMANYREQUESTS", "{}", reply.body);
    // The streams over the share were told so, in the registry's shape.
    let answers: Vec<(u16, String)> = refused
        .into_iter()
        .flat_map(|statuses| runtime.block_on(statuses))
        .collect();
    let too_many: Vec<_> = answers
        .iter()
        .filter(|(status, _)| *status == 429)
        .collect();
    assert!(!too_many.is_empty(), "no stream was refused: {answers:?}");
    for (_, body) in too_many {
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["errors"][0]["code"], "TOOMANYREQUESTS", "{body}");
    }
    drop(keep);
}

type Sender = tokio::sync::mpsc::Sender<Result<http_body::Frame<Bytes>, std::io::Error>>;

/// Open one HTTP/2 connection with `streams` uploads whose bodies never end. Returns a
/// future of the answers that came within 5 s (status, body), and the body senders (drop
/// them to end the bodies).
async fn fan_out(
    host: &str,
    token: &str,
    streams: usize,
) -> (
    impl std::future::Future<Output = Vec<(u16, String)>>,
    Vec<Sender>,
) {
    let tcp = tokio::net::TcpStream::connect(host).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    let mut answers = Vec::new();
    let mut senders = Vec::new();
    // An upload session each (first, while the connection's share is free): the registry
    // reads a PATCH body until it ends.
    let mut paths = Vec::new();
    for _ in 0..streams {
        sender.ready().await.unwrap();
        let started = sender
            .send_request(
                http::Request::post(format!("http://{host}/v2/{REPO}/blobs/uploads/"))
                    .header("authorization", format!("Bearer {token}"))
                    .body(ChannelBody::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(started.status(), 202);
        let location = started.headers()["location"].to_str().unwrap().to_owned();
        paths.push(location[location.find("/v2/").unwrap()..].to_owned());
    }
    for path in paths {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tx.send(Ok(http_body::Frame::data(Bytes::from_static(b"x"))))
            .await
            .unwrap();
        senders.push(tx);
        let body = ChannelBody(rx);
        let request = http::Request::patch(format!("http://{host}{path}"))
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/octet-stream")
            .body(body)
            .unwrap();
        sender.ready().await.unwrap();
        let answer = sender.send_request(request);
        answers.push(tokio::spawn(async move {
            let response = tokio::time::timeout(Duration::from_secs(5), answer)
                .await
                .ok()?
                .ok()?;
            let status = response.status().as_u16();
            let body = response.into_body().collect().await.ok()?.to_bytes();
            Some((status, String::from_utf8_lossy(&body).into_owned()))
        }));
    }
    let collected = async move {
        let mut out = Vec::new();
        for answer in answers {
            if let Ok(Some(got)) = answer.await {
                out.push(got);
            }
        }
        out
    };
    (collected, senders)
}

/// A request body fed through a channel: it ends when the sender is dropped.
struct ChannelBody(tokio::sync::mpsc::Receiver<Result<http_body::Frame<Bytes>, std::io::Error>>);

impl ChannelBody {
    fn empty() -> ChannelBody {
        ChannelBody(tokio::sync::mpsc::channel(1).1)
    }
}

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, std::io::Error>>> {
        self.0.poll_recv(cx)
    }
}

#[test]
fn an_http2_head_dribbled_a_byte_a_second_is_closed_at_the_header_deadline() {
    let mut options = GatewayOptions::new("http://127.0.0.1:1");
    options.extra = "server: { header_read_timeout: 2s }\n".into();
    let gateway = Gateway::start(GatewayFiles::init("ec", "http://127.0.0.1:1"), &options);
    let mut head = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    head.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]); // SETTINGS, empty
                                                          // A HEADERS frame header announcing 200 bytes on stream 1, END_HEADERS never coming.
    let headers_frame = [0u8, 0, 200, 1, 0, 0, 0, 0, 1];
    let started = Instant::now();
    let mut stream = connect(&gateway.host);
    stream.write_all(&head).unwrap();
    let mut seen = Vec::new();
    let mut closed = false;
    for byte in headers_frame.iter().chain(std::iter::repeat(&0u8)) {
        if drain(&mut stream, &mut seen) || stream.write_all(&[*byte]).is_err() {
            closed = true;
            break;
        }
        if started.elapsed() > Duration::from_secs(20) {
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    assert!(
        closed,
        "a head dribbled for {:?} is still being read",
        started.elapsed()
    );
    gateway.wait_for_log("server.header_read_timeout", 1, Duration::from_secs(5));
}

/// Dribble `head`'s bytes one a second on `stream` until the gateway closes it (or 20 s pass);
/// what it answered and when it closed, from the first dribbled byte.
fn dribble_head(stream: &mut TcpStream, head: &[u8]) -> (String, Option<Duration>) {
    let started = Instant::now();
    let mut seen = Vec::new();
    for byte in head.iter().cycle() {
        if drain(stream, &mut seen) || stream.write_all(std::slice::from_ref(byte)).is_err() {
            return (
                String::from_utf8_lossy(&seen).into_owned(),
                Some(started.elapsed()),
            );
        }
        if started.elapsed() > Duration::from_secs(20) {
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    (String::from_utf8_lossy(&seen).into_owned(), None)
}

#[test]
fn an_http1_head_dribbled_a_byte_a_second_is_closed_at_the_header_deadline() {
    let mut options = GatewayOptions::new("http://127.0.0.1:1");
    options.extra = "server: { header_read_timeout: 2s }\n".into();
    let gateway = Gateway::start(GatewayFiles::init("ec", "http://127.0.0.1:1"), &options);
    let head = b"GET /v2/ HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

    // A fresh connection (it is parked between the bytes: park's deadline).
    let mut stream = connect(&gateway.host);
    let (answer, closed) = dribble_head(&mut stream, head);
    let closed = closed.unwrap_or_else(|| panic!("a head dribbled for 20 s is still read"));
    assert!(
        answer.is_empty(),
        "answered a head never completed: {answer}"
    );
    assert!(
        closed >= Duration::from_millis(1500) && closed < Duration::from_secs(6),
        "closed after {closed:?}, the deadline is 2 s"
    );

    // A connection that has carried a request body is never parked: the deadline is drive's.
    let mut stream = connect(&gateway.host);
    stream
        .write_all(b"POST /v2/ HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nab")
        .unwrap();
    let mut first = Vec::new();
    let waited = Instant::now();
    while !String::from_utf8_lossy(&first).contains("\r\n\r\n") {
        assert!(
            !drain(&mut stream, &mut first),
            "closed after its first request"
        );
        assert!(
            waited.elapsed() < Duration::from_secs(5),
            "no answer to the POST"
        );
    }
    assert!(
        first.starts_with(b"HTTP/1.1 405"),
        "{}",
        String::from_utf8_lossy(&first)
    );
    let (answer, closed) = dribble_head(&mut stream, head);
    let closed = closed.unwrap_or_else(|| panic!("a second head dribbled for 20 s is still read"));
    assert!(
        !answer.contains("HTTP/1.1"),
        "answered a head never completed: {answer}"
    );
    assert!(
        closed < Duration::from_secs(6),
        "closed {closed:?} into the second head, the deadline is 2 s"
    );

    // The start of a head sent with the request before it, then nothing: no byte comes after
    // that request ends, and the deadline still holds.
    let mut stream = connect(&gateway.host);
    stream
        .write_all(
            b"POST /v2/ HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nabGET /v2/ HTTP/1.1\r\nHo",
        )
        .unwrap();
    let started = Instant::now();
    let mut seen = Vec::new();
    while !drain(&mut stream, &mut seen) {
        assert!(
            started.elapsed() < Duration::from_secs(6),
            "a half head behind a request is still read after {:?}",
            started.elapsed()
        );
    }
    let seen = String::from_utf8_lossy(&seen);
    assert_eq!(seen.matches("HTTP/1.1 ").count(), 1, "{seen}");
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "closed after {:?}, the deadline is 2 s",
        started.elapsed()
    );
}

#[test]
fn a_client_that_never_reads_its_answers_is_cut_after_the_idle_timeout() {
    let mut options = GatewayOptions::new("http://127.0.0.1:1");
    options.extra = "server: { idle_timeout: 2s }\n".into();
    let gateway = Gateway::start(GatewayFiles::init("ec", "http://127.0.0.1:1"), &options);
    let pid = gateway.pid();
    let before = open_fds(pid);
    // Thousands of pipelined requests and not one byte read: their answers fill both sockets'
    // buffers, the gateway cannot flush, and a polite close would wait for that forever.
    let mut stream = TcpStream::connect(&gateway.host).unwrap();
    stream
        .set_write_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let requests = b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n".repeat(200_000);
    let mut sent = 0;
    while sent < requests.len() {
        match stream.write(&requests[sent..]) {
            Ok(n) => sent += n,
            Err(_) => break, // the gateway stopped reading: its answers are stuck
        }
    }
    assert!(
        sent < requests.len(),
        "the gateway read all {sent} bytes of requests: its answers did not fill the sockets"
    );
    assert!(open_fds(pid) > before, "the connection is not open");
    let started = Instant::now();
    while open_fds(pid) > before {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "a connection whose client reads nothing is still held after {:?} (idle_timeout 2 s)",
            started.elapsed()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(stream);
}

#[test]
fn a_body_dribbled_to_an_upload_is_cut_with_a_408_in_both_deployments() {
    for auth in [RegistryAuth::TrustsGateway, RegistryAuth::None] {
        let stack = stack_with(auth, "min_body_rate: 100, body_rate_window: 2s");
        let token = push_token(&stack);
        let upload = start_upload(&stack, &token);
        let head = format!(
            "PATCH {upload} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/octet-stream\r\nContent-Length: 1000\r\n\r\n",
            stack.gateway.host
        );
        let (answer, took) = dribble(
            &stack.gateway.host,
            head.as_bytes(),
            b"x",
            Duration::from_secs(20),
        );
        let (status, json) = status_and_json(&answer);
        assert_eq!(status, 408, "after {took:?}: {answer}");
        assert!(
            json["errors"][0]["message"]
                .as_str()
                .unwrap()
                .contains("server.min_body_rate"),
            "{json}"
        );
        stack
            .gateway
            .wait_for_log("request body too slow", 1, Duration::from_secs(5));
        assert!(
            !stack.gateway.log().contains("registry request failed"),
            "a slow client was logged as a registry failure:\n{}",
            stack.gateway.log()
        );
    }
}

#[test]
fn a_form_dribbled_to_the_token_endpoint_is_cut_with_a_408() {
    let mut options = GatewayOptions::new("http://127.0.0.1:1");
    options.extra = "server: { token_request_timeout: 2s }\n".into();
    let gateway = Gateway::start(GatewayFiles::init("ec", "http://127.0.0.1:1"), &options);
    let head = format!(
        "POST /jwt/auth HTTP/1.1\r\nHost: {}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 200\r\n\r\n",
        gateway.host
    );
    let (answer, took) = dribble(
        &gateway.host,
        head.as_bytes(),
        b"grant_type=password&",
        Duration::from_secs(20),
    );
    let (status, json) = status_and_json(&answer);
    assert_eq!(status, 408, "after {took:?}: {answer}");
    assert!(json["errors"][0]["message"].as_str().is_some(), "{json}");
    gateway.wait_for_log("server.token_request_timeout", 1, Duration::from_secs(5));

    // A declared body over 64 KiB is refused unread.
    let reply = request("POST", &format!("{}/jwt/auth", gateway.url))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(&"a".repeat(70 * 1024))
        .send();
    assert_eq!(reply.status, 413, "{}", reply.body);
    assert_eq!(reply.error_code(), "SIZE_INVALID");
}

#[test]
fn many_small_headers_connect_and_a_broken_chunked_body_get_registry_json() {
    let stack = stack_with(RegistryAuth::None, "");
    let token = push_token(&stack);

    // 90 small headers (with curl's own three, 93 lines, about 1.5 KB): far under
    // server.max_header_bytes and within the header-line cap (hyper's 100), so the router
    // answers in the registry's JSON.
    let lines = |n: usize| {
        let mut request = get(&format!("{}/v2/", stack.gateway.url));
        for i in 0..n {
            request = request.header(&format!("x-h{i}"), "v");
        }
        request.send()
    };
    let reply = lines(90);
    assert_eq!(reply.status, 401, "{}", reply.body);
    assert_eq!(reply.error_code(), "UNAUTHORIZED");
    // 120 and 200 header lines are over the cap: hyper's own 431, never forwarded.
    for n in [120, 200] {
        assert_eq!(lines(n).status, 431, "{n} header lines");
    }

    // CONNECT, even with a valid token, is never forwarded.
    let mut stream = connect(&stack.gateway.host);
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    write!(
        stream,
        "CONNECT /v2/ HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n",
        stack.gateway.host
    )
    .unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    let (status, json) = status_and_json(&answer);
    assert_eq!(status, 405, "{answer}");
    assert_eq!(json["errors"][0]["code"], "UNSUPPORTED", "{answer}");

    // A malformed chunked body is the client's error, not an unreachable registry.
    let upload = start_upload(&stack, &token);
    let mut stream = connect(&stack.gateway.host);
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "PATCH {upload} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\nzz\r\n",
        stack.gateway.host
    )
    .unwrap();
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let answer = String::from_utf8_lossy(&raw);
    let (status, json) = status_and_json(&answer);
    assert_eq!(status, 400, "{answer}");
    assert_eq!(json["errors"][0]["code"], "UNSUPPORTED", "{answer}");
    assert!(
        !stack.gateway.log().contains("registry request failed"),
        "a client's broken body was logged as a registry failure:\n{}",
        stack.gateway.log()
    );
}

#[test]
fn one_client_address_with_many_connections_gets_its_share_and_another_address_still_pulls() {
    let stack = stack_with(
        RegistryAuth::None,
        "max_upstream_requests: 24, max_upstream_requests_per_connection: 2, max_upstream_requests_per_client: 6, upstream_queue_timeout: 1s, body_rate_window: 120s",
    );
    let token = push_token(&stack);
    let host = stack.gateway.host.clone();
    // Twelve connections from 127.0.0.1, each a PATCH of an upload session whose body sends
    // a byte and then stalls: each request that gets through holds a registry connection.
    let sessions: Vec<String> = (0..12).map(|_| start_upload(&stack, &token)).collect();
    let mut streams: Vec<TcpStream> = sessions
        .iter()
        .map(|location| {
            let head = format!(
                "PATCH {location} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/octet-stream\r\nContent-Length: 1000000\r\n\r\nx"
            );
            let mut stream = connect(&host);
            stream.write_all(head.as_bytes()).unwrap();
            stream
        })
        .collect();
    std::thread::sleep(Duration::from_secs(3));
    let mut refused = 0;
    for stream in &mut streams {
        let mut seen = Vec::new();
        drain(stream, &mut seen);
        if !seen.is_empty() {
            let (status, json) = status_and_json(&String::from_utf8_lossy(&seen));
            assert_eq!(status, 429, "{json}");
            assert!(
                json["errors"][0]["message"]
                    .as_str()
                    .unwrap()
                    .contains("server.max_upstream_requests_per_client"),
                "{json}"
            );
            refused += 1;
        }
    }
    assert_eq!(
        refused, 6,
        "six of the twelve stalled uploads are over the address's share"
    );
    // The same address is refused at once for anything more...
    let pull = stack.token("alice", ALICE_PAT, &[&format!("repository:{REPO}:pull")]);
    let url = format!("{}/v2/{REPO}/tags/list", stack.gateway.url);
    let same = get(&url).bearer(&pull).send();
    assert_eq!(same.status, 429, "{}", same.body);
    // ...while another client address still pulls.
    let other = get(&url)
        .bearer(&pull)
        .arg("--interface")
        .arg("127.0.0.2")
        .send();
    assert!(
        other.status == 200 || other.status == 404,
        "another address got {}: {}",
        other.status,
        other.body
    );
    drop(streams);
}
