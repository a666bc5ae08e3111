//! Running portcullis in production, end to end against the real registry: the operations
//! listener (metrics, health, readiness), the audit log, graceful shutdown, certificate hot
//! reload, signing-key rotation, and the connection limits.

use crate::support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use support::gateway::secrets::*;
use support::gateway::{run_cli, Gateway, GatewayFiles, GatewayOptions};
use support::http::{get, jwt_part, request, series};
use support::oci::{skopeo, OciImage};
use support::self_signed;
use support::stack::{RegistryAuth, Stack, StackOptions};

const REPO: &str = "mygroup/myproject/app";

fn push_image(stack: &Stack, dir: &Path, size: usize) -> OciImage {
    let image = OciImage::create(dir.join("image"), size);
    let (pushed, out) = image.push_to(&stack.gateway.host, REPO, "alice", ALICE_PAT);
    assert!(pushed, "skopeo push failed:\n{out}");
    image
}

fn pull_image(stack: &Stack, dir: &Path) {
    let creds = format!("alice:{ALICE_PAT}");
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        "--src-creds",
        &creds,
        &format!("docker://{}/{REPO}:v1", stack.gateway.host),
        &format!("oci:{}:v1", dir.join("pulled").display()),
    ]);
}

fn refused_login(stack: &Stack) {
    let reply = get(&format!(
        "{}/jwt/auth?service=container_registry&scope=repository:{REPO}:pull",
        stack.gateway.url
    ))
    .basic("alice", "not-the-password")
    .send();
    assert_eq!(reply.status, 401, "{}", reply.body);
}

