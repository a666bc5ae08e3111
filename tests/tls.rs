//! TLS termination: a test CA, ALPN h2 and http/1.1 on one port, and plain HTTP sent to the TLS
//! port answered with a clear error instead of a hang.

use crate::support;

use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use support::gateway::secrets::*;
use support::gateway::GatewayOptions;
use support::http::get;
use support::require_tool;
use support::stack::{Stack, StackOptions};

/// A CA and a server certificate for 127.0.0.1 signed by it, made with openssl.
fn test_ca(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let openssl = require_tool("openssl", "openssl");
    let run = |args: &[&str]| {
        let out = Command::new(&openssl)
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=portcullis test CA",
    ]);
    run(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "tls.key",
        "-out",
        "tls.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "tls.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "tls.crt",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
    (dir.join("ca.crt"), dir.join("tls.crt"), dir.join("tls.key"))
}

fn tls_stack(dir: &Path) -> (Stack, std::path::PathBuf) {
    let (ca, cert, key) = test_ca(dir);
    let stack = Stack::with(StackOptions {
        gateway: GatewayOptions {
            tls: Some((cert, key)),
            ..GatewayOptions::new("")
        },
        ..StackOptions::default()
    });
    (stack, ca)
}

#[test]
fn https_with_http2_and_http11_on_one_port() {
    let dir = tempfile::tempdir().unwrap();
    let (stack, ca) = tls_stack(dir.path());
    assert!(stack.gateway.url.starts_with("https://"));
    let ca = ca.to_str().unwrap();
    let url = format!(
        "{}/jwt/auth?service=container_registry&scope=repository:mygroup/myproject:pull",
        stack.gateway.url
    );
    let h2 = get(&url)
        .basic("alice", ALICE_PAT)
        .arg("--cacert")
        .arg(ca)
        .arg("--http2")
        .send();
    assert_eq!(
        (h2.status, h2.http_version.as_str()),
        (200, "2"),
        "{}",
        h2.body
    );
    let token = h2.json()["token"].as_str().unwrap().to_owned();
    let h1 = get(&format!("{}/v2/", stack.gateway.url))
        .bearer(&token)
        .arg("--cacert")
        .arg(ca)
        .arg("--http1.1")
        .send();
    assert_eq!(
        (h1.status, h1.http_version.as_str()),
        (200, "1.1"),
        "{}",
        h1.body
    );
    let h2 = get(&format!(
        "{}/v2/mygroup/myproject/tags/list",
        stack.gateway.url
    ))
    .bearer(&token)
    .arg("--cacert")
    .arg(ca)
    .arg("--http2")
    .send();
    assert_eq!(
        (h2.status, h2.http_version.as_str()),
        (404, "2"),
        "the registry answered over HTTP/2: {}",
        h2.body
    );
    assert!(stack.gateway.log().contains("version=HTTP/2.0"));
}

#[test]
fn plain_http_to_the_tls_port_gets_an_error_not_a_hang() {
    let dir = tempfile::tempdir().unwrap();
    let (stack, _ca) = tls_stack(dir.path());
    let started = Instant::now();
    let mut stream = std::net::TcpStream::connect(&stack.gateway.host).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream
        .write_all(b"GET /v2/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    assert!(
        answer.starts_with("HTTP/1.1 400 Bad Request\r\n"),
        "{answer:?}"
    );
    assert!(answer.contains("this port speaks HTTPS"), "{answer:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "answered and closed, not left hanging"
    );
}

#[test]
fn skopeo_pushes_and_pulls_over_tls_trusting_the_test_ca() {
    let dir = tempfile::tempdir().unwrap();
    let (stack, ca) = tls_stack(dir.path());
    let certs = dir.path().join("certs.d");
    std::fs::create_dir_all(&certs).unwrap();
    std::fs::copy(&ca, certs.join("ca.crt")).unwrap();
    let image = support::oci::OciImage::create(dir.path().join("image"), 256 * 1024);
    let target = format!("docker://{}/mygroup/myproject/tls:v1", stack.gateway.host);
    let creds = format!("alice:{ALICE_PAT}");
    let certs = certs.to_str().unwrap();
    support::oci::skopeo(&[
        "copy",
        "--preserve-digests",
        "--dest-cert-dir",
        certs,
        "--dest-creds",
        &creds,
        &image.reference(),
        &target,
    ]);
    let pulled = dir.path().join("pulled");
    support::oci::skopeo(&[
        "copy",
        "--src-cert-dir",
        certs,
        "--src-creds",
        &creds,
        &target,
        &format!("oci:{}:v1", pulled.display()),
    ]);
    image.assert_layer_identical(&pulled);
}

#[test]
fn doctor_names_an_untrusted_certificate_and_passes_with_its_ca() {
    let dir = tempfile::tempdir().unwrap();
    let (stack, ca) = tls_stack(dir.path());
    let run = |extra: &[&str]| {
        let mut args = vec![
            "doctor",
            stack.gateway.url.as_str(),
            "-u",
            "alice",
            "--password-stdin",
        ];
        args.extend_from_slice(extra);
        support::gateway::run_cli(&args, Some(ALICE_PAT))
    };
    let (code, out, _) = run(&[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.lines().any(|l| l.starts_with("FAIL tls")) && out.contains("--ca-file"),
        "{out}"
    );
    let (code, out, _) = run(&["--ca-file", ca.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    assert!(out.lines().any(|l| l.starts_with("PASS tls")), "{out}");
}

/// `openssl x509 -text` of a PEM file.
fn x509_text(path: &Path) -> String {
    let out = Command::new(require_tool("openssl", "openssl"))
        .args(["x509", "-noout", "-text", "-in"])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `init --tls-host` makes what Go's crypto/tls (skopeo, docker, podman) and openssl accept
/// for a server: a CA, and a leaf it signs with CA:FALSE, the names as SANs, serverAuth, ECDSA
/// P-256; keys readable by their owner only; the starter config's `tls:` enabled. Served by
/// the gateway, a client that trusts only `ca.crt` pushes and pulls.
#[test]
fn init_tls_host_writes_a_ca_and_a_server_certificate_that_clients_trust_through_the_ca() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    let (code, out, err) = support::gateway::run_cli(
        &[
            "init",
            "--dir",
            keys.to_str().unwrap(),
            "--upstream",
            "http://127.0.0.1:5000",
            "--public-url",
            "https://localhost:4567",
            "--tls-host",
            "localhost,127.0.0.1,registry.example.com",
        ],
        None,
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("docker:          /etc/docker/certs.d/localhost:4567/ca.crt"),
        "{out}"
    );
    assert!(
        out.contains("--cert-dir") && out.contains("--src-cert-dir"),
        "{out}"
    );

    let leaf = x509_text(&keys.join("tls.crt"));
    for expected in [
        "CA:FALSE",
        "DNS:localhost, IP Address:127.0.0.1, DNS:registry.example.com",
        "TLS Web Server Authentication",
        "Digital Signature",
        "id-ecPublicKey",
        "NIST CURVE: P-256",
        "Issuer: CN=portcullis CA for localhost",
    ] {
        assert!(
            leaf.replace(" = ", "=")
                .contains(&expected.replace(" = ", "=")),
            "leaf lacks {expected:?}:\n{leaf}"
        );
    }
    let ca = x509_text(&keys.join("ca.crt"));
    assert!(
        ca.contains("CA:TRUE") && ca.contains("Certificate Sign"),
        "{ca}"
    );
    let verify = Command::new(require_tool("openssl", "openssl"))
        .arg("verify")
        .arg("-CAfile")
        .arg(keys.join("ca.crt"))
        .args(["-purpose", "sslserver", "-verify_hostname", "localhost"])
        .arg(keys.join("tls.crt"))
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "{}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
    use std::os::unix::fs::PermissionsExt;
    for secret in ["ca.key", "tls.key"] {
        let mode = std::fs::metadata(keys.join(secret))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{secret}");
    }
    let starter = std::fs::read_to_string(keys.join("gateway.yaml")).unwrap();
    assert!(
        starter.contains("\ntls: { cert: tls.crt, key: tls.key }"),
        "{starter}"
    );
    let (code, out, err) = support::gateway::run_cli(
        &[
            "check",
            "--config",
            keys.join("gateway.yaml").to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("(TLS)") && !out.contains("WARNING"), "{out}");

    let stack = Stack::with(StackOptions {
        gateway: GatewayOptions {
            tls: Some((keys.join("tls.crt"), keys.join("tls.key"))),
            ..GatewayOptions::new("")
        },
        ..StackOptions::default()
    });
    let certs = dir.path().join("certs.d");
    std::fs::create_dir_all(&certs).unwrap();
    std::fs::copy(keys.join("ca.crt"), certs.join("ca.crt")).unwrap();
    let image = support::oci::OciImage::create(dir.path().join("image"), 64 * 1024);
    let target = format!(
        "docker://{}/mygroup/myproject/init-tls:v1",
        stack.gateway.host
    );
    let creds = format!("alice:{ALICE_PAT}");
    let certs = certs.to_str().unwrap();
    support::oci::skopeo(&[
        "copy",
        "--preserve-digests",
        "--dest-cert-dir",
        certs,
        "--dest-creds",
        &creds,
        &image.reference(),
        &target,
    ]);
    let pulled = dir.path().join("pulled");
    support::oci::skopeo(&[
        "copy",
        "--src-cert-dir",
        certs,
        "--src-creds",
        &creds,
        &target,
        &format!("oci:{}:v1", pulled.display()),
    ]);
    image.assert_layer_identical(&pulled);
}

/// `serve` with an https public_url and no `tls:` logs the same WARN as `check` at start, and
/// not when `server.behind_tls_proxy: true` says TLS ends in front.
#[test]
fn serve_warns_at_start_when_public_url_is_https_but_the_listener_is_plain() {
    let plain = Stack::with(StackOptions {
        gateway: GatewayOptions {
            public_url: Some("https://registry.example.com:4567".into()),
            ..GatewayOptions::new("")
        },
        ..StackOptions::default()
    });
    plain.gateway.wait_for_log(
        "public_url is https://registry.example.com:4567 but listen",
        1,
        Duration::from_secs(10),
    );
    let line = plain
        .gateway
        .log()
        .lines()
        .find(|l| l.contains("public_url is https://"))
        .unwrap()
        .to_owned();
    assert!(
        line.contains("WARN") && line.contains("server gave HTTP response to HTTPS client"),
        "{line}"
    );

    let proxied = Stack::with(StackOptions {
        gateway: GatewayOptions {
            public_url: Some("https://registry.example.com:4567".into()),
            extra: "server: { behind_tls_proxy: true }\n".into(),
            ..GatewayOptions::new("")
        },
        ..StackOptions::default()
    });
    assert!(
        !proxied.gateway.log().contains("public_url is https://"),
        "{}",
        proxied.gateway.log()
    );
}

/// Answers read so far on `stream` (each `HTTP/1.1 ` status line), reading until there are
/// `want` or 5 s passed; the stream has a short read timeout.
fn answers(stream: &mut impl Read, seen: &mut Vec<u8>, want: usize) -> usize {
    let count = |seen: &[u8]| seen.windows(9).filter(|w| w == b"HTTP/1.1 ").count();
    let started = Instant::now();
    let mut chunk = [0u8; 4096];
    while count(seen) < want && started.elapsed() < Duration::from_secs(5) {
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => seen.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
    }
    count(seen)
}

/// Whether the gateway closed `stream` within `bound` (reading and dropping what it sends).
fn closed_within(stream: &mut impl Read, bound: Duration) -> bool {
    let started = Instant::now();
    let mut chunk = [0u8; 4096];
    while started.elapsed() < bound {
        match stream.read(&mut chunk) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return true,
        }
    }
    false
}

/// One keep-alive HTTP/1.1 connection, quiet between requests (the gateway then holds it
/// without hyper's buffers and makes a new parser when bytes come): every request is answered
/// once, a head split across a wait included, a request body is never taken for a request,
/// pipelined requests are all answered, and the header deadline still closes it when idle.
fn keep_alive_across_quiet_waits(stream: &mut (impl Read + Write)) {
    let pause = || std::thread::sleep(Duration::from_millis(700));
    let mut seen = Vec::new();
    stream
        .write_all(b"GET /v2/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    assert_eq!(answers(stream, &mut seen, 1), 1);
    pause();
    stream.write_all(b"GET /v2/ HTTP/1.1\r\nHo").unwrap();
    stream.flush().unwrap();
    pause();
    stream.write_all(b"st: 127.0.0.1\r\n\r\n").unwrap();
    assert_eq!(
        answers(stream, &mut seen, 2),
        2,
        "{}",
        String::from_utf8_lossy(&seen)
    );
    pause();
    // A body that reads as a request: answered once, as one request.
    let smuggled = "GET /v2/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    write!(
        stream,
        "POST /v2/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n\r\n{smuggled}",
        smuggled.len()
    )
    .unwrap();
    assert_eq!(answers(stream, &mut seen, 3), 3);
    pause();
    stream
        .write_all(b"GET /v2/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\nGET /v2/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    assert_eq!(answers(stream, &mut seen, 5), 5);
    pause();
    assert_eq!(
        answers(stream, &mut seen, 6),
        5,
        "the POST's body was answered as a request: {}",
        String::from_utf8_lossy(&seen)
    );
    let text = String::from_utf8_lossy(&seen);
    assert!(
        text.split("HTTP/1.1 ").skip(1).all(|a| a.starts_with('4')),
        "{text}"
    );
    // server.header_read_timeout is 3s: an idle keep-alive connection is closed after it.
    assert!(
        closed_within(stream, Duration::from_secs(15)),
        "an idle connection outlived the header deadline"
    );
}

#[test]
fn quiet_keep_alive_connections_over_tls_and_plain_http_serve_every_request_once() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = test_ca(dir.path());
    let extra = "server: { header_read_timeout: 3s }\n".to_string();
    let upstream = "http://127.0.0.1:1";
    let plain = support::gateway::Gateway::start(
        support::gateway::GatewayFiles::init("ec", upstream),
        &GatewayOptions {
            extra: extra.clone(),
            ..GatewayOptions::new(upstream)
        },
    );
    let tls = support::gateway::Gateway::start(
        support::gateway::GatewayFiles::init("ec", upstream),
        &GatewayOptions {
            tls: Some((cert, key)),
            extra,
            ..GatewayOptions::new(upstream)
        },
    );

    let mut stream = std::net::TcpStream::connect(&plain.host).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    keep_alive_across_quiet_waits(&mut stream);

    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from_pem_file(&ca).unwrap())
        .unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let session = rustls::ClientConnection::new(std::sync::Arc::new(config), name).unwrap();
    let tcp = std::net::TcpStream::connect(&tls.host).unwrap();
    tcp.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let mut stream = rustls::StreamOwned::new(session, tcp);
    keep_alive_across_quiet_waits(&mut stream);
}

/// Pushes `data` as a blob of `mygroup/myproject` through the gateway over TLS; its digest.
fn push_blob_over_tls(stack: &Stack, ca: &Path, bearer: &str, data: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let blob = dir.path().join("blob");
    std::fs::write(&blob, data).unwrap();
    let sum = Command::new("sha256sum").arg(&blob).output().unwrap();
    let digest = format!(
        "sha256:{}",
        String::from_utf8_lossy(&sum.stdout)
            .split_whitespace()
            .next()
            .unwrap()
    );
    let started = support::http::request(
        "POST",
        &format!("{}/v2/mygroup/myproject/blobs/uploads/", stack.gateway.url),
    )
    .bearer(bearer)
    .arg("--cacert")
    .arg(ca.to_str().unwrap())
    .send();
    assert_eq!(started.status, 202, "{}", started.body);
    let location = started.header("location").unwrap().to_owned();
    let separator = if location.contains('?') { '&' } else { '?' };
    let out = Command::new("curl")
        .args(["-sS", "--cacert"])
        .arg(ca)
        .args(["-X", "PUT", "-o", "/dev/null", "-w", "%{http_code}", "-H"])
        .arg(format!("Authorization: Bearer {bearer}"))
        .args(["-H", "Content-Type: application/octet-stream", "-T"])
        .arg(&blob)
        .arg(format!("{location}{separator}digest={digest}"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "201", "{out:?}");
    digest
}

/// A large answer over HTTP/2 (a blob GET's full-size DATA frames, whose TLS records
/// `server::cork` holds below rustls while the answer lasts) arrives whole and byte-identical:
/// its sha256 is the digest it was pushed under; a lone small answer on a connection of its
/// own arrives at once after it; and so does the large one (24 MiB, more than loopback's
/// socket buffers hold) to a client that reads it at 8 MB/s (curl --limit-rate): the socket
/// fills or the client's window closes, and the held records must wait and then go on.
#[test]
fn a_large_http2_answer_arrives_whole_and_a_lone_small_one_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let (stack, ca) = tls_stack(dir.path());
    let bearer = stack.token(
        "alice",
        ALICE_PAT,
        &["repository:mygroup/myproject:pull,push"],
    );
    let large = support::process::random_bytes(24 * 1024 * 1024 + 5);
    let small = support::process::random_bytes(700);
    let large_digest = push_blob_over_tls(&stack, &ca, &bearer, &large);
    let small_digest = push_blob_over_tls(&stack, &ca, &bearer, &small);
    let out_dir = tempfile::tempdir().unwrap();
    for (digest, size, rate) in [
        (&large_digest, large.len(), "0"),
        (&small_digest, small.len(), "0"),
        (&large_digest, large.len(), "8M"),
    ] {
        let file = out_dir.path().join("answer");
        let out = Command::new("curl")
            .args(["-sS", "--http2", "--max-time", "60", "--limit-rate", rate])
            .arg("--cacert")
            .arg(&ca)
            .arg("-H")
            .arg(format!("Authorization: Bearer {bearer}"))
            .args(["-w", "%{http_version} %{http_code} %{size_download}", "-o"])
            .arg(&file)
            .arg(format!(
                "{}/v2/mygroup/myproject/blobs/{digest}",
                stack.gateway.url
            ))
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!("2 200 {size}"),
            "{out:?}"
        );
        let sum = Command::new("sha256sum").arg(&file).output().unwrap();
        let got = String::from_utf8_lossy(&sum.stdout);
        assert_eq!(
            format!("sha256:{}", got.split_whitespace().next().unwrap()),
            *digest,
            "the answer is the blob, byte for byte"
        );
    }
}

/// The gateway gathers the frames of an HTTP/2 connection's streams into shared TLS records
/// (`server::coalesce`): many streams at once on one connection, small answers and a large one
/// (the path that bypasses the buffer) mixed, each arrives whole and in HTTP/2; the SETTINGS a
/// client sees keep the stream cap and the header list bound.
#[test]
fn http2_streams_sharing_one_connection_each_get_their_whole_answer() {
    let dir = tempfile::tempdir().unwrap();
    let (stack, ca) = tls_stack(dir.path());
    let bearer = stack.token(
        "alice",
        ALICE_PAT,
        &["repository:mygroup/myproject:pull,push"],
    );
    let small = support::process::random_bytes(1024);
    let large = support::process::random_bytes(3 * 1024 * 1024 + 17);
    let small_digest = push_blob_over_tls(&stack, &ca, &bearer, &small);
    let large_digest = push_blob_over_tls(&stack, &ca, &bearer, &large);

    // 40 GETs multiplexed on one connection (curl --parallel over HTTP/2): 36 small, 4 large.
    let out_dir = tempfile::tempdir().unwrap();
    let mut config = String::new();
    let mut expected = Vec::new();
    for i in 0..40 {
        let (digest, data) = if i % 10 == 3 {
            (&large_digest, &large)
        } else {
            (&small_digest, &small)
        };
        let file = out_dir.path().join(format!("answer-{i}"));
        config.push_str(&format!(
            "url = \"{}/v2/mygroup/myproject/blobs/{digest}\"\noutput = \"{}\"\n",
            stack.gateway.url,
            file.display()
        ));
        expected.push((file, data));
    }
    let config_file = out_dir.path().join("curl.config");
    std::fs::write(&config_file, config).unwrap();
    let out = Command::new("curl")
        .args([
            "-sS",
            "--http2",
            "--parallel",
            "--parallel-max",
            "40",
            "--cacert",
        ])
        .arg(&ca)
        .arg("-H")
        .arg(format!("Authorization: Bearer {bearer}"))
        .args(["-w", "%{http_version} %{http_code} %{num_connects}\n", "-K"])
        .arg(&config_file)
        .output()
        .unwrap();
    let written = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = written.lines().collect();
    assert_eq!(
        lines.len(),
        40,
        "{written}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        lines.iter().all(|l| l.starts_with("2 200 ")),
        "every answer a 200 over HTTP/2: {written}"
    );
    let connections: u32 = lines
        .iter()
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u32>().unwrap())
        .sum();
    assert!(
        connections < 40,
        "the streams shared connections ({connections} for 40 requests)"
    );
    for (file, data) in &expected {
        let got = std::fs::read(file).unwrap();
        assert!(
            got == **data,
            "{} is {} bytes, not the blob's {}",
            file.display(),
            got.len(),
            data.len()
        );
    }

    // The SETTINGS every HTTP/2 client gets: the stream cap and the header list bound hold.
    let nghttp = require_tool("nghttp", "nghttp2-client");
    let out = Command::new(nghttp)
        .args(["-nv", "-H"])
        .arg(format!("Authorization: Bearer {bearer}"))
        .arg(format!(
            "{}/v2/mygroup/myproject/blobs/{small_digest}",
            stack.gateway.url
        ))
        .output()
        .unwrap();
    let frames = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let settings = frames
        .split("recv SETTINGS frame")
        .nth(1)
        .unwrap_or_else(|| panic!("no SETTINGS from the gateway: {frames}"));
    assert!(
        settings.contains("SETTINGS_MAX_CONCURRENT_STREAMS(0x03):100]"),
        "{settings}"
    );
    assert!(
        settings.contains("SETTINGS_MAX_HEADER_LIST_SIZE(0x06):"),
        "{settings}"
    );
    assert!(
        frames.contains("recv DATA frame <length=1024, flags=0x01"),
        "{frames}"
    );
}