#[test]
fn metrics_move_after_a_push_and_a_refused_login() {
    let (stack, ops) = Stack::with_ops("", RegistryAuth::TrustsGateway);
    let health = get(&format!("{ops}/healthz")).send();
    assert_eq!((health.status, health.body.as_str()), (200, "ok\n"));

    let dir = tempfile::tempdir().unwrap();
    let image = push_image(&stack, dir.path(), 256 * 1024);
    refused_login(&stack);

    let reply = get(&format!("{ops}/metrics")).send();
    assert_eq!(reply.status, 200);
    assert!(reply
        .header("content-type")
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let text = reply.body;
    let value =
        |name: &str| series(&text, name).unwrap_or_else(|| panic!("no series {name} in:\n{text}"));
    assert!(
        value(
            r#"portcullis_tokens_issued_total{credential="personal_access_token",algorithm="ES256"}"#
        ) >= 1.0
    );
    assert_eq!(
        value(r#"portcullis_auth_failures_total{reason="wrong_secret"}"#),
        1.0
    );
    assert_eq!(
        value(r#"portcullis_http_requests_total{route="manifest",method="PUT",status="201"}"#),
        1.0
    );
    assert!(
        value(r#"portcullis_http_requests_total{route="token",method="GET",status="401"}"#) >= 1.0
    );
    assert!(
        value(r#"portcullis_http_requests_total{route="upload",method="POST",status="202"}"#)
            >= 1.0
    );
    assert!(value(r#"portcullis_http_request_duration_seconds_count{route="manifest"}"#) >= 1.0);
    let layer = std::fs::metadata(image.dir.join("blobs/sha256").join(&image.layer_digest))
        .unwrap()
        .len() as f64;
    assert!(value(r#"portcullis_upstream_bytes_total{direction="sent"}"#) >= layer);
    assert_eq!(value("portcullis_upload_sessions_open"), 0.0);
    assert!(value("portcullis_connections_open") >= 0.0);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as f64;
    assert!(value(r#"portcullis_certificate_expiry_timestamp_seconds{which="token"}"#) > now);
    // Bounded labels: no repository, user or path ever becomes a label value.
    for leak in ["mygroup", "alice", "/v2/"] {
        assert!(!text.contains(leak), "{leak:?} in the metrics:\n{text}");
    }
    // Metrics are for operators: the public port does not serve them.
    assert_eq!(
        get(&format!("{}/metrics", stack.gateway.url)).send().status,
        404
    );
}

#[test]
fn readyz_is_503_with_the_reason_while_the_registry_is_down() {
    let (mut stack, ops) = Stack::with_ops("", RegistryAuth::TrustsGateway);
    let ready = get(&format!("{ops}/readyz")).send();
    assert_eq!((ready.status, ready.body.as_str()), (200, "ready\n"));

    stack.registry.stop();
    let down = get(&format!("{ops}/readyz")).send();
    assert_eq!(down.status, 503);
    assert!(
        down.body.contains("cannot be reached") && down.body.contains(&stack.registry.url()),
        "{}",
        down.body
    );
    assert_eq!(down.body.lines().count(), 1, "one line: {:?}", down.body);
    // Liveness is not readiness: the process still serves.
    assert_eq!(get(&format!("{ops}/healthz")).send().status, 200);

    stack.registry.restart();
    assert_eq!(get(&format!("{ops}/readyz")).send().status, 200);
}

fn audit_lines(path: &Path, until: &str) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.contains(until) || Instant::now() > deadline {
            return text
                .lines()
                .map(|line| serde_json::from_str(line).expect("every audit line is JSON"))
                .collect();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_audit_log_says_who_pushed_pulled_and_was_refused_without_secrets() {
    let stack = Stack::with(StackOptions {
        gateway: GatewayOptions {
            extra: "audit: { path: audit.log }\n".into(),
            ..GatewayOptions::new("")
        },
        ..StackOptions::default()
    });
    let audit = stack.gateway.dir().join("audit.log");
    let dir = tempfile::tempdir().unwrap();
    let image = push_image(&stack, dir.path(), 128 * 1024);
    pull_image(&stack, dir.path());
    refused_login(&stack);
    // A read-only token trying to push: refused by the gateway before the registry.
    let read_only = stack.token(
        "alice",
        ALICE_READ_ONLY_PAT,
        &[&format!("repository:{REPO}:pull,push")],
    );
    let refused = request(
        "POST",
        &format!("{}/v2/{REPO}/blobs/uploads/", stack.gateway.url),
    )
    .bearer(&read_only)
    .send();
    assert_eq!(refused.status, 401);

    let lines = audit_lines(&audit, "insufficient_scope");
    let find = |event: &str| -> Vec<&serde_json::Value> {
        lines.iter().filter(|l| l["event"] == event).collect()
    };
    let token = find("token")
        .into_iter()
        .find(|l| l["credential_name"] == "laptop")
        .expect("a token record for the PAT");
    assert_eq!(token["user"], "alice");
    assert_eq!(token["credential"], "personal_access_token");
    assert_eq!(token["client"], "127.0.0.1");
    assert!(token["time"].as_str().unwrap().ends_with('Z'));
    assert!(token["granted"]
        .as_array()
        .unwrap()
        .iter()
        .any(|g| g == &format!("repository:{REPO}:pull,push")));

    let index: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(image.dir.join("index.json")).unwrap())
            .unwrap();
    let manifest_digest = index["manifests"][0]["digest"].as_str().unwrap();
    let push = find("push");
    assert_eq!(push.len(), 1, "{lines:#?}");
    assert_eq!(push[0]["repository"], REPO);
    assert_eq!(push[0]["reference"], "v1");
    assert_eq!(push[0]["digest"], manifest_digest);
    assert_eq!(push[0]["user"], "alice");
    assert!(push[0]["duration_s"].as_f64().is_some(), "{:?}", push[0]);

    let layer_size = std::fs::metadata(image.dir.join("blobs/sha256").join(&image.layer_digest))
        .unwrap()
        .len();
    let layer = find("blob_push")
        .into_iter()
        .find(|l| l["digest"] == format!("sha256:{}", image.layer_digest))
        .expect("the layer's upload");
    assert_eq!(layer["bytes"], layer_size);

    let pull = find("pull");
    assert!(pull
        .iter()
        .any(|l| l["reference"] == "v1" && l["repository"] == REPO));

    let refusals = find("refused");
    assert!(refusals
        .iter()
        .any(|l| l["route"] == "token" && l["reason"] == "wrong_secret" && l["user"] == "alice"));
    assert!(refusals.iter().any(|l| l["route"] == "upload"
        && l["reason"] == "insufficient_scope"
        && l["repository"] == REPO));

    let text = std::fs::read_to_string(&audit).unwrap();
    for secret in [
        ALICE_PAT,
        ALICE_READ_ONLY_PAT,
        "not-the-password",
        &read_only,
    ] {
        assert!(!text.contains(secret), "a secret reached the audit log");
    }

    // logrotate: move the file, SIGUSR1, and the next record goes to a new file.
    let rotated = stack.gateway.dir().join("audit.log.1");
    std::fs::rename(&audit, &rotated).unwrap();
    stack.gateway.signal("USR1");
    stack
        .gateway
        .wait_for_log("audit log reopened", 1, Duration::from_secs(5));
    refused_login(&stack);
    let fresh = audit_lines(&audit, "wrong_secret");
    assert_eq!(fresh.len(), 1, "{fresh:#?}");
    assert!(std::fs::read_to_string(&rotated)
        .unwrap()
        .contains(manifest_digest));
}

/// Start an upload and PUT `size` bytes at `rate` through curl in the background; the child
/// prints the status code.
fn slow_upload(stack: &Stack, dir: &Path, size: usize, rate: &str) -> std::process::Child {
    let bearer = stack.token(
        "alice",
        ALICE_PAT,
        &[&format!("repository:{REPO}:pull,push")],
    );
    let started = request(
        "POST",
        &format!("{}/v2/{REPO}/blobs/uploads/", stack.gateway.url),
    )
    .bearer(&bearer)
    .send();
    assert_eq!(started.status, 202, "{}", started.body);
    let location = started.header("location").unwrap().to_owned();
    let blob = dir.join("blob");
    std::fs::write(&blob, support::process::random_bytes(size)).unwrap();
    let sum = Command::new("sha256sum").arg(&blob).output().unwrap();
    let digest = String::from_utf8_lossy(&sum.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    let separator = if location.contains('?') { '&' } else { '?' };
    Command::new("curl")
        .args(["-sS", "-X", "PUT", "--limit-rate", rate, "-o", "/dev/null"])
        .args(["-w", "%{http_code}", "-H"])
        .arg(format!("Authorization: Bearer {bearer}"))
        .args(["-H", "Content-Type: application/octet-stream", "-T"])
        .arg(&blob)
        .arg(format!("{location}{separator}digest=sha256:{digest}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// After a SIGTERM: the gateway exits 0 within `within` (else panics with `why`) and says
/// every request under way finished.
fn assert_drained_and_exited_0(stack: &mut Stack, within: Duration, why: &str) {
    let status = stack.gateway.wait_exit(within).expect(why);
    assert_eq!(status.code(), Some(0), "{}", stack.gateway.log());
    assert!(stack
        .gateway
        .log()
        .contains("stopped: every request under way finished"));
}

#[test]
fn sigterm_lets_an_upload_under_way_finish_then_exits_0() {
    let (mut stack, ops) = Stack::with_ops(
        "server: { shutdown_grace: 30s }\n",
        RegistryAuth::TrustsGateway,
    );
    let dir = tempfile::tempdir().unwrap();
    // 3 MiB at 1 MiB/s: about three seconds on the wire.
    let upload = slow_upload(&stack, dir.path(), 3 << 20, "1M");
    std::thread::sleep(Duration::from_millis(800));
    stack.gateway.signal("TERM");
    stack.gateway.wait_for_log(
        "shutting down: no new connections",
        1,
        Duration::from_secs(5),
    );
    // No new clients, and the readiness probe tells the load balancer.
    assert!(
        TcpStream::connect(&stack.gateway.host).is_err(),
        "the public port still accepts connections after SIGTERM"
    );
    assert_eq!(get(&format!("{ops}/readyz")).send().status, 503);

    let out = upload.wait_with_output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "201",
        "the upload under way did not complete: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_drained_and_exited_0(
        &mut stack,
        Duration::from_secs(10),
        "the gateway exits once the upload is done",
    );
}

#[test]
fn a_second_signal_exits_at_once() {
    let mut stack = Stack::start();
    let dir = tempfile::tempdir().unwrap();
    // 4 MiB at 64 KiB/s would take a minute.
    let mut upload = slow_upload(&stack, dir.path(), 4 << 20, "64K");
    std::thread::sleep(Duration::from_millis(500));
    stack.gateway.signal("TERM");
    stack
        .gateway
        .wait_for_log("draining", 1, Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(300));
    assert!(stack
        .gateway
        .wait_exit(Duration::from_millis(200))
        .is_none());
    stack.gateway.signal("INT");
    let status = stack
        .gateway
        .wait_exit(Duration::from_secs(3))
        .expect("a second signal ends the process at once");
    assert_eq!(status.code(), Some(1));
    let _ = upload.kill();
    let _ = upload.wait();
}

/// The serial of the certificate a new TLS connection is given.
fn served_serial(host: &str) -> String {
    let (address, port) = host.split_once(':').unwrap();
    let mut python = Command::new("python3");
    python.arg("-c").arg(format!(
        "import ssl; print(ssl.get_server_certificate(('{address}', {port})))"
    ));
    let pem = support::process::run(python, None).stdout;
    let mut openssl = Command::new("openssl");
    openssl.args(["x509", "-noout", "-serial"]);
    support::process::run(openssl, Some(&pem))
        .stdout
        .trim()
        .to_owned()
}

#[test]
fn a_renewed_tls_certificate_is_served_without_a_restart_and_a_broken_one_is_refused() {
    let certs = tempfile::tempdir().unwrap();
    self_signed(certs.path(), "tls", "0x1001");
    let stack = Stack::with(StackOptions {
        gateway: GatewayOptions {
            tls: Some((certs.path().join("tls.crt"), certs.path().join("tls.key"))),
            ..GatewayOptions::new("")
        },
        ..StackOptions::default()
    });
    assert_eq!(served_serial(&stack.gateway.host), "serial=1001");

    // A renewal: new files renamed over the old ones, as certbot and cert-manager do.
    self_signed(certs.path(), "renewed", "0x2002");
    std::fs::rename(
        certs.path().join("renewed.key"),
        certs.path().join("tls.key"),
    )
    .unwrap();
    std::fs::rename(
        certs.path().join("renewed.crt"),
        certs.path().join("tls.crt"),
    )
    .unwrap();
    stack
        .gateway
        .wait_for_log("TLS certificate reloaded", 1, Duration::from_secs(10));
    assert_eq!(served_serial(&stack.gateway.host), "serial=2002");

    // A key that does not belong to the certificate: refused, the renewed pair stays.
    self_signed(certs.path(), "stray", "0x3003");
    std::fs::rename(certs.path().join("stray.key"), certs.path().join("tls.key")).unwrap();
    stack
        .gateway
        .wait_for_log("TLS certificate reload failed", 1, Duration::from_secs(10));
    assert_eq!(served_serial(&stack.gateway.host), "serial=2002");
    let reply = get(&format!("{}/v2/", stack.gateway.url)).arg("-k").send();
    assert_eq!(reply.status, 401);
}

#[test]
fn after_a_key_rotation_old_tokens_verify_until_they_expire_and_new_ones_use_the_new_key() {
    // No registry auth: the gateway alone decides, so what is tested is its verification.
    let mut stack = Stack::with(StackOptions {
        registry_auth: RegistryAuth::None,
        ..StackOptions::default()
    });
    let scope = format!("repository:{REPO}:pull");
    let old_token = stack.token("alice", ALICE_PAT, &[&scope]);
    let tags = |stack: &Stack, token: &str| {
        request("GET", &format!("{}/v2/{REPO}/tags/list", stack.gateway.url))
            .bearer(token)
            .send()
            .status
    };
    // The registry answers (no such repository yet): the gateway let the token through.
    assert_eq!(tags(&stack, &old_token), 404);

    // Rotate: a new key signs; the old certificate stays as a previous one.
    let rotated = GatewayFiles::init("ec", "http://127.0.0.1:1");
    std::fs::copy(
        stack.gateway.files.certificate(),
        rotated.path("previous.crt"),
    )
    .unwrap();
    let registry = stack.registry.url();
    let options = GatewayOptions {
        token_extra: ", previous_certificates: [previous.crt]".into(),
        ..GatewayOptions::new(&registry)
    };
    let without_previous = rotated.copy_keys();
    stack.gateway = Gateway::start(rotated, &options);
    assert_eq!(tags(&stack, &old_token), 404, "{}", stack.gateway.log());

    let new_token = stack.token("alice", ALICE_PAT, &[&scope]);
    let (old_kid, new_kid) = (
        jwt_part(&old_token, 0)["kid"].clone(),
        jwt_part(&new_token, 0)["kid"].clone(),
    );
    assert_ne!(old_kid, new_kid);
    assert_eq!(tags(&stack, &new_token), 404);

    // The JWKS lists both keys, each with its certificate.
    let jwks = get(&format!("{}/jwt/jwks.json", stack.gateway.url))
        .send()
        .json();
    let x5c: Vec<_> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["x5c"].clone())
        .collect();
    assert_eq!(
        x5c,
        vec![
            jwt_part(&new_token, 0)["x5c"].clone(),
            jwt_part(&old_token, 0)["x5c"].clone()
        ]
    );

    // `check` prints the rootcertbundle the registry needs during the rotation.
    let (code, out, err) = run_cli(
        &[
            "check",
            "--config",
            stack.gateway.config_path().to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("1 previous key(s)"), "{out}");
    assert!(
        out.contains("token.crt") && out.contains("previous.crt > rootcertbundle.pem"),
        "{out}"
    );

    // Without previous_certificates, the old token is refused: the setting is what keeps it.
    stack.gateway = Gateway::start(without_previous, &GatewayOptions::new(&registry));
    assert_eq!(tags(&stack, &old_token), 401);
    assert_eq!(tags(&stack, &new_token), 404);
}

#[test]
fn sigterm_closes_idle_http1_and_http2_connections_without_waiting_out_the_grace() {
    let mut stack = Stack::with(StackOptions {
        gateway: GatewayOptions {
            extra: "server: { shutdown_grace: 60s }\n".into(),
            ..GatewayOptions::new("")
        },
        ..StackOptions::default()
    });
    let host = stack.gateway.host.clone();
    // An idle HTTP/1.1 keep-alive connection ...
    let mut http1 = TcpStream::connect(&host).unwrap();
    assert!(ping(&mut http1).unwrap().starts_with("HTTP/1.1 401"));
    http1
        .set_read_timeout(Some(Duration::from_secs(25)))
        .unwrap();

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        // ... and an idle HTTP/2 connection (prior knowledge, as h2c), both answered once.
        let tcp = tokio::net::TcpStream::connect(&host).await.unwrap();
        let (mut send, connection) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(tcp),
        )
        .await
        .unwrap();
        let connection = tokio::spawn(connection);
        let answer = send
            .send_request(
                http::Request::get(format!("http://{host}/v2/"))
                    .body(http_body_util::Empty::<bytes::Bytes>::new())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(answer.status(), 401);
        assert_eq!(answer.version(), http::Version::HTTP_2);

        stack.gateway.signal("TERM");
        // The gateway says GOAWAY and closes: the client's connection ends, cleanly, long
        // before the 60 s grace or the 90 s idle timeout would end it.
        let ended = tokio::time::timeout(Duration::from_secs(25), connection).await;
        let ended = ended.expect("the idle HTTP/2 connection was left open after SIGTERM");
        assert!(
            matches!(ended, Ok(Ok(()))),
            "the HTTP/2 connection did not end cleanly: {ended:?}"
        );
    });
    // The HTTP/1.1 connection is closed too (EOF, no answer to anything).
    let mut rest = Vec::new();
    http1
        .read_to_end(&mut rest)
        .expect("the idle HTTP/1.1 connection was left open after SIGTERM");
    assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
    assert_drained_and_exited_0(
        &mut stack,
        Duration::from_secs(25),
        "with only idle connections the gateway exits without waiting out the grace",
    );
}

/// Send a keep-alive request on `stream` and read the answer's head.
fn ping(stream: &mut TcpStream) -> std::io::Result<String> {
    stream.write_all(b"GET /v2/ HTTP/1.1\r\nHost: gateway\r\n\r\n")?;
    let mut buffer = [0u8; 4096];
    let n = stream.read(&mut buffer)?;
    Ok(String::from_utf8_lossy(&buffer[..n]).into_owned())
}

#[test]
fn idle_keep_alive_connections_are_closed_and_max_connections_is_held() {
    let stack = Stack::with(StackOptions {
        gateway: GatewayOptions {
            extra: "server: { idle_timeout: 1s, max_connections: 1 }\n".into(),
            ..GatewayOptions::new("")
        },
        ..StackOptions::default()
    });
    let mut first = TcpStream::connect(&stack.gateway.host).unwrap();
    assert!(ping(&mut first).unwrap().starts_with("HTTP/1.1 401"));

    // The one slot is taken: a second client waits in the accept queue, unanswered.
    let mut second = TcpStream::connect(&stack.gateway.host).unwrap();
    second
        .set_read_timeout(Some(Duration::from_millis(400)))
        .unwrap();
    assert!(
        ping(&mut second).is_err(),
        "answered beyond max_connections"
    );

    // The first goes idle: closed by the gateway after idle_timeout (read gives EOF) ...
    first
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut rest = Vec::new();
    let started = Instant::now();
    first.read_to_end(&mut rest).unwrap();
    assert!(started.elapsed() < Duration::from_secs(4));
    // ... which frees the slot: the waiting client is answered.
    second
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buffer = [0u8; 4096];
    let n = second.read(&mut buffer).unwrap();
    assert!(String::from_utf8_lossy(&buffer[..n]).starts_with("HTTP/1.1 401"));
}

/// The names of the gateway's threads (`/proc/PID/task/*/comm`).
fn thread_names(pid: u32) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .map(|name| name.trim().to_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn connections_are_served_on_server_workers_threads_and_all_answered() {
    let (stack, ops) = Stack::with_ops("server: { workers: 3 }\n", RegistryAuth::TrustsGateway);
    // The listener answers before the worker threads have all named themselves (a busy
    // machine shows it): look until they have, for a while.
    let deadline = Instant::now() + Duration::from_secs(10);
    let workers = loop {
        let workers: Vec<String> = thread_names(stack.gateway.pid())
            .into_iter()
            .filter(|name| name.starts_with("worker-"))
            .collect();
        if workers.len() >= 3 || Instant::now() > deadline {
            break workers;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(workers, ["worker-0", "worker-1", "worker-2"]);

    // Eight keep-alive connections at once, two requests each: every one answered, every one
    // counted while open, and a push and pull through the per-thread registry pools.
    let mut connections: Vec<TcpStream> = (0..8)
        .map(|_| TcpStream::connect(&stack.gateway.host).unwrap())
        .collect();
    for _ in 0..2 {
        for connection in &mut connections {
            assert!(ping(connection).unwrap().starts_with("HTTP/1.1 401"));
        }
    }
    let metrics = get(&format!("{ops}/metrics")).send().body;
    assert_eq!(
        series(&metrics, "portcullis_connections_open"),
        Some(8.0),
        "{metrics}"
    );
    drop(connections);
    let dir = tempfile::tempdir().unwrap();
    push_image(&stack, dir.path(), 300_000);
    pull_image(&stack, dir.path());
}

#[test]
fn the_repository_gateway_yaml_is_the_annotated_reference_and_passes_check() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("gateway.yaml")).unwrap();
    // Every key is explained: each key line has a comment above it or at its end.
    let mut previous = "";
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let item = line.trim().trim_start_matches("- ");
        let is_key = !line.trim().starts_with('#')
            && item.split_once(':').is_some_and(|(key, _)| {
                !key.is_empty() && key.chars().all(|c| c.is_ascii_lowercase() || c == '_')
            });
        if is_key {
            assert!(
                previous.trim().starts_with('#') || line.contains(" # "),
                "gateway.yaml: the key line {line:?} has no comment"
            );
        }
        previous = line;
    }
    let dir = tempfile::tempdir().unwrap();
    let files = GatewayFiles::init("ec", "http://127.0.0.1:1");
    for name in ["token.key", "token.crt"] {
        std::fs::copy(files.path(name), dir.path().join(name)).unwrap();
    }
    self_signed(dir.path(), "tls", "0x10");
    std::fs::create_dir_all(dir.path().join("log")).unwrap();
    std::fs::copy(
        files.path("token.crt"),
        dir.path().join("previous-token.crt"),
    )
    .unwrap();
    let config = dir.path().join("gateway.yaml");
    std::fs::write(&config, &text).unwrap();
    let (code, out, err) = run_cli(&["check", "--config", config.to_str().unwrap()], None);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("OK"), "{out}");
    assert!(out.contains("127.0.0.1:9464"), "{out}");
}

#[test]
fn a_full_disk_under_the_audit_log_loses_records_not_requests() {
    // /dev/full: opening succeeds, every write fails with ENOSPC.
    let (stack, ops) = Stack::with_ops("audit: { path: /dev/full }\n", RegistryAuth::TrustsGateway);
    for _ in 0..3 {
        stack.token("alice", ALICE_PAT, &[&format!("repository:{REPO}:pull")]);
    }
    stack
        .gateway
        .wait_for_log("audit log: cannot write", 1, Duration::from_secs(5));
    // At most one ERROR a minute, however many records fail.
    refused_login(&stack);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let metrics = get(&format!("{ops}/metrics")).send().body;
        let failures = series(&metrics, "portcullis_audit_write_failures_total").unwrap();
        if failures >= 4.0 {
            break;
        }
        assert!(Instant::now() < deadline, "{metrics}");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        stack
            .gateway
            .log()
            .matches("audit log: cannot write")
            .count(),
        1
    );
    assert_eq!(get(&format!("{ops}/readyz")).send().status, 200);
}
